//! The timestamp oracle across a leader whose clock ran ahead: the system leader's wall clock
//! jumps five minutes forward (libfaketime), it hands out timestamps from that clock, and is
//! then killed. The next leader's clock is right, five minutes behind what was handed out; it
//! must still hand out larger timestamps, because it starts above the bound the old leader
//! committed, not at its own clock.
//!
//! The negative control runs the same steps with `--unsafe-tso-ignore-bound` (a new leader
//! starts at its clock) and must see timestamps go back.

use std::time::Duration;

use anyhow::Context;
use ringkv_jepsen::cluster::{Cluster, ClusterSpec, Placement};

/// Bits of a timestamp's logical counter.
const LOGICAL_BITS: u32 = 18;
/// How far the system leader's clock jumps.
const BUMP_S: i64 = 300;

/// The two tests take turns: two clusters at once on a 2-core machine slow both.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// The timestamp taken before the leader change, and the first one after it.
async fn timestamps_around_a_fast_leader(unsafe_ignore_bound: bool) -> anyhow::Result<(u64, u64)> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let bin_dir = ringkv_launcher::binaries::env_bin_dir()
        .map_or_else(ringkv_launcher::binaries::executable_dir, Ok)
        .context("locating the binaries")?;
    let dir = tempfile::tempdir()?;
    let mut node_args: Vec<String> = [
        "--heartbeat-interval-ms",
        "100",
        "--election-timeout-min-ms",
        "500",
    ]
    .map(String::from)
    .to_vec();
    if unsafe_ignore_bound {
        node_args.push("--unsafe-tso-ignore-bound".to_string());
    }
    let spec = ClusterSpec {
        nodes: 3,
        slots: 3,
        shards: 1,
        replication_factor: 3,
        node_args,
        routers: 1,
        router_args: Vec::new(),
        bin_dir,
        fake_clock: true,
        disk_faults: false,
        tls: false,
    };
    let mut cluster = Cluster::start(spec, dir.path(), Placement::Loopback).await?;
    let client = cluster.client(Duration::from_secs(5)).await?;
    let leader = ringkv_launcher::wait_for("a system leader", Duration::from_secs(60), || async {
        cluster.system_leader().await
    })
    .await?;

    // The leader's clock jumps ahead; wait until its timestamps show it.
    cluster.set_clock_offset(leader, BUMP_S)?;
    let ahead_ms = now_ms() + (BUMP_S as u64 * 1000) / 2;
    let before = ringkv_launcher::wait_for(
        "timestamps from the fast clock",
        Duration::from_secs(30),
        || async {
            let ts = client.timestamp().await.ok()?;
            (ts >> LOGICAL_BITS > ahead_ms).then_some(ts)
        },
    )
    .await?;

    cluster.kill_node(leader)?;
    let after = ringkv_launcher::wait_for(
        "a timestamp from the next leader",
        Duration::from_secs(60),
        || async { client.timestamp().await.ok() },
    )
    .await?;
    let new_leader = cluster.system_leader().await.context("a new system leader")?;
    assert_ne!(new_leader, leader, "the killed node cannot lead");
    Ok((before, after))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_after_one_with_a_fast_clock_hands_out_larger_timestamps() -> anyhow::Result<()> {
    let (before, after) = timestamps_around_a_fast_leader(false).await?;
    assert!(
        after > before,
        "timestamp {after} after the leader change, {before} before it"
    );
    Ok(())
}

/// Negative control: without the persisted bound the next leader starts at its own clock,
/// minutes behind what the fast leader handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_ignoring_the_bound_lets_timestamps_go_back() -> anyhow::Result<()> {
    let (before, after) = timestamps_around_a_fast_leader(true).await?;
    assert!(
        after < before,
        "with --unsafe-tso-ignore-bound timestamps must go back: {after} after, {before} before"
    );
    Ok(())
}
