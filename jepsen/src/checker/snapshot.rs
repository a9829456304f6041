//! The snapshot workload: multi-version snapshot reads across shards, checked against
//! "chains" of sequential writes.
//!
//! Model. One process writes a chain, one write at a time: write `n` (n = 1, 2, ...) stores
//! the value `n` in the chain's key `n % 4` ([`CHAIN_KEYS`]; the keys mostly live on
//! different shards). A write that fails certainly did not happen and the writer goes on
//! with `n + 1`; a write of unknown outcome may still happen later, after any later write,
//! so it ends its chain (the writer starts a new one). The writes of a chain that may have
//! happened are therefore every write that did not fail, in order, and only the chain's last
//! write can be of unknown outcome.
//!
//! A snapshot read takes a timestamp of the oracle, then reads all keys of a chain as of it.
//! Let `N` be the newest write it saw (its largest value; 0 when it saw none). Every write of
//! the chain before `N` that did not fail completed `ok` before `N` was invoked, so it
//! committed at a lower timestamp and is in the snapshot too. Every `ok` read must see:
//! - **values of the chain** (`unknown-value`): each value is a write of the chain to that
//!   key (not 0, not unparsable, not a write that was never invoked);
//! - **no failed write** (`failed-write-seen`): a write that failed certainly did not happen;
//! - **a prefix** (`not-a-prefix`): key `j` holds the newest write `n ≤ N` with
//!   `n % 4 == j` that did not fail (`nil` when there is none), which is what a consistent
//!   snapshot of one sequential writer looks like: a torn snapshot (one shard's part older
//!   than another's) breaks it;
//! - **real time, lower bound** (`stale-snapshot`): `N` is at least every write of the chain
//!   that completed `ok` before the read's timestamp was asked for (the timestamp is above
//!   its commit timestamp);
//! - **real time, upper bound** (`future-value`): `N` was invoked before the read's timestamp
//!   was returned (a write invoked later commits above it). A read takes its timestamp
//!   itself, or names one taken earlier by a `timestamp` op or an earlier read.
//! - **repeatable** (`unrepeatable-snapshot`): a reader reads the same snapshot again (its
//!   invocation names the timestamp) after the chain's writes went on; it must see exactly
//!   what the first read saw. A write committing at or below a timestamp after a read at it
//!   was served (a broken fence, or commit timestamps not from the oracle) changes it, and
//!   so does a replica that lost track of how old its history is (readers also read again
//!   snapshots seconds old, across restarts and snapshot installs). The lower real-time
//!   bound does not apply to the second read (its timestamp is older).
//!
//! The prefix check is skipped for a read that saw an unknown value or a failed write (it
//! would only restate them). Failed and indeterminate reads changed nothing and are not
//! checked. A history the model does not fit (a chain written by two processes, a write after
//! one of unknown outcome in the same chain, an `ok` read without values) is `unknown`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::checker::{Anomaly, Checker, Listing, Validity, Verdict};
use crate::history::{History, OpPair, OpType, OpValue, Process, F};
pub use crate::workload::CHAIN_KEYS;

/// Name of this checker in verdicts.
pub const CHECKER_NAME: &str = "snapshot";

/// Most anomalies listed in a verdict (the count is always in the notes).
const MAX_LISTED_ANOMALIES: usize = 64;

/// The snapshot checker as a [`Checker`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotChecker;

impl Checker for SnapshotChecker {
    fn name(&self) -> &'static str {
        CHECKER_NAME
    }

    fn check(&self, history: &History) -> Verdict {
        check(history)
    }
}

/// One chain write: history indexes of its invocation and completion, and its outcome.
#[derive(Debug, Clone, Copy)]
struct Write {
    process: Process,
    invoke: u64,
    /// `None` when the history ended while the write was outstanding.
    completion: Option<u64>,
    outcome: OpType,
}

impl Write {
    /// History indexes of the write's invocation and (when there is one) completion.
    fn ops(&self) -> Vec<u64> {
        std::iter::once(self.invoke).chain(self.completion).collect()
    }
}

/// The writes of one chain, by write number.
#[derive(Debug, Default)]
struct Chain {
    writes: BTreeMap<u64, Write>,
}

/// What a chain's reads are checked against, derived from its writes.
#[derive(Debug, Default)]
struct ChainIndex {
    /// Per key `j`, the numbers of the writes to it that did not fail, ascending.
    not_failed_by_key: Vec<Vec<u64>>,
    /// `(completion index, n)` of the `ok` writes, both ascending.
    ok_completions: Vec<(u64, u64)>,
    /// `(invocation index, n)` of every write, both ascending.
    invocations: Vec<(u64, u64)>,
}

