//! [`FixedAwaitMap`]: the map for firmware without a heap.
//!
//! Its storage is two arrays sized by const parameters, built in a constant:
//! `KEYS` key slots (a key with a value, or with futures waiting on it) and
//! `WAITERS` waiter slots (one per waiting future). A lookup compares the key
//! with each occupied slot in turn (only `K: Eq` runs under the lock; nothing
//! is hashed), which for the few dozen keys of a firmware is both the
//! smallest code and fast. A waiter slot records its key slot, its kind,
//! where it stands (waiting, woken, failed) and its waker; a `take`'s place
//! in line is its registration number.
//!
//! Why plain arrays rather than a crate's table: a waiter slot names its
//! key's slot by index, so key slots must not move while futures wait, and
//! heapless's `LinearMap` and `IndexMap` move entries on removal
//! (`swap_remove`); `IndexMap` also hashes keys inside the map (here, under
//! the lock), and hashbrown with a fixed arena needs an `unsafe`
//! `Allocator` implementation and links hashbrown's resize code (2 KB in the
//! allocating map's firmware). The table itself is small either way: in the
//! firmware of `benches/size`, a bare `heapless::LinearMap<u8, u32, 8>`
//! costs 264 bytes of flash and a `FnvIndexMap` 592, against about 3 KB for
//! this whole map with its waiters.
//!
//! Wake-ups go through the slots too: an operation marks the futures it
//! wakes, then moves their wakers out a batch at a time and wakes them with
//! the lock released. A slot marked but not yet drained still holds its
//! waker, so "due a wake-up" is "marked, with a waker".

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use mutex::{ConstInit, ScopedRawMutex};

use crate::WaitError;
use crate::sync::{DefaultLock, Lock, Panic, caught, const_fn_unless_loom, resume};

/// Wakers moved out per trip through the lock.
const BATCH: usize = 8;
/// A free waiter slot's key index, and a future's slot before it registers.
const FREE: u16 = u16::MAX;
/// A future's slot once it returned `Ready`.
const DONE: u16 = u16::MAX - 1;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Waiting,
    /// An `insert` (or a `take` that left) woke it for the value: it looks
    /// at the value when polled.
    Woken,
    /// `close` woke it: when polled, it resolves with a value its key has
    /// for it (a `take` not while another is woken for it), else `Closed`.
    Shut,
    /// `cancel` ended its wait.
    Failed(WaitError),
}

/// One waiting future.
struct Node {
    /// The index of its key's slot, `FREE` if the node is free.
    entry: u16,
    take: bool,
    status: Status,
    /// Registration number: the earliest waiting `take` is woken first.
    seq: u32,
    waker: Option<Waker>,
}

impl Node {
    const FREE: Node = Node {
        entry: FREE,
        take: false,
        status: Status::Waiting,
        seq: 0,
        waker: None,
    };
}

/// One key: its value, or the futures waiting for one, or both.
struct Entry<K, V> {
    key: K,
    value: Option<V>,
    /// Nodes whose `entry` is this slot.
    waiters: u16,
    /// One of those is a `take` marked woken for the value: the next
    /// `insert` wakes no other `take`.
    handoff: bool,
}

/// What a trip through the lock needs made, or leaves to drop, with the lock
/// released.
struct Spare<K> {
    key: Option<K>,
    waker: Option<Waker>,
}

impl<K> Spare<K> {
    const NONE: Self = Spare {
        key: None,
        waker: None,
    };
}

/// Wakers moved out under the lock, to wake once it is released.
struct Due {
    wakers: [Option<Waker>; BATCH],
    count: usize,
    /// More nodes may be due: look again after waking these.
    more: bool,
}

impl Due {
    const NONE: Self = Due {
        wakers: [const { None }; BATCH],
        count: 0,
        more: false,
    };
}

enum Step<V> {
    Ready(Result<V, WaitError>),
    Pending,
    /// Make a waker (and a copy of the key if `true`) and come back.
    Make(bool),
}

