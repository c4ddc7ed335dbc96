//! Rust builds through cachefs with real cargo and rustc: a generated
//! workspace (library with a build script compiling C through the `cc`
//! crate, a proc-macro crate, a binary), a real crate graph from crates.io
//! (vendored, so the builds are offline), the crate-candidate rule of library
//! search directories, and rustc's own failure path.

mod common;

use common::{cachefs_bin, stderr, Sandbox};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

/// Copies `tests/data/NAME` into the sandbox's project and points cargo at a
/// vendored copy of its crates.io dependencies (vendored once per target
/// dir; needs crates.io only the first time).
fn cargo_project(sb: &Sandbox, name: &str) {
    common::copy_tree(&Path::new(DATA).join(name), &sb.project);
    let vendor = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("vendor-{name}"));
    if !vendor.join(".complete").exists() {
        let out = plain_cargo(&sb.project)
            .args(["vendor", "--locked", "--quiet"])
            .arg(&vendor)
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo vendor: {}", stderr(&out));
        std::fs::write(vendor.join(".complete"), "").unwrap();
    }
    sb.write(
        ".cargo/config.toml",
        &format!(
            "[source.crates-io]\nreplace-with = \"vendored\"\n\n\
             [source.vendored]\ndirectory = \"{}\"\n\n[net]\noffline = true\n",
            vendor.display()
        ),
    );
}

/// Environment for every cargo run here: no incremental state (it is
/// uncacheable), and nothing inherited from the `cargo test` running us.
fn cargo_env(cmd: &mut Command, project: &Path) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CARGO") || k == "RUSTC_WRAPPER" || k == "RUSTFLAGS" || k == "OUT_DIR" {
            cmd.env_remove(k);
        }
    }
    cmd.env("CARGO_INCREMENTAL", "0")
        .env("CARGO_TERM_COLOR", "never")
        .env("CARGO_TARGET_DIR", project.join("target"))
        .current_dir(project);
}

fn plain_cargo(project: &Path) -> Command {
    let mut c = Command::new("cargo");
    cargo_env(&mut c, project);
    c
}

/// `cachefs run cargo build`, with the build's output.
fn cachefs_cargo_build(sb: &Sandbox) -> Output {
    let mut c = sb.cachefs();
    cargo_env(&mut c, &sb.project);
    c.args(["run", "cargo", "build"]).output().unwrap()
}

/// Starts the sandbox's agent with debug logging, so that a failing
/// assertion can show why calls missed (see `misses_explained`).
fn start_logging_agent(sb: &Sandbox) {
    let out = sb
        .cachefs()
        .env("RUST_LOG", "cachefs=debug")
        .arg("start")
        .output()
        .unwrap();
    assert!(out.status.success(), "cachefs start: {}", stderr(&out));
}

