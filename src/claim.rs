//! Claims and deliveries: request/response correlation in which a reply
//! that nobody waits for any more is refused, not kept.
//!
//! A consumer [`claim`](AwaitMap::claim)s a key when it sends its request:
//! the claim registers at once (not on its first poll), so a reply that
//! arrives before the caller awaits is kept for it. The reader
//! [`deliver`](AwaitMap::deliver)s each reply: stored if a claim (or any
//! other future) waits for the key, handed back otherwise. A claim dropped
//! before it received its reply (a timeout) releases the key, and a reply
//! delivered to it and not received leaves with it. So a client whose calls
//! time out keeps no late replies, with no bookkeeping of its own.

use core::fmt;
use core::future::Future;
use core::hash::{BuildHasher, Hash};
use core::pin::Pin;
use core::task::{Context, Poll};

use hashbrown::DefaultHashBuilder;
use mutex::ScopedRawMutex;

use crate::state::waiter::Waiter;
use crate::state::{Delivery, Entry};
use crate::sync::DefaultLock;
use crate::{AwaitMap, WaitError};

impl<K, V, S, L> AwaitMap<K, V, S, L>
where
    K: Eq + Hash + Clone,
    S: BuildHasher,
    L: ScopedRawMutex,
{
    /// Claims the key's next value: a [`take`](Self::take) that registers
    /// now, before it is polled, and that gives the key up when dropped.
    ///
    /// Make the claim before sending the request whose reply will carry the
    /// key, then await it; the reader task hands replies in with
    /// [`deliver`](Self::deliver). A reply that arrives before the claim is
    /// first polled is kept for it. If the claim is dropped first (a
    /// timeout, a cancelled task), it leaves the key's waiters, and a value
    /// delivered to it that it never received is removed and dropped with
    /// it, unless another future waits for the key (then the value goes to
    /// that one, as with `take`). A reply that arrives after that is refused
    /// by `deliver`: nothing is left behind.
    ///
    /// If the key already has a value when it is claimed, the claim takes it
    /// and is `Ready` on its first poll. Claiming costs one trip through the
    /// lock (a `take` registers on its first poll instead), and allocates
    /// nothing once the map has room for the keys in flight.
    ///
    /// # Errors
    ///
    /// As [`take`](Self::take): `Closed`, `Cancelled`, `Abandoned`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the claim releases the key, as above: unlike a `take`, a
    /// claim dropped after its value arrived drops that value (nobody else
    /// asked for it).
    ///
    /// # Examples
    ///
    /// ```
    /// use awaitmap::AwaitMap;
    /// use futures::executor::block_on;
    ///
    /// let replies: AwaitMap<u64, &str> = AwaitMap::new();
    /// let reply = replies.claim(7);                  // registered now
    /// // ... send request 7 ...
    /// assert_eq!(replies.deliver(7, "pong"), Ok(None)); // stored: 7 is claimed
    /// assert_eq!(block_on(reply), Ok("pong"));
    ///
    /// // A call that gave up: its late reply is refused.
    /// let gave_up = replies.claim(8);
    /// drop(gave_up);
    /// assert_eq!(replies.deliver(8, "late"), Err((8, "late")));
    /// assert!(replies.is_empty());
    /// ```
    pub fn claim(&self, key: K) -> Claim<'_, K, V, S, L> {
        let waiting = Claimed::register(self, &key);
        Claim {
            map: self,
            key,
            waiting,
        }
    }
}

/// What a claim future holds besides its map and key: its place among the
/// key's waiters, the outcome of its registration if that resolved it, and
/// whether it has handed the map a waker yet. Shared by [`Claim`] and
/// [`OwnedClaim`](crate::OwnedClaim).
pub(crate) struct Claimed<V> {
    waiter: Waiter,
    /// The outcome of the registration, if it resolved at once.
    early: Option<Result<V, WaitError>>,
    /// Whether the map holds a waker of a poll (not the registration's).
    armed: bool,
}

