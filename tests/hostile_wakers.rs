//! User code that calls back into the map, or panics, from the places the map
//! runs it: waker `clone`/`wake`/`drop`, key `Hash`/`Clone`/`Drop`, value
//! `Drop` (all outside the lock), and `K: Eq` / `V: Clone` (the only user code
//! under the lock): guarantee 11 of the crate docs.
//!
//! The map's lock is not reentrant: user code run under it that calls back
//! into the map would never return. Every test therefore runs its body through
//! [`no_hang`], which fails with a clear message instead of hanging; and every
//! hook first checks, through the map's never-blocking `Debug`, whether the
//! lock is held, and records that as a failure rather than deadlocking.
// Drives the producer side too (limits, demand, `drained`, `closed`).
#![cfg(feature = "producer")]
#![allow(unsafe_code)] // hand-made `RawWaker`s, to hook every waker clone and drop

mod common;

use std::cell::{Cell, RefCell};
use std::fmt::Debug;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, RawWaker, RawWakerVTable, Wake, Waker};

use awaitmap::{AwaitMap, Drained, GetOwned, InsertAsync, WaitError};
use common::{CountingWaker, Tracked, counting_waker, live, live_counter, poll_once};

type Map = AwaitMap<u64, u64>;

/// The key the futures of a test wait on.
const KEY: u64 = 1;
/// The key hooks use for their own calls into the map.
const SIDE: u64 = 1_000;

/// Runs `body` on its own thread; fails if it hangs (see
/// [`common::no_hang_or`]).
fn no_hang(what: &'static str, body: impl FnOnce() + Send + 'static) {
    common::no_hang_or(
        what,
        "a deadlock (user code run under the map's lock called back into the map?)",
        body,
    );
}

/// Whether the map's lock is held right now. The map's `Debug` never blocks;
/// it prints `<locked>` while the lock is busy. Each test owns its map and
/// uses it from one thread, so a held lock means the caller runs under it.
fn is_locked(map: &impl Debug) -> bool {
    format!("{map:?}").contains("<locked>")
}

/// A round of calls into the map that leaves it as it was: the sort of thing
/// a waker or key might do.
fn reenter(map: &Map) {
    let _ = map.insert(SIDE, 1);
    let _ = map.try_get(&SIDE);
    let _ = map.contains_key(&SIDE);
    let _ = map.remove(&SIDE);
    let _ = map.cancel(&SIDE);
    let _ = map.len();
    let _ = map.waiters();
    let _ = map.is_closed();
}

// ---------------------------------------------------------------------------
// A waker that runs a hook on every clone, wake and drop.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Clone,
    Wake,
    WakeByRef,
    Drop,
}

/// What a hook does on an event; returns whether it did anything.
type Act = Box<dyn Fn(&Arc<Map>, Event) -> bool + Send + Sync>;

/// The shared state behind a family of hostile waker handles: what they do
/// and what happened to them.
struct Hooks {
    map: Weak<Map>,
    act: Act,
    made: AtomicUsize,
    clones: AtomicUsize,
    wakes: AtomicUsize,
    wakes_by_ref: AtomicUsize,
    drops: AtomicUsize,
    /// Hook calls that found the map's lock held.
    locked: AtomicUsize,
    /// Hook calls whose `act` did something (the map was alive and unlocked).
    acted: AtomicUsize,
}

impl Hooks {
    fn new(
        map: &Arc<Map>,
        act: impl Fn(&Arc<Map>, Event) -> bool + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Hooks {
            map: Arc::downgrade(map),
            act: Box::new(act),
            made: AtomicUsize::new(0),
            clones: AtomicUsize::new(0),
            wakes: AtomicUsize::new(0),
            wakes_by_ref: AtomicUsize::new(0),
            drops: AtomicUsize::new(0),
            locked: AtomicUsize::new(0),
            acted: AtomicUsize::new(0),
        })
    }

    /// Hooks that call [`reenter`] on the events in `on`.
    fn reentering(map: &Arc<Map>, on: &'static [Event]) -> Arc<Self> {
        Hooks::new(map, move |m, ev| {
            let due = on.contains(&ev);
            if due {
                reenter(m);
            }
            due
        })
    }

    fn fire(&self, ev: Event) {
        let counter = match ev {
            Event::Clone => &self.clones,
            Event::Wake => &self.wakes,
            Event::WakeByRef => &self.wakes_by_ref,
            Event::Drop => &self.drops,
        };
        counter.fetch_add(1, SeqCst);
        if let Some(map) = self.map.upgrade() {
            if is_locked(&*map) {
                self.locked.fetch_add(1, SeqCst);
            } else if (self.act)(&map, ev) {
                self.acted.fetch_add(1, SeqCst);
            }
        }
    }

    fn clones(&self) -> usize {
        self.clones.load(SeqCst)
    }

    /// Wake-ups of either kind.
    fn wakes(&self) -> usize {
        self.wakes.load(SeqCst) + self.wakes_by_ref.load(SeqCst)
    }

    fn drops(&self) -> usize {
        self.drops.load(SeqCst)
    }

    fn locked(&self) -> usize {
        self.locked.load(SeqCst)
    }

    fn acted(&self) -> usize {
        self.acted.load(SeqCst)
    }

    /// Waker handles alive: made or cloned, and not yet consumed by `wake` or
    /// dropped.
    fn outstanding(&self) -> isize {
        let made = self.made.load(SeqCst) + self.clones.load(SeqCst);
        let gone = self.wakes.load(SeqCst) + self.drops.load(SeqCst);
        made as isize - gone as isize
    }

    /// A new waker handle.
    fn waker(self: &Arc<Self>) -> Waker {
        self.made.fetch_add(1, SeqCst);
        let data = Arc::into_raw(Arc::clone(self)).cast::<()>();
        // SAFETY: `data` is one strong reference of an `Arc<Hooks>`, and the
        // vtable treats it as exactly that: `clone` adds a reference, `wake`
        // and `drop` give one back, `wake_by_ref` only borrows. `Hooks` is
        // `Send + Sync`, so the handles may move between threads.
        unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) }
    }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(raw_clone, raw_wake, raw_wake_by_ref, raw_drop);

unsafe fn raw_clone(data: *const ()) -> RawWaker {
    let hooks = data.cast::<Hooks>();
    // SAFETY: the waker being cloned owns a strong reference, so the `Arc` is
    // alive; the new handle owns the reference added here.
    unsafe { Arc::increment_strong_count(hooks) };
    // SAFETY: alive, as above.
    unsafe { &*hooks }.fire(Event::Clone);
    RawWaker::new(data, &VTABLE)
}

unsafe fn raw_wake(data: *const ()) {
    // SAFETY: `wake` consumes the handle and its strong reference; it is given
    // back when `hooks` drops, also if the hook panics.
    let hooks = unsafe { Arc::from_raw(data.cast::<Hooks>()) };
    hooks.fire(Event::Wake);
}

unsafe fn raw_wake_by_ref(data: *const ()) {
    // SAFETY: the handle is borrowed and owns a strong reference: alive.
    unsafe { &*data.cast::<Hooks>() }.fire(Event::WakeByRef);
}

unsafe fn raw_drop(data: *const ()) {
    // SAFETY: as in `raw_wake`: the dropped handle's reference is given back.
    let hooks = unsafe { Arc::from_raw(data.cast::<Hooks>()) };
    hooks.fire(Event::Drop);
}

/// Registers `fut` (which must wait) with a fresh handle of `hooks`, then
/// drops that handle, so the map holds the only ones left.
fn register<F>(fut: &mut F, hooks: &Arc<Hooks>)
where
    F: std::future::Future + Unpin,
{
    let w = hooks.waker();
    assert!(poll_once(fut, &w).is_pending(), "the future should wait");
}

/// Every hook call found the lock released, and no handle leaked or was
/// released twice.
fn assert_clean(all: &[Arc<Hooks>]) {
    for (i, h) in all.iter().enumerate() {
        assert_eq!(h.locked(), 0, "waker {i}: a hook ran under the map's lock");
        assert_eq!(
            h.outstanding(),
            0,
            "waker {i}: a handle leaked or was released twice"
        );
    }
}

// ---------------------------------------------------------------------------
// `wake` calling back into the map.
// ---------------------------------------------------------------------------

// Guarantee 11: `insert` wakes more than a batch of gets, plus a take, whose
// `wake` calls back into the map; each is woken once, outside the lock.
#[test]
fn wake_calling_into_the_map_from_insert_wake_ups_does_not_deadlock() {
    no_hang("insert wake-ups", || {
        let map = Arc::new(Map::new());
        let hooks: Vec<_> = (0..40)
            .map(|_| Hooks::reentering(&map, &[Event::Wake, Event::WakeByRef]))
            .collect();
        let mut gets: Vec<_> = (0..37).map(|_| map.get(&KEY)).collect();
        let mut takes: Vec<_> = (0..3).map(|_| map.take(&KEY)).collect();
        for (f, h) in gets.iter_mut().zip(&hooks[..37]) {
            register(f, h);
        }
        for (f, h) in takes.iter_mut().zip(&hooks[37..]) {
            register(f, h);
        }
        assert_eq!(map.waiters(), 40);

        assert_eq!(map.insert(KEY, 7), None);
        for (i, h) in hooks.iter().enumerate() {
            let due = usize::from(i <= 37); // every get, and the first take
            assert_eq!(h.wakes(), due, "waker {i}: woken {} times", h.wakes());
            assert_eq!(h.acted(), due, "waker {i}: the hook did not run");
        }
        assert!(
            !map.contains_key(&SIDE),
            "the hooks' own calls left a trace"
        );
        assert_eq!(map.len(), 1);

        let (_, w) = counting_waker();
        for g in &mut gets {
            assert_eq!(poll_once(g, &w), Poll::Ready(Ok(7)));
        }
        assert_eq!(poll_once(&mut takes[0], &w), Poll::Ready(Ok(7)));
        assert!(poll_once(&mut takes[1], &w).is_pending());
        assert_eq!(map.waiters(), 2);
        drop((gets, takes));
        assert_eq!(map.waiters(), 0);
        assert_clean(&hooks);
    });
}

// Guarantee 11: the wake-ups `cancel` issues run outside the lock.
#[test]
fn wake_calling_into_the_map_from_cancel_wake_ups_does_not_deadlock() {
    no_hang("cancel wake-ups", || {
        let map = Arc::new(Map::new());
        let hooks: Vec<_> = (0..20)
            .map(|_| Hooks::reentering(&map, &[Event::Wake, Event::WakeByRef]))
            .collect();
        let mut futs: Vec<_> = (0..20).map(|_| map.get(&KEY)).collect();
        for (f, h) in futs.iter_mut().zip(&hooks) {
            register(f, h);
        }
        assert_eq!(map.cancel(&KEY), 20);
        assert!(hooks.iter().all(|h| h.wakes() == 1 && h.acted() == 1));
        let (_, w) = counting_waker();
        for f in &mut futs {
            assert_eq!(poll_once(f, &w), Poll::Ready(Err(WaitError::Cancelled)));
        }
        assert_eq!(map.waiters(), 0);
        assert!(map.is_empty());
        drop(futs);
        assert_clean(&hooks);
    });
}

// Guarantee 11: the wake-ups `close` issues run outside the lock.
#[test]
fn wake_calling_into_the_map_from_close_wake_ups_does_not_deadlock() {
    no_hang("close wake-ups", || {
        let map = Arc::new(Map::new());
        let hooks: Vec<_> = (0..20)
            .map(|_| Hooks::reentering(&map, &[Event::Wake, Event::WakeByRef]))
            .collect();
        let mut gets: Vec<_> = (0..10).map(|_| map.get(&KEY)).collect();
        let mut takes: Vec<_> = (0..10).map(|_| map.take(&KEY)).collect();
        for (f, h) in gets.iter_mut().zip(&hooks[..10]) {
            register(f, h);
        }
        for (f, h) in takes.iter_mut().zip(&hooks[10..]) {
            register(f, h);
        }
        map.close();
        assert!(hooks.iter().all(|h| h.wakes() == 1 && h.acted() == 1));
        let (_, w) = counting_waker();
        for f in &mut gets {
            assert_eq!(poll_once(f, &w), Poll::Ready(Err(WaitError::Closed)));
        }
        for f in &mut takes {
            assert_eq!(poll_once(f, &w), Poll::Ready(Err(WaitError::Closed)));
        }
        assert_eq!(map.waiters(), 0);
        drop((gets, takes));
        assert_clean(&hooks);
    });
}

// Guarantee 9: `close` wakes every waiting future even when a waker it
// wakes midway grows the table (one insert into a full table moves every
// entry) before `close` has reached the rest. Ten maps, each with its own
// hasher seed: where the entries land differs from map to map.
#[test]
fn close_wakes_every_waiter_even_if_a_wake_up_grows_the_table() {
    no_hang("close while the table grows", || {
        for _ in 0..10 {
            close_while_a_wake_up_grows_the_table();
        }
    });
}

fn close_while_a_wake_up_grows_the_table() {
    let map = Arc::new(Map::new());
    // 16 values and 40 waiting keys: 56 entries, a full table of 64
    // buckets, so that the next new key grows it.
    for k in 0..16 {
        map.insert(k, k);
    }
    let wakes = Arc::new(AtomicUsize::new(0));
    let hooks: Vec<_> = (0..40)
        .map(|_| {
            let wakes = Arc::clone(&wakes);
            on_wake(&map, move |m| {
                if wakes.fetch_add(1, SeqCst) == 19 {
                    m.insert(1_000, 0);
                }
            })
        })
        .collect();
    let keys: Vec<u64> = (100..140).collect();
    let mut gets: Vec<_> = keys.iter().map(|k| map.get(k)).collect();
    for (f, h) in gets.iter_mut().zip(&hooks) {
        register(f, h);
    }
    map.close();
    assert_eq!(map.len(), 17, "the twentieth wake-up inserted");
    let woken = hooks.iter().filter(|h| h.wakes() == 1).count();
    assert_eq!(woken, 40, "close left waiters unwoken after the table grew");
    let (_, w) = counting_waker();
    for f in &mut gets {
        assert_eq!(poll_once(f, &w), Poll::Ready(Err(WaitError::Closed)));
    }
    drop(gets);
    assert_clean(&hooks);
}

// Guarantee 11: when a woken take is dropped, the wake-up it passes on to the
// next take runs outside the lock.
#[test]
fn wake_calling_into_the_map_when_a_dropped_take_passes_the_baton_does_not_deadlock() {
    no_hang("baton pass", || {
        let map = Arc::new(Map::new());
        let first = Hooks::reentering(&map, &[Event::Wake, Event::WakeByRef]);
        let second = Hooks::reentering(&map, &[Event::Wake, Event::WakeByRef]);
        let mut t1 = map.take(&KEY);
        let mut t2 = map.take(&KEY);
        register(&mut t1, &first);
        register(&mut t2, &second);
        map.insert(KEY, 5);
        assert_eq!((first.wakes(), second.wakes()), (1, 0));
        drop(t1);
        assert_eq!(second.wakes(), 1, "the baton was not passed on");
        assert_eq!(second.acted(), 1);
        let (_, w) = counting_waker();
        assert_eq!(poll_once(&mut t2, &w), Poll::Ready(Ok(5)));
        assert!(map.is_empty());
        drop(t2);
        assert_clean(&[first, second]);
    });
}

// Guarantee 11: a `wake` that cancels the key it was woken for fails the takes
// that do not hold the value's baton, and nothing else.
#[test]
fn wake_that_cancels_its_own_key_fails_only_the_takes_without_the_baton() {
    no_hang("wake cancels own key", || {
        let map = Arc::new(Map::new());
        let cancelled = Arc::new(AtomicUsize::new(usize::MAX));
        let hooks = {
            let cancelled = Arc::clone(&cancelled);
            Hooks::new(&map, move |m, ev| {
                let due = ev == Event::Wake || ev == Event::WakeByRef;
                if due {
                    cancelled.store(m.cancel(&KEY), SeqCst);
                }
                due
            })
        };
        let mut get = map.get(&KEY);
        let mut t1 = map.take(&KEY);
        let mut t2 = map.take(&KEY);
        register(&mut get, &hooks);
        let (c1, w1) = counting_waker();
        let (c2, w2) = counting_waker();
        assert!(poll_once(&mut t1, &w1).is_pending());
        assert!(poll_once(&mut t2, &w2).is_pending());

        map.insert(KEY, 5);
        assert_eq!(hooks.acted(), 1);
        assert_eq!(
            cancelled.load(SeqCst),
            1,
            "only the second take should fail"
        );
        assert_eq!((c1.wakes(), c2.wakes()), (1, 1));
        let (_, w) = counting_waker();
        assert_eq!(poll_once(&mut get, &w), Poll::Ready(Ok(5)));
        assert_eq!(poll_once(&mut t1, &w), Poll::Ready(Ok(5)));
        assert_eq!(
            poll_once(&mut t2, &w),
            Poll::Ready(Err(WaitError::Cancelled))
        );
        assert_eq!(map.waiters(), 0);
        assert!(map.is_empty());
        drop((get, t1, t2));
        assert_clean(&[hooks]);
    });
}

