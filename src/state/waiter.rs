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
    free_waiter, inline_of, nudge, pass_handoff, register, renew_if_worn, settle, store_waker,
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

// ===== impl State: the machine, under the lock =====

impl<K, V> State<K, V> {
    /// The first look of a `get`, the hot path: one probe, and a clone of
    /// the value if the key has one. Otherwise what it saw, for the
    /// registration that follows in a second trip (with a waker cloned
    /// outside the lock): the id of the key's entry, or that the key has
    /// none ([`Miss`]).
    #[inline(always)]
    pub(crate) fn look(
        &self,
        hash: u64,
        eq: impl FnMut(&K) -> bool,
        clone: fn(&V) -> V,
    ) -> Result<V, u64> {
        let mut eq = eq;
        match self.table.find(hash, |e| e.is(&mut eq)) {
            Some(e) => match e.value() {
                Some(v) => Ok(clone(v)),
                None => Err(e.id()),
            },
            None if self.closed => Err(Miss::CLOSED),
            None => Err(Miss::ABSENT),
        }
    }

    /// The second trip of a `get` whose look found its key's entry (of id
    /// `id`) with no value: it registers there with `waker`, if that entry
    /// is still there and the map is open. Anything else hands `waker` back
    /// for the general path, which looks the key up again.
    #[inline(always)]
    pub(crate) fn register_get(
        &mut self,
        w: &mut Waiter,
        id: u64,
        waker: Waker,
        clone: fn(&V) -> V,
    ) -> Registration<V> {
        let hash = w.entry.hash;
        // Ids are never reused: no key comparison (user code) is needed.
        let mut occ = match self.table.find_entry(hash, |e| e.id() == id) {
            Ok(occ) if !self.closed => occ,
            _ => return Registration::Elsewhere(waker),
        };
        let bucket = occ.bucket_index();
        let e = occ.get_mut();
        if let Some(v) = e.value() {
            // It came meanwhile.
            w.slot = DONE;
            return Registration::Came(clone(v), waker);
        }
        let slot = register(
            e,
            &mut self.slab,
            &mut self.inline_live,
            Kind::Get,
            Some(waker),
        );
        w.registered(e.entry_ref(bucket), slot);
        Registration::Waiting
    }

    /// The first poll: resolve at once, or register (creating the key's
    /// entry if it has none). One probe of the table finds the entry or the
    /// place for a new one.
    #[inline(always)]
    pub(crate) fn first_poll(
        &mut self,
        mode: &Mode<V>,
        w: &mut Waiter,
        mut eq: impl FnMut(&K) -> bool,
        supplies: &mut Supplies<K>,
        after: &mut After<K>,
    ) -> Step<V> {
        let hash = w.entry.hash;
        let closed = self.closed;
        // A new entry may make hashbrown move every entry (`close`'s sweep
        // must know).
        if self.table.len() == self.table.capacity() {
            self.moves = self.moves.wrapping_add(1);
        }
        let mut occ = match self.table.entry(hash, |e| e.is(&mut eq), entry_hash) {
            TableEntry::Occupied(occ) => occ,
            TableEntry::Vacant(vacant) => {
                // No entry: the key has no value, no waiter and no promise.
                if closed {
                    w.slot = DONE;
                    return Step::Ready(Outcome::Failed(WaitError::Closed));
                }
                let id = self.next_id;
                let promise = matches!(mode, Mode::GetOrPromise(_));
                let entry = if promise {
                    let Some(key) = supplies.key.take() else {
                        return Step::Make(Needs::KEY);
                    };
                    let mut e = Entry::new(hash, id, key, Slot::Empty);
                    e.set_promised(true);
                    e
                } else {
                    if supplies.waker.is_none() || supplies.key.is_none() {
                        return Step::Make(Needs::WAKER_AND_KEY);
                    }
                    let (Some(waker), Some(key)) = (supplies.waker.take(), supplies.key.take())
                    else {
                        unreachable!("both checked above");
                    };
                    let mut e = Entry::new(hash, id, key, Slot::Waker(waker));
                    e.set_inline(inline_of(mode.kind()));
                    // Announced now, or wanted before anyone watched.
                    e.set_announced();
                    e
                };
                self.next_id += 1;
                let bucket = vacant.insert(entry).bucket_index();
                w.entry = EntryRef::new(hash, id, bucket);
                if promise {
                    w.slot = DONE;
                    return Step::Ready(Outcome::Promise);
                }
                w.slot = INLINE;
                self.inline_live += 1;
                return if self.watchers.demand() > 0 {
                    Step::Announce
                } else {
                    Step::Pending
                };
            }
        };
        let bucket = occ.bucket_index();
        let e = occ.get_mut();
        // A present value is taken at once, even from under a take that
        // holds the hand-off (it will find the value gone and wait on).
        let outcome = match mode {
            Mode::Get(clone) => e.value().map(|v| Outcome::Value(clone(v))),
            Mode::Take => e.take_value().map(|v| {
                self.len -= 1;
                Outcome::Value(v)
            }),
            Mode::GetOrPromise(clone) => match e.value() {
                Some(v) => Some(Outcome::Value(clone(v))),
                None if !e.promised() && !closed => {
                    e.set_promised(true);
                    w.entry = e.entry_ref(bucket);
                    Some(Outcome::Promise)
                }
                None => None,
            },
        };
        if let Some(outcome) = outcome {
            w.slot = DONE;
            nudge(e, &mut self.slab, self.watchers.demand(), after);
            settle(occ, &mut self.ghosts, after);
            return Step::Ready(outcome);
        }
        if closed {
            w.slot = DONE;
            return Step::Ready(Outcome::Failed(WaitError::Closed));
        }
        // Registered now, with a waker if the poll brought one; without, it
        // stores one in its next trip (an insert meanwhile sees a waiter
        // "woken already", which the next trip resolves).
        let waker = supplies.waker.take();
        let step = if waker.is_some() {
            Step::Pending
        } else {
            Step::Make(Needs::WAKER)
        };
        let slot = register(e, &mut self.slab, &mut self.inline_live, mode.kind(), waker);
        w.registered(e.entry_ref(bucket), slot);
        step
    }