/// One `ok` snapshot read.
#[derive(Debug, Clone)]
struct Read {
    chain: u64,
    invoke: u64,
    completion: u64,
    ts: u64,
    values: Vec<Option<u64>>,
    /// The invocation named the timestamp: a second read of a snapshot read before.
    again: bool,
}

/// The snapshot workload's ops of a history.
#[derive(Debug, Default)]
struct Extracted {
    /// The chains, by id.
    chains: BTreeMap<u64, Chain>,
    /// The `ok` reads, in invocation order.
    reads: Vec<Read>,
    /// Reads that failed or ended unknown.
    not_ok_reads: usize,
    /// Where each timestamp a snapshot read used was taken: the invocation and completion
    /// of the op that took it (a fresh read, or a `timestamp` op).
    taken: HashMap<u64, (u64, u64)>,
}

impl fmt::Display for Read {
    /// `read <invocation index> of chain <chain> at ts <ts> saw [v0 v1 v2 v3]`.
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            out,
            "read {} of chain {} at ts {} saw [",
            self.invoke, self.chain, self.ts
        )?;
        for (position, value) in self.values.iter().enumerate() {
            if position > 0 {
                out.write_str(" ")?;
            }
            out.write_str(&show(*value))?;
        }
        out.write_str("]")
    }
}

/// A value as it prints in the history (`nil` for `None`).
fn show(value: Option<u64>) -> String {
    value.map_or("nil".to_string(), |value| value.to_string())
}

/// Checks the `chain-write` and `snapshot-read` ops of `history` (other ops are ignored).
pub fn check(history: &History) -> Verdict {
    check_with(history, Listing::Sample)
}

