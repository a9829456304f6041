//! Reads to the same shard of the same node, merged into one `ShardKv.Read` while earlier
//! ones are in flight.
//!
//! Under load most reads are single-key gets, and each costs an HTTP/2 request at the router
//! and at the node. A [`ReadLane`] per (node, shard, consistency) sends at most
//! [`MAX_INFLIGHT`] requests at once; reads that arrive meanwhile wait in its queue and go
//! out together in the next request (up to [`MAX_MERGED_KEYS`] keys). An idle lane sends a
//! read at once, so a lone client pays only a hand-off to the lane's task. Measured
//! (ringkv-bench, linearizable gets, paired runs): 1 client unchanged (687 / 680 → 712 /
//! 674 ops/s), 64 clients 16,279 / 13,698 → 16,300 / 16,593, 256 clients 16,958 / 18,238 →
//! 30,665 / 24,274; two requests in flight per lane merged too little at 64 clients.
//!
//! The queue, the in-flight bound and the task's ownership are `lane`'s; every send is
//! bounded by the latest deadline of the reads in it.
//!
//! A merged read is what the node would answer for each read alone: every key belongs to the
//! same shard and is read at the same consistency, and a node checks the leadership (or
//! lease) once per request either way. A status that concerns the whole shard (not the
//! leader, no quorum, timeout) is every read's status. Anything that could concern a single
//! read (an invalid key) is retried with each read sent alone. A node answers a merged read
//! within its byte budget: when it answers a prefix of the keys (`more`), the reads it
//! answered whole get their answers at once and the rest are asked for again.

use std::collections::VecDeque;
use std::time::Duration;

use ringkv_proto::v1::{KeyValueResult, ShardReadRequest, ShardReadResponse};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::lane::{time_left, Lane, Merge, Waiting};

/// Requests of one lane in flight at once.
pub const MAX_INFLIGHT: usize = 1;
/// Most keys in one merged request.
pub const MAX_MERGED_KEYS: usize = 256;

/// Sends one request: `(request, timeout) -> response`.
pub trait SendRead: Clone + Send + Sync + 'static {
    fn send(
        &self,
        request: ShardReadRequest,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<ShardReadResponse, Status>> + Send;
}

/// Handle to one lane's task; the task ends when every handle is dropped.
#[derive(Clone)]
pub struct ReadLane<S: SendRead> {
    lane: Lane<ReadMerge<S>>,
}

impl<S: SendRead> ReadLane<S> {
    /// Starts the lane of `shard` at `consistency`, sending through `sender`.
    pub fn spawn(sender: S, shard: u32, consistency: i32) -> ReadLane<S> {
        let merge = ReadMerge {
            sender,
            shard,
            consistency,
        };
        ReadLane {
            lane: Lane::spawn(merge, MAX_INFLIGHT),
        }
    }

    /// Reads `keys` (all of this lane's shard) within `timeout`.
    pub async fn read(&self, keys: Vec<Vec<u8>>, timeout: Duration) -> Result<ShardReadResponse, Status> {
        self.lane.call(keys, timeout).await
    }
}

/// Reads of one shard at one consistency, merged key list after key list.
#[derive(Clone)]
struct ReadMerge<S> {
    sender: S,
    shard: u32,
    consistency: i32,
}

impl<S: SendRead> ReadMerge<S> {
    fn request(&self, keys: Vec<Vec<u8>>) -> ShardReadRequest {
        ShardReadRequest {
            shard_id: self.shard,
            keys,
            consistency: self.consistency,
            read_ts: 0,
            read_uncommitted: false,
            max_bytes: 0,
        }
    }
}

impl<S: SendRead> Merge for ReadMerge<S> {
    type Item = Vec<Vec<u8>>;
    type Answer = ShardReadResponse;

    fn admits(&self, batch: &[Waiting<Self>], next: &Vec<Vec<u8>>) -> bool {
        let keys: usize = batch.iter().map(|waiting| waiting.item.len()).sum();
        keys + next.len() <= MAX_MERGED_KEYS
    }

