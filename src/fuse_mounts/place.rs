//! Where an agent mounts its mirror lanes: outside the cache directory, so
//! that `rm -rf ~/.cache/cachefs` (how ccache and sccache users empty their
//! cache) never meets a mount (EBUSY). The place is
//! `$XDG_RUNTIME_DIR/cachefs/` when that is this user's private directory,
//! else `/tmp/cachefs-<uid>/`; below it one directory per cache directory
//! (a hash of its real path) and in that one per agent (its pid), so that an
//! agent still unmounting never shares a mountpoint with its successor, and
//! a killed agent's stale mounts are found and detached by the next one.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The directory of every agent's mounts for this user (hidden from views,
/// so a view never walks into a mirror's own mount).
pub fn base_dir() -> io::Result<PathBuf> {
    if let Some(runtime) = usable_runtime_dir() {
        let base = runtime.join("cachefs");
        private_dir(&base)?;
        return Ok(base);
    }
    let uid = nix::unistd::geteuid().as_raw();
    let base = PathBuf::from(format!("/tmp/cachefs-{uid}"));
    private_dir(&base)?;
    Ok(base)
}

/// The agents' mounts of one cache directory (it need not exist any more:
/// a path that cannot be resolved is hashed as given).
pub fn cache_dir_mounts(base: &Path, cache_dir: &Path) -> PathBuf {
    let real = cache_dir
        .canonicalize()
        .unwrap_or_else(|_| cache_dir.to_path_buf());
    let hash = blake3::hash(real.as_os_str().as_bytes());
    base.join(&hash.to_hex()[..16])
}

/// Creates (or checks) this agent's directory of mounts below `cache_mounts`.
pub fn agent_dir(cache_mounts: &Path, pid: u32) -> io::Result<PathBuf> {
    let dir = cache_mounts.join(pid.to_string());
    private_dir(cache_mounts)?;
    match private_dir(&dir) {
        // Another agent's exit or a `stop` removed `cache_mounts` as it
        // emptied: once more.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            private_dir(cache_mounts)?;
            private_dir(&dir)?;
        }
        done => done?,
    }
    Ok(dir)
}

/// `$XDG_RUNTIME_DIR` when it is a real directory of this user's that no one
/// else may enter (the spec's 0700); an inherited one (`su`, `sudo`) is not.
fn usable_runtime_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?);
    if !dir.is_absolute() {
        return None;
    }
    let md = std::fs::symlink_metadata(&dir).ok()?;
    let ours = md.uid() == nix::unistd::geteuid().as_raw();
    (md.is_dir() && ours && md.mode() & 0o077 == 0).then_some(dir)
}

/// Makes `path` a directory only this user can enter: created 0700, or an
/// existing one that is a real directory (never a symlink another user
/// planted in /tmp) owned by this user, tightened to 0700.
fn private_dir(path: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(with_path(e, path, "cannot create")),
    }
    let md = std::fs::symlink_metadata(path).map_err(|e| with_path(e, path, "cannot read"))?;
    if !md.is_dir() || md.uid() != nix::unistd::geteuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory owned by this user: remove it, or set XDG_RUNTIME_DIR",
                path.display()
            ),
        ));
    }
    if md.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| with_path(e, path, "cannot chmod 700"))?;
    }
    Ok(())
}

fn with_path(e: io::Error, path: &Path, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Detaches the stale mounts agents of this cache directory left (killed,
/// their daemon gone) and removes their emptied directories. The directory
/// of a process still running (the caller's own, or an agent that lost its
/// cache directory, still shutting down) is not touched: asking a stopped
/// agent's mount whether it is stale would hang the caller. Returns the
/// mounts detached.
pub fn clean_dead_agents(cache_mounts: &Path) -> Vec<PathBuf> {
    let mut detached = Vec::new();
    let gone = |dir: &PathBuf| {
        let pid = dir.file_name().and_then(|n| n.to_str()?.parse().ok());
        pid.is_some_and(|p| !running(p))
    };
    for agent in subdirs(cache_mounts).filter(gone) {
        for mnt in subdirs(&agent) {
            if super::is_stale(&mnt) && super::detach(&mnt).is_ok() {
                detached.push(mnt.clone());
            }
            // Fails (EBUSY) on a live mount: that one is left alone.
            let _ = std::fs::remove_dir(&mnt);
        }
        let _ = std::fs::remove_dir(&agent);
    }
    // Empty now unless an agent runs (`stop` after a kill leaves nothing).
    let _ = std::fs::remove_dir(cache_mounts);
    detached
}

/// Whether process `pid` runs: a zombie (killed, not yet reaped) has
/// closed its FUSE connection already.
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    !matches!(state, Some("Z" | "X"))
}

/// Removes an agent's mount directories once its mounts are detached, and
/// the cache directory's one when no other agent's is left in it.
pub fn remove_agent_dir(dir: &Path) {
    for mnt in subdirs(dir) {
        let _ = std::fs::remove_dir(&mnt);
    }
    let _ = std::fs::remove_dir(dir);
    if let Some(cache_mounts) = dir.parent() {
        let _ = std::fs::remove_dir(cache_mounts);
    }
}

/// The directories in `dir`; a stale mount counts (its type cannot be read,
/// ENOTCONN), so only plain files and symlinks are skipped.
fn subdirs(dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map_or(true, |t| t.is_dir()))
        .map(|e| e.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_dir_is_created_0700_and_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(private_dir(&link).is_err());
    }

    #[test]
    fn each_cache_dir_and_agent_has_its_own_place() {
        let tmp = tempfile::tempdir().unwrap();
        let a = cache_dir_mounts(tmp.path(), Path::new("/x/a"));
        let b = cache_dir_mounts(tmp.path(), Path::new("/x/b"));
        assert_ne!(a, b);
        assert!(a.starts_with(tmp.path()));
        let agent = agent_dir(&a, 42).unwrap();
        assert_eq!(agent, a.join("42"));
        std::fs::create_dir(agent.join("mnt")).unwrap();
        remove_agent_dir(&agent);
        assert!(!a.exists());
        assert!(running(std::process::id()));
        assert!(!running(u32::MAX));
    }
}
