//! `kvctl txn`: a script of reads and writes run as one transaction, like etcdctl's `txn`.
//!
//! The script (a file, or stdin) has one operation per line — `get KEY`, `scan PREFIX
//! [LIMIT]` (the transaction's view of the keys with that prefix, its own writes included;
//! at most LIMIT, default 100), `put KEY VALUE` (the rest of the line is the value), `del
//! KEY` — blank lines and `#` comments skipped.
//! Reads see the transaction's snapshot and its own earlier writes; every write commits
//! together at the end, or none does. With `--retry`, a run aborted by a conflict runs
//! again from the first line (up to the client's limit); each run's reads are printed only
//! for the run that committed.

use std::io::Read;
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
}

/// One line of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Get(Vec<u8>),
    Scan(Vec<u8>, usize),
    Put(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
}

/// Parses a script; errors name the line.
fn parse(script: &str) -> Result<Vec<Op>, UsageError> {
    let mut ops = Vec::new();
    for (number, line) in (1..).zip(script.lines()) {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim_start();
        let key_only = |what: &str| -> Result<Vec<u8>, UsageError> {
            let key = rest.trim_end();
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(UsageError(format!("line {number}: {what} takes one KEY")));
            }
            Ok(key.as_bytes().to_vec())
        };
        let op = match verb {
            "get" => Op::Get(key_only("get")?),
            "del" | "delete" => Op::Del(key_only("del")?),
            "scan" => {
                let mut words = rest.split_whitespace();
                let (Some(prefix), limit, None) = (words.next(), words.next(), words.next()) else {
                    return Err(UsageError(format!("line {number}: scan takes PREFIX [LIMIT]")));
                };
                let limit = match limit {
                    None => DEFAULT_SCAN_LIMIT,
                    Some(limit) => match limit.parse::<usize>() {
                        Ok(limit @ 1..=MAX_SCAN_LIMIT) => limit,
                        _ => {
                            return Err(UsageError(format!(
                                "line {number}: scan LIMIT must be 1..={MAX_SCAN_LIMIT}, got {limit:?}"
                            )))
                        }
                    },
                };
                Op::Scan(prefix.as_bytes().to_vec(), limit)
            }
            "put" => {
                let Some((key, value)) = rest.split_once(char::is_whitespace) else {
                    return Err(UsageError(format!("line {number}: put takes KEY VALUE")));
                };
                Op::Put(key.as_bytes().to_vec(), value.as_bytes().to_vec())
            }
            other => {
                return Err(UsageError(format!(
                    "line {number}: unknown operation {other:?} (get, scan, put, del)"
                )))
            }
        };
        ops.push(op);
    }
    if ops.is_empty() {
        return Err(UsageError("the script has no operations".to_string()));
    }
    Ok(ops)
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
            let ops: Vec<Value> = rows
                .iter()
                .map(|row| {
                    let mut object = keyed_object(&row.key);
                    object.insert("op".to_string(), json!(row.op));
                    match &row.value {
                        Some(value) => insert_bytes(&mut object, "value", value),
                        None => {
                            object.insert("value".to_string(), Value::Null);
                        }
                    }
                    Value::Object(object)
                })
                .collect();
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
}
