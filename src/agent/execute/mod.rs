//! Misses run on a REAPI executor (`[remote] execute`), with the inputs cachefs observed.
//!
//! The input root (`inputs`) is the dep set of an earlier compile of the same call (same key1:
//! same compiler, arguments and directory) whose every state but file contents still holds
//! here: the files it read with today's contents, the compiler's own among them; without one, a
//! guess (what compiles by the same compiler read, its system headers, the sources and headers
//! of the directories the command line names). The executor runs the compile under `strace`
//! (`tracer`) with the call's own shim reporting what it reads of its environment
//! (`environment`); the trace is replayed against the input root (`observe::trace`) and checked
//! here (`checks`): whatever the compile looked for and did not find must be absent here too, a
//! directory it listed must hold the same names, it must have written only the outputs asked
//! back and read no variable it was not sent. Then its outputs are written (`outputs`) and its
//! record analysed, stored and answered exactly as a miss observed here (`finish`). Anything
//! else (a class of compile not sent, a server or sandbox failure, an input the root lacked)
//! compiles here, observed as usual, and the next remote run of that call takes what it
//! learnt: nothing remote is believed without its trace, and a remote failure never fails the
//! build.

mod checks;
mod environment;
mod inputs;
mod outputs;
mod tracer;

use checks::*;
use environment::*;
use inputs::*;
use outputs::*;
use tracer::*;

use super::call::Served;
use super::stats::{Exec, Outcome};
use super::Agent;
use crate::compiler::Family;
use crate::config::RemoteExecution;
use crate::entry::env;
use crate::entry::relocate::{result_here, set_here};
use crate::entry::remote_value::InlineResult;
use crate::entry::result::Output;
use crate::entry::validate::validate;
use crate::entry::{CachedResult, Dep, DepSet, DepState, Hash, Kind, Manifest};
use crate::observe::trace::{self, Node};
use crate::protocol::{Exit, Finished, Response};
use crate::runlog::CompileRecord;
use anyhow::Result;
use cachefs_mirror::{Access, Record};
use cachefs_store::remote::execute::{Action, ExecError, Executor, Input};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tracer's program, found along the agent's PATH.
const TRACER: &str = "strace";

/// Where the remote compile's scratch files go (its TMPDIR): a directory of the input
/// root, left out of the record like any scratch directory.
const SCRATCH: &str = "/cachefs-scratch";

/// The trace's name in the compile's working directory (asked back as an output).
const TRACE: &str = ".cachefs-remote-trace";

/// The least time one call to the executor's CAS may take (the cache tier's timeout is
/// meant for reads of milliseconds).
const EXEC_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the executor lets one compile run.
const ACTION_TIMEOUT: Duration = Duration::from_secs(600);

/// Parts of the sandbox that are the executor's, not the input root's.
const SANDBOX_OWN: [&str; 3] = ["/proc", "/dev", "/sys"];

/// The executor and what every action carries: the tracer and its libraries.
pub struct Remote {
    executor: Executor,
    platform: BTreeMap<String, String>,
    /// Every variable a remote compile's shim reported reading: sent when set.
    learnt_env: Mutex<BTreeSet<Vec<u8>>>,
    /// Per compiler (as the call names it): the paths its compiles read, for `guess`.
    known: Mutex<std::collections::HashMap<Vec<u8>, BTreeMap<PathBuf, Node>>>,
    /// Per compiler and language: its system header directories' files, for `guess`.
    headers: Mutex<std::collections::HashMap<Vec<u8>, BTreeMap<PathBuf, Node>>>,
    tracer: PathBuf,
    tracer_files: BTreeMap<PathBuf, Node>,
}

