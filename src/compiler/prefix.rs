//! The prefix command (ccache's `prefix_command`): a missed C/C++ compile
//! runs as `PREFIX… COMPILER ARGS…`, so that an existing compile farm
//! (`distcc`, `icecc`) compiles it. A hit never runs it.
//!
//! The prefix runs inside the compile's observation view, like the compiler:
//! its local preprocessing is what is observed, so the key still comes from
//! what the compile read. What the prefix reads for itself (its binary, its
//! configuration, its state directory, its variables such as `DISTCC_HOSTS`)
//! only chooses where the compile runs; `observe::prefix` takes it out of the
//! record. What a farm's compile gives that a local compile would not is
//! never cached: debug information (`uncacheable_reason`) and diagnostics
//! of preprocessed source (`printed`: compiled again locally).
//!
//! The client resolves the prefix and puts it into the compile's environment
//! as `CACHEFS_PREFIX` (see `client`), so the agent reads the same one from
//! the call's environment.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::Family;

/// The setting's variable; the client also sets it, resolved, in the
/// environment of every compile it runs under the prefix.
pub const ENV_PREFIX: &str = "CACHEFS_PREFIX";
/// ccache's name for the same setting, accepted as it is.
pub const ENV_CCACHE_PREFIX: &str = "CCACHE_PREFIX";

/// A prefix command: the program and its own arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    pub argv: Vec<OsString>,
}

/// Which farm a prefix is, by its program's name exactly (a wrapper named
/// `distcc-wrap` is another program): it decides whose files and variables
/// are the prefix's own, and whether its results are a local compile's
/// (`agent::prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Distcc,
    Icecc,
    /// Anything else: only its own binary is left out of the key.
    Other,
}

impl Prefix {
    /// A command line split at white space (as ccache splits
    /// `prefix_command`); `None` when it is empty.
    pub fn parse(text: &OsStr) -> Option<Prefix> {
        let argv: Vec<OsString> = text
            .as_bytes()
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .map(|w| OsStr::from_bytes(w).to_os_string())
            .collect();
        (!argv.is_empty()).then_some(Prefix { argv })
    }

    /// The prefix a call of `family` ran under, from its environment
    /// (`CACHEFS_PREFIX`, as the client set it).
    pub fn of_call(family: Family, env: &[(Vec<u8>, Vec<u8>)]) -> Option<Prefix> {
        if !applies(family) {
            return None;
        }
        env.iter()
            .find(|(k, _)| k == ENV_PREFIX.as_bytes())
            .and_then(|(_, v)| Prefix::parse(OsStr::from_bytes(v)))
    }

    /// The program, as given (a name or a path).
    pub fn program(&self) -> &Path {
        Path::new(&self.argv[0])
    }

    /// The same prefix with its program found along `path` (as execvp would),
    /// or `None` when there is no such program.
    pub fn resolved(&self, path: &OsStr) -> Option<Prefix> {
        let program = self.program();
        let found = if program.as_os_str().as_bytes().contains(&b'/') {
            Some(program.to_path_buf()).filter(|p| is_executable(p))
        } else {
            std::env::split_paths(path)
                .map(|dir| dir.join(program))
                .find(|p| p.is_absolute() && is_executable(p))
        }?;
        let mut argv = self.argv.clone();
        argv[0] = found.into_os_string();
        Some(Prefix { argv })
    }

    /// The command line as `CACHEFS_PREFIX` carries it.
    pub fn to_os_string(&self) -> OsString {
        self.argv.join(OsStr::new(" "))
    }

    pub fn tool(&self) -> Tool {
        let name = self.program().file_name().map(OsStr::as_bytes);
        match name {
            Some(b"distcc") => Tool::Distcc,
            Some(b"icecc") => Tool::Icecc,
            _ => Tool::Other,
        }
    }

    /// The directories and files that are the prefix's own: every access
    /// under them is the prefix's, not the compiler's (see the module doc).
    /// `env` is the call's environment.
    pub fn own_paths(&self, env: &[(Vec<u8>, Vec<u8>)]) -> Vec<PathBuf> {
        let var = |name: &str| {
            env.iter()
                .find(|(k, _)| k == name.as_bytes())
                .map(|(_, v)| PathBuf::from(OsStr::from_bytes(v)))
                .filter(|p| p.is_absolute())
        };
        let home = var("HOME");
        let mut own = vec![self.program().to_path_buf()];
        if let Ok(real) = self.program().canonicalize() {
            own.push(real);
        }
        match self.tool() {
            Tool::Distcc => {
                // distcc's state and lock files (`$DISTCC_DIR`, else ~/.distcc)
                // and its host lists.
                own.extend(var("DISTCC_DIR").or_else(|| home.map(|h| h.join(".distcc"))));
                own.push("/etc/distcc".into());
            }
            Tool::Icecc => {
                // Its configuration; its lock file (`/tmp/.icecream-USER`);
                // its daemon's socket, reached through the `/var/run` link
                // to `/run` (unmirrored: that link, read, makes any compile
                // "outside the observed tree"; nothing a C compiler reads
                // lies under /run); and the compiler environment tarballs
                // named by ICECC_VERSION.
                own.extend(["/etc/icecc", "/var/run"].map(PathBuf::from));
                own.extend(home.map(|h| h.join(".iceccd.socket")));
                own.extend(icecc_lock_dir());
                own.extend(icecc_tarballs(env));
            }
            Tool::Other => {}
        }
        own
    }
}

