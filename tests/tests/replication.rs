//! Writes through the router land where the ring says and reach every replica.

use ringkv_ring::ShardId;
use ringkv_tests::{Cluster, ClusterOptions, WAIT};

/// Every acknowledged write is readable from every replica of its shard, the replicas are
/// exactly the nodes placement names, and nodes outside placement do not host the shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_reach_every_placement_replica() -> anyhow::Result<()> {
    let options = ClusterOptions {
        nodes: 4,
        shards: 8,
        replication_factor: 3,
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(options).await?;
    let client = cluster.client().await?;
    let ring = cluster.ring(1).await?;

    // Each node hosts exactly the shards placement gives it.
    for id in 1..=4u64 {
        let status = cluster.node_status(id).await?;
        let mut hosted: Vec<u32> = status.replicas.iter().filter_map(|r| r.shard_id).collect();
        hosted.sort_unstable();
        let expected: Vec<u32> = ring.shards_of_node(id).into_iter().map(|s| s.0).collect();
        assert_eq!(hosted, expected, "node {id} hosts the shards placement says");
    }

    let mut written = Vec::new();
    for i in 0..64u32 {
        let key = format!("key-{i}").into_bytes();
        let value = format!("value-{i}").into_bytes();
        let version = client.put(&key, value.clone()).await?;
        written.push((key, value, version));
    }
    for (key, value, version) in &written {
        let shard = ring.shard_for_key(key);
        let replicas = ring.replicas(shard);
        assert_eq!(replicas.len(), 3);
        for replica in replicas {
            let got = cluster
                .wait_replica_at(replica, shard.0, key, *version, WAIT)
                .await?;
            assert_eq!(&got, value, "replica {replica} of shard {shard} holds the value");
        }
        for other in (1..=4u64).filter(|id| !ring.replicas(shard).contains(id)) {
            let read = cluster.read_replica(other, shard.0, key).await;
            let err = read.expect_err("a non-replica must not serve the shard");
            assert!(err.to_string().contains("not hosted"), "unexpected error: {err}");
        }
        // And the router's linearizable read agrees.
        let read = client.get(key).await?.expect("key present");
        assert_eq!((&read.value, read.version), (value, *version));
    }
    // Keys spread over every shard (64 keys over 8 shards).
    let shards: std::collections::BTreeSet<ShardId> =
        written.iter().map(|(k, _, _)| ring.shard_for_key(k)).collect();
    assert_eq!(shards.len(), 8);
    Ok(())
}

/// Followers apply a write within `commit_propagation_delay_ms` even when nothing follows
/// it: the leader holds back an AppendEntries that would only carry the commit index, but
/// not until the next heartbeat. Heartbeats here are 1.5 s apart and each write may wait
/// 500 ms; the writes go out every 300 ms for 1.8 s, so some of them fall more than 500 ms
/// before a heartbeat: a follower that only learned commits from heartbeats fails this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_apply_a_lone_write_without_waiting_for_a_heartbeat() -> anyhow::Result<()> {
    let options = ClusterOptions {
        nodes: 3,
        shards: 2,
        replication_factor: 3,
        node_args: [
            "--heartbeat-interval-ms",
            "1500",
            "--election-timeout-min-ms",
            "3000",
            "--commit-propagation-delay-ms",
            "10",
            "--hibernate-after-ms",
            "0",
        ]
        .map(String::from)
        .to_vec(),
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(options).await?;
    let client = cluster.client().await?;
    let ring = cluster.ring(1).await?;
    let mut pace = tokio::time::interval(std::time::Duration::from_millis(300));
    for i in 0..7u32 {
        pace.tick().await;
        let key = format!("lone-{i}").into_bytes();
        let version = client.put(&key, b"v".to_vec()).await?;
        let shard = ring.shard_for_key(&key);
        for replica in ring.replicas(shard) {
            let timeout = std::time::Duration::from_millis(500);
            cluster
                .wait_replica_at(replica, shard.0, &key, version, timeout)
                .await?;
        }
    }
    Ok(())
}
