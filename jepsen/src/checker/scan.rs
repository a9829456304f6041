//! The scan workload's checker: paged scans (README, "Guarantees": "pages never repeat a
//! key and never skip one that existed, unchanged, for the whole scan"; each shard's part
//! is linearizable when that shard answers, or one snapshot at a timestamp).
//!
//! Keys are numbers; every put of a key writes a value unique in the run, and a scan op
//! records every `(key, value)` its pages returned, in order. For each `ok` scan:
//!
//! - `out-of-order` / `duplicate`: keys strictly ascending across all pages;
//! - `never-written`: each value written to its key by a put invoked before the scan
//!   completed that did not fail;
//! - `skipped`: a key whose put was certainly in effect throughout the scan (completed
//!   before it began, nothing else on that key in flight since; see
//!   `checker::mutations`) is returned, with that put's value (`wrong-value` otherwise);
//! - `deleted-key-seen`: a key whose delete was certainly in effect throughout the scan is
//!   not returned.
//!
//! Keys put or deleted during a scan may appear or not.

use std::collections::HashMap;

use super::mutations::{InEffect, Mutation, MutationLog};
use super::{Anomaly, AnomalyList, Listing, Validity, Verdict};
use crate::history::{History, OpType, OpValue, F};

/// Name of this checker in verdicts.
pub const CHECKER_NAME: &str = "scan";

/// Anomalies of each kind listed by default.
const SAMPLE_PER_KIND: usize = 16;

/// An `ok` scan: its history indexes and what it returned.
struct ScanRead<'a> {
    invoke: u64,
    completion: u64,
    entries: &'a [(u64, u64)],
}

/// Checks the `scan-write` and `scan` ops of `history`; other ops are ignored.
pub fn check(history: &History, listing: Listing) -> Verdict {
    let pairs = match history.pairs() {
        Ok(pairs) => pairs,
        Err(error) => return Verdict::unknown(CHECKER_NAME, format!("malformed history: {error}")),
    };
    let mut writes: HashMap<u64, Vec<Mutation<Option<u64>>>> = HashMap::new();
    let mut scans = Vec::new();
    let mut pages = 0u64;
    for pair in &pairs {
        let outcome = pair.outcome();
        match (pair.f(), &pair.invoke.value) {
            (F::ScanWrite | F::Scan, _) if outcome == OpType::Fail => {}
            (F::ScanWrite, OpValue::Register { key, value }) => {
                writes.entry(*key).or_default().push(Mutation {
                    invoke: pair.invoke.index,
                    completion: pair
                        .completion
                        .filter(|_| outcome == OpType::Ok)
                        .map(|op| op.index),
                    effect: *value,
                });
            }
            (F::ScanWrite, _) => {
                return Verdict::unknown(
                    CHECKER_NAME,
                    format!(
                        "op {}: a scan write without a [key value] argument",
                        pair.invoke.index
                    ),
                )
            }
            (F::Scan, _) if outcome == OpType::Ok => match (pair.result_value(), pair.completion) {
                (
                    OpValue::Scan {
                        entries: Some(entries),
                        pages: scan_pages,
                        ..
                    },
                    Some(completion),
                ) => {
                    pages += u64::from(*scan_pages);
                    scans.push(ScanRead {
                        invoke: pair.invoke.index,
                        completion: completion.index,
                        entries,
                    });
                }
                _ => {
                    return Verdict::unknown(
                        CHECKER_NAME,
                        format!("op {}: an ok scan without its entries", pair.invoke.index),
                    )
                }
            },
            _ => {}
        }
    }
    let logs: HashMap<u64, MutationLog<Option<u64>>> = writes
        .into_iter()
        .map(|(key, mutations)| (key, MutationLog::new(mutations)))
        .collect();
    let mut keys: Vec<u64> = logs.keys().copied().collect();
    keys.sort_unstable();
    let mut anomalies = AnomalyList::new(listing, SAMPLE_PER_KIND);
    for scan in &scans {
        check_scan(scan, &logs, &keys, &mut anomalies);
    }
    let validity = if anomalies.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    let (anomalies, mut notes) = anomalies.finish();
    let returned: usize = scans.iter().map(|scan| scan.entries.len()).sum();
    notes.insert(
        0,
        format!(
            "{} keys written, {} scans checked ({pages} pages, {returned} entries)",
            keys.len(),
            scans.len()
        ),
    );
    Verdict {
        validity,
        checker: CHECKER_NAME.to_string(),
        ops_checked: scans.len() + logs.values().map(|log| log.iter().count()).sum::<usize>(),
        anomalies,
        notes,
    }
}

