//! A second, ordinary user for the tests that run cachefs as one: its
//! account, FUSE opened to it, and the sandbox handed to it.

use super::{stderr, Sandbox};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Mutex;

/// The ordinary user's name.
pub const USER: &str = "cachefs-test";

pub fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// Creates the test user if it is missing and returns its uid.
///
/// `useradd` checks that the name is free before it takes its lock on
/// /etc/passwd: two at once (two tests, or another checkout's run of them)
/// both succeed, the second rewriting the entry with the next uid. A test
/// that had read the first uid and chowned its sandbox to it then ran as a
/// user who could not create the cache directory in it ("Permission
/// denied"), on the first run only. Creation and the uid's look-up are
/// therefore done under one lock file shared by all processes.
pub fn ensure_user() -> String {
    assert!(
        is_root(),
        "this test sets up a second user account and needs root"
    );
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/cachefs-test-useradd.lock")
        .unwrap();
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let id = || Command::new("id").args(["-u", USER]).output().unwrap();
    if !id().status.success() {
        let out = Command::new("useradd").args(["-m", USER]).output().unwrap();
        assert!(
            out.status.success(),
            "useradd failed (the test needs root): {}",
            stderr(&out)
        );
    }
    let out = id();
    assert!(out.status.success(), "id -u {USER}: {}", stderr(&out));
    let uid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(uid.parse::<u32>().is_ok(), "id -u {USER}: {uid:?}");
    uid
}

/// How many tests of this process hold /dev/fuse open to all, and the mode
/// it had before the first: the last one out restores it, so that two tests
/// running at once do not close it under each other.
static FUSE_HOLDERS: Mutex<(usize, u32)> = Mutex::new((0, 0o666));

/// Debian's default /dev/fuse mode is 0666; some machines (this one) ship
/// 0600, which leaves ordinary users no FUSE at all. Restored on drop.
pub struct FuseOpenToAll(());

impl FuseOpenToAll {
    pub fn new() -> Self {
        let mut holders = FUSE_HOLDERS.lock().unwrap();
        if holders.0 == 0 {
            holders.1 = std::fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o777;
            std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666)).unwrap();
        }
        holders.0 += 1;
        FuseOpenToAll(())
    }
}

impl Drop for FuseOpenToAll {
    fn drop(&mut self) {
        let mut holders = FUSE_HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        holders.0 -= 1;
        if holders.0 == 0 {
            let mode = std::fs::Permissions::from_mode(holders.1);
            let _ = std::fs::set_permissions("/dev/fuse", mode);
        }
    }
}

/// Hands `paths` (recursively) to the user `uid`, and keeps the sandbox's
/// root searchable by it.
pub fn give_to(sb: &Sandbox, uid: &str, paths: &[&std::path::Path]) {
    for path in paths {
        let chown = Command::new("chown")
            .args(["-R", uid, &path.to_string_lossy()])
            .output()
            .unwrap();
        assert!(chown.status.success(), "chown: {}", stderr(&chown));
    }
    std::fs::set_permissions(sb.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `sh -c SCRIPT` as the ordinary user (without root's `XDG_RUNTIME_DIR`,
/// which is not the user's); not checked: the caller looks.
pub fn as_user(script: &str) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", USER, "--", "sh", "-c", script])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap()
}
