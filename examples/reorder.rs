//! A reorder buffer: parallel workers finish chunks out of order, and one
//! consumer writes them out in order.
//!
//! This is how a parallel compressor or encoder (pigz, a video encoder, a
//! parallel `map` over a stream) keeps its output in input order: workers
//! insert `(chunk index, result)` when they finish, and the writer takes
//! index 0, 1, 2, … waiting for each in turn. Chunks that finish early wait
//! in the map until their turn comes.
//!
//! The map's limit bounds how far ahead the workers run: a worker whose
//! chunk finished early waits (`insert_blocking`) while `AHEAD` chunks are
//! already buffered. The chunk the writer waits for is always let in, so the
//! pipeline cannot deadlock, whatever order the chunks finish in.
//!
//! Run it with `cargo run --example reorder`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use awaitmap::AwaitMap;

const WORKERS: usize = 4;
const CHUNK: usize = 64; // bytes per chunk
const AHEAD: usize = 3; // chunks buffered ahead of the writer, at most

/// The work: ROT13 a chunk of text. Any CPU-bound step fits here.
fn encode(chunk: &[u8]) -> Vec<u8> {
    let rot = |c: u8, base: u8| (c - base + 13) % 26 + base;
    let map = |c: u8| match c {
        b'a'..=b'z' => rot(c, b'a'),
        b'A'..=b'Z' => rot(c, b'A'),
        _ => c,
    };
    chunk.iter().copied().map(map).collect()
}

#[tokio::main]
async fn main() {
    // The input: about 40 chunks of text.
    let input: Vec<u8> = (0..80)
        .flat_map(|i| format!("line {i}: the quick brown fox\n").into_bytes())
        .collect();
    let chunks: Arc<Vec<Vec<u8>>> = Arc::new(input.chunks(CHUNK).map(<[u8]>::to_vec).collect());
    let n = chunks.len();

    // Finished chunks by index; the workers fill it, the writer empties it.
    let done: Arc<AwaitMap<usize, Vec<u8>>> = Arc::new(AwaitMap::new().with_limit(AHEAD));
    let next_chunk = Arc::new(AtomicUsize::new(0)); // the workers' shared queue
    let arrivals = Arc::new(Mutex::new(Vec::new())); // the order chunks finished in

    // CPU-bound workers run on tokio's blocking-thread pool.
    for _ in 0..WORKERS {
        let (chunks, done) = (Arc::clone(&chunks), Arc::clone(&done));
        let (next_chunk, arrivals) = (Arc::clone(&next_chunk), Arc::clone(&arrivals));
        tokio::task::spawn_blocking(move || {
            loop {
                let i = next_chunk.fetch_add(1, Ordering::Relaxed);
                if i >= chunks.len() {
                    break;
                }
                // Chunks take uneven time (0–3 ms), so they finish out of order.
                std::thread::sleep(Duration::from_millis((i * 7 % 4) as u64));
                let encoded = encode(&chunks[i]);
                arrivals.lock().unwrap().push(i);
                // Waits while AHEAD chunks are buffered, unless the writer
                // waits for this one.
                done.insert_blocking(i, encoded);
            }
        });
    }

    // The writer: takes chunk 0, 1, 2, … in order, whenever each is ready.
    let mut output = Vec::with_capacity(input.len());
    let mut most_buffered = 0;
    for i in 0..n {
        // A guard: a chunk that never comes (a worker died) would stall us.
        let next = tokio::time::timeout(Duration::from_secs(5), done.take(&i));
        let encoded = next.await.expect("a chunk never came").expect("not closed");
        // Chunks that finished ahead of their turn wait in the map.
        most_buffered = most_buffered.max(done.len());
        output.extend_from_slice(&encoded);
    }

    // The output is exactly the input encoded in one go, in order.
    assert_eq!(output, encode(&input), "output out of order or corrupted");
    assert_eq!(encode(&output), input, "ROT13 twice gives the input back");
    assert!(done.is_empty(), "every chunk was taken exactly once");
    // The limit, plus the chunk the writer was waiting for.
    assert!(
        most_buffered <= AHEAD + 1,
        "{most_buffered} chunks buffered"
    );
    assert_eq!(done.waiters(), 0);

    let arrivals = arrivals.lock().unwrap();
    let mut sorted = arrivals.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "each chunk done once");
    // A chunk finished early if a chunk before it finished after it.
    let early = (0..n)
        .filter(|&pos| arrivals[pos + 1..].iter().any(|&j| j < arrivals[pos]))
        .count();
    let first_line = output.split(|&b| b == b'\n').next().unwrap();
    println!("{n} chunks of {CHUNK} bytes, {WORKERS} workers, at most {AHEAD} buffered ahead");
    println!("finished in order: {:?} …", &arrivals[..12]);
    println!("{early} finished before an earlier chunk; at most {most_buffered} waited in the map");
    println!("written in order: {} bytes, verified", output.len());
    println!("first line out: {:?}", String::from_utf8_lossy(first_line));
}
