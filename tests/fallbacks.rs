//! cachefs never breaks a build: when observation, the agent or the store is
//! unavailable, compiles run uncached and the build succeeds.

mod common;
use common::*;

fn small_project(sb: &Sandbox) {
    sb.write("a.c", "int a(void) { return 1; }\n");
    sb.write(
        "main.c",
        "int a(void);\nint main(void) { return a() - 1; }\n",
    );
}

const BUILD: &str = "gcc -c a.c && gcc -c main.c && gcc a.o main.o -o prog && ./prog";

#[test]
fn without_fuse_compiles_run_uncached_with_one_warning() {
    require("unshare");
    let sb = Sandbox::new();
    small_project(&sb);
    // A private mount namespace in which /dev/fuse is not a FUSE device: the
    // agent started inside it cannot mount its mirror.
    let cachefs = cachefs_bin();
    let script = format!(
        "mount --bind /dev/null /dev/fuse && {} run sh -c '{BUILD}' && {} stats --json && {} stop",
        cachefs.display(),
        cachefs.display(),
        cachefs.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("CACHEFS_DIR", &sb.cache)
        .current_dir(&sb.project)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(
        err.matches("compiling without the cache").count(),
        1,
        "{err}"
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["errors"], 3, "{stats}");
    assert!(stats["observation"]
        .as_str()
        .unwrap()
        .starts_with("unavailable"));
}

#[test]
fn unusable_cache_directory_still_builds() {
    let sb = Sandbox::new();
    small_project(&sb);
    // A regular file where the cache directory should be.
    std::fs::write(&sb.cache, "not a directory").unwrap();
    let out = sb.run(BUILD);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("building without the cache"),
        "{}",
        stderr(&out)
    );
}

