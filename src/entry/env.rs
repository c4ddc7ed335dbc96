//! The environment as dependencies: a compile is keyed by the variables it was observed to read,
//! not by the whole environment of whoever ran it (`observe::env` finds them). A dep names a
//! variable, or a pattern of variables that observation cannot see, and holds while the current
//! call's environment gives the same.
//!
//! Three kinds of environment dep (`DepState`):
//! - `Env`: one variable a process of the compile looked up, by the hash of its value, or unset.
//! - `EnvMatching`: every variable matching a pattern (its `path`), by one hash over names and
//!   values: what glibc reads inside itself, unseen by the shim (`UNOBSERVED`, and `LOCALE` for a
//!   compile that printed something), or `*`, the whole environment, when the compile read it
//!   unseen (a script, a static program, no shim at all).
//! - `Resolved`: `PATH`, by what the names looked up along it resolve to rather than its value, so
//!   that two users with different `PATH`s that find the same programs share results, and a `PATH`
//!   that finds another `as` first does not.

use super::dep_set::{Dep, DepState, Resolution};
use crate::digest::{field, Hash};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Environment variables that do not change what a compiler produces but do
/// change between otherwise identical builds (jobserver fds, shells, the
/// terminal, our own plumbing): in no key, even when a compile reads them
/// (gcc reads MAKEFLAGS for -flto=jobserver).
const VOLATILE_ENV: &[&str] = &[
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "MAKEOVERRIDES",
    "MAKE_TERMOUT",
    "MAKE_TERMERR",
    "CARGO_MAKEFLAGS",
    // Name the wrapper of rustc calls (us, in wrapper mode); rustc does not
    // read them, and keeping them out lets `RUSTC_WRAPPER=cachefs` and
    // `cachefs run` share results.
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "PWD",
    "OLDPWD",
    "SHLVL",
    "TERM",
    "COLORTERM",
    "_",
    "LD_PRELOAD",
    "DISPLAY",
    "WINDOWID",
    "XAUTHORITY",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "LS_COLORS",
    "NINJA_STATUS",
    // Set per login session or per terminal window, read by no compiler: a
    // build in a new terminal or after a new login must still hit.
    "DBUS_SESSION_BUS_ADDRESS",
    "SESSION_MANAGER",
    "DESKTOP_STARTUP_ID",
    "WAYLAND_DISPLAY",
    "WINDOWPATH",
    "GPG_AGENT_INFO",
    "VTE_VERSION",
    "TERM_PROGRAM",
    "TERM_PROGRAM_VERSION",
    "TERM_SESSION_ID",
    "WT_SESSION",
];
const VOLATILE_ENV_PREFIXES: &[&str] = &[
    "CACHEFS_",
    "SSH_",
    "TMUX",
    "STY",
    "XDG_SESSION_",
    "XDG_SEAT",
    "XDG_VTNR",
    "XDG_ACTIVATION_TOKEN",
    "GNOME_TERMINAL_",
    "KONSOLE_",
    "KITTY_",
    "ALACRITTY_",
];

pub fn is_volatile_env(name: &[u8]) -> bool {
    VOLATILE_ENV.iter().any(|v| v.as_bytes() == name)
        || VOLATILE_ENV_PREFIXES
            .iter()
            .any(|p| name.starts_with(p.as_bytes()))
}

/// A call's environment, as the client sent it.
pub type Env = [(Vec<u8>, Vec<u8>)];

/// Read inside glibc, where no getenv hook sees them (the dynamic loader, iconv, the allocator, the
/// time zone code), or by any program's start-up: always keyed.
pub const UNOBSERVED: &str = "LD_* GCONV_PATH LOCPATH NLSPATH GLIBC_TUNABLES MALLOC_* TZ TZDIR";
/// The locale, read by setlocale inside glibc: keyed when the compile printed something (a
/// translated warning must not be replayed in another language), since objects do not depend on it.
pub const LOCALE: &str = "LANG LANGUAGE LC_*";
/// The whole environment (less the volatile variables, as before observation).
pub const ALL: &str = "*";
/// The path of the `Resolved` dep.
pub const PATH: &[u8] = b"PATH";

/// The first value of `name` in `env`, as getenv finds it.
pub fn value<'a>(env: &'a Env, name: &[u8]) -> Option<&'a [u8]> {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

/// The dep of one variable read.
pub fn read(env: &Env, name: &[u8]) -> Dep {
    Dep {
        path: name.to_vec(),
        state: DepState::Env(value_hash(env, name)),
    }
}

