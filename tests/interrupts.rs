//! The map's locks in embedded-style use: `CsLock` masks an "interrupt" (a
//! second thread: critical-section's `std` implementation is one process-wide
//! lock, as one core's interrupt mask is) while the map is held, re-entry
//! panics with a clear message instead of deadlocking, a panic under the lock
//! releases it, `static` maps are const-built and fill without allocating
//! after `reserve`, and a lock of the user's own works.
//!
//! This binary installs a counting global allocator; it counts only on a
//! thread that switched it on, so the other tests do not disturb it.

#![cfg(all(feature = "critical-section", feature = "std"))]
#![allow(unsafe_code)] // the counting `GlobalAlloc` and a user-made lock

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError, mpsc};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use awaitmap::{AwaitMap, ConstInit, CsLock, ScopedRawMutex, SpinLock, WaitError};
use common::{HANG_LIMIT, XorShift, counting_waker, no_hang_or, panic_message, poll_once};
use foldhash::fast::FixedState;

// ---------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------

/// Code that a key's `Eq` runs, under the map's lock.
type Hook = Arc<dyn Fn() + Send + Sync>;

/// A key equal and hashed by `id`; a hooked key runs its hook whenever `Eq`
/// compares it, which is how a test gets code to run inside the map.
#[derive(Clone)]
struct Key {
    id: u32,
    hook: Option<Hook>,
}

impl Key {
    fn plain(id: u32) -> Self {
        Key { id, hook: None }
    }

