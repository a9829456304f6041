//! `kvctl endpoint status | health`, as etcdctl's: what each node and router says about
//! itself (`Admin.NodeStatus`: role, id, version, leaders, Raft term and applied index of the
//! system group, data directory sizes, metrics address) and whether it serves (the standard
//! gRPC health check), or a health ping per endpoint with its latency.
//!
//! The endpoints are `--endpoints` (routers, or any node), `--nodes`, and with `--cluster`
//! every ring member a router knows (its `ClusterStatus`). `health` exits 1 when any
//! endpoint is not serving or does not answer.
//!
//! `status` shows each node's keys, as etcdctl does, unless `--no-keys`: the node counts the
//! keys of every shard replica it holds (`NodeStatusRequest.count_keys`, bounded per
//! replica, expired keys left out), and kvctl sums them over the replicas the node holds
//! (`KEYS HELD`: every copy, so a key counts once per replica) and over those it leads
//! (`KEYS LED`: summed over the nodes, each key once). Counting needs admin when permissions
//! are on; a node that refuses (or fails) the count is asked again without it, and the
//! count's error is shown instead.
//!
//! Both print in table, json, jsonl (one object per endpoint, as in json's `endpoints`)
//! and tsv (one row per endpoint, sizes in bytes); `raw` has no single value to print and
//! is a usage error.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use futures::stream::{self, StreamExt};
use ringkv_client::admin::{self, Health};
use ringkv_client::{proto, Client, ClientConfig};
use serde_json::{json, Value};

use crate::exit::{Outcome, UsageError};
use crate::output::{self, json_line, render_table, to_json, Column, Field, Format, Records};

/// Most endpoints asked at once.
const MAX_ENDPOINT_FANOUT: usize = 16;

/// `kvctl endpoint ...`
#[derive(Subcommand, Debug)]
pub enum EndpointCommand {
    /// Each endpoint's role, id, version, serving state, leaders, Raft summary and sizes.
    Status(EndpointArgs),
    /// Ping each endpoint's gRPC health service; exit 1 if any is not serving.
    Health(EndpointArgs),
}

/// Which endpoints to ask.
#[derive(Args, Debug)]
pub struct EndpointArgs {
    /// Also every ring member the routers at --endpoints know.
    #[arg(long)]
    pub cluster: bool,
    /// `status`: do not count each node's keys (counting walks every replica's keys, and
    /// needs admin when permissions are on).
    #[arg(long)]
    pub no_keys: bool,
    /// More endpoints (nodes or routers, host:port), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<String>,
}

/// Runs an `endpoint` subcommand against `endpoints` (and what its arguments add).
pub async fn run(
    command: EndpointCommand,
    endpoints: Vec<String>,
    config: ClientConfig,
    format: Format,
) -> anyhow::Result<Outcome> {
    if format == Format::Raw {
        return Err(UsageError(
            "-o raw prints bare values of key-value commands; `endpoint` prints table, json, jsonl or tsv"
                .to_string(),
        )
        .into());
    }
    match command {
        EndpointCommand::Status(args) => {
            let targets = targets(&endpoints, &args, &config).await?;
            let count_keys = !args.no_keys;
            let statuses = ask_all(&targets, &config, |endpoint, config| {
                status_of(endpoint, config, count_keys)
            })
            .await;
            output::emit(&render_status(&statuses, format))?;
            for answer in &statuses {
                if let KeyCounts::Failed(err) = &answer.keys {
                    eprintln!("{}: keys not counted: {err}", answer.endpoint);
                }
            }
            Ok(Outcome::Success)
        }
        EndpointCommand::Health(args) => {
            let targets = targets(&endpoints, &args, &config).await?;
            let pings = ask_all(&targets, &config, ping).await;
            output::emit(&render_health(&pings, format))?;
            let all_healthy = pings.iter().all(|ping| ping.health == Ok(Health::Serving));
            Ok(if all_healthy {
                Outcome::Success
            } else {
                Outcome::CheckFailed
            })
        }
    }
}

