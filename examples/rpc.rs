//! An RPC client: match responses to requests by id with `claim` and
//! `deliver`.
//!
//! Every request/response protocol (JSON-RPC, LSP, a database wire protocol)
//! needs this: requests go out tagged with an id, responses come back in any
//! order, and each caller waits for the response with its own id. Here the
//! "connection" is a pair of in-process channels and the "server" a task that
//! answers after small pseudo-random delays, so responses overtake each other.
//!
//! A caller `claim`s its id before it sends the request (so a response that
//! comes before it awaits is kept for it) and awaits the claim with a
//! timeout. The reader `deliver`s responses: one whose caller gave up is
//! refused, so the client never accumulates late responses and keeps no
//! bookkeeping of its own.
//!
//! Run it with `cargo run --example rpc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use awaitmap::{AwaitMap, Claim};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::{JoinHandle, JoinSet};

/// A request on the wire: its id and its payload.
type Request = (u64, String);

/// A response on the wire: the id of the request it answers, and a body.
/// (A claim moves the value out, so it need not be `Clone`.)
#[derive(Debug, PartialEq)]
struct Response {
    id: u64,
    body: String,
}

/// Why a call failed.
#[derive(Debug, PartialEq)]
enum CallError {
    /// No response within the client's timeout.
    TimedOut,
    /// The connection dropped before the response came.
    Disconnected,
}

/// The part to copy: a client shared by every caller (put it in an `Arc`).
struct Client {
    next_id: AtomicU64,
    /// Requests for the writer task, which owns the sending half.
    outgoing: UnboundedSender<Request>,
    /// Responses by request id, filled by the reader task.
    responses: Arc<AwaitMap<u64, Response>>,
    timeout: Duration,
    /// Responses the reader refused: their callers had given up.
    late: Arc<AtomicU64>,
}

