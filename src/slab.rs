//! Storage for the waiters that do not fit in their entry: a slab of nodes
//! the map owns, the per-key lists threaded through it, and the map-wide
//! queue of nodes whose wakers are due.
//!
//! Most keys have one waiter, kept in the entry itself (see `table.rs`); the
//! second and later waiters of a key live here. Nothing here allocates once
//! the slab has grown to the peak number of such waiters.
//!
//! Invariants (all under the map's lock):
//! - A node is in exactly one of these states, and the state says where it
//!   is:
//!   - `Free`: on the free list (linked through `next`), no waker, not
//!     queued;
//!   - `Waiting`: owned by a future, linked in exactly one key list (the
//!     `gets` or `takes` list of the entry it registered on) until its
//!     future finishes; nodes never move between entries;
//!   - `Cancelled` or `Abandoned`: owned by a future and failed (by
//!     `cancel`, or by a promise dropped unfulfilled); in no key list; its
//!     future learns the outcome on its next poll and frees the node;
//!   - `Zombie`: freed while queued; in no list but the wake queue, whose
//!     consumer puts it on the free list, so a slot is never reused while
//!     the queue still names it.
//! - A key list is circular and doubly linked; the entry holds its head, and
//!   the head's `prev` is the tail.
//! - A node owned by a future whose `waker` is `None` has been woken since
//!   it last stored a waker (or is being registered by a poll that has yet to
//!   store one), so its future will poll: queueing it is a no-op.
//! - A node is in the wake queue at most once (`queued`), and every queued
//!   node but a zombie holds a waker.
//! - `live` counts the nodes owned by futures.

use alloc::vec::Vec;
use core::task::Waker;

/// The "no node" link.
pub(crate) const NIL: u32 = u32::MAX;

/// How many wakers are moved out of the lock at once; the rest wait in the
/// queue for the next round, so no wake-up needs an allocation.
pub(crate) const BATCH: usize = 16;

/// Where a node is: see the module's invariants.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum NodeState {
    Free,
    Waiting,
    Cancelled,
    Abandoned,
    Zombie,
}

pub(crate) struct Node {
    waker: Option<Waker>,
    prev: u32,
    /// The next node of the same key list; the next free slot while `Free`.
    next: u32,
    /// The next node of the wake queue.
    wq_next: u32,
    state: NodeState,
    queued: bool,
}

pub(crate) struct Slab {
    nodes: Vec<Node>,
    free: u32,
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

