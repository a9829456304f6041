//! Rendering results as aligned tables or JSON; pure functions returning strings.
//!
//! Bytes are shown as UTF-8 when they are valid UTF-8 (control characters escaped),
//! else as `0x`-prefixed hex. JSON objects carry `value` as a string when it is UTF-8,
//! else `value: null` plus `value_hex` (keys likewise with `key_hex`).

use std::fmt::Write as _;
use std::io::Write as _;

use clap::ValueEnum;
use comfy_table::{presets, CellAlignment, ContentArrangement, Table};
use ringkv_client::proto;
use ringkv_client::{CasOutcome, Versioned};
use serde_json::{json, Map, Value};

/// Longest value shown in a table cell, in characters; longer values are cut.
pub const MAX_TABLE_VALUE_CHARS: usize = 200;

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document for scripts.
    Json,
}

/// Bytes for a table cell: UTF-8 text (control characters escaped) or `0x` hex, cut
/// after [`MAX_TABLE_VALUE_CHARS`] with the total size noted.
pub fn display_bytes(bytes: &[u8]) -> String {
    let full = match std::str::from_utf8(bytes) {
        Ok(text) => escape_controls(text),
        Err(_) => format!("0x{}", hex::encode(bytes)),
    };
    if full.chars().count() <= MAX_TABLE_VALUE_CHARS {
        return full;
    }
    let cut: String = full.chars().take(MAX_TABLE_VALUE_CHARS).collect();
    format!("{cut}… ({} bytes)", bytes.len())
}

/// Escapes control characters so a value cannot break the table or the terminal.
fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect::<String>()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Inserts `bytes` under `field` (UTF-8 string), or `field: null` plus `field_hex`.
pub fn insert_bytes(object: &mut Map<String, Value>, field: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            object.insert(field.to_string(), Value::String(text.to_string()));
        }
        Err(_) => {
            object.insert(field.to_string(), Value::Null);
            object.insert(format!("{field}_hex"), Value::String(hex::encode(bytes)));
        }
    }
}

/// An object with the key already inserted.
fn keyed_object(key: &[u8]) -> Map<String, Value> {
    let mut object = Map::new();
    insert_bytes(&mut object, "key", key);
    object
}

/// A borderless table with left-aligned columns and no wrapping; `numeric` columns
/// are right-aligned. Ends without trailing spaces or newline.
pub fn render_table(headers: &[&str], rows: Vec<Vec<String>>, numeric: &[usize]) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.iter().copied());
    for row in rows {
        table.add_row(row);
    }
    for index in numeric {
        if let Some(column) = table.column_mut(*index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
        .lines()
        .map(|line| line.trim_end().to_string())
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prints `text` and a newline to stdout. A closed pipe (`kvctl ... | head`) is not an
/// error.
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    ignore_broken_pipe(writeln!(stdout, "{text}").and_then(|()| stdout.flush()))
}

/// Writes `bytes` to stdout exactly as they are.
pub fn emit_raw(bytes: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    ignore_broken_pipe(stdout.write_all(bytes).and_then(|()| stdout.flush()))
}

fn ignore_broken_pipe(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Pretty JSON text of a value.
pub fn to_json(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
}

/// The result of `get` for a found key.
pub fn render_get(key: &[u8], found: &Versioned, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => render_table(
            &["KEY", "VERSION", "VALUE"],
            vec![vec![
                display_bytes(key),
                found.version.to_string(),
                display_bytes(&found.value),
            ]],
            &[],
        ),
        OutputFormat::Json => {
            let mut object = keyed_object(key);
            object.insert("found".into(), json!(true));
            object.insert("version".into(), json!(found.version));
            insert_bytes(&mut object, "value", &found.value);
            to_json(&Value::Object(object))
        }
    }
}

/// The result of `put`.
pub fn render_put(key: &[u8], version: u64, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => render_table(
            &["KEY", "VERSION"],
            vec![vec![display_bytes(key), version.to_string()]],
            &[],
        ),
        OutputFormat::Json => {
            let mut object = keyed_object(key);
            object.insert("version".into(), json!(version));
            to_json(&Value::Object(object))
        }
    }
}

