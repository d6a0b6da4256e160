//! What only `FixedAwaitMap` has: its fixed capacity (a full map hands an
//! insert back, a wait with no room fails with `NoRoom`, slots are reused),
//! a `static` built in a constant with either lock, the guarantees on
//! panicking user code (11: wakers, destructors, and `Eq` and `Clone` under
//! the lock) and on keys whose `Eq` lies (13), on its own storage. The
//! guarantees it shares with `AwaitMap` are checked by
//! `tests/fixed_semantics.rs`; threads and executors are at the end.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Wake, Waker};

use awaitmap::{FixedAwaitMap, WaitError};
use common::{
    Tracked, counting_waker, kept, live, live_counter, pending, poll_once, raw_counting_waker,
    ready,
};

type Small = FixedAwaitMap<u64, u64, 2, 3>;

// ---------------------------------------------------------------------------
// Capacity.
// ---------------------------------------------------------------------------

#[test]
fn insert_of_a_new_key_into_full_key_slots_is_handed_back() {
    let map = Small::new();
    assert_eq!(map.insert(1, 10), Ok(None));
    assert_eq!(map.insert(2, 20), Ok(None));
    assert_eq!(map.insert(3, 30), Err((3, 30)));
    assert!(!map.contains_key(&3));
    // A key that is there is replaced as usual.
    assert_eq!(map.insert(2, 21), Ok(Some(20)));
    assert_eq!(map.len(), 2);
    // Room again once a key's slot is free.
    assert_eq!(map.remove(&1), Some(10));
    assert_eq!(map.insert(3, 30), Ok(None));
    assert_eq!(map.try_get(&3), Some(30));
}

#[test]
fn a_handed_back_insert_drops_nothing_and_wakes_nobody() {
    let vals = live_counter();
    let map: FixedAwaitMap<u64, Tracked, 1, 1> = FixedAwaitMap::new();
    let (c, w) = counting_waker();
    let mut g = map.get(&1);
    pending(poll_once(&mut g, &w));
    let back = map.insert(2, Tracked::new(2, &vals));
    let (k, v) = back.expect_err("key 1 waits in the only slot");
    assert_eq!((k, v.id), (2, 2));
    assert_eq!(live(&vals), 1, "the value came back, not dropped");
    assert_eq!(c.wakes(), 0);
    drop(v);
    assert_eq!(
        map.insert(1, Tracked::new(1, &vals)).map(|o| o.is_none()),
        Ok(true)
    );
    assert_eq!(c.wakes(), 1);
    assert_eq!(ready(poll_once(&mut g, &w)).map(|t| t.id), Ok(1));
}

#[test]
fn a_wait_with_no_key_slot_fails_with_no_room_and_registers_nothing() {
    let map = Small::new();
    map.insert(1, 10).unwrap();
    map.insert(2, 20).unwrap();
    let (c, w) = counting_waker();
    let mut g = map.get(&3);
    assert_eq!(ready(poll_once(&mut g, &w)), Err(WaitError::NoRoom));
    let mut t = map.take(&3);
    assert_eq!(ready(poll_once(&mut t, &w)), Err(WaitError::NoRoom));
    assert_eq!(map.waiters(), 0);
    assert_eq!(kept(&c), 0, "no waker kept");
    // Keys that are there still resolve: no slot needed.
    assert_eq!(ready(poll_once(&mut map.take(&1), &w)), Ok(10));
    // Now key 3 has a slot to wait in.
    let mut g = map.get(&3);
    pending(poll_once(&mut g, &w));
    assert_eq!(map.waiters(), 1);
}

#[test]
fn a_wait_with_no_waiter_slot_fails_with_no_room() {
    let map = Small::new();
    let (_c, w) = counting_waker();
    let mut futs: Vec<_> = (0..3).map(|_| map.get(&1)).collect();
    for f in &mut futs {
        pending(poll_once(f, &w));
    }
    let mut fourth = map.take(&1);
    assert_eq!(ready(poll_once(&mut fourth, &w)), Err(WaitError::NoRoom));
    assert_eq!(map.waiters(), 3);
    // A waiter that leaves frees its slot for the next.
    futs.pop();
    let mut fifth = map.take(&1);
    pending(poll_once(&mut fifth, &w));
    map.insert(1, 7).unwrap();
    for f in &mut futs {
        assert_eq!(ready(poll_once(f, &w)), Ok(7));
    }
    assert_eq!(ready(poll_once(&mut fifth, &w)), Ok(7));
    assert_eq!(map.waiters(), 0);
    assert!(map.is_empty());
}