/// The endpoints to ask, each once, in the order given (ring members last).
async fn targets(
    endpoints: &[String],
    args: &EndpointArgs,
    config: &ClientConfig,
) -> anyhow::Result<Vec<String>> {
    let mut targets: Vec<String> = Vec::new();
    let mut add = |addr: &str| {
        if !targets.iter().any(|seen| seen == addr) {
            targets.push(addr.to_string());
        }
    };
    endpoints.iter().chain(&args.nodes).for_each(|addr| add(addr));
    if args.cluster {
        let client = Client::connect_with(endpoints.to_vec(), config.clone()).await?;
        let status = client
            .cluster_status()
            .await
            .context("cluster status (--cluster)")?;
        status.nodes.iter().for_each(|node| add(&node.addr));
    }
    Ok(targets)
}

/// Asks every target with `ask`, at most [`MAX_ENDPOINT_FANOUT`] at once, answers in the
/// targets' order.
async fn ask_all<'a, T, F, Fut>(targets: &'a [String], config: &'a ClientConfig, ask: F) -> Vec<T>
where
    F: Fn(&'a str, &'a ClientConfig) -> Fut,
    Fut: std::future::Future<Output = T> + 'a,
{
    stream::iter(targets.iter().map(|target| ask(target, config)))
        .buffered(MAX_ENDPOINT_FANOUT)
        .collect()
        .await
}

/// One endpoint's answers to `NodeStatus` and the health check.
struct EndpointStatus {
    endpoint: String,
    status: Result<proto::NodeStatusResponse, String>,
    health: Result<Health, String>,
    /// What became of the key counts: not asked, counted, or why not.
    keys: KeyCounts,
}

/// Whether an endpoint's status carries key counts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyCounts {
    NotAsked,
    Counted,
    /// The count failed (or was refused) with this error; the status came without it.
    Failed(String),
}

async fn status_of(endpoint: &str, config: &ClientConfig, count_keys: bool) -> EndpointStatus {
    let status = async {
        if !count_keys {
            return (admin::node_status(endpoint, config).await, KeyCounts::NotAsked);
        }
        match admin::node_status_with_key_counts(endpoint, config).await {
            Ok(status) => (Ok(status), KeyCounts::Counted),
            // Refused (no admin) or failed: the rest of the status is still worth showing.
            Err(count_error) => (
                admin::node_status(endpoint, config).await,
                KeyCounts::Failed(count_error.to_string()),
            ),
        }
    };
    let ((status, keys), health) = futures::join!(status, admin::health(endpoint, "", config));
    EndpointStatus {
        endpoint: endpoint.to_string(),
        status: status.map_err(|err| err.to_string()),
        health: health.map_err(|err| err.to_string()),
        keys,
    }
}

/// A node's keys summed over its shard replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct KeySums {
    /// Over every shard replica it holds.
    held: u64,
    /// Over the shard replicas it leads.
    led: u64,
    /// Some replica's count stopped at the node's bound: the sums are lower bounds.
    partial: bool,
}

/// The key sums of a status counted with keys; `None` for a router (no replicas) or a
/// status without counts.
fn key_sums(answer: &EndpointStatus) -> Option<KeySums> {
    let (Ok(status), KeyCounts::Counted) = (&answer.status, &answer.keys) else {
        return None;
    };
    if status.process_role == "router" {
        return None;
    }
    let mut sums = KeySums::default();
    for replica in status
        .replicas
        .iter()
        .filter(|replica| replica.shard_id.is_some())
    {
        sums.held += replica.key_count;
        if replica.role() == proto::ReplicaRole::Leader {
            sums.led += replica.key_count;
        }
        sums.partial |= replica.key_count_partial;
    }
    Some(sums)
}

