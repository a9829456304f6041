use ringkv_proto::v1;
use std::time::Instant;
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut kv = v1::shard_kv_client::ShardKvClient::connect(format!("http://{}", args[1])).await?;
    let shard: u32 = args[2].parse()?;
    let shards: u32 = args[3].parse()?;
    let key = (0..)
        .map(|i| format!("probe-{i}").into_bytes())
        .find(|k| ringkv_ring::shard::shard_of_hash(ringkv_ring::key_hash(k), shards).0 == shard)
        .unwrap();
    for consistency in [0, 1] {
        let start = Instant::now();
        let mut errs = 0;
        for _ in 0..50 {
            if kv
                .read(v1::ShardReadRequest {
                    shard_id: shard,
                    keys: vec![key.clone()],
                    consistency,
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
