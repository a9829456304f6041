//! Request de-duplication across a shard leader whose wall clock jumps past the window (issue
//! 14, defect 1): a put is applied; the shard leader's wall clock jumps ten minutes ahead
//! (libfaketime; the nodes' window is one minute); the leader records more requests than
//! the 16,384 a shard always remembers; then the first put is retried with its request id,
//! well within a minute of its first attempt. The retry must get the first outcome (its
//! version) and write nothing, because leaders age records by their monotonic clocks.
//!
//! The negative control runs the same steps with `--unsafe-dedup-wall-clock` (leaders stamp
//! their wall clocks, as before the fix): the jump ages the record out and the retry
//! applies a second time.
//!
//! A short harness run then lets the clock nemeses (bumps of 1–5 minutes, strobes) loose on
//! nodes whose window is 10 s, every bump past it, and checks the history.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use ringkv_jepsen::checker::Validity;
use ringkv_jepsen::cluster::{Cluster, ClusterSpec, Placement};
use ringkv_jepsen::nemesis::{NemesisKind, Schedule};
use ringkv_jepsen::runner::{self, RunOptions};
use ringkv_jepsen::workload::Workload;
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_proto::v1::PutRequest;
use tokio::task::JoinSet;

/// The nodes' de-duplication window.
const WINDOW_MS: u64 = 60_000;
/// How far the shard leader's wall clock jumps: ten times the window.
const BUMP_S: i64 = 600;
/// Requests recorded after the first: more than the 16,384 a shard always remembers.
const LATER_REQUESTS: usize = 17_000;
/// Clients writing them at once (the batcher packs them into entries of up to 256).
const WRITERS: usize = 64;

/// The tests take turns: two clusters at once on a 2-core machine slow both.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `$RINGKV_BIN_DIR`, else the profile directory above this test's `deps/`.
fn bin_dir() -> anyhow::Result<std::path::PathBuf> {
    ringkv_launcher::binaries::env_bin_dir()
        .map_or_else(ringkv_launcher::binaries::executable_dir, Ok)
        .context("locating the binaries")
}

/// The versions of the first put and of its retry across the jump.
async fn put_retried_across_a_clock_jump(unsafe_wall_clock: bool) -> anyhow::Result<(u64, u64)> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let bin_dir = bin_dir()?;
    let dir = tempfile::tempdir()?;
    let mut node_args = vec![
        "--dedup-window-ms".to_string(),
        WINDOW_MS.to_string(),
        // The bumped node must keep leading the shard.
        "--no-balance-leaders".to_string(),
    ];
    if unsafe_wall_clock {
        node_args.push("--unsafe-dedup-wall-clock".to_string());
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
    let cluster = Cluster::start(spec, dir.path(), Placement::Loopback).await?;
    let leader = *cluster
        .wait_for_leaders(Duration::from_secs(60))
        .await?
        .get(&0)
        .context("a leader of shard 0")?;
    let router = cluster.router_addrs.first().context("a router")?.clone();
    let mut kv = KvClient::connect(format!("http://{router}")).await?;
    let retried = PutRequest {
        ttl_ms: 0,
        expires_at_ts: 0,
        key: b"retried".to_vec(),
        value: b"once".to_vec(),
        request_id: vec![0x5a; 16],
        lease: 0,
    };
    let first = kv.put(retried.clone()).await?.into_inner().version;
    let started = Instant::now();

    cluster.set_clock_offset(leader, BUMP_S)?;
    let mut writers = JoinSet::new();
    for writer in 0..WRITERS {
        let mut kv = kv.clone();
        writers.spawn(async move {
            for n in (writer..LATER_REQUESTS).step_by(WRITERS) {
                let put = PutRequest {
                    ttl_ms: 0,
                    expires_at_ts: 0,
                    key: format!("later-{n}").into_bytes(),
                    value: b"v".to_vec(),
                    request_id: Vec::new(),
                    lease: 0,
                };
                kv.put(put).await.with_context(|| format!("put {n}"))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(written) = writers.join_next().await {
        written??;
    }
    let leaders = cluster.leaders().await;
    ensure!(
        leaders.get(&0) == Some(&leader),
        "node {leader}, whose clock jumped, must lead shard 0 throughout: {leaders:?}"
    );

    let retry = kv.put(retried).await?.into_inner().version;
    ensure!(
        started.elapsed() < Duration::from_millis(WINDOW_MS),
        "the retry must come within the window of the first attempt ({:?} later)",
        started.elapsed()
    );
    Ok((first, retry))
}

/// A retry within the window, after the leader's wall clock jumped ten windows ahead and
/// more than 16,384 requests were recorded, gets the first put's version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_leaders_clock_jumped_past_the_window_is_recognised() -> anyhow::Result<()> {
    let (first, retry) = put_retried_across_a_clock_jump(false).await?;
    assert_eq!(retry, first, "the retry is answered with the first put's version");
    Ok(())
}

/// Negative control: with wall-clock stamps the jump ages the record out, and the retry
/// writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_wall_clock_stamps_apply_the_retry_twice() -> anyhow::Result<()> {
    let (first, retry) = put_retried_across_a_clock_jump(true).await?;
    assert!(
        retry > first,
        "with --unsafe-dedup-wall-clock the retry must apply again: version {retry} after {first}"
    );
    Ok(())
}

/// Clock bumps of 1–5 minutes and strobes on nodes whose de-duplication window is 10 s:
/// register (with compare-and-set) and set workloads, whose clients retry with their
/// request ids, come out valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_bumps_past_a_short_window_stay_valid() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let out = tempfile::tempdir()?;
    let mut options = RunOptions::new(
        Duration::from_secs(20),
        vec![NemesisKind::ClockBump, NemesisKind::ClockStrobe],
        bin_dir()?,
        out.path().to_path_buf(),
    );
    // Distinct from every other test's seed (it also names network namespaces).
    options.seed = 0x5eed_0401;
    options.concurrency = 4;
    options.schedule = Schedule {
        quiet: Duration::from_secs(2),
        fault: Duration::from_secs(5),
    };
    options.dedup_window_ms = Some(10_000);
    options.workloads = vec![Workload::Register, Workload::Set];
    let report = runner::run(options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    assert!(
        report.nemesis_log.iter().any(|line| line.contains("bumped")),
        "a clock was bumped past the window: {summary}"
    );
    Ok(())
}
