//! odradek: the largest single allocation a test's thread made, so a test can show that a
//! decoder sized nothing from a length it was handed (an allocation that merely fails later
//! would otherwise go unseen: large zeroed allocations are lazily committed).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Far below the lengths the tests announce; above what an error's backtrace takes when
/// `RUST_BACKTRACE` makes anyhow capture one.
pub(crate) const SMALL: usize = 64 << 10;

struct Probe;

#[global_allocator]
static PROBE: Probe = Probe;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

unsafe impl GlobalAlloc for Probe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

/// Runs `f` and returns its result with the largest single allocation it made on this thread.
pub(crate) fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|largest| largest.set(0));
    let result = f();
    (result, LARGEST.with(Cell::get))
}