impl Client {
    /// Starts the writer and reader tasks over a connection.
    fn connect(
        wire_out: UnboundedSender<Request>,
        mut wire_in: UnboundedReceiver<Response>,
    ) -> Self {
        let (outgoing, mut queue) = unbounded_channel::<Request>();
        // Writer: the one task that writes to the connection.
        tokio::spawn(async move {
            while let Some(request) = queue.recv().await {
                if wire_out.send(request).is_err() {
                    break; // the connection is gone
                }
            }
        });
        // Reader: delivers each response to the caller that claimed its id
        // (kept for it if it is not awaiting yet). A response whose caller
        // gave up is refused and dropped here: nothing piles up.
        let responses = Arc::new(AwaitMap::new());
        let late = Arc::new(AtomicU64::new(0));
        let (map, refused) = (Arc::clone(&responses), Arc::clone(&late));
        tokio::spawn(async move {
            while let Some(response) = wire_in.recv().await {
                if map.deliver(response.id, response).is_err() {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            // The connection dropped: every call still waiting, and every
            // later one, fails with `WaitError::Closed` instead of hanging.
            map.close();
        });
        let (next_id, timeout) = (AtomicU64::new(1), Duration::from_millis(300));
        Client {
            next_id,
            outgoing,
            responses,
            timeout,
            late,
        }
    }

    /// Sends a request and waits for its response.
    async fn call(&self, payload: &str) -> Result<Response, CallError> {
        let (_id, reply) = self.send(payload);
        self.wait(reply).await
    }

    /// Claims a fresh id, then sends the request: the claim is registered
    /// before the request leaves, so the response cannot come too early. If
    /// the writer is gone, the map is (or is about to be) closed, so `wait`
    /// reports the disconnection.
    fn send(&self, payload: &str) -> (u64, Claim<'_, u64, Response>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let reply = self.responses.claim(id);
        let _ = self.outgoing.send((id, payload.to_string()));
        (id, reply)
    }

    /// Waits for a claimed response, at most `self.timeout`.
    async fn wait(&self, reply: Claim<'_, u64, Response>) -> Result<Response, CallError> {
        match tokio::time::timeout(self.timeout, reply).await {
            Ok(Ok(response)) => Ok(response),
            // The reader closed the map (this client never calls `cancel`).
            Ok(Err(_closed)) => Err(CallError::Disconnected),
            // `timeout` dropped the claim, which released the id: a response
            // that comes later is refused by the reader. Nothing to clean up.
            Err(_elapsed) => Err(CallError::TimedOut),
        }
    }
}

/// The far end: answers each request after a pseudo-random 0–15 ms delay
/// with its payload in upper case. It never answers "ignore me", and it
/// answers "slow" only after half a second (past the client's timeout).
async fn server(mut requests: UnboundedReceiver<Request>, replies: UnboundedSender<Response>) {
    let mut in_progress = JoinSet::new(); // aborted when the server is
    while let Some((id, payload)) = requests.recv().await {
        if payload != "ignore me" {
            let replies = replies.clone();
            let delay = match payload.as_str() {
                "slow" => Duration::from_millis(500),
                _ => Duration::from_millis(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60),
            };
            in_progress.spawn(async move {
                tokio::time::sleep(delay).await;
                let body = payload.to_uppercase();
                let _ = replies.send(Response { id, body });
            });
        }
    }
}

#[tokio::main]
async fn main() {
    let (wire_out, requests) = unbounded_channel();
    let (replies, wire_in) = unbounded_channel();
    let server = tokio::spawn(server(requests, replies));
    let client = Arc::new(Client::connect(wire_out, wire_in));
    let map = Arc::clone(&client.responses);

    // 1. Eight concurrent calls: each gets its own response, in any order.
    let mut calls = JoinSet::new();
    for word in ["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen"] {
        let client = Arc::clone(&client);
        calls.spawn(async move { (word, client.call(word).await) });
    }
    let mut finished = Vec::new();
    while let Some(done) = calls.join_next().await {
        let (word, response) = done.expect("the call task");
        let response = response.expect("the server answers every word");
        assert_eq!(response.body, word.to_uppercase(), "not its response");
        finished.push(response.id);
    }
    println!("8 calls answered, finished in id order {finished:?}");
    let mut ids = finished.clone();
    ids.sort_unstable();
    assert_eq!(ids, (1..=8).collect::<Vec<_>>(), "each id answered once");
    assert!(map.is_empty() && map.waiters() == 0, "nothing left behind");

    // 2. A response that arrives before its caller awaits is kept for it.
    let (id, reply) = client.send("early bird");
    wait_until(|| map.contains_key(&id)).await; // the caller is busy elsewhere
    assert_eq!(map.waiters(), 1, "the claim was registered before the send");
    let response = client
        .wait(reply)
        .await
        .expect("the early response was kept");
    assert_eq!(response.body, "EARLY BIRD");
    println!("request {id} was answered before its caller awaited: kept, then received");

    // 3. A request the server never answers times out and releases its id.
    let ignored = spawn_call(&client, "ignore me");
    wait_until(|| map.waiters() == 1).await;
    assert_eq!(ignored.await.unwrap(), Err(CallError::TimedOut));
    assert_eq!(map.waiters(), 0, "the timed-out claim was released");
    println!(
        "unanswered: TimedOut after {:?}, claim released",
        client.timeout
    );

    // 3b. A response that comes after its caller gave up is refused: the
    // client holds no late responses, with no cleanup code of its own.
    assert_eq!(client.call("slow").await, Err(CallError::TimedOut));
    wait_until(|| client.late.load(Ordering::Relaxed) == 1).await;
    assert!(map.is_empty(), "a late response was kept");
    println!("a late response was refused by the reader: the map is empty");

    // 4. The connection drops: calls in flight fail at once, as do new ones.
    let stuck: Vec<_> = (0..3).map(|_| spawn_call(&client, "ignore me")).collect();
    wait_until(|| map.waiters() == 3).await;
    server.abort(); // the peer hangs up: the reader sees the end, closes the map
    for call in stuck {
        assert_eq!(call.await.unwrap(), Err(CallError::Disconnected));
    }
    assert!(map.is_closed());
    let late = client.call("anyone there?").await;
    assert_eq!(late, Err(CallError::Disconnected));
    println!("connection dropped: 3 calls in flight and 1 new call got Disconnected");
}

/// Runs `client.call(payload)` as its own task.
fn spawn_call(
    client: &Arc<Client>,
    payload: &'static str,
) -> JoinHandle<Result<Response, CallError>> {
    let client = Arc::clone(client);
    tokio::spawn(async move { client.call(payload).await })
}

/// Sleeps in 1 ms steps until `done()` holds; panics after about a second.
async fn wait_until(done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the condition never held");
}
