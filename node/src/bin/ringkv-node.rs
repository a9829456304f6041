//! `ringkv-node`: a storage node. Flags override the TOML config file.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use ringkv_node::config::TlsPaths;
use ringkv_node::{NodeConfig, NodeServer};
use tracing::info;

/// mimalloc: glibc malloc cost ~12% of a node's CPU under write load (arena locking,
/// `malloc_consolidate`); see docs/benchmarks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--version`: the version and the build profile (`ringkv-bench` labels its results by it).
const VERSION: &str = if cfg!(debug_assertions) {
    concat!(env!("CARGO_PKG_VERSION"), " (debug build)")
} else {
    concat!(env!("CARGO_PKG_VERSION"), " (release build)")
};

#[derive(Debug, Parser)]
#[command(name = "ringkv-node", version = VERSION, about = "ringkv storage node")]
struct Args {
    /// TOML configuration file (fields of NodeConfig); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's id (non-zero, unique in the cluster).
    #[arg(long)]
    node_id: Option<u64>,
    /// Address to listen on, ip:port (port 0: pick once, then reuse).
    #[arg(long)]
    listen: Option<String>,
    /// Address peers and routers use to reach this node.
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Refuse to start unless the data directory belongs to this cluster.
    #[arg(long)]
    cluster_id: Option<String>,
    /// Snapshot a group after this many log entries.
    #[arg(long)]
    snapshot_logs_since_last: Option<u64>,
    /// Log entries kept after a snapshot.
    #[arg(long)]
    logs_to_keep_after_snapshot: Option<u64>,
    /// How long replaced versions stay readable by snapshot reads and transactions, in ms.
    #[arg(long)]
    mvcc_window_ms: Option<u64>,
    /// How long a request id de-duplicates retries beyond the last 16,384 requests of its
    /// shard, in ms (the same on every node).
    #[arg(long)]
    dedup_window_ms: Option<u64>,
    /// Most bytes of replaced versions the node keeps in memory (all shards together).
    #[arg(long)]
    mvcc_history_max_bytes: Option<usize>,
    /// Catch-up bytes per second this node sends over all groups: snapshot chunks and log
    /// entries for followers that lag, e.g. new replicas of a move (0 = unlimited).
    #[arg(long)]
    catch_up_bytes_per_sec: Option<u64>,
    /// How far ahead of its writes the write-ahead log preallocates its segment (0 = never).
    #[arg(long)]
    wal_preallocate_bytes: Option<u64>,
    /// Size of the write-ahead log's segment files (at least 1 MiB).
    #[arg(long)]
    wal_segment_bytes: Option<u64>,
    /// Raft heartbeat interval.
    #[arg(long)]
    heartbeat_interval_ms: Option<u64>,
    /// Longest wait for the next entries to carry a newer commit index to followers.
    #[arg(long)]
    commit_propagation_delay_ms: Option<u64>,
    /// Election timeout lower bound (the upper bound is twice this unless configured).
    #[arg(long)]
    election_timeout_min_ms: Option<u64>,
    /// Gossip seeds (host:port of other nodes or routers), comma-separated.
    #[arg(long, value_delimiter = ',')]
    gossip_seeds: Vec<String>,
    /// Declare a ring member dead after this long unreachable (0 = never).
    #[arg(long)]
    dead_node_timeout_ms: Option<u64>,
    /// Most replica moves this node runs at once as a shard leader.
    #[arg(long)]
    max_concurrent_moves: Option<usize>,
    /// Do not move shard leaderships to spread them evenly (the system leader does by default).
    #[arg(long)]
    no_balance_leaders: bool,
    /// How often the system leader checks members.
    #[arg(long)]
    membership_interval_ms: Option<u64>,
    /// Quiet time after which an idle shard group hibernates (0 = never).
    #[arg(long)]
    hibernate_after_ms: Option<u64>,
    /// How often keep-alives for hibernating groups go to each peer.
    #[arg(long)]
    keepalive_interval_ms: Option<u64>,
    /// Take a ReadIndex round for every linearizable read instead of reading under the
    /// leader lease.
    #[arg(long)]
    no_lease_reads: bool,
    /// NEGATIVE CONTROL ONLY: serve linearizable reads without a ReadIndex check.
    #[arg(long, hide = true)]
    unsafe_skip_read_index: bool,
    /// NEGATIVE CONTROL ONLY: trust a leader lease this many ms long, however long
    /// followers keep theirs.
    #[arg(long, hide = true)]
    unsafe_read_lease_ms: Option<u64>,
    /// NEGATIVE CONTROL ONLY: acknowledge log appends without fsync.
    #[arg(long, hide = true)]
    unsafe_skip_fsync: bool,
    /// NEGATIVE CONTROL ONLY: acknowledge writes before they are committed.
    #[arg(long, hide = true)]
    unsafe_ack_before_commit: bool,
    /// NEGATIVE CONTROL ONLY: a new system leader hands out timestamps from its own clock,
    /// ignoring the persisted bound.
    #[arg(long, hide = true)]
    unsafe_tso_ignore_bound: bool,
    /// NEGATIVE CONTROL ONLY: shard leaders commit writes at local timestamps instead of
    /// timestamps of the oracle.
    #[arg(long, hide = true)]
    unsafe_local_commit_ts: bool,
    /// NEGATIVE CONTROL ONLY: reads at a timestamp ignore transaction locks below it and
    /// return the newest committed version (fractured reads).
    #[arg(long, hide = true)]
    unsafe_ignore_locks: bool,
    /// NEGATIVE CONTROL ONLY: shard leaders stamp write entries with their wall clocks, so a
    /// leader whose clock jumps past the de-duplication window forgets live records.
    #[arg(long, hide = true)]
    unsafe_dedup_wall_clock: bool,
    /// NEGATIVE CONTROL ONLY: a failed sync or write of the log or the state machine is
    /// logged and treated as success instead of stopping the node (fail-stop), so the node
    /// acknowledges writes its disk may not hold.
    #[arg(long, hide = true)]
    unsafe_ignore_sync_errors: bool,
    /// The cluster CA's certificate (PEM): callers and peers must present certificates it
    /// signed. With --cert and --key; see `kvctl cert`.
    #[arg(long, requires_all = ["cert", "key"])]
    ca: Option<PathBuf>,
    /// This node's certificate (PEM, role node, signed by the CA).
    #[arg(long, requires_all = ["ca", "key"])]
    cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, requires_all = ["ca", "cert"])]
    key: Option<PathBuf>,
    /// Serve and dial without TLS: anyone who can reach the node owns the cluster. For
    /// tests and local experiments only.
    #[arg(long, conflicts_with_all = ["ca", "cert", "key"])]
    insecure: bool,
    /// The cluster's gossip key file (gossip.key beside the CA, see `kvctl cert create-ca`):
    /// every gossip datagram is authenticated with it. Required with --ca.
    #[arg(long)]
    gossip_key: Option<PathBuf>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (plain HTTP; port 0 picks a
    /// free one, shown by `kvctl endpoint status`). Off by default.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// PBKDF2 rounds of new password hashes (default 600000; at least 10000).
    #[arg(long)]
    password_hash_iterations: Option<u32>,
    /// After binding, write the advertised address to this file.
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

fn load_config(args: &Args) -> anyhow::Result<NodeConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => NodeConfig::default(),
    };
    if let Some(node_id) = args.node_id {
        config.node_id = node_id;
    }
    if let Some(listen) = &args.listen {
        config.listen = listen.clone();
    }
    if let Some(addr) = &args.advertise_addr {
        config.advertise_addr = Some(addr.clone());
    }
    if let Some(addr) = &args.metrics_addr {
        config.metrics_addr = Some(addr.clone());
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(cluster_id) = &args.cluster_id {
        config.cluster_id = Some(cluster_id.clone());
    }
    if let Some(n) = args.snapshot_logs_since_last {
        config.snapshot_logs_since_last = n;
    }
    if let Some(n) = args.logs_to_keep_after_snapshot {
        config.logs_to_keep_after_snapshot = n;
    }
    if let Some(ms) = args.mvcc_window_ms {
        config.mvcc_window_ms = ms;
    }
    if let Some(ms) = args.dedup_window_ms {
        config.dedup_window_ms = ms;
    }
    if let Some(rounds) = args.password_hash_iterations {
        config.password_hash_iterations = rounds;
    }
    if let Some(bytes) = args.mvcc_history_max_bytes {
        config.mvcc_history_max_bytes = bytes;
    }
    if let Some(n) = args.catch_up_bytes_per_sec {
        config.catch_up_bytes_per_sec = n;
    }
    if let Some(bytes) = args.wal_preallocate_bytes {
        config.wal_preallocate_bytes = bytes;
    }
    if let Some(bytes) = args.wal_segment_bytes {
        config.wal_segment_bytes = bytes;
    }
    if let Some(ms) = args.heartbeat_interval_ms {
        config.heartbeat_interval_ms = ms;
    }
    if let Some(ms) = args.commit_propagation_delay_ms {
        config.commit_propagation_delay_ms = ms;
    }
    if let Some(ms) = args.election_timeout_min_ms {
        config.election_timeout_min_ms = ms;
        if config.election_timeout_max_ms <= ms {
            config.election_timeout_max_ms = ms * 2;
        }
    }
    if !args.gossip_seeds.is_empty() {
        config.gossip_seeds = args.gossip_seeds.clone();
    }
    if let Some(ms) = args.dead_node_timeout_ms {
        config.dead_node_timeout_ms = ms;
    }
    if let Some(n) = args.max_concurrent_moves {
        config.max_concurrent_moves = n;
    }
    if args.no_balance_leaders {
        config.balance_leaders = false;
    }
    if let Some(ms) = args.membership_interval_ms {
        config.membership_interval_ms = ms;
    }
    if let Some(ms) = args.hibernate_after_ms {
        config.hibernate_after_ms = ms;
    }
    if let Some(ms) = args.keepalive_interval_ms {
        config.keepalive_interval_ms = ms;
    }
    if args.no_lease_reads {
        config.lease_reads = false;
    }
    config.unsafe_skip_read_index |= args.unsafe_skip_read_index;
    if let Some(ms) = args.unsafe_read_lease_ms {
        config.unsafe_read_lease_ms = ms;
    }
    config.unsafe_skip_fsync |= args.unsafe_skip_fsync;
    config.unsafe_ack_before_commit |= args.unsafe_ack_before_commit;
    config.unsafe_tso_ignore_bound |= args.unsafe_tso_ignore_bound;
    config.unsafe_local_commit_ts |= args.unsafe_local_commit_ts;
    config.unsafe_ignore_locks |= args.unsafe_ignore_locks;
    config.unsafe_dedup_wall_clock |= args.unsafe_dedup_wall_clock;
    if let (Some(ca), Some(cert), Some(key)) = (&args.ca, &args.cert, &args.key) {
        config.tls = Some(TlsPaths {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        });
        config.insecure = false;
    }
    if args.insecure {
        config.insecure = true;
        config.tls = None;
    }
    if let Some(path) = &args.gossip_key {
        config.gossip_key = Some(path.clone());
    }
    config.validate()?;
    if let Some(path) = &config.gossip_key {
        // Checked here because the node serves on without gossip if gossip fails to start.
        ringkv_gossip::GossipKeys::load(path).context("bad --gossip-key")?;
    }
    Ok(config)
}

/// Logs on stderr, colours only on a terminal (none in a log file), third-party warnings
/// and errors at most once per call site and 10 s (`log_limit`).
fn init_tracing(format: &str) {
    use ringkv_metrics::log_limit::{RateLimited, Scope, DEFAULT_REPEAT_INTERVAL};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if format == "json" {
        let inner = tracing_subscriber::fmt::format().json();
        builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(RateLimited::new(
                inner,
                true,
                Scope::ThirdParty,
                DEFAULT_REPEAT_INTERVAL,
            ))
            .init();
    } else {
        let inner = tracing_subscriber::fmt::format().with_ansi(ansi);
        builder
            .event_format(RateLimited::new(
                inner,
                false,
                Scope::ThirdParty,
                DEFAULT_REPEAT_INTERVAL,
            ))
            .init();
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    if args.unsafe_ignore_sync_errors {
        // Process-wide, like fail-stop itself; before the node opens its storage.
        ringkv_node::storage::fail_stop::ignore_storage_errors();
    }
    let handle = NodeServer::start(config).await?;
    if let Some(path) = &args.addr_file {
        handle
            .write_addr_file(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    shutdown_signal().await?;
    info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_tracing(&args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