    async fn send(&self, batch: Vec<Waiting<Self>>) {
        if batch.len() == 1 {
            // Alone: the node's answer as is (a partial one, with `more`, goes back to the
            // caller, as without the lane).
            let timeout = time_left(&batch);
            for waiting in batch {
                let answer = self.sender.send(self.request(waiting.item), timeout).await;
                let _ = waiting.reply.send(answer);
            }
            return;
        }
        let mut alone = Vec::with_capacity(batch.len());
        let mut keys = VecDeque::new();
        let mut reads = VecDeque::with_capacity(batch.len());
        for waiting in batch {
            alone.push((waiting.item.clone(), waiting.deadline));
            reads.push_back((waiting.item.len(), waiting.deadline, waiting.reply));
            keys.extend(waiting.item);
        }
        // Results of the keys answered so far that no read has taken yet.
        let mut answered: VecDeque<KeyValueResult> = VecDeque::new();
        let mut first_send = true;
        while !keys.is_empty() {
            let now = Instant::now();
            let timeout = reads
                .iter()
                .map(|(_, deadline, _)| deadline.saturating_duration_since(now))
                .min()
                .unwrap_or_default();
            let request = self.request(keys.iter().cloned().collect());
            let response = match self.sender.send(request, timeout).await {
                Ok(response) => response,
                Err(status) if first_send && status.code() == Code::InvalidArgument => {
                    // Possibly one read's key: each read alone gets its own answer.
                    let mut sends = JoinSet::new();
                    for ((keys, deadline), (_, _, reply)) in alone.into_iter().zip(reads) {
                        let sender = self.sender.clone();
                        let timeout = deadline.saturating_duration_since(Instant::now());
                        let request = self.request(keys);
                        sends.spawn(async move {
                            let _ = reply.send(sender.send(request, timeout).await);
                        });
                    }
                    while sends.join_next().await.is_some() {}
                    return;
                }
                Err(status) => {
                    for (_, _, reply) in reads {
                        let _ = reply.send(Err(status.clone()));
                    }
                    return;
                }
            };
            first_send = false;
            // The whole request, or (stopped by the node's byte budget) a prefix of it.
            let count = response.results.len();
            let valid = count == keys.len() || (response.more && count > 0 && count < keys.len());
            if !valid {
                let status = Status::internal(format!(
                    "shard {} answered {count} results for {} keys",
                    self.shard,
                    keys.len(),
                ));
                for (_, _, reply) in reads {
                    let _ = reply.send(Err(status.clone()));
                }
                return;
            }
            keys.drain(..count);
            answered.extend(response.results);
            // Answer every read whose keys are all answered; ask again for the rest.
            while reads
                .front()
                .is_some_and(|(wanted, _, _)| *wanted <= answered.len())
            {
                if let Some((wanted, _, reply)) = reads.pop_front() {
                    let part = ShardReadResponse {
                        results: answered.drain(..wanted).collect(),
                        more: false,
                    };
                    let _ = reply.send(Ok(part));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use ringkv_proto::v1::KeyValueResult;
    use tokio::sync::watch;

    use super::*;

    /// Answers each key with its own name as the value once its gate is open, recording the
    /// requests; keys named "bad" make the whole request invalid.
    #[derive(Clone)]
    struct Echo {
        requests: Arc<Mutex<Vec<Vec<Vec<u8>>>>>,
        calls: Arc<watch::Sender<usize>>,
        open: Arc<watch::Sender<bool>>,
        /// Answers at most this many keys per request, with `more` (a node's byte budget).
        max_keys: usize,
    }

    impl Echo {
        /// Holds every request until [`Echo::open`].
        fn closed() -> Echo {
            Echo {
                requests: Arc::default(),
                calls: Arc::new(watch::Sender::new(0)),
                open: Arc::new(watch::Sender::new(false)),
                max_keys: usize::MAX,
            }
        }

        fn open(&self) {
            self.open.send_replace(true);
        }

        /// Waits until `count` requests reached the node.
        async fn wait_for_calls(&self, count: usize) {
            let mut calls = self.calls.subscribe();
            tokio::time::timeout(Duration::from_secs(5), calls.wait_for(|calls| *calls >= count))
                .await
                .expect("requests in time")
                .expect("echo alive");
        }

        fn calls(&self) -> usize {
            *self.calls.borrow()
        }
    }

    impl SendRead for Echo {
        async fn send(
            &self,
            request: ShardReadRequest,
            _timeout: Duration,
        ) -> Result<ShardReadResponse, Status> {
            self.requests.lock().expect("lock").push(request.keys.clone());
            self.calls.send_modify(|calls| *calls += 1);
            let _ = self.open.subscribe().wait_for(|open| *open).await;
            if request.keys.iter().any(|key| key == b"bad") {
                return Err(Status::invalid_argument("bad key"));
            }
            let more = request.keys.len() > self.max_keys;
            Ok(ShardReadResponse {
                results: request
                    .keys
                    .into_iter()
                    .take(self.max_keys)
                    .map(|key| KeyValueResult {
                        expires_at_ts: 0,
                        value: key.clone(),
                        key,
                        found: true,
                        version: 1,
                    })
                    .collect(),
                more,
            })
        }
    }

    fn values(response: &ShardReadResponse) -> Vec<Vec<u8>> {
        response
            .results
            .iter()
            .map(|result| result.value.clone())
            .collect()
    }

    /// Concurrent reads share requests, and each gets exactly its own keys back.
    #[tokio::test]
    async fn concurrent_reads_are_merged_and_split_back() {
        let echo = Echo::closed();
        let lane = ReadLane::spawn(echo.clone(), 7, 0);
        let mut reads = JoinSet::new();
        for i in 0..40u32 {
            let lane = lane.clone();
            reads.spawn(async move {
                let keys = vec![format!("a{i}").into_bytes(), format!("b{i}").into_bytes()];
                let response = lane.read(keys.clone(), Duration::from_secs(5)).await;
                (keys, response)
            });
        }
        // The first request is held at the node while the rest queue behind it.
        echo.wait_for_calls(1).await;
        echo.open();
        while let Some(joined) = reads.join_next().await {
            let (keys, response) = joined.expect("read task");
            assert_eq!(values(&response.expect("read")), keys);
        }
        let calls = echo.calls();
        assert!(calls <= 2, "40 concurrent reads took {calls} requests");
        assert!(
            echo.requests
                .lock()
                .expect("lock")
                .iter()
                .all(|keys| keys.len() <= MAX_MERGED_KEYS),
            "no request exceeds the key cap"
        );
    }

    /// A merged read the node answers in parts (its byte budget stops each answer after a
    /// few keys) still gives every read all its own results: the rest is asked for again.
    #[tokio::test]
    async fn merged_reads_answered_in_parts_get_all_their_results() {
        let mut echo = Echo::closed();
        echo.max_keys = 3;
        let lane = ReadLane::spawn(echo.clone(), 7, 0);
        let mut reads = JoinSet::new();
        for i in 0..10u32 {
            let lane = lane.clone();
            reads.spawn(async move {
                let keys = vec![format!("a{i}").into_bytes(), format!("b{i}").into_bytes()];
                let response = lane.read(keys.clone(), Duration::from_secs(5)).await;
                (keys, response)
            });
        }
        echo.wait_for_calls(1).await;
        echo.open();
        while let Some(joined) = reads.join_next().await {
            let (keys, response) = joined.expect("read task");
            let response = response.expect("read");
            assert_eq!(values(&response), keys);
            assert!(!response.more);
        }
        let requests = echo.requests.lock().expect("lock").clone();
        assert!(
            requests.iter().any(|keys| keys.len() > 3),
            "some reads were merged: {requests:?}"
        );
    }

    /// A merged request refused as invalid is retried read by read: only the read with the
    /// bad key fails.
    #[tokio::test]
    async fn an_invalid_read_does_not_fail_the_reads_merged_with_it() {
        let echo = Echo::closed();
        let lane = ReadLane::spawn(echo.clone(), 7, 0);
        // Occupy the in-flight slots (held at the node) so the next reads queue and merge.
        let busy: Vec<_> = (0..MAX_INFLIGHT)
            .map(|i| {
                let lane = lane.clone();
                tokio::spawn(async move {
                    lane.read(vec![format!("busy{i}").into_bytes()], Duration::from_secs(5))
                        .await
                })
            })
            .collect();
        echo.wait_for_calls(MAX_INFLIGHT).await;
        let good = {
            let lane = lane.clone();
            tokio::spawn(async move { lane.read(vec![b"good".to_vec()], Duration::from_secs(5)).await })
        };
        let bad = {
            let lane = lane.clone();
            tokio::spawn(async move { lane.read(vec![b"bad".to_vec()], Duration::from_secs(5)).await })
        };
        // Both queue (this test's runtime runs them before it resumes), then the node answers.
        tokio::task::yield_now().await;
        echo.open();
        assert_eq!(
            values(&good.await.expect("task").expect("good read")),
            vec![b"good".to_vec()]
        );
        let bad = bad.await.expect("task").expect_err("bad read");
        assert_eq!(bad.code(), Code::InvalidArgument);
        for read in busy {
            read.await.expect("task").expect("busy read");
        }
        let requests = echo.requests.lock().expect("lock").clone();
        assert!(
            requests.contains(&vec![b"good".to_vec(), b"bad".to_vec()]),
            "the two queued reads were merged first: {requests:?}"
        );
    }
}
