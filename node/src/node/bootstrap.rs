//! Identity, bootstrap and ring changes: everything that goes through the system group.
//!
//! Bootstrap (`kvctl cluster init` → [`Node::init_cluster`] on one node):
//! 1. pick a cluster id (or reuse the one already recorded) and record it;
//! 2. `JoinCluster` every other initial member, which records the same id (a node that
//!    already belongs to another cluster refuses, and init fails saying so);
//! 3. initialise the system group with every initial member as a voter;
//! 4. commit `SetCluster` (cluster id, S, RF, V, members) in the system group.
//!
//! Every node applies the config and the reconciler (`reconcile/`) creates the groups of the
//! shards it hosts; a shard's first replica in ring order initialises the shard group.
//! Each step is idempotent, so init can be repeated after a crash or on restart.
//!
//! Before step 1 the bootstrapping node asks every member where it stands (a `JoinCluster`
//! probe, which records nothing) and decides from all the answers ([`plan_init`]) — so init
//! takes effect on every member or on none. It is refused, with nothing recorded anywhere,
//! when a member cannot be reached, when members carry different cluster ids, when a member
//! belongs to an initialised cluster this node is not part of (init never mints a cluster
//! beside an existing one), and when a member has an empty data directory although the
//! system group was already started (a node that lost its data must not come back as a
//! voter without its log and vote; it is added again under a new id). A member that
//! recorded the id of an init that crashed before it committed is reused: the id is
//! adopted, so a repeated init completes the first.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use openraft::BasicNode;
use ringkv_proto::v1;
use ringkv_ring::{MemberState, Ring, RingConfig, RingMember, DEFAULT_VNODES_PER_NODE};
use tracing::{debug, info};

use super::Node;
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::group;
use crate::peers::{MemberStanding, Peer};
use crate::raft::types::{
    ClusterConfig, Command, CommandResult, GroupId, NodeId, RingChange, RingChangeKind, RingChangeOutcome,
};
use crate::storage::{StorageError, TreeRef};

const NODE_ID_KEY: &[u8] = b"node_id";
const CLUSTER_ID_KEY: &[u8] = b"cluster_id";
/// Deadline of a bootstrap or of a system proposal (retried until then).
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks the node id recorded in the data directory (recording it the first time) and
/// returns the recorded cluster id, if any.
pub fn check_identity(catalog: &TreeRef, config: &NodeConfig) -> Result<Option<String>, NodeError> {
    match catalog.get(NODE_ID_KEY)? {
        Some(bytes) => {
            let recorded = <[u8; 8]>::try_from(bytes.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| StorageError::Corrupt {
                    tree: catalog.name().to_string(),
                    detail: "node id record".to_string(),
                })?;
            if recorded != config.node_id {
                return Err(NodeError::InvalidArgument(format!(
                    "data directory {} belongs to node {recorded}, not node {}",
                    config.data_dir.display(),
                    config.node_id
                )));
            }
        }
        None => catalog.insert(NODE_ID_KEY, &config.node_id.to_be_bytes())?,
    }
    let cluster_id = catalog
        .get(CLUSTER_ID_KEY)?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    if let (Some(expected), Some(recorded)) = (&config.cluster_id, &cluster_id) {
        if expected != recorded {
            return Err(NodeError::ClusterMismatch {
                ours: recorded.clone(),
                theirs: expected.clone(),
            });
        }
    }
    Ok(cluster_id)
}

