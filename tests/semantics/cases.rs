// The cases of `tests/semantics.rs` and `tests/fixed_semantics.rs`: the
// numbered guarantees, checked against `AwaitMap` there and against
// `FixedAwaitMap` here. Cases that use what only `AwaitMap` has (owned
// futures, borrowed key forms) sit in `alloc_only!`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Wake, Waker};

use awaitmap::WaitError;
use common::{
    Tracked, assert_repoll_panics, counting_waker, kept, live, live_counter, pending, poll_once,
    ready,
};

// ---------------------------------------------------------------------------
// Helpers local to this file.
// ---------------------------------------------------------------------------

/// A tiny deterministic generator for the scripted model test.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

// ---------------------------------------------------------------------------
// Guarantee 1: store, then wake.
// ---------------------------------------------------------------------------

// Guarantee 1.
#[test]
fn insert_wakes_every_get_and_only_the_earliest_take_of_its_key() {
    let map = AwaitMap::<u64, u64>::new();
    let gets: Vec<_> = (0..3).map(|_| (map.get(&1), counting_waker())).collect();
    let takes: Vec<_> = (0..3).map(|_| (map.take(&1), counting_waker())).collect();
    let mut gets = gets;
    let mut takes = takes;
    let mut other_get = map.get(&2);
    let mut other_take = map.take(&2);
    let (og_c, og_w) = counting_waker();
    let (ot_c, ot_w) = counting_waker();

    for (f, (_, w)) in &mut gets {
        pending(poll_once(f, w));
    }
    for (f, (_, w)) in &mut takes {
        pending(poll_once(f, w));
    }
    pending(poll_once(&mut other_get, &og_w));
    pending(poll_once(&mut other_take, &ot_w));
    assert_eq!(map.waiters(), 8);

    assert_eq!(map.insert(1, 10), None);

    for (_, (c, _)) in &gets {
        assert_eq!(c.wakes(), 1);
    }
    assert_eq!(takes[0].1.0.wakes(), 1);
    assert_eq!(takes[1].1.0.wakes(), 0);
    assert_eq!(takes[2].1.0.wakes(), 0);
    assert_eq!(og_c.wakes(), 0);
    assert_eq!(ot_c.wakes(), 0);

    // The woken futures resolve with the value; the gets before the take so
    // the value is still there for them.
    for (f, (_, w)) in &mut gets {
        assert_eq!(ready(poll_once(f, w)), Ok(10));
    }
    let (f, (_, w)) = &mut takes[0];
    assert_eq!(ready(poll_once(f, w)), Ok(10));
    assert_eq!(map.len(), 0);
    assert!(!map.contains_key(&1));
    // The two later takes and the two futures of key 2 still wait.
    assert_eq!(map.waiters(), 4);
    for (f, (_, w)) in takes.iter_mut().skip(1) {
        pending(poll_once(f, w));
    }
}

// Guarantee 1.
#[test]
fn insert_returns_the_value_it_replaced_and_drops_nothing() {
    let live_vals = live_counter();
    let map = AwaitMap::<u64, Tracked>::new();
    assert_eq!(map.insert(1, Tracked::new(1, &live_vals)), None);
    let old = map
        .insert(1, Tracked::new(2, &live_vals))
        .expect("replaced");
    assert_eq!(old.id, 1);
    // The replaced value came back to the caller, not dropped inside.
    assert_eq!(live(&live_vals), 2);
    assert_eq!(map.len(), 1);
    assert_eq!(map.try_get(&1).map(|t| t.id), Some(2));
    drop(old);
    assert_eq!(live(&live_vals), 1);
    assert_eq!(map.remove(&1).map(|t| t.id), Some(2));
    assert_eq!(live(&live_vals), 0);
}

// Guarantee 1.
#[test]
fn second_insert_before_the_woken_take_polls_wakes_no_second_take() {
    let map = AwaitMap::<u64, u64>::new();
    let (c1, w1) = counting_waker();
    let (c2, w2) = counting_waker();
    let mut t1 = map.take(&1);
    let mut t2 = map.take(&1);
    pending(poll_once(&mut t1, &w1));
    pending(poll_once(&mut t2, &w2));

    assert_eq!(map.insert(1, 100), None);
    assert_eq!((c1.wakes(), c2.wakes()), (1, 0));
    // t1 holds the wake-up and has not polled: the next insert replaces the
    // value and wakes nobody else.
    assert_eq!(map.insert(1, 200), Some(100));
    assert_eq!((c1.wakes(), c2.wakes()), (1, 0));

    assert_eq!(ready(poll_once(&mut t1, &w1)), Ok(200));
    pending(poll_once(&mut t2, &w2));
    assert_eq!(c2.wakes(), 0);
    assert_eq!(map.len(), 0);

    assert_eq!(map.insert(1, 300), None);
    assert_eq!((c1.wakes(), c2.wakes()), (1, 1));
    assert_eq!(ready(poll_once(&mut t2, &w2)), Ok(300));
    assert_eq!(map.waiters(), 0);
    assert!(map.is_empty());
}

// Guarantee 1.
#[test]
fn takes_are_served_in_registration_order_across_inserts() {
    let map = AwaitMap::<u64, u64>::new();
    let n = 6;
    let mut takes: Vec<_> = (0..n).map(|_| (map.take(&7), counting_waker())).collect();
    for (f, (_, w)) in &mut takes {
        pending(poll_once(f, w));
    }
    // Spurious polls in another order must not change the queue order.
    for i in (0..n).rev() {
        let (f, (_, w)) = &mut takes[i];
        pending(poll_once(f, w));
    }
    for i in 0..n {
        assert_eq!(map.insert(7, 1000 + i as u64), None);
        for (j, (_, (c, _))) in takes.iter().enumerate() {
            // Earlier takes were woken once for their own insert.
            let expect = usize::from(j <= i);
            assert_eq!(c.wakes(), expect, "take {j} after insert {i}");
        }
        // A later take polled while the value waits for the earliest one
        // does not get it.
        if i + 1 < n {
            let (f, (_, w)) = &mut takes[i + 1];
            pending(poll_once(f, w));
        }
        let (f, (_, w)) = &mut takes[i];
        assert_eq!(ready(poll_once(f, w)), Ok(1000 + i as u64));
        assert!(map.is_empty());
    }
    assert_eq!(map.waiters(), 0);
}

// Guarantee 1.
#[test]
fn woken_get_that_finds_the_value_taken_waits_for_the_next_insert() {
    let map = AwaitMap::<u64, u64>::new();
    let (gc, gw) = counting_waker();
    let (tc, tw) = counting_waker();
    let mut g = map.get(&1);
    let mut t = map.take(&1);
    pending(poll_once(&mut g, &gw));
    pending(poll_once(&mut t, &tw));

    map.insert(1, 5);
    assert_eq!((gc.wakes(), tc.wakes()), (1, 1));
    // The take polls first and moves the value out.
    assert_eq!(ready(poll_once(&mut t, &tw)), Ok(5));
    pending(poll_once(&mut g, &gw));
    assert_eq!(map.waiters(), 1);

    map.insert(1, 6);
    assert_eq!(gc.wakes(), 2);
    assert_eq!(ready(poll_once(&mut g, &gw)), Ok(6));
    assert_eq!(map.waiters(), 0);
    assert_eq!(map.try_get(&1), Some(6));
}

// Guarantee 1.
#[test]
fn insert_wakes_more_than_a_batch_of_waiters_each_exactly_once() {
    let map = AwaitMap::<u64, u64>::new();
    let n_gets = 45;
    let n_takes = 20;
    let mut gets: Vec<_> = (0..n_gets)
        .map(|_| (map.get(&3), counting_waker()))
        .collect();
    let mut takes: Vec<_> = (0..n_takes)
        .map(|_| (map.take(&3), counting_waker()))
        .collect();
    let mut others: Vec<_> = (0..20).map(|_| (map.get(&4), counting_waker())).collect();
    for (f, (_, w)) in gets.iter_mut().chain(others.iter_mut()) {
        pending(poll_once(f, w));
    }
    for (f, (_, w)) in &mut takes {
        pending(poll_once(f, w));
    }
    assert_eq!(map.waiters(), n_gets + n_takes + 20);

    map.insert(3, 9);
    assert!(gets.iter().all(|(_, (c, _))| c.wakes() == 1));
    assert_eq!(takes[0].1.0.wakes(), 1);
    assert!(takes[1..].iter().all(|(_, (c, _))| c.wakes() == 0));
    assert!(others.iter().all(|(_, (c, _))| c.wakes() == 0));

    // A second insert while all of them are woken and unpolled wakes no one
    // again: one wake-up per queued wake.
    map.insert(3, 10);
    assert!(gets.iter().all(|(_, (c, _))| c.wakes() == 1));
    assert!(takes[1..].iter().all(|(_, (c, _))| c.wakes() == 0));

    for (f, (_, w)) in &mut gets {
        assert_eq!(ready(poll_once(f, w)), Ok(10));
    }
    assert_eq!(map.waiters(), n_takes + 20);
}

