//! A keyed awaitable map: [`get`](AwaitMap::get) a key and await its value;
//! the future resolves as soon as a producer [`insert`](AwaitMap::insert)s
//! it, at once if it is already there.
//!
//! Producers fill the map in their own order, consumers ask in theirs.
//! [`take`](AwaitMap::take) does the same but moves the value out: the
//! request/response correlation an RPC client needs (send request `id`, await
//! `take(&id)`, while the reader task inserts responses by id in whatever
//! order they arrive, even before the request registered). A client whose
//! calls can time out [`claim`](AwaitMap::claim)s each id before it sends
//! the request and has its reader [`deliver`](AwaitMap::deliver) the
//! responses: a response whose caller gave up is then refused instead of
//! kept forever.
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
//! A key holds at most one value. [`insert`](AwaitMap::insert) stores it;
//! [`get`](AwaitMap::get) waits for it and returns a clone;
//! [`take`](AwaitMap::take) waits for it and moves it out;
//! [`remove`](AwaitMap::remove) moves it out without waiting.
//! [`cancel`](AwaitMap::cancel) and [`close`](AwaitMap::close) end waits
//! that would otherwise go on. The numbered guarantees below say exactly what
//! each of these promises; the crate's tests cite them by number.
//!
//! # Guarantees
//!
//! A future *waits* from the poll that returned `Pending` until it resolves
//! or is dropped. What is said of `get` and `take` holds for
//! [`get_owned`](AwaitMap::get_owned) and
//! [`take_owned`](AwaitMap::take_owned) too, and for the blocking calls,
//! which poll the same futures on a parked thread.
//!
//! 1. **Store, then wake.** [`insert`](AwaitMap::insert) stores the value
//!    (returning the one it replaced), then wakes every waiting `get` of the
//!    key and the waiting `take` that registered first. The wakers run after
//!    the map's lock is released.
//! 2. **Present keys resolve at once.** A `get` or `take` of a key that has
//!    a value is `Ready` on its first poll and registers nothing.
//! 3. **Futures are lazy.** Creating a future does nothing; it registers on
//!    its first `Pending` poll. Dropping a future that was never polled
//!    leaves the map exactly as it was.
//! 4. **One registration per future.** Polling a waiting future again with
//!    another waker replaces the waker it stored: only the newest one is
//!    woken. A waker that [`will_wake`](core::task::Waker::will_wake) the
//!    stored one is not cloned again.
//! 5. **Leaving frees.** Dropping a waiting future deregisters it, and when
//!    the last waiter of a key leaves, the key's waiting state is freed:
//!    waits that come and go leave the map's memory where it was (its
//!    capacity stays for reuse until [`shrink_to_fit`](AwaitMap::shrink_to_fit)).
//! 6. **`take` is cancel-safe.** A `take` woken by an `insert` but dropped
//!    before it returned the value leaves the value in the map and passes the
//!    wake-up to the next waiting `take` of the key. A value is never lost
//!    and never delivered twice.
//! 7. **`remove` does not wait and does not fail anyone.**
//!    [`remove`](AwaitMap::remove) takes a stored value out and returns it.
//!    Futures waiting on absent keys keep waiting, and a future woken for a
//!    value that `remove` took first goes back to waiting (a `take` keeps its
//!    place in line).
//! 8. **`cancel` is for now.** [`cancel(&k)`](AwaitMap::cancel) fails the
//!    futures waiting on `k` at that moment with [`WaitError::Cancelled`] and
//!    returns how many it failed; futures the key already has a value for are
//!    left alone. It is not sticky: a future that first polls afterwards
//!    waits as usual. For a lasting per-key failure, store a `Result`.
//! 9. **`close` is for good.** [`close`](AwaitMap::close) is permanent, and
//!    calling it again does nothing. Waiting futures of absent keys fail with
//!    [`WaitError::Closed`], and so does every later future of an absent
//!    key, on its first poll. A future whose key has a value for it still
//!    resolves `Ok`, including a `take` woken by an `insert` before the close
//!    and polled after it (the other `take`s of that key get `Closed`).
//!    `insert` still stores after `close`, so no value handed to the map is
//!    lost.
//! 10. **Happens-before.** Everything a producer did before `insert(k, v)`
//!     is visible to the consumer whose future resolved with `v`.
//! 11. **No user code under the lock but `K: Eq` and `V: Clone`.** Hashing,
//!     key copies (`Clone`, `to_owned`), waker `clone`, `wake` and `drop`,
//!     and the destructors of keys and values all run with the lock released,
//!     so a waker, or a key's `Hash` or `Clone`, may call back into the map.
//!     `K: Eq` and `V: Clone` must not: with `CsLock`, and with `SpinLock` in
//!     debug builds, that panics with a message saying so (in release builds
//!     the spin lock would spin forever). The whole-map methods are the one
//!     exception, and say so: [`retain`](AwaitMap::retain) runs its
//!     predicate under the lock, and the snapshots
//!     ([`keys`](AwaitMap::keys), [`values`](AwaitMap::values),
//!     [`entries`](AwaitMap::entries), [`awaited`](AwaitMap::awaited)) clone
//!     keys and values under it, so that each sees the map at one instant;
//!     the same rule holds for that code. When any of this user code panics
//!     and the caller catches the panic:
//!     - no value is destroyed, except the one the panicking call was
//!       itself replacing or removing (an `insert` over a present value, a
//!       `remove`);
//!     - every waiter that was due a wake-up gets it;
//!     - every map-wide condition that became true (the map drained, room
//!       under the limit, a newly wanted key) is announced to those waiting
//!       for it;
//!     - the map stays consistent and usable.
//!
//!     [When user code panics](#when-user-code-panics) says how.
//! 12. **A completed future must not be polled again.** Polling a future
//!     after it returned `Ready` (with a value or an error) panics with a
//!     message that says so, as `std` futures do; the map is not affected.
//! 13. **Bad keys give wrong answers, nothing worse.** With keys whose `Hash`
//!     and `Eq` disagree, or change their answers, a lookup may miss a value
//!     or find the wrong one. It never causes undefined behaviour, a panic
//!     inside the map or a deadlock: waiters still leave, values are still
//!     dropped once, `close` still ends every wait, and keys that behave keep
//!     working.
//!
//! # When user code panics
//!
//! How the map keeps guarantee 11 when code of yours panics, whether it ran
//! under the lock (`Eq`, `Clone`) or after it (`Hash`, key copies, wakers,
//! destructors):
//!
//! - **Under the lock,** a panic comes before any change and releases the
//!   lock, so every invariant holds after it.
//! - **A `take` whose poll panics** after it moved its value out puts the
//!   value back under its key before the panic goes on. (If code run by that
//!   panicking poll, a waker's `drop` say, stored a new value for the key
//!   meanwhile, the new one stays and the moved-out one is dropped: it is
//!   the value that call was removing.) A `get`'s poll puts nothing back:
//!   what it held was a clone.
//! - **Wake-ups come first.** They are issued before anything is dropped, and
//!   a waker that panics does not stop the others: the first panic is resumed
//!   once they all ran.
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
//!   producer; [`Promise::fulfill`] inserts the value, and a promise dropped
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
//! | `alloc` | yes | [`AwaitMap`] and its futures: everything that allocates. Without it the crate links no allocator and offers [`FixedAwaitMap`] |
//! | `producer` | yes (turns on `alloc`) | `AwaitMap`'s producer side: `with_limit` with `try_insert`, `insert_async` (and with `std` `insert_blocking`), `demand`, `closed`, `drained`, and event-listener, which they wait on. Without it a firmware that never uses them links none of that code (in `benches/size`, the `AwaitMap` image is 2.5 KB smaller) |
//! | `std` | yes (turns on `producer`) | the blocking API (`*_blocking`, `*_blocking_timeout`); `SpinLock` yields its thread while it waits |
//! | `spin` | yes | `SpinLock`, the default lock, and the constructors that do not name a lock (`new`, `with_capacity`, `with_hasher`, `with_capacity_and_hasher`) |
//! | `critical-section` | no | `CsLock`, a lock that holds a critical section: for maps that interrupt handlers use; needs no compare-and-swap |
//! | `portable-atomic` | no | targets without compare-and-swap: `SpinLock`'s atomics go through `portable-atomic`; the final binary picks its backend |
//! | `futures-core` | no (turns on `producer`) | `Demand` and `OwnedDemand` implement `futures_core::Stream`, the stream of wanted keys |
//!
//! Features only add: enabling `critical-section` does not change the
//! default lock, so a map that must be interrupt-safe names `CsLock`, and
//! no other crate in the build can turn it back into a spin lock.
//!
//! # Locks, `no_std` and interrupts
//!
//! The crate is `#![no_std]`. [`AwaitMap`] needs `alloc`;
//! [`FixedAwaitMap`] needs no heap at all (see [Choosing](#choosing)). One
//! lock guards the map; the
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
//!   `static`). For guarantee 11 to hold, it must release the lock when the
//!   closure unwinds, as both of the crate's locks do.
//!
//! A map can live in a `static` with no lazy initialisation and no extra
//! dependency: [`AwaitMap::const_new`] is a `const fn` with a fixed-seed
//! hasher ([`FixedHashBuilder`]: right for keys your code makes, not for keys
//! an attacker chooses) and the lock the type names, so
//! `static M: AwaitMap<u8, u32, FixedHashBuilder, CsLock> = AwaitMap::const_new();`
//! is the whole line. [`AwaitMap::with_hasher_and_lock`] is a `const fn`
//! too, for any hasher that can be built in a constant. [`AwaitMap::reserve`] makes room up front,
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
//! Of the two maps:
//! - [`AwaitMap`] (feature `alloc`) grows as needed: any number of keys and
//!   waiters, hashed lookups, promises, claims, owned futures, and with
//!   feature `producer` demand and backpressure. It needs a heap.
//! - [`FixedAwaitMap`] needs none: `KEYS` key slots and `WAITERS` waiter
//!   slots, fixed in its type and built in a constant, so a firmware that
//!   uses it links no allocator, and it never holds more memory than its
//!   type says. It has `get`, `take`, `insert`, `remove`, `try_get`,
//!   `cancel` and `close`, with the guarantees below; when it is full an
//!   insert of a new key is handed back and a wait that finds no slot fails
//!   with [`WaitError::NoRoom`]. Lookups compare the key with each occupied
//!   slot: right for the dozens of keys of a firmware, not for thousands.
//!   Reach for it on a microcontroller without a heap, or to bound the memory
//!   of a map whose size you know.
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

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

