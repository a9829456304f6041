//! In-process fake storage nodes for router tests: they serve `Admin.NodeStatus` and
//! `ShardKv` over real sockets (port 0) with the contract's error conventions, backed by
//! one shared in-memory map. The last replica of a shard's placement leads it (so a router
//! trying placement order meets a not-leader hint first); node 1 leads the system group.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ringkv_proto::metadata;
use ringkv_proto::v1;
use ringkv_proto::v1::admin_server::{Admin, AdminServer};
use ringkv_proto::v1::shard_kv_server::{ShardKv, ShardKvServer};
use ringkv_proto::v1::{
    shard_write_outcome, ClusterStatusRequest, ClusterStatusResponse, Consistency, InitClusterRequest,
    InitClusterResponse, KeyValueResult, MemberState as ProtoMemberState, NodeStatusRequest,
    NodeStatusResponse, ReplicaInfo, ReplicaRole, RingInfo, RingMember, ScanEntry, ShardCountRequest,
    ShardCountResponse, ShardDeleteRangeRequest, ShardDeleteRangeResponse, ShardReadRequest,
    ShardReadResponse, ShardScanRequest, ShardScanResponse, ShardWriteBatchRequest, ShardWriteBatchResponse,
    ShardWriteOutcome, ShardWriteRequest, ShardWriteResponse, WriteKind, WriteOpResult,
};
use ringkv_ring::shard::shard_of_hash;
use ringkv_ring::{key_hash, MemberState, Ring, RingConfig, ShardId};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

pub const CLUSTER_ID: &str = "fake-cluster";
/// Leader of the system group.
pub const LEADER: u64 = 1;

/// The leader of a shard: the last replica of its placement.
pub fn shard_leader(ring: &Ring, shard: ShardId) -> u64 {
    ring.replicas(shard).last().copied().unwrap_or(0)
}

/// A stored value and its version.
type Versioned = (Vec<u8>, u64);

/// The data every fake node shares (there is no replication to fake).
#[derive(Default)]
pub struct Store {
    data: Mutex<BTreeMap<Vec<u8>, Versioned>>,
    next_version: Mutex<u64>,
    applied: Mutex<HashMap<(u32, Vec<u8>), ShardWriteResponse>>,
    pub writes_applied: Mutex<u64>,
    pub not_leader_replies: Mutex<u64>,
    /// When set, the first answer to each (shard, request id) is lost after the write was
    /// applied: the router sees a broken call (UNKNOWN), an ambiguous attempt.
    pub lose_first_answers: Mutex<bool>,
    answered: Mutex<std::collections::HashSet<(u32, Vec<u8>)>>,
    /// When set, nodes answer `ShardKv.Pipeline` UNIMPLEMENTED (an older version).
    pub without_pipeline: Mutex<bool>,
}

/// The shared state of a fake cluster.
pub struct FakeCluster {
    pub store: Store,
    pub ring: Option<RingInfo>,
    pub addrs: HashMap<u64, String>,
    /// Whether NodeStatus reports leaders and roles (else every replica says follower
    /// with no known leader, and the router must learn leaders from not-leader hints).
    pub report_leaders: bool,
}

#[derive(Clone)]
pub struct FakeNode {
    node_id: u64,
    cluster: Arc<FakeCluster>,
}

