//! One key's record in the table, [`Entry`], and where its waiters are
//! stored: its own inline slot or the slab's lists. The invariants they keep
//! are at the top of `state.rs`.

use core::mem;
use core::task::Waker;

use crate::after::After;
use crate::slab::{NIL, Slab};
use crate::state::waiter::{EntryRef, INLINE, Kind};
use crate::state::{Failure, Watchers};
use crate::sync::PRODUCER;

/// The entry's own waiter slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Inline {
    Free,
    /// A waiting `get` (or `get_or_promise`).
    Get,
    /// A waiting `take`: the first in line.
    Take,
    /// Failed by `cancel`; its future learns it on its next poll.
    Cancelled,
    /// Failed by a promise dropped unfulfilled.
    Abandoned,
}

/// What an entry stores in its one value-sized space.
pub(crate) enum Slot<V> {
    Empty,
    /// The inline waiter's waker (it is waiting, and was not woken since it
    /// stored it).
    Waker(Waker),
    Value(V),
}

/// One key: its value, its waiters and its promise.
pub(crate) struct Entry<K, V> {
    /// `S::hash_one` of the key, computed outside the lock. A resize rehashes
    /// from it, so user `Hash` code never runs under the lock.
    pub(super) hash: u64,
    /// The entry's id in the high 56 bits, never reused (registered futures
    /// and promises find their entry by `(hash, id)`, with no call to user
    /// `Eq`), and in the low byte: the inline waiter's state (`Inline`),
    /// `HANDOFF` and `PROMISED` (a `Promise` reserves the key: the entry
    /// lives until it is fulfilled or dropped). Packed, so an entry of `u64`
    /// keys and values takes 64 bytes.
    pub(super) meta: u64,
    pub(super) key: K,
    pub(super) slot: Slot<V>,
    /// The waiting `get`s beyond the inline one: a circular list in the slab.
    pub(super) gets: u32,
    /// The waiting `take`s beyond the inline one, in registration order.
    pub(super) takes: u32,
}

pub(crate) const INLINE_BITS: u64 = 0b111;
pub(crate) const HANDOFF: u64 = 1 << 3;
pub(crate) const PROMISED: u64 = 1 << 4;
/// The key's current wanted spell (waiters, no value, no promise) was
/// announced to the demand, or needs no announcement (nobody watched when
/// it began). Cleared when the spell ends: a value or a promise arrives.
pub(crate) const ANNOUNCED: u64 = 1 << 5;
/// A `Demand` handed the key out during its current wanted spell: a second
/// queued announcement of it is stale. Cleared with `ANNOUNCED`.
pub(crate) const HANDED: u64 = 1 << 6;
/// The bits of the demand's bookkeeping.
pub(crate) const DEMAND_BITS: u64 = ANNOUNCED | HANDED;
pub(crate) const ID_SHIFT: u32 = 8;

impl<K, V> Entry<K, V> {
    pub(super) fn new(hash: u64, id: u64, key: K, slot: Slot<V>) -> Self {
        Entry {
            hash,
            meta: id << ID_SHIFT,
            key,
            slot,
            gets: NIL,
            takes: NIL,
        }
    }

    #[inline]
    pub(super) fn id(&self) -> u64 {
        self.meta >> ID_SHIFT
    }

    #[inline]
    pub(super) fn flag(&self, bit: u64) -> bool {
        self.meta & bit != 0
    }

    #[inline]
    pub(super) fn set_flag(&mut self, bit: u64, on: bool) {
        if on {
            self.meta |= bit;
        } else {
            self.meta &= !bit;
        }
    }

    #[inline]
    pub(crate) fn inline(&self) -> Inline {
        match self.meta & INLINE_BITS {
            0 => Inline::Free,
            1 => Inline::Get,
            2 => Inline::Take,
            3 => Inline::Cancelled,
            _ => Inline::Abandoned,
        }
    }

    #[inline]
    pub(crate) fn set_inline(&mut self, inline: Inline) {
        self.meta = (self.meta & !INLINE_BITS) | inline as u64;
    }

    /// Whether the entry's key is `eq`.
    #[inline]
    pub(crate) fn is(&self, eq: impl FnOnce(&K) -> bool) -> bool {
        eq(&self.key)
    }

    #[inline]
    pub(crate) fn has_value(&self) -> bool {
        matches!(self.slot, Slot::Value(_))
    }

    #[inline]
    pub(crate) fn value(&self) -> Option<&V> {
        match &self.slot {
            Slot::Value(v) => Some(v),
            _ => None,
        }
    }

    /// Moves the value out, if there is one.
    #[inline]
    pub(crate) fn take_value(&mut self) -> Option<V> {
        match mem::replace(&mut self.slot, Slot::Empty) {
            Slot::Value(v) => Some(v),
            other => {
                self.slot = other;
                None
            }
        }
    }

    #[inline]
    pub(crate) fn promised(&self) -> bool {
        self.flag(PROMISED)
    }

