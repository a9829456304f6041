//! Times 50 linearizable and 50 stale single-key reads sent straight to one node's shard:
//! `cargo run --example probe -- NODE_ADDR SHARD SHARDS`.

use std::time::Instant;

use anyhow::Context;
use ringkv_proto::v1;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, shard, shards] = args.as_slice() else {
        anyhow::bail!("usage: probe NODE_ADDR SHARD SHARDS");
    };
    let mut kv = v1::shard_kv_client::ShardKvClient::connect(format!("http://{addr}")).await?;
    let shard: u32 = shard.parse()?;
    let shards: u32 = shards.parse()?;
    anyhow::ensure!(shard < shards, "shard {shard} out of range (0..{shards})");
    let key = (0u64..1_000_000)
        .map(|i| format!("probe-{i}").into_bytes())
        .find(|k| ringkv_ring::shard::shard_of_hash(ringkv_ring::key_hash(k), shards).0 == shard)
        .context("no probe key hashes to the shard")?;
    for consistency in [0, 1] {
        let start = Instant::now();
        let mut errs = 0;
        for _ in 0..50 {
            if kv
                .read(v1::ShardReadRequest {
                    shard_id: shard,
                    keys: vec![key.clone()],
                    consistency,
                    read_ts: 0,
                    read_uncommitted: false,
                    max_bytes: 0,
                })
                .await
                .is_err()
            {
                errs += 1;
            }
        }
        println!(
            "consistency {consistency}: {:?} per read, errors {errs}",
            start.elapsed() / 50
        );
    }
    Ok(())
}
