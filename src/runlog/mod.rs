//! What each `cachefs run` did, compile by compile: the agent writes one JSON
//! file per run into `$CACHEFS_DIR/runs/` when the run ends; `cachefs runs`,
//! `deps`, `graph` and `explain` read them.

pub mod graph;
pub mod tree_record;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn live_marker(cache_dir: &Path, id: &str) -> PathBuf {
    runs_dir(cache_dir).join(format!("{id}.live"))
}

/// Marks the run of a live `cachefs mount` so that pruning spares it, or
/// unmarks it when the mount ends.
pub fn set_live(cache_dir: &Path, id: &str, live: bool) -> std::io::Result<()> {
    let marker = live_marker(cache_dir, id);
    if live {
        std::fs::create_dir_all(runs_dir(cache_dir))?;
        std::fs::write(marker, b"")
    } else {
        match std::fs::remove_file(marker) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Runs kept; older files are deleted when a new one is written.
pub const KEEP_RUNS: usize = 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub command: Vec<String>,
    pub cwd: String,
    pub started_unix_ms: u64,
    /// "mount" for a `cachefs mount` session, whose records are every
    /// process run inside the mount; empty for `cachefs run`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    pub compiles: Vec<CompileRecord>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CompileRecord {
    pub argv: Vec<String>,
    pub cwd: String,
    /// The environment variables the compile read, with their values (empty
    /// when unset).
    pub env: BTreeMap<String, String>,
    pub unix_ms: u64,
    /// "hit", "miss", "uncacheable" or "error".
    pub outcome: String,
    /// Why it was uncacheable or failed.
    pub reason: Option<String>,
    /// Why a miss missed (what changed since the stored entry).
    pub miss: Option<MissReason>,
    pub key: String,
    /// Files read, with their content hash.
    pub reads: Vec<String>,
    /// Paths looked up and not found.
    pub absent: Vec<String>,
    pub listed: Vec<String>,
    pub written: Vec<String>,
    /// In a mount session: the process's pid, and the index of the record
    /// of the process that started it (or that it replaced by exec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<usize>,
}

impl RunRecord {
    pub fn is_mount(&self) -> bool {
        self.kind == MOUNT_KIND
    }

    /// The build step record `i` is part of: its ancestor started by the
    /// nearest build tool above it (make's recipe shell, ninja's command),
    /// or, with no build tool above, by the session's first process (the
    /// command typed in the mount). A generator's rename helper (`mv x.tmp
    /// x`) is thereby part of the script that ran it.
    pub fn step_of(&self, i: usize) -> usize {
        let mut step = i;
        while let Some(parent) = self.compiles[step].parent.filter(|&p| p < step) {
            let c = &self.compiles[parent];
            if c.parent.is_none() || c.argv.first().is_some_and(|a| is_build_tool(a)) {
                return step;
            }
            step = parent;
        }
        step
    }

    /// For each record, the index of its step in [`RunRecord::steps`].
    pub fn step_index(&self) -> Vec<usize> {
        let mut index = vec![0; self.compiles.len()];
        let mut steps = 0;
        for i in 0..self.compiles.len() {
            let step = self.step_of(i);
            if step == i {
                index[i] = steps;
                steps += 1;
            } else {
                index[i] = index[step];
            }
        }
        index
    }

    /// A mount session seen step by step ([`RunRecord::step_of`]): one
    /// record per step, with what its processes did together. A file the
    /// step wrote is not also its input (a temporary it renamed into place,
    /// a header it generated and then compiled).
    pub fn steps(&self) -> RunRecord {
        self.steps_by(&self.step_index())
    }

    /// [`RunRecord::steps`] with the caller's [`RunRecord::step_index`].
    pub fn steps_by(&self, index: &[usize]) -> RunRecord {
        let mut steps: Vec<CompileRecord> = Vec::new();
        for (i, c) in self.compiles.iter().enumerate() {
            // A step's first record is its root: steps are numbered in order.
            if index[i] == steps.len() {
                steps.push(CompileRecord {
                    parent: c.parent.filter(|&p| p < i).map(|p| index[p]),
                    reads: Vec::new(),
                    absent: Vec::new(),
                    listed: Vec::new(),
                    written: Vec::new(),
                    ..c.clone()
                });
            }
            let s = &mut steps[index[i]];
            s.reads.extend(c.reads.iter().cloned());
            s.absent.extend(c.absent.iter().cloned());
            s.listed.extend(c.listed.iter().cloned());
            s.written.extend(c.written.iter().cloned());
        }
        for s in &mut steps {
            for list in [&mut s.reads, &mut s.absent, &mut s.listed, &mut s.written] {
                let mut seen = std::collections::BTreeSet::new();
                list.retain(|p| seen.insert(p.clone()));
            }
            let written: std::collections::BTreeSet<&String> = s.written.iter().collect();
            s.reads.retain(|r| !written.contains(r));
        }
        RunRecord {
            id: self.id.clone(),
            command: self.command.clone(),
            cwd: self.cwd.clone(),
            started_unix_ms: self.started_unix_ms,
            kind: self.kind.clone(),
            compiles: steps,
        }
    }
}

/// Programs whose children are the steps of a build.
const BUILD_TOOLS: &[&str] = &[
    "make", "gmake", "ninja", "samu", "cmake", "cargo", "meson", "scons", "bazel",
];

fn is_build_tool(argv0: &str) -> bool {
    let name = Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    BUILD_TOOLS.contains(&name.as_ref())
}

/// `RunRecord::kind` of a `cachefs mount` session.
pub const MOUNT_KIND: &str = "mount";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MissReason {
    /// Nothing stored for this compiler, command line, directory and
    /// environment.
    NoEntry,
    /// The most recent stored dep set for this call no longer holds here.
    Changed {
        path: String,
        was: String,
        now: String,
    },
    /// `CACHEFS_RECACHE` asked for a fresh compile.
    Recache,
}

/// Milliseconds since the epoch, as run ids and records carry them.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A new run's id: its start time (what `list_ids` sorts by) and this
/// process's pid.
pub fn new_run_id() -> String {
    format!("{}-{}", now_unix_ms(), std::process::id())
}

pub fn runs_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("runs")
}

