//! A full disk, for real: a 1 MiB tmpfs. Needs root (mount): fails otherwise, as the
//! suite (scripts/test.sh) runs as root.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cachefs_store::{LocalStore, StoreError};
use common::{key, noise, temp_files};

struct Tmpfs(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount(8) (util-linux): run scripts/setup.sh");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs ({}): the full-disk tests need root, as scripts/test.sh is run",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs(dir.path().to_path_buf(), dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn is_enospc(e: &StoreError) -> bool {
    format!("{e}").contains("No space left on device")
}

#[test]
fn a_full_disk_fails_puts_cleanly_and_recovers() {
    let fs_ = Tmpfs::mount("1M");
    let dir = fs_.0.join("cache");
    let store = LocalStore::open(&dir, 1 << 30).unwrap();
    let mut stored = Vec::new();
    let mut failure = None;
    for i in 0..40u64 {
        let data = noise(i, 100_000);
        let put = store
            .put_blob(&data)
            .and_then(|id| store.put_result(&key(i), b"v", &[id]).map(|()| id));
        match put {
            Ok(id) => stored.push((i, id)),
            Err(e) => {
                failure = Some((i, e));
                break;
            }
        }
    }
    let (failed, err) = failure.expect("a 1 MiB disk fills up");
    println!("after {} puts: {err}", stored.len());
    assert!(is_enospc(&err), "{err:?}");
    assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
    let failed_id = *blake3::hash(&noise(failed, 100_000)).as_bytes();
    assert_eq!(store.get_result(&key(failed)).unwrap(), None);
    if let Some(data) = store.get_blob(&failed_id).unwrap() {
        assert_eq!(data, noise(failed, 100_000));
    }
    for (i, id) in &stored {
        assert_eq!(store.get_result(&key(*i)).unwrap().unwrap(), b"v");
        assert_eq!(store.get_blob(id).unwrap().unwrap(), noise(*i, 100_000));
    }
    assert_eq!(store.stats().corrupt_found, 0);
    store.flush().unwrap();
    assert_eq!(store.stats().blobs, stored.len() as u64);

    // Free space: the same store works again, without a reopen.
    for (i, _) in &stored[..stored.len() / 2] {
        store.remove_result(&key(*i)).unwrap();
    }
    store.clear().unwrap();
    let id = store.put_blob(&noise(99, 100_000)).unwrap();
    store.put_result(&key(99), b"again", &[id]).unwrap();
    assert_eq!(store.get_result(&key(99)).unwrap().unwrap(), b"again");
    drop(store);
    let store = LocalStore::open(&dir, 1 << 30).unwrap();
    assert_eq!(store.get_result(&key(99)).unwrap().unwrap(), b"again");
}

#[test]
fn a_full_disk_fails_index_commits_cleanly_and_recovers() {
    let fs_ = Tmpfs::mount("1M");
    let dir = fs_.0.join("cache");
    let store = LocalStore::open(&dir, 1 << 30).unwrap();
    let small = store.put_blob(b"small").unwrap();
    store.put_result(&key(0), b"kept", &[small]).unwrap();
    // Leave almost no room, so the index cannot grow.
    let filler = fs_.0.join("filler");
    fill(&filler);
    let mut failure = None;
    for i in 1..200u64 {
        if let Err(e) = store.put_manifest(&key(i), &noise(i, 20_000)) {
            failure = Some((i, e));
            break;
        }
    }
    let (failed, err) = failure.expect("the index cannot grow on a full disk");
    println!("{err}");
    assert!(is_enospc(&err), "{err:?}");
    assert!(err.to_string().contains("disk is not full"), "{err}");
    assert!(temp_files(&dir).is_empty());
    // Reads work on the full disk, and see every commit but the failed one.
    assert_eq!(store.get_result(&key(0)).unwrap().unwrap(), b"kept");
    assert_eq!(store.get_blob(&small).unwrap().unwrap(), b"small");
    for i in 1..failed {
        assert_eq!(
            store.get_manifest(&key(i)).unwrap().unwrap(),
            noise(i, 20_000)
        );
    }
    assert_eq!(store.get_manifest(&key(failed)).unwrap(), None);
    fs::remove_file(&filler).unwrap();
    // Space is back: the same store works again.
    store.put_manifest(&key(500), b"after").unwrap();
    assert_eq!(store.get_manifest(&key(500)).unwrap().unwrap(), b"after");
    drop(store);
    let store = LocalStore::open(&dir, 1 << 30).unwrap();
    assert_eq!(store.get_result(&key(0)).unwrap().unwrap(), b"kept");
    assert_eq!(store.get_manifest(&key(500)).unwrap().unwrap(), b"after");
}

fn fill(path: &Path) {
    use std::io::Write;
    let mut f = fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}
