//! Waiter storage: a slab of nodes the map owns, the per-key lists threaded
//! through it, and the map-wide queue of nodes whose wakers are due.
//!
//! Invariants (all under the map's lock):
//! - A node is `Free`, `Waiting`, `Cancelled`, `Abandoned` or `Zombie`.
//! - A `Waiting` node is linked in exactly one list (the `gets` or `takes` list
//!   of the entry it registered on) and stays in it until its future finishes.
//!   Nodes never move between entries.
//! - A `Cancelled` or `Abandoned` node (failed by `cancel`, or by a promise
//!   dropped unfulfilled) is in no list; its future learns the outcome on
//!   its next poll and then frees the node.
//! - A `Waiting` node whose `waker` is `None` has been woken since it last
//!   stored a waker, so its future will poll again: enqueuing it is a no-op.
//! - A node is in the wake queue at most once (`queued`). A node freed while
//!   queued becomes a `Zombie`; the queue's consumer returns it to the free
//!   list, so a slot is never reused while the queue still names it.
//! - Every registration gets a fresh `seq` from a map-wide 64-bit counter and
//!   futures name their node by `(slot, seq)`, so a stale handle can never
//!   reach another future's node.

use alloc::vec::Vec;
use core::task::Waker;

/// The "no node" link.
pub(crate) const NIL: u32 = u32::MAX;

/// How many wakers are moved out of the lock at once; the rest wait in the
/// queue for the next round, so no wake-up needs an allocation.
const BATCH: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Get,
    Take,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum NodeState {
    Free,
    Waiting,
    Cancelled,
    Abandoned,
    Zombie,
}

impl NodeState {
    /// Failed by `cancel` or by an abandoned promise: in no list, waiting for
    /// its future to learn the outcome.
    #[inline]
    pub(crate) fn is_failed(self) -> bool {
        matches!(self, NodeState::Cancelled | NodeState::Abandoned)
    }
}

pub(crate) struct Node {
    waker: Option<Waker>,
    seq: u64,
    prev: u32,
    /// The next node of the same list; the next free slot while `Free`.
    next: u32,
    wq_next: u32,
    state: NodeState,
    queued: bool,
}

impl Node {
    #[inline]
    pub(crate) fn state(&self) -> NodeState {
        self.state
    }
}

/// A doubly linked list of nodes, threaded through the slab.
#[derive(Clone, Copy, Debug)]
pub(crate) struct List {
    pub(crate) head: u32,
    tail: u32,
}

impl List {
    pub(crate) const EMPTY: List = List {
        head: NIL,
        tail: NIL,
    };

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head == NIL
    }
}

pub(crate) struct Slab {
    nodes: Vec<Node>,
    free: u32,
    /// Nodes owned by a future: `Waiting` or `Cancelled`.
    live: usize,
    wq_head: u32,
    wq_tail: u32,
}

impl Slab {
    pub(crate) const fn new() -> Self {
        Slab {
            nodes: Vec::new(),
            free: NIL,
            live: 0,
            wq_head: NIL,
            wq_tail: NIL,
        }
    }