/// Bytes of the files under `dir`.
fn blob_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => blob_bytes(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn eviction_keeps_the_cache_under_its_limit_and_results_correct() {
    let sb = Sandbox::new();
    let build = incompressible_objects(&sb, 20u64);
    let limit = 2560 * 1024;
    let run = |script: &str| {
        let out = sb
            .cachefs()
            .args(["run", "sh", "-c", script])
            .env("CACHEFS_CACHE_SIZE", "2560K")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    sb.cachefs().arg("stop").output().unwrap();
    sb.cachefs()
        .arg("start")
        .env("CACHEFS_CACHE_SIZE", "2560K")
        .output()
        .unwrap();
    run(&build);
    let stats = sb.stats();
    // The blob files are what eviction keeps under the limit: the index file
    // does not shrink when entries go (eviction counts its live pages and
    // compacts it once mostly free), so `bytes`, which counts its length,
    // may stand a little over (seen: 2.76 MB against 2.62).
    assert!(blob_bytes(&sb.cache.join("blobs")) <= limit, "{stats}");
    let entries = stats["entries"].as_u64().unwrap();
    assert!(entries > 0 && entries < 20, "{stats}");
    // Whatever survived still restores byte-identical objects.
    sb.sh("mkdir -p plain && for f in t*.c; do gcc -c $f -o plain/${f%.c}.o; done; rm -f t*.o");
    run(&build);
    for i in 0..20 {
        assert_eq!(
            sb.read(&format!("t{i}.o")),
            sb.read(&format!("plain/t{i}.o"))
        );
    }
}

#[test]
fn output_to_a_device_is_uncacheable() {
    let sb = Sandbox::new();
    sb.write("x.c", "int x;\n");
    sb.zero_stats();
    sb.run_ok("gcc -E x.c -o /dev/stdout >/dev/null");
    assert_eq!(sb.counts().2, 1);
}

#[test]
fn a_malformed_setting_is_named_and_the_build_still_runs() {
    let sb = Sandbox::new();
    small_project(&sb);
    let out = sb
        .cachefs()
        .args(["stats"])
        .env("CACHEFS_CACHE_SIZE", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("CACHEFS_CACHE_SIZE") && err.contains("lots"),
        "{err}"
    );
    let out = sb
        .cachefs()
        .args(["run", "sh", "-c", BUILD])
        .env("CACHEFS_IDLE_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("CACHEFS_IDLE_TIMEOUT"),
        "{}",
        stderr(&out)
    );
    let out = sb
        .cachefs()
        .args(["stats", "--bogus-flag"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap reports a bad flag with exit status 2"
    );
}

/// Builds the small project under `cachefs run` with the agent's idle
/// timeout set to `seconds`; returns a check of whether that agent is alive.
fn build_with_idle_timeout(sb: &Sandbox, seconds: &str) -> impl Fn() -> bool {
    small_project(sb);
    let out = sb
        .cachefs()
        .args(["run", "sh", "-c", BUILD])
        .env("CACHEFS_IDLE_TIMEOUT", seconds)
        .output()
        .unwrap();
    assert!(out.status.success());
    let pid = std::fs::read_to_string(sb.cache.join("agent.pid")).unwrap();
    let proc_dir = format!("/proc/{}", pid.trim());
    move || std::path::Path::new(&proc_dir).exists()
}

/// Waits up to 30 s for `alive` to turn false (an exited agent is gone once
/// its new parent has reaped it).
fn wait_gone(alive: &impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn the_agent_stops_after_its_idle_timeout() {
    let sb = Sandbox::new();
    let alive = build_with_idle_timeout(&sb, "2");
    let pid = std::fs::read_to_string(sb.cache.join("agent.pid")).unwrap();
    assert!(alive());
    wait_gone(&alive);
    assert!(!alive(), "the agent outlived its idle timeout");
    assert!(
        !sb.cache.join("agent.sock").exists(),
        "the socket is removed on exit"
    );
    // Its lanes were mounted in a directory named by its pid.
    let lanes = format!("/{}/mnt", pid.trim());
    let left: Vec<_> = mountpoints()
        .into_iter()
        .filter(|m| m.to_string_lossy().contains(&lanes))
        .collect();
    assert!(left.is_empty(), "mounts left behind: {left:?}");
}

/// As in sccache, an idle timeout of 0 means the agent never exits on its
/// own (it used to exit at its first quiet second).
#[test]
fn an_idle_timeout_of_zero_keeps_the_agent_running() {
    let sb = Sandbox::new();
    let alive = build_with_idle_timeout(&sb, "0");
    // Past the housekeeping's quiet spell (2 s) and a few of its ticks (1 s).
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert!(alive(), "the agent exited although its idle timeout is 0");
    let stop = sb.cachefs().arg("stop").output().unwrap();
    assert!(stop.status.success());
    wait_gone(&alive);
    assert!(!alive(), "cachefs stop still stops it");
}

/// A peer speaking another protocol version (an agent from another cachefs
/// release) gets a clear error and the compile runs uncached.
#[test]
fn an_agent_of_another_version_is_refused_and_the_compile_runs() {
    use std::io::{Read, Write};
    let sb = Sandbox::new();
    small_project(&sb);
    std::fs::create_dir_all(&sb.cache).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(sb.cache.join("agent.sock")).unwrap();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut header = [0u8; 10];
        s.read_exact(&mut header).unwrap();
        // Magic, version 9, an empty body.
        s.write_all(&[b'C', b'F', b'S', 1, 9, 0, 0, 0, 0, 0])
            .unwrap();
    });
    let out = std::process::Command::new(cachefs_bin())
        .args(["gcc", "-c", "a.c", "-o", "a.o"])
        .env("CACHEFS_DIR", &sb.cache)
        .env("CACHEFS_RUN_ID", "other-version")
        .current_dir(&sb.project)
        .output()
        .unwrap();
    peer.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(sb.path("a.o").exists());
    let err = stderr(&out);
    assert!(err.contains("protocol version 9"), "{err}");
}

/// README ("Not cached"): results larger than a quarter of the cache are uncacheable.
/// A 400 KiB cache takes results up to 100 KiB: a ~160 KiB object is compiled
/// uncached (every time, with its reason in the stats), a small one is cached.
#[test]
fn a_result_over_a_quarter_of_the_cache_is_uncacheable() {
    let sb = Sandbox::new();
    let big = incompressible_objects(&sb, 1);
    sb.write("small.c", "int small(void) { return 3; }\n");
    let run = |script: &str| {
        let out = sb
            .cachefs()
            .args(["run", "sh", "-c", script])
            .env("CACHEFS_CACHE_SIZE", "400K")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    sb.cachefs()
        .arg("start")
        .env("CACHEFS_CACHE_SIZE", "400K")
        .output()
        .unwrap();
    run(&big);
    let size = std::fs::metadata(sb.path("t0.o")).unwrap().len();
    assert!(size > 100 * 1024, "the big object is {size} bytes");
    run("gcc -c small.c");
    assert_eq!(sb.counts(), (0, 1, 1, 0), "{:#}", sb.stats());
    let reasons = sb.stats()["uncacheable_reasons"].to_string();
    assert!(reasons.contains("result too large"), "{reasons}");
    sb.sh("rm -f t0.o small.o");
    run(&big);
    run("gcc -c small.c");
    assert_eq!(sb.counts(), (1, 1, 2, 0), "{:#}", sb.stats());
    assert_eq!(std::fs::metadata(sb.path("t0.o")).unwrap().len(), size);
}
