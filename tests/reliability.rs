//! Bad input and damage never break a build or produce a wrong output: a
//! malformed request on the agent socket, damaged cache files, several builds
//! at once on one agent and on two.

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn project(sb: &Sandbox, n: usize) -> String {
    let mut build = String::new();
    for i in 0..n {
        sb.write(
            &format!("u{i}.c"),
            &format!("int u{i}(int x) {{ return x * {i}; }}\n"),
        );
        build.push_str(&format!("gcc -O2 -c u{i}.c && "));
    }
    build.push_str("true");
    build
}

fn objects(sb: &Sandbox, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| sb.read(&format!("u{i}.o"))).collect()
}

#[test]
fn malformed_requests_get_an_error_and_the_agent_keeps_serving() {
    let sb = Sandbox::new();
    let build = project(&sb, 3);
    sb.run_ok(&build);
    let socket = sb.cache.join("agent.sock");
    let garbage: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        // Right magic, another protocol version.
        [b"CFS\x01".as_slice(), &[9, 0], &[0, 0, 0, 0]].concat(),
        // Right magic and version, a length of 4 GiB.
        [b"CFS\x01".as_slice(), &[1, 0], &[255, 255, 255, 255]].concat(),
        // A valid header announcing 100 bytes, then nothing.
        [b"CFS\x01".as_slice(), &[1, 0], &[100, 0, 0, 0]].concat(),
        // A valid header and a body that is not a request.
        [
            b"CFS\x01".as_slice(),
            &[1, 0],
            &[4, 0, 0, 0],
            &[0xff, 0xff, 0xff, 0xff],
        ]
        .concat(),
    ];
    for g in &garbage {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.write_all(g).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
    }
    sb.sh("rm -f *.o");
    sb.zero_stats();
    sb.run_ok(&build);
    assert_eq!(
        sb.counts(),
        (3, 0, 0, 0),
        "the agent survived and still serves hits"
    );
}

#[test]
fn damaged_cache_files_are_detected_and_recompiled() {
    let sb = Sandbox::new();
    let build = project(&sb, 6);
    sb.run_ok(&build);
    let plain = objects(&sb, 6);
    sb.cachefs().arg("stop").output().unwrap();
    // Damage every blob a different way: flip a byte, truncate, empty, delete.
    let mut blobs = Vec::new();
    for dir in std::fs::read_dir(sb.cache.join("blobs")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            blobs.push(f.unwrap().path());
        }
    }
    assert_eq!(blobs.len(), 6, "one blob per object");
    for (i, b) in blobs.iter().enumerate() {
        let mut data = std::fs::read(b).unwrap();
        match i % 4 {
            0 => {
                let last = data.len() - 1;
                data[last] ^= 0x55;
                std::fs::write(b, data).unwrap();
            }
            1 => std::fs::write(b, &data[..data.len() / 2]).unwrap(),
            2 => std::fs::write(b, b"").unwrap(),
            _ => std::fs::remove_file(b).unwrap(),
        }
    }
    sb.sh("rm -f *.o");
    sb.zero_stats();
    let out = sb.run_ok(&build);
    let (hits, misses, _, errors) = sb.counts();
    assert_eq!((hits, errors), (0, 0), "{}", stderr(&out));
    assert_eq!(misses, 6);
    assert_eq!(objects(&sb, 6), plain, "recompiled objects are right");
    // Repaired: the next build hits again.
    sb.sh("rm -f *.o");
    sb.zero_stats();
    sb.run_ok(&build);
    assert_eq!(sb.counts().0, 6);
    assert_eq!(objects(&sb, 6), plain);
}

#[test]
fn garbage_index_is_moved_aside_and_the_build_goes_on() {
    let sb = Sandbox::new();
    let build = project(&sb, 3);
    sb.run_ok(&build);
    let plain = objects(&sb, 3);
    sb.cachefs().arg("stop").output().unwrap();
    std::fs::write(sb.cache.join("index.redb"), vec![0x5a; 70_000]).unwrap();
    sb.sh("rm -f *.o");
    sb.run_ok(&build);
    assert_eq!(objects(&sb, 3), plain);
    let moved = std::fs::read_dir(&sb.cache).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("index.redb.corrupt-")
    });
    assert!(moved, "the damaged index is kept aside for inspection");
}