// Everything that allocates is behind feature `alloc`; without it the crate
// links no allocator, and `FixedAwaitMap` is the map.
#[cfg(feature = "alloc")]
mod after;
#[cfg(feature = "std")]
mod blocking;
#[cfg(feature = "alloc")]
mod claim;
mod error;
mod fixed;
#[cfg(feature = "alloc")]
mod future;
#[cfg(feature = "alloc")]
mod map;
#[cfg(all(feature = "alloc", target_has_atomic = "ptr"))]
mod owned;
#[cfg(all(feature = "producer", target_has_atomic = "ptr"))]
mod producer;
#[cfg(feature = "alloc")]
mod promise;
#[cfg(feature = "alloc")]
mod slab;
#[cfg(feature = "alloc")]
mod state;
mod sync;

#[cfg(feature = "alloc")]
pub use claim::Claim;
pub use error::WaitError;
pub use fixed::{FixedAwaitMap, FixedGet, FixedTake};
#[cfg(feature = "alloc")]
pub use future::{Get, Take};
#[cfg(feature = "alloc")]
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
#[cfg(feature = "alloc")]
pub type DefaultHashBuilder = hashbrown::DefaultHashBuilder;
#[cfg(feature = "alloc")]
pub use map::{AwaitMap, ConstLock, FixedHashBuilder, Waiting};
/// The lock traits: `L: ScopedRawMutex` for every map, and `ConstInit` for
/// [`Default`] and [`FromIterator`] (re-exported from `mutex-traits`, the
/// trait maitake-sync's locks use).
pub use mutex::{ConstInit, ScopedRawMutex};
#[cfg(all(feature = "alloc", target_has_atomic = "ptr"))]
pub use owned::{
    GetOrPromiseOwned, GetOwned, OwnedClaim, OwnedPromise, OwnedValueOrPromise, TakeOwned,
};
#[cfg(all(feature = "producer", target_has_atomic = "ptr"))]
pub use producer::{Demand, Drained, InsertAsync, NextWanted, OwnedDemand, WaitClosed};
#[cfg(feature = "alloc")]
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
