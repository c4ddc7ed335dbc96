//! rustc argument lists and rustc's crate search.
//!
//! rustc lists every library search path (`-L [KIND=]DIR`) once and, for each
//! crate it must load, considers the names in those listings that start with
//! `lib<crate>` and end in `.rlib`, `.rmeta` or `.so`; it opens each and
//! rejects those whose metadata names another crate or another hash. A
//! successful compile therefore depended only on the names of each search
//! directory that belong to a crate it loaded, not on the whole listing that
//! cargo keeps changing while it builds other crates in parallel.
//!
//! Crates that rustc loads as dependencies of another crate are looked up by
//! name *and* hash (SVH), so a new file for such a crate is rejected unless it
//! is that very crate. The crates it looks up by name alone are those named
//! on the command line or in `extern crate`, and those it injects (std, core,
//! the panic runtime, …). The sysroot's other crates (libc, memchr,
//! hashbrown, … as std's own dependencies) share names with crates.io crates
//! that cargo writes into `target/debug/deps` at unpredictable moments:
//! counting them would turn every parallel build into misses, and they cannot
//! change the result, so only the by-name sysroot crates count.

use std::path::{Path, PathBuf};

pub fn uncacheable_reason(args: &[Vec<u8>]) -> Option<&'static str> {
    if codegen_options(args).any(|o| o.starts_with(b"incremental")) {
        return Some("rustc: -C incremental");
    }
    if args.iter().any(|a| a == b"-") {
        return Some("rustc: source read from stdin (a probe such as --print)");
    }
    None
}

/// The values of `-C OPT`, `-COPT` and `--codegen OPT` / `--codegen=OPT`.
fn codegen_options(args: &[Vec<u8>]) -> impl Iterator<Item = &[u8]> {
    option_values(args, &[b"-C", b"--codegen"])
}

/// Values of a rustc option given as `NAME VALUE`, `NAMEVALUE` (short
/// options) or `NAME=VALUE` (long options).
fn option_values<'a>(
    args: &'a [Vec<u8>],
    names: &'a [&'a [u8]],
) -> impl Iterator<Item = &'a [u8]> + 'a {
    args.iter().enumerate().filter_map(move |(i, a)| {
        names.iter().find_map(|name| {
            if a == name {
                args.get(i + 1).map(|v| v.as_slice())
            } else if name.starts_with(b"--") {
                a.strip_prefix(*name)?.strip_prefix(b"=")
            } else {
                a.strip_prefix(*name).filter(|v| !v.is_empty())
            }
        })
    })
}

/// The library search directories of a rustc call, absolute (relative ones
/// are taken from `cwd`, as rustc does).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SearchDirs {
    /// Searched for crates named on the command line, in `extern crate` or
    /// injected (std): by name, so a new candidate can change the result.
    pub by_name: Vec<PathBuf>,
    /// `-L dependency=DIR`: rustc searches these only for the dependencies
    /// of crates it loaded, each by name *and* SVH, so a new file there is
    /// rejected unless it is the very crate already found; the files rustc
    /// did read are dependencies on their own.
    pub by_hash: Vec<PathBuf>,
}

pub fn search_dirs(args: &[Vec<u8>], cwd: &Path) -> SearchDirs {
    use std::os::unix::ffi::OsStrExt;
    let mut dirs = SearchDirs::default();
    for v in option_values(args, &[b"-L"]) {
        // `-L KIND=DIR`; a path may contain '=' only after a kind.
        let (kind, dir) = match v.iter().position(|&b| b == b'=') {
            Some(i) if is_search_kind(&v[..i]) => (&v[..i], &v[i + 1..]),
            _ => (&b"all"[..], v),
        };
        let dir = cwd.join(std::ffi::OsStr::from_bytes(dir));
        match kind {
            b"dependency" => dirs.by_hash.push(dir),
            _ => dirs.by_name.push(dir),
        }
    }
    dirs
}

fn is_search_kind(kind: &[u8]) -> bool {
    matches!(
        kind,
        b"dependency" | b"crate" | b"native" | b"framework" | b"all"
    )
}

/// Sysroot crates that rustc looks up by name rather than by hash.
const SYSROOT_BY_NAME: &[&[u8]] = &[
    b"libstd",
    b"libcore",
    b"liballoc",
    b"libproc_macro",
    b"libtest",
    b"libcompiler_builtins",
    b"libpanic_unwind",
    b"libpanic_abort",
    b"libprofiler_builtins",
];

