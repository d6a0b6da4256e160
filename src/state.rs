//! The map's state under the lock: the table of entries, the slab of
//! overflow waiters, and the producer side's bookkeeping.
//!
//! Everything here runs with the lock held, so nothing here calls user code
//! but a key's `Eq` (through the `eq` closures) and a value's `Clone`
//! (through a waiter's mode). Those run before any change, so a panic in them
//! leaves the state as it was. Keys, values and wakers that leave the map go
//! out through [`After`], to be dropped after the lock is released; wakers
//! that are due go out the same way, to be woken first.
//!
//! Invariants of an entry (besides those of `slab.rs`):
//! - An entry exists while it has a value, a waiter (waiting or failed, in
//!   the entry or in the slab) or a promise, and no longer.
//! - `inline` is the entry's own waiter slot. A `get` may use it whenever it
//!   is free; a `take` only while no other take waits (the takes are served
//!   in the order they registered, so an inline take is always the first).
//! - `slot` holds the value, or the inline waiter's waker, or nothing. The
//!   inline waiter never needs a stored waker while there is a value (it
//!   would resolve instead), so both share the space; storing a value takes
//!   the inline waker out, to be woken.
//! - `handoff`: the first take (the inline one if it is a take, else the
//!   head of `takes`) was woken for the current value and will poll for
//!   it; until it does (or leaves, passing it on), no other waiting take
//!   takes the value. While there is a value and a take waits, `handoff` is
//!   set.
//! - While there is a value, every waiting `get` has been woken or is
//!   queued; after `close`, every waiting future has been woken, is queued,
//!   or (in an entry) is still ahead of `close`'s sweep.

use core::mem;
use core::task::Waker;

use alloc::collections::VecDeque;

use hashbrown::HashTable;
use hashbrown::hash_table::OccupiedEntry;

use crate::after::After;
use crate::slab::{NIL, NodeState, Slab};
use crate::state::waiter::{EntryRef, INLINE, Kind};
use crate::sync::PRODUCER;

// The producer side's bookkeeping: only where the producer side exists.
#[cfg(all(feature = "producer", target_has_atomic = "ptr"))]
mod producer;
// One key's record, and where its waiters are stored.
mod entry;
// The invariant checker.
mod invariants;
// The life of a waiting future, under the lock and around it.
pub(crate) mod waiter;

use entry::Leftover;
pub(crate) use entry::{
    ANNOUNCED, DEMAND_BITS, Entry, HANDOFF, ID_SHIFT, INLINE_BITS, Inline, PROMISED, Slot,
    inline_of, leave, nudge, nudge_woken, register, store_inline_waker, store_waker,
};

/// A failed inline waiter whose entry is gone: its future has yet to learn
/// the failure. `cancel` or an abandoned promise failed the entry's only
/// waiter, the inline one; the entry (and its key) went at once, as with no
/// waiter left, and the failure waits here for the future, which finds it
/// by the entry's hash and id when its entry is missing.
pub(crate) struct Ghost {
    hash: u64,
    id: u64,
    failure: Failure,
}

/// Removes an entry from the table. When that leaves the table empty, it
/// gets back the room removals took ([`renew_if_worn`]): keys that come and
/// go in rounds never make it grow after their first round.
#[inline]
pub(crate) fn remove_entry<K, V>(occ: OccupiedEntry<'_, Entry<K, V>>) -> Entry<K, V> {
    let (e, vacant) = occ.remove();
    renew_if_worn(vacant.into_table());
    e
}

/// Gives an emptied `table` back all its room. Removals leave tombstones
/// that count against the room for new entries until the table next grows
/// or rehashes, so a workload that fills and empties the table again and
/// again (RPC calls in flight) would, with an unlucky hasher seed, make it
/// allocate a larger one with the same number of keys. An empty table has
/// nothing to rehash: resetting its control bytes costs one pass, and only
/// when removals wore it. (`HashTable::clear` skips an empty table; the end
/// of a `drain` resets it.)
#[inline]
pub(crate) fn renew_if_worn<T>(table: &mut HashTable<T>) {
    if table.is_empty() && table.capacity() < full_capacity(table.num_buckets()) {
        renew(table);
    }
}

