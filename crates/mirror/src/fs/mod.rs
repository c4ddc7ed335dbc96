//! The FUSE filesystem: `MNT/<view>/…` mirrors `/`, and every request on a
//! view's nodes is performed on the real path and recorded in that view.
//!
//! The `Filesystem` impl here only dispatches; the work is in `lookup`
//! (names and attributes), `io` (open files and data), `dirs` (listings) and
//! `mutate` (changes to the tree).

mod dirs;
mod io;
mod lookup;
mod mutate;

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, INodeNo, InitFlags, IoctlFlags,
    KernelConfig, LockOwner, OpenFlags, PollEvents, PollFlags, PollNotifier, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyLseek, ReplyOpen, ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use parking_lot::Mutex;

use crate::handles::{DirHandles, FileHandles};
use crate::inodes::{InodeTable, NodeRef};
use crate::processes::ProcessTable;
use crate::record::Access;
use crate::requests::{Op, RequestCounts};
use crate::views::ViewRegistry;

thread_local! {
    /// The thread that made the request this daemon thread is serving: a
    /// tree mount attributes accesses by it. Set on entry to every request.
    static CALLER: Cell<u32> = const { Cell::new(0) };
}

/// State shared by the daemon threads and the [`crate::Mirror`] handle.
/// Each lock guards one table and is never held across a real syscall that
/// may block, nor together with another of these locks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub inodes: Mutex<InodeTable>,
    pub views: Mutex<ViewRegistry>,
    pub files: Mutex<FileHandles>,
    pub dirs: Mutex<DirHandles>,
    pub ttl: Duration,
    /// How long the kernel may remember that a name is absent. A tree mount
    /// says 0: its view is shared by every process, and each one's failed
    /// probes must reach the daemon to be attributed to it.
    pub negative_ttl: Duration,
    /// Tree mounts: the mount root is a real directory, accesses go to the
    /// process that made them. None: the root lists views.
    pub processes: Option<Mutex<ProcessTable>>,
    requests: RequestCounts,
    hide: HashSet<PathBuf>,
    want_passthrough: bool,
    pub passthrough: AtomicBool,
    mounted_at: SystemTime,
    /// The liveness probes handed out and not yet dropped (see
    /// `Mirror::new_probe`), each with whether the daemon has answered it.
    pub probes: Mutex<HashMap<u64, bool>>,
    pub probe_delay: Duration,
}

/// A name looked up in the root of a mirror of views to prove the daemon
/// still receives requests: `<PROBE_PREFIX><n>`, never a view (views are
/// numbers), answered ENOENT, which the kernel does not cache.
pub(crate) const PROBE_PREFIX: &str = ".cachefs-alive-";

impl Shared {
    pub fn new(
        options: &crate::options::MirrorOptions,
        hide: HashSet<PathBuf>,
        processes: Option<ProcessTable>,
    ) -> Shared {
        Shared {
            inodes: Mutex::default(),
            views: Mutex::default(),
            files: Mutex::default(),
            dirs: Mutex::default(),
            ttl: options.ttl,
            negative_ttl: if processes.is_some() {
                Duration::ZERO
            } else {
                options.ttl
            },
            processes: processes.map(Mutex::new),
            requests: RequestCounts::default(),
            hide,
            want_passthrough: options.passthrough,
            passthrough: AtomicBool::new(false),
            mounted_at: SystemTime::now(),
            probes: Mutex::default(),
            probe_delay: options.probe_delay,
        }
    }

    /// Entry to every request: who asked (for tree mounts) and what (for
    /// the request counts).
    fn begin(&self, req: &Request, op: Op) {
        CALLER.with(|c| c.set(req.pid()));
        self.requests.count(op);
    }

    /// Requests served so far, by name, in a fixed order.
    pub fn request_counts(&self) -> Vec<(&'static str, u64)> {
        self.requests.snapshot()
    }

    fn record(&self, view: u64, access: Access) {
        match &self.processes {
            // Reads only /proc while holding the lock: nothing there waits
            // on this daemon.
            Some(processes) => processes.lock().record(CALLER.get(), access),
            None => self.views.lock().record(view, access),
        }
    }

    /// Whether `ino` is the root that lists views (not a tree mount's root,
    /// which is a real directory).
    fn is_views_root(&self, ino: INodeNo) -> bool {
        ino == INodeNo::ROOT && self.processes.is_none()
    }

