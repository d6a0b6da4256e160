//! What an operation leaves to do once the map's lock is released, and the
//! one helper every operation goes through to take the lock, change the
//! state, release it and then do that.
//!
//! The order is fixed: wake the wakers that are due, tell the map-wide
//! conditions that became true, and only then drop what left the map. So a
//! destructor that panics (a key's, a waker's) can never swallow a wake-up
//! or a notification; and with `std`, a waker or destructor that panics does
//! not stop the rest: the first panic is resumed once everything has run.

use core::mem::needs_drop;
use core::task::Waker;

use mutex::ScopedRawMutex;

use crate::AwaitMap;
use crate::slab::BATCH;
use crate::state::State;
use crate::sync::{Panic, caught, resume};

/// `After::todo` bits: what there is to do.
const FIRST: u8 = 1;
const LAST: u8 = 1 << 1;
const MORE: u8 = 1 << 2;
const IDLE: u8 = 1 << 3;
const FREED: u8 = 1 << 4;
const DROPS: u8 = 1 << 5;

/// What an operation leaves to do once the lock is released. Filled under
/// the lock, carried out by [`AwaitMap::finish`].
pub(crate) struct After<K> {
    /// What there is to do, so that an operation with nothing to do checks
    /// one byte.
    todo: u8,
    /// Due wakers the operation took out itself (from an entry): `first`
    /// before the queued ones, `last` after them.
    first: Option<Waker>,
    last: Option<Waker>,
    /// To drop: a waker that was replaced or whose waiter left, and a clone
    /// the poll made but did not need.
    waker: Option<Waker>,
    spare_waker: Option<Waker>,
    /// To drop: the key of an entry that was removed (or a key the map did
    /// not keep), and a copy a poll made but did not need.
    key: Option<K>,
    spare_key: Option<K>,
}

impl<K> After<K> {
    #[inline]
    pub(crate) const fn new() -> Self {
        After {
            todo: 0,
            first: None,
            last: None,
            waker: None,
            spare_waker: None,
            key: None,
            spare_key: None,
        }
    }

    /// A waker that is due, to be woken first thing after the lock is
    /// released (an operation touches one entry, whose inline waiter is the
    /// only one it takes out itself).
    #[inline]
    pub(crate) fn wake(&mut self, w: Waker) {
        debug_assert!(self.first.is_none() && self.last.is_none());
        self.first = Some(w);
        self.todo |= FIRST;
    }

    /// A waker that is due, to be woken after those queued.
    #[inline]
    pub(crate) fn wake_last(&mut self, w: Waker) {
        debug_assert!(self.first.is_none() && self.last.is_none());
        self.last = Some(w);
        self.todo |= LAST;
    }

    /// A waker that left the map without being due (replaced, or its waiter
    /// finished): dropped last.
    #[inline]
    pub(crate) fn drop_waker(&mut self, w: Option<Waker>) {
        if w.is_some() {
            self.waker = w;
            self.todo |= DROPS;
        }
    }

    /// A clone of a waker that a poll made and did not need: dropped last.
    #[inline]
    pub(crate) fn drop_spare_waker(&mut self, w: Option<Waker>) {
        if w.is_some() {
            self.spare_waker = w;
            self.todo |= DROPS;
        }
    }

    /// A key that left the map, or that it did not keep: dropped last.
    #[inline]
    pub(crate) fn drop_key(&mut self, k: Option<K>) {
        if needs_drop::<K>() && k.is_some() {
            self.key = k;
            self.todo |= DROPS;
        }
    }

    /// A copy of a key that a poll made and did not need: dropped last.
    #[inline]
    pub(crate) fn drop_spare_key(&mut self, k: Option<K>) {
        if needs_drop::<K>() && k.is_some() {
            self.spare_key = k;
            self.todo |= DROPS;
        }
    }

    /// Whether carrying this out would run no code at all.
    #[inline]
    pub(crate) fn is_quiet(&self) -> bool {
        self.todo == 0
    }

    /// The key to drop, for an operation that has nothing else to do.
    #[inline]
    pub(crate) fn into_key(mut self) -> Option<K> {
        debug_assert!(self.todo & !DROPS == 0 && self.waker.is_none());
        self.todo = 0;
        self.key.take()
    }

    /// Values left a map that has a limit: producers waiting for room are
    /// let in.
    #[inline]
    pub(crate) fn freed(&mut self) {
        self.todo |= FREED;
    }

    /// The last thing an operation does under the lock: if wake-ups are
    /// queued (or `close` sweeps) or a `drained()` future watches, takes the
    /// next due waker unless the operation has one of its own, and notes
    /// whether more are due and whether the map just became idle.
    #[inline]
    pub(crate) fn collect<V>(&mut self, st: &mut State<K, V>) {
        if st.needs_collect() {
            self.collect_slow(st);
        }
    }

    #[inline(never)]
    fn collect_slow<V>(&mut self, st: &mut State<K, V>) {
        if self.first.is_none() {
            self.first = st.pop_due();
            if self.first.is_some() {
                self.todo |= FIRST;
            }
        }
        if st.has_due() {
            self.todo |= MORE;
        }
        if st.idle_now() {
            self.todo |= IDLE;
        }
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
        self.finish(&mut after);
        r
    }

    /// Notes that a value left the map, if a limit makes that news.
    #[inline]
    pub(crate) fn note_freed(&self, after: &mut After<K>) {
        if self.limited() {
            after.freed();
        }
    }

    /// Carries out what an operation left to do, then resumes the first
    /// panic of the user code it ran, if any.
    #[inline]
    pub(crate) fn finish(&self, after: &mut After<K>) {
        match after.todo {
            0 => {}
            // The common case (an insert waking its one waiter): nothing
            // runs after this waker, so there is nothing to protect from a
            // panic in it.
            FIRST | LAST => {
                after.todo = 0;
                if let Some(w) = after.first.take().or_else(|| after.last.take()) {
                    w.wake();
                }
            }
            _ => resume(self.finish_caught(after)),
        }
    }

    /// [`finish`](Self::finish), handing back the first panic (with `std`)
    /// instead of resuming it.
    #[inline(never)]
    pub(crate) fn finish_caught(&self, after: &mut After<K>) -> Option<Panic> {
        let todo = core::mem::replace(&mut after.todo, 0);
        let (first, last) = (after.first.take(), after.last.take());
        let (waker, spare_waker) = (after.waker.take(), after.spare_waker.take());
        let (key, spare_key) = (after.key.take(), after.spare_key.take());
        let mut panic = None;
        if let Some(w) = first {
            caught(|| w.wake(), &mut panic);
        }
        if todo & MORE != 0 {
            self.drain(&mut panic);
        }
        if let Some(w) = last {
            caught(|| w.wake(), &mut panic);
        }
        if todo & IDLE != 0 {
            caught(|| self.events.idle(), &mut panic);
        }
        if todo & FREED != 0 {
            caught(|| self.events.room(1), &mut panic);
        }
        // Last: a destructor that panics can no longer cost anyone a wake-up.
        if todo & DROPS != 0 {
            if waker.is_some() {
                caught(|| drop(waker), &mut panic);
            }
            if spare_waker.is_some() {
                caught(|| drop(spare_waker), &mut panic);
            }
            if key.is_some() {
                caught(|| drop(key), &mut panic);
            }
            if spare_key.is_some() {
                caught(|| drop(spare_key), &mut panic);
            }
        }
        panic
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
