//! Settings: defaults, overridden by `~/.config/cachefs/config.toml`
//! (`$XDG_CONFIG_HOME`), overridden by `CACHEFS_*` variables. Every value
//! remembers where it came from (`cachefs config`), and an unusable one is an
//! error naming the file and key or the variable.

mod remote;

pub use remote::RemoteExecution;

use remote::RemoteFile;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const ENV_DIR: &str = "CACHEFS_DIR";
pub const ENV_IDLE_TIMEOUT: &str = "CACHEFS_IDLE_TIMEOUT";
pub const ENV_CACHE_SIZE: &str = "CACHEFS_CACHE_SIZE";
pub const ENV_LOG: &str = "CACHEFS_LOG";
/// Names the config file instead of `$XDG_CONFIG_HOME/cachefs/config.toml`.
pub const ENV_CONFIG: &str = "CACHEFS_CONFIG";
/// Set by the shim when it diverts a compiler exec to the client.
pub const ENV_COMPILER: &str = "CACHEFS_COMPILER";
/// Marks a process tree that is already inside a compile (the shim then
/// diverts nothing: gcc's cc1, clang -cc1, rustc's linker run as they are).
pub const ENV_IN_COMPILE: &str = "CACHEFS_IN_COMPILE";
pub const ENV_CLIENT: &str = "CACHEFS_CLIENT";
/// Set by the client for a compile it runs in an observation view: the
/// shim then reports what the compile reads of its environment.
pub const ENV_VIEW: &str = "CACHEFS_VIEW";
/// Per call (read from the compile's environment, like ccache's variables
/// of the same names): run the compiler directly, without cachefs.
pub const ENV_DISABLE: &str = "CACHEFS_DISABLE";
/// Per call: do not look up; compile, observe and store, replacing the entry
/// for the same inputs.
pub const ENV_RECACHE: &str = "CACHEFS_RECACHE";
/// Per call: look up, but store nothing (a miss runs the compiler uncached).
pub const ENV_READONLY: &str = "CACHEFS_READONLY";
pub const ENV_RUN_ID: &str = "CACHEFS_RUN_ID";
/// The tree root keys are relative to (ccache's `base_dir`), over the
/// directory `cachefs run` started in; also read from a call's environment.
pub const ENV_BASE_DIR: &str = "CACHEFS_BASEDIR";
/// Per call: run `ar` and `ranlib` directly (as with CACHEFS_DISABLE), for
/// a build that wants only its compiles cached.
pub const ENV_NO_ARCHIVES: &str = "CACHEFS_NO_ARCHIVES";
/// The prefix command a missed C/C++ compile runs under (`compiler::prefix`).
pub const ENV_PREFIX: &str = "CACHEFS_PREFIX";
/// ccache's name for the prefix command, accepted under `CACHEFS_PREFIX`.
pub const ENV_CCACHE_PREFIX: &str = "CCACHE_PREFIX";
/// Test only: milliseconds the agent's mirror holds each liveness probe
/// (`tests/reliability.rs`, an agent killed meanwhile).
pub const ENV_TEST_PROBE_DELAY_MS: &str = "CACHEFS_TEST_PROBE_DELAY_MS";

/// Whether a switch variable is on: set, and not empty, `0`, `false`, `no`
/// or `off`.
pub fn switch_on(value: Option<&[u8]>) -> bool {
    value.is_some_and(|v| {
        let v = v.to_ascii_lowercase();
        !matches!(v.as_slice(), b"" | b"0" | b"false" | b"no" | b"off")
    })
}

/// The switch `name` in a call's environment.
/// `switch_on` of this process's own variable `name`.
pub fn switch_set(name: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    switch_on(std::env::var_os(name).as_deref().map(OsStrExt::as_bytes))
}

