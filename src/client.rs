//! Compile mode: the shim diverted a compiler exec to us. Ask the agent; on a
//! hit replay the result, on a miss run the compiler inside an observation
//! view and report back, and on any failure run the compiler unchanged.

use crate::compiler::color;
use crate::config::{Config, ENV_COMPILER, ENV_DISABLE, ENV_IN_COMPILE, ENV_RUN_ID};
use crate::protocol::{self, CompileRequest, Exit, Finished, Request, Response};
use crate::view::ViewEntry;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Compiler output beyond this is printed but not cached.
const MAX_CAPTURE: usize = 64 << 20;

pub struct Call {
    pub compiler: PathBuf,
    pub argv: Vec<OsString>,
}

impl Call {
    /// Run with `-fdiagnostics-color=always` when observed (see
    /// `compiler::color`); never when run uncached.
    fn colored(&self) -> bool {
        color::adds_color(self.compiler.as_os_str().as_bytes(), &self.argv)
    }

    /// A call diverted by the shim: argv exactly as the build gave it.
    pub fn from_shim(compiler: OsString) -> Call {
        Call {
            compiler: compiler.into(),
            argv: std::env::args_os().collect(),
        }
    }

    /// `cachefs COMPILER ARGS…`: the first argument names a known compiler
    /// (by name, searched on PATH, or by path). Its argv[0] is the compiler
    /// as named, which is what the build would have run.
    pub fn from_wrapper_args() -> Option<Call> {
        let args: Vec<OsString> = std::env::args_os().skip(1).collect();
        let first = args.first()?;
        let name = Path::new(first).file_name()?;
        if !cachefs_preload::is_cached_program_name(name.as_bytes()) {
            return None;
        }
        let compiler = resolve_program(first)?;
        Some(Call {
            compiler,
            argv: args,
        })
    }
}

