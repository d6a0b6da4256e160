//! The measuring harness: a [`Meter`] around each measured section, the
//! waker of the run, the helpers every workload shares, and the `time`,
//! `one` and `list` modes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use foldhash::fast::FixedState;

use crate::alloc_count::{allocations, live_bytes, track_bytes};

/// The seed of every fixed-seed hasher and of the shuffles.
pub const SEED: u64 = 0x5eed_a3a1_7a9b_0001;

/// Distinct keys the batched workloads cycle through.
pub const KEYSPACE: usize = 65_536;

/// Rounds of the `time` mode.
const ROUNDS: usize = 21;
/// Measured time each pair aims at in one round of the `time` mode.
const TARGET: Duration = Duration::from_millis(25);

/// Times one measured section, counts its allocations, and how many bytes
/// it left allocated (live at its end and not at its start).
#[derive(Default)]
pub struct Meter {
    started: Option<(Instant, u64, i64)>,
    elapsed: Duration,
    allocs: u64,
    retained: i64,
    ops: u64,
}

impl Meter {
    /// Starts the measured section (after setup and warm-up).
    #[inline]
    pub fn start(&mut self) {
        let (allocs, bytes) = (allocations(), live_bytes());
        self.started = Some((Instant::now(), allocs, bytes));
    }

    /// Ends the measured section, which performed `ops` operations.
    #[inline]
    pub fn stop(&mut self, ops: u64) {
        let (t0, a0, b0) = self.started.take().expect("Meter::stop without start");
        self.elapsed = t0.elapsed();
        self.allocs = allocations() - a0;
        self.retained = live_bytes() - b0;
        self.ops = ops;
    }

    fn ns_per_op(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.ops as f64
    }
}

/// A workload: given a wished-for operation count, it sets up, warms up (a
/// fixed amount, whatever the count), then measures; it may round the count
/// up to whole batches and tells the meter how many it did.
pub type Run = fn(u64, &mut Meter);

/// What a (workload, peer) pair is.
pub enum Kind {
    /// Runs everywhere.
    Run(Run),
    /// Runs in the `time` mode only: callgrind's numbers would mislead.
    TimeOnly(Run, &'static str),
    /// The peer cannot do this workload; the reason goes in the tables.
    NotApplicable(&'static str),
}

pub struct Pair {
    pub workload: &'static str,
    pub peer: &'static str,
    pub kind: Kind,
}

impl Pair {
    fn run(&self) -> Option<Run> {
        match self.kind {
            Kind::Run(f) | Kind::TimeOnly(f, _) => Some(f),
            Kind::NotApplicable(_) => None,
        }
    }
}

/// The waker every future of a run is polled with, chosen once per process.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum WakerKind {
    /// `Waker::noop()`: cloning, waking and dropping it do nothing.
    Noop,
    /// An `Arc`-based waker ([`Wake`] on [`Counter`]): a clone is a
    /// reference-count increment, a drop a decrement, a wake a call through
    /// its vtable that adds one to an atomic counter.
    Arc,
}

impl WakerKind {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "noop" => Ok(WakerKind::Noop),
            "arc" => Ok(WakerKind::Arc),
            _ => Err(format!("--waker: {s:?} is neither `noop` nor `arc`")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WakerKind::Noop => "noop",
            WakerKind::Arc => "arc",
        }
    }

    /// The waker as the tables' headers describe it.
    pub fn describe(self) -> &'static str {
        match self {
            WakerKind::Noop => "noop (`Waker::noop()`: clone, wake and drop do nothing)",
            WakerKind::Arc => {
                "arc (an `Arc`-based waker: clone and drop change a reference count, \
                 wake goes through its vtable and adds to an atomic counter)"
            }
        }
    }
}

/// What the arc waker points to: it counts its wake-ups, so a wake does
/// some real work and cannot be optimised away.
struct Counter {
    wakes: AtomicU64,
}

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Relaxed);
    }
}

static CHOSEN: OnceLock<WakerKind> = OnceLock::new();
static ARC_WAKER: OnceLock<Waker> = OnceLock::new();

/// Chooses the waker of the whole run; call it once, before any workload.
/// The arc waker is allocated here, so no measured section allocates it.
pub fn choose_waker(kind: WakerKind) {
    assert!(CHOSEN.set(kind).is_ok(), "the waker is chosen once");
    if kind == WakerKind::Arc {
        let _ = ARC_WAKER.set(new_waker(kind));
    }
}

/// The waker chosen for the run.
pub fn waker_kind() -> WakerKind {
    *CHOSEN.get().expect("choose_waker was not called")
}