fn saving_marker(cache_dir: &Path, id: &str) -> PathBuf {
    runs_dir(cache_dir).join(format!(".{id}.saving"))
}

/// A marker older than this belongs to an agent that died while writing.
const STALE_SAVING: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a reader waits for runs being written.
const WAIT_FOR_SAVES: std::time::Duration = std::time::Duration::from_secs(10);

/// Announces that the run's file is about to be written (the agent answers
/// `cachefs run` first, then writes): readers wait until `save` is done.
pub fn mark_saving(cache_dir: &Path, id: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(runs_dir(cache_dir))?;
    std::fs::write(saving_marker(cache_dir, id), b"")
}

/// Drops the markers of runs whose agent died while writing them: called by
/// an agent that has just taken the cache directory's lock, so no other
/// agent is writing there.
pub fn clear_saving_markers(cache_dir: &Path) {
    let Ok(dir) = std::fs::read_dir(runs_dir(cache_dir)) else {
        return;
    };
    for e in dir.flatten() {
        if e.file_name().to_string_lossy().ends_with(".saving") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Waits while a run's file is being written (a fresh marker is there).
fn wait_for_saves(cache_dir: &Path) {
    let start = std::time::Instant::now();
    while start.elapsed() < WAIT_FOR_SAVES && any_saving(cache_dir) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn any_saving(cache_dir: &Path) -> bool {
    let Ok(dir) = std::fs::read_dir(runs_dir(cache_dir)) else {
        return false;
    };
    dir.flatten().any(|e| {
        let fresh = || {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < STALE_SAVING)
        };
        e.file_name().to_string_lossy().ends_with(".saving") && fresh()
    })
}

/// Writes a run atomically and drops the oldest beyond KEEP_RUNS.
pub fn save(cache_dir: &Path, run: &RunRecord) -> std::io::Result<()> {
    let dir = runs_dir(cache_dir);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}.json", run.id));
    let tmp = dir.join(format!(".{}.json.tmp", run.id));
    std::fs::write(
        &tmp,
        serde_json::to_vec(run).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, &path)?;
    let _ = std::fs::remove_file(saving_marker(cache_dir, &run.id));
    // The run just written and those of live `cachefs mount`s are kept even
    // when they are the oldest: a mount saves its record again and again
    // while newer runs pile up.
    let mut others: Vec<String> = ids_in(cache_dir)
        .into_iter()
        .filter(|id| *id != run.id && !live_marker(cache_dir, id).exists())
        .collect();
    while others.len() >= KEEP_RUNS {
        let oldest = others.remove(0);
        let _ = std::fs::remove_file(dir.join(format!("{oldest}.json")));
    }
    Ok(())
}

/// Run ids, oldest first (ids start with the start time in milliseconds),
/// once the runs being written are there.
pub fn list_ids(cache_dir: &Path) -> Vec<String> {
    wait_for_saves(cache_dir);
    ids_in(cache_dir)
}

fn ids_in(cache_dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(runs_dir(cache_dir))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".json")
                        .filter(|_| !name.starts_with('.'))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort_by_key(|id| sort_key(id));
    ids
}

