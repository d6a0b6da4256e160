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
#[cfg(target_has_atomic = "ptr")]
use alloc::sync::Arc;
use hashbrown::{DefaultHashBuilder, Equivalent};
use mutex::ScopedRawMutex;

use crate::map::Core;
use crate::state::{After, CoStep, Phase, Prepared, Ticket};
use crate::sync::DefaultLock;
use crate::waiters::Kind;
use crate::{AwaitMap, WaitError};

/// A reservation of one absent key by its producer, from
/// [`AwaitMap::promise`] or [`AwaitMap::get_or_promise`].
///
/// [`fulfil`](Self::fulfil) inserts the value and wakes the key's waiters.
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
/// promise.fulfil(42);
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
    /// `None` once fulfilled.
    ticket: Option<Ticket>,
}

impl<K, V, S, L: ScopedRawMutex> Promise<'_, K, V, S, L> {
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
    /// assert_eq!(promise.fulfil("seven"), None);
    /// assert_eq!(map.try_get(&7), Some("seven"));
    /// ```
    pub fn fulfil(mut self, value: V) -> Option<V> {
        let ticket = self.ticket.take().expect("a promise is fulfilled once");
        self.map.fulfil_ticket(ticket, value)
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

    /// The reservation, handed over to an owned guard.
    #[cfg(target_has_atomic = "ptr")]
    fn into_ticket(mut self) -> Ticket {
        self.ticket.take().expect("an unfulfilled promise")
    }

    fn release(&mut self) -> usize {
        self.ticket
            .take()
            .map_or(0, |ticket| self.map.abandon_ticket(ticket))
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
            .field("fulfilled", &self.ticket.is_none())
            .finish_non_exhaustive()
    }
}

/// A [`Promise`] that holds its own `Arc` of the map, from
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
///     job.fulfil("done".to_owned());
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
#[cfg(target_has_atomic = "ptr")]
#[must_use = "dropping a promise abandons it: its key's waiters fail with `Abandoned`"]
pub struct OwnedPromise<K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    map: Arc<AwaitMap<K, V, S, L>>,
    /// `None` once fulfilled.
    ticket: Option<Ticket>,
}

#[cfg(target_has_atomic = "ptr")]
impl<K, V, S, L: ScopedRawMutex> OwnedPromise<K, V, S, L> {
    /// As [`Promise::fulfil`]: stores the value and wakes the key's waiters;
    /// returns a value a plain `insert` stored meanwhile.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let map = Arc::new(awaitmap::AwaitMap::new());
    /// let promise = map.promise_owned(1).unwrap();
    /// assert_eq!(promise.fulfil('a'), None);
    /// assert_eq!(map.try_get(&1), Some('a'));
    /// ```
    pub fn fulfil(mut self, value: V) -> Option<V> {
        let ticket = self.ticket.take().expect("a promise is fulfilled once");
        self.map.fulfil_ticket(ticket, value)
    }

    /// As [`Promise::abandon`]: gives the key up and returns how many
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
    /// # promise.fulfil(0);
    /// ```
    pub fn map(&self) -> &Arc<AwaitMap<K, V, S, L>> {
        &self.map
    }

    fn release(&mut self) -> usize {
        self.ticket
            .take()
            .map_or(0, |ticket| self.map.abandon_ticket(ticket))
    }
}

#[cfg(target_has_atomic = "ptr")]
impl<K, V, S, L: ScopedRawMutex> Drop for OwnedPromise<K, V, S, L> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(target_has_atomic = "ptr")]
impl<K, V, S, L: ScopedRawMutex> fmt::Debug for OwnedPromise<K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPromise")
            .field("fulfilled", &self.ticket.is_none())
            .finish_non_exhaustive()
    }
}

impl<K, V, S, L: ScopedRawMutex> AwaitMap<K, V, S, L> {
    /// Stores a promise's value (`Promise::fulfil`).
    fn fulfil_ticket(&self, ticket: Ticket, value: V) -> Option<V> {
        self.locked(|st, _| st.fulfil(ticket, value))
    }

