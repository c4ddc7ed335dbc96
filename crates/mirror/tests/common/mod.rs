//! Helpers shared by the integration tests and the overhead example: mount a
//! mirror in a temp dir and run programs inside a view the way the cachefs
//! client does (private mount namespace, view bound over real directories).
#![allow(dead_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cachefs_mirror::{Access, Mirror, MirrorOptions, Record};

pub struct Mounted {
    pub mirror: Mirror,
    /// Holds the mountpoint; dropped after the mirror (field order).
    pub dir: tempfile::TempDir,
}

/// A mirror mounted under /tmp, so binding the view's /tmp over /tmp also
/// checks that the mountpoint is hidden inside views.
pub fn mount(passthrough: bool, ttl: Duration) -> Mounted {
    mount_with(MirrorOptions {
        passthrough,
        ttl,
        ..MirrorOptions::default()
    })
}

pub fn mount_with(options: MirrorOptions) -> Mounted {
    let dir = tempfile::tempdir().expect("tempdir");
    let mirror = Mirror::mount(&dir.path().join("mnt"), options).expect("mount");
    Mounted { mirror, dir }
}

/// The examples' numeric argument `i`, or `default`.
pub fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// A scratch directory under the real /tmp.
pub fn workdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Runs `program args` with `tops` (e.g. ["/usr", "/tmp"]) of view `view`
/// bound over the real ones, in `cwd` as seen through the view.
pub fn run_in_view(
    mirror: &Mirror,
    view: u64,
    tops: &[&str],
    cwd: &Path,
    program: &str,
    args: &[&str],
) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    enter_view(&mut cmd, mirror.view_root(view), tops, cwd);
    cmd.output().expect("spawn in view")
}

/// Sets up `cmd` to run in a private mount namespace with the view bound
/// over `tops`, in that order. The chdir comes after the binds: a cwd taken
/// before them would still be the real directory.
pub fn enter_view(cmd: &mut Command, root: PathBuf, tops: &[&str], cwd: &Path) {
    let binds: Vec<(CString, CString)> = tops
        .iter()
        .map(|top| {
            let src = root.join(top.trim_start_matches('/'));
            (cstring(&src), cstring(Path::new(top)))
        })
        .collect();
    let cwd = cstring(cwd);
    let slash = CString::new("/").unwrap();
    // SAFETY: only async-signal-safe syscalls on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let null = std::ptr::null();
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                null,
                slash.as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                null as _,
            ))?;
            for (src, dst) in &binds {
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    null,
                    libc::MS_BIND,
                    null as _,
                ))?;
            }
            check(libc::chdir(cwd.as_ptr()))
        });
    }
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn cstring(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in path")
}

/// `sh -c script` inside the view with /usr and /tmp bound.
pub fn sh(mirror: &Mirror, view: u64, cwd: &Path, script: &str) -> Output {
    run_in_view(
        mirror,
        view,
        &["/usr", "/tmp"],
        cwd,
        "/bin/sh",
        &["-c", script],
    )
}

pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn has(record: &Record, pred: impl Fn(&Access) -> bool) -> bool {
    record.accesses.iter().any(pred)
}

pub fn found(record: &Record, path: &Path) -> bool {
    has(
        record,
        |a| matches!(a, Access::Found { path: p, .. } if p == path),
    )
}

pub fn not_found(record: &Record, path: &Path) -> bool {
    has(
        record,
        |a| matches!(a, Access::NotFound { path: p } if p == path),
    )
}

pub fn opened(record: &Record, path: &Path) -> bool {
    has(
        record,
        |a| matches!(a, Access::Open { path: p, .. } if p == path),
    )
}

pub fn unobservable(record: &Record) -> Vec<&Access> {
    record
        .accesses
        .iter()
        .filter(|a| matches!(a, Access::Unobservable { .. }))
        .collect()
}