    /// Files whose page cache may outlive an open: only in views, whose
    /// inodes are their own. A tree mount's files can change behind it (in
    /// the source directory), so each open must drop what was cached.
    /// The deepest stack the backing files may sit on. Views: 2, so they
    /// may live on overlayfs (container roots) or on a tree mount (which
    /// says 1: a view's compile may run inside `cachefs mount`'s tree, and a
    /// backing file must sit lower than the mount using it).
    fn stack_depth(&self) -> u32 {
        if self.processes.is_none() {
            2
        } else {
            1
        }
    }

    fn keep_cache(&self) -> bool {
        self.processes.is_none()
    }

    /// Records that the view did something the mirror could not perform or
    /// describe faithfully: such a view must not be cached.
    /// Before the view truncates or replaces `path`: if it read that file,
    /// records what the file held (see `Access::Superseded`). Views only:
    /// a tree mount's records are for inspection, not for keys.
    fn supersede_if_read(&self, view: u64, path: &Path) {
        if self.processes.is_some() || !self.views.lock().was_read(view, path) {
            return;
        }
        match crate::superseded::content_before_rewrite(path) {
            Ok(Some((stamp, hash))) => {
                let path = path.to_path_buf();
                self.record(view, Access::Superseded { path, stamp, hash });
            }
            // Gone or changing: the view's later write of it stays
            // unexplained, and the caller refuses it.
            Ok(None) => {}
            Err(_) => self.unobservable(view, path, "cannot read a file before it is rewritten"),
        }
    }

    /// A lookup found a special file: recorded (the view's result is then
    /// not to be used, see `special`) unless the view declared it plumbing.
    fn reached_special(&self, view: u64, path: &Path, what: &'static str) {
        if !self.views.lock().is_plumbing(view, path) {
            self.unobservable(view, path, what);
        }
    }

    fn unobservable(&self, view: u64, path: &Path, what: &'static str) {
        let path = path.to_path_buf();
        self.record(view, Access::Unobservable { path, what });
    }

    fn hidden(&self, path: &Path) -> bool {
        self.hide.contains(path)
    }

    /// The node behind a kernel node id. Unknown ids belong to a closed view
    /// (or were forgotten): ESTALE, as for a vanished NFS file.
    fn node(&self, ino: INodeNo) -> Result<NodeRef, Errno> {
        self.inodes.lock().get(ino.0).ok_or(Errno::ESTALE)
    }

    /// The real path of `name` in the view directory `parent`. The mount
    /// root holds only views, which cannot be created, removed or renamed.
    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<(u64, PathBuf), Errno> {
        if self.is_views_root(parent) {
            return Err(Errno::EPERM);
        }
        let dir = self.node(parent)?;
        Ok((dir.view, dir.path.join(name)))
    }

    /// Like `child`, for a name about to be created: hidden paths must stay
    /// absent, so creating one is refused without a trace.
    fn new_child(&self, parent: INodeNo, name: &OsStr) -> Result<(u64, PathBuf), Errno> {
        let (view, path) = self.child(parent, name)?;
        if self.hidden(&path) {
            return Err(Errno::EACCES);
        }
        Ok((view, path))
    }

