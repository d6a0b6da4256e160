//! The hand-written peers: what users write today instead of awaitmap.
//!
//! - [`OneshotMap`]: the RPC client's pending-request table, a map from
//!   request id to a `tokio::sync::oneshot::Sender`, behind a lock.
//! - [`WakerListMap`]: a keyed "get" built by hand, a map from key to a value
//!   slot plus the wakers of the tasks waiting for it.
//! - [`Floor`]: the floor a hit is measured against, one lock + one hashbrown lookup
//!   with a stored hash + one clone.
//! - [`WaitKey`]: not a peer, the key newtype that `waitmap` needs for `u64`
//!   keys (its `wait` wants `K: From<&Q>`, which `u64` lacks).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use hashbrown::HashTable;
use tokio::sync::oneshot;

/// A lock that runs a closure on the data it guards, so one peer can be
/// written once for `std`, `parking_lot` and `spin` locks.
pub trait Lock<T> {
    fn new(value: T) -> Self;
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R;
}

impl<T> Lock<T> for std::sync::Mutex<T> {
    fn new(value: T) -> Self {
        std::sync::Mutex::new(value)
    }
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.lock().unwrap())
    }
}

impl<T> Lock<T> for parking_lot::Mutex<T> {
    fn new(value: T) -> Self {
        parking_lot::Mutex::new(value)
    }
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.lock())
    }
}

impl<T> Lock<T> for spin::mutex::SpinMutex<T> {
    fn new(value: T) -> Self {
        spin::mutex::SpinMutex::new(value)
    }
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.lock())
    }
}

/// `Lock<HashMap<u64, oneshot::Sender<V>>>`, as RPC clients write it:
/// register = create a oneshot, lock, insert the sender; respond = lock,
/// remove the sender, unlock, send; receive = poll the receiver.
pub struct OneshotMap<V, S, L> {
    pending: L,
    _types: std::marker::PhantomData<fn(V, S)>,
}

impl<V, S, L> OneshotMap<V, S, L>
where
    S: BuildHasher,
    L: Lock<HashMap<u64, oneshot::Sender<V>, S>>,
{
    pub fn new(hasher: S) -> Self {
        OneshotMap {
            pending: L::new(HashMap::with_hasher(hasher)),
            _types: std::marker::PhantomData,
        }
    }

    #[inline]
    pub fn register(&self, id: u64) -> oneshot::Receiver<V> {
        let (tx, rx) = oneshot::channel();
        self.pending.with(|m| m.insert(id, tx));
        rx
    }

    /// Hands `value` to the request `id`; false if no such request waits.
    #[inline]
    pub fn respond(&self, id: u64, value: V) -> bool {
        match self.pending.with(|m| m.remove(&id)) {
            Some(tx) => tx.send(value).is_ok(),
            None => false,
        }
    }

    /// The caller's cleanup when it gives up on a request.
    #[inline]
    pub fn forget(&self, id: u64) {
        drop(self.pending.with(|m| m.remove(&id)));
    }

    /// Gives back the table's memory beyond what its entries need.
    pub fn shrink_to_fit(&self) {
        self.pending.with(|m| m.shrink_to_fit());
    }
}

struct Slot<V> {
    value: Option<V>,
    waiters: Vec<Waker>,
}

/// `Mutex<HashMap<u64, (Option<V>, Vec<Waker>)>>`: a keyed "get" as users
/// write it by hand. A future that is dropped leaves its waker behind (there
/// is no way to find it again), so this peer cannot do the churn workload.
pub struct WakerListMap<V, S> {
    inner: std::sync::Mutex<HashMap<u64, Slot<V>, S>>,
}

impl<V: Clone, S: BuildHasher> WakerListMap<V, S> {
    pub fn new(hasher: S) -> Self {
        WakerListMap {
            inner: std::sync::Mutex::new(HashMap::with_hasher(hasher)),
        }
    }

    pub fn get(&self, key: u64) -> WakerListGet<'_, V, S> {
        WakerListGet { map: self, key }
    }

    /// Stores the value, then wakes every waiter once the lock is released.
    #[inline]
    pub fn insert(&self, key: u64, value: V) {
        let wakers = {
            let mut map = self.inner.lock().unwrap();
            let slot = map.entry(key).or_insert_with(|| Slot {
                value: None,
                waiters: Vec::new(),
            });
            slot.value = Some(value);
            std::mem::take(&mut slot.waiters)
        };
        for waker in wakers {
            waker.wake();
        }
    }

    #[inline]
    pub fn remove(&self, key: u64) -> Option<V> {
        let slot = self.inner.lock().unwrap().remove(&key);
        slot.and_then(|s| s.value)
    }

    /// Gives back the table's memory beyond what its entries need (the
    /// entries of dropped futures stay: nothing can find their wakers).
    pub fn shrink_to_fit(&self) {
        self.inner.lock().unwrap().shrink_to_fit();
    }
}

pub struct WakerListGet<'a, V, S> {
    map: &'a WakerListMap<V, S>,
    key: u64,
}

impl<V: Clone, S: BuildHasher> Future for WakerListGet<'_, V, S> {
    type Output = V;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<V> {
        let mut map = self.map.inner.lock().unwrap();
        let slot = map.entry(self.key).or_insert_with(|| Slot {
            value: None,
            waiters: Vec::new(),
        });
        match &slot.value {
            Some(v) => Poll::Ready(v.clone()),
            None => {
                slot.waiters.push(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// One spin lock + one hashbrown lookup with a stored hash + one clone.
pub struct Floor<V, S> {
    table: spin::mutex::SpinMutex<HashTable<(u64, u64, V)>>,
    hasher: S,
}

impl<V: Clone, S: BuildHasher> Floor<V, S> {
    pub fn new(hasher: S) -> Self {
        Floor {
            table: spin::mutex::SpinMutex::new(HashTable::new()),
            hasher,
        }
    }

    pub fn insert(&self, key: u64, value: V) {
        let hash = self.hasher.hash_one(key);
        let mut table = self.table.lock();
        match table.find_mut(hash, |e| e.1 == key) {
            Some(e) => e.2 = value,
            None => {
                table.insert_unique(hash, (hash, key, value), |e| e.0);
            }
        }
    }

    /// Hashes outside the lock, then locks, finds and clones.
    #[inline]
    pub fn get(&self, key: u64) -> Option<V> {
        let hash = self.hasher.hash_one(key);
        self.table
            .lock()
            .find(hash, |e| e.1 == key)
            .map(|e| e.2.clone())
    }
}

/// A `u64` key for `waitmap::WaitMap`, whose `wait(&q)` builds its own key
/// with `K::from(&q)`. It hashes and compares exactly as the `u64` it wraps
/// (the derived `Hash` hashes the one field), so `Borrow<u64>` is sound and
/// lookups take a plain `&u64`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WaitKey(pub u64);

impl From<&u64> for WaitKey {
    #[inline]
    fn from(k: &u64) -> Self {
        WaitKey(*k)
    }
}

impl Borrow<u64> for WaitKey {
    #[inline]
    fn borrow(&self) -> &u64 {
        &self.0
    }
}
