//! The object-store tiers (S3, GCS, Azure Blob) against real servers started here:
//! SeaweedFS, fake-gcs-server and Azurite on 127.0.0.1. Two agents with their own cache
//! directories share a bucket on a real third-party build (Lua from Debian's source
//! package); wrong credentials, a missing bucket, a stopped server and a tampered bucket are
//! misses and correct builds; several tiers at once fill the earlier ones.

mod common;
use cachefs_store::remote::{
    chunk_key, remote_key, route_key, CloudConfig, Kind, ObjectStore, Remote, RemoteTier, Service,
};
use common::debian::{lua_artifacts as artifacts, lua_plain};
use common::object_stores::{self, ObjectServer};
use common::*;
use std::time::{Duration, Instant};

/// Starts the sandbox's agent with these settings.
fn start_agent(sb: &Sandbox, settings: &[(String, String)]) {
    let env: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    common::start_agent(sb, &env);
}

/// Another agent ("another machine"): its own cache directory, the same project path.
fn second_agent(first: &Sandbox, settings: &[(String, String)]) -> Sandbox {
    let mut second = Sandbox::new();
    second.project = first.project.clone();
    start_agent(&second, settings);
    second
}

/// (hits, remote hits, misses, errors) from `stats --json`.
fn outcome(s: &serde_json::Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| s[k].as_u64().unwrap();
    (n("hits"), n("remote_hits"), n("misses"), n("errors"))
}

const LUA_HITS: u64 = 38; // 34 objects, ar and ranlib of liblua.a, lua and luac links

/// A first agent builds Lua and fills the bucket; a second agent, with a cache directory of
/// its own and the same project path, rebuilds it from the bucket alone: every compile a
/// remote hit, every artifact byte-identical to the plain build.
fn lua_through(server: &ObjectServer, tier: &str) {
    let first = Sandbox::new();
    let plain = lua_plain(&first);
    let settings = server.settings();
    start_agent(&first, &settings);
    first.run_ok("make -s -j2 linux >/dev/null");
    assert_eq!(artifacts(&first.path("src")), plain);
    let s = wait_for_remote_writes(&first);
    assert_eq!(s["remote"]["tier"], tier, "{s}");
    assert_eq!(s["remote"]["errors"], 0, "{s}");
    assert_eq!(s["remote"]["writes_dropped"], 0, "{s}");
    first.sh("make -s clean");

    let second = second_agent(&first, &settings);
    second.run_ok("make -s -j2 linux >/dev/null");
    let s = second.stats();
    assert_eq!(outcome(&s), (LUA_HITS, LUA_HITS, 0, 0), "{s}");
    assert_eq!(s["remote"]["errors"], 0, "{s}");
    assert!(
        s["remote"]["tiers"][0]["get_latency_us"].as_u64() > Some(0),
        "{s}"
    );
    assert_eq!(
        artifacts(&second.path("src")),
        plain,
        "the build from the {tier} bucket differs from the plain build"
    );
    let lua = second.sh("src/lua -e 'print(6 * 7)'");
    assert_eq!(lua.stdout, b"42\n");
}

#[test]
fn s3_second_agent_builds_lua_from_the_bucket() {
    lua_through(&ObjectServer::s3(), "s3");
}

#[test]
fn gcs_second_agent_builds_lua_from_the_bucket() {
    lua_through(&ObjectServer::gcs(), "gcs");
}

#[test]
fn azure_second_agent_builds_lua_from_the_container() {
    lua_through(&ObjectServer::azure(), "azure");
}

