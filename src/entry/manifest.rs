//! The manifest of a key1: the dep sets seen under it, most recent first,
//! and the one way a manifest in the store is updated.

use super::dep_set::DepSet;
use crate::digest::Hash;
use cachefs_store::{StoreError, TieredStore};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// The dep sets seen under one key1, most recent first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub sets: Vec<DepSet>,
}

/// Enough dep sets for a few configurations that alternate (branches, a
/// generated header that flips), and for configure, which compiles a few
/// hundred different `conftest.c` under a handful of command lines: with 16,
/// a second configure run hit 31 of 266 compiles. Lookups stay fast with
/// many: the sets of one key1 are validated together (`validate::Checked`),
/// each distinct dep checked once.
pub const MAX_DEP_SETS: usize = 256;

impl Manifest {
    pub fn decode(bytes: &[u8]) -> Option<Manifest> {
        postcard::from_bytes(bytes).ok()
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("manifest serialises")
    }

    /// Puts `set` first, replacing a set with the same deps and dropping the
    /// oldest beyond `MAX_DEP_SETS`. Returns the results no set refers to
    /// any more: nothing reaches them through this key.
    pub fn add(&mut self, set: DepSet) -> Vec<Hash> {
        let mut dropped: Vec<Hash> = Vec::new();
        self.sets.retain(|s| {
            let keep = s.deps != set.deps;
            if !keep {
                dropped.push(s.result);
            }
            keep
        });
        self.sets.insert(0, set);
        if self.sets.len() > MAX_DEP_SETS {
            dropped.extend(self.sets.drain(MAX_DEP_SETS..).map(|s| s.result));
        }
        dropped.retain(|r| self.sets.iter().all(|s| s.result != *r));
        dropped
    }
}

/// Updates the local store's manifests: one writer at a time, so that two
/// compiles of one key1 finishing together both keep their dep set.
#[derive(Default)]
pub struct ManifestWriter {
    lock: Mutex<()>,
}

impl ManifestWriter {
    /// Adds `set` to the manifest of `key` (read, decoded, added to,
    /// written back), then removes the results it no longer reaches. A
    /// result id covers the compile's time, so a result belongs to one key
    /// (a result two keys share by chance costs the other a miss): one this
    /// manifest dropped is garbage, not left for eviction. Returns the
    /// manifest as written.
    pub fn add(&self, store: &TieredStore, key: &Hash, set: DepSet) -> Result<Vec<u8>, StoreError> {
        let _guard = self.lock.lock().unwrap();
        let mut manifest = store
            .get_manifest(key)?
            .and_then(|b| Manifest::decode(&b))
            .unwrap_or_default();
        let unreachable = manifest.add(set);
        let encoded = manifest.encode();
        store.put_manifest(key, &encoded)?;
        for old in unreachable {
            if let Err(e) = store.remove_result(&old) {
                log::warn!("cannot remove a replaced result: {e}");
            }
        }
        Ok(encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::dep_set::{Dep, DepState};

    #[test]
    fn manifest_add_reports_the_results_it_no_longer_reaches() {
        let set = |dep: u16, result: u8| DepSet {
            deps: vec![Dep {
                path: dep.to_le_bytes().to_vec(),
                state: DepState::Absent,
            }],
            result: [result; 32],
        };
        let mut m = Manifest::default();
        assert!(m.add(set(1, 10)).is_empty());
        assert!(m.add(set(2, 20)).is_empty());
        // Same deps, new result: the old one is dropped.
        assert_eq!(m.add(set(1, 11)), vec![[10; 32]]);
        // Same deps and the same result: nothing is lost.
        assert!(m.add(set(1, 11)).is_empty());
        let mut last = Vec::new();
        for i in 0..MAX_DEP_SETS as u16 {
            last = m.add(set(100 + i, 20));
        }
        // Sets 2 and 1 fell off the end; result 20 is still referenced.
        assert_eq!(last, vec![[11; 32]]);
        assert_eq!(m.sets.len(), MAX_DEP_SETS);
        assert!(m.sets.iter().all(|s| s.result == [20; 32]));
    }
}
