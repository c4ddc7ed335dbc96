//! Resolving what an exec would run, for the compiler check and CACHEFS_COMPILER. Only compiler-named
//! targets get here, so the syscalls below are never paid by the other execs of a build.

use core::ffi::{c_char, c_int};

use crate::compiler_name::{basename, is_cached_program_name};
use crate::cstr::bytes;
use crate::state::COMPILER;
use crate::sys;

/// Longest path handled, NUL included (Linux's PATH_MAX); a longer one is not diverted.
pub const PATH_MAX: usize = 4096;
/// execvp's PATH when the caller has none (glibc's default).
pub const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";

/// What an exec names: a path (execve, posix_spawn), a file to search in PATH (execvp, posix_spawnp),
/// or an open file (fexecve).
#[derive(Clone, Copy)]
pub enum Target {
    Path(*const c_char),
    Search(*const c_char),
    Fd(c_int),
}

impl Target {
    /// The cheap check every exec pays: the name alone, no syscall. An fd's name needs readlink, so
    /// it is looked at in resolve().
    ///
    /// # Safety
    /// Path and Search hold valid strings.
    pub unsafe fn may_be_cached_program(self) -> bool {
        match self {
            Target::Path(p) | Target::Search(p) => {
                !p.is_null() && is_cached_program_name(basename(bytes(p)))
            }
            Target::Fd(_) => true,
        }
    }
}

/// A whole `CACHEFS_COMPILER=<path>` entry, the path written in place after the name, so that the
/// resolved path and the environment entry are one buffer.
pub struct CompilerEntry {
    buf: [u8; COMPILER.len() + PATH_MAX],
}

impl CompilerEntry {
    pub fn new() -> Self {
        let mut buf = [0; COMPILER.len() + PATH_MAX];
        buf[..COMPILER.len()].copy_from_slice(COMPILER);
        CompilerEntry { buf }
    }

    pub fn entry(&self) -> *const c_char {
        self.buf.as_ptr().cast()
    }

    pub fn path(&self) -> &[u8] {
        let path = &self.buf[COMPILER.len()..];
        &path[..path.iter().position(|&b| b == 0).unwrap_or(0)]
    }

    pub fn path_ptr(&self) -> *const c_char {
        self.buf[COMPILER.len()..].as_ptr().cast()
    }

    /// Writes the concatenation of `parts` as the path; false if it does not fit.
    fn set(&mut self, parts: &[&[u8]]) -> bool {
        let path = &mut self.buf[COMPILER.len()..];
        let mut n = 0;
        for part in parts {
            if n + part.len() >= PATH_MAX {
                return false;
            }
            path[n..n + part.len()].copy_from_slice(part);
            n += part.len();
        }
        path[n] = 0;
        true
    }
}

/// Resolves `target` into `out`; true when it is an existing executable compiler, i.e. when the exec
/// may be diverted. `path_env` is the caller's PATH value (None: unset).
///
/// # Safety
/// `target`'s strings are valid.
pub unsafe fn resolve(target: Target, path_env: Option<&[u8]>, out: &mut CompilerEntry) -> bool {
    match target {
        Target::Fd(fd) => {
            readlink_fd(fd, out)
                && is_cached_program_name(basename(out.path()))
                && is_exec_file(out.path_ptr())
        }
        other => resolve_named(other, path_env, out),
    }
}

/// Resolves `target` into `out` whatever its name: the file an exec would run, or false when there is
/// none (the exec will fail by itself).
///
/// # Safety
/// `target`'s strings are valid.
pub unsafe fn locate(target: Target, path_env: Option<&[u8]>, out: &mut CompilerEntry) -> bool {
    match target {
        Target::Fd(fd) => readlink_fd(fd, out) && is_exec_file(out.path_ptr()),
        other => resolve_named(other, path_env, out),
    }
}

/// `resolve` for a path or a name to search.
unsafe fn resolve_named(target: Target, path_env: Option<&[u8]>, out: &mut CompilerEntry) -> bool {
    match target {
        Target::Path(p) => out.set(&[bytes(p)]) && is_exec_file(out.path_ptr()),
        Target::Search(f) if bytes(f).contains(&b'/') => {
            out.set(&[bytes(f)]) && is_exec_file(out.path_ptr())
        }
        Target::Search(f) => search(bytes(f), path_env.unwrap_or(DEFAULT_PATH), out),
        Target::Fd(_) => false,
    }
}

/// execvp's search: the first PATH entry holding an executable file; an empty entry is the current
/// directory, written as the bare name like glibc does.
fn search(file: &[u8], path_env: &[u8], out: &mut CompilerEntry) -> bool {
    if file.is_empty() {
        return false;
    }
    path_env.split(|&b| b == b':').any(|dir| {
        let fits = if dir.is_empty() {
            out.set(&[file])
        } else {
            out.set(&[dir, b"/", file])
        };
        // SAFETY: set() wrote a NUL-terminated path.
        fits && unsafe { is_exec_file(out.path_ptr()) }
    })
}

