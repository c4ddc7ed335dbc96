//! The few libc declarations the shim needs, declared by hand: the shim is built by a bare rustc call
//! (see build.rs) that has no access to the `libc` crate.

use core::ffi::{c_char, c_int, c_uint, c_void};

pub type Envp = *const *const c_char;
pub type Argv = *const *const c_char;

pub const RTLD_NEXT: *mut c_void = -1isize as *mut c_void;
pub const AT_FDCWD: c_int = -100;
pub const X_OK: c_int = 1;
pub const F_OK: c_int = 0;
pub const O_RDONLY: c_int = 0;
pub const O_CLOEXEC: c_int = 0o2000000;
pub const AT_SECURE: usize = 23;
pub const ENOSYS: c_int = 38;
pub const STATX_TYPE: c_uint = 1;
pub const S_IFMT: u16 = 0o170000;
pub const S_IFREG: u16 = 0o100000;
pub const AT_EXECFN: usize = 31;

/// `struct statx` is the same on every Linux architecture, unlike `struct stat`; only `stx_mode` is read.
#[repr(C, align(8))]
pub struct Statx(pub [u8; 256]);

impl Statx {
    pub fn mode(&self) -> u16 {
        u16::from_ne_bytes([self.0[28], self.0[29]])
    }
}

#[link(name = "c")]
extern "C" {
    pub fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    pub fn access(path: *const c_char, mode: c_int) -> c_int;
    pub fn open(path: *const c_char, flags: c_int, ...) -> c_int;
    pub fn pread(fd: c_int, buf: *mut u8, count: usize, offset: i64) -> isize;
    pub fn close(fd: c_int) -> c_int;
    pub fn readlink(path: *const c_char, buf: *mut c_char, size: usize) -> isize;
    pub fn statx(
        dirfd: c_int,
        path: *const c_char,
        flags: c_int,
        mask: c_uint,
        buf: *mut Statx,
    ) -> c_int;
    pub fn getauxval(kind: usize) -> usize;
    pub fn __errno_location() -> *mut c_int;
    #[cfg(cachefs_shim)]
    pub fn abort() -> !;
    pub static environ: Envp;
}

/// The caller's environment as of now (programs may have called setenv since load).
pub fn environ_now() -> Envp {
    // SAFETY: reading a pointer-sized global that libc keeps valid.
    unsafe { core::ptr::addr_of!(environ).read() }
}

pub fn errno() -> c_int {
    // SAFETY: glibc's thread-local errno slot is always valid.
    unsafe { *__errno_location() }
}

pub fn set_errno(value: c_int) {
    // SAFETY: as in errno().
    unsafe { *__errno_location() = value }
}
