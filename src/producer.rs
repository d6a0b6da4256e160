//! The producer's tools for map-wide conditions: room under a limit,
//! newly wanted keys, closed, drained.
//!
//! Each condition is one `event_listener::Event` in the map, which many
//! producers may wait on; it is notified after the map's lock is released,
//! and a waiter always re-checks the condition under the lock after it starts
//! listening, so no notification is lost. Per-key waiters never use an
//! `Event`: they live in the map's own slab.

use core::fmt;
use core::future::Future;
use core::hash::{BuildHasher, Hash};
use core::pin::Pin;
use core::task::{Context, Poll};

use alloc::sync::Arc;
use hashbrown::DefaultHashBuilder;
use mutex::ScopedRawMutex;

use crate::AwaitMap;
use crate::state::State;
use crate::sync::{DefaultLock, Event, EventListener};

/// Polls `listener`, or starts one on `event` if there is none; `Ready`
/// means "look at the condition again". A fresh listener is always followed
/// by a fresh look, so a notification sent before it started is not missed.
fn listen_or_poll(
    event: &Event,
    listener: &mut Option<EventListener>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    match listener {
        None => {
            *listener = Some(event.listen());
            Poll::Ready(())
        }
        Some(l) => match Pin::new(l).poll(cx) {
            Poll::Ready(()) => {
                *listener = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        },
    }
}

/// Done with a listener after the condition held: if it was notified, the
/// notification is used up here (dropping a notified listener would pass it
/// on to the next listener, which would wake for nothing and lose its place
/// in line).
fn retire(listener: &mut Option<EventListener>) {
    if let Some(mut l) = listener.take() {
        let _ = Pin::new(&mut l).poll(&mut Context::from_waker(core::task::Waker::noop()));
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "producer")))]
impl<K, V, S, L: ScopedRawMutex> AwaitMap<K, V, S, L> {
    /// The map, limited to `limit` values that nobody has asked for yet:
    /// backpressure for producers that run ahead of their consumers.
    ///
    /// What the limit bounds, precisely: producers that use
    /// [`insert_async`](Self::insert_async),
    /// [`try_insert`](Self::try_insert) or `insert_blocking` wait (or are
    /// refused) while `len() >= limit`, **unless a future waits on the key**
    /// they insert. A value that a waiting `get` or `take` will receive is
    /// always let in at once: holding it back could only stall the consumer
    /// that asked for it, and an ordered pipeline (a reorder buffer whose
    /// consumer waits for the next key while later keys fill the map) would
    /// deadlock. When a future starts waiting on a key, the producers
    /// waiting for room look again, so the one holding that key's value gets
    /// in. Each value that leaves (through `take`, `remove`) lets one
    /// waiting producer in.
    ///
    /// So `len()` stays at most `limit` plus the values let in for waiting
    /// futures (which a `take` moves straight out; a `get` leaves its value
    /// stored). Plain [`insert`](Self::insert) (and
    /// [`Promise::fulfill`](crate::Promise::fulfill)) ignore the limit: they
    /// never lose a value, so `len()` can exceed it. Replacing the value of
    /// a key that has one never waits. A `const fn`, so a limited map can
    /// live in a `static`.
    ///
    /// # Examples
    ///
    /// ```
    /// let map = awaitmap::AwaitMap::new().with_limit(1);
    /// assert_eq!(map.try_insert(1, "a"), Ok(None));
    /// assert_eq!(map.try_insert(2, "b"), Err((2, "b"))); // full
    /// assert_eq!(map.try_insert(1, "c"), Ok(Some("a"))); // replacing is fine
    /// map.remove(&1);
    /// assert_eq!(map.try_insert(2, "b"), Ok(None));
    /// ```
    pub const fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The limit set by [`with_limit`](Self::with_limit), if any
    /// (`usize::MAX` means none).
    ///
    /// # Examples
    ///
    /// ```
    /// let map: awaitmap::AwaitMap<u8, u8> = awaitmap::AwaitMap::new();
    /// assert_eq!(map.limit(), None);
    /// assert_eq!(map.with_limit(4).limit(), Some(4));
    /// ```
    pub fn limit(&self) -> Option<usize> {
        (self.limit != usize::MAX).then_some(self.limit)
    }

