//! `cachefs run` on real C builds with real gcc and clang: hits, misses and
//! byte-identical results.

mod common;
use common::*;

#[test]
fn multi_file_make_rebuild_is_all_hits_and_identical() {
    let sb = Sandbox::new();
    example_project(&sb);
    sb.sh("make -s -j2");
    let plain = example_outputs(&sb);
    sb.sh("make -s clean");
    sb.zero_stats();

    let first = sb.run_ok("make -s -j2");
    assert!(
        stderr(&first).contains("cachefs: 22 compiles"),
        "{}",
        stderr(&first)
    );
    let (hits, misses, unc, errors) = sb.counts();
    assert_eq!((hits, misses, unc, errors), (0, 22, 0, 0));
    assert_eq!(
        example_outputs(&sb),
        plain,
        "first build under cachefs differs from the plain build"
    );

    sb.sh("make -s clean");
    let second = sb.run_ok("make -s -j2");
    assert!(stderr(&second).contains("22 hits"), "{}", stderr(&second));
    let (hits, misses, _, errors) = sb.counts();
    assert_eq!((hits, misses, errors), (22, 22, 0));
    assert_eq!(
        example_outputs(&sb),
        plain,
        "restored outputs differ from the plain build"
    );
    assert!(sb.sh("./calc").stdout.starts_with(b"calc 1.0\n"));
}

#[test]
fn clear_empties_the_cache_and_the_next_build_misses_then_hits() {
    let sb = Sandbox::new();
    example_project(&sb);
    sb.run_ok("make -s -j2");
    let built = example_outputs(&sb);
    let full = sb.stats();
    assert_eq!(full["entries"], 22);

    let out = sb.cachefs().arg("clear").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("22 cached results"), "{said}");
    let empty = sb.stats();
    assert_eq!(empty["entries"], 0);
    assert!(
        empty["bytes"].as_u64() < full["bytes"].as_u64(),
        "{empty} vs {full}"
    );
    // Statistics are history: they stay.
    assert_eq!(
        (empty["misses"].as_u64(), empty["hits"].as_u64()),
        (Some(22), Some(0))
    );

    sb.sh("make -s clean");
    sb.zero_stats();
    sb.run_ok("make -s -j2");
    assert_eq!(sb.counts(), (0, 22, 0, 0));
    assert_eq!(example_outputs(&sb), built);
    sb.sh("make -s clean");
    sb.run_ok("make -s -j2");
    assert_eq!(sb.counts(), (22, 22, 0, 0));
    assert_eq!(example_outputs(&sb), built);
}

/// `__TIME__`, `__DATE__` and `__TIMESTAMP__` make the output a function of
/// the clock: a hit would replay the stored time. Such compiles run every
/// time, unless gcc fixes the time from SOURCE_DATE_EPOCH.
#[test]
fn compiles_that_read_the_clock_macros_are_not_cached() {
    let sb = Sandbox::new();
    sb.write("t.c", "const char *t = __TIME__;\n");
    sb.write("stamp.h", "static const char *built = __DATE__;\n");
    sb.write(
        "d.c",
        "#include \"stamp.h\"\nconst char *d(void) { return built; }\n",
    );
    sb.write("ts.c", "const char *ts = __TIMESTAMP__;\n");
    sb.write("plain.c", "int plain(void) { return 1; }\n");
    let build = "for f in t d ts plain; do gcc -c $f.c -o $f.o; done";
    sb.run_ok(build);
    let first = sb.read("t.o");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    sb.run_ok(build);
    assert_eq!(sb.counts(), (1, 1, 6, 0));
    assert_ne!(
        sb.read("t.o"),
        first,
        "__TIME__ was replayed from the cache"
    );
    let reasons = &sb.stats()["uncacheable_reasons"];
    assert_eq!(reasons["uses __TIME__"], 2, "{reasons}");
    assert_eq!(reasons["uses __DATE__"], 2, "{reasons}");
    assert_eq!(reasons["uses __TIMESTAMP__"], 2, "{reasons}");

    // gcc takes __DATE__ and __TIME__ from SOURCE_DATE_EPOCH (not
    // __TIMESTAMP__); clang 14 ignores the variable.
    sb.zero_stats();
    let fixed = "export SOURCE_DATE_EPOCH=86400; for f in t d ts; do gcc -c $f.c -o $f.o; done; clang -c t.c -o tc.o";
    sb.run_ok(fixed);
    sb.run_ok(fixed);
    assert_eq!(sb.counts(), (2, 2, 4, 0));
    let cached = sb.read("t.o");
    sb.sh("SOURCE_DATE_EPOCH=86400 gcc -c t.c -o t.o");
    assert_eq!(sb.read("t.o"), cached);
}

