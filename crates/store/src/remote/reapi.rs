//! A Bazel Remote Execution API v2 cache (ActionCache + CAS over gRPC): bazel-remote,
//! Buildbarn, BuildGrid, NativeLink, BuildBuddy, buildbox-casd.
//!
//! Each remote item (a value's head or one of its chunks, see `chunking`) is one CAS blob
//! and one ActionCache entry: the entry's action digest is derived from the item's key, and
//! its ActionResult names the blob as its only output file, `value`. Everything above the
//! tier (chunking, the keyed MAC, the breaker, background writes, verified hits) is the same
//! as for memcached and Redis; a REAPI server holds and evicts these entries like any
//! build's (DESIGN.md, "A REAPI cache tier").
//!
//! gRPC is async (tonic); the agent's threads are not. The tier owns a one-worker tokio
//! runtime and blocks on each operation, bounded by the configured timeout plus the time one
//! item may take to arrive, like the other tiers.

use super::breaker::Breaker;
use super::chunking::MAX_ITEM_LEN;
use super::{RemoteError, RemoteTier, ServerHealth};
use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::bytestream as bs;
use bs::byte_stream_client::ByteStreamClient;
use prost::Message;
use re::action_cache_client::ActionCacheClient;
use re::content_addressable_storage_client::ContentAddressableStorageClient;
use re::execution_client::ExecutionClient;
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataKey, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

/// How long one item may take to arrive beyond the timeout, as for the other tiers
/// (`server::ITEM_TRANSFER`): about 1 MiB at 1 MiB/s.
const ITEM_TRANSFER: Duration = Duration::from_secs(1);

/// Blobs up to this size go in one `BatchUpdateBlobs`/`BatchReadBlobs` call; larger ones
/// through ByteStream. Well under every server's batch limit (bazel-remote and Buildbarn
/// default to 4 MiB), so the tier never needs to ask for it (`GetCapabilities`).
pub const BATCH_LIMIT: usize = 256 * 1024;

/// The pieces a ByteStream upload is cut into.
const STREAM_PIECE: usize = 64 * 1024;

/// The only output file of the ActionResults this tier writes.
const OUTPUT_PATH: &str = "value";

/// Any gRPC message this tier accepts: one item (inlined in an ActionResult or in a batch
/// read) and room for the envelope. Bigger messages are refused by tonic before they are
/// buffered, so a server never makes the agent allocate more than this per call.
const MAX_MESSAGE: usize = MAX_ITEM_LEN + 64 * 1024;

/// What `[remote] reapi`, `reapi_instance` and `reapi_token` say.
#[derive(Clone, Default)]
pub struct ReapiConfig {
    /// `grpc://host:port`.
    pub url: String,
    /// The REAPI instance name ("" for the server's default instance).
    pub instance: String,
    /// Sent as `authorization: Bearer …` on every call.
    pub token: Option<String>,
    /// With `grpcs://`: the PEM CA bundle the server's certificate must chain to, instead
    /// of the system's roots.
    pub ca: Option<std::path::PathBuf>,
    /// With `grpcs://`: a PEM client certificate and its key, for servers that authenticate
    /// clients by certificate (mutual TLS).
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Extra metadata sent on every call (`name`, `value`), e.g. a gateway's API key header.
    pub headers: Vec<(String, String)>,
}

impl fmt::Debug for ReapiConfig {
    /// Never prints the token: settings are logged and shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReapiConfig")
            .field("url", &self.url)
            .field("instance", &self.instance)
            .field("token", &self.token.as_ref().map(|_| "(secret)"))
            .field("ca", &self.ca)
            .field("client_cert", &self.client_cert)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(n, _)| (n, "(secret)"))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// How `grpcs://` checks the server: against `config.ca` if set, else the system's roots.
