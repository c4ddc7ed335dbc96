//! Compile mode: the shim diverted a compiler exec to us. Ask the agent; on a
//! hit replay the result, on a miss run the compiler inside an observation
//! view and report back, and on any failure run the compiler unchanged.

mod agent_link;
mod binaries;
mod call;
mod fallback;
mod observed;
mod prefix;
mod view;

pub use agent_link::{process_running, request, spawn_daemon, start_agent, START_TIMEOUT};
pub use binaries::{
    cli_binary, installed_shim, is_compile_mode, is_executable, sibling_binary, CLIENT_NAME,
    CLI_NAME,
};
pub use call::Call;

use crate::compiler::color;
use crate::config::{Config, ENV_COMPILER, ENV_DISABLE, ENV_IN_COMPILE, ENV_RUN_ID};
use crate::protocol::{self, CompileRequest, Exit, Request, Response};
use fallback::{fall_back, Cause};
use observed::{run_observed, View};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Runs the call and exits with the compiler's status. Sets up logging.
pub fn run(mut call: Call) -> ! {
    // SAFETY: single-threaded at this point; nothing else reads the environment.
    unsafe { std::env::remove_var(ENV_COMPILER) };
    if let Some(reason) = switched_off(&call) {
        fall_back(&call, reason, Cause::Policy, None);
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
    call.prefix = prefix::settle(&call, &config);
    let mut stream = match agent_link::connect(&config, run_id.is_none()) {
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
        Ok(answer) => follow(&call, answer, &mut stream, &config),
        Err(e) => fall_back(
            &call,
            &format!("agent failed: {e}"),
            Cause::Unreported,
            Some(&config),
        ),
    }
}

/// Why this call is to run without cachefs, by its own environment.
fn switched_off(call: &Call) -> Option<&'static str> {
    if crate::config::switch_set(ENV_DISABLE) {
        return Some("CACHEFS_DISABLE is set");
    }
    (crate::config::switch_set(crate::config::ENV_NO_ARCHIVES)
        && call.family == crate::compiler::Family::Archiver)
        .then_some("CACHEFS_NO_ARCHIVES is set")
}

/// Does what the agent's answer says: replay a hit, compile a miss in its
/// view, or compile uncached.
fn follow(call: &Call, answer: Response, stream: &mut UnixStream, config: &Config) -> ! {
    match answer {
        Response::Hit {
            stdout,
            stderr,
            exit,
        } => replay(&stdout, &for_terminal(call, stderr), exit),
        Response::Miss {
            view_root,
            binds,
            cpus,
            probe,
        } => {
            let view_root = PathBuf::from(OsString::from_vec(view_root));
            let view = View {
                root: &view_root,
                binds: &binds,
                cpus: &cpus,
                probe: Path::new(std::ffi::OsStr::from_bytes(&probe)),
            };
            run_observed(call, stream, view, config)
        }
        Response::RunPlain { reason, warn } => {
            let cause = if warn { Cause::Counted } else { Cause::Policy };
            fall_back(call, &reason, cause, Some(config))
        }
        Response::Error { message } => fall_back(call, &message, Cause::Unreported, Some(config)),
        other => fall_back(
            call,
            &format!("unexpected agent reply {other:?}"),
            Cause::Unreported,
            Some(config),
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

/// The compiler run by the build, under the prefix command when there is one.
fn compiler_command(call: &Call, argv: &[OsString]) -> Command {
    let mut cmd = match &call.prefix {
        Some(p) => prefix::command(p, call, argv),
        None => {
            let mut cmd = Command::new(&call.compiler);
            if let Some(argv0) = argv.first() {
                cmd.arg0(argv0);
            }
            cmd.args(argv.iter().skip(1));
            cmd
        }
    };
    // Everything this compile starts (cc1, as, ld, clang -cc1) is part of it.
    cmd.env(ENV_IN_COMPILE, "1");
    cmd
}
