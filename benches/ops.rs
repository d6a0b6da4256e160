//! A quick look at the core operations' cost, with no dependencies beyond
//! std: `cargo bench --bench ops`. Prints the median nanoseconds per
//! operation over several runs of each workload.

use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use awaitmap::AwaitMap;
use foldhash::fast::FixedState;

type Map = AwaitMap<u64, u64, FixedState>;

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// Median ns/op of `runs` runs of `f`, which performs `ops` operations.
fn median_ns(runs: usize, ops: u64, mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as f64 / ops as f64
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

fn main() {
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    const OPS: u64 = 100_000;

    let map = Map::with_hasher(FixedState::with_seed(1));
    for k in 0..1024 {
        map.insert(k, k);
    }
    let hit_try = median_ns(11, OPS, || {
        for i in 0..OPS {
            black_box(map.try_get(&black_box(i & 1023)));
        }
    });
    let hit_get = median_ns(11, OPS, || {
        for i in 0..OPS {
            let k = black_box(i & 1023);
            let mut f = map.get(&k);
            assert!(black_box(std::pin::Pin::new(&mut f).poll(&mut cx)).is_ready());
        }
    });
    println!("hit, try_get:            {hit_try:7.1} ns/op");
    println!("hit, get polled once:    {hit_get:7.1} ns/op");

    for n in [1_u64, 16, 256, 4096] {
        let map = Map::with_hasher(FixedState::with_seed(1));
        let ns = median_ns(11, OPS, || {
            let mut done = 0;
            let mut base = 0;
            while done < OPS {
                let ids: Vec<u64> = (base..base + n).collect();
                let mut futs: Vec<_> = ids.iter().map(|id| map.take(id)).collect();
                for f in &mut futs {
                    assert!(std::pin::Pin::new(f).poll(&mut cx).is_pending());
                }
                // Answer in an order unlike the requests' (7919 is prime, so
                // this is a permutation of the power-of-two batch).
                for i in 0..ids.len() {
                    let j = (i * 7919) % ids.len();
                    map.insert(ids[j], ids[j]);
                }
                for f in &mut futs {
                    assert!(matches!(
                        std::pin::Pin::new(f).poll(&mut cx),
                        Poll::Ready(Ok(_))
                    ));
                }
                done += n;
                base += n;
            }
        });
        println!("RPC take round trip, N = {n:4}: {ns:7.1} ns/op");
    }
}
