//! The machine's steps under the lock: each trip of a waiting future's
//! poll (the first look, the registration, a re-poll, the ready fast
//! paths, deregistration) as one method of [`State`], calling no user code
//! but a key's `Eq` and a value's `Clone`.

use super::*;

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
            leave(
                e,
                &mut self.slab,
                &mut self.inline_live,
                &self.watchers,
                slot,
                kind,
                after,
            );
            w.slot = DONE;
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
    /// for the general path. `SHORT` stores an inline waiter's waker in
    /// line (the claim's first poll: the whole trip is this); otherwise the
    /// store is a call, which keeps the general poll path small.
    #[inline(always)]
    pub(crate) fn store_waker_fast<const SHORT: bool>(
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
        if SHORT && slot == INLINE {
            return Ok(store_inline_waker(e, waker));
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
        leave(
            e,
            &mut self.slab,
            &mut self.inline_live,
            &self.watchers,
            slot,
            kind,
            after,
        );
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
