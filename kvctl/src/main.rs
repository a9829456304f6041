//! `kvctl`: the ringkv command-line tool.
//!
//! Each command module parses its arguments, calls the client library and renders its own
//! results: the key-value commands in every `-o` format (`output::Records`), `endpoint` in
//! all but raw, the others as a table or JSON (a line format there is a usage error).
//!
//! - `kv` — `get`, `put`, `del`, `cas` against the routers.
//! - `ttl` — keys that expire: `expire`, `persist`, `ttl`, and the `--ttl` of `put` and
//!   `cas`.
//! - `batch` — `mget`, and `mput` (bulk load in concurrent batches); `load` parses its
//!   JSON-lines and CSV input.
//! - `range` — `scan` (a page, or `--all` streamed), `count`, `delrange`.
//! - `watch` — `watch KEY [END] | --prefix P [--from-revision R]`: changes as they commit.
//! - `lease` — `lease grant|keep-alive|revoke|ttl|list` and `put --lease`'s id flag;
//!   `lock` — `lock NAME [-- COMMAND]` and `elect NAME PROPOSAL | --listen NAME`, with
//!   fencing tokens, on a lease of their own (unix only).
//! - `cluster` — `cluster init` (talks to the nodes), `cluster status` and `cluster plan`
//!   (a router).
//! - `endpoint` — `endpoint status` and `endpoint health`: each node's and router's own
//!   status (with the keys each node holds), and a health ping (etcdctl's).
//! - `membership` — `node add`, `node decommission`, `cluster plan`, `rebalance status`.
//! - `backup` — `backup` and `restore`: every key as of one timestamp, with its expiry, to
//!   and from a directory.
//! - `cert` — `cert create-ca | create-node | create-router | create-client | show`: the
//!   cluster CA and role certificates (`ringkv-tls`), as PEM files.
//! - `playground` — a complete local cluster of real processes (unix only).
//! - `auth` — `role`, `user`, `auth`: the permission table, passwords and tokens;
//!   `credentials` — the profile kvctl reads its defaults from, and password prompts.
//! - `output` — what the renderings share: the output format, bytes as cells and JSON
//!   fields, aligned tables, writing to stdout; `value` — keys and values from arguments, files and
//!   stdin; `progress` — progress bars on stderr; `exit` — exit codes and the error →
//!   exit code mapping.

mod auth;
mod backup;
mod batch;
mod cert;
mod check;
mod cluster;
mod credentials;
mod endpoint;
mod exit;
mod kv;
mod lease;
mod load;
#[cfg(unix)]
mod lock;
mod membership;
mod output;
#[cfg(unix)]
mod playground;
mod progress;
mod range;
mod timestamp;
mod ttl;
mod txn;
mod txn_gc;
mod value;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ringkv_client::{Client, ClientAuth, ClientConfig, ClientTls, DEFAULT_CONNECT_TIMEOUT};
use tracing_subscriber::EnvFilter;

