//! A compile run under a prefix command (`compiler::prefix`): what the
//! prefix did for itself taken out of the view's record before it is
//! analysed, as the shim's own files are (`drop_own_files`).
//!
//! Left out: every access under the prefix's own paths (its binary, its
//! configuration, its state and lock files, icecc's environment tarballs),
//! including its writes (distcc reopens its lock files for writing, which
//! would otherwise make every compile "modified in place", uncacheable); and
//! the variables only a farm's client reads (`DISTCC_HOSTS`, …). The rest of
//! what the prefix reads stays keyed: reads are not told apart by process,
//! and a compiler may read the same files and variables.

use super::env::EnvReads;
use crate::compiler::prefix::{self, Prefix};
use crate::compiler::Family;
use cachefs_mirror::{Access, Record};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Takes the prefix's own accesses and variables out of `record` and `reads`
/// for a call of `family` whose environment is `env`; nothing when it ran
/// without one.
pub fn drop_own(
    family: Family,
    env: &[(Vec<u8>, Vec<u8>)],
    record: &mut Record,
    reads: &mut EnvReads,
) {
    let Some(prefix) = Prefix::of_call(family, env) else {
        return;
    };
    reads.names.retain(|n| !prefix::owns_variable(n));
    let own = prefix.own_paths(env);
    let under = |p: &Path| own.iter().any(|o| p.starts_with(o));
    let mut dropped: HashSet<PathBuf> = HashSet::new();
    record.accesses.retain(|a| {
        let paths: Vec<&Path> = match a {
            Access::Renamed { from, to } => vec![from, to],
            other => super::access_path(other).into_iter().collect(),
        };
        let own_access = !paths.is_empty() && paths.iter().all(|p| under(p));
        if own_access {
            dropped.extend(paths.into_iter().map(Path::to_path_buf));
        }
        !own_access
    });
    // The directories walked to reach them (`/root` for `/root/.distcc`),
    // where nothing else was reached through them.
    super::drop_reaching(record, &dropped);
}

#[cfg(test)]
mod tests {
    use super::*;
    use cachefs_mirror::Kind;

    fn found(p: &str) -> Access {
        Access::Found {
            path: p.into(),
            kind: Kind::Dir,
        }
    }

    #[test]
    fn the_farm_s_own_files_and_variables_leave_the_record() {
        let env: Vec<(Vec<u8>, Vec<u8>)> = [("CACHEFS_PREFIX", "/usr/bin/distcc"), ("HOME", "/h")]
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        let mut record = Record {
            accesses: vec![
                found("/h"),
                found("/h/.distcc"),
                Access::Created {
                    path: "/h/.distcc/lock".into(),
                    kind: Kind::Dir,
                },
                Access::SetAttr {
                    path: "/h/.distcc/lock/cpu_localhost_0".into(),
                    size: Some(0),
                },
                found("/h/src"),
                Access::NotFound {
                    path: "/etc/distcc/hosts".into(),
                },
                Access::NotFound {
                    path: "/usr/include/x.h".into(),
                },
            ],
        };
        let mut reads = EnvReads {
            observed: true,
            unseen: false,
            names: [b"DISTCC_HOSTS".to_vec(), b"CPATH".to_vec()].into(),
        };
        drop_own(Family::CFamily, &env, &mut record, &mut reads);
        assert_eq!(
            record.accesses,
            [
                found("/h"),
                found("/h/src"),
                Access::NotFound {
                    path: "/usr/include/x.h".into()
                }
            ]
        );
        assert_eq!(reads.names, [b"CPATH".to_vec()].into());
        for (family, env) in [(Family::CFamily, &[][..]), (Family::Rustc, &env[..])] {
            let mut untouched = record.clone();
            drop_own(family, env, &mut untouched, &mut reads);
            assert_eq!(untouched.accesses, record.accesses);
        }
    }
}
