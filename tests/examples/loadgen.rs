//! A first, simple load loop (not the benchmark harness): N concurrent clients doing puts,
//! then gets, against a router; prints ops/s and latency percentiles.
//!
//! `cargo run --release -p ringkv-tests --example loadgen -- 127.0.0.1:7000 64 10`
//! (endpoint, concurrency, seconds per phase).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

struct Phase {
    ops: usize,
    errors: usize,
    latencies_us: Vec<u64>,
}

async fn run_phase(client: &ringkv_client::Client, concurrency: usize, seconds: u64, write: bool) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let client = client.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut i = 0u64;
            let value = vec![b'x'; 256];
            while !stop.load(Ordering::Relaxed) {
                let key = format!("load-{worker}-{}", i % 1000).into_bytes();
                let start = Instant::now();
                let ok = if write {
                    client.put(&key, value.clone()).await.is_ok()
                } else {
                    client.get(&key).await.is_ok()
                };
                latencies.push(start.elapsed().as_micros() as u64);
                if !ok {
                    errors += 1;
                }
                i += 1;
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut phase = Phase {
        ops: 0,
        errors: 0,
        latencies_us: Vec::new(),
    };
    for task in tasks {
        if let Ok((latencies, errors)) = task.await {
            phase.ops += latencies.len();
            phase.errors += errors;
            phase.latencies_us.extend(latencies);
        }
    }
    phase.latencies_us.sort_unstable();
    phase
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:7000".to_string());
    let concurrency: usize = args
        .get(2)
        .map(|s| s.parse())
        .transpose()
        .context("concurrency")?
        .unwrap_or(64);
    let seconds: u64 = args
        .get(3)
        .map(|s| s.parse())
        .transpose()
        .context("seconds")?
        .unwrap_or(10);
    let client = ringkv_client::Client::connect(vec![endpoint]).await?;
    for (name, write) in [("put", true), ("get", false)] {
        let phase = run_phase(&client, concurrency, seconds, write).await;
        println!(
            "{name}: {} ops in {seconds}s = {:.0} ops/s, errors {}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (concurrency {concurrency}, 256 B values)",
            phase.ops,
            phase.ops as f64 / seconds as f64,
            phase.errors,
            percentile(&phase.latencies_us, 0.50) as f64 / 1000.0,
            percentile(&phase.latencies_us, 0.99) as f64 / 1000.0,
            phase.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0,
        );
    }
    Ok(())
}
