//! Model-based tests: random sequences of operations run against the real
//! map and a reference model written from the documentation, compared after
//! every step (see `model/mod.rs`). The fuzz target in `fuzz/` runs the same
//! interpreter.
//!
//! Two random mixes: the consumer side alone (create, poll and drop `get`s
//! and `take`s on a few keys; insert, remove, try_get, cancel, close) on a map
//! without a limit, and both sides together (adding `get_or_promise`,
//! promises, `try_insert` and `insert_async` under a small limit, demand
//! handles and their `next()`, `closed()` and `drained()`).
//!
//! `PROPTEST_CASES` sets the number of random sequences of each mix (default
//! 3,000).
// Drives the producer side too (limits, demand, `drained`, `closed`).
#![cfg(feature = "producer")]

mod common;
#[path = "model/mod.rs"]
mod model;

use Event::{Abandoned, Cancelled, Inserted, Pending, Ready, Resolved, TryInserted, Woken};
use WakerChoice::{A, B};
use awaitmap::WaitError;
use model::{Coalesced, DEMANDS, Event, KEYS, Op, Outcome, SLOTS, WakerChoice};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngAlgorithm};

/// Longest random sequence, in operations.
const MAX_OPS: usize = 60;
/// Fragments (one to four operations each) drawn per sequence, before the
/// sequence is cut to `MAX_OPS`.
const MAX_FRAGMENTS: usize = 45;

fn cases() -> u32 {
    let default = if cfg!(miri) { 8 } else { 3_000 };
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn config() -> Config {
    let defaults = Config::default();
    Config {
        cases: cases(),
        // Unoptimised, the default ChaCha generator costs more than running
        // the sequences; XorShift is plenty for drawing operations.
        // `PROPTEST_RNG_ALGORITHM` still chooses.
        rng_algorithm: if std::env::var_os("PROPTEST_RNG_ALGORITHM").is_some() {
            defaults.rng_algorithm
        } else {
            RngAlgorithm::XorShift
        },
        // Miri's isolation forbids the file system.
        failure_persistence: if cfg!(miri) {
            None
        } else {
            Some(Box::new(FileFailurePersistence::WithSource(
                "proptest-regressions",
            )))
        },
        ..defaults
    }
}

fn any_waker() -> impl Strategy<Value = WakerChoice> {
    prop_oneof![Just(A), Just(B)]
}

/// Key 0 is drawn more often, so futures meet on one key.
fn any_key() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![4 => Just(0), 1 => 1..KEYS]
}

/// Slots 0 and 1 are drawn more often, so operations meet the futures there.
fn any_slot() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![2 => 0..2_u8, 1 => 2..SLOTS]
}

/// A fragment of a consumer-side sequence: mostly one operation, sometimes a
/// short idiom that reaches the interesting states more often than
/// independent draws would (a future created and polled at once; two takes
/// queued on one key; an insert followed by a drop, which may drop the take
/// it just woke).
///
/// `Close` is rare: it is permanent, and most of a sequence should run on an
/// open map (about one sequence in three closes).
fn fragment() -> impl Strategy<Value = Vec<Op>> {
    let key = any_key();
    let slot = any_slot();
    let ks = (key.clone(), slot.clone());
    prop_oneof![
        12 => ks.clone().prop_map(|(key, slot)| vec![Op::CreateGet { key, slot }]),
        18 => ks.clone().prop_map(|(key, slot)| vec![Op::CreateTake { key, slot }]),
        12 => ks
            .clone()
            .prop_map(|(key, slot)| vec![Op::CreateGet { key, slot }, poll(slot, A)]),
        18 => ks
            .clone()
            .prop_map(|(key, slot)| vec![Op::CreateTake { key, slot }, poll(slot, A)]),
        6 => (key.clone(), slot.clone(), slot.clone()).prop_map(|(key, a, b)| vec![
            Op::CreateTake { key, slot: a },
            poll(a, A),
            Op::CreateTake { key, slot: b },
            poll(b, A),
        ]),
        30 => (slot.clone(), any_waker()).prop_map(|(slot, waker)| vec![poll(slot, waker)]),
        6 => Just(vec![Op::PollWoken]),
        12 => slot.clone().prop_map(|slot| vec![Op::Drop { slot }]),
        9 => key.clone().prop_map(|key| vec![Op::Insert { key }]),
        6 => ks.prop_map(|(key, slot)| vec![Op::Insert { key }, Op::Drop { slot }]),
        6 => key.clone().prop_map(|key| vec![Op::Remove { key }]),
        3 => key.clone().prop_map(|key| vec![Op::TryGet { key }]),
        6 => key.prop_map(|key| vec![Op::Cancel { key }]),
        1 => Just(vec![Op::Close]),
    ]
}

