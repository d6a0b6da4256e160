//! The named futures returned by [`AwaitMap::get`] and [`AwaitMap::take`].
//!
//! They are thin: a future holds the map, the key and its [`Waiter`], and
//! its poll and drop go through the one machine in `waiter.rs`, in the mode
//! that says how it reads the value (clone or move). The owned forms, which
//! hold an `Arc` of the map and an owned key, are in `owned.rs`.

use core::fmt;
use core::future::Future;
use core::hash::{BuildHasher, Hash};
use core::pin::Pin;
use core::task::{Context, Poll};

use alloc::borrow::ToOwned;
use hashbrown::{DefaultHashBuilder, Equivalent};
use mutex::ScopedRawMutex;

use crate::state::waiter::{Kind, Waiter};
use crate::sync::DefaultLock;
use crate::{AwaitMap, WaitError};

/// The future returned by [`AwaitMap::get`]: a clone of the key's value.
///
/// Lazy (nothing happens until it is polled), `Unpin`, and deregistered when
/// dropped.
///
/// # Panics
///
/// Polling it again after it returned `Ready` panics, as `std` futures do.
///
/// # Cancel safety
///
/// Cancel-safe: dropping it at any point deregisters it and loses nothing.
///
/// # Examples
///
/// ```
/// use awaitmap::{AwaitMap, Get};
///
/// let map: AwaitMap<u32, u32> = AwaitMap::new();
/// let fut: Get<'_, u32, u32, _, u32> = map.get(&1);
/// map.insert(1, 2);
/// assert_eq!(futures::executor::block_on(fut), Ok(2));
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Get<'a, K, V, S = DefaultHashBuilder, Q: ?Sized = K, L: ScopedRawMutex = DefaultLock> {
    map: &'a AwaitMap<K, V, S, L>,
    key: &'a Q,
    waiter: Waiter,
}

/// The future returned by [`AwaitMap::take`]: the key's value, moved out.
///
/// Lazy, `Unpin`, and deregistered when dropped.
///
/// # Panics
///
/// Polling it again after it returned `Ready` panics, as `std` futures do.
///
/// # Cancel safety
///
/// Cancel-safe: if it is dropped after an `insert` woke it but before it
/// returned the value, the value stays in the map and the wake-up passes to
/// the next waiting `take` of the key.
///
/// # Examples
///
/// ```
/// use awaitmap::{AwaitMap, Take};
///
/// let map: AwaitMap<u32, String> = AwaitMap::new();
/// let fut: Take<'_, u32, String, _, u32> = map.take(&1);
/// map.insert(1, "x".into());
/// assert_eq!(futures::executor::block_on(fut).as_deref(), Ok("x"));
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Take<'a, K, V, S = DefaultHashBuilder, Q: ?Sized = K, L: ScopedRawMutex = DefaultLock> {
    map: &'a AwaitMap<K, V, S, L>,
    key: &'a Q,
    waiter: Waiter,
}

