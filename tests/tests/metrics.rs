//! Metrics and health, end to end (issue 16): after puts and gets through the router, a
//! node's and the router's `/metrics` are valid Prometheus text whose request counters
//! moved, with latency buckets (and, at a node, each hosted group's term and applied index
//! and the WAL's fsync histogram; at the router, transaction outcomes); the standard gRPC
//! health service answers SERVING; `kvctl endpoint health` exits 0 on a live cluster and 1
//! with a node down, and `kvctl endpoint status` reports every member.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{anyhow, bail, Context};
use ringkv_client::Isolation;
use ringkv_tests::{bin_dir, scrape_metrics as scrape, wait_until, Cluster, ClusterOptions, WAIT};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The samples of `text` by series (name with labels) → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = if value == "+Inf" {
                f64::INFINITY
            } else {
                value.parse().ok()?
            };
            Some((series.to_string(), value))
        })
        .collect()
}

/// The `ringkv_*` metric names a dashboard's text mentions.
fn dashboard_metrics(text: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("ringkv_") {
        let name: String = rest[start..]
            .chars()
            .take_while(|character| character.is_ascii_alphanumeric() || *character == '_')
            .collect();
        rest = &rest[start + name.len()..];
        names.insert(name);
    }
    names
}

/// Sum of the samples whose series starts with `prefix`.
fn sum_of(samples: &HashMap<String, f64>, prefix: &str) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.starts_with(prefix))
        .map(|(_, value)| value)
        .sum()
}

/// Fewest bytes a put entry of a `metrics-N` key takes in the log (the key, the value, its
/// request id and timestamps).
const PUT_ENTRY_MIN_BYTES: f64 = 30.0;

/// One group's progress gauges on one node.
#[derive(Debug, Clone, Copy)]
struct GroupProgress {
    commit: f64,
    log_bytes: f64,
}

/// The value of `name{group="..."}` of every group in `samples`.
fn per_group(samples: &HashMap<String, f64>, name: &str) -> HashMap<String, f64> {
    let prefix = format!("{name}{{group=\"");
    samples
        .iter()
        .filter_map(|(series, value)| {
            let group = series.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            Some((group.to_string(), *value))
        })
        .collect()
}

/// Waits until every group on node `id` is quiet in its metrics (commit lag 0: everything
/// committed is applied), checking on every scrape that the commit index is at least the
/// applied index and at most the last log index, and that a group with log entries has log
/// bytes; returns each group's commit index and log bytes.
async fn quiet_groups(cluster: &Cluster, id: u64) -> anyhow::Result<HashMap<String, GroupProgress>> {
    let status = cluster.node_status(id).await?;
    let addr = status.metrics_addr;
    let scrapes = std::sync::Mutex::new(Vec::new());
    let quiet = wait_until(&format!("node {id}'s groups quiet"), WAIT, || async {
        let samples = samples(&scrape(&addr).await.ok()?);
        scrapes.lock().ok()?.push(samples.clone());
        let lags = per_group(&samples, "ringkv_raft_commit_lag_entries");
        (!lags.is_empty() && lags.values().all(|lag| *lag == 0.0)).then_some(samples)
    })
    .await?;
    for samples in scrapes.lock().map_err(|_| anyhow!("poisoned"))?.iter() {
        let commit = per_group(samples, "ringkv_raft_commit_index");
        let applied = per_group(samples, "ringkv_raft_applied_index");
        let last = per_group(samples, "ringkv_raft_last_log_index");
        let lag = per_group(samples, "ringkv_raft_commit_lag_entries");
        let entries = per_group(samples, "ringkv_raft_log_entries");
        let bytes = per_group(samples, "ringkv_raft_log_bytes");
        assert!(!commit.is_empty(), "node {id} reports commit indexes");
        for (group, commit) in &commit {
            let (applied, last, lag) = (applied[group], last[group], lag[group]);
            assert!(
                applied <= *commit && *commit <= last,
                "node {id} group {group}: applied {applied} <= commit {commit} <= last log {last}"
            );
            assert_eq!(lag, commit - applied, "node {id} group {group}: commit lag");
            assert!(
                entries[group] == 0.0 || bytes[group] >= entries[group],
                "node {id} group {group}: {} entries in {} bytes",
                entries[group],
                bytes[group]
            );
        }
    }
    let commit = per_group(&quiet, "ringkv_raft_commit_index");
    let applied = per_group(&quiet, "ringkv_raft_applied_index");
    let bytes = per_group(&quiet, "ringkv_raft_log_bytes");
    for (group, commit) in &commit {
        assert_eq!(
            *commit, applied[group],
            "node {id} group {group}: quiet, the commit index is the applied index"
        );
    }
    Ok(commit
        .into_iter()
        .map(|(group, commit)| {
            let log_bytes = bytes[&group];
            (group, GroupProgress { commit, log_bytes })
        })
        .collect())
}

