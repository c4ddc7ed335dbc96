//! The view registry: which views are open and what each has recorded.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::record::{Access, Record};

/// View ids are unique in the process, across mirrors too, so a stale id held
/// by a caller can never name a later view.
static NEXT_VIEW: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Default)]
struct ViewLog {
    record: Record,
    /// Idempotent accesses already recorded: a compile stats the same header
    /// or probes the same missing path many times; once is enough.
    seen: HashSet<Access>,
    /// Existing files opened for reading and not yet superseded: the ones
    /// whose content must be kept (as a hash) before the view rewrites them.
    read: HashSet<PathBuf>,
    /// Special files that carry the build's plumbing rather than inputs
    /// (jobserver FIFOs the client binds over the mirror's stand-ins): their
    /// lookups are left out of the record.
    plumbing: HashSet<PathBuf>,
}

#[derive(Debug, Default)]
pub(crate) struct ViewRegistry {
    open: HashMap<u64, ViewLog>,
}

impl ViewRegistry {
    pub fn open(&mut self, plumbing: HashSet<PathBuf>) -> u64 {
        let id = NEXT_VIEW.fetch_add(1, Ordering::Relaxed);
        let log = ViewLog {
            plumbing,
            ..ViewLog::default()
        };
        self.open.insert(id, log);
        id
    }

    pub fn is_plumbing(&self, id: u64, path: &Path) -> bool {
        self.open
            .get(&id)
            .is_some_and(|log| log.plumbing.contains(path))
    }

    pub fn close(&mut self, id: u64) -> Option<Record> {
        self.open.remove(&id).map(|log| log.record)
    }

    pub fn is_open(&self, id: u64) -> bool {
        self.open.contains_key(&id)
    }

    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.open.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Appends `access` to the view's record unless the view is closed or the
    /// access is a repeat of an idempotent one.
    pub fn record(&mut self, id: u64, access: Access) {
        let Some(log) = self.open.get_mut(&id) else {
            return;
        };
        if is_idempotent(&access) && !log.seen.insert(access.clone()) {
            return;
        }
        match &access {
            Access::Open {
                path,
                read: true,
                write: false,
                created: false,
                ..
            } => {
                log.read.insert(path.clone());
            }
            Access::Superseded { path, .. } => {
                log.read.remove(path);
            }
            _ => {}
        }
        log.record.accesses.push(access);
    }

    /// Whether the view read `path` (an existing file) and has not yet been
    /// told what it held before being rewritten.
    pub fn was_read(&self, id: u64, path: &Path) -> bool {
        self.open
            .get(&id)
            .is_some_and(|log| log.read.contains(path))
    }
}

pub(crate) fn is_idempotent(access: &Access) -> bool {
    matches!(
        access,
        Access::Found { .. }
            | Access::NotFound { .. }
            | Access::ReadDir { .. }
            | Access::ReadLink { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn dedupes_idempotent_accesses_only() {
        let mut v = ViewRegistry::default();
        let id = v.open(HashSet::new());
        let missing = Access::NotFound {
            path: PathBuf::from("/x"),
        };
        let removed = Access::Removed {
            path: PathBuf::from("/y"),
        };
        for _ in 0..2 {
            v.record(id, missing.clone());
            v.record(id, removed.clone());
        }
        let rec = v.close(id).unwrap();
        assert_eq!(rec.accesses, vec![missing, removed.clone(), removed]);
        assert!(v.close(id).is_none());
        let next = v.open(HashSet::new());
        assert!(next > id);
    }
}
