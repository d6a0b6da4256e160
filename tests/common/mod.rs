//! Helpers shared by the integration tests: counting wakers, a hand-polling
//! helper and drop counters. Each test file uses a subset.
#![allow(dead_code, unreachable_pub)]

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// Unwraps a `Ready`, failing the test on `Pending`.
#[track_caller]
pub fn ready<T>(p: Poll<T>) -> T {
    match p {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("expected Ready, got Pending"),
    }
}

/// Fails the test unless `p` is `Pending`.
#[track_caller]
pub fn pending<T>(p: Poll<T>) {
    assert!(p.is_pending(), "expected Pending, got Ready");
}

/// How many clones of the counting waker exist beyond the two the test holds
/// (the `Arc<CountingWaker>` and the `Waker` made from it): the clones the
/// map keeps.
pub fn kept(counter: &Arc<CountingWaker>) -> usize {
    Arc::strong_count(counter) - 2
}

/// The text of a panic payload (`"<not a string>"` if it has none).
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "<not a string>".to_owned(),
        },
    }
}

/// Polls a future that already returned `Ready` and checks that it panics
/// with the documented message.
#[track_caller]
pub fn assert_repoll_panics<F: Future + Unpin>(fut: &mut F, waker: &Waker) {
    let payload = match catch_unwind(AssertUnwindSafe(|| poll_once(fut, waker))) {
        Ok(_) => panic!("polling a completed future did not panic"),
        Err(payload) => payload,
    };
    let msg = panic_message(payload);
    assert!(
        msg.contains("polled after it returned `Ready`"),
        "unexpected panic message: {msg}"
    );
}

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

/// A value (or key: equal and hashed by `id`) that counts its live
/// instances (clones included) in a shared counter, to show that nothing is
/// lost, duplicated or leaked.
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

impl Eq for Tracked {}

impl std::hash::Hash for Tracked {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
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

/// Counts kept by [`raw_counting_waker`].
#[derive(Default)]
pub struct RawCounts {
    pub clones: AtomicUsize,
    pub wakes: AtomicUsize,
    pub drops: AtomicUsize,
    /// While set, cloning the waker panics (and makes no clone).
    pub panic_on_clone: std::sync::atomic::AtomicBool,
}

impl RawCounts {
    pub fn clones(&self) -> usize {
        self.clones.load(Ordering::SeqCst)
    }
    pub fn wakes(&self) -> usize {
        self.wakes.load(Ordering::SeqCst)
    }
    pub fn drops(&self) -> usize {
        self.drops.load(Ordering::SeqCst)
    }
}

// The library itself forbids unsafe code; tests use it only here, to build a
// waker that can observe its own clones (a `Wake` impl cannot).
#[allow(unsafe_code)]
mod raw {
    use super::RawCounts;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::task::{RawWaker, RawWakerVTable};

    pub(super) static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop);

    pub(super) fn raw(counts: Arc<RawCounts>) -> RawWaker {
        RawWaker::new(Arc::into_raw(counts).cast(), &VTABLE)
    }

    fn counts(data: *const ()) -> *const RawCounts {
        data.cast()
    }

    unsafe fn clone(data: *const ()) -> RawWaker {
        // SAFETY: as below: this waker owns a strong count, so the `Arc` is
        // alive while it is borrowed here.
        let panics = unsafe { (*counts(data)).panic_on_clone.load(Ordering::SeqCst) };
        assert!(!panics, "waker clone panics");
        // SAFETY: `data` came from `Arc::into_raw` and this waker still owns
        // one strong count, so the `Arc` is alive; the clone takes another.
        unsafe {
            (*counts(data)).clones.fetch_add(1, Ordering::SeqCst);
            Arc::increment_strong_count(counts(data));
        }
        RawWaker::new(data, &VTABLE)
    }

    unsafe fn wake(data: *const ()) {
        // SAFETY: as in `clone`; `wake` consumes the waker, so its strong
        // count is given back by `drop`.
        unsafe {
            (*counts(data)).wakes.fetch_add(1, Ordering::SeqCst);
            drop(data);
        }
    }

    unsafe fn wake_by_ref(data: *const ()) {
        // SAFETY: as in `clone`: the waker is alive while borrowed.
        unsafe { (*counts(data)).wakes.fetch_add(1, Ordering::SeqCst) };
    }

    unsafe fn drop(data: *const ()) {
        // SAFETY: as in `clone`; this gives back the strong count the waker
        // owned, exactly once.
        unsafe {
            (*counts(data)).drops.fetch_add(1, Ordering::SeqCst);
            Arc::decrement_strong_count(counts(data));
        }
    }
}

/// A waker whose clones, wakes and drops are counted, including the clones a
/// `Wake`-based waker cannot observe.
#[allow(unsafe_code)]
pub fn raw_counting_waker() -> (Arc<RawCounts>, Waker) {
    let counts = Arc::new(RawCounts::default());
    // SAFETY: the vtable's functions uphold `RawWaker`'s contract: the data
    // pointer is an `Arc<RawCounts>` whose strong counts track the wakers.
    let waker = unsafe { Waker::from_raw(raw::raw(Arc::clone(&counts))) };
    (counts, waker)
}

/// How long a test body may run before it counts as hung: a deadlock
/// detector, not a timing assertion. Miri's clock (virtual under isolation)
/// advances with every step it interprets, so it needs more.
pub const HANG_LIMIT: std::time::Duration =
    std::time::Duration::from_secs(if cfg!(miri) { 120 } else { 10 });

/// Runs `body` on its own thread and fails, saying `hung_means`, if it has
/// not finished within [`HANG_LIMIT`]. A panic in `body` is re-raised here.
pub fn no_hang_or(what: &'static str, hung_means: &str, body: impl FnOnce() + Send + 'static) {
    use std::sync::mpsc;
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let worker = std::thread::Builder::new()
        .name(what.into())
        .spawn(move || {
            body();
            let _ = done_tx.send(());
        })
        .expect("spawn the test thread");
    match done_rx.recv_timeout(HANG_LIMIT) {
        Ok(()) => worker.join().expect("the test thread finished"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(()) => unreachable!("the body returns only after it reported"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after {HANG_LIMIT:?}: {hung_means}")
        }
    }
}

/// A tiny xorshift64 generator: enough to shuffle, no `rand` needed.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // Never zero: zero is xorshift's fixed point.
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}