/// The store's view of a server: its tier as `cachefs` would configure it.
fn tier_config(server: &ObjectServer, bucket: &str) -> CloudConfig {
    let service = match server.kind {
        object_stores::Kind::S3 => Service::S3,
        object_stores::Kind::Gcs => Service::Gcs,
        object_stores::Kind::Azure => Service::Azure,
    };
    let settings = server.settings_for(bucket);
    let get = |k: &str| {
        settings
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    CloudConfig {
        service: Some(service),
        bucket: bucket.into(),
        prefix: "t/".into(),
        // Azure's is in the connection string, with the account's path.
        endpoint: (service != Service::Azure).then(|| server.endpoint()),
        path_style: true,
        azure_connection_string: get("CACHEFS_AZURE_CONNECTION_STRING"),
        // Not through the environment: tests run in parallel in this process.
        s3_keys: Some((
            object_stores::S3_KEY.into(),
            object_stores::S3_SECRET.into(),
        )),
        timeout: Duration::from_secs(2),
        ..CloudConfig::default()
    }
}

const ID: [u8; 32] = [7; 32];
const ROUTE: [u8; 32] = [9; 32];

/// A value replaced, truncated or removed in the bucket is a miss (counted as an error),
/// never a wrong value; on every service.
#[test]
fn a_tampered_bucket_is_a_miss_on_every_service() {
    for server in [
        ObjectServer::s3(),
        ObjectServer::gcs(),
        ObjectServer::azure(),
    ] {
        let store = Remote::new(
            Box::new(ObjectStore::new(&tier_config(&server, object_stores::BUCKET)).unwrap()),
            false,
        );
        // Over one chunk, so the value has a head and two chunks: noise, which does not
        // compress.
        let mut value = vec![0u8; 1_500_000];
        blake3::Hasher::new().finalize_xof().fill(&mut value);
        store.put(Kind::Result, &ID, &ROUTE, &value);
        let got = store.get(Kind::Result, &ID, &ROUTE);
        assert!(
            got.as_deref() == Some(&value[..]),
            "{:?}: {:?} {:?}",
            server.kind,
            got.map(|v| v.len()),
            store.report()
        );
        let (route, key) = (route_key(&ROUTE), remote_key(Kind::Result, &ID));
        let tier = store.tier();
        let chunk = chunk_key(&key, 1);
        let genuine = tier.get(&route, &chunk).unwrap().unwrap();
        // Truncated chunk.
        tier.set(&route, &chunk, &genuine[..genuine.len() / 2])
            .unwrap();
        assert_eq!(
            store.get(Kind::Result, &ID, &ROUTE),
            None,
            "{:?}",
            server.kind
        );
        // Replaced chunk, same length.
        let mut flipped = genuine.clone();
        flipped[1000] ^= 1;
        tier.set(&route, &chunk, &flipped).unwrap();
        assert_eq!(store.get(Kind::Result, &ID, &ROUTE), None);
        // Replaced head.
        tier.set(&route, &chunk, &genuine).unwrap();
        assert!(store.get(Kind::Result, &ID, &ROUTE).is_some());
        tier.set(&route, &key, b"not a head").unwrap();
        assert_eq!(store.get(Kind::Result, &ID, &ROUTE), None);
        // Removed.
        tier.delete(&route, &key).unwrap();
        assert_eq!(tier.get(&route, &key).unwrap(), None);
        // An object larger than any item cachefs writes is refused, not read whole.
        let planted = vec![0u8; cachefs_store::remote::chunking::MAX_ITEM_LEN + 4096];
        tier.set(&route, &key, &planted).unwrap();
        let err = tier.get(&route, &key).unwrap_err().to_string();
        assert!(err.contains("over the limit"), "{:?}: {err}", server.kind);
        let r = store.report();
        assert_eq!((r.gets_found, r.errors), (2, 3), "{:?}: {r:?}", server.kind);
    }
}

/// The error of a tier's first request.
fn first_error(c: &CloudConfig) -> String {
    let tier = ObjectStore::new(c).unwrap();
    tier.get("r", "k").unwrap_err().to_string()
}

/// Asserts that `text` says every one of `said` and none of `secret`.
fn says(text: &str, said: &[&str], secret: Option<&str>) {
    for s in said {
        assert!(text.contains(s), "{s:?} not said: {text}");
    }
    if let Some(secret) = secret {
        assert!(!text.contains(secret), "the secret is said: {text}");
    }
}

/// Wrong credentials and a missing bucket: the first request says which tier and what to
/// fix, every call is a miss from then on, and no secret is in the message.
#[test]
fn refused_credentials_and_a_missing_bucket_are_said_clearly() {
    let s3 = ObjectServer::s3();
    let azure = ObjectServer::azure();

    let wrong = CloudConfig {
        s3_keys: Some((object_stores::S3_KEY.into(), "not-the-secret-4242".into())),
        ..tier_config(&s3, object_stores::BUCKET)
    };
    let tier = ObjectStore::new(&wrong).unwrap();
    let err = tier.get("r", "k").unwrap_err().to_string();
    let refused = "refused the credentials";
    says(
        &err,
        &["s3", refused, "AWS_SECRET_ACCESS_KEY"],
        Some("not-the-secret-4242"),
    );
    assert!(tier.set("r", "k", b"v").is_err());
    assert!(!tier.health()[0].healthy);

    let err = first_error(&tier_config(&s3, "no-such-bucket"));
    says(
        &err,
        &["no-such-bucket", "does not exist", "CACHEFS_S3_BUCKET"],
        None,
    );

    let mut c = tier_config(&azure, object_stores::BUCKET);
    let good = c.azure_connection_string.clone().unwrap();
    let wrong = "A".repeat(88);
    c.azure_connection_string = Some(good.replace(object_stores::AZURE_KEY, &wrong));
    let err = first_error(&c);
    says(
        &err,
        &["azure", refused, "CACHEFS_AZURE_CONNECTION_STRING"],
        Some(&wrong),
    );
    let c = CloudConfig {
        azure_connection_string: Some(good),
        ..tier_config(&azure, "nosuchcontainer")
    };
    says(&first_error(&c), &["container", "does not exist"], None);
}

/// `cachefs doctor` with these settings.
fn doctor(sb: &Sandbox, settings: &[(String, String)]) -> std::process::Output {
    sb.cachefs()
        .envs(settings.iter().map(|(k, v)| (k, v)))
        .arg("doctor")
        .output()
        .unwrap()
}

fn with(settings: &[(String, String)], more: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v = settings.to_vec();
    for (k, val) in more {
        v.retain(|(n, _)| n != k);
        v.push((k.to_string(), val.to_string()));
    }
    v
}

/// The example project built plainly in a fresh sandbox: its outputs (then cleaned).
fn example_plain() -> (Sandbox, Vec<(String, Vec<u8>)>) {
    let sb = Sandbox::new();
    example_project(&sb);
    sb.sh("make -s -j2");
    let plain = example_outputs(&sb);
    sb.sh("make -s clean");
    (sb, plain)
}

/// Refused credentials: the build is correct and uncached-remote, the agent's log says once
/// which tier and what to set, `cachefs doctor` fails that tier and says the same; the secret
/// is in none of the log, `stats`, `doctor` or `config`.
#[test]
fn refused_credentials_build_correctly_and_the_secret_is_never_shown() {
    let s3 = ObjectServer::s3();
    const SECRET: &str = "wrong-secret-c0ffee-5eed";
    let settings = with(&s3.settings(), &[("AWS_SECRET_ACCESS_KEY", SECRET)]);
    let (sb, plain) = example_plain();
    start_agent(&sb, &settings);
    let run = sb.run_ok("make -s -j2");
    assert_eq!(example_outputs(&sb), plain);
    let s = sb.stats();
    assert_eq!(
        (s["misses"].as_u64(), s["errors"].as_u64()),
        (Some(22), Some(0)),
        "a refused tier is a miss, not an error: {s}"
    );
    // The build's own stderr says it too, once, at the end of the run: the user running
    // `cachefs run make` may never look at agent.log.
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("refused the credentials"))
        .collect();
    assert_eq!(said.len(), 1, "said once on the run's stderr: {stderr}");
    assert!(
        said[0].starts_with("cachefs: s3 tier") && said[0].contains("AWS_SECRET_ACCESS_KEY"),
        "{}",
        said[0]
    );
    assert!(
        !stderr.contains(SECRET),
        "the secret is on stderr: {stderr}"
    );
    let log = std::fs::read_to_string(sb.cache.join("agent.log")).unwrap();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused the credentials"))
        .collect();
    assert_eq!(said.len(), 1, "said once: {log}");
    assert!(
        said[0].contains("s3 tier") && said[0].contains("AWS_SECRET_ACCESS_KEY"),
        "{}",
        said[0]
    );
    let doctor = doctor(&sb, &settings);
    let doctor_out = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(!doctor.status.success());
    assert!(
        doctor_out
            .lines()
            .any(|l| l.starts_with("FAIL  tier s3") && l.contains("refused the credentials")),
        "{doctor_out}"
    );
    let stats_text = sb.cachefs().arg("stats").output().unwrap();
    let stats_text = String::from_utf8_lossy(&stats_text.stdout).into_owned();
    assert!(stats_text.contains("tier s3"), "{stats_text}");
    for (what, text) in [
        ("agent.log", &log),
        ("stats --json", &s.to_string()),
        ("stats", &stats_text),
        ("doctor", &doctor_out),
    ] {
        assert!(!text.contains(SECRET), "the secret is in {what}: {text}");
    }

    // The one secret cachefs reads itself: Azure's connection string, from the config file.
    let config = sb.root.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[remote]\nazure_container = \"c\"\nazure_connection_string = \"AccountName=a;AccountKey={SECRET}\"\n"
        ),
    )
    .unwrap();
    let shown = sb
        .cachefs()
        .env("CACHEFS_CONFIG", &config)
        .arg("config")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.contains("CACHEFS_AZURE_CONNECTION_STRING") && shown.contains("(secret)"),
        "{shown}"
    );
    assert!(!shown.contains(SECRET), "{shown}");
}

