//! Object-store tiers: S3 (and S3-compatible servers), Google Cloud Storage and Azure Blob
//! storage, through Apache OpenDAL (its services, request signing and credential chains; no
//! HTTP client of ours). Each item is one object named `{prefix}{key}`; chunking, the MAC,
//! the breaker and the background writes are the same as for memcached.
//!
//! OpenDAL is async and cachefs's callers are threads: the tier owns one current-thread tokio
//! runtime and each call blocks on its future there, bounded by the per-operation timeout; the
//! calling thread drives the sockets itself (concurrent callers take turns at the driver). A
//! runtime with a worker thread cost each read ~0.8 ms of cross-thread wake-ups on this
//! machine; this one costs nothing measurable (crates/store/examples/cloud_latency.rs).

use super::breaker::Breaker;
use super::chunking::MAX_ITEM_LEN;
use super::{RemoteError, RemoteTier, ServerHealth};
use opendal::{ErrorKind, HttpTransporter, Operator};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Which object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    S3,
    Gcs,
    Azure,
}

impl Service {
    pub fn kind(self) -> &'static str {
        match self {
            Service::S3 => "s3",
            Service::Gcs => "gcs",
            Service::Azure => "azure",
        }
    }

    /// The setting that names the bucket (container), for messages.
    fn bucket_setting(self) -> &'static str {
        match self {
            Service::S3 => "CACHEFS_S3_BUCKET",
            Service::Gcs => "CACHEFS_GCS_BUCKET",
            Service::Azure => "CACHEFS_AZURE_CONTAINER",
        }
    }

    /// What to do when the server refuses the credentials, for messages.
    fn credentials_fix(self) -> &'static str {
        match self {
            Service::S3 => {
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to a key \
                 with read and write access to the bucket"
            }
            Service::Gcs => {
                "set CACHEFS_GCS_KEY_PATH (or GOOGLE_APPLICATION_CREDENTIALS) to a service \
                 account key file with access to the bucket"
            }
            Service::Azure => {
                "set CACHEFS_AZURE_CONNECTION_STRING (or AZURE_STORAGE_ACCOUNT and \
                 AZURE_STORAGE_KEY) to an account with access to the container"
            }
        }
    }
}

/// One object-store tier's settings (the root crate's `config` reads them). Secrets are not
/// here: they come from the standard credential chains' variables and files, except Azure's
/// connection string, which is one.
#[derive(Clone, Default)]
pub struct CloudConfig {
    pub service: Option<Service>,
    /// Bucket (S3, GCS) or container (Azure).
    pub bucket: String,
    /// Prepended to every object name, e.g. `cachefs/`.
    pub prefix: String,
    /// `http(s)://host[:port]` of an S3-compatible server, an emulator or a private endpoint.
    pub endpoint: Option<String>,
    /// S3 region; `us-east-1` when unset and none is in AWS_REGION.
    pub region: Option<String>,
    /// S3: `https://endpoint/bucket/key` (true, OpenDAL's default) or `https://bucket.endpoint/key`.
    pub path_style: bool,
    /// PEM certificates trusted besides the system's, for a private or self-signed endpoint.
    pub ca_bundle: Option<PathBuf>,
    /// GCS: a service account key file.
    pub gcs_key_path: Option<PathBuf>,
    /// Azure: `DefaultEndpointsProtocol=…;AccountName=…;AccountKey=…;BlobEndpoint=…`.
    pub azure_connection_string: Option<String>,
    /// S3: an access key and its secret, ahead of AWS's chain. cachefs's settings never set
    /// it (the chain reads the usual variables and files); for callers holding keys of their
    /// own, such as tests that must not change the process's environment.
    pub s3_keys: Option<(String, String)>,
    pub read_only: bool,
    pub timeout: Duration,
}

// Written by hand so that the connection string (a secret) never reaches a log line.
impl std::fmt::Debug for CloudConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudConfig")
            .field("service", &self.service)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("ca_bundle", &self.ca_bundle)
            .field("gcs_key_path", &self.gcs_key_path)
            .field(
                "azure_connection_string",
                &self.azure_connection_string.as_ref().map(|_| "(secret)"),
            )
            .field(
                "s3_keys",
                &self.s3_keys.as_ref().map(|(id, _)| (id, "(secret)")),
            )
            .field("read_only", &self.read_only)
            .field("timeout", &self.timeout)
            .finish()
    }
}

