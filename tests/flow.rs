//! Flow control: backpressure under a limit (`try_insert`, `insert_async`,
//! `insert_blocking`), demand (`Demand::next`) and lifecycle (`closed`,
//! `drained`). Hand-polled with counting wakers first; then real threads and
//! tokio tasks.
//!
//! The crate's numbered guarantees speak of plain waits, not of these tools:
//! each test names the guarantees it leans on (1 store-then-wake, 3 lazy, 5
//! deregistration, 7 remove, 8 cancel, 9 close, 10 happens-before, 12
//! completed futures) and "F" for the flow contract in the docs of
//! `with_limit`, `try_insert`, `insert_async`, `closed`, `drained` and
//! `Demand`.
// The blocking API and the threads below need `std`.
#![cfg(feature = "std")]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::thread;
use std::time::Duration;

use awaitmap::{AwaitMap, InsertAsync, SpinLock, WaitError};
use common::{
    CountingWaker, Tracked, assert_repoll_panics, counting_waker, live, live_counter, no_hang_or,
    pending, poll_once, ready,
};
use foldhash::fast::FixedState;
use futures::FutureExt;

// ---------------------------------------------------------------------------
// Helpers local to this file.
// ---------------------------------------------------------------------------

type Map = AwaitMap<u32, u32>;

/// A hand-polled `insert_async` with its own counting waker, polled only
/// when woken, as an executor would.
struct Producer<'a, V> {
    id: usize,
    fut: Option<InsertAsync<'a, u32, V, awaitmap::DefaultHashBuilder, SpinLock>>,
    counter: Arc<CountingWaker>,
    waker: Waker,
    /// Wakes already answered by a poll.
    seen: usize,
}

impl<'a, V> Producer<'a, V> {
    /// Producer `id` stores `(key, value)`; its first poll must wait.
    #[track_caller]
    fn waiting(id: usize, map: &'a AwaitMap<u32, V>, key: u32, value: V) -> Self {
        let (counter, waker) = counting_waker();
        let mut fut = map.insert_async(key, value);
        pending(poll_once(&mut fut, &waker));
        Producer {
            id,
            fut: Some(fut),
            counter,
            waker,
            seen: 0,
        }
    }

    fn woken(&self) -> bool {
        self.counter.wakes() > self.seen
    }
}

/// Polls every woken, unfinished producer until none is woken; returns the
/// ids of those that completed, in completion order.
fn run_woken<V>(producers: &mut [Producer<'_, V>]) -> Vec<usize> {
    let mut done = Vec::new();
    loop {
        let mut polled = false;
        for p in producers.iter_mut() {
            if p.fut.is_some() && p.woken() {
                polled = true;
                p.seen = p.counter.wakes();
                let fut = p.fut.as_mut().expect("checked above");
                if poll_once(fut, &p.waker).is_ready() {
                    p.fut = None;
                    done.push(p.id);
                }
            }
        }
        if !polled {
            return done;
        }
    }
}

/// Gives a thread that is about to block time to do so. Never asserted on:
/// each test holds whether or not the other thread blocked first.
fn let_it_block() {
    thread::sleep(Duration::from_millis(if cfg!(miri) { 1 } else { 5 }));
}

// ---------------------------------------------------------------------------
// The limit and `try_insert`.
// ---------------------------------------------------------------------------

// F: `limit()` reports what `with_limit` set; `with_limit` is a `const fn`, so a limited map can be a `static`.
#[test]
fn limit_reports_the_limit_set_or_none() {
    static LIMITED: AwaitMap<u32, u32, FixedState, SpinLock> =
        AwaitMap::with_hasher_and_lock(FixedState::with_seed(1), SpinLock::new()).with_limit(1);
    assert_eq!(Map::new().limit(), None);
    assert_eq!(Map::new().with_limit(4).limit(), Some(4));
    assert_eq!(Map::new().with_limit(0).limit(), Some(0));
    assert_eq!(LIMITED.limit(), Some(1));
    assert_eq!(LIMITED.try_insert(1, 10), Ok(None));
    assert_eq!(LIMITED.try_insert(2, 20), Err((2, 20)));
}

// F: a refused `try_insert` hands back the very key and value (nothing dropped, cloned or stored); a limit of 0 refuses every new key.
#[test]
fn try_insert_refuses_at_the_limit_and_hands_the_pair_back_intact() {
    let keys = live_counter();
    let values = live_counter();
    let map: AwaitMap<Tracked, Tracked> = AwaitMap::new().with_limit(2);
    for id in 0..2 {
        let stored = map.try_insert(Tracked::new(id, &keys), Tracked::new(10 * id, &values));
        assert!(matches!(stored, Ok(None)));
    }
    let (k, v) = map
        .try_insert(Tracked::new(7, &keys), Tracked::new(70, &values))
        .expect_err("the map is full");
    assert_eq!((k.id, v.id), (7, 70));
    // Two stored, plus the pair handed back: no copy made, none dropped.
    assert_eq!((live(&keys), live(&values)), (3, 3));
    assert_eq!(map.len(), 2);
    assert!(!map.contains_key(&k));
    drop((k, v));
    assert_eq!((live(&keys), live(&values)), (2, 2));

    let none: AwaitMap<u32, u32> = AwaitMap::new().with_limit(0);
    assert_eq!(none.try_insert(1, 1), Err((1, 1)));
    assert!(none.is_empty());
}

// F: at the limit, replacing the value of a present key is allowed and hands the old value back intact.
#[test]
fn try_insert_replaces_a_present_key_when_full() {
    let values = live_counter();
    let map: AwaitMap<u32, Tracked> = AwaitMap::new().with_limit(2);
    map.insert(1, Tracked::new(10, &values));
    map.insert(2, Tracked::new(20, &values));
    let old = map
        .try_insert(1, Tracked::new(11, &values))
        .expect("replacing is allowed when full")
        .expect("key 1 had a value");
    assert_eq!(old.id, 10);
    assert_eq!(live(&values), 3);
    drop(old);
    assert_eq!(map.len(), 2);
    assert_eq!(map.try_get(&1).map(|v| v.id), Some(11));
    assert!(map.try_insert(3, Tracked::new(30, &values)).is_err());
    assert_eq!(live(&values), 2);
}

// F, 1: at the limit a value that a waiting future will receive is let in
// at once (a get's stays stored, a take's goes straight to the take); a key
// with no waiter is still refused.
#[test]
fn try_insert_at_the_limit_lets_in_a_value_a_future_waits_for() {
    let map = Map::new().with_limit(1);
    map.insert(1, 10);
    let (counter, waker) = counting_waker();
    let mut get = map.get(&2);
    let mut take = map.take(&3);
    pending(poll_once(&mut get, &waker));
    pending(poll_once(&mut take, &waker));
    assert_eq!(map.try_insert(4, 40), Err((4, 40)));
    assert_eq!(map.try_insert(2, 20), Ok(None));
    assert_eq!(map.try_insert(3, 30), Ok(None));
    assert_eq!(counter.wakes(), 2);
    assert_eq!(ready(poll_once(&mut get, &waker)), Ok(20));
    assert_eq!(ready(poll_once(&mut take, &waker)), Ok(30));
    // The get's value stays: two values now, over the limit of one.
    assert_eq!(map.len(), 2);
    assert_eq!(map.try_insert(4, 40), Err((4, 40)));
    // A key whose waiter left is no longer awaited.
    let mut gone = map.get(&5);
    pending(poll_once(&mut gone, &waker));
    drop(gone);
    assert_eq!(map.try_insert(5, 50), Err((5, 50)));
}

// F, 1: the deadlock of an ordered pipeline: keys 2 and 3 fill a map limited
// to 2, the producer of key 1 waits for room, and only then does the
// consumer start waiting for key 1. Its registration lets the producer in.
#[test]
fn a_producer_waiting_for_room_is_let_in_when_a_future_starts_waiting_on_its_key() {
    let map = Map::new().with_limit(2);
    map.insert(2, 20);
    map.insert(3, 30);
    let mut producers = [Producer::waiting(1, &map, 1, 10)];
    assert!(run_woken(&mut producers).is_empty());
    let (counter, waker) = counting_waker();
    let mut take = map.take(&1);
    pending(poll_once(&mut take, &waker));
    assert!(
        producers[0].woken(),
        "the producer of the awaited key was not woken"
    );
    assert_eq!(run_woken(&mut producers), vec![1]);
    assert_eq!(counter.wakes(), 1);
    assert_eq!(ready(poll_once(&mut take, &waker)), Ok(10));
    assert_eq!(map.len(), 2);
}

// F: the same with `get`, and with a producer that is not the one awaited:
// it looks again, is refused, and waits on.
#[test]
fn only_the_producer_of_the_awaited_key_gets_in_the_others_wait_on() {
    let map = Map::new().with_limit(1);
    map.insert(9, 90);
    let mut producers = [
        Producer::waiting(0, &map, 4, 40),
        Producer::waiting(1, &map, 5, 50),
    ];
    let (_counter, waker) = counting_waker();
    let mut get = map.get(&5);
    pending(poll_once(&mut get, &waker));
    assert_eq!(run_woken(&mut producers), vec![1]);
    assert_eq!(ready(poll_once(&mut get, &waker)), Ok(50));
    assert!(producers[0].fut.is_some());
    // The get's value stayed: two values, and room comes back only when
    // both have left.
    assert_eq!(map.remove(&9), Some(90));
    assert!(run_woken(&mut producers).is_empty());
    assert_eq!(map.remove(&5), Some(50));
    assert_eq!(run_woken(&mut producers), vec![0]);
    assert_eq!(map.try_get(&4), Some(40));
}

// F, 1: a reorder buffer with a limit finishes under every arrival order:
// producers of keys 0..5 start in each of the 120 orders, each with
// `insert_async` on a map limited to 1 or 2, while one consumer takes the
// keys in order. Hand-polled, a future polled only when its waker fired.
#[test]
fn a_limited_reorder_buffer_finishes_under_every_arrival_order() {
    fn permutations(items: Vec<u32>) -> Vec<Vec<u32>> {
        if items.len() <= 1 {
            return vec![items];
        }
        let mut all = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.clone();
            let first = rest.remove(i);
            for mut p in permutations(rest) {
                p.insert(0, first);
                all.push(p);
            }
        }
        all
    }
    // Under miri, a sample of the orders.
    let step = if cfg!(miri) { 17 } else { 1 };
    for limit in [1, 2] {
        for order in permutations((0..5).collect()).into_iter().step_by(step) {
            let map = Map::new().with_limit(limit);
            let mut producers: Vec<Producer<'_, u32>> = Vec::new();
            let mut stored_at_once = Vec::new();
            for (id, &k) in order.iter().enumerate() {
                // A producer whose first poll succeeds needs no waiting.
                let mut fut = map.insert_async(k, 100 + k);
                let (counter, waker) = counting_waker();
                match poll_once(&mut fut, &waker) {
                    Poll::Ready(old) => {
                        assert_eq!(old, None);
                        stored_at_once.push(k);
                    }
                    Poll::Pending => producers.push(Producer {
                        id,
                        fut: Some(fut),
                        counter,
                        waker,
                        seen: 0,
                    }),
                }
            }
            let (counter, waker) = counting_waker();
            for next in 0..5 {
                let mut take = map.take(&next);
                let mut seen = 0;
                let got = loop {
                    if let Poll::Ready(r) = poll_once(&mut take, &waker) {
                        break r;
                    }
                    run_woken(&mut producers);
                    assert!(
                        counter.wakes() > seen,
                        "limit {limit}, order {order:?}: stuck waiting for key {next}"
                    );
                    seen = counter.wakes();
                };
                assert_eq!(got, Ok(100 + next), "limit {limit}, order {order:?}");
                run_woken(&mut producers);
            }
            assert!(producers.iter().all(|p| p.fut.is_none()));
            assert!(map.is_empty());
            assert_eq!(map.waiters(), 0);
        }
    }
}

