//! A real third-party build nobody here wrote: Lua 5.4 from Debian's source
//! package (`apt-get source lua5.4`, the upstream tarball inside it), built
//! with its own Makefile, cleaned, rebuilt from cache.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Downloads the source package once into cargo's target tmp dir.
fn lua_tarball() -> PathBuf {
    let dl = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-src-lua5.4");
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
        .args(["showsrc", "lua5.4"])
        .output()
        .unwrap();
    let mut wanted: Vec<String> = String::from_utf8_lossy(&versions.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Version: "))
        .map(|v| format!("lua5.4={v}"))
        .collect();
    wanted.reverse();
    wanted.insert(0, "lua5.4".into());
    let mut errors = String::new();
    for package in &wanted {
        let out = Command::new("apt-get")
            .args(["source", "--download-only", "-qq", package])
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
    panic!("apt-get source lua5.4 failed for {wanted:?} (run scripts/setup.sh, which enables deb-src): {errors}")
}

fn artifacts(dir: &Path) -> Vec<(String, Vec<u8>)> {
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

#[test]
fn lua_from_debian_source_rebuilds_from_cache_identically() {
    let tarball = lua_tarball();
    let sb = Sandbox::new();
    sb.sh(&format!(
        "tar xzf {} --strip-components=1",
        tarball.display()
    ));
    let src = sb.path("src");
    sb.sh("make -s -j2 linux >/dev/null 2>&1");
    let plain = artifacts(&src);
    assert_eq!(plain.iter().filter(|(n, _)| n.ends_with(".o")).count(), 34);
    sb.sh("make -s clean");

    sb.run_ok("make -s -j2 linux >/dev/null");
    assert_eq!(
        artifacts(&src),
        plain,
        "the cold build under cachefs differs from the plain build"
    );
    sb.sh("make -s clean");
    sb.zero_stats();
    let out = sb.run_ok("make -s -j2 linux >/dev/null");
    let (hits, misses, unc, errors) = sb.counts();
    assert_eq!((misses, unc, errors), (0, 0, 0), "{}", stderr(&out));
    assert_eq!(
        hits, 38,
        "34 objects, ar and ranlib of liblua.a, lua and luac links"
    );
    assert_eq!(
        artifacts(&src),
        plain,
        "the cached rebuild differs from the plain build"
    );
    let lua = sb.sh("src/lua -e 'print(6 * 7)'");
    assert_eq!(lua.stdout, b"42\n");
}
