//! Models of the map's races, checked by loom.
//!
//! Under `RUSTFLAGS="--cfg awaitmap_loom"` the map's lock is loom's mutex and
//! each model runs under `loom::model`, which explores every interleaving of
//! the threads' lock operations (up to a preemption bound). A future that is
//! never woken leaves `block_on` parked forever, which loom reports as a
//! deadlock: that is how these models catch lost wake-ups, so every model is
//! built so that the correct library always wakes every future (a final
//! `insert` or a `close` where a wait could otherwise legitimately last
//! forever). Without the cfg, each model runs a few hundred times on real
//! threads, so the file also passes in a plain `cargo test`.
//!
//! Run: `RUSTFLAGS="--cfg awaitmap_loom" cargo test --release --test loom`.

#![cfg(feature = "std")]

mod common;

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
#[cfg(awaitmap_loom)]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc as StdArc, Mutex as StdMutex};
use std::task::{Context, Poll, Wake, Waker};

use awaitmap::{AwaitMap, FixedAwaitMap, ValueOrPromise, WaitError};
use common::{counting_waker, poll_once};
use foldhash::fast::FixedState;

#[cfg(awaitmap_loom)]
use loom::{
    sync::{Arc, mpsc::channel},
    thread,
};

#[cfg(not(awaitmap_loom))]
use {futures::executor::block_on, std::sync::Arc, std::sync::mpsc::channel, std::thread};

/// Drives `fut` to completion on the current loom thread, parking on a loom
/// `Notify` between polls: a future that is never woken leaves the thread
/// parked, which loom reports as a deadlock. (This is what
/// `loom::future::block_on` does; that one needs loom's `futures` feature.)
#[cfg(awaitmap_loom)]
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(loom::sync::Notify);

    impl Wake for Unpark {
        fn wake(self: StdArc<Self>) {
            self.0.notify();
        }

        fn wake_by_ref(self: &StdArc<Self>) {
            self.0.notify();
        }
    }

    let unpark = StdArc::new(Unpark(loom::sync::Notify::new()));
    let waker = Waker::from(StdArc::clone(&unpark));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        unpark.0.wait();
    }
}

/// The map of every model: a fixed-seed hasher keeps runs deterministic.
type Map = AwaitMap<u64, u64, FixedState>;

/// The key every model races on.
const K: u64 = 7;

fn new_map() -> Map {
    AwaitMap::with_hasher(FixedState::with_seed(0x5eed))
}

/// The preemption bound of the loom runs (unless `LOOM_MAX_PREEMPTIONS` is
/// set): enough for each model below to reach every one of its legal
/// outcomes, except one model that raises it to 4.
const PREEMPTIONS: usize = 3;

/// Runs `f` under loom's model checker, or, without loom, a few hundred times
/// on real threads.
fn model(f: impl Fn() + Send + Sync + 'static) {
    model_bounded(PREEMPTIONS, f);
}

/// [`model`] with another preemption bound under loom.
fn model_bounded(preemptions: usize, f: impl Fn() + Send + Sync + 'static) {
    #[cfg(awaitmap_loom)]
    {
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = Some(preemptions);
        }
        let runs = StdArc::new(AtomicUsize::new(0));
        let counted = StdArc::clone(&runs);
        builder.check(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            f();
        });
        // Shown with `--nocapture`: how many interleavings were explored.
        eprintln!("loom explored {} executions", runs.load(Ordering::Relaxed));
    }
    #[cfg(not(awaitmap_loom))]
    {
        let _ = preemptions;
        let runs = if cfg!(miri) { 4 } else { 300 };
        for _ in 0..runs {
            f();
        }
    }
}

/// Runs `f` as [`model_bounded`] does; each execution returns its outcome,
/// which must be in `legal`. Under loom, which explores the interleavings,
/// every legal outcome must also be reached: the model really races what it
/// claims to.
fn model_outcomes<T>(preemptions: usize, legal: &[T], f: impl Fn() -> T + Send + Sync + 'static)
where
    T: PartialEq + Debug + Clone + Send + Sync + 'static,
{
    let seen = StdArc::new(StdMutex::new(Vec::<T>::new()));
    {
        let legal = legal.to_vec();
        let seen = StdArc::clone(&seen);
        model_bounded(preemptions, move || {
            let outcome = f();
            assert!(legal.contains(&outcome), "illegal outcome {outcome:?}");
            let mut seen = seen.lock().unwrap();
            if !seen.contains(&outcome) {
                seen.push(outcome);
            }
        });
    }
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty());
    if cfg!(awaitmap_loom) {
        let missed: Vec<&T> = legal.iter().filter(|o| !seen.contains(o)).collect();
        assert!(
            missed.is_empty(),
            "legal outcomes never reached: {missed:?}"
        );
    }
}

/// A waker that runs a hook (which may call back into the map) and then wakes
/// the task. With the hook, a model also checks that wakers run with the lock
/// released and see the state the wake-up announced.
struct HookWaker {
    hook: StdArc<dyn Fn() + Send + Sync>,
    task: Waker,
}

impl Wake for HookWaker {
    fn wake(self: StdArc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &StdArc<Self>) {
        (self.hook)();
        self.task.wake_by_ref();
    }
}

/// `fut`, polled with a [`HookWaker`] around the task's waker. The hook waker
/// is reused while the task's waker stays the same, so the map sees one waker.
struct OnWake<F> {
    fut: F,
    hook: StdArc<dyn Fn() + Send + Sync>,
    cached: Option<(Waker, Waker)>,
}

fn on_wake<F>(fut: F, hook: impl Fn() + Send + Sync + 'static) -> OnWake<F> {
    OnWake {
        fut,
        hook: StdArc::new(hook),
        cached: None,
    }
}

impl<F: Future + Unpin> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let fresh = match &this.cached {
            Some((task, _)) => !task.will_wake(cx.waker()),
            None => true,
        };
        if fresh {
            let hooked = Waker::from(StdArc::new(HookWaker {
                hook: StdArc::clone(&this.hook),
                task: cx.waker().clone(),
            }));
            this.cached = Some((cx.waker().clone(), hooked));
        }
        let (_, hooked) = this.cached.as_ref().expect("set above");
        Pin::new(&mut this.fut).poll(&mut Context::from_waker(hooked))
    }
}

