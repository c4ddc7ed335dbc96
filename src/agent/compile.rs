//! One compile request: look for a hit; on a miss, hand out a view, wait for
//! the client to finish, then store what the view observed.

use super::results::{self, CachedResult, Captured};
use super::stats::Origin;
use super::{Agent, Outcome};
use crate::compiler;
use crate::key::{self, DepSet, Hash, Manifest};
use crate::observe;
use crate::protocol::{self, CompileRequest, Exit, Finished, Request, Response};
use anyhow::Result;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Results larger than this share of the cache are not worth evicting
/// everything else for.
const MAX_RESULT_SHARE: u64 = 4;

impl Agent {
    pub(super) fn compile(&self, req: CompileRequest, stream: &mut UnixStream) -> Result<()> {
        let run_id = req.run_id.clone();
        let run = Origin {
            run: run_id.as_deref(),
            language: compiler::language::language(&req.compiler, &req.argv),
        };
        if let Some(reason) = compiler::uncacheable_reason(&req.compiler, &req.argv) {
            self.stats.record(run, Outcome::Uncacheable(reason));
            return reply(
                stream,
                Response::RunPlain {
                    reason: reason.into(),
                    warn: false,
                },
            );
        }
        let compiler = Path::new(std::ffi::OsStr::from_bytes(&req.compiler));
        let compiler_hash = match self.stat_cache.resolved_file_hash(compiler) {
            Ok(h) => h,
            Err(e) => {
                self.stats
                    .record(run, Outcome::Error("cannot hash the compiler"));
                let reason = format!("cannot hash the compiler {}: {e}", compiler.display());
                return reply(
                    stream,
                    Response::RunPlain {
                        reason,
                        warn: false,
                    },
                );
            }
        };
        let key = key::key1(&req, &compiler_hash);
        if let Some(hit) = self.lookup(&key) {
            self.stats.record(
                run,
                Outcome::Hit {
                    saved_ms: hit.compile_ms,
                },
            );
            return reply(
                stream,
                Response::Hit {
                    stdout: hit.stdout,
                    stderr: hit.stderr,
                    exit: hit.exit,
                },
            );
        }
        let Some(mirror) = &self.mirror else {
            self.stats
                .record(run, Outcome::Error("observation unavailable"));
            let reason = format!("compiles cannot be observed ({})", self.observation);
            return reply(stream, Response::RunPlain { reason, warn: true });
        };
        let view = mirror.open_view();
        self.stats.record(run, Outcome::Miss);
        let miss = Response::Miss {
            view_root: mirror.view_root(view).as_os_str().as_bytes().to_vec(),
            binds: self.binds.clone(),
        };
        if let Err(e) = protocol::write_frame(stream, &miss) {
            mirror.close_view(view);
            self.stats
                .reclassify_miss(run, Outcome::Error("client vanished"));
            return Err(e.into());
        }
        let next = protocol::read_frame::<Request, _>(stream);
        let record = mirror.close_view(view);
        match (next, record) {
            (Ok(Request::Finished(done)), Some(record)) => {
                self.finish(&key, run, done, &record, stream)
            }
            (Ok(Request::Abandon { reason }), _) => {
                log::warn!("client could not enter the view: {reason}");
                self.stats
                    .reclassify_miss(run, Outcome::Error("could not enter the view"));
                Ok(())
            }
            (Ok(_), _) | (Err(_), _) => {
                self.stats
                    .reclassify_miss(run, Outcome::Error("client vanished mid-compile"));
                Ok(())
            }
        }
    }