fn tls_config(config: &ReapiConfig) -> Result<ClientTlsConfig, RemoteError> {
    let read = |path: &std::path::Path, what: &str, setting: &str| {
        std::fs::read(path).map_err(|e| {
            RemoteError::Config(format!(
                "cannot read the {what} {} ({setting}): {e}",
                path.display()
            ))
        })
    };
    let tls = ClientTlsConfig::new();
    let tls = match &config.ca {
        None => tls.with_native_roots(),
        Some(path) => tls.ca_certificate(Certificate::from_pem(read(
            path,
            "CA bundle",
            "reapi_ca / CACHEFS_REAPI_CA",
        )?)),
    };
    Ok(match &config.client_cert {
        None => tls,
        Some((cert, key)) => tls.identity(Identity::from_pem(
            read(
                cert,
                "client certificate",
                "reapi_client_cert / CACHEFS_REAPI_CLIENT_CERT",
            )?,
            read(
                key,
                "client key",
                "reapi_client_key / CACHEFS_REAPI_CLIENT_KEY",
            )?,
        )),
    })
}

/// Adds the bearer token and the configured headers to every call.
#[derive(Clone)]
pub struct Auth(Vec<(MetadataKey<Ascii>, MetadataValue<Ascii>)>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        for (k, v) in &self.0 {
            req.metadata_mut().insert(k.clone(), v.clone());
        }
        Ok(req)
    }
}

/// The metadata every call carries: `authorization: Bearer …` and the configured headers.
fn metadata(config: &ReapiConfig) -> Result<Auth, RemoteError> {
    let mut all = Vec::new();
    if let Some(t) = &config.token {
        let value = format!("Bearer {}", t.trim()).parse().map_err(|_| {
            // The token itself is a secret: not in the message.
            RemoteError::Config(
                "the REAPI token is not printable ASCII: check reapi_token / CACHEFS_REAPI_TOKEN"
                    .into(),
            )
        })?;
        all.push((MetadataKey::from_static("authorization"), value));
    }
    for (name, value) in &config.headers {
        let bad = || {
            RemoteError::Config(format!(
                "the REAPI header {name:?} is not a valid gRPC metadata name with a printable \
                 ASCII value: check reapi_headers / CACHEFS_REAPI_HEADERS"
            ))
        };
        let key =
            MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| bad())?;
        all.push((key, value.parse().map_err(|_| bad())?));
    }
    Ok(Auth(all))
}

type Svc = InterceptedService<Channel, Auth>;

pub struct Reapi {
    /// As configured, e.g. `grpc://127.0.0.1:8980`, with the instance name if any.
    pub(super) server: String,
    pub(super) instance: String,
    timeout: Duration,
    pub(super) breaker: Breaker,
    pub(super) runtime: tokio::runtime::Runtime,
    ac: ActionCacheClient<Svc>,
    pub(super) cas: ContentAddressableStorageClient<Svc>,
    bytestream: ByteStreamClient<Svc>,
    /// The Execution service, used by `execute` only.
    pub(super) execution: ExecutionClient<Svc>,
    uploads: AtomicU64,
}

impl Reapi {
    pub fn new(config: &ReapiConfig, timeout: Duration) -> Result<Reapi, RemoteError> {
        let url = config.url.trim();
        let bad = || {
            RemoteError::Config(format!(
                "{url:?} is not grpc://host:port or grpcs://host:port"
            ))
        };
        let (addr, tls) = if let Some(a) = url.strip_prefix("grpc://") {
            (a, false)
        } else if let Some(a) = url.strip_prefix("grpcs://") {
            (a, true)
        } else {
            return Err(bad());
        };
        let addr = addr.trim_end_matches('/');
        if !addr.contains(':') || addr.contains('/') {
            return Err(bad());
        }
        if config.ca.is_some() && !tls {
            return Err(RemoteError::Config(format!(
                "a CA bundle (reapi_ca / CACHEFS_REAPI_CA) is set for {url:?}: use grpcs://"
            )));
        }
        let auth = metadata(config)?;
        if config.client_cert.is_some() && !tls {
            return Err(RemoteError::Config(format!(
                "a client certificate (reapi_client_cert / CACHEFS_REAPI_CLIENT_CERT) is set for {url:?}: use grpcs://"
            )));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cachefs-reapi")
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Io {
                server: url.to_string(),
                source: e,
            })?;
        let scheme = if tls { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| RemoteError::Config(format!("{url:?}: {e}")))?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        if tls {
            endpoint = endpoint
                .tls_config(tls_config(config)?)
                .map_err(|e| RemoteError::Config(format!("{url:?}: TLS: {e}")))?;
        }
        // Connects on first use (and again after a failure), so a server down when the
        // agent starts is a miss, not an agent that cannot start.
        let channel = {
            let _in_runtime = runtime.enter();
            endpoint.connect_lazy()
        };
        let svc = || InterceptedService::new(channel.clone(), auth.clone());
        let server = if config.instance.is_empty() {
            url.to_string()
        } else {
            format!("{url} (instance {})", config.instance)
        };
        Ok(Reapi {
            server,
            instance: config.instance.clone(),
            timeout,
            breaker: Breaker::default(),
            runtime,
            ac: ActionCacheClient::new(svc()).max_decoding_message_size(MAX_MESSAGE),
            cas: ContentAddressableStorageClient::new(svc())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            bytestream: ByteStreamClient::new(svc()).max_decoding_message_size(MAX_MESSAGE),
            execution: ExecutionClient::new(svc()).max_decoding_message_size(MAX_MESSAGE),
            uploads: AtomicU64::new(0),
        })
    }

