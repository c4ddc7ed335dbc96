//! A remote run's outputs written where the compile would have written them.

use super::*;

/// Writes the outputs where the compile would have, each replaced whole (a reader never
/// sees half a file), with the mode the earlier compile's output had.
pub(super) fn write_outputs(
    outputs: &BTreeMap<String, (Vec<u8>, bool)>,
    cwd: &Path,
    modes: &[(PathBuf, Option<u32>)],
) -> Result<(), String> {
    for (rel, (data, executable)) in outputs {
        let path = cwd.join(rel);
        let mode = modes
            .iter()
            .find_map(|(p, m)| (*p == path).then_some(*m).flatten())
            .unwrap_or(if *executable { 0o755 } else { 0o644 });
        let tmp = path.with_file_name(format!(
            ".{}.cachefs-remote-{}",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            std::process::id()
        ));
        let written = std::fs::write(&tmp, data)
            .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("cannot write {}: {e}", path.display()));
        }
    }
    Ok(())
}

/// The record with each open's stamp as the file is here now (inputs: checked unchanged
/// since they were sent; outputs: just written).
pub(super) fn stamped(mut record: Record) -> Record {
    for a in &mut record.accesses {
        if let Access::Open { path, stamp, .. } = a {
            if let Ok(m) = std::fs::metadata(&*path) {
                *stamp = cachefs_mirror::Stamp::of(&m);
            }
        }
    }
    record
}
