//! The workloads and the list of (workload, peer) pairs. In each workload
//! the first pair is awaitmap's, the baseline of its ratios.

use std::sync::Arc;

use crate::harness::{Kind, Pair};

mod churn;
#[allow(unsafe_code)]
mod fanout;
mod hit;
mod miss;
mod rpc;
mod threads;

/// What each peer name stands for.
pub const LEGEND: &[(&str, &str)] = &[
    (
        "awaitmap",
        "`AwaitMap<u64, V, FixedState>` (foldhash, fixed seed); in `hit-*`, `get` polled once",
    ),
    ("awaitmap-try_get", "`AwaitMap::try_get` (hit only)"),
    (
        "awaitmap-claim",
        "`AwaitMap::claim` (registered when made), polled once, `deliver` of the response, polled again (rpc only): the pattern that refuses late replies",
    ),
    (
        "mutex-std-sip",
        "`std::sync::Mutex<std::collections::HashMap<u64, V>>`, default SipHash `RandomState`: lock, lookup, clone",
    ),
    (
        "mutex-std-fold",
        "the same with a fixed-seed foldhash `FixedState`",
    ),
    (
        "floor",
        "`spin::mutex::SpinMutex<hashbrown::HashTable<(hash, u64, V)>>`, foldhash fixed seed: hash outside the lock, lock, find by stored hash, clone (the floor a hit is measured against)",
    ),
    (
        "quick_cache",
        "`quick_cache::sync::Cache` (0.7, foldhash fixed seed, sized so nothing is evicted); in `hit-*`, `get`; in `fanout-*`, its placeholder wait: a producer holds the key's `PlaceholderGuard` (from `get_value_or_guard`), M `get_value_or_guard_async` futures are polled once, the guard's `insert` wakes them, each is polled `Ready`, then `remove` (no runtime needed)",
    ),
    (
        "oneshot-std-sip",
        "`std::sync::Mutex<std::collections::HashMap<u64, tokio::sync::oneshot::Sender<V>>>`, SipHash, as users write it: register = oneshot + lock + insert; respond = lock + remove + send; receive = poll the receiver (churn: the caller also removes the sender on drop)",
    ),
    (
        "oneshot-pl-sip",
        "the same with `parking_lot::Mutex` (0.13)",
    ),
    (
        "oneshot-std-fold",
        "the same as `oneshot-std-sip`, tuned with a fixed-seed foldhash",
    ),
    (
        "maitake",
        "`maitake_sync::WaitMap` (0.3) with its `DefaultMutex` (a `std::sync::Mutex`, as maitake-sync's `std` feature is on): `wait(id)` polled once, `wake(&id, v)`, polled again",
    ),
    (
        "maitake-spin",
        "the same with `maitake_sync::spin::Spinlock` (what `DefaultMutex` is without the `std` feature)",
    ),
    (
        "hand-sip",
        "hand-written `std::sync::Mutex<HashMap<u64, (Option<V>, Vec<Waker>)>>`, SipHash: poll = lock, clone or push a waker clone; insert = lock, store, take the wakers, unlock, wake",
    ),
    ("hand-fold", "the same with a fixed-seed foldhash"),
    (
        "waitmap",
        "`waitmap::WaitMap<WaitKey, V, FixedState>` (1.1, on dashmap 3.11: spin-locked shards, 4 per CPU; `u64` keys need a newtype): `wait(&k)` polled once (in `hit-*`, `Ready` at once), `insert`, polled again; the value is cloned out of the `Ref` guard, which is dropped at once. It has no `remove` and a filled key stays filled, so `rpc-*`, `fanout-*` and `threads-*` use a fresh key per request (per round in `fanout-*`) and the map grows by one entry each; in `churn-*` nothing is cleaned up: each dropped wait leaves its entry (distinct keys) or a dead waker slot (hot key) behind",
    ),
    (
        "waitmap-get",
        "`waitmap::WaitMap::get` (synchronous), the value cloned out of the `Ref` guard (hit only)",
    ),
    (
        "watch",
        "one `tokio::sync::watch` channel standing for the key (no map: a lower bound for a keyed version); each waiter polls `changed()` on its own receiver, then reads the value",
    ),
];

const NOT_A_STORE: &str =
    "maitake's WaitMap is a rendezvous, not a store: it holds no value to look up";
const ONE_WAITER: &str = "maitake's WaitMap takes one waiter per key (a second `wait` on the key fails with `Duplicate`)";
const NO_DEREGISTER: &str =
    "a dropped future cannot find its waker in the list again, so the list grows without bound";
const NO_REMOVE: &str = "waitmap has no `remove`: a filled entry can never be removed (`cancel` removes only entries still waiting); `rpc-1` is this cycle without the remove";
const SERIAL: &str = "valgrind runs one thread at a time, so spin-waiting and scheduling make instruction counts meaningless";

macro_rules! pair {
    ($w:expr, $p:expr, $kind:expr) => {
        Pair {
            workload: $w,
            peer: $p,
            kind: $kind,
        }
    };
}

