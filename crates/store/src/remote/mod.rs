//! Shared cache tiers behind the local store: a memcached pool, a Redis server or a REAPI
//! cache's ActionCache and CAS (`reapi`). Values are chunked and checksummed (`chunking`),
//! keys carry the format version, every server has a circuit breaker (`breaker`), and every
//! failure is a miss: the remote can slow a build by at most one timeout per server, and
//! never make it fail or give a wrong output.

mod breaker;
pub mod chunking;
mod memcached;
mod reapi;
mod redis;
mod server;

pub use memcached::Memcached;
pub use reapi::{Reapi, ReapiConfig};
pub use redis::Redis;

/// What parses bytes from a server, public for the fuzz tests (`tests/fuzz_remote.rs`):
/// none of it may allocate more than its bounds, whatever the bytes.
#[doc(hidden)]
pub mod wire {
    pub use super::memcached::read_get_reply;
    pub use super::redis::read_bulk_reply;
    pub use super::server::{read_data, read_line, MAX_LINE_LEN};
}

use crate::Hash;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bumped whenever the layout of remote values or of what the agent stores changes, so
/// that agents of incompatible versions never read each other's entries.
/// 2: the head carries a tag, with a key a MAC of the head and of the value's place (kind,
/// key, this version), instead of a MAC of the value's bytes alone.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote cache setting invalid: {0}")]
    Config(String),
    #[error("remote server {server}: {source}")]
    Io {
        server: String,
        source: std::io::Error,
    },
    #[error("remote server {server} answered {reply:?}")]
    Reply { server: String, reply: String },
    /// A length stated by the server is over what cachefs ever writes: refused before
    /// anything is allocated.
    #[error(
        "remote server {server} announced a {what} of {len} bytes, over the limit of {limit}: \
         not read (is the server shared with something other than cachefs?)"
    )]
    TooLarge {
        server: String,
        what: &'static str,
        len: u64,
        limit: u64,
    },
    #[error("remote server {0} skipped after a recent failure")]
    Skipped(String),
}

impl RemoteError {
    /// Whether the server itself is unreachable or silent (the breaker opens), as opposed to
    /// one refused request.
    pub fn is_connection_failure(&self) -> bool {
        matches!(self, RemoteError::Io { .. })
    }
}

/// One kind of shared server. Every call is bounded by the configured timeout. `route`
/// picks the server in a pool: every item of one cache entry (manifest, result, blobs and
/// their chunks) shares one route, so losing a server loses whole entries, not a piece of
/// every entry.
pub trait RemoteTier: Send + Sync {
    fn kind(&self) -> &'static str;
    fn get(&self, route: &str, key: &str) -> Result<Option<Vec<u8>>, RemoteError>;
    fn set(&self, route: &str, key: &str, value: &[u8]) -> Result<(), RemoteError>;
    fn delete(&self, route: &str, key: &str) -> Result<(), RemoteError>;
    fn health(&self) -> Vec<ServerHealth>;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerHealth {
    pub server: String,
    pub healthy: bool,
    pub failures: u64,
    pub last_error: Option<String>,
}

impl ServerHealth {
    fn of(s: &server::Server) -> ServerHealth {
        let (healthy, failures, last_error) = s.breaker.health();
        ServerHealth {
            server: s.addr.clone(),
            healthy,
            failures,
            last_error,
        }
    }
}

/// What `cachefs stats` shows about the remote tier.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemoteReport {
    pub tier: String,
    pub read_only: bool,
    /// Entries are authenticated with CACHEFS_REMOTE_KEY (a keyed MAC).
    pub authenticated: bool,
    pub servers: Vec<ServerHealth>,
    /// Values found on the remote and verified.
    pub gets_found: u64,
    pub gets_missing: u64,
    /// Failed or skipped operations, and values that failed verification.
    pub errors: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub writes: u64,
    /// Writes not sent because the background queue was full.
    pub writes_dropped: u64,
    /// Writes queued and not yet sent.
    pub writes_pending: u64,
}

