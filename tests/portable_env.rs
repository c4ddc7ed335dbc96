//! Keys hold the environment a compile was observed to read, not the whole
//! environment of whoever ran it: a variable no compiler reads costs no hit,
//! a variable the compiler reads is an input like a header. Real gcc and
//! rustc under `cachefs run` and in wrapper mode.

mod common;
use common::*;

/// Compiles `x.c` (a clean file) and `w.c` (one that warns) under
/// `cachefs run` with `vars` set, from a clean tree; the summary line.
fn build_with(sb: &Sandbox, vars: &str) -> String {
    sb.sh("rm -f x.o w.o");
    let out = sb.run_ok(&format!("{vars} gcc -O2 -c x.c && {vars} gcc -c w.c"));
    stderr(&out)
}

fn project(sb: &Sandbox) {
    sb.write("x.c", "int f(int a) { return a * 3; }\n");
    sb.write("w.c", "#warning checked\nint w;\n");
    sb.write("d.c", "const char *built = __DATE__ \" \" __TIME__;\n");
    sb.write("y.cc", "int g(int a) { return a + 1; }\n");
}

/// (hits, misses) since the last zero.
fn hits_and_misses(sb: &Sandbox) -> (u64, u64) {
    let (h, m, _, _) = sb.counts();
    (h, m)
}

#[test]
fn variables_no_compiler_reads_do_not_cost_hits() {
    let sb = Sandbox::new();
    project(&sb);
    build_with(&sb, "");
    let plain_x = sb.read("x.o");
    for vars in [
        "HOME=/nonexistent",
        "USER=someone LOGNAME=someone",
        "HOSTNAME=other-host",
        "CI_JOB_ID=8 GITHUB_RUN_ID=2 BUILD_NUMBER=3",
        "FOO=1",
        "OLDPWD=/",
        // Set, then unset: as if never set.
        "FOO=1 && unset FOO &&",
        // Another PATH that finds the same programs.
        "PATH=/nonexistent:/usr/local/bin:/bin:/usr/bin",
    ] {
        sb.zero_stats();
        let summary = build_with(&sb, vars);
        assert_eq!(hits_and_misses(&sb), (2, 0), "{vars}: {summary}");
        assert_eq!(sb.read("x.o"), plain_x, "{vars}");
    }
}

#[test]
fn variables_the_compiler_reads_are_inputs() {
    let sb = Sandbox::new();
    project(&sb);
    std::fs::create_dir_all(sb.path("inc")).unwrap();
    let compile = |cmd: &str, vars: &str| {
        sb.sh("rm -f x.o y.o");
        sb.run_ok(&format!("{vars} {cmd}"));
    };
    let inc = sb.path("inc").display().to_string();
    for (cmd, vars) in [
        ("gcc -O2 -c x.c", format!("CPATH={inc}")),
        ("gcc -O2 -c x.c", format!("C_INCLUDE_PATH={inc}")),
        // cc1plus reads it, cc1 does not.
        ("g++ -c y.cc", format!("CPLUS_INCLUDE_PATH={inc}")),
        ("gcc -O2 -c x.c", format!("LIBRARY_PATH={inc}")),
        ("gcc -O2 -c x.c", format!("COMPILER_PATH={inc}")),
        // The default prefix, spelled out: the same programs, still an input.
        (
            "gcc -O2 -c x.c",
            "GCC_EXEC_PREFIX=/usr/lib/gcc/".to_string(),
        ),
        ("gcc -O2 -c x.c", format!("DEPENDENCIES_OUTPUT={inc}/deps")),
        ("gcc -O2 -c x.c", format!("SUNPRO_DEPENDENCIES={inc}/deps2")),
    ] {
        compile(cmd, "");
        sb.zero_stats();
        compile(cmd, &vars);
        assert_eq!(hits_and_misses(&sb), (0, 1), "{vars}");
        // The same again: now stored under this value too.
        sb.zero_stats();
        compile(cmd, &vars);
        assert_eq!(hits_and_misses(&sb), (1, 0), "{vars} again");
    }
}

/// A translated warning must not be replayed in another language: the
/// locale (read inside glibc, unseen) is an input of a compile that prints,
/// and of no other.
#[test]
fn the_locale_matters_only_to_a_compile_that_prints() {
    let sb = Sandbox::new();
    project(&sb);
    build_with(&sb, "LANG=C.UTF-8");
    sb.zero_stats();
    build_with(&sb, "LANG=de_DE.UTF-8");
    let stats = sb.stats();
    assert_eq!(
        hits_and_misses(&sb),
        (1, 1),
        "x.c hits, w.c misses: {stats}"
    );
}

#[test]
fn source_date_epoch_is_an_input_where_the_clock_is_read() {
    let sb = Sandbox::new();
    project(&sb);
    let epoch = |e: &str| {
        sb.sh("rm -f d.o");
        sb.run_ok(&format!("SOURCE_DATE_EPOCH={e} gcc -c d.c"));
        sb.read("d.o")
    };
    let first = epoch("1");
    sb.zero_stats();
    let second = epoch("100000");
    assert_eq!(hits_and_misses(&sb), (0, 1));
    assert_ne!(first, second, "another date in the object");
    sb.zero_stats();
    assert_eq!(epoch("1"), first);
    assert_eq!(hits_and_misses(&sb), (1, 0));
}

