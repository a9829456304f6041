//! The set workload: clients `add` unique elements while faults run, then, after the faults
//! are healed, one or more final `read-all` ops read the whole set.
//!
//! For every successful final read R (an `ok` `read-all` with a vector of elements):
//! - **lost**: an element R must contain but does not: its add was acknowledged (`ok`) before
//!   R was invoked, or an earlier read that completed before R was invoked contained it.
//! - **duplicated**: an element R contains more than once.
//! - **unexpected**: an element R contains although no add of it could have happened before R
//!   completed: never attempted, every attempt `fail`ed, or first invoked after R completed.
//! - **recovered** (fine, not an anomaly): an element R contains whose adds all had unknown
//!   outcomes (`info` or never completed).
//!
//! An acknowledged add that completed after every final read began is not checked (counted in
//! the notes). Without any successful final read the verdict is `Unknown`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::checker::{Anomaly, Checker, Listing, Validity, Verdict};
use crate::history::{History, HistoryError, OpType, OpValue, F};

/// Name of this checker in verdicts.
pub const CHECKER_NAME: &str = "set";

/// Most elements quoted in one anomaly's description.
const MAX_DESCRIBED_ELEMENTS: usize = 20;

/// Most history indexes attached to one anomaly.
const MAX_ANOMALY_OPS: usize = 256;

/// The set workload's history does not have the expected shape.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    /// The invoke/complete discipline is broken.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// An add or read carries a value of the wrong shape.
    #[error("op {index}: {reason}")]
    Malformed {
        /// History index of the invocation.
        index: u64,
        /// What was wrong.
        reason: &'static str,
    },
}

/// What the set checker found; elements are sorted and listed once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAnalysis {
    /// Distinct elements whose add was invoked.
    pub attempted: usize,
    /// Distinct elements with an acknowledged (`ok`) add.
    pub acknowledged: usize,
    /// Successful final reads.
    pub final_reads: usize,
    /// Elements a final read was obliged to contain but did not.
    pub lost: Vec<u64>,
    /// Elements a final read contained more than once.
    pub duplicated: Vec<u64>,
    /// Elements a final read contained that no add could explain.
    pub unexpected: Vec<u64>,
    /// Elements with only indeterminate adds that a final read contained (fine).
    pub recovered: Vec<u64>,
    /// Acknowledged elements no final read was obliged to contain (acknowledged too late).
    pub unchecked: usize,
    /// History indexes of the ops behind each anomaly kind (`lost`, `duplicated`,
    /// `unexpected`), at most `MAX_ANOMALY_OPS` each.
    pub anomaly_ops: BTreeMap<String, Vec<u64>>,
}

/// The set checker as a [`Checker`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SetChecker;

impl Checker for SetChecker {
    fn name(&self) -> &'static str {
        CHECKER_NAME
    }

    fn check(&self, history: &History) -> Verdict {
        check(history)
    }
}

#[derive(Debug, Clone, Copy)]
struct AddAttempt {
    invoke_index: u64,
    completion_index: Option<u64>,
    outcome: OpType,
}

#[derive(Debug)]
struct FinalRead {
    invoke_index: u64,
    completion_index: u64,
    elements: Vec<u64>,
}

/// Analyzes the `add` and `read-all` ops of `history` (other ops are ignored).
pub fn analyze(history: &History) -> Result<SetAnalysis, SetError> {
    analyze_with(history, Listing::Sample)
}

