//! Misses run on a REAPI executor (`[remote] execute`), with the inputs cachefs observed.
//!
//! The input root is the dep set of an earlier compile of the same call (same key1: same
//! compiler, arguments and directory) whose every state but file contents still holds
//! here: the files it read (with today's contents: an edit changes a file, not which files
//! are read), the compiler's own files among them, its symlinks and directories. The
//! executor runs the compile under `strace`, shipped in the input root; the trace is
//! replayed against the input root (`observe::trace`) and checked here: whatever the
//! compile looked for and did not find must be absent here too, a directory it listed must
//! hold the same names, it must have written only the outputs asked back. Then its record
//! is analysed, stored and answered exactly as a miss observed here (`finish`). Anything
//! else (no earlier compile, a class of compile not sent, a server or sandbox failure, an
//! input the root lacked) compiles here, observed as usual, and the next remote run of
//! that call takes what it learnt: nothing remote is believed without its trace, and a
//! remote failure never fails the build.

use super::call::Served;
use super::stats::{Exec, Outcome};
use super::Agent;
use crate::compiler::Family;
use crate::config::RemoteExecution;
use crate::entry::env;
use crate::entry::relocate::{result_here, set_here};
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
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
            "rustc: environment variables read by its sources (env!) and proc macros are not observable remotely",
        ),
        Family::Nvcc => Some("nvcc: not sent (its executor needs a GPU toolchain)"),
        Family::Archiver => Some("ar, ranlib: not sent (quicker here than the upload)"),
    }
}

/// What a remote run is given and asked for.
struct Plan {
    /// The input root's nodes, by absolute path (the tracer and shim are added to it).
    tree: BTreeMap<PathBuf, Node>,
    /// The outputs to ask back, by absolute path, with the mode an earlier compile's output
    /// had (`None`: a new file's usual mode).
    outputs: Vec<(PathBuf, Option<u32>)>,
    /// The environment deps of the earlier compile, if any (their variables are sent).
    env_deps: Vec<Dep>,
    /// Where the inputs came from, for the log and `explain`.
    from: &'static str,
}

/// The most files and bytes a guessed input root takes from one directory (a build
/// directory may hold thousands of unrelated files).
const GUESS_FILES: usize = 2000;
const GUESS_BYTES: u64 = 64 << 20;
/// What of a directory's files a guessed root takes: sources and headers.
const GUESS_EXTENSIONS: [&str; 18] = [
    "h", "hh", "hpp", "hxx", "h++", "inc", "def", "c", "cc", "cpp", "cxx", "c++", "i", "ii", "s",
    "S", "tcc", "ipp",
];
/// The most paths remembered per compiler (its toolchain and what its compiles read).
const KNOWN_PATHS: usize = 50_000;

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
        self.finish_answering(key, call.run, done, &analysed, stream, rec, answer)?;
        Ok(None)
    }

    /// The most recent stored dep set of `key` that holds here but for file contents,
    /// with its result (for the outputs to ask back).
    fn prior(&self, call: &Served, key: &Hash) -> Result<Plan, &'static str> {
        let local = self.store.get_manifest(key).ok().flatten();
        let local = local.and_then(|b| Manifest::decode(&b));
        let remote = || self.remote_manifest(key);
        let Some(manifest) = local.or_else(remote) else {
            return Err("never compiled before: its inputs are learnt here first");
        };
        self.prior_in(call, key, &manifest).ok_or(
            "what it read changed beyond file contents (a file appeared, a directory was listed)",
        )
    }

    fn prior_in(&self, call: &Served, key: &Hash, manifest: &Manifest) -> Option<Plan> {
        {
            for stored in &manifest.sets {
                let Ok(set) = set_here(stored, call.root.as_ref()) else {
                    continue;
                };
                if set.deps.iter().any(|d| !sendable(&d.state)) {
                    continue;
                }
                let relaxed = DepSet {
                    deps: set.deps.iter().map(relax).collect(),
                    result: set.result,
                };
                if validate(&relaxed, &self.stat_cache, &call.env).is_err() {
                    continue;
                }
                let Some((result, _)) = self.result_tiered(key, &stored.result) else {
                    continue;
                };
                let result = result_here(&result, call.root.as_ref());
                return Some(plan_of(&set.deps, &result));
            }
        }
        None
    }

    /// The remote run of `call` with `prior`'s inputs, its outputs written here and its
    /// trace replayed into a record; or why not (then nothing here was touched but the
    /// outputs, which a local compile rewrites).
    fn run_remote(&self, remote: &Remote, call: &Served, plan: &Plan) -> Result<Ran, String> {
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

/// The plan an earlier compile's dep set and result make.
fn plan_of(deps: &[Dep], result: &CachedResult) -> Plan {
    let mut tree = BTreeMap::new();
    for dep in deps {
        add_dep(dep, &mut tree);
    }
    let outputs = result
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::File { path, mode, .. } | Output::Depfile { path, mode, .. } => {
                Some((PathBuf::from(OsStr::from_bytes(path)), Some(*mode)))
            }
            _ => None,
        })
        .collect();
    Plan {
        tree,
        outputs,
        env_deps: deps.iter().filter(|d| is_env(&d.state)).cloned().collect(),
        from: "an earlier compile of the call",
    }
}

