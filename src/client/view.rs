//! Entering an observation view: in the compile's child process, between
//! fork and exec, make a private mount namespace and bind the view's mirror
//! of each top-level directory over the real one, so the compile sees the
//! real paths but every access goes through the agent's FUSE mirror.
//!
//! Everything is prepared before fork: the child only makes syscalls.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub struct ViewEntry {
    sources: Vec<CString>,
    targets: Vec<CString>,
    cwd: CString,
    as_root: bool,
    uid_map: CString,
    gid_map: CString,
    /// The build's jobserver FIFOs, bound over the mirror's stand-ins.
    fifos: cachefs_mirror::FifoBinds,
}

impl ViewEntry {
    pub fn new(view_root: &Path, binds: &[Vec<u8>], cwd: &Path) -> io::Result<ViewEntry> {
        let cstr = |b: &[u8]| CString::new(b).map_err(|_| io::Error::other("NUL byte in a path"));
        let mut sources = Vec::new();
        let mut targets = Vec::new();
        for top in binds {
            let mut src = view_root.as_os_str().as_bytes().to_vec();
            src.push(b'/');
            src.extend_from_slice(top);
            sources.push(cstr(&src)?);
            let mut dst = b"/".to_vec();
            dst.extend_from_slice(top);
            targets.push(cstr(&dst)?);
        }
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        Ok(ViewEntry {
            sources,
            targets,
            cwd: cstr(cwd.as_os_str().as_bytes())?,
            as_root: uid == 0,
            uid_map: cstr(format!("{uid} {uid} 1\n").as_bytes())?,
            gid_map: cstr(format!("{gid} {gid} 1\n").as_bytes())?,
            fifos: cachefs_mirror::FifoBinds::default(),
        })
    }

    /// Binds these real FIFOs over their paths once in the view.
    pub fn with_fifos(self, fifos: cachefs_mirror::FifoBinds) -> ViewEntry {
        ViewEntry { fifos, ..self }
    }

    /// Runs in the forked child. Async-signal-safe: no allocation.
    pub fn enter(&self) -> io::Result<()> {
        self.unshare()?;
        check(unsafe {
            libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        })?;
        // Open every source first: once /root (say) is bound, a source path
        // under /root would resolve through the mirror, where it is hidden.
        let mut fds = [0i32; 128];
        if self.sources.len() > fds.len() {
            return Err(io::Error::other("too many top-level directories"));
        }
        for (fd, src) in fds.iter_mut().zip(&self.sources) {
            *fd = check(unsafe {
                libc::open(
                    src.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            })?;
        }
        // Like the sources, before any bind hides the real ones.
        let fifos = self.fifos.open();
        for (fd, dst) in fds.iter().zip(&self.targets) {
            let mut buf = [0u8; 32];
            let src = cachefs_mirror::proc_fd_path(*fd, &mut buf);
            check(unsafe {
                libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
            })?;
            unsafe { libc::close(*fd) };
        }
        fifos.bind(&self.fifos)?;
        // The old working directory still points at the real tree.
        check(unsafe { libc::chdir(self.cwd.as_ptr()) })?;
        Ok(())
    }

    fn unshare(&self) -> io::Result<()> {
        if self.as_root {
            return check(unsafe { libc::unshare(libc::CLONE_NEWNS) }).map(drop);
        }
        check(unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) })?;
        write_file(c"/proc/self/setgroups", c"deny")?;
        write_file(c"/proc/self/uid_map", &self.uid_map)?;
        write_file(c"/proc/self/gid_map", &self.gid_map)
    }
}

fn check(ret: i32) -> io::Result<i32> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn write_file(path: &std::ffi::CStr, data: &std::ffi::CStr) -> io::Result<()> {
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) })?;
    let bytes = data.to_bytes();
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    unsafe { libc::close(fd) };
    if n != bytes.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
