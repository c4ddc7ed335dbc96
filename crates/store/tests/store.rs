//! The store against real redb files and real blob files in temp dirs.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;

use cachefs_store::{LocalStore, StoreError};
use common::{blob_file, files_under, key, noise, temp_files};

const GIB: u64 = 1 << 30;

#[test]
fn round_trips_and_persists() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let data = b"object file contents ".repeat(100);
    let (blob, empty) = {
        let store = LocalStore::open(&dir, GIB).unwrap();
        let blob = store.put_blob(&data).unwrap();
        assert_eq!(blob, *blake3::hash(&data).as_bytes());
        let empty = store.put_blob(b"").unwrap();
        store
            .put_result(&key(1), b"result", &[blob, empty])
            .unwrap();
        store.put_manifest(&key(2), b"manifest").unwrap();
        store.put_meta("hits", b"42").unwrap();
        assert_eq!(store.get_blob(&blob).unwrap().unwrap(), data);
        assert_eq!(store.get_blob(&empty).unwrap().unwrap(), b"");
        assert_eq!(store.get_result(&key(1)).unwrap().unwrap(), b"result");
        let stats = store.stats();
        assert_eq!((stats.results, stats.blobs, stats.limit), (1, 2, GIB));
        (blob, empty)
    };
    let mode = fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);

    let store = LocalStore::open(&dir, GIB).unwrap();
    assert_eq!(store.get_blob(&blob).unwrap().unwrap(), data);
    assert_eq!(store.get_blob(&empty).unwrap().unwrap(), b"");
    assert_eq!(store.get_result(&key(1)).unwrap().unwrap(), b"result");
    assert_eq!(store.get_manifest(&key(2)).unwrap().unwrap(), b"manifest");
    assert_eq!(store.get_meta("hits").unwrap().unwrap(), b"42");
    assert_eq!(store.get_result(&key(9)).unwrap(), None);
    assert_eq!(store.get_manifest(&key(9)).unwrap(), None);
    assert_eq!(store.get_meta("nope").unwrap(), None);
    assert_eq!(store.get_blob(&key(9)).unwrap(), None);
    assert_eq!(store.stats().corrupt_found, 0);
    let stats = store.stats();
    assert_eq!((stats.results, stats.blobs), (1, 2));
}

#[test]
fn overwrites_and_removes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path(), GIB).unwrap();
    let a = store.put_blob(b"a").unwrap();
    let b = store.put_blob(b"b").unwrap();
    store.put_result(&key(1), b"one", &[a]).unwrap();
    store.put_result(&key(1), b"two", &[a, b]).unwrap();
    store.put_manifest(&key(2), b"m1").unwrap();
    store.put_manifest(&key(2), b"m2").unwrap();
    assert_eq!(store.get_result(&key(1)).unwrap().unwrap(), b"two");
    assert_eq!(store.get_manifest(&key(2)).unwrap().unwrap(), b"m2");
    store.remove_result(&key(1)).unwrap();
    store.remove_result(&key(1)).unwrap();
    assert_eq!(store.get_result(&key(1)).unwrap(), None);
    assert_eq!(store.stats().results, 0);
    // Manifests outlive results; the caller treats the missing result as a miss.
    assert_eq!(store.get_manifest(&key(2)).unwrap().unwrap(), b"m2");
}

#[test]
fn dedups_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path(), GIB).unwrap();
    let data = noise(1, 50_000);
    let id = store.put_blob(&data).unwrap();
    let path = blob_file(tmp.path(), &id);
    let before = fs::metadata(&path).unwrap();
    store.flush().unwrap();
    let bytes = store.stats().bytes;
    assert_eq!(store.put_blob(&data).unwrap(), id);
    store.flush().unwrap();
    assert_eq!(store.put_blob(&data).unwrap(), id);
    let after = fs::metadata(&path).unwrap();
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec())
    );
    assert_eq!(store.stats().blobs, 1);
    assert_eq!(store.stats().bytes, bytes);
    assert_eq!(files_under(&tmp.path().join("blobs")).len(), 1);
}