// Guarantee 11: a `wake` that inserts its key again, while the first insert is
// still waking the others: every waiter is woken once and sees the newest value.
#[test]
fn wake_that_inserts_its_own_key_again_wakes_each_waiter_once() {
    no_hang("wake inserts own key", || {
        let map = Arc::new(Map::new());
        let replaced = Arc::new(Mutex::new(None));
        let once = Arc::new(AtomicBool::new(false));
        let first = {
            let replaced = Arc::clone(&replaced);
            Hooks::new(&map, move |m, ev| {
                let due = matches!(ev, Event::Wake | Event::WakeByRef) && !once.swap(true, SeqCst);
                if due {
                    *replaced.lock().unwrap() = Some(m.insert(KEY, 6));
                }
                due
            })
        };
        let mut hooks = vec![first];
        hooks.extend((1..30).map(|_| Hooks::new(&map, |_, _| false)));
        let mut gets: Vec<_> = (0..30).map(|_| map.get(&KEY)).collect();
        for (f, h) in gets.iter_mut().zip(&hooks) {
            register(f, h);
        }
        assert_eq!(map.insert(KEY, 5), None);
        assert_eq!(*replaced.lock().unwrap(), Some(Some(5)));
        for (i, h) in hooks.iter().enumerate() {
            assert_eq!(h.wakes(), 1, "waker {i} woken {} times", h.wakes());
        }
        let (_, w) = counting_waker();
        for g in &mut gets {
            assert_eq!(poll_once(g, &w), Poll::Ready(Ok(6)));
        }
        drop(gets);
        assert_eq!(map.waiters(), 0);
        assert_clean(&hooks);
    });
}

// ---------------------------------------------------------------------------
// `clone` and `drop` calling back into the map.
// ---------------------------------------------------------------------------

// Guarantee 11: the map clones wakers outside the lock (and, guarantee 4, not
// again for a waker that `will_wake` the stored one).
#[test]
fn waker_clone_calling_into_the_map_does_not_deadlock() {
    no_hang("waker clone", || {
        let map = Arc::new(Map::new());
        let h1 = Hooks::reentering(&map, &[Event::Clone]);
        let h2 = Hooks::reentering(&map, &[Event::Clone]);
        let w1 = h1.waker();
        let w2 = h2.waker();

        // A fresh key (the map also makes an owned key), then an existing one.
        let mut get = map.get(&KEY);
        assert!(poll_once(&mut get, &w1).is_pending());
        let mut take = map.take(&KEY);
        assert!(poll_once(&mut take, &w1).is_pending());
        let mut get_owned = map.get_owned(&KEY);
        assert!(poll_once(&mut get_owned, &w1).is_pending());
        let mut take_owned = map.take_owned(&KEY);
        assert!(poll_once(&mut take_owned, &w1).is_pending());
        assert_eq!(h1.clones(), 4, "each registration stores one clone");
        assert_eq!(h1.acted(), 4);

        // Another waker replaces the stored one: cloned once.
        assert!(poll_once(&mut get, &w2).is_pending());
        assert_eq!(h2.clones(), 1);
        // The same waker again: `will_wake`, not cloned.
        assert!(poll_once(&mut get, &w2).is_pending());
        assert_eq!(h2.clones(), 1);
        assert_eq!(map.waiters(), 4);

        map.insert(KEY, 3);
        let (_, w) = counting_waker();
        assert_eq!(poll_once(&mut get, &w), Poll::Ready(Ok(3)));
        assert_eq!(poll_once(&mut get_owned, &w), Poll::Ready(Ok(3)));
        assert_eq!(poll_once(&mut take, &w), Poll::Ready(Ok(3)));
        assert!(poll_once(&mut take_owned, &w).is_pending());
        drop((get, take, get_owned, take_owned, w1, w2));
        assert_eq!(map.waiters(), 0);
        assert!(!map.contains_key(&SIDE));
        assert_clean(&[h1, h2]);
    });
}

// Guarantee 11: a stored waker replaced by another one is dropped outside the
// lock.
#[test]
fn waker_drop_calling_into_the_map_when_replaced_does_not_deadlock() {
    no_hang("waker replaced", || {
        let map = Arc::new(Map::new());
        let old = Hooks::reentering(&map, &[Event::Drop]);
        let new = Hooks::reentering(&map, &[Event::Drop]);
        let mut get = map.get(&KEY);
        let mut take = map.take(&KEY);
        register(&mut get, &old);
        register(&mut take, &old);
        assert_eq!(old.outstanding(), 2, "the map holds one clone per future");
        let drops = old.drops();

        let w = new.waker();
        assert!(poll_once(&mut get, &w).is_pending());
        assert!(poll_once(&mut take, &w).is_pending());
        assert_eq!(
            old.drops(),
            drops + 2,
            "the replaced wakers were not dropped"
        );
        assert_eq!(old.outstanding(), 0);
        assert!(old.acted() >= 2);

        map.insert(KEY, 1);
        assert_eq!(new.wakes(), 2);
        drop((get, take, w));
        assert_clean(&[old, new]);
    });
}

// Guarantee 11: a waiting future's stored waker is dropped outside the lock
// when the future is dropped.
#[test]
fn waker_drop_calling_into_the_map_when_the_future_is_dropped_does_not_deadlock() {
    no_hang("future dropped", || {
        let map = Arc::new(Map::new());
        let hooks = Hooks::reentering(&map, &[Event::Drop]);
        let mut get = map.get(&KEY);
        let mut take = map.take(&KEY);
        let mut get_owned = map.get_owned(&KEY);
        let mut take_owned = map.take_owned(&KEY);
        register(&mut get, &hooks);
        register(&mut take, &hooks);
        register(&mut get_owned, &hooks);
        register(&mut take_owned, &hooks);
        let drops = hooks.drops();
        drop((get, take, get_owned, take_owned));
        assert_eq!(hooks.drops(), drops + 4);
        assert_eq!(hooks.outstanding(), 0);
        assert_eq!(map.waiters(), 0);
        assert!(map.is_empty());
        assert_clean(&[hooks]);
    });
}

// Guarantee 11: a future that completes while its waker is still stored (it
// is polled from another waker's `wake`, before its own turn in the wake-up
// queue) drops that waker outside the lock.
#[test]
fn waker_drop_calling_into_the_map_when_the_future_completes_does_not_deadlock() {
    no_hang("future completes", || {
        const N: usize = 100;
        let map = Arc::new(Map::new());
        let others: Arc<Mutex<Vec<GetOwned<u64, u64>>>> = Arc::new(Mutex::new(Vec::new()));
        let results = Arc::new(Mutex::new(Vec::new()));
        let first = {
            let (others, results) = (Arc::clone(&others), Arc::clone(&results));
            Hooks::new(&map, move |_, ev| {
                let due = matches!(ev, Event::Wake | Event::WakeByRef);
                if due {
                    let (_, w) = counting_waker();
                    for f in others.lock().unwrap().iter_mut() {
                        results.lock().unwrap().push(poll_once(f, &w));
                    }
                }
                due
            })
        };
        let hooks: Vec<_> = (1..N)
            .map(|_| Hooks::reentering(&map, &[Event::Drop]))
            .collect();
        let mut head = map.get_owned(&KEY);
        register(&mut head, &first);
        for h in &hooks {
            let mut f = map.get_owned(&KEY);
            register(&mut f, h);
            others.lock().unwrap().push(f);
        }

        map.insert(KEY, 9);
        assert_eq!(*results.lock().unwrap(), vec![Poll::Ready(Ok(9)); N - 1]);
        let unwoken = hooks.iter().filter(|h| h.wakes() == 0).count();
        assert!(
            unwoken > 0,
            "no future completed before its own wake-up: the test no longer \
             covers a stored waker dropped at completion"
        );
        for (i, h) in hooks.iter().enumerate() {
            // Our registration handle was dropped; the map's clone went
            // either through its wake-up or, unwoken, by being dropped.
            assert_eq!(
                h.outstanding(),
                0,
                "waker {i}: the stored clone must go exactly once"
            );
            if h.wakes() == 0 {
                assert_eq!(
                    h.acted(),
                    2,
                    "waker {i}: a drop hook did not call into the map"
                );
            }
        }
        let (_, w) = counting_waker();
        assert_eq!(poll_once(&mut head, &w), Poll::Ready(Ok(9)));
        drop(head);
        others.lock().unwrap().clear();
        assert_eq!(map.waiters(), 0);
        assert_clean(&hooks);
        assert_clean(&[first]);
    });
}

/// A `Wake` waker whose own `Drop` (when its last `Arc` goes) calls back into
/// the map.
struct DropsIntoMap {
    map: Weak<Map>,
    dropped: Arc<AtomicUsize>,
    locked: Arc<AtomicUsize>,
}

impl Wake for DropsIntoMap {
    fn wake(self: Arc<Self>) {}
}

impl Drop for DropsIntoMap {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, SeqCst);
        if let Some(map) = self.map.upgrade() {
            if is_locked(&*map) {
                self.locked.fetch_add(1, SeqCst);
            } else {
                reenter(&map);
            }
        }
    }
}

// Guarantee 11: with a `std::task::Wake` waker, the map may hold the last
// reference; releasing it (replacement, completion, future dropped) runs the
// waker's `Drop` outside the lock.
#[test]
fn wake_trait_waker_whose_last_reference_drops_inside_the_map() {
    no_hang("Wake last reference", || {
        let map = Arc::new(Map::new());
        let dropped = Arc::new(AtomicUsize::new(0));
        let locked = Arc::new(AtomicUsize::new(0));
        let make = || {
            Waker::from(Arc::new(DropsIntoMap {
                map: Arc::downgrade(&map),
                dropped: Arc::clone(&dropped),
                locked: Arc::clone(&locked),
            }))
        };
        let (_, plain) = counting_waker();

        // Replaced by another waker.
        let mut get = map.get(&KEY);
        assert!(poll_once(&mut get, &make()).is_pending());
        assert_eq!(dropped.load(SeqCst), 0, "the map should hold a clone");
        assert!(poll_once(&mut get, &plain).is_pending());
        assert_eq!(dropped.load(SeqCst), 1);

        // The future dropped while waiting.
        let mut take = map.take(&KEY);
        assert!(poll_once(&mut take, &make()).is_pending());
        drop(take);
        assert_eq!(dropped.load(SeqCst), 2);

        // Consumed by a wake-up.
        let mut take = map.take(&KEY);
        assert!(poll_once(&mut take, &make()).is_pending());
        map.insert(KEY, 4);
        assert_eq!(dropped.load(SeqCst), 3);
        assert_eq!(poll_once(&mut take, &plain), Poll::Ready(Ok(4)));
        assert_eq!(poll_once(&mut get, &plain), Poll::Pending);

        assert_eq!(locked.load(SeqCst), 0, "a waker was dropped under the lock");
        drop((get, take));
        assert_eq!(map.waiters(), 0);
    });
}

// ---------------------------------------------------------------------------
// A waker that panics.
// ---------------------------------------------------------------------------

struct Boom;

/// How often a waker due with a panicking one ran. With `std` the map wakes
/// every due waker before it resumes the panic (documented); without `std`
/// the panic stops the rest of the batch, so a waker runs at most once.
fn assert_woken_despite_panic(wakes: usize) {
    if cfg!(feature = "std") {
        assert_eq!(wakes, 1, "a panicking waker stopped the other wake-ups");
    } else {
        assert!(wakes <= 1, "woken {wakes} times");
    }
}

impl Wake for Boom {
    fn wake(self: Arc<Self>) {
        panic!("hostile waker: wake panics");
    }
}

// Guarantee 11: a waker that panics in `wake` makes `insert` panic, but the
// value is stored, the lock is free, and the other futures see the value.
#[test]
fn waker_panicking_in_wake_leaves_the_map_consistent() {
    no_hang("panicking waker", || {
        let map = Map::new();
        let boom = Waker::from(Arc::new(Boom));
        let mut bad = map.get(&KEY);
        assert!(poll_once(&mut bad, &boom).is_pending());
        let counters: Vec<_> = (0..4).map(|_| counting_waker()).collect();
        let mut gets: Vec<_> = (0..4).map(|_| map.get(&KEY)).collect();
        for (g, (_, w)) in gets.iter_mut().zip(&counters) {
            assert!(poll_once(g, w).is_pending());
        }
        let (t1c, t1w) = counting_waker();
        let (t2c, t2w) = counting_waker();
        let mut t1 = map.take(&KEY);
        let mut t2 = map.take(&KEY);
        assert!(poll_once(&mut t1, &t1w).is_pending());
        assert!(poll_once(&mut t2, &t2w).is_pending());

        let r = panic::catch_unwind(AssertUnwindSafe(|| map.insert(KEY, 7)));
        assert!(
            r.is_err(),
            "the waker's panic should propagate out of insert"
        );
        assert!(!is_locked(&map), "the lock is still held after the panic");
        assert_eq!(map.len(), 1);
        assert_eq!(map.try_get(&KEY), Some(7));
        assert_eq!(map.waiters(), 7);

        let (_, w) = counting_waker();
        for g in &mut gets {
            assert_eq!(poll_once(g, &w), Poll::Ready(Ok(7)));
        }
        assert_eq!(poll_once(&mut bad, &w), Poll::Ready(Ok(7)));
        assert_eq!(
            poll_once(&mut t1, &w),
            Poll::Ready(Ok(7)),
            "the first take lost its value"
        );
        assert!(poll_once(&mut t2, &t2w).is_pending());
        assert!(map.is_empty());
        for (c, _) in counters.iter().chain([&(t1c, t1w)]) {
            assert_woken_despite_panic(c.wakes());
        }
        assert_eq!(t2c.wakes(), 0);

        // Still usable: the next insert goes to the second take.
        assert_eq!(map.insert(KEY, 8), None);
        assert_eq!(t2c.wakes(), 1);
        assert_eq!(poll_once(&mut t2, &w), Poll::Ready(Ok(8)));
        drop((bad, gets, t1, t2));
        assert_eq!(map.waiters(), 0);
        assert!(map.is_empty());
    });
}

// Guarantee 11: a panicking waker among more waiters than one batch of
// wake-ups: `insert` panics once, after (with `std`) waking every other
// waiter once; the map stays usable and every future sees the value.
#[test]
fn waker_panicking_in_wake_with_many_waiters_leaves_the_map_usable() {
    no_hang("panicking waker, many waiters", || {
        let map = Map::new();
        let boom = Waker::from(Arc::new(Boom));
        let mut bad = map.get(&KEY);
        assert!(poll_once(&mut bad, &boom).is_pending());
        let counters: Vec<_> = (0..40).map(|_| counting_waker()).collect();
        let mut gets: Vec<_> = (0..40).map(|_| map.get(&KEY)).collect();
        for (g, (_, w)) in gets.iter_mut().zip(&counters) {
            assert!(poll_once(g, w).is_pending());
        }
        assert!(panic::catch_unwind(AssertUnwindSafe(|| map.insert(KEY, 1))).is_err());
        assert!(!is_locked(&map));
        assert_eq!(map.waiters(), 41);
        for (c, _) in &counters {
            assert_woken_despite_panic(c.wakes());
        }

        // Half the gets resolve now; the other half after another insert.
        let (_, w) = counting_waker();
        for g in gets.iter_mut().step_by(2) {
            assert_eq!(poll_once(g, &w), Poll::Ready(Ok(1)));
        }
        drop(bad);
        assert_eq!(map.waiters(), 20);
        assert_eq!(map.insert(KEY, 2), Some(1));
        for g in gets.iter_mut().skip(1).step_by(2) {
            assert_eq!(poll_once(g, &w), Poll::Ready(Ok(2)));
        }
        assert_eq!(map.waiters(), 0);
        for (i, (c, _)) in counters.iter().enumerate() {
            assert!(
                c.wakes() <= 1,
                "waker {i}: woken again by the second insert"
            );
        }

        // Fresh waiters on another key are each woken exactly once.
        let fresh: Vec<_> = (0..20).map(|_| counting_waker()).collect();
        let mut more: Vec<_> = (0..20).map(|_| map.get(&SIDE)).collect();
        for (g, (_, w)) in more.iter_mut().zip(&fresh) {
            assert!(poll_once(g, w).is_pending());
        }
        map.insert(SIDE, 3);
        assert!(fresh.iter().all(|(c, _)| c.wakes() == 1));
        for g in &mut more {
            assert_eq!(poll_once(g, &w), Poll::Ready(Ok(3)));
        }
        drop((gets, more));
        assert_eq!(map.waiters(), 0);
        assert_eq!(map.len(), 2);
    });
}

