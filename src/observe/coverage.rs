//! Which paths a compile's view observes: everything under the top-level
//! directories it binds the mirror over. The rest (/proc, /sys, /dev, /run,
//! files at the top of /, a top-level directory made after the agent
//! started) is the real file system, unseen: a compile that writes there
//! would be stored without that output, and one that reads there would be
//! keyed without that input. So a call that works in such a place (its
//! directory, a path in its arguments or in a compiler's path variable), or
//! whose compile followed a symlink there, is not cached.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Variables gcc, clang and nvcc read paths from (lists split on `:`; the
/// dependency-output ones name a file, then a target).
const PATH_VARIABLES: &[&str] = &[
    "CPATH",
    "C_INCLUDE_PATH",
    "CPLUS_INCLUDE_PATH",
    "OBJC_INCLUDE_PATH",
    "LIBRARY_PATH",
    "COMPILER_PATH",
    "GCC_EXEC_PREFIX",
    "DEPENDENCIES_OUTPUT",
    "SUNPRO_DEPENDENCIES",
];

/// Arguments whose value is a macro or a configuration string, not a path
/// the compile opens (`-DRUNDIR="/run"`).
/// Prefix maps and dependency-file target names are not accesses either.
const NOT_PATHS: &[&[u8]] = &[
    b"-D",
    b"-U",
    b"--cfg",
    b"--check-cfg",
    b"--env-set",
    b"-fdebug-prefix-map",
    b"-ffile-prefix-map",
    b"-fmacro-prefix-map",
    b"-fprofile-prefix-map",
    b"--remap-path-prefix",
    b"-MT",
    b"-MQ",
];

/// The statistics' reason (the text before the first colon).
pub const OUTSIDE: &str = "outside the observed tree";
const NOT_MIRRORED: &str = " (/proc, /sys, /dev, /run and the top of / are not mirrored)";

#[derive(Debug, Clone)]
pub struct Coverage {
    tops: Vec<Vec<u8>>,
}

impl Coverage {
    /// `tops`: the top-level directory names a view binds.
    pub fn new(tops: Vec<Vec<u8>>) -> Coverage {
        Coverage { tops }
    }

    /// The bound tops plus the symlinks at the top of / that lead into one
    /// (`/lib64 -> usr/lib64`): paths through them are observed.
    pub fn of_root(binds: &[Vec<u8>]) -> Coverage {
        let bound = Coverage::new(binds.to_vec());
        let mut tops = binds.to_vec();
        let links = std::fs::read_dir("/").into_iter().flatten().flatten();
        for entry in links.filter(|e| e.file_type().is_ok_and(|t| t.is_symlink())) {
            let Ok(target) = std::fs::read_link(entry.path()) else {
                continue;
            };
            if bound.covers(&Path::new("/").join(target).join("x")) {
                tops.push(entry.file_name().as_bytes().to_vec());
            }
        }
        Coverage { tops }
    }

    /// Whether the view observes `path` (absolute; `..` resolved lexically).
    /// `/dev/null` counts as observed: nothing written there is an output.
    pub fn covers(&self, path: &Path) -> bool {
        let path = normalize(path);
        if path == Path::new("/dev/null") {
            return true;
        }
        let mut parts = path.components();
        let (Some(Component::RootDir), Some(Component::Normal(top)), Some(_)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        self.tops.iter().any(|t| t.as_slice() == top.as_bytes())
    }

    /// A symlink the compile followed that leads out of the tree.
    pub fn link_outside(&self, link: &Path, target: &Path) -> Option<String> {
        let dir = link.parent().unwrap_or(Path::new("/"));
        let to = normalize(&dir.join(target));
        (!self.covers(&to)).then(|| {
            format!(
                "{OUTSIDE}: follows {} -> {}{NOT_MIRRORED}",
                link.display(),
                to.display()
            )
        })
    }

    /// Why a call must not be cached because it names a place the view
    /// does not observe, if it does.
    pub fn call_outside(
        &self,
        argv: &[Vec<u8>],
        cwd: &Path,
        env: &[(Vec<u8>, Vec<u8>)],
    ) -> Option<String> {
        if !self.covers(cwd) {
            return Some(format!(
                "{OUTSIDE}: works in {}{NOT_MIRRORED}",
                cwd.display()
            ));
        }
        let named = argument_paths(argv, cwd).chain(variable_paths(env, cwd));
        for path in named {
            if !self.covers(&path) {
                return Some(format!("{OUTSIDE}: names {}{NOT_MIRRORED}", path.display()));
            }
        }
        None
    }
}

/// The paths an argument list names: an argument that is not an option
/// (relative ones only when they climb out with `..`; the rest lie under
/// the working directory), and the absolute path inside an option
/// (`-o/run/a.o`, `-I/run/include`, `--out-dir=/run/x`).
fn argument_paths<'a>(argv: &'a [Vec<u8>], cwd: &'a Path) -> impl Iterator<Item = PathBuf> + 'a {
    let mut skip_next = false;
    argv.iter().skip(1).filter_map(move |a| {
        if std::mem::take(&mut skip_next) {
            return None;
        }
        if let Some(opt) = NOT_PATHS.iter().find(|p| a.starts_with(p)) {
            skip_next = a.len() == opt.len();
            return None;
        }
        let p = if a.starts_with(b"-") {
            // A glued path: from its first `/`, or from the `.`s before it
            // (`-I../include` names `../include`, not `/include`).
            let mut at = a.iter().position(|&b| b == b'/')?;
            while at > 1 && a[at - 1] == b'.' {
                at -= 1;
            }
            Path::new(OsStr::from_bytes(&a[at..]))
        } else {
            Path::new(OsStr::from_bytes(a))
        };
        if p.is_absolute() {
            Some(p.to_path_buf())
        } else {
            p.components()
                .any(|c| c == Component::ParentDir)
                .then(|| cwd.join(p))
        }
    })
}

fn variable_paths<'a>(
    env: &'a [(Vec<u8>, Vec<u8>)],
    cwd: &'a Path,
) -> impl Iterator<Item = PathBuf> + 'a {
    env.iter()
        .filter(|(k, _)| PATH_VARIABLES.iter().any(|v| v.as_bytes() == k.as_slice()))
        .flat_map(|(_, v)| v.split(|&b| b == b':' || b == b' '))
        .filter(|p| !p.is_empty())
        .map(move |p| cwd.join(OsStr::from_bytes(p)))
}

