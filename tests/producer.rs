//! The producer's side: `promise`, `Promise::fulfill`/`abandon` (and drop),
//! and coalescing with `get_or_promise`. Hand-polled with counting wakers
//! first; then real threads and tokio tasks.
//!
//! The crate's numbered guarantees speak of plain waits, not promises: each
//! test names the guarantees it leans on (1 store-then-wake, 2 present keys,
//! 3 lazy, 4 one registration, 5 deregistration, 8 cancel, 9 close, 12
//! completed futures) and "P" for the promise contract in the `Promise` and
//! `get_or_promise` docs.
// The blocking API and the threads below need `std`.
#![cfg(feature = "std")]

mod common;

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::Duration;

use awaitmap::{AwaitMap, Promise, ValueOrPromise, WaitError};
use common::{
    Tracked, XorShift, assert_repoll_panics, counting_waker, kept, live, live_counter, no_hang_or,
    pending, poll_once, ready,
};

// ---------------------------------------------------------------------------
// Helpers local to this file.
// ---------------------------------------------------------------------------

type Map = AwaitMap<u32, u32>;

/// The value a `get_or_promise` resolved with; fails on a promise or error.
#[track_caller]
fn value<K, V>(r: Result<ValueOrPromise<'_, K, V>, WaitError>) -> V {
    match r {
        Ok(ValueOrPromise::Value(v)) => v,
        Ok(ValueOrPromise::Promise(_)) => panic!("expected a value, got a promise"),
        Err(e) => panic!("expected a value, got Err({e:?})"),
    }
}

