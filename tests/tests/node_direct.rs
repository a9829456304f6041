//! Node-level behaviour driven directly through `ShardKv` (no router).

use ringkv_proto::v1;
use ringkv_tests::{wait_until, Cluster, ClusterOptions, WAIT};

/// A cluster bootstraps, every shard elects a leader, and a write at the leader is
/// readable from every replica that placement names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_at_leader_reaches_every_replica() -> anyhow::Result<()> {
    let mut cluster = Cluster::nodes_only(ClusterOptions::default()).await?;
    let leaders = cluster.wait_for_leaders(WAIT).await?;
    let ring = cluster.ring(1).await?;
    let key = b"hello".to_vec();
    let shard = ring.shard_for_key(&key).0;
    let leader = leaders[&shard];
    let response = cluster
        .shard_kv(leader)
        .await?
        .write(v1::ShardWriteRequest {
            shard_id: shard,
            request_id: vec![7; 16],
            ops: vec![v1::WriteOp {
                key: key.clone(),
                kind: v1::WriteKind::Put as i32,
                value: b"world".to_vec(),
                expected_version: None,
            }],
        })
        .await?
        .into_inner();
    let version = response.results[0].version;
    assert!(version > 0);
    for replica in ring.replicas(ringkv_ring::ShardId(shard)) {
        let got = wait_until("replica to apply", WAIT, || async {
            cluster.read_replica(replica, shard, &key).await.ok().flatten()
        })
        .await?;
        assert_eq!(got, (b"world".to_vec(), version));
    }
    cluster.kill_node(1)?;
    Ok(())
}
