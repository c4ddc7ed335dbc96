//! The config file's `[remote]` section and the `CACHEFS_*` variables of
//! the shared cache (which override it), parsed into the store's
//! `RemoteConfig`: every setting is read here, none in the store crate.

use super::{Config, ConfigError};
use cachefs_store::remote::{chunking, CloudConfig, ReapiConfig, RemoteConfig, Service};
use serde::Deserialize;
use std::path::PathBuf;
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
/// With `grpcs://`: a PEM client certificate and its key (mutual TLS).
pub const ENV_REAPI_CLIENT_CERT: &str = "CACHEFS_REAPI_CLIENT_CERT";
pub const ENV_REAPI_CLIENT_KEY: &str = "CACHEFS_REAPI_CLIENT_KEY";
/// Extra metadata on every REAPI call, `name=value` pairs separated by commas: secrets (an API
/// key), never shown or logged.
pub const ENV_REAPI_HEADERS: &str = "CACHEFS_REAPI_HEADERS";
/// `1`: a C/C++ compile that misses runs on the REAPI server's Execution service
/// (`agent::execute`), with the inputs a compile of the same call was observed to read.
pub const ENV_REMOTE_EXECUTE: &str = "CACHEFS_REMOTE_EXECUTE";
/// Platform properties the executor matches (`name=value`, comma-separated), e.g.
/// `OSFamily=linux,container-image=docker://debian:12`.
pub const ENV_REMOTE_EXECUTE_PLATFORM: &str = "CACHEFS_REMOTE_EXECUTE_PLATFORM";

/// How long one remote operation may take before it counts as a miss.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// The same for object stores, unless CACHEFS_REMOTE_TIMEOUT says otherwise: a request to a
/// cloud bucket takes tens of milliseconds, and its first one a TLS handshake more.
pub const DEFAULT_CLOUD_TIMEOUT: Duration = Duration::from_secs(1);

// Object-store tiers (S3 and S3-compatible servers, Google Cloud Storage, Azure Blob). Each
// tier is on when its bucket (container) is named; the sccache variable of the same meaning
// is read when cachefs's is not set, so a CI configuration written for sccache works.
pub const ENV_S3_BUCKET: &str = "CACHEFS_S3_BUCKET";
pub const ENV_S3_ENDPOINT: &str = "CACHEFS_S3_ENDPOINT";
pub const ENV_S3_REGION: &str = "CACHEFS_S3_REGION";
/// `0`: virtual-host addressing (`bucket.host`), for servers that need it.
pub const ENV_S3_PATH_STYLE: &str = "CACHEFS_S3_PATH_STYLE";
pub const ENV_GCS_BUCKET: &str = "CACHEFS_GCS_BUCKET";
pub const ENV_GCS_ENDPOINT: &str = "CACHEFS_GCS_ENDPOINT";
pub const ENV_GCS_KEY_PATH: &str = "CACHEFS_GCS_KEY_PATH";
pub const ENV_AZURE_CONTAINER: &str = "CACHEFS_AZURE_CONTAINER";
pub const ENV_AZURE_ENDPOINT: &str = "CACHEFS_AZURE_ENDPOINT";
/// A secret: never shown by `cachefs config`, `stats`, `doctor` or the log.
pub const ENV_AZURE_CONNECTION_STRING: &str = "CACHEFS_AZURE_CONNECTION_STRING";
/// Prepended to every object name of every object-store tier.
pub const ENV_REMOTE_PREFIX: &str = "CACHEFS_REMOTE_PREFIX";
/// `0`: `http://` for an endpoint given without a scheme (default `https://`).
pub const ENV_REMOTE_TLS: &str = "CACHEFS_REMOTE_TLS";
/// PEM certificates trusted besides the system's (a private CA, a self-signed server).
pub const ENV_REMOTE_CA_BUNDLE: &str = "CACHEFS_REMOTE_CA_BUNDLE";

/// Where misses run remotely (`Config::remote_execution`).
#[derive(Debug, Clone)]
pub struct RemoteExecution {
    pub reapi: ReapiConfig,
    pub platform: std::collections::BTreeMap<String, String>,
}

