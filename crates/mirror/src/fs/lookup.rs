//! Names and attributes: lookup, getattr, readlink, statfs.

use std::ffi::OsStr;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fuser::{
    Errno, FileAttr, FileHandle, Generation, INodeNo, ReplyAttr, ReplyData, ReplyEntry, ReplyStatfs,
};

use super::{errno, nix_errno, MirrorFs};
use crate::attr;
use crate::record::Access;

impl MirrorFs {
    pub(super) fn lookup_entry(&self, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ttl = self.shared.ttl;
        let found = if self.shared.is_views_root(parent) {
            self.lookup_view(name).map(Some)
        } else {
            self.lookup_child(parent, name)
        };
        match found {
            Ok(Some(attr)) => reply.entry(&ttl, &attr, Generation(0)),
            // Node id 0 is a negative entry the kernel caches for the TTL:
            // repeated probes of a missing header cost nothing after the
            // first, which is the one recorded.
            Ok(None) => reply.entry(
                &self.shared.negative_ttl,
                &attr::negative_attr(),
                Generation(0),
            ),
            Err(e) => reply.error(e),
        }
    }

    /// `MNT/<id>`: the root of an open view, which mirrors `/`.
    fn lookup_view(&self, name: &OsStr) -> Result<FileAttr, Errno> {
        if let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix(super::PROBE_PREFIX))
            .and_then(|n| n.parse().ok())
        {
            let delay = self.shared.probe_delay;
            if !delay.is_zero() {
                log::info!("liveness probe {n} held for {delay:?} before its answer");
                std::thread::sleep(delay);
            }
            if let Some(answered) = self.shared.probes.lock().get_mut(&n) {
                *answered = true;
            }
            return Err(Errno::ENOENT);
        }
        let id: u64 = name
            .to_str()
            .and_then(|s| s.parse().ok())
            .ok_or(Errno::ENOENT)?;
        if !self.shared.views.lock().is_open(id) {
            return Err(Errno::ENOENT);
        }
        let md = std::fs::symlink_metadata("/").map_err(errno)?;
        let ino = self
            .shared
            .inodes
            .lock()
            .remember(id, Path::new("/"), crate::Kind::Dir);
        Ok(attr::file_attr(ino.ok_or(Errno::ENOENT)?, &md))
    }

    /// `Ok(None)` is a recorded ENOENT.
    fn lookup_child(&self, parent: INodeNo, name: &OsStr) -> Result<Option<FileAttr>, Errno> {
        let dir = self.shared.node(parent)?;
        let path = dir.path.join(name);
        if self.shared.hidden(&path) {
            return Err(Errno::ENOENT);
        }
        let md = match std::fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.shared.record(dir.view, Access::NotFound { path });
                return Ok(None);
            }
            Err(e) => {
                self.shared.unobservable(dir.view, &path, "lookup failed");
                return Err(errno(e));
            }
        };
        let kind = attr::kind(&md);
        let ino = self.shared.inodes.lock().remember(dir.view, &path, kind);
        let ino = ino.ok_or(Errno::ESTALE)?;
        match crate::special::reached(md.file_type()) {
            None => self.shared.record(dir.view, Access::Found { path, kind }),
            Some(what) => self.shared.reached_special(dir.view, &path, what),
        }
        Ok(Some(attr::file_attr(ino, &md)))
    }

    pub(super) fn get_attr(&self, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        if self.shared.is_views_root(ino) {
            reply.attr(&self.shared.ttl, &attr::root_attr(self.shared.mounted_at));
            return;
        }
        match self.node_metadata(ino, fh) {
            Ok(md) => reply.attr(&self.shared.ttl, &attr::file_attr(ino.0, &md)),
            Err(e) => reply.error(e),
        }
    }

    /// The real object's current metadata: through the open file when the
    /// kernel names one or the path no longer leads to it (unlinked while
    /// open), else by path.
    pub(super) fn node_metadata(
        &self,
        ino: INodeNo,
        fh: Option<FileHandle>,
    ) -> Result<Metadata, Errno> {
        let node = self.shared.node(ino)?;
        let open = match fh {
            Some(fh) => self.shared.files.lock().get(fh.0),
            None if !node.linked => self.shared.files.lock().any_of(ino.0),
            None => None,
        };
        match open {
            Some(f) => f.file.metadata().map_err(errno),
            None if node.linked => std::fs::symlink_metadata(&node.path).map_err(errno),
            None => Err(Errno::ENOENT),
        }
    }

    pub(super) fn read_link(&self, ino: INodeNo, reply: ReplyData) {
        let node = match self.shared.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        match std::fs::read_link(&node.path) {
            Ok(target) => {
                // Recorded before the reply: once the caller runs on, the
                // view may be closed at any moment.
                let bytes = target.as_os_str().as_bytes().to_vec();
                let path = node.path.to_path_buf();
                self.shared
                    .record(node.view, Access::ReadLink { path, target });
                reply.data(&bytes);
            }
            Err(e) => {
                self.shared
                    .unobservable(node.view, &node.path, "readlink failed");
                reply.error(errno(e));
            }
        }
    }

    pub(super) fn stat_fs(&self, ino: INodeNo, reply: ReplyStatfs) {
        let path = match self.shared.node(ino) {
            Ok(node) => node.path,
            Err(_) => Path::new("/").into(),
        };
        match nix::sys::statvfs::statvfs(&*path) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(nix_errno(e)),
        }
    }
}
