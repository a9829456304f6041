//! `kvctl txn`: a script of reads and writes run as one transaction, like etcdctl's `txn`.
//!
//! The script (a file, or stdin) has one operation per line — `get KEY`, `scan PREFIX
//! [LIMIT]` (the transaction's view of the keys with that prefix, its own writes included;
//! at most LIMIT, default 100), `put KEY VALUE` (the rest of the line is the value), `del
//! KEY` — blank lines and `#` comments skipped; or it is a JSON array of operations,
//! `{"op": "get" | "del", "key": K}`, `{"op": "put", "key": K, "value": V}`, `{"op":
//! "scan", "prefix": P, "limit": N}` (`key_hex`, `value_hex`, `prefix_hex` for bytes that
//! are not UTF-8, as `-o json` prints them).
//! Reads see the transaction's snapshot and its own earlier writes; every write commits
//! together at the end, or none does. With `--retry`, a run aborted by a conflict runs
//! again from the first line (up to the client's limit); each run's reads are printed only
//! for the run that committed.
//!
//! Without a script file, when stdin is a terminal (or with `--interactive`), the
//! transaction is interactive: each line runs as it is typed and prints its result, a
//! mistyped line is reported and skipped, `commit` (or an empty line, or end of input)
//! commits and `rollback` abandons.

use std::io::{BufRead, IsTerminal, Read};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use ringkv_client::{Client, Error as ClientError, Isolation, KeyRange, Transaction};
use serde_json::{json, Value};

use crate::exit::{Outcome, UsageError};
use crate::output::{self, display_bytes, insert_bytes, keyed_object, render_table, to_json, OutputFormat};

/// Entries a `scan` line reads when it names no limit, and the most it may name.
const DEFAULT_SCAN_LIMIT: usize = 100;
const MAX_SCAN_LIMIT: usize = 10_000;

/// Longest script accepted, in bytes.
const MAX_SCRIPT_BYTES: usize = 16 << 20;

/// Longest line of an interactive transaction, in bytes.
const MAX_LINE_BYTES: u64 = 1 << 20;

/// The isolation levels as the command line names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IsolationArg {
    ReadUncommitted,
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

impl From<IsolationArg> for Isolation {
    fn from(level: IsolationArg) -> Isolation {
        match level {
            IsolationArg::ReadUncommitted => Isolation::ReadUncommitted,
            IsolationArg::ReadCommitted => Isolation::ReadCommitted,
            IsolationArg::RepeatableRead => Isolation::RepeatableRead,
            IsolationArg::Serializable => Isolation::Serializable,
        }
    }
}

/// Arguments of `kvctl txn`.
#[derive(Args, Debug)]
pub struct TxnArgs {
    /// The script: `get KEY`, `scan PREFIX [LIMIT]`, `put KEY VALUE`, `del KEY`, one per
    /// line (default: stdin).
    pub script: Option<PathBuf>,
    /// Isolation level of the transaction.
    #[arg(long, value_enum, default_value = "repeatable-read")]
    pub isolation: IsolationArg,
    /// Run the script again after an abort that may succeed on a retry (a write conflict).
    #[arg(long)]
    pub retry: bool,
    /// Run each line as it is read, printing its result at once; `commit` (or an empty
    /// line, or end of input) commits, `rollback` abandons. The default when stdin is a
    /// terminal and no script file is given.
    #[arg(long, conflicts_with_all = ["script", "retry"])]
    pub interactive: bool,
}

/// One line of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Get(Vec<u8>),
    Scan(Vec<u8>, usize),
    Put(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
}

/// Parses a script — lines, or a JSON array when it starts with `[` — errors name the
/// line or the element.
fn parse(script: &str) -> Result<Vec<Op>, UsageError> {
    if script.trim_start().starts_with('[') {
        return parse_json(script);
    }
    let mut ops = Vec::new();
    for (number, line) in (1..).zip(script.lines()) {
        if let Some(op) = parse_line(line).map_err(|err| UsageError(format!("line {number}: {err}")))? {
            ops.push(op);
        }
    }
    if ops.is_empty() {
        return Err(UsageError("the script has no operations".to_string()));
    }
    Ok(ops)
}