    /// Runs one tier operation on the runtime, within its time budget, through the
    /// breaker: a server that is down, silent or refuses our credentials is skipped for a
    /// cool-down instead of costing a timeout per request.
    fn run<T>(&self, op: impl Future<Output = Result<T, Failure>>) -> Result<T, RemoteError> {
        self.run_within(self.timeout + ITEM_TRANSFER, op)
    }

    /// `run` with another time budget (an upload, an executed action).
    pub(super) fn run_within<T>(
        &self,
        budget: Duration,
        op: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, RemoteError> {
        if !self.breaker.allows() {
            return Err(RemoteError::Skipped(self.server.clone()));
        }
        let result = self
            .runtime
            .block_on(async { tokio::time::timeout(budget, op).await })
            .unwrap_or(Err(Failure::TimedOut(budget)));
        match result {
            Ok(v) => {
                self.breaker.succeeded();
                Ok(v)
            }
            Err(f) => {
                let e = f.into_error(&self.server);
                if opens_breaker(&e) {
                    self.breaker.failed(&e.to_string());
                }
                log::debug!("remote {}: {e}", self.server);
                Err(e)
            }
        }
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(super) fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        // Tells the server too, so it can give up on a call nobody waits for.
        r.set_timeout(self.timeout + ITEM_TRANSFER);
        r
    }

    /// The ActionCache entry of `key`, or None.
    async fn action_result(&self, key: &str) -> Result<Option<re::ActionResult>, Failure> {
        let req = re::GetActionResultRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(action_digest(key)),
            inline_stdout: false,
            inline_stderr: false,
            // Saves the CAS round trip where the server inlines small outputs.
            inline_output_files: vec![OUTPUT_PATH.into()],
            digest_function: 0,
        };
        match self.ac.clone().get_action_result(self.request(req)).await {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(Failure::Status("GetActionResult", s)),
        }
    }

    async fn get_value(&self, key: &str) -> Result<Option<Vec<u8>>, Failure> {
        let Some(result) = self.action_result(key).await? else {
            return Ok(None);
        };
        // An entry with no output is a tombstone (`delete`): a miss.
        let Some(file) = result
            .output_files
            .into_iter()
            .find(|f| f.path == OUTPUT_PATH)
        else {
            return Ok(None);
        };
        let digest = file.digest.ok_or(Failure::Bogus(
            "its ActionResult names a file without a digest",
        ))?;
        let size = checked_size(&digest)?;
        if !file.contents.is_empty() || size == 0 {
            verify(&digest, &file.contents)?;
            return Ok(Some(file.contents));
        }
        let data = if size <= BATCH_LIMIT {
            self.batch_read(&digest).await?
        } else {
            self.stream_read(&digest, size).await?
        };
        // Evicted between the ActionCache and the CAS lookups: a miss.
        let Some(data) = data else { return Ok(None) };
        verify(&digest, &data)?;
        Ok(Some(data))
    }