/// A running fake cluster.
pub struct Running {
    pub cluster: Arc<FakeCluster>,
    pub addrs: Vec<String>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Running {
    pub async fn stop(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        for task in self.tasks {
            task.await??;
        }
        Ok(())
    }
}

/// Starts `count` fake nodes; `initialised` decides whether they report a ring.
pub async fn start(
    count: u64,
    shards: u32,
    replication_factor: u32,
    initialised: bool,
    report_leaders: bool,
) -> anyhow::Result<Running> {
    let mut listeners = Vec::new();
    let mut addrs = HashMap::new();
    for node_id in 1..=count {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        addrs.insert(node_id, listener.local_addr()?.to_string());
        listeners.push((node_id, listener));
    }
    let ring = initialised.then(|| RingInfo {
        cluster_id: CLUSTER_ID.into(),
        shards,
        replication_factor,
        epoch: 1,
        members: (1..=count)
            .map(|node_id| RingMember {
                node_id,
                addr: addrs.get(&node_id).cloned().unwrap_or_default(),
                state: ProtoMemberState::Active as i32,
            })
            .collect(),
        vnodes_per_node: 8,
    });
    let cluster = Arc::new(FakeCluster {
        store: Store::default(),
        ring,
        addrs: addrs.clone(),
        report_leaders,
    });
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    for (node_id, listener) in listeners {
        let node = || FakeNode {
            node_id,
            cluster: Arc::clone(&cluster),
        };
        let serve = Server::builder()
            .add_service(AdminServer::new(node()))
            .add_service(ShardKvServer::new(node()))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), cancel.clone().cancelled_owned());
        tasks.push(tokio::spawn(serve));
    }
    let mut ordered: Vec<(u64, String)> = addrs.into_iter().collect();
    ordered.sort();
    Ok(Running {
        cluster,
        addrs: ordered.into_iter().map(|(_, addr)| addr).collect(),
        cancel,
        tasks,
    })
}

impl FakeNode {
    fn placement(&self) -> Option<Ring> {
        let info = self.cluster.ring.as_ref()?;
        let members = info
            .members
            .iter()
            .map(|m| ringkv_ring::RingMember {
                node_id: m.node_id,
                addr: m.addr.clone(),
                state: MemberState::Active,
            })
            .collect();
        Ring::new(
            RingConfig {
                shards: info.shards,
                replication_factor: info.replication_factor,
                vnodes_per_node: info.vnodes_per_node,
            },
            members,
        )
        .ok()
    }

    /// The contract's checks: initialised, hosting the shard, keys in the shard.
    fn check(&self, shard_id: u32, keys: &[&[u8]]) -> Result<(), Status> {
        let ring = self
            .placement()
            .ok_or_else(|| Status::unavailable("cluster not initialised"))?;
        if !ring.replicas(ShardId(shard_id)).contains(&self.node_id) {
            return Err(rejected(Status::not_found(format!(
                "shard {shard_id} not hosted"
            ))));
        }
        for key in keys {
            if shard_of_hash(key_hash(key), ring.shard_count()) != ShardId(shard_id) {
                return Err(rejected(Status::failed_precondition("key not in shard")));
            }
        }
        Ok(())
    }

    fn leader_of(&self, shard_id: u32) -> u64 {
        self.placement()
            .map_or(0, |ring| shard_leader(&ring, ShardId(shard_id)))
    }

    fn not_leader(&self, shard_id: u32) -> Status {
        *self
            .cluster
            .store
            .not_leader_replies
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
        let leader = self.leader_of(shard_id);
        let mut status = rejected(Status::unavailable("not the leader"));
        metadata::set_leader_hint(
            &mut status,
            leader,
            self.cluster.addrs.get(&leader).map(String::as_str),
        );
        status
    }
}

fn rejected(mut status: Status) -> Status {
    metadata::set_rejected(&mut status);
    status
}

