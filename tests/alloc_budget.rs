//! The allocation budget: a waiter that leaves frees its state (guarantee 5),
//! the workloads `benches/compare/` measures (W1 hit, W2 miss → insert →
//! ready, W3 RPC takes, W4 fan-out, W5 churn) allocate nothing once warmed up,
//! and every key and value is dropped exactly once. A regression fails here,
//! in the plain test suite, without valgrind.
//!
//! This file is its own test binary, so it installs a counting global
//! allocator. The counters are thread-local and count only on threads that
//! switched them on, so the tests (and the harness) running on other threads
//! do not disturb a measurement.
#![allow(unsafe_code)] // the counting `GlobalAlloc`

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::task::Poll;

use awaitmap::{AwaitMap, TakeOwned, WaitError};
use common::{Tracked, counting_waker, live, live_counter, poll_once};
use foldhash::SharedSeed;
use foldhash::fast::SeedableRandomState;

// ---------------------------------------------------------------------------
// The counting allocator.
// ---------------------------------------------------------------------------

/// What this thread allocated since it switched counting on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    /// Calls to `alloc`, `alloc_zeroed` and `realloc`.
    allocs: u64,
    /// Bytes allocated minus bytes freed.
    live: i64,
}

thread_local! {
    /// `None` while this thread does not count. Const-initialised and without
    /// a destructor, so the allocator can use it without allocating.
    static COUNTS: Cell<Option<Counts>> = const { Cell::new(None) };
}

fn record(allocs: u64, bytes: i64) {
    let _ = COUNTS.try_with(|c| {
        if let Some(mut counts) = c.get() {
            counts.allocs += allocs;
            counts.live += bytes;
            c.set(Some(counts));
        }
    });
}

struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, and only adds bookkeeping that neither allocates nor unwinds.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            record(1, layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            record(1, layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (so from `System`) with
        // `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        record(0, -(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            record(1, new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Switches counting on for this thread (each test runs on its own thread).
/// Checks the counter sees an allocation, so a zero is a real zero.
fn start_counting() {
    COUNTS.set(Some(Counts::default()));
    let ((), c) = measure(|| drop(std::hint::black_box(Box::new(1_u64))));
    assert_eq!(
        (c.allocs, c.live),
        (1, 0),
        "the counting allocator is not counting"
    );
}

fn counts() -> Counts {
    COUNTS.get().expect("counting is on for this thread")
}

/// Runs `f` and returns what it allocated.
fn measure<R>(f: impl FnOnce() -> R) -> (R, Counts) {
    let before = counts();
    let r = f();
    let after = counts();
    let delta = Counts {
        allocs: after.allocs - before.allocs,
        live: after.live - before.live,
    };
    (r, delta)
}

/// Scales a loop count down under miri, and divides it by
/// `ALLOC_BUDGET_DIVISOR` if that is set (mutation testing runs the suite
/// once per mutant, and the long loops here dominate its time); never below
/// 1,000 iterations then, enough to see memory grow.
fn scaled(n: u64) -> u64 {
    if cfg!(miri) {
        return n.min(200);
    }
    let divisor = std::env::var("ALLOC_BUDGET_DIVISOR")
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .filter(|&d| d > 1);
    match divisor {
        Some(d) => (n / d).max(n.min(1_000)),
        None => n,
    }
}

type Map = AwaitMap<u64, u64>;

// Performance floor "hit" (W1): `get` polled once and `try_get` of present
// keys, with a value whose clone is trivial and one whose clone is not (an
// `Arc`), allocate nothing and leave memory flat.
#[test]
fn hits_allocate_nothing() {
    start_counting();
    let map = Map::new();
    let shared: AwaitMap<u64, Arc<[u8]>> = AwaitMap::new();
    for k in 0..1_024 {
        map.insert(k, k + 1);
        shared.insert(k, Arc::from([k as u8; 32]));
    }
    let (wc, w) = counting_waker();
    let n = scaled(100_000);
    let ((), hits) = measure(|| {
        for i in 0..n {
            let k = i % 1_024;
            let mut f = map.get(&k);
            assert_eq!(poll_once(&mut f, &w), Poll::Ready(Ok(k + 1)));
            assert_eq!(map.try_get(&k), Some(k + 1));
            let mut f = shared.get(&k);
            let Poll::Ready(Ok(v)) = poll_once(&mut f, &w) else {
                panic!("a present key was not ready at once");
            };
            assert_eq!(v[0], k as u8);
            assert!(shared.try_get(&k).is_some());
        }
    });
    eprintln!("hit, {n} x (2 get + 2 try_get): {hits:?}");
    assert_eq!(hits, Counts::default(), "hits: allocations / live bytes");
    assert_eq!(wc.wakes(), 0);
    assert_eq!(map.waiters() + shared.waiters(), 0);
}

// `reserve` makes room up front: on a fresh map, new keys inserted (as an
// interrupt handler would) and futures registering on other new keys
// allocate nothing, and neither do the wake-ups.
#[test]
fn reserve_makes_room_for_new_keys_and_waiters_up_front() {
    start_counting();
    let map = Map::new();
    let (wc, w) = counting_waker();
    let keys = scaled(500);
    // The futures' own storage, made before the measurement.
    let ids: Vec<u64> = (keys..2 * keys).collect();
    let mut futs = Vec::with_capacity(ids.len());
    let ((), reserving) = measure(|| map.reserve(2 * keys as usize, keys as usize));
    assert!(
        reserving.allocs > 0,
        "reserve allocated the room it promised"
    );
    let ((), used) = measure(|| {
        for k in 0..keys {
            assert_eq!(map.insert(k, k), None);
        }
        futs.extend(ids.iter().map(|id| map.take(id)));
        for f in &mut futs {
            assert!(poll_once(f, &w).is_pending());
        }
        for id in &ids {
            map.insert(*id, *id);
        }
    });
    assert_eq!(
        used.allocs, 0,
        "{keys} inserts and {keys} waiters within the reserved room allocated"
    );
    assert_eq!(wc.wakes(), keys as usize);
    for (f, id) in futs.iter_mut().zip(&ids) {
        assert_eq!(poll_once(f, &w), Poll::Ready(Ok(*id)));
    }
    assert_eq!(map.len(), keys as usize);
}

// `with_capacity(n)`: room for n keys before the table grows, so n inserts
// of new keys allocate nothing (and one more key beyond a full table does).
#[test]
fn with_capacity_holds_that_many_keys_without_allocating() {
    start_counting();
    let n = scaled(1000);
    let (map, made) = measure(|| Map::with_capacity(n as usize));
    assert!(
        made.allocs > 0,
        "with_capacity allocated the room it promised"
    );
    let ((), filled) = measure(|| {
        for k in 0..n {
            assert_eq!(map.insert(k, k), None);
        }
    });
    assert_eq!(filled.allocs, 0, "{n} keys within the capacity allocated");
    assert_eq!(map.len(), n as usize);
}

// `reserve`'s waiters: many futures waiting on one key (beyond the one kept
// in its entry) fit in the reserved room, and so do their wake-ups.
#[test]
fn reserve_makes_room_for_many_waiters_on_one_key() {
    start_counting();
    let map = Map::new();
    let (wc, w) = counting_waker();
    let waiters = scaled(300) as usize;
    let mut gets = Vec::with_capacity(waiters / 2);
    let mut takes = Vec::with_capacity(waiters - waiters / 2);
    let ((), reserving) = measure(|| map.reserve(1, waiters));
    assert!(
        reserving.allocs > 0,
        "reserve allocated the room it promised"
    );
    let ((), used) = measure(|| {
        gets.extend((0..waiters / 2).map(|_| map.get(&7)));
        takes.extend((0..waiters - waiters / 2).map(|_| map.take(&7)));
        for f in &mut gets {
            assert!(poll_once(f, &w).is_pending());
        }
        for f in &mut takes {
            assert!(poll_once(f, &w).is_pending());
        }
        assert_eq!(map.waiters(), waiters);
        assert_eq!(map.insert(7, 70), None);
    });
    assert_eq!(
        used.allocs, 0,
        "{waiters} waiters on one key within the reserved room allocated"
    );
    // Every get and the first take were woken.
    assert_eq!(wc.wakes(), waiters / 2 + 1);
    for f in &mut gets {
        assert_eq!(poll_once(f, &w), Poll::Ready(Ok(70)));
    }
    assert_eq!(poll_once(&mut takes[0], &w), Poll::Ready(Ok(70)));
}

// ---------------------------------------------------------------------------
// Guarantee 5: waiting and leaving frees the key's waiting state.
// ---------------------------------------------------------------------------

// Guarantee 5: futures that wait and are dropped, one per key, on a million
// distinct keys, leave memory exactly where it was after warm-up and allocate
// nothing.
#[test]
fn waiting_and_dropping_on_a_million_keys_leaves_memory_flat() {
    start_counting();
    let map = Map::new();
    let (_, w) = counting_waker();
    let churn = |from: u64, n: u64, take: bool| {
        for k in from..from + n {
            if take {
                let mut f = map.take(&k);
                assert!(poll_once(&mut f, &w).is_pending());
            } else {
                let mut f = map.get(&k);
                assert!(poll_once(&mut f, &w).is_pending());
            }
        }
    };
    churn(0, scaled(1_000), false);
    churn(0, scaled(1_000), true);
    let n = scaled(1_000_000);
    let ((), gets) = measure(|| churn(1_000, n, false));
    let ((), takes) = measure(|| churn(1_000 + n, n, true));
    eprintln!("wait+drop, {n} gets: {gets:?}; {n} takes: {takes:?}");
    assert_eq!(
        gets,
        Counts::default(),
        "get: allocations / live bytes after {n} keys"
    );
    assert_eq!(
        takes,
        Counts::default(),
        "take: allocations / live bytes after {n} keys"
    );
    assert_eq!(map.waiters(), 0);
    assert!(map.is_empty());
}

// Guarantee 5 (with 8): the same churn, each future failed by `cancel`
// instead of dropped, leaves memory flat and allocates nothing.
#[test]
fn waiting_and_cancelling_on_distinct_keys_leaves_memory_flat() {
    start_counting();
    let map = Map::new();
    let (_, w) = counting_waker();
    let churn = |from: u64, n: u64, take: bool| {
        for k in from..from + n {
            let r = if take {
                let mut f = map.take(&k);
                assert!(poll_once(&mut f, &w).is_pending());
                assert_eq!(map.cancel(&k), 1);
                poll_once(&mut f, &w)
            } else {
                let mut f = map.get(&k);
                assert!(poll_once(&mut f, &w).is_pending());
                assert_eq!(map.cancel(&k), 1);
                poll_once(&mut f, &w)
            };
            assert_eq!(r, Poll::Ready(Err(WaitError::Cancelled)));
        }
    };
    churn(0, scaled(1_000), false);
    churn(0, scaled(1_000), true);
    let n = scaled(250_000);
    let ((), gets) = measure(|| churn(1_000, n, false));
    let ((), takes) = measure(|| churn(1_000 + n, n, true));
    eprintln!("wait+cancel, {n} gets: {gets:?}; {n} takes: {takes:?}");
    assert_eq!(
        gets,
        Counts::default(),
        "get: allocations / live bytes after {n} keys"
    );
    assert_eq!(
        takes,
        Counts::default(),
        "take: allocations / live bytes after {n} keys"
    );
    assert_eq!(map.waiters(), 0);
    assert!(map.is_empty());
}

// ---------------------------------------------------------------------------
// Performance floor: zero allocations on the hot paths after warm-up.
// ---------------------------------------------------------------------------

// Guarantee 5 (performance floor "miss → insert → ready"): a take or get
// that waits, is filled by an insert and resolves, on distinct keys,
// allocates nothing after warm-up and leaves memory flat.
#[test]
fn miss_insert_ready_cycles_allocate_nothing_after_warm_up() {
    start_counting();
    let map = Map::new();
    let (wc, w) = counting_waker();
    let rpc = |from: u64, n: u64| {
        for k in from..from + n {
            let mut f = map.take(&k);
            assert!(poll_once(&mut f, &w).is_pending());
            assert_eq!(map.insert(k, k + 1), None);
            assert_eq!(poll_once(&mut f, &w), Poll::Ready(Ok(k + 1)));
        }
    };
    let fill = |from: u64, n: u64| {
        for k in from..from + n {
            let mut f = map.get(&k);
            assert!(poll_once(&mut f, &w).is_pending());
            assert_eq!(map.insert(k, k + 1), None);
            assert_eq!(poll_once(&mut f, &w), Poll::Ready(Ok(k + 1)));
            assert_eq!(map.remove(&k), Some(k + 1));
        }
    };
    rpc(0, scaled(1_000));
    fill(0, scaled(1_000));
    let n = scaled(250_000);
    let wakes = wc.wakes();
    let ((), takes) = measure(|| rpc(1_000, n));
    let ((), gets) = measure(|| fill(1_000 + n, n));
    assert_eq!(wc.wakes() - wakes, 2 * n as usize, "one wake-up per cycle");
    eprintln!("miss->insert->ready, {n} takes: {takes:?}; {n} gets (+remove): {gets:?}");
    assert_eq!(
        takes,
        Counts::default(),
        "take cycles: allocations / live bytes"
    );
    assert_eq!(
        gets,
        Counts::default(),
        "get cycles: allocations / live bytes"
    );
    assert!(map.is_empty());
}

/// Four measured rounds of `n` takes in flight on `map` after one round of
/// warm-up: every take registers, the values come in a shuffled order, and
/// every take resolves. Returns what the measured rounds allocated.
fn rpc_rounds<S: BuildHasher + Clone>(map: &Arc<AwaitMap<u64, u64, S>>, n: usize) -> Counts {
    let (_, w) = counting_waker();
    let mut futs: Vec<TakeOwned<u64, u64, S>> = Vec::with_capacity(n);
    // A fixed permutation of 0..n (n is a power of two: odd stride).
    let order: Vec<u64> = (0..n as u64)
        .map(|i| (i * 2_654_435_761) % n as u64)
        .collect();
    let mut round = |base: u64| {
        for i in 0..n as u64 {
            futs.push(map.take_owned(&(base + i)));
        }
        for f in &mut futs {
            assert!(poll_once(f, &w).is_pending());
        }
        for &i in &order {
            assert_eq!(map.insert(base + i, i), None);
        }
        for (i, f) in futs.iter_mut().enumerate() {
            assert_eq!(poll_once(f, &w), Poll::Ready(Ok(i as u64)));
        }
        futs.clear();
    };
    round(0);
    let ((), c) = measure(|| {
        for r in 1..=4 {
            round(r * n as u64);
        }
    });
    assert!(map.is_empty());
    assert_eq!(map.waiters(), 0);
    c
}

// Performance floor "RPC take": N takes waiting at once, filled in a shuffled
// order, allocate nothing once the map has seen N in flight. Each map has
// its own random hasher seed: several maps per N.
#[test]
fn rpc_takes_in_flight_allocate_nothing_after_warm_up() {
    start_counting();
    let maps = |n: usize| match n {
        _ if cfg!(miri) => 1,
        0..=256 => 8,
        _ => 2,
    };
    for n in [1_usize, 16, 256, 4096] {
        // Powers of two, so the stride in `rpc_rounds` permutes `0..n`.
        let n = if cfg!(miri) { n.min(64) } else { n };
        for _ in 0..maps(n) {
            let c = rpc_rounds(&Arc::new(Map::new()), n);
            eprintln!("rpc, {n} in flight, 4 rounds: {c:?}");
            assert_eq!(c, Counts::default(), "{n} takes in flight");
        }
    }
}

/// SplitMix64's output function: spreads small numbers over 64 bits.
fn spread(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// The same rounds under hasher seeds that, for these keys, cluster the
// entries, so removing them leaves tombstones that eat into the table's
// room for new entries. Once the table kept the tombstones of one round
// into the next, and a few rounds on it allocated a table twice the size
// for the same number of keys; an emptied table now gets its room back.
#[test]
fn rpc_rounds_on_a_hasher_that_clusters_the_keys_allocate_nothing() {
    static SHARED: SharedSeed = SharedSeed::from_u64(0);
    start_counting();
    for (n, seeds) in [(16_usize, [0, 80]), (256, [144, 160]), (4096, [152, 168])] {
        if cfg!(miri) && n > 16 {
            continue;
        }
        for seed in seeds {
            let hasher = SeedableRandomState::with_seed(spread(seed), &SHARED);
            let c = rpc_rounds(&Arc::new(AwaitMap::with_hasher(hasher)), n);
            assert_eq!(c, Counts::default(), "{n} takes in flight, seed {seed}");
        }
    }
}

// Performance floor "fan-out": one insert waking M waiting gets allocates
// nothing (the shared waker's clones only bump a reference count), and
// neither do the registrations and polls once the map has seen M waiters.
#[test]
fn fan_out_insert_allocates_nothing() {
    start_counting();
    const KEY: u64 = 7;
    for m in [1_usize, 8, 64, 512] {
        let map = Map::new();
        let (wc, w) = counting_waker();
        let mut futs = Vec::with_capacity(m);
        let mut round = |value: u64| {
            let ((), register) = measure(|| {
                futs.extend((0..m).map(|_| map.get(&KEY)));
                for f in &mut futs {
                    assert!(poll_once(f, &w).is_pending());
                }
            });
            let wakes = wc.wakes();
            let (old, insert) = measure(|| map.insert(KEY, value));
            assert_eq!(old, None);
            assert_eq!(wc.wakes() - wakes, m, "each waiter woken once");
            let ((), polls) = measure(|| {
                for f in &mut futs {
                    assert_eq!(poll_once(f, &w), Poll::Ready(Ok(value)));
                }
                futs.clear();
            });
            assert_eq!(map.remove(&KEY), Some(value));
            (register, insert, polls)
        };
        let (warm_register, warm_insert, _) = round(1);
        let (register, insert, polls) = round(2);
        eprintln!(
            "fan-out M={m}: first round register {warm_register:?} insert {warm_insert:?}; \
             then register {register:?} insert {insert:?} polls {polls:?}"
        );
        assert_eq!(
            warm_insert.allocs, 0,
            "M={m}: the insert that wakes allocates"
        );
        assert_eq!(insert.allocs, 0, "M={m}: the insert that wakes allocates");
        assert_eq!(
            register.allocs, 0,
            "M={m}: registration after warm-up allocates"
        );
        assert_eq!(polls.allocs, 0, "M={m}: resolving allocates");
        assert_eq!(map.waiters(), 0);
    }
}

// ---------------------------------------------------------------------------
// Every key and value dropped exactly once.
// ---------------------------------------------------------------------------

// Guarantees 5 and 6: through inserts that replace, takes, gets, removes,
// waiters that leave or are cancelled, and values never taken, every key and
// value the map was given is dropped exactly once, when it leaves the map or
// when the map is dropped.
#[test]
fn every_key_and_value_is_dropped_exactly_once() {
    let keys = live_counter();
    let values = live_counter();
    let map: AwaitMap<Tracked, Tracked> = AwaitMap::new();
    let key = |id| Tracked::new(id, &keys);
    let (_, w) = counting_waker();
    let n = scaled(200);

    for id in 0..n {
        assert_eq!(map.insert(key(id), Tracked::new(id, &values)), None);
    }
    // Replace a quarter: the old value comes back, the spare key goes.
    for id in (0..n).step_by(4) {
        let old = map.insert(key(id), Tracked::new(id + 1_000, &values));
        assert_eq!(old.map(|v| v.id), Some(id));
    }
    // Take, get and remove some.
    for id in (1..n).step_by(4) {
        let k = key(id);
        let mut f = map.take(&k);
        assert!(matches!(poll_once(&mut f, &w), Poll::Ready(Ok(ref v)) if v.id == id));
    }
    for id in (2..n).step_by(4) {
        let k = key(id);
        let mut f = map.get(&k);
        assert!(matches!(poll_once(&mut f, &w), Poll::Ready(Ok(ref v)) if v.id == id));
    }
    for id in (3..n).step_by(8) {
        assert_eq!(map.remove(&key(id)).map(|v| v.id), Some(id));
    }
    // Waiters on absent keys: dropped, cancelled, or filled by an insert.
    for id in n..2 * n {
        let k = key(id);
        let mut get = map.get(&k);
        let mut take = map.take(&k);
        assert!(poll_once(&mut get, &w).is_pending());
        assert!(poll_once(&mut take, &w).is_pending());
        match id % 3 {
            0 => drop((get, take)),
            1 => {
                assert_eq!(map.cancel(&k), 2);
                assert_eq!(
                    poll_once(&mut take, &w),
                    Poll::Ready(Err(WaitError::Cancelled))
                );
            }
            _ => {
                map.insert(key(id), Tracked::new(id, &values));
                assert!(matches!(poll_once(&mut get, &w), Poll::Ready(Ok(ref v)) if v.id == id));
                // A woken take dropped before it took the value: it stays.
                drop(take);
            }
        }
    }
    assert_eq!(map.waiters(), 0);
    // With no future left, the map holds exactly one key per stored value.
    assert_eq!(live(&values), map.len(), "values lost or duplicated");
    assert_eq!(live(&keys), map.len(), "keys lost or duplicated");
    assert!(!map.is_empty());
    drop(map);
    assert_eq!(live(&values), 0, "values leaked or dropped twice");
    assert_eq!(live(&keys), 0, "keys leaked or dropped twice");
}

// The RPC pattern with claims (`claim` when the request is sent, `deliver`
// by the reader): a tenth of the calls give up (their claims are dropped,
// some after their reply came, most before) and their replies arrive late
// and are refused. Nothing allocates once warmed up, and no late reply is
// left in the map.
#[test]
fn rpc_claims_with_timeouts_allocate_nothing_and_keep_no_late_replies() {
    start_counting();
    let map = Map::new();
    let (_, w) = counting_waker();
    let n: u64 = if cfg!(miri) { 20 } else { 64 };
    let mut late = Vec::with_capacity(n as usize);
    let mut claims = Vec::with_capacity(n as usize);
    let mut round = |base: u64| {
        claims.extend((0..n).map(|i| Some(map.claim(base + i))));
        for (i, c) in claims.iter_mut().enumerate() {
            // The caller awaits: one poll registers its waker.
            if i % 3 != 0 {
                assert!(poll_once(c.as_mut().unwrap(), &w).is_pending());
            }
        }
        for i in 0..n {
            let times_out = i % 10 == 0;
            if times_out && i % 20 == 0 {
                // Gave up before its reply came.
                claims[i as usize] = None;
            }
            if times_out && i % 20 != 0 {
                // Its reply came, then it gave up without receiving it.
                assert_eq!(map.deliver(base + i, i), Ok(None));
                claims[i as usize] = None;
                late.push(base + i);
                continue;
            }
            if claims[i as usize].is_none() {
                late.push(base + i);
                continue;
            }
            assert_eq!(map.deliver(base + i, i), Ok(None));
        }
        for (i, c) in claims.iter_mut().enumerate() {
            if let Some(c) = c {
                assert_eq!(poll_once(c, &w), Poll::Ready(Ok(i as u64)));
            }
        }
        claims.clear();
        // The late replies: refused, handed back.
        for k in late.drain(..) {
            assert_eq!(map.deliver(k, 0), Err((k, 0)));
        }
        assert!(map.is_empty(), "late replies were kept");
        assert_eq!(map.waiters(), 0);
    };
    round(0);
    let ((), c) = measure(|| {
        for r in 1..=if cfg!(miri) { 2 } else { 100 } {
            round(r * n);
        }
    });
    assert_eq!(c, Counts::default());
}

// The first waiter of a key waits in the key's entry, whatever made the
// entry: a `get` or a `take` registering on a promised key (the entry exists
// already, so the general path registers it) allocates nothing: no waiter
// storage is needed for one waiter per key.
#[test]
fn the_first_waiter_of_a_promised_key_waits_in_its_entry() {
    start_counting();
    for take in [false, true] {
        let map = Map::with_capacity(4);
        let promise = map.promise(1).expect("key 1 is free");
        let (_c, w) = counting_waker();
        let (polled, c) = measure(|| {
            if take {
                let mut f = map.take(&1);
                let p = poll_once(&mut f, &w).is_pending();
                (p, Some(f), None)
            } else {
                let mut f = map.get(&1);
                let p = poll_once(&mut f, &w).is_pending();
                (p, None, Some(f))
            }
        });
        assert!(polled.0);
        assert_eq!(c.allocs, 0, "take: {take}");
        assert_eq!(map.waiters(), 1);
        promise.fulfill(10);
        let got = match polled {
            (_, Some(mut f), None) => poll_once(&mut f, &w),
            (_, None, Some(mut f)) => poll_once(&mut f, &w),
            _ => unreachable!(),
        };
        assert_eq!(got, Poll::Ready(Ok(10)));
    }
}

// `shrink_to_fit` gives back everything a burst took once its futures are
// gone: the table grown for a thousand keys and the waiter storage grown
// for three hundred waiters on one key.
#[test]
fn shrink_to_fit_gives_back_what_a_burst_took() {
    start_counting();
    let map = Map::new();
    let (_c, w) = counting_waker();
    let (n_keys, n_same) = if cfg!(miri) { (100, 30) } else { (1000, 300) };
    let keys: Vec<u64> = (0..n_keys).collect();
    let one = 5_000_u64;
    let mut distinct = Vec::with_capacity(keys.len());
    let mut same = Vec::with_capacity(n_same);
    let baseline = counts().live;
    distinct.extend(keys.iter().map(|k| map.get(k)));
    same.extend((0..n_same).map(|_| map.take(&one)));
    for f in &mut distinct {
        assert!(poll_once(f, &w).is_pending());
    }
    for f in &mut same {
        assert!(poll_once(f, &w).is_pending());
    }
    assert_eq!(map.waiters(), n_keys as usize + n_same);
    let grown = counts().live - baseline;
    assert!(grown > 0, "the burst took no memory");
    distinct.clear();
    same.clear();
    assert_eq!(map.waiters(), 0);
    map.shrink_to_fit();
    assert_eq!(
        counts().live - baseline,
        0,
        "of {grown} bytes the burst took, some stayed after shrink_to_fit"
    );
}

// `reserve(0, n)` on waiter storage that already grew adds only what is
// missing for `n` waiters: it takes no more than the same call on a fresh
// map, which has to make room for all of them.
#[test]
fn reserve_adds_to_grown_waiter_storage_only_what_is_missing() {
    start_counting();
    let (_c, w) = counting_waker();
    let n = 64;
    // Measured with the map alive: what the reservation holds.
    let fresh = {
        let map = Map::new();
        let ((), c) = measure(|| map.reserve(0, n));
        assert!(c.live > 0, "reserving room for {n} waiters took no memory");
        c.live
    };
    let map = Map::new();
    // Half as many takes on one key: all but the first live in the waiter
    // storage, which grows to hold them, then they leave.
    let mut takes: Vec<_> = (0..=n / 2).map(|_| map.take(&1)).collect();
    for t in &mut takes {
        assert!(poll_once(t, &w).is_pending());
    }
    takes.clear();
    assert_eq!(map.waiters(), 0);
    let ((), grown) = measure(|| map.reserve(0, n));
    assert!(
        grown.live <= fresh,
        "reserving room for {n} waiters where {} nodes exist took {} bytes, more than the \
         {fresh} it takes on a fresh map",
        n / 2,
        grown.live
    );
    // And the room is there: n waiters on the key allocate nothing more.
    let mut takes: Vec<_> = Vec::with_capacity(n);
    let ((), c) = measure(|| {
        for _ in 0..n {
            takes.push(map.take(&1));
        }
        for t in &mut takes {
            assert!(poll_once(t, &w).is_pending());
        }
    });
    assert_eq!(c.allocs, 0, "{n} waiters allocated after reserve(0, {n})");
}
