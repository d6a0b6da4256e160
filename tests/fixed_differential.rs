//! `FixedAwaitMap` against `AwaitMap`, step by step: random sequences of the
//! operations both maps have (create, poll and drop `get`s and `take`s on a
//! few keys; insert, remove, try_get, cancel, close) run on one map of each
//! kind, with room to spare in the fixed one, and after every step the two
//! must agree on everything a user can see: each poll's outcome, each
//! call's answer, how many times every waker was woken, `len`, `waiters`,
//! `is_closed`, and `try_get` and `contains_key` of every key. `AwaitMap` is
//! itself checked against a reference model written from the docs
//! (`tests/model.rs`), so this holds the fixed map to the same contract.
//!
//! `PROPTEST_CASES` sets the number of sequences (default 2,000; 2 under
//! miri, where the scripted sequence below carries most of the check).

mod common;

use std::sync::Arc;
use std::task::{Poll, Waker};

use awaitmap::{AwaitMap, FixedAwaitMap, FixedGet, FixedTake, Get, Take};
use common::{CountingWaker, counting_waker, poll_once};
use proptest::prelude::*;

const KEYS: u64 = 3;
const SLOTS: usize = 6;
static KEY_NAMES: [u64; KEYS as usize] = [0, 1, 2];

#[derive(Clone, Copy, Debug)]
enum Op {
    Get { key: u64, slot: usize },
    Take { key: u64, slot: usize },
    Poll { slot: usize, second_waker: bool },
    Drop { slot: usize },
    Insert { key: u64 },
    Remove { key: u64 },
    TryGet { key: u64 },
    Cancel { key: u64 },
    Close,
}

fn any_op() -> impl Strategy<Value = Op> {
    // Key 0 more often, so futures meet on one key.
    let key = prop_oneof![3 => Just(0_u64), 1 => 0..KEYS];
    let slot = 0..SLOTS;
    prop_oneof![
        3 => (key.clone(), slot.clone()).prop_map(|(key, slot)| Op::Get { key, slot }),
        3 => (key.clone(), slot.clone()).prop_map(|(key, slot)| Op::Take { key, slot }),
        6 => (slot.clone(), any::<bool>())
            .prop_map(|(slot, second_waker)| Op::Poll { slot, second_waker }),
        2 => slot.prop_map(|slot| Op::Drop { slot }),
        4 => key.clone().prop_map(|key| Op::Insert { key }),
        1 => key.clone().prop_map(|key| Op::Remove { key }),
        1 => key.clone().prop_map(|key| Op::TryGet { key }),
        1 => key.prop_map(|key| Op::Cancel { key }),
        1 => Just(Op::Close),
    ]
}

type Fixed = FixedAwaitMap<u64, u64, 8, 16>;

