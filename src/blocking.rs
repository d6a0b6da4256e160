//! Blocking waits (feature `std`): the same futures, polled by a loop that
//! parks the calling thread between polls.

use core::future::Future;
use core::hash::{BuildHasher, Hash};
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::sync::Arc;
use std::task::Wake;
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use alloc::borrow::ToOwned;
use hashbrown::Equivalent;

use crate::{AwaitMap, WaitError};

/// Wakes by unparking the thread that made it.
struct Unparker(Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

std::thread_local! {
    // One waker per thread, made on its first blocking wait, so a blocking
    // wait allocates nothing after that.
    static THREAD_WAKER: Waker = Waker::from(Arc::new(Unparker(thread::current())));
}

/// Polls `fut` until it is ready or `deadline` passes, parking in between.
/// The future is dropped (and so deregistered) before this returns.
fn block_on<T, F>(mut fut: F, deadline: Option<Instant>) -> Result<T, WaitError>
where
    F: Future<Output = Result<T, WaitError>> + Unpin,
{
    let mut run = |waker: &Waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            if let Poll::Ready(out) = Pin::new(&mut fut).poll(&mut cx) {
                return out;
            }
            match deadline {
                None => thread::park(),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(WaitError::TimedOut);
                    }
                    thread::park_timeout(deadline - now);
                }
            }
        }
    };
    // During thread-local destruction the cached waker is gone: make one.
    let waker = THREAD_WAKER
        .try_with(Waker::clone)
        .unwrap_or_else(|_| Waker::from(Arc::new(Unparker(thread::current()))));
    run(&waker)
}

impl<K, V, S, L: mutex::ScopedRawMutex> AwaitMap<K, V, S, L>
where
    K: Eq + Hash,
    S: BuildHasher,
{
    /// [`get`](Self::get), waiting on this thread: parks it until the key has
    /// a value. Never spins; only an `insert` of this key (or `cancel`,
    /// `close`) wakes it.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let map = Arc::new(awaitmap::AwaitMap::new());
    /// let producer = std::thread::spawn({
    ///     let map = Arc::clone(&map);
    ///     move || { map.insert("ready", true); }
    /// });
    /// assert_eq!(map.get_blocking(&"ready"), Ok(true));
    /// producer.join().unwrap();
    /// ```
    pub fn get_blocking<Q>(&self, key: &Q) -> Result<V, WaitError>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
        V: Clone,
    {
        block_on(self.get(key), None)
    }

    /// [`take`](Self::take), waiting on this thread: parks it until the key
    /// has a value for it, then moves the value out.
    ///
    /// # Errors
    ///
    /// As [`take`](Self::take).
    ///
    /// # Examples
    ///
    /// ```
    /// let map = awaitmap::AwaitMap::new();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| map.insert(9, "nine"));
    ///     assert_eq!(map.take_blocking(&9), Ok("nine"));
    /// });
    /// assert!(map.is_empty());
    /// ```
    pub fn take_blocking<Q>(&self, key: &Q) -> Result<V, WaitError>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        block_on(self.take(key), None)
    }

    /// [`get_blocking`](Self::get_blocking) that gives up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`WaitError::TimedOut`] when the time runs out (the wait is then
    /// deregistered), otherwise as [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use awaitmap::{AwaitMap, WaitError};
    ///
    /// let map: AwaitMap<u8, u8> = AwaitMap::new();
    /// let r = map.get_blocking_timeout(&1, Duration::from_millis(10));
    /// assert_eq!(r, Err(WaitError::TimedOut));
    /// assert_eq!(map.waiters(), 0);
    /// ```
    pub fn get_blocking_timeout<Q>(&self, key: &Q, timeout: Duration) -> Result<V, WaitError>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
        V: Clone,
    {
        block_on(self.get(key), Instant::now().checked_add(timeout))
    }

    /// [`take_blocking`](Self::take_blocking) that gives up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`WaitError::TimedOut`] when the time runs out (the wait is then
    /// deregistered and any wake-up it held passes on), otherwise as
    /// [`take`](Self::take).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let map = awaitmap::AwaitMap::new();
    /// map.insert(1, "a");
    /// assert_eq!(map.take_blocking_timeout(&1, Duration::from_secs(1)), Ok("a"));
    /// ```
    pub fn take_blocking_timeout<Q>(&self, key: &Q, timeout: Duration) -> Result<V, WaitError>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        block_on(self.take(key), Instant::now().checked_add(timeout))
    }
}
