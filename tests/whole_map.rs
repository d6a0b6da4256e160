//! Whole-map operations: `clear`, `retain`, and the snapshots `keys`,
//! `values`, `entries` and `awaited`. Hand-polled with counting wakers.
//!
//! Each test names the crate guarantees it leans on (1 store-then-wake,
//! 5 deregistration, 7 remove, 8 cancel, 11 user code and the lock) and "W"
//! for what the docs of these methods promise.
#![cfg(feature = "std")]

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use awaitmap::{AwaitMap, WaitError, Waiting};
use common::{Tracked, counting_waker, live, live_counter, pending, poll_once, ready};

type Map = AwaitMap<u32, u32>;

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

// W, 7: `clear` removes every value and drops it (and the keys of the
// entries it empties); futures waiting on keys keep waiting and resolve on
// the next insert.
#[test]
fn clear_removes_every_value_and_waiters_keep_waiting() {
    let keys = live_counter();
    let values = live_counter();
    let map: AwaitMap<Tracked, Tracked> = AwaitMap::new();
    for id in 0..5 {
        map.insert(Tracked::new(id, &keys), Tracked::new(100 + id, &values));
    }
    let (counter, waker) = counting_waker();
    let probe = Tracked::new(9, &keys);
    let mut get = map.get(&probe);
    pending(poll_once(&mut get, &waker));
    map.clear();
    map.check_invariants();
    assert!(map.is_empty());
    assert_eq!(live(&values), 0, "cleared values were not dropped");
    // The waiting get's entry keeps its key; the probe is the other one.
    assert_eq!(live(&keys), 2);
    assert_eq!(map.waiters(), 1);
    assert_eq!(counter.wakes(), 0);
    map.insert(Tracked::new(9, &keys), Tracked::new(109, &values));
    assert_eq!(counter.wakes(), 1);
    assert_eq!(ready(poll_once(&mut get, &waker)).map(|v| v.id), Ok(109));
}

// W: `retain` keeps the values its predicate accepts, may change them in
// place, and removes the rest.
#[test]
fn retain_keeps_what_the_predicate_accepts_and_can_change_it() {
    let map = Map::new();
    for k in 0..10 {
        map.insert(k, k);
    }
    let mut seen = Vec::new();
    map.retain(|k, v| {
        seen.push(*k);
        *v *= 10;
        k % 3 == 0
    });
    map.check_invariants();
    assert_eq!(sorted(seen), (0..10).collect::<Vec<_>>());
    assert_eq!(sorted(map.entries()), [(0, 0), (3, 30), (6, 60), (9, 90)]);
}

// W, 1: values removed by `clear` on a limited map let as many waiting
// producers in.
#[test]
fn clear_on_a_limited_map_lets_waiting_producers_in() {
    let map = Map::new().with_limit(2);
    map.insert(1, 1);
    map.insert(2, 2);
    let (c3, w3) = counting_waker();
    let (c4, w4) = counting_waker();
    let mut p3 = map.insert_async(3, 3);
    let mut p4 = map.insert_async(4, 4);
    pending(poll_once(&mut p3, &w3));
    pending(poll_once(&mut p4, &w4));
    map.clear();
    assert_eq!((c3.wakes(), c4.wakes()), (1, 1));
    assert_eq!(ready(poll_once(&mut p3, &w3)), None);
    assert_eq!(ready(poll_once(&mut p4, &w4)), None);
    assert_eq!(sorted(map.keys()), [3, 4]);
}

/// A value whose destructor calls back into its map: it would deadlock (or
/// panic, with the spin lock in debug builds) if dropped under the lock.
struct CallsBack {
    map: Arc<AwaitMap<u32, CallsBack>>,
    drops: Arc<AtomicUsize>,
}

impl Drop for CallsBack {
    fn drop(&mut self) {
        // Any call that takes the lock.
        let _ = self.map.len();
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

// W, 11: `clear` and `retain` drop what they remove with the lock released.
#[test]
fn removed_values_are_dropped_with_the_lock_released() {
    let drops = Arc::new(AtomicUsize::new(0));
    let map: Arc<AwaitMap<u32, CallsBack>> = Arc::new(AwaitMap::new());
    for k in 0..4 {
        map.insert(
            k,
            CallsBack {
                map: Arc::clone(&map),
                drops: Arc::clone(&drops),
            },
        );
    }
    map.retain(|k, _| *k >= 2);
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    map.clear();
    assert_eq!(drops.load(Ordering::SeqCst), 4);
    assert!(map.is_empty());
}

// W, 11: a predicate that panics under the lock releases it; the values it
// had rejected before the panic are removed (and dropped), the others stay,
// and the map stays usable.
#[test]
fn a_panicking_retain_predicate_leaves_the_map_usable() {
    let values = live_counter();
    let map: AwaitMap<u32, Tracked> = AwaitMap::new();
    for k in 0..8 {
        map.insert(k, Tracked::new(u64::from(k), &values));
    }
    let mut calls = 0;
    let mut rejected = Vec::new();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        map.retain(|k, _| {
            calls += 1;
            if calls == 5 {
                panic!("predicate fails");
            }
            if calls % 2 == 0 {
                rejected.push(*k);
                false
            } else {
                true
            }
        })
    }));
    assert!(outcome.is_err());
    map.check_invariants();
    assert_eq!(rejected.len(), 2);
    assert_eq!(map.len(), 6);
    assert_eq!(live(&values), 6);
    for k in &rejected {
        assert!(!map.contains_key(k));
    }
    // Usable: insert, wait, clear.
    map.insert(20, Tracked::new(20, &values));
    let (_c, waker) = counting_waker();
    assert_eq!(
        ready(poll_once(&mut map.get(&20), &waker)).map(|v| v.id),
        Ok(20)
    );
    map.clear();
    assert_eq!(live(&values), 0);
}

