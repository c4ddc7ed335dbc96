//! Turns what a view recorded into a dep set and a list of outputs, or into
//! the reason the compile must not be cached.
//!
//! Rules, in the order accesses happened:
//! - a path the compile created, truncated, removed or renamed is not a
//!   dependency (its earlier absence or presence is the compile's own doing);
//! - a path the compile read before it wrote it makes the compile
//!   uncacheable (its result depends on the previous output), unless the
//!   call may rewrite its inputs (archivers: ranlib indexes the archive it
//!   read) and the mirror hashed the file, unchanged since the read, right
//!   before the rewrite: then it is a dependency by that old content and an
//!   output by its new one;
//! - for such a call, whatever else was seen at a path before it wrote it
//!   stays a dependency too: `ar r lib.a a.o` makes a different archive
//!   when lib.a was there before, so its absence is an input (a compiler's
//!   output path is looked up before it is created, and its absence is not);
//! - an existing file modified in place, a file it did not create deleted, or
//!   anything the mirror could not observe makes it uncacheable;
//! - outputs are the written paths that still exist at the end;
//! - a listed directory is a dependency by its whole listing, except a
//!   library search directory (rustc `-L`) of a successful compile, which is
//!   one by the crate candidates it holds for the crates the compile loaded
//!   (any `lib<crate>*.{rlib,rmeta,so}` it opened, wherever), and a
//!   `-L dependency=` directory (searched by crate hash only) by nothing but
//!   the files read from it: cargo writes other crates into those
//!   directories while the compile runs (see `compiler::rustc`).

pub mod coverage;
pub mod env;
pub mod prefix;
pub mod scratch;
pub mod trace;

use crate::compiler::rustc::SearchDirs;
use crate::compiler::time_macros::ClockUse;
use crate::digest::{self, Digest, Hash};
use crate::entry::{Dep, DepState, Kind};
use crate::stat_cache::{Stamp, StatCache};
use cachefs_mirror::{Access, Record};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What a finished compile depended on and produced.
#[derive(Debug, Default)]
pub struct Observation {
    pub deps: Vec<Dep>,
    pub outputs: Vec<PathBuf>,
    pub created_dirs: Vec<PathBuf>,
    /// Which clock macros the files it read name (see `compiler::time_macros`).
    pub clock: ClockUse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncacheable(pub String);

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Exists(Kind),
    Absent,
    /// Read, with the stamp the file had when it was opened.
    Read(cachefs_mirror::Stamp),
    Listed,
    Link(PathBuf),
    /// Read, then rewritten by the compile: the content it read.
    ReadBeforeRewrite(Hash),
}

/// What the caller knows of the call that changes the rules.
#[derive(Debug, Default, Clone)]
pub struct Rules {
    /// The compile's library search directories, listed by crate
    /// candidates (or, searched by hash only, not at all); none for a failed
    /// compile (its error message may name any file it rejected), so that
    /// every listing counts in full.
    pub search_dirs: SearchDirs,
    /// See `compiler::may_rewrite_inputs`.
    pub may_rewrite_inputs: bool,
}

#[derive(Default)]
struct Analysis {
    seen: BTreeMap<PathBuf, Seen>,
    /// What read files held right before the compile rewrote them
    /// (`Access::Superseded`), while the read is the last thing seen there.
    superseded: BTreeMap<PathBuf, Hash>,
    /// What a call that may rewrite its inputs saw at paths before it
    /// wrote them: files by the content it read, or absent, or there.
    replaced_inputs: BTreeMap<PathBuf, Seen>,
    rules: Rules,
    written: HashSet<PathBuf>,
    outputs: BTreeSet<PathBuf>,
    created_dirs: BTreeSet<PathBuf>,
    removed_foreign: BTreeSet<PathBuf>,
    /// `lib<crate>` of every crate file opened (not written) whose
    /// candidates matter: the crates the compile loaded (see
    /// `compiler::rustc::loaded_crate_stem`).
    crate_stems: BTreeSet<Vec<u8>>,
}