#[test]
fn four_builds_at_once_on_one_agent_and_two_agents_at_once() {
    let a = Sandbox::new();
    let b = Sandbox::new();
    let mut trees = Vec::new();
    for sb in [&a, &b] {
        for t in 0..2 {
            let dir = format!("tree{t}");
            for i in 0..8 {
                sb.write(
                    &format!("{dir}/u{i}.c"),
                    &format!("int u{i}_{t}(void) {{ return {i} + {t}; }}\n"),
                );
            }
            sb.write(
                &format!("{dir}/Makefile"),
                "OBJS := $(patsubst %.c,%.o,$(wildcard *.c))\nall: $(OBJS)\n%.o: %.c\n\tgcc -O2 -c $< -o $@\n",
            );
            trees.push((sb, dir));
        }
    }
    let run_all = |trees: &Vec<(&Sandbox, String)>| {
        let handles: Vec<_> = trees
            .iter()
            .map(|(sb, dir)| {
                sb.cachefs()
                    .args(["run", "make", "-s", "-j2", "-C", dir])
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut h in handles {
            assert!(h.wait().unwrap().success());
        }
    };
    run_all(&trees);
    for (sb, dir) in &trees {
        sb.sh(&format!("rm -f {dir}/*.o"));
    }
    a.zero_stats();
    b.zero_stats();
    run_all(&trees);
    assert_eq!(a.counts(), (16, 0, 0, 0));
    assert_eq!(b.counts(), (16, 0, 0, 0));
    for (sb, dir) in &trees {
        let o = sb.read(&format!("{dir}/u3.o"));
        sb.sh(&format!("gcc -O2 -c {dir}/u3.c -o plain.o"));
        assert_eq!(o, sb.read("plain.o"));
    }
}

/// The FUSE connection aborted mid-build (as `echo 1 > /sys/fs/fuse/connections/N/abort`
/// does): compiles in flight rerun uncached, the build is right, no dead mount stays.
#[test]
fn fuse_connection_aborted_mid_build() {
    use std::os::unix::fs::MetadataExt;
    let control = std::path::Path::new("/sys/fs/fuse/connections");
    if std::fs::read_dir(control)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
    {
        // fusectl is not mounted on every machine; the test needs it.
        let _ = std::process::Command::new("mount")
            .args(["-t", "fusectl", "fusectl"])
            .arg(control)
            .status();
    }
    let sb = Sandbox::new();
    let n = 40;
    for i in 0..n {
        sb.write(
            &format!("src/u{i}.c"),
            &format!("int u{i}(int x) {{ return x * {i}; }}\n"),
        );
    }
    sb.write(
        "Makefile",
        "OBJS := $(patsubst %.c,%.o,$(wildcard src/*.c))\nall: $(OBJS)\n%.o: %.c\n\tgcc -O2 -c $< -o $@\n",
    );
    sb.cachefs().arg("start").output().unwrap();
    let mnt = agent_lane(&sb, 0);
    let connection = std::fs::metadata(&mnt).unwrap().dev();
    let abort = control.join(format!(
        "{}/abort",
        (libc_major(connection) << 20) | libc_minor(connection)
    ));
    assert!(abort.exists(), "no FUSE control file {}", abort.display());
    let build = sb
        .cachefs()
        .args(["run", "make", "-s", "-j2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::fs::write(&abort, "1").unwrap();
    let out = build.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the build failed after the FUSE connection was aborted: {}",
        stderr(&out)
    );
    for i in [0, n / 2, n - 1] {
        let o = sb.read(&format!("src/u{i}.o"));
        sb.sh(&format!("gcc -O2 -c src/u{i}.c -o plain.o"));
        assert_eq!(o, sb.read("plain.o"), "u{i}.o");
    }
    // The agent detaches the dead mount within its housekeeping second.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let listing = std::fs::read_dir(&mnt);
    assert!(
        listing.is_ok(),
        "a dead mount was left at {}: {:?}",
        mnt.display(),
        listing.err()
    );
    // A fresh agent caches again.
    sb.cachefs().arg("stop").output().unwrap();
    sb.sh("rm -f src/*.o");
    sb.run_ok("make -s -j2");
    sb.sh("rm -f src/*.o");
    sb.zero_stats();
    sb.run_ok("make -s -j2");
    assert_eq!(sb.counts(), (n as u64, 0, 0, 0));
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)
}

/// SIGKILL of the agent at ten different moments of a parallel build: every
/// build completes correctly, and afterwards no damaged entry is ever served.
#[test]
fn agent_killed_at_ten_points() {
    let sb = Sandbox::new();
    let n = 16;
    for i in 0..n {
        sb.write(
            &format!("src/u{i}.c"),
            &format!("int u{i}(int x) {{ return x * {i} + {}; }}\n", i * i),
        );
    }
    sb.write(
        "Makefile",
        "OBJS := $(patsubst %.c,%.o,$(wildcard src/*.c))\nprog.a: $(OBJS)\n\tar rcs $@ $^\n%.o: %.c\n\tgcc -O2 -c $< -o $@\n",
    );
    sb.sh("make -s -j2 && mkdir -p plain && cp src/*.o prog.a plain/ && rm -f src/*.o prog.a");
    let same_as_plain = |sb: &Sandbox| {
        assert_eq!(sb.read("prog.a"), sb.read("plain/prog.a"), "prog.a");
        for i in 0..n {
            assert_eq!(
                sb.read(&format!("src/u{i}.o")),
                sb.read(&format!("plain/u{i}.o")),
                "u{i}.o"
            );
        }
    };
    for k in 0..10u64 {
        sb.cachefs().arg("start").output().unwrap();
        let pid = std::fs::read_to_string(sb.cache.join("agent.pid")).unwrap();
        let build = sb
            .cachefs()
            .args(["run", "make", "-s", "-j2"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(40 + 90 * k));
        std::process::Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        let out = build.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "build {k} failed after the agent was killed"
        );
        same_as_plain(&sb);
        sb.sh("rm -f src/*.o prog.a");
    }
    // A fresh agent over whatever the kills left: hits or misses, never wrong.
    sb.run_ok("make -s -j2");
    same_as_plain(&sb);
    sb.sh("rm -f src/*.o prog.a");
    sb.zero_stats();
    sb.run_ok("make -s -j2");
    same_as_plain(&sb);
    assert_eq!(sb.counts(), (n as u64 + 1, 0, 0, 0), "the objects and ar");
}

/// An agent killed while its daemon holds a finished compile's liveness
/// probe exits at once, and the build completes. The probe is looked up by
/// the client: an agent thread waiting on the agent's own mount could never
/// be killed, so the agent stayed a zombie holding `/dev/fuse`, and the
/// build hung (seen once in `agent_killed_at_ten_points`).
#[test]
fn an_agent_killed_while_answering_a_probe_exits_and_the_build_completes() {
    let sb = Sandbox::new();
    sb.write("p.c", "int p(int x) { return x + 7; }\n");
    sb.sh("gcc -O2 -c p.c -o plain.o");
    let started = sb
        .cachefs()
        .arg("start")
        .env("CACHEFS_TEST_PROBE_DELAY_MS", "60000")
        .env("RUST_LOG", "cachefs_mirror=info")
        .output()
        .unwrap();
    assert!(started.status.success(), "{}", stderr(&started));
    let pid = std::fs::read_to_string(sb.cache.join("agent.pid")).unwrap();
    let pid = pid.trim().to_string();
    let mut build = sb
        .cachefs()
        .args(["run", "sh", "-c", "gcc -O2 -c p.c -o p.o"])
        .spawn()
        .unwrap();
    let log = sb.cache.join("agent.log");
    let held = || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("liveness probe"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !held() {
        assert!(
            Instant::now() < deadline,
            "the compile never probed the mirror"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = build.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            abort_mirrors_under(&sb.cache);
            panic!("the build hangs after the agent was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "the build failed after the agent was killed"
    );
    assert_eq!(sb.read("p.o"), sb.read("plain.o"));
    // Gone, or a zombie without threads left (reaping is its parent's).
    let exited = || {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
        state.map_or(true, |s| s.contains(") Z ") && threads <= 1)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !exited() {
        if Instant::now() > deadline {
            abort_mirrors_under(&sb.cache);
            panic!("the killed agent never exited");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Aborts the FUSE connection of every mount under `dir` (a failing test's
/// clean-up: a stuck mount would hang the sandbox's `cachefs stop`). Reads
/// /proc/self/mountinfo, since a stat of a stuck mount would hang too.
fn abort_mirrors_under(dir: &std::path::Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(dev), Some(at)) = (fields.get(2), fields.get(4)) else {
            continue;
        };
        let Some((major, minor)) = dev.split_once(':') else {
            continue;
        };
        if !std::path::Path::new(at).starts_with(dir) {
            continue;
        }
        let (major, minor): (u64, u64) = (major.parse().unwrap_or(0), minor.parse().unwrap_or(0));
        let abort = format!("/sys/fs/fuse/connections/{}/abort", (major << 20) | minor);
        let _ = std::fs::write(abort, "1");
    }
}

/// The cache directory on a tiny filesystem that fills up: builds complete
/// (compiles that cannot be stored still produce their outputs), nothing
/// half-written is ever served, and the cache keeps working once space is back.
#[test]
fn full_disk_never_breaks_the_build() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(&sb.cache).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "cachefs-test"])
        .arg(&sb.cache)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a small tmpfs needs root");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(sb.cache.clone());
    let n = 24u64;
    let build = incompressible_objects(&sb, n);
    sb.sh("mkdir -p plain && for f in t*.c; do gcc -c $f -o plain/${f%.c}.o; done");
    let check = |sb: &Sandbox| {
        for i in 0..n {
            assert_eq!(
                sb.read(&format!("t{i}.o")),
                sb.read(&format!("plain/t{i}.o")),
                "t{i}.o"
            );
        }
    };
    // Another file takes a third of the disk, so the cache's limit (2.5 MiB)
    // is more than the space left: writes fail with ENOSPC along the way.
    std::fs::write(sb.cache.join("filler"), vec![0u8; 1024 * 1024]).unwrap();
    let limit: u64 = 2560 * 1024;
    for _ in 0..3 {
        let out = sb
            .cachefs()
            .env("CACHEFS_CACHE_SIZE", "2560K")
            .args(["run", "sh", "-c", &build])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        check(&sb);
        sb.sh("rm -f t*.o");
    }
    let s = sb.stats();
    assert!(
        s["hits"].as_u64().unwrap() > 0,
        "what fitted is still served: {s}"
    );
    assert!(
        s["bytes"].as_u64().unwrap() <= limit,
        "the cache is back under its limit: {s}"
    );
}

/// Odd but legal command lines and paths are cached and restored exactly.
#[test]
fn weird_paths_and_arguments() {
    use std::os::unix::ffi::OsStrExt;
    let sb = Sandbox::new();
    let dirs = ["with space", "new\nline", "dots"];
    for d in dirs {
        sb.write(
            &format!("{d}/x.c"),
            "#include \"h.h\"\nint x(void) { return H; }\n",
        );
        sb.write(&format!("{d}/h.h"), "#define H 5\n");
    }
    // A non-UTF-8 directory name.
    let raw = sb.project.join(std::ffi::OsStr::from_bytes(b"bad\xff\xfe"));
    std::fs::create_dir_all(&raw).unwrap();
    std::fs::write(raw.join("x.c"), "int x(void) { return 6; }\n").unwrap();
    sb.write("args.rsp", "-O2 -DFROM_RSP=1\n");
    let long_defs: String = (0..2000).map(|i| format!(" -DLONG_{i}={i}")).collect();
    let script = format!(
        "gcc -c 'with space/x.c' -o 'with space/x.o' && \
         gcc -c \"$(printf 'new\\nline')/x.c\" -o \"$(printf 'new\\nline')/x.o\" && \
         gcc -c dots/../dots/./x.c -o dots/../dots/x.o && \
         gcc -c \"$(printf 'bad\\377\\376')/x.c\" -o \"$(printf 'bad\\377\\376')/x.o\" && \
         gcc @args.rsp -c 'with space/x.c' -o rsp.o && \
         gcc {long_defs} -c dots/x.c -o long.o"
    );
    sb.run_ok(&script);
    let outputs = [
        "with space/x.o",
        "new\nline/x.o",
        "dots/x.o",
        "rsp.o",
        "long.o",
    ];
    let mut first: Vec<Vec<u8>> = outputs.iter().map(|o| sb.read(o)).collect();
    first.push(std::fs::read(raw.join("x.o")).unwrap());
    sb.sh("rm -f */x.o rsp.o long.o");
    sb.zero_stats();
    sb.run_ok(&script);
    assert_eq!(sb.counts(), (6, 0, 0, 0));
    let mut again: Vec<Vec<u8>> = outputs.iter().map(|o| sb.read(o)).collect();
    again.push(std::fs::read(raw.join("x.o")).unwrap());
    assert_eq!(first, again);
    // A response file's content is an input: changing it misses.
    sb.write("args.rsp", "-O0 -DFROM_RSP=1\n");
    sb.run_ok("gcc @args.rsp -c 'with space/x.c' -o rsp.o");
    assert_eq!(sb.counts().1, 1);
    // A missing source fails the same way, cached or not.
    let a = sb.run("gcc -c missing.c");
    let b = sb.run("gcc -c missing.c");
    assert_eq!(a.status.code(), b.status.code());
    assert_ne!(a.status.code(), Some(0));
}

/// Eight `cachefs start` at once on a fresh cache directory: one agent wins,
/// every starter waits for it (a loser's agent exits at once while the
/// winner still opens its store) and names the same pid.
#[test]
fn concurrent_starters_all_get_the_one_agent() {
    for _ in 0..3 {
        let sb = Sandbox::new();
        let starters: Vec<_> = (0..8)
            .map(|_| {
                sb.cachefs()
                    .arg("start")
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut pids = std::collections::BTreeSet::new();
        for s in starters {
            let out = s.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            let said = stderr(&out);
            let pid = said
                .split_whitespace()
                .nth(2)
                .unwrap_or_default()
                .to_string();
            pids.insert(pid);
        }
        assert_eq!(pids.len(), 1, "one agent for all: {pids:?}");
        sb.cachefs().arg("stop").output().unwrap();
    }
}

/// An agent started on demand by a build under `taskset` must not keep that
/// restriction (every later build's compiles would be pinned into it): it
/// widens its affinity and mounts one mirror lane per CPU.
#[test]
fn an_agent_started_under_taskset_serves_every_cpu() {
    use std::os::unix::fs::MetadataExt;
    let allowed = |status: &str| {
        status
            .lines()
            .find(|l| l.starts_with("Cpus_allowed_list:"))
            .map(|l| l.split(':').nth(1).unwrap().trim().to_string())
            .unwrap()
    };
    let ours = allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
    let sb = Sandbox::new();
    let out = std::process::Command::new("taskset")
        .args(["-c", "0"])
        .arg(cachefs_bin())
        .arg("start")
        .env("CACHEFS_DIR", &sb.cache)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = std::fs::read_to_string(sb.cache.join("agent.pid")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    assert_eq!(allowed(&status), ours, "the agent's CPUs");
    let cpus = std::thread::available_parallelism().unwrap().get().min(8);
    let cache_dev = std::fs::metadata(&sb.cache).unwrap().dev();
    for lane in 1..cpus {
        let mnt = agent_lane(&sb, lane);
        let dev = std::fs::metadata(&mnt).unwrap().dev();
        assert_ne!(dev, cache_dev, "{} is a mount", mnt.display());
    }
    sb.write("a.c", "int a(void) { return 1; }\n");
    sb.run_ok("gcc -c a.c -o a.o && gcc -c a.c -o b.o");
    sb.run_ok("gcc -c a.c -o a.o && gcc -c a.c -o b.o");
    assert_eq!(sb.counts(), (2, 2, 0, 0));
}

/// The stat cache outlives its agent (`$CACHEFS_DIR/stat-cache`): the next
/// agent loads what the last one hashed; a damaged file is ignored with a
/// warning and costs only rehashing.
#[test]
fn the_stat_cache_outlives_the_agent_and_a_damaged_one_is_ignored() {
    let sb = Sandbox::new();
    example_project(&sb);
    sb.run_ok("make -s -j2");
    let built = example_outputs(&sb);
    let restart = |sb: &Sandbox| {
        assert!(sb.cachefs().arg("stop").status().unwrap().success());
        let start = sb
            .cachefs()
            .env("RUST_LOG", "cachefs=info")
            .arg("start")
            .status();
        assert!(start.unwrap().success());
        std::fs::read_to_string(sb.cache.join("agent.log")).unwrap()
    };
    let log = restart(&sb);
    let loaded = log
        .lines()
        .rev()
        .find_map(|l| {
            l.split("loaded ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no stat cache loaded:\n{log}"));
    assert!(loaded > 20, "the compilers' files at least: {loaded}");
    let rebuild_hits = |sb: &Sandbox| {
        sb.sh("make -s clean");
        sb.zero_stats();
        sb.run_ok("make -s -j2");
        assert_eq!(sb.counts(), (22, 0, 0, 0));
        assert_eq!(example_outputs(sb), built);
    };
    rebuild_hits(&sb);

    let file = sb.cache.join("stat-cache");
    sb.cachefs().arg("stop").status().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let log = restart(&sb);
    assert!(log.contains("ignored the saved stat cache"), "{log}");
    rebuild_hits(&sb);
}