/// The settings whose values are secrets.
pub fn is_secret(var: &str) -> bool {
    var == ENV_REMOTE_KEY
        || var == ENV_AZURE_CONNECTION_STRING
        || var == ENV_REAPI_TOKEN
        || var == ENV_REAPI_HEADERS
}

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
    reapi_client_cert: Option<String>,
    reapi_client_key: Option<String>,
    reapi_headers: Option<String>,
    execute: Option<bool>,
    execute_platform: Option<String>,
    s3_bucket: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_path_style: Option<bool>,
    gcs_bucket: Option<String>,
    gcs_endpoint: Option<String>,
    gcs_key_path: Option<String>,
    azure_container: Option<String>,
    azure_endpoint: Option<String>,
    azure_connection_string: Option<String>,
    prefix: Option<String>,
    tls: Option<bool>,
    ca_bundle: Option<String>,
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
        let strings = [
            (ENV_S3_BUCKET, &self.s3_bucket),
            (ENV_S3_ENDPOINT, &self.s3_endpoint),
            (ENV_S3_REGION, &self.s3_region),
            (ENV_GCS_BUCKET, &self.gcs_bucket),
            (ENV_GCS_ENDPOINT, &self.gcs_endpoint),
            (ENV_GCS_KEY_PATH, &self.gcs_key_path),
            (ENV_AZURE_CONTAINER, &self.azure_container),
            (ENV_AZURE_ENDPOINT, &self.azure_endpoint),
            (ENV_AZURE_CONNECTION_STRING, &self.azure_connection_string),
            (ENV_REMOTE_PREFIX, &self.prefix),
            (ENV_REMOTE_CA_BUNDLE, &self.ca_bundle),
            (ENV_REAPI, &self.reapi),
            (ENV_REAPI_INSTANCE, &self.reapi_instance),
            (ENV_REAPI_TOKEN, &self.reapi_token),
            (ENV_REAPI_CA, &self.reapi_ca),
            (ENV_REAPI_CLIENT_CERT, &self.reapi_client_cert),
            (ENV_REAPI_CLIENT_KEY, &self.reapi_client_key),
            (ENV_REAPI_HEADERS, &self.reapi_headers),
            (ENV_REMOTE_EXECUTE_PLATFORM, &self.execute_platform),
        ];
        for (var, v) in strings {
            if let Some(v) = v {
                out.push((var, v.clone()));
            }
        }
        for (var, v) in [
            (ENV_S3_PATH_STYLE, self.s3_path_style),
            (ENV_REMOTE_TLS, self.tls),
            (ENV_REMOTE_EXECUTE, self.execute),
        ] {
            if let Some(v) = v {
                out.push((var, if v { "1" } else { "0" }.to_string()));
            }
        }
        out
    }
}