    pub(super) async fn batch_read(&self, digest: &re::Digest) -> Result<Option<Vec<u8>>, Failure> {
        let req = re::BatchReadBlobsRequest {
            instance_name: self.instance.clone(),
            digests: vec![digest.clone()],
            acceptable_compressors: Vec::new(),
            digest_function: 0,
        };
        let reply = self
            .cas
            .clone()
            .batch_read_blobs(self.request(req))
            .await
            .map_err(|s| Failure::Status("BatchReadBlobs", s))?
            .into_inner();
        let one = reply
            .responses
            .into_iter()
            .find(|r| r.digest.as_ref() == Some(digest))
            .ok_or(Failure::Bogus(
                "BatchReadBlobs answered without the blob asked for",
            ))?;
        match one.status.map_or(0, |s| s.code) {
            0 => Ok(Some(one.data)),
            c if c == Code::NotFound as i32 => Ok(None),
            c => Err(Failure::Status(
                "BatchReadBlobs",
                Status::new(Code::from(c), "reading one blob"),
            )),
        }
    }

    pub(super) async fn stream_read(
        &self,
        digest: &re::Digest,
        size: usize,
    ) -> Result<Option<Vec<u8>>, Failure> {
        let req = bs::ReadRequest {
            resource_name: self.resource(&format!("blobs/{}/{}", digest.hash, digest.size_bytes)),
            read_offset: 0,
            read_limit: 0,
        };
        let mut stream = match self.bytestream.clone().read(self.request(req)).await {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(Failure::Status("ByteStream.Read", s)),
        };
        let mut data = Vec::with_capacity(size);
        loop {
            match stream.message().await {
                Ok(Some(piece)) => {
                    // Never more than the digest states (itself bounded by `checked_size`).
                    if data.len() + piece.data.len() > size {
                        return Err(Failure::Bogus(
                            "ByteStream.Read sent more than the blob's size",
                        ));
                    }
                    data.extend_from_slice(&piece.data);
                }
                Ok(None) => return Ok(Some(data)),
                Err(s) if s.code() == Code::NotFound => return Ok(None),
                Err(s) => return Err(Failure::Status("ByteStream.Read", s)),
            }
        }
    }

    async fn set_value(&self, key: &str, value: &[u8]) -> Result<(), Failure> {
        let digest = digest_of(value);
        if !self.find_missing(vec![digest.clone()]).await?.is_empty() {
            if value.len() <= BATCH_LIMIT {
                self.batch_update(vec![(digest.clone(), value.to_vec())])
                    .await?;
            } else {
                self.stream_write(&digest, value).await?;
            }
        }
        // The blob first, the entry that names it last: a reader that finds the entry finds
        // the blob (unless evicted meanwhile: then a miss).
        self.update_action_result(key, Some(digest)).await
    }

