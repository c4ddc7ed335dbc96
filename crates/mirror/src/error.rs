//! Errors of mounting and unmounting the mirror.

use std::io;
use std::path::PathBuf;

/// Why the mirror could not be mounted or unmounted. Each message names what
/// failed, on which path, and what to do about it.
#[derive(thiserror::Error, Debug)]
pub enum MirrorError {
    #[error(
        "/dev/fuse is missing: install fuse3 or load the fuse kernel module (`modprobe fuse`)"
    )]
    NoFuseDevice,
    #[error("cannot open /dev/fuse: {source}; run as root, or make /dev/fuse readable and writable by all (chmod 666 /dev/fuse, the Debian default) so that fusermount3 can mount for this user")]
    FuseDevice { source: io::Error },
    #[error("cannot mirror {path}: {source}; give an existing directory")]
    Source { path: PathBuf, source: io::Error },
    #[error("cannot create the mountpoint {path}: {source}; choose a writable directory")]
    Mountpoint { path: PathBuf, source: io::Error },
    #[error("a stale FUSE mount at {path} could not be detached: {source}; run `umount -l {path}` as root")]
    StaleMount { path: PathBuf, source: io::Error },
    #[error("mounting the mirror at {path} failed: {source}; mounting without fusermount3 needs root (CAP_SYS_ADMIN)")]
    Mount { path: PathBuf, source: io::Error },
    #[error("cannot start the mirror's daemon thread: {source}")]
    Thread { source: io::Error },
    #[error("unmounting the mirror at {path} failed: {source}; run `umount -l {path}` as root")]
    Unmount { path: PathBuf, source: io::Error },
}