/// One line of a script: an operation, or `None` for a blank line or a `#` comment.
fn parse_line(line: &str) -> Result<Option<Op>, String> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim_start();
    let key_only = |what: &str| -> Result<Vec<u8>, String> {
        let key = rest.trim_end();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("{what} takes one KEY"));
        }
        Ok(key.as_bytes().to_vec())
    };
    let op = match verb {
        "get" => Op::Get(key_only("get")?),
        "del" | "delete" => Op::Del(key_only("del")?),
        "scan" => {
            let mut words = rest.split_whitespace();
            let (Some(prefix), limit, None) = (words.next(), words.next(), words.next()) else {
                return Err("scan takes PREFIX [LIMIT]".to_string());
            };
            let limit = match limit {
                None => DEFAULT_SCAN_LIMIT,
                Some(limit) => scan_limit(limit.parse::<u64>().ok())
                    .ok_or_else(|| format!("scan LIMIT must be 1..={MAX_SCAN_LIMIT}, got {limit:?}"))?,
            };
            Op::Scan(prefix.as_bytes().to_vec(), limit)
        }
        "put" => {
            let Some((key, value)) = rest.split_once(char::is_whitespace) else {
                return Err("put takes KEY VALUE".to_string());
            };
            Op::Put(key.as_bytes().to_vec(), value.as_bytes().to_vec())
        }
        other => return Err(format!("unknown operation {other:?} (get, scan, put, del)")),
    };
    Ok(Some(op))
}

/// A scan limit in range, if it is one.
fn scan_limit(limit: Option<u64>) -> Option<usize> {
    limit
        .and_then(|limit| usize::try_from(limit).ok())
        .filter(|limit| (1..=MAX_SCAN_LIMIT).contains(limit))
}

/// A JSON script: an array of `{"op": …}` objects (see the module docs).
fn parse_json(script: &str) -> Result<Vec<Op>, UsageError> {
    let elements: Vec<Value> =
        serde_json::from_str(script).map_err(|err| UsageError(format!("the JSON script: {err}")))?;
    let mut ops = Vec::with_capacity(elements.len());
    for (index, element) in elements.iter().enumerate() {
        let op = json_op(element).map_err(|err| UsageError(format!("operation {index}: {err}")))?;
        ops.push(op);
    }
    if ops.is_empty() {
        return Err(UsageError("the script has no operations".to_string()));
    }
    Ok(ops)
}

/// One element of a JSON script.
fn json_op(element: &Value) -> Result<Op, String> {
    let object = element
        .as_object()
        .ok_or_else(|| format!("expected an object, got {element}"))?;
    for field in object.keys() {
        let known = [
            "op",
            "key",
            "key_hex",
            "value",
            "value_hex",
            "prefix",
            "prefix_hex",
            "limit",
        ];
        if !known.contains(&field.as_str()) {
            return Err(format!("unknown field {field:?}"));
        }
    }
    let bytes = |field: &str| -> Result<Option<Vec<u8>>, String> {
        let hex_field = format!("{field}_hex");
        match (object.get(field), object.get(&hex_field)) {
            (Some(_), Some(_)) => Err(format!("give {field:?} or {hex_field:?}, not both")),
            (Some(Value::String(text)), None) => Ok(Some(text.as_bytes().to_vec())),
            (Some(other), None) => Err(format!("{field:?} must be a string, got {other}")),
            (None, Some(Value::String(hex_text))) => hex::decode(hex_text)
                .map(Some)
                .map_err(|err| format!("{hex_field:?} is not hex: {err}")),
            (None, Some(other)) => Err(format!("{hex_field:?} must be a string, got {other}")),
            (None, None) => Ok(None),
        }
    };
    let required = |field: &str| -> Result<Vec<u8>, String> {
        bytes(field)?.ok_or_else(|| format!("{field:?} (or {field:?}_hex) is missing"))
    };
    let op = object
        .get("op")
        .and_then(Value::as_str)
        .ok_or("\"op\" (get, scan, put, del) is missing")?;
    match op {
        "get" => Ok(Op::Get(required("key")?)),
        "del" | "delete" => Ok(Op::Del(required("key")?)),
        "put" => Ok(Op::Put(required("key")?, required("value")?)),
        "scan" => {
            let limit = match object.get("limit") {
                None => DEFAULT_SCAN_LIMIT,
                Some(limit) => scan_limit(limit.as_u64())
                    .ok_or_else(|| format!("\"limit\" must be 1..={MAX_SCAN_LIMIT}, got {limit}"))?,
            };
            Ok(Op::Scan(required("prefix")?, limit))
        }
        other => Err(format!("unknown operation {other:?} (get, scan, put, del)")),
    }
}

