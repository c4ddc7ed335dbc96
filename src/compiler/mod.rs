//! Compiler knowledge: which calls can be cached at all, per family. The
//! observation decides the dependencies; this only rules out calls whose
//! inputs the observation cannot see (stdin) or whose outputs are not a
//! function of their inputs (incremental state).

pub mod archiver;
pub mod carries;
pub mod color;
pub mod depfile;
mod gcc;
pub mod gcc_guess;
pub mod host_target;
pub mod language;
pub mod prefix;
pub mod rustc;
pub mod time_macros;

use std::path::Path;

pub use cachefs_preload::Family;

/// The family of the compiler at `compiler` (the path as exec'd), from the
/// shim's table of program names, which decides what is diverted at all
/// (`cachefs_preload::family_of_name`). Computed once per call and carried.
/// A name not in the table is never diverted; it counts as a C compiler.
pub fn family(compiler: &[u8]) -> Family {
    let name = compiler.rsplit(|&b| b == b'/').next().unwrap_or(compiler);
    cachefs_preload::family_of_name(name).unwrap_or(Family::CFamily)
}

/// Why a call must run uncached, or `None` if it may be cached.
pub fn uncacheable_reason(
    family: Family,
    compiler: &[u8],
    argv: &[Vec<u8>],
) -> Option<&'static str> {
    let args = argv.get(1..).unwrap_or_default();
    let host = if host_target::targets_host_cpu(args) && host_target::host_cpu_identity().is_none()
    {
        Some("targets the host CPU, which /proc/cpuinfo does not identify")
    } else if family == Family::Nvcc && host_target::targets_host_gpu(args) {
        Some("targets this machine's GPUs (-arch=native)")
    } else {
        None
    };
    host.or_else(|| match family {
        Family::Rustc => rustc::uncacheable_reason(args),
        Family::CFamily | Family::Nvcc => gcc::uncacheable_reason(args),
        Family::Archiver => archiver::uncacheable_reason(compiler, args),
    })
}

/// Whether the call runs one compiler process at a time, so that pinning it
/// to one CPU costs it nothing: gcc, clang and nvcc compiles, but not rustc
/// (parallel codegen threads) nor a gcc `-flto` link (parallel LTRANS jobs).
pub fn single_threaded(family: Family, argv: &[Vec<u8>]) -> bool {
    family != Family::Rustc && !argv.iter().any(|a| a.starts_with(b"-flto"))
}

/// Directories the compiler searches by listing them and picking entries by
/// name (rustc's `-L`): their dep state is the set of names that could have
/// been picked, not the whole listing (see `rustc`).
pub fn library_search_dirs(family: Family, argv: &[Vec<u8>], cwd: &Path) -> rustc::SearchDirs {
    match family {
        Family::Rustc => rustc::search_dirs(argv.get(1..).unwrap_or_default(), cwd),
        Family::CFamily | Family::Nvcc | Family::Archiver => rustc::SearchDirs::default(),
    }
}

/// Prefix for the statistics' reasons of a call not cached: rustc calls
/// and archive steps are counted apart from C compiles.
pub fn stats_label(family: Family) -> &'static str {
    match family {
        Family::Rustc => "rustc: ",
        Family::Archiver => "ar: ",
        Family::CFamily | Family::Nvcc => "",
    }
}

/// Whether the call may depend on a file it then rewrites, keyed on what
/// the file held before (ranlib indexing the archive it read; see
/// `cachefs_mirror::Access::Superseded`). Compilers never need it, and
/// their clock-macro scan sees only files that still exist.
pub fn may_rewrite_inputs(family: Family) -> bool {
    family == Family::Archiver
}

/// Whether `__DATE__`, `__TIME__` and `__TIMESTAMP__` mean anything to the
/// call: not to rustc, nor to an archive step.
pub fn reads_clock_macros(family: Family) -> bool {
    matches!(family, Family::CFamily | Family::Nvcc)
}

/// Why an output of a finished call makes it uncacheable, by its bytes:
/// an archive that records timestamps (see `archiver`).
pub fn output_uncacheable_reason(family: Family, data: &[u8]) -> Option<&'static str> {
    (family == Family::Archiver && archiver::records_times_or_owners(data) == Some(true))
        .then_some("archive records member timestamps or owners (ar's U mode)")
}
