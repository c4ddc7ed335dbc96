//! A `cachefs mount` session's record: what each process run inside the
//! mount did, as run-log records (the format `deps`, `graph` and `explain`
//! read), with paths as the processes saw them (under the mountpoint).

use super::{CompileRecord, RunRecord, MOUNT_KIND};
use cachefs_mirror::{Access, ProcessRecord};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Where the mount's source and mountpoint are: record paths are real paths
/// under `src`, shown under `mnt`.
pub struct Layout {
    pub src: PathBuf,
    pub mnt: PathBuf,
}

impl Layout {
    fn shown(&self, path: &Path) -> String {
        let shown = match path.strip_prefix(&self.src) {
            Ok(rest) if rest.as_os_str().is_empty() => self.mnt.clone(),
            Ok(rest) => self.mnt.join(rest),
            Err(_) => path.to_path_buf(),
        };
        shown.to_string_lossy().into_owned()
    }
}

pub fn run_record(
    id: &str,
    started_unix_ms: u64,
    layout: &Layout,
    processes: &[ProcessRecord],
) -> RunRecord {
    RunRecord {
        id: id.to_string(),
        command: vec![
            "cachefs".into(),
            "mount".into(),
            layout.src.to_string_lossy().into_owned(),
            layout.mnt.to_string_lossy().into_owned(),
        ],
        cwd: layout.mnt.to_string_lossy().into_owned(),
        started_unix_ms,
        kind: MOUNT_KIND.into(),
        compiles: processes
            .iter()
            .map(|p| process_record(layout, p))
            .collect(),
    }
}

fn process_record(layout: &Layout, p: &ProcessRecord) -> CompileRecord {
    let paths = Paths::of(&p.accesses);
    let show = |set: Vec<&Path>| set.into_iter().map(|p| layout.shown(p)).collect();
    CompileRecord {
        argv: p
            .argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        cwd: p.cwd.to_string_lossy().into_owned(),
        unix_ms: p.first_seen_unix_ms,
        outcome: "observed".into(),
        reads: show(paths.reads),
        absent: show(paths.absent),
        listed: show(paths.listed),
        written: show(paths.written),
        pid: Some(p.pid),
        parent: p.parent,
        ..CompileRecord::default()
    }
}

/// A process's accesses sorted into what it read, looked for, listed and
/// left written. A file it created and removed again (a temporary) is not
/// among what it wrote; a file it renamed into place is, under its new name.
#[derive(Default)]
struct Paths<'a> {
    reads: Vec<&'a Path>,
    absent: Vec<&'a Path>,
    listed: Vec<&'a Path>,
    written: Vec<&'a Path>,
}

impl<'a> Paths<'a> {
    fn of(accesses: &'a [Access]) -> Paths<'a> {
        let mut p = Paths::default();
        let mut created = BTreeSet::new();
        for a in accesses {
            match a {
                Access::Open {
                    path,
                    read,
                    write,
                    created: new,
                    ..
                } => {
                    if *new {
                        created.insert(path.as_path());
                    }
                    if *read && !created.contains(path.as_path()) {
                        p.reads.push(path);
                    }
                    if *write {
                        p.written.push(path);
                    }
                }
                Access::NotFound { path } => p.absent.push(path),
                Access::ReadDir { path } => p.listed.push(path),
                Access::Created { path, .. } | Access::SetAttr { path, .. } => p.written.push(path),
                Access::Renamed { from, to } => {
                    // What `to` holds now came from `from`: an input, unless
                    // this process wrote it itself.
                    if !p.written.contains(&from.as_path()) {
                        p.reads.push(from);
                    }
                    p.written.retain(|w| w != from);
                    p.written.push(to);
                }
                Access::Removed { path } => p.written.retain(|w| w != path),
                Access::Found { .. }
                | Access::ReadLink { .. }
                | Access::Superseded { .. }
                | Access::Unobservable { .. } => {}
            }
        }
        for list in [&mut p.reads, &mut p.absent, &mut p.listed, &mut p.written] {
            dedupe(list);
        }
        p
    }
}

/// Drops repeats, keeping each path's first place.
fn dedupe(list: &mut Vec<&Path>) {
    let mut seen = BTreeSet::new();
    list.retain(|p| seen.insert(*p));
}

#[cfg(test)]
mod tests {
    use super::*;
    use cachefs_mirror::{Kind, Stamp};

    fn open(path: &str, read: bool, write: bool, created: bool) -> Access {
        Access::Open {
            path: path.into(),
            read,
            write,
            truncate: write,
            append: false,
            created,
            stamp: Stamp::default(),
        }
    }

    #[test]
    fn a_generator_writing_through_a_temporary_wrote_its_target() {
        let accesses = vec![
            open("/s/config.h.in", true, false, false),
            Access::NotFound {
                path: "/s/local.h".into(),
            },
            open("/s/config.h.tmp", true, true, true),
            open("/s/config.h.tmp", true, false, false),
            Access::Renamed {
                from: "/s/config.h.tmp".into(),
                to: "/s/config.h".into(),
            },
            open("/s/scratch", false, true, true),
            Access::Removed {
                path: "/s/scratch".into(),
            },
            Access::Found {
                path: "/s/x".into(),
                kind: Kind::File,
            },
        ];
        let layout = Layout {
            src: "/s".into(),
            mnt: "/m".into(),
        };
        let p = ProcessRecord {
            pid: 7,
            parent: Some(0),
            argv: vec!["gen".into()],
            cwd: "/m".into(),
            first_seen_unix_ms: 1,
            accesses,
        };
        let run = run_record("1-2", 1, &layout, &[p]);
        let c = &run.compiles[0];
        assert_eq!(c.reads, vec!["/m/config.h.in"]);
        let renamed = [Access::Renamed {
            from: "/s/a.tmp".into(),
            to: "/s/a".into(),
        }];
        assert_eq!(Paths::of(&renamed).reads, vec![Path::new("/s/a.tmp")]);
        assert_eq!(c.absent, vec!["/m/local.h"]);
        assert_eq!(c.written, vec!["/m/config.h"]);
        assert_eq!((c.pid, c.parent), (Some(7), Some(0)));
        assert!(run.is_mount());
    }
}