impl Config {
    /// Whether a shared tier is named at all (a server), valid or not.
    pub fn remote_configured(&self) -> bool {
        [
            ENV_MEMCACHED,
            ENV_REDIS,
            ENV_REAPI,
            ENV_S3_BUCKET,
            ENV_GCS_BUCKET,
            ENV_AZURE_CONTAINER,
        ]
        .iter()
        .any(|v| self.cloud_setting(v).is_some())
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
        let timeout_set = match var(ENV_TIMEOUT) {
            None => None,
            Some(v) => Some(parse_duration(&v).ok_or_else(|| {
                invalid(
                    ENV_TIMEOUT,
                    &v,
                    "expected milliseconds like 100 or 100ms, or seconds like 1s",
                )
            })?),
        };
        let timeout = timeout_set.unwrap_or(DEFAULT_TIMEOUT);
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
        let client_cert = match (var(ENV_REAPI_CLIENT_CERT), var(ENV_REAPI_CLIENT_KEY)) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (Some(v), None) | (None, Some(v)) => {
                let reason = format!("set both {ENV_REAPI_CLIENT_CERT} and {ENV_REAPI_CLIENT_KEY}");
                return Err(invalid(ENV_REAPI_CLIENT_CERT, &v, &reason));
            }
        };
        let headers = match var(ENV_REAPI_HEADERS) {
            None => Vec::new(),
            Some(v) => pairs(&v).ok_or_else(|| {
                // The values are secrets: not in the message.
                invalid(
                    ENV_REAPI_HEADERS,
                    "(secret)",
                    "expected name=value pairs separated by commas",
                )
            })?,
        };
        let reapi = var(ENV_REAPI).map(|url| ReapiConfig {
            url,
            instance: var(ENV_REAPI_INSTANCE).unwrap_or_default(),
            token: var(ENV_REAPI_TOKEN),
            ca: var(ENV_REAPI_CA).map(PathBuf::from),
            client_cert,
            headers,
        });
        let cloud = self.cloud(timeout_set.unwrap_or(DEFAULT_CLOUD_TIMEOUT))?;
        Ok(RemoteConfig {
            memcached,
            redis,
            cloud,
            reapi,
            read_only: var(ENV_READ_ONLY).is_some_and(|v| v != "0"),
            timeout,
            redis_expiry_s,
            key: var(ENV_REMOTE_KEY).map(|k| chunking::seal_from_secret(k.trim())),
        })
    }

    /// Remote execution (`[remote] execute`): the REAPI server that runs misses and the
    /// platform properties it is asked for; `None` when off.
    pub fn remote_execution(&self) -> Result<Option<RemoteExecution>, ConfigError> {
        let var = |name: &'static str| self.setting(name).filter(|v| !v.trim().is_empty());
        let on = match var(ENV_REMOTE_EXECUTE) {
            None => false,
            Some(v) => parse_flag(&v).ok_or_else(|| ConfigError::Invalid {
                var: ENV_REMOTE_EXECUTE,
                value: v.clone(),
                reason: "expected 1 or 0".into(),
            })?,
        };
        if !on {
            return Ok(None);
        }
        let Some(reapi) = self.remote()?.reapi else {
            return Err(ConfigError::Invalid {
                var: ENV_REMOTE_EXECUTE,
                value: "1".into(),
                reason: format!("remote execution needs a REAPI server: set {ENV_REAPI}"),
            });
        };
        let text = var(ENV_REMOTE_EXECUTE_PLATFORM).unwrap_or_default();
        let platform = pairs(&text).ok_or_else(|| ConfigError::Invalid {
            var: ENV_REMOTE_EXECUTE_PLATFORM,
            value: text.clone(),
            reason: "expected name=value pairs separated by commas".into(),
        })?;
        let platform = platform.into_iter().collect();
        Ok(Some(RemoteExecution { reapi, platform }))
    }

    /// The object-store tiers named, in lookup order S3, GCS, Azure.
    fn cloud(&self, timeout: Duration) -> Result<Vec<CloudConfig>, ConfigError> {
        let var = |name: &'static str| self.cloud_setting(name);
        let flag = |name: &'static str, default: bool| -> Result<bool, ConfigError> {
            match var(name) {
                None => Ok(default),
                Some(v) => parse_flag(&v).ok_or_else(|| ConfigError::Invalid {
                    var: name,
                    value: v,
                    reason: "expected 1 or 0 (true or false)".into(),
                }),
            }
        };
        let tls = flag(ENV_REMOTE_TLS, true)?;
        // An endpoint without a scheme gets one from the TLS setting (sccache's rule).
        let endpoint = |name: &'static str| {
            var(name).map(|e| {
                let e = e.trim().trim_end_matches('/').to_string();
                if e.contains("://") {
                    e
                } else {
                    format!("{}://{e}", if tls { "https" } else { "http" })
                }
            })
        };
        // cachefs's prefix, else the one sccache has for that service.
        let prefix = |sccache: &str| {
            var(ENV_REMOTE_PREFIX)
                .or_else(|| sccache_var(sccache))
                .unwrap_or_default()
        };
        let base = CloudConfig {
            ca_bundle: var(ENV_REMOTE_CA_BUNDLE).map(PathBuf::from),
            timeout,
            ..CloudConfig::default()
        };
        let mut tiers = Vec::new();
        if let Some(bucket) = var(ENV_S3_BUCKET) {
            tiers.push(CloudConfig {
                service: Some(Service::S3),
                bucket,
                endpoint: endpoint(ENV_S3_ENDPOINT),
                region: var(ENV_S3_REGION),
                path_style: flag(ENV_S3_PATH_STYLE, true)?,
                prefix: prefix("SCCACHE_S3_KEY_PREFIX"),
                ..base.clone()
            });
        }
        if let Some(bucket) = var(ENV_GCS_BUCKET) {
            let read_only = sccache_var("SCCACHE_GCS_RW_MODE")
                .is_some_and(|m| m.eq_ignore_ascii_case("READ_ONLY"));
            tiers.push(CloudConfig {
                service: Some(Service::Gcs),
                bucket,
                endpoint: endpoint(ENV_GCS_ENDPOINT),
                gcs_key_path: var(ENV_GCS_KEY_PATH).map(PathBuf::from),
                read_only,
                prefix: prefix("SCCACHE_GCS_KEY_PREFIX"),
                ..base.clone()
            });
        }
        if let Some(bucket) = var(ENV_AZURE_CONTAINER) {
            tiers.push(CloudConfig {
                service: Some(Service::Azure),
                bucket,
                endpoint: endpoint(ENV_AZURE_ENDPOINT),
                azure_connection_string: var(ENV_AZURE_CONNECTION_STRING),
                prefix: prefix("SCCACHE_AZURE_KEY_PREFIX"),
                ..base.clone()
            });
        }
        Ok(tiers)
    }

    /// A setting that sccache has too: cachefs's variable or config key, else sccache's
    /// variable of the same meaning.
    fn cloud_setting(&self, var: &str) -> Option<String> {
        self.setting(var).or_else(|| {
            let sccache = match var {
                ENV_S3_BUCKET => "SCCACHE_BUCKET",
                ENV_S3_ENDPOINT => "SCCACHE_ENDPOINT",
                ENV_S3_REGION => "SCCACHE_REGION",
                ENV_GCS_BUCKET => "SCCACHE_GCS_BUCKET",
                ENV_GCS_KEY_PATH => "SCCACHE_GCS_KEY_PATH",
                ENV_AZURE_CONTAINER => "SCCACHE_AZURE_BLOB_CONTAINER",
                ENV_AZURE_CONNECTION_STRING => "SCCACHE_AZURE_CONNECTION_STRING",
                ENV_REMOTE_TLS => "SCCACHE_S3_USE_SSL",
                _ => return None,
            };
            sccache_var(sccache)
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

fn sccache_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `1`/`0`, `true`/`false`, `on`/`off`, `yes`/`no`.
/// `name=value` pairs separated by commas (spaces around each trimmed); `None` if one has no
/// `=` or an empty name.
fn pairs(text: &str) -> Option<Vec<(String, String)>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=')?;
            let name = name.trim();
            (!name.is_empty()).then(|| (name.to_string(), value.trim().to_string()))
        })
        .collect()
}

