//! The skeleton every firmware image in this crate shares: the heap (with
//! feature `heap`; the heap-free images are built without it), a one-task
//! poll-loop executor, the SysTick timer that stands in for a
//! peripheral's interrupt, and the end of the run. See README.md beside
//! Cargo.toml for what is measured and how.
//!
//! The job, in every image: a task waits, one key at a time, for the values of
//! keys `0..KEYS`; the SysTick handler delivers them, one per tick. Without a
//! map (`bare`, `baseline`) the task polls a tick counter instead.
//!
//! With feature `report` (QEMU runs only), the allocator counts bytes and
//! [`finish`] prints over semihosting and exits QEMU; that build's sizes are
//! not the ones in the table.

#![no_std]

#[cfg(feature = "heap")]
extern crate alloc;

/// Prints a line to the host (the `report` build, under QEMU).
#[cfg(feature = "report")]
#[macro_export]
macro_rules! report {
    ($($t:tt)*) => { $crate::semihosting::hprintln!($($t)*) };
}

use core::future::Future;
use core::hint::black_box;
use core::pin::pin;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use cortex_m::peripheral::syst::SystClkSource;

/// How many keys the task waits for, one after the other.
pub const KEYS: u8 = 4;

/// The value the interrupt delivers for key `k`.
pub const fn value_for(k: u8) -> u32 {
    1_000 + k as u32
}

/// What the task adds up when every value arrived: checked by the `report`
/// runs.
pub const EXPECTED_SUM: u32 = {
    let mut sum = 0;
    let mut k = 0;
    while k < KEYS {
        sum += value_for(k);
        k += 1;
    }
    sum
};

/// Core clock cycles between two SysTick interrupts.
const TICK_CYCLES: u32 = 20_000;

// ---------------------------------------------------------------------------
// The heap.

/// The heap: a static array handed to embedded-alloc's linked-list
/// allocator (feature `heap`). The images built with it call [`init_heap`].
#[cfg(feature = "heap")]
pub mod heap {
    use core::mem::MaybeUninit;

    /// Bytes of RAM set aside for the heap: in the `.bss` of every image
    /// that calls [`init_heap`].
    pub const HEAP_BYTES: usize = 16 * 1024;

    static mut HEAP_MEM: [MaybeUninit<u8>; HEAP_BYTES] = [MaybeUninit::uninit(); HEAP_BYTES];

    #[cfg(not(feature = "report"))]
    #[global_allocator]
    static HEAP: embedded_alloc::LlffHeap = embedded_alloc::LlffHeap::empty();

    #[cfg(feature = "report")]
    #[global_allocator]
    static HEAP: counting::Counting = counting::Counting::new();

    fn raw() -> &'static embedded_alloc::LlffHeap {
        #[cfg(not(feature = "report"))]
        return &HEAP;
        #[cfg(feature = "report")]
        return &HEAP.inner;
    }

    /// Hands the heap its memory, then allocates and frees one small box, so
    /// that the allocator's code is in every image that has a heap, the
    /// baseline's too, and a map's figures show only the map.
    #[allow(unsafe_code)]
    pub fn init_heap() {
        // SAFETY: called once, at start-up, before anything allocates;
        // `HEAP_MEM` is used by nothing else, so the allocator owns those
        // bytes for the rest of the run.
        unsafe { raw().init((&raw mut HEAP_MEM).addr(), HEAP_BYTES) };
        let probe = alloc::boxed::Box::new(core::hint::black_box(7u32));
        core::hint::black_box(&probe);
    }

    /// Bytes the allocator has handed out and not taken back, as it counts
    /// them (each request rounded up to its block size).
    pub fn allocator_used() -> usize {
        raw().used()
    }

    #[cfg(feature = "report")]
    pub use counting::{Stats, stats};

    /// The `report` build's allocator: embedded-alloc's, with counters.
    #[cfg(feature = "report")]
    #[allow(unsafe_code)]
    mod counting {
        use core::alloc::{GlobalAlloc, Layout};
        use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

        pub(super) struct Counting {
            pub(super) inner: embedded_alloc::LlffHeap,
        }

        static LIVE: AtomicUsize = AtomicUsize::new(0);
        static PEAK: AtomicUsize = AtomicUsize::new(0);
        static CALLS: AtomicUsize = AtomicUsize::new(0);

        impl Counting {
            pub(super) const fn new() -> Self {
                Counting {
                    inner: embedded_alloc::LlffHeap::empty(),
                }
            }
        }

        fn grow(by: usize) {
            CALLS.fetch_add(1, Relaxed);
            let live = LIVE.fetch_add(by, Relaxed) + by;
            PEAK.fetch_max(live, Relaxed);
        }

        // SAFETY: every call is passed on to embedded-alloc's heap with the
        // same arguments; the counters only watch.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                // SAFETY: the caller's promises for `layout` hold for the
                // inner allocator too.
                let ptr = unsafe { self.inner.alloc(layout) };
                if !ptr.is_null() {
                    grow(layout.size());
                }
                ptr
            }

            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                LIVE.fetch_sub(layout.size(), Relaxed);
                // SAFETY: `ptr` came from `alloc` above with this `layout`.
                unsafe { self.inner.dealloc(ptr, layout) }
            }
        }

        /// The heap as the program asked for it, in bytes requested.
        #[derive(Clone, Copy, Debug)]
        pub struct Stats {
            /// Bytes allocated and not freed.
            pub live: usize,
            /// The most `live` has been since [`stats`] last reset it.
            pub peak: usize,
            /// Allocation calls (alloc and realloc) since the last reset.
            pub calls: usize,
        }

        /// The counters now; with `reset`, `peak` restarts from `live` and
        /// `calls` from 0.
        pub fn stats(reset: bool) -> Stats {
            let live = LIVE.load(Relaxed);
            let s = Stats {
                live,
                peak: PEAK.load(Relaxed),
                calls: CALLS.load(Relaxed),
            };
            if reset {
                PEAK.store(live, Relaxed);
                CALLS.store(0, Relaxed);
            }
            s
        }
    }
}

