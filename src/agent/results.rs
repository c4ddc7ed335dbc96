//! A cached compile result: the files it wrote, its stdout/stderr and exit
//! status; how one is captured after a miss and restored on a hit.

use crate::key::Hash;
use crate::protocol::Exit;
use cachefs_store::TieredStore;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Output {
    File {
        #[serde(with = "crate::bytes")]
        path: Vec<u8>,
        mode: u32,
        blob: Hash,
    },
    Symlink {
        #[serde(with = "crate::bytes")]
        path: Vec<u8>,
        #[serde(with = "crate::bytes")]
        target: Vec<u8>,
    },
    Dir {
        #[serde(with = "crate::bytes")]
        path: Vec<u8>,
        mode: u32,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedResult {
    pub outputs: Vec<Output>,
    #[serde(with = "crate::bytes")]
    pub stdout: Vec<u8>,
    #[serde(with = "crate::bytes")]
    pub stderr: Vec<u8>,
    pub exit: Exit,
    pub compile_ms: u64,
}

impl CachedResult {
    pub fn decode(bytes: &[u8]) -> Option<CachedResult> {
        postcard::from_bytes(bytes).ok()
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("result serialises")
    }

    pub fn blobs(&self) -> Vec<Hash> {
        self.outputs
            .iter()
            .filter_map(|o| match o {
                Output::File { blob, .. } => Some(*blob),
                _ => None,
            })
            .collect()
    }

    pub fn output_paths(&self) -> Vec<String> {
        self.outputs
            .iter()
            .map(|o| match o {
                Output::File { path, .. }
                | Output::Symlink { path, .. }
                | Output::Dir { path, .. } => String::from_utf8_lossy(path).into_owned(),
            })
            .collect()
    }

    /// The identity of a result, so identical results share one entry.
    pub fn id(&self) -> Hash {
        *blake3::hash(&self.encode()).as_bytes()
    }
}

fn path_of(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// A file's bytes read right after the compile, before the build can touch it.
pub struct CapturedFile {
    pub path: PathBuf,
    pub mode: u32,
    pub data: Vec<u8>,
}

pub enum Captured {
    File(CapturedFile),
    Symlink { path: PathBuf, target: PathBuf },
    Dir { path: PathBuf, mode: u32 },
}

impl Captured {
    pub fn path_string(&self) -> String {
        let path = match self {
            Captured::File(f) => &f.path,
            Captured::Symlink { path, .. } | Captured::Dir { path, .. } => path,
        };
        path.to_string_lossy().into_owned()
    }
}

pub fn capture(path: &Path, created_dir: bool) -> std::io::Result<Captured> {
    let meta = std::fs::symlink_metadata(path)?;
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() {
        return Ok(Captured::Symlink {
            path: path.into(),
            target: std::fs::read_link(path)?,
        });
    }
    if meta.is_dir() || created_dir {
        return Ok(Captured::Dir {
            path: path.into(),
            mode,
        });
    }
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(Captured::File(CapturedFile {
        path: path.into(),
        mode,
        data: std::fs::read(path)?,
    }))
}

/// Stores captured outputs' contents as blobs and returns their entries.
pub fn store_outputs(
    store: &TieredStore,
    captured: Vec<Captured>,
    key: &Hash,
) -> Result<Vec<Output>, cachefs_store::StoreError> {
    let mut outputs = Vec::with_capacity(captured.len());
    for c in captured {
        outputs.push(match c {
            Captured::File(f) => Output::File {
                path: f.path.as_os_str().as_bytes().to_vec(),
                mode: f.mode,
                blob: store.put_blob_tiered(&f.data, key)?,
            },
            Captured::Symlink { path, target } => Output::Symlink {
                path: path.as_os_str().as_bytes().to_vec(),
                target: target.as_os_str().as_bytes().to_vec(),
            },
            Captured::Dir { path, mode } => Output::Dir {
                path: path.as_os_str().as_bytes().to_vec(),
                mode,
            },
        });
    }
    Ok(outputs)
}

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
pub fn restore(
    result: &CachedResult,
    store: &TieredStore,
    key: &Hash,
) -> Result<bool, RestoreError> {
    let mut contents = Vec::new();
    let mut remote = false;
    for o in &result.outputs {
        if let Output::File { path, blob, .. } = o {
            let (data, from_remote) = store
                .get_blob_tiered(blob, key)?
                .ok_or_else(|| RestoreError::MissingBlob(path_of(path).into()))?;
            remote |= from_remote;
            contents.push(data);
        }
    }
    let mut contents = contents.into_iter();
    for o in &result.outputs {
        let written = match o {
            Output::Dir { path, mode } => restore_dir(path_of(path), *mode),
            Output::Symlink { path, target } => restore_symlink(path_of(path), path_of(target)),
            Output::File { path, mode, .. } => restore_file(
                path_of(path),
                *mode,
                &contents.next().expect("one blob per file"),
            ),
        };
        let path = match o {
            Output::Dir { path, .. } | Output::Symlink { path, .. } | Output::File { path, .. } => {
                path
            }
        };
        written.map_err(|source| RestoreError::Write {
            path: path_of(path).into(),
            source,
        })?;
    }
    Ok(remote)
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