/// After puts and gets, every node's `/metrics` is valid exposition: ShardKv requests
/// counted (with latency buckets) across the nodes, each hosted group's term and applied
/// index, WAL fsyncs in the histogram; health says SERVING for the process and ShardKv.
#[tokio::test(flavor = "multi_thread")]
async fn node_metrics_move_with_requests_and_health_serves() -> anyhow::Result<()> {
    let options = ClusterOptions {
        shards: 4,
        ..ClusterOptions::default()
    }
    .with_node_metrics();
    let mut cluster = Cluster::start(options).await?;
    cluster.init().await?;
    cluster.start_router().await?;
    let client = cluster.client().await?;
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    let mut before = HashMap::new();
    for &id in &ids {
        before.insert(id, quiet_groups(&cluster, id).await?);
    }
    for index in 0..40 {
        let key = format!("metrics-{index}");
        client.put(&key, b"v".to_vec()).await?;
        client.get(&key).await?.context("a key just written")?;
    }
    // The shards committed the 40 puts (each its own entry: the puts ran one after another)
    // and applied them, and their logs grew by the puts' bytes. Summed over the shards of
    // each one's furthest replica (its leader): a follower learns the last commit from the
    // leader's next message, which a hibernating group does not send until its next write.
    let mut after = HashMap::new();
    for &id in &ids {
        after.insert(id, quiet_groups(&cluster, id).await?);
    }
    let shard_sum = |nodes: &HashMap<u64, HashMap<String, GroupProgress>>, of: fn(&GroupProgress) -> f64| {
        let mut furthest: HashMap<&str, f64> = HashMap::new();
        for (group, progress) in nodes.values().flatten() {
            if group != "system" {
                let value = furthest.entry(group).or_insert(0.0);
                *value = value.max(of(progress));
            }
        }
        furthest.values().sum::<f64>()
    };
    let committed = shard_sum(&after, |group| group.commit) - shard_sum(&before, |group| group.commit);
    assert!(
        committed >= 40.0,
        "the shards' commit indexes advanced by {committed}"
    );
    let grown = shard_sum(&after, |group| group.log_bytes) - shard_sum(&before, |group| group.log_bytes);
    assert!(
        grown >= 40.0 * PUT_ENTRY_MIN_BYTES,
        "the shards' logs grew by {grown} bytes"
    );

    let mut shard_kv_requests = 0.0;
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        let status = cluster.node_status(id).await?;
        assert!(
            !status.metrics_addr.is_empty(),
            "node {id} reports its metrics address"
        );
        assert_eq!(status.process_role, "node");
        let storage = status.storage.context("a node reports its storage")?;
        assert!(
            storage.wal_bytes > 0 && storage.db_bytes > 0,
            "node {id}: {storage:?}"
        );

        let text = scrape(&status.metrics_addr).await?;
        ringkv_metrics::check_exposition(&text).map_err(|err| anyhow!("node {id}: {err}\n{text}"))?;
        let samples = samples(&text);
        shard_kv_requests += sum_of(
            &samples,
            "ringkv_grpc_requests_total{service=\"ringkv.v1.ShardKv\"",
        );
        assert!(
            sum_of(&samples, "ringkv_wal_fsync_duration_seconds_count") > 0.0,
            "node {id} counted WAL fsyncs"
        );
        for replica in &status.replicas {
            let group = replica
                .shard_id
                .map_or("system".to_string(), |shard| shard.to_string());
            let term = samples.get(&format!("ringkv_raft_term{{group=\"{group}\"}}"));
            assert!(
                term.is_some_and(|term| *term >= 1.0),
                "node {id} group {group}: term {term:?}"
            );
            let changes = samples.get(&format!("ringkv_raft_role_changes_total{{group=\"{group}\"}}"));
            assert!(
                changes.is_some_and(|changes| *changes >= 1.0),
                "node {id} group {group}: role changes {changes:?}"
            );
            assert!(
                samples.contains_key(&format!("ringkv_raft_applied_index{{group=\"{group}\"}}")),
                "node {id} group {group}: applied index"
            );
        }

        let addr = cluster.nodes[&id].addr.clone().context("a node address")?;
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let mut health = HealthClient::new(channel);
        for service in ["", "ringkv.v1.ShardKv"] {
            let answer = health
                .check(HealthCheckRequest {
                    service: service.to_string(),
                })
                .await?
                .into_inner();
            assert_eq!(
                answer.status(),
                ServingStatus::Serving,
                "node {id} service {service:?}"
            );
        }
    }
    assert!(
        shard_kv_requests >= 80.0,
        "ShardKv requests counted: {shard_kv_requests}"
    );

    // Buckets of the latency histogram, on the nodes that served reads or writes.
    let buckets = wait_until("ShardKv latency buckets", WAIT, || async {
        for id in cluster.nodes.keys() {
            let status = cluster.node_status(*id).await.ok()?;
            let text = scrape(&status.metrics_addr).await.ok()?;
            if text.contains("ringkv_grpc_request_duration_seconds_bucket{service=\"ringkv.v1.ShardKv\"") {
                return Some(text);
            }
        }
        None
    })
    .await?;
    assert!(buckets.contains("le=\"+Inf\""));
    Ok(())
}

