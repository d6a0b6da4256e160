//! The numbered guarantees of the crate docs (1–10 and 12), checked by polling the
//! futures by hand with counting wakers: no runtime, no threads. The cases
//! are shared with `tests/fixed_semantics.rs`, which runs them against
//! `FixedAwaitMap`.

mod common;

use awaitmap::AwaitMap;

/// Cases that need what only `AwaitMap` has: here, they run.
macro_rules! alloc_only {
    ($($case:tt)*) => { $($case)* };
}

include!("semantics/cases.rs");
