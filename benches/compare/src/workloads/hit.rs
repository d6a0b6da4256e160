//! W1, hit: a lookup of a present key that returns a clone of its value.
//! One operation = one lookup. 1,024 keys are present; the lookups cycle
//! through them.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::hint::black_box;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use awaitmap::AwaitMap;
use quick_cache::UnitWeighter;
use quick_cache::sync::{Cache, DefaultLifecycle};
use waitmap::WaitMap;

use crate::harness::{Meter, cx, fixed};
use crate::peers::{Floor, WaitKey};

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

/// One lookup of a present key, returning a clone. Every peer implements it
/// with `#[inline(always)]`, and the measured loop calls it through the one
/// out-of-line [`one_lookup`], so every peer pays the same call and none is
/// helped or hurt by the compiler's choice to inline it into the loop.
trait Lookup<V> {
    fn lookup(&mut self, k: u64) -> Option<V>;
}

/// Runs `l` on present keys, `WARM` times untimed, then `iters` times
/// measured. The returned clone is handed to `black_box` and then dropped,
/// so its drop counts as part of the operation.
fn hit_loop<V, L: Lookup<V>>(iters: u64, m: &mut Meter, mut l: L) {
    for i in 0..WARM {
        assert!(one_lookup(&mut l, i % PRESENT).is_some());
    }
    m.start();
    for i in 0..iters {
        let k = black_box(i % PRESENT);
        assert!(black_box(one_lookup(&mut l, k)).is_some());
    }
    m.stop(iters);
}

#[inline(never)]
fn one_lookup<V, L: Lookup<V>>(l: &mut L, k: u64) -> Option<V> {
    l.lookup(k)
}

type Fixed = foldhash::fast::FixedState;

fn awaitmap_filled<V: Val>() -> AwaitMap<u64, V, Fixed> {
    let map = AwaitMap::with_hasher(fixed());
    for k in 0..PRESENT {
        map.insert(k, V::make(k));
    }
    map
}

struct AwaitGet<'a, V> {
    map: &'a AwaitMap<u64, V, Fixed>,
    cx: Context<'static>,
}

impl<V: Val> Lookup<V> for AwaitGet<'_, V> {
    #[inline(always)]
    fn lookup(&mut self, k: u64) -> Option<V> {
        let mut f = self.map.get(&k);
        match Pin::new(&mut f).poll(&mut self.cx) {
            Poll::Ready(Ok(v)) => Some(v),
            _ => None,
        }
    }
}

/// `map.get(&k)` polled once: `Ready` at once.
pub fn awaitmap_get<V: Val>(iters: u64, m: &mut Meter) {
    let map = awaitmap_filled::<V>();
    let cx = cx();
    hit_loop(iters, m, AwaitGet { map: &map, cx });
}

struct AwaitTryGet<'a, V>(&'a AwaitMap<u64, V, Fixed>);

impl<V: Val> Lookup<V> for AwaitTryGet<'_, V> {
    #[inline(always)]
    fn lookup(&mut self, k: u64) -> Option<V> {
        self.0.try_get(&k)
    }
}

pub fn awaitmap_try_get<V: Val>(iters: u64, m: &mut Meter) {
    let map = awaitmap_filled::<V>();
    hit_loop(iters, m, AwaitTryGet(&map));
}

struct MutexMap<'a, V, S>(&'a Mutex<HashMap<u64, V, S>>);

impl<V: Val, S: BuildHasher> Lookup<V> for MutexMap<'_, V, S> {
    #[inline(always)]
    fn lookup(&mut self, k: u64) -> Option<V> {
        self.0.lock().unwrap().get(&k).cloned()
    }
}

/// `Mutex<HashMap<u64, V>>`, lock + lookup + clone, with std's SipHash.
pub fn mutex_std_sip<V: Val>(iters: u64, m: &mut Meter) {
    let map = Mutex::new(HashMap::with_hasher(RandomState::new()));
    for k in 0..PRESENT {
        map.lock().unwrap().insert(k, V::make(k));
    }
    hit_loop(iters, m, MutexMap(&map));
}

