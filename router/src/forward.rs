//! The retry loop: send one shard request to the right node until it succeeds, fails for
//! good, or the request deadline passes.
//!
//! Each attempt goes to the cached leader (or a placement replica when none is known; any
//! replica for stale reads) with a timeout of `min(rpc_timeout, time left)` — for a write,
//! longer at a node whose writes take longer (`attempt_timeout`). Not-leader
//! hints are followed at once (a few times in a row); other retriable failures back off
//! (bounded, jittered), ask for a topology refresh and try again. Writes keep their request
//! id across attempts, so the node's de-duplication makes retries safe; if any attempt was
//! ambiguous and none succeeded, the write is reported as "outcome unknown".

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1::{
    Consistency, ShardCountRequest, ShardCountResponse, ShardDeleteRangeRequest, ShardDeleteRangeResponse,
    ShardReadRequest, ShardReadResponse, ShardScanRequest, ShardScanResponse, ShardTxnCheckStatusRequest,
    ShardTxnCommitRequest, ShardTxnRollbackRequest, ShardTxnStatusResponse, ShardWriteRequest,
    ShardWriteResponse, TxnState, WriteOp,
};
use ringkv_ring::{NodeId, ShardId};
use tokio::time::Instant;
use tonic::{Code, Status};
use tracing::debug;

use crate::attempt_timeout::{WriteAttempts, WriteLatency};
use crate::backoff::{Backoff, BackoffConfig};
use crate::classify::{classify, Classified, Failure};
use crate::error::{RequestId, RouterError};
use crate::node_api::{NodeApi, TxnCall, TxnReply};
use crate::topology::{RouteError, RouteMode, Target, TopologyHandle};

/// A transaction's lock met by a request.
#[derive(Debug, Clone)]
pub struct MetLock {
    pub key: Vec<u8>,
    pub start_ts: u64,
    pub primary: Vec<u8>,
}

/// Not-leader hints followed in a row without backing off (leadership may be moving).
const MAX_REDIRECTS_WITHOUT_BACKOFF: u32 = 3;
/// Least time left for a write attempt to start: one that cannot finish (a node's write
/// waits on its log's sync) would only leave the write's outcome unknown, where giving up
/// before it leaves it definitely not applied by this router.
const MIN_WRITE_ATTEMPT: Duration = Duration::from_millis(1);

/// Per-attempt bounds of the retry loop, and how it resolves the locks it meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardSettings {
    /// Timeout of one attempt (capped by the time left).
    pub rpc_timeout: Duration,
    pub backoff: BackoffConfig,
    /// NEGATIVE CONTROL ONLY (`--unsafe-resolve-without-primary`): a lock met is rolled
    /// back at once, without asking its primary's record (see [`Forwarder::resolve_lock`]).
    pub unsafe_resolve_without_primary: bool,
    /// NEGATIVE CONTROL ONLY (`--unsafe-fresh-request-id-per-attempt`): each attempt of a
    /// write or delete-range carries a random request id instead of the request's, so the
    /// node cannot recognise a retry (see [`Forwarder::write`]).
    pub unsafe_fresh_request_id_per_attempt: bool,
}

/// Sends shard requests to nodes, retrying within the request deadline.
pub struct Forwarder<N> {
    nodes: Arc<N>,
    topology: TopologyHandle,
    settings: ForwardSettings,
    /// How long writes take at each node: their attempts' timeouts.
    write_latency: WriteLatency,
}

impl<N: NodeApi> Forwarder<N> {
    pub fn new(nodes: Arc<N>, topology: TopologyHandle, settings: ForwardSettings) -> Self {
        Forwarder {
            nodes,
            topology,
            settings,
            write_latency: WriteLatency::new(settings.rpc_timeout),
        }
    }

    /// `ShardKv.Read` of `keys` (all in `shard`), linearizable through the leader or stale
    /// from any replica; at `read_ts` (not 0), a snapshot read through the leader; with
    /// `uncommitted`, the newest values with provisional ones, through the leader.
    #[allow(clippy::too_many_arguments)]
    pub async fn read(
        &self,
        shard: ShardId,
        shard_count: u32,
        keys: Vec<Vec<u8>>,
        consistency: Consistency,
        read_ts: u64,
        uncommitted: bool,
        deadline: Instant,
    ) -> Result<ShardReadResponse, RouterError> {
        let request = ShardReadRequest {
            shard_id: shard.0,
            keys,
            consistency: consistency as i32,
            read_ts,
            read_uncommitted: uncommitted,
            max_bytes: 0,
        };
        self.read_page(shard_count, request, consistency, deadline).await
    }

    /// `ShardKv.Read` as [`Forwarder::read`] does, of a request built by the caller (with a
    /// byte budget: the node may answer a prefix of the keys, with `more`).
    pub async fn read_page(
        &self,
        shard_count: u32,
        request: ShardReadRequest,
        consistency: Consistency,
        deadline: Instant,
    ) -> Result<ShardReadResponse, RouterError> {
        let shard = ShardId(request.shard_id);
        let mode = match consistency {
            Consistency::Stale if request.read_ts == 0 => RouteMode::AnyReplica {
                rotation: usize::from(rand::random::<u16>()),
            },
            _ => RouteMode::Leader,
        };
        let nodes = &self.nodes;
        self.run(shard, shard_count, mode, None, deadline, |target, timeout| {
            let request = request.clone();
            async move { nodes.read(&target.addr, request, timeout).await }
        })
        .await
    }