enum AllocFut<'a> {
    Get(Get<'a, u64, u64>),
    Take(Take<'a, u64, u64>),
}

enum FixedFut<'a> {
    Get(FixedGet<'a, u64, u64, 8, 16>),
    Take(FixedTake<'a, u64, u64, 8, 16>),
}

/// Two wakers per slot, one set per map.
struct Wakers(Vec<[(Arc<CountingWaker>, Waker); 2]>);

impl Wakers {
    fn new() -> Self {
        Wakers(
            (0..SLOTS)
                .map(|_| [counting_waker(), counting_waker()])
                .collect(),
        )
    }

    fn counts(&self) -> Vec<usize> {
        self.0
            .iter()
            .flat_map(|pair| pair.iter().map(|(c, _)| c.wakes()))
            .collect()
    }
}

/// Runs `ops` on both maps; the first disagreement is the error.
fn run(ops: &[Op]) -> Result<(), String> {
    let alloc: AwaitMap<u64, u64> = AwaitMap::new();
    let fixed = Fixed::new();
    let mut a_futs: Vec<Option<AllocFut<'_>>> = (0..SLOTS).map(|_| None).collect();
    let mut f_futs: Vec<Option<FixedFut<'_>>> = (0..SLOTS).map(|_| None).collect();
    let (a_wakers, f_wakers) = (Wakers::new(), Wakers::new());
    let mut next_value = 0_u64;
    for (at, &op) in ops.iter().enumerate() {
        let (a_says, f_says): (String, String) = match op {
            Op::Get { key, slot } | Op::Take { key, slot } => {
                if a_futs[slot].is_none() {
                    let k = &KEY_NAMES[key as usize];
                    let take = matches!(op, Op::Take { .. });
                    a_futs[slot] = Some(if take {
                        AllocFut::Take(alloc.take(k))
                    } else {
                        AllocFut::Get(alloc.get(k))
                    });
                    f_futs[slot] = Some(if take {
                        FixedFut::Take(fixed.take(k))
                    } else {
                        FixedFut::Get(fixed.get(k))
                    });
                }
                (String::new(), String::new())
            }
            Op::Poll { slot, second_waker } => {
                let i = usize::from(second_waker);
                let a = a_futs[slot].as_mut().map(|f| {
                    let w = &a_wakers.0[slot][i].1;
                    match f {
                        AllocFut::Get(g) => poll_once(g, w),
                        AllocFut::Take(t) => poll_once(t, w),
                    }
                });
                let f = f_futs[slot].as_mut().map(|f| {
                    let w = &f_wakers.0[slot][i].1;
                    match f {
                        FixedFut::Get(g) => poll_once(g, w),
                        FixedFut::Take(t) => poll_once(t, w),
                    }
                });
                // A future that returned `Ready` is dropped (polling it
                // again would panic, in both maps).
                if matches!(a, Some(Poll::Ready(_))) {
                    a_futs[slot] = None;
                }
                if matches!(f, Some(Poll::Ready(_))) {
                    f_futs[slot] = None;
                }
                (format!("{a:?}"), format!("{f:?}"))
            }
            Op::Drop { slot } => {
                a_futs[slot] = None;
                f_futs[slot] = None;
                (String::new(), String::new())
            }
            Op::Insert { key } => {
                next_value += 1;
                let f = fixed
                    .insert(key, next_value)
                    .map_err(|_| format!("step {at}: the fixed map was full"))?;
                (
                    format!("{:?}", alloc.insert(key, next_value)),
                    format!("{f:?}"),
                )
            }
            Op::Remove { key } => (
                format!("{:?}", alloc.remove(&key)),
                format!("{:?}", fixed.remove(&key)),
            ),
            Op::TryGet { key } => (
                format!("{:?}", alloc.try_get(&key)),
                format!("{:?}", fixed.try_get(&key)),
            ),
            Op::Cancel { key } => (
                format!("{}", alloc.cancel(&key)),
                format!("{}", fixed.cancel(&key)),
            ),
            Op::Close => {
                alloc.close();
                fixed.close();
                (String::new(), String::new())
            }
        };
        if a_says != f_says {
            return Err(format!(
                "step {at} {op:?}: AwaitMap says {a_says}, FixedAwaitMap says {f_says}"
            ));
        }
        let look = |len, empty, waiters, closed, values: Vec<(Option<u64>, bool)>| {
            format!(
                "len {len} (empty {empty}), waiters {waiters}, closed {closed}, keys {values:?}"
            )
        };
        let a_look = look(
            alloc.len(),
            alloc.is_empty(),
            alloc.waiters(),
            alloc.is_closed(),
            KEY_NAMES
                .iter()
                .map(|k| (alloc.try_get(k), alloc.contains_key(k)))
                .collect(),
        );
        let f_look = look(
            fixed.len(),
            fixed.is_empty(),
            fixed.waiters(),
            fixed.is_closed(),
            KEY_NAMES
                .iter()
                .map(|k| (fixed.try_get(k), fixed.contains_key(k)))
                .collect(),
        );
        if a_look != f_look {
            return Err(format!(
                "after step {at} {op:?}: AwaitMap has {a_look}, FixedAwaitMap has {f_look}"
            ));
        }
        let (a_woken, f_woken) = (a_wakers.counts(), f_wakers.counts());
        if a_woken != f_woken {
            return Err(format!(
                "after step {at} {op:?}: wake counts differ: AwaitMap {a_woken:?}, FixedAwaitMap {f_woken:?}"
            ));
        }
    }
    // Whatever still waits leaves; both maps end with no waiter.
    a_futs.clear();
    f_futs.clear();
    if (alloc.waiters(), fixed.waiters()) != (0, 0) {
        return Err("waiters left after every future was dropped".into());
    }
    if a_wakers.counts() != f_wakers.counts() {
        return Err("dropping the last futures woke differently".into());
    }
    Ok(())
}

fn cases() -> u32 {
    let default = if cfg!(miri) { 2 } else { 2_000 };
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_fixed_map_does_what_the_allocating_map_does(ops in prop::collection::vec(any_op(), 1..60)) {
        if let Err(e) = run(&ops) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// A poll of the future in `slot` with its first waker, for the scripted
/// sequences below.
fn poll(slot: usize) -> Op {
    Op::Poll {
        slot,
        second_waker: false,
    }
}

/// A get woken with a take polls before the take: the take still holds the
/// value's wake-up, so a second insert wakes no other take.
#[test]
fn a_woken_get_polled_first_leaves_the_take_its_wake_up() {
    use Op::*;
    let ops = [
        Take { key: 0, slot: 0 },
        Take { key: 0, slot: 1 },
        Get { key: 0, slot: 2 },
        poll(0),
        poll(1),
        poll(2),
        Insert { key: 0 },
        poll(2),
        Insert { key: 0 },
        poll(1),
        poll(0),
        poll(1),
    ];
    assert_eq!(run(&ops), Ok(()));
}

/// A scripted sequence the differential run must agree on, so the file fails
/// if the two maps part ways even when proptest draws nothing interesting.
#[test]
fn a_scripted_sequence_agrees() {
    use Op::*;
    let ops = [
        Take { key: 0, slot: 0 },
        Take { key: 0, slot: 1 },
        Get { key: 0, slot: 2 },
        poll(0),
        poll(1),
        Poll {
            slot: 2,
            second_waker: true,
        },
        Insert { key: 0 },
        Drop { slot: 0 },
        poll(1),
        Poll {
            slot: 2,
            second_waker: true,
        },
        Insert { key: 0 },
        Cancel { key: 0 },
        Get { key: 1, slot: 3 },
        poll(3),
        Close,
        Poll {
            slot: 3,
            second_waker: true,
        },
        TryGet { key: 0 },
    ];
    assert_eq!(run(&ops), Ok(()));
}
