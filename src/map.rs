//! [`AwaitMap`] and its methods.

use core::fmt;
use core::hash::{BuildHasher, Hash};

use hashbrown::{DefaultHashBuilder, Equivalent};

use crate::after::After;
use crate::state::State;
#[cfg(feature = "spin")]
use crate::sync::SpinLock;
use crate::sync::{DefaultLock, Events, Lock, PRODUCER, caught, const_fn_unless_loom, resume};
use mutex::{ConstInit, ScopedRawMutex};

/// A map whose lookups can wait: [`get`](Self::get) and [`take`](Self::take)
/// return futures that resolve as soon as some producer
/// [`insert`](Self::insert)s the key, at once if it is already there.
///
/// Every operation takes `&self`; share the map by reference, in a `static`, or
/// in an [`Arc`](alloc::sync::Arc) (then [`get_owned`](Self::get_owned) and
/// [`take_owned`](Self::take_owned) give `'static` futures to spawn).
///
/// - [`get`](Self::get) resolves with a clone of the value and leaves it in
///   the map: every waiting `get` of a key is woken by one `insert`.
/// - [`take`](Self::take) moves the value out: one `insert` wakes one waiting
///   `take` (the earliest registered), and the value goes to exactly one of
///   them. This is the request/response pattern: await `take(&id)` while a
///   reader task inserts responses by id, in any order, even before the
///   request registered.
/// - [`cancel`](Self::cancel) fails the waiters of one key, now;
///   [`close`](Self::close) fails every waiter of an absent key, for good.
///
/// # Happens-before
///
/// Everything a producer did before `insert(k, v)` is visible to the consumer
/// whose future for `k` resolved with `v`: both sides pass through the map's
/// lock.
///
/// # Examples
///
/// ```
/// use awaitmap::AwaitMap;
/// use futures::executor::block_on;
///
/// let map = AwaitMap::new();
/// let answer = map.get(&"answer");
/// map.insert("answer", 42);
/// assert_eq!(block_on(answer), Ok(42));
/// assert_eq!(block_on(map.take(&"answer")), Ok(42));
/// assert!(map.is_empty());
/// ```
///
/// # Allocation
///
/// The consumer side and `insert` allocate in three places only, and only
/// when the map grows past its peak:
/// - the table, when a new key arrives (an [`insert`](Self::insert) of an
///   absent key, a `get`/`take` that registers on a key with no entry, or a
///   promise of one);
/// - the waiter storage, when more futures wait on a key that already has a
///   waiter than ever before (a key's first waiter lives in its entry and
///   needs no room of its own);
/// - the table of failed waiters, when `cancel` or an abandoned promise
///   fails a key's only waiter and more such waiters await their poll than
///   ever before.
///
/// Hits, `try_get`, `remove`, `close`, fulfilling a promise, dropping a
/// future and every wake-up never allocate; with `std`, each thread's first
/// blocking wait makes one waker, once. [`reserve`](Self::reserve) makes
/// room up front, so that a map in a `static` can be filled from an
/// interrupt handler without allocating, and
/// [`shrink_to_fit`](Self::shrink_to_fit) gives back what a burst left.
///
/// The producer side's map-wide waits go through `event-listener`, which
/// allocates: each condition's shared state once, on first use, and one
/// listener each time a producer actually has to wait (`insert_async` on a
/// full map, `closed`, `drained`, `Demand::next` with nothing queued). A
/// [`Demand`](crate::Demand) queues a copy of each newly wanted key.
///
/// # Implementation notes
///
/// One lock, `L` (by default a spin lock that yields the thread under `std`;
/// see the crate docs on locks), guards a hashbrown `HashTable` of entries.
/// Each entry stores its key's hash, computed before the lock is taken, so
/// the only user code that runs under the lock is `K: Eq` and `V: Clone`;
/// hashing, key clones, dropping keys and values, and every waker call
/// (clone, wake, drop) happen after it is released.
///
/// An entry holds its key, its value, and its first waiter: most keys have
/// exactly one (a response awaited by its request), whose waker shares the
/// value's space (a waiter waits only while there is no value). The second
/// and later waiters of a key live in a slab of nodes the map owns, linked
/// per key, in the order they registered. A future registers on its first
/// `Pending` poll and knows where it waits (its entry's hash, never-reused
/// id and bucket, and its slot); it leaves when it completes or is dropped.
/// Once the table and the slab have grown to the peak number of keys and
/// waiters, waiting allocates nothing. A waiter's waker is taken out under
/// the lock when it is due and woken after the lock is released; when more
/// are due than fit a batch of 16, the rest wait in an intrusive queue for
/// the next batch.
pub struct AwaitMap<K, V, S = DefaultHashBuilder, L = DefaultLock> {
    pub(crate) hasher: S,
    pub(crate) state: Lock<State<K, V>, L>,
    /// The most values `try_insert`/`insert_async` let in; `usize::MAX`
    /// when unlimited.
    pub(crate) limit: usize,
    pub(crate) events: Events,
}

