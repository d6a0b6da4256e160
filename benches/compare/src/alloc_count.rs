//! A global allocator that counts allocations (successful calls to `alloc`,
//! `alloc_zeroed` and `realloc`) and, while [`track_bytes`] is on, the bytes
//! live (allocated and not yet freed); it forwards everything to the system
//! allocator. Tracking bytes costs two more atomic operations per
//! allocation and free (about 10% on a peer that allocates once per
//! operation), so the timed runs leave it off.
//!
//! The count is split over cache-padded stripes, one per thread (modulo the
//! stripe count), so the threaded workloads do not all hammer one shared
//! counter: that would slow down the peers that allocate and bias the timings.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};

const STRIPES: usize = 16;

/// One thread's counters. `bytes` is signed: memory allocated on one thread
/// may be freed on another, so one stripe alone can go below zero.
#[repr(align(128))]
struct Stripe {
    allocs: AtomicU64,
    bytes: AtomicI64,
}

static COUNTS: [Stripe; STRIPES] = [const {
    Stripe {
        allocs: AtomicU64::new(0),
        bytes: AtomicI64::new(0),
    }
}; STRIPES];
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);
static TRACK_BYTES: AtomicBool = AtomicBool::new(false);

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates,
    // which matters inside the allocator.
    static MY_STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn my_stripe() -> &'static Stripe {
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
    &COUNTS[stripe]
}

/// One allocation that changes the live bytes by `delta`.
fn on_alloc(delta: i64) {
    let stripe = my_stripe();
    stripe.allocs.fetch_add(1, Relaxed);
    if TRACK_BYTES.load(Relaxed) {
        stripe.bytes.fetch_add(delta, Relaxed);
    }
}

/// Turns the live-bytes count on or off. Switch it only between runs:
/// [`live_bytes`] differences are meaningful over a stretch with it on.
pub fn track_bytes(on: bool) {
    TRACK_BYTES.store(on, Relaxed);
}

/// Allocations made so far by every thread.
pub fn allocations() -> u64 {
    COUNTS.iter().map(|s| s.allocs.load(Relaxed)).sum()
}

/// Bytes allocated and not yet freed, over every thread, counted while
/// [`track_bytes`] was on.
pub fn live_bytes() -> i64 {
    COUNTS.iter().map(|s| s.bytes.load(Relaxed)).sum()
}

/// Counts allocations and forwards them to [`System`].
pub struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over; the counting touches only
// atomics and a const-initialised thread local, and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: our caller upholds `GlobalAlloc::alloc`'s contract, which
        // is `System.alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            on_alloc(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            on_alloc(layout.size() as i64);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was allocated by this allocator, that is by `System`,
        // with `layout`; the rest of the contract is our caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        // On failure the old block stays as it was.
        if !p.is_null() {
            on_alloc(new_size as i64 - layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        if TRACK_BYTES.load(Relaxed) {
            my_stripe().bytes.fetch_sub(layout.size() as i64, Relaxed);
        }
    }
}