/// The stem of a crate file the compile opened, if a new candidate for that
/// crate in a search directory could change the compile's result.
pub fn loaded_crate_stem(path: &Path) -> Option<&[u8]> {
    use std::os::unix::ffi::OsStrExt;
    let stem = crate_stem(path.file_name()?.as_bytes())?;
    let in_sysroot = path
        .parent()
        .is_some_and(|dir| dir.components().any(|c| c.as_os_str() == "rustlib"));
    (!in_sysroot || SYSROOT_BY_NAME.contains(&stem)).then_some(stem)
}

/// `lib<crate>` for a crate file name `lib<crate>[-extra].{rlib,rmeta,so}`:
/// the prefix under which rustc found that crate. Crate names contain
/// neither '-' nor '.', so the stem ends at the first of them.
pub fn crate_stem(file_name: &[u8]) -> Option<&[u8]> {
    if !file_name.starts_with(b"lib") || !is_crate_file(file_name) {
        return None;
    }
    let end = file_name
        .iter()
        .position(|&b| b == b'-' || b == b'.')
        .unwrap_or(file_name.len());
    (end > 3).then(|| &file_name[..end])
}

fn is_crate_file(name: &[u8]) -> bool {
    [&b".rlib"[..], b".rmeta", b".so"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// The candidate a search-directory entry stands for, if it belongs to one
/// of `stems`: the name without its extension, so that a crate's `.rmeta`
/// and `.rlib` (written moments apart by one compile; cargo starts dependents
/// after the first) count as one candidate. Other crates' files (even
/// `libfoo_bar` for stem `libfoo`, which rustc opens but rejects by crate
/// name) are not part of the state.
pub fn candidate<'a>(name: &'a [u8], stems: &[Vec<u8>]) -> Option<&'a [u8]> {
    if !is_crate_file(name) {
        return None;
    }
    let stem = crate_stem(name)?;
    stems.iter().any(|s| s == stem).then(|| {
        let dot = name.iter().rposition(|&b| b == b'.').unwrap_or(name.len());
        &name[..dot]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<Vec<u8>> {
        a.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn incremental_in_every_spelling() {
        for a in [
            &["-C", "incremental=/t/incr"][..],
            &["-Cincremental=/t"],
            &["--codegen", "incremental=/t"],
            &["--codegen=incremental=/t"],
        ] {
            assert_eq!(
                uncacheable_reason(&args(a)),
                Some("rustc: -C incremental"),
                "{a:?}"
            );
        }
        assert_eq!(uncacheable_reason(&args(&["-C", "opt-level=0"])), None);
        assert_eq!(
            uncacheable_reason(&args(&["-", "--crate-name", "___"])),
            Some("rustc: source read from stdin (a probe such as --print)")
        );
    }

    #[test]
    fn search_dirs_of_every_form() {
        let a = args(&[
            "-L",
            "dependency=/t/deps",
            "-Lnative=out",
            "-L",
            "/plain",
            "-L",
            "weird=dir",
            "--crate-name",
            "x",
        ]);
        let dirs = search_dirs(&a, Path::new("/w"));
        assert_eq!(dirs.by_hash, [PathBuf::from("/t/deps")]);
        assert_eq!(
            dirs.by_name,
            [
                PathBuf::from("/w/out"),
                "/plain".into(),
                "/w/weird=dir".into()
            ]
        );
    }

    #[test]
    fn stems_and_candidates() {
        assert_eq!(crate_stem(b"libserde-1a2b.rmeta"), Some(&b"libserde"[..]));
        assert_eq!(crate_stem(b"libstd.so"), Some(&b"libstd"[..]));
        assert_eq!(crate_stem(b"serde-1a2b.d"), None);
        assert_eq!(crate_stem(b"libfoo-1.d"), None);
        let stems = vec![b"libserde".to_vec()];
        assert_eq!(
            candidate(b"libserde-1a2b.rlib", &stems),
            Some(&b"libserde-1a2b"[..])
        );
        assert_eq!(
            candidate(b"libserde-1a2b.rmeta", &stems),
            candidate(b"libserde-1a2b.rlib", &stems)
        );
        assert_eq!(candidate(b"libserde_json-9.rlib", &stems), None);
        assert_eq!(candidate(b"libserde-1a2b.d", &stems), None);
    }

    #[test]
    fn sysroot_crates_count_only_when_loaded_by_name() {
        let sysroot = Path::new("/r/lib/rustlib/x86_64-unknown-linux-gnu/lib");
        let stem = |p: &Path| loaded_crate_stem(p).map(|s| String::from_utf8_lossy(s).into_owned());
        assert_eq!(
            stem(&sysroot.join("libstd-9z.rlib")).as_deref(),
            Some("libstd")
        );
        assert_eq!(stem(&sysroot.join("liblibc-8y.rlib")), None);
        assert_eq!(
            stem(Path::new("/p/target/debug/deps/liblibc-7x.rmeta")).as_deref(),
            Some("liblibc")
        );
    }
}
