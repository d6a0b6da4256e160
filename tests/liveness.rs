//! A liveness checker: a small single-threaded scheduler runs random
//! scenarios against the real map, through its public API only, and checks
//! that no wake-up is lost and that every value is delivered exactly once.
//!
//! # The scheduler
//!
//! Every future gets its own counting waker, and the scheduler polls a future
//! only when the waker of its latest poll has fired since that poll, as a
//! real executor does. On top of that it makes spurious polls (the waker did
//! not fire), polls with a new waker or back with the one before (after
//! which only that one may be relied on: the others are no longer watched),
//! and drops futures right after they were woken, before they poll: a
//! `take` woken for a value and dropped must pass the wake-up on to the next
//! waiting `take`.
//!
//! The futures are `get`, `take`, `get_owned`, `take_owned` and
//! `get_or_promise` on one to three keys; the producers `insert`, `remove`,
//! `cancel`, `close` (in some scenarios), and promises (from `promise`,
//! `promise_owned`, or handed out by `get_or_promise`) that the scenario
//! later fulfils, abandons or drops.
//!
//! # What is checked
//!
//! - **Lost wake-ups (the core).** After the random steps the scenario runs
//!   to quiescence: the futures whose watched waker fired are polled until
//!   none has. Then every future still pending gets one probe poll, although
//!   its waker did not fire. A probe that returns `Ready` found a future that
//!   could have finished but that no executor would ever poll again. The
//!   scenario fails there (the probe changed what it checked, so it does not
//!   go on).
//! - **Wake-up rules, after every step** (they find a lost wake-up at the
//!   step that lost it, with a shorter trace): while a key holds a value,
//!   every future waiting on it for a copy (`get`, `get_owned`,
//!   `get_or_promise`) has been woken, and so has at least one of its
//!   waiting `take`s; after `close` every waiting future has been woken (and
//!   every poll is `Ready`); a future that `cancel` or an abandoned promise
//!   failed has been woken, and so has every `get_or_promise` caller that an
//!   abandoned promise sends back to start over. At quiescence, where no
//!   future is woken, these rules say that nothing is stuck.
//! - **Values exactly once.** Each inserted value has a unique id and counts
//!   its live instances. A reference model knows which value each key holds:
//!   a `get` must return that one, a `take` must return it and empties the
//!   key, `insert`, `remove` and `fulfill` must return the one they replaced
//!   or removed. So a value delivered twice, lost, or changed is caught where
//!   it happens; at the end every key's value is compared with the model and,
//!   after everything and the map are dropped, no value or key may be alive.
//! - **Documented outcomes.** A fresh future resolves at once on a present
//!   key (a `take` moves the value out), fails with `Closed` on a closed map,
//!   a fresh `get_or_promise` of an absent key nobody produces gets the
//!   promise; an error needs a cause (`Cancelled`: a `cancel` of the key
//!   since the future started waiting; `Abandoned`: an abandoned promise of
//!   the key, and never for `get_or_promise`; `Closed`: `close`); a future
//!   failed by `cancel` or by an abandoned promise fails; at most one promise
//!   per key; `promise` returns `Some` exactly when the key has no value and
//!   no promise and the map is open; `len`, `waiters`, `try_get` and
//!   `contains_key` agree with the model; `check_invariants` holds every few
//!   steps, at each quiescence of the random steps and at the end.
//!
//! After quiescence the scenario winds down: it fulfils or abandons its
//! promises and inserts values for the keys that futures still wait on,
//! running to quiescence (and probing) after each, until every future has
//! finished.
//!
//! `LIVENESS_SCENARIOS` sets the number of random scenarios (default
//! 100,000; a few dozen under miri). `LIVENESS_SEED` replays one scenario and
//! prints its trace. A failure prints the seed and the trace of the steps.

mod common;

use std::fmt::{self, Write as _};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Poll, Waker};

use awaitmap::{
    AwaitMap, Get, GetOrPromise, GetOwned, OwnedPromise, Promise, Take, TakeOwned, ValueOrPromise,
    WaitError,
};
use common::{
    CountingWaker, Tracked, counting_waker, live, live_counter, panic_message, poll_once,
};
use foldhash::fast::FixedState;

/// A fixed-seed hasher, so that a replayed scenario lays its table out the
/// same way.
type Map = AwaitMap<Tracked, Tracked, FixedState>;

/// Random scenarios in a default run.
const DEFAULT_SCENARIOS: u64 = 100_000;
/// Random scenarios under miri, which interprets every step.
const MIRI_SCENARIOS: u64 = 40;

// ===========================================================================
// Random numbers
// ===========================================================================

/// xorshift64, seeded through splitmix64 so that neighbouring seeds start
/// far apart.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // Never zero: zero is xorshift's fixed point.
        Rng(z | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n`; `n > 0`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

// ===========================================================================
// Futures, promises and outcomes
// ===========================================================================

/// Which method made a future.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Get,
    Take,
    GetOwned,
    TakeOwned,
    GetOrPromise,
}

impl Kind {
    /// Moves the value out.
    fn takes(self) -> bool {
        matches!(self, Kind::Take | Kind::TakeOwned)
    }

    /// A plain `get` or `take`: fails with `Abandoned` when the key's
    /// promise is abandoned (a `get_or_promise` starts over instead).
    fn plain(self) -> bool {
        self != Kind::GetOrPromise
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Get => "get",
            Kind::Take => "take",
            Kind::GetOwned => "get_owned",
            Kind::TakeOwned => "take_owned",
            Kind::GetOrPromise => "get_or_promise",
        }
    }
}

enum Fut<'a> {
    Get(Get<'a, Tracked, Tracked, FixedState, Tracked>),
    Take(Take<'a, Tracked, Tracked, FixedState, Tracked>),
    GetOwned(GetOwned<Tracked, Tracked, FixedState>),
    TakeOwned(TakeOwned<Tracked, Tracked, FixedState>),
    GetOrPromise(GetOrPromise<'a, Tracked, Tracked, FixedState, Tracked>),
}

/// What a future resolved with.
enum Outcome<'a> {
    Value(Tracked),
    Promise(AnyPromise<'a>),
    Failed(WaitError),
}

fn plain_outcome<'a>(r: Result<Tracked, WaitError>) -> Outcome<'a> {
    match r {
        Ok(v) => Outcome::Value(v),
        Err(e) => Outcome::Failed(e),
    }
}

impl<'a> Fut<'a> {
    fn poll(&mut self, waker: &Waker) -> Poll<Outcome<'a>> {
        match self {
            Fut::Get(f) => poll_once(f, waker).map(plain_outcome),
            Fut::Take(f) => poll_once(f, waker).map(plain_outcome),
            Fut::GetOwned(f) => poll_once(f, waker).map(plain_outcome),
            Fut::TakeOwned(f) => poll_once(f, waker).map(plain_outcome),
            Fut::GetOrPromise(f) => poll_once(f, waker).map(|r| match r {
                Ok(ValueOrPromise::Value(v)) => Outcome::Value(v),
                Ok(ValueOrPromise::Promise(p)) => Outcome::Promise(AnyPromise::Borrowed(p)),
                Err(e) => Outcome::Failed(e),
            }),
        }
    }
}

enum AnyPromise<'a> {
    Borrowed(Promise<'a, Tracked, Tracked, FixedState>),
    Owned(OwnedPromise<Tracked, Tracked, FixedState>),
}

impl AnyPromise<'_> {
    fn fulfill(self, value: Tracked) -> Option<Tracked> {
        match self {
            AnyPromise::Borrowed(p) => p.fulfill(value),
            AnyPromise::Owned(p) => p.fulfill(value),
        }
    }

    fn abandon(self) -> usize {
        match self {
            AnyPromise::Borrowed(p) => p.abandon(),
            AnyPromise::Owned(p) => p.abandon(),
        }
    }
}

/// A promise the scenario holds.
struct Held<'a> {
    id: u32,
    key: usize,
    promise: AnyPromise<'a>,
}

/// The key's cancel and abandon counts when a future started waiting: an
/// error it resolves with must have a cause that came later.
#[derive(Clone, Copy, Debug)]
struct Since {
    cancels: u32,
    abandons: u32,
}

/// A future the scheduler runs.
struct Task<'a> {
    id: u32,
    kind: Kind,
    key: usize,
    fut: Fut<'a>,
    /// The counter behind the waker of the latest poll: the only waker the
    /// map must wake, so the only one watched.
    watch: Arc<CountingWaker>,
    waker: Waker,
    /// The waker before the latest change of waker, to switch back to.
    previous: Option<(Arc<CountingWaker>, Waker)>,
    /// `watch.wakes()` when the latest poll began.
    seen: usize,
    /// The trace shows that the watched waker fired since the latest poll.
    noted: bool,
    /// Set by the first poll, which returned `Pending`.
    registered: Option<Since>,
    /// Set when a `cancel` or an abandoned promise found this future
    /// waiting on a key with no value and failed it (an abandoned promise
    /// fails plain futures only): its next poll must fail.
    doomed: Option<&'static str>,
    /// A `get_or_promise` that an abandoned promise sent back to start over
    /// and that has not been polled since: the map no longer counts it as
    /// waiting, so a `cancel` does not reach it.
    restarting: bool,
    /// Set when a `cancel` or an abandoned promise found this take waiting
    /// on a key with a value: it was failed unless the value was for it
    /// (which take that is, the docs leave to the map), so the counts those
    /// return may or may not include it later.
    maybe_failed: bool,
}

impl Task<'_> {
    /// The watched waker fired since the latest poll.
    fn fired(&self) -> bool {
        self.watch.wakes() > self.seen
    }

    /// The scheduler would poll it: never polled yet (a spawned task is
    /// runnable), or its watched waker fired.
    fn runnable(&self) -> bool {
        self.registered.is_none() || self.fired()
    }

    /// Names the future in messages (formatted only if one is printed).
    fn describe(&self) -> Who {
        Who(self.id, self.kind, self.key)
    }
}

/// `F3 (take of key 1)`.
#[derive(Clone, Copy)]
struct Who(u32, Kind, usize);

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "F{} ({} of key {})", self.0, self.1.name(), self.2)
    }
}

// ===========================================================================
// The trace
// ===========================================================================

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    /// Its watched waker fired.
    Woken,
    /// Its waker did not fire.
    Spurious,
    /// With a new waker, which is watched from now on.
    NewWaker,
    /// With the waker it was polled with before the latest poll, which is
    /// watched again from now on.
    OldWaker,
    /// At quiescence, to look for a lost wake-up.
    Probe,
    /// With a new waker that the scheduler does not watch (a deliberately
    /// broken scheduler, for the self-tests).
    Unwatched,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Res {
    Pending,
    Value(u64),
    Promise(u32),
    Failed(WaitError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    Spawn {
        task: u32,
        kind: Kind,
        key: usize,
    },
    Poll {
        task: u32,
        how: How,
        res: Res,
    },
    Drop {
        task: u32,
        woken: bool,
    },
    Insert {
        key: usize,
        value: u64,
        replaced: Option<u64>,
    },
    Remove {
        key: usize,
        removed: Option<u64>,
    },
    Cancel {
        key: usize,
        failed: usize,
    },
    Close,
    Promise {
        key: usize,
        owned: bool,
        got: Option<u32>,
    },
    Fulfil {
        promise: u32,
        key: usize,
        value: u64,
        replaced: Option<u64>,
    },
    Abandon {
        promise: u32,
        key: usize,
        woke: Option<usize>,
    },
    /// The watched waker of a waiting future fired (noted after the step
    /// that woke it).
    Woken {
        task: u32,
    },
    Settle,
    Tamper {
        what: &'static str,
        on: u64,
    },
}

/// `#3` or `none`.
struct Id(Option<u64>);

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "#{v}"),
            None => f.write_str("none"),
        }
    }
}

