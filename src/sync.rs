//! The one place that names a lock implementation.
//!
//! The map's lock is its type parameter `L`, any
//! [`ScopedRawMutex`](crate::ScopedRawMutex): the trait of the `mutex-traits`
//! crate, which maitake-sync uses, so a lock written for that ecosystem works
//! here as it is. The state sits in [`Lock`], which pairs the raw lock with
//! its data (as the `mutex` crate's `BlockingMutex` does, every step in
//! line), so the rest of the crate only sees [`Lock::with`] and
//! [`Lock::try_with`]: a scoped API, so no guard can escape across an
//! `.await`, and the logic never names a lock.
//!
//! The crate ships two raw locks: [`SpinLock`] (feature `spin`, the default)
//! and [`CsLock`] (feature `critical-section`). Both release on unwind, which
//! the crate's guarantees on panics need (a panicking `Eq` or `Clone` under the lock must
//! leave the map usable); the critical-section lock of the `mutex` crate stays
//! locked after a panic without its `std` feature, which is why it is not the
//! one offered here.
//!
//! Under `--cfg awaitmap_loom` the state sits in loom's mutex instead, so loom
//! can explore the interleavings of the map's operations (it cannot see the
//! atomics of a spin lock); `L` is then only stored.

#[cfg(any(feature = "spin", feature = "critical-section"))]
use core::fmt;

use mutex::ScopedRawMutex;