/// The state behind the lock.
struct Table<K, V, const N: usize, const W: usize> {
    entries: [Option<Entry<K, V>>; N],
    nodes: [Node; W],
    next_seq: u32,
    closed: bool,
}

impl<K, V, const N: usize, const W: usize> Table<K, V, N, W> {
    fn entry(&mut self, i: usize) -> &mut Entry<K, V> {
        match &mut self.entries[i] {
            Some(e) => e,
            None => unreachable!("a waiting future's key slot is in use"),
        }
    }

    /// Frees key slot `i` if it holds neither a value nor a waiter; its key
    /// goes to `freed`, to be dropped with the lock released.
    fn vacate(&mut self, i: usize, freed: &mut Spare<K>) {
        if self.entries[i]
            .as_ref()
            .is_some_and(|e| e.waiters == 0 && e.value.is_none())
        {
            freed.key = self.entries[i].take().map(|e| e.key);
        }
    }

    /// Frees node `n`; its waker goes to `freed`.
    fn free(&mut self, n: usize, freed: &mut Spare<K>) {
        let node = core::mem::replace(&mut self.nodes[n], Node::FREE);
        freed.waker = node.waker;
        let i = usize::from(node.entry);
        self.entry(i).waiters -= 1;
        self.vacate(i, freed);
    }

    /// Marks the earliest waiting `take` of key slot `i` woken for its
    /// value. One that `close` woke still counts as waiting: the value is
    /// for it now, and the takes behind it fail with `Closed`.
    fn wake_first_take(&mut self, i: usize) -> bool {
        let next = self.next_seq;
        let waits = |n: &Node| n.status == Status::Waiting || n.status == Status::Shut;
        let first = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| usize::from(n.entry) == i && n.take && waits(n))
            .max_by_key(|(_, n)| next.wrapping_sub(n.seq))
            .map(|(at, _)| at);
        if let Some(at) = first {
            self.nodes[at].status = Status::Woken;
            self.entry(i).handoff = true;
        }
        first.is_some()
    }

    /// Moves the wakers of the first `BATCH` marked nodes out: the gets
    /// before the takes, each in the order they registered. (One look over
    /// the nodes per waker: a node whose waker is out is no longer due.)
    fn collect(&mut self, due: &mut Due) {
        let next = self.next_seq;
        due.count = 0;
        while due.count < BATCH {
            let first = self
                .nodes
                .iter_mut()
                .filter(|n| n.status != Status::Waiting && n.waker.is_some())
                .min_by_key(|n| (n.take, core::cmp::Reverse(next.wrapping_sub(n.seq))));
            match first {
                Some(node) => due.wakers[due.count] = node.waker.take(),
                None => break,
            }
            due.count += 1;
        }
        due.more = due.count == BATCH;
    }

    /// Starts draining if anything was marked.
    fn collect_if(&mut self, marked: bool, due: &mut Due) {
        if marked {
            self.collect(due);
        }
    }

    /// The value for a future of key slot `i`: a clone for a `get` (`read`
    /// is `V::clone`), moved out for a `take` that `may_take`.
    fn read(&mut self, i: usize, read: Option<fn(&V) -> V>, may_take: bool) -> Option<V> {
        let e = self.entry(i);
        match read {
            Some(clone) => e.value.as_ref().map(clone),
            None if may_take => e.value.take(),
            None => None,
        }
    }

    /// Stored values.
    fn len(&self) -> usize {
        self.entries
            .iter()
            .flatten()
            .filter(|e| e.value.is_some())
            .count()
    }

    /// Nodes in use: registered futures.
    fn live(&self) -> usize {
        self.nodes.iter().filter(|n| n.entry != FREE).count()
    }

    /// Marks every node for which `mark` says so; whether any was.
    fn mark(&mut self, mut mark: impl FnMut(&mut Node) -> bool) -> usize {
        let mut marked = 0;
        for node in self.nodes.iter_mut().filter(|n| n.entry != FREE) {
            if mark(node) {
                marked += 1;
            }
        }
        marked
    }
}

