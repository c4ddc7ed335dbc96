//! Drop-in for sccache and ccache users: install, doctor, `CC="cachefs gcc"`,
//! sccache's flags, the config file, logs, completions and the man page.

mod common;

use common::{cachefs_bin, stderr, Sandbox};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `cachefs` command whose config file lives in the sandbox.
fn cachefs_with_config(sb: &Sandbox) -> Command {
    let mut c = sb.cachefs();
    c.env("XDG_CONFIG_HOME", config_home(sb))
        .env_remove("CACHEFS_CONFIG")
        .env_remove("CACHEFS_CACHE_SIZE")
        .env_remove("CACHEFS_IDLE_TIMEOUT")
        .env_remove("CACHEFS_LOG");
    c
}

fn config_home(sb: &Sandbox) -> PathBuf {
    sb.root.path().join("config")
}

fn write_config(sb: &Sandbox, text: &str) -> PathBuf {
    let file = config_home(sb).join("cachefs").join("config.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, text).unwrap();
    file
}

fn build_dir() -> PathBuf {
    cachefs_bin().parent().unwrap().to_path_buf()
}

#[test]
fn install_script_leaves_a_working_cachefs() {
    let sb = Sandbox::new();
    let prefix = sb.root.path().join("prefix");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh");
    let out = Command::new(&script)
        .arg("--prefix")
        .arg(&prefix)
        .arg("--from")
        .arg(build_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "install.sh: {}", stderr(&out));
    let installed = prefix.join("bin/cachefs");
    assert!(prefix.join("lib/cachefs/libcachefs_preload.so").is_file());
    let man = std::fs::read_to_string(prefix.join("share/man/man1/cachefs.1")).unwrap();
    assert!(man.contains(".TH cachefs 1"), "{man}");
    assert!(prefix
        .join("share/bash-completion/completions/cachefs")
        .is_file());

    let version = Command::new(&installed).arg("--version").output().unwrap();
    assert_eq!(
        stdout(&version).trim(),
        format!("cachefs {}", env!("CARGO_PKG_VERSION"))
    );

    let doctor = Command::new(&installed)
        .arg("doctor")
        .env("CACHEFS_DIR", &sb.cache)
        .env("XDG_CONFIG_HOME", config_home(&sb))
        .output()
        .unwrap();
    let report = stdout(&doctor);
    assert!(
        doctor.status.success(),
        "doctor:\n{report}{}",
        stderr(&doctor)
    );
    for check in ["/dev/fuse", "preload shim", "agent", "store", "FUSE mount"] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(check)),
            "no ok line for {check}:\n{report}"
        );
    }
    assert!(
        report.contains("ar writes deterministic archives"),
        "{report}"
    );
    // The installed binary uses the installed shim, not the build tree's.
    let shim = prefix.join("lib/cachefs/libcachefs_preload.so");
    assert!(report.contains(&shim.display().to_string()), "{report}");

    // And a build under the installed binary is cached.
    sb.write("x.c", "int x(void) { return 1; }\n");
    for _ in 0..2 {
        let out = Command::new(&installed)
            .args(["run", "sh", "-c", "gcc -c x.c -o x.o"])
            .env("CACHEFS_DIR", &sb.cache)
            .current_dir(&sb.project)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(sb.counts(), (1, 1, 0, 0));

    // The shim starts the installed `cachefs` (the client only; the command
    // line is `cachefs-cli` beside it), and a shim pointed at `cachefs-cli`
    // still caches: the build hits either way.
    let client_of_run = |cli: Option<&Path>| {
        let mut cmd = Command::new(cli.unwrap_or(&installed));
        cmd.args([
            "run",
            "sh",
            "-c",
            "echo \"$CACHEFS_CLIENT\"; gcc -c x.c -o x.o",
        ]);
        let out = cmd
            .env("CACHEFS_DIR", &sb.cache)
            .current_dir(&sb.project)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        PathBuf::from(stdout(&out).trim())
    };
    let cli = prefix.join("bin/cachefs-cli");
    assert_eq!(client_of_run(None), installed);
    let alone = sb.root.path().join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    std::fs::copy(&cli, alone.join("cachefs-cli")).unwrap();
    std::fs::copy(&shim, alone.join("libcachefs_preload.so")).unwrap();
    assert_eq!(
        client_of_run(Some(&alone.join("cachefs-cli"))),
        alone.join("cachefs-cli")
    );
    assert_eq!(sb.counts(), (3, 1, 0, 0));

    // Without `cachefs-cli`, commands say what is missing and compiles
    // still work.
    std::fs::remove_file(&cli).unwrap();
    let stats = Command::new(&installed)
        .arg("stats")
        .env("CACHEFS_DIR", &sb.cache)
        .output()
        .unwrap();
    assert_eq!(stats.status.code(), Some(2));
    assert!(
        stderr(&stats).contains("cachefs-cli is missing"),
        "{}",
        stderr(&stats)
    );
    let compile = Command::new(&installed)
        .args(["gcc", "-c", "x.c", "-o", "x.o"])
        .env("CACHEFS_DIR", &sb.cache)
        .current_dir(&sb.project)
        .output()
        .unwrap();
    assert!(compile.status.success(), "{}", stderr(&compile));
}

