//! Claims and deliveries: `claim` registers a take at once and releases the
//! key when dropped; `deliver` stores only what a future waits for. Hand-
//! polled with counting wakers, then an RPC client on tokio with timeouts.
//!
//! Each test names the crate guarantees it leans on (1 store-then-wake,
//! 5 deregistration, 6 take's hand-off, 9 close, 11 user code and the lock,
//! 12 completed futures) and "C" for what the docs of `claim` and `deliver`
//! promise.
#![cfg(feature = "std")]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use awaitmap::{AwaitMap, WaitError};
use common::{
    Tracked, assert_repoll_panics, counting_waker, live, live_counter, no_hang_or, pending,
    poll_once, ready,
};

type Map = AwaitMap<u64, u64>;

// C, 1: a claim is registered before it is polled; a reply delivered before
// its first poll is kept for it and makes that poll `Ready`.
#[test]
fn a_claim_registers_at_once_and_keeps_an_early_reply() {
    let map = Map::new();
    let claim = map.claim(1);
    assert_eq!(map.waiters(), 1);
    assert_eq!(map.deliver(1, 10), Ok(None));
    assert_eq!(map.len(), 1);
    let (counter, waker) = counting_waker();
    let mut claim = claim;
    assert_eq!(ready(poll_once(&mut claim, &waker)), Ok(10));
    assert_eq!(counter.wakes(), 0);
    assert!(map.is_empty());
    assert_eq!(map.waiters(), 0);
    assert_repoll_panics(&mut claim, &waker);
}

// C, 1: a claim that waits is woken by the delivery, exactly once, and
// resolves with the value.
#[test]
fn a_waiting_claim_is_woken_by_deliver() {
    let map = Map::new();
    let mut claim = map.claim(2);
    let (counter, waker) = counting_waker();
    pending(poll_once(&mut claim, &waker));
    pending(poll_once(&mut claim, &waker));
    assert_eq!(map.deliver(2, 20), Ok(None));
    assert_eq!(counter.wakes(), 1);
    assert_eq!(ready(poll_once(&mut claim, &waker)), Ok(20));
    assert!(map.is_empty());
}

// C, 1: claims cancelled before their first poll (a promise keeps their
// key's entry) learn it on that poll, the second one (not first in line) as
// well as the first; they do not wait on.
#[test]
fn claims_cancelled_before_their_first_poll_fail_on_it() {
    let map = Map::new();
    let promise = map.promise(4).expect("no value, no promise");
    let mut first = map.claim(4);
    let mut second = map.claim(4);
    assert_eq!(map.waiters(), 2);
    assert_eq!(map.cancel(&4), 2);
    let (counter, waker) = counting_waker();
    assert_eq!(
        ready(poll_once(&mut second, &waker)),
        Err(WaitError::Cancelled)
    );
    assert_eq!(
        ready(poll_once(&mut first, &waker)),
        Err(WaitError::Cancelled)
    );
    assert_eq!(counter.wakes(), 0);
    assert_eq!(map.waiters(), 0);
    // The promise still holds the key: its value is kept, nobody took it.
    assert_eq!(promise.fulfill(40), None);
    assert_eq!(map.try_get(&4), Some(40));
}

// C, 1: `deliver` to a key with a claim first in line and gets behind it
// wakes them all: the gets see the value, the claim takes it.
#[test]
fn deliver_wakes_the_gets_behind_a_claim() {
    let map = Map::new();
    let mut claim = map.claim(5);
    let (claim_wakes, claim_waker) = counting_waker();
    pending(poll_once(&mut claim, &claim_waker));
    let (get_wakes, get_waker) = counting_waker();
    let mut gets: Vec<_> = (0..3).map(|_| map.get(&5)).collect();
    for g in &mut gets {
        pending(poll_once(g, &get_waker));
    }
    assert_eq!(map.deliver(5, 50), Ok(None));
    assert_eq!(claim_wakes.wakes(), 1);
    assert_eq!(get_wakes.wakes(), 3, "a get behind the claim was not woken");
    for g in &mut gets {
        assert_eq!(ready(poll_once(g, &get_waker)), Ok(50));
    }
    assert_eq!(ready(poll_once(&mut claim, &claim_waker)), Ok(50));
    assert!(map.is_empty());
}

