//! User code that calls back into the map, or panics, from the places the map
//! runs it: waker `clone`/`wake`/`drop`, key `Hash`/`Clone`/`Drop`, value
//! `Drop` (all outside the lock), and `K: Eq` / `V: Clone` (the only user code
//! under the lock). SPEC semantic 11.
//!
//! The map's lock is not reentrant: user code run under it that calls back
//! into the map would never return. Every test therefore runs its body through
//! [`no_hang`], which fails with a clear message instead of hanging; and every
//! hook first checks, through the map's never-blocking `Debug`, whether the
//! lock is held, and records that as a failure rather than deadlocking.
#![allow(unsafe_code)] // hand-made `RawWaker`s, to hook every waker clone and drop

mod common;

use std::cell::{Cell, RefCell};
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, RawWaker, RawWakerVTable, Wake, Waker};

use awaitmap::{AwaitMap, GetOwned, WaitError};
use common::{Tracked, counting_waker, live, live_counter, poll_once};

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

// Semantic 11: `insert` wakes more than a batch of gets, plus a take, whose
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

// Semantic 11: the wake-ups `cancel` issues run outside the lock.
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

// Semantic 11: the wake-ups `close` issues run outside the lock.
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

// Semantic 11: when a woken take is dropped, the wake-up it passes on to the
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

// Semantic 11: a `wake` that cancels the key it was woken for fails the takes
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

// Semantic 11: a `wake` that inserts its key again, while the first insert is
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

// Semantic 11: the map clones wakers outside the lock (and, semantic 4, not
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

// Semantic 11: a stored waker replaced by another one is dropped outside the
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

// Semantic 11: a waiting future's stored waker is dropped outside the lock
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

// Semantic 11: a future that completes while its waker is still stored (it
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

// Semantic 11: with a `std::task::Wake` waker, the map may hold the last
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

// Semantic 11: a waker that panics in `wake` makes `insert` panic, but the
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

// Semantic 11: a panicking waker among more waiters than one batch of
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

// Semantic 11: an `Eq` that panics under the lock, in every operation that
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

// Semantic 11: a `V: Clone` that panics under the lock, in `try_get` and in
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

// Semantic 11: key hashing and key clones run outside the lock, so a key
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

// Semantic 11: `insert` over an existing key drops the spare key outside the
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

// Semantic 11: a `take` that empties an entry drops its key outside the lock,
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

// Semantic 11: `remove` drops the emptied entry's key outside the lock.
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

// Semantic 11: when a key's last waiter is dropped, the entry goes and its
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

// Semantic 11: `cancel` and `close` that leave an entry empty drop its key
// outside the lock.
#[test]
fn cancel_and_close_drop_emptied_entry_keys_outside_the_lock() {
    with_drop_map("cancel and close", |map| {
        let (k1, k2) = (DropKey::new(1), DropKey::new(2));
        let (_, w) = counting_waker();
        let mut cancelled = map.get(&k1);
        assert!(poll_once(&mut cancelled, &w).is_pending());
        // The entry lives until its cancelled waiter has learnt it: the key
        // goes with that poll.
        assert_eq!(drops("cancel", 0, 0, || map.cancel(&k1)), 1);
        let r = drops("cancelled poll", 1, 0, || poll_once(&mut cancelled, &w));
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

// ---------------------------------------------------------------------------
// The producer side: the same rules.
// ---------------------------------------------------------------------------

// Semantic 11 on the producer side: `promise`, `get_or_promise`, `try_insert`
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
        promise.fulfil(1);
        drop(second);
        assert_eq!(map.waiters(), 0);
    });
}

// Semantic 11 on the producer side: keys and values the map lets go of are
// dropped with the lock released: a refused promise's key, an abandoned
// promise's emptied entry, a replaced value `fulfil` hands back, a key the
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
        let old = drops("fulfil over a plain insert", 0, 0, || {
            promise.fulfil(DropVal::new(31))
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