/// A waker that, when woken, records what the map's `Debug` shows. `Debug`
/// never blocks: it prints `<locked>` if the lock is held.
struct SnapshotWaker {
    map: Arc<AwaitMap<u64, u64>>,
    seen: Mutex<Vec<(String, Option<u64>)>>,
}

impl Wake for SnapshotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let shown = format!("{:?}", self.map);
        let stored = if shown.contains("<locked>") {
            None
        } else {
            self.map.try_get(&1)
        };
        self.seen.lock().unwrap().push((shown, stored));
    }
}

// Guarantee 1.
#[test]
fn wakers_run_after_the_value_is_stored_and_the_lock_released() {
    let map = Arc::new(AwaitMap::<u64, u64>::new());
    let snap = Arc::new(SnapshotWaker {
        map: Arc::clone(&map),
        seen: Mutex::new(Vec::new()),
    });
    let waker = Waker::from(Arc::clone(&snap));
    let mut g = map.get(&1);
    pending(poll_once(&mut g, &waker));

    map.insert(1, 42);
    let seen = snap.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (shown, stored) = &seen[0];
    assert!(
        !shown.contains("<locked>"),
        "the waker ran under the lock: {shown}"
    );
    assert!(shown.contains("len: 1"), "value not stored yet: {shown}");
    assert_eq!(*stored, Some(42));
    assert_eq!(ready(poll_once(&mut g, &waker)), Ok(42));
}

// ---------------------------------------------------------------------------
// Guarantee 2: present keys resolve at once.
// ---------------------------------------------------------------------------

// Guarantee 2.
#[test]
fn get_and_take_of_a_present_key_are_ready_at_once_and_keep_no_waker() {
    let map = AwaitMap::<u64, u64>::new();
    map.insert(1, 11);
    map.insert(2, 22);
    let (c, w) = counting_waker();

    let mut g = map.get(&1);
    assert_eq!(ready(poll_once(&mut g, &w)), Ok(11));
    assert_eq!(map.waiters(), 0);
    assert_eq!(kept(&c), 0);
    assert_eq!(map.try_get(&1), Some(11), "get left the value in place");

    let mut t = map.take(&2);
    assert_eq!(ready(poll_once(&mut t, &w)), Ok(22));
    assert_eq!(map.waiters(), 0);
    assert_eq!(kept(&c), 0);
    assert!(!map.contains_key(&2));
    assert_eq!(map.len(), 1);

    drop((g, t));
    // Later inserts have nothing to wake.
    map.insert(1, 12);
    map.insert(2, 23);
    assert_eq!(c.wakes(), 0);
    assert_eq!(kept(&c), 0);
}

alloc_only! {
// Guarantee 2.
#[test]
fn owned_futures_of_a_present_key_are_ready_at_once() {
    let map = Arc::new(AwaitMap::<u64, u64>::new());
    map.insert(1, 11);
    map.insert(2, 22);
    let (c, w) = counting_waker();
    let mut g = map.get_owned(&1);
    let mut t = map.take_owned(&2);
    assert_eq!(ready(poll_once(&mut g, &w)), Ok(11));
    assert_eq!(ready(poll_once(&mut t, &w)), Ok(22));
    assert_eq!(map.waiters(), 0);
    assert_eq!(kept(&c), 0);
    assert_eq!(c.wakes(), 0);
    assert_eq!(map.len(), 1);
    assert_eq!(map.try_get(&1), Some(11));
}
}

// Guarantee 2.
#[test]
fn ready_at_once_stores_no_key_and_take_frees_the_key() {
    let keys = live_counter();
    let map = AwaitMap::<Tracked, u64>::new();
    let k = Tracked::new(1, &keys);
    map.insert(k.clone(), 5);
    assert_eq!(live(&keys), 2); // ours + the map's

    let (c, w) = counting_waker();
    let mut g = map.get(&k);
    assert_eq!(ready(poll_once(&mut g, &w)), Ok(5));
    assert_eq!(live(&keys), 2, "a ready get must not clone the key");

    let mut t = map.take(&k);
    assert_eq!(ready(poll_once(&mut t, &w)), Ok(5));
    assert_eq!(live(&keys), 1, "taking the last value frees the stored key");
    assert_eq!(kept(&c), 0);
    assert_eq!(c.wakes(), 0);
}

// ---------------------------------------------------------------------------
// Guarantee 3: lazy.
// ---------------------------------------------------------------------------

alloc_only! {
// Guarantee 3.
#[test]
fn dropping_unpolled_futures_leaves_the_map_as_it_was() {
    let keys = live_counter();
    let map = Arc::new(AwaitMap::<Tracked, u64>::new());
    let present = Tracked::new(1, &keys);
    let absent = Tracked::new(2, &keys);
    map.insert(present.clone(), 10);
    assert_eq!(live(&keys), 3);

    let before = format!("{map:?}");
    let arcs = Arc::strong_count(&map);
    {
        let _g1 = map.get(&present);
        let _g2 = map.get(&absent);
        let _t1 = map.take(&present);
        let _t2 = map.take(&absent);
        let _go = map.get_owned(&absent);
        let _to = map.take_owned(&present);
        assert_eq!(map.waiters(), 0);
        assert_eq!(map.len(), 1);
        assert!(!map.contains_key(&absent));
        assert_eq!(Arc::strong_count(&map), arcs + 2);
    }
    assert_eq!(format!("{map:?}"), before);
    assert_eq!(map.waiters(), 0);
    assert_eq!(map.len(), 1);
    assert_eq!(map.try_get(&present), Some(10));
    assert!(!map.contains_key(&absent));
    assert_eq!(Arc::strong_count(&map), arcs);
    assert_eq!(live(&keys), 3, "no key left behind");
    // Nothing was registered, so nothing is cancelled either.
    assert_eq!(map.cancel(&absent), 0);
}
}

// Guarantee 3.
#[test]
fn a_future_created_before_insert_and_first_polled_after_is_ready_at_once() {
    let map = AwaitMap::<u64, u64>::new();
    let (c, w) = counting_waker();
    let mut g = map.get(&1);
    let mut t = map.take(&2);
    assert_eq!(map.waiters(), 0);
    map.insert(1, 1);
    map.insert(2, 2);
    assert_eq!(ready(poll_once(&mut g, &w)), Ok(1));
    assert_eq!(ready(poll_once(&mut t, &w)), Ok(2));
    assert_eq!(c.wakes(), 0);
    assert_eq!(kept(&c), 0);
    assert_eq!(map.waiters(), 0);
}

// Guarantee 3.
#[test]
fn an_unpolled_future_is_never_woken_by_a_later_insert() {
    let map = AwaitMap::<u64, u64>::new();
    let (c, w) = counting_waker();
    let g = map.get(&1);
    let t = map.take(&1);
    drop((g, t));
    map.insert(1, 1);
    assert_eq!(c.wakes(), 0);
    // And a new one polls straight to the value, using the waker for nothing.
    let mut t = map.take(&1);
    assert_eq!(ready(poll_once(&mut t, &w)), Ok(1));
    assert_eq!(kept(&c), 0);
}

// ---------------------------------------------------------------------------
// Guarantee 4: one registration per future.
// ---------------------------------------------------------------------------

// Guarantee 4.
#[test]
fn repolling_with_another_waker_replaces_the_stored_one() {
    let map = AwaitMap::<u64, u64>::new();
    let (ca, wa) = counting_waker();
    let (cb, wb) = counting_waker();
    let (cc, wc) = counting_waker();
    let (cd, wd) = counting_waker();
    let mut g = map.get(&1);
    let mut t = map.take(&1);
    pending(poll_once(&mut g, &wa));
    pending(poll_once(&mut t, &wc));
    assert_eq!((kept(&ca), kept(&cc)), (1, 1));

    pending(poll_once(&mut g, &wb));
    pending(poll_once(&mut t, &wd));
    // The old clones are dropped, the new ones kept; still one registration
    // per future.
    assert_eq!((kept(&ca), kept(&cb)), (0, 1));
    assert_eq!((kept(&cc), kept(&cd)), (0, 1));
    assert_eq!(map.waiters(), 2);

    map.insert(1, 3);
    assert_eq!((ca.wakes(), cb.wakes()), (0, 1));
    assert_eq!((cc.wakes(), cd.wakes()), (0, 1));
    assert_eq!(ready(poll_once(&mut g, &wb)), Ok(3));
    assert_eq!(ready(poll_once(&mut t, &wd)), Ok(3));
    assert_eq!(map.waiters(), 0);
    assert_eq!(kept(&cb) + kept(&cd), 0);
}

