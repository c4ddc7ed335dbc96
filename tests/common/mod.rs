//! Helpers for integration tests: each test gets its own cache directory
//! (so its own agent) and its own project tree, and stops its agent at the end.
#![allow(dead_code)]

pub mod debian;
pub mod netns;
pub mod object_stores;
pub mod servers;
pub mod users;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Sandbox {
    pub root: tempfile::TempDir,
    pub cache: PathBuf,
    pub project: PathBuf,
}

pub fn cachefs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cachefs"))
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let root = tempfile::Builder::new()
            .prefix("cachefs-test-")
            .tempdir()
            .unwrap();
        let cache = root.path().join("cache");
        let project = root.path().join("project");
        std::fs::create_dir_all(&project).unwrap();
        Sandbox {
            root,
            cache,
            project,
        }
    }

    /// A `cachefs` command bound to this sandbox's cache directory.
    pub fn cachefs(&self) -> Command {
        let mut c = Command::new(cachefs_bin());
        c.env("CACHEFS_DIR", &self.cache)
            .env_remove("LD_PRELOAD")
            .env_remove("CACHEFS_RUN_ID")
            .env_remove("RUST_LOG")
            .current_dir(&self.project);
        c
    }

    /// `cachefs run sh -c SCRIPT` in the project directory; panics on failure.
    pub fn run_ok(&self, script: &str) -> Output {
        let out = self.run(script);
        assert!(
            out.status.success(),
            "`cachefs run sh -c {script:?}` failed: {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn run(&self, script: &str) -> Output {
        self.cachefs()
            .args(["run", "sh", "-c", script])
            .output()
            .unwrap()
    }

    /// `sh -c SCRIPT` in the project directory with this sandbox's cache,
    /// `CACHEFS` in the script standing for the cachefs binary (wrapper
    /// mode: `CACHEFS gcc -c x.c`). Not checked: the caller looks.
    pub fn sh_wrapped(&self, script: &str) -> Output {
        Command::new("sh")
            .arg("-c")
            .arg(script.replace("CACHEFS", &cachefs_bin().to_string_lossy()))
            .env("CACHEFS_DIR", &self.cache)
            .current_dir(&self.project)
            .output()
            .unwrap()
    }

    /// A plain shell command in the project directory, without cachefs.
    pub fn sh(&self, script: &str) -> Output {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&self.project)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`sh -c {script:?}` failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn stats(&self) -> serde_json::Value {
        let out = self.cachefs().args(["stats", "--json"]).output().unwrap();
        assert!(
            out.status.success(),
            "stats failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn zero_stats(&self) {
        assert!(self
            .cachefs()
            .args(["stats", "--zero"])
            .output()
            .unwrap()
            .status
            .success());
    }

    pub fn counts(&self) -> (u64, u64, u64, u64) {
        let s = self.stats();
        let n = |k: &str| s[k].as_u64().unwrap();
        (n("hits"), n("misses"), n("uncacheable"), n("errors"))
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.project.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.project.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.project.join(rel)
    }
}

impl Drop for Sandbox {
    /// Stops the agent, kills whatever cachefs process still works for a
    /// cache directory in the sandbox (an agent a test killed and a client
    /// restarted, one with a cache directory of its own, a foreground
    /// `cachefs mount`), and lazily unmounts every mount left under the
    /// sandbox (a SIGKILLed agent's mirror lanes, a test's tmpfs). Then no
    /// mount may remain there: checked unless the test is already failing.
    fn drop(&mut self) {
        let _ = self.cachefs().arg("stop").output();
        let root = self.root.path().to_path_buf();
        let alive = kill_cachefs_processes_under(&root);
        // A killed agent's mounts are outside the sandbox (DESIGN.md, "The
        // mounts live outside the cache directory"): `stop` detaches those of
        // dead agents of this cache directory.
        let _ = self.cachefs().arg("stop").output();
        unmount_all_under(&root);
        let mut left = mounts_under(&root);
        if let Ok(base) = cachefs::fuse_mounts::place::base_dir() {
            let agents = cachefs::fuse_mounts::place::cache_dir_mounts(&base, &self.cache);
            unmount_all_under(&agents);
            left.extend(mounts_under(&agents));
        }
        if !std::thread::panicking() {
            assert!(
                alive.is_empty(),
                "cachefs processes of the dropped sandbox {} survived SIGKILL: {alive:?}",
                root.display()
            );
            assert!(
                left.is_empty(),
                "mounts left under the dropped sandbox {}: {left:?}",
                root.display()
            );
        }
    }
}

/// A mount from /proc/self/mountinfo: where, its filesystem type and its
/// device number (a FUSE mount's fusectl connection number).
#[derive(Debug)]
pub struct MountEntry {
    pub at: PathBuf,
    pub fstype: String,
    pub dev: u64,
}

/// Mounts at or under `dir`, deepest first. Reads /proc/self/mountinfo: a
/// stat of a stuck FUSE mount would hang.
pub fn mounts_under(dir: &Path) -> Vec<MountEntry> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut found: Vec<MountEntry> = info
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let at = PathBuf::from(unescape_mountinfo(fields.get(4)?));
            if !at.starts_with(dir) {
                return None;
            }
            let (major, minor) = fields.get(2)?.split_once(':')?;
            let dev = (major.parse::<u64>().ok()? << 20) | minor.parse::<u64>().ok()?;
            let dash = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry {
                at,
                fstype: fields.get(dash + 1)?.to_string(),
                dev,
            })
        })
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.at.as_os_str().len()));
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Aborts the FUSE connections of the mounts under `dir` (so that nothing
/// waits on a daemon that is gone or stuck) and lazily unmounts them all,
/// `umount -l`, else `fusermount3 -uz` for FUSE, until none is left (a few
/// rounds: mounts may be stacked).
pub fn unmount_all_under(dir: &Path) {
    for _ in 0..5 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        for m in &mounts {
            let fuse = m.fstype.starts_with("fuse");
            if fuse {
                let _ = std::fs::write(format!("/sys/fs/fuse/connections/{}/abort", m.dev), "1");
            }
            let umounted = Command::new("umount")
                .arg("-l")
                .arg(&m.at)
                .output()
                .is_ok_and(|o| o.status.success());
            if !umounted && fuse {
                let _ = Command::new("fusermount3").arg("-uz").arg(&m.at).output();
            }
        }
    }
}

