//! The decision every hooked exec goes through: pass through, re-inject the environment, or divert to
//! the client. The common case (not a compiler, nothing scrubbed) touches no buffer and makes no syscall.

use core::ffi::c_char;
use core::ptr;

use crate::env::{self, EnvBuf, MAX_ENV};
use crate::env_reads;
use crate::resolve::{self, CompilerEntry, Target};
use crate::state::{self, Captured};
use crate::sys::{self, Envp};

/// How to carry out the exec.
pub struct Outcome {
    /// Run the client instead of the target.
    pub client: Option<*const c_char>,
    /// The environment to give the new program.
    pub envp: Envp,
}

impl Outcome {
    fn unchanged(envp: Envp) -> Self {
        Outcome { client: None, envp }
    }
}

/// Decides for `target` started with `envp`, and runs `exec` with the outcome while the buffers it
/// points into are still alive (they live in this call's frames, as nothing may be allocated).
///
/// # Safety
/// `target`'s strings and `envp` are valid, as for the hooked libc function.
pub unsafe fn with_outcome<R>(target: Target, envp: Envp, exec: impl FnOnce(&Outcome) -> R) -> R {
    let Some(cap) = state::captured() else {
        return exec(&Outcome::unchanged(envp));
    };
    if env_reads::in_view() {
        check_exec(target, envp, cap);
    }
    let scan = env::scan(envp, cap);
    let missing = scan.missing(cap);
    let wants = cap.may_divert() && !scan.in_compile(cap) && target.may_be_cached_program();
    if scan.count > MAX_ENV || (!wants && missing == 0) {
        return exec(&Outcome::unchanged(envp));
    }
    rebuild(target, envp, cap, missing, wants, exec)
}

/// The slow path, kept out of line so that the common path's frame stays small.
#[inline(never)]
unsafe fn rebuild<R>(
    target: Target,
    envp: Envp,
    cap: &Captured,
    missing: u32,
    wants: bool,
    exec: impl FnOnce(&Outcome) -> R,
) -> R {
    let mut compiler = CompilerEntry::new();
    let client = if wants {
        divert_to(target, cap, &mut compiler)
    } else {
        None
    };
    if client.is_none() && missing == 0 {
        return exec(&Outcome::unchanged(envp));
    }
    let entry = if client.is_some() {
        compiler.entry()
    } else {
        ptr::null()
    };
    let mut buf = EnvBuf::new();
    match env::build(&mut buf, envp, cap, missing, entry) {
        Some(new_env) => exec(&Outcome {
            client,
            envp: new_env,
        }),
        None => exec(&Outcome::unchanged(envp)),
    }
}

/// In an observed compile: says so when the program about to start will read its environment unseen
/// (see `env_reads`). Costs an open and two reads per exec, in compiles only.
#[inline(never)]
unsafe fn check_exec(target: Target, envp: Envp, cap: &Captured) {
    let saved = sys::errno();
    let mut file = CompilerEntry::new();
    let path_env = env::lookup(sys::environ_now(), b"PATH=");
    let path = if resolve::locate(target, path_env, &mut file) {
        file.path_ptr()
    } else {
        ptr::null()
    };
    env_reads::check_exec(path, envp, cap.preload());
    sys::set_errno(saved);
}

/// The client to run instead, when `target` resolves to an executable compiler. The probing syscalls
/// must not leave errno changed for a caller that then succeeds.
unsafe fn divert_to(
    target: Target,
    cap: &Captured,
    compiler: &mut CompilerEntry,
) -> Option<*const c_char> {
    let saved = sys::errno();
    // execvp and friends search the caller's PATH, whatever environment they pass on.
    let path_env = env::lookup(sys::environ_now(), b"PATH=");
    let found = resolve::resolve(target, path_env, compiler);
    sys::set_errno(saved);
    if found {
        cap.client_path()
    } else {
        None
    }
}
