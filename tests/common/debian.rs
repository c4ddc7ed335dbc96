//! Third-party sources from Debian's source packages (`apt-get source`,
//! which scripts/setup.sh enables), for real builds nobody here wrote.

use super::stderr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Downloads Debian's source package `package` once into cargo's target tmp
/// dir; the upstream tarball inside it.
pub fn debian_tarball(package: &str) -> PathBuf {
    // Tests of one binary run as threads: one downloads, the others wait
    // rather than read a half-written tarball.
    static DOWNLOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = DOWNLOADING.lock().unwrap_or_else(|e| e.into_inner());
    let dl = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("debian-src-{package}"));
    std::fs::create_dir_all(&dl).unwrap();
    let find = || {
        std::fs::read_dir(&dl)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".orig.tar.gz"))
    };
    if let Some(t) = find() {
        return t;
    }
    // The newest version first, then older ones: a mirror may lack a security update's files
    // while it has the release's (seen with libzstd).
    let versions = Command::new("apt-cache")
        .args(["showsrc", package])
        .output()
        .unwrap();
    let mut wanted: Vec<String> = String::from_utf8_lossy(&versions.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Version: "))
        .map(|v| format!("{package}={v}"))
        .collect();
    wanted.reverse();
    wanted.insert(0, package.into());
    let mut errors = String::new();
    for wanted_one in &wanted {
        let out = Command::new("apt-get")
            .args(["source", "--download-only", "-qq", wanted_one])
            .current_dir(&dl)
            .output()
            .unwrap();
        if out.status.success() {
            if let Some(t) = find() {
                return t;
            }
        }
        errors.push_str(&stderr(&out));
    }
    panic!("apt-get source {package} failed for {wanted:?} (run scripts/setup.sh, which enables deb-src): {errors}")
}

/// Lua's objects, library and programs in `dir` (its `src`), by name.
pub fn lua_artifacts(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.ends_with(".o") || n == "lua" || n == "luac" || n == "liblua.a"
        })
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Lua's objects in a build of Debian's lua5.4 (`make linux`).
pub const LUA_OBJECTS: usize = 34;

/// Lua's sources unpacked in `sb`, built plainly once (no cachefs) and
/// cleaned: what every build under test must reproduce byte for byte.
pub fn lua_plain(sb: &super::Sandbox) -> Vec<(String, Vec<u8>)> {
    let tarball = debian_tarball("lua5.4");
    sb.sh(&format!(
        "tar xzf {} --strip-components=1",
        tarball.display()
    ));
    sb.sh("make -s -j2 linux >/dev/null 2>&1");
    let plain = lua_artifacts(&sb.path("src"));
    let objects = plain.iter().filter(|(n, _)| n.ends_with(".o")).count();
    assert_eq!(objects, LUA_OBJECTS);
    sb.sh("make -s clean");
    plain
}