/// A missing bucket: the build is correct, the log and `doctor` say which bucket and what
/// to fix.
#[test]
fn a_missing_bucket_builds_correctly_and_is_said() {
    let s3 = ObjectServer::s3();
    let settings = with(&s3.settings(), &[("CACHEFS_S3_BUCKET", "no-such-bucket")]);
    let (sb, plain) = example_plain();
    start_agent(&sb, &settings);
    let run = sb.run_ok("make -s -j2");
    assert_eq!(example_outputs(&sb), plain);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("the bucket does not exist"))
        .collect();
    assert_eq!(said.len(), 1, "said once on the run's stderr: {stderr}");
    assert!(said[0].contains("CACHEFS_S3_BUCKET"), "{}", said[0]);
    let log = std::fs::read_to_string(sb.cache.join("agent.log")).unwrap();
    let said = log
        .lines()
        .filter(|l| l.contains("the bucket does not exist"));
    assert_eq!(said.count(), 1, "said once: {log}");
    assert!(
        log.contains("no-such-bucket") && log.contains("CACHEFS_S3_BUCKET"),
        "{log}"
    );
    let doctor = doctor(&sb, &settings);
    let out = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL  tier s3") && l.contains("does not exist")),
        "{out}"
    );
}

/// The server stops in the middle of a build (between two of its compiles): what was
/// fetched before is a hit, the rest misses and compiles, the outputs are the plain ones.
#[test]
fn a_server_stopped_mid_build_leaves_a_correct_build() {
    let s3 = ObjectServer::s3();
    let settings = s3.settings();
    let (first, plain) = example_plain();
    start_agent(&first, &settings);
    first.run_ok("make -s -j2");
    wait_for_remote_writes(&first);
    first.sh("make -s clean");

    let second = second_agent(&first, &settings);
    second.run_ok(&format!(
        "make -s obj/abs.o obj/add.o obj/avg.o obj/bits.o obj/clamp.o && kill {} && make -s -j2",
        s3.pid()
    ));
    let s = second.stats();
    assert_eq!(outcome(&s), (5, 5, 17, 0), "{s}");
    assert_eq!(s["remote"]["servers"][0]["healthy"], false, "{s}");
    assert_eq!(example_outputs(&second), plain);
}

