//! No runtime at all: a main loop that polls futures by hand, as firmware
//! on a microcontroller would.
//!
//! Each task gets its own waker, which only raises a flag. The main loop
//! polls a task only when its flag is up; "interrupt handlers" (simulated
//! here, one per tick) `insert` the values the tasks wait for. So a task is
//! polled once to start, then once per wake-up: never in vain, never spun.
//!
//! Run it with `cargo run --example no_executor`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use awaitmap::{AwaitMap, WaitError};

/// What the interrupt handlers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Irq {
    Adc,
    Uart,
    Button,
    Never,
}

/// A task's waker: raises a flag and counts the wake-ups.
#[derive(Default)]
struct Flag {
    raised: AtomicBool,
    wakes: AtomicUsize,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::Relaxed);
        self.raised.store(true, Ordering::Release);
    }
}

type Task<'a> = Pin<Box<dyn Future<Output = Result<u32, WaitError>> + 'a>>;

fn main() {
    let irqs: AwaitMap<Irq, u32> = AwaitMap::new();
    let map = &irqs;
    // The button was pressed before the loop started.
    map.insert(Irq::Button, 1);

    let mut tasks: Vec<(&str, Task<'_>)> = vec![
        ("adc", Box::pin(map.take(&Irq::Adc))),
        ("button", Box::pin(map.get(&Irq::Button))),
        // Two UART bytes in a row: two waits on the same key.
        (
            "uart",
            Box::pin(async move {
                let high = map.take(&Irq::Uart).await?;
                Ok(high << 8 | map.take(&Irq::Uart).await?)
            }),
        ),
        ("watchdog", Box::pin(map.get(&Irq::Never))),
    ];
    let flags: Vec<Arc<Flag>> = tasks.iter().map(|_| Arc::default()).collect();
    for flag in &flags {
        flag.raised.store(true, Ordering::Relaxed); // every task gets a first poll
    }
    let mut polls = [0; 4];
    let mut results = [None; 4];
    let mut idle_ticks = 0; // ticks on which no task was polled

    for tick in 0.. {
        // The "interrupts" of this tick. (A map holds one value per key: an
        // ISR that can fire twice before its task runs should check what
        // `insert` returns, which is the value it overwrote.)
        match tick {
            2 => assert_eq!(map.insert(Irq::Adc, 512), None),
            4 => assert_eq!(map.insert(Irq::Uart, 0x12), None),
            6 => assert_eq!(map.insert(Irq::Uart, 0x34), None),
            8 => assert_eq!(map.cancel(&Irq::Never), 1), // the watchdog fires
            _ => {}
        }
        // Poll only the tasks whose flag is up.
        let mut polled = false;
        for (i, (name, task)) in tasks.iter_mut().enumerate() {
            if results[i].is_none() && flags[i].raised.swap(false, Ordering::Acquire) {
                polls[i] += 1;
                polled = true;
                let waker = Waker::from(Arc::clone(&flags[i]));
                let poll = task.as_mut().poll(&mut Context::from_waker(&waker));
                if tick > 0 || poll.is_ready() {
                    println!("tick {tick}: {name:<8} poll {} -> {poll:?}", polls[i]);
                }
                if let Poll::Ready(out) = poll {
                    results[i] = Some(out);
                }
            }
        }
        idle_ticks += usize::from(!polled);
        if tick == 0 {
            // Three tasks registered and sleep; the button's value was there.
            assert_eq!(map.waiters(), 3);
            println!(
                "tick 0: polled all 4 tasks once, {} now wait",
                map.waiters()
            );
        }
        if results.iter().all(Option::is_some) {
            assert_eq!(tick, 8, "the last event ends the last task");
            break;
        }
        // Firmware would sleep here (`wfi`) until the next interrupt.
    }

    let results = results.map(Option::unwrap);
    assert_eq!(
        results,
        [Ok(512), Ok(1), Ok(0x1234), Err(WaitError::Cancelled)]
    );
    // One first poll, then exactly one poll per wake-up: nothing polled in vain.
    let wakes = flags.iter().map(|f| f.wakes.load(Ordering::Relaxed));
    assert_eq!(wakes.collect::<Vec<_>>(), [1, 0, 2, 1]);
    assert_eq!(polls, [2, 1, 3, 2]);
    assert_eq!(idle_ticks, 4, "ticks 1, 3, 5, 7 had no event, so no poll");
    // The takes consumed their values; the button's value is still there.
    assert_eq!((map.len(), map.waiters()), (1, 0));
    println!("polls per task {polls:?}: one to start plus one per wake-up");
    println!("{idle_ticks} ticks without an event polled nothing");
}
