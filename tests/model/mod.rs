//! A reference model of `AwaitMap` (in `reference.rs`) and an interpreter
//! that runs one sequence of operations against the real map and the model,
//! comparing them after every step.
//!
//! Shared by `tests/model.rs` (proptest) and `fuzz/fuzz_targets/ops.rs`
//! (cargo-fuzz), so it uses no proptest or fuzzing types; both include it with
//! `#[path]` next to `tests/common/mod.rs`, which it uses as `crate::common`.
//!
//! The operations cover both sides. Consumers: `get`, `take` and
//! `get_or_promise` futures, `try_get`, `remove`, `cancel`, `close`.
//! Producers: `insert`, `try_insert` and `insert_async` futures on a map built
//! with or without a limit; promises (borrowed or owned), fulfilled,
//! abandoned or dropped; demand handles and their `next()` futures;
//! `closed()` and `drained()` futures. Futures live in [`SLOTS`] slots and are
//! polled by hand with one of two wakers each; a promise lives in its key's
//! promise slot (a key has at most one).
//!
//! Checked after every step: each poll's outcome (`Pending`, or `Ready` with
//! which value, error, promise or key), the answers of `insert`, `try_insert`,
//! `remove`, `try_get`, `cancel`, `promise`, `fulfill` and `abandon`; the wake
//! counts of every waker of every consumer, `insert_async` and `closed()`
//! future, exactly; for `drained()` and `demand.next()` futures, that no
//! wake-up the model owes them is missing; `len`, `is_empty`, `waiters`,
//! `limit`, `try_get` and `contains_key` of every key, `is_closed`, the `Debug`
//! output, `check_invariants`, and the number of live values (every value that
//! left the map was dropped by the interpreter, so the live ones are exactly
//! the stored ones plus those `insert_async` futures still hold: nothing lost,
//! leaked or duplicated). No value leaves the map twice. At the end the
//! remaining futures, promises and demand handles are dropped one by one
//! (checked after each) and then the map, which must leave no value alive.
// Each user reads a different part (the fuzz target ignores the trace).
#![allow(dead_code)]

mod reference;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Poll, Waker};

use awaitmap::{
    AwaitMap, Demand, Drained, Get, GetOrPromise, InsertAsync, NextWanted, OwnedPromise, Promise,
    Take, ValueOrPromise, WaitClosed, WaitError,
};

use crate::common::{CountingWaker, Tracked, counting_waker, live, live_counter, poll_once};
pub(crate) use reference::{Coalesced, Outcome};
use reference::{Kind, Model};

/// How many distinct keys the operations use.
pub(crate) const KEYS: u8 = 3;
/// How many futures can be alive at once.
pub(crate) const SLOTS: u8 = 8;
/// How many demand handles can be alive at once.
pub(crate) const DEMANDS: u8 = 2;

/// The keys, in a `static` so that futures can borrow them for as long as
/// the map lives.
static KEY_NAMES: [u8; KEYS as usize] = [0, 1, 2];

/// Which of a future's two wakers a poll uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WakerChoice {
    A,
    B,
}