/// A hook that only calls back into the map: it deadlocks if a waker runs
/// under the map's lock.
fn reenter(map: &Arc<Map>) -> impl Fn() + Send + Sync + 'static {
    let map = Arc::clone(map);
    move || {
        let _ = map.len();
    }
}

// ---------------------------------------------------------------------------
// 1. insert ‖ first poll of `get`
// ---------------------------------------------------------------------------

// Guarantees 1, 2, 3: whichever runs first, the get resolves with the value,
// and its waker (if it waited) runs with the lock free and the value stored.
#[test]
fn get_resolves_whether_insert_runs_before_or_after_its_first_poll() {
    model(|| {
        let map = Arc::new(new_map());
        let producer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.insert(K, 10))
        };
        let hook_map = Arc::clone(&map);
        let got = block_on(on_wake(map.get(&K), move || {
            assert!(
                hook_map.contains_key(&K),
                "woken before the value was stored"
            );
        }));
        assert_eq!(got, Ok(10));
        assert_eq!(producer.join().unwrap(), None);
        assert_eq!(map.try_get(&K), Some(10));
        assert_eq!(map.len(), 1);
        assert_eq!(map.waiters(), 0);
    });
}

// Guarantees 1, 2: the same race with a `take`: it resolves with the value and
// the value leaves the map.
#[test]
fn take_resolves_whether_insert_runs_before_or_after_its_first_poll() {
    model(|| {
        let map = Arc::new(new_map());
        let producer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.insert(K, 10))
        };
        let got = block_on(on_wake(map.take(&K), reenter(&map)));
        assert_eq!(got, Ok(10));
        assert_eq!(producer.join().unwrap(), None);
        assert_eq!(map.len(), 0);
        assert!(!map.contains_key(&K));
        assert_eq!(map.waiters(), 0);
    });
}

// ---------------------------------------------------------------------------
// 2. insert ‖ drop of a waiting `get`
// ---------------------------------------------------------------------------

// Guarantees 1, 5: dropping a waiting get while an insert runs deregisters it
// and the value is stored either way.
#[test]
fn dropping_a_waiting_get_during_an_insert_deregisters_it() {
    model(|| {
        let map = Arc::new(new_map());
        let (counter, waker) = counting_waker();
        let mut waiting = map.get(&K);
        assert!(poll_once(&mut waiting, &waker).is_pending());
        assert_eq!(map.waiters(), 1);
        let producer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.insert(K, 10))
        };
        drop(waiting);
        assert_eq!(producer.join().unwrap(), None);
        assert_eq!(map.waiters(), 0);
        assert_eq!(map.try_get(&K), Some(10));
        assert_eq!(map.len(), 1);
        assert!(counter.wakes() <= 1);
    });
}

// ---------------------------------------------------------------------------
// 3. two gets and a take on one key ‖ inserts
// ---------------------------------------------------------------------------

/// One execution of [`two_gets_and_a_take_race_three_inserts`]: what the take
/// got, what the second and third inserts replaced, and the two gets.
type GetsTakeOutcome = (u64, Option<u64>, Option<u64>, u64, u64);

// Guarantees 1, 6: every get sees some inserted value, the take gets exactly
// one, and each value is taken, replaced or still stored: never lost or
// delivered twice.
#[test]
fn two_gets_and_a_take_race_three_inserts() {
    // The take resolves before the third insert (the main thread joins it
    // first). Either it took 1 before the second insert (which then replaced
    // nothing and the third replaced 2), or 2 after it (the second replaced
    // 1, the third nothing). The gets may see any of the three values.
    let mut legal: Vec<GetsTakeOutcome> = Vec::new();
    for (take, second, third) in [(1, None, Some(2)), (2, Some(1), None)] {
        for a in 1..=3 {
            for b in 1..=3 {
                legal.push((take, second, third, a, b));
            }
        }
    }
    // Two of these outcomes (the second get seeing 1 while the first sees a
    // later value) need four preemptions.
    model_outcomes(4, &legal, || {
        let map = Arc::new(new_map());
        let getter = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                let both = futures::future::join(map.get(&K), map.get(&K));
                let (a, b) = block_on(on_wake(both, reenter(&map)));
                (a.unwrap(), b.unwrap())
            })
        };
        let taker = {
            let map = Arc::clone(&map);
            thread::spawn(move || block_on(on_wake(map.take(&K), reenter(&map))).unwrap())
        };
        assert_eq!(map.insert(K, 1), None);
        let second = map.insert(K, 2);
        let take = taker.join().unwrap();
        let third = map.insert(K, 3);
        let (a, b) = getter.join().unwrap();

        // Conservation: every inserted value is accounted for exactly once.
        let mut accounted: Vec<u64> = [Some(take), second, third, map.try_get(&K)]
            .into_iter()
            .flatten()
            .collect();
        accounted.sort_unstable();
        assert_eq!(accounted, [1, 2, 3]);
        assert_eq!(map.try_get(&K), Some(3));
        assert_eq!(map.len(), 1);
        assert_eq!(map.waiters(), 0);
        (take, second, third, a, b)
    });
}

// Guarantees 1, 6, 9: two takes, two inserts (the second may replace the
// first) and a close: each stored value goes to exactly one take, and a take
// left without a value fails `Closed` instead of hanging.
#[test]
fn two_takes_race_inserts_and_close_each_value_delivered_once() {
    let legal = [
        // The first value was taken before the second insert.
        (Ok(1), Ok(2), None),
        (Ok(2), Ok(1), None),
        // The second insert replaced the first value: one take gets it.
        (Ok(2), Err(WaitError::Closed), Some(1)),
        (Err(WaitError::Closed), Ok(2), Some(1)),
    ];
    model_outcomes(PREEMPTIONS, &legal, || {
        let map = Arc::new(new_map());
        let spawn_take = || {
            let map = Arc::clone(&map);
            thread::spawn(move || block_on(map.take(&K)))
        };
        let (first, second) = (spawn_take(), spawn_take());
        assert_eq!(map.insert(K, 1), None);
        let replaced = map.insert(K, 2);
        map.close();
        let outcome = (first.join().unwrap(), second.join().unwrap(), replaced);
        assert_eq!(map.len(), 0);
        assert_eq!(map.waiters(), 0);
        outcome
    });
}

// ---------------------------------------------------------------------------
// 4. close ‖ poll
// ---------------------------------------------------------------------------

