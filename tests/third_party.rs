//! A real third-party build nobody here wrote: Lua 5.4 from Debian's source
//! package (`apt-get source lua5.4`, the upstream tarball inside it), built
//! with its own Makefile, cleaned, rebuilt from cache.

mod common;
use common::debian::{debian_tarball, lua_artifacts as artifacts};
use common::*;
use std::collections::BTreeSet;

#[test]
fn lua_from_debian_source_rebuilds_from_cache_identically() {
    let tarball = debian_tarball("lua5.4");
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

/// The command lines and outcomes of the compiles of the sandbox's newest
/// `cachefs run`, from its run log.
fn last_run_compiles(sb: &Sandbox) -> Vec<(String, String)> {
    let runs = sb.cache.join("runs");
    // The log is written right after the run ends; a `.saving` marker says so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let saving = || {
        std::fs::read_dir(&runs).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".saving")
        })
    };
    while saving() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let newest = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .max()
        .expect("a run log");
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(newest).unwrap()).unwrap();
    run["compiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let argv: Vec<&str> = c["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            (argv.join(" "), c["outcome"].as_str().unwrap().to_string())
        })
        .collect()
}

/// configure compiles a few hundred different `conftest.c` under a handful
/// of command lines: a second `./configure` in the same tree hits every
/// compile whose command line the first one ran (with 16 dep sets a key, it
/// hit 31 of 266 on GNU hello). A command line naming a fresh temporary
/// path (`/tmp/cgXXXX/dummy.c`) is a new key, a miss.
#[test]
fn a_second_configure_hits_what_the_first_compiled() {
    let tarball = debian_tarball("hello");
    let sb = Sandbox::new();
    sb.sh(&format!(
        "tar xzf {} --strip-components=1",
        tarball.display()
    ));
    sb.run_ok("./configure -q >/dev/null");
    let first = last_run_compiles(&sb);
    assert!(first.len() > 200, "configure's compiles: {}", first.len());
    let seen: BTreeSet<&String> = first.iter().map(|(argv, _)| argv).collect();
    sb.sh("make -s distclean >/dev/null");
    sb.run_ok("./configure -q >/dev/null");
    let second = last_run_compiles(&sb);
    assert_eq!(second.len(), first.len());
    let missed: Vec<&(String, String)> = second
        .iter()
        .filter(|(argv, outcome)| seen.contains(argv) && outcome != "hit")
        .collect();
    assert!(
        missed.is_empty(),
        "compiles the first run ran too, not hit: {missed:?}"
    );
    let new_lines = second
        .iter()
        .filter(|(argv, _)| !seen.contains(argv))
        .count();
    let hits = second.iter().filter(|(_, o)| o == "hit").count();
    assert_eq!(hits + new_lines, second.len(), "every other compile hit");
}