/// `-march=native` output depends on the CPU (cpuid, no file access): the
/// key holds the host CPU's identity, so the same machine still hits and a
/// shared cache never gives one CPU's object to another (unit test
/// `entry::key1::tests::key1_of_a_native_cpu_compile_is_the_cpu_s`).
#[test]
fn march_native_hits_on_the_same_machine_and_keys_apart_from_generic() {
    let sb = Sandbox::new();
    sb.write("v.c", "float dot(const float *a, const float *b) { float s = 0; for (int i = 0; i < 64; i++) s += a[i] * b[i]; return s; }\n");
    let build = "gcc -O3 -march=native -c v.c -o native.o && gcc -O3 -c v.c -o generic.o";
    sb.run_ok(build);
    sb.sh("gcc -O3 -march=native -c v.c -o plain.o");
    sb.run_ok(build);
    assert_eq!(sb.counts(), (2, 2, 0, 0));
    assert_eq!(sb.read("native.o"), sb.read("plain.o"));
    sb.run_ok("gcc -O3 -march=native -mtune=generic -c v.c -o other.o");
    assert_eq!(sb.counts(), (2, 3, 0, 0));
}

/// At a terminal gcc and clang color their diagnostics; on a miss their
/// stderr is a pipe, so cachefs asks for colors and keeps them only where the
/// compiler would have colored: the same bytes as without cachefs, miss and hit.
#[test]
fn diagnostics_keep_their_colors_at_a_terminal() {
    let sb = Sandbox::new();
    sb.write("w.c", "int f(int x) { int unused; return x; }\n");
    // `script` (util-linux) runs the command on a pseudo-terminal.
    let at_terminal = |cmd: &str| {
        let out = std::process::Command::new("script")
            .args(["-qec", cmd, "/dev/null"])
            .env("TERM", "xterm")
            .env("CACHEFS_DIR", &sb.cache)
            .current_dir(&sb.project)
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("cachefs:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let cachefs = cachefs_bin();
    for cc in ["gcc", "clang"] {
        let compile = format!("{cc} -Wall -c w.c -o w.o");
        let native = at_terminal(&compile);
        assert!(
            native.contains("\x1b["),
            "{cc} colors at a terminal: {native:?}"
        );
        let under = format!("{} run sh -c '{compile}'", cachefs.display());
        assert_eq!(at_terminal(&under), native, "{cc}, miss");
        assert_eq!(at_terminal(&under), native, "{cc}, hit");
        sb.sh(&format!("{cc} -Wall -c w.c -o plain.o 2>/dev/null"));
        assert_eq!(sb.read("w.o"), sb.read("plain.o"), "{cc}: the object");
        let uncolored = format!("{cc} -fno-diagnostics-color -Wall -c w.c -o w.o");
        let native = at_terminal(&uncolored);
        assert!(!native.contains('\x1b'), "{native:?}");
        let under = format!("{} run sh -c '{uncolored}'", cachefs.display());
        assert_eq!(at_terminal(&under), native, "{cc} -fno-diagnostics-color");
    }
    assert_eq!(sb.counts(), (2, 4, 0, 0));
    // Where the flag would show in the object, it is not added (gcc names
    // LTO sections from a random seed unless given one).
    for compile in [
        "gcc -flto -frandom-seed=1 -O2 -c w.c -o w.o",
        "clang -frecord-command-line -c w.c -o w.o",
        "clang -g -grecord-command-line -c w.c -o w.o",
    ] {
        sb.run_ok(compile);
        let cached = sb.read("w.o");
        sb.sh(&format!("{compile} 2>/dev/null"));
        assert_eq!(cached, sb.read("w.o"), "{compile}");
    }
}

/// ccache's per-call switches under cachefs's names: CACHEFS_DISABLE (no
/// cachefs at all), CACHEFS_READONLY (hits, but a miss stores nothing) and
/// CACHEFS_RECACHE (compile and store again).
#[test]
fn disable_readonly_and_recache_switches() {
    let sb = Sandbox::new();
    example_project(&sb);
    sb.sh("make -s -j2");
    let plain = example_outputs(&sb);
    let with = |var: &str, script: &str| {
        let out = sb
            .cachefs()
            .env(var, "1")
            .args(["run", "sh", "-c", script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{var}: {}", stderr(&out));
        out
    };
    sb.sh("make -s clean");
    sb.zero_stats();
    with("CACHEFS_DISABLE", "make -s -j2");
    assert_eq!(sb.counts(), (0, 0, 0, 0), "nothing reached the agent");
    assert_eq!(sb.stats()["entries"], 0);
    assert_eq!(example_outputs(&sb), plain);

    sb.sh("make -s clean");
    sb.run_ok("make -s -j2");
    sb.sh("make -s clean");
    sb.zero_stats();
    with("CACHEFS_READONLY", "make -s -j2");
    assert_eq!(sb.counts(), (22, 0, 0, 0), "read-only still hits");
    let main_c = String::from_utf8(sb.read("src/main.c")).unwrap();
    sb.write("src/main.c", &format!("{main_c}\nint readonly_probe;\n"));
    sb.zero_stats();
    with("CACHEFS_READONLY", "make -s -j2");
    assert_eq!(sb.counts(), (0, 2, 0, 0), "main.o and the link miss");
    sb.sh("make -s clean");
    sb.run_ok("make -s -j2");
    assert_eq!(
        sb.counts(),
        (20, 4, 0, 0),
        "the read-only misses stored nothing"
    );

    sb.write("src/main.c", &main_c);
    sb.sh("make -s clean");
    sb.run_ok("make -s -j2");
    let entries = sb.stats()["entries"].clone();
    sb.sh("make -s clean");
    sb.zero_stats();
    with("CACHEFS_RECACHE", "make -s -j2");
    assert_eq!(sb.counts(), (0, 22, 0, 0), "every compile ran again");
    assert_eq!(example_outputs(&sb), plain);
    assert_eq!(sb.stats()["entries"], entries, "replaced, not added");
    sb.sh("make -s clean");
    sb.run_ok("make -s -j2");
    assert_eq!(sb.counts(), (22, 22, 0, 0));
    assert_eq!(example_outputs(&sb), plain);
}

/// /proc, /sys, /dev, /run and files at the top of / are not mirrored: a
/// compile that writes or reads there (named in its arguments, its
/// directory, a path variable, or through a symlink it follows) would be
/// stored without that output or keyed without that input.
#[test]
fn compiles_that_work_outside_the_observed_tree_are_not_cached() {
    let sb = Sandbox::new();
    let outside = tempfile::Builder::new()
        .prefix("cachefs-test-")
        .tempdir_in("/run")
        .unwrap();
    let out = outside.path().display().to_string();
    std::fs::write(outside.path().join("h.h"), "#define H 1\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), sb.path("link")).unwrap();
    sb.write("a.c", "int a(void) { return 1; }\n");
    sb.write("h.c", "#include \"h.h\"\nint h(void) { return H; }\n");
    let build = format!(
        "gcc -c a.c -o {out}/a.o && gcc -I{out} -c h.c -o h.o && gcc -c a.c -o link/b.o && \
         (cd {out} && gcc -c {p}/a.c -o c.o) && CPATH={out} gcc -c h.c -o h2.o && \
         gcc -DRUNDIR='\"/run\"' -c a.c -o d.o",
        p = sb.project.display()
    );
    sb.run_ok(&build);
    for f in ["a.o", "b.o", "c.o"] {
        std::fs::remove_file(outside.path().join(f)).unwrap();
    }
    sb.zero_stats();
    sb.run_ok(&build);
    assert_eq!(
        sb.counts(),
        (1, 0, 5, 0),
        "only the -DRUNDIR compile is cached"
    );
    for f in ["a.o", "b.o", "c.o"] {
        assert!(outside.path().join(f).exists(), "{f} was written again");
    }
    let reasons = &sb.stats()["uncacheable_reasons"];
    assert_eq!(reasons["outside the observed tree"], 5, "{reasons}");
}

fn two_headers(sb: &Sandbox) {
    sb.write("a.h", "#define A 1\n");
    sb.write("b.h", "#define B 2\n");
    sb.write("uses_a.c", "#include \"a.h\"\nint ua(void) { return A; }\n");
    sb.write("uses_b.c", "#include \"b.h\"\nint ub(void) { return B; }\n");
}

const BUILD_AB: &str = "gcc -c uses_a.c -o uses_a.o && gcc -c uses_b.c -o uses_b.o";

#[test]
fn header_change_misses_only_its_includers() {
    let sb = Sandbox::new();
    two_headers(&sb);
    sb.run_ok(BUILD_AB);
    sb.write("a.h", "#define A 42\n");
    sb.zero_stats();
    sb.run_ok(BUILD_AB);
    assert_eq!(sb.counts(), (1, 1, 0, 0));
    let cached = sb.read("uses_a.o");
    sb.sh("gcc -c uses_a.c -o plain_a.o");
    assert_eq!(cached, sb.read("plain_a.o"));
}

#[test]
fn same_size_rewrite_with_old_mtime_is_detected() {
    let sb = Sandbox::new();
    two_headers(&sb);
    sb.run_ok(BUILD_AB);
    let before = std::fs::metadata(sb.path("a.h"))
        .unwrap()
        .modified()
        .unwrap();
    sb.write("a.h", "#define A 7\n");
    std::fs::File::options()
        .write(true)
        .open(sb.path("a.h"))
        .unwrap()
        .set_modified(before)
        .unwrap();
    sb.zero_stats();
    sb.run_ok(BUILD_AB);
    assert_eq!(sb.counts().1, 1, "the rewritten header must cause a miss");
    sb.sh("gcc -c uses_a.c -o plain_a.o");
    assert_eq!(sb.read("uses_a.o"), sb.read("plain_a.o"));
}

#[test]
fn new_header_earlier_on_the_include_path_wins() {
    let sb = Sandbox::new();
    sb.write("late/conf.h", "#define VALUE 1\n");
    std::fs::create_dir_all(sb.path("early")).unwrap();
    sb.write("main.c", "#include <stdio.h>\n#include \"conf.h\"\nint main(void) { printf(\"%d\\n\", VALUE); return 0; }\n");
    let build = "gcc -Iearly -Ilate main.c -o prog";
    sb.run_ok(build);
    assert_eq!(sb.sh("./prog").stdout, b"1\n");
    sb.write("early/conf.h", "#define VALUE 2\n");
    sb.zero_stats();
    sb.run_ok(build);
    assert_eq!(sb.counts().0, 0, "a hit here would be a stale program");
    assert_eq!(sb.sh("./prog").stdout, b"2\n");
}

#[test]
fn flag_and_environment_changes_miss() {
    let sb = Sandbox::new();
    sb.write("inc/x.h", "#define X 3\n");
    sb.write("x.c", "#include <x.h>\nint x(void) { return X; }\n");
    sb.run_ok("gcc -O0 -Iinc -c x.c");
    sb.zero_stats();
    sb.run_ok("gcc -O2 -Iinc -c x.c");
    sb.run_ok("gcc -O2 -Iinc -DY=1 -c x.c");
    sb.run_ok("CPATH=$PWD/inc gcc -O2 -c x.c");
    assert_eq!(sb.counts(), (0, 3, 0, 0));
    sb.run_ok("gcc -O2 -Iinc -c x.c");
    assert_eq!(sb.counts().0, 1);
}

#[test]
fn warnings_replay_and_failures_fail_the_same_way() {
    let sb = Sandbox::new();
    sb.write("w.c", "int f(int x) { int unused; return x; }\n");
    sb.write("bad.c", "int f(void) { return nope; }\n");
    let first = sb.run_ok("gcc -Wall -c w.c");
    let second = sb.run_ok("gcc -Wall -c w.c");
    let warning = |o: &std::process::Output| {
        stderr(o)
            .lines()
            .filter(|l| !l.starts_with("cachefs:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        warning(&first).contains("unused variable"),
        "{}",
        stderr(&first)
    );
    assert_eq!(warning(&first), warning(&second));
    // Stored colored (see the next test), printed plain into a pipe: byte
    // for byte what gcc prints there.
    let plain = std::process::Command::new("gcc")
        .args(["-Wall", "-c", "w.c", "-o", "/dev/null"])
        .current_dir(&sb.project)
        .output()
        .unwrap();
    assert_eq!(warning(&second), stderr(&plain).trim_end());
    assert!(!warning(&second).contains('\x1b'));
    let fail1 = sb.run("gcc -c bad.c");
    let fail2 = sb.run("gcc -c bad.c");
    assert_eq!(fail1.status.code(), Some(1));
    assert_eq!(fail2.status.code(), Some(1));
    assert_eq!(warning(&fail1), warning(&fail2));
    assert!(warning(&fail2).contains("nope"));
    assert!(
        !sb.path("bad.o").exists(),
        "a failure must never become a success"
    );
}

#[test]
fn dependency_files_and_split_dwarf_are_restored() {
    let sb = Sandbox::new();
    two_headers(&sb);
    let build = "gcc -g -gsplit-dwarf -MD -MF deps/uses_a.d -c uses_a.c -o out/uses_a.o";
    std::fs::create_dir_all(sb.path("deps")).unwrap();
    std::fs::create_dir_all(sb.path("out")).unwrap();
    sb.run_ok(build);
    let want: Vec<Vec<u8>> = ["deps/uses_a.d", "out/uses_a.o", "out/uses_a.dwo"]
        .iter()
        .map(|p| sb.read(p))
        .collect();
    sb.sh("rm -f deps/* out/*");
    sb.zero_stats();
    sb.run_ok(build);
    assert_eq!(sb.counts().0, 1);
    let got: Vec<Vec<u8>> = ["deps/uses_a.d", "out/uses_a.o", "out/uses_a.dwo"]
        .iter()
        .map(|p| sb.read(p))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn every_compiler_name_is_cached() {
    let sb = Sandbox::new();
    sb.write("x.c", "int x(void) { return 1; }\n");
    sb.write("y.cc", "int y() { return 2; }\n");
    let calls = [
        "gcc -c x.c -o x1.o",
        "cc -c x.c -o x2.o",
        "/usr/bin/cc -c x.c -o x3.o",
        "gcc-12 -c x.c -o x4.o",
        "x86_64-linux-gnu-gcc-12 -c x.c -o x5.o",
        "g++ -c y.cc -o y1.o",
        "c++ -c y.cc -o y2.o",
        "clang -c x.c -o x6.o",
        "clang++ -c y.cc -o y3.o",
    ];
    for tool in ["gcc-12", "x86_64-linux-gnu-gcc-12", "clang", "clang++"] {
        require(tool);
    }
    for c in &calls {
        sb.run_ok(c);
    }
    sb.sh("rm -f *.o");
    sb.zero_stats();
    for c in &calls {
        sb.run_ok(c);
    }
    assert_eq!(sb.counts(), (calls.len() as u64, 0, 0, 0));
}

#[test]
fn stdin_source_is_uncacheable_but_compiles() {
    let sb = Sandbox::new();
    sb.zero_stats();
    sb.run_ok("echo 'int f(void){return 1;}' | gcc -x c -c - -o s.o");
    assert!(sb.path("s.o").exists());
    assert_eq!(sb.counts().2, 1);
}

#[test]
fn non_compiler_commands_are_untouched() {
    let sb = Sandbox::new();
    let out = sb.run("echo hello; exit 3");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"hello\n");
}

#[test]
fn wrapper_modes_cache_like_run() {
    let sb = Sandbox::new();
    sb.write("x.c", "int x(void) { return 3; }\n");
    let wrapped = |cmd: &str| {
        let out = sb.sh_wrapped(cmd);
        assert!(out.status.success(), "{cmd}: {}", stderr(&out));
    };
    sb.zero_stats();
    wrapped("CACHEFS gcc -c x.c -o a.o");
    wrapped("CACHEFS gcc -c x.c -o a.o");
    wrapped("CACHEFS /usr/bin/gcc -c x.c -o b.o");
    wrapped("CACHEFS /usr/bin/gcc -c x.c -o b.o");
    assert_eq!(sb.counts(), (2, 2, 0, 0));
    assert_eq!(sb.read("a.o"), sb.read("b.o"));
}

/// Builds run compilers with stdout or stderr closed (`2>&-`). The client
/// has its own start-up instead of std's (src/main.rs): such compiles are
/// still cached, restored byte for byte, and warnings are replayed where
/// stderr is open.
#[test]
fn compiles_with_closed_stdout_or_stderr_are_cached() {
    let sb = Sandbox::new();
    sb.write("w.c", "int w(int x) { int unused; return x; }\n");
    let compile =
        |redirect: &str| sb.sh_wrapped(&format!("CACHEFS gcc -Wall -c w.c -o w.o {redirect}"));
    sb.zero_stats();
    assert!(compile("2>&-").status.success());
    let want = sb.read("w.o");
    for redirect in ["2>&-", ">&-", ">&- 2>&-"] {
        sb.sh("rm w.o");
        assert!(compile(redirect).status.success(), "{redirect}");
        assert_eq!(sb.read("w.o"), want, "{redirect}");
    }
    sb.sh("rm w.o");
    let out = compile("");
    assert!(stderr(&out).contains("unused"), "the warning is replayed");
    assert_eq!(sb.counts(), (4, 1, 0, 0));
}

#[test]
fn a_compile_that_overwrites_its_own_input_is_not_cached() {
    let sb = Sandbox::new();
    sb.write("x.c", "int v = V;\n");
    sb.write("opts", "-DV=1\n");
    sb.zero_stats();
    // gcc reads the response file, then writes its output over it.
    sb.run_ok("gcc @opts -E -P x.c -o opts");
    assert_eq!(sb.counts().2, 1, "uncacheable: it reads what it writes");
    assert!(String::from_utf8_lossy(&sb.read("opts")).contains("int v = 1;"));
}

#[test]
fn save_temps_outputs_are_restored() {
    let sb = Sandbox::new();
    sb.write("st.c", "#define N 3\nint st(void) { return N; }\n");
    let build = "gcc -save-temps -c st.c -o st.o";
    sb.run_ok(build);
    let files = ["st.i", "st.s", "st.o"];
    let want: Vec<Vec<u8>> = files.iter().map(|f| sb.read(f)).collect();
    sb.sh("rm -f st.i st.s st.o");
    sb.zero_stats();
    sb.run_ok(build);
    assert_eq!(sb.counts().0, 1);
    let got: Vec<Vec<u8>> = files.iter().map(|f| sb.read(f)).collect();
    assert_eq!(got, want);
}

/// A compiler that cannot start (exit 127: a missing shared library, as the
/// loader reports it) fails the same way every time and is never cached:
/// its failure is the machine's state, not its sources'.
#[test]
fn a_compiler_that_cannot_start_is_not_cached() {
    let sb = Sandbox::new();
    sb.write("x.c", "int x(void) { return 1; }\n");
    sb.write(
        "bin/gcc",
        "#!/bin/sh\necho 'gcc: error while loading shared libraries: libisl.so.23: cannot open shared object file' >&2\nexit 127\n",
    );
    sb.sh("chmod +x bin/gcc");
    sb.zero_stats();
    for _ in 0..2 {
        let out = sb.run("PATH=$PWD/bin:$PATH gcc -c x.c -o x.o");
        assert_eq!(out.status.code(), Some(127));
        assert!(stderr(&out).contains("libisl.so.23"), "{}", stderr(&out));
    }
    assert_eq!(sb.counts(), (0, 0, 2, 0));
}

fn static_library_project(sb: &Sandbox) {
    for i in 1..=4 {
        sb.write(
            &format!("f{i}.c"),
            &format!("int f{i}(void) {{ return {i}; }}\n"),
        );
    }
    sb.write(
        "main.c",
        "int f2(void);\nint main(void) { return f2() - 2; }\n",
    );
    sb.write(
        "Makefile",
        "OBJS = f1.o f2.o f3.o f4.o\n\
         prog: main.o libf.a\n\t$(CC) -o $@ main.o libf.a\n\
         libf.a: $(OBJS)\n\tar rcu $@ $(OBJS)\n\tranlib $@\n\
         clean:\n\trm -f *.o *.a prog\n",
    );
}

fn library_outputs(sb: &Sandbox) -> Vec<Vec<u8>> {
    ["libf.a", "prog", "f2.o"]
        .iter()
        .map(|f| sb.read(f))
        .collect()
}

/// `ar` and `ranlib` are cached like compiles: ranlib rewrites the archive
/// it read, so it is keyed by what it read (the mirror hashes the file
/// before the rewrite), and `ar r` into an existing archive is keyed by that
/// archive, absent or not.
#[test]
fn static_library_steps_are_cached_and_right() {
    let sb = Sandbox::new();
    static_library_project(&sb);
    sb.sh("make -s 2>/dev/null");
    let plain = library_outputs(&sb);
    sb.sh("make -s clean");

    sb.run_ok("make -s 2>/dev/null");
    assert_eq!(sb.counts(), (0, 8, 0, 0), "5 compiles, ar, ranlib, link");
    assert_eq!(library_outputs(&sb), plain);
    sb.sh("make -s clean");
    sb.run_ok("make -s 2>/dev/null");
    assert_eq!(sb.counts(), (8, 8, 0, 0));
    assert_eq!(library_outputs(&sb), plain);
    assert_eq!(sb.stats()["languages"]["archive"]["hits"], 2);

    // An edit without a clean: ar adds to the archive it finds, and the
    // result is plain ar's on the same archive.
    let before = sb.root.path().join("before");
    sb.sh(&format!("cp -a . {}", before.display()));
    sb.write("f2.c", "int f2(void) { return 22; }\n");
    std::fs::write(before.join("f2.c"), "int f2(void) { return 22; }\n").unwrap();
    sb.sh(&format!("cd {} && make -s 2>/dev/null", before.display()));
    sb.run_ok("make -s 2>/dev/null");
    assert_eq!(sb.counts(), (8, 12, 0, 0), "f2.o, ar, ranlib, link");
    assert_eq!(
        sb.read("libf.a"),
        std::fs::read(before.join("libf.a")).unwrap()
    );

    // An archive cached while absent is not replayed over one that exists:
    // `ar rc` would keep its other members.
    sb.zero_stats();
    sb.run_ok("rm -f one.a && ar rc one.a f1.o");
    sb.sh("rm -f one.a && ar rc one.a f3.o");
    sb.run_ok("ar rc one.a f1.o");
    assert_eq!(sb.counts(), (0, 2, 0, 0));
    assert_eq!(sb.sh("ar t one.a").stdout, b"f3.o\nf1.o\n");

    // CACHEFS_NO_ARCHIVES leaves archive steps to run as they are.
    sb.zero_stats();
    sb.run_ok("CACHEFS_NO_ARCHIVES=1 make -s clean prog 2>/dev/null");
    assert_eq!(
        sb.stats()["requests"],
        6,
        "5 compiles and the link, no ar or ranlib"
    );
    assert_eq!(
        library_outputs(&sb)[0],
        std::fs::read(before.join("libf.a")).unwrap()
    );

    // Timestamps in the archive (U mode) would differ on every run.
    sb.zero_stats();
    sb.run_ok("ar rcU timed.a f1.o && ar t timed.a >/dev/null");
    let s = sb.stats();
    assert_eq!(
        s["uncacheable_reasons"]["ar U mode stores timestamps"], 1,
        "{s}"
    );

    // An `ar` whose default is U mode, whatever the flags say: the archive
    // it wrote tells.
    sb.zero_stats();
    sb.write(
        "bin/ar",
        "#!/bin/sh\nop=$1; shift; exec /usr/bin/ar \"${op}U\" \"$@\"\n",
    );
    sb.sh("chmod +x bin/ar");
    sb.run_ok("PATH=$PWD/bin:$PATH ar rc stamped.a f1.o");
    let s = sb.stats();
    let why = "ar: archive records member timestamps or owners (ar's U mode)";
    assert_eq!(s["uncacheable_reasons"][why], 1, "{s}");
}
