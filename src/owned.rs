//! Everything that holds its own `Arc` of the map, to be spawned or sent
//! to another task: the owned futures and the owned promise. They need
//! `alloc::sync::Arc`, which exists on targets with atomic pointers.

use core::fmt;
use core::future::Future;
use core::hash::{BuildHasher, Hash};
use core::pin::Pin;
use core::task::{Context, Poll};

use alloc::borrow::ToOwned;
use alloc::sync::Arc;
use hashbrown::{DefaultHashBuilder, Equivalent};
use mutex::ScopedRawMutex;

use crate::claim::Claimed;
use crate::future::debug_future;
use crate::state::waiter::{EntryRef, Kind, Outcome, Waiter};
use crate::sync::DefaultLock;
use crate::{AwaitMap, WaitError};

impl<K, V, S, L: ScopedRawMutex> AwaitMap<K, V, S, L>
where
    K: Eq + Hash,
    S: BuildHasher,
{
    /// Like [`get`](Self::get), but the future holds its own clone of the
    /// `Arc` and an owned key, so it is `'static` and can be spawned.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    ///
    /// # Cancel safety
    ///
    /// As [`get`](Self::get): dropping the future deregisters it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use awaitmap::AwaitMap;
    ///
    /// let map = Arc::new(AwaitMap::new());
    /// let waiter = std::thread::spawn({
    ///     let fut = map.get_owned(&1);
    ///     move || futures::executor::block_on(fut)
    /// });
    /// map.insert(1, "one");
    /// assert_eq!(waiter.join().unwrap(), Ok("one"));
    /// ```
    pub fn get_owned<Q>(self: &Arc<Self>, key: &Q) -> GetOwned<K, V, S, L>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
        K: Clone,
        V: Clone,
    {
        GetOwned::new(Arc::clone(self), key.to_owned().into())
    }

    /// Like [`take`](Self::take), but the future holds its own clone of the
    /// `Arc` and an owned key, so it is `'static` and can be spawned.
    ///
    /// # Errors
    ///
    /// As [`take`](Self::take).
    ///
    /// # Cancel safety
    ///
    /// As [`take`](Self::take): a woken future dropped before it returned the
    /// value passes the wake-up on; the value stays in the map.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use awaitmap::AwaitMap;
    ///
    /// let map = Arc::new(AwaitMap::new());
    /// let fut = map.take_owned(&5_u32);
    /// map.insert(5, vec![1, 2, 3]);
    /// assert_eq!(futures::executor::block_on(fut), Ok(vec![1, 2, 3]));
    /// assert!(map.is_empty());
    /// ```
    pub fn take_owned<Q>(self: &Arc<Self>, key: &Q) -> TakeOwned<K, V, S, L>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
        K: Clone,
    {
        TakeOwned::new(Arc::clone(self), key.to_owned().into())
    }
}

/// The future returned by [`AwaitMap::get_owned`]: like [`Get`](crate::Get), but it holds
/// an `Arc` of the map and an owned key, so it is `'static`.
///
/// # Panics
///
/// Polling it again after it returned `Ready` panics, as `std` futures do.
///
/// # Cancel safety
///
/// Cancel-safe, as [`Get`](crate::Get).
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
#[must_use = "futures do nothing unless polled"]
pub struct GetOwned<K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    map: Arc<AwaitMap<K, V, S, L>>,
    key: K,
    waiter: Waiter,
}

/// The future returned by [`AwaitMap::take_owned`]: like [`Take`](crate::Take), but it
/// holds an `Arc` of the map and an owned key, so it is `'static`.
///
/// # Panics
///
/// Polling it again after it returned `Ready` panics, as `std` futures do.
///
/// # Cancel safety
///
/// Cancel-safe, as [`Take`](crate::Take): a woken future dropped before it returned the
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
#[must_use = "futures do nothing unless polled"]
pub struct TakeOwned<K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    map: Arc<AwaitMap<K, V, S, L>>,
    key: K,
    waiter: Waiter,
}

// The futures are never structurally pinned: `key` is only read through `&`.
impl<K, V, S, L: ScopedRawMutex> Unpin for GetOwned<K, V, S, L> {}
impl<K, V, S, L: ScopedRawMutex> Unpin for TakeOwned<K, V, S, L> {}

impl<K, V, S, L: ScopedRawMutex> GetOwned<K, V, S, L> {
    pub(crate) fn new(map: Arc<AwaitMap<K, V, S, L>>, key: K) -> Self {
        GetOwned {
            map,
            key,
            waiter: Waiter::new(),
        }
    }
}

