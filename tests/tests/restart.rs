//! Durability across restarts of the whole cluster.

use ringkv_proto::v1::ReplicaRole;
use ringkv_tests::{wait_until, Cluster, ClusterOptions, WAIT};

/// Stopping every node (gracefully, then by `kill -9`) and restarting them brings back
/// every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_keeps_acknowledged_data() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client().await?;
    let mut written = Vec::new();
    for i in 0..60u32 {
        let key = format!("durable-{i}").into_bytes();
        let version = client.put(&key, format!("v{i}").into_bytes()).await?;
        written.push((key, format!("v{i}").into_bytes(), version));
    }
    for round in 0..2 {
        for id in 1..=3u64 {
            if round == 0 {
                cluster.stop_node(id).await?;
            } else {
                cluster.kill_node(id)?;
            }
        }
        for id in 1..=3u64 {
            cluster.start_node(id).await?;
        }
        cluster.wait_for_leaders(WAIT).await?;
        for (key, value, version) in &written {
            let got = client
                .get(key)
                .await?
                .expect("acknowledged key survives a restart");
            assert_eq!((&got.value, got.version), (value, *version));
        }
        // The restarted cluster accepts writes again.
        let key = format!("after-restart-{round}").into_bytes();
        let version = client.put(&key, b"x".to_vec()).await?;
        written.push((key, b"x".to_vec(), version));
    }
    // Init is idempotent: running it again reports the existing cluster.
    let again = cluster.init().await?;
    assert!(again.already_initialized);
    Ok(())
}

/// The highest term any running node reports for `shard` with a leader known, if any.
async fn led_term(cluster: &Cluster, shard: u32) -> Option<u64> {
    let mut best = None;
    for id in 1..=3u64 {
        let Ok(status) = cluster.node_status(id).await else {
            continue;
        };
        for replica in status.replicas {
            if replica.shard_id == Some(shard) && replica.role == ReplicaRole::Leader as i32 {
                best = best.max(Some(replica.term));
            }
        }
    }
    best
}

/// A leader killed and restarted at once does not lead its old term again (a leader sends
/// entries while its own sync runs, so a power cut can take from it entries its followers
/// hold; leading the same term again would reuse their log ids). Every shard it led elects a
/// leader at a higher term, and the writes acknowledged before are all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_does_not_resume_its_term() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client().await?;
    let mut written = Vec::new();
    for i in 0..30u32 {
        let key = format!("term-{i}").into_bytes();
        written.push((key.clone(), client.put(&key, b"v".to_vec()).await?));
    }
    let leaders = cluster.wait_for_leaders(WAIT).await?;
    let mut counts = std::collections::BTreeMap::new();
    for leader in leaders.values() {
        *counts.entry(*leader).or_insert(0) += 1;
    }
    let (&victim, _) = counts
        .iter()
        .max_by_key(|(_, count)| **count)
        .ok_or_else(|| anyhow::anyhow!("no leaders"))?;
    let mut led = Vec::new();
    for replica in cluster.node_status(victim).await?.replicas {
        if let (Some(shard), true) = (replica.shard_id, replica.role == ReplicaRole::Leader as i32) {
            led.push((shard, replica.term));
        }
    }
    anyhow::ensure!(!led.is_empty(), "node {victim} leads no shard");
    cluster.kill_node(victim)?;
    cluster.start_node(victim).await?;
    for (shard, term) in led {
        let what = format!("shard {shard} to elect a leader after term {term}");
        wait_until(&what, WAIT, || async {
            led_term(&cluster, shard).await.filter(|led| *led > term)
        })
        .await?;
    }
    for (key, version) in &written {
        let got = client.get(key).await?.expect("acknowledged key");
        assert_eq!(got.version, *version);
    }
    Ok(())
}
