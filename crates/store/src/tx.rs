//! One write transaction on the index, with the bookkeeping that must change with it: the byte
//! total, the counters, and the blob files to delete once (and only if) it commits.

use std::collections::HashMap;
use std::fs;
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;

use redb::{Durability, ReadableTable, ReadableTableMetadata, Table, TableDefinition};
use redb::{Key, Value, WriteTransaction};

use crate::blobfile::{self, blob_path, TEMP_PREFIX};
use crate::index::{self, BLOBS, LRU, MANIFESTS, ORPHANS, RESULTS, STATE, TICKS};
use crate::store::{create_private_dir, lock, Db, LocalStore};
use crate::{Hash, StoreError};

/// Rough index bytes per table entry beyond its value: key, B-tree slot, page slack.
const ENTRY_OVERHEAD: u64 = 96;

pub(crate) struct Tx<'s> {
    txn: WriteTransaction,
    /// Declared after `txn`, so it is released after the transaction ends.
    _db: Db<'s>,
    store: &'s LocalStore,
    pub(crate) blob_bytes: u64,
    evicted: u64,
    /// Deleted after the commit: deleting first would leave the index pointing at nothing if
    /// the commit failed.
    unlink_after_commit: Vec<PathBuf>,
    /// Queued blob entries this transaction records: queued again if it does not commit.
    new_blobs: HashMap<Hash, u64>,
    /// Set by `clear`: after the commit the blob directory is emptied except for these
    /// (pinned) blobs.
    clear_blob_dir: Option<Vec<Hash>>,
    counts: (u64, u64),
}

fn open<'t, K: Key + 'static, V: Value + 'static>(
    txn: &'t WriteTransaction,
    store: &LocalStore,
    def: TableDefinition<K, V>,
) -> Result<Table<'t, K, V>, StoreError> {
    txn.open_table(def).map_err(store.ie("opening a table"))
}

impl<'s> Tx<'s> {
    pub(crate) fn begin(store: &'s LocalStore, op: &'static str) -> Result<Self, StoreError> {
        let db = store.db()?;
        let mut txn = db.begin_write().map_err(store.ie(op))?;
        // The default, but stated: the store's consistency argument depends on it (see store.rs).
        txn.set_durability(Durability::Immediate)
            .map_err(store.ie(op))?;
        Ok(Tx {
            txn,
            _db: db,
            store,
            blob_bytes: store.totals.blob_bytes.load(Relaxed),
            evicted: 0,
            unlink_after_commit: Vec::new(),
            new_blobs: HashMap::new(),
            clear_blob_dir: None,
            counts: (0, 0),
        })
    }

    /// Applies what the read path left pending, runs `f`, commits, then does the file work
    /// that must follow a commit (or an abort).
    pub(crate) fn run<T>(
        mut self,
        op: &'static str,
        f: impl FnOnce(&mut Tx<'s>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let out = self
            .apply_pending()
            .and_then(|()| f(&mut self))
            .and_then(|v| self.save_state().map(|()| v));
        let store = self.store;
        let committed = match out {
            Ok(v) => self.txn.commit().map(|()| v).map_err(store.ie(op)),
            Err(e) => {
                let _ = self.txn.abort();
                Err(e)
            }
        };
        if committed.is_err() {
            requeue_new_blobs(store, self.new_blobs);
            return committed;
        }
        let t = &store.totals;
        t.blob_bytes.store(self.blob_bytes, Relaxed);
        t.results.store(self.counts.0, Relaxed);
        t.blobs.store(self.counts.1, Relaxed);
        t.evicted.fetch_add(self.evicted, Relaxed);
        remove_files(&self.unlink_after_commit);
        if let Some(keep) = &self.clear_blob_dir {
            empty_blob_dir(&store.blob_dir, keep)?;
        }
        committed
    }

    fn save_state(&mut self) -> Result<(), StoreError> {
        let t = &self.store.totals;
        let mut state = open(&self.txn, self.store, STATE)?;
        let values = [
            (index::STATE_BLOB_BYTES, self.blob_bytes),
            (index::STATE_CORRUPT, t.corrupt_found.load(Relaxed)),
            (index::STATE_EVICTED, t.evicted.load(Relaxed) + self.evicted),
        ];
        for (name, value) in values {
            state
                .insert(name, value)
                .map_err(self.store.ie("saving counters"))?;
        }
        drop(state);
        let ie = || self.store.ie("counting entries");
        let results = open(&self.txn, self.store, RESULTS)?.len().map_err(ie())?;
        let blobs = open(&self.txn, self.store, BLOBS)?.len().map_err(ie())?;
        self.counts = (results, blobs);
        Ok(())
    }

    pub(crate) fn set_state(&mut self, name: &str, value: u64) -> Result<(), StoreError> {
        let mut state = open(&self.txn, self.store, STATE)?;
        state
            .insert(name, value)
            .map_err(self.store.ie("saving state"))?;
        Ok(())
    }

    pub(crate) fn insert<K: Key + 'static>(
        &mut self,
        def: TableDefinition<K, &[u8]>,
        key: K::SelfType<'_>,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let mut table = open(&self.txn, self.store, def)?;
        table
            .insert(key, value)
            .map_err(self.store.ie("inserting"))?;
        Ok(())
    }

