//! A dep set: every path a compile was observed to touch, with the state it
//! found there; and the result it produced from them.

use crate::digest::Hash;
use serde::{Deserialize, Serialize};
use std::fs::Metadata;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

impl Kind {
    pub fn of(meta: &Metadata) -> Kind {
        let t = meta.file_type();
        if t.is_symlink() {
            Kind::Symlink
        } else if t.is_dir() {
            Kind::Dir
        } else if t.is_file() {
            Kind::File
        } else {
            Kind::Other
        }
    }
}

/// What a compile observed at one path; a dep set holds only if every path is
/// still in the same state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DepState {
    /// A regular file that was read, by content hash.
    File(Hash),
    /// Looked up and not found: a file appearing here later invalidates.
    Absent,
    /// A directory whose entries were listed, by the hash of its names.
    Listing(Hash),
    Symlink(#[serde(with = "crate::bytes")] Vec<u8>),
    /// Looked up (stat'ed, walked through) but not read.
    Exists(Kind),
    /// A library search directory (rustc `-L`), by the hash of the crate
    /// candidates in it for the crate stems (`lib<crate>`) the compile loaded:
    /// a new candidate for one of those crates invalidates, other crates'
    /// files do not (see `compiler::rustc`).
    Candidates {
        stems: Vec<Vec<u8>>,
        hash: Hash,
    },
    /// An environment variable the compile read (the dep's path is its
    /// name), by the hash of its value; `None`: unset. See `entry::env`.
    Env(Option<Hash>),
    /// Every variable matching the patterns in the dep's path, by one hash.
    EnvMatching(Hash),
    /// The names looked up along `PATH`, each with what it resolved to (the
    /// path as found there, and its real path).
    Resolved(Vec<Resolution>),
    /// First in a dep set whose result carries its tree's location (or may
    /// reach it another way): the dep's path is that root, and the set holds
    /// at that root only; the text says why (see `relocate`).
    Pinned(String),
}

impl std::fmt::Display for DepState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |h: &Hash| {
            h[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        match self {
            DepState::File(h) => write!(f, "file {}", short(h)),
            DepState::Absent => write!(f, "absent"),
            DepState::Listing(h) => write!(f, "directory listing {}", short(h)),
            DepState::Symlink(t) => write!(f, "symlink to {}", String::from_utf8_lossy(t)),
            DepState::Exists(k) => write!(f, "existing {k:?}"),
            DepState::Candidates { stems, hash } => {
                let stems: Vec<_> = stems.iter().map(|s| String::from_utf8_lossy(s)).collect();
                write!(
                    f,
                    "crate candidates {} for {}",
                    short(hash),
                    stems.join(" ")
                )
            }
            DepState::Env(Some(h)) => write!(f, "set, value {}", short(h)),
            DepState::Env(None) => write!(f, "unset"),
            DepState::EnvMatching(h) => write!(f, "variables {}", short(h)),
            DepState::Pinned(why) => write!(f, "pinned to its location: {why}"),
            DepState::Resolved(found) => {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                let each: Vec<String> = found
                    .iter()
                    .map(|(n, to)| {
                        let to = to.as_ref().map_or("nothing".into(), |(_, r)| text(r));
                        format!("{} → {to}", text(n))
                    })
                    .collect();
                write!(f, "resolving {}", each.join(", "))
            }
        }
    }
}

/// A name looked up along `PATH`, and what it resolved to: the path as found
/// there and that file's real path; `None`: nothing (see `entry::env`).
pub type Resolution = (Vec<u8>, Option<(Vec<u8>, Vec<u8>)>);

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dep {
    #[serde(with = "crate::bytes")]
    pub path: Vec<u8>,
    pub state: DepState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepSet {
    pub deps: Vec<Dep>,
    pub result: Hash,
}
