//! Snapshot installation: a follower that missed purged log entries catches up.

use ringkv_tests::{wait_until, Cluster, ClusterOptions, WAIT};

/// With a tiny snapshot threshold, a follower that was down while the leader purged its
/// log catches up by installing a snapshot, then serves every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_installs_snapshot() -> anyhow::Result<()> {
    let mut options = ClusterOptions {
        shards: 1,
        ..ClusterOptions::default()
    };
    options.node_args.extend([
        "--snapshot-logs-since-last".to_string(),
        "20".to_string(),
        "--logs-to-keep-after-snapshot".to_string(),
        "0".to_string(),
    ]);
    let mut cluster = Cluster::start(options).await?;
    let client = cluster.client().await?;
    let leader = cluster.wait_for_leaders(WAIT).await?[&0];
    let follower = (1..=3u64).find(|id| *id != leader).expect("a follower");
    let follower_applied = cluster.applied_index(follower, 0).await?.unwrap_or(0);
    cluster.kill_node(follower)?;

    let mut written = Vec::new();
    for i in 0..200u32 {
        let key = format!("snap-{i}").into_bytes();
        let version = client.put(&key, vec![i as u8; 100]).await?;
        written.push((key, vec![i as u8; 100], version));
    }
    // The leader purged entries the follower never saw.
    let purged = wait_until("the leader to purge its log", WAIT, || async {
        let status = cluster.node_status(leader).await.ok()?;
        let replica = status.replicas.iter().find(|r| r.shard_id == Some(0))?;
        (replica.purged_index > follower_applied + 1).then_some(replica.purged_index)
    })
    .await?;

    cluster.start_node(follower).await?;
    let last_version = written.last().map(|(_, _, v)| *v).unwrap_or(0);
    wait_until("the follower to catch up", WAIT, || async {
        let applied = cluster.applied_index(follower, 0).await.ok()??;
        (applied >= last_version).then_some(())
    })
    .await?;
    let status = cluster.node_status(follower).await?;
    let replica = status
        .replicas
        .iter()
        .find(|r| r.shard_id == Some(0))
        .expect("follower hosts shard 0");
    assert!(
        replica.snapshot_index >= purged,
        "the follower installed a snapshot covering the purged entries ({} < {purged})",
        replica.snapshot_index
    );
    for (key, value, version) in &written {
        let got = cluster
            .read_replica(follower, 0, key)
            .await?
            .expect("key on the follower");
        assert_eq!((&got.0, got.1), (value, *version));
    }
    Ok(())
}
