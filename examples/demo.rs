//! A tour of `awaitmap`: a map whose values can be awaited before anyone has
//! inserted them. (Python's Twisted has the same idea as `DeferredDict`:
//! reading a key returns a `Deferred` that fires once the key is set.)
//!
//! Here a producer thread fills an `AwaitMap` in its own (shuffled) order
//! while consumers ask in theirs:
//!
//! 1. async tasks (`get(..).await`, run by the tiny executor at the bottom of
//!    this file) and threads (`get_blocking`) wait for keys;
//! 2. an RPC client matches responses to requests by id with `take`, even a
//!    response that arrives before its request was awaited;
//! 3. `close()` fails the straggler waiting for a key that never comes.
//!
//! Every time it prints is in milliseconds since the demo started (`t=`).
//!
//! Run it with `cargo run --release --example demo`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use awaitmap::{AwaitMap, WaitError};

/// The producer's pause between two values, so that waiting shows.
const STEP: Duration = Duration::from_millis(25);

/// The keys the producer will fill; a key's value is its position + 1.
const KEYS: [&str; 8] = [
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
];

fn value_of(key: &str) -> u32 {
    KEYS.iter().position(|&k| k == key).expect("a known key") as u32 + 1
}

fn reply_to(id: u64) -> String {
    format!("result #{id}")
}

fn main() {
    let start = Instant::now();
    let mut rng = XorShift(0x5EED_CAFE_F00D_D00D);
    println!("awaitmap demo: a map whose values can be awaited before they are inserted");
    println!("(t = milliseconds since the demo started)\n");

    // ---- 1. A dict whose values are awaited --------------------------------
    println!("1. get: consumers wait for keys a producer fills in its own order");
    let dict: Arc<AwaitMap<String, u32>> = Arc::new(AwaitMap::new());

    let mut order = KEYS;
    rng.shuffle(&mut order);
    let producer = thread::spawn({
        let dict = Arc::clone(&dict);
        move || {
            for key in order {
                thread::sleep(STEP);
                dict.insert(key.to_string(), value_of(key));
            }
        }
    });
    let schedule: Vec<String> = (1..)
        .zip(order)
        .map(|(i, key)| format!("{key} (t={})", i * STEP.as_millis()))
        .collect();
    println!(
        "   the producer inserts one key every {} ms: {}",
        STEP.as_millis(),
        schedule.join(", ")
    );

    // Blocking consumers: plain threads parked in `get_blocking`.
    let blocking = |who: &'static str, keys: &'static [&'static str]| {
        let dict = Arc::clone(&dict);
        thread::spawn(move || {
            let got = keys
                .iter()
                .map(|&key| timed(key, start, || dict.get_blocking(key)));
            Report::new(who, got.collect())
        })
    };
    let threads = [
        blocking("thread D (blocking)", &["zeta", "epsilon"]),
        // Same keys as task A: `get` clones, so every asker gets the value.
        blocking("thread E (blocking)", &["alpha", "theta"]),
    ];
    // The straggler waits for a key nobody will ever insert.
    let straggler = {
        let dict = Arc::clone(&dict);
        thread::spawn(move || timed("omega", start, || dict.get_blocking("omega")))
    };

    // Async consumers: each awaits its keys one after the other.
    let task = |who: &'static str, keys: &'static [&'static str]| -> Task<'_, Report> {
        let dict = &*dict;
        Box::pin(async move {
            let mut got = Vec::new();
            for &key in keys {
                let value = dict.get(key).await; // `&str` looks up a `String` key
                got.push((key, value, start.elapsed()));
            }
            Report::new(who, got)
        })
    };
    let mut reports = run_all(vec![
        task("task A (async)", &["theta", "alpha"]),
        task("task B (async)", &["beta", "gamma", "delta"]),
        task("task C (async)", &["eta"]),
    ]);
    reports.extend(threads.map(|t| t.join().unwrap()));
    producer.join().unwrap();
    let gets: usize = reports.iter().map(|r| r.print()).sum();
    // Nothing can end the straggler's wait yet: no value, no cancel, no close.
    assert!(!straggler.is_finished());
    println!("   thread F (blocking) <- omega: still waiting, nobody will insert it");
    assert_eq!(dict.len(), KEYS.len(), "`get` leaves the values in the map");
    println!("   the map still holds all {} values\n", dict.len());

    // ---- 2. RPC: responses matched to requests by id -----------------------
    println!("2. take: an RPC client awaits responses by request id");
    let responses: Arc<AwaitMap<u64, String>> = Arc::new(AwaitMap::new());
    // Requests 1..=5 are sent (the transport is not shown). The server
    // answers #5 at once (a cache hit), then the others in its own order.
    let mut slow = [1, 2, 3, 4];
    rng.shuffle(&mut slow);
    let server = thread::spawn({
        let responses = Arc::clone(&responses);
        move || {
            responses.insert(5, reply_to(5));
            for id in slow {
                thread::sleep(STEP);
                responses.insert(id, reply_to(id));
            }
        }
    });
    let order: Vec<String> = slow.iter().map(u64::to_string).collect();
    println!(
        "   the server answers 5 at once (t={}), then one every {} ms: {}",
        start.elapsed().as_millis(),
        STEP.as_millis(),
        order.join(", ")
    );

    // The client awaits 1..=4 concurrently; it gets round to #5 only later.
    let take = |id: u64| -> Task<'_, (u64, String, Duration)> {
        let responses = &*responses;
        Box::pin(async move {
            let reply = responses.take(&id).await;
            let at = start.elapsed();
            assert_eq!(reply, Ok(reply_to(id)), "the response to request {id}");
            (id, reply.unwrap(), at)
        })
    };
    for (id, reply, at) in run_all((1..=4).map(take).collect()) {
        println!("   request {id} <- {reply:?} at t={:>3}", at.as_millis());
    }
    server.join().unwrap();
    // #5 was inserted before any of 1..=4, so it is here, waiting for us.
    assert!(responses.contains_key(&5), "an early response is kept");
    let (_, reply, at) = run_all(vec![take(5)]).remove(0);
    println!(
        "   request 5 <- {reply:?} at t={:>3} (it came before take(&5) registered: kept)",
        at.as_millis()
    );
    assert!(
        responses.is_empty(),
        "every response was taken exactly once"
    );
    assert_eq!(responses.waiters(), 0);
    println!("   responses left in the map: {}\n", responses.len());

    // ---- 3. close(): stragglers fail instead of hanging --------------------
    println!("3. close: the straggler waiting for a key that never comes is failed");
    dict.close();
    let (_, result, at) = straggler.join().unwrap();
    assert_eq!(result, Err(WaitError::Closed));
    println!(
        "   thread F, waiting for omega since t=0 <- {result:?} (\"{}\") at t={}",
        WaitError::Closed,
        at.as_millis()
    );
    // After close, present keys still answer; absent ones fail at once.
    assert_eq!(dict.get_blocking("alpha"), Ok(1));
    assert_eq!(dict.get_blocking("omega"), Err(WaitError::Closed));
    println!("   after close: get(alpha) <- Ok(1), get(omega) <- Err(Closed) at once\n");

    println!(
        "summary: {gets} gets and 5 takes got the right values, 1 straggler closed, in {} ms",
        start.elapsed().as_millis()
    );
}

