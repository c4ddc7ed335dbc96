//! `cachefs mount SRC MNT` and `cachefs umount MNT`: SRC mirrored at MNT,
//! every access by every process run inside recorded (compiler or not), the
//! record saved as a run (`cachefs runs`, `deps`, `graph`) while it grows.
//!
//! Each mount is served by a `cachefs mount --foreground` process of its
//! own, not by the agent: a mount lives as long as the user wants it, not as
//! long as the agent's idle timeout. Its state file in `mounts/` tells
//! `umount` which process to stop.

use crate::client::{process_running, spawn_daemon};
use crate::config::Config;
use crate::fuse_mounts;
use crate::runlog;
use crate::runlog::tree_record::{self, Layout};
use anyhow::{anyhow, bail, Context, Result};
use cachefs_mirror::{Mirror, MirrorOptions};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a live mount's record is saved when it changed (at least), and
/// how often the daemon looks for a stop request.
const SAVE_EVERY: Duration = Duration::from_millis(500);
const POLL_EVERY: Duration = Duration::from_millis(50);
const START_TIMEOUT: Duration = Duration::from_secs(10);
const TREE_TTL: Duration = Duration::from_secs(1);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

static STOP: AtomicBool = AtomicBool::new(false);

/// What `umount` needs to know of a live mount.
#[derive(Debug, Serialize, Deserialize)]
struct MountState {
    pid: u32,
    src: PathBuf,
    mnt: PathBuf,
    run: String,
}

pub fn mount(src: &Path, mnt: &Path, foreground: bool) -> Result<()> {
    let config = Config::from_env()?;
    let src = src
        .canonicalize()
        .with_context(|| format!("cannot mount {}: no such directory", src.display()))?;
    if !src.is_dir() {
        bail!("cannot mount {}: not a directory", src.display());
    }
    let mnt = mountpoint(mnt)?;
    if mnt == src {
        bail!(
            "cannot mount {} over itself: choose another mountpoint",
            src.display()
        );
    }
    if fuse_mounts::mounted_type(&mnt).is_some() {
        bail!(
            "{} is already a mountpoint: `cachefs umount {}` first",
            mnt.display(),
            mnt.display()
        );
    }
    if foreground {
        serve(&config, src, mnt)
    } else {
        start_in_background(&config, &src, &mnt)
    }
}

/// The mountpoint, created if needed, as an absolute path without symlinks
/// (the form /proc/self/mountinfo lists).
fn mountpoint(mnt: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(mnt)
        .with_context(|| format!("cannot create the mountpoint {}", mnt.display()))?;
    mnt.canonicalize()
        .with_context(|| format!("cannot use the mountpoint {}", mnt.display()))
}

