//! The reference model: what the documentation says the map does, as plain
//! data. Per key: its value, whether a promise reserves it, the waiting
//! futures in registration order, and which `take` holds the baton (was woken
//! to receive the current value). Per future: its kind, its phase, and the
//! waker the map holds "armed" (stored and not woken since the last
//! `Pending`). Map-wide: closed or not, the limit, the producers waiting for
//! room in the order they started waiting, and the keys announced to the
//! demand handles.
//!
//! None of the implementation's machinery (slab, wake queue, listeners)
//! appears here. A wake-up runs a future's waker only if it is armed, so with
//! one thread the wake count of every waker of a consumer future (`get`,
//! `take`, `get_or_promise`), an `insert_async` and a `closed()` future is
//! exact. `drained()` and `demand.next()` wait on map-wide conditions whose
//! extra wake-ups (a notification passed on when a woken waiter is dropped)
//! the documentation does not rule out: for those the model says only when
//! a wake-up is owed, and the interpreter checks that it came.

use std::collections::VecDeque;
use std::task::Poll;

use awaitmap::WaitError;

use super::{KEYS, SLOTS};

/// Which operation made a future.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Get,
    Take,
    GetOrPromise,
    InsertAsync,
    Closed,
    Drained,
    Next,
}

impl Kind {
    /// Futures that wait on one key, registered in the map: they count in
    /// `waiters()` from their first `Pending` until they complete or drop.
    pub(crate) fn is_consumer(self) -> bool {
        matches!(self, Kind::Get | Kind::Take | Kind::GetOrPromise)
    }

    /// Futures whose every wake-up the model predicts.
    pub(crate) fn exact_wakes(self) -> bool {
        !matches!(self, Kind::Drained | Kind::Next)
    }
}

/// What a future resolved with, in terms of value ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `get`, `take`.
    Wait(Result<u64, WaitError>),
    /// `get_or_promise`.
    Coalesced(Result<Coalesced, WaitError>),
    /// `insert_async`: the value it replaced.
    Stored(Option<u64>),
    /// `closed()`.
    Closed,
    /// `drained()`.
    Drained,
    /// `demand.next()`.
    Wanted(Option<u8>),
}

/// The `Ok` of a `get_or_promise`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coalesced {
    Value(u64),
    /// The caller became the key's producer.
    Promise,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Created, never polled to `Pending`: the map knows nothing of it.
    Unpolled,
    /// Polled to `Pending`. A consumer is in its key's list; an
    /// `insert_async` is in the queue of producers waiting for room.
    Waiting,
    /// A consumer failed by `cancel`, not yet polled: still registered
    /// (counted by `waiters`), in no list; resolves `Err(Cancelled)`.
    Cancelled,
    /// A `get` or `take` failed by an abandoned promise, not yet polled:
    /// like `Cancelled`, but resolves `Err(Abandoned)`.
    Abandoned,
    /// A `get_or_promise` whose producer abandoned the key, not yet polled:
    /// registered, in no list; its next poll starts over as a fresh call.
    Restart,
}

#[derive(Debug)]
struct ModelFuture {
    kind: Kind,
    key: usize,
    phase: Phase,
    /// Indices of its two wakers (A, B) in the waker table.
    wakers: [usize; 2],
    /// The waker the map holds and has not woken since the last `Pending`.
    armed: Option<usize>,
    /// An `insert_async`'s value (it holds it until stored or dropped).
    value: u64,
    /// An `insert_async` let in by a value that left (or by `close`) since
    /// it last started waiting.
    let_in: bool,
    /// A `drained()` future that is owed a wake-up: nobody waited at the end
    /// of some step since its last `Pending`.
    due: bool,
}

