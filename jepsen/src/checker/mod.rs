//! History checkers and the verdict they produce, in Jepsen's vocabulary.
//!
//! - [`linearizable`]: per-key registers (read / write / cas), checked for linearizability
//!   with the Wing–Gong–Lowe search, one key at a time (P-compositionality).
//! - [`set`]: unique adds and final reads: lost, duplicated and unexpected elements.
//! - [`timestamps`]: timestamps of the oracle: unique, and in real-time order.
//! - [`snapshot`]: snapshot reads of chains of sequential writes across shards: each read a
//!   consistent prefix of its chain, between the writes completed before it and those
//!   invoked before it completed.
//! - [`elle`]: list-append transactions, checked like Elle against an isolation level:
//!   version orders from the reads, Adya's dependency graph, its cycles classified
//!   (`G0` ... `G2-item`, real-time variants), aborted, intermediate and lost updates; and
//!   rw-register transactions ([`elle::rw_register`]), their version orders inferred from
//!   what the level guarantees.
//! - [`bank`]: transfers between accounts: every snapshot read sums to the total, with no
//!   negative balance.
//! - [`batch`]: batches over groups of keys, read together: atomic per shard, never a
//!   value nobody wrote, never older than a batch settled before the read.
//! - [`scan`]: paged scans of keys added and deleted concurrently: in order, no duplicate,
//!   no key nobody wrote, none skipped that was there, unchanged, for the whole scan.
//! - [`delete_range`]: ranges filled and deleted: nothing written before an acknowledged
//!   delete-range is read after it.
//! - [`lock`]: writes guarded by locks' fencing tokens: accepted in token order; tokens
//!   unique and increasing; overlapping holders reported (not promised under pauses).
//! - [`watch`]: watch streams resumed across faults: every acknowledged put and delete
//!   delivered exactly once, per key in commit order, nothing nobody wrote.
//! - [`ttl`]: keys with a time to live: no read returns a value past its expiry, and no
//!   key comes back after it was seen expired.
//! - [`stale`]: reads of any replica: old values allowed, never one nobody wrote.
//! - `mutations` (crate-private): the writes a key (or group, or range) saw, and which one
//!   was certainly in effect over an interval, for the three checkers above.
//!
//! How many violations a verdict lists is a [`Listing`]: the first few of each kind (per
//! key for linearizability) by default, with a note counting the rest; [`Listing::All`]
//! lists every one found (`--all-violations`).
//!
//! Every checker returns a [`Verdict`]; [`combine`] merges the verdicts of several checkers
//! (or several keys) into one. A verdict serializes to JSON as
//! `{"valid": true|false|"unknown", "checker": ..., "ops_checked": ..., "anomalies": [...],
//! "notes": [...]}`.

pub mod bank;
pub mod batch;
pub mod delete_range;
pub mod elle;
pub mod linearizable;
pub mod lock;
pub(crate) mod mutations;
pub mod scan;
pub mod set;
pub mod snapshot;
pub mod stale;
pub mod timestamps;
pub mod ttl;
pub mod watch;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::history::History;

/// Whether a history satisfies a checker's consistency model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Validity {
    /// The history satisfies the model. Serialized as `true`.
    Valid,
    /// The history violates the model; the verdict lists the anomalies. Serialized as `false`.
    Invalid,
    /// The checker could not decide (search bound reached, missing final read, malformed
    /// history). Serialized as `"unknown"`.
    Unknown,
}

impl Validity {
    /// The validity of two verdicts taken together: any `Invalid` wins, then any `Unknown`.
    pub fn and(self, other: Validity) -> Validity {
        match (self, other) {
            (Validity::Invalid, _) | (_, Validity::Invalid) => Validity::Invalid,
            (Validity::Unknown, _) | (_, Validity::Unknown) => Validity::Unknown,
            (Validity::Valid, Validity::Valid) => Validity::Valid,
        }
    }
}

impl Serialize for Validity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Validity::Valid => serializer.serialize_bool(true),
            Validity::Invalid => serializer.serialize_bool(false),
            Validity::Unknown => serializer.serialize_str("unknown"),
        }
    }
}

