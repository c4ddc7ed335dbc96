//! cachefs: a compiler cache keyed by what each compile was observed to touch.
//!
//! By job (DESIGN.md, "Layout"; `tests/layout.rs` checks the direction):
//! - `client`: compile mode of the `cachefs` binary; reaches the agent
//!   through `protocol` only.
//! - `agent`: the resident process: the conversation, lanes, workers,
//!   statistics, run logs; drives `entry`, `observe`, `stat_cache`.
//! - `entry`: the cache entry (key1, manifest, dep sets, result).
//! - `observe`: what a view recorded → a dep set and outputs.
//! - `stat_cache`, `digest`: content hashes and what keeps them cheap.
//! - `runlog`: run logs, the graph, mount records.
//! - `compiler`: knowledge of compilers, by family.
//! - `cli`: the commands; only the binaries use it.

pub mod agent;
mod bytes;
pub mod cli;
pub mod client;
pub mod compiler;
pub mod config;
pub mod digest;
pub mod entry;
pub mod fuse_mounts;
pub mod logging;
pub mod observe;
pub mod protocol;
pub mod runlog;
pub mod stat_cache;
