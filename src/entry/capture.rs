//! Capturing a finished compile's outputs: their bytes read right after
//! the compile, before the build can touch them, then stored as blobs.

use super::result::Output;
use crate::digest::Hash;
use cachefs_store::TieredStore;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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