/// `PATH` is keyed by what it finds, not its value: a `PATH` that puts
/// another assembler first is a miss.
#[test]
fn a_path_that_finds_another_assembler_misses() {
    let sb = Sandbox::new();
    project(&sb);
    build_with(&sb, "");
    let bin = sb.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // Another `as`: the real one, then a mark in the object's comment.
    sb.write("bin/as", "#!/bin/sh\nexec /usr/bin/as \"$@\"\n");
    sb.sh("chmod +x bin/as");
    sb.zero_stats();
    build_with(&sb, &format!("PATH={}:$PATH", bin.display()));
    assert_eq!(hits_and_misses(&sb).0, 0, "no hit through another as");
}

/// `cachefs run -- gcc …` is a compile like the ones a build starts, and
/// wrapper mode reaches the same key as `cachefs run`.
#[test]
fn a_compiler_run_directly_and_wrapper_mode_share_keys() {
    let sb = Sandbox::new();
    project(&sb);
    let direct = sb
        .cachefs()
        .args(["run", "--", "gcc", "-O2", "-c", "x.c"])
        .output()
        .unwrap();
    assert!(direct.status.success(), "{}", stderr(&direct));
    assert!(
        stderr(&direct).contains("1 compiles: 0 hits, 1 misses"),
        "{}",
        stderr(&direct)
    );
    sb.sh("rm x.o");
    sb.zero_stats();
    let wrapped = sb.sh_wrapped("FOO=wrapped CACHEFS gcc -O2 -c x.c");
    assert!(wrapped.status.success(), "{}", stderr(&wrapped));
    assert_eq!(hits_and_misses(&sb), (1, 0), "wrapper mode hits");
    sb.sh("rm x.o");
    sb.zero_stats();
    sb.sh_wrapped("CACHEFS gcc -c w.c");
    sb.sh("rm w.o");
    sb.run_ok("FOO=run gcc -c w.c");
    assert_eq!(
        hits_and_misses(&sb),
        (1, 1),
        "cachefs run hits what wrapper mode stored"
    );
}

/// `env!` and `option_env!` are read by rustc itself; a variable the crate
/// does not name is no input.
#[test]
fn rust_env_macros_are_inputs_and_other_variables_are_not() {
    let sb = Sandbox::new();
    sb.write(
        "main.rs",
        "fn main() { println!(\"{} {:?}\", env!(\"CFS_GREETING\"), option_env!(\"CFS_MAYBE\")); }\n",
    );
    let build = |vars: &str| {
        sb.sh("rm -f main");
        sb.run_ok(&format!("{vars} rustc -O --edition 2021 main.rs"));
        String::from_utf8_lossy(&sb.sh("./main").stdout).into_owned()
    };
    assert_eq!(build("CFS_GREETING=hello"), "hello None\n");
    for (vars, hit, printed) in [
        (
            "CFS_GREETING=hello FOO=1 HOME=/nonexistent",
            true,
            "hello None\n",
        ),
        ("CFS_GREETING=bye", false, "bye None\n"),
        ("CFS_GREETING=bye CFS_MAYBE=x", false, "bye Some(\"x\")\n"),
    ] {
        sb.zero_stats();
        assert_eq!(build(vars), printed, "{vars}");
        let expected = if hit { (1, 0) } else { (0, 1) };
        assert_eq!(hits_and_misses(&sb), expected, "{vars}");
    }
}

/// A proc-macro that reads a variable while it expands: rustc (the process
/// the macro runs in) reads it through `getenv`, so it is an input of the
/// crate that uses the macro.
#[test]
fn a_variable_a_proc_macro_reads_is_an_input() {
    let sb = Sandbox::new();
    sb.write(
        "m.rs",
        "extern crate proc_macro;\nuse proc_macro::TokenStream;\n\
         #[proc_macro]\npub fn from_env(_: TokenStream) -> TokenStream {\n\
         let v = std::env::var(\"CFS_MACRO_VALUE\").unwrap_or_else(|_| \"unset\".into());\n\
         format!(\"{v:?}\").parse().unwrap()\n}\n",
    );
    sb.write(
        "main.rs",
        "fn main() { println!(\"{}\", m::from_env!()); }\n",
    );
    sb.sh("rustc --edition 2021 --crate-type proc-macro m.rs");
    let build = |vars: &str| {
        sb.sh("rm -f main");
        sb.run_ok(&format!(
            "{vars} rustc --edition 2021 --extern m=libm.so main.rs"
        ));
        String::from_utf8_lossy(&sb.sh("./main").stdout).into_owned()
    };
    assert_eq!(build("CFS_MACRO_VALUE=one"), "one\n");
    for (vars, hit, printed) in [
        ("CFS_MACRO_VALUE=one FOO=1", true, "one\n"),
        ("CFS_MACRO_VALUE=two", false, "two\n"),
        ("", false, "unset\n"),
    ] {
        sb.zero_stats();
        assert_eq!(build(vars), printed, "{vars}");
        let expected = if hit { (1, 0) } else { (0, 1) };
        assert_eq!(hits_and_misses(&sb), expected, "{vars}");
    }
}