impl FakeNode {
    /// The keys of `shard_id` in `[start, end)` (empty end = unbounded), in order, after
    /// the leader check.
    fn shard_keys(
        &self,
        shard_id: u32,
        start: &[u8],
        end: &[u8],
        consistency: i32,
    ) -> Result<Vec<(Vec<u8>, Versioned)>, Status> {
        self.check(shard_id, &[])?;
        if consistency != Consistency::Stale as i32 && self.node_id != self.leader_of(shard_id) {
            return Err(self.not_leader(shard_id));
        }
        let count = self.placement().map_or(1, |ring| ring.shard_count());
        let data = self
            .cluster
            .store
            .data
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(data
            .iter()
            .filter(|(key, _)| key.as_slice() >= start && (end.is_empty() || key.as_slice() < end))
            .filter(|(key, _)| shard_of_hash(key_hash(key), count) == ShardId(shard_id))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }
}

/// The reserved keyspace's edge (`__ringkv/`) when `[start, end)` (empty end: no bound)
/// reaches across it from below. A node answers the piece of such a range below the edge
/// first and may end a count there with nothing counted (an entry applied before the piece
/// above); it ends a delete-range chunk there always. This fake ends both there always, so
/// a router must go on after the edge rather than take it for no progress.
fn reserved_edge<'a>(start: &[u8], end: &'a [u8]) -> Option<&'a [u8]> {
    const RESERVED_PREFIX: &[u8] = b"__ringkv/";
    const RESERVED_END: &[u8] = b"__ringkv0";
    (start < RESERVED_PREFIX && (end.is_empty() || end > RESERVED_END)).then_some(RESERVED_PREFIX)
}

#[tonic::async_trait]
impl ShardKv for FakeNode {
    async fn scan(&self, request: Request<ShardScanRequest>) -> Result<Response<ShardScanResponse>, Status> {
        let request = request.into_inner();
        let mut keys = self.shard_keys(
            request.shard_id,
            &request.start,
            &request.end,
            request.consistency,
        )?;
        if request.reverse {
            keys.reverse();
        }
        let limit = request.limit as usize;
        let more = keys.len() > limit;
        let entries = keys
            .into_iter()
            .take(limit)
            .map(|(key, (value, version))| ScanEntry {
                key,
                value: if request.keys_only { Vec::new() } else { value },
                version,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(ShardScanResponse {
            entries,
            more,
            last_key: Vec::new(),
        }))
    }

    async fn count(
        &self,
        request: Request<ShardCountRequest>,
    ) -> Result<Response<ShardCountResponse>, Status> {
        let request = request.into_inner();
        let edge = reserved_edge(&request.start, &request.end);
        let keys = self.shard_keys(
            request.shard_id,
            &request.start,
            edge.unwrap_or(&request.end),
            request.consistency,
        )?;
        // Small calls, so routers must continue after last_key.
        let limit = if request.limit == 0 {
            3
        } else {
            request.limit as usize
        };
        let more = keys.len() > limit;
        let counted = keys.len().min(limit);
        let (more, last_key) = match (more, edge) {
            (true, _) => (true, keys[counted - 1].0.clone()),
            (false, Some(edge)) => (true, edge.to_vec()),
            (false, None) => (false, Vec::new()),
        };
        Ok(Response::new(ShardCountResponse {
            count: counted as u64,
            more,
            last_key,
        }))
    }

    async fn delete_range(
        &self,
        request: Request<ShardDeleteRangeRequest>,
    ) -> Result<Response<ShardDeleteRangeResponse>, Status> {
        let request = request.into_inner();
        let edge = reserved_edge(&request.start, &request.end);
        let keys = self.shard_keys(
            request.shard_id,
            &request.start,
            edge.unwrap_or(&request.end),
            Consistency::Linearizable as i32,
        )?;
        let limit = request.limit as usize;
        let more = keys.len() > limit || edge.is_some();
        let mut data = self
            .cluster
            .store
            .data
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut last_deleted = Vec::new();
        for (key, _) in keys.iter().take(limit) {
            data.remove(key);
            last_deleted = key.clone();
        }
        if let (Some(edge), true) = (edge, keys.len() <= limit) {
            last_deleted = edge.to_vec();
        }
        Ok(Response::new(ShardDeleteRangeResponse {
            deleted: keys.len().min(limit) as u64,
            more,
            last_deleted,
        }))
    }

    // The router's key-value tests use no transactions.
    async fn txn_prewrite(
        &self,
        _request: Request<v1::ShardTxnPrewriteRequest>,
    ) -> Result<Response<v1::ShardTxnPrewriteResponse>, Status> {
        Err(Status::unimplemented("the fake node has no transactions"))
    }

    async fn txn_commit(
        &self,
        _request: Request<v1::ShardTxnCommitRequest>,
    ) -> Result<Response<v1::ShardTxnStatusResponse>, Status> {
        Err(Status::unimplemented("the fake node has no transactions"))
    }

    async fn txn_rollback(
        &self,
        _request: Request<v1::ShardTxnRollbackRequest>,
    ) -> Result<Response<v1::ShardTxnStatusResponse>, Status> {
        Err(Status::unimplemented("the fake node has no transactions"))
    }

    async fn txn_check_status(
        &self,
        _request: Request<v1::ShardTxnCheckStatusRequest>,
    ) -> Result<Response<v1::ShardTxnStatusResponse>, Status> {
        Err(Status::unimplemented("the fake node has no transactions"))
    }

    async fn txn_validate(
        &self,
        _request: Request<v1::ShardTxnValidateRequest>,
    ) -> Result<Response<v1::ShardTxnValidateResponse>, Status> {
        Err(Status::unimplemented("the fake node has no transactions"))
    }

    async fn txn_one_pc(
        &self,
        _request: Request<v1::ShardTxnOnePcRequest>,
    ) -> Result<Response<v1::ShardTxnOnePcResponse>, Status> {
        Err(Status::unimplemented("the fake node has no transactions"))
    }

    async fn txn_gc(
        &self,
        _request: Request<v1::ShardTxnGcRequest>,
    ) -> Result<Response<v1::ShardTxnGcResponse>, Status> {
        Err(Status::unimplemented("the fake node has no transactions"))
    }

    async fn txn_scan_locks(
        &self,
        _request: Request<v1::ShardTxnScanLocksRequest>,
    ) -> Result<Response<v1::ShardTxnScanLocksResponse>, Status> {
        Err(Status::unimplemented("the fake node has no transactions"))
    }

    type WatchStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<v1::ShardWatchResponse, Status>> + Send>>;
    type PipelineStream = ringkv_pipeline::Replies<v1::ShardFrameReplies>;

    /// Each frame answered as its unary call (the real node's contract).
    async fn pipeline(
        &self,
        request: Request<tonic::Streaming<v1::ShardFrames>>,
    ) -> Result<Response<Self::PipelineStream>, Status> {
        if *self
            .cluster
            .store
            .without_pipeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            return Err(Status::unimplemented("this fake node has no pipeline"));
        }
        Ok(Response::new(ringkv_pipeline::serve(
            self.clone(),
            request.into_inner(),
            CancellationToken::new(),
            Default::default(),
        )))
    }

