//! The life of a waiting future, from its first poll to its last: one
//! machine shared by `get`, `take` and `get_or_promise`, which differ only
//! in their [`Mode`].
//!
//! 1. **First poll.** A `get` first looks for the value ([`State::look`],
//!    the hot path: one lock, one probe, one clone, in line; everything else
//!    is out of line). A `take` expects to wait (a response awaited before
//!    it arrives), so it clones its waker and makes an owned key before it
//!    takes the lock, and registers in that one trip. A `get` whose look
//!    found no value clones its waker with the lock released, then registers
//!    in a second trip: on the entry its look saw (found again by its id, no
//!    key comparison) or, when the key had no entry, on a new one made with
//!    an owned copy of its key.
//! 2. **Registered.** The future's waiter is its entry's inline slot or a
//!    node in the slab, and the future knows where: a [`Waiter`], the entry's
//!    hash, id and bucket plus the slot.
//! 3. **Woken and polled again**: a woken `get` whose value is there takes
//!    it in one trip ([`State::resolve_get`]), and so does the inline `take`
//!    of an RPC response ([`State::take_inline`]). Anything else goes through
//!    the one general path of every mode ([`AwaitMap::poll_general`],
//!    [`State::repoll`]): it resolves if its key has a value for it (every
//!    `get`; for `take`s, the one holding the hand-off, or any take while
//!    nobody holds it), if the map is closed, or if it was failed (`cancel`,
//!    an abandoned promise). Otherwise it stores its newest waker and waits
//!    on.
//! 4. **Dropped while registered** ([`State::deregister`]): it leaves its
//!    key's waiters; a `take` holding the hand-off passes it to the next
//!    waiting take if the value is still there, so the value is never lost.
//!
//! `get_or_promise` is the third mode: it resolves with a clone of the value
//! like a `get`, or, when nobody produces the key, with the promise to
//! produce it; a wait failed by an abandoned promise starts over.
//!
//! User code (waker clones, key copies) runs between trips through the
//! lock, never under it. A poll that panics there leaves no waiter behind
//! that could hold up the others: see [`AwaitMap::poll_slow`].

use core::hash::{BuildHasher, Hash};
use core::task::{Context, Poll, Waker};

use alloc::borrow::ToOwned;
use hashbrown::Equivalent;
use mutex::ScopedRawMutex;

use crate::after::After;
use crate::sync::{PRODUCER, caught, resume};
use hashbrown::hash_table::Entry as TableEntry;

use crate::state::{
    DEMAND_BITS, Entry, Failure, HANDOFF, ID_SHIFT, Inline, NIL, Slot, State, entry_hash,
    inline_of, leave, nudge, register, renew_if_worn, settle, store_inline_waker, store_waker,
};
use crate::{AwaitMap, WaitError};

/// The slot of a waiter kept in its entry (any other is a slab node).
pub(crate) const INLINE: u32 = u32::MAX - 2;
/// Not registered (yet, or any more: a poll that panicked starts over).
const FRESH: u32 = u32::MAX;
/// Returned `Ready`.
const DONE: u32 = u32::MAX - 1;

/// Which of a key's lists a waiter is in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Get,
    Take,
}

/// How a future reads the key's value: the three modes of the machine.
pub(crate) enum Mode<V> {
    /// `get`: a clone; the value stays in the map.
    Get(fn(&V) -> V),
    /// `take`: the value moves out, to one take.
    Take,
    /// `get_or_promise`: a clone, or the promise to produce the key when
    /// nobody does.
    GetOrPromise(fn(&V) -> V),
}

impl<V> Mode<V> {
    #[inline]
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Mode::Take => Kind::Take,
            Mode::Get(_) | Mode::GetOrPromise(_) => Kind::Get,
        }
    }
}

/// Where an entry is, found again without user code: by its bucket if it
/// is still there, else by its stored hash and never-reused id. Held by a
/// registered future and by a promise. Packed to 4-byte alignment, so a
/// [`Waiter`] (this and a slot) takes 24 bytes, not 32.
#[derive(Clone, Copy, Debug)]
#[repr(C, packed(4))]
pub(crate) struct EntryRef {
    hash: u64,
    id: u64,
    bucket: u32,
}