    /// A future that resolves once the map is [closed](Self::close): for a
    /// producer to stop when its consumers are gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::FutureExt;
    ///
    /// let map: awaitmap::AwaitMap<u8, u8> = awaitmap::AwaitMap::new();
    /// let mut closed = map.closed();
    /// assert!((&mut closed).now_or_never().is_none());
    /// map.close();
    /// assert!(closed.now_or_never().is_some());
    /// ```
    pub fn closed(&self) -> WaitClosed<'_, K, V, S, L> {
        WaitClosed {
            map: self,
            listener: None,
        }
    }

    /// A future that resolves when no future is waiting on the map
    /// ([`waiters()`](Self::waiters) is 0): a graceful drain before shutdown.
    /// It resolves at once if nobody waits; it does not stop new waiters from
    /// coming (close the map for that, then drain).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::{FutureExt, executor::block_on};
    ///
    /// let map = awaitmap::AwaitMap::new();
    /// let mut waiting = map.get(&1);
    /// assert!((&mut waiting).now_or_never().is_none());
    /// let mut drained = map.drained();
    /// assert!((&mut drained).now_or_never().is_none());
    /// map.insert(1, "one");
    /// assert_eq!(block_on(waiting), Ok("one"));
    /// assert!(drained.now_or_never().is_some());
    /// ```
    pub fn drained(&self) -> Drained<'_, K, V, S, L> {
        Drained {
            map: self,
            listener: None,
            watching: false,
        }
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "producer")))]
impl<K, V, S, L> AwaitMap<K, V, S, L>
where
    K: Eq + Hash,
    S: BuildHasher,
    L: ScopedRawMutex,
{
    /// Inserts unless the map is at its [limit](Self::with_limit): `Err`
    /// hands `(key, value)` back when `len() >= limit`, the key has no
    /// value and no future waits on it (replacing a value, and a value that
    /// a waiting future will receive, are always let in). Never waits. On a
    /// map without a limit, or a closed one, it is [`insert`](Self::insert).
    ///
    /// The name follows the async convention of `try_send` and `try_lock`:
    /// the form of [`insert_async`](Self::insert_async) that never waits.
    /// It is not `HashMap::try_insert` (unstable in `std`), which refuses
    /// to replace a present key: here replacing is always allowed, and only
    /// a full map refuses.
    ///
    /// # Errors
    ///
    /// `Err((key, value))` when the map is full.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::FutureExt;
    ///
    /// let map = awaitmap::AwaitMap::new().with_limit(1);
    /// map.insert(1, 'a');
    /// assert_eq!(map.try_insert(2, 'b'), Err((2, 'b'))); // full
    /// let mut wants_3 = map.take(&3);
    /// assert!((&mut wants_3).now_or_never().is_none());
    /// assert_eq!(map.try_insert(3, 'c'), Ok(None)); // somebody waits for it
    /// assert_eq!(wants_3.now_or_never(), Some(Ok('c')));
    /// ```
    pub fn try_insert(&self, key: K, value: V) -> Result<Option<V>, (K, V)> {
        let hash = self.hasher.hash_one(&key);
        let limit = self.limit;
        self.insert_guarded(key, value, |st, key, value, after| {
            st.insert_within(hash, key, value, limit, |a, b| a == b, after)
        })
    }

    /// A future that inserts as soon as the map has room under its
    /// [limit](Self::with_limit) or a future waits on the key, and resolves
    /// with the value it replaced.
    /// Producers waiting for room are let in one per freed value, in the
    /// order they started waiting (a producer that is let in but finds the
    /// room taken by a `try_insert` meanwhile waits again, at the back). On a
    /// closed map it inserts at once, regardless of the limit (nothing handed
    /// to the map is lost): a producer that runs indefinitely should also
    /// watch [`closed`](Self::closed) to stop.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves drops the key and value
    /// unstored; the room it would have used goes to the next producer.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::{FutureExt, executor::block_on};
    ///
    /// let map = awaitmap::AwaitMap::new().with_limit(1);
    /// map.insert(1, "a");
    /// let mut insert = map.insert_async(2, "b");
    /// assert!((&mut insert).now_or_never().is_none()); // full: waits
    /// assert_eq!(block_on(map.take(&1)), Ok("a"));     // makes room
    /// assert_eq!(block_on(insert), None);
    /// assert_eq!(map.try_get(&2), Some("b"));
    /// ```
    pub fn insert_async(&self, key: K, value: V) -> InsertAsync<'_, K, V, S, L> {
        InsertAsync {
            map: self,
            item: Some((key, value)),
            listener: None,
        }
    }

    /// Like [`insert_async`](Self::insert_async), on a thread: waits
    /// (parked) for room under the limit, then inserts.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let map = Arc::new(awaitmap::AwaitMap::new().with_limit(1));
    /// map.insert(1, "a");
    /// let producer = std::thread::spawn({
    ///     let map = Arc::clone(&map);
    ///     move || map.insert_blocking(2, "b")
    /// });
    /// assert_eq!(map.take_blocking(&1), Ok("a"));
    /// assert_eq!(producer.join().unwrap(), None);
    /// assert_eq!(map.take_blocking(&2), Ok("b"));
    /// ```
    #[cfg(feature = "std")]
    pub fn insert_blocking(&self, key: K, value: V) -> Option<V> {
        use crate::sync::Listener;
        let (mut key, mut value) = (key, value);
        let mut listener: Option<EventListener> = None;
        loop {
            // A closed map takes the value regardless of the limit.
            match self.try_insert(key, value) {
                Ok(old) => return old,
                Err(back) => (key, value) = back,
            }
            match listener.take() {
                None => listener = Some(self.events.room.listen()),
                Some(l) => l.wait(),
            }
        }
    }
}

