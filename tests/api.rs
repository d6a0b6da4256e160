//! The call shapes of the public API (constructors, methods with borrowed
//! keys, owned futures, `Extend`/`FromIterator`, auto traits, `WaitError`),
//! checked at compile time (trait bounds, `const`, `'static`) and at run time
//! (what each call returns).

mod common;

use std::cell::Cell;
use std::collections::hash_map::DefaultHasher;
use std::fmt::Display;
use std::hash::{BuildHasher, BuildHasherDefault, Hash};
use std::marker::PhantomPinned;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use awaitmap::{AwaitMap, DefaultHashBuilder, Get, GetOwned, Take, TakeOwned, WaitError};
use common::{counting_waker, poll_once};

type StdHasher = BuildHasherDefault<DefaultHasher>;

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}
fn assert_unpin<T: Unpin>() {}
fn assert_static<T: 'static>(_: &T) {}

/// Polls `fut` once with a fresh counting waker and expects `Ready`.
fn ready<F: Future + Unpin>(fut: &mut F) -> F::Output {
    let (_, waker) = counting_waker();
    match poll_once(fut, &waker) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("expected the future to be ready"),
    }
}

/// Polls `fut` once with a fresh counting waker and expects `Pending`.
fn pending<F: Future + Unpin>(fut: &mut F) {
    let (_, waker) = counting_waker();
    assert!(poll_once(fut, &waker).is_pending(), "expected `Pending`");
}

// ---------------------------------------------------------------------------
// Constructors
// ---------------------------------------------------------------------------

/// Inserts and reads back through `map`, whatever its hasher.
fn round_trip<S: BuildHasher>(map: &AwaitMap<u64, &'static str, S>) {
    assert!(map.is_empty());
    assert_eq!(map.len(), 0);
    assert_eq!(map.waiters(), 0);
    assert!(!map.is_closed());
    assert_eq!(map.insert(1, "one"), None);
    assert_eq!(map.insert(2, "two"), None);
    assert_eq!(map.try_get(&1), Some("one"));
    assert_eq!(map.try_get(&2), Some("two"));
    assert_eq!(map.try_get(&3), None);
    assert_eq!(map.len(), 2);
}

// Call shapes: all five constructors build an empty, working map.
#[test]
fn every_constructor_builds_an_empty_working_map() {
    round_trip(&AwaitMap::new());
    let default: AwaitMap<u64, &str> = AwaitMap::default();
    round_trip(&default);
    round_trip(&AwaitMap::with_capacity(100));
    round_trip(&AwaitMap::with_capacity(0));
    round_trip(&AwaitMap::with_hasher(StdHasher::default()));
    round_trip(&AwaitMap::with_hasher(
        foldhash::fast::FixedState::with_seed(7),
    ));
    round_trip(&AwaitMap::with_capacity_and_hasher(
        64,
        DefaultHashBuilder::default(),
    ));
    round_trip(&AwaitMap::with_capacity_and_hasher(
        3,
        foldhash::fast::FixedState::with_seed(7),
    ));
    let default: AwaitMap<u64, &str, StdHasher> = AwaitMap::default();
    round_trip(&default);
}

/// Built in a constant context: only compiles if `with_hasher` is a
/// `const fn`.
static GLOBAL: AwaitMap<u32, u32, StdHasher> = AwaitMap::with_hasher(BuildHasherDefault::new());

// Call shapes: `with_hasher` is `const`, so a map can live in a `static`; guarantees 1 and 2 through it.
#[test]
fn map_in_a_static_waits_and_stores() {
    let mut waiting = GLOBAL.get(&10);
    pending(&mut waiting);
    assert_eq!(GLOBAL.waiters(), 1);
    assert_eq!(GLOBAL.insert(10, 100), None);
    assert_eq!(ready(&mut waiting), Ok(100));
    assert_eq!(GLOBAL.waiters(), 0);
    assert_eq!(GLOBAL.try_get(&10), Some(100));
    assert_eq!(ready(&mut GLOBAL.take(&10)), Ok(100));
    assert!(!GLOBAL.contains_key(&10));
}

// ---------------------------------------------------------------------------
// Methods
// ---------------------------------------------------------------------------

// Call shapes: `insert` returns the value it replaced (and stores the new one).
#[test]
fn insert_returns_the_replaced_value() {
    let map = AwaitMap::new();
    assert_eq!(map.insert("k", 1), None);
    assert_eq!(map.insert("k", 2), Some(1));
    assert_eq!(map.insert("k", 3), Some(2));
    assert_eq!(map.try_get(&"k"), Some(3));
    assert_eq!(map.len(), 1);
    assert_eq!(map.remove(&"k"), Some(3));
    assert_eq!(map.insert("k", 4), None);
}

