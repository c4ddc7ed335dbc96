//! The exported hooks and the load-time constructor. Compiled into the shim only (and for clippy):
//! anywhere else, symbols named execve would take over the host program's own exec calls.
//!
//! glibc calls none of these through the PLT from inside itself, so each one is hooked on its own;
//! every hook only picks the target and environment, then calls the real function once.

use core::ffi::{c_char, c_int, c_void};

use crate::divert::with_outcome;
use crate::env_reads;
use crate::real::{self, PidT};
use crate::resolve::Target;
use crate::state;
use crate::sys::{self, environ_now, Argv, Envp};

/// glibc runs .init_array entries with (argc, argv, envp) before main, single-threaded.
#[used]
#[link_section = ".init_array"]
static INIT: unsafe extern "C" fn(c_int, Argv, Envp) = init;

unsafe extern "C" fn init(_argc: c_int, _argv: Argv, envp: Envp) {
    real::resolve_all();
    state::capture(envp);
    if env_reads::in_view() {
        // The shim is here: what this compile reads of its environment is observed.
        env_reads::report(b"");
    }
}

/// Every lookup of a variable, observed in a compile (see `env_reads`).
#[no_mangle]
pub unsafe extern "C" fn getenv(name: *const c_char) -> *mut c_char {
    env_reads::getenv(name)
}

/// getenv, except for a set-user-ID or otherwise secure program, which gets nothing (as glibc's).
#[no_mangle]
pub unsafe extern "C" fn secure_getenv(name: *const c_char) -> *mut c_char {
    if sys::getauxval(sys::AT_SECURE) != 0 {
        return core::ptr::null_mut();
    }
    env_reads::getenv(name)
}

// The `cachefs_shim_*` entry points are also what csrc/execl.c calls, so that execl & co. do not go
// back through the dynamic linker (which might bind them to another preloaded library's execv).

#[no_mangle]
pub unsafe extern "C" fn cachefs_shim_execve(path: *const c_char, argv: Argv, envp: Envp) -> c_int {
    with_outcome(Target::Path(path), envp, |o| {
        real::execve(o.client.unwrap_or(path), argv, o.envp)
    })
}

#[no_mangle]
pub unsafe extern "C" fn cachefs_shim_execv(path: *const c_char, argv: Argv) -> c_int {
    with_outcome(Target::Path(path), environ_now(), |o| {
        real::execve(o.client.unwrap_or(path), argv, o.envp)
    })
}

#[no_mangle]
pub unsafe extern "C" fn cachefs_shim_execvp(file: *const c_char, argv: Argv) -> c_int {
    with_outcome(Target::Search(file), environ_now(), |o| match o.client {
        Some(client) => real::execve(client, argv, o.envp),
        None => real::execvpe(file, argv, o.envp),
    })
}

#[no_mangle]
pub unsafe extern "C" fn execve(path: *const c_char, argv: Argv, envp: Envp) -> c_int {
    cachefs_shim_execve(path, argv, envp)
}

#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: Argv) -> c_int {
    cachefs_shim_execv(path, argv)
}

#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: Argv) -> c_int {
    cachefs_shim_execvp(file, argv)
}

#[no_mangle]
pub unsafe extern "C" fn execvpe(file: *const c_char, argv: Argv, envp: Envp) -> c_int {
    with_outcome(Target::Search(file), envp, |o| match o.client {
        Some(client) => real::execve(client, argv, o.envp),
        None => real::execvpe(file, argv, o.envp),
    })
}

/// A diverted fexecve runs the client by path: the client reaches the compiler by CACHEFS_COMPILER.
#[no_mangle]
pub unsafe extern "C" fn fexecve(fd: c_int, argv: Argv, envp: Envp) -> c_int {
    with_outcome(Target::Fd(fd), envp, |o| match o.client {
        Some(client) => real::execve(client, argv, o.envp),
        None => real::fexecve(fd, argv, o.envp),
    })
}

#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut PidT,
    path: *const c_char,
    actions: *const c_void,
    attr: *const c_void,
    argv: Argv,
    envp: Envp,
) -> c_int {
    with_outcome(Target::Path(path), envp, |o| {
        real::posix_spawn(pid, o.client.unwrap_or(path), actions, attr, argv, o.envp)
    })
}

#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut PidT,
    file: *const c_char,
    actions: *const c_void,
    attr: *const c_void,
    argv: Argv,
    envp: Envp,
) -> c_int {
    with_outcome(Target::Search(file), envp, |o| match o.client {
        Some(client) => real::posix_spawn(pid, client, actions, attr, argv, o.envp),
        None => real::posix_spawnp(pid, file, actions, attr, argv, o.envp),
    })
}

extern "C" {
    fn cachefs_c_execl();
    fn cachefs_c_execlp();
    fn cachefs_c_execle();
}

/// Exports C-variadic `$name` as a bare tail jump to its C implementation: every register and stack
/// argument reaches the C side untouched. (A Rust cdylib does not export symbols defined in C.)
macro_rules! variadic_trampoline {
    ($name:ident => $target:ident) => {
        #[unsafe(naked)]
        #[no_mangle]
        pub extern "C" fn $name() {
            #[cfg(target_arch = "x86_64")]
            core::arch::naked_asm!("endbr64", "jmp {}", sym $target);
            #[cfg(target_arch = "aarch64")]
            // `hint #34` is `bti c`, spelled so that any assembler accepts it.
            core::arch::naked_asm!("hint #34", "b {}", sym $target);
        }
    };
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the execl* trampolines exist for x86_64 and aarch64 only");

variadic_trampoline!(execl => cachefs_c_execl);
variadic_trampoline!(execlp => cachefs_c_execlp);
variadic_trampoline!(execle => cachefs_c_execle);