/// Leaves out what cachefs itself puts into every compile: the shim the
/// dynamic loader maps into each process (`libcachefs_preload*.so`), and the
/// directories walked to reach it that nothing else was reached through. It
/// is not an input: two installs, or two builds of cachefs, share results.
pub fn drop_own_files(record: &mut Record) {
    let own = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("libcachefs_preload") && n.ends_with(".so"))
    };
    let shims: HashSet<PathBuf> = record
        .accesses
        .iter()
        .filter_map(|a| match a {
            Access::Open {
                path, write: false, ..
            }
            | Access::Found { path, .. } => Some(path),
            _ => None,
        })
        .filter(|p| own(p))
        .cloned()
        .collect();
    drop_reaching(record, &shims);
}

/// Takes the lookups and reads of `paths` out of `record`, with the lookups
/// of the directories walked to reach them that nothing else in the record
/// was reached through.
pub fn drop_reaching(record: &mut Record, paths: &HashSet<PathBuf>) {
    if paths.is_empty() {
        return;
    }
    // A directory is walked only to reach them when every access under it is
    // one of them or such a directory itself: grown until nothing is added.
    let mut dropped = paths.clone();
    loop {
        let used: HashSet<&Path> = record
            .accesses
            .iter()
            .filter_map(access_path)
            .filter(|p| !dropped.contains(*p))
            .flat_map(|p| p.ancestors().skip(1))
            .collect();
        let more: Vec<PathBuf> = paths
            .iter()
            .flat_map(|p| p.ancestors().skip(1))
            .filter(|d| !used.contains(d) && !dropped.contains(*d))
            .map(Path::to_path_buf)
            .collect();
        if more.is_empty() {
            break;
        }
        dropped.extend(more);
    }
    record.accesses.retain(|a| match a {
        Access::Open {
            path, write: false, ..
        }
        | Access::Found { path, .. }
        | Access::NotFound { path } => !dropped.contains(path),
        _ => true,
    });
}

/// The path an access is at (the destination of a rename).
fn access_path(a: &Access) -> Option<&Path> {
    match a {
        Access::Found { path, .. }
        | Access::NotFound { path }
        | Access::Open { path, .. }
        | Access::ReadDir { path }
        | Access::ReadLink { path, .. }
        | Access::SetAttr { path, .. }
        | Access::Created { path, .. }
        | Access::Removed { path }
        | Access::Superseded { path, .. }
        | Access::Unobservable { path, .. } => Some(path),
        Access::Renamed { to, .. } => Some(to),
    }
}

pub fn analyze(
    record: &Record,
    cache: &StatCache,
    rules: &Rules,
) -> Result<Observation, Uncacheable> {
    let mut a = Analysis {
        rules: rules.clone(),
        ..Analysis::default()
    };
    for access in &record.accesses {
        a.apply(access)?;
    }
    if let Some(p) = a.removed_foreign.iter().find(|p| !a.outputs.contains(*p)) {
        return Err(Uncacheable(format!(
            "deletes {} which it did not create",
            p.display()
        )));
    }
    a.finish(cache)
}

fn fail<T>(why: &str, path: &Path) -> Result<T, Uncacheable> {
    Err(Uncacheable(format!("{why}: {}", path.display())))
}

impl Analysis {
    fn apply(&mut self, access: &Access) -> Result<(), Uncacheable> {
        match access {
            Access::Found { path, kind } => self.note(path, Seen::Exists(kind_of(*kind))),
            Access::NotFound { path } => self.not_found(path),
            Access::Open {
                path,
                read,
                write,
                truncate,
                created,
                stamp,
                ..
            } => self.open(path, *read, *write, *truncate, *created, *stamp),
            Access::ReadDir { path } => self.note(path, Seen::Listed),
            Access::ReadLink { path, target } => self.note(path, Seen::Link(target.clone())),
            Access::SetAttr { path, .. } => {
                if self.written.contains(path) {
                    Ok(())
                } else {
                    fail("changes the attributes of a file it did not write", path)
                }
            }
            Access::Created { path, kind } => {
                self.write(path)?;
                if kind_of(*kind) == Kind::Dir {
                    self.outputs.remove(path);
                    self.created_dirs.insert(path.clone());
                }
                Ok(())
            }
            Access::Removed { path } => self.remove(path),
            Access::Renamed { from, to } => self.rename(from, to),
            Access::Superseded { path, stamp, hash } => {
                if matches!(self.seen.get(path), Some(Seen::Read(read)) if read == stamp) {
                    self.superseded.insert(path.clone(), *hash);
                }
                Ok(())
            }
            Access::Unobservable { path, what } => fail(what, path),
        }
    }

