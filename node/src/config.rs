//! The node's typed configuration: a TOML file, overridden by command-line flags.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The smallest `wal_segment_bytes` accepted.
pub const MIN_WAL_SEGMENT_BYTES: u64 = 1 << 20;

/// Configuration of one storage node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id: non-zero and unique in the cluster. Recorded in the data directory;
    /// starting the directory with another id is refused.
    pub node_id: u64,
    /// `host:port` to listen on. Port 0 picks a free port the first time and reuses it on
    /// every restart (peers know the node by its address).
    pub listen: String,
    /// `host:port` other nodes and routers use to reach this node (default: the bound address).
    pub advertise_addr: Option<String>,
    /// Directory holding the sled database and snapshots.
    pub data_dir: PathBuf,
    /// When set, refuse to start unless the data directory belongs to this cluster id.
    pub cluster_id: Option<String>,
    /// Raft heartbeat interval of every group.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// How long a leader holds back an AppendEntries that would carry nothing but a newer
    /// commit index, waiting for the next entries to carry it (0 = send at once). Under load
    /// this halves the Raft messages per entry; followers apply at most this much later.
    pub commit_propagation_delay_ms: u64,
    /// A shard group led here that saw no proposal, read or membership change for this long
    /// (and is fully replicated) hibernates: its Raft timers stop, and keep-alives between
    /// nodes stand in for its heartbeats (0 = never hibernate). See `hibernation.rs`.
    pub hibernate_after_ms: u64,
    /// How often a node sends each peer the keep-alive of the sleeping groups it leads. A
    /// sleeping follower wakes (and may campaign) after three intervals without one.
    pub keepalive_interval_ms: u64,
    /// How far ahead of its writes the write-ahead log preallocates its active segment
    /// (`fallocate`; 0 = never): a sync after a write into allocated space writes no new
    /// file size. On a journaled file system that spares a journal commit per sync (a lone
    /// client's put p50 −25 %, 64 clients' puts +8 % on ext4 with a journal here); on ext4
    /// without a journal, where a size change is a plain inode write, it measured neutral.
    /// See ARCHITECTURE.md "Decisions".
    pub wal_preallocate_bytes: u64,
    /// Size of the write-ahead log's segment files (at least 1 MiB). Purge is by segment, so
    /// smaller segments give disk space back sooner and rotate more often (each rotation cuts
    /// the segment to its last frame and syncs it, then creates the next). The
    /// fault-injection harness runs its nodes with 1 MiB segments, so that power cuts meet
    /// rotations.
    pub wal_segment_bytes: u64,
    /// Build a snapshot of a group after this many log entries since the last one.
    pub snapshot_logs_since_last: u64,
    /// Log entries kept after a snapshot (lagging followers within this catch up from the log).
    pub logs_to_keep_after_snapshot: u64,
    /// Size of the chunks a snapshot is streamed in.
    pub snapshot_chunk_bytes: u64,
    /// Catch-up bytes this node sends per second, over all groups: snapshot chunks and
    /// large reads of committed log entries for followers that lag (moves and restarted
    /// replicas share it; 0 = unlimited). Formerly `snapshot_send_bytes_per_sec`.
    #[serde(alias = "snapshot_send_bytes_per_sec")]
    pub catch_up_bytes_per_sec: u64,
    /// Timeout of one Raft RPC to a peer.
    pub rpc_timeout_ms: u64,
    /// Timeout for a write to commit and apply, and for a linearizable read check.
    pub write_timeout_ms: u64,
    /// Largest key accepted.
    pub max_key_bytes: usize,
    /// Largest value accepted.
    pub max_value_bytes: usize,
    /// Most ops in one shard write (one Raft entry).
    pub max_ops_per_write: usize,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// Most client requests (`ShardKv`, `Tso`, `Admin`) this node serves at once, over all
    /// connections; beyond it a request is refused at once with `RESOURCE_EXHAUSTED`
    /// (marked not applied, so a router retries it within its deadline).
    pub max_inflight_requests: usize,
    /// Most peer requests (`Raft`: replication, votes, snapshots, joins) this node serves at
    /// once, counted apart from client requests so client load cannot starve Raft.
    pub max_inflight_peer_requests: usize,
    /// PBKDF2 rounds of the password hashes this node makes (issue 15; each hash names its
    /// own rounds, so changing this affects new passwords only). The default is OWASP's
    /// recommendation; tests lower it (debug builds hash slowly).
    pub password_hash_iterations: u32,
    /// How long a write's request id de-duplicates retries beyond the last
    /// [`crate::raft::state_machine::DedupPolicy::MIN_RECORDS`] requests of its shard, which are
    /// always kept. Measured by the shard leaders' monotonic clocks, so no wall-clock fault
    /// shortens it (`dedup_clock.rs`); every node must use the same value.
    pub dedup_window_ms: u64,
    /// Gossip seeds (`host:port` of other nodes or routers). Gossip runs over UDP on the
    /// node's listen address; ring members are always seeds too.
    pub gossip_seeds: Vec<String>,
    /// Gossip round interval.
    pub gossip_interval_ms: u64,
    /// Most replica moves this node runs at once as a shard leader.
    pub max_concurrent_moves: usize,
    /// How long a new replica may take to catch up (snapshot + log) before the move is
    /// abandoned and retried.
    pub catch_up_timeout_ms: u64,
    /// A ring member unreachable for longer than this is declared dead and its replicas
    /// are re-created elsewhere (0 = never).
    pub dead_node_timeout_ms: u64,
    /// How often the system leader checks members (liveness, joins, decommissions).
    pub membership_interval_ms: u64,
    /// The system leader moves shard leaderships (one per membership pass) until every
    /// active node leads within one shard of every other.
    pub balance_leaders: bool,
    /// Serve linearizable reads on a leader under its lease, without a heartbeat round: while
    /// a quorum acknowledged this leader less than `election_timeout_min_ms` ago (its
    /// followers refuse other candidates for `election_timeout_max_ms` after hearing from
    /// it). Safe while monotonic clocks advance at rates within (max − min) / max of each
    /// other; off, every read takes a ReadIndex round. Every node must use the same election
    /// timeouts.
    pub lease_reads: bool,
    /// NEGATIVE CONTROL ONLY — breaks linearizability on purpose: serve reads asked to be
    /// linearizable from the local state of any replica, without a leader/ReadIndex check.
    /// The fault-injection harness must catch a cluster running with this on.
    pub unsafe_skip_read_index: bool,
    /// NEGATIVE CONTROL ONLY — breaks linearizability on purpose: lease reads trust a lease
    /// this long (0 = off), however long followers keep theirs, and even after this leader
    /// ordered a transfer. The fault-injection harness must catch a cluster running with it.
    pub unsafe_read_lease_ms: u64,
    /// NEGATIVE CONTROL ONLY — breaks durability on purpose: acknowledge log appends
    /// without fsync. The fault-injection harness must catch lost writes after crashes.
    pub unsafe_skip_fsync: bool,
    /// NEGATIVE CONTROL ONLY — breaks durability on purpose: acknowledge a write as soon as
    /// the leader has accepted it, before it is committed by a quorum.
    pub unsafe_ack_before_commit: bool,
    /// NEGATIVE CONTROL ONLY — breaks the timestamp oracle on purpose: a new system leader
    /// starts at its own clock instead of above the persisted bound, so after a leader whose
    /// clock ran ahead, timestamps go back.
    pub unsafe_tso_ignore_bound: bool,
    /// NEGATIVE CONTROL ONLY — breaks snapshot reads on purpose: shard leaders commit writes
    /// at timestamps of their own (one above the highest read they served or timestamp they
    /// assigned) instead of fetching them from the oracle; a read at a timestamp then sees a
    /// write on one shard without an earlier one on another.
    pub unsafe_local_commit_ts: bool,
    /// NEGATIVE CONTROL ONLY — breaks snapshot reads on purpose: a read at a timestamp
    /// (repeatable-read and serializable transactional reads, plain reads at a timestamp)
    /// ignores the locks of transactions that started at or before it and returns the
    /// newest committed version, instead of refusing the read until the lock is resolved.
    /// A transaction whose primary committed but whose secondaries are still locked is then
    /// seen on one shard and not on another (fractured reads). For testing only: the
    /// fault-injection harness must catch a cluster running with this on.
    pub unsafe_ignore_locks: bool,
    /// NEGATIVE CONTROL ONLY — breaks request de-duplication on purpose: shard leaders stamp
    /// write entries with their wall clocks (as before issue 14) instead of the
    /// de-duplication clock, so a leader whose wall clock jumps past the window forgets
    /// records beyond the last `MIN_RECORDS` requests and their retries apply twice.
    pub unsafe_dedup_wall_clock: bool,
    /// How long replaced versions stay in memory for snapshot reads (and transactions), in
    /// ms of oracle time: a read at an older timestamp is refused (see `mvcc.rs`).
    pub mvcc_window_ms: u64,
    /// Most bytes of replaced versions all of the node's shards keep in memory together;
    /// past it the oldest go first, shortening the window.
    pub mvcc_history_max_bytes: usize,
    /// Mutual TLS: the cluster CA, this node's certificate (role `node`) and its key. The
    /// node serves TLS only, requires callers' certificates of this CA, and dials its peers
    /// with its own certificate. Required unless `insecure`.
    pub tls: Option<TlsPaths>,
    /// Serve and dial without TLS: anyone who can reach the port owns the cluster. For
    /// tests and local experiments; refused together with `tls`.
    pub insecure: bool,
    /// The cluster's gossip key file (`gossip.key`, written by `kvctl cert create-ca`): every
    /// gossip datagram is authenticated with it (`ringkv_gossip::auth`). Required with `tls`;
    /// without it (insecure clusters) anyone who can send UDP to the port can forge liveness
    /// and leader claims.
    pub gossip_key: Option<PathBuf>,
    /// `host:port` of the Prometheus endpoint (`GET /metrics`, plain HTTP; port 0 picks a
    /// free port, reported in `Admin.NodeStatus.metrics_addr`). None (the default): no
    /// endpoint. It shows counters and Raft state, no keys or values.
    pub metrics_addr: Option<String>,
}

