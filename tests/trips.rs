//! How many trips through the lock the common polls take: the fast paths'
//! promise, counted by a user lock that counts every `with_lock` and
//! `try_with_lock`. A fast path that never fires, or that gives up where it
//! should not, still gives the right answers through the general path, so
//! only a count like this one notices it. Hand-polled with counting wakers.
#![allow(unsafe_code)] // a user-made lock: `ScopedRawMutex` is an unsafe trait

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use awaitmap::{AwaitMap, ScopedRawMutex, SpinLock};
use common::{counting_waker, pending, poll_once, ready};
use foldhash::fast::FixedState;

/// The crate's spin lock, counting the times it is taken (or tried).
struct CountingLock {
    inner: SpinLock,
    trips: Arc<AtomicUsize>,
}

// SAFETY: every call is passed on to `SpinLock`, a correct implementation;
// the counter is only a side effect.
unsafe impl ScopedRawMutex for CountingLock {
    fn try_with_lock<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        self.trips.fetch_add(1, Ordering::Relaxed);
        self.inner.try_with_lock(f)
    }

    fn with_lock<R>(&self, f: impl FnOnce() -> R) -> R {
        self.trips.fetch_add(1, Ordering::Relaxed);
        self.inner.with_lock(f)
    }

    fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }
}

type Map = AwaitMap<u64, u64, FixedState, CountingLock>;

/// A map, and the count of trips through its lock.
fn map() -> (Map, Arc<AtomicUsize>) {
    let trips = Arc::new(AtomicUsize::new(0));
    let lock = CountingLock {
        inner: SpinLock::new(),
        trips: Arc::clone(&trips),
    };
    (
        AwaitMap::with_hasher_and_lock(FixedState::with_seed(7), lock),
        trips,
    )
}

/// What `f` returns, and the trips it takes through the lock.
fn trips<R>(count: &AtomicUsize, f: impl FnOnce() -> R) -> (R, usize) {
    let before = count.load(Ordering::Relaxed);
    let r = f();
    (r, count.load(Ordering::Relaxed) - before)
}

#[test]
fn a_get_of_a_present_key_takes_one_trip() {
    let (map, count) = map();
    map.insert(1, 10);
    let (_, w) = counting_waker();
    let mut get = map.get(&1);
    let (v, n) = trips(&count, || ready(poll_once(&mut get, &w)));
    assert_eq!(v, Ok(10));
    assert_eq!(n, 1);
}

// A get clones its waker only once it knows it waits, and never under the
// lock (guarantee 11): a miss looks, then registers.
#[test]
fn a_get_that_waits_takes_two_trips_and_its_ready_poll_one() {
    let (map, count) = map();
    let (counter, w) = counting_waker();
    let mut get = map.get(&1);
    let ((), n) = trips(&count, || pending(poll_once(&mut get, &w)));
    assert_eq!(n, 2);
    let (_, n) = trips(&count, || map.insert(1, 10));
    assert_eq!(n, 1);
    assert_eq!(counter.wakes(), 1);
    let (v, n) = trips(&count, || ready(poll_once(&mut get, &w)));
    assert_eq!(v, Ok(10));
    assert_eq!(n, 1, "a woken get's ready poll");
}

// The second get of a key waits in the slab, not in the entry: its ready
// poll, after the first get's, is one trip too.
#[test]
fn a_second_woken_get_takes_one_trip() {
    let (map, count) = map();
    let (counter, w) = counting_waker();
    let mut first = map.get(&1);
    let mut second = map.get(&1);
    pending(poll_once(&mut first, &w));
    let ((), n) = trips(&count, || pending(poll_once(&mut second, &w)));
    assert_eq!(
        n, 2,
        "the look finds the entry, the registration uses its id"
    );
    map.insert(1, 10);
    assert_eq!(counter.wakes(), 2);
    assert_eq!(ready(poll_once(&mut first, &w)), Ok(10));
    let (v, n) = trips(&count, || ready(poll_once(&mut second, &w)));
    assert_eq!(v, Ok(10));
    assert_eq!(n, 1, "a woken get in the slab");
}

// The RPC round trip: a take registers in one trip (with no look first),
// the response's insert wakes it in one, and its ready poll moves the value
// out and removes the entry in one.
#[test]
fn an_rpc_round_trip_takes_three_trips() {
    let (map, count) = map();
    let (counter, w) = counting_waker();
    let mut take = map.take(&1);
    let ((), n) = trips(&count, || pending(poll_once(&mut take, &w)));
    assert_eq!(n, 1, "a take's first poll");
    let (_, n) = trips(&count, || map.insert(1, 10));
    assert_eq!(n, 1);
    assert_eq!(counter.wakes(), 1);
    let (v, n) = trips(&count, || ready(poll_once(&mut take, &w)));
    assert_eq!(v, Ok(10));
    assert_eq!(n, 1, "a woken take's ready poll");
    assert!(map.is_empty());
    assert_eq!(map.waiters(), 0);
}

