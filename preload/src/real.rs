//! The libc functions the hooks stand in front of, found once with dlsym(RTLD_NEXT) at load time.

use core::ffi::{c_char, c_int, c_void, CStr};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::sys::{self, Argv, Envp};

pub type PidT = i32;

struct Real {
    name: &'static CStr,
    addr: AtomicUsize,
}

impl Real {
    const fn new(name: &'static CStr) -> Self {
        Real {
            name,
            addr: AtomicUsize::new(0),
        }
    }

    fn resolve(&self) -> usize {
        // SAFETY: dlsym with a valid NUL-terminated name.
        let addr = unsafe { sys::dlsym(sys::RTLD_NEXT, self.name.as_ptr()) } as usize;
        self.addr.store(addr, Ordering::Relaxed);
        addr
    }

    /// The constructor resolved it already, unless a hook runs from an earlier library's constructor.
    fn get(&self) -> Option<usize> {
        match self.addr.load(Ordering::Relaxed) {
            0 => Some(self.resolve()).filter(|&a| a != 0),
            addr => Some(addr),
        }
    }
}

static EXECVE: Real = Real::new(c"execve");
static EXECVPE: Real = Real::new(c"execvpe");
static FEXECVE: Real = Real::new(c"fexecve");
static POSIX_SPAWN: Real = Real::new(c"posix_spawn");
static POSIX_SPAWNP: Real = Real::new(c"posix_spawnp");

/// execv and execvp are not looked up: glibc's own are exactly execve and execvpe with `environ`, and
/// each dlsym costs every process of the build ~2 µs at load.
pub fn resolve_all() {
    for real in [&EXECVE, &EXECVPE, &FEXECVE, &POSIX_SPAWN, &POSIX_SPAWNP] {
        real.resolve();
    }
}

fn missing() -> c_int {
    sys::set_errno(sys::ENOSYS);
    -1
}

type ExecveFn = unsafe extern "C" fn(*const c_char, Argv, Envp) -> c_int;
type FexecveFn = unsafe extern "C" fn(c_int, Argv, Envp) -> c_int;
type SpawnFn = unsafe extern "C" fn(
    *mut PidT,
    *const c_char,
    *const c_void,
    *const c_void,
    Argv,
    Envp,
) -> c_int;

// SAFETY (all below): each address came from dlsym for the function of that exact C signature.

pub unsafe fn execve(path: *const c_char, argv: Argv, envp: Envp) -> c_int {
    EXECVE.get().map_or_else(missing, |a| {
        core::mem::transmute::<usize, ExecveFn>(a)(path, argv, envp)
    })
}

pub unsafe fn execvpe(file: *const c_char, argv: Argv, envp: Envp) -> c_int {
    EXECVPE.get().map_or_else(missing, |a| {
        core::mem::transmute::<usize, ExecveFn>(a)(file, argv, envp)
    })
}

pub unsafe fn fexecve(fd: c_int, argv: Argv, envp: Envp) -> c_int {
    FEXECVE.get().map_or_else(missing, |a| {
        core::mem::transmute::<usize, FexecveFn>(a)(fd, argv, envp)
    })
}

/// posix_spawn reports errors by return value, not errno.
pub unsafe fn posix_spawn(
    pid: *mut PidT,
    path: *const c_char,
    actions: *const c_void,
    attr: *const c_void,
    argv: Argv,
    envp: Envp,
) -> c_int {
    match POSIX_SPAWN.get() {
        Some(a) => core::mem::transmute::<usize, SpawnFn>(a)(pid, path, actions, attr, argv, envp),
        None => sys::ENOSYS,
    }
}

pub unsafe fn posix_spawnp(
    pid: *mut PidT,
    file: *const c_char,
    actions: *const c_void,
    attr: *const c_void,
    argv: Argv,
    envp: Envp,
) -> c_int {
    match POSIX_SPAWNP.get() {
        Some(a) => core::mem::transmute::<usize, SpawnFn>(a)(pid, file, actions, attr, argv, envp),
        None => sys::ENOSYS,
    }
}
