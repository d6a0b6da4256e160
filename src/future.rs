//! The named futures returned by [`AwaitMap`]'s waiting methods.
//!
//! All four share one state machine ([`AwaitMap::poll_wait`] and
//! [`AwaitMap::abandon`]); they differ in how they read the value (clone or
//! move) and in how they hold the map and the key (borrowed or owned).

use core::fmt;
use core::future::Future;
use core::hash::{BuildHasher, Hash};
use core::pin::Pin;
use core::task::{Context, Poll};

use alloc::borrow::ToOwned;
#[cfg(target_has_atomic = "ptr")]
use alloc::sync::Arc;
use hashbrown::{DefaultHashBuilder, Equivalent};

use crate::map::Core;
use crate::state::{GetMode, TakeMode};
use crate::sync::DefaultLock;
use crate::waiters::Kind;
use crate::{AwaitMap, WaitError};
use mutex::ScopedRawMutex;

macro_rules! debug_future {
    ($name:literal, $self:ident, $f:ident) => {
        $f.debug_struct($name)
            .field("registered", &$self.core.is_registered())
            .finish_non_exhaustive()
    };
}

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
    core: Core,
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
    core: Core,
}

impl<'a, K, V, S, Q: ?Sized, L: ScopedRawMutex> Get<'a, K, V, S, Q, L> {
    pub(crate) fn new(map: &'a AwaitMap<K, V, S, L>, key: &'a Q) -> Self {
        Get {
            map,
            key,
            core: Core::new(),
        }
    }
}

impl<'a, K, V, S, Q: ?Sized, L: ScopedRawMutex> Take<'a, K, V, S, Q, L> {
    pub(crate) fn new(map: &'a AwaitMap<K, V, S, L>, key: &'a Q) -> Self {
        Take {
            map,
            key,
            core: Core::new(),
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
        this.map
            .poll_wait::<GetMode, Q>(&mut this.core, this.key, cx, "Get")
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
        this.map
            .poll_wait::<TakeMode, Q>(&mut this.core, this.key, cx, "Take")
    }
}

impl<K, V, S, Q: ?Sized, L: ScopedRawMutex> Drop for Get<'_, K, V, S, Q, L> {
    fn drop(&mut self) {
        self.map.abandon(Kind::Get, &mut self.core);
    }
}

impl<K, V, S, Q: ?Sized, L: ScopedRawMutex> Drop for Take<'_, K, V, S, Q, L> {
    fn drop(&mut self) {
        self.map.abandon(Kind::Take, &mut self.core);
    }
}

impl<K, V, S, Q: ?Sized, L: ScopedRawMutex> fmt::Debug for Get<'_, K, V, S, Q, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_future!("Get", self, f)
    }
}

impl<K, V, S, Q: ?Sized, L: ScopedRawMutex> fmt::Debug for Take<'_, K, V, S, Q, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_future!("Take", self, f)
    }
}

/// The future returned by [`AwaitMap::get_owned`]: like [`Get`], but it holds
/// an `Arc` of the map and an owned key, so it is `'static`.
///
/// # Panics
///
/// Polling it again after it returned `Ready` panics, as `std` futures do.
///
/// # Cancel safety
///
/// Cancel-safe, as [`Get`].
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use awaitmap::{AwaitMap, GetOwned};
///
/// let map = Arc::new(AwaitMap::<u8, u8>::new());
/// let fut: GetOwned<u8, u8> = map.get_owned(&1);
/// drop(map.clone());
/// map.insert(1, 1);
/// assert_eq!(futures::executor::block_on(fut), Ok(1));
/// ```
#[cfg(target_has_atomic = "ptr")]
#[must_use = "futures do nothing unless polled"]
pub struct GetOwned<K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    map: Arc<AwaitMap<K, V, S, L>>,
    key: K,
    core: Core,
}

/// The future returned by [`AwaitMap::take_owned`]: like [`Take`], but it
/// holds an `Arc` of the map and an owned key, so it is `'static`.
///
/// # Panics
///
/// Polling it again after it returned `Ready` panics, as `std` futures do.
///
/// # Cancel safety
///
/// Cancel-safe, as [`Take`]: a woken future dropped before it returned the
/// value leaves the value in the map and passes the wake-up on.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use awaitmap::{AwaitMap, TakeOwned};
///
/// let map = Arc::new(AwaitMap::<u8, u8>::new());
/// let fut: TakeOwned<u8, u8> = map.take_owned(&1);
/// map.insert(1, 1);
/// assert_eq!(futures::executor::block_on(fut), Ok(1));
/// assert!(map.is_empty());
/// ```
#[cfg(target_has_atomic = "ptr")]
#[must_use = "futures do nothing unless polled"]
pub struct TakeOwned<K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    map: Arc<AwaitMap<K, V, S, L>>,
    key: K,
    core: Core,
}

// The futures are never structurally pinned: `key` is only read through `&`.
#[cfg(target_has_atomic = "ptr")]
impl<K, V, S, L: ScopedRawMutex> Unpin for GetOwned<K, V, S, L> {}
#[cfg(target_has_atomic = "ptr")]
impl<K, V, S, L: ScopedRawMutex> Unpin for TakeOwned<K, V, S, L> {}

#[cfg(target_has_atomic = "ptr")]
impl<K, V, S, L: ScopedRawMutex> GetOwned<K, V, S, L> {
    pub(crate) fn new(map: Arc<AwaitMap<K, V, S, L>>, key: K) -> Self {
        GetOwned {
            map,
            key,
            core: Core::new(),
        }
    }
}

#[cfg(target_has_atomic = "ptr")]
impl<K, V, S, L: ScopedRawMutex> TakeOwned<K, V, S, L> {
    pub(crate) fn new(map: Arc<AwaitMap<K, V, S, L>>, key: K) -> Self {
        TakeOwned {
            map,
            key,
            core: Core::new(),
        }
    }
}

#[cfg(target_has_atomic = "ptr")]
impl<K, V, S, L: ScopedRawMutex> Future for GetOwned<K, V, S, L>
where
    K: Eq + Hash + Clone,
    V: Clone,
    S: BuildHasher,
{
    type Output = Result<V, WaitError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.map
            .poll_wait::<GetMode, K>(&mut this.core, &this.key, cx, "GetOwned")
    }
}

#[cfg(target_has_atomic = "ptr")]
impl<K, V, S, L: ScopedRawMutex> Future for TakeOwned<K, V, S, L>
where
    K: Eq + Hash + Clone,
    S: BuildHasher,
{
    type Output = Result<V, WaitError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.map
            .poll_wait::<TakeMode, K>(&mut this.core, &this.key, cx, "TakeOwned")
    }
}

#[cfg(target_has_atomic = "ptr")]
impl<K, V, S, L: ScopedRawMutex> Drop for GetOwned<K, V, S, L> {
    fn drop(&mut self) {
        self.map.abandon(Kind::Get, &mut self.core);
    }
}

#[cfg(target_has_atomic = "ptr")]
impl<K, V, S, L: ScopedRawMutex> Drop for TakeOwned<K, V, S, L> {
    fn drop(&mut self) {
        self.map.abandon(Kind::Take, &mut self.core);
    }
}

#[cfg(target_has_atomic = "ptr")]
impl<K, V, S, L: ScopedRawMutex> fmt::Debug for GetOwned<K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_future!("GetOwned", self, f)
    }
}

#[cfg(target_has_atomic = "ptr")]
impl<K, V, S, L: ScopedRawMutex> fmt::Debug for TakeOwned<K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_future!("TakeOwned", self, f)
    }
}