#[cold]
#[inline(never)]
fn renew<T>(table: &mut HashTable<T>) {
    drop(table.drain());
}

/// The hash the ghost table rehashes by.
fn ghost_hash(g: &Ghost) -> u64 {
    g.hash
}

/// Ends a `retain`, even one whose predicate panicked: the entries it
/// left with nothing in them go (a failed inline waiter's as a ghost), their
/// keys to be dropped with the lock released.
struct Tidy<'a, K, V> {
    st: &'a mut State<K, V>,
    keys: &'a mut alloc::vec::Vec<K>,
}

impl<K, V> Drop for Tidy<'_, K, V> {
    fn drop(&mut self) {
        let st = &mut *self.st;
        for e in st.table.extract_if(|e| e.leftover() != Leftover::Keep) {
            if e.leftover() == Leftover::Ghost {
                let failure = e.inline_failure().expect("a ghost's waiter failed");
                let (hash, id) = (e.hash, e.id());
                st.ghosts
                    .insert_unique(hash, Ghost { hash, id, failure }, ghost_hash);
            }
            self.keys.push(e.key);
        }
        renew_if_worn(&mut st.table);
    }
}

/// Stores `value` in an entry whose only waiter, if any, is its inline
/// one; returns the value it replaced and the inline waiter's waker, due.
#[inline(always)]
fn store_inline<K, V>(
    e: &mut Entry<K, V>,
    len: &mut usize,
    value: V,
) -> (Option<V>, Option<Waker>) {
    let (old, waker) = match mem::replace(&mut e.slot, Slot::Value(value)) {
        Slot::Value(old) => (Some(old), None),
        Slot::Waker(w) => (None, Some(w)),
        Slot::Empty => (None, None),
    };
    if old.is_none() {
        *len += 1;
        e.served();
        if e.inline() == Inline::Take {
            // The inline take is the first in line: the value is its.
            e.set_handoff(true);
        }
    }
    (old, waker)
}

/// What [`State::deliver_fast`] did with a value.
pub(crate) enum Delivery<V> {
    /// Stored: the value it replaced, and the inline waiter's waker, due.
    Stored(Option<V>, Option<Waker>),
    /// Nobody waits for the key: handed back.
    Refused(V),
    /// The key has waiters beyond its inline one: the general path.
    General(V),
}

/// Stores `value` in `e`, then queues the wake-ups it is due: every
/// waiting `get` and, unless it holds the hand-off already, the first
/// waiting `take`. The inline waiter's waker (it is one of those) goes
/// straight to `after`. Returns the replaced value.
#[inline(always)]
fn store<K, V>(
    e: &mut Entry<K, V>,
    slab: &mut Slab,
    len: &mut usize,
    value: V,
    after: &mut After<K>,
) -> Option<V> {
    let old = match mem::replace(&mut e.slot, Slot::Value(value)) {
        Slot::Value(old) => Some(old),
        // The gets first, in the order they registered, then the take.
        Slot::Waker(w) if e.inline() == Inline::Get => {
            after.wake(w);
            None
        }
        Slot::Waker(w) => {
            after.wake_last(w);
            None
        }
        Slot::Empty => None,
    };
    if old.is_none() {
        *len += 1;
        e.served();
    }
    if e.gets != NIL {
        slab.enqueue_list(e.gets);
    }
    if !e.handoff() {
        let first = e.first_take();
        if first != NIL {
            e.set_handoff(true);
            if first != INLINE {
                slab.enqueue(first);
            }
        }
    }
    old
}

/// After a change to the entry `occ`: removes it if nothing keeps it any
/// more; makes it a ghost if only a failed inline waiter does (the key goes
/// now, as it would with the entry, and no lookup by key finds the entry
/// again). Its key leaves through `after`.
#[inline]
pub(crate) fn settle<K, V>(
    occ: OccupiedEntry<'_, Entry<K, V>>,
    ghosts: &mut HashTable<Ghost>,
    after: &mut After<K>,
) {
    let leftover = occ.get().leftover();
    if leftover == Leftover::Keep {
        return;
    }
    let e = remove_entry(occ);
    if leftover == Leftover::Ghost {
        let failure = e.inline_failure().expect("a ghost's waiter failed");
        let (hash, id) = (e.hash, e.id());
        ghosts.insert_unique(hash, Ghost { hash, id, failure }, ghost_hash);
    }
    after.drop_key(Some(e.key));
}

