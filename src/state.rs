//! The map's state under the lock: the table of entries and the waiter slab.
//!
//! Everything here runs with the lock held, so nothing here may call user
//! code other than `K: Eq` (through the `eq` closures) and `V: Clone` (through
//! [`Mode::extract`]). Where those may panic, they run before any mutation, so
//! a panic leaves the state consistent. Keys, values and wakers that must be
//! dropped leave through [`After`] and are dropped by the caller after the
//! lock is released.

use core::task::Waker;

use alloc::collections::VecDeque;

use hashbrown::HashTable;
use hashbrown::hash_table::{Entry as TableEntry, OccupiedEntry};

use crate::WaitError;
use crate::waiters::{Kind, List, NIL, NodeState, Slab};

/// One key: its stored value and its waiting futures. An entry exists only
/// while it has a value or at least one `Waiting` node.
pub(crate) struct Entry<K, V> {
    /// `S::hash_one` of the key, computed outside the lock. A resize rehashes
    /// from it, so user `Hash` code never runs under the lock.
    hash: u64,
    /// Never reused: registered futures find their entry by `(hash, id)`, with
    /// no call to user `Eq`.
    id: u64,
    key: K,
    value: Option<V>,
    gets: List,
    takes: List,
    /// The take that was woken to receive the current value, if any. It is
    /// the head of `takes` (the earliest registered) whenever it is set.
    baton: u32,
    /// A `Promise` guard reserves the key: the entry lives until it is
    /// fulfilled or dropped.
    promised: bool,
}

impl<K, V> Entry<K, V> {
    #[inline]
    fn is_empty(&self) -> bool {
        self.value.is_none() && self.gets.is_empty() && self.takes.is_empty() && !self.promised
    }

    /// An entry with no value and no waiters yet.
    #[inline]
    fn new(hash: u64, id: u64, key: K, value: Option<V>, promised: bool) -> Self {
        Entry {
            hash,
            id,
            key,
            value,
            gets: List::EMPTY,
            takes: List::EMPTY,
            baton: NIL,
            promised,
        }
    }

    fn list(&mut self, kind: Kind) -> &mut List {
        match kind {
            Kind::Get => &mut self.gets,
            Kind::Take => &mut self.takes,
        }
    }
}

/// What an operation leaves to do once the lock is released, in this
/// order: wake the due wakers, tell the map-wide conditions that became true,
/// then drop what left the map. Filled under the lock and carried out by
/// `AwaitMap::finish`, so that a panicking destructor can never swallow a
/// wake-up that was due.
pub(crate) struct After<K> {
    /// The first due waker, popped from the wake queue.
    pub(crate) first: Option<Waker>,
    /// More due wakers wait in the queue.
    pub(crate) more: bool,
    /// The last waiter left while a `drained()` future watches.
    pub(crate) idle: bool,
    /// How many values left the map: room under a limit.
    pub(crate) freed: usize,
    /// The key of an entry that was removed, or a key the map did not keep.
    pub(crate) key: Option<K>,
    /// A second key the map did not keep (a registration's spare copy).
    pub(crate) spare_key: Option<K>,
    /// A waker that was replaced, or whose node was freed.
    pub(crate) waker: Option<Waker>,
    /// A second waker the map did not keep (a registration's spare clone).
    pub(crate) spare_waker: Option<Waker>,
}

impl<K> After<K> {
    #[inline]
    pub(crate) const fn new() -> Self {
        After {
            first: None,
            more: false,
            idle: false,
            freed: 0,
            key: None,
            spare_key: None,
            waker: None,
            spare_waker: None,
        }
    }

    /// Moves the due wake-ups out of the state (the first one, and whether
    /// there are more) and notes whether the map just became idle. The last
    /// thing an operation does under the lock.
    #[inline]
    pub(crate) fn collect<V>(&mut self, st: &mut State<K, V>) {
        self.first = st.slab.pop_one();
        self.more = st.slab.has_queued();
        self.idle = st.idle_now();
    }

    /// Nothing to do: no waker to wake or drop, no condition to tell, and no
    /// key whose drop runs code.
    #[inline]
    pub(crate) fn is_quiet(&self) -> bool {
        self.first.is_none()
            && !self.more
            && !self.idle
            && self.freed == 0
            && self.waker.is_none()
            && self.spare_waker.is_none()
            && (!core::mem::needs_drop::<K>() || (self.key.is_none() && self.spare_key.is_none()))
    }
}

/// What a future has prepared outside the lock for registering.
pub(crate) struct Prepared<K> {
    pub(crate) waker: Option<Waker>,
    pub(crate) key: Option<K>,
}

