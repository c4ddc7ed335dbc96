//! Hits across checkouts: the same tree at another path reaches the same
//! entries (key1 and dep sets hold the tree root marked), and a result is
//! served there only when none of its outputs carries the location it was
//! built at, nor could it have reached a different file there. Real gcc,
//! make, CMake + Ninja, and a real memcached between two agents.

mod common;
use common::debian::{debian_tarball, lua_artifacts as artifacts};
use common::servers;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `cachefs run sh -c SCRIPT` started in `dir` (the tree's top: the root).
fn run_in(sb: &Sandbox, dir: &Path, script: &str) -> Output {
    let out = sb
        .cachefs()
        .current_dir(dir)
        .args(["run", "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{script}` in {} failed: {}",
        dir.display(),
        stderr(&out)
    );
    out
}

fn sh_in(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "`{script}`: {}", stderr(&out));
}

fn explain(sb: &Sandbox, dir: &Path, file: &str) -> String {
    let out = sb
        .cachefs()
        .current_dir(dir)
        .args(["explain", file])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const MAKEFILE: &str = "all: prog\n\
prog: a.o b.o\n\t$(CC) $(CFLAGS) -o prog a.o b.o\n\
%.o: %.c inc/h.h\n\t$(CC) $(CFLAGS) -Iinc -c $< -o $@\n\
clean:\n\trm -f *.o prog\n";

/// A small make project at `dir`: two objects with a header, linked.
fn tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("inc")).unwrap();
    std::fs::write(dir.join("Makefile"), MAKEFILE).unwrap();
    std::fs::write(dir.join("inc/h.h"), "int h(int);\n").unwrap();
    std::fs::write(
        dir.join("a.c"),
        "#include \"h.h\"\nint h(int x) { return x + 1; }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.c"),
        "#include \"h.h\"\nint main(void) { return h(1) - 2; }\n",
    )
    .unwrap();
}

fn outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    ["a.o", "b.o", "prog"]
        .iter()
        .map(|n| (n.to_string(), std::fs::read(dir.join(n)).unwrap()))
        .collect()
}

/// Two trees at paths of different depth, in one sandbox (one agent).
fn two_trees(sb: &Sandbox) -> (PathBuf, PathBuf) {
    let (one, two) = (sb.path("one/proj"), sb.path("two/deeper/proj2"));
    tree(&one);
    tree(&two);
    (one, two)
}

/// Builds with `cflags` at the first tree, then at the second, which must
/// match a plain build there; the second build's (hits, misses).
fn build_both(sb: &Sandbox, cflags: &str) -> (u64, u64) {
    let (one, two) = two_trees(sb);
    let make = format!("make -s CC=gcc CFLAGS='{cflags}'");
    sh_in(&two, &make);
    let plain = outputs(&two);
    sh_in(&two, "make -s clean");
    run_in(sb, &one, &make);
    sb.zero_stats();
    run_in(sb, &two, &make);
    assert_eq!(outputs(&two), plain, "{cflags}: differs from a plain build");
    let (hits, misses, _, _) = sb.counts();
    (hits, misses)
}

#[test]
fn a_tree_at_another_path_hits_what_the_first_stored() {
    let sb = Sandbox::new();
    assert_eq!(build_both(&sb, "-O2"), (3, 0), "two objects and the link");
    let two = sb.path("two/deeper/proj2");
    assert!(explain(&sb, &two, "a.o").contains("it was a hit"));
}

#[test]
fn debug_info_pins_a_result_to_the_location_it_carries() {
    // DW_AT_comp_dir holds the working directory.
    let sb = Sandbox::new();
    assert_eq!(build_both(&sb, "-g -O2"), (0, 3));
    let two = sb.path("two/deeper/proj2");
    let why = explain(&sb, &two, "a.o");
    assert!(
        why.contains("built at another location, and its outputs carry that location"),
        "{why}"
    );
    assert!(why.contains("one/proj"), "{why}");
}