impl<K: Eq, V, const N: usize, const W: usize> Table<K, V, N, W> {
    fn find(&self, key: &K) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| e.key == *key))
    }

    /// One trip of a poll. `made` holds what earlier trips asked to have
    /// made; what this one frees goes to `freed`.
    fn poll(
        &mut self,
        key: &K,
        read: Option<fn(&V) -> V>,
        slot: &mut u16,
        waker: &Waker,
        made: &mut Spare<K>,
        freed: &mut Spare<K>,
    ) -> Step<V> {
        if *slot == FREE {
            return self.first_poll(key, read, slot, made, freed);
        }
        let n = usize::from(*slot);
        let node = &self.nodes[n];
        let (i, take, status) = (usize::from(node.entry), node.take, node.status);
        if let Status::Failed(error) = status {
            self.free(n, freed);
            return Step::Ready(Err(error));
        }
        let woken = status == Status::Woken;
        // A `take` waits its turn while another is woken for the value.
        let may_take = woken || !self.entry(i).handoff;
        let value = self.read(i, read, may_take);
        // Once closed, nothing waits (`close` woke every waiter): no value
        // for this future is `Closed`.
        let ended = match value {
            Some(v) => Some(Ok(v)),
            None if self.closed => Some(Err(WaitError::Closed)),
            None => None,
        };
        if take && woken {
            // It takes the value, or finds it gone and waits again.
            self.entry(i).handoff = false;
        }
        if let Some(result) = ended {
            self.free(n, freed);
            return Step::Ready(result);
        }
        let node = &mut self.nodes[n];
        node.status = Status::Waiting;
        if node.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            return Step::Pending;
        }
        match made.waker.take() {
            Some(waker) => {
                freed.waker = node.waker.replace(waker);
                Step::Pending
            }
            None => Step::Make(false),
        }
    }

    fn first_poll(
        &mut self,
        key: &K,
        read: Option<fn(&V) -> V>,
        slot: &mut u16,
        made: &mut Spare<K>,
        freed: &mut Spare<K>,
    ) -> Step<V> {
        let found = self.find(key);
        if let Some(i) = found {
            if let Some(v) = self.read(i, read, true) {
                self.vacate(i, freed);
                return Step::Ready(Ok(v));
            }
        }
        if self.closed {
            return Step::Ready(Err(WaitError::Closed));
        }
        let free_node = self.nodes.iter().position(|n| n.entry == FREE);
        let free_entry = found.or_else(|| self.entries.iter().position(Option::is_none));
        let (Some(n), Some(i)) = (free_node, free_entry) else {
            return Step::Ready(Err(WaitError::NoRoom));
        };
        if made.waker.is_none() || (found.is_none() && made.key.is_none()) {
            return Step::Make(found.is_none());
        }
        if let (None, Some(key)) = (found, made.key.take()) {
            self.entries[i] = Some(Entry {
                key,
                value: None,
                waiters: 0,
                handoff: false,
            });
        }
        self.entry(i).waiters += 1;
        self.nodes[n] = Node {
            entry: i as u16,
            take: read.is_none(),
            status: Status::Waiting,
            seq: self.next_seq,
            waker: made.waker.take(),
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        *slot = n as u16;
        Step::Pending
    }
}

impl<K, V, const N: usize, const W: usize> Table<K, V, N, W> {
    /// Node `n`'s future leaves: a `take` woken for a value that is still
    /// there passes its wake-up to the next `take`.
    fn leave(&mut self, n: usize, freed: &mut Spare<K>, due: &mut Due) {
        let node = &self.nodes[n];
        let i = usize::from(node.entry);
        let mut passed = false;
        if node.take && node.status == Status::Woken {
            self.entry(i).handoff = false;
            if self.entry(i).value.is_some() {
                passed = self.wake_first_take(i);
            }
        }
        self.free(n, freed);
        self.collect_if(passed, due);
    }
}

