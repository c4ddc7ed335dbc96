//! The agent's side of the shared cache: which remote tier (if any) the environment names
//! when the agent starts, and copying a remote hit's manifest and result into the local store.

use super::Agent;
use crate::entry::remote_value::{InlineBlob, InlineResult, RemoteManifest, RemoteResult};
use crate::entry::{CachedResult, DepSet, Hash, Manifest};
use cachefs_store::remote::{Kind, Remote};
use cachefs_store::INLINE_BLOB_MAX;

/// How many of a manifest's dep sets (the most recent) have their results carried in the
/// remote manifest: each is read back from the local store on every miss of that key1, and
/// a key1 with many sets (configure's conftest.c) must not make a miss read hundreds.
const INLINE_RESULTS: usize = 4;
/// Nor make the manifest large: results are carried while their bytes stay under this.
const INLINE_RESULTS_MAX: usize = 1 << 20;

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
    /// The remote manifest for `key`, if the remote tier has one, with the results it
    /// carries.
    pub(super) fn remote_manifest(&self, key: &Hash) -> Option<(Manifest, Vec<InlineResult>)> {
        let bytes = self.store.get_remote(Kind::Manifest, key, key)?;
        let remote: RemoteManifest = postcard::from_bytes(&bytes).ok()?;
        if remote.key != *key {
            log::warn!("remote manifest names another key; ignored");
            return None;
        }
        Some((Manifest::decode(&remote.manifest)?, remote.results))
    }

    /// A result from the local store, else from the results a remote manifest carried
    /// (`inline`), else from the remote tier; the bool says remote.
    pub(super) fn result_tiered(
        &self,
        key: &Hash,
        id: &Hash,
        inline: &[InlineResult],
    ) -> Option<(CachedResult, bool)> {
        if let Some(r) = self.store.get_result(id).ok().flatten() {
            return CachedResult::decode(&r).map(|r| (r, false));
        }
        inline
            .iter()
            .find(|r| r.id == *id)
            .and_then(|r| self.open_remote_result(id, &r.value))
            .or_else(|| {
                let bytes = self.store.get_remote(Kind::Result, id, key)?;
                self.open_remote_result(id, &bytes)
            })
            .map(|r| (r, true))
    }

    /// A remote result's value, checked against its id, its carried blobs kept locally.
    fn open_remote_result(&self, id: &Hash, bytes: &[u8]) -> Option<CachedResult> {
        let remote: RemoteResult = postcard::from_bytes(bytes).ok()?;
        let result = CachedResult::decode(&remote.result)?;
        // The remote key is the result's id: reject a value stored under the wrong one.
        if result.id() != *id {
            log::warn!("remote result does not match its id; ignored");
            return None;
        }
        // Kept locally, where restoring finds them; only blobs this result names, each
        // under its content's hash (a wrong one is dropped, and restoring then misses).
        let named = result.blobs();
        for b in remote.blobs {
            if !named.contains(&b.id) || blake3::hash(&b.data).as_bytes() != &b.id {
                log::warn!("remote result carries a blob that does not match its id; ignored");
                continue;
            }
            if let Err(e) = self.store.put_blob(&b.data) {
                log::warn!("cannot keep a remote result's output locally: {e}");
                return None;
            }
        }
        Some(result)
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
            let Some(value) = self.remote_result(result) else {
                return;
            };
            let manifest = self.remote_manifest_value(key, id, &value, manifest);
            self.store.push_remote(Kind::Result, id, key, value);
            self.store.push_remote(Kind::Manifest, key, key, manifest);
        }
    }
}

impl Agent {
    /// The remote form of an encoded manifest: with the results of its most recent dep sets
    /// (`id`'s is `value`, the others are read from the local store; one that is gone is
    /// left out, and read under its own key).
    fn remote_manifest_value(
        &self,
        key: &Hash,
        id: &Hash,
        value: &[u8],
        manifest: &[u8],
    ) -> Vec<u8> {
        let mut results: Vec<InlineResult> = Vec::new();
        let mut total = 0;
        let sets = Manifest::decode(manifest)
            .map(|m| m.sets)
            .unwrap_or_default();
        for set in sets.iter().take(INLINE_RESULTS) {
            if results.iter().any(|r| r.id == set.result) {
                continue;
            }
            let carried = if set.result == *id {
                Some(value.to_vec())
            } else {
                let local = self.store.get_result(&set.result).ok().flatten();
                local.and_then(|r| self.remote_result(&r))
            };
            let Some(carried) = carried else { continue };
            if total + carried.len() > INLINE_RESULTS_MAX {
                continue;
            }
            total += carried.len();
            results.push(InlineResult {
                id: set.result,
                value: carried,
            });
        }
        let value = RemoteManifest {
            key: *key,
            manifest: manifest.to_vec(),
            results,
        };
        postcard::to_allocvec(&value).expect("a manifest serialises")
    }

    /// The remote form of an encoded result: with the blobs the store did not send under
    /// their own keys (`put_blob_tiered`), read back from the local store. None, and nothing
    /// is sent, when one of them is gone: readers would miss on it anyway.
    fn remote_result(&self, result: &[u8]) -> Option<Vec<u8>> {
        let decoded = CachedResult::decode(result)?;
        let mut blobs = Vec::new();
        for id in decoded.blobs() {
            if blobs.iter().any(|b: &InlineBlob| b.id == id) {
                continue;
            }
            match self.store.get_blob(&id) {
                Ok(Some(data)) if data.len() <= INLINE_BLOB_MAX => {
                    blobs.push(InlineBlob { id, data })
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    log::info!("remote: a result's output is no longer stored; not sent");
                    return None;
                }
            }
        }
        let value = RemoteResult {
            result: result.to_vec(),
            blobs,
        };
        Some(postcard::to_allocvec(&value).expect("a result serialises"))
    }
}