// A take whose response came first finds it in its one trip.
#[test]
fn a_take_of_a_present_key_takes_one_trip() {
    let (map, count) = map();
    map.insert(1, 10);
    let (_, w) = counting_waker();
    let mut take = map.take(&1);
    let (v, n) = trips(&count, || ready(poll_once(&mut take, &w)));
    assert_eq!(v, Ok(10));
    // It expects to wait (it registers at once), finds the value there, and
    // takes it in a second trip.
    assert_eq!(n, 2);
    assert!(map.is_empty());
}

// A woken take that shares its key with another waiting take goes through
// the general path: one trip more than the inline take's fast path.
#[test]
fn a_woken_take_with_another_take_behind_it_takes_two_trips() {
    let (map, count) = map();
    let (counter, w) = counting_waker();
    let mut first = map.take(&1);
    let mut second = map.take(&1);
    pending(poll_once(&mut first, &w));
    pending(poll_once(&mut second, &w));
    map.insert(1, 10);
    assert_eq!(counter.wakes(), 1, "one value: one take woken");
    let (v, n) = trips(&count, || ready(poll_once(&mut first, &w)));
    assert_eq!(v, Ok(10));
    assert_eq!(n, 2);
    map.insert(1, 11);
    let (v, n) = trips(&count, || ready(poll_once(&mut second, &w)));
    assert_eq!(v, Ok(11));
    assert_eq!(
        n, 1,
        "the last take, inline or not, finds nothing behind it"
    );
}

// Each registered future remembers its entry's bucket: with many keys in
// flight, spread over the table, every woken get, take and claim still
// finds its entry in one trip, whichever bucket its key landed in. (Room is
// reserved first: a table that grows moves its entries, and the first poll
// after a move looks the entry up again in a second trip.)
#[test]
fn with_many_keys_in_flight_every_ready_poll_still_takes_one_trip() {
    const N: u64 = 16;
    let (map, count) = map();
    map.reserve(4 * N as usize, 4 * N as usize);
    let (counter, w) = counting_waker();
    let get_ids: Vec<u64> = (0..N).collect();
    let take_ids: Vec<u64> = (N..2 * N).collect();
    let mut gets: Vec<_> = get_ids.iter().map(|k| map.get(k)).collect();
    let mut takes: Vec<_> = take_ids.iter().map(|k| map.take(k)).collect();
    let mut claims: Vec<_> = (2 * N..3 * N).map(|k| map.claim(k)).collect();
    for get in &mut gets {
        let ((), n) = trips(&count, || pending(poll_once(get, &w)));
        assert_eq!(n, 2, "a get that waits");
    }
    for take in &mut takes {
        let ((), n) = trips(&count, || pending(poll_once(take, &w)));
        assert_eq!(n, 1, "a take's first poll");
    }
    for claim in &mut claims {
        let ((), n) = trips(&count, || pending(poll_once(claim, &w)));
        assert_eq!(n, 1, "a claim's first poll hands over its waker");
    }
    for k in 0..2 * N {
        map.insert(k, k + 100);
    }
    for k in 2 * N..3 * N {
        assert_eq!(map.deliver(k, k + 100), Ok(None));
    }
    assert_eq!(counter.wakes(), 3 * N as usize);
    for (get, k) in gets.iter_mut().zip(0..) {
        let (v, n) = trips(&count, || ready(poll_once(get, &w)));
        assert_eq!(v, Ok(k + 100));
        assert_eq!(n, 1, "the woken get of key {k}");
    }
    for (take, k) in takes.iter_mut().zip(N..) {
        let (v, n) = trips(&count, || ready(poll_once(take, &w)));
        assert_eq!(v, Ok(k + 100));
        assert_eq!(n, 1, "the woken take of key {k}");
    }
    for (claim, k) in claims.iter_mut().zip(2 * N..) {
        let (v, n) = trips(&count, || ready(poll_once(claim, &w)));
        assert_eq!(v, Ok(k + 100));
        assert_eq!(n, 1, "the woken claim of key {k}");
    }
    assert_eq!(map.len(), N as usize, "the gets' values stay");
    assert_eq!(map.waiters(), 0);
}

// A table that grows moves its entries. A future whose entry moved finds it
// again by its hash and id, and remembers the new bucket: its ready poll
// after the next insert is one trip again, not a lookup every time.
#[test]
fn a_future_whose_entry_moved_remembers_where_it_went() {
    const N: u64 = 8;
    let (map, count) = map();
    let (_, w) = counting_waker();
    let ids: Vec<u64> = (0..N).collect();
    let mut gets: Vec<_> = ids.iter().map(|k| map.get(k)).collect();
    for get in &mut gets {
        pending(poll_once(get, &w));
    }
    // Values of other keys make the table grow, moving every entry.
    for k in 1_000..1_200 {
        map.insert(k, k);
    }
    for get in &mut gets {
        // It looks its entry up again: in two trips, or three where the
        // waker compares unequal to its stored clone and is cloned anew
        // (under Miri, whose vtables are not unique).
        pending(poll_once(get, &w));
    }
    for k in 0..N {
        map.insert(k, k + 100);
    }
    for (get, k) in gets.iter_mut().zip(0..) {
        let (v, n) = trips(&count, || ready(poll_once(get, &w)));
        assert_eq!(v, Ok(k + 100));
        assert_eq!(n, 1, "the get of key {k} knows where its entry is now");
    }
}