    /// Records the first thing seen at a path that the compile has not
    /// written; a stronger observation (read, listed) replaces a mere lookup.
    fn note(&mut self, path: &Path, seen: Seen) -> Result<(), Uncacheable> {
        if self.written.contains(path) {
            return Ok(());
        }
        match self.seen.get(path) {
            None | Some(Seen::Exists(_)) => {
                self.seen.insert(path.to_path_buf(), seen);
            }
            Some(Seen::Absent) if !matches!(seen, Seen::Absent) => {
                return fail("input appeared during the compile", path)
            }
            _ => {}
        }
        Ok(())
    }

    fn not_found(&mut self, path: &Path) -> Result<(), Uncacheable> {
        if self.written.contains(path) {
            return Ok(());
        }
        match self.seen.get(path) {
            None | Some(Seen::Absent) => {
                self.seen.insert(path.to_path_buf(), Seen::Absent);
                Ok(())
            }
            Some(_) => fail("input disappeared during the compile", path),
        }
    }

    fn open(
        &mut self,
        path: &Path,
        read: bool,
        write: bool,
        truncate: bool,
        created: bool,
        stamp: cachefs_mirror::Stamp,
    ) -> Result<(), Uncacheable> {
        if created || self.written.contains(path) {
            return if write || created {
                self.write(path)
            } else {
                Ok(())
            };
        }
        if write && !truncate {
            return fail("modifies an existing file in place", path);
        }
        if write {
            return self.write(path);
        }
        if read {
            if let Some(Seen::Read(first)) = self.seen.get(path) {
                if *first != stamp {
                    return fail("input changed during the compile", path);
                }
                return Ok(());
            }
            self.seen.insert(path.to_path_buf(), Seen::Read(stamp));
            self.note_crate(path);
        }
        Ok(())
    }

    fn note_crate(&mut self, path: &Path) {
        if let Some(stem) = crate::compiler::rustc::loaded_crate_stem(path) {
            self.crate_stems.insert(stem.to_vec());
        }
    }

    /// The compile (re)wrote `path`: it becomes an output, and whatever was
    /// seen there before was the previous output, not an input — unless the
    /// compile read it, which makes its result depend on that old content.
    fn write(&mut self, path: &Path) -> Result<(), Uncacheable> {
        match self.seen.get(path) {
            Some(Seen::Read(_)) => match self.superseded.get(path) {
                Some(hash) if self.rules.may_rewrite_inputs => {
                    let hash = Seen::ReadBeforeRewrite(*hash);
                    self.replaced_inputs.insert(path.to_path_buf(), hash);
                }
                _ => return fail("writes a file it also read", path),
            },
            Some(Seen::Listed) => return fail("writes a file it also read", path),
            Some(seen) if self.rules.may_rewrite_inputs => {
                self.replaced_inputs
                    .insert(path.to_path_buf(), seen.clone());
            }
            _ => {}
        }
        self.seen.remove(path);
        self.written.insert(path.to_path_buf());
        self.outputs.insert(path.to_path_buf());
        Ok(())
    }

    fn remove(&mut self, path: &Path) -> Result<(), Uncacheable> {
        if let Some(Seen::Read(_)) = self.seen.get(path) {
            return fail("deletes a file it read", path);
        }
        if !self.written.contains(path) {
            self.removed_foreign.insert(path.to_path_buf());
        }
        self.seen.remove(path);
        self.written.insert(path.to_path_buf());
        self.outputs.remove(path);
        self.created_dirs.remove(path);
        Ok(())
    }

    fn rename(&mut self, from: &Path, to: &Path) -> Result<(), Uncacheable> {
        if !self.written.contains(from) {
            return fail("renames a file it did not create", from);
        }
        let was_dir = self.created_dirs.contains(from);
        self.remove(from)?;
        self.write(to)?;
        if was_dir {
            self.outputs.remove(to);
            self.created_dirs.insert(to.to_path_buf());
        }
        Ok(())
    }