// F, 9: plain `insert` ignores the limit and loses nothing: `len()` passes it, and producers stay refused until `len()` is below it again.
#[test]
fn plain_insert_ignores_the_limit_and_loses_nothing() {
    let values = live_counter();
    let map: AwaitMap<u32, Tracked> = AwaitMap::new().with_limit(2);
    for k in 0..5 {
        assert!(map.insert(k, Tracked::new(k.into(), &values)).is_none());
    }
    assert_eq!(map.len(), 5);
    assert_eq!(live(&values), 5);
    for k in 0..5 {
        assert_eq!(map.try_get(&k).map(|v| v.id), Some(k.into()));
    }
    // len 5, 4, 3, 2: refused each time (the pair comes back and is dropped).
    for k in 0..4 {
        let (key, value) = map
            .try_insert(9, Tracked::new(9, &values))
            .expect_err("over the limit");
        assert_eq!((key, value.id), (9, 9));
        drop(value);
        if k < 3 {
            assert_eq!(map.remove(&k).map(|v| v.id), Some(k.into()));
        }
    }
    assert_eq!(map.len(), 2);
    assert_eq!(map.remove(&3).map(|v| v.id), Some(3));
    assert!(matches!(
        map.try_insert(9, Tracked::new(9, &values)),
        Ok(None)
    ));
    assert_eq!(map.len(), 2);
    drop(map);
    assert_eq!(live(&values), 0);
}

// F, 9: a closed map takes values past its limit, through `try_insert` and a fresh `insert_async`: nothing handed to it is lost.
#[test]
fn a_closed_map_takes_values_past_its_limit() {
    let map = Map::new().with_limit(1);
    map.insert(1, 10);
    assert_eq!(map.try_insert(2, 20), Err((2, 20)));
    map.close();
    assert_eq!(map.try_insert(2, 20), Ok(None));
    assert_eq!(map.insert_async(3, 30).now_or_never(), Some(None));
    assert_eq!(map.len(), 3);
    assert_eq!(
        (map.try_get(&1), map.try_get(&2), map.try_get(&3)),
        (Some(10), Some(20), Some(30))
    );
}

// ---------------------------------------------------------------------------
// `insert_async`.
// ---------------------------------------------------------------------------

// F, 3: `insert_async` is lazy (an unpolled one stores nothing and dropping it drops the pair); without a limit it is ready on its first poll.
#[test]
fn insert_async_is_lazy_and_ready_at_once_without_a_limit() {
    let values = live_counter();
    let map: AwaitMap<u32, Tracked> = AwaitMap::new();
    let unpolled = map.insert_async(1, Tracked::new(1, &values));
    assert!(map.is_empty());
    drop(unpolled);
    assert_eq!(live(&values), 0);
    assert!(map.is_empty());

    let (counter, waker) = counting_waker();
    for k in 0..100 {
        let mut fut = map.insert_async(k, Tracked::new(k.into(), &values));
        assert!(ready(poll_once(&mut fut, &waker)).is_none());
    }
    let mut replace = map.insert_async(5, Tracked::new(50, &values));
    assert_eq!(
        ready(poll_once(&mut replace, &waker)).map(|v| v.id),
        Some(5)
    );
    assert_eq!(map.len(), 100);
    assert_eq!(map.try_get(&5).map(|v| v.id), Some(50));
    assert_eq!(counter.wakes(), 0);
    assert_eq!(live(&values), 100);
}

// F: a full map keeps `insert_async` pending (storing nothing) until room is made; replacing a present key never waits.
#[test]
fn insert_async_waits_while_full_but_replacing_never_waits() {
    let map = Map::new().with_limit(1);
    map.insert(1, 10);
    let (counter, waker) = counting_waker();
    let mut wait = map.insert_async(2, 20);
    pending(poll_once(&mut wait, &waker));
    pending(poll_once(&mut wait, &waker));
    assert!(!map.contains_key(&2));
    let mut replace = map.insert_async(1, 11);
    assert_eq!(ready(poll_once(&mut replace, &waker)), Some(10));
    assert_eq!(counter.wakes(), 0, "replacing a value frees no room");
    pending(poll_once(&mut wait, &waker));
    assert_eq!(map.take(&1).now_or_never(), Some(Ok(11)));
    assert_eq!(counter.wakes(), 1);
    assert_eq!(ready(poll_once(&mut wait, &waker)), None);
    assert_eq!(map.try_get(&2), Some(20));
}