    /// `ShardKv.Write` of `ops` (one Raft entry) with a fixed request id, through the leader:
    /// one result per op. Every attempt sends the same request, id included — the
    /// client's, or the one the router chose for a request that came without (chosen once
    /// per request; see `validate::request_id_or_random`) — so the node's
    /// de-duplication makes each retry safe, after an ambiguous attempt too.
    pub async fn write(
        &self,
        shard: ShardId,
        shard_count: u32,
        request_id: RequestId,
        ops: Vec<WriteOp>,
        deadline: Instant,
    ) -> Result<ShardWriteResponse, RouterError> {
        let op_count = ops.len();
        let request = ShardWriteRequest {
            shard_id: shard.0,
            request_id: request_id.to_vec(),
            ops,
        };
        let nodes = &self.nodes;
        let fresh_ids = self.settings.unsafe_fresh_request_id_per_attempt;
        self.run(
            shard,
            shard_count,
            RouteMode::Leader,
            Some(request_id),
            deadline,
            |target, timeout| {
                let mut request = request.clone();
                if fresh_ids {
                    request.request_id = rand::random::<RequestId>().to_vec();
                }
                async move {
                    let response = nodes.write(&target.addr, request, timeout).await?;
                    if response.results.len() != op_count {
                        // The node took the write but its answer breaks the contract: the
                        // write may be applied, so this is an unflagged (ambiguous) failure,
                        // reported outcome-unknown, never as a plain error.
                        return Err(Status::internal(format!(
                            "the node answered {} results for {op_count} ops",
                            response.results.len()
                        )));
                    }
                    Ok(response)
                }
            },
        )
        .await
    }

    /// `ShardKv.Scan` of one shard's part of a range: through the leader, or any replica
    /// for stale reads.
    pub async fn scan(
        &self,
        shard_count: u32,
        request: ShardScanRequest,
        deadline: Instant,
    ) -> Result<ShardScanResponse, RouterError> {
        let shard = ShardId(request.shard_id);
        let mode = read_mode(request.consistency);
        let nodes = &self.nodes;
        self.run(shard, shard_count, mode, None, deadline, |target, timeout| {
            let request = request.clone();
            async move { nodes.scan(&target.addr, request, timeout).await }
        })
        .await
    }

    /// Opens `ShardKv.Watch` of one shard's part of a range at its leader.
    pub async fn watch(
        &self,
        shard_count: u32,
        request: ringkv_proto::v1::ShardWatchRequest,
        deadline: Instant,
    ) -> Result<crate::node_api::ShardWatchStream, RouterError> {
        let shard = ShardId(request.shard_id);
        let nodes = &self.nodes;
        self.run(
            shard,
            shard_count,
            RouteMode::Leader,
            None,
            deadline,
            |target, timeout| {
                let request = request.clone();
                async move { nodes.watch(&target.addr, request, timeout).await }
            },
        )
        .await
    }

    /// `ShardKv.Count` of one shard's part of a range.
    pub async fn count(
        &self,
        shard_count: u32,
        request: ShardCountRequest,
        deadline: Instant,
    ) -> Result<ShardCountResponse, RouterError> {
        let shard = ShardId(request.shard_id);
        let mode = read_mode(request.consistency);
        let nodes = &self.nodes;
        self.run(shard, shard_count, mode, None, deadline, |target, timeout| {
            let request = request.clone();
            async move { nodes.count(&target.addr, request, timeout).await }
        })
        .await
    }

    /// `ShardKv.DeleteRange` (one Raft entry) with the request's id, through the leader.
    pub async fn delete_range(
        &self,
        shard_count: u32,
        request: ShardDeleteRangeRequest,
        deadline: Instant,
    ) -> Result<ShardDeleteRangeResponse, RouterError> {
        let shard = ShardId(request.shard_id);
        let write_id: RequestId = request
            .request_id
            .as_slice()
            .try_into()
            .map_err(|_| RouterError::Internal("delete-range request id is not 16 bytes".to_string()))?;
        let nodes = &self.nodes;
        let fresh_ids = self.settings.unsafe_fresh_request_id_per_attempt;
        self.run(
            shard,
            shard_count,
            RouteMode::Leader,
            Some(write_id),
            deadline,
            |target, timeout| {
                let mut request = request.clone();
                if fresh_ids {
                    request.request_id = rand::random::<RequestId>().to_vec();
                }
                async move { nodes.delete_range(&target.addr, request, timeout).await }
            },
        )
        .await
    }

    async fn run<T, F, Fut>(
        &self,
        shard: ShardId,
        shard_count: u32,
        mode: RouteMode,
        write_id: Option<RequestId>,
        deadline: Instant,
        mut call: F,
    ) -> Result<T, RouterError>
    where
        F: FnMut(Target, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut state = RetryState::new(shard, write_id);
        let mut backoff = Backoff::new(self.settings.backoff);
        let mut redirect: Option<Target> = None;
        let mut redirects_in_a_row = 0u32;
        // A write's attempts, and how long the next may take.
        let mut write_attempts = WriteAttempts::default();
        loop {
            let now = Instant::now();
            if now >= deadline || (write_id.is_some() && deadline - now < MIN_WRITE_ATTEMPT) {
                return Err(state.give_up());
            }
            let target = match redirect.take() {
                Some(target) => target,
                None => match self
                    .topology
                    .route(shard, shard_count, mode, state.attempts as usize)
                {
                    Ok(target) => target,
                    Err(RouteError::ShardCountChanged { expected, actual }) => {
                        return Err(state.ring_changed(expected, actual));
                    }
                    Err(err) => {
                        state.record(&Classified::no_route(err.to_string()), "router");
                        self.topology.request_refresh();
                        pause(&mut backoff, deadline).await;
                        continue;
                    }
                },
            };
            // The fresh-id negative control keeps the old fixed timer, so its retries after
            // attempts that applied keep coming (what the control must show to be caught).
            let attempt_timeout = match write_id {
                Some(_) if !self.settings.unsafe_fresh_request_id_per_attempt => {
                    let node_timeout = self.write_latency.attempt_timeout(&target.addr);
                    write_attempts.start(&target.addr, node_timeout)
                }
                _ => self.settings.rpc_timeout,
            }
            .min(deadline - now);
            state.attempts += 1;
            let outcome = tokio::time::timeout(attempt_timeout, call(target.clone(), attempt_timeout)).await;
            let classified = match outcome {
                Ok(Ok(value)) => {
                    if let Some(took) = write_attempts.latency_at(&target.addr) {
                        self.write_latency.record(&target.addr, took);
                    }
                    return Ok(value);
                }
                Ok(Err(status)) => classify(&status),
                Err(_elapsed) => Classified::timeout(),
            };
            // Out of time (here, or at the node, which bounds the call by the same timeout):
            // the write's next attempt, and the node's, get longer.
            if write_id.is_some() && now.elapsed() >= attempt_timeout {
                write_attempts.timed_out(attempt_timeout, self.write_latency.cap());
                self.write_latency.timed_out(&target.addr, attempt_timeout);
            }
            debug!(
                shard = shard.0,
                addr = %target.addr,
                attempt = state.attempts,
                failure = %classified.detail,
                "shard request attempt failed"
            );
            state.record(&classified, &target.addr);
            if let Failure::RequestIdReused { message } = &classified.failure {
                return Err(state.request_id_reused(&target.addr, message));
            }
            if let Failure::Fatal { code, message } = &classified.failure {
                return Err(state.fatal(&target.addr, *code, message));
            }
            if let Failure::Locked {
                key,
                start_ts,
                primary,
            } = &classified.failure
            {
                let lock = MetLock {
                    key: key.clone(),
                    start_ts: *start_ts,
                    primary: primary.clone(),
                };
                // Resolved: retry at once. Still pending (or unresolvable now): wait.
                if let Ok(true) = self.resolve_lock(shard_count, lock, deadline).await {
                    continue;
                }
                pause(&mut backoff, deadline).await;
                continue;
            }
            if classified.failure.invalidates_leader() {
                if let Some(node_id) = target.node_id {
                    self.topology.invalidate(shard, node_id);
                }
            }
            if let Failure::NotLeader {
                leader_id,
                leader_addr,
            } = &classified.failure
            {
                if let Some(next) = self.follow_hint(shard, *leader_id, leader_addr.as_deref()) {
                    let moves_on = next.addr != target.addr;
                    redirect = Some(next);
                    if moves_on && redirects_in_a_row < MAX_REDIRECTS_WITHOUT_BACKOFF {
                        redirects_in_a_row += 1;
                        continue;
                    }
                }
            }
            redirects_in_a_row = 0;
            // A hint that could not be followed at once is as good as no leader known.
            let unfollowed_hint = matches!(classified.failure, Failure::NotLeader { .. });
            if classified.failure.wants_refresh() || unfollowed_hint {
                self.topology.request_refresh();
            }
            pause(&mut backoff, deadline).await;
        }
    }

