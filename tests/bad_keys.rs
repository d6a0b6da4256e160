//! Keys whose `Hash` and `Eq` are wrong (guarantee 13): random hashes,
//! `Eq` always false, always true, random, or disagreeing with `Hash`. The map
//! may give wrong answers for them, but must never panic, hang, leak waiters or
//! values, or become unusable.
//!
//! Each test drives a random mix of operations (insert, get, take, try_get,
//! remove, cancel, contains_key, close, promises fulfilled or abandoned,
//! get_or_promise; futures registered, polled with the
//! same or a new waker, woken, dropped) and asserts only what holds whatever
//! the keys do: nothing panics or hangs, `waiters()` returns to 0 once every
//! future is gone, after `close` every future answers on its next poll, no
//! value is leaked, and the map still works once keys behave again.

mod common;

use std::cell::Cell;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Poll, Waker};

use awaitmap::{AwaitMap, GetOwned, TakeOwned, ValueOrPromise, WaitError};
use common::{CountingWaker, Tracked, counting_waker, live, live_counter, poll_once};

/// Runs `body` on its own thread; fails if it hangs (see
/// [`common::no_hang_or`]).
fn no_hang(what: &'static str, body: impl FnOnce() + Send + 'static) {
    common::no_hang_or(what, "the map hung on bad keys", body);
}

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

thread_local! {
    /// While set, every key type hashes and compares by its number, like a
    /// correct key. Each test runs on its own thread.
    static BEHAVE: Cell<bool> = const { Cell::new(false) };
    /// Feeds the random `Hash` and `Eq` implementations.
    static NOISE: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) };
}

fn noise() -> u64 {
    NOISE.with(|n| {
        let mut rng = Rng(n.get());
        let x = rng.next();
        n.set(rng.0);
        x
    })
}

trait BadKey: Hash + Eq + Clone + Debug + Send + Sync + 'static {
    fn key(n: u64) -> Self;
}

