//! `mget` and `mput`: many keys at once.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures::stream::{FuturesUnordered, StreamExt};
use ringkv_client::{Client, Error as ClientError, Mutation, Versioned};
use serde_json::json;

use crate::exit::{Outcome, UsageError};
use crate::load::{InputFormat, Record, Records};
use crate::output::{self, display_bytes, render_table, to_json, Format, OutputFormat, Shape};
use crate::progress;
use crate::value::decode_key;

/// Arguments of `kvctl mget`.
#[derive(Args, Debug)]
pub struct MgetArgs {
    /// The keys (bytes as given; hex with --hex).
    #[arg(required = true, num_args = 1..)]
    pub keys: Vec<OsString>,
    /// Serve the reads from any replica (fast, possibly stale).
    #[arg(long, conflicts_with = "at")]
    pub stale: bool,
    /// Read every key as of this one timestamp (from `kvctl timestamp`): a consistent
    /// snapshot across shards. Timestamps older than the nodes' --mvcc-window-ms are refused.
    #[arg(long, value_name = "TIMESTAMP")]
    pub at: Option<u64>,
    /// The keys are hex-encoded.
    #[arg(long)]
    pub hex: bool,
}

/// Arguments of `kvctl mput`.
#[derive(Args, Debug)]
pub struct MputArgs {
    /// JSON-lines or CSV file to load; `-` reads standard input (needs --format).
    #[arg(value_name = "FILE|-")]
    pub file: PathBuf,
    /// Input format [default: from the file extension: .jsonl/.ndjson/.json or .csv].
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
    /// Keys per batch (one BatchWrite each).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// Keys and values are hex-encoded (CSV fields; JSON "key"/"value" strings).
    #[arg(long)]
    pub hex: bool,
}

/// `kvctl mget`: one row per key, in order; exit 1 when any key does not exist.
pub async fn mget(client: &Client, args: MgetArgs, format: Format) -> anyhow::Result<Outcome> {
    let keys = args
        .keys
        .into_iter()
        .map(|key| decode_key(key, args.hex))
        .collect::<Result<Vec<_>, _>>()?;
    let consistency = crate::range::consistency(args.stale, args.at);
    let results = client
        .batch_get_with(&keys, consistency)
        .await
        .with_context(|| format!("mget of {} keys", keys.len()))?;
    output::emit_raw(&render_mget(&keys, &results, format))?;
    let missing = results.iter().filter(|result| result.is_none()).count();
    if missing > 0 {
        eprintln!("{missing} of {} keys not found", keys.len());
        return Ok(Outcome::NotFound);
    }
    Ok(Outcome::Success)
}

/// The input of `mput`.
enum Input {
    File(PathBuf),
    Stdin,
}

impl Input {
    fn name(&self) -> String {
        match self {
            Input::File(path) => path.display().to_string(),
            Input::Stdin => "stdin".to_string(),
        }
    }
}

