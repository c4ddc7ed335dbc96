//! Open files and their data: open, create, read, write, release, fsync,
//! fallocate. With passthrough the kernel reads, writes and maps the real
//! file itself and only opens reach the daemon.

use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fuser::{
    BackingId, Errno, FileHandle, FopenFlags, Generation, INodeNo, OpenFlags, ReplyCreate,
    ReplyData, ReplyEmpty, ReplyOpen, ReplyWrite,
};

use super::{errno, nix_errno, MirrorFs};
use crate::attr;
use crate::handles::OpenFile;
use crate::record::{Access, Kind};
use crate::special;

/// Flags for files served through the daemon. KEEP_CACHE: a view's inodes
/// are its own, so their page cache can only hold what this view read or
/// wrote. NOFLUSH: nothing is buffered here, so close needs no round trip.
const CACHED_OPEN: FopenFlags = FopenFlags::FOPEN_KEEP_CACHE.union(FopenFlags::FOPEN_NOFLUSH);
const PASSTHROUGH_OPEN: FopenFlags = FopenFlags::FOPEN_NOFLUSH;

/// How the caller opened the file, as recorded.
#[derive(Clone, Copy)]
struct Mode {
    read: bool,
    write: bool,
    truncate: bool,
    append: bool,
}

impl Mode {
    fn of(flags: i32) -> Mode {
        let acc = flags & libc::O_ACCMODE;
        Mode {
            read: acc != libc::O_WRONLY,
            write: acc != libc::O_RDONLY,
            truncate: flags & libc::O_TRUNC != 0,
            append: flags & libc::O_APPEND != 0,
        }
    }

    /// The real open: same access mode and truncation. O_APPEND is left to
    /// the kernel, which already turns it into write offsets; a real O_APPEND
    /// fd would ignore the offsets the daemon is given.
    fn options(self) -> OpenOptions {
        self.options_with(NEVER_BLOCK)
    }

    fn options_with(self, flags: i32) -> OpenOptions {
        let mut o = OpenOptions::new();
        let trunc = if self.truncate { libc::O_TRUNC } else { 0 };
        o.read(self.read)
            .write(self.write)
            .custom_flags(flags | trunc);
        o
    }

    /// The real open of an existing file. A lease on it makes the
    /// O_NONBLOCK open fail with EWOULDBLOCK where a blocking one would wait
    /// for the lease to break, so that one is tried again blocking (a FIFO's
    /// open never fails so).
    fn open(self, path: &Path) -> io::Result<File> {
        match self.options().open(path) {
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => self
                .options_with(NEVER_BLOCK & !libc::O_NONBLOCK)
                .open(path),
            opened => opened,
        }
    }
}

/// Flags of every real open. O_NONBLOCK: a FIFO put at the path since its
/// lookup would otherwise hold this daemon thread (and every compile it
/// serves) until a writer came; `checked` clears it again.
const NEVER_BLOCK: i32 = libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK;

/// A real open's file and metadata, or the special file it reached (closed
/// at once, never read or written).
fn checked(file: File) -> io::Result<Checked> {
    let md = file.metadata()?;
    if let Some(what) = special::reached(md.file_type()) {
        return Ok(Err(what));
    }
    // Only O_NONBLOCK of the status flags F_SETFL changes was set.
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .map_err(io::Error::from)?;
    Ok(Ok((file, md)))
}

impl MirrorFs {
    pub(super) fn open_file(&self, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let node = match self.shared.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        if node.kind == Kind::Other {
            // Never opened for real: a FIFO's writer outside would meet this
            // reader and lose it at once. The compile runs again outside.
            self.shared
                .unobservable(node.view, &node.path, special::SPECIAL);
            return reply.error(Errno::ENXIO);
        }
        let mode = Mode::of(flags.0);
        if mode.write {
            self.shared.supersede_if_read(node.view, &node.path);
        }
        let (file, md) = match mode.open(&node.path).and_then(checked) {
            Ok(Ok(opened)) => opened,
            Ok(Err(what)) => {
                self.shared.unobservable(node.view, &node.path, what);
                return reply.error(Errno::ENXIO);
            }
            Err(e) => {
                self.shared
                    .unobservable(node.view, &node.path, "open failed");
                return reply.error(errno(e));
            }
        };
        self.record_open(node.view, &node.path, mode, false, &md);
        let (fh, backing) = self.register(ino.0, file, |f| reply.open_backing(f));
        match backing {
            Some(id) => reply.opened_passthrough(FileHandle(fh), PASSTHROUGH_OPEN, &id),
            None => reply.opened(FileHandle(fh), self.daemon_open_flags()),
        }
    }

    pub(super) fn create_file(
        &self,
        parent: INodeNo,
        name: &OsStr,
        perm: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (view, path) = match self.shared.new_child(parent, name) {
            Ok(child) => child,
            Err(e) => return reply.error(e),
        };
        let mode = Mode::of(flags);
        self.shared.supersede_if_read(view, &path);
        let ((file, md), created) = match create(&path, mode, flags, perm) {
            Ok((Ok(opened), created)) => (opened, created),
            Ok((Err(what), _)) => {
                self.shared.unobservable(view, &path, what);
                return reply.error(Errno::ENXIO);
            }
            Err(e) => {
                self.shared.unobservable(view, &path, "create failed");
                return reply.error(errno(e));
            }
        };
        let Some(ino) = self.shared.inodes.lock().remember(view, &path, Kind::File) else {
            return reply.error(Errno::ESTALE);
        };
        self.record_open(view, &path, mode, created, &md);
        let ttl = self.shared.ttl;
        let attr = attr::file_attr(ino, &md);
        let (fh, backing) = self.register(ino, file, |f| reply.open_backing(f));
        let fh = FileHandle(fh);
        match backing {
            Some(id) => {
                reply.created_passthrough(&ttl, &attr, Generation(0), fh, PASSTHROUGH_OPEN, &id)
            }
            None => reply.created(&ttl, &attr, Generation(0), fh, self.daemon_open_flags()),
        }
    }