/// One step. Keys are taken modulo [`KEYS`], slots modulo [`SLOTS`] and
/// demand handles modulo [`DEMANDS`], so every decoded operation is valid.
/// Creating a future in an occupied slot, polling or dropping an empty slot,
/// fulfilling, abandoning or dropping an absent promise, making a demand
/// handle in an occupied place or dropping an absent one, and `next()` on an
/// absent handle do nothing.
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
    /// `map.get_or_promise(&key)` into `slot`. A promise it resolves with
    /// goes to the key's promise slot.
    CreateGetOrPromise {
        key: u8,
        slot: u8,
    },
    /// `map.insert_async(key, fresh value)` into `slot`.
    CreateInsertAsync {
        key: u8,
        slot: u8,
    },
    /// `map.closed()` into `slot`.
    CreateClosed {
        slot: u8,
    },
    /// `map.drained()` into `slot`.
    CreateDrained {
        slot: u8,
    },
    /// `demand.next()` of demand handle `handle` into `slot`.
    CreateNext {
        handle: u8,
        slot: u8,
    },
    /// Polls the future in `slot` once with one of its two wakers.
    Poll {
        slot: u8,
        waker: WakerChoice,
    },
    /// What an executor does: polls (with waker A) every future woken since
    /// its last poll, in slot order, and again while polls wake more (at
    /// most three rounds).
    PollWoken,
    /// Drops the future in `slot`.
    Drop {
        slot: u8,
    },
    /// `map.insert(key, fresh value)`.
    Insert {
        key: u8,
    },
    /// `map.try_insert(key, fresh value)`.
    TryInsert {
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
    /// `map.promise(key)`, or `promise_owned` on the map's `Arc`; a promise
    /// granted goes to the key's promise slot.
    Promise {
        key: u8,
        owned: bool,
    },
    /// Fulfils the key's promise with a fresh value.
    Fulfil {
        key: u8,
    },
    /// `abandon()`s the key's promise (which returns how many it woke).
    Abandon {
        key: u8,
    },
    /// Drops the key's promise unfulfilled.
    DropPromise {
        key: u8,
    },
    /// `map.demand()` into demand handle place `handle`.
    NewDemand {
        handle: u8,
    },
    DropDemand {
        handle: u8,
    },
}

/// What the interpreter saw during one step (the real map's answers, which
/// matched the model's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Pending {
        slot: u8,
    },
    /// A `get` or `take` resolved.
    Ready {
        slot: u8,
        result: Result<u64, WaitError>,
    },
    /// Any other future resolved (never [`Outcome::Wait`]).
    Resolved {
        slot: u8,
        outcome: Outcome,
    },
    Inserted {
        key: u8,
        value: u64,
        replaced: Option<u64>,
    },
    /// `try_insert`: `Err(())` when the map refused (handed the pair back).
    TryInserted {
        key: u8,
        value: u64,
        result: Result<Option<u64>, ()>,
    },
    Removed {
        key: u8,
        value: Option<u64>,
    },
    Cancelled {
        key: u8,
        count: usize,
    },
    /// `promise`: whether the map granted it.
    Promised {
        key: u8,
        granted: bool,
    },
    Fulfilled {
        key: u8,
        value: u64,
        replaced: Option<u64>,
    },
    /// The key's promise was given up: `woke` is what `abandon()` returned,
    /// `None` when it was dropped.
    Abandoned {
        key: u8,
        woke: Option<usize>,
    },
    /// The waker of the future created in `slot` was woken during the step.
    Woken {
        slot: u8,
    },
}

/// Per step, what happened: `steps[i]` for `ops[i]`, then one entry per
/// future, promise and demand handle dropped at the end.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    pub(crate) steps: Vec<Vec<Event>>,
}

// ---------------------------------------------------------------------------
// The real side.
// ---------------------------------------------------------------------------

type Map = AwaitMap<u8, Tracked>;

