//! Timings, printed rather than asserted (shared machines are noisy). For real numbers:
//! `cargo test -p cachefs-store --release --test timing -- --include-ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use cachefs_store::LocalStore;
use common::{key, noise};

const GIB: u64 = 1 << 30;

fn per_op(total: Duration, n: u32) -> String {
    format!("{:.1} µs", total.as_secs_f64() * 1e6 / f64::from(n))
}

/// A typical small object: some text-like, compressible bytes.
fn object(i: u64) -> Vec<u8> {
    let mut v = format!("object {i} ").repeat(200).into_bytes();
    v.extend_from_slice(&noise(i, 500));
    v
}

#[test]
fn hit_path_timing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path(), GIB).unwrap();
    let n = 200u32;
    let start = Instant::now();
    for i in 0..u64::from(n) {
        let blob = store.put_blob(&object(i)).unwrap();
        store.put_result(&key(i), &noise(i, 200), &[blob]).unwrap();
        store.put_manifest(&key(i), &noise(i, 300)).unwrap();
    }
    let put = start.elapsed();
    let blobs: Vec<_> = (0..u64::from(n))
        .map(|i| blake3::hash(&object(i)))
        .collect();
    let rounds = 5;
    let start = Instant::now();
    for _ in 0..rounds {
        for i in 0..u64::from(n) {
            let m = store.get_manifest(&key(i)).unwrap().unwrap();
            let r = store.get_result(&key(i)).unwrap().unwrap();
            let b = store
                .get_blob(blobs[i as usize].as_bytes())
                .unwrap()
                .unwrap();
            assert_eq!((m.len(), r.len(), b.len()), (300, 200, object(i).len()));
        }
    }
    let hit = start.elapsed();
    println!(
        "small object ({} bytes): miss path put_blob+put_result+put_manifest {} per object; \
         hit path get_manifest+get_result+get_blob {} per object",
        object(0).len(),
        per_op(put, n),
        per_op(hit, n * rounds)
    );
}

#[test]
#[ignore = "slow: fills the index with 100k results"]
fn lookups_with_100k_results() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 100_000u64;
    let start = Instant::now();
    {
        let store = LocalStore::open(tmp.path(), 100 * GIB).unwrap();
        for i in 0..n {
            let blob = store.put_blob(&noise(i, 1000)).unwrap();
            store.put_result(&key(i), &noise(i, 200), &[blob]).unwrap();
            store.put_manifest(&key(i), &noise(i, 300)).unwrap();
        }
        println!(
            "filled {n} results in {:?}: {:?}",
            start.elapsed(),
            store.stats()
        );
    }
    let start = Instant::now();
    let store = LocalStore::open(tmp.path(), 100 * GIB).unwrap();
    println!(
        "open with {n} results (full integrity check): {:?}",
        start.elapsed()
    );
    let lookups = 20_000u32;
    let start = Instant::now();
    for j in 0..u64::from(lookups) {
        let i = (j * 7919) % n;
        let blob = blake3::hash(&noise(i, 1000));
        assert!(store.get_manifest(&key(i)).unwrap().is_some());
        assert!(store.get_result(&key(i)).unwrap().is_some());
        assert!(store.get_blob(blob.as_bytes()).unwrap().is_some());
    }
    let hit = start.elapsed();
    let start = Instant::now();
    for j in 0..u64::from(lookups) {
        assert!(store.get_result(&key(n + j)).unwrap().is_none());
    }
    let miss = start.elapsed();
    println!(
        "with {n} results: hit (manifest+result+blob) {} per lookup, miss (get_result) {}",
        per_op(hit, lookups),
        per_op(miss, lookups)
    );
    drop(store);
    for limit in [150_000_000u64, 30_000_000] {
        let start = Instant::now();
        let store = LocalStore::open(tmp.path(), limit).unwrap();
        let opened = start.elapsed();
        let freed = store.evict().unwrap();
        println!(
            "limit {limit}: open {opened:?}, evict+compact {:?}, freed {freed} blob bytes: {:?}",
            start.elapsed() - opened,
            store.stats()
        );
    }
}
