//! `get`, `put`, `del`, `cas`: single-key commands against the routers (`del` takes many
//! keys).
//!
//! A missing key is an object with `"found": false` and `"version": 0` (no `value`) in JSON,
//! as in `mget`; in a table it is a message on stderr, and `get` exits 1 in every format.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{ArgGroup, Args};
use ringkv_client::{CasOutcome, Client, Mutation, Versioned};
use serde_json::{json, Map, Value};

use crate::exit::{Outcome, UsageError};
use crate::output::{
    self, display_bytes, insert_bytes, json_line, keyed_object, render_table, to_json, Column, Field, Format,
    Records, Shape,
};
use crate::value::{decode_key, read_value, value_source, ValueSource};

/// Arguments of `kvctl get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The key (bytes as given; hex with --hex).
    pub key: OsString,
    /// Serve the read from any replica (fast, possibly stale).
    #[arg(long, conflicts_with = "at")]
    pub stale: bool,
    /// Read the value as of this timestamp (from `kvctl timestamp`): the version committed at
    /// or before it. Timestamps older than the nodes' --mvcc-window-ms are refused.
    #[arg(long, value_name = "TIMESTAMP")]
    pub at: Option<u64>,
    /// Write exactly the value bytes to stdout: no formatting, no newline (as `-o raw`).
    #[arg(long)]
    pub raw: bool,
    /// The key is hex-encoded.
    #[arg(long)]
    pub hex: bool,
}

/// Arguments of `kvctl put`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("source").args(["value", "file", "stdin"])))]
pub struct PutArgs {
    /// The key (bytes as given; hex with --hex).
    pub key: OsString,
    /// The value (bytes as given; hex with --hex).
    pub value: Option<OsString>,
    /// Read the value from this file (binary-safe).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Read the value from standard input (binary-safe).
    #[arg(long)]
    pub stdin: bool,
    /// The key and an argument value are hex-encoded.
    #[arg(long)]
    pub hex: bool,
    /// The value expires this long after the write (`500ms`, `30s`, `10m`; see `expire`).
    #[arg(long, value_parser = crate::ttl::parse_ttl, conflicts_with = "lease")]
    pub ttl: Option<std::time::Duration>,
    /// Attach the key to this lease (`lease grant`): it vanishes when the lease expires or
    /// is revoked.
    #[arg(long, value_name = "ID", value_parser = crate::lease::parse_lease_id)]
    pub lease: Option<ringkv_client::LeaseId>,
}

/// Keys deleted by one request of `del` (the routers' default `max_batch_keys` is 1000).
pub const DEL_BATCH_KEYS: usize = 256;

/// Arguments of `kvctl del`.
#[derive(Args, Debug)]
pub struct DelArgs {
    /// The keys (bytes as given; hex with --hex). Many keys are deleted in batches of 256,
    /// one request per batch (which the router splits by shard), batches one after the
    /// other; a key given twice is deleted once.
    #[arg(required = true, num_args = 1..)]
    pub keys: Vec<OsString>,
    /// The keys are hex-encoded.
    #[arg(long)]
    pub hex: bool,
}

/// Arguments of `kvctl cas`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("source").args(["value", "file", "stdin", "delete"])))]
pub struct CasArgs {
    /// The key (bytes as given; hex with --hex).
    pub key: OsString,
    /// The version the key must have now; 0 means "the key must be absent".
    #[arg(long, value_name = "VERSION")]
    pub expect_version: u64,
    /// The new value (bytes as given; hex with --hex).
    pub value: Option<OsString>,
    /// Read the new value from this file (binary-safe).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Read the new value from standard input (binary-safe).
    #[arg(long)]
    pub stdin: bool,
    /// Delete the key instead of storing a value.
    #[arg(long)]
    pub delete: bool,
    /// The key and an argument value are hex-encoded.
    #[arg(long)]
    pub hex: bool,
    /// The new value expires this long after the write (an expired key counts as absent,
    /// version 0).
    #[arg(long, value_parser = crate::ttl::parse_ttl)]
    pub ttl: Option<std::time::Duration>,
}

/// `kvctl get`: prints the value; a missing key exits 1, printed as `found: false` in
/// JSON, JSON lines and TSV, and said on stderr.
pub async fn get(client: &Client, args: GetArgs, format: Format) -> anyhow::Result<Outcome> {
    let format = if args.raw { Format::Raw } else { format };
    let key = decode_key(args.key, args.hex)?;
    let consistency = crate::range::consistency(args.stale, args.at);
    let found = client
        .get_with(&key, consistency)
        .await
        .with_context(|| format!("get {}", display_bytes(&key)))?;
    match (&found, format) {
        (Some(found), Format::Raw) => output::emit_raw(&found.value)?,
        (None, Format::Table | Format::Raw) => {}
        _ => output::emit_raw(&render_get(&key, found.as_ref(), format))?,
    }
    if found.is_none() {
        eprintln!("key not found: {}", display_bytes(&key));
        return Ok(Outcome::NotFound);
    }
    Ok(Outcome::Success)
}

