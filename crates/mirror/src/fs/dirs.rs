//! Directory listings: opendir, readdir. The mount root lists open views.

use std::ffi::OsString;
use std::os::unix::fs::DirEntryExt;
use std::path::Path;
use std::sync::Arc;

use fuser::{Errno, FileHandle, FileType, FopenFlags, INodeNo, ReplyDirectory, ReplyOpen};

use super::{errno, MirrorFs};
use crate::handles::{DirEntry, OpenDir};
use crate::record::Access;

/// d_ino of a view in the root listing whose root the kernel has not looked
/// up yet; any non-zero value will do (readdir callers skip d_ino 0).
const UNKNOWN_INO: u64 = u64::MAX;

impl MirrorFs {
    pub(super) fn open_dir(&self, ino: INodeNo, reply: ReplyOpen) {
        if self.shared.is_views_root(ino) {
            return reply.opened(FileHandle(0), FopenFlags::empty());
        }
        let node = match self.shared.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let dir = OpenDir {
            ino: ino.0,
            view: node.view,
            path: node.path,
            entries: None,
        };
        let fh = self.shared.dirs.lock().insert(dir);
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    pub(super) fn read_dir(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let entries = if self.shared.is_views_root(ino) {
            Ok(Arc::new(self.root_entries()))
        } else {
            self.dir_entries(fh, offset)
        };
        match entries {
            Ok(entries) => fill(reply, &entries, offset),
            Err(e) => reply.error(e),
        }
    }

    /// The handle's snapshot, (re)read from the real directory at offset 0:
    /// that is a listing by the caller, and the one thing recorded.
    fn dir_entries(&self, fh: FileHandle, offset: u64) -> Result<Arc<Vec<DirEntry>>, Errno> {
        let (ino, view, path, cached) = {
            let mut dirs = self.shared.dirs.lock();
            let dir = dirs.get_mut(fh.0).ok_or(Errno::EBADF)?;
            let cached = if offset == 0 {
                None
            } else {
                dir.entries.clone()
            };
            (dir.ino, dir.view, dir.path.clone(), cached)
        };
        if let Some(entries) = cached {
            return Ok(entries);
        }
        let entries = match self.list(ino, view, &path) {
            Ok(entries) => Arc::new(entries),
            Err(e) => {
                self.shared.unobservable(view, &path, "readdir failed");
                return Err(errno(e));
            }
        };
        let path = path.to_path_buf();
        self.shared.record(view, Access::ReadDir { path });
        if let Some(dir) = self.shared.dirs.lock().get_mut(fh.0) {
            dir.entries = Some(entries.clone());
        }
        Ok(entries)
    }

    /// The real directory's entries minus hidden ones. d_ino is the node id
    /// where the kernel has one, so it matches what stat reports.
    fn list(&self, ino: u64, view: u64, path: &Path) -> std::io::Result<Vec<DirEntry>> {
        let mut raw = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let child = path.join(entry.file_name());
            if self.shared.hidden(&child) {
                continue;
            }
            let kind = crate::attr::entry_type(entry.file_type()?);
            raw.push((child, entry.ino(), kind));
        }
        let mut entries = dots(ino);
        let inodes = self.shared.inodes.lock();
        for (child, real_ino, kind) in raw {
            let ino = inodes.peek(view, &child).unwrap_or(real_ino.max(1));
            let name = child.file_name().unwrap_or_default().to_os_string();
            entries.push(DirEntry { ino, kind, name });
        }
        Ok(entries)
    }

    fn root_entries(&self) -> Vec<DirEntry> {
        let ids = self.shared.views.lock().ids();
        let inodes = self.shared.inodes.lock();
        let mut entries = dots(INodeNo::ROOT.0);
        for id in ids {
            entries.push(DirEntry {
                ino: inodes.peek(id, Path::new("/")).unwrap_or(UNKNOWN_INO),
                kind: FileType::Directory,
                name: OsString::from(id.to_string()),
            });
        }
        entries
    }
}

fn dots(ino: u64) -> Vec<DirEntry> {
    [".", ".."]
        .into_iter()
        .map(|name| DirEntry {
            ino,
            kind: FileType::Directory,
            name: OsString::from(name),
        })
        .collect()
}

/// Entry i carries offset i + 1: where the next readdir resumes.
fn fill(mut reply: ReplyDirectory, entries: &[DirEntry], offset: u64) {
    for (i, e) in entries.iter().enumerate().skip(offset as usize) {
        if reply.add(INodeNo(e.ino), i as u64 + 1, e.kind, &e.name) {
            break;
        }
    }
    reply.ok();
}
