//! The stat cache kept across agent restarts (`$CACHEFS_DIR/stat-cache`).
//!
//! An agent exits after 10 idle minutes, and a fresh one knew no hash: the
//! first warm build after it rehashed every input it validated, the
//! compilers' own binaries included (cc1 is 30 MB; `ar` maps libLLVM,
//! 110 MB), which doubled lua's warm build (0.14 s against 0.07 s). The
//! agent saves the cache when it is quiet and when it exits, and loads it
//! at start. An entry is only ever used while the file's stamp (device,
//! inode, size, mtime and ctime to the nanosecond; ctime cannot be set back
//! by anyone but the clock) is what it was when hashed, exactly as in one
//! agent's lifetime. The file carries its format version and a BLAKE3
//! checksum: one that is damaged, truncated or from another version is
//! ignored, and the cache is relearnt.

use super::{Stamp, StatCache};
use crate::compiler::time_macros::TimeMacros;
use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"cfsstat1";
/// Bumped when what a saved entry means changes (the stamp, or what a
/// `Digest` holds). It was the key format's version (2) until the two were
/// parted: a new key format need not throw away what the stat cache knows.
const FORMAT_VERSION: u32 = 2;
/// More entries than this are not saved (the file, ~100 bytes an entry,
/// would take long to load): the cache is relearnt instead.
const MAX_ENTRIES: usize = 300_000;

#[derive(Serialize, Deserialize)]
struct Saved {
    format: u32,
    files: Vec<(Vec<u8>, SavedStamp, [u8; 32], u8)>,
    absent: Vec<(Vec<u8>, SavedStamp)>,
}

#[derive(Serialize, Deserialize)]
struct SavedStamp(u64, u64, u64, i128, i128);

impl From<Stamp> for SavedStamp {
    fn from(s: Stamp) -> SavedStamp {
        SavedStamp(s.dev, s.ino, s.size, s.mtime_ns, s.ctime_ns)
    }
}

impl From<SavedStamp> for Stamp {
    fn from(s: SavedStamp) -> Stamp {
        Stamp {
            dev: s.0,
            ino: s.1,
            size: s.2,
            mtime_ns: s.3,
            ctime_ns: s.4,
        }
    }
}

pub fn path_in(cache_dir: &Path) -> PathBuf {
    cache_dir.join("stat-cache")
}

/// Writes the cache to `path` atomically (a temporary file renamed over
/// it), leaving out entries that no longer hold (a file changed or gone, a
/// directory that gained or lost entries), so that the file does not grow
/// with every file ever hashed. Returns how many entries were written.
pub fn save(cache: &StatCache, path: &Path) -> std::io::Result<usize> {
    let (files, absent) = cache.export();
    let files: Vec<_> = files
        .into_iter()
        .filter(|(p, s, _)| current_stamp(p) == Some(*s))
        .collect();
    let mut dirs = std::collections::HashMap::new();
    let absent: Vec<_> = absent
        .into_iter()
        .filter(|(p, s)| {
            let dir = p.parent().unwrap_or(Path::new("/")).to_path_buf();
            *dirs.entry(dir).or_insert_with_key(|d| current_stamp(d)) == Some(*s)
        })
        .collect();
    let n = files.len() + absent.len();
    if n > MAX_ENTRIES {
        let _ = std::fs::remove_file(path);
        return Ok(0);
    }
    let bytes = |p: PathBuf| p.into_os_string().into_vec();
    let saved = Saved {
        format: FORMAT_VERSION,
        files: files
            .into_iter()
            .map(|(p, s, d)| (bytes(p), s.into(), d.hash, d.time_macros.bits()))
            .collect(),
        absent: absent
            .into_iter()
            .map(|(p, s)| (bytes(p), s.into()))
            .collect(),
    };
    let body = postcard::to_stdvec(&saved).map_err(std::io::Error::other)?;
    let mut data = Vec::with_capacity(MAGIC.len() + body.len() + 32);
    data.extend_from_slice(MAGIC);
    data.extend_from_slice(&body);
    data.extend_from_slice(blake3::hash(&body).as_bytes());
    // One agent per cache directory (it holds the lock): a fixed name for
    // the file being written is enough.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &data)?;
    std::fs::rename(&tmp, path)?;
    Ok(n)
}

fn current_stamp(path: &Path) -> Option<Stamp> {
    std::fs::symlink_metadata(path).ok().map(|m| Stamp::of(&m))
}

