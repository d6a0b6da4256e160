//! Decodes the fuzzer's bytes into a sequence of map operations and runs it
//! through the interpreter and reference model of `tests/model/mod.rs`, the
//! same ones `tests/model.rs` drives with proptest.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/model/mod.rs"]
mod model;

use model::{KEYS, Op, SLOTS, WakerChoice};

/// Longest sequence decoded from one input.
const MAX_OPS: usize = 256;

fn key(u: &mut Unstructured<'_>) -> Result<u8> {
    u.int_in_range(0..=KEYS - 1)
}

fn slot(u: &mut Unstructured<'_>) -> Result<u8> {
    u.int_in_range(0..=SLOTS - 1)
}

fn op(u: &mut Unstructured<'_>) -> Result<Op> {
    Ok(match u.int_in_range(0..=8_u8)? {
        0 => Op::CreateGet {
            key: key(u)?,
            slot: slot(u)?,
        },
        1 => Op::CreateTake {
            key: key(u)?,
            slot: slot(u)?,
        },
        2 => Op::Poll {
            slot: slot(u)?,
            waker: if u.arbitrary()? {
                WakerChoice::B
            } else {
                WakerChoice::A
            },
        },
        3 => Op::Drop { slot: slot(u)? },
        4 => Op::Insert { key: key(u)? },
        5 => Op::Remove { key: key(u)? },
        6 => Op::TryGet { key: key(u)? },
        7 => Op::Cancel { key: key(u)? },
        _ => Op::Close,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match op(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    if let Err(failure) = model::run(&ops) {
        panic!("{failure}\nops: {ops:?}");
    }
});
