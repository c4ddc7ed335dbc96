//! Changes to the tree: setattr, mkdir, mknod, symlink, link, unlink, rmdir,
//! rename. Each is done on the real path; success is recorded as what it
//! did, failure as `Unobservable` (the outcome depended on state the record
//! does not describe).

use std::ffi::OsStr;
use std::fs::{File, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileHandle, Generation, INodeNo, RenameFlags, ReplyAttr, ReplyEmpty, ReplyEntry,
    TimeOrNow,
};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::{errno, nix_errno, MirrorFs};
use crate::attr;
use crate::record::{Access, Kind};

/// What a SETATTR asks to change.
pub(super) struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
}

impl MirrorFs {
    pub(super) fn set_attr(
        &self,
        ino: INodeNo,
        fh: Option<FileHandle>,
        change: AttrChange,
        reply: ReplyAttr,
    ) {
        let node = match self.shared.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let open = fh.and_then(|fh| self.shared.files.lock().get(fh.0));
        let file = open.as_ref().map(|o| &o.file);
        if let Err(e) = apply(&node.path, file, &change) {
            self.shared
                .unobservable(node.view, &node.path, "setattr failed");
            return reply.error(e);
        }
        let path = node.path.to_path_buf();
        let size = change.size;
        self.shared
            .record(node.view, Access::SetAttr { path, size });
        match self.node_metadata(ino, fh) {
            Ok(md) => reply.attr(&self.shared.ttl, &attr::file_attr(ino.0, &md)),
            Err(e) => reply.error(e),
        }
    }

    pub(super) fn make_dir(&self, parent: INodeNo, name: &OsStr, perm: u32, reply: ReplyEntry) {
        self.make(parent, name, Kind::Dir, reply, |path| {
            std::fs::DirBuilder::new()
                .mode(perm & 0o7777)
                .create(path)?;
            exact_permissions(path, perm)
        });
    }

    /// Regular files only: a FIFO or socket made here would be a different
    /// object from the real one, so processes inside and outside the view
    /// could not meet through it. Refused before anything is made, and
    /// recorded as reaching a special file: the compile runs again outside
    /// the view (`bind` of a Unix socket comes here too).
    pub(super) fn make_node(&self, parent: INodeNo, name: &OsStr, mode: u32, reply: ReplyEntry) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            if let Ok((view, path)) = self.shared.child(parent, name) {
                let what = crate::special::reached_mode(mode).unwrap_or("mknod of a special file");
                self.shared.unobservable(view, &path, what);
            }
            return reply.error(Errno::EPERM);
        }
        self.make(parent, name, Kind::File, reply, |path| {
            let perm = Mode::from_bits_truncate(mode & 0o7777);
            nix::sys::stat::mknod(path, SFlag::S_IFREG, perm, 0).map_err(io::Error::from)?;
            exact_permissions(path, mode)
        });
    }

    pub(super) fn make_symlink(
        &self,
        parent: INodeNo,
        name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.make(parent, name, Kind::Symlink, reply, |path| {
            std::os::unix::fs::symlink(target, path)
        });
    }

    pub(super) fn make_link(
        &self,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let node = match self.shared.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        if node.kind == Kind::Other {
            self.shared
                .unobservable(node.view, &node.path, crate::special::SPECIAL);
            return reply.error(Errno::EPERM);
        }
        match self.shared.child(newparent, newname) {
            Ok((view, _)) if view != node.view => return reply.error(Errno::EXDEV),
            Err(e) => return reply.error(e),
            Ok(_) => {}
        }
        self.make(newparent, newname, node.kind, reply, |path| {
            std::fs::hard_link(&node.path, path)
        });
    }

    /// Whether `path` is a special file, which a view must not remove,
    /// replace or link: the compile runs again outside the view (recorded
    /// here), where it must find the file as it was.
    fn refuse_special(&self, view: u64, path: &Path) -> bool {
        let md = std::fs::symlink_metadata(path);
        match md.ok().and_then(|m| crate::special::reached(m.file_type())) {
            Some(what) => {
                self.shared.unobservable(view, path, what);
                true
            }
            None => false,
        }
    }

    /// Creates `name` with `op`, records it and answers with its entry.
    fn make(
        &self,
        parent: INodeNo,
        name: &OsStr,
        kind: Kind,
        reply: ReplyEntry,
        op: impl FnOnce(&Path) -> io::Result<()>,
    ) {
        let (view, path) = match self.shared.new_child(parent, name) {
            Ok(child) => child,
            Err(e) => return reply.error(e),
        };
        let made = op(&path).and_then(|()| std::fs::symlink_metadata(&path));
        let md = match made {
            Ok(md) => md,
            Err(e) => {
                self.shared.unobservable(view, &path, "create failed");
                return reply.error(errno(e));
            }
        };
        let Some(ino) = self.shared.inodes.lock().remember(view, &path, kind) else {
            return reply.error(Errno::ESTALE);
        };
        self.shared.record(view, Access::Created { path, kind });
        reply.entry(&self.shared.ttl, &attr::file_attr(ino, &md), Generation(0));
    }

    pub(super) fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        let (view, path) = match self.shared.child(parent, name) {
            Ok(child) => child,
            Err(e) => return reply.error(e),
        };
        if !dir && self.refuse_special(view, &path) {
            return reply.error(Errno::EPERM);
        }
        let res = if dir {
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = res {
            self.shared.unobservable(view, &path, "remove failed");
            return reply.error(errno(e));
        }
        self.shared.inodes.lock().orphan(view, &path);
        self.shared.record(view, Access::Removed { path });
        reply.ok();
    }

    pub(super) fn rename_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (from, to) = match (
            self.shared.child(parent, name),
            self.shared.new_child(newparent, newname),
        ) {
            (Ok(from), Ok(to)) => (from, to),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let ((view, from), (to_view, to)) = (from, to);
        if view != to_view {
            // Views are separate trees to their callers; mv falls back to a
            // copy, which each view records on its own.
            return reply.error(Errno::EXDEV);
        }
        if self.refuse_special(view, &from) || self.refuse_special(view, &to) {
            return reply.error(Errno::EPERM);
        }
        self.shared.supersede_if_read(view, &to);
        if let Err(e) = rename(&from, &to, flags) {
            self.shared.unobservable(view, &from, "rename failed");
            return reply.error(e);
        }
        self.shared.inodes.lock().rename(view, &from, &to);
        self.shared.record(view, Access::Renamed { from, to });
        reply.ok();
    }
}

