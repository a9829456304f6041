//! Scans, counts, delete-ranges and batch writes through a real router over real sockets,
//! against in-process fake nodes (which answer with small count pages, so the router's
//! continuation logic is exercised).

mod fake_node;

use anyhow::{bail, ensure};
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_proto::v1::{
    BatchWriteRequest, CountRequest, DeleteRangeRequest, Mutation, MutationKind, ScanRequest,
};
use ringkv_router::{Router, RouterConfig};
use tonic::transport::Channel;
use tonic::Code;

fn key(i: u32) -> Vec<u8> {
    format!("k{i:04}").into_bytes()
}

/// Everything a scan of `request` returns, page by page through continuation tokens.
async fn scan_all(kv: &mut KvClient<Channel>, mut request: ScanRequest) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    for _ in 0..10_000 {
        let page = kv.scan(request.clone()).await?.into_inner();
        ensure!(
            page.entries.len() <= request.limit as usize,
            "page over its limit"
        );
        keys.extend(page.entries.into_iter().map(|e| e.key));
        if page.continuation_token.is_empty() {
            return Ok(keys);
        }
        request.continuation_token = page.continuation_token;
    }
    bail!("paging did not end")
}

async fn count(kv: &mut KvClient<Channel>, request: CountRequest) -> anyhow::Result<u64> {
    let mut stream = kv.count(request).await?.into_inner();
    let mut last = None;
    while let Some(message) = stream.message().await? {
        last = Some(message);
    }
    match last {
        Some(message) if message.done => Ok(message.count),
        _ => bail!("count stream ended without a final message"),
    }
}