/// The promise a `get_or_promise` resolved with; fails on a value or error.
#[track_caller]
fn promise<K, V>(r: Result<ValueOrPromise<'_, K, V>, WaitError>) -> Promise<'_, K, V> {
    match r {
        Ok(ValueOrPromise::Promise(p)) => p,
        Ok(ValueOrPromise::Value(_)) => panic!("expected a promise, got a value"),
        Err(e) => panic!("expected a promise, got Err({e:?})"),
    }
}

/// The error a `get_or_promise` resolved with; fails on a value or promise.
#[track_caller]
fn error<K, V>(r: Result<ValueOrPromise<'_, K, V>, WaitError>) -> WaitError {
    match r {
        Err(e) => e,
        Ok(ValueOrPromise::Value(_)) => panic!("expected an error, got a value"),
        Ok(ValueOrPromise::Promise(_)) => panic!("expected an error, got a promise"),
    }
}

/// Polls a pinned, boxed future once.
fn poll_boxed<T>(fut: &mut Pin<Box<dyn Future<Output = T> + '_>>, waker: &Waker) -> Poll<T> {
    fut.as_mut().poll(&mut Context::from_waker(waker))
}

/// The key whose value the producers in the async tests wait for: their
/// "work" is an await on it.
const INPUT: u32 = 1_000;

/// A cache lookup as users write it: the value if the key has one, else the
/// work (counted in `runs`: an await on [`INPUT`], then doubling it), done
/// by one caller per key.
async fn lookup(map: &Map, k: u32, runs: &AtomicUsize) -> Result<u32, WaitError> {
    match map.get_or_promise(&k).await? {
        ValueOrPromise::Value(v) => Ok(v),
        ValueOrPromise::Promise(p) => {
            runs.fetch_add(1, Ordering::SeqCst);
            let v = map.get(&INPUT).await? * 2;
            assert_eq!(p.fulfill(v), None, "nobody else stored key {k}");
            Ok(v)
        }
    }
}

// ---------------------------------------------------------------------------
// `promise`: who may produce a key.
// ---------------------------------------------------------------------------

// P (with 7, 9): `promise` is refused while the key has a value or a promise, and on a closed map; a removed value or an abandoned promise frees the key.
#[test]
fn promise_is_refused_when_the_key_has_a_value_a_promise_or_the_map_is_closed() {
    let map = Map::new();
    map.insert(1, 10);
    assert!(map.promise(1).is_none(), "key 1 has a value");

    let two = map.promise(2).expect("key 2 is absent");
    assert!(map.promise(2).is_none(), "key 2 is promised");
    // A promise is not a value.
    assert_eq!(
        (map.len(), map.try_get(&2), map.contains_key(&2)),
        (1, None, false)
    );
    assert_eq!(two.abandon(), 0);
    let two = map.promise(2).expect("an abandoned promise frees the key");

    assert_eq!(map.remove(&1), Some(10));
    let one = map.promise(1).expect("a removed value frees the key");

    map.close();
    assert!(map.promise(3).is_none(), "the map is closed");
    assert!(map.promise(2).is_none(), "still promised, and closed");
    // A promise made before the close still stores, as `insert` does.
    assert_eq!(two.fulfill(20), None);
    assert_eq!(map.try_get(&2), Some(20));
    drop(one);
    assert!(
        map.promise(1).is_none(),
        "free again, but the map is closed"
    );
    assert_eq!((map.len(), map.waiters()), (1, 0));
}

// P, 1: `fulfill` stores the value, wakes every waiting get (once each) and the earliest waiting take, and frees the key's reservation.
#[test]
fn fulfil_stores_then_wakes_every_get_and_one_take() {
    let map = Map::new();
    let p = map.promise(5).unwrap();
    let mut gets: Vec<_> = (0..3).map(|_| (counting_waker(), map.get(&5))).collect();
    let mut takes: Vec<_> = (0..2).map(|_| (counting_waker(), map.take(&5))).collect();
    for ((_, w), g) in &mut gets {
        pending(poll_once(g, w));
    }
    for ((_, w), t) in &mut takes {
        pending(poll_once(t, w));
    }
    assert_eq!((map.waiters(), map.len()), (5, 0));

    assert_eq!(p.fulfill(50), None);
    assert_eq!(map.len(), 1);
    let get_wakes: Vec<usize> = gets.iter().map(|((c, _), _)| c.wakes()).collect();
    let take_wakes: Vec<usize> = takes.iter().map(|((c, _), _)| c.wakes()).collect();
    assert_eq!(get_wakes, [1, 1, 1]);
    assert_eq!(take_wakes, [1, 0]);

    for ((_, w), g) in &mut gets {
        assert_eq!(ready(poll_once(g, w)), Ok(50));
    }
    let ((_, w0), t0) = &mut takes[0];
    assert_eq!(ready(poll_once(t0, w0)), Ok(50));
    // The second take waits for the next value; nobody produces it now.
    let ((c1, w1), t1) = &mut takes[1];
    pending(poll_once(t1, w1));
    assert_eq!((c1.wakes(), map.waiters(), map.len()), (0, 1, 0));
    let again = map.promise(5).expect("fulfill released the reservation");
    assert_eq!(again.fulfill(51), None);
    assert_eq!(c1.wakes(), 1);
    assert_eq!(ready(poll_once(t1, w1)), Ok(51));
    assert_eq!((map.waiters(), map.len()), (0, 0));
}

// P, 1: `fulfill` returns the value a plain `insert` stored meanwhile; the get woken by that insert is not woken twice and sees the newest value.
#[test]
fn fulfil_returns_the_value_a_plain_insert_stored_meanwhile() {
    let map = Map::new();
    let p = map.promise(1).unwrap();
    let (c, w) = counting_waker();
    let mut g = map.get(&1);
    pending(poll_once(&mut g, &w));
    assert_eq!(map.insert(1, 10), None);
    assert_eq!(c.wakes(), 1);
    assert!(map.promise(1).is_none(), "still promised, and has a value");
    assert_eq!(p.fulfill(11), Some(10));
    assert_eq!(c.wakes(), 1, "woken once for the two stores");
    assert_eq!(ready(poll_once(&mut g, &w)), Ok(11));
    assert_eq!(
        (map.waiters(), map.len(), map.try_get(&1)),
        (0, 1, Some(11))
    );
}

// ---------------------------------------------------------------------------
// Abandoning: drop, `abandon()`, panics.
// ---------------------------------------------------------------------------

// P: dropping a promise fails every waiting get and take with Abandoned, waking each exactly once before the drop returns; the key is then free.
#[test]
fn dropping_a_promise_fails_its_waiters_with_abandoned_at_once() {
    let map = Map::new();
    let p = map.promise(7).unwrap();
    let mut gets: Vec<_> = (0..2).map(|_| (counting_waker(), map.get(&7))).collect();
    let mut takes: Vec<_> = (0..2).map(|_| (counting_waker(), map.take(&7))).collect();
    for ((_, w), g) in &mut gets {
        pending(poll_once(g, w));
    }
    for ((_, w), t) in &mut takes {
        pending(poll_once(t, w));
    }
    assert_eq!(map.waiters(), 4);

    drop(p);
    for ((c, _), _) in &gets {
        assert_eq!(c.wakes(), 1);
    }
    for ((c, _), _) in &takes {
        assert_eq!(c.wakes(), 1);
    }
    for ((_, w), g) in &mut gets {
        assert_eq!(ready(poll_once(g, w)), Err(WaitError::Abandoned));
    }
    for ((_, w), t) in &mut takes {
        assert_eq!(ready(poll_once(t, w)), Err(WaitError::Abandoned));
    }
    for ((c, _), _) in &gets {
        assert_eq!((c.wakes(), kept(c)), (1, 0));
    }
    assert_eq!((map.waiters(), map.len()), (0, 0));
    assert!(map.promise(7).is_some(), "the key is free again");
}

// P: `abandon()` returns how many waiting futures it failed: the plain gets and takes, not a future dropped before it.
#[test]
fn abandon_returns_how_many_waiters_it_failed() {
    let map = Map::new();
    assert_eq!(map.promise(1).unwrap().abandon(), 0);

    let p = map.promise(1).unwrap();
    let (c, w) = counting_waker();
    let mut g1 = map.get(&1);
    let mut g2 = map.get(&1);
    let mut t = map.take(&1);
    let mut gone = map.get(&1);
    pending(poll_once(&mut g1, &w));
    pending(poll_once(&mut g2, &w));
    pending(poll_once(&mut t, &w));
    pending(poll_once(&mut gone, &w));
    drop(gone);
    assert_eq!(map.waiters(), 3);
    assert_eq!(p.abandon(), 3);
    assert_eq!(c.wakes(), 3);
    assert_eq!(ready(poll_once(&mut g1, &w)), Err(WaitError::Abandoned));
    assert_eq!(ready(poll_once(&mut g2, &w)), Err(WaitError::Abandoned));
    assert_eq!(ready(poll_once(&mut t, &w)), Err(WaitError::Abandoned));
    assert_eq!((map.waiters(), map.len(), kept(&c)), (0, 0, 0));
}

// P, 1: a promise dropped after a plain insert stored a value leaves the gets (and the take woken for the value) alone; only the other takes fail.
#[test]
fn a_promise_dropped_after_a_plain_insert_leaves_the_gets_alone() {
    // Gets only: the drop fails nothing.
    let map = Map::new();
    let p = map.promise(1).unwrap();
    let (c, w) = counting_waker();
    let mut g1 = map.get(&1);
    let mut g2 = map.get(&1);
    pending(poll_once(&mut g1, &w));
    pending(poll_once(&mut g2, &w));
    map.insert(1, 10);
    assert_eq!(c.wakes(), 2);
    drop(p);
    assert_eq!(c.wakes(), 2, "the drop woke nobody again");
    assert_eq!(ready(poll_once(&mut g1, &w)), Ok(10));
    assert_eq!(ready(poll_once(&mut g2, &w)), Ok(10));
    assert_eq!((map.waiters(), map.len()), (0, 1));

    // With takes: the one woken for the value keeps it, the other fails.
    let map = Map::new();
    let p = map.promise(2).unwrap();
    let (cg, wg) = counting_waker();
    let (ct0, wt0) = counting_waker();
    let (ct1, wt1) = counting_waker();
    let mut g = map.get(&2);
    let mut t0 = map.take(&2);
    let mut t1 = map.take(&2);
    pending(poll_once(&mut g, &wg));
    pending(poll_once(&mut t0, &wt0));
    pending(poll_once(&mut t1, &wt1));
    map.insert(2, 20);
    assert_eq!((cg.wakes(), ct0.wakes(), ct1.wakes()), (1, 1, 0));
    assert_eq!(p.abandon(), 1);
    assert_eq!((cg.wakes(), ct0.wakes(), ct1.wakes()), (1, 1, 1));
    assert_eq!(ready(poll_once(&mut g, &wg)), Ok(20));
    assert_eq!(ready(poll_once(&mut t0, &wt0)), Ok(20));
    assert_eq!(ready(poll_once(&mut t1, &wt1)), Err(WaitError::Abandoned));
    assert_eq!((map.waiters(), map.len()), (0, 0));
}

// P, 8: abandoning is not sticky: after it, a new get waits as usual, a new promise can be made and fulfilled, and a get_or_promise becomes the producer.
#[test]
fn the_key_is_free_again_after_abandon() {
    let map = Map::new();
    let (c, w) = counting_waker();
    let mut failed = map.get(&3);
    pending(poll_once(&mut failed, &w));
    assert_eq!(map.promise(3).unwrap().abandon(), 1);
    assert_eq!(ready(poll_once(&mut failed, &w)), Err(WaitError::Abandoned));

    let mut g = map.get(&3);
    pending(poll_once(&mut g, &w));
    assert_eq!(map.waiters(), 1);
    let p = map.promise(3).expect("the key is free");
    assert_eq!(p.fulfill(30), None);
    assert_eq!(c.wakes(), 2);
    assert_eq!(ready(poll_once(&mut g, &w)), Ok(30));

    assert_eq!(map.remove(&3), Some(30));
    let p = map.promise(3).unwrap();
    drop(p);
    let mut gp = map.get_or_promise(&3);
    let p = promise(ready(poll_once(&mut gp, &w)));
    assert_eq!(p.fulfill(31), None);
    assert_eq!((map.waiters(), map.len(), c.wakes()), (0, 1, 2));
}

// P, 1: a get_or_promise of a key that futures already wait on (so it has an
// entry, with no value and no promise) makes its caller the producer, and
// the value it delivers wakes them.
#[test]
fn get_or_promise_of_an_awaited_key_makes_the_caller_its_producer() {
    let map: AwaitMap<u32, u32> = AwaitMap::new();
    let (c, w) = counting_waker();
    let mut t = map.take(&5);
    pending(poll_once(&mut t, &w));
    let mut gp = map.get_or_promise(&5);
    let p = promise(ready(poll_once(&mut gp, &w)));
    assert_eq!(c.wakes(), 0);
    assert_eq!(p.fulfill(50), None);
    assert_eq!(c.wakes(), 1);
    assert_eq!(ready(poll_once(&mut t, &w)), Ok(50));
    assert!(map.is_empty());
    assert_eq!(map.waiters(), 0);
}

// P, 1, 8: a get cancelled while a promise keeps its key's entry still
// learns it after a take that came later has taken the promised value and
// left: the entry it failed in is gone by then, its failure is not.
#[test]
fn a_cancelled_get_learns_it_after_a_later_take_empties_its_entry() {
    let map: AwaitMap<u32, u32> = AwaitMap::new();
    let (c, w) = counting_waker();
    let p = map.promise(6).expect("the key is free");
    let mut g = map.get(&6);
    pending(poll_once(&mut g, &w));
    assert_eq!(map.cancel(&6), 1);
    let mut t = map.take(&6);
    pending(poll_once(&mut t, &w));
    assert_eq!(p.fulfill(60), None);
    assert_eq!(c.wakes(), 2);
    assert_eq!(ready(poll_once(&mut t, &w)), Ok(60));
    assert_eq!(ready(poll_once(&mut g, &w)), Err(WaitError::Cancelled));
    assert!(map.is_empty());
    assert_eq!(map.waiters(), 0);
}

// P: a promise dropped while its producer unwinds from a panic fails the plain waiters with Abandoned and hands the work to a waiting get_or_promise.
#[test]
fn a_promise_dropped_during_a_panic_fails_its_waiters() {
    let map = Map::new();
    let produce = |p: Promise<'_, u32, u32>, fail: bool| -> u32 {
        let held = p;
        if fail {
            panic!("the producer failed (this panic is expected by the test)");
        }
        held.fulfill(4);
        4
    };

    let p = map.promise(4).unwrap();
    let (cg, wg) = counting_waker();
    let (cc, wc) = counting_waker();
    let mut g = map.get(&4);
    let mut co = map.get_or_promise(&4);
    pending(poll_once(&mut g, &wg));
    pending(poll_once(&mut co, &wc));
    assert_eq!(map.waiters(), 2);

    let unwound = catch_unwind(AssertUnwindSafe(|| produce(p, true)));
    assert!(unwound.is_err());
    assert_eq!((cg.wakes(), cc.wakes()), (1, 1));
    assert_eq!(ready(poll_once(&mut g, &wg)), Err(WaitError::Abandoned));
    let p = promise(ready(poll_once(&mut co, &wc)));
    assert_eq!(map.waiters(), 0);
    assert_eq!(produce(p, false), 4);
    assert_eq!((map.waiters(), map.len(), map.try_get(&4)), (0, 1, Some(4)));
    assert_eq!((cg.wakes(), cc.wakes()), (1, 1));
}

