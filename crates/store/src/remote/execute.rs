//! Running one command through a REAPI server's Execution service: the input root built as
//! a Merkle tree of `Directory` messages from local files, only the blobs the server lacks
//! uploaded, the action executed, and its outputs fetched and checked against their
//! digests. What to run and which files make its input root is the caller's (cachefs's
//! agent, from what it observed); this file only speaks the protocol.

use super::reapi::{digest_of, verify, Failure, Reapi, BATCH_LIMIT};
use super::RemoteError;
use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::longrunning::{operation, Operation};
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tonic::Code;

/// One node of an input root, by its path relative to the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A regular file whose content is read from `local` (at upload, checked against the
    /// digest taken before).
    File {
        local: PathBuf,
        executable: bool,
    },
    Symlink {
        target: String,
    },
    Dir,
}

/// What to run: REAPI's Command and Action, with the input root as a list of nodes.
#[derive(Clone, Debug, Default)]
pub struct Action {
    pub argv: Vec<String>,
    /// Sorted by name, as the API asks.
    pub env: BTreeMap<String, String>,
    /// Relative to the input root ("" for the root).
    pub workdir: String,
    /// Paths relative to the input root, without a leading `/`. Every ancestor directory
    /// is added.
    pub inputs: BTreeMap<String, Input>,
    /// Output files to bring back, relative to `workdir`.
    pub outputs: Vec<String>,
    /// Platform properties (sorted by name) the executor matches.
    pub platform: BTreeMap<String, String>,
    /// How long the executor lets the command run.
    pub timeout: Duration,
}

/// What a finished action produced.
#[derive(Debug, Default)]
pub struct Ran {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The output files that came back, by path relative to the working directory, with
    /// their content and executable bit; requested outputs the command did not make are
    /// absent.
    pub outputs: BTreeMap<String, (Vec<u8>, bool)>,
    /// Whether the server answered from its ActionCache instead of running it.
    pub cached: bool,
    pub blobs: usize,
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
}

/// Why an action did not give a result.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The server could not be reached, refused us, or failed: a remote problem.
    #[error(transparent)]
    Remote(RemoteError),
    /// A local input could not be read, or changed while it was being sent.
    #[error("input {path}: {why}")]
    Input { path: String, why: String },
    /// The action itself is one the API cannot express (a path or argument that is not
    /// UTF-8, an output outside the working directory...).
    #[error("cannot be expressed as a REAPI action: {0}")]
    Unexpressible(String),
    /// The server ran it and said it failed to (not the command's own exit status), e.g.
    /// a missing input blob, a sandbox that could not start, a timeout.
    #[error("the executor reported: {0}")]
    Executor(String),
}

impl From<RemoteError> for ExecError {
    fn from(e: RemoteError) -> ExecError {
        match e {
            RemoteError::Executed(why) => ExecError::Executor(why),
            other => ExecError::Remote(other),
        }
    }
}

/// A file's identity while its digest is cached: a change of any field is a new digest.
type Stamp = (u64, u64, u64, i64, i64, i64, i64);

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    (
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
}

/// A REAPI client for Execution, keeping the digests of the local files it sent (the
/// toolchain is hashed once per agent, not once per compile).
pub struct Executor {
    reapi: Reapi,
    digests: Mutex<HashMap<PathBuf, (Stamp, re::Digest)>>,
}

/// Where one blob of an action comes from.
enum Source {
    Local(PathBuf),
    Bytes(Vec<u8>),
}

/// The most one output (or stream) may weigh: bounded before anything is allocated.
pub const MAX_OUTPUT: u64 = 1 << 30;

impl Executor {
    pub fn new(reapi: Reapi) -> Executor {
        Executor {
            reapi,
            digests: Mutex::new(HashMap::new()),
        }
    }

    pub fn server(&self) -> &str {
        &self.reapi.server
    }