/// A program name as execvp would find it.
fn resolve_program(name: &OsString) -> Option<PathBuf> {
    let name = Path::new(name);
    if name.as_os_str().as_bytes().contains(&b'/') {
        return name.is_file().then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs the call and exits with the compiler's status. Sets up logging.
pub fn run(call: Call) -> ! {
    // SAFETY: single-threaded at this point; nothing else reads the environment.
    unsafe { std::env::remove_var(ENV_COMPILER) };
    if crate::config::switch_set(ENV_DISABLE) {
        fall_back(&call, "CACHEFS_DISABLE is set", Cause::Policy, None);
    }
    if crate::config::switch_set(crate::config::ENV_NO_ARCHIVES)
        && crate::compiler::family(call.compiler.as_os_str().as_bytes())
            == crate::compiler::Family::Archiver
    {
        fall_back(&call, "CACHEFS_NO_ARCHIVES is set", Cause::Policy, None);
    }
    let run_id = std::env::var(ENV_RUN_ID).ok();
    let config = Config::from_env();
    crate::logging::init_to(config.as_ref().ok().and_then(|c| c.log.as_deref()));
    let config = match config {
        Ok(c) => c,
        Err(e) => fall_back(
            &call,
            &format!("bad configuration: {e}"),
            Cause::Unreported,
            None,
        ),
    };
    let mut stream = match connect(&config, run_id.is_none()) {
        Ok(s) => s,
        Err(e) => fall_back(
            &call,
            &format!("cannot reach the agent: {e}"),
            Cause::Unreported,
            Some(&config),
        ),
    };
    let request = Request::Compile(compile_request(&call, run_id));
    let asked = Instant::now();
    let response = protocol::write_frame(&mut stream, &request)
        .and_then(|_| protocol::read_frame::<Response, _>(&mut stream));
    log::debug!("agent answered in {:?}", asked.elapsed());
    match response {
        Ok(Response::Hit {
            stdout,
            stderr,
            exit,
        }) => replay(&stdout, &for_terminal(&call, stderr), exit),
        Ok(Response::Miss {
            view_root,
            binds,
            cpus,
            probe,
        }) => {
            let view_root = PathBuf::from(OsString::from_vec(view_root));
            let view = View {
                root: &view_root,
                binds: &binds,
                cpus: &cpus,
                probe: Path::new(std::ffi::OsStr::from_bytes(&probe)),
            };
            run_observed(&call, &mut stream, view, &config)
        }
        Ok(Response::RunPlain { reason, warn }) => {
            let cause = if warn { Cause::Counted } else { Cause::Policy };
            fall_back(&call, &reason, cause, Some(&config))
        }
        Ok(Response::Error { message }) => {
            fall_back(&call, &message, Cause::Unreported, Some(&config))
        }
        Ok(other) => fall_back(
            &call,
            &format!("unexpected agent reply {other:?}"),
            Cause::Unreported,
            Some(&config),
        ),
        Err(e) => fall_back(
            &call,
            &format!("agent failed: {e}"),
            Cause::Unreported,
            Some(&config),
        ),
    }
}

fn compile_request(call: &Call, run_id: Option<String>) -> CompileRequest {
    let cwd = std::env::current_dir().unwrap_or_default();
    CompileRequest {
        compiler: call.compiler.as_os_str().as_bytes().to_vec(),
        argv: call.argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        cwd: cwd.into_os_string().into_vec(),
        env: std::env::vars_os()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect(),
        run_id,
    }
}

/// Connects to the agent; in wrapper mode (no `cachefs run` around us) an
/// agent that is not running is started. Under `cachefs run` the agent was
/// started by `run`, and one that died is not restarted mid-build.
fn connect(config: &Config, start_if_missing: bool) -> std::io::Result<UnixStream> {
    match UnixStream::connect(config.socket_path()) {
        Ok(s) => Ok(s),
        Err(e) if !start_if_missing => Err(e),
        Err(_) => {
            crate::cli::lifecycle::start_agent(config).map_err(std::io::Error::other)?;
            UnixStream::connect(config.socket_path())
        }
    }
}

fn replay(stdout: &[u8], stderr: &[u8], exit: Exit) -> ! {
    let _ = std::io::stdout().write_all(stdout);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(stderr);
    exit_like(exit)
}

/// Stored diagnostics are colored when the call ran colored: printed plain
/// unless the compiler would have colored them here itself.
fn for_terminal(call: &Call, stderr: Vec<u8>) -> Vec<u8> {
    // Most hits print nothing: no terminal check for them.
    if stderr.is_empty() || !call.colored() {
        return stderr;
    }
    let term = std::env::var_os("TERM");
    let tty = nix::unistd::isatty(std::io::stderr()).unwrap_or(false);
    if !color::terminal_wants_color(tty, term.as_deref().map(OsStrExt::as_bytes)) {
        color::strip(&stderr)
    } else {
        stderr
    }
}

fn exit_like(exit: Exit) -> ! {
    match exit {
        Exit::Code(c) => std::process::exit(c),
        Exit::Signal(s) => {
            // SAFETY: restoring the default action and re-raising is the
            // conventional way to report death by signal to our parent.
            unsafe {
                libc::signal(s, libc::SIG_DFL);
                libc::raise(s);
            }
            std::process::exit(128 + s)
        }
    }
}

fn compiler_command(call: &Call, argv: &[OsString]) -> Command {
    let mut cmd = Command::new(&call.compiler);
    if let Some(argv0) = argv.first() {
        cmd.arg0(argv0);
    }
    cmd.args(argv.iter().skip(1));
    // Everything this compile starts (cc1, as, ld, clang -cc1) is part of it.
    cmd.env(ENV_IN_COMPILE, "1");
    cmd
}

/// Runs the compiler unchanged (uncached) by exec'ing it in place, warning
/// once per build when the cause is a failure rather than a policy.
/// Why the compile runs uncached, which decides who says so and who counts it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// Policy (uncacheable): the agent counted it; nothing to warn about.
    Policy,
    /// A failure the agent knows of and counted: warn once.
    Counted,
    /// A failure the agent never heard of: warn once and count it ourselves.
    Unreported,
}

fn fall_back(call: &Call, reason: &str, cause: Cause, config: Option<&Config>) -> ! {
    if cause != Cause::Policy {
        warn_once(reason, config);
    }
    if cause == Cause::Unreported {
        if let Some(c) = config {
            log_fallback(&c.dir, reason);
        }
    }
    log::debug!("running uncached: {reason}");
    let err = compiler_command(call, &call.argv).exec();
    eprintln!(
        "cachefs: cannot run the compiler {}: {err}",
        call.compiler.display()
    );
    std::process::exit(127)
}

/// One warning per build: the first client of a run to fail creates a
/// marker file; the others stay quiet.
fn warn_once(reason: &str, config: Option<&Config>) {
    let marker = match (config, std::env::var(ENV_RUN_ID)) {
        (Some(c), Ok(run)) => Some(c.dir.join(format!("warned-{run}"))),
        _ => None,
    };
    let first = match &marker {
        Some(m) => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m)
            .is_ok(),
        None => true,
    };
    if first {
        eprintln!("cachefs: compiling without the cache: {reason}");
    }
}

