//! Read replies within their byte budget, and long reads that do not stall writes (issue
//! 14, defects 12 and 4), against real node and router processes.
//!
//! The replies are read with tonic's default receive limit (4 MiB), as a client with gRPC's
//! default settings would: a reply over it fails to decode.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use prost::Message;
use ringkv_proto::budget::{DEFAULT_CLIENT_MESSAGE_BYTES, REPLY_BUDGET_BYTES};
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_proto::v1::{
    BatchGetRequest, BatchWriteRequest, CountRequest, Mutation, MutationKind, PutRequest, ScanRequest,
};
use ringkv_tests::{Cluster, ClusterOptions};
use tonic::transport::Channel;
use tonic::Code;

const VALUES: usize = 40;
const VALUE_BYTES: usize = 1 << 20;

fn big_key(i: usize) -> Vec<u8> {
    format!("big/{i:02}").into_bytes()
}

fn big_value(i: usize) -> Vec<u8> {
    vec![i as u8; VALUE_BYTES]
}

/// The router's `Kv` client with tonic's default limits (4 MiB received).
async fn default_kv(cluster: &Cluster) -> anyhow::Result<KvClient<Channel>> {
    let addr = cluster.router_addr.clone().context("no router")?;
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?;
    Ok(KvClient::new(channel).max_encoding_message_size(16 << 20))
}

/// 40 values of 1 MiB: a scan with limit 100 comes in pages under 4 MiB that hold every key
/// exactly once, in order; a batch get of them succeeds through the client library and, in
/// pages, with a raw client; without paging it is refused as too large.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_come_in_replies_within_the_budget() -> anyhow::Result<()> {
    let options = ClusterOptions {
        nodes: 1,
        shards: 8,
        replication_factor: 1,
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(options).await?;
    let mut kv = cluster.kv().await?;
    for i in 0..VALUES {
        kv.put(PutRequest {
            ttl_ms: 0,
            expires_at_ts: 0,
            key: big_key(i),
            value: big_value(i),
            request_id: Vec::new(),
            lease: 0,
        })
        .await
        .with_context(|| format!("put {i}"))?;
    }
    let mut small = default_kv(&cluster).await?;

    let mut request = ScanRequest {
        prefix: b"big/".to_vec(),
        limit: 100,
        ..ScanRequest::default()
    };
    let mut keys = Vec::new();
    let mut pages = 0;
    loop {
        let page = small
            .scan(request.clone())
            .await
            .context("scan page")?
            .into_inner();
        pages += 1;
        ensure!(pages <= VALUES, "paging did not end");
        let reply_bytes = page.encoded_len();
        ensure!(
            reply_bytes <= DEFAULT_CLIENT_MESSAGE_BYTES,
            "a page of {reply_bytes} bytes"
        );
        let entry_bytes = reply_bytes - page.continuation_token.len();
        ensure!(
            entry_bytes <= REPLY_BUDGET_BYTES + 16,
            "entries of {entry_bytes} bytes"
        );
        ensure!(!page.entries.is_empty(), "a page with no entry");
        for entry in &page.entries {
            let index = keys.len();
            ensure!(
                entry.key == big_key(index),
                "key {:?} at position {index}",
                String::from_utf8_lossy(&entry.key)
            );
            ensure!(entry.value == big_value(index), "the value of key {index}");
            keys.push(entry.key.clone());
        }
        if page.continuation_token.is_empty() {
            break;
        }
        request.continuation_token = page.continuation_token;
    }
    ensure!(keys.len() == VALUES, "scanned {} of {VALUES} keys", keys.len());
    ensure!(pages >= VALUES / 3, "{pages} pages for 40 MiB");

    let mut stream = small
        .scan_stream(ScanRequest {
            prefix: b"big/".to_vec(),
            ..ScanRequest::default()
        })
        .await?
        .into_inner();
    let mut streamed = 0;
    while let Some(message) = stream.message().await.context("scan stream")? {
        ensure!(message.encoded_len() <= DEFAULT_CLIENT_MESSAGE_BYTES);
        streamed += message.entries.len();
    }
    ensure!(streamed == VALUES, "streamed {streamed} of {VALUES} keys");

    let all: Vec<Vec<u8>> = (0..VALUES).map(big_key).collect();
    let whole = small
        .batch_get(BatchGetRequest {
            keys: all.clone(),
            ..BatchGetRequest::default()
        })
        .await;
    match whole {
        Err(status) => ensure!(
            status.code() == Code::ResourceExhausted && status.message().contains("allow_paging"),
            "a batch over the budget without paging: {status:?}"
        ),
        Ok(_) => bail!("a 40 MiB batch get was answered in one reply"),
    }

    let mut pending: Vec<usize> = (0..VALUES).collect();
    let mut answered = [false; VALUES];
    let mut replies = 0;
    while !pending.is_empty() {
        replies += 1;
        ensure!(replies <= VALUES, "batch get paging did not end");
        let page = small
            .batch_get(BatchGetRequest {
                keys: pending.iter().map(|i| big_key(*i)).collect(),
                allow_paging: true,
                ..BatchGetRequest::default()
            })
            .await
            .context("batch get page")?
            .into_inner();
        ensure!(page.encoded_len() <= DEFAULT_CLIENT_MESSAGE_BYTES);
        ensure!(!page.results.is_empty(), "a page with no result");
        let mut left = page
            .remaining
            .iter()
            .map(|position| *position as usize)
            .peekable();
        let mut results = page.results.iter();
        for (position, index) in pending.iter().enumerate() {
            if left.next_if(|left| *left == position).is_some() {
                continue;
            }
            let result = results.next().context("too few results")?;
            ensure!(result.key == big_key(*index) && result.value == big_value(*index));
            ensure!(!answered[*index], "key {index} answered twice");
            answered[*index] = true;
        }
        pending = page
            .remaining
            .iter()
            .map(|position| pending[*position as usize])
            .collect();
    }
    ensure!(answered.iter().all(|done| *done), "every key answered");

    let client = cluster.client().await?;
    let values = client.batch_get(&all).await.context("Client::batch_get")?;
    ensure!(values.len() == VALUES);
    for (i, value) in values.iter().enumerate() {
        let value = value.as_ref().with_context(|| format!("key {i} missing"))?;
        ensure!(value.value == big_value(i), "the value of key {i}");
    }
    Ok(())
}