/// A fragment of a sequence that mixes both sides. The consumer operations
/// are there (`get_or_promise` among them) so that promises, limits and
/// demand have someone to serve; the idioms put several futures on one key
/// or in the producers' queue at once.
fn producer_fragment() -> impl Strategy<Value = Vec<Op>> {
    let key = any_key();
    let slot = any_slot();
    let handle = 0..DEMANDS;
    let ks = (key.clone(), slot.clone());
    prop_oneof![
        6 => ks.clone().prop_map(|(key, slot)| vec![Op::CreateGet { key, slot }, poll(slot, A)]),
        8 => ks.clone().prop_map(|(key, slot)| vec![Op::CreateTake { key, slot }, poll(slot, A)]),
        3 => ks.clone().prop_map(|(key, slot)| vec![Op::CreateTake { key, slot }]),
        8 => ks.clone().prop_map(|(key, slot)| vec![
            Op::CreateGetOrPromise { key, slot },
            poll(slot, A),
        ]),
        2 => ks.clone().prop_map(|(key, slot)| vec![Op::CreateGetOrPromise { key, slot }]),
        8 => ks.clone().prop_map(|(key, slot)| vec![
            Op::CreateInsertAsync { key, slot },
            poll(slot, A),
        ]),
        2 => ks.clone().prop_map(|(key, slot)| vec![Op::CreateInsertAsync { key, slot }]),
        3 => (key.clone(), slot.clone(), slot.clone()).prop_map(|(key, a, b)| vec![
            Op::CreateGetOrPromise { key, slot: a },
            poll(a, A),
            Op::CreateGetOrPromise { key, slot: b },
            poll(b, A),
        ]),
        3 => (key.clone(), key.clone(), slot.clone(), slot.clone()).prop_map(|(k1, k2, a, b)| vec![
            Op::CreateInsertAsync { key: k1, slot: a },
            poll(a, A),
            Op::CreateInsertAsync { key: k2, slot: b },
            poll(b, A),
        ]),
        2 => slot.clone().prop_map(|slot| vec![Op::CreateClosed { slot }, poll(slot, A)]),
        3 => slot.clone().prop_map(|slot| vec![Op::CreateDrained { slot }, poll(slot, A)]),
        5 => (handle.clone(), slot.clone()).prop_map(|(handle, slot)| vec![
            Op::CreateNext { handle, slot },
            poll(slot, A),
        ]),
        4 => (handle.clone(), slot.clone(), key.clone(), slot.clone()).prop_map(
            |(handle, n, key, s)| vec![
                Op::CreateNext { handle, slot: n },
                poll(n, A),
                Op::CreateGet { key, slot: s },
                poll(s, A),
            ]
        ),
        20 => (slot.clone(), any_waker()).prop_map(|(slot, waker)| vec![poll(slot, waker)]),
        10 => Just(vec![Op::PollWoken]),
        10 => slot.clone().prop_map(|slot| vec![Op::Drop { slot }]),
        5 => key.clone().prop_map(|key| vec![Op::Insert { key }]),
        6 => key.clone().prop_map(|key| vec![Op::TryInsert { key }]),
        6 => key.clone().prop_map(|key| vec![Op::Remove { key }]),
        1 => key.clone().prop_map(|key| vec![Op::TryGet { key }]),
        3 => key.clone().prop_map(|key| vec![Op::Cancel { key }]),
        7 => (key.clone(), any::<bool>()).prop_map(|(key, owned)| vec![Op::Promise { key, owned }]),
        5 => key.clone().prop_map(|key| vec![Op::Fulfil { key }]),
        3 => key.clone().prop_map(|key| vec![Op::Abandon { key }]),
        3 => key.clone().prop_map(|key| vec![Op::DropPromise { key }]),
        2 => handle.clone().prop_map(|handle| vec![Op::NewDemand { handle }]),
        3 => (handle.clone(), key.clone(), slot.clone()).prop_map(|(handle, key, s)| vec![
            Op::NewDemand { handle },
            Op::CreateTake { key, slot: s },
            poll(s, A),
        ]),
        3 => (key.clone(), any::<bool>(), slot.clone()).prop_map(|(key, owned, s)| vec![
            Op::Promise { key, owned },
            Op::CreateGet { key, slot: s },
            poll(s, A),
        ]),
        // Churn: a key wanted and given up again, announced each time.
        2 => (key.clone(), slot.clone()).prop_map(|(key, s)| vec![
            Op::CreateTake { key, slot: s },
            poll(s, A),
            Op::Drop { slot: s },
        ]),
        1 => handle.prop_map(|handle| vec![Op::DropDemand { handle }]),
        1 => Just(vec![Op::Close]),
    ]
}

