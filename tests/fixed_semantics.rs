//! The numbered guarantees of the crate docs, checked against
//! `FixedAwaitMap` with the cases `tests/semantics.rs` runs against
//! `AwaitMap` (those that apply: not the owned futures or borrowed key forms
//! only `AwaitMap` has).

mod common;

/// `FixedAwaitMap` behind the calls the cases make, with room to spare:
/// `insert` returns `Option` (a full map fails the case).
#[allow(unreachable_pub)]
mod shim {
    use awaitmap::{FixedAwaitMap, FixedGet, FixedTake};

    /// As many as the largest case here needs (the churn case's waiting
    /// takes; fewer under miri, whose cases are scaled down): the cases never
    /// see `NoRoom`. (The two cases with thousands of keys are `alloc_only`:
    /// a map that size would not fit a test thread's stack while it is
    /// built.)
    const KEYS: usize = if cfg!(miri) { 64 } else { 512 };
    const WAITERS: usize = if cfg!(miri) { 256 } else { 1024 };

    pub struct AwaitMap<K, V>(Box<FixedAwaitMap<K, V, KEYS, WAITERS>>);

    impl<K, V> std::fmt::Debug for AwaitMap<K, V> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fmt(f)
        }
    }

    impl<K: Eq + Clone, V> AwaitMap<K, V> {
        pub fn new() -> Self {
            AwaitMap(Box::new(FixedAwaitMap::new()))
        }

        pub fn insert(&self, key: K, value: V) -> Option<V> {
            match self.0.insert(key, value) {
                Ok(old) => old,
                Err(_) => panic!("the test map is full"),
            }
        }

        pub fn get<'a>(&'a self, key: &'a K) -> FixedGet<'a, K, V, KEYS, WAITERS> {
            self.0.get(key)
        }

        pub fn take<'a>(&'a self, key: &'a K) -> FixedTake<'a, K, V, KEYS, WAITERS> {
            self.0.take(key)
        }

        pub fn try_get(&self, key: &K) -> Option<V>
        where
            V: Clone,
        {
            self.0.try_get(key)
        }

        pub fn remove(&self, key: &K) -> Option<V> {
            self.0.remove(key)
        }

        pub fn contains_key(&self, key: &K) -> bool {
            self.0.contains_key(key)
        }

        pub fn cancel(&self, key: &K) -> usize {
            self.0.cancel(key)
        }

        pub fn close(&self) {
            self.0.close();
        }

        pub fn is_closed(&self) -> bool {
            self.0.is_closed()
        }

        pub fn len(&self) -> usize {
            self.0.len()
        }

        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }

        pub fn waiters(&self) -> usize {
            self.0.waiters()
        }
    }
}

use shim::AwaitMap;

/// Cases that need what only `AwaitMap` has: left out here.
macro_rules! alloc_only {
    ($($case:tt)*) => {};
}

include!("semantics/cases.rs");