// Guarantee 9: a get and a take blocked (or about to block) on other threads
// resolve `Err(Closed)` when the map is closed; nothing stays registered.
#[test]
fn close_fails_a_get_and_a_take_waiting_on_other_threads() {
    model(|| {
        let map = Arc::new(new_map());
        let closed_hook = |map: &Arc<Map>| {
            let map = Arc::clone(map);
            move || assert!(map.is_closed(), "woken before the map was closed")
        };
        let getter = {
            let map = Arc::clone(&map);
            thread::spawn(move || block_on(on_wake(map.get(&K), closed_hook(&map))))
        };
        let taker = {
            let map = Arc::clone(&map);
            thread::spawn(move || block_on(on_wake(map.take(&K), closed_hook(&map))))
        };
        map.close();
        assert_eq!(getter.join().unwrap(), Err(WaitError::Closed));
        assert_eq!(taker.join().unwrap(), Err(WaitError::Closed));
        assert_eq!(map.waiters(), 0);
        assert_eq!(map.len(), 0);
        assert!(map.is_closed());
    });
}

// Guarantees 1, 9: close ‖ insert ‖ get: the get gets the value or `Closed`,
// and the value is stored in any case.
#[test]
fn close_insert_and_get_race_value_is_stored_either_way() {
    model_outcomes(PREEMPTIONS, &[Ok(5), Err(WaitError::Closed)], || {
        let map = Arc::new(new_map());
        let producer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.insert(K, 5))
        };
        let getter = {
            let map = Arc::clone(&map);
            let hook_map = Arc::clone(&map);
            thread::spawn(move || {
                block_on(on_wake(map.get(&K), move || {
                    assert!(hook_map.is_closed() || hook_map.contains_key(&K));
                }))
            })
        };
        map.close();
        assert_eq!(producer.join().unwrap(), None);
        let got = getter.join().unwrap();
        assert_eq!(map.try_get(&K), Some(5));
        assert_eq!(map.len(), 1);
        assert_eq!(map.waiters(), 0);
        got
    });
}

// Guarantees 6, 9: close ‖ insert ‖ take: the take gets the value (which then
// leaves the map) or `Closed` (and the value stays): never both, never none.
#[test]
fn close_insert_and_take_race_value_is_taken_or_stored() {
    model_outcomes(PREEMPTIONS, &[Ok(5), Err(WaitError::Closed)], || {
        let map = Arc::new(new_map());
        let producer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.insert(K, 5))
        };
        let taker = {
            let map = Arc::clone(&map);
            thread::spawn(move || block_on(on_wake(map.take(&K), reenter(&map))))
        };
        map.close();
        assert_eq!(producer.join().unwrap(), None);
        let got = taker.join().unwrap();
        match got {
            Ok(_) => assert_eq!(map.len(), 0),
            Err(_) => assert_eq!(map.try_get(&K), Some(5)),
        }
        assert_eq!(map.waiters(), 0);
        got
    });
}

// ---------------------------------------------------------------------------
// 5. cancel ‖ re-registration
// ---------------------------------------------------------------------------

// Guarantee 8: a get registered before `cancel` is failed; a take registered
// on another thread while `cancel` runs is failed exactly when `cancel`
// counted it, and otherwise resolves Ok after a final insert.
#[test]
fn cancel_counts_exactly_the_futures_it_fails_while_another_registers() {
    // (cancel's count, the new take's outcome)
    let legal = [(2, Err(WaitError::Cancelled)), (1, Ok(7))];
    model_outcomes(PREEMPTIONS, &legal, || {
        // `take_owned` needs the map in a std `Arc`; loom's cannot call it.
        let map = StdArc::new(new_map());
        let (early_counter, early_waker) = counting_waker();
        let mut early = map.get(&K);
        assert!(poll_once(&mut early, &early_waker).is_pending());
        let (late_counter, late_waker) = counting_waker();
        let registrar = {
            let map = StdArc::clone(&map);
            thread::spawn(move || {
                let mut late = map.take_owned(&K);
                assert!(poll_once(&mut late, &late_waker).is_pending());
                late
            })
        };
        let cancelled = map.cancel(&K);
        let late = registrar.join().unwrap();
        // `cancel` wakes exactly the futures it failed.
        assert_eq!(early_counter.wakes(), 1);
        assert_eq!(late_counter.wakes(), cancelled - 1);

        assert_eq!(map.insert(K, 7), None);
        assert_eq!(block_on(early), Err(WaitError::Cancelled));
        let late = block_on(late);
        let failed = 1 + usize::from(late == Err(WaitError::Cancelled));
        assert_eq!(cancelled, failed);
        assert_eq!(map.len(), if late.is_ok() { 0 } else { 1 });
        assert_eq!(map.waiters(), 0);
        assert_eq!(StdArc::strong_count(&map), 1);
        (cancelled, late)
    });
}

// Guarantees 1, 8: cancel ‖ insert on a key with a waiting take: before the
// insert the take is failed and the value stays; after it the take holds the
// value, is left alone and gets it.
#[test]
fn cancel_and_insert_race_on_a_key_with_a_waiting_take() {
    let legal = [(1, Err(WaitError::Cancelled)), (0, Ok(9))];
    model_outcomes(PREEMPTIONS, &legal, || {
        let map = Arc::new(new_map());
        let (_counter, waker) = counting_waker();
        let mut waiting = map.take(&K);
        assert!(poll_once(&mut waiting, &waker).is_pending());
        let producer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.insert(K, 9))
        };
        let cancelled = map.cancel(&K);
        assert_eq!(producer.join().unwrap(), None);
        let got = block_on(waiting);
        match got {
            Ok(_) => assert_eq!(map.len(), 0),
            Err(_) => assert_eq!(map.try_get(&K), Some(9)),
        }
        assert_eq!(map.waiters(), 0);
        (cancelled, got)
    });
}

// ---------------------------------------------------------------------------
// 6. a woken take dropped ‖ another take
// ---------------------------------------------------------------------------