    fn hooked(id: u32, hook: impl Fn() + Send + Sync + 'static) -> Self {
        Key {
            id,
            hook: Some(Arc::new(hook)),
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        for hook in [&self.hook, &other.hook].into_iter().flatten() {
            hook();
        }
        self.id == other.id
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

type CsKeyMap = AwaitMap<Key, u32, FixedState, CsLock>;

const fn cs_key_map(seed: u64) -> CsKeyMap {
    AwaitMap::with_hasher_and_lock(FixedState::with_seed(seed), CsLock::new())
}

/// Waits until `flag` is set (a hang detector bounds it, not a timing claim).
fn wait_for(flag: &AtomicBool, what: &str) {
    let start = Instant::now();
    while !flag.load(Ordering::SeqCst) {
        assert!(start.elapsed() < HANG_LIMIT, "never happened: {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Checks that a map of `Key`s works after a panic under its lock: from this
/// thread, and from another thread, which also enters a critical section (so
/// the panic left neither the map's lock nor the critical section held).
fn usable_here_and_elsewhere<L>(map: &'static AwaitMap<Key, u32, FixedState, L>, id: u32)
where
    L: ScopedRawMutex + Sync + 'static,
{
    assert!(
        !format!("{map:?}").contains("<locked>"),
        "the map's lock is still held: {map:?}"
    );
    assert_eq!(map.insert(Key::plain(id), 1), None);
    assert_eq!(map.try_get(&Key::plain(id)), Some(1));
    no_hang_or(
        "another thread uses the map",
        "the panic left the map's lock or the critical section held",
        move || {
            critical_section::with(|_| ());
            assert_eq!(map.insert(Key::plain(id), 2), Some(1));
            let (wc, w) = counting_waker();
            let next = Key::plain(id + 1);
            let mut f = map.take(&next);
            assert!(poll_once(&mut f, &w).is_pending());
            assert_eq!(map.insert(Key::plain(id + 1), 3), None);
            assert_eq!(wc.wakes(), 1);
            assert_eq!(poll_once(&mut f, &w), Poll::Ready(Ok(3)));
            assert_eq!(map.remove(&Key::plain(id)), Some(2));
        },
    );
}

/// A get/insert/take round trip and a waiter's wake-up, on any lock.
fn round_trip<L: ScopedRawMutex>(map: &AwaitMap<u32, u32, FixedState, L>) {
    let (wc, w) = counting_waker();
    assert_eq!(map.insert(1, 10), None);
    assert_eq!(map.try_get(&1), Some(10));
    assert_eq!(poll_once(&mut map.get(&1), &w), Poll::Ready(Ok(10)));
    assert_eq!(poll_once(&mut map.take(&1), &w), Poll::Ready(Ok(10)));
    assert!(!map.contains_key(&1));

    let mut waiting = map.take(&2);
    assert!(poll_once(&mut waiting, &w).is_pending());
    assert_eq!(map.waiters(), 1);
    assert_eq!(map.insert(2, 20), None);
    assert_eq!(wc.wakes(), 1, "the insert woke the waiting take once");
    assert_eq!(poll_once(&mut waiting, &w), Poll::Ready(Ok(20)));
    assert_eq!((map.len(), map.waiters()), (0, 0));
}

// ---------------------------------------------------------------------------
// The counting allocator (counts only on threads that switched it on).
// ---------------------------------------------------------------------------

thread_local! {
    /// Allocations on this thread since counting was switched on; `None`
    /// when off. Const-initialised and without a destructor, so the
    /// allocator can read it without allocating.
    static ALLOCS: Cell<Option<u64>> = const { Cell::new(None) };
}

fn note_alloc() {
    let _ = ALLOCS.try_with(|a| {
        if let Some(n) = a.get() {
            a.set(Some(n + 1));
        }
    });
}

struct CountingAlloc;

// SAFETY: every method hands its arguments unchanged to `System` and only
// adds a thread-local count, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: the caller upholds `alloc`'s contract, which `System` has.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through this allocator)
        // with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: the caller upholds `realloc`'s contract for `System`'s
        // block `ptr`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// How many allocations `f` made on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCS.set(Some(0));
    f();
    ALLOCS.replace(None).expect("counting was on")
}

// ---------------------------------------------------------------------------
// 1. An interrupt arriving while the map is held.
// ---------------------------------------------------------------------------

static IRQ_MAP: CsKeyMap = cs_key_map(1);

/// What the "interrupts" did, and what the interrupted code saw.
#[derive(Default)]
struct Irq {
    fired: AtomicBool,
    map_isr_started: AtomicBool,
    map_isr_inserted: AtomicBool,
    plain_isr_started: AtomicBool,
    plain_isr_entered: AtomicBool,
    /// Seen from inside the map (under `Eq`): (map ISR inserted, plain ISR
    /// entered its critical section).
    seen_inside: Mutex<Option<(bool, bool)>>,
}

// Guarantees 1 and 8 under `CsLock`: while `Eq` runs under the map's lock,
// an "interrupt" that inserts into the map, and one that only enters a
// critical section, both stay masked (as on one core); each runs as soon as
// the map is released, without deadlock, and its insert wakes the waiting
// `get` once and its cancel fails the other waiter.
#[test]
fn an_interrupt_is_masked_while_the_map_is_held_and_runs_after() {
    no_hang_or(
        "interrupt under CsLock",
        "an interrupt arriving while the map was held deadlocked",
        || {
            let hold = Duration::from_millis(if cfg!(miri) { 5 } else { 20 });
            let irq = Arc::new(Irq::default());
            let (map_go, map_line) = mpsc::channel::<()>();
            let (plain_go, plain_line) = mpsc::channel::<()>();
            let (map_done, map_result) = mpsc::channel();
            let (plain_done, plain_result) = mpsc::channel();

            // The handler that uses the map, spawned and waiting for its line.
            let isr = Arc::clone(&irq);
            let map_isr = thread::spawn(move || {
                map_line.recv().expect("the line is raised");
                isr.map_isr_started.store(true, Ordering::SeqCst);
                let old = IRQ_MAP.insert(Key::plain(2), 20);
                isr.map_isr_inserted.store(true, Ordering::SeqCst);
                let seen = IRQ_MAP.try_get(&Key::plain(1));
                let cancelled = IRQ_MAP.cancel(&Key::plain(3));
                map_done.send((old, seen, cancelled)).expect("reported");
            });
            // A handler that does not touch the map: the critical section
            // masks it too.
            let isr = Arc::clone(&irq);
            let plain_isr = thread::spawn(move || {
                plain_line.recv().expect("the line is raised");
                isr.plain_isr_started.store(true, Ordering::SeqCst);
                critical_section::with(|_| isr.plain_isr_entered.store(true, Ordering::SeqCst));
                plain_done.send(()).expect("reported");
            });

            assert_eq!(IRQ_MAP.insert(Key::plain(1), 1), None);
            let (w2c, w2) = counting_waker();
            let (w3c, w3) = counting_waker();
            let k2 = Key::plain(2);
            let k3 = Key::plain(3);
            let mut get2 = IRQ_MAP.get(&k2);
            let mut get3 = IRQ_MAP.get(&k3);
            assert!(poll_once(&mut get2, &w2).is_pending());
            assert!(poll_once(&mut get3, &w3).is_pending());
            assert_eq!(IRQ_MAP.waiters(), 2);

            // Inside the map (under `Eq`), raise both lines, let the handlers
            // try to run, and look at what they did.
            let inside = Arc::clone(&irq);
            let key = Key::hooked(1, move || {
                if inside.fired.swap(true, Ordering::SeqCst) {
                    return;
                }
                map_go.send(()).expect("the map ISR waits");
                plain_go.send(()).expect("the plain ISR waits");
                wait_for(&inside.map_isr_started, "the map ISR started");
                wait_for(&inside.plain_isr_started, "the plain ISR started");
                thread::sleep(hold);
                let seen = (
                    inside.map_isr_inserted.load(Ordering::SeqCst),
                    inside.plain_isr_entered.load(Ordering::SeqCst),
                );
                *inside.seen_inside.lock().unwrap() = Some(seen);
            });
            assert_eq!(IRQ_MAP.insert(key, 10), Some(1));
            assert_eq!(
                irq.seen_inside.lock().unwrap().take(),
                Some((false, false)),
                "(map ISR inserted, plain ISR entered) while the map was held: \
                 the map's lock did not hold a critical section"
            );

            // Released: both handlers run now.
            let (old, seen, cancelled) = map_result
                .recv_timeout(HANG_LIMIT)
                .expect("the map ISR ran after the map was released");
            plain_result
                .recv_timeout(HANG_LIMIT)
                .expect("the plain ISR ran after the map was released");
            map_isr.join().unwrap();
            plain_isr.join().unwrap();
            assert_eq!(old, None);
            assert_eq!(seen, Some(10), "the ISR ran after the interrupted insert");
            assert_eq!(cancelled, 1);

            assert_eq!(w2c.wakes(), 1, "the ISR's insert woke the get once");
            assert_eq!(poll_once(&mut get2, &w2), Poll::Ready(Ok(20)));
            assert_eq!(w3c.wakes(), 1, "the ISR's cancel woke the get once");
            assert_eq!(
                poll_once(&mut get3, &w3),
                Poll::Ready(Err(WaitError::Cancelled))
            );
            assert_eq!(IRQ_MAP.try_get(&Key::plain(1)), Some(10));
            assert_eq!(IRQ_MAP.try_get(&Key::plain(2)), Some(20));
            assert_eq!((IRQ_MAP.len(), IRQ_MAP.waiters()), (2, 0));
        },
    );
}

// ---------------------------------------------------------------------------
// 2. Many interrupts.
// ---------------------------------------------------------------------------

static ISR_MAP: AwaitMap<u32, u64, FixedState, CsLock> =
    AwaitMap::with_hasher_and_lock(FixedState::with_seed(2), CsLock::new());

// Guarantees 1, 2 and 6 under `CsLock`: an "ISR" inserting keys 0..n in a
// loop while the main code takes them in another order, some registered
// before their key arrives and some after: every value is taken exactly
// once, every wake-up arrives, and no waiter is left.
#[test]
fn takes_awaiting_an_isr_that_inserts_in_a_loop_get_every_value_once() {
    no_hang_or("many interrupts", "a take missed its wake-up", || {
        let n: u32 = if cfg!(miri) { 40 } else { 2_000 };
        let value = |k: u32| u64::from(k) * 3 + 1;
        let mut order: Vec<u32> = (0..n).collect();
        XorShift::new(2).shuffle(&mut order);

        let (go, line) = mpsc::channel::<()>();
        let isr = thread::spawn(move || {
            line.recv().expect("started");
            for k in 0..n {
                ISR_MAP.insert(k, value(k));
                if k % 16 == 0 {
                    thread::yield_now();
                }
            }
        });

        let mut taken = vec![false; n as usize];
        let mut record = |k: u32, r: Result<u64, WaitError>| {
            assert_eq!(r, Ok(value(k)), "key {k}");
            assert!(!taken[k as usize], "key {k} taken twice");
            taken[k as usize] = true;
        };
        let mut pending = Vec::new();
        // The first half waits before the ISR starts; the second half
        // meets it on the way.
        for (i, k) in order.iter().enumerate() {
            if i == order.len() / 2 {
                assert_eq!(ISR_MAP.waiters(), order.len() / 2);
                go.send(()).unwrap();
            }
            let (c, w) = counting_waker();
            let mut f = ISR_MAP.take(k);
            match poll_once(&mut f, &w) {
                Poll::Ready(r) => record(*k, r),
                Poll::Pending => pending.push((*k, f, c, w, 0)),
            }
        }
        // Polls only the futures that were woken: a lost wake-up hangs.
        while !pending.is_empty() {
            let before = pending.len();
            pending.retain_mut(|(k, f, c, w, seen)| {
                let wakes = c.wakes();
                if wakes == *seen {
                    return true;
                }
                *seen = wakes;
                match poll_once(f, w) {
                    Poll::Ready(r) => {
                        record(*k, r);
                        false
                    }
                    Poll::Pending => true,
                }
            });
            if pending.len() == before {
                thread::yield_now();
            }
        }
        isr.join().unwrap();
        assert!(taken.iter().all(|t| *t), "every value was taken");
        assert_eq!((ISR_MAP.len(), ISR_MAP.waiters()), (0, 0));
    });
}

// ---------------------------------------------------------------------------
// 3-5. Re-entry and panics under the lock.
// ---------------------------------------------------------------------------

static CS_REENTRY: CsKeyMap = cs_key_map(3);

// Guarantee 11 under `CsLock`: a key whose `Eq` calls back into its own map
// (a `try_get`, or an `insert`) makes the outer call panic with a message
// about the critical section instead of deadlocking; the re-entered call did
// nothing, the outer one changed nothing, and the map and the critical
// section are free afterwards, for this thread and another.
#[test]
fn reentry_under_cs_lock_panics_with_a_clear_message() {
    no_hang_or(
        "re-entry under CsLock",
        "re-entering the map deadlocked",
        || {
            assert_eq!(CS_REENTRY.insert(Key::plain(1), 1), None);
            let inner_try_get = || {
                CS_REENTRY.try_get(&Key::plain(1));
            };
            let inner_insert = || {
                CS_REENTRY.insert(Key::plain(99), 99);
            };

            // Outer `try_get`, inner `try_get`.
            let outer = catch_unwind(AssertUnwindSafe(|| {
                CS_REENTRY.try_get(&Key::hooked(1, inner_try_get))
            }));
            let msg = panic_message(outer.expect_err("re-entry panicked"));
            assert!(msg.contains("critical section"), "unclear message: {msg}");

            // Outer `insert`, inner `insert`: neither stored anything.
            let outer = catch_unwind(AssertUnwindSafe(|| {
                CS_REENTRY.insert(Key::hooked(1, inner_insert), 2)
            }));
            let msg = panic_message(outer.expect_err("re-entry panicked"));
            assert!(msg.contains("critical section"), "unclear message: {msg}");
            assert_eq!(CS_REENTRY.try_get(&Key::plain(1)), Some(1));
            assert!(!CS_REENTRY.contains_key(&Key::plain(99)));

            usable_here_and_elsewhere(&CS_REENTRY, 10);
        },
    );
}

/// A map built by `AwaitMap::new()` (the default `SpinLock`), for keys whose
/// `Eq` calls back into it.
#[cfg(debug_assertions)]
fn spin_reentry_map() -> &'static AwaitMap<Key, u32> {
    static MAP: std::sync::OnceLock<AwaitMap<Key, u32>> = std::sync::OnceLock::new();
    MAP.get_or_init(AwaitMap::new)
}

// Guarantee 11 under the default `SpinLock` (debug builds): a key whose `Eq`
// calls back into its map panics with a message that points to
// `awaitmap::CsLock` instead of spinning forever; the map is usable after.
#[cfg(debug_assertions)]
#[test]
fn reentry_under_the_default_spin_lock_panics_naming_cs_lock() {
    no_hang_or(
        "re-entry under SpinLock",
        "re-entering the spin lock spun forever",
        || {
            let map = spin_reentry_map();
            assert_eq!(map.insert(Key::plain(1), 1), None);
            let inner = || {
                spin_reentry_map().insert(Key::plain(99), 99);
            };
            let outer = catch_unwind(AssertUnwindSafe(|| map.try_get(&Key::hooked(1, inner))));
            let msg = panic_message(outer.expect_err("re-entry panicked"));
            assert!(msg.contains("awaitmap::CsLock"), "unclear message: {msg}");
            assert!(!map.contains_key(&Key::plain(99)));
            assert_eq!(map.try_get(&Key::plain(1)), Some(1));

            // As `usable_here_and_elsewhere`, for the default hasher.
            assert!(!format!("{map:?}").contains("<locked>"));
            assert_eq!(map.insert(Key::plain(2), 2), None);
            no_hang_or(
                "another thread uses the map",
                "the panic left the spin lock held",
                move || {
                    assert_eq!(map.take_blocking(&Key::plain(2)), Ok(2));
                    assert_eq!(map.insert(Key::plain(3), 3), None);
                },
            );
            assert_eq!(map.try_get(&Key::plain(3)), Some(3));
        },
    );
}

static CS_PANIC: CsKeyMap = cs_key_map(5);

// Guarantee 11 under `CsLock`: an `Eq` that panics under the lock, in an
// `insert`, a `try_get` and a future's first poll, releases the lock and the
// critical section and leaves the map consistent: nothing stored, the
// waiter registered before still woken, usable from this thread and another.
#[test]
fn a_panicking_eq_under_cs_lock_releases_it() {
    no_hang_or(
        "panicking Eq under CsLock",
        "a panic under the lock left it held",
        || {
            let bad = || Key::hooked(1, || panic!("this key's Eq fails"));
            assert_eq!(CS_PANIC.insert(Key::plain(1), 1), None);
            let (wc, w) = counting_waker();
            let k2 = Key::plain(2);
            let mut waiting = CS_PANIC.get(&k2);
            assert!(poll_once(&mut waiting, &w).is_pending());

            let r = catch_unwind(AssertUnwindSafe(|| CS_PANIC.insert(bad(), 2)));
            assert!(panic_message(r.expect_err("Eq panicked")).contains("this key's Eq fails"));
            let r = catch_unwind(AssertUnwindSafe(|| CS_PANIC.try_get(&bad())));
            assert!(panic_message(r.expect_err("Eq panicked")).contains("this key's Eq fails"));
            let r = catch_unwind(AssertUnwindSafe(|| {
                let key = bad();
                let (_, w) = counting_waker();
                let _ = poll_once(&mut CS_PANIC.get(&key), &w);
            }));
            assert!(panic_message(r.expect_err("Eq panicked")).contains("this key's Eq fails"));

            assert_eq!(CS_PANIC.try_get(&Key::plain(1)), Some(1), "unchanged");
            assert_eq!(CS_PANIC.waiters(), 1);
            assert_eq!(CS_PANIC.insert(Key::plain(2), 20), None);
            assert_eq!(wc.wakes(), 1);
            assert_eq!(poll_once(&mut waiting, &w), Poll::Ready(Ok(20)));
            usable_here_and_elsewhere(&CS_PANIC, 10);
        },
    );
}

// ---------------------------------------------------------------------------
// 6. Static maps.
// ---------------------------------------------------------------------------

static CS_STATIC: AwaitMap<u32, u32, FixedState, CsLock> =
    AwaitMap::with_hasher_and_lock(FixedState::with_seed(6), CsLock::new());
static SPIN_STATIC: AwaitMap<u32, u32, FixedState, SpinLock> =
    AwaitMap::with_hasher_and_lock(FixedState::with_seed(6), SpinLock::new());

// Guarantees 1 and 2 on const-built `static` maps, one with each of the
// crate's locks.
#[test]
fn static_maps_with_either_lock_round_trip() {
    round_trip(&CS_STATIC);
    round_trip(&SPIN_STATIC);
}

static RESERVED: AwaitMap<u32, u32, FixedState, CsLock> =
    AwaitMap::with_hasher_and_lock(FixedState::with_seed(7), CsLock::new());
static UNRESERVED: AwaitMap<u32, u32, FixedState, CsLock> =
    AwaitMap::with_hasher_and_lock(FixedState::with_seed(7), CsLock::new());

/// Registers `waiters` takes on new keys, inserts `keys - waiters` other new
/// keys, then the waited keys, and polls the takes to completion.
fn fill(map: &AwaitMap<u32, u32, FixedState, CsLock>, keys: u32, waiters: u32) -> u64 {
    let (wc, w) = counting_waker();
    let ids: Vec<u32> = (0..waiters).collect();
    let mut futs = Vec::with_capacity(ids.len());
    let allocs = allocations(|| {
        futs.extend(ids.iter().map(|k| map.take(k)));
        for f in &mut futs {
            assert!(poll_once(f, &w).is_pending());
        }
        for k in waiters..keys {
            assert_eq!(map.insert(k, k), None);
        }
        for k in &ids {
            assert_eq!(map.insert(*k, *k), None);
        }
        for (f, k) in futs.iter_mut().zip(&ids) {
            assert_eq!(poll_once(f, &w), Poll::Ready(Ok(*k)));
        }
    });
    assert_eq!(wc.wakes(), waiters as usize);
    assert_eq!((map.len(), map.waiters()), ((keys - waiters) as usize, 0));
    allocs
}

// Performance floor (0 allocations) for a `static` `CsLock` map filled as
// an interrupt handler would: after `reserve(keys, waiters)`, that many new
// keys, that many of them awaited, allocate nothing (without `reserve`, the
// same work allocates, so the count is live).
#[test]
fn reserve_lets_a_static_cs_lock_map_fill_without_allocating() {
    let (keys, waiters) = (64, 8);
    RESERVED.reserve(keys as usize, waiters as usize);
    assert_eq!(fill(&RESERVED, keys, waiters), 0, "reserved room allocated");
    assert!(
        fill(&UNRESERVED, keys, waiters) > 0,
        "the same work without reserve allocated nothing: the count is dead"
    );
}

// ---------------------------------------------------------------------------
// 7. A lock of the user's own.
// ---------------------------------------------------------------------------

/// Set while a `StdLock` runs its caller's closure.
static HELD: AtomicBool = AtomicBool::new(false);
/// How many times a `StdLock` was taken.
static TAKEN: AtomicUsize = AtomicUsize::new(0);

/// A user-written lock over `std::sync::Mutex`, releasing on unwind.
struct StdLock(Mutex<()>);

impl StdLock {
    fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Unheld;
        impl Drop for Unheld {
            fn drop(&mut self) {
                HELD.store(false, Ordering::SeqCst);
            }
        }
        TAKEN.fetch_add(1, Ordering::SeqCst);
        HELD.store(true, Ordering::SeqCst);
        let _unheld = Unheld;
        f()
    }
}

// SAFETY: `f` runs only while this call holds the guard of `self.0`, a std
// mutex, which is dropped (releasing it) only after `f` returns or unwinds;
// the mutex admits one guard at a time, so two calls' `f` never overlap.
unsafe impl ScopedRawMutex for StdLock {
    fn try_with_lock<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        let _guard = match self.0.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(self.run(f))
    }

    fn with_lock<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        self.run(f)
    }

    fn is_locked(&self) -> bool {
        matches!(self.0.try_lock(), Err(TryLockError::WouldBlock))
    }
}

impl ConstInit for StdLock {
    const INIT: Self = StdLock(Mutex::new(()));
}

static USER_LOCKED: AwaitMap<u32, u32, FixedState, StdLock> =
    AwaitMap::with_hasher_and_lock(FixedState::with_seed(8), StdLock::INIT);

/// A value whose `Clone` records whether it ran under a `StdLock`.
#[derive(Debug, PartialEq)]
struct Probe(bool);

impl Clone for Probe {
    fn clone(&self) -> Self {
        Probe(HELD.load(Ordering::SeqCst))
    }
}

// Guarantees 1, 2 and 11 with a user-written `ScopedRawMutex + ConstInit`:
// the map takes that lock for its work (a value's `Clone` runs under it),
// and a round trip and a waiter's wake-up work through it.
#[test]
fn a_user_written_lock_guards_the_map() {
    let before = TAKEN.load(Ordering::SeqCst);
    round_trip(&USER_LOCKED);
    assert!(
        TAKEN.load(Ordering::SeqCst) > before,
        "the map never took its lock"
    );

    // `Default` builds the lock from `ConstInit`.
    let map: AwaitMap<u32, Probe, FixedState, StdLock> = AwaitMap::default();
    map.insert(1, Probe(false));
    assert!(!HELD.load(Ordering::SeqCst));
    assert_eq!(
        map.try_get(&1),
        Some(Probe(true)),
        "Clone ran under the lock"
    );
    let (wc, w) = counting_waker();
    let mut waiting = map.get(&2);
    assert!(poll_once(&mut waiting, &w).is_pending());
    map.insert(2, Probe(false));
    assert_eq!(wc.wakes(), 1);
    assert_eq!(poll_once(&mut waiting, &w), Poll::Ready(Ok(Probe(true))));
    assert!(!HELD.load(Ordering::SeqCst), "released");
}

// ---------------------------------------------------------------------------
// 8. A lock that opens the gap between two trips of one operation.
// ---------------------------------------------------------------------------

thread_local! {
    /// Runs once a `HookLock` on this thread has released the lock after
    /// its next `with_lock`.
    static AFTER_UNLOCK: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::RefCell::new(None) };
}

/// A user-written lock over `std::sync::Mutex` that can run a closure right
/// after its next `with_lock` releases it: a deterministic way into the gap
/// between two trips of one operation through the lock.
struct HookLock(Mutex<()>);

// SAFETY: `f` runs only while this call holds the guard of `self.0`, a std
// mutex, dropped (releasing it) only after `f` returns or unwinds; the mutex
// admits one guard at a time, so two calls' `f` never overlap. The hook runs
// after the guard is dropped.
unsafe impl ScopedRawMutex for HookLock {
    fn try_with_lock<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        let _guard = match self.0.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(f())
    }