fn sort_key(id: &str) -> (u64, String) {
    (started_unix_ms(id), id.to_string())
}

/// The start time a run id begins with (0 for an id of another shape).
pub fn started_unix_ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

pub fn load(cache_dir: &Path, id: &str) -> Result<RunRecord, String> {
    if saving_marker(cache_dir, id).exists() {
        wait_for_saves(cache_dir);
    }
    let path = runs_dir(cache_dir).join(format!("{id}.json"));
    let bytes =
        std::fs::read(&path).map_err(|e| format!("cannot read run {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("run file {} is damaged: {e}", path.display()))
}

/// Runs, newest first, skipping damaged files.
pub fn newest_first(cache_dir: &Path) -> impl Iterator<Item = RunRecord> + '_ {
    list_ids(cache_dir)
        .into_iter()
        .rev()
        .filter_map(move |id| load(cache_dir, &id).ok())
}

/// The most recent compile that wrote `path`, and the run it belongs to.
pub fn last_writer(cache_dir: &Path, path: &str) -> Option<(RunRecord, usize)> {
    newest_first(cache_dir).find_map(|run| {
        let i = run
            .compiles
            .iter()
            .rposition(|c| c.written.iter().any(|w| w == path))?;
        Some((run, i))
    })
}

/// `path` as the newest `cachefs mount` session whose source holds it
/// showed it (under its mountpoint).
pub fn mount_path_of(cache_dir: &Path, path: &str) -> Option<String> {
    newest_first(cache_dir)
        .filter(|run| run.is_mount())
        .find_map(|run| {
            let (src, mnt) = (run.command.get(2)?, run.command.get(3)?);
            let rest = Path::new(path).strip_prefix(src).ok()?;
            Some(Path::new(mnt).join(rest).to_string_lossy().into_owned())
        })
}

/// The compile before `(run, index)` that wrote `path`, searching back in
/// time: what a miss is compared with when no stored entry matched its key.
pub fn previous_writer(
    cache_dir: &Path,
    path: &str,
    run_id: &str,
    index: usize,
) -> Option<CompileRecord> {
    let mut seen_current = false;
    for run in newest_first(cache_dir) {
        let upto = if run.id == run_id {
            seen_current = true;
            index
        } else if seen_current {
            run.compiles.len()
        } else {
            continue;
        };
        if let Some(c) = run.compiles[..upto]
            .iter()
            .rev()
            .find(|c| c.written.iter().any(|w| w == path))
        {
            return Some(c.clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(
        argv: &str,
        parent: Option<usize>,
        reads: &[&str],
        written: &[&str],
    ) -> CompileRecord {
        CompileRecord {
            argv: argv.split(' ').map(str::to_owned).collect(),
            parent,
            reads: reads.iter().map(|s| s.to_string()).collect(),
            written: written.iter().map(|s| s.to_string()).collect(),
            ..CompileRecord::default()
        }
    }

    /// bash → make → { sh gen.sh → { sed, mv }, gcc → cc1 }
    fn session() -> RunRecord {
        RunRecord {
            kind: MOUNT_KIND.into(),
            compiles: vec![
                process("bash", None, &[], &[]),
                process("make", Some(0), &["/m/Makefile"], &[]),
                process("sh gen.sh", Some(1), &["/m/gen.sh"], &["/m/v.h.tmp"]),
                process("sed s/x/y/ v.h.in", Some(2), &["/m/v.h.in"], &[]),
                process("mv v.h.tmp v.h", Some(2), &["/m/v.h.tmp"], &["/m/v.h"]),
                process("/usr/bin/gcc -c m.c", Some(1), &[], &[]),
                process("cc1 m.c", Some(5), &["/m/m.c", "/m/v.h"], &["/m/m.o"]),
            ],
            ..RunRecord::default()
        }
    }

    #[test]
    fn steps_are_what_a_build_tool_started_with_everything_below() {
        let run = session();
        assert_eq!(run.step_of(4), 2, "mv belongs to the generator's step");
        assert_eq!(run.step_of(6), 5, "cc1 belongs to the gcc step");
        assert_eq!(run.step_of(1), 1, "make was started by the first process");
        assert_eq!(run.step_of(0), 0);
        assert_eq!(run.step_index(), vec![0, 1, 2, 2, 2, 3, 3]);
        let steps = run.steps();
        let labels: Vec<String> = steps.compiles.iter().map(|c| c.argv.join(" ")).collect();
        assert_eq!(labels, ["bash", "make", "sh gen.sh", "/usr/bin/gcc -c m.c"]);
        let gen = &steps.compiles[2];
        assert_eq!(gen.parent, Some(1));
        // Its own temporary is an output, not an input.
        assert_eq!(gen.reads, ["/m/gen.sh", "/m/v.h.in"]);
        assert_eq!(gen.written, ["/m/v.h.tmp", "/m/v.h"]);
        assert_eq!(steps.compiles[3].reads, ["/m/m.c", "/m/v.h"]);
    }

    #[test]
    fn pruning_keeps_the_run_being_saved_even_if_it_is_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let run = |id: &str| RunRecord {
            id: id.into(),
            ..RunRecord::default()
        };
        let mount = run("1000-1");
        save(dir.path(), &mount).unwrap();
        for i in 0..KEEP_RUNS + 5 {
            save(dir.path(), &run(&format!("{}-2", 2000 + i))).unwrap();
        }
        save(dir.path(), &mount).unwrap();
        let ids = list_ids(dir.path());
        assert_eq!(ids.len(), KEEP_RUNS);
        assert_eq!(ids[0], "1000-1");
        assert!(!ids.contains(&"2000-2".to_string()));
        // A live mount's run survives other runs' saves; once it ends, it
        // is pruned like any other.
        set_live(dir.path(), "1000-1", true).unwrap();
        save(dir.path(), &run("9000-2")).unwrap();
        assert_eq!(list_ids(dir.path())[0], "1000-1");
        set_live(dir.path(), "1000-1", false).unwrap();
        save(dir.path(), &run("9001-2")).unwrap();
        assert_ne!(list_ids(dir.path())[0], "1000-1");
        assert_eq!(list_ids(dir.path()).len(), KEEP_RUNS);
    }

    #[test]
    fn a_damaged_parent_index_cannot_loop() {
        let mut run = session();
        run.compiles[1].parent = Some(6);
        run.compiles[0].parent = Some(0);
        assert_eq!(run.step_index().len(), run.compiles.len());
        let _ = run.steps();
        let _ = run.step_of(6);
    }

    /// The agent answers `cachefs run` before it writes the run's file:
    /// a reader started at once waits for it; a marker left by an agent
    /// that died while writing holds nobody up for long.
    #[test]
    fn readers_wait_for_a_run_being_written_but_not_for_a_stale_marker() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().to_path_buf();
        let run = RunRecord {
            id: new_run_id(),
            ..RunRecord::default()
        };
        mark_saving(&cache, &run.id).unwrap();
        let writer = {
            let (cache, run) = (cache.clone(), run.clone());
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(300));
                save(&cache, &run).unwrap();
            })
        };
        assert_eq!(list_ids(&cache), vec![run.id.clone()]);
        writer.join().unwrap();
        assert!(!saving_marker(&cache, &run.id).exists());

        mark_saving(&cache, "1-dead").unwrap();
        let old = std::time::SystemTime::now() - 2 * STALE_SAVING;
        std::fs::File::options()
            .write(true)
            .open(saving_marker(&cache, "1-dead"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let start = std::time::Instant::now();
        assert_eq!(list_ids(&cache), vec![run.id.clone()]);
        assert!(start.elapsed() < std::time::Duration::from_secs(1));

        // A fresh agent clears what a killed one left.
        mark_saving(&cache, "2-killed").unwrap();
        clear_saving_markers(&cache);
        assert!(!any_saving(&cache));
    }
}
