//! The one place that names a lock implementation.
//!
//! The rest of the crate only sees [`Lock::with`] and [`Lock::try_with`]: a
//! scoped API, so no guard can escape across an `.await`, and the lock can be
//! swapped (spin, a std lock, a critical section, loom's mutex) without
//! touching the logic.

/// A mutual-exclusion lock around `T`.
pub(crate) struct Lock<T> {
    inner: spin::mutex::SpinMutex<T>,
}

impl<T> Lock<T> {
    pub(crate) const fn new(value: T) -> Self {
        Lock {
            inner: spin::mutex::SpinMutex::new(value),
        }
    }

    /// Runs `f` with the lock held. If `f` panics, the lock is released as
    /// the panic unwinds.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut guard = self.inner.lock();
        f(&mut guard)
    }

    /// Runs `f` if the lock is free right now; never waits.
    pub(crate) fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.inner.try_lock().map(|mut guard| f(&mut guard))
    }
}
