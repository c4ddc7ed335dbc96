//! Content digests: what a file, a directory listing or a set of crate
//! candidates hashes to. The stat cache keeps them, dep sets record them,
//! validation recomputes them.

use crate::compiler::time_macros::{self, TimeMacros};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub type Hash = [u8; 32];

/// A length-prefixed field, so that adjacent fields cannot run into each
/// other ("-DA" "B" is not "-DAB").
pub fn field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// A file's content hash, and which clock macros its bytes name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    pub hash: Hash,
    pub time_macros: TimeMacros,
}

pub fn digest_file(path: &Path) -> std::io::Result<Digest> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut h = blake3::Hasher::new();
    let mut scan = time_macros::Scanner::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        scan.feed(&buf[..n]);
    }
    Ok(Digest {
        hash: *h.finalize().as_bytes(),
        time_macros: scan.finish(),
    })
}

/// Hash of a directory's entry names and kinds, leaving out `skip` (entries
/// the compile created itself).
pub fn listing_hash(dir: &Path, skip: &dyn Fn(&OsStr) -> bool) -> std::io::Result<Hash> {
    let mut names: Vec<(Vec<u8>, u8)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if skip(&name) {
            continue;
        }
        let kind = entry.file_type().map(|t| kind_byte(&t)).unwrap_or(0);
        names.push((name.as_bytes().to_vec(), kind));
    }
    names.sort();
    let mut h = blake3::Hasher::new();
    for (n, k) in names {
        field(&mut h, &n);
        h.update(&[k]);
    }
    Ok(*h.finalize().as_bytes())
}

/// Hash of the crate candidates in `dir` for `stems` (each `.rlib`/`.rmeta`
/// pair once), leaving out `skip` (entries the compile created itself).
pub fn candidates_hash(
    dir: &Path,
    stems: &[Vec<u8>],
    skip: &dyn Fn(&OsStr) -> bool,
) -> std::io::Result<Hash> {
    let mut h = blake3::Hasher::new();
    h.update(b"cachefs-candidates");
    for n in candidates(dir, stems, skip)? {
        field(&mut h, &n);
    }
    Ok(*h.finalize().as_bytes())
}

/// The crate candidates in `dir` for `stems`, sorted, each once.
pub fn candidates(
    dir: &Path,
    stems: &[Vec<u8>],
    skip: &dyn Fn(&OsStr) -> bool,
) -> std::io::Result<std::collections::BTreeSet<Vec<u8>>> {
    let mut names = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if skip(&name) {
            continue;
        }
        if let Some(c) = crate::compiler::rustc::candidate(name.as_bytes(), stems) {
            names.insert(c.to_vec());
        }
    }
    Ok(names)
}

fn kind_byte(t: &std::fs::FileType) -> u8 {
    if t.is_symlink() {
        3
    } else if t.is_dir() {
        2
    } else if t.is_file() {
        1
    } else {
        4
    }
}
