//! Elastic membership: `node add`, `node decommission`, `cluster plan`,
//! `rebalance status` and `leader transfer` (all through a router).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ringkv_client::Client;
use ringkv_proto::v1 as proto;
use ringkv_proto::v1::plan_ring_change_request::Change;
use serde_json::{json, Value};

use crate::exit::{Outcome, UsageError};
use crate::output::{self, render_table, to_json, OutputFormat};
use crate::progress;

/// `rebalance status --wait`: shards settled of the total, and what is still moving.
pub const REBALANCE_TEMPLATE: &str =
    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} shards settled  {msg}";
/// How often `rebalance status --wait` asks again.
const POLL: Duration = Duration::from_millis(500);

/// `kvctl node ...`
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Add a running node (started with an empty data directory) to the ring; replicas
    /// then move to it. See the moves first with `kvctl cluster plan --add ID=ADDR`.
    Add(AddArgs),
    /// Move every replica away from a node; it becomes `removed` and can then be stopped.
    Decommission(DecommissionArgs),
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// The new node's id (its --node-id; never used before in this cluster).
    pub node_id: u64,
    /// The new node's address (host:port) as other nodes and routers reach it.
    pub addr: String,
}

/// `kvctl leader ...`
#[derive(Subcommand, Debug)]
pub enum LeaderCommand {
    /// Hand a shard's leadership to one of its voters (writes pause for about a round trip).
    /// The system leader also does this on its own to spread leaders evenly.
    Transfer(TransferArgs),
}

#[derive(Args, Debug)]
pub struct TransferArgs {
    /// The shard.
    pub shard: u32,
    /// The voter to lead it.
    #[arg(long = "to", value_name = "NODE")]
    pub to_node: u64,
}

pub async fn leader(
    client: &Client,
    command: LeaderCommand,
    format: OutputFormat,
) -> anyhow::Result<Outcome> {
    let LeaderCommand::Transfer(args) = command;
    let response = client
        .transfer_leader(args.shard, args.to_node)
        .await
        .with_context(|| {
            format!(
                "moving the leadership of shard {} to node {}",
                args.shard, args.to_node
            )
        })?;
    output::emit(&render_transfer(args.shard, &response, format))?;
    Ok(Outcome::Success)
}

pub fn render_transfer(shard: u32, response: &proto::TransferLeaderResponse, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => to_json(&json!({
            "shard": shard,
            "leader": response.leader_id,
            "term": response.term,
        })),
        OutputFormat::Table => format!(
            "shard {shard}: node {} leads now (term {})",
            response.leader_id, response.term
        ),
    }
}

#[derive(Args, Debug)]
pub struct DecommissionArgs {
    /// The node to empty.
    pub node_id: u64,
}

/// `kvctl cluster plan`: exactly one change.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// A node that would join: ID=HOST:PORT.
    #[arg(long, value_name = "ID=ADDR", conflicts_with_all = ["decommission", "dead"])]
    pub add: Option<String>,
    /// A node that would be decommissioned.
    #[arg(long, value_name = "ID", conflicts_with = "dead")]
    pub decommission: Option<u64>,
    /// A node that would be declared dead (its replicas re-created elsewhere).
    #[arg(long, value_name = "ID")]
    pub dead: Option<u64>,
}

/// `kvctl rebalance ...`
#[derive(Subcommand, Debug)]
pub enum RebalanceCommand {
    /// How far shard replicas are from the placement of the current ring.
    Status(StatusArgs),
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Keep watching (with a progress bar) until every shard is settled.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (exit 3).
    #[arg(long, value_name = "S", default_value_t = 3600, requires = "wait")]
    pub wait_timeout_s: u64,
}

pub async fn node(client: &Client, command: NodeCommand, format: OutputFormat) -> anyhow::Result<Outcome> {
    let (response, what) = match command {
        NodeCommand::Add(args) => (
            client
                .add_node(args.node_id, &args.addr)
                .await
                .with_context(|| format!("adding node {}", args.node_id))?,
            format!("node {} at {}", args.node_id, args.addr),
        ),
        NodeCommand::Decommission(args) => (
            client
                .decommission_node(args.node_id)
                .await
                .with_context(|| format!("decommissioning node {}", args.node_id))?,
            format!("node {}", args.node_id),
        ),
    };
    output::emit(&render_ring_change(&response, &what, format))?;
    Ok(Outcome::Success)
}