/// local → memcached → S3: a value only S3 has is a remote hit, and lands in memcached
/// (a third agent with memcached alone hits it) and locally (the second agent's rebuild is
/// all local hits). `doctor` checks each tier with a write and a read-back.
#[test]
fn a_hit_found_only_in_s3_fills_memcached_and_the_local_store() {
    let s3 = ObjectServer::s3();
    let mc = common::servers::memcached();
    let mc_url = format!("tcp://{}", mc.addr());
    let (first, plain) = example_plain();
    start_agent(&first, &s3.settings());
    first.run_ok("make -s -j2");
    wait_for_remote_writes(&first);
    first.sh("make -s clean");

    let both = with(&s3.settings(), &[("CACHEFS_MEMCACHED", &mc_url)]);
    let second = second_agent(&first, &both);
    second.run_ok("make -s -j2");
    assert_eq!(example_outputs(&second), plain);
    let deadline = Instant::now() + Duration::from_secs(60);
    let s = loop {
        let s = second.stats();
        if s["remote"]["writes_pending"] == 0 && s["remote"]["tiers"][0]["fills"].as_u64() > Some(0)
        {
            break s;
        }
        assert!(Instant::now() < deadline, "the fills never drained: {s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(s["remote"]["tier"], "memcached → s3", "{s}");
    assert_eq!(
        (s["remote_hits"].as_u64(), s["misses"].as_u64()),
        (Some(22), Some(0)),
        "{s}"
    );
    let (mc_tier, s3_tier) = (&s["remote"]["tiers"][0], &s["remote"]["tiers"][1]);
    assert_eq!(mc_tier["gets_found"], 0, "{s}");
    assert!(s3_tier["gets_found"].as_u64() > Some(0), "{s}");
    assert_eq!(
        mc_tier["fills"], s3_tier["gets_found"],
        "every value found in S3 is filled: {s}"
    );
    assert_eq!(
        s3_tier["writes"], 0,
        "a fill does not write back to where it came from: {s}"
    );

    let doctor = doctor(&second, &both);
    let out = String::from_utf8_lossy(&doctor.stdout);
    for tier in ["memcached", "s3"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("ok    tier {tier}"))
                    && l.contains("written and read back")),
            "{out}"
        );
    }

    second.sh("make -s clean");
    second.zero_stats();
    second.run_ok("make -s -j2");
    let s = second.stats();
    assert_eq!(
        (s["local_hits"].as_u64(), s["remote_hits"].as_u64()),
        (Some(22), Some(0)),
        "{s}"
    );

    let third = second_agent(&first, &[("CACHEFS_MEMCACHED".into(), mc_url.clone())]);
    second.sh("make -s clean");
    third.run_ok("make -s -j2");
    let s = third.stats();
    assert_eq!(
        (s["remote_hits"].as_u64(), s["misses"].as_u64()),
        (Some(22), Some(0)),
        "{s}"
    );
    assert_eq!(example_outputs(&third), plain);
}

