//! How one value is laid out on a remote server: a head item (format magic, a tag, total
//! length, blake3 of the whole value, blake3 of every chunk) plus chunks under their own
//! keys, each below memcached's 1 MiB item limit. Small values ride inline in the head.
//! Every chunk and the reassembled whole are verified, so a missing, stale or corrupt chunk
//! reads as a miss.

use super::{Kind, FORMAT_VERSION};
use crate::Hash;

/// With a shared secret (CACHEFS_REMOTE_KEY), the head's tag is a keyed blake3 MAC of the
/// rest of the head (length, whole-value hash, chunk hashes or the inline value) and of
/// where the value belongs (its `Place`: kind, key, format version). A machine without the
/// key cannot write an entry that a keyed reader accepts, nor copy a genuine one to another
/// key or kind; and a forged head is refused before any chunk is fetched or allocated for.
/// The hashes it covers are plain blake3, which bind the chunks and the whole value to it.
/// Without a key the tag is zero: a keyed value is refused by an unkeyed reader and the
/// other way round.
pub type Seal = Option<[u8; 32]>;

/// The MAC key derived from a user's secret.
pub fn seal_from_secret(secret: &str) -> [u8; 32] {
    blake3::derive_key("cachefs remote entry authentication v1", secret.as_bytes())
}

/// Where a value is stored: the kind it was written as and the head item's key
/// (`remote_key`). A keyed reader accepts a value only at the place it was written.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub kind: Kind,
    pub key: &'a str,
}

/// Separates this MAC's input from any other use of the key.
const MAC_DOMAIN: &[u8] = b"cachefs remote head\0";

/// The tag of a head whose bytes after the tag are `body`.
fn tag(body: &[u8], seal: &Seal, place: Place) -> Hash {
    let Some(k) = seal else {
        return [0; 32];
    };
    // Every field before the body has a fixed length or a length prefix, so no two
    // different (place, body) pairs feed the MAC the same bytes.
    let mut mac = blake3::Hasher::new_keyed(k);
    mac.update(MAC_DOMAIN);
    mac.update(&FORMAT_VERSION.to_le_bytes());
    mac.update(place.kind.tag().as_bytes());
    mac.update(&(place.key.len() as u64).to_le_bytes());
    mac.update(place.key.as_bytes());
    mac.update(body);
    *mac.finalize().as_bytes()
}

/// Bytes per chunk: under memcached's default 1 MiB item limit with room for key and header.
pub const CHUNK_SIZE: usize = 1000 * 1024;
const MAGIC: &[u8; 4] = b"CFR3";
const TAG_LEN: usize = 32;
/// Magic, tag, total length, whole-value hash, chunk count: what every head starts with.
pub const HEAD_LEN: usize = 4 + TAG_LEN + 8 + 32 + 4;

/// The most chunks one value may have: 4000 MiB at `CHUNK_SIZE`. The agent caches results
/// up to a quarter of the local cache (2.5 GiB at the default 10 GiB), and a remote value is
/// assembled in memory, so this is also the most one remote read can make the agent hold.
/// Larger values are not written, and a head that claims more is refused before anything is
/// allocated (an 80-byte forged head could otherwise ask for 2^32 chunk hashes, 128 GiB).
pub const MAX_CHUNKS: usize = 4000;
/// The largest value stored on or read from a remote server.
pub const MAX_VALUE_LEN: u64 = (MAX_CHUNKS * CHUNK_SIZE) as u64;
/// The largest item cachefs writes: a head with a value inline (a chunked value's head, 32
/// bytes per chunk, is smaller). A server that announces a longer item is not read.
pub const MAX_ITEM_LEN: usize = HEAD_LEN + CHUNK_SIZE;
const _: () = assert!(32 * MAX_CHUNKS <= CHUNK_SIZE, "a chunked head fits an item");

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("remote head item is malformed")]
    BadHead,
    #[error(
        "remote head item is not authenticated for this place: written without \
         CACHEFS_REMOTE_KEY or with another key, or copied from another key or kind"
    )]
    BadTag,
    #[error("remote chunk {0} does not match its checksum")]
    BadChunk(usize),
    #[error("remote value does not match its checksum")]
    BadWhole,
    #[error("remote head claims a value of {0} bytes, over the limit of {MAX_VALUE_LEN}")]
    TooLarge(u64),
}