fn check_scan(
    scan: &ScanRead<'_>,
    logs: &HashMap<u64, MutationLog<Option<u64>>>,
    keys: &[u64],
    anomalies: &mut AnomalyList,
) {
    let ops = vec![scan.invoke, scan.completion];
    let mut returned: HashMap<u64, u64> = HashMap::new();
    for (position, (key, value)) in scan.entries.iter().enumerate() {
        if let Some(previous) = position.checked_sub(1).map(|previous| scan.entries[previous].0) {
            if previous == *key {
                anomalies.push(Anomaly {
                    kind: "duplicate".to_string(),
                    key: Some(*key),
                    description: format!("scan {}: key {key} returned twice", scan.invoke),
                    ops: ops.clone(),
                });
            } else if previous > *key {
                anomalies.push(Anomaly {
                    kind: "out-of-order".to_string(),
                    key: Some(*key),
                    description: format!("scan {}: key {key} returned after key {previous}", scan.invoke),
                    ops: ops.clone(),
                });
            }
        }
        returned.insert(*key, *value);
        let written = logs.get(key).is_some_and(|log| {
            log.iter()
                .any(|mutation| mutation.effect == Some(*value) && mutation.invoke < scan.completion)
        });
        if !written {
            anomalies.push(Anomaly {
                kind: "never-written".to_string(),
                key: Some(*key),
                description: format!(
                    "scan {}: key {key} with value {value}, which no put invoked before the scan completed wrote",
                    scan.invoke
                ),
                ops: ops.clone(),
            });
        }
    }
    for key in keys {
        let Some(InEffect::Mutation(mutation)) = logs[key].in_effect(scan.invoke, scan.completion) else {
            continue;
        };
        let involved: Vec<u64> = ops.iter().copied().chain(mutation.indexes()).collect();
        match (mutation.effect, returned.get(key)) {
            (Some(value), None) => anomalies.push(Anomaly {
                kind: "skipped".to_string(),
                key: Some(*key),
                description: format!(
                    "scan {}: key {key} (value {value}, put before the scan began and unchanged throughout) is missing",
                    scan.invoke
                ),
                ops: involved,
            }),
            (Some(value), Some(seen)) if *seen != value => anomalies.push(Anomaly {
                kind: "wrong-value".to_string(),
                key: Some(*key),
                description: format!(
                    "scan {}: key {key} returned {seen}, but {value} was in effect throughout the scan",
                    scan.invoke
                ),
                ops: involved,
            }),
            (None, Some(seen)) => anomalies.push(Anomaly {
                kind: "deleted-key-seen".to_string(),
                key: Some(*key),
                description: format!(
                    "scan {}: key {key} returned {seen}, but it was deleted before the scan began and not written since",
                    scan.invoke
                ),
                ops: involved,
            }),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::Builder;

    fn put(builder: &mut Builder, process: u64, key: u64, value: Option<u64>) -> &mut Builder {
        builder.invoke(process, F::ScanWrite, OpValue::Register { key, value })
    }

    fn scan(builder: &mut Builder, process: u64) -> &mut Builder {
        builder.invoke(
            process,
            F::Scan,
            OpValue::Scan {
                range: 0,
                page_limit: 2,
                pages: 0,
                ts: None,
                entries: None,
            },
        )
    }

    fn ok_scan<'a>(builder: &'a mut Builder, process: u64, entries: &[(u64, u64)]) -> &'a mut Builder {
        builder.finish(
            process,
            OpType::Ok,
            Some(OpValue::Scan {
                range: 0,
                page_limit: 2,
                pages: 3,
                ts: None,
                entries: Some(entries.to_vec()),
            }),
        )
    }

    /// Two stable keys (1, 3), one deleted (2) and one put during the scan (4).
    fn setup() -> Builder {
        let mut history = Builder::default();
        put(&mut history, 0, 1, Some(10)).ok(0);
        put(&mut history, 0, 2, Some(20)).ok(0);
        put(&mut history, 0, 3, Some(30)).ok(0);
        put(&mut history, 0, 2, None).ok(0);
        history
    }

    fn kinds(verdict: &Verdict) -> Vec<&str> {
        verdict
            .anomalies
            .iter()
            .map(|anomaly| anomaly.kind.as_str())
            .collect()
    }

    /// A key put during the scan may be returned or not; stable keys are there once, in
    /// order: valid.
    #[test]
    fn concurrent_puts_may_show_or_not() {
        for entries in [&[(1, 10), (3, 30)][..], &[(1, 10), (3, 30), (4, 40)]] {
            let mut history = setup();
            put(&mut history, 0, 4, Some(40));
            scan(&mut history, 1);
            ok_scan(&mut history, 1, entries).ok(0);
            let verdict = check(&history.build(), Listing::Sample);
            assert_eq!(verdict.validity, Validity::Valid, "{entries:?}: {verdict:?}");
        }
    }

    /// Each violation is flagged.
    #[test]
    fn each_violation_is_flagged() {
        let cases: [(&[(u64, u64)], &str); 6] = [
            (&[(1, 10), (1, 10), (3, 30)], "duplicate"),
            (&[(3, 30), (1, 10)], "out-of-order"),
            (&[(1, 10), (3, 30), (5, 50)], "never-written"),
            (&[(1, 10)], "skipped"),
            (&[(1, 10), (3, 31)], "wrong-value"),
            (&[(1, 10), (2, 20), (3, 30)], "deleted-key-seen"),
        ];
        for (entries, kind) in cases {
            let mut history = setup();
            put(&mut history, 2, 3, Some(31)).fail(2);
            scan(&mut history, 1);
            ok_scan(&mut history, 1, entries);
            let verdict = check(&history.build(), Listing::Sample);
            let found = kinds(&verdict);
            assert!(found.contains(&kind), "{kind}: {verdict:?}");
            assert_eq!(verdict.validity, Validity::Invalid, "{kind}");
        }
    }
}