/// [`analyze`], keeping as many history indexes per anomaly kind as `listing` says.
pub fn analyze_with(history: &History, listing: Listing) -> Result<SetAnalysis, SetError> {
    let max_anomaly_ops = listing.limit(MAX_ANOMALY_OPS);
    let mut attempts: HashMap<u64, Vec<AddAttempt>> = HashMap::new();
    let mut reads: Vec<FinalRead> = Vec::new();
    for pair in history.pairs()? {
        match pair.f() {
            F::Add => {
                let OpValue::Add(element) = pair.invoke.value else {
                    return Err(SetError::Malformed {
                        index: pair.invoke.index,
                        reason: "add without an element",
                    });
                };
                attempts.entry(element).or_default().push(AddAttempt {
                    invoke_index: pair.invoke.index,
                    completion_index: pair.completion.map(|completion| completion.index),
                    outcome: pair.outcome(),
                });
            }
            F::ReadAll => {
                let Some(completion) = pair
                    .completion
                    .filter(|completion| completion.op_type == OpType::Ok)
                else {
                    continue;
                };
                let OpValue::ReadAll(Some(elements)) = &completion.value else {
                    return Err(SetError::Malformed {
                        index: pair.invoke.index,
                        reason: "ok read-all without a vector of elements",
                    });
                };
                reads.push(FinalRead {
                    invoke_index: pair.invoke.index,
                    completion_index: completion.index,
                    elements: elements.clone(),
                });
            }
            F::Read
            | F::Write
            | F::Cas
            | F::Timestamp
            | F::ChainWrite
            | F::SnapshotRead
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

    let acknowledged_at = |element: u64| -> Option<(u64, u64)> {
        attempts
            .get(&element)?
            .iter()
            .filter(|attempt| attempt.outcome == OpType::Ok)
            .find_map(|attempt| {
                attempt
                    .completion_index
                    .map(|completion| (attempt.invoke_index, completion))
            })
    };
    let mut lost: BTreeSet<u64> = BTreeSet::new();
    let mut duplicated: BTreeSet<u64> = BTreeSet::new();
    let mut unexpected: BTreeSet<u64> = BTreeSet::new();
    let mut recovered: BTreeSet<u64> = BTreeSet::new();
    let mut ops_by_kind: BTreeMap<&'static str, BTreeSet<u64>> = BTreeMap::new();
    let mut note = |kind: &'static str, indexes: &[u64]| {
        ops_by_kind
            .entry(kind)
            .or_default()
            .extend(indexes.iter().copied());
    };

    let read_sets: Vec<BTreeMap<u64, usize>> = reads
        .iter()
        .map(|read| {
            let mut counts = BTreeMap::new();
            for element in &read.elements {
                *counts.entry(*element).or_insert(0usize) += 1;
            }
            counts
        })
        .collect();
    for (read, counts) in reads.iter().zip(&read_sets) {
        let read_ops = [read.invoke_index, read.completion_index];
        for (element, count) in counts {
            if *count > 1 {
                duplicated.insert(*element);
                note("duplicated", &read_ops);
            }
            let possible: Vec<&AddAttempt> = attempts
                .get(element)
                .into_iter()
                .flatten()
                .filter(|attempt| {
                    attempt.outcome != OpType::Fail && attempt.invoke_index < read.completion_index
                })
                .collect();
            if possible.is_empty() {
                unexpected.insert(*element);
                note("unexpected", &read_ops);
                let attempted: Vec<u64> = attempts
                    .get(element)
                    .into_iter()
                    .flatten()
                    .map(|attempt| attempt.invoke_index)
                    .collect();
                note("unexpected", &attempted);
            } else if possible.iter().all(|attempt| attempt.outcome != OpType::Ok) {
                recovered.insert(*element);
            }
        }
        // Acknowledged before this read began.
        for (element, element_attempts) in &attempts {
            for attempt in element_attempts {
                let Some(completion) = attempt.completion_index else {
                    continue;
                };
                if attempt.outcome == OpType::Ok
                    && completion < read.invoke_index
                    && !counts.contains_key(element)
                {
                    lost.insert(*element);
                    note(
                        "lost",
                        &[
                            attempt.invoke_index,
                            completion,
                            read.invoke_index,
                            read.completion_index,
                        ],
                    );
                }
            }
        }
        // Seen by an earlier read that completed before this one began.
        for (earlier, earlier_counts) in reads.iter().zip(&read_sets) {
            if earlier.completion_index >= read.invoke_index {
                continue;
            }
            for element in earlier_counts
                .keys()
                .filter(|element| !counts.contains_key(element))
            {
                lost.insert(*element);
                note(
                    "lost",
                    &[earlier.completion_index, read.invoke_index, read.completion_index],
                );
            }
        }
    }

    let last_read_invoke = reads.iter().map(|read| read.invoke_index).max();
    let unchecked = attempts
        .keys()
        .filter(|element| {
            acknowledged_at(**element).is_some_and(|(_, completion)| {
                last_read_invoke.is_none_or(|last| completion > last)
                    && !read_sets.iter().any(|counts| counts.contains_key(element))
            })
        })
        .count();
    Ok(SetAnalysis {
        attempted: attempts.len(),
        acknowledged: attempts
            .keys()
            .filter(|element| acknowledged_at(**element).is_some())
            .count(),
        final_reads: reads.len(),
        lost: lost.into_iter().collect(),
        duplicated: duplicated.into_iter().collect(),
        unexpected: unexpected.into_iter().collect(),
        recovered: recovered.into_iter().collect(),
        unchecked,
        anomaly_ops: ops_by_kind
            .into_iter()
            .map(|(kind, indexes)| {
                (
                    kind.to_string(),
                    indexes.into_iter().take(max_anomaly_ops).collect(),
                )
            })
            .collect(),
    })
}

/// Checks the set workload of `history`: `Invalid` when any element is lost, duplicated or
/// unexpected; `Unknown` without a successful final read or when the history is malformed.
pub fn check(history: &History) -> Verdict {
    check_with(history, Listing::Sample)
}

/// [`check`], quoting as many elements and history indexes per anomaly as `listing` says.
pub fn check_with(history: &History, listing: Listing) -> Verdict {
    let max_described = listing.limit(MAX_DESCRIBED_ELEMENTS);
    let analysis = match analyze_with(history, listing) {
        Ok(analysis) => analysis,
        Err(error) => return Verdict::unknown(CHECKER_NAME, format!("malformed history: {error}")),
    };
    let ops_checked = history
        .pairs()
        .map(|pairs| {
            pairs
                .iter()
                .filter(|pair| matches!(pair.f(), F::Add | F::ReadAll))
                .count()
        })
        .unwrap_or(0);
    let mut verdict = Verdict {
        validity: Validity::Valid,
        checker: CHECKER_NAME.to_string(),
        ops_checked,
        anomalies: Vec::new(),
        notes: vec![format!(
            "{} elements attempted, {} acknowledged, {} successful final reads; {} recovered \
             (indeterminate adds that took effect); {} acknowledged too late to check",
            analysis.attempted,
            analysis.acknowledged,
            analysis.final_reads,
            analysis.recovered.len(),
            analysis.unchecked,
        )],
    };
    let kinds = [
        (
            "lost",
            &analysis.lost,
            "acknowledged or previously read elements missing from a final read",
        ),
        (
            "duplicated",
            &analysis.duplicated,
            "elements a final read returned more than once",
        ),
        (
            "unexpected",
            &analysis.unexpected,
            "elements a final read returned that no add could explain",
        ),
    ];
    for (kind, elements, meaning) in kinds {
        if elements.is_empty() {
            continue;
        }
        verdict.validity = Validity::Invalid;
        let mut listed: Vec<String> = elements
            .iter()
            .take(max_described)
            .map(|element| element.to_string())
            .collect();
        if elements.len() > max_described {
            listed.push(format!(
                "... {} more (--all-violations lists every one)",
                elements.len() - max_described
            ));
        }
        verdict.anomalies.push(Anomaly {
            kind: kind.to_string(),
            key: None,
            description: format!("{} {meaning}: [{}]", elements.len(), listed.join(" ")),
            ops: analysis.anomaly_ops.get(kind).cloned().unwrap_or_default(),
        });
    }
    if analysis.final_reads == 0 && verdict.validity == Validity::Valid {
        verdict.validity = Validity::Unknown;
        verdict
            .notes
            .push("no successful final read: nothing to check the adds against".to_string());
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::Builder;

    /// Every acknowledged add present once in the final read is valid; info adds may appear.
    #[test]
    fn complete_final_read_is_valid() {
        let mut history = Builder::default();
        history
            .add(0, 1)
            .ok(0)
            .add(1, 2)
            .ok(1)
            .add(0, 3)
            .info(0)
            .add(1, 4)
            .fail(1);
        history.read_all(2).ok_read_all(2, &[2, 1, 3]);
        let verdict = check(&history.build());
        assert_eq!(verdict.validity, Validity::Valid, "{verdict:?}");
        assert_eq!(verdict.ops_checked, 5);
        let analysis = analyze(&history.build()).expect("analyze");
        assert_eq!(analysis.recovered, vec![3]);
        assert_eq!((analysis.attempted, analysis.acknowledged), (4, 2));
    }

    /// An acknowledged add missing from the final read is lost.
    #[test]
    fn missing_acknowledged_add_is_lost() {
        let mut history = Builder::default();
        history.add(0, 1).ok(0).add(0, 2).ok(0);
        history.read_all(1).ok_read_all(1, &[1]);
        let verdict = check(&history.build());
        assert_eq!(verdict.validity, Validity::Invalid);
        assert_eq!(verdict.anomalies.len(), 1);
        assert_eq!(verdict.anomalies[0].kind, "lost");
        assert_eq!(verdict.anomalies[0].ops, vec![2, 3, 4, 5]);
        assert_eq!(analyze(&history.build()).expect("analyze").lost, vec![2]);
    }

    /// By default a lost anomaly quotes 20 elements and counts the rest; `Listing::All`
    /// quotes every one.
    #[test]
    fn all_violations_quotes_every_lost_element() {
        let mut history = Builder::default();
        for element in 100..130 {
            history.add(0, element).ok(0);
        }
        history.read_all(1).ok_read_all(1, &[]);
        let sample = check(&history.build());
        assert!(
            sample.anomalies[0].description.contains("... 10 more"),
            "{sample:?}"
        );
        assert!(!sample.anomalies[0].description.contains("129"));
        let all = check_with(&history.build(), Listing::All);
        assert!(all.anomalies[0].description.contains("129"), "{all:?}");
        assert!(!all.anomalies[0].description.contains("more"));
    }

    /// An element returned twice by a final read is duplicated.
    #[test]
    fn repeated_element_is_duplicated() {
        let mut history = Builder::default();
        history.add(0, 1).ok(0);
        history.read_all(1).ok_read_all(1, &[1, 1]);
        let verdict = check(&history.build());
        assert_eq!(verdict.validity, Validity::Invalid);
        assert_eq!(verdict.anomalies[0].kind, "duplicated");
        assert_eq!(analyze(&history.build()).expect("analyze").duplicated, vec![1]);
    }

    /// Elements never added, or whose add failed, are unexpected.
    #[test]
    fn unexplained_elements_are_unexpected() {
        let mut history = Builder::default();
        history.add(0, 1).fail(0);
        history.read_all(1).ok_read_all(1, &[1, 7]);
        let analysis = analyze(&history.build()).expect("analyze");
        assert_eq!(analysis.unexpected, vec![1, 7]);
        assert_eq!(check(&history.build()).validity, Validity::Invalid);
    }

    /// An element seen by one final read and gone from a later one is lost, even if its add
    /// was indeterminate; an add acknowledged during the read is not required.
    #[test]
    fn element_vanishing_between_reads_is_lost() {
        let mut history = Builder::default();
        history.add(0, 1).info(0);
        history.read_all(1).ok_read_all(1, &[1]);
        history.read_all(1).add(0, 2).ok(0).ok_read_all(1, &[]);
        let analysis = analyze(&history.build()).expect("analyze");
        assert_eq!(analysis.lost, vec![1]);
        assert_eq!(analysis.unchecked, 1);
    }

    /// Without a successful final read the result is unknown.
    #[test]
    fn no_final_read_is_unknown() {
        let mut history = Builder::default();
        history.add(0, 1).ok(0).read_all(1).info(1);
        let verdict = check(&history.build());
        assert_eq!(verdict.validity, Validity::Unknown);
    }
}