/// Declares a `const fn`, except under loom, whose mutex cannot be built in a
/// constant.
macro_rules! const_fn_unless_loom {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        #[cfg(not(awaitmap_loom))]
        $(#[$attr])*
        $vis const fn $name($($arg: $ty),*) -> $ret $body

        #[cfg(awaitmap_loom)]
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use const_fn_unless_loom;

/// The message of the panic that replaces a deadlock on re-entry.
#[cfg(all(feature = "spin", debug_assertions))]
const REENTERED_SPIN: &str = "awaitmap: the map's lock is already held by this thread or core, so \
    waiting for it would never end. Either an interrupt (or signal) handler used a map that the \
    code it interrupted was using, or a key's `Eq` or a value's `Clone` called back into the map. \
    A map shared with interrupt handlers needs the critical-section lock `awaitmap::CsLock` \
    (feature `critical-section`); `Eq` and `Clone` must not use the map they are stored in";

#[cfg(feature = "critical-section")]
const REENTERED_CS: &str = "awaitmap: the map was used again from inside its own critical \
    section (a key's `Eq` or a value's `Clone` called back into the map), so waiting for its \
    lock would never end; `Eq` and `Clone` must not use the map they are stored in";

/// The default lock `L` of [`AwaitMap`](crate::AwaitMap): [`SpinLock`].
///
/// Enabling `critical-section` never changes it: a map shared with interrupt
/// handlers names `CsLock` itself, so no other crate in the build can turn
/// it back into a spin lock.
#[cfg(feature = "spin")]
pub type DefaultLock = SpinLock;

/// Without feature `spin` there is no default lock: `DefaultLock` is this
/// empty type, which is not a lock, so a map must name its lock, for example
/// `AwaitMap<K, V, S, CsLock>`.
#[cfg(not(feature = "spin"))]
pub type DefaultLock = NoDefaultLock;

/// Stands in for the default lock when feature `spin` is off. Nothing can
/// build one, so a map with this lock cannot be built: name a lock instead.
/// (It is not an empty enum, so that a `static` that names it fails with
/// the clear error of [`AwaitMap::const_new`](crate::AwaitMap::const_new)
/// rather than a warning about an uninhabited type.)
#[cfg(not(feature = "spin"))]
#[derive(Debug)]
pub struct NoDefaultLock {
    _never: (),
}

// SAFETY: no value of the type is ever built (its field is private and the
// crate builds none), so none of these methods can be called.
#[allow(unsafe_code)]
#[cfg(not(feature = "spin"))]
unsafe impl ScopedRawMutex for NoDefaultLock {
    fn try_with_lock<R>(&self, _: impl FnOnce() -> R) -> Option<R> {
        unreachable!("a `NoDefaultLock` is never built")
    }

    fn with_lock<R>(&self, _: impl FnOnce() -> R) -> R {
        unreachable!("a `NoDefaultLock` is never built")
    }

    fn is_locked(&self) -> bool {
        unreachable!("a `NoDefaultLock` is never built")
    }
}

// ---------------------------------------------------------------------------
// The spin lock.

#[cfg(all(feature = "spin", not(feature = "std")))]
type Relax = spin::relax::Spin;
#[cfg(all(feature = "spin", feature = "std"))]
type Relax = SpinThenYield;

/// The wait between two looks at a busy lock: a short spin (critical
/// sections here are a few dozen nanoseconds), then the rest of the time
/// slice is given away, so a lock holder that was preempted gets to run
/// instead of every waiter burning its own slice. A plain spin lock collapses
/// when threads outnumber cores; this one does not, and its release stays a
/// single store.
#[cfg(all(feature = "spin", feature = "std"))]
struct SpinThenYield;

#[cfg(all(feature = "spin", feature = "std"))]
impl spin::RelaxStrategy for SpinThenYield {
    // Out of line: the uncontended lock stays as small as a plain spin lock.
    #[cold]
    #[inline(never)]
    fn relax() {
        for _ in 0..16 {
            core::hint::spin_loop();
        }
        std::thread::yield_now();
    }
}

/// The default lock: a spin lock.
///
/// Uncontended it costs one compare-and-swap to take and one store to
/// release. With feature `std` a waiter spins briefly, then yields its
/// thread, so a preempted holder is not starved. Without `std` it spins.
///
/// **Not for maps that interrupt handlers use** on a single core: a handler
/// that finds the lock held by the code it interrupted would spin forever. Use
/// `CsLock` there. Debug builds turn that deadlock into a panic that says
/// so: with `std` the lock remembers which thread holds it, so re-entry by the
/// same thread (a signal handler, or a key's `Eq` calling back into the map)
/// panics at once; without `std` a wait that lasts 2<sup>26</sup> turns (far
/// beyond any hold of this map's lock) panics.
///
/// It needs atomic compare-and-swap: on targets without it (thumbv6m,
/// riscv32imc) enable feature `portable-atomic`, or use `CsLock`.
///
/// # Examples
///
/// ```
/// use awaitmap::{AwaitMap, DefaultHashBuilder, SpinLock};
///
/// // What `AwaitMap::new()` builds, spelled out.
/// let map: AwaitMap<u32, &str, DefaultHashBuilder, SpinLock> =
///     AwaitMap::with_hasher_and_lock(DefaultHashBuilder::default(), SpinLock::new());
/// map.insert(1, "one");
/// assert_eq!(map.try_get(&1), Some("one"));
/// ```
#[cfg(feature = "spin")]
pub struct SpinLock {
    lock: spin::mutex::SpinMutex<(), Relax>,
    /// Debug builds with `std`: the token of the thread holding the lock,
    /// 0 when free. Written only by the holder, under the lock.
    #[cfg(all(debug_assertions, feature = "std"))]
    owner: core::sync::atomic::AtomicUsize,
}

#[cfg(feature = "spin")]
impl SpinLock {
    /// A free lock.
    ///
    /// # Examples
    ///
    /// ```
    /// static LOCK: awaitmap::SpinLock = awaitmap::SpinLock::new();
    /// # let _ = &LOCK;
    /// ```
    pub const fn new() -> Self {
        SpinLock {
            lock: spin::mutex::SpinMutex::new(()),
            #[cfg(all(debug_assertions, feature = "std"))]
            owner: core::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The wait for a busy lock, out of line so the uncontended lock makes no
    /// call.
    #[cold]
    #[inline(never)]
    fn lock_slow(&self) -> spin::mutex::SpinMutexGuard<'_, (), Relax> {
        // The holder stores its token under the lock and clears it before
        // releasing, so seeing our own token means we hold the lock.
        #[cfg(all(debug_assertions, feature = "std"))]
        if self.owner.load(core::sync::atomic::Ordering::Relaxed) == thread_token() {
            panic!("{}", REENTERED_SPIN);
        }
        #[cfg(all(debug_assertions, not(feature = "std")))]
        let mut turns: u32 = 0;
        loop {
            if let Some(guard) = self.lock.try_lock() {
                return guard;
            }
            while self.lock.is_locked() {
                <Relax as spin::RelaxStrategy>::relax();
                #[cfg(all(debug_assertions, not(feature = "std")))]
                {
                    turns += 1;
                    if turns == 1 << 26 {
                        panic!("{}", REENTERED_SPIN);
                    }
                }
            }
        }
    }
}

/// A per-thread address: distinct for every live thread, never 0.
#[cfg(all(feature = "spin", debug_assertions, feature = "std"))]
fn thread_token() -> usize {
    std::thread_local! {
        static TOKEN: u8 = const { 0 };
    }
    TOKEN.with(|token| core::ptr::from_ref(token).addr())
}

/// Clears the owner token before the lock is released (also on unwind).
#[cfg(all(feature = "spin", debug_assertions, feature = "std"))]
struct ClearOwner<'a>(&'a core::sync::atomic::AtomicUsize);

#[cfg(all(feature = "spin", debug_assertions, feature = "std"))]
impl Drop for ClearOwner<'_> {
    fn drop(&mut self) {
        self.0.store(0, core::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(feature = "spin")]
impl SpinLock {
    #[inline(always)]
    fn run<R>(
        &self,
        guard: spin::mutex::SpinMutexGuard<'_, (), Relax>,
        f: impl FnOnce() -> R,
    ) -> R {
        #[cfg(all(debug_assertions, feature = "std"))]
        let _owner = {
            self.owner
                .store(thread_token(), core::sync::atomic::Ordering::Relaxed);
            ClearOwner(&self.owner)
        };
        let result = f();
        // Locals drop in reverse order: the owner token is cleared, then the
        // guard releases the lock; an unwind out of `f` does the same.
        #[cfg(all(debug_assertions, feature = "std"))]
        drop(_owner);
        drop(guard);
        result
    }
}

// SAFETY: `f` runs only while this call holds a guard of `self.lock`, a
// spin mutex, and the guard is released only after `f` returns or unwinds;
// spin's mutex lets one guard exist at a time, so two calls' `f` never
// overlap.
#[allow(unsafe_code)]
#[cfg(feature = "spin")]
unsafe impl ScopedRawMutex for SpinLock {
    #[inline(always)]
    fn try_with_lock<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        let guard = self.lock.try_lock()?;
        Some(self.run(guard, f))
    }

    #[inline(always)]
    fn with_lock<R>(&self, f: impl FnOnce() -> R) -> R {
        let guard = match self.lock.try_lock() {
            Some(guard) => guard,
            None => self.lock_slow(),
        };
        self.run(guard, f)
    }

    fn is_locked(&self) -> bool {
        self.lock.is_locked()
    }
}

#[cfg(feature = "spin")]
impl mutex::ConstInit for SpinLock {
    const INIT: Self = SpinLock::new();
}

#[cfg(feature = "spin")]
impl Default for SpinLock {
    fn default() -> Self {
        SpinLock::new()
    }
}

#[cfg(feature = "spin")]
impl fmt::Debug for SpinLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpinLock")
            .field("locked", &self.lock.is_locked())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// The critical-section lock.

/// A lock that holds a critical section (feature `critical-section`): safe
/// for a map that interrupt handlers use.
///
/// Every access to the map runs inside `critical_section::with`, so on a
/// single core an interrupt cannot arrive while the map is held (it is taken
/// as soon as the map is released), and where the critical-section
/// implementation covers several cores (a hardware spinlock, or `std`'s
/// process-wide mutex) it excludes the other cores and threads too. The
/// final binary provides the implementation, as the `critical-section` crate
/// asks: `cortex-m`'s `critical-section-single-core` feature, a HAL, or
/// `critical-section`'s `std` feature on a host.
///
/// No compare-and-swap is needed, so it works on thumbv6m and riscv32imc
/// without `portable-atomic`. The map's critical sections are short: a probe
/// of the table, a few list links, one `Eq` per probed key and one `Clone`
/// for a `get` hit. A table or waiter-slab resize happens inside one too,
/// so an interrupt-latency-sensitive firmware reserves capacity up front
/// ([`AwaitMap::reserve`](crate::AwaitMap::reserve)).
///
/// Using the map again from inside its own critical section (a key's `Eq` or
/// a value's `Clone` calling back into the map) panics with a message rather
/// than deadlocking. A panic under the lock releases it.
///
/// Every critical section excludes every other, so all `CsLock` maps (and
/// all other users of critical sections) in a program take turns; the
/// map's `Debug` enters one too, briefly, to see whether the map is busy.
///
/// # Examples
///
/// ```
/// # // critical-section's `std` implementation stands in for a target's.
/// use awaitmap::{AwaitMap, CsLock};
/// use foldhash::fast::FixedState;
///
/// type Replies = AwaitMap<u8, u32, FixedState, CsLock>;
/// static REPLIES: Replies = AwaitMap::with_hasher_and_lock(FixedState::with_seed(1), CsLock::new());
///
/// REPLIES.insert(3, 9); // for example from an interrupt handler
/// assert_eq!(futures::executor::block_on(REPLIES.take(&3)), Ok(9));
/// ```
#[cfg(feature = "critical-section")]
pub struct CsLock {
    /// Set while the map is held; it can only be seen set from inside the
    /// holder's own critical section, that is by a re-entrant call.
    taken: critical_section::Mutex<core::cell::Cell<bool>>,
}

#[cfg(feature = "critical-section")]
impl CsLock {
    /// A free lock.
    ///
    /// # Examples
    ///
    /// ```
    /// static LOCK: awaitmap::CsLock = awaitmap::CsLock::new();
    /// # let _ = &LOCK;
    /// ```
    pub const fn new() -> Self {
        CsLock {
            taken: critical_section::Mutex::new(core::cell::Cell::new(false)),
        }
    }
}

/// Clears `taken` when the holder is done (also on unwind).
#[cfg(feature = "critical-section")]
struct Untake<'a>(&'a core::cell::Cell<bool>);

#[cfg(feature = "critical-section")]
impl Drop for Untake<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

// SAFETY: `f` runs only inside a critical section, after this call changed
// `taken` from false to true, and `taken` is cleared only when `f` returns
// or unwinds, still inside that critical section. Critical sections exclude
// each other across every core and thread the implementation covers (the
// `critical-section` crate's contract), and a nested one (same core) finds
// `taken` set and does not run its `f`. So two calls' `f` never overlap.
#[allow(unsafe_code)]
#[cfg(feature = "critical-section")]
unsafe impl ScopedRawMutex for CsLock {
    #[inline]
    fn try_with_lock<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        critical_section::with(|cs| {
            let taken = self.taken.borrow(cs);
            if taken.replace(true) {
                return None;
            }
            let _untake = Untake(taken);
            Some(f())
        })
    }

    #[inline]
    fn with_lock<R>(&self, f: impl FnOnce() -> R) -> R {
        // Inside our critical section nobody else can release the lock: a
        // busy lock here is a re-entrant call.
        match self.try_with_lock(f) {
            Some(result) => result,
            None => panic!("{}", REENTERED_CS),
        }
    }

    fn is_locked(&self) -> bool {
        critical_section::with(|cs| self.taken.borrow(cs).get())
    }
}