// C, 1: claims made before the table grows (thousands of other keys come
// to be awaited, so every entry moves) are polled afterwards: each stores
// its waker in its own key's entry, is woken by its own delivery and gets
// its own reply, and the takes on the other keys are not disturbed.
#[test]
fn claims_polled_after_the_table_grew_wait_on_their_own_keys() {
    let map = Map::new();
    let ids: Vec<u64> = (0..200).collect();
    let mut claims: Vec<_> = ids.iter().map(|&id| map.claim(id)).collect();
    // Fewer under miri, still enough to grow the table past the claims.
    let others: Vec<u64> = (1_000..if cfg!(miri) { 1_600 } else { 4_000 }).collect();
    let (other_wakes, other_waker) = counting_waker();
    let mut takes: Vec<_> = others.iter().map(|k| map.take(k)).collect();
    for t in &mut takes {
        pending(poll_once(t, &other_waker));
    }
    let (claim_wakes, claim_waker) = counting_waker();
    for c in &mut claims {
        pending(poll_once(c, &claim_waker));
    }
    for &id in &ids {
        assert_eq!(map.deliver(id, id + 1), Ok(None));
    }
    assert_eq!(claim_wakes.wakes(), 200, "a claim was not woken");
    assert_eq!(other_wakes.wakes(), 0);
    for (id, c) in ids.iter().zip(&mut claims) {
        assert_eq!(ready(poll_once(c, &claim_waker)), Ok(id + 1));
    }
    for &k in &others {
        assert_eq!(map.deliver(k, k), Ok(None));
    }
    assert_eq!(other_wakes.wakes(), others.len());
    for (k, t) in others.iter().zip(&mut takes) {
        assert_eq!(ready(poll_once(t, &other_waker)), Ok(*k));
    }
    assert!(map.is_empty());
}

// C, 1: a reply delivered before the first poll of the second claim on a
// key is the first claim's; the second claim's first poll waits, and the
// next delivery is its.
#[test]
fn the_second_claim_on_a_key_waits_behind_the_first_for_the_next_reply() {
    let map = Map::new();
    let mut first = map.claim(8);
    let mut second = map.claim(8);
    assert_eq!(map.deliver(8, 80), Ok(None));
    let (c, w) = counting_waker();
    pending(poll_once(&mut second, &w));
    assert_eq!(ready(poll_once(&mut first, &w)), Ok(80));
    assert_eq!(c.wakes(), 0);
    assert_eq!(map.deliver(8, 81), Ok(None));
    assert_eq!(c.wakes(), 1);
    assert_eq!(ready(poll_once(&mut second, &w)), Ok(81));
    assert!(map.is_empty());
}

// C, 1, 6: a reply delivered to a claim before its first poll is taken by
// a plain take that comes first (a present value goes at once); the claim,
// first in line (behind a get that waits in the key's entry), then waits on
// and is woken by the next delivery.
#[test]
fn a_claim_whose_early_reply_was_taken_is_woken_by_the_next() {
    let map = Map::new();
    let (c, w) = counting_waker();
    let mut get = map.get(&9);
    pending(poll_once(&mut get, &w));
    let mut claim = map.claim(9);
    assert_eq!(map.deliver(9, 90), Ok(None));
    let mut take = map.take(&9);
    assert_eq!(ready(poll_once(&mut take, &w)), Ok(90));
    pending(poll_once(&mut get, &w));
    pending(poll_once(&mut claim, &w));
    let before = c.wakes();
    assert_eq!(map.deliver(9, 91), Ok(None));
    assert_eq!(c.wakes() - before, 2, "the claim or the get was not woken");
    assert_eq!(ready(poll_once(&mut get, &w)), Ok(91));
    assert_eq!(ready(poll_once(&mut claim, &w)), Ok(91));
    assert!(map.is_empty());
}

// C, 5: a claim dropped before its reply came releases the key: the late
// reply is refused and handed back intact, and nothing is kept.
#[test]
fn a_late_reply_to_a_dropped_claim_is_refused() {
    let values = live_counter();
    let map: AwaitMap<u64, Tracked> = AwaitMap::new();
    let (_c, waker) = counting_waker();
    let mut claim = map.claim(3);
    pending(poll_once(&mut claim, &waker));
    drop(claim);
    assert_eq!(map.waiters(), 0);
    let (k, v) = map
        .deliver(3, Tracked::new(30, &values))
        .expect_err("nobody waits for key 3");
    assert_eq!((k, v.id), (3, 30));
    assert_eq!(live(&values), 1);
    drop(v);
    assert!(map.is_empty());
    // Never polled at all: the same.
    drop(map.claim(4));
    assert!(map.deliver(4, Tracked::new(40, &values)).is_err());
    assert!(map.is_empty());
    assert_eq!(live(&values), 0);
}

