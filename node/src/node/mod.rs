//! The node: the registry of the Raft groups it hosts (the system group and one per hosted
//! shard) and what callers do with them. Split by concern:
//!
//! - this file: the [`Node`] handle, the group registry, shard claims, shutdown;
//! - `bootstrap`: identity, `cluster init`, joining, ring changes, system proposals;
//! - `data`: the read and write paths of shard groups (proposals, ReadIndex, batching);
//! - `expiry`: expiring keys (TTL): the clock latest reads judge expiry at, purge entries;
//! - `key_count`: the bounded per-replica key counts a status asks for;
//! - `replicas`: leader transfer and replica deletion, the operations moves need;
//! - `status`: the node's status report.
//!
//! The node does not run its own background duties: the composition root (`server.rs`)
//! starts the reconciler (`reconcile/`), the system leader's duties (`membership.rs`) and the
//! gossip agent (`gossip_agent.rs`), each holding a `Node` and each with its own shutdown.

mod bootstrap;
mod data;
mod expiry;
mod key_count;
mod replicas;
mod status;
mod txn;

pub use txn::Prewrite;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use ringkv_ring::Ring;
use ringkv_wal::Wal;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use bootstrap::{check_identity, ring_info};
pub use data::now_ms;
pub use expiry::{PurgeCounters, PURGE_LIMIT};
pub use status::{GossipCounters, MoveCounters};

use crate::concurrency::{TimestampSlot, TimestampSource};
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::group::{Group, GroupDeps};
use crate::peers::Peers;
use crate::raft::flusher::Flusher;
use crate::raft::log_store::migrate_legacy_logs;
use crate::raft::network::Transport;
use crate::raft::state_machine::HistoryBudget;
use crate::raft::types::{ClusterConfig, GroupId, NodeId};
use crate::storage::{EngineRef, StorageError, TreeRef};

/// The node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    node_id: NodeId,
    addr: String,
    deps: GroupDeps,
    peers: Peers,
    system: Arc<Group>,
    groups: RwLock<HashMap<GroupId, Arc<Group>>>,
    ring: RwLock<Option<Arc<Ring>>>,
    cluster_id: RwLock<Option<String>>,
    init_lock: tokio::sync::Mutex<()>,
    /// Shards with a move, a transfer or a removal check in flight (never two for one shard).
    claimed_shards: Mutex<HashSet<u32>>,
    /// Held, on the blocking thread that deletes a replica, while it does: one deletion at
    /// a time per node (`replicas.rs`).
    deleting: Mutex<()>,
    counters: MoveCounters,
    gossip_counters: GossipCounters,
    /// Expired keys this node's purge entries removed.
    purge_counters: PurgeCounters,
    /// Where `/metrics` is served (`--metrics-addr`), once it is; for the status.
    metrics_addr: std::sync::OnceLock<String>,
}

/// Opens the node's write-ahead log (`<data dir>/wal`) and moves into it any log a data
/// directory from before the WAL kept in sled.
async fn open_wal(config: &NodeConfig, engine: &EngineRef) -> Result<Wal, NodeError> {
    let dir = config.data_dir.join("wal");
    let options = crate::storage::wal_options(config.wal_preallocate_bytes, config.wal_segment_bytes);
    let engine = engine.clone();
    let open = move || -> Result<Wal, StorageError> {
        let (wal, _) = Wal::open(&dir, options)?;
        migrate_legacy_logs(&engine, &wal)?;
        Ok(wal)
    };
    let wal = tokio::task::spawn_blocking(open)
        .await
        .map_err(|err| NodeError::Fatal(format!("opening the write-ahead log failed: {err}")))??;
    Ok(wal)
}

fn read_lock<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(PoisonError::into_inner).clone()
}