/// Runs kvctl against `router` with `args`; its exit code and stdout.
async fn kvctl(router: &str, args: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
    let output = tokio::process::Command::new(bin_dir()?.join("kvctl"))
        .args(["-e", router, "--timeout", "3000"])
        .args(args)
        .env_remove("RINGKV_CA")
        .env_remove("RINGKV_CERT")
        .env_remove("RINGKV_KEY")
        .output()
        .await?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

/// The router's `/metrics` counts Kv requests (with latency buckets) and transaction
/// commits; its health and NodeStatus answer for it; `kvctl endpoint health --cluster` exits
/// 0 while every member serves and 1 once a node is down, and `endpoint status` reports
/// each node's sizes and the router's role.
#[tokio::test(flavor = "multi_thread")]
async fn router_metrics_and_kvctl_endpoint_health() -> anyhow::Result<()> {
    let options = ClusterOptions {
        shards: 4,
        ..ClusterOptions::default()
    }
    .with_node_metrics();
    let mut cluster = Cluster::start(options).await?;
    cluster.init().await?;
    let router = cluster
        .start_router_with(&["--metrics-addr", "127.0.0.1:0"])
        .await?;
    let client = cluster.client().await?;
    for index in 0..10 {
        let key = format!("router-metrics-{index}");
        client.put(&key, b"v".to_vec()).await?;
        client.get(&key).await?.context("a key just written")?;
    }
    let mut txn = client.begin(Isolation::RepeatableRead).await?;
    txn.put("router-metrics-txn", b"t".to_vec());
    txn.commit().await?;

    let config = ringkv_client::ClientConfig::default();
    let itself = ringkv_client::admin::node_status(&router, &config).await?;
    assert_eq!(itself.process_role, "router");
    assert!(
        !itself.metrics_addr.is_empty(),
        "the router reports its metrics address"
    );
    let health = ringkv_client::admin::health(&router, "", &config).await?;
    assert_eq!(health, ringkv_client::admin::Health::Serving);

    let text = scrape(&itself.metrics_addr).await?;
    ringkv_metrics::check_exposition(&text).map_err(|err| anyhow!("router: {err}\n{text}"))?;
    let samples = samples(&text);
    let puts = samples
        .get("ringkv_grpc_requests_total{service=\"ringkv.v1.Kv\",method=\"Put\",code=\"OK\"}")
        .copied();
    assert!(
        puts.is_some_and(|puts| puts >= 10.0),
        "router puts counted: {puts:?}"
    );
    assert!(
        text.contains("ringkv_grpc_request_duration_seconds_bucket{service=\"ringkv.v1.Kv\",method=\"Get\",le=\"+Inf\"}"),
        "latency buckets of Kv.Get"
    );
    assert_eq!(
        samples
            .get("ringkv_txn_commits_total{outcome=\"committed\"}")
            .copied(),
        Some(1.0),
        "one transaction committed"
    );
    assert!(
        sum_of(&samples, "ringkv_tso_requests_total") >= 1.0,
        "the commit took timestamps"
    );

    // Every metric the Grafana dashboard queries is one the router or a node exposes.
    let node = cluster.node_status(1).await?;
    let families: HashSet<String> = [text.as_str(), scrape(&node.metrics_addr).await?.as_str()]
        .iter()
        .flat_map(|text| text.lines())
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .map(str::to_string)
        .collect();
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana/ringkv.json"
    ))?;
    serde_json::from_str::<serde_json::Value>(&dashboard).context("the dashboard is JSON")?;
    for queried in dashboard_metrics(&dashboard) {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| queried.strip_suffix(suffix))
            .unwrap_or(&queried);
        assert!(
            families.contains(family),
            "the dashboard queries {queried}, which nothing exposes"
        );
    }

    let (code, stdout) = kvctl(&router, &["endpoint", "health", "--cluster", "-o", "json"]).await?;
    assert_eq!(code, Some(0), "every endpoint healthy: {stdout}");
    let health: serde_json::Value = serde_json::from_str(&stdout)?;
    let endpoints = health["endpoints"].as_array().context("endpoints")?;
    assert_eq!(endpoints.len(), 4, "the router and three nodes: {stdout}");
    assert!(
        endpoints.iter().all(|endpoint| endpoint["healthy"] == true),
        "{stdout}"
    );

    let (code, stdout) = kvctl(&router, &["endpoint", "status", "--cluster", "-o", "json"]).await?;
    assert_eq!(code, Some(0), "{stdout}");
    let status: serde_json::Value = serde_json::from_str(&stdout)?;
    let endpoints = status["endpoints"].as_array().context("endpoints")?;
    assert_eq!(endpoints[0]["role"], "router", "{stdout}");
    for node in &endpoints[1..] {
        assert_eq!(node["role"], "node", "{stdout}");
        assert_eq!(node["health"], "SERVING", "{stdout}");
        assert!(
            node["db_bytes"].as_u64().is_some_and(|bytes| bytes > 0),
            "{stdout}"
        );
        assert!(
            node["system_term"].as_u64().is_some_and(|term| term >= 1),
            "{stdout}"
        );
    }

    cluster.kill_node(3)?;
    let (code, stdout) = kvctl(&router, &["endpoint", "health", "--cluster", "-o", "json"]).await?;
    assert_eq!(code, Some(1), "a node is down: {stdout}");
    let health: serde_json::Value = serde_json::from_str(&stdout)?;
    let unhealthy: Vec<_> = health["endpoints"]
        .as_array()
        .context("endpoints")?
        .iter()
        .filter(|endpoint| endpoint["healthy"] == false)
        .collect();
    assert_eq!(unhealthy.len(), 1, "only the killed node: {stdout}");
    Ok(())
}

