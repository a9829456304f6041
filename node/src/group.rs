//! One Raft group hosted by a node — the system group or a shard's replica — and its life
//! cycle on disk: open (log store, state machine, purger, write and read batchers, leadership watch),
//! initialise, and destroy.
//!
//! A group's data is its log in the node's write-ahead log, the state-machine trees
//! `<group>.sm.<gen>`, its catalog records and its snapshot directory. Deleting a replica marks it in the node
//! catalog first (`never-init/` so it is never initialised here again, `retiring/` so a crash
//! midway finishes the deletion at the next start), then drops the data.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::BasicNode;
use ringkv_wal::Wal;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::concurrency::{ConcurrencyManager, TimestampSlot};
use crate::config::NodeConfig;
use crate::dedup_clock::DedupClock;
use crate::error::NodeError;
use crate::hibernation::Hibernation;
use crate::proposal::{BatcherSettings, Timestamps, WriteBatcher};
use crate::raft::catch_up::CatchUp;
use crate::raft::flusher::Flusher;
use crate::raft::log_store::{self, wal_group, LogStore, Tombstone};
use crate::raft::network::{NetworkFactory, Transport};
use crate::raft::snapshot::SnapshotDir;
use crate::raft::state_machine::{DedupPolicy, GroupState, HistoryBudget, HistoryPolicy, StateMachine};
use crate::raft::types::{GroupId, LogId, NodeId, Raft};
use crate::read_index::{ReadBatcher, ReadCounters, ReadSettings};
use crate::storage::{EngineRef, StorageError, TreeRef};
use crate::transfer::{self, Leadership};

/// Catalog prefix marking a group this node must never initialise: it held a replica that
/// was moved away, so the group exists elsewhere (written before the replica is deleted).
const NEVER_INIT_PREFIX: &str = "never-init/";
/// Catalog prefix marking a replica whose deletion started (finished at the next start).
const RETIRING_PREFIX: &str = "retiring/";
/// Catalog prefix of a deleted replica's [`Tombstone`] (postcard): the vote and log it had.
const TOMBSTONE_PREFIX: &str = "raft-tombstone/";

/// Most bytes of entries in one append to a follower (one entry may exceed it): a follower
/// catching up gets many paced batches instead of a few huge ones that would hold up the
/// heartbeats and writes sharing the connection.
const REPLICATION_BATCH_BYTES: usize = 1 << 20;

/// One Raft group hosted by this node.
pub struct Group {
    pub id: GroupId,
    pub raft: Raft,
    pub state: Arc<GroupState>,
    /// Batches key-value writes into entries (shard groups only).
    pub batcher: Option<WriteBatcher>,
    /// Shares ReadIndex rounds between concurrent linearizable reads.
    pub reads: ReadBatcher,
    /// When this replica became leader, and the write gate a leader transfer closes.
    pub leadership: Arc<Leadership>,
    /// Stops this group's background tasks (purger, batcher) when the replica is deleted.
    pub cancel: CancellationToken,
    /// Whether the group sleeps (timers off) while quiet; see `hibernation.rs`.
    pub hibernation: Arc<Hibernation>,
    /// The fence between this shard's write timestamps and its snapshot reads.
    pub concurrency: Arc<ConcurrencyManager>,
    /// The de-duplication stamps of the write entries this replica proposes as leader.
    pub dedup_clock: Arc<DedupClock>,
    /// The committed index openraft last gave the log store (`save_committed`; openraft's
    /// metrics have none), and the catch-up pacing of the group's replication reads.
    pub catch_up: CatchUp,
}

/// What opening a group needs; shared by every group of the node.
pub struct GroupDeps {
    pub config: NodeConfig,
    pub engine: EngineRef,
    pub catalog: TreeRef,
    /// Every group's Raft log.
    pub wal: Wal,
    pub flusher: Flusher,
    pub transport: Arc<Transport>,
    pub raft_config: Arc<openraft::Config>,
    /// Parent of every group's `cancel`: stops the purgers and batchers at shutdown.
    pub tasks_cancel: CancellationToken,
    /// Owns every group's background tasks.
    pub tasks: TaskTracker,
    /// How this node's linearizable reads were confirmed (all groups).
    pub read_counters: Arc<ReadCounters>,
    /// The node's timestamp oracle, once it runs (commit timestamps of shard writes).
    pub timestamps: TimestampSlot,
    /// The memory all of the node's shards may keep history in (see `mvcc.rs`).
    pub history_budget: Arc<HistoryBudget>,
}