use crate::exit::{exit_code, Outcome, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::output::Format;

/// The walkthrough at the end of `kvctl --help`.
const EXAMPLES: &str = "Examples:
  kvctl put user/1 ada                    store a value
  kvctl get user/1                        read it back
  kvctl put session/7 tok --ttl 30s       a value that expires (kvctl ttl / expire / persist)
  kvctl mget user/1 user/2                read several keys
  kvctl mput users.jsonl                  bulk load {\"key\": ..., \"value\": ...} lines (or .csv)
  kvctl scan --prefix user/ --limit 10    one page; repeat with the printed --page-token
  kvctl scan user/ user0 --all -o json    stream a whole range as one JSON document
  kvctl count --prefix user/              count keys (progress on stderr)
  kvctl delrange --prefix user/           delete a range (--all --yes: every key)
  kvctl watch user/ user0 -o jsonl        each change of a range as it commits";

/// The playground router's address, the default endpoint.
const DEFAULT_ENDPOINT: &str = "127.0.0.1:7000";
/// Default deadline of `cluster init`, which creates every shard group.
const INIT_DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// kvctl — read, write and operate a ringkv cluster.
///
/// Exit codes: 0 ok; 1 not found (get, mget), check FAIL, or another error; 2 CAS mismatch; 3
/// unavailable, deadline exceeded or overloaded (retry later); 4 outcome unknown (the
/// write may have been applied, or partly for mput, del and delrange); 64 usage error
/// (bad flags or arguments); 65 bad data (the cluster refused a key, value or range as
/// invalid).
#[derive(Parser, Debug)]
#[command(name = "kvctl", version, propagate_version = true, after_help = EXAMPLES)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options of every command.
#[derive(Args, Debug)]
struct GlobalArgs {
    /// Router endpoints (host:port, http://host:port or https://host:port), comma-separated.
    #[arg(
        short = 'e',
        long,
        env = "RINGKV_ENDPOINTS",
        value_delimiter = ',',
        default_value = DEFAULT_ENDPOINT,
        global = true
    )]
    endpoints: Vec<String>,
    /// Output format: data on stdout, anything else (footers, progress, warnings) on
    /// stderr. jsonl, tsv and raw are for the commands that print keys and values (get,
    /// mget, put, del, cas, scan, count, delrange, ttl, expire, persist, lease, watch,
    /// check perf) and endpoint (not raw); the others print table or json, and refuse
    /// the rest with exit 64.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    /// Request timeout in milliseconds, retries included [default: 5000; 30000 for
    /// `cluster init`]. `scan --all` and `count` wait up to the larger of this and 30 s
    /// for each chunk, and as long as chunks come.
    #[arg(long, value_name = "MS", global = true, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    timeout: Option<u64>,
    /// The cluster CA's certificate (PEM): connect over TLS (https), checking the servers
    /// against it. With --cert and --key (`kvctl cert` makes them), or alone with --user
    /// (password) or --token: a router then needs no client certificate.
    // Ids of their own: a global argument shares its id with every subcommand's, and
    // `get` and `put` have a positional `key`.
    #[arg(
        long = "ca",
        id = "tls_ca",
        value_name = "PATH",
        env = "RINGKV_CA",
        global = true
    )]
    ca: Option<PathBuf>,
    /// The client certificate (PEM) presented to routers and nodes.
    #[arg(
        long = "cert",
        id = "tls_cert",
        value_name = "PATH",
        env = "RINGKV_CERT",
        global = true,
        requires_all = ["tls_ca", "tls_key"]
    )]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long = "key",
        id = "tls_key",
        value_name = "PATH",
        env = "RINGKV_KEY",
        global = true,
        requires_all = ["tls_ca", "tls_cert"]
    )]
    key: Option<PathBuf>,
    /// Act as this user, logging in with its password for a short-lived token (overrides
    /// the certificate's user; TLS is still needed). Without --password, asked at the
    /// terminal.
    #[arg(
        long = "user",
        id = "auth_user",
        value_name = "NAME",
        env = "RINGKV_USER",
        global = true
    )]
    user: Option<String>,
    /// The password of --user (prefer the prompt or RINGKV_PASSWORD: a flag shows in `ps`);
    /// ignored without --user.
    #[arg(
        long = "password",
        id = "auth_password",
        value_name = "PASSWORD",
        env = "RINGKV_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    password: Option<String>,
    /// Act as the user of this token (`kvctl auth token` prints one); overrides --user.
    #[arg(
        long = "token",
        id = "auth_token",
        value_name = "TOKEN",
        env = "RINGKV_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read a key (exit 1 when it does not exist).
    Get(kv::GetArgs),
    /// Store a value from an argument, a file or stdin.
    Put(kv::PutArgs),
    /// Delete a key.
    #[command(alias = "delete")]
    Del(kv::DelArgs),
    /// Compare-and-swap: write only if the key has the expected version (exit 2 if not).
    Cas(kv::CasArgs),
    /// Make a key expire after a time to live, keeping its value (exit 1 when missing).
    Expire(ttl::ExpireArgs),
    /// Make a key never expire, keeping its value (exit 1 when missing or not expiring).
    Persist(ttl::KeyArgs),
    /// Show what a key has left to live (exit 1 when it does not exist).
    Ttl(ttl::KeyArgs),
    /// Read many keys at once (exit 1 when any does not exist).
    Mget(batch::MgetArgs),
    /// Load keys from a JSON-lines or CSV file (or stdin) in concurrent batches.
    Mput(batch::MputArgs),
    /// List the keys of a range in order: one page, or the whole range with --all.
    Scan(range::ScanArgs),
    /// Count the keys of a range.
    Count(range::CountArgs),
    /// Delete the keys of a range (START END or --prefix), or every key (--all --yes).
    #[command(alias = "delete-range")]
    Delrange(range::DelrangeArgs),
    /// Cluster bootstrap, status, and plans of ring changes.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Each node's and router's own status, or a health ping of each (exit 1 if any is not
    /// serving); --cluster asks every ring member.
    #[command(subcommand)]
    Endpoint(endpoint::EndpointCommand),
    /// Add a node to the ring or decommission one.
    #[command(subcommand)]
    Node(membership::NodeCommand),
    /// Progress of replica moves toward the current ring's placement.
    #[command(subcommand)]
    Rebalance(membership::RebalanceCommand),
    /// Move a shard's leadership.
    #[command(subcommand)]
    Leader(membership::LeaderCommand),
    /// Take timestamps of the cluster's timestamp oracle (what transactions are ordered by).
    #[command(alias = "tso")]
    Timestamp(timestamp::TimestampArgs),
    /// Print the changes of a key, a range (KEY END) or a prefix as they commit, from now or
    /// from a revision (`--from-revision`); one event per line in every format.
    Watch(watch::WatchArgs),
    /// Leases: grant, keep-alive, revoke, ttl, list (keys attached with `put --lease`
    /// vanish with their lease).
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Acquire a lock (waiting while another holds it), print its fencing token, and hold
    /// it until interrupted, or run a command after `--` with the token in
    /// RINGKV_LOCK_TOKEN and release.
    #[cfg(unix)]
    Lock(lock::LockArgs),
    /// Campaign to lead an election and hold the leadership until interrupted, or
    /// (`--listen`) print each leader as it changes.
    #[cfg(unix)]
    Elect(lock::ElectArgs),
    /// Run a script of gets, puts and deletes as one transaction (stdin or a file).
    Txn(txn::TxnArgs),
    /// Collect the records of old transactions now (routers also do it periodically).
    #[command(name = "txn-gc")]
    TxnGc(txn_gc::TxnGcArgs),
    /// Copy every key as of one timestamp into a directory (online, paced, consistent
    /// across shards; needs admin for the nodes to keep history while it runs).
    Backup(backup::BackupArgs),
    /// Load a directory written by `kvctl backup` into an empty cluster.
    Restore(backup::RestoreArgs),
    /// Roles: grants of read, write or admin on key prefixes (needs admin).
    #[command(subcommand)]
    Role(auth::RoleCommand),
    /// Users (as client certificates name them) and their roles (needs admin).
    #[command(subcommand)]
    User(auth::UserCommand),
    /// Turn permissions on (`enable`) or see whether they are (`status`).
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Check the cluster: `check perf` puts at a fixed rate and says PASS or FAIL.
    #[command(subcommand)]
    Check(check::CheckCommand),
    /// Create the cluster CA and certificates for nodes, routers and clients; show one.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Start a local cluster of real processes (nodes + router) and keep it running.
    #[cfg(unix)]
    Playground(playground::PlaygroundArgs),
}