#[derive(Debug, Default)]
struct ModelKey {
    value: Option<u64>,
    /// Waiting `get`s and `get_or_promise`s (slots), earliest first.
    gets: Vec<usize>,
    /// Waiting `take`s (slots), earliest registered first.
    takes: Vec<usize>,
    /// The `take` woken to receive the current value (always in `takes`).
    baton: Option<usize>,
    /// A promise reserves the key.
    promised: bool,
    /// The key's current stay in the map: set while it has a value, a
    /// promise or a waiting future, with a fresh id each time it arrives. A
    /// demand announcement names the stay it was made for.
    stay: Option<u64>,
    /// The key's current wanted spell (waiters, no value, no promise) was
    /// announced, or needed no announcement (nobody watched the demand when
    /// it began). Cleared when a value or a promise arrives.
    spell_announced: bool,
    /// A `demand.next()` handed the key out in its current spell: another
    /// announcement of it still queued is stale. Cleared with the above.
    handed: bool,
}

impl ModelKey {
    fn present(&self) -> bool {
        self.value.is_some() || self.promised || !self.gets.is_empty() || !self.takes.is_empty()
    }

    /// Wanted by consumers: someone waits, and no value or producer is there.
    fn wanted(&self) -> bool {
        self.value.is_none() && !self.promised && !(self.gets.is_empty() && self.takes.is_empty())
    }
}

#[derive(Debug)]
pub(crate) struct Model {
    keys: [ModelKey; KEYS as usize],
    futures: [Option<ModelFuture>; SLOTS as usize],
    /// How often each waker must have been woken so far (exact kinds only).
    pub(crate) expected_wakes: Vec<usize>,
    pub(crate) closed: bool,
    pub(crate) limit: Option<usize>,
    /// `insert_async` futures waiting for room, in the order they (last)
    /// started waiting; those let in come first.
    room_queue: Vec<usize>,
    /// Live demand handles.
    demand_handles: usize,
    /// Keys announced to the demand handles and not handed out yet, each
    /// with the stay it was announced for.
    announced: VecDeque<(usize, u64)>,
    next_stay: u64,
}

impl Model {
    pub(crate) fn new(limit: Option<usize>) -> Self {
        Model {
            keys: Default::default(),
            futures: Default::default(),
            expected_wakes: Vec::new(),
            closed: false,
            limit,
            room_queue: Vec::new(),
            demand_handles: 0,
            announced: VecDeque::new(),
            next_stay: 0,
        }
    }

    // -- Queries --------------------------------------------------------

    pub(crate) fn len(&self) -> usize {
        self.keys.iter().filter(|k| k.value.is_some()).count()
    }

    pub(crate) fn value(&self, key: usize) -> Option<u64> {
        self.keys[key].value
    }

    pub(crate) fn is_promised(&self, key: usize) -> bool {
        self.keys[key].promised
    }

    /// Registered consumer futures: waiting, or failed (or told to start
    /// over) and not yet polled.
    pub(crate) fn waiters(&self) -> usize {
        self.futures
            .iter()
            .flatten()
            .filter(|f| f.kind.is_consumer() && f.phase != Phase::Unpolled)
            .count()
    }

    /// Values held by `insert_async` futures that have not stored them.
    pub(crate) fn held_values(&self) -> usize {
        self.futures
            .iter()
            .flatten()
            .filter(|f| f.kind == Kind::InsertAsync)
            .count()
    }

    pub(crate) fn kind_and_key(&self, slot: usize) -> Option<(Kind, usize)> {
        self.futures[slot].as_ref().map(|f| (f.kind, f.key))
    }

    pub(crate) fn is_waiting(&self, slot: usize) -> bool {
        self.futures[slot]
            .as_ref()
            .is_some_and(|f| f.phase == Phase::Waiting)
    }

    pub(crate) fn wakers(&self, slot: usize) -> [usize; 2] {
        self.futures[slot].as_ref().expect("a future").wakers
    }

    /// A waiting `drained()` future owed a wake-up.
    pub(crate) fn drained_due(&self, slot: usize) -> bool {
        self.futures[slot]
            .as_ref()
            .is_some_and(|f| f.kind == Kind::Drained && f.phase == Phase::Waiting && f.due)
    }

    /// Announced keys that a `next()` would hand out now.
    pub(crate) fn wanted_now(&self) -> usize {
        self.announced
            .iter()
            .filter(|&&(key, stay)| self.still_wanted(key, stay))
            .count()
    }

