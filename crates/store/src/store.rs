//! [`LocalStore`]: the public operations. Index transactions live in `tx.rs`.
//!
//! Durability: every write transaction commits with `Durability::Immediate` (one fsync, about
//! 0.25 ms on this project's dev VM). Results could afford `Durability::None`, but durable
//! commits keep the reasoning simple (the index on disk is always the last commit, so a crash
//! never loses a deletion that already happened to a file), let redb reuse freed pages at once
//! (non-durable commits grew a test index to 1.8 MB for a few KB of entries), and stay out of
//! redb's newest code paths.
//! To keep fsyncs off the common paths:
//! - `put_blob` does not commit: it writes the blob file (temp name, then rename) and queues
//!   its index entry, which the next write transaction (normally the `put_result` referencing
//!   it) records. So a miss costs one commit for its blobs and result, not one per blob, and the
//!   index can never point at a half-written blob.
//! - `get_result` does not write. It records the LRU touch in memory; touches are applied by
//!   the next write transaction of any kind, or by one of their own once `TOUCH_FLUSH_COUNT` are
//!   pending or the oldest is `TOUCH_FLUSH_AGE` old. Eviction applies them first, so its order
//!   is exact; a crash loses at most the pending touches, which only blurs the LRU order.
//!
//! Files are deleted only after the commit that drops their entries, so the index never names a
//! deleted blob. A crash can leave blob files the index does not know (queued entries, or
//! deletions that did not happen); the next open sees that the clean-shutdown flag is missing
//! and reconciles the blob directory with the index.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::blobfile::{self, blob_path};
use crate::error::{HINT_READ, HINT_WRITE};
use crate::index::{self, BLOBS, LRU, MANIFESTS, META, RESULTS, STATE};
use crate::tx::Tx;
use crate::{Hash, StoreError};

const TOUCH_FLUSH_COUNT: usize = 4096;
const TOUCH_FLUSH_AGE: Duration = Duration::from_secs(60);
/// A blob `put_blob` returned is kept from eviction until a result references it, or this long
/// (the caller may have failed between the two calls and never come back).
const PIN_TTL: Duration = Duration::from_secs(3600);
/// How often a failed reopen is retried: it may repair the index, which is not worth doing on
/// every call while the disk stays full.
const REOPEN_RETRY: Duration = Duration::from_secs(5);
/// Free space the index file may carry before eviction compacts it.
const COMPACT_SLACK: u64 = 4 << 20;
/// Eviction goes this far below the limit, so it runs once per ~10% of churn, not on every put.
const EVICT_TO_PERCENT: u64 = 90;

/// Counts of what the store holds, for `cachefs stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    pub results: u64,
    pub blobs: u64,
    /// On-disk bytes: blob files plus the index file.
    pub bytes: u64,
    pub limit: u64,
    /// Blob files found damaged or missing (and dropped) since the cache was created.
    pub corrupt_found: u64,
    /// Results removed by eviction since the cache was created.
    pub evicted: u64,
}

/// The local cache store. One per cache directory (the index is locked against other
/// processes); shared by the agent's threads.
pub struct LocalStore {
    pub(crate) index_path: PathBuf,
    pub(crate) blob_dir: PathBuf,
    limit: u64,
    /// `None` only while reopening after an I/O error failed; see [`LocalStore::db`].
    db: RwLock<Option<Database>>,
    /// When reopening last failed: retried at most every `REOPEN_RETRY`.
    reopen_failed_at: Mutex<Option<Instant>>,
    /// Serializes write transactions (redb would too) so that the file deletions after a
    /// commit happen before the next writer looks at the blobs.
    pub(crate) writer: Mutex<()>,
    pub(crate) pending: Mutex<Pending>,
    pins: Mutex<HashMap<Hash, Pin>>,
    /// Held shared by `put_blob` while it pins and checks a blob, and exclusively by an eviction
    /// from its decisions to its file deletions: otherwise `put_blob` could see a blob that an
    /// eviction has already decided (before the pin) to delete, and return it as stored.
    evict_gate: RwLock<()>,
    clock: AtomicU64,
    /// Bytes right after the last eviction: if that was still over the limit (index slack),
    /// puts do not evict again until the store has grown by 1% of the limit.
    evict_floor: AtomicU64,
    pub(crate) totals: Totals,
    /// Whether the previous process closed the index cleanly (no reconciliation was needed).
    opened_clean: bool,
    /// Set by `close_for_exit`: the index is closed for good, not to be reopened or written.
    closed: AtomicBool,
}

