//! Real `lstat` results turned into what the kernel and the record need.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::record::{Kind, Stamp};

/// The real object's attributes under our node id (st_ino is the node id: the
/// kernel reports `attr.ino` to stat, and fuser ties it to the node id).
/// A special file shows as an empty regular file (see `special`).
pub(crate) fn file_attr(ino: u64, md: &Metadata) -> FileAttr {
    let attr = real_attr(ino, md);
    if crate::special::reached(md.file_type()).is_none() {
        return attr;
    }
    FileAttr {
        kind: FileType::RegularFile,
        size: 0,
        blocks: 0,
        rdev: 0,
        ..attr
    }
}

fn real_attr(ino: u64, md: &Metadata) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: md.size(),
        blocks: md.blocks(),
        atime: time(md.atime(), md.atime_nsec()),
        mtime: time(md.mtime(), md.mtime_nsec()),
        ctime: time(md.ctime(), md.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: file_type(md),
        perm: (md.mode() & 0o7777) as u16,
        nlink: md.nlink() as u32,
        uid: md.uid(),
        gid: md.gid(),
        rdev: md.rdev() as u32,
        blksize: md.blksize() as u32,
        flags: 0,
    }
}

/// The attributes of a negative entry: node id 0 tells the kernel "absent,
/// and you may cache that for the entry TTL".
pub(crate) fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// The mount root (1) lists views; it has no real counterpart.
pub(crate) fn root_attr(since: SystemTime) -> FileAttr {
    FileAttr {
        ino: INodeNo::ROOT,
        kind: FileType::Directory,
        perm: 0o755,
        nlink: 2,
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        atime: since,
        mtime: since,
        ctime: since,
        ..negative_attr()
    }
}

pub(crate) fn kind(md: &Metadata) -> Kind {
    kind_of_type(md.file_type())
}

pub(crate) fn kind_of_type(ft: std::fs::FileType) -> Kind {
    if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        Kind::Other
    }
}

pub(crate) fn stamp(md: &Metadata) -> Stamp {
    Stamp {
        dev: md.dev(),
        ino: md.ino(),
        size: md.size(),
        mtime_ns: nanos(md.mtime(), md.mtime_nsec()),
        ctime_ns: nanos(md.ctime(), md.ctime_nsec()),
        mode: md.mode(),
    }
}

pub(crate) fn file_type(md: &Metadata) -> FileType {
    entry_type(md.file_type())
}

/// The type the kernel is told of: a special file is a regular one, or the
/// kernel would handle its opens itself (see `special`).
pub(crate) fn entry_type(ft: std::fs::FileType) -> FileType {
    match FileType::from_std(ft) {
        Some(t @ (FileType::Directory | FileType::Symlink)) => t,
        _ => FileType::RegularFile,
    }
}

fn nanos(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

fn time(secs: i64, nsec: i64) -> SystemTime {
    let nsec = nsec.clamp(0, 999_999_999) as u32;
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::new(secs.unsigned_abs(), 0) + Duration::new(0, nsec)
    }
}
