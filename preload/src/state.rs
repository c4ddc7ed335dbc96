//! What the shim captures once, at load time: the variables it re-injects when a program scrubs its
//! environment (`env -i`), and whether diverting is possible at all. Hooks read it without locks: it is
//! written once by the constructor and published with a release store.

use core::cell::UnsafeCell;
use core::ffi::c_char;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::cstr::{bytes, entries};
use crate::sys::{self, Envp};

/// Re-injectable variables kept; a build environment has a handful (LD_PRELOAD and CACHEFS_*).
pub const MAX_VARS: usize = 16;
/// Bytes per captured `NAME=value` entry, NUL included; longer ones are not captured.
pub const VAR_MAX: usize = 4096;

pub const CLIENT: &[u8] = b"CACHEFS_CLIENT=";
pub const IN_COMPILE: &[u8] = b"CACHEFS_IN_COMPILE=";
/// Per exec, never inherited: a captured one would point every later divert at a stale compiler.
pub const COMPILER: &[u8] = b"CACHEFS_COMPILER=";
const PRELOAD: &[u8] = b"LD_PRELOAD=";
const CACHEFS: &[u8] = b"CACHEFS_";

pub struct Captured {
    entries: [[u8; VAR_MAX]; MAX_VARS],
    name_len: [usize; MAX_VARS],
    len: usize,
    client: Option<usize>,
    client_usable: bool,
    in_compile: bool,
    this_is_client: bool,
}

impl Captured {
    pub const EMPTY: Captured = Captured {
        entries: [[0; VAR_MAX]; MAX_VARS],
        name_len: [0; MAX_VARS],
        len: 0,
        client: None,
        client_usable: false,
        in_compile: false,
        this_is_client: false,
    };

    /// Captures from `envp`. `exec_path` is the path this process was exec'd by (AT_EXECFN).
    ///
    /// # Safety
    /// `envp` is NULL or a valid environment array; `exec_path` is NULL or a valid string.
    pub unsafe fn fill(&mut self, envp: Envp, exec_path: *const c_char) {
        for entry in entries(envp) {
            self.keep(bytes(entry));
        }
        self.in_compile = self.value_of(IN_COMPILE) == Some(b"1");
        // Inside a compile nothing diverts, and the client's path is not
        // probed: the probe would be one of the compile's observed inputs.
        self.client_usable = !self.in_compile && self.client.is_some_and(|i| self.client_ok(i));
        self.this_is_client = self.client_usable
            && !exec_path.is_null()
            && self.value_of(CLIENT) == Some(bytes(exec_path));
    }

    fn keep(&mut self, entry: &[u8]) {
        let wanted = entry.starts_with(PRELOAD)
            || (entry.starts_with(CACHEFS) && !entry.starts_with(COMPILER));
        let Some(eq) = entry.iter().position(|&b| b == b'=') else {
            return;
        };
        // getenv() takes the first of duplicate names; so does re-injection.
        if !wanted
            || entry.len() >= VAR_MAX
            || self.len == MAX_VARS
            || self.index_of(&entry[..=eq]).is_some()
        {
            return;
        }
        self.entries[self.len][..entry.len()].copy_from_slice(entry);
        self.entries[self.len][entry.len()] = 0;
        self.name_len[self.len] = eq + 1;
        if entry.starts_with(CLIENT) {
            self.client = Some(self.len);
        }
        self.len += 1;
    }

    /// A relative client would break after a chdir; a missing one would turn every compile into ENOENT.
    fn client_ok(&self, i: usize) -> bool {
        let value = &self.entries[i][self.name_len[i]..];
        // SAFETY: entries are NUL-terminated by keep().
        value[0] == b'/' && unsafe { sys::access(value.as_ptr().cast(), sys::X_OK) } == 0
    }

    fn index_of(&self, name_eq: &[u8]) -> Option<usize> {
        (0..self.len).find(|&i| self.name_eq(i) == name_eq)
    }

    fn value_of(&self, name_eq: &[u8]) -> Option<&[u8]> {
        let i = self.index_of(name_eq)?;
        let entry = &self.entries[i];
        let end = entry.iter().position(|&b| b == 0).unwrap_or(VAR_MAX);
        Some(&entry[self.name_len[i]..end])
    }

    /// The `LD_PRELOAD` this process was started with (which holds the shim).
    pub fn preload(&self) -> Option<&[u8]> {
        self.value_of(PRELOAD)
    }

    /// `NAME=` of entry `i`.
    pub fn name_eq(&self, i: usize) -> &[u8] {
        &self.entries[i][..self.name_len[i]]
    }

