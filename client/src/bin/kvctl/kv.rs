//! `get`, `put`, `del`, `cas`: single-key commands against the routers.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{ArgGroup, Args};
use ringkv_client::{CasOutcome, Client, ReadConsistency};

use crate::exit::{Outcome, UsageError};
use crate::output::{self, display_bytes, OutputFormat};
use crate::value::{decode_key, read_value, value_source, ValueSource};

/// Arguments of `kvctl get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The key (bytes as given; hex with --hex).
    pub key: OsString,
    /// Serve the read from any replica (fast, possibly stale).
    #[arg(long)]
    pub stale: bool,
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
    let consistency = if args.stale {
        ReadConsistency::Stale
    } else {
        ReadConsistency::Linearizable
    };
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
        output::emit(&output::render_get(&key, &found, format))?;
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
    output::emit(&output::render_put(&key, version, format))?;
    Ok(Outcome::Success)
}

/// `kvctl del`: deletes the key and says whether it existed (absent is not an error).
pub async fn del(client: &Client, args: DelArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    let key = decode_key(args.key, args.hex)?;
    let existed = client
        .delete(&key)
        .await
        .with_context(|| format!("del {}", display_bytes(&key)))?;
    output::emit(&output::render_delete(&key, existed, format))?;
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
    output::emit(&output::render_cas(&key, &outcome, format))?;
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