// Guarantees 1 and 2: `get` clones and leaves the value; waiting then woken by `insert`.
#[test]
fn get_resolves_with_a_clone_and_leaves_the_value() {
    let map: AwaitMap<u8, String> = AwaitMap::new();
    let (counter, waker) = counting_waker();
    let mut fut = map.get(&1);
    assert!(poll_once(&mut fut, &waker).is_pending());
    assert_eq!(map.insert(1, "v".to_string()), None);
    assert_eq!(counter.wakes(), 1);
    assert_eq!(
        poll_once(&mut fut, &waker),
        Poll::Ready(Ok("v".to_string()))
    );
    assert_eq!(map.try_get(&1).as_deref(), Some("v"));
    // Present: ready on the first poll.
    assert_eq!(ready(&mut map.get(&1)), Ok("v".to_string()));
    assert_eq!(map.len(), 1);
}

// Guarantees 1 and 2: `take` moves the value out, both when present and after a wait.
#[test]
fn take_removes_the_value_it_returns() {
    let map: AwaitMap<u8, String> = AwaitMap::new();
    map.insert(1, "a".into());
    assert_eq!(ready(&mut map.take(&1)), Ok("a".to_string()));
    assert!(!map.contains_key(&1));
    assert!(map.is_empty());

    let (counter, waker) = counting_waker();
    let mut fut = map.take(&1);
    assert!(poll_once(&mut fut, &waker).is_pending());
    map.insert(1, "b".into());
    assert_eq!(counter.wakes(), 1);
    assert_eq!(
        poll_once(&mut fut, &waker),
        Poll::Ready(Ok("b".to_string()))
    );
    assert!(map.is_empty());
    assert_eq!(map.waiters(), 0);
}

// Call shapes: `try_get` never waits and never registers.
#[test]
fn try_get_never_waits() {
    let map: AwaitMap<u8, u8> = AwaitMap::new();
    assert_eq!(map.try_get(&1), None);
    assert_eq!(map.waiters(), 0);
    map.insert(1, 5);
    assert_eq!(map.try_get(&1), Some(5));
    assert_eq!(map.try_get(&1), Some(5));
    assert_eq!(map.len(), 1);
}

// Guarantee 7: `remove` takes a stored value out; waiters of absent keys keep waiting.
#[test]
fn remove_returns_the_value_and_leaves_waiters() {
    let map: AwaitMap<u8, u8> = AwaitMap::new();
    map.insert(1, 10);
    let mut waiting = map.get(&2);
    pending(&mut waiting);
    assert_eq!(map.remove(&1), Some(10));
    assert_eq!(map.remove(&1), None);
    assert_eq!(map.remove(&2), None);
    assert_eq!(map.waiters(), 1);
    pending(&mut waiting);
    map.insert(2, 20);
    assert_eq!(ready(&mut waiting), Ok(20));
}

// Call shapes: `contains_key`, `len` and `is_empty` count stored values only, not waiters.
#[test]
fn len_and_contains_key_count_values_not_waiters() {
    let map: AwaitMap<u8, u8> = AwaitMap::new();
    let mut waiting = map.get(&9);
    pending(&mut waiting);
    assert_eq!(map.len(), 0);
    assert!(map.is_empty());
    assert!(!map.contains_key(&9));
    map.insert(1, 1);
    map.insert(2, 2);
    map.insert(2, 3);
    assert_eq!(map.len(), 2);
    assert!(!map.is_empty());
    assert!(map.contains_key(&1));
    assert!(map.contains_key(&2));
    assert!(!map.contains_key(&3));
    drop(waiting);
}

// Guarantees 3 and 5: `waiters` counts futures that polled `Pending`, not created or dropped ones.
#[test]
fn waiters_counts_registered_futures() {
    let map: AwaitMap<u8, u8> = AwaitMap::new();
    let mut a = map.get(&1);
    let mut b = map.take(&1);
    let mut c = map.get(&2);
    assert_eq!(map.waiters(), 0);
    pending(&mut a);
    pending(&mut b);
    assert_eq!(map.waiters(), 2);
    pending(&mut c);
    assert_eq!(map.waiters(), 3);
    pending(&mut c);
    assert_eq!(map.waiters(), 3);
    drop(c);
    assert_eq!(map.waiters(), 2);
    map.insert(1, 1);
    assert_eq!(ready(&mut a), Ok(1));
    assert_eq!(ready(&mut b), Ok(1));
    assert_eq!(map.waiters(), 0);
}

