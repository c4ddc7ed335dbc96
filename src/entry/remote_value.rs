//! What the shared cache holds for an entry, beside the blobs it stores under their own
//! keys: a manifest with the results of its most recent dep sets, and a result with its
//! small outputs (`cachefs_store::INLINE_BLOB_MAX`). postcard-encoded; the store compresses,
//! chunks and checksums them like any value (`cachefs_store::remote`).

use crate::digest::Hash;
use serde::{Deserialize, Serialize};

/// A result as the remote holds it: the result's own bytes (its id is their hash) and the
/// blobs of its outputs up to `INLINE_BLOB_MAX` (the store writes larger ones under their
/// own keys), so that a hit reads no value per output. Every inline blob is checked against
/// its id before it is kept.
#[derive(Serialize, Deserialize)]
pub struct RemoteResult {
    #[serde(with = "crate::bytes")]
    pub result: Vec<u8>,
    pub blobs: Vec<InlineBlob>,
}

/// One output carried by a remote result: its blob id (content hash) and its bytes.
#[derive(Serialize, Deserialize)]
pub struct InlineBlob {
    pub id: Hash,
    #[serde(with = "crate::bytes")]
    pub data: Vec<u8>,
}

/// A manifest as the remote holds it: the manifest's bytes and the `RemoteResult`s of its
/// most recent dep sets (the agent's `INLINE_RESULTS`), so that a compile hit is one read: the result's
/// id is known only once a dep set validated, and a second read for it would wait on the
/// first. A result not carried here (an older set's) is read under its own key, where every
/// result is also written. It names its key1: a manifest found under another key (an entry
/// moved on the server) is refused, where its dep sets might validate and its carried
/// results would then be another compile's outputs.
#[derive(Serialize, Deserialize)]
pub struct RemoteManifest {
    pub key: Hash,
    #[serde(with = "crate::bytes")]
    pub manifest: Vec<u8>,
    pub results: Vec<InlineResult>,
}

/// One result carried by a remote manifest: its id and its `RemoteResult` bytes.
#[derive(Serialize, Deserialize)]
pub struct InlineResult {
    pub id: Hash,
    #[serde(with = "crate::bytes")]
    pub value: Vec<u8>,
}
