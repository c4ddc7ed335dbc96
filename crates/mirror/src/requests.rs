//! How many FUSE requests of each kind the daemon served: the miss path's
//! cost is round trips, so these counts are what to read before tuning it
//! (`examples/overhead` prints them per compile; the agent logs them at exit).

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! ops {
    ($($op:ident => $name:literal),* $(,)?) => {
        /// A kind of FUSE request, as the daemon dispatches it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum Op {
            $($op),*
        }

        const NAMES: &[&str] = &[$($name),*];
    };
}

ops! {
    Lookup => "lookup",
    Getattr => "getattr",
    Setattr => "setattr",
    Readlink => "readlink",
    Mknod => "mknod",
    Mkdir => "mkdir",
    Unlink => "unlink",
    Rmdir => "rmdir",
    Symlink => "symlink",
    Rename => "rename",
    Link => "link",
    Open => "open",
    Read => "read",
    Write => "write",
    Flush => "flush",
    Release => "release",
    Fsync => "fsync",
    Opendir => "opendir",
    Readdir => "readdir",
    Releasedir => "releasedir",
    Fsyncdir => "fsyncdir",
    Statfs => "statfs",
    Setxattr => "setxattr",
    Getxattr => "getxattr",
    Listxattr => "listxattr",
    Removexattr => "removexattr",
    Access => "access",
    Create => "create",
    Ioctl => "ioctl",
    Lseek => "lseek",
    CopyFileRange => "copy_file_range",
    Poll => "poll",
    Fallocate => "fallocate",
}

/// One counter per kind of request.
#[derive(Debug)]
pub(crate) struct RequestCounts([AtomicU64; NAMES.len()]);

impl Default for RequestCounts {
    fn default() -> Self {
        RequestCounts(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl RequestCounts {
    pub fn count(&self, op: Op) {
        self.0[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Every kind with its count, in a fixed order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        NAMES
            .iter()
            .zip(&self.0)
            .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_kept_per_kind() {
        let counts = RequestCounts::default();
        counts.count(Op::Lookup);
        counts.count(Op::Lookup);
        counts.count(Op::Fallocate);
        let snap = counts.snapshot();
        assert_eq!(snap[0], ("lookup", 2));
        assert_eq!(snap.last(), Some(&("fallocate", 1)));
        assert_eq!(snap.iter().map(|(_, n)| n).sum::<u64>(), 3);
    }
}
