//! FIFOs, sockets and device nodes ("special files") under a view.
//!
//! The kernel never asks a FUSE daemon to open such a node: it makes its own
//! pipe (or socket lookup, or device open) on the FUSE inode. A FIFO reached
//! through a view is therefore a different pipe from the real one, and a
//! reader inside and a writer outside never meet: the compile hangs. So the
//! mirror shows every special file as an empty regular file (its open then
//! reaches the daemon, which refuses it with ENXIO without touching the real
//! node) and records the access as [`Access::Unobservable`] with one of the
//! reasons below. The caller must not trust such a view's result at all: it
//! runs the compile again outside any view ([`Record::special_file`]).
//!
//! One exception: the jobserver FIFO a build names in the environment
//! (`--jobserver-auth=fifo:PATH`) is plumbing, not an input. The client
//! binds the real FIFO over its path inside the view ([`FifoBinds`]), and
//! the mirror leaves its lookup out of the record
//! ([`crate::Mirror::open_view_with_plumbing`]).

use std::ffi::{CStr, CString, OsStr};
use std::fs::FileType;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use crate::record::{Access, Record};

const FIFO: &str = "reached a FIFO";
const SOCKET: &str = "reached a Unix socket";
const CHAR_DEVICE: &str = "reached a character device";
const BLOCK_DEVICE: &str = "reached a block device";
/// A node found special at lookup, gone or changed by the time of its open.
pub(crate) const SPECIAL: &str = "reached a special file";

/// What a view did when it reached a special file of this type, or `None`
/// for files, directories and symlinks.
pub(crate) fn reached(ft: FileType) -> Option<&'static str> {
    if ft.is_fifo() {
        Some(FIFO)
    } else if ft.is_socket() {
        Some(SOCKET)
    } else if ft.is_char_device() {
        Some(CHAR_DEVICE)
    } else if ft.is_block_device() {
        Some(BLOCK_DEVICE)
    } else {
        None
    }
}

/// The same for a `mode_t` (mknod).
pub(crate) fn reached_mode(mode: u32) -> Option<&'static str> {
    match mode & libc::S_IFMT {
        libc::S_IFIFO => Some(FIFO),
        libc::S_IFSOCK => Some(SOCKET),
        libc::S_IFCHR => Some(CHAR_DEVICE),
        libc::S_IFBLK => Some(BLOCK_DEVICE),
        _ => None,
    }
}

fn is_special_reason(what: &str) -> bool {
    [FIFO, SOCKET, CHAR_DEVICE, BLOCK_DEVICE, SPECIAL].contains(&what)
}

impl Record {
    /// The first special file the view reached, as "reached a FIFO: PATH".
    /// What the compile did with the mirror's stand-in (an ENXIO, a
    /// regular-looking empty file) is not what it does outside, so its
    /// result must be thrown away and the compile run again outside any
    /// view, uncached.
    pub fn special_file(&self) -> Option<String> {
        self.accesses.iter().find_map(|a| match a {
            Access::Unobservable { path, what } if is_special_reason(what) => {
                Some(format!("{what}: {}", path.display()))
            }
            _ => None,
        })
    }
}

/// The jobserver FIFOs named in an environment: GNU make ≥ 4.4 passes
/// `--jobserver-auth=fifo:PATH` in `MAKEFLAGS`, cargo in `CARGO_MAKEFLAGS`;
/// GCC's `-flto=jobserver` and the `jobserver` crate (cargo, rustc) open
/// PATH by name. Absolute paths only (make always writes one).
pub fn jobserver_fifos<'a>(env: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<PathBuf> {
    const VARS: [&[u8]; 3] = [b"MAKEFLAGS", b"CARGO_MAKEFLAGS", b"MFLAGS"];
    const AUTH: &[u8] = b"--jobserver-auth=fifo:";
    let mut paths = Vec::new();
    for (_, value) in env.into_iter().filter(|(k, _)| VARS.contains(k)) {
        for word in value.split(|b| b.is_ascii_whitespace()) {
            let Some(path) = word.strip_prefix(AUTH) else {
                continue;
            };
            let path = PathBuf::from(OsStr::from_bytes(path));
            if path.is_absolute() && !paths.contains(&path) {
                paths.push(path);
            }
        }
    }
    paths
}

/// The build's jobserver FIFOs, to be bound over their own paths inside a
/// view so that the compile reaches the build's jobserver and not the
/// mirror's stand-in. Prepared before the fork; the forked child opens them
/// ([`FifoBinds::open`]) after its `unshare` and before the view's binds
/// (a file opened before the `unshare` belongs to the old mount namespace,
/// and mount(2) refuses it as a source with EINVAL), and binds them
/// ([`OpenFifos::bind`]) after the view's binds.
#[derive(Debug, Default)]
pub struct FifoBinds {
    targets: Vec<CString>,
}

/// At most this many FIFOs are bound (the child cannot allocate).
const MAX_FIFOS: usize = 8;