#[test]
fn compresses_what_compresses() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path(), GIB).unwrap();
    let text = b"int main() { return 0; }\n".repeat(10_000);
    let id = store.put_blob(&text).unwrap();
    let on_disk = fs::metadata(blob_file(tmp.path(), &id)).unwrap().len();
    assert!(on_disk < text.len() as u64 / 10, "{on_disk} bytes on disk");
    let random = noise(2, 10_000);
    let id = store.put_blob(&random).unwrap();
    let on_disk = fs::metadata(blob_file(tmp.path(), &id)).unwrap().len();
    assert!(
        on_disk <= random.len() as u64 + 16,
        "{on_disk} bytes on disk"
    );
    assert_eq!(store.get_blob(&id).unwrap().unwrap(), random);
}

#[test]
fn damaged_blobs_are_dropped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path(), GIB).unwrap();
    type Damage = fn(&std::path::Path);
    let damages: [(&str, Damage); 5] = [
        ("flip a byte in the body", |p| flip(p, -1)),
        ("flip a header byte", |p| flip(p, 5)),
        ("truncate", |p| truncate(p, 2)),
        ("empty", |p| truncate(p, 0)),
        ("delete", |p| fs::remove_file(p).unwrap()),
    ];
    for (n, (what, damage)) in damages.into_iter().enumerate() {
        for data in [noise(n as u64, 5000), b"compressible ".repeat(500)] {
            let id = store.put_blob(&data).unwrap();
            store.put_result(&key(n as u64), b"r", &[id]).unwrap();
            let path = blob_file(tmp.path(), &id);
            let corrupt_before = store.stats().corrupt_found;
            damage(&path);
            assert_eq!(store.get_blob(&id).unwrap(), None, "{what}");
            assert_eq!(store.stats().corrupt_found, corrupt_before + 1, "{what}");
            assert!(!path.exists(), "{what}: damaged file removed");
            // Missing now, and not counted twice.
            assert_eq!(store.get_blob(&id).unwrap(), None, "{what}");
            // Putting the content again repairs it.
            assert_eq!(store.put_blob(&data).unwrap(), id);
            assert_eq!(store.get_blob(&id).unwrap().unwrap(), data, "{what}");
        }
    }
    assert_eq!(store.stats().corrupt_found, 10 + 10);
}

#[test]
fn a_blob_swapped_for_another_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path(), GIB).unwrap();
    let a = store.put_blob(b"aaaa").unwrap();
    let b = store.put_blob(b"bbbb").unwrap();
    fs::copy(blob_file(tmp.path(), &b), blob_file(tmp.path(), &a)).unwrap();
    assert_eq!(store.get_blob(&a).unwrap(), None);
    assert_eq!(store.get_blob(&b).unwrap().unwrap(), b"bbbb");
    assert_eq!(store.stats().corrupt_found, 1);
}

fn flip(path: &std::path::Path, at: i64) {
    let mut bytes = fs::read(path).unwrap();
    let i = if at < 0 { bytes.len() / 2 } else { at as usize };
    bytes[i] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

fn truncate(path: &std::path::Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn put_result_requires_stored_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path(), GIB).unwrap();
    let stored = store.put_blob(b"here").unwrap();
    let err = store
        .put_result(&key(1), b"v", &[stored, key(99)])
        .unwrap_err();
    assert!(matches!(err, StoreError::MissingBlob { .. }), "{err}");
    assert!(err.to_string().contains("put_blob"), "{err}");
    assert_eq!(store.get_result(&key(1)).unwrap(), None);
    assert_eq!(store.stats().results, 0);
}

#[test]
fn a_second_opener_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let _store = LocalStore::open(tmp.path(), GIB).unwrap();
    let err = LocalStore::open(tmp.path(), GIB).err().unwrap();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(!aside_files(tmp.path()).iter().any(|_| true));
}

