//! One scenario, every kind of executor: tokio's multi-thread runtime,
//! async-executor on two threads, `futures::executor::block_on` and
//! `ThreadPool`, pollster, embassy-executor on the host, and a hand-written
//! single-threaded executor. The library promises to work under any of them
//! (or none); this file holds it to that.
//!
//! The scenario: a producer inserts every key once, in shuffled order;
//! consumers await each key twice (two consumers per key) with `get` or
//! `take`, borrowed or owned futures, some racing a `cancel` of their key,
//! some dropping a wait midway and waiting again; some keys also get an
//! owned future spawned as a task of its own. At the end every `get` saw its
//! value, every taken value was taken exactly once over all consumers, and
//! no waiter is left.
//!
//! The scenario is written once, against [`Spawn`]; each test only says how
//! to spawn a task and how to drive the future that checks the results.

mod common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use awaitmap::{AwaitMap, WaitError};
use common::{XorShift, no_hang_or};
use futures::channel::oneshot;
use futures::future::{join, join_all};

type Map = AwaitMap<u64, u64>;

/// 1,000 keys and 50 consumers; 100 and 10 under miri, which interprets
/// every step of every executor.
const KEYS: u64 = if cfg!(miri) { 60 } else { 1_000 };
const CONSUMERS: u64 = if cfg!(miri) { 6 } else { 50 };

/// Odd keys are taken, even keys are read with `get`.
fn is_take(k: u64) -> bool {
    k % 2 == 1
}

const GET_KEYS: usize = KEYS.div_ceil(2) as usize;

fn value_of(k: u64) -> u64 {
    k * 1_000 + 7
}

/// How one consumer waits for one key.
#[derive(Clone, Copy, Debug)]
enum How {
    /// `map.get(&k)` / `map.take(&k)`, awaited.
    Borrowed,
    /// `map.get_owned(&k)` / `map.take_owned(&k)`, awaited.
    Owned,
    /// Polls its wait once, yields, cancels the key, then awaits the wait:
    /// the producer's insert and the cancel race for it.
    CancelRace,
    /// Polls an owned wait once, yields twice, drops it, then waits again.
    DropRewait,
}

/// The two consumers of key `k` (always distinct) and how each waits. Keys
/// with `k % 5 == 0` are the only ones cancelled and keys with `k % 5 == 1`
/// the only ones whose waits are dropped midway, so on a cancelled key every
/// future is awaited to its end and every cancellation is seen.
fn consumers_of(k: u64) -> [(u64, How); 2] {
    let first = k % CONSUMERS;
    let second = (first + 1 + (k / CONSUMERS) % (CONSUMERS - 1)) % CONSUMERS;
    let (a, b) = match k % 5 {
        0 => (How::CancelRace, How::Borrowed),
        1 => (How::DropRewait, How::Owned),
        2 => (How::Borrowed, How::Owned),
        _ => (How::Owned, How::Borrowed),
    };
    [(first, a), (second, b)]
}

/// Keys that also get a bare owned future spawned as a task of its own.
fn has_bare_task(k: u64) -> bool {
    k % 5 == 2
}

/// How many `get`s the scenario makes in all: the producer closes the map
/// only after all of them resolved.
fn total_gets() -> usize {
    (0..KEYS)
        .filter(|&k| !is_take(k))
        .map(|k| 2 + usize::from(has_bare_task(k)))
        .sum()
}

/// Gives the executor a turn: wakes itself and returns `Pending` once.
fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

/// Polls `fut` once, in the current task, and says what it returned.
fn poll_now<F: Future + Unpin>(fut: &mut F) -> impl Future<Output = Poll<F::Output>> + '_ {
    poll_fn(move |cx| Poll::Ready(Pin::new(&mut *fut).poll(cx)))
}

/// What one wait ended with.
#[derive(Debug)]
struct Outcome {
    key: u64,
    take: bool,
    result: Result<u64, WaitError>,
    /// The sum of what this wait's `cancel` calls returned.
    cancels_made: usize,
    /// How many times this wait saw `Err(Cancelled)` (and waited again).
    cancels_seen: usize,
}

