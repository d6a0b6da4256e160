//! A reference model of `AwaitMap` and an interpreter that runs one sequence
//! of operations against the real map and the model, comparing them after
//! every step.
//!
//! Shared by `tests/model.rs` (proptest) and `fuzz/fuzz_targets/ops.rs`
//! (cargo-fuzz), so it uses no proptest or fuzzing types; both include it with
//! `#[path]` next to `tests/common/mod.rs`, which it uses as `crate::common`.
//!
//! The model follows SPEC.md and the documented rules for the baton, `cancel`
//! and `close`, with none of the implementation's machinery (no slab, no wake
//! queue): per key a value, the waiting `get`s and `take`s in registration
//! order, and which `take` holds the baton (was woken to receive the current
//! value). Per future it knows whether the map holds its waker "armed"
//! (stored and not woken since the last `Pending`): a wake-up runs the waker
//! only if it is armed, so with one thread every waker's wake count is exact,
//! and the interpreter compares all of them after every step.
//!
//! Checked after every step: each poll's outcome (`Pending`, or `Ready` with
//! which value or error), `insert`'s replaced value, `remove`, `try_get`,
//! `cancel`'s count, every waker's wake count, `len`, `is_empty`, `waiters`,
//! `contains_key`, `is_closed`, the `Debug` output, and the number of live
//! values (every value that left the map was dropped by the interpreter, so
//! the live ones are exactly the stored ones: nothing lost, leaked or
//! duplicated). No value leaves the map twice. At the end the remaining
//! futures are dropped one by one (checked after each) and then the map,
//! which must leave no value alive.
// Each user reads a different part (the fuzz target ignores the trace).
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Poll, Waker};

use awaitmap::{AwaitMap, Get, Take, WaitError};

use crate::common::{CountingWaker, Tracked, counting_waker, live, live_counter, poll_once};

/// How many distinct keys the operations use.
pub(crate) const KEYS: u8 = 3;
/// How many futures can be alive at once.
pub(crate) const SLOTS: u8 = 6;

/// The keys, in a `static` so that futures can borrow them for as long as
/// the map lives.
static KEY_NAMES: [u8; KEYS as usize] = [0, 1, 2];

/// Which of a future's two wakers a poll uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WakerChoice {
    A,
    B,
}

/// One step. Keys are taken modulo [`KEYS`] and slots modulo [`SLOTS`], so
/// every decoded operation is valid. Creating a future in an occupied slot,
/// and polling or dropping an empty slot, do nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `map.get(&key)` into `slot` (not polled yet).
    CreateGet {
        key: u8,
        slot: u8,
    },
    /// `map.take(&key)` into `slot` (not polled yet).
    CreateTake {
        key: u8,
        slot: u8,
    },
    /// Polls the future in `slot` once with one of its two wakers.
    Poll {
        slot: u8,
        waker: WakerChoice,
    },
    /// Drops the future in `slot`.
    Drop {
        slot: u8,
    },
    /// `map.insert(key, fresh value)`.
    Insert {
        key: u8,
    },
    Remove {
        key: u8,
    },
    TryGet {
        key: u8,
    },
    Cancel {
        key: u8,
    },
    Close,
}

/// What the interpreter saw during one step (the real map's answers, which
/// matched the model's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Pending {
        slot: u8,
    },
    Ready {
        slot: u8,
        result: Result<u64, WaitError>,
    },
    Inserted {
        key: u8,
        value: u64,
        replaced: Option<u64>,
    },
    Removed {
        key: u8,
        value: Option<u64>,
    },
    Cancelled {
        key: u8,
        count: usize,
    },
    /// The waker of the future created in `slot` was woken during the step.
    Woken {
        slot: u8,
    },
}

/// Per step, what happened: `steps[i]` for `ops[i]`, then one entry per
/// future dropped at the end.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    pub(crate) steps: Vec<Vec<Event>>,
}

// ---------------------------------------------------------------------------
// The model.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Get,
    Take,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Created, never polled to `Pending`: the map knows nothing of it.
    Unpolled,
    /// Registered and in its key's list.
    Waiting,
    /// Failed by `cancel`, not yet polled: still registered (counted by
    /// `waiters`), in no list; resolves `Err(Cancelled)` on its next poll.
    Cancelled,
}

#[derive(Debug)]
struct ModelFuture {
    kind: Kind,
    key: usize,
    phase: Phase,
    /// Indices of its two wakers (A, B) in the waker table.
    wakers: [usize; 2],
    /// The waker the map holds and has not woken since the last `Pending`.
    armed: Option<usize>,
}