impl fmt::Display for Res {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Res::Pending => f.write_str("Pending"),
            Res::Value(v) => write!(f, "Ready(value #{v})"),
            Res::Promise(p) => write!(f, "Ready(promise P{p})"),
            Res::Failed(e) => write!(f, "Ready(Err({e:?}))"),
        }
    }
}

impl fmt::Display for Ev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Ev::Spawn { task, kind, key } => write!(f, "F{task} = {}(key {key})", kind.name()),
            Ev::Poll { task, how, res } => {
                let how = match how {
                    How::Woken => "woken",
                    How::Spurious => "spurious",
                    How::NewWaker => "with a new waker",
                    How::OldWaker => "with its previous waker",
                    How::Probe => "probe",
                    How::Unwatched => "with an unwatched waker",
                };
                write!(f, "poll F{task} ({how}) -> {res}")
            }
            Ev::Drop { task, woken } => {
                let when = if woken {
                    " (woken, before its poll)"
                } else {
                    ""
                };
                write!(f, "drop F{task}{when}")
            }
            Ev::Insert {
                key,
                value,
                replaced,
            } => write!(f, "insert(key {key}, #{value}) -> {}", Id(replaced)),
            Ev::Remove { key, removed } => write!(f, "remove(key {key}) -> {}", Id(removed)),
            Ev::Cancel { key, failed } => write!(f, "cancel(key {key}) -> {failed}"),
            Ev::Close => f.write_str("close()"),
            Ev::Promise { key, owned, got } => {
                let how = if owned { "promise_owned" } else { "promise" };
                match got {
                    Some(p) => write!(f, "{how}(key {key}) -> P{p}"),
                    None => write!(f, "{how}(key {key}) -> None"),
                }
            }
            Ev::Fulfil {
                promise,
                key,
                value,
                replaced,
            } => write!(
                f,
                "P{promise}.fulfill(#{value}) (key {key}) -> {}",
                Id(replaced)
            ),
            Ev::Abandon { promise, key, woke } => match woke {
                Some(n) => write!(f, "P{promise}.abandon() (key {key}) -> {n}"),
                None => write!(f, "drop P{promise} unfulfilled (key {key})"),
            },
            Ev::Woken { task } => write!(f, "    woke F{task}"),
            Ev::Settle => f.write_str("-- run to quiescence, then probe --"),
            Ev::Tamper { what, on } => write!(f, "[self-test] {what} {on}"),
        }
    }
}

/// The trace, one numbered step a line.
fn render(trace: &[Ev]) -> String {
    let mut s = format!("trace ({} steps):\n", trace.len());
    for (i, ev) in trace.iter().enumerate() {
        let _ = writeln!(s, "{i:5}  {ev}");
    }
    s
}

fn report(seed: u64, msg: &str, trace: &[Ev]) -> String {
    format!(
        "liveness scenario {seed} failed: {msg}\n\
         replay: LIVENESS_SEED={seed} cargo test --test liveness -- --nocapture\n{}",
        render(trace)
    )
}

// ===========================================================================
// The model and the statistics
// ===========================================================================

#[derive(Clone, Copy, Debug, Default)]
struct KeyModel {
    /// The id of the value the map must hold.
    value: Option<u64>,
    /// A promise of the key is alive.
    promised: bool,
    cancels: u32,
    abandons: u32,
}

/// Where a value went: for the error messages.
#[derive(Clone, Copy, Debug)]
enum Fate {
    InMap(usize),
    Taken(u32),
    Returned(&'static str),
}

/// What a first poll must return: the documented behaviour of a fresh
/// future, which looks at the key when it is first polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Value(u64),
    Closed,
    Promise,
    Pending,
}

impl Expect {
    fn matches(self, res: Res) -> bool {
        match (self, res) {
            (Expect::Value(a), Res::Value(b)) => a == b,
            (Expect::Closed, Res::Failed(WaitError::Closed)) => true,
            (Expect::Promise, Res::Promise(_)) => true,
            (Expect::Pending, Res::Pending) => true,
            _ => false,
        }
    }

    fn rule(self) -> String {
        match self {
            Expect::Value(v) => format!("resolves at once with the key's value #{v}"),
            Expect::Closed => {
                "of an absent key fails at once with Err(Closed) on a closed map".into()
            }
            Expect::Promise => "of an absent key that nobody produces gets the promise".into(),
            Expect::Pending => "of an absent key registers and waits (Pending)".into(),
        }
    }
}

