//! Request bounds (issue 15, hardening): oversized batches are refused with a message naming
//! the limit at the router and directly at a node, a node refuses requests beyond its
//! in-flight limit with RESOURCE_EXHAUSTED, and both keep serving afterwards.

use ringkv_proto::{metadata, v1};
use ringkv_tests::{Cluster, ClusterOptions, WAIT};
use tonic::Code;

fn put_op(key: Vec<u8>) -> v1::WriteOp {
    v1::WriteOp {
        keep_value: false,
        ttl_ms: 0,
        expires_at_ts: 0,
        key,
        kind: v1::WriteKind::Put as i32,
        value: b"v".to_vec(),
        expected_version: None,
    }
}

/// A write of `ops` puts of keys of `shard` to the shard's leader, under request id `id`.
fn shard_write(shard: u32, id: u16, keys: &[Vec<u8>]) -> v1::ShardWriteRequest {
    let mut request_id = vec![0; 16];
    request_id[..2].copy_from_slice(&id.to_be_bytes());
    v1::ShardWriteRequest {
        shard_id: shard,
        request_id,
        ops: keys.iter().cloned().map(put_op).collect(),
    }
}

/// `count` distinct keys that all belong to `shard`.
fn keys_of_shard(ring: &ringkv_ring::Ring, shard: u32, count: usize) -> Vec<Vec<u8>> {
    (0u64..)
        .map(|i| format!("bound-{i}").into_bytes())
        .filter(|key| ring.shard_for_key(key).0 == shard)
        .take(count)
        .collect()
}

fn assert_refused(status: &tonic::Status, code: Code, names: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(names),
        "expected {names:?} in {status:?}"
    );
}

/// Batches one item over the limit are refused as a whole, naming the limit and the size:
/// at the router (`max_batch_keys`) and at a node that a client calls directly
/// (`max_ops_per_write` per write and read, 256 writes per write batch); both serve on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_batches_are_refused_at_the_router_and_at_a_node() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut kv = cluster.kv().await?;
    let entries = (0..1001)
        .map(|i| v1::KeyValue {
            key: format!("k{i}").into_bytes(),
            value: b"v".to_vec(),
        })
        .collect();
    let batch_put = kv
        .batch_put(v1::BatchPutRequest {
            entries,
            ..Default::default()
        })
        .await
        .expect_err("1001 entries");
    assert_refused(
        &batch_put,
        Code::InvalidArgument,
        "1001 items, more than max_batch_keys = 1000",
    );
    let batch_get = kv
        .batch_get(v1::BatchGetRequest {
            keys: (0..1001).map(|i| format!("k{i}").into_bytes()).collect(),
            ..Default::default()
        })
        .await
        .expect_err("1001 keys");
    assert_refused(&batch_get, Code::InvalidArgument, "max_batch_keys = 1000");
    kv.put(v1::PutRequest {
        key: b"after".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
    .await
    .expect("the router serves on");

    let leaders = cluster.wait_for_leaders(WAIT).await?;
    let ring = cluster.ring(1).await?;
    let (&shard, &leader) = leaders.iter().next().ok_or_else(|| anyhow::anyhow!("no shard"))?;
    let keys = keys_of_shard(&ring, shard, 1001);
    let mut node = cluster.shard_kv(leader).await?;
    let write = node
        .write(shard_write(shard, 1, &keys))
        .await
        .expect_err("a write of 1001 ops");
    assert_refused(
        &write,
        Code::InvalidArgument,
        "1..=1000 ops (max_ops_per_write), got 1001",
    );
    assert!(metadata::is_rejected(&write), "nothing was applied: {write:?}");
    let read = node
        .read(v1::ShardReadRequest {
            shard_id: shard,
            keys: keys.clone(),
            ..Default::default()
        })
        .await
        .expect_err("a read of 1001 keys");
    assert_refused(
        &read,
        Code::InvalidArgument,
        "1..=1000 keys (max_ops_per_write), got 1001",
    );
    let writes = (0..257u16)
        .map(|i| shard_write(shard, 100 + i, &keys[usize::from(i)..=usize::from(i)]))
        .collect();
    let write_batch = node
        .write_batch(v1::ShardWriteBatchRequest {
            shard_id: shard,
            writes,
        })
        .await
        .expect_err("a batch of 257 writes");
    assert_refused(
        &write_batch,
        Code::InvalidArgument,
        "1..=256 writes (MAX_BATCH_WRITES), got 257",
    );
    node.write(shard_write(shard, 2, &keys[..1000]))
        .await
        .expect("a write at the limit applies: the node serves on");
    Ok(())
}

/// A node started with `max_inflight_requests = 2` refuses the requests beyond two in
/// flight with RESOURCE_EXHAUSTED naming the limit (marked not applied), serves the others,
/// and serves again once the flood is over. Without the limit every write would apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_requests_beyond_its_inflight_limit() -> anyhow::Result<()> {
    let config_dir = tempfile::tempdir()?;
    let config_path = config_dir.path().join("node.toml");
    std::fs::write(&config_path, "max_inflight_requests = 2\n")?;
    let mut options = ClusterOptions {
        nodes: 1,
        shards: 2,
        replication_factor: 1,
        ..ClusterOptions::default()
    };
    options.node_args.push("--config".to_string());
    options.node_args.push(config_path.display().to_string());
    let cluster = Cluster::nodes_only(options).await?;
    let leaders = cluster.wait_for_leaders(WAIT).await?;
    let ring = cluster.ring(1).await?;
    let (&shard, &leader) = leaders.iter().next().ok_or_else(|| anyhow::anyhow!("no shard"))?;
    let keys = keys_of_shard(&ring, shard, 200);
    let node = cluster.shard_kv(leader).await?;

    let flood = keys.iter().enumerate().map(|(i, key)| {
        let mut node = node.clone();
        let request = shard_write(shard, 1000 + i as u16, std::slice::from_ref(key));
        async move { node.write(request).await }
    });
    let outcomes = futures::future::join_all(flood).await;
    let refused: Vec<&tonic::Status> = outcomes
        .iter()
        .filter_map(|outcome| outcome.as_ref().err())
        .collect();
    let applied = outcomes.len() - refused.len();
    assert!(
        applied >= 2,
        "the requests within the limit apply ({applied} did)"
    );
    assert!(
        !refused.is_empty(),
        "200 concurrent writes with a limit of 2: some are refused"
    );
    for status in &refused {
        assert_refused(status, Code::ResourceExhausted, "max_inflight_requests = 2");
        assert!(
            metadata::is_rejected(status),
            "refused before decoding: {status:?}"
        );
    }

    let mut node = node.clone();
    node.write(shard_write(shard, 9, &keys[..1]))
        .await
        .expect("the node serves once the flood is over");
    Ok(())
}