#[cfg(feature = "spin")]
impl<K, V> AwaitMap<K, V, DefaultHashBuilder, SpinLock> {
    /// An empty map with the default hasher.
    ///
    /// The default hasher is seeded at run time, so `new` is not a `const fn`;
    /// for a `static`, use [`with_hasher`](Self::with_hasher) with a hasher
    /// that can be built in a constant.
    ///
    /// # Examples
    ///
    /// ```
    /// let map: awaitmap::AwaitMap<u64, String> = awaitmap::AwaitMap::new();
    /// assert!(map.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::with_hasher(DefaultHashBuilder::default())
    }

    /// An empty map with room for `capacity` keys before its table grows.
    ///
    /// # Examples
    ///
    /// ```
    /// let map: awaitmap::AwaitMap<u64, u64> = awaitmap::AwaitMap::with_capacity(1024);
    /// assert_eq!(map.len(), 0);
    /// ```
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, DefaultHashBuilder::default())
    }
}

/// A hasher that can be built in a constant: foldhash's fast hasher (the
/// same as [`DefaultHashBuilder`](crate::DefaultHashBuilder)) with a seed
/// fixed at compile time instead of drawn at run time. What
/// [`AwaitMap::const_new`] uses.
///
/// Every map and every run hashes a key the same way, so someone who
/// chooses the keys (an attacker sending request ids) can choose keys that
/// collide and make each lookup slow. Use it for keys your own code makes
/// (counters, pin numbers, ids you assign); for keys that come from outside,
/// build the map with a keyed hasher through
/// [`with_hasher_and_lock`](AwaitMap::with_hasher_and_lock).
pub type FixedHashBuilder = foldhash::fast::FixedState;

/// The seed of [`AwaitMap::const_new`]'s hasher.
const FIXED_SEED: u64 = 0x6177_6169_746d_6170;

/// A lock that can be built in a constant, as a `static` map needs:
/// any [`ScopedRawMutex`] that is also [`ConstInit`] (both of the crate's
/// locks are).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot guard a map built in a constant",
    label = "this map's lock",
    note = "a map built with `AwaitMap::const_new` needs a lock that implements `ConstInit`",
    note = "without feature `spin` there is no default lock (`DefaultLock` is `NoDefaultLock`): \
            name one, as in `AwaitMap<K, V, FixedHashBuilder, CsLock>`"
)]
pub trait ConstLock: ScopedRawMutex + ConstInit {}

impl<L: ScopedRawMutex + ConstInit> ConstLock for L {}

impl<K, V, L: ConstLock> AwaitMap<K, V, FixedHashBuilder, L> {
    const_fn_unless_loom! {
        /// An empty map built in a constant, for a `static`: hashing with
        /// [`FixedHashBuilder`] (read when that is not the right choice)
        /// and guarded by the lock `L` (the default one, `SpinLock`, unless
        /// the type names another, such as `CsLock`).
        ///
        /// # Examples
        ///
        /// ```
        /// use awaitmap::{AwaitMap, FixedHashBuilder};
        ///
        /// static REPLIES: AwaitMap<u32, u32, FixedHashBuilder> = AwaitMap::const_new();
        ///
        /// REPLIES.insert(7, 49);
        /// assert_eq!(REPLIES.try_get(&7), Some(49));
        /// ```
        ///
        /// With the critical-section lock, for a map that interrupt handlers
        /// use (feature `critical-section`):
        ///
        /// ```
        /// # #[cfg(feature = "critical-section")] {
        /// use awaitmap::{AwaitMap, CsLock, FixedHashBuilder};
        ///
        /// static PINS: AwaitMap<u8, bool, FixedHashBuilder, CsLock> = AwaitMap::const_new();
        ///
        /// PINS.insert(4, true);
        /// assert_eq!(PINS.try_get(&4), Some(true));
        /// # }
        /// ```
        pub fn const_new() -> Self {
            Self::with_hasher_and_lock(FixedHashBuilder::with_seed(FIXED_SEED), L::INIT)
        }
    }
}

