//! The invariant checker: tests and debugging builds verify with it that
//! every invariant of the entries (top of `state.rs`) and of the slab (top
//! of `slab.rs`) holds.

use super::*;

impl<K, V> State<K, V> {
    /// Verifies every invariant that the entries (top of `state.rs`) and the
    /// slab (top of `slab.rs`) document; calls no user code. `Err` says
    /// which one broke.
    pub(crate) fn check_invariants(&self) -> Result<(), alloc::string::String> {
        use alloc::format;
        let queued = self.slab.check()?;
        let slots = self.slab.slots();
        let mut listed = alloc::vec![false; slots];
        let mut ids = alloc::vec::Vec::with_capacity(self.table.len());
        let (mut values, mut inline_live) = (0, 0);
        // A waiter that is due a wake-up: woken already (no waker), queued,
        // or, after `close`, an inline one still ahead of the sweep.
        let listed_due = |slot: u32| {
            let (_, armed) = self.slab.peek(slot);
            !armed || queued[slot as usize]
        };
        for bucket in self.table.iter_buckets() {
            let Some(e) = self.table.get_bucket(bucket) else {
                continue;
            };
            let id = e.id();
            if e.is_empty() {
                return Err(format!("entry {id} has no value, waiter or promise"));
            }
            if e.leftover() == Leftover::Ghost {
                return Err(format!(
                    "entry {id} is kept by a failed inline waiter only: not made a ghost"
                ));
            }
            if id >= self.next_id {
                return Err(format!("entry id {id} was never handed out"));
            }
            ids.push(id);
            let has_value = e.has_value();
            values += usize::from(has_value);
            let inline_armed = matches!(e.slot, Slot::Waker(_));
            match e.inline() {
                Inline::Free => {
                    if inline_armed {
                        return Err(format!("entry {id} holds a waker but no inline waiter"));
                    }
                }
                Inline::Get | Inline::Take => inline_live += 1,
                Inline::Cancelled | Inline::Abandoned => {
                    inline_live += 1;
                    if inline_armed {
                        return Err(format!("entry {id}'s failed inline waiter was never woken"));
                    }
                }
            }
            let sweep_ahead = self.sweep.next != usize::MAX && bucket >= self.sweep.next;
            if self.closed && inline_armed && !sweep_ahead && self.sweep.moves == self.moves {
                return Err(format!("entry {id}'s inline waiter missed the close"));
            }
            for (kind, list) in [(Kind::Get, e.gets), (Kind::Take, e.takes)] {
                for slot in self.slab.check_list(list)? {
                    let (state, _) = self.slab.peek(slot);
                    if state != NodeState::Waiting {
                        return Err(format!(
                            "{kind:?} list of entry {id} holds a {state:?} node"
                        ));
                    }
                    if mem::replace(&mut listed[slot as usize], true) {
                        return Err(format!("slot {slot} is in two lists"));
                    }
                    if (kind == Kind::Get && has_value || self.closed) && !listed_due(slot) {
                        return Err(format!(
                            "{kind:?} slot {slot} of entry {id} missed its wake-up"
                        ));
                    }
                }
            }
            let first = e.first_take();
            if e.handoff() {
                if first == NIL {
                    return Err(format!("entry {id} holds a hand-off but no take waits"));
                }
                if first != INLINE && !listed_due(first) {
                    return Err(format!(
                        "the take holding entry {id}'s hand-off was never woken"
                    ));
                }
                if first == INLINE && inline_armed {
                    return Err(format!(
                        "the inline take holding entry {id}'s hand-off was never woken"
                    ));
                }
            } else if has_value && first != NIL {
                return Err(format!(
                    "entry {id} has a value and a waiting take but no hand-off"
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
        for g in self.ghosts.iter() {
            if g.id >= self.next_id || ids.binary_search(&g.id).is_ok() {
                return Err(format!(
                    "ghost {} names an entry never handed out or still there",
                    g.id
                ));
            }
            inline_live += 1;
        }
        if inline_live != self.inline_live {
            return Err(format!(
                "{} inline waiters counted, {inline_live} found",
                self.inline_live
            ));
        }
        for slot in 0..slots as u32 {
            let (state, armed) = self.slab.peek(slot);
            match state {
                NodeState::Waiting if !listed[slot as usize] => {
                    return Err(format!("waiting slot {slot} is in no list"));
                }
                NodeState::Cancelled | NodeState::Abandoned if armed && !queued[slot as usize] => {
                    return Err(format!("{state:?} slot {slot} was never woken to learn it"));
                }
                _ => {}
            }
        }
        if self.watchers.demand() == 0 && !self.wanted.is_empty() {
            return Err(format!(
                "{} keys are queued for a demand nobody watches",
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
