//! The resident agent: one per cache directory. It owns the store (redb
//! allows one process), serves the FUSE mirror, keeps the stat cache and the
//! statistics, and answers clients on a unix socket inside the cache dir.

mod call;
mod compile;
mod execute;
mod finish;
mod lanes;
mod lookup;
mod pending;
mod prefix;
mod remote;
mod runs;
mod stats;
mod watch;
mod workers;

use crate::config::Config;
use crate::entry::manifest::ManifestWriter;
use crate::observe::coverage::Coverage;
use crate::protocol::{self, Request, Response};
use crate::stat_cache::{self, StatCache};
use anyhow::{bail, Context, Result};
use cachefs_mirror::MirrorOptions;
use cachefs_store::{LocalStore, TieredStore};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use stats::Outcome;

/// Top-level directories whose files are never dependencies: kernel and
/// runtime state, not inputs a compile could be keyed on.
pub const UNOBSERVED_ROOTS: &[&str] = &["proc", "sys", "dev", "run"];

pub struct Agent {
    config: Config,
    /// The config's `base_dir` as a physical path, resolved once (a call's
    /// own `CACHEFS_BASEDIR` is resolved per call).
    base_dir: Option<Vec<u8>>,
    store: TieredStore,
    /// The CPU-local mirrors compiles are observed through (none when FUSE
    /// is unavailable).
    lanes: lanes::Lanes,
    /// The directory the lanes are mounted in (outside the cache directory,
    /// see `fuse_mounts::place`), removed at exit.
    mounts: Option<PathBuf>,
    /// How compiles are observed, or why they cannot be (shown by `stats`).
    observation: String,
    binds: Vec<Vec<u8>>,
    /// What those binds let a view observe.
    coverage: Coverage,
    stat_cache: StatCache,
    stats: stats::Stats,
    manifests: ManifestWriter,
    pending: pending::PendingSaves,
    runs: runs::RunRecorder,
    /// Where misses run remotely (`[remote] execute`), if anywhere.
    executor: Option<execute::Remote>,
    last_activity: Mutex<Instant>,
    active: AtomicUsize,
}

/// Runs the agent in the foreground until `cachefs stop` or the idle timeout.
/// Returns Ok(false) without doing anything if another agent already serves
/// this cache directory.
pub fn serve(config: Config) -> Result<bool> {
    std::fs::create_dir_all(&config.dir)
        .with_context(|| format!("cannot create the cache directory {}", config.dir.display()))?;
    std::fs::set_permissions(&config.dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (chmod 700)", config.dir.display()))?;
    let Some(lock) = take_lock(&config.dir)? else {
        return Ok(false);
    };
    let listener = bind_socket(&config.socket_path())?;
    crate::runlog::clear_saving_markers(&config.dir);
    let _ = std::fs::write(config.dir.join("agent.pid"), std::process::id().to_string());
    let agent = Arc::new(Agent::open(config)?);
    log::info!(
        "agent {} serving {}",
        std::process::id(),
        agent.config.dir.display()
    );
    let dir = &agent.config.dir;
    let watched = watch::Watched::take(
        &[dir.clone(), dir.join(LOCK_FILE), agent.config.socket_path()],
        &[dir.join(cachefs_store::INDEX_FILE)],
    );
    spawn_housekeeping(agent.clone(), watched);
    // The agent ends by `shutdown` (process exit), which keeps the lock held
    // to the last moment.
    let _lock = lock;
    workers::serve(listener, move |s| agent.serve_connection(s))
}

const LOCK_FILE: &str = "agent.lock";

fn take_lock(dir: &Path) -> Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the agent lock {}", path.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => bail!("cannot lock {}: {e}", path.display()),
    }
}

fn bind_socket(path: &Path) -> Result<UnixListener> {
    // We hold the agent lock, so a socket file left here belongs to a dead agent.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| {
        format!(
            "cannot listen on {} (a unix socket path must be under 108 bytes: set CACHEFS_DIR to a shorter path)",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Every real top-level directory except the unobserved ones: a view binds
/// its mirror of each over the real one. Symlinks (/bin → usr/bin) need no
/// bind: they resolve into a bound directory.
fn top_level_binds() -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir("/") else {
        return Vec::new();
    };
    let mut binds: Vec<Vec<u8>> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().as_bytes().to_vec())
        .filter(|n| {
            !UNOBSERVED_ROOTS
                .iter()
                .any(|u| u.as_bytes() == n.as_slice())
        })
        .collect();
    binds.sort();
    binds
}

