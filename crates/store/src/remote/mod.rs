//! Shared cache tiers behind the local store: a memcached pool, a Redis server, a REAPI
//! cache's ActionCache and CAS (`reapi`), and object stores (S3, GCS, Azure Blob), one or
//! several in order. Values are chunked and checksummed (`chunking`), keys carry the format
//! version, every server has a circuit breaker (`breaker`), and every failure is a miss: the
//! remote can slow a build by at most one timeout per server, and never make it fail or give
//! a wrong output.

mod breaker;
pub mod chunking;
pub mod codec;
pub mod execute;
mod memcached;
mod object_store;
mod reapi;
mod redis;
mod server;

pub use memcached::Memcached;
pub use object_store::{CloudConfig, ObjectStore, Service};
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
use std::time::{Duration, Instant};

/// Bumped whenever the layout of remote values or of what the agent stores changes, so
/// that agents of incompatible versions never read each other's entries.
/// 2: the head carries a tag, with a key a MAC of the head and of the value's place (kind,
/// key, this version), instead of a MAC of the value's bytes alone.
/// 3: values are stored zstd-compressed (`codec`); a result carries its small outputs and a
/// manifest its recent results (the agent's `RemoteResult`, `RemoteManifest`), so a typical
/// hit is one read.
pub const FORMAT_VERSION: u32 = 3;

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
    /// The tier refused this agent for good (credentials, no such bucket): the message says
    /// which tier and what to fix.
    #[error("{0}")]
    Unusable(String),
    /// An executed action's own failure (`execute`: a missing input blob, a sandbox that
    /// would not start, a timeout), as the Execution service reported it.
    #[error("the executor reported: {0}")]
    Executed(String),
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
    /// Why the tier is off for good (refused credentials, no such bucket), with what to
    /// fix; None while it is usable or its fate is unknown. `cachefs run` shows it.
    fn refused(&self) -> Option<String> {
        None
    }
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

/// What `cachefs stats` shows about the shared cache: the counters of all its tiers together
/// (`tier` names them in lookup order, `a → b`), and each tier's own in `tiers`.
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
    /// Each tier in lookup order.
    #[serde(default)]
    pub tiers: Vec<TierReport>,
}

/// One tier's counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TierReport {
    pub tier: String,
    pub read_only: bool,
    pub servers: Vec<ServerHealth>,
    pub gets_found: u64,
    pub gets_missing: u64,
    pub errors: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub writes: u64,
    /// Values copied into this tier after a hit in a later one.
    pub fills: u64,
    /// Mean time of one value's lookup (head and chunks), found or not, in microseconds.
    pub get_latency_us: u64,
}

/// Remote settings (the root crate's `config` reads them from its file and
/// the environment).
#[derive(Debug, Clone, Default)]
pub struct RemoteConfig {
    pub memcached: Vec<String>,
    pub redis: Option<String>,
    /// Object-store tiers, looked up after memcached or Redis, in this order.
    pub cloud: Vec<CloudConfig>,
    pub read_only: bool,
    pub timeout: Duration,
    pub redis_expiry_s: u64,
    /// A REAPI server's ActionCache and CAS (`[remote] reapi`).
    pub reapi: Option<ReapiConfig>,
    /// MAC key derived from the configured secret: entries are authenticated.
    pub key: chunking::Seal,
}