impl<K, V, S, L: ScopedRawMutex> TakeOwned<K, V, S, L> {
    pub(crate) fn new(map: Arc<AwaitMap<K, V, S, L>>, key: K) -> Self {
        TakeOwned {
            map,
            key,
            waiter: Waiter::new(),
        }
    }
}

impl<K, V, S, L: ScopedRawMutex> Future for GetOwned<K, V, S, L>
where
    K: Eq + Hash + Clone,
    V: Clone,
    S: BuildHasher,
{
    type Output = Result<V, WaitError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.map
            .poll_get(&mut this.waiter, &this.key, cx, "GetOwned")
    }
}

impl<K, V, S, L: ScopedRawMutex> Future for TakeOwned<K, V, S, L>
where
    K: Eq + Hash + Clone,
    S: BuildHasher,
{
    type Output = Result<V, WaitError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.map
            .poll_take(&mut this.waiter, &this.key, cx, "TakeOwned")
    }
}

impl<K, V, S, L: ScopedRawMutex> Drop for GetOwned<K, V, S, L> {
    fn drop(&mut self) {
        self.map.deregister(Kind::Get, &self.waiter);
    }
}

impl<K, V, S, L: ScopedRawMutex> Drop for TakeOwned<K, V, S, L> {
    fn drop(&mut self) {
        self.map.deregister(Kind::Take, &self.waiter);
    }
}

impl<K, V, S, L: ScopedRawMutex> fmt::Debug for GetOwned<K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_future("GetOwned", &self.waiter, f)
    }
}

impl<K, V, S, L: ScopedRawMutex> fmt::Debug for TakeOwned<K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_future("TakeOwned", &self.waiter, f)
    }
}

impl<K, V, S, L> AwaitMap<K, V, S, L>
where
    K: Eq + Hash,
    S: BuildHasher,
    L: ScopedRawMutex,
{
    /// As [`promise`](Self::promise), with a guard that holds its own `Arc` of
    /// the map: see [`OwnedPromise`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let map = Arc::new(awaitmap::AwaitMap::new());
    /// let promise = map.promise_owned("k").unwrap();
    /// assert!(map.promise_owned("k").is_none());
    /// promise.fulfill(1);
    /// assert_eq!(map.try_get("k"), Some(1));
    /// ```
    pub fn promise_owned(self: &Arc<Self>, key: K) -> Option<OwnedPromise<K, V, S, L>> {
        let mut promise = self.promise(key)?;
        let entry = promise.entry.take();
        Some(OwnedPromise {
            map: Arc::clone(self),
            entry,
        })
    }
}

impl<K, V, S, L> AwaitMap<K, V, S, L>
where
    K: Eq + Hash,
    S: BuildHasher,
    L: ScopedRawMutex,
{
    /// As [`get_or_promise`](Self::get_or_promise), with a future that holds
    /// its own `Arc` of the map and an owned key, and a promise that holds
    /// its own `Arc` too ([`OwnedPromise`]): both can be handed to a spawned
    /// task.
    ///
    /// # Errors
    ///
    /// As [`get_or_promise`](Self::get_or_promise).
    ///
    /// # Cancel safety
    ///
    /// As [`get_or_promise`](Self::get_or_promise).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use awaitmap::{AwaitMap, OwnedValueOrPromise};
    /// use futures::executor::block_on;
    ///
    /// let cache: Arc<AwaitMap<u32, u64>> = Arc::new(AwaitMap::new());
    /// let fut = cache.get_or_promise_owned(&21);
    /// let worker = std::thread::spawn(move || match block_on(fut) {
    ///     // The promise moves into the thread with the future's result.
    ///     Ok(OwnedValueOrPromise::Promise(p)) => p.fulfill(42),
    ///     other => panic!("expected the promise, got {other:?}"),
    /// });
    /// assert_eq!(worker.join().unwrap(), None);
    /// assert_eq!(cache.try_get(&21), Some(42));
    /// ```
    pub fn get_or_promise_owned<Q>(self: &Arc<Self>, key: &Q) -> GetOrPromiseOwned<K, V, S, L>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
        K: Clone,
        V: Clone,
    {
        GetOrPromiseOwned {
            map: Arc::clone(self),
            key: key.to_owned().into(),
            waiter: Waiter::new(),
        }
    }
}

/// What an [`AwaitMap::get_or_promise_owned`] future resolves with: the
/// value, or the promise to produce it, holding its own `Arc` of the map.
#[derive(Debug)]
pub enum OwnedValueOrPromise<K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    /// The key had a value (or it arrived while this caller waited).
    Value(V),
    /// Nobody was producing the key: this caller is now its producer.
    Promise(OwnedPromise<K, V, S, L>),
}