/// A map of fixed capacity that needs no heap: `KEYS` keys (with a value or
/// with futures waiting on them) and `WAITERS` waiting futures at once, all
/// in the map itself, so it can live in a `static` and a firmware that uses
/// it links no allocator.
///
/// It keeps the guarantees of [`AwaitMap`](crate::AwaitMap) for the calls it
/// has (`get`, `take`, `insert`, `remove`, `try_get`, `cancel`, `close`),
/// with two differences that come from its fixed size:
///
/// - [`insert`](Self::insert) of a new key when every key slot is taken
///   hands the key and value back, `Err((key, value))`, and stores nothing;
/// - a future that would have to wait when there is no slot for its key or
///   for itself resolves at once with [`WaitError::NoRoom`] and registers
///   nothing. (Waiting for room instead could hang a firmware whose slots
///   are all held by futures nobody polls; an error says what to resize.)
///
/// Keys are looked up by comparing them with each occupied slot: only
/// `K: Eq` runs under the lock, and no hashing is needed. That suits the
/// dozens of keys of a firmware; for thousands of keys, or keys that arrive
/// from outside, use `AwaitMap`.
///
/// Memory: `size_of::<Option<(K, Option<V>)>>()` plus 3 bytes or so per key
/// slot, and about 16 bytes per waiter slot on 32-bit targets (24 on 64-bit);
/// the README has measured figures.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "critical-section")] {
/// use awaitmap::{CsLock, FixedAwaitMap};
///
/// // Room for 8 keys and 4 waiting futures, guarded by a critical section.
/// static PINS: FixedAwaitMap<u8, bool, 8, 4, CsLock> = FixedAwaitMap::new();
///
/// let level = PINS.get(&3);
/// assert_eq!(PINS.insert(3, true), Ok(None)); // for example in an interrupt handler
/// assert_eq!(futures::executor::block_on(level), Ok(true));
/// # }
/// ```
pub struct FixedAwaitMap<K, V, const KEYS: usize, const WAITERS: usize, L = DefaultLock>
where
    L: ScopedRawMutex,
{
    state: Lock<Table<K, V, KEYS, WAITERS>, L>,
}

impl<K, V, const N: usize, const W: usize, L: ScopedRawMutex + ConstInit>
    FixedAwaitMap<K, V, N, W, L>
{
    const_fn_unless_loom! {
        /// An empty map, built in a constant (for a `static`), with the lock
        /// the type names.
        ///
        /// # Examples
        ///
        /// ```
        /// use awaitmap::FixedAwaitMap;
        ///
        /// static REPLIES: FixedAwaitMap<u32, u32, 16, 16> = FixedAwaitMap::new();
        /// assert_eq!(REPLIES.insert(7, 49), Ok(None));
        /// assert_eq!(REPLIES.try_get(&7), Some(49));
        /// ```
        pub fn new() -> Self {
            Self::with_lock(L::INIT)
        }
    }
}