/// Every pair, in table order.
pub fn all() -> Vec<Pair> {
    use Kind::{NotApplicable as Na, Run, TimeOnly};
    type A = Arc<[u8]>;
    let mut v = vec![
        pair!("hit-u64", "awaitmap", Run(hit::awaitmap_get::<u64>)),
        pair!(
            "hit-u64",
            "awaitmap-try_get",
            Run(hit::awaitmap_try_get::<u64>)
        ),
        pair!("hit-u64", "mutex-std-sip", Run(hit::mutex_std_sip::<u64>)),
        pair!("hit-u64", "mutex-std-fold", Run(hit::mutex_std_fold::<u64>)),
        pair!("hit-u64", "floor", Run(hit::floor::<u64>)),
        pair!("hit-u64", "quick_cache", Run(hit::quick_cache::<u64>)),
        pair!("hit-u64", "waitmap", Run(hit::waitmap_wait::<u64>)),
        pair!("hit-u64", "waitmap-get", Run(hit::waitmap_get::<u64>)),
        pair!("hit-u64", "maitake", Na(NOT_A_STORE)),
        pair!("hit-arc32", "awaitmap", Run(hit::awaitmap_get::<A>)),
        pair!(
            "hit-arc32",
            "awaitmap-try_get",
            Run(hit::awaitmap_try_get::<A>)
        ),
        pair!("hit-arc32", "mutex-std-sip", Run(hit::mutex_std_sip::<A>)),
        pair!("hit-arc32", "mutex-std-fold", Run(hit::mutex_std_fold::<A>)),
        pair!("hit-arc32", "floor", Run(hit::floor::<A>)),
        pair!("hit-arc32", "quick_cache", Run(hit::quick_cache::<A>)),
        pair!("hit-arc32", "waitmap", Run(hit::waitmap_wait::<A>)),
        pair!("hit-arc32", "waitmap-get", Run(hit::waitmap_get::<A>)),
        pair!("miss", "awaitmap", Run(miss::awaitmap)),
        pair!("miss", "hand-sip", Run(miss::hand_sip)),
        pair!("miss", "hand-fold", Run(miss::hand_fold)),
        pair!("miss", "maitake", Na(NOT_A_STORE)),
        pair!("miss", "waitmap", Na(NO_REMOVE)),
    ];
    macro_rules! rpc {
        ($w:literal, $n:literal) => {
            v.extend([
                pair!($w, "awaitmap", Run(|it, m| rpc::awaitmap($n, it, m))),
                pair!(
                    $w,
                    "awaitmap-claim",
                    Run(|it, m| rpc::awaitmap_claim($n, it, m))
                ),
                pair!(
                    $w,
                    "oneshot-std-sip",
                    Run(|it, m| rpc::oneshot_std_sip($n, it, m))
                ),
                pair!(
                    $w,
                    "oneshot-pl-sip",
                    Run(|it, m| rpc::oneshot_pl_sip($n, it, m))
                ),
                pair!(
                    $w,
                    "oneshot-std-fold",
                    Run(|it, m| rpc::oneshot_std_fold($n, it, m))
                ),
                pair!($w, "maitake", Run(|it, m| rpc::maitake_default($n, it, m))),
                pair!(
                    $w,
                    "maitake-spin",
                    Run(|it, m| rpc::maitake_spin($n, it, m))
                ),
                pair!($w, "waitmap", Run(|it, m| rpc::waitmap($n, it, m))),
            ])
        };
    }
    rpc!("rpc-1", 1);
    rpc!("rpc-16", 16);
    rpc!("rpc-256", 256);
    rpc!("rpc-4096", 4096);
    macro_rules! fanout {
        ($w:literal, $m:literal) => {
            v.extend([
                pair!($w, "awaitmap", Run(|it, m| fanout::awaitmap($m, it, m))),
                pair!($w, "hand-sip", Run(|it, m| fanout::hand_sip($m, it, m))),
                pair!($w, "hand-fold", Run(|it, m| fanout::hand_fold($m, it, m))),
                pair!($w, "watch", Run(fanout::watch::<$m>)),
                pair!(
                    $w,
                    "quick_cache",
                    Run(|it, m| fanout::quick_cache($m, it, m))
                ),
                pair!($w, "waitmap", Run(|it, m| fanout::waitmap($m, it, m))),
                pair!($w, "maitake", Na(ONE_WAITER)),
            ])
        };
    }
    fanout!("fanout-1", 1);
    fanout!("fanout-8", 8);
    fanout!("fanout-64", 64);
    fanout!("fanout-512", 512);
    macro_rules! churn {
        ($w:literal, $distinct:literal) => {
            v.extend([
                pair!(
                    $w,
                    "awaitmap",
                    Run(|it, m| churn::awaitmap($distinct, it, m))
                ),
                pair!(
                    $w,
                    "oneshot-std-sip",
                    Run(|it, m| churn::oneshot_std_sip($distinct, it, m))
                ),
                pair!(
                    $w,
                    "maitake",
                    Run(|it, m| churn::maitake_default($distinct, it, m))
                ),
                pair!($w, "waitmap", Run(|it, m| churn::waitmap($distinct, it, m))),
                pair!($w, "hand-sip", Na(NO_DEREGISTER)),
            ])
        };
    }
    churn!("churn-distinct", true);
    churn!("churn-hot", false);
    macro_rules! threads {
        ($w:literal, $t:literal) => {
            v.extend([
                pair!(
                    $w,
                    "awaitmap",
                    TimeOnly(|it, m| threads::awaitmap($t, it, m), SERIAL)
                ),
                pair!(
                    $w,
                    "oneshot-std-sip",
                    TimeOnly(|it, m| threads::oneshot_std_sip($t, it, m), SERIAL)
                ),
                pair!(
                    $w,
                    "waitmap",
                    TimeOnly(|it, m| threads::waitmap($t, it, m), SERIAL)
                ),
            ])
        };
    }
    threads!("threads-2", 2);
    threads!("threads-4", 4);
    threads!("threads-8", 8);
    v
}
