//! The two binaries, installed side by side: `cachefs`, the client that
//! every compile starts, and `cachefs-cli`, the command line it execs; and
//! how this process knows it was started as a compiler.

use crate::config::ENV_COMPILER;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub const CLIENT_NAME: &str = "cachefs";
pub const CLI_NAME: &str = "cachefs-cli";

/// The shim's file name, as installed and as cargo builds it.
pub const SHIM_NAME: &str = "libcachefs_preload.so";

/// The shim installed with `exe`: beside it (cargo's target dir), in the
/// installed lib dir, or where this build put it.
pub fn installed_shim(exe: &Path) -> Option<PathBuf> {
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [
        dir.join(SHIM_NAME),
        dir.join("../lib/cachefs").join(SHIM_NAME),
        PathBuf::from(cachefs_preload::SHIM_PATH),
    ];
    let found = candidates.into_iter().find(|c| c.is_file())?;
    Some(found.canonicalize().unwrap_or(found))
}

/// `name` beside `exe`, if it is there and executable.
pub fn sibling_binary(exe: &Path, name: &str) -> Option<PathBuf> {
    let path = exe.with_file_name(name);
    is_executable(&path).then_some(path)
}

/// `cachefs-cli` beside this binary.
pub fn cli_binary() -> Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the cachefs executable: {e}"))?;
    sibling_binary(&exe, CLI_NAME).ok_or_else(|| {
        format!(
            "{} is missing: cachefs needs it beside {} for every command but compiles; \
             reinstall with scripts/install.sh",
            exe.with_file_name(CLI_NAME).display(),
            exe.display()
        )
    })
}

pub fn is_compile_mode() -> Option<OsString> {
    std::env::var_os(ENV_COMPILER).filter(|c| !c.is_empty())
}

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