/// `close`'s sweep through the table, waking the waiters stored in entries
/// (more of them may be due than one batch holds).
#[derive(Clone, Copy)]
struct Sweep {
    /// The next bucket to look at; `usize::MAX` when there is no sweep.
    next: usize,
    /// `State::moves` when the sweep (re)started: if entries may have moved
    /// since, it starts over (entries already woken are passed quickly).
    moves: u32,
}

/// Who watches the map's conditions: the producer side's counters, read by
/// the core through methods that say "nobody" in a build without the
/// producer side, so the code that serves watchers is not linked there.
pub(crate) struct Watchers {
    /// `drained()` futures waiting for the last waiter to finish.
    idle: usize,
    /// Live `Demand` handles; while there are any, newly wanted keys are
    /// queued in `State::wanted`.
    demand: usize,
}

impl Watchers {
    #[inline]
    fn idle(&self) -> usize {
        if PRODUCER { self.idle } else { 0 }
    }

    #[inline]
    fn demand(&self) -> usize {
        if PRODUCER { self.demand } else { 0 }
    }
}

pub(crate) struct State<K, V> {
    table: HashTable<Entry<K, V>>,
    slab: Slab,
    /// Entries with a value.
    len: usize,
    /// Inline waiters owned by futures (waiting or failed, ghosts included).
    inline_live: usize,
    /// Failed inline waiters whose entries are gone (see [`Ghost`]).
    ghosts: HashTable<Ghost>,
    next_id: u64,
    closed: bool,
    sweep: Sweep,
    /// Counts the table operations that may move entries between buckets.
    moves: u32,
    /// `drained()` futures and `Demand` handles.
    watchers: Watchers,
    /// Announced keys: `(hash, entry id, key)`.
    wanted: VecDeque<(u64, u64, K)>,
}

/// The hash hashbrown rehashes by: the stored one. One named function, so
/// every call site shares one copy of hashbrown's resize code.
pub(crate) fn entry_hash<K, V>(e: &Entry<K, V>) -> u64 {
    e.hash
}

impl<K, V> State<K, V> {
    pub(crate) const fn new() -> Self {
        State {
            table: HashTable::new(),
            slab: Slab::new(),
            len: 0,
            inline_live: 0,
            ghosts: HashTable::new(),
            next_id: 0,
            closed: false,
            sweep: Sweep {
                next: usize::MAX,
                moves: 0,
            },
            moves: 0,
            watchers: Watchers { idle: 0, demand: 0 },
            wanted: VecDeque::new(),
        }
    }

    pub(crate) fn with_capacity(n: usize) -> Self {
        State {
            table: HashTable::with_capacity(n),
            ..Self::new()
        }
    }

    // ===== sizes and counts =====

    /// Room for `keys` more keys (with a value or with waiters) and
    /// `waiters` more waiting futures, so that none of them allocates.
    pub(crate) fn reserve(&mut self, keys: usize, waiters: usize) {
        if keys > 0 {
            self.moves = self.moves.wrapping_add(1);
            self.table.reserve(keys, entry_hash);
        }
        // Waiters beyond one per key live in the slab; the first of each key
        // is in its entry, which `keys` covers, but a waiter may also join a
        // key whose entry has its slot taken: room for all of them.
        self.slab.reserve(waiters);
    }

    /// Gives back the memory the table and the slab hold beyond what they
    /// use now.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.moves = self.moves.wrapping_add(1);
        self.table.shrink_to_fit(entry_hash);
        self.ghosts.shrink_to_fit(ghost_hash);
        self.slab.shrink_to_fit();
        self.wanted.shrink_to_fit();
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The number of registered futures (see `AwaitMap::waiters`).
    #[inline]
    pub(crate) fn live(&self) -> usize {
        self.inline_live + self.slab.live()
    }

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether the last waiter is gone and a `drained()` future waits for
    /// that.
    #[inline]
    pub(crate) fn idle_now(&self) -> bool {
        self.watchers.idle() > 0 && self.live() == 0
    }