/// The future returned by [`AwaitMap::get_or_promise_owned`]: `'static`,
/// `Unpin`, lazy, and deregistered when dropped.
///
/// # Panics
///
/// Polling it again after it returned `Ready` panics.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use awaitmap::{AwaitMap, GetOrPromiseOwned, OwnedValueOrPromise};
///
/// let map: Arc<AwaitMap<u8, u8>> = Arc::new(AwaitMap::new());
/// map.insert(2, 4);
/// let fut: GetOrPromiseOwned<u8, u8> = map.get_or_promise_owned(&2);
/// assert!(matches!(futures::executor::block_on(fut), Ok(OwnedValueOrPromise::Value(4))));
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct GetOrPromiseOwned<K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    map: Arc<AwaitMap<K, V, S, L>>,
    key: K,
    waiter: Waiter,
}

// Never structurally pinned: `key` is only read through `&`.
impl<K, V, S, L: ScopedRawMutex> Unpin for GetOrPromiseOwned<K, V, S, L> {}

impl<K, V, S, L> Future for GetOrPromiseOwned<K, V, S, L>
where
    K: Eq + Hash + Clone,
    V: Clone,
    S: BuildHasher,
    L: ScopedRawMutex,
{
    type Output = Result<OwnedValueOrPromise<K, V, S, L>, WaitError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outcome = this.map.poll_or_promise(&mut this.waiter, &this.key, cx);
        outcome.map(|outcome| match outcome {
            Outcome::Value(v) => Ok(OwnedValueOrPromise::Value(v)),
            Outcome::Promise => Ok(OwnedValueOrPromise::Promise(OwnedPromise {
                map: Arc::clone(&this.map),
                entry: Some(this.waiter.entry()),
            })),
            Outcome::Failed(err) => Err(err),
        })
    }
}

impl<K, V, S, L: ScopedRawMutex> Drop for GetOrPromiseOwned<K, V, S, L> {
    fn drop(&mut self) {
        self.map.deregister(Kind::Get, &self.waiter);
    }
}

impl<K, V, S, L: ScopedRawMutex> fmt::Debug for GetOrPromiseOwned<K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetOrPromiseOwned")
            .field("registered", &self.waiter.is_registered())
            .finish_non_exhaustive()
    }
}

/// A [`Promise`](crate::Promise) that holds its own `Arc` of the map, from
/// [`AwaitMap::promise_owned`]: to hand the work for a key to a spawned
/// task. It behaves as `Promise` does.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use awaitmap::{AwaitMap, WaitError};
/// use futures::{FutureExt, executor::block_on};
///
/// let map: Arc<AwaitMap<u32, String>> = Arc::new(AwaitMap::new());
/// let job = map.promise_owned(1).unwrap();
/// let worker = std::thread::spawn(move || {
///     job.fulfill("done".to_owned());
/// });
/// assert_eq!(map.get_blocking(&1).as_deref(), Ok("done"));
/// worker.join().unwrap();
///
/// // A worker that dies with the promise: its waiters are told.
/// let job = map.promise_owned(2).unwrap();
/// let mut waiting = map.get(&2);
/// assert!((&mut waiting).now_or_never().is_none()); // registered
/// let worker = std::thread::spawn(move || {
///     let _job = job;
///     panic!("the worker failed");
/// });
/// assert!(worker.join().is_err());
/// assert_eq!(block_on(waiting), Err(WaitError::Abandoned));
/// ```
#[must_use = "dropping a promise abandons it: its key's waiters fail with `Abandoned`"]
pub struct OwnedPromise<K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    map: Arc<AwaitMap<K, V, S, L>>,
    /// The promised entry; `None` once fulfilled or abandoned.
    entry: Option<EntryRef>,
}

impl<K, V, S, L: ScopedRawMutex> OwnedPromise<K, V, S, L> {
    /// As [`Promise::fulfill`](crate::Promise::fulfill): stores the value and wakes the key's waiters;
    /// returns a value a plain `insert` stored meanwhile.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let map = Arc::new(awaitmap::AwaitMap::new());
    /// let promise = map.promise_owned(1).unwrap();
    /// assert_eq!(promise.fulfill('a'), None);
    /// assert_eq!(map.try_get(&1), Some('a'));
    /// ```
    pub fn fulfill(mut self, value: V) -> Option<V> {
        let r = self.entry.take().expect("a promise is fulfilled once");
        self.map.fulfil_entry(r, value)
    }