/// A key type whose `Hash` feeds `$hash` and whose `Eq` answers `$eq` (both
/// in terms of the key numbers), except while `BEHAVE` is set.
macro_rules! bad_key {
    ($(#[$doc:meta])* $name:ident, hash($k:ident) => $hash:expr, eq($a:ident, $b:ident) => $eq:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        struct $name(u64);

        impl Hash for $name {
            #[allow(unused_variables)]
            fn hash<H: Hasher>(&self, state: &mut H) {
                let $k = self.0;
                let h: u64 = if BEHAVE.get() { $k } else { $hash };
                h.hash(state);
            }
        }

        impl PartialEq for $name {
            #[allow(unused_variables)]
            fn eq(&self, other: &Self) -> bool {
                let ($a, $b) = (self.0, other.0);
                if BEHAVE.get() { $a == $b } else { $eq }
            }
        }

        impl Eq for $name {}

        impl BadKey for $name {
            fn key(n: u64) -> Self {
                $name(n)
            }
        }
    };
}

bad_key!(
    /// A different hash on every call; `Eq` is correct.
    RandomHash, hash(k) => noise(), eq(a, b) => a == b
);
bad_key!(
    /// `Eq` always false, even for a key and itself.
    NeverEq, hash(k) => k, eq(a, b) => false
);
bad_key!(
    /// `Eq` always true: keys with equal hashes are all one key.
    AlwaysEq, hash(k) => k, eq(a, b) => true
);
bad_key!(
    /// One hash for every key, `Eq` always true: every key is the same key.
    OneHashAlwaysEq, hash(k) => 0, eq(a, b) => true
);
bad_key!(
    /// One hash for every key, `Eq` always false: all collide, none matches.
    OneHashNeverEq, hash(k) => 0, eq(a, b) => false
);
bad_key!(
    /// Equal keys (same number mod 3) hash differently.
    EqDisagreesWithHash, hash(k) => k, eq(a, b) => a % 3 == b % 3
);
bad_key!(
    /// `Eq` answers at random; few hashes, so it is asked often.
    RandomEq, hash(k) => k % 4, eq(a, b) => noise() & 1 == 1
);
bad_key!(
    /// Both at random.
    RandomHashAndEq, hash(k) => noise() % 4, eq(a, b) => noise() & 1 == 1
);

type Map<K> = AwaitMap<K, Tracked>;

enum Fut<K: BadKey> {
    Get(GetOwned<K, Tracked>),
    Take(TakeOwned<K, Tracked>),
}

impl<K: BadKey> Fut<K> {
    fn poll(&mut self, w: &Waker) -> Poll<Result<Tracked, WaitError>> {
        match self {
            Fut::Get(f) => poll_once(f, w),
            Fut::Take(f) => poll_once(f, w),
        }
    }
}

/// A future that polled `Pending`, with the waker it last stored.
struct Waiting<K: BadKey> {
    fut: Fut<K>,
    counter: Arc<CountingWaker>,
    waker: Waker,
    /// Wake-ups already acted on.
    seen: usize,
}

impl<K: BadKey> Waiting<K> {
    /// Polls with the stored waker, or with a new one if `fresh`.
    fn poll(&mut self, fresh: bool) -> Poll<Result<Tracked, WaitError>> {
        if fresh {
            (self.counter, self.waker) = counting_waker();
            self.seen = 0;
        } else {
            self.seen = self.counter.wakes();
        }
        self.fut.poll(&self.waker)
    }
}

/// What a run did, to show it exercised the map.
#[derive(Default, Debug)]
struct Stats {
    /// Futures whose first poll was `Pending`.
    registered: usize,
    /// Waiting futures that later resolved (any outcome).
    resolved: usize,
}

/// Few distinct keys, so operations meet on them.
const KEYS: usize = 8;

/// Runs `ops` random operations on `map`; calls `close` before step
/// `close_at`. Returns the futures still waiting.
fn chaos<K: BadKey>(
    map: &Arc<Map<K>>,
    values: &Arc<AtomicUsize>,
    rng: &mut Rng,
    ops: usize,
    close_at: Option<usize>,
    stats: &mut Stats,
) -> Vec<Waiting<K>> {
    let mut waiting: Vec<Waiting<K>> = Vec::new();
    let mut promises = Vec::new();
    for step in 0..ops {
        if close_at == Some(step) {
            map.close();
        }
        let k = K::key(rng.below(KEYS) as u64);
        match rng.below(16) {
            0 | 1 => {
                let _ = map.insert(k, Tracked::new(step as u64, values));
            }
            2 | 3 => {
                let fut = if rng.coin() {
                    Fut::Get(map.get_owned(&k))
                } else {
                    Fut::Take(map.take_owned(&k))
                };
                let (counter, waker) = counting_waker();
                let mut w = Waiting {
                    fut,
                    counter,
                    waker,
                    seen: 0,
                };
                if w.poll(false).is_pending() {
                    stats.registered += 1;
                    waiting.push(w);
                }
            }
            4 if !waiting.is_empty() => {
                let i = rng.below(waiting.len());
                drop(waiting.swap_remove(i));
            }
            5 if !waiting.is_empty() => {
                let i = rng.below(waiting.len());
                let fresh = rng.coin();
                if waiting[i].poll(fresh).is_ready() {
                    stats.resolved += 1;
                    waiting.swap_remove(i);
                }
            }
            6 => {
                let _ = map.try_get(&k);
            }
            7 => {
                let _ = map.remove(&k);
            }
            8 => {
                let _ = map.cancel(&k);
            }
            9 => {
                let _ = map.contains_key(&k);
            }
            10 => {
                // A borrowed future that lives for one step.
                let (_, w) = counting_waker();
                let mut get = map.get(&k);
                let mut take = map.take(&k);
                let g = poll_once(&mut get, &w);
                let t = poll_once(&mut take, &w);
                if rng.coin() {
                    let _ = map.insert(k.clone(), Tracked::new(step as u64, values));
                    if g.is_pending() {
                        let _ = poll_once(&mut get, &w);
                    }
                    if t.is_pending() {
                        let _ = poll_once(&mut take, &w);
                    }
                }
            }
            13 => {
                if let Some(p) = map.promise(k) {
                    promises.push(p);
                }
            }
            14 if !promises.is_empty() => {
                // The producer delivers, or gives up.
                let p = promises.swap_remove(rng.below(promises.len()));
                if rng.coin() {
                    let _ = p.fulfill(Tracked::new(step as u64, values));
                }
            }
            15 => {
                // A coalesced lookup that lives for one step.
                let (_, w) = counting_waker();
                let mut co = map.get_or_promise(&k);
                if let Poll::Ready(Ok(ValueOrPromise::Promise(p))) = poll_once(&mut co, &w) {
                    if rng.coin() {
                        let _ = p.fulfill(Tracked::new(step as u64, values));
                    }
                }
            }
            _ => {
                // An executor's turn: poll every future that was woken.
                let mut i = 0;
                while i < waiting.len() {
                    let w = &mut waiting[i];
                    if w.counter.wakes() > w.seen && w.poll(false).is_ready() {
                        stats.resolved += 1;
                        waiting.swap_remove(i);
                    } else {
                        i += 1;
                    }
                }
            }
        }
    }
    // The producers still holding a promise give up.
    drop(promises);
    waiting
}

/// With keys behaving again, the map answers correctly for new keys.
fn assert_usable<K: BadKey>(map: &Map<K>, values: &Arc<AtomicUsize>, closed: bool) {
    BEHAVE.set(true);
    let (a, b, c) = (
        K::key(1 << 40),
        K::key((1 << 40) + 1),
        K::key((1 << 40) + 2),
    );
    let (wc, w) = counting_waker();
    let len = map.len();
    assert_eq!(map.insert(a.clone(), Tracked::new(1, values)), None);
    assert_eq!(map.len(), len + 1);
    assert_eq!(map.try_get(&a).map(|v| v.id), Some(1));
    assert!(map.contains_key(&a));
    let mut get = map.get(&a);
    assert!(matches!(poll_once(&mut get, &w), Poll::Ready(Ok(ref v)) if v.id == 1));
    let mut take = map.take(&b);
    let mut cancelled = map.get(&c);
    if closed {
        assert_eq!(
            poll_once(&mut take, &w),
            Poll::Ready(Err(WaitError::Closed))
        );
        assert_eq!(
            poll_once(&mut cancelled, &w),
            Poll::Ready(Err(WaitError::Closed))
        );
    } else {
        assert!(poll_once(&mut take, &w).is_pending());
        assert!(poll_once(&mut cancelled, &w).is_pending());
        assert_eq!(map.waiters(), 2);
        assert_eq!(map.insert(b.clone(), Tracked::new(2, values)), None);
        assert_eq!(wc.wakes(), 1);
        assert!(matches!(poll_once(&mut take, &w), Poll::Ready(Ok(ref v)) if v.id == 2));
        assert_eq!(map.cancel(&c), 1);
        assert_eq!(
            poll_once(&mut cancelled, &w),
            Poll::Ready(Err(WaitError::Cancelled))
        );
    }
    assert_eq!(map.remove(&a).map(|v| v.id), Some(1));
    assert_eq!(map.len(), len);
    drop((get, take, cancelled));
    assert_eq!(map.waiters(), 0);
    BEHAVE.set(false);
}

/// Random operations with key type `K`: several runs without `close`, then
/// several with a `close` part-way through.
fn exercise<K: BadKey>(what: &'static str) {
    no_hang(what, move || {
        let ops = if cfg!(miri) { 200 } else { 5_000 };
        let mut stats = Stats::default();
        for seed in 1..=4_u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let values = live_counter();
            let map = Arc::new(Map::<K>::new());
            let close_at = (seed > 2).then(|| rng.below(ops));

            let mut waiting = chaos(&map, &values, &mut rng, ops, close_at, &mut stats);
            if close_at.is_some() {
                // Closed: every future answers on its next poll, and so does
                // every new one on its first.
                for w in &mut waiting {
                    assert!(
                        w.poll(rng.coin()).is_ready(),
                        "{what}: a future still waits after close"
                    );
                }
                for n in 0..KEYS as u64 {
                    let (_, wk) = counting_waker();
                    let mut get = map.get_owned(&K::key(n));
                    let mut take = map.take_owned(&K::key(n));
                    assert!(
                        poll_once(&mut get, &wk).is_ready(),
                        "{what}: get after close"
                    );
                    assert!(
                        poll_once(&mut take, &wk).is_ready(),
                        "{what}: take after close"
                    );
                }
            }
            drop(waiting);
            assert_eq!(
                map.waiters(),
                0,
                "{what}: waiters left after every future went"
            );

            assert_usable(&map, &values, close_at.is_some());
            assert_eq!(Arc::strong_count(&map), 1);
            drop(map);
            assert_eq!(live(&values), 0, "{what}: values leaked");
        }
        // 100 of each at the full 5,000 operations per run; the same share
        // of the smaller runs under miri.
        let enough = ops / 50;
        assert!(
            stats.registered > enough && stats.resolved > enough,
            "{what}: the random mix hardly waited: {stats:?}"
        );
    });
}