    /// The first stored dep set that still holds, with its outputs restored.
    fn lookup(&self, key: &Hash) -> Option<CachedResult> {
        self.pending.wait_for(key);
        let bytes = self.store.get_manifest(key).ok().flatten()?;
        let manifest = Manifest::decode(&bytes)?;
        for set in &manifest.sets {
            if let Err(m) = key::validate(set, &self.stat_cache) {
                log::debug!(
                    "dep set rejected: {} is no longer {}",
                    m.path.display(),
                    m.expected
                );
                continue;
            }
            let Some(result) = self
                .store
                .get_result(&set.result)
                .ok()
                .flatten()
                .and_then(|b| CachedResult::decode(&b))
            else {
                continue;
            };
            match results::restore(&result, &self.store) {
                Ok(()) => return Some(result),
                Err(e) => {
                    log::warn!("cached result unusable, compiling instead: {e}");
                    let _ = self.store.remove_result(&set.result);
                }
            }
        }
        None
    }

    fn finish(
        &self,
        key: &Hash,
        run: Origin,
        done: Finished,
        record: &cachefs_mirror::Record,
        stream: &mut UnixStream,
    ) -> Result<()> {
        let captured = match self.capture(&done, record) {
            Ok(c) => c,
            Err(reason) => {
                log::info!("not cached: {reason}");
                self.stats
                    .reclassify_miss(run, Outcome::Uncacheable(category(&reason)));
                return reply(stream, Response::Stored);
            }
        };
        // Outputs and input hashes are in memory now: the build may go on
        // (and touch those files) while we write the cache entry.
        // A lookup of the same key meanwhile waits for the entry rather
        // than miss because it is still being written.
        let _pending = self.pending.hold(*key);
        reply(stream, Response::Stored)?;
        let (deps, captured) = captured;
        if let Err(e) = self.save(key, deps, captured, &done) {
            log::warn!("cannot store a compile result: {e}");
            self.stats
                .reclassify_miss(run, Outcome::Error("store write failed"));
        }
        Ok(())
    }

    fn capture(
        &self,
        done: &Finished,
        record: &cachefs_mirror::Record,
    ) -> Result<(Vec<key::Dep>, Vec<Captured>), String> {
        if let Exit::Signal(s) = done.exit {
            return Err(format!("compiler killed by signal {s}"));
        }
        if !done.output_complete {
            return Err("compiler output too large to keep".into());
        }
        let obs = observe::analyze(record, &self.stat_cache).map_err(|u| u.0)?;
        let mut captured = Vec::new();
        for dir in &obs.created_dirs {
            captured
                .push(results::capture(dir, true).map_err(|e| format!("output vanished: {e}"))?);
        }
        let mut size = (done.stdout.len() + done.stderr.len()) as u64;
        for out in &obs.outputs {
            let c = results::capture(out, false).map_err(|e| format!("output unreadable: {e}"))?;
            if let Captured::File(f) = &c {
                size += f.data.len() as u64;
            }
            captured.push(c);
        }
        if size > self.config.cache_size / MAX_RESULT_SHARE {
            return Err(format!("result too large: {size} bytes"));
        }
        Ok((obs.deps, captured))
    }

    fn save(
        &self,
        key: &Hash,
        deps: Vec<key::Dep>,
        captured: Vec<Captured>,
        done: &Finished,
    ) -> Result<()> {
        let outputs = results::store_outputs(&self.store, captured)?;
        let result = CachedResult {
            outputs,
            stdout: done.stdout.clone(),
            stderr: done.stderr.clone(),
            exit: done.exit,
            compile_ms: done.wall_ms,
        };
        let id = result.id();
        self.store
            .put_result(&id, &result.encode(), &result.blobs())?;
        let _guard = self.manifest_lock.lock().unwrap();
        let mut manifest = self
            .store
            .get_manifest(key)?
            .and_then(|b| Manifest::decode(&b))
            .unwrap_or_default();
        manifest.add(DepSet { deps, result: id });
        self.store.put_manifest(key, &manifest.encode())?;
        Ok(())
    }
}

fn reply(stream: &mut UnixStream, response: Response) -> Result<()> {
    protocol::write_frame(stream, &response)?;
    Ok(())
}

/// Statistics count reasons by kind, without the path that triggered them.
fn category(reason: &str) -> &str {
    reason.split(':').next().unwrap_or(reason)
}
