//! This run's counts, as the agent has them: the live line of
//! `--progress` and the summary line `cachefs run` ends with.

use crate::client::request;
use crate::config::Config;
use crate::protocol::{Request, Response, RunSummary};
use std::ffi::OsString;

/// This run's counts so far, as the agent has them; with `ended`, the run's
/// command is over and the agent also writes its run log.
pub fn run_summary(config: &Config, run_id: &str, ended: Option<&[OsString]>) -> RunSummary {
    let ended = ended.map(|command| {
        let command = command
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        let cwd = std::env::current_dir()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        (command, cwd)
    });
    match request(
        config,
        &Request::RunSummary {
            run_id: run_id.into(),
            ended,
        },
    ) {
        Ok(Response::Summary(s)) => s,
        _ => RunSummary::default(),
    }
}

pub fn print_summary(config: &Config, run_id: &str, command: &[OsString]) {
    let mut s = run_summary(config, run_id, Some(command));
    let unreachable = super::stats::fallbacks_for_run(&config.dir, run_id);
    s.compiles += unreachable;
    s.errors += unreachable;
    eprintln!(
        "cachefs: {} compiles: {} hits, {} misses, {} uncacheable, {} errors; {:.1} s saved",
        s.compiles,
        s.hits,
        s.misses,
        s.uncacheable,
        s.errors,
        s.time_saved_ms as f64 / 1000.0
    );
    for notice in &s.notices {
        eprintln!("cachefs: {notice}");
    }
}