fn start_in_background(config: &Config, src: &Path, mnt: &Path) -> Result<()> {
    std::fs::create_dir_all(state_dir(config))
        .with_context(|| format!("cannot create {}", state_dir(config).display()))?;
    let log_path = config.dir.join("mount.log");
    let args: Vec<OsString> = vec![
        "mount".into(),
        "--foreground".into(),
        src.into(),
        mnt.into(),
    ];
    let mut child =
        spawn_daemon(config, &args, &log_path).context("cannot start the mount's daemon")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(state) = read_state(config, mnt).filter(|s| s.pid == child.id()) {
            eprintln!(
                "cachefs: {} mounted at {} (run {}); `cachefs umount {}` to stop",
                src.display(),
                mnt.display(),
                state.run,
                mnt.display()
            );
            // It outlives us; init reaps it.
            std::mem::forget(child);
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "the mount's daemon exited at start ({status}): {}",
                last_line(&log_path)
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "mounting {} did not finish within {START_TIMEOUT:?}; see {}",
                mnt.display(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|s| s.lines().last().map(str::to_owned))
        .unwrap_or_else(|| format!("see {}", log.display()))
}

/// Serves the mount until `umount` (SIGTERM), Ctrl-C, or an outside unmount.
fn serve(config: &Config, src: PathBuf, mnt: PathBuf) -> Result<()> {
    let options = MirrorOptions {
        // Names and attributes are cached for a second only: SRC may change
        // behind the mount (an editor saving into it), and a build inside
        // must see that as it would on SRC. Failed lookups are never cached
        // in a tree mount, so each process's own probes are seen.
        ttl: TREE_TTL,
        // The cache directory and every agent's lanes (`fuse_mounts::place`)
        // stay out of sight, as the lanes did inside the cache directory.
        hide: [
            Some(config.dir.clone()),
            fuse_mounts::place::base_dir().ok(),
        ]
        .into_iter()
        .flatten()
        .collect(),
        ..MirrorOptions::default()
    };
    let mirror = Mirror::mount_tree(&src, &mnt, options, Box::new(is_cachefs_daemon))?;
    let run = runlog::new_run_id();
    let started = runlog::started_unix_ms(&run);
    let layout = Layout {
        src: src.clone(),
        mnt: mnt.clone(),
    };
    catch_stop_signals()?;
    let state = MountState {
        pid: std::process::id(),
        src,
        mnt: mnt.clone(),
        run: run.clone(),
    };
    write_state(config, &state)?;
    if let Err(e) = runlog::set_live(&config.dir, &run, true) {
        log::warn!("cannot mark run {run} as live ({e}): newer runs may prune it");
    }
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "cachefs: {} mounted at {} (run {run}); Ctrl-C or `cachefs umount {}` to stop",
            state.src.display(),
            mnt.display(),
            mnt.display()
        );
    }
    let save = |saved: &mut Option<u64>| {
        let now = mirror.processes_recorded();
        if *saved == Some(now) {
            return;
        }
        *saved = Some(now);
        let record = tree_record::run_record(&run, started, &layout, &mirror.processes());
        if let Err(e) = runlog::save(&config.dir, &record) {
            log::warn!(
                "cannot save the record of the mount at {}: {e}",
                mnt.display()
            );
        }
    };
    let mut saved = None;
    let mut next_save = Instant::now();
    while !STOP.load(Ordering::Relaxed) && mirror.is_alive() {
        std::thread::sleep(POLL_EVERY);
        if Instant::now() >= next_save {
            let took = Instant::now();
            save(&mut saved);
            // A big session's record takes a while to copy and write: at most
            // a twentieth of the time goes to saving it.
            next_save = Instant::now() + SAVE_EVERY.max(took.elapsed() * 20);
        }
    }
    save(&mut saved);
    let _ = runlog::set_live(&config.dir, &run, false);
    let _ = std::fs::remove_file(state_path(config, &mnt));
    mirror.unmount()?;
    Ok(())
}

/// The cachefs agent reads files inside a mount for the compiles `cachefs
/// run` records itself; `cachefs` commands are not part of any build.
fn is_cachefs_daemon(argv: &[OsString]) -> bool {
    let is_cachefs = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == crate::client::CLIENT_NAME || n == crate::client::CLI_NAME);
    let sub = argv.get(1).map(|a| a.as_bytes());
    is_cachefs && matches!(sub, Some(b"agent" | b"mount" | b"umount"))
}

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn catch_stop_signals() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(signal, &action) }.context("cannot install a signal handler")?;
    }
    Ok(())
}