impl Node {
    /// Opens the node's groups from `engine` (the system group and every shard with data on
    /// disk) and starts their Raft nodes.
    pub async fn open(
        config: NodeConfig,
        addr: String,
        engine: EngineRef,
        catalog: TreeRef,
        peer_tls: Option<Arc<ringkv_tls::rustls::ClientConfig>>,
    ) -> Result<Node, NodeError> {
        let cluster_id = check_identity(&catalog, &config)?;
        let tasks = TaskTracker::new();
        if config.unsafe_local_commit_ts {
            warn!("NEGATIVE CONTROL: shard writes commit at local timestamps, not the oracle's");
        }
        if config.unsafe_ignore_locks {
            warn!("NEGATIVE CONTROL: reads at a timestamp ignore transaction locks below it");
        }
        if config.unsafe_dedup_wall_clock {
            warn!("NEGATIVE CONTROL: shard leaders stamp write entries with their wall clocks");
        }
        if config.unsafe_skip_fsync || config.unsafe_skip_read_index || config.unsafe_ack_before_commit {
            warn!(
                skip_fsync = config.unsafe_skip_fsync,
                skip_read_index = config.unsafe_skip_read_index,
                ack_before_commit = config.unsafe_ack_before_commit,
                "UNSAFE negative-control mode: this node breaks ringkv's guarantees on purpose"
            );
        }
        let wal = open_wal(&config, &engine).await?;
        let flusher = Flusher::new(wal.clone(), config.unsafe_skip_fsync);
        let rpc_timeout = Duration::from_millis(config.rpc_timeout_ms);
        let transport = Transport::new(
            config.node_id,
            rpc_timeout,
            config.max_message_bytes,
            config.catch_up_bytes_per_sec,
            peer_tls,
        );
        if let Some(cluster_id) = &cluster_id {
            transport.set_cluster_id(cluster_id);
        }
        let peers = Peers::new(transport.clone(), rpc_timeout, config.max_message_bytes);
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
            commit_propagation_delay: config.commit_propagation_delay_ms,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|err| NodeError::InvalidArgument(format!("raft config: {err}")))?;
        let history_budget = HistoryBudget::new(config.mvcc_history_max_bytes);
        let deps = GroupDeps {
            config,
            engine,
            catalog,
            wal,
            flusher,
            transport,
            raft_config: Arc::new(raft_config),
            tasks_cancel: CancellationToken::new(),
            tasks,
            read_counters: Arc::default(),
            timestamps: TimestampSlot::default(),
            history_budget,
        };
        deps.finish_retirements()?;
        let system = deps.open(GroupId::System).await?;
        let mut stored = HashMap::new();
        for shard in deps.stored_shards() {
            let group_id = GroupId::Shard(shard);
            stored.insert(group_id, deps.open(group_id).await?);
        }
        let inner = Arc::new(NodeInner {
            node_id: deps.config.node_id,
            addr,
            deps,
            peers,
            system,
            groups: RwLock::new(stored),
            ring: RwLock::new(None),
            cluster_id: RwLock::new(cluster_id),
            init_lock: tokio::sync::Mutex::new(()),
            claimed_shards: Mutex::new(HashSet::new()),
            deleting: Mutex::new(()),
            counters: MoveCounters::default(),
            gossip_counters: GossipCounters::default(),
            purge_counters: PurgeCounters::default(),
            metrics_addr: std::sync::OnceLock::new(),
        });
        let node = Node { inner };
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
        &self.inner.deps.config
    }

    /// Calls to other nodes.
    pub fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    pub fn cluster_id(&self) -> Option<String> {
        read_lock(&self.inner.cluster_id)
    }

    /// The ring as last adopted from the system group.
    pub fn ring(&self) -> Option<Arc<Ring>> {
        read_lock(&self.inner.ring)
    }

    /// Gives the node's groups their source of commit timestamps (the oracle, which needs
    /// the node to exist first). Set once; later calls change nothing.
    pub fn set_timestamp_source(&self, source: Arc<dyn TimestampSource>) {
        let _ = self.inner.deps.timestamps.set(source);
    }

    /// The node's timestamp source, once the oracle runs.
    pub fn timestamp_source(&self) -> Option<Arc<dyn TimestampSource>> {
        self.inner.deps.timestamps.get().cloned()
    }

    pub fn system_group(&self) -> Arc<Group> {
        self.inner.system.clone()
    }

    /// A watch of the cluster configuration applied by the system group.
    pub fn watch_cluster(&self) -> watch::Receiver<Option<ClusterConfig>> {
        self.inner.system.state.watch_cluster()
    }

    /// The committed cluster configuration.
    pub fn committed_config(&self) -> Result<ClusterConfig, NodeError> {
        self.watch_cluster()
            .borrow()
            .clone()
            .ok_or(NodeError::NotInitialized)
    }

    /// Replica moves and deletions so far.
    pub fn counters(&self) -> &MoveCounters {
        &self.inner.counters
    }

    /// What the gossip agent reports for the node status.
    /// Records where the node serves its metrics (reported by `NodeStatus`); once.
    pub fn set_metrics_addr(&self, addr: std::net::SocketAddr) {
        let _ = self.inner.metrics_addr.set(addr.to_string());
    }

    /// Where the node serves its metrics, if it does.
    pub fn metrics_addr(&self) -> Option<&str> {
        self.inner.metrics_addr.get().map(String::as_str)
    }

    pub fn gossip_counters(&self) -> &GossipCounters {
        &self.inner.gossip_counters
    }

    /// Purge entries this node proposed and the expired keys they removed.
    pub fn purge_counters(&self) -> &PurgeCounters {
        &self.inner.purge_counters
    }

    /// Every group hosted here, the system group first, then shards in order.
    /// The history budget and holds every shard of this node shares (`Admin.HoldHistory`).
    pub fn history_budget(&self) -> &Arc<HistoryBudget> {
        &self.inner.deps.history_budget
    }

    pub fn groups(&self) -> Vec<Arc<Group>> {
        let mut shards: Vec<Arc<Group>> = self
            .inner
            .groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        shards.sort_by_key(|group| group.id);
        let mut groups = Vec::with_capacity(shards.len() + 1);
        groups.push(self.inner.system.clone());
        groups.extend(shards);
        groups
    }

    /// The group for `group`, if hosted here.
    pub fn group(&self, group: GroupId) -> Option<Arc<Group>> {
        if group == GroupId::System {
            return Some(self.inner.system.clone());
        }
        self.inner
            .groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&group)
            .cloned()
    }

    /// The group of `shard`, opened (not initialised) if it is not hosted here yet.
    pub async fn open_shard_group(&self, shard: u32) -> Result<Arc<Group>, NodeError> {
        let group_id = GroupId::Shard(shard);
        if let Some(group) = self.group(group_id) {
            return Ok(group);
        }
        let group = self.inner.deps.open(group_id).await?;
        self.inner
            .groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(group_id, group.clone());
        Ok(group)
    }

    /// The shards marked never to be initialised here (replicas that were moved away).
    pub fn never_init_shards(&self) -> Result<HashSet<u32>, NodeError> {
        self.inner.deps.never_init_shards()
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

    /// Marks `shard` claimed; false when a move, transfer or removal check already runs for
    /// it. Release with [`Node::release_shard`].
    pub fn claim_shard(&self, shard: u32) -> bool {
        self.claims().insert(shard)
    }

    pub fn release_shard(&self, shard: u32) {
        self.claims().remove(&shard);
    }

    /// The shards claimed right now.
    pub fn claimed_shards(&self) -> HashSet<u32> {
        self.claims().clone()
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        self.inner
            .claimed_shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops every group and saves each one's history, then the purgers, then closes the
    /// WAL (its writer thread writes
    /// and syncs what is queued, then exits) and flushes the engine. The reconciler, the
    /// system duties and gossip (which use the node) are stopped first by their owner.
    pub async fn shutdown(&self) {
        for group in self.groups() {
            if let Err(err) = group.raft.shutdown().await {
                warn!(group = %group.id, %err, "raft group did not shut down cleanly");
            }
        }
        // Flushed with the state below, so the next start serves watches and reads at
        // timestamps from before it (`raft/state_machine/kept_history.rs`).
        for group in self.groups() {
            if let Err(err) = group.state.save_history().await {
                warn!(group = %group.id, %err, "could not save the group's history for the next start");
            }
        }
        let deps = &self.inner.deps;
        deps.tasks_cancel.cancel();
        deps.tasks.close();
        deps.tasks.wait().await;
        let engine = deps.engine.clone();
        let wal = deps.wal.clone();
        let flush = move || -> Result<(), crate::storage::StorageError> {
            wal.close()?;
            engine.flush()
        };
        match tokio::task::spawn_blocking(flush).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(%err, "final flush failed"),
            Err(err) => warn!(%err, "final flush task failed"),
        }
        info!(node_id = self.node_id(), "node stopped");
    }
}