fn aside_files(dir: &std::path::Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("index.redb.corrupt-"))
        .collect()
}

#[test]
fn a_garbage_index_is_moved_aside() {
    for len in [1usize, 100, 4096, 1 << 20] {
        let tmp = tempfile::tempdir().unwrap();
        let garbage = noise(len as u64, len);
        fs::write(tmp.path().join("index.redb"), &garbage).unwrap();
        let store = LocalStore::open(tmp.path(), GIB).unwrap();
        let id = store.put_blob(b"works").unwrap();
        store.put_result(&key(1), b"v", &[id]).unwrap();
        assert_eq!(store.get_result(&key(1)).unwrap().unwrap(), b"v");
        let aside = aside_files(tmp.path());
        assert_eq!(aside.len(), 1, "{len} bytes of garbage");
        assert_eq!(fs::read(tmp.path().join(&aside[0])).unwrap(), garbage);
    }
}

#[test]
fn a_damaged_index_is_moved_aside_and_its_blobs_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index.redb");
    let ids: Vec<_> = {
        let store = LocalStore::open(tmp.path(), GIB).unwrap();
        (0..300)
            .map(|i| {
                let id = store.put_blob(&noise(i, 1000)).unwrap();
                store.put_result(&key(i), &noise(i, 3000), &[id]).unwrap();
                id
            })
            .collect()
    };
    let valid = fs::read(&index).unwrap();
    let damaged: [(&str, Vec<u8>); 3] = [
        ("truncated to half", valid[..valid.len() / 2].to_vec()),
        ("truncated to 1000 bytes", valid[..1000].to_vec()),
        ("header overwritten", {
            let mut v = valid.clone();
            v[..512].copy_from_slice(&noise(7, 512));
            v
        }),
    ];
    for (what, bytes) in damaged {
        fs::write(&index, &bytes).unwrap();
        let store = LocalStore::open(tmp.path(), GIB).unwrap();
        assert_eq!(aside_files(tmp.path()).len(), 1, "{what}");
        for n in aside_files(tmp.path()) {
            fs::remove_file(tmp.path().join(n)).unwrap();
        }
        assert_eq!(store.stats().results, 0, "{what}");
        assert_eq!(store.get_result(&key(0)).unwrap(), None, "{what}");
        // Blob files the fresh index does not know are gone, not leaked.
        assert!(files_under(&tmp.path().join("blobs")).is_empty(), "{what}");
        assert_eq!(store.get_blob(&ids[0]).unwrap(), None, "{what}");
        assert_eq!(store.put_blob(&noise(0, 1000)).unwrap(), ids[0]);
        drop(store);
        fs::write(&index, &valid).unwrap();
    }
}

#[test]
fn a_damaged_index_page_is_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index.redb");
    {
        let store = LocalStore::open(tmp.path(), GIB).unwrap();
        for i in 0..300 {
            store.put_manifest(&key(i), &noise(i, 2000)).unwrap();
        }
    }
    let valid = fs::read(&index).unwrap();
    // Flip one byte in each 4 KiB page past the header, one page at a time.
    let mut moved = 0;
    for page in 1..valid.len() / 4096 {
        let mut bytes = valid.clone();
        bytes[page * 4096 + 100] ^= 0xff;
        fs::write(&index, &bytes).unwrap();
        let store = LocalStore::open(tmp.path(), GIB).unwrap();
        // Whatever survived is either right or gone.
        for i in 0..300 {
            if let Some(v) = store.get_manifest(&key(i)).unwrap() {
                assert_eq!(v, noise(i, 2000));
            }
        }
        moved += aside_files(tmp.path()).len();
        drop(store);
        for n in aside_files(tmp.path()) {
            fs::remove_file(tmp.path().join(n)).unwrap();
        }
    }
    println!(
        "{moved} of {} damaged pages made the index move aside",
        valid.len() / 4096 - 1
    );
}