/// The FIFOs the child opened (`O_PATH`), on its stack.
pub struct OpenFifos {
    fds: [i32; MAX_FIFOS],
    n: usize,
}

impl FifoBinds {
    /// The paths that are FIFOs now; others are left alone (a path that is
    /// gone, or not a FIFO, is the mirror's business like any other).
    pub fn new(paths: &[PathBuf]) -> FifoBinds {
        let targets = paths
            .iter()
            .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_fifo()))
            .filter_map(|p| CString::new(p.as_os_str().as_bytes()).ok())
            .take(MAX_FIFOS)
            .collect();
        FifoBinds { targets }
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// In the forked child, after `unshare` and before the view's binds.
    /// `O_PATH` never blocks on a FIFO and never meets a writer or a reader:
    /// nobody outside can tell. A path that is no longer a FIFO is skipped.
    /// Async-signal-safe (no allocation).
    pub fn open(&self) -> OpenFifos {
        let mut open = OpenFifos {
            fds: [-1; MAX_FIFOS],
            n: 0,
        };
        for (fd, target) in open.fds.iter_mut().zip(&self.targets) {
            *fd = open_fifo(target);
        }
        open.n = self.targets.len();
        open
    }
}

impl OpenFifos {
    /// In the forked child, after the view's binds: binds each real FIFO
    /// over its path. The target's lookup goes through the mirror, which
    /// leaves it out of the record when the view was opened with these
    /// paths as plumbing. Async-signal-safe (no allocation).
    pub fn bind(&self, binds: &FifoBinds) -> io::Result<()> {
        for (&fd, target) in self.fds[..self.n].iter().zip(&binds.targets) {
            if fd < 0 {
                continue;
            }
            let mut buf = [0u8; 32];
            let source = proc_fd_path(fd, &mut buf);
            // SAFETY: both are NUL-terminated; `fd` is ours.
            let ret = unsafe {
                let ret = libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                );
                libc::close(fd);
                ret
            };
            if ret < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// An `O_PATH` fd of the FIFO at `path`, or -1.
fn open_fifo(path: &CString) -> i32 {
    // SAFETY: plain syscalls on a NUL-terminated path and our own fd.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return -1;
        }
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) < 0 || st.st_mode & libc::S_IFMT != libc::S_IFIFO {
            libc::close(fd);
            return -1;
        }
        fd
    }
}

/// "/proc/self/fd/N\0" in a caller-provided buffer (no allocation: a child
/// between fork and exec calls it, as cachefs's view entry does).
pub fn proc_fd_path(fd: i32, buf: &mut [u8; 32]) -> &CStr {
    let prefix = b"/proc/self/fd/";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let mut n = fd.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[prefix.len() + i] = digits[len - 1 - i];
    }
    buf[prefix.len() + len] = 0;
    CStr::from_bytes_until_nul(&buf[..]).expect("NUL written above")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobserver_fifos_come_from_the_make_variables_only() {
        let env: Vec<(&[u8], &[u8])> = vec![
            (
                b"MAKEFLAGS",
                b"-j4 --jobserver-auth=fifo:/tmp/GMfifo1 -- X=1",
            ),
            (
                b"CARGO_MAKEFLAGS",
                b"-j --jobserver-fds=3,4 --jobserver-auth=3,4",
            ),
            (b"MFLAGS", b"--jobserver-auth=fifo:/tmp/GMfifo1"),
            (b"OTHER", b"--jobserver-auth=fifo:/tmp/other"),
            (b"MAKEFLAGS", b"--jobserver-auth=fifo:relative"),
        ];
        assert_eq!(jobserver_fifos(env), vec![PathBuf::from("/tmp/GMfifo1")]);
    }

    #[test]
    fn only_special_reasons_name_a_special_file() {
        let mut record = Record::default();
        record.accesses.push(Access::Unobservable {
            path: "/a".into(),
            what: "open failed",
        });
        assert_eq!(record.special_file(), None);
        record.accesses.push(Access::Unobservable {
            path: "/p".into(),
            what: reached_mode(libc::S_IFIFO).unwrap(),
        });
        assert_eq!(record.special_file().unwrap(), "reached a FIFO: /p");
    }

    #[test]
    fn fifos_are_opened_without_blocking_and_other_files_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let file = dir.path().join("r");
        std::fs::write(&file, "x").unwrap();
        let binds = FifoBinds::new(&[fifo, file, dir.path().join("gone")]);
        assert_eq!(binds.targets.len(), 1);
        let open = binds.open();
        assert_eq!(open.n, 1);
        assert!(open.fds[0] >= 0);
        unsafe { libc::close(open.fds[0]) };
    }

    #[test]
    fn proc_fd_paths_are_written_in_place() {
        let mut buf = [0u8; 32];
        assert_eq!(
            proc_fd_path(1234, &mut buf).to_bytes(),
            b"/proc/self/fd/1234"
        );
        assert_eq!(proc_fd_path(0, &mut buf).to_bytes(), b"/proc/self/fd/0");
    }
}