#[test]
fn a_location_only_inside_compressed_debug_sections_is_found() {
    // Inline strings (no .debug_str) in zlib-compressed sections: the
    // directory appears nowhere in the object's raw bytes.
    let sb = Sandbox::new();
    let flags = "-g -gdwarf-4 -gz=zlib -fno-merge-debug-strings -O2";
    let probe = sb.path("probe");
    tree(&probe);
    sh_in(&probe, &format!("gcc {flags} -Iinc -c a.c -o a.o"));
    let raw = std::fs::read(probe.join("a.o")).unwrap();
    let at = probe.as_os_str().as_encoded_bytes();
    assert!(
        !raw.windows(at.len()).any(|w| w == at),
        "the location is in the raw bytes: this test would not test decompression"
    );
    let (hits, misses) = build_both(&sb, flags);
    assert_eq!((hits, misses), (0, 3));
}

#[test]
fn a_prefix_map_makes_debug_builds_move() {
    let sb = Sandbox::new();
    let (hits, misses) = build_both(&sb, "-g -O2 -ffile-prefix-map=$(CURDIR)=.");
    assert_eq!((hits, misses), (3, 0));
}

/// The case that makes relocation need a proof: a tree that reaches a
/// sibling directory with `..`. At another path, the same `..` reaches
/// another sibling, with another header: a hit would be a wrong object.
#[test]
fn a_climb_out_of_the_tree_is_never_relocated() {
    let sb = Sandbox::new();
    let (one, two) = two_trees(&sb);
    for (top, value) in [(sb.path("one"), 1), (sb.path("two/deeper"), 2)] {
        std::fs::create_dir_all(top.join("shared")).unwrap();
        std::fs::write(top.join("shared/v.h"), format!("#define V {value}\n")).unwrap();
    }
    let c = "#include \"../shared/v.h\"\nint v = V;\n";
    std::fs::write(one.join("v.c"), c).unwrap();
    std::fs::write(two.join("v.c"), c).unwrap();
    // Through an argument and through the source's own #include.
    for compile in ["gcc -I../shared -c v.c -o v.o", "gcc -c v.c -o v.o"] {
        sh_in(&two, compile);
        let plain = std::fs::read(two.join("v.o")).unwrap();
        sh_in(&two, "rm v.o");
        run_in(&sb, &one, compile);
        sb.zero_stats();
        run_in(&sb, &two, compile);
        assert_eq!(std::fs::read(two.join("v.o")).unwrap(), plain, "{compile}");
        assert_eq!(sb.counts().1, 1, "{compile}: must miss");
    }
}

/// A symbolic link outside the tree that leads into it: the compile at the
/// second tree reads the first tree's file through it.
#[test]
fn a_link_into_the_first_tree_is_never_relocated() {
    let sb = Sandbox::new();
    let (one, two) = two_trees(&sb);
    let link = sb.path("current");
    std::os::unix::fs::symlink(&one, &link).unwrap();
    let compile = format!("gcc -I{}/inc -c a.c -o a.o", link.display());
    run_in(&sb, &one, &compile);
    std::fs::write(
        one.join("inc/h.h"),
        "int h(int);\n#define CHANGED 1\nint changed;\n",
    )
    .unwrap();
    sh_in(&two, &compile);
    let plain = std::fs::read(two.join("a.o")).unwrap();
    sh_in(&two, "rm a.o");
    run_in(&sb, &one, &compile);
    sb.zero_stats();
    run_in(&sb, &two, &compile);
    assert_eq!(std::fs::read(two.join("a.o")).unwrap(), plain);
    assert_eq!(sb.counts().1, 1, "must miss");
}

