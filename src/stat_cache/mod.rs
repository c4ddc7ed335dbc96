//! The stat cache: content digests by path and stamp, and failed probes by
//! their directory's stamp, so that validating a hit costs a stat per dep
//! instead of a read. `file` keeps it across agent restarts.

pub mod file;

use crate::digest::{digest_file, Digest, Hash};
use nix::sys::statfs;
use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The identity of a file's content as stat reports it; any change means the
/// content may have changed (ctime catches a rewrite with the old mtime put back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl Stamp {
    pub fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }

    /// A file changed within the last moments may change again within the
    /// same timestamp tick, invisibly to stat: such stamps are not cached
    /// (the "racy git" problem).
    fn is_settled(&self, now: SystemTime) -> bool {
        let now_ns = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos() as i128;
        let margin = 2_000_000_000;
        self.mtime_ns < now_ns - margin && self.ctime_ns < now_ns - margin
    }
}

/// Content hashes by path and stamp, so validating a hit re-hashes only files
/// whose stat changed; and paths found absent, by the stamp their directory
/// had, so that a compile's many failed probes (a header looked for in each
/// include directory) cost one stat per directory instead of one per probe.
#[derive(Default)]
pub struct StatCache {
    entries: Mutex<HashMap<PathBuf, (Stamp, Digest)>>,
    absent: Mutex<HashMap<PathBuf, Stamp>>,
    /// Something was learnt since the last `take_dirty` (see
    /// `file`, which keeps both maps across agent restarts).
    dirty: std::sync::atomic::AtomicBool,
    /// Per device: whether its file system is known to update a directory's
    /// mtime and ctime whenever an entry is added, removed or renamed.
    dir_stamps_trusted: Mutex<HashMap<u64, bool>>,
}

/// A file the stat cache hashed, with the stamp the hash is valid for.
pub type HashedFile = (PathBuf, Stamp, Digest);
/// A path found absent, with the stamp its directory had then.
pub type AbsentPath = (PathBuf, Stamp);

/// Local file systems whose directory timestamps follow POSIX: ext2/3/4
/// (one magic number), xfs, btrfs, tmpfs, overlayfs. Others (FUSE, network
/// file systems) are checked probe by probe.
const DIR_STAMP_FILESYSTEMS: &[statfs::FsType] = &[
    statfs::EXT4_SUPER_MAGIC,
    statfs::XFS_SUPER_MAGIC,
    statfs::BTRFS_SUPER_MAGIC,
    statfs::TMPFS_MAGIC,
    statfs::OVERLAYFS_SUPER_MAGIC,
];

impl StatCache {
    fn mark_dirty(&self) {
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Hashed files and absent paths known.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len() + self.absent.lock().unwrap().len()
    }

    /// Paths known absent, for tests of the probe shortcut.
    #[cfg(test)]
    pub(crate) fn absent_len(&self) -> usize {
        self.absent.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether anything was learnt since the last call.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Both maps, for saving: hashed files and paths found absent, each with
    /// the stamp it is valid for.
    pub fn export(&self) -> (Vec<HashedFile>, Vec<AbsentPath>) {
        let files = self.entries.lock().unwrap();
        let files = files
            .iter()
            .map(|(p, (s, d))| (p.clone(), *s, *d))
            .collect();
        let absent = self.absent.lock().unwrap();
        let absent = absent.iter().map(|(p, s)| (p.clone(), *s)).collect();
        (files, absent)
    }

    /// A cache holding what `export` gave: every entry is still checked
    /// against the file's stamp before use, as a learnt one is.
    pub fn import(files: Vec<HashedFile>, absent: Vec<AbsentPath>) -> StatCache {
        StatCache {
            entries: Mutex::new(files.into_iter().map(|(p, s, d)| (p, (s, d))).collect()),
            absent: Mutex::new(absent.into_iter().collect()),
            ..StatCache::default()
        }
    }

    /// Hash of the regular file at `path` (not following a final symlink),
    /// with the stamp it had. `None` if it is missing or not a regular file.
    pub fn file_hash(&self, path: &Path) -> std::io::Result<Option<(Stamp, Hash)>> {
        Ok(self.file_digest(path)?.map(|(stamp, d)| (stamp, d.hash)))
    }

    /// `file_hash` with what else was learnt from the content while hashing.
    pub fn file_digest(&self, path: &Path) -> std::io::Result<Option<(Stamp, Digest)>> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !meta.is_file() {
            return Ok(None);
        }
        let stamp = Stamp::of(&meta);
        if let Some((s, d)) = self.entries.lock().unwrap().get(path) {
            if *s == stamp {
                return Ok(Some((stamp, *d)));
            }
        }
        let digest = digest_file(path)?;
        // Only trust the pairing if the file did not change while we read it.
        let after = Stamp::of(&std::fs::symlink_metadata(path)?);
        if after != stamp {
            return Ok(None);
        }
        if stamp.is_settled(SystemTime::now()) {
            self.entries
                .lock()
                .unwrap()
                .insert(path.to_path_buf(), (stamp, digest));
            self.mark_dirty();
        }
        Ok(Some((stamp, digest)))
    }