/// Variables only the farm's client reads (`DISTCC_HOSTS`, `ICECC_VERSION`,
/// …): where the compile runs, never what it produces (the farm's objects
/// are the local compile's, see `uncacheable_reason`). Other variables the
/// prefix reads (`HOME`, `TMPDIR`, `CPATH`) stay keyed: a compiler may read
/// them too, and reads are not told apart by process.
pub fn owns_variable(name: &[u8]) -> bool {
    const OWN_PREFIXES: [&[u8]; 6] = [
        b"_ICECC_",
        b"DISTCC_",
        b"_DISTCC_",
        b"ICECC",
        b"ICECREAM",
        b"INCLUDE_SERVER_",
    ];
    const OWN: [&[u8]; 2] = [b"UNCACHED_ERR_FD", b"USE_SCHEDULER"];
    OWN_PREFIXES.iter().any(|p| name.starts_with(p)) || OWN.contains(&name)
}

/// `/tmp/.icecream-USER`, icecc's lock file's directory, for this user (the
/// agent's, which is the compile's: it serves its own uid only).
fn icecc_lock_dir() -> Option<PathBuf> {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid()).ok()??;
    Some(PathBuf::from(format!("/tmp/.icecream-{}", user.name)))
}

/// `ICECC_VERSION`'s tarballs: `path`, `platform:path` and
/// `path=…`/`platform:path=…` items, comma separated.
fn icecc_tarballs(env: &[(Vec<u8>, Vec<u8>)]) -> Vec<PathBuf> {
    let Some((_, value)) = env.iter().find(|(k, _)| k == b"ICECC_VERSION") else {
        return Vec::new();
    };
    value
        .split(|&b| b == b',')
        .filter_map(|item| {
            let item = item.split(|&b| b == b'=').next()?;
            let path = item.splitn(2, |&b| b == b':').last()?;
            let path = PathBuf::from(OsStr::from_bytes(path));
            path.is_absolute().then_some(path)
        })
        .collect()
}

/// `stderr` without the farm client's own lines (`distcc[PID] …`,
/// `ICECC[PID] …`): where the compile ran and why (a host refusing, a
/// fallback to a local compile) is no part of its result. Kept, a farm that
/// is down would make every compile "printed", never cached.
pub fn without_own_messages(tool: Tool, stderr: &[u8]) -> Vec<u8> {
    let tag: &[u8] = match tool {
        Tool::Distcc => b"distcc[",
        Tool::Icecc => b"ICECC[",
        Tool::Other => return stderr.to_vec(),
    };
    let own = |line: &[u8]| {
        let Some(rest) = line.strip_prefix(tag) else {
            return false;
        };
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        digits > 0 && rest.get(digits) == Some(&b']')
    };
    stderr
        .split_inclusive(|&b| b == b'\n')
        .filter(|line| !own(line))
        .flatten()
        .copied()
        .collect()
}

/// Whether calls of `family` run under the prefix: gcc and clang compiles
/// only. distcc and icecc know C and C++; rustc and nvcc run as they are, and
/// so do `ar` and `ranlib`.
pub fn applies(family: Family) -> bool {
    family == Family::CFamily
}

/// Why a call must not be cached when it runs under a prefix, known before
/// it runs. A farm compiles the locally preprocessed source, and debug
/// information of preprocessed source differs from a local compile's
/// (columns after a macro expanded on the same line; measured with
/// distcc 3.4 and gcc 12, see DESIGN.md): such a compile still goes to the
/// farm, uncached.
pub fn uncacheable_reason(argv: &[Vec<u8>]) -> Option<&'static str> {
    debug_info(argv).then_some("debug information compiled by the farm (prefix)")
}

/// Whether a compile under the prefix printed something of its own (its
/// farm client's messages left out): then the farm's output is not what a
/// local compile prints, and the client compiles it again locally, in the
/// same view, for the result (see `client::prefix`). Measured: distcc's
/// compiles of Lua 5.4 print six `-Wimplicit-fallthrough` warnings that a
/// local compile does not, the `/* FALLTHROUGH */` comments being gone from
/// the preprocessed source; a farm's column numbers differ too, and it
/// quotes no source lines.
///
/// Not for another prefix: its results are keyed by it (`agent::prefix`), so
/// what it printed is what a hit under it replays.
pub fn printed(tool: Tool, stdout: &[u8], stderr: &[u8]) -> bool {
    tool != Tool::Other && (!stdout.is_empty() || !without_own_messages(tool, stderr).is_empty())
}

