//! W2, miss → insert → ready: a `get` of an absent key is polled (`Pending`),
//! a producer inserts the key, the `get` is polled again (`Ready`), and the
//! key is removed to keep the map small. Distinct keys. One operation = one
//! such cycle.

use std::future::Future;
use std::hash::RandomState;
use std::hint::black_box;
use std::pin::Pin;
use std::task::Poll;

use awaitmap::AwaitMap;

use crate::harness::{Meter, cx, fixed};
use crate::peers::WakerListMap;

const WARM: u64 = 4096;

fn miss_loop(iters: u64, m: &mut Meter, mut cycle: impl FnMut(u64)) {
    // Keys far from those of the other workloads; each cycle its own.
    let mut key = 1_u64 << 40;
    for _ in 0..WARM {
        cycle(key);
        key += 1;
    }
    m.start();
    for _ in 0..iters {
        cycle(black_box(key));
        key += 1;
    }
    m.stop(iters);
}

pub fn awaitmap(iters: u64, m: &mut Meter) {
    let map: AwaitMap<u64, u64, _> = AwaitMap::with_hasher(fixed());
    let mut cx = cx();
    miss_loop(iters, m, |k| {
        let mut f = map.get(&k);
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        map.insert(k, k);
        match Pin::new(&mut f).poll(&mut cx) {
            Poll::Ready(Ok(v)) => assert_eq!(black_box(v), k),
            _ => panic!("not ready after insert"),
        }
        drop(f);
        assert!(map.remove(&k).is_some());
    });
}

fn hand_written<S: std::hash::BuildHasher>(iters: u64, m: &mut Meter, hasher: S) {
    let map = WakerListMap::new(hasher);
    let mut cx = cx();
    miss_loop(iters, m, |k| {
        let mut f = map.get(k);
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        map.insert(k, k);
        match Pin::new(&mut f).poll(&mut cx) {
            Poll::Ready(v) => assert_eq!(black_box(v), k),
            Poll::Pending => panic!("not ready after insert"),
        }
        assert!(map.remove(k).is_some());
    });
}

pub fn hand_sip(iters: u64, m: &mut Meter) {
    hand_written(iters, m, RandomState::new());
}

pub fn hand_fold(iters: u64, m: &mut Meter) {
    hand_written(iters, m, fixed());
}
