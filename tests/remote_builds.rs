//! Two independent agents ("two machines": two cache directories) sharing one memcached
//! pool or one redis-server, on a real C build through `cachefs run make`.

mod common;
use common::servers::{self, Blackhole};
use common::*;
use std::time::{Duration, Instant};

/// Starts the sandbox's agent with these settings (settings are read when it starts).
fn start_agent(sb: &Sandbox, env: &[(&str, &str)]) {
    let out = sb
        .cachefs()
        .envs(env.iter().copied())
        .arg("start")
        .output()
        .unwrap();
    assert!(out.status.success(), "start: {}", stderr(&out));
}

/// Waits until the agent's background writes to the remote have all been sent.
fn wait_for_remote_writes(sb: &Sandbox) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = sb.stats();
        let remote = &s["remote"];
        if remote["writes_pending"].as_u64() == Some(0) && remote["writes"].as_u64() > Some(0) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "remote writes never drained: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Builds with a first agent, then with a second agent in another cache directory that
/// shares only the remote: every compile must be a remote hit, outputs byte-identical.
fn two_agents_share(var: &str, url: &str, tier: &str) {
    two_agents_share_with(&[(var, url)], tier);
}

fn two_agents_share_with(settings: &[(&str, &str)], tier: &str) {
    let first = Sandbox::new();
    example_project(&first);
    first.sh("make -s -j2");
    let plain = example_outputs(&first);
    first.sh("make -s clean");

    start_agent(&first, settings);
    first.run_ok("make -s -j2");
    assert_eq!(first.counts(), (0, 22, 0, 0));
    let s = wait_for_remote_writes(&first);
    assert_eq!(s["remote"]["tier"], tier);
    assert_eq!(s["remote"]["errors"], 0, "{s}");
    assert_eq!(s["remote"]["writes_dropped"], 0, "{s}");
    first.sh("make -s clean");

    // Same project path, its own cache directory and agent.
    let mut second = Sandbox::new();
    second.project = first.project.clone();
    start_agent(&second, settings);
    let out = second.run_ok("make -s -j2");
    assert!(stderr(&out).contains("22 hits"), "{}", stderr(&out));
    let s = second.stats();
    assert_eq!(
        (
            s["hits"].as_u64(),
            s["remote_hits"].as_u64(),
            s["local_hits"].as_u64()
        ),
        (Some(22), Some(22), Some(0)),
        "{s}"
    );
    assert_eq!(
        (s["misses"].as_u64(), s["errors"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(s["remote"]["bytes_read"].as_u64().unwrap() > 0);
    assert_eq!(
        example_outputs(&second),
        plain,
        "remote hits differ from a plain build"
    );

    // Copied into the second agent's local store: the next build hits locally.
    second.sh("make -s clean");
    second.run_ok("make -s -j2");
    let s = second.stats();
    assert_eq!(
        (s["hits"].as_u64(), s["remote_hits"].as_u64()),
        (Some(44), Some(22))
    );
    assert_eq!(example_outputs(&second), plain);
}

#[test]
fn two_agents_share_one_memcached() {
    let mc = servers::memcached();
    two_agents_share(
        "CACHEFS_MEMCACHED",
        &format!("tcp://{}", mc.addr()),
        "memcached",
    );
}

#[test]
fn two_agents_share_one_redis() {
    let redis = servers::redis();
    two_agents_share(
        "CACHEFS_REDIS",
        &format!("redis://{}/0", redis.addr()),
        "redis",
    );
}

#[test]
fn a_blackhole_server_never_fails_or_stalls_the_build() {
    let hole = Blackhole::new();
    let sb = Sandbox::new();
    example_project(&sb);
    start_agent(
        &sb,
        &[
            ("CACHEFS_MEMCACHED", &format!("tcp://{}", hole.addr())),
            ("CACHEFS_REMOTE_TIMEOUT", "2s"),
        ],
    );
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    sb.run_ok("make -s -j2");
    let elapsed = started.elapsed();
    // Without the breaker each of the 22 lookups would wait the timeout, 11 per make
    // job: at least 22 s. With it only the first few operations wait (at most three at
    // once, below), so the build takes its usual few seconds plus about one timeout.
    let stalled = 11 * timeout;
    assert!(
        elapsed < stalled,
        "the build took {elapsed:?}: as long as waiting the {timeout:?} timeout on every lookup"
    );
    assert_eq!(sb.counts(), (0, 22, 0, 0));
    let s = sb.stats();
    let remote = &s["remote"];
    assert!(remote["errors"].as_u64().unwrap() >= 1, "{s}");
    let server = &remote["servers"][0];
    assert_eq!(server["healthy"], false, "{s}");
    // Only the first operations waited for the timeout (the two make jobs and the
    // background writer may each have been in flight at once); the breaker skipped the
    // other ~100.
    let failures = server["failures"].as_u64().unwrap();
    assert!((1..=3).contains(&failures), "{s}");

    sb.sh("make -s clean");
    sb.run_ok("make -s -j2");
    let s = sb.stats();
    assert_eq!(
        (s["hits"].as_u64(), s["local_hits"].as_u64()),
        (Some(22), Some(22))
    );
}

#[test]
fn no_remote_configured_means_no_remote_in_stats() {
    let sb = Sandbox::new();
    start_agent(&sb, &[]);
    let s = sb.stats();
    assert!(s["remote"].is_null(), "{s}");
    assert_eq!(s["remote_hits"], 0);
}

#[test]
fn two_memcached_servers_one_killed_the_rest_miss_cleanly() {
    let mut a = servers::memcached();
    let b = servers::memcached();
    let url = format!("tcp://{} tcp://{}", a.addr(), b.addr());
    let first = Sandbox::new();
    example_project(&first);
    first.sh("make -s -j2");
    let plain = example_outputs(&first);
    first.sh("make -s clean");
    start_agent(&first, &[("CACHEFS_MEMCACHED", &url)]);
    first.run_ok("make -s -j2");
    wait_for_remote_writes(&first);
    first.sh("make -s clean");

    a.kill();
    let mut second = Sandbox::new();
    second.project = first.project.clone();
    start_agent(&second, &[("CACHEFS_MEMCACHED", &url)]);
    second.run_ok("make -s -j2");
    let s = second.stats();
    let (hits, misses) = (s["hits"].as_u64().unwrap(), s["misses"].as_u64().unwrap());
    eprintln!("one of two servers killed: {hits} remote hits, {misses} misses");
    assert_eq!(hits + misses, 22, "{s}");
    assert_eq!(
        (s["errors"].as_u64(), s["remote_hits"].as_u64()),
        (Some(0), Some(hits))
    );
    // All items of one entry live on the server its key1 picks: the killed server's
    // entries miss, the other's hit (both empty has odds of 2 in 4 million).
    assert!(hits > 0 && misses > 0, "{s}");
    let servers = s["remote"]["servers"].as_array().unwrap();
    let dead = servers.iter().find(|x| x["server"] == a.addr()).unwrap();
    assert_eq!(dead["healthy"], false, "{s}");
    assert_eq!(
        example_outputs(&second),
        plain,
        "outputs differ after a partial remote"
    );
}

/// Every key memcached holds (its `lru_crawler metadump`), with a raw text-protocol client.
fn memcached_keys(addr: &str) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"lru_crawler metadump all\r\n").unwrap();
    let mut keys = Vec::new();
    for line in BufReader::new(s).lines() {
        let line = line.unwrap();
        if line == "END" {
            break;
        }
        if let Some(k) = line.strip_prefix("key=") {
            // metadump URL-encodes keys; ours only contain ':' to escape.
            keys.push(k.split(' ').next().unwrap().replace("%3A", ":"));
        }
    }
    keys
}

/// Flips one byte in the middle of an item's value, keeping its length.
fn corrupt_item(addr: &str, key: &str) {
    use std::io::{BufRead, BufReader, Read, Write};
    let s = std::net::TcpStream::connect(addr).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    write!(w, "get {key}\r\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let len: usize = line.trim_end().rsplit(' ').next().unwrap().parse().unwrap();
    let mut value = vec![0; len + 2];
    r.read_exact(&mut value).unwrap();
    value.truncate(len);
    line.clear();
    r.read_line(&mut line).unwrap();
    value[len / 2] ^= 0x20;
    write!(w, "set {key} 0 0 {len}\r\n").unwrap();
    w.write_all(&value).unwrap();
    w.write_all(b"\r\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), "STORED");
}

#[test]
fn corrupt_remote_blobs_are_misses_never_wrong_outputs() {
    let mc = servers::memcached();
    let url = format!("tcp://{}", mc.addr());
    let first = Sandbox::new();
    example_project(&first);
    first.sh("make -s -j2");
    let plain = example_outputs(&first);
    first.sh("make -s clean");
    start_agent(&first, &[("CACHEFS_MEMCACHED", &url)]);
    first.run_ok("make -s -j2");
    wait_for_remote_writes(&first);
    first.sh("make -s clean");

    let blobs: Vec<String> = memcached_keys(&mc.addr())
        .into_iter()
        .filter(|k| k.starts_with("cachefs1:b:"))
        .collect();
    assert_eq!(
        blobs.len(),
        43,
        "21 objects, their 21 .d files and calc: {blobs:?}"
    );
    for k in &blobs {
        corrupt_item(&mc.addr(), k);
    }

    let mut second = Sandbox::new();
    second.project = first.project.clone();
    start_agent(&second, &[("CACHEFS_MEMCACHED", &url)]);
    second.run_ok("make -s -j2");
    let s = second.stats();
    assert_eq!(
        (s["hits"].as_u64(), s["misses"].as_u64()),
        (Some(0), Some(22)),
        "{s}"
    );
    assert_eq!(
        s["remote"]["errors"].as_u64(),
        Some(22),
        "one corrupt blob read per compile: {s}"
    );
    assert_eq!(
        example_outputs(&second),
        plain,
        "a corrupt remote entry changed an output"
    );
}

/// The same settings from the config file's `[remote]` table, with entries
/// authenticated by a shared key.
#[test]
fn remote_settings_from_the_config_file() {
    let mc = servers::memcached();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        format!(
            "[remote]\nmemcached = [\"tcp://{}\"]\ntimeout = \"200ms\"\nkey = \"team secret\"\n",
            mc.addr()
        ),
    )
    .unwrap();
    let file = file.to_string_lossy().into_owned();
    two_agents_share_with(&[("CACHEFS_CONFIG", &file)], "memcached");
    let probe = Sandbox::new();
    start_agent(&probe, &[("CACHEFS_CONFIG", &file)]);
    assert_eq!(probe.stats()["remote"]["authenticated"], true);
}

/// `cachefs doctor` reports the shared tier: in use and healthy, then failing
/// once its server is gone.
#[test]
fn doctor_reports_the_shared_cache() {
    let mut mc = servers::memcached();
    let sb = Sandbox::new();
    example_project(&sb);
    let url = format!("tcp://{}", mc.addr());
    start_agent(&sb, &[("CACHEFS_MEMCACHED", &url)]);
    let doctor = |sb: &Sandbox| {
        let out = sb
            .cachefs()
            .env("CACHEFS_MEMCACHED", &url)
            .arg("doctor")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = doctor(&sb);
    assert!(
        text.contains("ok    shared cache") && text.contains("memcached at"),
        "{text}"
    );
    mc.kill();
    sb.run_ok("make -s -j2");
    let text = doctor(&sb);
    assert!(text.contains("FAIL  shared cache"), "{text}");
}