/// Whether the call makes debug information: a `-g…` option, unless the last
/// level given is `-g0`.
fn debug_info(argv: &[Vec<u8>]) -> bool {
    let mut on = false;
    for a in argv.iter().skip(1) {
        if a.as_slice() == b"-g0" {
            on = false;
        } else if a.starts_with(b"-g") && !a.starts_with(b"-gno-") {
            on = true;
        }
    }
    on
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<Vec<u8>> {
        a.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_prefix_is_split_at_white_space_and_found_along_path() {
        let p = Prefix::parse(OsStr::new("  /bin/sh -x ")).unwrap();
        assert_eq!(p.argv, ["/bin/sh", "-x"]);
        assert!(Prefix::parse(OsStr::new(" ")).is_none());
        let found = Prefix::parse(OsStr::new("sh -e"))
            .unwrap()
            .resolved(OsStr::new("relative:/nonexistent:/bin"))
            .unwrap();
        assert_eq!(found.argv, ["/bin/sh", "-e"]);
        assert_eq!(found.to_os_string(), "/bin/sh -e");
        let missing = Prefix::parse(OsStr::new("no-such-farm")).unwrap();
        assert!(missing.resolved(OsStr::new("/bin")).is_none());
    }

    #[test]
    fn debug_information_under_a_prefix_is_not_cached() {
        assert!(uncacheable_reason(&args(&["gcc", "-O2", "-c", "x.c"])).is_none());
        for debug in [
            &["gcc", "-g", "-c"][..],
            &["gcc", "-ggdb3"],
            &["gcc", "-g0", "-g2"],
        ] {
            assert!(uncacheable_reason(&args(debug)).is_some(), "{debug:?}");
        }
        assert!(uncacheable_reason(&args(&["gcc", "-g", "-g0"])).is_none());
        assert!(uncacheable_reason(&args(&["gcc", "-gno-column-info"])).is_none());
        assert!(!printed(Tool::Distcc, b"", b"distcc[1] down\n"));
        assert!(printed(Tool::Distcc, b"", b"x.c:1: warning\n"));
        assert!(printed(Tool::Icecc, b"x", b""));
        assert!(!printed(Tool::Other, b"x", b"warning"));
    }

    #[test]
    fn the_farm_s_own_messages_are_no_part_of_the_result() {
        let stderr = b"distcc[4765] ERROR: nonblocking connect to 10.77.0.2:3632 failed\n\
            x.c:1:1: warning: distcc[1] in a diagnostic\n\
            distcc[4765] Warning: failed to distribute, running locally instead\n\
            distcc[] not distcc's\n";
        assert_eq!(
            without_own_messages(Tool::Distcc, stderr),
            b"x.c:1:1: warning: distcc[1] in a diagnostic\ndistcc[] not distcc's\n"
        );
        let icecc = b"ICECC[12] 10:00:00: local daemon is down\n";
        assert!(without_own_messages(Tool::Icecc, icecc).is_empty());
        assert_eq!(without_own_messages(Tool::Other, icecc), icecc);
    }

    #[test]
    fn the_farm_s_own_variables_and_files() {
        for own in ["DISTCC_HOSTS", "DISTCC_DIR", "ICECC_VERSION", "ICECC"] {
            assert!(owns_variable(own.as_bytes()), "{own}");
        }
        for compilers in ["CPATH", "HOME", "TMPDIR", "SOURCE_DATE_EPOCH", "DISTCC"] {
            assert!(!owns_variable(compilers.as_bytes()), "{compilers}");
        }
        let e = env(&[
            ("HOME", "/home/u"),
            ("ICECC_VERSION", "/envs/a.tar.gz,arm:/envs/b.tar.gz=arm-gcc"),
        ]);
        let distcc = Prefix::parse(OsStr::new("/usr/bin/distcc")).unwrap();
        assert_eq!(distcc.tool(), Tool::Distcc);
        assert!(distcc.own_paths(&e).contains(&"/home/u/.distcc".into()));
        let icecc = Prefix::parse(OsStr::new("/usr/bin/icecc")).unwrap();
        let own = icecc.own_paths(&e);
        for p in ["/envs/a.tar.gz", "/envs/b.tar.gz", "/etc/icecc"] {
            assert!(own.contains(&PathBuf::from(p)), "{p} in {own:?}");
        }
        let wrapper = Prefix::parse(OsStr::new("/opt/distcc-wrap")).unwrap();
        assert_eq!(wrapper.tool(), Tool::Other);
        let other = Prefix::parse(OsStr::new("/opt/farm/run")).unwrap();
        assert_eq!(other.tool(), Tool::Other);
        assert_eq!(other.own_paths(&e), [PathBuf::from("/opt/farm/run")]);
    }
}