    // ===== finding entries =====

    /// The bucket of the entry `r` names, found without user code: at its
    /// bucket hint if it is still there, else by its hash and id. The entry
    /// of a registered future or a live promise always exists.
    #[inline]
    pub(crate) fn bucket_of(&self, r: &mut EntryRef) -> usize {
        let hint = r.bucket();
        if self
            .table
            .get_bucket(hint)
            .is_some_and(|e| e.id() == r.id())
        {
            return hint;
        }
        let (hash, id) = (r.hash(), r.id());
        let found = self
            .table
            .find_bucket_index(hash, |e| e.hash == hash && e.id() == id)
            .expect("awaitmap: a waiting future's entry is missing (internal invariant broken)");
        r.set_bucket(found);
        found
    }

    #[inline]
    pub(crate) fn at(&mut self, bucket: usize) -> &mut Entry<K, V> {
        self.table
            .get_bucket_mut(bucket)
            .expect("awaitmap: an entry's bucket is empty (internal invariant broken)")
    }

    /// Removes the entry at `bucket` if nothing keeps it any more; its key
    /// leaves through `after`.
    /// After a change to the entry at `bucket`: removes it if nothing keeps
    /// it any more; makes it a ghost if only a failed inline waiter does
    /// (the key goes now, as it would with the entry, and no lookup by key
    /// finds the entry again). Its key leaves through `after`.
    #[inline]
    pub(crate) fn settle(&mut self, bucket: usize, after: &mut After<K>) {
        let Ok(occ) = self.table.get_bucket_entry(bucket) else {
            unreachable!("the entry was just seen");
        };
        settle(occ, &mut self.ghosts, after);
    }

    /// The bucket of the entry `r` names (see [`bucket_of`](Self::bucket_of));
    /// or, if it is gone, the failure its inline waiter left as a ghost, which
    /// goes now that its future learns it.
    pub(crate) fn bucket_or_ghost(&mut self, r: &mut EntryRef) -> Result<usize, Failure> {
        let hint = r.bucket();
        if self
            .table
            .get_bucket(hint)
            .is_some_and(|e| e.id() == r.id())
        {
            return Ok(hint);
        }
        let (hash, id) = (r.hash(), r.id());
        if let Some(found) = self
            .table
            .find_bucket_index(hash, |e| e.hash == hash && e.id() == id)
        {
            r.set_bucket(found);
            return Ok(found);
        }
        let Ok(ghost) = self
            .ghosts
            .find_entry(hash, |g| g.hash == hash && g.id == id)
        else {
            unreachable!(
                "awaitmap: a waiting future's entry is missing (internal invariant broken)"
            );
        };
        let (ghost, vacant) = ghost.remove();
        renew_if_worn(vacant.into_table());
        Err(ghost.failure)
    }

    // ===== waiters: where they are stored =====

    /// How the slab node `slot` failed, if it did.
    #[inline]
    pub(crate) fn node_failure(&self, slot: u32) -> Option<Failure> {
        match self.slab.state(slot) {
            NodeState::Cancelled => Some(Failure::Cancelled),
            NodeState::Abandoned => Some(Failure::Abandoned),
            _ => None,
        }
    }

    /// Frees a failed slab node (in no list); returns its waker.
    #[inline]
    pub(crate) fn free_node(&mut self, slot: u32) -> Option<Waker> {
        self.slab.free(slot)
    }