// Guarantee 4.
#[test]
#[cfg_attr(
    miri,
    ignore = "under miri, a clone of a `Wake`-based waker may get another vtable address, so \
              `will_wake` is false (rust-lang/rust#122016); the raw-waker test below, whose \
              vtable is a `static`, checks the same under miri"
)]
fn repolling_with_a_waker_that_will_wake_the_stored_one_does_not_clone_it() {
    let map = AwaitMap::<u64, u64>::new();
    let (c, w) = counting_waker();
    let mut g = map.get(&1);
    let mut t = map.take(&1);
    pending(poll_once(&mut g, &w));
    pending(poll_once(&mut t, &w));
    let after_first = Arc::strong_count(&c);
    assert_eq!(kept(&c), 2);
    for _ in 0..5 {
        pending(poll_once(&mut g, &w));
        pending(poll_once(&mut t, &w));
    }
    assert_eq!(Arc::strong_count(&c), after_first);

    // A clone of the same waker `will_wake` the stored one: not stored again.
    let w2 = w.clone();
    assert!(w2.will_wake(&w));
    pending(poll_once(&mut g, &w2));
    pending(poll_once(&mut t, &w2));
    assert_eq!(Arc::strong_count(&c), after_first + 1); // just `w2` itself
    drop(w2);
    assert_eq!(map.waiters(), 2);

    map.insert(1, 1);
    assert_eq!(c.wakes(), 2); // once for the get, once for the take
}

// Guarantee 4: the map clones a waker only when it does not `will_wake`
// the stored one (observed with a raw waker that counts its clones).
#[test]
fn a_waker_that_will_wake_the_stored_one_is_never_cloned_again() {
    let map = AwaitMap::<u64, u64>::new();
    let (c, w) = common::raw_counting_waker();
    let mut g = map.get(&1);
    let mut t = map.take(&1);
    pending(poll_once(&mut g, &w));
    pending(poll_once(&mut t, &w));
    assert_eq!(c.clones(), 2, "one clone stored per registration");
    for _ in 0..10 {
        pending(poll_once(&mut g, &w));
        pending(poll_once(&mut t, &w));
    }
    assert_eq!(c.clones(), 2, "re-polling with the same waker cloned it");
    // A different waker is cloned once, and the old one is dropped.
    let (c2, w2) = common::raw_counting_waker();
    pending(poll_once(&mut g, &w2));
    assert_eq!((c.clones(), c.drops(), c2.clones()), (2, 1, 1));
    map.insert(1, 1);
    assert_eq!(
        (c.wakes(), c2.wakes()),
        (1, 1),
        "only the newest waker of each future is woken"
    );
    assert_eq!(ready(poll_once(&mut g, &w2)), Ok(1));
    assert_eq!(ready(poll_once(&mut t, &w)), Ok(1));
    drop((g, t));
    // Every clone the map made was released (a consuming wake releases too).
    assert_eq!(c.drops(), c.clones());
    assert_eq!(c2.drops(), c2.clones());
}

// Guarantee 4.
#[test]
fn switching_back_to_the_first_waker_wakes_only_it() {
    let map = AwaitMap::<u64, u64>::new();
    let (ca, wa) = counting_waker();
    let (cb, wb) = counting_waker();
    let mut g = map.get(&1);
    pending(poll_once(&mut g, &wa));
    pending(poll_once(&mut g, &wb));
    pending(poll_once(&mut g, &wa));
    assert_eq!((kept(&ca), kept(&cb)), (1, 0));
    map.insert(1, 1);
    assert_eq!((ca.wakes(), cb.wakes()), (1, 0));
    // After the wake-up the map has given its clone away; a poll that finds
    // the value gone again stores a fresh one.
    assert_eq!(kept(&ca), 0);
    map.remove(&1);
    pending(poll_once(&mut g, &wb));
    assert_eq!((kept(&ca), kept(&cb)), (0, 1));
    map.insert(1, 2);
    assert_eq!((ca.wakes(), cb.wakes()), (1, 1));
    assert_eq!(ready(poll_once(&mut g, &wb)), Ok(2));
}

// ---------------------------------------------------------------------------
// Guarantee 5: dropping a waiting future deregisters it.
// ---------------------------------------------------------------------------

alloc_only! {
// Guarantee 5.
#[test]
fn dropping_all_waiters_of_many_keys_frees_their_entries() {
    let n: u64 = if cfg!(miri) { 50 } else { 5_000 };
    let keys_live = live_counter();
    let map = AwaitMap::<Tracked, u64>::new();
    let keys: Vec<_> = (0..n).map(|i| Tracked::new(i, &keys_live)).collect();
    let (c, w) = counting_waker();
    {
        let mut futs = Vec::new();
        for k in &keys {
            let mut g = map.get(k);
            let mut t = map.take(k);
            pending(poll_once(&mut g, &w));
            pending(poll_once(&mut t, &w));
            futs.push((g, t));
        }
        assert_eq!(map.waiters(), 2 * n as usize);
        assert_eq!(live(&keys_live), 2 * n as usize, "one stored key per entry");
        assert_eq!(map.len(), 0);
    }
    assert_eq!(map.waiters(), 0);
    assert_eq!(map.len(), 0);
    assert!(map.is_empty());
    assert_eq!(
        live(&keys_live),
        n as usize,
        "entries freed with their keys"
    );
    assert_eq!(kept(&c), 0, "all waker clones dropped");
    assert!(keys.iter().all(|k| !map.contains_key(k)));
    assert!(keys.iter().all(|k| map.cancel(k) == 0));

    // Waiting again works on a freed key.
    let mut g = map.get(&keys[0]);
    pending(poll_once(&mut g, &w));
    assert_eq!(map.waiters(), 1);
    map.insert(keys[0].clone(), 77);
    assert_eq!(c.wakes(), 1);
    assert_eq!(ready(poll_once(&mut g, &w)), Ok(77));
    assert_eq!(map.waiters(), 0);
}
}

// Guarantee 5.
#[test]
fn dropping_some_waiters_leaves_the_others_registered_in_order() {
    let map = AwaitMap::<u64, u64>::new();
    let mut gets: Vec<_> = (0..3)
        .map(|_| (Some(map.get(&1)), counting_waker()))
        .collect();
    let mut takes: Vec<_> = (0..4)
        .map(|_| (Some(map.take(&1)), counting_waker()))
        .collect();
    for (f, (_, w)) in gets.iter_mut() {
        pending(poll_once(f.as_mut().unwrap(), w));
    }
    for (f, (_, w)) in takes.iter_mut() {
        pending(poll_once(f.as_mut().unwrap(), w));
    }
    // Drop a middle get, the head take and the tail take.
    gets[1].0 = None;
    takes[0].0 = None;
    takes[3].0 = None;
    assert_eq!(map.waiters(), 4);
    assert_eq!(map.len(), 0);

    map.insert(1, 8);
    let g_wakes: Vec<_> = gets.iter().map(|(_, (c, _))| c.wakes()).collect();
    let t_wakes: Vec<_> = takes.iter().map(|(_, (c, _))| c.wakes()).collect();
    assert_eq!(g_wakes, [1, 0, 1]);
    assert_eq!(t_wakes, [0, 1, 0, 0]);

    let (f, (_, w)) = &mut takes[1];
    assert_eq!(ready(poll_once(f.as_mut().unwrap(), w)), Ok(8));
    // The next insert goes to the next take still waiting.
    map.insert(1, 9);
    assert_eq!(takes[2].1.0.wakes(), 1);
    let (f, (_, w)) = &mut takes[2];
    assert_eq!(ready(poll_once(f.as_mut().unwrap(), w)), Ok(9));
}

