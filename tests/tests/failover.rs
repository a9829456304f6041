//! Crashes: killing a node or a shard leader loses no acknowledged write.

use std::collections::BTreeMap;

use anyhow::Context;
use ringkv_tests::{Cluster, ClusterOptions, WAIT};

async fn write_keys(
    client: &ringkv_client::Client,
    prefix: &str,
    count: u32,
    written: &mut BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
) -> anyhow::Result<()> {
    for i in 0..count {
        let key = format!("{prefix}-{i}").into_bytes();
        let value = format!("{prefix}-value-{i}").into_bytes();
        let version = client.put(&key, value.clone()).await?;
        written.insert(key, (value, version));
    }
    Ok(())
}

async fn check_all(
    client: &ringkv_client::Client,
    written: &BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
) -> anyhow::Result<()> {
    for (key, (value, version)) in written {
        let got = client
            .get(key)
            .await?
            .unwrap_or_else(|| panic!("acknowledged key {} lost", String::from_utf8_lossy(key)));
        assert_eq!((&got.value, got.version), (value, *version));
    }
    Ok(())
}

/// `kill -9` of one node: every key written before is readable and new writes succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_one_node_loses_nothing() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client().await?;
    let mut written = BTreeMap::new();
    write_keys(&client, "before", 50, &mut written).await?;
    cluster.kill_node(2)?;
    cluster.wait_for_leaders(WAIT).await?;
    check_all(&client, &written).await?;
    write_keys(&client, "after", 50, &mut written).await?;
    check_all(&client, &written).await?;
    Ok(())
}

/// Killing the leader of a shard: writes to it resume once a new leader is elected, and
/// no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_shard_leader_then_writes_resume() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client().await?;
    let ring = cluster.ring(1).await?;
    let mut written = BTreeMap::new();
    write_keys(&client, "before", 40, &mut written).await?;

    let key = b"target-key".to_vec();
    let shard = ring.shard_for_key(&key).0;
    let old_leader = cluster.wait_for_leaders(WAIT).await?[&shard];
    client.put(&key, b"v1".to_vec()).await?;
    cluster.kill_node(old_leader)?;

    // The client's deadline covers the election: the write is retried until it lands.
    let version = client.put(&key, b"v2".to_vec()).await?;
    written.insert(key.clone(), (b"v2".to_vec(), version));
    let leaders = cluster.wait_for_leaders(WAIT).await?;
    assert_ne!(leaders[&shard], old_leader, "a new leader was elected");
    write_keys(&client, "after", 40, &mut written).await?;
    check_all(&client, &written).await?;

    // The old leader comes back as a follower and catches up.
    cluster.start_node(old_leader).await?;
    cluster
        .wait_replica_at(old_leader, shard, &key, version, WAIT)
        .await
        .context("the old leader to catch up")?;
    Ok(())
}