pub struct ObjectStore {
    service: Service,
    /// `s3://bucket/prefix at endpoint`: what messages and `stats` call this tier.
    name: String,
    op: Operator,
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
    breaker: Breaker,
    /// Set once the bucket was probed: None = not yet (or the probe could not reach the
    /// server); Some(Ok) = usable; Some(Err(why)) = refused credentials or no such bucket,
    /// which no retry fixes: every call is a miss at once (`RemoteError::Unusable`), said once
    /// in the log.
    probed: Mutex<Option<Result<(), String>>>,
}

fn config_error(what: impl std::fmt::Display) -> RemoteError {
    RemoteError::Config(what.to_string())
}

impl ObjectStore {
    pub fn new(c: &CloudConfig) -> Result<ObjectStore, RemoteError> {
        let service = c
            .service
            .ok_or_else(|| config_error("an object-store tier without a service"))?;
        if c.bucket.trim().is_empty() {
            return Err(config_error(format!(
                "{} is empty: name the {}",
                service.bucket_setting(),
                if service == Service::Azure {
                    "container"
                } else {
                    "bucket"
                }
            )));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                config_error(format!("cannot start the {} client: {e}", service.kind()))
            })?;
        let client = http_client(c)?;
        let transport = HttpTransporter::new(
            opendal_http_transport_reqwest::ReqwestTransport::new(client.clone()),
        );
        // Credential providers that sign with a client of their own (S3's assume-role) use
        // the process default: the same client. First install wins; later ones are no-ops.
        HttpTransporter::install_default(opendal_http_transport_reqwest::ReqwestTransport::new(
            client,
        ));
        let op = build_operator(c, service)
            .map_err(|e| config_error(format!("{} tier: {e}", service.kind())))?;
        let op = {
            let ctx = op.base_context().with_http_transport(transport);
            op.with_context(ctx)
        };
        let scheme = match service {
            Service::S3 => "s3",
            Service::Gcs => "gs",
            Service::Azure => "azure",
        };
        let mut name = format!("{scheme}://{}/{}", c.bucket, c.prefix);
        if let Some(e) = &c.endpoint {
            name.push_str(&format!(" at {e}"));
        }
        Ok(ObjectStore {
            service,
            name,
            op,
            runtime,
            timeout: c.timeout,
            breaker: Breaker::default(),
            probed: Mutex::new(None),
        })
    }

    /// Runs one request on the tier's runtime, bounded by the timeout.
    fn run<T>(
        &self,
        f: impl std::future::Future<Output = opendal::Result<T>>,
    ) -> Result<opendal::Result<T>, RemoteError> {
        self.runtime
            .block_on(async { tokio::time::timeout(self.timeout, f).await })
            .map_err(|_| {
                self.io_error(std::io::ErrorKind::TimedOut, "no answer within the timeout")
            })
    }

    fn io_error(&self, kind: std::io::ErrorKind, what: impl std::fmt::Display) -> RemoteError {
        RemoteError::Io {
            server: self.name.clone(),
            source: std::io::Error::new(kind, what.to_string()),
        }
    }

    /// Before the first request: whether the bucket exists and takes the credentials. A
    /// listing never answers 404 for a bucket that exists, so NotFound here is the bucket.
    fn probe(&self) -> Result<(), RemoteError> {
        // Held through the probe: concurrent first requests wait for one probe, and its
        // verdict is said once.
        let mut probed = self.probed.lock().unwrap();
        if let Some(done) = &*probed {
            return done.clone().map_err(RemoteError::Unusable);
        }
        let listed = self.run(async {
            let mut lister = self.op.lister_with("").limit(1).await?;
            match futures::StreamExt::next(&mut lister).await {
                Some(Err(e)) => Err(e),
                _ => Ok(()),
            }
        })?;
        let verdict = match listed {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(format!(
                "{} tier {}: the server refused the credentials ({}); the shared cache is off \
                 until the agent restarts: {}",
                self.service.kind(),
                self.name,
                short(&e),
                self.service.credentials_fix()
            )),
            // S3 servers answer NoSuchBucket, which OpenDAL files as a configuration error.
            Err(e) if e.kind() == ErrorKind::NotFound || no_such_bucket(&e) => Err(format!(
                "{} tier {}: the {} does not exist ({}); the shared cache is off until the \
                 agent restarts: create it, or fix {}",
                self.service.kind(),
                self.name,
                if self.service == Service::Azure {
                    "container"
                } else {
                    "bucket"
                },
                short(&e),
                self.service.bucket_setting()
            )),
            Err(e) if e.kind() == ErrorKind::ConfigInvalid => Err(format!(
                "{} tier {}: {}; the shared cache is off until the agent restarts",
                self.service.kind(),
                self.name,
                short(&e),
            )),
            // Unreachable, 500s, anything else: the breaker's business; probe again later.
            Err(e) => return Err(self.failure(e)),
        };
        if let Err(why) = &verdict {
            log::warn!("{why}");
            self.breaker.failed(why);
        }
        *probed = Some(verdict.clone());
        verdict.map_err(RemoteError::Unusable)
    }

    /// An OpenDAL error as ours: a server that answered is a refused request; one that did
    /// not (connection, TLS, 5xx, rate limit) is a connection failure, for the breaker.
    fn failure(&self, e: opendal::Error) -> RemoteError {
        let text = short(&e);
        if e.is_temporary() || matches!(e.kind(), ErrorKind::Unexpected | ErrorKind::RateLimited) {
            self.io_error(std::io::ErrorKind::Other, text)
        } else {
            RemoteError::Reply {
                server: self.name.clone(),
                reply: text,
            }
        }
    }

    /// Runs `f` unless the breaker or the probe says no; feeds the breaker.
    fn call<T>(
        &self,
        f: impl std::future::Future<Output = opendal::Result<T>>,
        missing: impl FnOnce() -> T,
    ) -> Result<T, RemoteError> {
        if !self.breaker.allows() {
            return Err(RemoteError::Skipped(self.name.clone()));
        }
        let probed = self.probe();
        if let Err(e) = probed {
            if e.is_connection_failure() {
                self.breaker.failed(&e.to_string());
            }
            return Err(e);
        }
        match self.run(f) {
            Ok(Ok(v)) => {
                self.breaker.succeeded();
                Ok(v)
            }
            Ok(Err(e)) if e.kind() == ErrorKind::NotFound => {
                self.breaker.succeeded();
                Ok(missing())
            }
            Ok(Err(e)) => {
                let e = self.failure(e);
                if e.is_connection_failure() {
                    self.breaker.failed(&e.to_string());
                }
                Err(e)
            }
            Err(e) => {
                self.breaker.failed(&e.to_string());
                Err(e)
            }
        }
    }
}

