//! Helpers shared by the integration tests: counting wakers, a hand-polling
//! helper and drop counters. Each test file uses a subset.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// A waker that counts how often it was woken and how many clones of it
/// exist.
#[derive(Default)]
pub struct CountingWaker {
    wakes: AtomicUsize,
}

impl CountingWaker {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// How many times `wake` or `wake_by_ref` ran.
    pub fn wakes(&self) -> usize {
        self.wakes.load(Ordering::SeqCst)
    }
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

/// A counting waker and a `Waker` made from it.
pub fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let counter = CountingWaker::new();
    let waker = Waker::from(Arc::clone(&counter));
    (counter, waker)
}

/// Polls `fut` once with `waker`.
pub fn poll_once<F: Future + Unpin>(fut: &mut F, waker: &Waker) -> Poll<F::Output> {
    let mut cx = Context::from_waker(waker);
    Pin::new(fut).poll(&mut cx)
}

/// A value that counts its live instances (clones included) in a shared
/// counter, to show that nothing is lost, duplicated or leaked.
#[derive(Debug)]
pub struct Tracked {
    pub id: u64,
    live: Arc<AtomicUsize>,
}

impl Tracked {
    pub fn new(id: u64, live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Tracked {
            id,
            live: Arc::clone(live),
        }
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        Tracked::new(self.id, &self.live)
    }
}

impl PartialEq for Tracked {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A fresh live-instance counter.
pub fn live_counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

pub fn live(counter: &Arc<AtomicUsize>) -> usize {
    counter.load(Ordering::SeqCst)
}