/// The future returned by [`AwaitMap::insert_async`]: waits for room under
/// the map's limit, inserts, and resolves with the value it replaced.
///
/// # Examples
///
/// ```
/// use awaitmap::{AwaitMap, InsertAsync};
///
/// let map: AwaitMap<u8, u8> = AwaitMap::new().with_limit(2);
/// let insert: InsertAsync<'_, u8, u8> = map.insert_async(1, 10);
/// assert_eq!(futures::executor::block_on(insert), None);
/// ```
///
/// # Cancel safety
///
/// Dropping it before it resolves drops the key and value unstored.
#[must_use = "futures do nothing unless polled"]
#[cfg_attr(docsrs, doc(cfg(feature = "producer")))]
pub struct InsertAsync<'a, K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    map: &'a AwaitMap<K, V, S, L>,
    item: Option<(K, V)>,
    listener: Option<EventListener>,
}

impl<K, V, S, L: ScopedRawMutex> Unpin for InsertAsync<'_, K, V, S, L> {}

impl<K, V, S, L> Future for InsertAsync<'_, K, V, S, L>
where
    K: Eq + Hash,
    S: BuildHasher,
    L: ScopedRawMutex,
{
    type Output = Option<V>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<V>> {
        let this = self.get_mut();
        loop {
            let (key, value) = this
                .item
                .take()
                .expect("`insert_async` polled after it returned `Ready`");
            // A closed map takes the value regardless of the limit.
            match this.map.try_insert(key, value) {
                Ok(old) => {
                    retire(&mut this.listener);
                    return Poll::Ready(old);
                }
                Err(back) => this.item = Some(back),
            }
            if listen_or_poll(&this.map.events.room, &mut this.listener, cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl<K, V, S, L: ScopedRawMutex> fmt::Debug for InsertAsync<'_, K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InsertAsync")
            .field("done", &self.item.is_none())
            .finish_non_exhaustive()
    }
}

/// The future returned by [`AwaitMap::closed`]: resolves once the map is
/// closed.
///
/// # Examples
///
/// ```
/// let map: awaitmap::AwaitMap<u8, u8> = awaitmap::AwaitMap::new();
/// map.close();
/// futures::executor::block_on(map.closed()); // ready at once
/// ```
#[must_use = "futures do nothing unless polled"]
#[cfg_attr(docsrs, doc(cfg(feature = "producer")))]
pub struct WaitClosed<'a, K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    map: &'a AwaitMap<K, V, S, L>,
    listener: Option<EventListener>,
}

impl<K, V, S, L: ScopedRawMutex> Future for WaitClosed<'_, K, V, S, L> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if this.map.is_closed() {
                return Poll::Ready(());
            }
            if listen_or_poll(&this.map.events.closed, &mut this.listener, cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl<K, V, S, L: ScopedRawMutex> fmt::Debug for WaitClosed<'_, K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitClosed").finish_non_exhaustive()
    }
}

