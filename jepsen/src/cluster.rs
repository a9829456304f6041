//! The cluster under test: real `ringkv-node` processes (each in its own network namespace
//! when partitions are wanted, else on loopback) and one `ringkv-router` in the host
//! namespace. Processes are killed and namespaces removed when the cluster is dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ringkv_proto::v1::{self, admin_client::AdminClient};

use crate::net::Network;

/// How nodes are placed on the network.
pub enum Placement {
    /// Every process on 127.0.0.1 (process faults only).
    Loopback,
    /// Each node in its own network namespace (partitions possible; needs root).
    Namespaces(Box<Network>),
}

/// Options of the cluster under test.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub shards: u32,
    pub replication_factor: u32,
    /// Extra `ringkv-node` flags (timeouts, snapshot thresholds, unsafe negative controls).
    pub node_args: Vec<String>,
    /// Directory with `ringkv-node` and `ringkv-router`.
    pub bin_dir: PathBuf,
    /// Run nodes under libfaketime so the clock nemesis can skew their wall clocks.
    pub fake_clock: bool,
}

/// Where Debian's libfaketime lives (multi-threaded variant).
const LIBFAKETIME_PATHS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
];

/// The libfaketime library, or a readable error naming the install script.
pub fn libfaketime() -> Result<PathBuf> {
    LIBFAKETIME_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .ok_or_else(|| {
            anyhow!("the clock nemesis needs libfaketime: run jepsen/scripts/install-deps.sh (as root)")
        })
}

struct NodeProc {
    addr: String,
    data_dir: PathBuf,
    child: Option<Child>,
}

/// A running cluster.
pub struct Cluster {
    spec: ClusterSpec,
    dir: PathBuf,
    placement: Placement,
    nodes: BTreeMap<usize, NodeProc>,
    router: Option<Child>,
    pub router_addr: String,
}

/// Polls `probe` until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

fn log_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

