//! The key of a call run under a prefix command (`compiler::prefix`).
//!
//! distcc and icecc give a local compile's objects (checked on real farms by
//! `tests/farms.rs`; what they would not, debug information and diagnostics,
//! is never stored), so their calls keep the plain key: a farm's results and
//! a local build's serve each other. Any other prefix may change what the
//! compile produces (a script that adds a flag), so its command line and its
//! program's content join the key: its results and plain ones never mix.

use crate::compiler::prefix::{Prefix, Tool};
use crate::compiler::Family;
use crate::digest::{field, Hash};
use crate::stat_cache::StatCache;

/// `key` (the plain key1) for a call of `family` with environment `env`, or
/// why its prefix cannot be keyed.
pub(super) fn key(
    key: Hash,
    family: Family,
    env: &[(Vec<u8>, Vec<u8>)],
    stat_cache: &StatCache,
) -> Result<Hash, String> {
    let Some(prefix) = Prefix::of_call(family, env) else {
        return Ok(key);
    };
    if prefix.tool() != Tool::Other {
        return Ok(key);
    }
    let program = stat_cache
        .resolved_file_hash(prefix.program())
        .map_err(|e| format!("cannot hash the prefix {}: {e}", prefix.program().display()))?;
    let mut h = blake3::Hasher::new();
    h.update(b"cachefs-prefix");
    h.update(&key);
    h.update(&program);
    for arg in &prefix.argv[1..] {
        field(&mut h, arg.as_encoded_bytes());
    }
    Ok(*h.finalize().as_bytes())
}
