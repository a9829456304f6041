//! Request ids through a real router and nodes: an id names one request (invariant 5).

use ringkv_client::Error;
use ringkv_proto::metadata;
use ringkv_proto::v1::{DeleteRangeRequest, DeleteRequest, GetRequest, PutRequest};
use ringkv_tests::{Cluster, ClusterOptions};
use tonic::{Code, Status};

/// Checks that `status` is the clear refusal of a reused `request_id`: INVALID_ARGUMENT
/// marked as such, naming the id, and the client library's own error.
fn assert_reused(status: Status, request_id: &[u8]) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(metadata::is_request_id_reused(&status), "{status:?}");
    let hex: String = request_id.iter().map(|byte| format!("{byte:02x}")).collect();
    assert!(
        status.message().contains(&hex) && status.message().contains("different request"),
        "{}",
        status.message()
    );
    let error = Error::from(status);
    assert!(matches!(error, Error::RequestIdReused(_)), "{error:?}");
    assert!(!error.is_retryable());
}

/// A put under a request id already used on the key's shard for another key is refused
/// with a clear error and the second key is not written; the first put sent again (a true
/// retry) gets its first version; a delete under the id deletes nothing; a delete-range under
/// an id used for another range is refused and deletes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_request_id_is_refused_and_writes_nothing() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let ring = cluster.ring(1).await?;
    let first_key = b"reused-0".to_vec();
    let shard = ring.shard_for_key(&first_key);
    let second_key = (1..1000)
        .map(|i| format!("reused-{i}").into_bytes())
        .find(|key| ring.shard_for_key(key) == shard)
        .ok_or_else(|| anyhow::anyhow!("no second key on shard {shard}"))?;
    let mut kv = cluster.kv().await?;
    let request_id = vec![0x5a; 16];
    let put = |key: &[u8]| PutRequest {
        ttl_ms: 0,
        expires_at_ts: 0,
        key: key.to_vec(),
        value: b"v".to_vec(),
        request_id: request_id.clone(),
        lease: 0,
    };
    let get = |key: &[u8]| GetRequest {
        key: key.to_vec(),
        consistency: 0,
        read_ts: 0,
        read_uncommitted: false,
    };

    let first = kv.put(put(&first_key)).await?.into_inner();
    let refused = kv
        .put(put(&second_key))
        .await
        .expect_err("a put of another key under a used request id");
    assert_reused(refused, &request_id);
    assert!(
        !kv.get(get(&second_key)).await?.into_inner().found,
        "the second key was not written"
    );
    let retry = kv.put(put(&first_key)).await?.into_inner();
    assert_eq!(
        retry.version, first.version,
        "a true retry gets the first outcome"
    );
    let delete = kv
        .delete(DeleteRequest {
            key: first_key.clone(),
            request_id: request_id.clone(),
        })
        .await
        .expect_err("a delete under the put's request id");
    assert_reused(delete, &request_id);
    let kept = kv.get(get(&first_key)).await?.into_inner();
    assert_eq!((kept.found, kept.version), (true, first.version));

    // A delete-range id reused for another range: every shard's first chunk is refused.
    let range_id = vec![0x6b; 16];
    let delete_range = |prefix: &[u8]| DeleteRangeRequest {
        start: Vec::new(),
        end: Vec::new(),
        prefix: prefix.to_vec(),
        request_id: range_id.clone(),
        all: false,
    };
    kv.delete_range(delete_range(b"nothing-here/")).await?;
    let refused = kv
        .delete_range(delete_range(b"reused-"))
        .await
        .expect_err("a delete-range of another range under a used request id");
    assert_reused(refused, &range_id);
    assert!(
        kv.get(get(&first_key)).await?.into_inner().found,
        "nothing deleted"
    );
    Ok(())
}
