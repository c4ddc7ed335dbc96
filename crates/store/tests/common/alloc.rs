//! A global allocator that records, per thread, the largest single allocation request, so
//! a test can assert that hostile input never makes the code under test ask for more than
//! a bound. A test binary opts in with
//! `#[global_allocator] static A: common::alloc::Counting = common::alloc::Counting;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    // Per thread: tests run in parallel, and a hostile server's own thread is not the
    // code under test. Const-initialised without a destructor, so usable in the allocator.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call forwards to `System` unchanged; the bookkeeping allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

/// Forgets what this thread allocated so far.
pub fn reset_largest() {
    LARGEST.with(|l| l.set(0));
}

/// The largest single allocation this thread requested since `reset_largest`.
pub fn largest() -> usize {
    LARGEST.with(|l| l.get())
}
