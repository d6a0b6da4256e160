//! The producer's side of a key: promises and coalesced lookups.
//!
//! A [`Promise`] reserves an absent key for one producer. Fulfilling it
//! inserts the value; dropping it unfulfilled (an error path, a panic, a
//! cancelled task) fails the futures then waiting on the key with
//! [`WaitError::Abandoned`], at once, so no consumer waits for a producer
//! that is gone.

use core::fmt;
use core::future::Future;
use core::hash::{BuildHasher, Hash};
use core::pin::Pin;
use core::task::{Context, Poll};

use alloc::borrow::ToOwned;
use hashbrown::{DefaultHashBuilder, Equivalent};
use mutex::ScopedRawMutex;

use crate::state::waiter::{EntryRef, Kind, Outcome, Waiter};
use crate::sync::DefaultLock;
use crate::{AwaitMap, WaitError};

/// A reservation of one absent key by its producer, from
/// [`AwaitMap::promise`] or [`AwaitMap::get_or_promise`].
///
/// [`fulfill`](Self::fulfill) inserts the value and wakes the key's waiters.
/// Dropping the promise unfulfilled fails every future then waiting on the
/// key with [`WaitError::Abandoned`] (futures that would resolve `Ok` if
/// polled now, because a plain `insert` stored a value meanwhile, are left
/// alone). Futures first polled after that wait as usual: abandoning is not
/// sticky (a consumer that must not wait for a producer that may have failed
/// asks with [`get_or_promise`](AwaitMap::get_or_promise), which makes it
/// the next producer).
///
/// While the promise lives, the key cannot be promised again, and
/// `get_or_promise` callers wait for it rather than start the work twice.
/// A plain [`insert`](AwaitMap::insert) of the key still stores its value.
///
/// # Examples
///
/// ```
/// use awaitmap::{AwaitMap, WaitError};
/// use futures::{FutureExt, executor::block_on};
///
/// let map: AwaitMap<String, u32> = AwaitMap::new();
/// let promise = map.promise("answer".into()).expect("nobody else produces it");
/// assert!(map.promise("answer".into()).is_none()); // one producer per key
///
/// let mut waiting = map.get("answer");
/// assert!((&mut waiting).now_or_never().is_none());
/// promise.fulfill(42);
/// assert_eq!(block_on(waiting), Ok(42));
///
/// // A producer that fails: its consumers learn it at once.
/// let promise = map.promise("question".into()).unwrap();
/// let mut waiting = map.get("question");
/// assert!((&mut waiting).now_or_never().is_none());
/// drop(promise);
/// assert_eq!(block_on(waiting), Err(WaitError::Abandoned));
/// ```
#[must_use = "dropping a promise abandons it: its key's waiters fail with `Abandoned`"]
pub struct Promise<'a, K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    map: &'a AwaitMap<K, V, S, L>,
    /// The promised entry; `None` once fulfilled or abandoned (or handed
    /// over to an `OwnedPromise`).
    pub(crate) entry: Option<EntryRef>,
}

impl<'a, K, V, S, L: ScopedRawMutex> Promise<'a, K, V, S, L> {
    /// The promise of the entry `r` (reserved for it under the lock).
    pub(crate) fn from_ref(map: &'a AwaitMap<K, V, S, L>, r: EntryRef) -> Self {
        Promise {
            map,
            entry: Some(r),
        }
    }

    /// Stores `value` under the promised key and wakes its waiters, as
    /// [`insert`](AwaitMap::insert) does; returns the value it replaced
    /// (there is one only if a plain `insert` stored it meanwhile).
    ///
    /// Like `insert`, it stores even on a [closed](AwaitMap::close) map, and
    /// even beyond the map's limit.
    ///
    /// # Examples
    ///
    /// ```
    /// let map = awaitmap::AwaitMap::new();
    /// let promise = map.promise(7).unwrap();
    /// assert_eq!(promise.fulfill("seven"), None);
    /// assert_eq!(map.try_get(&7), Some("seven"));
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