    /// Room for `additional` more waiting nodes than are owned now, without
    /// growing.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let want = self.live + additional;
        if want > self.nodes.len() {
            self.nodes.reserve(want - self.nodes.len());
        }
    }

    /// Gives back the memory of the nodes no future owns at the end of the
    /// slab (all of it when no node is owned or queued).
    pub(crate) fn shrink_to_fit(&mut self) {
        let keep = self
            .nodes
            .iter()
            .rposition(|n| n.state != NodeState::Free)
            .map_or(0, |last| last + 1);
        if keep < self.nodes.len() {
            self.nodes.truncate(keep);
            // Rebuild the free list from what is left, lowest slot first.
            self.free = NIL;
            for slot in (0..keep).rev() {
                if self.nodes[slot].state == NodeState::Free {
                    self.nodes[slot].next = self.free;
                    self.free = slot as u32;
                }
            }
        }
        self.nodes.shrink_to_fit();
    }

    /// The number of nodes owned by futures.
    #[inline]
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Takes a node for a future, holding `waker` (`None` while the future
    /// still has to store one), and links it at the back of `list`. Reuses a
    /// free slot; grows the slab (the only allocation here) only past the
    /// peak so far.
    #[inline(always)]
    pub(crate) fn push(&mut self, list: &mut u32, waker: Option<Waker>) -> u32 {
        self.live += 1;
        let slot = if self.free != NIL {
            let slot = self.free;
            let n = &mut self.nodes[slot as usize];
            self.free = n.next;
            n.waker = waker;
            n.state = NodeState::Waiting;
            slot
        } else {
            self.grow(waker)
        };
        self.link(list, slot);
        slot
    }

    #[cold]
    fn grow(&mut self, waker: Option<Waker>) -> u32 {
        let slot = u32::try_from(self.nodes.len())
            .ok()
            .filter(|&s| s < NIL - 2)
            .expect("awaitmap: too many waiters at once");
        self.nodes.push(Node {
            waker,
            prev: NIL,
            next: NIL,
            wq_next: NIL,
            state: NodeState::Waiting,
            queued: false,
        });
        slot
    }

    /// Links `slot` at the back of the circular `list`.
    #[inline(always)]
    fn link(&mut self, list: &mut u32, slot: u32) {
        let head = *list;
        if head == NIL {
            let n = &mut self.nodes[slot as usize];
            n.prev = slot;
            n.next = slot;
            *list = slot;
        } else {
            let tail = self.nodes[head as usize].prev;
            let n = &mut self.nodes[slot as usize];
            n.prev = tail;
            n.next = head;
            self.nodes[tail as usize].next = slot;
            self.nodes[head as usize].prev = slot;
        }
    }

    /// Unlinks `slot` from the circular `list`.
    #[inline(always)]
    pub(crate) fn unlink(&mut self, list: &mut u32, slot: u32) {
        let (prev, next) = {
            let n = &self.nodes[slot as usize];
            (n.prev, n.next)
        };
        if next == slot {
            *list = NIL;
        } else {
            self.nodes[prev as usize].next = next;
            self.nodes[next as usize].prev = prev;
            if *list == slot {
                *list = next;
            }
        }
    }

    /// The state of a node a future owns.
    #[inline]
    pub(crate) fn state(&self, slot: u32) -> NodeState {
        let state = self.nodes[slot as usize].state;
        debug_assert!(
            matches!(
                state,
                NodeState::Waiting | NodeState::Cancelled | NodeState::Abandoned
            ),
            "awaitmap: a future's waiter node was freed (internal invariant broken)"
        );
        state
    }

    /// Gives the slot back and returns its waker, to be dropped after the
    /// lock is released. The node must be in no key list.
    pub(crate) fn free(&mut self, slot: u32) -> Option<Waker> {
        self.live -= 1;
        let n = &mut self.nodes[slot as usize];
        let waker = n.waker.take();
        if n.queued {
            n.state = NodeState::Zombie;
        } else {
            n.state = NodeState::Free;
            n.next = self.free;
            self.free = slot;
        }
        waker
    }

    /// Unlinks a waiting node from `list` and frees it.
    #[inline(always)]
    pub(crate) fn remove(&mut self, list: &mut u32, slot: u32) -> Option<Waker> {
        self.unlink(list, slot);
        self.free(slot)
    }

    /// The node after `slot` in its key list (the head again after the
    /// tail).
    #[inline]
    pub(crate) fn next_of(&self, slot: u32) -> u32 {
        self.nodes[slot as usize].next
    }

    /// Unlinks every node of `list`, marks it failed (`Cancelled` or
    /// `Abandoned`) and queues its wake-up, except `keep`; returns how many.
    pub(crate) fn fail_all(&mut self, list: &mut u32, how: NodeState, keep: u32) -> usize {
        let mut count = 0;
        let mut kept = NIL;
        while *list != NIL {
            let slot = *list;
            self.unlink(list, slot);
            if slot == keep {
                kept = slot;
                continue;
            }
            self.nodes[slot as usize].state = how;
            self.enqueue(slot);
            count += 1;
        }
        if kept != NIL {
            self.link(list, kept);
        }
        count
    }

    /// Queues the wake-up of every node in `list`.
    pub(crate) fn enqueue_list(&mut self, list: u32) {
        // One pass that keeps the queue's tail at hand.
        let mut tail = self.wq_tail;
        let mut slot = list;
        while slot != NIL {
            let next = self.next_of(slot);
            tail = self.queue_behind(slot, tail);
            slot = next;
            if slot == list {
                break;
            }
        }
        self.wq_tail = tail;
    }

    /// Whether the node waits (its future owns it, it is not failed).
    #[inline]
    pub(crate) fn is_waiting(&self, slot: u32) -> bool {
        self.nodes[slot as usize].state == NodeState::Waiting
    }

    /// Whether the node waits and holds no waker: it was woken (or is being
    /// registered) and its future polls.
    #[inline]
    pub(crate) fn is_woken(&self, slot: u32) -> bool {
        let n = &self.nodes[slot as usize];
        n.state == NodeState::Waiting && n.waker.is_none()
    }

    /// Whether `slot` is the only node of `list`.
    #[inline]
    /// How many nodes `list` holds.
    pub(crate) fn count(&self, list: u32) -> usize {
        let mut n = 0;
        let mut slot = list;
        while slot != NIL {
            n += 1;
            slot = self.next_of(slot);
            if slot == list {
                break;
            }
        }
        n
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
    #[inline]
    pub(crate) fn replace_waker(&mut self, slot: u32, waker: Waker) -> Option<Waker> {
        self.nodes[slot as usize].waker.replace(waker)
    }

    /// Puts the node's waker on the wake queue. A node without a waker has
    /// been woken already and will poll; a queued node is not queued twice.
    pub(crate) fn enqueue(&mut self, slot: u32) {
        self.wq_tail = self.queue_behind(slot, self.wq_tail);
    }

    /// Links the node into the wake queue behind `tail` (the queue's last
    /// node, or `NIL`), unless it has no waker or is queued already;
    /// returns the queue's last node after that. The caller stores it in
    /// `wq_tail`.
    #[inline(always)]
    fn queue_behind(&mut self, slot: u32, tail: u32) -> u32 {
        let n = &mut self.nodes[slot as usize];
        if n.queued || n.waker.is_none() {
            return tail;
        }
        n.queued = true;
        n.wq_next = NIL;
        if tail == NIL {
            self.wq_head = slot;
        } else {
            self.nodes[tail as usize].wq_next = slot;
        }
        slot
    }

    /// Queues every node a future owns and that holds a waker: `close`
    /// fails them all on their next poll.
    pub(crate) fn enqueue_all(&mut self) {
        for slot in 0..self.nodes.len() {
            if self.nodes[slot].state == NodeState::Waiting {
                // `slot < nodes.len() < NIL` by `grow`.
                self.enqueue(slot as u32);
            }
        }
    }

    #[inline]
    pub(crate) fn has_queued(&self) -> bool {
        self.wq_head != NIL
    }

    /// Moves due wakers out of the queue into `batch`, from its start,
    /// until the batch is full or the queue empty; returns how many. One
    /// pass that keeps the queue's head at hand; a zombie met on the way is
    /// freed.
    pub(crate) fn pop_into(&mut self, batch: &mut [Option<Waker>]) -> usize {
        let mut n = 0;
        let mut head = self.wq_head;
        while head != NIL && n < batch.len() {
            let slot = head;
            let node = &mut self.nodes[slot as usize];
            node.queued = false;
            head = node.wq_next;
            if node.state == NodeState::Zombie {
                node.state = NodeState::Free;
                node.next = self.free;
                self.free = slot;
            } else if let Some(w) = node.waker.take() {
                batch[n] = Some(w);
                n += 1;
            }
        }
        self.wq_head = head;
        if head == NIL {
            self.wq_tail = NIL;
        }
        n
    }
}

// ===== invariant checks (tests and debugging) =====

impl Slab {
    /// Verifies the invariants above that do not involve entries: the free
    /// list, the wake queue, zombies and the live count. Returns, per node,
    /// whether it is queued.
    pub(crate) fn check(&self) -> Result<Vec<bool>, alloc::string::String> {
        use alloc::format;
        let n = self.nodes.len();
        let mut on_free = alloc::vec![false; n];
        let mut slot = self.free;
        while slot != NIL {
            let i = slot as usize;
            if i >= n || on_free[i] {
                return Err(format!("the free list loops or runs out of range at {i}"));
            }
            on_free[i] = true;
            let node = &self.nodes[i];
            if node.state != NodeState::Free || node.waker.is_some() || node.queued {
                return Err(format!(
                    "slot {i} on the free list is {:?}, armed {}, queued {}",
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
            let armed_ok = match node.state {
                NodeState::Free => false,
                NodeState::Zombie => node.waker.is_none(),
                _ => node.waker.is_some(),
            };
            if !node.queued || !armed_ok {
                return Err(format!(
                    "slot {i} in the wake queue is {:?}, marked queued {}, armed {}",
                    node.state,
                    node.queued,
                    node.waker.is_some()
                ));
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
                    "slot {i}: marked queued {}, in the queue {}",
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
                "live count {} but futures own {live} nodes",
                self.live
            ));
        }
        Ok(in_queue)
    }

    /// The slots of the circular `list`, head first, its links checked.
    pub(crate) fn check_list(&self, list: u32) -> Result<Vec<u32>, alloc::string::String> {
        use alloc::format;
        let mut out = Vec::new();
        let mut slot = list;
        while slot != NIL {
            let i = slot as usize;
            if i >= self.nodes.len() || out.len() > self.nodes.len() {
                return Err(format!("a key list runs out of range or loops at slot {i}"));
            }
            let node = &self.nodes[i];
            let next = node.next;
            if next as usize >= self.nodes.len() || self.nodes[next as usize].prev != slot {
                return Err(format!("slot {i}'s next {next} does not point back to it"));
            }
            out.push(slot);
            slot = next;
            if slot == list {
                break;
            }
        }
        Ok(out)
    }

    /// The number of slots.
    pub(crate) fn slots(&self) -> usize {
        self.nodes.len()
    }

    /// A node's state and whether it holds a waker.
    pub(crate) fn peek(&self, slot: u32) -> (NodeState, bool) {
        let n = &self.nodes[slot as usize];
        (n.state, n.waker.is_some())
    }
}
