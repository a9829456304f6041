//! Durability across restarts of the whole cluster.

use ringkv_tests::{Cluster, ClusterOptions, WAIT};

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