/// The limit of a mixed sequence's map: mostly 1 or 2 (with 3 keys, full
/// often), sometimes 0 (only replacing and a closed map let values in) or
/// none.
fn any_limit() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(0)),
        4 => Just(Some(1)),
        3 => Just(Some(2)),
    ]
}

/// A mixed sequence; half of them start with a demand handle, so that the
/// keys consumers start waiting for are announced.
fn producer_sequence() -> impl Strategy<Value = Vec<Op>> {
    (any::<bool>(), sequence_of(producer_fragment())).prop_map(|(watch, mut ops)| {
        if watch {
            ops.insert(0, Op::NewDemand { handle: 0 });
            ops.truncate(MAX_OPS);
        }
        ops
    })
}

/// A sequence of at most `MAX_OPS` operations made of `fragments`.
fn sequence_of(fragments: impl Strategy<Value = Vec<Op>>) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(fragments, 0..=MAX_FRAGMENTS).prop_map(|fragments| {
        let mut ops: Vec<Op> = fragments.into_iter().flatten().collect();
        ops.truncate(MAX_OPS);
        ops
    })
}

proptest! {
    #![proptest_config(config())]

    // Guarantees 1–9 and 12 together: any sequence of operations leaves the
    // map, every future's outcome and every waker's wake count where the
    // model says, and conserves values.
    #[test]
    fn random_sequences_match_the_model(ops in sequence_of(fragment())) {
        if let Err(e) = model::run(&ops) {
            return Err(TestCaseError::fail(e));
        }
    }

    // The producer side with the consumer side: promises (fulfilled,
    // abandoned, dropped, handed over between `get_or_promise` callers), the
    // limit (`try_insert`, `insert_async` let in one per value that leaves,
    // in order), demand (`next()` hands each newly wanted key out once),
    // `closed()` and `drained()`.
    #[test]
    fn random_producer_sequences_match_the_model(
        limit in any_limit(),
        ops in producer_sequence(),
    ) {
        if let Err(e) = model::run_with(limit, &ops) {
            return Err(TestCaseError::fail(e));
        }
    }
}

// ---------------------------------------------------------------------------
// Hand-written sequences. Besides the model's checks, each asserts the
// outcomes it was written for, so the model itself is checked against a
// reading of the guarantees in the crate docs.
// ---------------------------------------------------------------------------

fn create_get(key: u8, slot: u8) -> Op {
    Op::CreateGet { key, slot }
}
fn create_take(key: u8, slot: u8) -> Op {
    Op::CreateTake { key, slot }
}
fn poll(slot: u8, waker: WakerChoice) -> Op {
    Op::Poll { slot, waker }
}
fn create_gop(key: u8, slot: u8) -> Op {
    Op::CreateGetOrPromise { key, slot }
}
fn create_insert_async(key: u8, slot: u8) -> Op {
    Op::CreateInsertAsync { key, slot }
}
fn ready(slot: u8, result: Result<u64, WaitError>) -> Event {
    Ready { slot, result }
}
fn resolved(slot: u8, outcome: Outcome) -> Event {
    Resolved { slot, outcome }
}
fn promise_to(slot: u8) -> Event {
    resolved(slot, Outcome::Coalesced(Ok(Coalesced::Promise)))
}