    fn apply_pending(&mut self) -> Result<(), StoreError> {
        let (touches, missing) = {
            let mut p = lock(&self.store.pending);
            p.since = None;
            self.new_blobs = mem::take(&mut p.new_blobs);
            (mem::take(&mut p.touches), mem::take(&mut p.missing))
        };
        let new_blobs: Vec<(Hash, u64)> = self.new_blobs.iter().map(|(k, v)| (*k, *v)).collect();
        for (id, size) in new_blobs {
            self.add_blob(&id, size)?;
        }
        for (id, tick) in touches {
            self.apply_touch(&id, tick)?;
        }
        for id in missing {
            self.forget_missing_file(&id)?;
        }
        Ok(())
    }

    fn apply_touch(&mut self, id: &Hash, tick: u64) -> Result<(), StoreError> {
        let ticks = open(&self.txn, self.store, TICKS)?;
        let current = ticks.get(id).map_err(self.store.ie("reading a tick"))?;
        // Gone (removed or evicted since the hit), or already newer (re-put since): skip.
        if current.is_some_and(|old| old.value() < tick) {
            drop(ticks);
            self.set_tick(id, tick)?;
        }
        Ok(())
    }

    /// The file was removed as corrupt or vanished: its size leaves the total. The entry (and
    /// its reference count) stays, so a later `put_blob` of the same content restores it.
    fn forget_missing_file(&mut self, id: &Hash) -> Result<(), StoreError> {
        if blob_path(&self.store.blob_dir, id).exists() {
            return Ok(()); // re-put since
        }
        let mut blobs = open(&self.txn, self.store, BLOBS)?;
        let ie = || self.store.ie("updating a blob entry");
        let entry = blobs.get(id).map_err(ie())?.map(|g| g.value());
        if let Some((refs, size)) = entry.filter(|&(_, size)| size > 0) {
            blobs.insert(id, (refs, 0)).map_err(ie())?;
            self.blob_bytes = self.blob_bytes.saturating_sub(size);
        }
        Ok(())
    }

    /// Records a blob file `put_blob` wrote; a new blob starts unreferenced (an orphan).
    fn add_blob(&mut self, id: &Hash, size: u64) -> Result<(), StoreError> {
        let mut blobs = open(&self.txn, self.store, BLOBS)?;
        let ie = || self.store.ie("recording a blob");
        let entry = blobs.get(id).map_err(ie())?.map(|g| g.value());
        let (refs, old_size) = entry.unwrap_or((0, 0));
        blobs.insert(id, (refs, size)).map_err(ie())?;
        self.blob_bytes = self.blob_bytes.saturating_sub(old_size) + size;
        if entry.is_none() {
            let mut orphans = open(&self.txn, self.store, ORPHANS)?;
            orphans.insert(id, ()).map_err(ie())?;
        }
        Ok(())
    }

    pub(crate) fn link_blobs(&mut self, result: &Hash, ids: &[Hash]) -> Result<(), StoreError> {
        let mut blobs = open(&self.txn, self.store, BLOBS)?;
        let mut orphans = open(&self.txn, self.store, ORPHANS)?;
        let ie = || self.store.ie("referencing a blob");
        for id in ids {
            let entry = blobs.get(id).map_err(ie())?.map(|g| g.value());
            let Some((refs, size)) = entry else {
                return Err(StoreError::MissingBlob {
                    dir: self.store.blob_dir.clone(),
                    result: blobfile::hex(result),
                    blob: blobfile::hex(id),
                });
            };
            blobs.insert(id, (refs + 1, size)).map_err(ie())?;
            if refs == 0 {
                orphans.remove(id).map_err(ie())?;
            }
        }
        Ok(())
    }

