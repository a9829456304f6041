//! The TTL workload's checker (README, "Keys that expire": "expiry is oracle time, decided
//! inside the cluster ... from then on every read and write finds the key absent").
//!
//! Each `ok` read names a timestamp of the oracle `ts` — the one a `ttl-read-at` read at,
//! or one a linearizable `ttl-read` took before sending its get (its node judged expiry at
//! a later one) — and what it returned: the value and its expiry (`expires_at_ts`, 0:
//! never). For each:
//!
//! - `read-expired`: a value returned expires after `ts` (otherwise it was served when it
//!   had already expired). Reads at a timestamp come back without their expiry (the nodes
//!   answer `expires_at_ts` 0 for them, counted in a note): for them the expiry is the
//!   put's, at the latest its time to live after the first timestamp taken once the put was
//!   acknowledged (when no expire or persist came in between);
//! - `never-written` / `failed-write-read`: the value was put to that key by a put that did
//!   not certainly fail;
//! - `wrong-expiry`: a value put without a time to live carries an expiry only when an
//!   `expire` of its key may have applied after the put and before the read, and one put
//!   with a time to live carries none only when a `persist` may have; an expiry the put
//!   decided alone (no `expire` in between) lies its time to live after a commit timestamp
//!   between the timestamps of the oracle taken before the put and after it
//!   (`expiry-outside-write`);
//! - `resurrected`: once a read found the key absent after a value's put was acknowledged,
//!   no later read returns that value: the value expired and nothing revives an expired
//!   key (`expire` and `persist` leave absent keys alone; values are unique). Later is real
//!   time for linearizable reads and the timestamp order for reads at a timestamp.

use std::collections::{BTreeMap, HashMap};

use ringkv_client::timestamp::LOGICAL_BITS;

use super::watch::Clock;
use super::{Anomaly, AnomalyList, Listing, Validity, Verdict};
use crate::history::{History, OpType, OpValue, F};

/// Name of this checker in verdicts.
pub const CHECKER_NAME: &str = "ttl";

/// Anomalies of each kind listed by default.
const SAMPLE_PER_KIND: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Put {
    key: u64,
    ttl_ms: u64,
    invoke: u64,
    outcome: OpType,
    /// The ok completion's index.
    completion: Option<u64>,
}

/// An expire (`ttl_ms` > 0) or persist that did not certainly fail.
#[derive(Debug, Clone, Copy)]
struct Expiry {
    ttl_ms: u64,
    invoke: u64,
    /// Its completion's index; `u64::MAX` when unknown (it may apply at any time after).
    completion: u64,
}

#[derive(Debug, Clone, Copy)]
struct Read {
    key: u64,
    linearizable: bool,
    invoke: u64,
    completion: u64,
    ts: u64,
    /// `(value, expires_at_ts)` when present.
    found: Option<(u64, u64)>,
}