// Guarantee 5.
#[test]
fn completed_and_failed_futures_leave_no_waiter_or_key_behind() {
    let keys_live = live_counter();
    let map = AwaitMap::<Tracked, u64>::new();
    let a = Tracked::new(1, &keys_live);
    let b = Tracked::new(2, &keys_live);
    let (_c, w) = counting_waker();

    // Resolved Ok by take: nothing left.
    let mut t = map.take(&a);
    pending(poll_once(&mut t, &w));
    map.insert(a.clone(), 1);
    assert_eq!(ready(poll_once(&mut t, &w)), Ok(1));
    drop(t);
    // Resolved Err(Cancelled).
    let mut g = map.get(&b);
    pending(poll_once(&mut g, &w));
    assert_eq!(map.cancel(&b), 1);
    assert_eq!(ready(poll_once(&mut g, &w)), Err(WaitError::Cancelled));
    drop(g);
    assert_eq!(map.waiters(), 0);
    assert_eq!(map.len(), 0);
    assert_eq!(live(&keys_live), 2, "only the test's own keys remain");

    // Resolved Err(Closed).
    let mut g = map.get(&a);
    pending(poll_once(&mut g, &w));
    assert_eq!(live(&keys_live), 3);
    map.close();
    assert_eq!(ready(poll_once(&mut g, &w)), Err(WaitError::Closed));
    assert_eq!(map.waiters(), 0);
    assert_eq!(live(&keys_live), 2);
}

// ---------------------------------------------------------------------------
// Guarantee 6: `take` is cancel-safe.
// ---------------------------------------------------------------------------

// Guarantee 6.
#[test]
fn a_woken_take_dropped_unpolled_passes_the_value_to_the_next_take() {
    let vals = live_counter();
    let map = AwaitMap::<u64, Tracked>::new();
    let (ca, wa) = counting_waker();
    let (cb, wb) = counting_waker();
    let (cc, wc) = counting_waker();
    let mut a = map.take(&1);
    let mut b = map.take(&1);
    let mut c = map.take(&1);
    pending(poll_once(&mut a, &wa));
    pending(poll_once(&mut b, &wb));
    pending(poll_once(&mut c, &wc));

    map.insert(1, Tracked::new(7, &vals));
    assert_eq!((ca.wakes(), cb.wakes(), cc.wakes()), (1, 0, 0));
    drop(a);
    assert_eq!((cb.wakes(), cc.wakes()), (1, 0), "wake-up passed to b only");
    assert_eq!(map.len(), 1);

    let got = ready(poll_once(&mut b, &wb)).expect("b gets the value");
    assert_eq!(got.id, 7);
    assert_eq!(live(&vals), 1, "one value in, one value out");
    assert_eq!(map.len(), 0);
    pending(poll_once(&mut c, &wc));
    assert_eq!(cc.wakes(), 0);
    assert_eq!(map.waiters(), 1);
    drop(got);
    assert_eq!(live(&vals), 0);
}

// Guarantee 6.
#[test]
fn a_woken_take_dropped_with_no_other_take_leaves_the_value_in_the_map() {
    let vals = live_counter();
    let map = AwaitMap::<u64, Tracked>::new();
    let (c, w) = counting_waker();
    let mut g = map.get(&1);
    let mut a = map.take(&1);
    pending(poll_once(&mut g, &w));
    pending(poll_once(&mut a, &w));
    map.insert(1, Tracked::new(3, &vals));
    assert_eq!(c.wakes(), 2);
    drop(a);
    assert_eq!(map.len(), 1);
    assert_eq!(map.try_get(&1).map(|t| t.id), Some(3));
    // The get still sees it too.
    assert_eq!(ready(poll_once(&mut g, &w)).map(|t| t.id), Ok(3));
    assert_eq!(map.waiters(), 0);
    // A fresh take gets the value on its first poll.
    let mut t = map.take(&1);
    assert_eq!(ready(poll_once(&mut t, &w)).map(|t| t.id), Ok(3));
    assert!(map.is_empty());
    assert_eq!(live(&vals), 0);
}

// Guarantee 6.
#[test]
fn a_chain_of_dropped_woken_takes_wakes_each_once_and_keeps_the_value() {
    let vals = live_counter();
    let map = AwaitMap::<u64, Tracked>::new();
    let mut takes: Vec<_> = (0..5)
        .map(|_| (Some(map.take(&1)), counting_waker()))
        .collect();
    for (f, (_, w)) in takes.iter_mut() {
        pending(poll_once(f.as_mut().unwrap(), w));
    }
    map.insert(1, Tracked::new(1, &vals));
    for i in 0..takes.len() {
        for (j, (_, (c, _))) in takes.iter().enumerate() {
            assert_eq!(c.wakes(), usize::from(j <= i), "take {j} at step {i}");
        }
        takes[i].0 = None;
    }
    assert_eq!(map.waiters(), 0);
    assert_eq!(map.len(), 1);
    assert_eq!(live(&vals), 1);
    assert_eq!(map.remove(&1).map(|t| t.id), Some(1));
}

// Guarantee 6.
#[test]
fn a_fresh_take_polled_first_gets_the_value_and_the_woken_take_waits_again() {
    let vals = live_counter();
    let map = AwaitMap::<u64, Tracked>::new();
    let (ca, wa) = counting_waker();
    let (cb, wb) = counting_waker();
    let (cf, wf) = counting_waker();
    let mut a = map.take(&1);
    let mut b = map.take(&1);
    pending(poll_once(&mut a, &wa));
    pending(poll_once(&mut b, &wb));
    map.insert(1, Tracked::new(1, &vals));
    assert_eq!(ca.wakes(), 1);

    let mut fresh = map.take(&1);
    let first = ready(poll_once(&mut fresh, &wf)).expect("fresh take");
    assert_eq!(first.id, 1);
    assert_eq!(cf.wakes(), 0);
    // The woken take finds nothing and waits again, still first in line.
    pending(poll_once(&mut a, &wa));
    assert_eq!(map.waiters(), 2);
    assert_eq!(live(&vals), 1, "no duplicate");

    map.insert(1, Tracked::new(2, &vals));
    assert_eq!((ca.wakes(), cb.wakes()), (2, 0));
    assert_eq!(ready(poll_once(&mut a, &wa)).map(|t| t.id), Ok(2));
    pending(poll_once(&mut b, &wb));
    assert_eq!(live(&vals), 1, "value 2 dropped with the result");
    drop(first);
    assert_eq!(live(&vals), 0);
}

// Guarantee 6.
#[test]
fn a_woken_take_dropped_after_a_fresh_take_took_the_value_passes_nothing() {
    let map = AwaitMap::<u64, u64>::new();
    let (ca, wa) = counting_waker();
    let (cb, wb) = counting_waker();
    let mut a = map.take(&1);
    let mut b = map.take(&1);
    pending(poll_once(&mut a, &wa));
    pending(poll_once(&mut b, &wb));
    map.insert(1, 1);
    let mut fresh = map.take(&1);
    assert_eq!(ready(poll_once(&mut fresh, &wa)), Ok(1));
    drop(a);
    // The value is gone, so there is nothing to hand over.
    assert_eq!((ca.wakes(), cb.wakes()), (1, 0));
    assert_eq!(map.waiters(), 1);
    map.insert(1, 2);
    assert_eq!(cb.wakes(), 1);
    assert_eq!(ready(poll_once(&mut b, &wb)), Ok(2));
}

// Guarantee 6.
#[test]
fn remove_between_wake_and_poll_makes_the_woken_take_wait_first_in_line() {
    let map = AwaitMap::<u64, u64>::new();
    let (ca, wa) = counting_waker();
    let (cb, wb) = counting_waker();
    let mut a = map.take(&1);
    let mut b = map.take(&1);
    pending(poll_once(&mut a, &wa));
    pending(poll_once(&mut b, &wb));
    map.insert(1, 10);
    assert_eq!(map.remove(&1), Some(10));
    pending(poll_once(&mut a, &wa));
    assert_eq!(kept(&ca), 1, "a stored its waker again");
    assert_eq!(cb.wakes(), 0);
    assert_eq!(map.waiters(), 2);

    map.insert(1, 20);
    assert_eq!((ca.wakes(), cb.wakes()), (2, 0));
    assert_eq!(ready(poll_once(&mut a, &wa)), Ok(20));
    pending(poll_once(&mut b, &wb));
    map.insert(1, 30);
    assert_eq!(cb.wakes(), 1);
    assert_eq!(ready(poll_once(&mut b, &wb)), Ok(30));
}

alloc_only! {
// Guarantee 6.
#[test]
fn a_woken_owned_take_dropped_unpolled_passes_the_value_on() {
    let map = Arc::new(AwaitMap::<u64, String>::new());
    let (ca, wa) = counting_waker();
    let (cb, wb) = counting_waker();
    let mut a = map.take_owned(&1);
    let mut b = map.take(&1);
    pending(poll_once(&mut a, &wa));
    pending(poll_once(&mut b, &wb));
    map.insert(1, "v".to_string());
    assert_eq!((ca.wakes(), cb.wakes()), (1, 0));
    drop(a);
    assert_eq!(cb.wakes(), 1);
    assert_eq!(ready(poll_once(&mut b, &wb)).as_deref(), Ok("v"));
    assert!(map.is_empty());
    assert_eq!(Arc::strong_count(&map), 1);
}
}

