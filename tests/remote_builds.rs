//! Two independent agents ("two machines": two cache directories) sharing one memcached
//! pool or one redis-server, on a real C build through `cachefs run make`.

mod common;
use cachefs_store::remote::FORMAT_VERSION;
use common::servers::{self, Blackhole};
use common::*;
use std::time::{Duration, Instant};

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

/// Outputs over `INLINE_BLOB_MAX` keep keys of their own: a compile whose `.i`, `.s` and `.o`
/// are each over 512 KiB stores three blobs beside its result, and a second agent reads the
/// three concurrently (restore's fetchers) into byte-identical outputs.
#[test]
fn large_outputs_have_keys_of_their_own_and_are_read_back() {
    let mc = servers::memcached();
    let url = format!("tcp://{}", mc.addr());
    let first = Sandbox::new();
    // A 200 000-element initialised array: over 512 KiB as preprocessed text, assembly and
    // object alike.
    let values: Vec<String> = (0..200_000u32)
        .map(|i| (i * 7919 % 65521).to_string())
        .collect();
    first.write(
        "big.c",
        &format!("const unsigned int big[] = {{{}}};\n", values.join(",")),
    );
    let compile = "gcc -c -save-temps big.c";
    first.sh(compile);
    let outputs = ["big.i", "big.s", "big.o"];
    let plain: Vec<Vec<u8>> = outputs.iter().map(|f| first.read(f)).collect();
    for (f, data) in outputs.iter().zip(&plain) {
        assert!(
            data.len() > cachefs_store::INLINE_BLOB_MAX,
            "{f}: {}",
            data.len()
        );
    }
    first.sh("rm -f big.i big.s big.o");
    start_agent(&first, &[("CACHEFS_MEMCACHED", &url)]);
    first.run_ok(compile);
    let s = wait_for_remote_writes(&first);
    assert_eq!(s["remote"]["errors"], 0, "{s}");
    let blobs = memcached_keys(&mc.addr())
        .into_iter()
        .filter(|k| {
            k.starts_with(&format!("cachefs{FORMAT_VERSION}:b:")) && k.matches(':').count() == 2
        })
        .count();
    assert_eq!(blobs, 3, "one key each for .i, .s and .o");
    first.sh("rm -f big.i big.s big.o");

    let mut second = Sandbox::new();
    second.project = first.project.clone();
    start_agent(&second, &[("CACHEFS_MEMCACHED", &url)]);
    second.run_ok(compile);
    let s = second.stats();
    assert_eq!(
        (s["remote_hits"].as_u64(), s["misses"].as_u64()),
        (Some(1), Some(0)),
        "{s}"
    );
    for (f, data) in outputs.iter().zip(&plain) {
        assert!(
            second.read(f) == *data,
            "{f} differs from the plain compile's"
        );
    }
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

/// Every manifest on the server corrupted (each carries its compile's result and outputs,
/// so a hit reads nothing else): every compile misses, counted as a remote error, and the
/// outputs are the plain build's.
#[test]
fn corrupt_remote_entries_are_misses_never_wrong_outputs() {
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

    let keys = memcached_keys(&mc.addr());
    let of = |kind: &str| {
        keys.iter()
            .filter(|k| k.starts_with(&format!("cachefs{FORMAT_VERSION}:{kind}:")))
            .cloned()
            .collect::<Vec<_>>()
    };
    // Every output is small: it travels inside its result, and no blob has a key of its own.
    assert_eq!(of("b"), Vec::<String>::new());
    assert_eq!(of("r").len(), 22, "{keys:?}");
    let manifests = of("m");
    assert_eq!(manifests.len(), 22, "{keys:?}");
    for k in &manifests {
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
        "one corrupt manifest read per compile: {s}"
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

/// Another user, or another CI job, on the same tree: a second agent with its
/// own cache directory, sharing one memcached, run with another `HOME`,
/// `USER`, `LOGNAME`, `HOSTNAME` and CI ids. No compiler reads those, so every
/// compile is a remote hit, and the outputs are the plain build's.
#[test]
fn another_user_and_ci_job_hit_what_the_first_stored() {
    let mc = servers::memcached();
    let settings = [("CACHEFS_MEMCACHED", format!("tcp://{}", mc.addr()))];
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = Sandbox::new();
    example_project(&first);
    first.sh("make -s -j2");
    let plain = example_outputs(&first);
    first.sh("make -s clean");
    start_agent(&first, &settings);
    first.run_ok("CI_JOB_ID=7 GITHUB_RUN_ID=1 BUILD_NUMBER=1 make -s -j2");
    wait_for_remote_writes(&first);
    first.sh("make -s clean");

    let mut second = Sandbox::new();
    second.project = first.project.clone();
    start_agent(&second, &settings);
    let out = second.run_ok(
        "HOME=/nonexistent USER=ci LOGNAME=ci HOSTNAME=runner-2 \
         CI_JOB_ID=8 GITHUB_RUN_ID=2 BUILD_NUMBER=2 FOO=1 make -s -j2",
    );
    assert!(stderr(&out).contains("22 hits"), "{}", stderr(&out));
    let s = second.stats();
    assert_eq!(s["remote_hits"].as_u64(), Some(22), "{s}");
    assert_eq!(example_outputs(&second), plain);
}

/// A memcached stand-in for the write queue: every `get` misses at once; every `set` is
/// read whole, counted, and answered `STORED` only once the gate is opened, so the
/// agent's one writer thread stays inside its first write until then.
struct GatedMemcached {
    port: u16,
    sets: std::sync::Arc<std::sync::atomic::AtomicU64>,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl GatedMemcached {
    fn new() -> GatedMemcached {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sets = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, o) = (sets.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (sets, open) = (s.clone(), o.clone());
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().unwrap();
                    let mut r = BufReader::new(conn);
                    let mut line = String::new();
                    while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                        let words: Vec<&str> = line.split_whitespace().collect();
                        let reply = match words[..] {
                            ["get", _] => "END\r\n",
                            ["set", _, _, _, len] => {
                                let mut data = vec![0; len.parse::<usize>().unwrap() + 2];
                                r.read_exact(&mut data).unwrap();
                                sets.fetch_add(1, SeqCst);
                                while !open.load(SeqCst) {
                                    std::thread::sleep(Duration::from_millis(5));
                                }
                                "STORED\r\n"
                            }
                            _ => "ERROR\r\n",
                        };
                        if w.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                        line.clear();
                    }
                });
            }
        });
        GatedMemcached { port, sets, open }
    }
}