/// What one operation of a run gave.
#[derive(Debug)]
struct Row {
    op: &'static str,
    key: Vec<u8>,
    /// For a get: the value read (`None`: absent); for writes: the value written.
    value: Option<Vec<u8>>,
}

/// Runs the operations in `txn`; returns the rows to print.
async fn run_ops(txn: &mut Transaction, ops: &[Op]) -> Result<Vec<Row>, ClientError> {
    let mut rows = Vec::with_capacity(ops.len());
    for op in ops {
        if let Op::Scan(prefix, limit) = op {
            let entries = txn.scan(&KeyRange::prefix(prefix), *limit).await?;
            if entries.is_empty() {
                rows.push(Row {
                    op: "scan",
                    key: prefix.clone(),
                    value: None,
                });
            }
            rows.extend(entries.into_iter().map(|entry| Row {
                op: "scan",
                key: entry.key,
                value: Some(entry.value),
            }));
            continue;
        }
        let row = match op {
            Op::Get(key) => Row {
                op: "get",
                key: key.clone(),
                value: txn.get(key).await?.map(|found| found.value),
            },
            Op::Put(key, value) => {
                txn.put(key, value.clone());
                Row {
                    op: "put",
                    key: key.clone(),
                    value: Some(value.clone()),
                }
            }
            Op::Del(key) => {
                txn.delete(key);
                Row {
                    op: "del",
                    key: key.clone(),
                    value: None,
                }
            }
            Op::Scan(..) => continue,
        };
        rows.push(row);
    }
    Ok(rows)
}

/// `kvctl txn`: runs the script as one transaction and prints what each line did and the
/// commit timestamp.
pub async fn run(client: &Client, args: TxnArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    if args.interactive || (args.script.is_none() && std::io::stdin().is_terminal()) {
        return interactive(client, Isolation::from(args.isolation), format).await;
    }
    let mut script = String::new();
    match &args.script {
        Some(path) => {
            script = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        }
        None => {
            std::io::stdin()
                .take(MAX_SCRIPT_BYTES as u64 + 1)
                .read_to_string(&mut script)
                .context("read the script from stdin")?;
        }
    }
    if script.len() > MAX_SCRIPT_BYTES {
        return Err(UsageError(format!("the script is over {MAX_SCRIPT_BYTES} bytes")).into());
    }
    let ops = parse(&script)?;
    let isolation = Isolation::from(args.isolation);
    let (rows, commit_ts) = if args.retry {
        let ops = std::sync::Arc::new(ops);
        let rows = client
            .transact(isolation, |txn| {
                let ops = std::sync::Arc::clone(&ops);
                Box::pin(async move { run_ops(txn, &ops).await })
            })
            .await
            .context("txn")?;
        (rows, None)
    } else {
        let mut txn = client.begin(isolation).await.context("txn: begin")?;
        let rows = run_ops(&mut txn, &ops).await.context("txn")?;
        let committed = txn.commit().await.context("txn: commit")?;
        (rows, Some(committed.commit_ts))
    };
    output::emit(&render(&rows, commit_ts, format))?;
    Ok(Outcome::Success)
}

/// What a line of an interactive transaction asks for.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Run(Op),
    Commit,
    Rollback,
    /// A comment.
    Nothing,
}

