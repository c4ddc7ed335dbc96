//! Looking a call up: its manifest's dep sets, local first, then the
//! shared tier's, each validated against the disk; the first that holds has
//! its outputs restored.

use super::call::Served;
use super::{runs, Agent};
use crate::config;
use crate::entry::env::Env;
use crate::entry::location::Root;
use crate::entry::relocate::{result_here, set_here};
use crate::entry::remote_value::InlineResult;
use crate::entry::validate::{validate_with, Checked};
use crate::entry::{restore, CachedResult, Dep, Hash, Manifest};
use crate::runlog::MissReason;

/// A hit: the result (outputs restored), whether any of it came from the
/// remote tier, and the dep set's deps when asked for (for the run log).
pub(super) type Hit = (CachedResult, bool, Vec<Dep>);

/// What a lookup is for: the call's key1, environment (as keys compare it)
/// and tree root, and whether the hit's deps are wanted back (for the run
/// log).
struct Wanted<'a> {
    key: &'a Hash,
    env: &'a Env,
    root: Option<&'a Root>,
    with_deps: bool,
}

impl Agent {
    /// The lookup of a call with key1 `key`, unless the call asks to
    /// replace its entry (CACHEFS_RECACHE).
    pub(super) fn look_up_call(
        &self,
        call: &Served,
        key: &Hash,
        with_deps: bool,
    ) -> Result<Hit, MissReason> {
        if config::switch_in(&call.req.env, config::ENV_RECACHE) {
            return Err(MissReason::Recache);
        }
        let looking = std::time::Instant::now();
        let found = self.lookup(&Wanted {
            key,
            env: &call.env,
            root: call.root.as_ref(),
            with_deps,
        });
        log::debug!(
            "lookup (manifest, deps, restore) in {:?}",
            looking.elapsed()
        );
        found
    }

    /// The first stored dep set that still holds, with its outputs restored:
    /// local dep sets first, then the shared remote tier's; otherwise what
    /// changed since the most recent one. The bool says the hit came (at
    /// least in part) from the remote tier.
    /// The dep set's deps come back only when `with_deps` (for the run log).
    fn lookup(&self, wanted: &Wanted) -> Result<Hit, MissReason> {
        let key = wanted.key;
        self.pending.wait_for(key);
        let reading = std::time::Instant::now();
        let local = self
            .store
            .get_manifest(key)
            .ok()
            .flatten()
            .and_then(|b| Manifest::decode(&b));
        log::debug!("manifest read and decoded in {:?}", reading.elapsed());
        let mut reason = MissReason::NoEntry;
        if let Some(m) = &local {
            match self.first_valid(wanted, m, None) {
                Ok(hit) => return Ok(hit),
                Err(r) => reason = r,
            }
        }
        let Some((remote, results)) = self.remote_manifest(key) else {
            return Err(reason);
        };
        self.first_valid(wanted, &remote, Some(&results))
            .map_err(|r| {
                if reason == MissReason::NoEntry {
                    r
                } else {
                    reason
                }
            })
    }

    /// `remote`: the manifest came from the remote tier, with the results it carries.
    fn first_valid(
        &self,
        wanted: &Wanted,
        manifest: &Manifest,
        remote: Option<&[InlineResult]>,
    ) -> Result<Hit, MissReason> {
        let key = wanted.key;
        let remote_manifest = remote.is_some();
        let mut reason = MissReason::NoEntry;
        // Each set as it reads at this root (marked paths written out).
        let here: Vec<_> = manifest
            .sets
            .iter()
            .map(|s| set_here(s, wanted.root))
            .collect();
        let mut checked = Checked::for_sets(manifest.sets.len());
        for (stored, set) in manifest.sets.iter().zip(&here) {
            let validating = std::time::Instant::now();
            let valid = match set {
                Ok(set) => validate_with(set, &self.stat_cache, wanted.env, &mut checked),
                Err(pinned) => Err(pinned.clone()),
            };
            log::debug!(
                "{} deps checked in {:?}",
                stored.deps.len(),
                validating.elapsed()
            );
            if let Err(m) = valid {
                log::debug!(
                    "dep set rejected: {} is no longer {}",
                    m.path.display(),
                    m.expected
                );
                if reason == MissReason::NoEntry {
                    reason = runs::changed(&m, &self.stat_cache);
                }
                continue;
            }
            let carried = remote.unwrap_or_default();
            let Some((result, remote_result)) = self.result_tiered(key, &stored.result, carried)
            else {
                continue;
            };
            let restoring = std::time::Instant::now();
            let written = result_here(&result, wanted.root);
            let root = wanted.root.map(|r| r.path.as_slice());
            let restored = restore::restore(&written, &self.store, key, root);
            log::debug!("outputs restored in {:?}", restoring.elapsed());
            match restored {
                Ok(remote_blobs) => {
                    let remote = remote_manifest || remote_result || remote_blobs;
                    // Kept as stored: marked, for any root.
                    if remote_manifest || remote_result {
                        self.keep_remote_hit(key, stored, &result);
                    }
                    let deps = match set {
                        Ok(set) if wanted.with_deps => set.deps.clone(),
                        _ => Vec::new(),
                    };
                    return Ok((written.into_owned(), remote, deps));
                }
                Err(e) => {
                    log::warn!("cached result unusable, compiling instead: {e}");
                    if !remote_result {
                        let _ = self.store.remove_result(&stored.result);
                    }
                }
            }
        }
        Err(reason)
    }
}