/// The agent's lines about misses and rejected dep sets.
fn misses_explained(sb: &Sandbox) -> String {
    let log = std::fs::read_to_string(sb.cache.join("agent.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("miss: ") || l.contains("rejected"))
        .map(|l| l.chars().take(600).collect::<String>() + "\n")
        .collect()
}

fn build_ok(sb: &Sandbox) -> String {
    let out = cachefs_cargo_build(sb);
    assert!(
        out.status.success(),
        "cachefs run cargo build failed: {}",
        stderr(&out)
    );
    stderr(&out)
}

fn run_bin(sb: &Sandbox, name: &str) -> String {
    let out = Command::new(sb.path(&format!("target/debug/{name}")))
        .output()
        .unwrap();
    assert!(out.status.success(), "{name}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn clean(sb: &Sandbox) {
    std::fs::remove_dir_all(sb.path("target")).unwrap();
}

/// Every reason a call was not cached, which must all be rustc's probes.
fn assert_only_probes_uncacheable(sb: &Sandbox) {
    let stats = sb.stats();
    let reasons = stats["uncacheable_reasons"].as_object().unwrap();
    for why in reasons.keys() {
        assert!(
            why.starts_with("rustc: source read from stdin"),
            "unexpected uncacheable reason {why:?} in {reasons:?}"
        );
    }
}

const WS_OUTPUT: &str =
    "mul=42 answer=42 lib=0.1.0 shape=shape/mod.rs greeting=hello from ws_lib\n";

/// The cc crate compiles a compiler-family probe whose file name is random
/// per build: one miss in every build that runs the build script.
const CC_PROBE_MISSES: u64 = 1;

#[test]
fn workspace_is_rebuilt_from_cache_and_sees_changes() {
    let sb = Sandbox::new();
    cargo_project(&sb, "rust-ws");
    start_logging_agent(&sb);
    let first = build_ok(&sb);
    assert!(first.contains("unused_helper"), "no warning: {first}");
    // rustc reached cargo's jobserver through CARGO_MAKEFLAGS from the view.
    assert!(!first.contains("jobserver"), "{first}");
    assert_eq!(run_bin(&sb, "ws_app"), WS_OUTPUT);
    let binary = sb.read("target/debug/ws_app");
    let (first_hits, misses, _, errors) = sb.counts();
    assert!(misses >= 8, "rustc and cc calls should have run: {misses}");
    assert_eq!(errors, 0);
    let first_cached = first_hits + misses;

    // Everything again from the cache: rustc (lib, proc macro, build script,
    // binary, the cc crate itself) and the C compile the build script runs.
    clean(&sb);
    sb.zero_stats();
    let again = build_ok(&sb);
    assert!(
        again.contains("unused_helper"),
        "warning not replayed: {again}"
    );
    let (hits, misses, _, errors) = sb.counts();
    assert_eq!(
        (misses, errors),
        (CC_PROBE_MISSES, 0),
        "{}",
        misses_explained(&sb)
    );
    // Every call the first build looked up hits again, but the cc probe (a new name).
    assert_eq!(hits, first_cached - CC_PROBE_MISSES);
    assert_only_probes_uncacheable(&sb);
    assert_eq!(sb.read("target/debug/ws_app"), binary);
    assert_eq!(run_bin(&sb, "ws_app"), WS_OUTPUT);

    // One source changed: that crate and its dependent (the binary) compile,
    // nothing else does.
    clean(&sb);
    sb.write(
        "lib/src/shape/mod.rs",
        "pub const NAME: &str = \"shape/mod.rs v2\";\n",
    );
    sb.zero_stats();
    build_ok(&sb);
    let (_, misses, _, errors) = sb.counts();
    assert_eq!((misses, errors), (2 + CC_PROBE_MISSES, 0));
    assert!(run_bin(&sb, "ws_app").contains("shape=shape/mod.rs v2"));

    // A version bump reaches env!("CARGO_PKG_VERSION").
    let toml = String::from_utf8(sb.read("lib/Cargo.toml")).unwrap();
    sb.write("lib/Cargo.toml", &toml.replace("0.1.0", "0.2.0"));
    build_ok(&sb);
    assert!(run_bin(&sb, "ws_app").contains("lib=0.2.0"));

    // A new shape.rs beside shape/mod.rs makes the module ambiguous: rustc
    // must run and fail, not hit on the tree where shape.rs was absent.
    clean(&sb);
    sb.write("lib/src/shape.rs", "pub const NAME: &str = \"shape.rs\";\n");
    let out = cachefs_cargo_build(&sb);
    assert!(!out.status.success(), "stale hit despite shape.rs");
    assert!(stderr(&out).contains("E0761"), "{}", stderr(&out));
    std::fs::remove_file(sb.path("lib/src/shape.rs")).unwrap();
    build_ok(&sb);
    assert!(run_bin(&sb, "ws_app").contains("shape=shape/mod.rs v2"));
}

#[test]
fn rustc_wrapper_mode_caches_the_same_way() {
    let sb = Sandbox::new();
    cargo_project(&sb, "rust-ws");
    let build = || {
        let mut c = plain_cargo(&sb.project);
        let out = c
            .arg("build")
            .env("RUSTC_WRAPPER", cachefs_bin())
            .env("CACHEFS_DIR", &sb.cache)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    build();
    assert_eq!(run_bin(&sb, "ws_app"), WS_OUTPUT);
    let (first_hits, first_misses, _, _) = sb.counts();
    assert!(first_misses >= 7, "misses: {first_misses}");
    clean(&sb);
    sb.zero_stats();
    let again = build();
    assert!(
        again.contains("unused_helper"),
        "warning not replayed: {again}"
    );
    // Only rustc goes through the wrapper: every rustc compile hits.
    let (hits, misses, _, errors) = sb.counts();
    assert_eq!((hits, misses, errors), (first_hits + first_misses, 0, 0));
    assert_eq!(run_bin(&sb, "ws_app"), WS_OUTPUT);

    // The same keys as `cachefs run`: its rustc calls hit what the wrapper
    // stored (its C compiles, not seen through the wrapper, miss).
    clean(&sb);
    sb.zero_stats();
    build_ok(&sb);
    let (run_hits, _, _, errors) = sb.counts();
    assert_eq!((run_hits, errors), (hits, 0));
    assert_eq!(run_bin(&sb, "ws_app"), WS_OUTPUT);
}

/// rustc lists `-L` directories and picks crates in them by name: a second
/// candidate for a crate it loads by name must invalidate, another crate's
/// file must not (cargo writes those in parallel).
#[test]
fn search_directory_candidates_decide_hits() {
    let sb = Sandbox::new();
    sb.write("foo.rs", "pub fn v() -> u32 { 1 }\n");
    sb.write("foo2.rs", "pub fn v() -> u32 { 2 }\n");
    sb.write("bar.rs", "pub fn w() -> u32 { 3 }\n");
    sb.write(
        "main.rs",
        "extern crate foo;\nfn main() { println!(\"{}\", foo::v()); }\n",
    );
    let lib = |src: &str, name: &str, extra: &str| {
        sb.sh(&format!(
            "rustc --crate-type rlib --crate-name {name} -C extra-filename=-{extra} --out-dir deps {src}"
        ));
    };
    lib("foo.rs", "foo", "aaa");
    let app = "rm -f app && rustc -L deps main.rs -o app && ./app";
    sb.zero_stats();
    assert_eq!(sb.run_ok(app).stdout, b"1\n");
    assert_eq!(sb.run_ok(app).stdout, b"1\n");
    assert_eq!(sb.counts(), (1, 1, 0, 0));

    lib("bar.rs", "bar", "bbb");
    assert_eq!(sb.run_ok(app).stdout, b"1\n");
    assert_eq!(
        sb.counts(),
        (2, 1, 0, 0),
        "another crate's file must not matter"
    );

    lib("foo2.rs", "foo", "ccc");
    let out = sb.run(app);
    assert!(
        !out.status.success(),
        "stale hit with two candidates for foo"
    );
    assert!(stderr(&out).contains("E0464"), "{}", stderr(&out));
    assert_eq!(sb.counts().0, 2, "a second candidate for foo must not hit");
}

/// rustc exits on a compile error by unwinding: under the preloaded shim it
/// must still print the error and exit 1 (not abort), cached or not.
#[test]
fn rustc_errors_exit_cleanly() {
    let sb = Sandbox::new();
    sb.write("bad.rs", "fn main() { let x: u32 = \"a\"; }\n");
    for _ in 0..2 {
        let out = sb.run("rustc --edition 2021 bad.rs -o bad");
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("E0308"), "{}", stderr(&out));
        assert!(!stderr(&out).contains("fatal runtime error"));
    }
}

#[test]
fn incremental_compiles_are_uncacheable_with_that_reason() {
    let sb = Sandbox::new();
    sb.write(
        "Cargo.toml",
        "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    sb.write("src/main.rs", "fn main() { println!(\"tiny\"); }\n");
    let mut c = sb.cachefs();
    cargo_env(&mut c, &sb.project);
    let out = c
        .env("CARGO_INCREMENTAL", "1")
        .args(["run", "cargo", "build"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(run_bin(&sb, "tiny"), "tiny\n");
    let stats = sb.stats();
    assert_eq!(stats["uncacheable_reasons"]["rustc: -C incremental"], 1);
}

/// A real crate graph from crates.io (clap and serde derive, regex,
/// serde_json, rand, …: ~44 crates, proc macros, build scripts and their
/// probes), built three times.
#[test]
fn real_crate_graph_is_rebuilt_from_cache() {
    let sb = Sandbox::new();
    cargo_project(&sb, "rust-graph");
    start_logging_agent(&sb);
    build_ok(&sb);
    // The program prints a random number: check that it runs, and compare
    // the binaries byte for byte.
    assert!(run_bin(&sb, "bench-rust-graph").trim_end().ends_with('{'));
    let binary = sb.read("target/debug/bench-rust-graph");
    let (first_hits, first_misses, _, errors) = sb.counts();
    assert_eq!(errors, 0);
    assert!(first_misses >= 44, "misses: {first_misses}");

    clean(&sb);
    sb.zero_stats();
    build_ok(&sb);
    let (hits, misses, _, errors) = sb.counts();
    assert_eq!((misses, errors), (0, 0), "{}", misses_explained(&sb));
    // Every call the first build looked up (a repeated probe hit already then) hits.
    assert_eq!(hits, first_hits + first_misses);
    assert_only_probes_uncacheable(&sb);
    assert_eq!(sb.read("target/debug/bench-rust-graph"), binary);

    // The binary crate changes: only it compiles again.
    clean(&sb);
    let main = String::from_utf8(sb.read("src/main.rs")).unwrap();
    sb.write("src/main.rs", &main.replace("\"x\"", "\"y\""));
    sb.zero_stats();
    build_ok(&sb);
    let (hits2, misses, _, errors) = sb.counts();
    assert_eq!((hits2, misses, errors), (hits - 1, 1, 0));
    assert!(run_bin(&sb, "bench-rust-graph").contains("\"y\""));
}

/// A `-L dependency=` directory serves only the dependencies of crates
/// rustc loaded, each looked up by crate hash: a new build of such a crate
/// (another `libfoo`) is rejected by rustc, so the result still holds.
#[test]
fn dependency_directories_are_searched_by_hash() {
    let sb = Sandbox::new();
    sb.write("foo.rs", "pub fn v() -> u32 { 1 }\n");
    sb.write("foo2.rs", "pub fn v() -> u32 { 2 }\n");
    sb.write(
        "bar.rs",
        "extern crate foo;\npub fn w() -> u32 { foo::v() + 10 }\n",
    );
    sb.write(
        "main.rs",
        "extern crate bar;\nfn main() { println!(\"{}\", bar::w()); }\n",
    );
    let lib = |src: &str, name: &str, extra: &str| {
        sb.sh(&format!(
            "rustc --crate-type rlib --crate-name {name} -C extra-filename=-{extra} -L deps --out-dir deps {src}"
        ));
    };
    lib("foo.rs", "foo", "aaa");
    lib("bar.rs", "bar", "bbb");
    let app = "rm -f app && rustc --extern bar=deps/libbar-bbb.rlib -L dependency=deps main.rs -o app && ./app";
    sb.zero_stats();
    assert_eq!(sb.run_ok(app).stdout, b"11\n");
    // Another foo, as cargo would build for another feature set: rustc
    // itself still picks the foo that bar was built against...
    lib("foo2.rs", "foo", "ccc");
    assert_eq!(sb.sh(app).stdout, b"11\n");
    // ...and the cached result still holds.
    assert_eq!(sb.run_ok(app).stdout, b"11\n");
    assert_eq!(sb.counts(), (1, 1, 0, 0));
    // The crate it did read changing is a miss, as for any input.
    std::fs::remove_file(sb.path("deps/libfoo-aaa.rlib")).unwrap();
    lib("foo2.rs", "foo", "aaa");
    let out = sb.run(app);
    assert!(!out.status.success(), "bar's foo is gone: rustc must fail");
    assert_eq!(sb.counts().0, 1);
}

/// Everything rustc writes is restored on a hit, including what `--emit`
/// and `-C save-temps` ask for (object files, codegen-unit objects).
#[test]
fn emitted_files_are_restored() {
    let sb = Sandbox::new();
    sb.write(
        "x.rs",
        "pub fn f(a: u32) -> u32 { a * 3 }\npub fn g() -> u32 { f(2) }\n",
    );
    let cmd = "rm -rf out && mkdir out && rustc --crate-type lib --emit=obj,metadata,dep-info,asm \
               -C codegen-units=2 -C save-temps --out-dir out x.rs && ls out | sort";
    sb.zero_stats();
    let first = sb.run_ok(cmd).stdout;
    let listing = String::from_utf8_lossy(&first).into_owned();
    assert!(
        listing.contains("x.o") && listing.contains("x.d") && listing.contains(".rcgu.o"),
        "{listing}"
    );
    let obj = sb.read("out/x.o");
    assert_eq!(sb.run_ok(cmd).stdout, first);
    assert_eq!(sb.counts(), (1, 1, 0, 0));
    assert_eq!(sb.read("out/x.o"), obj);
}

/// The workspace and its crates.io dependencies vendored inside it, at
/// `dir`: the same tree anywhere (cargo names vendored sources by absolute
/// path, and `-C metadata` does not depend on where the workspace lies).
fn vendored_workspace_at(sb: &Sandbox, dir: &Path) {
    cargo_project(sb, "rust-ws");
    common::copy_tree(&sb.project, dir);
    let vendor = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vendor-rust-ws");
    common::copy_tree(&vendor, &dir.join("vendor"));
    std::fs::write(
        dir.join(".cargo/config.toml"),
        "[source.crates-io]\nreplace-with = \"vendored\"\n\n\
         [source.vendored]\ndirectory = \"vendor\"\n\n[net]\noffline = true\n",
    )
    .unwrap();
}

/// Everything cargo left in `target/debug` that a build produces: the
/// binary, rlibs, rmeta and depfiles (by name), for comparing two builds.
fn target_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["target/debug", "target/debug/deps"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                let name = format!("{sub}/{}", p.file_name().unwrap().to_string_lossy());
                out.push((name, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A cargo workspace with vendored registry dependencies at two paths,
/// built with `--remap-path-prefix` and, for the build script's C, a
/// `-ffile-prefix-map` (a debug build's rlibs otherwise carry the path:
/// they miss, with outputs correct). Every compile hits at the
/// second path but the proc-macro's (a dylib whose metadata rustc
/// compresses, which cachefs does not read into: it stays at its path) and
/// the cc crate's random-named probe; every file cargo writes is the one a
/// plain build at the second path writes, depfiles and JSON messages
/// included (cargo reads the artifact paths from them).
#[test]
fn a_vendored_workspace_at_another_path_hits_with_a_remapped_prefix() {
    let sb = Sandbox::new();
    let (one, two) = (
        sb.root.path().join("w/one"),
        sb.root.path().join("ci/7/two"),
    );
    vendored_workspace_at(&sb, &one);
    vendored_workspace_at(&sb, &two);
    let build = |dir: &Path, cachefs: bool| {
        let mut c = if cachefs {
            let mut c = sb.cachefs();
            c.args(["run", "cargo", "build"]);
            c
        } else {
            let mut c = Command::new("cargo");
            c.arg("build");
            c
        };
        cargo_env(&mut c, dir);
        // The build script's C object (the cc crate builds with -g) too.
        let remap = format!("--remap-path-prefix={}=/ws", dir.display());
        let prefix_map = format!("-ffile-prefix-map={}=/ws", dir.display());
        let out = c
            .env("RUSTFLAGS", remap)
            .env("CFLAGS", prefix_map)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    build(&two, false);
    let plain = target_files(&two);
    std::fs::remove_dir_all(two.join("target")).unwrap();
    build(&one, true);
    sb.zero_stats();
    build(&two, true);
    let (hits, misses, _, _) = sb.counts();
    assert_eq!(
        misses,
        1 + CC_PROBE_MISSES,
        "{hits} hits; the proc-macro dylib and the probe miss"
    );
    let built = target_files(&two);
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&built), names(&plain));
    for ((name, a), (_, b)) in built.iter().zip(&plain) {
        assert!(a == b, "{name} differs from a plain build's");
    }
    let out = Command::new(two.join("target/debug/ws_app"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), WS_OUTPUT);
}