fn new_waker(kind: WakerKind) -> Waker {
    match kind {
        WakerKind::Noop => Waker::noop().clone(),
        WakerKind::Arc => Waker::from(Arc::new(Counter {
            wakes: AtomicU64::new(0),
        })),
    }
}

/// The run's waker, shared by every workload and peer.
pub fn waker() -> &'static Waker {
    match waker_kind() {
        WakerKind::Noop => Waker::noop(),
        WakerKind::Arc => ARC_WAKER.get().expect("made by choose_waker"),
    }
}

/// A context over the run's waker.
pub fn cx() -> Context<'static> {
    Context::from_waker(waker())
}

/// A waker of the run's kind of its own, for one thread of a threaded
/// workload: tasks on different threads have different wakers, and one
/// shared `Arc` would add contention on its reference count that no peer
/// causes. It allocates (arc): make it before the measured section.
pub fn thread_waker() -> Waker {
    new_waker(waker_kind())
}

pub fn fixed() -> FixedState {
    FixedState::with_seed(SEED)
}

/// `KEYSPACE` distinct keys.
pub fn keys() -> Vec<u64> {
    (0..KEYSPACE as u64).map(|i| (1 << 32) + i).collect()
}

/// The `n` keys of batch `b`: consecutive batches use distinct keys, and the
/// cycle comes back to a chunk only after the whole key space.
pub fn chunk(keys: &[u64], n: usize, b: u64) -> &[u64] {
    let chunks = (KEYSPACE / n).max(1);
    let c = (b % chunks as u64) as usize;
    &keys[c * n..][..n]
}

/// Whole batches of `n` that cover `iters` operations (at least one).
pub fn batches(iters: u64, n: usize) -> u64 {
    iters.div_ceil(n as u64).max(1)
}

/// splitmix64, for shuffles that are the same on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A permutation of `0..n`, fixed by `SEED` (Fisher–Yates).
pub fn shuffled(n: usize) -> Vec<usize> {
    let mut rng = Rng::new(SEED ^ n as u64);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `q`-quantile of `v` (0.25: the first quartile), by the nearest rank.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}

fn measure(f: Run, iters: u64) -> Meter {
    let mut m = Meter::default();
    f(iters, &mut m);
    assert!(m.ops > 0, "a workload did not call Meter::stop");
    m
}