// Guarantee 6.
#[test]
fn scripted_take_churn_never_loses_or_duplicates_a_value() {
    // Random operations on one key: register takes, insert, remove, drop
    // takes (woken or not), poll woken takes or poll spuriously. Every value
    // must come out exactly once, and at rest a stored value with takes
    // waiting must always have a woken take on its way.
    let rounds = if cfg!(miri) { 300 } else { 20_000 };
    let vals = live_counter();
    let map = AwaitMap::<u64, Tracked>::new();
    let mut rng = Lcg(0x5eed);
    // (future, waker counter, waker, wakes seen at the last poll)
    let mut takes = Vec::new();
    let mut next_id = 0_u64;
    let mut out = HashSet::new();
    let record = |out: &mut HashSet<u64>, t: Tracked| {
        assert!(out.insert(t.id), "value {} delivered twice", t.id);
    };

    for round in 0..rounds {
        match rng.below(7) {
            0 | 1 => {
                let mut t = map.take(&0);
                let (c, w) = counting_waker();
                match poll_once(&mut t, &w) {
                    Poll::Ready(r) => record(&mut out, r.expect("ok")),
                    Poll::Pending => takes.push((t, c, w, 0)),
                }
            }
            2 => {
                let t = Tracked::new(next_id, &vals);
                next_id += 1;
                if let Some(old) = map.insert(0, t) {
                    record(&mut out, old);
                }
            }
            3 if !takes.is_empty() => {
                let i = rng.below(takes.len() as u64) as usize;
                drop(takes.swap_remove(i));
            }
            4 => {
                // Poll every woken take, as an executor would.
                let mut i = 0;
                while i < takes.len() {
                    let (f, c, w, seen) = &mut takes[i];
                    if c.wakes() > *seen {
                        *seen = c.wakes();
                        if let Poll::Ready(r) = poll_once(f, w) {
                            record(&mut out, r.expect("ok"));
                            drop(takes.swap_remove(i));
                            continue;
                        }
                    }
                    i += 1;
                }
            }
            5 if !takes.is_empty() => {
                let i = rng.below(takes.len() as u64) as usize;
                let (f, c, w, seen) = &mut takes[i];
                *seen = c.wakes();
                if let Poll::Ready(r) = poll_once(f, w) {
                    record(&mut out, r.expect("ok"));
                    drop(takes.swap_remove(i));
                }
            }
            6 if rng.below(3) == 0 => {
                if let Some(t) = map.remove(&0) {
                    record(&mut out, t);
                }
            }
            _ => {}
        }
        // At rest: no take woken twice without a poll in between, and a
        // stored value with takes waiting has a woken take to collect it.
        for (_, c, _, seen) in &takes {
            assert!(c.wakes() <= *seen + 1, "round {round}: woken twice");
        }
        if map.contains_key(&0) && !takes.is_empty() {
            assert!(
                takes.iter().any(|(_, c, _, seen)| c.wakes() > *seen),
                "round {round}: value stored, takes waiting, none woken"
            );
        }
        assert_eq!(map.waiters(), takes.len());
        let in_map = usize::from(map.contains_key(&0));
        assert_eq!(live(&vals), in_map, "round {round}: value count");
    }
    drop(takes);
    assert_eq!(map.waiters(), 0);
    if let Some(t) = map.remove(&0) {
        record(&mut out, t);
    }
    assert_eq!(out.len() as u64, next_id, "every value came out once");
    assert_eq!(live(&vals), 0);
}

// ---------------------------------------------------------------------------
// Guarantee 7: remove.
// ---------------------------------------------------------------------------

// Guarantee 7.
#[test]
fn remove_leaves_waiting_futures_waiting() {
    let map = AwaitMap::<u64, u64>::new();
    let (c, w) = counting_waker();
    let mut g = map.get(&1);
    let mut t = map.take(&1);
    pending(poll_once(&mut g, &w));
    pending(poll_once(&mut t, &w));
    map.insert(2, 22);

    assert_eq!(map.remove(&1), None);
    assert_eq!(map.remove(&2), Some(22));
    assert_eq!(map.remove(&2), None);
    assert_eq!(map.waiters(), 2);
    assert_eq!(map.len(), 0);
    assert!(!map.contains_key(&2));
    assert_eq!(c.wakes(), 0);
    pending(poll_once(&mut g, &w));
    pending(poll_once(&mut t, &w));

    map.insert(1, 11);
    assert_eq!(c.wakes(), 2);
    assert_eq!(ready(poll_once(&mut g, &w)), Ok(11));
    assert_eq!(ready(poll_once(&mut t, &w)), Ok(11));
    assert_eq!(map.waiters(), 0);
}

// Guarantee 7.
#[test]
fn gets_woken_for_a_removed_value_wait_again() {
    let map = AwaitMap::<u64, u64>::new();
    let (c, w) = counting_waker();
    let mut g1 = map.get(&1);
    let mut g2 = map.get(&1);
    pending(poll_once(&mut g1, &w));
    pending(poll_once(&mut g2, &w));
    map.insert(1, 1);
    assert_eq!(map.remove(&1), Some(1));
    pending(poll_once(&mut g1, &w));
    pending(poll_once(&mut g2, &w));
    assert_eq!(map.waiters(), 2);
    map.insert(1, 2);
    assert_eq!(c.wakes(), 4);
    assert_eq!(ready(poll_once(&mut g1, &w)), Ok(2));
    assert_eq!(ready(poll_once(&mut g2, &w)), Ok(2));
}

// ---------------------------------------------------------------------------
// Guarantee 8: cancel.
// ---------------------------------------------------------------------------

// Guarantee 8.
#[test]
fn cancel_fails_the_waiting_futures_of_its_key_and_counts_them() {
    let keys_live = live_counter();
    let map = AwaitMap::<Tracked, u64>::new();
    let k = Tracked::new(1, &keys_live);
    let other = Tracked::new(2, &keys_live);
    let mut gets: Vec<_> = (0..2).map(|_| (map.get(&k), counting_waker())).collect();
    let mut takes: Vec<_> = (0..2).map(|_| (map.take(&k), counting_waker())).collect();
    let (oc, ow) = counting_waker();
    let mut o = map.get(&other);
    for (f, (_, w)) in gets.iter_mut() {
        pending(poll_once(f, w));
    }
    for (f, (_, w)) in takes.iter_mut() {
        pending(poll_once(f, w));
    }
    pending(poll_once(&mut o, &ow));

    assert_eq!(map.cancel(&k), 4);
    assert!(gets.iter().all(|(_, (c, _))| c.wakes() == 1));
    assert!(takes.iter().all(|(_, (c, _))| c.wakes() == 1));
    assert_eq!(oc.wakes(), 0);
    // Nothing left to cancel, even before the failed futures polled.
    assert_eq!(map.cancel(&k), 0);

    for (f, (_, w)) in gets.iter_mut() {
        assert_eq!(ready(poll_once(f, w)), Err(WaitError::Cancelled));
    }
    for (f, (_, w)) in takes.iter_mut() {
        assert_eq!(ready(poll_once(f, w)), Err(WaitError::Cancelled));
    }
    assert_eq!(map.waiters(), 1);
    assert!(gets.iter().all(|(_, (c, _))| kept(c) == 0));
    // Key 1's entry is gone; key 2's stays.
    assert_eq!(live(&keys_live), 3);
    pending(poll_once(&mut o, &ow));
}

// Guarantee 8.
#[test]
fn cancel_is_not_sticky() {
    let map = AwaitMap::<u64, u64>::new();
    let (c, w) = counting_waker();
    let mut g = map.get(&1);
    pending(poll_once(&mut g, &w));
    assert_eq!(map.cancel(&1), 1);
    assert_eq!(ready(poll_once(&mut g, &w)), Err(WaitError::Cancelled));
    assert_eq!(map.waiters(), 0);

    let mut g = map.get(&1);
    let mut t = map.take(&1);
    pending(poll_once(&mut g, &w));
    pending(poll_once(&mut t, &w));
    assert_eq!(map.waiters(), 2);
    map.insert(1, 5);
    assert_eq!(c.wakes(), 3);
    assert_eq!(ready(poll_once(&mut g, &w)), Ok(5));
    assert_eq!(ready(poll_once(&mut t, &w)), Ok(5));
}

