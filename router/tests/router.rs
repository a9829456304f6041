//! The router end to end over real sockets, against in-process fake nodes: routing,
//! leader hints, batches, cluster status, errors and shutdown.

mod fake_node;

use std::time::Duration;

use anyhow::{anyhow, bail, ensure};
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_proto::v1::{
    BatchGetRequest, BatchPutRequest, ClusterStatusRequest, CompareAndSwapRequest, Consistency,
    DeleteRequest, GetRequest, InitClusterRequest, KeyValue, NodeStatusRequest, PutRequest,
};
use ringkv_router::{Router, RouterConfig, RouterHandle};
use tonic::transport::Channel;
use tonic::Code;

async fn start_router(seeds: Vec<String>) -> anyhow::Result<(RouterHandle, Channel)> {
    let router = Router::start(RouterConfig::for_test(seeds)).await?;
    let channel = Channel::from_shared(format!("http://{}", router.local_addr()))?
        .connect()
        .await?;
    Ok((router, channel))
}

/// Every Kv rpc works through the router, following not-leader hints to the leader.
#[tokio::test]
async fn kv_round_trip_follows_hints() -> anyhow::Result<()> {
    let nodes = fake_node::start(3, 8, 2, true, false).await?;
    // Seed only a follower: the router must learn the ring and the leader by itself.
    let (router, channel) = start_router(vec![nodes.addrs[2].clone()]).await?;
    let mut kv = KvClient::new(channel);

    let put = kv
        .put(PutRequest {
            ttl_ms: 0,
            expires_at_ts: 0,
            key: b"alpha".to_vec(),
            value: b"one".to_vec(),
            request_id: vec![],
            lease: 0,
        })
        .await?
        .into_inner();
    ensure!(put.version > 0, "put returned version 0");

    let got = kv
        .get(GetRequest {
            key: b"alpha".to_vec(),
            consistency: Consistency::Linearizable as i32,
            read_ts: 0,
            read_uncommitted: false,
        })
        .await?
        .into_inner();
    ensure!(got.found && got.value == b"one" && got.version == put.version);

    let stale = kv
        .get(GetRequest {
            key: b"alpha".to_vec(),
            consistency: Consistency::Stale as i32,
            read_ts: 0,
            read_uncommitted: false,
        })
        .await?
        .into_inner();
    ensure!(stale.found && stale.value == b"one");

    let cas_fail = kv
        .compare_and_swap(CompareAndSwapRequest {
            ttl_ms: 0,
            expires_at_ts: 0,
            key: b"alpha".to_vec(),
            expected_version: put.version + 100,
            new_value: b"two".to_vec(),
            delete: false,
            request_id: vec![],
        })
        .await?
        .into_inner();
    ensure!(!cas_fail.succeeded && cas_fail.current_found);
    ensure!(cas_fail.current_value == b"one" && cas_fail.current_version == put.version);

    let cas_ok = kv
        .compare_and_swap(CompareAndSwapRequest {
            ttl_ms: 0,
            expires_at_ts: 0,
            key: b"alpha".to_vec(),
            expected_version: put.version,
            new_value: b"two".to_vec(),
            delete: false,
            request_id: vec![],
        })
        .await?
        .into_inner();
    ensure!(cas_ok.succeeded && cas_ok.new_version > put.version);

    let entries: Vec<KeyValue> = (0..50u32)
        .map(|i| KeyValue {
            key: format!("key-{i}").into_bytes(),
            value: format!("value-{i}").into_bytes(),
        })
        .collect();
    let request_id = vec![7u8; 16];
    let batch = kv
        .batch_put(BatchPutRequest {
            entries: entries.clone(),
            request_id: request_id.clone(),
        })
        .await?
        .into_inner();
    ensure!(batch.versions.len() == entries.len());
    // A retry with the same request id is de-duplicated per shard: same versions.
    let applied_before = *nodes
        .cluster
        .store
        .writes_applied
        .lock()
        .map_err(|_| anyhow!("poisoned"))?;
    let retried = kv
        .batch_put(BatchPutRequest {
            entries: entries.clone(),
            request_id,
        })
        .await?
        .into_inner();
    ensure!(retried.versions == batch.versions, "retry was not de-duplicated");
    let applied_after = *nodes
        .cluster
        .store
        .writes_applied
        .lock()
        .map_err(|_| anyhow!("poisoned"))?;
    ensure!(applied_before == applied_after, "retry applied again");

    let mut keys: Vec<Vec<u8>> = entries.iter().rev().map(|e| e.key.clone()).collect();
    keys.push(b"missing".to_vec());
    let got = kv
        .batch_get(BatchGetRequest {
            keys: keys.clone(),
            consistency: Consistency::Linearizable as i32,
            read_ts: 0,
            read_uncommitted: false,
            allow_paging: false,
        })
        .await?
        .into_inner();
    ensure!(got.results.len() == keys.len());
    for (result, key) in got.results.iter().zip(&keys) {
        ensure!(&result.key == key, "results out of order");
    }
    ensure!(got.results[0].value == b"value-49" && got.results[0].found);
    let last = got.results.last().ok_or_else(|| anyhow!("no results"))?;
    ensure!(!last.found && last.version == 0);

    let deleted = kv
        .delete(DeleteRequest {
            key: b"alpha".to_vec(),
            request_id: vec![],
        })
        .await?
        .into_inner();
    ensure!(deleted.existed);
    let gone = kv
        .get(GetRequest {
            key: b"alpha".to_vec(),
            consistency: 0,
            read_ts: 0,
            read_uncommitted: false,
        })
        .await?
        .into_inner();
    ensure!(!gone.found);

    let hints = *nodes
        .cluster
        .store
        .not_leader_replies
        .lock()
        .map_err(|_| anyhow!("poisoned"))?;
    ensure!(hints > 0, "no not-leader hint was exercised");

    router.shutdown().await?;
    nodes.stop().await
}