/// The case: another user's or CI job's agent, with its own cache
/// directory and another environment, builds the same Debian source
/// package unpacked at another path, sharing only a memcached.
#[test]
fn lua_at_another_path_hits_through_a_shared_memcached() {
    let tarball = debian_tarball("lua5.4");
    let mc = servers::memcached();
    let url = format!("tcp://{}", mc.addr());
    let settings = [("CACHEFS_MEMCACHED", url.as_str())];
    let first = Sandbox::new();
    let second = Sandbox::new();
    let (a, b) = (first.path("work/lua"), second.path("ci/builds/7/lua-5.4"));
    for dir in [&a, &b] {
        std::fs::create_dir_all(dir).unwrap();
        sh_in(
            dir,
            &format!("tar xzf {} --strip-components=1", tarball.display()),
        );
    }
    sh_in(&b, "make -s -j2 linux >/dev/null 2>&1");
    let plain = artifacts(&b.join("src"));
    sh_in(&b, "make -s clean");

    start_agent(&first, &settings);
    run_in(
        &first,
        &a,
        "USER=alice HOME=/home/alice make -s -j2 linux >/dev/null",
    );
    wait_for_remote_writes(&first);
    start_agent(&second, &settings);
    let out = run_in(
        &second,
        &b,
        "HOME=/nonexistent USER=ci LOGNAME=ci HOSTNAME=runner-2 \
         CI_JOB_ID=8 GITHUB_RUN_ID=2 make -s -j2 linux >/dev/null",
    );
    let (hits, misses, unc, errors) = second.counts();
    assert_eq!((misses, unc, errors), (0, 0, 0), "{}", stderr(&out));
    assert_eq!(hits, 38, "34 objects, ar, ranlib, two links");
    assert_eq!(second.stats()["remote_hits"].as_u64(), Some(38));
    assert_eq!(artifacts(&b.join("src")), plain);
}

const CMAKE: &str = "cmake_minimum_required(VERSION 3.16)\nproject(demo C)\n\
add_library(h STATIC a.c)\ntarget_include_directories(h PUBLIC inc)\n\
add_executable(prog b.c)\ntarget_link_libraries(prog h)\n";

/// CMake + Ninja: absolute paths in every command line and in the depfiles
/// the compiles write. `cflags` may use `DIR` for the tree's path.
fn cmake_both(sb: &Sandbox, cflags: &str) -> (u64, u64) {
    let (one, two) = two_trees(sb);
    let configure = |dir: &Path| {
        std::fs::write(dir.join("CMakeLists.txt"), CMAKE).unwrap();
        let flags = cflags.replace("DIR", &dir.to_string_lossy());
        sh_in(
            dir,
            &format!("cmake -S . -B build -G Ninja -DCMAKE_C_FLAGS='{flags}' >/dev/null"),
        );
    };
    configure(&one);
    configure(&two);
    let objects = |dir: &Path| {
        [
            "build/CMakeFiles/h.dir/a.c.o",
            "build/CMakeFiles/prog.dir/b.c.o",
            "build/prog",
        ]
        .iter()
        .map(|n| std::fs::read(dir.join(n)).unwrap())
        .collect::<Vec<_>>()
    };
    sh_in(&two, "cmake --build build >/dev/null");
    let plain = objects(&two);
    sh_in(&two, "cmake --build build --target clean >/dev/null");
    run_in(sb, &one, "cmake --build build >/dev/null");
    sb.zero_stats();
    run_in(sb, &two, "cmake --build build >/dev/null");
    assert_eq!(objects(&two), plain, "{cflags}: differs from a plain build");
    let (hits, misses, _, _) = sb.counts();
    (hits, misses)
}

#[test]
fn cmake_with_a_prefix_map_hits_at_another_path() {
    require("cmake");
    require("ninja");
    let sb = Sandbox::new();
    // Two compiles, the archive (ar, ranlib) and the link.
    let (hits, misses) = cmake_both(&sb, "-g -ffile-prefix-map=DIR=.");
    assert_eq!((hits, misses), (5, 0));
}

#[test]
fn cmake_with_debug_info_and_no_prefix_map_misses_with_correct_objects() {
    require("cmake");
    require("ninja");
    let sb = Sandbox::new();
    let (hits, misses) = cmake_both(&sb, "-g");
    assert_eq!(hits, 0, "{misses} misses");
}

