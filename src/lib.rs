//! A keyed awaitable map: [`get`](AwaitMap::get) a key and await its value;
//! the future resolves as soon as a producer [`insert`](AwaitMap::insert)s
//! it, at once if it is already there.
//!
//! Producers fill the map in their own order, consumers ask in theirs.
//! [`take`](AwaitMap::take) does the same but moves the value out: the
//! request/response correlation an RPC client needs (send request `id`, await
//! `take(&id)`, while the reader task inserts responses by id in whatever
//! order they arrive, even before the request registered).
//!
//! ```
//! use awaitmap::AwaitMap;
//! use futures::executor::block_on;
//!
//! let responses = AwaitMap::new();
//! let reply = responses.take(&7_u64); // registered on its first poll
//! responses.insert(7, "pong");        // stores, then wakes the waiter
//! assert_eq!(block_on(reply), Ok("pong"));
//! assert!(responses.is_empty());      // `take` moved the value out
//! ```
//!
//! The examples here drive futures with `futures::executor::block_on`; in an
//! async function under any runtime, `.await` them instead.
//!
//! # The model
//!
//! - **Store, then wake.** `insert` stores the value, then wakes every
//!   waiting `get` of the key and the earliest waiting `take`. Wakers run
//!   after the map's lock is released.
//! - **Lazy, cancel-safe futures.** A future registers on its first poll and
//!   deregisters when dropped; a `take` that was woken but dropped passes the
//!   value on to the next `take`. Values are never lost or delivered twice.
//! - **`cancel` vs `close`.** [`cancel`](AwaitMap::cancel) fails the current
//!   waiters of one key and is forgotten; [`close`](AwaitMap::close) is
//!   permanent and fails every wait on an absent key, now and later.
//! - **What runs under the lock.** Only `K: Eq` and `V: Clone`. Hashing, key
//!   clones, dropping keys and values, and waker clone/wake/drop happen after
//!   the lock is released, so a waker may call back into the map.
//! - **Happens-before.** Everything a producer did before `insert(k, v)` is
//!   visible to the consumer whose future resolved with `v`.
//!
//! # When user code panics
//!
//! The map runs code of yours: a key's `Eq` and a value's `Clone` under its
//! lock; `Hash`, key copies (`Clone`, `to_owned`), waker `clone`, `wake` and
//! `drop`, and the destructors of keys and values with the lock released.
//! Any of it may panic. After such a panic, caught by the caller:
//!
//! - **No value is lost.** A value is destroyed only if the call that
//!   panicked was itself replacing or removing it (an `insert` over a
//!   present value, a `remove`). A `take` whose poll panics after it moved
//!   its value out puts the value back before the panic goes on.
//! - **No wake-up is lost.** Every waiter that was due a wake-up gets it:
//!   wake-ups are issued before anything is dropped, and a waker that panics
//!   does not stop the others (the first panic is resumed once they ran).
//! - **No condition goes untold.** `drained()`, room under a limit and a
//!   newly wanted key are announced when they become true, panic or not.
//! - **The map stays usable.** A panic under the lock (`Eq`, `Clone`) comes
//!   before any change and releases the lock; every invariant holds after.
//! - **A future whose poll panicked** may be dropped, or polled again: where
//!   the panic left it without a usable waker (its waker's `clone` panicked)
//!   or unannounced (its key's copy panicked), it gave up its place and
//!   starts over, so it cannot hold up the futures queued behind it.
//!
//! Catching a panic to carry on needs `std`. Without it, a panic propagates
//! at once: wake-ups still queued are issued by the next operation that
//! wakes anything, and a value being moved out may be lost (on targets that
//! abort on panic, none of this arises).
//!
//! # Producers
//!
//! - **Promises:** [`AwaitMap::promise`] reserves an absent key for one
//!   producer; [`Promise::fulfil`] inserts the value, and a promise dropped
//!   unfulfilled (an error path, a panic, a cancelled task) fails the
//!   futures waiting on the key with [`WaitError::Abandoned`] at once.
//! - **Coalescing:** [`AwaitMap::get_or_promise`] returns the value, or makes
//!   the first caller the key's producer while the others wait; if it
//!   abandons, a waiting caller takes the work over.
//! - **Backpressure** (targets with atomic pointers): `with_limit(n)` bounds
//!   what `try_insert`, `insert_async` and `insert_blocking` let in.
//! - **Demand:** `demand()` hands producers each key consumers start waiting
//!   for, so they make only what is asked for.
//! - **Lifecycle:** `closed()` and `drained()` resolve when the map is closed
//!   and when nobody waits any more.
//!
//! # Runtime-agnostic
//!
//! The futures are plain [`Future`]s that store their
//! waker per key: they work under tokio, smol, embassy, `futures::executor`,
//! or a hand-written poll loop. With the `std` feature,
//! `AwaitMap::get_blocking` and friends wait on a thread.
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `std` | yes | the blocking API (`*_blocking`, `*_blocking_timeout`); `SpinLock` yields its thread while it waits |
//! | `spin` | yes | `SpinLock`, the default lock, and the constructors that do not name a lock (`new`, `with_capacity`, `with_hasher`, `with_capacity_and_hasher`) |
//! | `critical-section` | no | `CsLock`, a lock that holds a critical section: for maps that interrupt handlers use; needs no compare-and-swap |
//! | `portable-atomic` | no | targets without compare-and-swap: `SpinLock`'s atomics go through `portable-atomic`; the final binary picks its backend |
//!
//! Features only add: enabling `critical-section` does not change the
//! default lock, so a map that must be interrupt-safe names `CsLock`, and
//! no other crate in the build can turn it back into a spin lock.
//!
//! # Locks, `no_std` and interrupts
//!
//! The crate is `#![no_std]` and needs `alloc`. One lock guards the map; the
//! work done under it is short and calls no user code but `Eq` and `Clone`.
//! The lock is the map's last type parameter, `AwaitMap<K, V, S, L>`, any
//! [`ScopedRawMutex`]: the lock trait of the `mutex-traits` crate, which
//! maitake-sync's primitives use too, so its locks (and any written for that
//! ecosystem) plug in as they are. That trait was chosen over `lock_api`
//! because it is scoped (the lock is held for a closure, so no guard can be
//! held across an `.await`) and because a critical section fits it: a
//! critical section is entered and left around a closure, not through a
//! guard.
//!
//! - `SpinLock` (the default): one compare-and-swap to take. With `std`, a
//!   waiter spins briefly and then yields its thread, so a preempted holder
//!   gets to run when threads outnumber cores. On a single core, **do not
//!   use it from an interrupt handler** that can interrupt code holding it:
//!   the handler would spin forever. Debug builds panic instead, with a
//!   message that names the fix.
//! - `CsLock` (feature `critical-section`): every access runs inside
//!   `critical_section::with`, so an interrupt cannot arrive while the map is
//!   held, and where the implementation covers several cores, they are
//!   excluded too. It needs no atomic compare-and-swap (thumbv6m,
//!   riscv32imc). The firmware provides the critical-section implementation.
//! - Your own: implement [`ScopedRawMutex`] (and [`ConstInit`] for a
//!   `static`). For the guarantees on panics above to hold, it must release when the
//!   closure unwinds, as both of the crate's locks do.
//!
//! A map can live in a `static` with no lazy initialisation:
//! [`AwaitMap::with_hasher_and_lock`] is a `const fn`, given a hasher that
//! can be built in a constant (`foldhash::fast::FixedState::with_seed`, or
//! `BuildHasherDefault::new()`). [`AwaitMap::reserve`] makes room up front,
//! and the type docs list which operations may allocate, so an interrupt
//! handler can `insert` into reserved space without allocating.
//!
//! [`get_owned`](AwaitMap::get_owned) and
//! [`take_owned`](AwaitMap::take_owned) need `alloc::sync::Arc`, which exists
//! on targets with atomic pointers.
//!
//! # Choosing
//!
//! Reach for `AwaitMap` when values are identified by a key, produced in one
//! order and consumed in another, and consumers must be able to ask before
//! the value exists (or after: a value inserted early is kept, not lost):
//! request/response correlation by id, reorder buffers, memoised task
//! graphs, "wake the task waiting on pin/channel/request N" on a
//! microcontroller.
//!
//! Something else fits better when:
//! - there is no key, just one value that changes and many readers:
//!   `tokio::sync::watch`; one value set once: a `OnceCell` (or
//!   `tokio::sync::OnceCell` to await the first set);
//! - one request, one response, and the response can never arrive before the
//!   request registered: a `oneshot` channel is enough (but it allocates per
//!   request and leaves cleanup on cancellation to you);
//! - values should expire, be evicted under a size bound, or be computed on
//!   a miss by a loader: a cache such as moka or quick_cache;
//! - a stream of values per key rather than one value: a channel per key.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.85.
#![no_std]
// The only `unsafe` is in `sync.rs`: the `unsafe impl ScopedRawMutex` of
// each lock (the trait is unsafe to implement), and the cell that holds the
// map's state behind its lock (`Lock`: its `Sync` impl and the two places
// that reach the state inside the lock's scope). Each says why it holds.
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod after;
#[cfg(feature = "std")]
mod blocking;
mod error;
mod future;
mod map;
#[cfg(target_has_atomic = "ptr")]
mod owned;
#[cfg(target_has_atomic = "ptr")]
mod producer;
mod promise;
mod slab;
mod state;
mod sync;

