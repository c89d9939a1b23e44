//! Peak memory of a call: the Rust heap through a counting global allocator, and SQLite's
//! own allocator through its high-water mark.
//!
//! The command line's parsers promise memory bounded by their caps and by the input, never
//! growing with the number of rows; libFuzzer's `-rss_limit_mb` catches a process that
//! grows past a fixed size, these measure one call, so a target can hold the call to a
//! bound computed from its input.
//!
//! A target opts in with `#[global_allocator] static ALLOC: PeakAlloc = PeakAlloc;`.
//! Without it [`measure`] reports 0. The counters are process-wide: measure only calls
//! that run no other thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator, counting the bytes in use and their peak.
pub struct PeakAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(live, Relaxed);
}

fn shrank(by: usize) {
    LIVE.fetch_sub(by, Relaxed);
}

// SAFETY: every call is passed to `System` unchanged; the counting only reads sizes.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is `System.alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout (every block here does).
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc`, and `new_size` is the caller's to check.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Both blocks may exist while the content is copied.
            grew(new_size);
            shrank(layout.size());
        }
        p
    }
}

/// Runs `f`; returns its result and the most Rust heap memory it held at once beyond what
/// was in use when it started (what it returns included, what it freed of older blocks not
/// subtracted).
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let out = f();
    (out, PEAK.load(Relaxed).saturating_sub(base))
}

/// Runs `f`; returns its result and the most memory SQLite's allocator held at once while
/// it ran (SQLite's own count, process-wide, of everything it allocated).
pub fn measure_sqlite<T>(f: impl FnOnce() -> T) -> (T, usize) {
    // SAFETY: `sqlite3_memory_highwater` only reads and resets SQLite's statistics
    // counters; it takes and returns plain integers.
    unsafe { rusqlite::ffi::sqlite3_memory_highwater(1) };
    let out = f();
    // SAFETY: as above.
    let high = unsafe { rusqlite::ffi::sqlite3_memory_highwater(0) };
    (out, usize::try_from(high).unwrap_or(usize::MAX))
}
