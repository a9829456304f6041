//! `cluster init` (talks to the nodes), `cluster status` and `cluster plan` (ask a router).

use std::fmt::Write as _;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ringkv_client::{admin, proto, Client, ClientConfig};
use serde_json::{json, Value};

use crate::exit::Outcome;
use crate::output::{self, render_table, to_json, OutputFormat};

/// `kvctl cluster ...`
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Bootstrap a cluster from running nodes (idempotent). Talks to the NODES, not the
    /// router.
    Init(InitArgs),
    /// Show nodes, shards, leaders and replica health, as seen by a router.
    Status,
    /// Show which replicas a ring change would move, without applying it.
    Plan(crate::membership::PlanArgs),
}

/// Arguments of `kvctl cluster init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Node addresses (host:port), comma-separated; the first receives InitCluster.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub nodes: Vec<String>,
    /// Number of shards (a power of two), fixed for the life of the cluster.
    #[arg(long, default_value_t = 16)]
    pub shards: u32,
    /// Replicas per shard (at most the number of nodes).
    #[arg(long, default_value_t = 3)]
    pub replication_factor: u32,
}

/// Runs a `cluster` subcommand: `init` calls the nodes with `node_config`, `status`
/// calls the routers at `endpoints` with `router_config`.
pub async fn run(
    command: ClusterCommand,
    endpoints: Vec<String>,
    router_config: ClientConfig,
    node_config: ClientConfig,
    format: OutputFormat,
) -> anyhow::Result<Outcome> {
    match command {
        ClusterCommand::Init(args) => {
            let response =
                admin::init_cluster_with(&args.nodes, args.shards, args.replication_factor, &node_config)
                    .await
                    .context("cluster init")?;
            output::emit(&render_init(&response, format))?;
        }
        ClusterCommand::Status => {
            let client = Client::connect_with(endpoints, router_config).await?;
            let status = client.cluster_status().await.context("cluster status")?;
            output::emit(&render_cluster_status(&status, format))?;
        }
        ClusterCommand::Plan(args) => {
            let client = Client::connect_with(endpoints, router_config).await?;
            return crate::membership::plan(&client, args, format).await;
        }
    }
    Ok(Outcome::Success)
}

/// The result of `cluster init`.
pub fn render_init(response: &proto::InitClusterResponse, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => render_table(
            &["CLUSTER ID", "RESULT"],
            vec![vec![
                response.cluster_id.clone(),
                if response.already_initialized {
                    "already initialized"
                } else {
                    "initialized"
                }
                .to_string(),
            ]],
            &[],
        ),
        OutputFormat::Json => to_json(&json!({
            "cluster_id": response.cluster_id,
            "already_initialized": response.already_initialized,
        })),
    }
}

/// Whether a replica counts toward a shard's replication: reachable, hosted, and a leader
/// or follower.
fn is_voting_replica(replica: &proto::ShardReplicaHealth) -> bool {
    replica.reachable
        && replica.hosted
        && matches!(
            replica.role(),
            proto::ReplicaRole::Leader | proto::ReplicaRole::Follower
        )
}

/// How healthy one shard is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardHealthSummary {
    /// Some reachable replica knows a leader.
    pub has_leader: bool,
    /// Reachable replicas that are leader or follower.
    pub healthy_replicas: usize,
    /// Replicas the shard should have.
    pub expected_replicas: usize,
}

impl ShardHealthSummary {
    /// Computes the health of `shard` given the cluster's replication factor (0 when
    /// unknown: the placement size is used instead).
    pub fn of(shard: &proto::ShardHealth, replication_factor: u32) -> Self {
        let healthy_replicas = shard
            .replicas
            .iter()
            .filter(|replica| is_voting_replica(replica))
            .count();
        let expected_replicas = match usize::try_from(replication_factor) {
            Ok(rf) if rf > 0 => rf,
            _ => shard.placement.len(),
        };
        ShardHealthSummary {
            has_leader: shard.leader_id != 0,
            healthy_replicas,
            expected_replicas,
        }
    }

    /// Fewer healthy replicas than expected.
    pub fn is_under_replicated(&self) -> bool {
        self.healthy_replicas < self.expected_replicas
    }

    /// `ok`, or the problems joined by `, `.
    pub fn label(&self) -> String {
        let mut problems = Vec::new();
        if !self.has_leader {
            problems.push("no leader".to_string());
        }
        if self.is_under_replicated() {
            problems.push(format!(
                "under-replicated ({}/{})",
                self.healthy_replicas, self.expected_replicas
            ));
        }
        if problems.is_empty() {
            "ok".to_string()
        } else {
            problems.join(", ")
        }
    }
}

fn id_or_unknown(id: u64) -> String {
    if id == 0 {
        "-".to_string()
    } else {
        id.to_string()
    }
}

fn yes_no(flag: bool) -> String {
    if flag { "yes" } else { "no" }.to_string()
}

