//! The skeleton with its heap: what the two map images are measured
//! against. The same job as theirs, with a tick counter instead of a map.

#![no_std]
#![no_main]

use awaitmap_size as fw;
use cortex_m_rt::{entry, exception};

#[entry]
fn main() -> ! {
    fw::init_heap();
    fw::start_ticks();
    let sum = fw::block_on(fw::tick_task());
    fw::finish("baseline", sum)
}

#[exception]
fn SysTick() {
    fw::tick();
}