    async fn update_action_result(
        &self,
        key: &str,
        output: Option<re::Digest>,
    ) -> Result<(), Failure> {
        let result = re::ActionResult {
            output_files: output
                .into_iter()
                .map(|d| re::OutputFile {
                    path: OUTPUT_PATH.into(),
                    digest: Some(d),
                    ..Default::default()
                })
                .collect(),
            exit_code: 0,
            ..Default::default()
        };
        let req = re::UpdateActionResultRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(action_digest(key)),
            action_result: Some(result),
            results_cache_policy: None,
            digest_function: 0,
        };
        self.ac
            .clone()
            .update_action_result(self.request(req))
            .await
            .map_err(|s| Failure::Status("UpdateActionResult", s))?;
        Ok(())
    }

    /// The digests among `digests` the server lacks.
    pub(super) async fn find_missing(
        &self,
        digests: Vec<re::Digest>,
    ) -> Result<Vec<re::Digest>, Failure> {
        let mut missing = Vec::new();
        // Servers bound a request's size (4 MiB by default): a few thousand digests each.
        for part in digests.chunks(4000) {
            let req = re::FindMissingBlobsRequest {
                instance_name: self.instance.clone(),
                blob_digests: part.to_vec(),
                digest_function: 0,
            };
            let reply = self
                .cas
                .clone()
                .find_missing_blobs(self.request(req))
                .await
                .map_err(|s| Failure::Status("FindMissingBlobs", s))?;
            missing.extend(reply.into_inner().missing_blob_digests);
        }
        Ok(missing)
    }

    /// Uploads small blobs in one call.
    pub(super) async fn batch_update(
        &self,
        batch: Vec<(re::Digest, Vec<u8>)>,
    ) -> Result<(), Failure> {
        let req = re::BatchUpdateBlobsRequest {
            instance_name: self.instance.clone(),
            requests: batch
                .into_iter()
                .map(|(digest, data)| re::batch_update_blobs_request::Request {
                    digest: Some(digest),
                    data,
                    compressor: 0,
                })
                .collect(),
            digest_function: 0,
        };
        let reply = self
            .cas
            .clone()
            .batch_update_blobs(self.request(req))
            .await
            .map_err(|s| Failure::Status("BatchUpdateBlobs", s))?
            .into_inner();
        match reply
            .responses
            .iter()
            .find_map(|r| r.status.as_ref().filter(|s| s.code != 0))
        {
            Some(s) => Err(Failure::Status(
                "BatchUpdateBlobs",
                Status::new(Code::from(s.code), s.message.clone()),
            )),
            None => Ok(()),
        }
    }

    pub(super) async fn stream_write(
        &self,
        digest: &re::Digest,
        value: &[u8],
    ) -> Result<(), Failure> {
        let name = self.resource(&format!(
            "uploads/{}/blobs/{}/{}",
            self.upload_id(),
            digest.hash,
            digest.size_bytes
        ));
        let pieces: Vec<bs::WriteRequest> = value
            .chunks(STREAM_PIECE)
            .enumerate()
            .map(|(i, piece)| bs::WriteRequest {
                // Named in the first request only, as the API asks.
                resource_name: if i == 0 { name.clone() } else { String::new() },
                write_offset: (i * STREAM_PIECE) as i64,
                finish_write: (i + 1) * STREAM_PIECE >= value.len(),
                data: piece.to_vec(),
            })
            .collect();
        let reply = self
            .bytestream
            .clone()
            .write(self.request(tokio_stream::iter(pieces)))
            .await
            .map_err(|s| Failure::Status("ByteStream.Write", s))?
            .into_inner();
        // A server that already has the blob may stop early and report it whole.
        if reply.committed_size != digest.size_bytes {
            return Err(Failure::Bogus(
                "ByteStream.Write committed a different size",
            ));
        }
        Ok(())
    }

    /// A resource name under this tier's instance.
    fn resource(&self, rest: &str) -> String {
        if self.instance.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.instance)
        }
    }

    /// A UUID-shaped name for one upload, unique per process and call (the API asks for a
    /// UUID so that concurrent uploads of one blob do not collide).
    fn upload_id(&self) -> String {
        let n = self.uploads.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut h = blake3::Hasher::new();
        h.update(&std::process::id().to_le_bytes());
        h.update(&nanos.to_le_bytes());
        h.update(&n.to_le_bytes());
        let mut b = *h.finalize().as_bytes();
        b[6] = (b[6] & 0x0f) | 0x40; // version 4
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        let x = hex(&b[..16]);
        format!(
            "{}-{}-{}-{}-{}",
            &x[..8],
            &x[8..12],
            &x[12..16],
            &x[16..20],
            &x[20..]
        )
    }
}

impl RemoteTier for Reapi {
    fn kind(&self) -> &'static str {
        "reapi"
    }

    fn get(&self, _route: &str, key: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        let start = Instant::now();
        let got = self.run(self.get_value(key));
        // What a remote lookup costs the compile that waits for it.
        log::debug!(
            "reapi get {key}: {} in {} µs",
            match &got {
                Ok(Some(v)) => format!("{} bytes", v.len()),
                Ok(None) => "missing".into(),
                Err(_) => "failed".into(),
            },
            start.elapsed().as_micros()
        );
        got
    }

    fn set(&self, _route: &str, key: &str, value: &[u8]) -> Result<(), RemoteError> {
        if value.len() > MAX_ITEM_LEN {
            // Readers refuse it (`checked_size`): not worth sending.
            return Err(RemoteError::TooLarge {
                server: self.server.clone(),
                what: "item to write",
                len: value.len() as u64,
                limit: MAX_ITEM_LEN as u64,
            });
        }
        self.run(self.set_value(key, value))
    }

    /// REAPI has no delete: the entry is replaced by one that names no output, which
    /// `get` reads as a miss.
    fn delete(&self, _route: &str, key: &str) -> Result<(), RemoteError> {
        self.run(self.update_action_result(key, None))
    }

    fn health(&self) -> Vec<ServerHealth> {
        let (healthy, failures, last_error) = self.breaker.health();
        vec![ServerHealth {
            server: self.server.clone(),
            healthy,
            failures,
            last_error,
        }]
    }
}

