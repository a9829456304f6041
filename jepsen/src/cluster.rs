//! The cluster under test: real `ringkv-node` processes (each in its own network namespace
//! when partitions are wanted, else on loopback) and one or more `ringkv-router`s in the host
//! namespace (clients spread over them, each failing over to the others). Processes are
//! killed and namespaces removed when the cluster is dropped.
//!
//! Membership changes: the network has spare slots (namespaces) beyond the initial nodes.
//! A node added later gets a fresh node id (ids are never reused) and a free slot; a node
//! the cluster records as removed or dead is stopped once it holds no shard replica, and
//! its slot becomes free again.
//!
//! Spawning, address files, init and leader waits are `ringkv-launcher`'s (shared with the
//! end-to-end tests and `kvctl playground`); this module keeps what is particular to fault
//! injection: slots in the namespace network, fates, libfaketime clocks, membership changes.
//!
//! Security: without TLS (`--insecure`), or with mutual TLS ([`ClusterSpec::tls`]):
//! `ringkv-launcher`'s `ClusterCerts` in `<dir>/certs`, node and router certificates valid for
//! loopback and every namespace address, authenticated gossip, and every client of the
//! harness (workload clients, direct reads, admin calls, status probes) presenting the
//! client certificate (user root).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ringkv_client::ClientTls;
use ringkv_launcher::binaries::Binaries;
use ringkv_launcher::{cluster as launch, ClusterCerts, Launch, Process, Security};
use ringkv_proto::v1::{self, admin_client::AdminClient};

use crate::net::Network;

/// How long a node or the router may take to write its address file.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one node status call (a partitioned node must not hold up a probe long).
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// Network slots (namespaces) in all: `nodes` plus spares for nodes added later.
    pub slots: usize,
    pub shards: u32,
    pub replication_factor: u32,
    /// Extra `ringkv-node` flags (timeouts, snapshot thresholds, unsafe negative controls).
    pub node_args: Vec<String>,
    /// Routers (at least one); logs `router.log`, then `router-2.log`, ...
    pub routers: usize,
    /// Extra `ringkv-router` flags (unsafe negative controls).
    pub router_args: Vec<String>,
    /// Directory with `ringkv-node` and `ringkv-router`.
    pub bin_dir: PathBuf,
    /// Run nodes under libfaketime so the clock nemesis can skew their wall clocks.
    pub fake_clock: bool,
    /// Put each node's data directory on a `ringkv-faultfs` mount, so the disk nemeses can
    /// drop what a node wrote but did not fsync (a power cut), fail or slow its syncs and fill
    /// its disk ([`Cluster::lose_unsynced`], [`Cluster::fail_syncs`], [`Cluster::slow_syncs`],
    /// [`Cluster::fill_disk`]).
    pub disk_faults: bool,
    /// Mutual TLS between every process and from the harness (else `--insecure`).
    pub tls: bool,
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

/// What the harness does with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// A cluster member: faults may hit it, heals restart it.
    Member,
    /// Killed for good by the replace nemesis; restarted once the cluster declared it dead,
    /// to check that it deletes its stale replicas and serves nothing.
    Replaced,
    /// A replaced node running again after the cluster declared it dead.
    Returned,
    /// Restarted by the wipe nemesis under its old id with an empty data directory: no fault
    /// target; the cluster must refuse it as a voter and declare it dead, and it is stopped
    /// once it holds no replica.
    Wiped,
    /// Removed or dead, holds no replica, stopped; its slot is free.
    Retired,
}

struct NodeProc {
    /// Network slot (namespace index); 0 on loopback.
    slot: usize,
    addr: String,
    data_dir: PathBuf,
    process: Option<Process>,
    /// The faultfs mount under `data_dir` (disk faults only). Declared after `process`, so
    /// the node is killed before its filesystem is unmounted.
    disk: Option<ringkv_faultfs::FaultMount>,
    fate: Fate,
}

