//! How a process reaches the agent of its cache directory: connecting,
//! starting one in the background when none answers, and one
//! request/response exchange.

use super::binaries::{cli_binary, CLIENT_NAME};
use crate::config::{Config, ENV_COMPILER, ENV_IN_COMPILE};
use crate::protocol::{self, Request, Response};
use anyhow::{anyhow, bail, Context, Result};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting agent, or one asked something, has to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the agent; in wrapper mode (no `cachefs run` around us) an
/// agent that is not running is started. Under `cachefs run` the agent was
/// started by `run`, and one that died is not restarted mid-build.
pub(super) fn connect(config: &Config, start_if_missing: bool) -> std::io::Result<UnixStream> {
    match UnixStream::connect(config.socket_path()) {
        Ok(s) => Ok(s),
        Err(e) if !start_if_missing => Err(e),
        Err(_) => {
            start_agent(config).map_err(std::io::Error::other)?;
            UnixStream::connect(config.socket_path())
        }
    }
}

/// Makes sure an agent serves `config.dir`, starting one in the background if
/// needed; returns its pid.
pub fn start_agent(config: &Config) -> Result<u32> {
    if let Ok(pid) = ping(config) {
        return Ok(pid);
    }
    std::fs::create_dir_all(&config.dir)
        .with_context(|| format!("cannot create the cache directory {}", config.dir.display()))?;
    let log_path = config.dir.join("agent.log");
    let mut child = spawn_daemon(config, &["agent".into()], &log_path)
        .context("cannot start the cachefs agent")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(pid) = ping(config) {
            // Reap it later: it outlives us, and init adopts it.
            std::mem::forget(child);
            return Ok(pid);
        }
        match child.try_wait() {
            // Lost a race with another starter (ours exits 0 when another
            // agent holds the directory): that one may still be opening its
            // store, so keep asking until the deadline.
            Ok(Some(status)) if status.success() => {}
            Ok(Some(status)) => bail!(
                "the agent exited at start ({status}); see {}",
                log_path.display()
            ),
            _ => {}
        }
        if Instant::now() > deadline {
            bail!(
                "the agent did not answer within {START_TIMEOUT:?}; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The binary with the `agent` command: this one, unless the caller is the
/// client (`cachefs`, which has only compile mode), whose `cachefs-cli`
/// sits beside it.
fn main_binary() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe().context("cannot find the cachefs executable")?;
    if exe.file_name() == Some(std::ffi::OsStr::new(CLIENT_NAME)) {
        return cli_binary().map_err(anyhow::Error::msg);
    }
    Ok(exe)
}

/// Starts `cachefs ARGS…` as a daemon for `config.dir`: its own session (so it outlives the
/// build's terminal and process group), `/` as its directory, stdout and stderr appended to
/// `log_path`, and none of the shim's variables (it must not be diverted or observed).
pub fn spawn_daemon(
    config: &Config,
    args: &[std::ffi::OsString],
    log_path: &std::path::Path,
) -> Result<std::process::Child> {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log_path)
        .with_context(|| format!("cannot open the log {}", log_path.display()))?;
    let exe = main_binary()?;
    let mut cmd = Command::new(&exe);
    // Named as users know it (`ps`, `pgrep -f 'cachefs agent'`, and the
    // tree mount's test for cachefs's own daemons), whichever binary runs.
    cmd.arg0(exe.with_file_name(CLIENT_NAME));
    cmd.args(args)
        .env("CACHEFS_DIR", &config.dir)
        .env_remove("LD_PRELOAD")
        .env_remove(ENV_COMPILER)
        .env_remove(ENV_IN_COMPILE)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        })
    };
    Ok(cmd.spawn()?)
}

fn ping(config: &Config) -> Result<u32> {
    match request(config, &Request::Ping)? {
        Response::Pong { pid } => Ok(pid),
        other => Err(anyhow!("unexpected agent reply {other:?}")),
    }
}

/// One request/response exchange with the agent.
pub fn request(config: &Config, req: &Request) -> Result<Response> {
    let path = config.socket_path();
    let mut s = UnixStream::connect(&path)
        .with_context(|| format!("cannot connect to the agent at {}", path.display()))?;
    s.set_read_timeout(Some(START_TIMEOUT))?;
    protocol::write_frame(&mut s, req)?;
    match protocol::read_frame(&mut s)? {
        Response::Error { message } => Err(anyhow!("agent error: {message}")),
        r => Ok(r),
    }
}

/// Whether `pid` is a live process (a zombie has exited: its parent just
/// has not reaped it yet).
pub fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