    /// A registered future polled again.
    #[inline(always)]
    pub(crate) fn repoll(
        &mut self,
        mode: &Mode<V>,
        w: &mut Waiter,
        cx_waker: &Waker,
        supplies: &mut Supplies<K>,
        after: &mut After<K>,
    ) -> Step<V> {
        let slot = w.slot;
        let kind = mode.kind();
        // A node failed by `cancel` or an abandoned promise learns it
        // without its entry, which may be gone.
        if slot != INLINE {
            if let Some(failure) = self.node_failure(slot) {
                after.drop_waker(self.free_node(slot));
                return failed(mode, w, failure);
            }
        }
        let closed = self.closed;
        let bucket = match self.bucket_or_ghost(&mut w.entry) {
            Ok(bucket) => bucket,
            Err(failure) => {
                // Its entry went when it failed: it was the inline waiter.
                self.inline_live -= 1;
                return failed(mode, w, failure);
            }
        };
        let Ok(mut occ) = self.table.get_bucket_entry(bucket) else {
            unreachable!("`bucket_or_ghost` found it");
        };
        let e = occ.get_mut();
        if slot == INLINE {
            if let Some(failure) = e.inline_failure() {
                e.set_inline(Inline::Free);
                self.inline_live -= 1;
                settle(occ, &mut self.ghosts, after);
                return failed(mode, w, failure);
            }
        }
        let first = kind == Kind::Take && e.first_take() == slot;
        let outcome = match mode {
            Mode::Get(clone) => e.value().map(|v| Outcome::Value(clone(v))),
            // The take holding the hand-off, or any take while nobody holds
            // it.
            Mode::Take if first || !e.handoff() => e.take_value().map(|v| {
                self.len -= 1;
                Outcome::Value(v)
            }),
            Mode::Take => None,
            Mode::GetOrPromise(clone) => match e.value() {
                Some(v) => Some(Outcome::Value(clone(v))),
                // Woken for a value that is gone again (taken or removed),
                // and nobody produces the key any more: this caller takes
                // the work, as a fresh call would.
                None if !e.promised() && !closed => {
                    e.set_promised(true);
                    Some(Outcome::Promise)
                }
                None => None,
            },
        };
        let outcome = match outcome {
            None if closed => Some(Outcome::Failed(WaitError::Closed)),
            outcome => outcome,
        };
        if let Some(outcome) = outcome {
            let passes = first && e.handoff();
            after.drop_waker(free_waiter(
                e,
                &mut self.slab,
                &mut self.inline_live,
                slot,
                kind,
            ));
            if passes {
                pass_handoff(e, &mut self.slab);
            }
            w.slot = DONE;
            nudge(e, &mut self.slab, self.watchers.demand(), after);
            settle(occ, &mut self.ghosts, after);
            return Step::Ready(outcome);
        }
        if first && e.handoff() {
            // Woken for a value that is gone again: wait on, still first in
            // line, and let the next insert hand it over again.
            e.set_handoff(false);
        }
        // It waits on: in a wanted spell nobody announced yet (a value came
        // and went), this poll announces the key.
        let announce = self.watchers.demand() != 0 && !e.announced() && e.wanted();
        if slot == INLINE {
            if matches!(&e.slot, Slot::Waker(old) if old.will_wake(cx_waker)) {
                return waits(e, announce);
            }
        } else if self.slab.will_wake(slot, cx_waker) {
            return waits(e, announce);
        }
        match supplies.waker.take() {
            Some(waker) => {
                after.drop_waker(store_waker(e, &mut self.slab, slot, waker));
                waits(e, announce)
            }
            None => Step::Make(Needs::WAKER),
        }
    }

