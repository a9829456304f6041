//! The node's status report (`Admin.NodeStatus`): the ring it holds, each replica's Raft
//! state, and the replica moves it ran.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ringkv_proto::v1;

use super::{ring_info, Node};
use crate::group::Group;
use crate::raft::types::GroupId;

/// Replica moves and deletions, reported in the node status (the gauges in the metrics only).
#[derive(Debug, Default)]
pub struct MoveCounters {
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub replicas_deleted: AtomicU64,
    /// Shards led here whose voters differ from placement, as of the reconciler's last pass
    /// (running moves included).
    pub planned: AtomicU64,
    /// Moves running now.
    pub in_progress: AtomicU64,
}

impl MoveCounters {
    fn to_proto(&self) -> v1::MoveCounters {
        v1::MoveCounters {
            started: self.started.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            replicas_deleted: self.replicas_deleted.load(Ordering::Relaxed),
        }
    }
}

/// What the gossip agent reports: whether gossip is authenticated, and how many datagrams
/// it dropped (summed over the agent's restarts of chitchat).
#[derive(Debug, Default)]
pub struct GossipCounters {
    /// Set once the agent started; the status has no gossip section before.
    pub started: AtomicBool,
    pub authenticated: AtomicBool,
    pub rejected_datagrams: AtomicU64,
}

impl GossipCounters {
    fn to_proto(&self) -> Option<v1::GossipCounters> {
        self.started.load(Ordering::Relaxed).then(|| v1::GossipCounters {
            authenticated: self.authenticated.load(Ordering::Relaxed),
            rejected_datagrams: self.rejected_datagrams.load(Ordering::Relaxed),
        })
    }
}

impl Node {
    /// This node's status.
    pub fn status(&self) -> v1::NodeStatusResponse {
        let ring = self.watch_cluster().borrow().as_ref().map(ring_info);
        v1::NodeStatusResponse {
            node_id: self.node_id(),
            addr: self.addr().to_string(),
            cluster_id: self.cluster_id().unwrap_or_default(),
            ring,
            replicas: self.groups().iter().map(|group| replica_info(group)).collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            moves: Some(self.counters().to_proto()),
            reads: Some(self.read_counters()),
            // Filled in by the Admin service, which holds the oracle.
            tso: None,
            gossip: self.gossip_counters().to_proto(),
            metrics_addr: self.metrics_addr().unwrap_or_default().to_string(),
            storage: Some(self.storage_info()),
            process_role: "node".to_string(),
        }
    }
}

impl Node {
    /// What the data directory holds on disk (a walk of a few directories: for status
    /// calls and scrapes, not for request paths).
    pub fn storage_info(&self) -> v1::StorageInfo {
        let data_dir = &self.config().data_dir;
        let wal = dir_usage(&data_dir.join("wal"));
        v1::StorageInfo {
            db_bytes: dir_usage(&data_dir.join("db")).bytes,
            wal_bytes: wal.bytes,
            wal_segments: u32::try_from(wal.files).unwrap_or(u32::MAX),
            snapshot_bytes: dir_usage(&data_dir.join("snapshots")).bytes,
        }
    }

    /// The write-ahead log's counters (bytes written, fdatasync latencies).
    pub fn wal_stats(&self) -> ringkv_wal::WalStats {
        self.inner.deps.wal.stats()
    }

    /// Each group's live log entries and their bytes, by the group's id in the WAL.
    pub fn log_sizes(&self) -> std::collections::BTreeMap<u64, ringkv_wal::LogSize> {
        self.inner.deps.wal.log_sizes()
    }

    /// What the node's snapshots are doing (builds, transfers, installs).
    pub fn snapshot_progress(&self) -> &crate::raft::snapshot::SnapshotProgress {
        self.inner.deps.transport.snapshot_progress()
    }

    pub fn read_counters(&self) -> v1::ReadCounters {
        let counters = &self.inner.deps.read_counters;
        v1::ReadCounters {
            lease_checks: counters.lease.load(Ordering::Relaxed),
            read_index_rounds: counters.rounds.load(Ordering::Relaxed),
            read_index_rounds_failed: counters.failed_rounds.load(Ordering::Relaxed),
            leadership_proven: counters.proven.load(Ordering::Relaxed),
        }
    }

    /// The shards this node leads, with their terms, and how many shard replicas it hosts:
    /// what gossip announces, without building the whole status (it runs every gossip
    /// round, over every group).
    pub fn led_shards(&self) -> (Vec<(u32, u64)>, u64) {
        let mut led = Vec::new();
        let mut replicas = 0;
        for group in self.groups() {
            let GroupId::Shard(shard) = group.id else {
                continue;
            };
            replicas += 1;
            let metrics = group.raft.metrics();
            let metrics = metrics.borrow();
            if metrics.state == openraft::ServerState::Leader {
                led.push((shard, metrics.current_term));
            }
        }
        (led, replicas)
    }
}

/// Files under a directory and their bytes.
#[derive(Debug, Default, Clone, Copy)]
struct DirUsage {
    files: u64,
    bytes: u64,
}

/// Most directory entries [`dir_usage`] looks at: a bound on a status call's work.
const MAX_DIR_ENTRIES: usize = 100_000;

/// The files under `dir` (recursively, at most [`MAX_DIR_ENTRIES`] entries) and their
/// sizes; what cannot be read counts as nothing.
fn dir_usage(dir: &std::path::Path) -> DirUsage {
    let mut usage = DirUsage::default();
    let mut pending = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_DIR_ENTRIES {
                return usage;
            }
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                usage.files += 1;
                usage.bytes += metadata.len();
            }
        }
    }
    usage
}

/// One replica's Raft state as reported over the wire.
fn replica_info(group: &Group) -> v1::ReplicaInfo {
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
        hibernating: group.hibernation.get().is_asleep(),
        // Counted only when asked (`key_count.rs`).
        key_count: 0,
        key_count_partial: false,
    }
}