    /// A fresh backoff with the retry loop's settings.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.settings.backoff)
    }

    /// A transaction command at its shard's leader. Every one is idempotent, so any failure
    /// is retried within the deadline (an ambiguous attempt cannot apply twice).
    pub async fn txn(
        &self,
        shard_count: u32,
        call: TxnCall,
        deadline: Instant,
    ) -> Result<TxnReply, RouterError> {
        let shard = ShardId(call.shard_id());
        let nodes = &self.nodes;
        self.run(
            shard,
            shard_count,
            RouteMode::Leader,
            None,
            deadline,
            |target, timeout| {
                let call = call.clone();
                async move { nodes.txn(&target.addr, call, timeout).await }
            },
        )
        .await
    }

    /// A transaction command answered by a status (commit, rollback, status check).
    pub async fn txn_status(
        &self,
        shard_count: u32,
        call: TxnCall,
        deadline: Instant,
    ) -> Result<ShardTxnStatusResponse, RouterError> {
        let shard = ShardId(call.shard_id());
        match self.txn(shard_count, call, deadline).await? {
            TxnReply::Status(status) => Ok(status),
            _ => Err(RouterError::BadNodeResponse {
                shard,
                reason: "not a status in answer to a status call".to_string(),
            }),
        }
    }

    /// Resolves a lock a request met: asks the shard of the lock's primary key what became
    /// of its transaction (which rolls back one past its time to live), then commits or
    /// rolls back the locked key to match. `Ok(false)`: the transaction is still pending.
    /// Boxed: it runs inside the retry loop and runs the retry loop itself.
    ///
    /// With the `unsafe_resolve_without_primary` negative control, the locked key is rolled
    /// back at once whatever the record says: a transaction that commits (or committed)
    /// loses that write, which the jepsen append workload must catch.
    pub fn resolve_lock<'a>(
        &'a self,
        shard_count: u32,
        lock: MetLock,
        deadline: Instant,
    ) -> Pin<Box<dyn Future<Output = Result<bool, RouterError>> + Send + 'a>> {
        Box::pin(async move {
            let Some(view) = self.topology.ring() else {
                return Ok(false);
            };
            let primary_shard = view.ring.shard_for_key(&lock.primary).0;
            let key_shard = view.ring.shard_for_key(&lock.key).0;
            if self.settings.unsafe_resolve_without_primary {
                // Removes the lock only (`primary: false`), even the primary key's: the
                // record stays as it is, and the transaction's commit skips the key.
                let rollback = TxnCall::Rollback(ShardTxnRollbackRequest {
                    shard_id: key_shard,
                    start_ts: lock.start_ts,
                    keys: vec![lock.key],
                    primary: false,
                });
                debug!(
                    start_ts = lock.start_ts,
                    "rolling a lock back without its record (negative control)"
                );
                self.txn_status(shard_count, rollback, deadline).await?;
                return Ok(true);
            }
            let check = TxnCall::CheckStatus(ShardTxnCheckStatusRequest {
                shard_id: primary_shard,
                start_ts: lock.start_ts,
                primary: lock.primary.clone(),
            });
            let status = match self.txn_status(shard_count, check, deadline).await {
                Ok(status) => status,
                // Below the transaction safe point without a record: garbage-collected after
                // every lock of a committed transaction was resolved, so this lock's
                // transaction never committed.
                Err(RouterError::Node {
                    code: tonic::Code::OutOfRange,
                    ..
                }) => ShardTxnStatusResponse {
                    state: TxnState::RolledBack as i32,
                    ..ShardTxnStatusResponse::default()
                },
                Err(err) => return Err(err),
            };
            let resolve = match TxnState::try_from(status.state) {
                Ok(TxnState::Committed) => TxnCall::Commit(ShardTxnCommitRequest {
                    shard_id: key_shard,
                    start_ts: lock.start_ts,
                    commit_ts: status.commit_ts,
                    keys: vec![lock.key],
                    primary: false,
                }),
                Ok(TxnState::RolledBack) => TxnCall::Rollback(ShardTxnRollbackRequest {
                    shard_id: key_shard,
                    start_ts: lock.start_ts,
                    keys: vec![lock.key],
                    primary: false,
                }),
                Ok(TxnState::Pending) | Err(_) => return Ok(false),
            };
            debug!(start_ts = lock.start_ts, state = status.state, "resolving a lock");
            self.txn_status(shard_count, resolve, deadline).await?;
            Ok(true)
        })
    }

    /// Records a not-leader hint and returns where to send the next attempt.
    fn follow_hint(
        &self,
        shard: ShardId,
        leader_id: Option<NodeId>,
        leader_addr: Option<&str>,
    ) -> Option<Target> {
        let Some(leader_id) = leader_id else {
            return leader_addr.map(|addr| Target {
                node_id: None,
                addr: addr.to_string(),
            });
        };
        self.topology.update_leader(shard, leader_id, leader_addr);
        let addr = self
            .topology
            .node_addr(leader_id)
            .or_else(|| leader_addr.map(str::to_string))?;
        Some(Target {
            node_id: Some(leader_id),
            addr,
        })
    }
}

