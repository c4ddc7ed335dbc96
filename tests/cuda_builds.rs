//! nvcc under cachefs, with a real CUDA 13 nvcc from PyPI (scripts/setup-cuda.sh;
//! no GPU needed to compile). A whole nvcc call is one cached compile.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn nvcc() -> String {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-cuda.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/setup-cuda.sh failed: {}",
        stderr(&out)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn kernel(sb: &Sandbox, scale: &str) {
    sb.write("k.cuh", &format!("#define SCALE {scale}\n"));
    sb.write(
        "k.cu",
        "#include \"k.cuh\"\n__global__ void add(const float *a, float *c, int n) {\n  int i = blockIdx.x * blockDim.x + threadIdx.x;\n  if (i < n) c[i] = a[i] * SCALE;\n}\n",
    );
    sb.write(
        "main.cu",
        "#include <cstdio>\n#include \"k.cuh\"\n__global__ void k(float *x) { x[0] = SCALE; }\nint main() { printf(\"%g\\n\", (double)SCALE); return 0; }\n",
    );
}

#[test]
fn every_nvcc_output_kind_is_restored() {
    let nvcc = nvcc();
    let sb = Sandbox::new();
    kernel(&sb, "2.0f");
    std::fs::create_dir_all(sb.path("keep")).unwrap();
    let build = format!(
        "{n} -c k.cu -o k.o && {n} main.cu -o prog && {n} -MD -c k.cu -o kd.o && {n} --ptx k.cu -o k.ptx && \
         {n} --cubin -arch=sm_80 k.cu -o k.cubin && {n} -fatbin k.cu -o k.fatbin && \
         {n} -keep -keep-dir keep -c k.cu -o kk.o",
        n = nvcc
    );
    sb.run_ok(&build);
    let outputs = [
        "k.o", "prog", "kd.o", "kd.d", "k.ptx", "k.cubin", "k.fatbin", "kk.o",
    ];
    let first: Vec<Vec<u8>> = outputs.iter().map(|f| sb.read(f)).collect();
    let kept: Vec<String> = std::fs::read_dir(sb.path("keep"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!kept.is_empty(), "-keep wrote its intermediate files");
    sb.sh("rm -rf k.o prog kd.o kd.d k.ptx k.cubin k.fatbin kk.o keep/*");
    sb.zero_stats();
    sb.run_ok(&build);
    assert_eq!(
        sb.counts(),
        (7, 0, 0, 0),
        "each nvcc call is one compile, all hits"
    );
    let again: Vec<Vec<u8>> = outputs.iter().map(|f| sb.read(f)).collect();
    assert_eq!(first, again);
    for k in &kept {
        assert!(sb.path("keep").join(k).exists(), "-keep file {k} restored");
    }
    // The restored -keep files are what a plain nvcc writes, for every file two plain
    // runs agree on (some embed a temporary name or a random module id).
    let read_keep = || -> std::collections::BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(sb.path("keep"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    };
    let restored = read_keep();
    let plain_keep = || {
        sb.sh(&format!(
            "rm -rf kk.o keep/* && {nvcc} -keep -keep-dir keep -c k.cu -o kk.o"
        ));
        read_keep()
    };
    let (plain1, plain2) = (plain_keep(), plain_keep());
    assert_eq!(
        plain1.keys().collect::<Vec<_>>(),
        restored.keys().collect::<Vec<_>>(),
        "the restored -keep files are the plain run's"
    );
    let deterministic: Vec<&String> = plain1.keys().filter(|k| plain1[*k] == plain2[*k]).collect();
    assert!(
        deterministic.iter().any(|k| k.ends_with(".ptx"))
            && deterministic.iter().any(|k| k.ends_with(".cubin")),
        "the PTX and cubin -keep files are deterministic: {deterministic:?}"
    );
    for k in &deterministic {
        assert!(
            restored[*k] == plain1[*k],
            "-keep file {k} restored with other content than a plain nvcc writes"
        );
    }
    assert_eq!(sb.sh("./prog").stdout, b"2\n");
    // nvcc's temporary files are not outputs.
    let deps: serde_json::Value = serde_json::from_slice(
        &sb.cachefs()
            .args(["deps", "k.o", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(deps["written"]
        .as_array()
        .unwrap()
        .iter()
        .all(|w| !w.as_str().unwrap().contains("tmpxft")));
}

#[test]
fn header_source_and_arch_changes_miss_and_are_right() {
    let nvcc = nvcc();
    let sb = Sandbox::new();
    kernel(&sb, "2.0f");
    let build = format!("{nvcc} main.cu -o prog");
    sb.run_ok(&build);
    assert_eq!(sb.sh("./prog").stdout, b"2\n");
    sb.write("k.cuh", "#define SCALE 3.0f\n");
    sb.zero_stats();
    sb.run_ok(&build);
    assert_eq!(sb.counts().1, 1, "a changed .cuh misses");
    assert_eq!(sb.sh("./prog").stdout, b"3\n");
    sb.write(
        "main.cu",
        "#include <cstdio>\nint main() { printf(\"5\\n\"); return 0; }\n",
    );
    sb.run_ok(&build);
    assert_eq!(sb.sh("./prog").stdout, b"5\n");
    sb.run_ok(&format!("{nvcc} -arch=sm_80 -c k.cu -o a.o"));
    sb.run_ok(&format!("{nvcc} -arch=sm_90 -c k.cu -o a.o"));
    sb.run_ok(&format!(
        "{nvcc} -gencode arch=compute_75,code=sm_75 -c k.cu -o a.o"
    ));
    let (hits, misses, _, _) = sb.counts();
    assert_eq!((hits, misses), (0, 5));
    // -arch=native asks the driver for the GPUs present (through /dev, not
    // observed): run every time, never cached.
    sb.zero_stats();
    let native = format!("{nvcc} -arch=native -c k.cu -o n.o");
    sb.run_ok(&native);
    sb.run_ok(&native);
    assert_eq!(sb.counts(), (0, 0, 2, 0));
    let reasons = &sb.stats()["uncacheable_reasons"];
    assert_eq!(
        reasons["targets this machine's GPUs (-arch=native)"], 2,
        "{reasons}"
    );
}

#[test]
fn forty_cu_files_under_parallel_make_twice_all_hits() {
    let nvcc = nvcc();
    let sb = Sandbox::new();
    sb.write("common.cuh", "#pragma once\n#define F 3\n");
    for i in 0..40 {
        sb.write(
            &format!("src/k{i}.cu"),
            &format!("#include \"../common.cuh\"\n__global__ void k{i}(float *x) {{ x[threadIdx.x] *= F + {i}; }}\n"),
        );
    }
    sb.write(
        "Makefile",
        &format!(
            "NVCC := {nvcc}\nOBJS := $(patsubst %.cu,%.o,$(wildcard src/*.cu))\nall: $(OBJS)\n%.o: %.cu\n\t$(NVCC) -O2 -c $< -o $@\n"
        ),
    );
    for jobs in ["-j2", "-j8"] {
        sb.sh("rm -f src/*.o");
        sb.zero_stats();
        // -j8 on two cores: the parallel-build hang of other caches must not happen.
        let out = sb
            .cachefs()
            .args(["run", "make", "-s", jobs])
            .output()
            .unwrap();
        assert!(out.status.success(), "{jobs}: {}", stderr(&out));
        let first: Vec<Vec<u8>> = (0..40).map(|i| sb.read(&format!("src/k{i}.o"))).collect();
        sb.sh("rm -f src/*.o");
        sb.zero_stats();
        let out = sb
            .cachefs()
            .args(["run", "make", "-s", jobs])
            .output()
            .unwrap();
        assert!(out.status.success(), "{jobs}: {}", stderr(&out));
        assert_eq!(sb.counts(), (40, 0, 0, 0), "{jobs}");
        let again: Vec<Vec<u8>> = (0..40).map(|i| sb.read(&format!("src/k{i}.o"))).collect();
        assert_eq!(first, again);
        // A different flag for the -j8 round, so that it compiles for real.
        sb.sh("sed -i 's/-O2/-O3/' Makefile");
    }
}

#[test]
fn cmake_cuda_project_rebuilds_from_cache() {
    let nvcc = nvcc();
    let sb = Sandbox::new();
    kernel(&sb, "2.0f");
    sb.write(
        "main.cpp",
        "#include <cstdio>\nint main() { std::puts(\"app\"); return 0; }\n",
    );
    sb.write(
        "CMakeLists.txt",
        "cmake_minimum_required(VERSION 3.18)\nproject(x LANGUAGES CXX CUDA)\n\
         add_library(kern STATIC k.cu)\nadd_executable(app main.cpp)\ntarget_link_libraries(app kern)\n",
    );
    sb.sh(&format!(
        "cmake -S . -B build -G Ninja -DCMAKE_CUDA_COMPILER={nvcc} -DCMAKE_CUDA_ARCHITECTURES=75 >/dev/null"
    ));
    sb.run_ok("cmake --build build");
    sb.sh("ninja -C build -t clean >/dev/null");
    sb.zero_stats();
    let out = sb.run_ok("cmake --build build");
    let (hits, misses, unc, errors) = sb.counts();
    assert_eq!((misses, unc, errors), (0, 0, 0), "{}", stderr(&out));
    assert_eq!(
        hits, 5,
        "the CUDA object, the C++ object, ar, ranlib and the link hit"
    );
    assert_eq!(sb.sh("build/app").stdout, b"app\n");
}

/// nvcc's own variables change what it compiles: each is an input (nvcc
/// runs its steps through a shell, so its whole environment is keyed), and
/// the object is the one nvcc gives with that variable set (nvcc's objects
/// hold a random module id: compared by the kernels they define).
#[test]
fn nvcc_s_flag_variables_are_inputs() {
    let nvcc = nvcc();
    let sb = Sandbox::new();
    sb.write(
        "e.cu",
        "#ifdef EXTRA\n__global__ void extra(float *x) { x[0] = 2; }\n#endif\n__global__ void k(float *x) { x[0] = 1; }\n",
    );
    let has =
        |object: &[u8], symbol: &str| object.windows(symbol.len()).any(|w| w == symbol.as_bytes());
    let compile = |vars: &str| {
        sb.sh("rm -f e.o");
        sb.run_ok(&format!("{vars} {nvcc} -c e.cu -o e.o"));
        sb.read("e.o")
    };
    assert!(!has(&compile(""), "_Z5extraPf"));
    for (vars, extra) in [
        ("NVCC_PREPEND_FLAGS=-DEXTRA", true),
        ("NVCC_APPEND_FLAGS=-DEXTRA", true),
        ("NVCC_CCBIN=g++-12", false),
    ] {
        sb.zero_stats();
        let object = compile(vars);
        assert!(has(&object, "_Z1kPf"), "{vars}: not nvcc's object");
        assert_eq!(
            has(&object, "_Z5extraPf"),
            extra,
            "{vars}: the variable was not applied"
        );
        let (hits, misses, _, _) = sb.counts();
        assert_eq!((hits, misses), (0, 1), "{vars}: must miss");
    }
}