/// An https endpoint with a certificate from a private CA: refused without the CA bundle
/// setting (a miss, the tier skipped), accepted with it.
#[test]
fn tls_with_a_private_ca_is_accepted_through_the_ca_bundle_only() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificate(certs.path());
    let azure = ObjectServer::azure_tls(Some((&cert, &key)));
    assert_eq!(azure.scheme, "https");

    let without = ObjectStore::new(&tier_config(&azure, object_stores::BUCKET)).unwrap();
    let err = without.set("r", "k", b"v").unwrap_err();
    assert!(err.is_connection_failure(), "{err}");
    assert!(!without.health()[0].healthy);

    let with_ca = Remote::new(
        Box::new(
            ObjectStore::new(&CloudConfig {
                ca_bundle: Some(ca),
                ..tier_config(&azure, object_stores::BUCKET)
            })
            .unwrap(),
        ),
        false,
    );
    with_ca.put(Kind::Blob, &ID, &ROUTE, b"over TLS");
    assert_eq!(
        with_ca.get(Kind::Blob, &ID, &ROUTE).as_deref(),
        Some(&b"over TLS"[..])
    );
    assert_eq!(with_ca.report().errors, 0);
}

/// A server that accepts and never answers costs one timeout, then the breaker skips it; a
/// server that answers every request with HTTP 500 is a miss and opens the breaker too.
#[test]
fn a_silent_server_and_http_500s_are_misses() {
    let silent = common::servers::Blackhole::new();
    let failing = Http500::start();
    for (what, endpoint) in [
        ("silent", format!("http://{}", silent.addr())),
        ("500s", format!("http://{}", failing.addr)),
    ] {
        // GCS: an endpoint without a key file is asked unsigned, so nothing but the server
        // decides the outcome.
        let tier = ObjectStore::new(&CloudConfig {
            service: Some(Service::Gcs),
            bucket: "cachefs".into(),
            endpoint: Some(endpoint),
            path_style: true,
            timeout: Duration::from_millis(500),
            ..CloudConfig::default()
        })
        .unwrap();
        let remote = Remote::new(Box::new(tier), false);
        assert_eq!(remote.get(Kind::Result, &ID, &ROUTE), None, "{what}");
        let first = remote.tier().health()[0].clone();
        assert!(!first.healthy, "{what}: {first:?}");
        let why = first.last_error.unwrap();
        let expected = if what == "silent" {
            "no answer within the timeout"
        } else {
            "500"
        };
        assert!(why.contains(expected), "{what}: {why}");
        // Skipped now, without asking the server.
        let skipped = remote.tier().get("r", "k").unwrap_err();
        assert!(skipped.to_string().contains("skipped"), "{what}: {skipped}");
        remote.put(Kind::Result, &ID, &ROUTE, b"value");
        let r = remote.report();
        assert_eq!((r.gets_found, r.errors), (0, 2), "{what}: {r:?}");
    }
    assert!(failing.requests() > 0, "the 500s server was asked");
}

/// Answers every HTTP request with 500 Internal Server Error, on a port of 127.0.0.1.
struct Http500 {
    addr: String,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Http500 {
    fn start() -> Http500 {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut buf = [0u8; 4096];
                // One request's head (these requests have no body worth reading here).
                if conn.read(&mut buf).unwrap_or(0) > 0 {
                    seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = conn.write_all(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        });
        Http500 { addr, count }
    }

    fn requests(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}