/// Remote execution as configured; a bad setting is logged and misses compile here.
fn open_executor(config: &Config) -> Option<execute::Remote> {
    let settings = match config.remote_execution() {
        Ok(Some(s)) => s,
        Ok(None) => return None,
        Err(e) => {
            log::warn!("remote execution disabled: {e}");
            return None;
        }
    };
    let timeout = config.remote().map(|r| r.timeout).unwrap_or_default();
    execute::Remote::open(&settings, timeout)
}

impl Agent {
    fn open(config: Config) -> Result<Agent> {
        let store = LocalStore::open(&config.dir, config.cache_size)
            .with_context(|| format!("cannot open the cache store in {}", config.dir.display()))?;
        let store = TieredStore::new(store, remote::open_from_env(&config));
        let stats = stats::Stats::load(store.get_meta("stats").ok().flatten());
        let probe_delay = std::env::var(crate::config::ENV_TEST_PROBE_DELAY_MS)
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::ZERO, Duration::from_millis);
        let options = MirrorOptions {
            hide: vec![config.dir.clone()],
            probe_delay,
            ..MirrorOptions::default()
        };
        let (lanes, mounts, observation) = match mount_lanes(&config.dir, options) {
            Ok((lanes, dir)) => {
                let passthrough = lanes.first().is_some_and(|m| m.passthrough_active());
                let how = format!(
                    "FUSE mirror{}, {} CPU lanes at {}",
                    if passthrough { ", passthrough" } else { "" },
                    lanes.iter().count(),
                    dir.display()
                );
                (lanes, Some(dir), how)
            }
            Err(e) => {
                log::warn!("compiles will run uncached: {e:#}");
                (lanes::Lanes::default(), None, format!("unavailable: {e:#}"))
            }
        };
        let binds = top_level_binds();
        let stat_file = stat_cache::file::path_in(&config.dir);
        let (stat_cache, unusable) = stat_cache::file::load(&stat_file);
        match unusable {
            Some(why) => log::warn!(
                "ignored the saved stat cache {} ({why}); inputs are hashed anew",
                stat_file.display()
            ),
            None => log::info!(
                "loaded {} stat cache entries from {}",
                stat_cache.len(),
                stat_file.display()
            ),
        }
        let base_dir = config
            .base_dir
            .as_ref()
            .and_then(|p| crate::entry::location::canonical(p.as_os_str().as_bytes()));
        let executor = open_executor(&config);
        Ok(Agent {
            executor,
            base_dir,
            config,
            store,
            lanes,
            mounts,
            observation,
            coverage: Coverage::of_root(&binds),
            binds,
            stat_cache,
            stats,
            manifests: ManifestWriter::default(),
            pending: pending::PendingSaves::default(),
            runs: runs::RunRecorder::default(),
            last_activity: Mutex::new(Instant::now()),
            active: AtomicUsize::new(0),
        })
    }

    fn serve_connection(&self, mut stream: UnixStream) {
        if !same_user(&stream) {
            let _ = protocol::write_frame(
                &mut stream,
                &Response::Error {
                    message: "connection refused: the agent serves only its own user".into(),
                },
            );
            return;
        }
        self.active.fetch_add(1, Ordering::SeqCst);
        self.touch();
        if let Err(e) = self.converse(&mut stream) {
            log::debug!("connection ended: {e:#}");
        }
        self.touch();
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    fn touch(&self) {
        *self.last_activity.lock().unwrap() = Instant::now();
    }

    fn converse(&self, stream: &mut UnixStream) -> Result<()> {
        loop {
            let request: Request = match protocol::read_frame(stream) {
                Ok(r) => r,
                Err(protocol::ProtocolError::Closed) => return Ok(()),
                Err(e) => {
                    let _ = protocol::write_frame(
                        stream,
                        &Response::Error {
                            message: e.to_string(),
                        },
                    );
                    return Err(e.into());
                }
            };
            let reply = match request {
                Request::Compile(req) => {
                    self.compile(req, stream)?;
                    continue;
                }
                Request::Stats { zero } => {
                    self.pending.wait_idle();
                    Response::Stats(self.stats_report(zero))
                }
                Request::RunSummary { run_id, ended } => {
                    let Some((command, cwd)) = ended else {
                        protocol::write_frame(
                            stream,
                            &Response::Summary(self.stats.run_summary(&run_id)),
                        )?;
                        continue;
                    };
                    // Final counts: the run's last saves have finished. The
                    // run log (megabytes for a big build) is written after the
                    // reply, so that `cachefs run` ends at once; readers wait
                    // for it (`runlog::mark_saving`).
                    self.pending.wait_idle();
                    let run = self.runs.take(&self.config.dir, &run_id, command, cwd);
                    let mut summary = self.stats.run_summary(&run_id);
                    summary.notices = self.store.remote_refusals();
                    let reply = Response::Summary(summary);
                    let sent = protocol::write_frame(stream, &reply);
                    self.runs.save(&self.config.dir, &run);
                    sent?;
                    continue;
                }
                Request::Clear => self.clear(),
                Request::Ping => Response::Pong {
                    pid: std::process::id(),
                },
                Request::Shutdown => {
                    protocol::write_frame(
                        stream,
                        &Response::Pong {
                            pid: std::process::id(),
                        },
                    )?;
                    self.shutdown("stopped by `cachefs stop`");
                }
                Request::Finished(_) | Request::Abandon { .. } => Response::Error {
                    message: "protocol error: no compile in progress on this connection".into(),
                },
            };
            protocol::write_frame(stream, &reply)?;
        }
    }

    /// Empties the local store once the saves already queued are done; a
    /// shared remote tier is left as it is (other machines use it).
    fn clear(&self) -> Response {
        self.pending.wait_idle();
        let before = self.store.stats();
        match self.store.clear() {
            Ok(()) => {
                log::info!(
                    "cache cleared by `cachefs clear`: {} results, {} bytes",
                    before.results,
                    before.bytes
                );
                Response::Cleared {
                    entries: before.results,
                    bytes: before.bytes,
                }
            }
            Err(e) => Response::Error {
                message: format!("clearing the cache failed: {e}"),
            },
        }
    }

    fn stats_report(&self, zero: bool) -> protocol::StatsReport {
        if zero {
            self.stats.zero();
        }
        let mut report = self.stats.report();
        let store = self.store.stats();
        report.entries = store.results;
        report.bytes = store.bytes;
        report.limit = store.limit;
        report.observation = self.observation.clone();
        report.remote = self.store.remote_report().map(Box::new);
        report
    }

    /// A mirror whose connection was aborted leaves a dead mount (ENOTCONN
    /// for everyone who touches it): detach it at once. Compiles then run
    /// uncached until the next agent mounts a fresh mirror.
    fn clean_up_dead_mirror(&self) {
        for lane in self.lanes.newly_dead() {
            log::warn!(
                "the FUSE mirror at {} stopped; compiles use the other lanes, or run uncached",
                lane.mirror.mountpoint().display()
            );
            detach_mount(lane.mirror.mountpoint());
        }
    }

    /// Saves the stat cache if it learnt anything (see `stat_cache::file`).
    fn save_stat_cache(&self) {
        if !self.stat_cache.take_dirty() {
            return;
        }
        let path = stat_cache::file::path_in(&self.config.dir);
        match stat_cache::file::save(&self.stat_cache, &path) {
            Ok(n) => log::debug!("saved {n} stat cache entries to {}", path.display()),
            Err(e) => log::warn!("cannot save the stat cache to {}: {e}", path.display()),
        }
    }

    fn flush_stats(&self) {
        if let Some(bytes) = self.stats.take_dirty() {
            if let Err(e) = self.store.put_meta("stats", &bytes) {
                log::warn!("cannot save statistics: {e}");
            }
        }
    }

    /// Unmounts, saves, removes the socket and exits the process: in-flight
    /// compiles lose their connection and their clients fall back to
    /// compiling uncached.
    fn shutdown(&self, why: &str) -> ! {
        log::info!("agent {} exiting: {why}", std::process::id());
        self.flush_stats();
        self.save_stat_cache();
        self.store.close_for_exit();
        let _ = std::fs::remove_file(self.config.socket_path());
        self.unmount_lanes();
        std::process::exit(0)
    }

    /// The exit when the cache directory was taken away (`watch`): compiles
    /// in flight finish first (their clients would otherwise run them again
    /// uncached), then the lanes are unmounted. Nothing is written into the
    /// directory: it is gone, or a successor's (a stats flush, the stat cache,
    /// the index's clean-close marker or removing "our" socket would land in
    /// the new one). An index left unclosed only costs the next agent a check.
    fn shutdown_lost(&self, why: &str) -> ! {
        log::warn!(
            "agent {} exiting: {why}; the next compile starts a fresh agent",
            std::process::id()
        );
        let deadline = Instant::now() + LOST_DRAIN;
        while self.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.unmount_lanes();
        std::process::exit(0)
    }

    /// Detaches every lane and removes their directory.
    fn unmount_lanes(&self) {
        for lane in self.lanes.iter() {
            let m = &lane.mirror;
            let served: Vec<String> = m
                .request_counts()
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(op, n)| format!("{op} {n}"))
                .collect();
            log::info!("the mirror served {}", served.join(", "));
            detach_mount(m.mountpoint());
        }
        if let Some(dir) = &self.mounts {
            crate::fuse_mounts::place::remove_agent_dir(dir);
        }
    }
}