impl EntryRef {
    #[inline]
    pub(crate) fn new(hash: u64, id: u64, bucket: usize) -> Self {
        EntryRef {
            hash,
            id,
            // A hint only: a table that large is found again by hash and id.
            bucket: bucket as u32,
        }
    }

    #[inline]
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    #[inline]
    pub(crate) fn bucket(&self) -> usize {
        self.bucket as usize
    }

    #[inline]
    pub(crate) fn set_bucket(&mut self, bucket: usize) {
        self.bucket = bucket as u32;
    }
}

/// A waiting future's place in the map: its entry and its slot there.
#[derive(Debug)]
pub(crate) struct Waiter {
    /// The key's hash once polled; the entry once registered.
    entry: EntryRef,
    /// `FRESH`, `DONE`, `INLINE` or a slab node.
    slot: u32,
}

impl Waiter {
    pub(crate) const fn new() -> Self {
        Waiter {
            // All ones next to `FRESH`: one store makes both.
            entry: EntryRef {
                hash: 0,
                id: 0,
                bucket: u32::MAX,
            },
            slot: FRESH,
        }
    }

    /// Not registered any more: polled again, it starts over.
    #[inline]
    fn start_over(&mut self) {
        if self.is_registered() {
            self.slot = FRESH;
        }
    }

    #[inline]
    pub(crate) fn is_fresh(&self) -> bool {
        self.slot == FRESH
    }

    /// The entry a `get_or_promise` was promised.
    #[inline]
    pub(crate) fn entry(&self) -> EntryRef {
        self.entry
    }

    #[inline]
    pub(crate) fn is_registered(&self) -> bool {
        self.slot < DONE
    }

    #[inline]
    fn registered(&mut self, entry: EntryRef, slot: u32) {
        self.entry = entry;
        self.slot = slot;
    }
}

/// What a future resolves with. Small, so it comes back in registers.
pub(crate) enum Outcome<V> {
    Value(V),
    /// `get_or_promise`: the caller is now the key's producer, of the entry
    /// its [`Waiter`] names.
    Promise,
    Failed(WaitError),
}

/// What a poll has to make outside the lock before its next trip.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Needs {
    waker: bool,
    key: bool,
}

impl Needs {
    const NOTHING: Needs = Needs {
        waker: false,
        key: false,
    };
    const WAKER: Needs = Needs {
        waker: true,
        key: false,
    };
    const WAKER_AND_KEY: Needs = Needs {
        waker: true,
        key: true,
    };
    const KEY: Needs = Needs {
        waker: false,
        key: true,
    };
}

/// What a poll made outside the lock for its next trip: a clone of its
/// waker, an owned copy of its key. What the trip does not use is dropped
/// after the lock is released.
pub(crate) struct Supplies<K> {
    waker: Option<Waker>,
    key: Option<K>,
}

impl<K> Supplies<K> {
    const NONE: Self = Supplies {
        waker: None,
        key: None,
    };
}

/// The result of one trip through the lock.
pub(crate) enum Step<V> {
    Ready(Outcome<V>),
    Pending,
    /// Pending, having created the key's entry while a producer watches the
    /// demand: the key is announced, with a copy made outside the lock.
    Announce,
    /// Make these outside the lock, then poll again.
    Make(Needs),
    /// The promise this future waited for was abandoned: it starts over.
    Restart,
}

/// What a `get`'s first look saw when the key had no value for it: the id
/// of the key's entry (ids stay below 2^56), or one of these.
pub(crate) struct Miss;

impl Miss {
    /// No entry: the key has no value, no waiter and no promise.
    pub(crate) const ABSENT: u64 = u64::MAX;
    /// No entry, and the map is closed.
    pub(crate) const CLOSED: u64 = u64::MAX - 1;
    /// The lock was busy: nothing was looked at.
    pub(crate) const BUSY: u64 = u64::MAX - 2;
}

/// How a `get`'s registration on the entry its look found went.
pub(crate) enum Registration<V> {
    Waiting,
    /// The value came between the look and the registration: a clone, and
    /// the waker to drop with the lock released.
    Came(V, Waker),
    /// The entry went, or the map closed: the general path takes over.
    Elsewhere(Waker),
}