fn parse_flag(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
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
            prefix: None,
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
    fn a_client_certificate_needs_its_key_and_headers_are_secret_pairs() {
        let half = with_file(&[
            (ENV_REAPI, "grpcs://h:1"),
            (ENV_REAPI_CLIENT_CERT, "/c.pem"),
        ]);
        let e = half.remote().unwrap_err().to_string();
        assert!(e.contains(ENV_REAPI_CLIENT_KEY), "{e}");
        let c = with_file(&[
            (ENV_REAPI, "grpcs://h:1"),
            (ENV_REAPI_CLIENT_CERT, "/c.pem"),
            (ENV_REAPI_CLIENT_KEY, "/k.pem"),
            (ENV_REAPI_HEADERS, "x-api-key=s3cret, x-team = a"),
        ]);
        let r = c.remote().unwrap().reapi.unwrap();
        assert_eq!(r.client_cert, Some(("/c.pem".into(), "/k.pem".into())));
        assert_eq!(
            r.headers,
            [
                ("x-api-key".to_string(), "s3cret".to_string()),
                ("x-team".to_string(), "a".to_string())
            ]
        );
        assert!(!format!("{r:?}").contains("s3cret"));
        assert!(is_secret(ENV_REAPI_HEADERS));
        let bad = with_file(&[(ENV_REAPI, "grpc://h:1"), (ENV_REAPI_HEADERS, "novalue")]);
        let e = bad.remote().unwrap_err().to_string();
        assert!(!e.contains("novalue"), "{e}");
    }

    #[test]
    fn remote_execution_needs_a_reapi_server_and_reads_platform_pairs() {
        assert!(with_file(&[]).remote_execution().unwrap().is_none());
        let alone = with_file(&[(ENV_REMOTE_EXECUTE, "1")]);
        let e = alone.remote_execution().unwrap_err().to_string();
        assert!(e.contains(ENV_REAPI), "{e}");
        let c = with_file(&[
            (ENV_REMOTE_EXECUTE, "true"),
            (ENV_REAPI, "grpc://h:1"),
            (ENV_REMOTE_EXECUTE_PLATFORM, "OSFamily=linux, pool = big"),
        ]);
        let r = c.remote_execution().unwrap().unwrap();
        assert_eq!(r.reapi.url, "grpc://h:1");
        let pairs: Vec<(&str, &str)> = r
            .platform
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(pairs, [("OSFamily", "linux"), ("pool", "big")]);
        let bad = with_file(&[
            (ENV_REMOTE_EXECUTE, "1"),
            (ENV_REAPI, "grpc://h:1"),
            (ENV_REMOTE_EXECUTE_PLATFORM, "linux"),
        ]);
        assert!(bad.remote_execution().is_err());
        assert!(with_file(&[(ENV_REMOTE_EXECUTE, "maybe")])
            .remote_execution()
            .is_err());
    }

    #[test]
    fn a_reapi_server_comes_with_its_instance_and_token_beside_the_others() {
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
        // A tier of its own among the others (after memcached or Redis, before the clouds).
        let both = with_file(&[(ENV_REAPI, "grpc://h:1"), (ENV_REDIS, "redis://x")]);
        let r = both.remote().unwrap();
        assert!(r.reapi.is_some() && r.redis.is_some());
    }

    #[test]
    fn cloud_tiers_from_the_file_and_sccache_variables() {
        let c = with_file(&[
            (ENV_S3_BUCKET, "b"),
            (ENV_S3_ENDPOINT, "127.0.0.1:8333"),
            (ENV_REMOTE_TLS, "0"),
            (ENV_GCS_BUCKET, "g"),
            (ENV_REMOTE_PREFIX, "team/"),
        ]);
        let r = c.remote().unwrap();
        assert_eq!(r.cloud.len(), 2);
        let (s3, gcs) = (&r.cloud[0], &r.cloud[1]);
        assert_eq!(s3.service, Some(Service::S3));
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert!(s3.path_style);
        assert_eq!((s3.prefix.as_str(), gcs.bucket.as_str()), ("team/", "g"));
        assert_eq!(s3.timeout, DEFAULT_CLOUD_TIMEOUT);
        assert!(c.remote_configured());

        // A CI configuration written for sccache (names no other test sets).
        let vars = [
            ("SCCACHE_AZURE_BLOB_CONTAINER", "ci"),
            (
                "SCCACHE_AZURE_CONNECTION_STRING",
                "AccountName=a;AccountKey=k",
            ),
            ("SCCACHE_AZURE_KEY_PREFIX", "sc/"),
            ("SCCACHE_GCS_BUCKET", "gb"),
            ("SCCACHE_GCS_RW_MODE", "READ_ONLY"),
        ];
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        let r = with_file(&[]).remote();
        for (k, _) in vars {
            std::env::remove_var(k);
        }
        let r = r.unwrap();
        let (gcs, azure) = (&r.cloud[0], &r.cloud[1]);
        assert_eq!((gcs.bucket.as_str(), gcs.read_only), ("gb", true));
        assert_eq!(azure.service, Some(Service::Azure));
        assert_eq!(
            (azure.bucket.as_str(), azure.prefix.as_str()),
            ("ci", "sc/")
        );
        assert!(azure.azure_connection_string.is_some());
        assert!(
            !format!("{azure:?}").contains("AccountKey"),
            "Debug hides the secret"
        );
        assert!(is_secret(ENV_AZURE_CONNECTION_STRING) && !is_secret(ENV_S3_BUCKET));
    }

    #[test]
    fn durations_are_milliseconds_unless_seconds_are_said() {
        assert_eq!(parse_duration("100"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("-1s"), None);
    }
}