/// Read-path observations waiting for the next write transaction.
#[derive(Default)]
pub(crate) struct Pending {
    /// Result id → the tick of its latest `get_result`.
    pub(crate) touches: HashMap<Hash, u64>,
    pub(crate) since: Option<Instant>,
    /// Blobs whose file `get_blob` found missing or removed as corrupt: their size leaves the
    /// byte total.
    pub(crate) missing: Vec<Hash>,
    /// Blob files `put_blob` wrote, with their sizes, not yet in the index.
    pub(crate) new_blobs: HashMap<Hash, u64>,
}

struct Pin {
    count: u64,
    at: Instant,
}

/// Mirrors of the committed index state, so `stats` and the over-limit check never read it.
#[derive(Default)]
pub(crate) struct Totals {
    pub(crate) results: AtomicU64,
    pub(crate) blobs: AtomicU64,
    pub(crate) blob_bytes: AtomicU64,
    pub(crate) corrupt_found: AtomicU64,
    pub(crate) evicted: AtomicU64,
}

pub(crate) struct Db<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for Db<'_> {
    type Target = Database;
    fn deref(&self) -> &Database {
        self.0
            .as_ref()
            .expect("a Db is only made for an open index")
    }
}

/// A poisoned lock only means another thread panicked; the guarded data is still consistent
/// (every critical section is a few map operations).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn hash(data: &[u8]) -> Hash {
    *blake3::hash(data).as_bytes()
}

/// The index's file name in the cache directory (the agent watches it: deleted, the cache is
/// gone).
pub const INDEX_FILE: &str = "index.redb";

impl LocalStore {
    /// Opens the cache in `dir` (created 0700 if missing), with index `dir/index.redb` and blobs
    /// under `dir/blobs/`. An unreadable index is moved aside and replaced by an empty one.
    pub fn open(dir: &Path, limit_bytes: u64) -> Result<Self, StoreError> {
        create_private_dir(dir)?;
        let blob_dir = dir.join("blobs");
        create_private_dir(&blob_dir)?;
        let index_path = dir.join(INDEX_FILE);
        let verify = !index::unchanged_since_clean_close(&index_path);
        let db = index::open(&index_path, verify)?;
        let mut store = LocalStore {
            index_path,
            blob_dir,
            limit: limit_bytes,
            db: RwLock::new(Some(db)),
            reopen_failed_at: Mutex::new(None),
            writer: Mutex::new(()),
            pending: Mutex::default(),
            pins: Mutex::default(),
            evict_gate: RwLock::new(()),
            clock: AtomicU64::new(0),
            evict_floor: AtomicU64::new(0),
            totals: Totals::default(),
            opened_clean: false,
            closed: AtomicBool::new(false),
        };
        let clean = store.load()?;
        store.write("opening the index", |tx| {
            if !clean {
                tx.reconcile()?;
            }
            tx.set_state(index::STATE_CLEAN, 0)
        })?;
        store.opened_clean = clean;
        Ok(store)
    }

    /// Whether the process that used the index before closed it cleanly (`Drop` or
    /// `close_for_exit`), so that opening it needed no reconciliation of the blob files.
    pub fn opened_clean(&self) -> bool {
        self.opened_clean
    }

