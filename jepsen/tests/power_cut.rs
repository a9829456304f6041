//! A power cut of every node, then linearizable reads at once.
//!
//! The cut rolls every state machine back to its last sync (its entries are in the synced
//! log and are applied again). Upstream openraft restored the leader of each shard as leader
//! of the same term, without an election and without a new blank entry, and such a leader
//! served reads from the rolled-back state (openraft patch 4); since patch 6 a restarted
//! leader is elected anew. Either way no read may come before the whole log is applied: a
//! commit index restarts at the rolled-back applied index, below writes that were
//! acknowledged before the cut.
//!
//! Needs root (network namespaces: a node keeps its address across the cut) and FUSE.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use ringkv_jepsen::testing;

const KEYS: u32 = 20;
const ROUNDS: u32 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_restored_after_a_power_cut_serves_no_stale_read() -> anyhow::Result<()> {
    if !testing::fuse_or_skip("a_leader_restored_after_a_power_cut_serves_no_stale_read") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut cluster = testing::three_nodes_on_faultfs("c07", 1, &[], dir.path()).await?;
    let client = cluster.client(Duration::from_secs(5)).await?;
    let mut acknowledged = BTreeMap::new();
    for round in 0..ROUNDS {
        // Writes right up to the cut: the state machines have not synced the last ones.
        for key in 0..KEYS {
            let value = format!("round {round}").into_bytes();
            let version = client.put(format!("key-{key}"), value.clone()).await?;
            acknowledged.insert(key, (value, version));
        }
        for id in cluster.node_ids() {
            cluster.kill_node(id)?;
            cluster.lose_unsynced(id)?;
        }
        for id in cluster.node_ids() {
            cluster.start_node(id).await?;
        }
        // Read every key as soon as the cluster answers.
        for (key, (value, version)) in &acknowledged {
            let what = format!("a linearizable read of key-{key} after the cut");
            let got = ringkv_launcher::wait_for(&what, Duration::from_secs(60), || async {
                client.get(format!("key-{key}")).await.ok()
            })
            .await?;
            let got = got.with_context(|| {
                format!("round {round}: key-{key} (acknowledged at version {version}) read as missing after the cut")
            })?;
            assert_eq!(
                (String::from_utf8_lossy(&got.value), got.version),
                (String::from_utf8_lossy(value), *version),
                "round {round}: key-{key} read stale after a power cut of every node"
            );
        }
    }
    Ok(())
}