#[test]
fn slots_are_reused_over_many_rounds_of_distinct_keys() {
    let keys = live_counter();
    let map: FixedAwaitMap<Tracked, u64, 2, 2> = FixedAwaitMap::new();
    let (_c, w) = counting_waker();
    for round in 0..1_000_u64 {
        let k = Tracked::new(round, &keys);
        {
            let mut t = map.take(&k);
            pending(poll_once(&mut t, &w));
            let mut g = map.get(&k);
            pending(poll_once(&mut g, &w));
            if round % 3 != 0 {
                map.insert(k.clone(), round).unwrap();
                assert_eq!(ready(poll_once(&mut g, &w)), Ok(round));
                assert_eq!(ready(poll_once(&mut t, &w)), Ok(round));
            }
        }
        assert_eq!(map.waiters(), 0);
        assert!(map.is_empty());
        drop(k);
        assert_eq!(live(&keys), 0, "round {round}: the slot's key was dropped");
    }
}

#[test]
fn a_full_map_still_fails_waits_with_closed_once_closed() {
    let map = Small::new();
    map.insert(1, 1).unwrap();
    map.insert(2, 2).unwrap();
    map.close();
    let (_c, w) = counting_waker();
    assert_eq!(
        ready(poll_once(&mut map.get(&3), &w)),
        Err(WaitError::Closed)
    );
    assert_eq!(ready(poll_once(&mut map.get(&1), &w)), Ok(1));
}

// ---------------------------------------------------------------------------
// A `static`, built in a constant.
// ---------------------------------------------------------------------------

static SPIN: FixedAwaitMap<u8, u32, 4, 4> = FixedAwaitMap::new();
#[cfg(feature = "critical-section")]
static CS: FixedAwaitMap<u8, u32, 4, 4, awaitmap::CsLock> = FixedAwaitMap::new();

#[test]
fn static_maps_with_either_lock_wait_and_wake() {
    let (c, w) = counting_waker();
    let mut a = SPIN.take(&1);
    pending(poll_once(&mut a, &w));
    SPIN.insert(1, 5).unwrap();
    assert_eq!(c.wakes(), 1);
    assert_eq!(ready(poll_once(&mut a, &w)), Ok(5));
    assert!(SPIN.is_empty());
    #[cfg(feature = "critical-section")]
    {
        let mut b = CS.get(&1);
        pending(poll_once(&mut b, &w));
        CS.insert(1, 6).unwrap();
        assert_eq!(c.wakes(), 2);
        assert_eq!(ready(poll_once(&mut b, &w)), Ok(6));
        assert_eq!(CS.remove(&1), Some(6));
    }
}

#[test]
fn debug_shows_the_capacity_and_counts() {
    let map = Small::new();
    map.insert(1, 1).unwrap();
    let (_c, w) = counting_waker();
    let mut g = map.get(&2);
    pending(poll_once(&mut g, &w));
    assert_eq!(
        format!("{map:?}"),
        "FixedAwaitMap { keys: 2, waiter_slots: 3, len: 1, waiters: 1, closed: false }"
    );
    assert_eq!(format!("{g:?}"), "FixedGet { waiting: true, .. }");
}

// ---------------------------------------------------------------------------
// Guarantee 11: panicking user code.
// ---------------------------------------------------------------------------

/// A waker whose `wake` panics the first time and counts every wake.
#[derive(Default)]
struct PanicsOnce {
    panicked: AtomicBool,
    wakes: AtomicUsize,
}

impl Wake for PanicsOnce {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("waker panics");
        }
    }
}

