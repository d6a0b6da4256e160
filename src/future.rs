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
        self.map.deregister(Kind::Get, &mut self.waiter);
    }
}

impl<K, V, S, Q: ?Sized, L: ScopedRawMutex> Drop for Take<'_, K, V, S, Q, L> {
    fn drop(&mut self) {
        self.map.deregister(Kind::Take, &mut self.waiter);
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
