//! Settings read from the environment, each with a clear error naming the
//! variable when its value is unusable.

use std::path::PathBuf;
use std::time::Duration;

pub const ENV_DIR: &str = "CACHEFS_DIR";
pub const ENV_IDLE_TIMEOUT: &str = "CACHEFS_IDLE_TIMEOUT";
pub const ENV_CACHE_SIZE: &str = "CACHEFS_CACHE_SIZE";
/// Set by the shim when it diverts a compiler exec to the client.
pub const ENV_COMPILER: &str = "CACHEFS_COMPILER";
/// Marks a process tree that is already inside a compile (the shim then
/// diverts nothing: gcc's cc1, clang -cc1, rustc's linker run as they are).
pub const ENV_IN_COMPILE: &str = "CACHEFS_IN_COMPILE";
pub const ENV_CLIENT: &str = "CACHEFS_CLIENT";
pub const ENV_RUN_ID: &str = "CACHEFS_RUN_ID";

pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_CACHE_SIZE: u64 = 10 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}={value:?} is not valid: {reason}")]
    Invalid {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error("no cache directory: set {ENV_DIR}, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    pub idle_timeout: Duration,
    pub cache_size: u64,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            dir: cache_dir()?,
            idle_timeout: idle_timeout()?,
            cache_size: cache_size()?,
        })
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }
}

/// `CACHEFS_DIR`, else `$XDG_CACHE_HOME/cachefs`, else `~/.cache/cachefs`;
/// made absolute so that every process of a build agrees on it.
pub fn cache_dir() -> Result<PathBuf, ConfigError> {
    let non_empty = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty());
    let dir = if let Some(d) = non_empty(ENV_DIR) {
        PathBuf::from(d)
    } else if let Some(x) = non_empty("XDG_CACHE_HOME") {
        PathBuf::from(x).join("cachefs")
    } else if let Some(h) = non_empty("HOME") {
        PathBuf::from(h).join(".cache").join("cachefs")
    } else {
        return Err(ConfigError::NoCacheDir);
    };
    Ok(std::path::absolute(&dir).unwrap_or(dir))
}

fn idle_timeout() -> Result<Duration, ConfigError> {
    let Some(v) = std::env::var_os(ENV_IDLE_TIMEOUT) else {
        return Ok(DEFAULT_IDLE_TIMEOUT);
    };
    let s = v.to_string_lossy();
    s.trim()
        .trim_end_matches('s')
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| ConfigError::Invalid {
            var: ENV_IDLE_TIMEOUT,
            value: s.into_owned(),
            reason: "expected a whole number of seconds, like 600".into(),
        })
}

fn cache_size() -> Result<u64, ConfigError> {
    let Some(v) = std::env::var_os(ENV_CACHE_SIZE) else {
        return Ok(DEFAULT_CACHE_SIZE);
    };
    let s = v.to_string_lossy();
    cachefs_store::parse_size(&s).map_err(|e| ConfigError::Invalid {
        var: ENV_CACHE_SIZE,
        value: s.into_owned(),
        reason: e.to_string(),
    })
}