/// The OpenDAL error inside a stream's `io::Error` (the stream sends the request: a 404 is
/// seen there), else the I/O error as a temporary one.
fn from_io(e: std::io::Error) -> opendal::Error {
    let text = e.to_string();
    match e.into_inner().map(|i| i.downcast::<opendal::Error>()) {
        Some(Ok(inner)) => *inner,
        _ => opendal::Error::new(ErrorKind::Unexpected, text).set_temporary(),
    }
}

fn no_such_bucket(e: &opendal::Error) -> bool {
    let m = e.message();
    ["NoSuchBucket", "ContainerNotFound", "does not exist"]
        .iter()
        .any(|s| m.contains(s))
}

/// An OpenDAL error in one line: its kind, the HTTP status if the server answered, and the
/// first line of its message; not its full context, whose URI may carry a SAS token.
fn short(e: &opendal::Error) -> String {
    let full = e.to_string();
    let status = full.split("status: ").nth(1).and_then(|rest| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        (!digits.is_empty()).then_some(digits)
    });
    let msg: String = e
        .message()
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect();
    match status {
        Some(s) => format!("{} (HTTP {s}): {msg}", e.kind()),
        None => format!("{}: {msg}", e.kind()),
    }
}

impl RemoteTier for ObjectStore {
    fn kind(&self) -> &'static str {
        self.service.kind()
    }

    fn get(&self, _route: &str, key: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        // Streamed and cut off past the largest item cachefs writes: an object planted in
        // the bucket is never read whole. (A ranged read would do it in one step, but
        // OpenDAL fails one that the object is shorter than.)
        let limit = MAX_ITEM_LEN as u64;
        let value = self.call(
            async {
                let reader = self.op.reader(key).await?;
                let mut stream = reader.into_bytes_stream(..).await?;
                let mut out = Vec::new();
                while let Some(bytes) = futures::StreamExt::next(&mut stream).await {
                    let bytes = bytes.map_err(from_io)?;
                    out.extend_from_slice(&bytes);
                    if out.len() as u64 > limit {
                        break;
                    }
                }
                Ok(Some(out))
            },
            || None,
        )?;
        if let Some(v) = &value {
            if v.len() as u64 > limit {
                return Err(RemoteError::TooLarge {
                    server: self.name.clone(),
                    what: "object",
                    len: v.len() as u64,
                    limit,
                });
            }
        }
        Ok(value)
    }

    fn set(&self, _route: &str, key: &str, value: &[u8]) -> Result<(), RemoteError> {
        let value = value.to_vec();
        self.call(
            async {
                self.op.write(key, value).await?;
                Ok(())
            },
            || (),
        )
    }

    fn delete(&self, _route: &str, key: &str) -> Result<(), RemoteError> {
        self.call(self.op.delete(key), || ())
    }

    fn refused(&self) -> Option<String> {
        match &*self.probed.lock().unwrap() {
            Some(Err(why)) => Some(why.clone()),
            _ => None,
        }
    }

    fn health(&self) -> Vec<ServerHealth> {
        let (healthy, failures, last_error) = self.breaker.health();
        vec![ServerHealth {
            server: self.name.clone(),
            healthy,
            failures,
            last_error,
        }]
    }
}

