//! The node's Prometheus metrics (`--metrics-addr`), rendered from its own state at every
//! scrape: nothing here runs between scrapes.
//!
//! Requests are counted as they arrive by `ringkv_metrics::Measured` around each gRPC
//! service (atomics only). Everything else is read when scraped: each hosted group's
//! openraft metrics (so a group's series exist exactly while this node hosts a replica of
//! it: bounded by the groups placed here, gone with the replica), the WAL's counters, the
//! move, read, oracle and gossip counters `NodeStatus` reports, and gossip's view of the
//! members. openraft 0.9's metrics have no commit index; the log store keeps the one
//! openraft saves before each apply (`save_committed`), so a replica reports its commit
//! index, its commit lag (committed, not yet applied) and its apply lag (in the log, not
//! yet applied); a leader reports each follower's replication lag. A group's log size in
//! bytes comes from the WAL's index, which keeps each group's total as entries come and go.
//! Elections show as changes of `ringkv_raft_term`; snapshots being built, sent, received
//! and installed as `ringkv_snapshots_in_progress`, with counters of finished ones.

use std::sync::Arc;

use ringkv_gossip::Liveness;
use ringkv_metrics::{Exposition, Kind, RpcMetrics, Snapshot};
use ringkv_proto::v1;

use crate::gossip_agent::LivenessView;
use crate::node::Node;
use crate::raft::log_store::wal_group;
use crate::raft::types::GroupId;
use crate::tso::Oracle;

/// Per-method metrics of the node's gRPC services (`ShardKv`, `Raft`, `Admin`, `Tso`).
pub fn rpc_metrics() -> Arc<RpcMetrics> {
    let services = [
        v1::shard_kv_server::SERVICE_NAME,
        v1::raft_server::SERVICE_NAME,
        v1::admin_server::SERVICE_NAME,
        v1::tso_server::SERVICE_NAME,
    ];
    RpcMetrics::new(services.map(|name| (name.to_string(), ringkv_proto::descriptor::service_methods(name))))
}

/// One group's openraft metrics.
type GroupMetrics = openraft::RaftMetrics<u64, openraft::BasicNode>;

fn index_of(log_id: Option<openraft::LogId<u64>>) -> u64 {
    log_id.map_or(0, |log_id| log_id.index)
}

/// The gauges written for every hosted group: name, help, value.
#[allow(clippy::type_complexity)]
const GROUP_GAUGES: [(&str, &str, fn(&GroupMetrics) -> u64); 8] = [
    ("ringkv_raft_term", "Raft term of each group hosted here.", |m| {
        m.current_term
    }),
    (
        "ringkv_raft_is_leader",
        "1 where this node leads the group.",
        |m| u64::from(m.state == openraft::ServerState::Leader),
    ),
    (
        "ringkv_raft_leader_id",
        "The leader this replica knows (0: none).",
        |m| m.current_leader.unwrap_or(0),
    ),
    (
        "ringkv_raft_last_log_index",
        "Last log index of the replica.",
        |m| m.last_log_index.unwrap_or(0),
    ),
    (
        "ringkv_raft_applied_index",
        "Last log index applied to the state machine.",
        |m| index_of(m.last_applied),
    ),
    (
        "ringkv_raft_apply_lag_entries",
        "Log entries not yet applied (last log index - applied index).",
        |m| {
            m.last_log_index
                .unwrap_or(0)
                .saturating_sub(index_of(m.last_applied))
        },
    ),
    (
        "ringkv_raft_log_entries",
        "Entries in the replica's log (last log index - purged index).",
        |m| m.last_log_index.unwrap_or(0).saturating_sub(index_of(m.purged)),
    ),
    (
        "ringkv_raft_snapshot_index",
        "Last log index covered by the replica's snapshot (changes: snapshots built or installed).",
        |m| index_of(m.snapshot),
    ),
];

/// One hosted group as a scrape reads it.
struct GroupSample {
    /// The `group` label: `system` or the shard id.
    label: String,
    metrics: GroupMetrics,
    role_changes: u64,
    /// The committed index openraft last saved, never below the applied index (a replica
    /// reopened applies what its log store says was committed before openraft saves again).
    commit_index: u64,
    /// Bytes of the group's live log entries in the WAL.
    log_bytes: u64,
}