#[test]
fn doctor_names_what_is_broken_and_fails() {
    let sb = Sandbox::new();
    // A cache directory that cannot be created: no agent, no store.
    let out = cachefs_with_config(&sb)
        .arg("doctor")
        .env("CACHEFS_DIR", "/proc/cachefs-cannot-be-here")
        .output()
        .unwrap();
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("agent")),
        "{report}"
    );
    assert!(report.contains("fix:"), "{report}");

    // A malformed config file: doctor names the file.
    let file = write_config(&sb, "cache_size = \n");
    let out = cachefs_with_config(&sb).arg("doctor").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(&file.display().to_string()),
        "{}",
        stdout(&out)
    );
}

#[test]
fn cc_variable_with_cachefs_prefix_works_through_make() {
    let sb = Sandbox::new();
    sb.write("x.c", "int x(void) { return 2; }\n");
    sb.write("Makefile", "x.o: x.c\n\t$(CC) -c x.c -o x.o\n");
    sb.zero_stats();
    let cc = format!("CC={} gcc", cachefs_bin().display());
    for _ in 0..2 {
        let out = Command::new("make")
            .arg(&cc)
            .env("CACHEFS_DIR", &sb.cache)
            .current_dir(&sb.project)
            .output()
            .unwrap();
        assert!(out.status.success(), "make: {}", stderr(&out));
        std::fs::remove_file(sb.path("x.o")).unwrap();
    }
    assert_eq!(sb.counts(), (1, 1, 0, 0));
}

#[test]
fn sccache_flags_work() {
    let sb = Sandbox::new();
    let flag = |f: &str| {
        let out = sb.cachefs().arg(f).output().unwrap();
        assert!(out.status.success(), "{f}: {}", stderr(&out));
        out
    };
    flag("--start-server");
    assert!(sb.cache.join("agent.sock").exists());
    sb.write("x.c", "int x(void) { return 3; }\n");
    sb.run_ok("gcc -c x.c -o x.o");
    let shown = stdout(&flag("--show-stats"));
    assert!(shown.contains("Cache misses"), "{shown}");
    assert_eq!(sb.counts().1, 1);
    flag("--zero-stats");
    assert_eq!(sb.counts(), (0, 0, 0, 0));
    flag("--stop-server");
    assert!(std::os::unix::net::UnixStream::connect(sb.cache.join("agent.sock")).is_err());
}

