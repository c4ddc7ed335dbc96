//! The environment a new program gets: what is missing from the captured set, whether it marks a
//! compile, and the rebuilt array (on the caller's stack) when something must be added.

use core::ffi::c_char;
use core::ptr;

use crate::cstr::{entries, starts_with};
use crate::state::{Captured, COMPILER, IN_COMPILE, MAX_VARS};
use crate::sys::Envp;

/// Entries copied into a rebuilt environment; a larger one is passed through unchanged (no divert,
/// no re-injection) rather than allocated for.
pub const MAX_ENV: usize = 2048;

pub struct Scan {
    /// Entries in the array.
    pub count: usize,
    /// Captured entries whose name is present (bit i = entry i).
    pub present: u32,
    /// CACHEFS_IN_COMPILE as the array has it, if it has it.
    pub in_compile: Option<bool>,
}

impl Scan {
    /// Captured entries that must be added.
    pub fn missing(&self, cap: &Captured) -> u32 {
        cap.all_mask() & !self.present
    }

    /// Whether the new program runs inside a compile, counting a re-injected CACHEFS_IN_COMPILE.
    pub fn in_compile(&self, cap: &Captured) -> bool {
        self.in_compile.unwrap_or(cap.in_compile())
    }
}

/// # Safety
/// `envp` is NULL or a valid environment array.
pub unsafe fn scan(envp: Envp, cap: &Captured) -> Scan {
    let mut scan = Scan {
        count: 0,
        present: 0,
        in_compile: None,
    };
    for entry in entries(envp) {
        scan.count += 1;
        // Every name that matters starts with C (CACHEFS_) or L (LD_PRELOAD).
        let first = *entry as u8;
        if first != b'C' && first != b'L' {
            continue;
        }
        scan.present |= present_bit(entry, cap);
        if scan.in_compile.is_none() && starts_with(entry, IN_COMPILE) {
            let value = entry.add(IN_COMPILE.len());
            scan.in_compile = Some(*value as u8 == b'1' && *value.add(1) == 0);
        }
    }
    scan
}

unsafe fn present_bit(entry: *const c_char, cap: &Captured) -> u32 {
    (0..cap.len())
        .find(|&i| starts_with(entry, cap.name_eq(i)))
        .map_or(0, |i| 1 << i)
}

/// Room for a copied environment plus the re-injected entries, CACHEFS_COMPILER and the NULL.
pub struct EnvBuf {
    ptrs: [*const c_char; MAX_ENV + MAX_VARS + 2],
}

impl EnvBuf {
    pub fn new() -> Self {
        EnvBuf {
            ptrs: [ptr::null(); MAX_ENV + MAX_VARS + 2],
        }
    }
}

/// Fills `buf` with `envp` plus the `missing` captured entries, and `compiler` (a whole
/// `CACHEFS_COMPILER=...` entry) replacing any existing one. None if `envp` outgrew MAX_ENV (another
/// thread may have grown it since the scan).
///
/// # Safety
/// `envp` is NULL or a valid environment array; `compiler` is NULL or a valid string.
pub unsafe fn build(
    buf: &mut EnvBuf,
    envp: Envp,
    cap: &Captured,
    missing: u32,
    compiler: *const c_char,
) -> Option<Envp> {
    let mut n = 0;
    for entry in entries(envp) {
        if !compiler.is_null() && starts_with(entry, COMPILER) {
            continue;
        }
        if n == MAX_ENV {
            return None;
        }
        buf.ptrs[n] = entry;
        n += 1;
    }
    for i in (0..cap.len()).filter(|i| missing & (1 << i) != 0) {
        buf.ptrs[n] = cap.entry(i);
        n += 1;
    }
    if !compiler.is_null() {
        buf.ptrs[n] = compiler;
        n += 1;
    }
    buf.ptrs[n] = ptr::null();
    Some(buf.ptrs.as_ptr())
}