/// What an `Env` dep holds of `name`: its value's hash, or `None` (unset).
fn value_hash(env: &Env, name: &[u8]) -> Option<Hash> {
    value(env, name).map(|v| *blake3::hash(v).as_bytes())
}

/// Whether `name` matches one of the space-separated `patterns` (`NAME`, `PREFIX*` or `*`). The
/// volatile variables (jobserver, terminal, our own) never do: they are in no key.
pub fn matches(patterns: &str, name: &[u8]) -> bool {
    !is_volatile_env(name)
        && patterns.split(' ').any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix.as_bytes()),
            None => name == p.as_bytes(),
        })
}

/// The dep of every variable matching `patterns`.
pub fn matching(env: &Env, patterns: &str) -> Dep {
    Dep {
        path: patterns.as_bytes().to_vec(),
        state: DepState::EnvMatching(matching_hash(env, patterns)),
    }
}

fn matching_hash(env: &Env, patterns: &str) -> Hash {
    let mut vars: Vec<_> = env.iter().filter(|(k, _)| matches(patterns, k)).collect();
    vars.sort();
    // getenv takes the first of duplicate names; so does the key.
    vars.dedup_by(|a, b| a.0 == b.0);
    let mut h = blake3::Hasher::new();
    h.update(b"cachefs-env");
    for (k, v) in vars {
        field(&mut h, k);
        field(&mut h, v);
    }
    *h.finalize().as_bytes()
}

/// The `PATH` dep: each of `names` with the file it resolves to along `env`'s `PATH`.
pub fn resolved(env: &Env, names: impl IntoIterator<Item = Vec<u8>>) -> Dep {
    let mut found: Vec<Resolution> = names
        .into_iter()
        .map(|n| {
            let to = resolve(env, &n);
            (n, to)
        })
        .collect();
    found.sort();
    found.dedup();
    Dep {
        path: PATH.to_vec(),
        state: DepState::Resolved(found),
    }
}

/// The directories of `PATH` (execvp's default when unset; an empty entry is the working
/// directory, which the caller has in key1).
pub fn path_dirs(env: &Env) -> Vec<&[u8]> {
    value(env, PATH)
        .unwrap_or(b"/bin:/usr/bin")
        .split(|&b| b == b':')
        .collect()
}

/// What execvp would run for `name`: the first executable regular file along
/// `PATH`, as found there; `may_exist` rules candidates out cheaply first
/// (the stat cache knows most failed probes by their directory's stamp).
fn first_candidate(
    env: &Env,
    name: &[u8],
    mut may_exist: impl FnMut(&Path) -> bool,
) -> Option<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    path_dirs(env).into_iter().find_map(|dir| {
        let mut full = if dir.is_empty() {
            b".".to_vec()
        } else {
            dir.to_vec()
        };
        full.push(b'/');
        full.extend_from_slice(name);
        let path = Path::new(OsStr::from_bytes(&full));
        if !may_exist(path) {
            return None;
        }
        let meta = std::fs::metadata(path).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(full)
    })
}

/// The real path of `path` (`/bin/as` and `/usr/bin/as` are one file where
/// `/bin` links to `usr/bin`).
fn real(path: &[u8]) -> Option<Vec<u8>> {
    let real = std::fs::canonicalize(Path::new(OsStr::from_bytes(path))).ok()?;
    Some(real.into_os_string().into_encoded_bytes())
}

fn resolve(env: &Env, name: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let along = first_candidate(env, name, |_| true)?;
    let real = real(&along)?;
    Some((along, real))
}

/// Whether each name still resolves to the same file along `env`'s `PATH`:
/// the same path as found (no real path needed), or another path to the
/// same real file.
pub fn resolution_holds(
    found: &[Resolution],
    env: &Env,
    mut may_exist: impl FnMut(&Path) -> bool,
) -> bool {
    found.iter().all(
        |(name, want)| match (first_candidate(env, name, &mut may_exist), want) {
            (None, None) => true,
            (Some(now), Some((along, was))) => now == *along || real(&now).as_ref() == Some(was),
            _ => false,
        },
    )
}

/// Whether an environment dep holds for a call with `env`; None for a file
/// dep, and for `PATH`'s, which the caller checks with its stat cache
/// (`resolution_holds`).
pub fn holds(dep: &Dep, env: &Env) -> Option<bool> {
    Some(match &dep.state {
        DepState::Env(hash) => value_hash(env, &dep.path) == *hash,
        DepState::EnvMatching(hash) => {
            matching_hash(env, &String::from_utf8_lossy(&dep.path)) == *hash
        }
        _ => return None,
    })
}

