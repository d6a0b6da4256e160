//! The state the producer side keeps under the lock (targets with atomic
//! pointers): `drained()` and `Demand` watchers, and the limit.

use alloc::collections::VecDeque;
use core::mem;

use super::entry::HANDED;
use super::{Entry, State};
use crate::after::After;

impl<K, V> Entry<K, V> {
    /// A `Demand` handed the key out during its current wanted spell.
    #[inline]
    fn handed(&self) -> bool {
        self.flag(HANDED)
    }

    #[inline]
    fn set_handed(&mut self) {
        self.meta |= HANDED;
    }
}

impl<K, V> State<K, V> {
    /// A `drained()` future starts or stops watching; returns whether the
    /// map is idle now (then it does not watch).
    pub(crate) fn watch_idle(&mut self, watching: bool) -> bool {
        let idle = self.live() == 0;
        match (watching, idle) {
            (false, false) => self.watchers.idle += 1,
            (true, true) => self.watchers.idle -= 1,
            _ => {}
        }
        idle
    }

    /// A watching `drained()` future is dropped.
    pub(crate) fn unwatch_idle(&mut self) {
        self.watchers.idle -= 1;
    }

    /// `insert`, unless the map is full for this key: then `None`, with key
    /// and value left in their options. A value is let in when the map holds
    /// fewer than `limit` values, when it replaces one, when a future waits
    /// on its key (it is as good as delivered), or when the map is closed.
    pub(crate) fn insert_within(
        &mut self,
        hash: u64,
        key: &mut Option<K>,
        value: &mut Option<V>,
        limit: usize,
        eq: impl FnMut(&K, &K) -> bool,
        after: &mut After<K>,
    ) -> Option<Option<V>> {
        let room = self.len < limit || self.closed;
        self.insert_if(
            hash,
            key,
            value,
            eq,
            |e| room || e.is_some_and(|e| e.has_value() || e.awaited()),
            after,
        )
    }

    /// A `Demand` handle starts watching.
    pub(crate) fn watch_demand(&mut self) {
        self.watchers.demand += 1;
    }

    /// A `Demand` handle is gone; with the last one, the queued keys leave
    /// (to be dropped unlocked).
    pub(crate) fn unwatch_demand(&mut self) -> VecDeque<(u64, u64, K)> {
        self.watchers.demand -= 1;
        if self.watchers.demand == 0 {
            mem::take(&mut self.wanted)
        } else {
            VecDeque::new()
        }
    }

    /// The next announced key and whether it is to be handed out: still
    /// wanted, and not handed out already in its current wanted spell (an
    /// announcement left over from an earlier spell is then stale). The
    /// caller skips the others.
    pub(crate) fn next_wanted(&mut self) -> Option<(bool, K)> {
        let (hash, id, key) = self.wanted.pop_front()?;
        let still = match self
            .table
            .find_mut(hash, |e| e.hash == hash && e.id() == id)
        {
            Some(e) if e.wanted() && !e.handed() => {
                e.set_handed();
                true
            }
            _ => false,
        };
        Some((still, key))
    }
}
