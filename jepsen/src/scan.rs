//! The scan workload: paged scans across every shard while keys come and go, checked by
//! [`crate::checker::scan`] (in order, no duplicate, nothing invented, nothing skipped that
//! was there, unchanged, for the whole scan).
//!
//! The workload's [`SCAN_KEYS`] keys `jepsen/scan/<n>` spread over every shard. Before the
//! clients start, every third one is put once ([`set_up`]) and never touched again: it is
//! present for every scan. The others are put (a value unique in the run, padded to
//! `--value-bytes`) and deleted by the clients throughout. Scans read every page of the
//! workload's prefix with a small page limit (1–5 entries), linearizably per shard or, one
//! in three, at a timestamp of the oracle; with large values the reply's byte budget
//! (3.5 MiB) ends pages before their limit too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{Client, ContinuationToken, KeyRange, ReadConsistency, ScanEntry, ScanOptions};
use tokio_util::sync::CancellationToken;

use crate::history::{OpType, OpValue, Process, Recorder, F};
use crate::workload::{complete_err, complete_ok, completion_for, encode_value, parse_value};

/// Keys of the scan workload.
pub const SCAN_KEYS: u64 = 48;

/// Every `STABLE_EVERY`th key is put once before the run and never changed.
const STABLE_EVERY: u64 = 3;

/// Page limits scans use.
const PAGE_LIMITS: [u32; 4] = [1, 2, 3, 5];

/// Attempts at one page before a scan gives up (each attempt is retried by the client
/// library within the request timeout).
const PAGE_ATTEMPTS: usize = 3;

/// Most pages one scan reads (a scan of [`SCAN_KEYS`] keys one at a time takes 49).
pub(crate) const MAX_PAGES: u32 = 1_000;

const PREFIX: &str = "jepsen/scan/";

/// Key `n` of the scan workload.
pub fn scan_key(n: u64) -> Vec<u8> {
    format!("{PREFIX}{n:06}").into_bytes()
}