    /// The former name of [`fulfill`](Self::fulfill).
    #[deprecated(since = "0.2.0", note = "renamed to `fulfill`, the usual spelling")]
    pub fn fulfil(self, value: V) -> Option<V> {
        self.fulfill(value)
    }

    /// As [`Promise::abandon`](crate::Promise::abandon): gives the key up and returns how many
    /// waiting futures it woke.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let map: Arc<awaitmap::AwaitMap<u8, u8>> = Arc::new(awaitmap::AwaitMap::new());
    /// let promise = map.promise_owned(1).unwrap();
    /// assert_eq!(promise.abandon(), 0);
    /// assert!(map.promise_owned(1).is_some());
    /// ```
    pub fn abandon(mut self) -> usize {
        self.release()
    }

    /// The map the promise is for.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let map: Arc<awaitmap::AwaitMap<u8, u8>> = Arc::new(awaitmap::AwaitMap::new());
    /// let promise = map.promise_owned(1).unwrap();
    /// assert!(Arc::ptr_eq(promise.map(), &map));
    /// # promise.fulfill(0);
    /// ```
    pub fn map(&self) -> &Arc<AwaitMap<K, V, S, L>> {
        &self.map
    }

    fn release(&mut self) -> usize {
        self.entry.take().map_or(0, |r| self.map.abandon_entry(r))
    }
}

impl<K, V, S, L: ScopedRawMutex> Drop for OwnedPromise<K, V, S, L> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<K, V, S, L: ScopedRawMutex> fmt::Debug for OwnedPromise<K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPromise")
            .field("fulfilled", &self.entry.is_none())
            .finish_non_exhaustive()
    }
}

impl<K, V, S, L> AwaitMap<K, V, S, L>
where
    K: Eq + Hash + Clone,
    S: BuildHasher,
    L: ScopedRawMutex,
{
    /// As [`claim`](Self::claim), with a future that holds its own `Arc` of
    /// the map: `'static`, for a call made in one task and awaited in
    /// another, or spawned.
    ///
    /// # Errors
    ///
    /// As [`take`](Self::take).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let replies: Arc<awaitmap::AwaitMap<u64, u64>> = Arc::new(awaitmap::AwaitMap::new());
    /// let reply = replies.claim_owned(1);
    /// let caller = std::thread::spawn(move || futures::executor::block_on(reply));
    /// replies.deliver(1, 100).unwrap();
    /// assert_eq!(caller.join().unwrap(), Ok(100));
    /// ```
    pub fn claim_owned(self: &Arc<Self>, key: K) -> OwnedClaim<K, V, S, L> {
        let waiting = Claimed::register(self, &key);
        OwnedClaim {
            map: Arc::clone(self),
            key,
            waiting,
        }
    }
}

/// The future returned by [`AwaitMap::claim_owned`]: a
/// [`Claim`](crate::Claim) that holds its own `Arc` of the map.
///
/// # Panics
///
/// Polling it again after it returned `Ready` panics.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use awaitmap::{AwaitMap, OwnedClaim};
///
/// let map: Arc<AwaitMap<u8, u8>> = Arc::new(AwaitMap::new());
/// let claim: OwnedClaim<u8, u8> = map.claim_owned(1);
/// drop(claim); // releases key 1
/// assert_eq!(map.deliver(1, 1), Err((1, 1)));
/// ```
#[must_use = "a claim receives nothing unless awaited; dropping it releases the key"]
pub struct OwnedClaim<K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    map: Arc<AwaitMap<K, V, S, L>>,
    key: K,
    waiting: Claimed<V>,
}

impl<K, V, S, L: ScopedRawMutex> Unpin for OwnedClaim<K, V, S, L> {}

impl<K, V, S, L> Future for OwnedClaim<K, V, S, L>
where
    K: Eq + Hash + Clone,
    S: BuildHasher,
    L: ScopedRawMutex,
{
    type Output = Result<V, WaitError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.waiting.poll(&this.map, &this.key, cx, "OwnedClaim")
    }
}

impl<K, V, S, L: ScopedRawMutex> Drop for OwnedClaim<K, V, S, L> {
    fn drop(&mut self) {
        self.waiting.release(&self.map);
    }
}

impl<K, V, S, L: ScopedRawMutex> fmt::Debug for OwnedClaim<K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("OwnedClaim");
        self.waiting.fmt_fields(&mut d);
        d.finish_non_exhaustive()
    }
}