/// The files of a process's TLS identity (`--ca`, `--cert`, `--key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// The cluster CA's certificate (PEM).
    pub ca: PathBuf,
    /// This node's certificate (PEM), signed by the CA, role `node`.
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: 0,
            listen: "127.0.0.1:7001".to_string(),
            advertise_addr: None,
            data_dir: PathBuf::from("ringkv-data"),
            cluster_id: None,
            // openraft ticks every 1.5 heartbeat intervals per group, sleeping or not (its tick
            // task only skips the tick): at 1000s of groups those timers are most of an idle
            // node's CPU. Followers wait the lease (election_timeout_max) plus an election
            // timeout after the last heartbeat, so 500 ms still leaves 6+ heartbeats of slack.
            heartbeat_interval_ms: 500,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            // Under load the next entry follows a commit within a millisecond or two.
            commit_propagation_delay_ms: 10,
            hibernate_after_ms: 5_000,
            keepalive_interval_ms: 1_000,
            wal_preallocate_bytes: 4 << 20,
            wal_segment_bytes: 64 << 20,
            snapshot_logs_since_last: 10_000,
            logs_to_keep_after_snapshot: 1_000,
            snapshot_chunk_bytes: 1 << 20,
            // A 1 GB move (3 -> 4 nodes) on 2 cores and one disk: three leader nodes send
            // to the new node at once, so it takes in up to three budgets. With the budget
            // held across a node's concurrent moves, writes during the move ran at
            // 1.5-1.8x their steady p99 at 5 MiB/s (~68 s), 1.7-2.0x at 6 MiB/s (~57 s),
            // 2.0-2.3x at 8 MiB/s (~45 s) and 1.4-1.5x at 4 MiB/s (~90 s)
            // (docs/benchmarks/rebalance-2026-12-07b).
            catch_up_bytes_per_sec: 5 << 20,
            rpc_timeout_ms: 2_000,
            write_timeout_ms: 5_000,
            max_key_bytes: 4 << 10,
            max_value_bytes: 1 << 20,
            max_ops_per_write: 1_000,
            max_message_bytes: 16 << 20,
            // Above what routers send: a router serves at most 4,096 requests at once.
            max_inflight_requests: 8192,
            // 256 groups with a few replication and heartbeat calls each in flight.
            max_inflight_peer_requests: 8192,
            password_hash_iterations: ringkv_authz::password::ITERATIONS,
            dedup_window_ms: 5 * 60 * 1000,
            gossip_seeds: Vec::new(),
            gossip_interval_ms: 500,
            max_concurrent_moves: 2,
            catch_up_timeout_ms: 10 * 60 * 1000,
            dead_node_timeout_ms: 5 * 60 * 1000,
            membership_interval_ms: 1000,
            balance_leaders: true,
            lease_reads: true,
            unsafe_skip_read_index: false,
            unsafe_read_lease_ms: 0,
            unsafe_skip_fsync: false,
            unsafe_ack_before_commit: false,
            unsafe_tso_ignore_bound: false,
            unsafe_local_commit_ts: false,
            unsafe_ignore_locks: false,
            unsafe_dedup_wall_clock: false,
            // FoundationDB keeps 5 s; a transaction may run this long.
            mvcc_window_ms: 10_000,
            mvcc_history_max_bytes: 256 << 20,
            tls: None,
            insecure: false,
            gossip_key: None,
            metrics_addr: None,
        }
    }
}

