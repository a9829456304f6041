//! The node: its Raft groups (the system group and one per hosted shard), bootstrap, and
//! the reconciler that creates shard groups from the ring committed in the system group.
//!
//! Bootstrap (`kvctl cluster init` → [`Node::init_cluster`] on one node):
//! 1. pick a cluster id (or reuse the one already recorded) and record it;
//! 2. `JoinCluster` every other initial member, which records the same id (a node that
//!    already belongs to another cluster refuses, and init fails saying so);
//! 3. initialise the system group with every initial member as a voter;
//! 4. commit `SetCluster` (cluster id, S, RF, V, members) in the system group.
//!
//! Every node applies the config, computes placement and creates the groups of the
//! shards it hosts; a shard's first replica in ring order initialises the shard group.
//! Each step is idempotent, so init can be repeated after a crash or on restart.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{CheckIsLeaderError, InitializeError, RaftError};
use openraft::BasicNode;
use ringkv_proto::v1;
use ringkv_ring::{MemberState, Ring, RingConfig, RingMember, DEFAULT_VNODES_PER_NODE};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::gossip_agent::GossipMember;
use crate::proposal::{self, BatcherSettings, WriteBatcher};
use crate::raft::flusher::Flusher;
use crate::raft::log_store::LogStore;
use crate::raft::network::{envelope, NetworkFactory, Transport};
use crate::raft::snapshot::SnapshotDir;
use crate::raft::state_machine::{CountResult, GroupState, ScanOptions, ScanPage, StateMachine};
use crate::raft::types::{
    ClusterConfig, Command, CommandResult, DeleteRangeCommand, DeleteRangeResult, GroupId, NodeId, Raft,
    RingChange, RingChangeKind, RingChangeOutcome, Versioned, WriteCommand,
};
use crate::rebalance::{self, MembershipView, MoveOutcome};
use crate::storage::{EngineRef, StorageError, TreeRef};
use crate::transfer::{self, CampaignOrder, Leadership, TransferContext};

const NODE_ID_KEY: &[u8] = b"node_id";
const CLUSTER_ID_KEY: &[u8] = b"cluster_id";
/// Catalog prefix marking a group this node must never initialise: it held a replica that
/// was moved away, so the group exists elsewhere (written before the replica is deleted).
const NEVER_INIT_PREFIX: &str = "never-init/";
/// Catalog prefix marking a replica whose deletion started (finished at the next start).
const RETIRING_PREFIX: &str = "retiring/";
/// How often the reconciler re-checks placement even without a config change (to retry
/// shard initialisation that failed, e.g. while a peer was down).
const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);
/// Deadline of a bootstrap.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// One Raft group hosted by this node.
pub struct Group {
    pub id: GroupId,
    pub raft: Raft,
    pub state: Arc<GroupState>,
    /// Batches key-value writes into entries (shard groups only).
    pub batcher: Option<WriteBatcher>,
    /// When this replica became leader, and the write gate a leader transfer closes.
    pub leadership: Arc<Leadership>,
    /// Stops this group's background tasks (purger, batcher) when the replica is deleted.
    pub cancel: CancellationToken,
}

/// The node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

/// What opening a group needs; shared by every group of the node.
struct GroupDeps {
    config: NodeConfig,
    engine: EngineRef,
    catalog: TreeRef,
    flusher: Flusher,
    transport: Arc<Transport>,
    raft_config: Arc<openraft::Config>,
}

struct NodeInner {
    node_id: NodeId,
    addr: String,
    shared: GroupDeps,
    system: Arc<Group>,
    groups: RwLock<HashMap<GroupId, Arc<Group>>>,
    ring: RwLock<Option<Arc<Ring>>>,
    cluster_id: RwLock<Option<String>>,
    init_lock: tokio::sync::Mutex<()>,
    /// Stops the reconciler (first at shutdown).
    reconcile_cancel: CancellationToken,
    reconciler: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Stops the per-group log purgers (after the groups).
    purger_cancel: CancellationToken,
    /// Stops the group-commit flusher (last).
    flusher_cancel: CancellationToken,
    tasks: TaskTracker,
    /// Bounds the replica moves this node runs as a shard leader at once.
    moves: Arc<tokio::sync::Semaphore>,
    /// Shards with a move or a removal check in flight (never two for one shard).
    busy_shards: std::sync::Mutex<HashSet<u32>>,
    /// Shards whose last leadership hand-over failed: their next move lets the leader
    /// remove itself instead (an election), so a move cannot hang on a transfer.
    failed_handovers: std::sync::Mutex<HashSet<u32>>,
    counters: MoveCounters,
    /// Every other member's liveness as gossip sees it (updated by the gossip agent).
    gossip_view: RwLock<HashMap<NodeId, GossipMember>>,
}

/// Replica moves and deletions, reported in the node status.
#[derive(Default)]
struct MoveCounters {
    started: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    replicas_deleted: AtomicU64,
}