/// A depfile names every header by its absolute path: it is kept with the
/// root marked and written at a hit as gcc writes it there, line breaks
/// included (the second tree's longer path moves them).
#[test]
fn a_depfile_naming_the_tree_is_written_for_the_tree_it_lands_in() {
    let sb = Sandbox::new();
    let (one, two) = two_trees(&sb);
    let compile = "gcc -MD -MP -MF a.d -I$PWD/inc -ffile-prefix-map=$PWD=. -c $PWD/a.c -o a.o \
                   && gcc -MD -MF b.d -I$PWD/inc -c $PWD/b.c -o b.o";
    sh_in(&two, compile);
    let plain: Vec<_> = ["a.d", "a.o", "b.d", "b.o"]
        .iter()
        .map(|n| std::fs::read(two.join(n)).unwrap())
        .collect();
    assert!(String::from_utf8_lossy(&plain[0]).contains(&*two.to_string_lossy()));
    sh_in(&two, "rm a.d a.o b.d b.o");
    run_in(&sb, &one, compile);
    sb.zero_stats();
    run_in(&sb, &two, compile);
    let built: Vec<_> = ["a.d", "a.o", "b.d", "b.o"]
        .iter()
        .map(|n| std::fs::read(two.join(n)).unwrap())
        .collect();
    assert_eq!(built, plain);
    assert_eq!(
        sb.counts().0,
        2,
        "both hit: neither object carries the path"
    );
}

/// A build started in a build directory that reaches the sources with
/// `..`: the run's directory as root would see a climb out of the tree (and
/// pin every result); `CACHEFS_BASEDIR` (ccache's `base_dir`) names the
/// tree's top, and the build hits at another path.
#[test]
fn a_base_dir_takes_in_what_a_build_directory_reaches_with_dotdot() {
    let sb = Sandbox::new();
    let (one, two) = two_trees(&sb);
    let compile = "gcc -O2 -I../inc -c ../a.c -o a.o";
    for dir in [&one, &two] {
        std::fs::create_dir_all(dir.join("build")).unwrap();
    }
    sh_in(&two.join("build"), compile);
    let plain = std::fs::read(two.join("build/a.o")).unwrap();
    for (base, hits) in [(false, 0), (true, 1)] {
        for dir in [&one, &two] {
            let _ = std::fs::remove_file(dir.join("build/a.o"));
        }
        let script = |dir: &Path| match base {
            true => format!("CACHEFS_BASEDIR={} {compile}", dir.display()),
            false => compile.to_string(),
        };
        run_in(&sb, &one.join("build"), &script(&one));
        sb.zero_stats();
        run_in(&sb, &two.join("build"), &script(&two));
        assert_eq!(std::fs::read(two.join("build/a.o")).unwrap(), plain);
        assert_eq!(sb.counts().0, hits, "CACHEFS_BASEDIR set: {base}");
    }
}

/// The tree reached through a symbolic link: gcc writes the logical path
/// (`PWD`) as the object's directory, which holds no physical spelling of
/// the root; it is looked for too.
#[test]
fn debug_info_through_a_symlinked_directory_is_still_found() {
    let sb = Sandbox::new();
    let (one, two) = two_trees(&sb);
    let alias = sb.path("alias");
    std::os::unix::fs::symlink(&one, &alias).unwrap();
    let make = "make -s CC=gcc CFLAGS=-g";
    sh_in(&two, make);
    let plain = outputs(&two);
    sh_in(&two, "make -s clean");
    run_in(&sb, &one, &format!("cd {} && {make}", alias.display()));
    let object = std::fs::read(one.join("a.o")).unwrap();
    let logical = alias.as_os_str().as_encoded_bytes();
    assert!(
        object.windows(logical.len()).any(|w| w == logical),
        "gcc did not write the logical path: this test would not test it"
    );
    sb.zero_stats();
    run_in(&sb, &two, make);
    assert_eq!(outputs(&two), plain);
    assert_eq!(sb.counts().0, 0, "no hit: the first tree's objects name it");
}