pub fn switch_in(env: &[(Vec<u8>, Vec<u8>)], name: &str) -> bool {
    switch_on(
        env.iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice()),
    )
}

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
    #[error("{}: key `{key}` = {value:?} is not valid: {reason}", file.display())]
    InvalidKey {
        file: PathBuf,
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot parse the config file {}: {reason}", file.display())]
    Malformed { file: PathBuf, reason: String },
    #[error("cannot read the config file {}: {source}", file.display())]
    Unreadable {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("no cache directory: set {ENV_DIR}, `dir` in the config file, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Env(v) => write!(f, "${v}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    /// Quiet time before the agent exits; zero: never.
    pub idle_timeout: Duration,
    pub cache_size: u64,
    /// Log file for the client and the agent; stderr (the agent's:
    /// `agent.log`) when unset.
    pub log: Option<PathBuf>,
    /// The prefix command (`distcc`, `icecc`, a path, with arguments) a
    /// missed C/C++ compile runs under; `None`: compiles run as they are.
    pub prefix: Option<std::ffi::OsString>,
    /// The config file that was looked for, and whether it exists.
    pub file: Option<PathBuf>,
    /// (key, value as text, source) for `cachefs config`.
    pub origins: Vec<(&'static str, String, Source)>,
    /// The config file's `[remote]` settings, by the variable that overrides each.
    pub remote_file: Vec<(&'static str, String)>,
    /// The tree root of every compile under it (`entry::location`).
    pub base_dir: Option<PathBuf>,
}

/// The config file's keys; anything else is an error naming the key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    dir: Option<PathBuf>,
    cache_size: Option<toml::Value>,
    idle_timeout: Option<toml::Value>,
    log: Option<PathBuf>,
    base_dir: Option<PathBuf>,
    prefix: Option<toml::Value>,
    remote: Option<RemoteFile>,
}

impl Config {
    /// Defaults, then the config file, then the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let file = config_file_path();
        let parsed = match &file {
            Some(path) => read_file(path)?,
            None => None,
        };
        let parsed = parsed.unwrap_or_default();
        let mut origins = Vec::new();

        let layers = Layers { file: &file };
        let (dir, src) = layers.pick(
            (ENV_DIR, |v| Ok(PathBuf::from(v))),
            ("dir", parsed.dir.as_ref(), |p| Ok(expand_home(p))),
            default_cache_dir,
        )?;
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        origins.push(("dir", dir.display().to_string(), src));

        let (cache_size, src) = layers.pick(
            (ENV_CACHE_SIZE, |v| parse_size(&v.to_string_lossy())),
            ("cache_size", parsed.cache_size.as_ref(), size_from_toml),
            || Ok(DEFAULT_CACHE_SIZE),
        )?;
        origins.push(("cache_size", cache_size.to_string(), src));

        let (idle_timeout, src) = layers.pick(
            (ENV_IDLE_TIMEOUT, |v| parse_seconds(&v.to_string_lossy())),
            (
                "idle_timeout",
                parsed.idle_timeout.as_ref(),
                seconds_from_toml,
            ),
            || Ok(DEFAULT_IDLE_TIMEOUT),
        )?;
        origins.push(("idle_timeout", idle_timeout.as_secs().to_string(), src));

        let (log, src) = layers.pick(
            (ENV_LOG, |v| Ok(Some(PathBuf::from(v)))),
            ("log", parsed.log.as_ref(), |p| Ok(Some(expand_home(p)))),
            || Ok(None),
        )?;
        let log_text = log
            .as_ref()
            .map_or("stderr".into(), |p| p.display().to_string());
        origins.push(("log", log_text, src));

        let (base_dir, src) = layers.pick(
            (ENV_BASE_DIR, |v| Ok(Some(PathBuf::from(v)))),
            ("base_dir", parsed.base_dir.as_ref(), |p| {
                Ok(Some(expand_home(p)))
            }),
            || Ok(None),
        )?;
        let base_text = base_dir
            .as_ref()
            .map_or("(the directory `cachefs run` starts in)".into(), |p| {
                p.display().to_string()
            });
        origins.push(("base_dir", base_text, src));
        let (prefix, src) = pick_prefix(&layers, parsed.prefix.as_ref())?;
        let prefix_text = prefix
            .as_ref()
            .map_or("none".into(), |p| p.to_string_lossy().into_owned());
        origins.push(("prefix", prefix_text, src));

        let remote_file = parsed
            .remote
            .as_ref()
            .map(RemoteFile::as_settings)
            .unwrap_or_default();
        for (var, value) in &remote_file {
            let src = if env_non_empty(var).is_some() {
                Source::Env(var)
            } else {
                Source::File(file.clone().unwrap_or_default())
            };
            let shown = if remote::is_secret(var) {
                "(secret)".to_string()
            } else {
                value.clone()
            };
            origins.push((var, shown, src));
        }

        Ok(Self {
            dir,
            idle_timeout,
            cache_size,
            log,
            prefix,
            file,
            origins,
            remote_file,
            base_dir,
        })
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }
}

/// The prefix command: `CACHEFS_PREFIX`, else ccache's `CCACHE_PREFIX`,
/// else the file's `prefix`.
fn pick_prefix(
    layers: &Layers<'_>,
    in_file: Option<&toml::Value>,
) -> Result<(Option<std::ffi::OsString>, Source), ConfigError> {
    let picked = layers.pick(
        (ENV_PREFIX, |v| Ok(Some(v))),
        ("prefix", in_file, |v| match v {
            toml::Value::String(s) => Ok(Some(s.into())),
            _ => Err("expected a command line, like \"distcc\"".into()),
        }),
        || Ok(None),
    )?;
    if picked.1 == Source::Env(ENV_PREFIX) {
        return Ok(picked);
    }
    match env_non_empty(ENV_CCACHE_PREFIX) {
        Some(v) => Ok((Some(v), Source::Env(ENV_CCACHE_PREFIX))),
        None => Ok(picked),
    }
}

/// A setting's value from a variable (`OsString`, as set) or a key of the
/// config file (as parsed), each with its parser.
type FromEnv<T> = (&'static str, fn(std::ffi::OsString) -> Result<T, String>);
type FromFile<'a, F, T> = (&'static str, Option<&'a F>, fn(&F) -> Result<T, String>);

/// The layers every setting is read through: the environment over the
/// config file over the default.
struct Layers<'a> {
    file: &'a Option<PathBuf>,
}

impl Layers<'_> {
    /// One setting, with where its value came from; an unusable value is an
    /// error naming its variable or its file and key.
    fn pick<F: FileValue, T>(
        &self,
        (var, from_env): FromEnv<T>,
        (key, in_file, from_file): FromFile<'_, F, T>,
        default: impl FnOnce() -> Result<T, ConfigError>,
    ) -> Result<(T, Source), ConfigError> {
        if let Some(v) = env_non_empty(var) {
            let value = v.to_string_lossy().into_owned();
            let parsed =
                from_env(v).map_err(|reason| ConfigError::Invalid { var, value, reason })?;
            return Ok((parsed, Source::Env(var)));
        }
        if let Some(v) = in_file {
            let parsed = from_file(v).map_err(|reason| ConfigError::InvalidKey {
                file: self.file.clone().unwrap_or_default(),
                key,
                value: v.shown(),
                reason,
            })?;
            return Ok((parsed, Source::File(self.file.clone().unwrap_or_default())));
        }
        Ok((default()?, Source::Default))
    }
}

/// A config file value as an error message shows it.
trait FileValue {
    fn shown(&self) -> String;
}

impl FileValue for toml::Value {
    fn shown(&self) -> String {
        self.to_string()
    }
}

impl FileValue for PathBuf {
    fn shown(&self) -> String {
        self.display().to_string()
    }
}

fn env_non_empty(var: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(var).filter(|s| !s.is_empty())
}

/// `$CACHEFS_CONFIG`, else `$XDG_CONFIG_HOME/cachefs/config.toml`, else
/// `~/.config/cachefs/config.toml`.
pub fn config_file_path() -> Option<PathBuf> {
    if let Some(p) = env_non_empty(ENV_CONFIG) {
        return Some(PathBuf::from(p));
    }
    let base = env_non_empty("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env_non_empty("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("cachefs").join("config.toml"))
}

/// The parsed file, or None when there is no file.
fn read_file(path: &Path) -> Result<Option<FileConfig>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Unreadable {
                file: path.to_path_buf(),
                source,
            })
        }
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| ConfigError::Malformed {
            file: path.to_path_buf(),
            reason: e.to_string().trim_end().to_string(),
        })
}

