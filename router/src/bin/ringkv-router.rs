//! `ringkv-router`: parse flags, load the config, start a [`Router`], write the bound
//! address to `--addr-file`, and serve until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use ringkv_metrics::log_limit::{RateLimited, Scope, DEFAULT_REPEAT_INTERVAL};
use ringkv_router::config::TlsPaths;
use ringkv_router::failpoint::Failpoint;
use ringkv_router::log_format::JsonLines;
use ringkv_router::{Router, RouterConfig};
use tracing_subscriber::EnvFilter;

/// mimalloc: glibc malloc cost ~12% of a node's CPU under write load (arena locking,
/// `malloc_consolidate`); see docs/benchmarks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ringkv router: a stateless gRPC proxy in front of the storage nodes.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// TOML config file; flags override its values.
    #[arg(long, value_name = "TOML")]
    config: Option<PathBuf>,
    /// Address to serve gRPC on [default: 127.0.0.1:7000, or the config file's].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Seed node addresses, comma-separated (required unless set in the config file).
    #[arg(long, value_name = "ADDR,ADDR,...", value_delimiter = ',')]
    nodes: Vec<String>,
    /// Collect the records of old transactions this often, in ms (0: never) [default: 300000].
    #[arg(long, value_name = "MS")]
    txn_gc_interval_ms: Option<u64>,
    /// Collect the records of transactions older than this, in ms [default: 600000].
    #[arg(long, value_name = "MS")]
    txn_gc_age_ms: Option<u64>,
    /// Timeout of one attempt of a request to a node, in ms; a request retries within its
    /// deadline [default: 2000].
    #[arg(long, value_name = "MS")]
    rpc_timeout_ms: Option<u64>,
    /// The cluster CA's certificate (PEM): clients must present certificates it signed,
    /// and nodes' certificates are checked against it. With --cert and --key.
    #[arg(long, value_name = "PATH", requires_all = ["cert", "key"])]
    ca: Option<PathBuf>,
    /// This router's certificate (PEM, role router, signed by the CA).
    #[arg(long, value_name = "PATH", requires_all = ["ca", "key"])]
    cert: Option<PathBuf>,
    /// This router's private key (PEM).
    #[arg(long, value_name = "PATH", requires_all = ["ca", "cert"])]
    key: Option<PathBuf>,
    /// Refuse clients without a certificate of the CA at the TLS handshake (by default they
    /// may connect, and every call but a login must carry a token from a password login).
    #[arg(long, requires = "ca")]
    require_client_cert: bool,
    /// Serve and dial without TLS: anyone who can reach the router reads and writes every
    /// key. For tests and local experiments only.
    #[arg(long, conflicts_with_all = ["ca", "cert", "key"])]
    insecure: bool,
    /// The cluster's gossip key file (gossip.key beside the CA, see `kvctl cert create-ca`):
    /// every gossip datagram is authenticated with it. Required with --ca.
    #[arg(long, value_name = "PATH")]
    gossip_key: Option<PathBuf>,
    /// Serve Prometheus metrics at http://IP:PORT/metrics (plain HTTP; port 0 picks a free
    /// one, shown by `kvctl endpoint status`). Off by default.
    #[arg(long, value_name = "IP:PORT")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Once bound, write the listening address to this file (atomically).
    #[arg(long, value_name = "PATH")]
    addr_file: Option<PathBuf>,
    /// Log line format (the level comes from RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// NEGATIVE CONTROL ONLY: commit repeatable-read transactions without the
    /// write-conflict check (lost updates).
    #[arg(long, hide = true)]
    unsafe_skip_write_conflict: bool,
    /// NEGATIVE CONTROL ONLY: commit serializable transactions without validating their
    /// reads (write skew).
    #[arg(long, hide = true)]
    unsafe_skip_read_validation: bool,
    /// NEGATIVE CONTROL ONLY: roll back every lock met at once, without asking the
    /// transaction record on its primary's shard (committed transactions lose writes).
    #[arg(long, hide = true)]
    unsafe_resolve_without_primary: bool,
    /// TESTS ONLY: exit at once when a transaction's commit reaches this point
    /// (txn-exit-after-prewrite, txn-exit-after-primary-commit).
    #[arg(long, hide = true, value_name = "NAME")]
    unsafe_failpoint: Option<Failpoint>,
    /// NEGATIVE CONTROL ONLY: take this many timestamps from the oracle at a time and hand
    /// them out from the router's own range (real-time order breaks across routers).
    #[arg(long, hide = true, value_name = "N")]
    unsafe_tso_prefetch: Option<u32>,
    /// NEGATIVE CONTROL ONLY: give every attempt of a shard write a fresh request id (a
    /// retry after an attempt that applied unanswered applies again).
    #[arg(long, hide = true)]
    unsafe_fresh_request_id_per_attempt: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ringkv-router: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ringkv-router: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = match &cli.config {
        Some(path) => RouterConfig::load(path)?,
        None => RouterConfig::default(),
    };
    if let Some(listen) = cli.listen {
        config.listen_addr = listen;
    }
    if !cli.nodes.is_empty() {
        config.seed_nodes = cli.nodes.iter().map(|a| a.trim().to_string()).collect();
    }
    if let Some(ms) = cli.txn_gc_interval_ms {
        config.txn_gc_interval_ms = ms;
    }
    if let Some(ms) = cli.txn_gc_age_ms {
        config.txn_gc_age_ms = ms;
    }
    if let Some(ms) = cli.rpc_timeout_ms {
        config.rpc_timeout_ms = ms;
    }
    config.unsafe_skip_write_conflict |= cli.unsafe_skip_write_conflict;
    config.unsafe_skip_read_validation |= cli.unsafe_skip_read_validation;
    config.unsafe_resolve_without_primary |= cli.unsafe_resolve_without_primary;
    config.unsafe_fresh_request_id_per_attempt |= cli.unsafe_fresh_request_id_per_attempt;
    config.unsafe_failpoint = cli.unsafe_failpoint.or(config.unsafe_failpoint);
    if let Some(count) = cli.unsafe_tso_prefetch {
        config.unsafe_tso_prefetch = count;
    }
    if let (Some(ca), Some(cert), Some(key)) = (&cli.ca, &cli.cert, &cli.key) {
        config.tls = Some(TlsPaths {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        });
        config.insecure = false;
    }
    if cli.require_client_cert {
        config.require_client_cert = true;
    }
    if cli.insecure {
        config.insecure = true;
        config.tls = None;
    }
    if let Some(addr) = cli.metrics_addr {
        config.metrics_addr = Some(addr);
    }
    if let Some(path) = &cli.gossip_key {
        config.gossip_key = Some(path.clone());
    }
    config.validate().context("bad configuration (see --help)")?;
    if let Some(path) = &config.gossip_key {
        // Checked here because the router serves on without gossip if gossip fails to start.
        ringkv_gossip::GossipKeys::load(path).context("bad --gossip-key")?;
    }

    let router = Router::start(config).await?;
    if let Some(path) = &cli.addr_file {
        write_atomically(path, &router.local_addr().to_string()).await?;
        tracing::info!(path = %path.display(), addr = %router.local_addr(), "wrote address file");
    }
    router.run_until(shutdown_signal()).await?;
    Ok(())
}

/// Writes `contents` to a temporary file beside `path`, then renames it over `path`.
async fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    tokio::fs::write(&tmp, contents)
        .await
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    tokio::fs::rename(&tmp, path)
        .await
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("received SIGINT, shutting down"),
        () = terminate => tracing::info!("received SIGTERM, shutting down"),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // Every WARN and ERROR call site at most once per 10 s, the router's own included:
    // one line per failed request would flood the log while a node is down.
    let (scope, interval) = (Scope::Everything, DEFAULT_REPEAT_INTERVAL);
    match format {
        LogFormat::Text => {
            let inner = tracing_subscriber::fmt::format().with_ansi(ansi);
            builder
                .event_format(RateLimited::new(inner, false, scope, interval))
                .init();
        }
        LogFormat::Json => builder
            .event_format(RateLimited::new(JsonLines, true, scope, interval))
            .init(),
    }
}