// F, 7: each value taken or removed lets exactly one waiting producer in, and it is one that was woken; the others stay pending.
#[test]
fn each_take_or_remove_lets_exactly_one_waiting_producer_in() {
    let map = Map::new().with_limit(2);
    map.insert(100, 0);
    map.insert(101, 1);
    let mut producers: Vec<_> = (0..3)
        .map(|i| Producer::waiting(i, &map, i as u32, 10 + i as u32))
        .collect();
    let mut stored: Vec<u32> = vec![100, 101];
    let expected = |k: u32| if k >= 100 { k - 100 } else { 10 + k };
    for round in 0..3 {
        // Free one slot: a take, a remove, a take.
        let before: Vec<usize> = producers.iter().map(|p| p.counter.wakes()).collect();
        let key = stored.remove(0);
        let freed = if round == 1 {
            map.remove(&key)
        } else {
            map.take(&key).now_or_never().expect("present").ok()
        };
        assert_eq!(freed, Some(expected(key)));
        let done = run_woken(&mut producers);
        assert_eq!(done.len(), 1, "round {round}: let in {done:?}");
        let id = done[0];
        assert!(producers[id].counter.wakes() > before[id], "let in unwoken");
        stored.push(id as u32);
        assert_eq!(map.len(), 2);
        // Everyone else is still refused, even when polled unwoken.
        for p in producers.iter_mut() {
            if let Some(fut) = p.fut.as_mut() {
                pending(poll_once(fut, &p.waker));
            }
        }
    }
    assert!(producers.iter().all(|p| p.fut.is_none()));
    for k in stored {
        assert_eq!(map.try_get(&k), Some(expected(k)));
    }
}

// F: producers are let in "in the order they started waiting", as the `insert_async` docs say.
#[test]
fn waiting_producers_are_let_in_in_the_order_they_started_waiting() {
    let map = Map::new().with_limit(1);
    map.insert(100, 0);
    let mut producers: Vec<_> = (0..3)
        .map(|i| Producer::waiting(i, &map, i as u32, i as u32))
        .collect();
    let mut order = Vec::new();
    let mut last = 100;
    for _ in 0..3 {
        assert!(map.take(&last).now_or_never().expect("present").is_ok());
        let done = run_woken(&mut producers);
        assert_eq!(done.len(), 1);
        last = done[0] as u32;
        order.push(done[0]);
    }
    assert_eq!(order, [0, 1, 2]);
}

// F: after a producer is let in and the map is full again, the others are not woken for nothing (no spurious wake per freed slot).
#[test]
fn letting_one_producer_in_wakes_no_other() {
    let map = Map::new().with_limit(1);
    map.insert(100, 0);
    let mut producers: Vec<_> = (0..3)
        .map(|i| Producer::waiting(i, &map, i as u32, i as u32))
        .collect();
    assert!(map.take(&100).now_or_never().expect("present").is_ok());
    assert_eq!(run_woken(&mut producers), [0]);
    let wakes: Vec<usize> = producers.iter().map(|p| p.counter.wakes()).collect();
    assert_eq!(wakes, [1, 0, 0]);
}

// F, 5: a waiting producer dropped after it was woken for room passes the room on (the next one is woken and gets in); its pair is dropped unstored.
#[test]
fn a_dropped_waiting_insert_async_passes_the_room_on() {
    let values = live_counter();
    let map: AwaitMap<u32, Tracked> = AwaitMap::new().with_limit(1);
    map.insert(100, Tracked::new(100, &values));
    let mut producers: Vec<_> = (0..3)
        .map(|i| Producer::waiting(i, &map, i as u32, Tracked::new(i as u64, &values)))
        .collect();
    assert_eq!(live(&values), 4);

    // Dropped before it was woken: nobody is woken for it.
    producers[1].fut = None;
    assert_eq!(live(&values), 3);
    assert_eq!(producers[2].counter.wakes(), 0);

    // Woken for room, then dropped: the room goes on to producer 2.
    assert_eq!(
        map.take(&100).now_or_never().map(|r| r.map(|v| v.id)),
        Some(Ok(100))
    );
    assert_eq!(producers[0].counter.wakes(), 1);
    producers[0].fut = None;
    assert_eq!(live(&values), 1);
    assert_eq!(
        producers[2].counter.wakes(),
        1,
        "the freed room was not passed on"
    );
    assert_eq!(run_woken(&mut producers), [2]);
    assert_eq!(map.try_get(&2).map(|v| v.id), Some(2));
    assert!(!map.contains_key(&0) && !map.contains_key(&1));
    assert_eq!(live(&values), 1);
}

// F: a woken producer beaten to the room by a fresh `try_insert` waits again, and the next freed slot lets it in (no stuck producer).
#[test]
fn a_producer_beaten_to_the_room_waits_again_and_gets_the_next_slot() {
    let map = Map::new().with_limit(1);
    map.insert(100, 0);
    let mut producers = vec![Producer::waiting(0, &map, 1, 1)];
    assert_eq!(map.take(&100).now_or_never(), Some(Ok(0)));
    assert_eq!(map.try_insert(2, 2), Ok(None));
    assert_eq!(run_woken(&mut producers), Vec::<usize>::new());
    assert!(!map.contains_key(&1));
    assert_eq!(map.take(&2).now_or_never(), Some(Ok(2)));
    assert_eq!(run_woken(&mut producers), [0]);
    assert_eq!(map.try_get(&1), Some(1));
}

// F: with `len()` past the limit (plain inserts), a waiting producer gets in only once `len()` is below the limit.
#[test]
fn over_the_limit_a_producer_waits_until_len_is_below_it() {
    let map = Map::new().with_limit(2);
    for k in 0..4 {
        map.insert(k, k);
    }
    let mut producers = vec![Producer::waiting(0, &map, 9, 9)];
    for k in 0..2 {
        assert_eq!(map.take(&k).now_or_never(), Some(Ok(k)));
        assert!(run_woken(&mut producers).is_empty());
        assert!(!map.contains_key(&9));
    }
    assert_eq!(map.remove(&2), Some(2));
    assert_eq!(run_woken(&mut producers), [0]);
    assert_eq!(map.len(), 2);
}

// F, 9: `close` wakes every waiting producer and each stores its value at once, past the limit: nothing is lost.
#[test]
fn close_lets_every_waiting_producer_store_its_value() {
    let values = live_counter();
    let map: AwaitMap<u32, Tracked> = AwaitMap::new().with_limit(1);
    map.insert(100, Tracked::new(100, &values));
    let mut producers: Vec<_> = (0..3)
        .map(|i| Producer::waiting(i, &map, i as u32, Tracked::new(i as u64, &values)))
        .collect();
    map.close();
    assert!(producers.iter().all(|p| p.counter.wakes() == 1));
    assert_eq!(run_woken(&mut producers), [0, 1, 2]);
    assert_eq!(map.len(), 4);
    for k in 0..3 {
        assert_eq!(map.try_get(&k).map(|v| v.id), Some(k.into()));
    }
    assert_eq!(live(&values), 4);
}

// F, 12: polling a completed `insert_async` panics with the documented message.
#[test]
fn insert_async_polled_after_ready_panics() {
    let map = Map::new();
    let (_counter, waker) = counting_waker();
    let mut fut = map.insert_async(1, 1);
    assert_eq!(ready(poll_once(&mut fut, &waker)), None);
    assert_repoll_panics(&mut fut, &waker);
    assert_eq!(map.len(), 1);
}

// ---------------------------------------------------------------------------
// `insert_blocking`.
// ---------------------------------------------------------------------------

// F: a thread blocked in `insert_blocking` on a full map stores nothing until a `take` on another thread lets it in.
#[test]
fn insert_blocking_is_let_in_by_a_take_on_another_thread() {
    no_hang_or(
        "insert_blocking",
        "a take did not let the blocked producer in",
        || {
            let rounds = if cfg!(miri) { 3 } else { 50 };
            let map = Arc::new(Map::new().with_limit(1));
            for round in 0..rounds {
                map.insert(0, round);
                let producer = thread::spawn({
                    let map = Arc::clone(&map);
                    move || map.insert_blocking(1, round)
                });
                let_it_block();
                assert!(!map.contains_key(&1), "stored past the limit");
                assert_eq!(map.take_blocking(&0), Ok(round));
                assert_eq!(producer.join().expect("producer"), None);
                assert_eq!(map.take_blocking(&1), Ok(round));
                assert!(map.is_empty());
            }
        },
    );
}

// F, 9: `close` unblocks every thread blocked in `insert_blocking`, and each stores its value.
#[test]
fn close_unblocks_insert_blocking() {
    no_hang_or(
        "close_unblocks",
        "close did not unblock insert_blocking",
        || {
            let map = Arc::new(Map::new().with_limit(1));
            map.insert(0, 0);
            let producers: Vec<_> = (1..=3)
                .map(|k| {
                    let map = Arc::clone(&map);
                    thread::spawn(move || map.insert_blocking(k, k))
                })
                .collect();
            let_it_block();
            assert_eq!(map.len(), 1, "stored past the limit");
            map.close();
            for p in producers {
                assert_eq!(p.join().expect("producer"), None);
            }
            assert_eq!(map.len(), 4);
            for k in 0..=3 {
                assert_eq!(map.try_get(&k), Some(k));
            }
        },
    );
}