/// What a scrape of the node reads.
pub struct NodeMetrics {
    pub node: Node,
    pub oracle: Arc<Oracle>,
    pub liveness: LivenessView,
    pub rpc: Arc<RpcMetrics>,
}

impl NodeMetrics {
    /// The exposition text of this moment.
    pub fn render(&self) -> String {
        let mut exposition = Exposition::new();
        self.rpc.write(&mut exposition);
        let groups = self.group_samples();
        write_groups(&groups, &mut exposition);
        write_group_progress(&groups, &mut exposition);
        self.write_storage(&mut exposition);
        self.write_counters(&mut exposition);
        self.write_snapshots_and_moves(&mut exposition);
        exposition.finish()
    }

    /// Every hosted group's numbers, read once per scrape (one WAL lock for all log sizes).
    fn group_samples(&self) -> Vec<GroupSample> {
        let log_sizes = self.node.log_sizes();
        self.node
            .groups()
            .into_iter()
            .map(|group| {
                let label = match group.id {
                    GroupId::System => "system".to_string(),
                    GroupId::Shard(shard) => shard.to_string(),
                };
                // Read before openraft's metrics: both only grow, so the commit index is
                // then never above the last log index read after it.
                let committed = group.catch_up.committed_index().unwrap_or(0);
                let metrics = group.raft.metrics().borrow().clone();
                let commit_index = committed.max(index_of(metrics.last_applied));
                let log_bytes = log_sizes
                    .get(&wal_group(group.id))
                    .map_or(0, |size| size.entry_bytes);
                GroupSample {
                    label,
                    metrics,
                    role_changes: group.hibernation.role_changes(),
                    commit_index,
                    log_bytes,
                }
            })
            .collect()
    }

    fn write_snapshots_and_moves(&self, exposition: &mut Exposition) {
        let snapshots = self.node.snapshot_progress().read();
        exposition
            .family(
                "ringkv_snapshots_in_progress",
                Kind::Gauge,
                "Snapshots this node is building, sending (one per group and follower), receiving or installing now.",
            )
            .sample(&[("phase", "building")], snapshots.building as f64)
            .sample(&[("phase", "sending")], snapshots.sending as f64)
            .sample(&[("phase", "receiving")], snapshots.receiving as f64)
            .sample(&[("phase", "installing")], snapshots.installing as f64);
        exposition
            .family(
                "ringkv_snapshots_total",
                Kind::Counter,
                "Snapshots this node finished building, sending, receiving or installing.",
            )
            .sample(&[("phase", "built")], snapshots.built as f64)
            .sample(&[("phase", "sent")], snapshots.sent as f64)
            .sample(&[("phase", "received")], snapshots.received as f64)
            .sample(&[("phase", "installed")], snapshots.installed as f64);
        exposition
            .family(
                "ringkv_snapshot_bytes_total",
                Kind::Counter,
                "Bytes of snapshot chunks this node sent or received (the bulk of a replica move's data).",
            )
            .sample(&[("direction", "sent")], snapshots.sent_bytes as f64)
            .sample(&[("direction", "received")], snapshots.received_bytes as f64);
        let moves = self.node.counters();
        let load = |counter: &std::sync::atomic::AtomicU64| {
            counter.load(std::sync::atomic::Ordering::Relaxed) as f64
        };
        exposition
            .family(
                "ringkv_moves_planned",
                Kind::Gauge,
                "Shards led here whose voters differ from placement, as of the reconciler's last pass (running moves included).",
            )
            .sample(&[], load(&moves.planned));
        exposition
            .family(
                "ringkv_moves_in_progress",
                Kind::Gauge,
                "Replica moves running on this node as a shard leader.",
            )
            .sample(&[], load(&moves.in_progress));
    }