/// A running cluster.
pub struct Cluster {
    spec: ClusterSpec,
    binaries: Binaries,
    dir: PathBuf,
    placement: Placement,
    nodes: BTreeMap<usize, NodeProc>,
    /// Router `i` at position `i`; `None` while the router nemesis has it killed.
    routers: Vec<Option<Process>>,
    /// Every router's address, in start order (a restarted router listens there again).
    pub router_addrs: Vec<String>,
    /// Clients handed out so far (each starts at the next router).
    clients_made: std::sync::atomic::AtomicUsize,
    /// Addresses of every node not retired, shared with the direct-read clients.
    addr_book: Arc<RwLock<Vec<String>>>,
    /// What a failed sync does with the unsynced data ([`Cluster::fail_syncs`]).
    failed_sync_data: ringkv_faultfs::FailedSyncData,
    /// How the processes talk.
    security: Security,
    /// The harness's client certificate (with TLS).
    client_tls: Option<ClientTls>,
}

impl Cluster {
    /// Starts the nodes, initialises the cluster, starts the router and waits until every
    /// shard has a leader.
    pub async fn start(spec: ClusterSpec, dir: &Path, placement: Placement) -> Result<Cluster> {
        let binaries = Binaries::find(
            std::slice::from_ref(&spec.bin_dir),
            "build with `cargo build --release --bins`",
        )?;
        // Absolute: node processes get paths (data dir, clock file) through flags and env.
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        let security = if spec.tls {
            let hosts: Vec<String> = match &placement {
                Placement::Loopback => Vec::new(),
                Placement::Namespaces(net) => (1..=net.node_count())
                    .map(|slot| net.host_ip(slot).to_string())
                    .collect(),
            };
            Security::Tls(ClusterCerts::create_for_hosts(
                &dir.join("certs"),
                "ringkv-jepsen",
                &hosts,
            )?)
        } else {
            Security::Insecure
        };
        let client_tls = security.client_tls()?;
        let mut cluster = Cluster {
            spec,
            binaries,
            dir: dir.clone(),
            placement,
            nodes: BTreeMap::new(),
            routers: Vec::new(),
            router_addrs: Vec::new(),
            clients_made: std::sync::atomic::AtomicUsize::new(0),
            addr_book: Arc::default(),
            failed_sync_data: ringkv_faultfs::FailedSyncData::Lost,
            security,
            client_tls,
        };
        for id in 1..=cluster.spec.nodes {
            cluster.place_node(id)?;
            cluster.start_node(id).await?;
        }
        cluster.init().await?;
        for index in 0..cluster.spec.routers.max(1) {
            cluster.start_router(index).await?;
        }
        cluster.wait_for_leaders(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    /// Registers node `id` in a free slot (not started yet).
    fn place_node(&mut self, id: usize) -> Result<()> {
        let (slot, addr) = match &self.placement {
            Placement::Loopback => (0, String::new()),
            Placement::Namespaces(net) => {
                let slot = (1..=net.node_count())
                    .find(|slot| {
                        !self
                            .nodes
                            .values()
                            .any(|node| node.slot == *slot && node.fate != Fate::Retired)
                    })
                    .ok_or_else(|| anyhow!("no free network slot for node {id}"))?;
                (slot, format!("{}:7001", net.host_ip(slot)))
            }
        };
        self.nodes.insert(
            id,
            NodeProc {
                slot,
                addr,
                data_dir: self.dir.join(format!("node-{id}")),
                process: None,
                disk: None,
                fate: Fate::Member,
            },
        );
        Ok(())
    }

    /// Member nodes (the ones faults may hit), whether running or not.
    pub fn node_ids(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.fate == Fate::Member)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every node the harness ever started, with its fate.
    pub fn fates(&self) -> BTreeMap<usize, Fate> {
        self.nodes.iter().map(|(id, node)| (*id, node.fate)).collect()
    }

    /// Whether a free slot exists for another node.
    pub fn has_free_slot(&self) -> bool {
        let used = self
            .nodes
            .values()
            .filter(|node| node.fate != Fate::Retired)
            .count();
        used < self.spec.slots
    }

    /// The addresses of every node not retired; updated as nodes come and go.
    pub fn addr_book(&self) -> Arc<RwLock<Vec<String>>> {
        self.addr_book.clone()
    }

    fn update_addr_book(&self) {
        let addrs = self
            .nodes
            .values()
            .filter(|node| node.fate != Fate::Retired && !node.addr.is_empty())
            .map(|node| node.addr.clone())
            .collect();
        *self
            .addr_book
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = addrs;
    }

    /// Drops traffic between each pair of nodes (node ids), both ways.
    pub fn block(&self, pairs: &[(usize, usize)]) -> Result<()> {
        let net = self
            .network()
            .ok_or_else(|| anyhow!("partitions need the namespace network (run as root)"))?;
        let slots = pairs
            .iter()
            .map(|(a, b)| Ok((self.slot(*a)?, self.slot(*b)?)))
            .collect::<Result<Vec<_>>>()?;
        net.block(&slots)?;
        Ok(())
    }

    /// Drops packets from node `from` to node `to` only.
    pub fn isolate_one_way(&self, from: usize, to: usize) -> Result<()> {
        let net = self
            .network()
            .ok_or_else(|| anyhow!("partitions need the namespace network (run as root)"))?;
        net.isolate_one_way(self.slot(from)?, self.slot(to)?)?;
        Ok(())
    }

    fn slot(&self, id: usize) -> Result<usize> {
        self.nodes
            .get(&id)
            .map(|node| node.slot)
            .ok_or_else(|| anyhow!("no node {id}"))
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
        self.nodes.get(&id).is_some_and(|node| node.process.is_some())
    }

    /// Starts (or restarts) node `id` and waits until it listens.
    pub async fn start_node(&mut self, id: usize) -> Result<()> {
        let log = self.dir.join(format!("node-{id}.log"));
        let clock_file = self.clock_file(id);
        let node = self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        if node.process.is_some() || node.fate == Fate::Retired {
            return Ok(());
        }
        std::fs::create_dir_all(&node.data_dir)?;
        if self.spec.disk_faults && node.disk.is_none() {
            let backing = self.dir.join(format!("node-{id}.disk"));
            std::fs::create_dir_all(&backing)?;
            let mount = ringkv_faultfs::FaultMount::mount(&backing, &node.data_dir)
                .with_context(|| format!("mounting faultfs for node {id} on {}", node.data_dir.display()))?;
            node.disk = Some(mount);
        }
        let addr_file = node.data_dir.join("addr");
        let _ = std::fs::remove_file(&addr_file);
        let mut launch = Launch::new(format!("node {id}"), &self.binaries.node);
        let listen = match &self.placement {
            Placement::Loopback => "127.0.0.1:0".to_string(),
            Placement::Namespaces(net) => {
                launch = launch.prefix(net.exec_prefix(node.slot));
                node.addr.clone()
            }
        };
        launch = launch
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(&listen)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--addr-file")
            .arg(&addr_file)
            .args(self.security.node_args())
            .args(&self.spec.node_args)
            .log(log);
        if self.spec.fake_clock {
            // Only the wall clock is faked (what NTP trouble does); monotonic time stays true.
            if !clock_file.exists() {
                std::fs::write(&clock_file, "+0\n")?;
            }
            launch = launch
                .env("LD_PRELOAD", libfaketime()?)
                .env("FAKETIME_TIMESTAMP_FILE", &clock_file)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_CACHE_DURATION", "1");
        }
        let process = node.process.insert(launch.spawn()?);
        let addr = process.wait_for_addr_file(&addr_file, LISTEN_TIMEOUT).await?;
        if !node.addr.is_empty() && node.addr != addr {
            bail!("node {id} came back on {addr}, not {}", node.addr);
        }
        node.addr = addr;
        self.update_addr_book();
        Ok(())
    }

    /// Sends `signal` to node `id`'s process.
    pub fn signal(&self, id: usize, signal: i32) -> Result<()> {
        let process = self
            .nodes
            .get(&id)
            .and_then(|node| node.process.as_ref())
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        process.signal(signal)?;
        Ok(())
    }

    /// `kill -9` node `id` and reap it.
    pub fn kill_node(&mut self, id: usize) -> Result<()> {
        let process = self
            .nodes
            .get_mut(&id)
            .and_then(|node| node.process.as_mut())
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        process.kill().context("killing the node")?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.process = None;
        }
        Ok(())
    }

    /// Drops everything node `id` wrote since its last fsync (a power cut of its machine);
    /// the node must be stopped. Returns what was lost, for the schedule.
    pub fn lose_unsynced(&mut self, id: usize) -> Result<String> {
        let node = self.nodes.get(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        if node.process.is_some() {
            bail!("node {id} is running: stop it before dropping its unsynced data");
        }
        let disk = node
            .disk
            .as_ref()
            .ok_or_else(|| anyhow!("node {id} has no faultfs mount (run with a lose-unsynced nemesis)"))?;
        let report = disk.control().drop_unsynced();
        Ok(format!(
            "node {id} lost {} unsynced bytes ({} files reverted, {} never-synced files removed)",
            report.dropped_bytes, report.reverted_files, report.dropped_files
        ))
    }

    /// Makes node `id`'s file syncs fail with `EIO`, or heals them. The unsynced data of a
    /// failed sync is lost at once, or kept readable until [`Cluster::lose_unsynced`] — as
    /// [`Cluster::set_failed_sync_data`] said.
    pub fn fail_syncs(&mut self, id: usize, fail: bool) -> Result<()> {
        let control = self.disk_control(id)?;
        match (fail, self.failed_sync_data) {
            (true, ringkv_faultfs::FailedSyncData::Kept) => control.fail_syncs_keeping_unsynced(),
            _ => control.fail_syncs(fail),
        }
        Ok(())
    }

    /// What [`Cluster::fail_syncs`] does with the unsynced data of a failed sync from now on:
    /// lose it at once (the default: Linux's worst case, a node that reads its recent log
    /// back finds it gone) or keep it readable until the data is dropped (the page cache: a
    /// node that ignores the error sees nothing wrong and goes on serving).
    pub fn set_failed_sync_data(&mut self, data: ringkv_faultfs::FailedSyncData) {
        self.failed_sync_data = data;
    }

    /// Makes every fsync/fdatasync of node `id` take `delay` before it succeeds (a slow disk;
    /// its reads and writes are not slowed); [`Duration::ZERO`] makes them fast again. A node
    /// killed meanwhile exits only once its pending sync is answered (at most `delay` later).
    pub fn slow_syncs(&mut self, id: usize, delay: Duration) -> Result<()> {
        self.disk_control(id)?.slow_syncs(delay);
        Ok(())
    }

    /// Makes node `id`'s disk full once its writes have taken `headroom_bytes` more of new
    /// space (`0`: at once): writes that need new space and file creation fail with `ENOSPC`,
    /// reads keep working. A node writing to it stops itself at its next write (exit code 74;
    /// an idle node may run on). To heal: [`Cluster::reap_node`] (or kill it), then
    /// [`Cluster::unfill_disk`] before [`Cluster::start_node`] — a node started on a full
    /// disk stops again at once.
    pub fn fill_disk(&mut self, id: usize, headroom_bytes: u64) -> Result<()> {
        self.disk_control(id)?.fill(headroom_bytes);
        Ok(())
    }

    /// Gives node `id`'s disk unlimited space again (undoes [`Cluster::fill_disk`]).
    pub fn unfill_disk(&mut self, id: usize) -> Result<()> {
        self.disk_control(id)?.unfill();
        Ok(())
    }

    /// Undoes every disk fault of node `id` — failing syncs, slow syncs, a full disk — without
    /// touching its process or its unsynced data: the disk works normally from now on.
    pub fn heal_disk(&mut self, id: usize) -> Result<()> {
        let control = self.disk_control(id)?;
        control.heal_syncs();
        control.unfill();
        Ok(())
    }

    /// Undoes the disk faults of every node with a faultfs mount ([`Cluster::heal_disk`]);
    /// before restarting the nodes at the end of a run, so none starts on a full disk.
    pub fn heal_disks(&mut self) -> Result<()> {
        let ids: Vec<usize> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.disk.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.heal_disk(id)?;
        }
        Ok(())
    }

    /// The fault controls of node `id`'s faultfs mount.
    fn disk_control(&self, id: usize) -> Result<ringkv_faultfs::Control> {
        let node = self.nodes.get(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        let disk = node
            .disk
            .as_ref()
            .ok_or_else(|| anyhow!("node {id} has no faultfs mount (run with a disk nemesis)"))?;
        Ok(disk.control())
    }

    /// Reaps node `id` if its process has exited by itself; its exit code (`None` inside when
    /// killed by a signal). `None`: not running, or still running.
    pub fn reap_node(&mut self, id: usize) -> Result<Option<Option<i32>>> {
        let Some(node) = self.nodes.get_mut(&id) else {
            bail!("no node {id}");
        };
        let Some(process) = node.process.as_mut() else {
            return Ok(None);
        };
        let Some(status) = process.try_wait().context("checking the node's process")? else {
            return Ok(None);
        };
        node.process = None;
        Ok(Some(status.code()))
    }

    /// Each node's disk counters (fsyncs, fdatasyncs, bytes dropped), for the summary.
    pub fn disk_stats(&self) -> Vec<(usize, ringkv_faultfs::Stats)> {
        self.nodes
            .iter()
            .filter_map(|(id, node)| Some((*id, node.disk.as_ref()?.control().stats())))
            .collect()
    }

    /// Bootstraps the cluster through node 1.
    async fn init(&self) -> Result<()> {
        let addrs: Vec<String> = self.nodes.values().map(|node| node.addr.clone()).collect();
        launch::init_cluster(
            &addrs,
            self.spec.shards,
            self.spec.replication_factor,
            self.client_tls.as_ref(),
        )
        .await
        .context("cluster init")?;
        Ok(())
    }

    /// The log file of router `index` (from 0).
    fn router_log(&self, index: usize) -> PathBuf {
        match index {
            0 => self.dir.join("router.log"),
            _ => self.dir.join(format!("router-{}.log", index + 1)),
        }
    }

    /// Starts router `index` (from 0): a new one on a free port, or one the router nemesis
    /// killed again on its old address (its clients know only that one). Its seeds are the
    /// nodes running now.
    pub async fn start_router(&mut self, index: usize) -> Result<()> {
        if self.routers.get(index).is_some_and(Option::is_some) {
            return Ok(());
        }
        let listen = self
            .router_addrs
            .get(index)
            .cloned()
            .unwrap_or_else(|| "127.0.0.1:0".to_string());
        let addr_file = self.dir.join(format!("router-{index}.addr"));
        let _ = std::fs::remove_file(&addr_file);
        let nodes: Vec<String> = self
            .nodes
            .values()
            .filter(|node| node.process.is_some())
            .map(|node| node.addr.clone())
            .collect();
        let mut router = Launch::new("router", &self.binaries.router)
            .args(["--listen", &listen, "--nodes"])
            .arg(nodes.join(","))
            .arg("--addr-file")
            .arg(&addr_file)
            .args(self.security.router_args())
            .args(self.spec.router_args.iter())
            .log(self.router_log(index))
            .spawn()?;
        let addr = router.wait_for_addr_file(&addr_file, LISTEN_TIMEOUT).await?;
        match self.routers.get_mut(index) {
            Some(slot) => *slot = Some(router),
            None => {
                self.routers.push(Some(router));
                self.router_addrs.push(addr);
            }
        }
        Ok(())
    }

    /// Routers started (running or killed).
    pub fn router_count(&self) -> usize {
        self.routers.len()
    }

    /// Whether router `index` runs (it may be paused).
    pub fn router_running(&self, index: usize) -> bool {
        self.routers.get(index).is_some_and(Option::is_some)
    }

    /// `kill -9` router `index` and reap it.
    pub fn kill_router(&mut self, index: usize) -> Result<()> {
        let mut router = self
            .routers
            .get_mut(index)
            .and_then(Option::take)
            .ok_or_else(|| anyhow!("router {index} is not running"))?;
        router.kill().context("killing the router")?;
        Ok(())
    }

    /// Sends `signal` to router `index`.
    pub fn signal_router(&self, index: usize, signal: i32) -> Result<()> {
        let router = self
            .routers
            .get(index)
            .and_then(Option::as_ref)
            .ok_or_else(|| anyhow!("router {index} is not running"))?;
        router.signal(signal)?;
        Ok(())
    }

    /// Node `id`'s status, if it answers within a second.
    pub async fn node_status(&self, id: usize) -> Option<v1::NodeStatusResponse> {
        let addr = self.node_addr(id)?;
        launch::node_status(&addr, STATUS_TIMEOUT, self.client_tls.as_ref())
            .await
            .ok()
    }

    /// Statuses of every running node that answers, by node id.
    pub async fn statuses(&self) -> BTreeMap<usize, v1::NodeStatusResponse> {
        let running: Vec<usize> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.process.is_some())
            .map(|(id, _)| *id)
            .collect();
        let answers = futures::future::join_all(running.iter().map(|id| self.node_status(*id))).await;
        running
            .into_iter()
            .zip(answers)
            .filter_map(|(id, status)| status.map(|status| (id, status)))
            .collect()
    }

    /// The ring with the highest epoch any running node reports.
    pub async fn ring(&self) -> Option<v1::RingInfo> {
        self.statuses()
            .await
            .into_values()
            .filter_map(|status| status.ring)
            .max_by_key(|ring| ring.epoch)
    }

    /// Ring members that own tokens (joining or active), by node id.
    pub async fn ring_owners(&self) -> Vec<usize> {
        self.ring()
            .await
            .map(|ring| {
                ring.members
                    .iter()
                    .filter(|member| {
                        matches!(member.state(), v1::MemberState::Joining | v1::MemberState::Active)
                    })
                    .map(|member| member.node_id as usize)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn replication_factor(&self) -> usize {
        self.spec.replication_factor as usize
    }

    /// Addresses of running members other than `avoid`, to send admin requests to.
    fn member_addrs(&self, avoid: Option<usize>) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(id, node)| Some(**id) != avoid && node.fate == Fate::Member && node.process.is_some())
            .map(|(_, node)| node.addr.clone())
            .collect()
    }

    async fn admin(&self, addr: &str) -> Result<AdminClient<tonic::transport::Channel>> {
        let channel = connect(
            addr,
            self.client_tls.as_ref(),
            Duration::from_secs(1),
            Duration::from_secs(15),
        )
        .await?;
        Ok(AdminClient::new(channel))
    }

    /// The harness's client certificate, `None` without TLS.
    pub fn client_tls(&self) -> Option<ClientTls> {
        self.client_tls.clone()
    }

    /// Starts a node with a fresh id (ids are never reused) in a free slot and asks the
    /// cluster to add it (`AddNode`, sent to each running member in turn). When the cluster
    /// refuses, the node is stopped and its slot freed again.
    pub async fn add_node(&mut self) -> Result<usize> {
        let id = self.nodes.keys().max().copied().unwrap_or(0) + 1;
        self.place_node(id)?;
        if let Err(err) = self.start_node(id).await {
            self.retire(id);
            return Err(err);
        }
        let addr = self.node_addr(id).unwrap_or_default();
        let mut last_error = String::from("no running member to ask");
        for member in self.member_addrs(Some(id)) {
            let request = v1::AddNodeRequest {
                node_id: id as u64,
                addr: addr.clone(),
            };
            match self.admin(&member).await {
                Ok(mut admin) => match admin.add_node(request).await {
                    Ok(_) => return Ok(id),
                    Err(status) => last_error = format!("{member}: {}", status.message()),
                },
                Err(err) => last_error = format!("{member}: {err}"),
            }
        }
        // The outcome may be unknown (a timeout after the change committed): a node the ring
        // lists stays, as a member.
        let listed = self
            .ring()
            .await
            .is_some_and(|ring| ring.members.iter().any(|member| member.node_id == id as u64));
        if listed {
            return Ok(id);
        }
        self.retire(id);
        bail!("adding node {id}: {last_error}")
    }

    /// Asks the cluster to decommission node `id` (`DecommissionNode`, sent to each running
    /// member in turn). The node keeps running until [`Cluster::reap`] sees it removed.
    pub async fn decommission(&self, id: usize) -> Result<()> {
        let mut last_error = String::from("no running member to ask");
        let mut members = self.member_addrs(Some(id));
        members.extend(self.member_addrs(None));
        for member in members {
            match self.admin(&member).await {
                Ok(mut admin) => match admin
                    .decommission_node(v1::DecommissionNodeRequest { node_id: id as u64 })
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(status) => last_error = format!("{member}: {}", status.message()),
                },
                Err(err) => last_error = format!("{member}: {err}"),
            }
        }
        bail!("decommissioning node {id}: {last_error}")
    }

    /// Asks node `from` (the leader of `shard`) to hand the leadership to `to`; returns the
    /// new term.
    pub async fn transfer_leader(&self, shard: u32, from: usize, to: usize) -> Result<u64> {
        let addr = self.node_addr(from).ok_or_else(|| anyhow!("no node {from}"))?;
        let response = self
            .admin(&addr)
            .await?
            .transfer_leader(v1::TransferLeaderRequest {
                shard_id: shard,
                to_node: to as u64,
            })
            .await
            .map_err(|status| anyhow!("{}", status.message()))?;
        Ok(response.into_inner().term)
    }

    /// `kill -9` node `id` for good: it stays down (and is no fault target) until the cluster
    /// declares it dead, when [`Cluster::reap`] restarts it.
    pub fn abandon(&mut self, id: usize) -> Result<()> {
        self.kill_node(id)?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.fate = Fate::Replaced;
        }
        Ok(())
    }

