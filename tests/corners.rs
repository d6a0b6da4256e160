//! Corners of the waiter machine that the broader suites reach only by
//! chance: colliding hashes after the table moved its entries, and the key
//! copies a poll makes. Hand-polled with counting wakers.
//!
//! Each test names the crate guarantees it leans on (1 store-then-wake,
//! 4 one registration per future, 11 user code and the lock, 13 bad keys).

mod common;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use awaitmap::{AwaitMap, ValueOrPromise};
use common::{counting_waker, pending, poll_once, ready};

/// A key whose every value hashes the same: all keys collide.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Same(u64);

impl Hash for Same {
    fn hash<H: Hasher>(&self, state: &mut H) {
        0_u64.hash(state);
    }
}

// Guarantees 1, 13: two futures wait on keys whose hashes collide; the table
// then grows (moving every entry), so each future finds its entry again by
// its hash and id: each gets its own key's value, in either order.
#[test]
fn waiters_on_colliding_keys_find_their_own_entries_after_the_table_grows() {
    let map: AwaitMap<Same, u64> = AwaitMap::new();
    let (c1, w1) = counting_waker();
    let (c2, w2) = counting_waker();
    let (one, two) = (Same(1), Same(2));
    let mut first = map.get(&one);
    let mut second = map.take(&two);
    pending(poll_once(&mut first, &w1));
    pending(poll_once(&mut second, &w2));
    for k in 3..100 {
        map.insert(Same(k), k);
    }
    map.insert(Same(2), 20);
    assert_eq!((c1.wakes(), c2.wakes()), (0, 1));
    // Polled with other wakers, so the polls look their entries up.
    let (_c3, w3) = counting_waker();
    pending(poll_once(&mut first, &w3));
    assert_eq!(ready(poll_once(&mut second, &w3)), Ok(20));
    map.insert(Same(1), 10);
    assert_eq!(ready(poll_once(&mut first, &w3)), Ok(10));
    assert_eq!(map.waiters(), 0);
}

/// A key that counts its clones.
#[derive(Debug)]
struct Counted {
    id: u64,
    clones: Arc<AtomicUsize>,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Counted {
            id: self.id,
            clones: Arc::clone(&self.clones),
        }
    }
}

impl PartialEq for Counted {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Counted {}

impl Hash for Counted {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

// Guarantees 4, 11: a registered future polled again, even with a new
// waker, makes no copy of its key (only an unregistered one needs one, for
// the entry it may create).
#[test]
fn a_registered_future_polled_again_copies_no_key() {
    let clones = Arc::new(AtomicUsize::new(0));
    let key = Counted {
        id: 1,
        clones: Arc::clone(&clones),
    };
    let map: AwaitMap<Counted, u64> = AwaitMap::new();
    let promise = map.promise(key.clone()).expect("key 1 is free");
    let (_c1, w1) = counting_waker();
    let (_c2, w2) = counting_waker();
    let mut get = map.get(&key);
    let mut coalesced = map.get_or_promise(&key);
    pending(poll_once(&mut get, &w1));
    assert!(poll_once(&mut coalesced, &w1).is_pending());
    let copies = clones.load(Ordering::SeqCst);
    for waker in [&w2, &w1, &w2] {
        pending(poll_once(&mut get, waker));
        assert!(poll_once(&mut coalesced, waker).is_pending());
    }
    assert_eq!(
        clones.load(Ordering::SeqCst),
        copies,
        "a re-poll copied the key"
    );
    promise.fulfill(7);
    assert_eq!(ready(poll_once(&mut get, &w2)), Ok(7));
    assert!(matches!(
        ready(poll_once(&mut coalesced, &w2)),
        Ok(ValueOrPromise::Value(7))
    ));
}

// Guarantee 13: promises on keys whose hashes collide, fulfilled after the
// table grew (moving every entry): each value lands under its own key.
#[test]
fn promises_on_colliding_keys_fulfil_their_own_keys_after_the_table_grows() {
    let map: AwaitMap<Same, u64> = AwaitMap::new();
    let first = map.promise(Same(1)).expect("free");
    let second = map.promise(Same(2)).expect("free");
    for k in 3..100 {
        map.insert(Same(k), k);
    }
    assert_eq!(second.fulfill(20), None);
    assert_eq!(map.try_get(&Same(2)), Some(20));
    assert_eq!(map.try_get(&Same(1)), None);
    assert_eq!(first.fulfill(10), None);
    assert_eq!(map.try_get(&Same(1)), Some(10));
}

// Guarantees 1, 5, 6: `shrink_to_fit` while futures still wait. The takes
// behind a key's first one live in the waiter storage; with the first
// stored one dropped, one still waiting, and the last ones dropped, the
// storage ends in room that can be given back, behind a waiter that must
// stay. After the shrink, the remaining take keeps its place in line, a new
// take reuses the freed room without disturbing it, and each value reaches
// one take, in order.
#[test]
fn shrink_to_fit_keeps_the_waiters_left_and_reuses_the_room_it_keeps() {
    let map: AwaitMap<u64, u64> = AwaitMap::new();
    let counters: Vec<_> = (0..6).map(|_| counting_waker()).collect();
    let mut takes: Vec<_> = (0..5).map(|_| Some(map.take(&1))).collect();
    for (t, (_, w)) in takes.iter_mut().zip(&counters) {
        pending(poll_once(t.as_mut().unwrap(), w));
    }
    // Keep the first (in the key's entry) and the third; drop the others.
    for i in [1, 3, 4] {
        takes[i] = None;
    }
    assert_eq!(map.waiters(), 2);
    map.shrink_to_fit();
    assert_eq!(map.waiters(), 2);
    let mut late = map.take(&1);
    pending(poll_once(&mut late, &counters[5].1));
    assert_eq!(map.waiters(), 3);

    // Three values, one for each take, first come first served.
    let mut order = vec![(0, takes[0].take().unwrap()), (2, takes[2].take().unwrap())];
    order.push((5, late));
    for (v, (i, mut take)) in (10..).zip(order) {
        assert_eq!(map.insert(1, v), None);
        let (c, w) = &counters[i];
        assert_eq!(c.wakes(), 1, "take {i} was not woken by value {v}");
        assert_eq!(ready(poll_once(&mut take, w)), Ok(v), "take {i}");
    }
    assert_eq!(map.waiters(), 0);
    assert!(map.is_empty());
}