/// `cluster status` in the chosen format.
pub fn render_cluster_status(status: &proto::ClusterStatusResponse, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => cluster_status_table(status),
        OutputFormat::Json => to_json(&cluster_status_json(status)),
    }
}

fn cluster_status_table(status: &proto::ClusterStatusResponse) -> String {
    let replication_factor = status.ring.as_ref().map_or(0, |ring| ring.replication_factor);
    let mut out = String::new();
    match &status.ring {
        Some(ring) => {
            let _ = writeln!(
                out,
                "cluster {}  epoch {}  shards {}  replication factor {}  system leader {}",
                if ring.cluster_id.is_empty() {
                    "-"
                } else {
                    &ring.cluster_id
                },
                ring.epoch,
                ring.shards,
                ring.replication_factor,
                id_or_unknown(status.system_leader_id),
            );
        }
        None => {
            let _ = writeln!(
                out,
                "cluster: ring unknown (not initialised?)  system leader {}",
                id_or_unknown(status.system_leader_id)
            );
        }
    }

    let show_errors = status.nodes.iter().any(|node| !node.error.is_empty());
    let mut node_headers = vec![
        "ID",
        "ADDR",
        "STATE",
        "GOSSIP",
        "LAST HEARD",
        "REACHABLE",
        "REPLICAS",
        "LEADERS",
    ];
    if show_errors {
        node_headers.push("ERROR");
    }
    let node_rows = status
        .nodes
        .iter()
        .map(|node| {
            let mut row = vec![
                node.node_id.to_string(),
                node.addr.clone(),
                node.state().label().to_string(),
                if node.liveness.is_empty() {
                    "-".to_string()
                } else {
                    node.liveness.clone()
                },
                node.last_heard_ms
                    .map_or_else(|| "-".to_string(), |ms| format!("{:.1}s ago", ms as f64 / 1000.0)),
                yes_no(node.reachable),
                node.replicas.to_string(),
                node.leaders.to_string(),
            ];
            if show_errors {
                row.push(node.error.clone());
            }
            row
        })
        .collect();
    let _ = writeln!(out, "\nNODES");
    let _ = writeln!(out, "{}", render_table(&node_headers, node_rows, &[0, 4, 5]));

    let mut with_leader = 0usize;
    let mut under_replicated = 0usize;
    let shard_rows = status
        .shards
        .iter()
        .map(|shard| {
            let health = ShardHealthSummary::of(shard, replication_factor);
            with_leader += usize::from(health.has_leader);
            under_replicated += usize::from(health.is_under_replicated());
            vec![
                shard.shard_id.to_string(),
                join_ids(&shard.placement),
                id_or_unknown(shard.leader_id),
                shard.term.to_string(),
                shard
                    .replicas
                    .iter()
                    .map(replica_label)
                    .collect::<Vec<_>>()
                    .join(" "),
                health.label(),
            ]
        })
        .collect();
    let _ = writeln!(out, "\nSHARDS");
    let _ = writeln!(
        out,
        "{}",
        render_table(
            &[
                "ID",
                "PLACEMENT",
                "LEADER",
                "TERM",
                "REPLICAS (node:role@applied)",
                "HEALTH"
            ],
            shard_rows,
            &[0, 3],
        )
    );
    let _ = write!(
        out,
        "\n{} shards, {} with a leader, {} under-replicated",
        status.shards.len(),
        with_leader,
        under_replicated
    );
    out
}

fn join_ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn replica_label(replica: &proto::ShardReplicaHealth) -> String {
    if replica.reachable {
        format!(
            "{}:{}@{}",
            replica.node_id,
            replica.role_label(),
            replica.applied_index
        )
    } else {
        format!("{}:unreachable", replica.node_id)
    }
}