impl Cluster {
    /// Starts the nodes, initialises the cluster, starts the router and waits until every
    /// shard has a leader.
    pub async fn start(spec: ClusterSpec, dir: &Path, placement: Placement) -> Result<Cluster> {
        for bin in ["ringkv-node", "ringkv-router"] {
            if !spec.bin_dir.join(bin).exists() {
                bail!(
                    "{} not found in {}: build with `cargo build --release --bins`",
                    bin,
                    spec.bin_dir.display()
                );
            }
        }
        // Absolute: node processes get paths (data dir, clock file) through flags and env.
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        let mut cluster = Cluster {
            spec,
            dir: dir.clone(),
            placement,
            nodes: BTreeMap::new(),
            router: None,
            router_addr: String::new(),
        };
        for id in 1..=cluster.spec.nodes {
            let (addr, data_dir) = match &cluster.placement {
                Placement::Loopback => (String::new(), dir.join(format!("node-{id}"))),
                Placement::Namespaces(net) => (
                    format!("{}:7001", net.host_ip(id)),
                    dir.join(format!("node-{id}")),
                ),
            };
            cluster.nodes.insert(
                id,
                NodeProc {
                    addr,
                    data_dir,
                    child: None,
                },
            );
            cluster.start_node(id).await?;
        }
        cluster.init().await?;
        cluster.start_router().await?;
        cluster.wait_for_leaders(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    pub fn node_ids(&self) -> Vec<usize> {
        self.nodes.keys().copied().collect()
    }

    pub fn network(&self) -> Option<&Network> {
        match &self.placement {
            Placement::Namespaces(net) => Some(net),
            Placement::Loopback => None,
        }
    }

    pub fn node_addr(&self, id: usize) -> Option<String> {
        self.nodes.get(&id).map(|node| node.addr.clone())
    }

    pub fn is_running(&self, id: usize) -> bool {
        self.nodes.get(&id).is_some_and(|node| node.child.is_some())
    }

    /// Starts (or restarts) node `id` and waits until it listens.
    pub async fn start_node(&mut self, id: usize) -> Result<()> {
        let node_bin = self.spec.bin_dir.join("ringkv-node");
        let log = log_file(&self.dir.join(format!("node-{id}.log")))?;
        let node = self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        if node.child.is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(&node.data_dir)?;
        let addr_file = node.data_dir.join("addr");
        let _ = std::fs::remove_file(&addr_file);
        let (mut command, listen) = match &self.placement {
            Placement::Loopback => (Command::new(&node_bin), "127.0.0.1:0".to_string()),
            Placement::Namespaces(net) => (net.command(id, &node_bin), node.addr.clone()),
        };
        command
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(&listen)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--addr-file")
            .arg(&addr_file)
            .args(&self.spec.node_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if self.spec.fake_clock {
            // Only the wall clock is faked (what NTP trouble does); monotonic time stays true.
            let clock_file = self.dir.join(format!("node-{id}.clock"));
            if !clock_file.exists() {
                std::fs::write(&clock_file, "+0\n")?;
            }
            command
                .env("LD_PRELOAD", libfaketime()?)
                .env("FAKETIME_TIMESTAMP_FILE", &clock_file)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_CACHE_DURATION", "1");
        }
        command.stdout(Stdio::null()).stderr(log);
        node.child = Some(command.spawn().context("spawning ringkv-node")?);
        let addr = wait_for(
            &format!("node {id} to listen"),
            Duration::from_secs(30),
            || async {
                std::fs::read_to_string(&addr_file)
                    .ok()
                    .filter(|addr| !addr.is_empty())
            },
        )
        .await?;
        if !node.addr.is_empty() && node.addr != addr {
            bail!("node {id} came back on {addr}, not {}", node.addr);
        }
        node.addr = addr;
        Ok(())
    }

    fn pid(&self, id: usize) -> Option<i32> {
        let child = self.nodes.get(&id)?.child.as_ref()?;
        i32::try_from(child.id()).ok()
    }

    /// Sends `signal` to node `id`'s process.
    pub fn signal(&self, id: usize, signal: i32) -> Result<()> {
        let pid = self.pid(id).ok_or_else(|| anyhow!("node {id} is not running"))?;
        // SAFETY: kill(2) on a child process this harness owns.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!(
                "kill({pid}, {signal}) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// `kill -9` node `id` and reap it.
    pub fn kill_node(&mut self, id: usize) -> Result<()> {
        self.signal(id, libc::SIGKILL)?;
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(mut child) = node.child.take() {
                child.wait().context("reaping the node")?;
            }
        }
        Ok(())
    }

    /// Bootstraps the cluster through node 1.
    async fn init(&self) -> Result<()> {
        let nodes = self
            .nodes
            .iter()
            .map(|(id, node)| v1::NodeAddress {
                node_id: *id as u64,
                addr: node.addr.clone(),
            })
            .collect();
        let first = self.node_addr(1).ok_or_else(|| anyhow!("no node 1"))?;
        let mut admin = AdminClient::connect(format!("http://{first}")).await?;
        admin
            .init_cluster(v1::InitClusterRequest {
                nodes,
                shards: self.spec.shards,
                replication_factor: self.spec.replication_factor,
            })
            .await
            .context("cluster init")?;
        Ok(())
    }

    async fn start_router(&mut self) -> Result<()> {
        let addr_file = self.dir.join("router.addr");
        let _ = std::fs::remove_file(&addr_file);
        let nodes: Vec<String> = self.nodes.values().map(|node| node.addr.clone()).collect();
        let child = Command::new(self.spec.bin_dir.join("ringkv-router"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--nodes")
            .arg(nodes.join(","))
            .arg("--addr-file")
            .arg(&addr_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir.join("router.log"))?)
            .spawn()
            .context("spawning ringkv-router")?;
        self.router = Some(child);
        self.router_addr = wait_for("the router to listen", Duration::from_secs(30), || async {
            std::fs::read_to_string(&addr_file)
                .ok()
                .filter(|addr| !addr.is_empty())
        })
        .await?;
        Ok(())
    }

    /// Node `id`'s status, if it answers within a second.
    pub async fn node_status(&self, id: usize) -> Option<v1::NodeStatusResponse> {
        let addr = self.node_addr(id)?;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(1))
            .connect()
            .await
            .ok()?;
        AdminClient::new(channel)
            .node_status(v1::NodeStatusRequest {})
            .await
            .ok()
            .map(|response| response.into_inner())
    }

    /// The leader of every shard as claimed by running nodes (highest term wins).
    pub async fn leaders(&self) -> BTreeMap<u32, usize> {
        let mut best: BTreeMap<u32, (u64, usize)> = BTreeMap::new();
        for id in self.node_ids() {
            if !self.is_running(id) {
                continue;
            }
            let Some(status) = self.node_status(id).await else {
                continue;
            };
            for replica in status.replicas {
                if let (Some(shard), "leader") = (replica.shard_id, replica.role.as_str()) {
                    let entry = best.entry(shard).or_insert((0, 0));
                    if replica.term >= entry.0 {
                        *entry = (replica.term, id);
                    }
                }
            }
        }
        best.into_iter().map(|(shard, (_, id))| (shard, id)).collect()
    }

    pub async fn wait_for_leaders(&self, timeout: Duration) -> Result<BTreeMap<u32, usize>> {
        let shards = self.spec.shards as usize;
        wait_for("a leader for every shard", timeout, || async {
            let leaders = self.leaders().await;
            (leaders.len() == shards).then_some(leaders)
        })
        .await
    }

    /// A client of the router with the given per-request timeout.
    pub async fn client(&self, timeout: Duration) -> Result<ringkv_client::Client> {
        let config = ringkv_client::ClientConfig::builder()
            .request_timeout(timeout)
            .build()?;
        Ok(ringkv_client::Client::connect_with(vec![self.router_addr.clone()], config).await?)
    }

    pub fn has_fake_clock(&self) -> bool {
        self.spec.fake_clock
    }

    /// The libfaketime offset file of node `id`.
    pub fn clock_file(&self, id: usize) -> PathBuf {
        self.dir.join(format!("node-{id}.clock"))
    }

    /// Sets node `id`'s wall-clock offset (seconds; only with `fake_clock`).
    pub fn set_clock_offset(&self, id: usize, offset_s: i64) -> Result<()> {
        if !self.spec.fake_clock {
            bail!("the cluster was not started with a fake clock");
        }
        let clock_file = self.dir.join(format!("node-{id}.clock"));
        let tmp = clock_file.with_extension("clock.tmp");
        std::fs::write(&tmp, format!("{offset_s:+}\n"))?;
        std::fs::rename(&tmp, &clock_file)?;
        Ok(())
    }

    /// Log files of every process, for the results directory.
    pub fn log_files(&self) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = self
            .node_ids()
            .iter()
            .map(|id| self.dir.join(format!("node-{id}.log")))
            .collect();
        logs.push(self.dir.join("router.log"));
        logs
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids = self.node_ids();
        for id in ids {
            // Resume paused nodes so they can die.
            let _ = self.signal(id, libc::SIGCONT);
            if let Some(node) = self.nodes.get_mut(&id) {
                if let Some(mut child) = node.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        if let Some(mut router) = self.router.take() {
            let _ = router.kill();
            let _ = router.wait();
        }
    }
}