// Guarantees 1 and 6: insert wakes every get and only the first take; a woken
// take that is dropped passes the baton to the next take, which gets the
// value.
#[test]
fn dropped_baton_take_hands_the_value_to_the_next_take() {
    let ops = [
        create_take(0, 0),
        create_take(0, 1),
        create_get(0, 2),
        poll(0, A),
        poll(1, A),
        poll(2, A),
        Op::Insert { key: 0 },
        Op::Drop { slot: 0 },
        poll(2, A),
        poll(1, B),
    ];
    let t = model::run(&ops).unwrap();
    assert_eq!(
        t.steps[6],
        [
            Inserted {
                key: 0,
                value: 0,
                replaced: None
            },
            Woken { slot: 0 },
            Woken { slot: 2 }
        ]
    );
    assert_eq!(t.steps[7], [Woken { slot: 1 }]);
    assert_eq!(
        t.steps[8],
        [Ready {
            slot: 2,
            result: Ok(0)
        }]
    );
    assert_eq!(
        t.steps[9],
        [Ready {
            slot: 1,
            result: Ok(0)
        }]
    );
}

// Guarantees 2 and 6: a fresh take takes a present value from under the woken
// baton take, which then waits again, still first in line: the next insert
// wakes it, not the take behind it.
#[test]
fn baton_take_that_lost_the_value_stays_first_in_line() {
    let ops = [
        create_take(1, 0),
        create_take(1, 1),
        poll(0, A),
        poll(1, A),
        Op::Insert { key: 1 },
        create_take(1, 2),
        poll(2, A),
        poll(0, B),
        Op::Insert { key: 1 },
        poll(0, B),
    ];
    let t = model::run(&ops).unwrap();
    assert_eq!(t.steps[4][1..], [Woken { slot: 0 }]);
    assert_eq!(
        t.steps[6],
        [Ready {
            slot: 2,
            result: Ok(0)
        }]
    );
    assert_eq!(t.steps[7], [Pending { slot: 0 }]);
    assert_eq!(t.steps[8][1..], [Woken { slot: 0 }]);
    assert_eq!(
        t.steps[9],
        [Ready {
            slot: 0,
            result: Ok(1)
        }]
    );
    // Slot 1 was never woken and is dropped at teardown, passing nothing.
    assert_eq!(t.steps[10], []);
}

// Guarantee 8: with a value present, cancel fails only the takes without the
// baton; the gets and the baton take still get the value; a cancelled take
// stays cancelled although the value is there; cancel is not sticky.
#[test]
fn cancel_with_a_value_present_spares_gets_and_the_baton_take() {
    let ops = [
        create_get(1, 0),
        create_take(1, 1),
        create_take(1, 2),
        poll(0, A),
        poll(1, A),
        poll(2, A),
        Op::Insert { key: 1 },
        Op::Cancel { key: 1 },
        poll(2, A),
        poll(0, A),
        poll(1, A),
        Op::Cancel { key: 1 },
        create_get(1, 3),
        poll(3, B),
        Op::Insert { key: 1 },
        poll(3, B),
    ];
    let t = model::run(&ops).unwrap();
    assert_eq!(t.steps[6][1..], [Woken { slot: 0 }, Woken { slot: 1 }]);
    assert_eq!(
        t.steps[7],
        [Cancelled { key: 1, count: 1 }, Woken { slot: 2 }]
    );
    assert_eq!(
        t.steps[8],
        [Ready {
            slot: 2,
            result: Err(WaitError::Cancelled)
        }]
    );
    assert_eq!(
        t.steps[9],
        [Ready {
            slot: 0,
            result: Ok(0)
        }]
    );
    assert_eq!(
        t.steps[10],
        [Ready {
            slot: 1,
            result: Ok(0)
        }]
    );
    assert_eq!(t.steps[11], [Cancelled { key: 1, count: 0 }]);
    assert_eq!(t.steps[13], [Pending { slot: 3 }]);
    assert_eq!(
        t.steps[15],
        [Ready {
            slot: 3,
            result: Ok(1)
        }]
    );
}