// Guarantee 6: take A is woken for the value, then dropped on one thread while
// take B waits on another: the wake-up passes to B, which gets the value.
#[test]
fn dropping_a_woken_take_hands_the_value_to_the_next_take() {
    model(|| {
        // `take_owned` needs the map in a std `Arc`; loom's cannot call it.
        let map = StdArc::new(new_map());
        let (a_counter, a_waker) = counting_waker();
        let (b_counter, b_waker) = counting_waker();
        let mut a = map.take_owned(&K);
        let mut b = map.take(&K);
        assert!(poll_once(&mut a, &a_waker).is_pending());
        assert!(poll_once(&mut b, &b_waker).is_pending());
        assert_eq!(map.insert(K, 3), None);
        assert_eq!((a_counter.wakes(), b_counter.wakes()), (1, 0));

        let dropper = thread::spawn(move || drop(a));
        assert_eq!(block_on(b), Ok(3));
        dropper.join().unwrap();
        assert_eq!(map.len(), 0);
        assert_eq!(map.waiters(), 0);
        assert_eq!(StdArc::strong_count(&map), 1);
    });
}

// Guarantees 1, 5, 6: the first waiting take is dropped on one thread while an
// insert runs on another and the second take waits on a third: the value ends
// with the second take whichever ran first.
#[test]
fn dropping_a_waiting_take_during_an_insert_leaves_the_value_to_the_next() {
    model(|| {
        // `take_owned` needs the map in a std `Arc`; loom's cannot call it.
        let map = StdArc::new(new_map());
        let (a_counter, a_waker) = counting_waker();
        let (_b_counter, b_waker) = counting_waker();
        let mut a = map.take_owned(&K);
        let mut b = map.take(&K);
        assert!(poll_once(&mut a, &a_waker).is_pending());
        assert!(poll_once(&mut b, &b_waker).is_pending());
        let producer = {
            let map = StdArc::clone(&map);
            thread::spawn(move || map.insert(K, 4))
        };
        let dropper = thread::spawn(move || drop(a));
        assert_eq!(block_on(b), Ok(4));
        assert_eq!(producer.join().unwrap(), None);
        dropper.join().unwrap();
        assert_eq!(map.len(), 0);
        assert_eq!(map.waiters(), 0);
        assert!(a_counter.wakes() <= 1);
        assert_eq!(StdArc::strong_count(&map), 1);
    });
}

// ---------------------------------------------------------------------------
// 7. remove ‖ waiting get
// ---------------------------------------------------------------------------

// Guarantees 1, 7: a get waits while a value is inserted and removed on other
// threads; it resolves with an inserted value (a final insert guarantees one
// stays), and remove and insert account for every value.
#[test]
fn remove_races_a_waiting_get_which_resolves_with_an_inserted_value() {
    // (what remove got, what the final insert replaced, the get's value)
    let legal = [
        (Some(1), None, 1),
        (Some(1), None, 2),
        (None, Some(1), 1),
        (None, Some(1), 2),
    ];
    model_outcomes(PREEMPTIONS, &legal, || {
        let map = Arc::new(new_map());
        let getter = {
            let map = Arc::clone(&map);
            thread::spawn(move || block_on(on_wake(map.get(&K), reenter(&map))).unwrap())
        };
        let remover = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.remove(&K))
        };
        assert_eq!(map.insert(K, 1), None);
        let removed = remover.join().unwrap();
        let replaced = map.insert(K, 2);
        let got = getter.join().unwrap();
        assert_eq!(map.try_get(&K), Some(2));
        assert_eq!(map.len(), 1);
        assert_eq!(map.waiters(), 0);
        (removed, replaced, got)
    });
}

// ---------------------------------------------------------------------------
// Extra: a woken take whose value vanishes
// ---------------------------------------------------------------------------

// Guarantees 1, 6, 7: a take woken for a value that a `remove` on another
// thread then takes out waits again, still first in line, and the next insert
// wakes it; or it got the first value and the second stays stored.
#[test]
fn woken_take_whose_value_is_removed_is_woken_again_by_the_next_insert() {
    // (what remove got, what the take got, values left)
    let legal = [(None, 1, 1), (Some(1), 2, 0)];
    model_outcomes(PREEMPTIONS, &legal, || {
        let map = Arc::new(new_map());
        let (counter, waker) = counting_waker();
        let mut waiting = map.take(&K);
        assert!(poll_once(&mut waiting, &waker).is_pending());
        assert_eq!(map.insert(K, 1), None);
        assert_eq!(counter.wakes(), 1);
        let producer = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                let removed = map.remove(&K);
                assert_eq!(map.insert(K, 2), None);
                removed
            })
        };
        let got = block_on(on_wake(waiting, reenter(&map))).unwrap();
        let removed = producer.join().unwrap();
        assert_eq!(map.waiters(), 0);
        (removed, got, map.len())
    });
}

// ---------------------------------------------------------------------------
// 8. The producer's side: promises, and room under a limit
// ---------------------------------------------------------------------------
//
// "P" is the promise contract (the `Promise` and `get_or_promise` docs), "L"
// the limit contract (the `with_limit` and `insert_async` docs); the crate's
// numbered guarantees speak of plain waits, not of either. The futures here are polled by hand with
// counting wakers: a lost wake-up shows as a future still pending whose
// waker never ran, an outcome no model lists as legal.
//
// In the producer models the map's lock is loom's, but the
// `event_listener::Event` producers wait on is invisible to loom (std
// atomics and a std mutex). Loom switches threads only at its own
// operations, so each listen or notify runs as part of the step that
// follows the thread's last map-lock operation: the models check the
// orderings of whole steps (listen, then look again under the map's lock;
// free under the lock, notify after it), not a switch between the unlock
// and the listen or notify. Counting wakers also keep loom operations out
// of event-listener's mutex, under which it runs wakers.

/// Spawns a producer thread that promises [`K`], then runs `produce` with
/// the promise. Returns once the key is promised, so what the caller does
/// next races `produce` alone.
fn spawn_promised<T: Send + 'static>(
    map: &Arc<Map>,
    produce: impl FnOnce(awaitmap::Promise<'_, u64, u64, FixedState>) -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let (promised_tx, promised_rx) = channel();
    let map = Arc::clone(map);
    let producer = thread::spawn(move || {
        let promise = map.promise(K).expect("nobody produces the key yet");
        promised_tx.send(()).unwrap();
        produce(promise)
    });
    promised_rx.recv().unwrap();
    producer
}

/// One execution of [`abandoned_promise_fails_a_get_registered_before_it_and_not_one_after`]:
/// the get's first poll, how many waiters `abandon` failed, how often the
/// get's waker had run by the time the producer was joined, and the get's
/// next poll (if the first one left it waiting).
type AbandonOutcome = (
    Poll<Result<u64, WaitError>>,
    usize,
    usize,
    Option<Poll<Result<u64, WaitError>>>,
);