    fn still_wanted(&self, key: usize, stay: u64) -> bool {
        let k = &self.keys[key];
        k.stay == Some(stay) && k.wanted() && !k.handed
    }

    /// A value or a producer arrived for `key`: its wanted spell, if any,
    /// ends.
    fn served(&mut self, key: usize) {
        let k = &mut self.keys[key];
        k.spell_announced = false;
        k.handed = false;
    }

    /// A value or a waiter left `key`. If that leaves the key wanted in a
    /// spell not yet announced: with no demand handle there is nothing to
    /// announce; otherwise the first take (or, with no take, every get) is
    /// woken, so that its next poll announces the key.
    fn nudge(&mut self, key: usize) {
        let k = &self.keys[key];
        if !k.wanted() || k.spell_announced {
            return;
        }
        if self.demand_handles == 0 {
            self.keys[key].spell_announced = true;
            return;
        }
        let due: Vec<usize> = match k.takes.first() {
            Some(&t) => vec![t],
            None => k.gets.clone(),
        };
        for slot in due {
            self.wake(slot);
        }
    }

    /// A registered consumer polled again waits on: in a wanted spell not
    /// yet announced, with a demand handle, it announces its key.
    fn waits_on(&mut self, key: usize) {
        let k = &mut self.keys[key];
        if self.demand_handles > 0 && k.wanted() && !k.spell_announced {
            k.spell_announced = true;
            let stay = k.stay.expect("a wanted key is present");
            self.announced.push_back((key, stay));
        }
    }

    /// Room for a value of `key` under the limit: the map is closed, the
    /// key has a value to replace or a future waiting for it, or the map
    /// holds fewer values than its limit.
    fn has_room(&self, key: usize) -> bool {
        let k = &self.keys[key];
        self.closed
            || k.value.is_some()
            || !k.gets.is_empty()
            || !k.takes.is_empty()
            || self.limit.is_none_or(|limit| self.len() < limit)
    }

    /// A consumer's first poll registered it: on a limited map, every
    /// producer waiting for room and not let in yet is woken to look again
    /// (the one holding this key's value now gets in). A `get_or_promise`
    /// that starts over after an abandoned promise does not count: its key
    /// has a promise, whose `fulfill` ignores the limit.
    fn started_waiting(&mut self) {
        if self.limit.is_none() {
            return;
        }
        for i in 0..self.room_queue.len() {
            let slot = self.room_queue[i];
            let f = self.futures[slot]
                .as_mut()
                .expect("a queued producer exists");
            if !f.let_in {
                f.let_in = true;
                self.wake(slot);
            }
        }
    }

    // -- Bookkeeping ----------------------------------------------------

    /// A wake-up for the future in `slot`: its waker runs if the map holds
    /// it; a future already woken (and not polled since) is not woken again.
    fn wake(&mut self, slot: usize) {
        let f = self.futures[slot].as_mut().expect("wake of an empty slot");
        if let Some(w) = f.armed.take() {
            self.expected_wakes[w] += 1;
        }
    }

    /// End of a step: keys that arrived get a fresh stay, keys that left
    /// lose theirs; `drained()` futures are owed a wake-up if nobody waits.
    pub(crate) fn settle(&mut self) {
        for k in &mut self.keys {
            if !k.present() {
                k.stay = None;
                k.spell_announced = false;
                k.handed = false;
            } else if k.stay.is_none() {
                k.stay = Some(self.next_stay);
                self.next_stay += 1;
            }
        }
        if self.waiters() == 0 {
            for f in self.futures.iter_mut().flatten() {
                if f.kind == Kind::Drained && f.phase == Phase::Waiting {
                    f.due = true;
                }
            }
        }
    }

    pub(crate) fn create(
        &mut self,
        kind: Kind,
        key: usize,
        slot: usize,
        wakers: [usize; 2],
        value: u64,
    ) {
        self.futures[slot] = Some(ModelFuture {
            kind,
            key,
            phase: Phase::Unpolled,
            wakers,
            armed: None,
            value,
            let_in: false,
            due: false,
        });
    }