    pub fn entry(&self, i: usize) -> *const c_char {
        self.entries[i].as_ptr().cast()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// One bit per captured entry.
    pub fn all_mask(&self) -> u32 {
        (1u32 << self.len) - 1
    }

    /// Whether this process may divert at all: a usable client, and not the client itself (which
    /// execs the real compiler and must never be sent back to itself).
    pub fn may_divert(&self) -> bool {
        self.client_usable && !self.this_is_client
    }

    /// The captured CACHEFS_IN_COMPILE was "1" (so re-injecting it marks the child as in a compile).
    pub fn in_compile(&self) -> bool {
        self.in_compile
    }

    /// The client's path, NUL-terminated, for as long as the process lives.
    pub fn client_path(&self) -> Option<*const c_char> {
        let i = self.client?;
        Some(self.entries[i][self.name_len[i]..].as_ptr().cast())
    }
}

struct Slot(UnsafeCell<Captured>);

// SAFETY: written only by the load-time constructor before READY is set; read-only afterwards.
unsafe impl Sync for Slot {}

static SLOT: Slot = Slot(UnsafeCell::new(Captured::EMPTY));
static READY: AtomicBool = AtomicBool::new(false);

/// None until the constructor ran (a hook called from an earlier constructor passes calls through).
pub fn captured() -> Option<&'static Captured> {
    // SAFETY: after READY the slot is never written again.
    READY
        .load(Ordering::Acquire)
        .then(|| unsafe { &*SLOT.0.get() })
}

/// # Safety
/// Called once, from the load-time constructor, with the process's initial environment.
pub unsafe fn capture(envp: Envp) {
    let exec_path = sys::getauxval(sys::AT_EXECFN) as *const c_char;
    (*SLOT.0.get()).fill(envp, exec_path);
    READY.store(true, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::captured_as as captured;

    fn names(cap: &Captured) -> Vec<String> {
        (0..cap.len())
            .map(|i| String::from_utf8(cap.name_eq(i).to_vec()).unwrap())
            .collect()
    }
    #[test]
    fn keeps_preload_and_cachefs_but_not_compiler() {
        let cap = captured(
            &[
                "PATH=/bin",
                "LD_PRELOAD=/x.so",
                "CACHEFS_DIR=/c",
                "CACHEFS_COMPILER=/usr/bin/gcc",
                "CACHEFS_DIR=/dup",
                "HOME=/h",
            ],
            "/bin/make",
        );
        assert_eq!(names(&cap), ["LD_PRELOAD=", "CACHEFS_DIR="]);
        assert_eq!(cap.value_of(b"CACHEFS_DIR="), Some(&b"/c"[..]));
        assert!(!cap.may_divert(), "no client");
    }

    #[test]
    fn client_must_be_absolute_and_executable() {
        assert!(captured(&["CACHEFS_CLIENT=/bin/sh"], "/bin/make").may_divert());
        assert!(!captured(&["CACHEFS_CLIENT=sh"], "/bin/make").may_divert());
        assert!(!captured(&["CACHEFS_CLIENT="], "/bin/make").may_divert());
        assert!(!captured(&["CACHEFS_CLIENT=/nonexistent/cachefs"], "/bin/make").may_divert());
    }

    #[test]
    fn a_compile_s_processes_never_divert() {
        let cap = captured(
            &["CACHEFS_CLIENT=/bin/sh", "CACHEFS_IN_COMPILE=1"],
            "/bin/make",
        );
        assert!(!cap.may_divert());
    }

    #[test]
    fn the_client_itself_never_diverts() {
        assert!(!captured(&["CACHEFS_CLIENT=/bin/sh"], "/bin/sh").may_divert());
    }

    #[test]
    fn in_compile_only_when_one() {
        assert!(captured(&["CACHEFS_IN_COMPILE=1"], "/x").in_compile());
        assert!(!captured(&["CACHEFS_IN_COMPILE=0"], "/x").in_compile());
        assert!(!captured(&["CACHEFS_IN_COMPILE=11"], "/x").in_compile());
    }

    #[test]
    fn too_many_or_too_long_are_dropped() {
        let long = format!("CACHEFS_LONG={}", "x".repeat(VAR_MAX));
        let many: Vec<String> = (0..MAX_VARS + 4)
            .map(|i| format!("CACHEFS_V{i}=1"))
            .collect();
        let mut vars: Vec<&str> = vec![&long];
        vars.extend(many.iter().map(String::as_str));
        let cap = captured(&vars, "/x");
        assert_eq!(cap.len(), MAX_VARS);
        assert_eq!(cap.name_eq(0), b"CACHEFS_V0=");
    }
}
