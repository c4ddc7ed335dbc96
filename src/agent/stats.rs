//! Counters kept in memory by the agent, persisted in the store's meta table
//! so that `cachefs stats` survives agent restarts.

use crate::protocol::{LanguageCounts, RunSummary, StatsReport};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    pub requests: u64,
    pub hits: u64,
    /// Hits whose entry came from the shared remote tier.
    #[serde(default)]
    pub remote_hits: u64,
    pub misses: u64,
    pub uncacheable: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub time_saved_ms: u64,
    /// Per language (C, C++, Rust, CUDA); absent in counters saved by
    /// older agents.
    #[serde(default)]
    pub languages: BTreeMap<String, LanguageCounts>,
    #[serde(default)]
    pub remote: ExecCounters,
}

/// Remote execution (`agent::execute`): what ran remotely, what failed there and ran here,
/// and which compiles were never sent, by reason.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecCounters {
    pub executions: u64,
    pub failures: BTreeMap<String, u64>,
    pub local_fallbacks: u64,
    pub not_sent: BTreeMap<String, u64>,
    pub blobs: u64,
    pub blobs_uploaded: u64,
    pub bytes_uploaded: u64,
}

/// One remote-execution event, for `Stats::remote`.
pub enum Exec<'a> {
    /// Ran remotely and served: with (blobs in the action, blobs sent, bytes sent).
    Ran(u64, u64, u64),
    /// Tried, failed for this reason, compiled here instead.
    FellBack(&'a str),
    /// Not sent, for this reason (a class of compile, or no observed inputs yet).
    NotSent(&'a str),
}

/// Who a compile counts for: its `cachefs run` (if any) and its language.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub run: Option<&'a str>,
    pub language: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    Hit { saved_ms: u64, remote: bool },
    Miss,
    Uncacheable(&'a str),
    Error(&'a str),
}

#[derive(Default)]
pub struct Stats {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    total: Counters,
    runs: HashMap<String, RunSummary>,
    dirty: bool,
}

impl Stats {
    pub fn load(bytes: Option<Vec<u8>>) -> Stats {
        let total = bytes
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Stats {
            inner: Mutex::new(State {
                total,
                ..State::default()
            }),
        }
    }

    pub fn record(&self, origin: Origin, outcome: Outcome) {
        let run = origin.run;
        let mut s = self.inner.lock().unwrap();
        s.dirty = true;
        s.total.requests += 1;
        apply(&mut s.total, outcome);
        let lang = s.total.languages.entry(origin.language.into()).or_default();
        lang.requests += 1;
        apply_language(lang, outcome, 1);
        if let Some(run) = run {
            let r = s.runs.entry(run.to_string()).or_default();
            r.compiles += 1;
            match outcome {
                Outcome::Hit { saved_ms, .. } => {
                    r.hits += 1;
                    r.time_saved_ms += saved_ms;
                }
                Outcome::Miss => r.misses += 1,
                Outcome::Uncacheable(_) => r.uncacheable += 1,
                Outcome::Error(_) => r.errors += 1,
            }
        }
    }

    /// Counts a compile that was already counted as a miss but then could
    /// not be observed or stored after all.
    pub fn reclassify_miss(&self, origin: Origin, outcome: Outcome) {
        let run = origin.run;
        let mut s = self.inner.lock().unwrap();
        s.total.misses = s.total.misses.saturating_sub(1);
        apply(&mut s.total, outcome);
        let lang = s.total.languages.entry(origin.language.into()).or_default();
        lang.misses = lang.misses.saturating_sub(1);
        apply_language(lang, outcome, 1);
        if let Some(r) = run.and_then(|run| s.runs.get_mut(run)) {
            r.misses = r.misses.saturating_sub(1);
            match outcome {
                Outcome::Uncacheable(_) => r.uncacheable += 1,
                _ => r.errors += 1,
            }
        }
    }

    pub fn run_summary(&self, run: &str) -> RunSummary {
        self.inner
            .lock()
            .unwrap()
            .runs
            .get(run)
            .cloned()
            .unwrap_or_default()
    }

    pub fn report(&self) -> StatsReport {
        let s = self.inner.lock().unwrap();
        let t = &s.total;
        StatsReport {
            requests: t.requests,
            hits: t.hits,
            local_hits: t.hits - t.remote_hits,
            remote_hits: t.remote_hits,
            misses: t.misses,
            uncacheable: t.uncacheable.values().sum(),
            uncacheable_reasons: t.uncacheable.clone(),
            errors: t.errors.values().sum(),
            error_reasons: t.errors.clone(),
            time_saved_ms: t.time_saved_ms,
            languages: t.languages.clone(),
            remote_executions: t.remote.executions,
            remote_execution_failures: t.remote.failures.clone(),
            local_fallbacks: t.remote.local_fallbacks,
            not_run_remotely: t.remote.not_sent.clone(),
            remote_execution_blobs: t.remote.blobs,
            remote_execution_blobs_uploaded: t.remote.blobs_uploaded,
            remote_execution_bytes_uploaded: t.remote.bytes_uploaded,
            ..StatsReport::default()
        }
    }

    pub fn remote(&self, event: Exec) {
        let mut s = self.inner.lock().unwrap();
        s.dirty = true;
        let r = &mut s.total.remote;
        match event {
            Exec::Ran(blobs, uploaded, bytes) => {
                r.executions += 1;
                r.blobs += blobs;
                r.blobs_uploaded += uploaded;
                r.bytes_uploaded += bytes;
            }
            Exec::FellBack(why) => {
                *r.failures.entry(why.to_string()).or_default() += 1;
                r.local_fallbacks += 1;
            }
            Exec::NotSent(why) => *r.not_sent.entry(why.to_string()).or_default() += 1,
        }
    }

    pub fn zero(&self) {
        let mut s = self.inner.lock().unwrap();
        s.total = Counters::default();
        s.dirty = true;
    }

    /// The serialised counters if they changed since the last call.
    pub fn take_dirty(&self) -> Option<Vec<u8>> {
        let mut s = self.inner.lock().unwrap();
        if !s.dirty {
            return None;
        }
        s.dirty = false;
        Some(serde_json::to_vec(&s.total).expect("counters serialise"))
    }
}

fn apply(t: &mut Counters, outcome: Outcome) {
    match outcome {
        Outcome::Hit { saved_ms, remote } => {
            t.hits += 1;
            t.remote_hits += remote as u64;
            t.time_saved_ms += saved_ms;
        }
        Outcome::Miss => t.misses += 1,
        Outcome::Uncacheable(why) => *t.uncacheable.entry(why.to_string()).or_default() += 1,
        Outcome::Error(why) => *t.errors.entry(why.to_string()).or_default() += 1,
    }
}

fn apply_language(l: &mut LanguageCounts, outcome: Outcome, n: u64) {
    match outcome {
        Outcome::Hit { .. } => l.hits += n,
        Outcome::Miss => l.misses += n,
        Outcome::Uncacheable(_) => l.uncacheable += n,
        Outcome::Error(_) => l.errors += n,
    }
}
