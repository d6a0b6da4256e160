//! Model-based tests: random sequences of operations (create, poll and drop
//! futures on a few keys; insert, remove, try_get, cancel, close) run against
//! the real map and a reference model written from SPEC.md, compared after
//! every step (see `model/mod.rs`). The fuzz target in `fuzz/` runs the same
//! interpreter.
//!
//! `PROPTEST_CASES` sets the number of random sequences (default 3,000).

mod common;
#[path = "model/mod.rs"]
mod model;

use Event::{Cancelled, Inserted, Pending, Ready, Woken};
use WakerChoice::{A, B};
use awaitmap::WaitError;
use model::{Event, KEYS, Op, SLOTS, WakerChoice};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

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
    Config {
        cases: cases(),
        // Miri's isolation forbids the file system.
        failure_persistence: if cfg!(miri) {
            None
        } else {
            Some(Box::new(FileFailurePersistence::WithSource(
                "proptest-regressions",
            )))
        },
        ..Config::default()
    }
}

fn any_waker() -> impl Strategy<Value = WakerChoice> {
    prop_oneof![Just(A), Just(B)]
}

/// A fragment of a sequence: mostly one operation, sometimes a short idiom
/// that reaches the interesting states more often than independent draws
/// would (a future created and polled at once; two takes queued on one key;
/// an insert followed by a drop, which may drop the take it just woke).
///
/// Key 0 and slots 0 and 1 are drawn more often, so futures meet on one key.
/// `Close` is rare: it is permanent, and most of a sequence should run on an
/// open map (about one sequence in three closes).
fn fragment() -> impl Strategy<Value = Vec<Op>> {
    let key = prop_oneof![4 => Just(0), 1 => 1..KEYS];
    let slot = prop_oneof![2 => 0..2_u8, 1 => 2..SLOTS];
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
        36 => (slot.clone(), any_waker()).prop_map(|(slot, waker)| vec![poll(slot, waker)]),
        12 => slot.clone().prop_map(|slot| vec![Op::Drop { slot }]),
        9 => key.clone().prop_map(|key| vec![Op::Insert { key }]),
        6 => ks.prop_map(|(key, slot)| vec![Op::Insert { key }, Op::Drop { slot }]),
        6 => key.clone().prop_map(|key| vec![Op::Remove { key }]),
        3 => key.clone().prop_map(|key| vec![Op::TryGet { key }]),
        6 => key.prop_map(|key| vec![Op::Cancel { key }]),
        1 => Just(vec![Op::Close]),
    ]
}

/// A sequence of at most `MAX_OPS` operations.
fn sequence() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(fragment(), 0..=MAX_FRAGMENTS).prop_map(|fragments| {
        let mut ops: Vec<Op> = fragments.into_iter().flatten().collect();
        ops.truncate(MAX_OPS);
        ops
    })
}

proptest! {
    #![proptest_config(config())]

    // Semantics 1–9 and 12 together: any sequence of operations leaves the
    // map, every future's outcome and every waker's wake count where the
    // model says, and conserves values.
    #[test]
    fn random_sequences_match_the_model(ops in sequence()) {
        if let Err(e) = model::run(&ops) {
            return Err(TestCaseError::fail(e));
        }
    }
}

// ---------------------------------------------------------------------------
// Hand-written sequences. Besides the model's checks, each asserts the
// outcomes it was written for, so the model itself is checked against a
// reading of SPEC.md.
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

// Semantics 1 and 6: insert wakes every get and only the first take; a woken
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

// Semantics 2 and 6: a fresh take takes a present value from under the woken
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

// Semantic 8: with a value present, cancel fails only the takes without the
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

// Semantic 9: close fails the waiting futures of absent keys and the takes
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
