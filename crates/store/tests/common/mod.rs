#![allow(dead_code)]

use std::path::{Path, PathBuf};

use cachefs_store::Hash;

/// Incompressible bytes, so blob sizes on disk are predictable.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

pub fn key(n: u64) -> Hash {
    *blake3::hash(&n.to_le_bytes()).as_bytes()
}

pub fn hex(id: &Hash) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn blob_file(dir: &Path, id: &Hash) -> PathBuf {
    let h = hex(id);
    dir.join("blobs").join(&h[..2]).join(h)
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".tmp"))
        .collect()
}

pub mod alloc;
/// The root crate's real memcached and redis-server helpers, shared by path
/// (test helpers are not a crate's API).
#[path = "../../../../tests/common/servers.rs"]
#[allow(dead_code)]
pub mod servers;

/// Six threads of `per_thread` rounds each on one store: every round puts a
/// shared and an own blob, a result and a manifest, reads back earlier ones
/// (which must be intact when still there) and the shared blob.
pub fn hammer(store: &std::sync::Arc<cachefs_store::LocalStore>, per_thread: u64) {
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let store = std::sync::Arc::clone(store);
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let shared = noise(i % 13, 20_000);
                    let s = store.put_blob(&shared).unwrap();
                    let own = store.put_blob(&noise(100 + t * 1000 + i, 20_000)).unwrap();
                    let id = key(t * 1000 + i);
                    store.put_result(&id, &noise(i, 300), &[s, own]).unwrap();
                    store.put_manifest(&id, &noise(i, 200)).unwrap();
                    for back in [i, i / 2, i / 3] {
                        let id = key(t * 1000 + back);
                        if let Some(v) = store.get_result(&id).unwrap() {
                            assert_eq!(v, noise(back, 300));
                        }
                        assert_eq!(store.get_manifest(&id).unwrap().unwrap(), noise(back, 200));
                    }
                    if let Some(got) = store.get_blob(&s).unwrap() {
                        assert_eq!(got, shared);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