// Guarantee 9: close fails the waiting futures of absent keys and the takes
// without the baton, but the take holding the baton still gets its value;
// after close an absent key fails at once and insert still stores.
#[test]
fn close_spares_the_baton_take_and_still_stores() {
    let ops = [
        create_take(2, 0),
        create_take(2, 1),
        create_get(0, 2),
        poll(0, A),
        poll(1, A),
        poll(2, A),
        Op::Insert { key: 2 },
        Op::Close,
        poll(1, A),
        poll(2, A),
        poll(0, B),
        create_get(2, 3),
        poll(3, A),
        Op::Insert { key: 2 },
        create_take(2, 4),
        poll(4, A),
    ];
    let t = model::run(&ops).unwrap();
    assert_eq!(t.steps[6][1..], [Woken { slot: 0 }]);
    assert_eq!(t.steps[7], [Woken { slot: 1 }, Woken { slot: 2 }]);
    assert_eq!(
        t.steps[8],
        [Ready {
            slot: 1,
            result: Err(WaitError::Closed)
        }]
    );
    assert_eq!(
        t.steps[9],
        [Ready {
            slot: 2,
            result: Err(WaitError::Closed)
        }]
    );
    assert_eq!(
        t.steps[10],
        [Ready {
            slot: 0,
            result: Ok(0)
        }]
    );
    assert_eq!(
        t.steps[12],
        [Ready {
            slot: 3,
            result: Err(WaitError::Closed)
        }]
    );
    assert_eq!(
        t.steps[15],
        [Ready {
            slot: 4,
            result: Ok(1)
        }]
    );
}

// ---------------------------------------------------------------------------
// Hand-written sequences for the producer side.
// ---------------------------------------------------------------------------

// A promise dropped unfulfilled fails the plain `get`s and `take`s waiting
// on its key with `Abandoned` at once, each woken once, and tells the
// waiting `get_or_promise` callers to start over: the first of them to be
// polled (not the first registered) becomes the producer, the others wait
// for it. Abandoning is not sticky: a `get` made afterwards waits as usual.
#[test]
fn abandoned_promise_fails_gets_and_takes_and_restarts_get_or_promise() {
    let ops = [
        Op::Promise {
            key: 0,
            owned: true,
        },
        create_get(0, 0),
        create_take(0, 1),
        create_gop(0, 2),
        create_gop(0, 3),
        poll(0, A),
        poll(1, A),
        poll(2, A),
        poll(3, A),
        Op::Abandon { key: 0 },
        poll(0, B),
        poll(1, B),
        create_get(0, 4),
        poll(4, A),
        poll(3, A),
        poll(2, A),
        Op::Fulfil { key: 0 },
        poll(2, B),
        poll(4, A),
    ];
    let t = model::run(&ops).unwrap();
    assert_eq!(
        t.steps[0],
        [Event::Promised {
            key: 0,
            granted: true
        }]
    );
    // The promise holds the key: `get_or_promise` waits like a `get`.
    assert_eq!(t.steps[7], [Pending { slot: 2 }]);
    assert_eq!(t.steps[8], [Pending { slot: 3 }]);
    assert_eq!(
        t.steps[9],
        [
            Abandoned {
                key: 0,
                woke: Some(4)
            },
            Woken { slot: 0 },
            Woken { slot: 1 },
            Woken { slot: 2 },
            Woken { slot: 3 }
        ]
    );
    assert_eq!(t.steps[10], [ready(0, Err(WaitError::Abandoned))]);
    assert_eq!(t.steps[11], [ready(1, Err(WaitError::Abandoned))]);
    assert_eq!(t.steps[13], [Pending { slot: 4 }]);
    assert_eq!(t.steps[14], [promise_to(3)]);
    assert_eq!(t.steps[15], [Pending { slot: 2 }]);
    assert_eq!(
        t.steps[16],
        [
            Event::Fulfilled {
                key: 0,
                value: 0,
                replaced: None
            },
            Woken { slot: 2 },
            Woken { slot: 4 }
        ]
    );
    assert_eq!(
        t.steps[17],
        [resolved(2, Outcome::Coalesced(Ok(Coalesced::Value(0))))]
    );
    assert_eq!(t.steps[18], [ready(4, Ok(0))]);
}

