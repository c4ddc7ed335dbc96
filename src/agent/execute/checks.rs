//! What is checked here of a remote run's replayed trace before its result is believed.

use super::*;

/// Whatever the remote compile did not find is absent here, and a directory it listed
/// lists the same here.
/// (An output looked up before the compile made it is absent there and here is the last
/// build's: its absence is the compile's own doing, not an input.)
pub(super) fn check_here(replayed: &trace::Replayed, written: &[&Path]) -> Result<(), String> {
    for path in &replayed.absent {
        if !written.contains(&path.as_path()) && std::fs::symlink_metadata(path).is_ok() {
            return Err(format!(
                "input root incomplete: {} exists here",
                path.display()
            ));
        }
    }
    for (dir, names) in &replayed.listed {
        let mut here: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .map_err(|e| format!("input root incomplete: {}: {e}", dir.display()))?
            .flatten()
            .map(|e| e.file_name().as_bytes().to_vec())
            .collect();
        here.sort();
        let mut there = names.clone();
        there.sort();
        if here != there {
            return Err(format!(
                "input root incomplete: {} lists other names here",
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Every path the compile wrote, made or moved something to.
pub(super) fn written_by(record: &Record) -> Vec<&Path> {
    record
        .accesses
        .iter()
        .filter_map(|a| match a {
            Access::Open {
                path, write: true, ..
            }
            | Access::Created { path, .. } => Some(path.as_path()),
            Access::Renamed { to, .. } => Some(to.as_path()),
            _ => None,
        })
        .collect()
}

/// The program the remote run started is the compiler the build started here.
pub(super) fn check_compiler(calls: &[trace::Call], compiler: &[u8]) -> Result<(), String> {
    let started = calls
        .iter()
        .find(|c| c.name == "execve" && c.ret == 0)
        .and_then(|c| c.args.first())
        .and_then(|a| a.strip_prefix('"')?.strip_suffix('"').map(PathBuf::from))
        .ok_or("the trace shows no program started")?;
    let here = Path::new(OsStr::from_bytes(compiler));
    let same = |p: &Path| std::fs::canonicalize(p).ok();
    if same(&started).is_none() || same(&started) != same(here) {
        return Err(format!(
            "the remote run started {}, not {}",
            started.display(),
            here.display()
        ));
    }
    Ok(())
}

/// Every file the compile wrote and left is one of the outputs that came back.
pub(super) fn check_written(
    record: &Record,
    outputs: &BTreeMap<String, (Vec<u8>, bool)>,
    cwd: &Path,
) -> Result<(), String> {
    let mut written: BTreeMap<&Path, bool> = BTreeMap::new();
    for a in &record.accesses {
        match a {
            Access::Open {
                path, write: true, ..
            } => {
                written.insert(path, true);
            }
            Access::Removed { path } => {
                written.insert(path, false);
            }
            Access::Renamed { from, to } => {
                written.insert(from, false);
                written.insert(to, true);
            }
            _ => {}
        }
    }
    for (path, left) in written {
        if !left {
            continue;
        }
        let back = path
            .strip_prefix(cwd)
            .ok()
            .and_then(|r| r.to_str())
            .is_some_and(|r| outputs.contains_key(r));
        if !back {
            return Err(format!(
                "wrote {}, which was not asked back (an output the earlier compile did not make)",
                path.display()
            ));
        }
    }
    Ok(())
}
