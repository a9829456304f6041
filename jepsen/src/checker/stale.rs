//! The register workload's stale reads (`ReadConsistency::Stale`: any replica answers, so
//! the value may be old — README, "Guarantees": "`--stale` reads any replica").
//!
//! Old is allowed, invented is not: every value a stale read returns (`never-written`
//! otherwise) was written to that key — by a `write`, or as the `to` of a `cas` — by an
//! op invoked before the read completed that did not fail. `nil` is always allowed (the
//! register before its first write).

use std::collections::{HashMap, HashSet};

use super::{Anomaly, AnomalyList, Listing, Validity, Verdict};
use crate::history::{History, OpType, OpValue, F};

/// Name of this checker in verdicts.
pub const CHECKER_NAME: &str = "stale-reads";

/// Anomalies listed by default.
const SAMPLE_PER_KIND: usize = 16;

/// Checks the `stale-read` ops of `history` against its `write` and `cas` ops.
pub fn check(history: &History, listing: Listing) -> Verdict {
    let pairs = match history.pairs() {
        Ok(pairs) => pairs,
        Err(error) => return Verdict::unknown(CHECKER_NAME, format!("malformed history: {error}")),
    };
    // (key, value) -> the earliest invocation of an op that wrote it and did not fail.
    let mut first_written: HashMap<(u64, u64), u64> = HashMap::new();
    for pair in &pairs {
        if pair.outcome() == OpType::Fail {
            continue;
        }
        let written = match (pair.f(), &pair.invoke.value) {
            (
                F::Write,
                OpValue::Register {
                    key,
                    value: Some(value),
                },
            ) => (*key, *value),
            (F::Cas, OpValue::Cas { key, to, .. }) => (*key, *to),
            _ => continue,
        };
        first_written.entry(written).or_insert(pair.invoke.index);
    }
    let mut anomalies = AnomalyList::new(listing, SAMPLE_PER_KIND);
    let mut checked = 0usize;
    let mut keys = HashSet::new();
    for pair in &pairs {
        let (F::StaleRead, OpType::Ok, Some(completion)) = (pair.f(), pair.outcome(), pair.completion) else {
            continue;
        };
        let OpValue::Register { key, value } = completion.value else {
            return Verdict::unknown(
                CHECKER_NAME,
                format!(
                    "op {}: an ok stale read without a [key value] result",
                    completion.index
                ),
            );
        };
        checked += 1;
        keys.insert(key);
        let Some(value) = value else {
            continue;
        };
        let written_before = first_written
            .get(&(key, value))
            .is_some_and(|invoke| *invoke < completion.index);
        if !written_before {
            anomalies.push(Anomaly {
                kind: "never-written".to_string(),
                key: Some(key),
                description: format!(
                    "key {key}: stale read {} returned {value}, which no write or cas invoked before it completed wrote",
                    pair.invoke.index
                ),
                ops: vec![pair.invoke.index, completion.index],
            });
        }
    }
    let validity = if anomalies.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    let (anomalies, mut notes) = anomalies.finish();
    notes.insert(0, format!("{checked} stale reads of {} keys checked", keys.len()));
    Verdict {
        validity,
        checker: CHECKER_NAME.to_string(),
        ops_checked: checked,
        anomalies,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::Builder;

    fn stale_read(builder: &mut Builder, process: u64, key: u64, value: Option<u64>) -> &mut Builder {
        builder
            .invoke(process, F::StaleRead, OpValue::Register { key, value: None })
            .finish(process, OpType::Ok, Some(OpValue::Register { key, value }))
    }

    /// Old values, values of writes still in flight or of unknown outcome, and `nil` are
    /// allowed.
    #[test]
    fn old_values_are_allowed() {
        let mut history = Builder::default();
        history
            .write(0, 1, 10)
            .ok(0)
            .write(0, 1, 11)
            .ok(0)
            .cas(0, 1, 11, 12);
        stale_read(&mut history, 1, 1, Some(10));
        stale_read(&mut history, 1, 1, Some(12));
        stale_read(&mut history, 1, 1, None);
        history.info(0);
        let verdict = check(&history.build(), Listing::Sample);
        assert_eq!(verdict.validity, Validity::Valid, "{verdict:?}");
        assert_eq!(verdict.ops_checked, 3);
    }

    /// A value nobody wrote, one only a failed write wrote, one written to another key and
    /// one written after the read are each flagged.
    #[test]
    fn invented_values_are_flagged() {
        let mut history = Builder::default();
        history.write(0, 1, 10).fail(0).write(0, 2, 20).ok(0);
        stale_read(&mut history, 1, 1, Some(99));
        stale_read(&mut history, 1, 1, Some(10));
        stale_read(&mut history, 1, 1, Some(20));
        stale_read(&mut history, 1, 1, Some(30));
        history.write(0, 1, 30).ok(0);
        let verdict = check(&history.build(), Listing::Sample);
        assert_eq!(verdict.validity, Validity::Invalid);
        assert_eq!(verdict.anomalies.len(), 4, "{verdict:?}");
    }
}