    /// The first of `action`'s input files that is no longer what was sent (by its stamp
    /// when its digest was taken), if any: a result made from it would be keyed on the new
    /// content.
    pub fn changed_since_sent(&self, action: &Action) -> Option<String> {
        let digests = self.digests.lock().unwrap();
        action.inputs.values().find_map(|input| {
            let Input::File { local, .. } = input else {
                return None;
            };
            let now = std::fs::metadata(local).ok().map(|m| stamp(&m));
            let sent = digests.get(local).map(|(s, _)| *s);
            (now.is_none() || now != sent).then(|| local.display().to_string())
        })
    }

    /// Uploads what the server lacks, executes `action`, and fetches its outputs (at most
    /// `max_total` bytes in all).
    pub fn execute(&self, action: &Action, max_total: u64) -> Result<Ran, ExecError> {
        let mut blobs: HashMap<re::Digest, Source> = HashMap::new();
        let root = self.input_root(action, &mut blobs)?;
        let command = command_of(action)?;
        let command_bytes = command.encode_to_vec();
        let command_digest = digest_of(&command_bytes);
        blobs.insert(command_digest.clone(), Source::Bytes(command_bytes));
        let act = re::Action {
            command_digest: Some(command_digest),
            input_root_digest: Some(root),
            timeout: Some(bazel_remote_apis::google::protobuf::Duration {
                seconds: action.timeout.as_secs() as i64,
                nanos: 0,
            }),
            do_not_cache: false,
            platform: Some(platform_of(action)),
            ..Default::default()
        };
        let act_bytes = act.encode_to_vec();
        let action_digest = digest_of(&act_bytes);
        blobs.insert(action_digest.clone(), Source::Bytes(act_bytes));
        let total = blobs.len();
        let started = std::time::Instant::now();
        let (uploaded, bytes) = self.upload_missing(blobs)?;
        let sent = started.elapsed();
        let budget = action.timeout + self.reapi_timeout() * 4;
        let result = self.run_for(budget, self.execute_action(action_digest))?;
        let executed = started.elapsed();
        let mut ran = self.fetch(result, max_total)?;
        // Where a remote compile's time goes (DESIGN, "remote execution": measured).
        log::debug!(
            "action: {total} blobs, {uploaded} sent ({bytes} bytes) in {sent:?}; executed in {:?}; outputs in {:?}",
            executed - sent,
            started.elapsed() - executed
        );
        ran.blobs = total;
        ran.blobs_uploaded = uploaded;
        ran.bytes_uploaded = bytes;
        Ok(ran)
    }

    fn reapi_timeout(&self) -> Duration {
        self.reapi.timeout()
    }

    /// Runs `op` on the tier's runtime within `budget`, through its breaker.
    fn run_for<T>(
        &self,
        budget: Duration,
        op: impl std::future::Future<Output = Result<T, Failure>>,
    ) -> Result<T, ExecError> {
        Ok(self.reapi.run_within(budget, op)?)
    }