/// A key sum for a table cell: `>=N` when partial.
fn key_cell(count: u64, partial: bool) -> String {
    if partial {
        format!(">={count}")
    } else {
        count.to_string()
    }
}

/// One endpoint's health check and how long it took.
struct Ping {
    endpoint: String,
    health: Result<Health, String>,
    took: Duration,
}

async fn ping(endpoint: &str, config: &ClientConfig) -> Ping {
    let started = Instant::now();
    let health = admin::health(endpoint, "", config).await;
    Ping {
        endpoint: endpoint.to_string(),
        health: health.map_err(|err| err.to_string()),
        took: started.elapsed(),
    }
}

fn health_label(health: &Result<Health, String>) -> &'static str {
    match health {
        Ok(Health::Serving) => "SERVING",
        Ok(Health::NotServing) => "NOT_SERVING",
        Ok(Health::Unknown) => "UNKNOWN",
        Err(_) => "UNREACHABLE",
    }
}

/// What a status says, summarised: (leaders, replicas, system group term, system group
/// applied index).
fn raft_summary(status: &proto::NodeStatusResponse) -> (usize, usize, Option<(u64, u64)>) {
    let leaders = status
        .replicas
        .iter()
        .filter(|replica| replica.role() == proto::ReplicaRole::Leader)
        .count();
    let system = status
        .replicas
        .iter()
        .find(|replica| replica.shard_id.is_none())
        .map(|replica| (replica.term, replica.applied_index));
    (leaders, status.replicas.len(), system)
}

/// Bytes as people read them (KiB, MiB, GiB, binary).
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// One endpoint's status as a JSON object (json's `endpoints`, jsonl's lines).
fn status_object(answer: &EndpointStatus) -> Value {
    let mut object = json!({
        "endpoint": answer.endpoint,
        "health": health_label(&answer.health),
    });
    match &answer.status {
        Err(err) => object["error"] = json!(err),
        Ok(status) => {
            let (leaders, replicas, system) = raft_summary(status);
            object["role"] = json!(status.process_role);
            object["node_id"] = json!(status.node_id);
            object["version"] = json!(status.version);
            object["cluster_id"] = json!(status.cluster_id);
            object["leaders"] = json!(leaders);
            object["replicas"] = json!(replicas);
            if let Some((term, applied)) = system {
                object["system_term"] = json!(term);
                object["system_applied_index"] = json!(applied);
            }
            if let Some(storage) = &status.storage {
                object["db_bytes"] = json!(storage.db_bytes);
                object["wal_bytes"] = json!(storage.wal_bytes);
                object["wal_segments"] = json!(storage.wal_segments);
                object["snapshot_bytes"] = json!(storage.snapshot_bytes);
            }
            object["metrics_addr"] = json!(status.metrics_addr);
            if let Some(sums) = key_sums(answer) {
                object["keys_held"] = json!(sums.held);
                object["keys_led"] = json!(sums.led);
                object["keys_partial"] = json!(sums.partial);
                object["shard_keys"] = shard_keys(status);
            }
        }
    }
    if let KeyCounts::Failed(err) = &answer.keys {
        object["keys_error"] = json!(err);
    }
    object
}