    /// Room for `additional` more registered futures than now, without
    /// growing.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let want = self.live + additional;
        if want > self.nodes.capacity() {
            self.nodes.reserve(want - self.nodes.len());
        }
    }

    /// The number of registered futures (see `AwaitMap::waiters`).
    #[inline]
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Allocates a `Waiting` node holding `waker`. Reuses a free slot; grows
    /// the slab (the only allocation here) only past the peak so far.
    #[inline]
    pub(crate) fn alloc(&mut self, seq: u64, waker: Waker) -> u32 {
        self.live += 1;
        if self.free != NIL {
            let slot = self.free;
            let n = &mut self.nodes[slot as usize];
            debug_assert!(n.state == NodeState::Free && n.waker.is_none());
            // A free node has no waker, no links and is not queued: only
            // these fields need writing.
            self.free = n.next;
            n.waker = Some(waker);
            n.seq = seq;
            n.prev = NIL;
            n.next = NIL;
            n.state = NodeState::Waiting;
            slot
        } else {
            self.grow(seq, waker)
        }
    }

    #[cold]
    fn grow(&mut self, seq: u64, waker: Waker) -> u32 {
        let slot = u32::try_from(self.nodes.len())
            .ok()
            .filter(|&s| s != NIL)
            .expect("awaitmap: more than u32::MAX - 1 waiters at once");
        self.nodes.push(Node {
            waker: Some(waker),
            seq,
            prev: NIL,
            next: NIL,
            wq_next: NIL,
            state: NodeState::Waiting,
            queued: false,
        });
        slot
    }

    /// The node a future registered, checked against its `seq`.
    #[inline]
    pub(crate) fn node(&self, slot: u32, seq: u64) -> &Node {
        let n = &self.nodes[slot as usize];
        assert!(
            n.seq == seq
                && matches!(
                    n.state,
                    NodeState::Waiting | NodeState::Cancelled | NodeState::Abandoned
                ),
            "awaitmap: a future's waiter slot was reused (internal invariant broken)"
        );
        n
    }

    #[inline]
    fn node_mut(&mut self, slot: u32) -> &mut Node {
        &mut self.nodes[slot as usize]
    }

    /// Gives the slot back and returns its waker, to be dropped after the
    /// lock is released. The node must be in no list.
    pub(crate) fn free(&mut self, slot: u32) -> Option<Waker> {
        self.live -= 1;
        let n = &mut self.nodes[slot as usize];
        let waker = n.waker.take();
        if n.queued {
            n.state = NodeState::Zombie;
        } else {
            push_free(n, slot, &mut self.free);
        }
        waker
    }

    pub(crate) fn push_back(&mut self, list: &mut List, slot: u32) {
        let tail = list.tail;
        {
            let n = self.node_mut(slot);
            n.prev = tail;
            n.next = NIL;
        }
        if tail == NIL {
            list.head = slot;
        } else {
            self.node_mut(tail).next = slot;
        }
        list.tail = slot;
    }

    pub(crate) fn unlink(&mut self, list: &mut List, slot: u32) {
        let (prev, next) = {
            let n = self.node_mut(slot);
            let links = (n.prev, n.next);
            n.prev = NIL;
            n.next = NIL;
            links
        };
        if prev == NIL {
            list.head = next;
        } else {
            self.node_mut(prev).next = next;
        }
        if next == NIL {
            list.tail = prev;
        } else {
            self.node_mut(next).prev = prev;
        }
    }

    /// The node after `slot` in its list.
    #[inline]
    pub(crate) fn next_of(&self, slot: u32) -> u32 {
        self.nodes[slot as usize].next
    }

    /// Marks a node failed (`Cancelled` or `Abandoned`); the caller has
    /// unlinked it already.
    pub(crate) fn set_failed(&mut self, slot: u32, how: NodeState) {
        debug_assert!(how.is_failed());
        self.node_mut(slot).state = how;
    }

    /// Whether the node holds a waker that `waker` would wake anyway.
    #[inline]
    pub(crate) fn will_wake(&self, slot: u32, waker: &Waker) -> bool {
        // `Waker::will_wake` compares pointers only: no user code runs.
        self.nodes[slot as usize]
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(waker))
    }

    /// Stores a new waker and returns the old one (to drop after unlocking).
    pub(crate) fn replace_waker(&mut self, slot: u32, waker: Waker) -> Option<Waker> {
        self.node_mut(slot).waker.replace(waker)
    }

    /// Puts the node's waker on the wake queue. A node without a waker has
    /// been woken already and will poll; a queued node is not queued twice.
    pub(crate) fn enqueue(&mut self, slot: u32) {
        let tail = self.wq_tail;
        let n = self.node_mut(slot);
        if n.queued || n.waker.is_none() {
            return;
        }
        n.queued = true;
        n.wq_next = NIL;
        if tail == NIL {
            self.wq_head = slot;
        } else {
            self.node_mut(tail).wq_next = slot;
        }
        self.wq_tail = slot;
    }

    /// Queues every node with a waker: used by `close`, which fails them all
    /// on their next poll.
    pub(crate) fn enqueue_all_waiting(&mut self) {
        for slot in 0..self.nodes.len() {
            if self.nodes[slot].state == NodeState::Waiting {
                // `slot < nodes.len() <= u32::MAX` by `alloc`.
                self.enqueue(slot as u32);
            }
        }
    }

    #[inline]
    pub(crate) fn has_queued(&self) -> bool {
        self.wq_head != NIL
    }

    /// Moves the first due waker out of the queue: most operations wake at
    /// most one, and this spares them a batch.
    #[inline]
    pub(crate) fn pop_one(&mut self) -> Option<Waker> {
        while self.wq_head != NIL {
            if let Some(w) = self.pop_front() {
                return Some(w);
            }
        }
        None
    }

    /// Unqueues the head node and returns its waker, if it still has one; a
    /// zombie goes back to the free list.
    fn pop_front(&mut self) -> Option<Waker> {
        let slot = self.wq_head;
        let n = &mut self.nodes[slot as usize];
        n.queued = false;
        let next = n.wq_next;
        let waker = if n.state == NodeState::Zombie {
            push_free(n, slot, &mut self.free);
            None
        } else {
            n.waker.take()
        };
        self.wq_head = next;
        if next == NIL {
            self.wq_tail = NIL;
        }
        waker
    }

    /// Moves up to a batch of due wakers out of the queue.
    pub(crate) fn pop_batch(&mut self, batch: &mut WakeBatch) {
        while batch.len < BATCH && self.wq_head != NIL {
            if let Some(w) = self.pop_front() {
                batch.wakers[batch.len] = Some(w);
                batch.len += 1;
            }
        }
    }
}

