//! Plain threads, no async: the blocking API.
//!
//! A start-up sequence: a loader thread produces a shared configuration and
//! a batch of jobs; worker threads wait for the configuration (`get_blocking`:
//! every worker gets a clone) and then for their own jobs (`take_blocking`:
//! each job goes to exactly one worker). The `*_blocking_timeout` forms give
//! up after a while, and `close()` releases a thread waiting for something
//! that will never come. Blocked threads are parked, not spinning.
//!
//! Run it with `cargo run --example threads`.

use std::thread;
use std::time::Duration;

use awaitmap::{AwaitMap, WaitError};

const WORKERS: u64 = 4;
const JOBS: u64 = 12;

fn main() {
    // Keys are `String`s; lookups may use `&str` ("config").
    let board: AwaitMap<String, u64> = AwaitMap::new();

    // `thread::scope` lets the threads borrow `board`; no `Arc` needed.
    thread::scope(|s| {
        // The workers start first, so they wait for the loader.
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let board = &board;
                s.spawn(move || {
                    let factor = board.get_blocking("config").expect("config");
                    // Worker `w` does jobs w, w + 4, w + 8.
                    let mine = (w..JOBS).step_by(WORKERS as usize);
                    let take = |job| board.take_blocking(&format!("job-{job}"));
                    mine.map(|job| take(job).expect("job") * factor)
                        .sum::<u64>()
                })
            })
            .collect();

        // The loader: the configuration, then the jobs, last one first.
        s.spawn(|| {
            thread::sleep(Duration::from_millis(20)); // "reading the config file"
            board.insert("config".to_string(), 10);
            for job in (0..JOBS).rev() {
                board.insert(format!("job-{job}"), job);
            }
        });

        let totals: Vec<u64> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        // Worker w got jobs w, w + 4, w + 8: 10 × (3w + 12).
        assert_eq!(
            totals,
            [120, 150, 180, 210],
            "a job went to the wrong worker"
        );
        println!("{WORKERS} workers shared the config and took {JOBS} jobs: totals {totals:?}");
    });
    assert_eq!(board.len(), 1, "the jobs were taken, the config stays");

    // A wait with a deadline: nobody produces "missing".
    let timed_out = board.get_blocking_timeout("missing", Duration::from_millis(50));
    assert_eq!(timed_out, Err(WaitError::TimedOut));
    assert_eq!(board.waiters(), 0, "a timed-out wait deregisters");
    println!("get_blocking_timeout(\"missing\", 50 ms) -> {timed_out:?}");

    // A deadline that is met: the value comes within it.
    thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(Duration::from_millis(10));
            board.insert("late".to_string(), 7);
        });
        let late = board.take_blocking_timeout("late", Duration::from_secs(5));
        assert_eq!(late, Ok(7));
        println!("take_blocking_timeout(\"late\", 5 s) -> {late:?}");
    });

    // A thread waiting, without a deadline, for something that never comes:
    // `close()` wakes it with `Err(Closed)` (think: shutting down).
    thread::scope(|s| {
        let waiter = s.spawn(|| board.get_blocking("shutdown-ack"));
        for _ in 0..1000 {
            if board.waiters() == 1 {
                break; // it is parked now
            }
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(board.waiters(), 1, "the waiter registered");
        board.close();
        let closed = waiter.join().unwrap();
        assert_eq!(closed, Err(WaitError::Closed));
        println!("get_blocking(\"shutdown-ack\") woken by close() -> {closed:?}");
    });
    // After close, present keys still answer and absent ones fail at once.
    assert_eq!(board.get_blocking("config"), Ok(10));
    assert_eq!(board.take_blocking("other"), Err(WaitError::Closed));
    println!("after close: get(config) -> Ok(10), take(other) -> Err(Closed) at once");
}
