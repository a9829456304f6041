//! Hibernation: a quiet shard group stops its Raft timers on every replica, still serves a
//! write and a linearizable read promptly when woken, and elects a new leader when its
//! leader's node dies while it sleeps.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use ringkv_tests::{wait_until, Cluster, ClusterOptions, WAIT};

/// Quiet time before a group sleeps, and keep-alive interval, in these tests.
const HIBERNATE_AFTER_MS: &str = "1000";
const KEEPALIVE_INTERVAL_MS: &str = "200";
/// What "promptly" means for a request to a sleeping group (a wake is a tick, not an election).
const PROMPT: Duration = Duration::from_secs(2);

fn options() -> ClusterOptions {
    let mut options = ClusterOptions {
        shards: 4,
        ..ClusterOptions::default()
    };
    options.node_args.extend(
        [
            "--hibernate-after-ms",
            HIBERNATE_AFTER_MS,
            "--keepalive-interval-ms",
            KEEPALIVE_INTERVAL_MS,
            // Leader moves would keep waking groups; hibernation is what is tested here.
            "--no-balance-leaders",
        ]
        .map(String::from),
    );
    options
}

/// Whether every running replica of `shard` reports itself hibernating.
async fn all_asleep(cluster: &Cluster, shard: u32) -> anyhow::Result<bool> {
    let mut replicas = 0;
    for (id, node) in &cluster.nodes {
        if !node.is_running() {
            continue;
        }
        let status = cluster.node_status(*id).await?;
        for replica in status.replicas.iter().filter(|r| r.shard_id == Some(shard)) {
            replicas += 1;
            if !replica.hibernating {
                return Ok(false);
            }
        }
    }
    Ok(replicas > 0)
}

async fn wait_asleep(cluster: &Cluster, shard: u32) -> anyhow::Result<()> {
    wait_until(
        &format!("every replica of shard {shard} to hibernate"),
        WAIT,
        || async { all_asleep(cluster, shard).await.ok().filter(|asleep| *asleep) },
    )
    .await?;
    Ok(())
}

/// A sleeping group wakes for a write and a linearizable read, both served promptly, and
/// goes back to sleep when quiet again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_group_serves_writes_and_linearizable_reads() -> anyhow::Result<()> {
    let cluster = Cluster::start(options()).await?;
    let client = cluster.client().await?;
    let ring = cluster.ring(1).await?;
    let key = b"sleepy-key".to_vec();
    let shard = ring.shard_for_key(&key).0;
    client.put(&key, b"v1".to_vec()).await?;
    wait_asleep(&cluster, shard).await?;

    let started = Instant::now();
    let version = client.put(&key, b"v2".to_vec()).await?;
    let got = client.get(&key).await?.context("the key was written")?;
    let took = started.elapsed();
    assert_eq!((got.value.as_slice(), got.version), (&b"v2"[..], version));
    assert!(took < PROMPT, "write + read on a sleeping group took {took:?}");

    // Reads alone wake it too; after them it sleeps again.
    wait_asleep(&cluster, shard).await?;
    let started = Instant::now();
    let got = client.get(&key).await?.context("the key is still there")?;
    assert_eq!(got.version, version);
    assert!(
        started.elapsed() < PROMPT,
        "read on a sleeping group took {:?}",
        started.elapsed()
    );
    wait_asleep(&cluster, shard).await?;
    Ok(())
}

/// `kill -9` of the node leading a sleeping group: the followers wake (their keep-alive
/// lease runs out) and elect a new leader, and no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_group_elects_when_its_leader_dies() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(options()).await?;
    let client = cluster.client().await?;
    let ring = cluster.ring(1).await?;
    let key = b"orphan-key".to_vec();
    let shard = ring.shard_for_key(&key).0;
    let version = client.put(&key, b"kept".to_vec()).await?;
    wait_asleep(&cluster, shard).await?;
    let old_leader = cluster.wait_for_leaders(WAIT).await?[&shard];

    cluster.kill_node(old_leader)?;
    let killed = Instant::now();
    let new_leader = wait_until("a new leader of the sleeping shard", WAIT, || async {
        cluster
            .leaders()
            .await
            .get(&shard)
            .copied()
            .filter(|leader| *leader != old_leader)
    })
    .await?;
    let failover = killed.elapsed();
    eprintln!("shard {shard}: node {new_leader} leads {failover:?} after node {old_leader} died asleep");
    // Lease (3 × 200 ms) + jitter (≤ 500 ms) + pass (200 ms) + tick + a split vote or two.
    assert!(failover < Duration::from_secs(15), "failover took {failover:?}");

    let got = client.get(&key).await?.context("acknowledged write lost")?;
    assert_eq!((got.value.as_slice(), got.version), (&b"kept"[..], version));
    client.put(&key, b"after".to_vec()).await?;
    Ok(())
}