/// `~/x` in the config file means under $HOME.
fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), env_non_empty("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_path_buf(),
    }
}

/// `$XDG_CACHE_HOME/cachefs`, else `~/.cache/cachefs`.
fn default_cache_dir() -> Result<PathBuf, ConfigError> {
    if let Some(x) = env_non_empty("XDG_CACHE_HOME") {
        Ok(PathBuf::from(x).join("cachefs"))
    } else if let Some(h) = env_non_empty("HOME") {
        Ok(PathBuf::from(h).join(".cache").join("cachefs"))
    } else {
        Err(ConfigError::NoCacheDir)
    }
}

/// The cache directory as configured (file and environment).
pub fn cache_dir() -> Result<PathBuf, ConfigError> {
    Config::from_env().map(|c| c.dir)
}

fn parse_size(s: &str) -> Result<u64, String> {
    cachefs_store::parse_size(s).map_err(|e| e.to_string())
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.trim()
        .trim_end_matches('s')
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| "expected a whole number of seconds, like 600".into())
}

fn size_from_toml(v: &toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::String(s) => parse_size(s),
        toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
        _ => Err("expected a size like \"2G\" or a number of bytes".into()),
    }
}

fn seconds_from_toml(v: &toml::Value) -> Result<Duration, String> {
    match v {
        toml::Value::String(s) => parse_seconds(s),
        toml::Value::Integer(n) if *n >= 0 => Ok(Duration::from_secs(*n as u64)),
        _ => Err("expected a whole number of seconds, like 600".into()),
    }
}