/// [`check`], listing as many anomalies as `listing` says.
pub fn check_with(history: &History, listing: Listing) -> Verdict {
    let max_listed = listing.limit(MAX_LISTED_ANOMALIES);
    let pairs = match history.pairs() {
        Ok(pairs) => pairs,
        Err(err) => return Verdict::unknown(CHECKER_NAME, format!("malformed history: {err}")),
    };
    let Extracted {
        chains,
        reads,
        not_ok_reads,
        taken,
    } = match extract(&pairs) {
        Ok(extracted) => extracted,
        Err(reason) => return Verdict::unknown(CHECKER_NAME, reason),
    };
    let mut indexes: HashMap<u64, ChainIndex> = HashMap::with_capacity(chains.len());
    for (id, chain) in &chains {
        match index_chain(*id, chain) {
            Ok(index) => indexes.insert(*id, index),
            Err(reason) => return Verdict::unknown(CHECKER_NAME, reason),
        };
    }

    let mut anomalies = Vec::new();
    let mut count = 0usize;
    let mut report = |anomaly: Anomaly| {
        count += 1;
        if anomalies.len() < max_listed {
            anomalies.push(anomaly);
        }
    };
    let empty_chain = Chain::default();
    let empty_index = ChainIndex::default();
    let mut saw_unknown_outcome = 0usize;
    let first_reads: HashMap<(u64, u64), &Read> = reads
        .iter()
        .filter(|read| !read.again)
        .map(|read| ((read.chain, read.ts), read))
        .collect();
    for read in &reads {
        let chain = chains.get(&read.chain).unwrap_or(&empty_chain);
        let index = indexes.get(&read.chain).unwrap_or(&empty_index);
        let read_ops = [read.invoke, read.completion];

        // Values: each a write of the chain to that key, none failed. N is the newest one.
        let mut newest = 0u64;
        let mut value_anomalies = false;
        for (j, value) in (0u64..).zip(&read.values) {
            let Some(n) = *value else {
                continue;
            };
            let write = chain.writes.get(&n).filter(|_| n % CHAIN_KEYS == j);
            let Some(write) = write else {
                value_anomalies = true;
                report(Anomaly {
                    kind: "unknown-value".to_string(),
                    key: None,
                    description: format!(
                        "{read}: key {j} holds {n}, which is no write of the chain to key {j}"
                    ),
                    ops: read_ops.to_vec(),
                });
                continue;
            };
            newest = newest.max(n);
            match write.outcome {
                OpType::Fail => {
                    value_anomalies = true;
                    report(Anomaly {
                        kind: "failed-write-seen".to_string(),
                        key: None,
                        description: format!(
                            "{read}: key {j} holds {n}, whose write (op {}) failed",
                            write.invoke
                        ),
                        ops: [&read_ops[..], &write.ops()].concat(),
                    });
                }
                OpType::Info | OpType::Invoke => saw_unknown_outcome += 1,
                OpType::Ok => {}
            }
        }

        // Prefix: key j holds the newest write n <= N to it that did not fail.
        if !value_anomalies {
            for (j, seen) in (0u64..).zip(&read.values) {
                let to_key = usize::try_from(j)
                    .ok()
                    .and_then(|j| index.not_failed_by_key.get(j))
                    .map_or(&[][..], Vec::as_slice);
                let below = to_key.partition_point(|n| *n <= newest);
                let expected = below
                    .checked_sub(1)
                    .and_then(|position| to_key.get(position))
                    .copied();
                if *seen == expected {
                    continue;
                }
                let mut involved: Vec<u64> = [*seen, expected, Some(newest)].into_iter().flatten().collect();
                involved.sort_unstable();
                involved.dedup();
                let mut ops = read_ops.to_vec();
                for n in involved {
                    if let Some(write) = chain.writes.get(&n) {
                        ops.extend(write.ops());
                    }
                }
                report(Anomaly {
                    kind: "not-a-prefix".to_string(),
                    key: None,
                    description: format!(
                        "{read}: key {j} holds {}, but the newest write to it up to {newest} that did not fail is {}",
                        show(*seen),
                        show(expected)
                    ),
                    ops,
                });
            }
        }

        // The same snapshot read again is the same.
        if read.again {
            if let Some(first) = first_reads.get(&(read.chain, read.ts)) {
                if first.values != read.values {
                    report(Anomaly {
                        kind: "unrepeatable-snapshot".to_string(),
                        key: None,
                        description: format!("{read}, but {first}"),
                        ops: vec![first.invoke, first.completion, read.invoke, read.completion],
                    });
                }
            }
        }
        // Real time, judged by when the read's timestamp was taken (a read naming its
        // timestamp took it in an earlier op; without that op, only the read's own span is
        // known, which bounds N from above alone): N at least every write that completed ok
        // before the timestamp was asked for...
        let (ts_invoke, ts_completion) = match taken.get(&read.ts) {
            Some(&span) => span,
            None if read.again => (0, read.completion),
            None => (read.invoke, read.completion),
        };
        let completed = index
            .ok_completions
            .partition_point(|(completion, _)| *completion < ts_invoke);
        if let Some(&(_, floor)) = completed
            .checked_sub(1)
            .and_then(|last| index.ok_completions.get(last))
        {
            if newest < floor {
                let write = chain.writes.get(&floor).map(Write::ops).unwrap_or_default();
                report(Anomaly {
                    kind: "stale-snapshot".to_string(),
                    key: None,
                    description: format!(
                        "{read}: newest write {newest}, but write {floor} completed ok before the timestamp was asked for (op {ts_invoke})"
                    ),
                    ops: [&write[..], &read_ops[..]].concat(),
                });
            }
        }
        // ...and invoked before the timestamp was returned.
        let invoked = index
            .invocations
            .partition_point(|(invoke, _)| *invoke < ts_completion);
        let ceiling = invoked
            .checked_sub(1)
            .and_then(|last| index.invocations.get(last))
            .map_or(0, |(_, n)| *n);
        if newest > ceiling {
            let write = chain.writes.get(&newest).map(Write::ops).unwrap_or_default();
            report(Anomaly {
                kind: "future-value".to_string(),
                key: None,
                description: format!(
                    "{read}: newest write {newest}, but only writes up to {} were invoked before the timestamp was returned (op {ts_completion})",
                    show(Some(ceiling).filter(|n| *n > 0))
                ),
                ops: [&read_ops[..], &write[..]].concat(),
            });
        }
    }

    let writes: Vec<&Write> = chains.values().flat_map(|chain| chain.writes.values()).collect();
    let outcomes = |outcome: OpType| writes.iter().filter(|write| write.outcome == outcome).count();
    let mut notes = vec![
        format!(
            "{} snapshot reads checked; {not_ok_reads} snapshot reads failed or ended unknown",
            reads.len()
        ),
        format!(
            "{} chains, {} writes: {} ok, {} failed, {} unknown",
            chains.len(),
            writes.len(),
            outcomes(OpType::Ok),
            outcomes(OpType::Fail),
            writes.len() - outcomes(OpType::Ok) - outcomes(OpType::Fail)
        ),
        format!("{saw_unknown_outcome} values seen were written by writes of unknown outcome"),
    ];
    if count > anomalies.len() {
        notes.push(format!(
            "{count} anomalies, the first {} listed (--all-violations lists every one)",
            anomalies.len()
        ));
    }
    Verdict {
        validity: if count == 0 {
            Validity::Valid
        } else {
            Validity::Invalid
        },
        checker: CHECKER_NAME.to_string(),
        ops_checked: reads.len() + writes.len(),
        anomalies,
        notes,
    }
}

