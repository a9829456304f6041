//! The batch workload's checker: batches are atomic per shard (README, "Guarantees": one
//! Raft entry per shard), not across shards.
//!
//! Every batch of a group writes the same value, unique in the run, to every key of the
//! group (or deletes every key of it), so whatever order batches apply in, the keys of one
//! shard always hold the same thing. A read of every key of a group together — at one
//! timestamp of the oracle, or linearizably in one call, where each shard answers its keys
//! under one lock — must show, on each shard:
//!
//! - `torn-batch`: one state on all the shard's keys (a batch's part seen on some of them
//!   only broke its atomicity);
//! - `garbage-read`: values some batch wrote, invoked before the read completed and not
//!   failed;
//! - `stale-read`: on every key, the batch certainly in effect throughout the read (one that
//!   completed before it began, with no other batch of the group in flight since, see
//!   `checker::mutations`), if there is one; nothing before any batch.
//!
//! Across shards nothing is promised: a cross-shard batch may be seen on one shard and not
//! yet on another (at a timestamp too: each shard's part commits at its own), and one of
//! unknown outcome may stay applied on some shards only.

use std::collections::{BTreeSet, HashMap};

use super::mutations::{InEffect, Mutation, MutationLog};
use super::{Anomaly, AnomalyList, Listing, Validity, Verdict};
use crate::history::{History, OpType, OpValue, F};

/// Name of this checker in verdicts.
pub const CHECKER_NAME: &str = "batch";

/// Anomalies of each kind listed by default.
const SAMPLE_PER_KIND: usize = 16;

/// Checks the `batch-write` and `batch-read` ops of `history`; other ops are ignored.
pub fn check(history: &History, listing: Listing) -> Verdict {
    let pairs = match history.pairs() {
        Ok(pairs) => pairs,
        Err(error) => return Verdict::unknown(CHECKER_NAME, format!("malformed history: {error}")),
    };
    let mut writes: HashMap<u64, Vec<Mutation<Option<u64>>>> = HashMap::new();
    let mut reads = Vec::new();
    let mut failed = 0usize;
    for pair in &pairs {
        match (pair.f(), &pair.invoke.value, pair.outcome()) {
            (F::BatchWrite, _, OpType::Fail) | (F::BatchRead, _, OpType::Fail | OpType::Info) => failed += 1,
            (F::BatchWrite, OpValue::Register { key: group, value }, outcome) => {
                writes.entry(*group).or_default().push(Mutation {
                    invoke: pair.invoke.index,
                    completion: pair
                        .completion
                        .filter(|_| outcome == OpType::Ok)
                        .map(|op| op.index),
                    effect: *value,
                });
            }
            (F::BatchRead, _, OpType::Ok) => match (pair.result_value(), pair.completion) {
                (
                    OpValue::GroupRead {
                        group,
                        shards,
                        values: Some(values),
                        ..
                    },
                    Some(completion),
                ) if shards.len() == values.len() => {
                    reads.push((pair.invoke.index, completion.index, *group, shards, values));
                }
                _ => {
                    return Verdict::unknown(
                        CHECKER_NAME,
                        format!(
                            "op {}: an ok batch read without one value per key",
                            pair.invoke.index
                        ),
                    )
                }
            },
            (F::BatchWrite, _, _) => {
                return Verdict::unknown(
                    CHECKER_NAME,
                    format!(
                        "op {}: a batch write without a [group value] argument",
                        pair.invoke.index
                    ),
                )
            }
            _ => {}
        }
    }
    let logs: HashMap<u64, MutationLog<Option<u64>>> = writes
        .into_iter()
        .map(|(group, mutations)| (group, MutationLog::new(mutations)))
        .collect();
    let empty = MutationLog::new(Vec::new());
    let mut anomalies = AnomalyList::new(listing, SAMPLE_PER_KIND);
    for (invoke, completion, group, shards, values) in &reads {
        let log = logs.get(group).unwrap_or(&empty);
        let read_ops = vec![*invoke, *completion];
        let shard_set: BTreeSet<u32> = shards.iter().copied().collect();
        for shard in shard_set {
            let seen: BTreeSet<Option<u64>> = shards
                .iter()
                .zip(values.iter())
                .filter(|(key_shard, _)| **key_shard == shard)
                .map(|(_, value)| *value)
                .collect();
            if seen.len() > 1 {
                anomalies.push(Anomaly {
                    kind: "torn-batch".to_string(),
                    key: Some(*group),
                    description: format!(
                        "group {group}: read {invoke} saw {} on the keys of shard {shard}: part of a batch",
                        describe_states(&seen)
                    ),
                    ops: read_ops.clone(),
                });
            }
        }
        let distinct: BTreeSet<Option<u64>> = values.iter().copied().collect();
        for value in distinct.iter().flatten() {
            let written = log
                .iter()
                .any(|mutation| mutation.effect == Some(*value) && mutation.invoke < *completion);
            if !written {
                anomalies.push(Anomaly {
                    kind: "garbage-read".to_string(),
                    key: Some(*group),
                    description: format!(
                        "group {group}: read {invoke} saw {value}, which no batch invoked before it completed wrote"
                    ),
                    ops: read_ops.clone(),
                });
            }
        }
        let expected = match log.in_effect(*invoke, *completion) {
            Some(InEffect::Initial) => Some((None, Vec::new())),
            Some(InEffect::Mutation(mutation)) => Some((mutation.effect, mutation.indexes())),
            None => None,
        };
        if let Some((expected, writer_ops)) = expected {
            if distinct.iter().any(|state| *state != expected) {
                anomalies.push(Anomaly {
                    kind: "stale-read".to_string(),
                    key: Some(*group),
                    description: format!(
                        "group {group}: read {invoke} saw {}, but {} was in effect on every key throughout it",
                        describe_states(&distinct),
                        describe_state(expected)
                    ),
                    ops: read_ops.iter().copied().chain(writer_ops).collect(),
                });
            }
        }
    }
    let validity = if anomalies.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    let batches: usize = logs.values().map(|log| log.iter().count()).sum();
    let (anomalies, mut notes) = anomalies.finish();
    notes.insert(
        0,
        format!(
            "{} groups, {batches} batches that did not fail, {} reads checked, {failed} failed or unknown reads and failed batches left out",
            logs.len(),
            reads.len()
        ),
    );
    Verdict {
        validity,
        checker: CHECKER_NAME.to_string(),
        ops_checked: batches + reads.len(),
        anomalies,
        notes,
    }
}

