//! Node-level behaviour driven directly through `ShardKv` (no router).

use ringkv_proto::v1;
use ringkv_tests::{wait_until, Cluster, ClusterOptions, WAIT};

/// A cluster bootstraps, every shard elects a leader, and a write at the leader is
/// readable from every replica that placement names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_at_leader_reaches_every_replica() -> anyhow::Result<()> {
    let mut cluster = Cluster::nodes_only(ClusterOptions::default()).await?;
    let leaders = cluster.wait_for_leaders(WAIT).await?;
    let ring = cluster.ring(1).await?;
    let key = b"hello".to_vec();
    let shard = ring.shard_for_key(&key).0;
    let leader = leaders[&shard];
    let response = cluster
        .shard_kv(leader)
        .await?
        .write(v1::ShardWriteRequest {
            shard_id: shard,
            request_id: vec![7; 16],
            ops: vec![v1::WriteOp {
                keep_value: false,
                ttl_ms: 0,
                expires_at_ts: 0,
                key: key.clone(),
                kind: v1::WriteKind::Put as i32,
                value: b"world".to_vec(),
                expected_version: None,
            }],
        })
        .await?
        .into_inner();
    let version = response.results[0].version;
    assert!(version > 0);
    for replica in ring.replicas(ringkv_ring::ShardId(shard)) {
        let got = wait_until("replica to apply", WAIT, || async {
            cluster.read_replica(replica, shard, &key).await.ok().flatten()
        })
        .await?;
        assert_eq!(got, (b"world".to_vec(), version));
    }
    cluster.kill_node(1)?;
    Ok(())
}

fn put(shard_id: u32, request_id: u8, key: &[u8], value: &[u8]) -> v1::ShardWriteRequest {
    v1::ShardWriteRequest {
        shard_id,
        request_id: vec![request_id; 16],
        ops: vec![v1::WriteOp {
            keep_value: false,
            ttl_ms: 0,
            expires_at_ts: 0,
            key: key.to_vec(),
            kind: v1::WriteKind::Put as i32,
            value: value.to_vec(),
            expected_version: None,
        }],
    }
}

/// `WriteBatch` answers every write as `Write` would have: a good write applies, a write
/// with a key of another shard or a malformed request id fails alone (rejected, with its own
/// message), a repeated request id returns the first outcome for the same write and is
/// refused (marked, rejected) for another; a batch sent to a follower fails as a whole,
/// naming the leader; an empty batch is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_batch_answers_each_write_on_its_own() -> anyhow::Result<()> {
    let mut cluster = Cluster::nodes_only(ClusterOptions::default()).await?;
    let leaders = cluster.wait_for_leaders(WAIT).await?;
    let ring = cluster.ring(1).await?;
    let key = b"batched".to_vec();
    let shard = ring.shard_for_key(&key).0;
    let other_key = (0..1000)
        .map(|i| format!("other-{i}").into_bytes())
        .find(|candidate| ring.shard_for_key(candidate).0 != shard)
        .ok_or_else(|| anyhow::anyhow!("no key of another shard"))?;
    let leader = leaders[&shard];
    let mut client = cluster.shard_kv(leader).await?;
    let mut malformed = put(shard, 3, b"batched-2", b"x");
    malformed.request_id = vec![3; 5];
    let batch = v1::ShardWriteBatchRequest {
        shard_id: shard,
        writes: vec![
            put(shard, 1, &key, b"first"),
            put(shard, 2, &other_key, b"elsewhere"),
            malformed,
            put(shard, 1, &key, b"first"),
            put(shard, 1, &key, b"another write under the first's id"),
        ],
    };
    let outcomes = client.write_batch(batch).await?.into_inner().outcomes;
    assert_eq!(outcomes.len(), 5);
    let response = |index: usize| match &outcomes[index].outcome {
        Some(v1::shard_write_outcome::Outcome::Response(response)) => Ok(response.clone()),
        Some(v1::shard_write_outcome::Outcome::Failure(failure)) => {
            Err(ringkv_proto::metadata::failure_status(failure.clone()))
        }
        None => panic!("write {index} has no outcome"),
    };
    let first = response(0).expect("the good write applies");
    assert!(first.results[0].succeeded);
    for (index, what) in [(1, "shard"), (2, "request_id")] {
        let failure = response(index).expect_err("a bad write fails alone");
        assert!(ringkv_proto::metadata::is_rejected(&failure), "{failure:?}");
        assert!(failure.message().contains(what), "{failure:?}");
    }
    assert_eq!(
        response(3).expect("the retry").results,
        first.results,
        "a repeated request id returns the first outcome"
    );
    let reused = response(4).expect_err("another write under a used request id");
    assert!(
        ringkv_proto::metadata::is_request_id_reused(&reused) && ringkv_proto::metadata::is_rejected(&reused),
        "{reused:?}"
    );
    let stored = cluster.read_replica(leader, shard, &key).await?;
    assert_eq!(stored, Some((b"first".to_vec(), first.results[0].version)));

    let follower = ring
        .replicas(ringkv_ring::ShardId(shard))
        .into_iter()
        .find(|replica| *replica != leader)
        .ok_or_else(|| anyhow::anyhow!("no follower"))?;
    let refused = cluster
        .shard_kv(follower)
        .await?
        .write_batch(v1::ShardWriteBatchRequest {
            shard_id: shard,
            writes: vec![put(shard, 4, &key, b"at a follower")],
        })
        .await
        .expect_err("a follower refuses the batch");
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(ringkv_proto::metadata::is_rejected(&refused));
    let empty = client
        .write_batch(v1::ShardWriteBatchRequest {
            shard_id: shard,
            writes: Vec::new(),
        })
        .await
        .expect_err("an empty batch is refused");
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    cluster.kill_node(1)?;
    Ok(())
}