/// A count of 100,000 keys of one shard lets writes to that shard through: while it runs,
/// no put waits more than a third of the count's time (before, the count held the shard's
/// apply lock throughout and a put waited for all of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_count_does_not_stall_writes() -> anyhow::Result<()> {
    const KEYS: usize = 100_000;
    const BATCH: usize = 1000;
    let options = ClusterOptions {
        nodes: 1,
        shards: 1,
        replication_factor: 1,
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(options).await?;
    let mut kv = cluster.kv().await?;
    for batch in 0..KEYS / BATCH {
        let mutations = (0..BATCH)
            .map(|i| Mutation {
                key: format!("count/{:06}", batch * BATCH + i).into_bytes(),
                kind: MutationKind::Put as i32,
                value: b"v".to_vec(),
            })
            .collect();
        kv.batch_write(BatchWriteRequest {
            mutations,
            request_id: Vec::new(),
        })
        .await
        .with_context(|| format!("batch {batch}"))?;
    }

    let mut counter = cluster.kv().await?;
    let started = Instant::now();
    let mut count = Box::pin(async move {
        let mut stream = counter
            .count(CountRequest {
                prefix: b"count/".to_vec(),
                ..CountRequest::default()
            })
            .await?
            .into_inner();
        while let Some(message) = stream.message().await? {
            if message.done {
                return anyhow::Ok(message.count);
            }
        }
        bail!("the count ended without its total")
    });
    let mut longest_put = Duration::ZERO;
    let mut puts = 0u64;
    let counted = loop {
        let put_started = Instant::now();
        let put = kv.put(PutRequest {
            ttl_ms: 0,
            expires_at_ts: 0,
            key: format!("other/{puts}").into_bytes(),
            value: b"w".to_vec(),
            request_id: Vec::new(),
            lease: 0,
        });
        tokio::select! {
            counted = &mut count => {
                // The put still in flight has waited this long at least.
                longest_put = longest_put.max(put_started.elapsed());
                break counted?;
            }
            put = put => {
                put.context("put during the count")?;
                longest_put = longest_put.max(put_started.elapsed());
                puts += 1;
            }
        }
    };
    let count_time = started.elapsed();
    eprintln!("counted {counted} keys in {count_time:?}; {puts} puts meanwhile, the longest {longest_put:?}");
    ensure!(counted == KEYS as u64, "counted {counted} of {KEYS}");
    ensure!(
        puts >= 3,
        "only {puts} puts completed during a count of {count_time:?}"
    );
    ensure!(
        longest_put < count_time / 3,
        "a put waited {longest_put:?} during a count of {count_time:?}"
    );
    Ok(())
}