    /// Drops one reference to each blob. One left unreferenced is deleted if `sweep` (eviction)
    /// and nobody is about to reference it; otherwise it becomes an orphan for the next
    /// eviction to collect.
    pub(crate) fn release_blobs(&mut self, ids: &[Hash], sweep: bool) -> Result<(), StoreError> {
        let mut blobs = open(&self.txn, self.store, BLOBS)?;
        let mut orphans = open(&self.txn, self.store, ORPHANS)?;
        let ie = || self.store.ie("releasing a blob");
        for id in ids {
            let entry = blobs.get(id).map_err(ie())?.map(|g| g.value());
            let Some((refs, size)) = entry else { continue };
            let refs = refs.saturating_sub(1);
            if refs > 0 || !sweep || self.store.is_pinned(id) {
                blobs.insert(id, (refs, size)).map_err(ie())?;
                if refs == 0 {
                    orphans.insert(id, ()).map_err(ie())?;
                }
                continue;
            }
            blobs.remove(id).map_err(ie())?;
            orphans.remove(id).map_err(ie())?;
            self.blob_bytes = self.blob_bytes.saturating_sub(size);
            self.unlink_after_commit
                .push(blob_path(&self.store.blob_dir, id));
        }
        Ok(())
    }

    /// Deletes every orphan nobody is about to reference: pure waste.
    pub(crate) fn sweep_orphans(&mut self) -> Result<(), StoreError> {
        let mut orphans = open(&self.txn, self.store, ORPHANS)?;
        let mut blobs = open(&self.txn, self.store, BLOBS)?;
        let ie = || self.store.ie("sweeping unreferenced blobs");
        let ids: Vec<Hash> = orphans
            .iter()
            .map_err(ie())?
            .map(|r| r.map(|(k, _)| *k.value()))
            .collect::<Result<_, _>>()
            .map_err(ie())?;
        for id in ids.iter().filter(|id| !self.store.is_pinned(id)) {
            orphans.remove(id).map_err(ie())?;
            let Some(entry) = blobs.remove(id).map_err(ie())? else {
                continue;
            };
            self.blob_bytes = self.blob_bytes.saturating_sub(entry.value().1);
            self.unlink_after_commit
                .push(blob_path(&self.store.blob_dir, id));
        }
        Ok(())
    }

    /// Evicts until blobs plus the index's live pages fit in `target`; returns the estimated
    /// live index bytes left.
    pub(crate) fn evict_to(&mut self, target: u64) -> Result<u64, StoreError> {
        let stats = self
            .txn
            .stats()
            .map_err(self.store.ie("measuring the index"))?;
        let mut index = stats.allocated_pages() * stats.page_size() as u64;
        self.sweep_orphans()?;
        while self.blob_bytes + index > target {
            let Some(freed) = self.evict_oldest()? else {
                break;
            };
            index = index.saturating_sub(freed);
        }
        // Manifests are not evicted with their results (a missing result is just a miss), so
        // they only go when the index alone is over the budget. Keys are hashes: key order is
        // as good as random.
        while self.blob_bytes + index > target {
            let Some(freed) = self.evict_a_manifest()? else {
                break;
            };
            index = index.saturating_sub(freed);
        }
        Ok(index)
    }

    /// Evicts the least recently used result; returns about how many index bytes that freed,
    /// or `None` when there are no results left.
    fn evict_oldest(&mut self) -> Result<Option<u64>, StoreError> {
        let mut lru = open(&self.txn, self.store, LRU)?;
        let ie = || self.store.ie("evicting");
        let Some(id) = lru.pop_first().map_err(ie())?.map(|(k, _)| *k.value().1) else {
            return Ok(None);
        };
        drop(lru);
        open(&self.txn, self.store, TICKS)?
            .remove(&id)
            .map_err(ie())?;
        let record = open(&self.txn, self.store, RESULTS)?
            .remove(&id)
            .map_err(ie())?
            .map(|g| g.value().to_vec())
            .unwrap_or_default();
        let blobs = blobs_of(&record);
        self.release_blobs(&blobs, true)?;
        self.evicted += 1;
        Ok(Some(
            record.len() as u64 + ENTRY_OVERHEAD * (3 + blobs.len() as u64),
        ))
    }

