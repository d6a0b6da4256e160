//! The job with awaitmap's heap-free map: a `static FixedAwaitMap` with the
//! critical-section lock and room for 8 keys and 8 waiting futures; the
//! SysTick handler inserts each key's value, and the task `get`s, then
//! `take`s, the keys one after the other. Built without the `heap` feature:
//! no allocator is linked, and none could be (nothing in the image may
//! allocate, or the link fails).

#![no_std]
#![no_main]

use core::hint::black_box;
use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

use awaitmap::{CsLock, FixedAwaitMap};
use awaitmap_size::{self as fw, KEYS, value_for};
use cortex_m_rt::{entry, exception};

type Map = FixedAwaitMap<u8, u32, 8, 8, CsLock>;

static MAP: Map = FixedAwaitMap::new();

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
    #[cfg(feature = "report")]
    report::before_job();
    fw::start_ticks();
    let sum = fw::block_on(task());
    #[cfg(feature = "report")]
    report::after_job();
    fw::finish("fixed", sum)
}

#[exception]
fn SysTick() {
    let k = NEXT.load(Relaxed);
    // The map stores the value, so it does not matter whether the task waits
    // on `k` yet; a full map hands it back, to be tried again next tick.
    if k < KEYS && MAP.insert(k, value_for(k)).is_ok() {
        NEXT.store(k + 1, Relaxed);
    }
}

/// The `report` build: the sizes of the map, of one key slot and one waiter
/// slot, and of the futures on this target; then `N` takes waiting on `N`
/// keys, served.
#[cfg(feature = "report")]
mod report {
    use core::future::Future;
    use core::mem::size_of;
    use core::pin::Pin;
    use core::task::{Context, Poll, Waker};

    use awaitmap::{CsLock, FixedAwaitMap, FixedGet, FixedTake, WaitError};
    use awaitmap_size::{self as fw, report};

    use super::{MAP, Map};

    type Slots<const N: usize, const W: usize> = FixedAwaitMap<u8, u32, N, W, CsLock>;

    fn check(ok: bool, what: &str) {
        if !ok {
            report!("fixed: FAILED: {what}");
            fw::exit(false);
        }
    }

    pub(super) fn before_job() {
        let one = size_of::<Slots<1, 1>>();
        report!(
            "fixed: size_of FixedAwaitMap<u8, u32, 8, 8, CsLock> {} B: {} B per key slot, {} B per waiter slot, {} B besides",
            size_of::<Map>(),
            size_of::<Slots<2, 1>>() - one,
            size_of::<Slots<1, 2>>() - one,
            one - (size_of::<Slots<2, 1>>() - one) - (size_of::<Slots<1, 2>>() - one),
        );
        report!(
            "fixed: FixedGet {} B, FixedTake {} B, task future {} B",
            size_of::<FixedGet<'static, u8, u32, 8, 8, CsLock>>(),
            size_of::<FixedTake<'static, u8, u32, 8, 8, CsLock>>(),
            size_of_val(&super::task()),
        );
        // N takes on N keys in a fresh map: they fit up to its capacity, the
        // next one finds no room, and each gets its own value.
        let map: Map = FixedAwaitMap::new();
        let keys: [u8; 9] = core::array::from_fn(|i| i as u8);
        let mut cx = Context::from_waker(Waker::noop());
        let mut takes: [FixedTake<'_, u8, u32, 8, 8, CsLock>; 9] =
            core::array::from_fn(|i| map.take(&keys[i]));
        for t in &mut takes[..8] {
            check(
                Pin::new(t).poll(&mut cx).is_pending(),
                "a take resolved early",
            );
        }
        let ninth = Pin::new(&mut takes[8]).poll(&mut cx);
        check(
            ninth == Poll::Ready(Err(WaitError::NoRoom)),
            "a ninth wait found room",
        );
        for k in &keys[..8] {
            check(map.insert(*k, u32::from(*k) + 1).is_ok(), "insert refused");
        }
        for (t, k) in takes[..8].iter_mut().zip(&keys) {
            let got = Pin::new(t).poll(&mut cx);
            check(got == Poll::Ready(Ok(u32::from(*k) + 1)), "wrong value");
        }
        check(map.is_empty() && map.waiters() == 0, "map not empty");
        report!("fixed: 8 takes waited on 8 keys and got their values; a 9th got NoRoom");
    }

    pub(super) fn after_job() {
        check(MAP.is_empty() && MAP.waiters() == 0, "map not empty");
    }
}