// ---------------------------------------------------------------------------
// `closed()`.
// ---------------------------------------------------------------------------

// F, 9: `closed()` is pending until `close`, which wakes it exactly once (a second `close` does nothing); then it is ready.
#[test]
fn closed_is_pending_until_close_and_woken_exactly_once() {
    let map = Map::new();
    let (counter, waker) = counting_waker();
    let mut closed = map.closed();
    pending(poll_once(&mut closed, &waker));
    pending(poll_once(&mut closed, &waker));
    map.insert(1, 1);
    assert_eq!(map.remove(&1), Some(1));
    assert_eq!(counter.wakes(), 0);
    map.close();
    assert_eq!(counter.wakes(), 1);
    map.close();
    assert_eq!(counter.wakes(), 1);
    ready(poll_once(&mut closed, &waker));
}

// F, 9: every waiting `closed()` future is woken by `close`; on a closed map, `closed()` is ready on its first poll.
#[test]
fn closed_wakes_every_waiter_and_is_ready_at_once_when_closed() {
    let map = Map::new();
    let mut waiting: Vec<_> = (0..3)
        .map(|_| {
            let (counter, waker) = counting_waker();
            let mut fut = map.closed();
            pending(poll_once(&mut fut, &waker));
            (fut, counter, waker)
        })
        .collect();
    map.close();
    for (fut, counter, waker) in &mut waiting {
        assert_eq!(counter.wakes(), 1);
        ready(poll_once(fut, waker));
    }
    assert!(map.closed().now_or_never().is_some());
}

// ---------------------------------------------------------------------------
// `drained()`.
// ---------------------------------------------------------------------------

// F: `drained()` is ready at once when nobody waits, values or not.
#[test]
fn drained_is_ready_at_once_with_no_waiters() {
    let map = Map::new();
    assert!(map.drained().now_or_never().is_some());
    map.insert(1, 1);
    assert!(map.get(&1).now_or_never().is_some());
    assert!(map.drained().now_or_never().is_some());
    map.close();
    assert!(map.drained().now_or_never().is_some());
}

// F, 1: `drained()` stays pending while a get or take waits, and is woken and ready once the last one completes by an insert.
#[test]
fn drained_waits_for_the_last_waiter_to_complete() {
    let map = Map::new();
    let (_w, waker) = counting_waker();
    let mut get = map.get(&1);
    let mut take = map.take(&2);
    pending(poll_once(&mut get, &waker));
    pending(poll_once(&mut take, &waker));
    let (counter, dwaker) = counting_waker();
    let mut drained = map.drained();
    pending(poll_once(&mut drained, &dwaker));

    map.insert(1, 10);
    assert_eq!(ready(poll_once(&mut get, &waker)), Ok(10));
    assert_eq!(counter.wakes(), 0, "a waiter is left");
    pending(poll_once(&mut drained, &dwaker));

    map.insert(2, 20);
    assert_eq!(counter.wakes(), 0, "the take has not completed yet");
    assert_eq!(ready(poll_once(&mut take, &waker)), Ok(20));
    assert_eq!(counter.wakes(), 1);
    ready(poll_once(&mut drained, &dwaker));
}

// F, 5: dropping the last waiting future wakes `drained()`, which is then ready.
#[test]
fn drained_is_woken_when_the_last_waiter_is_dropped() {
    let map = Map::new();
    let (_w, waker) = counting_waker();
    let mut a = map.get(&1);
    let mut b = map.take(&1);
    pending(poll_once(&mut a, &waker));
    pending(poll_once(&mut b, &waker));
    let (counter, dwaker) = counting_waker();
    let mut drained = map.drained();
    pending(poll_once(&mut drained, &dwaker));
    drop(a);
    assert_eq!(counter.wakes(), 0);
    pending(poll_once(&mut drained, &dwaker));
    drop(b);
    assert_eq!(counter.wakes(), 1);
    ready(poll_once(&mut drained, &dwaker));
    assert_eq!(map.waiters(), 0);
}

// F, 8, 9: a waiter failed by `cancel` (or `close`) finishes when it is polled: that wakes `drained()`, which is then ready.
#[test]
fn drained_is_woken_when_the_last_waiter_is_cancelled_or_closed_and_polled() {
    for close in [false, true] {
        let map = Map::new();
        let (_w, waker) = counting_waker();
        let mut get = map.get(&1);
        pending(poll_once(&mut get, &waker));
        let (counter, dwaker) = counting_waker();
        let mut drained = map.drained();
        pending(poll_once(&mut drained, &dwaker));
        let expected = if close {
            map.close();
            WaitError::Closed
        } else {
            assert_eq!(map.cancel(&1), 1);
            WaitError::Cancelled
        };
        assert_eq!(ready(poll_once(&mut get, &waker)), Err(expected));
        assert_eq!(counter.wakes(), 1, "close: {close}");
        ready(poll_once(&mut drained, &dwaker));
    }
}

// F, 5: a `drained()` future dropped while pending (or woken but not polled) leaves no watcher behind: later waits and drains work as before.
#[test]
fn a_dropped_pending_drained_leaves_no_watcher_behind() {
    let map = Map::new();
    let (_w, waker) = counting_waker();
    for round in 0..3_u32 {
        let mut get = map.get(&round);
        pending(poll_once(&mut get, &waker));
        let (counter, dwaker) = counting_waker();
        let mut pending_drained = map.drained();
        pending(poll_once(&mut pending_drained, &dwaker));
        pending(poll_once(&mut pending_drained, &dwaker));
        let mut woken_drained = map.drained();
        pending(poll_once(&mut woken_drained, &dwaker));
        drop(pending_drained);
        map.insert(round, round);
        assert_eq!(ready(poll_once(&mut get, &waker)), Ok(round));
        assert_eq!(counter.wakes(), 1, "only the live `drained()` is woken");
        // Woken, never polled again: dropped all the same.
        drop(woken_drained);
        assert!(map.drained().now_or_never().is_some());
        assert_eq!(map.waiters(), 0);
    }
    // One more full cycle: a fresh watcher is woken as usual.
    let mut take = map.take(&9);
    pending(poll_once(&mut take, &waker));
    let (counter, dwaker) = counting_waker();
    let mut drained = map.drained();
    pending(poll_once(&mut drained, &dwaker));
    map.insert(9, 9);
    assert_eq!(ready(poll_once(&mut take, &waker)), Ok(9));
    assert_eq!(counter.wakes(), 1);
    ready(poll_once(&mut drained, &dwaker));
}

// ---------------------------------------------------------------------------
// Demand.
// ---------------------------------------------------------------------------

// F, 1: a get on a new key makes `next()` yield it exactly once (a pending `next` is woken for it); the waiter gets the value produced.
#[test]
fn a_newly_wanted_key_is_announced_exactly_once() {
    let map = Map::new();
    let demand = map.demand();
    let (counter, dwaker) = counting_waker();
    let mut next = demand.next();
    pending(poll_once(&mut next, &dwaker));
    let (_w, waker) = counting_waker();
    let mut get = map.get(&7);
    pending(poll_once(&mut get, &waker));
    assert_eq!(counter.wakes(), 1);
    assert_eq!(ready(poll_once(&mut next, &dwaker)), Some(7));
    // Repolling the waiter announces nothing more.
    pending(poll_once(&mut get, &waker));
    let mut again = demand.next();
    pending(poll_once(&mut again, &dwaker));
    map.insert(7, 49);
    assert_eq!(ready(poll_once(&mut get, &waker)), Ok(49));
    pending(poll_once(&mut again, &dwaker));
}

// F: a second waiter (get or take) on a key already wanted does not announce it again.
#[test]
fn a_second_waiter_on_a_wanted_key_does_not_announce_it_again() {
    let map = Map::new();
    let demand = map.demand();
    let (_w, waker) = counting_waker();
    let mut get = map.get(&1);
    let mut take = map.take(&1);
    let mut get2 = map.get(&1);
    pending(poll_once(&mut get, &waker));
    pending(poll_once(&mut take, &waker));
    pending(poll_once(&mut get2, &waker));
    assert_eq!(demand.next().now_or_never(), Some(Some(1)));
    assert_eq!(demand.next().now_or_never(), None);
}

// F: keys are announced in the order they became wanted.
#[test]
fn keys_are_announced_in_registration_order() {
    let map = Map::new();
    let demand = map.demand();
    let (_w, waker) = counting_waker();
    let order = [5_u32, 3, 9, 1, 4];
    let mut waiters: Vec<_> = order.iter().map(|k| map.take(k)).collect();
    for w in &mut waiters {
        pending(poll_once(w, &waker));
    }
    let announced: Vec<u32> = order
        .iter()
        .map(|_| demand.next().now_or_never().flatten().expect("announced"))
        .collect();
    assert_eq!(announced, order);
    assert_eq!(demand.next().now_or_never(), None);
}