    /// `kill -9` member `id`, empties its data directory (a lost disk) and starts it again
    /// under the same id and address; from now on it is [`Fate::Wiped`]. What the wiped
    /// directory held is gone for good (the results keep the node's log only).
    pub async fn wipe_node(&mut self, id: usize) -> Result<()> {
        if self.is_running(id) {
            self.kill_node(id)?;
        }
        let node = self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        // The directory may be a faultfs mount point, which cannot be removed itself.
        empty_dir(&node.data_dir).with_context(|| format!("wiping {}", node.data_dir.display()))?;
        node.fate = Fate::Wiped;
        self.start_node(id).await
    }

    /// The log file of node `id` (appended to across restarts).
    pub fn node_log(&self, id: usize) -> PathBuf {
        self.dir.join(format!("node-{id}.log"))
    }

    /// Stops node `id` and frees its slot (its data directory stays for the results).
    fn retire(&mut self, id: usize) {
        if let Some(node) = self.nodes.get_mut(&id) {
            // Dropping the process kills and reaps it.
            node.process = None;
            node.fate = Fate::Retired;
        }
        self.update_addr_book();
    }

    /// Follows what the cluster decided about membership: restarts a replaced node once the
    /// ring records it dead (it must then delete its stale replicas and serve nothing), and
    /// stops every node the ring records removed or dead once it holds no shard replica.
    /// Returns a line per action.
    pub async fn reap(&mut self) -> Result<Vec<String>> {
        let statuses = self.statuses().await;
        let Some(ring) = statuses
            .values()
            .filter_map(|status| status.ring.as_ref())
            .max_by_key(|ring| ring.epoch)
            .cloned()
        else {
            return Ok(Vec::new());
        };
        let gone = |id: usize| {
            ring.members.iter().any(|member| {
                member.node_id == id as u64
                    && matches!(member.state(), v1::MemberState::Removed | v1::MemberState::Dead)
            })
        };
        let mut actions = Vec::new();
        let ids: Vec<(usize, Fate)> = self.fates().into_iter().collect();
        for (id, fate) in ids {
            if !gone(id) {
                continue;
            }
            match fate {
                Fate::Replaced => {
                    if let Some(node) = self.nodes.get_mut(&id) {
                        node.fate = Fate::Returned;
                    }
                    self.start_node(id).await?;
                    actions.push(format!("restarted node {id}, which the cluster declared dead"));
                }
                Fate::Member | Fate::Returned | Fate::Wiped if self.is_running(id) => {
                    let holds_shards = statuses
                        .get(&id)
                        .map(|status| status.replicas.iter().any(|replica| replica.shard_id.is_some()));
                    if holds_shards == Some(false) {
                        self.retire(id);
                        actions.push(format!("stopped node {id}: gone from the ring, no replicas left"));
                    }
                }
                _ => {}
            }
        }
        Ok(actions)
    }

