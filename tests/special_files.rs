//! FIFOs and Unix sockets reached by a compile behave inside its view as
//! they do outside (DESIGN.md, "Special files in a view"): a compile that
//! reaches one runs again outside the view, uncached, with its reason in
//! `cachefs stats`; the build's jobserver FIFO is bound into the view and
//! the compile stays cacheable. Every run has a time limit, so a compile
//! waiting on the mirror's stand-in for a FIFO fails the test instead of
//! hanging the suite.

mod common;
use common::users::{ensure_user, give_to, FuseOpenToAll, USER};
use common::*;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Far above what any of these compiles takes; a hang ends here.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs `cmd` in its own process group; past `LIMIT` the whole group (the
/// compile in its view, a FIFO's writer) is killed and the test fails.
fn output_within_limit(mut cmd: Command, what: &str) -> Output {
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > LIMIT {
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            panic!("{what} still running after {LIMIT:?}: hung on a special file");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Anything the group left behind (a writer nobody read) goes too.
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    child.wait_with_output().unwrap()
}

fn run_within_limit(sb: &Sandbox, script: &str) -> Output {
    let mut cmd = sb.cachefs();
    cmd.args(["run", "sh", "-c", script]);
    output_within_limit(cmd, &format!("cachefs run sh -c {script:?}"))
}

fn plain_within_limit(sb: &Sandbox, script: &str) -> Output {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]).current_dir(&sb.project);
    output_within_limit(cmd, &format!("sh -c {script:?}"))
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        stderr(out)
    );
}

/// Byte-identical, without printing the bytes.
fn assert_same_file(sb: &Sandbox, got: &str, want: &str) {
    let (a, b) = (sb.read(got), sb.read(want));
    assert!(
        a == b,
        "{got} ({} bytes) differs from {want} ({} bytes)",
        a.len(),
        b.len()
    );
}

/// What the compiler printed: without `cachefs run`'s summary line.
fn compiler_stderr(out: &Output) -> String {
    let lines = stderr(out);
    let lines = lines.lines().filter(|l| !l.starts_with("cachefs: "));
    lines.map(|l| format!("{l}\n")).collect()
}

fn uncacheable_reasons(sb: &Sandbox) -> serde_json::Value {
    sb.stats()["uncacheable_reasons"].clone()
}

const SOURCE: &str = "int answer(void) { return 42; }\n";

/// The issue's case: `gcc -x c -c src.fifo` with a writer in the background.
/// It hung before (the compile's reader waited on the mirror's own pipe, the
/// writer on the real one).
#[test]
fn gcc_reading_a_fifo_finishes_like_plain_gcc_and_is_not_cached() {
    let sb = Sandbox::new();
    sb.write("src.c", SOURCE);
    sb.sh("mkfifo src.fifo");
    let compile = |out: &str| format!("(cat src.c > src.fifo &); gcc -x c -c src.fifo -o {out}");
    assert_ok(&plain_within_limit(&sb, &compile("plain.o")), "plain gcc");

    let out = run_within_limit(&sb, &compile("x.o"));
    assert_ok(&out, "gcc under cachefs");
    assert_same_file(&sb, "x.o", "plain.o");
    assert!(
        !stderr(&out).contains("compiling without the cache"),
        "a policy, not a failure: no warning\n{}",
        stderr(&out)
    );
    let (hits, misses, uncacheable, errors) = sb.counts();
    assert_eq!((hits, misses, uncacheable, errors), (0, 0, 1, 0));
    assert_eq!(uncacheable_reasons(&sb)["reached a FIFO"], 1);
}