/// Reads one interactive line (its line ending is not part of a value): an operation,
/// `commit`, `rollback`; a blank line commits.
fn step(line: &str) -> Result<Step, String> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    match line.trim() {
        "" | "commit" => Ok(Step::Commit),
        "rollback" | "abort" => Ok(Step::Rollback),
        _ => Ok(parse_line(line)?.map_or(Step::Nothing, Step::Run)),
    }
}

/// The next line of stdin (at most [`MAX_LINE_BYTES`]); `None` at end of input.
async fn read_line() -> anyhow::Result<Option<String>> {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let read = std::io::stdin()
            .lock()
            .take(MAX_LINE_BYTES)
            .read_line(&mut line)
            .context("read a line from stdin")?;
        Ok((read > 0).then_some(line))
    })
    .await
    .context("the stdin reader stopped")?
}

/// An interactive transaction: each line runs as it is read and prints its rows (a table
/// line each, or a JSON object per line: JSON Lines); a mistyped line is reported and
/// skipped.
async fn interactive(client: &Client, isolation: Isolation, format: OutputFormat) -> anyhow::Result<Outcome> {
    let mut txn = client.begin(isolation).await.context("txn: begin")?;
    let terminal = std::io::stdin().is_terminal();
    eprintln!(
        "transaction at {isolation:?}, start timestamp {}: get KEY, scan PREFIX [LIMIT], put KEY VALUE, \
         del KEY; commit (or an empty line) commits, rollback abandons",
        txn.start_ts()
    );
    loop {
        if terminal {
            eprint!("txn> ");
        }
        let Some(line) = read_line().await? else {
            break;
        };
        match step(&line) {
            Err(err) => eprintln!("error: {err}"),
            Ok(Step::Nothing) => {}
            Ok(Step::Rollback) => {
                txn.rollback();
                match format {
                    OutputFormat::Table => output::emit("rolled back")?,
                    OutputFormat::Json => output::emit(&json_line(&json!({ "rolled_back": true })))?,
                }
                return Ok(Outcome::Success);
            }
            Ok(Step::Commit) => break,
            Ok(Step::Run(op)) => {
                let rows = run_ops(&mut txn, std::slice::from_ref(&op))
                    .await
                    .context("txn")?;
                for row in &rows {
                    output::emit(&render_row(row, format))?;
                }
            }
        }
    }
    let committed = txn.commit().await.context("txn: commit")?;
    match format {
        OutputFormat::Table => output::emit(&format!("committed at {}", committed.commit_ts))?,
        OutputFormat::Json => output::emit(&json_line(&json!({ "commit_ts": committed.commit_ts })))?,
    }
    Ok(Outcome::Success)
}

/// One row on a line of its own: `OP KEY VALUE`, or a JSON object.
fn render_row(row: &Row, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => format!(
            "{} {} {}",
            row.op,
            display_bytes(&row.key),
            row.value
                .as_deref()
                .map_or_else(|| "(absent)".to_string(), display_bytes)
        ),
        OutputFormat::Json => json_line(&Value::Object(row_object(row))),
    }
}

/// A JSON value on one line (JSON Lines, for the interactive mode).
fn json_line(value: &Value) -> String {
    value.to_string()
}

/// A row as a JSON object: `op`, `key`, `value` (null when absent).
fn row_object(row: &Row) -> serde_json::Map<String, Value> {
    let mut object = keyed_object(&row.key);
    object.insert("op".to_string(), json!(row.op));
    match &row.value {
        Some(value) => insert_bytes(&mut object, "value", value),
        None => {
            object.insert("value".to_string(), Value::Null);
        }
    }
    object
}

