//! Fills a cache directory's store with synthetic but realistically shaped
//! entries, through the store's public API, for `scripts/bench/agent-memory.sh`:
//! each entry is a manifest with one dep set of ~100 deps (system headers
//! shared by every entry, project headers shared by a few hundred, a few
//! failed probes), a result of ~150 bytes and one object-like blob of ~1.5 KB.
//! The agent must not be running (redb allows one process).
//!
//!   cargo run --release --example fill_cache -- DIR FROM TO
//! adds entries FROM..TO (so a cache can be grown in steps).

use cachefs::entry::{Dep, DepSet, DepState, Manifest};
use cachefs_store::LocalStore;
use std::path::Path;
use std::time::Instant;

const SYSTEM_HEADERS: usize = 80;
const PROJECT_HEADERS: usize = 16;
const ABSENT_PROBES: usize = 4;

fn h(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for p in parts {
        hasher.update(p);
    }
    *hasher.finalize().as_bytes()
}

fn manifest(i: u64, result: [u8; 32]) -> Vec<u8> {
    let module = i / 300;
    let mut deps = Vec::new();
    for j in 0..SYSTEM_HEADERS {
        let path = format!("/usr/include/x86_64-linux-gnu/bits/header_{j:03}.h");
        deps.push(Dep {
            state: DepState::File(h(&[path.as_bytes()])),
            path: path.into_bytes(),
        });
    }
    for j in 0..PROJECT_HEADERS {
        let path = format!("/home/dev/project/module_{module:04}/include/part_{j:02}.h");
        deps.push(Dep {
            state: DepState::File(h(&[path.as_bytes()])),
            path: path.into_bytes(),
        });
    }
    for j in 0..ABSENT_PROBES {
        deps.push(Dep {
            path: format!("/home/dev/project/module_{module:04}/src/probe_{j}.h").into_bytes(),
            state: DepState::Absent,
        });
    }
    let source = format!("/home/dev/project/module_{module:04}/src/file_{i}.c");
    deps.push(Dep {
        state: DepState::File(h(&[source.as_bytes()])),
        path: source.into_bytes(),
    });
    deps.sort_by(|a, b| a.path.cmp(&b.path));
    Manifest {
        sets: vec![DepSet { deps, result }],
    }
    .encode()
}

/// Object-file-like bytes: a compressible header and some entropy.
fn object(i: u64) -> Vec<u8> {
    let mut v = b"\x7fELF\x02\x01\x01".repeat(64);
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push((x & 0x3f) as u8);
    }
    v
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, from, to] = args.as_slice() else {
        return Err("usage: fill_cache DIR FROM TO".into());
    };
    let (from, to): (u64, u64) = (from.parse()?, to.parse()?);
    let store = LocalStore::open(Path::new(dir), 1 << 40)?;
    let start = Instant::now();
    for i in from..to {
        let n = i.to_le_bytes();
        let blob = store.put_blob(&object(i))?;
        let mut result = b"synthetic result ".repeat(8);
        result.extend_from_slice(&n);
        let id = h(&[b"result", &result]);
        store.put_result(&id, &result, &[blob])?;
        store.put_manifest(&h(&[b"key1", &n]), &manifest(i, id))?;
    }
    eprintln!(
        "added {} entries in {:.1?}; store: {:?}",
        to - from,
        start.elapsed(),
        store.stats()
    );
    Ok(())
}