// The constructors that do not name a lock build the default one; they exist
// with feature `spin` (without it, there is no default lock).
#[cfg(feature = "spin")]
impl<K, V, S> AwaitMap<K, V, S, SpinLock> {
    const_fn_unless_loom! {
        /// An empty map that hashes keys with `hasher`.
        ///
        /// This is a `const fn`: with a hasher that can be built in a constant,
        /// the map can live in a `static`.
        ///
        /// Keys are hashed with `hasher`; if an attacker chooses the keys, use a
        /// keyed hasher (the default one is fast but not HashDoS-resistant, and
        /// on `no_std` its seed is fixed).
        ///
        /// # Examples
        ///
        /// ```
        /// use awaitmap::AwaitMap;
        /// use core::hash::BuildHasherDefault;
        /// use std::collections::hash_map::DefaultHasher;
        ///
        /// static REPLIES: AwaitMap<u32, u32, BuildHasherDefault<DefaultHasher>> =
        ///     AwaitMap::with_hasher(BuildHasherDefault::new());
        ///
        /// REPLIES.insert(7, 49);
        /// assert_eq!(REPLIES.try_get(&7), Some(49));
        /// ```
        pub fn with_hasher(hasher: S) -> Self {
            Self::with_hasher_and_lock(hasher, SpinLock::new())
        }
    }

    /// An empty map with room for `capacity` keys, hashing with `hasher`.
    ///
    /// # Examples
    ///
    /// ```
    /// use awaitmap::{AwaitMap, DefaultHashBuilder};
    ///
    /// let map: AwaitMap<u8, u8> = AwaitMap::with_capacity_and_hasher(16, DefaultHashBuilder::default());
    /// assert!(map.is_empty());
    /// ```
    pub fn with_capacity_and_hasher(capacity: usize, hasher: S) -> Self {
        Self::with_capacity_hasher_and_lock(capacity, hasher, SpinLock::new())
    }
}

impl<K, V, S, L> AwaitMap<K, V, S, L> {
    const_fn_unless_loom! {
        /// An empty map that hashes keys with `hasher` and guards its state
        /// with `lock`.
        ///
        /// This is a `const fn`: with a hasher and a lock that can be built in
        /// a constant (both of the crate's locks can), the map can live in a
        /// `static`, with no lazy initialisation. The lock is any
        /// [`ScopedRawMutex`]: `SpinLock` (the default),
        /// `CsLock` for maps that interrupt handlers use, or
        /// a lock of your own.
        ///
        /// # Examples
        ///
        /// ```
        /// use awaitmap::{AwaitMap, SpinLock};
        /// use foldhash::fast::FixedState;
        ///
        /// static PINS: AwaitMap<u8, bool, FixedState, SpinLock> =
        ///     AwaitMap::with_hasher_and_lock(FixedState::with_seed(0x5eed), SpinLock::new());
        ///
        /// PINS.insert(4, true);
        /// assert_eq!(PINS.try_get(&4), Some(true));
        /// ```
        pub fn with_hasher_and_lock(hasher: S, lock: L) -> Self {
            AwaitMap {
                hasher,
                state: Lock::new(lock, State::new()),
                limit: usize::MAX,
                events: Events::new(),
            }
        }
    }

    /// [`with_hasher_and_lock`](Self::with_hasher_and_lock) with room for
    /// `capacity` keys before the table grows.
    ///
    /// # Examples
    ///
    /// ```
    /// use awaitmap::{AwaitMap, DefaultHashBuilder, SpinLock};
    ///
    /// let map: AwaitMap<u8, u8, DefaultHashBuilder, SpinLock> =
    ///     AwaitMap::with_capacity_hasher_and_lock(16, DefaultHashBuilder::default(), SpinLock::new());
    /// assert!(map.is_empty());
    /// ```
    pub fn with_capacity_hasher_and_lock(capacity: usize, hasher: S, lock: L) -> Self {
        AwaitMap {
            hasher,
            state: Lock::new(lock, State::with_capacity(capacity)),
            limit: usize::MAX,
            events: Events::new(),
        }
    }
}

