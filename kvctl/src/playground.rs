//! `kvctl playground`: a complete local cluster of real processes in one command.
//!
//! Node `i` (1-based) runs as
//! `ringkv-node --node-id i --listen 127.0.0.1:<port+i> --data-dir <dir>/node-i <TLS>`, the
//! router as `ringkv-router --listen 127.0.0.1:<port> --nodes <node addrs> <TLS>`; each
//! appends its stdout and stderr to a log file in `<dir>`. `--port 0` picks a block of free
//! ports at the first start and keeps it in `<dir>/port` (tests and CI run playgrounds side
//! by side that way), holding the ports bound until each process is about to bind its own. Secure by default: the first run
//! makes a CA and node, router and client (`root`) certificates in `<dir>/certs`
//! (`ringkv-launcher`'s `ClusterCerts`), every process speaks mutual TLS with them (`<TLS>`
//! is `--ca … --cert … --key …`), and the summary says how kvctl picks them up
//! (`RINGKV_CA`, `RINGKV_CERT`, `RINGKV_KEY`); `--insecure` runs without TLS. Startup waits on conditions,
//! each bounded by `--startup-timeout`: every node answers `NodeStatus`, then the
//! (idempotent) cluster init, then the router reports a leader for every shard; with TLS,
//! permissions are then enabled (the client certificate is root's), and root gets a
//! generated password (while the shards elect, so startup takes no longer), printed once in
//! the summary and stored nowhere but as the cluster's hash. The playground writes
//! `<dir>/profile` (the router's address and the TLS files), which kvctl reads when run from
//! the directory holding the default `./playground-data` (or with `RINGKV_PROFILE`), so
//! `kvctl put hello world` just works. The data dir is kept, so running the playground again
//! resumes the same cluster.
//!
//! Children never outlive the playground: they run in their own process group (so
//! Ctrl-C reaches only kvctl, which stops them in order: SIGTERM, a grace period, then
//! SIGKILL), are killed when startup fails or the handles drop, and on Linux get SIGTERM
//! from the kernel if kvctl itself dies (`PR_SET_PDEATHSIG`; kvctl runs a
//! current-thread runtime, so the spawning thread is the main thread).
//!
//! A node (or the router) that exits is reported, not restarted at once (so `kill -9`
//! shows the cluster surviving). `kvctl playground restart-node N` — or `kvctl playground`
//! run again with the same `--dir` while the first one runs — brings it back: the running
//! playground writes its pid to `<dir>/playground.pid`, and on SIGUSR1 starts again every
//! child that exited, with the same command line; the asking kvctl waits until the node
//! listens.
//!
//! Locating the binaries, spawning, exit checks and init are `ringkv-launcher`'s (shared
//! with the end-to-end tests and the fault-injection harness); the plan, the progress
//! display and the supervision until Ctrl-C are the playground's.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::Args;
use futures::stream::{FuturesUnordered, StreamExt};
use ringkv_client::proto;
use ringkv_client::{admin, Client, ClientConfig};
use ringkv_launcher::binaries::{
    env_bin_dir, executable_dir, find_binary, is_release_build, Binaries, BIN_DIR_ENV, NODE_BIN, ROUTER_BIN,
};
use ringkv_launcher::{cluster as launch, ClusterCerts, Launch, LaunchError, Process, Security};
use ringkv_tls::Role;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

use crate::exit::{Outcome, UsageError};

/// Most nodes a playground starts.
pub const MAX_NODES: u16 = 64;
/// How long children get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Pause between two checks of a startup condition.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Deadline of one probe (NodeStatus, ClusterStatus) during startup.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Arguments of `kvctl playground`.
#[derive(Args, Debug, Clone)]
pub struct PlaygroundArgs {
    /// Directory for the nodes' data and the logs; kept across runs (a restart resumes
    /// the same cluster).
    #[arg(long, default_value = "./playground-data")]
    pub dir: PathBuf,
    /// Number of storage nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_NODES)))]
    pub nodes: u16,
    /// Number of shards (a power of two).
    #[arg(long, default_value_t = 16)]
    pub shards: u32,
    /// Replicas per shard [default: 3, or the node count when smaller].
    #[arg(long)]
    pub replication_factor: Option<u32>,
    /// Router port; node i listens on port+i. 0: a block of free ports chosen at the first
    /// start and kept in DIR/port (later runs and restart-node use it again); the summary
    /// and DIR/profile name the router's address.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Seconds to wait for each startup step (nodes up, shard leaders elected).
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub startup_timeout: u64,
    /// Run without TLS: anyone who can reach the ports owns the cluster. By default the
    /// playground makes a CA and certificates in DIR/certs (DIR: --dir) and speaks mutual TLS.
    #[arg(long)]
    pub insecure: bool,
    #[command(subcommand)]
    pub action: Option<PlaygroundAction>,
}

/// What to ask of a running playground.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum PlaygroundAction {
    /// Start node N again after it exited or was killed (the playground of --dir and
    /// --port must be running); waits until it listens.
    RestartNode {
        /// The node's id (1-based).
        node_id: u16,
    },
}

/// The file under the playground's directory that holds the running playground's pid.
const PID_FILE: &str = "playground.pid";

/// The router's port unless `--port` says otherwise.
const DEFAULT_PORT: u16 = 7000;
/// The file under the playground's directory that keeps the ports chosen for `--port 0`.
const PORT_FILE: &str = "port";
/// Blocks of ports tried for `--port 0` before giving up.
const MAX_PORT_BLOCK_TRIES: usize = 50;

/// The certificates directory under the playground's directory.
const CERTS_DIR: &str = "certs";

/// One storage node of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// 1-based node id.
    pub node_id: u64,
    /// `127.0.0.1:<port+i>`.
    pub addr: String,
    /// `<dir>/node-<i>`.
    pub data_dir: PathBuf,
    /// `<dir>/node-<i>.log`.
    pub log: PathBuf,
}