impl Remote {
    /// The executor `settings` name, if it can be used (a failure is logged, and every
    /// miss then compiles here).
    pub fn open(settings: &RemoteExecution, timeout: Duration) -> Option<Remote> {
        let opened = (|| -> Result<Remote, String> {
            // A cache read waits milliseconds; an upload of a toolchain or a busy executor's
            // queue, seconds: the executor's calls get at least EXEC_CALL_TIMEOUT.
            let reapi =
                cachefs_store::remote::Reapi::new(&settings.reapi, timeout.max(EXEC_CALL_TIMEOUT))
                    .map_err(|e| e.to_string())?;
            let tracer = which(TRACER).ok_or_else(|| {
                format!("{TRACER} is not on PATH: install it (apt install strace)")
            })?;
            let mut tracer_files = BTreeMap::new();
            for lib in std::iter::once(tracer.clone()).chain(shared_libraries(&tracer)?) {
                add_with_links(&lib, &mut tracer_files);
            }
            Ok(Remote {
                executor: Executor::new(reapi),
                platform: settings.platform.clone(),
                learnt_env: Mutex::default(),
                known: Mutex::default(),
                headers: Mutex::default(),
                tracer,
                tracer_files,
            })
        })();
        match opened {
            Ok(r) => {
                log::info!("remote execution on {}", r.executor.server());
                Some(r)
            }
            Err(e) => {
                log::warn!("remote execution disabled: {e}");
                eprintln!("cachefs: remote execution disabled: {e}");
                None
            }
        }
    }
}

/// Why a compile of this family is never sent; `None`: it may be.
pub fn not_sent_reason(family: Family) -> Option<&'static str> {
    match family {
        Family::CFamily => None,
        Family::Rustc => Some(
            "rustc: its library search directories are read by listing (crate candidates), which an input root cannot reproduce",
        ),
        Family::Nvcc => Some("nvcc: not sent (its executor needs a GPU toolchain)"),
        Family::Archiver => Some("ar, ranlib: not sent (quicker here than the upload)"),
    }
}

