//! Which program names are compilers, and which are the archivers cached like them. Only the name
//! decides (argv is irrelevant), and the name is the basename of the path as exec'd, not of its
//! symlink target: `/usr/bin/cc` matches as `cc`.

const COMPILERS: [&[u8]; 8] = [
    b"gcc", b"g++", b"cc", b"c++", b"clang", b"clang++", b"rustc", b"nvcc",
];

/// Static-library steps: pure functions of the objects they read once `ar`'s deterministic mode
/// (Debian's default) zeroes timestamps and owners, and as slow as a compile hit would be fast
/// (they load the LTO plugins). `gcc-ar`, `llvm-ar` and target-prefixed names match by prefix.
const ARCHIVERS: [&[u8]; 2] = [b"ar", b"ranlib"];

/// What the shim diverts to the client: a compiler or an archiver.
pub fn is_cached_program_name(name: &[u8]) -> bool {
    is_compiler_name(name) || is_archiver_name(name)
}

/// `ar`, `ranlib`, `gcc-ar`, `gcc-ranlib-12`, `llvm-ar-14`, `x86_64-linux-gnu-ar`: yes.
pub fn is_archiver_name(name: &[u8]) -> bool {
    let stem = strip_version(name);
    ARCHIVERS.iter().any(|a| stem == *a || is_prefixed(stem, a))
}

/// `gcc`, `gcc-12`, `clang++-14`, `x86_64-linux-gnu-gcc-12`, `aarch64-linux-gnu-g++`: yes.
/// `gcc-ar`, `cc1`, `collect2`, `as`, `ld`, `clang-cpp`, `clang-tidy`: no.
pub fn is_compiler_name(name: &[u8]) -> bool {
    let stem = strip_version(name);
    COMPILERS.iter().any(|c| stem == *c || is_prefixed(stem, c))
}

/// The last path component (the whole string when it has no '/').
pub fn basename(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// A target-triple prefix: `<something>-<compiler>`.
fn is_prefixed(stem: &[u8], compiler: &[u8]) -> bool {
    stem.len() > compiler.len() + 1
        && stem.ends_with(compiler)
        && stem[stem.len() - compiler.len() - 1] == b'-'
}

fn strip_version(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b'-') {
        Some(i) if is_version(&name[i + 1..]) => &name[..i],
        _ => name,
    }
}

fn is_version(s: &[u8]) -> bool {
    s.first().is_some_and(u8::is_ascii_digit) && s.iter().all(|&b| b.is_ascii_digit() || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compilers_match() {
        for name in [
            "gcc",
            "g++",
            "cc",
            "c++",
            "clang",
            "clang++",
            "rustc",
            "nvcc",
            "gcc-12",
            "gcc-12.2.0",
            "g++-12",
            "clang-14",
            "clang++-14",
            "cc-12",
            "rustc-1.70",
            "x86_64-linux-gnu-gcc",
            "x86_64-linux-gnu-gcc-12",
            "aarch64-linux-gnu-g++",
            "aarch64-linux-gnu-g++-12",
            "x86_64-pc-linux-gnu-clang",
            "arm-none-eabi-gcc-12.2.1",
        ] {
            assert!(
                is_compiler_name(name.as_bytes()),
                "{name} should be a compiler"
            );
        }
    }

    #[test]
    fn tools_do_not_match() {
        for name in [
            "",
            "-",
            "gcc-",
            "-gcc",
            "gcc-ar",
            "gcc-nm",
            "gcc-ranlib",
            "gcc-ar-12",
            "x86_64-linux-gnu-gcc-ar-12",
            "cc1",
            "cc1plus",
            "collect2",
            "as",
            "ld",
            "clang-cpp",
            "clang-tidy",
            "clang-format-14",
            "ccache",
            "distcc",
            "gccgo",
            "rustdoc",
            "rustc-wrapper",
            "nvcc.profile",
            "gcc12",
            "gcc-12-",
            "gcc-x12",
            "true",
            "sh",
        ] {
            assert!(
                !is_compiler_name(name.as_bytes()),
                "{name} should not be a compiler"
            );
        }
    }

    #[test]
    fn archivers_match_and_are_not_compilers() {
        for name in [
            "ar",
            "ranlib",
            "gcc-ar",
            "gcc-ranlib",
            "gcc-ar-12",
            "x86_64-linux-gnu-gcc-ar-12",
            "x86_64-linux-gnu-ar",
            "llvm-ar",
            "llvm-ar-14",
            "llvm-ranlib-14",
        ] {
            assert!(is_archiver_name(name.as_bytes()), "{name} is an archiver");
            assert!(is_cached_program_name(name.as_bytes()));
            assert!(!is_compiler_name(name.as_bytes()));
        }
        for name in [
            "tar", "jar", "ar-", "arx", "ranlibs", "nm", "gcc-nm", "as", "true",
        ] {
            assert!(!is_archiver_name(name.as_bytes()), "{name} is no archiver");
            assert!(!is_cached_program_name(name.as_bytes()));
        }
        assert!(is_cached_program_name(b"gcc-12"));
    }

    #[test]
    fn basename_is_last_component() {
        assert_eq!(basename(b"/usr/bin/cc"), b"cc");
        assert_eq!(basename(b"gcc"), b"gcc");
        assert_eq!(basename(b"dir/"), b"");
    }
}
