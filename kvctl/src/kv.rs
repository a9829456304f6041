//! `get`, `put`, `del`, `cas`: single-key commands against the routers.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{ArgGroup, Args};
use ringkv_client::{CasOutcome, Client, Versioned};
use serde_json::{json, Map, Value};

use crate::exit::{Outcome, UsageError};
use crate::output::{self, display_bytes, insert_bytes, keyed_object, render_table, to_json, OutputFormat};
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
    /// Write exactly the value bytes to stdout: no formatting, no newline.
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
}

/// Arguments of `kvctl del`.
#[derive(Args, Debug)]
pub struct DelArgs {
    /// The key (bytes as given; hex with --hex).
    pub key: OsString,
    /// The key is hex-encoded.
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
}

/// `kvctl get`: prints the value, or says it is not found (exit 1).
pub async fn get(client: &Client, args: GetArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    let key = decode_key(args.key, args.hex)?;
    let consistency = crate::range::consistency(args.stale, args.at);
    let found = client
        .get_with(&key, consistency)
        .await
        .with_context(|| format!("get {}", display_bytes(&key)))?;
    let Some(found) = found else {
        eprintln!("key not found: {}", display_bytes(&key));
        return Ok(Outcome::NotFound);
    };
    if args.raw {
        output::emit_raw(&found.value)?;
    } else {
        output::emit(&render_get(&key, &found, format))?;
    }
    Ok(Outcome::Success)
}

/// `kvctl put`: stores the value and prints its version.
pub async fn put(client: &Client, args: PutArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    let key = decode_key(args.key, args.hex)?;
    let source = value_source(args.value, args.file, args.stdin, args.hex)?
        .ok_or_else(|| UsageError("give a value, --file or --stdin".into()))?;
    let value = read_source(source)?;
    let version = client
        .put(&key, value)
        .await
        .with_context(|| format!("put {}", display_bytes(&key)))?;
    output::emit(&render_put(&key, version, format))?;
    Ok(Outcome::Success)
}

/// `kvctl del`: deletes the key and says whether it existed (absent is not an error).
pub async fn del(client: &Client, args: DelArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    let key = decode_key(args.key, args.hex)?;
    let existed = client
        .delete(&key)
        .await
        .with_context(|| format!("del {}", display_bytes(&key)))?;
    output::emit(&render_delete(&key, existed, format))?;
    Ok(Outcome::Success)
}

/// `kvctl cas`: swaps when the version matches; on a mismatch prints the current state
/// and exits 2.
pub async fn cas(client: &Client, args: CasArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
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
    let outcome = client
        .compare_and_swap(&key, args.expect_version, new_value)
        .await
        .with_context(|| format!("cas {}", display_bytes(&key)))?;
    output::emit(&render_cas(&key, &outcome, format))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
