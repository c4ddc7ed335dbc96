//! Scratch directories (/tmp, /var/tmp, $TMPDIR): files read there are
//! inputs like any other, but the *listing* of a scratch directory is not.
//! nvcc lists $TMPDIR on every call (for its `tmpxft_*` names), and a shared
//! temp directory changes all the time: keyed on its listing, nothing would
//! ever hit again. What a compile finds or misses there by name is still
//! recorded (a lookup, an open, a failed probe).

use cachefs_mirror::{Access, Record};
use std::path::{Path, PathBuf};

pub fn scratch_dirs(tmpdir: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/tmp"), PathBuf::from("/var/tmp")];
    if let Some(t) = tmpdir.filter(|t| t.is_absolute()) {
        dirs.push(t.canonicalize().unwrap_or_else(|_| t.to_path_buf()));
    }
    dirs
}

/// The record without listings of scratch directories.
pub fn without_scratch_listings(record: &Record, scratch: &[PathBuf]) -> Record {
    let accesses = record
        .accesses
        .iter()
        .filter(|a| !matches!(a, Access::ReadDir { path } if scratch.iter().any(|s| s == path)))
        .cloned()
        .collect();
    Record { accesses }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scratch_listings_are_dropped() {
        let record = Record {
            accesses: vec![
                Access::ReadDir {
                    path: "/tmp".into(),
                },
                Access::ReadDir {
                    path: "/tmp/project".into(),
                },
                Access::NotFound {
                    path: "/tmp/x.h".into(),
                },
                Access::ReadDir {
                    path: "/scratch".into(),
                },
            ],
        };
        let kept = without_scratch_listings(&record, &scratch_dirs(Some(Path::new("/scratch"))));
        assert_eq!(
            kept.accesses,
            vec![
                Access::ReadDir {
                    path: "/tmp/project".into()
                },
                Access::NotFound {
                    path: "/tmp/x.h".into()
                },
            ]
        );
    }
}
