//! The life of a waiting future, from its first poll to its last: one
//! machine shared by `get`, `take` and `get_or_promise`, which differ only
//! in their [`Mode`].
//!
//! 1. **First poll.** A `get` first looks for the value ([`State::hit`],
//!    the hot path: one lock, one probe, one clone). A `take` expects to
//!    wait (a response awaited before it arrives), so it clones its waker
//!    and makes an owned key before it takes the lock, and registers in that
//!    one trip. A `get` that finds the key's entry but no value registers in
//!    the same trip as its look, with no waker yet, and stores one in a
//!    second, short trip; one that finds no entry at all makes an owned key
//!    and creates the entry in its second trip.
//! 2. **Registered.** The future's waiter is its entry's inline slot or a
//!    node in the slab, and the future knows where: a [`Waiter`], the entry's
//!    hash, id and bucket plus the slot.
//! 3. **Woken and polled again** ([`State::repoll`]): it resolves if its key
//!    has a value for it (every `get`; for `take`s, the one holding the
//!    hand-off, or any take while nobody holds it), if the map is closed, or
//!    if it was failed (`cancel`, an abandoned promise). Otherwise it stores
//!    its newest waker and waits on.
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
//! that could hold up the others: see [`AwaitMap::poll_waiter`].

use core::hash::{BuildHasher, Hash};
use core::task::{Context, Poll, Waker};

use alloc::borrow::ToOwned;
use hashbrown::Equivalent;
use mutex::ScopedRawMutex;