// W, 8: a key whose only waiter was cancelled, and which then got a value,
// is left empty by `clear`: the cancelled future still learns `Cancelled`
// on its next poll, and the key works as new.
#[test]
fn clear_keeps_the_news_of_a_cancelled_waiter() {
    let map = Map::new();
    let (_c, waker) = counting_waker();
    let mut get = map.get(&1);
    pending(poll_once(&mut get, &waker));
    assert_eq!(map.cancel(&1), 1);
    map.insert(1, 10);
    map.clear();
    map.check_invariants();
    assert!(map.is_empty());
    assert_eq!(
        ready(poll_once(&mut get, &waker)),
        Err(WaitError::Cancelled)
    );
    assert_eq!(map.waiters(), 0);
    map.insert(1, 11);
    assert_eq!(ready(poll_once(&mut map.get(&1), &waker)), Ok(11));
}

// W: the snapshots list what is stored, each key or value once.
#[test]
fn keys_values_and_entries_are_snapshots_of_the_stored_values() {
    let map: AwaitMap<String, u32> = AwaitMap::new();
    assert!(map.keys().is_empty() && map.values().is_empty() && map.entries().is_empty());
    for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
        map.insert(k.to_string(), i as u32);
    }
    // A key that is only awaited is not listed.
    let (_c, waker) = counting_waker();
    let mut waiting = map.get("z");
    pending(poll_once(&mut waiting, &waker));
    assert_eq!(sorted(map.keys()), ["a", "b", "c"]);
    assert_eq!(sorted(map.values()), [0, 1, 2]);
    assert_eq!(
        sorted(map.entries()),
        [
            ("a".to_string(), 0),
            ("b".to_string(), 1),
            ("c".to_string(), 2)
        ]
    );
    assert_eq!(map.len(), 3);
}

// W, 5, 8: `awaited` lists the keys futures wait on, counting gets and
// takes (inline and beyond); failed and dropped futures are not counted.
#[test]
fn awaited_lists_each_awaited_key_with_its_gets_and_takes() {
    let map = Map::new();
    assert!(map.awaited().is_empty());
    let (_c, waker) = counting_waker();
    let mut gets: Vec<_> = (0..3).map(|_| map.get(&1)).collect();
    let mut takes: Vec<_> = (0..2).map(|_| map.take(&1)).collect();
    let mut other = map.take(&2);
    for f in &mut gets {
        pending(poll_once(f, &waker));
    }
    for f in &mut takes {
        pending(poll_once(f, &waker));
    }
    pending(poll_once(&mut other, &waker));
    assert_eq!(
        sorted(map.awaited()),
        [
            (1, Waiting { gets: 3, takes: 2 }),
            (2, Waiting { gets: 0, takes: 1 })
        ]
    );
    drop(gets.pop());
    assert_eq!(map.cancel(&2), 1);
    assert_eq!(sorted(map.awaited()), [(1, Waiting { gets: 2, takes: 2 })]);
    // A value for key 1: the gets resolve, one take takes it.
    map.insert(1, 10);
    for f in &mut gets {
        assert_eq!(ready(poll_once(f, &waker)), Ok(10));
    }
    assert_eq!(ready(poll_once(&mut takes[0], &waker)), Ok(10));
    assert_eq!(map.awaited(), [(1, Waiting { gets: 0, takes: 1 })]);
    drop(takes);
    assert!(map.awaited().is_empty());
    assert_eq!(
        ready(poll_once(&mut other, &waker)),
        Err(WaitError::Cancelled)
    );
    // A key with a value, or with a promise, and no future on it is not
    // awaited.
    map.insert(3, 30);
    let promise = map.promise(4).expect("no value, no promise");
    assert!(map.awaited().is_empty());
    drop(promise);
}
