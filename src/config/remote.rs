//! The config file's `[remote]` section and the `CACHEFS_*` variables of
//! the shared cache (which override it), parsed into the store's
//! `RemoteConfig`: every setting is read here, none in the store crate.

use super::{Config, ConfigError};
use cachefs_store::remote::{chunking, ReapiConfig, RemoteConfig};
use serde::Deserialize;
use std::time::Duration;

pub const ENV_MEMCACHED: &str = "CACHEFS_MEMCACHED";
pub const ENV_REDIS: &str = "CACHEFS_REDIS";
pub const ENV_READ_ONLY: &str = "CACHEFS_REMOTE_READ_ONLY";
pub const ENV_REMOTE_KEY: &str = "CACHEFS_REMOTE_KEY";
pub const ENV_TIMEOUT: &str = "CACHEFS_REMOTE_TIMEOUT";
/// Seconds a Redis entry lives (`EX`); 0 or unset leaves eviction to `maxmemory-policy`.
pub const ENV_REDIS_EXPIRY: &str = "CACHEFS_REDIS_EXPIRY";
/// A REAPI cache (`grpc://host:port`): its ActionCache and CAS.
pub const ENV_REAPI: &str = "CACHEFS_REAPI";
/// The REAPI instance name (none: the server's default instance).
pub const ENV_REAPI_INSTANCE: &str = "CACHEFS_REAPI_INSTANCE";
/// A bearer token sent to the REAPI server: a secret, never shown or logged.
pub const ENV_REAPI_TOKEN: &str = "CACHEFS_REAPI_TOKEN";
/// With `grpcs://`: the PEM CA bundle the REAPI server's certificate must chain to.
pub const ENV_REAPI_CA: &str = "CACHEFS_REAPI_CA";

/// Settings whose values are never shown (`cachefs config`) or logged.
pub fn is_secret(var: &str) -> bool {
    var == ENV_REMOTE_KEY || var == ENV_REAPI_TOKEN
}

/// How long one remote operation may take before it counts as a miss.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// `[remote]`: the shared cache, the same settings as the `CACHEFS_*`
/// variables of the same meaning (which override them).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoteFile {
    memcached: Option<toml::Value>,
    redis: Option<String>,
    read_only: Option<bool>,
    timeout: Option<toml::Value>,
    redis_expiry: Option<toml::Value>,
    key: Option<String>,
    reapi: Option<String>,
    reapi_instance: Option<String>,
    reapi_token: Option<String>,
    reapi_ca: Option<String>,
}

impl RemoteFile {
    /// Each key as the value its variable would have.
    pub(super) fn as_settings(&self) -> Vec<(&'static str, String)> {
        let text = |v: &toml::Value| match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(" "),
            other => other.to_string(),
        };
        let mut out = Vec::new();
        if let Some(v) = &self.memcached {
            out.push((ENV_MEMCACHED, text(v)));
        }
        if let Some(v) = &self.redis {
            out.push((ENV_REDIS, v.clone()));
        }
        if let Some(v) = self.read_only {
            out.push((
                "CACHEFS_REMOTE_READ_ONLY",
                if v { "1" } else { "0" }.to_string(),
            ));
        }
        if let Some(v) = &self.timeout {
            out.push((ENV_TIMEOUT, text(v)));
        }
        if let Some(v) = &self.redis_expiry {
            out.push((ENV_REDIS_EXPIRY, text(v)));
        }
        if let Some(v) = &self.key {
            out.push((ENV_REMOTE_KEY, v.clone()));
        }
        for (var, v) in [
            (ENV_REAPI, &self.reapi),
            (ENV_REAPI_INSTANCE, &self.reapi_instance),
            (ENV_REAPI_TOKEN, &self.reapi_token),
            (ENV_REAPI_CA, &self.reapi_ca),
        ] {
            if let Some(v) = v {
                out.push((var, v.clone()));
            }
        }
        out
    }
}

impl Config {
    /// Whether a shared tier is named at all (a server), valid or not.
    pub fn remote_configured(&self) -> bool {
        [ENV_MEMCACHED, ENV_REDIS, ENV_REAPI]
            .iter()
            .any(|v| self.setting(v).is_some())
    }