/// `kvctl mput`: checks the whole input first (bad input exits 64 before anything is
/// written), then loads it in batches of `--batch-size` keys, `--concurrency` batches
/// in flight, with a progress bar on stderr.
pub async fn mput(client: &Client, args: MputArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    let input = if args.file.as_os_str() == "-" {
        Input::Stdin
    } else {
        Input::File(args.file)
    };
    let input_format = match (&input, args.format) {
        (_, Some(format)) => format,
        (Input::File(path), None) => InputFormat::from_path(path).ok_or_else(|| {
            UsageError(format!(
                "cannot tell the format of {}: name it .jsonl or .csv, or give --format jsonl|csv",
                path.display()
            ))
        })?,
        (Input::Stdin, None) => {
            return Err(UsageError("reading stdin: give --format jsonl|csv".into()).into());
        }
    };
    let name = input.name();
    let batch_size = usize::try_from(args.batch_size).unwrap_or(usize::MAX);
    let concurrency = usize::try_from(args.concurrency).unwrap_or(1);

    // First pass: the whole input is checked (and, from stdin, kept) before any write.
    let (total, records): (u64, Box<dyn Iterator<Item = anyhow::Result<Record>>>) = match &input {
        Input::File(path) => {
            let total = check_records(open_records(path, input_format, args.hex)?, |_| {})
                .with_context(|| name.clone())?;
            let records = open_records(path, input_format, args.hex)?;
            (as_u64(total), Box::new(records))
        }
        Input::Stdin => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("reading {input_format:?} records from stdin (end with Ctrl-D)");
            }
            let mut kept = Vec::new();
            check_records(Records::new(stdin.lock(), input_format, args.hex), |record| {
                kept.push(record)
            })
            .with_context(|| name.clone())?;
            (as_u64(kept.len()), Box::new(kept.into_iter().map(Ok)))
        }
    };

    let started = Instant::now();
    let bar = progress::bar(Some(total), progress::LOAD_TEMPLATE);
    let report = load(client, records, batch_size, concurrency, |keys| {
        bar.inc(keys);
        bar.set_message(progress::rate_message(&bar));
    })
    .await;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    if let Some(error) = report.error {
        let hint = if is_outcome_unknown(&error) {
            " (some other keys may have been written too; loading the input again is safe)"
        } else {
            ""
        };
        return Err(error.context(format!(
            "mput {name}: {} of {total} keys loaded before the failure{hint}",
            report.loaded
        )));
    }
    output::emit(&render_mput(report.loaded, report.batches, elapsed, format))?;
    Ok(Outcome::Success)
}

fn as_u64(count: usize) -> u64 {
    u64::try_from(count).unwrap_or(u64::MAX)
}

/// The records of a file.
fn open_records(
    path: &std::path::Path,
    format: InputFormat,
    hex: bool,
) -> anyhow::Result<Records<BufReader<File>>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Records::new(BufReader::new(file), format, hex))
}

/// Reads every record, rejecting malformed input and repeated keys (a batch may hold a
/// key once, and two batches in flight could apply a repeated key in either order);
/// passes each record to `keep` and returns how many there are.
fn check_records(records: Records<impl BufRead>, mut keep: impl FnMut(Record)) -> anyhow::Result<usize> {
    let mut lines_by_key: HashMap<Vec<u8>, usize> = HashMap::new();
    for record in records {
        let record = record?;
        if let Some(first) = lines_by_key.insert(record.key.clone(), record.line) {
            return Err(UsageError(format!(
                "line {}: key {} already appears on line {first} (each key may appear once)",
                record.line,
                display_bytes(&record.key)
            ))
            .into());
        }
        keep(record);
    }
    Ok(lines_by_key.len())
}

/// How a load ended.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Keys whose batch was written.
    pub loaded: u64,
    /// Batches written.
    pub batches: u64,
    /// The failure that stopped the load, if any.
    pub error: Option<anyhow::Error>,
}

/// Writes `records` in batches of `batch_size` with at most `concurrency` batches in
/// flight, calling `on_loaded` with the size of each batch written. After the first
/// failure no new batch starts; those in flight are awaited, so the report is exact
/// (an outcome-unknown failure is preferred over others: it decides the exit code).
pub async fn load(
    client: &Client,
    mut records: impl Iterator<Item = anyhow::Result<Record>>,
    batch_size: usize,
    concurrency: usize,
    mut on_loaded: impl FnMut(u64),
) -> LoadReport {
    let mut report = LoadReport::default();
    let mut in_flight = FuturesUnordered::new();
    let mut exhausted = false;
    loop {
        while !exhausted && report.error.is_none() && in_flight.len() < concurrency.max(1) {
            match next_batch(&mut records, batch_size) {
                Ok(batch) if batch.is_empty() => exhausted = true,
                Ok(batch) => in_flight.push(write_batch(client, batch)),
                Err(error) => report.error = Some(error),
            }
        }
        let Some(result) = in_flight.next().await else {
            break;
        };
        match result {
            Ok(keys) => {
                report.loaded += keys;
                report.batches += 1;
                on_loaded(keys);
            }
            Err(error) => {
                let replace = report
                    .error
                    .as_ref()
                    .is_none_or(|current| !is_outcome_unknown(current) && is_outcome_unknown(&error));
                if replace {
                    report.error = Some(error);
                }
            }
        }
    }
    report
}