    #[inline]
    pub(crate) fn set_promised(&mut self, promised: bool) {
        self.set_flag(PROMISED, promised);
        if promised {
            // Served by a producer: a wanted spell, if any, ends.
            self.meta &= !DEMAND_BITS;
        }
    }

    /// A value arrived: a wanted spell, if any, ends.
    #[inline]
    pub(super) fn served(&mut self) {
        self.meta &= !DEMAND_BITS;
    }

    #[inline]
    pub(crate) fn announced(&self) -> bool {
        self.flag(ANNOUNCED)
    }

    #[inline]
    pub(crate) fn set_announced(&mut self) {
        self.meta |= ANNOUNCED;
    }

    #[inline]
    pub(crate) fn handoff(&self) -> bool {
        self.flag(HANDOFF)
    }

    #[inline]
    pub(crate) fn set_handoff(&mut self, handoff: bool) {
        self.set_flag(HANDOFF, handoff);
    }

    /// How the inline waiter failed, if it did.
    #[inline]
    pub(crate) fn inline_failure(&self) -> Option<Failure> {
        match self.inline() {
            Inline::Cancelled => Some(Failure::Cancelled),
            Inline::Abandoned => Some(Failure::Abandoned),
            _ => None,
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self.slot, Slot::Empty)
            && self.inline() == Inline::Free
            && self.gets == NIL
            && self.takes == NIL
            && !self.promised()
    }

    /// What should become of the entry after a change: kept, removed (it
    /// is empty), or made a ghost (only a failed inline waiter keeps it, and
    /// its key should go now).
    #[inline]
    pub(super) fn leftover(&self) -> Leftover {
        if !matches!(self.slot, Slot::Empty)
            || self.gets != NIL
            || self.takes != NIL
            || self.promised()
        {
            return Leftover::Keep;
        }
        match self.inline() {
            Inline::Free => Leftover::Remove,
            Inline::Cancelled | Inline::Abandoned => Leftover::Ghost,
            _ => Leftover::Keep,
        }
    }

    /// Where the entry is, at `bucket`.
    #[inline]
    pub(crate) fn entry_ref(&self, bucket: usize) -> EntryRef {
        EntryRef::new(self.hash, self.id(), bucket)
    }

    /// The first waiting take: the inline one, else the head of `takes`
    /// (`NIL` if no take waits).
    #[inline]
    pub(crate) fn first_take(&self) -> u32 {
        if self.inline() == Inline::Take {
            INLINE
        } else {
            self.takes
        }
    }

    /// Whether the key has waiters (waiting, not failed) and nobody serves
    /// it: no value and no promise.
    /// A future waits on the key (waiting or woken, not failed): a value
    /// inserted now goes to it (so the limit lets it in, and `deliver`
    /// stores it).
    pub(crate) fn awaited(&self) -> bool {
        matches!(self.inline(), Inline::Get | Inline::Take) || self.gets != NIL || self.takes != NIL
    }

    pub(super) fn wanted(&self) -> bool {
        !self.has_value()
            && !self.promised()
            && (matches!(self.inline(), Inline::Get | Inline::Take)
                || self.gets != NIL
                || self.takes != NIL)
    }
}

/// See [`Entry::leftover`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Leftover {
    Keep,
    Remove,
    Ghost,
}

// ===== where a waiter is stored (used by the waiter machine) =====

/// The inline state of a waiter of `kind`.
#[inline]
pub(crate) fn inline_of(kind: Kind) -> Inline {
    match kind {
        Kind::Get => Inline::Get,
        Kind::Take => Inline::Take,
    }
}

/// Registers a waiter of `kind` on `e` (which has no value), holding
/// `waker` (`None`: its poll stores one next). It takes the entry's inline
/// slot if that is free (and, for a take, if no other take waits, so the
/// inline take is always the first), else a slab node at the back of its
/// list. Returns its slot.
#[inline(always)]
pub(crate) fn register<K, V>(
    e: &mut Entry<K, V>,
    slab: &mut Slab,
    inline_live: &mut usize,
    kind: Kind,
    waker: Option<Waker>,
) -> u32 {
    debug_assert!(
        !e.has_value(),
        "a waiter registers only on a key with no value"
    );
    if e.inline() == Inline::Free && (kind == Kind::Get || e.takes == NIL) {
        e.set_inline(inline_of(kind));
        if let Some(w) = waker {
            e.slot = Slot::Waker(w);
        }
        *inline_live += 1;
        return INLINE;
    }
    let list = match kind {
        Kind::Get => &mut e.gets,
        Kind::Take => &mut e.takes,
    };
    slab.push(list, waker)
}