    fn unlink(&mut self, kind: Kind, key: usize, slot: usize) {
        let k = &mut self.keys[key];
        let list = match kind {
            Kind::Get | Kind::GetOrPromise => &mut k.gets,
            Kind::Take => &mut k.takes,
            _ => unreachable!("only consumers are in a key's lists"),
        };
        let at = list
            .iter()
            .position(|&s| s == slot)
            .expect("a waiting future is in its list");
        list.remove(at);
    }

    fn finish(&mut self, slot: usize) {
        self.futures[slot] = None;
    }

    /// Hands the baton to the earliest waiting `take` of `key`, if any.
    fn pass_baton(&mut self, key: usize) {
        let k = &mut self.keys[key];
        debug_assert!(k.baton.is_none());
        if let Some(&head) = k.takes.first() {
            k.baton = Some(head);
            self.wake(head);
        }
    }

    /// Store, then wake: every waiting `get` (and `get_or_promise`) and,
    /// unless a take holds the baton, the earliest waiting `take`. What
    /// `insert`, `try_insert`, `insert_async` and `fulfill` share.
    fn store(&mut self, key: usize, v: u64) -> Option<u64> {
        if self.keys[key].value.is_none() {
            self.served(key);
        }
        let k = &mut self.keys[key];
        let old = k.value.replace(v);
        let gets = k.gets.clone();
        let baton_free = k.baton.is_none();
        for g in gets {
            self.wake(g);
        }
        if baton_free {
            self.pass_baton(key);
        }
        old
    }

    /// A value left the map (`take`, `remove`): on a limited map it lets
    /// the first producer waiting for room (and not let in yet) in.
    fn freed(&mut self) {
        if self.limit.is_some() {
            self.let_in_next();
        }
    }

    fn let_in_next(&mut self) {
        let next = self.room_queue.iter().copied().find(|&s| {
            let f = self.futures[s].as_ref().expect("a queued producer exists");
            !f.let_in
        });
        if let Some(slot) = next {
            self.futures[slot].as_mut().expect("queued").let_in = true;
            self.wake(slot);
        }
    }

    fn leave_room_queue(&mut self, slot: usize) {
        self.room_queue.retain(|&s| s != slot);
    }

    /// Fails the consumers of `key` that would not resolve `Ok` if polled
    /// now (with a value: the takes without the baton; without: all), wakes
    /// them and returns how many. `cancel` fails them with `Cancelled`; an
    /// abandoned promise fails `get`s and `take`s with `Abandoned` and tells
    /// `get_or_promise` callers to start over.
    fn fail_waiters(&mut self, key: usize, abandoned: bool) -> usize {
        let k = &mut self.keys[key];
        let mut failed = Vec::new();
        let keep = if k.value.is_some() {
            k.baton
        } else {
            failed.append(&mut k.gets);
            None
        };
        k.takes.retain(|&t| {
            if Some(t) == keep {
                true
            } else {
                failed.push(t);
                false
            }
        });
        k.baton = keep;
        for &slot in &failed {
            let f = self.futures[slot].as_mut().expect("a listed future exists");
            f.phase = match (abandoned, f.kind) {
                (false, _) => Phase::Cancelled,
                (true, Kind::GetOrPromise) => Phase::Restart,
                (true, _) => Phase::Abandoned,
            };
            self.wake(slot);
        }
        failed.len()
    }

    // -- Polls ----------------------------------------------------------

    /// One poll with waker `w` (a waker-table index).
    pub(crate) fn poll(&mut self, slot: usize, w: usize) -> Poll<Outcome> {
        let kind = self.futures[slot]
            .as_ref()
            .expect("poll of an empty slot")
            .kind;
        match kind {
            Kind::Get | Kind::Take => self.poll_wait(slot, w).map(Outcome::Wait),
            Kind::GetOrPromise => self.poll_coalesce(slot, w).map(Outcome::Coalesced),
            Kind::InsertAsync => self.poll_insert(slot, w).map(Outcome::Stored),
            Kind::Closed => self.poll_closed(slot, w),
            Kind::Drained => self.poll_drained(slot, w),
            Kind::Next => self.poll_next(slot),
        }
    }