    /// The root `Directory`'s digest; every directory message and every file's digest
    /// goes into `blobs`.
    fn input_root(
        &self,
        action: &Action,
        blobs: &mut HashMap<re::Digest, Source>,
    ) -> Result<re::Digest, ExecError> {
        let mut dirs: BTreeMap<String, re::Directory> = BTreeMap::new();
        dirs.insert(String::new(), re::Directory::default());
        for (path, input) in &action.inputs {
            check_relative(path)?;
            let (parent, name) = split(path);
            add_dirs(&mut dirs, parent);
            let name = name.to_string();
            match input {
                Input::Dir => add_dirs(&mut dirs, path),
                Input::Symlink { target } => {
                    let dir = dirs.get_mut(parent).expect("added above");
                    dir.symlinks.push(re::SymlinkNode {
                        name,
                        target: target.clone(),
                        node_properties: None,
                    });
                }
                Input::File { local, executable } => {
                    let digest = self.file_digest(local)?;
                    blobs.insert(digest.clone(), Source::Local(local.clone()));
                    let dir = dirs.get_mut(parent).expect("added above");
                    dir.files.push(re::FileNode {
                        name,
                        digest: Some(digest),
                        is_executable: *executable,
                        node_properties: None,
                    });
                }
            }
        }
        // Deepest first, so that every child's digest is known when its parent is encoded.
        let mut order: Vec<String> = dirs.keys().cloned().collect();
        order.sort_by_key(|p| std::cmp::Reverse(depth(p)));
        let mut root = None;
        for path in order {
            let mut dir = dirs.remove(&path).expect("listed above");
            dir.files.sort_by(|a, b| a.name.cmp(&b.name));
            dir.directories.sort_by(|a, b| a.name.cmp(&b.name));
            dir.symlinks.sort_by(|a, b| a.name.cmp(&b.name));
            let names: Vec<&str> = (dir.files.iter().map(|f| f.name.as_str()))
                .chain(dir.directories.iter().map(|d| d.name.as_str()))
                .chain(dir.symlinks.iter().map(|s| s.name.as_str()))
                .collect();
            if let Some(twice) = duplicate(names) {
                return Err(ExecError::Unexpressible(format!(
                    "{twice} in /{path} is given as two kinds of node"
                )));
            }
            let bytes = dir.encode_to_vec();
            let digest = digest_of(&bytes);
            blobs.insert(digest.clone(), Source::Bytes(bytes));
            if path.is_empty() {
                root = Some(digest);
            } else {
                // Deeper first: the parent is still waiting in `dirs`.
                let (parent, name) = split(&path);
                let parent = dirs.get_mut(parent).expect("ancestors are added");
                parent.directories.push(re::DirectoryNode {
                    name: name.to_string(),
                    digest: Some(digest),
                });
            }
        }
        Ok(root.expect("the root is always there"))
    }

    /// A local file's digest, from the cache while its stamp holds.
    fn file_digest(&self, local: &Path) -> Result<re::Digest, ExecError> {
        let unreadable = |e: std::io::Error| ExecError::Input {
            path: local.display().to_string(),
            why: e.to_string(),
        };
        let meta = std::fs::metadata(local).map_err(unreadable)?;
        let now = stamp(&meta);
        if let Some((was, digest)) = self.digests.lock().unwrap().get(local) {
            if *was == now {
                return Ok(digest.clone());
            }
        }
        let data = std::fs::read(local).map_err(unreadable)?;
        let digest = digest_of(&data);
        self.digests
            .lock()
            .unwrap()
            .insert(local.to_path_buf(), (now, digest.clone()));
        Ok(digest)
    }

    /// Sends every blob the server does not have; returns how many and their bytes.
    fn upload_missing(
        &self,
        blobs: HashMap<re::Digest, Source>,
    ) -> Result<(usize, u64), ExecError> {
        let digests: Vec<re::Digest> = blobs.keys().cloned().collect();
        let missing = self.run_for(self.reapi_timeout() * 4, self.reapi.find_missing(digests))?;
        let mut batch: Vec<(re::Digest, Vec<u8>)> = Vec::new();
        let mut batch_bytes = 0;
        let mut bytes = 0;
        for digest in &missing {
            let data = match &blobs[digest] {
                Source::Bytes(b) => b.clone(),
                Source::Local(path) => read_checked(path, digest)?,
            };
            bytes += data.len() as u64;
            if data.len() > BATCH_LIMIT {
                let budget = self.reapi_timeout() + transfer_time(data.len());
                self.run_for(budget, self.reapi.stream_write(digest, &data))?;
                continue;
            }
            // A batch stays under the client's message limit (about 1 MiB).
            if batch_bytes + data.len() > 3 * BATCH_LIMIT {
                self.send_batch(std::mem::take(&mut batch))?;
                batch_bytes = 0;
            }
            batch_bytes += data.len();
            batch.push((digest.clone(), data));
        }
        if !batch.is_empty() {
            self.send_batch(batch)?;
        }
        Ok((missing.len(), bytes))
    }

    fn send_batch(&self, batch: Vec<(re::Digest, Vec<u8>)>) -> Result<(), ExecError> {
        let bytes: usize = batch.iter().map(|(_, d)| d.len()).sum();
        let budget = self.reapi_timeout() + transfer_time(bytes);
        self.run_for(budget, self.reapi.batch_update(batch))
    }