/// Runs `ask` and notes when it returned, as time since `start`.
fn timed(
    key: &'static str,
    start: Instant,
    ask: impl FnOnce() -> Result<u32, WaitError>,
) -> (&'static str, Result<u32, WaitError>, Duration) {
    let value = ask();
    (key, value, start.elapsed())
}

/// What one consumer asked for (in its order), what it got, and when it got
/// it (time since the demo started).
struct Report {
    who: &'static str,
    got: Vec<(&'static str, Result<u32, WaitError>, Duration)>,
}

impl Report {
    /// Checks every value (the demo fails loudly if one is wrong).
    fn new(who: &'static str, got: Vec<(&'static str, Result<u32, WaitError>, Duration)>) -> Self {
        for (key, value, _) in &got {
            assert_eq!(*value, Ok(value_of(key)), "{who} asked for {key}");
        }
        Report { who, got }
    }

    /// Prints one line and returns how many values it received.
    fn print(&self) -> usize {
        let got: Vec<String> = self
            .got
            .iter()
            .map(|(key, value, at)| {
                let value = value.expect("checked in `new`");
                format!("{key}={value} at t={:>3}", at.as_millis())
            })
            .collect();
        println!("   {:<19} <- {}", self.who, got.join(", "));
        self.got.len()
    }
}

/// xorshift64: a tiny deterministic PRNG, enough to shuffle with a fixed seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Fisher–Yates shuffle.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

// ---- A minimal single-threaded executor -----------------------------------

type Task<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A task's waker: it flags the task as ready and unparks the executor.
struct TaskWaker {
    woken: AtomicBool,
    executor: Thread,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.executor.unpark();
    }
}

/// Runs `tasks` to completion on this thread; returns their outputs in order.
fn run_all<T>(mut tasks: Vec<Task<'_, T>>) -> Vec<T> {
    let wakers: Vec<Arc<TaskWaker>> = tasks
        .iter()
        .map(|_| {
            Arc::new(TaskWaker {
                woken: AtomicBool::new(true), // every task gets a first poll
                executor: thread::current(),
            })
        })
        .collect();
    let mut outputs: Vec<Option<T>> = tasks.iter().map(|_| None).collect();
    while outputs.iter().any(Option::is_none) {
        let mut polled = false;
        for ((task, waker), output) in tasks.iter_mut().zip(&wakers).zip(&mut outputs) {
            // Poll only unfinished tasks whose waker fired since their last poll.
            if output.is_none() && waker.woken.swap(false, Ordering::Acquire) {
                polled = true;
                let waker = Waker::from(Arc::clone(waker));
                if let Poll::Ready(out) = task.as_mut().poll(&mut Context::from_waker(&waker)) {
                    *output = Some(out);
                }
            }
        }
        // Nothing to do: sleep until a waker unparks us. A wake-up that
        // landed after the scan left an unpark token, so none is missed.
        if !polled {
            thread::park();
        }
    }
    outputs
        .into_iter()
        .map(|out| out.expect("finished"))
        .collect()
}
