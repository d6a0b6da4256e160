//! The one place that names a lock implementation.
//!
//! The rest of the crate only sees [`Lock::with`] and [`Lock::try_with`]: a
//! scoped API, so no guard can escape across an `.await`, and the lock can be
//! swapped (spin, a std lock, a critical section, loom's mutex) without
//! touching the logic. The crate has no atomics outside the lock.
//!
//! Under `--cfg awaitmap_loom` the lock is loom's mutex, so loom can explore
//! the interleavings of the map's operations (it cannot see spin's atomics).

#[cfg(not(awaitmap_loom))]
type Inner<T> = spin::mutex::SpinMutex<T, Relax>;
#[cfg(all(not(awaitmap_loom), not(feature = "std")))]
type Relax = spin::relax::Spin;
#[cfg(all(not(awaitmap_loom), feature = "std"))]
type Relax = SpinThenYield;

/// The wait between two looks at a busy lock: a short spin (critical
/// sections here are a few dozen nanoseconds), then the rest of the time
/// slice is given away, so a lock holder that was preempted gets to run
/// instead of every waiter burning its own slice. A plain spin lock collapses
/// when threads outnumber cores; this one does not, and its release stays a
/// single store.
#[cfg(all(feature = "std", not(awaitmap_loom)))]
pub(crate) struct SpinThenYield;

#[cfg(all(feature = "std", not(awaitmap_loom)))]
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
#[cfg(awaitmap_loom)]
type Inner<T> = loom::sync::Mutex<T>;

/// A mutual-exclusion lock around `T`.
pub(crate) struct Lock<T> {
    inner: Inner<T>,
}

impl<T> Lock<T> {
    #[cfg(not(awaitmap_loom))]
    pub(crate) const fn new(value: T) -> Self {
        Lock {
            inner: Inner::new(value),
        }
    }

    /// loom's mutex cannot be built in a constant.
    #[cfg(awaitmap_loom)]
    pub(crate) fn new(value: T) -> Self {
        Lock {
            inner: loom::sync::Mutex::new(value),
        }
    }

    /// Runs `f` with the lock held. If `f` panics, the lock is released as
    /// the panic unwinds.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // The uncontended case inline, the wait out of line: the fast path
        // makes no call, so it needs no saved registers.
        #[cfg(not(awaitmap_loom))]
        let mut guard = match self.inner.try_lock() {
            Some(guard) => guard,
            None => self.lock_slow(),
        };
        // A panic under the lock (user `Eq` or `Clone`) leaves the state
        // consistent by construction, so poisoning carries no information.
        #[cfg(awaitmap_loom)]
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    #[cfg(not(awaitmap_loom))]
    #[cold]
    #[inline(never)]
    fn lock_slow(&self) -> spin::mutex::SpinMutexGuard<'_, T, Relax> {
        self.inner.lock()
    }

    /// Runs `f` if the lock is free right now; never waits.
    pub(crate) fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        #[cfg(not(awaitmap_loom))]
        let guard = self.inner.try_lock();
        #[cfg(awaitmap_loom)]
        let guard = self.inner.try_lock().ok();
        guard.map(|mut guard| f(&mut guard))
    }
}

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
