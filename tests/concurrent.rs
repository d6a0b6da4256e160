//! Real threads and runtimes: blocking waits, tokio tasks, a
//! `futures::executor`, and a token passed around a ring of threads.
//!
//! No test asserts a duration. Where a test must know that other threads are
//! already waiting, it polls `waiters()` until they are.

#![cfg(feature = "std")]

mod common;

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::thread;
use std::time::Duration;

use awaitmap::{AwaitMap, WaitError};
use common::{Tracked, XorShift, live, live_counter};

/// Sleeps briefly until `cond` holds: how a test learns that other threads
/// have registered. Never times out (a hang is the failure), never asserts
/// a duration.
fn wait_until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        thread::sleep(Duration::from_millis(1));
    }
}

/// The value the producers store for key `k`.
fn value_of(k: u64) -> u64 {
    k * 1_000 + 7
}

// ---------------------------------------------------------------------------
// (a) One producer, eight blocking consumers
// ---------------------------------------------------------------------------

/// 1,000 keys; 200 under miri, which runs the same threads 100x slower.
const KEYS: u64 = if cfg!(miri) { 200 } else { 1_000 };
/// Keys below this are taken, the others are read with `get`.
const TAKE_BELOW: u64 = KEYS / 2;
const CONSUMERS: u64 = 8;

/// Whether consumer `c` takes key `k` (`k < TAKE_BELOW`): its own keys
/// (`k % 8 == c`), and every third key of its neighbour (`k % 8 == c + 1`),
/// so those keys have two takers racing for one value.
fn takes(c: u64, k: u64) -> bool {
    k % CONSUMERS == c || (k % CONSUMERS == (c + 1) % CONSUMERS && k % 3 == 0)
}

/// Whether consumer `c` reads key `k` (`k >= TAKE_BELOW`): every key is read
/// by two consumers, every 50th key by all eight.
fn gets(c: u64, k: u64) -> bool {
    k % 4 == c % 4 || k % 50 == 0
}