/// `name` with the labels `labels` (`key="value"` pairs, in order) in `samples`; 0 when absent.
fn sample(samples: &HashMap<String, f64>, name: &str, labels: &str) -> f64 {
    let series = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    samples.get(&series).copied().unwrap_or(0.0)
}

/// The snapshot and move gauges of one node at one scrape.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Activity {
    building: f64,
    sending: f64,
    receiving: f64,
    installing: f64,
    moves_planned: f64,
    moves_in_progress: f64,
}

impl Activity {
    fn of(samples: &HashMap<String, f64>) -> Activity {
        let phase = |phase: &str| {
            sample(
                samples,
                "ringkv_snapshots_in_progress",
                &format!("phase=\"{phase}\""),
            )
        };
        Activity {
            building: phase("building"),
            sending: phase("sending"),
            receiving: phase("receiving"),
            installing: phase("installing"),
            moves_planned: sample(samples, "ringkv_moves_planned", ""),
            moves_in_progress: sample(samples, "ringkv_moves_in_progress", ""),
        }
    }

    fn idle(&self) -> bool {
        *self
            == Activity {
                building: 0.0,
                sending: 0.0,
                receiving: 0.0,
                installing: 0.0,
                moves_planned: 0.0,
                moves_in_progress: 0.0,
            }
    }
}