/// The same with a fixed-seed foldhash.
pub fn mutex_std_fold<V: Val>(iters: u64, m: &mut Meter) {
    let map = Mutex::new(HashMap::with_hasher(fixed()));
    for k in 0..PRESENT {
        map.lock().unwrap().insert(k, V::make(k));
    }
    hit_loop(iters, m, MutexMap(&map));
}

struct FloorLookup<'a, V>(&'a Floor<V, Fixed>);

impl<V: Val> Lookup<V> for FloorLookup<'_, V> {
    #[inline(always)]
    fn lookup(&mut self, k: u64) -> Option<V> {
        self.0.get(k)
    }
}

pub fn floor<V: Val>(iters: u64, m: &mut Meter) {
    let map = Floor::new(fixed());
    for k in 0..PRESENT {
        map.insert(k, V::make(k));
    }
    hit_loop(iters, m, FloorLookup(&map));
}

type QuickCache<V> = Cache<u64, V, UnitWeighter, Fixed, DefaultLifecycle<u64, V>>;

struct QuickLookup<'a, V: Val>(&'a QuickCache<V>);

impl<V: Val> Lookup<V> for QuickLookup<'_, V> {
    #[inline(always)]
    fn lookup(&mut self, k: u64) -> Option<V> {
        self.0.get(&k)
    }
}

/// quick_cache's `Cache::get` (sharded, a read lock per shard), sized so
/// nothing is evicted.
pub fn quick_cache<V: Val>(iters: u64, m: &mut Meter) {
    let cap = 2 * PRESENT as usize;
    let cache: QuickCache<V> = Cache::with(
        cap,
        cap as u64,
        UnitWeighter,
        fixed(),
        DefaultLifecycle::default(),
    );
    for k in 0..PRESENT {
        cache.insert(k, V::make(k));
    }
    hit_loop(iters, m, QuickLookup(&cache));
}

type Waitmap<V> = WaitMap<WaitKey, V, Fixed>;

fn waitmap_filled<V: Val>() -> Waitmap<V> {
    let map = WaitMap::with_hasher(fixed());
    for k in 0..PRESENT {
        map.insert(WaitKey(k), V::make(k));
    }
    map
}

struct WaitmapWait<'a, V> {
    map: &'a Waitmap<V>,
    cx: Context<'static>,
}

impl<V: Val> Lookup<V> for WaitmapWait<'_, V> {
    #[inline(always)]
    fn lookup(&mut self, k: u64) -> Option<V> {
        let mut f = self.map.wait(&k);
        match Pin::new(&mut f).poll(&mut self.cx) {
            // The `Ref` holds the shard's read lock: clone out, drop it here.
            Poll::Ready(Some(r)) => Some(r.value().clone()),
            _ => None,
        }
    }
}

/// waitmap's `wait(&k)` polled once: `Ready` at once with a `Ref` guard.
pub fn waitmap_wait<V: Val>(iters: u64, m: &mut Meter) {
    let map = waitmap_filled::<V>();
    let cx = cx();
    hit_loop(iters, m, WaitmapWait { map: &map, cx });
}

struct WaitmapGet<'a, V>(&'a Waitmap<V>);

impl<V: Val> Lookup<V> for WaitmapGet<'_, V> {
    #[inline(always)]
    fn lookup(&mut self, k: u64) -> Option<V> {
        self.0.get(&k).map(|r| r.value().clone())
    }
}

/// waitmap's synchronous `get`, cloning out of the `Ref` guard.
pub fn waitmap_get<V: Val>(iters: u64, m: &mut Meter) {
    let map = waitmap_filled::<V>();
    hit_loop(iters, m, WaitmapGet(&map));
}
