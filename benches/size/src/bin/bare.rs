//! The skeleton without a heap: SysTick, the executor and the map-less job.
//! `baseline` minus `bare` is what the allocator itself costs.

#![no_std]
#![no_main]

use awaitmap_size as fw;
use cortex_m_rt::{entry, exception};

#[entry]
fn main() -> ! {
    fw::start_ticks();
    let sum = fw::block_on(fw::tick_task());
    fw::finish("bare", sum)
}

#[exception]
fn SysTick() {
    fw::tick();
}
