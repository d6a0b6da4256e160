//! W3, RPC take with N requests in flight: register N waits on N distinct
//! request ids (each polled once: `Pending`), answer them in a shuffled
//! (fixed-seed) order, then poll each (`Ready`). One operation = one request.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::hint::black_box;
use std::pin::Pin;
use std::task::Poll;

use awaitmap::AwaitMap;
use maitake_sync::WaitMap;
use maitake_sync::blocking::{DefaultMutex, ScopedRawMutex};
use maitake_sync::spin::Spinlock;
use maitake_sync::wait_map::{Wait, WakeOutcome};
use tokio::sync::oneshot;

use crate::harness::{Meter, batches, chunk, cx, fixed, keys, shuffled};
use crate::peers::{Lock, OneshotMap, WaitKey};

/// Warm-up: at least two batches and at least 4,096 requests.
fn warm_batches(n: usize) -> u64 {
    (4096 / n as u64).max(2)
}

/// Runs `batch(b)` for the warm-up batches, then for enough measured
/// batches to cover `iters` requests.
fn batch_loop(n: usize, iters: u64, m: &mut Meter, mut batch: impl FnMut(u64)) {
    let warm = warm_batches(n);
    for b in 0..warm {
        batch(b);
    }
    let measured = batches(iters, n);
    m.start();
    for b in warm..warm + measured {
        batch(b);
    }
    m.stop(measured * n as u64);
}

pub fn awaitmap(n: usize, iters: u64, m: &mut Meter) {
    let map: AwaitMap<u64, u64, _> = AwaitMap::with_hasher(fixed());
    let ids = keys();
    let order = shuffled(n);
    let mut cx = cx();
    let mut futs = Vec::with_capacity(n);
    batch_loop(n, iters, m, |b| {
        let ids = chunk(&ids, n, b);
        futs.extend(ids.iter().map(|id| map.take(id)));
        for f in &mut futs {
            assert!(Pin::new(f).poll(&mut cx).is_pending());
        }
        for &i in &order {
            map.insert(ids[i], ids[i]);
        }
        for f in &mut futs {
            match Pin::new(f).poll(&mut cx) {
                Poll::Ready(Ok(v)) => {
                    black_box(v);
                }
                _ => panic!("not ready after the response"),
            }
        }
        futs.clear();
    });
}

/// The same round trip with a claim: `claim(id)` registers when the
/// request is sent, the first poll hands it the waker, the reader
/// `deliver`s each response, and the second poll receives it.
pub fn awaitmap_claim(n: usize, iters: u64, m: &mut Meter) {
    let map: AwaitMap<u64, u64, _> = AwaitMap::with_hasher(fixed());
    let ids = keys();
    let order = shuffled(n);
    let mut cx = cx();
    let mut futs = Vec::with_capacity(n);
    batch_loop(n, iters, m, |b| {
        let ids = chunk(&ids, n, b);
        futs.extend(ids.iter().map(|&id| map.claim(id)));
        for f in &mut futs {
            assert!(Pin::new(f).poll(&mut cx).is_pending());
        }
        for &i in &order {
            assert_eq!(map.deliver(ids[i], ids[i]), Ok(None));
        }
        for f in &mut futs {
            match Pin::new(f).poll(&mut cx) {
                Poll::Ready(Ok(v)) => {
                    black_box(v);
                }
                _ => panic!("not ready after the response"),
            }
        }
        futs.clear();
    });
}

fn oneshot_map<S, L>(n: usize, iters: u64, m: &mut Meter, hasher: S)
where
    S: BuildHasher,
    L: Lock<HashMap<u64, oneshot::Sender<u64>, S>>,
{
    let map = OneshotMap::<u64, S, L>::new(hasher);
    let ids = keys();
    let order = shuffled(n);
    let mut cx = cx();
    let mut rxs = Vec::with_capacity(n);
    batch_loop(n, iters, m, |b| {
        let ids = chunk(&ids, n, b);
        rxs.extend(ids.iter().map(|&id| map.register(id)));
        for rx in &mut rxs {
            assert!(Pin::new(rx).poll(&mut cx).is_pending());
        }
        for &i in &order {
            assert!(map.respond(ids[i], ids[i]));
        }
        for rx in &mut rxs {
            match Pin::new(rx).poll(&mut cx) {
                Poll::Ready(Ok(v)) => {
                    black_box(v);
                }
                _ => panic!("not ready after the response"),
            }
        }
        rxs.clear();
    });
}