// Guarantee 8.
#[test]
fn a_cancelled_future_stays_cancelled_when_a_value_arrives_before_its_poll() {
    let map = AwaitMap::<u64, u64>::new();
    let (cg, wg) = counting_waker();
    let (ct, wt) = counting_waker();
    let mut g = map.get(&1);
    let mut t = map.take(&1);
    pending(poll_once(&mut g, &wg));
    pending(poll_once(&mut t, &wt));
    assert_eq!(map.cancel(&1), 2);
    map.insert(1, 9);
    assert_eq!(
        (cg.wakes(), ct.wakes()),
        (1, 1),
        "insert wakes no cancelled future"
    );
    assert_eq!(ready(poll_once(&mut g, &wg)), Err(WaitError::Cancelled));
    assert_eq!(ready(poll_once(&mut t, &wt)), Err(WaitError::Cancelled));
    assert_eq!(map.try_get(&1), Some(9), "the value is not lost");
    assert_eq!(map.waiters(), 0);
}

// Guarantee 8.
#[test]
fn cancel_with_a_value_present_spares_the_gets_and_the_woken_take() {
    let map = AwaitMap::<u64, u64>::new();
    let mut gets: Vec<_> = (0..2).map(|_| (map.get(&1), counting_waker())).collect();
    let (ca, wa) = counting_waker();
    let (cb, wb) = counting_waker();
    let mut a = map.take(&1);
    let mut b = map.take(&1);
    for (f, (_, w)) in gets.iter_mut() {
        pending(poll_once(f, w));
    }
    pending(poll_once(&mut a, &wa));
    pending(poll_once(&mut b, &wb));
    map.insert(1, 4);

    // Only `b` would not resolve `Ok` if polled now.
    assert_eq!(map.cancel(&1), 1);
    assert_eq!((ca.wakes(), cb.wakes()), (1, 1));
    assert!(gets.iter().all(|(_, (c, _))| c.wakes() == 1));
    for (f, (_, w)) in gets.iter_mut() {
        assert_eq!(ready(poll_once(f, w)), Ok(4));
    }
    assert_eq!(ready(poll_once(&mut b, &wb)), Err(WaitError::Cancelled));
    assert_eq!(ready(poll_once(&mut a, &wa)), Ok(4));
    assert_eq!(map.waiters(), 0);
    assert!(map.is_empty());
}

// Guarantee 8.
#[test]
fn cancel_counts_a_woken_take_whose_value_was_removed() {
    let map = AwaitMap::<u64, u64>::new();
    let (c, w) = counting_waker();
    let mut t = map.take(&1);
    pending(poll_once(&mut t, &w));
    map.insert(1, 1);
    map.remove(&1);
    assert_eq!(map.cancel(&1), 1);
    assert_eq!(ready(poll_once(&mut t, &w)), Err(WaitError::Cancelled));
    assert_eq!(c.wakes(), 1, "already woken by the insert: not woken twice");
    assert_eq!(map.waiters(), 0);
}

// Guarantee 8.
#[test]
fn cancel_of_an_unknown_or_value_only_key_returns_zero() {
    let map = AwaitMap::<u64, u64>::new();
    let (c, w) = counting_waker();
    let mut g = map.get(&1);
    pending(poll_once(&mut g, &w));
    map.insert(2, 2);
    assert_eq!(map.cancel(&3), 0);
    assert_eq!(map.cancel(&2), 0);
    assert_eq!(map.try_get(&2), Some(2), "cancel leaves values alone");
    assert_eq!(map.waiters(), 1);
    assert_eq!(c.wakes(), 0);
}

// Guarantee 8.
#[test]
fn dropping_a_cancelled_future_before_its_poll_deregisters_it() {
    let map = AwaitMap::<u64, u64>::new();
    let (c, w) = counting_waker();
    let mut g = map.get(&1);
    let mut t = map.take(&1);
    pending(poll_once(&mut g, &w));
    pending(poll_once(&mut t, &w));
    assert_eq!(map.cancel(&1), 2);
    assert_eq!(map.waiters(), 2, "failed but not yet polled");
    drop((g, t));
    assert_eq!(map.waiters(), 0);
    assert_eq!(kept(&c), 0);
}

// Guarantee 8.
#[test]
fn cancel_fails_more_than_a_batch_of_waiters() {
    let map = AwaitMap::<u64, u64>::new();
    let mut futs: Vec<_> = (0..40).map(|_| (map.get(&1), counting_waker())).collect();
    for (f, (_, w)) in futs.iter_mut() {
        pending(poll_once(f, w));
    }
    assert_eq!(map.cancel(&1), 40);
    assert!(futs.iter().all(|(_, (c, _))| c.wakes() == 1));
    for (f, (_, w)) in futs.iter_mut() {
        assert_eq!(ready(poll_once(f, w)), Err(WaitError::Cancelled));
    }
    assert_eq!(map.waiters(), 0);
}

// ---------------------------------------------------------------------------
// Guarantee 9: close.
// ---------------------------------------------------------------------------

// Guarantee 9.
#[test]
fn close_fails_every_waiting_future_of_an_absent_key() {
    const KEYS: [u64; 3] = [0, 1, 2];
    let map = AwaitMap::<u64, u64>::new();
    let mut gets: Vec<_> = (0..30)
        .map(|i| (map.get(&KEYS[i % 3]), counting_waker()))
        .collect();
    let mut takes: Vec<_> = (0..10)
        .map(|i| (map.take(&KEYS[i % 2]), counting_waker()))
        .collect();
    for (f, (_, w)) in gets.iter_mut() {
        pending(poll_once(f, w));
    }
    for (f, (_, w)) in takes.iter_mut() {
        pending(poll_once(f, w));
    }
    map.insert(9, 9);
    assert!(!map.is_closed());

    map.close();
    assert!(map.is_closed());
    assert!(gets.iter().all(|(_, (c, _))| c.wakes() == 1));
    assert!(takes.iter().all(|(_, (c, _))| c.wakes() == 1));
    // Idempotent: a second close wakes nobody again.
    map.close();
    assert!(map.is_closed());
    assert!(gets.iter().all(|(_, (c, _))| c.wakes() == 1));

    for (f, (_, w)) in gets.iter_mut() {
        assert_eq!(ready(poll_once(f, w)), Err(WaitError::Closed));
    }
    for (f, (_, w)) in takes.iter_mut() {
        assert_eq!(ready(poll_once(f, w)), Err(WaitError::Closed));
    }
    assert_eq!(map.waiters(), 0);
    assert_eq!(map.len(), 1);
    assert_eq!(map.try_get(&9), Some(9));
}

alloc_only! {
// Guarantee 9.
#[test]
fn after_close_futures_of_absent_keys_fail_on_their_first_poll() {
    let keys_live = live_counter();
    let map = Arc::new(AwaitMap::<Tracked, u64>::new());
    let k = Tracked::new(1, &keys_live);
    map.close();
    map.close();
    assert!(map.is_closed());
    let (c, w) = counting_waker();
    let mut g = map.get(&k);
    let mut t = map.take(&k);
    let mut go = map.get_owned(&k);
    let mut to = map.take_owned(&k);
    assert_eq!(ready(poll_once(&mut g, &w)), Err(WaitError::Closed));
    assert_eq!(ready(poll_once(&mut t, &w)), Err(WaitError::Closed));
    assert_eq!(ready(poll_once(&mut go, &w)), Err(WaitError::Closed));
    assert_eq!(ready(poll_once(&mut to, &w)), Err(WaitError::Closed));
    assert_eq!(map.waiters(), 0);
    assert_eq!(kept(&c), 0);
    drop((go, to));
    assert_eq!(live(&keys_live), 1, "no entry made for a closed wait");
}
}

alloc_only! {
// Guarantee 9.
#[test]
fn after_close_futures_of_present_keys_still_resolve_ok() {
    let map = Arc::new(AwaitMap::<u64, u64>::new());
    for k in 1..=4 {
        map.insert(k, k * 10);
    }
    map.close();
    let (_c, w) = counting_waker();
    assert_eq!(ready(poll_once(&mut map.get(&1), &w)), Ok(10));
    assert_eq!(ready(poll_once(&mut map.take(&2), &w)), Ok(20));
    assert_eq!(ready(poll_once(&mut map.get_owned(&3), &w)), Ok(30));
    assert_eq!(ready(poll_once(&mut map.take_owned(&4), &w)), Ok(40));
    assert_eq!(map.len(), 2);
    assert_eq!(
        ready(poll_once(&mut map.take(&2), &w)),
        Err(WaitError::Closed)
    );
}
}