    async fn watch(
        &self,
        _request: Request<v1::ShardWatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("the fake node has no watches"))
    }

    async fn read(&self, request: Request<ShardReadRequest>) -> Result<Response<ShardReadResponse>, Status> {
        let request = request.into_inner();
        let keys: Vec<&[u8]> = request.keys.iter().map(Vec::as_slice).collect();
        self.check(request.shard_id, &keys)?;
        if request.consistency != Consistency::Stale as i32
            && self.node_id != self.leader_of(request.shard_id)
        {
            return Err(self.not_leader(request.shard_id));
        }
        let data = self
            .cluster
            .store
            .data
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let results = request
            .keys
            .iter()
            .map(|key| match data.get(key) {
                Some((value, version)) => KeyValueResult {
                    expires_at_ts: 0,
                    key: key.clone(),
                    found: true,
                    value: value.clone(),
                    version: *version,
                },
                None => KeyValueResult {
                    key: key.clone(),
                    ..KeyValueResult::default()
                },
            })
            .collect();
        Ok(Response::new(ShardReadResponse { results, more: false }))
    }

    /// Each write as `write` answers it alone (a status becomes that write's failure).
    async fn write_batch(
        &self,
        request: Request<ShardWriteBatchRequest>,
    ) -> Result<Response<ShardWriteBatchResponse>, Status> {
        let request = request.into_inner();
        let mut outcomes = Vec::with_capacity(request.writes.len());
        for mut write in request.writes {
            write.shard_id = request.shard_id;
            let outcome = match ShardKv::write(self, Request::new(write)).await {
                Ok(response) => shard_write_outcome::Outcome::Response(response.into_inner()),
                Err(status) => shard_write_outcome::Outcome::Failure(metadata::write_failure(&status)),
            };
            outcomes.push(ShardWriteOutcome {
                outcome: Some(outcome),
            });
        }
        Ok(Response::new(ShardWriteBatchResponse { outcomes }))
    }

    async fn write(
        &self,
        request: Request<ShardWriteRequest>,
    ) -> Result<Response<ShardWriteResponse>, Status> {
        let request = request.into_inner();
        let keys: Vec<&[u8]> = request.ops.iter().map(|op| op.key.as_slice()).collect();
        self.check(request.shard_id, &keys)?;
        if self.node_id != self.leader_of(request.shard_id) {
            return Err(self.not_leader(request.shard_id));
        }
        if request.request_id.len() != 16 {
            return Err(rejected(Status::invalid_argument("request_id must be 16 bytes")));
        }
        let store = &self.cluster.store;
        let dedup_key = (request.shard_id, request.request_id.clone());
        let mut applied = store.applied.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(response) = applied.get(&dedup_key) {
            return Ok(Response::new(response.clone()));
        }
        let mut data = store.data.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next_version = store.next_version.lock().unwrap_or_else(PoisonError::into_inner);
        let mut results = Vec::new();
        for op in request.ops {
            let current = data.get(&op.key).cloned();
            let current_version = current.as_ref().map_or(0, |(_, v)| *v);
            if op
                .expected_version
                .is_some_and(|expected| expected != current_version)
            {
                results.push(WriteOpResult {
                    succeeded: false,
                    version: 0,
                    existed: current.is_some(),
                    current_found: current.is_some(),
                    current_value: current.map(|(v, _)| v).unwrap_or_default(),
                    current_version,
                    current_value_omitted: false,
                });
                continue;
            }
            *next_version += 1;
            let result = if op.kind == WriteKind::Delete as i32 {
                data.remove(&op.key);
                WriteOpResult {
                    succeeded: true,
                    existed: current.is_some(),
                    ..WriteOpResult::default()
                }
            } else {
                data.insert(op.key.clone(), (op.value.clone(), *next_version));
                WriteOpResult {
                    succeeded: true,
                    version: *next_version,
                    existed: current.is_some(),
                    ..WriteOpResult::default()
                }
            };
            results.push(result);
        }
        *store
            .writes_applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
        let response = ShardWriteResponse { results };
        applied.insert(dedup_key.clone(), response.clone());
        let lose = *store
            .lose_first_answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let first_answer = store
            .answered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(dedup_key);
        if lose && first_answer {
            return Err(Status::unknown(
                "the connection broke after the write was applied",
            ));
        }
        Ok(Response::new(response))
    }
}