/// The samples of each running node's `/metrics`, by node id.
async fn scrape_nodes(cluster: &Cluster) -> anyhow::Result<HashMap<u64, HashMap<String, f64>>> {
    let mut scraped = HashMap::new();
    for &id in cluster.nodes.keys() {
        let status = cluster.node_status(id).await?;
        scraped.insert(id, samples(&scrape(&status.metrics_addr).await?));
    }
    Ok(scraped)
}

/// A 4th node joins a cluster whose shard logs were purged behind snapshots, with snapshot
/// streaming paced slow: while the replicas move, a shard leader shows moves planned and
/// in progress and node 4 a snapshot being received; once settled, every node's snapshot
/// and move gauges are back to 0, node 4 counts the snapshots it received and installed
/// and their bytes, the senders counted at least those bytes, and a move completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_and_snapshots_show_while_a_node_joins() -> anyhow::Result<()> {
    let config_dir = tempfile::tempdir()?;
    let config_path = config_dir.path().join("node.toml");
    // Small chunks at 64 KiB/s: each replica's snapshot streams for a second or more.
    std::fs::write(
        &config_path,
        "snapshot_chunk_bytes = 4096\ncatch_up_bytes_per_sec = 65536\n",
    )?;
    let mut options = ClusterOptions {
        shards: 4,
        ..ClusterOptions::default()
    };
    options.node_args.extend(
        [
            "--metrics-addr",
            "127.0.0.1:0",
            "--membership-interval-ms",
            "200",
            "--max-concurrent-moves",
            "4",
            "--snapshot-logs-since-last",
            "5",
            "--logs-to-keep-after-snapshot",
            "0",
            "--config",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .chain([config_path.display().to_string()]),
    );
    let mut cluster = Cluster::start(options).await?;
    let client = cluster.client().await?;
    for batch in 0..12 {
        let mutations: Vec<ringkv_client::Mutation> = (0..50)
            .map(|i| ringkv_client::Mutation::put(format!("move/{batch}/{i}"), vec![b'x'; 400]))
            .collect();
        client.batch_write(mutations).await?;
    }
    // Every shard leader built a snapshot and purged its log behind it: a new replica
    // needs a snapshot.
    wait_until("every shard's log purged behind a snapshot", WAIT, || async {
        let leaders = cluster.leaders().await;
        for (shard, leader) in &leaders {
            let status = cluster.node_status(*leader).await.ok()?;
            let replica = status.replicas.iter().find(|r| r.shard_id == Some(*shard))?;
            if replica.purged_index == 0 {
                return None;
            }
        }
        (leaders.len() == 4).then_some(())
    })
    .await?;
    let before = scrape_nodes(&cluster).await?;
    let built: f64 = before
        .values()
        .map(|samples| sample(samples, "ringkv_snapshots_total", "phase=\"built\""))
        .sum();
    assert!(built >= 4.0, "every shard leader built a snapshot: {built}");

    let addr = cluster.start_node(4).await?;
    client.add_node(4, &addr).await?;
    let seen_moving = AtomicBool::new(false);
    let seen_receiving = AtomicBool::new(false);
    wait_until("a move and a snapshot transfer in progress", WAIT, || async {
        let scraped = scrape_nodes(&cluster).await.ok()?;
        for (id, samples) in &scraped {
            let activity = Activity::of(samples);
            if activity.moves_in_progress >= 1.0 {
                assert!(
                    activity.moves_planned >= activity.moves_in_progress,
                    "node {id}: a running move is a planned one: {activity:?}"
                );
                seen_moving.store(true, Ordering::Relaxed);
            }
            if *id == 4 && activity.receiving + activity.installing >= 1.0 {
                seen_receiving.store(true, Ordering::Relaxed);
            }
        }
        (seen_moving.load(Ordering::Relaxed) && seen_receiving.load(Ordering::Relaxed)).then_some(())
    })
    .await?;

    wait_until("every shard settled on placement", WAIT, || async {
        let status = client.rebalance_status().await.ok()?;
        (status.shards_settled == status.shards_total).then_some(())
    })
    .await?;
    let settled = wait_until(
        "every node's snapshot and move gauges back to 0",
        WAIT,
        || async {
            let scraped = scrape_nodes(&cluster).await.ok()?;
            scraped
                .values()
                .all(|samples| Activity::of(samples).idle())
                .then_some(scraped)
        },
    )
    .await?;
    let node4 = &settled[&4];
    let received_bytes = sample(node4, "ringkv_snapshot_bytes_total", "direction=\"received\"");
    assert!(
        received_bytes >= 4096.0,
        "node 4 received snapshot bytes: {received_bytes}"
    );
    for phase in ["received", "installed"] {
        let count = sample(node4, "ringkv_snapshots_total", &format!("phase=\"{phase}\""));
        assert!(count >= 1.0, "node 4 snapshots {phase}: {count}");
    }
    let sent_bytes: f64 = settled
        .values()
        .map(|samples| sample(samples, "ringkv_snapshot_bytes_total", "direction=\"sent\""))
        .sum();
    assert!(
        sent_bytes >= received_bytes,
        "sent {sent_bytes} >= received {received_bytes}"
    );
    let completed: f64 = settled
        .values()
        .map(|samples| sample(samples, "ringkv_moves_total", "outcome=\"completed\""))
        .sum();
    assert!(completed >= 1.0, "a move completed: {completed}");
    Ok(())
}