// F, 1: a key is announced each time it becomes wanted. Two takes wait on
// key 1; it is announced once; the producer inserts once, the first take
// takes the value, and the second waits on a key with no value and no
// promise: it is announced again (the second take is woken to do so), so
// the producer makes another value.
#[test]
fn a_key_left_wanted_after_a_take_is_announced_again() {
    let map = Map::new();
    let demand = map.demand();
    let (c_a, w_a) = counting_waker();
    let (c_b, w_b) = counting_waker();
    let mut a = map.take(&1);
    let mut b = map.take(&1);
    pending(poll_once(&mut a, &w_a));
    pending(poll_once(&mut b, &w_b));
    assert_eq!(demand.next().now_or_never(), Some(Some(1)));
    assert_eq!(demand.next().now_or_never(), None);
    map.insert(1, 10);
    assert_eq!((c_a.wakes(), c_b.wakes()), (1, 0));
    assert_eq!(ready(poll_once(&mut a, &w_a)), Ok(10));
    assert_eq!(c_b.wakes(), 1, "the waiter left unserved was not woken");
    pending(poll_once(&mut b, &w_b));
    assert_eq!(demand.next().now_or_never(), Some(Some(1)));
    assert_eq!(demand.next().now_or_never(), None);
    map.insert(1, 11);
    assert_eq!(ready(poll_once(&mut b, &w_b)), Ok(11));
    assert_eq!(demand.next().now_or_never(), None);
}

// F, 1, 7: two gets wait on a key; a value comes, the first get (the one in
// the key's entry) takes its copy and leaves, and the value is removed: the
// key is wanted again by the second get alone, whose next poll announces it.
#[test]
fn a_key_left_wanted_by_a_later_get_alone_is_announced_again() {
    let map = Map::new();
    let demand = map.demand();
    let (_, w) = counting_waker();
    let mut first = map.get(&2);
    let mut second = map.get(&2);
    pending(poll_once(&mut first, &w));
    pending(poll_once(&mut second, &w));
    assert_eq!(demand.next().now_or_never(), Some(Some(2)));
    map.insert(2, 20);
    assert_eq!(ready(poll_once(&mut first, &w)), Ok(20));
    drop(first);
    assert_eq!(map.remove(&2), Some(20));
    pending(poll_once(&mut second, &w));
    assert_eq!(demand.next().now_or_never(), Some(Some(2)));
    assert_eq!(demand.next().now_or_never(), None);
    map.insert(2, 21);
    assert_eq!(ready(poll_once(&mut second, &w)), Ok(21));
}

// F, 1, 7: a get registers while a promise is held (not wanted: somebody
// produces it); the promise is fulfilled, the value removed before the get
// polls: the get, polling again, finds its key wanted and unannounced, and
// announces it.
#[test]
fn a_key_whose_value_was_removed_before_its_get_polled_is_announced() {
    let map = Map::new();
    let demand = map.demand();
    let promise = map.promise(2).expect("key 2 is free");
    let (counter, waker) = counting_waker();
    let mut get = map.get(&2);
    pending(poll_once(&mut get, &waker));
    assert_eq!(demand.next().now_or_never(), None, "promised: not wanted");
    promise.fulfill(20);
    assert_eq!(counter.wakes(), 1);
    assert_eq!(map.remove(&2), Some(20));
    pending(poll_once(&mut get, &waker));
    assert_eq!(demand.next().now_or_never(), Some(Some(2)));
    // Once announced, polling again announces nothing more.
    pending(poll_once(&mut get, &waker));
    assert_eq!(demand.next().now_or_never(), None);
    map.insert(2, 21);
    assert_eq!(ready(poll_once(&mut get, &waker)), Ok(21));
}

// F, 1, 5: the take woken for a value that was then removed is dropped
// before it polls: the take behind it, which nobody woke, is woken so that
// the key is announced again.
#[test]
fn a_key_left_to_an_unwoken_take_is_announced_through_it() {
    let map = Map::new();
    let demand = map.demand();
    let (_c_a, w_a) = counting_waker();
    let (c_b, w_b) = counting_waker();
    let mut a = map.take(&3);
    let mut b = map.take(&3);
    pending(poll_once(&mut a, &w_a));
    pending(poll_once(&mut b, &w_b));
    assert_eq!(demand.next().now_or_never(), Some(Some(3)));
    map.insert(3, 30);
    assert_eq!(map.remove(&3), Some(30));
    drop(a);
    assert_eq!(c_b.wakes(), 1);
    pending(poll_once(&mut b, &w_b));
    assert_eq!(demand.next().now_or_never(), Some(Some(3)));
    assert_eq!(demand.next().now_or_never(), None);
}

// F: an announcement left in the queue from an earlier spell of the key,
// and the new one, hand the key out once per spell.
#[test]
fn a_key_is_handed_out_once_per_wanted_spell() {
    let map = Map::new();
    let demand = map.demand();
    let (_c, w) = counting_waker();
    let mut a = map.take(&4);
    let mut b = map.take(&4);
    pending(poll_once(&mut a, &w));
    pending(poll_once(&mut b, &w));
    // Announced, not handed out yet; a value comes and the first take goes.
    map.insert(4, 40);
    assert_eq!(ready(poll_once(&mut a, &w)), Ok(40));
    pending(poll_once(&mut b, &w));
    // Two announcements are queued; the key is handed out once.
    assert_eq!(demand.next().now_or_never(), Some(Some(4)));
    assert_eq!(demand.next().now_or_never(), None);
}

// F, 5: a key that stopped being wanted before `next()` (waiter dropped, value stored, promise made) is skipped and its queued copy dropped.
#[test]
fn a_key_no_longer_wanted_is_skipped() {
    let keys = live_counter();
    let map: AwaitMap<Tracked, u32> = AwaitMap::new();
    let demand = map.demand();
    let (_w, waker) = counting_waker();
    let k: Vec<Tracked> = (0..4).map(|id| Tracked::new(id, &keys)).collect();
    let mut waiters: Vec<_> = k.iter().map(|key| map.get(key)).collect();
    for w in &mut waiters {
        pending(poll_once(w, &waker));
    }
    // 4 held here, 4 in the map's entries, 4 queued.
    assert_eq!(live(&keys), 12);
    // 0: its waiter left; 1: got a value; 2: got a promise; 3: still wanted.
    drop(waiters.remove(0));
    map.insert(k[1].clone(), 10);
    let promise = map.promise(k[2].clone()).expect("key 2 has no value");
    assert_eq!(
        demand.next().now_or_never().flatten().map(|k| k.id),
        Some(3)
    );
    assert_eq!(demand.next().now_or_never(), None);
    // The queue is empty: only the held keys and the entries' keys remain.
    assert_eq!(live(&keys), 4 + 3);
    drop(promise);
}

// F, 5: with a `Demand` alive but never asked, waiters that come and go on distinct keys leave
// no pile of queued keys behind: the queue is pruned of keys no longer wanted, so the live key
// copies stay bounded (this fails if the queue keeps every announced key).
#[test]
fn an_unread_demand_queue_stays_bounded_under_churn() {
    let keys = live_counter();
    let map: AwaitMap<Tracked, u32> = AwaitMap::new();
    let demand = map.demand();
    let (_w, waker) = counting_waker();
    let still = Tracked::new(u64::MAX, &keys);
    let mut held = map.get(&still);
    pending(poll_once(&mut held, &waker));
    let rounds = if cfg!(miri) { 300 } else { 20_000 };
    let mut most = 0;
    for id in 0..rounds {
        let key = Tracked::new(id, &keys);
        let mut waiting = map.get(&key);
        pending(poll_once(&mut waiting, &waker));
        drop(waiting);
        drop(key);
        most = most.max(live(&keys));
    }
    // The queue is pruned once it passes 2 × entries + 16, so at most about 20 copies live
    // at any time; without pruning there would be one per round.
    assert!(most <= 24, "{most} key copies alive at once");
    // The key still wanted survived every pruning and is handed out.
    assert_eq!(
        demand.next().now_or_never().flatten().map(|k| k.id),
        Some(u64::MAX)
    );
    drop(held);
}