/// Everything the playground will start, computed from the arguments without IO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The data and log directory.
    pub dir: PathBuf,
    /// The nodes, in id order.
    pub nodes: Vec<NodeSpec>,
    /// `127.0.0.1:<port>`.
    pub router_addr: String,
    /// `<dir>/router.log`.
    pub router_log: PathBuf,
    /// Shards of the cluster.
    pub shards: u32,
    /// Replicas per shard.
    pub replication_factor: u32,
    /// Bound of each startup step.
    pub startup_timeout: Duration,
    /// Mutual TLS with the certificates in `<dir>/certs` (made at the first start), or not.
    pub security: Security,
}

impl Plan {
    /// Validates the arguments and lays out ports, directories and logs under `dir`.
    pub fn new(args: &PlaygroundArgs, dir: &Path) -> Result<Plan, UsageError> {
        if args.nodes == 0 || args.nodes > MAX_NODES {
            return Err(UsageError(format!("--nodes must be in 1..={MAX_NODES}")));
        }
        let node_count = u32::from(args.nodes);
        let replication_factor = args.replication_factor.unwrap_or(node_count.min(3));
        admin::validate_init_params(usize::from(args.nodes), args.shards, replication_factor)
            .map_err(|err| UsageError(err.to_string()))?;
        if args.port == 0 || u32::from(args.port) + node_count > u32::from(u16::MAX) {
            return Err(UsageError(format!(
                "--port {} leaves no room for {} node ports above it",
                args.port, args.nodes
            )));
        }
        let nodes = (1..=args.nodes)
            .map(|index| NodeSpec {
                node_id: u64::from(index),
                addr: format!("127.0.0.1:{}", args.port + index),
                data_dir: dir.join(format!("node-{index}")),
                log: dir.join(format!("node-{index}.log")),
            })
            .collect();
        Ok(Plan {
            dir: dir.to_path_buf(),
            nodes,
            router_addr: format!("127.0.0.1:{}", args.port),
            router_log: dir.join("router.log"),
            shards: args.shards,
            replication_factor,
            startup_timeout: Duration::from_secs(args.startup_timeout),
            security: if args.insecure {
                Security::Insecure
            } else {
                Security::Tls(ClusterCerts::in_dir(&dir.join(CERTS_DIR)))
            },
        })
    }

    /// The node addresses, comma-separated, as the router takes them.
    pub fn node_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.addr.clone()).collect()
    }

    /// Command-line arguments of one node (see the node CLI contract).
    pub fn node_args(&self, node: &NodeSpec) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--node-id".into(),
            node.node_id.to_string().into(),
            "--listen".into(),
            node.addr.clone().into(),
            "--data-dir".into(),
            node.data_dir.clone().into_os_string(),
            "--metrics-addr".into(),
            any_port(&node.addr).into(),
        ];
        args.extend(self.security.node_args());
        args
    }

    /// Command-line arguments of the router.
    pub fn router_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--listen".into(),
            self.router_addr.clone().into(),
            "--nodes".into(),
            self.node_addrs().join(",").into(),
            "--metrics-addr".into(),
            any_port(&self.router_addr).into(),
        ];
        args.extend(self.security.router_args());
        args
    }

    /// A probe's client configuration: `timeout` per request and connect, one attempt when
    /// `single_attempt`, over TLS with the client certificate when the playground is secure.
    fn probe_config(&self, timeout: Duration, single_attempt: bool) -> anyhow::Result<ClientConfig> {
        let mut builder = ClientConfig::builder()
            .request_timeout(timeout)
            .connect_timeout(timeout);
        if single_attempt {
            builder = builder.max_attempts(1);
        }
        if let Some(tls) = self.security.client_tls()? {
            builder = builder.tls(tls);
        }
        Ok(builder.build()?)
    }
}

/// `addr`'s host with port 0: a metrics endpoint on any free port of the same interface
/// (each process reports the port it took in its `NodeStatus`).
fn any_port(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((host, _port)) => format!("{host}:0"),
        None => format!("{addr}:0"),
    }
}

/// Directories searched for the binaries: next to kvctl, then `$RINGKV_BIN_DIR`.
fn candidate_dirs() -> Vec<PathBuf> {
    executable_dir().ok().into_iter().chain(env_bin_dir()).collect()
}

/// Arguments of the `cargo build` that produces the binaries for a kvctl at `exe`.
pub fn cargo_build_args(exe: Option<&Path>) -> Vec<String> {
    let mut args: Vec<String> = ["build", "--bins", "-p", "ringkv-node", "-p", "ringkv-router"]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
    if exe.is_some_and(is_release_build) {
        args.push("--release".into());
    }
    args
}

/// Finds the binaries; builds them first when kvctl runs under `cargo run` and they
/// are missing.
async fn locate_binaries() -> anyhow::Result<Binaries> {
    let dirs = candidate_dirs();
    let exe = std::env::current_exe().ok();
    if find_binary(&dirs, NODE_BIN).is_none() {
        if let Some(cargo) = std::env::var_os("CARGO") {
            let args = cargo_build_args(exe.as_deref());
            eprintln!(
                "{NODE_BIN} not found: building it with `cargo {}`",
                args.join(" ")
            );
            let mut command = tokio::process::Command::new(cargo);
            command.args(&args).stdin(Stdio::null());
            if let Some(manifest_dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
                command
                    .arg("--manifest-path")
                    .arg(PathBuf::from(manifest_dir).join("Cargo.toml"));
            }
            let status = command.status().await.context("cannot run cargo")?;
            if !status.success() {
                bail!("`cargo {}` failed ({status})", args.join(" "));
            }
        }
    }
    let node = find_binary(&dirs, NODE_BIN);
    let router = find_binary(&dirs, ROUTER_BIN);
    match (node, router) {
        (Some(node), Some(router)) => Ok(Binaries { node, router }),
        (node, _) => {
            let missing = if node.is_none() { NODE_BIN } else { ROUTER_BIN };
            let searched = dirs
                .iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let build = if exe.as_deref().is_some_and(is_release_build) {
                "cargo build --release"
            } else {
                "cargo build"
            };
            bail!(
                "cannot find {missing} (searched: {searched}); build it with `{build}` in the \
                 ringkv workspace (the same profile as kvctl), or set {BIN_DIR_ENV} to the \
                 directory holding ringkv-node and ringkv-router"
            )
        }
    }
}