// The machine under the lock.
mod machine;

// ===== impl AwaitMap: a poll, with the lock released between trips =====

impl<K, V, S, L> AwaitMap<K, V, S, L>
where
    K: Eq + Hash,
    S: BuildHasher,
    L: ScopedRawMutex,
{
    /// Polls a waiting future further than its first trip: a loop of trips
    /// through the lock, each with what the last one asked for (a waker
    /// clone, an owned key) made outside it.
    ///
    /// A poll that panics in user code after its future registered leaves
    /// nothing behind that could hold up other futures: a waker whose clone
    /// panics, or a key whose copy for `demand()` panics, deregisters the
    /// future (it starts over if polled again), and a `take` that moved its
    /// value out puts it back (see [`finish_ready`](Self::finish_ready)).
    #[inline(never)]
    pub(crate) fn poll_slow<Q>(
        &self,
        mode: Mode<V>,
        w: &mut Waiter,
        key: &Q,
        cx: &Context<'_>,
        mut needs: Needs,
        mut supplies: Supplies<K>,
    ) -> Poll<Outcome<V>>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        loop {
            if needs.waker && supplies.waker.is_none() {
                let waker = self.clone_waker(mode.kind(), w, cx);
                if needs == Needs::WAKER
                    && w.is_registered()
                    && !matches!(mode, Mode::GetOrPromise(_))
                {
                    match self.state.with(|st| st.store_waker_fast::<false>(w, waker)) {
                        Ok(old) => {
                            drop(old);
                            return Poll::Pending;
                        }
                        Err(waker) => supplies.waker = Some(waker),
                    }
                } else {
                    supplies.waker = Some(waker);
                }
            }
            if needs.key && supplies.key.is_none() {
                // Only a future that is not registered needs a key.
                supplies.key = Some(key.to_owned().into());
            }
            match self.poll_trip(&mode, w, key, cx, &mut supplies) {
                Trip::Done(polled) => return polled,
                Trip::Make(more) => needs = more,
            }
        }
    }

    /// One trip of a poll through the lock, and what follows it with the
    /// lock released: the one copy of the machine that every future's poll
    /// goes through. `Trip::Make` asks for another trip.
    #[inline(never)]
    fn poll_trip<Q>(
        &self,
        mode: &Mode<V>,
        w: &mut Waiter,
        key: &Q,
        cx: &Context<'_>,
        supplies: &mut Supplies<K>,
    ) -> Trip<V>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        let mut after = After::new();
        let step = self.state.with(|st| {
            let step = if w.is_fresh() {
                st.first_poll(mode, w, |k| key.equivalent(k), supplies, &mut after)
            } else {
                st.repoll(mode, w, cx.waker(), supplies, &mut after)
            };
            after.collect(st);
            step
        });
        match step {
            Step::Ready(outcome) => {
                after.drop_spare_waker(supplies.waker.take());
                after.drop_spare_key(supplies.key.take());
                Trip::Done(self.finish_ready(mode, w, key, outcome, &mut after))
            }
            Step::Pending => {
                after.drop_spare_waker(supplies.waker.take());
                after.drop_spare_key(supplies.key.take());
                self.finish(&mut after);
                Trip::Done(Poll::Pending)
            }
            Step::Announce => {
                self.finish(&mut after);
                self.announce_for(mode.kind(), w, key);
                Trip::Done(Poll::Pending)
            }
            Step::Make(needs) => {
                self.finish(&mut after);
                Trip::Make(needs)
            }
            Step::Restart => {
                self.finish(&mut after);
                Trip::Make(Needs::NOTHING)
            }
        }
    }

    /// Finishes a poll that resolved: what the trip left to do runs before
    /// the outcome is returned. If any of it panics (a waker, a key's or a
    /// waker's destructor), the poll cannot return its outcome: a value a
    /// `take` moved out goes back into the map, so nothing is lost, and the
    /// future starts over if it is polled again.
    #[inline(always)]
    fn finish_ready<Q>(
        &self,
        mode: &Mode<V>,
        w: &mut Waiter,
        key: &Q,
        outcome: Outcome<V>,
        after: &mut After<K>,
    ) -> Poll<Outcome<V>>
    where
        Q: ?Sized + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        if let (Mode::Take, Outcome::Value(_)) = (mode, &outcome) {
            self.note_freed(after);
        }
        if after.is_quiet() {
            return Poll::Ready(outcome);
        }
        match self.finish_caught(after) {
            None => Poll::Ready(outcome),
            Some(panic) => {
                w.slot = FRESH;
                match outcome {
                    Outcome::Value(v) if matches!(mode, Mode::Take) => {
                        self.put_back(w.entry.hash, key, v);
                    }
                    // Dropped on the way out: abandoned, not lost.
                    Outcome::Promise => drop(crate::promise::Promise::from_ref(self, w.entry)),
                    _ => {}
                }
                resume(Some(panic));
                unreachable!("a panic was resumed")
            }
        }
    }

    /// Puts a value that a `take` moved out back under its key, as if the
    /// take had not happened: for a poll that panicked before it could
    /// return it. If another value arrived for the key meanwhile, that one
    /// stays and this one is dropped.
    #[cold]
    fn put_back<Q>(&self, hash: u64, key: &Q, value: V)
    where
        Q: ?Sized + ToOwned,
        Q::Owned: Into<K>,
    {
        let mut owned: Option<K> = Some(key.to_owned().into());
        let mut value = Some(value);
        self.locked(|st, after| {
            st.insert_absent(hash, &mut owned, &mut value, |a, b| a == b, after);
            after.drop_key(owned.take());
        });
        drop(value);
    }

    /// Clones the waker a poll is to store. If the clone panics, a
    /// registered future is deregistered (it would otherwise stay in its
    /// key's line marked as woken, and could hold up the takes behind it)
    /// and starts over if polled again.
    #[inline]
    fn clone_waker(&self, kind: Kind, w: &mut Waiter, cx: &Context<'_>) -> Waker {
        let unwind = DeregisterOnUnwind { map: self, kind, w };
        let waker = cx.waker().clone();
        core::mem::forget(unwind);
        waker
    }

    /// Announces the key a future made wanted; if the key's copy panics, the
    /// future is deregistered (nobody would be told that it waits) and
    /// starts over if polled again.
    #[cold]
    fn announce_for<Q>(&self, kind: Kind, w: &mut Waiter, key: &Q)
    where
        Q: ?Sized + ToOwned,
        Q::Owned: Into<K>,
    {
        if !PRODUCER {
            // Nobody can watch the demand, so no trip asks for this; the
            // test lets the compiler see it where a lock hides the trip's
            // outcome, and leave the announcing code out.
            return;
        }
        let entry = w.entry;
        let unwind = UnannounceOnUnwind { map: self, kind, w };
        let owned: K = key.to_owned().into();
        core::mem::forget(unwind);
        self.announce(entry, owned);
    }
}