impl<'de> Deserialize<'de> for Validity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Bool(bool),
            Text(String),
        }
        match Repr::deserialize(deserializer)? {
            Repr::Bool(true) => Ok(Validity::Valid),
            Repr::Bool(false) => Ok(Validity::Invalid),
            Repr::Text(text) if text == "unknown" => Ok(Validity::Unknown),
            Repr::Text(text) => Err(serde::de::Error::custom(format!(
                "validity must be true, false or \"unknown\", found {text:?}"
            ))),
        }
    }
}

/// One violation a checker found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Kind of anomaly: `nonlinearizable`, `lost`, `duplicated`, `unexpected`, ...
    pub kind: String,
    /// The register or set key involved, when the anomaly concerns one key.
    pub key: Option<u64>,
    /// Human-readable explanation.
    pub description: String,
    /// History indexes (invocations and completions) of the ops involved.
    pub ops: Vec<u64>,
}

/// The result of checking a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the history satisfies the model (JSON field `valid`).
    #[serde(rename = "valid")]
    pub validity: Validity,
    /// Which checker (or `+`-joined checkers) produced the verdict.
    pub checker: String,
    /// Number of operations (invocation + completion pairs) the checker examined.
    pub ops_checked: usize,
    /// What was wrong; empty when valid.
    pub anomalies: Vec<Anomaly>,
    /// Context: what was skipped, why the result is unknown, statistics.
    pub notes: Vec<String>,
}

impl Verdict {
    /// An `Unknown` verdict with one note, for histories a checker cannot examine.
    pub fn unknown(checker: &str, note: String) -> Verdict {
        Verdict {
            validity: Validity::Unknown,
            checker: checker.to_string(),
            ops_checked: 0,
            anomalies: Vec::new(),
            notes: vec![note],
        }
    }
}

/// How many of the violations it finds a checker lists in its verdict (it counts them all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Listing {
    /// The first few of each kind (per key for linearizability), and a note counting the
    /// rest: a report a person reads. The default.
    #[default]
    Sample,
    /// Every violation found (`--all-violations`).
    All,
}

impl Listing {
    /// The most items to list where a sample lists `sample`.
    pub fn limit(self, sample: usize) -> usize {
        match self {
            Listing::Sample => sample,
            Listing::All => usize::MAX,
        }
    }
}

/// Anomalies of one checker, counted by kind and listed up to the [`Listing`]'s limit per
/// kind.
#[derive(Debug)]
pub(crate) struct AnomalyList {
    limit_per_kind: usize,
    listed: Vec<Anomaly>,
    counts: BTreeMap<String, usize>,
}

impl AnomalyList {
    /// Lists up to `listing.limit(sample_per_kind)` anomalies of each kind.
    pub(crate) fn new(listing: Listing, sample_per_kind: usize) -> AnomalyList {
        AnomalyList {
            limit_per_kind: listing.limit(sample_per_kind),
            listed: Vec::new(),
            counts: BTreeMap::new(),
        }
    }

    pub(crate) fn push(&mut self, anomaly: Anomaly) {
        let count = self.counts.entry(anomaly.kind.clone()).or_insert(0);
        *count += 1;
        if *count <= self.limit_per_kind {
            self.listed.push(anomaly);
        }
    }

    /// Whether none was found.
    pub(crate) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The listed anomalies, and a note for each kind with more found than listed.
    pub(crate) fn finish(self) -> (Vec<Anomaly>, Vec<String>) {
        let notes = self
            .counts
            .iter()
            .filter(|(_, count)| **count > self.limit_per_kind)
            .map(|(kind, count)| {
                format!(
                    "{kind}: {count} found, the first {} listed (--all-violations lists every one)",
                    self.limit_per_kind
                )
            })
            .collect();
        (self.listed, notes)
    }
}

/// A checker of one consistency model.
pub trait Checker {
    /// Name used in verdicts.
    fn name(&self) -> &'static str;
    /// Checks `history` (ops this checker does not understand are ignored).
    fn check(&self, history: &History) -> Verdict;
}

