//! The node's gossip agent (chitchat, through `ringkv-gossip`): publishes what routers and
//! operators want to know without asking every node — address, role, ring epoch, the shards
//! it leads (with terms), load and whether it is draining — and keeps the node's view of
//! every member's liveness, which the system leader uses before declaring a node dead.
//!
//! Gossip runs over UDP on the same ip:port as the node's gRPC (TCP) listener, so a ring
//! member's address is also its gossip address: seeds are the configured `gossip_seeds` plus
//! the ring's members. A node that hears nobody although the ring has other members (a new
//! node that started without seeds and learnt the ring afterwards) restarts its agent with
//! the ring's members as seeds.
//!
//! With the cluster's gossip key (`gossip_key` in the config, required with TLS) every
//! datagram is authenticated (`ringkv_gossip::auth`): a process without the key can neither
//! join nor forge liveness or leader claims; its datagrams are dropped and counted, with a
//! rate-limited warning. The key is read once, when the agent starts (a bad file stops the
//! node's start); without one (insecure clusters) gossip is open, and the start says so.
//!
//! Shutdown: [`GossipAgent::shutdown`] stops the loop, which shuts chitchat down.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ringkv_gossip::announcement::CLUSTER_NAME;
use ringkv_gossip::{
    Announcement, Gossip, GossipConfig, GossipKeys, LeaderClaim, Liveness, Load, NodeAnnouncement,
};
use ringkv_ring::MemberState;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::node::Node;
use crate::raft::types::NodeId;

/// Shortest time between two agent restarts for lack of peers.
const RESTART_GAP: Duration = Duration::from_secs(10);

/// What gossip says about one ring member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GossipMember {
    pub liveness: Liveness,
    /// Time since its heartbeat was last seen changing.
    pub last_heard: Option<Duration>,
}

/// Every other member's liveness as gossip sees it: written by the agent, read by the
/// system leader's duties (`membership.rs`) before declaring a node dead.
#[derive(Debug, Clone, Default)]
pub struct LivenessView {
    members: Arc<RwLock<HashMap<NodeId, GossipMember>>>,
}

impl LivenessView {
    pub fn set(&self, view: HashMap<NodeId, GossipMember>) {
        *self.members.write().unwrap_or_else(PoisonError::into_inner) = view;
    }

    pub fn get(&self) -> HashMap<NodeId, GossipMember> {
        self.members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The running agent.
pub struct GossipAgent {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl GossipAgent {
    /// Starts gossip on `bound` (UDP, the gRPC listener's ip:port), advertising `advertise`;
    /// what it hears about other members goes to `liveness`.
    pub async fn start(
        node: Node,
        liveness: LivenessView,
        bound: SocketAddr,
        advertise: &str,
    ) -> Result<GossipAgent, String> {
        let advertise = advertise
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next());
        let keys = load_keys(node.config().gossip_key.as_deref())?;
        let gossip = start_gossip(&node, bound, advertise, keys.as_ref()).await?;
        let counters = node.gossip_counters();
        counters
            .authenticated
            .store(gossip.is_authenticated(), Ordering::Relaxed);
        counters.started.store(true, Ordering::Relaxed);
        info!(addr = %gossip.local_addr(), authenticated = gossip.is_authenticated(), "gossip started");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            node,
            liveness,
            gossip,
            GossipEndpoint {
                bound,
                advertise,
                keys,
            },
            cancel.clone(),
        ));
        Ok(GossipAgent { cancel, task })
    }

    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(err) = self.task.await {
            warn!(%err, "gossip agent task failed");
        }
    }
}

fn seeds(node: &Node) -> Vec<String> {
    let mut seeds = node.config().gossip_seeds.clone();
    if let Some(ring) = node.ring() {
        seeds.extend(
            ring.members()
                .filter(|member| member.node_id != node.node_id() && !member.state.is_gone())
                .map(|member| member.addr.clone()),
        );
    }
    seeds.retain(|seed| seed != node.addr());
    seeds.sort();
    seeds.dedup();
    seeds
}