    fn write_storage(&self, exposition: &mut Exposition) {
        let wal = self.node.wal_stats();
        exposition
            .family(
                "ringkv_wal_written_bytes_total",
                Kind::Counter,
                "Bytes the WAL writer wrote to segment files.",
            )
            .sample(&[], wal.written_bytes as f64);
        exposition
            .family(
                "ringkv_wal_appended_bytes_total",
                Kind::Counter,
                "Bytes of records queued for the WAL.",
            )
            .sample(&[], wal.appended_bytes as f64);
        exposition
            .family(
                "ringkv_wal_writes_total",
                Kind::Counter,
                "write calls of the WAL writer (each a batch of records).",
            )
            .sample(&[], wal.writes as f64);
        exposition
            .family(
                "ringkv_wal_syncs_total",
                Kind::Counter,
                "fdatasyncs of the WAL (segment starts included).",
            )
            .sample(&[], wal.syncs as f64);
        exposition
            .family(
                "ringkv_wal_fsync_duration_seconds",
                Kind::Histogram,
                "Latency of the WAL writer's fdatasync of the active segment.",
            )
            .histogram(
                &[],
                &Snapshot::new(
                    &ringkv_wal::SYNC_LATENCY_BOUNDS_SECONDS,
                    wal.sync_latency_counts.to_vec(),
                    wal.sync_latency_nanos as f64 / 1e9,
                ),
            );
        exposition
            .family("ringkv_wal_segments", Kind::Gauge, "WAL segment files.")
            .sample(&[], wal.segments as f64);
        let storage = self.node.storage_info();
        exposition
            .family(
                "ringkv_disk_bytes",
                Kind::Gauge,
                "Bytes on disk of the data directory's parts.",
            )
            .sample(&[("part", "db")], storage.db_bytes as f64)
            .sample(&[("part", "wal")], storage.wal_bytes as f64)
            .sample(&[("part", "snapshots")], storage.snapshot_bytes as f64);
    }

    fn write_counters(&self, exposition: &mut Exposition) {
        let status_moves = self.node.counters();
        let load = |counter: &std::sync::atomic::AtomicU64| {
            counter.load(std::sync::atomic::Ordering::Relaxed) as f64
        };
        exposition
            .family(
                "ringkv_moves_total",
                Kind::Counter,
                "Replica moves this node ran as a shard leader, by outcome.",
            )
            .sample(&[("outcome", "started")], load(&status_moves.started))
            .sample(&[("outcome", "completed")], load(&status_moves.completed))
            .sample(&[("outcome", "failed")], load(&status_moves.failed));
        exposition
            .family(
                "ringkv_replicas_deleted_total",
                Kind::Counter,
                "Replicas this node deleted after a committed membership left it out.",
            )
            .sample(&[], load(&status_moves.replicas_deleted));
        let tso = self.oracle.counters();
        exposition
            .family(
                "ringkv_tso_requests_total",
                Kind::Counter,
                "Timestamp requests this node's oracle answered.",
            )
            .sample(&[], tso.requests as f64);
        exposition
            .family(
                "ringkv_tso_batches_total",
                Kind::Counter,
                "Timestamp batches served (one leadership check each), by where.",
            )
            .sample(&[("where", "here")], tso.batches as f64)
            .sample(&[("where", "forwarded")], tso.forwarded as f64);
        exposition
            .family(
                "ringkv_tso_framed_requests_total",
                Kind::Counter,
                "Other nodes' timestamp requests answered here as Raft.Pipeline frames (also in ringkv_tso_requests_total).",
            )
            .sample(&[], tso.framed as f64);
        exposition
            .family(
                "ringkv_tso_advances_total",
                Kind::Counter,
                "Oracle bounds committed to the system group.",
            )
            .sample(&[], tso.advances as f64);
        let status = self.node.read_counters();
        exposition
            .family(
                "ringkv_read_checks_total",
                Kind::Counter,
                "Leadership checks behind linearizable reads and the oracle's timestamps, by kind (proven: answered from the last lease check, no message).",
            )
            .sample(&[("kind", "lease")], status.lease_checks as f64)
            .sample(&[("kind", "read_index")], status.read_index_rounds as f64)
            .sample(
                &[("kind", "read_index_failed")],
                status.read_index_rounds_failed as f64,
            )
            .sample(&[("kind", "proven")], status.leadership_proven as f64);
        let purged = self.node.purge_counters();
        exposition
            .family(
                "ringkv_expiry_purge_entries_total",
                Kind::Counter,
                "Purge entries this node proposed as a shard leader and saw applied (each removes at most 1024 expired keys).",
            )
            .sample(&[], load(&purged.entries));
        exposition
            .family(
                "ringkv_expired_keys_purged_total",
                Kind::Counter,
                "Expired keys removed from storage by this node's purge entries.",
            )
            .sample(&[], load(&purged.keys_purged));
        let gossip = self.node.gossip_counters();
        exposition
            .family(
                "ringkv_gossip_rejected_datagrams_total",
                Kind::Counter,
                "Gossip datagrams dropped (failed authentication or another key).",
            )
            .sample(&[], load(&gossip.rejected_datagrams));
        let members = self.liveness.get();
        let count = |wanted: Liveness| {
            members
                .values()
                .filter(|member| member.liveness == wanted)
                .count() as f64
        };
        exposition
            .family(
                "ringkv_gossip_members",
                Kind::Gauge,
                "Other ring members by their liveness as this node's gossip sees them.",
            )
            .sample(&[("liveness", "alive")], count(Liveness::Alive))
            .sample(&[("liveness", "suspect")], count(Liveness::Suspect))
            .sample(&[("liveness", "dead")], count(Liveness::Dead));
    }
}