#[test]
fn crash_leftovers_are_cleaned_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let known = {
        let store = LocalStore::open(tmp.path(), GIB).unwrap();
        let id = store.put_blob(b"known").unwrap();
        store.put_result(&key(1), b"v", &[id]).unwrap();
        id
    };
    // What a crash leaves: a temp file and a blob whose index entry was never committed. Then
    // a child process opens the store and aborts, so the next open sees an unclean shutdown.
    let stray = *blake3::hash(b"stray").as_bytes();
    let stray_path = blob_file(tmp.path(), &stray);
    fs::create_dir_all(stray_path.parent().unwrap()).unwrap();
    fs::write(&stray_path, b"whatever").unwrap();
    let temp = stray_path.with_file_name(".tmp-leftover");
    fs::write(&temp, b"partial").unwrap();
    crash_child(tmp.path());
    let store = LocalStore::open(tmp.path(), GIB).unwrap();
    assert!(!stray_path.exists());
    assert!(!temp.exists());
    assert_eq!(store.get_blob(&known).unwrap().unwrap(), b"known");
    assert_eq!(store.get_result(&key(1)).unwrap().unwrap(), b"v");
    let on_disk: u64 = files_under(&tmp.path().join("blobs"))
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    let index = fs::metadata(tmp.path().join("index.redb")).unwrap().len();
    assert_eq!(store.stats().bytes, on_disk + index);
}

/// Runs `crash_child_body` in a child process that opens the store and aborts without closing.
fn crash_child(dir: &std::path::Path) {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_body",
            "--nocapture",
            "--include-ignored",
        ])
        .env("CACHEFS_STORE_TEST_CRASH_DIR", dir)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child should have aborted");
}

#[test]
#[ignore = "run by crash_leftovers_are_cleaned_at_open in a child process"]
fn crash_child_body() {
    let Some(dir) = std::env::var_os("CACHEFS_STORE_TEST_CRASH_DIR") else {
        return;
    };
    let store = LocalStore::open(std::path::Path::new(&dir), GIB).unwrap();
    store.put_manifest(&key(5), b"lost or not").unwrap();
    std::process::abort();
}

/// Blob sizes in these tests dwarf the index (which redb grows in steps of tens of KB).
const BLOB: usize = 100_000;
const INDEX_ALLOWANCE: u64 = 256 << 10;

#[test]
fn evicts_least_recently_used_first() {
    let tmp = tempfile::tempdir().unwrap();
    let limit = INDEX_ALLOWANCE + 10 * BLOB as u64;
    let store = LocalStore::open(tmp.path(), limit).unwrap();
    let shared_data = noise(1000, 100);
    let mut ids = Vec::new();
    let mut put = |i: u64| {
        let id = store.put_blob(&noise(i, BLOB)).unwrap();
        let shared = store.put_blob(&shared_data).unwrap();
        store.put_result(&key(i), b"v", &[id, shared]).unwrap();
        ids.push(id);
        shared
    };
    for i in 0..8 {
        put(i);
    }
    assert_eq!(store.stats().evicted, 0, "{:?}", store.stats());
    // Use result 0, so result 1 is now the least recently used.
    assert!(store.get_result(&key(0)).unwrap().is_some());
    let mut shared = [0; 32];
    for i in 8..14 {
        shared = put(i);
    }
    let stats = store.stats();
    println!("after eviction: {stats:?}");
    assert!(stats.evicted >= 3, "{stats:?}");
    assert!(stats.bytes <= limit, "{stats:?}");
    assert!(
        store.get_result(&key(0)).unwrap().is_some(),
        "recently used kept"
    );
    assert!(store.get_result(&key(1)).unwrap().is_none(), "LRU evicted");
    assert!(store.get_result(&key(13)).unwrap().is_some(), "newest kept");
    assert!(!blob_file(tmp.path(), &ids[1]).exists(), "its blob deleted");
    assert!(blob_file(tmp.path(), &shared).exists(), "still referenced");
    for i in 0..14 {
        let hit = store.get_result(&key(i)).unwrap().is_some();
        assert_eq!(hit, blob_file(tmp.path(), &ids[i as usize]).exists(), "{i}");
        if hit {
            let blob = store.get_blob(&ids[i as usize]).unwrap().unwrap();
            assert_eq!(blob, noise(i, BLOB));
        }
    }
    // Only results 2.. (oldest first) went, then eviction stopped below 90% of the limit.
    let kept: Vec<u64> = (0..14)
        .filter(|&i| store.get_result(&key(i)).unwrap().is_some())
        .collect();
    let first_kept = stats.evicted + 1;
    let want: Vec<u64> = std::iter::once(0).chain(first_kept..14).collect();
    assert_eq!(kept, want);
    assert_eq!(stats.corrupt_found, 0);
}

