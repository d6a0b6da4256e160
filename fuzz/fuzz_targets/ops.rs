//! Decodes the fuzzer's bytes into a map limit and a sequence of map
//! operations, and runs them through the interpreter and reference model of
//! `tests/model/mod.rs`, the same ones `tests/model.rs` drives with proptest.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/model/mod.rs"]
mod model;

use model::{DEMANDS, KEYS, Op, SLOTS, WakerChoice};

/// Longest sequence decoded from one input.
const MAX_OPS: usize = 256;

fn key(u: &mut Unstructured<'_>) -> Result<u8> {
    u.int_in_range(0..=KEYS - 1)
}

fn slot(u: &mut Unstructured<'_>) -> Result<u8> {
    u.int_in_range(0..=SLOTS - 1)
}

fn handle(u: &mut Unstructured<'_>) -> Result<u8> {
    u.int_in_range(0..=DEMANDS - 1)
}

/// The map's limit: none, or 0 to 3 values.
fn limit(u: &mut Unstructured<'_>) -> Result<Option<usize>> {
    Ok(match u.int_in_range(0..=4_u8)? {
        0 => None,
        n => Some(usize::from(n - 1)),
    })
}

fn op(u: &mut Unstructured<'_>) -> Result<Op> {
    Ok(match u.int_in_range(0..=21_u8)? {
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
        8 => Op::Close,
        9 => Op::CreateGetOrPromise {
            key: key(u)?,
            slot: slot(u)?,
        },
        10 => Op::CreateInsertAsync {
            key: key(u)?,
            slot: slot(u)?,
        },
        11 => Op::CreateClosed { slot: slot(u)? },
        12 => Op::CreateDrained { slot: slot(u)? },
        13 => Op::CreateNext {
            handle: handle(u)?,
            slot: slot(u)?,
        },
        14 => Op::PollWoken,
        15 => Op::TryInsert { key: key(u)? },
        16 => Op::Promise {
            key: key(u)?,
            owned: u.arbitrary()?,
        },
        17 => Op::Fulfil { key: key(u)? },
        18 => Op::Abandon { key: key(u)? },
        19 => Op::DropPromise { key: key(u)? },
        20 => Op::NewDemand { handle: handle(u)? },
        _ => Op::DropDemand { handle: handle(u)? },
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(limit) = limit(&mut u) else {
        return;
    };
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match op(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    if let Err(failure) = model::run_with(limit, &ops) {
        panic!("{failure}\nlimit: {limit:?}\nops: {ops:?}");
    }
});