impl<K, V, S, L: ScopedRawMutex> AwaitMap<K, V, S, L> {
    /// Queues a key that a future made wanted for the `Demand` handles (a
    /// copy of the future's key, made with the lock released).
    #[cold]
    fn announce(&self, entry: EntryRef, key: K) {
        let mut key = Some(key);
        let stale = self.state.with(|st| st.queue_wanted(entry, &mut key));
        let mut panic = None;
        if key.is_none() {
            caught(|| self.events.wanted(), &mut panic);
        }
        // Not queued (the watchers left meanwhile), and keys no longer
        // wanted: dropped last, unlocked.
        caught(|| drop(key), &mut panic);
        caught(|| drop(stale), &mut panic);
        resume(panic);
    }

    /// Deregisters a future that is dropped (or whose poll panicked) while
    /// registered. The waiter goes out in scalars, so no pointer into the
    /// future escapes (see [`poll_get`](Self::poll_get)).
    #[inline]
    pub(crate) fn deregister(&self, kind: Kind, w: &Waiter) {
        if w.is_registered() {
            let e = w.entry;
            self.deregister_slow(kind, e.hash, e.id, e.bucket, w.slot);
        }
    }

    /// The waiter in scalars: passed in registers, not through memory.
    #[inline(never)]
    fn deregister_slow(&self, kind: Kind, hash: u64, id: u64, bucket: u32, slot: u32) {
        let mut w = Waiter {
            entry: EntryRef { hash, id, bucket },
            slot,
        };
        self.locked(|st, after| st.deregister(kind, &mut w, after));
    }
}

