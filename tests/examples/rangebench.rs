//! Range-query figures against a running cluster (e.g. `kvctl playground`): bulk-load N keys,
//! then time a full streamed scan, a paged scan and a count, sampling the router's RSS.
//!
//! ```text
//! cargo run --release -p ringkv-tests --example rangebench -- \
//!     --router 127.0.0.1:7000 --keys 1000000 --value-bytes 100 [--router-pid PID] [--skip-load]
//! ```

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt};
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_proto::v1::{BatchWriteRequest, CountRequest, Mutation, MutationKind, ScanRequest};
use tonic::transport::Channel;

struct Args {
    router: String,
    keys: u64,
    value_bytes: usize,
    router_pid: Option<u32>,
    skip_load: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        router: "127.0.0.1:7000".into(),
        keys: 1_000_000,
        value_bytes: 100,
        router_pid: None,
        skip_load: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--router" => args.router = it.next().context("--router needs a value")?,
            "--keys" => args.keys = it.next().context("--keys needs a value")?.parse()?,
            "--value-bytes" => {
                args.value_bytes = it.next().context("--value-bytes needs a value")?.parse()?
            }
            "--router-pid" => {
                args.router_pid = Some(it.next().context("--router-pid needs a value")?.parse()?)
            }
            "--skip-load" => args.skip_load = true,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

fn rss_mib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
}

fn key(i: u64) -> Vec<u8> {
    format!("bench/{i:010}").into_bytes()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let channel = Channel::from_shared(format!("http://{}", args.router))?
        .connect()
        .await?;
    let kv = KvClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);

    if !args.skip_load {
        let started = Instant::now();
        let batch = 1000u64;
        let batches = args.keys.div_ceil(batch);
        let value = vec![b'v'; args.value_bytes];
        let loaded: Vec<anyhow::Result<()>> = stream::iter(0..batches)
            .map(|b| {
                let mut kv = kv.clone();
                let value = value.clone();
                async move {
                    let mutations = (b * batch..((b + 1) * batch).min(args.keys))
                        .map(|i| Mutation {
                            key: key(i),
                            kind: MutationKind::Put as i32,
                            value: value.clone(),
                        })
                        .collect();
                    let mut request = tonic::Request::new(BatchWriteRequest {
                        mutations,
                        request_id: rand::random::<[u8; 16]>().to_vec(),
                    });
                    request.set_timeout(Duration::from_secs(30));
                    kv.batch_write(request).await?;
                    Ok(())
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for result in loaded {
            result?;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "load: {} keys in {secs:.1} s = {:.0} keys/s",
            args.keys,
            args.keys as f64 / secs
        );
    }

    // Count.
    let started = Instant::now();
    let mut count_stream = kv
        .clone()
        .count(CountRequest {
            prefix: b"bench/".to_vec(),
            ..CountRequest::default()
        })
        .await?
        .into_inner();
    let mut counted = 0;
    while let Some(message) = count_stream.message().await? {
        if message.done {
            counted = message.count;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "count: {counted} keys in {secs:.2} s = {:.0} keys/s",
        counted as f64 / secs
    );

    // Streamed full scan, sampling the router's memory.
    let baseline = rss_mib(args.router_pid);
    let started = Instant::now();
    let mut scan = kv
        .clone()
        .scan_stream(ScanRequest {
            prefix: b"bench/".to_vec(),
            ..ScanRequest::default()
        })
        .await?
        .into_inner();
    let mut scanned = 0u64;
    let mut peak = baseline;
    let mut messages = 0u64;
    while let Some(message) = scan.message().await? {
        scanned += message.entries.len() as u64;
        messages += 1;
        if messages.is_multiple_of(64) {
            peak = peak.max(rss_mib(args.router_pid));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "stream scan: {scanned} keys in {secs:.2} s = {:.0} keys/s",
        scanned as f64 / secs
    );
    if let (Some(baseline), Some(peak)) = (baseline, peak) {
        println!("router RSS during the stream: baseline {baseline} MiB, peak {peak} MiB");
    }

    // Keys-only streamed scan.
    let started = Instant::now();
    let mut scan = kv
        .clone()
        .scan_stream(ScanRequest {
            prefix: b"bench/".to_vec(),
            keys_only: true,
            ..ScanRequest::default()
        })
        .await?
        .into_inner();
    let mut keys_only = 0u64;
    while let Some(message) = scan.message().await? {
        keys_only += message.entries.len() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "stream scan keys-only: {keys_only} keys in {secs:.2} s = {:.0} keys/s",
        keys_only as f64 / secs
    );

    // Paged scan with 1000-key pages, over the first 100k keys.
    let started = Instant::now();
    let mut request = ScanRequest {
        prefix: b"bench/".to_vec(),
        limit: 1000,
        ..ScanRequest::default()
    };
    let mut paged = 0u64;
    let mut kv_paged = kv.clone();
    while paged < 100_000 {
        let page = kv_paged.scan(request.clone()).await?.into_inner();
        paged += page.entries.len() as u64;
        if page.continuation_token.is_empty() {
            break;
        }
        request.continuation_token = page.continuation_token;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "paged scan (limit 1000): {paged} keys in {secs:.2} s = {:.0} keys/s",
        paged as f64 / secs
    );
    Ok(())
}