impl<K, V, S, L> AwaitMap<K, V, S, L> {
    /// Whether a limit is set: never in a build without the producer side,
    /// where nothing can set one (so the code serving it is not linked).
    #[inline]
    pub(crate) fn limited(&self) -> bool {
        PRODUCER && self.limit != usize::MAX
    }
}

impl<K, V, S, L: ScopedRawMutex> AwaitMap<K, V, S, L> {
    /// Reserves room for `keys` more keys (with a value or with waiting
    /// futures) and `waiters` more waiting futures than the map holds now,
    /// so that none of them allocates.
    ///
    /// After it, [`insert`](Self::insert) of up to `keys` new keys never
    /// allocates, which is what an interrupt handler on a microcontroller
    /// needs; see *Allocation* in the type docs for the rest.
    ///
    /// # Panics
    ///
    /// If the new capacity overflows `usize`, or the allocator fails (as
    /// `Vec::reserve` does).
    ///
    /// # Examples
    ///
    /// ```
    /// let map: awaitmap::AwaitMap<u32, u32> = awaitmap::AwaitMap::new();
    /// map.reserve(64, 16); // 64 keys, 16 waiting futures
    /// for k in 0..64 {
    ///     map.insert(k, k); // no allocation
    /// }
    /// ```
    pub fn reserve(&self, keys: usize, waiters: usize) {
        self.state.with(|st| st.reserve(keys, waiters));
    }

    /// Gives back the memory the map holds beyond what it uses now: after a
    /// burst of keys or waiters, the table and the waiter storage keep their
    /// peak size until this is called. The next keys and waiters past the
    /// new size allocate again.
    ///
    /// # Examples
    ///
    /// ```
    /// let map: awaitmap::AwaitMap<u32, u32> = awaitmap::AwaitMap::new();
    /// for k in 0..10_000 {
    ///     map.insert(k, k);
    /// }
    /// for k in 0..10_000 {
    ///     map.remove(&k);
    /// }
    /// map.shrink_to_fit(); // the table's memory goes back to the allocator
    /// assert!(map.is_empty());
    /// ```
    pub fn shrink_to_fit(&self) {
        self.state.with(State::shrink_to_fit);
    }

    /// The map's hasher.
    ///
    /// # Examples
    ///
    /// ```
    /// use core::hash::BuildHasher;
    /// let map: awaitmap::AwaitMap<u8, u8> = awaitmap::AwaitMap::new();
    /// let _h = map.hasher().hash_one(1u8);
    /// ```
    pub fn hasher(&self) -> &S {
        &self.hasher
    }