// F, 5: a key whose waiter left and which became wanted again before `next()` is handed out once.
#[test]
fn a_key_wanted_again_after_its_waiter_left_is_handed_out_once() {
    let map = Map::new();
    let demand = map.demand();
    let (_w, waker) = counting_waker();
    let mut first = map.get(&1);
    pending(poll_once(&mut first, &waker));
    drop(first);
    let mut second = map.take(&1);
    pending(poll_once(&mut second, &waker));
    assert_eq!(demand.next().now_or_never(), Some(Some(1)));
    assert_eq!(demand.next().now_or_never(), None);
}

// F: `take_owned` and `get_owned` announce their keys too.
#[test]
fn owned_futures_announce_their_keys() {
    let map: Arc<Map> = Arc::new(AwaitMap::new());
    let demand = map.demand();
    let (_w, waker) = counting_waker();
    let mut take = map.take_owned(&1);
    let mut get = map.get_owned(&2);
    pending(poll_once(&mut take, &waker));
    pending(poll_once(&mut get, &waker));
    assert_eq!(demand.next().now_or_never(), Some(Some(1)));
    assert_eq!(demand.next().now_or_never(), Some(Some(2)));
    map.insert(1, 1);
    map.insert(2, 2);
    assert_eq!(ready(poll_once(&mut take, &waker)), Ok(1));
    assert_eq!(ready(poll_once(&mut get, &waker)), Ok(2));
}

// F: two `Demand` handles split the keys: each key is handed to exactly one of them, pending `next`s included.
#[test]
fn two_demand_handles_split_the_keys() {
    let map = Map::new();
    let d1 = map.demand();
    let d2 = map.demand();
    let (_w, waker) = counting_waker();
    let keys: Vec<u32> = (0..8).collect();
    let mut waiters: Vec<_> = keys.iter().map(|k| map.get(k)).collect();
    // Both wait first; each announced key goes to one of them.
    let (c1, w1) = counting_waker();
    let (c2, w2) = counting_waker();
    let mut n1 = d1.next();
    let mut n2 = d2.next();
    pending(poll_once(&mut n1, &w1));
    pending(poll_once(&mut n2, &w2));
    pending(poll_once(&mut waiters[0], &waker));
    assert_eq!(
        c1.wakes() + c2.wakes(),
        1,
        "one announced key, one `next` woken"
    );
    let got = match (poll_once(&mut n1, &w1), poll_once(&mut n2, &w2)) {
        (Poll::Ready(k), Poll::Pending) | (Poll::Pending, Poll::Ready(k)) => k,
        (a, b) => panic!("one key, two answers: {a:?}, {b:?}"),
    };
    assert_eq!(got, Some(0));
    // The rest, queued, then drained alternately.
    for w in &mut waiters[1..] {
        pending(poll_once(w, &waker));
    }
    let mut handed = vec![0];
    for i in 0.. {
        let d = if i % 2 == 0 { &d1 } else { &d2 };
        match d.next().now_or_never() {
            Some(Some(k)) => handed.push(k),
            Some(None) => panic!("`None` on an open map"),
            None => break,
        }
    }
    handed.sort_unstable();
    assert_eq!(handed, keys);
    drop((n1, n2));
}

// F: handing a key to one pending `next` wakes no other `next` for nothing.
#[test]
fn handing_out_a_key_wakes_no_other_pending_next() {
    let map = Map::new();
    let d1 = map.demand();
    let d2 = map.demand();
    let (c1, w1) = counting_waker();
    let (c2, w2) = counting_waker();
    let mut n1 = d1.next();
    let mut n2 = d2.next();
    pending(poll_once(&mut n1, &w1));
    pending(poll_once(&mut n2, &w2));
    let (_w, waker) = counting_waker();
    let mut get = map.get(&1);
    pending(poll_once(&mut get, &waker));
    // Poll only the woken one, as an executor would.
    let (woken, other) = if c1.wakes() == 1 {
        (poll_once(&mut n1, &w1), &c2)
    } else {
        (poll_once(&mut n2, &w2), &c1)
    };
    assert_eq!(woken, Poll::Ready(Some(1)));
    assert_eq!(other.wakes(), 0);
}

// F: dropping every `Demand` handle stops the announcing (queued keys are dropped); a new `Demand` then sees only keys wanted after it was made.
#[test]
fn dropping_every_demand_handle_stops_announcing() {
    let keys = live_counter();
    let map: AwaitMap<Tracked, u32> = AwaitMap::new();
    let (_w, waker) = counting_waker();
    let k: Vec<Tracked> = (0..4).map(|id| Tracked::new(id, &keys)).collect();
    let d1 = map.demand();
    let d2 = map.demand();
    let mut w0 = map.get(&k[0]);
    pending(poll_once(&mut w0, &waker));
    // Held, in the entry, queued.
    assert_eq!(live(&keys), 4 + 1 + 1);
    drop(d1);
    assert_eq!(live(&keys), 6, "one handle is left: the queue stays");
    drop(d2);
    assert_eq!(
        live(&keys),
        5,
        "the queued key is dropped with the last handle"
    );
    // Nobody watches: key 1 becomes wanted unannounced.
    let mut w1 = map.get(&k[1]);
    pending(poll_once(&mut w1, &waker));
    assert_eq!(live(&keys), 4 + 2);
    let d3 = map.demand();
    assert!(d3.next().now_or_never().is_none());
    // Keys already wanted are not announced by new waiters; new keys are.
    let mut w1b = map.take(&k[1]);
    pending(poll_once(&mut w1b, &waker));
    let mut w2 = map.take(&k[2]);
    pending(poll_once(&mut w2, &waker));
    assert_eq!(d3.next().now_or_never().flatten().map(|k| k.id), Some(2));
    assert!(d3.next().now_or_never().is_none());
    drop((w0, w1, w1b, w2));
    drop(d3);
    drop(map);
    assert_eq!(live(&keys), 4);
}

// F, 9: `next()` returns `None` once the map is closed and the queue is empty; a pending `next` is woken by `close`; keys queued before `close` and still waited for are handed out first.
#[test]
fn next_returns_none_once_closed_and_the_queue_is_empty() {
    let map = Map::new();
    let demand = map.demand();
    let (counter, dwaker) = counting_waker();
    let mut next = demand.next();
    pending(poll_once(&mut next, &dwaker));
    map.close();
    assert_eq!(counter.wakes(), 1);
    assert_eq!(ready(poll_once(&mut next, &dwaker)), None);
    assert_eq!(demand.next().now_or_never(), Some(None));

    // A key queued before `close`, its waiter not yet told: handed out, and
    // the value stored after `close` still reaches the waiter.
    let map = Map::new();
    let demand = map.demand();
    let (_w, waker) = counting_waker();
    let mut get = map.get(&3);
    pending(poll_once(&mut get, &waker));
    let mut gone = map.get(&4);
    pending(poll_once(&mut gone, &waker));
    map.close();
    assert_eq!(ready(poll_once(&mut gone, &waker)), Err(WaitError::Closed));
    assert_eq!(demand.next().now_or_never(), Some(Some(3)));
    assert_eq!(demand.next().now_or_never(), Some(None));
    map.insert(3, 30);
    assert_eq!(ready(poll_once(&mut get, &waker)), Ok(30));
}

// ---------------------------------------------------------------------------
// Threads and tasks.
// ---------------------------------------------------------------------------

/// The value the producers store for `k`.
fn value_of(k: u32) -> u32 {
    k.wrapping_mul(2_654_435_761) ^ 0x5555
}

