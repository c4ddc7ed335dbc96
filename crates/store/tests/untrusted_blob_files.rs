//! Blob files are read back from disk, where anything may have damaged them: the length a
//! file's header states must be checked against what the store can hold before it drives
//! an allocation or a decompression. A file that claims too much is corrupt: removed,
//! counted, a miss.

mod common;
use cachefs_store::LocalStore;
use common::alloc::{largest, reset_largest};
use common::{blob_file, noise};

#[global_allocator]
static ALLOC: common::alloc::Counting = common::alloc::Counting;

const LIMIT: u64 = 16 << 20;

/// A blob file as `blobfile::encode` writes it: `CFB`, codec 1 (zstd), the stated
/// uncompressed length, the frame.
fn zstd_file(stated: u64, frame: &[u8]) -> Vec<u8> {
    let mut file = b"CFB\x01".to_vec();
    file.extend_from_slice(&stated.to_le_bytes());
    file.extend_from_slice(frame);
    file
}

#[test]
fn a_blob_file_that_states_a_huge_length_is_a_counted_miss() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalStore::open(tmp.path(), LIMIT).unwrap();
    // 256 MiB of zeros: a few KiB compressed, far more than the 16 MiB store can hold.
    let bomb = zstd::bulk::compress(&vec![0u8; 256 << 20], 19).unwrap();
    let stated = [u64::MAX, 1 << 40, 256 << 20, LIMIT + 1];
    for (i, stated) in stated.into_iter().enumerate() {
        let id = store.put_blob(&noise(i as u64, 1000)).unwrap();
        std::fs::write(blob_file(tmp.path(), &id), zstd_file(stated, &bomb)).unwrap();
        reset_largest();
        let got = store.get_blob(&id).unwrap();
        let biggest = largest();
        assert_eq!(got, None, "stated {stated}");
        assert!(
            biggest <= 1 << 20,
            "stated {stated}: allocated {biggest} at once"
        );
        assert!(!blob_file(tmp.path(), &id).exists(), "removed as corrupt");
    }
    assert_eq!(store.stats().corrupt_found, 4);
}