/// rustc under a make >= 4.4 or cargo jobserver given as a FIFO path: the
/// view reaches the build's own FIFO (bound over the mirror's stand-in), the
/// compile is cached (the FIFO is plumbing, not an input), and a later build
/// with another jobserver FIFO hits.
#[test]
fn rustc_with_a_jobserver_fifo_completes_and_is_cached() {
    let sb = Sandbox::new();
    // Enough code that rustc asks the jobserver for tokens.
    let lib: String = (0..40)
        .map(|i| {
            format!(
                "pub fn f{i}(x: u64) -> u64 {{ (0..x).map(|i| i * i % {}).sum() }}\n",
                i + 3
            )
        })
        .collect();
    sb.write("lib.rs", &lib);
    let rustc = "rustc --edition 2021 --crate-type lib -C opt-level=2 -C codegen-units=8";
    // The output's name is in the rlib (its codegen units' names).
    let plain = plain_within_limit(
        &sb,
        &format!("{rustc} lib.rs -o x.rlib && mv x.rlib plain.rlib"),
    );
    assert_ok(&plain, "plain rustc");

    for (round, name) in ["jobserver-a", "jobserver-b"].iter().enumerate() {
        let fifo = sb.root.path().join(name);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Held open for reading and writing, as make holds its own: tokens
        // stay in the FIFO whoever reads them.
        let mut held = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        const TOKENS: usize = 3;
        held.write_all(&[b'+'; TOKENS]).unwrap();
        let reads = Reads::watch(&fifo);
        let mut cmd = sb.cachefs();
        cmd.env(
            "CARGO_MAKEFLAGS",
            format!("-j4 --jobserver-auth=fifo:{}", fifo.display()),
        )
        .args(["run", "sh", "-c", &format!("{rustc} lib.rs -o x.rlib")]);
        let out = output_within_limit(cmd, "rustc under cachefs");
        assert_ok(&out, "rustc under cachefs");
        assert!(
            !stderr(&out).contains("jobserver"),
            "rustc could not use the FIFO: {}",
            stderr(&out)
        );
        assert_same_file(&sb, "x.rlib", "plain.rlib");
        // The second round is a hit: no rustc runs.
        assert!(
            round == 1 || reads.seen(),
            "rustc never read a token from the build's FIFO (but from the mirror's stand-in?)"
        );
        assert_eq!(tokens_left(&mut held), TOKENS, "rustc kept or lost tokens");
        let (hits, misses, uncacheable, errors) = sb.counts();
        assert_eq!(
            (hits, misses, uncacheable, errors),
            (round as u64, 1, 0, 0),
            "round {round}: {}",
            sb.stats()
        );
    }
}

/// Whether anyone read from a FIFO (inotify IN_ACCESS) since `watch`: a
/// reader of the mirror's stand-in is a reader of another pipe, unseen here.
struct Reads(std::os::fd::OwnedFd);

impl Reads {
    fn watch(path: &Path) -> Reads {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_ACCESS) };
        assert!(
            wd >= 0,
            "inotify_add_watch: {}",
            std::io::Error::last_os_error()
        );
        Reads(fd)
    }

    fn seen(&self) -> bool {
        let mut buf = [0u8; 4096];
        let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        n > 0
    }
}

/// Reads what the FIFO holds without waiting for more.
fn tokens_left(fifo: &mut std::fs::File) -> usize {
    use std::os::fd::AsFd;
    let flags = nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fifo.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
    let mut buf = [0u8; 64];
    fifo.read(&mut buf).unwrap_or(0)
}

/// A compiler that asks a server on a Unix socket (as a compile server's
/// client or a license check would) and writes the answer as its object.
const ASKING_COMPILER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main(int argc, char **argv) {
    const char *out = 0;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "-o")) out = argv[i + 1];
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, getenv("ASK_SOCKET"), sizeof a.sun_path - 1);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); return 1; }
    char buf[64];
    ssize_t n = read(s, buf, sizeof buf);
    FILE *f = fopen(out, "w");
    fwrite(buf, 1, n > 0 ? (size_t)n : 0, f);
    return fclose(f) != 0;
}
"#;