// ---------------------------------------------------------------------------
// `K: Eq` and `V: Clone` panicking under the lock.
// ---------------------------------------------------------------------------

thread_local! {
    static EQ_PANICS: Cell<bool> = const { Cell::new(false) };
    static CLONE_PANICS: Cell<bool> = const { Cell::new(false) };
}

/// A key whose `Eq` panics while `EQ_PANICS` is set.
#[derive(Clone, Debug)]
struct PanicEqKey(u64);

impl PartialEq for PanicEqKey {
    fn eq(&self, other: &Self) -> bool {
        if EQ_PANICS.get() {
            panic!("hostile key: Eq panics");
        }
        self.0 == other.0
    }
}

impl Eq for PanicEqKey {}

impl Hash for PanicEqKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// A value whose `Clone` panics while `CLONE_PANICS` is set.
#[derive(Debug)]
struct PanicCloneVal(Tracked);

impl Clone for PanicCloneVal {
    fn clone(&self) -> Self {
        if CLONE_PANICS.get() {
            panic!("hostile value: Clone panics");
        }
        PanicCloneVal(self.0.clone())
    }
}

/// Runs `f`, which must panic, and checks the map's lock was released.
fn expect_panic<R>(map: &impl Debug, what: &str, f: impl FnOnce() -> R) {
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    assert!(r.is_err(), "{what}: the panic did not propagate");
    assert!(
        !is_locked(map),
        "{what}: the lock is still held after the panic"
    );
}

// Guarantee 11: an `Eq` that panics under the lock, in every operation that
// compares keys, propagates, releases the lock, and loses no value.
#[test]
fn eq_panicking_under_the_lock_releases_it_and_loses_nothing() {
    no_hang("panicking Eq", || {
        let values = live_counter();
        let map: AwaitMap<PanicEqKey, Tracked> = AwaitMap::new();
        let (k1, k2) = (PanicEqKey(1), PanicEqKey(2));
        map.insert(k1.clone(), Tracked::new(10, &values));
        let (wc, w) = counting_waker();
        let mut waiting = map.get(&k2);
        assert!(poll_once(&mut waiting, &w).is_pending());
        let mut fresh_take = map.take(&k1);
        let mut fresh_get = map.get(&k2);

        EQ_PANICS.set(true);
        expect_panic(&map, "insert over a value", || {
            map.insert(k1.clone(), Tracked::new(11, &values))
        });
        expect_panic(&map, "insert over waiters", || {
            map.insert(k2.clone(), Tracked::new(20, &values))
        });
        expect_panic(&map, "try_get", || map.try_get(&k1));
        expect_panic(&map, "contains_key", || map.contains_key(&k1));
        expect_panic(&map, "remove", || map.remove(&k1));
        expect_panic(&map, "cancel", || map.cancel(&k2));
        expect_panic(&map, "take, first poll", || poll_once(&mut fresh_take, &w));
        expect_panic(&map, "get, first poll", || poll_once(&mut fresh_get, &w));
        EQ_PANICS.set(false);

        assert_eq!(live(&values), 1, "the rejected values were not dropped");
        assert_eq!(map.len(), 1);
        assert_eq!(map.waiters(), 1);
        assert_eq!(wc.wakes(), 0);
        assert_eq!(map.try_get(&k1).map(|v| v.id), Some(10));
        assert!(map.contains_key(&k1));
        // The futures whose first poll panicked start over.
        assert!(poll_once(&mut fresh_get, &w).is_pending());
        assert_eq!(map.waiters(), 2);
        match poll_once(&mut fresh_take, &w) {
            Poll::Ready(Ok(v)) => assert_eq!(v.id, 10),
            other => panic!("take after the panic: {other:?}"),
        }
        assert_eq!(map.insert(k2.clone(), Tracked::new(20, &values)), None);
        assert_eq!(wc.wakes(), 2, "both gets of the key should be woken");
        assert!(matches!(poll_once(&mut waiting, &w), Poll::Ready(Ok(ref v)) if v.id == 20));
        assert!(matches!(poll_once(&mut fresh_get, &w), Poll::Ready(Ok(ref v)) if v.id == 20));
        assert_eq!(map.waiters(), 0);
        assert_eq!(
            live(&values),
            1,
            "one value is stored, the rest were dropped"
        );
        drop((waiting, fresh_take, fresh_get));
        drop(map);
        assert_eq!(live(&values), 0);
    });
}

// Guarantee 11: a `V: Clone` that panics under the lock, in `try_get` and in
// a `get` (first poll and after a wake-up), propagates, releases the lock,
// and loses no value; the `get` can be polled again.
#[test]
fn value_clone_panicking_under_the_lock_releases_it_and_loses_nothing() {
    no_hang("panicking Clone", || {
        let values = live_counter();
        let map: AwaitMap<u64, PanicCloneVal> = AwaitMap::new();
        map.insert(1, PanicCloneVal(Tracked::new(10, &values)));
        let (wc, w) = counting_waker();
        let mut present = map.get(&1);
        let mut waiting = map.get(&2);
        assert!(poll_once(&mut waiting, &w).is_pending());
        map.insert(2, PanicCloneVal(Tracked::new(20, &values)));
        assert_eq!(wc.wakes(), 1);

        CLONE_PANICS.set(true);
        expect_panic(&map, "try_get", || map.try_get(&1));
        expect_panic(&map, "get, first poll", || poll_once(&mut present, &w));
        expect_panic(&map, "get, woken", || poll_once(&mut waiting, &w));
        assert_eq!(map.waiters(), 1, "the woken get is still registered");
        // `take` moves the value: no clone, no panic.
        let mut take = map.take(&1);
        assert!(matches!(poll_once(&mut take, &w), Poll::Ready(Ok(ref v)) if v.0.id == 10));
        CLONE_PANICS.set(false);

        assert_eq!(map.len(), 1);
        assert_eq!(map.try_get(&2).map(|v| v.0.id), Some(20));
        assert!(matches!(poll_once(&mut waiting, &w), Poll::Ready(Ok(ref v)) if v.0.id == 20));
        assert_eq!(map.waiters(), 0);
        // The first get's key was taken meanwhile: it waits now.
        assert!(poll_once(&mut present, &w).is_pending());
        map.insert(1, PanicCloneVal(Tracked::new(11, &values)));
        assert!(matches!(poll_once(&mut present, &w), Poll::Ready(Ok(ref v)) if v.0.id == 11));
        drop((present, waiting, take));
        assert_eq!(live(&values), map.len(), "a value was lost or duplicated");
        drop(map);
        assert_eq!(live(&values), 0);
    });
}

// ---------------------------------------------------------------------------
// Key `Hash` and `Clone` calling back into the map.
// ---------------------------------------------------------------------------

type HookMap = AwaitMap<HookKey, u64>;

thread_local! {
    static HOOK_MAP: RefCell<Weak<HookMap>> = const { RefCell::new(Weak::new()) };
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    static HOOK_RUNS: Cell<usize> = const { Cell::new(0) };
    static HOOK_LOCKED: Cell<usize> = const { Cell::new(0) };
}

/// Calls into the thread's `HOOK_MAP` (not recursively).
fn key_hook() {
    if IN_HOOK.replace(true) {
        return;
    }
    if let Some(map) = HOOK_MAP.with_borrow(Weak::upgrade) {
        HOOK_RUNS.set(HOOK_RUNS.get() + 1);
        if is_locked(&*map) {
            HOOK_LOCKED.set(HOOK_LOCKED.get() + 1);
        } else {
            let _ = map.len();
            let _ = map.waiters();
            let _ = map.contains_key(&HookKey(SIDE));
            let _ = map.try_get(&HookKey(SIDE));
        }
    }
    IN_HOOK.set(false);
}

/// A key whose `Hash` and `Clone` call back into the map.
#[derive(Debug, PartialEq, Eq)]
struct HookKey(u64);

impl Hash for HookKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        key_hook();
        self.0.hash(state);
    }
}

impl Clone for HookKey {
    fn clone(&self) -> Self {
        key_hook();
        HookKey(self.0)
    }
}

/// Runs `op` and checks the key hooks ran during it, none under the lock.
fn hooked<R>(what: &str, op: impl FnOnce() -> R) -> R {
    let before = HOOK_RUNS.get();
    let r = op();
    assert!(HOOK_RUNS.get() > before, "{what}: no key hook ran");
    assert_eq!(
        HOOK_LOCKED.get(),
        0,
        "{what}: a key hook ran under the lock"
    );
    r
}

// Guarantee 11: key hashing and key clones run outside the lock, so a key
// whose `Hash` or `Clone` calls into the map does not deadlock it.
#[test]
fn key_hash_and_clone_calling_into_the_map_do_not_deadlock() {
    no_hang("key Hash", || {
        let map = Arc::new(HookMap::new());
        HOOK_MAP.set(Arc::downgrade(&map));
        let (k1, k2) = (HookKey(1), HookKey(2));
        let (wc, w) = counting_waker();

        hooked("insert, new key", || map.insert(HookKey(1), 10));
        hooked("insert, existing key", || map.insert(HookKey(1), 11));
        assert_eq!(hooked("try_get", || map.try_get(&k1)), Some(11));
        assert!(hooked("contains_key", || map.contains_key(&k1)));
        let mut get = map.get(&k2);
        let mut take = map.take(&k2);
        let mut get_owned = hooked("get_owned", || map.get_owned(&k2));
        let mut take_owned = hooked("take_owned", || map.take_owned(&k2));
        hooked("get, first poll of a new key", || {
            assert!(poll_once(&mut get, &w).is_pending())
        });
        hooked("take, first poll", || {
            assert!(poll_once(&mut take, &w).is_pending())
        });
        hooked("get_owned, first poll", || {
            assert!(poll_once(&mut get_owned, &w).is_pending())
        });
        hooked("take_owned, first poll", || {
            assert!(poll_once(&mut take_owned, &w).is_pending())
        });
        assert_eq!(map.waiters(), 4);
        assert_eq!(hooked("cancel", || map.cancel(&k2)), 4);
        assert_eq!(wc.wakes(), 4);
        for r in [
            poll_once(&mut get, &w),
            poll_once(&mut take, &w),
            poll_once(&mut get_owned, &w),
            poll_once(&mut take_owned, &w),
        ] {
            assert_eq!(r, Poll::Ready(Err(WaitError::Cancelled)));
        }
        let mut present = map.get(&k1);
        assert_eq!(
            hooked("get of a present key", || poll_once(&mut present, &w)),
            Poll::Ready(Ok(11))
        );
        assert_eq!(hooked("remove", || map.remove(&k1)), Some(11));
        map.close();
        let mut closed = map.take(&k1);
        let r = hooked("take after close", || poll_once(&mut closed, &w));
        assert_eq!(r, Poll::Ready(Err(WaitError::Closed)));
        drop((get, take, get_owned, take_owned, present, closed));
        assert_eq!(map.waiters(), 0);
        assert!(map.is_empty());
    });
}

// ---------------------------------------------------------------------------
// Keys and values dropped outside the lock.
// ---------------------------------------------------------------------------

type DropMap = AwaitMap<DropKey, DropVal>;

thread_local! {
    static DROP_MAP: RefCell<Weak<DropMap>> = const { RefCell::new(Weak::new()) };
    static KEY_DROPS: Cell<usize> = const { Cell::new(0) };
    static VAL_DROPS: Cell<usize> = const { Cell::new(0) };
    static LIVE_KEYS: Cell<isize> = const { Cell::new(0) };
    static LIVE_VALS: Cell<isize> = const { Cell::new(0) };
    static DROPPED_LOCKED: Cell<usize> = const { Cell::new(0) };
}

