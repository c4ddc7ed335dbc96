//! The mirror's lifecycle: mount, views, unmount. Never leaves a stale
//! mount behind: a mount left by a killed process is detached before
//! mounting, and unmounting falls back to a lazy detach plus a connection
//! abort so the daemon threads always end.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{Config, INodeNo, MountOption, Notifier, Session, SessionUnmounter};
use nix::mount::MntFlags;
use parking_lot::Mutex;

use crate::error::MirrorError;
use crate::fs::{MirrorFs, Shared, PROBE_PREFIX};
use crate::options::MirrorOptions;
use crate::processes::{IgnoreCommand, ProcessRecord, ProcessTable};
use crate::record::Record;

/// How long `unmount` waits for the daemon threads before leaving them.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Stale mounts detached from one path before giving up.
const MAX_STALE: usize = 8;

/// A liveness probe of a mirror of views: see [`Mirror::new_probe`].
/// Dropping it forgets it.
pub struct Probe {
    n: u64,
    /// The path to look up.
    pub path: PathBuf,
    shared: Arc<Shared>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.shared.probes.lock().remove(&self.n);
    }
}

/// A mounted mirror. Dropping it unmounts.
#[derive(Debug)]
pub struct Mirror {
    mountpoint: PathBuf,
    shared: Arc<Shared>,
    notifier: Notifier,
    session: Mutex<Option<Running>>,
    probes_sent: AtomicU64,
}

#[derive(Debug)]
struct Running {
    unmounter: SessionUnmounter,
    thread: JoinHandle<io::Result<()>>,
    /// The connection's number under /sys/fs/fuse/connections.
    connection: Option<u64>,
}

/// Table sizes, for tests and diagnostics: after `close_view` of every view
/// and the release of every file, all are back to zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MirrorStats {
    pub inodes: usize,
    pub views: usize,
    pub open_files: usize,
    pub open_dirs: usize,
    pub backing_ids: usize,
}

impl Mirror {
    /// Mounts the mirror at `mountpoint` (created if needed) and returns once
    /// the mount is live.
    pub fn mount(mountpoint: &Path, options: MirrorOptions) -> Result<Mirror, MirrorError> {
        Mirror::start(mountpoint, options, None)
    }

    /// Mounts the directory `src` itself at `mountpoint` (`cachefs mount`):
    /// one view shared by everything run inside, each access attributed to
    /// the process that made it ([`Mirror::processes`]). Processes for which
    /// `ignore` says so are served but not recorded.
    pub fn mount_tree(
        src: &Path,
        mountpoint: &Path,
        options: MirrorOptions,
        ignore: IgnoreCommand,
    ) -> Result<Mirror, MirrorError> {
        let src = src.canonicalize().map_err(|source| MirrorError::Source {
            path: src.to_path_buf(),
            source,
        })?;
        if !src.is_dir() {
            return Err(MirrorError::Source {
                path: src,
                source: io::Error::from(io::ErrorKind::NotADirectory),
            });
        }
        Mirror::start(mountpoint, options, Some((src, ProcessTable::new(ignore))))
    }

    fn start(
        mountpoint: &Path,
        options: MirrorOptions,
        tree: Option<(PathBuf, ProcessTable)>,
    ) -> Result<Mirror, MirrorError> {
        check_fuse_device()?;
        let mountpoint = prepare_mountpoint(mountpoint)?;
        let hide = hide_set(&mountpoint, &options.hide);
        let (root, processes) = tree.unzip();
        let shared = Arc::new(Shared::new(&options, hide, processes));
        if let Some(root) = &root {
            let view = shared.views.lock().open(HashSet::new());
            shared.inodes.lock().pin_root(view, root);
        }
        let fs = MirrorFs::new(shared.clone());
        let mut session = Session::new(fs, &mountpoint, &config(&options)).map_err(|source| {
            MirrorError::Mount {
                path: mountpoint.clone(),
                source,
            }
        })?;
        let unmounter = session.unmount_callable();
        let notifier = session.notifier();
        let cpus = options.cpus.clone();
        let thread = std::thread::Builder::new()
            .name("cachefs-mirror".into())
            .spawn(move || {
                // The daemon threads fuser starts inherit this affinity.
                pin_current_thread(&cpus);
                session.run()
            })
            .map_err(|source| MirrorError::Thread { source })?;
        let connection = connection_id(&mountpoint);
        let running = Running {
            unmounter,
            thread,
            connection,
        };
        Ok(Mirror {
            mountpoint,
            shared,
            notifier,
            session: Mutex::new(Some(running)),
            probes_sent: AtomicU64::new(0),
        })
    }

