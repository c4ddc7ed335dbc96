//! After a miss: the finished compile's record analysed into a dep set and
//! its outputs captured (or the reason it is not cached), the client
//! released, then the entry written.

use super::call::{reply, Served};
use super::runs::{self, Ended};
use super::stats::Origin;
use super::{Agent, Outcome};
use crate::compiler::{
    self, prefix,
    time_macros::{self, TimeMacros},
};
use crate::entry::capture::{self, Captured};
use crate::entry::{CachedResult, Dep, DepSet, DepState, Hash};
use crate::observe;
use crate::protocol::{Exit, Finished, Response};
use crate::runlog::CompileRecord;
use anyhow::Result;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Results larger than this share of the cache are not worth evicting
/// everything else for.
pub(super) const MAX_RESULT_SHARE: u64 = 4;

impl Agent {
    pub(super) fn finish(
        &self,
        key: &Hash,
        run: Origin,
        done: Finished,
        call: &Call<'_>,
        stream: &mut UnixStream,
        mut rec: CompileRecord,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let done = match &call.prefix {
            Some(p) => Finished {
                stderr: prefix::without_own_messages(p.tool(), &done.stderr),
                ..done
            },
            None => done,
        };
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
                self.miss_not_cached(run, call.family, rec, &reason);
                return reply(stream, Response::Stored);
            }
        };
        // Outputs and input hashes are in memory now: the build may go on
        // (and touch those files) while we write the cache entry.
        // A lookup of the same key meanwhile waits for the entry rather
        // than miss because it is still being written.
        let _pending = self.pending.hold(*key);
        let (deps, captured) = captured;
        runs::fill_deps(&mut rec, &deps, call.env);
        rec.written = captured.iter().map(Captured::path_string).collect();
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
        call: &Call<'_>,
    ) -> Result<(Vec<Dep>, Vec<Captured>), String> {
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
            DepState::Symlink(target) => self.coverage.link_outside(
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
                .push(capture::capture(dir, true).map_err(|e| format!("output vanished: {e}"))?);
        }
        let mut size = (done.stdout.len() + done.stderr.len()) as u64;
        for out in &obs.outputs {
            let c = capture::capture(out, false).map_err(|e| format!("output unreadable: {e}"))?;
            if let Captured::File(f) = &c {
                size += f.data.len() as u64;
                if let Some(why) = compiler::output_uncacheable_reason(call.family, &f.data) {
                    return Err(format!("{why}: {}", out.display()));
                }
            }
            captured.push(c);
        }
        if size > self.config.cache_size / MAX_RESULT_SHARE {
            return Err(format!("result too large: {size} bytes"));
        }
        // The environment first: a changed variable is found without a stat.
        let deps = call.env_deps.iter().cloned().chain(obs.deps).collect();
        Ok((deps, captured))
    }

    fn save(
        &self,
        key: &Hash,
        deps: Vec<Dep>,
        captured: Vec<Captured>,
        done: &Finished,
    ) -> Result<()> {
        let outputs = capture::store_outputs(&self.store, captured, key)?;
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
        let set = DepSet { deps, result: id };
        let manifest = self.manifests.add(&self.store, key, set)?;
        self.push_remote(key, &id, &encoded, &manifest);
        Ok(())
    }
}

/// What the analysis of a finished compile needs to know about the call.
pub(super) struct Call<'a> {
    record: cachefs_mirror::Record,
    /// Library search directories (listed by crate candidates; none for a
    /// failed compile) and whether inputs may be rewritten: see
    /// `observe::Rules`.
    rules: observe::Rules,
    family: compiler::Family,
    /// The clock macros this call's environment fixes; `None` where they
    /// mean nothing (rustc).
    clock_fixed: Option<TimeMacros>,
    /// What of its environment the compile depends on (`observe::env`).
    env_deps: Vec<Dep>,
    /// The call's environment, for the run log's values of what was read.
    env: &'a [(Vec<u8>, Vec<u8>)],
    /// The prefix command it ran under (`compiler::prefix`).
    prefix: Option<prefix::Prefix>,
}

impl<'a> Call<'a> {
    pub(super) fn new(
        served: &Served<'a>,
        done: &Finished,
        mut record: cachefs_mirror::Record,
    ) -> Call<'a> {
        let (req, family) = (served.req, served.family);
        let mut reads = observe::env::take_reports(&mut record);
        observe::drop_own_files(&mut record);
        observe::prefix::drop_own(family, &req.env, &mut record, &mut reads);
        let printed = !done.stdout.is_empty() || !done.stderr.is_empty();
        let env_deps = observe::env::deps(&reads, &req.env, family, &mut record, printed);
        let search_dirs = match done.exit {
            Exit::Code(0) => compiler::library_search_dirs(
                family,
                &req.argv,
                Path::new(std::ffi::OsStr::from_bytes(&req.cwd)),
            ),
            _ => compiler::rustc::SearchDirs::default(),
        };
        Call {
            record,
            rules: observe::Rules {
                search_dirs,
                may_rewrite_inputs: compiler::may_rewrite_inputs(family),
            },
            family,
            clock_fixed: compiler::reads_clock_macros(family).then(|| {
                let compiler = Path::new(std::ffi::OsStr::from_bytes(&req.compiler));
                time_macros::fixed_by_env(family, compiler, &req.env)
            }),
            env_deps,
            env: &req.env,
            prefix: prefix::Prefix::of_call(family, &req.env),
        }
    }
}