/// Counts of the situations the scenarios reached, to show that they
/// exercise what they are meant to.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    scenarios: u64,
    polls: u64,
    spurious_polls: u64,
    new_wakers: u64,
    probes: u64,
    woken_take_drops: u64,
    hand_offs: u64,
    values_taken: u64,
    promises_from_gop: u64,
    abandoned: u64,
    cancelled: u64,
    closed: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.scenarios += o.scenarios;
        self.polls += o.polls;
        self.spurious_polls += o.spurious_polls;
        self.new_wakers += o.new_wakers;
        self.probes += o.probes;
        self.woken_take_drops += o.woken_take_drops;
        self.hand_offs += o.hand_offs;
        self.values_taken += o.values_taken;
        self.promises_from_gop += o.promises_from_gop;
        self.abandoned += o.abandoned;
        self.cancelled += o.cancelled;
        self.closed += o.closed;
    }
}

// ===========================================================================
// The scheduler
// ===========================================================================

struct Sim<'a, 't> {
    map: &'a Arc<Map>,
    keys: &'a [Tracked],
    /// Live value instances.
    values: &'a Arc<AtomicUsize>,
    rng: Rng,
    trace: &'t mut Vec<Ev>,
    tasks: Vec<Task<'a>>,
    promises: Vec<Held<'a>>,
    model: Vec<KeyModel>,
    /// Indexed by value id.
    fates: Vec<Fate>,
    closed: bool,
    next_task: u32,
    next_promise: u32,
    /// Check the wake-up rules after every step and at quiescence. The
    /// self-tests that show what the probe alone catches turn it off.
    wake_rules: bool,
    stats: Stats,
}

type Step = Result<(), String>;

impl<'a, 't> Sim<'a, 't> {
    fn new(
        map: &'a Arc<Map>,
        keys: &'a [Tracked],
        values: &'a Arc<AtomicUsize>,
        rng: Rng,
        trace: &'t mut Vec<Ev>,
    ) -> Self {
        Sim {
            map,
            keys,
            values,
            rng,
            trace,
            tasks: Vec::new(),
            promises: Vec::new(),
            model: vec![KeyModel::default(); keys.len()],
            fates: Vec::new(),
            closed: false,
            next_task: 0,
            next_promise: 0,
            wake_rules: true,
            stats: Stats::default(),
        }
    }

    fn index_of(&self, task: u32) -> usize {
        self.tasks
            .iter()
            .position(|t| t.id == task)
            .unwrap_or_else(|| panic!("F{task} is not alive"))
    }

    /// A random task that satisfies `pred`.
    fn pick_task(&mut self, pred: impl Fn(&Task<'a>) -> bool) -> Option<usize> {
        let n = self.tasks.iter().filter(|t| pred(t)).count();
        if n == 0 {
            return None;
        }
        let nth = self.rng.below(n);
        self.tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| pred(t))
            .nth(nth)
            .map(|(i, _)| i)
    }

    fn random_key(&mut self) -> usize {
        self.rng.below(self.keys.len())
    }

    fn new_value(&mut self, key: usize) -> Tracked {
        let id = self.fates.len() as u64;
        self.fates.push(Fate::InMap(key));
        Tracked::new(id, self.values)
    }

    /// Where value `id` went, for the error messages.
    fn fate_note(&self, id: u64) -> String {
        match self.fates.get(id as usize) {
            None => format!("value #{id} was never inserted"),
            Some(Fate::InMap(k)) => format!("value #{id} is in the map under key {k}"),
            Some(Fate::Taken(t)) => {
                format!("value #{id} was delivered already, to F{t}: delivered twice")
            }
            Some(Fate::Returned(how)) => {
                format!("value #{id} left the map already ({how}): delivered twice")
            }
        }
    }

    // ----- futures -----

    fn spawn(&mut self, kind: Kind, key: usize) -> u32 {
        let arc: &'a Arc<Map> = self.map;
        let map: &'a Map = arc;
        let keys: &'a [Tracked] = self.keys;
        let k = &keys[key];
        let fut = match kind {
            Kind::Get => Fut::Get(map.get(k)),
            Kind::Take => Fut::Take(map.take(k)),
            Kind::GetOwned => Fut::GetOwned(arc.get_owned(k)),
            Kind::TakeOwned => Fut::TakeOwned(arc.take_owned(k)),
            Kind::GetOrPromise => Fut::GetOrPromise(map.get_or_promise(k)),
        };
        let (watch, waker) = counting_waker();
        let id = self.next_task;
        self.next_task += 1;
        self.tasks.push(Task {
            id,
            kind,
            key,
            fut,
            watch,
            waker,
            previous: None,
            seen: 0,
            noted: false,
            registered: None,
            doomed: None,
            restarting: false,
            maybe_failed: false,
        });
        self.trace.push(Ev::Spawn {
            task: id,
            kind,
            key,
        });
        id
    }

    /// What a fresh future of `kind` on `key` must return on its first poll.
    fn fresh_expectation(&self, kind: Kind, key: usize) -> Expect {
        let m = self.model[key];
        if let Some(v) = m.value {
            Expect::Value(v)
        } else if self.closed {
            Expect::Closed
        } else if kind == Kind::GetOrPromise && !m.promised {
            Expect::Promise
        } else {
            Expect::Pending
        }
    }

    fn poll_task(&mut self, i: usize, how: How) -> Result<Res, String> {
        let expect = {
            let t = &self.tasks[i];
            t.registered
                .is_none()
                .then(|| self.fresh_expectation(t.kind, t.key))
        };
        self.stats.polls += 1;
        match how {
            How::Spurious => self.stats.spurious_polls += 1,
            How::NewWaker | How::OldWaker => self.stats.new_wakers += 1,
            _ => {}
        }
        let t = &mut self.tasks[i];
        if matches!(how, How::NewWaker | How::OldWaker) {
            let (watch, waker) = match t.previous.take() {
                Some(old) if how == How::OldWaker => old,
                _ => counting_waker(),
            };
            let old = (
                std::mem::replace(&mut t.watch, watch),
                std::mem::replace(&mut t.waker, waker),
            );
            t.previous = Some(old);
        }
        t.seen = t.watch.wakes();
        t.noted = false;
        t.restarting = false;
        let poll = if how == How::Unwatched {
            let (_unwatched, waker) = counting_waker();
            t.fut.poll(&waker)
        } else {
            t.fut.poll(&t.waker)
        };
        match poll {
            Poll::Pending => {
                let m = self.model[t.key];
                // A failed future resolves on its next poll: this one still
                // waits.
                t.maybe_failed = false;
                if t.registered.is_none() {
                    t.registered = Some(Since {
                        cancels: m.cancels,
                        abandons: m.abandons,
                    });
                }
                let (id, doomed, who) = (t.id, t.doomed, t.describe());
                self.trace.push(Ev::Poll {
                    task: id,
                    how,
                    res: Res::Pending,
                });
                if let Some(e) = expect.filter(|e| *e != Expect::Pending) {
                    return Err(format!(
                        "{who}: its first poll returned Pending, but a fresh future {}",
                        e.rule()
                    ));
                }
                if let Some(cause) = doomed {
                    return Err(format!(
                        "{who} returned Pending, but {cause} failed it while it waited on a \
                         key with no value: its next poll must fail"
                    ));
                }
                if self.closed {
                    return Err(format!(
                        "{who} returned Pending after close: on a closed map a wait on an \
                         absent key fails, and on a present key a get resolves Ok and a take \
                         resolves Ok or, if the value is not for it, Err(Closed)"
                    ));
                }
                Ok(Res::Pending)
            }
            Poll::Ready(out) => {
                let t = self.tasks.swap_remove(i);
                self.resolve(t, how, expect, out)
            }
        }
    }