/// Counted by `cachefs stats` even when the agent could not be reached.
fn log_fallback(dir: &Path, reason: &str) {
    let line = format!(
        "{}\t{}\n",
        std::env::var(ENV_RUN_ID).unwrap_or_default(),
        reason.replace('\n', " ")
    );
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("fallbacks.log"))
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Where the agent said to run a miss.
struct View<'a> {
    root: &'a Path,
    binds: &'a [Vec<u8>],
    /// The CPUs of the daemon thread serving the view (empty: anywhere).
    cpus: &'a [u32],
    /// Looked up once the compiler has exited: the daemon's answer tells
    /// the agent its mirror was alive throughout.
    probe: &'a Path,
}

/// The CPU set for `cpus` within the CPUs this call may already use (a
/// build under `taskset` keeps its restriction), or `None` (no pinning) when
/// that leaves nothing.
fn cpu_set(cpus: &[u32]) -> Option<nix::sched::CpuSet> {
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    pin_set(cpus, &allowed)
}

fn pin_set(cpus: &[u32], allowed: &nix::sched::CpuSet) -> Option<nix::sched::CpuSet> {
    use nix::sched::CpuSet;
    let mut set = CpuSet::new();
    let mut any = false;
    for &c in cpus {
        if allowed.is_set(c as usize).unwrap_or(false) {
            set.set(c as usize).ok()?;
            any = true;
        }
    }
    any.then_some(set)
}

fn run_observed(call: &Call, stream: &mut UnixStream, view: View, config: &Config) -> ! {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let pin = cpu_set(view.cpus);
    let entry = match ViewEntry::new(view.root, view.binds, &cwd) {
        Ok(e) => e.with_fifos(jobserver_fifo_binds()),
        Err(e) => abandon(
            call,
            stream,
            &format!("cannot prepare the view: {e}"),
            config,
        ),
    };
    let colored = call.colored();
    let argv = if colored {
        color::with_color(&call.argv)
    } else {
        call.argv.clone()
    };
    let mut cmd = compiler_command(call, &argv);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: `enter` and sched_setaffinity only make async-signal-safe
    // syscalls on data built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(set) = &pin {
                // On the daemon thread's CPU every FUSE round trip is a local
                // context switch; refused (a cpuset changed), it runs anywhere.
                let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), set);
            }
            entry.enter()
        })
    };
    let start = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => abandon(
            call,
            stream,
            &format!("cannot enter the observation view: {e}"),
            config,
        ),
    };
    let out = collect(child.stdout.take().expect("piped"));
    let err = collect(child.stderr.take().expect("piped"));
    log::debug!("compiler started in the view in {:?}", start.elapsed());
    let status = child.wait().expect("waiting for our own child cannot fail");
    log::debug!("compiler exited after {:?}", start.elapsed());
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    // Any answer will do: the agent asks its daemon whether it gave one.
    let _ = std::fs::symlink_metadata(view.probe);
    let exit = match (status.code(), status.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(s)) => Exit::Signal(s),
        (None, None) => Exit::Code(1),
    };
    if colored && color::rejected(status.success(), &stderr.0) {
        abandon(
            call,
            stream,
            &format!(
                "{} does not take {}",
                call.compiler.display(),
                color::ALWAYS
            ),
            config,
        );
    }
    let done = Finished {
        exit,
        stdout: stdout.0,
        stderr: stderr.0,
        output_complete: stdout.1 && stderr.1,
        wall_ms: start.elapsed().as_millis() as u64,
    };
    // The agent reads the outputs before answering, so the build cannot
    // touch them first. No answer means the agent died, maybe while serving
    // this compile's files: its result cannot be trusted, so compile again
    // uncached (nothing was printed yet).
    let acked = protocol::write_frame(stream, &Request::Finished(done.clone()))
        .and_then(|_| protocol::read_frame::<Response, _>(stream));
    log::debug!("agent stored the result after {:?}", start.elapsed());
    match acked {
        Ok(Response::Stored) => {
            let stderr = for_terminal(call, done.stderr);
            replay(&done.stdout, &stderr, exit)
        }
        Ok(Response::Error { message }) => fall_back(call, &message, Cause::Counted, Some(config)),
        // The compile reached a FIFO, socket or device node in the view.
        Ok(Response::RunPlain { reason, .. }) => {
            fall_back(call, &reason, Cause::Policy, Some(config))
        }
        _ => fall_back(
            call,
            "the agent stopped during the compile",
            Cause::Unreported,
            Some(config),
        ),
    }
}