/// `path` with `.` and `..` resolved by name (symlinks are not followed:
/// the observation catches a followed symlink that leaves the tree).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coverage() -> Coverage {
        Coverage::new(vec![b"usr".to_vec(), b"tmp".to_vec(), b"home".to_vec()])
    }

    fn v(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn covers_paths_under_bound_tops_only() {
        let c = coverage();
        assert!(c.covers(Path::new("/usr/include/stdio.h")));
        assert!(c.covers(Path::new("/tmp/../usr/x")));
        assert!(c.covers(Path::new("/dev/null")));
        for outside in [
            "/run/a.o",
            "/dev/shm/x",
            "/proc/self/fd/3",
            "/top.h",
            "/",
            "/usr/../run/x",
        ] {
            assert!(!c.covers(Path::new(outside)), "{outside}");
        }
    }

    #[test]
    fn a_call_that_works_outside_the_tree_is_named() {
        let c = coverage();
        let cwd = Path::new("/home/p");
        let ok = |argv: &[&str]| c.call_outside(&v(argv), cwd, &[]).is_none();
        assert!(ok(&["gcc", "-c", "a.c", "-o", "a.o", "-I/usr/include/x"]));
        assert!(ok(&[
            "gcc",
            "-DRUNDIR=\"/run\"",
            "-D",
            "TTY=\"/dev/tty\"",
            "-c",
            "a.c"
        ]));
        assert!(ok(&["gcc", "-c", "a.c", "-o", "/dev/null"]));
        assert!(ok(&[
            "gcc",
            "-ffile-prefix-map=/build/x=.",
            "-MT",
            "/run/t.o",
            "-c",
            "a.c"
        ]));
        assert!(!ok(&["gcc", "-c", "a.c", "-o", "/run/a.o"]));
        assert!(!ok(&["gcc", "-c", "a.c", "-o/run/a.o"]));
        assert!(!ok(&["gcc", "-I/run/include", "-c", "a.c"]));
        // A glued relative path is relative: `-I../x` is /home/x, not /x.
        assert!(ok(&["gcc", "-I../include", "-c", "a.c"]));
        assert!(!ok(&["gcc", "-I../../../run/include", "-c", "a.c"]));
        assert!(!ok(&["gcc", "-c", "a.c", "-o", "../../../run/a.o"]));
        assert!(!ok(&["gcc", "-include", "/top.h", "-c", "a.c"]));
        assert!(!ok(&["gcc", "-E", "a.c", "-o", "/dev/tty"]));
        assert!(!ok(&["rustc", "--out-dir=/run/x", "a.rs"]));
        assert!(c
            .call_outside(&v(&["gcc", "-c", "a.c"]), Path::new("/run/p"), &[])
            .is_some());
        let env = vec![(b"CPATH".to_vec(), b"/usr/x:/run/include".to_vec())];
        assert!(c
            .call_outside(&v(&["gcc", "-c", "a.c"]), cwd, &env)
            .is_some());
        let env = vec![(b"PATH".to_vec(), b"/run/current-system/sw/bin".to_vec())];
        assert!(c
            .call_outside(&v(&["gcc", "-c", "a.c"]), cwd, &env)
            .is_none());
    }

    #[test]
    fn symlinks_out_of_the_tree_are_named() {
        let c = coverage();
        let l = |link: &str, target: &str| c.link_outside(Path::new(link), Path::new(target));
        assert!(l("/usr/lib/x.so", "x.so.1").is_none());
        assert!(l("/home/p/out", "../../tmp/o").is_none());
        assert!(l("/home/p/null", "/dev/null").is_none());
        assert!(l("/home/p/out", "/run/o").is_some());
        assert!(l("/home/var-run", "../run").is_some());
    }

    #[test]
    fn top_level_symlinks_into_bound_tops_are_covered() {
        // Debian: /lib64 -> usr/lib64, /bin -> usr/bin.
        let c = Coverage::of_root(&[b"usr".to_vec()]);
        for (link, inside) in [
            ("/lib64", "/lib64/ld-linux-x86-64.so.2"),
            ("/bin", "/bin/sh"),
        ] {
            if std::fs::symlink_metadata(link).is_ok_and(|m| m.file_type().is_symlink()) {
                assert!(c.covers(Path::new(inside)), "{inside}");
            }
        }
        assert!(!c.covers(Path::new("/run/x")));
    }
}