    /// Closes the index for a process about to exit without running destructors (the
    /// agent's `exit`): records the pending blob entries, marks the index clean and closes
    /// redb. The next open then skips both redb's repair and the reconciliation of every blob
    /// file, which with 100 000 entries took about 1.5 s of each agent start. Every later use
    /// of this store fails as closed.
    pub fn close_for_exit(&self) {
        let writer = lock(&self.writer);
        let op = "closing the index";
        let marked =
            Tx::begin(self, op).and_then(|tx| tx.run(op, |tx| tx.set_state(index::STATE_CLEAN, 1)));
        if let Err(e) = &marked {
            log::warn!("{e} (the next start will check the blob files against the index)");
        }
        self.closed.store(true, Relaxed);
        let db = self.db.write().unwrap_or_else(|e| e.into_inner()).take();
        if marked.is_ok() && db.is_some() {
            drop(db);
            index::record_clean_close(&self.index_path);
        }
        // Held until the process exits: no reopen, no write after the close.
        std::mem::forget(writer);
    }

    /// Reads the counters and the clock; returns whether the last close was clean.
    fn load(&self) -> Result<bool, StoreError> {
        let db = self.db()?;
        self.load_state(&db).map_err(self.ie("reading the index"))
    }

    fn load_state(&self, db: &Database) -> Result<bool, redb::Error> {
        let txn = db.begin_read()?;
        let state = txn.open_table(STATE)?;
        let get =
            |name| -> Result<u64, redb::Error> { Ok(state.get(name)?.map_or(0, |g| g.value())) };
        let t = &self.totals;
        t.blob_bytes.store(get(index::STATE_BLOB_BYTES)?, Relaxed);
        t.corrupt_found.store(get(index::STATE_CORRUPT)?, Relaxed);
        t.evicted.store(get(index::STATE_EVICTED)?, Relaxed);
        t.results.store(txn.open_table(RESULTS)?.len()?, Relaxed);
        t.blobs.store(txn.open_table(BLOBS)?.len()?, Relaxed);
        let last = txn.open_table(LRU)?.last()?.map(|(k, _)| k.value().0);
        self.clock.store(last.map_or(0, |tick| tick + 1), Relaxed);
        Ok(get(index::STATE_CLEAN)? == 1)
    }

    /// Stores `data` under its blake3 hash and returns the hash. Content already stored is not
    /// written again. The index records the blob with the next write transaction (see the
    /// module docs); until then it is readable with `get_blob` but not yet in `stats`.
    pub fn put_blob(&self, data: &[u8]) -> Result<Hash, StoreError> {
        let id = hash(data);
        let path = blob_path(&self.blob_dir, &id);
        if self.pin_and_check(&id, &path)? {
            return Ok(id);
        }
        let bytes = blobfile::encode(data).map_err(StoreError::io(
            "compressing a blob for",
            &path,
            HINT_WRITE,
        ))?;
        blobfile::write_atomic(&path, &bytes)
            .map_err(|(p, e)| StoreError::io("writing blob", &p, HINT_WRITE)(e))?;
        lock(&self.pending).new_blobs.insert(id, bytes.len() as u64);
        Ok(id)
    }