    /// Whether `path` is absent (lstat fails with ENOENT or ENOTDIR).
    /// `dirs` memoizes directory stamps within one validation. A directory
    /// whose stamp is unchanged since the path was last found absent in it
    /// gained no entry since: any creation, rename or link into it updates
    /// its mtime and ctime. Only settled stamps are remembered (a change
    /// within the same timestamp tick would be invisible), and only on file
    /// systems known to keep directory timestamps that way.
    pub fn is_absent(&self, path: &Path, dirs: &mut DirStamps) -> bool {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let before = dir.and_then(|d| self.dir_stamp(d, dirs));
        if let Some(stamp) = before {
            if self.absent.lock().unwrap().get(path) == Some(&stamp) {
                return true;
            }
        }
        let absent = matches!(std::fs::symlink_metadata(path), Err(e) if is_not_found(&e));
        match before {
            // The stamp was taken before the lookup: an entry created after
            // it changes the directory's stamp and is seen next time.
            Some(stamp) if absent && stamp.is_settled(SystemTime::now()) => {
                self.absent
                    .lock()
                    .unwrap()
                    .insert(path.to_path_buf(), stamp);
                self.mark_dirty();
            }
            _ => {}
        }
        absent
    }

    /// The stamp of directory `dir` if shortcuts through it can be trusted.
    fn dir_stamp(&self, dir: &Path, dirs: &mut DirStamps) -> Option<Stamp> {
        if let Some(known) = dirs.get(dir) {
            return *known;
        }
        let stamp = std::fs::metadata(dir)
            .ok()
            .filter(|m| m.is_dir() && self.trusts_dir_stamps(m.dev(), dir))
            .map(|m| Stamp::of(&m));
        dirs.insert(dir.to_path_buf(), stamp);
        stamp
    }

    pub(crate) fn trusts_dir_stamps(&self, dev: u64, dir: &Path) -> bool {
        if let Some(t) = self.dir_stamps_trusted.lock().unwrap().get(&dev) {
            return *t;
        }
        let trusted = statfs::statfs(dir)
            .is_ok_and(|fs| DIR_STAMP_FILESYSTEMS.contains(&fs.filesystem_type()));
        self.dir_stamps_trusted.lock().unwrap().insert(dev, trusted);
        trusted
    }

    /// Hash following symlinks: for the compiler binary named in key1.
    pub fn resolved_file_hash(&self, path: &Path) -> std::io::Result<Hash> {
        let real = std::fs::canonicalize(path)?;
        self.file_hash(&real)?.map(|(_, h)| h).ok_or_else(|| {
            std::io::Error::other(format!("{} changed while hashing", real.display()))
        })
    }
}

pub fn is_not_found(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// Directory stamps seen during one validation (`None`: not to be trusted).
pub type DirStamps = HashMap<PathBuf, Option<Stamp>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_rewrite_with_old_mtime_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.h");
        std::fs::write(&p, "int a;").unwrap();
        let old = std::fs::metadata(&p).unwrap().modified().unwrap();
        let cache = StatCache::default();
        let (_, h1) = cache.file_hash(&p).unwrap().unwrap();
        std::fs::write(&p, "int b;").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let (_, h2) = cache.file_hash(&p).unwrap().unwrap();
        assert_ne!(h1, h2);
    }
}
