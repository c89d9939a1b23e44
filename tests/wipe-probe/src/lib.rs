//! A global allocator for tests that asks: what did this code leave in memory it freed?
//!
//! [`WipeProbe`] hands every request to the system allocator. While armed ([`arm`]) it
//! reads each block just before the block is freed, or moved by a reallocation (the old
//! copy stays in memory the allocator may hand out again), and counts
//! - the blocks that contain a given byte string (a secret a test has planted), and
//! - the blocks of at least a given size, and those of them that are not all zeros.
//!
//! It is a separate crate because reading a block the allocator is about to free needs
//! `unsafe`, which the library forbids. It never allocates while inspecting.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::SeqCst};

/// The longest needle [`arm`] accepts.
pub const MAX_NEEDLE: usize = 256;

/// The allocator: `#[global_allocator] static PROBE: WipeProbe = WipeProbe;`.
pub struct WipeProbe;

static ARMED: AtomicBool = AtomicBool::new(false);
static NEEDLE: [AtomicU8; MAX_NEEDLE] = [const { AtomicU8::new(0) }; MAX_NEEDLE];
static NEEDLE_LEN: AtomicUsize = AtomicUsize::new(0);
static LARGE: AtomicUsize = AtomicUsize::new(usize::MAX);
static NEEDLE_HITS: AtomicUsize = AtomicUsize::new(0);
static LARGE_FREES: AtomicUsize = AtomicUsize::new(0);
static LARGE_UNWIPED: AtomicUsize = AtomicUsize::new(0);

/// What the probe saw between [`arm`] and [`disarm`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Freed (or moved) blocks that contained the needle.
    pub needle_hits: usize,
    /// Freed (or moved) blocks of at least the `large` size.
    pub large_frees: usize,
    /// Those of them that held a byte other than zero.
    pub large_unwiped: usize,
}

/// Starts inspecting: from now on every freed block, on every thread, is searched for
/// `needle` (if not empty), and every freed block of at least `large` bytes is checked
/// for being all zeros. Counters start at zero.
///
/// # Panics
/// If `needle` is longer than [`MAX_NEEDLE`].
pub fn arm(needle: &[u8], large: usize) {
    assert!(needle.len() <= MAX_NEEDLE, "needle too long");
    ARMED.store(false, SeqCst);
    for (slot, byte) in NEEDLE.iter().zip(needle) {
        slot.store(*byte, SeqCst);
    }
    NEEDLE_LEN.store(needle.len(), SeqCst);
    LARGE.store(large, SeqCst);
    NEEDLE_HITS.store(0, SeqCst);
    LARGE_FREES.store(0, SeqCst);
    LARGE_UNWIPED.store(0, SeqCst);
    ARMED.store(true, SeqCst);
}

/// Stops inspecting and reports what was seen since [`arm`].
pub fn disarm() -> Report {
    ARMED.store(false, SeqCst);
    Report {
        needle_hits: NEEDLE_HITS.load(SeqCst),
        large_frees: LARGE_FREES.load(SeqCst),
        large_unwiped: LARGE_UNWIPED.load(SeqCst),
    }
}

fn inspect(block: &[u8]) {
    let len = NEEDLE_LEN.load(SeqCst);
    if len > 0 && block.len() >= len {
        let mut needle = [0u8; MAX_NEEDLE];
        for (byte, slot) in needle.iter_mut().zip(&NEEDLE[..len]) {
            *byte = slot.load(SeqCst);
        }
        let needle = &needle[..len];
        if block.windows(len).any(|w| w == needle) {
            NEEDLE_HITS.fetch_add(1, SeqCst);
        }
    }
    if block.len() >= LARGE.load(SeqCst) {
        LARGE_FREES.fetch_add(1, SeqCst);
        if block.iter().any(|&b| b != 0) {
            LARGE_UNWIPED.fetch_add(1, SeqCst);
        }
    }
}

// SAFETY (all four methods): every call is forwarded to `System` with the caller's own
// pointer and layout; `inspect` only reads the `layout.size()` bytes of a live block that
// the caller is giving back, before `System` frees it.
unsafe impl GlobalAlloc for WipeProbe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(SeqCst) {
            inspect(unsafe { std::slice::from_raw_parts(ptr, layout.size()) });
        }
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !ARMED.load(SeqCst) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // While armed, every reallocation moves: the old block is inspected as it is freed,
        // as if the system allocator had moved it (it may or may not have).
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let new = unsafe { System.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