/// A `CancelRace` attempt: returns the wait's result and what `cancel`
/// returned.
async fn race_cancel<F>(map: &Map, k: u64, mut wait: F) -> (Result<u64, WaitError>, usize)
where
    F: Future<Output = Result<u64, WaitError>> + Unpin,
{
    if let Poll::Ready(result) = poll_now(&mut wait).await {
        return (result, 0);
    }
    // The producer may insert `k` during this turn.
    yield_now().await;
    let cancelled = map.cancel(&k);
    (wait.await, cancelled)
}

/// A `DropRewait` attempt: `None` if the wait was dropped before it resolved
/// (a woken `take` dropped here passes its turn on to the next one).
async fn drop_midway<F: Future + Unpin>(mut wait: F) -> Option<F::Output> {
    if let Poll::Ready(result) = poll_now(&mut wait).await {
        return Some(result);
    }
    yield_now().await;
    yield_now().await;
    None
}

/// One consumer's wait for `k`, retried after `Err(Cancelled)` (a
/// cancellation is not sticky, guarantee 8). Only the first attempt races a
/// cancel or drops midway; later ones simply wait.
async fn wait_for(map: &Arc<Map>, k: u64, how: How, gets_left: &AtomicUsize) -> Outcome {
    let take = is_take(k);
    let mut out = Outcome {
        key: k,
        take,
        result: Err(WaitError::Closed),
        cancels_made: 0,
        cancels_seen: 0,
    };
    let mut how = how;
    out.result = loop {
        let result = match how {
            How::Borrowed if take => map.take(&k).await,
            How::Borrowed => map.get(&k).await,
            How::Owned if take => map.take_owned(&k).await,
            How::Owned => map.get_owned(&k).await,
            How::CancelRace => {
                let (result, cancelled) = if take {
                    race_cancel(map, k, map.take(&k)).await
                } else {
                    race_cancel(map, k, map.get(&k)).await
                };
                out.cancels_made += cancelled;
                result
            }
            How::DropRewait => {
                let result = if take {
                    drop_midway(map.take_owned(&k)).await
                } else {
                    drop_midway(map.get_owned(&k)).await
                };
                match result {
                    Some(result) => result,
                    None => {
                        how = How::Owned;
                        continue;
                    }
                }
            }
        };
        how = How::Borrowed;
        match result {
            Err(WaitError::Cancelled) => out.cancels_seen += 1,
            other => break other,
        }
    };
    if !take {
        gets_left.fetch_sub(1, SeqCst);
    }
    out
}

/// Consumer `me`: waits for all its keys at once, in its own shuffled order.
/// Waiting for them one after another could deadlock: a take that lost its
/// key's race waits until the map closes, which happens only after every
/// key was taken.
async fn consumer(
    map: Arc<Map>,
    me: u64,
    started: Arc<AtomicUsize>,
    gets_left: Arc<AtomicUsize>,
) -> Vec<Outcome> {
    let mut mine: Vec<(u64, How)> = (0..KEYS)
        .flat_map(|k| consumers_of(k).map(move |(c, how)| (k, c, how)))
        .filter(|&(_, c, _)| c == me)
        .map(|(k, _, how)| (k, how))
        .collect();
    XorShift::new(me + 1).shuffle(&mut mine);
    let waits = mine
        .into_iter()
        .map(|(k, how)| wait_for(&map, k, how, &gets_left));
    let mut all = pin!(join_all(waits));
    // The first poll registers every wait that must wait; only then does
    // this consumer count as started.
    let first = poll_now(&mut all.as_mut()).await;
    started.fetch_add(1, SeqCst);
    match first {
        Poll::Ready(outcomes) => outcomes,
        Poll::Pending => all.await,
    }
}