/// Checks the `ttl-put`, `expire`, `ttl-read` and `ttl-read-at` ops of `history`; other
/// ops are ignored.
pub fn check(history: &History, listing: Listing) -> Verdict {
    let pairs = match history.pairs() {
        Ok(pairs) => pairs,
        Err(error) => return Verdict::unknown(CHECKER_NAME, format!("malformed history: {error}")),
    };
    let mut puts: HashMap<u64, Put> = HashMap::new();
    let mut expiries: HashMap<u64, Vec<Expiry>> = HashMap::new();
    let mut reads = Vec::new();
    let mut timestamps = Vec::new();
    let mut ops_checked = 0usize;
    for pair in &pairs {
        let outcome = pair.outcome();
        let completion = pair.completion.map(|op| op.index);
        match (pair.f(), pair.result_value()) {
            (
                F::TtlPut,
                OpValue::TtlWrite {
                    key,
                    value: Some(value),
                    ttl_ms,
                },
            ) => {
                ops_checked += 1;
                puts.insert(
                    *value,
                    Put {
                        key: *key,
                        ttl_ms: *ttl_ms,
                        invoke: pair.invoke.index,
                        outcome,
                        completion: completion.filter(|_| outcome == OpType::Ok),
                    },
                );
            }
            (F::TtlExpire, OpValue::TtlWrite { key, ttl_ms, .. }) if outcome != OpType::Fail => {
                ops_checked += 1;
                expiries.entry(*key).or_default().push(Expiry {
                    ttl_ms: *ttl_ms,
                    invoke: pair.invoke.index,
                    completion: completion.filter(|_| outcome == OpType::Ok).unwrap_or(u64::MAX),
                });
            }
            (
                F::TtlRead | F::TtlReadAt,
                OpValue::TtlRead {
                    key,
                    ts: Some(ts),
                    value,
                    expires_at_ts,
                },
            ) if outcome == OpType::Ok => {
                ops_checked += 1;
                let Some(completion) = completion else { continue };
                timestamps.push((pair.invoke.index, completion, *ts));
                reads.push(Read {
                    key: *key,
                    linearizable: *pair.f() == F::TtlRead,
                    invoke: pair.invoke.index,
                    completion,
                    ts: *ts,
                    found: value.map(|value| (value, expires_at_ts.unwrap_or(0))),
                });
            }
            _ => {}
        }
    }
    let clock = Clock::new(timestamps);
    let mut anomalies = AnomalyList::new(listing, SAMPLE_PER_KIND);
    let no_expiries = Vec::new();
    let mut expired_reads = 0usize;
    for read in &reads {
        match read.found {
            None => expired_reads += 1,
            Some((value, expires_at_ts)) => {
                let expiries = expiries.get(&read.key).unwrap_or(&no_expiries);
                check_present_read(
                    read,
                    (value, expires_at_ts),
                    &puts,
                    expiries,
                    &clock,
                    &mut anomalies,
                );
            }
        }
    }
    check_resurrections(&reads, &puts, &clock, &mut anomalies);

    let mut notes = vec![format!(
        "{} reads ({} linearizable, {} at a timestamp), {expired_reads} found the key absent; {} puts \
         ({} acknowledged), {} expires and persists",
        reads.len(),
        reads.iter().filter(|read| read.linearizable).count(),
        reads.iter().filter(|read| !read.linearizable).count(),
        puts.len(),
        puts.values().filter(|put| put.outcome == OpType::Ok).count(),
        expiries.values().map(Vec::len).sum::<usize>()
    )];
    let validity = if anomalies.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    let (anomalies, more) = anomalies.finish();
    notes.extend(more);
    Verdict {
        validity,
        checker: CHECKER_NAME.to_string(),
        ops_checked,
        anomalies,
        notes,
    }
}

fn anomaly(kind: &str, read: &Read, description: String, mut ops: Vec<u64>) -> Anomaly {
    ops.insert(0, read.invoke);
    Anomaly {
        kind: kind.to_string(),
        key: Some(read.key),
        description: format!(
            "{} read of key {} (ts {}): {description}",
            if read.linearizable {
                "linearizable"
            } else {
                "timestamped"
            },
            read.key,
            read.ts
        ),
        ops,
    }
}

/// A read that returned `value` expiring at `expires_at_ts`.
fn check_present_read(
    read: &Read,
    (value, expires_at_ts): (u64, u64),
    puts: &HashMap<u64, Put>,
    expiries: &[Expiry],
    clock: &Clock,
    anomalies: &mut AnomalyList,
) {
    if expires_at_ts != 0 && expires_at_ts <= read.ts {
        anomalies.push(anomaly(
            "read-expired",
            read,
            format!("value {value} expired at {expires_at_ts}, at or before the read's timestamp"),
            Vec::new(),
        ));
    }
    let put = match puts.get(&value) {
        Some(put) if put.key == read.key => put,
        _ => {
            return anomalies.push(anomaly(
                "never-written",
                read,
                format!("value {value} was never put to this key"),
                Vec::new(),
            ))
        }
    };
    if put.outcome == OpType::Fail {
        return anomalies.push(anomaly(
            "failed-write-read",
            read,
            format!("value {value} was put by a put that certainly failed"),
            vec![put.invoke],
        ));
    }
    // Expires and persists that may have applied between the put and the read.
    let in_between = |persist: bool| {
        expiries.iter().any(|expiry| {
            (expiry.ttl_ms == 0) == persist
                && expiry.invoke < read.completion
                && expiry.completion > put.invoke
        })
    };
    if expires_at_ts != 0 && put.ttl_ms == 0 && !in_between(false) {
        anomalies.push(anomaly(
            "wrong-expiry",
            read,
            format!("value {value} was put without a time to live and no expire came in between, yet expires at {expires_at_ts}"),
            vec![put.invoke],
        ));
    }
    if expires_at_ts == 0 && put.ttl_ms != 0 && !in_between(true) {
        anomalies.push(anomaly(
            "wrong-expiry",
            read,
            format!(
                "value {value} was put with a time to live of {} ms and no persist came in between, yet never expires",
                put.ttl_ms
            ),
            vec![put.invoke],
        ));
    }
    if expires_at_ts != 0 && put.ttl_ms != 0 && !in_between(false) {
        let commit_ts = expires_at_ts.saturating_sub(put.ttl_ms << LOGICAL_BITS);
        let lower = clock.before(put.invoke);
        let upper = put.completion.and_then(|completion| clock.after(completion));
        if lower.is_some_and(|lower| commit_ts <= lower) || upper.is_some_and(|upper| commit_ts >= upper) {
            anomalies.push(anomaly(
                "expiry-outside-write",
                read,
                format!(
                    "value {value} expires at {expires_at_ts}, {} ms after {commit_ts}, outside the \
                     timestamps around its put ({lower:?}, {upper:?})",
                    put.ttl_ms
                ),
                vec![put.invoke],
            ));
        }
    }
}