/// The chains and reads of `pairs`; an error for ops the model does not fit.
fn extract(pairs: &[OpPair<'_>]) -> Result<Extracted, String> {
    let mut extracted = Extracted::default();
    for pair in pairs {
        match pair.f() {
            F::ChainWrite => {
                let OpValue::ChainWrite { chain, n } = pair.invoke.value else {
                    return Err(format!(
                        "op {}: a chain write without [chain n]",
                        pair.invoke.index
                    ));
                };
                let write = Write {
                    process: pair.process(),
                    invoke: pair.invoke.index,
                    completion: pair.completion.map(|completion| completion.index),
                    outcome: pair.outcome(),
                };
                let writes = &mut extracted.chains.entry(chain).or_default().writes;
                if let Some(earlier) = writes.insert(n, write) {
                    return Err(format!(
                        "ops {} and {}: write {n} of chain {chain} invoked twice",
                        earlier.invoke, write.invoke
                    ));
                }
            }
            F::SnapshotRead => {
                let Some(completion) = pair
                    .completion
                    .filter(|completion| completion.op_type == OpType::Ok)
                else {
                    extracted.not_ok_reads += 1;
                    continue;
                };
                let OpValue::SnapshotRead {
                    chain,
                    ts: Some(ts),
                    values: Some(values),
                } = &completion.value
                else {
                    return Err(format!(
                        "op {}: an ok snapshot read without [chain ts values]",
                        completion.index
                    ));
                };
                if values.len() as u64 != CHAIN_KEYS {
                    return Err(format!(
                        "op {}: a snapshot read of {} values, not {CHAIN_KEYS}",
                        completion.index,
                        values.len()
                    ));
                }
                let again = matches!(pair.invoke.value, OpValue::SnapshotRead { ts: Some(_), .. });
                if !again {
                    extracted.taken.insert(*ts, (pair.invoke.index, completion.index));
                }
                extracted.reads.push(Read {
                    chain: *chain,
                    invoke: pair.invoke.index,
                    completion: completion.index,
                    ts: *ts,
                    values: values.clone(),
                    again,
                });
            }
            F::Timestamp => {
                if let Some(completion) = pair
                    .completion
                    .filter(|completion| completion.op_type == OpType::Ok)
                {
                    if let OpValue::Timestamp(Some(ts)) = completion.value {
                        extracted.taken.insert(ts, (pair.invoke.index, completion.index));
                    }
                }
            }
            F::Read
            | F::Write
            | F::Cas
            | F::Add
            | F::ReadAll
            | F::Nemesis(_)
            | F::Txn
            | F::Transfer
            | F::BankRead
            | F::RwTxn
            | F::StaleRead
            | F::BatchWrite
            | F::BatchRead
            | F::ScanWrite
            | F::Scan
            | F::RangeFill
            | F::DeleteRange
            | F::RangeRead
            | F::WatchPut
            | F::WatchDelete
            | F::Watch
            | F::TtlPut
            | F::TtlExpire
            | F::TtlRead
            | F::TtlReadAt
            | F::LockAcquire
            | F::GuardedWrite
            | F::LockRelease => {}
        }
    }
    Ok(extracted)
}

/// Indexes a chain's writes for the read checks, after checking that one process wrote them
/// one after another in ascending order and that only the last can be of unknown outcome.
fn index_chain(id: u64, chain: &Chain) -> Result<ChainIndex, String> {
    let mut in_order: Vec<(u64, &Write)> = chain.writes.iter().map(|(n, write)| (*n, write)).collect();
    in_order.sort_by_key(|(_, write)| write.invoke);
    for pair in in_order.windows(2) {
        let [(earlier_n, earlier), (n, write)] = pair else {
            continue;
        };
        if write.process != earlier.process {
            return Err(format!(
                "chain {id} written by {:?} (op {}) and {:?} (op {})",
                earlier.process, earlier.invoke, write.process, write.invoke
            ));
        }
        if n <= earlier_n {
            return Err(format!(
                "chain {id}: write {n} (op {}) invoked after write {earlier_n} (op {})",
                write.invoke, earlier.invoke
            ));
        }
        if !matches!(earlier.outcome, OpType::Ok | OpType::Fail) {
            return Err(format!(
                "chain {id}: write {n} (op {}) follows write {earlier_n} (op {}) of unknown outcome",
                write.invoke, earlier.invoke
            ));
        }
    }
    let mut index = ChainIndex {
        not_failed_by_key: vec![Vec::new(); CHAIN_KEYS as usize],
        ..ChainIndex::default()
    };
    for (n, write) in &chain.writes {
        index.invocations.push((write.invoke, *n));
        if write.outcome != OpType::Fail {
            if let Some(to_key) = index.not_failed_by_key.get_mut((n % CHAIN_KEYS) as usize) {
                to_key.push(*n);
            }
        }
        if let (OpType::Ok, Some(completion)) = (write.outcome, write.completion) {
            index.ok_completions.push((completion, *n));
        }
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::Builder;

    fn kinds(verdict: &Verdict) -> Vec<&str> {
        verdict.anomalies.iter().map(|a| a.kind.as_str()).collect()
    }

    /// Reads concurrent with a write may or may not see it; a failed write is skipped.
    #[test]
    fn consistent_snapshots_are_valid() {
        let mut history = Builder::default();
        history
            .snapshot_read(1, 0)
            .chain_write(0, 0, 1)
            .ok(0)
            .ok_snapshot_read(1, 0, 5, &[None, None, None, None]) // concurrent with write 1
            .chain_write(0, 0, 2)
            .ok(0)
            .chain_write(0, 0, 3)
            .snapshot_read(1, 0)
            .snapshot_read(2, 0)
            .ok_snapshot_read(1, 0, 7, &[None, Some(1), Some(2), None])
            .ok_snapshot_read(2, 0, 8, &[None, Some(1), Some(2), Some(3)])
            .ok(0)
            .chain_write(0, 0, 4)
            .ok(0)
            .chain_write(0, 0, 5)
            .ok(0)
            .chain_write(0, 0, 6)
            .fail(0)
            .chain_write(0, 0, 7)
            .ok(0)
            .snapshot_read(1, 0)
            .ok_snapshot_read(1, 0, 9, &[Some(4), Some(5), Some(2), Some(7)])
            .snapshot_read(2, 1) // a chain nobody wrote
            .ok_snapshot_read(2, 1, 10, &[None, None, None, None])
            .snapshot_read(1, 0)
            .fail(1);
        let verdict = check(&history.build());
        assert_eq!(verdict.validity, Validity::Valid, "{verdict:?}");
        assert_eq!(verdict.ops_checked, 5 + 7);
    }

    /// A snapshot read again after later writes sees what it saw the first time; the second
    /// read is not held to the writes that completed after its timestamp was taken.
    #[test]
    fn a_snapshot_read_again_must_not_change() {
        let mut history = Builder::default();
        history
            .chain_write(0, 0, 1)
            .ok(0)
            .snapshot_read(1, 0)
            .ok_snapshot_read(1, 0, 5, &[None, Some(1), None, None])
            .chain_write(0, 0, 2)
            .ok(0)
            .snapshot_read_again(1, 0, 5)
            .ok_snapshot_read(1, 0, 5, &[None, Some(1), None, None]);
        let verdict = check(&history.build());
        assert_eq!(verdict.validity, Validity::Valid, "{verdict:?}");
        history
            .snapshot_read_again(1, 0, 5)
            .ok_snapshot_read(1, 0, 5, &[None, Some(1), Some(2), None]);
        let verdict = check(&history.build());
        assert_eq!(verdict.validity, Validity::Invalid);
        // Write 2 was invoked after the timestamp was returned: also a future value.
        assert_eq!(kinds(&verdict), vec!["unrepeatable-snapshot", "future-value"]);
        assert_eq!(verdict.anomalies[0].ops, vec![2, 3, 8, 9]);
    }

    /// Write 2 seen without write 1 on its key, which completed before 2 was invoked: torn.
    #[test]
    fn a_later_write_without_an_earlier_one_is_not_a_prefix() {
        let mut history = Builder::default();
        history
            .chain_write(0, 3, 1)
            .ok(0)
            .chain_write(0, 3, 2)
            .ok(0)
            .snapshot_read(1, 3)
            .ok_snapshot_read(1, 3, 5, &[None, None, Some(2), None]);
        let verdict = check(&history.build());
        assert_eq!(verdict.validity, Validity::Invalid);
        assert_eq!(kinds(&verdict), vec!["not-a-prefix"]);
        assert_eq!(verdict.anomalies[0].ops, vec![4, 5, 0, 1, 2, 3]);
        assert_eq!(
            verdict.anomalies[0].description,
            "read 4 of chain 3 at ts 5 saw [nil nil 2 nil]: key 1 holds nil, but the newest write \
             to it up to 2 that did not fail is 1"
        );
    }

    /// A snapshot without a write that completed before the read was invoked is stale.
    #[test]
    fn missing_a_completed_write_is_a_stale_snapshot() {
        let mut history = Builder::default();
        history
            .chain_write(0, 0, 1)
            .ok(0)
            .chain_write(0, 0, 2)
            .ok(0)
            .snapshot_read(1, 0)
            .ok_snapshot_read(1, 0, 5, &[None, Some(1), None, None]);
        let verdict = check(&history.build());
        assert_eq!(verdict.validity, Validity::Invalid);
        assert_eq!(kinds(&verdict), vec!["stale-snapshot"]);
        assert_eq!(verdict.anomalies[0].ops, vec![2, 3, 4, 5]);
    }

    /// A write that failed certainly did not happen: seeing it is an anomaly.
    #[test]
    fn a_failed_write_seen_is_an_anomaly() {
        let mut history = Builder::default();
        history
            .chain_write(0, 0, 1)
            .ok(0)
            .chain_write(0, 0, 2)
            .fail(0)
            .chain_write(0, 0, 3)
            .ok(0)
            .snapshot_read(1, 0)
            .ok_snapshot_read(1, 0, 5, &[None, Some(1), Some(2), Some(3)]);
        let verdict = check(&history.build());
        assert_eq!(verdict.validity, Validity::Invalid);
        assert_eq!(kinds(&verdict), vec!["failed-write-seen"]);
    }

    /// The last write of a chain ended by an unknown outcome may be seen or not, even long
    /// after; the writer's next chain is independent.
    #[test]
    fn the_unknown_last_write_of_a_chain_may_or_may_not_be_seen() {
        let mut history = Builder::default();
        history
            .chain_write(0, 0, 1)
            .ok(0)
            .chain_write(0, 0, 2)
            .info(0)
            .chain_write(0, 1, 1)
            .ok(0)
            .snapshot_read(1, 0)
            .ok_snapshot_read(1, 0, 5, &[None, Some(1), None, None])
            .snapshot_read(1, 0)
            .ok_snapshot_read(1, 0, 6, &[None, Some(1), Some(2), None])
            .snapshot_read(1, 1)
            .ok_snapshot_read(1, 1, 7, &[None, Some(1), None, None])
            .chain_write(0, 1, 2) // still outstanding at the end
            .snapshot_read(1, 1)
            .ok_snapshot_read(1, 1, 8, &[None, Some(1), Some(2), None]);
        let verdict = check(&history.build());
        assert_eq!(verdict.validity, Validity::Valid, "{verdict:?}");
        assert!(
            verdict.notes.iter().any(|note| note.starts_with("2 values seen")),
            "{:?}",
            verdict.notes
        );
    }

    /// A value whose write was invoked only after the read completed came from the future;
    /// values nobody wrote, or written to another key, are unknown.
    #[test]
    fn future_and_unknown_values_are_anomalies() {
        let mut history = Builder::default();
        history
            .snapshot_read(1, 0)
            .ok_snapshot_read(1, 0, 5, &[None, Some(1), None, None])
            .chain_write(0, 0, 1)
            .ok(0)
            .snapshot_read(1, 0)
            .ok_snapshot_read(1, 0, 6, &[Some(1), None, Some(9), None]);
        let verdict = check(&history.build());
        assert_eq!(verdict.validity, Validity::Invalid);
        assert_eq!(
            kinds(&verdict),
            vec!["future-value", "unknown-value", "unknown-value", "stale-snapshot"]
        );
    }

    /// A write after one of unknown outcome in the same chain does not fit the model.
    #[test]
    fn a_write_after_an_unknown_one_in_the_same_chain_is_unknown() {
        let mut history = Builder::default();
        history.chain_write(0, 0, 1).info(0).chain_write(0, 0, 2).ok(0);
        let verdict = check(&history.build());
        assert_eq!(verdict.validity, Validity::Unknown, "{verdict:?}");
    }
}