/// A write that came without a request id gets one from the router, chosen once per
/// request: every retry of it — per shard for a batch — carries that id, so an attempt
/// the node applied but whose answer was lost is de-duplicated, not applied twice, and
/// the write succeeds (with an id chosen anew per attempt, every answer would be lost).
#[tokio::test]
async fn writes_without_a_request_id_are_retried_under_the_routers_id() -> anyhow::Result<()> {
    let nodes = fake_node::start(3, 8, 2, true, true).await?;
    let (router, channel) = start_router(nodes.addrs.clone()).await?;
    let mut kv = KvClient::new(channel);
    let store = &nodes.cluster.store;
    let applied =
        || -> anyhow::Result<u64> { Ok(*store.writes_applied.lock().map_err(|_| anyhow!("poisoned"))?) };
    *store.lose_first_answers.lock().map_err(|_| anyhow!("poisoned"))? = true;

    let put = kv
        .put(PutRequest {
            ttl_ms: 0,
            expires_at_ts: 0,
            key: b"lost".to_vec(),
            value: b"once".to_vec(),
            request_id: vec![],
            lease: 0,
        })
        .await?
        .into_inner();
    ensure!(applied()? == 1, "the put was applied {} times", applied()?);
    let read = kv
        .get(GetRequest {
            key: b"lost".to_vec(),
            consistency: Consistency::Linearizable as i32,
            read_ts: 0,
            read_uncommitted: false,
        })
        .await?
        .into_inner();
    ensure!(read.found && read.version == put.version);

    let entries: Vec<KeyValue> = (0..40u32)
        .map(|i| KeyValue {
            key: format!("lost-{i}").into_bytes(),
            value: b"once".to_vec(),
        })
        .collect();
    let batch = kv
        .batch_put(BatchPutRequest {
            entries: entries.clone(),
            request_id: vec![],
        })
        .await?
        .into_inner();
    ensure!(batch.versions.len() == entries.len());
    // (An id chosen anew per attempt would lose every answer: the writes could not succeed.)
    let shard_parts = applied()? - 1;
    ensure!(
        (2..=8).contains(&shard_parts),
        "{shard_parts} shard writes applied for a batch over at most 8 shards: some twice?"
    );
    router.shutdown().await?;
    nodes.stop().await
}

/// ClusterStatus lists every node and shard with placement and leader.
/// Nodes without `ShardKv.Pipeline` (an older version) answer it UNIMPLEMENTED: the
/// router's first attempt to each is not applied, and it goes on with unary calls — every
/// put is applied exactly once and read back.
#[tokio::test]
async fn nodes_without_a_pipeline_get_unary_calls() -> anyhow::Result<()> {
    let nodes = fake_node::start(3, 8, 2, true, true).await?;
    let store = &nodes.cluster.store;
    *store.without_pipeline.lock().map_err(|_| anyhow!("poisoned"))? = true;
    let (router, channel) = start_router(nodes.addrs.clone()).await?;
    let mut kv = KvClient::new(channel);
    for i in 0..20u32 {
        let key = format!("old-{i}").into_bytes();
        let put = kv
            .put(PutRequest {
                ttl_ms: 0,
                expires_at_ts: 0,
                key: key.clone(),
                value: b"v".to_vec(),
                request_id: vec![],
                lease: 0,
            })
            .await?
            .into_inner();
        let read = kv
            .get(GetRequest {
                key,
                consistency: Consistency::Linearizable as i32,
                read_ts: 0,
                read_uncommitted: false,
            })
            .await?
            .into_inner();
        ensure!(
            read.found && read.version == put.version,
            "put {i} did not read back"
        );
    }
    let applied = *store.writes_applied.lock().map_err(|_| anyhow!("poisoned"))?;
    ensure!(applied == 20, "20 puts were applied {applied} times");
    router.shutdown().await?;
    nodes.stop().await?;
    Ok(())
}

