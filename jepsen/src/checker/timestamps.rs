//! The timestamp workload: clients take timestamps of the cluster's timestamp oracle while
//! faults run. Every timestamp a client was given (an `ok` completion) must be:
//! - **unique** (`duplicate-timestamp`): no other `ok` op was given the same one, and none
//!   is 0;
//! - **in real-time order** (`realtime-order`): above the timestamp of every `ok` op that
//!   completed before this one was invoked. Within one client that is "rising"; across
//!   clients it is what transactions need from the oracle: a transaction that begins after
//!   another committed reads at a later snapshot.
//!
//! Failed and indeterminate ops took nothing a client could use and are not checked.

use std::collections::HashMap;

use crate::checker::{Anomaly, Checker, Listing, Validity, Verdict};
use crate::history::{History, OpType, OpValue, F};

/// Name of this checker in verdicts.
pub const CHECKER_NAME: &str = "timestamps";

/// Most anomalies listed in a verdict (the count is always in the notes).
const MAX_LISTED_ANOMALIES: usize = 64;

/// The timestamp checker as a [`Checker`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TimestampChecker;

impl Checker for TimestampChecker {
    fn name(&self) -> &'static str {
        CHECKER_NAME
    }

    fn check(&self, history: &History) -> Verdict {
        check(history)
    }
}

/// One `ok` timestamp op: history indexes of its invocation and completion, and what it got.
#[derive(Debug, Clone, Copy)]
struct Taken {
    invoke: u64,
    completion: u64,
    timestamp: u64,
}

/// Checks the `timestamp` ops of `history` (other ops are ignored).
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
    let mut taken = Vec::new();
    let mut not_ok = 0usize;
    for pair in pairs.iter().filter(|pair| *pair.f() == F::Timestamp) {
        match (pair.outcome(), pair.completion) {
            (OpType::Ok, Some(completion)) => match completion.value {
                OpValue::Timestamp(Some(timestamp)) => taken.push(Taken {
                    invoke: pair.invoke.index,
                    completion: completion.index,
                    timestamp,
                }),
                _ => {
                    return Verdict::unknown(
                        CHECKER_NAME,
                        format!("op {}: an ok timestamp op without a timestamp", completion.index),
                    )
                }
            },
            _ => not_ok += 1,
        }
    }
    let mut anomalies = Vec::new();
    let mut count = 0usize;
    let mut report = |anomaly: Anomaly| {
        count += 1;
        if anomalies.len() < max_listed {
            anomalies.push(anomaly);
        }
    };

    let mut first_holder: HashMap<u64, Taken> = HashMap::with_capacity(taken.len());
    for op in &taken {
        if op.timestamp == 0 {
            report(Anomaly {
                kind: "duplicate-timestamp".to_string(),
                key: None,
                description: format!(
                    "op {} was given timestamp 0, which is never handed out",
                    op.invoke
                ),
                ops: vec![op.invoke, op.completion],
            });
        }
        if let Some(earlier) = first_holder.insert(op.timestamp, *op) {
            report(Anomaly {
                kind: "duplicate-timestamp".to_string(),
                key: None,
                description: format!(
                    "timestamp {} was given to op {} and to op {}",
                    op.timestamp, earlier.invoke, op.invoke
                ),
                ops: vec![earlier.invoke, earlier.completion, op.invoke, op.completion],
            });
        }
    }

    // Sweep the history in order: at each invocation, the highest timestamp of the ops that
    // completed before it must be below what this op will be given.
    enum Event {
        Invoke(usize),
        Complete(usize),
    }
    let mut events: Vec<(u64, Event)> = Vec::with_capacity(taken.len() * 2);
    for (position, op) in taken.iter().enumerate() {
        events.push((op.invoke, Event::Invoke(position)));
        events.push((op.completion, Event::Complete(position)));
    }
    events.sort_by_key(|(index, _)| *index);
    let mut highest_completed: Option<usize> = None;
    let mut bound_at_invoke: Vec<Option<usize>> = vec![None; taken.len()];
    for (_, event) in &events {
        match *event {
            Event::Invoke(position) => bound_at_invoke[position] = highest_completed,
            Event::Complete(position) => {
                if highest_completed.is_none_or(|best| taken[position].timestamp > taken[best].timestamp) {
                    highest_completed = Some(position);
                }
            }
        }
    }
    for (op, bound) in taken.iter().zip(&bound_at_invoke) {
        let Some(before) = bound.map(|position| taken[position]) else {
            continue;
        };
        if op.timestamp <= before.timestamp {
            report(Anomaly {
                kind: "realtime-order".to_string(),
                key: None,
                description: format!(
                    "op {} was given {}, not above {} given to op {}, which completed (op {}) before op {} was invoked",
                    op.invoke, op.timestamp, before.timestamp, before.invoke, before.completion, op.invoke
                ),
                ops: vec![before.invoke, before.completion, op.invoke, op.completion],
            });
        }
    }

    let mut notes = vec![format!(
        "{} timestamps checked; {not_ok} timestamp ops failed or ended unknown",
        taken.len()
    )];
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
        ops_checked: taken.len(),
        anomalies,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::Builder;

    #[test]
    fn rising_timestamps_are_valid() {
        let mut history = Builder::default();
        history
            .timestamp(0)
            .timestamp(1)
            .ok_timestamp(1, 20)
            .ok_timestamp(0, 10) // concurrent with process 1's: any order
            .timestamp(0)
            .ok_timestamp(0, 30)
            .timestamp(1)
            .info(1);
        let verdict = check(&history.build());
        assert_eq!(verdict.validity, Validity::Valid, "{verdict:?}");
        assert_eq!(verdict.ops_checked, 3);
    }

    #[test]
    fn a_timestamp_below_an_earlier_completed_one_breaks_realtime_order() {
        let mut history = Builder::default();
        history
            .timestamp(0)
            .ok_timestamp(0, 50)
            .timestamp(1)
            .ok_timestamp(1, 40);
        let verdict = check(&history.build());
        assert_eq!(verdict.validity, Validity::Invalid);
        assert_eq!(verdict.anomalies[0].kind, "realtime-order");
        assert_eq!(verdict.anomalies[0].ops, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_timestamp_given_twice_is_a_duplicate() {
        let mut history = Builder::default();
        history
            .timestamp(0)
            .timestamp(1)
            .ok_timestamp(0, 7)
            .ok_timestamp(1, 7)
            .timestamp(2)
            .ok_timestamp(2, 0);
        let verdict = check(&history.build());
        assert_eq!(verdict.validity, Validity::Invalid);
        let kinds: Vec<&str> = verdict.anomalies.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "duplicate-timestamp").count(),
            2,
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&"realtime-order"),
            "0 after 7 is also out of order: {kinds:?}"
        );
    }
}
