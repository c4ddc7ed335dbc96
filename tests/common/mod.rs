//! Helpers for integration tests: each test gets its own cache directory
//! (so its own agent) and its own project tree, and stops its agent at the end.
#![allow(dead_code)]

pub mod servers;

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
    fn drop(&mut self) {
        let _ = self.cachefs().arg("stop").output();
    }
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
