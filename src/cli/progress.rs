//! `cachefs run --progress`: one live line on a terminal while the build runs.

use super::summary::run_summary;
use crate::config::Config;
use anyhow::Result;
use std::io::{IsTerminal, Write};
use std::process::{Child, ExitStatus};
use std::time::Duration;

const POLL: Duration = Duration::from_millis(250);

/// Waits for the build, redrawing the line from the agent's counts for this
/// run; draws nothing when stderr is not a terminal (logs, CI).
pub fn wait_showing_progress(
    child: &mut Child,
    config: &Config,
    run_id: &str,
) -> Result<ExitStatus> {
    if !std::io::stderr().is_terminal() {
        return Ok(child.wait()?);
    }
    let mut drawn = false;
    let mut last = (0, 0, 0);
    loop {
        if let Some(status) = child.try_wait()? {
            if drawn {
                // Clear the live line; the summary line replaces it.
                eprint!("\r\x1b[K");
            }
            return Ok(status);
        }
        let s = run_summary(config, run_id, None);
        if s.compiles > 0 && (s.compiles, s.hits, s.misses) != last {
            last = (s.compiles, s.hits, s.misses);
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[Kcachefs: {} compiles done: {} hits, {} misses",
                s.compiles, s.hits, s.misses
            );
            let _ = err.flush();
            drawn = true;
        }
        std::thread::sleep(POLL);
    }
}
