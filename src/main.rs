//! The `cachefs` binary users and builds start: compile mode when the shim
//! diverted a compiler exec to it or when called as a compiler wrapper
//! (`cachefs gcc -c x.c`, `RUSTC_WRAPPER=cachefs`,
//! `CMAKE_C_COMPILER_LAUNCHER=cachefs`); anything else is the command line,
//! which lives in `cachefs-cli` beside it. Every compile of a build starts
//! this binary, so it links the client only: on this project's VM each page
//! the loader maps costs a fault of ~10 µs (DESIGN.md, "Hit path").
//!
//! No `fn main`: std's start-up (a stack guard read from /proc/self/maps and
//! a signal stack mapped for overflow reports; 18 syscalls) is skipped, a
//! hit 0.1–0.17 ms faster (DESIGN.md, "Hit path"). Arguments and the
//! environment still reach std (glibc hands them to its init array). What
//! of that start-up matters here is done below as std does it.
// Under `cargo test` the test harness brings its own `main`.
#![cfg_attr(not(test), no_main)]
#![cfg_attr(test, allow(dead_code))]

use std::os::unix::process::CommandExt;

#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    keep_stdio_open();
    // SAFETY: no other thread exists yet. Writes to a closed pipe fail with
    // EPIPE instead of killing the client; a compiler exec'd by std's
    // `Command` gets SIGPIPE back at its default.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // A panic unwinding out of this extern "C" function would abort; std's
    // start-up prints it and exits 101, and so does this.
    let _ = std::panic::catch_unwind(|| -> () { start() });
    101
}

/// A closed stdin, stdout or stderr gets /dev/null, as std's start-up does:
/// the agent's socket must not become fd 1 or 2, where replayed output
/// would be written into it (seen with `strace` on a hit run `2>&-`: the
/// warning went into the socket).
fn keep_stdio_open() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: three valid pollfd structs; open() of a constant C string.
    unsafe {
        if libc::poll(fds.as_mut_ptr(), 3, 0) == -1 {
            return;
        }
        for p in fds {
            if p.revents & libc::POLLNVAL != 0 {
                // The lowest free descriptor: the one found closed.
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
}

fn start() -> ! {
    if let Some(compiler) = cachefs::client::is_compile_mode() {
        cachefs::client::run(cachefs::client::Call::from_shim(compiler));
    }
    if let Some(call) = cachefs::client::Call::from_wrapper_args() {
        cachefs::client::run(call);
    }
    let cli = match cachefs::client::cli_binary() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("cachefs: {e}");
            std::process::exit(2);
        }
    };
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "cachefs".into());
    let err = std::process::Command::new(&cli)
        .arg0(argv0)
        .args(args)
        .exec();
    eprintln!(
        "cachefs: cannot run {}: {err}; reinstall with scripts/install.sh",
        cli.display()
    );
    std::process::exit(2);
}
