//! The redb index: table layout, and opening it so that a damaged file never stops the cache.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use crate::{Hash, StoreError};

/// Result id → record (see [`encode_result`]).
pub(crate) const RESULTS: TableDefinition<&Hash, &[u8]> = TableDefinition::new("results");
/// Result id → its LRU tick; finds the result's [`LRU`] key when it is touched or removed.
pub(crate) const TICKS: TableDefinition<&Hash, u64> = TableDefinition::new("result_ticks");
/// (tick, result id), so the least recently used result is the first key.
pub(crate) const LRU: TableDefinition<(u64, &Hash), ()> = TableDefinition::new("lru");
/// Blob id → (reference count, bytes on disk).
pub(crate) const BLOBS: TableDefinition<&Hash, (u64, u64)> = TableDefinition::new("blobs");
/// Blobs with no references: stored but not (yet, or any more) used by a result.
pub(crate) const ORPHANS: TableDefinition<&Hash, ()> = TableDefinition::new("orphans");
pub(crate) const MANIFESTS: TableDefinition<&Hash, &[u8]> = TableDefinition::new("manifests");
/// The caller's named values.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The store's own counters and flags (`STATE_*`).
pub(crate) const STATE: TableDefinition<&str, u64> = TableDefinition::new("state");

pub(crate) const STATE_FORMAT: &str = "format";
/// 1 only between a clean close and the next open: anything else means the blob files may
/// disagree with the index (a crash lost non-durable commits), so open reconciles them.
pub(crate) const STATE_CLEAN: &str = "clean";
pub(crate) const STATE_BLOB_BYTES: &str = "blob_bytes";
pub(crate) const STATE_CORRUPT: &str = "corrupt_found";
pub(crate) const STATE_EVICTED: &str = "evicted";

/// Bumped when the layout above changes; an index of another format is moved aside.
const FORMAT: u64 = 1;
/// redb's default page cache is 1 GiB; the index is mostly small keys, and the agent should not
/// grow by a gigabyte on a big cache. A hit reads a few branch pages and one manifest; the OS
/// page cache keeps the rest one pread away.
const CACHE_BYTES: usize = 16 << 20;
/// The integrity check at open reads every page through the cache, and its time depends on the
/// cache's size: with 100k entries (an 841 MB index) 64 MiB took 5.7 s, 16 MiB 17 s (past the
/// client's 10 s start timeout). So the check runs with this cache, which is then dropped
/// (`scripts/bench/agent-memory.sh`).
const CHECK_CACHE_BYTES: usize = 64 << 20;

/// Opens (or creates) the index. A file redb cannot read, or one written by another layout, is
/// moved aside and replaced by an empty index: it only holds a cache, and a build must not fail
/// because of it. Only a real I/O problem or another process holding the file is an error.
/// `verify` checks every page (see `try_open`); a reopen of a file only redb has written skips it.
pub(crate) fn open(path: &Path, verify: bool) -> Result<Database, StoreError> {
    if !verify {
        return open_with(path, false, CACHE_BYTES);
    }
    drop(open_with(path, true, CHECK_CACHE_BYTES)?);
    release_freed_memory();
    // Checked (or replaced by a fresh index) a moment ago by this process, which holds the
    // agent lock: no need to read it all again.
    open_with(path, false, CACHE_BYTES)
}

/// Written when the index is closed cleanly: the file's identity and stamp then. If the index
/// still has them at the next open, nothing but redb touched it in between, and the page-by-page
/// check (1.2 s for a 1 GB index) is skipped; a file replaced, truncated or written by anything
/// else in between (or after a crash: no marker) is checked.
fn clean_marker(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.clean", path.display()))
}

fn file_stamp(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(format!(
        "{} {} {} {}.{} {}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// Whether the index is as it was left by a clean close; the marker is consumed either way,
/// so that a crash of this process leaves none.
pub(crate) fn unchanged_since_clean_close(path: &Path) -> bool {
    let marker = clean_marker(path);
    let recorded = std::fs::read_to_string(&marker).ok();
    let _ = std::fs::remove_file(&marker);
    recorded.is_some_and(|r| Some(r) == file_stamp(path))
}

/// Called after the database is closed cleanly (see `unchanged_since_clean_close`).
pub(crate) fn record_clean_close(path: &Path) {
    if let Some(stamp) = file_stamp(path) {
        let _ = std::fs::write(clean_marker(path), stamp);
    }
}

/// Gives the checking cache's pages back to the system: freed heap memory otherwise stays in
/// the agent's resident set.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn open_with(path: &Path, verify: bool, cache: usize) -> Result<Database, StoreError> {
    match try_open(path, verify, cache) {
        Ok(db) => Ok(db),
        Err(Failure::Fatal(e)) => Err(e),
        Err(Failure::Corrupt(why)) => {
            move_aside(path, &why)?;
            try_open(path, verify, cache).map_err(|f| match f {
                Failure::Fatal(e) => e,
                Failure::Corrupt(why) => StoreError::Index {
                    op: "creating a fresh index",
                    path: path.to_path_buf(),
                    source: Box::new(redb::Error::Corrupted(why)),
                },
            })
        }
    }
}

enum Failure {
    Corrupt(String),
    Fatal(StoreError),
}

fn try_open(path: &Path, verify: bool, cache: usize) -> Result<Database, Failure> {
    // The integrity check makes redb verify every page's checksum and report a damaged file as
    // an error, where a plain open may trust it (and debug builds of redb may panic on it); the
    // catch_unwind is the backstop for any such panic. The cost is one read of the index per
    // agent start.
    let opened = catch_unwind(AssertUnwindSafe(|| {
        Database::builder()
            .set_cache_size(cache)
            .set_check_integrity_on_open(verify)
            .create(path)
    }));
    let db = match opened {
        Err(_) => return Err(Failure::Corrupt("redb panicked while opening it".into())),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(Failure::Fatal(StoreError::Locked {
                path: path.to_path_buf(),
            }))
        }
        Ok(r) => r.map_err(|e| classify(path, "opening", e.into()))?,
    };
    init(&db).map_err(|e| classify(path, "initializing", e))?;
    Ok(db)
}

/// Creates the tables and checks the format, in one durable transaction; without writing when
/// all is in place, so a reopen works on a full disk.
fn init(db: &Database) -> Result<(), redb::Error> {
    if initialized(db)? {
        return Ok(());
    }
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let _ = txn.open_table(RESULTS)?;
        let _ = txn.open_table(TICKS)?;
        let _ = txn.open_table(LRU)?;
        let _ = txn.open_table(BLOBS)?;
        let _ = txn.open_table(ORPHANS)?;
        let _ = txn.open_table(MANIFESTS)?;
        let _ = txn.open_table(META)?;
        let mut state = txn.open_table(STATE)?;
        let format = state.get(STATE_FORMAT)?.map(|g| g.value());
        match format {
            None if state.is_empty()? => {
                state.insert(STATE_FORMAT, FORMAT)?;
            }
            Some(FORMAT) => {}
            other => {
                return Err(redb::Error::Corrupted(format!(
                    "index format {other:?}, this cachefs uses {FORMAT}"
                )))
            }
        }
    }
    txn.commit()?;
    Ok(())
}