    /// Gives up the key, as dropping the promise does, and returns how many
    /// waiting futures it woke: plain `get`s and `take`s, which fail with
    /// [`WaitError::Abandoned`], and
    /// [`get_or_promise`](AwaitMap::get_or_promise) callers, which start
    /// over (one of them inherits the work).
    ///
    /// # Examples
    ///
    /// ```
    /// let map: awaitmap::AwaitMap<u8, u8> = awaitmap::AwaitMap::new();
    /// let promise = map.promise(1).unwrap();
    /// assert_eq!(promise.abandon(), 0);
    /// assert!(map.promise(1).is_some()); // the key is free again
    /// ```
    pub fn abandon(mut self) -> usize {
        self.release()
    }

    fn release(&mut self) -> usize {
        self.entry.take().map_or(0, |r| self.map.abandon_entry(r))
    }
}

impl<K, V, S, L: ScopedRawMutex> Drop for Promise<'_, K, V, S, L> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<K, V, S, L: ScopedRawMutex> fmt::Debug for Promise<'_, K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Promise")
            .field("fulfilled", &self.entry.is_none())
            .finish_non_exhaustive()
    }
}

impl<K, V, S, L: ScopedRawMutex> AwaitMap<K, V, S, L> {
    /// Stores a promise's value (`Promise::fulfill`).
    pub(crate) fn fulfil_entry(&self, r: EntryRef, value: V) -> Option<V> {
        self.locked(|st, after| st.fulfill(r, value, after))
    }

    /// Gives a promise's key up (`Promise::abandon`, or a dropped promise).
    pub(crate) fn abandon_entry(&self, r: EntryRef) -> usize {
        self.locked(|st, after| st.abandon(r, after))
    }
}

/// What [`AwaitMap::get_or_promise`] resolves with: the key's value, or the
/// promise to produce it.
///
/// # Examples
///
/// ```
/// use awaitmap::{AwaitMap, ValueOrPromise};
/// use futures::executor::block_on;
///
/// let map: AwaitMap<u8, u8> = AwaitMap::new();
/// let Ok(ValueOrPromise::Promise(p)) = block_on(map.get_or_promise(&1)) else {
///     panic!("nobody produces key 1 yet");
/// };
/// p.fulfill(7);
/// assert!(matches!(block_on(map.get_or_promise(&1)), Ok(ValueOrPromise::Value(7))));
/// ```
#[derive(Debug)]
pub enum ValueOrPromise<'a, K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    /// The key had a value (or it arrived while this caller waited).
    Value(V),
    /// Nobody was producing the key: this caller is now its producer.
    Promise(Promise<'a, K, V, S, L>),
}

/// The future returned by [`AwaitMap::get_or_promise`].
///
/// # Examples
///
/// ```
/// use awaitmap::{AwaitMap, GetOrPromise, ValueOrPromise};
///
/// let map: AwaitMap<u8, u8> = AwaitMap::new();
/// map.insert(2, 4);
/// let fut: GetOrPromise<'_, u8, u8> = map.get_or_promise(&2);
/// assert!(matches!(futures::executor::block_on(fut), Ok(ValueOrPromise::Value(4))));
/// ```
///
/// Lazy, `Unpin`, and deregistered when dropped.
///
/// # Panics
///
/// Polling it again after it returned `Ready` panics.
///
/// # Cancel safety
///
/// Cancel-safe: dropping it while it waits deregisters it. Once it has
/// returned a promise, dropping that promise is what abandons the key.
#[must_use = "futures do nothing unless polled"]
pub struct GetOrPromise<
    'a,
    K,
    V,
    S = DefaultHashBuilder,
    Q: ?Sized = K,
    L: ScopedRawMutex = DefaultLock,
> {
    map: &'a AwaitMap<K, V, S, L>,
    key: &'a Q,
    waiter: Waiter,
}

impl<'a, K, V, S, Q, L> Future for GetOrPromise<'a, K, V, S, Q, L>
where
    K: Eq + Hash,
    V: Clone,
    S: BuildHasher,
    Q: ?Sized + Hash + Equivalent<K> + ToOwned,
    Q::Owned: Into<K>,
    L: ScopedRawMutex,
{
    type Output = Result<ValueOrPromise<'a, K, V, S, L>, WaitError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let map = this.map;
        let outcome = map.poll_or_promise(&mut this.waiter, this.key, cx);
        let waiter = &this.waiter;
        outcome.map(|outcome| match outcome {
            Outcome::Value(v) => Ok(ValueOrPromise::Value(v)),
            Outcome::Promise => Ok(ValueOrPromise::Promise(Promise::from_ref(
                map,
                waiter.entry(),
            ))),
            Outcome::Failed(err) => Err(err),
        })
    }
}