// ---------------------------------------------------------------------------
// `get_or_promise`: coalescing.
// ---------------------------------------------------------------------------

// P, 2, 3: get_or_promise of a present key is Ready with the value on its first poll and registers nothing; an unpolled one takes no promise.
#[test]
fn get_or_promise_of_a_present_key_is_ready_at_once_and_an_unpolled_one_does_nothing() {
    let map = Map::new();
    let (c, w) = counting_waker();
    drop(map.get_or_promise(&1));
    assert_eq!(map.waiters(), 0);
    let p = map
        .promise(1)
        .expect("an unpolled get_or_promise took nothing");
    p.fulfill(10);
    let mut gp = map.get_or_promise(&1);
    assert_eq!(value(ready(poll_once(&mut gp, &w))), 10);
    assert_eq!(
        (map.waiters(), map.len(), c.wakes(), kept(&c)),
        (0, 1, 0, 0)
    );
}

// P, 1: N get_or_promise callers on a miss: the first gets the promise, the others wait (as gets) and are woken once each by its fulfill, all with the value.
#[test]
fn coalesced_callers_share_one_promise_and_all_get_the_value() {
    const N: usize = 6;
    let map = Map::new();
    let mut callers: Vec<_> = (0..N)
        .map(|_| (counting_waker(), map.get_or_promise(&9)))
        .collect();
    let mut promises = Vec::new();
    for ((_, w), f) in &mut callers {
        match poll_once(f, w) {
            Poll::Ready(r) => promises.push(promise(r)),
            Poll::Pending => {}
        }
    }
    assert_eq!(promises.len(), 1, "one producer");
    assert_eq!(map.waiters(), N - 1);
    assert!(map.promise(9).is_none());

    assert_eq!(promises.pop().unwrap().fulfill(90), None);
    for ((c, w), f) in &mut callers[1..] {
        assert_eq!(c.wakes(), 1);
        assert_eq!(value(ready(poll_once(f, w))), 90);
        assert_eq!(kept(c), 0);
    }
    assert_eq!((map.waiters(), map.len()), (0, 1));
}