/// The build's jobserver FIFOs (make >= 4.4, cargo), to be bound over the
/// mirror's stand-ins inside the view: through the mirror a FIFO is another
/// pipe, and the compile would never get the build's tokens.
fn jobserver_fifo_binds() -> cachefs_mirror::FifoBinds {
    let env: Vec<_> = std::env::vars_os().collect();
    let env = env.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()));
    cachefs_mirror::FifoBinds::new(&cachefs_mirror::jobserver_fifos(env))
}

fn abandon(call: &Call, stream: &mut UnixStream, reason: &str, config: &Config) -> ! {
    let _ = protocol::write_frame(
        stream,
        &Request::Abandon {
            reason: reason.to_string(),
        },
    );
    fall_back(call, reason, Cause::Counted, Some(config))
}

/// Reads a child's pipe to the end. Output is printed only once the compile
/// is known to be good (see `run_observed`); beyond MAX_CAPTURE it is still
/// kept but marked incomplete so that it is not cached.
fn collect<R: Read + Send + 'static>(mut from: R) -> std::thread::JoinHandle<(Vec<u8>, bool)> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = from.read_to_end(&mut kept);
        let complete = kept.len() <= MAX_CAPTURE;
        (kept, complete)
    })
}

/// The two binaries, installed side by side: `cachefs`, the client that
/// every compile starts, and `cachefs-cli`, the command line it execs.
pub const CLIENT_NAME: &str = "cachefs";
pub const CLI_NAME: &str = "cachefs-cli";

/// `name` beside `exe`, if it is there and executable.
pub fn sibling_binary(exe: &Path, name: &str) -> Option<PathBuf> {
    let path = exe.with_file_name(name);
    is_executable(&path).then_some(path)
}

/// `cachefs-cli` beside this binary.
pub fn cli_binary() -> Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the cachefs executable: {e}"))?;
    sibling_binary(&exe, CLI_NAME).ok_or_else(|| {
        format!(
            "{} is missing: cachefs needs it beside {} for every command but compiles; \
             reinstall with scripts/install.sh",
            exe.with_file_name(CLI_NAME).display(),
            exe.display()
        )
    })
}

pub fn is_compile_mode() -> Option<OsString> {
    std::env::var_os(ENV_COMPILER).filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_compile_stays_within_the_build_s_own_cpus() {
        let mut allowed = nix::sched::CpuSet::new();
        allowed.set(1).unwrap();
        allowed.set(2).unwrap();
        let set = pin_set(&[0, 1], &allowed).unwrap();
        assert!(set.is_set(1).unwrap() && !set.is_set(0).unwrap());
        assert!(
            pin_set(&[0], &allowed).is_none(),
            "no common CPU: not pinned"
        );
        assert!(pin_set(&[], &allowed).is_none());
    }
}