/// Why one operation failed, before it is told as a `RemoteError`.
pub(super) enum Failure {
    Status(&'static str, Status),
    TimedOut(Duration),
    /// The server answered something no correct server sends for what this tier wrote.
    Bogus(&'static str),
    TooLarge(u64),
    Mismatch,
    /// An executed action's own failure (`execute`): told as is, not as a server fault.
    Executor(String),
}

impl Failure {
    pub(super) fn into_error(self, server: &str) -> RemoteError {
        let server = server.to_string();
        let io = |kind, msg: String| RemoteError::Io {
            server: server.clone(),
            source: std::io::Error::new(kind, msg),
        };
        match self {
            Failure::TimedOut(budget) => io(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {budget:?}"),
            ),
            // Down, unreachable or overloaded: the breaker's case.
            Failure::Status(call, s)
                if matches!(
                    s.code(),
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                ) =>
            {
                let hint = if s.message().contains("certificate") {
                    " (check reapi_ca / CACHEFS_REAPI_CA)"
                } else {
                    ""
                };
                io(
                    std::io::ErrorKind::ConnectionRefused,
                    format!("{call}: {:?}: {}{hint}", s.code(), s.message()),
                )
            }
            Failure::Status(call, s) => {
                let hint = match s.code() {
                    Code::Unauthenticated | Code::PermissionDenied => {
                        " (check reapi_token / CACHEFS_REAPI_TOKEN and reapi_instance)"
                    }
                    Code::InvalidArgument | Code::NotFound => {
                        " (check reapi_instance / CACHEFS_REAPI_INSTANCE)"
                    }
                    _ => "",
                };
                RemoteError::Reply {
                    server,
                    reply: format!("{call}: {:?}: {}{hint}", s.code(), s.message()),
                }
            }
            Failure::Bogus(what) => RemoteError::Reply {
                server,
                reply: what.to_string(),
            },
            Failure::TooLarge(len) => RemoteError::TooLarge {
                server,
                what: "CAS blob",
                len,
                limit: MAX_ITEM_LEN as u64,
            },
            Failure::Executor(why) => RemoteError::Executed(why),
            Failure::Mismatch => RemoteError::Reply {
                server,
                reply: "a CAS blob does not match its digest (a corrupt or foreign entry)".into(),
            },
        }
    }
}

/// Whether the breaker opens: the server is unreachable or silent, or it refuses our
/// credentials (which no retry fixes within a cool-down).
fn opens_breaker(e: &RemoteError) -> bool {
    match e {
        RemoteError::Io { .. } => true,
        RemoteError::Reply { reply, .. } => {
            reply.contains("Unauthenticated") || reply.contains("PermissionDenied")
        }
        _ => false,
    }
}

impl From<std::num::TryFromIntError> for Failure {
    fn from(_: std::num::TryFromIntError) -> Failure {
        Failure::Bogus("a digest states a negative size")
    }
}

/// The digest's size, if it is one this tier could have written (every stated length is
/// bounded before anything is allocated for it).
fn checked_size(d: &re::Digest) -> Result<usize, Failure> {
    let size = u64::try_from(d.size_bytes)?;
    if size > MAX_ITEM_LEN as u64 {
        return Err(Failure::TooLarge(size));
    }
    if d.hash.len() != 64 || !d.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Failure::Bogus("an output's digest is not a SHA-256"));
    }
    Ok(size as usize)
}

pub(super) fn verify(d: &re::Digest, data: &[u8]) -> Result<(), Failure> {
    if digest_of(data) == *d {
        Ok(())
    } else {
        Err(Failure::Mismatch)
    }
}

/// REAPI's digest: SHA-256 (every server's default) and size.
pub fn digest_of(data: &[u8]) -> re::Digest {
    re::Digest {
        hash: hex(&Sha256::digest(data)),
        size_bytes: data.len() as i64,
    }
}

