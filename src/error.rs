//! The error a wait can end with.

use core::fmt;

/// Why a [`get`](crate::AwaitMap::get) or [`take`](crate::AwaitMap::take)
/// ended without a value.
///
/// # Examples
///
/// ```
/// use awaitmap::{AwaitMap, WaitError};
///
/// let map: AwaitMap<u32, &str> = AwaitMap::new();
/// map.close();
/// let err = futures::executor::block_on(map.get(&1)).unwrap_err();
/// assert_eq!(err, WaitError::Closed);
/// assert_eq!(err.to_string(), "the map was closed");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitError {
    /// The map was [closed](crate::AwaitMap::close) while the key had no value.
    Closed,
    /// The wait was failed by [`cancel`](crate::AwaitMap::cancel).
    Cancelled,
    /// A `*_blocking_timeout` call ran out of time.
    TimedOut,
    /// The key's [`Promise`](crate::Promise) was dropped unfulfilled (its
    /// producer failed, panicked or was cancelled) while this future waited.
    Abandoned,
    /// A [`FixedAwaitMap`](crate::FixedAwaitMap) had no room left for this
    /// future: every key slot held another key, or every waiter slot another
    /// waiting future. Nothing was registered; ask again with a new future
    /// once there is room.
    NoRoom,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitError::Closed => "the map was closed",
            WaitError::Cancelled => "the wait was cancelled",
            WaitError::TimedOut => "the wait timed out",
            WaitError::Abandoned => "the producer of the key abandoned it",
            WaitError::NoRoom => "the fixed-capacity map had no room for the wait",
        })
    }
}

impl core::error::Error for WaitError {}
