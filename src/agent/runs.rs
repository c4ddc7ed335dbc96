//! The agent's side of the run log: a record per compile of each `cachefs
//! run`, kept in memory until the run ends, then written to `runs/`.

use crate::entry::env::{self, Env};
use crate::entry::validate::Mismatch;
use crate::entry::{Dep, DepState};
use crate::protocol::CompileRequest;
use crate::runlog::{self, CompileRecord, MissReason, RunRecord};
use crate::stat_cache::StatCache;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

#[derive(Default)]
pub struct RunRecorder {
    runs: Mutex<HashMap<String, Vec<CompileRecord>>>,
}

impl RunRecorder {
    pub fn add(&self, run: Option<&str>, rec: CompileRecord) {
        if let Some(run) = run {
            self.runs
                .lock()
                .unwrap()
                .entry(run.to_string())
                .or_default()
                .push(rec);
        }
    }

    /// Ends the run: its record leaves memory, and its file is announced
    /// as being written (`runlog::mark_saving`), so that readers wait for it.
    pub fn take(&self, cache_dir: &Path, id: &str, command: Vec<String>, cwd: String) -> RunRecord {
        let compiles = self.runs.lock().unwrap().remove(id).unwrap_or_default();
        if let Err(e) = runlog::mark_saving(cache_dir, id) {
            log::warn!("cannot mark the run log of {id} as being written: {e}");
        }
        RunRecord {
            id: id.to_string(),
            command,
            cwd,
            started_unix_ms: runlog::started_unix_ms(id),
            compiles,
            kind: String::new(),
        }
    }

    /// Writes a run taken with `take`.
    pub fn save(&self, cache_dir: &Path, run: &RunRecord) {
        let saving = std::time::Instant::now();
        if let Err(e) = runlog::save(cache_dir, run) {
            log::warn!("cannot write the run log of {}: {e}", run.id);
        }
        log::debug!(
            "run log of {} ({} compiles) written in {:?}",
            run.id,
            run.compiles.len(),
            saving.elapsed()
        );
    }
}

/// A compile's log record; empty outside a `cachefs run` (nothing is logged).
pub fn record_of(req: &CompileRequest) -> CompileRecord {
    if req.run_id.is_none() {
        return CompileRecord::default();
    }
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    CompileRecord {
        argv: req.argv.iter().map(|a| lossy(a)).collect(),
        cwd: lossy(&req.cwd),
        unix_ms: runlog::now_unix_ms(),
        ..CompileRecord::default()
    }
}

pub trait Ended {
    fn ended(self, outcome: &str, reason: Option<&str>) -> CompileRecord;
}

impl Ended for CompileRecord {
    fn ended(mut self, outcome: &str, reason: Option<&str>) -> CompileRecord {
        self.outcome = outcome.to_string();
        self.reason = reason.map(str::to_owned);
        self
    }
}

/// The record's inputs: files read, paths absent, directories listed, and
/// the variables read from `env` with their values.
pub fn fill_deps(rec: &mut CompileRecord, deps: &[Dep], env: &Env) {
    for d in deps {
        let path = String::from_utf8_lossy(&d.path).into_owned();
        match d.state {
            DepState::File(_) => rec.reads.push(path),
            DepState::Absent => rec.absent.push(path),
            DepState::Listing(_) | DepState::Candidates { .. } => rec.listed.push(path),
            DepState::Env(_) => {
                let value = env::value(env, &d.path).map(|v| String::from_utf8_lossy(v).into());
                rec.env.insert(path, value.unwrap_or_default());
            }
            DepState::Symlink(_)
            | DepState::Exists(_)
            | DepState::EnvMatching(_)
            | DepState::Resolved(_)
            | DepState::Pinned(_) => {}
        }
    }
}

pub fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the first failing dep of the most recent dep set was, and is now.
pub fn changed(m: &Mismatch, cache: &StatCache) -> MissReason {
    MissReason::Changed {
        path: m.input.clone(),
        was: m.expected.clone(),
        now: m
            .now
            .clone()
            .unwrap_or_else(|| describe_now(&m.path, cache)),
    }
}

fn describe_now(path: &Path, cache: &StatCache) -> String {
    match std::fs::symlink_metadata(path) {
        Err(_) => "absent".into(),
        Ok(m) if m.is_file() => match cache.file_hash(path) {
            Ok(Some((_, h))) => format!("file {}", &hex(&h)[..16]),
            _ => "file (unreadable)".into(),
        },
        Ok(m) if m.is_dir() => "directory".into(),
        Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(path) {
            Ok(t) => format!("symlink to {}", t.display()),
            Err(_) => "symlink".into(),
        },
        Ok(_) => "special file".into(),
    }
}