    /// The blob's content, verified against `id`. A missing, truncated or damaged file is
    /// removed, counted in `corrupt_found` and reported as `None`: never wrong bytes.
    pub fn get_blob(&self, id: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        let path = blob_path(&self.blob_dir, id);
        let file = match fs::read(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if self.blob_indexed(id)? {
                    self.found_corrupt(id, &path, "its file is missing");
                }
                return Ok(None);
            }
            Err(e) => return Err(StoreError::io("reading blob", &path, HINT_READ)(e)),
        };
        match blobfile::decode(id, &file, self.limit) {
            Ok(data) => Ok(Some(data)),
            Err(why) => {
                let _ = fs::remove_file(&path);
                self.found_corrupt(id, &path, &why.to_string());
                Ok(None)
            }
        }
    }

    /// Stores a compile result that needs `blobs` (each already stored with `put_blob`).
    /// Replaces an existing result with the same id.
    pub fn put_result(&self, id: &Hash, value: &[u8], blobs: &[Hash]) -> Result<(), StoreError> {
        let record = index::encode_result(value, blobs);
        let tick = self.tick();
        self.write("storing a result", |tx| {
            // Link before releasing, so a blob in both the old and the new result never drops
            // to zero references in between.
            tx.link_blobs(id, blobs)?;
            if let Some(old) = tx.insert_result(id, &record)? {
                tx.release_blobs(&old, false)?;
            }
            tx.set_tick(id, tick)
        })?;
        self.unpin(blobs);
        self.evict_if_over_limit();
        Ok(())
    }

    /// The result's value, and marks it recently used (in memory; see the module docs).
    pub fn get_result(&self, id: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(record) = self.read(RESULTS, id, "reading a result")? else {
            return Ok(None);
        };
        let Some(value) = index::result_value(&record) else {
            log::warn!(
                "cache index {}: result {} has a malformed record; treating it as a miss",
                self.index_path.display(),
                blobfile::hex(id)
            );
            return Ok(None);
        };
        let value = value.to_vec();
        self.touch(id);
        Ok(Some(value))
    }

    pub fn remove_result(&self, id: &Hash) -> Result<(), StoreError> {
        self.write("removing a result", |tx| {
            if let Some(old) = tx.remove_result(id)? {
                tx.release_blobs(&old, false)?;
            }
            Ok(())
        })
    }

    pub fn get_manifest(&self, key: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(MANIFESTS, key, "reading a manifest")
    }

    pub fn put_manifest(&self, key: &Hash, value: &[u8]) -> Result<(), StoreError> {
        self.write("storing a manifest", |tx| tx.insert(MANIFESTS, key, value))
    }

    pub fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(META, name, "reading a meta value")
    }

    pub fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write("storing a meta value", |tx| tx.insert(META, name, value))
    }

    /// Commits what is queued in memory: LRU touches and the entries of blobs put since the
    /// last write. For the agent to call when it goes idle; closing the store does the same.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.write("flushing", |_| Ok(()))
    }

    pub fn stats(&self) -> StoreStats {
        let t = &self.totals;
        StoreStats {
            results: t.results.load(Relaxed),
            blobs: t.blobs.load(Relaxed),
            bytes: self.bytes(),
            limit: self.limit,
            corrupt_found: t.corrupt_found.load(Relaxed),
            evicted: t.evicted.load(Relaxed),
        }
    }

    /// If the store is over its limit, drops unreferenced blobs, then least recently used results
    /// (and the blobs only they used), and if the index alone is still too big, manifests, until
    /// it is at most 90% of the limit. Returns the blob bytes freed.
    ///
    /// The index file does not shrink when entries go, so eviction counts the index by its live
    /// pages, and compacts the file once it is mostly free space.
    pub fn evict(&self) -> Result<u64, StoreError> {
        if self.bytes() <= self.limit {
            return Ok(0);
        }
        let target = self.limit / 100 * EVICT_TO_PERCENT;
        let gate = self.evict_gate.write().unwrap_or_else(|e| e.into_inner());
        let (freed, index_live) = self.write("evicting", |tx| {
            let before = tx.blob_bytes;
            let index_live = tx.evict_to(target)?;
            Ok((before - tx.blob_bytes, index_live))
        })?;
        drop(gate);
        self.compact_if_sparse(index_live);
        // Whatever slack compaction could not remove must not make every put evict again.
        self.evict_floor.store(self.bytes(), Relaxed);
        Ok(freed)
    }

    /// Rewrites the index without its free pages if they are most of the file. Readers wait
    /// meanwhile; it only follows an eviction that freed much of the index.
    fn compact_if_sparse(&self, index_live: u64) {
        let len = self.index_bytes();
        if len <= 2 * index_live + COMPACT_SLACK {
            return;
        }
        let _writer = lock(&self.writer);
        let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
        let Some(db) = slot.as_mut() else { return };
        let start = Instant::now();
        match db.compact() {
            Ok(_) => log::info!(
                "cache index {}: compacted from {len} to {} bytes in {:?}",
                self.index_path.display(),
                self.index_bytes(),
                start.elapsed()
            ),
            Err(e) => log::warn!(
                "cache index {}: compaction failed: {e}; it keeps its size",
                self.index_path.display()
            ),
        }
    }

    /// Removes every result, blob and manifest, and shrinks the index file. Meta values and
    /// the `corrupt_found`/`evicted` counters are kept: they are history, not cache content.
    /// Blobs pinned by a store in progress stay (see `Tx::clear`).
    pub fn clear(&self) -> Result<(), StoreError> {
        let gate = self.evict_gate.write().unwrap_or_else(|e| e.into_inner());
        self.write("clearing the cache", |tx| tx.clear())?;
        drop(gate);
        self.compact_if_sparse(0);
        self.evict_floor.store(self.bytes(), Relaxed);
        Ok(())
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.totals.blob_bytes.load(Relaxed) + self.index_bytes()
    }

    fn index_bytes(&self) -> u64 {
        fs::metadata(&self.index_path).map_or(0, |m| m.len())
    }

    fn evict_if_over_limit(&self) {
        let bytes = self.bytes();
        let floor = self.evict_floor.load(Relaxed) + self.limit / 100;
        if bytes > self.limit && bytes > floor {
            // The put itself succeeded; a failed eviction is retried by the next put.
            if let Err(e) = self.evict() {
                log::warn!("{e}");
            }
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Relaxed)
    }

    fn touch(&self, id: &Hash) {
        let tick = self.tick();
        let due = {
            let mut p = lock(&self.pending);
            p.touches.insert(*id, tick);
            let since = *p.since.get_or_insert_with(Instant::now);
            p.touches.len() >= TOUCH_FLUSH_COUNT || since.elapsed() >= TOUCH_FLUSH_AGE
        };
        if due {
            // A lost touch only makes the LRU order approximate: not worth failing a hit.
            if let Err(e) = self.write("recording recent use", |_| Ok(())) {
                log::warn!("{e}");
            }
        }
    }

    fn found_corrupt(&self, id: &Hash, path: &Path, why: &str) {
        self.totals.corrupt_found.fetch_add(1, Relaxed);
        lock(&self.pending).missing.push(*id);
        log::warn!(
            "cache blob {} is unusable ({why}); dropped it, the compile will run again",
            path.display()
        );
    }

    /// Pins the blob (so no eviction deletes it before the put_result that will reference it)
    /// and reports whether it is already stored.
    fn pin_and_check(&self, id: &Hash, path: &Path) -> Result<bool, StoreError> {
        let _gate = self.evict_gate.read().unwrap_or_else(|e| e.into_inner());
        self.pin(id);
        Ok(self.blob_indexed(id)? && path.exists())
    }

    fn pin(&self, id: &Hash) {
        let mut pins = lock(&self.pins);
        let pin = pins.entry(*id).or_insert(Pin {
            count: 0,
            at: Instant::now(),
        });
        pin.count += 1;
        pin.at = Instant::now();
    }

    fn unpin(&self, ids: &[Hash]) {
        let mut pins = lock(&self.pins);
        for id in ids {
            if let Some(pin) = pins.get_mut(id) {
                pin.count = pin.count.saturating_sub(1);
                if pin.count == 0 {
                    pins.remove(id);
                }
            }
        }
    }

    /// Every blob pinned now.
    pub(crate) fn pinned(&self) -> Vec<Hash> {
        let mut pins = lock(&self.pins);
        pins.retain(|_, p| p.at.elapsed() < PIN_TTL);
        pins.keys().copied().collect()
    }

    pub(crate) fn is_pinned(&self, id: &Hash) -> bool {
        let mut pins = lock(&self.pins);
        pins.retain(|_, p| p.at.elapsed() < PIN_TTL);
        pins.contains_key(id)
    }

    fn blob_indexed(&self, id: &Hash) -> Result<bool, StoreError> {
        if lock(&self.pending).new_blobs.contains_key(id) {
            return Ok(true);
        }
        let db = self.db()?;
        let txn = db.begin_read().map_err(self.ie("reading"))?;
        let table = txn.open_table(BLOBS).map_err(self.ie("reading"))?;
        // Bound to a local so the guard drops before `txn`: as a tail-expression temporary it
        // would outlive the transaction (redb's read guards are 'static), and a writer may free
        // the page it holds (debug redb builds assert on exactly that).
        let found = table
            .get(id)
            .map_err(self.ie("reading a blob entry"))?
            .is_some();
        Ok(found)
    }

    /// One value from a byte-valued table, copied out of a short read transaction.
    fn read<K: redb::Key + 'static>(
        &self,
        def: TableDefinition<K, &[u8]>,
        key: K::SelfType<'_>,
        op: &'static str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(self.ie(op))?;
        let table = txn.open_table(def).map_err(self.ie(op))?;
        let value = table.get(key).map_err(self.ie(op))?;
        Ok(value.map(|g| g.value().to_vec()))
    }

    pub(crate) fn ie<'a, E: Into<redb::Error>>(
        &'a self,
        op: &'static str,
    ) -> impl FnOnce(E) -> StoreError + 'a {
        StoreError::index(op, &self.index_path)
    }

    /// Runs `f` in a write transaction (after applying what is pending) and commits it.
    pub(crate) fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _writer = lock(&self.writer);
        let out = Tx::begin(self, op).and_then(|tx| tx.run(op, f));
        if out.as_ref().is_err_and(StoreError::needs_reopen) {
            self.reopen_locked();
        }
        out
    }

    /// The open index, held shared for as long as a transaction on it lives, so that a reopen
    /// never closes it under one.
    pub(crate) fn db(&self) -> Result<Db<'_>, StoreError> {
        let read = || self.db.read().unwrap_or_else(|e| e.into_inner());
        let mut guard = read();
        if guard.is_none() {
            drop(guard);
            // A reader reopens too, so hits come back once space does, even with no writes;
            // if a writer holds the lock, its own failure handling reopens.
            if let Ok(_writer) = self.writer.try_lock() {
                self.reopen_locked();
            }
            guard = read();
        }
        if guard.is_none() {
            let closed = redb::Error::DatabaseClosed;
            return Err(StoreError::index("using", &self.index_path)(closed));
        }
        Ok(Db(guard))
    }

    /// After an I/O error redb fails every later write until the database is reopened; a disk
    /// that was full for a moment must not disable the cache until the agent restarts. The
    /// failed transaction was rolled back and no file was deleted for it, so the blob files
    /// still match the index. Called with the writer lock held.
    fn reopen_locked(&self) {
        let mut failed_at = lock(&self.reopen_failed_at);
        let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() && failed_at.is_some_and(|t| t.elapsed() < REOPEN_RETRY) {
            return;
        }
        // The old handle must be closed first: it holds the file lock.
        drop(slot.take());
        match index::open(&self.index_path, false) {
            Ok(db) => *slot = Some(db),
            Err(e) => {
                log::warn!(
                    "{e} (retrying in {}s at the earliest)",
                    REOPEN_RETRY.as_secs()
                );
                *failed_at = Some(Instant::now());
                return;
            }
        }
        *failed_at = None;
        drop(slot);
        // No write here: the disk may still be full, and a failed write would poison the new
        // handle too. The clean flag is already 0 on disk since open.
        match self.load() {
            Ok(_) => log::warn!(
                "cache index {}: reopened after an I/O error",
                self.index_path.display()
            ),
            Err(e) => log::warn!("{e}"),
        }
    }
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        if self.closed.load(Relaxed) {
            return;
        }
        let closed = self.write("closing the index", |tx| {
            tx.set_state(index::STATE_CLEAN, 1)
        });
        if let Err(e) = closed {
            log::warn!("{e} (the next start will check the blob files against the index)");
        }
    }
}

/// 0700: cached outputs are as private as the sources they were compiled from.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(StoreError::io(
            "creating cache directory",
            dir,
            "check that the parent directory exists and is writable, or choose another cache directory",
        ))
}

#[cfg(test)]
mod tests {
    /// The agent shares one store across its threads.
    #[test]
    fn local_store_is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<super::LocalStore>();
    }
}