// Guarantee 8: `cancel` returns how many it failed, they resolve `Cancelled`, and it is not sticky.
#[test]
fn cancel_fails_waiters_and_returns_the_count() {
    let map: AwaitMap<u8, u8> = AwaitMap::new();
    let mut a = map.get(&1);
    let mut b = map.take(&1);
    let mut other = map.get(&2);
    pending(&mut a);
    pending(&mut b);
    pending(&mut other);
    assert_eq!(map.cancel(&1), 2);
    assert_eq!(ready(&mut a), Err(WaitError::Cancelled));
    assert_eq!(ready(&mut b), Err(WaitError::Cancelled));
    assert_eq!(map.cancel(&1), 0);
    assert_eq!(map.waiters(), 1);
    // Not sticky.
    let mut later = map.get(&1);
    pending(&mut later);
    map.insert(1, 7);
    assert_eq!(ready(&mut later), Ok(7));
    pending(&mut other);
}

// Guarantee 9: `close` is permanent, idempotent, fails absent keys, keeps present ones and later inserts.
#[test]
fn close_fails_absent_keys_and_is_permanent() {
    let map: AwaitMap<u8, u8> = AwaitMap::new();
    map.insert(1, 1);
    let mut waiting = map.take(&2);
    pending(&mut waiting);
    assert!(!map.is_closed());
    map.close();
    assert!(map.is_closed());
    map.close();
    assert!(map.is_closed());
    assert_eq!(ready(&mut waiting), Err(WaitError::Closed));
    assert_eq!(ready(&mut map.get(&3)), Err(WaitError::Closed));
    assert_eq!(ready(&mut map.get(&1)), Ok(1));
    assert_eq!(map.insert(4, 4), None);
    assert_eq!(ready(&mut map.take(&4)), Ok(4));
    assert_eq!(map.waiters(), 0);
}

// Call shapes: `get_owned`/`take_owned` on `Arc<AwaitMap>` give `'static` futures holding their own `Arc`.
#[test]
fn owned_futures_are_static_and_hold_the_arc() {
    let map: Arc<AwaitMap<u32, String>> = Arc::new(AwaitMap::new());
    let mut get = map.get_owned(&1);
    let mut take = map.take_owned(&1);
    assert_static(&get);
    assert_static(&take);
    assert_eq!(Arc::strong_count(&map), 3);
    pending(&mut get);
    pending(&mut take);
    assert_eq!(map.waiters(), 2);

    // Both futures outlive the scope that made them: spawnable.
    let handle = std::thread::spawn(move || {
        let g = futures::executor::block_on(&mut get);
        let t = futures::executor::block_on(&mut take);
        (g, t)
    });
    map.insert(1, "x".to_string());
    let (g, t) = handle.join().unwrap();
    assert_eq!(g, Ok("x".to_string()));
    assert_eq!(t, Ok("x".to_string()));
    assert!(map.is_empty());
    // The thread dropped both futures, and their `Arc`s with them.
    assert_eq!(Arc::strong_count(&map), 1);
    assert_eq!(map.waiters(), 0);
}

// Call shapes: `&k` may be a borrowed form (`&str` for `String` keys), for every keyed method.
#[test]
fn borrowed_str_keys_work_everywhere() {
    let map: Arc<AwaitMap<String, u32>> = Arc::new(AwaitMap::new());
    let mut waiting = map.get("alpha");
    pending(&mut waiting);
    let mut taker = map.take("alpha");
    pending(&mut taker);
    assert_eq!(map.insert("alpha".to_string(), 1), None);
    assert_eq!(ready(&mut waiting), Ok(1));
    assert_eq!(map.try_get("alpha"), Some(1));
    assert!(map.contains_key("alpha"));
    assert_eq!(ready(&mut map.get("alpha")), Ok(1));
    // The woken take holds the value; `cancel` leaves it alone.
    assert_eq!(map.cancel("alpha"), 0);
    assert_eq!(ready(&mut taker), Ok(1));
    assert_eq!(map.remove("alpha"), None);

    map.insert("alpha".to_string(), 2);
    assert_eq!(map.remove("alpha"), Some(2));
    map.insert("alpha".to_string(), 3);
    assert_eq!(ready(&mut map.take("alpha")), Ok(3));

    let mut a = map.get("alpha");
    let mut b = map.take("alpha");
    pending(&mut a);
    pending(&mut b);
    assert_eq!(map.cancel("alpha"), 2);
    assert_eq!(ready(&mut a), Err(WaitError::Cancelled));
    assert_eq!(ready(&mut b), Err(WaitError::Cancelled));

    let mut owned = map.get_owned("beta");
    pending(&mut owned);
    map.insert("beta".to_string(), 4);
    assert_eq!(ready(&mut owned), Ok(4));
    assert_eq!(ready(&mut map.take_owned("beta")), Ok(4));
    assert_eq!(map.waiters(), 0);
}

