//! What an operation leaves to do once the map's lock is released, and the
//! one helper every operation goes through to take the lock, change the
//! state, release it and then do that.
//!
//! The order is fixed: wake the wakers that are due, tell the map-wide
//! conditions that became true, and only then drop what left the map. So a
//! destructor that panics (a key's, a waker's) can never swallow a wake-up
//! or a notification; and with `std`, a waker or destructor that panics does
//! not stop the rest: the first panic is resumed once everything has run.

use core::task::Waker;

use mutex::ScopedRawMutex;

use crate::AwaitMap;
use crate::slab::BATCH;
use crate::sync::{Panic, caught, resume};
use crate::table::State;

/// What an operation leaves to do once the lock is released. Filled under
/// the lock, carried out by [`AwaitMap::finish`].
pub(crate) struct After<K> {
    /// Due wakers the operation took out itself (from an entry): `first`
    /// before the queued ones, `last` after them.
    first: Option<Waker>,
    last: Option<Waker>,
    /// More due wakers wait in the map's queue.
    more: bool,
    /// The last waiter left while a `drained()` future watches.
    idle: bool,
    /// How many values left the map: room under a limit.
    pub(crate) freed: usize,
    /// The key of an entry that was removed, or a key the map did not keep.
    pub(crate) key: Option<K>,
    /// A second key the map did not keep (a registration's spare copy).
    pub(crate) spare_key: Option<K>,
    /// A waker that was replaced, or whose waiter left.
    waker: Option<Waker>,
    /// A second waker the map did not keep (a registration's spare clone).
    pub(crate) spare_waker: Option<Waker>,
}

impl<K> After<K> {
    #[inline]
    pub(crate) const fn new() -> Self {
        After {
            first: None,
            last: None,
            more: false,
            idle: false,
            freed: 0,
            key: None,
            spare_key: None,
            waker: None,
            spare_waker: None,
        }
    }

    /// A waker that is due, to be woken first thing after the lock is
    /// released (an operation touches one entry, whose inline waiter is the
    /// only one it takes out itself).
    #[inline]
    pub(crate) fn wake(&mut self, w: Waker) {
        debug_assert!(self.first.is_none() && self.last.is_none());
        self.first = Some(w);
    }

    /// A waker that is due, to be woken after those queued.
    #[inline]
    pub(crate) fn wake_last(&mut self, w: Waker) {
        debug_assert!(self.first.is_none() && self.last.is_none());
        self.last = Some(w);
    }

    /// A waker that left the map without being due (replaced, or its waiter
    /// finished): dropped last.
    #[inline]
    pub(crate) fn drop_waker(&mut self, w: Option<Waker>) {
        if w.is_some() {
            self.waker = w;
        }
    }

    /// The last thing an operation does under the lock: takes the next due
    /// waker from the queue if it has none of its own, notes whether more
    /// are due, and whether the map just became idle.
    #[inline]
    pub(crate) fn collect<V>(&mut self, st: &mut State<K, V>) {
        if self.first.is_none() {
            self.first = st.pop_due();
        }
        self.more = st.has_due();
        self.idle = st.idle_now();
    }

    /// Nothing to do: no waker to wake or drop, no condition to tell, and no
    /// key whose drop runs code.
    #[inline]
    pub(crate) fn is_quiet(&self) -> bool {
        self.first.is_none()
            && self.last.is_none()
            && !self.more
            && !self.idle
            && self.freed == 0
            && self.waker.is_none()
            && self.spare_waker.is_none()
            && (!core::mem::needs_drop::<K>() || (self.key.is_none() && self.spare_key.is_none()))
    }
}

impl<K, V, S, L: ScopedRawMutex> AwaitMap<K, V, S, L> {
    /// Runs `change` under the lock, then, with the lock released, does what
    /// it left to do (see [`After`]). Every operation that changes waiters or
    /// values goes through here or through [`finish`](Self::finish).
    ///
    /// A panic in `change` itself (a key's `Eq`, a value's `Clone`) happens
    /// before it changes anything, and releases the lock.
    #[inline]
    pub(crate) fn locked<R>(&self, change: impl FnOnce(&mut State<K, V>, &mut After<K>) -> R) -> R {
        let mut after = After::new();
        let r = self.state.with(|st| {
            let r = change(st, &mut after);
            after.collect(st);
            r
        });
        self.finish(after);
        r
    }

    /// Carries out what an operation left to do, then resumes the first
    /// panic of the user code it ran, if any.
    #[inline]
    pub(crate) fn finish(&self, after: After<K>) {
        if !after.is_quiet() {
            resume(self.finish_caught(after));
        }
    }

    /// [`finish`](Self::finish), handing back the first panic (with `std`)
    /// instead of resuming it.
    #[inline(never)]
    pub(crate) fn finish_caught(&self, after: After<K>) -> Option<Panic> {
        let After {
            first,
            last,
            more,
            idle,
            freed,
            key,
            spare_key,
            waker,
            spare_waker,
        } = after;
        let mut panic = None;
        if let Some(w) = first {
            caught(|| w.wake(), &mut panic);
        }
        if more {
            self.drain(&mut panic);
        }
        if let Some(w) = last {
            caught(|| w.wake(), &mut panic);
        }
        if idle {
            caught(|| self.events.idle(), &mut panic);
        }
        if freed > 0 {
            caught(|| self.freed(freed), &mut panic);
        }
        // Last: a destructor that panics can no longer cost anyone a wake-up.
        for w in [waker, spare_waker].into_iter().flatten() {
            caught(|| drop(w), &mut panic);
        }
        for k in [key, spare_key].into_iter().flatten() {
            caught(|| drop(k), &mut panic);
        }
        panic
    }

    /// After `n` values left the map: lets as many producers waiting for
    /// room under the limit in.
    #[inline]
    pub(crate) fn freed(&self, n: usize) {
        if self.limit != usize::MAX && n > 0 {
            self.events.room(n);
        }
    }

    /// Wakes the queued wakers, a batch at a time, with the lock released
    /// in between.
    #[cold]
    #[inline(never)]
    fn drain(&self, panic: &mut Option<Panic>) {
        let mut batch: [Option<Waker>; BATCH] = [const { None }; BATCH];
        loop {
            let (n, more) = self
                .state
                .with(|st| (st.pop_batch(&mut batch), st.has_due()));
            for w in &mut batch[..n] {
                if let Some(w) = w.take() {
                    caught(|| w.wake(), panic);
                }
            }
            if !more {
                break;
            }
        }
    }
}
