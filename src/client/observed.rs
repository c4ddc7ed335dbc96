//! A miss: the compiler run inside the view the agent handed out, its
//! output held back until the agent has read what the compile wrote.

use super::call::Call;
use super::fallback::{fall_back, Cause};
use super::view::ViewEntry;
use super::{compiler_command, for_terminal, replay};
use crate::compiler::color;
use crate::config::{Config, ENV_VIEW};
use crate::protocol::{self, Exit, Finished, Request, Response};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Instant;

/// Compiler output beyond this is printed but not cached.
const MAX_CAPTURE: usize = 64 << 20;
/// Where the agent said to run a miss.
pub(super) struct View<'a> {
    pub root: &'a Path,
    pub binds: &'a [Vec<u8>],
    /// The CPUs of the daemon thread serving the view (empty: anywhere).
    pub cpus: &'a [u32],
    /// Looked up once the compiler has exited: the daemon's answer tells
    /// the agent its mirror was alive throughout.
    pub probe: &'a Path,
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

pub(super) fn run_observed(call: &Call, stream: &mut UnixStream, view: View, config: &Config) -> ! {
    let colored = call.colored();
    let start = Instant::now();
    let child = match spawn_in_view(call, &view, colored) {
        Ok(c) => c,
        Err(reason) => abandon(call, stream, &reason, config),
    };
    let (status, done) = wait_for(child, start);
    let (status, done) = match super::prefix::local_rerun(call, &done) {
        Some(local) => match spawn_in_view(&local, &view, colored) {
            Ok(child) => wait_for(child, start),
            Err(reason) => abandon(call, stream, &reason, config),
        },
        None => (status, done),
    };
    // Any answer will do: the agent asks its daemon whether it gave one.
    let _ = std::fs::symlink_metadata(view.probe);
    if colored && color::rejected(status.success(), &done.stderr) {
        let reason = format!(
            "{} does not take {}",
            call.compiler.display(),
            color::ALWAYS
        );
        abandon(call, stream, &reason, config);
    }
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
            replay(&done.stdout, &stderr, done.exit)
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

/// Starts the compiler inside the view (pinned to the CPUs of the daemon
/// thread serving it, where given), its output piped to us.
fn spawn_in_view(call: &Call, view: &View, colored: bool) -> Result<Child, String> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let pin = cpu_set(view.cpus);
    let entry = ViewEntry::new(view.root, view.binds, &cwd)
        .map_err(|e| format!("cannot prepare the view: {e}"))?
        .with_fifos(jobserver_fifo_binds());
    let argv = if colored {
        color::with_color(&call.argv)
    } else {
        call.argv.clone()
    };
    let mut cmd = compiler_command(call, &argv);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    // The shim reports what the compile reads of its environment; in wrapper
    // mode it is not preloaded yet.
    cmd.env(ENV_VIEW, "1");
    if let Some(preload) = with_shim() {
        cmd.env("LD_PRELOAD", preload);
    }
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
    cmd.spawn()
        .map_err(|e| format!("cannot enter the observation view: {e}"))
}

/// The build's jobserver FIFOs (make >= 4.4, cargo), to be bound over the
/// mirror's stand-ins inside the view: through the mirror a FIFO is another
/// pipe, and the compile would never get the build's tokens.
fn jobserver_fifo_binds() -> cachefs_mirror::FifoBinds {
    let env: Vec<_> = std::env::vars_os().collect();
    let env = env
        .iter()
        .map(|(k, v)| (k.as_encoded_bytes(), v.as_encoded_bytes()));
    cachefs_mirror::FifoBinds::new(&cachefs_mirror::jobserver_fifos(env))
}

/// `LD_PRELOAD` with the shim added, when it lacks it and the shim is
/// installed; None to leave it as it is (without a shim, the agent keys the
/// compile by its whole environment).
fn with_shim() -> Option<std::ffi::OsString> {
    let current = std::env::var_os("LD_PRELOAD").unwrap_or_default();
    let has_shim = current
        .as_encoded_bytes()
        .split(|&b| b == b' ' || b == b':')
        .any(|p| {
            p.rsplit(|&b| b == b'/')
                .next()
                .is_some_and(|n| n.starts_with(b"libcachefs_preload"))
        });
    if has_shim {
        return None;
    }
    let shim = super::installed_shim(&std::env::current_exe().ok()?)?;
    let mut value = shim.into_os_string();
    if !current.is_empty() {
        value.push(" ");
        value.push(current);
    }
    Some(value)
}

/// Waits for the compiler and collects what it printed.
fn wait_for(mut child: Child, start: Instant) -> (std::process::ExitStatus, Finished) {
    let out = collect(child.stdout.take().expect("piped"));
    let err = collect(child.stderr.take().expect("piped"));
    log::debug!("compiler started in the view in {:?}", start.elapsed());
    let status = child.wait().expect("waiting for our own child cannot fail");
    log::debug!("compiler exited after {:?}", start.elapsed());
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let exit = match (status.code(), status.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(s)) => Exit::Signal(s),
        (None, None) => Exit::Code(1),
    };
    let done = Finished {
        exit,
        stdout: stdout.0,
        stderr: stderr.0,
        output_complete: stdout.1 && stderr.1,
        wall_ms: start.elapsed().as_millis() as u64,
    };
    (status, done)
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
