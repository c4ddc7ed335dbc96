//! The call being compiled: as the shim diverted it, or as named after
//! `cachefs` in wrapper mode (`cachefs gcc -c x.c`).

use super::binaries::is_executable;
use crate::compiler::{self, color, Family};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub struct Call {
    pub compiler: PathBuf,
    pub argv: Vec<OsString>,
    pub family: Family,
    /// The prefix command a compile runs under (`client::prefix`), once
    /// the configuration is read.
    pub prefix: Option<compiler::prefix::Prefix>,
}

impl Call {
    /// Run with `-fdiagnostics-color=always` when observed (see
    /// `compiler::color`); never when run uncached.
    pub(super) fn colored(&self) -> bool {
        color::adds_color(self.family, &self.argv)
    }

    /// A call diverted by the shim: argv exactly as the build gave it.
    pub fn from_shim(compiler: OsString) -> Call {
        Call {
            family: compiler::family(compiler.as_bytes()),
            compiler: compiler.into(),
            argv: std::env::args_os().collect(),
            prefix: None,
        }
    }

    /// `cachefs COMPILER ARGS…`: the first argument names a known compiler
    /// (by name, searched on PATH, or by path). Its argv[0] is the compiler
    /// as named, which is what the build would have run.
    pub fn from_wrapper_args() -> Option<Call> {
        let args: Vec<OsString> = std::env::args_os().skip(1).collect();
        let first = args.first()?;
        let name = Path::new(first).file_name()?;
        if !cachefs_preload::is_cached_program_name(name.as_bytes()) {
            return None;
        }
        let compiler = resolve_program(first)?;
        Some(Call {
            family: compiler::family(compiler.as_os_str().as_bytes()),
            compiler,
            argv: args,
            prefix: None,
        })
    }
}

/// A program name as execvp would find it.
fn resolve_program(name: &OsString) -> Option<PathBuf> {
    let name = Path::new(name);
    if name.as_os_str().as_bytes().contains(&b'/') {
        return name.is_file().then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}