/// Remote settings (the root crate's `config` reads them from its file and
/// the environment).
#[derive(Debug, Clone, Default)]
pub struct RemoteConfig {
    pub memcached: Vec<String>,
    pub redis: Option<String>,
    pub read_only: bool,
    pub timeout: Duration,
    pub redis_expiry_s: u64,
    /// A REAPI server's ActionCache and CAS (`[remote] reapi`).
    pub reapi: Option<ReapiConfig>,
    /// MAC key derived from the configured secret: entries are authenticated.
    pub key: chunking::Seal,
}

impl RemoteConfig {
    /// The configured tier, or None when no remote is configured.
    pub fn open(&self) -> Result<Option<Remote>, RemoteError> {
        let servers = [
            !self.memcached.is_empty(),
            self.redis.is_some(),
            self.reapi.is_some(),
        ];
        if servers.iter().filter(|&&s| s).count() > 1 {
            return Err(RemoteError::Config(
                "more than one of a memcached pool, a Redis server and a REAPI server is \
                 configured: choose one"
                    .into(),
            ));
        }
        let tier: Box<dyn RemoteTier> = if let Some(reapi) = &self.reapi {
            Box::new(Reapi::new(reapi, self.timeout)?)
        } else if !self.memcached.is_empty() {
            if self.redis.is_some() {
                return Err(RemoteError::Config(
                    "both a memcached pool and a Redis server are configured: choose one".into(),
                ));
            }
            Box::new(Memcached::new(&self.memcached, self.timeout)?)
        } else if let Some(url) = &self.redis {
            Box::new(Redis::new(url, self.timeout, self.redis_expiry_s)?)
        } else {
            return Ok(None);
        };
        Ok(Some(Remote::new(tier, self.read_only).with_key(self.key)))
    }
}

/// What a remote value is: its key prefix, so kinds never collide.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Manifest,
    Result,
    Blob,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Manifest => "m",
            Kind::Result => "r",
            Kind::Blob => "b",
        }
    }
}

/// The head item's key; chunk `i` lives at `{key}:{i}`.
pub fn remote_key(kind: Kind, id: &Hash) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("cachefs{FORMAT_VERSION}:{}:{hex}", kind.tag())
}