// F, 10: a bounded pipeline: one `insert_blocking` producer, three `take_blocking` consumers on disjoint keys; each value is taken once, and a watcher never sees `len()` above the limit plus the values let in for waiting takes (one per consumer at most).
#[test]
fn a_bounded_pipeline_never_holds_more_than_the_limit() {
    const LIMIT: usize = 4;
    const CONSUMERS: u32 = 3;
    let n: u32 = if cfg!(miri) { 60 } else { 1_000 };
    no_hang_or("pipeline", "the bounded pipeline stalled", move || {
        let map = Arc::new(Map::new().with_limit(LIMIT));
        let done = Arc::new(AtomicBool::new(false));
        let watcher = thread::spawn({
            let (map, done) = (Arc::clone(&map), Arc::clone(&done));
            move || {
                let mut max = 0;
                while !done.load(Ordering::Acquire) {
                    max = max.max(map.len());
                    thread::yield_now();
                }
                max
            }
        });
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|c| {
                let map = Arc::clone(&map);
                thread::spawn(move || {
                    (c..n)
                        .step_by(CONSUMERS as usize)
                        .map(|k| (k, map.take_blocking(&k)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let producer = thread::spawn({
            let map = Arc::clone(&map);
            move || {
                for k in 0..n {
                    assert_eq!(map.insert_blocking(k, value_of(k)), None);
                }
            }
        });
        producer.join().expect("producer");
        let mut seen = HashSet::new();
        for c in consumers {
            for (k, v) in c.join().expect("consumer") {
                assert_eq!(v, Ok(value_of(k)), "key {k}");
                assert!(seen.insert(k), "key {k} taken twice");
            }
        }
        done.store(true, Ordering::Release);
        let max = watcher.join().expect("watcher");
        assert_eq!(seen.len(), n as usize);
        assert!(max <= LIMIT + CONSUMERS as usize, "len() reached {max}");
        assert!(map.is_empty());
        assert_eq!(map.waiters(), 0);
    });
}

// F, 1, 10: a demand-driven producer task serves exactly the keys 8 consumer tasks want (200 keys), each once, then stops when the map closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demand_driven_producer_task_serves_every_wanted_key_once() {
    const CONSUMERS: u32 = 8;
    let keys: u32 = if cfg!(miri) { 24 } else { 200 };
    let map: Arc<Map> = Arc::new(AwaitMap::new());
    let served = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let producer = tokio::spawn({
        let (map, served) = (Arc::clone(&map), Arc::clone(&served));
        async move {
            let demand = map.demand();
            ready_tx.send(()).expect("the test waits for this");
            while let Some(k) = demand.next().await {
                served.lock().expect("served").push(k);
                assert_eq!(map.insert(k, value_of(k)), None, "key {k} produced twice");
            }
        }
    });
    ready_rx.await.expect("the producer is watching");
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|c| {
            let map = Arc::clone(&map);
            tokio::spawn(async move {
                let mut got = Vec::new();
                for k in (c..keys).step_by(CONSUMERS as usize) {
                    // Half the consumers take, half get.
                    let v = if c % 2 == 0 {
                        map.take_owned(&k).await
                    } else {
                        map.get_owned(&k).await
                    };
                    got.push((k, v));
                }
                got
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for c in consumers {
        for (k, v) in c.await.expect("consumer") {
            assert_eq!(v, Ok(value_of(k)), "key {k}");
            assert!(seen.insert(k));
        }
    }
    assert_eq!(seen.len(), keys as usize);
    map.close();
    producer
        .await
        .expect("the producer stops once the map is closed");
    let mut served = served.lock().expect("served").clone();
    assert_eq!(
        served.len(),
        keys as usize,
        "each key produced exactly once"
    );
    served.sort_unstable();
    assert!(served.iter().copied().eq(0..keys));
    // The gets left their values; the takes took theirs.
    assert_eq!(map.len(), (keys as usize) / 2);
}

// ---------------------------------------------------------------------------
// `demand_owned`: a demand handle that holds its own `Arc` of the map.
// ---------------------------------------------------------------------------

// F: a borrowed `Demand` and an `OwnedDemand` on the same map split the keys, each handed to exactly one, in order; dropping one handle (either) leaves the other announcing with the queue intact; once both are dropped, nothing is queued or announced, and a new handle sees only keys wanted after it was made.
#[test]
fn borrowed_and_owned_demand_handles_split_the_keys_until_both_are_dropped() {
    let keys = live_counter();
    let map: Arc<AwaitMap<Tracked, u32>> = Arc::new(AwaitMap::new());
    let k: Vec<Tracked> = (0..12).map(|id| Tracked::new(id, &keys)).collect();
    let (_w, waker) = counting_waker();
    let mut waiters = Vec::new();
    let mut want = |id: usize| {
        let mut get = map.get_owned(&k[id]);
        pending(poll_once(&mut get, &waker));
        waiters.push(get);
    };
    let id_of = |next: Option<Option<Tracked>>| next.flatten().map(|k| k.id);

    let borrowed = map.demand();
    let owned = map.demand_owned();
    for id in 0..6 {
        want(id);
    }
    let mut to_borrowed = Vec::new();
    let mut to_owned = Vec::new();
    for _ in 0..3 {
        to_borrowed.extend(id_of(borrowed.next().now_or_never()));
        to_owned.extend(id_of(owned.next().now_or_never()));
    }
    assert_eq!((to_borrowed, to_owned), (vec![0, 2, 4], vec![1, 3, 5]));
    assert!(borrowed.next().now_or_never().is_none());
    assert!(owned.next().now_or_never().is_none());

    // The owned handle goes first: the borrowed one still gets key 6.
    want(6);
    let queued = live(&keys);
    drop(owned);
    assert_eq!(live(&keys), queued, "a handle is left: the queue stays");
    assert_eq!(id_of(borrowed.next().now_or_never()), Some(6));
    // The last handle goes with key 7 queued: its copy is dropped.
    want(7);
    let queued = live(&keys);
    drop(borrowed);
    assert_eq!(
        live(&keys),
        queued - 1,
        "the queued key went with the last handle"
    );
    // Nobody watches: key 8 becomes wanted unannounced (only its entry's key copy).
    let before = live(&keys);
    want(8);
    let after = live(&keys);

    // The other order: borrowed first, then owned.
    let owned = map.demand_owned();
    let borrowed = map.demand();
    assert!(
        owned.next().now_or_never().is_none(),
        "key 8 was not announced"
    );
    want(9);
    drop(borrowed);
    assert_eq!(id_of(owned.next().now_or_never()), Some(9));
    want(10);
    drop(owned);
    want(11);
    let fresh = map.demand_owned();
    assert!(
        fresh.next().now_or_never().is_none(),
        "key 10 went with the last handle, key 11 was never queued"
    );
    drop(fresh);

    drop(waiters);
    assert_eq!(Arc::strong_count(&map), 1);
    // Key 8 cost one copy (the entry's), none queued; all entries went with their waiters.
    assert_eq!(
        after - before,
        1 + 1,
        "one copy in the entry, one in the owned future"
    );
    assert_eq!(live(&keys), k.len());
}

// F, 9: `OwnedDemand::next()` hands out a newly wanted key (waking a pending `next` once), returns `None` once the map is closed and the queue is empty (a pending `next` is woken by `close`), and hands out keys queued before `close` and still waited for first.
#[test]
fn owned_demand_next_returns_none_once_closed() {
    let map: Arc<Map> = Arc::new(AwaitMap::new());
    let demand = map.demand_owned();
    assert!(Arc::ptr_eq(demand.map(), &map));
    let (counter, dwaker) = counting_waker();
    let (_w, waker) = counting_waker();
    let mut next = demand.next();
    pending(poll_once(&mut next, &dwaker));
    let mut get = map.get(&3);
    pending(poll_once(&mut get, &waker));
    assert_eq!(counter.wakes(), 1);
    assert_eq!(ready(poll_once(&mut next, &dwaker)), Some(3));
    let mut next = demand.next();
    pending(poll_once(&mut next, &dwaker));
    map.close();
    assert_eq!(counter.wakes(), 2);
    assert_eq!(ready(poll_once(&mut next, &dwaker)), None);
    assert_eq!(demand.next().now_or_never(), Some(None));
    assert_eq!(demand.next().now_or_never(), Some(None), "None stays None");
    demand.map().insert(3, 30);
    assert_eq!(ready(poll_once(&mut get, &waker)), Ok(30));

    // A key queued before `close`, its waiter not yet told, is handed out first.
    let map: Arc<Map> = Arc::new(AwaitMap::new());
    let demand = map.demand_owned();
    let mut get = map.get(&5);
    pending(poll_once(&mut get, &waker));
    let mut gone = map.get(&6);
    pending(poll_once(&mut gone, &waker));
    map.close();
    assert_eq!(ready(poll_once(&mut gone, &waker)), Err(WaitError::Closed));
    assert_eq!(demand.next().now_or_never(), Some(Some(5)));
    assert_eq!(demand.next().now_or_never(), Some(None));
    map.insert(5, 50);
    assert_eq!(ready(poll_once(&mut get, &waker)), Ok(50));
}

// F, 5: an `OwnedDemand` holds exactly one `Arc` of the map (a pending `next` adds none); it keeps the map alive after the caller's last `Arc` is gone, and dropping it frees the map with its queued and stored keys.
#[test]
fn an_owned_demand_gives_its_arc_back_when_dropped() {
    let keys = live_counter();
    let map: Arc<AwaitMap<Tracked, u32>> = Arc::new(AwaitMap::new());
    let demand = map.demand_owned();
    assert_eq!(Arc::strong_count(&map), 2);
    let shown = format!("{demand:?}");
    assert!(shown.contains("OwnedDemand"), "{shown}");
    let (_w, waker) = counting_waker();
    let mut next = demand.next();
    pending(poll_once(&mut next, &waker));
    assert_eq!(Arc::strong_count(&map), 2, "`next` borrows the handle");
    drop(next);
    drop(demand);
    assert_eq!(Arc::strong_count(&map), 1);

    // The handle is the last owner, with a key queued and one stored.
    let demand = map.demand_owned();
    map.insert(Tracked::new(1, &keys), 10);
    let mut get = map.get_owned(&Tracked::new(2, &keys));
    pending(poll_once(&mut get, &waker));
    let weak = Arc::downgrade(&map);
    drop(map);
    assert_eq!(weak.strong_count(), 2, "the handle and the waiting future");
    drop(get);
    assert_eq!(weak.strong_count(), 1, "the handle keeps the map alive");
    assert_eq!(live(&keys), 2, "key 1 stored, key 2 queued");
    // Key 2 is queued but no longer wanted: skipped, and its copy dropped.
    assert!(demand.next().now_or_never().is_none());
    assert_eq!((live(&keys), demand.map().len()), (1, 1));
    drop(demand);
    assert_eq!(weak.strong_count(), 0, "the map went with the handle");
    assert_eq!(live(&keys), 0);
}

// F, 1, 10: `OwnedDemand`s made before the consumers start are moved into two spawned producer tasks (no hand-shake needed) that split the keys 8 consumer tasks want: each key produced once, through `demand.map()`; both stop when the map closes, and give their `Arc`s back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_demand_producer_tasks_serve_every_wanted_key_once() {
    const CONSUMERS: u32 = 8;
    let keys: u32 = if cfg!(miri) { 24 } else { 200 };
    let map: Arc<Map> = Arc::new(AwaitMap::new());
    let producers: Vec<_> = (0..2)
        .map(|_| {
            let demand = map.demand_owned();
            tokio::spawn(async move {
                let mut served = Vec::new();
                while let Some(k) = demand.next().await {
                    served.push(k);
                    let stored = demand.map().insert(k, value_of(k));
                    assert_eq!(stored, None, "key {k} produced twice");
                }
                served
            })
        })
        .collect();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|c| {
            let map = Arc::clone(&map);
            tokio::spawn(async move {
                let mut got = Vec::new();
                for k in (c..keys).step_by(CONSUMERS as usize) {
                    let v = if c % 2 == 0 {
                        map.take_owned(&k).await
                    } else {
                        map.get_owned(&k).await
                    };
                    got.push((k, v));
                }
                got
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for c in consumers {
        for (k, v) in c.await.expect("consumer") {
            assert_eq!(v, Ok(value_of(k)), "key {k}");
            assert!(seen.insert(k));
        }
    }
    assert_eq!(seen.len(), keys as usize);
    map.close();
    let mut served = Vec::new();
    for p in producers {
        served.extend(p.await.expect("the producer stops once the map is closed"));
    }
    served.sort_unstable();
    assert!(
        served.iter().copied().eq(0..keys),
        "each key produced exactly once"
    );
    assert_eq!(
        Arc::strong_count(&map),
        1,
        "the handles went with their tasks"
    );
    assert_eq!(map.len(), (keys as usize) / 2);
}

// F, 5: a producer task aborted while it waits in `OwnedDemand::next()` drops its handle: the `Arc` is given back and announcing stops (a key wanted afterwards is not queued: a new handle does not see it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_producer_task_stops_announcing() {
    let keys = live_counter();
    let map: Arc<AwaitMap<Tracked, u32>> = Arc::new(AwaitMap::new());
    let demand = map.demand_owned();
    let producer = tokio::spawn(async move {
        while let Some(k) = demand.next().await {
            demand.map().insert(k, 1);
        }
    });
    // While it runs, it serves.
    let first = Tracked::new(1, &keys);
    assert_eq!(map.get(&first).await, Ok(1));
    producer.abort();
    assert!(producer.await.unwrap_err().is_cancelled());
    assert_eq!(Arc::strong_count(&map), 1);
    let (_w, waker) = counting_waker();
    let second = Tracked::new(2, &keys);
    let mut get = map.get(&second);
    pending(poll_once(&mut get, &waker));
    // Held: `first`, `second`; in entries: key 1, key 2. None queued.
    assert_eq!(live(&keys), 4);
    let fresh = map.demand_owned();
    assert!(
        fresh.next().now_or_never().is_none(),
        "key 2 was not announced"
    );
}

// F, 1: with feature `futures-core`, an `OwnedDemand` is a `Stream` of the
// wanted keys: a producer task drives it with stream combinators, serving
// each wanted key once; the stream ends when the map closes.
#[cfg(feature = "futures-core")]
#[test]
fn an_owned_demand_is_a_stream_of_wanted_keys() {
    use futures::StreamExt;
    no_hang_or("demand stream", "the producer stream stalled", || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let map: Arc<Map> = Arc::new(AwaitMap::new());
            let demand = map.demand_owned();
            let producer = tokio::spawn({
                let map = Arc::clone(&map);
                demand.map(|k| (k, k * k)).for_each(move |(k, v)| {
                    map.insert(k, v);
                    async {}
                })
            });
            for k in [3_u32, 1, 2, 3] {
                assert_eq!(map.get(&k).await, Ok(k * k));
            }
            map.close();
            producer.await.unwrap();
            assert_eq!(map.len(), 3);
        });
    });
}

// F: an operation that frees no value wakes no producer waiting for room,
// even when it has other news to carry out (here an insert that wakes a
// get and a take, and drops the spare key).
#[test]
fn an_insert_that_frees_nothing_wakes_no_producer() {
    let map = Map::new().with_limit(1);
    map.insert(9, 90);
    let (_w, waker) = counting_waker();
    let mut get = map.get(&1);
    let mut take = map.take(&1);
    pending(poll_once(&mut get, &waker));
    pending(poll_once(&mut take, &waker));
    // Started after the consumers, so their registration woke nobody.
    let mut producers = [Producer::waiting(0, &map, 5, 50)];
    map.insert(1, 10);
    assert!(!producers[0].woken(), "woken with no room made");
    assert!(run_woken(&mut producers).is_empty());
    assert_eq!(ready(poll_once(&mut get, &waker)), Ok(10));
    assert_eq!(ready(poll_once(&mut take, &waker)), Ok(10));
    // Key 9 still fills the map; once it leaves, the producer gets in.
    assert!(run_woken(&mut producers).is_empty());
    assert_eq!(map.remove(&9), Some(90));
    assert_eq!(run_woken(&mut producers), vec![0]);
}

// F: a key that becomes wanted again while no `Demand` lives (its value was
// removed before the woken take polled) is not announced to a `Demand`
// made afterwards, as for any key wanted before the first `Demand`.
#[test]
fn a_key_wanted_again_before_any_demand_is_not_announced_later() {
    let map = Map::new();
    let (_c, waker) = counting_waker();
    let mut take = map.take(&1);
    pending(poll_once(&mut take, &waker));
    map.insert(1, 10);
    assert_eq!(map.remove(&1), Some(10));
    let demand = map.demand();
    pending(poll_once(&mut take, &waker));
    assert_eq!(demand.next().now_or_never(), None);
}

// F, 1: on a limited map, a take that was waiting and then receives its
// value (the ready poll of an RPC response) frees a value: a producer
// waiting for room is let in.
#[test]
fn a_waiting_take_that_receives_its_value_lets_a_producer_in() {
    let map = Map::new().with_limit(1);
    let (_w, waker) = counting_waker();
    let mut take = map.take(&1);
    pending(poll_once(&mut take, &waker));
    map.insert(1, 10);
    let mut producers = [Producer::waiting(0, &map, 2, 20)];
    assert!(run_woken(&mut producers).is_empty());
    assert_eq!(ready(poll_once(&mut take, &waker)), Ok(10));
    assert_eq!(run_woken(&mut producers), vec![0]);
    assert_eq!(map.try_get(&2), Some(20));
}

// F, 5: a key announced while two takes waited, whose first (in the
// entry) left before the key was handed out, is still wanted by the take
// left in the waiter storage: it is handed out.
#[test]
fn a_key_still_wanted_by_a_later_take_is_handed_out() {
    let map = Map::new();
    let demand = map.demand();
    let (_c, waker) = counting_waker();
    let mut a = map.take(&1);
    let mut b = map.take(&1);
    pending(poll_once(&mut a, &waker));
    pending(poll_once(&mut b, &waker));
    drop(a);
    assert_eq!(demand.next().now_or_never(), Some(Some(1)));
    map.insert(1, 10);
    assert_eq!(ready(poll_once(&mut b, &waker)), Ok(10));
}