    /// The number of stored values (waiting futures are not counted).
    ///
    /// # Examples
    ///
    /// ```
    /// let map = awaitmap::AwaitMap::new();
    /// map.insert(1, "one");
    /// let _waiting = map.get(&2);
    /// assert_eq!(map.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.state.with(|st| st.len())
    }

    /// Whether the map stores no value.
    ///
    /// # Examples
    ///
    /// ```
    /// let map: awaitmap::AwaitMap<u8, u8> = awaitmap::AwaitMap::new();
    /// assert!(map.is_empty());
    /// map.insert(1, 1);
    /// assert!(!map.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of futures registered as waiting, over all keys.
    ///
    /// A future registers when a poll returns `Pending` and deregisters when
    /// it completes or is dropped. While no future has been woken and not yet
    /// polled, this is exactly the number of futures that are waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::FutureExt;
    ///
    /// let map: awaitmap::AwaitMap<u8, u8> = awaitmap::AwaitMap::new();
    /// let mut fut = map.get(&1);
    /// assert_eq!(map.waiters(), 0); // lazy: nothing until polled
    /// assert!((&mut fut).now_or_never().is_none());
    /// assert_eq!(map.waiters(), 1);
    /// drop(fut);
    /// assert_eq!(map.waiters(), 0);
    /// ```
    pub fn waiters(&self) -> usize {
        self.state.with(|st| st.live())
    }

    /// Checks the map's internal invariants and panics with the first one
    /// that does not hold: a testing aid (the model-based and fuzz tests call
    /// it after every step). It takes the lock, walks every entry and waiter
    /// node, and calls no user code. Code that never calls it pays nothing.
    ///
    /// # Panics
    ///
    /// If an invariant is broken (a bug in this crate).
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        if let Err(broken) = self.state.with(|st| st.check_invariants()) {
            panic!("awaitmap: internal invariant broken: {broken}");
        }
    }

    /// Closes the map, for good; calling it again does nothing.
    ///
    /// Every waiting future whose key has no value for it resolves
    /// `Err(WaitError::Closed)`, and so does every later `get` or `take` of an
    /// absent key, on its first poll. Futures of present keys still resolve
    /// `Ok`; among the `take`s waiting on a key, that means the one already
    /// woken for its value, while the others (the value is not theirs) get
    /// `Err(Closed)`. [`insert`](Self::insert) keeps storing values after `close`, so
    /// nothing handed to the map is lost.
    ///
    /// # Examples
    ///
    /// ```
    /// use awaitmap::{AwaitMap, WaitError};
    /// use futures::executor::block_on;
    ///
    /// let map = AwaitMap::new();
    /// map.insert("here", 1);
    /// map.close();
    /// assert_eq!(block_on(map.get(&"here")), Ok(1));
    /// assert_eq!(block_on(map.get(&"absent")), Err(WaitError::Closed));
    /// ```
    pub fn close(&self) {
        let mut after = After::new();
        self.state.with(|st| {
            st.close();
            after.collect(st);
        });
        let mut panic = self.finish_caught(&mut after);
        // Producers: `closed()` resolves, and those waiting for room store
        // their values regardless of the limit.
        self.events.closed(&mut panic);
        resume(panic);
    }

    /// Whether [`close`](Self::close) was called.
    ///
    /// # Examples
    ///
    /// ```
    /// let map: awaitmap::AwaitMap<u8, u8> = awaitmap::AwaitMap::new();
    /// assert!(!map.is_closed());
    /// map.close();
    /// assert!(map.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.state.with(|st| st.is_closed())
    }
}