/// Called from `DropKey`/`DropVal::drop`: calls `len` on the thread's
/// `DROP_MAP`, unless its lock is held (that is recorded as a failure).
fn drop_hook() {
    if let Some(map) = DROP_MAP.with_borrow(Weak::upgrade) {
        if is_locked(&*map) {
            DROPPED_LOCKED.set(DROPPED_LOCKED.get() + 1);
        } else {
            let _ = map.len();
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DropKey(u64);

impl DropKey {
    fn new(k: u64) -> Self {
        LIVE_KEYS.set(LIVE_KEYS.get() + 1);
        DropKey(k)
    }
}

impl Clone for DropKey {
    fn clone(&self) -> Self {
        DropKey::new(self.0)
    }
}

impl Drop for DropKey {
    fn drop(&mut self) {
        LIVE_KEYS.set(LIVE_KEYS.get() - 1);
        KEY_DROPS.set(KEY_DROPS.get() + 1);
        drop_hook();
    }
}

#[derive(Debug, PartialEq, Eq)]
struct DropVal(u64);

impl DropVal {
    fn new(v: u64) -> Self {
        LIVE_VALS.set(LIVE_VALS.get() + 1);
        DropVal(v)
    }
}

impl Clone for DropVal {
    fn clone(&self) -> Self {
        DropVal::new(self.0)
    }
}

impl Drop for DropVal {
    fn drop(&mut self) {
        LIVE_VALS.set(LIVE_VALS.get() - 1);
        VAL_DROPS.set(VAL_DROPS.get() + 1);
        drop_hook();
    }
}

/// Runs `op` and checks it dropped exactly `keys` keys and `vals` values,
/// each with the map's lock released.
fn drops<R>(what: &str, keys: usize, vals: usize, op: impl FnOnce() -> R) -> R {
    let (k0, v0) = (KEY_DROPS.get(), VAL_DROPS.get());
    let r = op();
    assert_eq!(KEY_DROPS.get() - k0, keys, "{what}: keys dropped");
    assert_eq!(VAL_DROPS.get() - v0, vals, "{what}: values dropped");
    assert_eq!(
        DROPPED_LOCKED.get(),
        0,
        "{what}: a key or value was dropped under the lock"
    );
    r
}

/// Runs `body` with a fresh `DropMap`, then checks that dropping the map
/// leaves no key or value alive (none leaked, none dropped twice).
fn with_drop_map(what: &'static str, body: impl FnOnce(&Arc<DropMap>) + Send + 'static) {
    no_hang(what, move || {
        let map = Arc::new(DropMap::new());
        DROP_MAP.set(Arc::downgrade(&map));
        body(&map);
        assert_eq!(Arc::strong_count(&map), 1);
        drop(map);
        assert_eq!(LIVE_KEYS.get(), 0, "keys leaked or dropped twice");
        assert_eq!(LIVE_VALS.get(), 0, "values leaked or dropped twice");
        assert_eq!(DROPPED_LOCKED.get(), 0);
    });
}

// Guarantee 11: `insert` over an existing key drops the spare key outside the
// lock; the replaced value comes back to the caller.
#[test]
fn insert_over_an_existing_key_drops_the_spare_key_outside_the_lock() {
    with_drop_map("spare key", |map| {
        drops("first insert", 0, 0, || {
            map.insert(DropKey::new(1), DropVal::new(1))
        });
        let old = drops("second insert", 1, 0, || {
            map.insert(DropKey::new(1), DropVal::new(2))
        });
        assert!(matches!(old, Some(DropVal(1))));
        drops("dropping the replaced value", 0, 1, || drop(old));
        assert_eq!(map.len(), 1);
    });
}

// Guarantee 11: a `take` that empties an entry drops its key outside the lock,
// whether the value was there at the first poll or arrived later.
#[test]
fn take_drops_the_emptied_entry_key_outside_the_lock() {
    with_drop_map("take", |map| {
        let k = DropKey::new(1);
        let (_, w) = counting_waker();
        map.insert(DropKey::new(1), DropVal::new(1));
        let mut present = map.take(&k);
        // Two keys: the emptied entry's, and the owned key a `take` prepares
        // before its first lock in case it has to register.
        let v = drops("take of a present key", 2, 0, || {
            poll_once(&mut present, &w)
        });
        assert!(matches!(v, Poll::Ready(Ok(DropVal(1)))));
        drops("dropping the taken value", 0, 1, || drop(v));

        let mut waiting = map.take(&k);
        drops("take registering", 0, 0, || {
            assert!(poll_once(&mut waiting, &w).is_pending())
        });
        drops("insert waking it", 1, 0, || {
            map.insert(DropKey::new(1), DropVal::new(2))
        });
        let v = drops("take completing", 1, 0, || poll_once(&mut waiting, &w));
        assert!(matches!(v, Poll::Ready(Ok(DropVal(2)))));
        drop((v, present, waiting));
        assert!(map.is_empty());
    });
}

// Guarantee 11: `remove` drops the emptied entry's key outside the lock.
#[test]
fn remove_drops_the_emptied_entry_key_outside_the_lock() {
    with_drop_map("remove", |map| {
        let k = DropKey::new(1);
        map.insert(DropKey::new(1), DropVal::new(1));
        let v = drops("remove", 1, 0, || map.remove(&k));
        assert!(matches!(v, Some(DropVal(1))));
        drops("dropping the removed value", 0, 1, || drop(v));
        assert!(map.is_empty());
    });
}

// Guarantee 11: when a key's last waiter is dropped, the entry goes and its
// key is dropped outside the lock.
#[test]
fn dropping_the_last_waiter_drops_the_entry_key_outside_the_lock() {
    with_drop_map("last waiter", |map| {
        let k = DropKey::new(1);
        let (_, w) = counting_waker();
        let mut get = map.get(&k);
        let mut take = map.take(&k);
        let mut owned = map.get_owned(&k);
        assert!(poll_once(&mut get, &w).is_pending());
        assert!(poll_once(&mut take, &w).is_pending());
        assert!(poll_once(&mut owned, &w).is_pending());
        drops("first waiter dropped", 0, 0, || drop(get));
        drops("second waiter dropped", 0, 0, || drop(take));
        // The owned future's own key goes too.
        drops("last waiter dropped", 2, 0, || drop(owned));
        assert_eq!(map.waiters(), 0);
    });
}

// Guarantee 11: `cancel` and `close` that leave an entry empty drop its key
// outside the lock.
#[test]
fn cancel_and_close_drop_emptied_entry_keys_outside_the_lock() {
    with_drop_map("cancel and close", |map| {
        let (k1, k2) = (DropKey::new(1), DropKey::new(2));
        let (_, w) = counting_waker();
        let mut cancelled = map.get(&k1);
        assert!(poll_once(&mut cancelled, &w).is_pending());
        assert_eq!(drops("cancel", 1, 0, || map.cancel(&k1)), 1);
        let r = drops("cancelled poll", 0, 0, || poll_once(&mut cancelled, &w));
        assert_eq!(r, Poll::Ready(Err(WaitError::Cancelled)));

        let mut closed = map.take(&k2);
        assert!(poll_once(&mut closed, &w).is_pending());
        drops("close", 0, 0, || map.close());
        let r = drops("closed poll", 1, 0, || poll_once(&mut closed, &w));
        assert_eq!(r, Poll::Ready(Err(WaitError::Closed)));
        drop((cancelled, closed));
        assert_eq!(map.waiters(), 0);
    });
}

// Guarantee 11: `remove` of a value from an entry that only a failed waiter
// still names (its get was cancelled while a promise kept the entry, then the
// promise was fulfilled) drops the entry's key outside the lock.
#[test]
fn remove_that_leaves_only_a_failed_waiter_drops_the_key_outside_the_lock() {
    with_drop_map("remove past a failed waiter", |map| {
        let k = DropKey::new(1);
        let (_, w) = counting_waker();
        let promise = map.promise(DropKey::new(1)).expect("no value, no promise");
        let mut get = map.get(&k);
        assert!(poll_once(&mut get, &w).is_pending());
        // The promise keeps the entry: the failed get stays in it.
        assert_eq!(drops("cancel", 0, 0, || map.cancel(&k)), 1);
        drops("fulfill", 0, 0, || promise.fulfill(DropVal::new(7)));
        let v = drops("remove", 1, 0, || map.remove(&k));
        assert!(matches!(v, Some(DropVal(7))));
        drops("dropping the removed value", 0, 1, || drop(v));
        let r = drops("the failed get's poll", 0, 0, || poll_once(&mut get, &w));
        assert_eq!(r, Poll::Ready(Err(WaitError::Cancelled)));
        drop(get);
        assert!(map.is_empty());
        assert_eq!(map.waiters(), 0);
    });
}

// ---------------------------------------------------------------------------
// The producer side: the same rules.
// ---------------------------------------------------------------------------

// Guarantee 11 on the producer side: `promise`, `get_or_promise`, `try_insert`
// and the demand's copy of a newly wanted key hash and clone keys outside the
// lock, so a key whose `Hash` or `Clone` calls into the map does not deadlock.
#[test]
fn producer_side_key_hash_and_clone_run_outside_the_lock() {
    no_hang("producer key hooks", || {
        let map = Arc::new(HookMap::new().with_limit(1));
        HOOK_MAP.set(Arc::downgrade(&map));
        let (_, w) = counting_waker();
        let promise = hooked("promise", || map.promise(HookKey(1))).expect("key 1 is free");
        let mut co = map.get_or_promise(&HookKey(2));
        let got = hooked("get_or_promise of a new key", || poll_once(&mut co, &w));
        let Poll::Ready(Ok(awaitmap::ValueOrPromise::Promise(second))) = got else {
            panic!("the first caller on key 2 is its producer");
        };
        let demand = map.demand();
        let mut want = map.get(&HookKey(3));
        // The registering future copies its key for the demand queue.
        hooked("a wanted key announced", || {
            assert!(poll_once(&mut want, &w).is_pending())
        });
        hooked("try_insert", || map.try_insert(HookKey(4), 4)).expect("room for one");
        let refused = hooked("try_insert when full", || map.try_insert(HookKey(5), 5));
        assert_eq!(refused, Err((HookKey(5), 5)));
        drop(demand);
        drop(want);
        promise.fulfill(1);
        drop(second);
        assert_eq!(map.waiters(), 0);
    });
}

// Guarantee 11 on the producer side: keys and values the map lets go of are
// dropped with the lock released: a refused promise's key, an abandoned
// promise's emptied entry, a replaced value `fulfill` hands back, a key the
// demand skips or still holds when its last handle goes.
#[test]
fn producer_side_drops_keys_and_values_outside_the_lock() {
    with_drop_map("producer drops", |map| {
        let (_, w) = counting_waker();
        map.insert(DropKey::new(1), DropVal::new(1));
        let refused = drops("promise of a key with a value", 1, 0, || {
            map.promise(DropKey::new(1))
        });
        assert!(refused.is_none());

        let promise = drops("promise of a new key", 0, 0, || {
            map.promise(DropKey::new(2))
        })
        .expect("key 2 is free");
        drops("abandoning it empties the entry", 1, 0, || drop(promise));

        let promise = map.promise(DropKey::new(3)).expect("key 3 is free");
        map.insert(DropKey::new(3), DropVal::new(30));
        let old = drops("fulfill over a plain insert", 0, 0, || {
            promise.fulfill(DropVal::new(31))
        });
        assert!(matches!(old, Some(DropVal(30))));
        drops("the replaced value", 0, 1, || drop(old));

        let demand = map.demand();
        let k4 = DropKey::new(4);
        let mut gone = map.get(&k4);
        assert!(poll_once(&mut gone, &w).is_pending());
        // The waiter leaves: the entry's key goes; the queued copy stays.
        drops("the only waiter leaves", 1, 0, || drop(gone));
        let k5 = DropKey::new(5);
        let mut stays = map.get(&k5);
        assert!(poll_once(&mut stays, &w).is_pending());
        let next = drops("next skips key 4", 1, 0, || {
            futures::FutureExt::now_or_never(demand.next())
        });
        assert!(matches!(next, Some(Some(DropKey(5)))));
        drop(next);
        let k6 = DropKey::new(6);
        let mut queued = map.get(&k6);
        assert!(poll_once(&mut queued, &w).is_pending());
        drops(
            "the last demand handle goes with a key queued",
            1,
            0,
            || drop(demand),
        );
        drop((stays, queued));
        drop((k4, k5, k6));
    });
}

// ---------------------------------------------------------------------------
// Panics outside the lock: nothing lost, no wake-up or notification skipped.
//
// The contract: after a panic in user code (a waker's clone, wake or drop, a
// key's `Hash` or `Drop`, a value's `Drop`, `Eq`), caught by the caller, no
// value is destroyed unless that very call was replacing or removing it,
// every waiter due a wake-up is woken, every map-wide condition that became
// true (`drained()`, room under a limit, `closed()`, demand) is told, and the
// map stays usable. A waker that calls back into the map (allowed) opens the
// windows these tests use: a future polled from another waker's `wake`,
// before its own turn in the wake-up queue, still has its waker stored.
// ---------------------------------------------------------------------------

/// A second key, for futures that must not be woken by inserts of [`KEY`].
const OTHER: u64 = 2;

/// A future shared with a hook: hooks are `'static`, so the futures they poll
/// or drop live behind one of these.
type Slot<F> = Arc<Mutex<Option<F>>>;

fn slot<F>(fut: F) -> Slot<F> {
    Arc::new(Mutex::new(Some(fut)))
}

/// Polls the future in `slot` (which must be there) once.
fn poll_slot<F: Future + Unpin>(slot: &Slot<F>, w: &Waker) -> Poll<F::Output> {
    let mut fut = slot.lock().unwrap();
    poll_once(fut.as_mut().expect("the future is in its slot"), w)
}

/// Polls `fut` once, catching a panic: `Err` holds its message.
fn try_poll<F: Future + Unpin>(fut: &mut F, w: &Waker) -> Result<Poll<F::Output>, String> {
    panic::catch_unwind(AssertUnwindSafe(|| poll_once(fut, w))).map_err(common::panic_message)
}

/// Hooks whose handles panic on the first drop after the returned flag is
/// set (so registering, which drops the registration handle, stays quiet).
fn drop_bomb(map: &Arc<Map>) -> (Arc<Hooks>, Arc<AtomicBool>) {
    let armed = Arc::new(AtomicBool::new(false));
    let hooks = {
        let armed = Arc::clone(&armed);
        Hooks::new(map, move |_, ev| {
            if ev == Event::Drop && armed.swap(false, SeqCst) {
                panic!("hostile waker: drop panics");
            }
            false
        })
    };
    (hooks, armed)
}

/// Hooks whose `wake` runs `f` (once per wake-up).
fn on_wake(map: &Arc<Map>, f: impl Fn(&Arc<Map>) + Send + Sync + 'static) -> Arc<Hooks> {
    Hooks::new(map, move |m, ev| {
        let due = matches!(ev, Event::Wake | Event::WakeByRef);
        if due {
            f(m);
        }
        due
    })
}

/// A key whose value fills a map limited to one value.
const FILL: u64 = 3;

/// A take of [`KEY`] resolving while the waker it stored panics when the map
/// drops it. The take is polled from the `wake` of a get of the same key:
/// `insert` queues the gets before the take, so the get's `wake` runs while
/// the take's waker is still stored. That `wake` polls the take, catching
/// its panic; with `get_first`, it polls the get itself before (so the take
/// is the last waiter). The map is limited to one value and full
/// ([`FILL`]), and a producer waits in `insert_async` for room.
struct TakeInWake<'a> {
    /// What polling the take gave, or the message it panicked with.
    outcome: Result<Poll<Result<u64, WaitError>>, String>,
    /// Whether the take's stored waker was dropped (its drop panicked).
    dropped: bool,
    /// The producer waiting for room.
    producer: InsertAsync<'a, u64, u64>,
    producer_wakes: Arc<CountingWaker>,
    producer_waker: Waker,
    /// A `drained()` future polled while both futures waited.
    drained: Drained<'a, u64, u64>,
    drained_wakes: Arc<CountingWaker>,
    hooks: Vec<Arc<Hooks>>,
}

fn take_resolved_in_a_wake(map: &Arc<Map>, get_first: bool) -> TakeInWake<'_> {
    assert_eq!(map.limit(), Some(1));
    map.insert(FILL, 0);
    let (producer_wakes, producer_waker) = counting_waker();
    let mut producer = map.insert_async(OTHER, 50);
    assert!(poll_once(&mut producer, &producer_waker).is_pending());

    let (bomb, armed) = drop_bomb(map);
    let take = slot(map.take_owned(&KEY));
    let outcome = Arc::new(Mutex::new(None));
    let get = slot(map.get_owned(&KEY));
    let runs = {
        let (get, take, outcome) = (Arc::clone(&get), Arc::clone(&take), Arc::clone(&outcome));
        on_wake(map, move |_| {
            let (_, w) = counting_waker();
            if get_first {
                assert_eq!(poll_slot(&get, &w), Poll::Ready(Ok(7)));
            }
            let mut t = take.lock().unwrap();
            let r = try_poll(t.as_mut().expect("the take is in its slot"), &w);
            *outcome.lock().unwrap() = Some(r);
        })
    };
    // The get registers first: its waker is the first one woken, while the
    // take's is still stored in the map.
    assert!(poll_slot(&get, &runs.waker()).is_pending());
    assert!(poll_slot(&take, &bomb.waker()).is_pending());
    armed.store(true, SeqCst);

    let mut drained = map.drained();
    let (drained_wakes, dw) = counting_waker();
    assert!(poll_once(&mut drained, &dw).is_pending());
    assert_eq!(map.insert(KEY, 7), None);
    assert_eq!(runs.acted(), 1, "the get's wake did not run");
    let outcome = outcome.lock().unwrap().take().expect("the take was polled");
    // Break the cycles through the hooks (the futures hold the map); a get
    // that did not complete deregisters.
    drop(get.lock().unwrap().take());
    drop(take.lock().unwrap().take());
    TakeInWake {
        outcome,
        dropped: !armed.load(SeqCst),
        producer,
        producer_wakes,
        producer_waker,
        drained,
        drained_wakes,
        hooks: vec![bomb, runs],
    }
}

/// The value the take returned, if it returned one.
fn returned(outcome: &Result<Poll<Result<u64, WaitError>>, String>) -> Option<u64> {
    match outcome {
        Ok(Poll::Ready(Ok(v))) => Some(*v),
        Ok(Poll::Pending) | Err(_) => None,
        Ok(Poll::Ready(Err(e))) => panic!("the take failed: {e:?}"),
    }
}

/// A fresh take of `key`: the value if the map holds it, `None` if it waits.
fn take_now(map: &Map, key: u64) -> Option<u64> {
    let (_, w) = counting_waker();
    match poll_once(&mut map.take(&key), &w) {
        Poll::Ready(Ok(v)) => Some(v),
        Poll::Pending => None,
        Poll::Ready(Err(e)) => panic!("a fresh take failed: {e:?}"),
    }
}

// Guarantee 11, regression: a take resolved while the waker it had stored
// panicked on drop; the poll unwound with the value it had moved out, which
// was destroyed: neither returned nor left in the map. Nor was the producer
// waiting for room under the limit told that the value had left.
#[test]
fn take_resolving_while_its_stored_waker_panics_on_drop_loses_no_value() {
    no_hang("take resolves, stored waker panics", || {
        let map = Arc::new(Map::new().with_limit(1));
        let scene = take_resolved_in_a_wake(&map, false);
        assert!(
            scene.dropped,
            "the take's stored waker was not dropped: the test no longer covers \
             a take resolving while its waker is stored"
        );
        let returned = returned(&scene.outcome);
        let in_map = map.contains_key(&KEY);
        let told = scene.producer_wakes.wakes() > 0;
        let kept = if in_map { take_now(&map, KEY) } else { None };
        match (returned, kept) {
            (Some(7), None) | (None, Some(7)) => {}
            (None, None) => panic!(
                "the value was destroyed: the take's poll gave {:?} and the map no \
                 longer holds it",
                scene.outcome
            ),
            other => panic!("the value went astray (returned, kept): {other:?}"),
        }
        assert!(
            in_map || told,
            "the value left the full map, but the producer waiting for room was \
             never woken"
        );
        assert!(
            scene.producer_wakes.wakes() > 0,
            "the producer waiting for room was never woken"
        );
        assert_eq!(map.len(), 1, "only the filler is left");
        assert_eq!(map.waiters(), 0);
        assert_clean(&scene.hooks);
    });
}

// Guarantee 11, regression: the same take, polled after the get that ran its
// poll had completed, was the last waiter; its poll unwound before it told
// the `drained()` futures (or the producers waiting for room), and they were
// never woken. (Where polling the get already woke the take, it resolves
// plainly; the checks hold either way.)
#[test]
fn take_resolving_while_its_stored_waker_panics_on_drop_still_tells_drained_and_producers() {
    no_hang("take resolves, conditions told", || {
        let map = Arc::new(Map::new().with_limit(1));
        let mut scene = take_resolved_in_a_wake(&map, true);
        // Checked before anything else touches the map.
        if map.waiters() == 0 {
            assert!(
                scene.drained_wakes.wakes() > 0,
                "no waiter is left, but the drained() future was never woken"
            );
        }
        if !map.contains_key(&KEY) {
            assert!(
                scene.producer_wakes.wakes() > 0,
                "the value left the full map, but the producer waiting for room \
                 was never woken"
            );
        }
        // However the take ended, the value is somewhere; once it has left
        // the map, the producer is told and the map is drained.
        if returned(&scene.outcome).is_none() {
            assert_eq!(take_now(&map, KEY), Some(7), "the value was destroyed");
        }
        assert_eq!(map.waiters(), 0);
        assert!(scene.drained_wakes.wakes() > 0, "drained() was never woken");
        assert_eq!(
            poll_once(&mut scene.drained, &scene.producer_waker),
            Poll::Ready(())
        );
        assert!(
            scene.producer_wakes.wakes() > 0,
            "the producer waiting for room was never woken"
        );
        // Still usable: with the filler gone too, the producer gets in.
        assert_eq!(map.remove(&FILL), Some(0));
        assert_eq!(
            poll_once(&mut scene.producer, &scene.producer_waker),
            Poll::Ready(None)
        );
        assert_eq!(map.try_get(&OTHER), Some(50));
        assert_eq!(map.len(), 1);
        assert_clean(&scene.hooks);
    });
}

// Guarantee 11, regression: a take that held the hand-off of a value was
// dropped while its stored waker panicked on drop; the hand-off passed to
// the next take, but that take's waker, popped for waking, was dropped
// un-woken by the unwinding drop. It waited forever with the value present,
// and no later insert woke it (it counted as woken).
#[test]
fn dropping_a_woken_take_whose_stored_waker_panics_on_drop_wakes_the_next_take() {
    no_hang("baton pass, stored waker panics", || {
        let map = Arc::new(Map::new());
        let (bomb, armed) = drop_bomb(&map);
        let first = slot(map.take_owned(&KEY));
        let (c2, w2) = counting_waker();
        let mut second = map.take(&KEY);
        // Woken first by the insert, while the first take's waker is still
        // stored: drops the first take, which holds the hand-off.
        let panicked = Arc::new(Mutex::new(None));
        let dropper = {
            let (first, panicked) = (Arc::clone(&first), Arc::clone(&panicked));
            on_wake(&map, move |_| {
                let t = first.lock().unwrap().take();
                let r = panic::catch_unwind(AssertUnwindSafe(|| drop(t)));
                *panicked.lock().unwrap() = Some(r.is_err());
            })
        };
        // The get registers first: its waker is the first one woken, while
        // the first take's is still stored in the map.
        let mut get = map.get(&KEY);
        register(&mut get, &dropper);
        assert!(poll_slot(&first, &bomb.waker()).is_pending());
        armed.store(true, SeqCst);
        assert!(poll_once(&mut second, &w2).is_pending());

        assert_eq!(map.insert(KEY, 5), None);
        assert!(
            panicked.lock().unwrap().is_some(),
            "the first take was not dropped"
        );
        assert!(
            !armed.load(SeqCst),
            "the first take's stored waker was not dropped: the test no longer \
             covers it"
        );
        assert_eq!(
            c2.wakes(),
            1,
            "the hand-off passed to the second take, but its waker was never \
             woken: it would wait forever with the value present"
        );
        let (_, w) = counting_waker();
        assert_eq!(poll_once(&mut get, &w), Poll::Ready(Ok(5)));
        assert_eq!(poll_once(&mut second, &w), Poll::Ready(Ok(5)));
        assert!(map.is_empty());
        assert_eq!(map.waiters(), 0);
        drop((second, get));
        assert_clean(&[bomb, dropper]);
    });
}

// Guarantee 11, regression: a get was dropped (from another waker's `wake`,
// with wake-ups still queued) while its stored waker panicked on drop; the
// waker its drop had popped for another key's take was dropped un-woken, so
// that take never learnt that its value had arrived.
#[test]
fn dropping_a_get_whose_stored_waker_panics_on_drop_loses_no_other_wake_up() {
    no_hang("get dropped, stored waker panics", || {
        let map = Arc::new(Map::new());
        let (bomb, armed) = drop_bomb(&map);
        let doomed = slot(map.get_owned(&OTHER));
        assert!(poll_slot(&doomed, &bomb.waker()).is_pending());
        armed.store(true, SeqCst);
        let panicked = Arc::new(Mutex::new(None));
        let dropper = {
            let (doomed, panicked) = (Arc::clone(&doomed), Arc::clone(&panicked));
            on_wake(&map, move |_| {
                let g = doomed.lock().unwrap().take();
                let r = panic::catch_unwind(AssertUnwindSafe(|| drop(g)));
                *panicked.lock().unwrap() = Some(r.is_err());
            })
        };
        let mut get = map.get(&KEY);
        register(&mut get, &dropper);
        let (ct, wt) = counting_waker();
        let mut take = map.take(&KEY);
        assert!(poll_once(&mut take, &wt).is_pending());

        assert_eq!(map.insert(KEY, 5), None);
        assert!(
            panicked.lock().unwrap().is_some(),
            "the get was not dropped"
        );
        assert!(
            !armed.load(SeqCst),
            "the get's stored waker was not dropped"
        );
        assert_eq!(
            ct.wakes(),
            1,
            "the take was due a wake-up for the value, but was never woken"
        );
        let (_, w) = counting_waker();
        assert_eq!(poll_once(&mut get, &w), Poll::Ready(Ok(5)));
        assert_eq!(poll_once(&mut take, &w), Poll::Ready(Ok(5)));
        assert_eq!(map.waiters(), 0);
        assert!(map.is_empty());
        drop((get, take));
        assert_clean(&[bomb, dropper]);
    });
}

thread_local! {
    /// A key id whose next drop panics (then the bomb is spent).
    static KEY_BOMB: Cell<Option<u64>> = const { Cell::new(None) };
    static HASH_PANICS: Cell<bool> = const { Cell::new(false) };
    /// A value id whose next drop panics (then the bomb is spent).
    static VAL_BOMB: Cell<Option<u64>> = const { Cell::new(None) };
}

/// A key whose `Hash` is the same for every key, so every lookup runs `Eq`
/// against the other keys, and whose `Eq` panics while `EQ_PANICS` is set.
#[derive(Clone, Debug)]
struct CollidingKey(u64);

impl PartialEq for CollidingKey {
    fn eq(&self, other: &Self) -> bool {
        if EQ_PANICS.get() {
            panic!("hostile key: Eq panics");
        }
        self.0 == other.0
    }
}

impl Eq for CollidingKey {}

impl Hash for CollidingKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        0_u64.hash(state);
    }
}