/// A parsed head item: what the value's chunks must hash to.
#[derive(Debug)]
pub struct Head {
    pub len: u64,
    pub whole: Hash,
    pub chunks: Vec<Hash>,
    pub inline: Option<Vec<u8>>,
}

/// The head item and the chunks to store under `chunk_key(key, i)`.
pub fn split<'a>(value: &'a [u8], seal: &Seal, place: Place) -> (Vec<u8>, Vec<&'a [u8]>) {
    let chunks: Vec<&[u8]> = if value.len() <= CHUNK_SIZE {
        Vec::new()
    } else {
        value.chunks(CHUNK_SIZE).collect()
    };
    let inline = if chunks.is_empty() { value.len() } else { 0 };
    let mut body = Vec::with_capacity(HEAD_LEN + chunks.len() * 32 + inline);
    body.extend_from_slice(&(value.len() as u64).to_le_bytes());
    body.extend_from_slice(blake3::hash(value).as_bytes());
    body.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for c in &chunks {
        body.extend_from_slice(blake3::hash(c).as_bytes());
    }
    if chunks.is_empty() {
        body.extend_from_slice(value);
    }
    let tag = tag(&body, seal, place);
    let head = [&MAGIC[..], &tag, &body].concat();
    (head, chunks)
}

/// The head read from `place`, if its tag is right for the seal and the place; checked
/// before the head is parsed, so that with a key a forged head costs nothing more.
pub fn open_head(raw: &[u8], seal: &Seal, place: Place) -> Result<Head, ChunkError> {
    let rest = raw.strip_prefix(MAGIC).ok_or(ChunkError::BadHead)?;
    let (found, body) = take(rest, TAG_LEN)?;
    if found != tag(body, seal, place) {
        return Err(ChunkError::BadTag);
    }
    parse_head(raw)
}

/// The structure of a head, tag not checked (see `open_head`). Every length in it is
/// checked against the head's own size and `MAX_VALUE_LEN` before anything is allocated:
/// the head comes from the server, not necessarily from us.
pub fn parse_head(head: &[u8]) -> Result<Head, ChunkError> {
    let rest = head.strip_prefix(MAGIC).ok_or(ChunkError::BadHead)?;
    let (_tag, rest) = take(rest, TAG_LEN)?;
    let (len, rest) = take(rest, 8)?;
    let len = u64::from_le_bytes(len.try_into().unwrap());
    let (whole, rest) = take(rest, 32)?;
    let (n, rest) = take(rest, 4)?;
    let n = u32::from_le_bytes(n.try_into().unwrap());
    if len > MAX_VALUE_LEN {
        return Err(ChunkError::TooLarge(len));
    }
    if u64::from(n) != chunk_count(len) {
        return Err(ChunkError::BadHead);
    }
    // The inline value has the stated length, or there is one hash per chunk and no more.
    let expected = if n == 0 { len } else { 32 * u64::from(n) };
    if rest.len() as u64 != expected {
        return Err(ChunkError::BadHead);
    }
    let (chunks, inline) = if n == 0 {
        (Vec::new(), Some(rest.to_vec()))
    } else {
        let hashes = rest.chunks_exact(32).map(|h| h.try_into().unwrap());
        (hashes.collect(), None)
    };
    Ok(Head {
        len,
        whole: whole.try_into().unwrap(),
        chunks,
        inline,
    })
}

/// How many chunks `split` makes of a value of `len` bytes: none when it fits inline.
fn chunk_count(len: u64) -> u64 {
    if len <= CHUNK_SIZE as u64 {
        0
    } else {
        len.div_ceil(CHUNK_SIZE as u64)
    }
}