    /// How many accesses a tree mount has recorded so far (0 for a mirror of
    /// views): cheap, for deciding whether `processes` changed.
    pub fn processes_recorded(&self) -> u64 {
        self.shared
            .processes
            .as_ref()
            .map_or(0, |p| p.lock().recorded())
    }

    /// A tree mount's record so far: every process image that made an
    /// access, parents before children. Empty for a mirror of views.
    pub fn processes(&self) -> Vec<ProcessRecord> {
        self.shared
            .processes
            .as_ref()
            .map(|p| p.lock().snapshot())
            .unwrap_or_default()
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether the daemon still serves the mount: false once the session
    /// ended (unmounted, or its connection aborted through
    /// /sys/fs/fuse/connections/N/abort). A view opened on a dead mirror
    /// observes nothing, and compiles in it fail.
    pub fn is_alive(&self) -> bool {
        self.session
            .lock()
            .as_ref()
            .is_some_and(|r| !r.thread.is_finished())
    }

    /// A liveness probe for a process other than this one to look up, after
    /// a compile in one of this mirror's views has ended: a name in the
    /// mount's root that only the daemon itself answers (ENOENT, which the
    /// kernel does not cache). See [`Mirror::probe_answered`].
    ///
    /// Never look it up from this process: a thread waiting on its own
    /// process's mount cannot be killed once the daemon holds the request,
    /// so a SIGKILL landing then left the agent a zombie forever, its
    /// `/dev/fuse` open, and every compile in the mount hung (seen in
    /// `reliability::agent_killed_at_ten_points`: one agent thread in
    /// `request_wait_answer`, a gcc waiting on a lookup, its client on the
    /// agent's socket).
    pub fn new_probe(&self) -> Probe {
        let n = self.probes_sent.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared.probes.lock().insert(n, false);
        Probe {
            n,
            path: self.mountpoint.join(format!("{PROBE_PREFIX}{n}")),
            shared: self.shared.clone(),
        }
    }

    /// Whether the daemon answered this very probe and still runs. A
    /// connection once aborted stays aborted, so a probe answered after a
    /// compile ended proves the compile saw a live mirror throughout.
    /// (Another compile's probe answered meanwhile proves nothing of this
    /// one's: the connection may have been aborted after it.)
    pub fn probe_answered(&self, probe: &Probe) -> bool {
        // The failed lookup left a negative dentry, one per miss for the
        // agent's life: drop it now.
        let name = probe.path.file_name().unwrap_or_default();
        let _ = self.notifier.inval_entry(INodeNo::ROOT, name);
        let answered = self.shared.probes.lock().get(&probe.n) == Some(&true);
        answered && self.is_alive()
    }

    /// The connection's number under /sys/fs/fuse/connections (fusectl),
    /// taken at mount time.
    pub fn connection(&self) -> Option<u64> {
        self.session.lock().as_ref().and_then(|r| r.connection)
    }

    /// Starts recording a new view; its tree is `view_root(id)`.
    pub fn open_view(&self) -> u64 {
        self.open_view_with_plumbing(Vec::new())
    }

    /// A new view in which the special files at `plumbing` (real paths:
    /// jobserver FIFOs, see [`crate::jobserver_fifos`]) are looked up
    /// unrecorded: the client binds the real ones over them
    /// ([`crate::FifoBinds`]), and they are how the build hands out jobs,
    /// not inputs. Opened through the mirror all the same (the bind missing),
    /// one is recorded like any other special file.
    pub fn open_view_with_plumbing(&self, plumbing: Vec<PathBuf>) -> u64 {
        let plumbing = with_real_parents(plumbing);
        let id = self.shared.views.lock().open(plumbing);
        self.shared.inodes.lock().open_view(id);
        id
    }

    pub fn view_root(&self, id: u64) -> PathBuf {
        self.mountpoint.join(id.to_string())
    }

    /// Stops recording, returns what the view saw and forgets its nodes;
    /// later kernel requests on them fail (ESTALE) and are not recorded.
    pub fn close_view(&self, id: u64) -> Option<Record> {
        let record = self.shared.views.lock().close(id)?;
        self.shared.inodes.lock().close_view(id);
        // Drops the kernel's dentries and inodes of the view now rather than
        // under memory pressure; it answers with FORGETs we can ignore.
        let _ = self
            .notifier
            .inval_entry(INodeNo::ROOT, OsStr::new(&id.to_string()));
        Some(record)
    }

    /// Whether the kernel serves file data itself (FUSE passthrough). False
    /// when not asked for, not offered by the kernel, or refused (EPERM).
    pub fn passthrough_active(&self) -> bool {
        self.shared.passthrough.load(Ordering::Relaxed)
    }

    /// FUSE requests served since the mount, by kind (`lookup`, `open`, …).
    pub fn request_counts(&self) -> Vec<(&'static str, u64)> {
        self.shared.request_counts()
    }

    pub fn stats(&self) -> MirrorStats {
        let (open_files, backing_ids) = {
            let files = self.shared.files.lock();
            (files.len(), files.backing.live())
        };
        MirrorStats {
            inodes: self.shared.inodes.lock().len(),
            views: self.shared.views.lock().len(),
            open_files,
            open_dirs: self.shared.dirs.lock().len(),
            backing_ids,
        }
    }

    pub fn unmount(self) -> Result<(), MirrorError> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<(), MirrorError> {
        let Some(running) = self.session.lock().take() else {
            return Ok(());
        };
        let Running {
            mut unmounter,
            thread,
            connection,
        } = running;
        let res = unmounter.unmount().or_else(|e| {
            log::info!(
                "unmount of {} failed ({e}); detaching",
                self.mountpoint.display()
            );
            detach(&self.mountpoint)
        });
        // Bind mounts in other namespaces keep the connection alive after
        // the unmount; aborting it ends the daemon threads regardless.
        abort_connection(connection);
        wait(thread, &self.mountpoint);
        res.map_err(|source| MirrorError::Unmount {
            path: self.mountpoint.clone(),
            source,
        })
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::warn!("{e}");
        }
    }
}