impl<K, V, const N: usize, const W: usize, L: ScopedRawMutex + ConstInit> Default
    for FixedAwaitMap<K, V, N, W, L>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V, const N: usize, const W: usize, L: ScopedRawMutex> FixedAwaitMap<K, V, N, W, L> {
    const_fn_unless_loom! {
        /// An empty map guarded by `lock`.
        ///
        /// # Panics
        ///
        /// At compile time, if `KEYS` or `WAITERS` is 65,534 or more.
        pub fn with_lock(lock: L) -> Self {
            const {
                assert!(
                    N < DONE as usize && W < DONE as usize,
                    "a FixedAwaitMap holds fewer than 65,534 keys and waiters"
                )
            };
            FixedAwaitMap {
                state: Lock::new(
                    lock,
                    Table {
                        entries: [const { None }; N],
                        nodes: [Node::FREE; W],
                        next_seq: 0,
                        closed: false,
                    },
                ),
            }
        }
    }

    /// A future that resolves with a clone of `key`'s value: at once if it is
    /// there, else once an [`insert`](Self::insert) stores it. See
    /// [`AwaitMap::get`](crate::AwaitMap::get); it fails with
    /// [`WaitError::NoRoom`] where it would have to wait and finds no slot.
    ///
    /// # Examples
    ///
    /// ```
    /// let map: awaitmap::FixedAwaitMap<u8, u32, 4, 4> = awaitmap::FixedAwaitMap::new();
    /// let fut = map.get(&1);
    /// map.insert(1, 10).unwrap();
    /// assert_eq!(futures::executor::block_on(fut), Ok(10));
    /// assert_eq!(map.try_get(&1), Some(10));
    /// ```
    pub fn get<'a>(&'a self, key: &'a K) -> FixedGet<'a, K, V, N, W, L> {
        FixedGet(Wait::new(self, key))
    }

    /// A future that moves `key`'s value out of the map: at once if it is
    /// there, else once an [`insert`](Self::insert) stores it and no earlier
    /// `take` of the key is waiting. See
    /// [`AwaitMap::take`](crate::AwaitMap::take); it fails with
    /// [`WaitError::NoRoom`] where it would have to wait and finds no slot.
    ///
    /// # Examples
    ///
    /// ```
    /// let map: awaitmap::FixedAwaitMap<u8, u32, 4, 4> = awaitmap::FixedAwaitMap::new();
    /// let fut = map.take(&1);
    /// map.insert(1, 10).unwrap();
    /// assert_eq!(futures::executor::block_on(fut), Ok(10));
    /// assert!(map.is_empty());
    /// ```
    pub fn take<'a>(&'a self, key: &'a K) -> FixedTake<'a, K, V, N, W, L> {
        FixedTake(Wait::new(self, key))
    }

    /// How many values the map stores.
    pub fn len(&self) -> usize {
        self.state.with(|t| t.len())
    }

    /// Whether the map stores no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many futures are registered as waiting (as
    /// [`AwaitMap::waiters`](crate::AwaitMap::waiters)): at most `WAITERS`.
    pub fn waiters(&self) -> usize {
        self.state.with(|t| t.live())
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.state.with(|t| t.closed)
    }

    /// Closes the map for good: every waiting future resolves
    /// `Err(WaitError::Closed)` (unless its key has a value for it), and so
    /// does every later future of an absent key. `insert` still stores.
    ///
    /// # Examples
    ///
    /// ```
    /// let map: awaitmap::FixedAwaitMap<u8, u32, 4, 4> = awaitmap::FixedAwaitMap::new();
    /// map.close();
    /// assert_eq!(futures::executor::block_on(map.get(&1)), Err(awaitmap::WaitError::Closed));
    /// ```
    pub fn close(&self) {
        let mut due = Due::NONE;
        self.state.with(|t| {
            if !t.closed {
                t.closed = true;
                // Each looks again when polled: `Ok` if its key has a value
                // for it by then, else `Closed`.
                let marked = t.mark(|n| {
                    let waits = n.status == Status::Waiting;
                    if waits {
                        n.status = Status::Shut;
                    }
                    waits
                });
                t.collect_if(marked > 0, &mut due);
            }
        });
        self.wake(&mut due, Spare::NONE);
    }

    /// Wakes the batch, and the rest of the marked nodes a batch at a time,
    /// then drops what the operation `freed`: every wake-up is issued even if
    /// a waker or a destructor panics, and the first panic goes on once all
    /// ran.
    fn wake(&self, due: &mut Due, freed: Spare<K>) {
        let mut panic: Option<Panic> = None;
        loop {
            for waker in due.wakers.iter_mut().take(due.count) {
                if let Some(waker) = waker.take() {
                    caught(|| waker.wake(), &mut panic);
                }
            }
            if !due.more {
                break;
            }
            self.state.with(|t| t.collect(due));
        }
        let Spare { key, waker } = freed;
        caught(|| drop(waker), &mut panic);
        caught(|| drop(key), &mut panic);
        resume(panic);
    }
}

