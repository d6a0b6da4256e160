//! The job with maitake-sync's `WaitMap`: the task waits on each key in turn,
//! and the SysTick handler wakes it with the key's value.
//!
//! `WaitMap` is a rendezvous: a value for a key nobody waits on yet is handed
//! back (`NoMatch`), so the handler keeps it and tries again on the next
//! tick. Its waiters live in the futures (intrusive), so it needs no heap.

#![no_std]
#![no_main]

use core::hint::black_box;
use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

use awaitmap_size::{self as fw, KEYS, value_for};
use cortex_m_rt::{entry, exception};
use maitake_sync::WaitMap;
use maitake_sync::wait_map::WakeOutcome;

/// The map: maitake-sync's default lock, which with its `critical-section`
/// feature (and without `std`) holds a critical section around a spin lock.
static MAP: WaitMap<u8, u32> = WaitMap::new();

/// The next key the handler delivers.
static NEXT: AtomicU8 = AtomicU8::new(0);

async fn task() -> u32 {
    let mut sum = 0;
    for k in 0..KEYS {
        sum += MAP.wait(black_box(k)).await.unwrap_or(0);
    }
    sum
}

#[entry]
fn main() -> ! {
    fw::init_heap();
    #[cfg(feature = "report")]
    report_sizes();
    fw::start_ticks();
    let sum = fw::block_on(task());
    fw::finish("maitake", sum)
}

#[exception]
fn SysTick() {
    let k = NEXT.load(Relaxed);
    if k < KEYS {
        // `NoMatch`: the task has not registered for `k` yet; retry next tick.
        if let WakeOutcome::Woke = MAP.wake(&k, value_for(k)) {
            NEXT.store(k + 1, Relaxed);
        }
    }
}

/// The `report` build: the sizes of the map and its future on this target.
#[cfg(feature = "report")]
fn report_sizes() {
    use core::mem::size_of;
    fw::report!(
        "maitake: size_of WaitMap<u8, u32> {} B, Wait future {} B, task future {} B",
        size_of::<WaitMap<u8, u32>>(),
        size_of::<maitake_sync::wait_map::Wait<'static, u8, u32>>(),
        size_of_val(&task()),
    );
    let s = fw::heap::stats(true);
    fw::report!("maitake: heap live before the job {} B", s.live);
}