/// The cache saved at `path`; empty if there is none. A file that cannot be
/// used is removed, and why is returned with the empty cache.
pub fn load(path: &Path) -> (StatCache, Option<String>) {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (StatCache::default(), None),
        Err(e) => return (StatCache::default(), Some(format!("cannot read it: {e}"))),
    };
    match decode(&data) {
        Ok(cache) => (cache, None),
        Err(why) => {
            let _ = std::fs::remove_file(path);
            (StatCache::default(), Some(why))
        }
    }
}

fn decode(data: &[u8]) -> Result<StatCache, String> {
    let body = data
        .strip_prefix(MAGIC.as_slice())
        .filter(|rest| rest.len() >= 32)
        .ok_or("not a cachefs stat cache")?;
    let (body, sum) = body.split_at(body.len() - 32);
    if blake3::hash(body).as_bytes() != sum {
        return Err("checksum mismatch (damaged or truncated)".into());
    }
    let saved: Saved = postcard::from_bytes(body).map_err(|e| format!("undecodable: {e}"))?;
    if saved.format != FORMAT_VERSION {
        return Err(format!("written for key format {}", saved.format));
    }
    let path = |b: Vec<u8>| PathBuf::from(std::ffi::OsStr::from_bytes(&b));
    let mut files = Vec::with_capacity(saved.files.len());
    for (p, s, hash, bits) in saved.files {
        let time_macros = TimeMacros::from_bits(bits).ok_or("unknown clock-macro bits")?;
        files.push((path(p), s.into(), Digest { hash, time_macros }));
    }
    let absent = saved
        .absent
        .into_iter()
        .map(|(p, s)| (path(p), s.into()))
        .collect();
    Ok(StatCache::import(files, absent))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files old enough for their stamps to be cached.
    fn settled_files(dir: &Path) -> (PathBuf, PathBuf) {
        let (a, b) = (dir.join("a.h"), dir.join("b.h"));
        std::fs::write(&a, "const char *t = __TIME__;\n").unwrap();
        std::fs::write(&b, "int b;\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2100));
        (a, b)
    }

    #[test]
    fn a_saved_cache_answers_without_rehashing_and_still_checks_stamps() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = settled_files(dir.path());
        let cache = StatCache::default();
        let (_, da) = cache.file_digest(&a).unwrap().unwrap();
        cache.file_digest(&b).unwrap().unwrap();
        assert!(cache.take_dirty());
        let file = path_in(dir.path());
        assert_eq!(save(&cache, &file).unwrap(), 2);

        let (loaded, why) = load(&file);
        assert_eq!(why, None);
        let (files, _) = loaded.export();
        assert_eq!(files.len(), 2);
        let (_, got) = loaded.file_digest(&a).unwrap().unwrap();
        assert_eq!(got, da, "the hash and the clock-macro scan come back");
        assert!(!got.time_macros.is_empty());
        assert!(!loaded.take_dirty(), "answered from what was loaded");

        // A file changed while no agent ran has another stamp: rehashed.
        std::fs::write(&b, "int c;\n").unwrap();
        let (_, now) = loaded.file_digest(&b).unwrap().unwrap();
        assert_eq!(now.hash, *blake3::hash(b"int c;\n").as_bytes());

        // Entries that no longer hold are not saved again.
        std::fs::remove_file(&a).unwrap();
        assert_eq!(
            save(&loaded, &file).unwrap(),
            0,
            "a is gone, b's entry is stale"
        );
    }

    #[test]
    fn a_damaged_or_foreign_file_is_dropped_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = settled_files(dir.path());
        let cache = StatCache::default();
        cache.file_digest(&a).unwrap().unwrap();
        let file = path_in(dir.path());
        save(&cache, &file).unwrap();
        let good = std::fs::read(&file).unwrap();

        let mut flipped = good.clone();
        flipped[MAGIC.len() + 3] ^= 1;
        let truncated = good[..good.len() - 5].to_vec();
        for (bad, what) in [
            (flipped, "checksum"),
            (truncated, "checksum"),
            (b"garbage".to_vec(), "not a cachefs stat cache"),
        ] {
            std::fs::write(&file, &bad).unwrap();
            let (loaded, why) = load(&file);
            assert!(why.as_deref().unwrap_or("").contains(what), "{why:?}");
            assert!(loaded.export().0.is_empty());
            assert!(!file.exists(), "an unusable file is removed");
        }
        let (empty, why) = load(&file);
        assert!(why.is_none() && empty.export().0.is_empty());
    }
}
