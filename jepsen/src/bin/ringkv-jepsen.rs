//! `ringkv-jepsen`: run the fault-injection harness, or re-check a recorded history.
//!
//! Exit codes: 0 valid, 1 invalid, 2 unknown, 3 the harness itself failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ringkv_jepsen::checker::{self, Validity};
use ringkv_jepsen::history::F;
use ringkv_jepsen::nemesis::{NemesisKind, Schedule};
use ringkv_jepsen::runner::{self, RunOptions};
use ringkv_jepsen::workload::Workload;

#[derive(Parser, Debug)]
#[command(
    name = "ringkv-jepsen",
    version,
    about = "Jepsen-style fault injection for ringkv"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a cluster, run workloads under faults, check the history.
    Run(Box<RunArgs>),
    /// Re-check a recorded history (history.edn).
    Check {
        /// The EDN history file.
        history: PathBuf,
        /// The isolation level the history's transactions (append, rw-register and bank
        /// workloads) ran at.
        #[arg(long, value_enum, default_value = "repeatable-read")]
        isolation: IsolationArg,
        /// List every violation found, not the first few of each kind (per key for
        /// linearizability).
        #[arg(long)]
        all_violations: bool,
    },
}

/// `--security`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SecurityArg {
    /// Plain http (`--insecure`).
    Insecure,
    /// Mutual TLS.
    Tls,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// How the cluster's processes and the harness talk: `tls` (mutual TLS with certificates
    /// made for the run, authenticated gossip, the harness presenting a client certificate)
    /// or `insecure` (plain http, `--insecure`).
    #[arg(long, value_enum, default_value = "tls")]
    security: SecurityArg,
    /// How long the workload runs, in seconds.
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Seed of the nemesis schedule and the clients (random when absent).
    #[arg(long)]
    seed: Option<u64>,
    /// Faults to inject (comma-separated); `all` for every one.
    #[arg(long, value_delimiter = ',', default_value = "kill-one,partition-majority")]
    nemesis: Vec<String>,
    /// Workloads (comma-separated): register, set, timestamp, snapshot, append, bank,
    /// rw-register, batch, scan, delete-range, watch, ttl, lock; `all` for every one.
    #[arg(long, value_delimiter = ',', default_value = "register,set")]
    workload: Vec<String>,
    /// List every violation found, not the first few of each kind (per key for
    /// linearizability).
    #[arg(long)]
    all_violations: bool,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Client processes per workload (snapshot: alternately writers and readers, the first a
    /// writer).
    #[arg(long, default_value_t = 5)]
    concurrency: usize,
    /// Quiet seconds before each fault.
    #[arg(long, default_value_t = 3)]
    quiet_s: u64,
    /// Seconds each fault lasts.
    #[arg(long, default_value_t = 5)]
    fault_s: u64,
    /// Largest jump of the clock-bump nemesis, in seconds (whole minutes, at least one).
    #[arg(long, default_value_t = 300)]
    clock_bump_max_s: u64,
    /// The nodes' de-duplication window in ms (their default when absent: 5 minutes); set
    /// it below --clock-bump-max-s so that clock bumps jump past it.
    #[arg(long)]
    dedup_window_ms: Option<u64>,
    /// Tiny snapshot/purge thresholds so lagging nodes install snapshots.
    #[arg(long)]
    snapshot_pressure: bool,
    /// Pad register values to this many bytes (0: just the number); 4096 or more makes every
    /// write entry take the state machine's large-batch path.
    #[arg(long, default_value_t = 0)]
    value_bytes: usize,
    /// Negative control: nodes serve linearizable reads without a ReadIndex check.
    #[arg(long)]
    unsafe_skip_read_index: bool,
    /// Negative control: nodes trust a leader lease this many ms long for reads (followers
    /// keep theirs for the maximum election timeout).
    #[arg(long, default_value_t = 0)]
    unsafe_read_lease_ms: u64,
    /// Negative control: nodes acknowledge appends without fsync (not caught by process
    /// faults: needs a page-cache-loss fault).
    #[arg(long)]
    unsafe_skip_fsync: bool,
    /// Negative control: nodes acknowledge writes before they are committed.
    #[arg(long)]
    unsafe_ack_before_commit: bool,
    /// Negative control: shard leaders commit writes at local timestamps instead of the
    /// oracle's (the snapshot workload catches it).
    #[arg(long)]
    unsafe_local_commit_ts: bool,
    /// Negative control: nodes treat a failed sync or write of their log or state machine
    /// as success instead of stopping (fail-stop); run it with `--fail-syncs-keep-unsynced`
    /// and `fail-syncs-all` (the set and register workloads catch the lost writes).
    #[arg(long)]
    unsafe_ignore_sync_errors: bool,
    /// The fail-syncs nemeses keep the unsynced data of a failed sync readable until the
    /// reboot that heals them (the page cache) instead of losing it at once.
    #[arg(long)]
    fail_syncs_keep_unsynced: bool,
    /// Isolation level of the append, rw-register and bank workloads' transactions.
    #[arg(long, value_enum, default_value = "repeatable-read")]
    isolation: IsolationArg,
    /// Negative control: the router commits repeatable-read transactions without the
    /// write-conflict check (the append workload catches the lost updates).
    #[arg(long)]
    unsafe_skip_write_conflict: bool,
    /// Negative control: the router commits serializable transactions without validating
    /// their reads (the append workload at serializable catches the write skew).
    #[arg(long)]
    unsafe_skip_read_validation: bool,
    /// Negative control: nodes serve reads at a timestamp past the transaction locks below
    /// it (the append workload at repeatable read catches the fractured reads).
    #[arg(long)]
    unsafe_ignore_locks: bool,
    /// Negative control: the router rolls back every lock it meets without asking its
    /// primary's record (the append workload catches the committed writes that went).
    #[arg(long)]
    unsafe_resolve_without_primary: bool,
    /// Negative control: each router hands out timestamps from a range of N it took ahead
    /// (with `--routers 2` or more, serializable runs catch the real-time violations).
    #[arg(long, default_value_t = 0)]
    unsafe_tso_prefetch: u32,
    /// Negative control: the routers give every attempt of a shard write a fresh request
    /// id (the register workload catches writes applied twice; pair it with a short
    /// `--router-rpc-timeout-ms`, e.g. 15, so applied writes are retried without faults).
    #[arg(long)]
    unsafe_fresh_request_ids: bool,
    /// Negative control: the lock workload's resource accepts every fencing token (the
    /// lock workload catches a stale holder's write landing after a newer holder's).
    #[arg(long)]
    unsafe_unfenced_resource: bool,
    /// Negative control: watchers resume every watch from now instead of from their
    /// position (the watch workload catches the events lost in between).
    #[arg(long)]
    unsafe_watch_resume_from_now: bool,
    /// The routers' timeout of one attempt to a node, in ms (default: theirs, 2000).
    #[arg(long)]
    router_rpc_timeout_ms: Option<u64>,
    /// Routers; clients start at each in turn and fail over to the others.
    #[arg(long, default_value_t = 1)]
    routers: usize,
    /// Results go to a new directory under this one.
    #[arg(long, default_value = "jepsen/results")]
    out: PathBuf,
    /// Directory holding ringkv-node and ringkv-router.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Keep the nodes' data directories.
    #[arg(long)]
    keep_data: bool,
}

