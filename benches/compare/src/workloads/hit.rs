//! W1, hit: a lookup of a present key that returns a clone of its value.
//! One operation = one lookup. 1,024 keys are present; the lookups cycle
//! through them.

use std::collections::HashMap;
use std::future::Future;
use std::hash::RandomState;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use awaitmap::AwaitMap;
use quick_cache::UnitWeighter;
use quick_cache::sync::{Cache, DefaultLifecycle};

use crate::harness::{Meter, fixed, noop_cx};
use crate::peers::Floor;

const PRESENT: u64 = 1024;
const WARM: u64 = 4096;

/// The value types: `u64` (a trivial clone) and a 32-byte `Arc<[u8]>` (a
/// clone is an atomic increment, the drop an atomic decrement).
pub trait Val: Clone + 'static {
    fn make(k: u64) -> Self;
}

impl Val for u64 {
    fn make(k: u64) -> Self {
        k
    }
}

impl Val for Arc<[u8]> {
    fn make(k: u64) -> Self {
        Arc::from([k as u8; 32])
    }
}

/// Runs `lookup` on present keys, `WARM` times untimed, then `iters` times
/// measured. The returned clone is handed to `black_box` and then dropped,
/// so its drop counts as part of the operation.
fn hit_loop<V>(iters: u64, m: &mut Meter, mut lookup: impl FnMut(u64) -> Option<V>) {
    for i in 0..WARM {
        assert!(lookup(i % PRESENT).is_some());
    }
    m.start();
    for i in 0..iters {
        let k = black_box(i % PRESENT);
        assert!(black_box(one_lookup(&mut lookup, k)).is_some());
    }
    m.stop(iters);
}

/// One lookup, as one out-of-line call for every peer alike, so that the
/// compiler's choice to inline a small lookup into the loop (and not a larger
/// one) does not skew the comparison.
#[inline(never)]
fn one_lookup<V>(lookup: &mut impl FnMut(u64) -> Option<V>, k: u64) -> Option<V> {
    lookup(k)
}

fn awaitmap_filled<V: Val>() -> AwaitMap<u64, V, foldhash::fast::FixedState> {
    let map = AwaitMap::with_hasher(fixed());
    for k in 0..PRESENT {
        map.insert(k, V::make(k));
    }
    map
}

/// `map.get(&k)` polled once: `Ready` at once.
pub fn awaitmap_get<V: Val>(iters: u64, m: &mut Meter) {
    let map = awaitmap_filled::<V>();
    let mut cx = noop_cx();
    hit_loop(iters, m, |k| {
        let mut f = map.get(&k);
        match Pin::new(&mut f).poll(&mut cx) {
            Poll::Ready(Ok(v)) => Some(v),
            _ => None,
        }
    });
}

pub fn awaitmap_try_get<V: Val>(iters: u64, m: &mut Meter) {
    let map = awaitmap_filled::<V>();
    hit_loop(iters, m, |k| map.try_get(&k));
}

/// `Mutex<HashMap<u64, V>>`, lock + lookup + clone, with std's SipHash.
pub fn mutex_std_sip<V: Val>(iters: u64, m: &mut Meter) {
    let map = Mutex::new(HashMap::with_hasher(RandomState::new()));
    for k in 0..PRESENT {
        map.lock().unwrap().insert(k, V::make(k));
    }
    hit_loop(iters, m, |k| map.lock().unwrap().get(&k).cloned());
}

/// The same with a fixed-seed foldhash.
pub fn mutex_std_fold<V: Val>(iters: u64, m: &mut Meter) {
    let map = Mutex::new(HashMap::with_hasher(fixed()));
    for k in 0..PRESENT {
        map.lock().unwrap().insert(k, V::make(k));
    }
    hit_loop(iters, m, |k| map.lock().unwrap().get(&k).cloned());
}

pub fn floor<V: Val>(iters: u64, m: &mut Meter) {
    let map = Floor::new(fixed());
    for k in 0..PRESENT {
        map.insert(k, V::make(k));
    }
    hit_loop(iters, m, |k| map.get(k));
}

/// quick_cache's `Cache::get` (sharded, a read lock per shard), sized so
/// nothing is evicted.
pub fn quick_cache<V: Val>(iters: u64, m: &mut Meter) {
    let cap = 2 * PRESENT as usize;
    let cache: Cache<u64, V, UnitWeighter, _, DefaultLifecycle<u64, V>> = Cache::with(
        cap,
        cap as u64,
        UnitWeighter,
        fixed(),
        DefaultLifecycle::default(),
    );
    for k in 0..PRESENT {
        cache.insert(k, V::make(k));
    }
    hit_loop(iters, m, |k| cache.get(&k));
}