/// The `time` mode: every selected pair once per round, `ROUNDS` rounds.
pub fn time(pairs: &[Pair], filter: Option<&str>) {
    let pairs: Vec<&Pair> = pairs
        .iter()
        .filter(|p| filter.is_none_or(|f| p.workload.contains(f)))
        .collect();
    let started = Instant::now();

    // Calibrate: grow the count until a run is long enough to scale from.
    let iters: Vec<u64> = pairs
        .iter()
        .map(|p| {
            let Some(f) = p.run() else { return 0 };
            let mut iters = 256;
            loop {
                let m = measure(f, iters);
                if m.elapsed >= TARGET / 8 || iters >= 1 << 26 {
                    let scale = TARGET.as_secs_f64() / m.elapsed.as_secs_f64().max(1e-9);
                    break ((m.ops as f64 * scale) as u64).max(1);
                }
                iters = m.ops * 4;
            }
        })
        .collect();
    eprintln!("calibrated in {:.1?}", started.elapsed());

    let mut ns: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); pairs.len()];
    let mut allocs = vec![0_u64; pairs.len()];
    let mut ops = vec![0_u64; pairs.len()];
    for round in 0..ROUNDS {
        for (i, p) in pairs.iter().enumerate() {
            if let Some(f) = p.run() {
                let m = measure(f, iters[i]);
                ns[i].push(m.ns_per_op());
                allocs[i] += m.allocs;
                ops[i] += m.ops;
            }
        }
        eprintln!(
            "round {}/{ROUNDS} done at {:.1?}",
            round + 1,
            started.elapsed()
        );
    }

    // Retained bytes: one more, untimed, run per pair with byte tracking on.
    track_bytes(true);
    let retained: Vec<f64> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| match p.run() {
            Some(f) => {
                let m = measure(f, iters[i]);
                let r = m.retained as f64 / m.ops as f64;
                // A few bytes freed by exiting threads are not growth:
                // show "0.0", not "-0.0".
                if r.abs() < 0.05 { 0.0 } else { r }
            }
            None => 0.0,
        })
        .collect();
    track_bytes(false);
    eprintln!("retained bytes measured at {:.1?}", started.elapsed());

    // Per-round ratios of pair `a` to pair `b`.
    let ratios =
        |a: usize, b: usize| -> Vec<f64> { ns[a].iter().zip(&ns[b]).map(|(x, y)| x / y).collect() };
    let ratio = |a: usize, b: usize| median(&ratios(a, b));
    let baseline = |i: usize| {
        pairs
            .iter()
            .position(|p| p.workload == pairs[i].workload && p.run().is_some())
    };

    println!(
        "{ROUNDS} rounds, each pair measured for ~{TARGET:?} per round; \
         ratio = this pair's ns/op ÷ awaitmap's in the same round (median over rounds, and its \
         spread: the middle half of the rounds' ratios; > 1: awaitmap faster)"
    );
    println!("waker: {}\n", waker_kind().describe());
    println!(
        "| workload | peer | ns/op (median) | min–max over rounds | ÷ awaitmap | middle half | allocs/op | retained B/op |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (i, p) in pairs.iter().enumerate() {
        match &p.kind {
            Kind::NotApplicable(why) => {
                println!("| {} | {} | n/a: {why} | | | | | |", p.workload, p.peer);
            }
            _ => {
                let base = baseline(i).expect("a runnable pair has a baseline");
                let min = ns[i].iter().copied().fold(f64::INFINITY, f64::min);
                let max = ns[i].iter().copied().fold(0.0, f64::max);
                let r = ratios(i, base);
                println!(
                    "| {} | {} | {:.1} | {min:.1}–{max:.1} | {:.2} | {:.2}–{:.2} | {:.4} | {:.1} |",
                    p.workload,
                    p.peer,
                    median(&ns[i]),
                    median(&r),
                    quantile(&r, 0.25),
                    quantile(&r, 0.75),
                    allocs[i] as f64 / ops[i] as f64,
                    retained[i]
                );
            }
        }
    }

    // The two targets that are not "against awaitmap" (the README's
    // performance section).
    let find = |w: &str, peer: &str| {
        pairs
            .iter()
            .position(|p| p.workload == w && p.peer == peer && p.run().is_some())
    };
    let mut checks = Vec::new();
    for w in ["hit-u64", "hit-arc32"] {
        if let (Some(a), Some(f)) = (find(w, "awaitmap"), find(w, "floor")) {
            checks.push(format!(
                "- {w}: awaitmap get ÷ floor = {:.2} (target ≤ 1.2; time is noisy, see callgrind.sh)",
                ratio(a, f)
            ));
        }
    }
    for peer in ["awaitmap", "oneshot-std-sip"] {
        if let (Some(t8), Some(t2)) = (find("threads-8", peer), find("threads-2", peer)) {
            checks.push(format!(
                "- {peer}: ns/op at 8 threads ÷ at 2 threads = {:.2} (target for awaitmap: ≤ 1.5)",
                ratio(t8, t2)
            ));
        }
    }
    if !checks.is_empty() {
        println!("\n{}", checks.join("\n"));
    }
    println!();
    legend();
    eprintln!("total {:.1?}", started.elapsed());
}

/// The `one` mode: exactly one pair, for `iters` operations after its
/// warm-up. Prints the measured section's operations, allocations and time,
/// with `bytes` (byte tracking on, which adds its own instructions and time)
/// the bytes it retained, and the waker it ran with.
pub fn one(
    pairs: &[Pair],
    workload: &str,
    peer: &str,
    iters: u64,
    bytes: bool,
) -> Result<(), String> {
    let p = pairs
        .iter()
        .find(|p| p.workload == workload && p.peer == peer)
        .ok_or_else(|| format!("no pair ({workload:?}, {peer:?}); see the `list` mode"))?;
    let f = match p.kind {
        Kind::Run(f) | Kind::TimeOnly(f, _) => f,
        Kind::NotApplicable(why) => return Err(format!("n/a: {why}")),
    };
    track_bytes(bytes);
    let m = measure(f, iters);
    track_bytes(false);
    print!(
        "ops={} allocs={} ns_per_op={:.1}",
        m.ops,
        m.allocs,
        m.ns_per_op()
    );
    if bytes {
        print!(" retained={}", m.retained);
    }
    println!(" waker={}", waker_kind().name());
    Ok(())
}

/// The `list` mode: one pair a line, tab-separated: workload, peer, and
/// `run`, `time-only: why` or `n/a: why`.
pub fn list(pairs: &[Pair]) {
    for p in pairs {
        let status = match p.kind {
            Kind::Run(_) => "run".to_string(),
            Kind::TimeOnly(_, why) => format!("time-only: {why}"),
            Kind::NotApplicable(why) => format!("n/a: {why}"),
        };
        println!("{}\t{}\t{status}", p.workload, p.peer);
    }
}

/// What each peer name stands for, as a markdown list.
pub fn legend() {
    println!("Peers:");
    for (peer, what) in crate::workloads::LEGEND {
        println!("- `{peer}`: {what}");
    }
}