    /// Gives a promise's key up (`Promise::abandon`, or a dropped promise).
    fn abandon_ticket(&self, ticket: Ticket) -> usize {
        self.locked(|st, after| st.abandon(ticket, after))
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
/// p.fulfil(7);
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
    core: Core,
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
        let key = this.key;
        match this.core.phase {
            Phase::Done => panic!("`get_or_promise` polled after it returned `Ready`"),
            Phase::Init => this.core.hash = map.hasher.hash_one(key),
            Phase::Registered { .. } => {}
        }
        let hash = this.core.hash;
        let mut prep = Prepared {
            waker: None,
            key: None,
        };
        loop {
            let mut after = After::new();
            let step = map.state.with(|st| {
                let step = st.poll_or_promise(
                    &mut this.core.phase,
                    hash,
                    |k| key.equivalent(k),
                    cx.waker(),
                    &mut prep,
                    &mut after,
                );
                after.collect(st);
                step
            });
            after.spare_key = prep.key.take();
            // Made before the leftovers are seen to: if that panics, the
            // promise is dropped on the way out, and so abandoned, not lost.
            let ready = match step {
                CoStep::Value(v) => Ok(ValueOrPromise::Value(v)),
                CoStep::Promise(ticket) => Ok(ValueOrPromise::Promise(Promise {
                    map,
                    ticket: Some(ticket),
                })),
                CoStep::Failed(err) => Err(err),
                CoStep::Pending => {
                    map.finish(after);
                    return Poll::Pending;
                }
                CoStep::Restart => {
                    map.finish(after);
                    continue;
                }
                CoStep::Need { key: need_key } => {
                    map.finish(after);
                    // User code (waker clone, key `to_owned`) runs here, with
                    // the lock released.
                    prep.waker = Some(map.clone_waker(Kind::Get, &mut this.core, cx));
                    if need_key {
                        prep.key = Some(key.to_owned().into());
                    }
                    continue;
                }
            };
            after.spare_waker = prep.waker.take();
            map.finish(after);
            return Poll::Ready(ready);
        }
    }
}

impl<K, V, S, Q: ?Sized, L: ScopedRawMutex> Drop for GetOrPromise<'_, K, V, S, Q, L> {
    fn drop(&mut self) {
        self.map.abandon(Kind::Get, &mut self.core);
    }
}

impl<K, V, S, Q: ?Sized, L: ScopedRawMutex> fmt::Debug for GetOrPromise<'_, K, V, S, Q, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetOrPromise")
            .field("registered", &self.core.is_registered())
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
    /// the lock is released.
    ///
    /// # Examples
    ///
    /// ```
    /// let map = awaitmap::AwaitMap::new();
    /// map.insert(1, "one");
    /// assert!(map.promise(1).is_none()); // has a value
    /// let two = map.promise(2).unwrap();
    /// assert!(map.promise(2).is_none()); // promised already
    /// two.fulfil("two");
    /// assert_eq!(map.try_get(&2), Some("two"));
    /// ```
    pub fn promise(&self, key: K) -> Option<Promise<'_, K, V, S, L>> {
        let hash = self.hasher.hash_one(&key);
        let mut key = Some(key);
        let ticket = self
            .state
            .with(|st| st.promise(hash, &mut key, |a, b| a == b));
        // Dropped here, with the lock released, if the map did not keep it.
        drop(key);
        ticket.map(|ticket| Promise {
            map: self,
            ticket: Some(ticket),
        })
    }

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
    /// promise.fulfil(1);
    /// assert_eq!(map.try_get("k"), Some(1));
    /// ```
    #[cfg(target_has_atomic = "ptr")]
    pub fn promise_owned(self: &Arc<Self>, key: K) -> Option<OwnedPromise<K, V, S, L>> {
        let promise = self.promise(key)?;
        let ticket = promise.into_ticket();
        Some(OwnedPromise {
            map: Arc::clone(self),
            ticket: Some(ticket),
        })
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
    ///                 p.fulfil(v);
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
            core: Core::new(),
        }
    }
}
