//! A lane: requests to one shard of one node, merged into one call while earlier calls are
//! in flight. `read_merge` (reads) and `write_merge` (writes) are the two kinds.
//!
//! Each small request costs an HTTP/2 request at the router and at the node. A [`Lane`]
//! sends at most `max_inflight` calls at once; requests that arrive meanwhile wait in its
//! queue and go out together in the next call, as many as the [`Merge`] admits. An idle
//! lane sends a request at once, so a lone client pays only a hand-off to the lane's task.
//!
//! The lane's task is owned by its handles (`GrpcNodes` in `connections.rs` keeps one per
//! lane, a bounded number): it ends when the last handle is dropped, after answering what it
//! holds. The queue is bounded ([`QUEUE_CAPACITY`]); callers beyond it wait for room.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::Status;

/// Requests waiting in one lane.
const QUEUE_CAPACITY: usize = 1024;

/// One caller's request waiting in a lane.
pub struct Waiting<M: Merge> {
    pub item: M::Item,
    /// The caller's deadline: a merged call is bounded by the latest of its requests'.
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<M::Answer, Status>>,
}

/// How a kind of request is merged and sent.
pub trait Merge: Clone + Send + Sync + 'static {
    /// One caller's request.
    type Item: Send + 'static;
    /// The answer to one caller.
    type Answer: Send + 'static;

    /// Whether `next` may join `batch` (never asked for an empty batch).
    fn admits(&self, batch: &[Waiting<Self>], next: &Self::Item) -> bool;

    /// Sends `batch` (one or more requests) and answers every one of them.
    fn send(&self, batch: Vec<Waiting<Self>>) -> impl std::future::Future<Output = ()> + Send;
}

/// Handle to one lane's task; the task ends when every handle is dropped.
pub struct Lane<M: Merge> {
    tx: mpsc::Sender<Waiting<M>>,
}

impl<M: Merge> Clone for Lane<M> {
    fn clone(&self) -> Self {
        Lane { tx: self.tx.clone() }
    }
}

impl<M: Merge> Lane<M> {
    /// Starts a lane that sends through `merge`, `max_inflight` calls at a time.
    pub fn spawn(merge: M, max_inflight: usize) -> Lane<M> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(merge, max_inflight.max(1), rx));
        Lane { tx }
    }

    /// Sends `item` (possibly merged with others) and waits for its answer within `timeout`.
    pub async fn call(&self, item: M::Item, timeout: Duration) -> Result<M::Answer, Status> {
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting {
            item,
            deadline: Instant::now() + timeout,
            reply,
        };
        let gone = || Status::unavailable("the router's lane to the node stopped");
        self.tx.send(waiting).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn run<M: Merge>(merge: M, max_inflight: usize, mut rx: mpsc::Receiver<Waiting<M>>) {
    let mut inflight = JoinSet::new();
    let mut carried: Option<Waiting<M>> = None;
    loop {
        while inflight.len() >= max_inflight {
            let _ = inflight.join_next().await;
        }
        let first = match carried.take() {
            Some(waiting) => waiting,
            None => {
                // Reap finished sends while idle, so the set does not grow.
                while inflight.try_join_next().is_some() {}
                match rx.recv().await {
                    Some(waiting) => waiting,
                    None => break,
                }
            }
        };
        let mut batch = vec![first];
        while let Ok(waiting) = rx.try_recv() {
            if merge.admits(&batch, &waiting.item) {
                batch.push(waiting);
            } else {
                carried = Some(waiting);
                break;
            }
        }
        let merge = merge.clone();
        inflight.spawn(async move { merge.send(batch).await });
    }
    while inflight.join_next().await.is_some() {}
}

/// The latest deadline of `batch`'s requests and the time left until it.
pub fn time_left<M: Merge>(batch: &[Waiting<M>]) -> Duration {
    let now = Instant::now();
    batch
        .iter()
        .map(|waiting| waiting.deadline)
        .max()
        .map_or(Duration::ZERO, |deadline| deadline.saturating_duration_since(now))
}