/// `RUSTFLAGS` and `CARGO_ENCODED_RUSTFLAGS` reach rustc as arguments
/// through cargo: another value is another compile, and the same value
/// again is a hit.
#[test]
fn rustflags_reach_rustc_through_cargo() {
    let sb = Sandbox::new();
    sb.write(
        "Cargo.toml",
        "[package]\nname = \"flags\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    sb.write(
        "src/main.rs",
        "fn main() { println!(\"{}\", if cfg!(cfs_flag) { \"flag\" } else { \"none\" }); }\n",
    );
    let build = |vars: &str| {
        sb.sh("rm -rf target");
        sb.run_ok(&format!(
            "env -u RUSTC_WRAPPER -u CARGO_TARGET_DIR CARGO_INCREMENTAL=0 {vars} \
             cargo build -q --offline"
        ));
        String::from_utf8_lossy(&sb.sh("target/debug/flags").stdout).into_owned()
    };
    assert_eq!(build(""), "none\n");
    let with_cfg = "RUSTFLAGS='--cfg cfs_flag --check-cfg cfg(cfs_flag)'";
    let encoded = "CARGO_ENCODED_RUSTFLAGS=\"$(printf -- '--cfg\\037cfs_flag\\037--check-cfg\\037cfg(cfs_flag)')\"";
    for (vars, hit, printed) in [
        (with_cfg, false, "flag\n"),
        ("", true, "none\n"),
        (encoded, true, "flag\n"),
    ] {
        sb.zero_stats();
        assert_eq!(build(vars), printed, "{vars}");
        let (hits, misses) = hits_and_misses(&sb);
        if hit {
            assert_eq!(misses, 0, "{vars}: {hits} hits");
        } else {
            assert!(misses >= 1, "{vars}: must miss ({hits} hits)");
        }
    }
}

/// A variable only a build script reads: it reaches the crate through the
/// file the script writes (keyed by its content), not the compile of
/// `build.rs` nor a crate that never sees it.
#[test]
fn a_variable_only_a_build_script_reads_reaches_only_what_it_wrote() {
    let sb = Sandbox::new();
    sb.write(
        "Cargo.toml",
        "[workspace]\nmembers = [\"a\", \"b\", \"app\"]\nresolver = \"2\"\n",
    );
    let manifest = |name: &str, deps: &str| {
        format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n{deps}")
    };
    sb.write("a/Cargo.toml", &manifest("a", ""));
    sb.write(
        "a/build.rs",
        "fn main() {\n    println!(\"cargo:rerun-if-env-changed=CFS_FLAVOR\");\n\
         let f = std::env::var(\"CFS_FLAVOR\").unwrap_or_default();\n\
         let out = std::path::Path::new(&std::env::var(\"OUT_DIR\").unwrap()).join(\"flavor.rs\");\n\
         std::fs::write(out, format!(\"pub const FLAVOR: &str = {f:?};\")).unwrap();\n}\n",
    );
    sb.write(
        "a/src/lib.rs",
        "include!(concat!(env!(\"OUT_DIR\"), \"/flavor.rs\"));\n",
    );
    sb.write("b/Cargo.toml", &manifest("b", ""));
    sb.write("b/src/lib.rs", "pub fn b() -> u32 { 7 }\n");
    sb.write(
        "app/Cargo.toml",
        &manifest("app", "a = { path = \"../a\" }\nb = { path = \"../b\" }\n"),
    );
    sb.write(
        "app/src/main.rs",
        "fn main() { println!(\"{} {}\", a::FLAVOR, b::b()); }\n",
    );
    let build = |flavor: &str| {
        sb.sh("rm -rf target");
        sb.run_ok(&format!(
            "env -u RUSTC_WRAPPER -u CARGO_TARGET_DIR CARGO_INCREMENTAL=0 CFS_FLAVOR={flavor} \
             cargo build -q --offline"
        ));
        String::from_utf8_lossy(&sb.sh("target/debug/app").stdout).into_owned()
    };
    assert_eq!(build("one"), "one 7\n");
    sb.zero_stats();
    assert_eq!(build("one"), "one 7\n");
    // build.rs, a, b, app, and cargo's own `rustc -vV` probes.
    let (all, misses) = hits_and_misses(&sb);
    assert_eq!(misses, 0, "{all} hits");
    sb.zero_stats();
    assert_eq!(build("two"), "two 7\n");
    assert_eq!(
        hits_and_misses(&sb),
        (all - 2, 2),
        "build.rs and b hit; a (its OUT_DIR file changed) and app (a's rlib) miss"
    );
}