/// `Txn.Gc` takes a stream slot: with `max_open_streams = 1` and a `ScanStream` open, a
/// collection is refused with RESOURCE_EXHAUSTED naming the limit (collections on demand
/// were unbounded in number), and runs once the stream is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_on_demand_share_the_stream_slots() -> anyhow::Result<()> {
    let options = ClusterOptions {
        router_config: vec!["max_open_streams = 1".to_string()],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(options).await?;
    let mut kv = cluster.kv().await?;
    let addr = cluster
        .router_addr
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no router"))?;
    let mut txn = v1::txn_client::TxnClient::connect(format!("http://{addr}")).await?;
    let open = kv
        .scan_stream(v1::ScanRequest {
            prefix: b"bounds/".to_vec(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let refused = txn
        .gc(v1::TxnGcRequest::default())
        .await
        .expect_err("the only stream slot is taken");
    assert_refused(&refused, Code::ResourceExhausted, "max_open_streams = 1");
    drop(open);
    let mut progress = ringkv_tests::wait_until("a collection once the stream is closed", WAIT, || {
        let mut txn = txn.clone();
        async move { txn.gc(v1::TxnGcRequest::default()).await.ok() }
    })
    .await?
    .into_inner();
    while let Some(step) = progress.message().await? {
        if step.phase == v1::txn_gc_progress::Phase::Done as i32 {
            return Ok(());
        }
    }
    anyhow::bail!("the collection ended without its last step")
}

/// The `SETTINGS_MAX_CONCURRENT_STREAMS` a server at `addr` announces on a new HTTP/2
/// connection (`None`: not announced, so unlimited).
async fn announced_max_streams(addr: &str) -> anyhow::Result<Option<u32>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SETTINGS: u8 = 0x4;
    const ACK: u8 = 0x1;
    const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
    // An empty SETTINGS frame: length 0, type SETTINGS, no flags, stream 0.
    stream.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]).await?;
    let read = async {
        loop {
            let mut header = [0u8; 9];
            stream.read_exact(&mut header).await?;
            let length = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            anyhow::ensure!(length <= 1 << 14, "a frame of {length} bytes");
            let mut payload = vec![0u8; length];
            stream.read_exact(&mut payload).await?;
            if header[3] != SETTINGS || header[4] & ACK != 0 {
                continue;
            }
            let announced = payload.chunks_exact(6).find_map(|setting| {
                (u16::from_be_bytes([setting[0], setting[1]]) == MAX_CONCURRENT_STREAMS)
                    .then(|| u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]))
            });
            return Ok(announced);
        }
    };
    tokio::time::timeout(WAIT, read).await?
}

/// Nodes and routers bound the HTTP/2 streams one connection may open at once (tonic
/// announces no limit by default): 4096 at a node, 1024 at a router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_bound_the_streams_of_a_connection() -> anyhow::Result<()> {
    let mut cluster = Cluster::nodes_only(ClusterOptions {
        nodes: 1,
        shards: 1,
        replication_factor: 1,
        ..ClusterOptions::default()
    })
    .await?;
    let router = cluster.start_router().await?;
    assert_eq!(announced_max_streams(&cluster.node_addr(1)?).await?, Some(4096));
    assert_eq!(announced_max_streams(&router).await?, Some(1024));
    Ok(())
}