// Guarantee 9.
#[test]
fn futures_woken_by_insert_before_close_resolve_ok_after_it() {
    let map = AwaitMap::<u64, u64>::new();
    let (cg, wg) = counting_waker();
    let (ca, wa) = counting_waker();
    let (cb, wb) = counting_waker();
    let mut g = map.get(&1);
    let mut a = map.take(&1);
    let mut b = map.take(&1);
    pending(poll_once(&mut g, &wg));
    pending(poll_once(&mut a, &wa));
    pending(poll_once(&mut b, &wb));
    map.insert(1, 5);
    map.close();
    // Close wakes only `b`: the others were woken already.
    assert_eq!((cg.wakes(), ca.wakes(), cb.wakes()), (1, 1, 1));
    assert_eq!(ready(poll_once(&mut g, &wg)), Ok(5));
    assert_eq!(ready(poll_once(&mut a, &wa)), Ok(5));
    // The value went to `a`; `b` has none and is closed.
    assert_eq!(ready(poll_once(&mut b, &wb)), Err(WaitError::Closed));
    assert_eq!(map.waiters(), 0);
    assert!(map.is_empty());
}

// Guarantee 9 (with 6).
#[test]
fn a_woken_take_dropped_after_close_still_hands_its_value_on() {
    let map = AwaitMap::<u64, u64>::new();
    let (_ca, wa) = counting_waker();
    let (cb, wb) = counting_waker();
    let mut a = map.take(&1);
    let mut b = map.take(&1);
    pending(poll_once(&mut a, &wa));
    pending(poll_once(&mut b, &wb));
    map.insert(1, 5);
    map.close();
    assert_eq!(cb.wakes(), 1);
    drop(a);
    // `b` now holds the wake-up for a present value: `Ok`, not lost.
    assert_eq!(ready(poll_once(&mut b, &wb)), Ok(5));
    assert!(map.is_empty());
    assert_eq!(map.waiters(), 0);
}

// Guarantee 9 (with 6).
#[test]
fn a_value_nobody_can_take_after_close_stays_in_the_map() {
    let map = AwaitMap::<u64, u64>::new();
    let (_ca, wa) = counting_waker();
    let (_cb, wb) = counting_waker();
    let mut a = map.take(&1);
    let mut b = map.take(&1);
    pending(poll_once(&mut a, &wa));
    pending(poll_once(&mut b, &wb));
    map.insert(1, 5);
    map.close();
    assert_eq!(ready(poll_once(&mut b, &wb)), Err(WaitError::Closed));
    drop(a);
    assert_eq!(map.try_get(&1), Some(5));
    assert_eq!(map.waiters(), 0);
}

// Guarantee 9.
#[test]
fn insert_after_close_still_stores() {
    let vals = live_counter();
    let map = AwaitMap::<u64, Tracked>::new();
    map.close();
    assert!(map.insert(1, Tracked::new(1, &vals)).is_none());
    assert_eq!(map.len(), 1);
    assert!(map.contains_key(&1));
    assert_eq!(map.try_get(&1).map(|t| t.id), Some(1));
    let old = map.insert(1, Tracked::new(2, &vals)).expect("replaced");
    assert_eq!(old.id, 1);
    drop(old);
    assert_eq!(live(&vals), 1);
    let (_c, w) = counting_waker();
    assert_eq!(ready(poll_once(&mut map.get(&1), &w)).map(|t| t.id), Ok(2));
    assert!(map.is_closed());
    drop(map);
    assert_eq!(live(&vals), 0, "the map dropped what it held");
}

// ---------------------------------------------------------------------------
// Guarantee 10: happens-before (single-thread proxy).
// ---------------------------------------------------------------------------

alloc_only! {
#[derive(Debug, Default)]
struct Payload {
    counter: std::sync::atomic::AtomicU64,
    log: Mutex<Vec<u64>>,
}

// Guarantee 10 (single-thread proxy; the cross-thread check is elsewhere).
#[test]
fn data_written_before_insert_is_seen_by_the_resolved_future() {
    let map = Arc::new(AwaitMap::<u64, Arc<Payload>>::new());
    let (_c, w) = counting_waker();
    let mut g = map.get(&1);
    let mut t = map.take(&1);
    let mut go = map.get_owned(&1);
    pending(poll_once(&mut g, &w));
    pending(poll_once(&mut go, &w));
    pending(poll_once(&mut t, &w));

    let payload = Arc::new(Payload::default());
    payload.counter.store(41, std::sync::atomic::Ordering::Relaxed);
    payload.log.lock().unwrap().extend([1, 2, 3]);
    map.insert(1, Arc::clone(&payload));

    for got in [
        ready(poll_once(&mut g, &w)).unwrap(),
        ready(poll_once(&mut go, &w)).unwrap(),
        ready(poll_once(&mut t, &w)).unwrap(),
    ] {
        assert!(Arc::ptr_eq(&got, &payload));
        assert_eq!(got.counter.load(std::sync::atomic::Ordering::Relaxed), 41);
        assert_eq!(*got.log.lock().unwrap(), [1, 2, 3]);
    }
}
}

// ---------------------------------------------------------------------------
// Guarantee 12: completed futures.
// ---------------------------------------------------------------------------

// Guarantee 12.
#[test]
fn polling_get_and_take_after_ready_panics() {
    let map = AwaitMap::<u64, u64>::new();
    let (_c, w) = counting_waker();
    map.insert(1, 1);
    // Ready at once.
    let mut g = map.get(&1);
    assert_eq!(ready(poll_once(&mut g, &w)), Ok(1));
    assert_repoll_panics(&mut g, &w);
    let mut t = map.take(&1);
    assert_eq!(ready(poll_once(&mut t, &w)), Ok(1));
    assert_repoll_panics(&mut t, &w);
    // Ready after waiting.
    let mut g = map.get(&2);
    let mut t = map.take(&2);
    pending(poll_once(&mut g, &w));
    pending(poll_once(&mut t, &w));
    map.insert(2, 2);
    assert_eq!(ready(poll_once(&mut g, &w)), Ok(2));
    assert_eq!(ready(poll_once(&mut t, &w)), Ok(2));
    assert_repoll_panics(&mut g, &w);
    assert_repoll_panics(&mut t, &w);
    drop((g, t));
    // The map is untouched by the panics.
    assert_eq!(map.waiters(), 0);
    assert!(map.is_empty());
    let mut g = map.get(&3);
    pending(poll_once(&mut g, &w));
    assert_eq!(map.waiters(), 1);
}

alloc_only! {
// Guarantee 12.
#[test]
fn polling_owned_futures_after_ready_panics() {
    let map = Arc::new(AwaitMap::<u64, u64>::new());
    let (_c, w) = counting_waker();
    map.insert(1, 1);
    let mut g = map.get_owned(&1);
    assert_eq!(ready(poll_once(&mut g, &w)), Ok(1));
    assert_repoll_panics(&mut g, &w);
    let mut t = map.take_owned(&1);
    assert_eq!(ready(poll_once(&mut t, &w)), Ok(1));
    assert_repoll_panics(&mut t, &w);
    drop((g, t));
    assert_eq!(Arc::strong_count(&map), 1);

    let mut g = map.get_owned(&2);
    let mut t = map.take_owned(&2);
    pending(poll_once(&mut g, &w));
    pending(poll_once(&mut t, &w));
    map.insert(2, 2);
    assert_eq!(ready(poll_once(&mut g, &w)), Ok(2));
    assert_eq!(ready(poll_once(&mut t, &w)), Ok(2));
    assert_repoll_panics(&mut g, &w);
    assert_repoll_panics(&mut t, &w);
    drop((g, t));
    assert_eq!(map.waiters(), 0);
    assert_eq!(Arc::strong_count(&map), 1);
}
}

// Guarantee 12.
#[test]
fn polling_after_an_error_result_panics() {
    let map = AwaitMap::<u64, u64>::new();
    let (_c, w) = counting_waker();
    let mut g = map.get(&1);
    let mut t = map.take(&1);
    pending(poll_once(&mut g, &w));
    pending(poll_once(&mut t, &w));
    map.cancel(&1);
    assert_eq!(ready(poll_once(&mut g, &w)), Err(WaitError::Cancelled));
    assert_eq!(ready(poll_once(&mut t, &w)), Err(WaitError::Cancelled));
    assert_repoll_panics(&mut g, &w);
    assert_repoll_panics(&mut t, &w);
    map.close();
    let mut g = map.get(&2);
    assert_eq!(ready(poll_once(&mut g, &w)), Err(WaitError::Closed));
    assert_repoll_panics(&mut g, &w);
    assert_eq!(map.waiters(), 0);
}