    fn record_open(&self, view: u64, path: &Path, mode: Mode, created: bool, md: &Metadata) {
        let stamp = attr::stamp(md);
        let access = Access::Open {
            path: path.to_path_buf(),
            read: mode.read,
            write: mode.write,
            truncate: mode.truncate,
            append: mode.append,
            created,
            stamp,
        };
        self.shared.record(view, access);
    }

    fn daemon_open_flags(&self) -> FopenFlags {
        if self.shared.keep_cache() {
            CACHED_OPEN
        } else {
            FopenFlags::FOPEN_NOFLUSH
        }
    }

    /// Keeps `file` under a new handle, with the inode's backing id when
    /// passthrough works.
    fn register(
        &self,
        ino: u64,
        file: File,
        open_backing: impl FnOnce(&File) -> io::Result<BackingId>,
    ) -> (u64, Option<Arc<BackingId>>) {
        let backing = if self.shared.passthrough_on() {
            self.backing_for(ino, &file, open_backing)
        } else {
            None
        };
        let open = OpenFile {
            ino,
            file,
            _backing: backing.clone(),
        };
        (self.shared.files.lock().insert(open), backing)
    }

    fn backing_for(
        &self,
        ino: u64,
        file: &File,
        open_backing: impl FnOnce(&File) -> io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        let made = self
            .shared
            .files
            .lock()
            .backing
            .get_or_create(ino, || open_backing(file));
        match made {
            Ok(id) => Some(id),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                // Not allowed at all (no CAP_SYS_ADMIN): every later open
                // would fail the same way.
                log::info!("FUSE passthrough refused ({e}); serving reads from the daemon");
                self.shared.passthrough.store(false, Ordering::Relaxed);
                None
            }
            Err(e) => {
                // This file only (e.g. its fs is stacked too deep).
                log::debug!("no passthrough for inode {ino}: {e}");
                None
            }
        }
    }

    pub(super) fn read_data(&self, fh: FileHandle, offset: u64, size: u32, reply: ReplyData) {
        let Some(open) = self.shared.files.lock().get(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0; size as usize];
        match read_full_at(&open.file, &mut buf, offset) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(e)),
        }
    }

    pub(super) fn write_data(&self, fh: FileHandle, offset: u64, data: &[u8], reply: ReplyWrite) {
        let Some(open) = self.shared.files.lock().get(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        match open.file.write_all_at(data, offset) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => {
                self.unobservable_ino(INodeNo(open.ino), "write failed");
                reply.error(errno(e));
            }
        }
    }

    pub(super) fn release_file(&self, fh: FileHandle) {
        let removed = self.shared.files.lock().remove(fh.0);
        if let Some(open) = removed {
            let ino = open.ino;
            // The last reference closes the backing id (an ioctl): not under
            // the lock.
            drop(open);
            self.shared.files.lock().backing.prune(ino);
        }
    }

    pub(super) fn sync_file(&self, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let Some(open) = self.shared.files.lock().get(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let res = if datasync {
            open.file.sync_data()
        } else {
            open.file.sync_all()
        };
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    pub(super) fn allocate(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let (Ok(node), Some(open)) = (self.shared.node(ino), self.shared.files.lock().get(fh.0))
        else {
            return reply.error(Errno::EBADF);
        };
        let flags = nix::fcntl::FallocateFlags::from_bits_truncate(mode);
        let res = nix::fcntl::fallocate(&open.file, flags, offset as i64, length as i64)
            .map_err(nix_errno)
            .and_then(|()| open.file.metadata().map_err(errno));
        match res {
            Ok(md) => {
                let path = node.path.to_path_buf();
                let size = Some(md.len());
                self.shared
                    .record(node.view, Access::SetAttr { path, size });
                reply.ok();
            }
            Err(e) => {
                self.shared
                    .unobservable(node.view, &node.path, "fallocate failed");
                reply.error(e);
            }
        }
    }
}

type Checked = Result<(File, Metadata), &'static str>;

/// Creates `path`, telling whether it was new: O_EXCL first, then (unless the
/// caller asked for O_EXCL) an open of what appeared meanwhile, which may be
/// a special file.
fn create(path: &Path, mode: Mode, flags: i32, perm: u32) -> io::Result<(Checked, bool)> {
    let trunc = if mode.truncate { libc::O_TRUNC } else { 0 };
    let mut new = mode.options();
    new.mode(perm & 0o7777)
        .custom_flags(NEVER_BLOCK | libc::O_CREAT | libc::O_EXCL | trunc);
    match new.open(path) {
        Ok(file) => {
            exact_permissions(&file, perm)?;
            Ok((checked(file)?, true))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && flags & libc::O_EXCL == 0 => {
            Ok((checked(mode.open(path)?)?, false))
        }
        Err(e) => Err(e),
    }
}

/// The kernel already applied the caller's umask to `perm`; the daemon's own
/// umask must not narrow it further. Bits the real fs added (setgid from the
/// parent directory) stay.
pub(super) fn exact_permissions(file: &File, perm: u32) -> io::Result<()> {
    let have = file.metadata()?.permissions().mode();
    if have & 0o777 == perm & 0o777 {
        return Ok(());
    }
    let want = (have & 0o7000) | (perm & 0o777);
    file.set_permissions(Permissions::from_mode(want))
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
