//! Whether a stored dep set still holds: every path checked against the
//! disk, through the stat cache.

use super::dep_set::{Dep, DepSet, DepState, Kind};
use super::env::{self, Env};
use crate::digest::{candidates, candidates_hash, listing_hash, Hash};
use crate::stat_cache::{DirStamps, StatCache};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Why a stored dep set no longer holds; `cachefs explain` shows these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub path: PathBuf,
    /// What differs, for people: the path, or "environment variable X".
    pub input: String,
    pub expected: String,
    /// What an environment dep is now (a file's is read from the disk).
    pub now: Option<String>,
}

/// What one lookup learnt while validating a manifest's dep sets, shared
/// by all of them: the sets of one key1 share most deps (the compiler's own
/// files, the system headers), and configure's `conftest.c` compiles leave a
/// hundred sets under one key1 that differ in one file, which would
/// otherwise be hashed once per set (it is too fresh for the stat cache).
#[derive(Default)]
pub struct Checked<'a> {
    /// Whether to remember each answer: not for one set alone (a hit's usual
    /// case), where nothing is asked twice and remembering costs a hash each.
    remember: bool,
    deps: HashMap<&'a Dep, bool>,
    files: HashMap<&'a [u8], Option<Hash>>,
    dirs: DirStamps,
}

impl Checked<'_> {
    /// For validating `sets` dep sets of one manifest.
    pub fn for_sets(sets: usize) -> Self {
        Checked {
            remember: sets > 1,
            ..Checked::default()
        }
    }
}

/// Checks every dep against the disk and the call's environment `env`; the
/// first that differs is returned.
pub fn validate(set: &DepSet, cache: &StatCache, env: &Env) -> Result<(), Mismatch> {
    validate_with(set, cache, env, &mut Checked::default())
}

/// `validate`, reusing and adding to what `checked` knows.
pub fn validate_with<'a>(
    set: &'a DepSet,
    cache: &StatCache,
    env: &Env,
    checked: &mut Checked<'a>,
) -> Result<(), Mismatch> {
    for dep in &set.deps {
        let path = Path::new(OsStr::from_bytes(&dep.path));
        let holds = match checked.deps.get(dep) {
            Some(known) => *known,
            None => {
                let holds = env::holds(dep, env).unwrap_or_else(|| checked.holds(dep, cache, env));
                if checked.remember {
                    checked.deps.insert(dep, holds);
                }
                holds
            }
        };
        if !holds {
            return Err(Mismatch {
                path: path.to_path_buf(),
                input: env::label(dep).unwrap_or_else(|| path.display().to_string()),
                expected: describe(path, &dep.state),
                now: env::now(dep, env),
            });
        }
    }
    Ok(())
}

/// A dep state for messages: a search directory's candidates by name.
fn describe(path: &Path, state: &DepState) -> String {
    match state {
        DepState::Candidates { stems, .. } => {
            let names = candidates(path, stems, &|_| false).unwrap_or_default();
            let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
            format!(
                "the same candidates for {} (now: {})",
                stems.iter().map(|s| text(s)).collect::<Vec<_>>().join(" "),
                names.iter().map(|s| text(s)).collect::<Vec<_>>().join(" ")
            )
        }
        _ => state.to_string(),
    }
}

impl<'a> Checked<'a> {
    fn holds(&mut self, dep: &'a Dep, cache: &StatCache, env: &Env) -> bool {
        let path = Path::new(OsStr::from_bytes(&dep.path));
        match &dep.state {
            DepState::Resolved(found) => {
                let dirs = &mut self.dirs;
                env::resolution_holds(found, env, |p| !cache.is_absent(p, dirs))
            }
            DepState::File(hash) if self.remember => {
                let now = *self
                    .files
                    .entry(&dep.path)
                    .or_insert_with(|| cache.file_hash(path).ok().flatten().map(|(_, h)| h));
                now == Some(*hash)
            }
            state => holds(path, state, cache, &mut self.dirs),
        }
    }
}

fn holds(path: &Path, state: &DepState, cache: &StatCache, dirs: &mut DirStamps) -> bool {
    match state {
        DepState::File(hash) => matches!(cache.file_hash(path), Ok(Some((_, h))) if h == *hash),
        DepState::Absent => cache.is_absent(path, dirs),
        DepState::Exists(kind) => {
            matches!(std::fs::symlink_metadata(path), Ok(m) if Kind::of(&m) == *kind)
        }
        DepState::Symlink(target) => {
            matches!(std::fs::read_link(path), Ok(t) if t.as_os_str().as_bytes() == target.as_slice())
        }
        DepState::Listing(hash) => matches!(listing_hash(path, &|_| false), Ok(h) if h == *hash),
        DepState::Candidates { stems, hash } => {
            matches!(candidates_hash(path, stems, &|_| false), Ok(h) if h == *hash)
        }
        // Checked before the set is validated (`relocate::set_here`).
        DepState::Pinned(_) => true,
        // Environment deps are checked by `env::holds`.
        DepState::Env(_) | DepState::EnvMatching(_) | DepState::Resolved(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;

    /// The one-stat-per-directory shortcut for failed probes must still see
    /// a header that appears later, however it appears.
    #[test]
    fn absent_probes_see_files_created_or_renamed_into_a_settled_directory() {
        let written = tempfile::tempdir().unwrap();
        let renamed = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let probe = |dir: &tempfile::TempDir| DepSet {
            deps: vec![Dep {
                path: dir.path().join("shadow.h").as_os_str().as_bytes().to_vec(),
                state: DepState::Absent,
            }],
            result: [0; 32],
        };
        let (a, b) = (probe(&written), probe(&renamed));
        let cache = StatCache::default();
        // Directory stamps are trusted only once settled.
        std::thread::sleep(Duration::from_millis(2100));
        for set in [&a, &b] {
            assert!(validate(set, &cache, &[]).is_ok());
            assert!(validate(set, &cache, &[]).is_ok());
        }
        let dev = std::fs::metadata(written.path()).unwrap().dev();
        if cache.trusts_dir_stamps(dev, written.path()) {
            assert_eq!(cache.absent_len(), 2, "shortcut in use");
        }
        std::fs::write(written.path().join("shadow.h"), "").unwrap();
        let other = elsewhere.path().join("shadow.h");
        std::fs::write(&other, "").unwrap();
        std::fs::rename(&other, renamed.path().join("shadow.h")).unwrap();
        for (set, dir) in [(&a, &written), (&b, &renamed)] {
            let m = validate(set, &cache, &[]).unwrap_err();
            assert_eq!(m.path, dir.path().join("shadow.h"));
        }
    }

    #[test]
    fn validate_checks_each_state() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.h");
        std::fs::write(&f, "x").unwrap();
        let cache = StatCache::default();
        let (_, h) = cache.file_hash(&f).unwrap().unwrap();
        let missing = dir.path().join("b.h");
        let b = |p: &Path| p.as_os_str().as_bytes().to_vec();
        let set = DepSet {
            deps: vec![
                Dep {
                    path: b(&f),
                    state: DepState::File(h),
                },
                Dep {
                    path: b(&missing),
                    state: DepState::Absent,
                },
                Dep {
                    path: b(dir.path()),
                    state: DepState::Exists(Kind::Dir),
                },
            ],
            result: [0; 32],
        };
        assert!(validate(&set, &cache, &[]).is_ok());
        std::fs::write(&missing, "").unwrap();
        assert_eq!(validate(&set, &cache, &[]).unwrap_err().path, missing);
    }
}
