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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{CheckIsLeaderError, InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use ringkv_proto::v1;
use ringkv_ring::{MemberState, Ring, RingConfig, RingMember, DEFAULT_VNODES_PER_NODE};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::proposal::{self, BatcherSettings, WriteBatcher};
use crate::raft::flusher::Flusher;
use crate::raft::log_store::LogStore;
use crate::raft::network::{envelope, NetworkFactory, Transport};
use crate::raft::snapshot::SnapshotDir;
use crate::raft::state_machine::{CountResult, GroupState, ScanOptions, ScanPage, StateMachine};
use crate::raft::types::{
    ClusterConfig, Command, CommandResult, DeleteRangeCommand, DeleteRangeResult, GroupId, NodeId, Raft,
    Versioned, WriteCommand,
};
use crate::storage::{EngineRef, StorageError, TreeRef};

const NODE_ID_KEY: &[u8] = b"node_id";
const CLUSTER_ID_KEY: &[u8] = b"cluster_id";
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
        let system = open_group(GroupId::System, &shared, &purger_cancel, &tasks).await?;
        let inner = Arc::new(NodeInner {
            node_id: shared.config.node_id,
            addr,
            shared,
            system,
            groups: RwLock::new(HashMap::new()),
            ring: RwLock::new(None),
            cluster_id: RwLock::new(cluster_id),
            init_lock: tokio::sync::Mutex::new(()),
            reconcile_cancel: CancellationToken::new(),
            reconciler: tokio::sync::Mutex::new(None),
            purger_cancel,
            flusher_cancel,
            tasks,
        });
        let node = Node { inner };
        let reconciler = node.clone();
        let handle = tokio::spawn(async move { reconciler.reconcile_loop().await });
        *node.inner.reconciler.lock().await = Some(handle);
        info!(node_id = node.node_id(), addr = %node.addr(), "node started");
        Ok(node)
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
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
        let group = self
            .group(GroupId::Shard(shard))
            .ok_or(NodeError::ShardNotHosted(shard))?;
        Ok((ring, group))
    }

    /// Proposes `command` to `group` and waits until it is committed and applied.
    pub async fn propose(&self, group: &Group, command: Command) -> Result<CommandResult, NodeError> {
        let timeout_ms = self.inner.shared.config.write_timeout_ms;
        proposal::propose(&group.raft, group.id, self.node_id(), command, timeout_ms).await
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

    /// Creates and (when this node is the shard's first replica) initialises the groups of
    /// every shard placement gives this node.
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
        for shard in ring.shards_of_node(self.node_id()) {
            if self.inner.reconcile_cancel.is_cancelled() {
                break;
            }
            if let Err(err) = self.reconcile_shard(&ring, shard).await {
                warn!(shard = shard.0, %err, "cannot open or initialise shard group");
                failures.push(shard.0);
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

    async fn reconcile_shard(&self, ring: &Ring, shard: ringkv_ring::ShardId) -> Result<(), NodeError> {
        let group_id = GroupId::Shard(shard.0);
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
        let replicas = ring.replicas(shard);
        if replicas.first() == Some(&self.node_id()) {
            let voters: BTreeMap<NodeId, BasicNode> = replicas
                .iter()
                .filter_map(|id| ring.member(*id))
                .map(|member| (member.node_id, BasicNode::new(member.addr.clone())))
                .collect();
            initialize_group(&group, voters).await?;
        }
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
            .map(|config| v1::RingInfo {
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
                        state: member.state.as_str().to_string(),
                    })
                    .collect(),
            });
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
                    role: match metrics.state {
                        ServerState::Leader => "leader",
                        ServerState::Follower => "follower",
                        ServerState::Candidate => "candidate",
                        ServerState::Learner => "learner",
                        ServerState::Shutdown => "shutdown",
                    }
                    .to_string(),
                    term: metrics.current_term,
                    leader_id: metrics.current_leader.unwrap_or(0),
                    last_log_index: metrics.last_log_index.unwrap_or(0),
                    applied_index: metrics.last_applied.map_or(0, |log_id| log_id.index),
                    voters: metrics.membership_config.voter_ids().collect(),
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
        purger_cancel.clone(),
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
            let (batcher, task) = WriteBatcher::spawn(raft.clone(), settings, purger_cancel.clone());
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
