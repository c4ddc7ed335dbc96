//! What one view saw: an ordered list of accesses, by real path.
//!
//! The mirror only records; deciding what is a dependency, an output or a
//! reason not to cache is done by the caller (cachefs's `observe` module).

use std::path::PathBuf;

/// The kind of a filesystem object, as `lstat` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// The identity of a file's content at one moment: if any field changes, the
/// content may have changed. The default (all zero) is "not known".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub mode: u32,
}

/// One access by the view's process tree. Paths are real absolute paths
/// (the view root is `/`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// A lookup that found an object (stat, or a path walk through it).
    Found { path: PathBuf, kind: Kind },
    /// A lookup that found nothing (ENOENT) — a failed probe.
    NotFound { path: PathBuf },
    /// An open of an existing object or a create. `stamp` is the real file's
    /// stamp right after the open (after truncation/creation).
    Open {
        path: PathBuf,
        read: bool,
        write: bool,
        truncate: bool,
        append: bool,
        created: bool,
        stamp: Stamp,
    },
    /// A directory's entries were listed.
    ReadDir { path: PathBuf },
    /// A symlink was read (followed or readlink'd).
    ReadLink { path: PathBuf, target: PathBuf },
    /// Metadata changed: chmod, chown, utimens, truncate through setattr.
    SetAttr { path: PathBuf, size: Option<u64> },
    /// mkdir, mknod, symlink or link created `path`.
    Created { path: PathBuf, kind: Kind },
    /// unlink or rmdir removed `path`.
    Removed { path: PathBuf },
    /// rename moved `from` to `to` (replacing `to` if it existed).
    Renamed { from: PathBuf, to: PathBuf },
    /// A file this view had read was about to be truncated or replaced by
    /// the view itself (ranlib rewrites the archive it read): what it held
    /// then, so that the caller may key on the content that was read.
    /// `hash` is the BLAKE3 hash of the whole file; `stamp` is its stamp at
    /// that moment, to match against the stamp of the read.
    Superseded {
        path: PathBuf,
        stamp: Stamp,
        hash: [u8; 32],
    },
    /// An operation the mirror does not support or could not attribute
    /// fully (xattrs writes, a failed real syscall on a write path, ...).
    /// A view with one of these must not be cached.
    Unobservable { path: PathBuf, what: &'static str },
}

impl Stamp {
    /// The stamp of a file as `metadata` describes it.
    pub fn of(metadata: &std::fs::Metadata) -> Stamp {
        crate::attr::stamp(metadata)
    }
}

/// Everything one view saw, in the order the daemon handled it.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub accesses: Vec<Access>,
}