use crate::after::After;
use crate::sync::{caught, resume};
use crate::table::{Failure, Hit, State};
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
/// registered future and by a promise.
#[derive(Clone, Copy, Debug)]
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
            entry: EntryRef {
                hash: 0,
                id: 0,
                bucket: 0,
            },
            slot: FRESH,
        }
    }

    #[inline]
    pub(crate) fn is_fresh(&self) -> bool {
        self.slot == FRESH
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

/// What a future resolves with.
pub(crate) enum Outcome<V> {
    Value(V),
    /// `get_or_promise`: the caller is now the key's producer.
    Promise(EntryRef),
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

// ===== impl State: the machine, under the lock =====

impl<K, V> State<K, V> {
    /// The first poll of a `get`: the hot path. A clone of the value if the
    /// key has one; else the future registers on the key's entry if it has
    /// one (with no waker yet: the poll stores one in its next trip).
    #[inline]
    pub(crate) fn hit(
        &mut self,
        w: &mut Waiter,
        eq: impl FnMut(&K) -> bool,
        clone: fn(&V) -> V,
    ) -> Hit<V> {
        let found = self.find(w.entry.hash, eq);
        if let Some(bucket) = found {
            if let Some(v) = self.at(bucket).value() {
                return Hit::Value(clone(v));
            }
        }
        self.miss(w, found)
    }

    /// A `get`'s first look found no value.
    #[inline(never)]
    fn miss(&mut self, w: &mut Waiter, found: Option<usize>) -> Hit<V> {
        if self.is_closed() {
            return Hit::Closed;
        }
        if let Some(bucket) = found {
            let slot = self.register(bucket, Kind::Get, None);
            w.registered(self.entry_ref(bucket), slot);
        }
        Hit::Miss
    }

    /// One trip through the lock of a future's poll.
    pub(crate) fn poll_waiter(
        &mut self,
        mode: &Mode<V>,
        w: &mut Waiter,
        eq: impl FnMut(&K) -> bool,
        cx_waker: &Waker,
        supplies: &mut Supplies<K>,
        after: &mut After<K>,
    ) -> Step<V> {
        if w.is_fresh() {
            self.first_poll(mode, w, eq, supplies, after)
        } else {
            self.repoll(mode, w, cx_waker, supplies, after)
        }
    }

    /// The first poll: resolve at once, or register (creating the key's
    /// entry if it has none).
    fn first_poll(
        &mut self,
        mode: &Mode<V>,
        w: &mut Waiter,
        eq: impl FnMut(&K) -> bool,
        supplies: &mut Supplies<K>,
        after: &mut After<K>,
    ) -> Step<V> {
        let hash = w.entry.hash;
        let Some(bucket) = self.find(hash, eq) else {
            // No entry: the key has no value, no waiter and no promise.
            if self.is_closed() {
                w.slot = DONE;
                return Step::Ready(Outcome::Failed(WaitError::Closed));
            }
            if let Mode::GetOrPromise(_) = mode {
                let Some(key) = supplies.key.take() else {
                    return Step::Make(Needs::KEY);
                };
                w.slot = DONE;
                return Step::Ready(Outcome::Promise(self.create_promised(hash, key)));
            }
            let (Some(_), Some(_)) = (&supplies.waker, &supplies.key) else {
                return Step::Make(Needs::WAKER_AND_KEY);
            };
            let (Some(waker), Some(key)) = (supplies.waker.take(), supplies.key.take()) else {
                unreachable!("both checked above");
            };
            let entry = self.create_waiting(hash, key, mode.kind(), waker);
            w.registered(entry, INLINE);
            return if self.watches_demand() {
                Step::Announce
            } else {
                Step::Pending
            };
        };
        // A present value is taken at once, even from under a take that
        // holds the hand-off (it will find the value gone and wait on).
        let outcome = match mode {
            Mode::Get(clone) => self.at(bucket).value().map(|v| Outcome::Value(clone(v))),
            Mode::Take => self.take_value(bucket).map(Outcome::Value),
            Mode::GetOrPromise(clone) => {
                let closed = self.is_closed();
                let e = self.at(bucket);
                match e.value() {
                    Some(v) => Some(Outcome::Value(clone(v))),
                    None if !e.promised() && !closed => {
                        e.set_promised(true);
                        Some(Outcome::Promise(self.entry_ref(bucket)))
                    }
                    None => None,
                }
            }
        };
        if let Some(outcome) = outcome {
            w.slot = DONE;
            self.remove_if_empty(bucket, after);
            return Step::Ready(outcome);
        }
        if self.is_closed() {
            w.slot = DONE;
            return Step::Ready(Outcome::Failed(WaitError::Closed));
        }
        // Registered now, with a waker if the poll brought one; without, it
        // stores one in its next trip (an insert meanwhile sees a waiter
        // "woken already", which the next trip resolves).
        let waker = supplies.waker.take();
        let needs = if waker.is_some() {
            Step::Pending
        } else {
            Step::Make(Needs::WAKER)
        };
        let slot = self.register(bucket, mode.kind(), waker);
        w.registered(self.entry_ref(bucket), slot);
        needs
    }

    /// A registered future polled again.
    fn repoll(
        &mut self,
        mode: &Mode<V>,
        w: &mut Waiter,
        cx_waker: &Waker,
        supplies: &mut Supplies<K>,
        after: &mut After<K>,
    ) -> Step<V> {
        let slot = w.slot;
        // A node failed by `cancel` or an abandoned promise learns it
        // without its entry, which may be gone.
        if slot != INLINE {
            if let Some(failure) = self.node_failure(slot) {
                after.drop_waker(self.free_node(slot));
                return self.failed(mode, w, failure);
            }
        }
        let bucket = self.bucket_of(&mut w.entry);
        if slot == INLINE {
            if let Some(failure) = self.at(bucket).inline_failure() {
                self.free_waiter(bucket, INLINE, mode.kind());
                self.remove_if_empty(bucket, after);
                return self.failed(mode, w, failure);
            }
        }
        let closed = self.is_closed();
        let e = self.at(bucket);
        let first = mode.kind() == Kind::Take && e.first_take() == slot;
        let outcome = match mode {
            Mode::Get(clone) => e.value().map(|v| Outcome::Value(clone(v))),
            Mode::Take => {
                // The take holding the hand-off, or any take while nobody
                // holds it.
                if e.has_value() && (first || !e.handoff()) {
                    if first {
                        e.set_handoff(false);
                    }
                    self.take_value(bucket).map(Outcome::Value)
                } else {
                    None
                }
            }
            Mode::GetOrPromise(clone) => match e.value() {
                Some(v) => Some(Outcome::Value(clone(v))),
                // Woken for a value that is gone again (taken or removed),
                // and nobody produces the key any more: this caller takes
                // the work, as a fresh call would.
                None if !e.promised() && !closed => {
                    e.set_promised(true);
                    Some(Outcome::Promise(self.entry_ref(bucket)))
                }
                None => None,
            },
        };
        let outcome = match outcome {
            Some(outcome) => Some(outcome),
            None if closed => Some(Outcome::Failed(WaitError::Closed)),
            None => None,
        };
        if let Some(outcome) = outcome {
            let passes = first && self.at(bucket).handoff();
            after.drop_waker(self.free_waiter(bucket, slot, mode.kind()));
            if passes {
                self.pass_handoff(bucket);
            }
            self.remove_if_empty(bucket, after);
            w.slot = DONE;
            return Step::Ready(outcome);
        }
        if first && self.at(bucket).handoff() {
            // Woken for a value that is gone again: wait on, still first in
            // line, and let the next insert hand it over again.
            self.at(bucket).set_handoff(false);
        }
        if self.will_wake(bucket, slot, cx_waker) {
            return Step::Pending;
        }
        match supplies.waker.take() {
            Some(waker) => {
                after.drop_waker(self.store_waker(bucket, slot, waker));
                Step::Pending
            }
            None => Step::Make(Needs::WAKER),
        }
    }

    /// The outcome of a failed waiter, whose slot was freed.
    fn failed(&mut self, mode: &Mode<V>, w: &mut Waiter, failure: Failure) -> Step<V> {
        match (failure, mode) {
            // Abandoned: a `get_or_promise` starts over, as a fresh call
            // would, in a new trip through the lock (the slot freed here may
            // have been the last waiter, and `drained()` must hear of it
            // even if the `Eq` of the fresh probe panics).
            (Failure::Abandoned, Mode::GetOrPromise(_)) => {
                w.slot = FRESH;
                Step::Restart
            }
            (Failure::Abandoned, _) => {
                w.slot = DONE;
                Step::Ready(Outcome::Failed(WaitError::Abandoned))
            }
            (Failure::Cancelled, _) => {
                w.slot = DONE;
                Step::Ready(Outcome::Failed(WaitError::Cancelled))
            }
        }
    }

    /// A registered future is dropped (or its poll panicked): it leaves its
    /// key's waiters. A `take` holding the hand-off passes it to the next
    /// waiting take if the value is still there.
    pub(crate) fn deregister(&mut self, kind: Kind, w: &mut Waiter, after: &mut After<K>) {
        let slot = w.slot;
        w.slot = FRESH;
        if slot != INLINE && self.node_failure(slot).is_some() {
            after.drop_waker(self.free_node(slot));
            return;
        }
        let bucket = self.bucket_of(&mut w.entry);
        let e = self.at(bucket);
        let passes = kind == Kind::Take && e.handoff() && e.first_take() == slot;
        after.drop_waker(self.free_waiter(bucket, slot, kind));
        if passes {
            self.pass_handoff(bucket);
        }
        self.remove_if_empty(bucket, after);
    }
}

// ===== impl AwaitMap: a poll, with the lock released between trips =====

impl<K, V, S, L> AwaitMap<K, V, S, L>
where
    K: Eq + Hash,
    S: BuildHasher,
    L: ScopedRawMutex,
{
    /// The first poll of a `get`, in line: one hash, one lock, one probe,
    /// one clone. `None` if it did not resolve (the future may have
    /// registered), and the slow path goes on.
    #[inline]
    pub(crate) fn poll_hit<Q>(
        &self,
        w: &mut Waiter,
        key: &Q,
        clone: fn(&V) -> V,
    ) -> Option<Result<V, WaitError>>
    where
        Q: ?Sized + Hash + Equivalent<K>,
    {
        w.entry.hash = self.hasher.hash_one(key);
        let hit = self
            .state
            .with(|st| st.hit(w, |k| key.equivalent(k), clone));
        match hit {
            Hit::Value(v) => {
                w.slot = DONE;
                Some(Ok(v))
            }
            Hit::Closed => {
                w.slot = DONE;
                Some(Err(WaitError::Closed))
            }
            Hit::Miss => None,
        }
    }

    /// Polls a waiting future: the slow path all futures share, a loop of
    /// trips through the lock with what each trip asks for (a waker clone,
    /// an owned key) made outside it.
    ///
    /// A poll that panics in user code after its future registered leaves
    /// nothing behind that could hold up other futures: a waker whose clone
    /// panics, or a key whose copy for `demand()` panics, deregisters the
    /// future (it starts over if polled again), and a `take` that moved its
    /// value out puts it back (see [`finish_ready`](Self::finish_ready)).
    #[inline(never)]
    pub(crate) fn poll_waiter<Q>(
        &self,
        mode: Mode<V>,
        w: &mut Waiter,
        key: &Q,
        cx: &Context<'_>,
        after_hit: bool,
        what: &'static str,
    ) -> Poll<Outcome<V>>
    where
        Q: ?Sized + Hash + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        assert!(w.slot != DONE, "`{what}` polled after it returned `Ready`");
        let mut needs = if after_hit {
            // `poll_hit` looked already: it registered the future (a waker
            // to store), or found no entry (a waker and a key to make one).
            if w.is_registered() {
                Needs::WAKER
            } else {
                Needs::WAKER_AND_KEY
            }
        } else if w.is_fresh() {
            w.entry.hash = self.hasher.hash_one(key);
            match mode {
                // A take mostly waits: registering in one trip saves one.
                Mode::Take => Needs::WAKER_AND_KEY,
                _ => Needs::NOTHING,
            }
        } else {
            Needs::NOTHING
        };
        let mut supplies = Supplies {
            waker: None,
            key: None,
        };
        loop {
            if needs.waker && supplies.waker.is_none() {
                supplies.waker = Some(self.clone_waker(mode.kind(), w, cx));
            }
            if needs.key && supplies.key.is_none() {
                // Only a future that is not registered needs a key.
                supplies.key = Some(key.to_owned().into());
            }
            let mut after = After::new();
            let step = self.state.with(|st| {
                let step = st.poll_waiter(
                    &mode,
                    w,
                    |k| key.equivalent(k),
                    cx.waker(),
                    &mut supplies,
                    &mut after,
                );
                after.collect(st);
                step
            });
            match step {
                Step::Make(more) => {
                    self.finish(after);
                    needs = more;
                }
                Step::Restart => {
                    self.finish(after);
                    needs = Needs::NOTHING;
                }
                Step::Ready(outcome) => {
                    after.spare_waker = supplies.waker.take();
                    after.spare_key = supplies.key.take();
                    return self.finish_ready(&mode, w, key, outcome, after);
                }
                Step::Pending => {
                    after.spare_waker = supplies.waker.take();
                    after.spare_key = supplies.key.take();
                    self.finish(after);
                    return Poll::Pending;
                }
                Step::Announce => {
                    self.finish(after);
                    self.announce_for(mode.kind(), w, key);
                    return Poll::Pending;
                }
            }
        }
    }

    /// Finishes a poll that resolved: what the trip left to do runs before
    /// the outcome is returned. If any of it panics (a waker, a key's or a
    /// waker's destructor), the poll cannot return its outcome: a value a
    /// `take` moved out goes back into the map, so nothing is lost, and the
    /// future starts over if it is polled again.
    #[inline]
    fn finish_ready<Q>(
        &self,
        mode: &Mode<V>,
        w: &mut Waiter,
        key: &Q,
        outcome: Outcome<V>,
        mut after: After<K>,
    ) -> Poll<Outcome<V>>
    where
        Q: ?Sized + Equivalent<K> + ToOwned,
        Q::Owned: Into<K>,
    {
        if let (Mode::Take, Outcome::Value(_)) = (mode, &outcome) {
            after.freed = 1;
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
                    Outcome::Promise(r) => drop(crate::promise::Promise::from_ref(self, r)),
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
            after.key = owned.take();
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
        let entry = w.entry;
        let unwind = DeregisterOnUnwind { map: self, kind, w };
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
    /// registered.
    #[inline]
    pub(crate) fn deregister(&self, kind: Kind, w: &mut Waiter) {
        if w.is_registered() {
            self.deregister_slow(kind, w);
        }
    }

    #[inline(never)]
    fn deregister_slow(&self, kind: Kind, w: &mut Waiter) {
        self.locked(|st, after| st.deregister(kind, w, after));
    }
}

/// Deregisters a future whose poll is unwinding, so that it starts over if
/// polled again.
struct DeregisterOnUnwind<'a, K, V, S, L: ScopedRawMutex> {
    map: &'a AwaitMap<K, V, S, L>,
    kind: Kind,
    w: &'a mut Waiter,
}

impl<K, V, S, L: ScopedRawMutex> Drop for DeregisterOnUnwind<'_, K, V, S, L> {
    fn drop(&mut self) {
        self.map.deregister(self.kind, self.w);
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
            Outcome::Promise(_) => unreachable!("only `get_or_promise` is handed a promise"),
        }
    }
}

impl<K, V, S, L> AwaitMap<K, V, S, L>
where
    K: Eq + Hash,
    S: BuildHasher,
    L: ScopedRawMutex,
{
    /// Polls a `get`: the first look in line, the rest out of line.
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
        let after_hit = w.is_fresh();
        if after_hit {
            if let Some(r) = self.poll_hit(w, key, V::clone) {
                return Poll::Ready(r);
            }
        }
        self.poll_waiter(Mode::Get(V::clone), w, key, cx, after_hit, what)
            .map(Outcome::into_result)
    }

    /// Polls a `take`.
    #[inline]
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
        self.poll_waiter(Mode::Take, w, key, cx, false, what)
            .map(Outcome::into_result)
    }
}
