//! The rw-register workload: transactions of reads and writes over a few registers, run at
//! one isolation level and checked by [`crate::checker::elle::rw_register`] against what
//! that level forbids.
//!
//! Each key holds one number. A transaction of one to four micro-operations reads a key
//! (`Transaction::get`: the transaction's own write if it made one, else what the level
//! shows) or writes a value unique across the run (`Transaction::put`, buffered until the
//! commit). A third of the steps are a read of a key followed by a write of it, so that
//! writes follow reads and the checker can order versions (blind writes leave their order
//! unknown). Outcomes as in [`crate::append`]: `ok` when the commit succeeded (reads carry
//! what they returned, `nil` for a key never written), `fail` when it certainly did not
//! happen, `info` when the commit's outcome is unknown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{Client, Error, Isolation};
use tokio_util::sync::CancellationToken;

use crate::append::complete_txn;
use crate::history::{OpValue, Process, Recorder, RwMicroOp, F};

/// Registers the transactions spread over.
pub const RW_KEYS: u64 = 8;

/// Most micro-operations in one transaction.
const MAX_MICRO_OPS: usize = 4;

/// The key of register `key`.
pub fn rw_key(key: u64) -> Vec<u8> {
    format!("jepsen/rw/{key}").into_bytes()
}

/// Values written so far (each unique in the run).
#[derive(Debug, Default)]
pub struct RwShared {
    next: AtomicU64,
}

impl RwShared {
    fn next_value(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The value stored at a key. Something unparsable reads as a value nobody wrote, which
/// the checker reports (`garbage-read`).
fn decode_value(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(u64::MAX)
}

/// One transaction's micro-operations (reads unread): one to four steps, each a read, a
/// write, or (when there is room) a read of a key followed by a write of it.
fn plan(rng: &mut StdRng, shared: &RwShared) -> Vec<RwMicroOp> {
    let len = rng.random_range(1..=MAX_MICRO_OPS);
    let mut micro_ops = Vec::with_capacity(len);
    while micro_ops.len() < len {
        let key = rng.random_range(0..RW_KEYS);
        match rng.random_range(0..3) {
            0 => micro_ops.push(RwMicroOp::Read { key, value: None }),
            1 => micro_ops.push(RwMicroOp::Write {
                key,
                value: shared.next_value(),
            }),
            _ if micro_ops.len() + 2 <= len => {
                micro_ops.push(RwMicroOp::Read { key, value: None });
                micro_ops.push(RwMicroOp::Write {
                    key,
                    value: shared.next_value(),
                });
            }
            _ => micro_ops.push(RwMicroOp::Read { key, value: None }),
        }
    }
    micro_ops
}

/// Runs `micro_ops` in one transaction; returns them with the values read.
async fn run_txn(
    client: &Client,
    isolation: Isolation,
    micro_ops: &[RwMicroOp],
) -> Result<Vec<RwMicroOp>, Error> {
    let mut txn = client.begin(isolation).await?;
    let mut done = Vec::with_capacity(micro_ops.len());
    for micro_op in micro_ops {
        match *micro_op {
            RwMicroOp::Read { key, .. } => {
                let value = txn
                    .get(rw_key(key))
                    .await?
                    .map(|found| decode_value(&found.value));
                done.push(RwMicroOp::Read {
                    key,
                    value: Some(value),
                });
            }
            RwMicroOp::Write { key, value } => {
                txn.put(rw_key(key), value.to_string());
                done.push(*micro_op);
            }
        }
    }
    txn.commit().await?;
    Ok(done)
}

/// One rw-register client process.
pub async fn rw_register_client(
    process: u64,
    client: Client,
    shared: Arc<RwShared>,
    isolation: Isolation,
    recorder: Recorder,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.is_cancelled() {
        let micro_ops = plan(&mut rng, &shared);
        let op = recorder.invoke(
            Process::Client(process),
            F::RwTxn,
            OpValue::RwTxn(micro_ops.clone()),
        );
        let done = run_txn(&client, isolation, &micro_ops).await.map(OpValue::RwTxn);
        complete_txn(&recorder, &op, done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_and_garbage_is_visible() {
        assert_eq!(decode_value(b"42"), 42);
        assert_eq!(decode_value(b""), u64::MAX);
        assert_eq!(decode_value(b"4 2"), u64::MAX);
        assert_eq!(decode_value(&[0xff]), u64::MAX);
    }

    /// Plans hold one to four micro-ops, every write a fresh value, every read unread.
    #[test]
    fn plans_are_short_with_unique_writes() {
        let shared = RwShared::default();
        let mut rng = StdRng::seed_from_u64(5);
        let mut written = std::collections::HashSet::new();
        let mut read_then_written = 0;
        for _ in 0..1_000 {
            let micro_ops = plan(&mut rng, &shared);
            assert!((1..=MAX_MICRO_OPS).contains(&micro_ops.len()), "{micro_ops:?}");
            for pair in micro_ops.windows(2) {
                if let [RwMicroOp::Read { key: read, .. }, RwMicroOp::Write { key: wrote, .. }] = pair {
                    read_then_written += usize::from(read == wrote);
                }
            }
            for micro_op in micro_ops {
                match micro_op {
                    RwMicroOp::Write { value, .. } => assert!(written.insert(value)),
                    RwMicroOp::Read { value, key } => {
                        assert_eq!(value, None);
                        assert!(key < RW_KEYS);
                    }
                }
            }
        }
        assert!(read_then_written > 200, "{read_then_written}");
    }
}