    /// The fast path of a first registration, for the common case: the key
    /// has no entry (a response awaited before it arrives; a get that found
    /// nothing), so the future creates it and waits in its inline slot.
    /// Anything else (the key has an entry, the map is closed) hands `waker`
    /// and `key` back, with nothing changed, for the general path.
    /// `Ok(true)`: registered, and the key is to be announced to the demand.
    #[inline(always)]
    pub(crate) fn register_fast(
        &mut self,
        kind: Kind,
        w: &mut Waiter,
        mut eq: impl FnMut(&K) -> bool,
        waker: Option<Waker>,
        key: K,
    ) -> Result<bool, (Option<Waker>, K)> {
        if self.closed {
            return Err((waker, key));
        }
        let hash = w.entry.hash;
        if self.table.len() == self.table.capacity() {
            self.moves = self.moves.wrapping_add(1);
        }
        match self.table.entry(hash, |e| e.is(&mut eq), entry_hash) {
            TableEntry::Occupied(_) => Err((waker, key)),
            TableEntry::Vacant(vacant) => {
                let id = self.next_id;
                self.next_id += 1;
                // Without a waker, the waiter counts as woken: it polls.
                let slot = match waker {
                    Some(w) => Slot::Waker(w),
                    None => Slot::Empty,
                };
                let mut e = Entry::new(hash, id, key, slot);
                e.set_inline(inline_of(kind));
                // Announced now, or wanted before anyone watched.
                e.set_announced();
                let bucket = vacant.insert(e).bucket_index();
                w.registered(EntryRef::new(hash, id, bucket), INLINE);
                self.inline_live += 1;
                Ok(self.watchers.demand() > 0)
            }
        }
    }

    /// The ready poll of a registered `get`, for the common case: it was
    /// woken, its key's value is there, and no `drained()` future watches.
    /// It clones the value and leaves (the value stays, and so does the
    /// entry). Anything else returns `None` with nothing changed, for the
    /// general path. (A `take` has [`take_inline`](Self::take_inline).)
    #[inline(always)]
    pub(crate) fn resolve_get(&mut self, clone: fn(&V) -> V, w: &mut Waiter) -> Option<V> {
        let slot = w.slot;
        if self.watchers.idle() != 0 || (slot != INLINE && !self.slab.is_woken(slot)) {
            return None;
        }
        let e = self.table.get_bucket_mut(w.entry.bucket())?;
        if e.id() != w.entry.id() || (slot == INLINE && e.inline() != Inline::Get) {
            return None;
        }
        let v = clone(e.value()?);
        // It was woken, so it holds no waker: nothing to drop.
        if slot == INLINE {
            e.set_inline(Inline::Free);
            self.inline_live -= 1;
        } else {
            self.slab.remove(&mut e.gets, slot);
        }
        w.slot = DONE;
        Some(v)
    }

    /// The ready poll of an RPC response, the common case of a `take`: the
    /// inline take of an entry that nothing else keeps (no other waiter, no
    /// promise), with its value there, and keys that need no drop. It moves
    /// the value out and removes the entry. Anything else returns `None`
    /// with nothing changed, for the general path.
    #[inline(always)]
    pub(crate) fn take_inline(&mut self, w: &mut Waiter) -> Option<V> {
        if self.watchers.idle() != 0 || core::mem::needs_drop::<K>() {
            return None;
        }
        let Ok(occ) = self.table.get_bucket_entry(w.entry.bucket()) else {
            return None;
        };
        let e = occ.get();
        // One comparison checks the id, the inline take and no promise;
        // the hand-off may be set or not (the inline take is the first).
        let expected = (w.entry.id() << ID_SHIFT) | Inline::Take as u64;
        if e.meta & !(HANDOFF | DEMAND_BITS) != expected
            || e.gets != NIL
            || e.takes != NIL
            || !e.has_value()
        {
            return None;
        }
        self.len -= 1;
        self.inline_live -= 1;
        w.slot = DONE;
        let (e, vacant) = occ.remove();
        renew_if_worn(vacant.into_table());
        let Slot::Value(v) = e.slot else {
            unreachable!("checked above");
        };
        Some(v)
    }