#[cfg(feature = "heap")]
pub use heap::init_heap;

// ---------------------------------------------------------------------------
// The executor.

/// Set by the task's waker; the executor polls the task again only once it
/// is set.
static WOKEN: AtomicBool = AtomicBool::new(false);

/// What waking the task does. The `baseline` handler calls it directly; the
/// maps call it through the task's waker.
pub fn wake_task() {
    WOKEN.store(true, Relaxed);
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(
    |_| RawWaker::new(core::ptr::null(), &VTABLE),
    |_| wake_task(),
    |_| wake_task(),
    |_| {},
);

/// Runs one future to completion: polls it once, then again each time its
/// waker was woken, and sleeps (`wfi`) in between.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    // SAFETY: the vtable's functions ignore the data pointer, so any pointer
    // (null here) is valid for them, and they are safe to call from any
    // context: they only store to an atomic.
    #[allow(unsafe_code)]
    let waker = unsafe { Waker::from_raw(RawWaker::new(core::ptr::null(), &VTABLE)) };
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        // Sleep until the waker is woken (it may have been already, during
        // the poll). With interrupts masked, `wfi` still returns when one is
        // pending, so a wake-up between the check and the sleep is not lost.
        while !WOKEN.swap(false, Relaxed) {
            cortex_m::interrupt::free(|_| {
                if !WOKEN.load(Relaxed) {
                    cortex_m::asm::wfi();
                }
            });
        }
    }
}

// ---------------------------------------------------------------------------
// The timer and the map-less job.

/// Starts SysTick: its handler (each image's own `SysTick`) runs every
/// `TICK_CYCLES` core cycles.
pub fn start_ticks() {
    let mut cp = cortex_m::Peripherals::take().unwrap();
    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(TICK_CYCLES - 1);
    cp.SYST.clear_current();
    cp.SYST.enable_counter();
    cp.SYST.enable_interrupt();
}

/// Ticks seen by the `bare` and `baseline` handlers.
pub static TICKS: AtomicU8 = AtomicU8::new(0);

/// The job without a map: wait for tick `k + 1`, then take `value_for(k)`,
/// for each key; the handler bumps [`TICKS`] and calls [`wake_task`].
pub async fn tick_task() -> u32 {
    let mut sum = 0;
    for k in 0..KEYS {
        let k = black_box(k);
        sum += core::future::poll_fn(|_| {
            if TICKS.load(Relaxed) > k {
                Poll::Ready(value_for(k))
            } else {
                Poll::Pending
            }
        })
        .await;
    }
    sum
}

/// The `bare` and `baseline` SysTick handlers' work.
pub fn tick() {
    if TICKS.load(Relaxed) < KEYS {
        TICKS.fetch_add(1, Relaxed);
        wake_task();
    }
}

/// The end of every image: keep `sum` alive and sleep. In the `report`
/// build: check `sum`, print `name`'s result and exit QEMU.
pub fn finish(name: &str, sum: u32) -> ! {
    black_box(sum);
    #[cfg(feature = "report")]
    {
        let ok = sum == EXPECTED_SUM;
        #[cfg(feature = "heap")]
        report!(
            "{name}: sum {sum} ({}), heap live {} B, allocator used {} B",
            if ok { "ok" } else { "WRONG" },
            heap::stats(false).live,
            heap::allocator_used(),
        );
        #[cfg(not(feature = "heap"))]
        report!(
            "{name}: sum {sum} ({}), no heap",
            if ok { "ok" } else { "WRONG" },
        );
        exit(ok);
    }
    #[cfg(not(feature = "report"))]
    {
        let _ = name;
        loop {
            cortex_m::asm::wfi();
        }
    }
}

#[cfg(feature = "report")]
#[doc(hidden)]
pub use cortex_m_semihosting as semihosting;

// The panic handler: halt, in the measured images; in the `report` build,
// say what panicked (an allocation failure, for example) and end the run.
#[cfg(not(feature = "report"))]
use panic_halt as _;

#[cfg(feature = "report")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    report!("PANIC: {info}");
    exit(false)
}

/// Ends the QEMU run with a status.
#[cfg(feature = "report")]
pub fn exit(ok: bool) -> ! {
    use cortex_m_semihosting::debug;
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {
        cortex_m::asm::wfi();
    }
}