/// The future returned by [`AwaitMap::drained`]: resolves when no future
/// waits on the map.
///
/// # Examples
///
/// ```
/// let map: awaitmap::AwaitMap<u8, u8> = awaitmap::AwaitMap::new();
/// futures::executor::block_on(map.drained()); // nobody waits: ready at once
/// ```
#[must_use = "futures do nothing unless polled"]
#[cfg_attr(docsrs, doc(cfg(feature = "producer")))]
pub struct Drained<'a, K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    map: &'a AwaitMap<K, V, S, L>,
    listener: Option<EventListener>,
    /// Counted in the map's `idle_watchers`, so the last finishing waiter
    /// notifies.
    watching: bool,
}

impl<K, V, S, L: ScopedRawMutex> Future for Drained<'_, K, V, S, L> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let watching = this.watching;
            let idle = this.map.state.with(|st| st.watch_idle(watching));
            this.watching = !idle;
            if idle {
                retire(&mut this.listener);
                return Poll::Ready(());
            }
            if listen_or_poll(&this.map.events.idle, &mut this.listener, cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl<K, V, S, L: ScopedRawMutex> Drop for Drained<'_, K, V, S, L> {
    fn drop(&mut self) {
        if self.watching {
            self.map.state.with(State::unwatch_idle);
        }
    }
}

impl<K, V, S, L: ScopedRawMutex> fmt::Debug for Drained<'_, K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drained").finish_non_exhaustive()
    }
}

/// A producer's view of the demand: the keys consumers wait for, from
/// [`AwaitMap::demand`] (or [`AwaitMap::demand_owned`], for an
/// `Arc<AwaitMap>`, as [`OwnedDemand`]).
///
/// A key is *wanted* while futures wait on it and nobody serves it: no
/// value, no promise. While a `Demand` lives, a key is announced **each
/// time it becomes wanted**, whatever the path: a `get` or `take` registers
/// on a key that had nothing; or a value leaves a key that still has
/// waiters (a `take` took it and others wait, or it was removed before the
/// woken futures polled). [`next`](Self::next) hands each announced key to
/// one caller, once per time it became wanted: several producers sharing
/// the map's `Demand` handles split the work. A key that stopped being
/// wanted before it was handed out (its waiters left, or a value or promise
/// arrived) is skipped. Keys that became wanted before the first `Demand`
/// was made are not announced, so make it before the consumers start.
///
/// When a value leaves a key that still has waiters, the announcement is
/// made by one of those waiters, with its own copy of the key (the map
/// never copies a key under its lock): the futures woken for the value
/// announce it when they poll again and find it gone; if none of them is
/// due to poll (the take that got the value leaves others that were never
/// woken), the map wakes the first remaining take (or every remaining get)
/// for that purpose. So a waiter may see one extra wake-up, only while a
/// `Demand` lives.
///
/// The queue is the only allocation. It holds the keys announced and not yet
/// handed out; when waiters come and go while nobody calls `next`, it is
/// pruned of the keys no longer wanted, so it stays proportional to the keys
/// actually wanted.
///
/// # Examples
///
/// ```
/// use futures::{FutureExt, executor::block_on};
///
/// let map: awaitmap::AwaitMap<u32, u32> = awaitmap::AwaitMap::new();
/// let demand = map.demand();
/// let mut consumer = map.get(&7);
/// assert!((&mut consumer).now_or_never().is_none()); // 7 is now wanted
/// let wanted = block_on(demand.next());
/// assert_eq!(wanted, Some(7));
/// map.insert(7, 49); // produce only what is asked for
/// assert_eq!(block_on(consumer), Ok(49));
/// ```
#[must_use = "keys are announced only while a `Demand` lives"]
#[cfg_attr(docsrs, doc(cfg(feature = "producer")))]
pub struct Demand<'a, K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    map: &'a AwaitMap<K, V, S, L>,
    /// The stream's listener, between polls (feature `futures-core`).
    #[cfg_attr(not(feature = "futures-core"), allow(dead_code))]
    listener: Option<EventListener>,
}

