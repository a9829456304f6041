//! Cross-shard range queries against a real cluster: a property test against a `BTreeMap`
//! model, paging under concurrent writes, and a shard that cannot answer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_proto::v1::{
    BatchGetRequest, BatchWriteRequest, CountRequest, DeleteRangeRequest, DeleteRequest, Mutation,
    MutationKind, PutRequest, ScanRequest,
};
use ringkv_tests::{Cluster, ClusterOptions};
use tonic::transport::Channel;
use tonic::Code;

type Kv = KvClient<Channel>;
type Model = BTreeMap<Vec<u8>, Vec<u8>>;
type KeyFilter = Box<dyn Fn(&[u8]) -> bool>;

/// Every entry (key, value) of a scan, page by page through continuation tokens.
async fn scan_pages(kv: &mut Kv, mut request: ScanRequest) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let page = kv.scan(request.clone()).await?.into_inner();
        ensure!(
            page.entries.len() <= request.limit as usize,
            "a page over its limit"
        );
        ensure!(
            page.missing_shards.is_empty(),
            "missing shards without allow_partial"
        );
        out.extend(page.entries.into_iter().map(|e| (e.key, e.value)));
        if page.continuation_token.is_empty() {
            return Ok(out);
        }
        request.continuation_token = page.continuation_token;
    }
    bail!("paging did not end")
}

async fn count(kv: &mut Kv, request: CountRequest) -> anyhow::Result<(u64, Vec<u32>)> {
    let mut stream = kv.count(request).await?.into_inner();
    while let Some(message) = stream.message().await? {
        if message.done {
            return Ok((message.count, message.missing_shards));
        }
    }
    bail!("count stream ended without a final message")
}

/// One step of the property test. Keys are short strings over `a..c` under a per-case
/// prefix, so ranges, prefixes and deletes overlap often.
#[derive(Debug, Clone)]
enum Op {
    Put(String, u8),
    Delete(String),
    Batch(Vec<(String, Option<u8>)>),
    DeleteRange(String, String),
    DeletePrefix(String),
}

/// A query checked against the model.
#[derive(Debug, Clone)]
struct Query {
    start: String,
    end: Option<String>,
    prefix: Option<String>,
    reverse: bool,
    limit: u32,
    keys_only: bool,
}

fn key_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![Just('a'), Just('b'), Just('c')], 1..4)
        .prop_map(|chars| chars.into_iter().collect())
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (key_strategy(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        1 => key_strategy().prop_map(Op::Delete),
        2 => proptest::collection::vec((key_strategy(), proptest::option::of(any::<u8>())), 1..12)
            .prop_map(Op::Batch),
        1 => (key_strategy(), key_strategy()).prop_map(|(a, b)| if a <= b { Op::DeleteRange(a, b) } else { Op::DeleteRange(b, a) }),
        1 => proptest::collection::vec(prop_oneof![Just('a'), Just('b')], 1..3)
            .prop_map(|chars| Op::DeletePrefix(chars.into_iter().collect())),
    ]
}

fn query_strategy() -> impl Strategy<Value = Query> {
    (
        proptest::option::of(key_strategy()),
        proptest::option::of(key_strategy()),
        proptest::option::of(key_strategy()),
        any::<bool>(),
        1u32..9,
        any::<bool>(),
    )
        .prop_map(|(start, end, prefix, reverse, limit, keys_only)| {
            let start = start.unwrap_or_default();
            let end = end.map(|end| if end < start { start.clone() } else { end });
            Query {
                start,
                end,
                prefix,
                reverse,
                limit,
                keys_only,
            }
        })
}