#[test]
fn config_file_is_read_and_env_overrides_it() {
    let sb = Sandbox::new();
    let dir_from_file = sb.root.path().join("cache-from-file");
    let file = write_config(
        &sb,
        &format!(
            "dir = {:?}\ncache_size = \"2G\"\nidle_timeout = 30\n",
            dir_from_file.display().to_string()
        ),
    );
    let out = cachefs_with_config(&sb)
        .env_remove("CACHEFS_DIR")
        .env("CACHEFS_IDLE_TIMEOUT", "45")
        .arg("config")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .to_string()
    };
    let file_name = file.display().to_string();
    assert!(line("dir").contains(&dir_from_file.display().to_string()));
    assert!(line("dir").contains(&file_name), "{text}");
    assert!(
        line("cache_size").contains(&(2u64 << 30).to_string()),
        "{text}"
    );
    assert!(line("idle_timeout").contains("45"), "{text}");
    assert!(
        line("idle_timeout").contains("$CACHEFS_IDLE_TIMEOUT"),
        "{text}"
    );
    assert!(line("log").contains("default"), "{text}");

    // The agent really uses the file's directory.
    let out = cachefs_with_config(&sb)
        .env_remove("CACHEFS_DIR")
        .arg("start")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir_from_file.join("agent.sock").exists());
    cachefs_with_config(&sb)
        .env_remove("CACHEFS_DIR")
        .arg("stop")
        .output()
        .unwrap();
}

