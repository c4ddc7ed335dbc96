//! Byte-level helpers over C strings and NULL-terminated pointer arrays, without allocation.

use core::ffi::{c_char, CStr};

/// # Safety
/// `p` is a valid NUL-terminated string that outlives `'a`.
pub unsafe fn bytes<'a>(p: *const c_char) -> &'a [u8] {
    CStr::from_ptr(p).to_bytes()
}

/// Compares only as far as `prefix` goes, so long environment entries cost nothing.
///
/// # Safety
/// `p` is a valid NUL-terminated string.
pub unsafe fn starts_with(p: *const c_char, prefix: &[u8]) -> bool {
    for (i, &b) in prefix.iter().enumerate() {
        // A NUL in `p` differs from every byte of a prefix that has none.
        if *p.add(i) as u8 != b {
            return false;
        }
    }
    true
}

/// The entries of a NULL-terminated array such as envp; a NULL array is empty, as for execve(2).
pub struct Entries {
    next: *const *const c_char,
}

/// # Safety
/// `array` is NULL or a valid NULL-terminated array of valid strings.
pub unsafe fn entries(array: *const *const c_char) -> Entries {
    Entries { next: array }
}

impl Iterator for Entries {
    type Item = *const c_char;

    fn next(&mut self) -> Option<*const c_char> {
        if self.next.is_null() {
            return None;
        }
        // SAFETY: entries()'s contract; we stop at the terminating NULL.
        let entry = unsafe { *self.next };
        if entry.is_null() {
            self.next = core::ptr::null();
            return None;
        }
        // SAFETY: the terminator has not been reached, so the next slot exists.
        self.next = unsafe { self.next.add(1) };
        Some(entry)
    }
}
