//! Test harness for end-to-end tests: starts real `ringkv-node` and `ringkv-router`
//! processes on loopback (port 0), each node with its own data directory, and offers
//! condition waits (`wait_for_leaders`, `wait_until`) instead of sleeps.
//!
//! The binaries must be built first (`cargo build --bins`, which the README test command
//! does); they are found next to the test executable's `deps/` directory, or in
//! `$RINGKV_BIN_DIR`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ringkv_proto::v1::{
    self, admin_client::AdminClient, kv_client::KvClient, shard_kv_client::ShardKvClient,
};
use ringkv_ring::{MemberState, Ring, RingConfig, RingMember};
use tonic::transport::Channel;

/// Default time allowed for a condition in tests (generous for slow CI machines).
pub const WAIT: Duration = Duration::from_secs(60);

/// Directory holding the ringkv binaries.
pub fn bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("RINGKV_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test binaries live in `target/<profile>/deps`, examples in `target/<profile>/examples`.
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    Ok(dir)
}

fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build the binaries first with `cargo build --bins` (or set RINGKV_BIN_DIR)",
            path.display()
        );
    }
    Ok(path)
}

/// Polls a condition until it returns `Some`, failing after a timeout (shared with the
/// fault-injection harness).
pub use ringkv_jepsen::cluster::wait_for as wait_until;

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
        }
    }
}

/// One node process.
pub struct NodeProcess {
    pub id: u64,
    pub data_dir: PathBuf,
    pub addr: Option<String>,
    child: Option<Child>,
}

impl NodeProcess {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A cluster of real processes under a temporary directory, killed on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub options: ClusterOptions,
    pub nodes: BTreeMap<u64, NodeProcess>,
    router: Option<Child>,
    pub router_addr: Option<String>,
}

async fn read_addr_file(path: &Path, what: &str) -> Result<String> {
    wait_until(what, WAIT, || async {
        std::fs::read_to_string(path).ok().filter(|addr| !addr.is_empty())
    })
    .await
}

fn log_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

impl Cluster {
    /// Starts `options.nodes` nodes, initialises the cluster, starts a router and waits for
    /// every shard to have a leader.
    pub async fn start(options: ClusterOptions) -> Result<Cluster> {
        let mut cluster = Cluster {
            dir: tempfile::tempdir().context("creating the cluster directory")?,
            options,
            nodes: BTreeMap::new(),
            router: None,
            router_addr: None,
        };
        for id in 1..=cluster.options.nodes {
            cluster.start_node(id).await?;
        }
        cluster.init().await?;
        cluster.start_router().await?;
        cluster.wait_for_leaders(WAIT).await?;
        Ok(cluster)
    }

    /// Starts `options.nodes` nodes and initialises the cluster, without a router.
    pub async fn nodes_only(options: ClusterOptions) -> Result<Cluster> {
        let mut cluster = Cluster {
            dir: tempfile::tempdir().context("creating the cluster directory")?,
            options,
            nodes: BTreeMap::new(),
            router: None,
            router_addr: None,
        };
        for id in 1..=cluster.options.nodes {
            cluster.start_node(id).await?;
        }
        cluster.init().await?;
        Ok(cluster)
    }