/// Plain rename and RENAME_NOREPLACE. RENAME_EXCHANGE has no `Access` to
/// record it (and RENAME_WHITEOUT is for overlayfs): refused.
fn rename(from: &Path, to: &Path, flags: RenameFlags) -> Result<(), Errno> {
    if flags.is_empty() {
        return std::fs::rename(from, to).map_err(errno);
    }
    if flags != RenameFlags::RENAME_NOREPLACE {
        return Err(Errno::EINVAL);
    }
    let cwd = nix::fcntl::AT_FDCWD;
    let noreplace = nix::fcntl::RenameFlags::RENAME_NOREPLACE;
    nix::fcntl::renameat2(cwd, from, cwd, to, noreplace).map_err(nix_errno)
}

/// Applies a SETATTR on the open file when the kernel names one (ftruncate
/// of an unlinked file must work), else on the path without following a
/// final symlink.
fn apply(path: &Path, file: Option<&File>, c: &AttrChange) -> Result<(), Errno> {
    if let Some(mode) = c.mode {
        let perm = Permissions::from_mode(mode & 0o7777);
        match file {
            Some(f) => f.set_permissions(perm),
            None => std::fs::set_permissions(path, perm),
        }
        .map_err(errno)?;
    }
    if c.uid.is_some() || c.gid.is_some() {
        match file {
            Some(f) => std::os::unix::fs::fchown(f, c.uid, c.gid),
            None => std::os::unix::fs::lchown(path, c.uid, c.gid),
        }
        .map_err(errno)?;
    }
    if let Some(size) = c.size {
        match file {
            Some(f) => f.set_len(size).map_err(errno),
            None => nix::unistd::truncate(path, size as i64).map_err(nix_errno),
        }?;
    }
    if c.atime.is_some() || c.mtime.is_some() {
        let (at, mt) = (timespec(c.atime), timespec(c.mtime));
        match file {
            Some(f) => nix::sys::stat::futimens(f, &at, &mt),
            None => {
                let cwd = nix::fcntl::AT_FDCWD;
                nix::sys::stat::utimensat(cwd, path, &at, &mt, UtimensatFlags::NoFollowSymlink)
            }
        }
        .map_err(nix_errno)?;
    }
    Ok(())
}

fn timespec(t: Option<TimeOrNow>) -> TimeSpec {
    match t {
        None => TimeSpec::UTIME_OMIT,
        Some(TimeOrNow::Now) => TimeSpec::UTIME_NOW,
        Some(TimeOrNow::SpecificTime(t)) => since_epoch(t),
    }
}

fn since_epoch(t: SystemTime) -> TimeSpec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => TimeSpec::from_duration(d),
        Err(before) => {
            let d = before.duration();
            let (secs, nanos) = (d.as_secs() as i64, i64::from(d.subsec_nanos()));
            if nanos == 0 {
                TimeSpec::new(-secs, 0)
            } else {
                TimeSpec::new(-secs - 1, 1_000_000_000 - nanos)
            }
        }
    }
}

/// See `io::exact_permissions`; by path, for directories and nodes.
fn exact_permissions(path: &Path, perm: u32) -> io::Result<()> {
    let have = std::fs::symlink_metadata(path)?.permissions().mode();
    if have & 0o777 == perm & 0o777 {
        return Ok(());
    }
    let want = (have & 0o7000) | (perm & 0o777);
    std::fs::set_permissions(path, Permissions::from_mode(want))
}