/// Parses `ID=HOST:PORT`.
pub fn parse_add(spec: &str) -> Result<proto::NodeAddress, UsageError> {
    let (id, addr) = spec
        .split_once('=')
        .ok_or_else(|| UsageError(format!("--add wants ID=HOST:PORT, got {spec:?}")))?;
    let node_id: u64 = id
        .trim()
        .parse()
        .map_err(|_| UsageError(format!("--add: {id:?} is not a node id")))?;
    if node_id == 0 || !addr.contains(':') {
        return Err(UsageError(format!(
            "--add wants a non-zero ID and HOST:PORT, got {spec:?}"
        )));
    }
    Ok(proto::NodeAddress {
        node_id,
        addr: addr.trim().to_string(),
    })
}

pub async fn plan(client: &Client, args: PlanArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    let change = match (args.add, args.decommission, args.dead) {
        (Some(spec), None, None) => Change::Add(parse_add(&spec)?),
        (None, Some(node), None) => Change::Decommission(node),
        (None, None, Some(node)) => Change::Dead(node),
        _ => {
            return Err(UsageError(
                "say which change to plan: --add ID=ADDR, --decommission ID or --dead ID".to_string(),
            )
            .into())
        }
    };
    let plan = client.plan_ring_change(change).await.context("cluster plan")?;
    output::emit(&render_plan(&plan, format))?;
    Ok(Outcome::Success)
}

pub async fn rebalance(
    client: &Client,
    command: RebalanceCommand,
    format: OutputFormat,
) -> anyhow::Result<Outcome> {
    let RebalanceCommand::Status(args) = command;
    let status = client.rebalance_status().await.context("rebalance status")?;
    if !args.wait || status.shards_settled == status.shards_total {
        output::emit(&render_rebalance(&status, format))?;
        return Ok(Outcome::Success);
    }
    let bar = progress::bar(Some(u64::from(status.shards_total)), REBALANCE_TEMPLATE);
    let deadline = Instant::now() + Duration::from_secs(args.wait_timeout_s);
    let mut status = status;
    loop {
        bar.set_length(u64::from(status.shards_total));
        bar.set_position(u64::from(status.shards_settled));
        bar.set_message(format!("{} replicas to create", status.replicas_pending));
        if status.shards_settled == status.shards_total {
            break;
        }
        if Instant::now() >= deadline {
            bar.abandon();
            output::emit(&render_rebalance(&status, format))?;
            anyhow::bail!(ringkv_client::Error::DeadlineExceeded(format!(
                "rebalance not finished after {} s",
                args.wait_timeout_s
            )));
        }
        tokio::time::sleep(POLL).await;
        // A failed poll (a router restarting, a node moving) is retried until the deadline.
        if let Ok(next) = client.rebalance_status().await {
            status = next;
        }
    }
    bar.finish_and_clear();
    output::emit(&render_rebalance(&status, format))?;
    Ok(Outcome::Success)
}

fn ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn ring_json(ring: Option<&proto::RingInfo>) -> Value {
    ring.map_or(Value::Null, |ring| {
        json!({
            "epoch": ring.epoch,
            "members": ring.members.iter().map(|m| json!({
                "node_id": m.node_id, "addr": m.addr, "state": m.state().label(),
            })).collect::<Vec<_>>(),
        })
    })
}

pub fn render_ring_change(response: &proto::RingChangeResponse, what: &str, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => to_json(&json!({
            "changed": response.changed,
            "ring": ring_json(response.ring.as_ref()),
        })),
        OutputFormat::Table => {
            let epoch = response.ring.as_ref().map_or(0, |ring| ring.epoch);
            let head = if response.changed {
                format!("{what}: done; ring epoch {epoch}")
            } else {
                format!("{what}: already in effect (ring epoch {epoch})")
            };
            let members = response.ring.as_ref().map_or_else(String::new, |ring| {
                render_table(
                    &["NODE", "ADDR", "STATE"],
                    ring.members
                        .iter()
                        .map(|m| {
                            vec![
                                m.node_id.to_string(),
                                m.addr.clone(),
                                m.state().label().to_string(),
                            ]
                        })
                        .collect(),
                    &[0],
                )
            });
            format!("{head}\n{members}\nfollow the moves with: kvctl rebalance status --wait")
        }
    }
}

