//! A node whose disk fills up under write load stops itself, visibly, and loses nothing
//! (issue 14, disks).
//!
//! The full disk (`ringkv-faultfs fill`) fails the next write that needs new space with
//! `ENOSPC`: an append to the write-ahead log, almost at once under load. The node must stop
//! (exit code 74, `storage/fail_stop.rs`) rather than keep running with the Raft group whose
//! write failed stopped inside it; the other two nodes keep serving; every write acknowledged
//! before, during and after is still there; and once the disk has space again the node
//! restarts from what it synced and catches up.
//!
//! Needs root (network namespaces: the node keeps its address across the restart) and FUSE.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use ringkv_jepsen::cluster::Cluster;
use ringkv_jepsen::testing;
use tokio_util::sync::CancellationToken;

const WRITERS: u64 = 4;
/// Writes that must succeed after the node stopped: the cluster serves without it.
const WRITES_WITHOUT_THE_NODE: usize = 50;
/// Longest the node may go on after its disk filled up under load.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_up_stops_and_loses_nothing() -> anyhow::Result<()> {
    if !testing::fuse_or_skip("a_node_whose_disk_fills_up_stops_and_loses_nothing") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut cluster = testing::three_nodes_on_faultfs("disk-full", 2, &[], dir.path()).await?;
    let client = cluster.client(Duration::from_secs(5)).await?;
    let leaders = cluster.wait_for_leaders(Duration::from_secs(30)).await?;
    // The leader of a shard: its own append fails, so a new leader must take over.
    let victim = *leaders.values().next().context("no shard leader")?;

    let stop = CancellationToken::new();
    let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (client, stop, acknowledged) = (client.clone(), stop.clone(), acknowledged.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                let (key, value) = (format!("disk-full/w{writer}/{n}"), format!("value {n}"));
                let put = client.put(key.clone(), value.clone().into_bytes());
                tokio::select! {
                    _ = stop.cancelled() => break,
                    result = put => if let Ok(version) = result {
                        acknowledged.lock().expect("lock").insert(key, (value, version));
                    },
                }
                n += 1;
            }
        }));
    }
    let count =
        |acknowledged: &Arc<Mutex<BTreeMap<String, (String, u64)>>>| acknowledged.lock().expect("lock").len();
    ringkv_launcher::wait_for("writes before the fill", Duration::from_secs(30), || async {
        (count(&acknowledged) >= 100).then_some(())
    })
    .await?;

    cluster.fill_disk(victim, 0)?;
    let exit = ringkv_launcher::wait_for("the node to stop on its full disk", STOP_DEADLINE, || {
        let exited = cluster.reap_node(victim);
        async move { exited.transpose() }
    })
    .await;
    let exit = match exit {
        Ok(exit) => exit?,
        Err(err) => {
            stop.cancel();
            let stats = cluster.disk_stats();
            bail!("node {victim} still runs {STOP_DEADLINE:?} after its disk filled up ({err:#}); disk counters {stats:?}");
        }
    };
    assert_eq!(
        exit,
        Some(74),
        "node {victim} stopped with {exit:?}, not the storage-failure code 74"
    );
    let log = std::fs::read_to_string(dir.path().join(format!("node-{victim}.log")))?;
    assert!(
        log.contains("stopping the node (fail-stop)"),
        "node {victim}'s log says nothing of why it stopped"
    );
    let enospc = cluster
        .disk_stats()
        .into_iter()
        .find(|(id, _)| *id == victim)
        .map_or(0, |(_, stats)| stats.enospc_errors);
    assert!(enospc > 0, "the node stopped, but not on a full disk");

    // The other two serve on.
    let after_stop = count(&acknowledged);
    ringkv_launcher::wait_for(
        "writes without the stopped node",
        Duration::from_secs(60),
        || async { (count(&acknowledged) >= after_stop + WRITES_WITHOUT_THE_NODE).then_some(()) },
    )
    .await?;
    stop.cancel();
    for writer in writers {
        writer.await?;
    }

    // Space again; the machine reboots (what was never synced is lost) and the node restarts.
    cluster.unfill_disk(victim)?;
    cluster.lose_unsynced(victim)?;
    cluster.start_node(victim).await?;
    wait_for_catch_up(&cluster, victim).await?;

    let acknowledged = acknowledged.lock().expect("lock").clone();
    for (key, (value, version)) in &acknowledged {
        let got = ringkv_launcher::wait_for(&format!("a read of {key}"), Duration::from_secs(30), || async {
            client.get(key.clone()).await.ok()
        })
        .await?
        .with_context(|| format!("{key}, acknowledged at version {version}, is lost"))?;
        assert_eq!(
            (String::from_utf8_lossy(&got.value).into_owned(), got.version),
            (value.clone(), *version),
            "{key} reads back other than acknowledged"
        );
    }
    Ok(())
}

/// Waits until every replica on `victim` has applied as far as the other nodes' replicas of
/// the same group had when the wait began.
async fn wait_for_catch_up(cluster: &Cluster, victim: usize) -> anyhow::Result<()> {
    let mut targets = BTreeMap::new();
    for (id, status) in cluster.statuses().await {
        if id == victim {
            continue;
        }
        for replica in status.replicas {
            let target = targets.entry(replica.shard_id).or_insert(0);
            *target = replica.applied_index.max(*target);
        }
    }
    ringkv_launcher::wait_for(
        &format!("node {victim} to catch up"),
        Duration::from_secs(60),
        || async {
            let status = cluster.node_status(victim).await?;
            let applied: BTreeMap<Option<u32>, u64> = status
                .replicas
                .iter()
                .map(|replica| (replica.shard_id, replica.applied_index))
                .collect();
            targets
                .iter()
                .all(|(group, target)| applied.get(group).is_some_and(|index| index >= target))
                .then_some(())
        },
    )
    .await?;
    Ok(())
}