/// The ActionCache key of an item: the digest of an Action that no client could have
/// built for a real command (its command digest is that of this key's text, and it carries
/// cachefs's salt), so cachefs's entries never collide with a build's. The Action itself is
/// not uploaded: nothing ever executes it.
pub fn action_digest(key: &str) -> re::Digest {
    let action = re::Action {
        command_digest: Some(digest_of(format!("cachefs remote item {key}").as_bytes())),
        salt: b"cachefs".to_vec(),
        ..Default::default()
    };
    digest_of(&action.encode_to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_digests_differ_by_key_and_are_sha256() {
        let a = action_digest("cachefs3:m:00");
        let b = action_digest("cachefs3:m:01");
        assert_ne!(a, b);
        assert_eq!(a, action_digest("cachefs3:m:00"));
        assert!(checked_size(&a).is_ok());
    }

    #[test]
    fn stated_sizes_are_bounded_before_reading() {
        let mut d = digest_of(b"x");
        d.size_bytes = MAX_ITEM_LEN as i64 + 1;
        assert!(matches!(checked_size(&d), Err(Failure::TooLarge(_))));
        d.size_bytes = -1;
        assert!(matches!(checked_size(&d), Err(Failure::Bogus(_))));
        d.size_bytes = 1;
        d.hash = "zz".into();
        assert!(matches!(checked_size(&d), Err(Failure::Bogus(_))));
    }

    #[test]
    fn urls_other_than_grpc_are_refused_and_the_token_never_printed() {
        let t = Duration::from_millis(100);
        let c = |url: &str| ReapiConfig {
            url: url.into(),
            token: Some("s3cr3t".into()),
            ..Default::default()
        };
        for bad in ["http://h:1", "grpc://nohost", "grpcs://nohost", "h:1"] {
            let e = Reapi::new(&c(bad), t).err().unwrap().to_string();
            assert!(!e.contains("s3cr3t"), "{e}");
        }
        assert!(Reapi::new(&c("grpc://127.0.0.1:1"), t).is_ok());
        assert!(Reapi::new(&c("grpcs://127.0.0.1:1"), t).is_ok());
        let missing_ca = ReapiConfig {
            ca: Some("/nonexistent/ca.pem".into()),
            ..c("grpcs://127.0.0.1:1")
        };
        let e = Reapi::new(&missing_ca, t).err().unwrap().to_string();
        assert!(e.contains("CACHEFS_REAPI_CA"), "{e}");
        assert!(!format!("{:?}", c("grpc://h:1")).contains("s3cr3t"));
        let bad_token = ReapiConfig {
            token: Some("a\nb".into()),
            ..c("grpc://127.0.0.1:1")
        };
        assert!(Reapi::new(&bad_token, t).is_err());
    }

    #[test]
    fn a_reapi_tier_is_looked_up_after_memcached_and_before_object_stores() {
        let c = super::super::RemoteConfig {
            memcached: vec!["tcp://127.0.0.1:1".into()],
            reapi: Some(ReapiConfig {
                url: "grpc://127.0.0.1:1".into(),
                ..Default::default()
            }),
            timeout: Duration::from_millis(100),
            ..Default::default()
        };
        let remote = c.open().unwrap().unwrap();
        let kinds: Vec<&str> = remote.tiers().map(|(t, _)| t.kind()).collect();
        assert_eq!(kinds, ["memcached", "reapi"]);
    }

    #[test]
    fn upload_ids_are_uuid_shaped_and_unique() {
        let r = Reapi::new(
            &ReapiConfig {
                url: "grpc://127.0.0.1:1".into(),
                ..Default::default()
            },
            Duration::from_millis(100),
        )
        .unwrap();
        let (a, b) = (r.upload_id(), r.upload_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
    }

    #[test]
    fn a_server_that_is_not_there_is_an_error_then_skipped() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = Reapi::new(
            &ReapiConfig {
                url: format!("grpc://127.0.0.1:{port}"),
                ..Default::default()
            },
            Duration::from_millis(100),
        )
        .unwrap();
        assert!(r.get("", "k").unwrap_err().is_connection_failure());
        assert!(matches!(r.get("", "k"), Err(RemoteError::Skipped(_))));
        assert!(!r.health()[0].healthy);
    }
}
