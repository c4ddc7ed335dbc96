//! A cached compile result: the files it wrote, its stdout/stderr and exit
//! status. `capture` reads one after a miss, `restore` writes one back on a hit.

use crate::digest::Hash;
use crate::protocol::Exit;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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
    /// A make-format depfile kept with the tree root marked in its names,
    /// written at a hit as gcc writes it at that root (`compiler::depfile`).
    Depfile {
        #[serde(with = "crate::bytes")]
        path: Vec<u8>,
        mode: u32,
        blob: Hash,
        style: crate::compiler::depfile::Style,
    },
}

impl Output {
    pub fn path(&self) -> &[u8] {
        match self {
            Output::File { path, .. }
            | Output::Symlink { path, .. }
            | Output::Dir { path, .. }
            | Output::Depfile { path, .. } => path,
        }
    }

    pub fn path_mut(&mut self) -> &mut Vec<u8> {
        match self {
            Output::File { path, .. }
            | Output::Symlink { path, .. }
            | Output::Dir { path, .. }
            | Output::Depfile { path, .. } => path,
        }
    }
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
    /// Whether stdout and stderr hold the tree root marked (rustc's JSON
    /// messages name its outputs by absolute path; see `relocate`).
    pub streams_marked: bool,
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
                Output::File { blob, .. } | Output::Depfile { blob, .. } => Some(*blob),
                _ => None,
            })
            .collect()
    }

    pub fn output_paths(&self) -> Vec<String> {
        self.outputs
            .iter()
            .map(|o| String::from_utf8_lossy(o.path()).into_owned())
            .collect()
    }

    /// The identity of a result, so identical results share one entry.
    pub fn id(&self) -> Hash {
        *blake3::hash(&self.encode()).as_bytes()
    }
}

pub(super) fn path_of(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}
