//! Rendering results as aligned tables or JSON; pure functions returning strings.
//!
//! Bytes are shown as UTF-8 when they are valid UTF-8 (control characters escaped),
//! else as `0x`-prefixed hex. JSON objects carry `value` as a string when it is UTF-8,
//! else `value: null` plus `value_hex` (keys likewise with `key_hex`).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

use clap::ValueEnum;
use comfy_table::{presets, CellAlignment, ContentArrangement, Table};
use ringkv_client::proto;
use ringkv_client::{CasOutcome, CountResult, ScanEntry, ScanPage, Versioned};
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

/// `1 entry`, `2 entries`.
fn plural(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// Shard ids joined by `, `.
fn join_shards(shards: impl IntoIterator<Item = u32>) -> String {
    shards
        .into_iter()
        .map(|shard| shard.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The warning printed on stderr when shards are missing from a result.
pub fn partial_warning(missing_shards: &[u32]) -> String {
    format!(
        "warning: partial result: shard{} {} did not answer",
        if missing_shards.len() == 1 { "" } else { "s" },
        join_shards(missing_shards.iter().copied())
    )
}

/// Column headers of scan results.
fn scan_headers(keys_only: bool) -> &'static [&'static str] {
    if keys_only {
        &["KEY", "VERSION"]
    } else {
        &["KEY", "VERSION", "VALUE"]
    }
}

/// One table row of a scan result.
fn scan_row(entry: &ScanEntry, keys_only: bool) -> Vec<String> {
    let mut row = vec![display_bytes(&entry.key), entry.version.to_string()];
    if !keys_only {
        row.push(display_bytes(&entry.value));
    }
    row
}

/// One scan entry as JSON: key, version and, unless keys-only, value.
pub fn scan_entry_json(entry: &ScanEntry, keys_only: bool) -> Value {
    let mut object = keyed_object(&entry.key);
    object.insert("version".into(), json!(entry.version));
    if !keys_only {
        insert_bytes(&mut object, "value", &entry.value);
    }
    Value::Object(object)
}

/// One page of `scan`: the entries, then a line with their number and the token of the
/// next page. JSON: `{"entries": [...], "next_page_token": "<hex>" | null,
/// "missing_shards": [...]}`.
pub fn render_scan_page(page: &ScanPage, keys_only: bool, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => {
            let mut out = String::new();
            if !page.entries.is_empty() {
                let rows = page
                    .entries
                    .iter()
                    .map(|entry| scan_row(entry, keys_only))
                    .collect();
                let _ = writeln!(out, "{}\n", render_table(scan_headers(keys_only), rows, &[1]));
            }
            let count = u64::try_from(page.entries.len()).unwrap_or(u64::MAX);
            let _ = write!(out, "{}", plural(count, "entry", "entries"));
            match &page.next {
                Some(token) => {
                    let _ = write!(out, "; next page: --page-token {token}");
                }
                None => out.push_str("; end of range"),
            }
            if page.is_partial() {
                let _ = write!(
                    out,
                    "; PARTIAL: missing shards {}",
                    join_shards(page.missing_shards.iter().copied())
                );
            }
            out
        }
        OutputFormat::Json => to_json(&json!({
            "entries": page
                .entries
                .iter()
                .map(|entry| scan_entry_json(entry, keys_only))
                .collect::<Vec<_>>(),
            "next_page_token": page.next.as_ref().map(|token| token.to_string()),
            "missing_shards": page.missing_shards,
        })),
    }
}

/// A table printed as its rows arrive: the first rows fix the column widths (later,
/// longer cells push their row's next columns right rather than being cut).
#[derive(Debug)]
pub struct StreamingTable {
    headers: Vec<String>,
    numeric: Vec<usize>,
    widths: Option<Vec<usize>>,
}

impl StreamingTable {
    /// A table with `headers`; `numeric` columns are right-aligned.
    pub fn new(headers: &[&str], numeric: &[usize]) -> Self {
        StreamingTable {
            headers: headers.iter().map(|header| header.to_string()).collect(),
            numeric: numeric.to_vec(),
            widths: None,
        }
    }

    /// The lines of `rows`, each ending with a newline; the first call also returns the
    /// header line.
    pub fn lines(&mut self, rows: &[Vec<String>]) -> String {
        let mut out = String::new();
        let widths = match &self.widths {
            Some(widths) => widths.clone(),
            None => {
                let mut widths: Vec<usize> =
                    self.headers.iter().map(|header| header.chars().count()).collect();
                for row in rows {
                    for (width, cell) in widths.iter_mut().zip(row) {
                        *width = (*width).max(cell.chars().count());
                    }
                }
                self.widths = Some(widths.clone());
                out.push_str(&self.line(&self.headers, &widths));
                widths
            }
        };
        for row in rows {
            out.push_str(&self.line(row, &widths));
        }
        out
    }

    fn line(&self, cells: &[String], widths: &[usize]) -> String {
        let mut line = String::new();
        for (index, cell) in cells.iter().enumerate() {
            if index > 0 {
                line.push_str("  ");
            }
            let width = widths.get(index).copied().unwrap_or(0);
            let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
            if self.numeric.contains(&index) {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        let mut line = line.trim_end().to_string();
        line.push('\n');
        line
    }
}

/// Writes a streamed scan (`scan --all`) as its chunks arrive, in constant memory: a
/// table, or one JSON document `{"entries": [...], "count": N, "missing_shards": [...]}`
/// (plus `"error"` when the scan failed part way) with one entry per line.
pub struct ScanPrinter<W: Write> {
    out: W,
    format: OutputFormat,
    keys_only: bool,
    table: StreamingTable,
    count: u64,
    missing_shards: BTreeSet<u32>,
}

impl<W: Write> ScanPrinter<W> {
    /// A printer writing to `out`.
    pub fn new(out: W, format: OutputFormat, keys_only: bool) -> Self {
        ScanPrinter {
            out,
            format,
            keys_only,
            table: StreamingTable::new(scan_headers(keys_only), &[1]),
            count: 0,
            missing_shards: BTreeSet::new(),
        }
    }

    /// Writes what comes before the first entry.
    pub fn begin(&mut self) -> std::io::Result<()> {
        if self.format == OutputFormat::Json {
            self.out.write_all(b"{\n  \"entries\": [")?;
        }
        Ok(())
    }

    /// Writes the entries of one chunk and flushes them.
    pub fn chunk(&mut self, page: &ScanPage) -> std::io::Result<()> {
        self.missing_shards.extend(page.missing_shards.iter().copied());
        match self.format {
            OutputFormat::Table => {
                if !page.entries.is_empty() {
                    let rows: Vec<Vec<String>> = page
                        .entries
                        .iter()
                        .map(|entry| scan_row(entry, self.keys_only))
                        .collect();
                    self.out.write_all(self.table.lines(&rows).as_bytes())?;
                }
            }
            OutputFormat::Json => {
                for (index, entry) in page.entries.iter().enumerate() {
                    let separator = if self.count == 0 && index == 0 {
                        "\n"
                    } else {
                        ",\n"
                    };
                    let line = scan_entry_json(entry, self.keys_only).to_string();
                    write!(self.out, "{separator}    {line}")?;
                }
            }
        }
        self.count += u64::try_from(page.entries.len()).unwrap_or(u64::MAX);
        self.out.flush()
    }

    /// Shards missing from the chunks so far.
    pub fn missing_shards(&self) -> Vec<u32> {
        self.missing_shards.iter().copied().collect()
    }

    /// Writes what comes after the last entry: the count (and `error`, when the scan
    /// failed part way).
    pub fn finish(mut self, error: Option<&str>) -> std::io::Result<()> {
        match self.format {
            OutputFormat::Table => {
                let mut footer = String::new();
                if self.count > 0 {
                    footer.push('\n');
                }
                footer.push_str(&plural(self.count, "entry", "entries"));
                if !self.missing_shards.is_empty() {
                    let _ = write!(
                        footer,
                        "; PARTIAL: missing shards {}",
                        join_shards(self.missing_shards.iter().copied())
                    );
                }
                if error.is_some() {
                    footer.push_str("; the scan FAILED before the end of the range");
                }
                writeln!(self.out, "{footer}")?;
            }
            OutputFormat::Json => {
                let close = if self.count == 0 { "]" } else { "\n  ]" };
                let missing = Value::from(self.missing_shards());
                write!(
                    self.out,
                    "{close},\n  \"count\": {},\n  \"missing_shards\": {missing}",
                    self.count
                )?;
                if let Some(error) = error {
                    write!(self.out, ",\n  \"error\": {}", Value::from(error))?;
                }
                self.out.write_all(b"\n}\n")?;
            }
        }
        self.out.flush()
    }
}

/// The result of `count`.
pub fn render_count(result: &CountResult, format: OutputFormat) -> String {
    let counted = u32::try_from(result.missing_shards.len())
        .map_or(0, |missing| result.shards_total.saturating_sub(missing));
    match format {
        OutputFormat::Table => {
            let mut headers = vec!["COUNT", "SHARDS"];
            let mut row = vec![
                result.count.to_string(),
                format!("{counted}/{}", result.shards_total),
            ];
            if result.is_partial() {
                headers.push("MISSING SHARDS");
                row.push(join_shards(result.missing_shards.iter().copied()));
            }
            render_table(&headers, vec![row], &[0])
        }
        OutputFormat::Json => to_json(&json!({
            "count": result.count,
            "shards_total": result.shards_total,
            "shards_counted": counted,
            "missing_shards": result.missing_shards,
        })),
    }
}

/// The result of `delrange`.
pub fn render_delete_range(deleted: u64, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => render_table(&["DELETED"], vec![vec![deleted.to_string()]], &[0]),
        OutputFormat::Json => to_json(&json!({ "deleted": deleted })),
    }
}

/// The results of `mget`, one per key in order. JSON: an array of `get` objects, with
/// `found: false` for absent keys.
pub fn render_mget(keys: &[Vec<u8>], results: &[Option<Versioned>], format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => {
            let rows = keys
                .iter()
                .zip(results)
                .map(|(key, result)| match result {
                    Some(found) => vec![
                        display_bytes(key),
                        found.version.to_string(),
                        display_bytes(&found.value),
                    ],
                    None => vec![display_bytes(key), "-".into(), "(not found)".into()],
                })
                .collect();
            render_table(&["KEY", "VERSION", "VALUE"], rows, &[1])
        }
        OutputFormat::Json => {
            let items = keys
                .iter()
                .zip(results)
                .map(|(key, result)| {
                    let mut object = keyed_object(key);
                    object.insert("found".into(), json!(result.is_some()));
                    object.insert(
                        "version".into(),
                        json!(result.as_ref().map_or(0, |found| found.version)),
                    );
                    if let Some(found) = result {
                        insert_bytes(&mut object, "value", &found.value);
                    }
                    Value::Object(object)
                })
                .collect();
            to_json(&Value::Array(items))
        }
    }
}

/// The result of `mput`: keys loaded, batches written, time taken and rate.
pub fn render_mput(loaded: u64, batches: u64, elapsed: Duration, format: OutputFormat) -> String {
    let seconds = elapsed.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = if seconds > 0.0 {
        loaded as f64 / seconds
    } else {
        0.0
    };
    match format {
        OutputFormat::Table => render_table(
            &["LOADED", "BATCHES", "SECONDS", "KEYS/S"],
            vec![vec![
                loaded.to_string(),
                batches.to_string(),
                format!("{seconds:.2}"),
                format!("{rate:.0}"),
            ]],
            &[0, 1, 2, 3],
        ),
        OutputFormat::Json => to_json(&json!({
            "loaded": loaded,
            "batches": batches,
            "elapsed_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            "keys_per_second": (rate * 10.0).round() / 10.0,
        })),
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

/// Whether a replica counts toward a shard's replication: reachable, hosted, and a leader
/// or follower.
fn is_voting_replica(replica: &proto::ShardReplicaHealth) -> bool {
    replica.reachable
        && replica.hosted
        && matches!(
            replica.role(),
            proto::ReplicaRole::Leader | proto::ReplicaRole::Follower
        )
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
            .filter(|replica| is_voting_replica(replica))
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
    let mut node_headers = vec![
        "ID",
        "ADDR",
        "STATE",
        "GOSSIP",
        "LAST HEARD",
        "REACHABLE",
        "REPLICAS",
        "LEADERS",
    ];
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
                node.state().label().to_string(),
                if node.liveness.is_empty() {
                    "-".to_string()
                } else {
                    node.liveness.clone()
                },
                node.last_heard_ms
                    .map_or_else(|| "-".to_string(), |ms| format!("{:.1}s ago", ms as f64 / 1000.0)),
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
        format!(
            "{}:{}@{}",
            replica.node_id,
            replica.role_label(),
            replica.applied_index
        )
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
                "state": member.state().label(),
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
                "state": node.state().label(),
                "reachable": node.reachable,
                "liveness": node.liveness,
                "last_heard_ms": node.last_heard_ms,
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
                    "role": replica.role_label(),
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

    fn entry(key: &[u8], value: &[u8], version: u64) -> ScanEntry {
        ScanEntry {
            key: key.to_vec(),
            value: value.to_vec(),
            version,
        }
    }

    /// A scan page as JSON: entries (binary-safe), the next token as hex, missing shards.
    #[test]
    fn scan_page_json_shape() {
        let page = ScanPage {
            entries: vec![entry(b"a", b"x", 3), entry(&[0xff], &[0xfe, 0x01], 4)],
            next: Some("0a0b".parse().expect("token")),
            missing_shards: vec![],
        };
        let value: Value =
            serde_json::from_str(&render_scan_page(&page, false, OutputFormat::Json)).expect("json");
        assert_eq!(
            value,
            json!({
                "entries": [
                    {"key": "a", "version": 3, "value": "x"},
                    {"key": null, "key_hex": "ff", "version": 4, "value": null, "value_hex": "fe01"},
                ],
                "next_page_token": "0a0b",
                "missing_shards": [],
            })
        );
        let last = ScanPage {
            entries: vec![entry(b"k", b"", 1)],
            next: None,
            missing_shards: vec![2, 5],
        };
        let value: Value =
            serde_json::from_str(&render_scan_page(&last, true, OutputFormat::Json)).expect("json");
        assert_eq!(
            value,
            json!({"entries": [{"key": "k", "version": 1}], "next_page_token": null, "missing_shards": [2, 5]})
        );
    }

    /// A scan page table lists the entries, then the count and the next-page token.
    #[test]
    fn scan_page_table() {
        let page = ScanPage {
            entries: vec![entry(b"a", b"x", 3), entry(b"bb", b"yy", 10)],
            next: Some("ff".parse().expect("token")),
            missing_shards: vec![7],
        };
        let table = render_scan_page(&page, false, OutputFormat::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["KEY", "VERSION", "VALUE"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["bb", "10", "yy"]
        );
        assert_eq!(
            lines.last().copied(),
            Some("2 entries; next page: --page-token ff; PARTIAL: missing shards 7")
        );
        let empty = ScanPage::default();
        assert_eq!(
            render_scan_page(&empty, true, OutputFormat::Table),
            "0 entries; end of range"
        );
    }

    /// The streaming table fixes its widths on the first rows and aligns later ones.
    #[test]
    fn streaming_table_alignment() {
        let mut table = StreamingTable::new(&["KEY", "VERSION", "VALUE"], &[1]);
        let first = table.lines(&[vec!["alpha".into(), "7".into(), "x".into()]]);
        assert_eq!(first, "KEY    VERSION  VALUE\nalpha        7  x\n");
        let next = table.lines(&[
            vec!["b".into(), "12".into(), "y".into()],
            vec!["a-much-longer-key".into(), "3".into(), "z".into()],
        ]);
        assert_eq!(next, "b           12  y\na-much-longer-key        3  z\n");
    }

    /// A streamed scan as JSON is one valid document, whatever the chunking.
    #[test]
    fn scan_printer_json_document() {
        let mut out = Vec::new();
        let mut printer = ScanPrinter::new(&mut out, OutputFormat::Json, false);
        printer.begin().expect("write");
        printer
            .chunk(&ScanPage {
                entries: vec![entry(b"a", b"1", 1), entry(b"b", b"2", 2)],
                ..ScanPage::default()
            })
            .expect("write");
        printer.chunk(&ScanPage::default()).expect("write");
        printer
            .chunk(&ScanPage {
                entries: vec![entry(b"c", b"3", 3)],
                missing_shards: vec![4],
                ..ScanPage::default()
            })
            .expect("write");
        printer.finish(None).expect("write");
        let value: Value = serde_json::from_slice(&out).expect("one JSON document");
        assert_eq!(value["count"], json!(3));
        assert_eq!(value["missing_shards"], json!([4]));
        assert_eq!(
            value["entries"][2],
            json!({"key": "c", "version": 3, "value": "3"})
        );
        assert!(value.get("error").is_none());

        let mut out = Vec::new();
        let mut printer = ScanPrinter::new(&mut out, OutputFormat::Json, true);
        printer.begin().expect("write");
        printer.finish(Some("unavailable: \"no leader\"")).expect("write");
        let value: Value = serde_json::from_slice(&out).expect("one JSON document");
        assert_eq!(
            value,
            json!({"entries": [], "count": 0, "missing_shards": [], "error": "unavailable: \"no leader\""})
        );
    }

    /// A streamed scan table ends with the count, and says when it failed.
    #[test]
    fn scan_printer_table() {
        let mut out = Vec::new();
        let mut printer = ScanPrinter::new(&mut out, OutputFormat::Table, true);
        printer.begin().expect("write");
        printer
            .chunk(&ScanPage {
                entries: vec![entry(b"a", b"", 1)],
                ..ScanPage::default()
            })
            .expect("write");
        printer.finish(Some("boom")).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "KEY  VERSION\na          1\n\n1 entry; the scan FAILED before the end of the range\n"
        );
    }

    /// Counts show the shards counted, and name the missing ones.
    #[test]
    fn count_output() {
        let full = CountResult {
            count: 1234,
            shards_total: 16,
            missing_shards: vec![],
        };
        let table = render_count(&full, OutputFormat::Table);
        assert_eq!(
            table
                .lines()
                .nth(1)
                .map(|line| line.split_whitespace().collect::<Vec<_>>()),
            Some(vec!["1234", "16/16"])
        );
        let partial = CountResult {
            count: 10,
            shards_total: 4,
            missing_shards: vec![1, 3],
        };
        assert!(render_count(&partial, OutputFormat::Table).contains("1, 3"));
        let value: Value = serde_json::from_str(&render_count(&partial, OutputFormat::Json)).expect("json");
        assert_eq!(
            value,
            json!({"count": 10, "shards_total": 4, "shards_counted": 2, "missing_shards": [1, 3]})
        );
        assert_eq!(
            partial_warning(&[1, 3]),
            "warning: partial result: shards 1, 3 did not answer"
        );
    }

    /// `mget` JSON is an array of `get` objects; absent keys say found=false.
    #[test]
    fn mget_output() {
        let keys = vec![b"a".to_vec(), b"b".to_vec()];
        let results = vec![
            Some(Versioned {
                value: b"1".to_vec(),
                version: 5,
            }),
            None,
        ];
        let value: Value =
            serde_json::from_str(&render_mget(&keys, &results, OutputFormat::Json)).expect("json");
        assert_eq!(
            value,
            json!([
                {"key": "a", "found": true, "version": 5, "value": "1"},
                {"key": "b", "found": false, "version": 0},
            ])
        );
        let table = render_mget(&keys, &results, OutputFormat::Table);
        assert!(table.contains("(not found)"), "{table}");
    }

    /// `mput` and `delrange` summaries.
    #[test]
    fn mput_and_delrange_output() {
        let value: Value = serde_json::from_str(&render_mput(
            1000,
            4,
            Duration::from_millis(500),
            OutputFormat::Json,
        ))
        .expect("json");
        assert_eq!(
            value,
            json!({"loaded": 1000, "batches": 4, "elapsed_ms": 500, "keys_per_second": 2000.0})
        );
        let table = render_mput(1000, 4, Duration::from_millis(500), OutputFormat::Table);
        assert_eq!(
            table
                .lines()
                .nth(1)
                .map(|line| line.split_whitespace().collect::<Vec<_>>()),
            Some(vec!["1000", "4", "0.50", "2000"])
        );
        let value: Value = serde_json::from_str(&render_delete_range(42, OutputFormat::Json)).expect("json");
        assert_eq!(value, json!({"deleted": 42}));
        assert!(render_delete_range(42, OutputFormat::Table).ends_with("42"));
    }

    /// A shard whose replicas are `(node id, reachable, role)`; a replica with a role is
    /// hosted.
    fn shard(leader_id: u64, replicas: &[(u64, bool, Option<proto::ReplicaRole>)]) -> proto::ShardHealth {
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
                    hosted: role.is_some(),
                    role: role.unwrap_or_default() as i32,
                    applied_index: 10,
                })
                .collect(),
        }
    }

    /// Shard health: ok, no leader, under-replicated, or both.
    #[test]
    fn shard_health_labels() {
        use proto::ReplicaRole::{Candidate, Follower, Leader, Learner};
        let healthy = shard(
            1,
            &[
                (1, true, Some(Leader)),
                (2, true, Some(Follower)),
                (3, true, Some(Follower)),
            ],
        );
        assert_eq!(ShardHealthSummary::of(&healthy, 3).label(), "ok");

        let down = shard(
            1,
            &[
                (1, true, Some(Leader)),
                (2, true, Some(Follower)),
                (3, false, None),
            ],
        );
        assert_eq!(ShardHealthSummary::of(&down, 3).label(), "under-replicated (2/3)");

        let leaderless = shard(
            0,
            &[
                (1, true, Some(Candidate)),
                (2, true, Some(Follower)),
                (3, false, None),
            ],
        );
        assert_eq!(
            ShardHealthSummary::of(&leaderless, 3).label(),
            "no leader, under-replicated (1/3)"
        );

        let learner = shard(
            1,
            &[
                (1, true, Some(Leader)),
                (2, true, Some(Follower)),
                (3, true, Some(Learner)),
            ],
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
                state: proto::MemberState::Active as i32,
                reachable: false,
                error: "connection refused".into(),
                replicas: 0,
                leaders: 0,
                liveness: "dead".into(),
                last_heard_ms: Some(12_300),
            }],
            shards: vec![shard(
                0,
                &[
                    (1, true, Some(proto::ReplicaRole::Candidate)),
                    (2, true, Some(proto::ReplicaRole::Follower)),
                    (3, false, None),
                ],
            )],
            system_leader_id: 1,
        };
        let table = render_cluster_status(&status, OutputFormat::Table);
        for needle in [
            "cluster c1",
            "NODES",
            "127.0.0.1:7003",
            "connection refused",
            "dead",
            "12.3s ago",
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
        assert_eq!(value["nodes"][0]["liveness"], json!("dead"));
        assert_eq!(value["nodes"][0]["state"], json!("active"));
        assert_eq!(value["shards"][0]["replicas"][0]["role"], json!("candidate"));
        assert_eq!(value["shards"][0]["replicas"][2]["role"], json!("unknown"));
        assert_eq!(
            value["shards"][0]["health"],
            json!("no leader, under-replicated (1/3)")
        );
    }
}