    /// Notes that the next call may insert into the table, and so, if it is
    /// full, move every entry (hashbrown grows or rehashes in place).
    #[inline]
    fn may_move(&mut self) {
        if self.table.len() == self.table.capacity() {
            self.moves = self.moves.wrapping_add(1);
        }
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    // ===== the producer side =====

    /// A clone of the key's value (`try_get`).
    #[inline]
    pub(crate) fn get_cloned(
        &self,
        hash: u64,
        mut eq: impl FnMut(&K) -> bool,
        clone: impl FnOnce(&V) -> V,
    ) -> Option<V> {
        self.table
            .find(hash, |e| e.is(&mut eq))
            .and_then(Entry::value)
            .map(clone)
    }

    /// Whether the key has a value.
    pub(crate) fn contains(&self, hash: u64, mut eq: impl FnMut(&K) -> bool) -> bool {
        self.table
            .find(hash, |e| e.is(&mut eq))
            .is_some_and(Entry::has_value)
    }

    /// The fast path of a `deliver`: as [`insert_fast`](Self::insert_fast)
    /// for a key whose only waiter is its inline one; a key that nobody
    /// waits for refuses the value; anything else goes the general way.
    #[inline(always)]
    pub(crate) fn deliver_fast(
        &mut self,
        hash: u64,
        mut eq: impl FnMut(&K) -> bool,
        value: V,
    ) -> Delivery<V> {
        let Some(e) = self.table.find_mut(hash, |e| e.is(&mut eq)) else {
            return Delivery::Refused(value);
        };
        if e.gets != NIL || e.takes != NIL {
            return Delivery::General(value);
        }
        if !e.awaited() {
            return Delivery::Refused(value);
        }
        let (old, waker) = store_inline(e, &mut self.len, value);
        Delivery::Stored(old, waker)
    }

    /// The fast path of an insert, for the common case: the key has an
    /// entry whose only waiter, if any, is its inline one. Stores the value
    /// and returns the value it replaced and the inline waiter's waker, due
    /// now. Anything else hands the value back, with nothing changed, for
    /// the general path.
    #[inline(always)]
    pub(crate) fn insert_fast(
        &mut self,
        hash: u64,
        mut eq: impl FnMut(&K) -> bool,
        value: V,
    ) -> Result<(Option<V>, Option<Waker>), V> {
        let Some(e) = self.table.find_mut(hash, |e| e.is(&mut eq)) else {
            return Err(value);
        };
        if e.gets != NIL || e.takes != NIL {
            return Err(value);
        }
        Ok(store_inline(e, &mut self.len, value))
    }

    /// Stores `value` if `allowed(the key has a value)`, then queues the
    /// wake-ups it is due (see [`store`]). `Some(replaced value)` if it
    /// stored; `None` (key and value left in their options) if not. The key
    /// is kept by a new entry; with an existing entry it stays in `key`. Key
    /// and value are taken from their options only after the last `eq`
    /// call, so a panicking `Eq` drops neither under the lock.
    #[inline(always)]
    pub(crate) fn insert_if(
        &mut self,
        hash: u64,
        key: &mut Option<K>,
        value: &mut Option<V>,
        mut eq: impl FnMut(&K, &K) -> bool,
        allowed: impl FnOnce(Option<&Entry<K, V>>) -> bool,
        after: &mut After<K>,
    ) -> Option<Option<V>> {
        let probe = key.as_ref().expect("insert without a key");
        if let Some(e) = self.table.find_mut(hash, |e| e.is(|k| eq(probe, k))) {
            if !allowed(Some(e)) {
                return None;
            }
            let value = value.take().expect("insert without a value");
            return Some(store(e, &mut self.slab, &mut self.len, value, after));
        }
        if !allowed(None) {
            return None;
        }
        let id = self.fresh_id();
        let key = key.take().expect("insert without a key");
        let value = value.take().expect("insert without a value");
        self.may_move();
        self.table.insert_unique(
            hash,
            Entry::new(hash, id, key, Slot::Value(value)),
            entry_hash,
        );
        self.len += 1;
        Some(None)
    }

    /// Takes the value out (`remove`); waiting futures keep waiting. Also
    /// returns the key of the entry if that removed it (or made it a ghost),
    /// to be dropped after the lock is released. Wakes nobody.
    #[inline(always)]
    pub(crate) fn remove(
        &mut self,
        hash: u64,
        mut eq: impl FnMut(&K) -> bool,
    ) -> (Option<V>, Option<K>) {
        let Ok(occ) = self.table.find_entry(hash, |e| e.is(&mut eq)) else {
            return (None, None);
        };
        let e = occ.get();
        if !e.has_value() {
            return (None, None);
        }
        self.len -= 1;
        if e.meta & (INLINE_BITS | PROMISED) != 0 || e.gets != NIL || e.takes != NIL {
            return Self::remove_kept(occ, &mut self.ghosts, self.watchers.demand());
        }
        // Nothing but the value keeps the entry: it goes with it.
        let (e, vacant) = occ.remove();
        renew_if_worn(vacant.into_table());
        let Slot::Value(value) = e.slot else {
            unreachable!("checked above");
        };
        (Some(value), Some(e.key))
    }

    /// Takes out every value that `keep` rejects, as `remove` would each
    /// (waiting futures keep waiting); the values go to `values`, the keys
    /// of entries that nothing keeps any more to `keys`, all to be dropped
    /// with the lock released. `keep` is user code run under the lock: if
    /// it panics, the values taken out so far stay taken and the entries
    /// they leave empty still go (see [`Tidy`]).
    pub(crate) fn retain(
        &mut self,
        mut keep: impl FnMut(&K, &mut V) -> bool,
        values: &mut alloc::vec::Vec<V>,
        keys: &mut alloc::vec::Vec<K>,
    ) {
        let tidy = Tidy { st: self, keys };
        for e in tidy.st.table.iter_mut() {
            if let Slot::Value(v) = &mut e.slot {
                if !keep(&e.key, v) {
                    values.extend(e.take_value());
                    nudge_woken(e, tidy.st.watchers.demand());
                    tidy.st.len -= 1;
                }
            }
        }
    }

    /// Calls `f` with each key that has a value, and the value.
    pub(crate) fn for_each_value(&self, mut f: impl FnMut(&K, &V)) {
        for e in &self.table {
            if let Some(v) = e.value() {
                f(&e.key, v);
            }
        }
    }

    /// Calls `f` with each key that futures wait on, and how many `get`s
    /// (with `get_or_promise`s) and `take`s wait (failed ones not counted).
    pub(crate) fn for_each_awaited(&self, mut f: impl FnMut(&K, usize, usize)) {
        for e in &self.table {
            let (mut gets, mut takes) = (self.slab.count(e.gets), self.slab.count(e.takes));
            match e.inline() {
                Inline::Get => gets += 1,
                Inline::Take => takes += 1,
                _ => {}
            }
            if gets + takes > 0 {
                f(&e.key, gets, takes);
            }
        }
    }

    /// `remove` of a value from an entry that waiters (woken or not) or a
    /// promise may keep.
    #[inline(never)]
    fn remove_kept(
        mut occ: OccupiedEntry<'_, Entry<K, V>>,
        ghosts: &mut HashTable<Ghost>,
        watchers: usize,
    ) -> (Option<V>, Option<K>) {
        let value = occ.get_mut().take_value();
        nudge_woken(occ.get_mut(), watchers);
        let mut after = After::new();
        settle(occ, ghosts, &mut after);
        (value, after.into_key())
    }

    /// Fails the futures waiting on the key that would not resolve if polled
    /// now; returns how many.
    pub(crate) fn cancel(
        &mut self,
        hash: u64,
        mut eq: impl FnMut(&K) -> bool,
        after: &mut After<K>,
    ) -> usize {
        match self.table.find_bucket_index(hash, |e| e.is(&mut eq)) {
            Some(bucket) => self.fail_waiters(bucket, Failure::Cancelled, after),
            None => 0,
        }
    }

    /// Fails (with `how`) the futures waiting on the entry at `bucket` that
    /// would not resolve if polled now, queues their wake-ups, and removes
    /// the entry if that leaves it empty. With a value, every waiting `get`
    /// resolves when polled, and so does the take holding the hand-off:
    /// those are left alone. Returns how many failed.
    fn fail_waiters(&mut self, bucket: usize, how: Failure, after: &mut After<K>) -> usize {
        let (slab, inline_how) = match how {
            Failure::Cancelled => (NodeState::Cancelled, Inline::Cancelled),
            Failure::Abandoned => (NodeState::Abandoned, Inline::Abandoned),
        };
        let e = self
            .table
            .get_bucket_mut(bucket)
            .expect("awaitmap: an entry's bucket is empty (internal invariant broken)");
        let has_value = e.has_value();
        let keep = if has_value && e.handoff() {
            e.first_take()
        } else {
            NIL
        };
        let mut count = 0;
        let inline_fails = match e.inline() {
            Inline::Get => !has_value,
            Inline::Take => keep != INLINE,
            _ => false,
        };
        if inline_fails {
            let was_take = e.inline() == Inline::Take;
            e.set_inline(inline_how);
            if let Slot::Waker(w) = mem::replace(&mut e.slot, Slot::Empty) {
                // The gets first, in the order they registered, then the
                // takes.
                if was_take {
                    after.wake_last(w);
                } else {
                    after.wake(w);
                }
            }
            count += 1;
        }
        if !has_value {
            count += self.slab.fail_all(&mut e.gets, slab, NIL);
        }
        count += self.slab.fail_all(&mut e.takes, slab, keep);
        e.set_handoff(keep != NIL);
        self.settle(bucket, after);
        count
    }

    /// Closes the map and starts waking every waiting future; each resolves
    /// `Err(Closed)` on its next poll unless its key has a value for it.
    pub(crate) fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.slab.enqueue_all();
            self.sweep = Sweep {
                next: 0,
                moves: self.moves,
            };
        }
    }

    /// Stores `value` unless the key has one (a `take` putting back a value
    /// it could not return); otherwise key and value stay in their options.
    pub(crate) fn insert_absent(
        &mut self,
        hash: u64,
        key: &mut Option<K>,
        value: &mut Option<V>,
        eq: impl FnMut(&K, &K) -> bool,
        after: &mut After<K>,
    ) {
        self.insert_if(
            hash,
            key,
            value,
            eq,
            |e| !e.is_some_and(Entry::has_value),
            after,
        );
    }

    /// Reserves an absent key for a promise: the entry is created (taking
    /// `key`) or marked promised. `None` if the key has a value or a
    /// promise, or the map is closed. The key is taken only after the last
    /// `eq` call.
    pub(crate) fn promise(
        &mut self,
        hash: u64,
        key: &mut Option<K>,
        mut eq: impl FnMut(&K, &K) -> bool,
    ) -> Option<EntryRef> {
        if self.closed {
            return None;
        }
        let probe = key.as_ref().expect("promise without a key");
        if let Some(bucket) = self
            .table
            .find_bucket_index(hash, |e| e.is(|k| eq(probe, k)))
        {
            let e = self.at(bucket);
            if e.has_value() || e.promised() {
                return None;
            }
            e.set_promised(true);
            return Some(e.entry_ref(bucket));
        }
        let key = key.take().expect("promise without a key");
        Some(self.create(hash, key, Slot::Empty, true))
    }

    /// A new entry for `key`, with no waiter yet; returns where it is.
    fn create(&mut self, hash: u64, key: K, slot: Slot<V>, promised: bool) -> EntryRef {
        let id = self.fresh_id();
        let mut e = Entry::new(hash, id, key, slot);
        e.set_promised(promised);
        self.may_move();
        let bucket = self.table.insert_unique(hash, e, entry_hash).bucket_index();
        EntryRef::new(hash, id, bucket)
    }

    /// The announcement of the entry `r` names was never made (the key's
    /// copy panicked): its wanted spell is unannounced again.
    pub(crate) fn unannounce(&mut self, r: EntryRef) {
        let (hash, id) = (r.hash(), r.id());
        if let Some(e) = self
            .table
            .find_mut(hash, |e| e.hash == hash && e.id() == id)
        {
            e.meta &= !ANNOUNCED;
        }
    }

    /// Fulfils a promise: stores the value (as `insert` does) and releases
    /// the reservation. Returns the value it replaced (a plain `insert` may
    /// have stored one meanwhile).
    pub(crate) fn fulfill(&mut self, mut r: EntryRef, value: V, after: &mut After<K>) -> Option<V> {
        let bucket = self.bucket_of(&mut r);
        let e = self
            .table
            .get_bucket_mut(bucket)
            .expect("awaitmap: an entry's bucket is empty (internal invariant broken)");
        e.set_promised(false);
        store(e, &mut self.slab, &mut self.len, value, after)
    }

    /// A promise dropped unfulfilled: releases the reservation and fails,
    /// with `Abandoned`, the futures on the key that would not resolve if
    /// polled now. Returns how many.
    pub(crate) fn abandon(&mut self, mut r: EntryRef, after: &mut After<K>) -> usize {
        let bucket = self.bucket_of(&mut r);
        self.at(bucket).set_promised(false);
        self.fail_waiters(bucket, Failure::Abandoned, after)
    }

    // ===== demand =====

    /// Queues an announced key for the `Demand` handles, if any is left
    /// (else `key` stays in its option). When the queue has grown well past
    /// the number of entries (waiters came and went while nobody called
    /// `next`), the keys no longer wanted are moved out, to be dropped by the
    /// caller after the lock is released: the queue stays proportional to
    /// the keys actually wanted.
    pub(crate) fn queue_wanted(
        &mut self,
        r: EntryRef,
        key: &mut Option<K>,
    ) -> VecDeque<(u64, u64, K)> {
        if self.watchers.demand() == 0 {
            return VecDeque::new();
        }
        if let Some(key) = key.take() {
            self.wanted.push_back((r.hash(), r.id(), key));
        }
        if self.wanted.len() <= 2 * self.table.len() + 16 {
            return VecDeque::new();
        }
        let mut stale = VecDeque::new();
        let mut kept = VecDeque::with_capacity(self.table.len());
        for item in self.wanted.drain(..) {
            let (hash, id) = (item.0, item.1);
            let wanted = self
                .table
                .find(hash, |e| e.hash == hash && e.id() == id)
                .is_some_and(Entry::wanted);
            if wanted {
                kept.push_back(item);
            } else {
                stale.push_back(item);
            }
        }
        self.wanted = kept;
        stale
    }

    // ===== wake-ups =====

    /// Whether an operation must look at the wake queue, `close`'s sweep or
    /// the `drained()` watchers before it releases the lock (one test for
    /// the common case where none of them has anything).
    #[inline]
    pub(crate) fn needs_collect(&self) -> bool {
        self.slab.has_queued() | (self.sweep.next != usize::MAX) | (self.watchers.idle() != 0)
    }

    /// Whether wake-ups are still due: queued nodes, or `close`'s sweep.
    #[inline]
    pub(crate) fn has_due(&self) -> bool {
        self.slab.has_queued() || self.sweep.next != usize::MAX
    }

    /// Moves the next due waker out.
    #[inline]
    pub(crate) fn pop_due(&mut self) -> Option<Waker> {
        let mut one = [None];
        self.pop_batch(&mut one);
        let [w] = one;
        w
    }

    /// Moves due wakers into `batch`, from its start, until it is full or
    /// nothing is due; returns how many.
    pub(crate) fn pop_batch(&mut self, batch: &mut [Option<Waker>]) -> usize {
        // The queue first, in one pass (it stops with the batch full or the
        // queue empty); then, with room left, what `close`'s sweep finds (it
        // queues nothing).
        let mut n = self.slab.pop_into(batch);
        while n < batch.len() && self.sweep.next != usize::MAX {
            match self.sweep_one() {
                Some(w) => {
                    batch[n] = Some(w);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    /// The next waker `close`'s sweep finds in an entry.
    fn sweep_one(&mut self) -> Option<Waker> {
        loop {
            if self.sweep.moves != self.moves {
                self.sweep = Sweep {
                    next: 0,
                    moves: self.moves,
                };
            }
            let at = self.sweep.next;
            if at >= self.table.num_buckets() {
                self.sweep.next = usize::MAX;
                return None;
            }
            self.sweep.next = at + 1;
            if let Some(e) = self.table.get_bucket_mut(at) {
                if let Slot::Waker(_) = e.slot {
                    if let Slot::Waker(w) = mem::replace(&mut e.slot, Slot::Empty) {
                        return Some(w);
                    }
                }
            }
        }
    }
}

/// Why a waiter failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Failure {
    Cancelled,
    Abandoned,
}

/// hashbrown's usable capacity for `buckets` buckets.
fn full_capacity(buckets: usize) -> usize {
    if buckets < 8 {
        buckets.saturating_sub(1)
    } else {
        buckets / 8 * 7
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The sizes the README's memory figures come from.
    #[test]
    #[cfg_attr(not(target_pointer_width = "64"), ignore = "64-bit sizes")]
    fn an_entry_of_u64_keys_and_values_takes_56_bytes() {
        assert_eq!(size_of::<Entry<u64, u64>>(), 56);
    }
}
