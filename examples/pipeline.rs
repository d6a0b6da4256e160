//! A bounded pipeline: producers make values under keys, consumers `take`
//! the keys they need, in their own order.
//!
//! One map, limited to 8 stored values, is fed by two producers:
//! - a prefetcher knows that the "hot" keys 0, 1, 2, … will be wanted and
//!   runs ahead, storing them in order with `insert_async`. The limit holds it
//!   back: it waits for room whenever the map holds 8 values (backpressure);
//! - an on-demand producer makes a "cold" key (100 and up) only when a
//!   consumer asks for it (`demand_owned`), and hands each one to a spawned
//!   job with the key's promise (`promise_owned`). Some of its jobs fail: the
//!   consumers of those keys get `Err(WaitError::Abandoned)` instead of
//!   waiting forever.
//!
//! At the end, a graceful shutdown: `close` stops both producers, and
//! `drained` waits for the last consumer to leave.
//!
//! Run it with `cargo run --example pipeline`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use awaitmap::{AwaitMap, OwnedDemand, OwnedPromise, WaitError};
use tokio::task::JoinSet;

type Map = AwaitMap<u32, String>;

const LIMIT: usize = 8;
const CONSUMERS: u32 = 4;
/// The consumers take hot keys 0..HOT.
const HOT: u32 = 16;
/// The on-demand producer makes keys in this range.
const COLD: std::ops::Range<u32> = 100..200;
/// A cold key whose job returns an error, and one whose job panics.
const FAILS: u32 = 106;
const PANICS: u32 = 114;
/// A key nobody can make: its consumer waits until shutdown.
const UNKNOWN: u32 = 999;

/// The work itself: a key's value.
fn make(key: u32) -> String {
    if COLD.contains(&key) {
        format!("cold-{key}")
    } else {
        format!("hot-{key}")
    }
}

/// The prefetcher: stores hot keys 0, 1, 2, … in order, waiting for room
/// under the limit, until the map is closed. `stored` counts its values.
async fn prefetch(map: Arc<Map>, stored: Arc<AtomicUsize>) {
    for key in 0.. {
        tokio::select! {
            biased;
            // Closed: stop (a closed map would take values beyond its limit).
            () = map.closed() => return,
            // Waits while the map holds LIMIT values.
            _ = map.insert_async(key, make(key)) => stored.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The on-demand producer: one job per cold key a consumer waits for.
/// Returns the keys it was asked for, and how many jobs failed or panicked.
async fn on_demand(demand: OwnedDemand<u32, String>) -> (Vec<u32>, usize, usize) {
    let mut asked = Vec::new();
    let mut jobs = JoinSet::new();
    // `None` once the map is closed and no wanted key is left.
    while let Some(key) = demand.next().await {
        if !COLD.contains(&key) {
            continue; // a hot key (the prefetcher is on its way) or an unknown one
        }
        asked.push(key);
        // The key is reserved before the job is spawned: whatever becomes of
        // the job (an error, a panic, or being dropped before it ever runs),
        // the promise goes with it and the key's consumers are told.
        let promise = demand.map().promise_owned(key);
        jobs.spawn(job(promise.expect("nobody else makes cold keys"), key));
    }
    let (mut failed, mut panicked) = (0, 0);
    while let Some(done) = within("a job", jobs.join_next()).await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(_)) => failed += 1,
            Err(e) if e.is_panic() => panicked += 1,
            Err(e) => panic!("job cancelled: {e}"),
        }
    }
    asked.sort_unstable();
    (asked, failed, panicked)
}

/// One cold key's job, with the key's promise (which holds its own `Arc` of
/// the map). If the promise is dropped unfulfilled (the early return, or the
/// unwinding of a panic), the key's consumers fail with `Abandoned` at once.
async fn job(promise: OwnedPromise<u32, String>, key: u32) -> Result<(), &'static str> {
    tokio::time::sleep(Duration::from_millis(u64::from(key % 3))).await; // the work
    if key == FAILS {
        return Err("simulated I/O error");
    }
    if key == PANICS {
        panic!("simulated crash");
    }
    // `fulfill` ignores the limit, but a cold value always has a consumer
    // waiting for it, so it leaves the map at once.
    promise.fulfill(make(key));
    Ok(())
}