fn parse_nemeses(names: &[String]) -> Result<Vec<NemesisKind>, String> {
    use clap::ValueEnum;
    let mut kinds = Vec::new();
    for name in names {
        if name == "all" {
            kinds.extend(NemesisKind::all());
        } else if name == "none" {
        } else {
            kinds.push(NemesisKind::from_str(name, true).map_err(|_| {
                let known: Vec<&str> = NemesisKind::value_variants().iter().map(|k| k.name()).collect();
                format!("unknown nemesis {name:?}; known: {}, all, none", known.join(", "))
            })?);
        }
    }
    Ok(kinds)
}

fn parse_workloads(names: &[String]) -> Result<Vec<Workload>, String> {
    use clap::ValueEnum;
    let mut workloads = Vec::new();
    for name in names {
        let named = if name == "all" {
            Workload::all()
        } else {
            vec![Workload::from_str(name, true).map_err(|_| {
                let known: Vec<String> = Workload::all().into_iter().map(Workload::name).collect();
                format!("unknown workload {name:?}; known: {}, all", known.join(", "))
            })?]
        };
        for workload in named {
            if !workloads.contains(&workload) {
                workloads.push(workload);
            }
        }
    }
    Ok(workloads)
}

fn listing(all_violations: bool) -> checker::Listing {
    if all_violations {
        checker::Listing::All
    } else {
        checker::Listing::Sample
    }
}

