//! `cluster init` (talks to the nodes), `cluster status` and `cluster plan` (ask a router).

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ringkv_client::{admin, Client, ClientConfig};

use crate::exit::Outcome;
use crate::output::{self, OutputFormat};

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
            output::emit(&output::render_init(&response, format))?;
        }
        ClusterCommand::Status => {
            let client = Client::connect_with(endpoints, router_config).await?;
            let status = client.cluster_status().await.context("cluster status")?;
            output::emit(&output::render_cluster_status(&status, format))?;
        }
        ClusterCommand::Plan(args) => {
            let client = Client::connect_with(endpoints, router_config).await?;
            return crate::membership::plan(&client, args, format).await;
        }
    }
    Ok(Outcome::Success)
}