/// Inserts every key once in shuffled order, yielding every 8 inserts, then
/// closes the map.
async fn producer(map: Arc<Map>, started: Arc<AtomicUsize>, gets_left: Arc<AtomicUsize>) {
    while started.load(SeqCst) < CONSUMERS as usize {
        yield_now().await;
    }
    let mut order: Vec<u64> = (0..KEYS).collect();
    XorShift::new(0x5EED).shuffle(&mut order);
    for (i, &k) in order.iter().enumerate() {
        assert_eq!(map.insert(k, value_of(k)), None, "key {k} is inserted once");
        if i % 8 == 7 {
            yield_now().await;
        }
    }
    // Close only once every get has resolved and every taken key is gone:
    // then `close` cannot stand in for a lost wake-up. It only releases the
    // takes that lost their key to another take (they resolve `Closed`).
    while gets_left.load(SeqCst) > 0 || map.len() > GET_KEYS {
        yield_now().await;
    }
    map.close();
}

/// A task as every executor here takes it.
type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// How to start a task on an executor; the one thing each test supplies.
trait Spawn {
    fn spawn_task(&self, task: Task);
}

/// Spawns `fut` and returns a receiver for its output (dropped, so the
/// receiver fails, if the task panics or is dropped).
fn spawn<T, F>(spawner: &impl Spawn, fut: F) -> oneshot::Receiver<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    spawner.spawn_task(Box::pin(async move {
        let _ = tx.send(fut.await);
    }));
    rx
}

/// Spawns the consumers, the bare owned futures and the producer, and
/// returns the future that awaits them all and checks the results. The
/// executor under test must drive that future to its end.
///
/// The future does not borrow `spawner` (`use<S>`), so the spawner can
/// spawn more, or be consumed, while it runs.
fn scenario<S: Spawn + 'static>(spawner: &S) -> impl Future<Output = ()> + Send + use<S> {
    let map = Arc::new(Map::new());
    let started = Arc::new(AtomicUsize::new(0));
    let gets_left = Arc::new(AtomicUsize::new(total_gets()));
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|me| {
            let task = consumer(
                Arc::clone(&map),
                me,
                Arc::clone(&started),
                Arc::clone(&gets_left),
            );
            spawn(spawner, task)
        })
        .collect();
    // Owned futures are `'static`: each is made here and moved into a task
    // of its own, without the map.
    let bare: Vec<_> = (0..KEYS)
        .filter(|&k| has_bare_task(k))
        .map(|k| {
            let gets_left = Arc::clone(&gets_left);
            if is_take(k) {
                let wait = map.take_owned(&k);
                spawn(spawner, async move { (k, wait.await) })
            } else {
                let wait = map.get_owned(&k);
                spawn(spawner, async move {
                    let result = wait.await;
                    gets_left.fetch_sub(1, SeqCst);
                    (k, result)
                })
            }
        })
        .collect();
    let produced = spawn(spawner, producer(Arc::clone(&map), started, gets_left));
    async move {
        const DIED: &str = "a task ended without reporting (did it panic?)";
        let mut outcomes = Vec::new();
        for rx in consumers {
            outcomes.extend(rx.await.expect(DIED));
        }
        for rx in bare {
            let (key, result) = rx.await.expect(DIED);
            let take = is_take(key);
            outcomes.push(Outcome {
                key,
                take,
                result,
                cancels_made: 0,
                cancels_seen: 0,
            });
        }
        produced.await.expect(DIED);
        check(&map, &outcomes);
    }
}

/// Every get saw its value; every taken value was taken exactly once and
/// the other takes of its key saw `Closed`; every cancellation was seen; no
/// waiter is left; the map holds exactly the values that were not taken.
fn check(map: &Map, outcomes: &[Outcome]) {
    let bare = (0..KEYS).filter(|&k| has_bare_task(k)).count();
    assert_eq!(
        outcomes.len(),
        2 * KEYS as usize + bare,
        "one outcome per wait"
    );
    let mut taken = vec![0usize; KEYS as usize];
    for o in outcomes {
        match (o.take, o.result) {
            (false, result) => assert_eq!(result, Ok(value_of(o.key)), "get of key {}", o.key),
            (true, Ok(v)) => {
                assert_eq!(v, value_of(o.key), "take of key {}", o.key);
                taken[o.key as usize] += 1;
            }
            (true, Err(WaitError::Closed)) => {}
            (true, other) => panic!("take of key {}: {other:?}", o.key),
        }
    }
    for k in (0..KEYS).filter(|&k| is_take(k)) {
        assert_eq!(taken[k as usize], 1, "key {k}: times its value was taken");
    }
    let made: usize = outcomes.iter().map(|o| o.cancels_made).sum();
    let seen: usize = outcomes.iter().map(|o| o.cancels_seen).sum();
    assert_eq!(
        made, seen,
        "every future `cancel` counted resolved `Cancelled`, once"
    );
    assert!(seen > 0, "the scenario never cancelled a waiting future");
    assert_eq!(map.waiters(), 0);
    assert!(map.is_closed());
    assert_eq!(map.len(), GET_KEYS);
    for k in 0..KEYS {
        let expected = (!is_take(k)).then(|| value_of(k));
        assert_eq!(map.try_get(&k), expected, "key {k} at the end");
    }
}

