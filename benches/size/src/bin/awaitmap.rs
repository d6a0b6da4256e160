//! The job with awaitmap: a static map with the critical-section lock; the
//! SysTick handler inserts each key's value, and the task `get`s, then
//! `take`s, the keys one after the other. The map reserves room for 8 keys and 8 waiting
//! futures at start-up, so the handler never allocates.

#![no_std]
#![no_main]

use core::hint::black_box;
use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

use awaitmap::{AwaitMap, CsLock};
use awaitmap_size::{self as fw, KEYS, value_for};
use cortex_m_rt::{entry, exception};
use foldhash::fast::FixedState;

type Map = AwaitMap<u8, u32, FixedState, CsLock>;

static MAP: Map = AwaitMap::with_hasher_and_lock(FixedState::with_seed(1), CsLock::new());

/// The next key the handler delivers.
static NEXT: AtomicU8 = AtomicU8::new(0);

/// Both calls, as firmware uses them: a `get` sees each value, then a
/// `take` moves it out.
async fn task() -> u32 {
    let mut sum = 0;
    for k in 0..KEYS {
        let k = black_box(k);
        let seen = MAP.get(&k).await.unwrap_or(0);
        let taken = MAP.take(&k).await.unwrap_or(1);
        sum += if seen == taken { taken } else { 0 };
    }
    sum
}

#[entry]
fn main() -> ! {
    fw::init_heap();
    #[cfg(feature = "report")]
    report::before_job();
    MAP.reserve(8, 8);
    #[cfg(feature = "report")]
    report::after_reserve();
    fw::start_ticks();
    let sum = fw::block_on(task());
    #[cfg(feature = "report")]
    report::after_job();
    fw::finish("awaitmap", sum)
}

#[exception]
fn SysTick() {
    let k = NEXT.load(Relaxed);
    if k < KEYS {
        // The map stores the value, so it does not matter whether the task
        // waits on `k` yet.
        MAP.insert(k, value_for(k));
        NEXT.store(k + 1, Relaxed);
    }
}

/// The `report` build: the sizes of the map and its future on this target,
/// and the heap the map uses, counted by the counting allocator.
#[cfg(feature = "report")]
mod report {
    use core::future::Future;
    use core::mem::size_of;
    use core::pin::Pin;
    use core::task::{Context, Poll, Waker};

    use awaitmap::{AwaitMap, CsLock, Take};
    use awaitmap_size::{self as fw, heap, report};
    use foldhash::fast::FixedState;

    use super::{MAP, Map};

    /// The most waiting futures the table below tries.
    const MAX_WAITERS: usize = 32;
    static KEYS: [u8; MAX_WAITERS] = {
        let mut keys = [0; MAX_WAITERS];
        let mut i = 0;
        while i < MAX_WAITERS {
            keys[i] = i as u8;
            i += 1;
        }
        keys
    };

    fn check(ok: bool, what: &str) {
        if !ok {
            report!("awaitmap: FAILED: {what}");
            fw::exit(false);
        }
    }

    /// Sizes, then the heap of a map with `n` waiting `take`s, for several
    /// `n`, with and without `reserve(n, n)` first. Each map is a fresh
    /// local one of the same type as `MAP`.
    pub(super) fn before_job() {
        report!(
            "awaitmap: size_of AwaitMap<u8, u32, FixedState, CsLock> {} B, Take future {} B, task future {} B",
            size_of::<Map>(),
            size_of::<Take<'static, u8, u32, FixedState, u8, CsLock>>(),
            size_of_val(&super::task()),
        );
        report!("awaitmap: heap of a fresh map with N takes waiting on N keys, in bytes requested");
        report!("awaitmap: (in brackets: the allocator's own count, which rounds each block up)");
        report!(
            "{:>3} | {:>24} | {:>19} | {:>24} | {:>18} | {:>18}",
            "N",
            "after reserve(N, N)",
            "allocs: waits+inserts",
            "no reserve: N waiting",
            "no reserve: peak",
            "no reserve: allocs",
        );
        let mut cx = Context::from_waker(Waker::noop());
        for n in [1, 2, 4, 8, 16, 32] {
            let base = heap::stats(true).live;
            let base_used = heap::allocator_used();

            let map = new_map();
            map.reserve(n, n);
            let reserved = heap::stats(true).live - base;
            let reserved_used = heap::allocator_used() - base_used;
            let warm = wait_and_serve(&map, n, &mut cx, base_used);
            check(warm.calls == 0, "waits or inserts after reserve allocated");
            check(
                warm.stats.live - base == reserved,
                "waits after reserve grew the heap",
            );
            drop(map);
            check(heap::stats(true).live == base, "reserved map leaked");

            let map = new_map();
            let cold = wait_and_serve(&map, n, &mut cx, base_used);
            drop(map);
            check(heap::stats(true).live == base, "map leaked");

            report!(
                "{n:>3} | {:>12} B [{:>5} B] | {:>21} | {:>12} B [{:>5} B] | {:>16} B | {:>18}",
                reserved,
                reserved_used,
                warm.stats.calls,
                cold.stats.live - base,
                cold.used,
                cold.stats.peak - base,
                cold.stats.calls,
            );
        }
    }

    /// The heap while `n` takes wait.
    struct Waiting {
        /// The counters, read while the takes wait.
        stats: heap::Stats,
        /// The allocator's count then, above `base_used`.
        used: usize,
        /// Allocation calls from the first poll to the last `Ready`.
        calls: usize,
    }

    fn new_map() -> Map {
        AwaitMap::with_hasher_and_lock(FixedState::with_seed(1), CsLock::new())
    }

    /// Polls `n` takes once (all `Pending`), counts the heap, then inserts
    /// their values and checks that each take returns its own.
    fn wait_and_serve(map: &Map, n: usize, cx: &mut Context<'_>, base_used: usize) -> Waiting {
        let mut takes: [Take<'_, u8, u32, FixedState, u8, CsLock>; MAX_WAITERS] =
            core::array::from_fn(|i| map.take(&KEYS[i]));
        for t in &mut takes[..n] {
            check(Pin::new(t).poll(cx).is_pending(), "a take resolved early");
        }
        check(map.waiters() == n, "waiters() != N");
        let stats = heap::stats(false);
        let used = heap::allocator_used() - base_used;
        for k in &KEYS[..n] {
            map.insert(*k, u32::from(*k) + 1);
        }
        for (t, k) in takes[..n].iter_mut().zip(&KEYS) {
            let got = Pin::new(t).poll(cx);
            check(got == Poll::Ready(Ok(u32::from(*k) + 1)), "wrong value");
        }
        check(
            map.is_empty() && map.waiters() == 0,
            "map not empty after the takes",
        );
        Waiting {
            stats,
            used,
            calls: heap::stats(false).calls,
        }
    }

    pub(super) fn after_reserve() {
        let s = heap::stats(true);
        report!(
            "awaitmap: static MAP after reserve(8, 8): heap {} B requested in {} allocations, allocator used {} B",
            s.live,
            s.calls,
            heap::allocator_used(),
        );
    }

    pub(super) fn after_job() {
        let s = heap::stats(false);
        report!(
            "awaitmap: during the job: {} allocations, heap peak {} B, live at the end {} B",
            s.calls,
            s.peak,
            s.live,
        );
        check(s.calls == 0, "the job allocated after reserve(8, 8)");
        check(MAP.is_empty() && MAP.waiters() == 0, "map not empty");
    }
}
