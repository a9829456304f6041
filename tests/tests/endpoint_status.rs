//! `kvctl endpoint status` key counts (issue 16) against real nodes and a router: each node
//! reports the keys of the shard replicas it holds and of those it leads; summed over the
//! nodes, the led counts are the cluster's keys and the held counts every replica's copy;
//! keys whose TTL passed are not counted (the counts agree with gets), and `--no-keys`
//! leaves the counts out. Also the output formats of the commands that are not key-value
//! ones: `endpoint` prints jsonl and tsv too, and a format a command does not print is a
//! usage error (exit 64) that says which it does.

use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ringkv_tests::{wait_until, Cluster, ClusterOptions, WAIT};
use serde_json::Value;

/// Keys that stay.
const KEPT_KEYS: u64 = 40;
/// Keys put with [`SHORT_TTL`].
const EXPIRING_KEYS: u64 = 10;
const SHORT_TTL: Duration = Duration::from_millis(1_500);

/// kvctl's stdout as JSON, after checking it exited 0.
fn json_of(output: &Output, what: &str) -> Result<Value> {
    ensure!(
        output.status.code() == Some(0),
        "{what}: exit {:?}; stderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).with_context(|| format!("{what}: JSON"))
}

/// The nodes' entries of `endpoint status --cluster -o json` (the router's left out).
fn node_entries(status: &Value) -> Result<Vec<Value>> {
    let endpoints = status["endpoints"].as_array().context("endpoints")?;
    Ok(endpoints
        .iter()
        .filter(|endpoint| endpoint["role"] == "node")
        .cloned()
        .collect())
}

/// (keys held, keys led) summed over the nodes, or `None` while some node has no count.
fn sums(nodes: &[Value]) -> Option<(u64, u64)> {
    let mut held = 0;
    let mut led = 0;
    for node in nodes {
        held += node["keys_held"].as_u64()?;
        led += node["keys_led"].as_u64()?;
    }
    Some((held, led))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_status_counts_each_nodes_keys() -> Result<()> {
    let options = ClusterOptions::default();
    let replication = u64::from(options.replication_factor);
    let cluster = Cluster::start(options).await?;
    let client = cluster.client().await?;
    for index in 0..KEPT_KEYS {
        client.put(format!("kept/{index:03}"), "v").await?;
    }
    for index in 0..EXPIRING_KEYS {
        client
            .put_with_ttl(format!("brief/{index:03}"), "v", SHORT_TTL)
            .await?;
    }
    let live = KEPT_KEYS + EXPIRING_KEYS;
    // Followers apply a little after the leader acknowledged: wait for every copy.
    let counted = wait_until("every replica's keys counted", WAIT, || async {
        let output = cluster
            .kvctl(&["endpoint", "status", "--cluster", "-o", "json"])
            .await
            .ok()?;
        let status = json_of(&output, "endpoint status").ok()?;
        let nodes = node_entries(&status).ok()?;
        let (held, led) = sums(&nodes)?;
        (nodes.len() == 3 && held == live * replication && led == live).then_some(status)
    })
    .await;
    // Not asserted inside the wait: a TTL can pass before every copy is in (then the
    // sums land on the kept keys below).
    if let Ok(status) = counted {
        let nodes = node_entries(&status)?;
        for node in &nodes {
            let shards = node["shard_keys"].as_array().context("shard_keys")?;
            let per_shard: u64 = shards
                .iter()
                .map(|shard| shard["keys"].as_u64().unwrap_or(0))
                .sum();
            ensure!(node["keys_held"].as_u64() == Some(per_shard), "{node}");
            ensure!(node["keys_partial"] == false, "{node}");
        }
        let routers: Vec<&Value> = status["endpoints"]
            .as_array()
            .context("endpoints")?
            .iter()
            .filter(|endpoint| endpoint["role"] == "router")
            .collect();
        ensure!(
            routers.iter().all(|router| router.get("keys_held").is_none()),
            "a router holds no keys: {status}"
        );
    }

    // Once gets find the expiring keys gone, so do the counts (expired keys are left out
    // whether or not the purge removed them yet).
    for index in 0..EXPIRING_KEYS {
        let key = format!("brief/{index:03}");
        wait_until(&key, WAIT, || async {
            matches!(client.get(&key).await, Ok(None)).then_some(())
        })
        .await?;
    }
    wait_until("the kept keys counted", WAIT, || async {
        let output = cluster
            .kvctl(&["endpoint", "status", "--cluster", "-o", "json"])
            .await
            .ok()?;
        let status = json_of(&output, "endpoint status").ok()?;
        let nodes = node_entries(&status).ok()?;
        let (held, led) = sums(&nodes)?;
        (held == KEPT_KEYS * replication && led == KEPT_KEYS).then_some(())
    })
    .await?;

    // The table names what it sums.
    let table = cluster.kvctl(&["endpoint", "status", "--cluster"]).await?;
    let table_text = String::from_utf8_lossy(&table.stdout);
    ensure!(table.status.success(), "{table:?}");
    ensure!(
        table_text.contains("KEYS HELD") && table_text.contains("KEYS LED"),
        "{table_text}"
    );

    // `--no-keys`: no counts, no error.
    let output = cluster
        .kvctl(&["endpoint", "status", "--cluster", "--no-keys", "-o", "json"])
        .await?;
    let status = json_of(&output, "endpoint status --no-keys")?;
    for node in node_entries(&status)? {
        ensure!(
            node.get("keys_held").is_none() && node.get("keys_error").is_none(),
            "{node}"
        );
    }
    Ok(())
}

/// `endpoint status` and `endpoint health` print one line per endpoint in jsonl and tsv;
/// `-o raw` there, and the line formats for commands that print a table or one JSON
/// document, are usage errors (exit 64) naming the formats they print.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_formats_of_commands_without_keys() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    // Wait until every member answers (the router knows the ring).
    wait_until("every member healthy", WAIT, || async {
        let output = cluster
            .kvctl(&["-o", "jsonl", "endpoint", "health", "--cluster"])
            .await
            .ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        let lines: Vec<Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .ok()?;
        (output.status.code() == Some(0)
            && lines.len() == 4
            && lines.iter().all(|line| line["healthy"] == true))
        .then_some(())
    })
    .await?;

    let output = cluster
        .kvctl(&["-o", "tsv", "endpoint", "status", "--cluster"])
        .await?;
    ensure!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout)?;
    let rows: Vec<Vec<&str>> = text.lines().map(|line| line.split('\t').collect()).collect();
    ensure!(rows.len() == 5, "a header and four endpoints: {text}");
    let header = &rows[0];
    ensure!(header[0] == "endpoint" && header.contains(&"keys_held"), "{text}");
    let role = header.iter().position(|name| *name == "role").context("role")?;
    let keys_held = header
        .iter()
        .position(|name| *name == "keys_held")
        .context("keys_held")?;
    for row in &rows[1..] {
        ensure!(row.len() == header.len(), "{text}");
        match row[role] {
            "node" => ensure!(row[keys_held].parse::<u64>().is_ok(), "{text}"),
            "router" => ensure!(row[keys_held].is_empty(), "{text}"),
            other => anyhow::bail!("role {other}: {text}"),
        }
    }

    let output = cluster
        .kvctl(&["-o", "jsonl", "endpoint", "status", "--no-keys"])
        .await?;
    let text = String::from_utf8(output.stdout.clone())?;
    ensure!(output.status.success() && text.lines().count() == 1, "{output:?}");
    let line: Value = serde_json::from_str(text.trim_end())?;
    ensure!(line["role"] == "router", "{line}");

    for (args, says) in [
        (
            &["-o", "raw", "endpoint", "status"][..],
            "table, json, jsonl or tsv",
        ),
        (&["-o", "tsv", "cluster", "status"][..], "prints table or json"),
        (&["-o", "jsonl", "user", "list"][..], "prints table or json"),
        (&["-o", "raw", "timestamp"][..], "prints table or json"),
    ] {
        let output = cluster.kvctl(args).await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(
            output.status.code() == Some(64) && output.stdout.is_empty() && stderr.contains(says),
            "{args:?}: exit {:?}, stderr {stderr}",
            output.status.code()
        );
    }
    Ok(())
}
