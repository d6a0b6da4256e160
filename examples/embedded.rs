//! A `FixedAwaitMap` shared by an interrupt handler and async tasks, as
//! firmware uses it, with no heap at all. One source: it runs on the host
//! and builds for a Cortex-M4F, where it links no allocator.
//!
//! - The map is a `static` built by a `const fn`, so the interrupt handler
//!   reaches it without being handed anything. Its lock is `CsLock`, which
//!   holds a critical section: an interrupt cannot fire while task code holds
//!   the map (with a spin lock it could, and would then spin forever).
//! - Its capacity is in its type: `FixedAwaitMap<u8, u32, 4, 5, CsLock>` has
//!   slots for 4 keys and 5 waiting futures, inside the `static` itself.
//!   Nothing grows, so nothing allocates. When it is full it says so rather
//!   than waiting: an `insert` of a new key with every key slot taken hands
//!   the key and value back, `Err((key, value))`, and a future that would
//!   have to wait with no slot free resolves `Err(WaitError::NoRoom)` at
//!   once. The sixth task below shows the second: five futures already hold
//!   the five waiter slots.
//! - A timer interrupt produces the values: on the chip, the SysTick
//!   exception; on the host, a thread that stands in for it.
//! - Six tasks await keys on a tiny executor written below: a fixed array
//!   of futures, one "ready" bit per task set by its waker, and a loop that
//!   polls the ready tasks and sleeps while none is ready. The wakers are
//!   heap-free too: one static waker vtable, with the task's index as the
//!   waker's data.
//!
//! Host: `cargo run --example embedded --all-features`
//!
//! Chip: `cargo build --example embedded --target thumbv7em-none-eabihf
//! --no-default-features --features critical-section` (no `alloc`: the
//! firmware has no allocator, and `llvm-nm` finds no `__rust_alloc` in it).
//! Its linker setup is in `.cargo/config.toml` and `examples/embedded/memory.x`;
//! Cargo ignores it when `RUSTFLAGS` is set, even to nothing, and then links
//! an empty file. On the chip a failed assert halts (panic-halt); success
//! ends in a `wfi` loop.

#![cfg_attr(target_os = "none", no_std, no_main)]

use core::future::Future;
use core::pin::{Pin, pin};
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use awaitmap::{CsLock, FixedAwaitMap, WaitError};

// The keys: pin numbers (0..64) and request ids (64..).
const BUTTON_PIN: u8 = 2;
const SENSOR_PIN: u8 = 5; // an analog pin: its key gets each ADC sample
const PING_REQUEST: u8 = 70; // a request whose reply comes
const LOST_REQUEST: u8 = 71; // a request whose reply never comes

/// Pins and request ids to values: the four keys above, and five futures
/// waiting at once at most (two on the button, one on each other key).
static MAP: FixedAwaitMap<u8, u32, 4, 5, CsLock> = FixedAwaitMap::new();

// ---------------------------------------------------------------------------
// The interrupt handler: it produces, never waits.

static TICKS: AtomicU32 = AtomicU32::new(0);
static SAMPLES: AtomicU32 = AtomicU32::new(0);
/// Values the map refused for want of a key slot (a real driver would
/// report these; here the map is sized so that it never happens).
static REFUSED: AtomicU32 = AtomicU32::new(0);

/// Stores `value` under `key`, counting a refusal when the map is full.
fn publish(key: u8, value: u32) -> bool {
    let stored = MAP.insert(key, value).is_ok();
    if !stored {
        REFUSED.fetch_add(1, Ordering::Relaxed);
    }
    stored
}