#[derive(Debug, Default)]
struct ModelKey {
    value: Option<u64>,
    /// Waiting futures (slots), earliest registered first.
    gets: Vec<usize>,
    takes: Vec<usize>,
    /// The `take` woken to receive the current value (always in `takes`).
    baton: Option<usize>,
}

#[derive(Debug, Default)]
struct Model {
    keys: [ModelKey; KEYS as usize],
    futures: [Option<ModelFuture>; SLOTS as usize],
    /// How often each waker must have been woken so far.
    expected_wakes: Vec<usize>,
    closed: bool,
}

impl Model {
    fn len(&self) -> usize {
        self.keys.iter().filter(|k| k.value.is_some()).count()
    }

    /// Registered futures: waiting, or cancelled and not yet polled.
    fn waiters(&self) -> usize {
        self.futures
            .iter()
            .flatten()
            .filter(|f| f.phase != Phase::Unpolled)
            .count()
    }

    /// A wake-up for the future in `slot`: its waker runs if the map holds
    /// it; a future already woken (and not polled since) is not woken again.
    fn wake(&mut self, slot: usize) {
        let f = self.futures[slot].as_mut().expect("wake of an empty slot");
        if let Some(w) = f.armed.take() {
            self.expected_wakes[w] += 1;
        }
    }

    /// Hands the baton to the earliest waiting `take` of `key` (semantics 1
    /// and 6), if there is one.
    fn pass_baton(&mut self, key: usize) {
        let k = &mut self.keys[key];
        debug_assert!(k.baton.is_none());
        if let Some(&head) = k.takes.first() {
            k.baton = Some(head);
            self.wake(head);
        }
    }

    fn create(&mut self, kind: Kind, key: usize, slot: usize, wakers: [usize; 2]) {
        self.futures[slot] = Some(ModelFuture {
            kind,
            key,
            phase: Phase::Unpolled,
            wakers,
            armed: None,
        });
    }

    fn unlink(&mut self, kind: Kind, key: usize, slot: usize) {
        let k = &mut self.keys[key];
        let list = match kind {
            Kind::Get => &mut k.gets,
            Kind::Take => &mut k.takes,
        };
        let at = list
            .iter()
            .position(|&s| s == slot)
            .expect("a waiting future is in its list");
        list.remove(at);
    }

    /// One poll with waker `w` (a waker-table index).
    fn poll(&mut self, slot: usize, w: usize) -> Poll<Result<u64, WaitError>> {
        let f = self.futures[slot].as_mut().expect("poll of an empty slot");
        let (kind, key) = (f.kind, f.key);
        match f.phase {
            // Semantic 8: a cancelled future stays cancelled, even if a
            // value arrived since.
            Phase::Cancelled => {
                self.futures[slot] = None;
                Poll::Ready(Err(WaitError::Cancelled))
            }
            // Semantics 2, 3 and 9: a present key resolves at once (a fresh
            // `take` takes a present value even while another holds the
            // baton); after `close` an absent key fails at once; otherwise
            // the future registers.
            Phase::Unpolled => {
                let k = &mut self.keys[key];
                if let Some(v) = k.value {
                    if kind == Kind::Take {
                        k.value = None;
                    }
                    self.futures[slot] = None;
                    return Poll::Ready(Ok(v));
                }
                if self.closed {
                    self.futures[slot] = None;
                    return Poll::Ready(Err(WaitError::Closed));
                }
                match kind {
                    Kind::Get => k.gets.push(slot),
                    Kind::Take => k.takes.push(slot),
                }
                f.phase = Phase::Waiting;
                f.armed = Some(w);
                Poll::Pending
            }
            // A `get` resolves if the key has a value; a `take` if it has a
            // value and the take holds the baton (or no take does). Closed:
            // everything else fails (semantic 9).
            Phase::Waiting => {
                let k = &mut self.keys[key];
                let mine = match kind {
                    Kind::Get => k.value.is_some(),
                    Kind::Take => k.value.is_some() && (k.baton == Some(slot) || k.baton.is_none()),
                };
                if mine || self.closed {
                    let result = if mine {
                        let v = k.value.expect("mine implies a value");
                        if kind == Kind::Take {
                            k.value = None;
                        }
                        Ok(v)
                    } else {
                        Err(WaitError::Closed)
                    };
                    if k.baton == Some(slot) {
                        k.baton = None;
                    }
                    self.unlink(kind, key, slot);
                    self.futures[slot] = None;
                    return Poll::Ready(result);
                }
                // A woken `take` that finds the value gone waits again,
                // first in line, and gives up the baton for the next insert.
                if k.baton == Some(slot) {
                    k.baton = None;
                }
                f.armed = Some(w);
                Poll::Pending
            }
        }
    }