/// Frees the waiter at `slot` of `e` (waiting, or a failed inline one);
/// returns its waker, to drop unlocked.
#[inline(always)]
fn free_waiter<K, V>(
    e: &mut Entry<K, V>,
    slab: &mut Slab,
    inline_live: &mut usize,
    slot: u32,
    kind: Kind,
) -> Option<Waker> {
    if slot == INLINE {
        debug_assert!(
            e.inline() != Inline::Free,
            "the inline waiter is registered"
        );
        e.set_inline(Inline::Free);
        *inline_live -= 1;
        return match &e.slot {
            Slot::Waker(_) => match mem::replace(&mut e.slot, Slot::Empty) {
                Slot::Waker(w) => Some(w),
                _ => None,
            },
            _ => None,
        };
    }
    let list = match kind {
        Kind::Get => &mut e.gets,
        Kind::Take => &mut e.takes,
    };
    slab.remove(list, slot)
}

/// A waiter of `kind` at `slot` leaves `e`: its slot is freed (its waker
/// goes to `after`, to be dropped unlocked), a take holding the hand-off
/// passes it on, and a key this leaves wanted and unannounced is nudged.
/// The caller settles the entry.
#[inline]
pub(crate) fn leave<K, V>(
    e: &mut Entry<K, V>,
    slab: &mut Slab,
    inline_live: &mut usize,
    watchers: &Watchers,
    slot: u32,
    kind: Kind,
    after: &mut After<K>,
) {
    let passes = kind == Kind::Take && e.handoff() && e.first_take() == slot;
    after.drop_waker(free_waiter(e, slab, inline_live, slot, kind));
    if passes {
        pass_handoff(e, slab);
    }
    nudge(e, slab, watchers.demand(), after);
}

/// The first take left while it held the hand-off: the next take gets it,
/// and its wake-up, if the value is still there.
fn pass_handoff<K, V>(e: &mut Entry<K, V>, slab: &mut Slab) {
    e.set_handoff(false);
    if e.has_value() {
        let next = e.first_take();
        if next != NIL {
            e.set_handoff(true);
            // An inline take is always the first: the next one is listed.
            debug_assert!(next != INLINE);
            slab.enqueue(next);
        }
    }
}

/// A value left the entry or a waiter left it. If that leaves the key
/// wanted (waiters, no value, no promise) in a spell not yet announced: with
/// nobody watching the demand, there is nothing to announce; otherwise the
/// first waiter is woken (if it is not already), and its next poll, which
/// finds it still waiting, announces the key with its own copy of it (the
/// map never copies a key under the lock).
#[inline]
pub(crate) fn nudge<K, V>(
    e: &mut Entry<K, V>,
    slab: &mut Slab,
    watchers: usize,
    after: &mut After<K>,
) {
    // Most entries are announced (or needed no announcement) when they are
    // made and lose the flag only when a value or a promise arrives.
    // Without the producer side nobody reads the flag.
    if !PRODUCER || e.announced() || !e.wanted() {
        return;
    }
    nudge_unannounced(e, slab, watchers, after);
}

#[cold]
#[inline(never)]
pub(super) fn nudge_unannounced<K, V>(
    e: &mut Entry<K, V>,
    slab: &mut Slab,
    watchers: usize,
    after: &mut After<K>,
) {
    if watchers == 0 {
        e.set_announced();
        return;
    }
    // The first take; with no take, every get.
    match e.first_take() {
        INLINE => wake_inline(e, after),
        NIL => {
            if e.inline() == Inline::Get {
                wake_inline(e, after);
            }
            if e.gets != NIL {
                slab.enqueue_list(e.gets);
            }
        }
        take => slab.enqueue(take),
    }
}

/// Wakes the entry's inline waiter, if it holds a waker.
pub(super) fn wake_inline<K, V>(e: &mut Entry<K, V>, after: &mut After<K>) {
    if matches!(e.slot, Slot::Waker(_)) {
        if let Slot::Waker(w) = mem::replace(&mut e.slot, Slot::Empty) {
            after.wake(w);
        }
    }
}

/// As [`nudge`], where every waiter of the entry is known to be woken
/// already (a value was just removed: while it was there, every waiting get
/// had been woken, and the first take held the hand-off): only the flag.
pub(crate) fn nudge_woken<K, V>(e: &mut Entry<K, V>, watchers: usize) {
    if watchers == 0 && e.wanted() {
        e.set_announced();
    }
}

/// Stores a waiting waiter's newest waker; returns the one it replaced.
pub(crate) fn store_waker<K, V>(
    e: &mut Entry<K, V>,
    slab: &mut Slab,
    slot: u32,
    waker: Waker,
) -> Option<Waker> {
    if slot != INLINE {
        return slab.replace_waker(slot, waker);
    }
    store_inline_waker(e, waker)
}

/// [`store_waker`] for the entry's inline waiter, always in line.
#[inline(always)]
pub(crate) fn store_inline_waker<K, V>(e: &mut Entry<K, V>, waker: Waker) -> Option<Waker> {
    debug_assert!(
        !e.has_value(),
        "an inline waiter waits only while there is no value"
    );
    match &mut e.slot {
        Slot::Waker(old) => Some(mem::replace(old, waker)),
        slot => {
            *slot = Slot::Waker(waker);
            None
        }
    }
}