// Guarantee 11, regression: a get_or_promise whose producer abandoned frees
// its node and starts over; when the fresh lookup's `Eq` panicked, the poll
// unwound before it told the `drained()` futures that the last waiter had
// gone, and they were never woken.
#[test]
fn get_or_promise_restarting_with_a_panicking_eq_still_tells_drained() {
    no_hang("get_or_promise restart, Eq panics", || {
        let map: AwaitMap<CollidingKey, u64> = AwaitMap::new();
        let (k1, k2) = (CollidingKey(1), CollidingKey(2));
        map.insert(k2.clone(), 20); // shares the hash: the probe compares it
        let promise = map.promise(k1.clone()).expect("key 1 is free");
        let (cg, wg) = counting_waker();
        let mut waiting = map.get_or_promise(&k1);
        assert!(poll_once(&mut waiting, &wg).is_pending());
        let (dc, dw) = counting_waker();
        let mut drained = map.drained();
        assert!(poll_once(&mut drained, &dw).is_pending());

        drop(promise);
        assert_eq!(cg.wakes(), 1, "the waiting caller was not told");
        EQ_PANICS.set(true);
        expect_panic(&map, "the restart's lookup", || {
            poll_once(&mut waiting, &wg)
        });
        EQ_PANICS.set(false);
        assert_eq!(map.waiters(), 0);
        assert!(
            dc.wakes() > 0,
            "the last waiter is gone, but the drained() future was never woken"
        );
        assert_eq!(poll_once(&mut drained, &dw), Poll::Ready(()));

        // The caller starts over and becomes the producer.
        match poll_once(&mut waiting, &wg) {
            Poll::Ready(Ok(awaitmap::ValueOrPromise::Promise(p))) => {
                assert_eq!(p.fulfill(10), None);
            }
            other => panic!("the restarted caller should produce key 1: {other:?}"),
        }
        assert_eq!(map.try_get(&k1), Some(10));
        assert_eq!(map.try_get(&k2), Some(20));
        assert_eq!(map.waiters(), 0);
    });
}

/// A `Wake` waker that runs `on_wake` at each wake-up and `on_drop` when its
/// last handle goes; for maps whose key type the [`Hooks`] do not serve.
struct FnWaker {
    on_wake: Box<dyn Fn() + Send + Sync>,
    on_drop: Box<dyn Fn() + Send + Sync>,
}

impl FnWaker {
    fn waker(
        on_wake: impl Fn() + Send + Sync + 'static,
        on_drop: impl Fn() + Send + Sync + 'static,
    ) -> Waker {
        Waker::from(Arc::new(FnWaker {
            on_wake: Box::new(on_wake),
            on_drop: Box::new(on_drop),
        }))
    }
}

impl Wake for FnWaker {
    fn wake(self: Arc<Self>) {
        (self.on_wake)();
    }
}

impl Drop for FnWaker {
    fn drop(&mut self) {
        (self.on_drop)();
    }
}

// Guarantee 11: a take resolved while its stored waker panics on drop puts
// its value back under its own key, found by `Eq` among keys that share its
// hash: another key present in the map is not mistaken for it (the value
// would then be dropped as if a newer one had arrived).
#[test]
fn take_resolving_while_its_stored_waker_panics_puts_the_value_back_beside_a_colliding_key() {
    no_hang(
        "take resolves beside a colliding key, stored waker panics",
        || {
            let map: Arc<AwaitMap<CollidingKey, u64>> = Arc::new(AwaitMap::new());
            let (k1, k2) = (CollidingKey(1), CollidingKey(2));
            map.insert(k2.clone(), 20); // shares the hash: every lookup compares it
            let bombed = Arc::new(AtomicBool::new(false));
            let take = slot(map.take_owned(&k1));
            let bomb = {
                let bombed = Arc::clone(&bombed);
                FnWaker::waker(
                    || {},
                    move || {
                        bombed.store(true, SeqCst);
                        panic!("hostile waker: drop panics");
                    },
                )
            };
            let outcome = Arc::new(Mutex::new(None));
            let runs = {
                let (take, outcome) = (Arc::clone(&take), Arc::clone(&outcome));
                FnWaker::waker(
                    move || {
                        let (_, w) = counting_waker();
                        let mut t = take.lock().unwrap();
                        let r = try_poll(t.as_mut().expect("the take is in its slot"), &w);
                        *outcome.lock().unwrap() = Some(r);
                    },
                    || {},
                )
            };
            // The get registers first, so its wake runs (and polls the take)
            // while the take's waker is still stored.
            let mut get = map.get(&k1);
            assert!(poll_once(&mut get, &runs).is_pending());
            drop(runs);
            assert!(poll_slot(&take, &bomb).is_pending());
            drop(bomb); // the map holds the only handle

            assert_eq!(map.insert(k1.clone(), 7), None);
            assert!(
                bombed.load(SeqCst),
                "the take's stored waker was not dropped"
            );
            let outcome = outcome.lock().unwrap().take().expect("the take was polled");
            drop(take.lock().unwrap().take());
            let returned = returned(&outcome);
            let kept = map.try_get(&k1);
            assert!(
                matches!((returned, kept), (Some(7), None) | (None, Some(7))),
                "the value went astray: the take's poll gave {outcome:?}, the map holds {kept:?}"
            );
            assert_eq!(
                map.try_get(&k2),
                Some(20),
                "the colliding key's value changed"
            );
            let (_, w) = counting_waker();
            assert_eq!(poll_once(&mut get, &w), Poll::Ready(Ok(7)));
            drop(get);
            assert_eq!(map.waiters(), 0);
            assert_eq!(map.len(), 1 + usize::from(kept.is_some()));
        },
    );
}

// Guarantee 11: a get resolved while its stored waker panics on drop gives
// nothing back to the map: what it holds is a clone. Here the waker's drop
// first removes the key, so a clone put back would bring a removed value
// back to life.
#[test]
fn get_resolving_while_its_stored_waker_panics_puts_back_no_clone() {
    no_hang(
        "get resolves, stored waker removes its key and panics",
        || {
            let map = Arc::new(Map::new());
            let armed = Arc::new(AtomicBool::new(false));
            let removed = Arc::new(Mutex::new(None));
            let bomb = {
                let (armed, removed) = (Arc::clone(&armed), Arc::clone(&removed));
                Hooks::new(&map, move |m, ev| {
                    if ev == Event::Drop && armed.swap(false, SeqCst) {
                        *removed.lock().unwrap() = Some(m.remove(&KEY));
                        panic!("hostile waker: drop removes the key and panics");
                    }
                    false
                })
            };
            let late = slot(map.get_owned(&KEY));
            let outcome = Arc::new(Mutex::new(None));
            let runs = {
                let (late, outcome) = (Arc::clone(&late), Arc::clone(&outcome));
                on_wake(&map, move |_| {
                    let (_, w) = counting_waker();
                    let mut g = late.lock().unwrap();
                    let r = try_poll(g.as_mut().expect("the get is in its slot"), &w);
                    *outcome.lock().unwrap() = Some(r);
                })
            };
            // The first get's wake polls the late get while its waker is stored.
            let mut first = map.get(&KEY);
            assert!(poll_once(&mut first, &runs.waker()).is_pending());
            assert!(poll_slot(&late, &bomb.waker()).is_pending());
            armed.store(true, SeqCst);

            assert_eq!(map.insert(KEY, 7), None);
            assert_eq!(runs.acted(), 1, "the first get's wake did not run");
            assert!(
                !armed.load(SeqCst),
                "the late get's stored waker was not dropped"
            );
            let outcome = outcome
                .lock()
                .unwrap()
                .take()
                .expect("the late get was polled");
            drop(late.lock().unwrap().take());
            assert!(
                matches!(outcome, Ok(Poll::Ready(Ok(7))) | Err(_)),
                "the late get's poll gave {outcome:?}"
            );
            assert_eq!(
                *removed.lock().unwrap(),
                Some(Some(7)),
                "the waker's remove"
            );
            assert!(
                !map.contains_key(&KEY),
                "the key was removed, but the late get's clone was put back"
            );
            // The first get was woken for a value that is gone: it waits again,
            // and the next value reaches it.
            let (c, w) = counting_waker();
            assert_eq!(poll_once(&mut first, &w), Poll::Pending);
            assert_eq!(map.insert(KEY, 8), None);
            assert_eq!(
                c.wakes(),
                1,
                "the first get was not woken by the next value"
            );
            assert_eq!(poll_once(&mut first, &w), Poll::Ready(Ok(8)));
            drop(first);
            assert_eq!(map.waiters(), 0);
            assert_clean(&[bomb, runs]);
        },
    );
}

/// A key that panics when dropped while `KEY_BOMB` names its id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BombKey(u64);