/// `kvctl put`: stores the value and prints its version.
pub async fn put(client: &Client, args: PutArgs, format: Format) -> anyhow::Result<Outcome> {
    let key = decode_key(args.key, args.hex)?;
    let source = value_source(args.value, args.file, args.stdin, args.hex)?
        .ok_or_else(|| UsageError("give a value, --file or --stdin".into()))?;
    let value = read_source(source)?;
    let version = match (args.ttl, args.lease) {
        (_, Some(lease)) => client.put_with_lease(&key, value, lease).await,
        (Some(ttl), None) => client.put_with_ttl(&key, value, ttl).await,
        (None, None) => client.put(&key, value).await,
    }
    .with_context(|| format!("put {}", display_bytes(&key)))?;
    output::emit_raw(&render_put(&key, version, format))?;
    Ok(Outcome::Success)
}

/// `kvctl del`: deletes the keys and says whether each existed (absent is not an error).
/// One key is one `Delete`; more go in batches of [`DEL_BATCH_KEYS`] (`BatchWrite`).
pub async fn del(client: &Client, args: DelArgs, format: Format) -> anyhow::Result<Outcome> {
    let mut keys = Vec::with_capacity(args.keys.len());
    for key in args.keys {
        let key = decode_key(key, args.hex)?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let mut results = Vec::with_capacity(keys.len());
    if let [key] = keys.as_slice() {
        let existed = client
            .delete(key)
            .await
            .with_context(|| format!("del {}", display_bytes(key)))?;
        results.push((key.clone(), existed));
    } else {
        for batch in keys.chunks(DEL_BATCH_KEYS) {
            let outcomes = client
                .batch_write(batch.iter().map(Mutation::delete))
                .await
                .with_context(|| {
                    format!(
                        "del of {} keys ({} deleted before this batch of {})",
                        keys.len(),
                        results.len(),
                        batch.len()
                    )
                })?;
            for (key, outcome) in batch.iter().zip(outcomes) {
                results.push((key.clone(), outcome.existed));
            }
        }
    }
    output::emit_raw(&render_delete(&results, format))?;
    Ok(Outcome::Success)
}

/// `kvctl cas`: swaps when the version matches; on a mismatch prints the current state
/// and exits 2.
pub async fn cas(client: &Client, args: CasArgs, format: Format) -> anyhow::Result<Outcome> {
    let key = decode_key(args.key, args.hex)?;
    let new_value = if args.delete {
        if args.value.is_some() || args.file.is_some() || args.stdin {
            return Err(UsageError("--delete takes no value".into()).into());
        }
        None
    } else {
        let source = value_source(args.value, args.file, args.stdin, args.hex)?
            .ok_or_else(|| UsageError("give a value, --file, --stdin or --delete".into()))?;
        Some(read_source(source)?)
    };
    crate::ttl::check_ttl_with_delete(args.ttl, args.delete)?;
    let outcome = match (args.ttl, new_value) {
        (Some(ttl), Some(value)) => {
            client
                .compare_and_swap_with_ttl(&key, args.expect_version, value, ttl)
                .await
        }
        (_, new_value) => {
            client
                .compare_and_swap(&key, args.expect_version, new_value)
                .await
        }
    }
    .with_context(|| format!("cas {}", display_bytes(&key)))?;
    output::emit_raw(&render_cas(&key, &outcome, format))?;
    match outcome {
        CasOutcome::Swapped { .. } => Ok(Outcome::Success),
        CasOutcome::Mismatch { current } => {
            let actual = current.map_or(0, |current| current.version);
            eprintln!(
                "cas not applied: expected version {}, key is at version {actual}{}",
                args.expect_version,
                if actual == 0 { " (absent)" } else { "" }
            );
            Ok(Outcome::CasMismatch)
        }
    }
}

/// Reads a value, hinting on a terminal that stdin is being read.
fn read_source(source: ValueSource) -> anyhow::Result<Vec<u8>> {
    let stdin = std::io::stdin();
    if source == ValueSource::Stdin && stdin.is_terminal() {
        eprintln!("reading the value from stdin (end with Ctrl-D)");
        let _ = std::io::stderr().flush();
    }
    read_value(source, stdin.lock())
}

/// The columns of `get` and `mget` results: `found` is said by a `-` in tables.
pub const GET_COLUMNS: [Column; 4] = [
    Column::new("key"),
    Column::hidden_in_table("found"),
    Column::new("version"),
    Column::new("value"),
];

/// `get` and `mget` results as records: a missing key has `found` false, version 0 and no
/// value. Raw output is the values.
pub fn get_records<'a>(results: impl IntoIterator<Item = (&'a [u8], Option<&'a Versioned>)>) -> Records {
    let mut records = Records::new(&GET_COLUMNS, "value");
    for (key, found) in results {
        records.push(vec![
            Field::Bytes(key.to_vec()),
            Field::Bool(found.is_some()),
            Field::Number(found.map_or(0, |found| found.version)),
            found.map_or(Field::Absent, |found| Field::Bytes(found.value.clone())),
        ]);
    }
    records
}