#[cfg(feature = "critical-section")]
impl mutex::ConstInit for CsLock {
    const INIT: Self = CsLock::new();
}

#[cfg(feature = "critical-section")]
impl Default for CsLock {
    fn default() -> Self {
        CsLock::new()
    }
}

#[cfg(feature = "critical-section")]
impl fmt::Debug for CsLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsLock")
            .field("locked", &self.is_locked())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Map-wide conditions.

/// The map-wide conditions of [`AwaitMap`](crate::AwaitMap) (feature
/// `alloc`: event-listener allocates).
#[cfg(feature = "alloc")]
mod events {
    use super::Panic;

    #[cfg(all(
        feature = "producer",
        target_has_atomic = "ptr",
        feature = "std",
        not(awaitmap_loom)
    ))]
    pub(crate) use event_listener::Listener;
    #[cfg(all(feature = "producer", target_has_atomic = "ptr", not(awaitmap_loom)))]
    pub(crate) use event_listener::{Event, EventListener};
    #[cfg(all(feature = "producer", awaitmap_loom, feature = "std"))]
    pub(crate) use loom_event::Listener;
    #[cfg(all(feature = "producer", awaitmap_loom))]
    pub(crate) use loom_event::{Event, EventListener};

    /// Under `--cfg awaitmap_loom`: the part of event-listener's API the crate
    /// uses, on loom's mutex, so loom can switch threads at every listen, notify
    /// and poll (event-listener's std mutex and atomics are invisible to it).
    /// The same contract: `notify(n)` makes sure `n` listeners are notified,
    /// `notify_additional(n)` notifies `n` more, in listening order, and a
    /// notified listener dropped before it saw the notification passes it on.
    #[cfg(all(feature = "producer", awaitmap_loom))]
    mod loom_event {
        use alloc::vec::Vec;
        use core::future::Future;
        use core::pin::Pin;
        use core::task::{Context, Poll, Waker};
        use loom::sync::{Arc, Mutex};

        /// The listeners, in listening order: id, `Some(additional)` once
        /// notified, waker.
        #[derive(Default)]
        struct List {
            next_id: u64,
            entries: Vec<(u64, Option<bool>, Option<Waker>)>,
        }

        impl List {
            fn notify(&mut self, n: usize, additional: bool, wake: &mut Vec<Waker>) {
                let notified = self.entries.iter().filter(|e| e.1.is_some()).count();
                let mut n = if additional {
                    n
                } else {
                    n.saturating_sub(notified)
                };
                for entry in self.entries.iter_mut().filter(|e| e.1.is_none()) {
                    if n == 0 {
                        break;
                    }
                    entry.1 = Some(additional);
                    wake.extend(entry.2.take());
                    n -= 1;
                }
            }
        }

        pub(crate) struct Event(Arc<Mutex<List>>);

        impl Event {
            pub(crate) fn new() -> Self {
                Event(Arc::new(Mutex::new(List::default())))
            }

            pub(crate) fn listen(&self) -> EventListener {
                let mut list = self.0.lock().unwrap();
                let id = list.next_id;
                list.next_id += 1;
                list.entries.push((id, None, None));
                EventListener {
                    list: Arc::clone(&self.0),
                    id,
                    done: false,
                }
            }

            pub(crate) fn notify(&self, n: usize) {
                self.notify_with(n, false);
            }

            pub(crate) fn notify_additional(&self, n: usize) {
                self.notify_with(n, true);
            }

            /// Wakers run after the list is unlocked.
            fn notify_with(&self, n: usize, additional: bool) {
                let mut wake = Vec::new();
                self.0.lock().unwrap().notify(n, additional, &mut wake);
                wake.into_iter().for_each(Waker::wake);
            }
        }

        pub(crate) struct EventListener {
            list: Arc<Mutex<List>>,
            id: u64,
            /// Returned `Ready`: its entry is gone.
            done: bool,
        }

        impl Future for EventListener {
            type Output = ();

            fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                let mut list = self.list.lock().unwrap();
                let at = list.entries.iter().position(|e| e.0 == self.id);
                let at = at.expect("an event listener polled after it returned `Ready`");
                if list.entries[at].1.is_some() {
                    list.entries.remove(at);
                    drop(list);
                    self.done = true;
                    return Poll::Ready(());
                }
                let old = list.entries[at].2.replace(cx.waker().clone());
                drop(list);
                drop(old);
                Poll::Pending
            }
        }

        impl Drop for EventListener {
            fn drop(&mut self) {
                if self.done {
                    return;
                }
                let mut wake = Vec::new();
                let mut list = self.list.lock().unwrap();
                let at = list.entries.iter().position(|e| e.0 == self.id);
                let (_, notified, old) = list.entries.remove(at.expect("a listener is listed"));
                if let Some(additional) = notified {
                    list.notify(1, additional, &mut wake);
                }
                drop(list);
                drop(old);
                wake.into_iter().for_each(Waker::wake);
            }
        }

        /// Blocking waits (`insert_blocking`) are not modelled under loom.
        #[cfg(feature = "std")]
        pub(crate) trait Listener {
            fn wait(self);
        }

        #[cfg(feature = "std")]
        impl Listener for EventListener {
            fn wait(self) {
                unimplemented!("blocking waits are not modelled under loom")
            }
        }
    }

    /// The map-wide conditions producers wait on, each one event-listener
    /// `Event` that many may wait on. Without the producer side (feature
    /// `producer`, or a target without atomic pointers) there is no
    /// event-listener: the notifications are no-ops.
    #[cfg(all(feature = "producer", target_has_atomic = "ptr"))]
    pub(crate) struct Events {
        /// A value left a limited map (one notification per freed slot), or the
        /// map was closed (everyone: a closed map takes values beyond its limit).
        pub(crate) room: Event,
        /// A key became wanted.
        pub(crate) demand: Event,
        /// The map was closed.
        pub(crate) closed: Event,
        /// The last waiting future finished.
        pub(crate) idle: Event,
    }

    #[cfg(all(feature = "producer", target_has_atomic = "ptr"))]
    impl Events {
        const_fn_unless_loom! {
            pub(crate) fn new() -> Self {
                Events {
                    room: Event::new(),
                    demand: Event::new(),
                    closed: Event::new(),
                    idle: Event::new(),
                }
            }
        }

        /// `n` values left the map: lets as many waiting producers in.
        #[inline]
        pub(crate) fn room(&self, n: usize) {
            self.room.notify_additional(n);
        }

        /// A key became wanted: one more for the demand handles.
        #[inline]
        pub(crate) fn wanted(&self) {
            self.demand.notify_additional(1);
        }

        /// A future started waiting on a key: every producer waiting for room
        /// looks again, since the one holding that key's value is let in.
        #[cold]
        #[inline(never)]
        pub(crate) fn awaited(&self) {
            // Additional: a producer let in this way and dropped before it
            // looked passes the turn on, as one let in by a freed value does.
            self.room.notify_additional(usize::MAX);
        }

        /// The last waiter left.
        #[inline]
        pub(crate) fn idle(&self) {
            self.idle.notify(usize::MAX);
        }

        /// The map closed: everyone waiting on any condition looks again.
        pub(crate) fn closed(&self, panic: &mut Option<Panic>) {
            for event in [&self.closed, &self.room, &self.demand] {
                super::caught(|| event.notify(usize::MAX), panic);
            }
        }
    }

    /// Without the producer side: nobody can wait on a map-wide condition.
    #[cfg(not(all(feature = "producer", target_has_atomic = "ptr")))]
    pub(crate) struct Events;

    #[cfg(not(all(feature = "producer", target_has_atomic = "ptr")))]
    impl Events {
        pub(crate) const fn new() -> Self {
            Events
        }

        #[inline]
        pub(crate) fn room(&self, _n: usize) {}

        #[inline]
        pub(crate) fn wanted(&self) {}

        #[inline]
        pub(crate) fn awaited(&self) {}

        #[inline]
        pub(crate) fn idle(&self) {}

        pub(crate) fn closed(&self, _panic: &mut Option<Panic>) {}
    }
}
#[cfg(feature = "alloc")]
pub(crate) use events::Events;
#[cfg(all(feature = "producer", target_has_atomic = "ptr", feature = "std"))]
pub(crate) use events::Listener;
#[cfg(all(feature = "producer", target_has_atomic = "ptr"))]
pub(crate) use events::{Event, EventListener};