fn read_lock<T: Clone>(lock: &RwLock<T>) -> T {
    match lock.read() {
        Ok(value) => value.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn write_lock<T>(lock: &RwLock<T>, value: T) {
    match lock.write() {
        Ok(mut current) => *current = value,
        Err(poisoned) => *poisoned.into_inner() = value,
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// Checks the node id recorded in the data directory (recording it the first time) and
/// returns the recorded cluster id, if any.
pub fn check_identity(catalog: &TreeRef, config: &NodeConfig) -> Result<Option<String>, NodeError> {
    match catalog.get(NODE_ID_KEY)? {
        Some(bytes) => {
            let recorded = <[u8; 8]>::try_from(bytes.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| StorageError::Corrupt {
                    tree: catalog.name().to_string(),
                    detail: "node id record".to_string(),
                })?;
            if recorded != config.node_id {
                return Err(NodeError::InvalidArgument(format!(
                    "data directory {} belongs to node {recorded}, not node {}",
                    config.data_dir.display(),
                    config.node_id
                )));
            }
        }
        None => catalog.insert(NODE_ID_KEY, &config.node_id.to_be_bytes())?,
    }
    let cluster_id = catalog
        .get(CLUSTER_ID_KEY)?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    if let (Some(expected), Some(recorded)) = (&config.cluster_id, &cluster_id) {
        if expected != recorded {
            return Err(NodeError::ClusterMismatch {
                ours: recorded.clone(),
                theirs: expected.clone(),
            });
        }
    }
    Ok(cluster_id)
}

impl Node {
    /// Opens the node's groups from `engine` and starts its background tasks.
    pub async fn open(
        config: NodeConfig,
        addr: String,
        engine: EngineRef,
        catalog: TreeRef,
    ) -> Result<Node, NodeError> {
        let cluster_id = check_identity(&catalog, &config)?;
        let tasks = TaskTracker::new();
        let flusher_cancel = CancellationToken::new();
        let purger_cancel = CancellationToken::new();
        if config.unsafe_skip_fsync || config.unsafe_skip_read_index || config.unsafe_ack_before_commit {
            warn!(
                skip_fsync = config.unsafe_skip_fsync,
                skip_read_index = config.unsafe_skip_read_index,
                ack_before_commit = config.unsafe_ack_before_commit,
                "UNSAFE negative-control mode: this node breaks ringkv's guarantees on purpose"
            );
        }
        let (flusher, flusher_task) =
            Flusher::spawn(engine.clone(), flusher_cancel.clone(), config.unsafe_skip_fsync);
        tasks.spawn(async move {
            let _ = flusher_task.await;
        });
        let transport = Transport::new(
            config.node_id,
            Duration::from_millis(config.rpc_timeout_ms),
            config.max_message_bytes,
            config.snapshot_send_bytes_per_sec,
        );
        if let Some(cluster_id) = &cluster_id {
            transport.set_cluster_id(cluster_id);
        }
        let raft_config = openraft::Config {
            cluster_name: "ringkv".to_string(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: config.logs_to_keep_after_snapshot,
            snapshot_max_chunk_size: config.snapshot_chunk_bytes,
            // The last chunk's RPC covers installing the snapshot.
            install_snapshot_timeout: config.rpc_timeout_ms.max(30_000),
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|err| NodeError::InvalidArgument(format!("raft config: {err}")))?;
        let shared = GroupDeps {
            config,
            engine,
            catalog,
            flusher,
            transport,
            raft_config: Arc::new(raft_config),
        };
        finish_retirements(&shared)?;
        let system = open_group(GroupId::System, &shared, &purger_cancel, &tasks).await?;
        let mut stored = HashMap::new();
        for shard in stored_shards(&shared.engine)? {
            let group_id = GroupId::Shard(shard);
            stored.insert(
                group_id,
                open_group(group_id, &shared, &purger_cancel, &tasks).await?,
            );
        }
        let max_moves = shared.config.max_concurrent_moves.max(1);
        let inner = Arc::new(NodeInner {
            node_id: shared.config.node_id,
            addr,
            shared,
            system,
            groups: RwLock::new(stored),
            ring: RwLock::new(None),
            cluster_id: RwLock::new(cluster_id),
            init_lock: tokio::sync::Mutex::new(()),
            reconcile_cancel: CancellationToken::new(),
            reconciler: tokio::sync::Mutex::new(None),
            purger_cancel,
            flusher_cancel,
            tasks,
            moves: Arc::new(tokio::sync::Semaphore::new(max_moves)),
            busy_shards: std::sync::Mutex::new(HashSet::new()),
            failed_handovers: std::sync::Mutex::new(HashSet::new()),
            counters: MoveCounters::default(),
            gossip_view: RwLock::new(HashMap::new()),
        });
        let node = Node { inner };
        let reconciler = node.clone();
        let handle = tokio::spawn(async move { reconciler.reconcile_loop().await });
        node.inner.tasks.spawn(crate::membership::run(
            node.clone(),
            node.inner.reconcile_cancel.clone(),
        ));
        *node.inner.reconciler.lock().await = Some(handle);
        info!(node_id = node.node_id(), addr = %node.addr(), "node started");
        Ok(node)
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// Records what gossip says about the other members.
    pub fn set_gossip_view(&self, view: HashMap<NodeId, GossipMember>) {
        write_lock(&self.inner.gossip_view, view);
    }

    /// What gossip says about the other members.
    pub fn gossip_view(&self) -> HashMap<NodeId, GossipMember> {
        read_lock(&self.inner.gossip_view)
    }

    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.shared.config
    }

    pub fn cluster_id(&self) -> Option<String> {
        read_lock(&self.inner.cluster_id)
    }

    /// The ring as last applied from the system group.
    pub fn ring(&self) -> Option<Arc<Ring>> {
        read_lock(&self.inner.ring)
    }

    pub fn system_group(&self) -> Arc<Group> {
        self.inner.system.clone()
    }

    /// Every group hosted here, the system group first.
    pub fn groups(&self) -> Vec<Arc<Group>> {
        let mut groups = vec![self.inner.system.clone()];
        let shards = match self.inner.groups.read() {
            Ok(groups) => groups.values().cloned().collect::<Vec<_>>(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        };
        let mut shards = shards;
        shards.sort_by_key(|group| group.id);
        groups.extend(shards);
        groups
    }

    /// The group for `group`, if hosted here.
    pub fn group(&self, group: GroupId) -> Option<Arc<Group>> {
        if group == GroupId::System {
            return Some(self.inner.system.clone());
        }
        match self.inner.groups.read() {
            Ok(groups) => groups.get(&group).cloned(),
            Err(poisoned) => poisoned.into_inner().get(&group).cloned(),
        }
    }

    /// Checks a peer's cluster id against ours.
    pub fn check_cluster(&self, theirs: &str) -> Result<(), NodeError> {
        match self.cluster_id() {
            None => Err(NodeError::NotInitialized),
            Some(ours) if ours == theirs => Ok(()),
            Some(ours) => Err(NodeError::ClusterMismatch {
                ours,
                theirs: theirs.to_string(),
            }),
        }
    }

    /// The shard group for a request, after checking the shard exists and is hosted here.
    pub fn shard_group(&self, shard: u32) -> Result<(Arc<Ring>, Arc<Group>), NodeError> {
        let ring = self.ring().ok_or(NodeError::NotInitialized)?;
        if shard >= ring.shard_count() {
            return Err(NodeError::UnknownShard {
                shard,
                shards: ring.shard_count(),
            });
        }
        // A node that left the ring (decommissioned or declared dead) serves nothing, not
        // even stale reads: its replicas may be arbitrarily old.
        if ring
            .member(self.node_id())
            .is_some_and(|member| member.state.is_gone())
        {
            return Err(NodeError::ShardNotHosted(shard));
        }
        let group = self
            .group(GroupId::Shard(shard))
            .ok_or(NodeError::ShardNotHosted(shard))?;
        Ok((ring, group))
    }

    /// Proposes `command` to `group` and waits until it is committed and applied.
    pub async fn propose(&self, group: &Group, command: Command) -> Result<CommandResult, NodeError> {
        let timeout_ms = self.inner.shared.config.write_timeout_ms;
        // A leader transfer holds the gate while the target catches up and campaigns.
        let gate = group.leadership.gate();
        let _open = gate.read().await;
        proposal::propose(&group.raft, group.id, self.node_id(), command, timeout_ms).await
    }

    /// Hands the leadership of `shard` (led by this node) to voter `target`; returns the new
    /// term. See `transfer.rs`. Refused while a replica move of the shard runs here.
    pub async fn transfer_leader(&self, shard: u32, target: NodeId) -> Result<u64, NodeError> {
        if !self.claim_shard(shard) {
            return Err(NodeError::NoQuorum {
                group: GroupId::Shard(shard),
                detail: "a replica move of the shard is running; transfer its leadership later".to_string(),
            });
        }
        let outcome = self.transfer_claimed(shard, target).await;
        self.release_shard(shard);
        outcome
    }

    /// [`Node::transfer_leader`] for a caller that already claimed the shard.
    async fn transfer_claimed(&self, shard: u32, target: NodeId) -> Result<u64, NodeError> {
        let group = self
            .group(GroupId::Shard(shard))
            .ok_or(NodeError::ShardNotHosted(shard))?;
        if !proposal::is_leader(&group.raft, self.node_id()) {
            return Err(NodeError::NotLeader {
                group: group.id,
                leader: proposal::leader_hint(&group.raft),
                proposed: false,
            });
        }
        let config = &self.inner.shared.config;
        let cluster_id = self.cluster_id().unwrap_or_default();
        let ctx = TransferContext {
            group: group.id,
            raft: &group.raft,
            leadership: &group.leadership,
            node_id: self.node_id(),
            lease: Duration::from_millis(config.election_timeout_max_ms),
            timeout: Duration::from_millis(config.write_timeout_ms),
        };
        let rpc_timeout = Duration::from_millis(config.rpc_timeout_ms);
        let transport = self.inner.shared.transport.clone();
        let from_node = self.node_id();
        transfer::transfer(ctx, target, |order: CampaignOrder| async move {
            let peer_err = |detail: String| NodeError::Peer { node: target, detail };
            let mut client = transport
                .raft_client(&order.addr)
                .map_err(|err| peer_err(err.to_string()))?;
            let mut request = tonic::Request::new(v1::CampaignRequest {
                cluster_id,
                shard_id: shard,
                to_node: target,
                from_node,
                term: order.term,
                last_log_index: order.last_log_index,
            });
            request.set_timeout(rpc_timeout);
            client
                .campaign(request)
                .await
                .map(|_| ())
                .map_err(|status| peer_err(format!("{}: {}", order.addr, status.message())))
        })
        .await
    }

    /// Waits until a read on `group` at this moment would be linearizable (ReadIndex).
    pub async fn ensure_linearizable(&self, group: &Group) -> Result<(), NodeError> {
        let timeout_ms = self.inner.shared.config.write_timeout_ms;
        let check = tokio::time::timeout(
            Duration::from_millis(timeout_ms),
            group.raft.ensure_linearizable(),
        );
        match check.await {
            Err(_elapsed) => Err(NodeError::Timeout {
                what: format!("{} to confirm leadership for a read", group.id),
                timeout_ms,
                proposed: false,
            }),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
                let leader = match (forward.leader_id, forward.leader_node) {
                    (Some(id), Some(node)) => Some((id, node.addr)),
                    _ => None,
                };
                Err(NodeError::NotLeader {
                    group: group.id,
                    leader,
                    proposed: false,
                })
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(err)))) => {
                Err(NodeError::NoQuorum {
                    group: group.id,
                    detail: err.to_string(),
                })
            }
            Ok(Err(RaftError::Fatal(fatal))) => Err(NodeError::Fatal(fatal.to_string())),
        }
    }

    /// Applies `ops` on a shard, atomically and in order (batched with concurrent writes
    /// into one Raft entry).
    pub async fn write(
        &self,
        group: &Group,
        request_id: [u8; 16],
        ops: Vec<crate::raft::types::WriteOp>,
    ) -> Result<Vec<crate::raft::types::WriteOpResult>, NodeError> {
        let batcher = group.batcher.as_ref().ok_or_else(|| {
            NodeError::InvalidArgument(format!("{} does not take key-value writes", group.id))
        })?;
        batcher
            .write(WriteCommand {
                request_id,
                issued_at_ms: now_ms(),
                ops,
            })
            .await
    }

    /// Reads `keys` from the local state of `group`, all at one point between entries.
    pub async fn read_local(
        &self,
        group: &Group,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Versioned>>, NodeError> {
        Ok(group.state.get_many(keys).await?)
    }

    /// Reads one page of a key range from the local state of `group`, at one point between
    /// entries.
    pub async fn scan_local(&self, group: &Group, options: ScanOptions) -> Result<ScanPage, NodeError> {
        Ok(group.state.scan(options).await?)
    }

    /// Counts at most `limit` keys of `[start, end)` (`None` end = no upper bound) in the
    /// local state of `group`, at one point between entries.
    pub async fn count_local(
        &self,
        group: &Group,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u64,
    ) -> Result<CountResult, NodeError> {
        Ok(group.state.count(start, end, limit).await?)
    }

    /// Deletes the first `limit` keys of `[start, end)` (`None` end = no upper bound) on a
    /// shard in one Raft entry of its own (proposed directly, not batched with writes). A
    /// retry with the same request id within the de-duplication window returns the first
    /// outcome without deleting again.
    pub async fn delete_range(
        &self,
        group: &Group,
        request_id: [u8; 16],
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u32,
    ) -> Result<DeleteRangeResult, NodeError> {
        if group.id == GroupId::System {
            return Err(NodeError::InvalidArgument(format!(
                "{} does not take key-value writes",
                group.id
            )));
        }
        let command = Command::DeleteRange(DeleteRangeCommand {
            request_id,
            start,
            end,
            limit,
            issued_at_ms: now_ms(),
        });
        match self.propose(group, command).await? {
            CommandResult::DeleteRange(result) => Ok(result),
            other => Err(NodeError::OutcomeUnknown(format!(
                "unexpected apply result {other:?}"
            ))),
        }
    }

    /// Records `cluster_id` as this node's cluster (first time only).
    pub fn join_cluster(&self, cluster_id: &str) -> Result<(), NodeError> {
        if cluster_id.is_empty() {
            return Err(NodeError::InvalidArgument(
                "cluster id must not be empty".to_string(),
            ));
        }
        let mut current = match self.inner.cluster_id.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match &*current {
            Some(ours) if ours == cluster_id => Ok(()),
            Some(ours) => Err(NodeError::ClusterMismatch {
                ours: ours.clone(),
                theirs: cluster_id.to_string(),
            }),
            None => {
                self.inner
                    .shared
                    .catalog
                    .insert(CLUSTER_ID_KEY, cluster_id.as_bytes())?;
                self.inner.shared.engine.flush()?;
                *current = Some(cluster_id.to_string());
                self.inner.shared.transport.set_cluster_id(cluster_id);
                info!(cluster_id, "joined cluster");
                Ok(())
            }
        }
    }

    /// Bootstraps a cluster (see the module docs). Idempotent.
    pub async fn init_cluster(
        &self,
        request: v1::InitClusterRequest,
    ) -> Result<v1::InitClusterResponse, NodeError> {
        let _init = self.inner.init_lock.lock().await;
        let members = validate_init(self.node_id(), &request)?;
        let ring_config = RingConfig {
            shards: request.shards,
            replication_factor: request.replication_factor,
            vnodes_per_node: DEFAULT_VNODES_PER_NODE,
        };
        Ring::new(ring_config, members.clone()).map_err(|err| NodeError::InvalidArgument(err.to_string()))?;
        let wanted = ClusterConfig {
            cluster_id: String::new(),
            ring: ring_config,
            members: members.clone(),
            epoch: 1,
        };
        let existing = self.inner.system.state.watch_cluster().borrow().clone();
        if let Some(existing) = existing {
            return if existing.same_shape(&wanted) {
                Ok(v1::InitClusterResponse {
                    cluster_id: existing.cluster_id,
                    already_initialized: true,
                })
            } else {
                Err(NodeError::AlreadyInitialized(format!(
                    "cluster {} has {} shards, replication factor {} and members {:?}",
                    existing.cluster_id,
                    existing.ring.shards,
                    existing.ring.replication_factor,
                    existing.members.iter().map(|m| m.node_id).collect::<Vec<_>>()
                )))
            };
        }
        let cluster_id = match self.cluster_id() {
            Some(cluster_id) => cluster_id,
            None => {
                let cluster_id = format!("{:032x}", rand::random::<u128>());
                self.join_cluster(&cluster_id)?;
                cluster_id
            }
        };
        info!(%cluster_id, members = members.len(), shards = request.shards, "initialising cluster");
        for member in members.iter().filter(|m| m.node_id != self.node_id()) {
            let mut client = self
                .inner
                .shared
                .transport
                .raft_client(&member.addr)
                .map_err(|err| NodeError::Peer {
                    node: member.node_id,
                    detail: err.to_string(),
                })?;
            let mut join = tonic::Request::new(v1::JoinClusterRequest {
                cluster_id: cluster_id.clone(),
                node_id: member.node_id,
            });
            join.set_timeout(Duration::from_millis(self.inner.shared.config.rpc_timeout_ms));
            client
                .join_cluster(join)
                .await
                .map_err(|status| NodeError::Peer {
                    node: member.node_id,
                    detail: format!("{} ({})", status.message(), member.addr),
                })?;
        }
        let voters: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|member| (member.node_id, BasicNode::new(member.addr.clone())))
            .collect();
        let existing_voters: Vec<NodeId> = {
            let metrics = self.inner.system.raft.metrics();
            let metrics = metrics.borrow();
            metrics.membership_config.voter_ids().collect()
        };
        let wanted_voters: Vec<NodeId> = voters.keys().copied().collect();
        if !existing_voters.is_empty() && existing_voters != wanted_voters {
            return Err(NodeError::AlreadyInitialized(format!(
                "the system group already has voters {existing_voters:?}, not {wanted_voters:?}"
            )));
        }
        initialize_group(&self.inner.system, voters).await?;
        let config = ClusterConfig { cluster_id, ..wanted };
        let applied = self.propose_system(Command::SetCluster(config.clone())).await?;
        match applied {
            CommandResult::Cluster(applied) if applied.same_shape(&config) => Ok(v1::InitClusterResponse {
                already_initialized: applied.cluster_id != config.cluster_id,
                cluster_id: applied.cluster_id,
            }),
            CommandResult::Cluster(applied) => Err(NodeError::AlreadyInitialized(format!(
                "cluster {} was initialised concurrently with another shape",
                applied.cluster_id
            ))),
            other => Err(NodeError::OutcomeUnknown(format!("unexpected result {other:?}"))),
        }
    }

    /// Adds a running node to the ring: the new node records the cluster id (and refuses if
    /// it belongs to another cluster), then the system group commits it as `joining`.
    pub async fn add_node(&self, node_id: NodeId, addr: String) -> Result<v1::RingChangeResponse, NodeError> {
        let config = self.committed_config()?;
        if node_id == 0 || addr.is_empty() {
            return Err(NodeError::InvalidArgument(
                "add node needs a non-zero node id and an address".to_string(),
            ));
        }
        let known = config.members.iter().find(|member| member.node_id == node_id);
        if known.is_none() {
            self.ready_for_ring_change(&config)?;
            self.send_join(node_id, &addr, &config.cluster_id).await?;
        }
        self.change_ring(RingChangeKind::AddNode { node_id, addr }).await
    }

    /// Starts decommissioning a ring member.
    pub async fn decommission_node(&self, node_id: NodeId) -> Result<v1::RingChangeResponse, NodeError> {
        let config = self.committed_config()?;
        self.ready_for_ring_change(&config)?;
        self.change_ring(RingChangeKind::Decommission { node_id }).await
    }

    fn committed_config(&self) -> Result<ClusterConfig, NodeError> {
        self.inner
            .system
            .state
            .watch_cluster()
            .borrow()
            .clone()
            .ok_or(NodeError::NotInitialized)
    }

    /// The first ring change waits until every shard group of the initial ring exists here
    /// or has a leader known to this node (groups are only ever initialised under the
    /// initial ring).
    fn ready_for_ring_change(&self, config: &ClusterConfig) -> Result<(), NodeError> {
        if config.epoch > 1 {
            return Ok(());
        }
        let ring = self.ring().ok_or(NodeError::NotInitialized)?;
        for shard in ring.shards_of_node(self.node_id()) {
            let ready = self
                .group(GroupId::Shard(shard.0))
                .is_some_and(|group| group.raft.metrics().borrow().current_leader.is_some());
            if !ready {
                return Err(NodeError::NoQuorum {
                    group: GroupId::Shard(shard.0),
                    detail: "the shard has no leader yet; ring changes wait until every shard of the initial ring is up".to_string(),
                });
            }
        }
        Ok(())
    }

    async fn send_join(&self, node_id: NodeId, addr: &str, cluster_id: &str) -> Result<(), NodeError> {
        let peer_err = |detail: String| NodeError::Peer {
            node: node_id,
            detail,
        };
        let mut client = self
            .inner
            .shared
            .transport
            .raft_client(addr)
            .map_err(|err| peer_err(err.to_string()))?;
        let mut join = tonic::Request::new(v1::JoinClusterRequest {
            cluster_id: cluster_id.to_string(),
            node_id,
        });
        join.set_timeout(Duration::from_millis(self.inner.shared.config.rpc_timeout_ms));
        match client.join_cluster(join).await {
            Ok(_) => Ok(()),
            Err(status)
                if status.code() == tonic::Code::FailedPrecondition
                    || status.code() == tonic::Code::InvalidArgument =>
            {
                Err(NodeError::InvalidArgument(format!(
                    "node {node_id} at {addr} refused to join: {}",
                    status.message()
                )))
            }
            Err(status) => Err(peer_err(format!(
                "cannot reach the new node at {addr}: {}",
                status.message()
            ))),
        }
    }

    /// Asks the node at `addr` (the leader of `shard`) to hand the leadership to `target`.
    pub async fn peer_transfer_leader(
        &self,
        addr: &str,
        shard: u32,
        target: NodeId,
    ) -> Result<v1::TransferLeaderResponse, NodeError> {
        let peer_err = |detail: String| NodeError::Peer { node: 0, detail };
        let channel = self
            .inner
            .shared
            .transport
            .channel(addr)
            .map_err(|err| peer_err(err.to_string()))?;
        let config = &self.inner.shared.config;
        // A transfer may wait out the old leader's lease, drain writes and wait for the
        // election: bounded by both timeouts.
        let bound = Duration::from_millis(config.election_timeout_max_ms * 3 + config.write_timeout_ms * 2);
        let mut request = tonic::Request::new(v1::TransferLeaderRequest {
            shard_id: shard,
            to_node: target,
        });
        request.set_timeout(bound);
        v1::admin_client::AdminClient::new(channel)
            .transfer_leader(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| peer_err(format!("{addr}: {}", status.message())))
    }

    /// Another node's status.
    pub async fn peer_status(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<v1::NodeStatusResponse, NodeError> {
        let channel = self
            .inner
            .shared
            .transport
            .channel(addr)
            .map_err(|err| NodeError::Peer {
                node: 0,
                detail: err.to_string(),
            })?;
        let mut client = v1::admin_client::AdminClient::new(channel)
            .max_decoding_message_size(self.inner.shared.config.max_message_bytes);
        let mut request = tonic::Request::new(v1::NodeStatusRequest {});
        request.set_timeout(timeout);
        client
            .node_status(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| NodeError::Peer {
                node: 0,
                detail: format!("{addr}: {}", status.message()),
            })
    }

    /// Commits a ring change in the system group.
    pub async fn change_ring(&self, kind: RingChangeKind) -> Result<v1::RingChangeResponse, NodeError> {
        let command = Command::ChangeRing(RingChange {
            expected_epoch: None,
            kind,
        });
        let (config, changed) = match self.propose_system(command).await? {
            CommandResult::Ring(RingChangeOutcome::Applied(config)) => (config, true),
            CommandResult::Ring(RingChangeOutcome::Unchanged(config)) => (config, false),
            CommandResult::Ring(RingChangeOutcome::Rejected(reason)) => {
                return Err(NodeError::InvalidArgument(reason))
            }
            other => return Err(NodeError::OutcomeUnknown(format!("unexpected result {other:?}"))),
        };
        Ok(v1::RingChangeResponse {
            ring: Some(ring_info(&config)),
            changed,
        })
    }

    /// Commits `command` in the system group, forwarding it to the system leader.
    pub async fn propose_system(&self, command: Command) -> Result<CommandResult, NodeError> {
        let deadline = Instant::now() + INIT_TIMEOUT;
        let system = self.inner.system.clone();
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = match self.propose(&system, command.clone()).await {
                Err(NodeError::NotLeader {
                    leader: Some((leader, addr)),
                    ..
                }) if leader != self.node_id() => self.forward_system(leader, &addr, &command).await,
                other => other,
            };
            match attempt {
                Ok(result) => return Ok(result),
                Err(err) if Instant::now() + backoff < deadline => {
                    debug!(%err, "system proposal not committed yet, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn forward_system(
        &self,
        leader: NodeId,
        addr: &str,
        command: &Command,
    ) -> Result<CommandResult, NodeError> {
        let peer_err = |detail: String| NodeError::Peer { node: leader, detail };
        let payload = postcard::to_allocvec(command).map_err(|err| peer_err(err.to_string()))?;
        let cluster_id = self.cluster_id().ok_or(NodeError::NotInitialized)?;
        let mut client = self
            .inner
            .shared
            .transport
            .raft_client(addr)
            .map_err(|err| peer_err(err.to_string()))?;
        let mut request = tonic::Request::new(envelope(cluster_id, GroupId::System, self.node_id(), payload));
        request.set_timeout(Duration::from_millis(self.inner.shared.config.write_timeout_ms));
        let reply = client
            .propose_system(request)
            .await
            .map_err(|status| peer_err(status.message().to_string()))?;
        let outcome: Result<CommandResult, String> =
            postcard::from_bytes(&reply.into_inner().payload).map_err(|err| peer_err(err.to_string()))?;
        outcome.map_err(peer_err)
    }

    /// Brings the groups hosted here in line with the committed ring: opens the groups of
    /// every shard placement gives this node (the first replica of a shard initialises it,
    /// but only under the initial ring: later, groups exist and grow by membership changes);
    /// as a shard leader, moves the group's replicas toward placement; and deletes replicas
    /// a committed membership left out.
    async fn reconcile(&self, config: &ClusterConfig) -> Result<(), NodeError> {
        if self.cluster_id().is_none() {
            self.join_cluster(&config.cluster_id)?;
        }
        let ring = Arc::new(
            Ring::new(config.ring, config.members.clone())
                .map_err(|err| NodeError::InvalidArgument(format!("committed ring is invalid: {err}")))?,
        );
        write_lock(&self.inner.ring, Some(ring.clone()));
        let mut failures = Vec::new();
        let placed: HashSet<u32> = ring
            .shards_of_node(self.node_id())
            .into_iter()
            .map(|shard| shard.0)
            .collect();
        let gone = ring
            .member(self.node_id())
            .is_some_and(|member| member.state.is_gone());
        if !gone {
            for &shard in &placed {
                if self.inner.reconcile_cancel.is_cancelled() {
                    break;
                }
                if self.group(GroupId::Shard(shard)).is_none() && self.is_busy(shard) {
                    // A deletion of this shard's old replica is still running: reopen after.
                    continue;
                }
                if let Err(err) = self.reconcile_shard(&ring, config.epoch, shard).await {
                    warn!(shard, %err, "cannot open or initialise shard group");
                    failures.push(shard);
                }
            }
        }
        for group in self.groups() {
            let GroupId::Shard(shard) = group.id else {
                continue;
            };
            if self.inner.reconcile_cancel.is_cancelled() {
                break;
            }
            let view = MembershipView::of(&group);
            if view.leader {
                let target = placement_addrs(&ring, shard);
                if !view.settled(&target.keys().copied().collect()) {
                    self.spawn_move(group, target);
                }
            } else if !placed.contains(&shard) {
                self.spawn_removal_check(group, ring.clone());
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(NodeError::Fatal(format!(
                "shard groups {failures:?} are not ready"
            )))
        }
    }

    async fn reconcile_shard(&self, ring: &Ring, epoch: u64, shard: u32) -> Result<(), NodeError> {
        let group_id = GroupId::Shard(shard);
        let group = match self.group(group_id) {
            Some(group) => group,
            None => {
                let group = self.open_group(group_id).await?;
                match self.inner.groups.write() {
                    Ok(mut groups) => groups.insert(group_id, group.clone()),
                    Err(poisoned) => poisoned.into_inner().insert(group_id, group.clone()),
                };
                group
            }
        };
        // Only the initial ring creates groups: after a ring change every group already
        // exists (ring changes wait for every shard to have a leader), and initialising
        // again would start a second group with the same id.
        let replicas = ring.replicas(ringkv_ring::ShardId(shard));
        if epoch == 1 && replicas.first() == Some(&self.node_id()) && !self.never_init(group_id)? {
            let voters: BTreeMap<NodeId, BasicNode> = replicas
                .iter()
                .filter_map(|id| ring.member(*id))
                .map(|member| (member.node_id, BasicNode::new(member.addr.clone())))
                .collect();
            initialize_group(&group, voters).await?;
        }
        Ok(())
    }

    fn never_init(&self, group: GroupId) -> Result<bool, NodeError> {
        let key = format!("{NEVER_INIT_PREFIX}{}", group.name());
        Ok(self.inner.shared.catalog.get(key.as_bytes())?.is_some())
    }

    fn is_busy(&self, shard: u32) -> bool {
        match self.inner.busy_shards.lock() {
            Ok(busy) => busy.contains(&shard),
            Err(poisoned) => poisoned.into_inner().contains(&shard),
        }
    }

    /// Marks `shard` busy; false when a move or removal check already runs for it.
    fn claim_shard(&self, shard: u32) -> bool {
        match self.inner.busy_shards.lock() {
            Ok(mut busy) => busy.insert(shard),
            Err(poisoned) => poisoned.into_inner().insert(shard),
        }
    }

    fn release_shard(&self, shard: u32) {
        match self.inner.busy_shards.lock() {
            Ok(mut busy) => busy.remove(&shard),
            Err(poisoned) => poisoned.into_inner().remove(&shard),
        };
    }

    /// Starts moving a shard's replicas toward `target` (at most `max_concurrent_moves` at
    /// once on this node; the reconciler retries what did not finish).
    fn spawn_move(&self, group: Arc<Group>, target: BTreeMap<NodeId, String>) {
        let GroupId::Shard(shard) = group.id else {
            return;
        };
        let Ok(permit) = self.inner.moves.clone().try_acquire_owned() else {
            return;
        };
        if !self.claim_shard(shard) {
            return;
        }
        let node = self.clone();
        let timeout = Duration::from_millis(self.inner.shared.config.catch_up_timeout_ms);
        let cancel = self.inner.reconcile_cancel.clone();
        self.inner.tasks.spawn(async move {
            let started = Instant::now();
            node.inner.counters.started.fetch_add(1, Ordering::Relaxed);
            let hand_over = !node
                .inner
                .failed_handovers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&shard);
            let outcome = tokio::select! {
                outcome = rebalance::move_toward(&group, &target, timeout, hand_over) => Some(outcome),
                _ = cancel.cancelled() => None,
            };
            match outcome {
                Some(Ok(MoveOutcome::Moved { from, to })) => {
                    node.inner
                        .failed_handovers
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(&shard);
                    node.inner.counters.completed.fetch_add(1, Ordering::Relaxed);
                    info!(
                        shard,
                        ?from,
                        ?to,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "replicas moved"
                    );
                }
                Some(Ok(MoveOutcome::Settled)) => {}
                Some(Ok(MoveOutcome::HandOver { successor })) => {
                    info!(shard, successor, "leaving the group: handing the leadership over first");
                    let handed = node.transfer_claimed(shard, successor).await;
                    let mut failed = node
                        .inner
                        .failed_handovers
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    match handed {
                        Ok(term) => {
                            failed.remove(&shard);
                            info!(shard, successor, term, "leadership handed over; the new leader finishes the move");
                        }
                        Err(err) => {
                            failed.insert(shard);
                            node.inner.counters.failed.fetch_add(1, Ordering::Relaxed);
                            warn!(shard, successor, %err, "leadership hand-over failed; the next try removes this leader directly");
                        }
                    }
                }
                Some(Err(err)) => {
                    node.inner.counters.failed.fetch_add(1, Ordering::Relaxed);
                    warn!(shard, %err, "replica move did not finish; will retry");
                }
                None => {}
            }
            node.release_shard(shard);
            drop(permit);
        });
    }

    /// Asks the shard's leader whether this node's replica was removed; deletes it when a
    /// committed membership leaves this node out.
    fn spawn_removal_check(&self, group: Arc<Group>, ring: Arc<Ring>) {
        let GroupId::Shard(shard) = group.id else {
            return;
        };
        if !self.claim_shard(shard) {
            return;
        }
        let node = self.clone();
        let cancel = self.inner.reconcile_cancel.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                result = node.check_removed(&group, &ring) => {
                    if let Err(err) = result {
                        debug!(shard, %err, "removal check failed; will retry");
                    }
                }
                _ = cancel.cancelled() => {}
            }
            node.release_shard(shard);
        });
    }

    async fn check_removed(&self, group: &Arc<Group>, ring: &Ring) -> Result<(), NodeError> {
        let GroupId::Shard(shard) = group.id else {
            return Ok(());
        };
        let cluster_id = self.cluster_id().ok_or(NodeError::NotInitialized)?;
        let view = MembershipView::of(group);
        let mut candidates: Vec<String> = Vec::new();
        let known_leader = view.leader_id.and_then(|id| {
            ring.member(id).map(|member| member.addr.clone()).or_else(|| {
                group
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .map(|node| node.addr.clone())
            })
        });
        candidates.extend(known_leader);
        for id in ring.replicas(ringkv_ring::ShardId(shard)) {
            if let Some(member) = ring.member(id) {
                candidates.push(member.addr.clone());
            }
        }
        let mut seen = HashSet::new();
        candidates.retain(|addr| addr != self.addr() && seen.insert(addr.clone()));
        for addr in candidates {
            let Ok(mut client) = self.inner.shared.transport.raft_client(&addr) else {
                continue;
            };
            let mut request = tonic::Request::new(v1::GroupMembershipRequest {
                cluster_id: cluster_id.clone(),
                shard_id: shard,
                from_node: self.node_id(),
            });
            request.set_timeout(Duration::from_millis(self.inner.shared.config.rpc_timeout_ms));
            let Ok(reply) = client.group_membership(request).await else {
                continue;
            };
            let reply = reply.into_inner();
            // Decide on an answer at least as new as what this replica knows, and only if
            // the ring (which may have changed meanwhile) still leaves this node out.
            let still_placed_elsewhere = self.ring().is_some_and(|ring| {
                !ring
                    .replicas(ringkv_ring::ShardId(shard))
                    .contains(&self.node_id())
            });
            if reply.log_index >= view.log_index
                && still_placed_elsewhere
                && rebalance::removal_committed(&reply, self.node_id())
            {
                info!(shard, voters = ?reply.voters, "replica removed from the group; deleting it");
                return self.retire_group(group.id).await;
            }
            return Ok(());
        }
        Err(NodeError::NoQuorum {
            group: group.id,
            detail: "no leader answered".to_string(),
        })
    }

    /// Deletes the local replica of `group_id`: unregisters and stops the group, marks it
    /// never to be initialised here, then drops its trees and snapshots.
    async fn retire_group(&self, group_id: GroupId) -> Result<(), NodeError> {
        let group = match self.inner.groups.write() {
            Ok(mut groups) => groups.remove(&group_id),
            Err(poisoned) => poisoned.into_inner().remove(&group_id),
        };
        let Some(group) = group else {
            return Ok(());
        };
        if let Err(err) = group.raft.shutdown().await {
            warn!(group = %group_id, %err, "raft group did not shut down cleanly");
        }
        group.cancel.cancel();
        // openraft's state-machine worker may still hold a queued apply or snapshot install:
        // from here on they fail instead of recreating the trees deleted below.
        group.state.retire().await;
        let shared = &self.inner.shared;
        shared
            .catalog
            .insert(format!("{NEVER_INIT_PREFIX}{}", group_id.name()).as_bytes(), b"1")?;
        shared
            .catalog
            .insert(format!("{RETIRING_PREFIX}{}", group_id.name()).as_bytes(), b"1")?;
        shared.engine.flush()?;
        destroy_group_data(shared, group_id)?;
        shared
            .catalog
            .remove(format!("{RETIRING_PREFIX}{}", group_id.name()).as_bytes())?;
        shared.engine.flush()?;
        self.inner
            .counters
            .replicas_deleted
            .fetch_add(1, Ordering::Relaxed);
        info!(group = %group_id, "deleted replica");
        Ok(())
    }

    async fn open_group(&self, group_id: GroupId) -> Result<Arc<Group>, NodeError> {
        open_group(
            group_id,
            &self.inner.shared,
            &self.inner.purger_cancel,
            &self.inner.tasks,
        )
        .await
    }

    async fn reconcile_loop(&self) {
        let mut cluster = self.inner.system.state.watch_cluster();
        loop {
            let config = cluster.borrow_and_update().clone();
            if let Some(config) = config {
                if let Err(err) = self.reconcile(&config).await {
                    warn!(%err, "reconciling shard groups failed; will retry");
                }
            }
            tokio::select! {
                _ = self.inner.reconcile_cancel.cancelled() => break,
                changed = cluster.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep(RECONCILE_INTERVAL) => {}
            }
        }
    }

    /// This node's status.
    pub fn status(&self) -> v1::NodeStatusResponse {
        let ring = self
            .inner
            .system
            .state
            .watch_cluster()
            .borrow()
            .clone()
            .map(|config| ring_info(&config));
        let replicas = self
            .groups()
            .iter()
            .map(|group| {
                let metrics = group.raft.metrics();
                let metrics = metrics.borrow();
                v1::ReplicaInfo {
                    shard_id: match group.id {
                        GroupId::System => None,
                        GroupId::Shard(shard) => Some(shard),
                    },
                    role: crate::convert::replica_role(metrics.state) as i32,
                    term: metrics.current_term,
                    leader_id: metrics.current_leader.unwrap_or(0),
                    last_log_index: metrics.last_log_index.unwrap_or(0),
                    applied_index: metrics.last_applied.map_or(0, |log_id| log_id.index),
                    voters: metrics.membership_config.voter_ids().collect(),
                    learners: metrics.membership_config.membership().learner_ids().collect(),
                    joint: metrics.membership_config.membership().get_joint_config().len() > 1,
                    snapshot_index: metrics.snapshot.map_or(0, |log_id| log_id.index),
                    purged_index: metrics.purged.map_or(0, |log_id| log_id.index),
                }
            })
            .collect();
        v1::NodeStatusResponse {
            node_id: self.node_id(),
            addr: self.addr().to_string(),
            cluster_id: self.cluster_id().unwrap_or_default(),
            ring,
            replicas,
            version: env!("CARGO_PKG_VERSION").to_string(),
            moves: Some(v1::MoveCounters {
                started: self.inner.counters.started.load(Ordering::Relaxed),
                completed: self.inner.counters.completed.load(Ordering::Relaxed),
                failed: self.inner.counters.failed.load(Ordering::Relaxed),
                replicas_deleted: self.inner.counters.replicas_deleted.load(Ordering::Relaxed),
            }),
        }
    }

    /// Stops the reconciler, then every group, then the purgers and the flusher (so groups
    /// can finish their in-flight IO), and flushes the engine.
    pub async fn shutdown(&self) {
        self.inner.reconcile_cancel.cancel();
        if let Some(reconciler) = self.inner.reconciler.lock().await.take() {
            let _ = reconciler.await;
        }
        for group in self.groups() {
            if let Err(err) = group.raft.shutdown().await {
                warn!(group = %group.id, %err, "raft group did not shut down cleanly");
            }
        }
        self.inner.purger_cancel.cancel();
        self.inner.flusher_cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        let engine = self.inner.shared.engine.clone();
        match tokio::task::spawn_blocking(move || engine.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(%err, "final flush failed"),
            Err(err) => warn!(%err, "final flush task failed"),
        }
        info!(node_id = self.node_id(), "node stopped");
    }

    /// A watch of the cluster configuration applied by the system group.
    pub fn watch_cluster(&self) -> watch::Receiver<Option<ClusterConfig>> {
        self.inner.system.state.watch_cluster()
    }
}

fn validate_init(self_id: NodeId, request: &v1::InitClusterRequest) -> Result<Vec<RingMember>, NodeError> {
    if request.nodes.is_empty() {
        return Err(NodeError::InvalidArgument(
            "init needs at least one node".to_string(),
        ));
    }
    let mut members = Vec::with_capacity(request.nodes.len());
    for node in &request.nodes {
        if node.node_id == 0 {
            return Err(NodeError::InvalidArgument("node id 0 is reserved".to_string()));
        }
        if node.addr.is_empty() {
            return Err(NodeError::InvalidArgument(format!(
                "node {} has no address",
                node.node_id
            )));
        }
        members.push(RingMember {
            node_id: node.node_id,
            addr: node.addr.clone(),
            state: MemberState::Active,
        });
    }
    members.sort_by_key(|member| member.node_id);
    if !members.iter().any(|member| member.node_id == self_id) {
        return Err(NodeError::InvalidArgument(format!(
            "this node ({self_id}) is not among the initial members"
        )));
    }
    if request.replication_factor as usize > members.len() {
        return Err(NodeError::InvalidArgument(format!(
            "replication factor {} exceeds the number of nodes ({})",
            request.replication_factor,
            members.len()
        )));
    }
    Ok(members)
}

/// Initialises `group` with `voters` unless it already is.
async fn initialize_group(group: &Group, voters: BTreeMap<NodeId, BasicNode>) -> Result<(), NodeError> {
    let initialized = group
        .raft
        .is_initialized()
        .await
        .map_err(|fatal| NodeError::Fatal(fatal.to_string()))?;
    if initialized {
        return Ok(());
    }
    match group.raft.initialize(voters).await {
        Ok(()) => {
            info!(group = %group.id, "initialised raft group");
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(RaftError::APIError(err)) => Err(NodeError::InvalidArgument(err.to_string())),
        Err(RaftError::Fatal(fatal)) => Err(NodeError::Fatal(fatal.to_string())),
    }
}

async fn open_group(
    group_id: GroupId,
    deps: &GroupDeps,
    purger_cancel: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<Arc<Group>, NodeError> {
    let config = &deps.config;
    let cancel = purger_cancel.child_token();
    let snapshots = SnapshotDir::open(config.data_dir.join("snapshots").join(group_id.name()))?;
    let state = GroupState::open(
        group_id,
        deps.engine.clone(),
        deps.catalog.clone(),
        snapshots,
        config.dedup_window_ms,
    )?;
    let (log, purge_requests) = LogStore::open(
        deps.engine.clone(),
        &format!("{}.log", group_id.name()),
        deps.flusher.clone(),
        config.max_message_bytes / 2,
    )?;
    tasks.spawn(run_purger(
        group_id,
        log.clone(),
        purge_requests,
        state.watch_applied(),
        cancel.clone(),
    ));
    let network = NetworkFactory::new(group_id, deps.transport.clone());
    let raft = Raft::new(
        config.node_id,
        deps.raft_config.clone(),
        network,
        log,
        StateMachine::new(state.clone()),
    )
    .await
    .map_err(|fatal| NodeError::Fatal(fatal.to_string()))?;
    let leadership = Arc::new(Leadership::default());
    tasks.spawn(transfer::watch_leadership(
        raft.clone(),
        leadership.clone(),
        cancel.clone(),
    ));
    let batcher = match group_id {
        GroupId::System => None,
        GroupId::Shard(_) => {
            let settings = BatcherSettings {
                group: group_id,
                node_id: config.node_id,
                write_timeout_ms: config.write_timeout_ms,
                max_entry_bytes: config.max_message_bytes / 2,
                unsafe_ack_before_commit: config.unsafe_ack_before_commit,
            };
            let (batcher, task) =
                WriteBatcher::spawn(raft.clone(), settings, leadership.gate(), cancel.clone());
            tasks.spawn(task);
            Some(batcher)
        }
    };
    debug!(group = %group_id, "opened raft group");
    Ok(Arc::new(Group {
        id: group_id,
        raft,
        state,
        batcher,
        leadership,
        cancel,
    }))
}

/// Purges a group's log once the state machine has applied past the purge point, so the
/// flush before deleting makes the covering state durable. openraft may ask to purge while
/// a snapshot is still being installed on a follower; deferring keeps the log until then.
async fn run_purger(
    group: GroupId,
    log: LogStore,
    mut requests: watch::Receiver<Option<crate::raft::types::LogId>>,
    mut applied: watch::Receiver<Option<crate::raft::types::LogId>>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            changed = requests.changed() => if changed.is_err() { return },
            _ = cancel.cancelled() => return,
        }
        let Some(upto) = *requests.borrow_and_update() else {
            continue;
        };
        let covered = applied.wait_for(|applied| applied.is_some_and(|applied| applied.index >= upto.index));
        tokio::select! {
            result = covered => if result.is_err() { return },
            _ = cancel.cancelled() => return,
        }
        if let Err(err) = log.purge_now(upto).await {
            warn!(group = %group, %err, "log purge failed; will retry at the next purge");
        }
    }
}

/// `node id → address` of the replicas placement gives `shard`.
fn placement_addrs(ring: &Ring, shard: u32) -> BTreeMap<NodeId, String> {
    ring.replicas(ringkv_ring::ShardId(shard))
        .into_iter()
        .filter_map(|id| ring.member(id).map(|member| (id, member.addr.clone())))
        .collect()
}

/// Shards with a log tree in the engine: replicas this node held when it stopped (opened at
/// start even if placement moved on, since they may still be needed for a quorum).
fn stored_shards(engine: &EngineRef) -> Result<Vec<u32>, NodeError> {
    let mut shards: Vec<u32> = engine
        .tree_names()?
        .iter()
        .filter_map(|name| name.strip_prefix("shard-")?.strip_suffix(".log")?.parse().ok())
        .collect();
    shards.sort_unstable();
    Ok(shards)
}

/// Drops every tree, catalog record and snapshot file of `group_id`.
fn destroy_group_data(deps: &GroupDeps, group_id: GroupId) -> Result<(), NodeError> {
    let name = group_id.name();
    let sm_prefix = format!("{name}.sm.");
    for tree in deps.engine.tree_names()? {
        if tree == format!("{name}.log") || tree.starts_with(&sm_prefix) {
            deps.engine.drop_tree(&tree)?;
        }
    }
    crate::raft::state_machine::forget_group(&deps.catalog, group_id)?;
    let snapshots = deps.config.data_dir.join("snapshots").join(&name);
    match std::fs::remove_dir_all(&snapshots) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(NodeError::Storage(StorageError::Io(err))),
    }
    Ok(())
}

/// Finishes deleting replicas whose deletion a crash interrupted.
fn finish_retirements(deps: &GroupDeps) -> Result<(), NodeError> {
    let (start, end) = crate::storage::prefix_bounds(RETIRING_PREFIX.as_bytes());
    let pending: Vec<Vec<u8>> = deps
        .catalog
        .range(start, end)
        .map(|pair| pair.map(|(key, _)| key))
        .collect::<Result<_, _>>()?;
    for key in pending {
        let name = String::from_utf8_lossy(&key[RETIRING_PREFIX.len()..]).into_owned();
        let Some(shard) = name.strip_prefix("shard-").and_then(|id| id.parse::<u32>().ok()) else {
            continue;
        };
        info!(shard, "finishing an interrupted replica deletion");
        destroy_group_data(deps, GroupId::Shard(shard))?;
        deps.catalog.remove(&key)?;
    }
    deps.engine.flush()?;
    Ok(())
}

/// The committed configuration as reported over the wire.
pub fn ring_info(config: &ClusterConfig) -> v1::RingInfo {
    v1::RingInfo {
        cluster_id: config.cluster_id.clone(),
        shards: config.ring.shards,
        replication_factor: config.ring.replication_factor,
        epoch: config.epoch,
        vnodes_per_node: config.ring.vnodes_per_node,
        members: config
            .members
            .iter()
            .map(|member| v1::RingMember {
                node_id: member.node_id,
                addr: member.addr.clone(),
                state: crate::convert::member_state(member.state) as i32,
            })
            .collect(),
    }
}
