//! The inode table: FUSE node id → (view, real path, kind).
//!
//! Every (view, path) gets its own node id, never reused, so the kernel's
//! caches for one view say nothing about another view: a view's first lookup
//! of a path always reaches the daemon.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::record::Kind;

/// The mount root's node id.
const ROOT_INO: u64 = 1;

/// Node ids below this are reserved (1 is the mount root).
const FIRST_INO: u64 = 2;

/// What a node id stands for, cheap to clone out of the table.
#[derive(Clone, Debug)]
pub(crate) struct NodeRef {
    pub view: u64,
    pub path: Arc<Path>,
    pub kind: Kind,
    /// False once the path was unlinked or renamed over: the kernel may still
    /// hold the node (an open file), but the path names something else.
    pub linked: bool,
}

#[derive(Debug)]
struct Node {
    node: NodeRef,
    lookups: u64,
}

/// One open view's nodes. The entry exists exactly while the view is open, so
/// a lookup racing with `close_view` cannot leave nodes behind.
#[derive(Debug, Default)]
struct ViewNodes {
    by_path: HashMap<Arc<Path>, u64>,
    orphans: HashSet<u64>,
}

#[derive(Debug)]
pub(crate) struct InodeTable {
    nodes: HashMap<u64, Node>,
    views: HashMap<u64, ViewNodes>,
    next: u64,
}

impl Default for InodeTable {
    fn default() -> Self {
        InodeTable {
            nodes: HashMap::new(),
            views: HashMap::new(),
            next: FIRST_INO,
        }
    }
}

impl InodeTable {
    pub fn open_view(&mut self, view: u64) {
        self.views.entry(view).or_default();
    }

    /// A tree mount's root: node 1 stands for the directory `path` of
    /// `view` for as long as the mount lives (the kernel never forgets it).
    pub fn pin_root(&mut self, view: u64, path: &Path) {
        self.open_view(view);
        let path: Arc<Path> = Arc::from(path);
        let nodes = self.views.get_mut(&view).expect("just opened");
        nodes.by_path.insert(path.clone(), ROOT_INO);
        let node = NodeRef {
            view,
            path,
            kind: Kind::Dir,
            linked: true,
        };
        let lookups = u64::MAX / 2;
        self.nodes.insert(ROOT_INO, Node { node, lookups });
    }

    /// Forgets every node of `view`; later kernel requests on them fail.
    pub fn close_view(&mut self, view: u64) {
        let Some(nodes) = self.views.remove(&view) else {
            return;
        };
        for ino in nodes.by_path.values().chain(nodes.orphans.iter()) {
            self.nodes.remove(ino);
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn get(&self, ino: u64) -> Option<NodeRef> {
        self.nodes.get(&ino).map(|n| n.node.clone())
    }

    /// The node id of (view, path) if the kernel knows one, without counting
    /// a lookup (for readdir's d_ino).
    pub fn peek(&self, view: u64, path: &Path) -> Option<u64> {
        self.views.get(&view)?.by_path.get(path).copied()
    }

    /// Counts one kernel lookup of (view, path) and returns its node id, or
    /// None when the view is closed. A path whose kind changed gets a new id:
    /// the kernel must not see a file turn into a directory under one id.
    pub fn remember(&mut self, view: u64, path: &Path, kind: Kind) -> Option<u64> {
        let nodes = self.views.get_mut(&view)?;
        if let Some(&ino) = nodes.by_path.get(path) {
            let node = self.nodes.get_mut(&ino).expect("by_path and nodes agree");
            if node.node.kind == kind {
                node.lookups += 1;
                return Some(ino);
            }
            self.orphan(view, path);
        }
        Some(self.insert(view, path, kind))
    }

    fn insert(&mut self, view: u64, path: &Path, kind: Kind) -> u64 {
        let ino = self.next;
        self.next += 1;
        let path: Arc<Path> = Arc::from(path);
        let nodes = self.views.get_mut(&view).expect("caller checked the view");
        nodes.by_path.insert(path.clone(), ino);
        let node = NodeRef {
            view,
            path,
            kind,
            linked: true,
        };
        self.nodes.insert(ino, Node { node, lookups: 1 });
        ino
    }

    /// Drops `count` kernel references; the node goes when none remain.
    pub fn forget(&mut self, ino: u64, count: u64) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(count);
        if node.lookups > 0 {
            return;
        }
        let node = self.nodes.remove(&ino).expect("just seen").node;
        if let Some(nodes) = self.views.get_mut(&node.view) {
            nodes.orphans.remove(&ino);
            if nodes.by_path.get(&node.path) == Some(&ino) {
                nodes.by_path.remove(&node.path);
            }
        }
    }

    /// The path no longer names the node (unlink, rmdir, renamed over).
    pub fn orphan(&mut self, view: u64, path: &Path) {
        let Some(nodes) = self.views.get_mut(&view) else {
            return;
        };
        let Some(ino) = nodes.by_path.remove(path) else {
            return;
        };
        nodes.orphans.insert(ino);
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.node.linked = false;
        }
    }

