//! The local store with an optional remote tier behind it. Reads go local first, then remote
//! (verified, then copied into the local store); writes go local at once and to the remote
//! through a bounded queue drained by one background thread, so the build never waits on
//! the network. With several remote tiers, a value found in a later one is queued for the
//! earlier ones the same way (a fill). Everything the local store offers is reachable through
//! `Deref`.

use crate::remote::{Kind, Remote, RemoteReport};
use crate::{Hash, LocalStore, StoreError};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

/// Writes waiting for the remote; beyond this, new writes are dropped (and counted).
const QUEUE_LEN: usize = 1024;

/// Blobs up to this size are not stored on the remote under their own key: they travel
/// inside the result that names them (the agent's `RemoteResult`, itself carried by its
/// manifest), so a compile hit is one read instead of one more per output. Most objects are
/// well under it;
/// larger outputs (Rust's rlibs, big archives) keep their own keys and are fetched
/// concurrently.
pub const INLINE_BLOB_MAX: usize = 512 * 1024;

/// One queued remote write: kind, id, route (the entry's key1), value, and the tiers it
/// goes to (those before this place in the lookup order: all of them for a new value).
type Write = (Kind, Hash, Hash, Vec<u8>, usize);

pub struct TieredStore {
    local: LocalStore,
    remote: Option<Arc<Remote>>,
    queue: Option<SyncSender<Write>>,
}

impl std::ops::Deref for TieredStore {
    type Target = LocalStore;
    fn deref(&self) -> &LocalStore {
        &self.local
    }
}

impl TieredStore {
    pub fn new(local: LocalStore, remote: Option<Remote>) -> TieredStore {
        let remote = remote.map(Arc::new);
        let queue = remote.as_ref().filter(|r| !r.read_only).map(|r| {
            let (tx, rx) = sync_channel::<Write>(QUEUE_LEN);
            let r = r.clone();
            std::thread::Builder::new()
                .name("cachefs-remote-writer".into())
                .spawn(move || {
                    for (kind, id, route, value, upto) in rx {
                        r.put_upto(kind, &id, &route, &value, upto);
                        r.writes_pending.fetch_sub(1, Ordering::Relaxed);
                    }
                })
                .expect("spawning the remote writer thread");
            tx
        });
        TieredStore {
            local,
            remote,
            queue,
        }
    }

    pub fn has_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// A verified value from the remote tiers alone (no local copy is made: the caller
    /// stores it once whatever it references is local too). Found in a later tier, it is
    /// queued for the earlier ones.
    pub fn get_remote(&self, kind: Kind, id: &Hash, route: &Hash) -> Option<Vec<u8>> {
        let (value, level) = self.remote.as_ref()?.get_level(kind, id, route)?;
        if level > 0 {
            self.queue_write((kind, *id, *route, value.clone(), level));
        }
        Some(value)
    }

    /// Queues a value for the remote tiers; never blocks.
    pub fn push_remote(&self, kind: Kind, id: &Hash, route: &Hash, value: Vec<u8>) {
        self.queue_write((kind, *id, *route, value, usize::MAX));
    }

    fn queue_write(&self, write: Write) {
        let (Some(remote), Some(queue)) = (&self.remote, &self.queue) else {
            return;
        };
        remote.writes_pending.fetch_add(1, Ordering::Relaxed);
        match queue.try_send(write) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                remote.writes_pending.fetch_sub(1, Ordering::Relaxed);
                remote.writes_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A blob from the local store, else from the remote (content-verified by its hash,
    /// then stored locally). Returns whether it came from the remote.
    pub fn get_blob_tiered(
        &self,
        id: &Hash,
        route: &Hash,
    ) -> Result<Option<(Vec<u8>, bool)>, StoreError> {
        if let Some(data) = self.local.get_blob(id)? {
            return Ok(Some((data, false)));
        }
        Ok(self.get_remote_blob(id, route)?.map(|data| (data, true)))
    }

    /// A blob from the remote alone (content-verified by its hash, then stored locally).
    pub fn get_remote_blob(&self, id: &Hash, route: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(data) = self.get_remote(Kind::Blob, id, route) else {
            return Ok(None);
        };
        // The chunk layer verified the transfer; the blob id names its content, so check it
        // too: a value stored under the wrong id must never be restored.
        if blake3::hash(&data).as_bytes() != id {
            log::warn!("remote blob does not match its id; ignored");
            return Ok(None);
        }
        self.local.put_blob(&data)?;
        Ok(Some(data))
    }

    /// Stores a blob locally and queues it for the remote, unless it is small enough to
    /// travel inside its result (`INLINE_BLOB_MAX`).
    pub fn put_blob_tiered(&self, data: &[u8], route: &Hash) -> Result<Hash, StoreError> {
        let id = self.local.put_blob(data)?;
        if self.queue.is_some() && data.len() > INLINE_BLOB_MAX {
            self.push_remote(Kind::Blob, &id, route, data.to_vec());
        }
        Ok(id)
    }

    /// Why remote tiers are off for good, one line each with what to fix.
    pub fn remote_refusals(&self) -> Vec<String> {
        self.remote
            .as_ref()
            .map(|r| r.refusals())
            .unwrap_or_default()
    }

    pub fn remote_report(&self) -> Option<RemoteReport> {
        self.remote.as_ref().map(|r| r.report())
    }
}