    fn finish(self, cache: &StatCache) -> Result<Observation, Uncacheable> {
        let mut deps = Vec::with_capacity(self.seen.len() + self.replaced_inputs.len());
        let mut clock = ClockUse::default();
        for (path, seen) in self.seen.iter().chain(&self.replaced_inputs) {
            if let Some(state) = self.dep_state(path, seen, cache, &mut clock)? {
                deps.push(Dep {
                    path: path.as_os_str().as_bytes().to_vec(),
                    state,
                });
            }
        }
        if !self.replaced_inputs.is_empty() {
            // In path order, as the rest.
            let path = |d: &Dep| PathBuf::from(std::ffi::OsStr::from_bytes(&d.path));
            deps.sort_by_key(path);
        }
        let outputs = self
            .outputs
            .iter()
            .filter(|p| std::fs::symlink_metadata(p).is_ok())
            .cloned()
            .collect();
        Ok(Observation {
            deps,
            outputs,
            created_dirs: self.created_dirs.into_iter().collect(),
            clock,
        })
    }

    fn dep_state(
        &self,
        path: &Path,
        seen: &Seen,
        cache: &StatCache,
        clock: &mut ClockUse,
    ) -> Result<Option<DepState>, Uncacheable> {
        Ok(Some(match seen {
            Seen::Absent => DepState::Absent,
            Seen::Link(t) => DepState::Symlink(t.as_os_str().as_bytes().to_vec()),
            Seen::Exists(Kind::Dir) if self.implied_by_descendant(path) => return Ok(None),
            Seen::Exists(kind) => DepState::Exists(*kind),
            Seen::Read(stamp) => {
                let digest = self.read_digest(path, stamp, cache)?;
                clock.add(digest.time_macros, path);
                DepState::File(digest.hash)
            }
            Seen::Listed => self.listing_state(path)?,
            Seen::ReadBeforeRewrite(hash) => DepState::File(*hash),
        }))
    }

    fn listing_state(&self, dir: &Path) -> Result<DepState, Uncacheable> {
        let created = |name: &std::ffi::OsStr| self.written.contains(&dir.join(name));
        let vanished = |_| fail("listed directory vanished", dir);
        if self.rules.search_dirs.by_name.iter().any(|d| d == dir) {
            let stems: Vec<Vec<u8>> = self.crate_stems.iter().cloned().collect();
            let hash = digest::candidates_hash(dir, &stems, &created).or_else(vanished)?;
            return Ok(DepState::Candidates { stems, hash });
        }
        if self.rules.search_dirs.by_hash.iter().any(|d| d == dir) {
            return Ok(DepState::Exists(Kind::Dir));
        }
        let hash = digest::listing_hash(dir, &created).or_else(vanished)?;
        Ok(DepState::Listing(hash))
    }

    /// A directory that was only walked through is implied by any existing
    /// path recorded beneath it: validating that path fails if the directory
    /// goes. (An absent path beneath it implies nothing.)
    fn implied_by_descendant(&self, dir: &Path) -> bool {
        self.seen
            .range(dir.to_path_buf()..)
            .skip(1)
            .take_while(|(p, _)| p.starts_with(dir))
            .any(|(p, s)| p != dir && !matches!(s, Seen::Absent))
    }

    fn read_digest(
        &self,
        path: &Path,
        opened: &cachefs_mirror::Stamp,
        cache: &StatCache,
    ) -> Result<Digest, Uncacheable> {
        match cache.file_digest(path) {
            Ok(Some((now, digest))) if same_file(opened, &now) => Ok(digest),
            Ok(Some(_)) => fail("input changed during the compile", path),
            Ok(None) => fail("input vanished or changed during the compile", path),
            Err(e) => Err(Uncacheable(format!(
                "cannot hash input {}: {e}",
                path.display()
            ))),
        }
    }
}

fn same_file(opened: &cachefs_mirror::Stamp, now: &Stamp) -> bool {
    opened.dev == now.dev
        && opened.ino == now.ino
        && opened.size == now.size
        && opened.mtime_ns == now.mtime_ns
        && opened.ctime_ns == now.ctime_ns
}