    fn passthrough_on(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

fn nix_errno(e: nix::errno::Errno) -> Errno {
    Errno::from_i32(e as i32)
}

/// The fuser `Filesystem`; a thin handle on the shared state.
#[derive(Debug)]
pub(crate) struct MirrorFs {
    shared: Arc<Shared>,
}

impl MirrorFs {
    pub fn new(shared: Arc<Shared>) -> MirrorFs {
        MirrorFs { shared }
    }
}

/// `_IOC_WRITE`: the caller passes data in, so the ioctl may change the file.
const IOC_WRITE: u32 = 1;

impl Filesystem for MirrorFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // O_TRUNC arrives with OPEN (recorded as a truncating open) instead
        // of as a separate SETATTR; symlink targets and lookups in one
        // directory from several threads are cached / run in parallel.
        for flag in [
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            let _ = config.add_capabilities(flag);
        }
        let _ = config.set_max_background(64);
        if self.shared.want_passthrough {
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config
                    .set_max_stack_depth(self.shared.stack_depth())
                    .is_ok();
            self.shared.passthrough.store(ok, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.shared.begin(req, Op::Lookup);
        self.lookup_entry(parent, name, reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.shared.inodes.lock().forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.shared.begin(req, Op::Getattr);
        self.get_attr(ino, fh, reply);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.shared.begin(req, Op::Setattr);
        let change = mutate::AttrChange {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        };
        self.set_attr(ino, fh, change, reply);
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.shared.begin(req, Op::Readlink);
        self.read_link(ino, reply);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        self.shared.begin(req, Op::Mknod);
        self.make_node(parent, name, mode, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.shared.begin(req, Op::Mkdir);
        self.make_dir(parent, name, mode, reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.shared.begin(req, Op::Unlink);
        self.remove(parent, name, false, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.shared.begin(req, Op::Rmdir);
        self.remove(parent, name, true, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.shared.begin(req, Op::Symlink);
        self.make_symlink(parent, link_name, target, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.begin(req, Op::Rename);
        self.rename_entry(parent, name, newparent, newname, flags, reply);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.shared.begin(req, Op::Link);
        self.make_link(ino, newparent, newname, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.shared.begin(req, Op::Open);
        self.open_file(ino, flags, reply);
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.shared.begin(req, Op::Read);
        self.read_data(fh, offset, size, reply);
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.shared.begin(req, Op::Write);
        self.write_data(fh, offset, data, reply);
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.shared.begin(req, Op::Flush);
        // Writes go to the real file synchronously: nothing is buffered here.
        reply.ok();
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.begin(req, Op::Release);
        self.release_file(fh);
        reply.ok();
    }

    fn fsync(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.begin(req, Op::Fsync);
        self.sync_file(fh, datasync, reply);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.shared.begin(req, Op::Opendir);
        self.open_dir(ino, reply);
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.shared.begin(req, Op::Readdir);
        self.read_dir(ino, fh, offset, reply);
    }

    fn releasedir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.begin(req, Op::Releasedir);
        self.shared.dirs.lock().remove(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.begin(req, Op::Fsyncdir);
        reply.ok();
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        self.shared.begin(req, Op::Statfs);
        self.stat_fs(ino, reply);
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.shared.begin(req, Op::Setxattr);
        // ENOTSUP, not ENOSYS: ENOSYS would make the kernel stop asking, and
        // later attempts would go unrecorded.
        self.unobservable_ino(ino, "setxattr");
        reply.error(Errno::ENOTSUP);
    }

    fn getxattr(&self, req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        self.shared.begin(req, Op::Getxattr);
        // ENOSYS makes the kernel stop asking, notably for
        // security.capability before every write.
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        self.shared.begin(req, Op::Listxattr);
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        self.shared.begin(req, Op::Removexattr);
        self.unobservable_ino(ino, "removexattr");
        reply.error(Errno::ENOTSUP);
    }

    fn access(&self, req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        self.shared.begin(req, Op::Access);
        // Only called without default_permissions; the kernel checks modes.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.shared.begin(req, Op::Create);
        self.create_file(parent, name, mode, flags, reply);
    }

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        self.shared.begin(req, Op::Ioctl);
        // Queries (isatty's TCGETS, FS_IOC_GETFLAGS) fail harmlessly; one
        // that passes data in may be meant to change the file.
        if (cmd >> 30) & IOC_WRITE != 0 {
            self.unobservable_ino(ino, "ioctl");
        }
        reply.error(Errno::ENOTTY);
    }

    // The three below answer ENOSYS on purpose, quietly (fuser's defaults log
    // a warning): the kernel then stops asking and does the job itself with
    // ordinary reads and writes, which the mirror already serves.

    fn lseek(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: ReplyLseek,
    ) {
        self.shared.begin(req, Op::Lseek);
        reply.error(Errno::ENOSYS);
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.shared.begin(req, Op::CopyFileRange);
        reply.error(Errno::ENOSYS);
    }

    fn poll(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: PollNotifier,
        _events: PollEvents,
        _flags: PollFlags,
        reply: ReplyPoll,
    ) {
        self.shared.begin(req, Op::Poll);
        reply.error(Errno::ENOSYS);
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.shared.begin(req, Op::Fallocate);
        self.allocate(ino, fh, offset, length, mode, reply);
    }
}

impl MirrorFs {
    fn unobservable_ino(&self, ino: INodeNo, what: &'static str) {
        if let Ok(node) = self.shared.node(ino) {
            self.shared.unobservable(node.view, &node.path, what);
        }
    }
}