/// Decides an init from where this node (`ours`, not initialised) and every other member
/// stand: the cluster id to use (`None`: mint one), or why init must not touch any node.
pub fn plan_init(
    self_id: NodeId,
    ours: &MemberStanding,
    others: &[(NodeId, MemberStanding)],
) -> Result<Option<String>, NodeError> {
    let everyone: Vec<(NodeId, &MemberStanding)> = std::iter::once((self_id, ours))
        .chain(others.iter().map(|(node, standing)| (*node, standing)))
        .collect();
    for (node, standing) in &everyone {
        if standing.initialized && standing.cluster_id != ours.cluster_id {
            return Err(NodeError::InitRefused(format!(
                "node {node} already belongs to the initialised cluster {}, which node \
                 {self_id} is not part of; init never creates a cluster beside an existing one \
                 (a node that lost its data is added back with `kvctl node add` under a new \
                 node id)",
                standing.cluster_id.as_deref().unwrap_or("?")
            )));
        }
    }
    let mut recorded: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
    for (node, standing) in &everyone {
        if let Some(cluster_id) = &standing.cluster_id {
            recorded.entry(cluster_id.as_str()).or_default().push(*node);
        }
    }
    if recorded.len() > 1 {
        let described: Vec<String> = recorded
            .iter()
            .map(|(cluster_id, nodes)| format!("nodes {nodes:?} in cluster {cluster_id}"))
            .collect();
        return Err(NodeError::InitRefused(format!(
            "the members belong to different clusters: {}",
            described.join(", ")
        )));
    }
    let cluster_id = recorded.keys().next().map(|cluster_id| cluster_id.to_string());
    let started = everyone.iter().any(|(_, standing)| standing.system_group_started);
    if started {
        let empty: Vec<NodeId> = everyone
            .iter()
            .filter(|(_, standing)| standing.cluster_id.is_none())
            .map(|(node, _)| *node)
            .collect();
        if !empty.is_empty() {
            return Err(NodeError::InitRefused(format!(
                "nodes {empty:?} have empty data directories, but the system group of cluster \
                 {} was already started with them as voters: they lost their data and must not \
                 vote again without their log; start each under a new node id and add it with \
                 `kvctl node add`",
                cluster_id.as_deref().unwrap_or("?")
            )));
        }
    }
    Ok(cluster_id)
}

impl Node {
    /// Where this node stands, as a `JoinCluster` probe answers.
    pub fn standing(&self) -> MemberStanding {
        let system_group_started = {
            let metrics = self.inner.system.raft.metrics();
            let metrics = metrics.borrow();
            metrics.membership_config.voter_ids().next().is_some()
        };
        MemberStanding {
            cluster_id: self.cluster_id(),
            initialized: self.watch_cluster().borrow().is_some(),
            system_group_started,
        }
    }

    /// Asks every member but this node where it stands, all at once.
    async fn probe_members(
        &self,
        members: &[RingMember],
    ) -> Result<Vec<(NodeId, MemberStanding)>, NodeError> {
        let probes = members
            .iter()
            .filter(|member| member.node_id != self.node_id())
            .map(|member| async move {
                let peer = Peer {
                    node: member.node_id,
                    addr: &member.addr,
                };
                Ok::<_, NodeError>((member.node_id, self.peers().probe(peer).await?))
            });
        futures::future::join_all(probes).await.into_iter().collect()
    }

    /// Records `cluster_id` as this node's cluster (first time only, durably).
    pub fn join_cluster(&self, cluster_id: &str) -> Result<(), NodeError> {
        if cluster_id.is_empty() {
            return Err(NodeError::InvalidArgument(
                "cluster id must not be empty".to_string(),
            ));
        }
        let mut current = self
            .inner
            .cluster_id
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match &*current {
            Some(ours) if ours == cluster_id => Ok(()),
            Some(ours) => Err(NodeError::ClusterMismatch {
                ours: ours.clone(),
                theirs: cluster_id.to_string(),
            }),
            None => {
                let deps = &self.inner.deps;
                deps.catalog.insert(CLUSTER_ID_KEY, cluster_id.as_bytes())?;
                deps.engine.flush()?;
                *current = Some(cluster_id.to_string());
                deps.transport.set_cluster_id(cluster_id);
                info!(cluster_id, "joined cluster");
                Ok(())
            }
        }
    }

    /// Adopts the configuration committed in the system group: joins its cluster if this
    /// node has not yet, and makes its ring the one every request is checked against.
    pub fn adopt_config(&self, config: &ClusterConfig) -> Result<Arc<Ring>, NodeError> {
        if self.cluster_id().is_none() {
            self.join_cluster(&config.cluster_id)?;
        }
        let ring = Arc::new(
            Ring::new(config.ring, config.members.clone())
                .map_err(|err| NodeError::InvalidArgument(format!("committed ring is invalid: {err}")))?,
        );
        *self.inner.ring.write().unwrap_or_else(PoisonError::into_inner) = Some(ring.clone());
        Ok(ring)
    }