/// Each path as given and under its parent's real path: the daemon sees the
/// path the kernel walked, which is the real one where a parent is a
/// symlink (`TMPDIR=/var/tmp` and /var/tmp a link). Done before the view
/// opens, outside it.
fn with_real_parents(paths: Vec<PathBuf>) -> HashSet<PathBuf> {
    let mut set = HashSet::new();
    for path in paths {
        let real = match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => dir.canonicalize().ok().map(|d| d.join(name)),
            _ => None,
        };
        set.extend(real);
        set.insert(path);
    }
    set
}

/// Restricts the calling thread to `cpus` (nothing when empty). A failure
/// (a CPU taken away by a cgroup meanwhile) leaves it unpinned: slower
/// round trips, nothing worse.
fn pin_current_thread(cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    let mut set = nix::sched::CpuSet::new();
    for &cpu in cpus {
        if set.set(cpu).is_err() {
            return;
        }
    }
    if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
        log::info!("daemon threads not pinned to CPUs {cpus:?}: {e}");
    }
}

fn config(options: &MirrorOptions) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("cachefs".into()),
        MountOption::DefaultPermissions,
        MountOption::Exec,
        MountOption::NoAtime,
    ];
    config.n_threads = Some(options.threads.max(1));
    config.clone_fd = true;
    config
}

