//! Per-process attribution for tree mounts (`cachefs mount SRC MNT`): there
//! is one view shared by every program run inside MNT, so an access is
//! attributed to the process that made it. A FUSE request names the calling
//! thread; `/proc` tells its process, its parent and the program it runs.
//!
//! A process *image* is one program run by one process: an exec starts a new
//! image whose parent is the image it replaced (the shell that set up a
//! redirection and then exec'd the command is the command's parent), and a
//! fork starts one whose parent is the forking process's current image. The
//! images of one build therefore form a tree, and a process tree's accesses
//! are those of an image and all its descendants.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::record::Access;
use crate::views::is_idempotent;

/// How far up the parent chain an unknown parent is looked for: far enough
/// for `make → sh → sh → cmd`, short enough to stop at the user's shell.
const MAX_ANCESTRY: usize = 8;

/// Decides from its argv that a process's accesses are not recorded (the
/// cachefs agent reading files on behalf of compiles it records itself).
pub type IgnoreCommand = Box<dyn Fn(&[OsString]) -> bool + Send + Sync>;

/// One program run by one process, and what it did inside the mount.
#[derive(Clone, Debug)]
pub struct ProcessRecord {
    pub pid: u32,
    /// Index (in [`crate::Mirror::processes`]) of the image that forked this
    /// process or that this one replaced by exec.
    pub parent: Option<usize>,
    pub argv: Vec<OsString>,
    /// The working directory at its first access, as the process saw it.
    pub cwd: PathBuf,
    pub first_seen_unix_ms: u64,
    /// Paths are real paths under the mount's source directory.
    pub accesses: Vec<Access>,
}

#[derive(Debug)]
struct Image {
    record: ProcessRecord,
    start: u64,
    seen: HashSet<Access>,
}

/// What `/proc/<tid>/stat` says of a thread.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stat {
    comm: Vec<u8>,
    ppid: u32,
    /// Clock ticks after boot; with the tid it names the thread uniquely,
    /// since tids are reused.
    start: u64,
}

#[derive(Debug)]
struct Thread {
    stat: Stat,
    /// None: an ignored process.
    image: Option<usize>,
}

pub(crate) struct ProcessTable {
    images: Vec<Image>,
    threads: HashMap<u32, Thread>,
    /// Each process's newest image, by pid.
    latest: HashMap<u32, usize>,
    ignore: IgnoreCommand,
    /// Accesses recorded so far: tells a saver whether anything changed
    /// without copying the record.
    recorded: u64,
}