/// The result of `del`.
pub fn render_delete(key: &[u8], existed: bool, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => render_table(
            &["KEY", "DELETED"],
            vec![vec![
                display_bytes(key),
                if existed { "yes" } else { "no (absent)" }.to_string(),
            ]],
            &[],
        ),
        OutputFormat::Json => {
            let mut object = keyed_object(key);
            object.insert("existed".into(), json!(existed));
            to_json(&Value::Object(object))
        }
    }
}

/// The result of `cas`, swapped or not.
pub fn render_cas(key: &[u8], outcome: &CasOutcome, format: OutputFormat) -> String {
    match (format, outcome) {
        (OutputFormat::Table, CasOutcome::Swapped { new_version }) => render_table(
            &["KEY", "RESULT", "NEW VERSION"],
            vec![vec![
                display_bytes(key),
                "swapped".into(),
                new_version.to_string(),
            ]],
            &[],
        ),
        (OutputFormat::Table, CasOutcome::Mismatch { current }) => {
            let (version, value) = match current {
                Some(current) => (current.version.to_string(), display_bytes(&current.value)),
                None => ("0".to_string(), "(absent)".to_string()),
            };
            render_table(
                &["KEY", "RESULT", "CURRENT VERSION", "CURRENT VALUE"],
                vec![vec![display_bytes(key), "mismatch".into(), version, value]],
                &[],
            )
        }
        (OutputFormat::Json, CasOutcome::Swapped { new_version }) => {
            let mut object = keyed_object(key);
            object.insert("swapped".into(), json!(true));
            object.insert("new_version".into(), json!(new_version));
            to_json(&Value::Object(object))
        }
        (OutputFormat::Json, CasOutcome::Mismatch { current }) => {
            let mut object = keyed_object(key);
            object.insert("swapped".into(), json!(false));
            let mut state = Map::new();
            match current {
                Some(current) => {
                    state.insert("found".into(), json!(true));
                    state.insert("version".into(), json!(current.version));
                    insert_bytes(&mut state, "value", &current.value);
                }
                None => {
                    state.insert("found".into(), json!(false));
                    state.insert("version".into(), json!(0));
                }
            }
            object.insert("current".into(), Value::Object(state));
            to_json(&Value::Object(object))
        }
    }
}

/// The result of `cluster init`.
pub fn render_init(response: &proto::InitClusterResponse, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => render_table(
            &["CLUSTER ID", "RESULT"],
            vec![vec![
                response.cluster_id.clone(),
                if response.already_initialized {
                    "already initialized"
                } else {
                    "initialized"
                }
                .to_string(),
            ]],
            &[],
        ),
        OutputFormat::Json => to_json(&json!({
            "cluster_id": response.cluster_id,
            "already_initialized": response.already_initialized,
        })),
    }
}

/// Roles of a replica that count toward a shard's replication.
fn is_voting_role(role: &str) -> bool {
    matches!(role, "leader" | "follower")
}

/// How healthy one shard is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardHealthSummary {
    /// Some reachable replica knows a leader.
    pub has_leader: bool,
    /// Reachable replicas that are leader or follower.
    pub healthy_replicas: usize,
    /// Replicas the shard should have.
    pub expected_replicas: usize,
}

impl ShardHealthSummary {
    /// Computes the health of `shard` given the cluster's replication factor (0 when
    /// unknown: the placement size is used instead).
    pub fn of(shard: &proto::ShardHealth, replication_factor: u32) -> Self {
        let healthy_replicas = shard
            .replicas
            .iter()
            .filter(|replica| replica.reachable && is_voting_role(&replica.role))
            .count();
        let expected_replicas = match usize::try_from(replication_factor) {
            Ok(rf) if rf > 0 => rf,
            _ => shard.placement.len(),
        };
        ShardHealthSummary {
            has_leader: shard.leader_id != 0,
            healthy_replicas,
            expected_replicas,
        }
    }

    /// Fewer healthy replicas than expected.
    pub fn is_under_replicated(&self) -> bool {
        self.healthy_replicas < self.expected_replicas
    }