fn exit_for(validity: Validity) -> ExitCode {
    match validity {
        Validity::Valid => ExitCode::SUCCESS,
        Validity::Invalid => ExitCode::from(1),
        Validity::Unknown => ExitCode::from(2),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<Validity> {
    let nemeses = parse_nemeses(&args.nemesis).map_err(anyhow::Error::msg)?;
    let mut options = RunOptions::new(
        Duration::from_secs(args.duration_s),
        nemeses,
        args.bin_dir,
        args.out,
    );
    if let Some(seed) = args.seed {
        options.seed = seed;
    }
    options.workloads = parse_workloads(&args.workload).map_err(anyhow::Error::msg)?;
    options.listing = listing(args.all_violations);
    options.nodes = args.nodes;
    options.shards = args.shards;
    options.replication_factor = args.nodes.min(3) as u32;
    options.concurrency = args.concurrency;
    options.schedule = Schedule {
        quiet: Duration::from_secs(args.quiet_s),
        fault: Duration::from_secs(args.fault_s),
    };
    options.clock_bump_max = Duration::from_secs(args.clock_bump_max_s);
    options.dedup_window_ms = args.dedup_window_ms;
    options.snapshot_pressure = args.snapshot_pressure;
    options.value_bytes = args.value_bytes;
    options.unsafe_skip_read_index = args.unsafe_skip_read_index;
    options.unsafe_read_lease_ms = args.unsafe_read_lease_ms;
    options.unsafe_skip_fsync = args.unsafe_skip_fsync;
    options.unsafe_ack_before_commit = args.unsafe_ack_before_commit;
    options.unsafe_local_commit_ts = args.unsafe_local_commit_ts;
    options.unsafe_ignore_sync_errors = args.unsafe_ignore_sync_errors;
    options.fail_syncs_keep_unsynced = args.fail_syncs_keep_unsynced;
    options.isolation = args.isolation.into();
    options.unsafe_skip_write_conflict = args.unsafe_skip_write_conflict;
    options.unsafe_skip_read_validation = args.unsafe_skip_read_validation;
    options.unsafe_ignore_locks = args.unsafe_ignore_locks;
    options.unsafe_resolve_without_primary = args.unsafe_resolve_without_primary;
    options.unsafe_tso_prefetch = args.unsafe_tso_prefetch;
    options.unsafe_fresh_request_ids = args.unsafe_fresh_request_ids;
    options.unsafe_unfenced_resource = args.unsafe_unfenced_resource;
    options.unsafe_watch_resume_from_now = args.unsafe_watch_resume_from_now;
    options.router_rpc_timeout_ms = args.router_rpc_timeout_ms;
    options.routers = args.routers.max(1);
    options.keep_data = args.keep_data;
    options.tls = args.security == SecurityArg::Tls;
    let report = runner::run(options).await?;
    println!(
        "{}",
        std::fs::read_to_string(report.dir.join("summary.txt")).unwrap_or_default()
    );
    println!("results: {}", report.dir.display());
    Ok(report.verdict.validity)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(3);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            // Dropping an interrupted run tears its cluster down (processes killed, disks
            // unmounted, network namespaces and rules removed) before the process exits.
            Command::Run(args) => tokio::select! {
                result = run(*args) => result,
                signal = stop_signal() => Err(anyhow::anyhow!("{signal}: the run stopped, its cluster is torn down")),
            },
            Command::Check {
                history,
                isolation,
                all_violations,
            } => {
                let text = std::fs::read_to_string(&history)?;
                let history = ringkv_jepsen::edn::parse_history(&text)?;
                // Each workload whose operations the history holds.
                let has = |wanted: &dyn Fn(&F) -> bool| history.ops.iter().any(|op| wanted(&op.f));
                let workloads: Vec<Workload> = [
                    (
                        Workload::Register,
                        has(&|f| matches!(f, F::Read | F::Write | F::Cas | F::StaleRead)),
                    ),
                    (Workload::Set, has(&|f| matches!(f, F::Add | F::ReadAll))),
                    (
                        Workload::Snapshot,
                        has(&|f| matches!(f, F::ChainWrite | F::SnapshotRead)),
                    ),
                    (Workload::Append, has(&|f| matches!(f, F::Txn))),
                    (Workload::RwRegister, has(&|f| matches!(f, F::RwTxn))),
                    (Workload::Bank, has(&|f| matches!(f, F::Transfer | F::BankRead))),
                    (
                        Workload::Batch,
                        has(&|f| matches!(f, F::BatchWrite | F::BatchRead)),
                    ),
                    (Workload::Scan, has(&|f| matches!(f, F::ScanWrite | F::Scan))),
                    (
                        Workload::DeleteRange,
                        has(&|f| matches!(f, F::RangeFill | F::DeleteRange | F::RangeRead)),
                    ),
                    (
                        Workload::Lock,
                        has(&|f| matches!(f, F::LockAcquire | F::GuardedWrite | F::LockRelease)),
                    ),
                    (
                        Workload::Watch,
                        has(&|f| matches!(f, F::WatchPut | F::WatchDelete | F::Watch)),
                    ),
                    (
                        Workload::Ttl,
                        has(&|f| matches!(f, F::TtlPut | F::TtlExpire | F::TtlRead | F::TtlReadAt)),
                    ),
                ]
                .into_iter()
                .filter_map(|(workload, present)| present.then_some(workload))
                .collect();
                let verdicts =
                    runner::check_workloads(&history, &workloads, isolation.into(), listing(all_violations));
                let verdict = checker::combine(verdicts);
                println!("{}", serde_json::to_string_pretty(&verdict)?);
                Ok(verdict.validity)
            }
        }
    });
    match result {
        Ok(validity) => exit_for(validity),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(3)
        }
    }
}

/// The first SIGINT or SIGTERM, by name (neither can be listened for: never).
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
            _ = interrupt.recv() => "interrupted",
            _ = terminate.recv() => "terminated",
        },
        _ => std::future::pending().await,
    }
}

/// The isolation levels as the command line names them.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum IsolationArg {
    ReadUncommitted,
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

impl From<IsolationArg> for ringkv_client::Isolation {
    fn from(level: IsolationArg) -> Self {
        match level {
            IsolationArg::ReadUncommitted => ringkv_client::Isolation::ReadUncommitted,
            IsolationArg::ReadCommitted => ringkv_client::Isolation::ReadCommitted,
            IsolationArg::RepeatableRead => ringkv_client::Isolation::RepeatableRead,
            IsolationArg::Serializable => ringkv_client::Isolation::Serializable,
        }
    }
}
