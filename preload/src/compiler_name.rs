//! Which program names are compilers, and which are the archivers cached like them. Only the name
//! decides (argv is irrelevant), and the name is the basename of the path as exec'd, not of its
//! symlink target: `/usr/bin/cc` matches as `cc`.

/// How the cache treats a program (the root crate's `compiler` module
/// holds what each family means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// gcc, clang and their C++ drivers.
    CFamily,
    Rustc,
    Nvcc,
    /// `ar` and `ranlib`: static-library steps, pure functions of the objects they read once
    /// `ar`'s deterministic mode (Debian's default) zeroes timestamps and owners, and as slow as
    /// a compile hit would be fast (they load the LTO plugins).
    Archiver,
}

/// Every program the shim diverts, by name stem, with its family: the one table of compiler
/// names. A stem matches as itself, with a version suffix (`gcc-12`, `llvm-ar-14`) and with a
/// target prefix (`x86_64-linux-gnu-gcc`, `gcc-ar`, `llvm-ar`).
const PROGRAMS: [(&[u8], Family); 10] = [
    (b"gcc", Family::CFamily),
    (b"g++", Family::CFamily),
    (b"cc", Family::CFamily),
    (b"c++", Family::CFamily),
    (b"clang", Family::CFamily),
    (b"clang++", Family::CFamily),
    (b"rustc", Family::Rustc),
    (b"nvcc", Family::Nvcc),
    (b"ar", Family::Archiver),
    (b"ranlib", Family::Archiver),
];

/// The family of a program name (a basename), or `None` for a program the shim leaves alone.
pub fn family_of_name(name: &[u8]) -> Option<Family> {
    let stem = strip_version(name);
    PROGRAMS
        .iter()
        .find(|(p, _)| stem == *p || is_prefixed(stem, p))
        .map(|&(_, family)| family)
}

/// What the shim diverts to the client: a compiler or an archiver.
pub fn is_cached_program_name(name: &[u8]) -> bool {
    family_of_name(name).is_some()
}

/// `ar`, `ranlib`, `gcc-ar`, `gcc-ranlib-12`, `llvm-ar-14`, `x86_64-linux-gnu-ar`: yes.
pub fn is_archiver_name(name: &[u8]) -> bool {
    family_of_name(name) == Some(Family::Archiver)
}

/// `gcc`, `gcc-12`, `clang++-14`, `x86_64-linux-gnu-gcc-12`, `aarch64-linux-gnu-g++`: yes.
/// `gcc-ar`, `cc1`, `collect2`, `as`, `ld`, `clang-cpp`, `clang-tidy`: no.
#[cfg(test)]
fn is_compiler_name(name: &[u8]) -> bool {
    family_of_name(name).is_some_and(|f| f != Family::Archiver)
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
    fn each_name_has_one_family() {
        for (name, family) in [
            ("gcc-12", Family::CFamily),
            ("x86_64-linux-gnu-g++", Family::CFamily),
            ("clang++-14", Family::CFamily),
            ("rustc", Family::Rustc),
            ("rustc-1.70", Family::Rustc),
            ("nvcc", Family::Nvcc),
            ("x86_64-linux-gnu-gcc-ar-12", Family::Archiver),
            ("llvm-ranlib-14", Family::Archiver),
        ] {
            assert_eq!(family_of_name(name.as_bytes()), Some(family), "{name}");
        }
        assert_eq!(family_of_name(b"rustc-wrapper"), None);
    }

    #[test]
    fn basename_is_last_component() {
        assert_eq!(basename(b"/usr/bin/cc"), b"cc");
        assert_eq!(basename(b"gcc"), b"gcc");
        assert_eq!(basename(b"dir/"), b"");
    }
}