/// Leader for linearizable reads; any replica (rotating) for stale ones.
fn read_mode(consistency: i32) -> RouteMode {
    if consistency == Consistency::Stale as i32 {
        RouteMode::AnyReplica {
            rotation: usize::from(rand::random::<u16>()),
        }
    } else {
        RouteMode::Leader
    }
}

/// Sleeps for the next backoff delay, never past the deadline.
pub(crate) async fn pause(backoff: &mut Backoff, deadline: Instant) {
    let wake = (Instant::now() + backoff.next_delay()).min(deadline);
    tokio::time::sleep_until(wake).await;
}

/// The bookkeeping of one request's attempts: how many, the last failure, and whether any
/// write attempt was ambiguous.
#[derive(Debug)]
struct RetryState {
    shard: ShardId,
    write_id: Option<RequestId>,
    attempts: u32,
    ambiguous: bool,
    last_failure: Option<Failure>,
    last_error: String,
}

impl RetryState {
    fn new(shard: ShardId, write_id: Option<RequestId>) -> Self {
        RetryState {
            shard,
            write_id,
            attempts: 0,
            ambiguous: false,
            last_failure: None,
            last_error: "the deadline passed before any attempt".to_string(),
        }
    }

    fn record(&mut self, classified: &Classified, addr: &str) {
        if self.write_id.is_some() && !classified.definitely_not_applied {
            self.ambiguous = true;
        }
        self.last_failure = Some(classified.failure.clone());
        self.last_error = format!("{addr}: {}", classified.detail);
    }

    /// The error once the deadline has passed.
    fn give_up(&self) -> RouterError {
        if let Some(request_id) = self.ambiguous_write() {
            return self.outcome_unknown(request_id);
        }
        match self.last_failure {
            None | Some(Failure::Timeout) => RouterError::DeadlineExceeded {
                shard: self.shard,
                attempts: self.attempts,
                last_error: self.last_error.clone(),
            },
            Some(_) => RouterError::ShardUnavailable {
                shard: self.shard,
                attempts: self.attempts,
                last_error: self.last_error.clone(),
            },
        }
    }

    /// The error when the shard count changed under the request: the request stops, but a
    /// write that an earlier attempt may have applied stays outcome-unknown.
    fn ring_changed(&self, expected: u32, actual: u32) -> RouterError {
        if let Some(request_id) = self.ambiguous_write() {
            return self.outcome_unknown(request_id);
        }
        RouterError::RingChanged { expected, actual }
    }

    /// The error for a failure that is not retried.
    fn fatal(&self, addr: &str, code: Code, message: &str) -> RouterError {
        if let Some(request_id) = self.ambiguous_write() {
            return self.outcome_unknown(request_id);
        }
        RouterError::Node {
            shard: self.shard,
            node: addr.to_string(),
            code,
            message: message.to_string(),
        }
    }

    /// The error for a request id the shard remembers for a different request. Definite
    /// even after an ambiguous attempt: every attempt sent the same request, so had one been
    /// applied, its record would match this one.
    fn request_id_reused(&self, addr: &str, message: &str) -> RouterError {
        match self.write_id {
            Some(request_id) => RouterError::RequestIdReused {
                shard: self.shard,
                request_id,
            },
            None => RouterError::Node {
                shard: self.shard,
                node: addr.to_string(),
                code: Code::InvalidArgument,
                message: message.to_string(),
            },
        }
    }

    fn ambiguous_write(&self) -> Option<RequestId> {
        self.write_id.filter(|_| self.ambiguous)
    }

