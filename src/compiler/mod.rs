//! Compiler knowledge: which calls can be cached at all, per family. The
//! observation decides the dependencies; this only rules out calls whose
//! inputs the observation cannot see (stdin) or whose outputs are not a
//! function of their inputs (incremental state).

pub mod archiver;
pub mod color;
mod gcc;
pub mod host_target;
pub mod language;
pub mod rustc;
pub mod time_macros;

use std::path::Path;

/// Why a call must run uncached, or `None` if it may be cached.
pub fn uncacheable_reason(compiler: &[u8], argv: &[Vec<u8>]) -> Option<&'static str> {
    let args = argv.get(1..).unwrap_or_default();
    let host = if host_target::targets_host_cpu(args) && host_target::host_cpu_identity().is_none()
    {
        Some("targets the host CPU, which /proc/cpuinfo does not identify")
    } else if family(compiler) == Family::Nvcc && host_target::targets_host_gpu(args) {
        Some("targets this machine's GPUs (-arch=native)")
    } else {
        None
    };
    host.or_else(|| match family(compiler) {
        Family::Rustc => rustc::uncacheable_reason(args),
        Family::CFamily | Family::Nvcc => gcc::uncacheable_reason(args),
        Family::Archiver => archiver::uncacheable_reason(compiler, args),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    CFamily,
    Rustc,
    Nvcc,
    /// `ar` and `ranlib` (see `archiver`).
    Archiver,
}

pub fn family(compiler: &[u8]) -> Family {
    let name = compiler.rsplit(|&b| b == b'/').next().unwrap_or(compiler);
    if cachefs_preload::is_archiver_name(name) {
        return Family::Archiver;
    }
    let name = String::from_utf8_lossy(name);
    if name.contains("rustc") {
        Family::Rustc
    } else if name.contains("nvcc") {
        Family::Nvcc
    } else {
        Family::CFamily
    }
}

/// Whether the call runs one compiler process at a time, so that pinning it
/// to one CPU costs it nothing: gcc, clang and nvcc compiles, but not rustc
/// (parallel codegen threads) nor a gcc `-flto` link (parallel LTRANS jobs).
pub fn single_threaded(compiler: &[u8], argv: &[Vec<u8>]) -> bool {
    family(compiler) != Family::Rustc && !argv.iter().any(|a| a.starts_with(b"-flto"))
}

/// Directories the compiler searches by listing them and picking entries by
/// name (rustc's `-L`): their dep state is the set of names that could have
/// been picked, not the whole listing (see `rustc`).
pub fn library_search_dirs(compiler: &[u8], argv: &[Vec<u8>], cwd: &Path) -> rustc::SearchDirs {
    match family(compiler) {
        Family::Rustc => rustc::search_dirs(argv.get(1..).unwrap_or_default(), cwd),
        Family::CFamily | Family::Nvcc | Family::Archiver => rustc::SearchDirs::default(),
    }
}

impl Family {
    /// Prefix for the statistics' reasons of a call not cached: rustc calls
    /// and archive steps are counted apart from C compiles.
    pub fn stats_label(self) -> &'static str {
        match self {
            Family::Rustc => "rustc: ",
            Family::Archiver => "ar: ",
            Family::CFamily | Family::Nvcc => "",
        }
    }

    /// Whether the call may depend on a file it then rewrites, keyed on what
    /// the file held before (ranlib indexing the archive it read; see
    /// `cachefs_mirror::Access::Superseded`). Compilers never need it, and
    /// their clock-macro scan sees only files that still exist.
    pub fn may_rewrite_inputs(self) -> bool {
        self == Family::Archiver
    }

    /// Why an output of a finished call makes it uncacheable, by its bytes:
    /// an archive that records timestamps (see `archiver`).
    pub fn output_uncacheable_reason(self, data: &[u8]) -> Option<&'static str> {
        (self == Family::Archiver && archiver::records_times_or_owners(data) == Some(true))
            .then_some("archive records member timestamps or owners (ar's U mode)")
    }
}