impl GroupDeps {
    /// Opens `group_id`'s log and state machine and starts its Raft node and background tasks.
    pub async fn open(&self, group_id: GroupId) -> Result<Arc<Group>, NodeError> {
        let config = &self.config;
        let cancel = self.tasks_cancel.child_token();
        let snapshots = SnapshotDir::open(config.data_dir.join("snapshots").join(group_id.name()))?
            .counted_by(self.transport.snapshot_progress().clone());
        let state = GroupState::open(
            group_id,
            self.engine.clone(),
            self.catalog.clone(),
            snapshots,
            DedupPolicy::with_window(config.dedup_window_ms),
            HistoryPolicy {
                window_ms: config.mvcc_window_ms,
                budget: self.history_budget.clone(),
            },
        )?;
        let tombstone = self.tombstone(group_id)?;
        if log_store::restore_vote(&self.wal, group_id, &tombstone).await? {
            info!(group = %group_id, ?tombstone, "re-created replica starts from the vote of its deleted predecessor");
        }
        // A follower catching up gets an RPC (its heartbeat too) at least this often.
        let catch_up = CatchUp::new(
            self.transport.catch_up_pacer(),
            Duration::from_millis(config.election_timeout_min_ms / 4),
        );
        let (log, purge_requests) = LogStore::open(
            self.wal.clone(),
            group_id,
            self.engine.clone(),
            self.flusher.clone(),
            REPLICATION_BATCH_BYTES.min(config.max_message_bytes / 2),
            catch_up.clone(),
        );
        self.tasks.spawn(run_purger(
            group_id,
            log.clone(),
            purge_requests,
            state.watch_applied(),
            cancel.clone(),
        ));
        let network = NetworkFactory::new(group_id, self.transport.clone());
        let raft = Raft::new(
            config.node_id,
            self.raft_config.clone(),
            network,
            log,
            StateMachine::new(state.clone()),
        )
        .await
        .map_err(|fatal| NodeError::Fatal(fatal.to_string()))?;
        let leadership = Arc::new(Leadership::default());
        let hibernation = Arc::new(Hibernation::new(raft.clone()));
        self.tasks.spawn(transfer::watch_leadership(
            raft.clone(),
            leadership.clone(),
            hibernation.clone(),
            cancel.clone(),
        ));
        let concurrency = Arc::new(ConcurrencyManager::new(config.unsafe_local_commit_ts));
        let dedup_clock = Arc::new(DedupClock::new(state.clone(), config.unsafe_dedup_wall_clock));
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
                let timestamps = Timestamps {
                    source: self.timestamps.clone(),
                    manager: concurrency.clone(),
                    dedup_clock: dedup_clock.clone(),
                };
                let (batcher, task) = WriteBatcher::spawn(
                    raft.clone(),
                    settings,
                    timestamps,
                    leadership.gate(),
                    cancel.clone(),
                );
                self.tasks.spawn(task);
                Some(batcher)
            }
        };
        let read_settings = ReadSettings {
            group: group_id,
            timeout_ms: config.write_timeout_ms,
            lease: config.read_lease(),
            leadership: leadership.clone(),
            counters: self.read_counters.clone(),
        };
        let (reads, task) = ReadBatcher::spawn(raft.clone(), read_settings, cancel.clone());
        self.tasks.spawn(task);
        debug!(group = %group_id, "opened raft group");
        Ok(Arc::new(Group {
            id: group_id,
            raft,
            state,
            batcher,
            reads,
            leadership,
            cancel,
            hibernation,
            concurrency,
            dedup_clock,
            catch_up,
        }))
    }

    /// The shards marked never to be initialised here.
    pub fn never_init_shards(&self) -> Result<HashSet<u32>, NodeError> {
        let (start, end) = crate::storage::prefix_bounds(NEVER_INIT_PREFIX.as_bytes());
        let mut shards = HashSet::new();
        for pair in self.catalog.range(start, end) {
            let (key, _) = pair?;
            let name = String::from_utf8_lossy(&key[NEVER_INIT_PREFIX.len()..]).into_owned();
            if let Some(shard) = name.strip_prefix("shard-").and_then(|id| id.parse::<u32>().ok()) {
                shards.insert(shard);
            }
        }
        Ok(shards)
    }

    /// Deletes a stopped replica's data: marks it never to be initialised here and as
    /// retiring (durably), drops its data, then clears the retiring mark.
    pub fn destroy(&self, group_id: GroupId) -> Result<(), NodeError> {
        let never_init = format!("{NEVER_INIT_PREFIX}{}", group_id.name());
        let retiring = format!("{RETIRING_PREFIX}{}", group_id.name());
        // What the replica promised outlives it: a replica re-created here later starts
        // from it (a voter that forgot its vote or log could elect a stale leader).
        let tombstone = self
            .tombstone(group_id)?
            .merge(log_store::tombstone(&self.wal, group_id)?);
        self.catalog.insert(
            self.tombstone_key(group_id).as_bytes(),
            &crate::raft::encode(&tombstone)?,
        )?;
        self.catalog.insert(never_init.as_bytes(), b"1")?;
        self.catalog.insert(retiring.as_bytes(), b"1")?;
        self.engine.flush()?;
        self.destroy_data(group_id)?;
        self.catalog.remove(retiring.as_bytes())?;
        self.engine.flush()?;
        Ok(())
    }

    fn tombstone_key(&self, group_id: GroupId) -> String {
        format!("{TOMBSTONE_PREFIX}{}", group_id.name())
    }

    /// What a deleted replica of `group_id` on this node had promised (empty if none was
    /// ever deleted here).
    pub fn tombstone(&self, group_id: GroupId) -> Result<Tombstone, NodeError> {
        match self.catalog.get(self.tombstone_key(group_id).as_bytes())? {
            Some(bytes) => Ok(crate::raft::decode(self.catalog.name(), &bytes)?),
            None => Ok(Tombstone::default()),
        }
    }

    /// Drops every tree, catalog record and snapshot file of `group_id`.
    fn destroy_data(&self, group_id: GroupId) -> Result<(), NodeError> {
        let name = group_id.name();
        let sm_prefix = format!("{name}.sm.");
        self.wal
            .drop_group(wal_group(group_id))
            .map_err(StorageError::from)?;
        for tree in self.engine.tree_names()? {
            if tree.starts_with(&sm_prefix) {
                self.engine.drop_tree(&tree)?;
            }
        }
        crate::raft::state_machine::forget_group(&self.catalog, group_id)?;
        let snapshots = self.config.data_dir.join("snapshots").join(&name);
        match std::fs::remove_dir_all(&snapshots) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(NodeError::Storage(StorageError::Io(err))),
        }
        Ok(())
    }

    /// Finishes deleting replicas whose deletion a crash interrupted.
    pub fn finish_retirements(&self) -> Result<(), NodeError> {
        let (start, end) = crate::storage::prefix_bounds(RETIRING_PREFIX.as_bytes());
        let pending: Vec<Vec<u8>> = self
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
            self.destroy_data(GroupId::Shard(shard))?;
            self.catalog.remove(&key)?;
        }
        self.engine.flush()?;
        Ok(())
    }

    /// Shards with a log in the WAL: replicas this node held when it stopped (opened at
    /// start even if placement moved on, since they may still be needed for a quorum).
    pub fn stored_shards(&self) -> Vec<u32> {
        let system = wal_group(GroupId::System);
        self.wal
            .groups()
            .into_iter()
            .filter(|group| *group != system)
            .filter_map(|group| u32::try_from(group).ok())
            .collect()
    }
}

/// Initialises `group` with `voters` unless it already is.
pub async fn initialize(group: &Group, voters: BTreeMap<NodeId, BasicNode>) -> Result<(), NodeError> {
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

/// Purges a group's log once the state machine has applied past the purge point, so the
/// flush before deleting makes the covering state durable. openraft may ask to purge while
/// a snapshot is still being installed on a follower; deferring keeps the log until then.
async fn run_purger(
    group: GroupId,
    log: LogStore,
    mut requests: watch::Receiver<Option<LogId>>,
    mut applied: watch::Receiver<Option<LogId>>,
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