    /// The fast path of storing a registered future's newest waker, for the
    /// common case: it waits (not failed), its key has no value, the map is
    /// open, and it does not hold the hand-off. Returns the waker it
    /// replaced; anything else hands `waker` back, with nothing changed,
    /// for the general path.
    #[inline(always)]
    pub(crate) fn store_waker_fast(
        &mut self,
        w: &Waiter,
        waker: Waker,
    ) -> Result<Option<Waker>, Waker> {
        let slot = w.slot;
        if self.closed || (slot != INLINE && !self.slab.is_waiting(slot)) {
            return Err(waker);
        }
        let Some(e) = self.table.get_bucket_mut(w.entry.bucket()) else {
            return Err(waker);
        };
        if e.id() != w.entry.id()
            || e.has_value()
            || (slot == INLINE && !matches!(e.inline(), Inline::Get | Inline::Take))
            || (e.handoff() && e.first_take() == slot)
            || (self.watchers.demand() != 0 && !e.announced())
        {
            return Err(waker);
        }
        Ok(store_waker(e, &mut self.slab, slot, waker))
    }

    /// A registered claim is dropped: it leaves its key's waiters as a take
    /// does (passing the hand-off on to another waiting take), and a value
    /// that no other future waits for and no promise keeps (a reply that
    /// came too late to be received) leaves with it, to be dropped with the
    /// lock released.
    pub(crate) fn release(&mut self, w: &mut Waiter, after: &mut After<K>) -> Option<V> {
        let (hash, id) = (w.entry.hash(), w.entry.id());
        self.deregister(Kind::Take, w, after);
        let Ok(mut occ) = self
            .table
            .find_entry(hash, |e| e.hash == hash && e.id() == id)
        else {
            return None;
        };
        let e = occ.get_mut();
        if !e.has_value() || e.awaited() || e.promised() {
            return None;
        }
        let value = e.take_value();
        e.set_handoff(false);
        self.len -= 1;
        settle(occ, &mut self.ghosts, after);
        value
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
        let bucket = match self.bucket_or_ghost(&mut w.entry) {
            Ok(bucket) => bucket,
            Err(_) => {
                // Its entry went when it failed: it was the inline waiter.
                self.inline_live -= 1;
                return;
            }
        };
        let Ok(mut occ) = self.table.get_bucket_entry(bucket) else {
            unreachable!("`bucket_or_ghost` found it");
        };
        let e = occ.get_mut();
        let passes = kind == Kind::Take && e.handoff() && e.first_take() == slot;
        after.drop_waker(free_waiter(
            e,
            &mut self.slab,
            &mut self.inline_live,
            slot,
            kind,
        ));
        if passes {
            pass_handoff(e, &mut self.slab);
        }
        nudge(e, &mut self.slab, self.watchers.demand(), after);
        settle(occ, &mut self.ghosts, after);
    }
}

/// A registered future waits on; `announce`: it is to announce its key.
#[inline]
fn waits<K, V>(e: &mut Entry<K, V>, announce: bool) -> Step<V> {
    if announce {
        e.set_announced();
        Step::Announce
    } else {
        Step::Pending
    }
}

/// The outcome of a failed waiter, whose slot was freed.
fn failed<V>(mode: &Mode<V>, w: &mut Waiter, failure: Failure) -> Step<V> {
    match (failure, mode) {
        // Abandoned: a `get_or_promise` starts over, as a fresh call would,
        // in a new trip through the lock (the slot freed here may have been
        // the last waiter, and `drained()` must hear of it even if the `Eq`
        // of the fresh probe panics).
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
                    match self.state.with(|st| st.store_waker_fast(w, waker)) {
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
        w.entry.hash = hash;
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
        let polled = self.poll_get_missed(w, key, cx, miss);
        if polled.is_ready() {
            // Known to the caller's code too: a future that is `Ready`
            // needs no deregistration when it is dropped.
            w.slot = DONE;
        } else {
            self.started_waiting();
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
        let mode = Mode::Get(V::clone);
        let polled = match miss {
            Miss::CLOSED => {
                w.slot = DONE;
                return Poll::Ready(Err(WaitError::Closed));
            }
            Miss::ABSENT => self.poll_register::<false, Q>(mode, w, key, cx),
            Miss::BUSY => self.poll_slow(mode, w, key, cx, Needs::NOTHING, Supplies::NONE),
            id => {
                // Not registered yet: a panic in the clone leaves nothing.
                let waker = cx.waker().clone();
                match self
                    .state
                    .with(|st| st.register_get(w, id, waker, V::clone))
                {
                    Registration::Waiting => return Poll::Pending,
                    Registration::Came(v, waker) => {
                        drop(waker);
                        return Poll::Ready(Ok(v));
                    }
                    Registration::Elsewhere(waker) => {
                        let supplies = Supplies {
                            waker: Some(waker),
                            key: None,
                        };
                        self.poll_slow(mode, w, key, cx, Needs::NOTHING, supplies)
                    }
                }
            }
        };
        polled.map(Outcome::into_result)
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