    /// `ok`, or the problems joined by `, `.
    pub fn label(&self) -> String {
        let mut problems = Vec::new();
        if !self.has_leader {
            problems.push("no leader".to_string());
        }
        if self.is_under_replicated() {
            problems.push(format!(
                "under-replicated ({}/{})",
                self.healthy_replicas, self.expected_replicas
            ));
        }
        if problems.is_empty() {
            "ok".to_string()
        } else {
            problems.join(", ")
        }
    }
}

fn id_or_unknown(id: u64) -> String {
    if id == 0 {
        "-".to_string()
    } else {
        id.to_string()
    }
}

fn yes_no(flag: bool) -> String {
    if flag { "yes" } else { "no" }.to_string()
}

/// `cluster status` in the chosen format.
pub fn render_cluster_status(status: &proto::ClusterStatusResponse, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => cluster_status_table(status),
        OutputFormat::Json => to_json(&cluster_status_json(status)),
    }
}

fn cluster_status_table(status: &proto::ClusterStatusResponse) -> String {
    let replication_factor = status.ring.as_ref().map_or(0, |ring| ring.replication_factor);
    let mut out = String::new();
    match &status.ring {
        Some(ring) => {
            let _ = writeln!(
                out,
                "cluster {}  epoch {}  shards {}  replication factor {}  system leader {}",
                if ring.cluster_id.is_empty() {
                    "-"
                } else {
                    &ring.cluster_id
                },
                ring.epoch,
                ring.shards,
                ring.replication_factor,
                id_or_unknown(status.system_leader_id),
            );
        }
        None => {
            let _ = writeln!(
                out,
                "cluster: ring unknown (not initialised?)  system leader {}",
                id_or_unknown(status.system_leader_id)
            );
        }
    }

    let show_errors = status.nodes.iter().any(|node| !node.error.is_empty());
    let mut node_headers = vec!["ID", "ADDR", "STATE", "REACHABLE", "REPLICAS", "LEADERS"];
    if show_errors {
        node_headers.push("ERROR");
    }
    let node_rows = status
        .nodes
        .iter()
        .map(|node| {
            let mut row = vec![
                node.node_id.to_string(),
                node.addr.clone(),
                node.state.clone(),
                yes_no(node.reachable),
                node.replicas.to_string(),
                node.leaders.to_string(),
            ];
            if show_errors {
                row.push(node.error.clone());
            }
            row
        })
        .collect();
    let _ = writeln!(out, "\nNODES");
    let _ = writeln!(out, "{}", render_table(&node_headers, node_rows, &[0, 4, 5]));

    let mut with_leader = 0usize;
    let mut under_replicated = 0usize;
    let shard_rows = status
        .shards
        .iter()
        .map(|shard| {
            let health = ShardHealthSummary::of(shard, replication_factor);
            with_leader += usize::from(health.has_leader);
            under_replicated += usize::from(health.is_under_replicated());
            vec![
                shard.shard_id.to_string(),
                join_ids(&shard.placement),
                id_or_unknown(shard.leader_id),
                shard.term.to_string(),
                shard
                    .replicas
                    .iter()
                    .map(replica_label)
                    .collect::<Vec<_>>()
                    .join(" "),
                health.label(),
            ]
        })
        .collect();
    let _ = writeln!(out, "\nSHARDS");
    let _ = writeln!(
        out,
        "{}",
        render_table(
            &[
                "ID",
                "PLACEMENT",
                "LEADER",
                "TERM",
                "REPLICAS (node:role@applied)",
                "HEALTH"
            ],
            shard_rows,
            &[0, 3],
        )
    );
    let _ = write!(
        out,
        "\n{} shards, {} with a leader, {} under-replicated",
        status.shards.len(),
        with_leader,
        under_replicated
    );
    out
}

fn join_ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn replica_label(replica: &proto::ShardReplicaHealth) -> String {
    if replica.reachable {
        let role = if replica.role.is_empty() {
            "?"
        } else {
            &replica.role
        };
        format!("{}:{}@{}", replica.node_id, role, replica.applied_index)
    } else {
        format!("{}:unreachable", replica.node_id)
    }
}

