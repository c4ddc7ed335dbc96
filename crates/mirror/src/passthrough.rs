//! One kernel backing id per inode while it is open through passthrough.
//!
//! The kernel refuses a second, different backing file for an inode that
//! already has one in use (EBUSY at open), so concurrent opens of one inode
//! must share the id. Each open file holds a strong reference; the id is
//! closed in the kernel when the last one is released.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Weak};

use fuser::BackingId;

/// Dead entries are swept when the map reaches this size (and then twice the
/// live count): an entry can outlive its id when the last reference is
/// dropped by a thread other than the releasing one.
const FIRST_SWEEP: usize = 64;

#[derive(Debug)]
pub(crate) struct BackingCache {
    by_ino: HashMap<u64, Weak<BackingId>>,
    sweep_at: usize,
}

impl Default for BackingCache {
    fn default() -> Self {
        BackingCache {
            by_ino: HashMap::new(),
            sweep_at: FIRST_SWEEP,
        }
    }
}

impl BackingCache {
    /// The live backing id of `ino`, or a new one made by `create`. Called
    /// under the cache lock so two opens cannot race to two ids; `create` is
    /// one non-blocking ioctl.
    pub fn get_or_create(
        &mut self,
        ino: u64,
        create: impl FnOnce() -> io::Result<BackingId>,
    ) -> io::Result<Arc<BackingId>> {
        if let Some(id) = self.by_ino.get(&ino).and_then(Weak::upgrade) {
            return Ok(id);
        }
        let id = Arc::new(create()?);
        self.by_ino.insert(ino, Arc::downgrade(&id));
        if self.by_ino.len() >= self.sweep_at {
            self.by_ino.retain(|_, w| w.strong_count() > 0);
            self.sweep_at = (2 * self.by_ino.len()).max(FIRST_SWEEP);
        }
        Ok(id)
    }

    /// Drops the entry of `ino` once no open file holds its id.
    pub fn prune(&mut self, ino: u64) {
        if self.by_ino.get(&ino).is_some_and(|w| w.strong_count() == 0) {
            self.by_ino.remove(&ino);
        }
    }

    /// Backing ids alive in the kernel.
    pub fn live(&self) -> usize {
        self.by_ino
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_errors_pass_through_and_leave_nothing() {
        let mut cache = BackingCache::default();
        let err = cache.get_or_create(7, || Err(io::Error::from_raw_os_error(libc::EPERM)));
        assert_eq!(err.unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert_eq!(cache.live(), 0);
        cache.prune(7);
        assert!(cache.by_ino.is_empty());
    }
}