/// README: a miss is "sent to the shared cache by a background thread through a bounded
/// queue …: a full queue drops writes and counts them" (`writes_dropped` in
/// `cachefs stats`). The queue holds 1024 writes; a compile pushes its result (with its
/// small outputs inside) and its manifest, plus one per output over
/// `INLINE_BLOB_MAX`. With the writer held in its first write, 520 compiles of tiny
/// sources (1040 writes) overfill the queue: exactly the excess is dropped, the rest is
/// sent once the server answers.
#[test]
fn a_full_write_queue_drops_and_counts_writes() {
    use std::sync::atomic::Ordering::SeqCst;
    const QUEUE: u64 = 1024;
    let server = GatedMemcached::new();
    let sb = Sandbox::new();
    start_agent(
        &sb,
        &[
            (
                "CACHEFS_MEMCACHED",
                &format!("tcp://127.0.0.1:{}", server.port),
            ),
            // Far longer than the test: the held write must not time out.
            ("CACHEFS_REMOTE_TIMEOUT", "120s"),
        ],
    );
    sb.write("a.c", "int a(void) { return 1; }\n");
    sb.run_ok("gcc -c a.c");
    let first = 2; // its result (a.o inside) and its manifest
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.sets.load(SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the writer never sent a write");
        std::thread::sleep(Duration::from_millis(10));
    }
    let n = 520;
    for i in 0..n {
        sb.write(
            &format!("s{i}.c"),
            &format!("int f{i}(void) {{ return {i}; }}\n"),
        );
    }
    sb.run_ok("ls s*.c | xargs -P2 -n1 gcc -c");
    assert_eq!(sb.counts(), (0, 1 + n, 0, 0));
    let pushed = first + 2 * n;
    let s = sb.stats();
    let remote = &s["remote"];
    assert_eq!(
        (
            remote["writes_dropped"].as_u64(),
            remote["writes_pending"].as_u64()
        ),
        (Some(pushed - QUEUE - 1), Some(QUEUE + 1)),
        "one write held by the writer, the queue full, the rest dropped: {s}"
    );
    assert_eq!(server.sets.load(SeqCst), 1);
    let text = String::from_utf8(sb.cachefs().arg("stats").output().unwrap().stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("writes dropped (queue full)"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.ends_with(&format!(" {}", pushed - QUEUE - 1)),
        "{line}"
    );

    server.open.store(true, SeqCst);
    let s = wait_for_remote_writes(&sb);
    let remote = &s["remote"];
    assert_eq!(
        (
            remote["writes"].as_u64(),
            remote["writes_dropped"].as_u64(),
            remote["errors"].as_u64()
        ),
        (Some(QUEUE + 1), Some(pushed - QUEUE - 1), Some(0)),
        "{s}"
    );
}

/// `SELECT db` then one command on a Redis server over RESP; the command's reply as
/// text: an integer or status line, or the items of an array of bulk strings.
fn redis_in_db(addr: &str, db: u32, args: &[&str]) -> Vec<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let db = db.to_string();
    let mut req = String::new();
    for cmd in [&["SELECT", db.as_str()][..], args] {
        req.push_str(&format!("*{}\r\n", cmd.len()));
        for a in cmd {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), "+OK", "SELECT {db}");
    line.clear();
    r.read_line(&mut line).unwrap();
    let line = line.trim_end().to_string();
    match line.as_bytes()[0] {
        b':' | b'+' => vec![line[1..].to_string()],
        b'*' => {
            let n: usize = line[1..].parse().unwrap();
            (0..n)
                .map(|_| {
                    let mut len = String::new();
                    r.read_line(&mut len).unwrap();
                    let len: usize = len.trim_end()[1..].parse().unwrap();
                    let mut item = vec![0; len + 2];
                    r.read_exact(&mut item).unwrap();
                    String::from_utf8_lossy(&item[..len]).into_owned()
                })
                .collect()
        }
        _ => panic!("redis replied {line}"),
    }
}

