//! Noticing that the cache directory was taken away under a running agent
//! (`rm -rf ~/.cache/cachefs`, or its index or socket deleted): the agent
//! then serves nothing anyone can reach or keep, so it exits and the next
//! compile starts a fresh agent on a fresh directory. Each watched path is
//! known by device and inode, taken at start: a path removed, or replaced by
//! another file of that name (a successor's directory), no longer matches.
//! The index is only watched for its removal: the store itself replaces a
//! damaged one (moved aside, a fresh one made) and goes on.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub struct Watched {
    paths: Vec<(PathBuf, Option<(u64, u64)>)>,
    present: Vec<PathBuf>,
}

impl Watched {
    /// The identities of `paths` now (one already missing counts as lost),
    /// and `present`, watched for removal only.
    pub fn take(paths: &[PathBuf], present: &[PathBuf]) -> Watched {
        Watched {
            paths: paths.iter().map(|p| (p.clone(), identity(p))).collect(),
            present: present.to_vec(),
        }
    }

    /// Why the agent has lost its directory, if it has: the first watched
    /// path removed or replaced.
    pub fn lost(&self) -> Option<String> {
        let replaced = self.paths.iter().find_map(|(path, then)| {
            let now = identity(path);
            match (then, now) {
                (Some(a), Some(b)) if *a == b => None,
                (_, None) => Some(format!("{} was removed", path.display())),
                _ => Some(format!("{} was replaced", path.display())),
            }
        });
        replaced.or_else(|| {
            let gone = self.present.iter().find(|p| identity(p).is_none())?;
            Some(format!("{} was removed", gone.display()))
        })
    }
}

/// Device and inode, without following a symlink (lstat).
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_or_replaced_path_is_lost() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        let index = dir.join("index");
        std::fs::write(&index, "x").unwrap();
        let redb = dir.join("redb");
        std::fs::write(&redb, "x").unwrap();
        let watched = Watched::take(&[dir.clone(), index.clone()], std::slice::from_ref(&redb));
        assert_eq!(watched.lost(), None);
        std::fs::remove_file(&redb).unwrap();
        std::fs::write(&redb, "replaced: fine").unwrap();
        assert_eq!(watched.lost(), None);
        std::fs::remove_file(&redb).unwrap();
        assert!(watched.lost().unwrap().ends_with("redb was removed"));
        std::fs::write(&redb, "x").unwrap();
        // Kept open by a second name, so the replacement cannot reuse the inode.
        let kept = tmp.path().join("kept");
        std::fs::rename(&index, &kept).unwrap();
        std::fs::write(&index, "x").unwrap();
        assert!(watched.lost().unwrap().ends_with("index was replaced"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(watched.lost().unwrap().ends_with("cache was removed"));
    }
}