    fn evict_a_manifest(&mut self) -> Result<Option<u64>, StoreError> {
        let mut manifests = open(&self.txn, self.store, MANIFESTS)?;
        let popped = manifests
            .pop_first()
            .map_err(self.store.ie("evicting a manifest"))?;
        Ok(popped.map(|(_, v)| v.value().len() as u64 + ENTRY_OVERHEAD))
    }

    /// Inserts a result record; returns the blobs the record it replaced referenced.
    pub(crate) fn insert_result(
        &mut self,
        id: &Hash,
        record: &[u8],
    ) -> Result<Option<Vec<Hash>>, StoreError> {
        let mut results = open(&self.txn, self.store, RESULTS)?;
        let old = results
            .insert(id, record)
            .map_err(self.store.ie("storing a result"))?;
        Ok(old.map(|g| blobs_of(g.value())))
    }

    /// Removes a result; returns the blobs it referenced, or `None` if there was no such result.
    pub(crate) fn remove_result(&mut self, id: &Hash) -> Result<Option<Vec<Hash>>, StoreError> {
        let ie = || self.store.ie("removing a result");
        let old = open(&self.txn, self.store, RESULTS)?
            .remove(id)
            .map_err(ie())?
            .map(|g| blobs_of(g.value()));
        let tick = open(&self.txn, self.store, TICKS)?
            .remove(id)
            .map_err(ie())?
            .map(|g| g.value());
        if let Some(tick) = tick {
            open(&self.txn, self.store, LRU)?
                .remove((tick, id))
                .map_err(ie())?;
        }
        Ok(old)
    }

    /// Moves a result to `tick` in the LRU order.
    pub(crate) fn set_tick(&mut self, id: &Hash, tick: u64) -> Result<(), StoreError> {
        let ie = || self.store.ie("updating the LRU");
        let old = open(&self.txn, self.store, TICKS)?
            .insert(id, tick)
            .map_err(ie())?
            .map(|g| g.value());
        let mut lru = open(&self.txn, self.store, LRU)?;
        if let Some(old) = old {
            lru.remove((old, id)).map_err(ie())?;
        }
        lru.insert((tick, id), ()).map_err(ie())?;
        Ok(())
    }

    /// Empties every cache table; the blob directory is emptied after the commit. Blobs a
    /// compile in flight has pinned (written or found by `put_blob`, not yet referenced by its
    /// `put_result`) stay, as orphans, so a clear during a build does not fail that store.
    pub(crate) fn clear(&mut self) -> Result<(), StoreError> {
        let keep = self.pinned_blobs()?;
        let ie = || self.store.ie("clearing the index");
        self.txn.delete_table(RESULTS).map_err(ie())?;
        self.txn.delete_table(BLOBS).map_err(ie())?;
        self.txn.delete_table(MANIFESTS).map_err(ie())?;
        self.txn.delete_table(TICKS).map_err(ie())?;
        self.txn.delete_table(LRU).map_err(ie())?;
        self.txn.delete_table(ORPHANS).map_err(ie())?;
        // Recreate them, so readers never see a missing table.
        open(&self.txn, self.store, RESULTS)?;
        open(&self.txn, self.store, TICKS)?;
        open(&self.txn, self.store, LRU)?;
        open(&self.txn, self.store, BLOBS)?;
        open(&self.txn, self.store, ORPHANS)?;
        open(&self.txn, self.store, MANIFESTS)?;
        self.blob_bytes = 0;
        for &(id, size) in &keep {
            self.add_blob(&id, size)?;
        }
        self.clear_blob_dir = Some(keep.into_iter().map(|(id, _)| id).collect());
        Ok(())
    }

    /// Indexed blobs that are pinned, with their sizes.
    fn pinned_blobs(&mut self) -> Result<Vec<(Hash, u64)>, StoreError> {
        let blobs = open(&self.txn, self.store, BLOBS)?;
        let ie = || self.store.ie("reading blob entries");
        let mut keep = Vec::new();
        for id in self.store.pinned() {
            if let Some(entry) = blobs.get(&id).map_err(ie())? {
                keep.push((id, entry.value().1));
            }
        }
        Ok(keep)
    }