enum RealFuture<'a> {
    Get(Get<'a, u8, Tracked>),
    Take(Take<'a, u8, Tracked>),
    GetOrPromise(GetOrPromise<'a, u8, Tracked>),
    InsertAsync(InsertAsync<'a, u8, Tracked>),
    Closed(WaitClosed<'a, u8, Tracked>),
    Drained(Drained<'a, u8, Tracked>),
    Next(NextWanted<'a, u8, Tracked>),
}

/// A real future's output, before it is reduced to value ids.
enum RealOutcome<'a> {
    Wait(Result<Tracked, WaitError>),
    Coalesced(Result<ValueOrPromise<'a, u8, Tracked>, WaitError>),
    Stored(Option<Tracked>),
    Closed,
    Drained,
    Wanted(Option<u8>),
}

impl<'a> RealFuture<'a> {
    fn poll(&mut self, waker: &Waker) -> Poll<RealOutcome<'a>> {
        match self {
            RealFuture::Get(f) => poll_once(f, waker).map(RealOutcome::Wait),
            RealFuture::Take(f) => poll_once(f, waker).map(RealOutcome::Wait),
            RealFuture::GetOrPromise(f) => poll_once(f, waker).map(RealOutcome::Coalesced),
            RealFuture::InsertAsync(f) => poll_once(f, waker).map(RealOutcome::Stored),
            RealFuture::Closed(f) => poll_once(f, waker).map(|()| RealOutcome::Closed),
            RealFuture::Drained(f) => poll_once(f, waker).map(|()| RealOutcome::Drained),
            RealFuture::Next(f) => poll_once(f, waker).map(RealOutcome::Wanted),
        }
    }
}

enum RealPromise<'a> {
    Borrowed(Promise<'a, u8, Tracked>),
    Owned(OwnedPromise<u8, Tracked>),
}

impl RealPromise<'_> {
    fn fulfill(self, value: Tracked) -> Option<Tracked> {
        match self {
            RealPromise::Borrowed(p) => p.fulfill(value),
            RealPromise::Owned(p) => p.fulfill(value),
        }
    }

    fn abandon(self) -> usize {
        match self {
            RealPromise::Borrowed(p) => p.abandon(),
            RealPromise::Owned(p) => p.abandon(),
        }
    }
}

struct WakerRecord {
    counter: Arc<CountingWaker>,
    waker: Waker,
    /// The slot of the future it belongs to (for the trace).
    slot: u8,
    /// Whether the model predicts its wake count exactly.
    exact: bool,
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

/// Runs `ops` against a fresh map without a limit and the model. See
/// [`run_with`].
pub(crate) fn run(ops: &[Op]) -> Result<Trace, String> {
    run_with(None, ops)
}

/// Runs `ops` against a fresh map (built `.with_limit(n)` for `Some(n)`) and
/// the model. `Err` describes the first disagreement and repeats the
/// sequence up to it without the steps that did nothing, which fails the
/// same way; a panic inside the map propagates as a panic.
pub(crate) fn run_with(limit: Option<usize>, ops: &[Op]) -> Result<Trace, String> {
    let mut effective = Vec::new();
    run_recording(limit, ops, &mut effective).map_err(|failure| {
        format!("{failure}\nthe same without its no-op steps (limit {limit:?}): {effective:?}")
    })
}

/// The interpreter's state: the real map's futures, promises and demand
/// handles next to the model.
struct Harness<'a> {
    /// The map, also as the `Arc` that owned promises clone.
    arc: &'a Arc<Map>,
    map: &'a Map,
    model: Model,
    // Dropped in this order (fields drop in declaration order), before the
    // map, also on an early return.
    real: Vec<Option<RealFuture<'a>>>,
    promises: Vec<Option<RealPromise<'a>>>,
    demands: Vec<Option<Demand<'a, u8, Tracked>>>,
    wakers: Vec<WakerRecord>,
    /// Per slot, for futures whose wake-ups are checked for presence only:
    /// the waker of the last `Pending` poll and its wake count then.
    pending_at: Vec<Option<(usize, usize)>>,
    /// Per slot: both wakers' wake counts together at the last poll.
    polled_at: Vec<Option<usize>>,
    values_alive: Arc<AtomicUsize>,
    next_value: u64,
    /// Every value that left the map so far.
    left_map: HashSet<u64>,
}

fn run_recording(
    limit: Option<usize>,
    ops: &[Op],
    effective: &mut Vec<Op>,
) -> Result<Trace, String> {
    let values_alive = live_counter();
    let map = Arc::new(match limit {
        Some(n) => Map::new().with_limit(n),
        None => Map::new(),
    });
    check!(
        map.limit() == limit,
        "setup",
        "limit() is {:?}, built with {limit:?}",
        map.limit()
    );
    let mut h = Harness {
        arc: &map,
        map: &map,
        model: Model::new(limit),
        real: (0..SLOTS).map(|_| None).collect(),
        promises: (0..KEYS).map(|_| None).collect(),
        demands: (0..DEMANDS).map(|_| None).collect(),
        wakers: Vec::new(),
        pending_at: vec![None; usize::from(SLOTS)],
        polled_at: vec![None; usize::from(SLOTS)],
        values_alive: Arc::clone(&values_alive),
        next_value: 0,
        left_map: HashSet::new(),
    };
    let mut trace = Trace::default();

    for (i, &op) in ops.iter().enumerate() {
        let at = format!("step {i} ({op:?})");
        if h.does_something(op) {
            effective.push(op);
        }
        let before = h.wake_counts();
        let mut events = h.step(i, op, &at)?;
        h.model.settle();
        h.record_wakes(&before, &mut events);
        trace.steps.push(events);
        h.check_state(&at)?;
    }

    // Drop what is left, one thing at a time: each drop may pass a baton or
    // the room for a value on, or abandon a promise.
    for s in 0..usize::from(SLOTS) {
        if let Some(fut) = h.real[s].take() {
            let before = h.wake_counts();
            drop(fut);
            h.model.drop_future(s);
            h.teardown_step(&before, &mut trace, &format!("teardown: drop slot {s}"))?;
        }
    }
    for key in 0..usize::from(KEYS) {
        if let Some(p) = h.promises[key].take() {
            let before = h.wake_counts();
            drop(p);
            h.model.abandon(key);
            h.teardown_step(
                &before,
                &mut trace,
                &format!("teardown: drop the promise of key {key}"),
            )?;
        }
    }
    for d in 0..usize::from(DEMANDS) {
        if let Some(handle) = h.demands[d].take() {
            let before = h.wake_counts();
            drop(handle);
            h.model.drop_demand();
            h.teardown_step(
                &before,
                &mut trace,
                &format!("teardown: drop demand handle {d}"),
            )?;
        }
    }
    check!(
        map.waiters() == 0,
        "teardown",
        "{} waiters after every future was dropped",
        map.waiters()
    );
    drop(h);
    check!(
        Arc::strong_count(&map) == 1,
        "teardown",
        "{} handles to the map remain after every promise was dropped",
        Arc::strong_count(&map)
    );
    drop(map);
    check!(
        live(&values_alive) == 0,
        "teardown",
        "{} values alive after the map was dropped",
        live(&values_alive)
    );
    Ok(trace)
}

impl<'a> Harness<'a> {
    fn does_something(&self, op: Op) -> bool {
        let slot_full = |slot: u8| self.real[usize::from(slot % SLOTS)].is_some();
        let promised = |key: u8| self.promises[usize::from(key % KEYS)].is_some();
        let handle = |h: u8| self.demands[usize::from(h % DEMANDS)].is_some();
        match op {
            Op::CreateGet { slot, .. }
            | Op::CreateTake { slot, .. }
            | Op::CreateGetOrPromise { slot, .. }
            | Op::CreateInsertAsync { slot, .. }
            | Op::CreateClosed { slot }
            | Op::CreateDrained { slot } => !slot_full(slot),
            Op::CreateNext { handle: d, slot } => !slot_full(slot) && handle(d),
            Op::Poll { slot, .. } | Op::Drop { slot } => slot_full(slot),
            Op::PollWoken => (0..usize::from(SLOTS)).any(|s| self.woken_since_poll(s)),
            Op::Fulfil { key } | Op::Abandon { key } | Op::DropPromise { key } => promised(key),
            Op::NewDemand { handle: d } => !handle(d),
            Op::DropDemand { handle: d } => handle(d),
            Op::Insert { .. }
            | Op::TryInsert { .. }
            | Op::Remove { .. }
            | Op::TryGet { .. }
            | Op::Cancel { .. }
            | Op::Close
            | Op::Promise { .. } => true,
        }
    }

    fn wake_counts(&self) -> Vec<usize> {
        self.wakers.iter().map(|w| w.counter.wakes()).collect()
    }

    fn fresh_value(&mut self) -> (u64, Tracked) {
        let id = self.next_value;
        self.next_value += 1;
        (id, Tracked::new(id, &self.values_alive))
    }

    /// A value that left the map (taken, removed or replaced).
    fn left(&mut self, v: u64, at: &str) -> Result<(), String> {
        check!(self.left_map.insert(v), at, "value {v} left the map twice");
        Ok(())
    }

    /// Puts a future into `slot` with two fresh wakers, in the map and the
    /// model.
    fn create(&mut self, i: usize, kind: Kind, key: u8, slot: u8, fut: RealFuture<'a>, value: u64) {
        let s = usize::from(slot);
        let first = self.wakers.len();
        for name in ["A", "B"] {
            let (counter, waker) = counting_waker();
            self.wakers.push(WakerRecord {
                counter,
                waker,
                slot,
                exact: kind.exact_wakes(),
                label: format!(
                    "waker {name} of the {kind:?} (key {key}) created in slot {slot} at step {i}"
                ),
            });
            self.model.expected_wakes.push(0);
        }
        self.real[s] = Some(fut);
        self.pending_at[s] = None;
        self.polled_at[s] = None;
        self.model
            .create(kind, usize::from(key), s, [first, first + 1], value);
    }

    fn step(&mut self, i: usize, op: Op, at: &str) -> Result<Vec<Event>, String> {
        let map = self.map;
        let mut events = Vec::new();
        match op {
            Op::CreateGet { key, slot }
            | Op::CreateTake { key, slot }
            | Op::CreateGetOrPromise { key, slot }
            | Op::CreateInsertAsync { key, slot } => {
                let (key, slot) = (key % KEYS, slot % SLOTS);
                if self.real[usize::from(slot)].is_none() {
                    let key_ref = &KEY_NAMES[usize::from(key)];
                    let (kind, fut, value) = match op {
                        Op::CreateGet { .. } => (Kind::Get, RealFuture::Get(map.get(key_ref)), 0),
                        Op::CreateTake { .. } => {
                            (Kind::Take, RealFuture::Take(map.take(key_ref)), 0)
                        }
                        Op::CreateGetOrPromise { .. } => (
                            Kind::GetOrPromise,
                            RealFuture::GetOrPromise(map.get_or_promise(key_ref)),
                            0,
                        ),
                        _ => {
                            let (id, value) = self.fresh_value();
                            let fut = RealFuture::InsertAsync(map.insert_async(key, value));
                            (Kind::InsertAsync, fut, id)
                        }
                    };
                    self.create(i, kind, key, slot, fut, value);
                }
            }
            Op::CreateClosed { slot } | Op::CreateDrained { slot } => {
                let slot = slot % SLOTS;
                if self.real[usize::from(slot)].is_none() {
                    let (kind, fut) = match op {
                        Op::CreateClosed { .. } => (Kind::Closed, RealFuture::Closed(map.closed())),
                        _ => (Kind::Drained, RealFuture::Drained(map.drained())),
                    };
                    self.create(i, kind, 0, slot, fut, 0);
                }
            }
            Op::CreateNext { handle, slot } => {
                let slot = slot % SLOTS;
                if self.real[usize::from(slot)].is_none() {
                    let next = self.demands[usize::from(handle % DEMANDS)]
                        .as_ref()
                        .map(|d| d.next());
                    if let Some(next) = next {
                        self.create(i, Kind::Next, 0, slot, RealFuture::Next(next), 0);
                    }
                }
            }
            Op::Poll { slot, waker } => {
                let slot = slot % SLOTS;
                if self.real[usize::from(slot)].is_some() {
                    events.push(self.poll(slot, waker, at)?);
                }
            }
            Op::PollWoken => {
                for _ in 0..3 {
                    let woken: Vec<usize> = (0..usize::from(SLOTS))
                        .filter(|&s| self.woken_since_poll(s))
                        .collect();
                    if woken.is_empty() {
                        break;
                    }
                    for s in woken {
                        // An earlier poll of this round may have completed
                        // nothing here, but check the slot is still full.
                        if self.real[s].is_some() {
                            let slot = u8::try_from(s).expect("a small slot");
                            events.push(self.poll(slot, WakerChoice::A, at)?);
                        }
                    }
                }
            }
            Op::Drop { slot } => {
                let s = usize::from(slot % SLOTS);
                drop(self.real[s].take());
                self.model.drop_future(s);
            }
            Op::Insert { key } => {
                let key = key % KEYS;
                let (value, tracked) = self.fresh_value();
                let replaced = map.insert(key, tracked).map(|v| v.id);
                let expected = self.model.insert(usize::from(key), value);
                check!(
                    replaced == expected,
                    at,
                    "insert replaced {replaced:?}, the model expected {expected:?}"
                );
                if let Some(old) = replaced {
                    self.left(old, at)?;
                }
                events.push(Event::Inserted {
                    key,
                    value,
                    replaced,
                });
            }
            Op::TryInsert { key } => {
                let key = key % KEYS;
                let (value, tracked) = self.fresh_value();
                let result = match map.try_insert(key, tracked) {
                    Ok(old) => Ok(old.map(|v| v.id)),
                    Err((k, v)) => {
                        check!(
                            k == key && v.id == value,
                            at,
                            "try_insert handed back ({k}, {}), not what it was given",
                            v.id
                        );
                        Err(())
                    }
                };
                let expected = self.model.try_insert(usize::from(key), value);
                check!(
                    result == expected,
                    at,
                    "try_insert returned {result:?}, the model expected {expected:?}"
                );
                if let Ok(Some(old)) = result {
                    self.left(old, at)?;
                }
                events.push(Event::TryInserted { key, value, result });
            }
            Op::Remove { key } => {
                let key = key % KEYS;
                let got = map.remove(&key).map(|v| v.id);
                let expected = self.model.remove(usize::from(key));
                check!(
                    got == expected,
                    at,
                    "remove returned {got:?}, the model expected {expected:?}"
                );
                if let Some(v) = got {
                    self.left(v, at)?;
                }
                events.push(Event::Removed { key, value: got });
            }
            Op::TryGet { key } => {
                // `check_state` compares `try_get` of every key after each
                // step; this step only adds a read between two others.
                let key = key % KEYS;
                let got = map.try_get(&key).map(|v| v.id);
                let expected = self.model.value(usize::from(key));
                check!(
                    got == expected,
                    at,
                    "try_get returned {got:?}, the model expected {expected:?}"
                );
            }
            Op::Cancel { key } => {
                let key = key % KEYS;
                let count = map.cancel(&key);
                let expected = self.model.cancel(usize::from(key));
                check!(
                    count == expected,
                    at,
                    "cancel failed {count} futures, the model expected {expected}"
                );
                events.push(Event::Cancelled { key, count });
            }
            Op::Close => {
                map.close();
                self.model.close();
            }
            Op::Promise { key, owned } => {
                let key = key % KEYS;
                let k = usize::from(key);
                let promise = if owned {
                    self.arc.promise_owned(key).map(RealPromise::Owned)
                } else {
                    map.promise(key).map(RealPromise::Borrowed)
                };
                let granted = promise.is_some();
                let expected = self.model.promise(k);
                check!(
                    granted == expected,
                    at,
                    "promise was {}, the model expected it {}",
                    if granted { "granted" } else { "refused" },
                    if expected { "granted" } else { "refused" }
                );
                if let Some(p) = promise {
                    // The model granted it too, so the key had no promise.
                    self.promises[k] = Some(p);
                }
                events.push(Event::Promised { key, granted });
            }
            Op::Fulfil { key } => {
                let key = key % KEYS;
                let k = usize::from(key);
                if let Some(p) = self.promises[k].take() {
                    let (value, tracked) = self.fresh_value();
                    let replaced = p.fulfill(tracked).map(|v| v.id);
                    let expected = self.model.fulfill(k, value);
                    check!(
                        replaced == expected,
                        at,
                        "fulfill replaced {replaced:?}, the model expected {expected:?}"
                    );
                    if let Some(old) = replaced {
                        self.left(old, at)?;
                    }
                    events.push(Event::Fulfilled {
                        key,
                        value,
                        replaced,
                    });
                }
            }
            Op::Abandon { key } => {
                let key = key % KEYS;
                let k = usize::from(key);
                if let Some(p) = self.promises[k].take() {
                    let woke = p.abandon();
                    let expected = self.model.abandon(k);
                    check!(
                        woke == expected,
                        at,
                        "abandon woke {woke} futures, the model expected {expected}"
                    );
                    events.push(Event::Abandoned {
                        key,
                        woke: Some(woke),
                    });
                }
            }
            Op::DropPromise { key } => {
                let key = key % KEYS;
                let k = usize::from(key);
                if let Some(p) = self.promises[k].take() {
                    drop(p);
                    self.model.abandon(k);
                    events.push(Event::Abandoned { key, woke: None });
                }
            }
            Op::NewDemand { handle } => {
                let d = usize::from(handle % DEMANDS);
                if self.demands[d].is_none() {
                    self.demands[d] = Some(map.demand());
                    self.model.new_demand();
                }
            }
            Op::DropDemand { handle } => {
                let d = usize::from(handle % DEMANDS);
                if let Some(handle) = self.demands[d].take() {
                    drop(handle);
                    self.model.drop_demand();
                }
            }
        }
        Ok(events)
    }

    /// Polls the future in `slot` (occupied) in the map and the model and
    /// compares the outcomes.
    fn poll(&mut self, slot: u8, waker: WakerChoice, at: &str) -> Result<Event, String> {
        let s = usize::from(slot);
        let (kind, key) = self
            .model
            .kind_and_key(s)
            .expect("model and map agree on the slots");
        let w = self.model.wakers(s)[match waker {
            WakerChoice::A => 0,
            WakerChoice::B => 1,
        }];
        let [a, b] = self.model.wakers(s);
        self.polled_at[s] = Some(self.wakers[a].counter.wakes() + self.wakers[b].counter.wakes());
        let fut = self.real[s].as_mut().expect("checked by the caller");
        let got = fut.poll(&self.wakers[w].waker);
        let expected = self.model.poll(s, w);
        let got = match got {
            Poll::Pending => {
                self.pending_at[s] = Some((w, self.wakers[w].counter.wakes()));
                Poll::Pending
            }
            Poll::Ready(r) => {
                // Completed: never polled again (that panics by design).
                self.real[s] = None;
                Poll::Ready(self.reduce(kind, key, r, at)?)
            }
        };
        check!(
            got == expected,
            at,
            "poll of the {kind:?} in slot {slot} returned {got:?}, the model expected {expected:?}"
        );
        Ok(match got {
            Poll::Pending => Event::Pending { slot },
            Poll::Ready(Outcome::Wait(result)) => Event::Ready { slot, result },
            Poll::Ready(outcome) => Event::Resolved { slot, outcome },
        })
    }

    /// A real outcome in terms of value ids. Values are dropped here; a
    /// taken or replaced one is noted as having left the map (a `get`'s is
    /// a clone). A promise goes to its key's slot.
    fn reduce(
        &mut self,
        kind: Kind,
        key: usize,
        r: RealOutcome<'a>,
        at: &str,
    ) -> Result<Outcome, String> {
        Ok(match r {
            RealOutcome::Wait(r) => {
                let r = r.map(|v| v.id);
                if let (Kind::Take, Ok(v)) = (kind, r) {
                    self.left(v, at)?;
                }
                Outcome::Wait(r)
            }
            RealOutcome::Coalesced(r) => Outcome::Coalesced(match r {
                Ok(ValueOrPromise::Value(v)) => Ok(Coalesced::Value(v.id)),
                Ok(ValueOrPromise::Promise(p)) => {
                    check!(
                        self.promises[key].is_none(),
                        at,
                        "get_or_promise handed out a second promise for key {key}"
                    );
                    self.promises[key] = Some(RealPromise::Borrowed(p));
                    Ok(Coalesced::Promise)
                }
                Err(e) => Err(e),
            }),
            RealOutcome::Stored(old) => {
                let old = old.map(|v| v.id);
                if let Some(v) = old {
                    self.left(v, at)?;
                }
                Outcome::Stored(old)
            }
            RealOutcome::Closed => Outcome::Closed,
            RealOutcome::Drained => Outcome::Drained,
            RealOutcome::Wanted(k) => Outcome::Wanted(k),
        })
    }

    /// Notes which futures were woken during the step, in slot order.
    fn record_wakes(&self, before: &[usize], events: &mut Vec<Event>) {
        let mut woken: Vec<u8> = self
            .wakers
            .iter()
            .zip(before)
            .filter(|(w, b)| w.counter.wakes() > **b)
            .map(|(w, _)| w.slot)
            .collect();
        woken.sort_unstable();
        woken.dedup();
        events.extend(woken.into_iter().map(|slot| Event::Woken { slot }));
    }

    fn teardown_step(
        &mut self,
        before: &[usize],
        trace: &mut Trace,
        at: &str,
    ) -> Result<(), String> {
        self.model.settle();
        let mut events = Vec::new();
        self.record_wakes(before, &mut events);
        trace.steps.push(events);
        self.check_state(at)
    }

    /// Whether the future in `slot` (polled before) has been woken since its
    /// last poll, on either waker.
    fn woken_since_poll(&self, slot: usize) -> bool {
        let (Some(then), Some(_)) = (self.polled_at[slot], &self.real[slot]) else {
            return false;
        };
        let [a, b] = self.model.wakers(slot);
        self.wakers[a].counter.wakes() + self.wakers[b].counter.wakes() > then
    }

    /// Whether the future in `slot` has been woken, on the waker of its last
    /// `Pending` poll, since that poll.
    fn woken_since_pending(&self, slot: usize) -> bool {
        self.pending_at[slot].is_some_and(|(w, then)| self.wakers[w].counter.wakes() > then)
    }

    /// Compares everything observable without changing the map.
    fn check_state(&self, at: &str) -> Result<(), String> {
        let (map, model) = (self.map, &self.model);
        // The map's own bookkeeping first: a broken invariant explains any
        // disagreement below.
        let invariants = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            map.check_invariants();
        }));
        if let Err(payload) = invariants {
            return Err(format!("{at}: {}", crate::common::panic_message(payload)));
        }
        for (i, w) in self.wakers.iter().enumerate() {
            if !w.exact {
                continue;
            }
            let (got, expected) = (w.counter.wakes(), model.expected_wakes[i]);
            check!(
                got == expected,
                at,
                "{} woken {got} times, the model expected {expected}",
                w.label
            );
        }
        // `drained()`: once nobody waits, every waiting one was woken.
        for s in 0..usize::from(SLOTS) {
            if model.drained_due(s) {
                check!(
                    self.woken_since_pending(s),
                    at,
                    "the drained() future in slot {s} was not woken although nobody waits"
                );
            }
        }
        // `demand.next()`: every announced key still wanted has a woken
        // `next()` to pick it up, as far as there are waiting ones; after
        // `close`, every waiting one is woken (it resolves, `None` at last).
        let waiting_next: Vec<usize> = (0..usize::from(SLOTS))
            .filter(|&s| model.kind_and_key(s).is_some_and(|(k, _)| k == Kind::Next))
            .filter(|&s| model.is_waiting(s))
            .collect();
        let woken_next = waiting_next
            .iter()
            .filter(|&&s| self.woken_since_pending(s))
            .count();
        let owed = if model.closed {
            waiting_next.len()
        } else {
            model.wanted_now().min(waiting_next.len())
        };
        check!(
            woken_next >= owed,
            at,
            "{woken_next} of the waiting demand.next() futures {waiting_next:?} were woken, \
             {} keys are wanted and unclaimed (closed: {}): {owed} should have been",
            model.wanted_now(),
            model.closed
        );
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
        check!(
            map.limit() == model.limit,
            at,
            "limit() {:?} != model {:?}",
            map.limit(),
            model.limit
        );
        for key in 0..KEYS {
            let expected = model.value(usize::from(key));
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
            check!(
                self.promises[usize::from(key)].is_some() == model.is_promised(usize::from(key)),
                at,
                "the model and the interpreter disagree on whether key {key} has a promise"
            );
        }
        // Every value that left the map was dropped: the live ones are the
        // stored ones and those the `insert_async` futures still hold.
        let expected_alive = model.len() + model.held_values();
        check!(
            live(&self.values_alive) == expected_alive,
            at,
            "{} values alive, the model expects {expected_alive} ({} stored, {} held by insert_async)",
            live(&self.values_alive),
            model.len(),
            model.held_values()
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
}
