//! W6, threads: T OS threads share one map, each running an RPC-style loop on
//! its own keys (register a wait, insert its response, poll it `Ready`).
//! One operation = one request; the figure is wall time ÷ all threads'
//! requests.

use std::future::Future;
use std::hash::RandomState;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};

use awaitmap::AwaitMap;

use crate::harness::{Meter, fixed, thread_waker};
use crate::peers::{OneshotMap, WaitKey};

const WARM: u64 = 1024;

/// Spawns `threads` threads that each run `request(cx, thread, i)` `WARM`
/// times, then wait until the meter is started, then run their share of
/// `iters`.
///
/// Each thread polls with a waker of its own (of the run's kind), made
/// before the threads start and dropped after the meter stops.
///
/// The meter starts before the threads are let go (with more threads than
/// cores, the main thread may be descheduled for a while once they run).
fn threaded(
    threads: usize,
    iters: u64,
    m: &mut Meter,
    request: impl Fn(&mut Context<'_>, u64, u64) + Sync,
) {
    let per_thread = iters.div_ceil(threads as u64).max(1);
    let warmed_up = Barrier::new(threads + 1);
    let go = Barrier::new(threads + 1);
    let wakers: Vec<Waker> = (0..threads).map(|_| thread_waker()).collect();
    std::thread::scope(|s| {
        for (t, waker) in (0..threads as u64).zip(&wakers) {
            let (warmed_up, go, request) = (&warmed_up, &go, &request);
            s.spawn(move || {
                let mut cx = Context::from_waker(waker);
                for i in 0..WARM {
                    request(&mut cx, t, i);
                }
                warmed_up.wait();
                go.wait();
                for i in WARM..WARM + per_thread {
                    request(&mut cx, t, i);
                }
            });
        }
        warmed_up.wait();
        m.start();
        go.wait();
    });
    m.stop(per_thread * threads as u64);
}

/// Thread `t`'s `i`-th request id: each thread has its own key range.
fn id(t: u64, i: u64) -> u64 {
    (t << 48) | i
}

pub fn awaitmap(threads: usize, iters: u64, m: &mut Meter) {
    let map: AwaitMap<u64, u64, _> = AwaitMap::with_hasher(fixed());
    threaded(threads, iters, m, |cx, t, i| {
        let k = id(t, i);
        let mut f = map.take(&k);
        assert!(Pin::new(&mut f).poll(cx).is_pending());
        map.insert(k, i);
        match Pin::new(&mut f).poll(cx) {
            Poll::Ready(Ok(v)) => {
                black_box(v);
            }
            _ => panic!("not ready after the response"),
        }
    });
}

pub fn oneshot_std_sip(threads: usize, iters: u64, m: &mut Meter) {
    let map = OneshotMap::<u64, _, std::sync::Mutex<_>>::new(RandomState::new());
    threaded(threads, iters, m, |cx, t, i| {
        let k = id(t, i);
        let mut rx = map.register(k);
        assert!(Pin::new(&mut rx).poll(cx).is_pending());
        assert!(map.respond(k, i));
        match Pin::new(&mut rx).poll(cx) {
            Poll::Ready(Ok(v)) => {
                black_box(v);
            }
            _ => panic!("not ready after the response"),
        }
    });
}

/// waitmap 1.1: `wait(&k)` polled once, `insert`, polled again, the value
/// copied out of the `Ref` guard. Ids are never reused (waitmap cannot
/// remove a filled entry), so the map grows by one entry per request.
pub fn waitmap(threads: usize, iters: u64, m: &mut Meter) {
    let map = waitmap::WaitMap::<WaitKey, u64, _>::with_hasher(fixed());
    threaded(threads, iters, m, |cx, t, i| {
        let k = id(t, i);
        let mut f = map.wait(&k);
        assert!(Pin::new(&mut f).poll(cx).is_pending());
        assert!(map.insert(WaitKey(k), i).is_none());
        match Pin::new(&mut f).poll(cx) {
            Poll::Ready(Some(r)) => {
                black_box(*r.value());
            }
            _ => panic!("not ready after the response"),
        }
    });
}