// P, 1, 3: a producer abandons its promise while a get registers on another
// thread. Registered first: the abandon fails it (counted) and wakes it once,
// and its next poll resolves `Abandoned`. Registered after: nothing failed or
// woke it, it still waits, and the next insert resolves it. (A get whose look
// saw the promised entry registers with its waker in one trip, on that entry
// if it is still there: it is never failed between storing nothing and
// storing its waker.) Never failed-but-unwoken, woken-but-still-waiting, or
// a count that disagrees with the get.
#[test]
fn abandoned_promise_fails_a_get_registered_before_it_and_not_one_after() {
    let legal: [AbandonOutcome; 2] = [
        (
            Poll::Pending,
            1,
            1,
            Some(Poll::Ready(Err(WaitError::Abandoned))),
        ),
        (Poll::Pending, 0, 0, Some(Poll::Pending)),
    ];
    model_outcomes(PREEMPTIONS, &legal, || {
        let map = Arc::new(new_map());
        let producer = spawn_promised(&map, |promise| promise.abandon());
        let (counter, waker) = counting_waker();
        let mut get = map.get(&K);
        let first = poll_once(&mut get, &waker);
        let failed = producer.join().unwrap();
        let woken = counter.wakes();
        let next = first.is_pending().then(|| poll_once(&mut get, &waker));
        if next.as_ref().is_some_and(Poll::is_pending) {
            // Not failed, so still registered, and an insert reaches it.
            assert_eq!(map.waiters(), 1);
            assert_eq!(map.insert(K, 5), None);
            assert_eq!(counter.wakes(), woken + 1);
            assert_eq!(poll_once(&mut get, &waker), Poll::Ready(Ok(5)));
        } else {
            // The failed get took its entry with it: the key is free.
            assert!(!map.contains_key(&K));
            assert!(map.promise(K).is_some());
        }
        assert_eq!(map.waiters(), 0);
        (first, failed, woken, next)
    });
}

/// One execution of [`dropped_promise_hands_the_work_to_a_racing_get_or_promise`]:
/// which poll of the `get_or_promise` returned the promise (1 or 2) and how
/// often its waker had run by the second.
type HandOverOutcome = (u8, usize);

// P, 1: a producer drops its promise while a get_or_promise is first polled
// on another thread. Polled after the drop: it gets the promise at once.
// Polled before: it waits, is woken once by the drop, and its next poll
// inherits the promise. Never left waiting for a producer that is gone.
#[test]
fn dropped_promise_hands_the_work_to_a_racing_get_or_promise() {
    let legal: [HandOverOutcome; 2] = [(1, 0), (2, 1)];
    model_outcomes(PREEMPTIONS, &legal, || {
        let map = Arc::new(new_map());
        let producer = spawn_promised(&map, |promise| drop(promise));
        let (counter, waker) = counting_waker();
        let mut lookup = map.get_or_promise(&K);
        let first = poll_once(&mut lookup, &waker);
        producer.join().unwrap();
        let woken = counter.wakes();
        let (poll, got) = match first {
            Poll::Ready(got) => (1, got),
            Poll::Pending => match poll_once(&mut lookup, &waker) {
                Poll::Ready(got) => (2, got),
                Poll::Pending => panic!("still waiting for a dropped producer (woken {woken}×)"),
            },
        };
        let Ok(ValueOrPromise::Promise(promise)) = got else {
            panic!("expected the promise, got {got:?}");
        };
        // The work is this caller's alone, and its value reaches the map.
        assert!(map.promise(K).is_none());
        assert_eq!(map.waiters(), 0);
        assert_eq!(promise.fulfill(8), None);
        assert_eq!(map.try_get(&K), Some(8));
        assert_eq!(counter.wakes(), woken);
        (poll, woken)
    });
}

// P, 1, 2, 6: a producer fulfils its promise while a take is first polled on
// another thread: the take gets the value exactly once, at once (fulfilled
// first) or after exactly one wake-up (registered first), and the value
// leaves the map.
#[test]
fn fulfilled_promise_delivers_its_value_to_a_racing_take_exactly_once() {
    let legal = [Poll::Ready(Ok(6)), Poll::Pending];
    model_outcomes(PREEMPTIONS, &legal, || {
        let map = Arc::new(new_map());
        let producer = spawn_promised(&map, |promise| promise.fulfill(6));
        let (counter, waker) = counting_waker();
        let mut take = map.take(&K);
        let first = poll_once(&mut take, &waker);
        assert_eq!(producer.join().unwrap(), None);
        if first.is_pending() {
            assert_eq!(counter.wakes(), 1);
            assert_eq!(poll_once(&mut take, &waker), Poll::Ready(Ok(6)));
        } else {
            assert_eq!(counter.wakes(), 0);
        }
        assert_eq!(map.len(), 0);
        assert_eq!(map.remove(&K), None);
        assert_eq!(map.waiters(), 0);
        // The key is free for the next producer.
        assert!(map.promise(K).is_some());
        first
    });
}

/// One execution of a producer waiting for room: its first poll and how
/// often its waker had run by the time the other thread was joined.
type RoomOutcome = (Poll<Option<u64>>, usize);

/// The race of [`producer_waiting_for_room_is_let_in_by_a_remove`] and
/// [`producer_waiting_for_room_is_let_in_by_a_take`]: a map limited to one
/// value holds key 1; `free` takes it out on another thread while
/// `insert_async(2, _)` is first polled here.
fn producer_waiting_for_room_is_let_in(free: fn(&Map) -> Option<u64>) {
    // Room freed before the producer looked: it inserts at once. After: it
    // waits and is woken exactly once. Pending and never woken with the
    // room free is the lost wake-up.
    let legal: [RoomOutcome; 2] = [(Poll::Ready(None), 0), (Poll::Pending, 1)];
    model_outcomes(PREEMPTIONS, &legal, move || {
        let map = Arc::new(new_map().with_limit(1));
        assert_eq!(map.insert(1, 10), None);
        let consumer = {
            let map = Arc::clone(&map);
            thread::spawn(move || free(&map))
        };
        let (counter, waker) = counting_waker();
        let mut insert = map.insert_async(2, 20);
        let first = poll_once(&mut insert, &waker);
        assert_eq!(consumer.join().unwrap(), Some(10));
        let woken = counter.wakes();
        if first.is_pending() {
            assert_eq!(poll_once(&mut insert, &waker), Poll::Ready(None));
        }
        assert_eq!(counter.wakes(), woken);
        assert_eq!(map.try_get(&2), Some(20));
        assert!(!map.contains_key(&1));
        assert_eq!(map.len(), 1);
        (first, woken)
    });
}