    /// Bootstraps a cluster (see the module docs). Idempotent.
    pub async fn init_cluster(
        &self,
        request: v1::InitClusterRequest,
    ) -> Result<v1::InitClusterResponse, NodeError> {
        let _init = self.inner.init_lock.lock().await;
        let members = validate_init(self.node_id(), &request)?;
        let ring_config = RingConfig {
            shards: request.shards,
            replication_factor: request.replication_factor,
            vnodes_per_node: DEFAULT_VNODES_PER_NODE,
        };
        Ring::new(ring_config, members.clone()).map_err(|err| NodeError::InvalidArgument(err.to_string()))?;
        let wanted = ClusterConfig {
            cluster_id: String::new(),
            ring: ring_config,
            members: members.clone(),
            epoch: 1,
        };
        if let Some(existing) = self.watch_cluster().borrow().clone() {
            return if existing.same_shape(&wanted) {
                Ok(v1::InitClusterResponse {
                    cluster_id: existing.cluster_id,
                    already_initialized: true,
                })
            } else {
                Err(NodeError::AlreadyInitialized(format!(
                    "cluster {} has {} shards, replication factor {} and members {:?}",
                    existing.cluster_id,
                    existing.ring.shards,
                    existing.ring.replication_factor,
                    existing.members.iter().map(|m| m.node_id).collect::<Vec<_>>()
                )))
            };
        }
        let standings = self.probe_members(&members).await?;
        let cluster_id = match plan_init(self.node_id(), &self.standing(), &standings)? {
            Some(cluster_id) => cluster_id,
            None => format!("{:032x}", rand::random::<u128>()),
        };
        self.join_cluster(&cluster_id)?;
        info!(%cluster_id, members = members.len(), shards = request.shards, "initialising cluster");
        for member in members.iter().filter(|m| m.node_id != self.node_id()) {
            let peer = Peer {
                node: member.node_id,
                addr: &member.addr,
            };
            self.peers().join(peer, &cluster_id).await?;
        }
        let voters: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|member| (member.node_id, BasicNode::new(member.addr.clone())))
            .collect();
        let existing_voters: Vec<NodeId> = {
            let metrics = self.inner.system.raft.metrics();
            let metrics = metrics.borrow();
            metrics.membership_config.voter_ids().collect()
        };
        let wanted_voters: Vec<NodeId> = voters.keys().copied().collect();
        if !existing_voters.is_empty() && existing_voters != wanted_voters {
            return Err(NodeError::AlreadyInitialized(format!(
                "the system group already has voters {existing_voters:?}, not {wanted_voters:?}"
            )));
        }
        group::initialize(&self.inner.system, voters).await?;
        let config = ClusterConfig { cluster_id, ..wanted };
        let applied = self.propose_system(Command::SetCluster(config.clone())).await?;
        match applied {
            CommandResult::Cluster(applied) if applied.same_shape(&config) => Ok(v1::InitClusterResponse {
                already_initialized: applied.cluster_id != config.cluster_id,
                cluster_id: applied.cluster_id,
            }),
            CommandResult::Cluster(applied) => Err(NodeError::AlreadyInitialized(format!(
                "cluster {} was initialised concurrently with another shape",
                applied.cluster_id
            ))),
            other => Err(NodeError::OutcomeUnknown(format!("unexpected result {other:?}"))),
        }
    }

    /// Adds a running node to the ring: the new node records the cluster id (and refuses if
    /// it belongs to another cluster), then the system group commits it as `joining`.
    pub async fn add_node(&self, node_id: NodeId, addr: String) -> Result<v1::RingChangeResponse, NodeError> {
        let config = self.committed_config()?;
        if node_id == 0 || addr.is_empty() {
            return Err(NodeError::InvalidArgument(
                "add node needs a non-zero node id and an address".to_string(),
            ));
        }
        let peer = Peer {
            node: node_id,
            addr: &addr,
        };
        match config.members.iter().find(|member| member.node_id == node_id) {
            None => {
                self.ready_for_ring_change(&config)?;
                self.peers().join(peer, &config.cluster_id).await?;
            }
            // A member added again at its address: an idempotent repeat if the node still
            // has its data, a node that came back empty under its old id if not. (Other
            // cases — another address, a removed or dead id — the ring change refuses.)
            Some(member) if member.addr == addr && !member.state.is_gone() && node_id != self.node_id() => {
                let standing = self.peers().probe(peer).await?;
                member_kept_its_data(node_id, &config.cluster_id, &standing)?;
            }
            Some(_) => {}
        }
        self.change_ring(RingChangeKind::AddNode { node_id, addr }).await
    }

    /// Starts decommissioning a ring member.
    pub async fn decommission_node(&self, node_id: NodeId) -> Result<v1::RingChangeResponse, NodeError> {
        let config = self.committed_config()?;
        self.ready_for_ring_change(&config)?;
        self.change_ring(RingChangeKind::Decommission { node_id }).await
    }

    /// The first ring change waits until every shard group of the initial ring exists here
    /// or has a leader known to this node (groups are only ever initialised under the
    /// initial ring).
    fn ready_for_ring_change(&self, config: &ClusterConfig) -> Result<(), NodeError> {
        if config.epoch > 1 {
            return Ok(());
        }
        let ring = self.ring().ok_or(NodeError::NotInitialized)?;
        for shard in ring.shards_of_node(self.node_id()) {
            let ready = self
                .group(GroupId::Shard(shard.0))
                .is_some_and(|group| group.raft.metrics().borrow().current_leader.is_some());
            if !ready {
                return Err(NodeError::NoQuorum {
                    group: GroupId::Shard(shard.0),
                    detail: "the shard has no leader yet; ring changes wait until every shard of the initial ring is up".to_string(),
                });
            }
        }
        Ok(())
    }

    /// Commits a ring change in the system group.
    pub async fn change_ring(&self, kind: RingChangeKind) -> Result<v1::RingChangeResponse, NodeError> {
        let command = Command::ChangeRing(RingChange {
            expected_epoch: None,
            kind,
        });
        let (config, changed) = match self.propose_system(command).await? {
            CommandResult::Ring(RingChangeOutcome::Applied(config)) => (config, true),
            CommandResult::Ring(RingChangeOutcome::Unchanged(config)) => (config, false),
            CommandResult::Ring(RingChangeOutcome::Rejected(rejection)) => {
                return Err(NodeError::RingChangeRejected(rejection))
            }
            other => return Err(NodeError::OutcomeUnknown(format!("unexpected result {other:?}"))),
        };
        Ok(v1::RingChangeResponse {
            ring: Some(ring_info(&config)),
            changed,
        })
    }

    /// Commits `command` in the system group, forwarding it to the system leader, retrying
    /// (with backoff) until it commits or the deadline passes.
    pub async fn propose_system(&self, command: Command) -> Result<CommandResult, NodeError> {
        let deadline = Instant::now() + SYSTEM_TIMEOUT;
        let system = self.inner.system.clone();
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = match self.propose(&system, command.clone()).await {
                Err(NodeError::NotLeader {
                    leader: Some((leader, addr)),
                    ..
                }) if leader != self.node_id() => self.forward_system(leader, &addr, &command).await,
                other => other,
            };
            match attempt {
                Ok(result) => return Ok(result),
                Err(err) if Instant::now() + backoff < deadline => {
                    debug!(%err, "system proposal not committed yet, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn forward_system(
        &self,
        leader: NodeId,
        addr: &str,
        command: &Command,
    ) -> Result<CommandResult, NodeError> {
        if self.cluster_id().is_none() {
            return Err(NodeError::NotInitialized);
        }
        let peer = Peer { node: leader, addr };
        let timeout = Duration::from_millis(self.config().write_timeout_ms);
        self.peers()
            .propose_system(peer, self.node_id(), command, timeout)
            .await
    }
}

fn validate_init(self_id: NodeId, request: &v1::InitClusterRequest) -> Result<Vec<RingMember>, NodeError> {
    if request.nodes.is_empty() {
        return Err(NodeError::InvalidArgument(
            "init needs at least one node".to_string(),
        ));
    }
    let mut members = Vec::with_capacity(request.nodes.len());
    for node in &request.nodes {
        if node.node_id == 0 {
            return Err(NodeError::InvalidArgument("node id 0 is reserved".to_string()));
        }
        if node.addr.is_empty() {
            return Err(NodeError::InvalidArgument(format!(
                "node {} has no address",
                node.node_id
            )));
        }
        members.push(RingMember {
            node_id: node.node_id,
            addr: node.addr.clone(),
            state: MemberState::Active,
        });
    }
    members.sort_by_key(|member| member.node_id);
    if !members.iter().any(|member| member.node_id == self_id) {
        return Err(NodeError::InvalidArgument(format!(
            "this node ({self_id}) is not among the initial members"
        )));
    }
    if request.replication_factor as usize > members.len() {
        return Err(NodeError::InvalidArgument(format!(
            "replication factor {} exceeds the number of nodes ({})",
            request.replication_factor,
            members.len()
        )));
    }
    Ok(members)
}

/// The committed configuration as reported over the wire.
pub fn ring_info(config: &ClusterConfig) -> v1::RingInfo {
    v1::RingInfo {
        cluster_id: config.cluster_id.clone(),
        shards: config.ring.shards,
        replication_factor: config.ring.replication_factor,
        epoch: config.epoch,
        vnodes_per_node: config.ring.vnodes_per_node,
        members: config
            .members
            .iter()
            .map(|member| v1::RingMember {
                node_id: member.node_id,
                addr: member.addr.clone(),
                state: crate::convert::member_state(member.state) as i32,
            })
            .collect(),
    }
}

/// Whether member `node_id`, asked again to join, still is the member the ring lists: it
/// answers with `cluster_id`. One that answers without it lost its data directory (or is
/// another cluster's node at that address): it holds no log and no vote, so letting it back
/// as a voter under its old id could undo what it had promised (issue 14, defect 8).
fn member_kept_its_data(
    node_id: NodeId,
    cluster_id: &str,
    standing: &MemberStanding,
) -> Result<(), NodeError> {
    if standing.cluster_id.as_deref() == Some(cluster_id) {
        return Ok(());
    }
    Err(NodeError::MemberLostData {
        node_id,
        answered_cluster: standing.cluster_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member asked to join again is let through (an idempotent repeat) only when it
    /// answers with the cluster's id; without it, or with another cluster's, it is refused
    /// with a message that says to add it under a new id.
    #[test]
    fn a_member_that_lost_its_data_is_not_let_back_under_its_id() {
        assert!(member_kept_its_data(3, "c1", &stands(Some("c1"), true, true)).is_ok());
        let wiped = member_kept_its_data(3, "c1", &stands(None, false, false))
            .expect_err("a wiped member is refused");
        assert!(matches!(wiped, NodeError::MemberLostData { node_id: 3, .. }));
        assert_eq!(
            wiped.to_string(),
            "node 3 is a member but answers without the cluster's id (its data directory was lost): \
             add it under a new node id"
        );
        let other = member_kept_its_data(3, "c1", &stands(Some("c2"), true, true))
            .expect_err("another cluster's node is refused");
        assert!(other.to_string().contains("cluster c2"), "{other}");
    }

    fn stands(cluster_id: Option<&str>, initialized: bool, started: bool) -> MemberStanding {
        MemberStanding {
            cluster_id: cluster_id.map(str::to_string),
            initialized,
            system_group_started: started,
        }
    }

    /// Init's decision from every member's standing: the id to use, or a refusal naming why
    /// (the case's index in every assertion).
    #[test]
    fn init_takes_effect_everywhere_or_nowhere() {
        let empty = stands(None, false, false);
        let partial = stands(Some("c1"), false, false);
        let partial_started = stands(Some("c1"), false, true);
        let initialised = stands(Some("c1"), true, true);
        let other = stands(Some("c2"), false, false);
        // (ours, others, expected id or the refusal's tell-tale words)
        type Case = (
            MemberStanding,
            Vec<MemberStanding>,
            Result<Option<&'static str>, &'static str>,
        );
        let cases: Vec<Case> = vec![
            // Fresh: mint.
            (empty.clone(), vec![empty.clone(), empty.clone()], Ok(None)),
            // An init that crashed after recording its id somewhere: adopt it.
            (
                empty.clone(),
                vec![partial.clone(), empty.clone()],
                Ok(Some("c1")),
            ),
            (
                partial.clone(),
                vec![partial.clone(), empty.clone()],
                Ok(Some("c1")),
            ),
            // Crashed after the system group started, every member still whole: complete it.
            (
                partial_started.clone(),
                vec![partial.clone(), partial.clone()],
                Ok(Some("c1")),
            ),
            // Another member already applied the committed config of our own id: go on.
            (
                partial_started.clone(),
                vec![initialised.clone(), partial.clone()],
                Ok(Some("c1")),
            ),
            // Two members lost their data, one still holds the initialised cluster (defect 14).
            (
                empty.clone(),
                vec![empty.clone(), initialised.clone()],
                Err("already belongs"),
            ),
            // Members of two clusters.
            (
                partial.clone(),
                vec![other.clone(), empty.clone()],
                Err("different clusters"),
            ),
            (
                empty.clone(),
                vec![partial.clone(), other.clone()],
                Err("different clusters"),
            ),
            // The system group started, and a member came back empty (defect 8).
            (
                partial_started.clone(),
                vec![empty.clone(), partial.clone()],
                Err("lost their data"),
            ),
            (
                partial.clone(),
                vec![partial_started.clone(), empty.clone()],
                Err("lost their data"),
            ),
        ];
        for (index, (ours, others, expected)) in cases.into_iter().enumerate() {
            let others: Vec<(NodeId, MemberStanding)> = others
                .into_iter()
                .enumerate()
                .map(|(i, standing)| (i as NodeId + 2, standing))
                .collect();
            let planned = plan_init(1, &ours, &others);
            match (planned, expected) {
                (Ok(got), Ok(want)) => assert_eq!(got.as_deref(), want, "case {index}"),
                (Err(NodeError::InitRefused(message)), Err(words)) => {
                    assert!(message.contains(words), "case {index}: {message}")
                }
                (got, want) => panic!("case {index}: got {got:?}, want {want:?}"),
            }
        }
    }

    fn request(nodes: &[(u64, &str)], rf: u32) -> v1::InitClusterRequest {
        v1::InitClusterRequest {
            nodes: nodes
                .iter()
                .map(|(node_id, addr)| v1::NodeAddress {
                    node_id: *node_id,
                    addr: addr.to_string(),
                })
                .collect(),
            shards: 16,
            replication_factor: rf,
        }
    }

    /// Init takes sorted, addressed, non-zero members that include the caller and at least
    /// RF of them; anything else is refused before any state changes.
    #[test]
    fn init_requests_are_validated() {
        let members = validate_init(1, &request(&[(2, "b:1"), (1, "a:1"), (3, "c:1")], 3)).expect("valid");
        assert_eq!(
            members.iter().map(|m| m.node_id).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let refused = [
            (request(&[], 1), "empty"),
            (request(&[(0, "a:1")], 1), "node id 0"),
            (request(&[(1, "")], 1), "no address"),
            (request(&[(2, "b:1")], 1), "caller missing"),
            (request(&[(1, "a:1"), (2, "b:1")], 3), "RF above the node count"),
        ];
        for (index, (request, why)) in refused.iter().enumerate() {
            let outcome = validate_init(1, request);
            assert!(
                matches!(outcome, Err(NodeError::InvalidArgument(_))),
                "case {index} ({why}): {outcome:?}"
            );
        }
    }
}