/// The service's OpenDAL operator, with the credential chain the service's users expect.
fn build_operator(c: &CloudConfig, service: Service) -> opendal::Result<Operator> {
    let root = format!("/{}", c.prefix.trim_start_matches('/'));
    match service {
        Service::S3 => {
            let region = c
                .region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                .unwrap_or_else(|| "us-east-1".into());
            let mut b = opendal::services::S3::default()
                .bucket(&c.bucket)
                .root(&root)
                .region(&region);
            if let Some(e) = &c.endpoint {
                // Not AWS: no instance metadata service to ask for credentials.
                b = b.endpoint(e).disable_ec2_metadata();
            }
            if !c.path_style {
                b = b.enable_virtual_host_style();
            }
            if let Some((id, secret)) = &c.s3_keys {
                b = b.access_key_id(id).secret_access_key(secret);
            }
            Operator::new(b)
        }
        Service::Gcs => {
            let mut b = opendal::services::Gcs::default()
                .bucket(&c.bucket)
                .root(&root);
            if let Some(p) = &c.gcs_key_path {
                b = b.credential_path(&p.to_string_lossy());
            }
            if let Some(e) = &c.endpoint {
                b = b.endpoint(e);
                if c.gcs_key_path.is_none()
                    && std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_none()
                {
                    // An emulator or a proxy that signs for us: no Google metadata server to
                    // ask, and nothing to sign with.
                    b = b
                        .disable_vm_metadata()
                        .disable_config_load()
                        .skip_signature();
                }
            }
            Operator::new(b)
        }
        Service::Azure => {
            let mut b = match &c.azure_connection_string {
                Some(s) => opendal::services::Azblob::from_connection_string(s)?,
                None => {
                    let mut b = opendal::services::Azblob::default();
                    if let Ok(a) = std::env::var("AZURE_STORAGE_ACCOUNT") {
                        b = b.account_name(&a);
                    }
                    if let Ok(k) = std::env::var("AZURE_STORAGE_KEY") {
                        b = b.account_key(&k);
                    }
                    if let Ok(t) = std::env::var("AZURE_STORAGE_SAS_TOKEN") {
                        b = b.sas_token(&t);
                    }
                    b
                }
            };
            b = b.container(&c.bucket).root(&root);
            if let Some(e) = &c.endpoint {
                b = b.endpoint(e);
            }
            Operator::new(b)
        }
    }
}

/// One HTTP client per tier: connection pool, connect timeout, and the CA bundle.
fn http_client(c: &CloudConfig) -> Result<reqwest::Client, RemoteError> {
    // rustls needs a process-wide crypto provider; ring is ours (a second install is a no-op).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .connect_timeout(c.timeout)
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(path) = &c.ca_bundle {
        let pem = std::fs::read(path).map_err(|e| {
            config_error(format!(
                "CACHEFS_REMOTE_CA_BUNDLE {}: {e}: name a readable PEM file",
                path.display()
            ))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            config_error(format!(
                "CACHEFS_REMOTE_CA_BUNDLE {}: not PEM certificates: {e}",
                path.display()
            ))
        })?;
        b = b.tls_certs_merge(certs);
    }
    b.build()
        .map_err(|e| config_error(format!("cannot build the HTTP client: {e}")))
}
