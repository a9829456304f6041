//! The delete-range workload's checker (README, "Guarantees": "Delete-range deletes in
//! chunks of one Raft entry per shard: atomic per chunk, not as a whole; running it again
//! after a failure is safe").
//!
//! A range's keys are written together by fills (one batch writing one value, unique in the
//! run, to keys `0..n`) and removed by delete-ranges; reads scan the range. For each `ok`
//! read:
//!
//! - `resurrected`: no key returns a fill's value when a delete-range of the range was
//!   acknowledged after that fill was, and before the read began;
//! - `never-written`: each value was written to that key by a fill invoked before the read
//!   completed that did not fail;
//! - `lost-write`: when a fill was certainly in effect throughout the read (see
//!   `checker::mutations`), every key it wrote is returned with its value;
//! - `out-of-order` / `duplicate`: keys strictly ascending, as every scan.
//!
//! A delete-range of unknown outcome may have deleted any part of the range (chunks are
//! atomic, the whole is not, and the chunks are not visible to a client): it is never
//! taken as done, nor as not done; the workload runs it again, which must be safe.

use std::collections::HashMap;

use super::mutations::{InEffect, Mutation, MutationLog};
use super::{Anomaly, AnomalyList, Listing, Validity, Verdict};
use crate::history::{History, OpType, OpValue, F};

/// Name of this checker in verdicts.
pub const CHECKER_NAME: &str = "delete-range";

/// Anomalies of each kind listed by default.
const SAMPLE_PER_KIND: usize = 16;

/// A fill: keys `0..keys` get `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fill {
    keys: u64,
    value: u64,
}

/// A range read: its history indexes and what it returned.
struct RangeRead<'a> {
    range: u64,
    invoke: u64,
    completion: u64,
    entries: &'a [(u64, u64)],
}

/// Acknowledged delete-ranges of one range, by invocation, with the earliest completion
/// among each suffix: "one was invoked after `t` and completed before `u`" is one lookup.
struct AckedDeletes {
    by_invoke: Vec<(u64, u64)>,
    earliest_completion_from: Vec<(u64, u64)>,
}

impl AckedDeletes {
    fn new(mut by_invoke: Vec<(u64, u64)>) -> AckedDeletes {
        by_invoke.sort_unstable();
        let mut earliest_completion_from = vec![(u64::MAX, u64::MAX); by_invoke.len() + 1];
        for position in (0..by_invoke.len()).rev() {
            let (invoke, completion) = by_invoke[position];
            earliest_completion_from[position] =
                earliest_completion_from[position + 1].min((completion, invoke));
        }
        AckedDeletes {
            by_invoke,
            earliest_completion_from,
        }
    }

    /// A delete invoked after `after` and completed before `before`: `(invoke, completion)`.
    fn between(&self, after: u64, before: u64) -> Option<(u64, u64)> {
        let start = self.by_invoke.partition_point(|(invoke, _)| *invoke <= after);
        let (completion, invoke) = self.earliest_completion_from[start];
        (completion < before).then_some((invoke, completion))
    }
}