impl<K: Eq, V, const N: usize, const W: usize, L: ScopedRawMutex> FixedAwaitMap<K, V, N, W, L> {
    /// Stores `value` under `key`, then wakes every waiting `get` of the key
    /// and the `take` that registered first. Returns the value it replaced,
    /// or, when `key` is new and every key slot is taken, hands both back.
    ///
    /// # Errors
    ///
    /// `Err((key, value))` if the map has no slot for a new key.
    ///
    /// # Examples
    ///
    /// ```
    /// let map: awaitmap::FixedAwaitMap<u8, u32, 1, 1> = awaitmap::FixedAwaitMap::new();
    /// assert_eq!(map.insert(1, 10), Ok(None));
    /// assert_eq!(map.insert(1, 11), Ok(Some(10)));
    /// assert_eq!(map.insert(2, 20), Err((2, 20))); // one key slot only
    /// ```
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>, (K, V)> {
        self.store(key, value, true)
    }

    /// A value a `take` moved out, back under its key after the poll that
    /// took it panicked; if the key has a value again, that one stays and
    /// this one is dropped (it is the value the poll was removing).
    fn put_back(&self, key: &K, value: V)
    where
        K: Clone,
    {
        let result = self.store(key.clone(), value, false);
        drop(result);
    }

    /// `insert`, or with `replace` false, an insert that keeps a value the
    /// key has and hands the new one back as if replaced.
    fn store(&self, key: K, value: V, replace: bool) -> Result<Option<V>, (K, V)> {
        let mut due = Due::NONE;
        let stored = self.state.with(|t| {
            let (i, old, key) = match t.find(&key) {
                Some(i) if !replace && t.entry(i).value.is_some() => {
                    return Ok((Some(value), Some(key)));
                }
                Some(i) => (i, t.entry(i).value.replace(value), Some(key)),
                None => match t.entries.iter().position(Option::is_none) {
                    None => return Err((key, value)),
                    Some(i) => {
                        t.entries[i] = Some(Entry {
                            key,
                            value: Some(value),
                            waiters: 0,
                            handoff: false,
                        });
                        return Ok((None, None));
                    }
                },
            };
            let mut marked = t.mark(|n| {
                let wakes = usize::from(n.entry) == i && !n.take && n.status == Status::Waiting;
                if wakes {
                    n.status = Status::Woken;
                }
                wakes
            });
            if !t.entry(i).handoff && t.wake_first_take(i) {
                marked += 1;
            }
            t.collect_if(marked > 0, &mut due);
            Ok((old, key))
        });
        let (old, key) = stored?;
        self.wake(&mut due, Spare { key, waker: None });
        Ok(old)
    }

    /// A clone of `key`'s value, if it has one; never waits.
    pub fn try_get(&self, key: &K) -> Option<V>
    where
        V: Clone,
    {
        self.state
            .with(|t| t.find(key).and_then(|i| t.entry(i).value.clone()))
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &K) -> bool {
        self.state
            .with(|t| t.find(key).is_some_and(|i| t.entry(i).value.is_some()))
    }

    /// Takes `key`'s value out, if it has one; never waits, and futures
    /// waiting on the key keep waiting.
    pub fn remove(&self, key: &K) -> Option<V> {
        let mut freed = Spare::NONE;
        let value = self.state.with(|t| {
            let i = t.find(key)?;
            let value = t.entry(i).value.take();
            t.vacate(i, &mut freed);
            value
        });
        drop(freed);
        value
    }

    /// Fails the futures waiting on `key` right now with
    /// [`WaitError::Cancelled`] and returns how many. Futures the key has a
    /// value for are left alone (its gets, and the take woken for it). Not
    /// sticky: a later future of the key waits as usual.
    ///
    /// # Examples
    ///
    /// ```
    /// use core::task::{Context, Waker};
    /// use core::{future::Future, pin::pin};
    ///
    /// let map: awaitmap::FixedAwaitMap<u8, u32, 4, 4> = awaitmap::FixedAwaitMap::new();
    /// let mut fut = pin!(map.get(&1));
    /// assert!(fut.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
    /// assert_eq!(map.cancel(&1), 1);
    /// assert_eq!(futures::executor::block_on(fut), Err(awaitmap::WaitError::Cancelled));
    /// ```
    pub fn cancel(&self, key: &K) -> usize {
        let mut due = Due::NONE;
        let failed = self.state.with(|t| {
            let Some(i) = t.find(key) else { return 0 };
            // With a value, the gets and the woken take have theirs.
            let spared = t.entry(i).value.is_some();
            let handoff = t.entry(i).handoff;
            if !spared {
                t.entry(i).handoff = false;
            }
            let failed = t.mark(|n| {
                let for_it = n.status == Status::Woken || (n.status == Status::Shut && !handoff);
                let has_value = spared && (!n.take || for_it);
                let fails = usize::from(n.entry) == i
                    && !has_value
                    && !matches!(n.status, Status::Failed(_));
                if fails {
                    n.status = Status::Failed(WaitError::Cancelled);
                }
                fails
            });
            t.collect_if(failed > 0, &mut due);
            failed
        });
        self.wake(&mut due, Spare::NONE);
        failed
    }
}