fn main() -> ExitCode {
    // Before parsing: the profile provides defaults for the flags' variables.
    if let Err(err) = credentials::load_profile() {
        eprintln!("error: {err:#}");
        return ExitCode::from(EXIT_USAGE);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    init_tracing();
    let plain = cli.global.ca.is_none();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => {
            eprintln!("error: {err:#}");
            if plain && is_transport(&err) {
                eprintln!("{TLS_HINT}");
            }
            exit_code(&err)
        }
    };
    ExitCode::from(code)
}

/// Printed after a broken connection when kvctl spoke plain HTTP/2: a secure cluster (the
/// playground's default) closes such connections without a gRPC answer.
const TLS_HINT: &str = "hint: kvctl connected without TLS; if the cluster uses TLS (kvctl playground \
does by default), give --ca, --cert and --key or set RINGKV_CA, RINGKV_CERT and RINGKV_KEY \
(the playground prints the line to export)";

/// Whether `err` is a broken or refused connection (not an answer from a server).
fn is_transport(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ringkv_client::Error>(),
            Some(ringkv_client::Error::Transport(_))
        )
    })
}

/// Logs go to stderr, `warn` unless `RUST_LOG` says otherwise; colours only on a terminal.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// A client configuration with `timeout_ms` (or `default`) as the request timeout, over
/// `tls` when given, as the user of `auth` when given.
fn client_config(
    timeout_ms: Option<u64>,
    default: Duration,
    tls: Option<&ClientTls>,
    auth: Option<&ClientAuth>,
) -> anyhow::Result<ClientConfig> {
    let request_timeout = timeout_ms.map_or(default, Duration::from_millis);
    let builder = ClientConfig::builder()
        .request_timeout(request_timeout)
        .stream_idle_timeout(request_timeout.max(ringkv_client::DEFAULT_STREAM_IDLE_TIMEOUT))
        .connect_timeout(request_timeout.min(DEFAULT_CONNECT_TIMEOUT));
    let builder = match auth {
        Some(auth) => builder.auth(auth.clone()),
        None => builder,
    };
    Ok(match tls {
        Some(tls) => builder.tls(tls.clone()).build()?,
        None => builder.build()?,
    })
}

