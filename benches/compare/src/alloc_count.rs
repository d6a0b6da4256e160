//! A global allocator that counts allocations (calls to `alloc`,
//! `alloc_zeroed` and `realloc`) and forwards everything to the system
//! allocator.
//!
//! The count is split over cache-padded stripes, one per thread (modulo the
//! stripe count), so the threaded workloads do not all hammer one shared
//! counter: that would slow down the peers that allocate and bias the timings.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

const STRIPES: usize = 16;

#[repr(align(128))]
struct Stripe(AtomicU64);

static COUNTS: [Stripe; STRIPES] = [const { Stripe(AtomicU64::new(0)) }; STRIPES];
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates,
    // which matters inside the allocator.
    static MY_STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn bump() {
    let stripe = MY_STRIPE
        .try_with(|mine| {
            let mut i = mine.get();
            if i == usize::MAX {
                i = NEXT_STRIPE.fetch_add(1, Relaxed) % STRIPES;
                mine.set(i);
            }
            i
        })
        // A thread whose locals are already torn down still gets counted.
        .unwrap_or(0);
    COUNTS[stripe].0.fetch_add(1, Relaxed);
}

/// Allocations made so far by every thread.
pub fn allocations() -> u64 {
    COUNTS.iter().map(|s| s.0.load(Relaxed)).sum()
}

/// Counts allocations and forwards them to [`System`].
pub struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over; the counting touches only
// atomics and a const-initialised thread local, and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: our caller upholds `GlobalAlloc::alloc`'s contract, which
        // is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: `ptr` was allocated by this allocator, that is by `System`,
        // with `layout`; the rest of the contract is our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}