/// Runs one case under `prefix` and compares every query with the model.
async fn run_case(kv: &mut Kv, prefix: &str, ops: &[Op], queries: &[Query]) -> anyhow::Result<()> {
    let full = |key: &str| format!("{prefix}{key}").into_bytes();
    let mut model = Model::new();
    for op in ops {
        match op {
            Op::Put(key, value) => {
                kv.put(PutRequest {
                    ttl_ms: 0,
                    expires_at_ts: 0,
                    key: full(key),
                    value: vec![*value],
                    request_id: vec![],
                    lease: 0,
                })
                .await?;
                model.insert(full(key), vec![*value]);
            }
            Op::Delete(key) => {
                kv.delete(DeleteRequest {
                    key: full(key),
                    request_id: vec![],
                })
                .await?;
                model.remove(&full(key));
            }
            Op::Batch(writes) => {
                let mutations = writes
                    .iter()
                    .map(|(key, value)| Mutation {
                        key: full(key),
                        kind: if value.is_some() {
                            MutationKind::Put
                        } else {
                            MutationKind::Delete
                        } as i32,
                        value: value.map(|v| vec![v]).unwrap_or_default(),
                    })
                    .collect();
                let results = kv
                    .batch_write(BatchWriteRequest {
                        mutations,
                        request_id: vec![],
                    })
                    .await?
                    .into_inner()
                    .results;
                ensure!(results.len() == writes.len(), "one result per mutation");
                for (key, value) in writes {
                    match value {
                        Some(value) => model.insert(full(key), vec![*value]),
                        None => model.remove(&full(key)),
                    };
                }
            }
            Op::DeleteRange(start, end) => {
                let deleted = kv
                    .delete_range(DeleteRangeRequest {
                        start: full(start),
                        end: full(end),
                        ..DeleteRangeRequest::default()
                    })
                    .await?
                    .into_inner()
                    .deleted;
                let doomed: Vec<Vec<u8>> = model
                    .range(full(start)..full(end))
                    .map(|(k, _)| k.clone())
                    .collect();
                ensure!(
                    deleted == doomed.len() as u64,
                    "delete-range count {deleted} vs model {}",
                    doomed.len()
                );
                for key in doomed {
                    model.remove(&key);
                }
            }
            Op::DeletePrefix(sub) => {
                let deleted = kv
                    .delete_range(DeleteRangeRequest {
                        prefix: full(sub),
                        ..DeleteRangeRequest::default()
                    })
                    .await?
                    .into_inner()
                    .deleted;
                let doomed: Vec<Vec<u8>> = model
                    .keys()
                    .filter(|k| k.starts_with(&full(sub)))
                    .cloned()
                    .collect();
                ensure!(deleted == doomed.len() as u64, "delete-prefix count");
                for key in doomed {
                    model.remove(&key);
                }
            }
        }
    }

    // The whole case prefix, both directions, paged.
    for reverse in [false, true] {
        let got = scan_pages(
            kv,
            ScanRequest {
                prefix: prefix.as_bytes().to_vec(),
                limit: 3,
                reverse,
                ..ScanRequest::default()
            },
        )
        .await?;
        let mut want: Vec<(Vec<u8>, Vec<u8>)> = model.clone().into_iter().collect();
        if reverse {
            want.reverse();
        }
        ensure!(
            got == want,
            "full scan (reverse {reverse}): got {got:?}, want {want:?}"
        );
    }
    for query in queries {
        let (request, range): (ScanRequest, KeyFilter) = match &query.prefix {
            Some(sub) => {
                let p = full(sub);
                (
                    ScanRequest {
                        prefix: p.clone(),
                        ..ScanRequest::default()
                    },
                    Box::new(move |k: &[u8]| k.starts_with(&p)),
                )
            }
            None => {
                let start = full(&query.start);
                let end = query
                    .end
                    .as_deref()
                    .map(full)
                    .unwrap_or_else(|| format!("{prefix}~").into_bytes());
                (
                    ScanRequest {
                        start: start.clone(),
                        end: end.clone(),
                        ..ScanRequest::default()
                    },
                    Box::new(move |k: &[u8]| k >= start.as_slice() && k < end.as_slice()),
                )
            }
        };
        let request = ScanRequest {
            limit: query.limit,
            reverse: query.reverse,
            keys_only: query.keys_only,
            ..request
        };
        let mut want: Vec<(Vec<u8>, Vec<u8>)> = model
            .iter()
            .filter(|(k, _)| range(k))
            .map(|(k, v)| (k.clone(), if query.keys_only { Vec::new() } else { v.clone() }))
            .collect();
        if query.reverse {
            want.reverse();
        }
        // Paged to the end, and the first page alone (the limit applied globally).
        let got = scan_pages(kv, request.clone()).await?;
        ensure!(got == want, "{query:?}: got {got:?}, want {want:?}");
        let first = kv.scan(request.clone()).await?.into_inner();
        let first: Vec<(Vec<u8>, Vec<u8>)> = first.entries.into_iter().map(|e| (e.key, e.value)).collect();
        ensure!(
            first == want[..want.len().min(query.limit as usize)].to_vec(),
            "{query:?}: first page"
        );
        let (counted, missing) = count(
            kv,
            CountRequest {
                start: request.start.clone(),
                end: request.end.clone(),
                prefix: request.prefix.clone(),
                ..CountRequest::default()
            },
        )
        .await?;
        ensure!(
            missing.is_empty() && counted == want.len() as u64,
            "{query:?}: count {counted}"
        );
    }
    // Multi-get of every key of the alphabet, present or not.
    let mut all_keys = Vec::new();
    for a in ["a", "b", "c"] {
        all_keys.push(full(a));
        for b in ["a", "b", "c"] {
            all_keys.push(full(&format!("{a}{b}")));
        }
    }
    let results = kv
        .batch_get(BatchGetRequest {
            keys: all_keys.clone(),
            ..BatchGetRequest::default()
        })
        .await?
        .into_inner()
        .results;
    for (key, result) in all_keys.iter().zip(results) {
        let want = model.get(key);
        ensure!(
            result.key == *key && result.found == want.is_some(),
            "multi-get {key:?}"
        );
        if let Some(value) = want {
            ensure!(&result.value == value, "multi-get value of {key:?}");
        }
    }
    Ok(())
}