/// Consumer `id` takes hot keys id, id + 4, id + 8, id + 12 in ascending
/// order (the prefetcher's order: waiting for a key it cannot reach while the
/// map is full of values nobody takes yet would deadlock), and between them
/// three cold keys in descending order. Only even cold keys are asked for,
/// so the odd ones are never made.
async fn consumer(map: Arc<Map>, id: u32) -> Vec<(u32, Result<String, WaitError>)> {
    let mut keys = Vec::new();
    for j in 0..4 {
        keys.push(id + 4 * j);
        if j < 3 {
            keys.push(COLD.start + 2 * (id + CONSUMERS * (2 - j)));
        }
    }
    let mut got = Vec::new();
    for key in keys {
        got.push((key, within("a take", map.take(&key)).await));
    }
    got
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    quiet_simulated_crash();
    let map: Arc<Map> = Arc::new(AwaitMap::new().with_limit(LIMIT));

    // 1. The producers start first. Keys wanted before a demand handle
    //    exists are not announced, so it is made here, before any consumer
    //    starts, and moved into the on-demand producer's task. The prefetcher
    //    fills the map to its limit and waits: nothing is taken yet.
    let on_demand = tokio::spawn(on_demand(map.demand_owned()));
    let stored = Arc::new(AtomicUsize::new(0));
    let prefetcher = tokio::spawn(prefetch(Arc::clone(&map), Arc::clone(&stored)));
    let stored = move || stored.load(Ordering::Relaxed);
    wait_until(|| stored() == LIMIT).await;
    tokio::time::sleep(Duration::from_millis(10)).await; // room to overrun, if it could
    assert_eq!(stored(), LIMIT, "insert_async waits at the limit");
    assert_eq!(map.len(), LIMIT);
    assert!(map.try_insert(500, "extra".into()).is_err(), "full");
    println!("prefetcher: {LIMIT} values stored, then blocked at the limit");

    // 2. The consumers, and one that asks for a key nobody can make.
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|id| tokio::spawn(consumer(Arc::clone(&map), id)))
        .collect();
    let stranded = tokio::spawn({
        let map = Arc::clone(&map);
        async move { map.take(&UNKNOWN).await }
    });
    let (mut taken, mut abandoned) = (0, Vec::new());
    for c in consumers {
        for (key, got) in within("a consumer", c).await.expect("consumer task") {
            match got {
                Ok(value) => {
                    assert_eq!(value, make(key), "the value of another key");
                    taken += 1;
                }
                Err(e) => {
                    assert_eq!(e, WaitError::Abandoned, "key {key}");
                    abandoned.push(key);
                }
            }
        }
    }
    abandoned.sort_unstable();
    assert_eq!(abandoned, [FAILS, PANICS], "exactly the failed jobs' keys");
    assert_eq!(taken, HOT + 12 - 2);
    println!("consumers: took {taken} values; abandoned by their producer: {abandoned:?}");

    // 3. The prefetcher ran ahead of the consumers as far as the limit let
    //    it: hot keys 16..24 wait, unwanted, and it waits for room for 24.
    let ahead = HOT..HOT + LIMIT as u32;
    wait_until(|| stored() == ahead.end as usize).await;
    assert_eq!(map.len(), LIMIT);
    assert!(ahead.clone().all(|k| map.contains_key(&k)));
    println!("prefetcher: ran {LIMIT} keys ahead ({ahead:?} unused), then waited for room");

    // 4. Graceful shutdown. `close` fails the stranded `take` (no new wait
    //    can start either), and `drained` waits for it to leave.
    wait_until(|| map.waiters() == 1).await; // the stranded consumer
    map.close();
    within("drained", map.drained()).await;
    assert_eq!(map.waiters(), 0);
    let stranded = within("the stranded consumer", stranded).await.unwrap();
    assert_eq!(stranded, Err(WaitError::Closed));
    // `close` also ends `demand.next()` (None) and `closed()`: the producers stop.
    let (asked, failed, panicked) = within("on-demand", on_demand).await.unwrap();
    let expected: Vec<u32> = (0..12).map(|i| COLD.start + 2 * i).collect();
    assert_eq!(asked, expected, "made exactly the cold keys asked for");
    assert_eq!((failed, panicked), (1, 1));
    println!(
        "on-demand: made only the {} cold keys asked for; {failed} job failed, {panicked} panicked",
        asked.len()
    );
    within("the prefetcher", prefetcher).await.unwrap();
    assert_eq!(stored(), ahead.end as usize, "stopped at close");
    // The demand handle and every promise went with their tasks.
    assert_eq!(Arc::strong_count(&map), 1, "an `Arc` was left behind");
    println!("shutdown: closed, drained (key {UNKNOWN}: Closed), both producers stopped");
}

/// Awaits `f`, panicking if it takes over a second: a bug fails, never hangs.
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(1), f).await {
        Ok(output) => output,
        Err(_) => panic!("{what} hung"),
    }
}

/// Sleeps in 1 ms steps until `done()` holds; panics after about a second.
async fn wait_until(done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the condition never held");
}

/// The job for `PANICS` panics on purpose: keep that one quiet, print the rest.
fn quiet_simulated_crash() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"simulated crash") {
            print(info);
        }
    }));
}