impl Drop for BombKey {
    fn drop(&mut self) {
        if KEY_BOMB.get() == Some(self.0) {
            KEY_BOMB.set(None);
            panic!("hostile key: Drop panics");
        }
    }
}

type BombKeyMap = AwaitMap<BombKey, u64>;

/// Runs `op`, which must panic from the drop of key `id` (armed here), and
/// checks the bomb went off and the lock is free.
fn key_drop_panics<R>(map: &BombKeyMap, id: u64, what: &str, op: impl FnOnce() -> R) {
    KEY_BOMB.set(Some(id));
    expect_panic(map, what, op);
    let unspent = KEY_BOMB.replace(None).is_some();
    assert!(!unspent, "{what}: no key was dropped");
}

// Guarantee 11, regression: `insert` of a key that had an entry (a waiting
// get) dropped the spare key before it woke the get; a panicking `K::drop`
// left the value stored but the get's waker, popped for waking, dropped
// un-woken: the get never learnt of the value.
#[test]
fn insert_whose_spare_key_panics_on_drop_still_wakes_the_waiters() {
    no_hang("spare key panics on drop", || {
        let map = BombKeyMap::new();
        let k = BombKey(1);
        let (cg, wg) = counting_waker();
        let (ct, wt) = counting_waker();
        let mut get = map.get(&k);
        let mut take = map.take(&k);
        assert!(poll_once(&mut get, &wg).is_pending());
        assert!(poll_once(&mut take, &wt).is_pending());

        key_drop_panics(&map, 1, "insert over waiters", || map.insert(BombKey(1), 7));
        assert_eq!(map.try_get(&k), Some(7), "the value was not stored");
        assert_eq!(cg.wakes(), 1, "the waiting get was never woken");
        assert_eq!(ct.wakes(), 1, "the waiting take was never woken");
        let (_, w) = counting_waker();
        assert_eq!(poll_once(&mut get, &w), Poll::Ready(Ok(7)));
        assert_eq!(poll_once(&mut take, &w), Poll::Ready(Ok(7)));
        assert_eq!(map.waiters(), 0);
        assert!(map.is_empty());
        // Usable: the key comes and goes as usual.
        assert_eq!(map.insert(BombKey(1), 8), None);
        assert_eq!(map.remove(&k), Some(8));
    });
}

static CLONE_PANICS_VTABLE: RawWakerVTable =
    RawWakerVTable::new(clone_panics, ignore_waker, ignore_waker, ignore_waker);

unsafe fn clone_panics(_: *const ()) -> RawWaker {
    panic!("hostile waker: clone panics");
}

unsafe fn ignore_waker(_: *const ()) {}

/// A waker whose `clone` panics; waking or dropping it does nothing.
fn clone_panicking_waker() -> Waker {
    // SAFETY: the data pointer is never read; `clone` never returns, and
    // `wake`, `wake_by_ref` and `drop` do nothing, which is sound for any
    // pointer and from any thread.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &CLONE_PANICS_VTABLE)) }
}

// Guarantee 11, regression: a take woken for a value that a fresh take got
// first was polled again with a waker whose `clone` panicked; its node stayed
// marked as woken, so the next insert handed it the value without waking
// anyone, and the take behind it starved with the value present.
#[test]
fn take_whose_new_waker_panics_on_clone_does_not_starve_the_next_take() {
    no_hang("waker clone panics", || {
        let map = Map::new();
        let (c1, w1) = counting_waker();
        let (c2, w2) = counting_waker();
        let mut first = map.take(&KEY);
        let mut second = map.take(&KEY);
        assert!(poll_once(&mut first, &w1).is_pending());
        assert!(poll_once(&mut second, &w2).is_pending());
        assert_eq!(map.insert(KEY, 5), None);
        assert_eq!((c1.wakes(), c2.wakes()), (1, 0));
        // A newer take gets the value first.
        assert_eq!(take_now(&map, KEY), Some(5));
        expect_panic(&map, "a poll with a waker whose clone panics", || {
            poll_once(&mut first, &clone_panicking_waker())
        });

        assert_eq!(map.insert(KEY, 6), None);
        assert_eq!(
            c2.wakes(),
            1,
            "the second take was never woken for the new value"
        );
        let (_, w) = counting_waker();
        assert_eq!(poll_once(&mut second, &w), Poll::Ready(Ok(6)));
        assert!(map.is_empty());
        // The first take, polled again, waits for a later value.
        let again = poll_once(&mut first, &w1);
        assert!(again.is_pending(), "no value is left for it: {again:?}");
        assert_eq!(map.insert(KEY, 7), None);
        assert_eq!(poll_once(&mut first, &w), Poll::Ready(Ok(7)));
        assert_eq!(map.waiters(), 0);
        assert!(map.is_empty());
    });
}

// Guarantees 5 and 11: a waiting get polled again with a waker whose `clone`
// panics leaves its key's waiters, and is then a future that starts over: the
// place it held may go to another future, and dropping it afterwards must not
// take that place away (the other would never be woken).
#[test]
fn get_whose_new_waker_panics_on_clone_leaves_and_takes_no_other_place() {
    no_hang("get's waker clone panics", || {
        let map = Map::new();
        let (c0, w0) = counting_waker();
        let (c1, w1) = counting_waker();
        let (c2, w2) = counting_waker();
        // The first get keeps the key's entry alive throughout.
        let mut anchor = map.get(&KEY);
        let mut first = map.get(&KEY);
        assert!(poll_once(&mut anchor, &w0).is_pending());
        assert!(poll_once(&mut first, &w1).is_pending());
        assert_eq!(map.waiters(), 2);
        expect_panic(&map, "a poll with a waker whose clone panics", || {
            poll_once(&mut first, &clone_panicking_waker())
        });
        assert_eq!(map.waiters(), 1, "the panicked poll left the key's waiters");
        let mut second = map.get(&KEY);
        assert!(poll_once(&mut second, &w2).is_pending());
        drop(first);
        assert_eq!(
            map.waiters(),
            2,
            "dropping the future that had left took another future's place"
        );
        assert_eq!(map.insert(KEY, 9), None);
        assert_eq!((c0.wakes(), c1.wakes(), c2.wakes()), (1, 0, 1));
        let (_, w) = counting_waker();
        assert_eq!(poll_once(&mut second, &w), Poll::Ready(Ok(9)));
        assert_eq!(poll_once(&mut anchor, &w), Poll::Ready(Ok(9)));
        assert_eq!(map.waiters(), 0);
    });
}

// Guarantee 11 and the claim's reservation: a claim's first poll with a
// waker whose `clone` panics changes nothing: the claim stays registered, so
// the reply is still accepted, and its next poll hands the map its waker,
// which the reply then wakes.
#[test]
fn claim_whose_first_waker_panics_on_clone_keeps_its_reservation() {
    no_hang("claim's waker clone panics", || {
        let map = Map::new();
        let mut claim = map.claim(KEY);
        expect_panic(
            &map,
            "a claim's poll with a waker whose clone panics",
            || poll_once(&mut claim, &clone_panicking_waker()),
        );
        assert_eq!(map.waiters(), 1, "the claim lost its reservation");
        let (c, w) = counting_waker();
        assert!(poll_once(&mut claim, &w).is_pending());
        assert_eq!(map.deliver(KEY, 4), Ok(None), "the reply was refused");
        assert_eq!(c.wakes(), 1, "the claim's waker was not stored");
        assert_eq!(poll_once(&mut claim, &w), Poll::Ready(Ok(4)));
        assert_eq!((map.waiters(), map.len()), (0, 0));
    });
}

thread_local! {
    /// Run by the next `ReentrantKey` clone (then unarmed).
    static ON_KEY_CLONE: RefCell<Option<Box<dyn FnOnce()>>> = RefCell::new(None);
    /// Whether the next `ReentrantKey` drop panics (then unarmed).
    static KEY_DROP_PANICS: Cell<bool> = const { Cell::new(false) };
}

/// A key whose `Clone` may call into the map and whose `Drop` may panic.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ReentrantKey(u64);

impl Clone for ReentrantKey {
    fn clone(&self) -> Self {
        if let Some(hook) = ON_KEY_CLONE.take() {
            hook();
        }
        ReentrantKey(self.0)
    }
}

impl Drop for ReentrantKey {
    fn drop(&mut self) {
        if KEY_DROP_PANICS.replace(false) {
            panic!("hostile key: drop panics");
        }
    }
}

// Guarantees 5 and 11: a get's first poll copies its key for a new entry;
// that copy waits for the key on another future, so the get joins that
// entry and its copy is dropped spare, after the get registered, and the
// drop panics. The panicked get leaves the key's waiters (nothing is left
// waiting for a future that believes it never registered) and, polled again,
// starts over; both gets then receive the value.
#[test]
fn get_whose_spare_key_panics_on_drop_after_it_registered_leaves_nothing_behind() {
    no_hang("spare key drop panics", || {
        let map = Arc::new(AwaitMap::<ReentrantKey, u64>::new());
        let other = Arc::new(Mutex::new(None));
        let (c0, w0) = counting_waker();
        let (c1, w1) = counting_waker();
        {
            let (map, other, w0) = (Arc::clone(&map), Arc::clone(&other), w0.clone());
            ON_KEY_CLONE.set(Some(Box::new(move || {
                let mut get = map.get_owned(&ReentrantKey(1));
                assert!(poll_once(&mut get, &w0).is_pending());
                *other.lock().unwrap() = Some(get);
                KEY_DROP_PANICS.set(true);
            })));
        }
        let key = ReentrantKey(1);
        let mut get = map.get(&key);
        expect_panic(&map, "a poll whose spare key panics on drop", || {
            poll_once(&mut get, &w1)
        });
        assert!(
            ON_KEY_CLONE.with_borrow(Option::is_none),
            "the key was never copied"
        );
        assert!(!KEY_DROP_PANICS.get(), "no key was dropped after the copy");
        assert_eq!(map.waiters(), 1, "the panicked get is left waiting");
        assert!(poll_once(&mut get, &w1).is_pending());
        assert_eq!(map.waiters(), 2);
        assert_eq!(map.insert(ReentrantKey(1), 5), None);
        assert_eq!((c0.wakes(), c1.wakes()), (1, 1));
        let (_, w) = counting_waker();
        assert_eq!(poll_once(&mut get, &w), Poll::Ready(Ok(5)));
        let mut first = other.lock().unwrap().take().unwrap();
        assert_eq!(poll_once(&mut first, &w), Poll::Ready(Ok(5)));
        assert_eq!(map.waiters(), 0);
    });
}

// ----- Neighbours: the same contract elsewhere. -----

// Guarantee 11: a get resolving while its stored waker panics on drop (polled
// from another waker's `wake`, after that waker's own get completed) was the
// last waiter: `drained()` is told. (Where completing the first get already
// woke the second, it resolves plainly; the checks hold either way.)
#[test]
fn get_resolving_while_its_stored_waker_panics_on_drop_still_tells_drained() {
    no_hang("get resolves, stored waker panics", || {
        let map = Arc::new(Map::new());
        let (bomb, armed) = drop_bomb(&map);
        let doomed = slot(map.get_owned(&KEY));
        let outcome = Arc::new(Mutex::new(None));
        let get = slot(map.get_owned(&KEY));
        // Registered first, so woken first: gets are queued in order.
        let runs = {
            let (get, doomed, outcome) =
                (Arc::clone(&get), Arc::clone(&doomed), Arc::clone(&outcome));
            on_wake(&map, move |_| {
                let (_, w) = counting_waker();
                assert_eq!(poll_slot(&get, &w), Poll::Ready(Ok(7)));
                let mut g = doomed.lock().unwrap();
                *outcome.lock().unwrap() = Some(try_poll(g.as_mut().unwrap(), &w));
            })
        };
        assert!(poll_slot(&get, &runs.waker()).is_pending());
        assert!(poll_slot(&doomed, &bomb.waker()).is_pending());
        armed.store(true, SeqCst);
        let (dc, dw) = counting_waker();
        let mut drained = map.drained();
        assert!(poll_once(&mut drained, &dw).is_pending());

        assert_eq!(map.insert(KEY, 7), None);
        assert!(outcome.lock().unwrap().is_some());
        if map.waiters() == 0 {
            assert!(
                dc.wakes() > 0,
                "no waiter is left, but the drained() future was never woken"
            );
        }
        // A get that panicked starts over; one that resolved is done.
        let mut g = doomed.lock().unwrap().take().unwrap();
        if !matches!(*outcome.lock().unwrap(), Some(Ok(Poll::Ready(_)))) {
            let (_, w) = counting_waker();
            assert_eq!(poll_once(&mut g, &w), Poll::Ready(Ok(7)));
        }
        drop(g);
        drop(get.lock().unwrap().take());
        assert_eq!(map.waiters(), 0);
        assert!(dc.wakes() > 0, "drained() was never woken");
        assert_eq!(poll_once(&mut drained, &dw), Poll::Ready(()));
        assert_eq!(map.try_get(&KEY), Some(7));
        assert_clean(&[bomb, runs]);
    });
}

// Guarantee 11: a get_or_promise that takes the work over (woken for a value
// another future took first, and polled from another waker's `wake` while
// its own waker is still stored) while its stored waker panics on drop: the
// promise it was given is not lost, so the key is not reserved for ever for
// a producer nobody holds. (Where the take already woke the caller, it takes
// over plainly; the check holds either way.)
#[test]
fn get_or_promise_taking_over_while_its_stored_waker_panics_on_drop_leaves_no_orphan_reservation() {
    no_hang("get_or_promise takes over, stored waker panics", || {
        let map = Arc::new(Map::new());
        let promise = map.promise(KEY).expect("the key is free");
        let outcome = Arc::new(Mutex::new(None));
        let got: Slot<Pin<Box<dyn Future<Output = &'static str> + Send>>> = slot({
            let (map, outcome) = (Arc::clone(&map), Arc::clone(&outcome));
            Box::pin(async move {
                let r = map.get_or_promise(&KEY).await;
                *outcome.lock().unwrap() = Some(format!("{r:?}"));
                match r {
                    Ok(awaitmap::ValueOrPromise::Promise(p)) => {
                        p.fulfill(40);
                        "promise"
                    }
                    Ok(awaitmap::ValueOrPromise::Value(_)) => "value",
                    Err(_) => "error",
                }
            })
        });
        let (bomb, armed) = drop_bomb(&map);
        // Woken first (gets are queued in registration order, and this one
        // registers before the caller): takes the value, then polls the
        // caller while its waker is still stored.
        let taker = {
            let got = Arc::clone(&got);
            on_wake(&map, move |m| {
                let (_, w) = counting_waker();
                // The value goes before the caller sees it ...
                assert_eq!(poll_once(&mut m.take(&KEY), &w), Poll::Ready(Ok(5)));
                // ... so the caller takes the work over.
                let mut g = got.lock().unwrap();
                let _ = try_poll(g.as_mut().unwrap(), &w);
            })
        };
        let mut get = map.get(&KEY);
        register(&mut get, &taker);
        assert!(poll_slot(&got, &bomb.waker()).is_pending());
        armed.store(true, SeqCst);

        assert_eq!(promise.fulfill(5), None);
        assert_eq!(taker.acted(), 1);
        drop(got.lock().unwrap().take());
        // Whatever the caller saw, the key is not left reserved.
        let (_, w) = counting_waker();
        let mut fresh = map.get_or_promise(&KEY);
        match poll_once(&mut fresh, &w) {
            Poll::Ready(Ok(awaitmap::ValueOrPromise::Value(v))) => assert_eq!(v, 40),
            Poll::Ready(Ok(awaitmap::ValueOrPromise::Promise(p))) => {
                assert_eq!(p.fulfill(41), None);
            }
            Poll::Ready(Err(e)) => panic!("a fresh caller failed: {e:?}"),
            Poll::Pending => panic!(
                "the key is reserved for a producer nobody holds (the caller saw \
                 {:?}): every caller would wait for ever",
                outcome.lock().unwrap()
            ),
        }
        assert!(matches!(poll_once(&mut get, &w), Poll::Ready(Ok(40 | 41))));
        assert_eq!(map.waiters(), 0);
        drop(get);
        assert_clean(&[bomb, taker]);
    });
}

