//! W4, fan-out: M `get`s wait on one key (each polled once: `Pending`), one
//! insert wakes them all, each is polled (`Ready`), then the key is removed.
//! One operation = one waiter served.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::hint::black_box;
use std::pin::Pin;
use std::task::Poll;

use awaitmap::AwaitMap;
use quick_cache::UnitWeighter;
use quick_cache::sync::{Cache, DefaultLifecycle, GuardResult};
use tokio::sync::watch;

use crate::harness::{KEYSPACE, Meter, batches, cx, fixed, keys};
use crate::peers::{WaitKey, WakerListMap};

/// Warm-up: at least two rounds and at least 4,096 waiters.
fn warm_rounds(m_waiters: usize) -> u64 {
    (4096 / m_waiters as u64).max(2)
}

fn round_loop(m_waiters: usize, iters: u64, m: &mut Meter, mut round: impl FnMut(u64)) {
    let warm = warm_rounds(m_waiters);
    for r in 0..warm {
        round(r);
    }
    let measured = batches(iters, m_waiters);
    m.start();
    for r in warm..warm + measured {
        round(r);
    }
    m.stop(measured * m_waiters as u64);
}

pub fn awaitmap(m_waiters: usize, iters: u64, m: &mut Meter) {
    let map: AwaitMap<u64, u64, _> = AwaitMap::with_hasher(fixed());
    let keys = keys();
    let mut cx = cx();
    let mut futs = Vec::with_capacity(m_waiters);
    round_loop(m_waiters, iters, m, |r| {
        let key = &keys[r as usize % KEYSPACE];
        futs.extend((0..m_waiters).map(|_| map.get(key)));
        for f in &mut futs {
            assert!(Pin::new(f).poll(&mut cx).is_pending());
        }
        map.insert(*key, *key);
        for f in &mut futs {
            match Pin::new(f).poll(&mut cx) {
                Poll::Ready(Ok(v)) => {
                    black_box(v);
                }
                _ => panic!("not ready after the insert"),
            }
        }
        futs.clear();
        assert!(map.remove(key).is_some());
    });
}

/// The hand-written `Mutex<HashMap<u64, (Option<V>, Vec<Waker>)>>`: each
/// poll of a waiting `get` pushes a clone of its waker, the insert takes the
/// list and wakes each one after unlocking.
fn hand_written<S: BuildHasher>(m_waiters: usize, iters: u64, m: &mut Meter, hasher: S) {
    let map = WakerListMap::new(hasher);
    let keys = keys();
    let mut cx = cx();
    let mut futs = Vec::with_capacity(m_waiters);
    round_loop(m_waiters, iters, m, |r| {
        let key = keys[r as usize % KEYSPACE];
        futs.extend((0..m_waiters).map(|_| map.get(key)));
        for f in &mut futs {
            assert!(Pin::new(f).poll(&mut cx).is_pending());
        }
        map.insert(key, key);
        for f in &mut futs {
            match Pin::new(f).poll(&mut cx) {
                Poll::Ready(v) => {
                    black_box(v);
                }
                Poll::Pending => panic!("not ready after the insert"),
            }
        }
        futs.clear();
        assert!(map.remove(key).is_some());
    });
}

pub fn hand_sip(m_waiters: usize, iters: u64, m: &mut Meter) {
    hand_written(m_waiters, iters, m, RandomState::new());
}

pub fn hand_fold(m_waiters: usize, iters: u64, m: &mut Meter) {
    hand_written(m_waiters, iters, m, fixed());
}