/// No value read again after a read found its key absent once the value's put was
/// acknowledged.
fn check_resurrections(reads: &[Read], puts: &HashMap<u64, Put>, clock: &Clock, anomalies: &mut AnomalyList) {
    // Per key and kind: absent reads, by invocation with the earliest completion from each
    // position on (linearizable), or by timestamp (at a timestamp).
    let mut absent: BTreeMap<(u64, bool), Vec<(u64, u64)>> = BTreeMap::new();
    for read in reads.iter().filter(|read| read.found.is_none()) {
        let entry = if read.linearizable {
            (read.invoke, read.completion)
        } else {
            (read.ts, read.invoke)
        };
        absent
            .entry((read.key, read.linearizable))
            .or_default()
            .push(entry);
    }
    let mut earliest_completion: BTreeMap<(u64, bool), Vec<(u64, u64)>> = BTreeMap::new();
    for ((key, linearizable), entries) in &mut absent {
        entries.sort_unstable();
        if *linearizable {
            let mut earliest = vec![(u64::MAX, u64::MAX); entries.len() + 1];
            for position in (0..entries.len()).rev() {
                let (invoke, completion) = entries[position];
                earliest[position] = earliest[position + 1].min((completion, invoke));
            }
            earliest_completion.insert((*key, true), earliest);
        }
    }
    for read in reads {
        let Some((value, _)) = read.found else { continue };
        let Some(completion) = puts
            .get(&value)
            .filter(|put| put.key == read.key)
            .and_then(|put| put.completion)
        else {
            continue;
        };
        let Some(entries) = absent.get(&(read.key, read.linearizable)) else {
            continue;
        };
        let witness = if read.linearizable {
            // An absent read invoked after the put completed and completed before this one
            // was invoked.
            let start = entries.partition_point(|(invoke, _)| *invoke <= completion);
            earliest_completion
                .get(&(read.key, true))
                .map(|earliest| earliest[start])
                .filter(|(absent_completion, _)| *absent_completion < read.invoke)
                .map(|(_, absent_invoke)| absent_invoke)
        } else {
            // An absent read at a timestamp above the put's commit and below this one's.
            clock.after(completion).and_then(|committed_below| {
                let start = entries.partition_point(|(ts, _)| *ts < committed_below);
                entries
                    .get(start)
                    .filter(|(ts, _)| *ts < read.ts)
                    .map(|(_, absent_invoke)| *absent_invoke)
            })
        };
        if let Some(absent_invoke) = witness {
            anomalies.push(anomaly(
                "resurrected",
                read,
                format!("returned value {value}, though an earlier read found the key absent after its put was acknowledged"),
                vec![absent_invoke],
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Process};

    #[derive(Default)]
    struct Builder {
        ops: Vec<Op>,
    }

    impl Builder {
        fn push(&mut self, process: u64, op_type: OpType, f: F, value: OpValue) -> u64 {
            let index = self.ops.len() as u64;
            self.ops.push(Op {
                index,
                time_ns: index,
                process: Process::Client(process),
                op_type,
                f,
                value,
                error: None,
            });
            index
        }

        fn write(&mut self, f: F, key: u64, value: Option<u64>, ttl_ms: u64, outcome: OpType) {
            let write = OpValue::TtlWrite { key, value, ttl_ms };
            self.push(1, OpType::Invoke, f.clone(), write.clone());
            self.push(1, outcome, f, write);
        }

        fn read(&mut self, f: F, ts: u64, found: Option<(u64, u64)>) {
            let read = |ts, found: Option<(u64, u64)>| OpValue::TtlRead {
                key: 0,
                ts,
                value: found.map(|(value, _)| value),
                expires_at_ts: found.map(|(_, expires)| expires),
            };
            self.push(2, OpType::Invoke, f.clone(), read(None, None));
            self.push(2, OpType::Ok, f, read(Some(ts), found));
        }
    }

    const MS: u64 = 1 << LOGICAL_BITS;

    /// Ops appended to the base history by one negative control.
    type Extension = Box<dyn Fn(&mut Builder)>;

    /// A put with a 100 ms TTL committed between 1,000 and 1,050 ms; reads before its
    /// expiry see it, later ones find it absent.
    fn base() -> Builder {
        let mut builder = Builder::default();
        builder.read(F::TtlRead, 1_000 * MS, None);
        builder.write(F::TtlPut, 0, Some(7), 100, OpType::Ok);
        builder.read(F::TtlRead, 1_050 * MS, Some((7, 1_120 * MS)));
        builder.read(F::TtlReadAt, 1_100 * MS, Some((7, 1_120 * MS)));
        builder.read(F::TtlRead, 1_130 * MS, None);
        builder
    }

    fn check_built(builder: Builder) -> Verdict {
        check(&History { ops: builder.ops }, Listing::All)
    }

    #[test]
    fn values_before_their_expiry_are_valid() {
        let verdict = check_built(base());
        assert_eq!(verdict.validity, Validity::Valid, "{verdict:?}");
    }

    /// Negative controls: a value served at or after its expiry; a value back after the key
    /// was seen expired (linearizable and at timestamps); an expiry the put did not decide.
    #[test]
    fn expired_and_resurrected_values_are_caught() {
        let cases: Vec<(&str, Extension)> = vec![
            (
                "read-expired",
                Box::new(|b| b.read(F::TtlReadAt, 1_120 * MS, Some((7, 1_120 * MS)))),
            ),
            (
                "read-expired",
                Box::new(|b| b.read(F::TtlRead, 1_200 * MS, Some((7, 1_120 * MS)))),
            ),
            (
                "resurrected",
                Box::new(|b| b.read(F::TtlRead, 1_100 * MS, Some((7, 1_120 * MS)))),
            ),
            (
                "resurrected",
                Box::new(|b| {
                    b.read(F::TtlReadAt, 1_110 * MS, None);
                    b.read(F::TtlReadAt, 1_115 * MS, Some((7, 1_120 * MS)));
                }),
            ),
            (
                "wrong-expiry",
                Box::new(|b| b.read(F::TtlRead, 1_101 * MS, Some((7, 0)))),
            ),
            // At a timestamp the expiry comes back as well: 0 for a value put with a TTL
            // is wrong there too.
            (
                "wrong-expiry",
                Box::new(|b| b.read(F::TtlReadAt, 1_101 * MS, Some((7, 0)))),
            ),
            (
                "expiry-outside-write",
                Box::new(|b| b.read(F::TtlReadAt, 1_101 * MS, Some((7, 2_000 * MS)))),
            ),
            (
                "never-written",
                Box::new(|b| b.read(F::TtlReadAt, 1_101 * MS, Some((8, 0)))),
            ),
        ];
        for (kind, extend) in cases {
            let mut builder = base();
            extend(&mut builder);
            let verdict = check_built(builder);
            assert_eq!(verdict.validity, Validity::Invalid, "{kind}: {verdict:?}");
            assert!(
                verdict.anomalies.iter().any(|anomaly| anomaly.kind == kind),
                "{kind}: {verdict:?}"
            );
        }
    }

    /// An expire or persist that may have applied in between explains a changed expiry.
    #[test]
    fn expire_and_persist_change_the_expiry() {
        let mut builder = base();
        builder.write(F::TtlPut, 0, Some(9), 0, OpType::Ok);
        builder.write(F::TtlExpire, 0, None, 500, OpType::Info);
        builder.read(F::TtlRead, 1_200 * MS, Some((9, 1_650 * MS)));
        builder.write(F::TtlPut, 0, Some(10), 300, OpType::Ok);
        builder.write(F::TtlExpire, 0, None, 0, OpType::Ok);
        builder.read(F::TtlRead, 1_300 * MS, Some((10, 0)));
        let verdict = check_built(builder);
        assert_eq!(verdict.validity, Validity::Valid, "{verdict:?}");
    }

    /// The new ops survive the EDN round trip.
    #[test]
    fn ttl_ops_round_trip_through_edn() {
        let history = History { ops: base().ops };
        let text = crate::edn::history_to_edn(&history);
        assert_eq!(crate::edn::parse_history(&text).expect("parse"), history);
    }
}
