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
use crate::entry::location::Root;
use crate::entry::relocate::{self, Moves};
use crate::entry::{CachedResult, Dep, DepSet, DepState, Hash};
use crate::observe;
use crate::protocol::{CompileRequest, Exit, Finished, Response};
use crate::runlog::CompileRecord;
use anyhow::Result;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Results larger than this share of the cache are not worth evicting
/// everything else for.
pub(super) const MAX_RESULT_SHARE: u64 = 4;

impl Agent {
    /// Analyses and stores a finished miss, answering the client `answer` once the result
    /// is analysed (`Stored`; a remote run's client waits for its outputs as for a hit:
    /// `execute`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish(
        &self,
        key: &Hash,
        run: Origin,
        done: Finished,
        call: &Call<'_>,
        stream: &mut UnixStream,
        mut rec: CompileRecord,
        answer: Response,
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
                return reply(stream, answer);
            }
        };
        // Outputs and input hashes are in memory now: the build may go on
        // (and touch those files) while we write the cache entry.
        // A lookup of the same key meanwhile waits for the entry rather
        // than miss because it is still being written.
        let _pending = self.pending.hold(*key);
        let (deps, mut captured) = captured;
        self.learn_inputs(call.family, &call.req.compiler, &deps);
        runs::fill_deps(&mut rec, &deps, call.env);
        rec.written = captured.iter().map(Captured::path_string).collect();
        // Recorded before the client is released: its run may end (and its
        // log be written) right after.
        let reason = rec.reason.take();
        self.runs.add(run.run, rec.ended("miss", reason.as_deref()));
        reply(stream, answer)?;
        let saving = std::time::Instant::now();
        // After the reply: reading every output for the root is the
        // store's work, not the build's.
        let (deps, moves) = self.relocation(call, deps, &mut captured, &done);
        let saved = self.save(key, deps, captured, &done, moves);
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

    /// The dep set as stored: marked, when the result may serve the tree at
    /// another root (the returned root then marks its outputs too), else
    /// pinned to its root.
    fn relocation<'r>(
        &self,
        call: &Call<'r>,
        deps: Vec<Dep>,
        captured: &mut [Captured],
        done: &Finished,
    ) -> (Vec<Dep>, Option<(&'r Root, Moves)>) {
        let Some(root) = call.root else {
            return (deps, None);
        };
        let finished = relocate::Finished {
            family: call.family,
            argv: &call.req.argv,
            cwd: &call.req.cwd,
            env: call.env,
            deps: &deps,
            outputs: captured,
            stdout: &done.stdout,
            stderr: &done.stderr,
        };
        match relocate::decide(root, &finished) {
            Ok(mut moves) => {
                relocate::mark_depfiles(captured, &mut moves);
                (relocate::mark_deps(root, deps), Some((root, moves)))
            }
            Err(why) => {
                log::debug!(
                    "result pinned to {}: {why}",
                    String::from_utf8_lossy(&root.path)
                );
                (relocate::pin_deps(root, why, deps), None)
            }
        }
    }

    fn save(
        &self,
        key: &Hash,
        deps: Vec<Dep>,
        captured: Vec<Captured>,
        done: &Finished,
        moves: Option<(&Root, Moves)>,
    ) -> Result<()> {
        let mut outputs = capture::store_outputs(&self.store, captured, key)?;
        let mut streams = None;
        if let Some((root, moves)) = moves {
            relocate::mark_outputs(root, &mut outputs, &moves);
            streams = moves.streams;
        }
        let streams_marked = streams.is_some();
        let (stdout, stderr) =
            streams.unwrap_or_else(|| (done.stdout.clone(), done.stderr.clone()));
        let result = CachedResult {
            outputs,
            stdout,
            stderr,
            exit: done.exit,
            compile_ms: done.wall_ms,
            streams_marked,
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
    req: &'a CompileRequest,
    /// The tree root, if any: a result that does not carry it is stored
    /// for any root, one that does is pinned to it (`entry::relocate`).
    root: Option<&'a Root>,
    /// The prefix command it ran under (`compiler::prefix`).
    prefix: Option<prefix::Prefix>,
}

impl<'a> Call<'a> {
    pub(super) fn new(
        served: &'a Served<'a>,
        done: &Finished,
        mut record: cachefs_mirror::Record,
    ) -> Call<'a> {
        let (req, family) = (served.req, served.family);
        let mut reads = observe::env::take_reports(&mut record);
        observe::drop_own_files(&mut record);
        observe::prefix::drop_own(family, &req.env, &mut record, &mut reads);
        let printed = !done.stdout.is_empty() || !done.stderr.is_empty();
        // Values compared as keys compare them: with the root marked.
        let env_deps = observe::env::deps(&reads, &served.env, family, &mut record, printed);
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
            req,
            root: served.root.as_ref(),
            prefix: prefix::Prefix::of_call(family, &req.env),
        }
    }
}