impl<K, V, const N: usize, const W: usize, L: ScopedRawMutex> fmt::Debug
    for FixedAwaitMap<K, V, N, W, L>
{
    /// Prints the capacity and counts, never the keys or values, and never
    /// waits for the lock: `FixedAwaitMap { <locked> }` if it is busy.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = self.state.try_with(|t| (t.len(), t.live(), t.closed));
        match counts {
            Some((len, waiters, closed)) => f
                .debug_struct("FixedAwaitMap")
                .field("keys", &N)
                .field("waiter_slots", &W)
                .field("len", &len)
                .field("waiters", &waiters)
                .field("closed", &closed)
                .finish(),
            None => f.write_str("FixedAwaitMap { <locked> }"),
        }
    }
}

/// The state of a `get` or `take` of a [`FixedAwaitMap`]: both poll through
/// [`Wait::poll`], the value read by `V::clone` for a `get`, moved for a
/// `take`.
struct Wait<'a, K, V, const N: usize, const W: usize, L: ScopedRawMutex> {
    map: &'a FixedAwaitMap<K, V, N, W, L>,
    key: &'a K,
    /// The node it waits in, `FREE` before it registers, `DONE` after.
    slot: u16,
}

impl<'a, K, V, const N: usize, const W: usize, L: ScopedRawMutex> Wait<'a, K, V, N, W, L> {
    fn new(map: &'a FixedAwaitMap<K, V, N, W, L>, key: &'a K) -> Self {
        Wait {
            map,
            key,
            slot: FREE,
        }
    }

    fn poll(
        &mut self,
        read: Option<fn(&V) -> V>,
        cx: &Context<'_>,
        what: &str,
    ) -> Poll<Result<V, WaitError>>
    where
        K: Eq + Clone,
    {
        assert!(
            self.slot != DONE,
            "`{what}` polled after it returned `Ready`"
        );
        let mut made = Spare::NONE;
        loop {
            let mut freed = Spare::NONE;
            let step = self.map.state.with(|t| {
                t.poll(
                    self.key,
                    read,
                    &mut self.slot,
                    cx.waker(),
                    &mut made,
                    &mut freed,
                )
            });
            match step {
                Step::Pending => return Poll::Pending,
                Step::Ready(result) => {
                    self.slot = DONE;
                    return Poll::Ready(self.finish(result, read, [made, freed]));
                }
                Step::Make(key) => {
                    if made.waker.is_none() {
                        made.waker = Some(self.clone_waker(cx));
                    }
                    if key && made.key.is_none() {
                        made.key = Some(self.key.clone());
                    }
                }
            }
        }
    }

    /// Drops what the poll left, after it returned `result`. If a destructor
    /// panics, a value a `take` moved out goes back under its key (unless the
    /// key has a value again), and the panic goes on.
    fn finish(
        &self,
        result: Result<V, WaitError>,
        read: Option<fn(&V) -> V>,
        left: [Spare<K>; 2],
    ) -> Result<V, WaitError>
    where
        K: Eq + Clone,
    {
        let mut panic: Option<Panic> = None;
        caught(|| drop(left), &mut panic);
        if panic.is_some() {
            if let (Ok(value), None) = (result, read) {
                caught(|| self.map.put_back(self.key, value), &mut panic);
            }
            resume(panic);
            unreachable!("a caught panic goes on");
        }
        result
    }