#[test]
fn bad_config_is_an_error_naming_file_key_or_variable() {
    let sb = Sandbox::new();
    let fails_saying = |cmd: &mut Command, needles: &[&str]| {
        let out = cmd.arg("config").output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        for n in needles {
            assert!(err.contains(n), "{n:?} not in {err}");
        }
    };
    let file = write_config(&sb, "cache_size = [1, 2\n");
    let name = file.display().to_string();
    fails_saying(&mut cachefs_with_config(&sb), &[&name]);
    write_config(&sb, "cache_size = \"lots\"\n");
    fails_saying(&mut cachefs_with_config(&sb), &[&name, "cache_size"]);
    write_config(&sb, "cache_sise = \"1G\"\n");
    fails_saying(&mut cachefs_with_config(&sb), &[&name, "cache_sise"]);
    // A bad config never breaks a build: the compile runs uncached.
    sb.write("x.c", "int x(void) { return 8; }\n");
    let out = cachefs_with_config(&sb)
        .args(["gcc", "-c", "x.c", "-o", "x.o"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(sb.path("x.o").is_file());
    write_config(&sb, "");
    fails_saying(
        cachefs_with_config(&sb).env("CACHEFS_IDLE_TIMEOUT", "soon"),
        &["CACHEFS_IDLE_TIMEOUT", "soon"],
    );
}

#[test]
fn logs_go_to_cachefs_log_not_to_the_build() {
    let sb = Sandbox::new();
    let log = sb.root.path().join("cachefs.log");
    sb.write("x.c", "int x(void) { return 4; }\n");
    let out = cachefs_with_config(&sb)
        .args(["gcc", "-c", "x.c", "-o", "x.o"])
        .env("RUST_LOG", "debug")
        .env("CACHEFS_LOG", &log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "",
        "the compile's stderr stays the compiler's"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("DEBUG"), "{text}");
}

#[test]
fn run_is_quiet_but_for_one_summary_line_and_progress_needs_a_terminal() {
    let sb = Sandbox::new();
    sb.write("x.c", "int x(void) { return 5; }\n");
    let out = sb
        .cachefs()
        .args(["run", "--progress", "sh", "-c", "gcc -c x.c -o x.o"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(!err.contains('\r'), "no live line off a terminal: {err:?}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("cachefs: 1 compiles: 0 hits, 1 misses"),
        "{err}"
    );
}

#[test]
fn completions_and_man_page_come_from_the_cli() {
    let sb = Sandbox::new();
    let gen = |args: &[&str]| {
        let out = sb.cachefs().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let bash = gen(&["completions", "bash"]);
    assert!(
        bash.contains("_cachefs()") && bash.contains("doctor"),
        "{bash}"
    );
    assert!(gen(&["completions", "zsh"]).starts_with("#compdef cachefs"));
    assert!(gen(&["completions", "fish"]).contains("complete -c cachefs"));
    let man = gen(&["man"]);
    assert!(
        man.contains(".TH cachefs 1") && man.contains("show\\-stats"),
        "{man}"
    );
}

#[test]
fn stats_has_per_language_rows_and_stable_json() {
    let sb = Sandbox::new();
    sb.write("a.c", "int a(void) { return 1; }\n");
    sb.write("b.cpp", "int b() { return 2; }\n");
    sb.zero_stats();
    sb.run_ok("gcc -c a.c -o a.o && g++ -c b.cpp -o b.o && gcc -c b.cpp -o c.o");
    sb.run_ok("gcc -c a.c -o a.o && gcc -c a.c -o a2.o");
    sb.write("l.rs", "pub fn l() -> u32 { 7 }\n");
    sb.run_ok("rustc --crate-type=lib --crate-name l l.rs --out-dir out");
    let s = sb.stats();
    for field in [
        "requests",
        "hits",
        "misses",
        "uncacheable",
        "errors",
        "entries",
        "bytes",
        "limit",
        "time_saved_ms",
    ] {
        assert!(s[field].is_u64(), "{field} missing in {s}");
    }
    let lang = |l: &str, f: &str| s["languages"][l][f].as_u64().unwrap_or(u64::MAX);
    assert_eq!(lang("C", "requests"), 3, "{s}");
    assert_eq!(lang("C", "hits"), 1, "{s}");
    assert_eq!(lang("C++", "misses"), 2, "{s}");
    assert_eq!(lang("Rust", "requests"), 1, "{s}");
    assert!(
        s["languages"].get("CUDA").is_none(),
        "only languages seen: {s}"
    );

    let out = sb.cachefs().arg("stats").output().unwrap();
    let table = stdout(&out);
    let row = table
        .lines()
        .find(|l| l.starts_with("C++ "))
        .unwrap_or_else(|| panic!("no C++ row in\n{table}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols, ["C++", "2", "0", "2", "0", "0"], "{table}");
    let header = table.lines().find(|l| l.starts_with("Language")).unwrap();
    // Right-aligned: the requests count ends where its heading ends.
    let heading_end = header.find("Requests").unwrap() + "Requests".len();
    let count_end = 3 + row[3..].find('2').unwrap() + 1;
    assert_eq!(heading_end, count_end, "not aligned:\n{table}");
}

#[test]
fn progress_shows_a_live_line_on_a_terminal() {
    let sb = Sandbox::new();
    sb.write("x.c", "int x(void) { return 6; }\n");
    // `script` (bsdutils, essential on Debian) runs the command on a
    // pseudo-terminal and copies what it wrote.
    let inner = format!(
        "{} run --progress sh -c 'gcc -c x.c -o x.o; sleep 1'",
        cachefs_bin().display()
    );
    let out = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env("CACHEFS_DIR", &sb.cache)
        .env_remove("LD_PRELOAD")
        .current_dir(&sb.project)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("\r\x1b[Kcachefs: 1 compiles done: 0 hits, 1 misses"),
        "{text:?}"
    );
    assert!(
        text.contains("cachefs: 1 compiles: 0 hits, 1 misses"),
        "{text:?}"
    );
}

/// `cachefs doctor` tries `ar` and says whether archive steps can be cached:
/// not with an `ar` that stores timestamps by default.
#[test]
fn doctor_says_whether_archive_steps_can_be_cached() {
    let sb = Sandbox::new();
    let doctor = |path: &str| {
        let out = sb
            .cachefs()
            .arg("doctor")
            .env("PATH", path)
            .output()
            .unwrap();
        stdout(&out)
            .lines()
            .find(|l| l.contains("archives"))
            .unwrap_or_default()
            .to_string()
    };
    let path = std::env::var("PATH").unwrap();
    assert!(doctor(&path).contains("deterministic"), "{}", doctor(&path));
    sb.write(
        "bin/ar",
        "#!/bin/sh\nop=$1; shift; exec /usr/bin/ar \"${op}U\" \"$@\"\n",
    );
    sb.sh("chmod +x bin/ar");
    let stamped = format!("{}:{path}", sb.path("bin").display());
    let line = doctor(&stamped);
    assert!(line.starts_with("ok") && line.contains("U mode"), "{line}");
}
