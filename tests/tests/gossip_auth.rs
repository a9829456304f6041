//! Authenticated gossip (issue 15): in a TLS cluster every gossip datagram carries an
//! HMAC-SHA256 tag under the cluster's gossip key (`ringkv_gossip::auth`). Nodes and routers
//! gossip with each other; a process without the key — plain chitchat, or chitchat signed with
//! another key — that impersonates a node and claims every shard's leadership is heard by
//! nobody: its datagrams are dropped and counted, and the cluster's view of liveness and
//! leaders stays what it was. The negative control shows the same forger joining an insecure
//! cluster's gossip at once. With TLS, a process without a (valid) gossip key does not start.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ringkv_gossip::announcement::CLUSTER_NAME;
use ringkv_gossip::{
    Announcement, Gossip, GossipConfig, GossipKey, GossipKeys, LeaderClaim, Load, NodeAnnouncement,
};
use ringkv_launcher::ClusterCerts;
use ringkv_tests::{bin_dir, wait_until, Cluster, ClusterOptions, WAIT};
use ringkv_tls::Role;

/// Gossip interval of the forgers: fast, so they send many datagrams.
const FORGER_INTERVAL: Duration = Duration::from_millis(100);
/// How many more forged datagrams node 1 must drop before the forgers' silence counts (each
/// forger gossips every round, to node 1 among others). Nodes answer a datagram they accept
/// at once, so the negative control's forger hears them within a round or two.
const OBSERVED_ROUNDS: u64 = 20;
/// The term the forgers claim: higher than any real one.
const FORGED_TERM: u64 = 1 << 40;
/// What an authenticated process logs when it drops a datagram.
const REJECTION_LOG: &str = "failed authentication";

fn options(tls: bool) -> ClusterOptions {
    ClusterOptions {
        shards: 4,
        tls,
        ..ClusterOptions::default()
    }
}

/// A gossip member impersonating node 1 (a newer chitchat generation of `node-1`), claiming
/// the leadership of every shard at [`FORGED_TERM`], seeded with every node and the router;
/// signed with `keys` (`None`: plain chitchat).
async fn forger(cluster: &Cluster, keys: Option<GossipKeys>) -> anyhow::Result<Gossip> {
    let cluster_id = cluster.node_status(1).await?.cluster_id;
    let announcement = NodeAnnouncement {
        node_id: 1,
        addr: cluster.node_addr(1)?,
        cluster_id,
        ring_epoch: FORGED_TERM,
        leaders: (0..cluster.options.shards)
            .map(|shard_id| LeaderClaim {
                shard_id,
                term: FORGED_TERM,
            })
            .collect(),
        load: Load::default(),
        draining: false,
    };
    let mut config = GossipConfig::new(CLUSTER_NAME, "node-1", SocketAddr::from(([127, 0, 0, 1], 0)));
    config.seeds = cluster.node_addrs();
    config.seeds.extend(cluster.router_addr.clone());
    config.interval = FORGER_INTERVAL;
    config.initial_state = Announcement::Node(announcement).to_state().into_iter().collect();
    config.auth = keys;
    Ok(Gossip::start(config).await?)
}

/// The other members a forger has heard of.
async fn heard_by(forger: &Gossip) -> Vec<String> {
    forger
        .members()
        .await
        .into_iter()
        .map(|member| member.member_id)
        .filter(|member_id| member_id != forger.member_id())
        .collect()
}

fn log_has_rejection(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|log| log.contains(REJECTION_LOG))
}

/// Every node's liveness as the router's gossip sees it, by node id.
async fn router_liveness(cluster: &Cluster) -> anyhow::Result<Vec<(u64, String)>> {
    let status = cluster.client().await?.cluster_status().await?;
    Ok(status
        .nodes
        .into_iter()
        .map(|node| (node.node_id, node.liveness))
        .collect())
}

async fn wait_for_every_node_alive_at_the_router(cluster: &Cluster) -> anyhow::Result<()> {
    wait_until("the router's gossip hears every node alive", WAIT, || async {
        let liveness = router_liveness(cluster).await.ok()?;
        (liveness.len() == cluster.options.nodes as usize
            && liveness.iter().all(|(_, liveness)| liveness == "alive"))
        .then_some(())
    })
    .await?;
    Ok(())
}

