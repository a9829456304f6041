//! Test harness for end-to-end tests: starts real `ringkv-node` and `ringkv-router`
//! processes on loopback (port 0), each node with its own data directory, and offers
//! condition waits (`wait_for_leaders`, `wait_until`) instead of sleeps. Spawning, address
//! files, init and leader waits come from `ringkv-launcher`, shared with the fault-injection
//! harness and `kvctl playground`.
//!
//! The binaries must be built first (`cargo build --bins`, which the README test command
//! does); they are found next to the test executable's `deps/` directory, or in
//! `$RINGKV_BIN_DIR`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ringkv_launcher::binaries::{env_bin_dir, executable_dir, Binaries};
use ringkv_launcher::{cluster as launch, ClusterCerts, Launch, Process, Security};
use ringkv_proto::v1::{
    self, admin_client::AdminClient, change_auth_request::Change, kv_client::KvClient,
    shard_kv_client::ShardKvClient,
};
use ringkv_ring::{MemberState, Ring, RingConfig, RingMember};
use ringkv_tls::Role;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Default time allowed for a condition in tests (generous for slow CI machines).
pub const WAIT: Duration = Duration::from_secs(60);

/// Deadline of one node status call.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Directory holding the ringkv binaries: `$RINGKV_BIN_DIR`, else the test executable's
/// profile directory.
pub fn bin_dir() -> Result<PathBuf> {
    match env_bin_dir() {
        Some(dir) => Ok(dir),
        None => Ok(executable_dir()?),
    }
}

fn binaries() -> Result<Binaries> {
    Ok(Binaries::in_dir(&bin_dir()?)?)
}

/// Polls a condition until it returns `Some`, failing after a timeout (the launcher's
/// `wait_for`, shared with the fault-injection harness).
pub use ringkv_launcher::wait_for as wait_until;

/// The purge counters of the nodes at `metrics_addrs` summed: (purge entries, expired
/// keys purged) — what `ringkv_expiry_purge_entries_total` and
/// `ringkv_expired_keys_purged_total` report.
pub async fn purge_totals(metrics_addrs: &[String]) -> Result<(u64, u64)> {
    let mut entries = 0;
    let mut keys = 0;
    for addr in metrics_addrs {
        let text = scrape_metrics(addr).await?;
        let counter = |name: &str| -> Result<u64> {
            let value = text
                .lines()
                .find_map(|line| {
                    line.strip_prefix(name)?
                        .strip_prefix(' ')?
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
                .with_context(|| format!("{addr} reports no {name}"))?;
            Ok(value as u64)
        };
        entries += counter("ringkv_expiry_purge_entries_total")?;
        keys += counter("ringkv_expired_keys_purged_total")?;
    }
    Ok((entries, keys))
}

/// The body of `GET /metrics` at `addr` (HTTP/1.1, one request per connection).
pub async fn scrape_metrics(addr: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("scrape of {addr} answered {head:?}");
    }
    Ok(body.to_string())
}

/// Options for a test cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: u64,
    pub shards: u32,
    pub replication_factor: u32,
    /// Extra flags for every node (e.g. tiny snapshot thresholds).
    pub node_args: Vec<String>,
    /// Lines of a TOML config file for the router (empty: no config file).
    pub router_config: Vec<String>,
    /// Mutual TLS: a CA and certificates are made under the cluster's directory
    /// (`certs/`); false: every process runs `--insecure`.
    pub tls: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            shards: 8,
            replication_factor: 3,
            node_args: vec![
                "--heartbeat-interval-ms".into(),
                "100".into(),
                "--election-timeout-min-ms".into(),
                "500".into(),
            ],
            router_config: Vec::new(),
            tls: false,
        }
    }
}

impl ClusterOptions {
    /// The same options with every node serving `/metrics` on a free port (found with
    /// [`Cluster::metrics_addrs`] or a node's status).
    pub fn with_node_metrics(mut self) -> Self {
        self.node_args
            .extend(["--metrics-addr".to_string(), "127.0.0.1:0".to_string()]);
        self
    }
}

/// One node process.
pub struct NodeProcess {
    pub id: u64,
    pub data_dir: PathBuf,
    pub addr: Option<String>,
    process: Option<Process>,
}

impl NodeProcess {
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }
}

/// A cluster of real processes under a temporary directory, killed on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub options: ClusterOptions,
    pub nodes: BTreeMap<u64, NodeProcess>,
    router: Option<Process>,
    pub router_addr: Option<String>,
    /// TLS or not, as `options.tls` asked.
    pub security: Security,
}

