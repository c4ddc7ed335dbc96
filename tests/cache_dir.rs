//! The cache directory is the user's to delete, as ccache's and sccache's
//! are: `rm -rf` of it under a running agent works (the agent's FUSE mounts
//! live outside it), the agent notices and exits, and the next build is
//! correct and fills the cache again.

mod common;
use common::users::{as_user, ensure_user, give_to, FuseOpenToAll};
use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn project(sb: &Sandbox, n: usize) {
    for i in 0..n {
        sb.write(
            &format!("u{i}.c"),
            &format!("int u{i}(int x) {{ return x * {i} + 1; }}\n"),
        );
    }
    sb.write(
        "Makefile",
        "OBJS := $(patsubst %.c,%.o,$(wildcard u*.c))\nall: $(OBJS)\n%.o: %.c\n\tgcc -O2 -c $< -o $@\n",
    );
}

/// The objects of a build under `cachefs run` from clean.
fn build(sb: &Sandbox, n: usize) -> Vec<Vec<u8>> {
    sb.sh("rm -f *.o");
    sb.run_ok("make -s -j2");
    objects(sb, n)
}

fn objects(sb: &Sandbox, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| sb.read(&format!("u{i}.o"))).collect()
}

/// The same objects from plain gcc, cachefs nowhere.
fn plain(sb: &Sandbox, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            sb.sh(&format!("gcc -O2 -c u{i}.c -o plain.o"));
            sb.read("plain.o")
        })
        .collect()
}

fn agent_pid(sb: &Sandbox) -> String {
    let pid = std::fs::read_to_string(sb.cache.join("agent.pid")).unwrap();
    pid.trim().to_string()
}

/// Running, not a zombie waiting for its reaper.
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            != Some("Z")
    })
}

