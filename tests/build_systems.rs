//! Real build systems under `cachefs run`: parallel make, cmake + ninja, and a
//! build that survives its agent being killed.

mod common;
use common::*;

/// A generated project: `n` translation units, each including a shared
/// header, plus a main that calls them all.
fn generate(sb: &Sandbox, n: usize) {
    sb.write("include/common.h", "#pragma once\nint twice(int);\n");
    let mut main = String::from("#include <stdio.h>\n#include \"common.h\"\n");
    let mut calls = String::new();
    for i in 0..n {
        sb.write(
            &format!("src/f{i}.c"),
            &format!("#include \"common.h\"\nint f{i}(int x) {{ return twice(x) + {i}; }}\n"),
        );
        main.push_str(&format!("int f{i}(int);\n"));
        calls.push_str(&format!("    sum += f{i}(1);\n"));
    }
    sb.write(
        "src/twice.c",
        "#include \"common.h\"\nint twice(int x) { return 2 * x; }\n",
    );
    main.push_str(&format!("int main(void)\n{{\n    long sum = 0;\n{calls}    printf(\"%ld\\n\", sum);\n    return 0;\n}}\n"));
    sb.write("src/main.c", &main);
}

fn expected_sum(n: usize) -> String {
    format!("{}\n", (0..n).map(|i| 2 + i).sum::<usize>())
}

#[test]
fn cmake_ninja_rebuild_is_all_hits() {
    require("cmake");
    require("ninja");
    let sb = Sandbox::new();
    generate(&sb, 24);
    sb.write(
        "CMakeLists.txt",
        "cmake_minimum_required(VERSION 3.13)\nproject(gen C)\nfile(GLOB SRCS src/*.c)\n\
         add_executable(gen ${SRCS})\ntarget_include_directories(gen PRIVATE include)\n",
    );
    sb.sh("cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null");
    sb.run_ok("cmake --build build -j2");
    assert_eq!(sb.sh("build/gen").stdout, expected_sum(24).as_bytes());
    sb.sh("ninja -C build -t clean >/dev/null");
    sb.zero_stats();
    let out = sb.run_ok("ninja -C build");
    let (hits, misses, unc, errors) = sb.counts();
    assert_eq!((misses, unc, errors), (0, 0, 0), "{}", stderr(&out));
    assert_eq!(hits, 27, "24 units + twice.c + main.c + link");
    assert_eq!(sb.sh("build/gen").stdout, expected_sum(24).as_bytes());
}

/// CMake's static libraries: its Makefiles and ninja both remove the
/// archive, run `ar qc` and then `ranlib`; both steps hit on a rebuild, and
/// the archive is the plain build's, byte for byte.
#[test]
fn cmake_static_libraries_hit_with_both_generators() {
    require("cmake");
    require("ninja");
    for (generator, clean) in [
        ("Ninja", "ninja -C build -t clean"),
        ("Unix Makefiles", "make -s -C build clean"),
    ] {
        let sb = Sandbox::new();
        generate(&sb, 8);
        sb.write(
            "CMakeLists.txt",
            "cmake_minimum_required(VERSION 3.13)\nproject(gen C)\n\
             file(GLOB LIB_SRCS src/f*.c src/twice.c)\nadd_library(parts STATIC ${LIB_SRCS})\n\
             target_include_directories(parts PUBLIC include)\n\
             add_executable(gen src/main.c)\ntarget_link_libraries(gen parts)\n",
        );
        sb.sh(&format!(
            "cmake -S . -B build -G '{generator}' -DCMAKE_BUILD_TYPE=Release >/dev/null"
        ));
        sb.sh("cmake --build build >/dev/null");
        let plain = sb.read("build/libparts.a");
        sb.sh(&format!("{clean} >/dev/null"));
        sb.run_ok("cmake --build build");
        assert_eq!(sb.read("build/libparts.a"), plain, "{generator}: cold");
        sb.sh(&format!("{clean} >/dev/null"));
        sb.zero_stats();
        let out = sb.run_ok("cmake --build build");
        let s = sb.stats();
        assert_eq!(
            (s["misses"].as_u64(), s["uncacheable"].as_u64()),
            (Some(0), Some(0)),
            "{generator}: {}",
            stderr(&out)
        );
        assert_eq!(
            s["languages"]["archive"]["hits"], 2,
            "{generator}: ar qc and ranlib: {s}"
        );
        assert_eq!(sb.read("build/libparts.a"), plain, "{generator}: warm");
        assert_eq!(sb.sh("build/gen").stdout, expected_sum(8).as_bytes());
    }
}

