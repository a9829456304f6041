//! Bad input gets a clear error with the right gRPC code, and the cluster keeps serving.

use std::process::Command;

use ringkv_client::Error;
use ringkv_proto::{metadata, v1};
use ringkv_tests::{bin_dir, wait_until, Cluster, ClusterOptions, WAIT};
use tonic::Code;

/// Key, value and batch limits, a bad request id, an unknown shard, a wrong-shard key and
/// a request to a non-leader each get the documented error; afterwards writes still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client().await?;

    let empty = client.put(b"", b"v".to_vec()).await.expect_err("empty key");
    assert!(
        matches!(empty, Error::InvalidArgument(ref m) if m.contains("empty")),
        "{empty:?}"
    );
    let long_key = vec![b'k'; 4097];
    let long = client.put(&long_key, b"v".to_vec()).await.expect_err("long key");
    assert!(
        matches!(long, Error::InvalidArgument(ref m) if m.contains("4096")),
        "{long:?}"
    );
    let big_value = vec![0u8; (1 << 20) + 1];
    let big = client.put(b"k", big_value).await.expect_err("big value");
    assert!(matches!(big, Error::InvalidArgument(_)), "{big:?}");
    let many: Vec<(Vec<u8>, Vec<u8>)> = (0..1001)
        .map(|i| (format!("k{i}").into_bytes(), b"v".to_vec()))
        .collect();
    let batch = client.batch_put(many).await.expect_err("oversized batch");
    assert!(matches!(batch, Error::InvalidArgument(_)), "{batch:?}");
    let get_empty = client.get(b"").await.expect_err("empty key read");
    assert!(matches!(get_empty, Error::InvalidArgument(_)), "{get_empty:?}");

    // Straight at a node: unknown shard, key of another shard, short request id, follower.
    let ring = cluster.ring(1).await?;
    let leaders = cluster.wait_for_leaders(WAIT).await?;
    let key = b"some-key".to_vec();
    let shard = ring.shard_for_key(&key).0;
    let leader = leaders[&shard];
    let follower = ring
        .replicas(ringkv_ring::ShardId(shard))
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let put = |shard_id: u32, request_id: Vec<u8>| v1::ShardWriteRequest {
        shard_id,
        request_id,
        ops: vec![v1::WriteOp {
            keep_value: false,
            ttl_ms: 0,
            expires_at_ts: 0,
            key: key.clone(),
            kind: v1::WriteKind::Put as i32,
            value: b"v".to_vec(),
            expected_version: None,
        }],
    };
    let mut node = cluster.shard_kv(leader).await?;
    let unknown = node
        .write(put(999, vec![1; 16]))
        .await
        .expect_err("unknown shard");
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(
        unknown.message().contains("unknown shard 999"),
        "{}",
        unknown.message()
    );
    let wrong = node
        .write(put((shard + 1) % ring.shard_count(), vec![1; 16]))
        .await
        .expect_err("wrong shard");
    assert!(
        matches!(wrong.code(), Code::FailedPrecondition | Code::NotFound),
        "{wrong:?}"
    );
    let short_id = node
        .write(put(shard, vec![1; 3]))
        .await
        .expect_err("short request id");
    assert_eq!(short_id.code(), Code::InvalidArgument);
    // The follower names the leader once it has heard from it (a heartbeat after the
    // election): wait for that, then its refusal must carry the hint.
    wait_until("the follower to know the shard's leader", WAIT, || async {
        let status = cluster.node_status(follower).await.ok()?;
        status
            .replicas
            .iter()
            .any(|replica| replica.shard_id == Some(shard) && replica.leader_id == leader)
            .then_some(())
    })
    .await?;
    let mut follower_node = cluster.shard_kv(follower).await?;
    let not_leader = follower_node
        .write(put(shard, vec![2; 16]))
        .await
        .expect_err("write at a follower");
    assert_eq!(not_leader.code(), Code::Unavailable);
    let hint = metadata::leader_hint(&not_leader).and_then(|hint| hint.leader_id);
    assert_eq!(hint, Some(leader), "the error names the leader");
    assert!(metadata::is_rejected(&not_leader));

    // A peer speaking another cluster id is refused.
    let mut raft = v1::raft_client::RaftClient::connect(format!("http://{}", cluster.node_addr(1)?)).await?;
    let foreign = raft
        .vote(v1::RaftMessage {
            cluster_id: "another-cluster".to_string(),
            shard_id: 0,
            system: true,
            from_node: 9,
            payload: vec![],
            to_node: 0,
        })
        .await
        .expect_err("foreign cluster");
    assert_eq!(foreign.code(), Code::FailedPrecondition);
    assert!(
        foreign.message().contains("cluster id mismatch"),
        "{}",
        foreign.message()
    );
    // A message meant for another node id (an address reused by a new node) is refused.
    let cluster_id = cluster.node_status(1).await?.cluster_id;
    let misaddressed = raft
        .vote(v1::RaftMessage {
            cluster_id,
            shard_id: 0,
            system: true,
            from_node: 2,
            payload: vec![],
            to_node: 42,
        })
        .await
        .expect_err("meant for node 42");
    assert_eq!(misaddressed.code(), Code::FailedPrecondition);
    assert!(
        misaddressed.message().contains("for node 42 reached node 1"),
        "{}",
        misaddressed.message()
    );

    // Re-initialising with another shape is refused; with the same shape it is a no-op.
    let mut admin = cluster.admin(1).await?;
    let reinit = admin
        .init_cluster(v1::InitClusterRequest {
            nodes: vec![v1::NodeAddress {
                node_id: 1,
                addr: cluster.node_addr(1)?,
            }],
            shards: 4,
            replication_factor: 1,
        })
        .await
        .expect_err("different shape");
    assert_eq!(reinit.code(), Code::FailedPrecondition);

    // Nothing was lost, and everything still serves.
    let version = client.put(b"still-serving", b"yes".to_vec()).await?;
    let got = client.get(b"still-serving").await?.expect("present");
    assert_eq!((got.value.as_slice(), got.version), (&b"yes"[..], version));
    Ok(())
}