#[tokio::test]
async fn cluster_status_merges_nodes() -> anyhow::Result<()> {
    let nodes = fake_node::start(3, 4, 3, true, true).await?;
    let (router, channel) = start_router(vec![nodes.addrs[0].clone()]).await?;
    let mut admin = AdminClient::new(channel);
    let status = admin.cluster_status(ClusterStatusRequest {}).await?.into_inner();
    let ring = status.ring.ok_or_else(|| anyhow!("no ring"))?;
    ensure!(ring.cluster_id == fake_node::CLUSTER_ID && ring.shards == 4);
    ensure!(status.nodes.len() == 3);
    ensure!(status.nodes.iter().all(|n| n.reachable && n.replicas == 4));
    ensure!(status.system_leader_id == fake_node::LEADER);
    ensure!(status.shards.len() == 4);
    for shard in &status.shards {
        ensure!(shard.placement.len() == 3);
        ensure!(shard.leader_id == *shard.placement.last().unwrap_or(&0) && shard.term == 1);
        ensure!(shard.replicas.iter().all(|r| r.reachable && r.applied_index == 5));
    }

    let init = admin
        .init_cluster(InitClusterRequest::default())
        .await
        .err()
        .ok_or_else(|| anyhow!("init succeeded on a router"))?;
    ensure!(init.code() == Code::Unimplemented && init.message().contains("node"));
    // NodeStatus at a router answers for the router itself (issue 16: `kvctl endpoint`).
    let itself = admin
        .node_status(NodeStatusRequest::default())
        .await?
        .into_inner();
    ensure!(itself.process_role == "router" && !itself.version.is_empty() && !itself.addr.is_empty());
    ensure!(itself.replicas.is_empty() && itself.ring.is_none());

    router.shutdown().await?;
    nodes.stop().await
}

/// Before any node reports a ring, requests fail with UNAVAILABLE, promptly.
#[tokio::test]
async fn uninitialised_cluster_is_unavailable() -> anyhow::Result<()> {
    let nodes = fake_node::start(1, 1, 1, false, false).await?;
    let (router, channel) = start_router(vec![nodes.addrs[0].clone()]).await?;
    let mut kv = KvClient::new(channel);
    let started = tokio::time::Instant::now();
    let err = kv
        .get(GetRequest {
            key: b"k".to_vec(),
            consistency: 0,
            read_ts: 0,
            read_uncommitted: false,
        })
        .await
        .err()
        .ok_or_else(|| anyhow!("get succeeded without a cluster"))?;
    ensure!(err.code() == Code::Unavailable, "{err:?}");
    ensure!(err
        .message()
        .contains("cluster not initialised or no node reachable"));
    ensure!(
        started.elapsed() < Duration::from_secs(2),
        "waited for the whole deadline"
    );
    router.shutdown().await?;
    nodes.stop().await
}

/// Invalid input and oversized requests are rejected by the router itself.
#[tokio::test]
async fn invalid_requests_are_rejected() -> anyhow::Result<()> {
    let nodes = fake_node::start(1, 2, 1, true, true).await?;
    let (router, channel) = start_router(vec![nodes.addrs[0].clone()]).await?;
    let mut kv = KvClient::new(channel);

    let err = kv
        .put(PutRequest {
            ttl_ms: 0,
            expires_at_ts: 0,
            key: vec![b'k'; 5000],
            value: vec![],
            request_id: vec![],
            lease: 0,
        })
        .await
        .err()
        .ok_or_else(|| anyhow!("oversized key accepted"))?;
    ensure!(err.code() == Code::InvalidArgument);
    ensure!(
        err.message().contains("max_key_bytes = 4096"),
        "{}",
        err.message()
    );

    let err = kv
        .put(PutRequest {
            ttl_ms: 0,
            expires_at_ts: 0,
            key: b"k".to_vec(),
            value: vec![0; 9 << 20],
            request_id: vec![],
            lease: 0,
        })
        .await
        .err()
        .ok_or_else(|| anyhow!("oversized request accepted"))?;
    ensure!(err.code() != Code::Ok);

    match kv
        .batch_get(BatchGetRequest {
            keys: vec![],
            consistency: 0,
            read_ts: 0,
            read_uncommitted: false,
            allow_paging: false,
        })
        .await
    {
        Ok(empty) => ensure!(empty.into_inner().results.is_empty()),
        Err(err) => bail!("empty batch failed: {err}"),
    }
    router.shutdown().await?;
    nodes.stop().await
}

/// An unreachable seed makes requests fail with UNAVAILABLE; shutdown still completes.
#[tokio::test]
async fn unreachable_seed_is_unavailable() -> anyhow::Result<()> {
    // Bind and drop a listener to get a port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let (router, channel) = start_router(vec![format!("127.0.0.1:{port}")]).await?;
    let mut kv = KvClient::new(channel);
    let err = kv
        .put(PutRequest {
            ttl_ms: 0,
            expires_at_ts: 0,
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            request_id: vec![],
            lease: 0,
        })
        .await
        .err()
        .ok_or_else(|| anyhow!("put succeeded without nodes"))?;
    ensure!(err.code() == Code::Unavailable, "{err:?}");
    router.shutdown().await?;
    Ok(())
}
