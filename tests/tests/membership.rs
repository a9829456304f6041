//! Elastic membership against real processes: a node joins under write load, a node is
//! decommissioned, a dead node is replaced. Each ends with every acknowledged write
//! readable and every shard's voters equal to placement.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ringkv_proto::v1::{self, plan_ring_change_request::Change};
use ringkv_tests::{wait_until, Cluster, ClusterOptions};

/// How long a rebalance may take in these tests (small data, debug builds, 2 cores).
const REBALANCE_WAIT: Duration = Duration::from_secs(120);

fn options(nodes: u64, extra: &[&str]) -> ClusterOptions {
    let mut options = ClusterOptions {
        nodes,
        shards: 16,
        ..ClusterOptions::default()
    };
    options.node_args.extend(
        ["--membership-interval-ms", "200", "--max-concurrent-moves", "4"]
            .iter()
            .chain(extra)
            .map(|arg| arg.to_string()),
    );
    options
}

/// What a write load saw.
#[derive(Default)]
struct LoadLog {
    /// key → (value, version) of every acknowledged put.
    acked: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
    /// When each acknowledged put finished, and how long it took.
    done: Vec<(Instant, Duration)>,
    errors: u64,
}

/// Concurrent puts of unique keys until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<LoadLog>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    fn start(client: ringkv_client::Client, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(LoadLog::default()));
        let handles = (0..workers)
            .map(|worker| {
                let (client, stop, log) = (client.clone(), stop.clone(), log.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("load/{worker}/{n}").into_bytes();
                        let value = format!("v{n}").into_bytes();
                        n += 1;
                        let began = Instant::now();
                        let outcome = client.put(&key, value.clone()).await;
                        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                        match outcome {
                            Ok(version) => {
                                log.acked.insert(key, (value, version));
                                log.done.push((Instant::now(), began.elapsed()));
                            }
                            Err(_) => log.errors += 1,
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            log,
            workers: handles,
            started: Instant::now(),
        }
    }

    fn acked_count(&self) -> usize {
        self.log.lock().map(|log| log.acked.len()).unwrap_or(0)
    }

    /// Stops the workers; returns the log and the longest stretch without an acknowledged
    /// write.
    async fn finish(self) -> Result<(LoadLog, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.context("load worker")?;
        }
        let log = Arc::try_unwrap(self.log)
            .map_err(|_| anyhow::anyhow!("load log still shared"))?
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        let mut times: Vec<Instant> = log.done.iter().map(|(at, _)| *at).collect();
        times.sort_unstable();
        let mut longest = Duration::ZERO;
        let mut previous = self.started;
        for at in times {
            longest = longest.max(at.duration_since(previous));
            previous = at;
        }

        Ok((log, longest))
    }
}

fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort_unstable();
    let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
    latencies[index.min(latencies.len() - 1)]
}

async fn check_readable(
    client: &ringkv_client::Client,
    acked: &BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
) -> Result<()> {
    let keys: Vec<Vec<u8>> = acked.keys().cloned().collect();
    for chunk in keys.chunks(500) {
        let got = client.batch_get(chunk).await?;
        for (key, value) in chunk.iter().zip(got) {
            let Some(value) = value else {
                bail!("acknowledged key {} lost", String::from_utf8_lossy(key));
            };
            let (expected, version) = &acked[key];
            if (&value.value, value.version) != (expected, *version) {
                bail!(
                    "key {} reads version {} instead of {version}",
                    String::from_utf8_lossy(key),
                    value.version
                );
            }
        }
    }
    Ok(())
}

/// Waits until the router reports every shard's voters equal to placement, and every
/// running member hosts exactly the shards placement gives it.
async fn wait_settled(
    cluster: &Cluster,
    client: &ringkv_client::Client,
    running: &[u64],
) -> Result<v1::RebalanceStatusResponse> {
    let status = wait_until("every shard settled on placement", REBALANCE_WAIT, || async {
        let status = client.rebalance_status().await.ok()?;
        (status.shards_settled == status.shards_total).then_some(status)
    })
    .await?;
    wait_until("replicas off placement deleted", REBALANCE_WAIT, || async {
        let ring = cluster.ring(running[0]).await.ok()?;
        for &id in running {
            let mut want: Vec<u32> = ring.shards_of_node(id).into_iter().map(|shard| shard.0).collect();
            want.sort_unstable();
            if cluster.hosted_shards(id).await.ok()? != want {
                return None;
            }
        }
        Some(())
    })
    .await?;
    Ok(status)
}