pub fn oneshot_std_sip(n: usize, iters: u64, m: &mut Meter) {
    oneshot_map::<_, std::sync::Mutex<_>>(n, iters, m, RandomState::new());
}

pub fn oneshot_pl_sip(n: usize, iters: u64, m: &mut Meter) {
    oneshot_map::<_, parking_lot::Mutex<_>>(n, iters, m, RandomState::new());
}

pub fn oneshot_std_fold(n: usize, iters: u64, m: &mut Meter) {
    oneshot_map::<_, std::sync::Mutex<_>>(n, iters, m, fixed());
}

/// A reusable home for one pinned maitake future.
type Slot<'a, L> = Pin<Box<Option<Wait<'a, u64, u64, L>>>>;

/// maitake-sync's `WaitMap`: `wait(id)` polled once, `wake(&id, value)`,
/// polled again. Its futures are `!Unpin`; each lives in a box made once at
/// setup and refilled with `Pin::set`, so no allocation is charged to it.
fn maitake<L: ScopedRawMutex>(n: usize, iters: u64, m: &mut Meter, map: WaitMap<u64, u64, L>) {
    let ids = keys();
    let order = shuffled(n);
    let mut cx = cx();
    let mut slots: Vec<Slot<'_, L>> = (0..n).map(|_| Box::pin(None)).collect();
    batch_loop(n, iters, m, |b| {
        let ids = chunk(&ids, n, b);
        for (slot, &id) in slots.iter_mut().zip(ids) {
            slot.set(Some(map.wait(id)));
        }
        for slot in &mut slots {
            let f = slot.as_mut().as_pin_mut().unwrap();
            assert!(f.poll(&mut cx).is_pending());
        }
        for &i in &order {
            assert!(matches!(map.wake(&ids[i], ids[i]), WakeOutcome::Woke));
        }
        for slot in &mut slots {
            let f = slot.as_mut().as_pin_mut().unwrap();
            match f.poll(&mut cx) {
                Poll::Ready(Ok(v)) => {
                    black_box(v);
                }
                _ => panic!("not ready after the response"),
            }
            slot.set(None);
        }
    });
}

pub fn maitake_default(n: usize, iters: u64, m: &mut Meter) {
    maitake(n, iters, m, WaitMap::<u64, u64, DefaultMutex>::new());
}

pub fn maitake_spin(n: usize, iters: u64, m: &mut Meter) {
    maitake(n, iters, m, WaitMap::new_with_raw_mutex(Spinlock::new()));
}

/// waitmap 1.1: `wait(&id)` polled once, `insert(id, value)`, polled again;
/// the value is copied out of the `Ref` guard, which is dropped at once.
///
/// waitmap cannot remove a filled entry, and a `wait` on a filled key is
/// `Ready` at once, so ids cannot be reused: every request gets a fresh id
/// and the map grows by one entry per request (its table growth is part of
/// the figures). Its futures borrow their key, so the ids of the whole run
/// are made at setup.
pub fn waitmap(n: usize, iters: u64, m: &mut Meter) {
    let map = waitmap::WaitMap::<WaitKey, u64, _>::with_hasher(fixed());
    let total = (warm_batches(n) + batches(iters, n)) * n as u64;
    let ids: Vec<u64> = (0..total).map(|i| (1 << 44) + i).collect();
    let order = shuffled(n);
    let mut cx = cx();
    let mut futs = Vec::with_capacity(n);
    batch_loop(n, iters, m, |b| {
        let ids = &ids[b as usize * n..][..n];
        futs.extend(ids.iter().map(|id| map.wait(id)));
        for f in &mut futs {
            assert!(Pin::new(f).poll(&mut cx).is_pending());
        }
        for &i in &order {
            assert!(map.insert(WaitKey(ids[i]), ids[i]).is_none());
        }
        for f in &mut futs {
            match Pin::new(f).poll(&mut cx) {
                Poll::Ready(Some(r)) => {
                    black_box(*r.value());
                }
                _ => panic!("not ready after the response"),
            }
        }
        futs.clear();
    });
}
