//! The router's gossip agent (chitchat, through `ringkv-gossip`) on UDP at the router's
//! listen ip:port. Nodes gossip the shards they lead (with the term), their ring epoch and
//! address; the router adopts those leader claims directly. Only a newer ring epoch or a
//! change in which nodes are alive triggers a `NodeStatus` poll (the ring itself is read
//! from the nodes, which hold it from the system group). The liveness view feeds
//! `ClusterStatus`.
//!
//! With the cluster's gossip key (`gossip_key`, required with TLS) every datagram is
//! authenticated (`ringkv_gossip::auth`): leader claims come only from holders of the key;
//! anything else is dropped and counted, with a rate-limited warning. Without it (insecure
//! clusters) gossip is open, and the start says so.
//!
//! Shutdown: [`RouterGossip::shutdown`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ringkv_gossip::announcement::CLUSTER_NAME;
use ringkv_gossip::{Announcement, Gossip, GossipConfig, GossipKeys, Liveness};
use ringkv_ring::NodeId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::topology::TopologyHandle;

/// One node as gossip sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLiveness {
    pub liveness: Liveness,
    pub last_heard: Option<Duration>,
}

/// Every node's liveness as the router's gossip sees it (empty without gossip).
#[derive(Debug, Default)]
pub struct GossipView {
    nodes: RwLock<HashMap<NodeId, NodeLiveness>>,
}

impl GossipView {
    pub fn get(&self, node_id: NodeId) -> Option<NodeLiveness> {
        match self.nodes.read() {
            Ok(nodes) => nodes.get(&node_id).copied(),
            Err(poisoned) => poisoned.into_inner().get(&node_id).copied(),
        }
    }

    fn replace(&self, view: HashMap<NodeId, NodeLiveness>) {
        match self.nodes.write() {
            Ok(mut nodes) => *nodes = view,
            Err(poisoned) => *poisoned.into_inner() = view,
        }
    }
}

/// The running agent.
#[derive(Debug)]
pub struct RouterGossip {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl RouterGossip {
    /// Starts gossip on `bound` (UDP) with `seeds` (node addresses double as gossip
    /// addresses), authenticated with the keys in `gossip_key` if given.
    pub async fn start(
        bound: SocketAddr,
        seeds: Vec<String>,
        interval: Duration,
        topology: TopologyHandle,
        view: Arc<GossipView>,
        gossip_key: Option<&Path>,
    ) -> Result<RouterGossip, String> {
        let mut config = GossipConfig::new(CLUSTER_NAME, format!("router-{bound}"), bound);
        config.auth = load_keys(gossip_key)?;
        // Followed: a key rotation takes effect without a restart.
        config.auth_file = gossip_key.map(Path::to_path_buf);
        config.seeds = seeds;
        config.interval = interval;
        config.initial_state = Announcement::Router.to_state().into_iter().collect();
        let gossip = Gossip::start(config).await.map_err(|err| err.to_string())?;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(gossip, interval, topology, view, cancel.clone()));
        Ok(RouterGossip { cancel, task })
    }

    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(err) = self.task.await {
            warn!(%err, "router gossip task failed");
        }
    }
}

/// Reads the gossip key file, if one is configured; logs which key signs, or that gossip is
/// open.
pub fn load_keys(path: Option<&Path>) -> Result<Option<GossipKeys>, String> {
    let Some(path) = path else {
        warn!(
            "gossip is not authenticated (no --gossip-key): anyone who can send UDP to this \
             router can feed it forged leader claims"
        );
        return Ok(None);
    };
    let keys = GossipKeys::load(path).map_err(|err| err.to_string())?;
    info!(
        path = %path.display(),
        key_id = %keys.current().id_hex(),
        also_accepted = ?keys.also_accepted().map(|key| key.id_hex()),
        "gossip is authenticated"
    );
    Ok(Some(keys))
}

async fn run(
    gossip: Gossip,
    interval: Duration,
    topology: TopologyHandle,
    view: Arc<GossipView>,
    cancel: CancellationToken,
) {
    let mut changes = gossip.watch();
    let mut last_alive: Vec<NodeId> = Vec::new();
    loop {
        let changed = tokio::select! {
            _ = cancel.cancelled() => break,
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                true
            }
            _ = tokio::time::sleep(interval) => false,
        };
        let mut nodes = HashMap::new();
        let mut reports = Vec::new();
        for member in gossip.members().await {
            let Some(announced) = member.node_announcement() else {
                continue;
            };
            let node_id: NodeId = announced.node_id;
            // A dead node's last words (its old leader claims) stay in gossip: only live
            // nodes are believed.
            if member.liveness == Liveness::Alive {
                reports.push(announced);
            }
            nodes.insert(
                node_id,
                NodeLiveness {
                    liveness: member.liveness,
                    last_heard: member.last_heard,
                },
            );
        }
        let mut alive: Vec<NodeId> = nodes
            .iter()
            .filter(|(_, node)| node.liveness == Liveness::Alive)
            .map(|(id, _)| *id)
            .collect();
        alive.sort_unstable();
        view.replace(nodes);
        if changed {
            let outcome = topology.apply_gossip(&reports);
            if outcome.leaders_changed > 0 {
                debug!(
                    leaders_changed = outcome.leaders_changed,
                    "leaders learnt from gossip"
                );
            }
            if outcome.ring_behind || alive != last_alive {
                debug!(
                    ring_behind = outcome.ring_behind,
                    "gossip: refreshing the topology"
                );
                topology.request_refresh();
            }
        } else if alive != last_alive {
            // A liveness change first seen on a timer tick: poll too.
            topology.request_refresh();
        }
        last_alive = alive;
    }
    gossip.shutdown().await;
}