/// How a future reads the value: `get` clones it, `take` moves it out.
pub(crate) trait Mode<V> {
    const KIND: Kind;
    fn extract(slot: &mut Option<V>) -> Option<V>;
}

/// `get`: the value stays in the map.
#[derive(Debug)]
pub(crate) struct GetMode;
/// `take`: the value leaves the map.
#[derive(Debug)]
pub(crate) struct TakeMode;

impl<V: Clone> Mode<V> for GetMode {
    const KIND: Kind = Kind::Get;
    #[inline]
    fn extract(slot: &mut Option<V>) -> Option<V> {
        slot.clone()
    }
}

impl<V> Mode<V> for TakeMode {
    const KIND: Kind = Kind::Take;
    #[inline]
    fn extract(slot: &mut Option<V>) -> Option<V> {
        slot.take()
    }
}

/// Where a future stands.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Phase {
    /// Not polled yet (or polled only to `Ready`): the map knows nothing of it.
    Init,
    /// Holds a node in the slab.
    /// `bucket` is where the entry was when it registered: a hint, checked
    /// against `entry` (the table may have moved it since).
    ///
    /// `hash` is the entry's stored hash, which may differ from the one the
    /// future computed if the key's `Hash` is inconsistent: the entry is only
    /// ever found again by what it stores.
    Registered {
        slot: u32,
        seq: u64,
        entry: u64,
        bucket: usize,
        hash: u64,
    },
    /// Returned `Ready`.
    Done,
}

/// The outcome of the first poll's fast path.
pub(crate) enum Hit<V> {
    Ready(Result<V, WaitError>),
    /// The key has no value; `entry` says whether it has an entry (waiters),
    /// so registering would not need an owned key.
    Miss {
        entry: bool,
    },
}

/// The outcome of one locked poll step.
pub(crate) enum Step<V> {
    Ready(Result<V, WaitError>),
    Pending,
    /// Pending, having made the key wanted while a producer watches the
    /// demand: the caller announces it with a copy of the key, made outside
    /// the lock.
    Announce {
        entry: u64,
    },
    /// Registration needs a waker clone (and an owned key if `key`): the
    /// caller makes them outside the lock and polls again.
    Need {
        key: bool,
    },
}

/// Where a promise's entry is: found again by its stored hash and id, with
/// the bucket as a hint, like a registered future's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    hash: u64,
    entry: u64,
    bucket: usize,
}

/// The outcome of one locked step of a `get_or_promise` future.
pub(crate) enum CoStep<V> {
    Value(V),
    Promise(Ticket),
    Failed(WaitError),
    Pending,
    /// As [`Step::Need`].
    Need {
        key: bool,
    },
    /// The promise this future waited for was abandoned: it freed its node
    /// and polls again from the start.
    Restart,
}

pub(crate) struct State<K, V> {
    table: HashTable<Entry<K, V>>,
    pub(crate) slab: Slab,
    len: usize,
    next_id: u64,
    closed: bool,
    /// `drained()` futures waiting for the last waiter to finish.
    pub(crate) idle_watchers: usize,
    /// Live `Demand` handles; while there are any, newly wanted keys are
    /// announced in `wanted`.
    pub(crate) demand_watchers: usize,
    /// Announced keys, by entry: `(hash, entry id, key)`.
    pub(crate) wanted: VecDeque<(u64, u64, K)>,
}

impl<K, V> State<K, V> {
    pub(crate) const fn new() -> Self {
        State {
            table: HashTable::new(),
            slab: Slab::new(),
            len: 0,
            next_id: 0,
            closed: false,
            idle_watchers: 0,
            demand_watchers: 0,
            wanted: VecDeque::new(),
        }
    }

    pub(crate) fn with_capacity(n: usize) -> Self {
        State {
            table: HashTable::with_capacity(n),
            ..Self::new()
        }
    }

    /// Room for `keys` more keys (with a value or with waiters) and
    /// `waiters` more waiting futures, so that none of them allocates.
    pub(crate) fn reserve(&mut self, keys: usize, waiters: usize) {
        if keys > 0 {
            // Twice the keys: waiting keys keep the table at most half full
            // (see `reserve_for_waiter`).
            let want = 2 * (self.table.len() + keys);
            self.table.reserve(want - self.table.len(), entry_hash);
        }
        self.slab.reserve(waiters);
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// The value slot of the key, if the key has an entry.
    #[inline]
    pub(crate) fn value_mut(
        &mut self,
        hash: u64,
        eq: impl FnMut(&K) -> bool,
    ) -> Option<&mut Option<V>> {
        let mut eq = eq;
        self.table
            .find_mut(hash, |e| eq(&e.key))
            .map(|e| &mut e.value)
    }

    /// Stores `value`, then queues the wake-ups it is due: every waiting
    /// `get` and, unless one holds it already, the earliest waiting `take`.
    /// Returns the replaced value; the key stays in `key` if the entry
    /// existed. Key and value are taken from their options only after the
    /// last `eq` call, so a panicking `Eq` drops neither under the lock.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        key: &mut Option<K>,
        value: &mut Option<V>,
        eq: impl FnMut(&K, &K) -> bool,
    ) -> Option<V> {
        self.insert_if(hash, key, value, eq, |_| true)
            .expect("a plain insert always stores")
    }