/// Runs kvctl against the router and parses its JSON output.
async fn kvctl(router: &str, args: &[&str]) -> Result<serde_json::Value> {
    let output = tokio::process::Command::new(ringkv_tests::bin_dir()?.join("kvctl"))
        .arg("-e")
        .arg(router)
        .args(args)
        .output()
        .await
        .context("running kvctl")?;
    if !output.status.success() {
        bail!(
            "kvctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).context("kvctl output is not JSON")
}

async fn member_state(cluster: &Cluster, from: u64, node: u64) -> Option<v1::MemberState> {
    let status = cluster.node_status(from).await.ok()?;
    status
        .ring?
        .members
        .into_iter()
        .find(|member| member.node_id == node)
        .map(|member| member.state())
}

/// A 4th node joins a loaded 3-node cluster under steady writes: replicas end balanced,
/// every acknowledged write is readable, writes are never unavailable for long, and the
/// number of moved replicas is close to the consistent-hashing minimum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_under_load_rebalances_without_loss() -> Result<()> {
    let mut cluster = Cluster::start(options(3, &[])).await?;
    let client = cluster.client().await?;
    let preload: Vec<ringkv_client::Mutation> = (0..2000)
        .map(|i| ringkv_client::Mutation::put(format!("pre/{i}"), vec![b'x'; 100]))
        .collect();
    for chunk in preload.chunks(500) {
        client.batch_write(chunk.to_vec()).await?;
    }
    let load = Load::start(client.clone(), 4);
    wait_until("the load to get going", Duration::from_secs(30), || async {
        (load.acked_count() >= 50).then_some(())
    })
    .await?;

    let addr = cluster.start_node(4).await?;
    let plan = client
        .plan_ring_change(Change::Add(v1::NodeAddress {
            node_id: 4,
            addr: addr.clone(),
        }))
        .await?;
    let joined_at = Instant::now();
    let change = client.add_node(4, &addr).await?;
    assert!(change.changed);
    let again = client.add_node(4, &addr).await?;
    assert!(!again.changed, "adding a member again changes nothing");

    let status = wait_settled(&cluster, &client, &[1, 2, 3, 4]).await?;
    wait_until("node 4 active", REBALANCE_WAIT, || async {
        (member_state(&cluster, 1, 4).await == Some(v1::MemberState::Active)).then_some(())
    })
    .await?;
    let rebalance_time = joined_at.elapsed();
    // The system leader then spreads shard leaderships: every node within one of S/N.
    let leaders_per_node = wait_until("leaders spread evenly", REBALANCE_WAIT, || async {
        let leaders = cluster.leaders().await;
        if leaders.len() != 16 {
            return None;
        }
        let mut per_node: BTreeMap<u64, usize> = (1..=4).map(|id| (id, 0)).collect();
        for leader in leaders.values() {
            *per_node.entry(*leader).or_default() += 1;
        }
        per_node
            .values()
            .all(|count| (3..=5).contains(count))
            .then_some(per_node)
    })
    .await?;
    // Keep writing a little on the new topology, then stop.
    let acked_before_stop = load.acked_count();
    wait_until("writes on the new topology", Duration::from_secs(30), || async {
        (load.acked_count() >= acked_before_stop + 50).then_some(())
    })
    .await?;
    let (log, longest_gap) = load.finish().await?;
    check_readable(&client, &log.acked).await?;

    let ring = cluster.ring(1).await?;
    let fair = (16 * 3) as f64 / 4.0;
    let mut per_node = BTreeMap::new();
    for id in 1..=4u64 {
        let hosted = cluster.hosted_shards(id).await?.len();
        per_node.insert(id, hosted);
        assert_eq!(hosted, ring.shards_of_node(id).len());
        assert!(
            (hosted as f64) >= fair * 0.5 && (hosted as f64) <= fair * 1.5,
            "node {id} holds {hosted} replicas, fair share {fair}"
        );
    }
    let mut latencies: Vec<Duration> = log.done.iter().map(|(_, latency)| *latency).collect();
    eprintln!(
        "join: {} replicas moved (ideal {}), rebalance {:.1}s, epoch {}, replicas per node {per_node:?}; \
         leaders per node {leaders_per_node:?}; \
         writes: {} acked, {} errors, p50 {:?}, p99 {:?}, max {:?}, longest gap {:?}",
        plan.replicas_moved,
        plan.ideal_replicas_moved,
        rebalance_time.as_secs_f64(),
        status.epoch,
        log.acked.len(),
        log.errors,
        percentile(&mut latencies, 0.5),
        percentile(&mut latencies, 0.99),
        percentile(&mut latencies, 1.0),
        longest_gap,
    );
    assert!(
        plan.replicas_moved <= plan.ideal_replicas_moved * 2,
        "moved {} replicas, ideal {}",
        plan.replicas_moved,
        plan.ideal_replicas_moved
    );
    assert!(
        longest_gap < Duration::from_secs(10),
        "writes stalled for {longest_gap:?}"
    );
    Ok(())
}

/// `kvctl leader transfer` moves a shard's leadership to the named voter under write load;
/// writes pause briefly, none is lost; bad requests get clear errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_transfer_moves_leadership_under_load() -> Result<()> {
    let cluster = Cluster::start(options(3, &["--no-balance-leaders"])).await?;
    let client = cluster.client().await?;
    let router = cluster.router_addr.clone().context("router address")?;
    let load = Load::start(client.clone(), 4);
    wait_until("the load to get going", Duration::from_secs(30), || async {
        (load.acked_count() >= 50).then_some(())
    })
    .await?;
    let mut transfers = Vec::new();
    for shard in [0u32, 5, 11] {
        let leaders = cluster.wait_for_leaders(Duration::from_secs(30)).await?;
        let from = leaders[&shard];
        let to = if from == 3 { 1 } else { from + 1 };
        let started = Instant::now();
        let answer = kvctl(
            &router,
            &[
                "-o",
                "json",
                "leader",
                "transfer",
                &shard.to_string(),
                "--to",
                &to.to_string(),
            ],
        )
        .await?;
        assert_eq!(answer["leader"], to, "{answer}");
        let took = started.elapsed();
        let leaders = cluster.wait_for_leaders(Duration::from_secs(30)).await?;
        assert_eq!(leaders[&shard], to, "shard {shard} is led by node {to}");
        transfers.push((shard, from, to, took));
    }
    let (log, longest_gap) = load.finish().await?;
    check_readable(&client, &log.acked).await?;
    eprintln!(
        "leader transfers {transfers:?}; writes: {} acked, {} errors, longest gap {longest_gap:?}",
        log.acked.len(),
        log.errors
    );
    assert!(
        longest_gap < Duration::from_secs(5),
        "writes stalled for {longest_gap:?}"
    );
    // Bad requests: a node that is not a voter, a shard that does not exist.
    for args in [
        vec!["leader", "transfer", "0", "--to", "9"],
        vec!["leader", "transfer", "999", "--to", "1"],
    ] {
        let err = kvctl(&router, &args).await.expect_err("refused");
        assert!(
            err.to_string().contains("not a ring member") || err.to_string().contains("does not exist"),
            "{err}"
        );
    }
    Ok(())
}

