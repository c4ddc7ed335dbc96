//! A circuit breaker per server: after a failure (refused, reset, timed out) the server is
//! skipped for a cool-down, so a dead or silent server costs one timeout, not one per request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a failed server is skipped before one request tries it again.
pub const COOL_DOWN: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    open_until: Option<Instant>,
    last_error: Option<String>,
    failures: u64,
}

impl Breaker {
    /// Whether a request may go to the server now.
    pub fn allows(&self) -> bool {
        let s = self.state.lock().unwrap();
        s.open_until.is_none_or(|t| Instant::now() >= t)
    }

    pub fn succeeded(&self) {
        let mut s = self.state.lock().unwrap();
        s.open_until = None;
    }

    pub fn failed(&self, error: &str) {
        let mut s = self.state.lock().unwrap();
        s.open_until = Some(Instant::now() + COOL_DOWN);
        s.last_error = Some(error.to_string());
        s.failures += 1;
    }

    /// (healthy now, failures so far, the last error).
    pub fn health(&self) -> (bool, u64, Option<String>) {
        let s = self.state.lock().unwrap();
        let open = s.open_until.is_some_and(|t| Instant::now() < t);
        (!open, s.failures, s.last_error.clone())
    }
}