// ---------------------------------------------------------------------------
// Call shapes the guarantees rely on.
// ---------------------------------------------------------------------------

alloc_only! {
// Guarantees 1, 7 and 8 through borrowed keys.
#[test]
fn borrowed_str_keys_reach_the_same_entry_as_owned_ones() {
    let map = AwaitMap::<String, u32>::new();
    let (c, w) = counting_waker();
    let owned = "alpha".to_string();
    let mut by_str = map.get("alpha");
    let mut by_string = map.get(&owned);
    let mut t = map.take("alpha");
    pending(poll_once(&mut by_str, &w));
    pending(poll_once(&mut by_string, &w));
    pending(poll_once(&mut t, &w));
    assert_eq!(map.waiters(), 3);

    map.insert("alpha".to_string(), 1);
    assert_eq!(c.wakes(), 3);
    assert!(map.contains_key("alpha"));
    assert_eq!(map.try_get("alpha"), Some(1));
    assert_eq!(ready(poll_once(&mut by_str, &w)), Ok(1));
    assert_eq!(ready(poll_once(&mut by_string, &w)), Ok(1));
    assert_eq!(ready(poll_once(&mut t, &w)), Ok(1));
    assert!(!map.contains_key("alpha"));

    let mut g = map.get("beta");
    pending(poll_once(&mut g, &w));
    assert_eq!(map.remove("beta"), None);
    assert_eq!(map.cancel("beta"), 1);
    assert_eq!(ready(poll_once(&mut g, &w)), Err(WaitError::Cancelled));
    map.insert("beta".into(), 2);
    assert_eq!(map.remove("beta"), Some(2));
    assert!(map.is_empty());
}
}

alloc_only! {
fn assert_static<T: 'static>(_: &T) {}

// Guarantees 1 and 3 through owned futures.
#[test]
fn owned_futures_hold_their_own_arc_and_outlive_the_callers_handle() {
    let map = Arc::new(AwaitMap::<u64, String>::new());
    let (c, w) = counting_waker();
    let mut g = map.get_owned(&1);
    let mut t = map.take_owned(&1);
    assert_static(&g);
    assert_static(&t);
    assert_eq!(Arc::strong_count(&map), 3);
    pending(poll_once(&mut g, &w));
    pending(poll_once(&mut t, &w));

    let producer = Arc::clone(&map);
    drop(map);
    assert_eq!(Arc::strong_count(&producer), 3);
    producer.insert(1, "one".to_string());
    assert_eq!(c.wakes(), 2);
    assert_eq!(ready(poll_once(&mut g, &w)).as_deref(), Ok("one"));
    assert_eq!(ready(poll_once(&mut t, &w)).as_deref(), Ok("one"));
    drop((g, t));
    assert_eq!(Arc::strong_count(&producer), 1);
    assert_eq!(producer.waiters(), 0);
}
}

// Guarantee 6: a take woken for a value that a fresh take got first waits
// on; polled with a new waker, it stores that waker and gives up the
// hand-off, so the next insert wakes it (the new waker) and it gets that
// value.
#[test]
fn a_take_that_lost_its_value_and_changed_waker_is_woken_by_the_next_insert() {
    let map: AwaitMap<u32, u32> = AwaitMap::new();
    let (c1, w1) = counting_waker();
    let (c2, w2) = counting_waker();
    let mut t1 = map.take(&1);
    pending(poll_once(&mut t1, &w1));
    map.insert(1, 10);
    assert_eq!(c1.wakes(), 1);
    // A fresh take gets the value first.
    assert_eq!(ready(poll_once(&mut map.take(&1), &w1)), Ok(10));
    // T1 polls with another waker: the value is gone, it waits on.
    pending(poll_once(&mut t1, &w2));
    map.insert(1, 11);
    assert_eq!(c2.wakes(), 1, "the next insert did not wake the take");
    assert_eq!(ready(poll_once(&mut t1, &w2)), Ok(11));
    assert_eq!(map.waiters(), 0);
}

/// A waker that records its name in a shared log when woken.
struct Named {
    name: &'static str,
    log: Arc<Mutex<Vec<&'static str>>>,
}

impl Named {
    /// A waker that logs `name` in `log` when woken.
    fn waker(name: &'static str, log: &Arc<Mutex<Vec<&'static str>>>) -> Waker {
        Waker::from(Arc::new(Named {
            name,
            log: Arc::clone(log),
        }))
    }
}

impl Wake for Named {
    fn wake(self: Arc<Self>) {
        self.log.lock().unwrap().push(self.name);
    }
}

// Guarantee 1: an insert wakes the waiting gets first, in the order they
// registered, and then the take, also when the take waits in the key's
// entry and the gets behind it in the waiter storage.
#[test]
fn insert_wakes_the_gets_before_the_take() {
    let map: AwaitMap<u32, u32> = AwaitMap::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let waker = |name| Named::waker(name, &log);
    let (wt, wg1, wg2) = (waker("take"), waker("get 1"), waker("get 2"));
    let mut take = map.take(&1);
    let mut g1 = map.get(&1);
    let mut g2 = map.get(&1);
    pending(poll_once(&mut take, &wt));
    pending(poll_once(&mut g1, &wg1));
    pending(poll_once(&mut g2, &wg2));
    map.insert(1, 10);
    assert_eq!(*log.lock().unwrap(), ["get 1", "get 2", "take"]);
    assert_eq!(ready(poll_once(&mut g1, &wg1)), Ok(10));
    assert_eq!(ready(poll_once(&mut g2, &wg2)), Ok(10));
    assert_eq!(ready(poll_once(&mut take, &wt)), Ok(10));
}

alloc_only! {
// Guarantee 1: gets that join keys already waited on (each key has a take
// in its entry), over thousands of keys, each register on their own key's
// entry: every get sees its own key's value, and each take its own.
#[test]
fn gets_joining_thousands_of_awaited_keys_each_wait_on_their_own() {
    let map: AwaitMap<u32, u32> = AwaitMap::new();
    let (_, w) = counting_waker();
    // Fewer under miri, still enough for many keys to share probe groups.
    let n: u32 = if cfg!(miri) { 400 } else { 3_000 };
    let keys: Vec<u32> = (0..n).collect();
    let mut takes: Vec<_> = keys.iter().map(|k| map.take(k)).collect();
    for t in &mut takes {
        pending(poll_once(t, &w));
    }
    let mut gets: Vec<_> = keys.iter().map(|k| map.get(k)).collect();
    for g in &mut gets {
        pending(poll_once(g, &w));
    }
    assert_eq!(map.waiters(), 2 * n as usize);
    for &k in &keys {
        assert_eq!(map.insert(k, k * 10), None);
    }
    for (k, g) in keys.iter().zip(&mut gets) {
        assert_eq!(ready(poll_once(g, &w)), Ok(k * 10), "the get of key {k}");
    }
    for (k, t) in keys.iter().zip(&mut takes) {
        assert_eq!(ready(poll_once(t, &w)), Ok(k * 10), "the take of key {k}");
    }
    assert!(map.is_empty());
    assert_eq!(map.waiters(), 0);
}
}

// Guarantees 1 and 8: `cancel` wakes the futures it fails as `insert`
// wakes them: the gets first, in the order they registered, then the takes,
// also when the first take waits in the key's entry.
#[test]
fn cancel_wakes_the_gets_before_the_takes() {
    let map: AwaitMap<u32, u32> = AwaitMap::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let waker = |name| Named::waker(name, &log);
    let (wt1, wt2, wg1, wg2) = (
        waker("take 1"),
        waker("take 2"),
        waker("get 1"),
        waker("get 2"),
    );
    let mut t1 = map.take(&1);
    let mut g1 = map.get(&1);
    let mut t2 = map.take(&1);
    let mut g2 = map.get(&1);
    pending(poll_once(&mut t1, &wt1));
    pending(poll_once(&mut g1, &wg1));
    pending(poll_once(&mut t2, &wt2));
    pending(poll_once(&mut g2, &wg2));
    assert_eq!(map.cancel(&1), 4);
    let order = log.lock().unwrap().clone();
    assert_eq!(order[..2], ["get 1", "get 2"]);
    let mut takes = order[2..].to_vec();
    takes.sort_unstable();
    assert_eq!(takes, ["take 1", "take 2"]);
    for (f, w) in [(&mut g1, &wg1), (&mut g2, &wg2)] {
        assert_eq!(ready(poll_once(f, w)), Err(WaitError::Cancelled));
    }
    for (f, w) in [(&mut t1, &wt1), (&mut t2, &wt2)] {
        assert_eq!(ready(poll_once(f, w)), Err(WaitError::Cancelled));
    }
}