/// Merges verdicts: `Invalid` if any is invalid, else `Unknown` if any is unknown, else
/// `Valid` (also for no verdicts). Checker names are joined with `+` (duplicates once),
/// op counts added, anomalies and notes concatenated (notes prefixed with their checker).
pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
    let mut combined = Verdict {
        validity: Validity::Valid,
        checker: String::new(),
        ops_checked: 0,
        anomalies: Vec::new(),
        notes: Vec::new(),
    };
    let mut names: Vec<String> = Vec::new();
    for verdict in verdicts {
        combined.validity = combined.validity.and(verdict.validity);
        combined.ops_checked += verdict.ops_checked;
        combined.anomalies.extend(verdict.anomalies);
        combined.notes.extend(
            verdict
                .notes
                .into_iter()
                .map(|note| format!("{}: {note}", verdict.checker)),
        );
        if !names.contains(&verdict.checker) {
            names.push(verdict.checker);
        }
    }
    combined.checker = names.join("+");
    combined
}

/// Hand-written histories for the checkers' unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::collections::HashMap;

    use crate::history::{History, MicroOp, Op, OpType, OpValue, Process, RwMicroOp, F};

    /// `[:w key value]`.
    pub(crate) fn w(key: u64, value: u64) -> RwMicroOp {
        RwMicroOp::Write { key, value }
    }

    /// `[:r key value]`: a register read of `key` that returned `value` (`None`: `nil`; sent
    /// as `[:r key nil]`).
    pub(crate) fn r(key: u64, value: Option<u64>) -> RwMicroOp {
        RwMicroOp::Read {
            key,
            value: Some(value),
        }
    }

    /// `[:append key value]`.
    pub(crate) fn append(key: u64, value: u64) -> MicroOp {
        MicroOp::Append { key, value }
    }

    /// `[:r key values]`: a read of `key` that returned `values` (sent as `[:r key nil]`).
    pub(crate) fn read(key: u64, values: &[u64]) -> MicroOp {
        MicroOp::Read {
            key,
            values: Some(values.to_vec()),
        }
    }

    /// Builds a history event by event; each event gets the next index (used as time).
    #[derive(Default)]
    pub(crate) struct Builder {
        ops: Vec<Op>,
        outstanding: HashMap<u64, (F, OpValue)>,
        /// The micro-ops (with read results) an outstanding transaction completes `ok` with.
        txn_results: HashMap<u64, Vec<MicroOp>>,
        /// The same for rw-register transactions.
        rw_txn_results: HashMap<u64, Vec<RwMicroOp>>,
    }

    impl Builder {
        fn push(&mut self, process: u64, op_type: OpType, f: F, value: OpValue) -> &mut Self {
            let index = self.ops.len() as u64;
            self.ops.push(Op {
                index,
                time_ns: index * 1_000,
                process: Process::Client(process),
                op_type,
                f,
                value,
                error: None,
            });
            self
        }

        pub(crate) fn invoke(&mut self, process: u64, f: F, value: OpValue) -> &mut Self {
            let previous = self.outstanding.insert(process, (f.clone(), value.clone()));
            assert!(
                previous.is_none(),
                "fixture bug: process {process} already has an op outstanding"
            );
            self.push(process, OpType::Invoke, f, value)
        }

        pub(crate) fn finish(&mut self, process: u64, op_type: OpType, value: Option<OpValue>) -> &mut Self {
            self.txn_results.remove(&process);
            self.rw_txn_results.remove(&process);
            let (f, invoke_value) = self
                .outstanding
                .remove(&process)
                .expect("fixture bug: no outstanding op");
            self.push(process, op_type, f, value.unwrap_or(invoke_value))
        }

        /// `process` invokes a write of `value` to `key`.
        pub(crate) fn write(&mut self, process: u64, key: u64, value: u64) -> &mut Self {
            self.invoke(
                process,
                F::Write,
                OpValue::Register {
                    key,
                    value: Some(value),
                },
            )
        }

        /// `process` invokes a read of `key`.
        pub(crate) fn read(&mut self, process: u64, key: u64) -> &mut Self {
            self.invoke(process, F::Read, OpValue::Register { key, value: None })
        }

        /// `process` invokes a compare-and-set of `key` from `from` to `to`.
        pub(crate) fn cas(&mut self, process: u64, key: u64, from: u64, to: u64) -> &mut Self {
            self.invoke(process, F::Cas, OpValue::Cas { key, from, to })
        }

        /// `process` invokes a set add of `element`.
        pub(crate) fn add(&mut self, process: u64, element: u64) -> &mut Self {
            self.invoke(process, F::Add, OpValue::Add(element))
        }

        /// `process` invokes a final set read.
        pub(crate) fn read_all(&mut self, process: u64) -> &mut Self {
            self.invoke(process, F::ReadAll, OpValue::ReadAll(None))
        }

        /// `process` invokes taking a timestamp.
        pub(crate) fn timestamp(&mut self, process: u64) -> &mut Self {
            self.invoke(process, F::Timestamp, OpValue::Timestamp(None))
        }

        /// `process`'s outstanding timestamp op completes `ok`, given `timestamp`.
        pub(crate) fn ok_timestamp(&mut self, process: u64, timestamp: u64) -> &mut Self {
            self.finish(process, OpType::Ok, Some(OpValue::Timestamp(Some(timestamp))))
        }

        /// `process` invokes write `n` of snapshot chain `chain`.
        pub(crate) fn chain_write(&mut self, process: u64, chain: u64, n: u64) -> &mut Self {
            self.invoke(process, F::ChainWrite, OpValue::ChainWrite { chain, n })
        }

        /// `process` invokes a snapshot read of chain `chain`.
        pub(crate) fn snapshot_read_again(&mut self, process: u64, chain: u64, ts: u64) -> &mut Self {
            self.invoke(
                process,
                F::SnapshotRead,
                OpValue::SnapshotRead {
                    chain,
                    ts: Some(ts),
                    values: None,
                },
            )
        }

        /// `process` invokes a snapshot read of `chain` (taking a fresh timestamp).
        pub(crate) fn snapshot_read(&mut self, process: u64, chain: u64) -> &mut Self {
            self.invoke(
                process,
                F::SnapshotRead,
                OpValue::SnapshotRead {
                    chain,
                    ts: None,
                    values: None,
                },
            )
        }

        /// `process`'s outstanding snapshot read of `chain` completes `ok`: at `ts` the keys
        /// held `values`.
        pub(crate) fn ok_snapshot_read(
            &mut self,
            process: u64,
            chain: u64,
            ts: u64,
            values: &[Option<u64>],
        ) -> &mut Self {
            self.finish(
                process,
                OpType::Ok,
                Some(OpValue::SnapshotRead {
                    chain,
                    ts: Some(ts),
                    values: Some(values.to_vec()),
                }),
            )
        }

        /// `process` invokes the transaction `micro_ops` (its reads sent as `nil`); the read
        /// results given here are what [`Builder::ok_txn`] completes it with.
        pub(crate) fn txn(&mut self, process: u64, micro_ops: &[MicroOp]) -> &mut Self {
            let sent = micro_ops
                .iter()
                .map(|micro_op| match micro_op {
                    MicroOp::Read { key, .. } => MicroOp::Read {
                        key: *key,
                        values: None,
                    },
                    append @ MicroOp::Append { .. } => append.clone(),
                })
                .collect();
            self.txn_results.insert(process, micro_ops.to_vec());
            self.invoke(process, F::Txn, OpValue::Txn(sent))
        }

        /// `process`'s outstanding transaction completes `ok` with the reads given to
        /// [`Builder::txn`].
        pub(crate) fn ok_txn(&mut self, process: u64) -> &mut Self {
            let micro_ops = self
                .txn_results
                .remove(&process)
                .expect("fixture bug: no outstanding transaction");
            self.finish(process, OpType::Ok, Some(OpValue::Txn(micro_ops)))
        }

        /// `process` runs the transaction `micro_ops` alone: invoked, then completed `ok`.
        pub(crate) fn committed(&mut self, process: u64, micro_ops: &[MicroOp]) -> &mut Self {
            self.txn(process, micro_ops).ok_txn(process)
        }

        /// `process` invokes the rw-register transaction `micro_ops` (its reads sent unread);
        /// the read results given here are what [`Builder::ok_rw_txn`] completes it with.
        pub(crate) fn rw_txn(&mut self, process: u64, micro_ops: &[RwMicroOp]) -> &mut Self {
            let sent = micro_ops
                .iter()
                .map(|micro_op| match micro_op {
                    RwMicroOp::Read { key, .. } => RwMicroOp::Read {
                        key: *key,
                        value: None,
                    },
                    write @ RwMicroOp::Write { .. } => *write,
                })
                .collect();
            self.rw_txn_results.insert(process, micro_ops.to_vec());
            self.invoke(process, F::RwTxn, OpValue::RwTxn(sent))
        }

        /// `process`'s outstanding rw-register transaction completes `ok` with the reads
        /// given to [`Builder::rw_txn`].
        pub(crate) fn ok_rw_txn(&mut self, process: u64) -> &mut Self {
            let micro_ops = self
                .rw_txn_results
                .remove(&process)
                .expect("fixture bug: no outstanding rw-register transaction");
            self.finish(process, OpType::Ok, Some(OpValue::RwTxn(micro_ops)))
        }

        /// `process` runs the rw-register transaction `micro_ops` alone: invoked, then
        /// completed `ok`.
        pub(crate) fn rw_committed(&mut self, process: u64, micro_ops: &[RwMicroOp]) -> &mut Self {
            self.rw_txn(process, micro_ops).ok_rw_txn(process)
        }

        /// `process`'s outstanding op completes `ok` with the invocation's value.
        pub(crate) fn ok(&mut self, process: u64) -> &mut Self {
            self.finish(process, OpType::Ok, None)
        }

        /// `process`'s outstanding read of `key` completes `ok`, returning `value`.
        pub(crate) fn ok_read(&mut self, process: u64, key: u64, value: Option<u64>) -> &mut Self {
            self.finish(process, OpType::Ok, Some(OpValue::Register { key, value }))
        }

        /// `process`'s outstanding final read completes `ok`, returning `elements`.
        pub(crate) fn ok_read_all(&mut self, process: u64, elements: &[u64]) -> &mut Self {
            self.finish(
                process,
                OpType::Ok,
                Some(OpValue::ReadAll(Some(elements.to_vec()))),
            )
        }

        /// `process`'s outstanding op completes `fail` (certainly did not happen).
        pub(crate) fn fail(&mut self, process: u64) -> &mut Self {
            self.finish(process, OpType::Fail, None)
        }

        /// `process`'s outstanding op completes `info` (may or may not have happened).
        pub(crate) fn info(&mut self, process: u64) -> &mut Self {
            self.finish(process, OpType::Info, None)
        }

        /// The history built so far.
        pub(crate) fn build(&self) -> History {
            History::new(self.ops.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(validity: Validity, checker: &str) -> Verdict {
        Verdict {
            validity,
            checker: checker.into(),
            ops_checked: 2,
            anomalies: Vec::new(),
            notes: vec!["n".into()],
        }
    }

    /// Validity serializes as Jepsen's `true` / `false` / `"unknown"` and reads back.
    #[test]
    fn validity_serializes_like_jepsen() {
        for (validity, json) in [
            (Validity::Valid, "true"),
            (Validity::Invalid, "false"),
            (Validity::Unknown, "\"unknown\""),
        ] {
            assert_eq!(serde_json::to_string(&validity).expect("serialize"), json);
            assert_eq!(
                serde_json::from_str::<Validity>(json).expect("deserialize"),
                validity
            );
        }
        assert!(serde_json::from_str::<Validity>("\"maybe\"").is_err());
        let text = serde_json::to_string(&verdict(Validity::Valid, "set")).expect("serialize");
        assert!(text.starts_with("{\"valid\":true,"), "{text}");
    }

    /// Combining: invalid beats unknown beats valid; counts add up; names join once.
    #[test]
    fn combine_takes_the_worst_validity() {
        let all_valid = combine([verdict(Validity::Valid, "a"), verdict(Validity::Valid, "a")]);
        assert_eq!(
            (
                all_valid.validity,
                all_valid.checker.as_str(),
                all_valid.ops_checked
            ),
            (Validity::Valid, "a", 4)
        );
        let unknown = combine([verdict(Validity::Valid, "a"), verdict(Validity::Unknown, "b")]);
        assert_eq!(
            (unknown.validity, unknown.checker.as_str()),
            (Validity::Unknown, "a+b")
        );
        let invalid = combine([
            verdict(Validity::Unknown, "a"),
            verdict(Validity::Invalid, "b"),
            verdict(Validity::Valid, "c"),
        ]);
        assert_eq!(invalid.validity, Validity::Invalid);
        assert_eq!(invalid.notes, vec!["a: n", "b: n", "c: n"]);
        assert_eq!(combine(Vec::new()).validity, Validity::Valid);
    }
}
