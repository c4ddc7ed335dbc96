//! One compile request, as a conversation with its client: a hit is
//! answered at once; a miss that may be observed gets a view, and the
//! agent waits for the client to report the compile finished (`finish`
//! stores what the view observed); anything else is told to run the
//! compiler itself, uncached.

use super::call::{category, reply, Served};
use super::runs::{self, Ended};
use super::stats::Origin;
use super::{Agent, Outcome};
use crate::compiler;
use crate::config;
use crate::entry::{key1, CachedResult, Dep, Hash};
use crate::protocol::{self, CompileRequest, Request, Response};
use crate::runlog::CompileRecord;
use anyhow::Result;
use cachefs_mirror::Record;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Why a call is answered "run the compiler yourself, uncached", and so how
/// it is counted and logged. No warning: a policy, not a failure.
enum Plain {
    /// Counted under the reason itself (short, naming no path).
    Uncacheable(&'static str),
    /// Counted under the reason's category (the reason names a path).
    UncacheableAt(String),
    /// CACHEFS_READONLY: a miss, compiled and not stored.
    ReadOnly,
    /// Counted as an error of this kind, logged with the reason.
    Error(&'static str, String),
}

impl Agent {
    pub(super) fn compile(&self, req: CompileRequest, stream: &mut UnixStream) -> Result<()> {
        let base_dir = match crate::entry::env::value(&req.env, config::ENV_BASE_DIR.as_bytes()) {
            Some(named) => crate::entry::location::canonical(named),
            None => self.base_dir.clone(),
        };
        let call = Served::new(&req, base_dir.as_deref());
        let run = call.run;
        let mut rec = runs::record_of(&req);
        let key = match self.key_of(&call) {
            Ok(key) => key,
            Err(plain) => return self.run_plain(stream, run, rec, plain),
        };
        rec.key = runs::hex(&key);
        // Only a `cachefs run` keeps a log: a wrapper-mode hit skips the copy.
        let logged = run.run.is_some();
        match self.look_up_call(&call, &key, logged) {
            Ok((hit, remote, deps)) => {
                return self.answer_hit(stream, &call, rec, hit, remote, deps)
            }
            Err(reason) => rec.miss = Some(reason),
        }
        if let Some(plain) = self.refuse_to_observe(&req, call.family) {
            return self.run_plain(stream, run, rec, plain);
        }
        let Some(rec) = self.execute_remotely(&call, &key, rec, stream)? else {
            return Ok(());
        };
        self.observe_miss(&call, &key, rec, stream)
    }

    /// key1 of a call that may be cached at all.
    fn key_of(&self, call: &Served) -> Result<Hash, Plain> {
        let req = call.req;
        if let Some(reason) = compiler::uncacheable_reason(call.family, &req.compiler, &req.argv) {
            return Err(Plain::Uncacheable(reason));
        }
        let compiler = Path::new(std::ffi::OsStr::from_bytes(&req.compiler));
        let compiler_hash = self.stat_cache.resolved_file_hash(compiler).map_err(|e| {
            let reason = format!("cannot hash the compiler {}: {e}", compiler.display());
            Plain::Error("cannot hash the compiler", reason)
        })?;
        let key = key1::key1(req, &compiler_hash, call.root.as_ref());
        super::prefix::key(key, call.family, &req.env, &self.stat_cache)
            .map_err(|reason| Plain::Error("cannot hash the prefix", reason))
    }

    fn answer_hit(
        &self,
        stream: &mut UnixStream,
        call: &Served,
        mut rec: CompileRecord,
        hit: CachedResult,
        remote: bool,
        deps: Vec<Dep>,
    ) -> Result<()> {
        let run = call.run;
        if run.run.is_some() {
            runs::fill_deps(&mut rec, &deps, &call.req.env);
            rec.written = hit.output_paths();
        }
        self.runs.add(run.run, rec.ended("hit", None));
        let saved_ms = hit.compile_ms;
        self.stats.record(run, Outcome::Hit { saved_ms, remote });
        let (stdout, stderr, exit) = (hit.stdout, hit.stderr, hit.exit);
        reply(
            stream,
            Response::Hit {
                stdout,
                stderr,
                exit,
            },
        )
    }

    /// Why a miss must not be observed and stored, if it must not.
    fn refuse_to_observe(&self, req: &CompileRequest, family: compiler::Family) -> Option<Plain> {
        // Only a miss needs it: what argv, cwd and environment name is part
        // of key1, so nothing outside the tree was ever stored under it.
        let cwd = Path::new(std::ffi::OsStr::from_bytes(&req.cwd));
        if let Some(reason) = self.coverage.call_outside(&req.argv, cwd, &req.env) {
            return Some(Plain::UncacheableAt(reason));
        }
        // A hit may come from a local compile; a farm's is not stored.
        if compiler::prefix::Prefix::of_call(family, &req.env).is_some() {
            if let Some(reason) = compiler::prefix::uncacheable_reason(&req.argv) {
                return Some(Plain::Uncacheable(reason));
            }
        }
        config::switch_in(&req.env, config::ENV_READONLY).then_some(Plain::ReadOnly)
    }

    /// Answers "run the compiler yourself, uncached", counted and logged as
    /// `plain` says.
    fn run_plain(
        &self,
        stream: &mut UnixStream,
        run: Origin,
        rec: CompileRecord,
        plain: Plain,
    ) -> Result<()> {
        let (outcome, logged, reason) = match &plain {
            Plain::Uncacheable(r) => (Outcome::Uncacheable(r), "uncacheable", r.to_string()),
            Plain::UncacheableAt(r) => {
                (Outcome::Uncacheable(category(r)), "uncacheable", r.clone())
            }
            Plain::ReadOnly => (
                Outcome::Miss,
                "miss",
                "CACHEFS_READONLY: a miss is compiled, not stored".to_string(),
            ),
            Plain::Error(what, r) => (Outcome::Error(what), "error", r.clone()),
        };
        self.stats.record(run, outcome);
        self.runs.add(run.run, rec.ended(logged, Some(&reason)));
        let warn = false;
        reply(stream, Response::RunPlain { reason, warn })
    }

    /// Hands the client a view on a lane's mirror and waits for it to say
    /// the compile is over; then the view's record is the compile's.
    fn observe_miss(
        &self,
        call: &Served,
        key: &Hash,
        rec: CompileRecord,
        stream: &mut UnixStream,
    ) -> Result<()> {
        let (req, run) = (call.req, call.run);
        let Some(taken) = self.lanes.take() else {
            self.stats
                .record(run, Outcome::Error("observation unavailable"));
            let reason = format!("compiles cannot be observed ({})", self.observation);
            self.runs.add(run.run, rec.ended("error", Some(&reason)));
            return reply(stream, Response::RunPlain { reason, warn: true });
        };
        log::debug!("miss: {}", describe(&req.argv));
        let mirror = &taken.lane.mirror;
        let view = mirror.open_view_with_plumbing(jobserver_fifos(req));
        self.stats.record(run, Outcome::Miss);
        let cpus = if compiler::single_threaded(call.family, &req.argv) {
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
        self.client_done(call, key, rec, stream, next, record)
    }

    /// After a compile that reached a FIFO, socket or device node in its
    /// view: what it did with the mirror's stand-in is not what it does
    /// outside, so its result is dropped (nothing was printed yet) and the
    /// client runs it again outside any view, uncached.
    fn rerun_outside(
        &self,
        stream: &mut UnixStream,
        call: &Served,
        rec: CompileRecord,
        reason: String,
    ) -> Result<()> {
        log::info!("not cached, run again outside the view: {reason}");
        self.miss_not_cached(call.run, call.family, rec, &reason);
        let warn = false;
        reply(stream, Response::RunPlain { reason, warn })
    }

    /// What the client said once its compile was over.
    fn client_done(
        &self,
        call: &Served,
        key: &Hash,
        rec: CompileRecord,
        stream: &mut UnixStream,
        said: Result<Request, protocol::ProtocolError>,
        record: Option<Record>,
    ) -> Result<()> {
        let run = call.run;
        match (said, record) {
            (Ok(Request::Finished(done)), Some(record)) => {
                if let Some(reason) = record.special_file() {
                    return self.rerun_outside(stream, call, rec, reason);
                }
                let record = without_scratch_listings(call.req, record);
                let analysed = super::finish::Call::new(call, &done, record);
                self.finish(key, run, done, &analysed, stream, rec, Response::Stored)
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
}

/// The jobserver FIFOs the compile's environment names: plumbing the client
/// binds into its view, not inputs.
fn jobserver_fifos(req: &CompileRequest) -> Vec<std::path::PathBuf> {
    let env = req.env.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
    cachefs_mirror::jobserver_fifos(env)
}

/// The record without listings of the call's scratch directories (see
/// `observe::scratch`).
fn without_scratch_listings(req: &CompileRequest, record: Record) -> Record {
    let tmpdir = req
        .env
        .iter()
        .find(|(k, _)| k == b"TMPDIR")
        .map(|(_, v)| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(v)));
    let scratch = crate::observe::scratch::scratch_dirs(tmpdir.as_deref());
    crate::observe::scratch::without_scratch_listings(&record, &scratch)
}

/// A call's argv for log lines.
fn describe(argv: &[Vec<u8>]) -> String {
    let args: Vec<_> = argv.iter().map(|a| String::from_utf8_lossy(a)).collect();
    args.join(" ")
}