/// How long an agent whose directory was taken away lets compiles in flight
/// finish before it exits anyway.
const LOST_DRAIN: Duration = Duration::from_secs(10);

/// Mounts the lanes in this agent's own directory outside the cache
/// directory (`fuse_mounts::place`), after detaching what killed agents of
/// this cache directory left there. Views hide every agent's mounts (the
/// base), so no view walks into a mirror's own mount.
fn mount_lanes(cache_dir: &Path, mut options: MirrorOptions) -> Result<(lanes::Lanes, PathBuf)> {
    use crate::fuse_mounts::place;
    let base = place::base_dir().context("no private directory for the FUSE mounts")?;
    let cache_mounts = place::cache_dir_mounts(&base, cache_dir);
    let dir = place::agent_dir(&cache_mounts, std::process::id())
        .context("no private directory for the FUSE mounts")?;
    for stale in place::clean_dead_agents(&cache_mounts) {
        log::info!("detached {}, left by a killed agent", stale.display());
    }
    options.hide.push(base);
    match lanes::Lanes::mount(&dir, &options) {
        Ok(lanes) => Ok((lanes, dir)),
        Err(e) => {
            place::remove_agent_dir(&dir);
            Err(e.into())
        }
    }
}

fn detach_mount(path: &Path) {
    if let Err(e) = crate::fuse_mounts::detach(path) {
        log::warn!(
            "cannot unmount {} ({e}): remove it with `fusermount3 -uz`",
            path.display()
        );
    }
}