fn is_outcome_unknown(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<ClientError>()
            .is_some_and(ClientError::is_outcome_unknown)
    })
}

/// Up to `batch_size` records; empty at the end of the input.
fn next_batch(
    records: &mut impl Iterator<Item = anyhow::Result<Record>>,
    batch_size: usize,
) -> anyhow::Result<Vec<Record>> {
    let mut batch = Vec::with_capacity(batch_size.min(4096));
    for record in records.by_ref().take(batch_size) {
        batch.push(record?);
    }
    Ok(batch)
}

/// Writes one batch; returns the number of keys written.
async fn write_batch(client: &Client, batch: Vec<Record>) -> anyhow::Result<u64> {
    let keys = as_u64(batch.len());
    let first_line = batch.first().map_or(0, |record| record.line);
    client
        .batch_write(
            batch
                .into_iter()
                .map(|record| Mutation::put(record.key, record.value)),
        )
        .await
        .with_context(|| format!("batch of {keys} keys from line {first_line}"))?;
    Ok(keys)
}

/// The results of `mget`, one per key in order (as `get`'s, [`crate::kv::get_records`]).
/// JSON: an array of `get` objects, with `found: false` and version 0 for absent keys.
pub fn render_mget(keys: &[Vec<u8>], results: &[Option<Versioned>], format: Format) -> Vec<u8> {
    let records = crate::kv::get_records(
        keys.iter()
            .zip(results)
            .map(|(key, result)| (key.as_slice(), result.as_ref())),
    );
    records.render(format, Shape::Many)
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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// Repeated keys are usage errors naming both lines.
    #[test]
    fn repeated_keys_are_rejected() {
        let input: &[u8] = b"a,1\nb,2\na,3\n";
        let error = check_records(Records::new(input, InputFormat::Csv, false), |_| {}).expect_err("repeat");
        let usage = error.downcast::<UsageError>().expect("usage error");
        assert_eq!(
            usage.0,
            "line 3: key a already appears on line 1 (each key may appear once)"
        );
        let input: &[u8] = b"a,1\nb,2\n";
        assert_eq!(
            check_records(Records::new(input, InputFormat::Csv, false), |_| {}).expect("ok"),
            2
        );
    }

    /// Batches are cut at the batch size; the last one is shorter, then empty.
    #[test]
    fn batches_are_cut() {
        let input: &[u8] = b"a,1\nb,2\nc,3\n";
        let mut records = Records::new(input, InputFormat::Csv, false);
        assert_eq!(next_batch(&mut records, 2).expect("batch").len(), 2);
        assert_eq!(next_batch(&mut records, 2).expect("batch").len(), 1);
        assert!(next_batch(&mut records, 2).expect("batch").is_empty());
    }

    /// Outcome-unknown errors are recognised through context layers.
    #[test]
    fn outcome_unknown_in_chain() {
        let error = anyhow::Error::new(ClientError::OutcomeUnknown("x".into())).context("batch");
        assert!(is_outcome_unknown(&error));
        assert!(!is_outcome_unknown(&anyhow::anyhow!("disk")));
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
        let value: Value = serde_json::from_slice(&render_mget(&keys, &results, Format::Json)).expect("json");
        assert_eq!(
            value,
            json!([
                {"key": "a", "found": true, "version": 5, "value": "1"},
                {"key": "b", "found": false, "version": 0},
            ])
        );
        let table = String::from_utf8(render_mget(&keys, &results, Format::Table)).expect("utf-8");
        assert_eq!(
            table
                .lines()
                .nth(2)
                .map(|line| line.split_whitespace().collect::<Vec<_>>()),
            Some(vec!["b", "0", "-"]),
            "a missing key has no value:\n{table}"
        );
    }

    /// The `mput` summary: keys, batches, seconds and rate.
    #[test]
    fn mput_output() {
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
    }
}