    /// A clone of the context's waker. If the clone panics while the future
    /// is registered (with no waker the map could use), the future leaves:
    /// it cannot hold up a `take` behind it, and starts over if polled again.
    fn clone_waker(&mut self, cx: &Context<'_>) -> Waker {
        struct LeaveOnUnwind<'b, 'a, K, V, const N: usize, const W: usize, L: ScopedRawMutex>(
            &'b mut Wait<'a, K, V, N, W, L>,
        );
        impl<K, V, const N: usize, const W: usize, L: ScopedRawMutex> Drop
            for LeaveOnUnwind<'_, '_, K, V, N, W, L>
        {
            fn drop(&mut self) {
                self.0.leave();
            }
        }
        let guard = LeaveOnUnwind(self);
        let waker = cx.waker().clone();
        core::mem::forget(guard);
        waker
    }

    /// Deregisters a waiting future.
    fn leave(&mut self) {
        if self.slot >= DONE {
            return;
        }
        let n = usize::from(self.slot);
        self.slot = FREE;
        let mut freed = Spare::NONE;
        let mut due = Due::NONE;
        self.map.state.with(|t| t.leave(n, &mut freed, &mut due));
        self.map.wake(&mut due, freed);
    }
}

impl<K, V, const N: usize, const W: usize, L: ScopedRawMutex> Drop for Wait<'_, K, V, N, W, L> {
    fn drop(&mut self) {
        self.leave();
    }
}

/// The future of [`FixedAwaitMap::get`]: a clone of the key's value.
///
/// Lazy, `Unpin`, deregistered when dropped (cancel-safe), and it panics if
/// polled again after it returned `Ready`.
#[must_use = "futures do nothing unless polled"]
pub struct FixedGet<'a, K, V, const N: usize, const W: usize, L: ScopedRawMutex = DefaultLock>(
    Wait<'a, K, V, N, W, L>,
);

/// The future of [`FixedAwaitMap::take`]: the key's value, moved out.
///
/// Lazy, `Unpin`, deregistered when dropped, and cancel-safe: if it is
/// dropped after an `insert` woke it but before it returned the value, the
/// value stays and the wake-up passes to the next waiting `take` of the key.
/// It panics if polled again after it returned `Ready`.
#[must_use = "futures do nothing unless polled"]
pub struct FixedTake<'a, K, V, const N: usize, const W: usize, L: ScopedRawMutex = DefaultLock>(
    Wait<'a, K, V, N, W, L>,
);

// Neither future is ever pinned in place: what it holds moves freely.
impl<K, V, const N: usize, const W: usize, L: ScopedRawMutex> Unpin
    for FixedGet<'_, K, V, N, W, L>
{
}
impl<K, V, const N: usize, const W: usize, L: ScopedRawMutex> Unpin
    for FixedTake<'_, K, V, N, W, L>
{
}

impl<K: Eq + Clone, V: Clone, const N: usize, const W: usize, L: ScopedRawMutex> Future
    for FixedGet<'_, K, V, N, W, L>
{
    type Output = Result<V, WaitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.poll(Some(V::clone), cx, "FixedGet")
    }
}

impl<K: Eq + Clone, V, const N: usize, const W: usize, L: ScopedRawMutex> Future
    for FixedTake<'_, K, V, N, W, L>
{
    type Output = Result<V, WaitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.poll(None, cx, "FixedTake")
    }
}

impl<K, V, const N: usize, const W: usize, L: ScopedRawMutex> fmt::Debug
    for FixedGet<'_, K, V, N, W, L>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedGet")
            .field("waiting", &(self.0.slot < DONE))
            .finish_non_exhaustive()
    }
}

impl<K, V, const N: usize, const W: usize, L: ScopedRawMutex> fmt::Debug
    for FixedTake<'_, K, V, N, W, L>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedTake")
            .field("waiting", &(self.0.slot < DONE))
            .finish_non_exhaustive()
    }
}
