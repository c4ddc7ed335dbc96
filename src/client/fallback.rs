//! Running the compiler uncached, and saying why: once per build for a
//! failure, never for a policy; counted by `cachefs stats` even when the
//! agent never heard of it.

use super::call::Call;
use super::compiler_command;
use crate::config::{Config, ENV_RUN_ID};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;

/// Why the compile runs uncached, which decides who says so and who counts it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// Policy (uncacheable): the agent counted it; nothing to warn about.
    Policy,
    /// A failure the agent knows of and counted: warn once.
    Counted,
    /// A failure the agent never heard of: warn once and count it ourselves.
    Unreported,
}

/// Runs the compiler unchanged (uncached) by exec'ing it in place, warning
/// once per build when the cause is a failure rather than a policy.
pub(super) fn fall_back(call: &Call, reason: &str, cause: Cause, config: Option<&Config>) -> ! {
    if cause != Cause::Policy {
        warn_once(reason, config);
    }
    if cause == Cause::Unreported {
        if let Some(c) = config {
            log_fallback(&c.dir, reason);
        }
    }
    log::debug!("running uncached: {reason}");
    let err = compiler_command(call, &call.argv).exec();
    eprintln!(
        "cachefs: cannot run the compiler {}: {err}",
        call.compiler.display()
    );
    std::process::exit(127)
}

/// One warning per build: the first client of a run to fail creates a
/// marker file; the others stay quiet.
pub(super) fn warn_once(reason: &str, config: Option<&Config>) {
    let marker = match (config, std::env::var(ENV_RUN_ID)) {
        (Some(c), Ok(run)) => Some(c.dir.join(format!("warned-{run}"))),
        _ => None,
    };
    let first = match &marker {
        Some(m) => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(m)
            .is_ok(),
        None => true,
    };
    if first {
        eprintln!("cachefs: compiling without the cache: {reason}");
    }
}

/// Counted by `cachefs stats` even when the agent could not be reached.
fn log_fallback(dir: &Path, reason: &str) {
    let line = format!(
        "{}\t{}\n",
        std::env::var(ENV_RUN_ID).unwrap_or_default(),
        reason.replace('\n', " ")
    );
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("fallbacks.log"))
    {
        let _ = f.write_all(line.as_bytes());
    }
}
