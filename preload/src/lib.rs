//! The LD_PRELOAD shim of cachefs, loaded into every process of a build started by `cachefs run`.
//!
//! When a process starts a program that is a known compiler (by the basename of the path it resolves
//! to: gcc, g++, cc, c++, clang, clang++, rustc, nvcc, with an optional target prefix and version
//! suffix) and the new program is not inside a compile, the shim runs the cachefs client instead,
//! with argv unchanged (argv[0] included) and the compiler's path in `CACHEFS_COMPILER`. It never runs
//! or waits for anything itself. Hooked: execve execv execvp execvpe execl execlp execle fexecve
//! posix_spawn posix_spawnp.
//!
//! # Environment contract
//! Read once, when the shim loads:
//! - `CACHEFS_CLIENT`: absolute path of the client. Unset, empty, relative or not executable: the
//!   shim never diverts. A process that was itself exec'd by exactly this path (the client) never
//!   diverts either, so a client that execs the real compiler cannot loop.
//! - `LD_PRELOAD` and every `CACHEFS_*` variable except `CACHEFS_COMPILER` (at most 16 entries of
//!   at most 4095 bytes each, first occurrence wins): re-injected into any exec whose environment
//!   lacks that name (`env -i`, scrubbing build tools). A name that is present keeps its value: a
//!   program that sets its own `LD_PRELOAD` is left alone.
//!
//! Read at each exec, in the environment the new program would get (after re-injection):
//! - `CACHEFS_IN_COMPILE=1` (exactly "1"): not diverted, the exec is a step of a compile. The client
//!   sets it for the compiler it runs.
//!
//! Set when diverting: `CACHEFS_COMPILER=<path>`, the path the exec would have run: as given for
//! execve/execv/execl/execle/posix_spawn (relative stays relative: the cwd is unchanged), the first
//! executable regular file in the caller's `PATH` (default `/bin:/usr/bin`) for the `p` variants
//! given a bare name, and the file behind the descriptor (`/proc/self/fd/N`) for fexecve. An existing
//! `CACHEFS_COMPILER` entry is replaced.
//!
//! Not diverted, call passed through unchanged: a target that does not exist or is not an executable
//! regular file (the real call reports ENOENT/EACCES as usual), an environment of more than 2048
//! entries, a path longer than 4095 bytes.
//!
//! # Build
//! This rlib is not the shim: build.rs compiles these same sources as a `no_std`, `panic=abort`
//! cdylib with `--cfg cachefs_shim` (see build.rs for why). The rlib says where that library is and
//! carries its bytes, and runs the unit tests of the shim's pure parts.
#![cfg_attr(not(test), no_std)]
// Outside the shim build, only the tests use the shim's internals.
#![cfg_attr(not(any(cachefs_shim, clippy)), allow(dead_code))]

mod compiler_name;
mod cstr;
mod divert;
mod env;
mod env_reads;
mod resolve;
mod state;
mod sys;

#[cfg(any(cachefs_shim, clippy))]
mod hooks;
#[cfg(any(cachefs_shim, clippy))]
mod real;

#[cfg(test)]
mod test_util;

pub use compiler_name::{family_of_name, is_archiver_name, is_cached_program_name, Family};

/// Where the build put `libcachefs_preload.so` (an absolute path on the build machine; a copy also
/// sits beside the binaries in Cargo's profile directory, e.g. `target/debug/`).
#[cfg(not(cachefs_shim))]
pub const SHIM_PATH: &str = env!("CACHEFS_PRELOAD_SO");

/// The shim itself, for a binary that installs it where it runs (`cargo install` ships binaries only).
#[cfg(not(cachefs_shim))]
pub static SHIM_SO: &[u8] = include_bytes!(env!("CACHEFS_PRELOAD_SO"));

#[cfg(cachefs_shim)]
#[panic_handler]
fn on_panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: abort is always safe to call; there is nothing to unwind to in a foreign process.
    unsafe { sys::abort() }
}

// The precompiled `core` refers to `rust_eh_personality` even with `panic=abort`; csrc/execl.c
// defines it, because a symbol defined in Rust would be exported and, preloaded, would replace the
// personality of every Rust program that links std dynamically (rustc itself): its panics, which
// is how rustc exits on a compile error, would then abort.