impl Remote {
    /// A plan for a call no earlier compile of which holds: what compiles by the same
    /// compiler read (its toolchain among it) and the sources and headers of the directories
    /// its command line names; the outputs its command line asks for. `None` before any
    /// compile by that compiler was seen.
    fn guess(&self, call: &Served) -> Option<Plan> {
        let req = call.req;
        let mut tree = self.known.lock().unwrap().get(&req.compiler)?.clone();
        let cwd = PathBuf::from(OsStr::from_bytes(&req.cwd));
        tree.extend(self.system_headers(req));
        for dir in crate::compiler::gcc_guess::input_dirs(&req.argv, &cwd) {
            add_dir_files(&dir, &mut tree, true);
        }
        for file in crate::compiler::gcc_guess::input_files(&req.argv, &cwd) {
            if file.is_file() {
                add_with_links(&file, &mut tree);
            }
        }
        let outputs = crate::compiler::gcc_guess::outputs(&req.argv)
            .into_iter()
            .map(|o| (cwd.join(o), None))
            .collect();
        Some(Plan {
            tree,
            outputs,
            env_deps: Vec::new(),
            from: "guessed from compiles by the same compiler and the directories it names",
        })
    }

    /// The headers of the system directories the call's driver searches (asked once per
    /// driver and language with `-E -v`): a whole directory when it is small (gcc's own, the
    /// multiarch one, libstdc++'s), else its direct files.
    fn system_headers(&self, req: &crate::protocol::CompileRequest) -> BTreeMap<PathBuf, Node> {
        use crate::compiler::gcc_guess;
        let cxx = gcc_guess::is_cxx(&req.argv);
        let mut id = req.compiler.clone();
        id.extend_from_slice(if cxx { b" c++" } else { b" c" });
        if let Some(known) = self.headers.lock().unwrap().get(&id) {
            return known.clone();
        }
        let report = std::process::Command::new(OsStr::from_bytes(&req.compiler))
            .args(["-E", "-v", "-x", if cxx { "c++" } else { "c" }, "/dev/null"])
            .env_clear()
            .envs(env::value(&req.env, b"PATH").map(|p| ("PATH", OsStr::from_bytes(p))))
            .stdout(std::process::Stdio::null())
            .output();
        let mut tree = BTreeMap::new();
        if let Ok(out) = report {
            for dir in gcc_guess::search_dirs(&String::from_utf8_lossy(&out.stderr)) {
                add_dir_tree(&dir, &mut tree);
            }
        }
        self.headers.lock().unwrap().insert(id, tree.clone());
        tree
    }

    /// Remembers what a compile by `compiler` read, for `guess`.
    fn learn<'p>(&self, compiler: &[u8], read: impl Iterator<Item = &'p Path>) {
        let mut known = self.known.lock().unwrap();
        let paths = known.entry(compiler.to_vec()).or_default();
        for path in read {
            if paths.len() >= KNOWN_PATHS {
                return;
            }
            add_with_links(path, paths);
        }
    }
}