/// The rows as a table (and the commit timestamp) or JSON.
fn render(rows: &[Row], commit_ts: Option<u64>, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => {
            let table_rows = rows
                .iter()
                .map(|row| {
                    vec![
                        row.op.to_string(),
                        display_bytes(&row.key),
                        row.value
                            .as_deref()
                            .map_or_else(|| "(absent)".to_string(), display_bytes),
                    ]
                })
                .collect();
            let table = render_table(&["OP", "KEY", "VALUE"], table_rows, &[]);
            match commit_ts {
                Some(ts) => format!("{table}\ncommitted at {ts}"),
                None => format!("{table}\ncommitted"),
            }
        }
        OutputFormat::Json => {
            let ops: Vec<Value> = rows.iter().map(|row| Value::Object(row_object(row))).collect();
            to_json(&json!({ "ops": ops, "commit_ts": commit_ts }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_parse_and_bad_lines_are_named() {
        let ops =
            parse("# move 10\nget a\nscan acct/ 5\nscan x\n  put b hello world \n\ndel c\n").expect("parse");
        assert_eq!(
            ops,
            vec![
                Op::Get(b"a".to_vec()),
                Op::Scan(b"acct/".to_vec(), 5),
                Op::Scan(b"x".to_vec(), DEFAULT_SCAN_LIMIT),
                Op::Put(b"b".to_vec(), b"hello world ".to_vec()),
                Op::Del(b"c".to_vec()),
            ]
        );
        assert!(parse("get a b").is_err_and(|err| err.0.contains("line 1")));
        assert!(parse("get a\nput b").is_err_and(|err| err.0.contains("line 2")));
        assert!(parse("frob x").is_err_and(|err| err.0.contains("unknown operation")));
        assert!(parse("scan a 0").is_err_and(|err| err.0.contains("LIMIT")));
        assert!(parse("scan a 1 2").is_err_and(|err| err.0.contains("PREFIX")));
        assert!(parse("scan").is_err_and(|err| err.0.contains("PREFIX")));
        assert!(parse("# nothing\n").is_err());
    }

    #[test]
    fn json_scripts_parse_and_bad_elements_are_named() {
        let ops = parse(
            r#"[{"op": "get", "key": "a"}, {"op": "scan", "prefix": "acct/", "limit": 5},
                {"op": "scan", "prefix_hex": "ff"}, {"op": "put", "key": "b", "value": "two words"},
                {"op": "put", "key_hex": "00ff", "value_hex": "01"}, {"op": "del", "key": "c"}]"#,
        )
        .expect("parse");
        assert_eq!(
            ops,
            vec![
                Op::Get(b"a".to_vec()),
                Op::Scan(b"acct/".to_vec(), 5),
                Op::Scan(vec![0xff], DEFAULT_SCAN_LIMIT),
                Op::Put(b"b".to_vec(), b"two words".to_vec()),
                Op::Put(vec![0, 0xff], vec![1]),
                Op::Del(b"c".to_vec()),
            ]
        );
        let refused = |script: &str, words: &str| {
            let err = parse(script).expect_err(script);
            assert!(err.0.contains(words), "{script}: {}", err.0);
        };
        refused(r#"[{"op": "get"}]"#, "operation 0");
        refused(
            r#"[{"op": "get", "key": "a"}, {"op": "put", "key": "b"}]"#,
            "operation 1",
        );
        refused(r#"[{"op": "frob", "key": "a"}]"#, "unknown operation");
        refused(r#"[{"op": "get", "key": "a", "kye": "b"}]"#, "unknown field");
        refused(r#"[{"op": "get", "key": "a", "key_hex": "61"}]"#, "not both");
        refused(r#"[{"op": "get", "key_hex": "zz"}]"#, "not hex");
        refused(r#"[{"op": "scan", "prefix": "a", "limit": 0}]"#, "limit");
        refused(r#"[{"op": "get", "key": 7}]"#, "must be a string");
        refused("[]", "no operations");
        refused("[{", "JSON script");
    }

    #[test]
    fn interactive_lines() {
        assert_eq!(step("get a\n"), Ok(Step::Run(Op::Get(b"a".to_vec()))));
        assert_eq!(step("\n"), Ok(Step::Commit));
        assert_eq!(step(" commit \n"), Ok(Step::Commit));
        assert_eq!(step("rollback\n"), Ok(Step::Rollback));
        assert_eq!(step("# note\n"), Ok(Step::Nothing));
        assert_eq!(
            step("put k two words \r\n"),
            Ok(Step::Run(Op::Put(b"k".to_vec(), b"two words ".to_vec())))
        );
        assert!(step("get a b\n").is_err_and(|err| err.contains("one KEY")));
    }
}