// Call shapes: `Extend` and `FromIterator`; a later pair replaces an earlier equal key.
#[test]
fn extend_and_from_iterator_store_every_pair() {
    let mut map: AwaitMap<u32, u32> = (0..10).map(|i| (i, i * 2)).collect();
    assert_eq!(map.len(), 10);
    for i in 0..10 {
        assert_eq!(map.try_get(&i), Some(i * 2));
    }
    map.extend((5..15).map(|i| (i, i * 3)));
    assert_eq!(map.len(), 15);
    assert_eq!(map.try_get(&4), Some(8));
    assert_eq!(map.try_get(&5), Some(15));
    assert_eq!(map.try_get(&14), Some(42));

    let dup: AwaitMap<&str, u8, StdHasher> = [("a", 1), ("b", 2), ("a", 3)].into_iter().collect();
    assert_eq!(dup.len(), 2);
    assert_eq!(dup.try_get(&"a"), Some(3));
    assert_eq!(dup.try_get(&"b"), Some(2));
}

// ---------------------------------------------------------------------------
// Compile-time shapes
// ---------------------------------------------------------------------------

/// Compiles only if every future is `Unpin` for all `K`, `V`, `S`.
#[allow(dead_code)]
fn futures_are_unpin_for_any_parameters<'a, K: 'a, V: 'a, S: 'a>() {
    assert_unpin::<Get<'a, K, V, S>>();
    assert_unpin::<Take<'a, K, V, S>>();
    assert_unpin::<Get<'a, K, V, S, str>>();
    assert_unpin::<GetOwned<K, V, S>>();
    assert_unpin::<TakeOwned<K, V, S>>();
}

/// Compiles only if the futures are `Send` when `K`, `V`, `S` are
/// `Send + Sync` (and a borrowed key type `Q` is `Sync`).
#[allow(dead_code)]
fn futures_are_send_for_send_sync_parameters<'a, K, V, S, Q>()
where
    K: Send + Sync + 'a,
    V: Send + Sync + 'a,
    S: Send + Sync + 'a,
    Q: ?Sized + Sync + 'a,
{
    assert_send::<Get<'a, K, V, S>>();
    assert_send::<Take<'a, K, V, S>>();
    assert_send::<Get<'a, K, V, S, Q>>();
    assert_send::<Take<'a, K, V, S, Q>>();
    assert_send::<GetOwned<K, V, S>>();
    assert_send::<TakeOwned<K, V, S>>();
}

/// Compiles only if `AwaitMap<K, V>` is `Send + Sync` with just `K: Send`
/// and `V: Send`.
#[allow(dead_code)]
fn map_is_send_sync_for_send_parameters<K: Send, V: Send>() {
    assert_send::<AwaitMap<K, V>>();
    assert_sync::<AwaitMap<K, V>>();
}

// Call shapes: futures are `Unpin` whatever K and V are, even `!Unpin` ones.
#[test]
fn futures_are_unpin_with_pinned_keys_and_values() {
    futures_are_unpin_for_any_parameters::<PhantomPinned, PhantomPinned, DefaultHashBuilder>();
    assert_unpin::<Get<'static, PhantomPinned, PhantomPinned>>();
    assert_unpin::<Take<'static, PhantomPinned, PhantomPinned>>();
    assert_unpin::<GetOwned<PhantomPinned, PhantomPinned>>();
    assert_unpin::<TakeOwned<PhantomPinned, PhantomPinned>>();
    assert_unpin::<GetOwned<PhantomPinned, PhantomPinned, StdHasher>>();
    assert_unpin::<TakeOwned<PhantomPinned, PhantomPinned, StdHasher>>();
}