    /// Executes and follows the operation until it is done.
    async fn execute_action(&self, action_digest: re::Digest) -> Result<Executed, Failure> {
        let req = re::ExecuteRequest {
            instance_name: self.reapi.instance.clone(),
            skip_cache_lookup: false,
            action_digest: Some(action_digest),
            ..Default::default()
        };
        // No per-request deadline: the caller's budget covers the whole run.
        let mut stream = self
            .reapi
            .execution
            .clone()
            .execute(tonic::Request::new(req))
            .await
            .map_err(|s| Failure::Status("Execute", s))?
            .into_inner();
        let mut last: Option<Operation> = None;
        while let Some(op) = stream
            .message()
            .await
            .map_err(|s| Failure::Status("Execute", s))?
        {
            let done = op.done;
            last = Some(op);
            if done {
                break;
            }
        }
        let op = last.ok_or(Failure::Bogus("Execute ended without an operation"))?;
        if !op.done {
            return Err(Failure::Bogus(
                "Execute ended before its operation was done",
            ));
        }
        let response = match op.result {
            Some(operation::Result::Response(any)) => {
                re::ExecuteResponse::decode(any.value.as_slice())
                    .map_err(|_| Failure::Bogus("Execute answered a malformed ExecuteResponse"))?
            }
            Some(operation::Result::Error(s)) => {
                return Err(Failure::Executor(format!(
                    "{:?}: {}",
                    Code::from(s.code),
                    s.message
                )))
            }
            None => return Err(Failure::Bogus("Execute's operation has no result")),
        };
        if let Some(s) = response.status.as_ref().filter(|s| s.code != 0) {
            return Err(Failure::Executor(format!(
                "{:?}: {}",
                Code::from(s.code),
                s.message
            )));
        }
        let result = response
            .result
            .ok_or(Failure::Bogus("Execute's response has no ActionResult"))?;
        Ok(Executed {
            result,
            cached: response.cached_result,
        })
    }

    /// The streams and output files of a finished action, each checked against its digest.
    fn fetch(&self, executed: Executed, max_total: u64) -> Result<Ran, ExecError> {
        let result = executed.result;
        let mut left = max_total.min(MAX_OUTPUT);
        let mut ran = Ran {
            exit_code: result.exit_code,
            cached: executed.cached,
            ..Default::default()
        };
        ran.stdout = self.blob(&result.stdout_raw, result.stdout_digest.as_ref(), &mut left)?;
        ran.stderr = self.blob(&result.stderr_raw, result.stderr_digest.as_ref(), &mut left)?;
        for file in result.output_files {
            let data = self.blob(&file.contents, file.digest.as_ref(), &mut left)?;
            ran.outputs.insert(file.path, (data, file.is_executable));
        }
        Ok(ran)
    }

    /// Inline bytes, or the blob `digest` names, within `left` bytes.
    fn blob(
        &self,
        inline: &[u8],
        digest: Option<&re::Digest>,
        left: &mut u64,
    ) -> Result<Vec<u8>, ExecError> {
        let Some(digest) = digest else {
            return Ok(inline.to_vec());
        };
        let size = u64::try_from(digest.size_bytes)
            .map_err(|_| bogus(&self.reapi.server, "a digest states a negative size"))?;
        if size > *left {
            return Err(RemoteError::TooLarge {
                server: self.reapi.server.clone(),
                what: "action output",
                len: size,
                limit: *left,
            }
            .into());
        }
        *left -= size;
        if !inline.is_empty() || size == 0 {
            self.check(digest, inline)?;
            return Ok(inline.to_vec());
        }
        let size = size as usize;
        let budget = self.reapi_timeout() + transfer_time(size);
        let data = if size <= BATCH_LIMIT {
            self.run_for(budget, self.reapi.batch_read(digest))?
        } else {
            self.run_for(budget, self.reapi.stream_read(digest, size))?
        };
        let data = data.ok_or_else(|| {
            ExecError::Executor(format!("output blob {} is not in the CAS", digest.hash))
        })?;
        self.check(digest, &data)?;
        Ok(data)
    }

