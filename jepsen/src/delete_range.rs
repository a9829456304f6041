//! The delete-range workload: ranges filled and deleted while faults run, checked by
//! [`crate::checker::delete_range`] (nothing written before an acknowledged delete-range
//! read after it).
//!
//! [`RANGES`] ranges `jepsen/range/<r>/` of [`RANGE_KEYS`] keys each, spread over every
//! shard, shared by all clients. A fill is one `batch_put` writing one value, unique in the
//! run and padded to `--value-bytes` (at most 256 KiB), to every key of a range; a read
//! scans the range, a few entries a page; a delete is `delete_range` of the range. A
//! delete-range that fails or whose outcome is unknown may have deleted any part of the
//! range (it is atomic per chunk of a shard only): the client runs it again, up to
//! [`REPLAYS`] times, as the README says is safe.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{Client, KeyRange};
use tokio_util::sync::CancellationToken;

use crate::history::{OpType, OpValue, Process, Recorder, F};
use crate::scan::scan_all;
use crate::workload::{complete_err, complete_ok, completion_for, encode_value};

/// Ranges in the run.
pub const RANGES: u64 = 6;

/// Keys per range.
pub const RANGE_KEYS: u64 = 12;

/// Times a delete-range that did not succeed is run again.
pub const REPLAYS: usize = 3;

/// Largest value a fill writes per key (a fill is one batch of every key of a range).
pub(crate) const MAX_VALUE_BYTES: usize = 256 * 1024;

/// Page limit of range reads.
const PAGE_LIMIT: u32 = 4;

fn range_prefix(range: u64) -> String {
    format!("jepsen/range/{range:03}/")
}

/// Key `index` of range `range`.
pub fn range_key(range: u64, index: u64) -> Vec<u8> {
    format!("{}{index:04}", range_prefix(range)).into_bytes()
}

/// Shared state of the delete-range workload.
pub struct RangeShared {
    value_bytes: usize,
    next_value: AtomicU64,
}

impl RangeShared {
    /// Values padded to `value_bytes` (at most 256 KiB).
    pub fn new(value_bytes: usize) -> Arc<RangeShared> {
        Arc::new(RangeShared {
            value_bytes: value_bytes.min(MAX_VALUE_BYTES),
            next_value: AtomicU64::new(1),
        })
    }
}

/// One delete-range client process: fills (40 %), reads (35 %) and delete-ranges (25 %,
/// each run again after a failure or an unknown outcome) of random ranges.
pub async fn range_client(
    process: u64,
    client: Client,
    shared: Arc<RangeShared>,
    recorder: Recorder,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.is_cancelled() {
        let range = rng.random_range(0..RANGES);
        let roll: f64 = rng.random();
        if roll < 0.4 {
            let value = shared.next_value.fetch_add(1, Ordering::Relaxed);
            let op = recorder.invoke(
                Process::Client(process),
                F::RangeFill,
                OpValue::RangeFill {
                    range,
                    keys: RANGE_KEYS,
                    value,
                },
            );
            let padded = encode_value(value, shared.value_bytes);
            let entries = (0..RANGE_KEYS).map(|index| (range_key(range, index), padded.clone()));
            match client.batch_put(entries).await {
                Ok(_) => complete_ok(&recorder, &op),
                Err(err) => complete_err(&recorder, &op, completion_for(&err), err.to_string()),
            }
        } else if roll < 0.75 {
            let scan = |pages: u32, entries: Option<Vec<(u64, u64)>>| OpValue::Scan {
                range,
                page_limit: PAGE_LIMIT,
                pages,
                ts: None,
                entries,
            };
            let op = recorder.invoke(Process::Client(process), F::RangeRead, scan(0, None));
            let prefix = range_prefix(range);
            match scan_all(&client, &KeyRange::prefix(&prefix), PAGE_LIMIT, false).await {
                Ok(scanned) => {
                    let entries = scanned.numbered(prefix.as_bytes());
                    let _ = recorder.complete(&op, OpType::Ok, scan(scanned.pages, Some(entries)), None);
                }
                // A failed read changed nothing.
                Err(err) => complete_err(&recorder, &op, OpType::Fail, err),
            }
        } else {
            for _ in 0..=REPLAYS {
                let op = recorder.invoke(Process::Client(process), F::DeleteRange, OpValue::Range(range));
                match client.delete_range(&KeyRange::prefix(range_prefix(range))).await {
                    Ok(_) => {
                        complete_ok(&recorder, &op);
                        break;
                    }
                    Err(err) => complete_err(&recorder, &op, completion_for(&err), err.to_string()),
                }
                if stop.is_cancelled() {
                    break;
                }
            }
        }
    }
}