#[tokio::test]
async fn range_operations_through_the_router() -> anyhow::Result<()> {
    let nodes = fake_node::start(3, 8, 2, true, true).await?;
    let router = Router::start(RouterConfig::for_test(vec![nodes.addrs[0].clone()])).await?;
    let channel = Channel::from_shared(format!("http://{}", router.local_addr()))?
        .connect()
        .await?;
    let mut kv = KvClient::new(channel);

    // Load 0..200 with batch writes, then delete every tenth key in a mixed batch.
    for chunk in (0..200u32).collect::<Vec<_>>().chunks(50) {
        let mutations = chunk
            .iter()
            .map(|i| Mutation {
                key: key(*i),
                kind: MutationKind::Put as i32,
                value: i.to_string().into_bytes(),
            })
            .collect();
        let written = kv
            .batch_write(BatchWriteRequest {
                mutations,
                request_id: vec![],
            })
            .await?
            .into_inner();
        ensure!(written.results.len() == chunk.len());
        ensure!(written.results.iter().all(|r| r.version > 0 && !r.existed));
    }
    let mixed = kv
        .batch_write(BatchWriteRequest {
            mutations: (0..200u32)
                .step_by(10)
                .map(|i| Mutation {
                    key: key(i),
                    kind: MutationKind::Delete as i32,
                    value: vec![],
                })
                .chain(std::iter::once(Mutation {
                    key: b"other".to_vec(),
                    kind: MutationKind::Put as i32,
                    value: b"x".to_vec(),
                }))
                .collect(),
            request_id: vec![],
        })
        .await?
        .into_inner();
    ensure!(mixed.results.len() == 21);
    ensure!(mixed.results[..20].iter().all(|r| r.existed && r.version == 0));
    let expected: Vec<Vec<u8>> = (0..200u32).filter(|i| i % 10 != 0).map(key).collect();

    // Ordered pages in both directions, with a limit that does not divide the total.
    let forward = ScanRequest {
        prefix: b"k".to_vec(),
        limit: 7,
        ..ScanRequest::default()
    };
    let got = scan_all(&mut kv, forward.clone()).await?;
    ensure!(
        got == expected,
        "forward paging: {} keys, first {:?}",
        got.len(),
        got.iter()
            .take(12)
            .map(|k| String::from_utf8_lossy(k).to_string())
            .collect::<Vec<_>>()
    );
    let mut reversed = expected.clone();
    reversed.reverse();
    let backward = ScanRequest {
        reverse: true,
        ..forward.clone()
    };
    ensure!(scan_all(&mut kv, backward).await? == reversed, "reverse paging");

    // A bounded range, keys only.
    let page = kv
        .scan(ScanRequest {
            start: key(15),
            end: key(25),
            limit: 100,
            keys_only: true,
            ..ScanRequest::default()
        })
        .await?
        .into_inner();
    let want: Vec<Vec<u8>> = (15..25u32).filter(|i| i % 10 != 0).map(key).collect();
    ensure!(page.entries.iter().map(|e| e.key.clone()).collect::<Vec<_>>() == want);
    ensure!(page.entries.iter().all(|e| e.value.is_empty() && e.version > 0));
    ensure!(page.continuation_token.is_empty(), "a complete page has no token");

    // The stream returns the same keys in order.
    let mut stream = kv
        .scan_stream(ScanRequest {
            prefix: b"k".to_vec(),
            ..ScanRequest::default()
        })
        .await?
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(message) = stream.message().await? {
        streamed.extend(message.entries.into_iter().map(|e| e.key));
    }
    ensure!(streamed == expected, "streamed scan");

    // Counts: whole prefix, a sub-range, the whole key space.
    let prefix_count = CountRequest {
        prefix: b"k".to_vec(),
        ..CountRequest::default()
    };
    ensure!(count(&mut kv, prefix_count.clone()).await? == 180);
    let sub = CountRequest {
        start: key(100),
        end: key(150),
        ..CountRequest::default()
    };
    ensure!(count(&mut kv, sub).await? == 45);
    ensure!(count(&mut kv, CountRequest::default()).await? == 181);

    // Delete a range, then the rest of the prefix.
    let deleted = kv
        .delete_range(DeleteRangeRequest {
            start: key(0),
            end: key(100),
            ..DeleteRangeRequest::default()
        })
        .await?
        .into_inner();
    ensure!(deleted.deleted == 90, "deleted {}", deleted.deleted);
    ensure!(count(&mut kv, prefix_count.clone()).await? == 90);
    let rest = scan_all(&mut kv, forward.clone()).await?;
    ensure!(rest == expected[90..].to_vec());

    // Bad input: INVALID_ARGUMENT with a message.
    let bad_requests = [
        ScanRequest {
            start: b"b".to_vec(),
            end: b"a".to_vec(),
            limit: 1,
            ..ScanRequest::default()
        },
        ScanRequest {
            limit: 0,
            ..ScanRequest::default()
        },
        ScanRequest {
            limit: 1_000_000,
            ..ScanRequest::default()
        },
        ScanRequest {
            prefix: b"k".to_vec(),
            start: b"a".to_vec(),
            limit: 1,
            ..ScanRequest::default()
        },
        ScanRequest {
            limit: 1,
            continuation_token: b"not a token".to_vec(),
            ..forward.clone()
        },
    ];
    for request in bad_requests {
        match kv.scan(request.clone()).await {
            Err(status) if status.code() == Code::InvalidArgument && !status.message().is_empty() => {}
            other => bail!("{request:?} gave {other:?}"),
        }
    }
    // A token of another query is rejected.
    let page = kv.scan(forward.clone()).await?.into_inner();
    let foreign = ScanRequest {
        prefix: b"j".to_vec(),
        continuation_token: page.continuation_token,
        ..forward.clone()
    };
    let err = kv.scan(foreign).await.err();
    ensure!(err.is_some_and(|s| s.code() == Code::InvalidArgument));
    let everything = kv.delete_range(DeleteRangeRequest::default()).await.err();
    ensure!(everything.is_some_and(|s| s.code() == Code::InvalidArgument));
    let inverted_count = CountRequest {
        start: b"z".to_vec(),
        end: b"a".to_vec(),
        ..CountRequest::default()
    };
    let err = kv.count(inverted_count).await.err();
    ensure!(err.is_some_and(|s| s.code() == Code::InvalidArgument));

    // Deleting everything needs all = true, and then empties the key space.
    let all = kv
        .delete_range(DeleteRangeRequest {
            all: true,
            ..DeleteRangeRequest::default()
        })
        .await?
        .into_inner();
    ensure!(all.deleted == 91, "deleted {}", all.deleted);
    ensure!(count(&mut kv, CountRequest::default()).await? == 0);

    router.shutdown().await?;
    nodes.stop().await?;
    Ok(())
}