/// The timer interrupt's work, once per tick.
fn on_tick() {
    let tick = TICKS.fetch_add(1, Ordering::Relaxed) + 1;
    match tick {
        // The button was pressed: its value is the tick it happened at.
        2 => _ = publish(BUTTON_PIN, tick),
        4 => _ = publish(PING_REQUEST, 42),
        // The lost request times out: its waiter gets `Err(Cancelled)`.
        6 => _ = MAP.cancel(&LOST_REQUEST),
        _ => {}
    }
    // Two ADC samples. A map holds one value per key, so a sample is
    // published only once its task has taken the previous one (a real
    // driver would count the others as overruns).
    let n = SAMPLES.load(Ordering::Relaxed);
    if n < 2 && !MAP.contains_key(&SENSOR_PIN) && publish(SENSOR_PIN, 100 + n) {
        SAMPLES.store(n + 1, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// The executor.

type Output = Result<u32, WaitError>;

/// Bit `i` set: task `i` was woken and is to be polled.
static READY: AtomicU32 = AtomicU32::new(0);

/// The wakers of every task: the data pointer is no pointer, only the task's
/// index, so a waker owns nothing and cloning or dropping one is free.
static TASK_WAKER: RawWakerVTable =
    RawWakerVTable::new(clone_waker, wake_task, wake_task, drop_waker);

fn clone_waker(task: *const ()) -> RawWaker {
    RawWaker::new(task, &TASK_WAKER)
}

/// Sets the task's bit, then wakes the executor if it sleeps.
fn wake_task(task: *const ()) {
    READY.fetch_or(1 << task.addr(), Ordering::Release);
    platform::signal();
}

fn drop_waker(_: *const ()) {}

/// Task `i`'s waker.
#[allow(unsafe_code)]
fn task_waker(i: usize) -> Waker {
    assert!(i < 32, "one bit of `READY` per task");
    let raw = RawWaker::new(core::ptr::without_provenance(i), &TASK_WAKER);
    // SAFETY: the vtable's functions never dereference the data pointer (it
    // only carries the index), so any value of it is fine; they touch only
    // atomics and the platform's signal, so calling them from any thread or
    // interrupt is sound; `clone_waker` returns a waker with the same data
    // and vtable, and `drop_waker` has nothing to free.
    unsafe { Waker::from_raw(raw) }
}

/// Runs `tasks` to completion and returns their outputs. Each task is polled
/// once to start, then once per wake-up. `start` runs after the first round,
/// when every task is waiting.
fn run<const N: usize>(
    mut tasks: [Pin<&mut dyn Future<Output = Output>>; N],
    start: impl FnOnce(),
) -> [Output; N] {
    let wakers: [Waker; N] = core::array::from_fn(task_waker);
    let mut outputs = [None; N];
    let mut ready = (1 << N) - 1; // every task gets a first poll
    let mut start = Some(start);
    loop {
        for (i, task) in tasks.iter_mut().enumerate() {
            if ready & 1 << i != 0 && outputs[i].is_none() {
                let mut cx = Context::from_waker(&wakers[i]);
                if let Poll::Ready(output) = task.as_mut().poll(&mut cx) {
                    outputs[i] = Some(output);
                }
            }
        }
        if outputs.iter().all(Option::is_some) {
            return outputs.map(Option::unwrap);
        }
        if let Some(start) = start.take() {
            start();
        }
        // Sleep until a waker sets a bit. A waker signals after setting its
        // bit, and a signal sent before the sleep ends it at once, so no
        // wake-up is lost between the `swap` and the sleep.
        loop {
            ready = READY.swap(0, Ordering::Acquire);
            if ready != 0 {
                break;
            }
            platform::sleep();
        }
    }
}

// ---------------------------------------------------------------------------
// The application, the same on the host and the chip.

/// Runs the tasks; `start_timer` starts the interrupt once they all wait.
fn app(start_timer: impl FnOnce()) -> [Output; 6] {
    let outputs = run(
        [
            pin!(MAP.get(&BUTTON_PIN)), // a display and a logger both
            pin!(MAP.get(&BUTTON_PIN)), // `get` the press: both see it
            pin!(async {
                // `take` moves the first sample out, so the second `take`
                // waits for the next one.
                let first = MAP.take(&SENSOR_PIN).await?;
                Ok(first * 1000 + MAP.take(&SENSOR_PIN).await?)
            }),
            pin!(MAP.take(&PING_REQUEST)),
            pin!(MAP.take(&LOST_REQUEST)),
            // Polled after the five above registered: every waiter slot is
            // taken, so it fails at once instead of waiting.
            pin!(MAP.get(&BUTTON_PIN)),
        ],
        start_timer,
    );
    let expected = [
        Ok(2),
        Ok(2),
        Ok(100_101),
        Ok(42),
        Err(WaitError::Cancelled),
        Err(WaitError::NoRoom),
    ];
    assert_eq!(outputs, expected);
    // The gets left the press in the map; the takes moved their values out.
    assert_eq!((MAP.len(), MAP.waiters()), (1, 0));
    assert_eq!(MAP.try_get(&BUTTON_PIN), Some(2));
    // Four keys at most, so every value found a key slot.
    assert_eq!(REFUSED.load(Ordering::Relaxed), 0);
    outputs
}

// ---------------------------------------------------------------------------
// The host: a thread plays the timer interrupt.

#[cfg(not(target_os = "none"))]
mod platform {
    use std::sync::OnceLock;
    use std::thread::Thread;

    /// The executor's thread, which wakers unpark.
    pub(crate) static EXECUTOR: OnceLock<Thread> = OnceLock::new();

    pub(crate) fn signal() {
        EXECUTOR.get().expect("set in main").unpark();
    }

    /// Parks until the next `signal` (or returns at once if one came since
    /// the last park).
    pub(crate) fn sleep() {
        std::thread::park();
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    platform::EXECUTOR.set(std::thread::current()).unwrap();
    let stop = AtomicBool::new(false);
    let outputs = std::thread::scope(|scope| {
        let outputs = app(|| {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                    on_tick();
                }
            });
        });
        stop.store(true, Ordering::Relaxed);
        outputs
    });
    let names = ["display", "logger", "sensor", "ping", "lost", "extra"];
    for (name, output) in names.iter().zip(outputs) {
        println!("{name:<8} {output:?}");
    }
    println!("{MAP:?}");
    println!("every task got what it awaited, with no heap in the map");
}

// ---------------------------------------------------------------------------
// The chip: SysTick is the interrupt; the executor sleeps with `wfe`.

#[cfg(target_os = "none")]
mod platform {
    /// Sets the core's event flag, so the next (or current) `wfe` returns.
    pub(crate) fn signal() {
        cortex_m::asm::sev();
    }

    /// Waits for an event (a `sev` since the last `wfe`, or an interrupt).
    pub(crate) fn sleep() {
        cortex_m::asm::wfe();
    }
}

#[cfg(target_os = "none")]
use panic_halt as _;

#[cfg(target_os = "none")]
#[cortex_m_rt::entry]
fn main() -> ! {
    use cortex_m::peripheral::syst::SystClkSource;

    let mut core = cortex_m::Peripherals::take().unwrap();
    let systick = &mut core.SYST;
    // `app` asserts its outputs; there is nowhere to print them here.
    let _outputs = app(|| {
        // An interrupt every 1 ms at the STM32F4's 16 MHz reset clock.
        systick.set_clock_source(SystClkSource::Core);
        systick.set_reload(16_000 - 1);
        systick.clear_current();
        systick.enable_counter();
        systick.enable_interrupt();
    });
    systick.disable_interrupt();
    loop {
        cortex_m::asm::wfi(); // done
    }
}

#[cfg(target_os = "none")]
#[cortex_m_rt::exception]
fn SysTick() {
    on_tick();
}
