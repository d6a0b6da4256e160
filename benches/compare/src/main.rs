//! Compares awaitmap with what users write today. See README.md beside
//! Cargo.toml for the workloads, the peers and how to run it.
//!
//! ```text
//! cargo run --release -- time [FILTER]           # interleaved timing table
//! cargo run --release -- one WORKLOAD PEER ITERS # one pair, for callgrind.sh
//! cargo run --release -- one WORKLOAD PEER ITERS --bytes # the same, and the bytes it retained
//! cargo run --release -- list                    # every pair and its status
//! ```

// The counting allocator and the pinned array of `watch` futures are the only
// unsafe code; every block has a `// SAFETY:` comment.
#[allow(unsafe_code)]
mod alloc_count;
mod harness;
mod peers;
mod workloads;

#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

const USAGE: &str =
    "usage: awaitmap-compare time [FILTER] | one WORKLOAD PEER ITERS [--bytes] | list | legend";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pairs = workloads::all();
    let result = match args.as_slice() {
        ["time"] => {
            harness::time(&pairs, None);
            Ok(())
        }
        ["time", filter] => {
            harness::time(&pairs, Some(filter));
            Ok(())
        }
        ["one", workload, peer, iters, flags @ ..] if matches!(flags, [] | ["--bytes"]) => {
            match iters.replace('_', "").parse() {
                Ok(iters) => harness::one(&pairs, workload, peer, iters, !flags.is_empty()),
                Err(e) => Err(format!("ITERS: {e}")),
            }
        }
        ["list"] => {
            harness::list(&pairs);
            Ok(())
        }
        ["legend"] => {
            harness::legend();
            Ok(())
        }
        _ => Err(USAGE.to_string()),
    };
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(2);
    }
}