/// Random puts, deletes, batches and delete-ranges against the cluster and a `BTreeMap`:
/// scans (both directions, limits, paging), prefix scans, counts and multi-gets agree.
#[test]
fn range_queries_match_a_model() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cluster = runtime.block_on(Cluster::start(ClusterOptions::default()))?;
    let kv = runtime.block_on(cluster.kv())?;
    let cases = std::env::var("RINGKV_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    let strategy = (
        proptest::collection::vec(op_strategy(), 1..30),
        proptest::collection::vec(query_strategy(), 1..6),
    );
    let result = runner.run(&strategy, |(ops, queries)| {
        // Every case (shrinks included) gets a fresh prefix: cases never see each other.
        let prefix = format!("case{:05}/", case.fetch_add(1, Ordering::Relaxed));
        let mut kv = kv.clone();
        runtime
            .block_on(run_case(&mut kv, &prefix, &ops, &queries))
            .map_err(|err| TestCaseError::fail(format!("{err:#}")))
    });
    drop(cluster);
    result.map_err(|err| anyhow::anyhow!("{err}"))
}

fn stable_key(i: u32) -> Vec<u8> {
    format!("page/{i:04}").into_bytes()
}

/// Paging through a range while other clients insert, update and delete keys in it
/// returns no key twice and skips no key that existed, unchanged, for the whole scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_under_concurrent_writes() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut kv = cluster.kv().await?;
    let stable = 300u32;
    for chunk in (0..stable).collect::<Vec<_>>().chunks(100) {
        let mutations = chunk
            .iter()
            .map(|i| Mutation {
                key: stable_key(*i),
                kind: MutationKind::Put as i32,
                value: b"stable".to_vec(),
            })
            .collect();
        kv.batch_write(BatchWriteRequest {
            mutations,
            request_id: vec![],
        })
        .await?;
    }
    // Writers churn keys between the stable ones ("page/0042-x") for the whole scan.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..3u32 {
        let mut kv = cluster.kv().await?;
        let stop = Arc::clone(&stop);
        writers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("page/{:04}-{writer}", (n * 37 + writer * 101) % stable).into_bytes();
                if n % 3 == 2 {
                    kv.delete(DeleteRequest {
                        key,
                        request_id: vec![],
                    })
                    .await?;
                } else {
                    kv.put(PutRequest {
                        ttl_ms: 0,
                        expires_at_ts: 0,
                        key,
                        value: n.to_be_bytes().to_vec(),
                        request_id: vec![],
                        lease: 0,
                    })
                    .await?;
                }
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    for reverse in [false, true] {
        let mut request = ScanRequest {
            prefix: b"page/".to_vec(),
            limit: 13,
            reverse,
            keys_only: true,
            ..ScanRequest::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = kv.scan(request.clone()).await?.into_inner();
            seen.extend(page.entries.into_iter().map(|e| e.key));
            if page.continuation_token.is_empty() {
                break;
            }
            request.continuation_token = page.continuation_token;
        }
        let unique: BTreeSet<&Vec<u8>> = seen.iter().collect();
        ensure!(
            unique.len() == seen.len(),
            "a key returned twice (reverse {reverse})"
        );
        let ordered = seen
            .windows(2)
            .all(|w| if reverse { w[0] > w[1] } else { w[0] < w[1] });
        ensure!(ordered, "keys out of order (reverse {reverse})");
        for i in 0..stable {
            ensure!(
                unique.contains(&stable_key(i)),
                "stable key {i} skipped (reverse {reverse})"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for writer in writers {
        writes += writer.await??;
    }
    ensure!(writes > 0, "the writers made no progress during the scans");
    Ok(())
}

/// With a shard unavailable, a scan (and a count) fails naming it; with allow_partial it
/// returns everything else and reports the missing shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_shards_are_named_or_reported() -> anyhow::Result<()> {
    let options = ClusterOptions {
        nodes: 3,
        shards: 8,
        replication_factor: 1,
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start(options).await?;
    let ring = cluster.ring(1).await?;
    let mut kv = cluster.kv().await?;
    let keys: Vec<Vec<u8>> = (0..200u32).map(|i| format!("part/{i:03}").into_bytes()).collect();
    kv.batch_write(BatchWriteRequest {
        mutations: keys
            .iter()
            .map(|key| Mutation {
                key: key.clone(),
                kind: MutationKind::Put as i32,
                value: b"v".to_vec(),
            })
            .collect(),
        request_id: vec![],
    })
    .await?;
    // Find a node that holds at least one shard but not all of them, and stop it.
    let victim = (1..=3u64)
        .find(|id| {
            let hosted = ring.shards_of_node(*id).len();
            hosted > 0 && hosted < 8
        })
        .context("no node with some shards")?;
    let lost: Vec<u32> = ring.shards_of_node(victim).into_iter().map(|s| s.0).collect();
    cluster.kill_node(victim)?;

    let with_timeout = |request: ScanRequest| {
        let mut request = tonic::Request::new(request);
        request.set_timeout(Duration::from_secs(2));
        request
    };
    let scan = ScanRequest {
        prefix: b"part/".to_vec(),
        limit: 1000,
        ..ScanRequest::default()
    };
    let err = match kv.scan(with_timeout(scan.clone())).await {
        Ok(page) => bail!(
            "the scan succeeded with shards {lost:?} down: {} entries",
            page.into_inner().entries.len()
        ),
        Err(status) => status,
    };
    ensure!(
        matches!(err.code(), Code::Unavailable | Code::DeadlineExceeded),
        "unexpected code {:?}",
        err.code()
    );
    let listed: Vec<String> = lost.iter().map(u32::to_string).collect();
    ensure!(
        err.message().contains(&format!("shards: {}", listed.join(", "))),
        "the error does not name shards {lost:?}: {}",
        err.message()
    );

    let partial = kv
        .scan(with_timeout(ScanRequest {
            allow_partial: true,
            ..scan
        }))
        .await?
        .into_inner();
    ensure!(
        partial.missing_shards == lost,
        "missing {:?}, expected {lost:?}",
        partial.missing_shards
    );
    let want: Vec<&Vec<u8>> = keys
        .iter()
        .filter(|key| !lost.contains(&ring.shard_for_key(key).0))
        .collect();
    let got: Vec<&Vec<u8>> = partial.entries.iter().map(|e| &e.key).collect();
    ensure!(
        got == want,
        "partial scan returned {} keys, expected {}",
        got.len(),
        want.len()
    );

    let mut request = tonic::Request::new(CountRequest {
        prefix: b"part/".to_vec(),
        allow_partial: true,
        ..CountRequest::default()
    });
    request.set_timeout(Duration::from_secs(8));
    let mut stream = kv.count(request).await?.into_inner();
    let mut last = None;
    while let Some(message) = stream.message().await? {
        last = Some(message);
    }
    let last = last.context("no count message")?;
    ensure!(last.done && last.missing_shards == lost && last.count == want.len() as u64);
    Ok(())
}
