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
pub mod servers;