// The methods that make these futures: here, so the futures and the map do
// not import each other.
impl<K, V, S, L: ScopedRawMutex> AwaitMap<K, V, S, L>
where
    K: Eq + Hash,
    S: BuildHasher,
{
    /// A future that resolves with a clone of the key's value, as soon as it
    /// has one; the value stays in the map.
    ///
    /// The future does nothing until polled. On its first poll it resolves at
    /// once if the key has a value; otherwise it registers and waits for an
    /// [`insert`](Self::insert). `key` may be any borrowed form of `K`
    /// (`&str` for `String` keys).
    ///
    /// The future borrows both the map and the key; to spawn it or keep it
    /// beyond them, use [`get_owned`](Self::get_owned) on an `Arc<AwaitMap>`.
    ///
    /// # Errors
    ///
    /// [`WaitError::Closed`](crate::WaitError::Closed) if the map is closed while the key has no value,
    /// [`WaitError::Cancelled`](crate::WaitError::Cancelled) if [`cancel`](Self::cancel) fails the wait,
    /// [`WaitError::Abandoned`](crate::WaitError::Abandoned) if the key's [`Promise`](crate::Promise)
    /// (or [`get_or_promise`](Self::get_or_promise) producer) is dropped unfulfilled while the future
    /// waits. Never [`WaitError::TimedOut`](crate::WaitError::TimedOut): for a deadline, wrap the future in your
    /// runtime's timeout (dropping it deregisters it).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future deregisters it and loses nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use awaitmap::AwaitMap;
    /// use futures::executor::block_on;
    ///
    /// let map: AwaitMap<String, u32> = AwaitMap::new();
    /// map.insert("alpha".to_string(), 1);
    /// assert_eq!(block_on(map.get("alpha")), Ok(1));
    /// assert_eq!(map.len(), 1);
    /// ```
    #[inline]
    pub fn get<'a, Q>(&'a self, key: &'a Q) -> Get<'a, K, V, S, Q, L>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
        V: Clone,
    {
        Get::new(self, key)
    }

    /// A future that resolves with the key's value, moving it out of the map.
    ///
    /// One [`insert`](Self::insert) wakes one waiting `take` (the earliest
    /// registered) and the value goes to exactly one `take`. Like
    /// [`get`](Self::get), the future is lazy and resolves at once if the key
    /// has a value.
    ///
    /// Since a `take` usually waits (a response awaited before it arrives),
    /// its first poll clones the waker and makes an owned key before it takes
    /// the lock, so it registers in one trip; if the key turns out to have a
    /// value, those copies are dropped after the lock is released.
    ///
    /// The future borrows both the map and the key; to spawn it or keep it
    /// beyond them, use [`take_owned`](Self::take_owned) on an
    /// `Arc<AwaitMap>`.
    ///
    /// A `take` that gives up (dropped, say by a timeout) deregisters; a
    /// value inserted for it afterwards stays in the map until someone takes
    /// or [`remove`](Self::remove)s it. An RPC client that times calls out
    /// should [`claim`](Self::claim) its ids instead and have its reader
    /// [`deliver`](Self::deliver) the responses: one that arrives after its
    /// caller gave up is then refused, not kept.
    ///
    /// # Errors
    ///
    /// [`WaitError::Closed`](crate::WaitError::Closed) if the map is closed while the key has no value
    /// for this `take`, [`WaitError::Cancelled`](crate::WaitError::Cancelled) if [`cancel`](Self::cancel)
    /// fails the wait, [`WaitError::Abandoned`](crate::WaitError::Abandoned) if the key's
    /// [`Promise`](crate::Promise) (or [`get_or_promise`](Self::get_or_promise) producer) is dropped
    /// unfulfilled while the future waits. Never [`WaitError::TimedOut`](crate::WaitError::TimedOut): for a deadline, wrap the
    /// future in your runtime's timeout (dropping it deregisters it).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a `take` dropped after it was woken but before it returned
    /// the value leaves the value in the map and passes the wake-up on to the
    /// next waiting `take` of the key. A value is never lost and never
    /// delivered twice.
    ///
    /// # Examples
    ///
    /// ```
    /// use awaitmap::AwaitMap;
    /// use futures::executor::block_on;
    ///
    /// let map = AwaitMap::new();
    /// let reply = map.take(&17_u64);
    /// map.insert(17, "pong");
    /// assert_eq!(block_on(reply), Ok("pong"));
    /// assert!(map.is_empty());
    /// ```
    #[inline]
    pub fn take<'a, Q>(&'a self, key: &'a Q) -> Take<'a, K, V, S, Q, L>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        Take::new(self, key)
    }
}

impl<'a, K, V, S, Q: ?Sized, L: ScopedRawMutex> Get<'a, K, V, S, Q, L> {
    pub(crate) fn new(map: &'a AwaitMap<K, V, S, L>, key: &'a Q) -> Self {
        Get {
            map,
            key,
            waiter: Waiter::new(),
        }
    }
}

impl<'a, K, V, S, Q: ?Sized, L: ScopedRawMutex> Take<'a, K, V, S, Q, L> {
    pub(crate) fn new(map: &'a AwaitMap<K, V, S, L>, key: &'a Q) -> Self {
        Take {
            map,
            key,
            waiter: Waiter::new(),
        }
    }
}

impl<K, V, S, Q, L: ScopedRawMutex> Future for Get<'_, K, V, S, Q, L>
where
    K: Eq + Hash,
    V: Clone,
    S: BuildHasher,
    Q: ?Sized + Hash + Equivalent<K> + ToOwned,
    Q::Owned: Into<K>,
{
    type Output = Result<V, WaitError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.map.poll_get(&mut this.waiter, this.key, cx, "Get")
    }
}

impl<K, V, S, Q, L: ScopedRawMutex> Future for Take<'_, K, V, S, Q, L>
where
    K: Eq + Hash,
    S: BuildHasher,
    Q: ?Sized + Hash + Equivalent<K> + ToOwned,
    Q::Owned: Into<K>,
{
    type Output = Result<V, WaitError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.map.poll_take(&mut this.waiter, this.key, cx, "Take")
    }
}

impl<K, V, S, Q: ?Sized, L: ScopedRawMutex> Drop for Get<'_, K, V, S, Q, L> {
    fn drop(&mut self) {
        self.map.deregister(Kind::Get, &self.waiter);
    }
}

impl<K, V, S, Q: ?Sized, L: ScopedRawMutex> Drop for Take<'_, K, V, S, Q, L> {
    fn drop(&mut self) {
        self.map.deregister(Kind::Take, &self.waiter);
    }
}

impl<K, V, S, Q: ?Sized, L: ScopedRawMutex> fmt::Debug for Get<'_, K, V, S, Q, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_future("Get", &self.waiter, f)
    }
}

impl<K, V, S, Q: ?Sized, L: ScopedRawMutex> fmt::Debug for Take<'_, K, V, S, Q, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_future("Take", &self.waiter, f)
    }
}

/// The `Debug` output of the futures: whether it is registered.
pub(crate) fn debug_future(name: &str, w: &Waiter, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.debug_struct(name)
        .field("registered", &w.is_registered())
        .finish_non_exhaustive()
}