/// The service names the server reflection service at `addr` lists.
async fn reflected_services(addr: &str) -> anyhow::Result<HashSet<String>> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = ServerReflectionClient::new(channel);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("ringkv.v1.Admin".to_string()),
    ]
    .map(|request| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    });
    let mut replies = client
        .server_reflection_info(futures::stream::iter(requests))
        .await?
        .into_inner();
    let mut services = HashSet::new();
    let mut admin_file = false;
    while let Some(reply) = replies.message().await? {
        match reply.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                services.extend(list.service.into_iter().map(|service| service.name));
            }
            Some(MessageResponse::FileDescriptorResponse(files)) => {
                admin_file = files
                    .file_descriptor_proto
                    .iter()
                    .any(|file| String::from_utf8_lossy(file).contains("NodeStatus"));
            }
            other => bail!("{addr}: unexpected reflection answer {other:?}"),
        }
    }
    assert!(
        admin_file,
        "{addr}: the file defining ringkv.v1.Admin (with NodeStatus) is served"
    );
    Ok(services)
}

/// Standard gRPC server reflection lists exactly what a node and a router serve, the
/// health service and reflection itself included (not the other process's services, which
/// share the descriptor set), and serves the files that define them.
#[tokio::test(flavor = "multi_thread")]
async fn reflection_lists_the_served_services() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        shards: 2,
        ..ClusterOptions::default()
    })
    .await?;
    let router = cluster.router_addr.clone().context("a router")?;
    let node = cluster.node_addr(1)?;
    let listed = |services: &[&str]| -> HashSet<String> {
        ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]
            .iter()
            .chain(services)
            .map(|service| service.to_string())
            .collect()
    };
    assert_eq!(
        reflected_services(&node).await?,
        listed(&[
            "ringkv.v1.ShardKv",
            "ringkv.v1.Raft",
            "ringkv.v1.Admin",
            "ringkv.v1.Auth",
            "ringkv.v1.Tso"
        ]),
        "a node's services"
    );
    assert_eq!(
        reflected_services(&router).await?,
        listed(&[
            "ringkv.v1.Kv",
            "ringkv.v1.Txn",
            "ringkv.v1.Admin",
            "ringkv.v1.Auth",
            "ringkv.v1.Tso",
            "ringkv.v1.Lease"
        ]),
        "a router's services"
    );
    Ok(())
}
