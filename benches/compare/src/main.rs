//! Compares awaitmap with what users write today. See README.md beside
//! Cargo.toml for the workloads, the peers and how to run it.
//!
//! ```text
//! cargo run --release -- time [FILTER] [--waker noop|arc] # interleaved timing table (waker: arc)
//! cargo run --release -- one WORKLOAD PEER ITERS [--bytes] [--waker noop|arc] # one pair (waker: noop)
//! cargo run --release -- memory [--waker noop|arc]        # bytes per waiting key (waker: arc)
//! cargo run --release -- list                             # every pair and its status
//! ```

// The counting allocator and the pinned array of `watch` futures are the only
// unsafe code; every block has a `// SAFETY:` comment.
#[allow(unsafe_code)]
mod alloc_count;
mod harness;
mod memory;
mod peers;
mod workloads;

use harness::WakerKind;

#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

const USAGE: &str = "usage: awaitmap-compare time [FILTER] [--waker noop|arc] \
     | one WORKLOAD PEER ITERS [--bytes] [--waker noop|arc] | memory [--waker noop|arc] \
     | list | legend";

/// The command line: its words without the options, and the options.
struct Args<'a> {
    words: Vec<&'a str>,
    bytes: bool,
    waker: Option<WakerKind>,
}

fn parse(args: &[String]) -> Result<Args<'_>, String> {
    let mut parsed = Args {
        words: Vec::new(),
        bytes: false,
        waker: None,
    };
    let mut args = args.iter().map(String::as_str);
    while let Some(arg) = args.next() {
        match arg {
            "--bytes" => parsed.bytes = true,
            "--waker" => {
                let kind = args.next().ok_or("--waker needs `noop` or `arc`")?;
                parsed.waker = Some(WakerKind::parse(kind)?);
            }
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}\n{USAGE}")),
            _ => parsed.words.push(arg),
        }
    }
    Ok(parsed)
}

fn run(args: &Args<'_>) -> Result<(), String> {
    let pairs = workloads::all();
    let mode = args.words.first().copied();
    // `--bytes` belongs to `one`; `--waker` to the modes that poll.
    if args.bytes && mode != Some("one") {
        return Err(format!("--bytes is an option of `one`\n{USAGE}"));
    }
    let default = match mode {
        Some("time" | "memory") => WakerKind::Arc,
        Some("one") => WakerKind::Noop,
        _ if args.waker.is_some() => return Err(format!("--waker: nothing is polled\n{USAGE}")),
        _ => WakerKind::Noop,
    };
    harness::choose_waker(args.waker.unwrap_or(default));
    match args.words.as_slice() {
        ["time"] => harness::time(&pairs, None),
        ["time", filter] => harness::time(&pairs, Some(filter)),
        ["one", workload, peer, iters] => {
            let iters = iters
                .replace('_', "")
                .parse()
                .map_err(|e| format!("ITERS: {e}"))?;
            harness::one(&pairs, workload, peer, iters, args.bytes)?;
        }
        ["memory"] => memory::run(),
        ["list"] => harness::list(&pairs),
        ["legend"] => harness::legend(),
        _ => return Err(USAGE.to_string()),
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = parse(&args).and_then(|args| run(&args)) {
        eprintln!("{e}");
        std::process::exit(2);
    }
}