    /// Checks what a future resolved with against the model, and applies it.
    fn resolve(
        &mut self,
        t: Task<'a>,
        how: How,
        expect: Option<Expect>,
        out: Outcome<'a>,
    ) -> Result<Res, String> {
        let k = t.key;
        let who = t.describe();
        let m = self.model[k];
        let res = match &out {
            Outcome::Value(v) => Res::Value(v.id),
            Outcome::Promise(_) => Res::Promise(self.next_promise),
            Outcome::Failed(e) => Res::Failed(*e),
        };
        self.trace.push(Ev::Poll {
            task: t.id,
            how,
            res,
        });
        if let Res::Value(id) = res {
            if m.value != Some(id) {
                return Err(format!(
                    "{who} resolved with value #{id}, but key {k} holds {}; {}",
                    Id(m.value),
                    self.fate_note(id)
                ));
            }
        }
        if let Some(e) = expect.filter(|e| !e.matches(res)) {
            return Err(format!(
                "{who}: its first poll returned {res}, but a fresh future {}",
                e.rule()
            ));
        }
        if let (Some(cause), false) = (t.doomed, matches!(res, Res::Failed(_))) {
            return Err(format!(
                "{who} resolved {res}, but {cause} failed it while it waited on a key with \
                 no value: it must fail"
            ));
        }
        match out {
            Outcome::Value(v) => {
                let id = v.id;
                drop(v);
                if t.kind.takes() {
                    self.model[k].value = None;
                    self.fates[id as usize] = Fate::Taken(t.id);
                    self.stats.values_taken += 1;
                }
            }
            Outcome::Promise(p) => {
                let why_not = if m.value.is_some() {
                    "the key has a value"
                } else if self.closed {
                    "the map is closed"
                } else if m.promised {
                    "another promise of the key is alive (one producer per key)"
                } else {
                    ""
                };
                if !why_not.is_empty() {
                    return Err(format!("{who} resolved with a promise, but {why_not}"));
                }
                self.model[k].promised = true;
                self.promises.push(Held {
                    id: self.next_promise,
                    key: k,
                    promise: p,
                });
                self.next_promise += 1;
                self.stats.promises_from_gop += 1;
            }
            Outcome::Failed(e) => {
                let since = t.registered;
                let why_not = match e {
                    WaitError::Closed if !self.closed => Some("the map is not closed".into()),
                    WaitError::Closed if !t.kind.takes() && m.value.is_some() => Some(format!(
                        "its key holds #{} (only a take that the value is not for fails \
                         with Closed on a present key)",
                        m.value.unwrap_or_default()
                    )),
                    WaitError::Closed => None,
                    WaitError::Cancelled if since.is_some_and(|s| m.cancels > s.cancels) => None,
                    WaitError::Cancelled => Some(format!(
                        "no cancel of key {k} came since it started waiting"
                    )),
                    WaitError::Abandoned if !t.kind.plain() => Some(
                        "get_or_promise callers start over when the promise is abandoned, \
                         they do not fail"
                            .into(),
                    ),
                    WaitError::Abandoned if since.is_some_and(|s| m.abandons > s.abandons) => None,
                    WaitError::Abandoned => Some(format!(
                        "no promise of key {k} was abandoned since it started waiting"
                    )),
                    _ => Some("no wait without a deadline ends with this error".into()),
                };
                if let Some(why_not) = why_not {
                    return Err(format!("{who} failed with Err({e:?}), but {why_not}"));
                }
                match e {
                    WaitError::Cancelled => self.stats.cancelled += 1,
                    WaitError::Abandoned => self.stats.abandoned += 1,
                    _ => self.stats.closed += 1,
                }
            }
        }
        Ok(res)
    }

    /// Adds to the trace the futures whose watched waker fired since their
    /// latest poll, once each.
    fn note_wakes(&mut self) {
        for t in &mut self.tasks {
            if !t.noted && t.registered.is_some() && t.fired() {
                t.noted = true;
                self.trace.push(Ev::Woken { task: t.id });
            }
        }
    }

    fn drop_task(&mut self, i: usize) -> Step {
        let t = &self.tasks[i];
        let (id, key, takes) = (t.id, t.key, t.kind.takes());
        let woken = t.registered.is_some() && t.fired();
        let woken_takes = |s: &Self| {
            s.tasks
                .iter()
                .filter(|o| o.id != id && o.key == key && o.kind.takes())
                .filter(|o| o.registered.is_some() && o.fired())
                .count()
        };
        let before = woken_takes(self);
        self.trace.push(Ev::Drop { task: id, woken });
        drop(self.tasks.swap_remove(i));
        self.note_wakes();
        if woken && takes {
            self.stats.woken_take_drops += 1;
            if woken_takes(self) > before {
                self.stats.hand_offs += 1;
            }
        }
        Ok(())
    }

    // ----- producers -----

    fn insert(&mut self, key: usize) -> Step {
        let v = self.new_value(key);
        let id = v.id;
        let replaced = self.map.insert(self.keys[key].clone(), v).map(|old| old.id);
        self.trace.push(Ev::Insert {
            key,
            value: id,
            replaced,
        });
        self.note_wakes();
        self.stored(key, id, replaced, "insert")
    }

    /// A value was stored (by `insert` or `fulfill`), which returned
    /// `replaced`.
    fn stored(&mut self, key: usize, id: u64, replaced: Option<u64>, by: &'static str) -> Step {
        let m = &mut self.model[key];
        if replaced != m.value {
            let held = m.value;
            return Err(format!(
                "{by} of key {key} returned {} as the value it replaced, but the key held {}{}",
                Id(replaced),
                Id(held),
                replaced.map_or(String::new(), |r| format!("; {}", self.fate_note(r)))
            ));
        }
        if let Some(old) = m.value.replace(id) {
            self.fates[old as usize] = Fate::Returned("replaced");
        }
        Ok(())
    }

    fn remove(&mut self, key: usize) -> Step {
        let removed = self.map.remove(&self.keys[key]).map(|v| v.id);
        self.trace.push(Ev::Remove { key, removed });
        let held = self.model[key].value;
        if removed != held {
            return Err(format!(
                "remove(key {key}) returned {}, but the key held {}{}",
                Id(removed),
                Id(held),
                removed.map_or(String::new(), |r| format!("; {}", self.fate_note(r)))
            ));
        }
        if let Some(v) = self.model[key].value.take() {
            self.fates[v as usize] = Fate::Returned("removed");
        }
        Ok(())
    }

    /// After a `cancel` (or, if `!cancel`, an abandoned promise) of `key`:
    /// marks the futures it failed and returns how many it must at least
    /// have woken, and how many futures wait on the key (the most it can
    /// have woken).
    ///
    /// With no value, none of the waiting futures would resolve `Ok` if
    /// polled now, so they all fail: `cancel` dooms every one, an abandoned
    /// promise dooms the plain ones and sends the `get_or_promise` callers
    /// back to start over. Futures an earlier failure reached are not
    /// waiting any more and are not counted. With a value, the gets and
    /// `get_or_promise` callers are left alone and so is the take the value
    /// is for; the other takes fail, but which take that is the docs leave
    /// open.
    fn fail_waiters(&mut self, key: usize, cancel: bool) -> (usize, usize) {
        let cause = if cancel {
            "cancel"
        } else {
            "an abandoned promise"
        };
        let has_value = self.model[key].value.is_some();
        let mut newly = 0;
        let mut waiting = 0;
        for t in &mut self.tasks {
            if t.key != key || t.registered.is_none() {
                continue;
            }
            waiting += 1;
            if has_value {
                t.maybe_failed |= t.kind.takes();
                continue;
            }
            if t.doomed.is_some() || t.restarting {
                continue;
            }
            if t.kind.plain() || cancel {
                t.doomed = Some(cause);
            } else {
                t.restarting = true;
            }
            if !t.maybe_failed {
                newly += 1;
            }
        }
        (newly, waiting)
    }

    fn cancel(&mut self, key: usize) -> Step {
        let n = self.map.cancel(&self.keys[key]);
        self.trace.push(Ev::Cancel { key, failed: n });
        self.note_wakes();
        self.model[key].cancels += 1;
        let (newly, waiting) = self.fail_waiters(key, true);
        if n < newly || n > waiting {
            return Err(format!(
                "cancel(key {key}) returned {n}: {waiting} futures wait on the key and \
                 {newly} of them were waiting with no value for them, so it fails \
                 between {newly} and {waiting}"
            ));
        }
        Ok(())
    }

    fn close(&mut self) -> Step {
        self.map.close();
        self.trace.push(Ev::Close);
        self.note_wakes();
        self.closed = true;
        Ok(())
    }

    fn promise(&mut self, key: usize, owned: bool) -> Step {
        let m = self.model[key];
        let expect = !self.closed && m.value.is_none() && !m.promised;
        let k = self.keys[key].clone();
        let got = if owned {
            self.map.promise_owned(k).map(AnyPromise::Owned)
        } else {
            let map: &'a Map = self.map;
            map.promise(k).map(AnyPromise::Borrowed)
        };
        let id = self.next_promise;
        self.trace.push(Ev::Promise {
            key,
            owned,
            got: got.is_some().then_some(id),
        });
        if got.is_some() != expect {
            return Err(format!(
                "promise(key {key}) returned {}, but the key {} a value, {} a promise and the \
                 map is {}closed",
                if got.is_some() { "Some" } else { "None" },
                if m.value.is_some() { "has" } else { "has no" },
                if m.promised { "has" } else { "has no" },
                if self.closed { "" } else { "not " }
            ));
        }
        if let Some(promise) = got {
            self.next_promise += 1;
            self.model[key].promised = true;
            self.promises.push(Held { id, key, promise });
        }
        Ok(())
    }