// P, 1: the same with the work inside async callers: the producer awaits its input, the other callers wait for it; the work runs once.
#[test]
fn coalesced_async_callers_run_the_work_once() {
    const N: usize = 5;
    let map = Map::new();
    let runs = AtomicUsize::new(0);
    let mut callers: Vec<_> = (0..N)
        .map(|_| {
            let fut: Pin<Box<dyn Future<Output = _>>> = Box::pin(lookup(&map, 8, &runs));
            (counting_waker(), fut)
        })
        .collect();
    for ((_, w), f) in &mut callers {
        pending(poll_boxed(f, w));
    }
    // One producer waits for its input, the others for the producer.
    assert_eq!((runs.load(Ordering::SeqCst), map.waiters()), (1, N));

    map.insert(INPUT, 21);
    let woken: Vec<usize> = callers.iter().map(|((c, _), _)| c.wakes()).collect();
    assert_eq!(
        woken.iter().sum::<usize>(),
        1,
        "only the producer: {woken:?}"
    );
    let producer = woken.iter().position(|&n| n == 1).unwrap();
    let ((_, w), f) = &mut callers[producer];
    assert_eq!(ready(poll_boxed(f, w)), Ok(42));
    for (i, ((c, w), f)) in callers.iter_mut().enumerate() {
        if i != producer {
            assert_eq!(c.wakes(), 1);
            assert_eq!(ready(poll_boxed(f, w)), Ok(42));
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!((map.waiters(), map.len()), (0, 2));
}

// P: producer abandons with 3 get_or_promise callers waiting: each is woken once, the first polled gets the promise, the other two wait again and get the new producer's value.
#[test]
fn abandon_hands_the_work_to_exactly_one_waiting_caller() {
    // Every polling order of the three woken callers.
    for order in [[0, 1, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
        let map = Map::new();
        let mut first = map.get_or_promise(&1);
        let (c0, w0) = counting_waker();
        let p = promise(ready(poll_once(&mut first, &w0)));
        let mut callers: Vec<_> = (0..3)
            .map(|_| (counting_waker(), map.get_or_promise(&1)))
            .collect();
        for ((_, w), f) in &mut callers {
            pending(poll_once(f, w));
        }
        assert_eq!(map.waiters(), 3);

        // The get_or_promise waiters are counted: they were failed (and
        // start over), registered as gets.
        assert_eq!(p.abandon(), 3);
        for ((c, _), _) in &callers {
            assert_eq!(c.wakes(), 1);
        }
        let mut heir = None;
        for &i in &order {
            let ((_, w), f) = &mut callers[i];
            match poll_once(f, w) {
                Poll::Ready(r) => {
                    assert!(heir.is_none(), "two callers got the promise");
                    heir = Some((i, promise(r)));
                }
                Poll::Pending => {}
            }
        }
        let (heir, p) = heir.expect("one caller took the work over");
        assert_eq!(heir, order[0], "the first polled takes over");
        assert_eq!((map.waiters(), map.len()), (2, 0));

        assert_eq!(p.fulfill(10), None);
        for (i, ((c, w), f)) in callers.iter_mut().enumerate() {
            if i != heir {
                assert_eq!(c.wakes(), 2);
                assert_eq!(value(ready(poll_once(f, w))), 10);
            }
        }
        assert_eq!(callers[heir].0.0.wakes(), 1);
        assert_eq!(c0.wakes(), 0);
        assert_eq!((map.waiters(), map.len()), (0, 1));
    }
}

// P, 5: woken callers that are dropped before they poll do not stall the hand-over: the rest take the work; so does a caller after the heir drops its promise.
#[test]
fn the_work_is_taken_over_when_the_woken_callers_are_dropped() {
    let map = Map::new();
    let p = map.promise(2).unwrap();
    let mut callers: Vec<_> = (0..3)
        .map(|_| (counting_waker(), Some(map.get_or_promise(&2))))
        .collect();
    for ((_, w), f) in &mut callers {
        pending(poll_once(f.as_mut().unwrap(), w));
    }
    drop(p);
    // The first and earliest woken is dropped without polling.
    callers[0].1 = None;
    assert_eq!(map.waiters(), 2);
    let ((_, w1), f1) = &mut callers[1];
    let heir = promise(ready(poll_once(f1.as_mut().unwrap(), w1)));
    let ((c2, w2), f2) = &mut callers[2];
    pending(poll_once(f2.as_mut().unwrap(), w2));
    assert_eq!((map.waiters(), c2.wakes()), (1, 1));

    // The heir fails too: the last caller takes over.
    drop(heir);
    assert_eq!(c2.wakes(), 2);
    let last = promise(ready(poll_once(f2.as_mut().unwrap(), w2)));
    assert_eq!(map.waiters(), 0);
    assert_eq!(last.fulfill(20), None);
    assert_eq!(
        (map.waiters(), map.len(), map.try_get(&2)),
        (0, 1, Some(20))
    );
    for ((c, _), _) in &callers {
        assert_eq!(kept(c), 0);
    }

    // Every woken caller dropped: the key is simply free.
    let p = map.promise(3).unwrap();
    let mut a = map.get_or_promise(&3);
    let mut b = map.get_or_promise(&3);
    let (c, w) = counting_waker();
    pending(poll_once(&mut a, &w));
    pending(poll_once(&mut b, &w));
    drop(p);
    drop((a, b));
    assert_eq!((map.waiters(), c.wakes(), kept(&c)), (0, 2, 0));
    assert!(map.promise(3).is_some());
}

// P: an async producer cancelled (its future dropped) while it holds the promise hands the work to one waiting async caller; the work runs again once.
#[test]
fn a_cancelled_async_producer_hands_the_work_over() {
    const N: usize = 4;
    let map = Map::new();
    let runs = AtomicUsize::new(0);
    let mut callers: Vec<_> = (0..N)
        .map(|_| {
            let fut: Pin<Box<dyn Future<Output = _>>> = Box::pin(lookup(&map, 6, &runs));
            (counting_waker(), Some(fut))
        })
        .collect();
    for ((_, w), f) in &mut callers {
        pending(poll_boxed(f.as_mut().unwrap(), w));
    }
    assert_eq!((runs.load(Ordering::SeqCst), map.waiters()), (1, N));
    // `lookup` calls get_or_promise first, so caller 0 is the producer.
    callers[0].1 = None;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    for ((c, w), f) in &mut callers[1..] {
        assert_eq!(c.wakes(), 1);
        pending(poll_boxed(f.as_mut().unwrap(), w));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one caller took the work");
    assert_eq!(map.waiters(), N - 1);

    map.insert(INPUT, 30);
    for _ in 0..2 {
        for ((_, w), f) in &mut callers[1..] {
            if let Some(fut) = f {
                if let Poll::Ready(r) = poll_boxed(fut, w) {
                    assert_eq!(r, Ok(60));
                    *f = None;
                }
            }
        }
    }
    assert!(
        callers.iter().all(|(_, f)| f.is_none()),
        "every caller done"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!((map.waiters(), map.len()), (0, 2));
}

// P, 1: a plain get on a promised key fails with Abandoned when the producer drops the promise, while a get_or_promise on the same key takes the work.
#[test]
fn abandon_fails_plain_waiters_and_hands_get_or_promise_callers_the_work() {
    let map = Map::new();
    let p = map.promise(1).unwrap();
    let (cg, wg) = counting_waker();
    let (ct, wt) = counting_waker();
    let (cc, wc) = counting_waker();
    let mut g = map.get(&1);
    let mut t = map.take(&1);
    let mut co = map.get_or_promise(&1);
    pending(poll_once(&mut co, &wc));
    pending(poll_once(&mut g, &wg));
    pending(poll_once(&mut t, &wt));
    assert_eq!(p.abandon(), 3);
    assert_eq!((cg.wakes(), ct.wakes(), cc.wakes()), (1, 1, 1));
    assert_eq!(ready(poll_once(&mut g, &wg)), Err(WaitError::Abandoned));
    assert_eq!(ready(poll_once(&mut t, &wt)), Err(WaitError::Abandoned));
    let heir = promise(ready(poll_once(&mut co, &wc)));
    assert_eq!((map.waiters(), map.len()), (0, 0));
    heir.fulfill(1);
    assert_eq!((map.waiters(), map.len(), cc.wakes()), (0, 1, 1));
}

// P, 1: a get_or_promise waiter resolves with the value a plain insert stores while the key is promised; the promise stays held.
#[test]
fn a_waiting_get_or_promise_takes_a_value_a_plain_insert_stores() {
    let map = Map::new();
    let p = map.promise(1).unwrap();
    let (c, w) = counting_waker();
    let mut co = map.get_or_promise(&1);
    pending(poll_once(&mut co, &w));
    map.insert(1, 5);
    assert_eq!(c.wakes(), 1);
    assert_eq!(value(ready(poll_once(&mut co, &w))), 5);
    assert!(map.promise(1).is_none(), "still promised");
    assert_eq!(p.fulfill(6), Some(5));
    assert_eq!((map.waiters(), map.len(), c.wakes()), (0, 1, 1));
}

// P, 4: a get_or_promise repolled with another waker keeps one registration; only the newest waker is woken.
#[test]
fn get_or_promise_repolled_with_a_new_waker_wakes_only_the_newest() {
    let map = Map::new();
    let p = map.promise(1).unwrap();
    let (ca, wa) = counting_waker();
    let (cb, wb) = counting_waker();
    let mut co = map.get_or_promise(&1);
    pending(poll_once(&mut co, &wa));
    pending(poll_once(&mut co, &wb));
    assert_eq!((map.waiters(), kept(&ca), kept(&cb)), (1, 0, 1));
    p.fulfill(1);
    assert_eq!((ca.wakes(), cb.wakes()), (0, 1));
    assert_eq!(value(ready(poll_once(&mut co, &wb))), 1);
    assert_eq!((map.waiters(), kept(&cb)), (0, 0));
}

// P, 8: cancel fails waiting get_or_promise callers with Cancelled (they do not take over) and leaves the promise held; it is not sticky.
#[test]
fn cancel_fails_get_or_promise_waiters_with_cancelled() {
    let map = Map::new();
    let p = map.promise(1).unwrap();
    let (c, w) = counting_waker();
    let mut co = map.get_or_promise(&1);
    let mut g = map.get(&1);
    pending(poll_once(&mut co, &w));
    pending(poll_once(&mut g, &w));
    assert_eq!(map.cancel(&1), 2);
    assert_eq!(c.wakes(), 2);
    assert!(map.promise(1).is_none(), "the producer still holds the key");
    assert_eq!(error(ready(poll_once(&mut co, &w))), WaitError::Cancelled);
    assert_eq!(ready(poll_once(&mut g, &w)), Err(WaitError::Cancelled));
    assert_eq!(map.waiters(), 0);
    assert_repoll_panics(&mut co, &w);

    let mut again = map.get_or_promise(&1);
    pending(poll_once(&mut again, &w));
    assert_eq!(map.waiters(), 1);
    p.fulfill(10);
    assert_eq!(c.wakes(), 3);
    assert_eq!(value(ready(poll_once(&mut again, &w))), 10);
    assert_eq!((map.waiters(), map.len()), (0, 1));
}

// P, 9: close fails waiting get_or_promise callers with Closed (also one failed by an abandon after the close, woken once); afterwards absent keys give Err(Closed), present ones the value.
#[test]
fn close_fails_get_or_promise_waiters_with_closed() {
    let map = Map::new();
    map.insert(1, 10);
    let p2 = map.promise(2).unwrap();
    let p3 = map.promise(3).unwrap();
    let (c2, w2) = counting_waker();
    let (c3, w3) = counting_waker();
    let mut co2 = map.get_or_promise(&2);
    let mut co3 = map.get_or_promise(&3);
    pending(poll_once(&mut co2, &w2));
    pending(poll_once(&mut co3, &w3));

    map.close();
    assert_eq!((c2.wakes(), c3.wakes()), (1, 1));
    assert_eq!(error(ready(poll_once(&mut co2, &w2))), WaitError::Closed);
    // Key 3's producer gives up before its woken waiter polls: the waiter
    // starts over, but a closed map makes no new producer.
    drop(p3);
    assert_eq!(c3.wakes(), 1, "already woken by the close");
    assert_eq!(error(ready(poll_once(&mut co3, &w3))), WaitError::Closed);
    assert_eq!(map.waiters(), 0);

    let (c, w) = counting_waker();
    let mut absent = map.get_or_promise(&4);
    assert_eq!(error(ready(poll_once(&mut absent, &w))), WaitError::Closed);
    assert_repoll_panics(&mut absent, &w);
    let mut promised = map.get_or_promise(&2);
    assert_eq!(
        error(ready(poll_once(&mut promised, &w))),
        WaitError::Closed
    );
    let mut present = map.get_or_promise(&1);
    assert_eq!(value(ready(poll_once(&mut present, &w))), 10);
    assert!(map.promise(3).is_none());

    // The surviving producer still stores.
    assert_eq!(p2.fulfill(20), None);
    let mut now = map.get_or_promise(&2);
    assert_eq!(value(ready(poll_once(&mut now, &w))), 20);
    assert_eq!((map.waiters(), map.len(), c.wakes()), (0, 2, 0));
}

// P, 5: a get_or_promise dropped while it waits deregisters at once (waiters back to 0, its waker clone freed) and leaks nothing: the entry and its key go when the promise resolves.
#[test]
fn a_get_or_promise_dropped_mid_wait_deregisters() {
    let keys = live_counter();
    let map: AwaitMap<Tracked, u32> = AwaitMap::new();
    let key = Tracked::new(1, &keys);
    let (c, w) = counting_waker();

    // Fulfilled after the drop.
    let p = map.promise(key.clone()).unwrap();
    assert_eq!(live(&keys), 2, "the map holds the promised key");
    let mut co = map.get_or_promise(&key);
    pending(poll_once(&mut co, &w));
    assert_eq!((map.waiters(), kept(&c)), (1, 1));
    drop(co);
    assert_eq!((map.waiters(), kept(&c)), (0, 0));
    assert_eq!(p.fulfill(7), None);
    assert_eq!(c.wakes(), 0);
    assert_eq!(map.remove(&key), Some(7));
    assert_eq!(live(&keys), 1, "the entry is gone");

    // Abandoned after the drop: nobody left to fail.
    let p = map.promise(key.clone()).unwrap();
    let mut co = map.get_or_promise(&key);
    pending(poll_once(&mut co, &w));
    drop(co);
    assert_eq!(p.abandon(), 0);
    assert_eq!((map.waiters(), map.len(), live(&keys)), (0, 0, 1));

    // Dropped after it started over and waits for the heir.
    let p = map.promise(key.clone()).unwrap();
    let mut heir = map.get_or_promise(&key);
    let mut co = map.get_or_promise(&key);
    pending(poll_once(&mut heir, &w));
    pending(poll_once(&mut co, &w));
    drop(p);
    let p = promise(ready(poll_once(&mut heir, &w)));
    pending(poll_once(&mut co, &w));
    assert_eq!(map.waiters(), 1);
    drop(co);
    assert_eq!((map.waiters(), kept(&c)), (0, 0));
    drop(p);
    assert_eq!((map.waiters(), map.len(), live(&keys)), (0, 0, 1));
    assert_eq!(c.wakes(), 2, "the first abandon woke both");
}

// P, 12: polling a get_or_promise again after it returned Ready (a value, a promise or an error) panics with the documented message.
#[test]
fn get_or_promise_polled_after_ready_panics() {
    let map = Map::new();
    let (_c, w) = counting_waker();
    map.insert(1, 1);
    let mut hit = map.get_or_promise(&1);
    assert_eq!(value(ready(poll_once(&mut hit, &w))), 1);
    assert_repoll_panics(&mut hit, &w);

    let mut miss = map.get_or_promise(&2);
    let p = promise(ready(poll_once(&mut miss, &w)));
    assert_repoll_panics(&mut miss, &w);
    // The panic left the promise and the map alone.
    assert!(map.promise(2).is_none());
    p.fulfill(2);

    let p = map.promise(3).unwrap();
    let mut waited = map.get_or_promise(&3);
    pending(poll_once(&mut waited, &w));
    p.fulfill(3);
    assert_eq!(value(ready(poll_once(&mut waited, &w))), 3);
    assert_repoll_panics(&mut waited, &w);
    assert_eq!((map.waiters(), map.len()), (0, 3));
}

// P: a woken get_or_promise caller that finds neither a value nor a producer (the value was removed or taken between the fulfill and its poll) must not wait for a producer that does not exist: it takes the work, as a fresh call would.
#[test]
fn a_woken_caller_that_finds_the_value_gone_takes_the_work() {
    for by_take in [false, true] {
        let map = Map::new();
        let p = map.promise(1).unwrap();
        let (c, w) = counting_waker();
        let mut co = map.get_or_promise(&1);
        pending(poll_once(&mut co, &w));
        assert_eq!(p.fulfill(10), None);
        assert_eq!(c.wakes(), 1);
        // The value leaves before the waiter runs: evicted, or taken by a
        // fresh take (guarantee 2).
        if by_take {
            let mut t = map.take(&1);
            assert_eq!(ready(poll_once(&mut t, &w)), Ok(10));
        } else {
            assert_eq!(map.remove(&1), Some(10));
        }
        // Nobody produces the key now (a fresh caller would get the
        // promise): the one that waited must take the work, or it waits for
        // an insert that may never come.
        let p = promise(ready(poll_once(&mut co, &w)));
        assert_eq!(map.waiters(), 0);
        p.fulfill(11);
        assert_eq!((map.waiters(), map.len(), c.wakes()), (0, 1, 1));
    }
}

// ---------------------------------------------------------------------------
// Threads and tokio.
// ---------------------------------------------------------------------------

/// The value the threads produce for key `k`.
fn value_of(k: u32) -> u64 {
    u64::from(k) * 1_000 + 7
}

/// The keys whose first production fails (drops its promise).
fn fails_first(k: u32) -> bool {
    k % 5 == 0
}

// P, 1, 10: 8 threads run get_or_promise on the same 50 keys (3 and 10 under miri; block_on) while a getter thread waits on each; every 5th key's first producer drops its promise. Each key's work succeeds exactly once, every thread gets every value, only the failing keys' plain gets may see Abandoned, nothing hangs.
#[test]
fn threads_coalesce_and_survive_failing_producers() {
    no_hang_or(
        "coalescing threads",
        "a caller waits for a producer that is gone",
        || {
            let threads: usize = if cfg!(miri) { 3 } else { 8 };
            let keys: u32 = if cfg!(miri) { 10 } else { 50 };
            let map: AwaitMap<u32, u64> = AwaitMap::new();
            let attempts: Vec<AtomicUsize> = (0..keys).map(|_| AtomicUsize::new(0)).collect();
            let successes: Vec<AtomicUsize> = (0..keys).map(|_| AtomicUsize::new(0)).collect();
            let received = AtomicUsize::new(0);
            let abandoned = AtomicUsize::new(0);

            let start = Barrier::new(threads);
            thread::scope(|s| {
                for t in 0..threads {
                    let (map, attempts, successes, received, start) =
                        (&map, &attempts, &successes, &received, &start);
                    s.spawn(move || {
                        start.wait();
                        let mut order: Vec<u32> = (0..keys).collect();
                        XorShift::new(t as u64).shuffle(&mut order);
                        for k in order {
                            let v = loop {
                                let got = futures::executor::block_on(map.get_or_promise(&k));
                                match got {
                                    Ok(ValueOrPromise::Value(v)) => break v,
                                    Ok(ValueOrPromise::Promise(p)) => {
                                        thread::yield_now(); // the work
                                        let n = attempts[k as usize].fetch_add(1, Ordering::SeqCst);
                                        if fails_first(k) && n == 0 {
                                            // Give other callers a moment to queue
                                            // up behind this producer (bounded).
                                            for _ in 0..100 {
                                                if map.waiters() >= 2 {
                                                    break;
                                                }
                                                thread::yield_now();
                                            }
                                            drop(p);
                                            continue;
                                        }
                                        successes[k as usize].fetch_add(1, Ordering::SeqCst);
                                        assert_eq!(p.fulfill(value_of(k)), None);
                                        break value_of(k);
                                    }
                                    Err(e) => panic!("thread {t}, key {k}: Err({e:?})"),
                                }
                            };
                            assert_eq!(v, value_of(k));
                            received.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                }
                let (map, abandoned) = (&map, &abandoned);
                s.spawn(move || {
                    for k in 0..keys {
                        let v = loop {
                            match map.get_blocking(&k) {
                                Ok(v) => break v,
                                Err(WaitError::Abandoned) if fails_first(k) => {
                                    abandoned.fetch_add(1, Ordering::SeqCst);
                                }
                                Err(e) => panic!("getter, key {k}: Err({e:?})"),
                            }
                        };
                        assert_eq!(v, value_of(k));
                    }
                });
            });

            for k in 0..keys {
                let i = k as usize;
                let want = if fails_first(k) { 2 } else { 1 };
                assert_eq!(attempts[i].load(Ordering::SeqCst), want, "attempts on {k}");
                assert_eq!(successes[i].load(Ordering::SeqCst), 1, "productions of {k}");
            }
            assert_eq!(received.load(Ordering::SeqCst), threads * keys as usize);
            let failing = (0..keys).filter(|&k| fails_first(k)).count();
            assert!(abandoned.load(Ordering::SeqCst) <= failing);
            assert_eq!((map.waiters(), map.len()), (0, keys as usize));
        },
    );
}

/// Sleeps until `n` futures wait on the map: the tasks under test are
/// registered. Bounded by the test's hang detector.
async fn until_waiters(map: &AwaitMap<u32, u32>, n: usize) {
    while map.waiters() < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// P: tokio tasks aborted (JoinHandle::abort) while holding a promise: the plain get and take waiting on the key get Abandoned, the get_or_promise tasks take the work over, once.
#[test]
fn tokio_tasks_aborted_while_holding_a_promise() {
    no_hang_or(
        "tokio abort",
        "an aborted producer left its waiters hanging",
        || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async {
                let map: Arc<AwaitMap<u32, u32>> = Arc::new(AwaitMap::new());
                let runs = Arc::new(AtomicUsize::new(0));
                let coalescer = |k: u32| {
                    let (map, runs) = (Arc::clone(&map), Arc::clone(&runs));
                    tokio::spawn(async move {
                        match map.get_or_promise(&k).await? {
                            ValueOrPromise::Value(v) => Ok(v),
                            ValueOrPromise::Promise(p) => {
                                runs.fetch_add(1, Ordering::SeqCst);
                                tokio::task::yield_now().await;
                                p.fulfill(k * 11);
                                Ok::<_, WaitError>(k * 11)
                            }
                        }
                    })
                };

                // Key 1: a producer task from `promise`.
                let (held_tx, held_rx) = tokio::sync::oneshot::channel();
                let producer = tokio::spawn({
                    let map = Arc::clone(&map);
                    async move {
                        let p = map.promise(1).expect("key 1 is free");
                        held_tx.send(()).unwrap();
                        std::future::pending::<()>().await;
                        p.fulfill(0);
                    }
                });
                held_rx.await.unwrap();
                let getter = tokio::spawn({
                    let map = Arc::clone(&map);
                    async move { map.get(&1).await }
                });
                let taker = tokio::spawn({
                    let map = Arc::clone(&map);
                    async move { map.take(&1).await }
                });
                let coalescers: Vec<_> = (0..3).map(|_| coalescer(1)).collect();
                until_waiters(&map, 5).await;
                producer.abort();
                assert!(producer.await.unwrap_err().is_cancelled());
                assert_eq!(getter.await.unwrap(), Err(WaitError::Abandoned));
                assert_eq!(taker.await.unwrap(), Err(WaitError::Abandoned));
                for c in coalescers {
                    assert_eq!(c.await.unwrap(), Ok(11));
                }
                assert_eq!(runs.load(Ordering::SeqCst), 1);

                // Key 2: a get_or_promise task that got the promise.
                let (held_tx, held_rx) = tokio::sync::oneshot::channel();
                let first = tokio::spawn({
                    let map = Arc::clone(&map);
                    async move {
                        let Ok(ValueOrPromise::Promise(p)) = map.get_or_promise(&2).await else {
                            panic!("the first caller produces key 2");
                        };
                        held_tx.send(()).unwrap();
                        std::future::pending::<()>().await;
                        p.fulfill(0);
                    }
                });
                held_rx.await.unwrap();
                let coalescers: Vec<_> = (0..3).map(|_| coalescer(2)).collect();
                until_waiters(&map, 3).await;
                first.abort();
                assert!(first.await.unwrap_err().is_cancelled());
                for c in coalescers {
                    assert_eq!(c.await.unwrap(), Ok(22));
                }
                assert_eq!(runs.load(Ordering::SeqCst), 2);
                assert_eq!(map.waiters(), 0);
                assert_eq!((map.try_get(&1), map.try_get(&2)), (Some(11), Some(22)));
            });
        },
    );
}

// ---------------------------------------------------------------------------
// `promise_owned`: a promise that holds its own `Arc` of the map.
// ---------------------------------------------------------------------------

/// Fails to compile unless `T` can be moved into a spawned task or thread.
fn assert_send_static<T: Send + 'static>(_: &T) {}

// P (with 7, 9): `promise_owned` is refused, as `promise` is, while the key has a value or a promise (owned or borrowed), and on a closed map; a refused call takes no `Arc` and drops the key it was given.
#[test]
fn promise_owned_is_refused_when_the_key_has_a_value_a_promise_or_the_map_is_closed() {
    let keys = live_counter();
    let k = |id| Tracked::new(id, &keys);
    let map: Arc<AwaitMap<Tracked, u32>> = Arc::new(AwaitMap::new());
    map.insert(k(1), 10);
    assert!(map.promise_owned(k(1)).is_none(), "key 1 has a value");

    let two = map.promise_owned(k(2)).expect("key 2 is absent");
    assert_send_static(&two);
    assert!(Arc::ptr_eq(two.map(), &map));
    assert!(map.promise_owned(k(2)).is_none(), "owned promise held");
    assert!(map.promise(k(2)).is_none(), "owned promise held");
    let three = map.promise(k(3)).expect("key 3 is absent");
    assert!(map.promise_owned(k(3)).is_none(), "borrowed promise held");
    // The map keeps one key per entry; the refused keys were dropped.
    assert_eq!(live(&keys), 3);
    assert_eq!(Arc::strong_count(&map), 2, "only `two` holds an `Arc`");
    assert_eq!((map.len(), map.try_get(&k(2))), (1, None));

    map.close();
    assert!(map.promise_owned(k(4)).is_none(), "the map is closed");
    assert_eq!(three.abandon(), 0);
    assert!(
        map.promise_owned(k(3)).is_none(),
        "free, but the map is closed"
    );
    // A promise made before the close still stores, as `insert` does.
    assert_eq!(two.fulfill(20), None);
    assert_eq!(map.try_get(&k(2)), Some(20));
    assert_eq!(
        (Arc::strong_count(&map), map.len(), map.waiters()),
        (1, 2, 0)
    );
    drop(map);
    assert_eq!(live(&keys), 0);
}

// P, 1, 10: an `OwnedPromise` made before the spawn and moved into a tokio task is fulfilled there: a get registered before the spawn is woken exactly once and resolves with the value, as does a consumer task; the task's `Arc` goes with it.
#[test]
fn an_owned_promise_fulfilled_from_a_spawned_tokio_task_wakes_its_waiter_once() {
    no_hang_or(
        "owned promise, fulfilled in a task",
        "the waiters were not woken by the task's fulfill",
        || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_time()
                .build()
                .unwrap();
            let map: Arc<Map> = Arc::new(AwaitMap::new());
            rt.block_on(async {
                let promise = map.promise_owned(3).expect("key 3 is free");
                let (c, w) = counting_waker();
                let mut get = map.get(&3);
                pending(poll_once(&mut get, &w));
                let consumer = tokio::spawn(map.get_owned(&3));
                until_waiters(&map, 2).await;
                let producer = tokio::spawn(async move {
                    tokio::task::yield_now().await; // the work
                    promise.fulfill(33)
                });
                assert_eq!(producer.await.unwrap(), None);
                assert_eq!(c.wakes(), 1);
                assert_eq!(ready(poll_once(&mut get, &w)), Ok(33));
                assert_eq!(consumer.await.unwrap(), Ok(33));
                assert_eq!((c.wakes(), kept(&c)), (1, 0));
            });
            drop(rt);
            assert_eq!((map.waiters(), map.try_get(&3)), (0, Some(33)));
            assert_eq!(Arc::strong_count(&map), 1);
            assert!(map.promise_owned(3).is_none(), "key 3 has its value");
        },
    );
}

// P: a tokio task aborted while it holds an `OwnedPromise` (made before the spawn: no hand-shake needed) abandons it: the plain get (woken once) and take fail with Abandoned, the get_or_promise tasks take the work over and it runs once; no `Arc` of the map is left behind.
#[test]
fn a_tokio_task_aborted_while_holding_an_owned_promise() {
    no_hang_or(
        "owned promise, aborted task",
        "an aborted producer left its waiters hanging",
        || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_time()
                .build()
                .unwrap();
            let map: Arc<Map> = Arc::new(AwaitMap::new());
            let runs = Arc::new(AtomicUsize::new(0));
            rt.block_on(async {
                let promise = map.promise_owned(1).expect("key 1 is free");
                let producer = tokio::spawn(async move {
                    std::future::pending::<()>().await; // work that never ends
                    promise.fulfill(0);
                });
                let (c, w) = counting_waker();
                let mut get = map.get(&1);
                pending(poll_once(&mut get, &w));
                let taker = tokio::spawn(map.take_owned(&1));
                let coalescers: Vec<_> = (0..3)
                    .map(|_| {
                        let (map, runs) = (Arc::clone(&map), Arc::clone(&runs));
                        tokio::spawn(async move {
                            match map.get_or_promise(&1).await? {
                                ValueOrPromise::Value(v) => Ok(v),
                                ValueOrPromise::Promise(p) => {
                                    runs.fetch_add(1, Ordering::SeqCst);
                                    tokio::task::yield_now().await;
                                    p.fulfill(11);
                                    Ok::<_, WaitError>(11)
                                }
                            }
                        })
                    })
                    .collect();
                until_waiters(&map, 5).await;
                assert_eq!(c.wakes(), 0);
                producer.abort();
                assert!(producer.await.unwrap_err().is_cancelled());
                assert_eq!(c.wakes(), 1);
                assert_eq!(ready(poll_once(&mut get, &w)), Err(WaitError::Abandoned));
                assert_eq!(taker.await.unwrap(), Err(WaitError::Abandoned));
                for co in coalescers {
                    assert_eq!(co.await.unwrap(), Ok(11));
                }
                assert_eq!((c.wakes(), kept(&c)), (1, 0));
            });
            drop(rt);
            assert_eq!(runs.load(Ordering::SeqCst), 1);
            assert_eq!((map.waiters(), map.try_get(&1)), (0, Some(11)));
            assert_eq!(Arc::strong_count(&map), 1);
        },
    );
}

// P: a thread that panics while it holds an `OwnedPromise` abandons it as it unwinds: by the time `join` returns, the waiting get and take have been woken once and fail with Abandoned, a waiting get_or_promise inherits the work, and the thread's `Arc` is released.
#[test]
fn a_thread_that_panics_holding_an_owned_promise_abandons_it() {
    let map: Arc<Map> = Arc::new(AwaitMap::new());
    let job = map.promise_owned(4).expect("key 4 is free");
    let (cg, wg) = counting_waker();
    let (ct, wt) = counting_waker();
    let (cc, wc) = counting_waker();
    let mut get = map.get(&4);
    let mut take = map.take(&4);
    let mut co = map.get_or_promise(&4);
    pending(poll_once(&mut get, &wg));
    pending(poll_once(&mut take, &wt));
    pending(poll_once(&mut co, &wc));

    let worker = thread::spawn(move || {
        let _held = job;
        panic!("the worker failed (this panic is expected by the test)");
    });
    assert!(worker.join().is_err());
    assert_eq!(Arc::strong_count(&map), 1);
    assert_eq!((cg.wakes(), ct.wakes(), cc.wakes()), (1, 1, 1));
    assert_eq!(ready(poll_once(&mut get, &wg)), Err(WaitError::Abandoned));
    assert_eq!(ready(poll_once(&mut take, &wt)), Err(WaitError::Abandoned));
    let heir = promise(ready(poll_once(&mut co, &wc)));
    assert_eq!(map.waiters(), 0);
    assert_eq!(heir.fulfill(44), None);
    assert_eq!((map.len(), map.try_get(&4)), (1, Some(44)));
    assert_eq!((cg.wakes(), ct.wakes(), cc.wakes()), (1, 1, 1));
}

// P: `OwnedPromise::abandon()` returns how many waiting futures it woke, as `Promise::abandon` does (the plain gets and takes, which fail, and the get_or_promise callers, which start over; not a future dropped before it), and frees the key.
#[test]
fn owned_abandon_returns_how_many_waiters_it_woke() {
    let map: Arc<Map> = Arc::new(AwaitMap::new());
    assert_eq!(map.promise_owned(1).unwrap().abandon(), 0);
    assert_eq!(Arc::strong_count(&map), 1);

    let p = map.promise_owned(1).unwrap();
    let (c, w) = counting_waker();
    let mut g1 = map.get(&1);
    let mut g2 = map.get(&1);
    let mut t = map.take(&1);
    let mut co = map.get_or_promise(&1);
    let mut gone = map.get(&1);
    for g in [&mut g1, &mut g2, &mut gone] {
        pending(poll_once(g, &w));
    }
    pending(poll_once(&mut t, &w));
    pending(poll_once(&mut co, &w));
    drop(gone);
    assert_eq!(map.waiters(), 4);
    assert_eq!(p.abandon(), 4);
    assert_eq!(Arc::strong_count(&map), 1);
    assert_eq!(c.wakes(), 4);
    assert_eq!(ready(poll_once(&mut g1, &w)), Err(WaitError::Abandoned));
    assert_eq!(ready(poll_once(&mut g2, &w)), Err(WaitError::Abandoned));
    assert_eq!(ready(poll_once(&mut t, &w)), Err(WaitError::Abandoned));
    // The get_or_promise caller is the new producer; when it gives up, the key is free.
    let heir = promise(ready(poll_once(&mut co, &w)));
    assert!(map.promise_owned(1).is_none(), "the heir holds key 1");
    assert_eq!(heir.abandon(), 0);
    assert_eq!((map.waiters(), map.len(), kept(&c)), (0, 0, 0));
    assert!(map.promise_owned(1).is_some(), "the key is free again");
}

// P, 5: an `OwnedPromise` holds exactly one `Arc` of the map while it lives and gives it back when fulfilled, abandoned or dropped; it keeps the map alive after the caller's last `Arc` is gone, and the map, with its keys and values, is freed with it.
#[test]
fn an_owned_promise_gives_its_arc_back_and_keeps_the_map_alive_until_then() {
    let live_keys = live_counter();
    let live_values = live_counter();
    let k = |id| Tracked::new(id, &live_keys);
    let v = |id| Tracked::new(id, &live_values);
    let map: Arc<AwaitMap<Tracked, Tracked>> = Arc::new(AwaitMap::new());

    let p = map.promise_owned(k(1)).unwrap();
    assert_eq!(Arc::strong_count(&map), 2);
    let shown = format!("{p:?}");
    assert!(shown.contains("OwnedPromise") && shown.contains("fulfilled: false"));
    assert_eq!(p.fulfill(v(1)), None);
    assert_eq!(Arc::strong_count(&map), 1, "fulfill gave the `Arc` back");
    drop(map.promise_owned(k(2)).unwrap());
    assert_eq!(Arc::strong_count(&map), 1, "drop gave the `Arc` back");
    assert_eq!(map.promise_owned(k(3)).unwrap().abandon(), 0);
    assert_eq!(Arc::strong_count(&map), 1, "abandon gave the `Arc` back");
    // The abandoned keys left the map with their reservations.
    assert_eq!((live(&live_keys), live(&live_values)), (1, 1));

    // The promise outlives the caller's `Arc`; the map lives until it goes.
    let last = map.promise_owned(k(4)).unwrap();
    let weak = Arc::downgrade(&map);
    drop(map);
    assert_eq!(weak.strong_count(), 1, "the promise keeps the map alive");
    assert_eq!(last.map().try_get(&k(1)).map(|v| v.id), Some(1));
    assert_eq!(last.fulfill(v(4)), None);
    assert_eq!(weak.strong_count(), 0, "the map went with the promise");
    assert_eq!((live(&live_keys), live(&live_values)), (0, 0));

    // The same when the last holder is a promise that is dropped unfulfilled.
    let map: Arc<AwaitMap<Tracked, Tracked>> = Arc::new(AwaitMap::new());
    map.insert(k(5), v(5));
    let last = map.promise_owned(k(6)).unwrap();
    let weak = Arc::downgrade(&map);
    drop(map);
    assert_eq!(weak.strong_count(), 1);
    drop(last);
    assert_eq!(weak.strong_count(), 0);
    assert_eq!((live(&live_keys), live(&live_values)), (0, 0));
}

// P, 1: `get_or_promise_owned` gives a `'static` future whose promise can be
// handed to a spawned tokio task (the borrowed form cannot outlive the map
// reference); concurrent callers wait for that task's value, and the value
// path needs no promise.
#[test]
fn get_or_promise_owned_hands_the_work_to_a_spawned_task() {
    use awaitmap::OwnedValueOrPromise;
    no_hang_or(
        "get_or_promise_owned",
        "the callers were not woken by the spawned producer",
        || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap();
            let map: Arc<Map> = Arc::new(AwaitMap::new());
            let runs = Arc::new(AtomicUsize::new(0));
            rt.block_on(async {
                let lookup = |k: u32| {
                    let (map, runs) = (Arc::clone(&map), Arc::clone(&runs));
                    async move {
                        let fut = map.get_or_promise_owned(&k);
                        assert_send_static(&fut);
                        match fut.await? {
                            OwnedValueOrPromise::Value(v) => Ok(v),
                            OwnedValueOrPromise::Promise(p) => {
                                runs.fetch_add(1, Ordering::SeqCst);
                                // The promise itself goes to another task.
                                let producer = tokio::spawn(async move {
                                    tokio::task::yield_now().await;
                                    p.fulfill(k * 2);
                                });
                                producer.await.unwrap();
                                Ok::<u32, WaitError>(k * 2)
                            }
                        }
                    }
                };
                let callers: Vec<_> = (0..8).map(|_| tokio::spawn(lookup(21))).collect();
                for c in callers {
                    assert_eq!(c.await.unwrap(), Ok(42));
                }
            });
            assert_eq!(
                runs.load(Ordering::SeqCst),
                1,
                "the work ran more than once"
            );
            assert_eq!(map.try_get(&21), Some(42));
            assert_eq!(map.waiters(), 0);
        },
    );
}

// P: an owned promise from `get_or_promise_owned` dropped unfulfilled hands
// the work to the next waiting caller; plain gets fail with `Abandoned`.
#[test]
fn an_abandoned_owned_get_or_promise_hands_the_work_over() {
    use awaitmap::OwnedValueOrPromise;
    let map: Arc<Map> = Arc::new(AwaitMap::new());
    let (_c, waker) = counting_waker();
    let mut first = map.get_or_promise_owned(&5);
    let promise = match ready(poll_once(&mut first, &waker)) {
        Ok(OwnedValueOrPromise::Promise(p)) => p,
        other => panic!("expected the promise, got {other:?}"),
    };
    let mut second = map.get_or_promise_owned(&5);
    let mut plain = map.get(&5);
    pending(poll_once(&mut second, &waker));
    pending(poll_once(&mut plain, &waker));
    assert_eq!(map.waiters(), 2);
    drop(promise);
    assert_eq!(
        ready(poll_once(&mut plain, &waker)),
        Err(WaitError::Abandoned)
    );
    let promise = match ready(poll_once(&mut second, &waker)) {
        Ok(OwnedValueOrPromise::Promise(p)) => p,
        other => panic!("expected the work handed over, got {other:?}"),
    };
    drop(first);
    assert_eq!(promise.fulfill(9), None);
    assert!(matches!(
        ready(poll_once(&mut map.get_or_promise_owned(&5), &waker)),
        Ok(OwnedValueOrPromise::Value(9))
    ));
    assert_eq!(map.waiters(), 0);
}

// P: the former spelling `fulfil` still works (deprecated).
#[test]
#[allow(deprecated)]
fn the_former_fulfil_still_fulfills() {
    let map = Map::new();
    assert_eq!(map.promise(1).unwrap().fulfil(10), None);
    let arc = Arc::new(Map::new());
    assert_eq!(arc.promise_owned(2).unwrap().fulfil(20), None);
    assert_eq!((map.try_get(&1), arc.try_get(&2)), (Some(10), Some(20)));
}