    fn check(&self, digest: &re::Digest, data: &[u8]) -> Result<(), ExecError> {
        verify(digest, data).map_err(|f| f.into_error(&self.reapi.server).into())
    }
}

struct Executed {
    result: re::ActionResult,
    cached: bool,
}

fn bogus(server: &str, what: &str) -> ExecError {
    RemoteError::Reply {
        server: server.to_string(),
        reply: what.to_string(),
    }
    .into()
}

/// Time for `len` bytes at 10 MiB/s, beyond the timeout.
fn transfer_time(len: usize) -> Duration {
    Duration::from_millis((len as u64 / (10 << 10)).max(1))
}

/// A local file's bytes, if they still have `digest` (it may have changed since hashed).
fn read_checked(path: &Path, digest: &re::Digest) -> Result<Vec<u8>, ExecError> {
    let data = std::fs::read(path).map_err(|e| ExecError::Input {
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
    if digest_of(&data) != *digest {
        return Err(ExecError::Input {
            path: path.display().to_string(),
            why: "changed while the action was being sent".into(),
        });
    }
    Ok(data)
}

fn command_of(action: &Action) -> Result<re::Command, ExecError> {
    for out in &action.outputs {
        check_relative(out)?;
    }
    let mut outputs = action.outputs.clone();
    outputs.sort();
    outputs.dedup();
    Ok(re::Command {
        arguments: action.argv.clone(),
        environment_variables: action
            .env
            .iter()
            .map(|(name, value)| re::command::EnvironmentVariable {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        output_paths: outputs,
        working_directory: action.workdir.clone(),
        ..Default::default()
    })
}

fn platform_of(action: &Action) -> re::Platform {
    re::Platform {
        properties: action
            .platform
            .iter()
            .map(|(name, value)| re::platform::Property {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}

/// A path the API accepts: relative, no `.`/`..`/empty components.
fn check_relative(path: &str) -> Result<(), ExecError> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(ExecError::Unexpressible(format!(
            "{path:?} is not a plain relative path"
        )));
    }
    Ok(())
}

/// (parent, name) of a relative path; the root's children have parent "".
fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

fn depth(path: &str) -> usize {
    if path.is_empty() {
        0
    } else {
        path.matches('/').count() + 1
    }
}

/// Adds `path` and each of its ancestors as directories.
fn add_dirs(dirs: &mut BTreeMap<String, re::Directory>, path: &str) {
    let mut at = path;
    while !at.is_empty() && !dirs.contains_key(at) {
        dirs.insert(at.to_string(), re::Directory::default());
        at = split(at).0;
    }
}

fn duplicate(mut names: Vec<&str>) -> Option<String> {
    names.sort_unstable();
    names
        .windows(2)
        .find(|w| w[0] == w[1])
        .map(|w| w[0].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_or_restate_the_root_are_refused() {
        for bad in ["", "/usr/bin", "a/../b", "a//b", "./a", "a/"] {
            assert!(check_relative(bad).is_err(), "{bad:?}");
        }
        check_relative("usr/lib/gcc/x86_64-linux-gnu/12/cc1").unwrap();
    }

    #[test]
    fn ancestors_are_directories_and_depth_orders_them() {
        let mut dirs = BTreeMap::new();
        dirs.insert(String::new(), re::Directory::default());
        add_dirs(&mut dirs, "usr/lib/gcc");
        let keys: Vec<&str> = dirs.keys().map(String::as_str).collect();
        assert_eq!(keys, ["", "usr", "usr/lib", "usr/lib/gcc"]);
        assert_eq!(split("usr/lib/gcc"), ("usr/lib", "gcc"));
        assert_eq!(split("usr"), ("", "usr"));
        assert_eq!(depth(""), 0);
        assert_eq!(depth("usr/lib"), 2);
    }
}