/// A [`Demand`] that holds its own `Arc` of the map, from
/// [`AwaitMap::demand_owned`]: for a producer task that is spawned.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use futures::{FutureExt, executor::block_on};
///
/// let map: Arc<awaitmap::AwaitMap<u32, u32>> = Arc::new(awaitmap::AwaitMap::new());
/// let demand = map.demand_owned(); // made before the consumers start
/// let producer = std::thread::spawn(move || {
///     while let Some(n) = block_on(demand.next()) {
///         demand.map().insert(n, n * n);
///     }
/// });
/// assert_eq!(map.get_blocking(&12), Ok(144));
/// map.close(); // the producer's `next` returns `None`
/// producer.join().unwrap();
/// ```
#[must_use = "keys are announced only while a demand handle lives"]
#[cfg_attr(docsrs, doc(cfg(feature = "producer")))]
pub struct OwnedDemand<K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    map: Arc<AwaitMap<K, V, S, L>>,
    /// The stream's listener, between polls (feature `futures-core`).
    #[cfg_attr(not(feature = "futures-core"), allow(dead_code))]
    listener: Option<EventListener>,
}

#[cfg_attr(docsrs, doc(cfg(feature = "producer")))]
impl<K, V, S, L: ScopedRawMutex> AwaitMap<K, V, S, L> {
    /// Starts watching the demand: see [`Demand`].
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::{FutureExt, executor::block_on};
    ///
    /// let map: awaitmap::AwaitMap<String, u8> = awaitmap::AwaitMap::new();
    /// let demand = map.demand();
    /// let mut want = map.take("config");
    /// assert!((&mut want).now_or_never().is_none());
    /// assert_eq!(block_on(demand.next()).as_deref(), Some("config"));
    /// ```
    pub fn demand(&self) -> Demand<'_, K, V, S, L> {
        self.state.with(State::watch_demand);
        Demand {
            map: self,
            listener: None,
        }
    }

    /// Starts watching the demand, with a handle that holds its own `Arc` of
    /// the map: see [`OwnedDemand`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use futures::{FutureExt, executor::block_on};
    ///
    /// let map: Arc<awaitmap::AwaitMap<u8, u8>> = Arc::new(awaitmap::AwaitMap::new());
    /// let demand = map.demand_owned();
    /// let mut want = map.get(&3);
    /// assert!((&mut want).now_or_never().is_none());
    /// assert_eq!(block_on(demand.next()), Some(3));
    /// ```
    pub fn demand_owned(self: &Arc<Self>) -> OwnedDemand<K, V, S, L> {
        self.state.with(State::watch_demand);
        OwnedDemand {
            map: Arc::clone(self),
            listener: None,
        }
    }

    /// A demand handle is gone; with the last one, queued keys are dropped.
    fn end_demand(&self) {
        let stale = self.state.with(State::unwatch_demand);
        // Dropped here, unlocked.
        drop(stale);
    }
}

impl<'a, K, V, S, L: ScopedRawMutex> Demand<'a, K, V, S, L> {
    /// A future that resolves with the next wanted key, or `None` once the
    /// map is closed and no announced key is left.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a key is taken from the queue only when the future
    /// resolves with it.
    pub fn next(&self) -> NextWanted<'a, K, V, S, L> {
        NextWanted {
            map: self.map,
            listener: None,
        }
    }
}

impl<K, V, S, L: ScopedRawMutex> OwnedDemand<K, V, S, L> {
    /// As [`Demand::next`]: the next wanted key, or `None` once the map is
    /// closed and no announced key is left.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use futures::executor::block_on;
    ///
    /// let map: Arc<awaitmap::AwaitMap<u8, u8>> = Arc::new(awaitmap::AwaitMap::new());
    /// let demand = map.demand_owned();
    /// map.close();
    /// assert_eq!(block_on(demand.next()), None);
    /// ```
    pub fn next(&self) -> NextWanted<'_, K, V, S, L> {
        NextWanted {
            map: &self.map,
            listener: None,
        }
    }

    /// The map this handle watches.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let map: Arc<awaitmap::AwaitMap<u8, u8>> = Arc::new(awaitmap::AwaitMap::new());
    /// let demand = map.demand_owned();
    /// assert!(Arc::ptr_eq(demand.map(), &map));
    /// ```
    pub fn map(&self) -> &Arc<AwaitMap<K, V, S, L>> {
        &self.map
    }
}

