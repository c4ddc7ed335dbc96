//! Keys whose results are being written after the client was released.

use crate::entry::Hash;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A lookup never waits longer than this for a save: a slow disk must not
/// stall the build; the lookup then simply misses.
const MAX_WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct PendingSaves {
    keys: Mutex<HashMap<Hash, usize>>,
    done: Condvar,
}

pub struct Hold<'a> {
    owner: &'a PendingSaves,
    key: Hash,
}

impl PendingSaves {
    pub fn hold(&self, key: Hash) -> Hold<'_> {
        *self.keys.lock().unwrap().entry(key).or_default() += 1;
        Hold { owner: self, key }
    }

    pub fn wait_for(&self, key: &Hash) {
        let keys = self.keys.lock().unwrap();
        let _ = self
            .done
            .wait_timeout_while(keys, MAX_WAIT, |k| k.contains_key(key));
    }
}

impl PendingSaves {
    /// Waits until no save is in flight: statistics then describe a store
    /// that has finished the work of every compile that returned.
    pub fn wait_idle(&self) {
        let keys = self.keys.lock().unwrap();
        let _ = self
            .done
            .wait_timeout_while(keys, MAX_WAIT, |k| !k.is_empty());
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let mut keys = self.owner.keys.lock().unwrap();
        if let Some(n) = keys.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                keys.remove(&self.key);
            }
        }
        self.owner.done.notify_all();
    }
}
