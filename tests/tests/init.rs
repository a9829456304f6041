//! Cluster init takes effect on every member or on none (issue 14, defect 14).

use ringkv_tests::{wait_until, Cluster, ClusterOptions, WAIT};

/// Two nodes lose their data directories while the third still holds the initialised
/// cluster. An init through one of the empty nodes — what `kvctl playground` runs at every
/// start — is refused, and neither empty node records a new cluster id: the old cluster is
/// not replaced by a new one beside it. An init through the surviving node answers that
/// the cluster exists and touches nobody either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_never_mints_a_cluster_beside_an_existing_one() -> anyhow::Result<()> {
    let mut cluster = Cluster::nodes_only(ClusterOptions::default()).await?;
    let original = wait_until("node 3 to apply the cluster configuration", WAIT, || async {
        let status = cluster.node_status(3).await.ok()?;
        status.ring.is_some().then_some(status.cluster_id)
    })
    .await?;
    for id in [1, 2] {
        cluster.stop_node(id).await?;
        let node = cluster.nodes.get_mut(&id).expect("started above");
        std::fs::remove_dir_all(&node.data_dir)?;
        // An empty directory has no recorded port: the node comes back on a new one.
        node.addr = None;
    }
    for id in [1, 2] {
        cluster.start_node(id).await?;
    }

    let refused = cluster
        .init()
        .await
        .expect_err("an init through an empty node beside an initialised one must be refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains("already belongs to the initialised cluster"),
        "{message}"
    );
    for id in [1, 2] {
        let status = cluster.node_status(id).await?;
        assert_eq!(status.cluster_id, "", "node {id} recorded a cluster id");
    }
    assert_eq!(cluster.node_status(3).await?.cluster_id, original);

    // Through the node that kept its data, init reports the existing cluster.
    let through_survivor = ringkv_launcher::cluster::init_cluster(
        &[
            cluster.node_addr(3)?,
            cluster.node_addr(1)?,
            cluster.node_addr(2)?,
        ],
        cluster.options.shards,
        cluster.options.replication_factor,
        None,
    )
    .await;
    let message = match through_survivor {
        Ok(answer) => panic!("a different membership must not be accepted: {answer:?}"),
        Err(err) => err.to_string(),
    };
    assert!(message.contains("initialised differently"), "{message}");
    for id in [1, 2] {
        assert_eq!(cluster.node_status(id).await?.cluster_id, "", "node {id}");
    }
    Ok(())
}