    /// Moves `from` and everything below it to `to`, as the kernel moves the
    /// dentries: the same node ids now name the new paths.
    pub fn rename(&mut self, view: u64, from: &Path, to: &Path) {
        self.orphan(view, to);
        let Some(nodes) = self.views.get_mut(&view) else {
            return;
        };
        let moved: Vec<(Arc<Path>, u64)> = nodes
            .by_path
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, &ino)| (p.clone(), ino))
            .collect();
        for (old, ino) in moved {
            nodes.by_path.remove(&old);
            let new: Arc<Path> = Arc::from(reparent(&old, from, to));
            nodes.by_path.insert(new.clone(), ino);
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.node.path = new;
            }
        }
    }
}

fn reparent(path: &Path, from: &Path, to: &Path) -> PathBuf {
    let rest = path.strip_prefix(from).expect("filtered by starts_with");
    if rest.as_os_str().is_empty() {
        to.to_path_buf()
    } else {
        to.join(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_path_same_ino_within_a_view_not_across() {
        let mut t = InodeTable::default();
        t.open_view(1);
        t.open_view(2);
        let a = t.remember(1, Path::new("/usr"), Kind::Dir).unwrap();
        assert_eq!(t.remember(1, Path::new("/usr"), Kind::Dir), Some(a));
        let b = t.remember(2, Path::new("/usr"), Kind::Dir).unwrap();
        assert_ne!(a, b);
        t.forget(a, 1);
        assert!(t.get(a).is_some());
        t.forget(a, 1);
        assert!(t.get(a).is_none());
        t.close_view(2);
        assert_eq!(t.len(), 0);
        assert_eq!(t.remember(2, Path::new("/x"), Kind::File), None);
    }

    #[test]
    fn rename_moves_descendants_and_orphans_target() {
        let mut t = InodeTable::default();
        t.open_view(1);
        let d = t.remember(1, Path::new("/t/d"), Kind::Dir).unwrap();
        let f = t.remember(1, Path::new("/t/d/f"), Kind::File).unwrap();
        let e = t.remember(1, Path::new("/t/e"), Kind::Dir).unwrap();
        t.rename(1, Path::new("/t/d"), Path::new("/t/e"));
        assert_eq!(&*t.get(d).unwrap().path, Path::new("/t/e"));
        assert_eq!(&*t.get(f).unwrap().path, Path::new("/t/e/f"));
        assert!(!t.get(e).unwrap().linked);
        assert_eq!(t.peek(1, Path::new("/t/e/f")), Some(f));
        t.close_view(1);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn kind_change_gets_a_new_ino() {
        let mut t = InodeTable::default();
        t.open_view(1);
        let a = t.remember(1, Path::new("/x"), Kind::File).unwrap();
        let b = t.remember(1, Path::new("/x"), Kind::Dir).unwrap();
        assert_ne!(a, b);
        assert!(!t.get(a).unwrap().linked);
    }
}