/// The status response as JSON, field names as in the proto; each shard also carries a
/// derived `health` label.
pub fn cluster_status_json(status: &proto::ClusterStatusResponse) -> Value {
    let replication_factor = status.ring.as_ref().map_or(0, |ring| ring.replication_factor);
    let ring = status.ring.as_ref().map_or(Value::Null, |ring| {
        json!({
            "cluster_id": ring.cluster_id,
            "shards": ring.shards,
            "replication_factor": ring.replication_factor,
            "epoch": ring.epoch,
            "vnodes_per_node": ring.vnodes_per_node,
            "members": ring.members.iter().map(|member| json!({
                "node_id": member.node_id,
                "addr": member.addr,
                "state": member.state,
            })).collect::<Vec<_>>(),
        })
    });
    let nodes: Vec<Value> = status
        .nodes
        .iter()
        .map(|node| {
            json!({
                "node_id": node.node_id,
                "addr": node.addr,
                "state": node.state,
                "reachable": node.reachable,
                "error": node.error,
                "replicas": node.replicas,
                "leaders": node.leaders,
            })
        })
        .collect();
    let shards: Vec<Value> = status
        .shards
        .iter()
        .map(|shard| {
            json!({
                "shard_id": shard.shard_id,
                "placement": shard.placement,
                "leader_id": shard.leader_id,
                "term": shard.term,
                "replicas": shard.replicas.iter().map(|replica| json!({
                    "node_id": replica.node_id,
                    "reachable": replica.reachable,
                    "role": replica.role,
                    "applied_index": replica.applied_index,
                })).collect::<Vec<_>>(),
                "health": ShardHealthSummary::of(shard, replication_factor).label(),
            })
        })
        .collect();
    json!({
        "ring": ring,
        "nodes": nodes,
        "shards": shards,
        "system_leader_id": status.system_leader_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid UTF-8 is shown as text, anything else as 0x-hex.
    #[test]
    fn display_bytes_text_or_hex() {
        assert_eq!(display_bytes(b"hello"), "hello");
        assert_eq!(display_bytes("héllo".as_bytes()), "héllo");
        assert_eq!(display_bytes(&[0xff, 0x00, 0x10]), "0xff0010");
    }

    /// Control characters in text are escaped so they cannot break the table.
    #[test]
    fn display_bytes_escapes_controls() {
        assert_eq!(display_bytes(b"a\nb\x1b"), "a\\nb\\u{1b}");
    }

    /// Long values are cut and the total size is noted.
    #[test]
    fn display_bytes_truncates() {
        let long = vec![b'x'; 1000];
        let shown = display_bytes(&long);
        assert!(shown.starts_with(&"x".repeat(MAX_TABLE_VALUE_CHARS)));
        assert!(shown.ends_with("… (1000 bytes)"));
    }

    /// JSON carries UTF-8 as a string and other bytes as null plus hex.
    #[test]
    fn json_bytes_fields() {
        let mut object = Map::new();
        insert_bytes(&mut object, "value", b"text");
        assert_eq!(object["value"], json!("text"));
        assert!(!object.contains_key("value_hex"));

        let mut object = Map::new();
        insert_bytes(&mut object, "value", &[0xff, 0xfe]);
        assert_eq!(object["value"], Value::Null);
        assert_eq!(object["value_hex"], json!("fffe"));
    }

    /// `get` as JSON is an object with key, found, version and value.
    #[test]
    fn get_json_shape() {
        let found = Versioned {
            value: b"bar".to_vec(),
            version: 12,
        };
        let value: Value =
            serde_json::from_str(&render_get(b"foo", &found, OutputFormat::Json)).expect("json");
        assert_eq!(
            value,
            json!({"key": "foo", "found": true, "version": 12, "value": "bar"})
        );
    }

    /// `get` as a table has a header row and one aligned data row.
    #[test]
    fn get_table_shape() {
        let found = Versioned {
            value: b"bar".to_vec(),
            version: 12,
        };
        let table = render_get(b"foo", &found, OutputFormat::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(lines[0].starts_with("KEY"), "{table}");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["foo", "12", "bar"]
        );
        assert_eq!(
            lines[0].find("VERSION"),
            lines[1].find("12"),
            "columns are aligned:\n{table}"
        );
    }

    /// A CAS mismatch on an absent key reports found=false and version 0.
    #[test]
    fn cas_mismatch_json() {
        let outcome = CasOutcome::Mismatch { current: None };
        let value: Value =
            serde_json::from_str(&render_cas(b"k", &outcome, OutputFormat::Json)).expect("json");
        assert_eq!(
            value,
            json!({"key": "k", "swapped": false, "current": {"found": false, "version": 0}})
        );
    }

    /// A CAS mismatch table shows the current version and value.
    #[test]
    fn cas_mismatch_table() {
        let outcome = CasOutcome::Mismatch {
            current: Some(Versioned {
                value: b"now".to_vec(),
                version: 5,
            }),
        };
        let table = render_cas(b"k", &outcome, OutputFormat::Table);
        assert!(table.contains("mismatch") && table.contains('5') && table.contains("now"));
    }

    fn shard(leader_id: u64, replicas: &[(u64, bool, &str)]) -> proto::ShardHealth {
        proto::ShardHealth {
            shard_id: 0,
            placement: replicas.iter().map(|r| r.0).collect(),
            leader_id,
            term: 3,
            replicas: replicas
                .iter()
                .map(|(node_id, reachable, role)| proto::ShardReplicaHealth {
                    node_id: *node_id,
                    reachable: *reachable,
                    role: role.to_string(),
                    applied_index: 10,
                })
                .collect(),
        }
    }

    /// Shard health: ok, no leader, under-replicated, or both.
    #[test]
    fn shard_health_labels() {
        let healthy = shard(
            1,
            &[(1, true, "leader"), (2, true, "follower"), (3, true, "follower")],
        );
        assert_eq!(ShardHealthSummary::of(&healthy, 3).label(), "ok");

        let down = shard(1, &[(1, true, "leader"), (2, true, "follower"), (3, false, "")]);
        assert_eq!(ShardHealthSummary::of(&down, 3).label(), "under-replicated (2/3)");

        let leaderless = shard(
            0,
            &[(1, true, "candidate"), (2, true, "follower"), (3, false, "")],
        );
        assert_eq!(
            ShardHealthSummary::of(&leaderless, 3).label(),
            "no leader, under-replicated (1/3)"
        );

        let learner = shard(
            1,
            &[(1, true, "leader"), (2, true, "follower"), (3, true, "learner")],
        );
        assert!(ShardHealthSummary::of(&learner, 3).is_under_replicated());

        // Without a known replication factor the placement size is expected.
        assert_eq!(ShardHealthSummary::of(&healthy, 0).expected_replicas, 3);
    }

    /// The status table lists nodes, shards with health, and a summary line.
    #[test]
    fn cluster_status_table_contents() {
        let status = proto::ClusterStatusResponse {
            ring: Some(proto::RingInfo {
                cluster_id: "c1".into(),
                shards: 1,
                replication_factor: 3,
                epoch: 2,
                members: vec![],
                vnodes_per_node: 64,
            }),
            nodes: vec![proto::NodeHealth {
                node_id: 3,
                addr: "127.0.0.1:7003".into(),
                state: "active".into(),
                reachable: false,
                error: "connection refused".into(),
                replicas: 0,
                leaders: 0,
            }],
            shards: vec![shard(
                0,
                &[(1, true, "candidate"), (2, true, "follower"), (3, false, "")],
            )],
            system_leader_id: 1,
        };
        let table = render_cluster_status(&status, OutputFormat::Table);
        for needle in [
            "cluster c1",
            "NODES",
            "127.0.0.1:7003",
            "connection refused",
            "SHARDS",
            "1:candidate@10",
            "3:unreachable",
            "no leader, under-replicated (1/3)",
            "1 shards, 0 with a leader, 1 under-replicated",
        ] {
            assert!(table.contains(needle), "missing {needle:?} in:\n{table}");
        }
        let value = cluster_status_json(&status);
        assert_eq!(value["ring"]["cluster_id"], json!("c1"));
        assert_eq!(value["nodes"][0]["reachable"], json!(false));
        assert_eq!(
            value["shards"][0]["health"],
            json!("no leader, under-replicated (1/3)")
        );
    }
}