// A promise abandoned after a plain `insert` stored a value leaves alone
// the futures that value serves (the `get` and the `take` holding the
// baton); only the other `take` fails.
#[test]
fn abandon_spares_the_futures_a_stored_value_serves() {
    let ops = [
        Op::Promise {
            key: 1,
            owned: false,
        },
        create_get(1, 0),
        create_take(1, 1),
        create_take(1, 2),
        poll(0, A),
        poll(1, A),
        poll(2, A),
        Op::Insert { key: 1 },
        Op::Abandon { key: 1 },
        poll(2, A),
        poll(0, A),
        poll(1, A),
    ];
    let t = model::run(&ops).unwrap();
    assert_eq!(t.steps[7][1..], [Woken { slot: 0 }, Woken { slot: 1 }]);
    assert_eq!(
        t.steps[8],
        [
            Abandoned {
                key: 1,
                woke: Some(1)
            },
            Woken { slot: 2 }
        ]
    );
    assert_eq!(t.steps[9], [ready(2, Err(WaitError::Abandoned))]);
    assert_eq!(t.steps[10], [ready(0, Ok(0))]);
    assert_eq!(t.steps[11], [ready(1, Ok(0))]);
}

// Coalescing: the first `get_or_promise` becomes the producer and nobody can
// promise the key again; each time the producer gives up (dropped, then
// abandoned explicitly), the work goes to the next waiting caller that is
// polled, until one fulfils it.
#[test]
fn the_work_passes_from_one_get_or_promise_to_the_next() {
    let ops = [
        create_gop(1, 0),
        poll(0, A),
        create_gop(1, 1),
        poll(1, A),
        create_gop(1, 2),
        poll(2, A),
        Op::Promise {
            key: 1,
            owned: true,
        },
        Op::DropPromise { key: 1 },
        poll(2, A),
        poll(1, A),
        Op::Abandon { key: 1 },
        poll(1, B),
        Op::Fulfil { key: 1 },
        create_gop(1, 3),
        poll(3, A),
    ];
    let t = model::run(&ops).unwrap();
    assert_eq!(t.steps[1], [promise_to(0)]);
    assert_eq!(t.steps[3], [Pending { slot: 1 }]);
    assert_eq!(t.steps[5], [Pending { slot: 2 }]);
    assert_eq!(
        t.steps[6],
        [Event::Promised {
            key: 1,
            granted: false
        }]
    );
    assert_eq!(
        t.steps[7],
        [
            Abandoned { key: 1, woke: None },
            Woken { slot: 1 },
            Woken { slot: 2 }
        ]
    );
    assert_eq!(t.steps[8], [promise_to(2)]);
    assert_eq!(t.steps[9], [Pending { slot: 1 }]);
    assert_eq!(
        t.steps[10],
        [
            Abandoned {
                key: 1,
                woke: Some(1)
            },
            Woken { slot: 1 }
        ]
    );
    assert_eq!(t.steps[11], [promise_to(1)]);
    assert_eq!(
        t.steps[12],
        [Event::Fulfilled {
            key: 1,
            value: 0,
            replaced: None
        }]
    );
    assert_eq!(
        t.steps[14],
        [resolved(3, Outcome::Coalesced(Ok(Coalesced::Value(0))))]
    );
}