/// Whether this build has the producer side of `AwaitMap` (feature
/// `producer`, on a target with atomic pointers). Without it nothing can set
/// a limit or watch the demand, so the core's tests of those read constants
/// and the code behind them is not linked. The one place the core asks.
#[cfg(feature = "alloc")]
pub(crate) const PRODUCER: bool = cfg!(all(feature = "producer", target_has_atomic = "ptr"));

// ---------------------------------------------------------------------------
// Panics in user code.

/// A panic raised by user code the map ran on an operation's behalf, kept
/// until the rest of the operation has run.
#[cfg(feature = "std")]
pub(crate) type Panic = alloc::boxed::Box<dyn core::any::Any + Send>;
/// Without `std` a panic propagates at once: there is never one to keep.
#[cfg(not(feature = "std"))]
pub(crate) type Panic = core::convert::Infallible;

/// Runs user code (a waker, a destructor) on behalf of an operation. With
/// `std`, a panic does not stop the operation: the first one is kept in
/// `panic` for [`resume`] once everything due has run.
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

/// Resumes the panic [`caught`] kept, if any.
#[cfg(feature = "std")]
#[inline]
pub(crate) fn resume(panic: Option<Panic>) {
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
}

#[cfg(not(feature = "std"))]
#[inline]
pub(crate) fn resume(_: Option<Panic>) {}