impl<K, V, S, L: ScopedRawMutex> AwaitMap<K, V, S, L>
where
    K: Eq + Hash,
    S: BuildHasher,
{
    /// Stores `value` under `key`, then wakes every waiting
    /// [`get`](Self::get) of the key and one waiting [`take`](Self::take)
    /// (the earliest registered). Returns the value it replaced.
    ///
    /// The wakers run after the map's lock is released. After
    /// [`close`](Self::close), `insert` still stores the value.
    ///
    /// # Panics
    ///
    /// If a waker panics, the panic propagates out of `insert` once the
    /// other due wakers have run (with `std`; without it, at once); the value
    /// is stored all the same.
    ///
    /// # Examples
    ///
    /// ```
    /// let map = awaitmap::AwaitMap::new();
    /// assert_eq!(map.insert(1, "a"), None);
    /// assert_eq!(map.insert(1, "b"), Some("a"));
    /// ```
    pub fn insert(&self, key: K, value: V) -> Option<V> {
        let hash = self.hasher.hash_one(&key);
        let value = match self
            .state
            .with(|st| st.insert_fast(hash, |k| *k == key, value))
        {
            Ok((old, waker)) => {
                // Woken before the key is dropped: a panicking `K::drop`
                // cannot cost the waiter its wake-up.
                if let Some(w) = waker {
                    w.wake();
                }
                drop(key);
                return old;
            }
            Err(value) => value,
        };
        self.insert_general(hash, key, value)
    }

    /// `insert` into a key with other waiters than its inline one, or with
    /// no entry: out of line, so the common case stays small.
    #[inline(never)]
    fn insert_general(&self, hash: u64, key: K, value: V) -> Option<V> {
        self.insert_guarded(key, value, |st, key, value, after| {
            st.insert_if(hash, key, value, |a, b| a == b, |_| true, after)
        })
        .ok()
        .expect("a plain insert always stores")
    }

    /// One trip of an insert that `store` may refuse (`State::insert_if`
    /// and its kin: `None` keeps key and value in their options). Stored:
    /// the value it replaced, and the passed key, if the entry kept its own,
    /// is dropped with the lock released. Refused: both handed back.
    pub(crate) fn insert_guarded(
        &self,
        key: K,
        value: V,
        store: impl FnOnce(
            &mut State<K, V>,
            &mut Option<K>,
            &mut Option<V>,
            &mut After<K>,
        ) -> Option<Option<V>>,
    ) -> Result<Option<V>, (K, V)> {
        let mut key = Some(key);
        let mut value = Some(value);
        let stored = self.locked(|st, after| {
            let old = store(st, &mut key, &mut value, after);
            if old.is_some() {
                // The key the entry already had stays; this one is dropped.
                after.drop_key(key.take());
            }
            old
        });
        match stored {
            Some(old) => Ok(old),
            None => Err((
                key.expect("refused keeps the key"),
                value.expect("refused keeps the value"),
            )),
        }
    }

    /// A clone of the key's value, if it has one; never waits.
    ///
    /// # Examples
    ///
    /// ```
    /// let map = awaitmap::AwaitMap::new();
    /// map.insert(1, 10);
    /// assert_eq!(map.try_get(&1), Some(10));
    /// assert_eq!(map.try_get(&2), None);
    /// ```
    #[inline]
    pub fn try_get<Q>(&self, key: &Q) -> Option<V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
        V: Clone,
    {
        let hash = self.hasher.hash_one(key);
        // The uncontended case in line; a busy lock waits out of line, so
        // the fast path needs no registers saved for the wait.
        match self
            .state
            .try_with(|st| st.get_cloned(hash, |k| key.equivalent(k), V::clone))
        {
            Some(found) => found,
            None => self.try_get_contended(hash, key),
        }
    }

    #[cold]
    #[inline(never)]
    fn try_get_contended<Q>(&self, hash: u64, key: &Q) -> Option<V>
    where
        Q: ?Sized + Equivalent<K>,
        V: Clone,
    {
        self.state
            .with(|st| st.get_cloned(hash, |k| key.equivalent(k), V::clone))
    }

    /// Whether the key has a value.
    ///
    /// # Examples
    ///
    /// ```
    /// let map = awaitmap::AwaitMap::new();
    /// map.insert("k", ());
    /// assert!(map.contains_key("k"));
    /// assert!(!map.contains_key("other"));
    /// ```
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let hash = self.hasher.hash_one(key);
        self.state
            .with(|st| st.contains(hash, |k| key.equivalent(k)))
    }

    /// Takes the key's value out of the map, if it has one; never waits.
    /// Futures waiting on the key are not affected and keep waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// let map = awaitmap::AwaitMap::new();
    /// map.insert(1, "a");
    /// assert_eq!(map.remove(&1), Some("a"));
    /// assert_eq!(map.remove(&1), None);
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let hash = self.hasher.hash_one(key);
        let (removed, gone) = self.state.with(|st| st.remove(hash, |k| key.equivalent(k)));
        if removed.is_some() && self.limited() {
            // Told before the key is dropped: a panicking `K::drop` cannot
            // keep a producer from the room.
            let mut panic = None;
            caught(|| self.events.room(1), &mut panic);
            caught(|| drop(gone), &mut panic);
            resume(panic);
        } else {
            drop(gone);
        }
        removed
    }

    /// Fails the futures waiting on `key` right now with
    /// `Err(WaitError::Cancelled)` and returns how many.
    ///
    /// Futures that would resolve `Ok` if polled now (the key has a value for
    /// them) are left alone. Not sticky: a `get` or `take` of the key made
    /// afterwards waits as usual. For a lasting per-key failure, store a
    /// `Result` as the value.
    ///
    /// # Examples
    ///
    /// ```
    /// use awaitmap::{AwaitMap, WaitError};
    /// use futures::{FutureExt, executor::block_on};
    ///
    /// let map: AwaitMap<u8, u8> = AwaitMap::new();
    /// let mut waiting = map.get(&1);
    /// assert!((&mut waiting).now_or_never().is_none());
    /// assert_eq!(map.cancel(&1), 1);
    /// assert_eq!(block_on(waiting), Err(WaitError::Cancelled));
    /// ```
    pub fn cancel<Q>(&self, key: &Q) -> usize
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let hash = self.hasher.hash_one(key);
        self.locked(|st, after| st.cancel(hash, |k| key.equivalent(k), after))
    }
}

