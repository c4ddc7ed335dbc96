//! The environment a compile read, from what the shim reported into the view's record (see
//! `cachefs_preload`'s `env_reads`): a lookup of `/usr/.cachefs-env=NAME` per variable read, `*`
//! for reads it could not see, and an empty name from every process it was loaded into. Turned into
//! environment deps (`entry::env`) with what cannot be observed at all.

use crate::compiler::Family;
use crate::entry::env::{self, Env};
use crate::entry::Dep;
use cachefs_mirror::{Access, Record};
use std::collections::{BTreeSet, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where the shim's reports are looked up (`cachefs_preload::env_reads::REPORT_PREFIX`).
pub const REPORT_PREFIX: &[u8] = b"/usr/.cachefs-env=";

/// What the shim reported.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EnvReads {
    /// The shim was loaded into the compile (its empty report).
    pub observed: bool,
    /// Some process read its environment unseen.
    pub unseen: bool,
    /// The variables looked up, by name.
    pub names: BTreeSet<Vec<u8>>,
}

/// Takes the shim's reports out of `record`: they are not files.
pub fn take_reports(record: &mut Record) -> EnvReads {
    let mut reads = EnvReads::default();
    record.accesses.retain(|a| {
        let path = match a {
            Access::NotFound { path } | Access::Found { path, .. } => path,
            _ => return true,
        };
        let Some(name) = path.as_os_str().as_bytes().strip_prefix(REPORT_PREFIX) else {
            return true;
        };
        match name {
            b"" => reads.observed = true,
            b"*" => reads.unseen = true,
            _ => match decode(name) {
                Some(n) => {
                    reads.names.insert(n);
                }
                None => reads.unseen = true,
            },
        }
        false
    });
    reads
}

/// `%XX` back to the byte.
fn decode(name: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        if name[i] == b'%' {
            let hex = std::str::from_utf8(name.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(name[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The environment deps of a compile of `family` that read `reads` from `env`, given whether it
/// printed anything. Its failed probes along `PATH` are taken out of `record`: the `PATH` dep
/// stands for them (see `searched_along_path`).
pub fn deps(
    reads: &EnvReads,
    env: &Env,
    family: Family,
    record: &mut Record,
    printed: bool,
) -> Vec<Dep> {
    // nvcc's steps run through a shell of its own making, which takes in the whole environment.
    if !reads.observed || reads.unseen || family == Family::Nvcc {
        return vec![env::matching(env, env::ALL)];
    }
    let mut deps = vec![env::matching(env, env::UNOBSERVED)];
    if printed {
        deps.push(env::matching(env, env::LOCALE));
    }
    let searched = searched_along_path(record, env);
    if !searched.is_empty() {
        deps.push(env::resolved(env, searched));
    }
    let names = reads.names.iter().filter(|n| !env::is_volatile_env(n));
    deps.extend(
        names
            .filter(|n| n.as_slice() != env::PATH)
            .map(|n| env::read(env, n)),
    );
    deps
}

/// The names the compile searched for in the directories of `PATH` (its own lookups, and
/// execvp's, which reads `PATH` inside glibc, unseen): the `PATH` dep holds them by what they
/// resolve to along the call's `PATH`, which a new `PATH` resolves again. Their failed probes
/// leave the record: kept, one in a directory another user cannot search (`/root/.cargo/bin/as`)
/// would cost that user every hit, and they say nothing the resolution does not.
fn searched_along_path(record: &mut Record, env: &Env) -> BTreeSet<Vec<u8>> {
    let dirs: Vec<&Path> = env::path_dirs(env)
        .into_iter()
        .filter(|d| d.starts_with(b"/"))
        .map(|d| Path::new(std::ffi::OsStr::from_bytes(d)))
        .collect();
    let in_path = |p: &Path| p.parent().is_some_and(|parent| dirs.contains(&parent));
    let names: BTreeSet<Vec<u8>> = record
        .accesses
        .iter()
        .filter_map(|a| match a {
            Access::NotFound { path } | Access::Found { path, .. } | Access::Open { path, .. } => {
                Some(path)
            }
            _ => None,
        })
        .filter(|p| in_path(p))
        .filter_map(|p| p.file_name().map(|n| n.as_bytes().to_vec()))
        .collect();
    let probes: HashSet<PathBuf> = record
        .accesses
        .iter()
        .filter_map(|a| match a {
            Access::NotFound { path } if in_path(path) => Some(path.clone()),
            _ => None,
        })
        .collect();
    super::drop_reaching(record, &probes);
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::DepState;
    use std::path::PathBuf;

    fn not_found(p: &str) -> Access {
        Access::NotFound {
            path: PathBuf::from(p),
        }
    }

    #[test]
    fn reports_are_taken_out_of_the_record() {
        let mut record = Record {
            accesses: vec![
                not_found("/usr/.cachefs-env="),
                not_found("/usr/.cachefs-env=CPATH"),
                not_found("/usr/include/x.h"),
                not_found("/usr/.cachefs-env=a%2Fb"),
            ],
        };
        let reads = take_reports(&mut record);
        assert!(reads.observed && !reads.unseen);
        let names: Vec<_> = reads.names.iter().map(|n| n.as_slice()).collect();
        assert_eq!(names, [&b"CPATH"[..], b"a/b"]);
        assert_eq!(record.accesses, [not_found("/usr/include/x.h")]);
        let mut unseen = Record {
            accesses: vec![
                not_found("/usr/.cachefs-env=*"),
                not_found("/usr/.cachefs-env=%G"),
            ],
        };
        assert!(take_reports(&mut unseen).unseen);
    }

    #[test]
    fn only_what_was_read_is_a_dep_unless_something_read_unseen() {
        let env: Vec<(Vec<u8>, Vec<u8>)> = [("CPATH", "/a"), ("HOME", "/h"), ("MAKEFLAGS", "-j")]
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        let reads = EnvReads {
            observed: true,
            unseen: false,
            names: [b"CPATH".to_vec(), b"MAKEFLAGS".to_vec()].into(),
        };
        let mut record = Record::default();
        let deps = deps(&reads, &env, Family::CFamily, &mut record, false);
        let paths: Vec<String> = deps
            .iter()
            .map(|d| String::from_utf8_lossy(&d.path).into_owned())
            .collect();
        assert_eq!(paths, [env::UNOBSERVED, "CPATH"]);
        let printed = super::deps(&reads, &env, Family::CFamily, &mut record, true);
        assert!(printed.iter().any(|d| d.path == env::LOCALE.as_bytes()));
        for unseen in [
            EnvReads {
                unseen: true,
                ..EnvReads::default()
            },
            EnvReads::default(),
        ] {
            let all = super::deps(&unseen, &env, Family::CFamily, &mut record, false);
            assert_eq!(all.len(), 1);
            assert!(matches!(all[0].state, DepState::EnvMatching(_)));
            assert_eq!(all[0].path, b"*");
        }
    }
}