impl Cluster {
    /// Starts `options.nodes` nodes, initialises the cluster, starts a router and waits for
    /// every shard to have a leader.
    pub async fn start(options: ClusterOptions) -> Result<Cluster> {
        let mut cluster = Cluster::nodes_only(options).await?;
        cluster.start_router().await?;
        cluster.wait_for_leaders(WAIT).await?;
        Ok(cluster)
    }

    /// Where each node serves `/metrics` (nodes started with `--metrics-addr`), in id order.
    pub async fn metrics_addrs(&self) -> Result<Vec<String>> {
        let mut addrs = Vec::new();
        for id in self.nodes.keys() {
            let addr = self.node_status(*id).await?.metrics_addr;
            if addr.is_empty() {
                bail!("node {id} serves no metrics (start it with --metrics-addr)");
            }
            addrs.push(addr);
        }
        Ok(addrs)
    }

    /// Starts `options.nodes` nodes and initialises the cluster, without a router.
    pub async fn nodes_only(options: ClusterOptions) -> Result<Cluster> {
        let dir = tempfile::tempdir().context("creating the cluster directory")?;
        let security = if options.tls {
            Security::Tls(ClusterCerts::create(&dir.path().join("certs"), "test")?)
        } else {
            Security::Insecure
        };
        let mut cluster = Cluster {
            dir,
            options,
            nodes: BTreeMap::new(),
            router: None,
            router_addr: None,
            security,
        };
        for id in 1..=cluster.options.nodes {
            cluster.start_node(id).await?;
        }
        cluster.init().await?;
        Ok(cluster)
    }

    /// Starts (or restarts) node `id`; waits until it listens.
    pub async fn start_node(&mut self, id: u64) -> Result<String> {
        self.start_node_listening(id, "127.0.0.1:0").await
    }