// Call shapes: futures are `Send` when K, V and the hasher are `Send + Sync`.
#[test]
fn futures_are_send_for_send_sync_keys_values_hasher() {
    futures_are_send_for_send_sync_parameters::<u64, String, DefaultHashBuilder, u64>();
    futures_are_send_for_send_sync_parameters::<String, Vec<u8>, StdHasher, str>();
    assert_send::<Get<'static, String, Arc<u8>, DefaultHashBuilder, str>>();
    assert_send::<TakeOwned<String, Arc<u8>>>();
    // And a real one crosses a thread boundary.
    let map: Arc<AwaitMap<String, u32>> = Arc::new(AwaitMap::new());
    let fut = map.take_owned("x");
    map.insert("x".to_string(), 9);
    let out = std::thread::spawn(move || futures::executor::block_on(fut))
        .join()
        .unwrap();
    assert_eq!(out, Ok(9));
}

// Guarantee 11: a panic leaves the map consistent, so it is unwind-safe.
#[test]
fn map_is_unwind_safe_so_it_can_be_used_after_a_caught_panic() {
    fn assert_unwind_safe<T: std::panic::UnwindSafe + std::panic::RefUnwindSafe>() {}
    assert_unwind_safe::<AwaitMap<u64, u64>>();
    assert_unwind_safe::<AwaitMap<String, Cell<u8>>>();
    // `&AwaitMap` crosses `catch_unwind` without `AssertUnwindSafe`.
    let map: AwaitMap<u8, u8> = AwaitMap::new();
    let caught = std::panic::catch_unwind(|| {
        map.insert(1, 1);
        panic!("a panic after an insert");
    });
    assert!(caught.is_err());
    assert_eq!(map.try_get(&1), Some(1));
}

// Call shapes: `AwaitMap<K, V>` is `Send + Sync` with `K: Send`, `V: Send` only (`Cell` is not `Sync`).
#[test]
fn map_is_send_and_sync_without_sync_keys_or_values() {
    map_is_send_sync_for_send_parameters::<Cell<u8>, Cell<u8>>();
    assert_send::<AwaitMap<Cell<u8>, Cell<u8>>>();
    assert_sync::<AwaitMap<Cell<u8>, Cell<u8>>>();
    assert_sync::<AwaitMap<u8, Cell<u8>, StdHasher>>();

    // Shared between threads for real: a `Cell` value sent through the map.
    let map: AwaitMap<u8, Cell<u8>> = AwaitMap::new();
    std::thread::scope(|s| {
        s.spawn(|| map.insert(1, Cell::new(41)));
    });
    let cell = ready(&mut map.take(&1)).unwrap();
    cell.set(cell.get() + 1);
    assert_eq!(cell.get(), 42);
}

/// Compiles only if `T` has every trait `WaitError` promises.
fn assert_error_traits<T>()
where
    T: Copy + Eq + Send + Sync + 'static + Display + core::error::Error,
{
}

// Call shapes: `WaitError` is Copy + Eq + Send + Sync + 'static + Display + Error, with distinct messages.
#[test]
fn wait_error_traits_and_messages() {
    assert_error_traits::<WaitError>();
    let all = [WaitError::Closed, WaitError::Cancelled, WaitError::TimedOut];
    let messages: Vec<String> = all.iter().map(ToString::to_string).collect();
    for m in &messages {
        assert!(!m.trim().is_empty());
    }
    for i in 0..messages.len() {
        for j in i + 1..messages.len() {
            assert_ne!(messages[i], messages[j]);
            assert_ne!(all[i], all[j]);
        }
    }
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(WaitError::Cancelled);
    assert_eq!(boxed.to_string(), messages[1]);
    assert!(boxed.source().is_none());
}

// ---------------------------------------------------------------------------
// Debug
// ---------------------------------------------------------------------------

// Call shapes: the map's `Debug` shows len, waiters and closed, never keys or values.
#[test]
fn map_debug_shows_counts_only() {
    let map: AwaitMap<String, String> = AwaitMap::new();
    map.insert("secret-key-1".into(), "secret-value-1".into());
    map.insert("secret-key-2".into(), "secret-value-2".into());
    let mut waiting = map.get("secret-key-3");
    pending(&mut waiting);
    let shown = format!("{map:?}");
    assert!(shown.contains("len: 2"), "{shown}");
    assert!(shown.contains("waiters: 1"), "{shown}");
    assert!(shown.contains("closed: false"), "{shown}");
    assert!(!shown.contains("secret"), "{shown}");
    drop(waiting);
    map.close();
    let shown = format!("{map:?}");
    assert!(shown.contains("waiters: 0"), "{shown}");
    assert!(shown.contains("closed: true"), "{shown}");
}

