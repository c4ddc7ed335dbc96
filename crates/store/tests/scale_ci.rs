//! CI-sized versions of the two ignored long runs: `timing.rs`'s
//! `lookups_with_100k_results` (many results, reopened with the full integrity check,
//! looked up, then evicted) and `stress.rs`'s `stress_puts_gets_and_evictions` (six threads
//! putting, reading and evicting at once). Same properties, asserted, in seconds.

mod common;

use std::sync::Arc;

use cachefs_store::LocalStore;
use common::{key, noise};

const GIB: u64 = 1 << 30;

#[test]
fn many_results_reopen_look_up_and_evict() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 1_000u64;
    {
        let store = LocalStore::open(tmp.path(), 100 * GIB).unwrap();
        for i in 0..n {
            let blob = store.put_blob(&noise(i, 1000)).unwrap();
            store.put_result(&key(i), &noise(i, 200), &[blob]).unwrap();
            store.put_manifest(&key(i), &noise(i, 300)).unwrap();
        }
        let s = store.stats();
        assert_eq!((s.results, s.blobs, s.evicted), (n, n, 0), "{s:?}");
    }
    // Reopened (the full integrity check): everything is there, with its content.
    let store = LocalStore::open(tmp.path(), 100 * GIB).unwrap();
    let s = store.stats();
    assert_eq!((s.results, s.blobs, s.corrupt_found), (n, n, 0), "{s:?}");
    for i in 0..n {
        let blob = blake3::hash(&noise(i, 1000));
        assert_eq!(store.get_manifest(&key(i)).unwrap(), Some(noise(i, 300)));
        assert_eq!(store.get_result(&key(i)).unwrap(), Some(noise(i, 200)));
        assert_eq!(
            store.get_blob(blob.as_bytes()).unwrap(),
            Some(noise(i, 1000))
        );
    }
    for j in 0..n {
        assert_eq!(store.get_result(&key(n + j)).unwrap(), None);
    }
    drop(store);

    // Reopened under a limit it exceeds: eviction brings it under, drops whole results
    // (never a blob a remaining result uses), and what remains survives another reopen.
    let full = {
        let store = LocalStore::open(tmp.path(), 100 * GIB).unwrap();
        store.stats().bytes
    };
    let limit = full / 3;
    let store = LocalStore::open(tmp.path(), limit).unwrap();
    let freed = store.evict().unwrap();
    let s = store.stats();
    assert!(freed > 0, "{s:?}");
    // The index file keeps its length when entries go (eviction counts its live pages),
    // so the blob files are what must fit.
    let blob_bytes: u64 = common::files_under(&tmp.path().join("blobs"))
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert!(blob_bytes <= limit, "{blob_bytes} blob bytes: {s:?}");
    assert!(s.results > 0 && s.results < n, "{s:?}");
    assert_eq!(s.evicted, n - s.results, "{s:?}");
    let check_remaining = |store: &LocalStore| {
        let mut remaining = 0;
        for i in 0..n {
            if let Some(v) = store.get_result(&key(i)).unwrap() {
                remaining += 1;
                assert_eq!(v, noise(i, 200));
                let blob = blake3::hash(&noise(i, 1000));
                assert_eq!(
                    store.get_blob(blob.as_bytes()).unwrap(),
                    Some(noise(i, 1000)),
                    "result {i} kept without its blob"
                );
            }
        }
        remaining
    };
    assert_eq!(check_remaining(&store), s.results);
    drop(store);
    let store = LocalStore::open(tmp.path(), limit).unwrap();
    let again = store.stats();
    assert_eq!(
        (again.results, again.corrupt_found),
        (s.results, 0),
        "{again:?}"
    );
    assert_eq!(check_remaining(&store), s.results);
}

#[test]
fn concurrent_puts_gets_and_evictions() {
    let tmp = tempfile::tempdir().unwrap();
    let limit = 2 << 20;
    let store = Arc::new(LocalStore::open(tmp.path(), limit).unwrap());
    let per_thread = 100u64;
    common::hammer(&store, per_thread);
    let stats = store.stats();
    // 6 × 100 results of ~20 KB own data each (12 MB) in a 2 MiB store: most evicted.
    assert_eq!(stats.corrupt_found, 0, "{stats:?}");
    assert!(stats.evicted > 0, "{stats:?}");
    assert_eq!(stats.results + stats.evicted, 6 * per_thread, "{stats:?}");
    drop(store);
    let store = LocalStore::open(tmp.path(), limit).unwrap();
    let reopened = store.stats();
    assert_eq!(
        (reopened.results, reopened.corrupt_found),
        (stats.results, 0),
        "{reopened:?}"
    );
}
