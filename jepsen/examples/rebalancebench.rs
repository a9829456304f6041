//! Rebalance benchmark: a 3-node cluster (real processes) is loaded with `KEYS` values of
//! `VALUE_BYTES`, writers put steadily, a 4th node joins; measures the time until every shard's
//! voters match placement (and node 4 is active), replicas moved vs the consistent-hashing
//! minimum, leaders per node afterwards, and the write latency before, during and after the
//! move. Repeats `RUNS` times; prints a table, writes JSON, every write (CSV) and a latency plot per run.
//!
//! ```sh
//! cargo build --release --bins
//! cargo run --release -p ringkv-jepsen --example rebalancebench -- [KEYS] [VALUE_BYTES] [RUNS] [OUT_DIR]
//! # or, built: target/release/examples/rebalancebench ...
//! ```
//! Defaults: 100000 keys of 1024 bytes, 3 runs, results in `target/rebalancebench/`.
//! `REBALANCEBENCH_NODE_ARGS` adds flags to every node (e.g. `--config pacing.toml`).
//!
//! It lives with the fault-injection harness for its latency plot (`plot`); the cluster is
//! the end-to-end tests' (`ringkv-tests`, a dev-dependency), so `tests` needs no `jepsen`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ringkv_jepsen::plot::{latency_svg, Point, Window};
use ringkv_proto::v1::{self, plan_ring_change_request::Change};
use ringkv_tests::{wait_until, Cluster, ClusterOptions};

const SHARDS: u32 = 16;
const WRITERS: usize = 8;
const SETTLE_WAIT: Duration = Duration::from_secs(1800);

