//! A streamed scan of a result much larger than the router's scan buffer keeps the router's
//! memory bounded: the router process's resident set is sampled after every message.
//!
//! The measurement can fail: with `scan_buffer_bytes` at its 1 GiB maximum (each shard's
//! fetch then capped at 4 MiB) the same run grows the router by about 30 MiB and fails;
//! with the 1 MiB buffer used here it stays within a few MiB.

use anyhow::{ensure, Context};
use ringkv_proto::v1::{BatchWriteRequest, Mutation, MutationKind, ScanRequest};
use ringkv_tests::{Cluster, ClusterOptions};

const VALUE_BYTES: usize = 32 << 10;
const KEYS: usize = 1536; // 48 MiB of values
const BATCH: usize = 32; // 1 MiB per batch write

/// Resident set of a process, in bytes (Linux `/proc`).
fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmRSS line")?
        .parse()?;
    Ok(kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_scan_keeps_router_memory_bounded() -> anyhow::Result<()> {
    let options = ClusterOptions {
        nodes: 1,
        shards: 8,
        replication_factor: 1,
        router_config: vec!["scan_buffer_bytes = 1048576".into()],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(options).await?;
    let mut kv = cluster.kv().await?;
    let pid = cluster.router_pid().context("no router process")?;
    for batch in 0..KEYS / BATCH {
        let mutations = (0..BATCH)
            .map(|i| {
                let n = batch * BATCH + i;
                Mutation {
                    key: format!("big/{n:05}").into_bytes(),
                    kind: MutationKind::Put as i32,
                    value: vec![(n % 251) as u8; VALUE_BYTES],
                }
            })
            .collect();
        kv.batch_write(BatchWriteRequest {
            mutations,
            request_id: vec![],
        })
        .await?;
    }
    let baseline = rss_bytes(pid)?;

    let mut stream = kv
        .scan_stream(ScanRequest {
            prefix: b"big/".to_vec(),
            ..ScanRequest::default()
        })
        .await?
        .into_inner();
    let mut peak = baseline;
    let mut received = 0usize;
    let mut bytes = 0usize;
    let mut previous: Option<Vec<u8>> = None;
    while let Some(message) = stream.message().await? {
        for entry in &message.entries {
            ensure!(previous.as_ref().is_none_or(|p| *p < entry.key), "out of order");
            ensure!(entry.value.len() == VALUE_BYTES, "short value");
            previous = Some(entry.key.clone());
            bytes += entry.value.len();
        }
        received += message.entries.len();
        peak = peak.max(rss_bytes(pid)?);
    }
    ensure!(received == KEYS, "streamed {received} of {KEYS} keys");
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "streamed {} MiB; router RSS baseline {} MiB, peak {} MiB (+{} MiB)",
        bytes >> 20,
        baseline >> 20,
        peak >> 20,
        growth >> 20
    );
    ensure!(
        growth < 24 << 20,
        "router RSS grew by {} MiB while streaming {} MiB",
        growth >> 20,
        bytes >> 20
    );
    Ok(())
}