    /// `insert`, unless the key has no value and `len >= limit`: then
    /// `None`, with key and value left in their options. A closed map takes
    /// every value.
    #[cfg(target_has_atomic = "ptr")]
    pub(crate) fn insert_within(
        &mut self,
        hash: u64,
        key: &mut Option<K>,
        value: &mut Option<V>,
        limit: usize,
        eq: impl FnMut(&K, &K) -> bool,
    ) -> Option<Option<V>> {
        let room = self.len < limit || self.closed;
        self.insert_if(hash, key, value, eq, |has_value| room || has_value)
    }

    /// `insert`, only if the key has no value; otherwise key and value stay
    /// in their options.
    pub(crate) fn insert_absent(
        &mut self,
        hash: u64,
        key: &mut Option<K>,
        value: &mut Option<V>,
        eq: impl FnMut(&K, &K) -> bool,
    ) {
        self.insert_if(hash, key, value, eq, |has_value| !has_value);
    }

    /// `insert` if `allowed(the key has a value)`; `None` (key and value
    /// left in their options) if not.
    #[inline]
    fn insert_if(
        &mut self,
        hash: u64,
        key: &mut Option<K>,
        value: &mut Option<V>,
        mut eq: impl FnMut(&K, &K) -> bool,
        allowed: impl FnOnce(bool) -> bool,
    ) -> Option<Option<V>> {
        let probe = key.as_ref().expect("insert without a key");
        match self.table.find_mut(hash, |e| eq(probe, &e.key)) {
            Some(e) => {
                if !allowed(e.value.is_some()) {
                    return None;
                }
                let value = value.take().expect("insert without a value");
                Some(store(&mut self.slab, &mut self.len, e, value))
            }
            None => {
                if !allowed(false) {
                    return None;
                }
                let id = fresh_id(&mut self.next_id);
                let key = key.take().expect("insert without a key");
                let entry = Entry::new(hash, id, key, value.take(), false);
                self.table.insert_unique(hash, entry, entry_hash);
                self.len += 1;
                Some(None)
            }
        }
    }

    /// Whether the entry `(hash, id)` still wants a value: it has waiters,
    /// no value and no promise.
    #[cfg(target_has_atomic = "ptr")]
    pub(crate) fn still_wanted(&self, hash: u64, id: u64) -> bool {
        wanted_in(&self.table, hash, id)
    }

    /// Queues an announced key for the `Demand` handles, if any is left
    /// (else `key` stays in its option). When the queue has grown well past
    /// the number of entries (waiters came and went while nobody called
    /// `next`), the keys no longer wanted are moved out, to be dropped by the
    /// caller after the lock is released: the queue stays proportional to
    /// the keys actually wanted.
    pub(crate) fn queue_wanted(
        &mut self,
        hash: u64,
        entry: u64,
        key: &mut Option<K>,
    ) -> Option<VecDeque<(u64, u64, K)>> {
        if self.demand_watchers == 0 {
            return None;
        }
        if let Some(key) = key.take() {
            self.wanted.push_back((hash, entry, key));
        }
        if self.wanted.len() <= 2 * self.table.len() + 16 {
            return None;
        }
        let mut stale = VecDeque::new();
        let mut kept = VecDeque::with_capacity(self.table.len());
        for item in self.wanted.drain(..) {
            if wanted_in(&self.table, item.0, item.1) {
                kept.push_back(item);
            } else {
                stale.push_back(item);
            }
        }
        self.wanted = kept;
        Some(stale)
    }

    /// Whether the last waiter just left and a `drained()` future waits for
    /// that.
    #[inline]
    pub(crate) fn idle_now(&self) -> bool {
        self.idle_watchers > 0 && self.slab.live() == 0
    }

