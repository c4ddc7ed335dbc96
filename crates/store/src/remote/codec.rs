//! What a remote value is stored as: a codec byte, the value's length (u64 LE) and the
//! value, zstd-compressed when that saves something. Chunking, the checksums and the MAC
//! (`chunking`) apply to these stored bytes, so nothing is decompressed before it was
//! verified; and with a key, nothing that was not written by a holder of the key.
//!
//! Without a key anyone who can write to the server can plant a value, so the stated length
//! bounds the decompression: it is checked against the reader's limit and against
//! `MAX_RATIO` times the stored size before any buffer is sized, and zstd writes into a
//! buffer of exactly that length (more output fails). A zstd bomb is refused unread, and a
//! reader never holds more than `MAX_RATIO` times what it downloaded.

/// Bytes before the value: codec, length.
pub const HEADER_LEN: usize = 9;
const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;
/// Build outputs compress 3–10×; a value that compresses better than this is stored raw,
/// so that a reader can refuse any stored value claiming more.
pub const MAX_RATIO: u64 = 64;
/// Fast enough for the background writer (objects compress at ~300 MB/s), and within a few
/// per cent of level 19's size on object files.
const LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("remote value is malformed (no codec header or an unknown codec)")]
    Malformed,
    #[error("remote value claims {len} bytes, over this reader's limit of {limit}")]
    TooLarge { len: u64, limit: u64 },
    #[error(
        "remote value claims {len} bytes from {stored} stored, a ratio over {MAX_RATIO}: \
         refused undecompressed"
    )]
    Ratio { len: u64, stored: u64 },
    #[error("remote value does not decompress to its stated length of {0} bytes")]
    Length(u64),
}

/// The stored form of `value`.
pub fn pack(value: &[u8]) -> Vec<u8> {
    let compressed = zstd::bulk::compress(value, LEVEL)
        .ok()
        .filter(|c| c.len() < value.len() && (value.len() as u64) <= bound(c.len()));
    let (codec, body) = match &compressed {
        Some(c) => (CODEC_ZSTD, &c[..]),
        None => (CODEC_RAW, value),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(codec);
    out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The most a compressed body of `stored` bytes may claim.
fn bound(stored: usize) -> u64 {
    (stored as u64).saturating_mul(MAX_RATIO)
}

/// The value stored as `stored`, at most `limit` bytes long.
pub fn unpack(stored: &[u8], limit: u64) -> Result<Vec<u8>, CodecError> {
    if stored.len() < HEADER_LEN {
        return Err(CodecError::Malformed);
    }
    let (head, body) = stored.split_at(HEADER_LEN);
    let len = u64::from_le_bytes(head[1..].try_into().expect("8 bytes"));
    if len > limit {
        return Err(CodecError::TooLarge { len, limit });
    }
    match head[0] {
        CODEC_RAW if body.len() as u64 == len => Ok(body.to_vec()),
        CODEC_RAW => Err(CodecError::Length(len)),
        CODEC_ZSTD => {
            if len > bound(body.len()) {
                return Err(CodecError::Ratio {
                    len,
                    stored: body.len() as u64,
                });
            }
            // Exactly the stated length: a frame that inflates further fails here.
            let mut out = Vec::with_capacity(len as usize);
            decompress_into(body, &mut out).map_err(|_| CodecError::Length(len))?;
            if out.len() as u64 != len {
                return Err(CodecError::Length(len));
            }
            Ok(out)
        }
        _ => Err(CodecError::Malformed),
    }
}

/// One zstd context per thread, reused: setting one up costs more than decompressing a
/// typical object.
fn decompress_into(body: &[u8], out: &mut Vec<u8>) -> std::io::Result<usize> {
    thread_local! {
        static CONTEXT: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    CONTEXT.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        slot.as_mut()
            .expect("just set")
            .decompress_to_buffer(body, out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_compressed_when_that_saves() {
        let text = b"int main(void) { return 0; }\n".repeat(100);
        let noise: Vec<u8> = (0..5000u32)
            .flat_map(|i| blake3::hash(&i.to_le_bytes()).as_bytes()[..4].to_vec())
            .collect();
        for value in [&b""[..], b"x", &text, &noise] {
            let stored = pack(value);
            assert_eq!(unpack(&stored, 1 << 20).unwrap(), value);
        }
        assert!(pack(&text).len() < text.len() / 5);
        assert_eq!(pack(&noise)[0], CODEC_RAW);
        // Zeros compress far past the ratio: stored raw, never refused.
        let zeros = vec![0u8; 1 << 20];
        assert_eq!(pack(&zeros)[0], CODEC_RAW);
        assert_eq!(unpack(&pack(&zeros), 1 << 20).unwrap(), zeros);
    }

    #[test]
    fn stated_lengths_are_bounded_before_decompressing() {
        let zeros = zstd::bulk::compress(&vec![0u8; 8 << 20], 3).unwrap();
        let stored = |len: u64| {
            let mut s = vec![CODEC_ZSTD];
            s.extend_from_slice(&len.to_le_bytes());
            s.extend_from_slice(&zeros);
            s
        };
        // Over the reader's limit, over the ratio, under the real size: all refused.
        assert!(matches!(
            unpack(&stored(u64::MAX), 1 << 30),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(matches!(
            unpack(&stored(8 << 20), 1 << 30),
            Err(CodecError::Ratio { .. })
        ));
        assert_eq!(unpack(&stored(100), 1 << 30), Err(CodecError::Length(100)));
        assert_eq!(unpack(&[CODEC_RAW, 1], 10), Err(CodecError::Malformed));
        let mut raw = vec![CODEC_RAW];
        raw.extend_from_slice(&5u64.to_le_bytes());
        raw.extend_from_slice(b"abc");
        assert_eq!(unpack(&raw, 10), Err(CodecError::Length(5)));
        raw[0] = 9;
        assert_eq!(unpack(&raw, 10), Err(CodecError::Malformed));
    }
}
