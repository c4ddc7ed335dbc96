//! cachefs's local cache store: a redb index (results, manifests, blob reference counts, LRU
//! order, counters) plus zstd-compressed, content-addressed blob files under `blobs/ab/<hex>`,
//! and optional shared tiers behind it (`remote`: memcached or Redis; `tiered`).
//!
//! The agent owns one [`TieredStore`] per cache directory and shares it across its threads.
//! See `store.rs` for the durability and LRU choices.

mod blobfile;
mod error;
mod index;
pub mod remote;
mod size;
mod store;
mod tiered;
mod tx;

pub use error::{SizeError, StoreError};
pub use size::parse_size;
pub use store::{LocalStore, StoreStats, INDEX_FILE};
pub use tiered::{TieredStore, INLINE_BLOB_MAX};

/// blake3 of a blob's uncompressed content; also the type of result and manifest keys.
pub type Hash = [u8; 32];
