//! An in-memory mock router for client tests: a versioned map behind the `Kv` and
//! `Admin` services, with scripted failures and a log of the request ids it saw.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_client::proto;
use ringkv_client::proto::admin_server::{Admin, AdminServer};
use ringkv_client::proto::kv_server::{Kv, KvServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Entries per message of a mock ScanStream.
pub const STREAM_CHUNK: usize = 2;
/// Shards a mock Count reports (keys are spread by their first byte).
pub const MOCK_SHARDS: u32 = 2;

type MockStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Shared state of one mock router.
#[derive(Default)]
pub struct MockState {
    /// key -> (value, version)
    pub data: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
    pub next_version: u64,
    /// Statuses returned by the next calls, before any call is served.
    pub failures: VecDeque<Status>,
    /// Delay before answering each call.
    pub delay: Option<Duration>,
    /// Request ids of the writes received, in order.
    pub request_ids: Vec<Vec<u8>>,
    /// Number of calls received.
    pub calls: usize,
    /// Deadlines (grpc-timeout header) received.
    pub saw_deadline: bool,
    /// For each ScanStream or Count call in turn: break the stream with UNAVAILABLE
    /// after this many messages.
    pub stream_breaks: VecDeque<usize>,
    /// For each ScanStream call in turn: stop sending (without ending the stream) after
    /// this many messages.
    pub stream_stalls: VecDeque<usize>,
    /// The continuation token each ScanStream call was opened with.
    pub stream_tokens: Vec<Vec<u8>>,
    /// The limit each ScanStream call was opened with.
    pub stream_limits: Vec<u32>,
    /// When set, a BatchGet that allows paging answers at most this many keys, taken from
    /// the end of the request (so the keys left are not a suffix), and names the others.
    pub batch_get_page: Option<usize>,
    /// Times a client tried to open `Kv.Pipeline` (which the mock does not have).
    pub pipeline_opens: usize,
}

#[derive(Clone, Default)]
pub struct MockRouter {
    pub state: Arc<Mutex<MockState>>,
}

impl MockRouter {
    /// Serves the mock on a fresh localhost port; returns its address.
    pub async fn serve(&self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let router = self.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(KvServer::new(router.clone()))
                .add_service(AdminServer::new(router))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        addr
    }

    pub fn fail_next(&self, status: Status) {
        self.lock().failures.push_back(status);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = Some(delay);
    }

    pub fn request_ids(&self) -> Vec<Vec<u8>> {
        self.lock().request_ids.clone()
    }

    pub fn calls(&self) -> usize {
        self.lock().calls
    }

    /// Stalls the next ScanStream after `messages` messages: the stream stays open but
    /// sends nothing more.
    pub fn stall_stream_after(&self, messages: usize) {
        self.lock().stream_stalls.push_back(messages);
    }

    /// Breaks the next ScanStream or Count stream after `messages` messages.
    pub fn break_stream_after(&self, messages: usize) {
        self.lock().stream_breaks.push_back(messages);
    }

    /// The mock's state, for assertions.
    pub fn lock_state(&self) -> std::sync::MutexGuard<'_, MockState> {
        self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MockState> {
        self.state.lock().expect("mock state lock")
    }

    /// Common prologue: counts the call, records the request id, applies scripted
    /// failures and delays.
    async fn enter<T>(&self, request: &Request<T>, request_id: Option<&[u8]>) -> Result<(), Status> {
        let (failure, delay) = {
            let mut state = self.lock();
            state.calls += 1;
            if request.metadata().get("grpc-timeout").is_some() {
                state.saw_deadline = true;
            }
            if let Some(id) = request_id {
                state.request_ids.push(id.to_vec());
            }
            (state.failures.pop_front(), state.delay)
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        match failure {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }

    fn write(&self, key: &[u8], value: Vec<u8>) -> u64 {
        let mut state = self.lock();
        state.next_version += 1;
        let version = state.next_version;
        state.data.insert(key.to_vec(), (value, version));
        version
    }

    fn read(&self, key: &[u8]) -> Option<(Vec<u8>, u64)> {
        self.lock().data.get(key).cloned()
    }

    /// The entries of a range, in key order, after the position named by `token`.
    fn select(
        &self,
        start: &[u8],
        end: &[u8],
        prefix: &[u8],
        reverse: bool,
        token: &[u8],
    ) -> Result<Vec<proto::ScanEntry>, Status> {
        if !prefix.is_empty() && (!start.is_empty() || !end.is_empty()) {
            return Err(Status::invalid_argument("prefix with start or end"));
        }
        if !end.is_empty() && start > end {
            return Err(Status::invalid_argument("start > end"));
        }
        let after = match token {
            [] => None,
            [b'T', key @ ..] => Some(key.to_vec()),
            _ => return Err(Status::invalid_argument("foreign continuation token")),
        };
        let state = self.lock();
        let mut entries: Vec<proto::ScanEntry> = state
            .data
            .iter()
            .filter(|(key, _)| {
                key.starts_with(prefix) && key.as_slice() >= start && (end.is_empty() || key.as_slice() < end)
            })
            .map(|(key, (value, version))| proto::ScanEntry {
                key: key.clone(),
                value: value.clone(),
                version: *version,
                ..Default::default()
            })
            .collect();
        if reverse {
            entries.reverse();
        }
        if let Some(after) = after {
            entries.retain(|entry| {
                if reverse {
                    entry.key < after
                } else {
                    entry.key > after
                }
            });
        }
        Ok(entries)
    }
}

/// The token resuming after `key`.
fn token_after(key: &[u8]) -> Vec<u8> {
    let mut token = vec![b'T'];
    token.extend_from_slice(key);
    token
}

#[tonic::async_trait]
impl Kv for MockRouter {
    async fn get(&self, request: Request<proto::GetRequest>) -> Result<Response<proto::GetResponse>, Status> {
        self.enter(&request, None).await?;
        let found = self.read(&request.get_ref().key);
        Ok(Response::new(match found {
            Some((value, version)) => proto::GetResponse {
                expires_at_ts: 0,
                found: true,
                value,
                version,
            },
            None => proto::GetResponse::default(),
        }))
    }

    async fn put(&self, request: Request<proto::PutRequest>) -> Result<Response<proto::PutResponse>, Status> {
        self.enter(&request, Some(&request.get_ref().request_id)).await?;
        let message = request.into_inner();
        let version = self.write(&message.key, message.value);
        Ok(Response::new(proto::PutResponse { version }))
    }

    async fn delete(
        &self,
        request: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        self.enter(&request, Some(&request.get_ref().request_id)).await?;
        let existed = self.lock().data.remove(&request.get_ref().key).is_some();
        Ok(Response::new(proto::DeleteResponse { existed }))
    }

    async fn expire(
        &self,
        _request: Request<proto::ExpireRequest>,
    ) -> Result<Response<proto::ExpireResponse>, Status> {
        Err(Status::unimplemented("the mock router keeps no expiries"))
    }

    async fn compare_and_swap(
        &self,
        request: Request<proto::CompareAndSwapRequest>,
    ) -> Result<Response<proto::CompareAndSwapResponse>, Status> {
        self.enter(&request, Some(&request.get_ref().request_id)).await?;
        let message = request.into_inner();
        let current = self.read(&message.key);
        let current_version = current.as_ref().map_or(0, |(_, version)| *version);
        if current_version != message.expected_version {
            let (current_value, current_version) = current.clone().unwrap_or_default();
            return Ok(Response::new(proto::CompareAndSwapResponse {
                succeeded: false,
                current_found: current.is_some(),
                current_value,
                current_version,
                ..Default::default()
            }));
        }
        let new_version = if message.delete {
            self.lock().data.remove(&message.key);
            0
        } else {
            self.write(&message.key, message.new_value)
        };
        Ok(Response::new(proto::CompareAndSwapResponse {
            succeeded: true,
            new_version,
            ..Default::default()
        }))
    }

    async fn batch_get(
        &self,
        request: Request<proto::BatchGetRequest>,
    ) -> Result<Response<proto::BatchGetResponse>, Status> {
        self.enter(&request, None).await?;
        let page = self
            .lock()
            .batch_get_page
            .filter(|_| request.get_ref().allow_paging);
        let keys = &request.get_ref().keys;
        let answered_from = page.map_or(0, |page| keys.len().saturating_sub(page));
        let remaining: Vec<u32> = (0..answered_from as u32).collect();
        let results = keys[answered_from..]
            .iter()
            .map(|key| match self.read(key) {
                Some((value, version)) => proto::KeyValueResult {
                    expires_at_ts: 0,
                    key: key.clone(),
                    found: true,
                    value,
                    version,
                },
                None => proto::KeyValueResult {
                    key: key.clone(),
                    ..Default::default()
                },
            })
            .collect();
        Ok(Response::new(proto::BatchGetResponse { results, remaining }))
    }

    async fn batch_put(
        &self,
        request: Request<proto::BatchPutRequest>,
    ) -> Result<Response<proto::BatchPutResponse>, Status> {
        self.enter(&request, Some(&request.get_ref().request_id)).await?;
        let versions = request
            .into_inner()
            .entries
            .into_iter()
            .map(|entry| self.write(&entry.key, entry.value))
            .collect();
        Ok(Response::new(proto::BatchPutResponse { versions }))
    }

    async fn batch_write(
        &self,
        request: Request<proto::BatchWriteRequest>,
    ) -> Result<Response<proto::BatchWriteResponse>, Status> {
        self.enter(&request, Some(&request.get_ref().request_id)).await?;
        let results = request
            .into_inner()
            .mutations
            .into_iter()
            .map(|mutation| {
                let existed = self.read(&mutation.key).is_some();
                if mutation.kind == proto::MutationKind::Delete as i32 {
                    self.lock().data.remove(&mutation.key);
                    proto::MutationResult { version: 0, existed }
                } else {
                    let version = self.write(&mutation.key, mutation.value);
                    proto::MutationResult { version, existed }
                }
            })
            .collect();
        Ok(Response::new(proto::BatchWriteResponse { results }))
    }

    async fn scan(
        &self,
        request: Request<proto::ScanRequest>,
    ) -> Result<Response<proto::ScanResponse>, Status> {
        self.enter(&request, None).await?;
        let message = request.into_inner();
        if message.limit == 0 || message.limit > 10_000 {
            return Err(Status::invalid_argument("limit must be in 1..=10000"));
        }
        let mut entries = self.select(
            &message.start,
            &message.end,
            &message.prefix,
            message.reverse,
            &message.continuation_token,
        )?;
        let limit = message.limit as usize;
        let more = entries.len() > limit;
        entries.truncate(limit);
        if message.keys_only {
            entries.iter_mut().for_each(|entry| entry.value.clear());
        }
        let continuation_token = match (more, entries.last()) {
            (true, Some(last)) => token_after(&last.key),
            _ => Vec::new(),
        };
        Ok(Response::new(proto::ScanResponse {
            entries,
            continuation_token,
            missing_shards: Vec::new(),
        }))
    }

    type ScanStreamStream = MockStream<proto::ScanResponse>;

    async fn scan_stream(
        &self,
        request: Request<proto::ScanRequest>,
    ) -> Result<Response<Self::ScanStreamStream>, Status> {
        self.enter(&request, None).await?;
        let message = request.into_inner();
        let (break_after, stall_after) = {
            let mut state = self.lock();
            state.stream_tokens.push(message.continuation_token.clone());
            state.stream_limits.push(message.limit);
            (state.stream_breaks.pop_front(), state.stream_stalls.pop_front())
        };
        let mut entries = self.select(
            &message.start,
            &message.end,
            &message.prefix,
            message.reverse,
            &message.continuation_token,
        )?;
        if message.limit > 0 {
            entries.truncate(message.limit as usize);
        }
        if message.keys_only {
            entries.iter_mut().for_each(|entry| entry.value.clear());
        }
        let chunks: Vec<Vec<proto::ScanEntry>> = entries.chunks(STREAM_CHUNK).map(<[_]>::to_vec).collect();
        let count = chunks.len();
        let mut messages: Vec<Result<proto::ScanResponse, Status>> = chunks
            .into_iter()
            .enumerate()
            .map(|(index, chunk)| {
                let continuation_token = match chunk.last() {
                    Some(last) if index + 1 < count => token_after(&last.key),
                    _ => Vec::new(),
                };
                Ok(proto::ScanResponse {
                    entries: chunk,
                    continuation_token,
                    missing_shards: Vec::new(),
                })
            })
            .collect();
        if let Some(after) = break_after {
            if after < messages.len() {
                messages.truncate(after);
                messages.push(Err(Status::unavailable("stream broken by the test")));
            }
        }
        if let Some(after) = stall_after {
            messages.truncate(after);
            let stalled =
                tokio_stream::StreamExt::chain(tokio_stream::iter(messages), tokio_stream::pending());
            return Ok(Response::new(Box::pin(stalled)));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    type PipelineStream = MockStream<proto::KvFrameReplies>;

    /// Like an older router, whose generated server answers a method it lacks
    /// `UNIMPLEMENTED` with no message: the client sends every call unary.
    async fn pipeline(
        &self,
        _request: Request<tonic::Streaming<proto::KvFrames>>,
    ) -> Result<Response<Self::PipelineStream>, Status> {
        self.lock().pipeline_opens += 1;
        Err(Status::unimplemented(""))
    }

    type WatchStream = MockStream<proto::WatchResponse>;

    async fn watch(
        &self,
        _request: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("the mock router has no watches"))
    }

    type CountStream = MockStream<proto::CountResponse>;

    async fn count(
        &self,
        request: Request<proto::CountRequest>,
    ) -> Result<Response<Self::CountStream>, Status> {
        self.enter(&request, None).await?;
        let message = request.into_inner();
        let entries = self.select(&message.start, &message.end, &message.prefix, false, &[])?;
        let per_shard = |shard: u32| {
            entries
                .iter()
                .filter(|entry| u32::from(entry.key[0]) % MOCK_SHARDS == shard)
                .count() as u64
        };
        let mut messages = Vec::new();
        let mut total = 0;
        for shard in 0..MOCK_SHARDS {
            total += per_shard(shard);
            messages.push(Ok(proto::CountResponse {
                count: total,
                shards_done: shard + 1,
                shards_total: MOCK_SHARDS,
                done: shard + 1 == MOCK_SHARDS,
                missing_shards: Vec::new(),
            }));
        }
        if let Some(after) = self.lock().stream_breaks.pop_front() {
            messages.truncate(after);
            messages.push(Err(Status::unavailable("stream broken by the test")));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn delete_range(
        &self,
        request: Request<proto::DeleteRangeRequest>,
    ) -> Result<Response<proto::DeleteRangeResponse>, Status> {
        self.enter(&request, Some(&request.get_ref().request_id)).await?;
        let message = request.into_inner();
        let everything = message.start.is_empty() && message.end.is_empty() && message.prefix.is_empty();
        if everything != message.all {
            return Err(Status::invalid_argument(
                "the whole key space needs all, and only it",
            ));
        }
        let entries = self.select(&message.start, &message.end, &message.prefix, false, &[])?;
        let mut state = self.lock();
        for entry in &entries {
            state.data.remove(&entry.key);
        }
        Ok(Response::new(proto::DeleteRangeResponse {
            deleted: entries.len() as u64,
        }))
    }
}

#[tonic::async_trait]
impl Admin for MockRouter {
    async fn change_auth(
        &self,
        _request: Request<proto::ChangeAuthRequest>,
    ) -> Result<Response<proto::ChangeAuthResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_auth(
        &self,
        _request: Request<proto::GetAuthRequest>,
    ) -> Result<Response<proto::GetAuthResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn init_cluster(
        &self,
        _request: Request<proto::InitClusterRequest>,
    ) -> Result<Response<proto::InitClusterResponse>, Status> {
        Err(Status::unimplemented("routers do not init clusters"))
    }

    async fn node_status(
        &self,
        _request: Request<proto::NodeStatusRequest>,
    ) -> Result<Response<proto::NodeStatusResponse>, Status> {
        Err(Status::unimplemented("routers have no node status"))
    }

    async fn add_node(
        &self,
        _request: Request<proto::AddNodeRequest>,
    ) -> Result<Response<proto::RingChangeResponse>, Status> {
        Err(Status::unimplemented("mock router"))
    }

    async fn hold_history(
        &self,
        _request: Request<proto::HoldHistoryRequest>,
    ) -> Result<Response<proto::HoldHistoryResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn transfer_leader(
        &self,
        _request: Request<proto::TransferLeaderRequest>,
    ) -> Result<Response<proto::TransferLeaderResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn decommission_node(
        &self,
        _request: Request<proto::DecommissionNodeRequest>,
    ) -> Result<Response<proto::RingChangeResponse>, Status> {
        Err(Status::unimplemented("mock router"))
    }

    async fn plan_ring_change(
        &self,
        _request: Request<proto::PlanRingChangeRequest>,
    ) -> Result<Response<proto::PlanRingChangeResponse>, Status> {
        Err(Status::unimplemented("mock router"))
    }

    async fn rebalance_status(
        &self,
        _request: Request<proto::RebalanceStatusRequest>,
    ) -> Result<Response<proto::RebalanceStatusResponse>, Status> {
        Err(Status::unimplemented("mock router"))
    }

    async fn cluster_status(
        &self,
        request: Request<proto::ClusterStatusRequest>,
    ) -> Result<Response<proto::ClusterStatusResponse>, Status> {
        self.enter(&request, None).await?;
        Ok(Response::new(proto::ClusterStatusResponse {
            ring: Some(proto::RingInfo {
                cluster_id: "mock".into(),
                shards: 2,
                replication_factor: 1,
                epoch: 1,
                members: vec![proto::RingMember {
                    node_id: 1,
                    addr: "127.0.0.1:1".into(),
                    state: proto::MemberState::Active as i32,
                }],
                vnodes_per_node: 8,
            }),
            nodes: vec![proto::NodeHealth {
                node_id: 1,
                addr: "127.0.0.1:1".into(),
                state: proto::MemberState::Active as i32,
                reachable: true,
                error: String::new(),
                replicas: 2,
                leaders: 2,
                liveness: "alive".into(),
                last_heard_ms: Some(300),
            }],
            shards: (0..2)
                .map(|shard_id| proto::ShardHealth {
                    shard_id,
                    placement: vec![1],
                    leader_id: 1,
                    term: 1,
                    replicas: vec![proto::ShardReplicaHealth {
                        node_id: 1,
                        reachable: true,
                        hosted: true,
                        role: proto::ReplicaRole::Leader as i32,
                        applied_index: 5,
                    }],
                })
                .collect(),
            system_leader_id: 1,
        }))
    }
}

/// An address nothing listens on (bound, then released).
pub async fn dead_endpoint() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local addr")
}

/// A status carrying the outcome-unknown metadata.
pub fn outcome_unknown(message: &str) -> Status {
    let mut status = Status::unavailable(message.to_string());
    ringkv_proto::metadata::set_outcome_unknown(&mut status);
    status
}