/// Checks the `range-fill`, `delete-range` and `range-read` ops of `history`; other ops
/// are ignored.
pub fn check(history: &History, listing: Listing) -> Verdict {
    let pairs = match history.pairs() {
        Ok(pairs) => pairs,
        Err(error) => return Verdict::unknown(CHECKER_NAME, format!("malformed history: {error}")),
    };
    let mut mutations: HashMap<u64, Vec<Mutation<Option<Fill>>>> = HashMap::new();
    let mut acked_deletes: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
    let mut reads = Vec::new();
    let mut unknown_deletes = 0usize;
    for pair in &pairs {
        let outcome = pair.outcome();
        let completion = pair
            .completion
            .filter(|_| outcome == OpType::Ok)
            .map(|op| op.index);
        match (pair.f(), &pair.invoke.value) {
            (F::RangeFill | F::DeleteRange | F::RangeRead, _) if outcome == OpType::Fail => {}
            (F::RangeFill, OpValue::RangeFill { range, keys, value }) => {
                mutations.entry(*range).or_default().push(Mutation {
                    invoke: pair.invoke.index,
                    completion,
                    effect: Some(Fill {
                        keys: *keys,
                        value: *value,
                    }),
                });
            }
            (F::DeleteRange, OpValue::Range(range)) => {
                mutations.entry(*range).or_default().push(Mutation {
                    invoke: pair.invoke.index,
                    completion,
                    effect: None,
                });
                match completion {
                    Some(completion) => acked_deletes
                        .entry(*range)
                        .or_default()
                        .push((pair.invoke.index, completion)),
                    None => unknown_deletes += 1,
                }
            }
            (F::RangeRead, _) if outcome == OpType::Ok => match (pair.result_value(), completion) {
                (
                    OpValue::Scan {
                        range,
                        entries: Some(entries),
                        ..
                    },
                    Some(completion),
                ) => reads.push(RangeRead {
                    range: *range,
                    invoke: pair.invoke.index,
                    completion,
                    entries,
                }),
                _ => {
                    return Verdict::unknown(
                        CHECKER_NAME,
                        format!("op {}: an ok range read without its entries", pair.invoke.index),
                    )
                }
            },
            (F::RangeFill | F::DeleteRange, _) => {
                return Verdict::unknown(
                    CHECKER_NAME,
                    format!(
                        "op {}: a fill or delete-range without its range",
                        pair.invoke.index
                    ),
                )
            }
            _ => {}
        }
    }
    let logs: HashMap<u64, MutationLog<Option<Fill>>> = mutations
        .into_iter()
        .map(|(range, mutations)| (range, MutationLog::new(mutations)))
        .collect();
    let deletes: HashMap<u64, AckedDeletes> = acked_deletes
        .into_iter()
        .map(|(range, deletes)| (range, AckedDeletes::new(deletes)))
        .collect();
    let empty_log = MutationLog::new(Vec::new());
    let no_deletes = AckedDeletes::new(Vec::new());
    let mut anomalies = AnomalyList::new(listing, SAMPLE_PER_KIND);
    for read in &reads {
        let log = logs.get(&read.range).unwrap_or(&empty_log);
        let deletes = deletes.get(&read.range).unwrap_or(&no_deletes);
        check_read(read, log, deletes, &mut anomalies);
    }
    let validity = if anomalies.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    let (anomalies, mut notes) = anomalies.finish();
    let fills = logs
        .values()
        .flat_map(MutationLog::iter)
        .filter(|mutation| mutation.effect.is_some())
        .count();
    let acked: usize = deletes.values().map(|deletes| deletes.by_invoke.len()).sum();
    notes.insert(
        0,
        format!(
            "{} ranges, {fills} fills that did not fail, {acked} delete-ranges acknowledged, {unknown_deletes} of unknown outcome (any part may be deleted), {} reads checked",
            logs.len(),
            reads.len()
        ),
    );
    Verdict {
        validity,
        checker: CHECKER_NAME.to_string(),
        ops_checked: reads.len() + logs.values().map(|log| log.iter().count()).sum::<usize>(),
        anomalies,
        notes,
    }
}