    /// Semantics 3, 5 and 6: dropping deregisters; a `take` holding the
    /// baton passes it on if the value is still there.
    fn drop_future(&mut self, slot: usize) {
        let Some(f) = self.futures[slot].take() else {
            return;
        };
        if f.phase != Phase::Waiting {
            return;
        }
        self.unlink(f.kind, f.key, slot);
        let k = &mut self.keys[f.key];
        if k.baton == Some(slot) {
            k.baton = None;
            if k.value.is_some() {
                self.pass_baton(f.key);
            }
        }
    }

    /// Semantic 1: store, then wake every waiting `get` and, unless a take
    /// holds the baton, the earliest waiting `take`.
    fn insert(&mut self, key: usize, v: u64) -> Option<u64> {
        let k = &mut self.keys[key];
        let old = k.value.replace(v);
        let gets = k.gets.clone();
        let baton_free = k.baton.is_none();
        for g in gets {
            self.wake(g);
        }
        if baton_free {
            self.pass_baton(key);
        }
        old
    }

    /// Semantic 7: waiting futures are unaffected.
    fn remove(&mut self, key: usize) -> Option<u64> {
        self.keys[key].value.take()
    }

    /// Semantic 8: fails the futures on `key` that would not resolve `Ok`
    /// if polled now (with a value: the takes without the baton; without a
    /// value: all), wakes them, and returns how many.
    fn cancel(&mut self, key: usize) -> usize {
        let k = &mut self.keys[key];
        let mut failed = Vec::new();
        let keep = if k.value.is_some() {
            k.baton
        } else {
            failed.append(&mut k.gets);
            None
        };
        k.takes.retain(|&t| {
            if Some(t) == keep {
                true
            } else {
                failed.push(t);
                false
            }
        });
        k.baton = keep;
        for &slot in &failed {
            self.futures[slot]
                .as_mut()
                .expect("a listed future exists")
                .phase = Phase::Cancelled;
            self.wake(slot);
        }
        failed.len()
    }

