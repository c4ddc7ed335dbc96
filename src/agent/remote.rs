//! The agent's side of the shared cache: which remote tier (if any) the environment names
//! when the agent starts, and copying a remote hit's manifest and result into the local store.

use super::Agent;
use crate::entry::{CachedResult, DepSet, Hash, Manifest};
use cachefs_store::remote::{Kind, Remote};

/// The configured remote tier (CACHEFS_* variables over the config file's `[remote]`); a bad
/// setting is logged and the agent runs local-only (a cache setting must never break a build).
pub fn open_from_env(config: &crate::config::Config) -> Option<Remote> {
    let opened = config
        .remote()
        .map_err(|e| e.to_string())
        .and_then(|c| c.open().map_err(|e| e.to_string()));
    match opened {
        Ok(Some(remote)) => {
            let tiers: Vec<String> = remote
                .tiers()
                .map(|(t, _)| {
                    let servers: Vec<String> = t.health().into_iter().map(|h| h.server).collect();
                    format!("{} ({})", t.kind(), servers.join(", "))
                })
                .collect();
            log::info!(
                "shared cache: {}{}",
                tiers.join(" → "),
                if remote.read_only { ", read-only" } else { "" }
            );
            // Nothing larger is ever stored: a head that claims more is refused unread.
            Some(remote.with_max_value(config.cache_size / super::finish::MAX_RESULT_SHARE))
        }
        Ok(None) => None,
        Err(e) => {
            log::warn!("shared cache disabled: {e}");
            None
        }
    }
}

impl Agent {
    /// The remote manifest for `key`, if the remote tier has one.
    pub(super) fn remote_manifest(&self, key: &Hash) -> Option<Manifest> {
        Manifest::decode(&self.store.get_remote(Kind::Manifest, key, key)?)
    }

    /// A result from the local store, else from the remote tier; the bool says remote.
    pub(super) fn result_tiered(&self, key: &Hash, id: &Hash) -> Option<(CachedResult, bool)> {
        if let Some(r) = self.store.get_result(id).ok().flatten() {
            return CachedResult::decode(&r).map(|r| (r, false));
        }
        let bytes = self.store.get_remote(Kind::Result, id, key)?;
        let result = CachedResult::decode(&bytes)?;
        // The remote key is the result's id: reject a value stored under the wrong one.
        (result.id() == *id).then_some((result, true))
    }

    /// After a remote hit was restored (its blobs are local now): keep the result and the
    /// dep set locally so the next lookup is a local hit.
    pub(super) fn keep_remote_hit(&self, key: &Hash, set: &DepSet, result: &CachedResult) {
        let kept = self
            .store
            .put_result(&set.result, &result.encode(), &result.blobs())
            .and_then(|()| self.manifests.add(&self.store, key, set.clone()));
        if let Err(e) = kept {
            log::warn!("cannot copy a remote hit into the local store: {e}");
        }
    }

    /// Queues a new entry for the remote tier: result, then manifest, after the blobs
    /// `store_outputs` already queued, so a reader that finds the manifest finds the rest.
    pub(super) fn push_remote(&self, key: &Hash, id: &Hash, result: &[u8], manifest: &[u8]) {
        if self.store.has_remote() {
            self.store
                .push_remote(Kind::Result, id, key, result.to_vec());
            self.store
                .push_remote(Kind::Manifest, key, key, manifest.to_vec());
        }
    }
}