/// Decommissioning a node moves every replica away with no lost write; the node then holds
/// nothing, is `removed`, and stopping it does not disturb the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommission_empties_the_node() -> Result<()> {
    let mut cluster = Cluster::start(options(4, &[])).await?;
    let client = cluster.client().await?;
    let load = Load::start(client.clone(), 2);
    wait_until("the load to get going", Duration::from_secs(30), || async {
        (load.acked_count() >= 50).then_some(())
    })
    .await?;
    // Through kvctl, as an operator would: plan, decommission, wait for the moves.
    let router = cluster.router_addr.clone().context("router address")?;
    let plan = kvctl(&router, &["cluster", "plan", "--decommission", "2", "-o", "json"]).await?;
    let moves = plan["moves"].as_array().context("moves")?;
    assert!(!moves.is_empty());
    for shard_move in moves {
        let from: Vec<u64> = serde_json::from_value(shard_move["from"].clone())?;
        let to: Vec<u64> = serde_json::from_value(shard_move["to"].clone())?;
        assert!(from.contains(&2) && !to.contains(&2), "{shard_move}");
    }
    let changed = kvctl(&router, &["node", "decommission", "2", "-o", "json"]).await?;
    assert_eq!(changed["changed"], true);
    let settled = kvctl(
        &router,
        &[
            "rebalance",
            "status",
            "--wait",
            "--wait-timeout-s",
            "120",
            "-o",
            "json",
        ],
    )
    .await?;
    assert_eq!(settled["shards_settled"], settled["shards_total"]);
    let unknown = std::process::Command::new(ringkv_tests::bin_dir()?.join("kvctl"))
        .args(["-e", &router, "node", "decommission", "99"])
        .output()?;
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("not a ring member"), "{stderr}");
    wait_until("node 2 removed", REBALANCE_WAIT, || async {
        (member_state(&cluster, 1, 2).await == Some(v1::MemberState::Removed)).then_some(())
    })
    .await?;
    wait_until("node 2 to hold no replica", REBALANCE_WAIT, || async {
        cluster.hosted_shards(2).await.ok()?.is_empty().then_some(())
    })
    .await?;
    wait_settled(&cluster, &client, &[1, 3, 4]).await?;
    cluster.stop_node(2).await?;
    let (log, longest_gap) = load.finish().await?;
    eprintln!(
        "decommission: {} writes acked, longest gap {longest_gap:?}",
        log.acked.len()
    );
    check_readable(&client, &log.acked).await?;
    client.put("after-decommission", "ok").await?;
    let denied = client.decommission_node(1).await;
    assert!(denied.is_err(), "decommissioning below RF owners must be refused");
    Ok(())
}