fn kind_of(k: cachefs_mirror::Kind) -> Kind {
    match k {
        cachefs_mirror::Kind::File => Kind::File,
        cachefs_mirror::Kind::Dir => Kind::Dir,
        cachefs_mirror::Kind::Symlink => Kind::Symlink,
        cachefs_mirror::Kind::Other => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::validate::validate;
    use crate::entry::DepSet;
    use cachefs_mirror::{Access, Record};

    #[test]
    fn a_dropped_probe_takes_the_directories_walked_only_to_it() {
        let found = |p: &str| Access::Found {
            path: PathBuf::from(p),
            kind: cachefs_mirror::Kind::Dir,
        };
        let probe = |p: &str| Access::NotFound {
            path: PathBuf::from(p),
        };
        let mut record = Record {
            accesses: vec![
                found("/root"),
                found("/root/.cargo"),
                found("/root/.cargo/bin"),
                probe("/root/.cargo/bin/as"),
                found("/root/src"),
                probe("/root/src/x.h"),
                found("/usr/bin"),
                probe("/usr/bin/as"),
            ],
        };
        let dropped = ["/root/.cargo/bin/as", "/usr/bin/as"];
        drop_reaching(&mut record, &dropped.iter().map(PathBuf::from).collect());
        let left: Vec<Access> = ["/root", "/root/src"]
            .iter()
            .map(|p| found(p))
            .chain([probe("/root/src/x.h")])
            .collect();
        assert_eq!(
            record.accesses, left,
            "/usr/bin went too: nothing else under it"
        );
    }

    fn stamp_of(p: &Path) -> cachefs_mirror::Stamp {
        let s = Stamp::of(&std::fs::symlink_metadata(p).unwrap());
        cachefs_mirror::Stamp {
            dev: s.dev,
            ino: s.ino,
            size: s.size,
            mtime_ns: s.mtime_ns,
            ctime_ns: s.ctime_ns,
            mode: 0o644,
        }
    }

    fn read(p: &Path) -> Access {
        Access::Open {
            path: p.to_path_buf(),
            read: true,
            write: false,
            truncate: false,
            append: false,
            created: false,
            stamp: stamp_of(p),
        }
    }

    /// rustc listed `deps` and loaded crate `foo` from it; std from elsewhere.
    fn rustc_like_record(deps: &Path, sysroot: &Path) -> Record {
        Record {
            accesses: vec![
                Access::ReadDir {
                    path: deps.to_path_buf(),
                },
                read(&deps.join("libfoo-1a.rmeta")),
                read(&sysroot.join("libstd-9z.rlib")),
                read(&sysroot.join("liblibc-8y.rlib")),
            ],
        }
    }

    fn by_name(dir: &Path) -> Rules {
        Rules {
            search_dirs: SearchDirs {
                by_name: vec![dir.to_path_buf()],
                by_hash: vec![],
            },
            may_rewrite_inputs: false,
        }
    }

    fn set(obs: Observation) -> DepSet {
        DepSet {
            deps: obs.deps,
            result: [0; 32],
        }
    }

    #[test]
    fn search_dir_is_keyed_by_the_loaded_crates_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let (deps, sysroot) = (
            dir.path().join("deps"),
            dir.path().join("lib/rustlib/x86_64-unknown-linux-gnu/lib"),
        );
        std::fs::create_dir_all(&deps).unwrap();
        std::fs::create_dir_all(&sysroot).unwrap();
        std::fs::write(deps.join("libfoo-1a.rmeta"), "foo").unwrap();
        std::fs::write(sysroot.join("libstd-9z.rlib"), "std").unwrap();
        std::fs::write(sysroot.join("liblibc-8y.rlib"), "libc").unwrap();
        let cache = StatCache::default();
        let record = rustc_like_record(&deps, &sysroot);
        let precise = set(analyze(&record, &cache, &by_name(&deps)).unwrap());
        let full = set(analyze(&record, &cache, &Rules::default()).unwrap());
        assert!(validate(&precise, &cache, &[]).is_ok());

        // Files cargo writes for other crates meanwhile, and the rlib that
        // completes foo's rmeta, change nothing for this compile...
        for other in [
            "libbar-2b.rlib",
            "libfoo_derive-3c.so",
            "foo-1a.d",
            "libfoo-1a.rlib",
        ] {
            std::fs::write(deps.join(other), "x").unwrap();
        }
        assert!(validate(&precise, &cache, &[]).is_ok());
        assert!(
            validate(&full, &cache, &[]).is_err(),
            "a full listing sees them"
        );

        // ...but a second candidate for a loaded crate would change rustc's
        // choice (or make it fail), including a crate it took from elsewhere.
        for second in ["libfoo-4d.rlib", "libstd-5e.rmeta"] {
            let p = deps.join(second);
            std::fs::write(&p, "x").unwrap();
            let m = validate(&precise, &cache, &[]).unwrap_err();
            assert_eq!(m.path, deps);
            std::fs::remove_file(&p).unwrap();
        }
        assert!(validate(&precise, &cache, &[]).is_ok());
    }

    /// The rules of an `ar` or `ranlib` call.
    const ARCHIVER: Rules = Rules {
        search_dirs: SearchDirs {
            by_name: Vec::new(),
            by_hash: Vec::new(),
        },
        may_rewrite_inputs: true,
    };

    fn rewrite_of(p: &Path, before: &[u8], stamp: cachefs_mirror::Stamp) -> Vec<Access> {
        vec![
            Access::Superseded {
                path: p.to_path_buf(),
                stamp,
                hash: *blake3::hash(before).as_bytes(),
            },
            Access::Open {
                path: p.to_path_buf(),
                read: false,
                write: true,
                truncate: true,
                append: false,
                created: false,
                stamp,
            },
        ]
    }

    /// ranlib: reads lib.a, then truncates and rewrites it.
    #[test]
    fn a_rewritten_input_is_a_dep_by_what_was_read_for_archivers_only() {
        let dir = tempfile::tempdir().unwrap();
        let (lib, obj) = (dir.path().join("lib.a"), dir.path().join("a.o"));
        std::fs::write(&lib, b"!<arch>\nunindexed").unwrap();
        std::fs::write(&obj, b"object").unwrap();
        let read_stamp = stamp_of(&lib);
        let mut accesses = vec![read(&obj), read(&lib)];
        accesses.extend(rewrite_of(&lib, b"!<arch>\nunindexed", read_stamp));
        let record = Record { accesses };
        let cache = StatCache::default();
        let obs = analyze(&record, &cache, &ARCHIVER).unwrap();
        assert_eq!(obs.outputs, vec![lib.clone()]);
        let paths: Vec<_> = obs.deps.iter().map(|d| d.path.clone()).collect();
        assert_eq!(
            paths,
            vec![
                obj.as_os_str().as_bytes().to_vec(),
                lib.as_os_str().as_bytes().to_vec()
            ]
        );
        let set = set(obs);
        assert!(validate(&set, &cache, &[]).is_ok(), "the unindexed archive");
        std::fs::write(&lib, b"!<arch>\nindexed!!!").unwrap();
        assert!(validate(&set, &cache, &[]).is_err(), "the indexed one");

        let compiler = analyze(&record, &cache, &Rules::default()).unwrap_err();
        assert!(
            compiler.0.starts_with("writes a file it also read"),
            "{compiler:?}"
        );
    }

    #[test]
    fn a_rewrite_hashed_after_the_file_changed_explains_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib.a");
        std::fs::write(&lib, b"!<arch>\n").unwrap();
        let mut other = stamp_of(&lib);
        other.size += 1;
        let mut accesses = vec![read(&lib)];
        accesses.extend(rewrite_of(&lib, b"!<arch>\nchanged", other));
        let why = analyze(&Record { accesses }, &StatCache::default(), &ARCHIVER).unwrap_err();
        assert!(why.0.starts_with("writes a file it also read"), "{why:?}");
    }

    /// `ar rc lib.a a.o` where lib.a was absent: a different archive than
    /// over an existing lib.a, so its absence is an input. gcc's `-o a.o`
    /// is looked up the same way, and its absence is not.
    #[test]
    fn an_archiver_s_created_output_keeps_its_absence_as_a_dep() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib.a");
        let create = Access::Open {
            path: lib.clone(),
            read: true,
            write: true,
            truncate: true,
            append: false,
            created: true,
            stamp: cachefs_mirror::Stamp {
                dev: 1,
                ino: 2,
                size: 0,
                mtime_ns: 0,
                ctime_ns: 0,
                mode: 0o644,
            },
        };
        let record = Record {
            accesses: vec![Access::NotFound { path: lib.clone() }, create],
        };
        std::fs::write(&lib, b"!<arch>\n").unwrap();
        let cache = StatCache::default();
        let obs = analyze(&record, &cache, &ARCHIVER).unwrap();
        assert_eq!(obs.outputs, vec![lib.clone()]);
        assert_eq!(obs.deps.len(), 1);
        assert_eq!(obs.deps[0].state, DepState::Absent);
        let compiler = analyze(&record, &cache, &Rules::default()).unwrap();
        assert!(compiler.deps.is_empty());
    }
}