pub fn render_plan(plan: &proto::PlanRingChangeResponse, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => to_json(&json!({
            "epoch": plan.epoch,
            "replicas_moved": plan.replicas_moved,
            "ideal_replicas_moved": plan.ideal_replicas_moved,
            "total_replicas": plan.total_replicas,
            "moves": plan.moves.iter().map(|m| json!({
                "shard": m.shard_id, "from": m.from, "to": m.to,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            let table = render_table(
                &["SHARD", "FROM", "TO"],
                plan.moves
                    .iter()
                    .map(|m| vec![m.shard_id.to_string(), ids(&m.from), ids(&m.to)])
                    .collect(),
                &[0],
            );
            format!(
                "{table}\n{} of {} replicas would move in {} shards (consistent-hashing minimum {}); ring epoch {}",
                plan.replicas_moved,
                plan.total_replicas,
                plan.moves.len(),
                plan.ideal_replicas_moved,
                plan.epoch
            )
        }
    }
}

pub fn render_rebalance(status: &proto::RebalanceStatusResponse, format: OutputFormat) -> String {
    let mut states: Vec<(&String, &u32)> = status.members_by_state.iter().collect();
    states.sort();
    match format {
        OutputFormat::Json => to_json(&json!({
            "epoch": status.epoch,
            "shards_total": status.shards_total,
            "shards_settled": status.shards_settled,
            "replicas_pending": status.replicas_pending,
            "members_by_state": status.members_by_state,
            "pending": status.pending.iter().map(|p| json!({
                "shard": p.shard_id, "placement": p.placement, "voters": p.voters,
                "learners": p.learners, "leader": p.leader_id,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            let members = states
                .iter()
                .map(|(state, count)| format!("{count} {state}"))
                .collect::<Vec<_>>()
                .join(", ");
            let head = format!(
                "ring epoch {}: {}/{} shards settled, {} replicas to create; members: {members}",
                status.epoch, status.shards_settled, status.shards_total, status.replicas_pending
            );
            if status.pending.is_empty() {
                return head;
            }
            let table = render_table(
                &["SHARD", "PLACEMENT", "VOTERS", "LEARNERS", "LEADER"],
                status
                    .pending
                    .iter()
                    .map(|p| {
                        vec![
                            p.shard_id.to_string(),
                            ids(&p.placement),
                            ids(&p.voters),
                            ids(&p.learners),
                            if p.leader_id == 0 {
                                "-".to_string()
                            } else {
                                p.leader_id.to_string()
                            },
                        ]
                    })
                    .collect(),
                &[0],
            );
            format!("{head}\n{table}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_add_specs() {
        let node = parse_add("4=127.0.0.1:7004").expect("valid");
        assert_eq!((node.node_id, node.addr.as_str()), (4, "127.0.0.1:7004"));
        for bad in ["4", "x=h:1", "0=h:1", "4=host"] {
            assert!(parse_add(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn template_parses() {
        assert!(indicatif::ProgressStyle::with_template(REBALANCE_TEMPLATE).is_ok());
    }

    #[test]
    fn renders_plan_and_status() {
        let plan = proto::PlanRingChangeResponse {
            epoch: 3,
            moves: vec![proto::ShardMove {
                shard_id: 5,
                from: vec![1, 2, 3],
                to: vec![4, 2, 3],
            }],
            replicas_moved: 1,
            ideal_replicas_moved: 12,
            total_replicas: 48,
        };
        let text = render_plan(&plan, OutputFormat::Table);
        assert!(text.contains("1,2,3") && text.contains("4,2,3"), "{text}");
        assert!(text.contains("1 of 48 replicas would move in 1 shards (consistent-hashing minimum 12)"));
        let status = proto::RebalanceStatusResponse {
            epoch: 2,
            shards_total: 16,
            shards_settled: 15,
            replicas_pending: 1,
            pending: vec![proto::ShardRebalance {
                shard_id: 7,
                placement: vec![4, 1, 2],
                voters: vec![1, 2, 3],
                learners: vec![4],
                leader_id: 1,
            }],
            members_by_state: [("active".to_string(), 3), ("joining".to_string(), 1)].into(),
        };
        let text = render_rebalance(&status, OutputFormat::Table);
        assert!(
            text.starts_with(
                "ring epoch 2: 15/16 shards settled, 1 replicas to create; members: 3 active, 1 joining"
            ),
            "{text}"
        );
        let json: Value = serde_json::from_str(&render_rebalance(&status, OutputFormat::Json)).expect("json");
        assert_eq!(json["pending"][0]["learners"][0], 4);
    }
}