// Guarantee 11: a get_or_promise that becomes the producer while the waker
// clone it had made to wait (not needed after all) panics when dropped: the
// promise it was given is abandoned on the way out, not lost, so the key is
// free again. The clone's own hook abandons the promise the caller was about
// to wait for, so the caller starts over and gets the work.
#[test]
fn get_or_promise_becoming_the_producer_while_its_spare_waker_panics_on_drop_frees_the_key() {
    no_hang("get_or_promise, spare waker panics", || {
        let map = Arc::new(Map::new());
        let held = Arc::new(Mutex::new(map.promise_owned(KEY)));
        assert!(held.lock().unwrap().is_some(), "the key is free");
        let armed = Arc::new(AtomicBool::new(false));
        let hooks = {
            let (held, armed) = (Arc::clone(&held), Arc::clone(&armed));
            Hooks::new(&map, move |_, ev| match ev {
                Event::Clone => {
                    let promise = held.lock().unwrap().take();
                    let abandoned = promise.is_some();
                    if abandoned {
                        armed.store(true, SeqCst);
                    }
                    drop(promise);
                    abandoned
                }
                Event::Drop if armed.swap(false, SeqCst) => panic!("hostile waker: drop panics"),
                _ => false,
            })
        };
        let w = hooks.waker();
        let mut first = map.get_or_promise(&KEY);
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            poll_once(&mut first, &w).map(|r| r.map(|_| ()))
        }));
        assert!(!is_locked(&*map));
        assert!(
            held.lock().unwrap().is_none(),
            "the caller never cloned its waker to wait: the test no longer covers it"
        );
        assert!(
            !armed.load(SeqCst),
            "no waker clone was dropped: the test no longer covers it"
        );
        assert!(r.is_err(), "the waker's panic did not reach the caller");
        drop(first);
        assert_eq!(map.waiters(), 0);
        let promise = map.promise(KEY);
        assert!(
            promise.is_some(),
            "the key is reserved for a promise nobody holds"
        );
        drop(promise);
        drop(w);
        assert_clean(&[hooks]);
    });
}

thread_local! {
    /// Key clones allowed before the next one panics (then unarmed).
    static CLONES_LEFT: Cell<Option<u32>> = const { Cell::new(None) };
}

/// A key whose `Clone` panics once `CLONES_LEFT` runs out.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CloneBombKey(u64);

impl Clone for CloneBombKey {
    fn clone(&self) -> Self {
        match CLONES_LEFT.get() {
            Some(0) => {
                CLONES_LEFT.set(None);
                panic!("hostile key: Clone panics");
            }
            Some(n) => CLONES_LEFT.set(Some(n - 1)),
            None => {}
        }
        CloneBombKey(self.0)
    }
}

// Guarantee 11: a get that makes its key wanted while a demand is watched
// copies the key for the demand after registering; if that `Clone` panics,
// the demand still learns of the key, or the get is not left waiting (it
// starts over when polled again): a producer never misses a wanted key.
#[test]
fn key_clone_panicking_when_a_wanted_key_is_announced_loses_no_demand() {
    no_hang("announce, key Clone panics", || {
        let map: AwaitMap<CloneBombKey, u64> = AwaitMap::new();
        let demand = map.demand();
        let k = CloneBombKey(1);
        let (_, w) = counting_waker();
        let mut get = map.get(&k);
        // The registration's own copy of the key is made; the next panics.
        CLONES_LEFT.set(Some(1));
        expect_panic(&map, "registering a wanted key", || poll_once(&mut get, &w));
        let unspent = CLONES_LEFT.replace(None).is_some();
        assert!(
            !unspent,
            "no key copy panicked: the test no longer covers it"
        );
        if map.waiters() == 0 {
            // Deregistered: polled again, it registers and is announced.
            assert!(poll_once(&mut get, &w).is_pending());
        }
        assert_eq!(map.waiters(), 1);
        let mut next = demand.next();
        assert_eq!(
            poll_once(&mut next, &w),
            Poll::Ready(Some(CloneBombKey(1))),
            "the get waits on a key the demand never heard of"
        );
        map.insert(CloneBombKey(1), 10);
        assert_eq!(poll_once(&mut get, &w), Poll::Ready(Ok(10)));
        assert_eq!(map.waiters(), 0);
    });
}

// Guarantee 11: a waker that panics in `wake` during `close`: with `std`
// every other waiter is woken once, the panic reaches the caller, and the
// map-wide conditions are all told: `closed()`, the producers waiting for
// room (a closed map takes their values) and the demand.
#[test]
fn waker_panicking_in_wake_during_close_still_tells_everyone() {
    no_hang("close, panicking waker", || {
        let map = Map::new().with_limit(1);
        map.insert(SIDE, 0); // fills the map
        let boom = Waker::from(Arc::new(Boom));
        let mut bad = map.get(&KEY);
        assert!(poll_once(&mut bad, &boom).is_pending());
        let counters: Vec<_> = (0..20).map(|_| counting_waker()).collect();
        let mut gets: Vec<_> = (0..10).map(|_| map.get(&KEY)).collect();
        let mut takes: Vec<_> = (0..10).map(|_| map.take(&OTHER)).collect();
        for (g, (_, w)) in gets.iter_mut().zip(&counters[..10]) {
            assert!(poll_once(g, w).is_pending());
        }
        for (t, (_, w)) in takes.iter_mut().zip(&counters[10..]) {
            assert!(poll_once(t, w).is_pending());
        }
        let (cc, cw) = counting_waker();
        let mut closed = map.closed();
        assert!(poll_once(&mut closed, &cw).is_pending());
        let (pc, pw) = counting_waker();
        let mut producer = map.insert_async(3, 30);
        assert!(poll_once(&mut producer, &pw).is_pending());
        let demand = map.demand();
        let (dc, dw) = counting_waker();
        let mut next = demand.next();
        assert!(poll_once(&mut next, &dw).is_pending());

        expect_panic(&map, "close", || map.close());
        for (c, _) in &counters {
            assert_woken_despite_panic(c.wakes());
        }
        assert!(cc.wakes() > 0, "the closed() future was never woken");
        assert!(
            pc.wakes() > 0,
            "the producer waiting for room was never woken"
        );
        assert!(dc.wakes() > 0, "the demand's next() was never woken");
        assert_eq!(poll_once(&mut closed, &cw), Poll::Ready(()));
        assert_eq!(poll_once(&mut producer, &pw), Poll::Ready(None));
        assert_eq!(poll_once(&mut next, &dw), Poll::Ready(None));
        let (_, w) = counting_waker();
        assert_eq!(poll_once(&mut bad, &w), Poll::Ready(Err(WaitError::Closed)));
        for f in &mut gets {
            assert_eq!(poll_once(f, &w), Poll::Ready(Err(WaitError::Closed)));
        }
        for f in &mut takes {
            assert_eq!(poll_once(f, &w), Poll::Ready(Err(WaitError::Closed)));
        }
        assert_eq!(map.waiters(), 0);
        // Still usable: a closed map stores and hands out values.
        assert_eq!(map.insert(KEY, 1), None);
        assert_eq!(poll_once(&mut map.take(&KEY), &w), Poll::Ready(Ok(1)));
        assert_eq!(map.try_get(&3), Some(30));
        drop((bad, gets, takes, next, demand));
    });
}

// Guarantee 11: a waker that panics in `wake` during `cancel`: every other
// waiter of the key is woken once and fails, the panic reaches the caller,
// and the key can be waited on again.
#[test]
fn waker_panicking_in_wake_during_cancel_still_wakes_every_other_waiter() {
    no_hang("cancel, panicking waker", || {
        let map = Map::new();
        let boom = Waker::from(Arc::new(Boom));
        let counters: Vec<_> = (0..30).map(|_| counting_waker()).collect();
        let mut gets: Vec<_> = (0..20).map(|_| map.get(&KEY)).collect();
        let mut bad = map.take(&KEY);
        let mut takes: Vec<_> = (0..10).map(|_| map.take(&KEY)).collect();
        for (g, (_, w)) in gets.iter_mut().zip(&counters[..20]) {
            assert!(poll_once(g, w).is_pending());
        }
        assert!(poll_once(&mut bad, &boom).is_pending());
        for (t, (_, w)) in takes.iter_mut().zip(&counters[20..]) {
            assert!(poll_once(t, w).is_pending());
        }
        let (dc, dw) = counting_waker();
        let mut drained = map.drained();
        assert!(poll_once(&mut drained, &dw).is_pending());

        expect_panic(&map, "cancel", || map.cancel(&KEY));
        for (c, _) in &counters {
            assert_woken_despite_panic(c.wakes());
        }
        let (_, w) = counting_waker();
        for f in &mut gets {
            assert_eq!(poll_once(f, &w), Poll::Ready(Err(WaitError::Cancelled)));
        }
        for f in takes.iter_mut().chain([&mut bad]) {
            assert_eq!(poll_once(f, &w), Poll::Ready(Err(WaitError::Cancelled)));
        }
        assert_eq!(map.waiters(), 0);
        assert!(dc.wakes() > 0, "drained() was never woken");
        assert_eq!(poll_once(&mut drained, &dw), Poll::Ready(()));
        let mut again = map.take(&KEY);
        assert!(poll_once(&mut again, &w).is_pending());
        assert_eq!(map.insert(KEY, 3), None);
        assert_eq!(poll_once(&mut again, &w), Poll::Ready(Ok(3)));
        assert!(map.is_empty());
        drop((gets, bad, takes, again));
    });
}

// Guarantee 11: `cancel` and an abandoned promise that leave an entry empty
// drop its key; if that `K::drop` panics, the failed waiters are still woken
// to learn it, and the panic reaches the caller.
#[test]
fn cancel_and_abandon_whose_entry_key_panics_on_drop_still_wake_the_failed_waiters() {
    no_hang("entry key panics on drop, failed waiters", || {
        let map = BombKeyMap::new();
        for (id, how) in [(1, WaitError::Cancelled), (2, WaitError::Abandoned)] {
            let k = BombKey(id);
            let promise = (how == WaitError::Abandoned)
                .then(|| map.promise(BombKey(id)).expect("the key is free"));
            let counters: Vec<_> = (0..20).map(|_| counting_waker()).collect();
            let mut gets: Vec<_> = (0..17).map(|_| map.get(&k)).collect();
            let mut takes: Vec<_> = (0..3).map(|_| map.take(&k)).collect();
            for (g, (_, w)) in gets.iter_mut().zip(&counters[..17]) {
                assert!(poll_once(g, w).is_pending());
            }
            for (t, (_, w)) in takes.iter_mut().zip(&counters[17..]) {
                assert!(poll_once(t, w).is_pending());
            }
            key_drop_panics(&map, id, "failing the waiters", || match promise {
                Some(p) => drop(p),
                None => drop(map.cancel(&k)),
            });
            for (i, (c, _)) in counters.iter().enumerate() {
                assert_eq!(c.wakes(), 1, "{how:?}: waiter {i} was never woken");
            }
            let (_, w) = counting_waker();
            for f in &mut gets {
                assert_eq!(poll_once(f, &w), Poll::Ready(Err(how)));
            }
            for f in &mut takes {
                assert_eq!(poll_once(f, &w), Poll::Ready(Err(how)));
            }
            assert_eq!(map.waiters(), 0);
            assert!(map.is_empty());
            drop((gets, takes));
            // The key can be waited on and produced again.
            let mut again = map.get(&k);
            assert!(poll_once(&mut again, &w).is_pending());
            assert_eq!(map.insert(BombKey(id), 9), None);
            assert_eq!(poll_once(&mut again, &w), Poll::Ready(Ok(9)));
            assert_eq!(map.remove(&k), Some(9));
        }
    });
}

// Guarantee 11: `remove` that empties an entry drops its key; if that
// `K::drop` panics (the removed value may go with the panic: that call was
// removing it), a producer waiting for room under the limit is still let in.
#[test]
fn remove_whose_entry_key_panics_on_drop_still_lets_a_producer_in() {
    no_hang("remove, entry key panics on drop", || {
        let map = BombKeyMap::new().with_limit(1);
        let k = BombKey(1);
        map.insert(BombKey(1), 10);
        let (pc, pw) = counting_waker();
        let mut producer = map.insert_async(BombKey(2), 20);
        assert!(poll_once(&mut producer, &pw).is_pending());

        key_drop_panics(&map, 1, "remove", || map.remove(&k));
        assert!(!map.contains_key(&k));
        assert!(
            pc.wakes() > 0,
            "a value left the full map, but the producer waiting for room was \
             never woken"
        );
        assert_eq!(poll_once(&mut producer, &pw), Poll::Ready(None));
        assert_eq!(map.try_get(&BombKey(2)), Some(20));
        assert_eq!(map.len(), 1);
        assert_eq!(map.waiters(), 0);
    });
}

// Guarantee 11: a take of a present key empties its entry and drops its key;
// if that `K::drop` panics, the value is not destroyed with the unwinding
// poll: it is returned or stays in the map; and once it has left, a producer
// waiting for room is let in.
#[test]
fn take_whose_entry_key_panics_on_drop_loses_no_value() {
    no_hang("take, entry key panics on drop", || {
        let map = BombKeyMap::new().with_limit(1);
        let k = BombKey(1);
        map.insert(BombKey(1), 10);
        let (pc, pw) = counting_waker();
        let mut producer = map.insert_async(BombKey(2), 20);
        assert!(poll_once(&mut producer, &pw).is_pending());

        let (_, w) = counting_waker();
        let mut take = map.take(&k);
        KEY_BOMB.set(Some(1));
        let outcome = try_poll(&mut take, &w);
        assert!(!is_locked(&map));
        let unspent = KEY_BOMB.replace(None).is_some();
        assert!(!unspent, "no key was dropped: the test no longer covers it");
        let returned = match outcome {
            Ok(Poll::Ready(Ok(v))) => Some(v),
            Ok(Poll::Ready(Err(e))) => panic!("the take failed: {e:?}"),
            Ok(Poll::Pending) | Err(_) => None,
        };
        let kept = map.remove(&k);
        match (returned, kept) {
            (Some(10), None) | (None, Some(10)) => {}
            (None, None) => panic!("the value was destroyed: neither returned nor kept"),
            other => panic!("the value went astray (returned, kept): {other:?}"),
        }
        assert!(
            pc.wakes() > 0,
            "the producer waiting for room was never woken"
        );
        assert_eq!(poll_once(&mut producer, &pw), Poll::Ready(None));
        assert_eq!(map.try_get(&BombKey(2)), Some(20));
        drop(take);
        assert_eq!(map.waiters(), 0);
    });
}

/// A key whose `Hash` panics while `HASH_PANICS` is set.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PanicHashKey(u64);

impl Hash for PanicHashKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        if HASH_PANICS.get() {
            panic!("hostile key: Hash panics");
        }
        self.0.hash(state);
    }
}

// Guarantee 11: a `Hash` that panics (it runs before the lock is taken) in
// every operation that hashes: the panic reaches the caller, the map is left
// as it was, nobody is woken, and the futures whose first poll panicked
// start over.
#[test]
fn hash_panicking_changes_nothing_and_the_futures_start_over() {
    no_hang("panicking Hash", || {
        let map: AwaitMap<PanicHashKey, u64> = AwaitMap::new();
        let (k1, k2, k3) = (PanicHashKey(1), PanicHashKey(2), PanicHashKey(3));
        map.insert(k1.clone(), 10);
        let (cg, wg) = counting_waker();
        let mut waiting = map.get(&k2);
        assert!(poll_once(&mut waiting, &wg).is_pending());
        let (_, w) = counting_waker();
        let mut get = map.get(&k1);
        let mut take = map.take(&k1);
        let mut coalesced = map.get_or_promise(&k3);

        HASH_PANICS.set(true);
        expect_panic(&map, "insert over a value", || map.insert(k1.clone(), 11));
        expect_panic(&map, "insert over waiters", || map.insert(k2.clone(), 20));
        expect_panic(&map, "try_insert", || map.try_insert(k3.clone(), 30));
        expect_panic(&map, "promise", || map.promise(k3.clone()).map(|_| ()));
        expect_panic(&map, "try_get", || map.try_get(&k1));
        expect_panic(&map, "contains_key", || map.contains_key(&k1));
        expect_panic(&map, "remove", || map.remove(&k1));
        expect_panic(&map, "cancel", || map.cancel(&k2));
        expect_panic(&map, "get, first poll", || poll_once(&mut get, &w));
        expect_panic(&map, "take, first poll", || poll_once(&mut take, &w));
        expect_panic(&map, "get_or_promise, first poll", || {
            poll_once(&mut coalesced, &w).map(|r| r.is_ok())
        });
        HASH_PANICS.set(false);

        assert_eq!(map.len(), 1);
        assert_eq!(map.try_get(&k1), Some(10));
        assert_eq!(map.waiters(), 1);
        assert_eq!(cg.wakes(), 0);
        assert!(map.promise(k3.clone()).is_some(), "key 3 was left reserved");
        assert_eq!(poll_once(&mut get, &w), Poll::Ready(Ok(10)));
        assert_eq!(poll_once(&mut take, &w), Poll::Ready(Ok(10)));
        match poll_once(&mut coalesced, &w) {
            Poll::Ready(Ok(awaitmap::ValueOrPromise::Promise(p))) => {
                assert_eq!(p.fulfill(30), None);
            }
            other => panic!("the first caller on key 3 produces it: {other:?}"),
        }
        assert_eq!(map.insert(k2.clone(), 20), None);
        assert_eq!(cg.wakes(), 1);
        assert_eq!(poll_once(&mut waiting, &wg), Poll::Ready(Ok(20)));
        assert_eq!(map.waiters(), 0);
        assert_eq!(map.len(), 2);
    });
}