/// The value of `name_eq` (`NAME=`) in `envp`, as getenv() would find it.
///
/// # Safety
/// `envp` is NULL or a valid environment array whose strings outlive `'a`.
pub unsafe fn lookup<'a>(envp: Envp, name_eq: &[u8]) -> Option<&'a [u8]> {
    let entry = entries(envp).find(|&e| starts_with(e, name_eq))?;
    Some(crate::cstr::bytes(entry.add(name_eq.len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{captured, envp, strings};

    #[test]
    fn scan_finds_present_and_in_compile() {
        let cap = captured(&["LD_PRELOAD=/x.so", "CACHEFS_DIR=/c", "CACHEFS_RUN_ID=7"]);
        let (_o, env) = envp(&["PATH=/bin", "CACHEFS_RUN_ID=other", "CACHEFS_IN_COMPILE=1"]);
        let scan = unsafe { scan(env.as_ptr(), &cap) };
        assert_eq!(scan.count, 3);
        assert_eq!(scan.missing(&cap), 0b011);
        assert_eq!(scan.in_compile, Some(true));
    }

    #[test]
    fn in_compile_is_exactly_one() {
        let cap = captured(&[]);
        for (value, expected) in [("1", true), ("0", false), ("", false), ("10", false)] {
            let (_o, env) = envp(&[&format!("CACHEFS_IN_COMPILE={value}")]);
            assert_eq!(
                unsafe { scan(env.as_ptr(), &cap) }.in_compile(&cap),
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn reinjected_in_compile_counts() {
        let cap = captured(&["CACHEFS_IN_COMPILE=1"]);
        let scan = unsafe { scan(ptr::null(), &cap) };
        assert_eq!(scan.count, 0);
        assert!(scan.in_compile(&cap));
    }

    #[test]
    fn build_adds_missing_and_replaces_compiler() {
        let cap = captured(&["LD_PRELOAD=/x.so", "CACHEFS_DIR=/c"]);
        let (_o, env) = envp(&["A=1", "CACHEFS_COMPILER=/old", "CACHEFS_DIR=/mine"]);
        let compiler = c"CACHEFS_COMPILER=/usr/bin/gcc";
        let mut buf = EnvBuf::new();
        let scan = unsafe { scan(env.as_ptr(), &cap) };
        let built = unsafe {
            build(
                &mut buf,
                env.as_ptr(),
                &cap,
                scan.missing(&cap),
                compiler.as_ptr(),
            )
        };
        assert_eq!(
            unsafe { strings(built.unwrap()) },
            [
                "A=1",
                "CACHEFS_DIR=/mine",
                "LD_PRELOAD=/x.so",
                "CACHEFS_COMPILER=/usr/bin/gcc"
            ]
        );
    }

    #[test]
    fn build_keeps_compiler_when_not_diverting() {
        let cap = captured(&["CACHEFS_DIR=/c"]);
        let (_o, env) = envp(&["CACHEFS_COMPILER=/old"]);
        let mut buf = EnvBuf::new();
        let built = unsafe { build(&mut buf, env.as_ptr(), &cap, 1, ptr::null()) };
        assert_eq!(
            unsafe { strings(built.unwrap()) },
            ["CACHEFS_COMPILER=/old", "CACHEFS_DIR=/c"]
        );
    }

    #[test]
    fn build_refuses_oversized_env() {
        let cap = captured(&[]);
        let vars: Vec<String> = (0..=MAX_ENV).map(|i| format!("V{i}=1")).collect();
        let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
        let (_o, env) = envp(&vars);
        let mut buf = EnvBuf::new();
        assert!(unsafe { build(&mut buf, env.as_ptr(), &cap, 0, ptr::null()) }.is_none());
    }

    #[test]
    fn lookup_takes_the_first() {
        let (_o, env) = envp(&["PATHX=1", "PATH=/a", "PATH=/b"]);
        assert_eq!(unsafe { lookup(env.as_ptr(), b"PATH=") }, Some(&b"/a"[..]));
        assert_eq!(unsafe { lookup(env.as_ptr(), b"HOME=") }, None);
    }
}