/// The agent's mirror lanes: mountpoints named by its pid, or (as they were)
/// inside the cache directory.
fn lanes_of(sb: &Sandbox, pid: &str) -> Vec<PathBuf> {
    let cache = sb.cache.canonicalize().unwrap_or_else(|_| sb.cache.clone());
    let named = format!("/{pid}/mnt");
    mountpoints()
        .into_iter()
        .filter(|m| m.starts_with(&cache) || m.to_string_lossy().contains(&named))
        .collect()
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rm_rf(path: &Path) -> std::process::Output {
    Command::new("rm").arg("-rf").arg(path).output().unwrap()
}

/// The case from the hardening issue: build, `rm -rf` the cache directory
/// while its agent runs, build again.
#[test]
fn removing_the_cache_directory_under_a_running_agent_works() {
    let n = 6;
    let sb = Sandbox::new();
    project(&sb, n);
    let expected = plain(&sb, n);
    assert_eq!(build(&sb, n), expected);
    let pid = agent_pid(&sb);
    let lanes = lanes_of(&sb, &pid);
    assert!(!lanes.is_empty(), "agent {pid} mounted no lane");

    let rm = rm_rf(&sb.cache);
    assert!(rm.status.success(), "rm -rf failed: {}", stderr(&rm));
    assert!(!sb.cache.exists());
    // The agent notices within its housekeeping second and exits.
    wait_until("the agent exits", || !alive(&pid));
    let left: Vec<PathBuf> = mountpoints()
        .into_iter()
        .filter(|m| lanes.contains(m))
        .collect();
    assert!(left.is_empty(), "mounts left behind: {left:?}");
    assert!(
        !lanes[0].parent().unwrap().exists(),
        "the agent removes its mount directory"
    );

    // A fresh agent: correct objects, the cache filled again, then hits.
    assert_eq!(build(&sb, n), expected);
    assert_ne!(agent_pid(&sb), pid);
    assert_eq!(sb.counts(), (0, n as u64, 0, 0));
    assert_eq!(build(&sb, n), expected);
    assert_eq!(sb.counts(), (n as u64, n as u64, 0, 0));
}

/// `rm -rf` in the middle of a build: the build still succeeds with the
/// right objects (a compile whose agent went away runs uncached), and the
/// directory goes (a retry covers a file the agent was writing as rm
/// emptied the directory, which fails rm with ENOTEMPTY, never EBUSY).
#[test]
fn removing_the_cache_directory_during_a_build_keeps_the_build_correct() {
    let n = 40;
    let sb = Sandbox::new();
    project(&sb, n);
    let expected = plain(&sb, n);
    sb.sh("rm -f *.o");
    assert!(sb.cachefs().arg("start").status().unwrap().success());
    let pid = agent_pid(&sb);
    let make = sb
        .cachefs()
        .args(["run", "make", "-s", "-j2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let mut errors = Vec::new();
    for _ in 0..10 {
        let rm = rm_rf(&sb.cache);
        if rm.status.success() {
            break;
        }
        // The first lines say enough (rm walking into a mirror says a lot).
        let said = stderr(&rm);
        errors.push(said.lines().take(3).collect::<Vec<_>>().join("\n"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = make.wait_with_output().unwrap();
    assert!(out.status.success(), "the build failed: {}", stderr(&out));
    assert_eq!(objects(&sb, n), expected);
    assert!(
        !errors.iter().any(|e| e.contains("busy")),
        "rm -rf met a mount: {errors:?}"
    );
    wait_until("the first agent exits", || !alive(&pid));
    // Whatever the build's later compiles started is a working agent.
    let _ = rm_rf(&sb.cache);
    assert_eq!(build(&sb, n), expected);
    assert_eq!(build(&sb, n), expected);
    let (hits, misses, _, errors) = sb.counts();
    assert_eq!((hits, errors), (n as u64, 0), "misses {misses}");
}

/// The mounts are in a private directory of this user's, outside the cache
/// directory, and hidden from views like the cache directory.
#[test]
fn the_mounts_are_not_inside_the_cache_directory() {
    let sb = Sandbox::new();
    assert!(sb.cachefs().arg("start").status().unwrap().success());
    let pid = agent_pid(&sb);
    let lanes = lanes_of(&sb, &pid);
    assert!(!lanes.is_empty(), "agent {pid} mounted no lane");
    let cache = sb.cache.canonicalize().unwrap();
    for lane in &lanes {
        assert!(
            !lane.starts_with(&cache),
            "{} is inside the cache",
            lane.display()
        );
        let dir = std::fs::symlink_metadata(lane.parent().unwrap()).unwrap();
        assert_eq!(dir.mode() & 0o777, 0o700, "{}", lane.display());
        assert_eq!(dir.uid(), nix::unistd::geteuid().as_raw());
    }
    // A compile in a view does not see them: walking into a lane from its
    // own view would ask the lane's daemon while it serves that lookup.
    let through = lanes[0].join("etc/passwd");
    sb.write(
        "probe.c",
        &format!(
            "#if __has_include(\"{}\")\n#error seen\n#endif\nint p;\n",
            through.display()
        ),
    );
    sb.run_ok("timeout 60 gcc -c probe.c -o probe.o");
    let (_, misses, _, errors) = sb.counts();
    assert_eq!((misses, errors), (1, 0), "the probe compile is observed");
}

/// `cachefs doctor` names where the mounts are.
#[test]
fn doctor_reports_where_the_mounts_are() {
    let sb = Sandbox::new();
    let out = sb.cachefs().arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid = agent_pid(&sb);
    let lanes = lanes_of(&sb, &pid);
    assert!(!lanes.is_empty(), "agent {pid} mounted no lane");
    let dir = lanes[0].parent().unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("FUSE mount"))
        .unwrap_or_else(|| panic!("no FUSE mount line:\n{text}"));
    assert!(
        line.starts_with("ok") && line.contains(&format!("at {}", dir.display())),
        "{text}"
    );
    assert!(!line.contains(&sb.cache.display().to_string()), "{text}");
}

/// Starts the sandbox's agent and SIGKILLs it once it has mounted: its pid
/// and its lanes, stale now.
fn kill_an_agent(sb: &Sandbox) -> (String, Vec<PathBuf>) {
    assert!(sb.cachefs().arg("start").status().unwrap().success());
    let pid = agent_pid(sb);
    let lanes = lanes_of(sb, &pid);
    assert!(!lanes.is_empty(), "agent {pid} mounted no lane");
    let raw = nix::unistd::Pid::from_raw(pid.parse().unwrap());
    nix::sys::signal::kill(raw, nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until("the killed agent's mount is stale", || {
        std::fs::read_dir(&lanes[0]).is_err()
    });
    (pid, lanes)
}

/// README, reliability table: the agent also notices its socket, its lock
/// or its index deleted under it, exits and unmounts, and the next build is
/// correct (and, with the index gone, compiled again).
#[test]
fn removing_the_socket_the_lock_or_the_index_stops_the_agent() {
    let n = 2;
    for file in ["agent.sock", "agent.lock", "index.redb"] {
        let sb = Sandbox::new();
        project(&sb, n);
        let expected = plain(&sb, n);
        assert_eq!(build(&sb, n), expected);
        let pid = agent_pid(&sb);
        let lanes = lanes_of(&sb, &pid);
        std::fs::remove_file(sb.cache.join(file)).unwrap();
        wait_until(&format!("the agent exits without its {file}"), || {
            !alive(&pid)
        });
        let left: Vec<PathBuf> = mountpoints()
            .into_iter()
            .filter(|m| lanes.contains(m))
            .collect();
        assert!(left.is_empty(), "{file}: mounts left behind: {left:?}");
        assert_eq!(build(&sb, n), expected, "{file}");
        assert_ne!(agent_pid(&sb), pid, "{file}: a fresh agent");
    }
}

/// A killed agent's mounts are stale; the next agent of the same cache
/// directory detaches them and removes their directory.
#[test]
fn the_next_agent_detaches_a_killed_agents_mounts() {
    let sb = Sandbox::new();
    let (pid, lanes) = kill_an_agent(&sb);
    assert!(sb.cachefs().arg("start").status().unwrap().success());
    assert_ne!(agent_pid(&sb), pid);
    let left: Vec<PathBuf> = mountpoints()
        .into_iter()
        .filter(|m| lanes.contains(m))
        .collect();
    assert!(left.is_empty(), "stale mounts left: {left:?}");
    assert!(!lanes[0].parent().unwrap().exists());
}

/// `cachefs stop` cleans up after a killed agent: its stale mounts are
/// detached and their directory removed, and it says so.
#[test]
fn stop_detaches_a_killed_agents_mounts() {
    let sb = Sandbox::new();
    let (_, lanes) = kill_an_agent(&sb);
    let out = sb.cachefs().arg("stop").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("left by a killed agent"),
        "{}",
        stderr(&out)
    );
    assert!(!mountpoints().iter().any(|m| lanes.contains(m)));
    // Nothing is left of the cache directory's mounts, not even their parent.
    assert!(!lanes[0].parent().unwrap().parent().unwrap().exists());
}

/// The idle timeout's exit also unmounts and removes the mount directory.
#[test]
fn an_idle_agent_leaves_no_mount_behind() {
    let sb = Sandbox::new();
    let start = sb
        .cachefs()
        .env("CACHEFS_IDLE_TIMEOUT", "1")
        .arg("start")
        .status();
    assert!(start.unwrap().success());
    let pid = agent_pid(&sb);
    let lanes = lanes_of(&sb, &pid);
    assert!(!lanes.is_empty(), "agent {pid} mounted no lane");
    wait_until("the idle agent exits", || !alive(&pid));
    assert!(!mountpoints().iter().any(|m| lanes.contains(m)));
    assert!(!lanes[0].parent().unwrap().exists());
}

/// As an ordinary user (mounts through fusermount3, in /tmp/cachefs-<uid>
/// when XDG_RUNTIME_DIR is not the user's): the same `rm -rf`, the agent's
/// exit and a correct rebuild that fills the cache again.
#[test]
fn an_ordinary_user_can_remove_the_cache_directory_too() {
    let uid = ensure_user();
    let _fuse = FuseOpenToAll::new();
    let sb = Sandbox::new();
    sb.write("a.c", "int a(void) { return 4; }\n");
    give_to(&sb, &uid, &[sb.root.path()]);
    let script = format!(
        "set -ex; cd {}; export CACHEFS_DIR={}; C={}; trap '$C stop' EXIT; \
         gcc -c a.c -o first.o; $C run gcc -c a.c -o a.o; cmp a.o first.o; pid=$(cat $CACHEFS_DIR/agent.pid); \
         grep -q \"/$pid/mnt \" /proc/self/mountinfo; rm -rf $CACHEFS_DIR; \
         i=0; while kill -0 $pid 2>/dev/null; do i=$((i+1)); [ $i -lt 100 ]; sleep 0.1; done; \
         ! grep \"/$pid/mnt\" /proc/self/mountinfo; \
         $C run gcc -c a.c -o a.o; cmp a.o first.o; $C run gcc -c a.c -o a.o; cmp a.o first.o; \
         $C stats --json",
        sb.project.display(),
        sb.cache.display(),
        cachefs_bin().display()
    );
    let out = as_user(&script);
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (stats["hits"].as_u64(), stats["misses"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
}

/// `$XDG_RUNTIME_DIR` holds the mounts when it is this user's 0700
/// directory; one that others may enter is passed over for
/// /tmp/cachefs-<uid>.
#[test]
fn a_private_xdg_runtime_dir_holds_the_mounts() {
    use std::os::unix::fs::PermissionsExt;
    for (mode, used) in [(0o700, true), (0o755, false)] {
        let sb = Sandbox::new();
        let runtime = sb.root.path().join(format!("run-{mode:o}"));
        std::fs::create_dir(&runtime).unwrap();
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(mode)).unwrap();
        let start = sb
            .cachefs()
            .env("XDG_RUNTIME_DIR", &runtime)
            .arg("start")
            .status();
        assert!(start.unwrap().success());
        let lanes = lanes_of(&sb, &agent_pid(&sb));
        assert!(!lanes.is_empty());
        let uid = nix::unistd::geteuid().as_raw();
        let expected = match used {
            true => runtime.join("cachefs"),
            false => PathBuf::from(format!("/tmp/cachefs-{uid}")),
        };
        assert!(lanes[0].starts_with(&expected), "{lanes:?}, mode {mode:o}");
    }
}