    /// Semantic 9: permanent; wakes every waiting future (each resolves on
    /// its next poll: `Ok` if its key has a value for it, else `Closed`).
    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        for slot in 0..self.futures.len() {
            if self.futures[slot]
                .as_ref()
                .is_some_and(|f| f.phase == Phase::Waiting)
            {
                self.wake(slot);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The interpreter.
// ---------------------------------------------------------------------------

type Map = AwaitMap<u8, Tracked>;

enum RealFuture<'a> {
    Get(Get<'a, u8, Tracked>),
    Take(Take<'a, u8, Tracked>),
}

impl RealFuture<'_> {
    fn poll(&mut self, waker: &Waker) -> Poll<Result<Tracked, WaitError>> {
        match self {
            RealFuture::Get(f) => poll_once(f, waker),
            RealFuture::Take(f) => poll_once(f, waker),
        }
    }
}

struct WakerRecord {
    counter: Arc<CountingWaker>,
    waker: Waker,
    /// The slot of the future it belongs to (for the trace).
    slot: u8,
    /// Names the waker and its future in failure messages.
    label: String,
}

/// Fails the run with a message naming the step.
macro_rules! check {
    ($cond:expr, $at:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!("{}: {}", $at, format!($($msg)+)));
        }
    };
}

/// Runs `ops` against a fresh map and the model. `Err` describes the first
/// disagreement and repeats the sequence up to it without the steps that did
/// nothing (creating into an occupied slot, polling or dropping an empty
/// one), which fails the same way; a panic inside the map propagates as a
/// panic.
pub(crate) fn run(ops: &[Op]) -> Result<Trace, String> {
    let mut effective = Vec::new();
    run_recording(ops, &mut effective)
        .map_err(|failure| format!("{failure}\nthe same without its no-op steps: {effective:?}"))
}

fn run_recording(ops: &[Op], effective: &mut Vec<Op>) -> Result<Trace, String> {
    let values_alive = live_counter();
    let map = Map::new();
    // Declared after `map`: dropped before it, also on an early return.
    let mut real: Vec<Option<RealFuture<'_>>> = (0..SLOTS).map(|_| None).collect();
    let mut model = Model::default();
    let mut wakers: Vec<WakerRecord> = Vec::new();
    let mut next_value = 0_u64;
    let mut left_map: HashSet<u64> = HashSet::new();
    let mut trace = Trace::default();

    for (i, &op) in ops.iter().enumerate() {
        let at = format!("step {i} ({op:?})");
        let before: Vec<usize> = wakers.iter().map(|w| w.counter.wakes()).collect();
        let mut events = Vec::new();
        let does_something = match op {
            Op::CreateGet { slot, .. } | Op::CreateTake { slot, .. } => {
                real[usize::from(slot % SLOTS)].is_none()
            }
            Op::Poll { slot, .. } | Op::Drop { slot } => real[usize::from(slot % SLOTS)].is_some(),
            _ => true,
        };
        if does_something {
            effective.push(op);
        }
        match op {
            Op::CreateGet { key, slot } | Op::CreateTake { key, slot } => {
                let (key, slot) = (key % KEYS, slot % SLOTS);
                let s = usize::from(slot);
                if real[s].is_none() {
                    let key_ref = &KEY_NAMES[usize::from(key)];
                    let first = wakers.len();
                    let what = if matches!(op, Op::CreateGet { .. }) {
                        "get"
                    } else {
                        "take"
                    };
                    for name in ["A", "B"] {
                        let (counter, waker) = counting_waker();
                        wakers.push(WakerRecord {
                            counter,
                            waker,
                            slot,
                            label: format!(
                                "waker {name} of the {what} of key {key} created in slot {slot} at step {i}"
                            ),
                        });
                        model.expected_wakes.push(0);
                    }
                    let kind = if what == "get" {
                        real[s] = Some(RealFuture::Get(map.get(key_ref)));
                        Kind::Get
                    } else {
                        real[s] = Some(RealFuture::Take(map.take(key_ref)));
                        Kind::Take
                    };
                    model.create(kind, usize::from(key), s, [first, first + 1]);
                }
            }
            Op::Poll { slot, waker } => {
                let slot = slot % SLOTS;
                let s = usize::from(slot);
                if let Some(fut) = real[s].as_mut() {
                    let mf = model.futures[s].as_ref().expect("model and map agree");
                    let kind = mf.kind;
                    let w = mf.wakers[match waker {
                        WakerChoice::A => 0,
                        WakerChoice::B => 1,
                    }];
                    let got = fut.poll(&wakers[w].waker);
                    let expected = model.poll(s, w);
                    let got = match got {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(r) => {
                            // Completed: never polled again (that panics by
                            // design, semantic 12).
                            real[s] = None;
                            Poll::Ready(r.map(|v| v.id))
                        }
                    };
                    check!(
                        got == expected,
                        at,
                        "poll returned {got:?}, the model expected {expected:?}"
                    );
                    if let (Kind::Take, Poll::Ready(Ok(v))) = (kind, got) {
                        check!(left_map.insert(v), at, "value {v} left the map twice");
                    }
                    events.push(match got {
                        Poll::Pending => Event::Pending { slot },
                        Poll::Ready(result) => Event::Ready { slot, result },
                    });
                }
            }
            Op::Drop { slot } => {
                let s = usize::from(slot % SLOTS);
                drop(real[s].take());
                model.drop_future(s);
            }
            Op::Insert { key } => {
                let key = key % KEYS;
                let value = next_value;
                next_value += 1;
                let replaced = map
                    .insert(key, Tracked::new(value, &values_alive))
                    .map(|v| v.id);
                let expected = model.insert(usize::from(key), value);
                check!(
                    replaced == expected,
                    at,
                    "insert replaced {replaced:?}, the model expected {expected:?}"
                );
                if let Some(old) = replaced {
                    check!(left_map.insert(old), at, "value {old} left the map twice");
                }
                events.push(Event::Inserted {
                    key,
                    value,
                    replaced,
                });
            }
            Op::Remove { key } => {
                let key = key % KEYS;
                let got = map.remove(&key).map(|v| v.id);
                let expected = model.remove(usize::from(key));
                check!(
                    got == expected,
                    at,
                    "remove returned {got:?}, the model expected {expected:?}"
                );
                if let Some(v) = got {
                    check!(left_map.insert(v), at, "value {v} left the map twice");
                }
                events.push(Event::Removed { key, value: got });
            }
            Op::TryGet { key } => {
                // `check_state` compares `try_get` of every key after each
                // step; this step only adds a read between two others.
                let key = key % KEYS;
                let got = map.try_get(&key).map(|v| v.id);
                let expected = model.keys[usize::from(key)].value;
                check!(
                    got == expected,
                    at,
                    "try_get returned {got:?}, the model expected {expected:?}"
                );
            }
            Op::Cancel { key } => {
                let key = key % KEYS;
                let count = map.cancel(&key);
                let expected = model.cancel(usize::from(key));
                check!(
                    count == expected,
                    at,
                    "cancel failed {count} futures, the model expected {expected}"
                );
                events.push(Event::Cancelled { key, count });
            }
            Op::Close => {
                map.close();
                model.close();
            }
        }
        record_wakes(&wakers, &before, &mut events);
        trace.steps.push(events);
        check_state(&map, &model, &wakers, &values_alive, &at)?;
    }

    // Drop what is left, one future at a time: each drop may pass a baton.
    for (s, fut) in real.iter_mut().enumerate() {
        if let Some(fut) = fut.take() {
            let at = format!("teardown: drop slot {s}");
            let before: Vec<usize> = wakers.iter().map(|w| w.counter.wakes()).collect();
            drop(fut);
            model.drop_future(s);
            let mut events = Vec::new();
            record_wakes(&wakers, &before, &mut events);
            trace.steps.push(events);
            check_state(&map, &model, &wakers, &values_alive, &at)?;
        }
    }
    check!(
        map.waiters() == 0,
        "teardown",
        "{} waiters after every future was dropped",
        map.waiters()
    );
    drop(real);
    drop(map);
    check!(
        live(&values_alive) == 0,
        "teardown",
        "{} values alive after the map was dropped",
        live(&values_alive)
    );
    Ok(trace)
}

fn record_wakes(wakers: &[WakerRecord], before: &[usize], events: &mut Vec<Event>) {
    let mut woken: Vec<u8> = wakers
        .iter()
        .zip(before)
        .filter(|(w, b)| w.counter.wakes() > **b)
        .map(|(w, _)| w.slot)
        .collect();
    woken.sort_unstable();
    woken.dedup();
    events.extend(woken.into_iter().map(|slot| Event::Woken { slot }));
}

/// Compares everything observable without changing the map.
fn check_state(
    map: &Map,
    model: &Model,
    wakers: &[WakerRecord],
    values_alive: &Arc<std::sync::atomic::AtomicUsize>,
    at: &str,
) -> Result<(), String> {
    // The map's own bookkeeping first: a broken invariant explains any
    // disagreement below.
    let invariants = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        map.check_invariants();
    }));
    if let Err(payload) = invariants {
        return Err(format!("{at}: {}", crate::common::panic_message(payload)));
    }
    for (i, w) in wakers.iter().enumerate() {
        let (got, expected) = (w.counter.wakes(), model.expected_wakes[i]);
        check!(
            got == expected,
            at,
            "{} woken {got} times, the model expected {expected}",
            w.label
        );
    }
    check!(
        map.len() == model.len(),
        at,
        "len {} != model {}",
        map.len(),
        model.len()
    );
    check!(
        map.is_empty() == (model.len() == 0),
        at,
        "is_empty disagrees with the model"
    );
    // Exact here: a woken-but-unpolled future still counts as registered.
    check!(
        map.waiters() == model.waiters(),
        at,
        "waiters {} != model {}",
        map.waiters(),
        model.waiters()
    );
    check!(
        map.is_closed() == model.closed,
        at,
        "is_closed {} != model {}",
        map.is_closed(),
        model.closed
    );
    for key in 0..KEYS {
        let expected = model.keys[usize::from(key)].value;
        let got = map.try_get(&key).map(|v| v.id);
        check!(
            got == expected,
            at,
            "try_get({key}) = {got:?}, the model has {expected:?}"
        );
        check!(
            map.contains_key(&key) == expected.is_some(),
            at,
            "contains_key({key}) disagrees with the model"
        );
    }
    // Every value that left the map was dropped: the live ones are stored.
    check!(
        live(values_alive) == model.len(),
        at,
        "{} values alive, the model stores {}",
        live(values_alive),
        model.len()
    );
    let debug = format!("{map:?}");
    let expected = format!(
        "AwaitMap {{ len: {}, waiters: {}, closed: {} }}",
        model.len(),
        model.waiters(),
        model.closed
    );
    check!(debug == expected, at, "Debug printed {debug}");
    Ok(())
}