// ---------------------------------------------------------------------
// The executors.

impl Spawn for tokio::runtime::Handle {
    fn spawn_task(&self, task: Task) {
        drop(self.spawn(task));
    }
}

impl Spawn for async_executor::Executor<'static> {
    fn spawn_task(&self, task: Task) {
        self.spawn(task).detach();
    }
}

impl Spawn for futures::executor::ThreadPool {
    fn spawn_task(&self, task: Task) {
        self.spawn_ok(task);
    }
}

impl Spawn for embassy_executor::Spawner {
    fn spawn_task(&self, task: Task) {
        self.spawn(embassy_task(task).expect("the embassy task pool has room"));
    }
}

/// Embassy tasks live in a static pool and cannot be generic: this one runs
/// any boxed task. 256 slots: 200 bare owned futures, 50 consumers, the
/// producer and the check.
#[embassy_executor::task(pool_size = 256)]
async fn embassy_task(task: Task) {
    task.await;
}

/// For executors that drive one future (`block_on`, pollster): "spawning"
/// collects the tasks, which then run joined with the check.
#[derive(Default)]
struct Collect(RefCell<Vec<Task>>);

impl Spawn for Collect {
    fn spawn_task(&self, task: Task) {
        self.0.borrow_mut().push(task);
    }
}

impl Collect {
    /// The scenario's tasks and its check, as one future.
    fn scenario() -> impl Future<Output = ()> {
        let tasks = Collect::default();
        let check = scenario(&tasks);
        async move {
            join(join_all(tasks.0.into_inner()), check).await;
        }
    }
}

/// A single-threaded executor: boxed tasks in a list, a queue of the indices
/// of tasks to poll, a waker per task that queues its index, and a loop that
/// parks the thread when the queue is empty. Tasks are spawned before `run`.
struct MiniExecutor {
    tasks: RefCell<Vec<Option<Task>>>,
    queue: Arc<ReadyQueue>,
}

struct ReadyQueue {
    ready: Mutex<VecDeque<usize>>,
    runner: Thread,
}

struct TaskWaker {
    index: usize,
    queue: Arc<ReadyQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.queue.ready.lock().unwrap().push_back(self.index);
        self.queue.runner.unpark();
    }
}

impl MiniExecutor {
    /// An executor that runs on the calling thread.
    fn on_this_thread() -> Self {
        let queue = ReadyQueue {
            ready: Mutex::new(VecDeque::new()),
            runner: thread::current(),
        };
        MiniExecutor {
            tasks: RefCell::new(Vec::new()),
            queue: Arc::new(queue),
        }
    }

    /// Runs until every task has finished.
    fn run(self) {
        let mut tasks = self.tasks.into_inner();
        let wakers: Vec<Waker> = (0..tasks.len())
            .map(|index| {
                let queue = Arc::clone(&self.queue);
                Waker::from(Arc::new(TaskWaker { index, queue }))
            })
            .collect();
        let mut unfinished = tasks.len();
        while unfinished > 0 {
            let next = self.queue.ready.lock().unwrap().pop_front();
            let Some(index) = next else {
                // An `unpark` since the queue was read makes this return.
                thread::park();
                continue;
            };
            // A task may be queued again after it finished.
            let Some(task) = tasks[index].as_mut() else {
                continue;
            };
            let mut cx = Context::from_waker(&wakers[index]);
            if task.as_mut().poll(&mut cx).is_ready() {
                tasks[index] = None;
                unfinished -= 1;
            }
        }
    }
}