#[test]
fn eviction_sweeps_unreferenced_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path(), INDEX_ALLOWANCE + 5 * BLOB as u64).unwrap();
    let a = store.put_blob(&noise(1, 4 * BLOB)).unwrap();
    store.put_result(&key(1), b"v", &[a]).unwrap();
    store.remove_result(&key(1)).unwrap();
    // `a` is now unreferenced; the next put that goes over the limit collects it first.
    let b = store.put_blob(&noise(2, 4 * BLOB)).unwrap();
    store.put_result(&key(2), b"v", &[b]).unwrap();
    assert!(!blob_file(tmp.path(), &a).exists());
    assert_eq!(store.get_result(&key(2)).unwrap().unwrap(), b"v");
    assert_eq!(store.get_blob(&b).unwrap().unwrap(), noise(2, 4 * BLOB));
    assert_eq!(store.stats().evicted, 0, "only the orphan went");
    assert_eq!(store.stats().blobs, 1);
}

#[test]
fn evict_is_a_no_op_under_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path(), GIB).unwrap();
    let id = store.put_blob(b"x").unwrap();
    store.put_result(&key(1), b"v", &[id]).unwrap();
    assert_eq!(store.evict().unwrap(), 0);
    assert!(store.get_result(&key(1)).unwrap().is_some());
}

#[test]
fn lru_order_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = {
        let store = LocalStore::open(tmp.path(), GIB).unwrap();
        for i in 0..4 {
            let id = store.put_blob(&noise(i, 2 * BLOB)).unwrap();
            store.put_result(&key(i), b"v", &[id]).unwrap();
        }
        // Only touched in memory until the close commits it.
        store.get_result(&key(0)).unwrap().unwrap();
        store.stats().bytes
    };
    let store = LocalStore::open(tmp.path(), bytes - BLOB as u64 / 2).unwrap();
    let freed = store.evict().unwrap();
    assert!(freed >= 2 * BLOB as u64, "freed {freed}");
    assert!(store.get_result(&key(0)).unwrap().is_some());
    assert!(store.get_result(&key(1)).unwrap().is_none());
    assert!(store.get_result(&key(2)).unwrap().is_some());
}

#[test]
fn a_limit_smaller_than_the_index_still_caches() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = LocalStore::open(tmp.path(), GIB).unwrap();
        for i in 0..1500 {
            let id = store.put_blob(&noise(i, 100)).unwrap();
            store.put_result(&key(i), &noise(i, 300), &[id]).unwrap();
            store.put_manifest(&key(i), &noise(i, 400)).unwrap();
        }
        println!("filled: {:?}", store.stats());
    }
    let limit = 400_000;
    let store = LocalStore::open(tmp.path(), limit).unwrap();
    store.evict().unwrap();
    println!("evicted: {:?}", store.stats());
    assert!(store.stats().evicted > 0);
    // The index file does not shrink below its high-water mark here (too small to compact),
    // but that must not make every new result evict itself.
    for i in 5000..5020 {
        let id = store.put_blob(&noise(i, 100)).unwrap();
        store.put_result(&key(i), b"new", &[id]).unwrap();
        store.put_manifest(&key(i), b"m").unwrap();
        assert_eq!(store.get_result(&key(i)).unwrap().unwrap(), b"new");
    }
    println!("after new puts: {:?}", store.stats());
    assert!(store.get_result(&key(5000)).unwrap().is_some());
    assert!(store.get_result(&key(0)).unwrap().is_none());
}