/// README: `CACHEFS_REDIS_EXPIRY` is the "seconds a Redis entry lives (`SET … EX`);
/// unset: no expiry". Every key a build writes carries that TTL (read back with
/// `TTL`); without the setting none has one.
#[test]
fn redis_expiry_sets_a_ttl_on_every_key() {
    let redis = servers::redis();
    for (db, expiry) in [(1, Some(3600u64)), (2, None)] {
        let sb = Sandbox::new();
        example_project(&sb);
        let url = format!("redis://{}/{db}", redis.addr());
        let expiry_s = expiry.map(|e| e.to_string());
        let mut env = vec![("CACHEFS_REDIS", url.as_str())];
        if let Some(e) = &expiry_s {
            env.push(("CACHEFS_REDIS_EXPIRY", e));
        }
        start_agent(&sb, &env);
        sb.run_ok("make -s -j2");
        let s = wait_for_remote_writes(&sb);
        assert_eq!(s["remote"]["errors"], 0, "{s}");
        let keys = redis_in_db(&redis.addr(), db, &["KEYS", "*"]);
        // 22 results (their outputs inside: 22 objects' .o, 21 .d files, calc) and
        // manifests.
        assert_eq!(keys.len(), 22 + 22, "{keys:?}");
        for k in &keys {
            assert!(k.starts_with(&format!("cachefs{FORMAT_VERSION}:")), "{k}");
            let ttl: i64 = redis_in_db(&redis.addr(), db, &["TTL", k])[0]
                .parse()
                .unwrap();
            match expiry {
                // Seconds left: at most the expiry, and the build took far less than a minute.
                Some(e) => assert!(ttl <= e as i64 && ttl > e as i64 - 60, "TTL {ttl} of {k}"),
                None => assert_eq!(ttl, -1, "{k} expires without CACHEFS_REDIS_EXPIRY"),
            }
        }
    }
}
