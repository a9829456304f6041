//! Writes to the same shard leader, merged into one `ShardKv.WriteBatch` while an earlier
//! call is in flight.
//!
//! A node commits one entry per shard at a time and gathers the writes that arrive meanwhile
//! into the next (`node/src/proposal.rs`), so a write that reaches a busy shard waits there
//! anyway. A [`WriteLane`] per (node, shard) lets it wait at the router instead: at most
//! [`MAX_INFLIGHT`] calls are in flight, and the writes that queue behind them go out in one
//! call (up to [`MAX_MERGED_WRITES`] writes and [`MAX_MERGED_BYTES`] of keys and values), one
//! HTTP/2 request at the router and at the node instead of one per write. An idle lane sends
//! a write at once, alone, with `ShardKv.Write`.
//!
//! Merging changes nothing a write promises: each keeps its request id (so its
//! de-duplication and retries), its ops stay one atomic unit, and each gets the answer or the
//! status `Write` would have given it (`WriteFailure` carries the status's code, message and
//! `x-ringkv-*` metadata). A status for the whole call (not the leader, a timeout, a broken
//! connection) is every write's status, with the same meaning it has for one write. A batch
//! the node refuses as a whole as invalid (or does not know: a node of an older version) is
//! sent again write by write. Every send is bounded by the latest deadline of its writes.
//!
//! A write sent again through the same lane (a retry: the same request id, after an attempt
//! that timed out or failed) goes alone and at once, neither behind the call in flight nor
//! held by writes merged with it: the node answers it as soon as the write it retries is
//! answered (it joins the write still pending there, or is answered from the write applied;
//! `node/src/proposal/pending.rs`), so a retry does not wait for an entry of other writes
//! (issue 14). The lane remembers the last [`MAX_SENT_IDS`] request ids it sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ringkv_proto::metadata;
use ringkv_proto::v1::{
    shard_write_outcome, ShardWriteBatchRequest, ShardWriteBatchResponse, ShardWriteRequest,
    ShardWriteResponse,
};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::lane::{time_left, Lane, Merge, Waiting};

/// Calls of one lane in flight at once.
pub const MAX_INFLIGHT: usize = 1;
/// Most writes in one call (the node takes up to 256).
pub const MAX_MERGED_WRITES: usize = 128;
/// Most key and value bytes in one merged call (a larger write goes alone).
pub const MAX_MERGED_BYTES: usize = 1 << 20;
/// Request ids a lane remembers having sent, to tell a retry (16 bytes each, at most 4096
/// lanes: 16 MiB at worst). A retry comes within seconds of its first attempt.
pub const MAX_SENT_IDS: usize = 256;

