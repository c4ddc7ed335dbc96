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
    /// CPUs the daemon threads run on (all when empty). A request is a
    /// wake-up of a daemon thread and then of the requester: on the same
    /// CPU both are cheap context switches, across CPUs each can be an
    /// inter-processor interrupt (70 µs per round trip against 6.5 µs on one
    /// vCPU of the VM measured in DESIGN.md).
    pub cpus: Vec<usize>,
    /// How long the daemon holds each liveness probe before answering it:
    /// zero except in the test of an agent killed meanwhile.
    pub probe_delay: Duration,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        MirrorOptions {
            threads: default_threads(),
            hide: Vec::new(),
            passthrough: true,
            ttl: Duration::from_secs(60),
            cpus: Vec::new(),
            probe_delay: Duration::ZERO,
        }
    }
}

/// One daemon thread per two CPUs (at most 8). Every request is a round trip
/// between a compile's thread and a daemon thread; on a 2-CPU machine four
/// daemon threads made a small compile's overhead +49–57 % against +18–36 %
/// with one or two (`examples/overhead`), the extra threads only adding
/// wake-ups and context switches.
fn default_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cpus / 2).clamp(1, 8)
}