/// Reads the gossip key file, if one is configured; logs which key signs, or that gossip is
/// open.
fn load_keys(path: Option<&Path>) -> Result<Option<GossipKeys>, String> {
    let Some(path) = path else {
        warn!(
            "gossip is not authenticated (no --gossip-key): anyone who can send UDP to this \
             node can forge liveness and leader claims"
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

/// Where and how gossip (re)starts.
struct GossipEndpoint {
    bound: SocketAddr,
    advertise: Option<SocketAddr>,
    keys: Option<GossipKeys>,
}

async fn start_gossip(
    node: &Node,
    bound: SocketAddr,
    advertise: Option<SocketAddr>,
    keys: Option<&GossipKeys>,
) -> Result<Gossip, String> {
    let mut config = GossipConfig::new(CLUSTER_NAME, format!("node-{}", node.node_id()), bound);
    config.auth = keys.cloned();
    // Followed: a key rotation takes effect without a restart.
    config.auth_file = node.config().gossip_key.clone();
    config.advertise = advertise;
    config.seeds = seeds(node);
    config.interval = Duration::from_millis(node.config().gossip_interval_ms);
    config.initial_state = published(node).into_iter().collect();
    Gossip::start(config).await.map_err(|err| err.to_string())
}

/// What this node announces.
fn announcement(node: &Node) -> NodeAnnouncement {
    let (led, replicas) = node.led_shards();
    let leaders: Vec<LeaderClaim> = led
        .into_iter()
        .map(|(shard_id, term)| LeaderClaim { shard_id, term })
        .collect();
    let ring = node.ring();
    let draining = ring
        .as_ref()
        .and_then(|ring| ring.member(node.node_id()).map(|member| member.state))
        .is_some_and(|state| state == MemberState::Decommissioning || state.is_gone());
    let load = Load {
        replicas,
        leaders: leaders.len() as u64,
    };
    let ring_epoch = node
        .watch_cluster()
        .borrow()
        .as_ref()
        .map_or(0, |config| config.epoch);
    NodeAnnouncement {
        node_id: node.node_id(),
        addr: node.addr().to_string(),
        cluster_id: node.cluster_id().unwrap_or_default(),
        ring_epoch,
        leaders,
        load,
        draining,
    }
}

/// The gossip keys this node publishes.
fn published(node: &Node) -> BTreeMap<String, String> {
    Announcement::Node(announcement(node)).to_state()
}

async fn run(
    node: Node,
    liveness: LivenessView,
    mut gossip: Gossip,
    endpoint: GossipEndpoint,
    cancel: CancellationToken,
) {
    let interval = Duration::from_millis(node.config().gossip_interval_ms);
    let mut last_published = BTreeMap::new();
    let mut last_restart = Instant::now();
    // Datagrams the chitchat instances before the last restart dropped.
    let mut rejected_before_restart = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        let state = published(&node);
        if state != last_published {
            gossip
                .set_many(state.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .await;
            last_published = state;
        }
        let cluster_id = node.cluster_id().unwrap_or_default();
        let mut view = HashMap::new();
        let mut heard_others = false;
        for member in gossip.members().await {
            let Some(announced) = member.node_announcement() else {
                continue;
            };
            let node_id: NodeId = announced.node_id;
            if node_id == node.node_id() || announced.cluster_id != cluster_id {
                continue;
            }
            heard_others |= member.liveness == Liveness::Alive;
            view.insert(
                node_id,
                GossipMember {
                    liveness: member.liveness,
                    last_heard: member.last_heard,
                },
            );
        }
        liveness.set(view);
        let rejected = rejected_before_restart.saturating_add(gossip.rejected_datagrams());
        node.gossip_counters()
            .rejected_datagrams
            .store(rejected, Ordering::Relaxed);
        if !heard_others && !seeds(&node).is_empty() && last_restart.elapsed() > RESTART_GAP {
            debug!("gossip hears no peer; restarting with the ring's members as seeds");
            last_restart = Instant::now();
            rejected_before_restart = rejected;
            gossip.shutdown().await;
            gossip = loop {
                let GossipEndpoint {
                    bound,
                    advertise,
                    keys,
                } = &endpoint;
                match start_gossip(&node, *bound, *advertise, keys.as_ref()).await {
                    Ok(gossip) => break gossip,
                    Err(err) => {
                        warn!(%err, "gossip restart failed; retrying");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(RESTART_GAP) => {}
                        }
                    }
                }
            };
            last_published.clear();
        }
    }
    gossip.shutdown().await;
    debug!("gossip agent stopped");
}