/// One acknowledged (or failed) write: when it started (since the run began) and how long.
#[derive(Clone, Copy)]
struct Sample {
    /// The shard of its key.
    shard: u32,
    start_s: f64,
    latency: Duration,
    ok: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn summary(samples: &[Sample], from_s: f64, to_s: f64) -> serde_json::Value {
    let mut latencies: Vec<Duration> = samples
        .iter()
        .filter(|s| s.ok && s.start_s >= from_s && s.start_s < to_s)
        .map(|s| s.latency)
        .collect();
    latencies.sort_unstable();
    let errors = samples
        .iter()
        .filter(|s| !s.ok && s.start_s >= from_s && s.start_s < to_s)
        .count();
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    serde_json::json!({
        "writes": latencies.len(),
        "errors": errors,
        "per_s": (latencies.len() as f64 / (to_s - from_s).max(0.001)).round(),
        "p50_ms": ms(percentile(&latencies, 0.5)),
        "p99_ms": ms(percentile(&latencies, 0.99)),
        "max_ms": ms(percentile(&latencies, 1.0)),
    })
}

async fn run_once(
    keys: usize,
    value_bytes: usize,
    run: usize,
    out: &std::path::Path,
) -> Result<serde_json::Value> {
    let mut options = ClusterOptions {
        nodes: 3,
        shards: SHARDS,
        ..ClusterOptions::default()
    };
    options
        .node_args
        .extend(["--membership-interval-ms".to_string(), "500".to_string()]);
    // Extra node flags to compare settings, e.g. `--config pacing.toml`.
    if let Ok(extra) = std::env::var("REBALANCEBENCH_NODE_ARGS") {
        options
            .node_args
            .extend(extra.split_whitespace().map(str::to_string));
    }
    let mut cluster = Cluster::start(options).await?;
    let client = cluster.client().await?;

    let preload_started = Instant::now();
    let value = vec![b'v'; value_bytes];
    let batch = (256 * 1024 / value_bytes.max(1)).clamp(1, 500);
    let mut pending = futures::stream::FuturesUnordered::new();
    for chunk_start in (0..keys).step_by(batch) {
        let mutations: Vec<ringkv_client::Mutation> = (chunk_start..(chunk_start + batch).min(keys))
            .map(|i| ringkv_client::Mutation::put(format!("pre/{i:09}"), value.clone()))
            .collect();
        let client = client.clone();
        pending.push(async move { client.batch_write(mutations).await });
        if pending.len() >= 8 {
            use futures::StreamExt;
            if let Some(result) = pending.next().await {
                result.context("preload")?;
            }
        }
    }
    {
        use futures::StreamExt;
        while let Some(result) = pending.next().await {
            result.context("preload")?;
        }
    }
    let preload_s = preload_started.elapsed().as_secs_f64();
    eprintln!("run {run}: preloaded {keys} x {value_bytes} B in {preload_s:.1}s");

    let origin = Instant::now();
    let origin_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let mut writers = Vec::new();
    for worker in 0..WRITERS {
        let (client, stop, samples) = (client.clone(), stop.clone(), samples.clone());
        let value = vec![b'w'; value_bytes];
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("load/{worker}/{n}");
                let shard =
                    ringkv_ring::shard::shard_of_hash(ringkv_ring::key_hash(key.as_bytes()), SHARDS).0;
                let started = Instant::now();
                let ok = client.put(key.as_bytes(), value.clone()).await.is_ok();
                let sample = Sample {
                    shard,
                    start_s: started.duration_since(origin).as_secs_f64(),
                    latency: started.elapsed(),
                    ok,
                };
                if let Ok(mut samples) = samples.lock() {
                    samples.push(sample);
                }
                n += 1;
            }
        }));
    }
    // A steady stretch before the join.
    let before = Duration::from_secs(5);
    wait_until("the load before the join", before * 2, || async {
        (origin.elapsed() >= before).then_some(())
    })
    .await?;

    let addr = cluster.start_node(4).await?;
    let plan = client
        .plan_ring_change(Change::Add(v1::NodeAddress {
            node_id: 4,
            addr: addr.clone(),
        }))
        .await?;
    let join_s = origin.elapsed().as_secs_f64();
    client.add_node(4, &addr).await?;
    wait_until("every shard settled and node 4 active", SETTLE_WAIT, || async {
        let status = client.rebalance_status().await.ok()?;
        let active = status
            .members_by_state
            .get(v1::MemberState::Active.label())
            .copied()
            == Some(4);
        (status.shards_settled == status.shards_total && active).then_some(())
    })
    .await?;
    let settled_s = origin.elapsed().as_secs_f64();
    let leaders_settled = wait_until("leaders spread", Duration::from_secs(120), || async {
        let leaders = cluster.leaders().await;
        if leaders.len() != SHARDS as usize {
            return None;
        }
        let mut per_node: BTreeMap<u64, usize> = (1..=4).map(|id| (id, 0)).collect();
        for leader in leaders.values() {
            *per_node.entry(*leader).or_default() += 1;
        }
        let (min, max) = (per_node.values().min()?, per_node.values().max()?);
        (max - min <= 2).then_some(per_node)
    })
    .await?;
    let balanced_s = origin.elapsed().as_secs_f64();
    // A steady stretch after.
    let after_until = balanced_s + 5.0;
    wait_until("the load after the move", Duration::from_secs(20), || async {
        (origin.elapsed().as_secs_f64() >= after_until).then_some(())
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.context("writer")?;
    }
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let end_s = origin.elapsed().as_secs_f64();

    let mut replicas = BTreeMap::new();
    for id in 1..=4u64 {
        replicas.insert(id, cluster.hosted_shards(id).await?.len());
    }
    let mut done: Vec<f64> = samples
        .iter()
        .filter(|s| s.ok)
        .map(|s| s.start_s + s.latency.as_secs_f64())
        .collect();
    done.sort_by(f64::total_cmp);
    let longest_gap_ms = done
        .windows(2)
        .filter(|w| w[1] >= join_s && w[0] <= balanced_s)
        .map(|w| (w[1] - w[0]) * 1000.0)
        .fold(0.0, f64::max);

    let result = serde_json::json!({
        "run": run,
        "origin_unix_ms": origin_unix_ms,
        "join_s": join_s,
        "settled_s": settled_s,
        "keys": keys,
        "value_bytes": value_bytes,
        "data_mb": (keys * value_bytes) as f64 / 1e6,
        "preload_s": preload_s,
        "rebalance_s": settled_s - join_s,
        "leaders_balanced_s": balanced_s - join_s,
        "replicas_moved": plan.replicas_moved,
        "ideal_replicas_moved": plan.ideal_replicas_moved,
        "replicas_per_node": replicas,
        "leaders_per_node": leaders_settled,
        "longest_write_gap_during_move_ms": longest_gap_ms.round(),
        "writes_before": summary(&samples, 0.0, join_s),
        "writes_during": summary(&samples, join_s, settled_s),
        "writes_after": summary(&samples, balanced_s, end_s),
    });
    let points: Vec<Point> = samples
        .iter()
        .map(|s| Point {
            time_s: s.start_s,
            latency_ms: s.latency.as_secs_f64() * 1000.0,
            outcome: if s.ok { "ok" } else { "fail" },
        })
        .collect();
    let windows = vec![
        Window {
            start_s: join_s,
            end_s: settled_s,
            label: "node 4 joins: replicas move".to_string(),
        },
        Window {
            start_s: settled_s,
            end_s: balanced_s,
            label: "leaders balance".to_string(),
        },
    ];
    let title =
        format!("write latency, 3 -> 4 nodes, {keys} x {value_bytes} B, {WRITERS} writers (run {run})");
    std::fs::write(
        out.join(format!("run-{run}.svg")),
        latency_svg(&title, &points, &windows),
    )?;
    let mut csv = String::from("start_s,latency_ms,ok,shard\n");
    for s in &samples {
        csv.push_str(&format!(
            "{:.6},{:.3},{},{}\n",
            s.start_s,
            s.latency.as_secs_f64() * 1000.0,
            s.ok,
            s.shard
        ));
    }
    std::fs::write(out.join(format!("run-{run}-writes.csv")), csv)?;
    std::fs::write(
        out.join(format!("run-{run}.json")),
        serde_json::to_string_pretty(&result)?,
    )?;
    Ok(result)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keys: usize = args.first().map_or(Ok(100_000), |a| a.parse()).context("KEYS")?;
    let value_bytes: usize = args
        .get(1)
        .map_or(Ok(1024), |a| a.parse())
        .context("VALUE_BYTES")?;
    let runs: usize = args.get(2).map_or(Ok(3), |a| a.parse()).context("RUNS")?;
    let out = PathBuf::from(
        args.get(3)
            .cloned()
            .unwrap_or_else(|| "target/rebalancebench".to_string()),
    );
    std::fs::create_dir_all(&out)?;
    let mut results = Vec::new();
    for run in 1..=runs {
        let result = run_once(keys, value_bytes, run, &out).await?;
        println!("{}", serde_json::to_string(&result)?);
        results.push(result);
    }
    println!(
        "\n{:>4} {:>8} {:>12} {:>10} {:>8} {:>22} {:>22} {:>10}",
        "run",
        "data MB",
        "rebalance s",
        "moved",
        "ideal",
        "during p50/p99/max ms",
        "before p50/p99 ms",
        "gap ms"
    );
    for r in &results {
        println!(
            "{:>4} {:>8.0} {:>12.1} {:>10} {:>8} {:>22} {:>22} {:>10}",
            r["run"].to_string(),
            r["data_mb"].as_f64().unwrap_or(0.0),
            r["rebalance_s"].as_f64().unwrap_or(0.0),
            r["replicas_moved"].to_string(),
            r["ideal_replicas_moved"].to_string(),
            format!(
                "{}/{}/{}",
                r["writes_during"]["p50_ms"], r["writes_during"]["p99_ms"], r["writes_during"]["max_ms"]
            ),
            format!(
                "{}/{}",
                r["writes_before"]["p50_ms"], r["writes_before"]["p99_ms"]
            ),
            r["longest_write_gap_during_move_ms"],
        );
    }
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&results)?)?;
    println!("\nresults and plots in {}", out.display());
    Ok(())
}