/// Deregisters a future whose poll is unwinding, so that it starts over if
/// polled again.
struct DeregisterOnUnwind<'a, K, V, S, L: ScopedRawMutex> {
    map: &'a AwaitMap<K, V, S, L>,
    kind: Kind,
    w: &'a mut Waiter,
}

/// As [`DeregisterOnUnwind`], for a future whose copy of its key for the
/// demand panicked: the key's wanted spell is marked unannounced again in
/// the same trip, so that the waiters left behind announce it.
struct UnannounceOnUnwind<'a, K, V, S, L: ScopedRawMutex> {
    map: &'a AwaitMap<K, V, S, L>,
    kind: Kind,
    w: &'a mut Waiter,
}

impl<K, V, S, L: ScopedRawMutex> Drop for UnannounceOnUnwind<'_, K, V, S, L> {
    fn drop(&mut self) {
        let (kind, w) = (self.kind, &mut *self.w);
        if w.is_registered() {
            let entry = w.entry;
            self.map.locked(|st, after| {
                st.unannounce(entry);
                st.deregister(kind, w, after);
            });
        }
    }
}

impl<K, V, S, L: ScopedRawMutex> Drop for DeregisterOnUnwind<'_, K, V, S, L> {
    fn drop(&mut self) {
        self.map.deregister(self.kind, self.w);
        self.w.start_over();
    }
}

// ===== the polls of the named futures =====

impl<V> Outcome<V> {
    /// A `get`'s or `take`'s result (they never get a promise).
    #[inline]
    fn into_result(self) -> Result<V, WaitError> {
        match self {
            Outcome::Value(v) => Ok(v),
            Outcome::Failed(e) => Err(e),
            Outcome::Promise => unreachable!("only `get_or_promise` is handed a promise"),
        }
    }
}