/// The result of `get` (`found` None: the key does not exist).
pub fn render_get(key: &[u8], found: Option<&Versioned>, format: Format) -> Vec<u8> {
    get_records([(key, found)]).render(format, Shape::One)
}

/// The result of `put`; raw output is the version.
pub fn render_put(key: &[u8], version: u64, format: Format) -> Vec<u8> {
    let mut records = Records::new(&[Column::new("key"), Column::new("version")], "version");
    records.push(vec![Field::Bytes(key.to_vec()), Field::Number(version)]);
    records.render(format, Shape::One)
}

/// The result of `del`: whether each key existed. JSON: one object for one key, an array
/// for more. Raw output is `true`/`false` per key.
pub fn render_delete(results: &[(Vec<u8>, bool)], format: Format) -> Vec<u8> {
    let mut records = Records::new(&[Column::new("key"), Column::new("existed")], "existed");
    for (key, existed) in results {
        records.push(vec![Field::Bytes(key.clone()), Field::Bool(*existed)]);
    }
    let shape = if results.len() == 1 {
        Shape::One
    } else {
        Shape::Many
    };
    records.render(format, shape)
}

/// The result of `cas`: a table; JSON `{"key", "swapped": true, "new_version"}` or
/// `{"key", "swapped": false, "current": {"found", "version", "value"}}` (on one line for
/// `jsonl`); TSV columns `key`, `swapped`, `version` (the new one, or on a mismatch the
/// current one, 0 when absent) and `value` (the current value on a mismatch). Raw output
/// is that version.
pub fn render_cas(key: &[u8], outcome: &CasOutcome, format: Format) -> Vec<u8> {
    let text = match format {
        Format::Table => format!("{}\n", cas_table(key, outcome)),
        Format::Json => format!("{}\n", to_json(&cas_json(key, outcome))),
        Format::Jsonl => json_line(&cas_json(key, outcome)),
        Format::Tsv | Format::Raw => return cas_records(key, outcome).render(format, Shape::One),
    };
    text.into_bytes()
}