impl RemoteConfig {
    /// The configured tiers in lookup order, or None when no remote is configured.
    pub fn open(&self) -> Result<Option<Remote>, RemoteError> {
        let mut levels: Vec<(Box<dyn RemoteTier>, bool)> = Vec::new();
        if !self.memcached.is_empty() {
            if self.redis.is_some() {
                return Err(RemoteError::Config(
                    "both a memcached pool and a Redis server are configured: choose one".into(),
                ));
            }
            levels.push((
                Box::new(Memcached::new(&self.memcached, self.timeout)?),
                self.read_only,
            ));
        } else if let Some(url) = &self.redis {
            levels.push((
                Box::new(Redis::new(url, self.timeout, self.redis_expiry_s)?),
                self.read_only,
            ));
        }
        // A REAPI cache next: usually a server of the team's network, nearer than a cloud
        // bucket.
        if let Some(reapi) = &self.reapi {
            levels.push((Box::new(Reapi::new(reapi, self.timeout)?), self.read_only));
        }
        for c in &self.cloud {
            levels.push((
                Box::new(ObjectStore::new(c)?),
                self.read_only || c.read_only,
            ));
        }
        if levels.is_empty() {
            return Ok(None);
        }
        Ok(Some(Remote::levels(levels).with_key(self.key)))
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

/// One tier's counters.
#[derive(Default)]
struct Counters {
    gets_found: AtomicU64,
    gets_missing: AtomicU64,
    errors: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    writes: AtomicU64,
    fills: AtomicU64,
    gets: AtomicU64,
    get_us: AtomicU64,
}

/// One tier in the lookup order.
struct Level {
    tier: Box<dyn RemoteTier>,
    read_only: bool,
    n: Counters,
}

/// The remote tiers in lookup order (local → memcached → S3, say), with chunking,
/// verification and counters. A value found in a later tier is copied into the earlier
/// writable ones by the caller's background writer (`get_level`, `put_upto`); a new value
/// goes to every writable tier.
pub struct Remote {
    levels: Vec<Level>,
    /// No tier is written.
    pub read_only: bool,
    seal: chunking::Seal,
    /// The largest value read or written (`with_max_value`).
    max_value: u64,
    pub(crate) writes_dropped: AtomicU64,
    pub(crate) writes_pending: AtomicU64,
}

impl Remote {
    pub fn new(tier: Box<dyn RemoteTier>, read_only: bool) -> Remote {
        Remote::levels(vec![(tier, read_only)])
    }

    /// Several tiers, looked up in this order; each with whether it is read-only.
    pub fn levels(tiers: Vec<(Box<dyn RemoteTier>, bool)>) -> Remote {
        Remote {
            read_only: tiers.iter().all(|(_, ro)| *ro),
            levels: tiers
                .into_iter()
                .map(|(tier, read_only)| Level {
                    tier,
                    read_only,
                    n: Counters::default(),
                })
                .collect(),
            seal: None,
            max_value: chunking::MAX_VALUE_LEN,
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

    /// The first tier (the only one, unless several are configured).
    pub fn tier(&self) -> &dyn RemoteTier {
        &*self.levels[0].tier
    }

    /// Every tier in lookup order, with whether it is read-only.
    pub fn tiers(&self) -> impl Iterator<Item = (&dyn RemoteTier, bool)> {
        self.levels.iter().map(|l| (&*l.tier, l.read_only))
    }

    /// The verified value, or None on a miss, a server failure or a verification failure
    /// (counted as an error, logged).
    pub fn get(&self, kind: Kind, id: &Hash, route: &Hash) -> Option<Vec<u8>> {
        self.get_level(kind, id, route).map(|(v, _)| v)
    }

    /// The verified value from the first tier that has it, with that tier's place in the
    /// lookup order; the tiers before it missed (or failed) and are worth filling.
    pub fn get_level(&self, kind: Kind, id: &Hash, route: &Hash) -> Option<(Vec<u8>, usize)> {
        let (route, key) = (route_key(route), remote_key(kind, id));
        self.levels.iter().enumerate().find_map(|(i, level)| {
            let start = Instant::now();
            let got = self.try_get(level, &route, kind, &key);
            level.n.gets.fetch_add(1, Ordering::Relaxed);
            level
                .n
                .get_us
                .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
            match got {
                Ok(Some(v)) => {
                    level.n.gets_found.fetch_add(1, Ordering::Relaxed);
                    Some((v, i))
                }
                Ok(None) => {
                    level.n.gets_missing.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Err(e) => {
                    level.n.errors.fetch_add(1, Ordering::Relaxed);
                    log::info!(
                        "remote {} read failed, treated as a miss: {e}",
                        level.tier.kind()
                    );
                    None
                }
            }
        })
    }

    fn try_get(
        &self,
        level: &Level,
        route: &str,
        kind: Kind,
        key: &str,
    ) -> Result<Option<Vec<u8>>, GetError> {
        let Some(head) = level.tier.get(route, key)? else {
            return Ok(None);
        };
        level
            .n
            .bytes_read
            .fetch_add(head.len() as u64, Ordering::Relaxed);
        let place = chunking::Place { kind, key };
        let head = chunking::open_head(&head, &self.seal, place)?;
        // Stored with a codec header, and raw when compression did not save anything.
        let most = self.max_value + codec::HEADER_LEN as u64;
        if head.len > most {
            return Err(GetError::TooLarge(head.len, most));
        }
        let mut chunks = Vec::with_capacity(head.chunks.len());
        // One after the other: a chunked value is over 1000 KiB stored, rare among build
        // outputs once compressed, and the agent fetches a result's blobs concurrently.
        for i in 0..head.chunks.len() {
            let Some(c) = level.tier.get(route, &chunk_key(key, i))? else {
                return Err(GetError::MissingChunk(i));
            };
            level
                .n
                .bytes_read
                .fetch_add(c.len() as u64, Ordering::Relaxed);
            chunking::verify_chunk(&head, i, &c)?;
            chunks.push(c);
        }
        let stored = chunking::assemble(&head, chunks)?;
        // Verified (and with a key authenticated) before it is decompressed.
        Ok(Some(codec::unpack(&stored, self.max_value)?))
    }

    /// Stores a value in every writable tier.
    pub fn put(&self, kind: Kind, id: &Hash, route: &Hash, value: &[u8]) {
        self.put_upto(kind, id, route, value, self.levels.len());
    }

    /// Stores a value in the writable tiers before `upto` in the lookup order: all of them
    /// for a new value, the ones that missed for a value found in a later tier (a fill).
    pub fn put_upto(&self, kind: Kind, id: &Hash, route: &Hash, value: &[u8], upto: usize) {
        let key = remote_key(kind, id);
        if value.len() as u64 > self.max_value {
            // Readers with this limit refuse it (see `with_max_value`): not worth sending.
            log::info!(
                "remote: {key} not written: {} bytes is over the limit of {}",
                value.len(),
                self.max_value
            );
            return;
        }
        let fill = upto < self.levels.len();
        let route = route_key(route);
        let place = chunking::Place { kind, key: &key };
        let stored = codec::pack(value);
        if stored.len() as u64 > chunking::MAX_VALUE_LEN {
            log::info!("remote: {key} not written: over the largest value stored");
            return;
        }
        let (head, chunks) = chunking::split(&stored, &self.seal, place);
        for level in self.levels.iter().take(upto).filter(|l| !l.read_only) {
            // Chunks first, the head last, so a reader that finds the head finds (unless
            // evicted meanwhile) every chunk it names.
            let result = chunks
                .iter()
                .enumerate()
                .try_for_each(|(i, c)| level.tier.set(&route, &chunk_key(&key, i), c))
                .and_then(|()| level.tier.set(&route, &key, &head));
            match result {
                Ok(()) => {
                    let n = &level.n;
                    n.writes.fetch_add(1, Ordering::Relaxed);
                    if fill {
                        n.fills.fetch_add(1, Ordering::Relaxed);
                    }
                    n.bytes_written
                        .fetch_add((head.len() + stored.len()) as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    level.n.errors.fetch_add(1, Ordering::Relaxed);
                    log::info!("remote {} write of {key} failed: {e}", level.tier.kind());
                }
            }
        }
    }

    /// Each tier's `RemoteTier::refused`, in lookup order.
    pub fn refusals(&self) -> Vec<String> {
        self.levels
            .iter()
            .filter_map(|l| l.tier.refused())
            .collect()
    }

    pub fn report(&self) -> RemoteReport {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let tiers: Vec<TierReport> = self
            .levels
            .iter()
            .map(|l| TierReport {
                tier: l.tier.kind().to_string(),
                read_only: l.read_only,
                servers: l.tier.health(),
                gets_found: n(&l.n.gets_found),
                gets_missing: n(&l.n.gets_missing),
                errors: n(&l.n.errors),
                bytes_read: n(&l.n.bytes_read),
                bytes_written: n(&l.n.bytes_written),
                writes: n(&l.n.writes),
                fills: n(&l.n.fills),
                get_latency_us: n(&l.n.get_us).checked_div(n(&l.n.gets)).unwrap_or(0),
            })
            .collect();
        let sum = |f: fn(&TierReport) -> u64| tiers.iter().map(f).sum::<u64>();
        RemoteReport {
            tier: tiers
                .iter()
                .map(|t| t.tier.as_str())
                .collect::<Vec<_>>()
                .join(" → "),
            read_only: self.read_only,
            authenticated: self.seal.is_some(),
            servers: tiers.iter().flat_map(|t| t.servers.clone()).collect(),
            // Found once, in whichever tier: a lookup that missed in memcached and hit in S3
            // is one value found.
            gets_found: sum(|t| t.gets_found),
            gets_missing: tiers.last().map_or(0, |t| t.gets_missing),
            errors: sum(|t| t.errors),
            bytes_read: sum(|t| t.bytes_read),
            bytes_written: sum(|t| t.bytes_written),
            writes: sum(|t| t.writes - t.fills),
            writes_dropped: n(&self.writes_dropped),
            writes_pending: n(&self.writes_pending),
            tiers,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum GetError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Chunk(#[from] chunking::ChunkError),
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    #[error("chunk {0} is missing")]
    MissingChunk(usize),
    #[error("the value's head claims {0} bytes, over this reader's limit of {1}")]
    TooLarge(u64, u64),
}