    fn fulfill(&mut self, j: usize) -> Step {
        let held = self.promises.swap_remove(j);
        let v = self.new_value(held.key);
        let id = v.id;
        let replaced = held.promise.fulfill(v).map(|old| old.id);
        self.trace.push(Ev::Fulfil {
            promise: held.id,
            key: held.key,
            value: id,
            replaced,
        });
        self.note_wakes();
        self.model[held.key].promised = false;
        self.stored(held.key, id, replaced, "fulfill")
    }

    /// Gives up a promise: with `abandon()`, or by dropping it.
    fn abandon(&mut self, j: usize, by_drop: bool) -> Step {
        let Held { id, key, promise } = self.promises.swap_remove(j);
        let woke = if by_drop {
            drop(promise);
            None
        } else {
            Some(promise.abandon())
        };
        self.trace.push(Ev::Abandon {
            promise: id,
            key,
            woke,
        });
        self.note_wakes();
        let m = &mut self.model[key];
        m.promised = false;
        m.abandons += 1;
        let has_value = m.value.is_some();
        let (newly, waiting) = self.fail_waiters(key, false);
        if woke.is_some_and(|n| n < newly || n > waiting) {
            let n = woke.unwrap_or_default();
            return Err(format!(
                "abandon() of key {key} returned {n}: {waiting} futures wait on the key and \
                 {newly} of them were waiting with no value for them, so it wakes between \
                 {newly} and {waiting}"
            ));
        }
        if self.wake_rules && !has_value {
            // The `get_or_promise` callers start over, which they learn only
            // by being polled.
            if let Some(t) = self.tasks.iter().find(|t| {
                t.key == key && t.kind == Kind::GetOrPromise && t.registered.is_some() && !t.fired()
            }) {
                return Err(format!(
                    "the promise of key {key} was abandoned, but {} still waits and its \
                     waker did not fire: it must start over",
                    t.describe()
                ));
            }
        }
        Ok(())
    }

    // ----- checks -----