impl<K, V, S, L> AwaitMap<K, V, S, L>
where
    K: Eq + Hash,
    S: BuildHasher,
    L: ScopedRawMutex,
{
    /// Polls a `get`: the first look in line (one hash, one lock, one
    /// probe, one clone), everything else out of line, so the hot path
    /// stays small.
    #[inline]
    pub(crate) fn poll_get<Q>(
        &self,
        w: &mut Waiter,
        key: &Q,
        cx: &Context<'_>,
        what: &'static str,
    ) -> Poll<Result<V, WaitError>>
    where
        V: Clone,
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        if !w.is_fresh() {
            return self.poll_get_again(w, key, cx, what);
        }
        let hash = self.hasher.hash_one(key);
        // A busy lock waits out of line, in the general path.
        let looked = self
            .state
            .try_with(|st| st.look(hash, |k| key.equivalent(k), V::clone));
        let miss = match looked {
            Some(Ok(v)) => {
                w.slot = DONE;
                return Poll::Ready(Ok(v));
            }
            Some(Err(miss)) => miss,
            None => Miss::BUSY,
        };
        // The miss registers a waiter of its own, copied into the future
        // after (if the poll panics, the waiter leaves its key instead: see
        // `poll_get_missed`). No pointer into the future leaves this
        // function, so a future made and polled in one place (a hit) stays
        // in registers, its fields never written to memory.
        let mut fresh = Waiter::new();
        fresh.entry.hash = hash;
        let polled = self.poll_get_missed(&mut fresh, key, cx, miss);
        if polled.is_ready() {
            // Known to the caller's code too: a future that is `Ready`
            // needs no deregistration when it is dropped.
            w.slot = DONE;
        } else {
            *w = fresh;
        }
        polled
    }

    /// A future started waiting on a key. On a map with a limit, producers
    /// waiting for room look again: a value that somebody waits for is let
    /// in beyond the limit, so a producer of that key must not sleep on.
    #[inline]
    fn started_waiting(&self) {
        if self.limited() {
            self.events.awaited();
        }
    }

    /// A `get` polled while registered (or after it returned `Ready`).
    #[cold]
    #[inline(never)]
    fn poll_get_again<Q>(
        &self,
        w: &mut Waiter,
        key: &Q,
        cx: &Context<'_>,
        what: &'static str,
    ) -> Poll<Result<V, WaitError>>
    where
        V: Clone,
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        assert_not_done(w, what);
        // Without a limit, a value that leaves tells nobody.
        if !self.limited() {
            if let Some(v) = self.state.with(|st| st.resolve_get(V::clone, w)) {
                return Poll::Ready(Ok(v));
            }
        }
        self.poll_general(Mode::Get(V::clone), w, key, cx)
            .map(Outcome::into_result)
    }

    /// A `get` whose first look found no value: it registers.
    #[cold]
    #[inline(never)]
    fn poll_get_missed<Q>(
        &self,
        w: &mut Waiter,
        key: &Q,
        cx: &Context<'_>,
        miss: u64,
    ) -> Poll<Result<V, WaitError>>
    where
        V: Clone,
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        // The future copies this waiter only when the poll returns: if user
        // code panics after it registered, it leaves, and the future (still
        // fresh) starts over if polled again.
        let unwind = DeregisterOnUnwind {
            map: self,
            kind: Kind::Get,
            w,
        };
        let w = &mut *unwind.w;
        let mode = Mode::Get(V::clone);
        let polled = match miss {
            Miss::CLOSED => Poll::Ready(Err(WaitError::Closed)),
            Miss::ABSENT => self
                .poll_register::<false, Q>(mode, w, key, cx)
                .map(Outcome::into_result),
            Miss::BUSY => self
                .poll_slow(mode, w, key, cx, Needs::NOTHING, Supplies::NONE)
                .map(Outcome::into_result),
            id => {
                // Not registered yet: a panic in the clone leaves nothing.
                let waker = cx.waker().clone();
                match self
                    .state
                    .with(|st| st.register_get(w, id, waker, V::clone))
                {
                    Registration::Waiting => Poll::Pending,
                    Registration::Came(v, waker) => {
                        drop(waker);
                        Poll::Ready(Ok(v))
                    }
                    Registration::Elsewhere(waker) => {
                        let supplies = Supplies {
                            waker: Some(waker),
                            key: None,
                        };
                        self.poll_slow(mode, w, key, cx, Needs::NOTHING, supplies)
                            .map(Outcome::into_result)
                    }
                }
            }
        };
        core::mem::forget(unwind);
        if polled.is_pending() {
            self.started_waiting();
        }
        polled
    }

    /// Polls a `take`.
    #[inline(always)]
    pub(crate) fn poll_take<Q>(
        &self,
        w: &mut Waiter,
        key: &Q,
        cx: &Context<'_>,
        what: &'static str,
    ) -> Poll<Result<V, WaitError>>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        if w.is_registered() {
            return self.poll_take_again(w, key, cx);
        }
        assert_not_done(w, what);
        let polled = self.poll_first_take(w, key, cx);
        if polled.is_pending() {
            self.started_waiting();
        }
        polled.map(Outcome::into_result)
    }

    /// A registered `take` polled again: the ready poll of an RPC response
    /// first, in a small function of its own, then the general path.
    #[inline(never)]
    fn poll_take_again<Q>(
        &self,
        w: &mut Waiter,
        key: &Q,
        cx: &Context<'_>,
    ) -> Poll<Result<V, WaitError>>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        // Without a limit, a value that leaves tells nobody.
        if w.slot == INLINE && !self.limited() {
            if let Some(v) = self.state.with(|st| st.take_inline(w)) {
                return Poll::Ready(Ok(v));
            }
        }
        self.poll_general(Mode::Take, w, key, cx)
            .map(Outcome::into_result)
    }

    /// Polls a `get_or_promise`.
    #[inline]
    pub(crate) fn poll_or_promise<Q>(
        &self,
        w: &mut Waiter,
        key: &Q,
        cx: &Context<'_>,
    ) -> Poll<Outcome<V>>
    where
        V: Clone,
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        let mode = Mode::GetOrPromise(V::clone);
        if w.is_registered() {
            return self.poll_general(mode, w, key, cx);
        }
        assert_not_done(w, "get_or_promise");
        w.entry.hash = self.hasher.hash_one(key);
        let polled = self.poll_slow(mode, w, key, cx, Needs::NOTHING, Supplies::NONE);
        if polled.is_pending() {
            self.started_waiting();
        }
        polled
    }

    /// A registered future polled again past its kind's fast path (or
    /// with none): the same path for every kind, the mode as data. One trip
    /// through the lock, in which the common outcomes (its value is there,
    /// or it still waits with a waker the map holds) need nothing made
    /// outside the lock.
    #[inline(never)]
    fn poll_general<Q>(
        &self,
        mode: Mode<V>,
        w: &mut Waiter,
        key: &Q,
        cx: &Context<'_>,
    ) -> Poll<Outcome<V>>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        let mut none = Supplies::NONE;
        match self.poll_trip(&mode, w, key, cx, &mut none) {
            Trip::Done(polled) => polled,
            Trip::Make(needs) => self.poll_slow(mode, w, key, cx, needs, Supplies::NONE),
        }
    }

    /// Registers a claim's take when it is made, before any poll. The common
    /// case (a request id with no entry yet) registers in one trip with no
    /// waker (the waiter counts as woken until its first poll stores one);
    /// anything else is a take's first poll with a waker that does nothing.
    /// `Some` if it resolved at once.
    #[inline(never)]
    pub(crate) fn register_claim(&self, w: &mut Waiter, key: &K) -> Option<Result<V, WaitError>>
    where
        K: Clone,
    {
        w.entry.hash = self.hasher.hash_one(key);
        let owned = key.clone();
        let fast = self
            .state
            .with(|st| st.register_fast(Kind::Take, w, |k| k == key, None, owned));
        match fast {
            Ok(announce) => {
                if announce {
                    self.announce_for(Kind::Take, w, key);
                }
                self.started_waiting();
                None
            }
            Err((_, owned)) => {
                drop(owned);
                let cx = Context::from_waker(Waker::noop());
                match self.poll_take(w, key, &cx, "Claim") {
                    Poll::Ready(r) => Some(r),
                    Poll::Pending => None,
                }
            }
        }
    }

    /// The first poll of a `take`: a take mostly waits (a response awaited
    /// before it arrives), so it clones its waker and makes an owned key
    /// before it takes the lock, and registers in one trip.
    #[inline(never)]
    fn poll_first_take<Q>(&self, w: &mut Waiter, key: &Q, cx: &Context<'_>) -> Poll<Outcome<V>>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        w.entry.hash = self.hasher.hash_one(key);
        self.poll_register::<true, Q>(Mode::Take, w, key, cx)
    }

    /// Registers a future that is not registered (its hash is known) in one
    /// trip, with its waker and an owned key made before the lock.
    ///
    /// `TAKE` only tells the two callers' copies apart: each inlines its own
    /// trip through the lock.
    #[inline(always)]
    fn poll_register<const TAKE: bool, Q>(
        &self,
        mode: Mode<V>,
        w: &mut Waiter,
        key: &Q,
        cx: &Context<'_>,
    ) -> Poll<Outcome<V>>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        // Not registered yet: a panic in either leaves nothing behind.
        let waker = cx.waker().clone();
        let owned: K = key.to_owned().into();
        let kind = mode.kind();
        let fast = self
            .state
            .with(|st| st.register_fast(kind, w, |k| key.equivalent(k), Some(waker), owned));
        let (waker, owned) = match fast {
            Ok(false) => return Poll::Pending,
            Ok(true) => {
                self.announce_for(kind, w, key);
                return Poll::Pending;
            }
            Err(back) => back,
        };
        let supplies = Supplies {
            waker,
            key: Some(owned),
        };
        self.poll_slow(mode, w, key, cx, Needs::NOTHING, supplies)
    }
}

/// What a poll's trip through the lock came to.
pub(crate) enum Trip<V> {
    Done(Poll<Outcome<V>>),
    /// Make these outside the lock and take another trip.
    Make(Needs),
}

/// Panics as `std` futures do when polled after they returned `Ready`.
#[inline]
fn assert_not_done(w: &Waiter, what: &'static str) {
    if w.slot == DONE {
        polled_after_ready(what);
    }
}

#[cold]
#[inline(never)]
fn polled_after_ready(what: &'static str) -> ! {
    panic!("`{what}` polled after it returned `Ready`")
}