/// Sends a lone write or a batch.
pub trait SendWrite: Clone + Send + Sync + 'static {
    fn send(
        &self,
        request: ShardWriteRequest,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<ShardWriteResponse, Status>> + Send;

    fn send_batch(
        &self,
        request: ShardWriteBatchRequest,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<ShardWriteBatchResponse, Status>> + Send;
}

/// Handle to one lane's task; the task ends when every handle is dropped.
#[derive(Clone)]
pub struct WriteLane<S: SendWrite> {
    lane: Lane<WriteMerge<S>>,
    sender: S,
    /// The request ids this lane sent lately, oldest first.
    sent: Arc<Mutex<VecDeque<Vec<u8>>>>,
}

impl<S: SendWrite> WriteLane<S> {
    /// Starts the lane of `shard`, sending through `sender`.
    pub fn spawn(sender: S, shard: u32) -> WriteLane<S> {
        WriteLane {
            lane: Lane::spawn(
                WriteMerge {
                    sender: sender.clone(),
                    shard,
                },
                MAX_INFLIGHT,
            ),
            sender,
            sent: Arc::default(),
        }
    }

    /// Whether `request` was sent through this lane before (then it is not remembered again).
    fn resent(&self, request: &ShardWriteRequest) -> bool {
        let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        if sent.contains(&request.request_id) {
            return true;
        }
        if sent.len() >= MAX_SENT_IDS {
            sent.pop_front();
        }
        sent.push_back(request.request_id.clone());
        false
    }

    /// Commits `request` (a write to this lane's shard) within `timeout`.
    pub async fn write(
        &self,
        request: ShardWriteRequest,
        timeout: Duration,
    ) -> Result<ShardWriteResponse, Status> {
        if self.resent(&request) {
            return self.sender.send(request, timeout).await;
        }
        self.lane.call(request, timeout).await
    }
}

fn write_bytes(request: &ShardWriteRequest) -> usize {
    request.ops.iter().map(|op| op.key.len() + op.value.len()).sum()
}

/// The status of a write whose batch's answer makes no sense: it may have been applied.
fn garbled(shard: u32, what: String) -> Status {
    let mut status = Status::internal(format!("shard {shard} answered a write batch with {what}"));
    metadata::set_outcome_unknown(&mut status);
    status
}

#[derive(Clone)]
struct WriteMerge<S> {
    sender: S,
    shard: u32,
}

impl<S: SendWrite> WriteMerge<S> {
    /// Sends each write alone (concurrently), each answered with its own outcome.
    async fn send_alone(&self, writes: Vec<(ShardWriteRequest, Instant, ReplyTo)>) {
        let mut sends = JoinSet::new();
        for (request, deadline, reply) in writes {
            let sender = self.sender.clone();
            let timeout = deadline.saturating_duration_since(Instant::now());
            sends.spawn(async move {
                let _ = reply.send(sender.send(request, timeout).await);
            });
        }
        while sends.join_next().await.is_some() {}
    }
}

type ReplyTo = tokio::sync::oneshot::Sender<Result<ShardWriteResponse, Status>>;

impl<S: SendWrite> Merge for WriteMerge<S> {
    type Item = ShardWriteRequest;
    type Answer = ShardWriteResponse;

    fn admits(&self, batch: &[Waiting<Self>], next: &ShardWriteRequest) -> bool {
        let bytes: usize = batch.iter().map(|waiting| write_bytes(&waiting.item)).sum();
        batch.len() < MAX_MERGED_WRITES && bytes + write_bytes(next) <= MAX_MERGED_BYTES
    }

    async fn send(&self, batch: Vec<Waiting<Self>>) {
        let timeout = time_left(&batch);
        if batch.len() == 1 {
            for waiting in batch {
                let answer = self.sender.send(waiting.item, timeout).await;
                let _ = waiting.reply.send(answer);
            }
            return;
        }
        let count = batch.len();
        let mut kept = Vec::with_capacity(count);
        let mut writes = Vec::with_capacity(count);
        for waiting in batch {
            writes.push(waiting.item.clone());
            kept.push((waiting.item, waiting.deadline, waiting.reply));
        }
        let request = ShardWriteBatchRequest {
            shard_id: self.shard,
            writes,
        };
        match self.sender.send_batch(request, timeout).await {
            Ok(response) if response.outcomes.len() == count => {
                for ((_, _, reply), outcome) in kept.into_iter().zip(response.outcomes) {
                    let answer = match outcome.outcome {
                        Some(shard_write_outcome::Outcome::Response(response)) => Ok(response),
                        Some(shard_write_outcome::Outcome::Failure(failure)) => {
                            Err(metadata::failure_status(failure))
                        }
                        None => Err(garbled(self.shard, "an empty outcome".to_string())),
                    };
                    let _ = reply.send(answer);
                }
            }
            Ok(response) => {
                let status = garbled(
                    self.shard,
                    format!("{} outcomes for {count} writes", response.outcomes.len()),
                );
                for (_, _, reply) in kept {
                    let _ = reply.send(Err(status.clone()));
                }
            }
            Err(status) if matches!(status.code(), Code::InvalidArgument | Code::Unimplemented) => {
                // Refused before any write was proposed: each write alone gets its own answer.
                self.send_alone(kept).await;
            }
            Err(status) => {
                for (_, _, reply) in kept {
                    let _ = reply.send(Err(status.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use ringkv_proto::v1::{shard_write_outcome::Outcome, ShardWriteOutcome, WriteOp, WriteOpResult};
    use tokio::sync::watch;

    use super::*;

    /// A node that holds every call until opened, records the calls, and answers each write
    /// with its first key's length as the version; a write whose key is "fail" fails alone
    /// (rejected), a batch holding "bad" is refused as a whole, and `batches` can be turned
    /// off to play a node without `WriteBatch`.
    #[derive(Clone)]
    struct Node {
        calls: Arc<Mutex<Vec<Vec<Vec<u8>>>>>,
        arrived: Arc<watch::Sender<usize>>,
        open: Arc<watch::Sender<bool>>,
        batches: bool,
    }

    impl Node {
        fn closed(batches: bool) -> Node {
            Node {
                calls: Arc::default(),
                arrived: Arc::new(watch::Sender::new(0)),
                open: Arc::new(watch::Sender::new(false)),
                batches,
            }
        }

        async fn arrive(&self, keys: Vec<Vec<u8>>) {
            self.calls.lock().expect("lock").push(keys);
            self.arrived.send_modify(|calls| *calls += 1);
            let _ = self.open.subscribe().wait_for(|open| *open).await;
        }

        async fn wait_for_calls(&self, count: usize) {
            let mut arrived = self.arrived.subscribe();
            tokio::time::timeout(Duration::from_secs(5), arrived.wait_for(|calls| *calls >= count))
                .await
                .expect("calls in time")
                .expect("node alive");
        }

        fn answer(request: &ShardWriteRequest) -> Result<ShardWriteResponse, Status> {
            let key = request.ops.first().map(|op| op.key.clone()).unwrap_or_default();
            if key == b"fail" {
                let mut status = Status::failed_precondition("this write fails");
                metadata::set_rejected(&mut status);
                return Err(status);
            }
            Ok(ShardWriteResponse {
                results: vec![WriteOpResult {
                    succeeded: true,
                    version: key.len() as u64,
                    ..WriteOpResult::default()
                }],
            })
        }
    }

    fn first_key(request: &ShardWriteRequest) -> Vec<u8> {
        request.ops.first().map(|op| op.key.clone()).unwrap_or_default()
    }

    impl SendWrite for Node {
        async fn send(
            &self,
            request: ShardWriteRequest,
            _timeout: Duration,
        ) -> Result<ShardWriteResponse, Status> {
            self.arrive(vec![first_key(&request)]).await;
            Node::answer(&request)
        }

        async fn send_batch(
            &self,
            request: ShardWriteBatchRequest,
            _timeout: Duration,
        ) -> Result<ShardWriteBatchResponse, Status> {
            if !self.batches {
                return Err(Status::unimplemented("no WriteBatch here"));
            }
            self.arrive(request.writes.iter().map(first_key).collect()).await;
            if request.writes.iter().any(|write| first_key(write) == b"bad") {
                return Err(Status::invalid_argument("bad batch"));
            }
            Ok(ShardWriteBatchResponse {
                outcomes: request
                    .writes
                    .iter()
                    .map(|write| ShardWriteOutcome {
                        outcome: Some(match Node::answer(write) {
                            Ok(response) => Outcome::Response(response),
                            Err(status) => Outcome::Failure(metadata::write_failure(&status)),
                        }),
                    })
                    .collect(),
            })
        }
    }

    fn write(key: &str) -> ShardWriteRequest {
        // Each key its own request id (a lane sends a request id it sent before alone).
        let mut request_id = vec![1; 16];
        for (at, byte) in key.bytes().take(16).enumerate() {
            request_id[at] = byte;
        }
        ShardWriteRequest {
            shard_id: 3,
            request_id,
            ops: vec![WriteOp {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                ..WriteOp::default()
            }],
        }
    }

    /// Writes queued behind a busy call go out in one batch, and each gets its own answer:
    /// its result, or its own failure with the failure's metadata.
    async fn queued_writes_merge(
        node: Node,
        keys: &[&'static str],
    ) -> Vec<Result<ShardWriteResponse, Status>> {
        let lane = WriteLane::spawn(node.clone(), 3);
        let busy = {
            let lane = lane.clone();
            tokio::spawn(async move { lane.write(write("busy"), Duration::from_secs(5)).await })
        };
        node.wait_for_calls(1).await;
        let mut writes = Vec::new();
        for &key in keys {
            let lane = lane.clone();
            writes.push(tokio::spawn(async move {
                lane.write(write(key), Duration::from_secs(5)).await
            }));
        }
        // The writes queue (this test's runtime runs them before it resumes), then the node
        // answers.
        tokio::task::yield_now().await;
        node.open.send_replace(true);
        busy.await.expect("task").expect("busy write");
        let mut answers = Vec::new();
        for write in writes {
            answers.push(write.await.expect("task"));
        }
        answers
    }

    /// A write sent again (a retry: the same request id) goes alone and at once, not
    /// behind the call in flight that still carries its first attempt (issue 14).
    #[tokio::test]
    async fn a_resent_write_goes_at_once() {
        let node = Node::closed(true);
        let lane = WriteLane::spawn(node.clone(), 3);
        let first = {
            let lane = lane.clone();
            tokio::spawn(async move { lane.write(write("retried"), Duration::from_secs(5)).await })
        };
        node.wait_for_calls(1).await;
        // The router gives up on the first attempt; the lane's call is still in flight.
        first.abort();
        let retry = {
            let lane = lane.clone();
            tokio::spawn(async move { lane.write(write("retried"), Duration::from_secs(5)).await })
        };
        node.wait_for_calls(2).await;
        node.open.send_replace(true);
        let answer = retry.await.expect("task").expect("the retry is answered");
        assert_eq!(answer.results[0].version, 7);
    }

    #[tokio::test]
    async fn queued_writes_share_a_call_and_keep_their_own_outcomes() {
        let node = Node::closed(true);
        let answers = queued_writes_merge(node.clone(), &["a", "bb", "fail", "dddd"]).await;
        assert_eq!(answers[0].as_ref().expect("a").results[0].version, 1);
        assert_eq!(answers[1].as_ref().expect("bb").results[0].version, 2);
        let failed = answers[2].as_ref().expect_err("fail");
        assert_eq!(failed.code(), Code::FailedPrecondition);
        assert!(metadata::is_rejected(failed), "the failure keeps its metadata");
        assert_eq!(answers[3].as_ref().expect("dddd").results[0].version, 4);
        let calls = node.calls.lock().expect("lock").clone();
        assert_eq!(
            calls,
            vec![
                vec![b"busy".to_vec()],
                vec![b"a".to_vec(), b"bb".to_vec(), b"fail".to_vec(), b"dddd".to_vec()]
            ]
        );
    }

    /// A batch refused as a whole as invalid, or by a node without `WriteBatch`, is sent
    /// again write by write.
    #[tokio::test]
    async fn a_refused_batch_is_sent_write_by_write() {
        let node = Node::closed(true);
        let answers = queued_writes_merge(node.clone(), &["a", "bad"]).await;
        assert_eq!(answers[0].as_ref().expect("a").results[0].version, 1);
        assert_eq!(answers[1].as_ref().expect("bad alone").results[0].version, 3);
        assert_eq!(
            node.calls.lock().expect("lock").len(),
            4,
            "busy, the batch, then two alone"
        );

        let old = Node::closed(false);
        let answers = queued_writes_merge(old.clone(), &["a", "bb"]).await;
        assert!(answers.iter().all(Result::is_ok));
        assert_eq!(old.calls.lock().expect("lock").len(), 3, "busy, then two alone");
    }
}