    /// The wake-up rules. Between steps, while a key holds a value every
    /// waiting `get` of it must have been woken, and at least one waiting
    /// `take` (`insert` wakes the earliest, and a woken take dropped passes
    /// the wake-up on; a take can only start waiting while the key has no
    /// value). After `close` every waiting future must have been woken, and
    /// so must every future a `cancel` or an abandoned promise failed. At
    /// quiescence, where no waker has fired, this is the check that nothing
    /// is stuck.
    fn check_wakes(&self) -> Step {
        if !self.wake_rules {
            return Ok(());
        }
        for t in self.tasks.iter().filter(|t| t.registered.is_some()) {
            if t.fired() {
                continue;
            }
            let m = self.model[t.key];
            if let Some(cause) = t.doomed {
                return Err(format!(
                    "{} was failed by {cause}, but its waker did not fire: it never learns it",
                    t.describe()
                ));
            }
            if self.closed {
                return Err(format!(
                    "the map is closed, but {} waits and its waker did not fire",
                    t.describe()
                ));
            }
            if let (Some(v), false) = (m.value, t.kind.takes()) {
                return Err(format!(
                    "key {} holds #{v}, but {} waits and its waker did not fire (insert wakes \
                     every waiting get of the key)",
                    t.key,
                    t.describe()
                ));
            }
        }
        for (k, m) in self.model.iter().enumerate() {
            let Some(v) = m.value else { continue };
            let mut takes = self.tasks.iter().filter(|t| {
                t.key == k && t.kind.takes() && t.registered.is_some() && t.doomed.is_none()
            });
            if takes.clone().next().is_some() && !takes.any(Task::fired) {
                let waiting: Vec<String> = self
                    .tasks
                    .iter()
                    .filter(|t| t.key == k && t.kind.takes() && t.registered.is_some())
                    .map(|t| format!("F{}", t.id))
                    .collect();
                return Err(format!(
                    "no take woken: key {k} holds #{v} and takes {} wait on it, but none of \
                     their wakers fired (insert wakes the earliest waiting take; a woken take \
                     dropped before its poll passes the wake-up to the next)",
                    waiting.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Counts that must match the model at quiescence.
    fn check_counts(&self) -> Step {
        let stored = self.model.iter().filter(|m| m.value.is_some()).count();
        let len = self.map.len();
        if len != stored {
            // Name the key whose value is wrong, if a lookup shows it.
            for k in 0..self.keys.len() {
                self.peek(k)?;
            }
            return Err(format!("len() is {len}, but {stored} keys hold a value"));
        }
        let waiters = self.map.waiters();
        if waiters != self.tasks.len() {
            return Err(format!(
                "waiters() is {waiters} at quiescence, but {} futures wait",
                self.tasks.len()
            ));
        }
        let alive = live(self.values);
        if alive != stored {
            return Err(format!(
                "{alive} value instances are alive, but the map should hold {stored}: \
                 a value was duplicated or leaked"
            ));
        }
        Ok(())
    }

    fn peek(&self, key: usize) -> Step {
        let got = self.map.try_get(&self.keys[key]).map(|v| v.id);
        let held = self.model[key].value;
        if got != held {
            let note = match (got, held) {
                (Some(g), _) => self.fate_note(g),
                (None, Some(h)) => format!("value #{h} was lost"),
                (None, None) => unreachable!("equal"),
            };
            return Err(format!(
                "try_get(key {key}) returned {}, but the key should hold {}: {note}",
                Id(got),
                Id(held),
            ));
        }
        let has = self.map.contains_key(&self.keys[key]);
        if has != held.is_some() {
            return Err(format!(
                "contains_key(key {key}) is {has}, but it holds {}",
                Id(held)
            ));
        }
        Ok(())
    }

    /// Polls the runnable futures until none is, then probes every future
    /// still pending.
    fn settle(&mut self) -> Step {
        self.settle_and(true)
    }

    /// [`settle`](Self::settle), checking the map's internal invariants at
    /// quiescence if `invariants` (the wind-down checks them once, at its
    /// end: they walk the whole map and allocate).
    fn settle_and(&mut self, invariants: bool) -> Step {
        self.trace.push(Ev::Settle);
        let mut polls = 0;
        while let Some(i) = self.pick_task(Task::runnable) {
            self.poll_task(i, How::Woken)?;
            self.check_wakes()?;
            polls += 1;
            if polls > 1_000 {
                return Err("no quiescence after 1,000 polls: futures keep waking".into());
            }
        }
        if invariants {
            self.map.check_invariants();
        }
        for i in 0..self.tasks.len() {
            self.probe(i)?;
        }
        self.check_wakes()?;
        self.check_counts()
    }

    /// One poll of a pending future whose waker did not fire since its last
    /// poll. `Pending` is what it must return; `Ready` is a lost wake-up. It
    /// reports and stops: the probe took the result, so the scenario is no
    /// longer the one checked.
    fn probe(&mut self, i: usize) -> Step {
        self.stats.probes += 1;
        let t = &mut self.tasks[i];
        let (id, who) = (t.id, t.describe());
        match t.fut.poll(&t.waker) {
            Poll::Pending => {
                self.trace.push(Ev::Poll {
                    task: id,
                    how: How::Probe,
                    res: Res::Pending,
                });
                Ok(())
            }
            Poll::Ready(out) => {
                self.tasks.swap_remove(i);
                let res = match out {
                    Outcome::Value(v) => Res::Value(v.id),
                    Outcome::Promise(_) => Res::Promise(self.next_promise),
                    Outcome::Failed(e) => Res::Failed(e),
                };
                self.trace.push(Ev::Poll {
                    task: id,
                    how: How::Probe,
                    res,
                });
                Err(format!(
                    "lost wake-up: {who} was pending at quiescence and its waker had not fired \
                     since its last poll, yet a probe poll returned {res}: no executor would \
                     have polled it again"
                ))
            }
        }
    }

    /// Settles, then fulfils or abandons the promises and inserts values for
    /// the keys futures wait on, settling after each, until every future
    /// has finished; then compares the map with the model.
    fn finish(&mut self) -> Step {
        self.settle()?;
        let mut rounds = 0;
        while !self.tasks.is_empty() || !self.promises.is_empty() {
            rounds += 1;
            if rounds > 200 {
                return Err(format!(
                    "{} futures still wait after 200 rounds of inserts and fulfilled promises",
                    self.tasks.len()
                ));
            }
            if !self.promises.is_empty() {
                let j = self.rng.below(self.promises.len());
                if self.rng.one_in(4) {
                    let by_drop = self.rng.one_in(2);
                    self.abandon(j, by_drop)?;
                } else {
                    self.fulfill(j)?;
                }
            } else {
                let i = self.rng.below(self.tasks.len());
                self.insert(self.tasks[i].key)?;
            }
            self.check_wakes()?;
            self.settle_and(false)?;
        }
        self.map.check_invariants();
        if self.map.is_closed() != self.closed {
            return Err(format!("is_closed() is {}", self.map.is_closed()));
        }
        for k in 0..self.keys.len() {
            self.peek(k)?;
        }
        self.check_counts()
    }

    // ----- random steps -----

    fn random_steps(&mut self) -> Step {
        let steps = 10 + self.rng.below(31);
        let max_tasks = 2 + self.rng.below(5);
        let may_close = self.rng.one_in(6);
        for step in 0..steps {
            self.random_step(max_tasks, may_close)?;
            self.check_wakes()?;
            // Every few steps: it walks the whole map and allocates. Each
            // quiescence checks it too.
            if step % 8 == 7 {
                self.map.check_invariants();
            }
        }
        Ok(())
    }

    fn random_step(&mut self, max_tasks: usize, may_close: bool) -> Step {
        for _ in 0..16 {
            let mut r = self.rng.below(WEIGHT_SUM);
            let op = OPS
                .iter()
                .find(|(_, w)| {
                    let hit = r < *w;
                    r = r.saturating_sub(*w);
                    hit
                })
                .map_or(Op::Insert, |(op, _)| *op);
            if let Some(done) = self.try_op(op, max_tasks, may_close) {
                return done;
            }
        }
        let k = self.random_key();
        self.insert(k)
    }

    /// Runs `op` if it applies now.
    fn try_op(&mut self, op: Op, max_tasks: usize, may_close: bool) -> Option<Step> {
        Some(match op {
            Op::Spawn => {
                if self.tasks.len() >= max_tasks {
                    return None;
                }
                let kind = match self.rng.below(10) {
                    0 | 1 => Kind::Get,
                    2..=4 => Kind::Take,
                    5 => Kind::GetOwned,
                    6 | 7 => Kind::TakeOwned,
                    _ => Kind::GetOrPromise,
                };
                let key = self.random_key();
                self.spawn(kind, key);
                Ok(())
            }
            Op::RunWoken => {
                let i = self.pick_task(Task::runnable)?;
                self.poll_task(i, How::Woken).map(drop)
            }
            Op::Spurious => {
                let i = self.pick_task(|t| t.registered.is_some() && !t.fired())?;
                self.poll_task(i, How::Spurious).map(drop)
            }
            Op::NewWaker => {
                let i = self.pick_task(|t| t.registered.is_some())?;
                // Sometimes back to the waker before: the map must wake
                // whichever one the latest poll gave it.
                let how = if self.tasks[i].previous.is_some() && self.rng.one_in(3) {
                    How::OldWaker
                } else {
                    How::NewWaker
                };
                self.poll_task(i, how).map(drop)
            }
            Op::DropWoken => {
                let i = self.pick_task(|t| t.registered.is_some() && t.fired())?;
                self.drop_task(i)
            }
            Op::DropAny => {
                let i = self.pick_task(|_| true)?;
                self.drop_task(i)
            }
            Op::Insert => {
                let k = self.random_key();
                self.insert(k)
            }
            Op::Remove => {
                let k = self.random_key();
                self.remove(k)
            }
            Op::Cancel => {
                let k = self.random_key();
                self.cancel(k)
            }
            Op::Close => {
                if !may_close {
                    return None;
                }
                self.close()
            }
            Op::Promise => {
                let k = self.random_key();
                let owned = self.rng.one_in(2);
                self.promise(k, owned)
            }
            Op::Fulfil => {
                if self.promises.is_empty() {
                    return None;
                }
                let j = self.rng.below(self.promises.len());
                self.fulfill(j)
            }
            Op::Abandon => {
                if self.promises.is_empty() {
                    return None;
                }
                let j = self.rng.below(self.promises.len());
                let by_drop = self.rng.one_in(2);
                self.abandon(j, by_drop)
            }
            Op::Settle => self.settle(),
            Op::Peek => {
                let k = self.random_key();
                self.peek(k)
            }
        })
    }

    // ----- scripted steps, for the deterministic tests -----

    /// Polls a future as the scheduler would: `Woken` if its waker fired (or
    /// it was never polled), else spurious.
    fn poll(&mut self, task: u32) -> Result<Res, String> {
        let i = self.index_of(task);
        let how = if self.tasks[i].runnable() {
            How::Woken
        } else {
            How::Spurious
        };
        let res = self.poll_task(i, how)?;
        self.check_wakes()?;
        Ok(res)
    }

    fn poll_with(&mut self, task: u32, how: How) -> Result<Res, String> {
        let i = self.index_of(task);
        let res = self.poll_task(i, how)?;
        self.check_wakes()?;
        Ok(res)
    }

    fn woken(&self, task: u32) -> bool {
        self.tasks[self.index_of(task)].fired()
    }

    fn drop_id(&mut self, task: u32) -> Step {
        let i = self.index_of(task);
        self.drop_task(i)?;
        self.check_wakes()
    }

    fn promise_index(&self, promise: u32) -> usize {
        self.promises
            .iter()
            .position(|p| p.id == promise)
            .unwrap_or_else(|| panic!("P{promise} is not held"))
    }

    // ----- deliberate faults, for the self-tests -----

    /// The scheduler acts as if the future's waker had not fired: what a map
    /// that lost the wake-up would look like.
    fn forget_wake(&mut self, task: u32) {
        let i = self.index_of(task);
        let t = &mut self.tasks[i];
        t.seen = t.watch.wakes();
        self.trace.push(Ev::Tamper {
            what: "forget the wake-up of F",
            on: u64::from(task),
        });
    }

    /// The scheduler ignores the future's waker from now on: what a map that
    /// lost the next wake-up would look like, when that wake-up comes in the
    /// middle of a step.
    fn ignore_waker(&mut self, task: u32) {
        let i = self.index_of(task);
        self.tasks[i].seen = usize::MAX;
        self.trace.push(Ev::Tamper {
            what: "ignore from now on the waker of F",
            on: u64::from(task),
        });
    }

    /// Removes the key's value behind the model's back: a value the map lost.
    fn lose_value(&mut self, key: usize) {
        drop(self.map.remove(&self.keys[key]));
        self.trace.push(Ev::Tamper {
            what: "remove the value behind the model's back, key",
            on: key as u64,
        });
    }

    /// Stores a second instance of value `id` behind the model's back: a
    /// value the map duplicated.
    fn duplicate_value(&mut self, key: usize, id: u64) {
        let copy = Tracked::new(id, self.values);
        drop(self.map.insert(self.keys[key].clone(), copy));
        self.trace.push(Ev::Tamper {
            what: "store a copy of an earlier value behind the model's back, value #",
            on: id,
        });
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Spawn,
    RunWoken,
    Spurious,
    NewWaker,
    DropWoken,
    DropAny,
    Insert,
    Remove,
    Cancel,
    Close,
    Promise,
    Fulfil,
    Abandon,
    Settle,
    Peek,
}

/// How often each random step is drawn (a step that does not apply, such as
/// dropping a woken future when none is, is drawn again).
const OPS: [(Op, usize); 15] = [
    (Op::Spawn, 20),
    (Op::RunWoken, 22),
    (Op::Spurious, 5),
    (Op::NewWaker, 5),
    (Op::DropWoken, 8),
    (Op::DropAny, 3),
    (Op::Insert, 12),
    (Op::Remove, 4),
    (Op::Cancel, 3),
    (Op::Close, 2),
    (Op::Promise, 3),
    (Op::Fulfil, 5),
    (Op::Abandon, 4),
    (Op::Settle, 2),
    (Op::Peek, 2),
];

const WEIGHT_SUM: usize = {
    let mut sum = 0;
    let mut i = 0;
    while i < OPS.len() {
        sum += OPS[i].1;
        i += 1;
    }
    sum
};

// ===========================================================================
// Running scenarios
// ===========================================================================

/// Runs one scenario: a map with `keys` keys, `script` on it, then
/// [`Sim::finish`]; after dropping everything, no value or key may be alive.
/// A panic (such as a broken internal invariant) becomes an error.
fn scenario(
    seed: u64,
    keys: usize,
    wake_rules: bool,
    trace: &mut Vec<Ev>,
    stats: &mut Stats,
    script: impl FnOnce(&mut Sim<'_, '_>) -> Step,
) -> Step {
    trace.clear();
    let run = catch_unwind(AssertUnwindSafe(|| {
        let values = live_counter();
        let key_count = live_counter();
        let key_list: Vec<Tracked> = (0..keys as u64)
            .map(|k| Tracked::new(k, &key_count))
            .collect();
        let map = Arc::new(Map::with_hasher(FixedState::with_seed(seed)));
        {
            let mut sim = Sim::new(&map, &key_list, &values, Rng::new(seed), trace);
            sim.wake_rules = wake_rules;
            let result = script(&mut sim).and_then(|()| sim.finish());
            sim.stats.scenarios = 1;
            *stats += sim.stats;
            result?;
        }
        if Arc::strong_count(&map) != 1 {
            return Err("a finished future or promise still holds the map".into());
        }
        drop(map);
        let alive = live(&values);
        if alive != 0 {
            return Err(format!(
                "{alive} value instances are alive after the map and every future and \
                 promise were dropped: leaked"
            ));
        }
        drop(key_list);
        let alive = live(&key_count);
        if alive != 0 {
            return Err(format!("{alive} key instances leaked"));
        }
        Ok(())
    }));
    run.unwrap_or_else(|payload| Err(format!("panicked: {}", panic_message(payload))))
}

/// The number of keys of random scenario `seed`: mostly two or three.
fn random_keys(seed: u64) -> usize {
    [1, 2, 2, 3, 3][Rng::new(!seed).below(5)]
}

/// Runs random scenario `seed`; the error is the full report.
fn random_scenario(seed: u64, trace: &mut Vec<Ev>, stats: &mut Stats) -> Result<(), String> {
    scenario(seed, random_keys(seed), true, trace, stats, |sim| {
        sim.random_steps()
    })
    .map_err(|e| report(seed, &e, trace))
}

/// Runs seeds `0..n` on every core; the failure with the smallest seed, if
/// any.
fn run_many(n: u64) -> (Stats, Option<(u64, String)>) {
    let threads = if cfg!(miri) {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |p| p.get().min(8)) as u64
    };
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|first| {
                let stop = &stop;
                s.spawn(move || {
                    let mut trace = Vec::new();
                    let mut stats = Stats::default();
                    let mut seed = first;
                    while seed < n && !stop.load(Ordering::Relaxed) {
                        if let Err(report) = random_scenario(seed, &mut trace, &mut stats) {
                            stop.store(true, Ordering::Relaxed);
                            return (stats, Some((seed, report)));
                        }
                        seed += threads;
                    }
                    (stats, None)
                })
            })
            .collect();
        let mut total = Stats::default();
        let mut failure: Option<(u64, String)> = None;
        for w in workers {
            let (stats, failed) = w.join().expect("a worker thread panicked");
            total += stats;
            if let Some(f) = failed {
                if failure.as_ref().is_none_or(|g| f.0 < g.0) {
                    failure = Some(f);
                }
            }
        }
        (total, failure)
    })
}

fn env_u64(name: &str) -> Option<u64> {
    let s = std::env::var(name).ok()?;
    Some(
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {s:?}")),
    )
}

// ===========================================================================
// The random run
// ===========================================================================

#[test]
fn random_scenarios_lose_no_wake_up_and_no_value() {
    if let Some(seed) = env_u64("LIVENESS_SEED") {
        let mut trace = Vec::new();
        let result = random_scenario(seed, &mut trace, &mut Stats::default());
        match result {
            Ok(()) => eprintln!("liveness scenario {seed} passed\n{}", render(&trace)),
            Err(report) => panic!("{report}"),
        }
        return;
    }
    let default = if cfg!(miri) {
        MIRI_SCENARIOS
    } else {
        DEFAULT_SCENARIOS
    };
    let n = env_u64("LIVENESS_SCENARIOS").unwrap_or(default);
    let (stats, failure) = run_many(n);
    if let Some((_, report)) = failure {
        panic!("{report}");
    }
    eprintln!("liveness: {stats:?}");
    assert_eq!(stats.scenarios, n);
}

// The scenarios reach what they are meant to exercise: a checker whose
// scenarios never drop a woken take, never probe, or never close checks
// nothing there.
#[test]
#[cfg_attr(miri, ignore = "thousands of scenarios: too slow under miri")]
fn random_scenarios_reach_every_situation_they_check() {
    let (stats, failure) = run_many(3_000);
    if let Some((_, report)) = failure {
        panic!("{report}");
    }
    let checks = [
        ("spurious polls", stats.spurious_polls),
        ("polls with a new waker", stats.new_wakers),
        ("probe polls", stats.probes),
        (
            "woken takes dropped before their poll",
            stats.woken_take_drops,
        ),
        ("hand-offs to the next take", stats.hand_offs),
        ("values taken", stats.values_taken),
        (
            "promises handed out by get_or_promise",
            stats.promises_from_gop,
        ),
        ("futures failed by an abandoned promise", stats.abandoned),
        ("futures failed by cancel", stats.cancelled),
        ("futures failed by close", stats.closed),
    ];
    for (what, count) in checks {
        assert!(
            count >= 20,
            "only {count} {what} in 3,000 scenarios: {stats:?}"
        );
    }
}

// A seed names one scenario: running it twice gives the same trace, so a
// reported seed replays the failure.
#[test]
fn a_seed_replays_the_same_scenario() {
    for seed in [3, 1_234, 99_999] {
        let mut first = Vec::new();
        let mut second = Vec::new();
        random_scenario(seed, &mut first, &mut Stats::default()).unwrap_or_else(|r| panic!("{r}"));
        random_scenario(seed, &mut second, &mut Stats::default()).unwrap_or_else(|r| panic!("{r}"));
        assert!(first.len() > 10, "scenario {seed} did almost nothing");
        assert_eq!(first, second, "scenario {seed} is not deterministic");
    }
}

// ===========================================================================
// Hand-written scenarios: what the checker accepts
// ===========================================================================

/// Runs `script` as a scenario with `keys` keys and a fixed seed; the error
/// is the full report.
fn scripted(keys: usize, wake_rules: bool, script: impl FnOnce(&mut Sim<'_, '_>) -> Step) -> Step {
    let mut trace = Vec::new();
    scenario(
        1,
        keys,
        wake_rules,
        &mut trace,
        &mut Stats::default(),
        script,
    )
    .map_err(|e| report(1, &e, &trace))
}

/// Fails the script (rather than panicking) so the report has the trace.
fn ensure(ok: bool, what: &str) -> Step {
    if ok { Ok(()) } else { Err(what.into()) }
}

// Two takes wait; an insert wakes the first; the first is dropped before it
// polls. The wake-up must pass to the second, which gets the value.
#[test]
fn a_woken_take_dropped_before_its_poll_hands_the_wake_up_on() {
    scripted(1, true, |sim| {
        let first = sim.spawn(Kind::Take, 0);
        let second = sim.spawn(Kind::TakeOwned, 0);
        ensure(sim.poll(first)? == Res::Pending, "the first take waits")?;
        ensure(sim.poll(second)? == Res::Pending, "the second take waits")?;
        sim.insert(0)?;
        ensure(sim.woken(first), "insert wakes the earliest take")?;
        ensure(!sim.woken(second), "insert wakes one take only")?;
        sim.drop_id(first)?;
        ensure(sim.woken(second), "the wake-up passed to the second take")?;
        ensure(
            sim.poll(second)? == Res::Value(0),
            "the second take gets the value",
        )
    })
    .unwrap_or_else(|r| panic!("{r}"));
}

// A chain of hand-offs: each woken take dropped before its poll passes the
// wake-up on, and the last one gets the value.
#[test]
fn hand_offs_chain_through_several_dropped_takes() {
    scripted(2, true, |sim| {
        let takes = [
            sim.spawn(Kind::TakeOwned, 1),
            sim.spawn(Kind::Take, 1),
            sim.spawn(Kind::Take, 1),
        ];
        for t in takes {
            sim.poll(t)?;
        }
        sim.insert(1)?;
        sim.drop_id(takes[0])?;
        ensure(sim.woken(takes[1]), "the first hand-off")?;
        sim.drop_id(takes[1])?;
        ensure(sim.woken(takes[2]), "the second hand-off")?;
        ensure(
            sim.poll(takes[2])? == Res::Value(0),
            "the last take gets it",
        )
    })
    .unwrap_or_else(|r| panic!("{r}"));
}

// After a poll with a new waker, insert wakes the new one; after switching
// back to the first waker, the first one.
#[test]
fn insert_wakes_the_waker_of_the_latest_poll() {
    scripted(1, true, |sim| {
        let get = sim.spawn(Kind::Get, 0);
        let take = sim.spawn(Kind::TakeOwned, 0);
        sim.poll(get)?;
        sim.poll(take)?;
        ensure(
            sim.poll_with(get, How::NewWaker)? == Res::Pending,
            "still waits",
        )?;
        ensure(
            sim.poll_with(take, How::NewWaker)? == Res::Pending,
            "still waits",
        )?;
        ensure(
            sim.poll_with(take, How::OldWaker)? == Res::Pending,
            "still waits",
        )?;
        sim.insert(0)?;
        ensure(sim.woken(get), "the get's new waker fired")?;
        ensure(sim.woken(take), "the take's first waker fired")?;
        ensure(sim.poll(get)? == Res::Value(0), "the get resolves")?;
        ensure(sim.poll(take)? == Res::Value(0), "the take resolves")
    })
    .unwrap_or_else(|r| panic!("{r}"));
}

// An abandoned promise fails the plain waiters and hands the work to a
// waiting get_or_promise caller, which is woken to start over.
#[test]
fn an_abandoned_promise_hands_the_work_to_a_waiting_caller() {
    scripted(1, true, |sim| {
        let producer = sim.spawn(Kind::GetOrPromise, 0);
        let Res::Promise(p) = sim.poll(producer)? else {
            return Err("the first caller of an absent key gets the promise".into());
        };
        let caller = sim.spawn(Kind::GetOrPromise, 0);
        let get = sim.spawn(Kind::Get, 0);
        ensure(sim.poll(caller)? == Res::Pending, "the second caller waits")?;
        ensure(sim.poll(get)? == Res::Pending, "the get waits")?;
        let j = sim.promise_index(p);
        sim.abandon(j, true)?;
        ensure(sim.woken(caller) && sim.woken(get), "both are woken")?;
        ensure(
            sim.poll(get)? == Res::Failed(WaitError::Abandoned),
            "the get fails",
        )?;
        ensure(
            matches!(sim.poll(caller)?, Res::Promise(_)),
            "the caller inherits the work",
        )
    })
    .unwrap_or_else(|r| panic!("{r}"));
}

// ===========================================================================
// Self-tests: the checker catches what it should
// ===========================================================================
//
// The map cannot be broken from here, so these break the scheduler's view
// of it instead: each reproduces exactly what the checker would see if the
// map had the bug named, and asserts that the checker reports it.

fn expect_failure(result: Step, needle: &str) {
    match result {
        Ok(()) => panic!("the checker accepted a scenario with a fault ({needle})"),
        Err(report) => assert!(
            report.contains(needle),
            "the checker failed, but not with {needle:?}:\n{report}"
        ),
    }
}

// A take whose wake-up is lost: after quiescence it is pending, and the probe
// finds it ready. With the wake-up rules off, only the probe can catch it.
#[test]
fn the_probe_reports_a_lost_wake_up() {
    let result = scripted(1, false, |sim| {
        let take = sim.spawn(Kind::Take, 0);
        sim.poll(take)?;
        sim.insert(0)?;
        sim.forget_wake(take);
        sim.settle()
    });
    expect_failure(
        result,
        "lost wake-up: F0 (take of key 0) was pending at quiescence",
    );
}

// The hand-off scenario with the hand-off lost: the second take is never
// woken, and the probe finds it ready.
#[test]
fn the_probe_reports_a_lost_hand_off() {
    let result = scripted(1, false, |sim| {
        let first = sim.spawn(Kind::Take, 0);
        let second = sim.spawn(Kind::Take, 0);
        sim.poll(first)?;
        sim.poll(second)?;
        sim.insert(0)?;
        sim.drop_id(first)?;
        sim.forget_wake(second);
        sim.settle()
    });
    expect_failure(result, "lost wake-up: F1 (take of key 0)");
}

// The same with the wake-up rules on: they report the lost hand-off at the
// step that lost it, before any quiescence.
#[test]
fn the_wake_up_rules_report_a_lost_hand_off_at_once() {
    let result = scripted(1, true, |sim| {
        let first = sim.spawn(Kind::Take, 0);
        let second = sim.spawn(Kind::Take, 0);
        sim.poll(first)?;
        sim.poll(second)?;
        sim.insert(0)?;
        sim.drop_id(first)?;
        sim.forget_wake(second);
        sim.check_wakes()
    });
    expect_failure(
        result,
        "no take woken: key 0 holds #0 and takes F1 wait on it",
    );
}

// A lost wake-up of a get, and of a get_or_promise caller whose producer
// abandoned: reported by the rules.
#[test]
fn the_wake_up_rules_report_lost_wake_ups_of_gets() {
    let result = scripted(1, true, |sim| {
        let get = sim.spawn(Kind::GetOwned, 0);
        sim.poll(get)?;
        sim.insert(0)?;
        sim.forget_wake(get);
        sim.check_wakes()
    });
    expect_failure(result, "key 0 holds #0, but F0 (get_owned of key 0) waits");

    let result = scripted(1, true, |sim| {
        let producer = sim.spawn(Kind::GetOrPromise, 0);
        let Res::Promise(p) = sim.poll(producer)? else {
            return Err("no promise".into());
        };
        let caller = sim.spawn(Kind::GetOrPromise, 0);
        sim.poll(caller)?;
        sim.ignore_waker(caller);
        sim.abandon(sim.promise_index(p), false)
    });
    expect_failure(
        result,
        "but F1 (get_or_promise of key 0) still waits and its waker did not fire",
    );
}

// A scheduler that watches the wrong waker (the one before the latest poll)
// looks exactly like a map that wakes a stale waker: reported.
#[test]
fn only_the_waker_of_the_latest_poll_counts() {
    let result = scripted(1, false, |sim| {
        let get = sim.spawn(Kind::Get, 0);
        sim.poll(get)?;
        sim.poll_with(get, How::Unwatched)?;
        sim.insert(0)?;
        sim.settle()
    });
    expect_failure(result, "lost wake-up: F0 (get of key 0)");
}

// A value the map loses is reported when the model's value is looked for.
#[test]
fn the_accounting_reports_a_lost_value() {
    let result = scripted(1, true, |sim| {
        sim.insert(0)?;
        sim.lose_value(0);
        Ok(())
    });
    expect_failure(
        result,
        "try_get(key 0) returned none, but the key should hold #0: value #0 was lost",
    );
}

// A value delivered twice is reported where the second copy is delivered.
#[test]
fn the_accounting_reports_a_value_delivered_twice() {
    let result = scripted(1, true, |sim| {
        sim.insert(0)?;
        let first = sim.spawn(Kind::Take, 0);
        ensure(sim.poll(first)? == Res::Value(0), "the take gets #0")?;
        sim.duplicate_value(0, 0);
        let second = sim.spawn(Kind::TakeOwned, 0);
        sim.poll(second)?;
        Ok(())
    });
    expect_failure(
        result,
        "resolved with value #0, but key 0 holds none; value #0 was delivered already, to F0",
    );
}

// A value instance that outlives the map is reported as a leak.
#[test]
fn the_accounting_reports_a_leaked_value() {
    let mut kept = None;
    let result = scripted(1, true, |sim| {
        sim.insert(0)?;
        kept = sim.map.try_get(&sim.keys[0]);
        Ok(())
    });
    expect_failure(result, "value instances are alive");
    assert_eq!(kept.map(|v| v.id), Some(0));
}