fn check_fuse_device() -> Result<(), MirrorError> {
    let dev = Path::new("/dev/fuse");
    if !dev.exists() {
        return Err(MirrorError::NoFuseDevice);
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map(drop)
        .map_err(|source| MirrorError::FuseDevice { source })
}

/// Detaches a mount left by a killed daemon (its path fails with ENOTCONN),
/// creates the directory, and returns its canonical path.
fn prepare_mountpoint(path: &Path) -> Result<PathBuf, MirrorError> {
    // Killed more than once, a path can hold several stacked stale mounts.
    for _ in 0..MAX_STALE {
        if !is_stale(path) {
            break;
        }
        detach(path).map_err(|source| MirrorError::StaleMount {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let mountpoint_error = |source| MirrorError::Mountpoint {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path).map_err(mountpoint_error)?;
    path.canonicalize().map_err(mountpoint_error)
}

/// Whether `path` is a FUSE mount whose daemon is gone (every access fails
/// with ENOTCONN, or ECONNABORTED after an abort). Its root's attributes may
/// still be cached, so a stat can succeed: listing it always asks the (dead)
/// daemon.
pub fn is_stale(path: &Path) -> bool {
    let dead = |e: io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
        )
    };
    match std::fs::metadata(path) {
        Err(e) => dead(e),
        Ok(md) if md.is_dir() => std::fs::read_dir(path).err().is_some_and(dead),
        Ok(_) => false,
    }
}

fn detach(path: &Path) -> io::Result<()> {
    nix::mount::umount2(path, MntFlags::MNT_DETACH).map_err(io::Error::from)
}

/// Hidden paths as given and canonical (what the daemon's lookups build is
/// canonical below a view root only if no symlink was crossed).
fn hide_set(mountpoint: &Path, hide: &[PathBuf]) -> HashSet<PathBuf> {
    let mut set = HashSet::from([mountpoint.to_path_buf()]);
    for path in hide {
        if path.is_absolute() {
            set.insert(path.clone());
        }
        if let Ok(real) = path.canonicalize() {
            set.insert(real);
        }
    }
    set
}

/// fusectl names a connection by the kernel's dev_t of the mount
/// (major << 20 | minor).
fn connection_id(mountpoint: &Path) -> Option<u64> {
    let dev = std::fs::metadata(mountpoint).ok()?.dev();
    Some((u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev)))
}

fn abort_connection(connection: Option<u64>) {
    let Some(id) = connection else {
        return;
    };
    let abort = format!("/sys/fs/fuse/connections/{id}/abort");
    // Absent when the connection already ended or fusectl is not mounted.
    let _ = std::fs::write(abort, "1");
}

fn wait(thread: JoinHandle<io::Result<()>>, mountpoint: &Path) {
    let start = Instant::now();
    while !thread.is_finished() {
        if start.elapsed() > JOIN_TIMEOUT {
            log::warn!(
                "the mirror's daemon for {} is still running (its mount is held elsewhere); leaving it",
                mountpoint.display()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if let Ok(Err(e)) = thread.join() {
        log::warn!(
            "the mirror's daemon for {} ended with {e}",
            mountpoint.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_is_send_and_sync() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Mirror>();
    }

    #[test]
    fn plumbing_is_also_known_under_its_parent_s_real_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        let link = real.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let set = with_real_parents(vec![link.join("fifo"), PathBuf::from("/")]);
        assert!(set.contains(&link.join("fifo")));
        assert!(set.contains(&real.join("fifo")));
        assert!(set.contains(Path::new("/")));
    }

    #[test]
    fn the_mountpoint_is_always_hidden() {
        let hide = hide_set(
            Path::new("/m"),
            &[PathBuf::from("/cache/"), PathBuf::from("rel")],
        );
        assert!(hide.contains(Path::new("/m")));
        assert!(hide.contains(Path::new("/cache")));
        assert!(!hide.iter().any(|p| p.is_relative()));
    }
}