#[test]
fn a_panicking_waker_does_not_stop_the_other_wake_ups() {
    // More waiters than one batch of wakers, so the drain takes several
    // trips through the lock.
    let map: FixedAwaitMap<u64, u64, 2, 20> = FixedAwaitMap::new();
    let bad = Arc::new(PanicsOnce::default());
    let bad_waker = Waker::from(Arc::clone(&bad));
    let (c, w) = counting_waker();
    let mut first = map.get(&1);
    pending(poll_once(&mut first, &bad_waker));
    let mut rest: Vec<_> = (0..15).map(|_| map.get(&1)).collect();
    for f in &mut rest {
        pending(poll_once(f, &w));
    }
    let caught = catch_unwind(AssertUnwindSafe(|| map.insert(1, 3)));
    assert!(caught.is_err(), "the waker's panic goes on");
    assert_eq!(bad.wakes.load(Ordering::SeqCst), 1);
    assert_eq!(c.wakes(), 15, "every other waiter was woken");
    assert_eq!(map.try_get(&1), Some(3), "the value is stored");
    for f in &mut rest {
        assert_eq!(ready(poll_once(f, &w)), Ok(3));
    }
    assert_eq!(ready(poll_once(&mut first, &w)), Ok(3));
}

/// A key whose `Drop` panics while `PANIC_ON_DROP` is set; equal by id.
#[derive(Clone, Debug)]
struct Fragile(u64);

static PANIC_ON_DROP: AtomicBool = AtomicBool::new(false);

impl PartialEq for Fragile {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Fragile {}

impl Drop for Fragile {
    fn drop(&mut self) {
        if PANIC_ON_DROP.load(Ordering::SeqCst) && !std::thread::panicking() {
            panic!("key drop panics");
        }
    }
}

#[test]
fn a_take_whose_key_drop_panics_puts_the_value_back() {
    let map: FixedAwaitMap<Fragile, u64, 2, 2> = FixedAwaitMap::new();
    map.insert(Fragile(1), 9).unwrap();
    let (_c, w) = counting_waker();
    let key = Fragile(1);
    let mut t = map.take(&key);
    PANIC_ON_DROP.store(true, Ordering::SeqCst);
    // Taking the last value frees the key's slot, dropping the stored key.
    let caught = catch_unwind(AssertUnwindSafe(|| poll_once(&mut t, &w)));
    PANIC_ON_DROP.store(false, Ordering::SeqCst);
    assert!(caught.is_err());
    assert_eq!(
        map.try_get(&key),
        Some(9),
        "the value went back under its key"
    );
    drop(t);
    assert_eq!(map.remove(&key), Some(9));
    assert!(map.is_empty());
}

#[test]
fn a_woken_take_whose_waker_clone_panics_gives_up_its_place() {
    let map: FixedAwaitMap<u64, u64, 2, 4> = FixedAwaitMap::new();
    let (counts, fragile) = raw_counting_waker();
    let (c, w) = counting_waker();
    let mut a = map.take(&1);
    let mut b = map.take(&1);
    pending(poll_once(&mut a, &fragile));
    pending(poll_once(&mut b, &w));
    map.insert(1, 4).unwrap();
    assert_eq!(counts.wakes(), 1);
    // `a` was woken, but someone took the value first: it must wait again
    // and needs a new waker, whose clone panics.
    assert_eq!(map.remove(&1), Some(4));
    counts.panic_on_clone.store(true, Ordering::SeqCst);
    let caught = catch_unwind(AssertUnwindSafe(|| poll_once(&mut a, &fragile)));
    counts.panic_on_clone.store(false, Ordering::SeqCst);
    assert!(caught.is_err());
    // `a` left the line, so the next value goes to `b`.
    assert_eq!(map.waiters(), 1);
    map.insert(1, 5).unwrap();
    assert_eq!(c.wakes(), 1);
    assert_eq!(ready(poll_once(&mut b, &w)), Ok(5));
    // Polled again, `a` starts over.
    pending(poll_once(&mut a, &w));
    map.insert(1, 6).unwrap();
    assert_eq!(ready(poll_once(&mut a, &w)), Ok(6));
    drop(fragile);
    assert_eq!(Arc::strong_count(&counts), 1, "no clone of the waker kept");
}

/// A key whose `Eq` panics while `PANIC_ON_EQ` is set, and a value whose
/// `Clone` panics while `PANIC_ON_CLONE_VALUE` is set: user code that runs
/// under the lock.
#[derive(Debug)]
struct TouchyKey(u64);

static PANIC_ON_EQ: AtomicBool = AtomicBool::new(false);

impl PartialEq for TouchyKey {
    fn eq(&self, other: &Self) -> bool {
        assert!(!PANIC_ON_EQ.load(Ordering::SeqCst), "key eq panics");
        self.0 == other.0
    }
}

impl Eq for TouchyKey {}

impl Clone for TouchyKey {
    fn clone(&self) -> Self {
        TouchyKey(self.0)
    }
}

#[derive(Debug, PartialEq)]
struct TouchyValue(u64);

static PANIC_ON_CLONE_VALUE: AtomicBool = AtomicBool::new(false);

impl Clone for TouchyValue {
    fn clone(&self) -> Self {
        assert!(
            !PANIC_ON_CLONE_VALUE.load(Ordering::SeqCst),
            "value clone panics"
        );
        TouchyValue(self.0)
    }
}

// Guarantee 11: `Eq` and `Clone` that panic under the lock release it and
// leave the map consistent and usable, with nothing lost.
#[test]
fn eq_or_clone_panicking_under_the_lock_leaves_the_map_usable() {
    let map: FixedAwaitMap<TouchyKey, TouchyValue, 4, 4> = FixedAwaitMap::new();
    let (c, w) = counting_waker();
    let (one, two) = (TouchyKey(1), TouchyKey(2));
    map.insert(two.clone(), TouchyValue(20)).unwrap();
    let mut waiting = map.get(&one);
    pending(poll_once(&mut waiting, &w));

    PANIC_ON_EQ.store(true, Ordering::SeqCst);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        map.insert(TouchyKey(3), TouchyValue(30))
    }));
    PANIC_ON_EQ.store(false, Ordering::SeqCst);
    assert!(caught.is_err());
    // The lock is free, nothing changed, and the waiting get still waits.
    assert_eq!((map.len(), map.waiters()), (1, 1));
    assert!(!map.contains_key(&TouchyKey(3)));
    assert_eq!(map.try_get(&two), Some(TouchyValue(20)));

    map.insert(one.clone(), TouchyValue(10)).unwrap();
    assert_eq!(c.wakes(), 1);
    PANIC_ON_CLONE_VALUE.store(true, Ordering::SeqCst);
    let caught = catch_unwind(AssertUnwindSafe(|| poll_once(&mut waiting, &w)));
    PANIC_ON_CLONE_VALUE.store(false, Ordering::SeqCst);
    assert!(caught.is_err());
    // The value stayed; the get, polled again, gets its clone.
    assert_eq!(map.try_get(&one), Some(TouchyValue(10)));
    assert_eq!(ready(poll_once(&mut waiting, &w)), Ok(TouchyValue(10)));
    assert_eq!((map.len(), map.waiters()), (2, 0));
}