fn take(b: &[u8], n: usize) -> Result<(&[u8], &[u8]), ChunkError> {
    if b.len() < n {
        return Err(ChunkError::BadHead);
    }
    Ok(b.split_at(n))
}

/// Checks one fetched chunk against the head: its length (every chunk but the last is
/// `CHUNK_SIZE` long), so the chunks of a value cannot add up to more than it, and its hash.
pub fn verify_chunk(head: &Head, i: usize, data: &[u8]) -> Result<(), ChunkError> {
    let before = (i as u64).saturating_mul(CHUNK_SIZE as u64);
    let want = head.len.saturating_sub(before).min(CHUNK_SIZE as u64);
    if data.len() as u64 != want || head.chunks.get(i) != Some(blake3::hash(data).as_bytes()) {
        return Err(ChunkError::BadChunk(i));
    }
    Ok(())
}

/// The whole value, verified against the head's hash and length.
pub fn assemble(head: &Head, chunks: Vec<Vec<u8>>) -> Result<Vec<u8>, ChunkError> {
    let value = match &head.inline {
        Some(v) => v.clone(),
        None => chunks.concat(),
    };
    if value.len() as u64 != head.len || blake3::hash(&value).as_bytes() != &head.whole {
        return Err(ChunkError::BadWhole);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Place = Place {
        kind: Kind::Result,
        key: "cachefs3:r:01",
    };
    /// Where a head's length and chunk count are.
    const LEN_AT: usize = 4 + TAG_LEN;
    const COUNT_AT: usize = HEAD_LEN - 4;

    fn round_trip(value: &[u8], seal: &Seal) -> Result<Vec<u8>, ChunkError> {
        let (head, chunks) = split(value, seal, P);
        let head = open_head(&head, seal, P)?;
        for (i, c) in chunks.iter().enumerate() {
            verify_chunk(&head, i, c)?;
        }
        assemble(&head, chunks.iter().map(|c| c.to_vec()).collect())
    }

    #[test]
    fn small_and_large_values_round_trip() {
        let big: Vec<u8> = (0..3 * CHUNK_SIZE + 17)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        for seal in [None, Some(seal_from_secret("team secret"))] {
            assert_eq!(round_trip(b"", &seal).unwrap(), b"");
            assert_eq!(round_trip(b"abc", &seal).unwrap(), b"abc");
            assert_eq!(round_trip(&big, &seal).unwrap(), big);
        }
    }

    #[test]
    fn a_corrupt_chunk_or_head_is_rejected() {
        let big = vec![5u8; 2 * CHUNK_SIZE + 1];
        let (head, chunks) = split(&big, &None, P);
        let parsed = open_head(&head, &None, P).unwrap();
        let mut bad = chunks[1].to_vec();
        bad[10] ^= 1;
        assert_eq!(verify_chunk(&parsed, 1, &bad), Err(ChunkError::BadChunk(1)));
        let mut short = chunks.iter().map(|c| c.to_vec()).collect::<Vec<_>>();
        short.pop();
        assert_eq!(assemble(&parsed, short), Err(ChunkError::BadWhole));
        assert_eq!(parse_head(&head[..20]).err(), Some(ChunkError::BadHead));
        let (mut small, _) = split(b"hello", &None, P);
        let last = small.len() - 1;
        small[last] ^= 1;
        let parsed = open_head(&small, &None, P).unwrap();
        assert_eq!(assemble(&parsed, vec![]), Err(ChunkError::BadWhole));
    }

    #[test]
    fn lengths_in_a_head_are_checked_before_anything_is_allocated() {
        let (genuine, _) = split(&vec![1u8; 2 * CHUNK_SIZE + 1], &None, P);
        let forge = |len: u64, n: u32, hashes: usize| {
            let mut h = genuine[..HEAD_LEN].to_vec();
            h[LEN_AT..LEN_AT + 8].copy_from_slice(&len.to_le_bytes());
            h[COUNT_AT..].copy_from_slice(&n.to_le_bytes());
            h.extend(std::iter::repeat_n(0u8, 32 * hashes));
            h
        };
        let huge = u64::from(u32::MAX) * CHUNK_SIZE as u64;
        assert_eq!(
            open_head(&forge(huge, u32::MAX, 0), &None, P).err(),
            Some(ChunkError::TooLarge(huge))
        );
        let most = MAX_VALUE_LEN;
        assert!(parse_head(&forge(most, MAX_CHUNKS as u32, MAX_CHUNKS)).is_ok());
        assert_eq!(
            parse_head(&forge(most + 1, MAX_CHUNKS as u32 + 1, MAX_CHUNKS + 1)).err(),
            Some(ChunkError::TooLarge(most + 1))
        );
        // Hashes missing or extra, a chunk count that does not fit the length, an inline
        // value longer than a chunk: malformed.
        let len = 3 * CHUNK_SIZE as u64;
        for (n, hashes) in [(3, 2), (3, 4), (4, 4)] {
            let head = forge(len, n, hashes);
            assert_eq!(parse_head(&head).err(), Some(ChunkError::BadHead));
        }
        let inline = CHUNK_SIZE as u64 + 1;
        assert_eq!(
            parse_head(&forge(inline, 0, inline as usize / 32 + 1)).err(),
            Some(ChunkError::BadHead)
        );
        // A chunk longer or shorter than its place in the value is refused unhashed.
        let head = parse_head(&forge(len, 3, 3)).unwrap();
        assert_eq!(
            verify_chunk(&head, 0, &[0; 5]),
            Err(ChunkError::BadChunk(0))
        );
    }

    #[test]
    fn only_the_right_key_opens_a_sealed_value() {
        let k = Some(seal_from_secret("team secret"));
        let (head, _) = split(b"object", &k, P);
        let parsed = open_head(&head, &k, P).unwrap();
        assert_eq!(assemble(&parsed, vec![]).unwrap(), b"object");
        let other = Some(seal_from_secret("guess"));
        assert_eq!(open_head(&head, &other, P).err(), Some(ChunkError::BadTag));
        assert_eq!(open_head(&head, &None, P).err(), Some(ChunkError::BadTag));
        // An entry planted without the key does not pass a keyed reader.
        let (planted, _) = split(b"object", &None, P);
        assert_eq!(open_head(&planted, &k, P).err(), Some(ChunkError::BadTag));
        // Nor does a genuine head with a forged length or chunk hash: the tag covers them.
        let (big, _) = split(&vec![3u8; CHUNK_SIZE + 1], &k, P);
        for at in [LEN_AT, HEAD_LEN + 5] {
            let mut forged = big.clone();
            forged[at] ^= 1;
            assert_eq!(open_head(&forged, &k, P).err(), Some(ChunkError::BadTag));
        }
    }

    #[test]
    fn a_sealed_value_opens_only_at_its_place() {
        let k = Some(seal_from_secret("team secret"));
        let (head, _) = split(b"object", &k, P);
        let elsewhere = [
            Place {
                key: "cachefs3:r:02",
                ..P
            },
            Place {
                kind: Kind::Manifest,
                ..P
            },
            Place {
                kind: Kind::Blob,
                ..P
            },
        ];
        for place in elsewhere {
            let opened = open_head(&head, &k, place);
            assert_eq!(opened.err(), Some(ChunkError::BadTag), "{place:?}");
        }
        // Unkeyed values are checked by plain hashes only, as before: anyone can write
        // anything there, so a copy is not refused.
        let (plain, _) = split(b"object", &None, P);
        let place = Place {
            kind: Kind::Blob,
            ..P
        };
        let parsed = open_head(&plain, &None, place).unwrap();
        assert_eq!(assemble(&parsed, vec![]).unwrap(), b"object");
    }
}