    fn poll_wait(&mut self, slot: usize, w: usize) -> Poll<Result<u64, WaitError>> {
        let f = self.futures[slot].as_mut().expect("a future");
        let (kind, key) = (f.kind, f.key);
        match f.phase {
            // A failed future stays failed, even if a value arrived since.
            Phase::Cancelled => {
                self.finish(slot);
                Poll::Ready(Err(WaitError::Cancelled))
            }
            Phase::Abandoned => {
                self.finish(slot);
                Poll::Ready(Err(WaitError::Abandoned))
            }
            Phase::Restart => unreachable!("only get_or_promise starts over"),
            // A present key resolves at once (a fresh `take` takes a present
            // value even while another holds the baton); after `close` an
            // absent key fails at once; otherwise the future registers. It
            // makes the key wanted if nothing else was there: no value, no
            // promise, no other waiter.
            Phase::Unpolled => {
                let k = &mut self.keys[key];
                if let Some(v) = k.value {
                    self.finish(slot);
                    if kind == Kind::Take {
                        self.keys[key].value = None;
                        self.nudge(key);
                        self.freed();
                    }
                    return Poll::Ready(Ok(v));
                }
                if self.closed {
                    self.finish(slot);
                    return Poll::Ready(Err(WaitError::Closed));
                }
                let newly_wanted = !k.present();
                match kind {
                    Kind::Get => k.gets.push(slot),
                    _ => k.takes.push(slot),
                }
                f.phase = Phase::Waiting;
                f.armed = Some(w);
                if newly_wanted {
                    let stay = self.next_stay;
                    self.next_stay += 1;
                    self.keys[key].stay = Some(stay);
                    // Announced now, or wanted before anyone watched.
                    self.keys[key].spell_announced = true;
                    if self.demand_handles > 0 {
                        self.announced.push_back((key, stay));
                    }
                }
                self.started_waiting();
                Poll::Pending
            }
            // A `get` resolves if the key has a value; a `take` if it has a
            // value and the take holds the baton (or no take does). Closed:
            // everything else fails.
            Phase::Waiting => {
                let k = &mut self.keys[key];
                let mine = match kind {
                    Kind::Get => k.value.is_some(),
                    _ => k.value.is_some() && (k.baton == Some(slot) || k.baton.is_none()),
                };
                if mine || self.closed {
                    let result = if mine {
                        let v = k.value.expect("mine implies a value");
                        if kind == Kind::Take {
                            k.value = None;
                        }
                        Ok(v)
                    } else {
                        Err(WaitError::Closed)
                    };
                    if k.baton == Some(slot) {
                        k.baton = None;
                    }
                    self.unlink(kind, key, slot);
                    self.finish(slot);
                    self.nudge(key);
                    if kind == Kind::Take && mine {
                        self.freed();
                    }
                    return Poll::Ready(result);
                }
                // A woken `take` that finds the value gone waits again,
                // first in line, and gives up the baton for the next insert.
                if k.baton == Some(slot) {
                    k.baton = None;
                }
                f.armed = Some(w);
                self.waits_on(key);
                Poll::Pending
            }
        }
    }