// Under a limit of one value: `try_insert` refuses a new key when full but
// may replace; each value that leaves lets one waiting producer in, the
// earliest first; one let in that finds the room taken (here by a
// `try_insert`) waits again at the back; one dropped after it was let in
// passes the room on; a closed map lets everyone in, beyond the limit.
#[test]
fn the_limit_lets_producers_in_one_per_freed_value_in_order() {
    let ops = [
        Op::Insert { key: 0 },
        create_insert_async(1, 0),
        poll(0, A),
        create_insert_async(2, 1),
        poll(1, A),
        create_insert_async(1, 2),
        poll(2, A),
        Op::TryInsert { key: 1 },
        Op::TryInsert { key: 0 },
        Op::Remove { key: 0 },
        Op::TryInsert { key: 2 },
        poll(0, A),
        Op::Remove { key: 2 },
        Op::Drop { slot: 1 },
        poll(2, A),
        create_take(1, 3),
        poll(3, A),
        poll(0, B),
        create_insert_async(2, 4),
        poll(4, A),
        create_insert_async(0, 5),
        poll(5, A),
        Op::Close,
        poll(5, A),
        poll(4, A),
    ];
    let t = model::run_with(Some(1), &ops).unwrap();
    // Full: every producer waits.
    assert_eq!(t.steps[2], [Pending { slot: 0 }]);
    assert_eq!(t.steps[4], [Pending { slot: 1 }]);
    assert_eq!(t.steps[6], [Pending { slot: 2 }]);
    assert_eq!(
        t.steps[7],
        [TryInserted {
            key: 1,
            value: 4,
            result: Err(())
        }]
    );
    assert_eq!(
        t.steps[8],
        [TryInserted {
            key: 0,
            value: 5,
            result: Ok(Some(0))
        }]
    );
    // One value left: the earliest producer, and only it, is let in.
    assert_eq!(
        t.steps[9],
        [
            Event::Removed {
                key: 0,
                value: Some(5)
            },
            Woken { slot: 0 }
        ]
    );
    assert_eq!(
        t.steps[10],
        [TryInserted {
            key: 2,
            value: 6,
            result: Ok(None)
        }]
    );
    // The room is gone: slot 0 waits again, now behind slots 1 and 2.
    assert_eq!(t.steps[11], [Pending { slot: 0 }]);
    assert_eq!(
        t.steps[12],
        [
            Event::Removed {
                key: 2,
                value: Some(6)
            },
            Woken { slot: 1 }
        ]
    );
    // Slot 1 gives up: its room goes to slot 2.
    assert_eq!(t.steps[13], [Woken { slot: 2 }]);
    assert_eq!(t.steps[14], [resolved(2, Outcome::Stored(None))]);
    assert_eq!(t.steps[16], [ready(3, Ok(3)), Woken { slot: 0 }]);
    assert_eq!(t.steps[17], [resolved(0, Outcome::Stored(None))]);
    assert_eq!(t.steps[19], [Pending { slot: 4 }]);
    assert_eq!(t.steps[21], [Pending { slot: 5 }]);
    assert_eq!(t.steps[22], [Woken { slot: 4 }, Woken { slot: 5 }]);
    assert_eq!(t.steps[23], [resolved(5, Outcome::Stored(None))]);
    assert_eq!(t.steps[24], [resolved(4, Outcome::Stored(None))]);
}

