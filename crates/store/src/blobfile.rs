//! Blob files: `blobs/ab/<hex>`, a small header and the (maybe zstd-compressed) content.
//!
//! Header: `CFB` magic, a codec byte, and the uncompressed length (u64 LE). The length lets a
//! reader reject truncation before hashing and bounds how much a corrupt frame can make it
//! allocate; the blake3 check after decoding is what guarantees the bytes are right.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Hash;

const MAGIC: &[u8; 3] = b"CFB";
const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;
const HEADER_LEN: usize = 12;
const ZSTD_LEVEL: i32 = 3;
/// Temp files start with this, so a scan can tell them from blobs and remove leftovers.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

pub(crate) fn hex(id: &Hash) -> String {
    let mut s = String::with_capacity(64);
    for b in id {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub(crate) fn parse_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

pub(crate) fn blob_path(blob_dir: &Path, id: &Hash) -> PathBuf {
    let hex = hex(id);
    blob_dir.join(&hex[..2]).join(hex)
}

/// Compresses unless that does not save anything: small or already-compressed outputs
/// (e.g. `.rlib`s with compressed metadata) are stored raw and cost no decompression.
pub(crate) fn encode(data: &[u8]) -> io::Result<Vec<u8>> {
    let compressed = zstd::bulk::compress(data, ZSTD_LEVEL)?;
    let (codec, body) = if compressed.len() < data.len() {
        (CODEC_ZSTD, compressed.as_slice())
    } else {
        (CODEC_RAW, data)
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.push(codec);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Why a blob file was rejected; only ever logged.
#[derive(Debug)]
pub(crate) enum Corrupt {
    Header,
    Length { want: u64, got: u64 },
    TooLarge { want: u64, max: u64 },
    Zstd(io::Error),
    HashMismatch,
}

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corrupt::Header => write!(f, "bad header"),
            Corrupt::Length { want, got } => write!(f, "length {got}, header says {want}"),
            Corrupt::TooLarge { want, max } => {
                write!(
                    f,
                    "header says {want} bytes, more than the cache holds ({max})"
                )
            }
            Corrupt::Zstd(e) => write!(f, "zstd: {e}"),
            Corrupt::HashMismatch => write!(f, "content does not match its hash"),
        }
    }
}

/// `max`: the most a blob of this store can hold (its size limit). The header's length is
/// checked against it before it sizes a buffer or bounds a decompression, so a damaged
/// header cannot make the reader allocate more than the store could ever have held.
pub(crate) fn decode(id: &Hash, file: &[u8], max: u64) -> Result<Vec<u8>, Corrupt> {
    if file.len() < HEADER_LEN || &file[..3] != MAGIC {
        return Err(Corrupt::Header);
    }
    let want = u64::from_le_bytes(file[4..HEADER_LEN].try_into().expect("8 bytes"));
    if want > max {
        return Err(Corrupt::TooLarge { want, max });
    }
    let body = &file[HEADER_LEN..];
    let data = match file[3] {
        CODEC_RAW => body.to_vec(),
        CODEC_ZSTD => unzstd(body, want)?,
        _ => return Err(Corrupt::Header),
    };
    if data.len() as u64 != want {
        return Err(Corrupt::Length {
            want,
            got: data.len() as u64,
        });
    }
    if blake3::hash(&data).as_bytes() != id {
        return Err(Corrupt::HashMismatch);
    }
    Ok(data)
}

/// Stops one byte past the promised length, so a corrupt frame cannot inflate without bound.
fn unzstd(body: &[u8], want: u64) -> Result<Vec<u8>, Corrupt> {
    // Cap the up-front allocation: a corrupt header may promise anything.
    let cap = want.min(body.len() as u64 * 64 + 4096) as usize;
    if cap as u64 == want {
        return unzstd_bulk(body, cap);
    }
    let mut out = Vec::with_capacity(cap);
    zstd::stream::read::Decoder::with_buffer(body)
        .and_then(|d| d.take(want.saturating_add(1)).read_to_end(&mut out))
        .map_err(Corrupt::Zstd)?;
    Ok(out)
}

/// The common case (the promised length is plausible): one call into zstd with a
/// decompression context reused by the thread, instead of a streaming decoder set up per
/// blob. Output beyond `want` does not fit the buffer and fails.
fn unzstd_bulk(body: &[u8], want: usize) -> Result<Vec<u8>, Corrupt> {
    thread_local! {
        static CONTEXT: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let mut out = Vec::with_capacity(want);
    CONTEXT.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(Corrupt::Zstd)?);
        }
        let context = slot.as_mut().expect("just set");
        context
            .decompress_to_buffer(body, &mut out)
            .map_err(Corrupt::Zstd)
    })?;
    Ok(out)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Removes the temp file unless it was renamed into place, so no error path leaves one behind.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Writes `bytes` to a temp name next to `path`, then renames it over `path`: readers see the
/// old state or the whole new file, never a partial one. No fsync: a blob lost or torn by a power
/// failure fails its hash check on read and counts as a miss. Returns the failing path with the
/// error.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, io::Error)> {
    let dir = path.parent().expect("blob paths have a shard dir");
    let name = path.file_name().expect("blob paths have a name");
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp_name = format!(
        "{TEMP_PREFIX}{}-{}-{n}",
        name.to_string_lossy(),
        std::process::id()
    );
    let tmp = dir.join(tmp_name);
    let mut guard = TempFile(None);
    let mut file = create_new(&tmp, dir).map_err(|e| (tmp.clone(), e))?;
    guard.0 = Some(tmp.clone());
    file.write_all(bytes).map_err(|e| (tmp.clone(), e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| (path.to_path_buf(), e))?;
    guard.0 = None;
    Ok(())
}

/// Shard dirs are created on first use (and after `clear` removed them).
fn create_new(tmp: &Path, dir: &Path) -> io::Result<fs::File> {
    let open = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            open()
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(data: &[u8]) -> Hash {
        *blake3::hash(data).as_bytes()
    }

    #[test]
    fn round_trip_raw_and_compressed() {
        for data in [
            Vec::new(),
            b"x".to_vec(),
            vec![7u8; 100_000],
            (0..5000u32).flat_map(|i| i.to_le_bytes()).collect(),
        ] {
            let file = encode(&data).unwrap();
            assert_eq!(decode(&id(&data), &file, u64::MAX).unwrap(), data);
        }
        assert_eq!(encode(b"x").unwrap()[3], CODEC_RAW);
        assert_eq!(encode(&[7u8; 1000]).unwrap()[3], CODEC_ZSTD);
    }

    #[test]
    fn rejects_damage() {
        let data = vec![42u8; 10_000];
        let good = encode(&data).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x55;
            assert!(decode(&id(&data), &bad, u64::MAX).is_err(), "flip at {i}");
        }
        for len in 0..good.len() {
            assert!(
                decode(&id(&data), &good[..len], u64::MAX).is_err(),
                "truncated to {len}"
            );
        }
        assert!(decode(&id(b"other"), &good, u64::MAX).is_err());
        assert!(matches!(
            decode(&id(&data), &good, 9_999),
            Err(Corrupt::TooLarge {
                want: 10_000,
                max: 9_999
            })
        ));
    }

    #[test]
    fn hex_round_trip() {
        let h = id(b"abc");
        assert_eq!(parse_hex(&hex(&h)), Some(h));
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(parse_hex(&"g".repeat(64)), None);
    }
}