    /// After an unclean shutdown: deletes blob files the index does not know (their commits
    /// were lost) and leftover temp files, and recounts the bytes from the files themselves.
    pub(crate) fn reconcile(&mut self) -> Result<(), StoreError> {
        let mut on_disk = scan_blob_files(&self.store.blob_dir)?;
        let mut blobs = open(&self.txn, self.store, BLOBS)?;
        let ie = || self.store.ie("reconciling blob entries");
        let entries: Vec<(Hash, (u64, u64))> = blobs
            .iter()
            .map_err(ie())?
            .map(|r| r.map(|(k, v)| (*k.value(), v.value())))
            .collect::<Result<_, _>>()
            .map_err(ie())?;
        let mut total = 0;
        for (id, (refs, size)) in entries {
            let actual = on_disk.remove(&id).unwrap_or(0);
            if actual != size {
                blobs.insert(&id, (refs, actual)).map_err(ie())?;
            }
            total += actual;
        }
        let strays: Vec<PathBuf> = on_disk
            .keys()
            .map(|id| blob_path(&self.store.blob_dir, id))
            .collect();
        remove_files(&strays);
        if !strays.is_empty() || total != self.blob_bytes {
            log::info!(
                "cache {}: after an unclean shutdown, removed {} unindexed blob files; blobs \
                 take {total} bytes",
                self.store.blob_dir.display(),
                strays.len()
            );
        }
        self.blob_bytes = total;
        Ok(())
    }
}

/// The blob files are fine; only recording them failed. Keep them for the next try.
fn requeue_new_blobs(store: &LocalStore, new_blobs: HashMap<Hash, u64>) {
    let mut p = lock(&store.pending);
    for (id, size) in new_blobs {
        p.new_blobs.entry(id).or_insert(size);
    }
}

fn blobs_of(record: &[u8]) -> Vec<Hash> {
    index::decode_result(record).map_or_else(Vec::new, |(blobs, _)| blobs)
}

fn remove_files(paths: &[PathBuf]) {
    for path in paths {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("cache: could not delete {}: {e}", path.display()),
        }
    }
}

/// Blob files by id with their sizes; removes temp files (and the remains of an interrupted
/// `clear`) on the way.
fn scan_blob_files(blob_dir: &Path) -> Result<HashMap<Hash, u64>, StoreError> {
    let mut found = HashMap::new();
    remove_trash(blob_dir);
    let read = |dir: &Path| {
        fs::read_dir(dir).map_err(StoreError::io(
            "listing blobs in",
            dir,
            "check the cache directory's permissions",
        ))
    };
    for shard in read(blob_dir)?.flatten() {
        let shard_name = shard.file_name();
        if shard_name.len() != 2 || !shard.path().is_dir() {
            continue;
        }
        for file in read(&shard.path())?.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) {
                remove_files(&[file.path()]);
            } else if let Some(id) = blobfile::parse_hex(&name) {
                found.insert(id, file.metadata().map_or(0, |m| m.len()));
            }
        }
    }
    Ok(found)
}

const TRASH_PREFIX: &str = "blobs.trash-";

/// Renames the blob directory away (so concurrent writers start a fresh one), moves the blobs
/// in `keep` back and deletes the rest.
fn empty_blob_dir(blob_dir: &Path, keep: &[Hash]) -> Result<(), StoreError> {
    let parent = blob_dir.parent().expect("blob dir is inside the cache dir");
    let trash = parent.join(format!("{TRASH_PREFIX}{}", std::process::id()));
    let hint = "delete the cache directory's blobs by hand";
    remove_trash(blob_dir);
    fs::rename(blob_dir, &trash).map_err(StoreError::io("moving away", blob_dir, hint))?;
    create_private_dir(blob_dir)?;
    for id in keep {
        let (from, to) = (blob_path(&trash, id), blob_path(blob_dir, id));
        let moved = to
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| fs::rename(&from, &to));
        if let Err(e) = moved {
            // The compile that pinned it fails to store (a missing blob), nothing worse.
            log::warn!("cache: could not keep blob {}: {e}", from.display());
        }
    }
    fs::remove_dir_all(&trash).map_err(StoreError::io("deleting", &trash, hint))
}

fn remove_trash(blob_dir: &Path) {
    let Some(parent) = blob_dir.parent() else {
        return;
    };
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(TRASH_PREFIX)
        {
            if let Err(e) = fs::remove_dir_all(entry.path()) {
                log::warn!("cache: could not delete {}: {e}", entry.path().display());
            }
        }
    }
}
