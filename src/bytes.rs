//! `#[serde(with = "crate::bytes")]` for `Vec<u8>` fields. serde treats a
//! `Vec<u8>` as a sequence and (de)serialises it byte by byte; as a byte
//! string it is copied in one piece. postcard writes both the same way (the
//! length, then the bytes), so stored manifests and frames do not change.

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Serializer;

pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    /// Formats without byte strings (JSON) give a sequence of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(b) = seq.next_element()? {
            v.push(b);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Plain {
        a: Vec<u8>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Fast {
        #[serde(with = "crate::bytes")]
        a: Vec<u8>,
    }

    /// Entries stored before (a plain `Vec<u8>`) read the same, and new ones
    /// are written the same.
    #[test]
    fn same_encoding_as_a_plain_vec() {
        for a in [vec![], vec![0u8, 1, 255], vec![7u8; 300]] {
            let plain = postcard::to_allocvec(&Plain { a: a.clone() }).unwrap();
            let fast = postcard::to_allocvec(&Fast { a: a.clone() }).unwrap();
            assert_eq!(plain, fast);
            assert_eq!(postcard::from_bytes::<Fast>(&plain).unwrap().a, a);
            let json = serde_json::to_string(&Fast { a: a.clone() }).unwrap();
            assert_eq!(
                json,
                serde_json::to_string(&Plain { a: a.clone() }).unwrap()
            );
            assert_eq!(serde_json::from_str::<Fast>(&json).unwrap().a, a);
        }
    }
}