fn cas_table(key: &[u8], outcome: &CasOutcome) -> String {
    match outcome {
        CasOutcome::Swapped { new_version } => render_table(
            &["KEY", "RESULT", "NEW VERSION"],
            vec![vec![
                display_bytes(key),
                "swapped".into(),
                new_version.to_string(),
            ]],
            &[],
        ),
        CasOutcome::Mismatch { current } => {
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
    }
}

fn cas_json(key: &[u8], outcome: &CasOutcome) -> Value {
    let mut object = keyed_object(key);
    match outcome {
        CasOutcome::Swapped { new_version } => {
            object.insert("swapped".into(), json!(true));
            object.insert("new_version".into(), json!(new_version));
        }
        CasOutcome::Mismatch { current } => {
            object.insert("swapped".into(), json!(false));
            let mut state = Map::new();
            state.insert("found".into(), json!(current.is_some()));
            state.insert(
                "version".into(),
                json!(current.as_ref().map_or(0, |current| current.version)),
            );
            if let Some(current) = current {
                insert_bytes(&mut state, "value", &current.value);
            }
            object.insert("current".into(), Value::Object(state));
        }
    }
    Value::Object(object)
}

fn cas_records(key: &[u8], outcome: &CasOutcome) -> Records {
    let columns = [
        Column::new("key"),
        Column::new("swapped"),
        Column::new("version"),
        Column::new("value"),
    ];
    let mut records = Records::new(&columns, "version");
    let (swapped, version, value) = match outcome {
        CasOutcome::Swapped { new_version } => (true, *new_version, Field::Absent),
        CasOutcome::Mismatch { current } => (
            false,
            current.as_ref().map_or(0, |current| current.version),
            current
                .as_ref()
                .map_or(Field::Absent, |current| Field::Bytes(current.value.clone())),
        ),
    };
    records.push(vec![
        Field::Bytes(key.to_vec()),
        Field::Bool(swapped),
        Field::Number(version),
        value,
    ]);
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("utf-8")
    }

    fn found(value: &[u8], version: u64) -> Versioned {
        Versioned {
            value: value.to_vec(),
            version,
        }
    }

    /// `get` as JSON is an object with key, found, version and value.
    #[test]
    fn get_json_shape() {
        let found = found(b"bar", 12);
        let value: Value =
            serde_json::from_slice(&render_get(b"foo", Some(&found), Format::Json)).expect("json");
        assert_eq!(
            value,
            json!({"key": "foo", "found": true, "version": 12, "value": "bar"})
        );
    }

    /// A missing key is `found: false`, version 0 and no value, in JSON and JSON lines.
    #[test]
    fn get_missing_json() {
        let expected = json!({"key": "nope", "found": false, "version": 0});
        for format in [Format::Json, Format::Jsonl] {
            let value: Value = serde_json::from_slice(&render_get(b"nope", None, format)).expect("json");
            assert_eq!(value, expected, "{format:?}");
        }
        assert_eq!(
            text(render_get(b"nope", None, Format::Tsv)),
            "key\tfound\tversion\tvalue\nnope\tfalse\t0\t\n"
        );
    }

    /// `get` as a table has a header row and one aligned data row.
    #[test]
    fn get_table_shape() {
        let found = found(b"bar", 12);
        let table = text(render_get(b"foo", Some(&found), Format::Table));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(lines[0].starts_with("KEY"), "{table}");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["foo", "12", "bar"]
        );
        assert_eq!(
            lines[0].find("VERSION").map(|start| start + "VERSION".len()),
            lines[1].find("12").map(|start| start + 2),
            "numbers are right-aligned under their header:\n{table}"
        );
    }

    /// `get` as TSV and raw: a header and tab-separated escaped cells; the value's bytes.
    #[test]
    fn get_tsv_and_raw() {
        let found = found(b"a\tb\nc", 3);
        assert_eq!(
            text(render_get(b"k", Some(&found), Format::Tsv)),
            "key\tfound\tversion\tvalue\nk\ttrue\t3\ta\\tb\\nc\n"
        );
        assert_eq!(render_get(b"k", Some(&found), Format::Raw), b"a\tb\nc\n");
    }

    /// `del` of one key is one object; of several, an array (JSON) or one line each.
    #[test]
    fn del_shapes() {
        let one = [(b"a".to_vec(), true)];
        let value: Value = serde_json::from_slice(&render_delete(&one, Format::Json)).expect("json");
        assert_eq!(value, json!({"key": "a", "existed": true}));
        let three = [(b"a".to_vec(), true), (b"b".to_vec(), false), (vec![0xff], true)];
        let value: Value = serde_json::from_slice(&render_delete(&three, Format::Json)).expect("json");
        assert_eq!(
            value,
            json!([
                {"key": "a", "existed": true},
                {"key": "b", "existed": false},
                {"key": null, "key_hex": "ff", "existed": true},
            ])
        );
        let lines = text(render_delete(&three, Format::Jsonl));
        assert_eq!(lines.lines().count(), 3, "{lines}");
        assert_eq!(
            text(render_delete(&three, Format::Tsv)),
            "key\texisted\na\ttrue\nb\tfalse\n0xff\ttrue\n"
        );
    }

    /// A CAS mismatch on an absent key reports found=false and version 0.
    #[test]
    fn cas_mismatch_json() {
        let outcome = CasOutcome::Mismatch { current: None };
        let expected = json!({"key": "k", "swapped": false, "current": {"found": false, "version": 0}});
        for format in [Format::Json, Format::Jsonl] {
            let value: Value = serde_json::from_slice(&render_cas(b"k", &outcome, format)).expect("json");
            assert_eq!(value, expected, "{format:?}");
        }
        assert_eq!(
            text(render_cas(b"k", &outcome, Format::Tsv)),
            "key\tswapped\tversion\tvalue\nk\tfalse\t0\t\n"
        );
    }

    /// A CAS mismatch table shows the current version and value.
    #[test]
    fn cas_mismatch_table() {
        let outcome = CasOutcome::Mismatch {
            current: Some(found(b"now", 5)),
        };
        let table = text(render_cas(b"k", &outcome, Format::Table));
        assert!(table.contains("mismatch") && table.contains('5') && table.contains("now"));
    }
}