    /// Starts (or restarts) node `id` listening on `listen` (port 0: the recorded port, or a
    /// free one); waits until it listens.
    pub async fn start_node_listening(&mut self, id: u64, listen: &str) -> Result<String> {
        let data_dir = self.dir.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&data_dir)?;
        let addr_file = data_dir.join("addr");
        let _ = std::fs::remove_file(&addr_file);
        let process = Launch::new(format!("node {id}"), binaries()?.node)
            .arg("--node-id")
            .arg(id.to_string())
            .args(["--listen", listen, "--data-dir"])
            .arg(&data_dir)
            .arg("--addr-file")
            .arg(&addr_file)
            .args(self.security.node_args())
            .args(&self.options.node_args)
            .log(self.node_log(id))
            .spawn()?;
        let node = self.nodes.entry(id).or_insert(NodeProcess {
            id,
            data_dir,
            addr: None,
            process: None,
        });
        let process = node.process.insert(process);
        let addr = process.wait_for_addr_file(&addr_file, WAIT).await?;
        if let Some(previous) = &node.addr {
            if previous != &addr {
                bail!("node {id} came back on {addr}, not {previous}");
            }
        }
        node.addr = Some(addr.clone());
        Ok(addr)
    }

    fn take_process(&mut self, id: u64) -> Result<Process> {
        let node = self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        node.process
            .take()
            .ok_or_else(|| anyhow!("node {id} is not running"))
    }

    /// `kill -9` node `id`.
    pub fn kill_node(&mut self, id: u64) -> Result<()> {
        self.take_process(id)?.kill()?;
        Ok(())
    }

    /// Sends `signal` to node `id` (SIGSTOP and SIGCONT pause and resume it).
    pub fn signal_node(&self, id: u64, signal: libc::c_int) -> Result<()> {
        let process = self
            .nodes
            .get(&id)
            .and_then(|node| node.process.as_ref())
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        process
            .signal(signal)
            .with_context(|| format!("signalling node {id}"))?;
        Ok(())
    }

    /// SIGTERM node `id` and wait for it to exit.
    pub async fn stop_node(&mut self, id: u64) -> Result<()> {
        let mut process = self.take_process(id)?;
        process.signal(libc::SIGTERM)?;
        tokio::time::timeout(WAIT, process.wait())
            .await
            .with_context(|| format!("node {id} did not exit within {WAIT:?} of SIGTERM"))??;
        Ok(())
    }

    pub fn node_addr(&self, id: u64) -> Result<String> {
        self.nodes
            .get(&id)
            .and_then(|node| node.addr.clone())
            .ok_or_else(|| anyhow!("node {id} has no address"))
    }

    pub fn node_addrs(&self) -> Vec<String> {
        self.nodes.values().filter_map(|node| node.addr.clone()).collect()
    }

    /// Bootstraps the cluster (through node 1, the first address).
    pub async fn init(&self) -> Result<v1::InitClusterResponse> {
        if let Some(node) = self.nodes.values().find(|node| node.addr.is_none()) {
            bail!("node {} not started", node.id);
        }
        Ok(launch::init_cluster(
            &self.node_addrs(),
            self.options.shards,
            self.options.replication_factor,
            self.security.client_tls()?.as_ref(),
        )
        .await?)
    }

    /// Starts the router; waits until it listens.
    pub async fn start_router(&mut self) -> Result<String> {
        self.start_router_with(&[]).await
    }

    /// Starts the router with extra flags (a running one is killed first); waits until it
    /// listens. Its output is appended to the same `router.log`.
    pub async fn start_router_with(&mut self, extra_args: &[&str]) -> Result<String> {
        self.router = None;
        let addr_file = self.dir.path().join("router.addr");
        let _ = std::fs::remove_file(&addr_file);
        let mut launch = Launch::new("router", binaries()?.router);
        if !self.options.router_config.is_empty() {
            let config = self.dir.path().join("router.toml");
            std::fs::write(&config, self.options.router_config.join("\n"))?;
            launch = launch.arg("--config").arg(config);
        }
        let router = launch
            .args(["--listen", "127.0.0.1:0", "--nodes"])
            .arg(self.node_addrs().join(","))
            .arg("--addr-file")
            .arg(&addr_file)
            .args(self.security.router_args())
            .args(extra_args)
            .log(self.dir.path().join("router.log"))
            .spawn()?;
        let addr = self
            .router
            .insert(router)
            .wait_for_addr_file(&addr_file, WAIT)
            .await?;
        self.router_addr = Some(addr.clone());
        Ok(addr)
    }

    /// A client connected to the router.
    pub async fn client(&self) -> Result<ringkv_client::Client> {
        let addr = self.router_addr.clone().ok_or_else(|| anyhow!("no router"))?;
        match self.security.client_tls()? {
            Some(tls) => {
                let config = ringkv_client::ClientConfig::builder().tls(tls).build()?;
                Ok(ringkv_client::Client::connect_with(vec![addr], config).await?)
            }
            None => Ok(ringkv_client::Client::connect(vec![addr]).await?),
        }
    }

    /// The raw `Kv` gRPC client of the router (no client-library retries).
    pub async fn kv(&self) -> Result<KvClient<Channel>> {
        let addr = self.router_addr.clone().ok_or_else(|| anyhow!("no router"))?;
        let channel = self
            .endpoint(&addr, Role::Client)?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await?;
        Ok(KvClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }

    /// An endpoint for `addr`: plain http, or https presenting the certificate of `role`.
    pub fn endpoint(&self, addr: &str, role: Role) -> Result<Endpoint> {
        match &self.security {
            Security::Insecure => Ok(Channel::from_shared(format!("http://{addr}"))?),
            Security::Tls(certs) => {
                let paths = certs.paths(role);
                let tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(std::fs::read(certs.ca())?))
                    .identity(Identity::from_pem(
                        std::fs::read(&paths.cert)?,
                        std::fs::read(&paths.key)?,
                    ));
                Ok(Channel::from_shared(format!("https://{addr}"))?.tls_config(tls)?)
            }
        }
    }

    /// The cluster's certificates (a test that calls this started the cluster with TLS).
    pub fn certs(&self) -> Result<&ClusterCerts> {
        match &self.security {
            Security::Tls(certs) => Ok(certs),
            Security::Insecure => bail!("the test cluster runs without TLS"),
        }
    }

    /// A client certificate of the cluster's CA naming `user`.
    pub fn user_cert(&self, user: &str) -> Result<ringkv_tls::IssuedCert> {
        let paths = self.certs()?.ca_paths();
        let ca = ringkv_tls::CertificateAuthority::load(&paths.cert, &paths.key)?;
        Ok(ca.issue(&ringkv_tls::LeafRequest {
            role: Role::Client,
            hosts: Vec::new(),
            user: Some(user.to_string()),
            validity: ringkv_tls::Validity::days_from_now(1)?,
        })?)
    }

    /// A channel straight to `addr` presenting `identity` (connected, calls bounded by
    /// `timeout`).
    pub async fn channel_as(
        &self,
        addr: &str,
        identity: &ringkv_tls::IssuedCert,
        timeout: Duration,
    ) -> Result<Channel> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(self.certs()?.ca())?))
            .identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
        Ok(Channel::from_shared(format!("https://{addr}"))?
            .tls_config(tls)?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect()
            .await?)
    }

    /// The router's process id.
    pub fn router_pid(&self) -> Option<u32> {
        self.router.as_ref().map(Process::pid)
    }

    /// Waits (up to `timeout`) for the router to exit by itself; how it ended.
    pub async fn wait_for_router_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let router = self.router.as_mut().ok_or_else(|| anyhow!("no router"))?;
        Ok(tokio::time::timeout(timeout, router.wait())
            .await
            .with_context(|| format!("the router did not exit within {timeout:?}"))??)
    }

    async fn channel(&self, id: u64) -> Result<Channel> {
        let addr = self.node_addr(id)?;
        // With TLS the test acts as a peer node: every node service accepts it.
        Ok(self
            .endpoint(&addr, Role::Node)?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect()
            .await?)
    }

    pub async fn admin(&self, id: u64) -> Result<AdminClient<Channel>> {
        Ok(AdminClient::new(self.channel(id).await?))
    }

    pub async fn shard_kv(&self, id: u64) -> Result<ShardKvClient<Channel>> {
        Ok(ShardKvClient::new(self.channel(id).await?))
    }

    /// Node `id`'s status.
    pub async fn node_status(&self, id: u64) -> Result<v1::NodeStatusResponse> {
        Ok(self
            .admin(id)
            .await?
            .node_status(v1::NodeStatusRequest::default())
            .await?
            .into_inner())
    }

    /// The ring as node `id` knows it.
    pub async fn ring(&self, id: u64) -> Result<Ring> {
        let info = self
            .node_status(id)
            .await?
            .ring
            .ok_or_else(|| anyhow!("node {id} has no ring yet"))?;
        let members = info
            .members
            .iter()
            .map(|member| {
                let state = match member.state() {
                    v1::MemberState::Joining => MemberState::Joining,
                    v1::MemberState::Active => MemberState::Active,
                    v1::MemberState::Decommissioning => MemberState::Decommissioning,
                    v1::MemberState::Removed => MemberState::Removed,
                    v1::MemberState::Dead => MemberState::Dead,
                    v1::MemberState::Unspecified => {
                        return Err(anyhow!(
                            "node {} has unknown state {}",
                            member.node_id,
                            member.state
                        ))
                    }
                };
                Ok(RingMember {
                    node_id: member.node_id,
                    addr: member.addr.clone(),
                    state,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Ring::new(
            RingConfig {
                shards: info.shards,
                replication_factor: info.replication_factor,
                vnodes_per_node: info.vnodes_per_node,
            },
            members,
        )?)
    }

    /// The running nodes with an address: (node id, address).
    fn running_nodes(&self) -> Vec<(u64, String)> {
        self.nodes
            .values()
            .filter(|node| node.is_running())
            .filter_map(|node| Some((node.id, node.addr.clone()?)))
            .collect()
    }

    /// The leader of every shard, as claimed by the running nodes (highest term wins).
    pub async fn leaders(&self) -> BTreeMap<u32, u64> {
        // Unreadable certificates: no node answers, no leaders.
        let tls = self.security.client_tls().ok().flatten();
        launch::shard_leaders(&self.running_nodes(), STATUS_TIMEOUT, tls.as_ref()).await
    }

    /// Waits until every shard has a leader among the running nodes.
    pub async fn wait_for_leaders(&self, timeout: Duration) -> Result<BTreeMap<u32, u64>> {
        Ok(launch::wait_for_leaders(
            &self.running_nodes(),
            self.options.shards,
            timeout,
            STATUS_TIMEOUT,
            self.security.client_tls()?.as_ref(),
        )
        .await?)
    }

    /// Reads `key` from node `id`'s local replica (a stale read: no leader check).
    pub async fn read_replica(&self, id: u64, shard: u32, key: &[u8]) -> Result<Option<(Vec<u8>, u64)>> {
        let response = self
            .shard_kv(id)
            .await?
            .read(v1::ShardReadRequest {
                shard_id: shard,
                keys: vec![key.to_vec()],
                consistency: v1::Consistency::Stale as i32,
                read_ts: 0,
                read_uncommitted: false,
                max_bytes: 0,
            })
            .await?
            .into_inner();
        let result = response
            .results
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("empty read response"))?;
        Ok(result.found.then_some((result.value, result.version)))
    }

    /// Waits (up to `timeout`) until node `id`'s replica of `shard` holds `key` at `version`;
    /// returns the value.
    pub async fn wait_replica_at(
        &self,
        id: u64,
        shard: u32,
        key: &[u8],
        version: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let what = format!("node {id}'s replica of shard {shard} to hold version {version}");
        let (value, _) = wait_until(&what, timeout, || async {
            self.read_replica(id, shard, key)
                .await
                .ok()
                .flatten()
                .filter(|(_, v)| *v == version)
        })
        .await?;
        Ok(value)
    }

    /// Node `id`'s applied index for `shard`, if it hosts it.
    pub async fn applied_index(&self, id: u64, shard: u32) -> Result<Option<u64>> {
        let status = self.node_status(id).await?;
        Ok(status
            .replicas
            .iter()
            .find(|replica| replica.shard_id == Some(shard))
            .map(|replica| replica.applied_index))
    }

    /// The shards node `id` hosts a replica of (from its status).
    pub async fn hosted_shards(&self, id: u64) -> Result<Vec<u32>> {
        let status = self.node_status(id).await?;
        let mut shards: Vec<u32> = status
            .replicas
            .iter()
            .filter_map(|replica| replica.shard_id)
            .collect();
        shards.sort_unstable();
        Ok(shards)
    }

    /// Every transaction lock on `shard`, read on its leader (each running node is asked
    /// in turn; followers refuse).
    pub async fn shard_locks(&self, shard: u32) -> Result<Vec<v1::TxnConflict>> {
        let mut refusals = Vec::new();
        for (id, _) in self.running_nodes() {
            let request = v1::ShardTxnScanLocksRequest {
                shard_id: shard,
                below: u64::MAX,
                limit: 10_000,
            };
            let answer = match self.shard_kv(id).await {
                Ok(mut shard_kv) => shard_kv
                    .txn_scan_locks(request)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(anyhow::Error::from),
                Err(err) => Err(err),
            };
            match answer {
                Ok(response) if response.more => bail!("more than 10,000 locks on shard {shard}"),
                Ok(response) => return Ok(response.locks),
                Err(err) => refusals.push(format!("node {id}: {err:#}")),
            }
        }
        bail!("no node answered for shard {shard}'s locks: {refusals:?}")
    }

    /// Runs the `kvctl` binary against this cluster's router (no endpoints from the
    /// environment; a 10 s request timeout), within [`WAIT`].
    pub async fn kvctl(&self, args: &[&str]) -> Result<std::process::Output> {
        let router = self.router_addr.clone().context("no router")?;
        let output = tokio::process::Command::new(bin_dir()?.join("kvctl"))
            .env_remove("RINGKV_ENDPOINTS")
            .args(["-e", &router, "--timeout", "10000"])
            .args(args)
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(WAIT, output)
            .await
            .map_err(|_| anyhow!("kvctl {args:?} did not finish within {WAIT:?}"))?
            .context("running kvctl")
    }

    /// Path of node `id`'s log file.
    pub fn node_log(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The processes die (killed and reaped) before their directory goes.
        self.router = None;
        for node in self.nodes.values_mut() {
            node.process = None;
        }
        if std::env::var_os("RINGKV_KEEP_TEST_DIRS").is_some() {
            let path = self.dir.path().to_path_buf();
            eprintln!("keeping test cluster directory {}", path.display());
            let dir = std::mem::replace(
                &mut self.dir,
                match tempfile::tempdir() {
                    Ok(dir) => dir,
                    Err(_) => return,
                },
            );
            let _ = dir.keep();
        }
    }
}

/// The permission change granting `role` `permission` on keys under `prefix`.
pub fn grant(role: &str, prefix: &str, permission: v1::Permission) -> Change {
    Change::Grant(v1::RoleGrant {
        role: role.into(),
        grant: Some(v1::Grant {
            prefix: prefix.as_bytes().to_vec(),
            permission: permission as i32,
        }),
    })
}

/// The permission change adding `user` (no password) with `roles`.
pub fn add_user(user: &str, roles: &[&str]) -> Change {
    Change::AddUser(v1::AuthUser {
        name: user.into(),
        roles: roles.iter().map(|role| role.to_string()).collect(),
        ..Default::default()
    })
}
