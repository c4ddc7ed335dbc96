//! Open file and directory handles (the `fh` the kernel passes back).

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use fuser::{BackingId, FileType};

use crate::passthrough::BackingCache;

/// A real file opened for the kernel. With passthrough the kernel does the
/// I/O itself; the fd still serves fsync, ftruncate, fallocate and fstat.
#[derive(Debug)]
pub(crate) struct OpenFile {
    pub ino: u64,
    pub file: File,
    /// Keeps the inode's backing id alive while this handle is open.
    pub _backing: Option<Arc<BackingId>>,
}

#[derive(Debug, Default)]
pub(crate) struct FileHandles {
    next: u64,
    open: HashMap<u64, Arc<OpenFile>>,
    pub backing: BackingCache,
}

impl FileHandles {
    pub fn insert(&mut self, file: OpenFile) -> u64 {
        self.next += 1;
        self.open.insert(self.next, Arc::new(file));
        self.next
    }

    pub fn get(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.open.get(&fh).cloned()
    }

    /// Any open handle of `ino`: an unlinked file can only be stat'ed
    /// through one.
    pub fn any_of(&self, ino: u64) -> Option<Arc<OpenFile>> {
        self.open.values().find(|f| f.ino == ino).cloned()
    }

    /// Removes the handle. The caller drops it after releasing the lock, as
    /// dropping the last backing reference is an ioctl.
    pub fn remove(&mut self, fh: u64) -> Option<Arc<OpenFile>> {
        self.open.remove(&fh)
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }
}

/// One entry of a directory snapshot.
#[derive(Debug)]
pub(crate) struct DirEntry {
    pub ino: u64,
    pub kind: FileType,
    pub name: std::ffi::OsString,
}

/// An open directory: its listing is read once, at the first readdir, and
/// served from that snapshot so offsets stay stable.
#[derive(Debug)]
pub(crate) struct OpenDir {
    pub ino: u64,
    pub view: u64,
    pub path: Arc<Path>,
    pub entries: Option<Arc<Vec<DirEntry>>>,
}

#[derive(Debug, Default)]
pub(crate) struct DirHandles {
    next: u64,
    open: HashMap<u64, OpenDir>,
}

impl DirHandles {
    pub fn insert(&mut self, dir: OpenDir) -> u64 {
        self.next += 1;
        self.open.insert(self.next, dir);
        self.next
    }

    pub fn get_mut(&mut self, fh: u64) -> Option<&mut OpenDir> {
        self.open.get_mut(&fh)
    }

    pub fn remove(&mut self, fh: u64) {
        self.open.remove(&fh);
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }
}