impl Agent {
    /// After a C/C++ miss here or remotely: its inputs, for a later guess.
    pub(super) fn learn_inputs(&self, family: Family, compiler: &[u8], deps: &[Dep]) {
        let Some(remote) = self.executor.as_ref().filter(|_| family == Family::CFamily) else {
            return;
        };
        let files = deps.iter().filter_map(|d| match d.state {
            DepState::File(_) | DepState::Symlink(_) | DepState::Exists(_) => {
                Some(Path::new(OsStr::from_bytes(&d.path)))
            }
            _ => None,
        });
        remote.learn(compiler, files);
        let read = deps.iter().filter(|d| matches!(d.state, DepState::Env(_)));
        (remote.learnt_env.lock().unwrap()).extend(read.map(|d| d.path.clone()));
    }
}

/// A system header directory: all of it when it is within the guess's bounds, else the files
/// directly in it.
fn add_dir_tree(dir: &Path, tree: &mut BTreeMap<PathBuf, Node>) {
    let mut found = BTreeMap::new();
    let (mut files, mut bytes) = (0usize, 0u64);
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                todo.push(e.path());
            } else if meta.is_file() {
                files += 1;
                bytes += meta.len();
                if files > GUESS_FILES || bytes > GUESS_BYTES / 4 {
                    // Too big to send whole: its direct files only.
                    return add_dir_files(dir, tree, false);
                }
                add_with_links(&e.path(), &mut found);
            }
        }
    }
    tree.extend(found);
}

/// The sources and headers directly in `dir`, within the guess's bounds.
fn add_dir_files(dir: &Path, tree: &mut BTreeMap<PathBuf, Node>, by_extension: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let (mut files, mut bytes) = (0, 0);
    for e in entries.flatten() {
        let path = e.path();
        let wanted = !by_extension
            || path
                .extension()
                .is_some_and(|x| GUESS_EXTENSIONS.iter().any(|g| x == OsStr::new(g)));
        let Ok(meta) = e.metadata() else { continue };
        if !wanted || !meta.is_file() {
            continue;
        }
        files += 1;
        bytes += meta.len();
        if files > GUESS_FILES || bytes > GUESS_BYTES {
            return;
        }
        add_with_links(&path, tree);
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

fn is_env(state: &DepState) -> bool {
    matches!(
        state,
        DepState::Env(_) | DepState::EnvMatching(_) | DepState::Resolved(_)
    )
}

/// States an input root can reproduce (a search directory's candidates cannot: the
/// compile would see only the candidates it read).
fn sendable(state: &DepState) -> bool {
    !matches!(
        state,
        DepState::Candidates { .. } | DepState::Pinned(_) | DepState::Listing(_)
    )
}

/// A dep with a file's content left open: the file must still be a file.
fn relax(dep: &Dep) -> Dep {
    match dep.state {
        DepState::File(_) => Dep {
            path: dep.path.clone(),
            state: DepState::Exists(Kind::File),
        },
        _ => dep.clone(),
    }
}

fn add_dep(dep: &Dep, tree: &mut BTreeMap<PathBuf, Node>) {
    let path = Path::new(OsStr::from_bytes(&dep.path));
    match &dep.state {
        DepState::File(_) | DepState::Exists(_) | DepState::Symlink(_) => {
            add_with_links(path, tree)
        }
        _ => {}
    }
}

/// `path` and every directory and symlink on the way to it, as they are here.
fn add_with_links(path: &Path, tree: &mut BTreeMap<PathBuf, Node>) {
    let mut at = PathBuf::from("/");
    let mut links = 0;
    let mut todo: Vec<PathBuf> = path
        .components()
        .skip(1)
        .map(|c| c.as_os_str().into())
        .collect();
    todo.reverse();
    while let Some(name) = todo.pop() {
        let next = at.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&next) else {
            return;
        };
        if meta.file_type().is_symlink() {
            let Ok(target) = std::fs::read_link(&next) else {
                return;
            };
            tree.insert(next.clone(), Node::Symlink(target.clone()));
            links += 1;
            if links > 40 {
                return;
            }
            if target.is_absolute() {
                at = PathBuf::from("/");
            }
            let mut more: Vec<PathBuf> = target
                .components()
                .filter(|c| !matches!(c, std::path::Component::RootDir))
                .map(|c| c.as_os_str().into())
                .collect();
            more.reverse();
            todo.extend(more);
            continue;
        }
        if name.as_os_str() == ".." {
            at.pop();
            continue;
        }
        let node = if meta.is_dir() { Node::Dir } else { Node::File };
        tree.entry(next.clone()).or_insert(node);
        at = next;
    }
}

/// The input root's nodes as the API names them (relative, UTF-8).
fn inputs(tree: &BTreeMap<PathBuf, Node>) -> Result<BTreeMap<String, Input>, String> {
    let mut out = BTreeMap::new();
    for (path, node) in tree {
        let input = match node {
            Node::Dir => Input::Dir,
            Node::Symlink(t) => Input::Symlink {
                target: text(t.as_os_str().as_bytes())?,
            },
            Node::File => {
                let meta = std::fs::metadata(path)
                    .map_err(|e| format!("input {}: {e}", path.display()))?;
                if !meta.is_file() {
                    return Err(format!("input {} is not a regular file", path.display()));
                }
                Input::File {
                    local: path.clone(),
                    executable: meta.permissions().mode() & 0o111 != 0,
                }
            }
        };
        out.insert(relative(path)?, input);
    }
    Ok(out)
}

fn relative(path: &Path) -> Result<String, String> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    text(rel.as_os_str().as_bytes())
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| format!("not UTF-8: {}", String::from_utf8_lossy(bytes)))
}