/// fexecve's file is whatever the fd is open on: /proc/self/fd/N names it (symlinks already followed).
unsafe fn readlink_fd(fd: c_int, out: &mut CompilerEntry) -> bool {
    let Ok(fd) = u32::try_from(fd) else {
        return false;
    };
    let mut link = [0u8; 32];
    let prefix = b"/proc/self/fd/";
    link[..prefix.len()].copy_from_slice(prefix);
    write_decimal(&mut link[prefix.len()..], fd);
    let path = &mut out.buf[COMPILER.len()..];
    let n = sys::readlink(link.as_ptr().cast(), path.as_mut_ptr().cast(), PATH_MAX - 1);
    match usize::try_from(n) {
        Ok(n) if n < PATH_MAX - 1 => {
            path[n] = 0;
            true
        }
        _ => false,
    }
}

/// Writes `value` and a NUL; `buf` has room for any u32 (11 bytes).
fn write_decimal(buf: &mut [u8], mut value: u32) {
    let mut digits = [0u8; 10];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (value % 10) as u8;
        n += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for (i, d) in digits[..n].iter().rev().enumerate() {
        buf[i] = *d;
    }
    buf[n] = 0;
}

/// Executable and a regular file (after symlinks): directories pass access(X_OK), and execvp skips them.
///
/// # Safety
/// `path` is a valid string.
unsafe fn is_exec_file(path: *const c_char) -> bool {
    if sys::access(path, sys::X_OK) != 0 {
        return false;
    }
    let mut st = sys::Statx([0; 256]);
    if sys::statx(sys::AT_FDCWD, path, 0, sys::STATX_TYPE, &mut st) != 0 {
        // A kernel or sandbox without statx: access() already said executable.
        return sys::errno() == sys::ENOSYS;
    }
    st.mode() & sys::S_IFMT == sys::S_IFREG
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::fs::PermissionsExt;

    fn resolved(target: Target, path_env: Option<&str>) -> Option<String> {
        let mut out = CompilerEntry::new();
        let ok = unsafe { resolve(target, path_env.map(str::as_bytes), &mut out) };
        ok.then(|| String::from_utf8(out.path().to_vec()).unwrap())
    }

    fn temp_tree() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cachefs-preload-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["a", "b", "c/gcc"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for (file, mode) in [("a/gcc", 0o644), ("b/gcc", 0o755)] {
            std::fs::write(dir.join(file), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        dir
    }

    #[test]
    fn search_skips_non_executables_and_directories() {
        let dir = temp_tree();
        let d = dir.display();
        let gcc = CString::new("gcc").unwrap();
        let path_env = format!("{d}/c:{d}/a:/nonexistent:{d}/b");
        assert_eq!(
            resolved(Target::Search(gcc.as_ptr()), Some(&path_env)),
            Some(format!("{d}/b/gcc"))
        );
        assert_eq!(
            resolved(Target::Search(gcc.as_ptr()), Some(&format!("{d}/a"))),
            None
        );
        let direct = CString::new(format!("{d}/c/gcc")).unwrap();
        assert_eq!(resolved(Target::Path(direct.as_ptr()), None), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn search_with_slash_is_a_path() {
        let sh = CString::new("/bin/sh").unwrap();
        assert_eq!(
            resolved(Target::Search(sh.as_ptr()), Some("/nonexistent")),
            Some("/bin/sh".into())
        );
    }

    #[test]
    fn unset_path_uses_default() {
        let sh = CString::new("sh").unwrap();
        assert_eq!(
            resolved(Target::Search(sh.as_ptr()), None),
            Some("/bin/sh".into())
        );
    }

    #[test]
    fn fd_resolves_through_proc() {
        let file = std::fs::File::open("/bin/sh").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let mut out = CompilerEntry::new();
        assert!(unsafe { readlink_fd(fd, &mut out) });
        assert_eq!(
            std::fs::canonicalize("/bin/sh")
                .unwrap()
                .as_os_str()
                .as_encoded_bytes(),
            out.path()
        );
        assert!(!unsafe { readlink_fd(-1, &mut out) });
    }

    #[test]
    fn too_long_does_not_fit() {
        let mut out = CompilerEntry::new();
        assert!(!out.set(&[&[b'a'; PATH_MAX]]));
        assert!(out.set(&[&[b'a'; PATH_MAX - 1]]));
    }

    #[test]
    fn decimal() {
        let mut buf = [0xffu8; 11];
        write_decimal(&mut buf, 4294967295);
        assert_eq!(&buf, b"4294967295\0");
        write_decimal(&mut buf, 0);
        assert_eq!(&buf[..2], b"0\0");
    }
}