fn describe_state(state: Option<u64>) -> String {
    state.map_or_else(|| "nothing".to_string(), |value| value.to_string())
}

fn describe_states(states: &BTreeSet<Option<u64>>) -> String {
    states
        .iter()
        .map(|state| describe_state(*state))
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::Builder;

    /// Group 0: keys 0 and 1 on shard 0, key 2 on shard 1.
    const SHARDS: [u32; 3] = [0, 0, 1];

    fn write(builder: &mut Builder, process: u64, value: Option<u64>) -> &mut Builder {
        builder.invoke(process, F::BatchWrite, OpValue::Register { key: 0, value })
    }

    fn read(builder: &mut Builder, process: u64) -> &mut Builder {
        builder.invoke(
            process,
            F::BatchRead,
            OpValue::GroupRead {
                group: 0,
                shards: SHARDS.to_vec(),
                ts: None,
                values: None,
            },
        )
    }

    fn ok_read(builder: &mut Builder, process: u64, values: [Option<u64>; 3]) -> &mut Builder {
        builder.finish(
            process,
            OpType::Ok,
            Some(OpValue::GroupRead {
                group: 0,
                shards: SHARDS.to_vec(),
                ts: Some(7),
                values: Some(values.to_vec()),
            }),
        )
    }

    fn kinds(verdict: &Verdict) -> Vec<&str> {
        verdict
            .anomalies
            .iter()
            .map(|anomaly| anomaly.kind.as_str())
            .collect()
    }

    /// Batches in flight may be seen on one shard and not on another; a batch of unknown
    /// outcome anywhere: valid.
    #[test]
    fn whole_batches_per_shard_are_valid() {
        let mut history = Builder::default();
        write(&mut history, 0, Some(1)).ok(0);
        write(&mut history, 0, Some(2));
        read(&mut history, 1);
        ok_read(&mut history, 1, [Some(2), Some(2), Some(1)]).info(0);
        write(&mut history, 0, None).ok(0);
        read(&mut history, 1);
        ok_read(&mut history, 1, [None, None, None]);
        let verdict = check(&history.build(), Listing::Sample);
        assert_eq!(verdict.validity, Validity::Valid, "{verdict:?}");
    }

    /// Each violation is flagged: part of a batch on one shard, a value nobody wrote, a
    /// value overwritten before the read began.
    #[test]
    fn each_violation_is_flagged() {
        let mut torn = Builder::default();
        write(&mut torn, 0, Some(1)).ok(0);
        write(&mut torn, 0, Some(2));
        read(&mut torn, 1);
        ok_read(&mut torn, 1, [Some(2), Some(1), Some(1)]);
        let verdict = check(&torn.build(), Listing::Sample);
        assert_eq!(kinds(&verdict), ["torn-batch"], "{verdict:?}");

        let mut garbage = Builder::default();
        write(&mut garbage, 0, Some(1));
        read(&mut garbage, 1);
        ok_read(&mut garbage, 1, [Some(9), Some(9), Some(1)]);
        let verdict = check(&garbage.build(), Listing::Sample);
        assert_eq!(kinds(&verdict), ["garbage-read"], "{verdict:?}");

        let mut stale = Builder::default();
        write(&mut stale, 0, Some(1)).ok(0);
        write(&mut stale, 0, Some(2)).ok(0);
        read(&mut stale, 1);
        ok_read(&mut stale, 1, [Some(2), Some(2), Some(1)]);
        let verdict = check(&stale.build(), Listing::Sample);
        assert_eq!(kinds(&verdict), ["stale-read"], "{verdict:?}");
        assert_eq!(verdict.validity, Validity::Invalid);
    }

    /// By default 16 anomalies of a kind are listed and the rest counted in a note; with
    /// `Listing::All`, every one.
    #[test]
    fn all_violations_lists_every_one() {
        let mut history = Builder::default();
        write(&mut history, 0, Some(1));
        for _ in 0..40 {
            read(&mut history, 1);
            ok_read(&mut history, 1, [Some(1), None, None]);
        }
        let sample = check(&history.build(), Listing::Sample);
        assert_eq!(sample.anomalies.len(), 16);
        assert!(
            sample
                .notes
                .iter()
                .any(|note| note.contains("torn-batch: 40 found")),
            "{sample:?}"
        );
        let all = check(&history.build(), Listing::All);
        assert_eq!(all.anomalies.len(), 40);
    }
}