pub use error::WaitError;
pub use future::{Get, Take};
pub use hashbrown::Equivalent;

/// The default hasher of [`AwaitMap`]: foldhash's fast hasher, as in
/// hashbrown.
///
/// It is fast but not HashDoS-resistant, and on `no_std` its seed is fixed
/// per firmware image: if an attacker chooses the keys, build the map with
/// [`AwaitMap::with_hasher_and_lock`] and a keyed hasher.
///
/// # Examples
///
/// ```
/// use awaitmap::{AwaitMap, DefaultHashBuilder};
///
/// let map: AwaitMap<u8, u8, DefaultHashBuilder> =
///     AwaitMap::with_capacity_and_hasher(8, DefaultHashBuilder::default());
/// assert!(map.is_empty());
/// ```
pub type DefaultHashBuilder = hashbrown::DefaultHashBuilder;
pub use map::AwaitMap;
/// The lock traits: `L: ScopedRawMutex` for every map, and `ConstInit` for
/// [`Default`] and [`FromIterator`] (re-exported from `mutex-traits`, the
/// trait maitake-sync's locks use).
pub use mutex::{ConstInit, ScopedRawMutex};
#[cfg(target_has_atomic = "ptr")]
pub use owned::{GetOwned, OwnedPromise, TakeOwned};
#[cfg(target_has_atomic = "ptr")]
pub use producer::{Demand, Drained, InsertAsync, NextWanted, OwnedDemand, WaitClosed};
pub use promise::{GetOrPromise, Promise, ValueOrPromise};
#[cfg(feature = "critical-section")]
#[cfg_attr(docsrs, doc(cfg(feature = "critical-section")))]
pub use sync::CsLock;
pub use sync::DefaultLock;
#[cfg(not(feature = "spin"))]
pub use sync::NoDefaultLock;
#[cfg(feature = "spin")]
#[cfg_attr(docsrs, doc(cfg(feature = "spin")))]
pub use sync::SpinLock;

// The README's examples are compiled and run as doctests (they use every
// feature: `cargo test --all-features`).
#[cfg(all(
    doctest,
    feature = "std",
    feature = "spin",
    feature = "critical-section"
))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