/// SIGKILLs every `cachefs` process whose `CACHEFS_DIR` lies under `dir`
/// and waits (a few seconds at most) until each is gone; returns those
/// still running then.
pub fn kill_cachefs_processes_under(dir: &Path) -> Vec<i32> {
    let me = std::process::id();
    let mut killed = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for e in procs.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid as u32 == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        // The agent runs the cachefs-cli executable as `…/cachefs agent`.
        let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
        let exe = std::fs::read_link(e.path().join("exe")).unwrap_or_default();
        let is_cachefs = |p: &Path| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("cachefs"))
        };
        if !is_cachefs(Path::new(&*String::from_utf8_lossy(argv0))) && !is_cachefs(&exe) {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let ours = env.split(|&b| b == 0).any(|v| {
            v.strip_prefix(b"CACHEFS_DIR=")
                .is_some_and(|d| Path::new(&*String::from_utf8_lossy(d)).starts_with(dir))
        });
        if ours {
            let pid = nix::unistd::Pid::from_raw(pid);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                killed.push(pid);
            }
        }
    }
    if killed.is_empty() {
        return Vec::new();
    }
    // A killed agent stuck on its own mirror exits once the connection is aborted.
    for m in mounts_under(dir)
        .iter()
        .filter(|m| m.fstype.starts_with("fuse"))
    {
        let _ = std::fs::write(format!("/sys/fs/fuse/connections/{}/abort", m.dev), "1");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for &pid in &killed {
        while process_alive(pid.as_raw()) && std::time::Instant::now() < deadline {
            let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    killed
        .into_iter()
        .map(|p| p.as_raw())
        .filter(|&p| process_alive(p))
        .collect()
}

/// Whether `pid` runs (a zombie does not).
fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Copies a directory tree (regular files and dirs).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Panics unless `tool` is on PATH: scripts/setup.sh installs every tool
/// the tests use, so a missing one is a setup failure, not a reason to skip.
pub fn require(tool: &str) {
    assert!(
        have(tool),
        "`{tool}` is not installed: run scripts/setup.sh (the tests need it)"
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes `t0.c … t{n-1}.c`, each a table of pseudo-random numbers whose
/// object (~160 KiB) zstd cannot shrink much, and returns the shell command
/// that compiles them all.
pub fn incompressible_objects(sb: &Sandbox, n: u64) -> String {
    let mut build = String::new();
    for i in 0..n {
        let mut x = i + 1;
        let table: Vec<String> = (0..40000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33).to_string()
            })
            .collect();
        sb.write(
            &format!("t{i}.c"),
            &format!("const int t{i}[] = {{{}}};\n", table.join(",")),
        );
        build.push_str(&format!("gcc -c t{i}.c && "));
    }
    build.push_str("true");
    build
}

/// The bundled example project (examples/c-project) copied into the sandbox.
pub fn example_project(sb: &Sandbox) {
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/c-project"),
        &sb.project,
    );
}

/// The example project's objects (by name) and its linked `calc`.
pub fn example_outputs(sb: &Sandbox) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(sb.path("obj"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v.push(("calc".into(), sb.read("calc")));
    v
}

/// Every mountpoint in this mount namespace (/proc/self/mountinfo's fifth
/// field; cachefs's own have no characters it escapes).
pub fn mountpoints() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

/// Where the sandbox's agent mounted mirror lane `lane` (`mnt`, `mnt-1`, …):
/// a directory named by its pid, outside the cache directory (DESIGN.md,
/// "The mounts live outside the cache directory").
pub fn agent_lane(sb: &Sandbox, lane: usize) -> PathBuf {
    let pid = std::fs::read_to_string(sb.cache.join("agent.pid")).unwrap();
    let name = match lane {
        0 => "mnt".to_string(),
        n => format!("mnt-{n}"),
    };
    let suffix = format!("/{}/{name}", pid.trim());
    mountpoints()
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(&suffix))
        .unwrap_or_else(|| panic!("agent {} has no lane {lane} mounted", pid.trim()))
}

/// Starts the sandbox's agent with these settings (settings are read when it starts).
pub fn start_agent(sb: &Sandbox, env: &[(&str, &str)]) {
    let out = sb
        .cachefs()
        .envs(env.iter().copied())
        .arg("start")
        .output()
        .unwrap();
    assert!(out.status.success(), "start: {}", stderr(&out));
}

/// Waits until the agent's background writes to the remote have all been sent.
pub fn wait_for_remote_writes(sb: &Sandbox) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let s = sb.stats();
        let remote = &s["remote"];
        if remote["writes_pending"].as_u64() == Some(0) && remote["writes"].as_u64() > Some(0) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "remote writes never drained: {s}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with openssl: (ca, cert, key).
pub fn test_certificate(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let script = "set -e
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=cachefs-test-ca 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout key.pem -out req.csr -subj /CN=127.0.0.1 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext
        openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile ext 2>/dev/null";
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", stderr(&out));
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}