/// A tokio `watch` channel standing for the one key (no map around it, so
/// this is a lower bound for a keyed version): M receivers each poll
/// `changed()` once, one `send` wakes them, each polls again and reads the
/// value. The receivers are made once at setup.
///
/// `changed()` futures are `!Unpin` and borrow their receiver mutably, so
/// they live in one pinned array per round (hence the constant `M`).
pub fn watch<const M: usize>(iters: u64, m: &mut Meter) {
    let (tx, rx) = watch::channel(0_u64);
    let mut rxs: [watch::Receiver<u64>; M] = std::array::from_fn(|_| rx.clone());
    drop(rx);
    let keys = keys();
    let mut cx = cx();
    round_loop(M, iters, m, |r| {
        let value = keys[r as usize % KEYSPACE];
        {
            let futs = std::pin::pin!(rxs.each_mut().map(|rx| rx.changed()));
            // SAFETY: the array is pinned and its elements are never moved
            // out of it; pinning each element in place is structural pinning.
            let futs = unsafe { futs.get_unchecked_mut() };
            for f in futs.iter_mut() {
                // SAFETY: see above; `f` stays in the pinned array until it
                // is dropped there.
                let f = unsafe { Pin::new_unchecked(f) };
                assert!(f.poll(&mut cx).is_pending());
            }
            tx.send(value).unwrap();
            for f in futs.iter_mut() {
                // SAFETY: as above.
                let f = unsafe { Pin::new_unchecked(f) };
                assert!(matches!(f.poll(&mut cx), Poll::Ready(Ok(()))));
            }
        }
        for rx in &rxs {
            black_box(*rx.borrow());
        }
    });
}

/// waitmap 1.1: M `wait(&key)` polled once, one `insert`, each polled again;
/// each copies the value out of its `Ref` guard and drops it at once.
///
/// waitmap has no `remove`, and a `wait` on a filled key is `Ready` at once,
/// so every round uses a fresh key and the map grows by one entry per round.
/// Its futures borrow their key, so the keys of the whole run are made at
/// setup.
pub fn waitmap(m_waiters: usize, iters: u64, m: &mut Meter) {
    let map = waitmap::WaitMap::<WaitKey, u64, _>::with_hasher(fixed());
    let rounds = warm_rounds(m_waiters) + batches(iters, m_waiters);
    let keys: Vec<u64> = (0..rounds).map(|r| (1 << 44) + r).collect();
    let mut cx = cx();
    let mut futs = Vec::with_capacity(m_waiters);
    round_loop(m_waiters, iters, m, |r| {
        let key = &keys[r as usize];
        futs.extend((0..m_waiters).map(|_| map.wait(key)));
        for f in &mut futs {
            assert!(Pin::new(f).poll(&mut cx).is_pending());
        }
        assert!(map.insert(WaitKey(*key), *key).is_none());
        for f in &mut futs {
            match Pin::new(f).poll(&mut cx) {
                Poll::Ready(Some(r)) => {
                    black_box(*r.value());
                }
                _ => panic!("not ready after the insert"),
            }
        }
        futs.clear();
    });
}

type QuickCache =
    Cache<u64, u64, UnitWeighter, foldhash::fast::FixedState, DefaultLifecycle<u64, u64>>;

/// quick_cache 0.7's placeholders: a producer takes the key's placeholder
/// guard (`get_value_or_guard` on the absent key returns it at once), M
/// `get_value_or_guard_async` futures are polled once (`Pending`: they join
/// the placeholder's waiters), the producer's `PlaceholderGuard::insert`
/// wakes them, each is polled again (`Ready(Ok(value))`), then the key is
/// removed. Its futures are `!Unpin`; each lives in a box made once at setup
/// and refilled with `Pin::set`, so no allocation is charged to it. No
/// runtime is needed.
pub fn quick_cache(m_waiters: usize, iters: u64, m: &mut Meter) {
    let cache: QuickCache = Cache::with(
        1024,
        1024,
        UnitWeighter,
        fixed(),
        DefaultLifecycle::default(),
    );
    let keys = keys();
    let mut cx = cx();
    let mut slots: Vec<Pin<Box<Option<_>>>> = (0..m_waiters).map(|_| Box::pin(None)).collect();
    round_loop(m_waiters, iters, m, |r| {
        let key = &keys[r as usize % KEYSPACE];
        let GuardResult::Guard(guard) = cache.get_value_or_guard(key, None) else {
            panic!("the key is absent, so the producer gets its placeholder");
        };
        for slot in &mut slots {
            slot.set(Some(cache.get_value_or_guard_async(key)));
        }
        for slot in &mut slots {
            let f = slot.as_mut().as_pin_mut().unwrap();
            assert!(f.poll(&mut cx).is_pending());
        }
        assert!(guard.insert(*key).is_ok());
        for slot in &mut slots {
            let f = slot.as_mut().as_pin_mut().unwrap();
            match f.poll(&mut cx) {
                Poll::Ready(Ok(v)) => {
                    black_box(v);
                }
                _ => panic!("not ready after the insert"),
            }
            slot.set(None);
        }
        assert!(cache.remove(key).is_some());
    });
}