impl<K, V, S, L: ScopedRawMutex> Drop for Demand<'_, K, V, S, L> {
    fn drop(&mut self) {
        self.map.end_demand();
    }
}

impl<K, V, S, L: ScopedRawMutex> Drop for OwnedDemand<K, V, S, L> {
    fn drop(&mut self) {
        self.map.end_demand();
    }
}

impl<K, V, S, L: ScopedRawMutex> fmt::Debug for Demand<'_, K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Demand").finish_non_exhaustive()
    }
}

impl<K, V, S, L: ScopedRawMutex> fmt::Debug for OwnedDemand<K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedDemand").finish_non_exhaustive()
    }
}

/// The future returned by [`Demand::next`] and [`OwnedDemand::next`]: the
/// next wanted key.
///
/// # Examples
///
/// ```
/// let map: awaitmap::AwaitMap<u8, u8> = awaitmap::AwaitMap::new();
/// let demand = map.demand();
/// map.close();
/// assert_eq!(futures::executor::block_on(demand.next()), None);
/// ```
///
/// # Cancel safety
///
/// Cancel-safe: a key leaves the queue only when the future resolves with it.
#[must_use = "futures do nothing unless polled"]
#[cfg_attr(docsrs, doc(cfg(feature = "producer")))]
pub struct NextWanted<'a, K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    map: &'a AwaitMap<K, V, S, L>,
    listener: Option<EventListener>,
}

impl<K, V, S, L: ScopedRawMutex> Future for NextWanted<'_, K, V, S, L> {
    type Output = Option<K>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<K>> {
        let this = self.get_mut();
        poll_next_wanted(this.map, &mut this.listener, cx)
    }
}

/// The next wanted key, `None` once the map is closed with none left, or
/// `Pending` (listening on the demand event) until there is one.
fn poll_next_wanted<K, V, S, L: ScopedRawMutex>(
    map: &AwaitMap<K, V, S, L>,
    listener: &mut Option<EventListener>,
    cx: &mut Context<'_>,
) -> Poll<Option<K>> {
    loop {
        let (next, closed) = map.state.with(|st| (st.next_wanted(), st.is_closed()));
        match next {
            Some((true, key)) => {
                retire(listener);
                return Poll::Ready(Some(key));
            }
            // No longer wanted: dropped here, unlocked; look again.
            Some((false, stale)) => drop(stale),
            None if closed => return Poll::Ready(None),
            None => {
                if listen_or_poll(&map.events.demand, listener, cx).is_pending() {
                    return Poll::Pending;
                }
            }
        }
    }
}

/// With feature `futures-core`, a `Demand` is a stream of the wanted keys:
/// each item is what [`next`](Demand::next) would resolve with, and the
/// stream ends once the map is closed and no announced key is left.
///
/// # Examples
///
/// ```
/// use futures::{StreamExt, executor::block_on};
///
/// let map: awaitmap::AwaitMap<u32, u32> = awaitmap::AwaitMap::new();
/// let demand = map.demand();
/// let mut a = map.get(&1);
/// let mut b = map.get(&2);
/// assert!(futures::FutureExt::now_or_never(&mut a).is_none());
/// assert!(futures::FutureExt::now_or_never(&mut b).is_none());
/// map.close();
/// let wanted: Vec<u32> = block_on(demand.collect());
/// assert_eq!(wanted, [1, 2]);
/// ```
#[cfg(feature = "futures-core")]
#[cfg_attr(docsrs, doc(cfg(feature = "futures-core")))]
impl<K, V, S, L: ScopedRawMutex> futures_core::Stream for Demand<'_, K, V, S, L> {
    type Item = K;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<K>> {
        let this = self.get_mut();
        poll_next_wanted(this.map, &mut this.listener, cx)
    }
}

/// As the `Stream` of [`Demand`] (feature `futures-core`).
#[cfg(feature = "futures-core")]
#[cfg_attr(docsrs, doc(cfg(feature = "futures-core")))]
impl<K, V, S, L: ScopedRawMutex> futures_core::Stream for OwnedDemand<K, V, S, L> {
    type Item = K;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<K>> {
        let this = self.get_mut();
        poll_next_wanted(&this.map, &mut this.listener, cx)
    }
}

impl<K, V, S, L: ScopedRawMutex> fmt::Debug for NextWanted<'_, K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NextWanted").finish_non_exhaustive()
    }
}