impl ringkv_pipeline::receiver::Answer for FakeNode {
    type Frames = v1::ShardFrames;
    type Frame = v1::ShardFrame;
    type Reply = v1::ShardFrameReply;
    type Replies = v1::ShardFrameReplies;
    const NAME: &'static str = "shard pipeline";

    fn unpack(frames: v1::ShardFrames) -> Vec<v1::ShardFrame> {
        frames.frames
    }

    fn pack(replies: Vec<v1::ShardFrameReply>) -> v1::ShardFrameReplies {
        v1::ShardFrameReplies { replies }
    }

    fn reply_bytes(reply: &v1::ShardFrameReply) -> usize {
        prost::Message::encoded_len(reply)
    }

    fn answer(
        &self,
        frame: v1::ShardFrame,
    ) -> impl std::future::Future<Output = v1::ShardFrameReply> + Send + 'static {
        use v1::shard_frame::Call;
        use v1::shard_frame_reply::Answer;
        let node = self.clone();
        async move {
            let answered = match frame.call {
                Some(Call::Read(read)) => ShardKv::read(&node, Request::new(read))
                    .await
                    .map(|response| Answer::Read(response.into_inner())),
                Some(Call::Write(write)) => ShardKv::write(&node, Request::new(write))
                    .await
                    .map(|response| Answer::Write(response.into_inner())),
                Some(Call::WriteBatch(batch)) => ShardKv::write_batch(&node, Request::new(batch))
                    .await
                    .map(|response| Answer::WriteBatch(response.into_inner())),
                None => Err(Status::invalid_argument("a frame without a call")),
            };
            let answer =
                answered.unwrap_or_else(|status| Answer::Failed(ringkv_pipeline::status::to_frame(&status)));
            v1::ShardFrameReply {
                id: frame.id,
                answer: Some(answer),
            }
        }
    }
}