#[test]
fn build_completes_when_the_agent_is_killed_midway() {
    let sb = Sandbox::new();
    generate(&sb, 30);
    sb.write(
        "Makefile",
        "SRCS := $(wildcard src/*.c)\nOBJS := $(SRCS:.c=.o)\nprog: $(OBJS)\n\tgcc -o $@ $^\n\
         src/%.o: src/%.c\n\tgcc -O2 -Iinclude -c $< -o $@\n",
    );
    let cache = sb.cache.clone();
    let killer = std::thread::spawn(move || {
        // Wait until some compiles went through the agent, then kill it.
        let pid_file = cache.join("agent.pid");
        for _ in 0..200 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            if let Ok(pid) = std::fs::read_to_string(&pid_file) {
                std::thread::sleep(std::time::Duration::from_millis(400));
                let _ = std::process::Command::new("kill")
                    .args(["-9", pid.trim()])
                    .status();
                return true;
            }
        }
        false
    });
    let out = sb.run("make -j2");
    assert!(killer.join().unwrap(), "the agent never wrote its pid");
    eprintln!("build with the agent killed:\n{}", stderr(&out));
    assert!(
        out.status.success(),
        "build failed after the agent died: {}",
        stderr(&out)
    );
    assert_eq!(sb.sh("./prog").stdout, expected_sum(30).as_bytes());
    // Compiled uncached from then on, said once.
    assert!(
        stderr(&out).matches("compiling without the cache").count() <= 1,
        "{}",
        stderr(&out)
    );
    // The next run starts a fresh agent, cleans the dead mount, and caches again.
    sb.sh("rm -f src/*.o prog");
    sb.run_ok("make -j2");
    sb.sh("rm -f src/*.o prog");
    sb.zero_stats();
    sb.run_ok("make -j2");
    assert_eq!(
        sb.counts(),
        (33, 0, 0, 0),
        "30 units + twice.c + main.c + link"
    );
    assert_eq!(sb.sh("./prog").stdout, expected_sum(30).as_bytes());
}

#[test]
fn cmake_compiler_launcher_mode_caches_without_run() {
    let sb = Sandbox::new();
    generate(&sb, 6);
    sb.write(
        "CMakeLists.txt",
        "cmake_minimum_required(VERSION 3.13)\nproject(gen C)\nfile(GLOB SRCS src/*.c)\n\
         add_executable(gen ${SRCS})\ntarget_include_directories(gen PRIVATE include)\n",
    );
    let launcher = cachefs_bin();
    let env = format!("CACHEFS_DIR={}", sb.cache.display());
    sb.sh(&format!(
        "cmake -S . -B build -G Ninja -DCMAKE_C_COMPILER_LAUNCHER={} >/dev/null",
        launcher.display()
    ));
    sb.sh(&format!("{env} ninja -C build >/dev/null"));
    sb.sh("ninja -C build -t clean >/dev/null");
    sb.zero_stats();
    sb.sh(&format!("{env} ninja -C build >/dev/null"));
    let (hits, misses, _, errors) = sb.counts();
    assert_eq!(
        (hits, misses, errors),
        (8, 0, 0),
        "6 units + twice.c + main.c hit; the link has no launcher"
    );
    assert_eq!(sb.sh("build/gen").stdout, expected_sum(6).as_bytes());
}