/// An environment dep as people name it.
pub fn label(dep: &Dep) -> Option<String> {
    let name = String::from_utf8_lossy(&dep.path);
    Some(match &dep.state {
        DepState::Env(_) => format!("environment variable {name}"),
        DepState::EnvMatching(_) if name == ALL => "the environment (read unseen)".into(),
        DepState::EnvMatching(_) => format!("environment variables {name}"),
        DepState::Resolved(_) => "programs found along PATH".into(),
        _ => return None,
    })
}

/// What an environment dep's state is under `env` now, for messages.
pub fn now(dep: &Dep, env: &Env) -> Option<String> {
    Some(match &dep.state {
        DepState::Env(_) => match value(env, &dep.path) {
            Some(v) => format!("set to {:?}", String::from_utf8_lossy(v)),
            None => "unset".into(),
        },
        DepState::EnvMatching(_) => "different".into(),
        DepState::Resolved(found) => {
            let real_of = |to: &Option<(Vec<u8>, Vec<u8>)>| to.as_ref().map(|(_, r)| r.clone());
            let moved: Vec<String> = found
                .iter()
                .filter_map(|(n, was)| {
                    let to = resolve(env, n);
                    (real_of(&to) != real_of(was)).then(|| {
                        let shown = real_of(&to).map(|r| String::from_utf8_lossy(&r).into_owned());
                        format!(
                            "{} → {}",
                            String::from_utf8_lossy(n),
                            shown.unwrap_or("nothing".into())
                        )
                    })
                })
                .collect();
            moved.join(", ")
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        vars.iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_read_variable_holds_while_its_value_does() {
        let dep = read(&env(&[("CPATH", "/a")]), b"CPATH");
        assert_eq!(
            holds(&dep, &env(&[("CPATH", "/a"), ("FOO", "1")])),
            Some(true)
        );
        assert_eq!(holds(&dep, &env(&[("CPATH", "/b")])), Some(false));
        assert_eq!(holds(&dep, &env(&[])), Some(false));
        let unset = read(&env(&[]), b"CPATH");
        assert_eq!(holds(&unset, &env(&[("HOME", "/x")])), Some(true));
        assert_eq!(
            holds(&unset, &env(&[("CPATH", "")])),
            Some(false),
            "empty is set"
        );
    }

    #[test]
    fn patterns_cover_prefixes_and_leave_out_volatile_variables() {
        let dep = matching(&env(&[("LC_ALL", "C"), ("HOME", "/h")]), LOCALE);
        assert_eq!(
            holds(&dep, &env(&[("LC_ALL", "C"), ("HOME", "/other")])),
            Some(true)
        );
        assert_eq!(
            holds(&dep, &env(&[("LC_ALL", "C"), ("LC_MESSAGES", "de")])),
            Some(false)
        );
        assert_eq!(holds(&dep, &env(&[])), Some(false));
        let all = matching(&env(&[("FOO", "1"), ("MAKEFLAGS", "-j2")]), ALL);
        assert_eq!(
            holds(&all, &env(&[("FOO", "1"), ("MAKEFLAGS", "-j8")])),
            Some(true)
        );
        assert_eq!(holds(&all, &env(&[("FOO", "1"), ("BAR", "")])), Some(false));
        let loader = matching(&env(&[]), UNOBSERVED);
        assert_eq!(holds(&loader, &env(&[("LD_PRELOAD", "/x.so")])), Some(true));
        assert_eq!(
            holds(&loader, &env(&[("LD_LIBRARY_PATH", "/x")])),
            Some(false)
        );
    }

    #[test]
    fn path_holds_by_what_it_resolves_to() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let other = tempfile::tempdir().unwrap();
        let o = other.path().display().to_string();
        for base in [&d, &o] {
            let tool = Path::new(base).join("tool");
            std::fs::write(&tool, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        let dep = resolved(
            &env(&[("PATH", &format!("/nonexistent:{d}"))]),
            [b"tool".to_vec()],
        );
        let DepState::Resolved(found) = &dep.state else {
            panic!("{dep:?}")
        };
        let holds = |e: &Env| resolution_holds(found, e, |_| true);
        let reordered = env(&[("PATH", &format!("{d}:/usr/bin:/nonexistent"))]);
        assert!(holds(&reordered), "same tool, other PATH");
        let through_a_link = tempfile::tempdir().unwrap();
        let link = through_a_link.path().join("bin");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(
            holds(&env(&[("PATH", &link.display().to_string())])),
            "the same file by another path"
        );
        let shadowed = env(&[("PATH", &format!("{o}:{d}"))]);
        assert!(!holds(&shadowed), "another tool first");
        assert!(now(&dep, &shadowed).unwrap().contains(&o));
    }
}