#[tonic::async_trait]
impl Admin for FakeNode {
    async fn change_auth(
        &self,
        _request: Request<v1::ChangeAuthRequest>,
    ) -> Result<Response<v1::ChangeAuthResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_auth(
        &self,
        _request: Request<v1::GetAuthRequest>,
    ) -> Result<Response<v1::GetAuthResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn init_cluster(
        &self,
        _request: Request<InitClusterRequest>,
    ) -> Result<Response<InitClusterResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn add_node(
        &self,
        _request: Request<v1::AddNodeRequest>,
    ) -> Result<Response<v1::RingChangeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn hold_history(
        &self,
        _request: Request<v1::HoldHistoryRequest>,
    ) -> Result<Response<v1::HoldHistoryResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn transfer_leader(
        &self,
        _request: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::TransferLeaderResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn decommission_node(
        &self,
        _request: Request<v1::DecommissionNodeRequest>,
    ) -> Result<Response<v1::RingChangeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn plan_ring_change(
        &self,
        _request: Request<v1::PlanRingChangeRequest>,
    ) -> Result<Response<v1::PlanRingChangeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn rebalance_status(
        &self,
        _request: Request<v1::RebalanceStatusRequest>,
    ) -> Result<Response<v1::RebalanceStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn node_status(
        &self,
        _request: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusResponse>, Status> {
        let replicas = match self.placement() {
            Some(ring) => ring
                .shards_of_node(self.node_id)
                .into_iter()
                .map(|shard| ReplicaInfo {
                    shard_id: Some(shard.0),
                    role: if self.cluster.report_leaders && self.node_id == shard_leader(&ring, shard) {
                        ReplicaRole::Leader as i32
                    } else {
                        ReplicaRole::Follower as i32
                    },
                    term: 1,
                    leader_id: if self.cluster.report_leaders {
                        shard_leader(&ring, shard)
                    } else {
                        0
                    },
                    last_log_index: 5,
                    applied_index: 5,
                    voters: ring.replicas(shard),
                    ..ReplicaInfo::default()
                })
                .chain(std::iter::once(ReplicaInfo {
                    shard_id: None,
                    role: if self.node_id == LEADER {
                        ReplicaRole::Leader as i32
                    } else {
                        ReplicaRole::Follower as i32
                    },
                    term: 1,
                    leader_id: LEADER,
                    ..ReplicaInfo::default()
                }))
                .collect(),
            None => Vec::new(),
        };
        Ok(Response::new(NodeStatusResponse {
            node_id: self.node_id,
            addr: self.cluster.addrs.get(&self.node_id).cloned().unwrap_or_default(),
            cluster_id: if self.cluster.ring.is_some() {
                CLUSTER_ID.into()
            } else {
                String::new()
            },
            ring: self.cluster.ring.clone(),
            replicas,
            version: "fake".into(),
            moves: None,
            reads: None,
            tso: None,
            gossip: None,
            ..NodeStatusResponse::default()
        }))
    }

    async fn cluster_status(
        &self,
        _request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        Err(Status::unimplemented("served by routers"))
    }
}