/// How many futures wait on one key: an item of [`AwaitMap::awaited`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Waiting {
    /// Waiting `get`s (and `get_or_promise`s that wait for another
    /// caller's promise), owned and blocking forms included.
    pub gets: usize,
    /// Waiting `take`s, owned and blocking forms included.
    pub takes: usize,
}

// Whole-map operations. Each takes the lock once for the whole map, so it
// holds it for time proportional to the number of keys; user code that
// runs under the lock is named in each method's docs.
impl<K, V, S, L: ScopedRawMutex> AwaitMap<K, V, S, L> {
    /// Removes every value, as [`remove`](Self::remove) of each key would:
    /// futures waiting on keys keep waiting, and a limited map lets as many
    /// waiting producers in as values left. The values (and the keys of
    /// entries left empty) are dropped after the lock is released.
    ///
    /// Runs no user code under the lock. Allocates a buffer for what it
    /// drops.
    ///
    /// # Examples
    ///
    /// ```
    /// let map = awaitmap::AwaitMap::new();
    /// map.insert(1, "a");
    /// map.insert(2, "b");
    /// map.clear();
    /// assert!(map.is_empty());
    /// ```
    pub fn clear(&self) {
        self.retain(|_, _| false);
    }

    /// Keeps only the values for which `keep` returns `true`; the others
    /// are removed as [`remove`](Self::remove) would (futures waiting on
    /// those keys keep waiting). The removed values (and the keys of entries
    /// left empty) are dropped after the lock is released, and a limited map
    /// lets as many waiting producers in as values left.
    ///
    /// # What runs under the lock
    ///
    /// `keep`, once for each stored value, with the map locked: keep it
    /// short, and do not call into this map from it (with `SpinLock` that
    /// spins forever in release builds). If it panics, the values it had
    /// rejected so far are removed and the map stays usable.
    ///
    /// # Examples
    ///
    /// ```
    /// let map = awaitmap::AwaitMap::new();
    /// for k in 0..6 {
    ///     map.insert(k, k * 10);
    /// }
    /// map.retain(|k, _| k % 2 == 0);
    /// assert_eq!(map.len(), 3);
    /// assert_eq!(map.try_get(&3), None);
    /// ```
    pub fn retain(&self, keep: impl FnMut(&K, &mut V) -> bool) {
        let mut values = alloc::vec::Vec::new();
        let mut keys = alloc::vec::Vec::new();
        let mut panic = None;
        caught(
            || {
                self.state
                    .with(|st| st.retain(keep, &mut values, &mut keys))
            },
            &mut panic,
        );
        if !values.is_empty() && self.limited() {
            caught(|| self.events.room(values.len()), &mut panic);
        }
        // Last: a destructor that panics can no longer cost anyone a wake-up.
        caught(|| drop(values), &mut panic);
        caught(|| drop(keys), &mut panic);
        resume(panic);
    }

    /// A snapshot of the keys that have a value, in no particular order.
    ///
    /// # What runs under the lock
    ///
    /// `K::clone`, once for each stored value (the snapshot is taken in one
    /// trip through the lock, so it is consistent): do not call into this map
    /// from it. Allocates the vector.
    ///
    /// # Examples
    ///
    /// ```
    /// let map = awaitmap::AwaitMap::new();
    /// map.insert("b", 2);
    /// map.insert("a", 1);
    /// let mut keys = map.keys();
    /// keys.sort();
    /// assert_eq!(keys, ["a", "b"]);
    /// ```
    pub fn keys(&self) -> alloc::vec::Vec<K>
    where
        K: Clone,
    {
        self.snapshot(|k, _| k.clone())
    }

    /// A snapshot of the stored values, in no particular order.
    ///
    /// # What runs under the lock
    ///
    /// `V::clone`, once for each stored value: do not call into this map
    /// from it. Allocates the vector.
    ///
    /// # Examples
    ///
    /// ```
    /// let map = awaitmap::AwaitMap::new();
    /// map.insert(1, "one");
    /// assert_eq!(map.values(), ["one"]);
    /// ```
    pub fn values(&self) -> alloc::vec::Vec<V>
    where
        V: Clone,
    {
        self.snapshot(|_, v| v.clone())
    }