fn same_user(stream: &UnixStream) -> bool {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    match getsockopt(stream, PeerCredentials) {
        Ok(cred) => cred.uid() == nix::unistd::geteuid().as_raw(),
        Err(_) => false,
    }
}

fn spawn_housekeeping(agent: Arc<Agent>, watched: watch::Watched) {
    std::thread::spawn(move || {
        let mut flushed_after: Option<Instant> = None;
        loop {
            std::thread::sleep(Duration::from_secs(1));
            // First: every step below writes into the directory.
            if let Some(why) = watched.lost() {
                agent.shutdown_lost(&why);
            }
            agent.flush_stats();
            agent.clean_up_dead_mirror();
            let last = *agent.last_activity.lock().unwrap();
            let quiet = agent.active.load(Ordering::SeqCst) == 0;
            // Once per quiet spell: commit queued LRU touches and blob entries.
            if quiet && last.elapsed() >= Duration::from_secs(2) && flushed_after != Some(last) {
                flushed_after = Some(last);
                if let Err(e) = agent.store.flush() {
                    log::warn!("cannot flush the store: {e}");
                }
                agent.save_stat_cache();
            }
            // 0 means never, as sccache's SCCACHE_IDLE_TIMEOUT=0 does.
            let timeout = agent.config.idle_timeout;
            if quiet && !timeout.is_zero() && last.elapsed() >= timeout {
                agent.shutdown("idle timeout");
            }
        }
    });
}