/// Each endpoint's status as a row of flat fields (tsv).
fn status_records(statuses: &[EndpointStatus]) -> Records {
    let columns = [
        "endpoint",
        "role",
        "node_id",
        "version",
        "health",
        "leaders",
        "replicas",
        "system_term",
        "system_applied_index",
        "db_bytes",
        "wal_bytes",
        "keys_held",
        "keys_led",
        "keys_partial",
        "metrics_addr",
        "error",
    ]
    .map(Column::new);
    let mut records = Records::new(&columns, "endpoint");
    for answer in statuses {
        let object = status_object(answer);
        let number = |name: &str| object[name].as_u64().map_or(Field::Absent, Field::Number);
        let text = |name: &str| {
            object[name]
                .as_str()
                .map_or(Field::Absent, |text| Field::Text(text.to_string()))
        };
        let error = match (&answer.status, &answer.keys) {
            (Err(err), _) => Field::Text(err.clone()),
            (Ok(_), KeyCounts::Failed(err)) => Field::Text(format!("keys not counted: {err}")),
            _ => Field::Absent,
        };
        records.push(vec![
            text("endpoint"),
            text("role"),
            number("node_id"),
            text("version"),
            text("health"),
            number("leaders"),
            number("replicas"),
            number("system_term"),
            number("system_applied_index"),
            number("db_bytes"),
            number("wal_bytes"),
            number("keys_held"),
            number("keys_led"),
            object["keys_partial"]
                .as_bool()
                .map_or(Field::Absent, Field::Bool),
            text("metrics_addr"),
            error,
        ]);
    }
    records
}

fn render_status(statuses: &[EndpointStatus], format: Format) -> String {
    match format {
        Format::Table => {
            let rows = statuses
                .iter()
                .map(|answer| {
                    let health = health_label(&answer.health).to_string();
                    match &answer.status {
                        Err(err) => vec![
                            answer.endpoint.clone(),
                            "-".into(),
                            "-".into(),
                            "-".into(),
                            health,
                            "-".into(),
                            "-".into(),
                            "-".into(),
                            "-".into(),
                            "-".into(),
                            "-".into(),
                            "-".into(),
                            format!("error: {err}"),
                        ],
                        Ok(status) => {
                            let (leaders, replicas, system) = raft_summary(status);
                            let storage = status.storage.as_ref();
                            let size = |bytes: Option<u64>| bytes.map_or("-".to_string(), human_bytes);
                            let sums = key_sums(answer);
                            let keys = |pick: fn(&KeySums) -> u64| {
                                sums.map_or("-".to_string(), |sums| key_cell(pick(&sums), sums.partial))
                            };
                            vec![
                                answer.endpoint.clone(),
                                status.process_role.clone(),
                                if status.node_id == 0 {
                                    "-".into()
                                } else {
                                    status.node_id.to_string()
                                },
                                status.version.clone(),
                                health,
                                format!("{leaders}/{replicas}"),
                                system.map_or("-".into(), |(term, _)| term.to_string()),
                                system.map_or("-".into(), |(_, applied)| applied.to_string()),
                                size(storage.map(|storage| storage.db_bytes)),
                                size(storage.map(|storage| storage.wal_bytes)),
                                keys(|sums| sums.held),
                                keys(|sums| sums.led),
                                status.metrics_addr.clone(),
                            ]
                        }
                    }
                })
                .collect();
            render_table(
                &[
                    "ENDPOINT",
                    "ROLE",
                    "ID",
                    "VERSION",
                    "HEALTH",
                    "LEADERS/REPLICAS",
                    "SYSTEM TERM",
                    "SYSTEM APPLIED",
                    "DB SIZE",
                    "WAL SIZE",
                    "KEYS HELD",
                    "KEYS LED",
                    "METRICS",
                ],
                rows,
                &[2, 6, 7, 8, 9, 10, 11],
            )
        }
        Format::Json => {
            to_json(&json!({ "endpoints": statuses.iter().map(status_object).collect::<Vec<_>>() }))
        }
        Format::Jsonl | Format::Raw => statuses
            .iter()
            .map(|answer| json_line(&status_object(answer)))
            .collect::<String>()
            .trim_end_matches('\n')
            .to_string(),
        Format::Tsv => tsv_text(&status_records(statuses)),
    }
}

/// Each shard replica's role and key count, for JSON.
fn shard_keys(status: &proto::NodeStatusResponse) -> Value {
    let replicas: Vec<Value> = status
        .replicas
        .iter()
        .filter_map(|replica| {
            replica.shard_id.map(|shard| {
                json!({
                    "shard": shard,
                    "role": format!("{:?}", replica.role()).to_lowercase(),
                    "keys": replica.key_count,
                    "partial": replica.key_count_partial,
                })
            })
        })
        .collect();
    Value::Array(replicas)
}