    /// `get_or_promise`: the value if there is one; else, after `close`,
    /// `Closed`; else the promise if nobody holds it; else wait as a `get`
    /// for the producer's value. A wait failed by `cancel` ends; one whose
    /// producer abandoned starts over, so the first of those polled becomes
    /// the new producer.
    fn poll_coalesce(&mut self, slot: usize, w: usize) -> Poll<Result<Coalesced, WaitError>> {
        let f = self.futures[slot].as_mut().expect("a future");
        let key = f.key;
        match f.phase {
            Phase::Cancelled => {
                self.finish(slot);
                Poll::Ready(Err(WaitError::Cancelled))
            }
            Phase::Abandoned => unreachable!("get_or_promise starts over instead"),
            Phase::Unpolled | Phase::Restart => {
                let first = f.phase == Phase::Unpolled;
                let k = &mut self.keys[key];
                let done = if let Some(v) = k.value {
                    Ok(Coalesced::Value(v))
                } else if self.closed {
                    Err(WaitError::Closed)
                } else if !k.promised {
                    k.promised = true;
                    k.spell_announced = false;
                    k.handed = false;
                    Ok(Coalesced::Promise)
                } else {
                    k.gets.push(slot);
                    f.phase = Phase::Waiting;
                    f.armed = Some(w);
                    if first {
                        self.started_waiting();
                    }
                    return Poll::Pending;
                };
                self.finish(slot);
                Poll::Ready(done)
            }
            // Woken for a value that is gone again (taken or removed) while
            // nobody produces the key any more, the caller takes the work
            // over, as a fresh call would (the documentation does not say;
            // this follows the map).
            Phase::Waiting => {
                let k = &mut self.keys[key];
                let done = if let Some(v) = k.value {
                    Ok(Coalesced::Value(v))
                } else if self.closed {
                    Err(WaitError::Closed)
                } else if !k.promised {
                    k.promised = true;
                    k.spell_announced = false;
                    k.handed = false;
                    Ok(Coalesced::Promise)
                } else {
                    f.armed = Some(w);
                    self.waits_on(key);
                    return Poll::Pending;
                };
                self.unlink(Kind::GetOrPromise, key, slot);
                self.finish(slot);
                self.nudge(key);
                Poll::Ready(done)
            }
        }
    }

    /// `insert_async`: stores at once if there is room (the map is closed,
    /// below its limit, or the key has a value to replace). Otherwise it
    /// waits at the back of the producers' queue; one that was let in but
    /// finds no room (a `try_insert` or plain `insert` took it) goes to the
    /// back again; one polled without being let in keeps its place.
    fn poll_insert(&mut self, slot: usize, w: usize) -> Poll<Option<u64>> {
        let f = self.futures[slot].as_ref().expect("a future");
        let (key, value) = (f.key, f.value);
        if self.has_room(key) {
            self.leave_room_queue(slot);
            self.finish(slot);
            return Poll::Ready(self.store(key, value));
        }
        let f = self.futures[slot].as_mut().expect("a future");
        let requeue = f.phase == Phase::Unpolled || f.let_in;
        f.phase = Phase::Waiting;
        f.let_in = false;
        f.armed = Some(w);
        if requeue {
            self.leave_room_queue(slot);
            self.room_queue.push(slot);
        }
        Poll::Pending
    }

    fn poll_closed(&mut self, slot: usize, w: usize) -> Poll<Outcome> {
        if self.closed {
            self.finish(slot);
            return Poll::Ready(Outcome::Closed);
        }
        let f = self.futures[slot].as_mut().expect("a future");
        f.phase = Phase::Waiting;
        f.armed = Some(w);
        Poll::Pending
    }

    fn poll_drained(&mut self, slot: usize, _w: usize) -> Poll<Outcome> {
        if self.waiters() == 0 {
            self.finish(slot);
            return Poll::Ready(Outcome::Drained);
        }
        let f = self.futures[slot].as_mut().expect("a future");
        f.phase = Phase::Waiting;
        f.due = false;
        Poll::Pending
    }

    /// `demand.next()`: the first announced key still wanted (those no
    /// longer wanted are skipped, and leave the queue); `None` once closed
    /// with none left.
    fn poll_next(&mut self, slot: usize) -> Poll<Outcome> {
        while let Some((key, stay)) = self.announced.pop_front() {
            if self.still_wanted(key, stay) {
                self.keys[key].handed = true;
                self.finish(slot);
                return Poll::Ready(Outcome::Wanted(Some(
                    u8::try_from(key).expect("a small key"),
                )));
            }
        }
        if self.closed {
            self.finish(slot);
            return Poll::Ready(Outcome::Wanted(None));
        }
        self.futures[slot].as_mut().expect("a future").phase = Phase::Waiting;
        Poll::Pending
    }

