//! W5, cancel churn: create a wait, poll it once (`Pending`), drop it. On
//! distinct keys, and on one hot key. One operation = one such cycle.

use std::future::Future;
use std::hash::RandomState;
use std::hint::black_box;
use std::pin::{Pin, pin};

use awaitmap::AwaitMap;
use maitake_sync::WaitMap;

use crate::harness::{Meter, cx, fixed};
use crate::peers::{OneshotMap, WaitKey};

const WARM: u64 = 4096;
const HOT: u64 = 7;

fn churn_loop(iters: u64, m: &mut Meter, distinct: bool, mut cycle: impl FnMut(u64)) {
    let mut key = 1_u64 << 41;
    let mut next = || {
        if distinct {
            key += 1;
            key
        } else {
            HOT
        }
    };
    for _ in 0..WARM {
        cycle(next());
    }
    m.start();
    for _ in 0..iters {
        cycle(black_box(next()));
    }
    m.stop(iters);
}

pub fn awaitmap(distinct: bool, iters: u64, m: &mut Meter) {
    let map: AwaitMap<u64, u64, _> = AwaitMap::with_hasher(fixed());
    let mut cx = cx();
    churn_loop(iters, m, distinct, |k| {
        let mut f = map.get(&k);
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        drop(f);
    });
    assert_eq!(map.waiters(), 0);
}

/// The oneshot map: register, poll the receiver once, drop it, and remove
/// the sender (the caller's cleanup; without it the map grows forever).
pub fn oneshot_std_sip(distinct: bool, iters: u64, m: &mut Meter) {
    let map = OneshotMap::<u64, _, std::sync::Mutex<_>>::new(RandomState::new());
    let mut cx = cx();
    churn_loop(iters, m, distinct, |k| {
        let mut rx = map.register(k);
        assert!(Pin::new(&mut rx).poll(&mut cx).is_pending());
        drop(rx);
        map.forget(k);
    });
}

pub fn maitake_default(distinct: bool, iters: u64, m: &mut Meter) {
    let map: WaitMap<u64, u64> = WaitMap::new();
    let mut cx = cx();
    churn_loop(iters, m, distinct, |k| {
        let f = pin!(map.wait(k));
        assert!(f.poll(&mut cx).is_pending());
    });
}

/// waitmap 1.1: `wait(&k)` polled once, dropped. The drop only blanks the
/// future's waker slot: on distinct keys every cycle leaves a `Waiting`
/// entry behind, and on the hot key the entry's waker list grows by one
/// slot per cycle (a fresh future never reuses a blanked slot). Nothing is
/// cleaned up, so its memory grows with the run.
pub fn waitmap(distinct: bool, iters: u64, m: &mut Meter) {
    let map = waitmap::WaitMap::<WaitKey, u64, _>::with_hasher(fixed());
    let mut cx = cx();
    churn_loop(iters, m, distinct, |k| {
        let mut f = map.wait(&k);
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        drop(f);
    });
}