#[test]
fn clear_empties_the_cache_but_keeps_meta() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path(), GIB).unwrap();
    let id = store.put_blob(b"data").unwrap();
    store.put_result(&key(1), b"v", &[id]).unwrap();
    store.put_manifest(&key(2), b"m").unwrap();
    store.put_meta("stats", b"s").unwrap();
    store.clear().unwrap();
    assert_eq!(store.get_result(&key(1)).unwrap(), None);
    assert_eq!(store.get_manifest(&key(2)).unwrap(), None);
    assert_eq!(store.get_blob(&id).unwrap(), None);
    assert_eq!(store.get_meta("stats").unwrap().unwrap(), b"s");
    let stats = store.stats();
    assert_eq!((stats.results, stats.blobs, stats.corrupt_found), (0, 0, 0));
    assert!(files_under(&tmp.path().join("blobs")).is_empty());
    // Still usable.
    let id = store.put_blob(b"again").unwrap();
    store.put_result(&key(1), b"v2", &[id]).unwrap();
    assert_eq!(store.get_blob(&id).unwrap().unwrap(), b"again");
}

#[test]
fn clear_keeps_the_blobs_of_a_store_in_progress_and_shrinks_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path(), GIB).unwrap();
    for i in 0..300u64 {
        let id = store.put_blob(&noise(i, 4000)).unwrap();
        store.put_result(&key(i), &[7u8; 2000], &[id]).unwrap();
        store.put_manifest(&key(10_000 + i), &[9u8; 2000]).unwrap();
    }
    store.flush().unwrap();
    let index = tmp.path().join("index.redb");
    let full = std::fs::metadata(&index).unwrap().len();
    // A compile stored its blobs (one new, one already there) but not yet its result.
    let fresh = store.put_blob(b"written by a compile in flight").unwrap();
    let known = store.put_blob(&noise(5, 4000)).unwrap();
    store.clear().unwrap();
    assert_eq!(store.get_result(&key(5)).unwrap(), None);
    assert_eq!(store.get_manifest(&key(10_005)).unwrap(), None);
    // Its result still stores and reads back whole.
    store.put_result(&key(1), b"v", &[fresh, known]).unwrap();
    assert_eq!(
        store.get_blob(&fresh).unwrap().unwrap(),
        b"written by a compile in flight"
    );
    assert_eq!(store.get_blob(&known).unwrap().unwrap(), noise(5, 4000));
    let stats = store.stats();
    assert_eq!((stats.results, stats.blobs, stats.corrupt_found), (1, 2, 0));
    assert_eq!(files_under(&tmp.path().join("blobs")).len(), 2);
    let after = std::fs::metadata(&index).unwrap().len();
    assert!(after < full / 2, "index {full} -> {after} bytes");
}