/// Whether every table exists with its types and the format is ours (checked by opening them).
fn initialized(db: &Database) -> Result<bool, redb::Error> {
    let txn = db.begin_read()?;
    let exists = |r: Result<(), redb::TableError>| match r {
        Ok(()) => Ok(true),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(redb::Error::from(e)),
    };
    let all = [
        exists(txn.open_table(RESULTS).map(drop))?,
        exists(txn.open_table(TICKS).map(drop))?,
        exists(txn.open_table(LRU).map(drop))?,
        exists(txn.open_table(BLOBS).map(drop))?,
        exists(txn.open_table(ORPHANS).map(drop))?,
        exists(txn.open_table(MANIFESTS).map(drop))?,
        exists(txn.open_table(META).map(drop))?,
        exists(txn.open_table(STATE).map(drop))?,
    ];
    if all.contains(&false) {
        return Ok(false);
    }
    let format = txn.open_table(STATE)?.get(STATE_FORMAT)?.map(|g| g.value());
    Ok(format == Some(FORMAT))
}

/// Errors that mean "this file is not a usable index" (as opposed to "the disk is failing" or
/// "no permission"), which are the only ones worth throwing the file away for.
fn classify(path: &Path, op: &'static str, e: redb::Error) -> Failure {
    use std::io::ErrorKind::{InvalidData, UnexpectedEof};
    let corrupt = match &e {
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::RepairAborted
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_) => true,
        redb::Error::Io(io) => matches!(io.kind(), InvalidData | UnexpectedEof),
        _ => false,
    };
    if corrupt {
        Failure::Corrupt(e.to_string())
    } else {
        Failure::Fatal(StoreError::Index {
            op,
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }
}

/// Keeps the damaged file (for a bug report) under a name no later open will pick up.
fn move_aside(path: &Path, why: &str) -> Result<PathBuf, StoreError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut aside = PathBuf::from(format!("{}.corrupt-{secs}", path.display()));
    for n in 1.. {
        if !aside.exists() {
            break;
        }
        aside = PathBuf::from(format!("{}.corrupt-{secs}-{n}", path.display()));
    }
    std::fs::rename(path, &aside).map_err(StoreError::io(
        "moving the unreadable index aside",
        path,
        "check the cache directory's permissions, or delete the file by hand",
    ))?;
    log::warn!(
        "cache index {} is unreadable ({why}); moved it to {} and starting with an empty cache",
        path.display(),
        aside.display()
    );
    Ok(aside)
}

/// Result record: blob count (u32 LE), the blob ids, then the caller's value.
pub(crate) fn encode_result(value: &[u8], blobs: &[Hash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 32 * blobs.len() + value.len());
    out.extend_from_slice(&(blobs.len() as u32).to_le_bytes());
    for b in blobs {
        out.extend_from_slice(b);
    }
    out.extend_from_slice(value);
    out
}

/// Splits a record into its blob ids and value; `None` for a record too short for its count.
pub(crate) fn decode_result(record: &[u8]) -> Option<(Vec<Hash>, &[u8])> {
    let n = u32::from_le_bytes(record.get(..4)?.try_into().ok()?) as usize;
    let ids_end = 4usize.checked_add(n.checked_mul(32)?)?;
    let ids = record.get(4..ids_end)?;
    let blobs = ids
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32-byte chunk"))
        .collect();
    Some((blobs, &record[ids_end..]))
}

/// The value part only, without collecting the blob ids: the hit path.
pub(crate) fn result_value(record: &[u8]) -> Option<&[u8]> {
    let n = u32::from_le_bytes(record.get(..4)?.try_into().ok()?) as usize;
    record.get(4usize.checked_add(n.checked_mul(32)?)?..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_record_round_trip() {
        let blobs = [[1u8; 32], [2u8; 32]];
        let rec = encode_result(b"value", &blobs);
        let (ids, value) = decode_result(&rec).unwrap();
        assert_eq!(ids, blobs);
        assert_eq!(value, b"value");
        assert_eq!(result_value(&rec), Some(&b"value"[..]));
        assert_eq!(decode_result(&rec[..10]), None);
        assert_eq!(result_value(&[0xff; 8]), None);
    }
}