/// Answers every connection with "pong"; counts them.
fn serve(listener: UnixListener) -> Arc<AtomicUsize> {
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let _ = conn.write_all(b"pong\n");
        }
    });
    served
}

/// A compile that connects to a Unix socket by path reaches the real server
/// (inside the view the socket is the mirror's node, which refuses the
/// connection): run again outside, its object is what plain gives, and it is
/// not cached. gcc given the socket as its source fails as it does outside.
#[test]
fn a_unix_socket_reached_by_a_compile_behaves_as_outside() {
    let sb = Sandbox::new();
    sb.write("asker.c", ASKING_COMPILER);
    sb.write("in.c", SOURCE);
    std::fs::create_dir_all(sb.path("bin")).unwrap();
    sb.sh("gcc -O1 asker.c -o bin/gcc");
    let socket = sb.path("server.sock");
    let served = serve(UnixListener::bind(&socket).unwrap());

    let mut cmd = sb.cachefs();
    cmd.env("ASK_SOCKET", &socket)
        .args(["run", "sh", "-c", "bin/gcc -c in.c -o in.o"]);
    let out = output_within_limit(cmd, "a compile connecting to a socket");
    assert_ok(&out, "the asking compiler under cachefs");
    assert_eq!(sb.read("in.o"), b"pong\n");
    assert_eq!(
        served.load(Ordering::SeqCst),
        1,
        "the view's try never reached it"
    );
    assert_eq!(uncacheable_reasons(&sb)["reached a Unix socket"], 1);

    let gcc_on_socket =
        |sb: &Sandbox| format!("gcc -x c -c {} -o s.o", sb.path("server.sock").display());
    let plain = plain_within_limit(&sb, &gcc_on_socket(&sb));
    let out = run_within_limit(&sb, &gcc_on_socket(&sb));
    assert_eq!(out.status.code(), plain.status.code(), "{}", stderr(&out));
    assert_eq!(compiler_stderr(&out), stderr(&plain));
    assert!(!Path::new(&sb.path("s.o")).exists());
}

/// As an ordinary user (fusermount3, a user namespace per compile): the FIFO
/// read is run again outside, and a jobserver FIFO is bound into the view
/// (no error) and the compile cached.
#[test]
fn an_ordinary_user_gets_the_same() {
    let uid = ensure_user();
    let _fuse = FuseOpenToAll::new();
    let sb = Sandbox::new();
    sb.write("src.c", SOURCE);
    sb.sh("mkfifo src.fifo jobserver");
    let read_fifo = "(cat src.c > src.fifo &); gcc -x c -c src.fifo -o";
    assert_ok(
        &plain_within_limit(&sb, &format!("{read_fifo} plain.o")),
        "plain gcc",
    );
    give_to(&sb, &uid, &[sb.root.path()]);
    let script = format!(
        "set -e; cd {}; export CACHEFS_DIR={}; C={}; trap '$C stop' EXIT; \
         $C run sh -c '{read_fifo} x.o'; \
         exec 7<>jobserver; printf + >&7; \
         export MAKEFLAGS=\"-j2 --jobserver-auth=fifo:$PWD/jobserver\"; \
         $C run sh -c 'gcc -c src.c -o a.o'; rm a.o; $C run sh -c 'gcc -c src.c -o a.o'; \
         $C stats --json",
        sb.project.display(),
        sb.cache.display(),
        cachefs_bin().display()
    );
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", USER, "--", "sh", "-c", &script]);
    let out = output_within_limit(cmd, "the ordinary user's builds");
    assert_ok(&out, "the ordinary user's builds");
    assert_same_file(&sb, "x.o", "plain.o");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = |k: &str| stats[k].as_u64().unwrap();
    let counts = (n("hits"), n("misses"), n("uncacheable"), n("errors"));
    assert_eq!(counts, (1, 1, 1, 0), "{stats}");
    assert_eq!(stats["uncacheable_reasons"]["reached a FIFO"], 1);
}