    fn outcome_unknown(&self, request_id: RequestId) -> RouterError {
        RouterError::OutcomeUnknown {
            shard: self.shard,
            request_id,
            attempts: self.attempts,
            last_error: self.last_error.clone(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;

    use ringkv_proto::metadata;
    use ringkv_proto::v1::{KeyValueResult, NodeStatusResponse, WriteKind, WriteOpResult};

    use super::*;
    use crate::convert::tests::ring_info;
    use crate::error::to_status;
    use crate::topology::NodeObservation;

    /// What a fake node does with one call.
    #[derive(Debug)]
    pub(crate) enum Script {
        /// Answer successfully.
        Ok,
        /// Fail with this status.
        Fail(Status),
        /// Never answer.
        Hang,
        /// Answer successfully after this long.
        Slow(Duration),
        /// Writes: every op's comparison failed on a key at this version, whose value the
        /// reply leaves out (other calls: answer successfully).
        ComparisonFailed { current_version: u64 },
        /// Writes: answer one result fewer than the ops (other calls: answer successfully).
        ShortReply,
    }

    /// An in-process fake of the node calls: scripted per address, recording every call.
    #[derive(Debug, Default)]
    pub(crate) struct FakeNodes {
        scripts: Mutex<HashMap<String, VecDeque<Script>>>,
        /// What to do when an address has no script left.
        default: Mutex<HashMap<String, fn() -> Script>>,
        pub(crate) calls: Mutex<Vec<(String, Vec<u8>)>>,
        pub(crate) statuses: Mutex<HashMap<String, Result<NodeStatusResponse, Status>>>,
        /// Shards whose writes and delete-ranges every node refuses (rejected UNAVAILABLE).
        pub(crate) refused_shards: Mutex<Vec<u32>>,
    }

    impl FakeNodes {
        pub(crate) fn script(&self, addr: &str, steps: Vec<Script>) {
            if let Ok(mut scripts) = self.scripts.lock() {
                scripts.entry(addr.to_string()).or_default().extend(steps);
            }
        }

        pub(crate) fn always(&self, addr: &str, step: fn() -> Script) {
            if let Ok(mut defaults) = self.default.lock() {
                defaults.insert(addr.to_string(), step);
            }
        }

        fn next(&self, addr: &str, request_id: Vec<u8>) -> Script {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push((addr.to_string(), request_id));
            }
            let scripted = self
                .scripts
                .lock()
                .ok()
                .and_then(|mut scripts| scripts.get_mut(addr).and_then(VecDeque::pop_front));
            if let Some(step) = scripted {
                return step;
            }
            let default = self.default.lock().ok().and_then(|d| d.get(addr).copied());
            default.map_or(Script::Ok, |make| make())
        }

        /// Refuses every write and delete-range of `shard` from now on.
        pub(crate) fn refuse_shard(&self, shard: u32) {
            if let Ok(mut refused) = self.refused_shards.lock() {
                refused.push(shard);
            }
        }

        fn refuses(&self, shard: u32) -> bool {
            self.refused_shards
                .lock()
                .map(|refused| refused.contains(&shard))
                .unwrap_or(false)
        }

        pub(crate) fn called_addrs(&self) -> Vec<String> {
            self.calls
                .lock()
                .map(|calls| calls.iter().map(|(addr, _)| addr.clone()).collect())
                .unwrap_or_default()
        }
    }

    async fn play<T>(step: Script, ok: T) -> Result<T, Status> {
        match step {
            Script::Ok | Script::ComparisonFailed { .. } | Script::ShortReply => Ok(ok),
            Script::Fail(status) => Err(status),
            Script::Hang => std::future::pending().await,
            Script::Slow(delay) => {
                tokio::time::sleep(delay).await;
                Ok(ok)
            }
        }
    }

    impl NodeApi for FakeNodes {
        async fn read(
            &self,
            addr: &str,
            request: ShardReadRequest,
            _timeout: Duration,
        ) -> Result<ShardReadResponse, Status> {
            let step = self.next(addr, Vec::new());
            let results = request
                .keys
                .iter()
                .map(|key| KeyValueResult {
                    expires_at_ts: 0,
                    key: key.clone(),
                    found: true,
                    value: addr.as_bytes().to_vec(),
                    version: 1,
                })
                .collect();
            play(step, ShardReadResponse { results, more: false }).await
        }

        async fn write(
            &self,
            addr: &str,
            request: ShardWriteRequest,
            _timeout: Duration,
        ) -> Result<ShardWriteResponse, Status> {
            let step = self.next(addr, request.request_id.clone());
            if self.refuses(request.shard_id) {
                let mut status = Status::unavailable("no leader");
                metadata::set_rejected(&mut status);
                return Err(status);
            }
            let answered = match step {
                Script::ShortReply => request.ops.len().saturating_sub(1),
                _ => request.ops.len(),
            };
            let results = request
                .ops
                .iter()
                .take(answered)
                .enumerate()
                .map(|(index, _)| match step {
                    Script::ComparisonFailed { current_version } => WriteOpResult {
                        existed: true,
                        current_found: true,
                        current_version,
                        current_value_omitted: true,
                        ..WriteOpResult::default()
                    },
                    _ => WriteOpResult {
                        succeeded: true,
                        version: 100 + index as u64,
                        ..WriteOpResult::default()
                    },
                })
                .collect();
            play(step, ShardWriteResponse { results }).await
        }

        async fn scan(
            &self,
            addr: &str,
            _request: ShardScanRequest,
            _timeout: Duration,
        ) -> Result<ShardScanResponse, Status> {
            let step = self.next(addr, Vec::new());
            play(step, ShardScanResponse::default()).await
        }

        async fn count(
            &self,
            addr: &str,
            _request: ShardCountRequest,
            _timeout: Duration,
        ) -> Result<ShardCountResponse, Status> {
            let step = self.next(addr, Vec::new());
            play(step, ShardCountResponse::default()).await
        }

        async fn delete_range(
            &self,
            addr: &str,
            request: ShardDeleteRangeRequest,
            _timeout: Duration,
        ) -> Result<ShardDeleteRangeResponse, Status> {
            let step = self.next(addr, request.request_id.clone());
            if self.refuses(request.shard_id) {
                let mut status = Status::unavailable("no leader");
                metadata::set_rejected(&mut status);
                return Err(status);
            }
            play(step, ShardDeleteRangeResponse::default()).await
        }

        async fn node_status(&self, addr: &str, _timeout: Duration) -> Result<NodeStatusResponse, Status> {
            let answer = self
                .statuses
                .lock()
                .ok()
                .and_then(|mut statuses| statuses.remove(addr));
            match answer {
                Some(answer) => answer,
                None => Err(Status::unavailable("no status scripted")),
            }
        }
    }

    pub(crate) fn topology_3_nodes() -> TopologyHandle {
        let topology = TopologyHandle::new();
        let pass = topology.begin_pass();
        topology.finish_pass(
            pass,
            &[NodeObservation {
                addr: "n1:7001".into(),
                status: NodeStatusResponse {
                    node_id: 1,
                    cluster_id: "test-cluster".into(),
                    ring: Some(ring_info(3, 8, 3)),
                    ..NodeStatusResponse::default()
                },
            }],
        );
        topology
    }

    const SHARD: ShardId = ShardId(3);

    fn forwarder(nodes: &Arc<FakeNodes>, topology: &TopologyHandle) -> Forwarder<FakeNodes> {
        Forwarder::new(
            Arc::clone(nodes),
            topology.clone(),
            ForwardSettings {
                rpc_timeout: Duration::from_millis(100),
                backoff: BackoffConfig {
                    initial: Duration::from_millis(10),
                    max: Duration::from_millis(50),
                },
                unsafe_resolve_without_primary: false,
                unsafe_fresh_request_id_per_attempt: false,
            },
        )
    }

    fn placement(topology: &TopologyHandle) -> Vec<String> {
        let Some(view) = topology.ring() else {
            panic!("ring expected")
        };
        view.ring
            .replicas(SHARD)
            .iter()
            .map(|id| format!("n{id}:7001"))
            .collect()
    }

    fn not_leader(leader: u64, rejected: bool) -> Status {
        let mut status = Status::unavailable("not the leader");
        metadata::set_leader_hint(&mut status, leader, Some(&format!("n{leader}:7001")));
        if rejected {
            metadata::set_rejected(&mut status);
        }
        status
    }

    fn rejected_unavailable() -> Script {
        let mut status = Status::unavailable("no leader");
        metadata::set_rejected(&mut status);
        Script::Fail(status)
    }

    fn put_op() -> Vec<WriteOp> {
        vec![WriteOp {
            keep_value: false,
            ttl_ms: 0,
            expires_at_ts: 0,
            key: b"k".to_vec(),
            kind: WriteKind::Put as i32,
            value: b"v".to_vec(),
            expected_version: None,
        }]
    }

    fn deadline_in(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    /// A not-leader hint is followed at once, and the leader is cached for the next request.
    #[tokio::test(start_paused = true)]
    async fn follows_leader_hints() {
        let nodes = Arc::new(FakeNodes::default());
        let topology = topology_3_nodes();
        let replicas = placement(&topology);
        let leader_id: u64 = match replicas[2].trim_start_matches('n').split(':').next() {
            Some(id) => id.parse().unwrap_or(0),
            None => 0,
        };
        nodes.script(&replicas[0], vec![Script::Fail(not_leader(leader_id, true))]);
        let forwarder = forwarder(&nodes, &topology);
        let start = Instant::now();
        let result = forwarder
            .read(
                SHARD,
                8,
                vec![b"k".to_vec()],
                Consistency::Linearizable,
                0,
                false,
                deadline_in(1000),
            )
            .await;
        assert!(result.is_ok());
        assert_eq!(
            nodes.called_addrs(),
            vec![replicas[0].clone(), replicas[2].clone()]
        );
        assert_eq!(Instant::now(), start, "a hint is followed without backoff");
        assert_eq!(topology.leader(SHARD).map(|l| l.node_id), Some(leader_id));

        let again = forwarder
            .read(
                SHARD,
                8,
                vec![b"k".to_vec()],
                Consistency::Linearizable,
                0,
                false,
                deadline_in(1000),
            )
            .await;
        assert!(again.is_ok());
        assert_eq!(nodes.called_addrs().last(), Some(&replicas[2]));
    }

    /// An ambiguous attempt followed by a success is a success, with the same request id.
    #[tokio::test(start_paused = true)]
    async fn retries_writes_with_the_same_id() {
        let nodes = Arc::new(FakeNodes::default());
        let topology = topology_3_nodes();
        let replicas = placement(&topology);
        nodes.script(&replicas[0], vec![Script::Hang]);
        let forwarder = forwarder(&nodes, &topology);
        let result = forwarder
            .write(SHARD, 8, [9u8; 16], put_op(), deadline_in(1000))
            .await;
        assert!(result.is_ok());
        let calls = nodes.calls.lock().map(|c| c.clone()).unwrap_or_default();
        assert_eq!(calls.len(), 2);
        assert!(calls.iter().all(|(_, id)| id == &vec![9u8; 16]));
    }

    /// A write that takes its node longer than `rpc_timeout` still completes (issue 14):
    /// the attempt after one that ran out of time gets twice as long, and the node's
    /// latency lengthens its writes' attempts from then on.
    #[tokio::test(start_paused = true)]
    async fn write_attempts_outlast_a_slow_node() {
        let nodes = Arc::new(FakeNodes::default());
        let topology = topology_3_nodes();
        let replicas = placement(&topology);
        for addr in &replicas {
            nodes.always(addr, || Script::Slow(Duration::from_millis(150)));
        }
        let forwarder = forwarder(&nodes, &topology);
        let start = Instant::now();
        let result = forwarder
            .write(SHARD, 8, [9u8; 16], put_op(), deadline_in(1000))
            .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(
            nodes.called_addrs().len(),
            2,
            "one attempt timed out, the next one succeeded"
        );
        assert!(Instant::now() - start < Duration::from_millis(400));
        let answered = &nodes.called_addrs()[1];
        assert!(forwarder.write_latency.attempt_timeout(answered) > Duration::from_millis(150));
        // Reads keep `rpc_timeout`: every attempt times out.
        let read = forwarder
            .read(
                SHARD,
                8,
                vec![b"k".to_vec()],
                Consistency::Linearizable,
                0,
                false,
                deadline_in(500),
            )
            .await;
        assert!(
            matches!(read, Err(RouterError::DeadlineExceeded { .. })),
            "{read:?}"
        );
    }

    /// The negative control `--unsafe-fresh-request-id-per-attempt` really breaks the retry:
    /// no attempt carries the request's id, and no two carry the same.
    #[tokio::test(start_paused = true)]
    async fn the_fresh_id_control_gives_every_attempt_its_own_id() {
        let nodes = Arc::new(FakeNodes::default());
        let topology = topology_3_nodes();
        let replicas = placement(&topology);
        nodes.script(&replicas[0], vec![Script::Hang]);
        let mut forwarder = forwarder(&nodes, &topology);
        forwarder.settings.unsafe_fresh_request_id_per_attempt = true;
        let result = forwarder
            .write(SHARD, 8, [9u8; 16], put_op(), deadline_in(1000))
            .await;
        assert!(result.is_ok());
        let calls = nodes.calls.lock().map(|c| c.clone()).unwrap_or_default();
        assert_eq!(calls.len(), 2);
        assert!(calls.iter().all(|(_, id)| id != &vec![9u8; 16] && id.len() == 16));
        assert_ne!(calls[0].1, calls[1].1);
    }

    /// When the deadline passes after an ambiguous attempt, the write's outcome is unknown.
    #[tokio::test(start_paused = true)]
    async fn ambiguous_writes_end_as_outcome_unknown() {
        let nodes = Arc::new(FakeNodes::default());
        let topology = topology_3_nodes();
        let replicas = placement(&topology);
        nodes.script(&replicas[0], vec![Script::Hang]);
        for addr in &replicas {
            nodes.always(addr, rejected_unavailable);
        }
        let forwarder = forwarder(&nodes, &topology);
        let result = forwarder
            .write(SHARD, 8, [1u8; 16], put_op(), deadline_in(500))
            .await;
        let Err(err) = result else {
            panic!("expected an error")
        };
        assert!(matches!(err, RouterError::OutcomeUnknown { .. }), "{err}");
        let status = to_status(&err);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().starts_with("write outcome unknown: "));
        assert!(metadata::is_outcome_unknown(&status));
    }

    /// When every attempt was definitely rejected, the error carries no outcome-unknown flag.
    #[tokio::test(start_paused = true)]
    async fn definite_rejections_are_plain_failures() {
        let nodes = Arc::new(FakeNodes::default());
        let topology = topology_3_nodes();
        for addr in placement(&topology) {
            nodes.always(&addr, rejected_unavailable);
        }
        let forwarder = forwarder(&nodes, &topology);
        let start = Instant::now();
        let result = forwarder
            .write(SHARD, 8, [1u8; 16], put_op(), deadline_in(300))
            .await;
        let Err(err) = result else {
            panic!("expected an error")
        };
        assert!(matches!(err, RouterError::ShardUnavailable { .. }), "{err}");
        assert!(!metadata::is_outcome_unknown(&to_status(&err)));
        // Bounded by the deadline, with several backed-off attempts in between.
        assert_eq!(Instant::now() - start, Duration::from_millis(300));
        let attempts = nodes.called_addrs().len();
        assert!((4..=30).contains(&attempts), "{attempts} attempts");
    }

    /// A write whose shard count changes after an ambiguous attempt stops, outcome-unknown
    /// (the attempt may have been applied under the old ring); before, it was reported as a
    /// plain "the cluster changed" UNAVAILABLE.
    #[tokio::test(start_paused = true)]
    async fn a_ring_change_after_an_ambiguous_attempt_is_outcome_unknown() {
        let nodes = Arc::new(FakeNodes::default());
        let topology = topology_3_nodes();
        let replicas = placement(&topology);
        nodes.script(&replicas[0], vec![Script::Hang]);
        let forwarder = forwarder(&nodes, &topology);
        let write = forwarder.write(SHARD, 8, [4u8; 16], put_op(), deadline_in(1000));
        let resize = async {
            while nodes.called_addrs().is_empty() {
                tokio::task::yield_now().await;
            }
            let mut ring = ring_info(3, 16, 3);
            ring.epoch = 2;
            let pass = topology.begin_pass();
            topology.finish_pass(
                pass,
                &[NodeObservation {
                    addr: "n1:7001".into(),
                    status: NodeStatusResponse {
                        node_id: 1,
                        cluster_id: "test-cluster".into(),
                        ring: Some(ring),
                        ..NodeStatusResponse::default()
                    },
                }],
            );
        };
        let (result, ()) = tokio::join!(write, resize);
        let Err(err) = result else {
            panic!("expected an error")
        };
        assert!(matches!(err, RouterError::OutcomeUnknown { .. }), "{err}");
        assert!(metadata::is_outcome_unknown(&to_status(&err)));
        assert_eq!(nodes.called_addrs().len(), 1, "not sent under the new ring");

        // A write that no attempt reached still reports the ring change.
        let again = forwarder
            .write(SHARD, 8, [5u8; 16], put_op(), deadline_in(1000))
            .await;
        assert!(matches!(again, Err(RouterError::RingChanged { .. })), "{again:?}");
    }

    /// A node that took a write but answered a result count that breaks the contract may
    /// have applied it: outcome unknown (marked), not an INTERNAL failure.
    #[tokio::test(start_paused = true)]
    async fn a_write_answer_with_the_wrong_result_count_is_outcome_unknown() {
        let nodes = Arc::new(FakeNodes::default());
        let topology = topology_3_nodes();
        let replicas = placement(&topology);
        nodes.script(&replicas[0], vec![Script::ShortReply]);
        let forwarder = forwarder(&nodes, &topology);
        let result = forwarder
            .write(SHARD, 8, [6u8; 16], put_op(), deadline_in(1000))
            .await;
        let Err(err) = result else {
            panic!("expected an error")
        };
        assert!(matches!(err, RouterError::OutcomeUnknown { .. }), "{err}");
        let status = to_status(&err);
        assert!(metadata::is_outcome_unknown(&status));
        assert!(
            status.message().contains("0 results for 1 ops"),
            "{}",
            status.message()
        );
    }

    /// A node's INVALID_ARGUMENT is returned as is, without retrying.
    #[tokio::test(start_paused = true)]
    async fn invalid_argument_is_passed_through() {
        let nodes = Arc::new(FakeNodes::default());
        let topology = topology_3_nodes();
        let replicas = placement(&topology);
        nodes.script(
            &replicas[0],
            vec![Script::Fail(Status::invalid_argument("key belongs elsewhere"))],
        );
        let forwarder = forwarder(&nodes, &topology);
        let result = forwarder
            .write(SHARD, 8, [1u8; 16], put_op(), deadline_in(1000))
            .await;
        let Err(err) = result else {
            panic!("expected an error")
        };
        let status = to_status(&err);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "key belongs elsewhere");
        assert_eq!(nodes.called_addrs().len(), 1);
    }

    /// A reused request id is returned after one attempt, as is, never retried; even after
    /// an ambiguous attempt it is definite (the same request cannot have been applied).
    #[tokio::test(start_paused = true)]
    async fn a_reused_request_id_is_returned_not_retried() {
        let nodes = Arc::new(FakeNodes::default());
        let topology = topology_3_nodes();
        let replicas = placement(&topology);
        fn reused() -> Script {
            let mut status = metadata::request_id_reused("request id 09… was already used");
            metadata::set_rejected(&mut status);
            Script::Fail(status)
        }
        nodes.script(&replicas[0], vec![Script::Hang]);
        for addr in &replicas {
            nodes.always(addr, reused);
        }
        let forwarder = forwarder(&nodes, &topology);
        let result = forwarder
            .write(SHARD, 8, [9u8; 16], put_op(), deadline_in(1000))
            .await;
        match result {
            Err(RouterError::RequestIdReused { shard, request_id }) => {
                assert_eq!((shard, request_id), (SHARD, [9u8; 16]))
            }
            other => panic!("expected a reused request id, got {other:?}"),
        }
        assert_eq!(nodes.called_addrs().len(), 2, "the hang, then the answer");
    }

    /// An internal error on a write without the rejected flag is ambiguous, not a failure.
    #[tokio::test(start_paused = true)]
    async fn unflagged_write_errors_are_ambiguous() {
        let nodes = Arc::new(FakeNodes::default());
        let topology = topology_3_nodes();
        let replicas = placement(&topology);
        nodes.script(&replicas[0], vec![Script::Fail(Status::internal("apply failed"))]);
        let forwarder = forwarder(&nodes, &topology);
        let result = forwarder
            .write(SHARD, 8, [1u8; 16], put_op(), deadline_in(1000))
            .await;
        assert!(matches!(result, Err(RouterError::OutcomeUnknown { .. })));

        // The same error on a read is passed through.
        nodes.script(&replicas[0], vec![Script::Fail(Status::internal("disk"))]);
        let read = forwarder
            .read(
                SHARD,
                8,
                vec![b"k".to_vec()],
                Consistency::Linearizable,
                0,
                false,
                deadline_in(1000),
            )
            .await;
        assert!(matches!(
            read,
            Err(RouterError::Node {
                code: Code::Internal,
                ..
            })
        ));
    }

    /// A node's ABORTED is final (a transaction aborted for good): passed back after one
    /// attempt, never replayed as if the node were busy; a rejected write stays rejected.
    #[tokio::test(start_paused = true)]
    async fn aborted_is_returned_not_retried() {
        let nodes = Arc::new(FakeNodes::default());
        let topology = topology_3_nodes();
        let replicas = placement(&topology);
        let mut aborted = Status::aborted("write conflict");
        metadata::set_rejected(&mut aborted);
        nodes.script(&replicas[0], vec![Script::Fail(aborted)]);
        let forwarder = forwarder(&nodes, &topology);
        let result = forwarder
            .write(SHARD, 8, [2u8; 16], put_op(), deadline_in(1000))
            .await;
        match result {
            Err(RouterError::Node {
                code: Code::Aborted,
                message,
                ..
            }) => assert_eq!(message, "write conflict"),
            other => panic!("expected the node's ABORTED, got {other:?}"),
        }
        assert_eq!(
            nodes.called_addrs().len(),
            1,
            "not retried: {:?}",
            nodes.called_addrs()
        );
    }

    /// A write with less than `MIN_WRITE_ATTEMPT` left sends nothing and ends definitely
    /// not applied (DEADLINE_EXCEEDED), not as an outcome unknown of an attempt that could
    /// not finish.
    #[tokio::test(start_paused = true)]
    async fn a_write_without_time_for_an_attempt_sends_nothing() {
        let nodes = Arc::new(FakeNodes::default());
        let topology = topology_3_nodes();
        for addr in placement(&topology) {
            nodes.always(&addr, || Script::Hang);
        }
        let forwarder = forwarder(&nodes, &topology);
        let deadline = Instant::now() + MIN_WRITE_ATTEMPT / 2;
        let result = forwarder.write(SHARD, 8, [9u8; 16], put_op(), deadline).await;
        assert!(
            matches!(result, Err(RouterError::DeadlineExceeded { attempts: 0, .. })),
            "{result:?}"
        );
        assert!(nodes.called_addrs().is_empty(), "{:?}", nodes.called_addrs());
    }

    /// Reads whose attempts all time out end with DEADLINE_EXCEEDED at the deadline.
    #[tokio::test(start_paused = true)]
    async fn timeouts_end_in_deadline_exceeded() {
        let nodes = Arc::new(FakeNodes::default());
        let topology = topology_3_nodes();
        for addr in placement(&topology) {
            nodes.always(&addr, || Script::Hang);
        }
        let forwarder = forwarder(&nodes, &topology);
        let start = Instant::now();
        let result = forwarder
            .read(
                SHARD,
                8,
                vec![b"k".to_vec()],
                Consistency::Linearizable,
                0,
                false,
                deadline_in(250),
            )
            .await;
        assert!(matches!(result, Err(RouterError::DeadlineExceeded { .. })));
        assert_eq!(Instant::now() - start, Duration::from_millis(250));
    }

    /// Stale reads move on to the next replica when one does not host the shard.
    #[tokio::test(start_paused = true)]
    async fn stale_reads_try_other_replicas() {
        let nodes = Arc::new(FakeNodes::default());
        let topology = topology_3_nodes();
        let replicas = placement(&topology);
        for addr in &replicas[..2] {
            nodes.always(addr, || Script::Fail(Status::not_found("shard not hosted")));
        }
        nodes.always(&replicas[2], || {
            Script::Fail(Status::not_found("shard not hosted"))
        });
        nodes.script(&replicas[2], vec![Script::Ok]);
        let forwarder = forwarder(&nodes, &topology);
        let result = forwarder
            .read(
                SHARD,
                8,
                vec![b"k".to_vec()],
                Consistency::Stale,
                0,
                false,
                deadline_in(2000),
            )
            .await;
        let Ok(response) = result else {
            panic!("expected a stale read to succeed")
        };
        assert_eq!(response.results[0].value, replicas[2].as_bytes());
        let called = nodes.called_addrs();
        assert!(called.len() <= 3, "{called:?}");
    }

    /// A changed shard count stops the request instead of sending keys to a wrong shard.
    #[tokio::test(start_paused = true)]
    async fn ring_change_is_reported() {
        let nodes = Arc::new(FakeNodes::default());
        let topology = topology_3_nodes();
        let forwarder = forwarder(&nodes, &topology);
        let result = forwarder
            .read(
                SHARD,
                16,
                vec![b"k".to_vec()],
                Consistency::Linearizable,
                0,
                false,
                deadline_in(100),
            )
            .await;
        assert!(matches!(result, Err(RouterError::RingChanged { .. })));
    }
}
