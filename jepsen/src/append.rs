//! The list-append workload: transactions of reads and appends over a few keys, run at one
//! isolation level and checked by [`crate::checker::elle`] against what that level forbids.
//!
//! Each key holds a list of numbers (space-separated). A transaction of one to four
//! micro-operations reads a key's list or appends a value (unique across the run) to it with
//! the transaction's atomic append (`Transaction::append`: the value lands on whatever is
//! committed at the commit), so appends to a key conflict only as the level decides (first
//! committer wins under repeatable read; under read committed both land). Completions: `ok` when the commit succeeded
//! (reads carry the lists they saw, the transaction's own appends included), `fail` when it
//! certainly did not happen (an abort, or a read that failed before anything was locked),
//! `info` when the commit's outcome is unknown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{Client, Error, Isolation, Transaction};
use tokio_util::sync::CancellationToken;

use crate::checker::elle;
use crate::history::{MicroOp, Op, OpType, OpValue, Process, Recorder, F};

/// Keys the transactions spread over.
pub const APPEND_KEYS: u64 = 8;

/// Most micro-operations in one transaction.
const MAX_MICRO_OPS: usize = 4;

/// The key of list `key`.
pub fn append_key(key: u64) -> Vec<u8> {
    format!("jepsen/append/{key}").into_bytes()
}

/// Values appended so far (each unique in the run).
#[derive(Debug, Default)]
pub struct AppendShared {
    next: AtomicU64,
}

impl AppendShared {
    fn next_value(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The checker's level for transactions run at `isolation`: repeatable read is snapshot
/// isolation; committed transactions are strict (their timestamps come from the oracle)
/// only under serializable.
pub fn checked_level(isolation: Isolation) -> elle::Isolation {
    match isolation {
        Isolation::ReadUncommitted => elle::Isolation::ReadUncommitted,
        Isolation::ReadCommitted => elle::Isolation::ReadCommitted,
        Isolation::RepeatableRead => elle::Isolation::RepeatableRead,
        Isolation::Serializable => elle::Isolation::StrictSerializable,
    }
}

/// The list stored at a key (absent: empty). Something unparsable reads as a value nobody
/// appended, which the checker reports.
fn decode_list(bytes: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(bytes)
        .split_whitespace()
        .map(|number| number.parse().unwrap_or(u64::MAX))
        .collect()
}

async fn read_list(txn: &Transaction, key: u64) -> Result<Vec<u64>, Error> {
    Ok(txn
        .get(append_key(key))
        .await?
        .map(|found| decode_list(&found.value))
        .unwrap_or_default())
}

/// Runs `mops` in one transaction; returns them with the lists read.
async fn run_txn(client: &Client, isolation: Isolation, mops: &[MicroOp]) -> Result<Vec<MicroOp>, Error> {
    let mut txn = client.begin(isolation).await?;
    let mut done = Vec::with_capacity(mops.len());
    for mop in mops {
        match *mop {
            MicroOp::Read { key, .. } => {
                let values = read_list(&txn, key).await?;
                done.push(MicroOp::Read {
                    key,
                    values: Some(values),
                });
            }
            MicroOp::Append { key, value } => {
                txn.append(append_key(key), format!(" {value}"));
                done.push(mop.clone());
            }
        }
    }
    txn.commit().await?;
    Ok(done)
}

/// How a transaction that ended in `err` completes in the history: `info` when its commit
/// may have happened (outcome unknown, deadline, transport), else `fail`. Before the commit
/// nothing is locked: only a commit can end unknown.
pub fn failed_txn_outcome(err: &Error) -> OpType {
    if err.is_outcome_unknown() || matches!(err, Error::DeadlineExceeded(_) | Error::Transport(_)) {
        OpType::Info
    } else {
        OpType::Fail
    }
}

/// Records how the transaction invoked as `op` ended: `ok` with what it read, or as
/// [`failed_txn_outcome`] classifies its error (with the invocation's value).
pub fn complete_txn(recorder: &Recorder, op: &Op, done: Result<OpValue, Error>) {
    let _ = match done {
        Ok(done) => recorder.complete(op, OpType::Ok, done, None),
        Err(err) => recorder.complete(
            op,
            failed_txn_outcome(&err),
            op.value.clone(),
            Some(err.to_string()),
        ),
    };
}

/// One list-append client process.
pub async fn append_client(
    process: u64,
    client: Client,
    shared: Arc<AppendShared>,
    isolation: Isolation,
    recorder: Recorder,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.is_cancelled() {
        let len = rng.random_range(1..=MAX_MICRO_OPS);
        let mops: Vec<MicroOp> = (0..len)
            .map(|_| {
                let key = rng.random_range(0..APPEND_KEYS);
                if rng.random_bool(0.5) {
                    MicroOp::Read { key, values: None }
                } else {
                    MicroOp::Append {
                        key,
                        value: shared.next_value(),
                    }
                }
            })
            .collect();
        let op = recorder.invoke(Process::Client(process), F::Txn, OpValue::Txn(mops.clone()));
        let done = run_txn(&client, isolation, &mops).await.map(OpValue::Txn);
        complete_txn(&recorder, &op, done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_decode_and_garbage_is_visible() {
        assert_eq!(decode_list(b" 3 1 2"), vec![3, 1, 2]);
        assert_eq!(decode_list(b""), Vec::<u64>::new());
        assert_eq!(decode_list(b"1 x"), vec![1, u64::MAX]);
    }
}
