//! cachefs: a compiler cache keyed by what each compile was observed to touch.

pub mod agent;
mod bytes;
pub mod cli;
pub mod client;
pub mod compiler;
pub mod config;
pub mod fuse_mounts;
pub mod graph;
pub mod key;
pub mod logging;
pub mod observe;
pub mod protocol;
pub mod runlog;
pub mod scratch;
pub mod stat_cache_file;
pub mod tree_record;
pub mod view;
pub mod view_coverage;