    /// Reserves an absent key for a promise: the entry is created (taking
    /// `key`) or marked promised. `None` if the key has a value or a
    /// promise, or the map is closed. The key is taken only after the last
    /// `eq` call, so a panicking `Eq` drops nothing under the lock.
    pub(crate) fn promise(
        &mut self,
        hash: u64,
        key: &mut Option<K>,
        mut eq: impl FnMut(&K, &K) -> bool,
    ) -> Option<Ticket> {
        if self.closed {
            return None;
        }
        self.reserve_for_waiter();
        let probe = key.as_ref().expect("promise without a key");
        match self.table.entry(hash, |e| eq(probe, &e.key), entry_hash) {
            TableEntry::Occupied(mut occ) => {
                let bucket = occ.bucket_index();
                let e = occ.get_mut();
                if e.value.is_some() || e.promised {
                    return None;
                }
                e.promised = true;
                Some(Ticket {
                    hash: e.hash,
                    entry: e.id,
                    bucket,
                })
            }
            TableEntry::Vacant(vacant) => {
                let id = fresh_id(&mut self.next_id);
                let key = key.take().expect("promise without a key");
                let bucket = vacant
                    .insert(Entry::new(hash, id, key, None, true))
                    .bucket_index();
                Some(Ticket {
                    hash,
                    entry: id,
                    bucket,
                })
            }
        }
    }

    /// Fulfils a promise: stores the value (as `insert` does) and releases
    /// the reservation. Returns the value it replaced (a plain `insert` may
    /// have stored one meanwhile).
    pub(crate) fn fulfil(&mut self, ticket: Ticket, value: V) -> Option<V> {
        let mut occ = entry_of(&mut self.table, ticket.hash, ticket.entry, ticket.bucket);
        let e = occ.get_mut();
        e.promised = false;
        store(&mut self.slab, &mut self.len, e, value)
    }

    /// A promise dropped unfulfilled: releases the reservation and fails,
    /// with `Abandoned`, the futures on the key that would not resolve if
    /// polled now. Returns how many.
    pub(crate) fn abandon(&mut self, ticket: Ticket, after: &mut After<K>) -> usize {
        let mut occ = entry_of(&mut self.table, ticket.hash, ticket.entry, ticket.bucket);
        occ.get_mut().promised = false;
        fail_waiters(&mut self.slab, occ, NodeState::Abandoned, after)
    }

    /// Takes the value out (`remove`); waiting futures keep waiting.
    pub(crate) fn remove(
        &mut self,
        hash: u64,
        eq: impl FnMut(&K) -> bool,
        after: &mut After<K>,
    ) -> Option<V> {
        let mut eq = eq;
        let Ok(mut occ) = self.table.find_entry(hash, |e| eq(&e.key)) else {
            return None;
        };
        let value = occ.get_mut().value.take()?;
        self.len -= 1;
        if occ.get().is_empty() {
            after.key = Some(occ.remove().0.key);
        }
        Some(value)
    }

    /// Fails the futures waiting on the key that would not resolve if polled
    /// now; returns how many.
    pub(crate) fn cancel(
        &mut self,
        hash: u64,
        eq: impl FnMut(&K) -> bool,
        after: &mut After<K>,
    ) -> usize {
        let mut eq = eq;
        let Ok(occ) = self.table.find_entry(hash, |e| eq(&e.key)) else {
            return 0;
        };
        fail_waiters(&mut self.slab, occ, NodeState::Cancelled, after)
    }