// ---------------------------------------------------------------------------
// The map's state behind `L`.

/// A mutual-exclusion lock around `T`, taken through `L`. (What the `mutex`
/// crate's `BlockingMutex` does, with every step in line: a poll's trips
/// through the lock are the hot path.)
pub(crate) struct Lock<T, L> {
    #[cfg(not(awaitmap_loom))]
    raw: L,
    #[cfg(not(awaitmap_loom))]
    data: core::cell::UnsafeCell<T>,
    #[cfg(awaitmap_loom)]
    inner: loom::sync::Mutex<T>,
    #[cfg(awaitmap_loom)]
    _lock: L,
}

// SAFETY: the data is reached only in `with` and `try_with`, inside `L`'s
// scoped lock, which lets one closure run at a time: sharing the `Lock`
// between threads hands the `T` from one thread to another, never to two
// at once, so `T: Send` suffices (as for `std::sync::Mutex`).
#[allow(unsafe_code)]
#[cfg(not(awaitmap_loom))]
unsafe impl<T: Send, L: ScopedRawMutex + Sync> Sync for Lock<T, L> {}

impl<T, L> Lock<T, L> {
    #[cfg(not(awaitmap_loom))]
    pub(crate) const fn new(lock: L, value: T) -> Self {
        Lock {
            raw: lock,
            data: core::cell::UnsafeCell::new(value),
        }
    }