/// How long a leader's lease lasts for reads (see [`NodeConfig::read_lease`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLease {
    /// From the time a quorum acknowledged the leadership.
    pub duration: std::time::Duration,
    /// NEGATIVE CONTROL ONLY: keep trusting the lease after ordering a transfer.
    pub unsafe_ignore_transfers: bool,
}

/// A configuration value out of range.
#[derive(Debug, thiserror::Error)]
#[error("invalid node config: {0}")]
pub struct ConfigError(pub String);

impl NodeConfig {
    /// A config for tests: fast elections, small limits, in `data_dir`, port 0.
    pub fn for_test(node_id: u64, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            node_id,
            listen: "127.0.0.1:0".to_string(),
            data_dir,
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            hibernate_after_ms: 2_000,
            keepalive_interval_ms: 200,
            insecure: true,
            ..NodeConfig::default()
        }
    }

    /// The lease linearizable reads may rely on, if any: `election_timeout_min_ms` after a
    /// quorum acknowledged the leader (followers refuse candidates for
    /// `election_timeout_max_ms`; the difference absorbs clock-rate drift).
    pub fn read_lease(&self) -> Option<ReadLease> {
        if self.unsafe_read_lease_ms > 0 {
            return Some(ReadLease {
                duration: std::time::Duration::from_millis(self.unsafe_read_lease_ms),
                unsafe_ignore_transfers: true,
            });
        }
        self.lease_reads.then(|| ReadLease {
            duration: std::time::Duration::from_millis(self.election_timeout_min_ms),
            unsafe_ignore_transfers: false,
        })
    }

    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: String| Err(ConfigError(msg));
        if self.node_id == 0 {
            return fail("node_id must be set to a non-zero value (--node-id)".to_string());
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return fail(format!("listen must be an ip:port, got {:?}", self.listen));
        }
        if let Some(addr) = &self.metrics_addr {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return fail(format!("metrics_addr must be ip:port, got {addr:?}"));
            }
        }
        if let Some(addr) = &self.advertise_addr {
            if addr.is_empty() || !addr.contains(':') {
                return fail(format!("advertise_addr must be host:port, got {addr:?}"));
            }
        }
        if self.heartbeat_interval_ms == 0 {
            return fail("heartbeat_interval_ms must be positive".to_string());
        }
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms {
            return fail("election_timeout_min_ms must exceed heartbeat_interval_ms".to_string());
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return fail("election_timeout_max_ms must exceed election_timeout_min_ms".to_string());
        }
        if self.commit_propagation_delay_ms >= self.heartbeat_interval_ms {
            return fail("commit_propagation_delay_ms must be below heartbeat_interval_ms".to_string());
        }
        if !(50..=60_000).contains(&self.keepalive_interval_ms) {
            return fail("keepalive_interval_ms must be between 50 and 60000".to_string());
        }
        if self.hibernate_after_ms != 0 && self.hibernate_after_ms < self.keepalive_interval_ms {
            return fail(
                "hibernate_after_ms must be 0 (never) or at least keepalive_interval_ms".to_string(),
            );
        }
        if self.wal_segment_bytes < MIN_WAL_SEGMENT_BYTES {
            return fail(format!(
                "wal_segment_bytes must be at least {MIN_WAL_SEGMENT_BYTES} (1 MiB), got {}",
                self.wal_segment_bytes
            ));
        }
        if self.snapshot_logs_since_last == 0 {
            return fail("snapshot_logs_since_last must be positive".to_string());
        }
        if self.snapshot_chunk_bytes < 1024 || self.snapshot_chunk_bytes as usize > self.max_message_bytes / 2
        {
            return fail(
                "snapshot_chunk_bytes must be between 1 KiB and half of max_message_bytes".to_string(),
            );
        }
        if self.rpc_timeout_ms == 0 || self.write_timeout_ms == 0 {
            return fail("rpc_timeout_ms and write_timeout_ms must be positive".to_string());
        }
        if self.max_key_bytes == 0 || self.max_key_bytes > 64 << 10 {
            return fail("max_key_bytes must be between 1 and 65536".to_string());
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > 64 << 20 {
            return fail("max_value_bytes must be between 1 and 64 MiB".to_string());
        }
        if self.max_ops_per_write == 0 {
            return fail("max_ops_per_write must be positive".to_string());
        }
        let rounds = ringkv_authz::password::MIN_ITERATIONS..=ringkv_authz::password::MAX_ITERATIONS;
        if !rounds.contains(&self.password_hash_iterations) {
            return fail(format!(
                "password_hash_iterations must be in {}..={}",
                rounds.start(),
                rounds.end()
            ));
        }
        if self.max_inflight_requests == 0 || self.max_inflight_peer_requests == 0 {
            return fail("max_inflight_requests and max_inflight_peer_requests must be positive".to_string());
        }
        if self.max_message_bytes < self.max_value_bytes + self.max_key_bytes + 4096 {
            return fail("max_message_bytes must hold at least one maximal key and value".to_string());
        }
        if !(10..=60_000).contains(&self.gossip_interval_ms) {
            return fail("gossip_interval_ms must be between 10 and 60000".to_string());
        }
        if let Some(seed) = self.gossip_seeds.iter().find(|seed| !seed.contains(':')) {
            return fail(format!("gossip seeds must be host:port, got {seed:?}"));
        }
        if self.max_concurrent_moves == 0 || self.max_concurrent_moves > 64 {
            return fail("max_concurrent_moves must be between 1 and 64".to_string());
        }
        if self.catch_up_timeout_ms < 1000 {
            return fail("catch_up_timeout_ms must be at least 1000".to_string());
        }
        if self.dead_node_timeout_ms != 0 && self.dead_node_timeout_ms < 1000 {
            return fail("dead_node_timeout_ms must be 0 (never) or at least 1000".to_string());
        }
        if self.membership_interval_ms < 50 || self.membership_interval_ms > 60_000 {
            return fail("membership_interval_ms must be between 50 and 60000".to_string());
        }
        if self.dedup_window_ms < 1000 {
            return fail("dedup_window_ms must be at least 1000".to_string());
        }
        match (&self.tls, self.insecure) {
            (None, false) => {
                return fail(
                    "no TLS configured: give --ca, --cert and --key (see `kvctl cert`), or \
                     --insecure to run a cluster that anyone who can reach it owns"
                        .to_string(),
                )
            }
            (Some(_), true) => {
                return fail("--insecure and --ca/--cert/--key exclude each other".to_string())
            }
            _ => {}
        }
        if self.tls.is_some() && self.gossip_key.is_none() {
            return fail(
                "TLS without --gossip-key: give the cluster's gossip key (gossip.key beside the \
                 CA, see `kvctl cert create-ca`), or anyone who can send UDP to the node could \
                 forge gossip"
                    .to_string(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults and the test config validate; out-of-range values are rejected with a reason.
    #[test]
    fn validation() {
        let mut config = NodeConfig {
            node_id: 1,
            insecure: true,
            ..NodeConfig::default()
        };
        assert!(config.validate().is_ok());
        assert!(NodeConfig::for_test(1, PathBuf::from("x")).validate().is_ok());
        let small_segments = NodeConfig {
            wal_segment_bytes: MIN_WAL_SEGMENT_BYTES - 1,
            ..config.clone()
        };
        let err = small_segments.validate().expect_err("segments below 1 MiB");
        assert!(err.to_string().contains("wal_segment_bytes"), "{err}");
        let parsed: NodeConfig = toml::from_str("node_id = 3\nwal_segment_bytes = 2097152\n").expect("toml");
        assert_eq!(parsed.wal_segment_bytes, 2 << 20);
        config.election_timeout_max_ms = config.election_timeout_min_ms;
        assert!(config.validate().is_err());
        let zero = NodeConfig::default();
        let err = zero.validate().expect_err("node id 0");
        assert!(err.to_string().contains("node_id"));
        let parsed: Result<NodeConfig, _> = toml::from_str("node_id = 3\nbogus = 1\n");
        assert!(parsed.is_err(), "unknown fields are rejected");
    }

    /// Without TLS a node starts only when told it runs insecure, and says why not.
    #[test]
    fn tls_or_insecure_is_required() {
        let open = NodeConfig {
            node_id: 1,
            ..NodeConfig::default()
        };
        let err = open.validate().expect_err("no TLS, not insecure");
        assert!(err.to_string().contains("--insecure"), "{err}");
        let both = NodeConfig {
            tls: Some(TlsPaths {
                ca: "ca.crt".into(),
                cert: "node.crt".into(),
                key: "node.key".into(),
            }),
            ..NodeConfig::for_test(1, PathBuf::from("x"))
        };
        assert!(both.validate().is_err(), "both");
        let without_gossip_key = NodeConfig {
            insecure: false,
            ..both
        };
        let err = without_gossip_key
            .validate()
            .expect_err("TLS without a gossip key");
        assert!(err.to_string().contains("--gossip-key"), "{err}");
        let secure = NodeConfig {
            gossip_key: Some("gossip.key".into()),
            ..without_gossip_key
        };
        assert!(secure.validate().is_ok());
    }

    /// The catch-up budget's former name still configures it.
    #[test]
    fn the_catch_up_budget_keeps_its_old_name() {
        for field in ["catch_up_bytes_per_sec", "snapshot_send_bytes_per_sec"] {
            let parsed: NodeConfig =
                toml::from_str(&format!("node_id = 3\n{field} = 1000\n")).expect("parse");
            assert_eq!(parsed.catch_up_bytes_per_sec, 1000, "{field}");
        }
    }
}