// C, 6: a claim dropped after its reply came, before it received it: the
// reply leaves with it (dropped, once), unless another take waits for the
// key: then the reply goes to that take, as a dropped take's would.
#[test]
fn a_reply_delivered_to_a_dropped_claim_goes_with_it_or_to_the_next_take() {
    let values = live_counter();
    let map: AwaitMap<u64, Tracked> = AwaitMap::new();
    let (_c, waker) = counting_waker();
    let mut claim = map.claim(5);
    pending(poll_once(&mut claim, &waker));
    assert!(map.deliver(5, Tracked::new(50, &values)).is_ok());
    drop(claim);
    assert!(map.is_empty(), "the undelivered reply was kept");
    assert_eq!(live(&values), 0);
    map.check_invariants();

    let claim = map.claim(6);
    let (counter, w2) = counting_waker();
    let mut take = map.take(&6);
    pending(poll_once(&mut take, &w2));
    assert!(map.deliver(6, Tracked::new(60, &values)).is_ok());
    assert_eq!(counter.wakes(), 0, "the claim came first");
    drop(claim);
    assert_eq!(counter.wakes(), 1, "the hand-off passed to the take");
    assert_eq!(ready(poll_once(&mut take, &w2)).map(|v| v.id), Ok(60));
    assert!(map.is_empty());
    assert_eq!(live(&values), 0);
}

// C, 1: `deliver` stores for any waiting future (a get: the value stays),
// replaces a value while a future still waits, and refuses a key that only
// has a value; on a limited map it lets in what a future waits for.
#[test]
fn deliver_stores_only_what_a_future_waits_for() {
    let map = Map::new().with_limit(1);
    map.insert(9, 90);
    assert_eq!(map.deliver(9, 91), Err((9, 91)), "a value, but no waiter");
    assert_eq!(map.deliver(1, 10), Err((1, 10)), "no entry");
    let (counter, waker) = counting_waker();
    let mut get = map.get(&1);
    pending(poll_once(&mut get, &waker));
    assert_eq!(
        map.deliver(1, 10),
        Ok(None),
        "awaited: let in past the limit"
    );
    assert_eq!(counter.wakes(), 1);
    // Woken, not polled yet: still waits, so a second delivery replaces.
    assert_eq!(map.deliver(1, 11), Ok(Some(10)));
    assert_eq!(ready(poll_once(&mut get, &waker)), Ok(11));
    assert_eq!(map.try_get(&1), Some(11));
    assert_eq!(map.deliver(1, 12), Err((1, 12)), "nobody waits any more");
}

// C, 1: with claims and a take on one key, deliveries serve them in the
// order they registered, one value each, each woken once.
#[test]
fn deliveries_serve_claims_and_takes_in_order() {
    let map = Map::new();
    let (c1, w1) = counting_waker();
    let (c2, w2) = counting_waker();
    let (c3, w3) = counting_waker();
    let mut first = map.claim(7);
    // A take registers on its first poll, a claim when it is made.
    let mut second = map.take(&7);
    pending(poll_once(&mut second, &w2));
    let mut third = map.claim(7);
    pending(poll_once(&mut first, &w1));
    pending(poll_once(&mut third, &w3));
    assert_eq!(map.waiters(), 3);
    assert_eq!(map.deliver(7, 1), Ok(None));
    assert_eq!((c1.wakes(), c2.wakes(), c3.wakes()), (1, 0, 0));
    assert_eq!(ready(poll_once(&mut first, &w1)), Ok(1));
    assert_eq!(map.deliver(7, 2), Ok(None));
    assert_eq!((c2.wakes(), c3.wakes()), (1, 0));
    pending(poll_once(&mut third, &w3));
    assert_eq!(ready(poll_once(&mut second, &w2)), Ok(2));
    assert_eq!(map.deliver(7, 3), Ok(None));
    assert_eq!(c3.wakes(), 1);
    assert_eq!(ready(poll_once(&mut third, &w3)), Ok(3));
    assert!(map.is_empty());
    assert_eq!(map.waiters(), 0);
}