impl<K, V, S, Q: ?Sized, L: ScopedRawMutex> Drop for GetOrPromise<'_, K, V, S, Q, L> {
    fn drop(&mut self) {
        self.map.deregister(Kind::Get, &self.waiter);
    }
}

impl<K, V, S, Q: ?Sized, L: ScopedRawMutex> fmt::Debug for GetOrPromise<'_, K, V, S, Q, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetOrPromise")
            .field("registered", &self.waiter.is_registered())
            .finish_non_exhaustive()
    }
}

impl<K, V, S, L> AwaitMap<K, V, S, L>
where
    K: Eq + Hash,
    S: BuildHasher,
    L: ScopedRawMutex,
{
    /// Reserves the absent `key` for one producer: the returned
    /// [`Promise`] is fulfilled with the value, or, if dropped unfulfilled,
    /// fails the key's waiters with [`WaitError::Abandoned`].
    ///
    /// `None` if the key has a value, already has a promise, or the map is
    /// [closed](Self::close) (nobody new can wait for it). The key is moved
    /// into the map only if it had no entry; otherwise it is dropped after
    /// the lock is released. It takes the key by value, as
    /// [`insert`](Self::insert) does, because the map may keep it: a
    /// borrowed key would cost a copy every time (the futures borrow theirs,
    /// since they copy only when they must register).
    ///
    /// # Examples
    ///
    /// ```
    /// let map = awaitmap::AwaitMap::new();
    /// map.insert(1, "one");
    /// assert!(map.promise(1).is_none()); // has a value
    /// let two = map.promise(2).unwrap();
    /// assert!(map.promise(2).is_none()); // promised already
    /// two.fulfill("two");
    /// assert_eq!(map.try_get(&2), Some("two"));
    /// ```
    pub fn promise(&self, key: K) -> Option<Promise<'_, K, V, S, L>> {
        let hash = self.hasher.hash_one(&key);
        let mut key = Some(key);
        let entry = self
            .state
            .with(|st| st.promise(hash, &mut key, |a, b| a == b));
        // Dropped here, with the lock released, if the map did not keep it.
        drop(key);
        entry.map(|r| Promise::from_ref(self, r))
    }

    /// A future that resolves with the key's value if it has one; otherwise
    /// the first caller gets the [`Promise`] to produce it, and concurrent
    /// callers wait for that producer's value. Coalescing: the work for a key
    /// is started once, however many ask for it.
    ///
    /// If the producer abandons its promise, the `get_or_promise` callers
    /// waiting for it do not fail: they start over, and the first of them to
    /// be polled receives the promise and becomes the new producer (the
    /// others wait for it). Plain [`get`](Self::get) and
    /// [`take`](Self::take) waiters fail with [`WaitError::Abandoned`].
    ///
    /// # Errors
    ///
    /// [`WaitError::Closed`] if the map is closed while the key has no
    /// value, [`WaitError::Cancelled`] if [`cancel`](Self::cancel) fails the
    /// wait.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe while it waits. A caller that received the promise and is
    /// cancelled drops it, which hands the work to the next caller.
    ///
    /// # Examples
    ///
    /// ```
    /// use awaitmap::{AwaitMap, ValueOrPromise};
    /// use futures::executor::block_on;
    ///
    /// let cache: AwaitMap<u32, u64> = AwaitMap::new();
    /// let lookup = |n: u32| {
    ///     let cache = &cache;
    ///     async move {
    ///         match cache.get_or_promise(&n).await? {
    ///             ValueOrPromise::Value(v) => Ok(v),
    ///             ValueOrPromise::Promise(p) => {
    ///                 let v = u64::from(n) * 2; // the expensive work, done once
    ///                 p.fulfill(v);
    ///                 Ok::<_, awaitmap::WaitError>(v)
    ///             }
    ///         }
    ///     }
    /// };
    /// assert_eq!(block_on(lookup(21)), Ok(42)); // produced
    /// assert_eq!(block_on(lookup(21)), Ok(42)); // found
    /// ```
    pub fn get_or_promise<'a, Q>(&'a self, key: &'a Q) -> GetOrPromise<'a, K, V, S, Q, L>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
        V: Clone,
    {
        GetOrPromise {
            map: self,
            key,
            waiter: Waiter::new(),
        }
    }
}
