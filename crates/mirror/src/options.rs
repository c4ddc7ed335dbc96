//! How a mirror is mounted.

use std::path::PathBuf;
use std::time::Duration;

/// Settings for [`crate::Mirror::mount`].
#[derive(Clone, Debug)]
pub struct MirrorOptions {
    /// Daemon threads serving FUSE requests (one cloned /dev/fuse fd each).
    pub threads: usize,
    /// Real paths that look absent inside every view. The mountpoint itself
    /// is always added: a view that could reach the mirror would make the
    /// daemon wait on itself.
    pub hide: Vec<PathBuf>,
    /// Ask the kernel for FUSE passthrough (data and mmap served by the
    /// kernel from the real file). Falls back to daemon reads when refused.
    pub passthrough: bool,
    /// Entry and attribute TTL given to the kernel. Views get fresh inodes,
    /// so a long TTL never hides a view's first access of a path.
    pub ttl: Duration,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        MirrorOptions {
            threads: 4,
            hide: Vec::new(),
            passthrough: true,
            ttl: Duration::from_secs(60),
        }
    }
}
