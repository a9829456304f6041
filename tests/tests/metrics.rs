//! Metrics and health, end to end (issue 16): after puts and gets through the router, a
//! node's and the router's `/metrics` are valid Prometheus text whose request counters
//! moved, with latency buckets (and, at a node, each hosted group's term and applied index
//! and the WAL's fsync histogram; at the router, transaction outcomes); the standard gRPC
//! health service answers SERVING; `kvctl endpoint health` exits 0 on a live cluster and 1
//! with a node down, and `kvctl endpoint status` reports every member.

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, bail, Context};
use ringkv_client::Isolation;
use ringkv_tests::{bin_dir, wait_until, Cluster, ClusterOptions, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The body of `GET /metrics` at `addr` (HTTP/1.1, one request per connection).
async fn scrape(addr: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("scrape of {addr} answered {head:?}");
    }
    Ok(body.to_string())
}

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

/// After puts and gets, every node's `/metrics` is valid exposition: ShardKv requests
/// counted (with latency buckets) across the nodes, each hosted group's term and applied
/// index, WAL fsyncs in the histogram; health says SERVING for the process and ShardKv.
#[tokio::test(flavor = "multi_thread")]
async fn node_metrics_move_with_requests_and_health_serves() -> anyhow::Result<()> {
    let mut options = ClusterOptions {
        shards: 4,
        ..ClusterOptions::default()
    };
    options
        .node_args
        .extend(["--metrics-addr".to_string(), "127.0.0.1:0".to_string()]);
    let mut cluster = Cluster::start(options).await?;
    cluster.init().await?;
    cluster.start_router().await?;
    let client = cluster.client().await?;
    for index in 0..40 {
        let key = format!("metrics-{index}");
        client.put(&key, b"v".to_vec()).await?;
        client.get(&key).await?.context("a key just written")?;
    }

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
    let mut options = ClusterOptions {
        shards: 4,
        ..ClusterOptions::default()
    };
    options
        .node_args
        .extend(["--metrics-addr".to_string(), "127.0.0.1:0".to_string()]);
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
