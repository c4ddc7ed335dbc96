//! One compile request: look for a hit; on a miss, hand out a view, wait for
//! the client to finish, then store what the view observed.

use super::results::{self, CachedResult, Captured};
use super::runs::Ended;
use super::stats::Origin;
use super::{Agent, Outcome};
use crate::compiler::{
    self,
    time_macros::{self, TimeMacros},
};
use crate::config;
use crate::key::{self, DepSet, Hash, Manifest};
use crate::observe;
use crate::protocol::{self, CompileRequest, Exit, Finished, Request, Response};
use crate::runlog::{CompileRecord, MissReason};
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
        let mut rec = super::runs::record_of(&req);
        if let Some(reason) = compiler::uncacheable_reason(&req.compiler, &req.argv) {
            let outcome = Outcome::Uncacheable(reason);
            return self.run_plain(stream, run, rec, outcome, "uncacheable", reason.into());
        }
        let compiler = Path::new(std::ffi::OsStr::from_bytes(&req.compiler));
        let compiler_hash = match self.stat_cache.resolved_file_hash(compiler) {
            Ok(h) => h,
            Err(e) => {
                let outcome = Outcome::Error("cannot hash the compiler");
                let reason = format!("cannot hash the compiler {}: {e}", compiler.display());
                return self.run_plain(stream, run, rec, outcome, "error", reason);
            }
        };
        let identified = std::time::Instant::now();
        let key = key::key1(&req, &compiler_hash);
        rec.key = super::runs::hex(&key);
        // Only a `cachefs run` keeps a log: a wrapper-mode hit skips the copy.
        let logged = run.run.is_some();
        let keyed = std::time::Instant::now();
        let lookup = if config::switch_in(&req.env, config::ENV_RECACHE) {
            Err(MissReason::Recache)
        } else {
            self.lookup(&key, logged)
        };
        log::debug!(
            "key1 in {:?}, lookup (manifest, deps, restore) in {:?}",
            keyed - identified,
            keyed.elapsed()
        );
        if let Ok((hit, remote, deps)) = lookup {
            if logged {
                super::runs::fill_deps(&mut rec, &deps);
                rec.written = hit.output_paths();
            }
            self.runs.add(run.run, rec.ended("hit", None));
            self.stats.record(
                run,
                Outcome::Hit {
                    saved_ms: hit.compile_ms,
                    remote,
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
        rec.miss = lookup.err();
        // Only a miss needs it: what argv, cwd and environment name is part
        // of key1, so nothing outside the tree was ever stored under it.
        let cwd = Path::new(std::ffi::OsStr::from_bytes(&req.cwd));
        if let Some(reason) = self.coverage.call_outside(&req.argv, cwd, &req.env) {
            let outcome = Outcome::Uncacheable(category(&reason));
            return self.run_plain(stream, run, rec, outcome, "uncacheable", reason.clone());
        }
        if config::switch_in(&req.env, config::ENV_READONLY) {
            let reason = "CACHEFS_READONLY: a miss is compiled, not stored".to_string();
            return self.run_plain(stream, run, rec, Outcome::Miss, "miss", reason);
        }
        let Some(taken) = self.lanes.take() else {
            self.stats
                .record(run, Outcome::Error("observation unavailable"));
            let reason = format!("compiles cannot be observed ({})", self.observation);
            self.runs.add(run.run, rec.ended("error", Some(&reason)));
            return reply(stream, Response::RunPlain { reason, warn: true });
        };
        log::debug!("miss: {}", describe(&req.argv));
        let mirror = &taken.lane.mirror;
        let view = mirror.open_view_with_plumbing(jobserver_fifos(&req));
        self.stats.record(run, Outcome::Miss);
        let cpus = if compiler::single_threaded(&req.compiler, &req.argv) {
            taken.lane.cpus.iter().map(|&c| c as u32).collect()
        } else {
            Vec::new()
        };
        let probe = mirror.new_probe();
        let miss = Response::Miss {
            view_root: mirror.view_root(view).as_os_str().as_bytes().to_vec(),
            binds: self.binds.clone(),
            cpus,
            probe: probe.path.as_os_str().as_bytes().to_vec(),
        };
        if let Err(e) = protocol::write_frame(stream, &miss) {
            mirror.close_view(view);
            self.stats
                .reclassify_miss(run, Outcome::Error("client vanished"));
            return Err(e.into());
        }
        let next = protocol::read_frame::<Request, _>(stream);
        let record = mirror.close_view(view);
        if !mirror.probe_answered(&probe) {
            // The mirror died under the compile (the compile may have failed
            // on ENOTCONN, or succeeded with accesses left unrecorded), or
            // the client did not probe it: the result is not to be trusted,
            // so the client compiles again, uncached.
            self.stats
                .reclassify_miss(run, Outcome::Error("observation lost mid-compile"));
            let message = "the FUSE mirror stopped during the compile".to_string();
            return reply(stream, Response::Error { message });
        }
        // The compile is over: its lane can take the next one while this
        // result is analysed and stored.
        drop(taken);
        match (next, record) {
            (Ok(Request::Finished(done)), Some(record)) => {
                if let Some(reason) = record.special_file() {
                    return self.rerun_outside(stream, run, rec, &req, reason);
                }
                let tmpdir = req
                    .env
                    .iter()
                    .find(|(k, _)| k == b"TMPDIR")
                    .map(|(_, v)| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(v)));
                let scratch = crate::scratch::scratch_dirs(tmpdir.as_deref());
                let record = crate::scratch::without_scratch_listings(&record, &scratch);
                let call = Call::new(&req, &done, record);
                self.finish(&key, run, done, &call, stream, rec)
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

    /// After a compile that reached a FIFO, socket or device node in its
    /// view: what it did with the mirror's stand-in is not what it does
    /// outside, so its result is dropped (nothing was printed yet) and the
    /// client runs it again outside any view, uncached.
    fn rerun_outside(
        &self,
        stream: &mut UnixStream,
        run: Origin,
        rec: CompileRecord,
        req: &CompileRequest,
        reason: String,
    ) -> Result<()> {
        log::info!("not cached, run again outside the view: {reason}");
        let label = compiler::family(&req.compiler).stats_label();
        let why = format!("{label}{}", category(&reason));
        self.stats.reclassify_miss(run, Outcome::Uncacheable(&why));
        self.runs
            .add(run.run, rec.ended("uncacheable", Some(&reason)));
        let warn = false;
        reply(stream, Response::RunPlain { reason, warn })
    }

    /// Answers "run the compiler yourself, uncached", counted as `outcome`
    /// and logged as `logged` with `reason`; no warning (a policy, not a failure).
    fn run_plain(
        &self,
        stream: &mut UnixStream,
        run: Origin,
        rec: CompileRecord,
        outcome: Outcome,
        logged: &str,
        reason: String,
    ) -> Result<()> {
        self.stats.record(run, outcome);
        self.runs.add(run.run, rec.ended(logged, Some(&reason)));
        let warn = false;
        reply(stream, Response::RunPlain { reason, warn })
    }

    /// The first stored dep set that still holds, with its outputs restored:
    /// local dep sets first, then the shared remote tier's; otherwise what
    /// changed since the most recent one. The bool says the hit came (at
    /// least in part) from the remote tier.
    /// The dep set's deps come back only when `with_deps` (for the run log).
    fn lookup(
        &self,
        key: &Hash,
        with_deps: bool,
    ) -> Result<(CachedResult, bool, Vec<key::Dep>), MissReason> {
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
            match self.first_valid(key, m, false, with_deps) {
                Ok(hit) => return Ok(hit),
                Err(r) => reason = r,
            }
        }
        let Some(remote) = self.remote_manifest(key) else {
            return Err(reason);
        };
        self.first_valid(key, &remote, true, with_deps)
            .map_err(|r| {
                if reason == MissReason::NoEntry {
                    r
                } else {
                    reason
                }
            })
    }

    fn first_valid(
        &self,
        key: &Hash,
        manifest: &Manifest,
        remote_manifest: bool,
        with_deps: bool,
    ) -> Result<(CachedResult, bool, Vec<key::Dep>), MissReason> {
        let mut reason = MissReason::NoEntry;
        for set in &manifest.sets {
            let validating = std::time::Instant::now();
            let valid = key::validate(set, &self.stat_cache);
            log::debug!(
                "{} deps checked in {:?}",
                set.deps.len(),
                validating.elapsed()
            );
            if let Err(m) = valid {
                log::debug!(
                    "dep set rejected: {} is no longer {}",
                    m.path.display(),
                    m.expected
                );
                if reason == MissReason::NoEntry {
                    reason = super::runs::changed(&m, &self.stat_cache);
                }
                continue;
            }
            let Some((result, remote_result)) = self.result_tiered(key, &set.result) else {
                continue;
            };
            let restoring = std::time::Instant::now();
            let restored = results::restore(&result, &self.store, key);
            log::debug!("outputs restored in {:?}", restoring.elapsed());
            match restored {
                Ok(remote_blobs) => {
                    let remote = remote_manifest || remote_result || remote_blobs;
                    if remote_manifest || remote_result {
                        self.keep_remote_hit(key, set, &result);
                    }
                    let deps = if with_deps {
                        set.deps.clone()
                    } else {
                        Vec::new()
                    };
                    return Ok((result, remote, deps));
                }
                Err(e) => {
                    log::warn!("cached result unusable, compiling instead: {e}");
                    if !remote_result {
                        let _ = self.store.remove_result(&set.result);
                    }
                }
            }
        }
        Err(reason)
    }

    fn finish(
        &self,
        key: &Hash,
        run: Origin,
        done: Finished,
        call: &Call,
        stream: &mut UnixStream,
        mut rec: CompileRecord,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let captured = self.capture(&done, call);
        log::debug!(
            "analysed {} accesses in {:?}",
            call.record.accesses.len(),
            started.elapsed()
        );
        let captured = match captured {
            Ok(c) => c,
            Err(reason) => {
                log::info!("not cached: {reason}");
                let why = format!("{}{}", call.family.stats_label(), category(&reason));
                self.stats.reclassify_miss(run, Outcome::Uncacheable(&why));
                self.runs
                    .add(run.run, rec.ended("uncacheable", Some(&reason)));
                return reply(stream, Response::Stored);
            }
        };
        // Outputs and input hashes are in memory now: the build may go on
        // (and touch those files) while we write the cache entry.
        // A lookup of the same key meanwhile waits for the entry rather
        // than miss because it is still being written.
        let _pending = self.pending.hold(*key);
        let (deps, captured) = captured;
        super::runs::fill_deps(&mut rec, &deps);
        rec.written = captured
            .iter()
            .map(results::Captured::path_string)
            .collect();
        // Recorded before the client is released: its run may end (and its
        // log be written) right after.
        self.runs.add(run.run, rec.ended("miss", None));
        reply(stream, Response::Stored)?;
        let saving = std::time::Instant::now();
        let saved = self.save(key, deps, captured, &done);
        log::debug!("saved in {:?}", saving.elapsed());
        if let Err(e) = saved {
            log::warn!("cannot store a compile result: {e}");
            self.stats
                .reclassify_miss(run, Outcome::Error("store write failed"));
        }
        Ok(())
    }

    fn capture(
        &self,
        done: &Finished,
        call: &Call,
    ) -> Result<(Vec<key::Dep>, Vec<Captured>), String> {
        if let Exit::Signal(s) = done.exit {
            return Err(format!("compiler killed by signal {s}"));
        }
        // The shell's and the loader's "could not run it" (a missing program
        // or shared library): the machine's state at that moment, not a
        // result of the sources, and possibly the mirror's doing.
        if let Exit::Code(c @ (126 | 127)) = done.exit {
            return Err(format!("compiler could not start: exit {c}"));
        }
        if !done.output_complete {
            return Err("compiler output too large to keep".into());
        }
        let obs = observe::analyze(&call.record, &self.stat_cache, &call.rules).map_err(|u| u.0)?;
        if let Some(why) = obs.deps.iter().find_map(|d| match &d.state {
            key::DepState::Symlink(target) => self.coverage.link_outside(
                Path::new(std::ffi::OsStr::from_bytes(&d.path)),
                Path::new(std::ffi::OsStr::from_bytes(target)),
            ),
            _ => None,
        }) {
            return Err(why);
        }
        if let Some(why) = call
            .clock_fixed
            .and_then(|fixed| time_macros::uncacheable_reason(&obs.clock, fixed))
        {
            return Err(why);
        }
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
                if let Some(why) = call.family.output_uncacheable_reason(&f.data) {
                    return Err(format!("{why}: {}", out.display()));
                }
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
        let outputs = results::store_outputs(&self.store, captured, key)?;
        let result = CachedResult {
            outputs,
            stdout: done.stdout.clone(),
            stderr: done.stderr.clone(),
            exit: done.exit,
            compile_ms: done.wall_ms,
        };
        let id = result.id();
        let encoded = result.encode();
        self.store.put_result(&id, &encoded, &result.blobs())?;
        let _guard = self.manifest_lock.lock().unwrap();
        let mut manifest = self
            .store
            .get_manifest(key)?
            .and_then(|b| Manifest::decode(&b))
            .unwrap_or_default();
        let unreachable = manifest.add(DepSet { deps, result: id });
        let manifest = manifest.encode();
        self.store.put_manifest(key, &manifest)?;
        // A result id covers the compile's time, so a result belongs to one
        // key (a result two keys share by chance costs the other a miss):
        // one this manifest dropped is garbage, not left for eviction.
        for old in unreachable {
            if let Err(e) = self.store.remove_result(&old) {
                log::warn!("cannot remove a replaced result: {e}");
            }
        }
        self.push_remote(key, &id, &encoded, &manifest);
        Ok(())
    }
}

/// What the analysis of a finished compile needs to know about the call.
struct Call {
    record: cachefs_mirror::Record,
    /// Library search directories (listed by crate candidates; none for a
    /// failed compile) and whether inputs may be rewritten: see
    /// `observe::Rules`.
    rules: observe::Rules,
    family: compiler::Family,
    /// The clock macros this call's environment fixes; `None` where they
    /// mean nothing (rustc).
    clock_fixed: Option<TimeMacros>,
}

impl Call {
    fn new(req: &CompileRequest, done: &Finished, record: cachefs_mirror::Record) -> Call {
        let search_dirs = match done.exit {
            Exit::Code(0) => compiler::library_search_dirs(
                &req.compiler,
                &req.argv,
                Path::new(std::ffi::OsStr::from_bytes(&req.cwd)),
            ),
            _ => compiler::rustc::SearchDirs::default(),
        };
        let family = compiler::family(&req.compiler);
        Call {
            record,
            rules: observe::Rules {
                search_dirs,
                may_rewrite_inputs: family.may_rewrite_inputs(),
            },
            family,
            clock_fixed: match family {
                compiler::Family::Rustc | compiler::Family::Archiver => None,
                _ => Some(time_macros::fixed_by_env(
                    Path::new(std::ffi::OsStr::from_bytes(&req.compiler)),
                    &req.env,
                )),
            },
        }
    }
}

fn reply(stream: &mut UnixStream, response: Response) -> Result<()> {
    protocol::write_frame(stream, &response)?;
    Ok(())
}

/// The jobserver FIFOs the compile's environment names: plumbing the client
/// binds into its view, not inputs.
fn jobserver_fifos(req: &CompileRequest) -> Vec<std::path::PathBuf> {
    let env = req.env.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
    cachefs_mirror::jobserver_fifos(env)
}

/// Statistics count reasons by kind, without the path that triggered them.
fn category(reason: &str) -> &str {
    reason.split(':').next().unwrap_or(reason)
}

/// A call's argv for log lines.
fn describe(argv: &[Vec<u8>]) -> String {
    let args: Vec<_> = argv.iter().map(|a| String::from_utf8_lossy(a)).collect();
    args.join(" ")
}