    /// Starts (or restarts) node `id`; waits until it listens.
    pub async fn start_node(&mut self, id: u64) -> Result<String> {
        let data_dir = self.dir.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&data_dir)?;
        let addr_file = data_dir.join("addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = log_file(&self.dir.path().join(format!("node-{id}.log")))?;
        let child = Command::new(binary("ringkv-node")?)
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--addr-file")
            .arg(&addr_file)
            .args(&self.options.node_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning ringkv-node")?;
        let node = self.nodes.entry(id).or_insert(NodeProcess {
            id,
            data_dir,
            addr: None,
            child: None,
        });
        node.child = Some(child);
        let addr = read_addr_file(&addr_file, &format!("node {id} to listen")).await?;
        if let Some(previous) = &node.addr {
            if previous != &addr {
                bail!("node {id} came back on {addr}, not {previous}");
            }
        }
        node.addr = Some(addr.clone());
        Ok(addr)
    }

    fn signal_node(&mut self, id: u64, signal: i32) -> Result<Child> {
        let node = self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        let child = node
            .child
            .take()
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        let pid = i32::try_from(child.id()).context("pid")?;
        // SAFETY: sending a signal to a child process we own.
        let rc = unsafe { libc::kill(pid, signal) };
        if rc != 0 {
            bail!("kill({pid}, {signal}) failed");
        }
        Ok(child)
    }

    /// `kill -9` node `id`.
    pub fn kill_node(&mut self, id: u64) -> Result<()> {
        let mut child = self.signal_node(id, libc::SIGKILL)?;
        child.wait().context("reaping the node")?;
        Ok(())
    }

    /// SIGTERM node `id` and wait for it to exit.
    pub async fn stop_node(&mut self, id: u64) -> Result<()> {
        let mut child = self.signal_node(id, libc::SIGTERM)?;
        wait_until(&format!("node {id} to exit"), WAIT, || {
            let exited = child.try_wait().ok().flatten().is_some();
            async move { exited.then_some(()) }
        })
        .await
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

    /// Bootstraps the cluster through node 1.
    pub async fn init(&self) -> Result<v1::InitClusterResponse> {
        let nodes = self
            .nodes
            .values()
            .map(|node| {
                Ok(v1::NodeAddress {
                    node_id: node.id,
                    addr: node
                        .addr
                        .clone()
                        .ok_or_else(|| anyhow!("node {} not started", node.id))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut admin = self.admin(1).await?;
        let response = admin
            .init_cluster(v1::InitClusterRequest {
                nodes,
                shards: self.options.shards,
                replication_factor: self.options.replication_factor,
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Starts the router; waits until it listens.
    pub async fn start_router(&mut self) -> Result<String> {
        let addr_file = self.dir.path().join("router.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = log_file(&self.dir.path().join("router.log"))?;
        let mut command = Command::new(binary("ringkv-router")?);
        if !self.options.router_config.is_empty() {
            let config = self.dir.path().join("router.toml");
            std::fs::write(&config, self.options.router_config.join("\n"))?;
            command.arg("--config").arg(config);
        }
        let child = command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--nodes")
            .arg(self.node_addrs().join(","))
            .arg("--addr-file")
            .arg(&addr_file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning ringkv-router")?;
        self.router = Some(child);
        let addr = read_addr_file(&addr_file, "the router to listen").await?;
        self.router_addr = Some(addr.clone());
        Ok(addr)
    }

    /// A client connected to the router.
    pub async fn client(&self) -> Result<ringkv_client::Client> {
        let addr = self.router_addr.clone().ok_or_else(|| anyhow!("no router"))?;
        Ok(ringkv_client::Client::connect(vec![addr]).await?)
    }

    /// The raw `Kv` gRPC client of the router (no client-library retries).
    pub async fn kv(&self) -> Result<KvClient<Channel>> {
        let addr = self.router_addr.clone().ok_or_else(|| anyhow!("no router"))?;
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await?;
        Ok(KvClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }

    /// The router's process id.
    pub fn router_pid(&self) -> Option<u32> {
        self.router.as_ref().map(Child::id)
    }

    async fn channel(&self, id: u64) -> Result<Channel> {
        let addr = self.node_addr(id)?;
        Ok(Channel::from_shared(format!("http://{addr}"))?
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
            .node_status(v1::NodeStatusRequest {})
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

    /// The leader of every shard, as claimed by the running nodes (highest term wins).
    pub async fn leaders(&self) -> BTreeMap<u32, u64> {
        let mut best: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for (id, node) in &self.nodes {
            if !node.is_running() {
                continue;
            }
            let Ok(status) = self.node_status(*id).await else {
                continue;
            };
            for replica in status.replicas {
                let (Some(shard), v1::ReplicaRole::Leader) = (replica.shard_id, replica.role()) else {
                    continue;
                };
                let entry = best.entry(shard).or_insert((0, 0));
                if replica.term >= entry.0 {
                    *entry = (replica.term, *id);
                }
            }
        }
        best.into_iter()
            .map(|(shard, (_, leader))| (shard, leader))
            .collect()
    }

    /// Waits until every shard has a leader among the running nodes.
    pub async fn wait_for_leaders(&self, timeout: Duration) -> Result<BTreeMap<u32, u64>> {
        let shards = self.options.shards as usize;
        wait_until("a leader for every shard", timeout, || async {
            let leaders = self.leaders().await;
            (leaders.len() == shards).then_some(leaders)
        })
        .await
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

    /// Path of node `id`'s log file.
    pub fn node_log(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let children = self
            .nodes
            .values_mut()
            .filter_map(|node| node.child.take())
            .chain(self.router.take());
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
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