/// A node unreachable for longer than the dead-node timeout is declared dead and its
/// replicas are re-created on the others; when it comes back it deletes its stale
/// replicas and serves nothing stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_node_is_replaced_and_cleans_up_on_return() -> Result<()> {
    let mut cluster = Cluster::start(options(4, &["--dead-node-timeout-ms", "3000"])).await?;
    let client = cluster.client().await?;
    let mut acked = BTreeMap::new();
    for i in 0..200 {
        let key = format!("k{i}").into_bytes();
        let version = client.put(&key, b"before".to_vec()).await?;
        acked.insert(key, (b"before".to_vec(), version));
    }
    // Gossip: every node alive, heard recently, in the router's cluster status.
    wait_until("gossip hears every node", Duration::from_secs(30), || async {
        let status = client.cluster_status().await.ok()?;
        status
            .nodes
            .iter()
            .all(|node| node.liveness == "alive" && node.last_heard_ms.is_some_and(|ms| ms < 5_000))
            .then_some(())
    })
    .await?;
    cluster.kill_node(3)?;
    wait_until(
        "gossip to stop calling node 3 alive",
        Duration::from_secs(30),
        || async {
            let status = client.cluster_status().await.ok()?;
            let node = status.nodes.iter().find(|node| node.node_id == 3)?;
            (node.liveness == "suspect" || node.liveness == "dead").then_some(())
        },
    )
    .await?;
    wait_until("node 3 declared dead", REBALANCE_WAIT, || async {
        (member_state(&cluster, 1, 3).await == Some(v1::MemberState::Dead)).then_some(())
    })
    .await?;
    wait_settled(&cluster, &client, &[1, 2, 4]).await?;
    check_readable(&client, &acked).await?;
    // Overwrite everything while node 3 is away: its copies are now stale.
    for (key, entry) in acked.iter_mut() {
        let version = client.put(key, b"after".to_vec()).await?;
        *entry = (b"after".to_vec(), version);
    }
    cluster.start_node(3).await?;
    wait_until("node 3 to delete its stale replicas", REBALANCE_WAIT, || async {
        cluster.hosted_shards(3).await.ok()?.is_empty().then_some(())
    })
    .await?;
    let ring = cluster.ring(3).await?;
    let shard = ring.shard_for_key(b"k0").0;
    let stale = cluster.read_replica(3, shard, b"k0").await;
    assert!(stale.is_err(), "a replaced node must not serve reads: {stale:?}");
    check_readable(&client, &acked).await?;
    Ok(())
}

