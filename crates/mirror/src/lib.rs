//! The FUSE mirror of `/`: one mount, one subtree per view (`MNT/<view-id>/…`
//! mirrors `/`), every access by a view's process tree recorded by real path.
//!
//! A compile is attributed to its view by path, not by pid: the client bind
//! mounts `MNT/<id>/<top>` over each real top-level directory in a private
//! mount namespace, so everything that compile's process tree touches goes
//! through view `<id>` and nothing else does. Each view gets fresh node ids,
//! so long kernel cache TTLs never hide a view's first access of a path.
//!
//! A tree mount ([`Mirror::mount_tree`], for `cachefs mount`) instead
//! mirrors one directory at a user-visible path, with one shared view whose
//! accesses are attributed to processes through /proc.
mod attr;
mod error;
mod fs;
mod handles;
mod inodes;
mod mount;
mod options;
mod passthrough;
mod processes;
mod record;
mod requests;
mod special;
mod superseded;
mod views;

pub use error::MirrorError;
pub use mount::{is_stale, Mirror, MirrorStats, Probe};
pub use options::MirrorOptions;
pub use processes::{IgnoreCommand, ProcessRecord};
pub use record::{Access, Kind, Record, Stamp};
pub use special::{jobserver_fifos, proc_fd_path, FifoBinds, OpenFifos};