/// The tracer's command line around the compile's own: argv[0] as the build gave it,
/// found along the action's PATH as it was here.
fn command(tracer: &Path, argv: &[Vec<u8>]) -> Result<Vec<String>, String> {
    let mut cmd: Vec<String> = [
        &tracer.to_string_lossy(),
        "-f",
        "-qq",
        "-y",
        "-e",
        "trace=%file,getdents64,chdir,fchdir",
        "-o",
        TRACE,
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for a in argv {
        cmd.push(text(a)?);
    }
    Ok(cmd)
}

/// What the action's environment holds: every variable a compile seen by this agent read (its
/// shim reported it), those the earlier compile of the call read, those gcc documents, those
/// read inside glibc (loader, locale), and PATH; then the shim, preloaded in report mode, and
/// the scratch directory. Nothing else of the user's environment leaves the machine; a compile
/// that reads a variable not sent is caught by its reports (`check_reads`).
fn environment(
    deps: &[Dep],
    learnt: &BTreeSet<Vec<u8>>,
    env: &[(Vec<u8>, Vec<u8>)],
    shim: &Path,
) -> Result<BTreeMap<String, String>, String> {
    let mut names: BTreeSet<&[u8]> = learnt.iter().map(Vec::as_slice).collect();
    names.extend(GCC_READS.iter().map(|n| n.as_bytes()));
    names.extend(
        deps.iter()
            .filter(|d| is_env(&d.state))
            .map(|d| d.path.as_slice()),
    );
    let patterns = [env::UNOBSERVED, env::LOCALE];
    let mut out = BTreeMap::new();
    for (k, v) in env {
        let wanted = names.contains(k.as_slice()) || patterns.iter().any(|p| env::matches(p, k));
        if wanted && !env::is_volatile_env(k) && k.as_slice() != b"LD_PRELOAD" {
            out.entry(text(k)?).or_insert(text(v)?);
        }
    }
    out.insert("LD_PRELOAD".into(), text(shim.as_os_str().as_bytes())?);
    out.insert("CACHEFS_VIEW".into(), "1".into());
    out.insert("TMPDIR".into(), SCRATCH.into());
    Ok(out)
}

/// The variables gcc, its programs and binutils document reading (gcc(1) "Environment",
/// ld(1)), sent whenever set, so that a first compile rarely reads one not sent.
const GCC_READS: [&str; 23] = [
    "PATH",
    // getpwd(): the working directory's spelling for debug info.
    "PWD",
    "SOURCE_DATE_EPOCH",
    "COMPILER_PATH",
    "GCC_EXEC_PREFIX",
    "LIBRARY_PATH",
    "CPATH",
    "C_INCLUDE_PATH",
    "CPLUS_INCLUDE_PATH",
    "OBJC_INCLUDE_PATH",
    "DEPENDENCIES_OUTPUT",
    "SUNPRO_DEPENDENCIES",
    "GCC_COMPARE_DEBUG",
    "GCC_COLORS",
    "GCC_URLS",
    "TERM_URLS",
    "COLUMNS",
    "GCC_EXTRA_DIAGNOSTIC_OUTPUT",
    "LD_RUN_PATH",
    "COLLECT_GCC_OPTIONS",
    "GNUTARGET",
    "LDEMULATION",
    "COLLECT_NO_DEMANGLE",
];

/// The variables the remote compile's shim reported reading (`observe::env`'s reports in
/// the replayed record): each must have been sent, or be unset here too; and the shim must
/// have loaded and seen every read. A variable read but not sent is learnt for the next run.
fn check_reads(
    record: &Record,
    sent: &BTreeMap<String, String>,
    env: &[(Vec<u8>, Vec<u8>)],
    learnt: &std::sync::Mutex<BTreeSet<Vec<u8>>>,
) -> Result<(), String> {
    let mut probe = record.clone();
    let reads = crate::observe::env::take_reports(&mut probe);
    if !reads.observed {
        return Err("environment unobserved: the shim did not load remotely".into());
    }
    if reads.unseen {
        return Err("environment unobserved: a program read it where the shim cannot see".into());
    }
    let missing: Vec<&Vec<u8>> = reads
        .names
        .iter()
        .filter(|n| {
            // Volatile variables are in no key (jobserver, terminal, ours).
            let here = env::value(env, n).is_some() && !env::is_volatile_env(n);
            let was_sent = std::str::from_utf8(n).is_ok_and(|n| sent.contains_key(n));
            here && !was_sent
        })
        .collect();
    if let Some(first) = missing.first() {
        let name = String::from_utf8_lossy(first).into_owned();
        learnt
            .lock()
            .unwrap()
            .extend(missing.iter().map(|n| n.to_vec()));
        return Err(format!(
            "read a variable not sent: {name} (sent from now on)"
        ));
    }
    learnt.lock().unwrap().extend(reads.names);
    Ok(())
}

/// Whatever the remote compile did not find is absent here, and a directory it listed
/// lists the same here.
/// (An output looked up before the compile made it is absent there and here is the last
/// build's: its absence is the compile's own doing, not an input.)
fn check_here(replayed: &trace::Replayed, written: &[&Path]) -> Result<(), String> {
    for path in &replayed.absent {
        if !written.contains(&path.as_path()) && std::fs::symlink_metadata(path).is_ok() {
            return Err(format!(
                "input root incomplete: {} exists here",
                path.display()
            ));
        }
    }
    for (dir, names) in &replayed.listed {
        let mut here: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .map_err(|e| format!("input root incomplete: {}: {e}", dir.display()))?
            .flatten()
            .map(|e| e.file_name().as_bytes().to_vec())
            .collect();
        here.sort();
        let mut there = names.clone();
        there.sort();
        if here != there {
            return Err(format!(
                "input root incomplete: {} lists other names here",
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Every path the compile wrote, made or moved something to.
fn written_by(record: &Record) -> Vec<&Path> {
    record
        .accesses
        .iter()
        .filter_map(|a| match a {
            Access::Open {
                path, write: true, ..
            }
            | Access::Created { path, .. } => Some(path.as_path()),
            Access::Renamed { to, .. } => Some(to.as_path()),
            _ => None,
        })
        .collect()
}

/// The program the remote run started is the compiler the build started here.
fn check_compiler(calls: &[trace::Call], compiler: &[u8]) -> Result<(), String> {
    let started = calls
        .iter()
        .find(|c| c.name == "execve" && c.ret == 0)
        .and_then(|c| c.args.first())
        .and_then(|a| a.strip_prefix('"')?.strip_suffix('"').map(PathBuf::from))
        .ok_or("the trace shows no program started")?;
    let here = Path::new(OsStr::from_bytes(compiler));
    let same = |p: &Path| std::fs::canonicalize(p).ok();
    if same(&started).is_none() || same(&started) != same(here) {
        return Err(format!(
            "the remote run started {}, not {}",
            started.display(),
            here.display()
        ));
    }
    Ok(())
}

/// Every file the compile wrote and left is one of the outputs that came back.
fn check_written(
    record: &Record,
    outputs: &BTreeMap<String, (Vec<u8>, bool)>,
    cwd: &Path,
) -> Result<(), String> {
    let mut written: BTreeMap<&Path, bool> = BTreeMap::new();
    for a in &record.accesses {
        match a {
            Access::Open {
                path, write: true, ..
            } => {
                written.insert(path, true);
            }
            Access::Removed { path } => {
                written.insert(path, false);
            }
            Access::Renamed { from, to } => {
                written.insert(from, false);
                written.insert(to, true);
            }
            _ => {}
        }
    }
    for (path, left) in written {
        if !left {
            continue;
        }
        let back = path
            .strip_prefix(cwd)
            .ok()
            .and_then(|r| r.to_str())
            .is_some_and(|r| outputs.contains_key(r));
        if !back {
            return Err(format!(
                "wrote {}, which was not asked back (an output the earlier compile did not make)",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Writes the outputs where the compile would have, each replaced whole (a reader never
/// sees half a file), with the mode the earlier compile's output had.
fn write_outputs(
    outputs: &BTreeMap<String, (Vec<u8>, bool)>,
    cwd: &Path,
    modes: &[(PathBuf, Option<u32>)],
) -> Result<(), String> {
    for (rel, (data, executable)) in outputs {
        let path = cwd.join(rel);
        let mode = modes
            .iter()
            .find_map(|(p, m)| (*p == path).then_some(*m).flatten())
            .unwrap_or(if *executable { 0o755 } else { 0o644 });
        let tmp = path.with_file_name(format!(
            ".{}.cachefs-remote-{}",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            std::process::id()
        ));
        let written = std::fs::write(&tmp, data)
            .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("cannot write {}: {e}", path.display()));
        }
    }
    Ok(())
}

/// The record with each open's stamp as the file is here now (inputs: checked unchanged
/// since they were sent; outputs: just written).
fn stamped(mut record: Record) -> Record {
    for a in &mut record.accesses {
        if let Access::Open { path, stamp, .. } = a {
            if let Ok(m) = std::fs::metadata(&*path) {
                *stamp = cachefs_mirror::Stamp {
                    dev: m.dev(),
                    ino: m.ino(),
                    size: m.size(),
                    mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                    ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
                    mode: m.mode(),
                };
            }
        }
    }
    record
}

/// The shim the call was started with (`LD_PRELOAD`), shipped so that the remote compile
/// reports what it reads of its environment as the local one does.
fn shim_of(env: &[(Vec<u8>, Vec<u8>)]) -> Option<PathBuf> {
    let preload = env::value(env, b"LD_PRELOAD")?;
    preload
        .split(|&b| b == b' ' || b == b':')
        .map(|p| Path::new(OsStr::from_bytes(p)))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b"libcachefs_preload"))
        })
        .map(Path::to_path_buf)
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The shared libraries `program` loads, as the loader here finds them (`ldd`).
fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>, String> {
    let out = std::process::Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|e| format!("cannot run ldd on {}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!("ldd {} failed", program.display()));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once(" => ") {
                Some((_, right)) => right.split(" (").next()?,
                None => l.split(" (").next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path.trim()))
        })
        .collect())
}