// C, 9: a claim on a closed map fails at once with `Closed`; a waiting claim
// fails when the map closes; a claim of a present key takes it at once.
#[test]
fn claims_and_close_and_present_keys() {
    let map = Map::new();
    map.insert(1, 10);
    let (_c, waker) = counting_waker();
    let mut present = map.claim(1);
    assert!(map.is_empty(), "the claim took the present value");
    assert_eq!(ready(poll_once(&mut present, &waker)), Ok(10));
    let mut waiting = map.claim(2);
    map.close();
    assert_eq!(
        ready(poll_once(&mut waiting, &waker)),
        Err(WaitError::Closed)
    );
    let mut after = map.claim(3);
    assert_eq!(ready(poll_once(&mut after, &waker)), Err(WaitError::Closed));
    assert_eq!(map.waiters(), 0);
}

/// A value whose destructor calls back into its map: it would deadlock (or
/// panic, with the spin lock in debug builds) if dropped under the lock.
struct CallsBack {
    map: Arc<AwaitMap<u64, CallsBack>>,
    drops: Arc<AtomicUsize>,
}

impl Drop for CallsBack {
    fn drop(&mut self) {
        let _ = self.map.waiters();
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

// C, 11: the reply a dropped claim takes with it is dropped with the lock
// released.
#[test]
fn a_released_reply_is_dropped_with_the_lock_released() {
    let drops = Arc::new(AtomicUsize::new(0));
    let map: Arc<AwaitMap<u64, CallsBack>> = Arc::new(AwaitMap::new());
    let claim = map.claim_owned(1);
    let value = CallsBack {
        map: Arc::clone(&map),
        drops: Arc::clone(&drops),
    };
    assert!(map.deliver(1, value).is_ok());
    drop(claim);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert!(map.is_empty());
}

// C: the RPC client of the docs on tokio: 2,000 calls multiplexed over one
// reader, a tenth of them giving up (a timeout) before their reply comes:
// the server replies to those only once the caller has given up. Every
// other reply is received, the late ones are refused, and the map ends
// empty with no bookkeeping by the client.
#[test]
fn an_rpc_client_with_timeouts_keeps_no_late_replies() {
    no_hang_or("rpc client", "the client stalled", || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let calls: u64 = if cfg!(miri) { 20 } else { 2_000 };
        let map: Arc<AwaitMap<u64, u64>> = Arc::new(AwaitMap::new());
        // Requests to the server, and the ids of calls that gave up (the
        // server holds those replies back until then: a late reply).
        let (requests, mut server_in) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let (gave_up, mut gave_up_in) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let (refused, outcomes) = rt.block_on(async {
            let server = tokio::spawn({
                let map = Arc::clone(&map);
                async move {
                    let mut refused = 0;
                    while let Some(id) = server_in.recv().await {
                        if id % 10 != 0 {
                            let map = Arc::clone(&map);
                            // Replies arrive in any order.
                            tokio::spawn(async move {
                                tokio::task::yield_now().await;
                                map.deliver(id, id * 2).expect("a waiting call refused");
                            });
                        }
                    }
                    while let Some(id) = gave_up_in.recv().await {
                        refused += usize::from(map.deliver(id, id * 2).is_err());
                    }
                    refused
                }
            });
            let mut clients = tokio::task::JoinSet::new();
            for id in 0..calls {
                let (map, requests, gave_up) =
                    (Arc::clone(&map), requests.clone(), gave_up.clone());
                clients.spawn(async move {
                    let reply = map.claim_owned(id);
                    requests.send(id).unwrap();
                    let limit = Duration::from_millis(if id % 10 == 0 { 1 } else { 60_000 });
                    let got = tokio::time::timeout(limit, reply).await;
                    if got.is_err() {
                        gave_up.send(id).unwrap();
                    }
                    (id, got)
                });
            }
            drop((requests, gave_up));
            let mut outcomes = HashMap::new();
            while let Some(r) = clients.join_next().await {
                let (id, got) = r.unwrap();
                outcomes.insert(id, got);
            }
            (server.await.unwrap(), outcomes)
        });
        let late = (0..calls).filter(|id| id % 10 == 0).count();
        for (id, got) in &outcomes {
            if id % 10 == 0 {
                assert!(got.is_err(), "call {id} got a reply that was never sent");
            } else {
                assert_eq!(got.as_ref().ok(), Some(&Ok(id * 2)), "call {id}");
            }
        }
        assert_eq!(outcomes.len() as u64, calls);
        assert_eq!(refused, late, "late replies refused");
        assert!(map.is_empty(), "{} late replies kept", map.len());
        assert_eq!(map.waiters(), 0);
    });
}
