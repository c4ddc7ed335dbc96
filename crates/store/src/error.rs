//! Errors. Each message names the operation, the path and what the user can do about it, because
//! these end up in a compiler wrapper's stderr where nobody can ask a follow-up question.

use std::path::{Path, PathBuf};

/// Anything the store failed to do. A corrupt blob or a corrupt index is *not* an error (it is
/// repaired and counted); these are the failures the caller has to surface or work around.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation on the cache directory failed.
    #[error("cache store: {op} {path}: {source}; {hint}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
        hint: &'static str,
    },
    /// The redb index refused an operation.
    #[error("cache index {path}: {op} failed: {source}; {}", index_hint(.source, .path))]
    Index {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    /// Another process holds the index open.
    #[error(
        "cache index {path} is already open in another process: run one cachefs agent per cache \
         directory, or point this one at a different cache directory"
    )]
    Locked { path: PathBuf },
    /// `put_result` named a blob that is not (or no longer) in the store.
    #[error(
        "cache store {dir}: result {result} references blob {blob}, which is not in the store: \
         store every blob with put_blob before the result that references it"
    )]
    MissingBlob {
        dir: PathBuf,
        result: String,
        blob: String,
    },
}

fn index_hint(source: &redb::Error, path: &Path) -> String {
    match source {
        redb::Error::Io(_) | redb::Error::PreviousIo => HINT_WRITE.to_string(),
        _ => format!(
            "if this keeps happening, stop cachefs and delete {} (the cache starts over empty)",
            path.display()
        ),
    }
}

pub(crate) const HINT_WRITE: &str =
    "check that the disk is not full and the cache directory is writable (or lower the cache size)";
pub(crate) const HINT_READ: &str = "check the cache directory's permissions";

impl StoreError {
    /// For `map_err`; the path is only copied when there is an error.
    pub(crate) fn io<'a>(
        op: &'static str,
        path: &'a Path,
        hint: &'static str,
    ) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
        move |source| StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
            hint,
        }
    }

    /// redb errors after which the handle is unusable until reopened.
    pub(crate) fn needs_reopen(&self) -> bool {
        use redb::Error::{DatabaseClosed, Io, PreviousIo};
        matches!(self, StoreError::Index { source, .. }
            if matches!(**source, Io(_) | PreviousIo | DatabaseClosed))
    }

    pub(crate) fn index<'a, E: Into<redb::Error>>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(E) -> StoreError + 'a {
        move |source| StoreError::Index {
            op,
            path: path.to_path_buf(),
            source: Box::new(source.into()),
        }
    }
}

/// A size string (`CACHEFS_CACHE_SIZE`, `--max-size`) that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error(
        "invalid size {0:?}: expected a number with an optional K, M, G or T suffix, like 500M or 10G"
    )]
    Invalid(String),
    #[error("invalid size {0:?}: too large (the most is 16 EiB)")]
    TooLarge(String),
}
