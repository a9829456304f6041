//! Bringing up a cluster of started nodes: `cluster init`, node statuses, and waiting
//! until every shard has a leader. Each call takes the client TLS settings of a TLS
//! cluster (None: plain http, an `--insecure` cluster).

use std::collections::BTreeMap;
use std::time::Duration;

use ringkv_client::{admin, ClientConfig, ClientTls, DEFAULT_CONNECT_TIMEOUT};
use ringkv_proto::v1 as proto;

use crate::{wait_for, LaunchError};

/// Deadline of `cluster init` (it creates every shard group).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client configuration with `timeout` per request and for connecting, over `tls`.
fn probe_config(timeout: Duration, tls: Option<&ClientTls>) -> Result<ClientConfig, ringkv_client::Error> {
    let builder = ClientConfig::builder()
        .request_timeout(timeout)
        .connect_timeout(timeout.min(DEFAULT_CONNECT_TIMEOUT));
    match tls {
        Some(tls) => builder.tls(tls.clone()).build(),
        None => builder.build(),
    }
}

/// Bootstraps the cluster from its nodes (`host:port`, the first one receives the
/// request), as `kvctl cluster init` does, within [`INIT_TIMEOUT`]; idempotent.
pub async fn init_cluster(
    node_addrs: &[String],
    shards: u32,
    replication_factor: u32,
    tls: Option<&ClientTls>,
) -> Result<proto::InitClusterResponse, ringkv_client::Error> {
    let config = probe_config(INIT_TIMEOUT, tls)?;
    admin::init_cluster_with(node_addrs, shards, replication_factor, &config).await
}

/// One node's `Admin.NodeStatus`, within `timeout`.
pub async fn node_status(
    addr: &str,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<proto::NodeStatusResponse, ringkv_client::Error> {
    admin::node_status(addr, &probe_config(timeout, tls)?).await
}

/// The leader of every shard claimed in `statuses` (node id, its status); when two nodes
/// claim a shard, the higher term wins (on a tie, the later one).
pub fn leaders_of<'a>(
    statuses: impl IntoIterator<Item = (u64, &'a proto::NodeStatusResponse)>,
) -> BTreeMap<u32, u64> {
    let mut best: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for (node_id, status) in statuses {
        for replica in &status.replicas {
            let (Some(shard), proto::ReplicaRole::Leader) = (replica.shard_id, replica.role()) else {
                continue;
            };
            let entry = best.entry(shard).or_insert((0, 0));
            if replica.term >= entry.0 {
                *entry = (replica.term, node_id);
            }
        }
    }
    best.into_iter()
        .map(|(shard, (_, leader))| (shard, leader))
        .collect()
}

/// The shard leaders the `nodes` (node id, address) claim; nodes that do not answer
/// within `status_timeout` are left out.
pub async fn shard_leaders(
    nodes: &[(u64, String)],
    status_timeout: Duration,
    tls: Option<&ClientTls>,
) -> BTreeMap<u32, u64> {
    let mut statuses = Vec::with_capacity(nodes.len());
    for (node_id, addr) in nodes {
        if let Ok(status) = node_status(addr, status_timeout, tls).await {
            statuses.push((*node_id, status));
        }
    }
    leaders_of(statuses.iter().map(|(node_id, status)| (*node_id, status)))
}

/// The node that claims to lead the system group with the highest term, among the `nodes`
/// (node id, address) that answer within `status_timeout`.
pub async fn system_leader(
    nodes: &[(u64, String)],
    status_timeout: Duration,
    tls: Option<&ClientTls>,
) -> Option<u64> {
    let mut best: Option<(u64, u64)> = None;
    for (node_id, addr) in nodes {
        let Ok(status) = node_status(addr, status_timeout, tls).await else {
            continue;
        };
        let claim = status
            .replicas
            .iter()
            .find(|replica| replica.shard_id.is_none() && replica.role() == proto::ReplicaRole::Leader);
        if let Some(replica) = claim {
            if best.is_none_or(|(term, _)| replica.term >= term) {
                best = Some((replica.term, *node_id));
            }
        }
    }
    best.map(|(_, node_id)| node_id)
}

/// Waits until the `nodes` claim a leader for each of `shards` shards; returns them.
pub async fn wait_for_leaders(
    nodes: &[(u64, String)],
    shards: u32,
    timeout: Duration,
    status_timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<BTreeMap<u32, u64>, LaunchError> {
    let expected = usize::try_from(shards).unwrap_or(usize::MAX);
    wait_for("a leader for every shard", timeout, || async {
        let leaders = shard_leaders(nodes, status_timeout, tls).await;
        (leaders.len() == expected).then_some(leaders)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(replicas: &[(u32, proto::ReplicaRole, u64)]) -> proto::NodeStatusResponse {
        proto::NodeStatusResponse {
            replicas: replicas
                .iter()
                .map(|(shard, role, term)| proto::ReplicaInfo {
                    shard_id: Some(*shard),
                    role: *role as i32,
                    term: *term,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Leader claims: followers are ignored, the higher term wins a contested shard.
    #[test]
    fn highest_term_claim_wins() {
        use proto::ReplicaRole::{Candidate, Follower, Leader};
        let one = status(&[(0, Leader, 2), (1, Follower, 3)]);
        let two = status(&[(0, Leader, 3), (1, Leader, 3)]);
        let three = status(&[(2, Candidate, 4)]);
        let leaders = leaders_of([(1, &one), (2, &two), (3, &three)]);
        assert_eq!(leaders, BTreeMap::from([(0, 2), (1, 2)]));
        let stale = leaders_of([(2, &two), (1, &one)]);
        assert_eq!(
            stale.get(&0),
            Some(&2),
            "a lower term never replaces a higher one"
        );
    }
}
