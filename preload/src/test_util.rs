//! Environment arrays and captured sets for the unit tests.

use core::ffi::c_char;
use std::ffi::{CStr, CString};

use crate::state::Captured;

/// A NULL-terminated array over owned strings; keep the first element alive while using the second.
pub fn envp(vars: &[&str]) -> (Vec<CString>, Vec<*const c_char>) {
    let owned: Vec<CString> = vars.iter().map(|v| CString::new(*v).unwrap()).collect();
    let mut ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(core::ptr::null());
    (owned, ptrs)
}

pub fn captured_as(vars: &[&str], exec_path: &str) -> Box<Captured> {
    let (_owned, ptrs) = envp(vars);
    let exec_path = CString::new(exec_path).unwrap();
    let mut cap = Box::new(Captured::EMPTY);
    unsafe { cap.fill(ptrs.as_ptr(), exec_path.as_ptr()) };
    cap
}

pub fn captured(vars: &[&str]) -> Box<Captured> {
    captured_as(vars, "/usr/bin/make")
}

/// # Safety
/// `array` is a valid NULL-terminated array of strings.
pub unsafe fn strings(array: *const *const c_char) -> Vec<String> {
    crate::cstr::entries(array)
        .map(|e| CStr::from_ptr(e).to_str().unwrap().to_owned())
        .collect()
}
