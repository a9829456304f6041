//! Counts each node's shard replicas, the leaders among them and how many hibernate:
//! `cargo run --example sleepers -- NODE_ADDR...`.

use ringkv_proto::v1;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addrs: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(!addrs.is_empty(), "usage: sleepers NODE_ADDR...");
    for addr in addrs {
        let mut admin = v1::admin_client::AdminClient::connect(format!("http://{addr}"))
            .await?
            .max_decoding_message_size(64 << 20);
        let status = admin
            .node_status(v1::NodeStatusRequest::default())
            .await?
            .into_inner();
        let shards: Vec<&v1::ReplicaInfo> = status.replicas.iter().filter(|r| r.shard_id.is_some()).collect();
        let leaders = shards
            .iter()
            .filter(|r| r.role() == v1::ReplicaRole::Leader)
            .count();
        let asleep = shards.iter().filter(|r| r.hibernating).count();
        println!(
            "node {} ({addr}): {} shard replicas, {leaders} leaders, {asleep} hibernating",
            status.node_id,
            shards.len()
        );
    }
    Ok(())
}