    fn with_lock<R>(&self, f: impl FnOnce() -> R) -> R {
        let r = {
            let _guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            f()
        };
        if let Some(after) = AFTER_UNLOCK.take() {
            after();
        }
        r
    }

    fn is_locked(&self) -> bool {
        matches!(self.0.try_lock(), Err(TryLockError::WouldBlock))
    }
}

type HookMap = AwaitMap<u32, u32, FixedState, HookLock>;

/// A get_or_promise of `key`, behind a promise of another producer, polled
/// once while `between` runs right after its first trip (given the map and
/// that promise). The poll must make the caller the producer: its promise
/// then stores `value`, which the map must hold, with no waiter left.
fn get_or_promise_with_a_gap(
    key: u32,
    value: u32,
    between: impl FnOnce(&Arc<HookMap>, awaitmap::OwnedPromise<u32, u32, FixedState, HookLock>)
    + 'static,
) {
    let map = Arc::new(HookMap::with_hasher_and_lock(
        FixedState::with_seed(u64::from(key)),
        HookLock(Mutex::new(())),
    ));
    let promise = map.promise_owned(key).expect("the key is free");
    let mut gop = map.get_or_promise(&key);
    let other = Arc::clone(&map);
    AFTER_UNLOCK.set(Some(Box::new(move || between(&other, promise))));
    let (_, w) = common::counting_waker();
    match common::poll_once(&mut gop, &w) {
        Poll::Ready(Ok(awaitmap::ValueOrPromise::Promise(p))) => {
            assert_eq!(p.fulfill(value), None);
        }
        Poll::Ready(Ok(awaitmap::ValueOrPromise::Value(v))) => panic!("a value: {v}"),
        Poll::Ready(Err(e)) => panic!("failed: {e:?}"),
        Poll::Pending => panic!("waits although nobody produces the key"),
    }
    assert!(
        AFTER_UNLOCK.with_borrow(Option::is_none),
        "nothing ran between the two trips"
    );
    assert_eq!(map.try_get(&key), Some(value));
    assert_eq!(map.waiters(), 0);
}

// P, 1, 11: a get_or_promise registers behind another producer's promise in
// its first trip, without a waker yet; the promise is dropped unfulfilled
// before its next trip, which would store the waker. That trip sees the
// promise gone and makes the caller the producer, in the same poll: it does
// not just store its waker and wait for a value nobody will make (a waiter
// with no waker is not woken when the promise goes: it is mid-poll).
#[test]
fn a_get_or_promise_whose_promise_goes_between_its_trips_becomes_the_producer() {
    get_or_promise_with_a_gap(5, 50, |_, promise| drop(promise));
}

// P, 1, 7: as above, but between the get_or_promise's two trips the promise
// is fulfilled and its value removed at once: the key has no value and no
// producer again, so that same poll makes the caller the producer.
#[test]
fn a_get_or_promise_whose_value_comes_and_goes_between_its_trips_becomes_the_producer() {
    get_or_promise_with_a_gap(6, 61, |map, promise| {
        assert_eq!(promise.fulfill(60), None);
        assert_eq!(map.remove(&6), Some(60));
    });
}