pub fn umount(mnt: &Path) -> Result<()> {
    let config = Config::from_env()?;
    // A stale mount cannot be canonicalized (ENOTCONN): canonicalize its
    // parent instead.
    let abs = std::path::absolute(mnt).with_context(|| format!("bad path {}", mnt.display()))?;
    let mnt = match (abs.parent().map(Path::canonicalize), abs.file_name()) {
        (Some(Ok(parent)), Some(name)) => parent.join(name),
        _ => abs,
    };
    let state = read_state(&config, &mnt);
    if let Some(state) = state.as_ref().filter(|s| process_running(s.pid)) {
        stop_daemon(state)?;
        eprintln!(
            "cachefs: unmounted {}; what ran inside is run {} (`cachefs graph --run {}`)",
            mnt.display(),
            state.run,
            state.run
        );
        return Ok(());
    }
    let _ = std::fs::remove_file(state_path(&config, &mnt));
    if let Some(s) = &state {
        // Its daemon is gone: its run is an ordinary one now.
        let _ = runlog::set_live(&config.dir, &s.run, false);
    }
    let fuse = fuse_mounts::mounted_type(&mnt).is_some_and(|t| t.starts_with("fuse"));
    match (&state, fuse, fuse && fuse_mounts::is_stale(&mnt)) {
        (_, true, true) => {
            fuse_mounts::detach(&mnt).with_context(|| {
                format!("cannot detach the stale mount at {}: run `umount -l {}` as root", mnt.display(), mnt.display())
            })?;
            match &state {
                Some(s) => eprintln!(
                    "cachefs: {} was left mounted by a `cachefs mount` that was killed (pid {}); detached it. What it recorded until then is run {}",
                    mnt.display(), s.pid, s.run
                ),
                None => eprintln!(
                    "cachefs: {} was a stale FUSE mount (its daemon is gone, e.g. a killed agent); detached it",
                    mnt.display()
                ),
            }
            Ok(())
        }
        (Some(s), false, _) => {
            eprintln!(
                "cachefs: {} is no longer mounted (its `cachefs mount`, pid {}, is gone); its record is run {}",
                mnt.display(),
                s.pid,
                s.run
            );
            Ok(())
        }
        (_, true, false) => bail!(
            "{} is a FUSE mount not started by `cachefs mount` for the cache directory {} (CACHEFS_DIR): unmount it with `fusermount3 -u {}`",
            mnt.display(), config.dir.display(), mnt.display()
        ),
        (None, false, _) => bail!("{} is not mounted", mnt.display()),
    }
}

/// SIGTERM, then wait: the daemon saves its record and unmounts itself.
fn stop_daemon(state: &MountState) -> Result<()> {
    let pid = nix::unistd::Pid::from_raw(state.pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        .with_context(|| format!("cannot stop the mount's daemon (pid {})", state.pid))?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while process_running(state.pid) {
        if Instant::now() > deadline {
            return Err(anyhow!(
                "the mount's daemon (pid {}) did not stop within {STOP_TIMEOUT:?}: is a process still using {}? (`fuser -m {}`)",
                state.pid, state.mnt.display(), state.mnt.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if fuse_mounts::is_stale(&state.mnt) {
        let _ = fuse_mounts::detach(&state.mnt);
    }
    Ok(())
}

/// For `cachefs doctor`: the mounts this cache directory serves, and any
/// left behind by a `cachefs mount` that was killed.
pub(super) fn mounts_verdict(config: &Config) -> Result<String, (String, String)> {
    let states: Vec<MountState> = std::fs::read_dir(state_dir(config))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect();
    let (live, dead): (Vec<&MountState>, Vec<&MountState>) =
        states.iter().partition(|s| process_running(s.pid));
    if let Some(d) = dead.first() {
        return Err((
            format!(
                "{} was mounted by a `cachefs mount` (pid {}) that is gone",
                d.mnt.display(),
                d.pid
            ),
            format!("run `cachefs umount {}`", d.mnt.display()),
        ));
    }
    if live.is_empty() {
        return Ok("none".into());
    }
    let shown: Vec<String> = live
        .iter()
        .map(|s| format!("{} at {}", s.src.display(), s.mnt.display()))
        .collect();
    Ok(shown.join(", "))
}

fn state_dir(config: &Config) -> PathBuf {
    config.dir.join("mounts")
}

fn state_path(config: &Config, mnt: &Path) -> PathBuf {
    let hash = blake3::hash(mnt.as_os_str().as_bytes());
    state_dir(config).join(format!("{}.json", &hash.to_hex()[..16]))
}

fn read_state(config: &Config, mnt: &Path) -> Option<MountState> {
    let bytes = std::fs::read(state_path(config, mnt)).ok()?;
    serde_json::from_slice::<MountState>(&bytes)
        .ok()
        .filter(|s| s.mnt == mnt)
}

fn write_state(config: &Config, state: &MountState) -> Result<()> {
    let dir = state_dir(config);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = state_path(config, &state.mnt);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(state)?)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))
}