// Guarantees 1, 2, 6 and 9: shuffled inserts vs 8 blocking consumers; each taken value arrives exactly once, every get sees its value.
#[test]
fn shuffled_producer_and_eight_blocking_consumers() {
    let map: AwaitMap<u64, u64> = AwaitMap::new();
    let results: Vec<(Vec<u64>, Vec<u64>, usize)> = thread::scope(|s| {
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|c| {
                let map = &map;
                s.spawn(move || {
                    let mut plan: Vec<(u64, bool)> = (0..KEYS)
                        .filter_map(|k| {
                            if k < TAKE_BELOW {
                                takes(c, k).then_some((k, true))
                            } else {
                                gets(c, k).then_some((k, false))
                            }
                        })
                        .collect();
                    XorShift::new(100 + c).shuffle(&mut plan);
                    let mut taken = Vec::new();
                    let mut lost = Vec::new();
                    let mut got = 0;
                    for (k, take) in plan {
                        if take {
                            match map.take_blocking(&k) {
                                Ok(v) => {
                                    assert_eq!(v, value_of(k));
                                    taken.push(k);
                                }
                                // The other taker of a shared key won; the
                                // producer's final `close` releases us.
                                Err(WaitError::Closed) => lost.push(k),
                                Err(e) => panic!("take of {k}: {e}"),
                            }
                        } else {
                            assert_eq!(map.get_blocking(&k), Ok(value_of(k)), "get of {k}");
                            got += 1;
                        }
                    }
                    (taken, lost, got)
                })
            })
            .collect();
        let producer = s.spawn(|| {
            let mut keys: Vec<u64> = (0..KEYS).collect();
            XorShift::new(7).shuffle(&mut keys);
            for k in keys {
                assert_eq!(map.insert(k, value_of(k)), None);
            }
            // Every value is in: only takers that lost a race still wait.
            map.close();
        });
        producer.join().unwrap();
        consumers.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut taken_count = vec![0_u32; TAKE_BELOW as usize];
    let mut lost_count = vec![0_u32; TAKE_BELOW as usize];
    let mut gets_done = 0;
    for (taken, lost, got) in &results {
        for &k in taken {
            taken_count[k as usize] += 1;
        }
        for &k in lost {
            lost_count[k as usize] += 1;
        }
        gets_done += got;
    }
    for k in 0..TAKE_BELOW {
        let takers = (0..CONSUMERS).filter(|&c| takes(c, k)).count() as u32;
        assert_eq!(taken_count[k as usize], 1, "key {k} taken once");
        assert_eq!(lost_count[k as usize], takers - 1, "key {k}: losers");
    }
    let planned_gets: usize = (0..CONSUMERS)
        .map(|c| (TAKE_BELOW..KEYS).filter(|&k| gets(c, k)).count())
        .sum();
    assert_eq!(gets_done, planned_gets);
    // The taken keys are gone, the read ones stay.
    assert_eq!(map.len(), (KEYS - TAKE_BELOW) as usize);
    for k in TAKE_BELOW..KEYS {
        assert_eq!(map.try_get(&k), Some(value_of(k)));
    }
    assert_eq!(map.waiters(), 0);
}

// ---------------------------------------------------------------------------
// (b) Blocking timeouts
// ---------------------------------------------------------------------------

// Call shapes (`*_blocking_timeout`) and guarantee 5: a timed-out wait returns `TimedOut` and deregisters.
#[test]
fn blocking_timeout_on_absent_key_times_out_and_deregisters() {
    let map: AwaitMap<u32, u32> = AwaitMap::new();
    let short = Duration::from_millis(20);
    assert_eq!(
        map.get_blocking_timeout(&1, short),
        Err(WaitError::TimedOut)
    );
    assert_eq!(map.waiters(), 0);
    assert_eq!(
        map.take_blocking_timeout(&1, short),
        Err(WaitError::TimedOut)
    );
    assert_eq!(map.waiters(), 0);
    assert_eq!(
        map.get_blocking_timeout(&1, Duration::ZERO),
        Err(WaitError::TimedOut)
    );
    assert_eq!(map.waiters(), 0);
    // Other keys' inserts do not end the wait early with a wrong answer.
    thread::scope(|s| {
        let waiter = s.spawn(|| map.get_blocking_timeout(&1, Duration::from_millis(50)));
        // If the waiter already timed out, this test shows less, but never hangs.
        wait_until(|| map.waiters() == 1 || waiter.is_finished());
        map.insert(2, 2);
        assert_eq!(waiter.join().unwrap(), Err(WaitError::TimedOut));
    });
    assert_eq!(map.waiters(), 0);
    assert!(!map.contains_key(&1));
}

// Guarantees 1 and 2: a value inserted before the timeout is returned; a present key needs no time at all.
#[test]
fn blocking_timeout_returns_a_value_inserted_in_time() {
    let map: AwaitMap<u32, String> = AwaitMap::new();
    let long = Duration::from_secs(600);
    thread::scope(|s| {
        let getter = s.spawn(|| map.get_blocking_timeout(&1, long));
        let taker = s.spawn(|| map.take_blocking_timeout(&2, long));
        wait_until(|| map.waiters() == 2);
        map.insert(1, "one".into());
        map.insert(2, "two".into());
        assert_eq!(getter.join().unwrap().as_deref(), Ok("one"));
        assert_eq!(taker.join().unwrap().as_deref(), Ok("two"));
    });
    assert_eq!(map.try_get(&1).as_deref(), Some("one"));
    assert!(!map.contains_key(&2));
    assert_eq!(map.waiters(), 0);
    // Present: ready on the first poll, even with no time left.
    assert_eq!(
        map.get_blocking_timeout(&1, Duration::ZERO).as_deref(),
        Ok("one")
    );
    assert_eq!(
        map.take_blocking_timeout(&1, Duration::ZERO).as_deref(),
        Ok("one")
    );
    assert!(map.is_empty());
}

// ---------------------------------------------------------------------------
// (c) close and cancel wake blocked threads
// ---------------------------------------------------------------------------

// Guarantee 9: `close` wakes every blocked thread with `Err(Closed)`; a present key still resolves `Ok`.
#[test]
fn close_wakes_blocked_threads() {
    let map: AwaitMap<u32, u32> = AwaitMap::new();
    thread::scope(|s| {
        let map = &map;
        let mut waiting = Vec::new();
        for k in 0..4 {
            waiting.push(s.spawn(move || (k, map.get_blocking(&k))));
        }
        for k in [0, 10] {
            waiting.push(s.spawn(move || (k, map.take_blocking(&k))));
        }
        let timed = s.spawn(|| map.get_blocking_timeout(&20, Duration::from_secs(600)));
        wait_until(|| map.waiters() == 7);
        map.close();
        for h in waiting {
            let (k, r) = h.join().unwrap();
            assert_eq!(r, Err(WaitError::Closed), "key {k}");
        }
        assert_eq!(timed.join().unwrap(), Err(WaitError::Closed));
    });
    assert_eq!(map.waiters(), 0);
    assert!(map.is_closed());
    assert_eq!(map.get_blocking(&1), Err(WaitError::Closed));
    map.insert(1, 11);
    assert_eq!(map.get_blocking(&1), Ok(11));
    assert_eq!(map.take_blocking(&1), Ok(11));
}

// Guarantee 8: `cancel` wakes the blocked threads of one key with `Err(Cancelled)`; other keys keep waiting.
#[test]
fn cancel_wakes_blocked_threads_of_one_key() {
    let map: AwaitMap<u32, u32> = AwaitMap::new();
    thread::scope(|s| {
        let map = &map;
        let mut on_five = Vec::new();
        for _ in 0..3 {
            on_five.push(s.spawn(|| map.get_blocking(&5)));
            on_five.push(s.spawn(|| map.take_blocking(&5)));
        }
        let on_six = s.spawn(|| map.take_blocking(&6));
        wait_until(|| map.waiters() == 7);
        assert_eq!(map.cancel(&5), 6);
        for h in on_five {
            assert_eq!(h.join().unwrap(), Err(WaitError::Cancelled));
        }
        assert_eq!(map.waiters(), 1);
        assert_eq!(map.cancel(&5), 0);
        // Not sticky: a new wait on 5 waits and gets the value.
        let again = s.spawn(|| map.get_blocking(&5));
        wait_until(|| map.waiters() == 2);
        map.insert(5, 50);
        assert_eq!(again.join().unwrap(), Ok(50));
        map.insert(6, 60);
        assert_eq!(on_six.join().unwrap(), Ok(60));
    });
    assert_eq!(map.waiters(), 0);
    assert_eq!(map.try_get(&5), Some(50));
    assert!(!map.contains_key(&6));
}

// ---------------------------------------------------------------------------
// (d) Happens-before
// ---------------------------------------------------------------------------

// Guarantee 10: data written (plain or with relaxed atomics) before `insert` is visible to the consumer whose wait resolved.
#[test]
fn writes_before_insert_are_visible_after_the_wait() {
    let n: u64 = if cfg!(miri) { 50 } else { 2_000 };
    let map: AwaitMap<u64, Arc<Vec<u64>>> = AwaitMap::new();
    // Written once each, with `Relaxed`: only the map orders them.
    let slots: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
    // Grows with every insert, with `Relaxed`.
    let progress = AtomicU64::new(0);

    let check = |k: u64, data: Arc<Vec<u64>>| {
        let expected: Vec<u64> = (0..8).map(|j| k * 8 + j).collect();
        assert_eq!(*data, expected, "plain data of {k}");
        assert_eq!(slots[k as usize].load(Ordering::Relaxed), value_of(k));
        assert!(progress.load(Ordering::Relaxed) > k, "progress behind {k}");
    };
    thread::scope(|s| {
        // Evens by `get`, odds by `take`, each on its own thread.
        let getter = s.spawn(|| {
            for k in (0..n).step_by(2) {
                check(k, map.get_blocking(&k).unwrap());
            }
        });
        let taker = s.spawn(|| {
            for k in (1..n).step_by(2) {
                check(k, map.take_blocking(&k).unwrap());
            }
        });
        let producer = s.spawn(|| {
            for k in 0..n {
                let data = Arc::new((0..8).map(|j| k * 8 + j).collect());
                slots[k as usize].store(value_of(k), Ordering::Relaxed);
                progress.store(k + 1, Ordering::Relaxed);
                map.insert(k, data);
            }
        });
        producer.join().unwrap();
        getter.join().unwrap();
        taker.join().unwrap();
    });
    assert_eq!(map.len() as u64, n.div_ceil(2));
}

// ---------------------------------------------------------------------------
// (e) tokio, multi-thread
// ---------------------------------------------------------------------------

// Guarantees 1, 6 and 10: 200 spawned `take_owned` tasks (50 under miri), inserts in random order from another task; each resolves once with its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_take_owned_tasks_each_get_their_value_once() {
    const TASKS: u64 = if cfg!(miri) { 50 } else { 200 };
    let map: Arc<AwaitMap<u64, Tracked>> = Arc::new(AwaitMap::new());
    let counter = live_counter();
    let tasks: Vec<_> = (0..TASKS)
        .map(|id| {
            let fut = map.take_owned(&id);
            tokio::spawn(async move { (id, fut.await) })
        })
        .collect();
    let producer = tokio::spawn({
        let map = Arc::clone(&map);
        let counter = Arc::clone(&counter);
        async move {
            let mut ids: Vec<u64> = (0..TASKS).collect();
            XorShift::new(42).shuffle(&mut ids);
            for (n, id) in ids.into_iter().enumerate() {
                assert!(
                    map.insert(id, Tracked::new(value_of(id), &counter))
                        .is_none()
                );
                if n % 8 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    let mut seen = vec![false; TASKS as usize];
    let mut values = Vec::new();
    for task in tasks {
        let (id, out) = task.await.unwrap();
        let value = out.unwrap_or_else(|e| panic!("task {id}: {e}"));
        assert_eq!(value.id, value_of(id));
        assert!(!seen[id as usize], "task {id} twice");
        seen[id as usize] = true;
        values.push(value);
    }
    producer.await.unwrap();
    assert!(seen.iter().all(|&s| s));
    assert!(map.is_empty());
    assert_eq!(map.waiters(), 0);
    // No value cloned or leaked: exactly the delivered ones are alive.
    assert_eq!(live(&counter), TASKS as usize);
    drop(values);
    assert_eq!(live(&counter), 0);
}

// Guarantees 5 and 6: `tokio::time::timeout` drops a waiting future, which deregisters; a later value stays in the map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_timeout_drops_the_wait_and_deregisters() {
    let map: Arc<AwaitMap<u64, u64>> = Arc::new(AwaitMap::new());
    let waited = tokio::time::timeout(Duration::from_millis(20), async {
        let mut get = map.get(&1);
        // One poll by hand, to see it registered before the timeout fires.
        poll_fn(|cx| {
            assert!(Pin::new(&mut get).poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        assert_eq!(map.waiters(), 1);
        get.await
    })
    .await;
    assert!(
        waited.is_err(),
        "a get of an absent key resolved: {waited:?}"
    );
    assert_eq!(map.waiters(), 0);

    // The same through a spawned, owned `take`.
    let task = tokio::spawn({
        let fut = map.take_owned(&2);
        async move { tokio::time::timeout(Duration::from_millis(20), fut).await }
    });
    assert!(task.await.unwrap().is_err());
    assert_eq!(map.waiters(), 0);
    map.insert(2, 22);
    assert_eq!(map.try_get(&2), Some(22));
    assert_eq!(map.take_owned(&2).await, Ok(22));
}

// ---------------------------------------------------------------------------
// (f) futures::executor
// ---------------------------------------------------------------------------

// Guarantee 1: `futures::executor::block_on` over joined gets (and a take), woken by inserts from another thread.
#[test]
fn block_on_joined_gets_resolve_after_inserts() {
    let map: AwaitMap<u32, String> = AwaitMap::new();
    thread::scope(|s| {
        let producer = s.spawn(|| {
            wait_until(|| map.waiters() == 5);
            map.insert(3, "three".into());
            map.insert(1, "one".into());
            map.insert(2, "two".into());
        });
        let (a, b, c, d, e) = futures::executor::block_on(async {
            tokio::join!(
                map.get(&1),
                map.get(&2),
                map.get(&3),
                map.get(&1),
                map.take(&3)
            )
        });
        producer.join().unwrap();
        assert_eq!(a.as_deref(), Ok("one"));
        assert_eq!(b.as_deref(), Ok("two"));
        assert_eq!(c.as_deref(), Ok("three"));
        assert_eq!(d.as_deref(), Ok("one"));
        assert_eq!(e.as_deref(), Ok("three"));
    });
    assert!(!map.contains_key(&3));
    assert_eq!(map.len(), 2);

    // Many at once, through `join_all`, inserted in shuffled order.
    let keys: Vec<u32> = (100..164).collect();
    thread::scope(|s| {
        s.spawn(|| {
            wait_until(|| map.waiters() == keys.len());
            let mut order = keys.clone();
            XorShift::new(3).shuffle(&mut order);
            for k in order {
                map.insert(k, k.to_string());
            }
        });
        let all =
            futures::executor::block_on(futures::future::join_all(keys.iter().map(|k| map.get(k))));
        for (k, v) in keys.iter().zip(all) {
            assert_eq!(v, Ok(k.to_string()));
        }
    });
    assert_eq!(map.waiters(), 0);
}

// ---------------------------------------------------------------------------
// (g) A token around a ring of threads
// ---------------------------------------------------------------------------

// Guarantees 1, 6 and 10: a token taken and re-inserted around a ring of 4 threads for thousands of hops is never lost or duplicated.
#[test]
fn token_ring_passes_one_token_through_four_threads() {
    const THREADS: u64 = 4;
    let rounds: u64 = if cfg!(miri) { 10 } else { 2_500 };
    let map: AwaitMap<u64, Tracked> = AwaitMap::new();
    let counter = live_counter();
    assert!(map.insert(0, Tracked::new(0, &counter)).is_none());
    thread::scope(|s| {
        for t in 0..THREADS {
            let map = &map;
            s.spawn(move || {
                for _ in 0..rounds {
                    // Three ways to wait, so all of them see contention.
                    let mut token = match t {
                        0 => futures::executor::block_on(map.take(&t)),
                        1 => map.take_blocking_timeout(&t, Duration::from_secs(600)),
                        _ => map.take_blocking(&t),
                    }
                    .unwrap();
                    assert_eq!(token.id % THREADS, t, "token reached the wrong thread");
                    token.id += 1;
                    assert!(
                        map.insert((t + 1) % THREADS, token).is_none(),
                        "a second token appeared"
                    );
                }
            });
        }
    });
    assert_eq!(map.len(), 1);
    assert_eq!(map.waiters(), 0);
    assert_eq!(live(&counter), 1);
    let token = map.try_get(&0).expect("the token is back at key 0");
    assert_eq!(token.id, THREADS * rounds);
    drop(token);
    assert_eq!(live(&counter), 1);
    assert!(map.remove(&0).is_some());
    assert_eq!(live(&counter), 0);
}