impl<V> Claimed<V> {
    /// Registers a claim of `key` (see [`AwaitMap::claim`]).
    #[inline]
    pub(crate) fn register<K, S, L>(map: &AwaitMap<K, V, S, L>, key: &K) -> Self
    where
        K: Eq + Hash + Clone,
        S: BuildHasher,
        L: ScopedRawMutex,
    {
        let mut claimed = Claimed {
            waiter: Waiter::new(),
            early: None,
            armed: false,
        };
        claimed.early = map.register_claim(&mut claimed.waiter, key);
        claimed
    }

    /// Polls the claim: `Ready` at once if it resolved when it registered.
    /// Its first poll after that hands the map its waker in one trip (it
    /// registered with none); anything else (its value came, it failed) is
    /// a `take`'s poll. Small enough to inline: the poll that receives the
    /// reply goes straight to the take's.
    #[inline(always)]
    pub(crate) fn poll<K, S, L>(
        &mut self,
        map: &AwaitMap<K, V, S, L>,
        key: &K,
        cx: &Context<'_>,
        what: &'static str,
    ) -> Poll<Result<V, WaitError>>
    where
        K: Eq + Hash + Clone,
        S: BuildHasher,
        L: ScopedRawMutex,
    {
        if !self.armed {
            return self.poll_first(map, key, cx, what);
        }
        map.poll_take(&mut self.waiter, key, cx, what)
    }

    /// The first poll: in the common case (the claim registered and waits,
    /// its reply not in yet), the waker handed to the map in one short trip;
    /// anything else out of line.
    #[inline(never)]
    fn poll_first<K, S, L>(
        &mut self,
        map: &AwaitMap<K, V, S, L>,
        key: &K,
        cx: &Context<'_>,
        what: &'static str,
    ) -> Poll<Result<V, WaitError>>
    where
        K: Eq + Hash + Clone,
        S: BuildHasher,
        L: ScopedRawMutex,
    {
        if self.early.is_none() && self.waiter.is_registered() {
            // Cloned before the lock: if the clone panics, nothing changed
            // (and the next poll tries again).
            let waker = cx.waker().clone();
            let waiter = &self.waiter;
            match map
                .state
                .with(|st| st.store_waker_fast::<true>(waiter, waker))
            {
                Ok(replaced) => {
                    self.armed = true;
                    drop(replaced);
                    return Poll::Pending;
                }
                Err(waker) => drop(waker),
            }
        }
        self.poll_first_else(map, key, cx, what)
    }

    /// The first poll of a claim that resolved when it registered, or whose
    /// waker the short trip could not store: the early outcome, or a
    /// `take`'s poll.
    #[cold]
    #[inline(never)]
    fn poll_first_else<K, S, L>(
        &mut self,
        map: &AwaitMap<K, V, S, L>,
        key: &K,
        cx: &Context<'_>,
        what: &'static str,
    ) -> Poll<Result<V, WaitError>>
    where
        K: Eq + Hash + Clone,
        S: BuildHasher,
        L: ScopedRawMutex,
    {
        self.armed = true;
        if let Some(early) = self.early.take() {
            return Poll::Ready(early);
        }
        map.poll_take(&mut self.waiter, key, cx, what)
    }

    /// Drops the claim: see [`AwaitMap::release_claim`].
    #[inline]
    pub(crate) fn release<K, S, L: ScopedRawMutex>(&mut self, map: &AwaitMap<K, V, S, L>) {
        map.release_claim(&mut self.waiter);
    }

    /// `Debug` output of the future that holds it.
    pub(crate) fn fmt_fields(&self, f: &mut fmt::DebugStruct<'_, '_>) {
        f.field("registered", &self.waiter.is_registered())
            .field("ready", &self.early.is_some());
    }
}