/// A value that panics when dropped while `VAL_BOMB` names its id.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BombVal(u64);

impl Drop for BombVal {
    fn drop(&mut self) {
        if VAL_BOMB.get() == Some(self.0) {
            VAL_BOMB.set(None);
            panic!("hostile value: Drop panics");
        }
    }
}

/// Runs `op` with the drop of value `id` armed: the map must not drop it (or
/// a clone of it) itself, but hand it back. Disarms before returning.
fn handed_back<R>(id: u64, what: &str, op: impl FnOnce() -> R) -> R {
    VAL_BOMB.set(Some(id));
    let r = panic::catch_unwind(AssertUnwindSafe(op));
    let spent = VAL_BOMB.replace(None).is_none();
    match r {
        Ok(r) if !spent => r,
        _ => panic!("{what}: the map dropped value {id} itself"),
    }
}

// Guarantee 11 and `V::drop`: the map never drops a value (or a clone) of its
// own accord while it works: replaced, removed, taken, refused and cloned
// values all come back to the caller, so a value whose `Drop` panics can
// only panic in the caller's hands. `extend` drops the values it replaces:
// there the panic reaches the caller, after the new value is stored and its
// waiters woken.
#[test]
fn value_drop_panicking_never_runs_inside_the_map() {
    no_hang("panicking V::drop", || {
        let map: AwaitMap<u64, BombVal> = AwaitMap::new().with_limit(2);
        let (_, w) = counting_waker();
        handed_back(10, "insert of a new key", || map.insert(1, BombVal(10)));
        let old = handed_back(10, "insert over a value", || map.insert(1, BombVal(11)));
        assert_eq!(old, Some(BombVal(10)));
        let got = handed_back(11, "get of a present key", || {
            poll_once(&mut map.get(&1), &w)
        });
        assert_eq!(got, Poll::Ready(Ok(BombVal(11))));
        let mut waiting = map.get(&2);
        assert!(poll_once(&mut waiting, &w).is_pending());
        handed_back(20, "insert waking a get", || map.insert(2, BombVal(20)));
        let got = handed_back(20, "woken get", || poll_once(&mut waiting, &w));
        assert_eq!(got, Poll::Ready(Ok(BombVal(20))));
        let refused = handed_back(30, "try_insert over the limit", || {
            map.try_insert(3, BombVal(30))
        });
        assert_eq!(refused, Err((3, BombVal(30))));
        let removed = handed_back(11, "remove", || map.remove(&1));
        assert_eq!(removed, Some(BombVal(11)));
        let taken = handed_back(20, "take of a present key", || {
            poll_once(&mut map.take(&2), &w)
        });
        assert_eq!(taken, Poll::Ready(Ok(BombVal(20))));
        let mut take = map.take(&5);
        assert!(poll_once(&mut take, &w).is_pending());
        handed_back(50, "insert waking a take", || map.insert(5, BombVal(50)));
        let taken = handed_back(50, "woken take", || poll_once(&mut take, &w));
        assert_eq!(taken, Poll::Ready(Ok(BombVal(50))));
        let promise = map.promise(4).expect("key 4 is free");
        map.insert(4, BombVal(40));
        let old = handed_back(40, "fulfill over a plain insert", || {
            promise.fulfill(BombVal(41))
        });
        assert_eq!(old, Some(BombVal(40)));
        drop((got, taken, removed, refused, waiting, take));
        assert_eq!(map.try_get(&4), Some(BombVal(41)));

        let mut map = map;
        VAL_BOMB.set(Some(41));
        let r = panic::catch_unwind(AssertUnwindSafe(|| map.extend([(4, BombVal(42))])));
        assert!(
            r.is_err(),
            "the replaced value's panic did not reach the caller"
        );
        assert_eq!(VAL_BOMB.get(), None);
        assert!(!is_locked(&map));
        assert_eq!(map.try_get(&4), Some(BombVal(42)));
        assert_eq!(map.len(), 1);
        let mut get = map.get(&6);
        assert!(poll_once(&mut get, &w).is_pending());
        map.insert(6, BombVal(60));
        assert_eq!(poll_once(&mut get, &w), Poll::Ready(Ok(BombVal(60))));
    });
}

/// A key whose copies panic while `PANIC_ON_CLONE` is set (per thread).
#[derive(Debug, PartialEq, Eq, Hash)]
struct FragileKey(u32);

/// A [`FragileKey`] whose hash is the same for every key: all its keys
/// collide, so entries are told apart by the map's own bookkeeping only.
#[derive(Debug, PartialEq, Eq)]
struct CollidingFragileKey(u32);

thread_local! {
    static PANIC_ON_CLONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What copying a fragile key does first: panic if `PANIC_ON_CLONE` is set.
fn fragile_copy() {
    if PANIC_ON_CLONE.get() {
        panic!("the key's clone fails");
    }
}

impl Clone for FragileKey {
    fn clone(&self) -> Self {
        fragile_copy();
        FragileKey(self.0)
    }
}

impl Hash for CollidingFragileKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        7u32.hash(state);
    }
}

impl Clone for CollidingFragileKey {
    fn clone(&self) -> Self {
        fragile_copy();
        CollidingFragileKey(self.0)
    }
}

/// Three takes wait on key 1; the first gets a value, which leaves the key
/// wanted again; the second, woken to announce it, panics copying the key
/// (and gives up its place). The third, left behind, must be woken in turn
/// and announce the key. With `other_first`, a take on key 2 made the first
/// entry and was announced before: it must not be announced again.
fn announce_with_a_panicking_copy<K>(key: fn(u32) -> K, other_first: bool)
where
    K: Eq + Hash + Clone + Debug,
{
    let map: AwaitMap<K, u32> = AwaitMap::new();
    let demand = map.demand();
    let next = || futures::FutureExt::now_or_never(demand.next());
    let (co, wo) = counting_waker();
    let other_key = key(2);
    let mut other = other_first.then(|| map.take(&other_key));
    if let Some(other) = &mut other {
        assert!(poll_once(other, &wo).is_pending());
        assert_eq!(next(), Some(Some(key(2))));
    }
    let k = key(1);
    let (_ca, wa) = counting_waker();
    let (cb, wb) = counting_waker();
    let (cc, wc) = counting_waker();
    let mut a = map.take(&k);
    let mut b = map.take(&k);
    let mut c = map.take(&k);
    assert!(poll_once(&mut a, &wa).is_pending());
    assert!(poll_once(&mut b, &wb).is_pending());
    assert!(poll_once(&mut c, &wc).is_pending());
    assert_eq!(next(), Some(Some(key(1))));
    map.insert(key(1), 10);
    assert_eq!(poll_once(&mut a, &wa), Poll::Ready(Ok(10)));
    assert_eq!(cb.wakes(), 1);
    PANIC_ON_CLONE.set(true);
    let polled = panic::catch_unwind(AssertUnwindSafe(|| poll_once(&mut b, &wb)));
    PANIC_ON_CLONE.set(false);
    assert!(polled.is_err(), "the key's copy did not panic");
    map.check_invariants();
    assert_eq!(cc.wakes(), 1, "the take left behind was not woken");
    assert!(poll_once(&mut c, &wc).is_pending());
    assert_eq!(next(), Some(Some(key(1))));
    if let Some(other) = &mut other {
        // Announced once and still waiting: nothing more comes for it.
        assert!(poll_once(other, &wo).is_pending());
        assert_eq!(co.wakes(), 0);
        assert_eq!(next(), None);
    }
    map.insert(key(1), 11);
    assert_eq!(poll_once(&mut c, &wc), Poll::Ready(Ok(11)));
    drop((b, other));
    assert_eq!(map.waiters(), 0);
}

// Guarantee 11 with a demand: a key copy that panics while a take announces
// its key leaves the announcement to the next waiter, which is woken for it:
// the demand forgets no one.
#[test]
fn a_key_copy_that_panics_while_announcing_leaves_the_announcement_to_the_next_waiter() {
    announce_with_a_panicking_copy(FragileKey, false);
}

// Guarantees 11 and 13 with a demand: as above, on keys that all hash alike,
// with another wanted key's entry made first: the announcement the panic
// undid is the panicking key's, so its take left behind is woken to
// announce it, and the other key is not announced twice.
#[test]
fn a_key_copy_that_panics_while_announcing_colliding_keys_undoes_its_own_announcement() {
    announce_with_a_panicking_copy(CollidingFragileKey, true);
}

// Guarantees 1, 5 and 11: a get's first look finds its key's entry (a take
// waits there), and the clone of its waker, made with the lock released,
// drops that take, so the entry is gone by the get's next trip. The get
// makes the entry again itself and waits in it: it counts as a waiter, a
// demand hears of the key again, and the next insert wakes it.
#[test]
fn a_get_whose_waker_clone_drops_the_only_other_waiter_still_registers() {
    no_hang("waker clone drops the other waiter", || {
        let map = Arc::new(Map::new());
        let demand = map.demand();
        let next = || futures::FutureExt::now_or_never(demand.next());
        let (_, w) = counting_waker();
        let take = slot(map.take_owned(&KEY));
        assert!(poll_slot(&take, &w).is_pending());
        assert_eq!(next(), Some(Some(KEY)));
        let victim = Arc::clone(&take);
        let hooks = Hooks::new(&map, move |_, ev| {
            ev == Event::Clone && victim.lock().unwrap().take().is_some()
        });
        let mut get = map.get(&KEY);
        register(&mut get, &hooks);
        assert_eq!(hooks.acted(), 1, "the clone did not drop the take");
        assert_eq!(map.waiters(), 1);
        assert_eq!(next(), Some(Some(KEY)), "the key was not announced again");
        assert_eq!(map.insert(KEY, 5), None);
        assert_eq!(hooks.wakes(), 1);
        assert_eq!(poll_once(&mut get, &w), Poll::Ready(Ok(5)));
        drop(get);
        assert_eq!(map.waiters(), 0);
        assert_clean(&[hooks]);
    });
}

// Guarantees 11 and P: a get_or_promise that waits behind another producer's
// promise, and whose waker's clone (made with the lock released) drops that
// promise unfulfilled, becomes the producer itself in the same poll instead
// of waiting for a value nobody will make.
#[test]
fn a_get_or_promise_whose_waker_clone_drops_the_promise_becomes_the_producer() {
    no_hang("waker clone drops the promise", || {
        let map = Arc::new(Map::new());
        let promise = map.promise_owned(KEY).expect("the key is free");
        let holder = Arc::new(Mutex::new(Some(promise)));
        let victim = Arc::clone(&holder);
        let hooks = Hooks::new(&map, move |_, ev| {
            ev == Event::Clone && victim.lock().unwrap().take().is_some()
        });
        let mut gop = map.get_or_promise(&KEY);
        let w = hooks.waker();
        let promise = match poll_once(&mut gop, &w) {
            Poll::Ready(Ok(awaitmap::ValueOrPromise::Promise(p))) => p,
            Poll::Ready(Ok(awaitmap::ValueOrPromise::Value(v))) => panic!("a value: {v}"),
            Poll::Ready(Err(e)) => panic!("failed: {e:?}"),
            Poll::Pending => panic!("waits for a value nobody will make"),
        };
        assert_eq!(hooks.acted(), 1, "the clone did not drop the promise");
        assert_eq!(promise.fulfill(9), None);
        assert_eq!(map.try_get(&KEY), Some(9));
        drop((gop, w));
        assert_eq!(map.waiters(), 0);
        assert_clean(&[hooks]);
    });
}

// Guarantees 1 and 11: an insert queues more wake-ups than one batch (many
// gets, then the take); the first get's waker, woken before the queue is
// worked through, inserts the key again, which finds those gets still
// queued. Each waiter is still woken, the take included.
#[test]
fn a_wake_up_that_inserts_again_while_its_insert_s_wake_ups_are_queued_loses_none() {
    no_hang("insert again with wake-ups queued", || {
        let map = Arc::new(Map::new());
        let again = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&again);
        let first = on_wake(&map, move |m| {
            if !flag.swap(true, SeqCst) {
                m.insert(KEY, 2);
            }
        });
        let mut g1 = map.get(&KEY);
        register(&mut g1, &first);
        let (gets_woken, w) = counting_waker();
        let mut gets: Vec<_> = (0..19).map(|_| map.get(&KEY)).collect();
        for g in &mut gets {
            assert!(poll_once(g, &w).is_pending());
        }
        let (take_woken, wt) = counting_waker();
        let mut take = map.take(&KEY);
        assert!(poll_once(&mut take, &wt).is_pending());
        assert_eq!(map.insert(KEY, 1), None);
        assert!(again.load(SeqCst));
        assert_eq!(first.wakes(), 1);
        assert!(gets_woken.wakes() >= 19, "a get was not woken");
        assert_eq!(take_woken.wakes(), 1, "the take was not woken");
        for g in &mut gets {
            assert_eq!(poll_once(g, &w), Poll::Ready(Ok(2)));
        }
        assert_eq!(poll_once(&mut take, &wt), Poll::Ready(Ok(2)));
        drop((g1, gets, take));
        assert_eq!(map.waiters(), 0);
        assert_clean(&[first]);
    });
}

// Guarantees 13 and F: with keys that all hash alike, a wanted key's
// announcement waits in the demand's queue while many other keys are
// wanted and given up again without anyone reading the demand, so the queue
// drops the announcements that went stale. It keeps the one still wanted,
// told apart from an earlier key with a value by the map's own bookkeeping.
#[test]
fn the_demand_queue_keeps_a_wanted_colliding_key_when_it_drops_stale_ones() {
    let map: AwaitMap<CollidingFragileKey, u32> = AwaitMap::new();
    let demand = map.demand();
    map.insert(CollidingFragileKey(100), 1);
    let (_, w) = counting_waker();
    let wanted = CollidingFragileKey(1);
    let mut take = map.take(&wanted);
    assert!(poll_once(&mut take, &w).is_pending());
    for i in 0..40 {
        let gone = CollidingFragileKey(1_000 + i);
        let mut t = map.take(&gone);
        assert!(poll_once(&mut t, &w).is_pending());
    }
    let next = || futures::FutureExt::now_or_never(demand.next());
    assert_eq!(next(), Some(Some(CollidingFragileKey(1))));
    assert_eq!(next(), None);
    map.insert(CollidingFragileKey(1), 10);
    assert_eq!(poll_once(&mut take, &w), Poll::Ready(Ok(10)));
}

// Guarantees 13 and C: with keys that all hash alike, a claim dropped with a
// reply it never received drops that reply, not the value of an earlier
// colliding key.
#[test]
fn a_dropped_claim_on_colliding_keys_drops_its_own_reply_only() {
    let map: AwaitMap<CollidingFragileKey, u32> = AwaitMap::new();
    map.insert(CollidingFragileKey(100), 1);
    let claim = map.claim(CollidingFragileKey(1));
    assert_eq!(map.deliver(CollidingFragileKey(1), 10), Ok(None));
    drop(claim);
    assert_eq!(map.try_get(&CollidingFragileKey(100)), Some(1));
    assert_eq!(map.try_get(&CollidingFragileKey(1)), None);
    assert_eq!(map.len(), 1);
}