// L, 7: a producer waiting for room under `with_limit(1)` is let in by a
// `remove` on another thread: at once, or woken exactly once.
#[test]
fn producer_waiting_for_room_is_let_in_by_a_remove() {
    producer_waiting_for_room_is_let_in(|map| map.remove(&1));
}

// L, 2: the same room freed by a `take` of the present key (ready on its
// first poll) on another thread.
#[test]
fn producer_waiting_for_room_is_let_in_by_a_take() {
    producer_waiting_for_room_is_let_in(|map| {
        let (_counter, waker) = counting_waker();
        match poll_once(&mut map.take(&1), &waker) {
            Poll::Ready(got) => got.ok(),
            Poll::Pending => panic!("a take of a present key waited"),
        }
    });
}

// L, 1: a producer waiting for room on a full map is let in when a take
// starts waiting for its key on another thread (a value somebody waits for
// is admitted beyond the limit): the insert completes at once or after a
// wake-up, and the take resolves with the value. A lost wake-up on either
// side leaves a thread parked: loom reports the deadlock.
#[test]
fn producer_waiting_for_room_is_let_in_when_its_key_is_awaited() {
    model_outcomes(PREEMPTIONS, &[true, false], || {
        let map = Arc::new(new_map().with_limit(1));
        assert_eq!(map.insert(1, 10), None);
        let consumer = {
            let map = Arc::clone(&map);
            thread::spawn(move || block_on(map.take(&2)))
        };
        let (_counter, waker) = counting_waker();
        let mut insert = map.insert_async(2, 20);
        let at_once = poll_once(&mut insert, &waker).is_ready();
        if !at_once {
            assert_eq!(block_on(insert), None);
        }
        assert_eq!(consumer.join().unwrap(), Ok(20));
        assert_eq!(map.len(), 1);
        assert_eq!(map.waiters(), 0);
        at_once
    });
}

// L, 9: a producer waiting for room on a full map while another thread
// closes it stores its value anyway (a closed map takes values beyond its
// limit): at once, or after exactly one wake-up.
#[test]
fn close_lets_a_producer_waiting_for_room_store_its_value() {
    let legal: [RoomOutcome; 2] = [(Poll::Ready(None), 0), (Poll::Pending, 1)];
    model_outcomes(PREEMPTIONS, &legal, || {
        let map = Arc::new(new_map().with_limit(1));
        assert_eq!(map.insert(1, 10), None);
        let closer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.close())
        };
        let (counter, waker) = counting_waker();
        let mut insert = map.insert_async(2, 20);
        let first = poll_once(&mut insert, &waker);
        closer.join().unwrap();
        let woken = counter.wakes();
        if first.is_pending() {
            assert_eq!(poll_once(&mut insert, &waker), Poll::Ready(None));
        }
        assert_eq!(counter.wakes(), woken);
        assert!(map.is_closed());
        assert_eq!((map.try_get(&1), map.try_get(&2)), (Some(10), Some(20)));
        assert_eq!(map.len(), 2);
        (first, woken)
    });
}

// C, 6: a claim dropped on one thread while the reader delivers its reply
// on another: the reply is refused (the claim was gone) or stored and then
// taken away with the claim; either way the map ends empty and nothing
// waits.
#[test]
fn a_claim_dropped_while_its_reply_is_delivered_leaves_nothing_behind() {
    model_outcomes(PREEMPTIONS, &[true, false], || {
        let map = Arc::new(new_map());
        let mut claim = map.claim(1);
        let (_counter, waker) = counting_waker();
        assert!(poll_once(&mut claim, &waker).is_pending());
        let reader = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.deliver(1, 10).is_ok())
        };
        drop(claim);
        let stored = reader.join().unwrap();
        assert!(map.is_empty(), "a late reply was kept");
        assert_eq!(map.waiters(), 0);
        stored
    });
}

// F, 1: the value a first take gets comes from another thread while a
// second take waits: whatever the interleaving, the second take is woken
// (the key is wanted again and nobody announced it), and its next poll
// announces the key to the demand a second time.
#[test]
fn a_key_left_wanted_is_announced_again_across_threads() {
    model_outcomes(PREEMPTIONS, &[()], || {
        let map = Arc::new(new_map());
        let demand = map.demand();
        let (_ca, wa) = counting_waker();
        let (cb, wb) = counting_waker();
        let mut a = map.take(&1);
        let mut b = map.take(&1);
        assert!(poll_once(&mut a, &wa).is_pending());
        assert!(poll_once(&mut b, &wb).is_pending());
        assert_eq!(block_on(demand.next()), Some(1));
        let producer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.insert(1, 10))
        };
        assert_eq!(block_on(&mut a), Ok(10));
        producer.join().unwrap();
        assert_eq!(cb.wakes(), 1, "the take left waiting was not woken");
        assert!(poll_once(&mut b, &wb).is_pending());
        assert_eq!(block_on(demand.next()), Some(1));
        drop(b);
        drop(demand);
    });
}

// Guarantee 1: a poll picks up a wake-up that another thread's insert queued
// (the poll's trip takes the next due waker) while it also drops a key copy
// it made and did not need (its key's entry appeared between its trips):
// that wake-up is still delivered.
#[test]
fn a_poll_that_drops_a_spare_key_copy_still_delivers_the_wake_up_it_picked_up() {
    model(|| {
        // Keys with a destructor, so the spare copy is really dropped.
        let map: Arc<AwaitMap<String, u64, FixedState>> =
            Arc::new(AwaitMap::with_hasher(FixedState::with_seed(0x5eed)));
        let (c0, w0) = counting_waker();
        let (c1, w1) = counting_waker();
        let mut g0 = map.get("a");
        let mut g1 = map.get("a");
        // The first in the entry, the second in the list queued by insert.
        assert!(poll_once(&mut g0, &w0).is_pending());
        assert!(poll_once(&mut g1, &w1).is_pending());
        let other = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                let (_, w) = counting_waker();
                let mut h = map.get("b");
                assert!(poll_once(&mut h, &w).is_pending());
                map.insert("a".to_string(), 1);
                drop(h);
            })
        };
        let (_, w) = counting_waker();
        let mut g = map.get("b");
        let _ = poll_once(&mut g, &w);
        other.join().unwrap();
        assert_eq!(c0.wakes(), 1);
        assert_eq!(c1.wakes(), 1, "a queued wake-up was lost");
        assert_eq!(poll_once(&mut g0, &w0), Poll::Ready(Ok(1)));
        assert_eq!(poll_once(&mut g1, &w1), Poll::Ready(Ok(1)));
        drop(g);
        assert_eq!(map.waiters(), 0);
    });
}