// Guarantee 13: a key whose hash changes on every call.
#[test]
fn random_hash_keys_never_panic_hang_or_leak() {
    exercise::<RandomHash>("RandomHash");
}

// Guarantee 13: a key that is not even equal to itself.
#[test]
fn never_equal_keys_never_panic_hang_or_leak() {
    exercise::<NeverEq>("NeverEq");
}

// Guarantee 13: a key equal to every other key of the same hash.
#[test]
fn always_equal_keys_never_panic_hang_or_leak() {
    exercise::<AlwaysEq>("AlwaysEq");
}

// Guarantee 13: every key the same key.
#[test]
fn one_hash_always_equal_keys_never_panic_hang_or_leak() {
    exercise::<OneHashAlwaysEq>("OneHashAlwaysEq");
}

// Guarantee 13: every key colliding, none ever equal.
#[test]
fn one_hash_never_equal_keys_never_panic_hang_or_leak() {
    exercise::<OneHashNeverEq>("OneHashNeverEq");
}

// Guarantee 13: equal keys with different hashes.
#[test]
fn keys_whose_eq_disagrees_with_hash_never_panic_hang_or_leak() {
    exercise::<EqDisagreesWithHash>("EqDisagreesWithHash");
}

// Guarantee 13: an `Eq` that answers at random.
#[test]
fn random_eq_keys_never_panic_hang_or_leak() {
    exercise::<RandomEq>("RandomEq");
}

// Guarantee 13: `Hash` and `Eq` both at random.
#[test]
fn random_hash_and_eq_keys_never_panic_hang_or_leak() {
    exercise::<RandomHashAndEq>("RandomHashAndEq");
}