/// A node refuses a malformed config, another node's data directory, and a data directory
/// of another cluster — each with a readable message and a non-zero exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_refuses_bad_config_and_foreign_data() -> anyhow::Result<()> {
    let cluster = Cluster::nodes_only(ClusterOptions {
        nodes: 1,
        shards: 2,
        replication_factor: 1,
        ..ClusterOptions::default()
    })
    .await?;
    let node_bin = bin_dir()?.join("ringkv-node");
    let scratch = tempfile::tempdir()?;

    let bad_toml = scratch.path().join("bad.toml");
    std::fs::write(&bad_toml, "node_id = \"one\"\n")?;
    let output = Command::new(&node_bin).arg("--config").arg(&bad_toml).output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.toml"), "names the file: {stderr}");

    let output = Command::new(&node_bin)
        .args(["--node-id", "1", "--listen", "not-an-address"])
        .arg("--data-dir")
        .arg(scratch.path().join("d"))
        .output()?;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("listen"));

    // Node 1's directory belongs to cluster X: starting it as another cluster's node, or
    // under another node id, is refused. (Stop node 1 first: sled locks its directory.)
    let mut cluster = cluster;
    let data_dir = cluster.nodes[&1].data_dir.clone();
    cluster.stop_node(1).await?;
    let output = Command::new(&node_bin)
        .args([
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--cluster-id",
            "some-other-cluster",
            "--insecure",
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cluster id mismatch"), "{stderr}");
    let output = Command::new(&node_bin)
        .args(["--node-id", "2", "--listen", "127.0.0.1:0", "--insecure"])
        .arg("--data-dir")
        .arg(&data_dir)
        .output()?;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("belongs to node 1"));

    // The node still starts normally afterwards with its data.
    cluster.start_node(1).await?;
    cluster.wait_for_leaders(WAIT).await?;
    Ok(())
}