    /// The shared tier's settings: each `CACHEFS_*` variable over the config
    /// file's `[remote]` key of the same meaning.
    pub fn remote(&self) -> Result<RemoteConfig, ConfigError> {
        let var = |name: &'static str| self.setting(name).filter(|v| !v.trim().is_empty());
        let invalid = |var: &'static str, value: &str, reason: &str| ConfigError::Invalid {
            var,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let timeout = match var(ENV_TIMEOUT) {
            None => DEFAULT_TIMEOUT,
            Some(v) => parse_duration(&v).ok_or_else(|| {
                invalid(
                    ENV_TIMEOUT,
                    &v,
                    "expected milliseconds like 100 or 100ms, or seconds like 1s",
                )
            })?,
        };
        let redis_expiry_s = match var(ENV_REDIS_EXPIRY) {
            None => 0,
            Some(v) => v
                .trim()
                .trim_end_matches('s')
                .parse()
                .map_err(|_| invalid(ENV_REDIS_EXPIRY, &v, "expected seconds"))?,
        };
        let memcached: Vec<String> = var(ENV_MEMCACHED)
            .map(|v| {
                v.split([' ', ','])
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let redis = var(ENV_REDIS);
        if let (false, Some(url)) = (memcached.is_empty(), &redis) {
            let reason = format!("{ENV_MEMCACHED} is set too: choose one");
            return Err(invalid(ENV_REDIS, url, &reason));
        }
        let reapi = var(ENV_REAPI).map(|url| ReapiConfig {
            url,
            instance: var(ENV_REAPI_INSTANCE).unwrap_or_default(),
            token: var(ENV_REAPI_TOKEN),
            ca: var(ENV_REAPI_CA).map(std::path::PathBuf::from),
        });
        if let (Some(r), true) = (&reapi, !memcached.is_empty() || redis.is_some()) {
            let reason = format!("{ENV_MEMCACHED} or {ENV_REDIS} is set too: choose one");
            return Err(invalid(ENV_REAPI, &r.url, &reason));
        }
        Ok(RemoteConfig {
            memcached,
            redis,
            reapi,
            read_only: var(ENV_READ_ONLY).is_some_and(|v| v != "0"),
            timeout,
            redis_expiry_s,
            key: var(ENV_REMOTE_KEY).map(|k| chunking::seal_from_secret(k.trim())),
        })
    }

    /// A `CACHEFS_*` setting: the environment, else the config file.
    fn setting(&self, var: &str) -> Option<String> {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .or_else(|| {
                self.remote_file
                    .iter()
                    .find(|(k, _)| *k == var)
                    .map(|(_, v)| v.clone())
            })
    }
}

/// `100`, `100ms` (milliseconds) or `1s`, `0.5s`.
fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Some(ms) = v.strip_suffix("ms") {
        return ms.trim().parse().ok().map(Duration::from_millis);
    }
    if let Some(s) = v.strip_suffix('s') {
        return s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| *s >= 0.0)
            .map(Duration::from_secs_f64);
    }
    v.parse().ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(settings: &[(&'static str, &str)]) -> Config {
        Config {
            dir: "/nonexistent".into(),
            idle_timeout: Duration::ZERO,
            cache_size: 0,
            log: None,
            file: None,
            origins: Vec::new(),
            remote_file: settings.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            base_dir: None,
        }
    }

    #[test]
    fn remote_settings_come_from_the_file_when_no_variable_is_set() {
        let c = with_file(&[
            (ENV_MEMCACHED, "127.0.0.1:1 127.0.0.1:2,127.0.0.1:3"),
            (ENV_TIMEOUT, "0.5s"),
            (ENV_READ_ONLY, "1"),
        ]);
        let r = c.remote().unwrap();
        assert_eq!(r.memcached.len(), 3);
        assert_eq!(r.timeout, Duration::from_millis(500));
        assert!(r.read_only && r.key.is_none());
        assert!(c.remote_configured());
        assert!(!with_file(&[]).remote_configured());
    }

    #[test]
    fn a_bad_remote_setting_names_its_variable() {
        let bad = |k: &'static str, v: &str| with_file(&[(k, v)]).remote().unwrap_err().to_string();
        assert!(bad(ENV_TIMEOUT, "soon").contains(ENV_TIMEOUT));
        assert!(bad(ENV_REDIS_EXPIRY, "a day").contains(ENV_REDIS_EXPIRY));
        let both = with_file(&[(ENV_MEMCACHED, "127.0.0.1:1"), (ENV_REDIS, "redis://x")]);
        assert!(both
            .remote()
            .unwrap_err()
            .to_string()
            .contains("choose one"));
    }

    #[test]
    fn a_reapi_server_comes_with_its_instance_and_token_and_excludes_the_others() {
        let c = with_file(&[
            (ENV_REAPI, "grpc://127.0.0.1:8980"),
            (ENV_REAPI_INSTANCE, "main"),
            (ENV_REAPI_TOKEN, "t0ken"),
        ]);
        let r = c.remote().unwrap().reapi.unwrap();
        assert_eq!(
            (r.url.as_str(), r.instance.as_str(), r.token.as_deref()),
            ("grpc://127.0.0.1:8980", "main", Some("t0ken"))
        );
        assert!(c.remote_configured());
        assert!(is_secret(ENV_REAPI_TOKEN) && !is_secret(ENV_REAPI));
        let both = with_file(&[(ENV_REAPI, "grpc://h:1"), (ENV_REDIS, "redis://x")]);
        let e = both.remote().unwrap_err().to_string();
        assert!(e.contains(ENV_REAPI) && e.contains("choose one"), "{e}");
    }

    #[test]
    fn durations_are_milliseconds_unless_seconds_are_said() {
        assert_eq!(parse_duration("100"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("-1s"), None);
    }
}