impl Spawn for MiniExecutor {
    fn spawn_task(&self, task: Task) {
        let mut tasks = self.tasks.borrow_mut();
        self.queue.ready.lock().unwrap().push_back(tasks.len());
        tasks.push(Some(task));
    }
}

const HUNG: &str = "a wake-up was lost (or the executor never ran a task)";

// ---------------------------------------------------------------------
// The tests. Each checks guarantees 1 (store, then wake), 2, 5 and 6 (a
// dropped take passes its turn on), 8 (cancel, not sticky) and 9 (close)
// under one executor.

// Guarantees 1, 2, 5, 6, 8, 9 under tokio's multi-thread runtime (2 workers), every task spawned.
#[test]
fn tokio_multi_thread_delivers_every_value_once() {
    no_hang_or("tokio", HUNG, || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("build a tokio runtime");
        let check = scenario(rt.handle());
        rt.block_on(check);
    });
}

// Guarantees 1, 2, 5, 6, 8, 9 under async-executor, run by two threads.
#[test]
fn async_executor_on_two_threads_delivers_every_value_once() {
    no_hang_or("async-executor", HUNG, || {
        let ex = Arc::new(async_executor::Executor::new());
        let check = scenario(&*ex);
        let (stop, stopped) = oneshot::channel::<()>();
        let helper = thread::spawn({
            let ex = Arc::clone(&ex);
            move || futures::executor::block_on(ex.run(stopped))
        });
        futures::executor::block_on(ex.run(check));
        drop(stop);
        let _ = helper.join().expect("the helper thread ran its tasks");
    });
}

// Guarantees 1, 2, 5, 6, 8, 9 under `futures::executor::block_on`, all tasks joined in one future.
#[test]
fn futures_block_on_delivers_every_value_once() {
    no_hang_or("futures block_on", HUNG, || {
        futures::executor::block_on(Collect::scenario());
    });
}

// Guarantees 1, 2, 5, 6, 8, 9 under `futures::executor::ThreadPool` (2 threads), checked from a `block_on`.
#[test]
fn futures_thread_pool_delivers_every_value_once() {
    no_hang_or("futures ThreadPool", HUNG, || {
        let pool = futures::executor::ThreadPool::builder()
            .pool_size(2)
            .create()
            .expect("build a thread pool");
        futures::executor::block_on(scenario(&pool));
    });
}

// Guarantees 1, 2, 5, 6, 8, 9 under pollster, all tasks joined in one future.
#[test]
fn pollster_delivers_every_value_once() {
    no_hang_or("pollster", HUNG, || {
        pollster::block_on(Collect::scenario());
    });
}

// Guarantees 1, 2, 5, 6, 8, 9 under embassy-executor's std platform, every task spawned from a static pool.
#[test]
fn embassy_executor_delivers_every_value_once() {
    no_hang_or("embassy-executor", HUNG, || {
        let done = Arc::new(AtomicBool::new(false));
        // `run_until` needs `&'static mut`: leak the executor (a few words;
        // embassy's `Executor::new` leaks its signaler the same way).
        let executor = Box::leak(Box::new(embassy_executor::Executor::new()));
        let finished = Arc::clone(&done);
        executor.run_until(
            move |spawner| {
                let check = scenario(&spawner);
                spawner.spawn_task(Box::pin(async move {
                    check.await;
                    finished.store(true, SeqCst);
                }));
            },
            || done.load(SeqCst),
        );
    });
}

// Guarantees 1, 2, 5, 6, 8, 9 under the hand-written single-threaded executor above.
#[test]
fn hand_written_executor_delivers_every_value_once() {
    no_hang_or("hand-written executor", HUNG, || {
        let executor = MiniExecutor::on_this_thread();
        let check = scenario(&executor);
        let finished = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&finished);
        executor.spawn_task(Box::pin(async move {
            check.await;
            done.store(true, SeqCst);
        }));
        executor.run();
        assert!(finished.load(SeqCst), "the check ran to its end");
    });
}