    /// A snapshot of the stored entries, `(key, value)`, in no particular
    /// order.
    ///
    /// # What runs under the lock
    ///
    /// `K::clone` and `V::clone`, once for each stored value: do not call
    /// into this map from them. Allocates the vector.
    ///
    /// # Examples
    ///
    /// ```
    /// let map = awaitmap::AwaitMap::new();
    /// map.insert(1, "one");
    /// assert_eq!(map.entries(), [(1, "one")]);
    /// ```
    pub fn entries(&self) -> alloc::vec::Vec<(K, V)>
    where
        K: Clone,
        V: Clone,
    {
        self.snapshot(|k, v| (k.clone(), v.clone()))
    }

    /// `f` of each stored key and value, in one trip through the lock.
    fn snapshot<T>(&self, mut f: impl FnMut(&K, &V) -> T) -> alloc::vec::Vec<T> {
        let mut out = alloc::vec::Vec::new();
        self.state
            .with(|st| st.for_each_value(|k, v| out.push(f(k, v))));
        out
    }

    /// A snapshot of the keys that futures wait on, with how many `get`s
    /// and `take`s wait on each, in no particular order: what a hung task
    /// is waiting for. Futures that a [`cancel`](Self::cancel) or an
    /// abandoned promise failed are not counted; a future woken (by an
    /// `insert`, or by [`close`](Self::close)) and not polled yet still is.
    ///
    /// # What runs under the lock
    ///
    /// `K::clone`, once for each awaited key: do not call into this map
    /// from it. Allocates the vector.
    ///
    /// # Examples
    ///
    /// ```
    /// use awaitmap::{AwaitMap, Waiting};
    /// use futures::FutureExt;
    ///
    /// let map: AwaitMap<&str, u32> = AwaitMap::new();
    /// let mut reply = map.take(&"reply-7");
    /// assert!((&mut reply).now_or_never().is_none());
    /// assert_eq!(map.awaited(), [("reply-7", Waiting { gets: 0, takes: 1 })]);
    /// ```
    pub fn awaited(&self) -> alloc::vec::Vec<(K, Waiting)>
    where
        K: Clone,
    {
        let mut out = alloc::vec::Vec::new();
        self.state.with(|st| {
            st.for_each_awaited(|k, gets, takes| out.push((k.clone(), Waiting { gets, takes })));
        });
        out
    }
}

// A panic in user code (`Eq`, `Clone`, a waker) leaves the map consistent
// (see "When user code panics" in the crate docs), so the map can be
// used after a caught panic, as a poisoning std `Mutex` can.
impl<K, V, S, L> core::panic::UnwindSafe for AwaitMap<K, V, S, L> {}
impl<K, V, S, L> core::panic::RefUnwindSafe for AwaitMap<K, V, S, L> {}

impl<K, V, S: Default, L: ConstInit> Default for AwaitMap<K, V, S, L> {
    /// An empty map with the hasher's default.
    fn default() -> Self {
        Self::with_hasher_and_lock(S::default(), L::INIT)
    }
}

impl<K, V, S, L: ScopedRawMutex> fmt::Debug for AwaitMap<K, V, S, L> {
    /// Prints the counts, never the keys or values, and never waits for the
    /// lock: `AwaitMap { <locked> }` if it is busy.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = self
            .state
            .try_with(|st| (st.len(), st.live(), st.is_closed()));
        match counts {
            Some((len, waiters, closed)) => f
                .debug_struct("AwaitMap")
                .field("len", &len)
                .field("waiters", &waiters)
                .field("closed", &closed)
                .finish(),
            None => f.write_str("AwaitMap { <locked> }"),
        }
    }
}

impl<K, V, S, L: ScopedRawMutex> Extend<(K, V)> for AwaitMap<K, V, S, L>
where
    K: Eq + Hash,
    S: BuildHasher,
{
    /// Inserts each pair, waking waiters as [`insert`](Self::insert) does.
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K, V, S, L: ScopedRawMutex + ConstInit> FromIterator<(K, V)> for AwaitMap<K, V, S, L>
where
    K: Eq + Hash,
    S: BuildHasher + Default,
{
    /// A map holding the pairs; a later pair replaces an earlier one with an
    /// equal key.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let map = Self::with_capacity_hasher_and_lock(iter.size_hint().0, S::default(), L::INIT);
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}