/// The status response as JSON, field names as in the proto; each shard also carries a
/// derived `health` label.
pub fn cluster_status_json(status: &proto::ClusterStatusResponse) -> Value {
    let replication_factor = status.ring.as_ref().map_or(0, |ring| ring.replication_factor);
    let ring = status.ring.as_ref().map_or(Value::Null, |ring| {
        json!({
            "cluster_id": ring.cluster_id,
            "shards": ring.shards,
            "replication_factor": ring.replication_factor,
            "epoch": ring.epoch,
            "vnodes_per_node": ring.vnodes_per_node,
            "members": ring.members.iter().map(|member| json!({
                "node_id": member.node_id,
                "addr": member.addr,
                "state": member.state().label(),
            })).collect::<Vec<_>>(),
        })
    });
    let nodes: Vec<Value> = status
        .nodes
        .iter()
        .map(|node| {
            json!({
                "node_id": node.node_id,
                "addr": node.addr,
                "state": node.state().label(),
                "reachable": node.reachable,
                "liveness": node.liveness,
                "last_heard_ms": node.last_heard_ms,
                "error": node.error,
                "replicas": node.replicas,
                "leaders": node.leaders,
            })
        })
        .collect();
    let shards: Vec<Value> = status
        .shards
        .iter()
        .map(|shard| {
            json!({
                "shard_id": shard.shard_id,
                "placement": shard.placement,
                "leader_id": shard.leader_id,
                "term": shard.term,
                "replicas": shard.replicas.iter().map(|replica| json!({
                    "node_id": replica.node_id,
                    "reachable": replica.reachable,
                    "role": replica.role_label(),
                    "applied_index": replica.applied_index,
                })).collect::<Vec<_>>(),
                "health": ShardHealthSummary::of(shard, replication_factor).label(),
            })
        })
        .collect();
    json!({
        "ring": ring,
        "nodes": nodes,
        "shards": shards,
        "system_leader_id": status.system_leader_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard whose replicas are `(node id, reachable, role)`; a replica with a role is
    /// hosted.
    fn shard(leader_id: u64, replicas: &[(u64, bool, Option<proto::ReplicaRole>)]) -> proto::ShardHealth {
        proto::ShardHealth {
            shard_id: 0,
            placement: replicas.iter().map(|r| r.0).collect(),
            leader_id,
            term: 3,
            replicas: replicas
                .iter()
                .map(|(node_id, reachable, role)| proto::ShardReplicaHealth {
                    node_id: *node_id,
                    reachable: *reachable,
                    hosted: role.is_some(),
                    role: role.unwrap_or_default() as i32,
                    applied_index: 10,
                })
                .collect(),
        }
    }

    /// Shard health: ok, no leader, under-replicated, or both.
    #[test]
    fn shard_health_labels() {
        use proto::ReplicaRole::{Candidate, Follower, Leader, Learner};
        let healthy = shard(
            1,
            &[
                (1, true, Some(Leader)),
                (2, true, Some(Follower)),
                (3, true, Some(Follower)),
            ],
        );
        assert_eq!(ShardHealthSummary::of(&healthy, 3).label(), "ok");

        let down = shard(
            1,
            &[
                (1, true, Some(Leader)),
                (2, true, Some(Follower)),
                (3, false, None),
            ],
        );
        assert_eq!(ShardHealthSummary::of(&down, 3).label(), "under-replicated (2/3)");

        let leaderless = shard(
            0,
            &[
                (1, true, Some(Candidate)),
                (2, true, Some(Follower)),
                (3, false, None),
            ],
        );
        assert_eq!(
            ShardHealthSummary::of(&leaderless, 3).label(),
            "no leader, under-replicated (1/3)"
        );

        let learner = shard(
            1,
            &[
                (1, true, Some(Leader)),
                (2, true, Some(Follower)),
                (3, true, Some(Learner)),
            ],
        );
        assert!(ShardHealthSummary::of(&learner, 3).is_under_replicated());

        // Without a known replication factor the placement size is expected.
        assert_eq!(ShardHealthSummary::of(&healthy, 0).expected_replicas, 3);
    }

    /// The status table lists nodes, shards with health, and a summary line.
    #[test]
    fn cluster_status_table_contents() {
        let status = proto::ClusterStatusResponse {
            ring: Some(proto::RingInfo {
                cluster_id: "c1".into(),
                shards: 1,
                replication_factor: 3,
                epoch: 2,
                members: vec![],
                vnodes_per_node: 64,
            }),
            nodes: vec![proto::NodeHealth {
                node_id: 3,
                addr: "127.0.0.1:7003".into(),
                state: proto::MemberState::Active as i32,
                reachable: false,
                error: "connection refused".into(),
                replicas: 0,
                leaders: 0,
                liveness: "dead".into(),
                last_heard_ms: Some(12_300),
            }],
            shards: vec![shard(
                0,
                &[
                    (1, true, Some(proto::ReplicaRole::Candidate)),
                    (2, true, Some(proto::ReplicaRole::Follower)),
                    (3, false, None),
                ],
            )],
            system_leader_id: 1,
        };
        let table = render_cluster_status(&status, OutputFormat::Table);
        for needle in [
            "cluster c1",
            "NODES",
            "127.0.0.1:7003",
            "connection refused",
            "dead",
            "12.3s ago",
            "SHARDS",
            "1:candidate@10",
            "3:unreachable",
            "no leader, under-replicated (1/3)",
            "1 shards, 0 with a leader, 1 under-replicated",
        ] {
            assert!(table.contains(needle), "missing {needle:?} in:\n{table}");
        }
        let value = cluster_status_json(&status);
        assert_eq!(value["ring"]["cluster_id"], json!("c1"));
        assert_eq!(value["nodes"][0]["reachable"], json!(false));
        assert_eq!(value["nodes"][0]["liveness"], json!("dead"));
        assert_eq!(value["nodes"][0]["state"], json!("active"));
        assert_eq!(value["shards"][0]["replicas"][0]["role"], json!("candidate"));
        assert_eq!(value["shards"][0]["replicas"][2]["role"], json!("unknown"));
        assert_eq!(
            value["shards"][0]["health"],
            json!("no leader, under-replicated (1/3)")
        );
    }
}
