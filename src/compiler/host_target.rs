//! Arguments that make a compile target the machine it runs on:
//! `-march=native`, `-mcpu=native`, `-mtune=native` (gcc, clang, also passed
//! through nvcc's `-Xcompiler`) and rustc's `-C target-cpu=native`. The
//! compiler asks the CPU itself (cpuid), which no file access shows, so the
//! same argv gives other code on another CPU: a cache shared between
//! machines (memcached, Redis, an NFS cache directory) would hand one CPU's
//! object to another (ccache issue #824, sccache #2140). Such a compile's
//! key1 includes the host CPU's identity. nvcc's `-arch=native` picks the
//! GPUs present, which the driver reports through /dev (not mirrored): not
//! cached at all.

use std::sync::OnceLock;

const HOST_CPU_FLAGS: [&[u8]; 4] = [
    b"-march=native",
    b"-mcpu=native",
    b"-mtune=native",
    b"target-cpu=native",
];

/// Whether any argument asks for the host CPU (also inside a combined
/// argument such as `-Xcompiler=-O2,-march=native`).
pub fn targets_host_cpu(args: &[Vec<u8>]) -> bool {
    args.iter().any(|a| {
        HOST_CPU_FLAGS
            .iter()
            .any(|flag| a.windows(flag.len()).any(|w| w == *flag))
    })
}

/// nvcc `-arch=native`, `-arch native`, `--gpu-architecture[=| ]native`.
pub fn targets_host_gpu(args: &[Vec<u8>]) -> bool {
    let is_arch = |a: &[u8]| a == b"-arch" || a == b"--gpu-architecture";
    args.iter().enumerate().any(|(i, a)| {
        a == b"-arch=native"
            || a == b"--gpu-architecture=native"
            || (is_arch(a) && args.get(i + 1).is_some_and(|n| n == b"native"))
    })
}

/// The lines of /proc/cpuinfo's first processor that decide what `native`
/// means: model and features (x86 and Arm names). Per-core and changing
/// values (MHz, core ids, bogomips) are left out.
const IDENTITY_FIELDS: &[&str] = &[
    "vendor_id",
    "cpu family",
    "model",
    "model name",
    "stepping",
    "cache size",
    "flags",
    "CPU implementer",
    "CPU architecture",
    "CPU variant",
    "CPU part",
    "CPU revision",
    "Features",
];

/// A hash of this machine's CPU model and features, or `None` when
/// /proc/cpuinfo cannot be read (then such compiles are not cached).
pub fn host_cpu_identity() -> Option<[u8; 32]> {
    static IDENTITY: OnceLock<Option<[u8; 32]>> = OnceLock::new();
    *IDENTITY.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        identity_of(&text)
    })
}

fn identity_of(cpuinfo: &str) -> Option<[u8; 32]> {
    let first = cpuinfo.split("\n\n").next()?;
    let mut h = blake3::Hasher::new();
    let mut fields = 0;
    for line in first.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if IDENTITY_FIELDS.contains(&key.trim()) {
            h.update(key.trim().as_bytes());
            h.update(b"=");
            h.update(value.trim().as_bytes());
            h.update(b"\n");
            fields += 1;
        }
    }
    (fields > 0).then(|| *h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn native_cpu_flags_are_found_wherever_they_are() {
        assert!(targets_host_cpu(&v(&["-O2", "-march=native", "-c", "a.c"])));
        assert!(targets_host_cpu(&v(&["-Xcompiler=-O2,-mtune=native"])));
        assert!(targets_host_cpu(&v(&["-C", "target-cpu=native"])));
        assert!(targets_host_cpu(&v(&["-Ctarget-cpu=native"])));
        assert!(!targets_host_cpu(&v(&[
            "-march=x86-64-v3",
            "-mtune=generic"
        ])));
        assert!(targets_host_gpu(&v(&["-arch=native", "-c", "k.cu"])));
        assert!(targets_host_gpu(&v(&["-arch", "native"])));
        assert!(targets_host_gpu(&v(&["--gpu-architecture=native"])));
        assert!(!targets_host_gpu(&v(&["-arch=sm_80", "native.cu"])));
    }

    #[test]
    fn identity_is_the_model_and_features_not_the_clock() {
        let a = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 85\ncpu MHz\t\t: 2000.1\nflags\t\t: fpu sse2 avx2\n\nprocessor\t: 1\n";
        let b = a.replace("2000.1", "3100.0");
        let c = a.replace("avx2", "avx2 avx512f");
        assert_eq!(identity_of(a), identity_of(&b));
        assert_ne!(identity_of(a), identity_of(&c));
        assert!(identity_of("nothing useful").is_none());
        assert!(
            host_cpu_identity().is_some(),
            "this machine's /proc/cpuinfo"
        );
    }
}