/// A node that restarts at its old address with an empty data directory (a lost disk) is
/// not the member it was: it answers status polls without the cluster's id, so it is declared
/// dead like an unreachable node and its replicas are re-created on the others — instead of
/// being counted alive forever while every shard it held stays under-replicated (issue 14,
/// defect 13). It stays outside the cluster (no Raft traffic before it records a cluster id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_data_is_declared_dead_and_replaced() -> Result<()> {
    let mut cluster = Cluster::start(options(4, &["--dead-node-timeout-ms", "3000"])).await?;
    let client = cluster.client().await?;
    let mut acked = BTreeMap::new();
    for i in 0..100 {
        let key = format!("lost{i}").into_bytes();
        let version = client.put(&key, b"v".to_vec()).await?;
        acked.insert(key, (b"v".to_vec(), version));
    }
    let addr = cluster.node_addr(3)?;
    cluster.stop_node(3).await?;
    std::fs::remove_dir_all(&cluster.nodes[&3].data_dir)?;
    cluster.start_node_listening(3, &addr).await?;
    assert_eq!(
        cluster.node_status(3).await?.cluster_id,
        "",
        "the wiped node has no cluster"
    );

    wait_until("node 3 declared dead", REBALANCE_WAIT, || async {
        (member_state(&cluster, 1, 3).await == Some(v1::MemberState::Dead)).then_some(())
    })
    .await?;
    wait_settled(&cluster, &client, &[1, 2, 4]).await?;
    check_readable(&client, &acked).await?;
    let status = cluster.node_status(3).await?;
    assert_eq!(status.cluster_id, "", "the wiped node was not let back in");
    assert!(
        status.replicas.iter().all(|replica| replica.shard_id.is_none()),
        "the wiped node hosts no shard: {:?}",
        status.replicas
    );
    Ok(())
}

/// `node add` under the id of a member whose node came back with an empty data directory
/// is refused (FAILED_PRECONDITION, and kvctl exits non-zero naming it) instead of
/// answering "unchanged" as for a repeat: the node has no log and no vote, so it may only
/// come back under a new id (issue 14, defect 8). The same command for a member that kept
/// its data stays an idempotent success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_data_is_not_added_again_under_its_id() -> Result<()> {
    const LOST_DATA: &str =
        "node 3 is a member but answers without the cluster's id (its data directory was lost): \
         add it under a new node id";
    let mut cluster = Cluster::start(options(3, &[])).await?;
    let client = cluster.client().await?;
    let kept = client.add_node(1, &cluster.node_addr(1)?).await?;
    assert!(!kept.changed, "a member with its data is added again as a no-op");

    let addr = cluster.node_addr(3)?;
    cluster.stop_node(3).await?;
    std::fs::remove_dir_all(&cluster.nodes[&3].data_dir)?;
    cluster.start_node_listening(3, &addr).await?;
    match client.add_node(3, &addr).await {
        Err(ringkv_client::Error::FailedPrecondition(message)) => {
            assert!(message.contains(LOST_DATA), "{message}")
        }
        other => bail!("adding the wiped node 3 again: {other:?}"),
    }
    let output = cluster.kvctl(&["node", "add", "3", &addr]).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "kvctl node add succeeded: {stderr}");
    assert!(stderr.contains(LOST_DATA), "{stderr}");
    assert_eq!(
        cluster.node_status(3).await?.cluster_id,
        "",
        "the wiped node was not let back in"
    );
    assert_eq!(
        member_state(&cluster, 1, 3).await,
        Some(v1::MemberState::Active),
        "the ring still lists node 3 as it was"
    );
    Ok(())
}