/// A key whose `Eq` says no to everything, itself included.
#[derive(Clone, Debug)]
struct Liar;

impl PartialEq for Liar {
    fn eq(&self, _: &Self) -> bool {
        false
    }
}

impl Eq for Liar {}

// Guarantee 13: keys whose `Eq` lies get wrong answers (nothing is ever
// found), never a panic inside the map or a hang: waiters still leave, a
// full map still hands inserts back, and close still ends every wait.
#[test]
fn keys_whose_eq_lies_get_wrong_answers_and_nothing_worse() {
    let map: FixedAwaitMap<Liar, u64, 3, 2> = FixedAwaitMap::new();
    let (c, w) = counting_waker();
    let k = Liar;
    // Each insert of "the same" key takes a slot of its own.
    assert_eq!(map.insert(k.clone(), 1), Ok(None));
    assert_eq!(map.insert(k.clone(), 2), Ok(None));
    assert_eq!(map.len(), 2);
    assert_eq!(map.try_get(&k), None);
    let mut g = map.get(&k);
    pending(poll_once(&mut g, &w));
    // The last slot holds the get's key: a new key finds no room.
    assert!(map.insert(k.clone(), 3).is_err());
    let mut t = map.take(&k);
    assert_eq!(ready(poll_once(&mut t, &w)), Err(WaitError::NoRoom));
    map.close();
    assert_eq!(c.wakes(), 1);
    assert_eq!(ready(poll_once(&mut g, &w)), Err(WaitError::Closed));
    assert_eq!(map.waiters(), 0);
    // The get's slot is free again; the two values stay, unreachable.
    assert!(map.insert(k.clone(), 4).is_ok());
    assert_eq!((map.len(), map.remove(&k)), (3, None));
}