/// The routing string of a cache entry (its key1).
pub fn route_key(route: &Hash) -> String {
    route.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn chunk_key(key: &str, i: usize) -> String {
    format!("{key}:{i}")
}

/// A remote tier with chunking, verification and counters.
pub struct Remote {
    tier: Box<dyn RemoteTier>,
    pub read_only: bool,
    seal: chunking::Seal,
    /// The largest value read or written (`with_max_value`).
    max_value: u64,
    gets_found: AtomicU64,
    gets_missing: AtomicU64,
    errors: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    writes: AtomicU64,
    pub(crate) writes_dropped: AtomicU64,
    pub(crate) writes_pending: AtomicU64,
}

impl Remote {
    pub fn new(tier: Box<dyn RemoteTier>, read_only: bool) -> Remote {
        Remote {
            tier,
            read_only,
            seal: None,
            max_value: chunking::MAX_VALUE_LEN,
            gets_found: AtomicU64::new(0),
            gets_missing: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            writes_dropped: AtomicU64::new(0),
            writes_pending: AtomicU64::new(0),
        }
    }

    /// Lowers the largest value read or written from `chunking::MAX_VALUE_LEN`, e.g. to
    /// the largest result the agent caches: a head that claims more is a miss before any
    /// chunk is fetched, so a remote read never makes the agent hold more than this.
    pub fn with_max_value(mut self, bytes: u64) -> Remote {
        self.max_value = bytes.min(chunking::MAX_VALUE_LEN);
        self
    }

    /// Authenticates entries with a keyed MAC (see `chunking::Seal`).
    pub fn with_key(mut self, seal: chunking::Seal) -> Remote {
        self.seal = seal;
        self
    }

    pub fn tier(&self) -> &dyn RemoteTier {
        &*self.tier
    }

    /// The verified value, or None on a miss, a server failure or a verification failure
    /// (counted as an error, logged).
    pub fn get(&self, kind: Kind, id: &Hash, route: &Hash) -> Option<Vec<u8>> {
        match self.try_get(&route_key(route), kind, &remote_key(kind, id)) {
            Ok(Some(v)) => {
                self.gets_found.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            Ok(None) => {
                self.gets_missing.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                log::info!(
                    "remote {} read failed, treated as a miss: {e}",
                    self.tier.kind()
                );
                None
            }
        }
    }

    fn try_get(&self, route: &str, kind: Kind, key: &str) -> Result<Option<Vec<u8>>, GetError> {
        let Some(head) = self.tier.get(route, key)? else {
            return Ok(None);
        };
        self.bytes_read
            .fetch_add(head.len() as u64, Ordering::Relaxed);
        let place = chunking::Place { kind, key };
        let head = chunking::open_head(&head, &self.seal, place)?;
        if head.len > self.max_value {
            return Err(GetError::TooLarge(head.len, self.max_value));
        }
        let mut chunks = Vec::with_capacity(head.chunks.len());
        for i in 0..head.chunks.len() {
            let Some(c) = self.tier.get(route, &chunk_key(key, i))? else {
                return Err(GetError::MissingChunk(i));
            };
            self.bytes_read.fetch_add(c.len() as u64, Ordering::Relaxed);
            chunking::verify_chunk(&head, i, &c)?;
            chunks.push(c);
        }
        Ok(Some(chunking::assemble(&head, chunks)?))
    }

    /// Stores a value: chunks first, the head last, so a reader that finds the head finds
    /// (unless evicted meanwhile) every chunk it names.
    pub fn put(&self, kind: Kind, id: &Hash, route: &Hash, value: &[u8]) {
        if self.read_only {
            return;
        }
        let key = remote_key(kind, id);
        if value.len() as u64 > self.max_value {
            // Readers with this limit refuse it (see `with_max_value`): not worth sending.
            log::info!(
                "remote {}: {key} not written: {} bytes is over the limit of {}",
                self.tier.kind(),
                value.len(),
                self.max_value
            );
            return;
        }
        let route = route_key(route);
        let place = chunking::Place { kind, key: &key };
        let (head, chunks) = chunking::split(value, &self.seal, place);
        let result = chunks
            .iter()
            .enumerate()
            .try_for_each(|(i, c)| self.tier.set(&route, &chunk_key(&key, i), c))
            .and_then(|()| self.tier.set(&route, &key, &head));
        match result {
            Ok(()) => {
                self.writes.fetch_add(1, Ordering::Relaxed);
                self.bytes_written
                    .fetch_add((head.len() + value.len()) as u64, Ordering::Relaxed);
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                log::info!("remote {} write of {key} failed: {e}", self.tier.kind());
            }
        }
    }

    pub fn report(&self) -> RemoteReport {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RemoteReport {
            tier: self.tier.kind().to_string(),
            read_only: self.read_only,
            authenticated: self.seal.is_some(),
            servers: self.tier.health(),
            gets_found: n(&self.gets_found),
            gets_missing: n(&self.gets_missing),
            errors: n(&self.errors),
            bytes_read: n(&self.bytes_read),
            bytes_written: n(&self.bytes_written),
            writes: n(&self.writes),
            writes_dropped: n(&self.writes_dropped),
            writes_pending: n(&self.writes_pending),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum GetError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Chunk(#[from] chunking::ChunkError),
    #[error("chunk {0} is missing")]
    MissingChunk(usize),
    #[error("the value's head claims {0} bytes, over this reader's limit of {1}")]
    TooLarge(u64, u64),
}