/// Puts `n` (at `slot`), which no future owns and no queue names, on the
/// free list headed by `free`. Takes the fields apart so callers holding the
/// node need not index it again.
#[inline]
fn push_free(n: &mut Node, slot: u32, free: &mut u32) {
    n.state = NodeState::Free;
    n.next = *free;
    *free = slot;
}

/// Wakers moved out from under the lock, woken after it is released.
pub(crate) struct WakeBatch {
    wakers: [Option<Waker>; BATCH],
    len: usize,
}

impl WakeBatch {
    pub(crate) const fn new() -> Self {
        WakeBatch {
            wakers: [const { None }; BATCH],
            len: 0,
        }
    }

    /// Wakes and clears the batch. With `std`, a waker that panics does not
    /// stop the others: the first panic is kept in `panic` for the caller to
    /// resume once every due waker has run.
    pub(crate) fn wake_all(&mut self, panic: &mut Option<Panic>) {
        let len = core::mem::replace(&mut self.len, 0);
        for w in &mut self.wakers[..len] {
            if let Some(w) = w.take() {
                wake_one(w, panic);
            }
        }
    }
}

/// A panic raised by a waker, kept until every due waker has run.
#[cfg(feature = "std")]
pub(crate) type Panic = alloc::boxed::Box<dyn core::any::Any + Send>;
/// Without `std` a waker's panic propagates at once.
#[cfg(not(feature = "std"))]
pub(crate) type Panic = core::convert::Infallible;

/// Runs user code (a waker or a destructor) on behalf of an operation. With
/// `std`, a panic does not stop the operation: the first one is kept in
/// `panic` for the caller to resume once everything due has run.
#[cfg(feature = "std")]
#[inline]
pub(crate) fn caught<R>(f: impl FnOnce() -> R, panic: &mut Option<Panic>) {
    if let Err(payload) = std::panic::catch_unwind(core::panic::AssertUnwindSafe(f)) {
        panic.get_or_insert(payload);
    }
}

/// Without `std` a panic propagates at once.
#[cfg(not(feature = "std"))]
#[inline]
pub(crate) fn caught<R>(f: impl FnOnce() -> R, _: &mut Option<Panic>) {
    f();
}

#[inline]
pub(crate) fn wake_one(w: Waker, panic: &mut Option<Panic>) {
    caught(|| w.wake(), panic);
}

// ===== invariant checks (tests and debugging) =====

/// What [`Slab::check`] learned, for the entry checks to match against.
pub(crate) struct SlabFacts {
    /// Per node: queued in the wake queue.
    pub(crate) queued: Vec<bool>,
}