/// A key whose `Eq` formats `SPY` (the map it lives in) while the map's lock
/// is held, and records what it printed.
struct SpyKey(u32);

impl Hash for SpyKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

static SPY: AwaitMap<SpyKey, u32, StdHasher> = AwaitMap::with_hasher(BuildHasherDefault::new());
static SPIED: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl PartialEq for SpyKey {
    fn eq(&self, other: &Self) -> bool {
        SPIED.lock().unwrap().push(format!("{SPY:?}"));
        self.0 == other.0
    }
}
impl Eq for SpyKey {}

// Call shapes: the map's `Debug` never blocks: it prints `<locked>` while the lock is held.
#[test]
fn map_debug_does_not_block_while_locked() {
    SPY.insert(SpyKey(1), 10);
    // Not under the lock: the real counts.
    assert!(format!("{SPY:?}").contains("len: 1"));
    // `Eq` runs under the lock when a lookup meets the stored key.
    assert_eq!(SPY.try_get(&SpyKey(1)), Some(10));
    assert_eq!(SPY.remove(&SpyKey(1)), Some(10));
    let spied = std::mem::take(&mut *SPIED.lock().unwrap());
    assert!(!spied.is_empty(), "`Eq` was never called");
    for shown in &spied {
        assert!(shown.contains("<locked>"), "{shown}");
        assert!(!shown.contains("len"), "{shown}");
    }
    // And the lock was released afterwards.
    assert!(format!("{SPY:?}").contains("len: 0"));
}

/// A key type with a recognisable `Debug`, to show the futures never print it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Visible(&'static str);

// Call shapes: the futures' `Debug` does not print keys (or values).
#[test]
fn future_debug_does_not_print_keys() {
    let map: Arc<AwaitMap<Visible, Visible>> = Arc::new(AwaitMap::new());
    map.insert(Visible("hidden-key-present"), Visible("hidden-value"));
    let mut shown = Vec::new();
    {
        let mut get = map.get(&Visible("hidden-key-get"));
        let take = map.take(&Visible("hidden-key-take"));
        pending(&mut get);
        shown.push(format!("{get:?}"));
        shown.push(format!("{take:?}"));
        assert!(shown[0].starts_with("Get"), "{}", shown[0]);
        assert!(shown[1].starts_with("Take"), "{}", shown[1]);
    }
    let mut get_owned = map.get_owned(&Visible("hidden-key-present"));
    let take_owned = map.take_owned(&Visible("hidden-key-owned"));
    shown.push(format!("{get_owned:?}"));
    assert_eq!(ready(&mut get_owned), Ok(Visible("hidden-value")));
    shown.push(format!("{get_owned:?}"));
    shown.push(format!("{take_owned:?}"));
    assert!(shown[2].starts_with("GetOwned"), "{}", shown[2]);
    assert!(shown[4].starts_with("TakeOwned"), "{}", shown[4]);
    for s in &shown {
        assert!(!s.contains("hidden"), "{s}");
    }
}

// A `static` map in one line, with no hasher crate of the user's own: the
// default lock, and the critical-section lock where it is built. Both hash
// with the same fixed seed, so two maps agree on every key's hash.
static REPLIES: AwaitMap<u32, u32, awaitmap::FixedHashBuilder> = AwaitMap::const_new();

#[cfg(feature = "critical-section")]
static PINS: AwaitMap<u8, bool, awaitmap::FixedHashBuilder, awaitmap::CsLock> =
    AwaitMap::const_new();

#[test]
fn const_new_builds_a_static_map_with_either_lock() {
    assert!(REPLIES.is_empty());
    REPLIES.insert(7, 49);
    assert_eq!(ready(&mut REPLIES.take(&7)), Ok(49));
    assert!(REPLIES.is_empty());
    #[cfg(feature = "critical-section")]
    {
        PINS.insert(4, true);
        assert_eq!(PINS.try_get(&4), Some(true));
    }
    let a: AwaitMap<u64, u8, awaitmap::FixedHashBuilder> = AwaitMap::const_new();
    let b: AwaitMap<u64, u8, awaitmap::FixedHashBuilder> = AwaitMap::const_new();
    for k in [0_u64, 1, 0xdead_beef] {
        assert_eq!(a.hasher().hash_one(k), b.hasher().hash_one(k));
    }
}
