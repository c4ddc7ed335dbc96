//! Builds the shim, `libcachefs_preload.so`, with a direct rustc call.
//!
//! A `#![no_std]` cdylib only builds with `-C panic=abort` (rustc requires the `eh_personality` lang
//! item otherwise, and only std provides it on stable; linking std for it pulls in libgcc_s, which
//! measured ~120 µs more per process start). Cargo cannot give one package its own panic strategy:
//! profile overrides reject `panic`, and `cargo test` forces unwinding. So the shim is compiled here from
//! the same sources as this package's rlib, with `--cfg cachefs_shim` selecting the exported hooks.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const SHIM_FILE: &str = "libcachefs_preload.so";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo::rerun-if-changed=src");
    println!("cargo::rerun-if-changed=csrc");
    println!("cargo::rustc-check-cfg=cfg(cachefs_shim)");

    // Linked only into the shim, not into the rlib, hence no cargo metadata.
    cc::Build::new()
        .file("csrc/execl.c")
        .pic(true)
        .warnings(true)
        .extra_warnings(true)
        .cargo_metadata(false)
        .compile("cachefs_execl");

    let so = out.join(SHIM_FILE);
    compile_shim(&out, &so);
    publish_beside_binaries(&out, &so);
    println!("cargo::rustc-env=CACHEFS_PRELOAD_SO={}", so.display());
}

fn compile_shim(out: &Path, so: &Path) {
    let mut cmd = Command::new(env::var_os("RUSTC").expect("cargo sets RUSTC"));
    // The user's RUSTFLAGS first, so that the flags the shim depends on win.
    if let Ok(flags) = env::var("CARGO_ENCODED_RUSTFLAGS") {
        cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    }
    cmd.args([
        "--edition=2021",
        "--crate-type=cdylib",
        "--crate-name=cachefs_preload",
        "--cfg=cachefs_shim",
        "--error-format=short",
        "-Cpanic=abort",
        "-Ccodegen-units=1",
        // An unresolved symbol must fail here, not in every process of a build.
        "-Clink-arg=-Wl,-z,defs",
        // The cachefs binary may be linked statically (it starts faster); the
        // shim is loaded into dynamic programs and must link libc dynamically.
        "-Ctarget-feature=-crt-static",
    ]);
    cmd.arg(format!("--target={}", env_str("TARGET")));
    cmd.arg(format!("-Copt-level={}", env_str("OPT_LEVEL")));
    if env_str("DEBUG") != "false" {
        cmd.arg("-Cdebuginfo=1");
    }
    // Overflow checks follow debug assertions: a debug shim aborts on arithmetic bugs in tests.
    if env::var_os("CARGO_CFG_DEBUG_ASSERTIONS").is_some() {
        cmd.arg("-Cdebug-assertions=on");
    }
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        let mut arg = std::ffi::OsString::from("-Clinker=");
        arg.push(linker);
        cmd.arg(arg);
    }
    cmd.arg(format!("-Lnative={}", out.display()));
    cmd.args(["-lstatic=cachefs_execl", "-o"])
        .arg(so)
        .arg("src/lib.rs");

    let output = cmd.output().expect("run rustc for the shim");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        eprintln!("building the shim failed:\n{stderr}");
        std::process::exit(1);
    }
    // Warnings of this inner build would otherwise be invisible.
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        println!("cargo::warning=shim: {line}");
    }
}

/// Copies the shim to the profile directory (`target/debug/`), beside the `cachefs` binary, where a
/// development build finds it without knowing Cargo's hashed OUT_DIR.
fn publish_beside_binaries(out: &Path, so: &Path) {
    let Some(build_dir) = out.parent().and_then(Path::parent) else {
        return;
    };
    if build_dir.file_name().is_none_or(|n| n != "build") {
        return;
    }
    let Some(profile_dir) = build_dir.parent() else {
        return;
    };
    // Rename over the old copy: a build may be running under the old one right now.
    let tmp = profile_dir.join(format!(".{SHIM_FILE}.{}", std::process::id()));
    fs::copy(so, &tmp).expect("copy the shim");
    fs::rename(&tmp, profile_dir.join(SHIM_FILE)).expect("publish the shim");
}

fn env_str(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| panic!("cargo sets {name}"))
}
