//! The cache entry, one file per concept, as a lookup meets them:
//!
//! - `key1`: what is known of a call before it runs, naming a manifest;
//! - `manifest`: the dep sets seen under one key1, and how the store's copy
//!   is updated;
//! - `dep_set`: the paths a compile touched and what it found there, with
//!   the result they lead to; `env`: the environment it read, as deps too;
//!   `validate`: whether a dep set still holds;
//! - `location`: the tree root, written as a mark in keys, dep sets and
//!   output paths; `relocate`: whether a result may be served at another
//!   root, or is pinned to its own;
//! - `result`: what a compile produced; `capture` reads it after a miss,
//!   `restore` writes it back on a hit.
//!
//! The agent drives these; nothing here talks to a client.

pub mod capture;
pub mod dep_set;
pub mod env;
pub mod key1;
pub mod location;
pub mod manifest;
pub mod relocate;
pub mod remote_value;
pub mod restore;
pub mod result;
pub mod validate;

pub use crate::digest::Hash;
pub use dep_set::{Dep, DepSet, DepState, Kind};
pub use manifest::Manifest;
pub use result::CachedResult;

/// Bumped whenever the meaning of a key or a stored record changes, so that
/// entries from another format are never read as ours. 3: key1 no longer
/// holds the environment; dep sets hold what of it the compile read. 4:
/// key1 and dep sets hold the tree root marked (`location`), a result that
/// carries its location is pinned to it (`relocate`).
pub const FORMAT_VERSION: u32 = 4;