    /// Running member nodes: (node id, address).
    fn running_members(&self) -> Vec<(u64, String)> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.fate == Fate::Member && node.process.is_some())
            .map(|(id, node)| (*id as u64, node.addr.clone()))
            .collect()
    }

    /// The leader of every shard as claimed by running nodes (highest term wins).
    pub async fn leaders(&self) -> BTreeMap<u32, usize> {
        launch::shard_leaders(&self.running_members(), STATUS_TIMEOUT, self.client_tls.as_ref())
            .await
            .into_iter()
            .map(|(shard, id)| (shard, id as usize))
            .collect()
    }

    /// The leader of the system group (which serves the timestamp oracle), if one claims it.
    pub async fn system_leader(&self) -> Option<usize> {
        launch::system_leader(&self.running_members(), STATUS_TIMEOUT, self.client_tls.as_ref())
            .await
            .map(|id| id as usize)
    }

    /// Every node leading a shard or the system group.
    pub async fn leading_nodes(&self) -> Vec<usize> {
        let mut leading: std::collections::BTreeSet<usize> = self.leaders().await.into_values().collect();
        leading.extend(self.system_leader().await);
        leading.into_iter().collect()
    }

    pub async fn wait_for_leaders(&self, timeout: Duration) -> Result<BTreeMap<u32, usize>> {
        let leaders = launch::wait_for_leaders(
            &self.running_members(),
            self.spec.shards,
            timeout,
            STATUS_TIMEOUT,
            self.client_tls.as_ref(),
        )
        .await?;
        Ok(leaders
            .into_iter()
            .map(|(shard, id)| (shard, id as usize))
            .collect())
    }

    /// A client of the routers with the given per-request timeout: each client starts at the
    /// next router in turn and fails over to the others.
    pub async fn client(&self, timeout: Duration) -> Result<ringkv_client::Client> {
        let mut config = ringkv_client::ClientConfig::builder().request_timeout(timeout);
        if let Some(tls) = &self.client_tls {
            config = config.tls(tls.clone());
        }
        let config = config.build()?;
        let mut routers = self.router_addrs.clone();
        if !routers.is_empty() {
            let made = self
                .clients_made
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let first = made % routers.len();
            routers.rotate_left(first);
        }
        Ok(ringkv_client::Client::connect_with(routers, config).await?)
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
        let clock_file = self.clock_file(id);
        let tmp = clock_file.with_extension("clock.tmp");
        std::fs::write(&tmp, format!("{offset_s:+}\n"))?;
        std::fs::rename(&tmp, &clock_file)?;
        Ok(())
    }

    /// Log files of every process, for the results directory.
    pub fn log_files(&self) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = self
            .nodes
            .keys()
            .map(|id| self.dir.join(format!("node-{id}.log")))
            .collect();
        logs.extend((0..self.routers.len()).map(|index| self.router_log(index)));
        logs
    }
}

/// A channel to one node (`host:port`): https presenting `tls`'s certificate, else plain
/// http; connected within `connect_timeout`, each call bounded by `timeout`.
pub async fn connect(
    addr: &str,
    tls: Option<&ClientTls>,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let endpoint = match tls {
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&tls.ca_pem))
                .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem)),
        )?,
        None => Endpoint::from_shared(format!("http://{addr}"))?,
    };
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .connect()
        .await?)
}

/// Removes everything inside `dir`, keeping `dir` itself.
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Processes first (each is resumed if paused, killed and reaped as it drops), then
        // the fields, among them the namespaces the nodes ran in.
        for node in self.nodes.values_mut() {
            node.process = None;
        }
        self.routers.clear();
    }
}