    /// Closes the map and queues every waiting future; each resolves
    /// `Err(Closed)` on its next poll unless its key has a value for it.
    pub(crate) fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.slab.enqueue_all_waiting();
        }
    }

    /// The first poll's fast path, for `get` (a `take` registers at once):
    /// a clone of the key's value if it has one, an error if the map is
    /// closed, or a miss.
    #[inline]
    pub(crate) fn poll_hit<M: Mode<V>>(
        &mut self,
        hash: u64,
        mut eq: impl FnMut(&K) -> bool,
    ) -> Hit<V> {
        debug_assert!(M::KIND == Kind::Get, "a take never takes the fast path");
        let entry = match self.table.find_mut(hash, |e| eq(&e.key)) {
            Some(e) => match M::extract(&mut e.value) {
                Some(v) => return Hit::Ready(Ok(v)),
                None => true,
            },
            None => false,
        };
        if self.closed {
            Hit::Ready(Err(WaitError::Closed))
        } else {
            Hit::Miss { entry }
        }
    }

    /// Keeps the table at most half full before a waiter may create an
    /// entry. Waiting keys come and go (every request creates one and its
    /// response removes it); a table at most half full absorbs the tombstones
    /// they leave by rehashing in place, where a fuller one would grow. So
    /// once the table has grown for the peak number of keys, registering
    /// allocates nothing, whatever the hash seed.
    #[inline]
    fn reserve_for_waiter(&mut self) {
        let buckets = self.table.num_buckets();
        // hashbrown's usable capacity for that many buckets.
        let full = if buckets <= 8 {
            buckets.saturating_sub(1)
        } else {
            buckets / 8 * 7
        };
        let len = self.table.len();
        if 2 * (len + 1) > full {
            self.table.reserve(len + 2, entry_hash);
        }
    }

    /// One poll of a `get` or `take` future, under the lock.
    #[inline]
    pub(crate) fn poll<M: Mode<V>>(
        &mut self,
        phase: &mut Phase,
        hash: u64,
        eq: impl FnMut(&K) -> bool,
        cx_waker: &Waker,
        prep: &mut Prepared<K>,
        after: &mut After<K>,
    ) -> Step<V> {
        match *phase {
            Phase::Init => self.poll_first::<M>(phase, hash, eq, prep, after),
            Phase::Registered {
                slot,
                seq,
                entry,
                bucket,
                hash,
            } => self
                .poll_registered::<M>(phase, hash, slot, seq, entry, bucket, cx_waker, prep, after),
            Phase::Done => unreachable!("checked by the future"),
        }
    }

    #[inline]
    fn poll_first<M: Mode<V>>(
        &mut self,
        phase: &mut Phase,
        hash: u64,
        mut eq: impl FnMut(&K) -> bool,
        prep: &mut Prepared<K>,
        after: &mut After<K>,
    ) -> Step<V> {
        if prep.key.is_some() {
            self.reserve_for_waiter();
        }
        // One probe finds the entry or the place to insert it.
        let found = self.table.entry(hash, |e| eq(&e.key), entry_hash);
        match found {
            TableEntry::Occupied(mut occ) => {
                let e = occ.get_mut();
                if e.value.is_some() {
                    let v = M::extract(&mut e.value);
                    if M::KIND == Kind::Take {
                        self.len -= 1;
                        if occ.get().is_empty() {
                            after.key = Some(occ.remove().0.key);
                        }
                    }
                    return Step::Ready(v.ok_or(WaitError::Closed));
                }
                if self.closed {
                    return Step::Ready(Err(WaitError::Closed));
                }
                let Some(waker) = prep.waker.take() else {
                    return Step::Need { key: false };
                };
                let seq = fresh_id(&mut self.next_id);
                let slot = self.slab.alloc(seq, waker);
                let bucket = occ.bucket_index();
                let e = occ.into_mut();
                self.slab.push_back(e.list(M::KIND), slot);
                *phase = Phase::Registered {
                    slot,
                    seq,
                    entry: e.id,
                    bucket,
                    hash: e.hash,
                };
                Step::Pending
            }
            TableEntry::Vacant(vacant) => {
                if self.closed {
                    return Step::Ready(Err(WaitError::Closed));
                }
                let (Some(_), Some(_)) = (&prep.waker, &prep.key) else {
                    return Step::Need { key: true };
                };
                let (Some(waker), Some(key)) = (prep.waker.take(), prep.key.take()) else {
                    unreachable!("both checked above")
                };
                let id = fresh_id(&mut self.next_id);
                let seq = fresh_id(&mut self.next_id);
                let slot = self.slab.alloc(seq, waker);
                let mut entry = Entry::new(hash, id, key, None, false);
                self.slab.push_back(entry.list(M::KIND), slot);
                let bucket = vacant.insert(entry).bucket_index();
                *phase = Phase::Registered {
                    slot,
                    seq,
                    entry: id,
                    bucket,
                    hash,
                };
                if self.demand_watchers > 0 {
                    Step::Announce { entry: id }
                } else {
                    Step::Pending
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn poll_registered<M: Mode<V>>(
        &mut self,
        phase: &mut Phase,
        hash: u64,
        slot: u32,
        seq: u64,
        entry: u64,
        bucket: usize,
        cx_waker: &Waker,
        prep: &mut Prepared<K>,
        after: &mut After<K>,
    ) -> Step<V> {
        if let Some(err) = failure(self.slab.node(slot, seq).state()) {
            after.waker = self.slab.free(slot);
            *phase = Phase::Done;
            return Step::Ready(Err(err));
        }
        let mut occ = entry_of(&mut self.table, hash, entry, bucket);
        let e = occ.get_mut();
        let mine = match M::KIND {
            Kind::Get => e.value.is_some(),
            Kind::Take => e.value.is_some() && (e.baton == slot || e.baton == NIL),
        };
        if mine || self.closed {
            // `extract` may run user `Clone`: before any mutation.
            let v = if mine { M::extract(&mut e.value) } else { None };
            self.slab.unlink(e.list(M::KIND), slot);
            if M::KIND == Kind::Take {
                if mine {
                    self.len -= 1;
                }
                if e.baton == slot {
                    e.baton = NIL;
                }
            }
            after.waker = self.slab.free(slot);
            if occ.get().is_empty() {
                after.key = Some(occ.remove().0.key);
            }
            *phase = Phase::Done;
            return Step::Ready(v.ok_or(WaitError::Closed));
        }
        if M::KIND == Kind::Take && e.baton == slot {
            // Woken for a value that is gone again: wait on, still first in
            // line, and let the next insert hand the baton back.
            e.baton = NIL;
        }
        if self.slab.will_wake(slot, cx_waker) {
            return Step::Pending;
        }
        match prep.waker.take() {
            Some(w) => {
                after.waker = self.slab.replace_waker(slot, w);
                Step::Pending
            }
            None => Step::Need { key: false },
        }
    }

    /// One poll of a `get_or_promise` future: the key's value if it has
    /// one; else the promise if nobody holds it (the caller becomes the
    /// producer); else wait, registered as a `get`. A wait failed by an
    /// abandoned promise starts over, so one of the waiters inherits the
    /// work; one failed by `cancel` ends.
    pub(crate) fn poll_or_promise(
        &mut self,
        phase: &mut Phase,
        hash: u64,
        eq: impl FnMut(&K) -> bool,
        cx_waker: &Waker,
        prep: &mut Prepared<K>,
        after: &mut After<K>,
    ) -> CoStep<V>
    where
        V: Clone,
    {
        if let Phase::Registered {
            slot,
            seq,
            entry,
            bucket,
            hash: stored,
        } = *phase
        {
            let state = self.slab.node(slot, seq).state();
            if state.is_failed() {
                after.waker = self.slab.free(slot);
                if state == NodeState::Cancelled {
                    *phase = Phase::Done;
                    return CoStep::Failed(WaitError::Cancelled);
                }
                // Abandoned: start over, as a fresh call would, in a new
                // trip through the lock: the node freed here may have been
                // the last waiter, and `drained()` must hear of it even if
                // the `Eq` of the fresh probe panics.
                *phase = Phase::Init;
                return CoStep::Restart;
            } else {
                let mut occ = entry_of(&mut self.table, stored, entry, bucket);
                let e = occ.get_mut();
                if e.value.is_some() || self.closed {
                    let v = e.value.clone();
                    self.slab.unlink(&mut e.gets, slot);
                    after.waker = self.slab.free(slot);
                    if occ.get().is_empty() {
                        after.key = Some(occ.remove().0.key);
                    }
                    *phase = Phase::Done;
                    return match v {
                        Some(v) => CoStep::Value(v),
                        None => CoStep::Failed(WaitError::Closed),
                    };
                }
                if !e.promised {
                    // Woken for a value that is gone again (taken or
                    // removed), and nobody produces the key any more: this
                    // caller takes the work, as a fresh call would.
                    e.promised = true;
                    self.slab.unlink(&mut e.gets, slot);
                    after.waker = self.slab.free(slot);
                    *phase = Phase::Done;
                    return CoStep::Promise(Ticket {
                        hash: e.hash,
                        entry: e.id,
                        bucket: occ.bucket_index(),
                    });
                }
                if self.slab.will_wake(slot, cx_waker) {
                    return CoStep::Pending;
                }
                return match prep.waker.take() {
                    Some(w) => {
                        after.waker = self.slab.replace_waker(slot, w);
                        CoStep::Pending
                    }
                    None => CoStep::Need { key: false },
                };
            }
        }
        let mut eq = eq;
        if prep.key.is_some() {
            self.reserve_for_waiter();
        }
        match self.table.entry(hash, |e| eq(&e.key), entry_hash) {
            TableEntry::Occupied(mut occ) => {
                let bucket = occ.bucket_index();
                let e = occ.get_mut();
                if let Some(v) = e.value.clone() {
                    *phase = Phase::Done;
                    return CoStep::Value(v);
                }
                if self.closed {
                    *phase = Phase::Done;
                    return CoStep::Failed(WaitError::Closed);
                }
                if !e.promised {
                    e.promised = true;
                    *phase = Phase::Done;
                    return CoStep::Promise(Ticket {
                        hash: e.hash,
                        entry: e.id,
                        bucket,
                    });
                }
                let Some(waker) = prep.waker.take() else {
                    return CoStep::Need { key: false };
                };
                let seq = fresh_id(&mut self.next_id);
                let slot = self.slab.alloc(seq, waker);
                self.slab.push_back(&mut e.gets, slot);
                *phase = Phase::Registered {
                    slot,
                    seq,
                    entry: e.id,
                    bucket,
                    hash: e.hash,
                };
                CoStep::Pending
            }
            TableEntry::Vacant(vacant) => {
                if self.closed {
                    *phase = Phase::Done;
                    return CoStep::Failed(WaitError::Closed);
                }
                let Some(key) = prep.key.take() else {
                    return CoStep::Need { key: true };
                };
                let id = fresh_id(&mut self.next_id);
                let bucket = vacant
                    .insert(Entry::new(hash, id, key, None, true))
                    .bucket_index();
                *phase = Phase::Done;
                CoStep::Promise(Ticket {
                    hash,
                    entry: id,
                    bucket,
                })
            }
        }
    }

    /// Deregisters a dropped future. A `take` holding the baton passes it to
    /// the next waiting `take` if the value is still there (semantic 6).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn deregister(
        &mut self,
        kind: Kind,
        hash: u64,
        slot: u32,
        seq: u64,
        entry: u64,
        bucket: usize,
        after: &mut After<K>,
    ) {
        if self.slab.node(slot, seq).state() == NodeState::Waiting {
            let mut occ = entry_of(&mut self.table, hash, entry, bucket);
            let e = occ.get_mut();
            self.slab.unlink(e.list(kind), slot);
            if e.baton == slot {
                e.baton = NIL;
                if e.value.is_some() && !e.takes.is_empty() {
                    e.baton = e.takes.head;
                    self.slab.enqueue(e.baton);
                }
            }
            if e.is_empty() {
                after.key = Some(occ.remove().0.key);
            }
        }
        after.waker = self.slab.free(slot);
    }
}

/// The hash hashbrown rehashes by: the stored one. One named function, so
/// every call site shares one copy of hashbrown's resize code (a closure per
/// call site would make one copy each, about 0.5 KB of flash apiece).
fn entry_hash<K, V>(e: &Entry<K, V>) -> u64 {
    e.hash
}

/// Stores `value` in an existing entry, then queues the wake-ups it is due:
/// every waiting `get` and, unless one holds it already, the earliest
/// waiting `take`. Returns the replaced value.
#[inline]
fn store<K, V>(slab: &mut Slab, len: &mut usize, e: &mut Entry<K, V>, value: V) -> Option<V> {
    let old = e.value.replace(value);
    if old.is_none() {
        *len += 1;
    }
    let mut slot = e.gets.head;
    while slot != NIL {
        slab.enqueue(slot);
        slot = slab.next_of(slot);
    }
    if e.baton == NIL && !e.takes.is_empty() {
        e.baton = e.takes.head;
        slab.enqueue(e.baton);
    }
    old
}

/// Fails (`how`: `Cancelled` or `Abandoned`) the futures waiting on an entry
/// that would not resolve if polled now, queues their wake-ups, and removes
/// the entry if that leaves it empty. Returns how many.
fn fail_waiters<K, V>(
    slab: &mut Slab,
    mut occ: OccupiedEntry<'_, Entry<K, V>>,
    how: NodeState,
    after: &mut After<K>,
) -> usize {
    let e = occ.get_mut();
    let mut count = 0;
    // With a value present every waiting `get` resolves when polled, and
    // so does the `take` holding the baton: those are left alone.
    if e.value.is_none() {
        while e.gets.head != NIL {
            let slot = e.gets.head;
            slab.unlink(&mut e.gets, slot);
            slab.set_failed(slot, how);
            slab.enqueue(slot);
            count += 1;
        }
    }
    let keep = if e.value.is_some() { e.baton } else { NIL };
    let mut slot = e.takes.head;
    while slot != NIL {
        let next = slab.next_of(slot);
        if slot != keep {
            slab.unlink(&mut e.takes, slot);
            slab.set_failed(slot, how);
            slab.enqueue(slot);
            count += 1;
        }
        slot = next;
    }
    e.baton = keep;
    if e.is_empty() {
        after.key = Some(occ.remove().0.key);
    }
    count
}

/// Whether the entry `(hash, id)` has waiters, no value and no promise.
fn wanted_in<K, V>(table: &HashTable<Entry<K, V>>, hash: u64, id: u64) -> bool {
    table
        .find(hash, |e| e.hash == hash && e.id == id)
        .is_some_and(|e| {
            e.value.is_none() && !e.promised && !(e.gets.is_empty() && e.takes.is_empty())
        })
}

/// The error a failed node's future resolves with.
#[inline]
fn failure(state: NodeState) -> Option<WaitError> {
    match state {
        NodeState::Cancelled => Some(WaitError::Cancelled),
        NodeState::Abandoned => Some(WaitError::Abandoned),
        _ => None,
    }
}

/// The next entry id or registration sequence number: one 64-bit counter for
/// both, so neither is ever reused. A free function, so it can be called
/// while a table entry is borrowed.
#[inline]
fn fresh_id(next_id: &mut u64) -> u64 {
    let id = *next_id;
    *next_id += 1;
    id
}

/// The entry a registered future waits on, found without user code: at the
/// bucket where it registered if it is still there, else by its hash and id.
/// A `Waiting` node's entry always exists.
#[inline]
fn entry_of<K, V>(
    table: &mut HashTable<Entry<K, V>>,
    hash: u64,
    id: u64,
    bucket: usize,
) -> OccupiedEntry<'_, Entry<K, V>> {
    let index = if table.get_bucket(bucket).is_some_and(|e| e.id == id) {
        Some(bucket)
    } else {
        table.find_bucket_index(hash, |e| e.hash == hash && e.id == id)
    };
    index
        .and_then(|i| table.get_bucket_entry(i).ok())
        .expect("awaitmap: a waiting future's entry is missing (internal invariant broken)")
}

// ===== invariant checks (tests and debugging) =====

impl<K, V> State<K, V> {
    /// Verifies every invariant the entries and the waiter slab document
    /// (see the top of `waiters.rs` and the fields of [`Entry`]); calls no
    /// user code. `Err` says which one broke.
    pub(crate) fn check_invariants(&self) -> Result<(), alloc::string::String> {
        use alloc::format;
        let facts = self.slab.check()?;
        let slots = self.slab.slots();
        // Which list, if any, each node was found in.
        let mut listed = alloc::vec![false; slots];
        let mut ids = alloc::vec::Vec::with_capacity(self.table.len());
        let mut values = 0;
        let due = |slot: u32| {
            let (_, has_waker, _) = self.slab.peek(slot);
            !has_waker || facts.queued[slot as usize]
        };
        for e in self.table.iter() {
            if e.is_empty() {
                return Err(format!("entry {} has no value, waiter or promise", e.id));
            }
            if e.id >= self.next_id {
                return Err(format!("entry id {} was never handed out", e.id));
            }
            ids.push(e.id);
            if e.value.is_some() {
                values += 1;
            }
            for (kind, list) in [(Kind::Get, &e.gets), (Kind::Take, &e.takes)] {
                for slot in self.slab.check_list(list)? {
                    let (state, _, seq) = self.slab.peek(slot);
                    if state != NodeState::Waiting {
                        return Err(format!(
                            "{kind:?} list of entry {} holds a {state:?} node",
                            e.id
                        ));
                    }
                    if seq >= self.next_id {
                        return Err(format!(
                            "slot {slot} has a sequence number never handed out"
                        ));
                    }
                    if core::mem::replace(&mut listed[slot as usize], true) {
                        return Err(format!("slot {slot} is in two lists"));
                    }
                    // A value or a close is due to every waiting `get`: its
                    // waker has run or is queued.
                    if (kind == Kind::Get && e.value.is_some() || self.closed) && !due(slot) {
                        return Err(format!(
                            "{kind:?} slot {slot} of entry {} missed its wake-up",
                            e.id
                        ));
                    }
                }
            }
            if e.baton != NIL {
                if e.baton != e.takes.head {
                    return Err(format!(
                        "entry {}'s hand-off is at {}, not the first take {}",
                        e.id, e.baton, e.takes.head
                    ));
                }
                if !due(e.baton) {
                    return Err(format!(
                        "the take holding entry {}'s hand-off was never woken",
                        e.id
                    ));
                }
            } else if e.value.is_some() && !e.takes.is_empty() {
                return Err(format!(
                    "entry {} has a value and waiting takes but nobody holds the hand-off",
                    e.id
                ));
            }
        }
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err("two entries share an id".into());
        }
        if values != self.len {
            return Err(format!(
                "len is {} but {values} entries hold a value",
                self.len
            ));
        }
        for slot in 0..slots as u32 {
            let (state, _, _) = self.slab.peek(slot);
            match state {
                NodeState::Waiting if !listed[slot as usize] => {
                    return Err(format!("waiting slot {slot} is in no list"));
                }
                s if s.is_failed() && !due(slot) => {
                    return Err(format!("{s:?} slot {slot} was never woken to learn it"));
                }
                _ => {}
            }
        }
        if self.demand_watchers == 0 && !self.wanted.is_empty() {
            return Err(format!(
                "{} keys are queued for demand nobody watches",
                self.wanted.len()
            ));
        }
        if let Some(&(_, id, _)) = self.wanted.iter().find(|w| w.1 >= self.next_id) {
            return Err(format!(
                "the demand queue names entry {id}, never handed out"
            ));
        }
        Ok(())
    }
}