    /// loom's mutex cannot be built in a constant.
    #[cfg(awaitmap_loom)]
    pub(crate) fn new(lock: L, value: T) -> Self {
        Lock {
            inner: loom::sync::Mutex::new(value),
            _lock: lock,
        }
    }
}

impl<T, L: ScopedRawMutex> Lock<T, L> {
    /// Runs `f` with the lock held. If `f` panics, the lock is released as
    /// the panic unwinds (both of the crate's locks do; a user's `L` must too
    /// for the crate's guarantees on panics to hold).
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        #[cfg(not(awaitmap_loom))]
        return self.raw.with_lock(|| {
            // SAFETY: `ScopedRawMutex` (an unsafe trait) promises that no
            // two closures given to `with_lock`/`try_with_lock` of one lock
            // run at once, and these are the only places the cell is
            // reached: this is the only reference to the data.
            #[allow(unsafe_code)]
            let data = unsafe { &mut *self.data.get() };
            f(data)
        });
        // A panic under the lock (user `Eq` or `Clone`) leaves the state
        // consistent by construction, so poisoning carries no information.
        #[cfg(awaitmap_loom)]
        return f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Runs `f` if the lock is free right now; never waits.
    #[inline(always)]
    pub(crate) fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        #[cfg(not(awaitmap_loom))]
        return self.raw.try_with_lock(|| {
            // SAFETY: as in `with`.
            #[allow(unsafe_code)]
            let data = unsafe { &mut *self.data.get() };
            f(data)
        });
        #[cfg(awaitmap_loom)]
        return self.inner.try_lock().ok().map(|mut guard| f(&mut guard));
    }
}