/// Fails early when a port the plan needs is taken (e.g. by another playground); ports
/// this process holds for the plan (`--port 0`) are free for it.
fn check_ports_free(plan: &Plan, held: &HeldPorts) -> anyhow::Result<()> {
    let addrs = std::iter::once(&plan.router_addr).chain(plan.nodes.iter().map(|node| &node.addr));
    for addr in addrs.filter(|addr| !held.holds(addr)) {
        if let Err(err) = std::net::TcpListener::bind(addr.as_str()) {
            bail!("cannot use {addr}: {err} (is another playground running? pick other ports with --port)");
        }
    }
    Ok(())
}

/// Ctrl-C, SIGTERM and SIGHUP, registered once.
struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl ShutdownSignals {
    fn new() -> anyhow::Result<Self> {
        Ok(ShutdownSignals {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            hangup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    /// Waits for the next shutdown signal; returns its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "interrupt",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

/// One child process, and how to start it again.
struct ChildProcess {
    addr: String,
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    process: Process,
    /// Waiting for it failed: it is no longer watched.
    abandoned: bool,
}

impl ChildProcess {
    fn is_watched(&self) -> bool {
        self.process.exit_status().is_none() && !self.abandoned
    }
}

/// Owns the children: spawns them, notices exits, stops them.
#[derive(Default)]
struct Supervisor {
    children: Vec<ChildProcess>,
}

impl Supervisor {
    /// Spawns `program` with stdout and stderr appended to `log`.
    fn spawn(
        &mut self,
        name: &str,
        addr: &str,
        program: &Path,
        args: &[OsString],
        log: &Path,
    ) -> anyhow::Result<()> {
        let process = Self::launch(name, program, args, log)?;
        self.children.push(ChildProcess {
            addr: addr.to_string(),
            name: name.to_string(),
            program: program.to_path_buf(),
            args: args.to_vec(),
            log: log.to_path_buf(),
            process,
            abandoned: false,
        });
        Ok(())
    }

    /// Starts every child that exited again, with the same command line; returns their
    /// names and pids.
    fn restart_exited(&mut self) -> Vec<(String, anyhow::Result<u32>)> {
        let mut restarted = Vec::new();
        for child in &mut self.children {
            if child.is_watched() {
                continue;
            }
            let result = Self::launch(&child.name, &child.program, &child.args, &child.log).map(|process| {
                child.process = process;
                child.abandoned = false;
                child.process.pid()
            });
            restarted.push((child.name.clone(), result));
        }
        restarted
    }

    /// Spawns one child, after a line in its log saying so.
    fn launch(name: &str, program: &Path, args: &[OsString], log: &Path) -> anyhow::Result<Process> {
        let launch = Launch::new(name, program)
            .args(args)
            .log(log)
            .own_process_group()
            .die_with_parent();
        let mut log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open log {}", log.display()))?;
        let started_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        writeln!(
            log_file,
            "=== kvctl playground: starting {name} at unix time {started_at}: {} ===",
            launch.command_line()
        )
        .with_context(|| format!("cannot write log {}", log.display()))?;
        launch.spawn().map_err(|err| match err {
            LaunchError::Spawn { source, .. } => {
                anyhow::Error::new(source).context(format!("cannot start {name} ({})", program.display()))
            }
            other => other.into(),
        })
    }

    /// Fails with the end of its log when a child has exited.
    fn ensure_running(&mut self) -> anyhow::Result<()> {
        for child in &mut self.children {
            if !child.is_watched() {
                continue;
            }
            match child.process.check_running() {
                Ok(()) => {}
                Err(LaunchError::Exited {
                    name,
                    pid,
                    status,
                    log,
                    tail,
                }) => bail!(
                    "{name} (pid {pid}) exited during startup ({status}); last lines of {}:\n{tail}",
                    log.unwrap_or_default().display(),
                ),
                Err(err) => bail!("{err}"),
            }
        }
        Ok(())
    }

    /// Stops every running child: SIGTERM (router first), wait up to `grace`, then
    /// SIGKILL the stragglers.
    async fn shutdown(&mut self, grace: Duration) {
        for child in self.children.iter_mut().rev() {
            if child.is_watched() {
                let _ = child.process.signal(libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        for child in self.children.iter_mut().rev() {
            if !child.is_watched() {
                continue;
            }
            match tokio::time::timeout_at(deadline, child.process.wait()).await {
                Ok(Ok(_status)) => {}
                Ok(Err(err)) => eprintln!("{err}"),
                Err(_elapsed) => {
                    eprintln!(
                        "{} (pid {}) did not stop within {}s; killing it",
                        child.process.name(),
                        child.process.pid(),
                        grace.as_secs()
                    );
                    let _ = child.process.kill();
                }
            }
        }
    }
}

/// A one-line progress display on stderr: rewritten in place on a terminal, printed
/// only on change otherwise.
struct Progress {
    terminal: bool,
    last: String,
}

impl Progress {
    fn new() -> Self {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            last: String::new(),
        }
    }

    fn update(&mut self, text: String) {
        if text == self.last {
            return;
        }
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(stderr, "\r\x1b[K{text}");
        } else {
            let _ = writeln!(stderr, "{text}");
        }
        let _ = stderr.flush();
        self.last = text;
    }

    fn finish(&mut self) {
        if self.terminal && !self.last.is_empty() {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr);
        }
        self.last.clear();
    }
}

/// The number of shards with a known leader, when `status` is complete enough to count.
pub fn leaders_ready(status: &proto::ClusterStatusResponse, expected_shards: u32) -> (usize, usize) {
    let expected = status.ring.as_ref().map_or(expected_shards, |ring| ring.shards);
    let expected = usize::try_from(expected).unwrap_or(usize::MAX);
    let with_leader = status.shards.iter().filter(|shard| shard.leader_id != 0).count();
    (with_leader, expected)
}

/// Startup: nodes, init, router, leaders. Children spawned so far stay in `supervisor`.
/// What a started playground reports once.
struct Started {
    cluster_id: String,
    /// Root's password when this start made it (a resumed cluster keeps its own).
    root_password: Option<String>,
    /// Each process's `/metrics` URL by its gRPC address (as its `NodeStatus` reports).
    metrics: std::collections::HashMap<String, String>,
}

/// Starts the nodes, initialises the cluster and starts the router, releasing each held
/// port (`--port 0`) just before the process that listens on it starts.
async fn start(
    plan: &Plan,
    binaries: &Binaries,
    supervisor: &mut Supervisor,
    held_ports: &mut HeldPorts,
) -> anyhow::Result<Started> {
    std::fs::create_dir_all(&plan.dir).with_context(|| format!("cannot create {}", plan.dir.display()))?;
    if let Security::Tls(certs) = &plan.security {
        // The first run makes them; later runs reuse them (the cluster keeps its CA).
        if !certs.ca().exists() {
            ClusterCerts::create(certs.dir(), "playground")?;
            eprintln!("made a CA and certificates in {}", certs.dir().display());
        } else if !certs.gossip_key().exists() {
            // Made by a kvctl from before authenticated gossip.
            ringkv_gossip::GossipKeys::generate()?.write(&certs.gossip_key(), false)?;
            eprintln!("made a gossip key in {}", certs.dir().display());
        }
    }
    for node in &plan.nodes {
        std::fs::create_dir_all(&node.data_dir)
            .with_context(|| format!("cannot create {}", node.data_dir.display()))?;
        held_ports.release(&node.addr);
        supervisor.spawn(
            &format!("node {}", node.node_id),
            &node.addr,
            &binaries.node,
            &plan.node_args(node),
            &node.log,
        )?;
    }
    write_profile(plan)?;
    wait_for_nodes(plan, supervisor).await?;

    let tls = plan.security.client_tls()?;
    let init = launch::init_cluster(
        &plan.node_addrs(),
        plan.shards,
        plan.replication_factor,
        tls.as_ref(),
    )
    .await
    .context(
        "cluster init failed (a data dir made with other --nodes/--shards settings needs another --dir)",
    )?;
    if init.already_initialized {
        eprintln!("resuming cluster {}", init.cluster_id);
    } else {
        eprintln!("initialised cluster {}", init.cluster_id);
    }

    held_ports.release(&plan.router_addr);
    supervisor.spawn(
        "router",
        &plan.router_addr,
        &binaries.router,
        &plan.router_args(),
        &plan.router_log,
    )?;
    let root_password = match tls {
        Some(_) => {
            // Hashing a password is slow on purpose: done while the shards elect.
            let (leaders, password) =
                tokio::join!(wait_for_leaders(plan, supervisor), set_root_password(plan));
            leaders?;
            let password = password?;
            enable_permissions(plan).await?;
            password
        }
        None => {
            wait_for_leaders(plan, supervisor).await?;
            None
        }
    };
    Ok(Started {
        cluster_id: init.cluster_id,
        root_password,
        metrics: metrics_urls(plan).await?,
    })
}

/// Each process's `/metrics` URL, by gRPC address; a process that does not say is left out.
async fn metrics_urls(plan: &Plan) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let probe = plan.probe_config(PROBE_TIMEOUT, true)?;
    let mut urls = std::collections::HashMap::new();
    for addr in plan.node_addrs().into_iter().chain([plan.router_addr.clone()]) {
        if let Ok(status) = admin::node_status(&addr, &probe).await {
            if !status.metrics_addr.is_empty() {
                urls.insert(addr, format!("http://{}/metrics", status.metrics_addr));
            }
        }
    }
    Ok(urls)
}

/// Writes `<dir>/profile`: the router's address and, with TLS, the CA and root's client
/// certificate, so kvctl run beside the data dir needs no flags (`credentials.rs`).
fn write_profile(plan: &Plan) -> anyhow::Result<()> {
    let path = plan.dir.join(crate::credentials::PROFILE_FILE_NAME);
    let text = match &plan.security {
        Security::Tls(certs) => {
            let client = certs.paths(Role::Client);
            crate::credentials::profile_text(&plan.router_addr, &certs.ca(), &client.cert, &client.key)
        }
        Security::Insecure => format!(
            "# written by kvctl playground --insecure\nRINGKV_ENDPOINTS={}\n",
            plan.router_addr
        ),
    };
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Length of a generated root password (letters and digits: about 143 bits).
const ROOT_PASSWORD_CHARS: usize = 24;

/// Gives root a generated password unless it has one (issue 15): returned to be printed
/// once, stored nowhere but as the cluster's hash. Retried until the startup deadline, like
/// [`enable_permissions`] (the router may still be starting).
async fn set_root_password(plan: &Plan) -> anyhow::Result<Option<String>> {
    use rand::distr::{Alphanumeric, SampleString};
    let probe = plan.probe_config(PROBE_TIMEOUT * 5, true)?;
    let client = Client::connect_with(vec![plan.router_addr.clone()], probe).await?;
    let deadline = Instant::now() + plan.startup_timeout;
    let password = Alphanumeric.sample_string(&mut rand::rng(), ROOT_PASSWORD_CHARS);
    loop {
        let set = match client.get_auth().await {
            Ok(answer) if answer.table.as_ref().is_some_and(|table| table.root_has_password) => {
                return Ok(None)
            }
            Ok(_) => client
                .change_auth(ringkv_proto::v1::change_auth_request::Change::SetPassword(
                    ringkv_proto::v1::UserPassword {
                        user: "root".to_string(),
                        password: password.clone(),
                    },
                ))
                .await
                .map(|_| ()),
            Err(err) => Err(err),
        };
        match set {
            Ok(()) => return Ok(Some(password)),
            Err(err) if Instant::now() >= deadline => {
                return Err(anyhow::Error::new(err).context("setting root's password"))
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// Turns permissions on (issue 15; idempotent, so a resumed playground checks again): the
/// playground's client certificate is root's, so its commands still just work, and any
/// other user needs roles (`kvctl user add`, `kvctl role grant`). Retried until the startup
/// deadline: right after a restart the system group may still be electing its leader.
async fn enable_permissions(plan: &Plan) -> anyhow::Result<()> {
    let probe = plan.probe_config(PROBE_TIMEOUT, true)?;
    let client = Client::connect_with(vec![plan.router_addr.clone()], probe).await?;
    let deadline = Instant::now() + plan.startup_timeout;
    loop {
        let enabled = match client.get_auth().await {
            Ok(answer) if answer.table.as_ref().is_some_and(|table| table.enabled) => Ok(()),
            Ok(_) => client
                .change_auth(ringkv_proto::v1::change_auth_request::Change::Enable(true))
                .await
                .map(|_| ()),
            Err(err) => Err(err),
        };
        match enabled {
            Ok(()) => {
                eprintln!(
                    "permissions enabled: the client certificate is root's (kvctl user/role to add others)"
                );
                return Ok(());
            }
            Err(err) if Instant::now() >= deadline => {
                return Err(anyhow::Error::new(err).context("enabling permissions"))
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// Waits until every node answers NodeStatus with its expected id.
async fn wait_for_nodes(plan: &Plan, supervisor: &mut Supervisor) -> anyhow::Result<()> {
    let probe = plan.probe_config(PROBE_TIMEOUT, false)?;
    let deadline = Instant::now() + plan.startup_timeout;
    let mut up = vec![false; plan.nodes.len()];
    let mut progress = Progress::new();
    let mut last_error = String::new();
    loop {
        supervisor.ensure_running()?;
        for (node, ready) in plan.nodes.iter().zip(up.iter_mut()) {
            if *ready {
                continue;
            }
            match admin::node_status(&node.addr, &probe).await {
                Ok(status) if status.node_id == node.node_id => *ready = true,
                Ok(status) => bail!(
                    "{} answered as node {} instead of node {}: another process owns the port",
                    node.addr,
                    status.node_id,
                    node.node_id
                ),
                Err(err) => last_error = format!("{}: {err}", node.addr),
            }
        }
        let ready = up.iter().filter(|ready| **ready).count();
        progress.update(format!("waiting for nodes {ready}/{}", plan.nodes.len()));
        if ready == plan.nodes.len() {
            progress.finish();
            return Ok(());
        }
        if Instant::now() >= deadline {
            progress.finish();
            bail!(
                "nodes did not answer within {}s (last error: {last_error}); see the logs in {}",
                plan.startup_timeout.as_secs(),
                plan.dir.display()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until the router reports a leader for every shard.
async fn wait_for_leaders(plan: &Plan, supervisor: &mut Supervisor) -> anyhow::Result<()> {
    let probe = plan.probe_config(PROBE_TIMEOUT, true)?;
    let client = Client::connect_with(vec![plan.router_addr.clone()], probe).await?;
    let deadline = Instant::now() + plan.startup_timeout;
    let mut progress = Progress::new();
    let mut last_error = String::new();
    loop {
        supervisor.ensure_running()?;
        match client.cluster_status().await {
            Ok(status) => {
                let (with_leader, expected) = leaders_ready(&status, plan.shards);
                progress.update(format!("waiting for leaders {with_leader}/{expected}"));
                if expected > 0 && status.shards.len() == expected && with_leader == expected {
                    progress.finish();
                    return Ok(());
                }
            }
            Err(err) => {
                progress.update("waiting for the router".to_string());
                last_error = err.to_string();
            }
        }
        if Instant::now() >= deadline {
            progress.finish();
            bail!(
                "shard leaders were not all elected within {}s{}; see the logs in {}",
                plan.startup_timeout.as_secs(),
                if last_error.is_empty() {
                    String::new()
                } else {
                    format!(" (last error: {last_error})")
                },
                plan.dir.display()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The "it is up" text: endpoints, pids, logs and what to try.
fn summary(plan: &Plan, supervisor: &Supervisor, started: &Started, default_router: bool) -> String {
    let cluster_id = &started.cluster_id;
    let mut rows = Vec::new();
    for child in &supervisor.children {
        rows.push(vec![
            child.process.name().to_string(),
            child.addr.clone(),
            child.process.pid().to_string(),
            child.process.log().unwrap_or(Path::new("")).display().to_string(),
            started.metrics.get(&child.addr).cloned().unwrap_or_default(),
        ]);
    }
    // The router first: it is the endpoint clients use.
    rows.rotate_right(1);
    let table = crate::output::render_table(&["PROCESS", "ADDRESS", "PID", "LOG", "METRICS"], rows, &[]);
    let endpoint_flag = if default_router {
        String::new()
    } else {
        format!(" -e {}", plan.router_addr)
    };
    let node_pid = supervisor
        .children
        .first()
        .map_or_else(|| "<pid>".to_string(), |child| child.process.pid().to_string());
    let security = match &plan.security {
        Security::Insecure => {
            "INSECURE (--insecure): no TLS, anyone who can reach the ports owns it\n\n".to_string()
        }
        Security::Tls(certs) => {
            let client = certs.paths(Role::Client);
            let password = match &started.root_password {
                Some(password) => {
                    format!("root's password (shown this once; log in with --user root): {password}\n")
                }
                None => String::new(),
            };
            let profile = plan.dir.join(crate::credentials::PROFILE_FILE_NAME);
            let found_from = match (plan.dir.file_name(), plan.dir.parent()) {
                (Some(name), Some(parent)) if name == "playground-data" => {
                    format!("run from {} or ", parent.display())
                }
                _ => String::new(),
            };
            format!(
                "mutual TLS: the CA and certificates are in {}; kvctl finds them in the profile {} \
                 ({found_from}with export RINGKV_PROFILE={}), or use\n  \
                 export RINGKV_CA={} RINGKV_CERT={} RINGKV_KEY={}\n{password}\n",
                certs.dir().display(),
                profile.display(),
                profile.display(),
                certs.ca().display(),
                client.cert.display(),
                client.key.display()
            )
        }
    };
    format!(
        "\nringkv playground is up: {} nodes, {} shards, replication factor {}, cluster {cluster_id}\n\n\
         {table}\n\n\
         data dir: {}\n\
         {security}\
         try:\n  \
         kvctl{endpoint_flag} put hello world\n  \
         kvctl{endpoint_flag} get hello\n  \
         kvctl{endpoint_flag} scan --prefix h\n  \
         kvctl{endpoint_flag} cluster status\n  \
         kvctl{endpoint_flag} endpoint status --cluster    # every process: health, leaders, sizes\n  \
         kill -9 {node_pid}    # kill node 1 and watch the cluster survive\n\n\
         Ctrl-C to stop.",
        plan.nodes.len(),
        plan.shards,
        plan.replication_factor,
        plan.dir.display(),
    )
}

/// `kvctl playground`.
pub async fn run(mut args: PlaygroundArgs) -> anyhow::Result<Outcome> {
    // Validate before touching the disk (`--port 0` is chosen under the data dir, below),
    // then lay out under the absolute data dir.
    let port_to_choose = args.port == 0;
    Plan::new(
        &PlaygroundArgs {
            port: if port_to_choose { DEFAULT_PORT } else { args.port },
            ..args.clone()
        },
        &args.dir,
    )?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let dir =
        std::fs::canonicalize(&args.dir).with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    let mut held_ports = HeldPorts::default();
    if port_to_choose {
        (args.port, held_ports) = chosen_port(&dir, args.nodes)?;
    }
    let plan = Plan::new(&args, &dir)?;
    let pid_file = dir.join(PID_FILE);
    let running = running_playground(&pid_file);
    match (&args.action, running) {
        (Some(PlaygroundAction::RestartNode { node_id }), Some(pid)) => {
            return restart_node(&plan, pid, *node_id).await;
        }
        (Some(PlaygroundAction::RestartNode { .. }), None) => {
            bail!(
                "no playground is running in {} (start one with `kvctl playground --dir {}`)",
                dir.display(),
                dir.display()
            );
        }
        (None, Some(pid)) => {
            eprintln!(
                "a playground is running in {} (pid {pid}): asking it to start its exited processes",
                dir.display()
            );
            for node in &plan.nodes {
                restart_node(&plan, pid, u16::try_from(node.node_id).unwrap_or(u16::MAX)).await?;
            }
            return Ok(Outcome::Success);
        }
        (None, None) => {}
    }
    let binaries = locate_binaries().await?;
    check_ports_free(&plan, &held_ports)?;
    let mut restarts = signal(SignalKind::user_defined1()).context("cannot handle SIGUSR1")?;
    let mut signals = ShutdownSignals::new()?;
    let mut supervisor = Supervisor::default();

    let started = tokio::select! {
        result = start(&plan, &binaries, &mut supervisor, &mut held_ports) => result.map(Some),
        signal = signals.recv() => {
            eprintln!("\nreceived {signal} during startup");
            Ok(None)
        }
    };
    let started = match started {
        Ok(Some(started)) => started,
        Ok(None) => {
            eprintln!("stopping the playground");
            supervisor.shutdown(STOP_GRACE).await;
            return Ok(Outcome::Success);
        }
        Err(err) => {
            eprintln!("startup failed; stopping the processes started so far");
            supervisor.shutdown(STOP_GRACE).await;
            return Err(err);
        }
    };
    println!(
        "{}",
        summary(&plan, &supervisor, &started, args.port == DEFAULT_PORT)
    );
    if let Err(err) = std::fs::write(&pid_file, std::process::id().to_string()) {
        eprintln!(
            "warning: cannot write {}: {err} (restart-node will not find this playground)",
            pid_file.display()
        );
    }

    let signal = supervise(&mut supervisor, &mut signals, &mut restarts).await;
    eprintln!("\nreceived {signal}; stopping the playground");
    let _ = std::fs::remove_file(&pid_file);
    supervisor.shutdown(STOP_GRACE).await;
    eprintln!("stopped (data kept in {})", plan.dir.display());
    Ok(Outcome::Success)
}

/// The router's port for `--port 0`: the one chosen at the playground's first start (kept
/// in `<dir>/port`, so a resumed cluster's nodes keep the addresses the cluster knows them
/// by), else the base of `nodes + 1` consecutive ports free right now — found by binding
/// port 0 and then the ports above it — written to that file, with the block held bound
/// ([`HeldPorts`]) until each process is about to bind its port.
fn chosen_port(dir: &Path, nodes: u16) -> anyhow::Result<(u16, HeldPorts)> {
    let path = dir.join(PORT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let port = text
                .trim()
                .parse()
                .with_context(|| format!("{} does not hold a port: {text:?}", path.display()))?;
            return Ok((port, HeldPorts::default()));
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
    let (base, held) = free_port_block(nodes)?;
    std::fs::write(&path, base.to_string()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((base, held))
}

/// A base port `p` with `p..=p+nodes` free, held bound: the router's port and the nodes'.
fn free_port_block(nodes: u16) -> anyhow::Result<(u16, HeldPorts)> {
    for _ in 0..MAX_PORT_BLOCK_TRIES {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a probe port")?;
        let base = probe.local_addr()?.port();
        let Some(last) = base.checked_add(nodes) else {
            continue;
        };
        let mut held = HeldPorts::default();
        held.listeners.insert(base, probe);
        let rest_bound =
            (base + 1..=last).all(|port| match std::net::TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => {
                    held.listeners.insert(port, listener);
                    true
                }
                Err(_) => false,
            });
        if rest_bound {
            return Ok((base, held));
        }
    }
    bail!(
        "no block of {} free ports found after {MAX_PORT_BLOCK_TRIES} tries; pick one with --port",
        u32::from(nodes) + 1
    )
}

/// The ports `--port 0` chose, held bound by this process until the process that listens
/// on each is about to start ([`HeldPorts::release`]). Choosing free ports and binding
/// them later leaves a window in which another process takes one: another playground
/// choosing at the same time, or any process binding port 0 (which hands out ports of the
/// same range). Held, a port cannot be taken (another playground's probe skips it); the
/// window shrinks to the moment between the release and the child's bind.
#[derive(Debug, Default)]
struct HeldPorts {
    listeners: std::collections::BTreeMap<u16, std::net::TcpListener>,
}

impl HeldPorts {
    /// Lets go of `addr`'s port, for the process about to listen on it.
    fn release(&mut self, addr: &str) {
        let port = addr
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok());
        if let Some(port) = port {
            self.listeners.remove(&port);
        }
    }

    /// Whether this process holds `addr`'s port (free for the plan, taken for anyone else).
    fn holds(&self, addr: &str) -> bool {
        addr.rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .is_some_and(|port| self.listeners.contains_key(&port))
    }
}

/// The pid in `pid_file`, when that process is alive and is a kvctl playground (a stale
/// file after a crash may name a pid the system has since given to another process, which
/// SIGUSR1 would kill).
fn running_playground(pid_file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    // SAFETY: kill(2) with signal 0 sends nothing, it only says whether the process exists.
    let alive = pid > 0 && unsafe { libc::kill(pid, 0) } == 0;
    (alive && is_playground(pid)).then_some(pid)
}

/// Whether process `pid` runs `kvctl ... playground` (its command line, from /proc).
fn is_playground(pid: i32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        // No /proc (not Linux): trust the pid file, as before.
        return !Path::new("/proc/self").exists();
    };
    let mut args = cmdline.split(|byte| *byte == 0);
    let program = args.next().unwrap_or_default();
    program.ends_with(b"kvctl") && args.any(|arg| arg == b"playground")
}

/// Whether something accepts connections on `addr` right now.
async fn listening(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// `restart-node N`: asks the playground `pid` to start its exited children again
/// (SIGUSR1) unless node N is listening, then waits until it does.
async fn restart_node(plan: &Plan, pid: i32, node_id: u16) -> anyhow::Result<Outcome> {
    let node = plan
        .nodes
        .iter()
        .find(|node| node.node_id == u64::from(node_id))
        .ok_or_else(|| UsageError(format!("the playground has nodes 1..={}", plan.nodes.len())))?;
    if listening(&node.addr).await {
        eprintln!("node {node_id} is running on {}", node.addr);
        return Ok(Outcome::Success);
    }
    // SAFETY: kill(2) on the pid of the playground's pid file, checked alive just before.
    if unsafe { libc::kill(pid, libc::SIGUSR1) } != 0 {
        bail!(
            "cannot signal the playground (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    let deadline = Instant::now() + plan.startup_timeout;
    while !listening(&node.addr).await {
        if Instant::now() >= deadline {
            bail!(
                "node {node_id} does not listen on {} after {}s (see {})",
                node.addr,
                plan.startup_timeout.as_secs(),
                node.log.display()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    eprintln!(
        "node {node_id} is back on {} (log: {})",
        node.addr,
        node.log.display()
    );
    Ok(Outcome::Success)
}

/// Reports children that exit until a shutdown signal; on SIGUSR1 (`restart-node`)
/// starts the exited ones again.
async fn supervise(
    supervisor: &mut Supervisor,
    signals: &mut ShutdownSignals,
    restarts: &mut Signal,
) -> &'static str {
    loop {
        let exited = {
            let mut waits: FuturesUnordered<_> = supervisor
                .children
                .iter_mut()
                .enumerate()
                .filter(|(_, child)| child.is_watched())
                .map(|(index, child)| async move { (index, child.process.wait().await) })
                .collect();
            tokio::select! {
                signal = signals.recv() => return signal,
                _ = restarts.recv() => None,
                Some(exit) = waits.next(), if !waits.is_empty() => Some(exit),
            }
        };
        let Some(exited) = exited else {
            for (name, result) in supervisor.restart_exited() {
                match result {
                    Ok(pid) => eprintln!("restarted {name} (pid {pid})"),
                    Err(err) => eprintln!("cannot restart {name}: {err:#}"),
                }
            }
            continue;
        };
        let (index, result) = exited;
        let Some(child) = supervisor.children.get_mut(index) else {
            continue;
        };
        match result {
            Ok(status) => {
                eprintln!(
                    "{} (pid {}) exited: {status}; `kvctl playground restart-node` starts it again (log: {})",
                    child.process.name(),
                    child.process.pid(),
                    child.process.log().unwrap_or(Path::new("")).display()
                );
            }
            Err(err) => {
                eprintln!("{err}");
                // Do not spin on a child that cannot be waited for.
                child.abandoned = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> PlaygroundArgs {
        PlaygroundArgs {
            dir: PathBuf::from("pg"),
            nodes: 3,
            shards: 16,
            replication_factor: None,
            port: DEFAULT_PORT,
            startup_timeout: 60,
            insecure: false,
            action: None,
        }
    }

    /// The default plan: nodes on port+1.., data and logs under the dir, RF 3.
    #[test]
    fn default_plan_layout() {
        let plan = Plan::new(&args(), Path::new("pg")).expect("valid");
        assert_eq!(plan.router_addr, "127.0.0.1:7000");
        assert_eq!(plan.replication_factor, 3);
        assert_eq!(plan.nodes.len(), 3);
        assert_eq!(plan.nodes[0].node_id, 1);
        assert_eq!(plan.nodes[2].addr, "127.0.0.1:7003");
        assert_eq!(plan.nodes[1].data_dir, PathBuf::from("pg/node-2"));
        assert_eq!(plan.nodes[1].log, PathBuf::from("pg/node-2.log"));
        assert_eq!(plan.router_log, PathBuf::from("pg/router.log"));
    }

    /// Node and router command lines follow the CLI contracts.
    #[test]
    fn command_lines() {
        let strings = |args: Vec<OsString>| -> Vec<String> {
            args.into_iter()
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect()
        };
        let plan = Plan::new(&args(), Path::new("pg")).expect("valid");
        assert_eq!(
            strings(plan.node_args(&plan.nodes[0])),
            [
                "--node-id",
                "1",
                "--listen",
                "127.0.0.1:7001",
                "--data-dir",
                "pg/node-1",
                "--metrics-addr",
                "127.0.0.1:0",
                "--ca",
                "pg/certs/ca.crt",
                "--cert",
                "pg/certs/node.crt",
                "--key",
                "pg/certs/node.key",
                "--gossip-key",
                "pg/certs/gossip.key"
            ]
        );
        assert_eq!(
            strings(plan.router_args()),
            [
                "--listen",
                "127.0.0.1:7000",
                "--nodes",
                "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
                "--metrics-addr",
                "127.0.0.1:0",
                "--ca",
                "pg/certs/ca.crt",
                "--cert",
                "pg/certs/router.crt",
                "--key",
                "pg/certs/router.key",
                "--gossip-key",
                "pg/certs/gossip.key"
            ]
        );
        let insecure = Plan::new(
            &PlaygroundArgs {
                insecure: true,
                ..args()
            },
            Path::new("pg"),
        )
        .expect("valid");
        assert_eq!(
            strings(insecure.node_args(&insecure.nodes[0]))
                .last()
                .map(String::as_str),
            Some("--insecure")
        );
        assert_eq!(
            strings(insecure.router_args()).last().map(String::as_str),
            Some("--insecure")
        );
    }

    /// The replication factor defaults to the node count when below 3, and is checked.
    #[test]
    fn replication_factor_defaults_and_limits() {
        let single = Plan::new(&PlaygroundArgs { nodes: 1, ..args() }, Path::new("pg")).expect("valid");
        assert_eq!(single.replication_factor, 1);
        assert!(Plan::new(
            &PlaygroundArgs {
                nodes: 2,
                replication_factor: Some(3),
                ..args()
            },
            Path::new("pg")
        )
        .is_err());
        assert!(Plan::new(&PlaygroundArgs { shards: 10, ..args() }, Path::new("pg")).is_err());
    }

    /// Ports must leave room for every node.
    #[test]
    fn port_range_is_checked() {
        assert!(Plan::new(
            &PlaygroundArgs {
                port: 65534,
                ..args()
            },
            Path::new("pg")
        )
        .is_err());
        assert!(Plan::new(&PlaygroundArgs { port: 0, ..args() }, Path::new("pg")).is_err());
        assert!(Plan::new(
            &PlaygroundArgs {
                port: 65532,
                ..args()
            },
            Path::new("pg")
        )
        .is_ok());
    }

    /// `--port 0` chooses a block of free ports once and keeps it for later runs.
    #[test]
    fn port_zero_is_chosen_once_and_kept() {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let (chosen, held) = chosen_port(dir.path(), 3).expect("a free block");
        assert!(chosen > 0 && chosen.checked_add(3).is_some());
        assert_eq!(held.listeners.len(), 4, "the block is held");
        let (kept, held_again) = chosen_port(dir.path(), 3).expect("kept");
        assert_eq!(kept, chosen);
        assert!(
            held_again.listeners.is_empty(),
            "a kept block is not chosen again"
        );
        std::fs::write(dir.path().join(PORT_FILE), "x").expect("write");
        assert!(
            chosen_port(dir.path(), 3).is_err(),
            "a damaged port file is an error"
        );
    }

    /// A chosen block stays bound until each port is released for its process: nothing
    /// else can bind it meanwhile (the race of two playgrounds choosing at once, or of a
    /// process binding port 0 between the choice and the start), and another playground
    /// choosing at the same time gets a block apart from it. Released, the port binds.
    #[test]
    fn chosen_ports_are_held_until_released() {
        let (first_dir, second_dir) = (
            tempfile::tempdir().expect("a temporary dir"),
            tempfile::tempdir().expect("a temporary dir"),
        );
        let (base, mut held) = chosen_port(first_dir.path(), 3).expect("a free block");
        let addr = |port: u16| format!("127.0.0.1:{port}");
        for port in base..=base + 3 {
            assert!(held.holds(&addr(port)));
            assert!(
                std::net::TcpListener::bind(addr(port)).is_err(),
                "port {port} of the held block is taken by nobody else"
            );
        }
        let (other, _other_held) = chosen_port(second_dir.path(), 3).expect("another block");
        assert!(
            other > base + 3 || other + 3 < base,
            "blocks {base} and {other} overlap"
        );
        held.release(&addr(base + 1));
        assert!(!held.holds(&addr(base + 1)));
        std::net::TcpListener::bind(addr(base + 1)).expect("a released port binds");
        assert!(held.holds(&addr(base)), "the other ports stay held");
    }

    /// `--release` is added only for a kvctl built in a release dir.
    #[test]
    fn cargo_build_profile() {
        let debug = cargo_build_args(Some(Path::new("/w/target/debug/kvctl")));
        assert_eq!(
            debug,
            ["build", "--bins", "-p", "ringkv-node", "-p", "ringkv-router"]
        );
        let release = cargo_build_args(Some(Path::new("/w/target/release/kvctl")));
        assert_eq!(release.last().map(String::as_str), Some("--release"));
        assert!(!cargo_build_args(None).contains(&"--release".to_string()));
    }

    /// Leader counting uses the ring's shard count when known.
    #[test]
    fn leader_counting() {
        let status = proto::ClusterStatusResponse {
            ring: Some(proto::RingInfo {
                shards: 4,
                ..Default::default()
            }),
            shards: vec![
                proto::ShardHealth {
                    leader_id: 1,
                    ..Default::default()
                },
                proto::ShardHealth::default(),
            ],
            ..Default::default()
        };
        assert_eq!(leaders_ready(&status, 16), (1, 4));
        assert_eq!(
            leaders_ready(&proto::ClusterStatusResponse::default(), 16),
            (0, 16)
        );
    }
}
