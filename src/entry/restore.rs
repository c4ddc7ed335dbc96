//! Restoring a cached result on a hit: every blob fetched and verified
//! first, then each output written under a temporary name and renamed.

use super::result::{path_of, CachedResult, Output};
use crate::compiler::depfile::{self, Style};
use crate::digest::Hash;
use cachefs_store::TieredStore;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cached blob for {0} is missing or damaged")]
    MissingBlob(PathBuf),
    #[error("reading the cache failed: {0}")]
    Store(#[from] cachefs_store::StoreError),
    #[error("writing {path} failed: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes every output back. All blobs are fetched (from the remote tier
/// when not local) and verified first, so a damaged cache entry leaves the
/// tree untouched and the caller can fall back to compiling. Returns whether
/// any blob came from the remote tier.
/// A depfile's names are written at `root`, the call's tree root.
pub fn restore(
    result: &CachedResult,
    store: &TieredStore,
    key: &Hash,
    root: Option<&[u8]>,
) -> Result<bool, RestoreError> {
    let files: Vec<(&Output, &[u8], &Hash)> = result
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::File { path, blob, .. } | Output::Depfile { path, blob, .. } => {
                Some((o, &path[..], blob))
            }
            _ => None,
        })
        .collect();
    // Local blobs first; the rest from the remote, concurrently.
    let mut found = Vec::with_capacity(files.len());
    for (_, _, blob) in &files {
        found.push(store.get_blob(blob)?);
    }
    let missing: Vec<usize> = (0..files.len()).filter(|&i| found[i].is_none()).collect();
    let remote = !missing.is_empty();
    for (i, data) in fetch_remote(store, key, &missing, |i| files[i].2)? {
        found[i] = data;
    }
    let mut contents = Vec::with_capacity(files.len());
    for ((o, path, _), data) in files.iter().zip(found) {
        let data = data.ok_or_else(|| RestoreError::MissingBlob(path_of(path).into()))?;
        contents.push(match o {
            Output::Depfile { style, .. } => depfile_at(*style, &data, root)
                .ok_or_else(|| RestoreError::MissingBlob(path_of(path).into()))?,
            _ => data,
        });
    }
    let mut contents = contents.into_iter();
    for o in &result.outputs {
        let written = match o {
            Output::Dir { path, mode } => restore_dir(path_of(path), *mode),
            Output::Symlink { path, target } => restore_symlink(path_of(path), path_of(target)),
            Output::File { path, mode, .. } | Output::Depfile { path, mode, .. } => restore_file(
                path_of(path),
                *mode,
                &contents.next().expect("one blob per file"),
            ),
        };
        written.map_err(|source| RestoreError::Write {
            path: path_of(o.path()).into(),
            source,
        })?;
    }
    Ok(remote)
}

/// One blob asked of the remote: its place in the caller's list, and the blob if found.
type Fetched = (usize, Option<Vec<u8>>);

/// At most this many remote reads of one result at once.
const FETCHERS: usize = 8;

/// The blobs `blob(i)` for each `i` of `wanted` from the remote tiers, each with its `i`:
/// one after the other a remote hit with several large outputs (rlib, rmeta) waits for each
/// read's round trip in turn; on threads of their own the round trips overlap.
fn fetch_remote<'a>(
    store: &TieredStore,
    key: &Hash,
    wanted: &[usize],
    blob: impl Fn(usize) -> &'a Hash + Sync,
) -> Result<Vec<Fetched>, RestoreError> {
    if !store.has_remote() {
        return Ok(Vec::new());
    }
    if wanted.len() == 1 {
        let i = wanted[0];
        return Ok(vec![(i, store.get_remote_blob(blob(i), key)?)]);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let fetched = std::thread::scope(|s| {
        let workers: Vec<_> = (0..wanted.len().min(FETCHERS))
            .map(|_| {
                s.spawn(|| {
                    let mut got = Vec::new();
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&i) = wanted.get(n) else {
                            return Ok::<_, RestoreError>(got);
                        };
                        got.push((i, store.get_remote_blob(blob(i), key)?));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a blob fetcher panicked"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    Ok(fetched.into_iter().flatten().collect())
}

/// A stored depfile (root marked) as its compiler writes it at `root`.
fn depfile_at(style: Style, marked: &[u8], root: Option<&[u8]>) -> Option<Vec<u8>> {
    let root = root?;
    depfile::rewrite_as(style, marked, |n| super::location::unmark_with(n, root))
}

fn restore_dir(path: &Path, mode: u32) -> std::io::Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn restore_symlink(path: &Path, target: &Path) -> std::io::Result<()> {
    let tmp = temp_name(path);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Written under a temporary name and renamed, so a reader (or a crash)
/// never sees half an object file.
fn restore_file(path: &Path, mode: u32, data: &[u8]) -> std::io::Result<()> {
    let tmp = temp_name(path);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        if umask_narrows(mode) {
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        drop(f);
        // ext4 (auto_da_alloc) flushes a file's data before a rename that
        // replaces another file, ~0.2 ms per restored object on a rebuild;
        // renaming onto a free name is not flushed. The old object goes
        // first: the path then briefly does not exist, as it is briefly empty
        // when the compiler itself rewrites it.
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Whether the agent's umask takes bits from `mode` given to open, so that
/// a chmod must put them back. Read once from /proc (umask(2) cannot be
/// read without setting it, which would race with other threads); when
/// unknown, always chmod.
fn umask_narrows(mode: u32) -> bool {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let umask = UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("Umask:"))?;
        u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
    });
    umask.is_none_or(|u| mode & u != 0)
}

fn temp_name(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".cachefs-{}-{n}.tmp", std::process::id()));
    path.with_file_name(name)
}