// Demand: a key is announced when a consumer starts waiting on it with
// nothing else there, once however many wait; the waiting `next()` is
// woken for it. Keys that stopped being wanted before they were handed out
// (the waiters left; a promise arrived) are skipped, and a key wanted anew
// is announced anew. After `close`, with nothing left, `next()` is `None`.
#[test]
fn demand_announces_each_newly_wanted_key_once_and_skips_stale_ones() {
    let ops = [
        Op::NewDemand { handle: 0 },
        Op::CreateNext { handle: 0, slot: 0 },
        poll(0, A),
        create_get(0, 1),
        poll(1, A),
        create_take(0, 2),
        poll(2, A),
        poll(0, A),
        create_take(1, 3),
        poll(3, A),
        Op::Drop { slot: 3 },
        create_get(2, 4),
        poll(4, A),
        Op::Promise {
            key: 2,
            owned: false,
        },
        create_take(1, 3),
        poll(3, A),
        Op::CreateNext { handle: 0, slot: 5 },
        poll(5, A),
        Op::CreateNext { handle: 0, slot: 6 },
        poll(6, A),
        Op::Close,
        poll(6, B),
    ];
    let t = model::run(&ops).unwrap();
    assert_eq!(t.steps[2], [Pending { slot: 0 }]);
    assert_eq!(t.steps[4], [Pending { slot: 1 }, Woken { slot: 0 }]);
    // Key 0 is wanted already: no second announcement.
    assert_eq!(t.steps[6], [Pending { slot: 2 }]);
    assert_eq!(t.steps[7], [resolved(0, Outcome::Wanted(Some(0)))]);
    assert_eq!(t.steps[17], [resolved(5, Outcome::Wanted(Some(1)))]);
    // Key 1 was handed out once, key 2 never: nothing is left.
    assert_eq!(t.steps[19], [Pending { slot: 6 }]);
    // `close` wakes the consumers still waiting and the waiting `next()`.
    assert_eq!(
        t.steps[20],
        [
            Woken { slot: 1 },
            Woken { slot: 2 },
            Woken { slot: 3 },
            Woken { slot: 4 },
            Woken { slot: 6 }
        ]
    );
    assert_eq!(t.steps[21], [resolved(6, Outcome::Wanted(None))]);
}

// `drained()` resolves at once when nobody waits, and otherwise when the
// last waiter is gone (a cancelled future counts until it is polled);
// `closed()` resolves when the map is closed.
#[test]
fn drained_and_closed_resolve_when_their_condition_holds() {
    let ops = [
        Op::CreateClosed { slot: 0 },
        poll(0, A),
        Op::CreateDrained { slot: 1 },
        poll(1, A),
        create_get(0, 1),
        poll(1, A),
        Op::CreateDrained { slot: 2 },
        poll(2, A),
        Op::Cancel { key: 0 },
        poll(1, A),
        poll(2, A),
        Op::Close,
        poll(0, B),
    ];
    let t = model::run(&ops).unwrap();
    assert_eq!(t.steps[1], [Pending { slot: 0 }]);
    assert_eq!(t.steps[3], [resolved(1, Outcome::Drained)]);
    assert_eq!(t.steps[7], [Pending { slot: 2 }]);
    assert_eq!(
        t.steps[8],
        [Cancelled { key: 0, count: 1 }, Woken { slot: 1 }]
    );
    assert_eq!(
        t.steps[9],
        [ready(1, Err(WaitError::Cancelled)), Woken { slot: 2 }]
    );
    assert_eq!(t.steps[10], [resolved(2, Outcome::Drained)]);
    assert_eq!(t.steps[11], [Woken { slot: 0 }]);
    assert_eq!(t.steps[12], [resolved(0, Outcome::Closed)]);
}

// Waiters that come and go while nobody calls `next()` queue one
// announcement each; the queue is pruned of the keys no longer wanted, and
// never of one still wanted: after thirty cycles on key 0, the keys still
// waited for (1, announced before the churn, and 2, after) are handed out,
// each once, and nothing else.
#[test]
fn demand_keeps_the_wanted_keys_through_churn() {
    let mut ops = vec![Op::NewDemand { handle: 1 }, create_get(1, 1), poll(1, A)];
    for _ in 0..30 {
        ops.extend([create_take(0, 0), poll(0, A), Op::Drop { slot: 0 }]);
    }
    ops.extend([
        create_take(2, 2),
        poll(2, A),
        Op::CreateNext { handle: 1, slot: 3 },
        poll(3, A),
        Op::CreateNext { handle: 1, slot: 4 },
        poll(4, A),
        Op::CreateNext { handle: 1, slot: 5 },
        poll(5, A),
    ]);
    let t = model::run(&ops).unwrap();
    let n = ops.len();
    assert_eq!(t.steps[n - 5], [resolved(3, Outcome::Wanted(Some(1)))]);
    assert_eq!(t.steps[n - 3], [resolved(4, Outcome::Wanted(Some(2)))]);
    assert_eq!(t.steps[n - 1], [Pending { slot: 5 }]);
}