/// The credentials of `--token`, or `--user` and `--password` (asked at the terminal when
/// missing and stdin is one).
fn client_auth(
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
) -> anyhow::Result<Option<ClientAuth>> {
    if let Some(token) = token {
        return Ok(Some(ClientAuth::Token(token)));
    }
    let Some(user) = user else {
        return Ok(None);
    };
    let password = match password {
        Some(password) => password,
        None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            credentials::read_password(&format!("password for {user}: "))?
        }
        None => {
            return Err(exit::UsageError(format!(
                "--user {user} needs a password: --password, RINGKV_PASSWORD, or run at a terminal"
            ))
            .into())
        }
    };
    Ok(Some(ClientAuth::Password { user, password }))
}

/// The TLS settings of `--ca`, `--cert` and `--key` (clap requires the CA with a
/// certificate and a key, which come together; the CA alone: no client certificate); an
/// unreadable file is a usage error.
fn client_tls(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> anyhow::Result<Option<ClientTls>> {
    let read = match (ca, cert, key) {
        (Some(ca), Some(cert), Some(key)) => ClientTls::from_files(&ca, &cert, &key),
        (Some(ca), None, None) => ClientTls::from_ca_file(&ca),
        _ => return Ok(None),
    };
    read.map(Some)
        .map_err(|err| exit::UsageError(format!("--ca/--cert/--key: {err}")).into())
}

async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let GlobalArgs {
        endpoints,
        output,
        timeout,
        ca,
        cert,
        key,
        user,
        password,
        token,
    } = cli.global;
    // `kvctl cert` and `kvctl playground` make or start things; they read no certificates.
    let tls = match &cli.command {
        Command::Cert(_) => None,
        #[cfg(unix)]
        Command::Playground(_) => None,
        _ => client_tls(ca, cert, key)?,
    };
    // `cert create-client --user NAME` names the certificate's user with the same flag.
    let cert_user = user.clone();
    let auth = match &cli.command {
        Command::Cert(_) => None,
        #[cfg(unix)]
        Command::Playground(_) => None,
        _ => client_auth(user, password, token)?,
    };
    if auth.is_some() && tls.is_none() {
        return Err(exit::UsageError(
            "--user/--password/--token need TLS: give --ca (a router needs no client certificate \
             then; add --cert and --key for nodes, any client certificate of the cluster's CA: the \
             token decides the user)"
                .to_string(),
        )
        .into());
    }
    if auth.is_none() && tls.as_ref().is_some_and(|tls| !tls.has_certificate()) {
        return Err(exit::UsageError(
            "--ca without --cert/--key presents no client certificate: give --user (and a \
             password) or --token, or a client certificate with --cert and --key"
                .to_string(),
        )
        .into());
    }
    let router_config = client_config(
        timeout,
        ringkv_client::DEFAULT_REQUEST_TIMEOUT,
        tls.as_ref(),
        auth.as_ref(),
    )?;
    // The commands that print keys and values take every format; the others a document.
    let format = output;
    let output = match &cli.command {
        Command::Get(_)
        | Command::Put(_)
        | Command::Del(_)
        | Command::Cas(_)
        | Command::Expire(_)
        | Command::Persist(_)
        | Command::Ttl(_)
        | Command::Mget(_)
        | Command::Scan(_)
        | Command::Count(_)
        | Command::Delrange(_)
        | Command::Watch(_)
        | Command::Lease(_)
        | Command::Endpoint(_)
        | Command::Check(_) => output::OutputFormat::Table,
        #[cfg(unix)]
        Command::Lock(_) | Command::Elect(_) => output::OutputFormat::Table,
        _ => format.document(command_name(&cli.command))?,
    };
    match cli.command {
        Command::Get(args) => kv::get(&connect(endpoints, router_config).await?, args, format).await,
        Command::Put(args) => kv::put(&connect(endpoints, router_config).await?, args, format).await,
        Command::Del(args) => kv::del(&connect(endpoints, router_config).await?, args, format).await,
        Command::Cas(args) => kv::cas(&connect(endpoints, router_config).await?, args, format).await,
        Command::Expire(args) => ttl::expire(&connect(endpoints, router_config).await?, args, format).await,
        Command::Persist(args) => ttl::persist(&connect(endpoints, router_config).await?, args, format).await,
        Command::Ttl(args) => ttl::ttl(&connect(endpoints, router_config).await?, args, format).await,
        Command::Mget(args) => batch::mget(&connect(endpoints, router_config).await?, args, format).await,
        Command::Mput(args) => batch::mput(&connect(endpoints, router_config).await?, args, output).await,
        Command::Scan(args) => range::scan(&connect(endpoints, router_config).await?, args, format).await,
        Command::Count(args) => range::count(&connect(endpoints, router_config).await?, args, format).await,
        Command::Delrange(args) => {
            range::delrange(&connect(endpoints, router_config).await?, args, format).await
        }
        Command::Endpoint(command) => endpoint::run(command, endpoints, router_config, format).await,
        Command::Cluster(command) => {
            let node_config = client_config(timeout, INIT_DEFAULT_TIMEOUT, tls.as_ref(), None)?;
            cluster::run(command, endpoints, router_config, node_config, output).await
        }
        Command::Node(command) => {
            membership::node(&connect(endpoints, router_config).await?, command, output).await
        }
        Command::Rebalance(command) => {
            membership::rebalance(&connect(endpoints, router_config).await?, command, output).await
        }
        Command::Leader(command) => {
            membership::leader(&connect(endpoints, router_config).await?, command, output).await
        }
        Command::Txn(args) => txn::run(&connect(endpoints, router_config).await?, args, output).await,
        Command::TxnGc(args) => txn_gc::run(&connect(endpoints, router_config).await?, args, output).await,
        Command::Backup(args) => {
            backup::backup(&connect(endpoints, router_config).await?, args, output).await
        }
        Command::Restore(args) => {
            backup::restore(&connect(endpoints, router_config).await?, args, output).await
        }
        Command::Timestamp(args) => {
            timestamp::run(&connect(endpoints, router_config).await?, args, output).await
        }
        Command::Watch(args) => watch::run(&connect(endpoints, router_config).await?, args, format).await,
        Command::Lease(command) => {
            lease::run(&connect(endpoints, router_config).await?, command, format).await
        }
        #[cfg(unix)]
        Command::Lock(args) => lock::lock(&connect(endpoints, router_config).await?, args, format).await,
        #[cfg(unix)]
        Command::Elect(args) => lock::elect(&connect(endpoints, router_config).await?, args, format).await,
        Command::Role(command) => {
            auth::role(&connect(endpoints, router_config).await?, command, output).await
        }
        Command::User(command) => {
            let login = match &auth {
                Some(ClientAuth::Password { user, password }) => Some((user.as_str(), password.as_str())),
                _ => None,
            };
            auth::user(&connect(endpoints, router_config).await?, command, login, output).await
        }
        Command::Auth(command) => {
            auth::auth(&connect(endpoints, router_config).await?, command, output).await
        }
        Command::Check(command) => {
            check::run(&connect(endpoints, router_config).await?, command, format).await
        }
        Command::Cert(command) => cert::run(command, cert_user, output),
        #[cfg(unix)]
        Command::Playground(args) => playground::run(args).await,
    }
}

/// The command's name in messages (`-o tsv` is not for `cluster`).
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Mput(_) => "mput",
        Command::Cluster(_) => "cluster",
        Command::Node(_) => "node",
        Command::Rebalance(_) => "rebalance",
        Command::Leader(_) => "leader",
        Command::Timestamp(_) => "timestamp",
        Command::Txn(_) => "txn",
        Command::TxnGc(_) => "txn-gc",
        Command::Backup(_) => "backup",
        Command::Restore(_) => "restore",
        Command::Role(_) => "role",
        Command::User(_) => "user",
        Command::Auth(_) => "auth",
        Command::Cert(_) => "cert",
        _ => "this command",
    }
}

/// Connects to the routers; a malformed endpoint is a usage error.
async fn connect(endpoints: Vec<String>, config: ClientConfig) -> anyhow::Result<Client> {
    Client::connect_with(endpoints, config)
        .await
        .map_err(|err| exit::UsageError(format!("--endpoints: {err}")).into())
}