impl std::fmt::Debug for ProcessTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessTable")
            .field("images", &self.images.len())
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl ProcessTable {
    pub fn new(ignore: IgnoreCommand) -> ProcessTable {
        ProcessTable {
            images: Vec::new(),
            threads: HashMap::new(),
            latest: HashMap::new(),
            ignore,
            recorded: 0,
        }
    }

    /// Appends `access` to the calling thread's image. Requests the kernel
    /// makes on its own (tid 0) and threads already gone when their request
    /// is served are dropped: nothing tells whose they were.
    pub fn record(&mut self, tid: u32, access: Access) {
        let Some(image) = self.image_of(tid) else {
            return;
        };
        let image = &mut self.images[image];
        if is_idempotent(&access) && !image.seen.insert(access.clone()) {
            return;
        }
        image.record.accesses.push(access);
        self.recorded += 1;
    }

    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    pub fn snapshot(&self) -> Vec<ProcessRecord> {
        self.images.iter().map(|i| i.record.clone()).collect()
    }

    fn image_of(&mut self, tid: u32) -> Option<usize> {
        if tid == 0 {
            return None;
        }
        let stat = read_stat(tid)?;
        if let Some(t) = self.threads.get(&tid) {
            if t.stat == stat {
                return t.image;
            }
        }
        let tgid = read_tgid(tid).unwrap_or(tid);
        let image = if tgid == tid {
            self.new_image(tid, &stat)
        } else {
            self.image_of(tgid)
        };
        self.threads.insert(tid, Thread { stat, image });
        image
    }

    /// A process seen for the first time, or after an exec (its command
    /// name changed).
    fn new_image(&mut self, pid: u32, stat: &Stat) -> Option<usize> {
        let argv = read_argv(pid);
        if (self.ignore)(&argv) {
            return None;
        }
        let replaced = self
            .latest
            .get(&pid)
            .copied()
            .filter(|&i| self.images[i].start == stat.start);
        let parent = replaced.or_else(|| self.known_ancestor(stat));
        let record = ProcessRecord {
            pid,
            parent,
            argv,
            cwd: std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default(),
            first_seen_unix_ms: now_ms(),
            accesses: Vec::new(),
        };
        self.images.push(Image {
            record,
            start: stat.start,
            seen: HashSet::new(),
        });
        let index = self.images.len() - 1;
        self.latest.insert(pid, index);
        Some(index)
    }

    /// The nearest ancestor that made an access already (a build tool's
    /// recipe shell may never touch the mount itself).
    fn known_ancestor(&self, stat: &Stat) -> Option<usize> {
        let mut ppid = stat.ppid;
        let mut child_start = stat.start;
        for _ in 0..MAX_ANCESTRY {
            if ppid <= 1 {
                return None;
            }
            let parent = read_stat(ppid)?;
            if parent.start > child_start {
                return None; // the parent's pid was reused
            }
            if let Some(&i) = self.latest.get(&ppid) {
                if self.images[i].start == parent.start {
                    return Some(i);
                }
            }
            ppid = parent.ppid;
            child_start = parent.start;
        }
        None
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn read_stat(tid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read(format!("/proc/{tid}/stat")).ok()?)
}

/// `pid (comm) state ppid … starttime …`: comm may hold spaces and
/// parentheses, so fields are counted after the last ')'.
fn parse_stat(bytes: &[u8]) -> Option<Stat> {
    let open = bytes.iter().position(|&b| b == b'(')?;
    let close = bytes.iter().rposition(|&b| b == b')')?;
    let comm = bytes.get(open + 1..close)?.to_vec();
    let rest = std::str::from_utf8(bytes.get(close + 1..)?).ok()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state) of proc(5).
    Some(Stat {
        comm,
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

fn read_tgid(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn read_argv(pid: u32) -> Vec<OsString> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    bytes
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let line =
            b"4242 (a) b (c)) S 17 4242 4242 0 -1 4194304 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 2 3\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.comm, b"a) b (c)");
        assert_eq!(stat.ppid, 17);
        assert_eq!(stat.start, 987654);
        assert!(parse_stat(b"garbage").is_none());
    }

    #[test]
    fn this_process_and_its_threads_are_one_image() {
        let mut table = ProcessTable::new(Box::new(|_| false));
        let me = std::process::id();
        let found = |p: &str| Access::Found {
            path: PathBuf::from(p),
            kind: crate::Kind::File,
        };
        table.record(me, found("/a"));
        let tid = std::thread::spawn(|| unsafe { libc::gettid() } as u32)
            .join()
            .unwrap();
        // The thread is gone by now: its request is dropped, not misfiled.
        table.record(tid, found("/gone"));
        let live = std::thread::spawn(move || {
            let tid = unsafe { libc::gettid() } as u32;
            let mut t = ProcessTable::new(Box::new(|_| false));
            t.record(tid, found("/b"));
            t.record(std::process::id(), found("/c"));
            t.snapshot()
        })
        .join()
        .unwrap();
        assert_eq!(live.len(), 1, "{live:?}");
        assert_eq!(live[0].pid, me);
        assert_eq!(live[0].accesses, vec![found("/b"), found("/c")]);
        let all = table.snapshot();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].accesses, vec![found("/a")]);
        assert!(!all[0].argv.is_empty());
        table.record(0, found("/kernel"));
        assert_eq!(table.snapshot()[0].accesses.len(), 1);
    }

    #[test]
    fn ignored_commands_record_nothing() {
        let mut table = ProcessTable::new(Box::new(|_| true));
        table.record(std::process::id(), Access::ReadDir { path: "/".into() });
        assert!(table.snapshot().is_empty());
    }
}