impl<K, V, S, L> AwaitMap<K, V, S, L>
where
    K: Eq + Hash,
    S: BuildHasher,
    L: ScopedRawMutex,
{
    /// Inserts a value only if a future waits for its key (a
    /// [`claim`](Self::claim), or any `get`, `take` or `get_or_promise`),
    /// waking it as [`insert`](Self::insert) does; otherwise hands
    /// `(key, value)` back, storing nothing. `Ok` holds the value it
    /// replaced, if the key had one.
    ///
    /// This is how an RPC reader hands in replies: a reply to a call that
    /// gave up (its claim was dropped) is refused instead of kept forever.
    /// A value a future waits for is let in even at the map's
    /// [limit](Self::with_limit).
    ///
    /// # Errors
    ///
    /// `Err((key, value))` when no future waits for the key.
    ///
    /// # Examples
    ///
    /// ```
    /// let map: awaitmap::AwaitMap<u32, u32> = awaitmap::AwaitMap::new();
    /// assert_eq!(map.deliver(1, 10), Err((1, 10))); // nobody waits
    /// let claim = map.claim(1);
    /// assert_eq!(map.deliver(1, 10), Ok(None));
    /// assert_eq!(futures::executor::block_on(claim), Ok(10));
    /// ```
    pub fn deliver(&self, key: K, value: V) -> Result<Option<V>, (K, V)> {
        let hash = self.hasher.hash_one(&key);
        let value = match self
            .state
            .with(|st| st.deliver_fast(hash, |k| *k == key, value))
        {
            Delivery::Stored(old, waker) => {
                // Woken before the key is dropped, as `insert` does.
                if let Some(w) = waker {
                    w.wake();
                }
                drop(key);
                return Ok(old);
            }
            Delivery::Refused(value) => return Err((key, value)),
            Delivery::General(value) => value,
        };
        self.deliver_general(hash, key, value)
    }

    #[inline(never)]
    fn deliver_general(&self, hash: u64, key: K, value: V) -> Result<Option<V>, (K, V)> {
        self.insert_guarded(key, value, |st, key, value, after| {
            st.insert_if(
                hash,
                key,
                value,
                |a, b| a == b,
                |e| e.is_some_and(Entry::awaited),
                after,
            )
        })
    }
}

impl<K, V, S, L: ScopedRawMutex> AwaitMap<K, V, S, L> {
    /// Drops a registered claim: it leaves the key's waiters, and a value
    /// delivered to it that nobody else waits for leaves with it.
    #[inline]
    pub(crate) fn release_claim(&self, w: &mut Waiter) {
        if w.is_registered() {
            self.release_registered(w);
        }
    }

    #[inline(never)]
    fn release_registered(&self, w: &mut Waiter) {
        let value = self.locked(|st, after| {
            let value = st.release(w, after);
            if value.is_some() {
                self.note_freed(after);
            }
            value
        });
        // Last, with the lock released and every wake-up issued.
        drop(value);
    }
}

/// The future returned by [`AwaitMap::claim`]: the key's next value, moved
/// out; registered from the start; releases the key when dropped.
///
/// `Unpin`.
///
/// # Panics
///
/// Polling it again after it returned `Ready` panics.
///
/// # Examples
///
/// ```
/// use awaitmap::{AwaitMap, Claim};
///
/// let map: AwaitMap<u32, String> = AwaitMap::new();
/// let claim: Claim<'_, u32, String> = map.claim(1);
/// assert_eq!(map.waiters(), 1); // registered before any poll
/// map.deliver(1, "x".into()).unwrap();
/// assert_eq!(futures::executor::block_on(claim).as_deref(), Ok("x"));
/// ```
#[must_use = "a claim receives nothing unless awaited; dropping it releases the key"]
pub struct Claim<'a, K, V, S = DefaultHashBuilder, L: ScopedRawMutex = DefaultLock> {
    map: &'a AwaitMap<K, V, S, L>,
    key: K,
    waiting: Claimed<V>,
}

impl<K, V, S, L: ScopedRawMutex> Unpin for Claim<'_, K, V, S, L> {}

impl<K, V, S, L> Future for Claim<'_, K, V, S, L>
where
    K: Eq + Hash + Clone,
    S: BuildHasher,
    L: ScopedRawMutex,
{
    type Output = Result<V, WaitError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.waiting.poll(this.map, &this.key, cx, "Claim")
    }
}

impl<K, V, S, L: ScopedRawMutex> Drop for Claim<'_, K, V, S, L> {
    fn drop(&mut self) {
        self.waiting.release(self.map);
    }
}

impl<K, V, S, L: ScopedRawMutex> fmt::Debug for Claim<'_, K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Claim");
        self.waiting.fmt_fields(&mut d);
        d.finish_non_exhaustive()
    }
}
