//! A build system in miniature: every target of a dependency graph is built
//! once, as soon as its dependencies are, all in parallel.
//!
//! One task per target is spawned up front, in any order. A task awaits its
//! dependencies' results with `get` (which clones, so many dependents can
//! read one result) and `insert`s its own result when done; whoever needs it
//! next wakes up. Nothing schedules the graph: the map's wake-ups do.
//!
//! Run it with `cargo run --example build_graph`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use awaitmap::AwaitMap;

/// Each target and the targets it depends on (a DAG with shared "diamond"
/// dependencies: `core` is needed, directly or not, by eight targets).
const GRAPH: [(&str, &[&str]); 10] = [
    ("alloc", &[]),
    ("core", &["alloc"]),
    ("net", &["core"]),
    ("args", &[]),
    ("http", &["net", "core"]),
    ("db", &["net", "core"]),
    ("cli", &["args", "core"]),
    ("server", &["http", "db", "core"]),
    ("app", &["cli", "server"]),
    ("tests", &["app", "server"]),
];

/// A target's result: every target linked into it, itself included. An
/// `Arc` so that each `get` clones a pointer, not the set.
type Linked = Arc<BTreeSet<&'static str>>;

/// The expected results, computed the plain sequential way (memoised
/// recursion), to check the parallel build against.
fn expected(target: &'static str, memo: &mut HashMap<&'static str, Linked>) -> Linked {
    if let Some(done) = memo.get(target) {
        return Arc::clone(done);
    }
    let deps = GRAPH.iter().find(|(t, _)| *t == target).unwrap().1;
    let mut linked = BTreeSet::from([target]);
    for dep in deps {
        linked.extend(expected(dep, memo).iter());
    }
    let linked = Arc::new(linked);
    memo.insert(target, Arc::clone(&linked));
    linked
}

#[tokio::main]
async fn main() {
    let results: Arc<AwaitMap<&'static str, Linked>> = Arc::new(AwaitMap::new());
    // Every computation is logged, to check each target is built once and
    // only after its dependencies.
    let log = Arc::new(Mutex::new(Vec::new()));

    // Spawn every target's task at once, dependents first, so most tasks
    // start by waiting.
    let mut tasks = Vec::new();
    for &(target, deps) in GRAPH.iter().rev() {
        let (results, log) = (Arc::clone(&results), Arc::clone(&log));
        tasks.push(tokio::spawn(async move {
            let mut linked = BTreeSet::from([target]);
            for dep in deps {
                let built = results.get(dep).await.expect("never closed");
                linked.extend(built.iter());
            }
            log.lock().unwrap().push(target); // the "compile" step
            results.insert(target, Arc::new(linked));
        }));
    }
    for task in tasks {
        // A guard: a target whose dependency is never built (a typo, a
        // cycle) would wait forever; fail instead.
        let built = tokio::time::timeout(Duration::from_secs(5), task).await;
        built
            .expect("a target waited forever")
            .expect("a target task panicked");
    }

    // Each target was built exactly once, after all of its dependencies.
    let log = log.lock().unwrap();
    assert_eq!(log.len(), GRAPH.len(), "a target was built twice or never");
    let position = |t: &str| log.iter().position(|&b| b == t).expect("built");
    for (target, deps) in GRAPH {
        for dep in deps {
            assert!(position(dep) < position(target), "{target} before {dep}");
        }
    }
    // And every result is right.
    let mut memo = HashMap::new();
    for (target, _) in GRAPH {
        let got = results.try_get(target).expect("every target has a result");
        assert_eq!(
            got,
            expected(target, &mut memo),
            "wrong result for {target}"
        );
    }
    assert_eq!(results.waiters(), 0, "nobody is left waiting");

    println!("spawned {} targets, dependents first", GRAPH.len());
    println!("built once each, in this order: {}", log.join(", "));
    let tests = results.try_get("tests").unwrap();
    let tests: Vec<_> = tests.iter().copied().collect();
    println!("tests links {} targets: {}", tests.len(), tests.join(", "));
}