/// The number a key `<prefix><n>` stands for; `u64::MAX` (a key nobody wrote) otherwise.
pub(crate) fn key_number(key: &[u8], prefix: &[u8]) -> u64 {
    key.strip_prefix(prefix)
        .and_then(|number| std::str::from_utf8(number).ok())
        .and_then(|number| number.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Shared state of the scan workload.
pub struct ScanShared {
    value_bytes: usize,
    next_value: AtomicU64,
}

impl ScanShared {
    /// Values padded to `value_bytes`.
    pub fn new(value_bytes: usize) -> Arc<ScanShared> {
        Arc::new(ScanShared {
            value_bytes,
            next_value: AtomicU64::new(1),
        })
    }
}

/// Puts every stable key once, as process `process`, each retried until acknowledged
/// (every attempt recorded), within `timeout`.
pub async fn set_up(
    process: u64,
    client: &Client,
    shared: &ScanShared,
    recorder: &Recorder,
    timeout: Duration,
) -> anyhow::Result<()> {
    for n in (0..SCAN_KEYS).step_by(STABLE_EVERY as usize) {
        ringkv_launcher::wait_for("the scan workload's stable keys to be written", timeout, || {
            put(process, client, shared, recorder, n)
        })
        .await?;
    }
    Ok(())
}

/// Puts a fresh value under key `n`; `Some(())` when acknowledged.
async fn put(process: u64, client: &Client, shared: &ScanShared, recorder: &Recorder, n: u64) -> Option<()> {
    let value = shared.next_value.fetch_add(1, Ordering::Relaxed);
    let op = recorder.invoke(
        Process::Client(process),
        F::ScanWrite,
        OpValue::Register {
            key: n,
            value: Some(value),
        },
    );
    match client
        .put(scan_key(n), encode_value(value, shared.value_bytes))
        .await
    {
        Ok(_) => {
            complete_ok(recorder, &op);
            Some(())
        }
        Err(err) => {
            complete_err(recorder, &op, completion_for(&err), err.to_string());
            None
        }
    }
}

/// One scan client process: half puts and deletes of the changing keys, half scans.
pub async fn scan_client(
    process: u64,
    client: Client,
    shared: Arc<ScanShared>,
    recorder: Recorder,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.is_cancelled() {
        if rng.random_bool(0.5) {
            let n = loop {
                let n = rng.random_range(0..SCAN_KEYS);
                if n % STABLE_EVERY != 0 {
                    break n;
                }
            };
            if rng.random_bool(0.6) {
                put(process, &client, &shared, &recorder, n).await;
                continue;
            }
            let op = recorder.invoke(
                Process::Client(process),
                F::ScanWrite,
                OpValue::Register { key: n, value: None },
            );
            match client.delete(scan_key(n)).await {
                Ok(_) => complete_ok(&recorder, &op),
                Err(err) => complete_err(&recorder, &op, completion_for(&err), err.to_string()),
            }
        } else {
            let page_limit = PAGE_LIMITS[rng.random_range(0..PAGE_LIMITS.len())];
            let at_timestamp = rng.random_bool(1.0 / 3.0);
            let invoked = OpValue::Scan {
                range: 0,
                page_limit,
                pages: 0,
                ts: None,
                entries: None,
            };
            let op = recorder.invoke(Process::Client(process), F::Scan, invoked);
            let range = KeyRange::prefix(PREFIX);
            match scan_all(&client, &range, page_limit, at_timestamp).await {
                Ok(scanned) => {
                    let value = OpValue::Scan {
                        range: 0,
                        page_limit,
                        pages: scanned.pages,
                        ts: scanned.ts,
                        entries: Some(scanned.numbered(PREFIX.as_bytes())),
                    };
                    let _ = recorder.complete(&op, OpType::Ok, value, None);
                }
                // A failed scan changed nothing.
                Err(err) => complete_err(&recorder, &op, OpType::Fail, err),
            }
        }
    }
}

/// Every page of one scan.
pub(crate) struct Scanned {
    pub(crate) entries: Vec<ScanEntry>,
    pub(crate) pages: u32,
    pub(crate) ts: Option<u64>,
}

impl Scanned {
    /// The entries as `(key number, value number)` pairs, keys read after `prefix`.
    pub(crate) fn numbered(&self, prefix: &[u8]) -> Vec<(u64, u64)> {
        self.entries
            .iter()
            .map(|entry| (key_number(&entry.key, prefix), parse_value(&entry.value)))
            .collect()
    }
}

/// Reads every page of `range`, `page_limit` entries at most per page, each page retried
/// [`PAGE_ATTEMPTS`] times; linearizably per shard, or at a fresh timestamp of the oracle.
pub(crate) async fn scan_all(
    client: &Client,
    range: &KeyRange,
    page_limit: u32,
    at_timestamp: bool,
) -> Result<Scanned, String> {
    let ts = if at_timestamp {
        Some(client.timestamp().await.map_err(|err| err.to_string())?)
    } else {
        None
    };
    let options = ScanOptions::new()
        .limit(page_limit)
        .consistency(ts.map_or(ReadConsistency::Linearizable, ReadConsistency::At));
    let mut token: Option<ContinuationToken> = None;
    let mut entries = Vec::new();
    for pages in 1..=MAX_PAGES {
        let mut attempt = 0;
        let page = loop {
            attempt += 1;
            match client.scan(range, &options, token.as_ref()).await {
                Ok(page) => break page,
                Err(err) if attempt >= PAGE_ATTEMPTS => return Err(format!("page {pages}: {err}")),
                Err(_) => {}
            }
        };
        entries.extend(page.entries);
        match page.next {
            Some(next) => token = Some(next),
            None => return Ok(Scanned { entries, pages, ts }),
        }
    }
    Err(format!("the scan did not end within {MAX_PAGES} pages"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys read back as their numbers; anything else as a key nobody wrote.
    #[test]
    fn key_numbers_round_trip() {
        assert_eq!(key_number(&scan_key(42), PREFIX.as_bytes()), 42);
        assert_eq!(key_number(b"jepsen/scan/x", PREFIX.as_bytes()), u64::MAX);
        assert_eq!(key_number(b"other/000001", PREFIX.as_bytes()), u64::MAX);
    }
}