impl Slab {
    /// Verifies the invariants listed at the top of this module that do not
    /// involve entries: the free list, the wake queue, zombies and the live
    /// count. Returns the facts the entry checks need.
    pub(crate) fn check(&self) -> Result<SlabFacts, alloc::string::String> {
        use alloc::format;
        let n = self.nodes.len();
        let mut on_free = alloc::vec![false; n];
        let mut slot = self.free;
        while slot != NIL {
            let i = slot as usize;
            if i >= n {
                return Err(format!("free list names slot {i} of {n}"));
            }
            if on_free[i] {
                return Err(format!("free list loops at slot {i}"));
            }
            on_free[i] = true;
            let node = &self.nodes[i];
            if node.state != NodeState::Free || node.waker.is_some() || node.queued {
                return Err(format!(
                    "slot {i} on the free list is {:?}, waker {}, queued {}",
                    node.state,
                    node.waker.is_some(),
                    node.queued
                ));
            }
            slot = node.next;
        }
        let mut in_queue = alloc::vec![false; n];
        let mut slot = self.wq_head;
        let mut last = NIL;
        while slot != NIL {
            let i = slot as usize;
            if i >= n || in_queue[i] {
                return Err(format!(
                    "the wake queue names slot {i} twice or out of range"
                ));
            }
            in_queue[i] = true;
            let node = &self.nodes[i];
            if !node.queued {
                return Err(format!(
                    "slot {i} is in the wake queue but not marked queued"
                ));
            }
            match node.state {
                NodeState::Free => return Err(format!("free slot {i} is in the wake queue")),
                NodeState::Zombie => {
                    if node.waker.is_some() {
                        return Err(format!("zombie slot {i} holds a waker"));
                    }
                }
                _ => {
                    if node.waker.is_none() {
                        return Err(format!("queued slot {i} has no waker to wake"));
                    }
                }
            }
            last = slot;
            slot = node.wq_next;
        }
        if self.wq_tail != last {
            return Err(format!(
                "wake queue tail {} is not its last node {last}",
                self.wq_tail
            ));
        }
        let mut live = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            if node.queued != in_queue[i] {
                return Err(format!(
                    "slot {i} is marked queued {} but in the queue {}",
                    node.queued, in_queue[i]
                ));
            }
            match node.state {
                NodeState::Free if !on_free[i] => {
                    return Err(format!("free slot {i} is not on the free list"));
                }
                NodeState::Zombie if !node.queued => {
                    return Err(format!(
                        "zombie slot {i} is not queued: it would never be freed"
                    ));
                }
                NodeState::Waiting | NodeState::Cancelled | NodeState::Abandoned => live += 1,
                _ => {}
            }
        }
        if live != self.live {
            return Err(format!(
                "live count {} but {live} nodes are owned by futures",
                self.live
            ));
        }
        Ok(SlabFacts { queued: in_queue })
    }

    /// The slots of `list`, head to tail, with its links checked.
    pub(crate) fn check_list(&self, list: &List) -> Result<Vec<u32>, alloc::string::String> {
        use alloc::format;
        let mut out = Vec::new();
        let mut prev = NIL;
        let mut slot = list.head;
        while slot != NIL {
            let i = slot as usize;
            if i >= self.nodes.len() || out.len() > self.nodes.len() {
                return Err(format!("a list runs out of range or loops at slot {i}"));
            }
            let node = &self.nodes[i];
            if node.prev != prev {
                return Err(format!(
                    "slot {i}'s prev is {} where {prev} precedes it",
                    node.prev
                ));
            }
            out.push(slot);
            prev = slot;
            slot = node.next;
        }
        if list.tail != prev {
            return Err(format!(
                "list tail {} is not its last node {prev}",
                list.tail
            ));
        }
        Ok(out)
    }

    /// A node's state, whether it holds a waker, and its registration.
    pub(crate) fn peek(&self, slot: u32) -> (NodeState, bool, u64) {
        let n = &self.nodes[slot as usize];
        (n.state, n.waker.is_some(), n.seq)
    }

    /// The number of slots.
    pub(crate) fn slots(&self) -> usize {
        self.nodes.len()
    }
}