fn check_read(
    read: &RangeRead<'_>,
    log: &MutationLog<Option<Fill>>,
    deletes: &AckedDeletes,
    anomalies: &mut AnomalyList,
) {
    let range = read.range;
    let ops = vec![read.invoke, read.completion];
    for (position, (key, value)) in read.entries.iter().enumerate() {
        if let Some(previous) = position.checked_sub(1).map(|previous| read.entries[previous].0) {
            if previous >= *key {
                let kind = if previous == *key {
                    "duplicate"
                } else {
                    "out-of-order"
                };
                anomalies.push(Anomaly {
                    kind: kind.to_string(),
                    key: Some(range),
                    description: format!(
                        "range {range}: read {} returned key {key} after key {previous}",
                        read.invoke
                    ),
                    ops: ops.clone(),
                });
            }
        }
        let writer = log.iter().find(|mutation| {
            mutation
                .effect
                .is_some_and(|fill| fill.value == *value && *key < fill.keys)
                && mutation.invoke < read.completion
        });
        let Some(writer) = writer else {
            anomalies.push(Anomaly {
                kind: "never-written".to_string(),
                key: Some(range),
                description: format!(
                    "range {range}: read {} returned key {key} with value {value}, which no fill invoked before it completed wrote",
                    read.invoke
                ),
                ops: ops.clone(),
            });
            continue;
        };
        let Some(written) = writer.completion else {
            continue;
        };
        if let Some((delete_invoke, delete_completion)) = deletes.between(written, read.invoke) {
            anomalies.push(Anomaly {
                kind: "resurrected".to_string(),
                key: Some(range),
                description: format!(
                    "range {range}: read {} returned key {key} with value {value} of fill {}, which delete-range {delete_invoke} acknowledged after it deleted",
                    read.invoke, writer.invoke
                ),
                ops: ops
                    .iter()
                    .copied()
                    .chain(writer.indexes())
                    .chain([delete_invoke, delete_completion])
                    .collect(),
            });
        }
    }
    if let Some(InEffect::Mutation(mutation)) = log.in_effect(read.invoke, read.completion) {
        if let Some(fill) = mutation.effect {
            let returned: HashMap<u64, u64> = read.entries.iter().copied().collect();
            let lost: Vec<u64> = (0..fill.keys)
                .filter(|key| returned.get(key) != Some(&fill.value))
                .collect();
            if !lost.is_empty() {
                anomalies.push(Anomaly {
                    kind: "lost-write".to_string(),
                    key: Some(range),
                    description: format!(
                        "range {range}: read {} lacks value {} on keys {lost:?}, though fill {} was in effect throughout it",
                        read.invoke, fill.value, mutation.invoke
                    ),
                    ops: ops.iter().copied().chain(mutation.indexes()).collect(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::Builder;

    fn fill(builder: &mut Builder, process: u64, value: u64) -> &mut Builder {
        builder.invoke(
            process,
            F::RangeFill,
            OpValue::RangeFill {
                range: 0,
                keys: 2,
                value,
            },
        )
    }

    fn delete(builder: &mut Builder, process: u64) -> &mut Builder {
        builder.invoke(process, F::DeleteRange, OpValue::Range(0))
    }

    fn read<'a>(builder: &'a mut Builder, process: u64, entries: &[(u64, u64)]) -> &'a mut Builder {
        let scan = |entries: Option<Vec<(u64, u64)>>| OpValue::Scan {
            range: 0,
            page_limit: 1,
            pages: 1,
            ts: None,
            entries,
        };
        builder.invoke(process, F::RangeRead, scan(None)).finish(
            process,
            OpType::Ok,
            Some(scan(Some(entries.to_vec()))),
        )
    }

    fn kinds(verdict: &Verdict) -> Vec<&str> {
        verdict
            .anomalies
            .iter()
            .map(|anomaly| anomaly.kind.as_str())
            .collect()
    }

    /// Reads after a delete-range of unknown outcome may see any part of the range; a fill
    /// after an acknowledged delete shows again: valid.
    #[test]
    fn partial_unknown_deletes_are_allowed() {
        let mut history = Builder::default();
        fill(&mut history, 0, 1).ok(0);
        read(&mut history, 1, &[(0, 1), (1, 1)]);
        delete(&mut history, 0).info(0);
        read(&mut history, 1, &[(1, 1)]);
        delete(&mut history, 0).ok(0);
        read(&mut history, 1, &[]);
        fill(&mut history, 0, 2).ok(0);
        read(&mut history, 1, &[(0, 2), (1, 2)]);
        let verdict = check(&history.build(), Listing::Sample);
        assert_eq!(verdict.validity, Validity::Valid, "{verdict:?}");
    }

    /// Each violation is flagged.
    #[test]
    fn each_violation_is_flagged() {
        let cases: [(&[(u64, u64)], &str); 4] = [
            (&[(0, 1)], "resurrected"),
            (&[(0, 7)], "never-written"),
            (&[(1, 2), (0, 2)], "out-of-order"),
            (&[(0, 2)], "lost-write"),
        ];
        for (entries, kind) in cases {
            let mut history = Builder::default();
            fill(&mut history, 0, 1).ok(0);
            delete(&mut history, 0).ok(0);
            if kind != "resurrected" {
                fill(&mut history, 0, 2).ok(0);
            }
            read(&mut history, 1, entries);
            let verdict = check(&history.build(), Listing::Sample);
            assert!(kinds(&verdict).contains(&kind), "{kind}: {verdict:?}");
            assert_eq!(verdict.validity, Validity::Invalid, "{kind}");
        }
    }
}