#[test]
fn concurrent_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::open(tmp.path(), GIB).unwrap());
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..150u64 {
                    // Half the blobs are shared between threads, to race dedup.
                    let shared = store.put_blob(&noise(i, 3000)).unwrap();
                    let own = store.put_blob(&noise(1000 * (t + 1) + i, 2000)).unwrap();
                    let id = key(t * 10_000 + i);
                    store
                        .put_result(&id, &i.to_le_bytes(), &[shared, own])
                        .unwrap();
                    store.put_manifest(&id, &t.to_le_bytes()).unwrap();
                    assert_eq!(store.get_result(&id).unwrap().unwrap(), i.to_le_bytes());
                    assert_eq!(store.get_blob(&shared).unwrap().unwrap(), noise(i, 3000));
                    let back = key(t * 10_000 + i / 2);
                    assert!(store.get_result(&back).unwrap().is_some());
                    if i % 10 == 0 {
                        let doomed = key(1_000_000 + t * 10_000 + i);
                        store.put_result(&doomed, b"x", &[own]).unwrap();
                        store.remove_result(&doomed).unwrap();
                        assert_eq!(store.get_result(&doomed).unwrap(), None);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = store.stats();
    println!("{stats:?}");
    assert_eq!(stats.corrupt_found, 0);
    assert_eq!(stats.blobs, 150 + 6 * 150);
    assert!(temp_files(tmp.path()).is_empty());
}

#[test]
fn concurrent_threads_under_eviction_pressure() {
    let tmp = tempfile::tempdir().unwrap();
    let index_bytes = LocalStore::open(tmp.path(), GIB).unwrap().stats().bytes;
    let limit = index_bytes * 3 + 200_000;
    let store = Arc::new(LocalStore::open(tmp.path(), limit).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..100u64 {
                    let shared = noise(i % 7, 5000);
                    let id = store.put_blob(&shared).unwrap();
                    let own = store.put_blob(&noise(100 + t * 1000 + i, 5000)).unwrap();
                    store
                        .put_result(&key(t * 1000 + i), b"v", &[id, own])
                        .unwrap();
                    // A hit never returns wrong bytes; a miss is allowed (evicted).
                    if let Some(got) = store.get_blob(&id).unwrap() {
                        assert_eq!(got, shared);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = store.stats();
    println!("{stats:?}");
    assert!(stats.evicted > 0);
    assert_eq!(
        stats.corrupt_found, 0,
        "eviction never deleted a referenced blob"
    );
    // Every result that survived has all its blobs.
    for t in 0..4u64 {
        for i in 0..100u64 {
            if store.get_result(&key(t * 1000 + i)).unwrap().is_some() {
                let own = *blake3::hash(&noise(100 + t * 1000 + i, 5000)).as_bytes();
                assert!(store.get_blob(&own).unwrap().is_some(), "{t}/{i}");
            }
        }
    }
    assert_eq!(store.stats().corrupt_found, 0);
}

/// The agent exits without destructors, through `close_for_exit`: the next open must need
/// neither a reconciliation nor the page check, unless the index changed in between.
#[test]
fn a_clean_close_for_exit_skips_the_checks_and_a_touched_index_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index.redb");
    let store = LocalStore::open(tmp.path(), GIB).unwrap();
    assert!(!store.opened_clean(), "a new index");
    let blob = store.put_blob(&noise(1, 5000)).unwrap();
    store.put_manifest(&key(1), &noise(2, 300)).unwrap();
    store.close_for_exit();
    assert!(store.get_manifest(&key(1)).is_err(), "closed for good");
    // As the agent does: exit without dropping it.
    std::mem::forget(store);
    assert!(tmp.path().join("index.redb.clean").exists());

    let store = LocalStore::open(tmp.path(), GIB).unwrap();
    assert!(store.opened_clean());
    assert_eq!(store.get_blob(&blob).unwrap().unwrap(), noise(1, 5000));
    assert_eq!(store.get_manifest(&key(1)).unwrap().unwrap(), noise(2, 300));
    // The marker is consumed: a crash now leaves none.
    assert!(!tmp.path().join("index.redb.clean").exists());
    store.close_for_exit();
    std::mem::forget(store);

    // Damaged after the clean close (same size, one page flipped): the index's stamp no longer
    // matches the marker, so the page check runs and the damage is not trusted.
    let mut bytes = fs::read(&index).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    fs::write(&index, &bytes).unwrap();
    let store = LocalStore::open(tmp.path(), GIB).unwrap();
    if let Some(v) = store.get_manifest(&key(1)).unwrap() {
        assert_eq!(v, noise(2, 300));
    }
    drop(store);
    // (A crash, with no close at all, is `crash_leftovers_are_cleaned_at_open`.)
}