    // -- Other operations -----------------------------------------------

    /// Dropping deregisters. A `take` holding the baton passes it on if the
    /// value is still there; an `insert_async` that was let in passes the
    /// room on to the next producer.
    pub(crate) fn drop_future(&mut self, slot: usize) {
        let Some(f) = self.futures[slot].take() else {
            return;
        };
        if f.phase != Phase::Waiting {
            return;
        }
        match f.kind {
            Kind::Get | Kind::Take | Kind::GetOrPromise => {
                self.unlink(f.kind, f.key, slot);
                let k = &mut self.keys[f.key];
                if k.baton == Some(slot) {
                    k.baton = None;
                    if k.value.is_some() {
                        self.pass_baton(f.key);
                    }
                }
                self.nudge(f.key);
            }
            Kind::InsertAsync => {
                self.leave_room_queue(slot);
                if f.let_in {
                    self.let_in_next();
                }
            }
            Kind::Closed | Kind::Drained | Kind::Next => {}
        }
    }

    pub(crate) fn insert(&mut self, key: usize, v: u64) -> Option<u64> {
        self.store(key, v)
    }

    /// `Err` when there is no room (see [`Model::has_room`]).
    pub(crate) fn try_insert(&mut self, key: usize, v: u64) -> Result<Option<u64>, ()> {
        if self.has_room(key) {
            Ok(self.store(key, v))
        } else {
            Err(())
        }
    }

    /// Waiting futures are unaffected.
    pub(crate) fn remove(&mut self, key: usize) -> Option<u64> {
        let v = self.keys[key].value.take();
        if v.is_some() {
            // Every waiter was woken while the value was there: the first
            // to poll again announces the key; with no demand handle there
            // is nothing to announce.
            let k = &mut self.keys[key];
            if self.demand_handles == 0 && k.wanted() {
                k.spell_announced = true;
            }
            self.freed();
        }
        v
    }

    pub(crate) fn cancel(&mut self, key: usize) -> usize {
        self.fail_waiters(key, false)
    }

    /// Permanent: wakes every waiting consumer (each resolves on its next
    /// poll: `Ok` if its key has a value for it, else `Closed`) and every
    /// `closed()` future, and lets every producer waiting for room in.
    pub(crate) fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        for slot in 0..self.futures.len() {
            let wake = self.futures[slot].as_ref().is_some_and(|f| {
                f.phase == Phase::Waiting && (f.kind.is_consumer() || f.kind == Kind::Closed)
            });
            if wake {
                self.wake(slot);
            }
        }
        while self.room_queue.iter().any(|&s| {
            let f = self.futures[s].as_ref().expect("queued");
            !f.let_in
        }) {
            self.let_in_next();
        }
    }

    /// `None` if the key has a value or a promise, or the map is closed.
    pub(crate) fn promise(&mut self, key: usize) -> bool {
        let k = &mut self.keys[key];
        if self.closed || k.value.is_some() || k.promised {
            return false;
        }
        k.promised = true;
        k.spell_announced = false;
        k.handed = false;
        true
    }

    /// Stores as `insert` does (even beyond the limit, even closed) and
    /// releases the reservation.
    pub(crate) fn fulfill(&mut self, key: usize, v: u64) -> Option<u64> {
        self.keys[key].promised = false;
        self.store(key, v)
    }

    /// Releases the reservation and fails the key's waiters as documented.
    pub(crate) fn abandon(&mut self, key: usize) -> usize {
        self.keys[key].promised = false;
        self.fail_waiters(key, true)
    }

    pub(crate) fn new_demand(&mut self) {
        self.demand_handles += 1;
    }

    /// With the last handle, the announced keys are forgotten.
    pub(crate) fn drop_demand(&mut self) {
        self.demand_handles -= 1;
        if self.demand_handles == 0 {
            self.announced.clear();
        }
    }
}