// ---------------------------------------------------------------------------
// Real threads and executors.
// ---------------------------------------------------------------------------

#[test]
fn threads_take_every_value_once_under_block_on() {
    static MAP: FixedAwaitMap<u64, u64, 64, 64> = FixedAwaitMap::new();
    let per = if cfg!(miri) { 20 } else { 2_000 };
    let consumers: Vec<_> = (0..4_u64)
        .map(|c| {
            std::thread::spawn(move || {
                let mut sum = 0;
                for i in 0..per {
                    let k = i * 4 + c;
                    // Values of the other consumers' keys may fill every
                    // slot: then there is no room to wait, so ask again.
                    sum += loop {
                        match futures::executor::block_on(MAP.take(&k)) {
                            Ok(v) => break v,
                            Err(WaitError::NoRoom) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    };
                }
                sum
            })
        })
        .collect();
    let producer = std::thread::spawn(move || {
        for k in 0..per * 4 {
            // The map is small: a full one hands the insert back; try again.
            let mut item = (k, k + 1);
            while let Err(back) = MAP.insert(item.0, item.1) {
                item = back;
                std::thread::yield_now();
            }
        }
    });
    producer.join().unwrap();
    let total: u64 = consumers.into_iter().map(|c| c.join().unwrap()).sum();
    let n = per * 4;
    assert_eq!(total, n * (n + 1) / 2, "every value taken exactly once");
    assert!(MAP.is_empty());
    assert_eq!(MAP.waiters(), 0);
}

#[test]
fn tokio_tasks_get_and_take_from_a_static_map() {
    static MAP: FixedAwaitMap<u32, u32, 16, 16> = FixedAwaitMap::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let getter = tokio::spawn(async { MAP.get(&1).await });
        let taker = tokio::spawn(async { MAP.take(&2).await });
        tokio::task::yield_now().await;
        MAP.insert(1, 11).unwrap();
        MAP.insert(2, 22).unwrap();
        assert_eq!(getter.await.unwrap(), Ok(11));
        assert_eq!(taker.await.unwrap(), Ok(22));
    });
    assert_eq!(MAP.len(), 1);
    assert_eq!(MAP.waiters(), 0);
}

// ---------------------------------------------------------------------------
// Auto traits, as for `AwaitMap`'s futures.
// ---------------------------------------------------------------------------

#[test]
fn the_map_is_send_and_sync_and_its_futures_send_and_unpin() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send_unpin<T: Send + Unpin>(_: &T) {}
    // A key and a value that are `Send` but neither `Sync` nor `Unpin`.
    struct NotUnpin(std::marker::PhantomPinned, std::cell::Cell<u8>);
    impl PartialEq for NotUnpin {
        fn eq(&self, other: &Self) -> bool {
            self.1 == other.1
        }
    }
    impl Eq for NotUnpin {}
    impl Clone for NotUnpin {
        fn clone(&self) -> Self {
            NotUnpin(std::marker::PhantomPinned, self.1.clone())
        }
    }
    let map: FixedAwaitMap<NotUnpin, NotUnpin, 2, 2> = FixedAwaitMap::new();
    send_sync(&map);
    let key = NotUnpin(std::marker::PhantomPinned, std::cell::Cell::new(1));
    let (g, t) = (map.get(&key), map.take(&key));
    // `&NotUnpin` is not `Send` (the key is not `Sync`), so check `Unpin` alone.
    fn unpin<T: Unpin>(_: &T) {}
    unpin(&g);
    unpin(&t);
    let u64_map: FixedAwaitMap<u64, u64, 2, 2> = FixedAwaitMap::new();
    send_unpin(&u64_map.get(&1));
    send_unpin(&u64_map.take(&1));
}
