//! The node's Prometheus metrics (`--metrics-addr`), rendered from its own state at every
//! scrape: nothing here runs between scrapes.
//!
//! Requests are counted as they arrive by `ringkv_metrics::Measured` around each gRPC
//! service (atomics only). Everything else is read when scraped: each hosted group's
//! openraft metrics (so a group's series exist exactly while this node hosts a replica of
//! it: bounded by the groups placed here, gone with the replica), the WAL's counters, the
//! move, read, oracle and gossip counters `NodeStatus` reports, and gossip's view of the
//! members. openraft 0.9 reports no commit index: a replica's lag is its last log index
//! minus its applied index, and a leader reports each follower's replication lag.
//! Elections and snapshots show as changes of `ringkv_raft_term` and
//! `ringkv_raft_snapshot_index` (PromQL `changes()`).

use std::sync::Arc;

use ringkv_gossip::Liveness;
use ringkv_metrics::{Exposition, Kind, RpcMetrics, Snapshot};
use ringkv_proto::v1;

use crate::gossip_agent::LivenessView;
use crate::node::Node;
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
        self.write_groups(&mut exposition);
        self.write_storage(&mut exposition);
        self.write_counters(&mut exposition);
        exposition.finish()
    }

    fn write_groups(&self, exposition: &mut Exposition) {
        let groups: Vec<_> = self
            .node
            .groups()
            .into_iter()
            .map(|group| {
                let label = match group.id {
                    GroupId::System => "system".to_string(),
                    GroupId::Shard(shard) => shard.to_string(),
                };
                let metrics = group.raft.metrics().borrow().clone();
                (label, metrics, group.hibernation.role_changes())
            })
            .collect();
        for (name, help, value) in GROUP_GAUGES {
            let mut family = exposition.family(name, Kind::Gauge, help);
            for (label, metrics, _) in &groups {
                family.sample(&[("group", label)], value(metrics) as f64);
            }
        }
        let mut changes = exposition.family(
            "ringkv_raft_role_changes_total",
            Kind::Counter,
            "Changes of the replica's role, term or known leader (elections, leader changes, step-downs) since it opened.",
        );
        for (label, _, role_changes) in &groups {
            changes.sample(&[("group", label)], *role_changes as f64);
        }
        let mut lag = exposition.family(
            "ringkv_raft_follower_lag_entries",
            Kind::Gauge,
            "On a leader: entries each follower's matched log is behind the leader's last log.",
        );
        for (label, metrics, _) in &groups {
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
                "Leadership checks behind linearizable reads, by kind.",
            )
            .sample(&[("kind", "lease")], status.lease_checks as f64)
            .sample(&[("kind", "read_index")], status.read_index_rounds as f64)
            .sample(
                &[("kind", "read_index_failed")],
                status.read_index_rounds_failed as f64,
            );
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
