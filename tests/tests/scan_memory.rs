//! The router's memory under streamed scans, from its process's resident set
//! (`/proc/<pid>/status`):
//!
//! - a streamed scan of a result much larger than the router's stream buffer keeps the
//!   router's memory bounded (sampled after every message). The measurement can fail: with
//!   `stream_buffer_bytes` at its 1 GiB maximum (each shard's fetch then capped at 4 MiB)
//!   the same run grows the router by about 30 MiB and fails; with the 1 MiB buffer used
//!   here it stays within a few MiB.
//! - streams opened and never read hold about 2 MiB each, never take unary requests'
//!   in-flight permits, and are cut at their idle deadline. Before streams had slots,
//!   buffers and deadlines of their own, 20 unread streams held 16 MiB each (their shard
//!   pages) and every permit of `max_inflight_requests = 20`, for good.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_proto::v1::{BatchWriteRequest, GetRequest, Mutation, MutationKind, ScanRequest};
use ringkv_tests::{wait_until, Cluster, ClusterOptions, WAIT};
use tonic::transport::Channel;
use tonic::Code;

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

/// Writes `KEYS` values of `VALUE_BYTES` under `big/`.
async fn load_big_values(kv: &mut KvClient<Channel>) -> anyhow::Result<()> {
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
    Ok(())
}

/// A streamed scan of every value.
fn scan_big_values() -> ScanRequest {
    ScanRequest {
        prefix: b"big/".to_vec(),
        ..ScanRequest::default()
    }
}

/// Streaming 48 MiB through a router with a 1 MiB stream buffer grows it by a few MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_scan_keeps_router_memory_bounded() -> anyhow::Result<()> {
    let options = ClusterOptions {
        nodes: 1,
        shards: 8,
        replication_factor: 1,
        router_config: vec!["stream_buffer_bytes = 1048576".into()],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(options).await?;
    let mut kv = cluster.kv().await?;
    let pid = cluster.router_pid().context("no router process")?;
    load_big_values(&mut kv).await?;
    let baseline = rss_bytes(pid)?;

    let mut stream = kv.scan_stream(scan_big_values()).await?.into_inner();
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

/// Streams opened and never read: (a) while they take every stream slot — more streams
/// than `max_inflight_requests` — another client's requests succeed at once, and one more
/// stream is refused at once; (b) the router's resident set grows by a few MiB per stream
/// (its stream buffer and messages), not by its shard pages of the whole fan-out; (c) the
/// idle deadline cuts them: their slots come back, and a reader that comes back gets
/// DEADLINE_EXCEEDED naming the deadline after the messages already sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_streams_neither_starve_requests_nor_hold_the_router() -> anyhow::Result<()> {
    const STREAMS: usize = 32;
    const IDLE: Duration = Duration::from_secs(3);
    /// Router memory one unread stream may hold: its 2 MiB buffer, the message being
    /// made and the ones its transport holds (256 KiB each), with room for allocator slack.
    /// (Measured: about 2 to 2.5 MiB.)
    const PER_STREAM_BYTES: u64 = 4 << 20;
    let options = ClusterOptions {
        nodes: 1,
        shards: 8,
        replication_factor: 1,
        router_config: vec![
            "max_inflight_requests = 20".into(),
            format!("max_open_streams = {STREAMS}"),
            format!("stream_idle_timeout_ms = {}", IDLE.as_millis()),
        ],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(options).await?;
    let mut kv = cluster.kv().await?;
    let pid = cluster.router_pid().context("no router process")?;
    load_big_values(&mut kv).await?;
    let baseline = rss_bytes(pid)?;
    let peak = AtomicU64::new(baseline);
    let sample = || -> anyhow::Result<()> {
        peak.fetch_max(rss_bytes(pid)?, Ordering::Relaxed);
        Ok(())
    };

    // Each stream on its own connection, as from many clients; none is ever read (the
    // client's receive window fills, then the router's transport stops taking messages).
    let opened_at = Instant::now();
    let mut unread = Vec::new();
    for index in 0..STREAMS {
        let mut client = cluster.kv().await?;
        let stream = client
            .scan_stream(scan_big_values())
            .await
            .with_context(|| format!("opening stream {index} of {STREAMS}"))?
            .into_inner();
        unread.push((client, stream));
    }
    let mut other = cluster.kv().await?;
    let refused = other
        .scan_stream(scan_big_values())
        .await
        .expect_err("every stream slot is taken");
    ensure!(
        refused.code() == Code::ResourceExhausted && refused.message().contains("max_open_streams"),
        "{refused:?}"
    );

    // (a) Unary requests of another client are served at once, more of them than
    // max_inflight_requests, one after the other.
    for index in 0..40 {
        let started = Instant::now();
        let got = other
            .get(GetRequest {
                key: format!("big/{index:05}").into_bytes(),
                ..GetRequest::default()
            })
            .await
            .with_context(|| format!("get {index} while {STREAMS} streams are unread"))?
            .into_inner();
        ensure!(got.found && got.value.len() == VALUE_BYTES);
        ensure!(
            started.elapsed() < Duration::from_secs(2),
            "get {index} took {:?}",
            started.elapsed()
        );
        sample()?;
    }

    // (c) The idle deadline cuts the streams: a slot comes back.
    let mut reopened = wait_until("a stream slot freed by the idle deadline", WAIT, || {
        let mut client = other.clone();
        let sampled = sample();
        async move {
            sampled.ok()?;
            client
                .scan_stream(scan_big_values())
                .await
                .ok()
                .map(tonic::Response::into_inner)
        }
    })
    .await?;
    let cut_after = opened_at.elapsed();
    ensure!(
        cut_after >= IDLE,
        "a slot came back after {cut_after:?}, before the idle deadline"
    );

    // (b) What the unread streams held.
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!(
        "{STREAMS} unread streams: router RSS baseline {} MiB, peak +{} MiB; cut after {cut_after:?}",
        baseline >> 20,
        growth >> 20
    );
    ensure!(
        growth < STREAMS as u64 * PER_STREAM_BYTES,
        "router RSS grew by {} MiB for {STREAMS} unread streams",
        growth >> 20
    );

    // The slot that came back serves a whole scan to a reader that reads.
    let mut streamed = 0usize;
    while let Some(message) = reopened.message().await? {
        streamed += message.entries.len();
    }
    ensure!(streamed == KEYS, "streamed {streamed} of {KEYS} keys");

    // A reader that comes back gets what was sent before the cut, then the cut.
    let (_client, mut stream) = unread.swap_remove(0);
    let mut received = 0usize;
    let status = loop {
        match tokio::time::timeout(WAIT, stream.message()).await {
            Ok(Ok(Some(message))) => received += message.entries.len(),
            Ok(Ok(None)) => anyhow::bail!("a cut stream ended without its status"),
            Ok(Err(status)) => break status,
            Err(_elapsed) => anyhow::bail!("a cut stream sent nothing for {WAIT:?}"),
        }
    };
    ensure!(
        status.code() == Code::DeadlineExceeded && status.message().contains("stream_idle_timeout_ms"),
        "{status:?}"
    );
    ensure!(
        received < KEYS,
        "the whole scan came through ({received} keys): not cut"
    );
    Ok(())
}
