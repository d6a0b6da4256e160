//! The `memory` mode: the bytes a map holds for its waiting keys. 100,000
//! futures on distinct keys are made and polled once (`Pending`); the
//! counting allocator, with byte tracking on, reads the live bytes before
//! and after each step:
//!
//! - map only: what the map's allocations hold with every future waiting.
//!   The futures live in a `Vec` made before, so their own bytes are not in
//!   it (whatever a registration allocates is, wherever it is kept);
//! - map + futures: the same plus that `Vec` (100,000 × the future's size);
//! - after the futures are dropped: what the map still holds;
//! - after `shrink_to_fit`: what it holds once it has given back what it
//!   can.
//!
//! Every map has u64 keys and values and a fixed-seed foldhash.

use std::future::Future;
use std::pin::Pin;

use awaitmap::AwaitMap;
use foldhash::fast::FixedState;

use crate::alloc_count::{allocations, live_bytes, track_bytes};
use crate::harness::{cx, fixed, waker_kind};
use crate::peers::{OneshotMap, WakerListMap};

/// Waiting keys, one future each.
const KEYS: usize = 100_000;

/// Live bytes before and after each step of one measurement.
struct Steps {
    /// Before anything.
    start: i64,
    /// With the futures' `Vec` allocated (and still empty).
    home: i64,
    /// With the map made and every future waiting.
    waiting: i64,
    /// Allocations made from `home` to `waiting`.
    allocs: u64,
    /// With every future dropped.
    dropped: i64,
    /// After the map's `shrink_to_fit`.
    shrunk: i64,
}

struct Row {
    map: &'static str,
    futures: &'static str,
    future_size: usize,
    steps: Steps,
}

/// Polls each future once; each must wait.
fn poll_pending<F: Future + Unpin>(futs: &mut [F]) {
    let mut cx = cx();
    for f in futs {
        assert!(Pin::new(f).poll(&mut cx).is_pending());
    }
}

fn elem_size<T>(_: &Vec<T>) -> usize {
    size_of::<T>()
}

fn keys() -> Vec<u64> {
    (0..KEYS as u64).map(|i| (1 << 32) + i).collect()
}

/// awaitmap with `KEYS` futures made by `$method` (`take` or `get`).
macro_rules! awaitmap_row {
    ($method:ident) => {{
        let keys = keys();
        // Declared first, so it outlives the futures on every path, but
        // made once they have their `Vec`.
        let map: AwaitMap<u64, u64, FixedState>;
        let start = live_bytes();
        let mut futs = Vec::with_capacity(KEYS);
        let (home, allocs0) = (live_bytes(), allocations());
        map = AwaitMap::with_hasher(fixed());
        futs.extend(keys.iter().map(|k| map.$method(k)));
        poll_pending(&mut futs);
        assert_eq!(map.waiters(), KEYS);
        let (waiting, allocs) = (live_bytes(), allocations() - allocs0);
        futs.clear();
        assert_eq!(map.waiters(), 0);
        let dropped = live_bytes();
        map.shrink_to_fit();
        let shrunk = live_bytes();
        let future_size = elem_size(&futs);
        drop(futs);
        drop(map);
        assert_eq!(live_bytes(), start, "something was not freed");
        Row {
            map: "awaitmap",
            futures: stringify!($method),
            future_size,
            steps: Steps {
                start,
                home,
                waiting,
                allocs,
                dropped,
                shrunk,
            },
        }
    }};
}

/// The hand-written oneshot map (`std::sync::Mutex`, foldhash): the
/// futures are the receivers; once they are dropped, the caller removes
/// their senders (`forget`), as it must or the map keeps them forever.
fn oneshot() -> Row {
    let keys = keys();
    let start = live_bytes();
    let mut rxs = Vec::with_capacity(KEYS);
    let (home, allocs0) = (live_bytes(), allocations());
    let map = OneshotMap::<u64, FixedState, std::sync::Mutex<_>>::new(fixed());
    rxs.extend(keys.iter().map(|&k| map.register(k)));
    poll_pending(&mut rxs);
    let (waiting, allocs) = (live_bytes(), allocations() - allocs0);
    rxs.clear();
    for &k in &keys {
        map.forget(k);
    }
    let dropped = live_bytes();
    map.shrink_to_fit();
    let shrunk = live_bytes();
    let future_size = elem_size(&rxs);
    drop(rxs);
    drop(map);
    assert_eq!(live_bytes(), start, "something was not freed");
    Row {
        map: "oneshot-std-fold",
        futures: "receiver",
        future_size,
        steps: Steps {
            start,
            home,
            waiting,
            allocs,
            dropped,
            shrunk,
        },
    }
}

/// The hand-written waker-list map (foldhash): a dropped `get` cannot find
/// its waker again, so its entry and waker stay until the key is inserted
/// or removed.
fn hand_fold() -> Row {
    let keys = keys();
    let start = live_bytes();
    let mut futs = Vec::with_capacity(KEYS);
    let (home, allocs0) = (live_bytes(), allocations());
    let map = WakerListMap::<u64, _>::new(fixed());
    futs.extend(keys.iter().map(|&k| map.get(k)));
    poll_pending(&mut futs);
    let (waiting, allocs) = (live_bytes(), allocations() - allocs0);
    futs.clear();
    let dropped = live_bytes();
    map.shrink_to_fit();
    let shrunk = live_bytes();
    let future_size = elem_size(&futs);
    drop(futs);
    drop(map);
    assert_eq!(live_bytes(), start, "something was not freed");
    Row {
        map: "hand-fold",
        futures: "get",
        future_size,
        steps: Steps {
            start,
            home,
            waiting,
            allocs,
            dropped,
            shrunk,
        },
    }
}

/// `n` with a comma between each group of three digits.
fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

pub fn run() {
    track_bytes(true);
    let rows = [
        awaitmap_row!(take),
        awaitmap_row!(get),
        oneshot(),
        hand_fold(),
    ];
    track_bytes(false);

    let per_key = |bytes: i64| bytes as f64 / KEYS as f64;
    println!(
        "{} futures on distinct keys, each polled once (`Pending`); u64 keys and values, \
         fixed-seed foldhash",
        grouped(KEYS as i64)
    );
    println!("waker: {}", waker_kind().describe());
    println!(
        "map only: bytes the map's allocations hold (the futures live in a `Vec` made before); \
         map + futures: the same and that `Vec`; allocations: made while the futures \
         were made and polled (the bytes are those asked for: the allocator's own overhead \
         per block is not in them)\n"
    );
    println!(
        "| map | futures | future (B) | map only (B/key) | map + futures (B/key) \
         | allocations | after the futures are dropped (B) | after `shrink_to_fit` (B) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let s = &r.steps;
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {} | {} | {} |",
            r.map,
            r.futures,
            r.future_size,
            per_key(s.waiting - s.home),
            per_key(s.waiting - s.start),
            grouped(s.allocs as i64),
            grouped(s.dropped - s.home),
            grouped(s.shrunk - s.home),
        );
    }
    println!();
    println!(
        "- `oneshot-std-fold`: `std::sync::Mutex<HashMap<u64, tokio::sync::oneshot::Sender<u64>>>`; \
         a registration allocates the channel, shared by the sender in the map and the receiver \
         (the future), so it counts as the map's; once the receivers are dropped, the caller \
         removes their senders"
    );
    println!(
        "- `hand-fold`: `std::sync::Mutex<HashMap<u64, (Option<u64>, Vec<Waker>)>>`; a dropped \
         `get` cannot find its waker in the list again, so its entry stays"
    );
}