// ---------------------------------------------------------------------------
// 9. FixedAwaitMap
// ---------------------------------------------------------------------------
//
// The same guarantees on the heap-free map (its docs: it keeps them for the
// calls it has). Its futures borrow the map, so each one lives on the thread
// that made it, and the map is built inside each model (under loom `new` is
// not `const`: loom's mutex cannot be built in a constant). A first poll
// that must wait takes two trips through the lock (one to see that it must
// wait, one to register with the waker and key copy made in between), so
// these models also race other threads' operations into that gap. Each model
// ends by counting the free key slots: a slot a model's futures or values
// leaked shows there.

/// The fixed map of the models: room for four keys and four waiters.
type Fixed = FixedAwaitMap<u64, u64, 4, 4>;

/// A fixed map with one key slot and one waiter slot.
type OneSlot = FixedAwaitMap<u64, u64, 1, 1>;

fn new_fixed() -> Arc<Fixed> {
    Arc::new(Fixed::new())
}

/// The first of the keys [`free_key_slots`] inserts: no model uses it.
const FRESH: u64 = 1000;

/// How many key slots of `map` are free: inserts new keys until one is
/// handed back, then removes them again.
fn free_key_slots<const N: usize, const W: usize>(map: &FixedAwaitMap<u64, u64, N, W>) -> usize {
    let mut free = 0;
    while map.insert(FRESH + free, 0).is_ok() {
        free += 1;
    }
    for key in FRESH..FRESH + free {
        assert_eq!(map.remove(&key), Some(0));
    }
    usize::try_from(free).unwrap()
}

/// [`reenter`] for a fixed map: deadlocks if a waker runs under its lock.
fn reenter_fixed<const N: usize, const W: usize>(
    map: &Arc<FixedAwaitMap<u64, u64, N, W>>,
) -> impl Fn() + Send + Sync + 'static {
    let map = Arc::clone(map);
    move || {
        let _ = map.len();
    }
}

// Guarantees 1, 2, 3: insert ‖ first poll of a get. The get sees the value on
// its first poll (also when the insert lands between the poll's two trips),
// or waits and is woken exactly once, with the lock free and the value
// stored. The outcome is how often it was woken: 0 or 1, never more.
#[test]
fn fixed_get_resolves_whether_insert_runs_before_or_after_its_first_poll() {
    model_outcomes(PREEMPTIONS, &[0, 1], || {
        let map = new_fixed();
        let producer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.insert(K, 10))
        };
        let (counter, woke) = counting_waker();
        let hook_map = Arc::clone(&map);
        let got = block_on(on_wake(map.get(&K), move || {
            assert!(
                hook_map.contains_key(&K),
                "woken before the value was stored"
            );
            woke.wake_by_ref();
        }));
        assert_eq!(got, Ok(10));
        assert_eq!(producer.join().unwrap(), Ok(None));
        assert_eq!(map.try_get(&K), Some(10));
        assert_eq!((map.len(), map.waiters()), (1, 0));
        assert_eq!(free_key_slots(&map), 3);
        counter.wakes()
    });
}

// Guarantees 1, 2, 5: insert ‖ first poll of a take: it resolves with the
// value at once or after exactly one wake-up (its waker calls back into the
// map: run under the lock, it would deadlock), the value leaves the map, and
// the key's slot is free again.
#[test]
fn fixed_take_resolves_whether_insert_runs_before_or_after_its_first_poll() {
    model_outcomes(PREEMPTIONS, &[0, 1], || {
        let map = new_fixed();
        let producer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.insert(K, 10))
        };
        let (counter, woke) = counting_waker();
        let reenter = reenter_fixed(&map);
        let got = block_on(on_wake(map.take(&K), move || {
            reenter();
            woke.wake_by_ref();
        }));
        assert_eq!(got, Ok(10));
        assert_eq!(producer.join().unwrap(), Ok(None));
        assert!(!map.contains_key(&K));
        assert_eq!((map.len(), map.waiters()), (0, 0));
        assert_eq!(free_key_slots(&map), 4);
        counter.wakes()
    });
}

// Guarantees 1, 5: a waiting get dropped while another thread inserts: it is
// deregistered and the value is stored either way; its waker ran once if the
// insert came first, never if the drop did. The key's slot then holds the
// value alone.
#[test]
fn fixed_dropping_a_waiting_get_during_an_insert_deregisters_it() {
    model_outcomes(PREEMPTIONS, &[0, 1], || {
        let map = new_fixed();
        let (counter, waker) = counting_waker();
        let mut waiting = map.get(&K);
        assert!(poll_once(&mut waiting, &waker).is_pending());
        assert_eq!(map.waiters(), 1);
        let producer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.insert(K, 10))
        };
        drop(waiting);
        assert_eq!(producer.join().unwrap(), Ok(None));
        assert_eq!(map.waiters(), 0);
        assert_eq!(map.try_get(&K), Some(10));
        assert_eq!(map.len(), 1);
        assert_eq!(free_key_slots(&map), 3);
        counter.wakes()
    });
}