/// A TLS cluster gossips authenticated (the router hears every node alive, and nodes and
/// router log no rejection); forgers without the key — plain chitchat and chitchat under
/// another key — impersonating node 1 and claiming every shard are dropped and counted by
/// the nodes (their status counts them) and the router, hear nobody, and change neither the router's view of liveness
/// nor the shards' leaders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_gossip_changes_nothing_in_a_tls_cluster() -> anyhow::Result<()> {
    let cluster = Cluster::start(options(true)).await?;
    wait_for_every_node_alive_at_the_router(&cluster).await?;
    let router_log = cluster.dir.path().join("router.log");
    for id in 1..=cluster.options.nodes {
        assert!(
            !log_has_rejection(&cluster.node_log(id)),
            "node {id} rejected its peers' gossip"
        );
    }
    assert!(
        !log_has_rejection(&router_log),
        "the router rejected the nodes' gossip"
    );
    for id in 1..=cluster.options.nodes {
        let gossip = cluster.node_status(id).await?.gossip;
        assert!(
            gossip.is_some_and(|gossip| gossip.authenticated && gossip.rejected_datagrams == 0),
            "node {id}: {gossip:?}"
        );
    }
    let leaders_before = cluster.wait_for_leaders(WAIT).await?;

    let unauthenticated = forger(&cluster, None).await?;
    let wrong_key = GossipKeys::new(GossipKey::generate()?);
    let signed_by_a_stranger = forger(&cluster, Some(wrong_key)).await?;

    // The drop counters rise: the first rejection of each process is logged with its count.
    wait_until(
        "node 1 and the router drop the forged datagrams",
        WAIT,
        || async {
            (log_has_rejection(&cluster.node_log(1)) && log_has_rejection(&router_log)).then_some(())
        },
    )
    .await?;
    // Node 1's status counts them.
    let rejected = wait_until("node 1's status counts the forged datagrams", WAIT, || async {
        let gossip = cluster.node_status(1).await.ok()?.gossip?;
        assert!(gossip.authenticated, "node 1 gossips authenticated");
        (gossip.rejected_datagrams >= 2).then_some(gossip.rejected_datagrams)
    })
    .await?;
    // Nobody answers them (the negative control's forger is answered within a round or two),
    // through many more of their rounds: node 1 alone drops that many more of their datagrams.
    wait_until("node 1 drops many more forged rounds", WAIT, || async {
        let gossip = cluster.node_status(1).await.ok()?.gossip?;
        (gossip.rejected_datagrams >= rejected + OBSERVED_ROUNDS).then_some(())
    })
    .await?;
    assert_eq!(heard_by(&unauthenticated).await, Vec::<String>::new());
    assert_eq!(heard_by(&signed_by_a_stranger).await, Vec::<String>::new());
    assert!(!unauthenticated.is_authenticated());
    assert_eq!(
        signed_by_a_stranger.rejected_datagrams(),
        0,
        "nobody sent it anything"
    );

    // The router still hears every node alive, and the leaders are the real ones.
    let liveness = router_liveness(&cluster).await?;
    assert!(
        liveness.iter().all(|(_, liveness)| liveness == "alive"),
        "{liveness:?}"
    );
    assert_eq!(cluster.leaders().await, leaders_before);
    // The router routes by the real leaders: a write to every shard succeeds.
    let client = cluster.client().await?;
    for index in 0..32 {
        client
            .put(format!("gossip-auth/{index}").into_bytes(), b"v".to_vec())
            .await?;
    }
    let gossip = cluster.node_status(1).await?.gossip;
    assert!(
        gossip.is_some_and(|gossip| gossip.rejected_datagrams >= rejected),
        "the count only grows: {gossip:?}"
    );
    unauthenticated.shutdown().await;
    signed_by_a_stranger.shutdown().await;
    Ok(())
}

/// NEGATIVE CONTROL: in an insecure cluster (no gossip key) the same plain-chitchat forger
/// is answered by the nodes at once: it joins the gossip it could poison. This is what the
/// test above would see without authentication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insecure_cluster_answers_a_forger() -> anyhow::Result<()> {
    let cluster = Cluster::start(options(false)).await?;
    let gossip = cluster.node_status(1).await?.gossip;
    assert!(gossip.is_some_and(|gossip| !gossip.authenticated), "{gossip:?}");
    let unauthenticated = forger(&cluster, None).await?;
    wait_until("the forger hears the nodes", WAIT, || async {
        let heard = heard_by(&unauthenticated).await;
        heard.iter().any(|member| member == "node-2").then_some(())
    })
    .await?;
    unauthenticated.shutdown().await;
    Ok(())
}

/// With TLS, a node or router given no `--gossip-key` refuses to start and names the flag;
/// one given a file that is not a gossip key refuses too, naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_a_gossip_key_refuses_to_start() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let certs = ClusterCerts::create(&scratch.path().join("certs"), "no-gossip-key")?;
    let not_a_key = scratch.path().join("not-a-key");
    std::fs::write(&not_a_key, "hello\n")?;
    for gossip_key in [None, Some(not_a_key.as_path())] {
        let node = certs.paths(Role::Node);
        let mut command = Command::new(bin_dir()?.join("ringkv-node"));
        command
            .args(["--node-id", "1", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(scratch.path().join("node"))
            .arg("--ca")
            .arg(certs.ca())
            .arg("--cert")
            .arg(&node.cert)
            .arg("--key")
            .arg(&node.key);
        let router = certs.paths(Role::Router);
        let mut router_command = Command::new(bin_dir()?.join("ringkv-router"));
        router_command
            .args(["--listen", "127.0.0.1:0", "--nodes", "127.0.0.1:1"])
            .arg("--ca")
            .arg(certs.ca())
            .arg("--cert")
            .arg(&router.cert)
            .arg("--key")
            .arg(&router.key);
        if let Some(path) = gossip_key {
            command.arg("--gossip-key").arg(path);
            router_command.arg("--gossip-key").arg(path);
        }
        for (what, mut command) in [("node", command), ("router", router_command)] {
            let output = command.output()?;
            assert!(!output.status.success(), "the {what} started ({gossip_key:?})");
            let stderr = String::from_utf8_lossy(&output.stderr);
            match gossip_key {
                None => assert!(stderr.contains("--gossip-key"), "{what}: {stderr}"),
                Some(_) => assert!(
                    stderr.contains("not-a-key") && stderr.contains("not a gossip key file"),
                    "{what}: {stderr}"
                ),
            }
        }
    }
    Ok(())
}
