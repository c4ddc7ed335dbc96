//! cachefs's local cache store: a redb index (results, manifests, blob reference counts, LRU
//! order, counters) plus zstd-compressed, content-addressed blob files under `blobs/ab/<hex>`.
//!
//! The agent owns one [`LocalStore`] per cache directory and shares it across its threads.
//! See `store.rs` for the durability and LRU choices.

mod blobfile;
mod error;
mod index;
mod size;
mod store;
mod tx;

pub use error::{SizeError, StoreError};
pub use size::parse_size;
pub use store::{LocalStore, StoreStats};

/// blake3 of a blob's uncompressed content; also the type of result and manifest keys.
pub type Hash = [u8; 32];