impl Agent {
    /// Runs a miss remotely and answers the client as for a hit (the outputs written
    /// here); or gives `rec` back when the miss is to compile here.
    pub(super) fn execute_remotely(
        &self,
        call: &Served,
        key: &Hash,
        rec: CompileRecord,
        stream: &mut UnixStream,
    ) -> Result<Option<CompileRecord>> {
        let Some(remote) = &self.executor else {
            return Ok(Some(rec));
        };
        let not_sent = |why: &str, mut rec: CompileRecord| {
            self.stats.remote(Exec::NotSent(why));
            rec.reason = Some(format!("here, observed: not sent remotely ({why})"));
            Ok(Some(rec))
        };
        if let Some(why) = not_sent_reason(call.family) {
            return not_sent(why, rec);
        }
        let plan = match self.prior(call, key) {
            Ok(plan) => plan,
            Err(why) => match remote.guess(call) {
                Some(plan) => plan,
                None => return not_sent(why, rec),
            },
        };
        let started = Instant::now();
        let ran = match self.run_remote(remote, call, &plan) {
            Ok(ran) => ran,
            Err(why) => {
                log::info!("remote execution failed, compiling here: {why}");
                self.stats
                    .remote(Exec::FellBack(super::call::category(&why)));
                let mut rec = rec;
                rec.reason = Some(format!(
                    "here, observed, after the remote run failed: {why}"
                ));
                return Ok(Some(rec));
            }
        };
        self.stats
            .remote(Exec::Ran(ran.blobs, ran.uploaded, ran.bytes));
        self.stats.record(call.run, Outcome::Miss);
        let done = Finished {
            exit: Exit::Code(0),
            stdout: ran.stdout.clone(),
            stderr: ran.stderr.clone(),
            output_complete: true,
            wall_ms: started.elapsed().as_millis() as u64,
        };
        let answer = Response::Hit {
            stdout: ran.stdout,
            stderr: ran.stderr,
            exit: Exit::Code(0),
        };
        let mut rec = rec;
        rec.reason = Some(format!(
            "remotely, on {} (inputs: {})",
            remote.executor.server(),
            plan.from
        ));
        let analysed = super::finish::Call::new(call, &done, ran.record);
        self.finish(key, call.run, done, &analysed, stream, rec, answer)?;
        Ok(None)
    }
    /// The remote run of `call` with `prior`'s inputs, its outputs written here and its
    /// trace replayed into a record; or why not (then nothing here was touched but the
    /// outputs, which a local compile rewrites).
    fn run_remote(&self, remote: &Remote, call: &Served, plan: &Plan) -> Result<Ran, String> {
        let started = Instant::now();
        let req = call.req;
        let cwd = PathBuf::from(OsStr::from_bytes(&req.cwd));
        let shim = shim_of(&req.env).ok_or("no shim preloaded to observe its environment")?;
        let mut tree = plan.tree.clone();
        tree.extend(remote.tracer_files.clone());
        add_with_links(&shim, &mut tree);
        add_with_links(&cwd, &mut tree);
        tree.insert(SCRATCH.into(), Node::Dir);
        let mut outputs = Vec::new();
        for (path, _) in &plan.outputs {
            let rel = path
                .strip_prefix(&cwd)
                .map_err(|_| format!("output outside the working directory: {}", path.display()))?;
            if let Some(parent) = path.parent() {
                add_with_links(parent, &mut tree);
            }
            outputs.push(text(rel.as_os_str().as_bytes())?);
        }
        outputs.push(TRACE.into());
        let action = Action {
            argv: command(&remote.tracer, &req.argv)?,
            env: environment(
                &plan.env_deps,
                &remote.learnt_env.lock().unwrap(),
                &req.env,
                &shim,
            )?,
            workdir: relative(&cwd)?,
            inputs: inputs(&tree)?,
            outputs,
            platform: remote.platform.clone(),
            timeout: ACTION_TIMEOUT,
        };
        let max = self.config.cache_size / super::finish::MAX_RESULT_SHARE;
        let prepared = started.elapsed();
        let mut ran = remote.executor.execute(&action, max).map_err(|e| {
            let category = match &e {
                ExecError::Remote(_) => "server unreachable or refused",
                ExecError::Input { .. } => "input changed while sent",
                ExecError::Unexpressible(_) => "not expressible as an action",
                ExecError::Executor(_) => "executor failed",
            };
            format!("{category}: {e}")
        })?;
        if ran.exit_code != 0 {
            log::debug!(
                "remote run of {} exited {}: {}",
                String::from_utf8_lossy(&req.argv.join(&b' ')),
                ran.exit_code,
                String::from_utf8_lossy(&ran.stderr)
            );
            return Err(format!("failed remotely: exit {}", ran.exit_code));
        }
        let executed = started.elapsed();
        let trace_text = ran
            .outputs
            .remove(TRACE)
            .ok_or("the remote run left no trace")?
            .0;
        log::trace!("remote trace:\n{}", String::from_utf8_lossy(&trace_text));
        let calls = trace::parse(&String::from_utf8_lossy(&trace_text))
            .map_err(|e| format!("trace unusable: {e}"))?;
        let mut skip: Vec<PathBuf> = SANDBOX_OWN.iter().map(PathBuf::from).collect();
        skip.push(SCRATCH.into());
        let replayed = trace::replay(&calls, &tree, &cwd, &skip)
            .map_err(|e| format!("trace unusable: {e}"))?;
        check_here(&replayed, &written_by(&replayed.record))?;
        let record = replayed.record;
        check_compiler(&calls, &req.compiler)?;
        check_reads(&record, &action.env, &req.env, &remote.learnt_env)?;
        check_written(&record, &ran.outputs, &cwd)?;
        if let Some(changed) = remote.executor.changed_since_sent(&action) {
            return Err(format!("input changed while it ran: {changed}"));
        }
        write_outputs(&ran.outputs, &cwd, &plan.outputs)?;
        log::debug!(
            "remote run: {} inputs prepared in {prepared:?}, executed in {:?}, checked and written in {:?}",
            action.inputs.len(),
            executed - prepared,
            started.elapsed() - executed
        );
        Ok(Ran {
            record: stamped(record),
            stdout: ran.stdout,
            stderr: ran.stderr,
            blobs: ran.blobs as u64,
            uploaded: ran.blobs_uploaded as u64,
            bytes: ran.bytes_uploaded,
        })
    }
}

struct Ran {
    record: Record,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    blobs: u64,
    uploaded: u64,
    bytes: u64,
}
