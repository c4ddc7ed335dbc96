//! `cachefs stats [--json] [--zero]`.

use crate::client::{request, start_agent};
use crate::config::Config;
use crate::protocol::{Request, Response, StatsReport};
use anyhow::{bail, Result};
use std::path::Path;

/// Compiles whose client could not reach the agent are written to this file
/// by the client, since the agent never heard of them.
const FALLBACK_LOG: &str = "fallbacks.log";

pub fn stats(json: bool, zero: bool) -> Result<()> {
    let config = Config::from_env()?;
    start_agent(&config)?;
    let Response::Stats(mut report) = request(&config, &Request::Stats { zero: false })? else {
        bail!("the agent answered a stats request with something else");
    };
    add_fallbacks(&config.dir, &mut report);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if zero {
        request(&config, &Request::Stats { zero: true })?;
        let _ = std::fs::remove_file(config.dir.join(FALLBACK_LOG));
    }
    Ok(())
}

/// Resets the counters without showing them (`--zero-stats`).
pub fn zero() -> Result<()> {
    let config = Config::from_env()?;
    start_agent(&config)?;
    request(&config, &Request::Stats { zero: true })?;
    let _ = std::fs::remove_file(config.dir.join(FALLBACK_LOG));
    Ok(())
}

fn fallback_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(FALLBACK_LOG))
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

pub fn fallbacks_for_run(dir: &Path, run_id: &str) -> u64 {
    fallback_lines(dir)
        .iter()
        .filter(|l| l.split('\t').next() == Some(run_id))
        .count() as u64
}

fn add_fallbacks(dir: &Path, report: &mut StatsReport) {
    let n = fallback_lines(dir).len() as u64;
    if n > 0 {
        report.requests += n;
        report.errors += n;
        *report
            .error_reasons
            .entry("agent unreachable".into())
            .or_default() += n;
    }
}

fn print_table(r: &StatsReport) {
    let row = |name: &str, value: String| println!("{name:<32} {value:>14}");
    row("Compile requests", r.requests.to_string());
    row("Cache hits", r.hits.to_string());
    if r.remote.is_some() {
        row("  local", r.local_hits.to_string());
        row("  remote", r.remote_hits.to_string());
    }
    row("Cache misses", r.misses.to_string());
    row("Uncacheable", r.uncacheable.to_string());
    for (why, n) in &r.uncacheable_reasons {
        row(&format!("  {why}"), n.to_string());
    }
    row("Errors (compiled uncached)", r.errors.to_string());
    for (why, n) in &r.error_reasons {
        row(&format!("  {why}"), n.to_string());
    }
    let looked = r.hits + r.misses;
    let rate = if looked > 0 {
        100.0 * r.hits as f64 / looked as f64
    } else {
        0.0
    };
    row("Hit rate", format!("{rate:.1} %"));
    row(
        "Time saved",
        format!("{:.1} s", r.time_saved_ms as f64 / 1000.0),
    );
    row("Cached results", r.entries.to_string());
    row(
        "Cache size",
        format!("{} / {}", human(r.bytes), human(r.limit)),
    );
    row("Observation", r.observation.clone());
    print_languages(r);
    if let Some(remote) = &r.remote {
        print_remote(remote);
    }
    print_remote_execution(r);
}

/// Remote execution's rows, when any compile was sent or held back.
fn print_remote_execution(r: &StatsReport) {
    if r.remote_executions + r.local_fallbacks == 0 && r.not_run_remotely.is_empty() {
        return;
    }
    let row = |name: &str, value: String| println!("{name:<32} {value:>14}");
    row("Remote executions", r.remote_executions.to_string());
    row("  blobs in actions", r.remote_execution_blobs.to_string());
    row(
        "  blobs uploaded",
        r.remote_execution_blobs_uploaded.to_string(),
    );
    row("  bytes uploaded", human(r.remote_execution_bytes_uploaded));
    row("Remote failures (ran here)", r.local_fallbacks.to_string());
    for (why, n) in &r.remote_execution_failures {
        row(&format!("  {why}"), n.to_string());
    }
    row(
        "Not run remotely",
        r.not_run_remotely.values().sum::<u64>().to_string(),
    );
    for (why, n) in &r.not_run_remotely {
        row(&format!("  {why}"), n.to_string());
    }
}

fn print_remote(r: &cachefs_store::remote::RemoteReport) {
    let row = |name: &str, value: String| println!("{name:<32} {value:>14}");
    let mode = if r.read_only { " (read-only)" } else { "" };
    row("Shared cache", format!("{}{mode}", r.tier));
    for s in &r.servers {
        let health = if s.healthy { "ok" } else { "skipped" };
        row(
            &format!("  {}", s.server),
            format!("{health}, {} failures", s.failures),
        );
        if let Some(e) = &s.last_error {
            println!("    last error: {e}");
        }
    }
    row("  values found", r.gets_found.to_string());
    row("  values missing", r.gets_missing.to_string());
    row("  errors", r.errors.to_string());
    row("  bytes read", human(r.bytes_read));
    row("  bytes written", human(r.bytes_written));
    row(
        "  writes dropped (queue full)",
        r.writes_dropped.to_string(),
    );
    // Each tier's own counters, in lookup order.
    for t in &r.tiers {
        let mode = if t.read_only { ", read-only" } else { "" };
        println!("  tier {}{mode}", t.tier);
        row("    found", t.gets_found.to_string());
        row("    missing", t.gets_missing.to_string());
        row("    errors", t.errors.to_string());
        row("    bytes read", human(t.bytes_read));
        row("    bytes written", human(t.bytes_written));
        row("    filled from later tiers", t.fills.to_string());
        row(
            "    lookup latency (mean)",
            format!("{:.1} ms", t.get_latency_us as f64 / 1000.0),
        );
    }
}

/// sccache-style rows per language, only for languages seen.
fn print_languages(r: &StatsReport) {
    if r.languages.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>12} {:>8}",
        "Language", "Requests", "Hits", "Misses", "Uncacheable", "Errors"
    );
    for (lang, c) in &r.languages {
        println!(
            "{lang:<10} {:>10} {:>10} {:>10} {:>12} {:>8}",
            c.requests, c.hits, c.misses, c.uncacheable, c.errors
        );
    }
}

pub(super) fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}