// Guarantees 1, 6, 9: two takes on their own threads, two inserts (the second
// may replace the first) and a close: each stored value goes to exactly one
// take, and a take left without a value fails `Closed` instead of hanging
// (a lost wake-up leaves its thread parked: loom reports the deadlock).
#[test]
fn fixed_two_takes_race_inserts_and_close_each_value_delivered_once() {
    // (the first take, the second take, what the second insert replaced)
    let legal = [
        (Ok(1), Ok(2), None),
        (Ok(2), Ok(1), None),
        (Ok(2), Err(WaitError::Closed), Some(1)),
        (Err(WaitError::Closed), Ok(2), Some(1)),
    ];
    model_outcomes(PREEMPTIONS, &legal, || {
        let map = new_fixed();
        let spawn_take = || {
            let map = Arc::clone(&map);
            thread::spawn(move || block_on(map.take(&K)))
        };
        let (first, second) = (spawn_take(), spawn_take());
        assert_eq!(map.insert(K, 1), Ok(None));
        let replaced = map.insert(K, 2).unwrap();
        map.close();
        let outcome = (first.join().unwrap(), second.join().unwrap(), replaced);
        assert_eq!((map.len(), map.waiters()), (0, 0));
        assert_eq!(free_key_slots(&map), 4);
        outcome
    });
}

// Guarantees 1, 5, 6, 9: takes A, B and C wait, in that order, then A is
// dropped while another thread inserts. Insert first: A is woken for the
// value, and dropping it passes the wake-up to B, the next in line. Drop
// first: the insert wakes B itself. Either way B is woken exactly once and
// gets the value, and C is not woken until the close. The outcome is how
// often A was woken: both orders must be reached.
#[test]
fn fixed_dropping_a_woken_take_during_an_insert_hands_the_value_to_the_next() {
    model_outcomes(PREEMPTIONS, &[0, 1], || {
        let map = new_fixed();
        let (a_counter, a_waker) = counting_waker();
        let (b_counter, b_waker) = counting_waker();
        let (c_counter, c_waker) = counting_waker();
        let mut a = map.take(&K);
        let mut b = map.take(&K);
        let mut c = map.take(&K);
        assert!(poll_once(&mut a, &a_waker).is_pending());
        assert!(poll_once(&mut b, &b_waker).is_pending());
        assert!(poll_once(&mut c, &c_waker).is_pending());
        let producer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.insert(K, 3))
        };
        drop(a);
        assert_eq!(producer.join().unwrap(), Ok(None));
        assert_eq!(b_counter.wakes(), 1, "the wake-up did not reach B");
        assert_eq!(c_counter.wakes(), 0, "C was woken out of turn");
        assert_eq!(poll_once(&mut b, &b_waker), Poll::Ready(Ok(3)));
        assert!(poll_once(&mut c, &c_waker).is_pending());
        map.close();
        assert_eq!(c_counter.wakes(), 1);
        assert_eq!(
            poll_once(&mut c, &c_waker),
            Poll::Ready(Err(WaitError::Closed))
        );
        assert_eq!((map.len(), map.waiters()), (0, 0));
        assert_eq!(free_key_slots(&map), 4);
        a_counter.wakes()
    });
}

// Guarantee 8: a get waits; another thread cancels the key while a take is
// first polled here. The take is failed exactly when `cancel` counted it,
// and otherwise the next insert resolves it; each future is woken exactly
// once (by the cancel or by the insert).
#[test]
fn fixed_cancel_counts_exactly_the_futures_it_fails_while_another_registers() {
    // (cancel's count, the take's outcome)
    let legal = [(2, Err(WaitError::Cancelled)), (1, Ok(7))];
    model_outcomes(PREEMPTIONS, &legal, || {
        let map = new_fixed();
        let (early_counter, early_waker) = counting_waker();
        let mut early = map.get(&K);
        assert!(poll_once(&mut early, &early_waker).is_pending());
        let canceller = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.cancel(&K))
        };
        let (late_counter, late_waker) = counting_waker();
        let mut late = map.take(&K);
        assert!(poll_once(&mut late, &late_waker).is_pending());
        let cancelled = canceller.join().unwrap();
        // `cancel` wakes exactly the futures it failed.
        assert_eq!(early_counter.wakes(), 1);
        assert_eq!(late_counter.wakes(), cancelled - 1);

        assert_eq!(map.insert(K, 7), Ok(None));
        assert_eq!(late_counter.wakes(), 1);
        assert_eq!(
            poll_once(&mut early, &early_waker),
            Poll::Ready(Err(WaitError::Cancelled))
        );
        let late = match poll_once(&mut late, &late_waker) {
            Poll::Ready(late) => late,
            Poll::Pending => panic!("the take still waits after its wake-up"),
        };
        let failed = 1 + usize::from(late == Err(WaitError::Cancelled));
        assert_eq!(cancelled, failed);
        let left = if late.is_ok() { 0 } else { 1 };
        assert_eq!((map.len(), map.waiters()), (left, 0));
        assert_eq!(free_key_slots(&map), 4 - left);
        (cancelled, late)
    });
}

// Guarantees 1, 2, 5, and the fixed map's full insert: a map with one key
// slot. A take of key 1 on another thread registers key 1 in that slot or
// finds its value; this thread inserts key 1, then key 2, which is handed
// back while key 1 holds the slot and retried until the take has freed it.
// The take must free the slot whether it waited (woken once) or not: else
// the retries never end. The outcome: how often the take was woken, and
// whether key 2 was ever handed back. All four are reached.
#[test]
fn fixed_full_map_insert_fits_once_a_take_frees_the_only_key_slot() {
    let legal = [(0, false), (0, true), (1, false), (1, true)];
    model_outcomes(PREEMPTIONS, &legal, || {
        let map = Arc::new(OneSlot::new());
        let (counter, woke) = counting_waker();
        let consumer = {
            let map = Arc::clone(&map);
            let reenter = reenter_fixed(&map);
            thread::spawn(move || {
                block_on(on_wake(map.take(&1), move || {
                    reenter();
                    woke.wake_by_ref();
                }))
            })
        };
        assert_eq!(map.insert(1, 10), Ok(None));
        let mut refused = 0;
        while let Err(back) = map.insert(2, 20) {
            assert_eq!(back, (2, 20), "the insert did not hand back its own");
            refused += 1;
            // Real threads may need many turns; under loom a turn each.
            assert!(refused < 1_000_000, "the take never freed the slot");
            thread::yield_now();
        }
        assert_eq!(consumer.join().unwrap(), Ok(10));
        assert_eq!(map.try_get(&2), Some(20));
        assert!(!map.contains_key(&1));
        assert_eq!((map.len(), map.waiters()), (1, 0));
        assert_eq!(free_key_slots(&map), 0);
        (counter.wakes(), refused > 0)
    });
}