/// TSV lines of `records` with the header, without the last newline (`output::emit` adds it).
fn tsv_text(records: &Records) -> String {
    String::from_utf8_lossy(&records.lines(Format::Tsv, true))
        .trim_end_matches('\n')
        .to_string()
}

fn took_ms(ping: &Ping) -> f64 {
    ping.took.as_secs_f64() * 1000.0
}

/// One health check as a JSON object (json's `endpoints`, jsonl's lines).
fn ping_object(ping: &Ping) -> Value {
    let mut object = json!({
        "endpoint": ping.endpoint,
        "healthy": ping.health == Ok(Health::Serving),
        "status": health_label(&ping.health),
        "took_ms": took_ms(ping),
    });
    if let Err(err) = &ping.health {
        object["error"] = json!(err);
    }
    object
}

fn render_health(pings: &[Ping], format: Format) -> String {
    match format {
        Format::Table => {
            let rows = pings
                .iter()
                .map(|ping| {
                    vec![
                        ping.endpoint.clone(),
                        (ping.health == Ok(Health::Serving)).to_string(),
                        health_label(&ping.health).to_string(),
                        format!("{:.1} ms", took_ms(ping)),
                        ping.health.as_ref().err().cloned().unwrap_or_default(),
                    ]
                })
                .collect();
            render_table(&["ENDPOINT", "HEALTHY", "STATUS", "TOOK", "ERROR"], rows, &[3])
        }
        Format::Json => to_json(&json!({ "endpoints": pings.iter().map(ping_object).collect::<Vec<_>>() })),
        Format::Jsonl | Format::Raw => pings
            .iter()
            .map(|ping| json_line(&ping_object(ping)))
            .collect::<String>()
            .trim_end_matches('\n')
            .to_string(),
        Format::Tsv => {
            let columns = ["endpoint", "healthy", "status", "took_ms", "error"].map(Column::new);
            let mut records = Records::new(&columns, "endpoint");
            for ping in pings {
                records.push(vec![
                    Field::Text(ping.endpoint.clone()),
                    Field::Bool(ping.health == Ok(Health::Serving)),
                    Field::Text(health_label(&ping.health).to_string()),
                    Field::Text(format!("{:.1}", took_ms(ping))),
                    ping.health
                        .as_ref()
                        .err()
                        .map_or(Field::Absent, |err| Field::Text(err.clone())),
                ]);
            }
            tsv_text(&records)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes read as people read them.
    #[test]
    fn human_bytes_reads_as_people_read() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (5 << 20, "5.0 MiB"),
            (3 << 30, "3.0 GiB"),
        ];
        for (index, (bytes, expected)) in cases.iter().enumerate() {
            assert_eq!(human_bytes(*bytes), *expected, "case {index}");
        }
    }

    /// A health table says which endpoints are healthy; JSON carries the same.
    #[test]
    fn health_renders_each_endpoint() {
        let pings = [
            Ping {
                endpoint: "a:1".into(),
                health: Ok(Health::Serving),
                took: Duration::from_millis(2),
            },
            Ping {
                endpoint: "b:2".into(),
                health: Err("connection refused".into()),
                took: Duration::from_millis(1),
            },
        ];
        let table = render_health(&pings, Format::Table);
        assert!(table.contains("a:1") && table.contains("SERVING"), "{table}");
        assert!(
            table.contains("UNREACHABLE") && table.contains("connection refused"),
            "{table}"
        );
        let document: Value = serde_json::from_str(&render_health(&pings, Format::Json)).expect("json");
        assert_eq!(document["endpoints"][0]["healthy"], json!(true));
        assert_eq!(document["endpoints"][1]["healthy"], json!(false));
    }
}