fn write_groups(groups: &[GroupSample], exposition: &mut Exposition) {
    for (name, help, value) in GROUP_GAUGES {
        let mut family = exposition.family(name, Kind::Gauge, help);
        for group in groups {
            family.sample(&[("group", &group.label)], value(&group.metrics) as f64);
        }
    }
    let mut changes = exposition.family(
        "ringkv_raft_role_changes_total",
        Kind::Counter,
        "Changes of the replica's role, term or known leader (elections, leader changes, step-downs) since it opened.",
    );
    for group in groups {
        changes.sample(&[("group", &group.label)], group.role_changes as f64);
    }
    let mut lag = exposition.family(
        "ringkv_raft_follower_lag_entries",
        Kind::Gauge,
        "On a leader: entries each follower's matched log is behind the leader's last log.",
    );
    for GroupSample { label, metrics, .. } in groups {
        let Some(replication) = &metrics.replication else {
            continue;
        };
        let last = metrics.last_log_index.unwrap_or(0);
        for (follower, matched) in replication.iter() {
            if *follower == metrics.id {
                continue;
            }
            let follower = follower.to_string();
            let matched = matched.map_or(0, |log_id| log_id.index);
            lag.sample(
                &[("group", label), ("follower", &follower)],
                last.saturating_sub(matched) as f64,
            );
        }
    }
}

/// The gauges openraft's metrics alone do not give: commit index and lag, log bytes.
fn write_group_progress(groups: &[GroupSample], exposition: &mut Exposition) {
    let mut commit = exposition.family(
        "ringkv_raft_commit_index",
        Kind::Gauge,
        "Last log index this replica knows committed (as openraft saves it before applying).",
    );
    for group in groups {
        commit.sample(&[("group", &group.label)], group.commit_index as f64);
    }
    let mut lag = exposition.family(
        "ringkv_raft_commit_lag_entries",
        Kind::Gauge,
        "Committed entries not yet applied (commit index - applied index).",
    );
    for group in groups {
        let applied = index_of(group.metrics.last_applied);
        lag.sample(
            &[("group", &group.label)],
            group.commit_index.saturating_sub(applied) as f64,
        );
    }
    let mut bytes = exposition.family(
        "ringkv_raft_log_bytes",
        Kind::Gauge,
        "Bytes of the replica's live log entries in the WAL (encoded entries, record framing not counted).",
    );
    for group in groups {
        bytes.sample(&[("group", &group.label)], group.log_bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    /// The WAL counts fdatasyncs in the buckets the metrics crate writes.
    #[test]
    fn wal_sync_buckets_are_the_metrics_buckets() {
        assert_eq!(
            ringkv_wal::SYNC_LATENCY_BOUNDS_SECONDS,
            ringkv_metrics::LATENCY_BOUNDS_SECONDS
        );
    }
}
