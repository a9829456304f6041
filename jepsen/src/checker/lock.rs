//! The lock workload's checker (README "Leases, locks and elections", "What a lock
//! promises"): fencing tokens keep a resource safe even when two clients believe they hold
//! the lock at once; mutual exclusion itself is not promised under pauses, so it is
//! reported, not required.
//!
//! Invalid when:
//!
//! - `fencing-violated`: the resource accepted a write with a token lower than one it had
//!   accepted before. The accepted writes are put in the order they took effect by their
//!   place in the resource's order (`seq`, each write compare-and-sets `seq + 1` on the
//!   state it read); every write also reports the `(seq, token)` it read, so a write of
//!   unknown outcome that took effect is placed too once someone read its state;
//! - `forked-resource`: two writes took effect on the same resource state (two `ok` writes
//!   with one `seq`, or one place read with two tokens): a compare-and-set that was not
//!   atomic;
//! - `duplicate-token`: two acquisitions of one lock returned the same token;
//! - `token-not-increasing`: an acquisition completed before another was invoked, yet its
//!   token is not lower (tokens are oracle commit timestamps, so later holders' are higher).
//!
//! Reported only (notes): how many acquisitions, releases and guarded writes; `overlaps`,
//! two holders of one lock whose holdings intersect in the history (a holding runs from
//! the acquisition's completion to the release's invocation, or to the end of its last
//! guarded write when it let the lease lapse); and `stale writes`, guarded writes invoked
//! after a higher token of their lock was acquired, by outcome: refused, accepted (the
//! resource had not seen the newer holder yet: it writes in token order all the same),
//! or failed otherwise or unknown.

use std::collections::{BTreeMap, HashMap};

use super::{Anomaly, AnomalyList, Listing, Validity, Verdict};
use crate::history::{History, OpType, OpValue, Process, F};

/// Name of this checker in verdicts.
pub const CHECKER_NAME: &str = "lock";

/// Anomalies of each kind listed by default.
const SAMPLE_PER_KIND: usize = 16;

/// An acquisition that succeeded.
#[derive(Debug, Clone, Copy)]
struct Acquired {
    invoke: u64,
    completion: u64,
    token: u64,
}

/// What a place in a resource's order is known to hold, which op said so first, and the
/// `ok` write that took it, once one did.
#[derive(Debug, Clone, Copy)]
struct Placed {
    token: u64,
    op: u64,
    written_by: Option<u64>,
}

/// One client's holding of a lock, from the history's point of view.
#[derive(Debug, Clone, Copy)]
struct Holding {
    process: u64,
    token: u64,
    start: u64,
    end: u64,
    start_ns: u64,
    end_ns: u64,
}

/// Counts reported in the verdict's notes.
#[derive(Debug, Default)]
struct Counts {
    acquired: usize,
    acquire_failed: usize,
    acquire_unknown: usize,
    accepted: usize,
    refused: usize,
    write_failed: usize,
    write_unknown: usize,
    released: usize,
    release_lapsed: usize,
    overlaps: usize,
    longest_overlap_ns: u64,
    stale_refused: usize,
    stale_accepted: usize,
    stale_other: usize,
}

/// Checks the `lock-acquire`, `guarded-write` and `lock-release` ops of `history`; other
/// ops are ignored.
pub fn check(history: &History, listing: Listing) -> Verdict {
    let pairs = match history.pairs() {
        Ok(pairs) => pairs,
        Err(error) => return Verdict::unknown(CHECKER_NAME, format!("malformed history: {error}")),
    };
    let mut anomalies = AnomalyList::new(listing, SAMPLE_PER_KIND);
    let mut counts = Counts::default();
    let mut acquisitions: BTreeMap<u64, Vec<Acquired>> = BTreeMap::new();
    // Per lock: what each place of its resource's order holds.
    let mut placed: BTreeMap<u64, BTreeMap<u64, Placed>> = BTreeMap::new();
    // Per process: its current holding's lock, and per lock the holdings.
    let mut open_holding: HashMap<u64, (u64, Holding)> = HashMap::new();
    let mut holdings: BTreeMap<u64, Vec<Holding>> = BTreeMap::new();
    // Per lock: guarded writes as (invoke, token, outcome class) for the stale-write report.
    let mut writes: BTreeMap<u64, Vec<(u64, u64, WriteClass)>> = BTreeMap::new();
    let mut ops_checked = 0;

    let mut place = |anomalies: &mut AnomalyList,
                     lock: u64,
                     seq: u64,
                     token: u64,
                     op: u64,
                     ok_write: bool| {
        let places = placed.entry(lock).or_default();
        let written_by = ok_write.then_some(op);
        let known = places.entry(seq).or_insert(Placed {
            token,
            op,
            written_by,
        });
        let second_writer = match (known.written_by, written_by) {
            (Some(first), Some(second)) if first != second => Some(first),
            _ => None,
        };
        if known.token != token || second_writer.is_some() {
            let other = second_writer.unwrap_or(known.op);
            anomalies.push(Anomaly {
                kind: "forked-resource".to_string(),
                key: Some(lock),
                description: format!(
                    "lock {lock}'s resource: place {seq} holds token {} (op {other}) and token {token} (op {op}): \
                     two writes took effect on one state",
                    known.token
                ),
                ops: vec![other, op],
            });
        }
        known.written_by = known.written_by.or(written_by);
    };

    for pair in &pairs {
        let Process::Client(process) = pair.process() else {
            continue;
        };
        let outcome = pair.outcome();
        let invoke = pair.invoke.index;
        let (completion, completion_ns) = pair
            .completion
            .map_or((invoke, pair.invoke.time_ns), |op| (op.index, op.time_ns));
        match (pair.f(), pair.result_value()) {
            (F::LockAcquire, OpValue::Lock { lock, token }) => {
                ops_checked += 1;
                close_holding(&mut open_holding, &mut holdings, process);
                match (outcome, token) {
                    (OpType::Ok, Some(token)) => {
                        counts.acquired += 1;
                        acquisitions.entry(*lock).or_default().push(Acquired {
                            invoke,
                            completion,
                            token: *token,
                        });
                        let holding = Holding {
                            process,
                            token: *token,
                            start: completion,
                            end: completion,
                            start_ns: completion_ns,
                            end_ns: completion_ns,
                        };
                        open_holding.insert(process, (*lock, holding));
                    }
                    (OpType::Ok, None) => {
                        return Verdict::unknown(
                            CHECKER_NAME,
                            format!("op {invoke}: an ok acquisition without a token"),
                        )
                    }
                    (OpType::Fail, _) => counts.acquire_failed += 1,
                    _ => counts.acquire_unknown += 1,
                }
            }
            (
                F::GuardedWrite,
                OpValue::GuardedWrite {
                    lock,
                    token,
                    seq,
                    seen,
                },
            ) => {
                ops_checked += 1;
                if let Some((seen_seq, seen_token)) = *seen {
                    place(&mut anomalies, *lock, seen_seq, seen_token, invoke, false);
                }
                let class = match (outcome, seq, seen) {
                    (OpType::Ok, Some(seq), _) => {
                        place(&mut anomalies, *lock, *seq, *token, invoke, true);
                        counts.accepted += 1;
                        WriteClass::Accepted
                    }
                    (OpType::Ok, None, _) => {
                        return Verdict::unknown(
                            CHECKER_NAME,
                            format!("op {invoke}: an ok guarded write without its place"),
                        )
                    }
                    (OpType::Fail, None, Some((_, seen_token))) if seen_token > token => {
                        counts.refused += 1;
                        WriteClass::Refused
                    }
                    (OpType::Fail, _, _) => {
                        counts.write_failed += 1;
                        WriteClass::Other
                    }
                    _ => {
                        counts.write_unknown += 1;
                        WriteClass::Other
                    }
                };
                writes.entry(*lock).or_default().push((invoke, *token, class));
                extend_holding(
                    &mut open_holding,
                    process,
                    *lock,
                    *token,
                    completion,
                    completion_ns,
                );
            }
            (F::LockRelease, OpValue::Lock { lock, token }) => {
                ops_checked += 1;
                match outcome {
                    OpType::Ok => counts.released += 1,
                    OpType::Fail => counts.release_lapsed += 1,
                    _ => {}
                }
                if let Some(token) = token {
                    extend_holding(
                        &mut open_holding,
                        process,
                        *lock,
                        *token,
                        invoke,
                        pair.invoke.time_ns,
                    );
                }
                close_holding(&mut open_holding, &mut holdings, process);
            }
            _ => {}
        }
    }
    for (lock, holding) in open_holding.into_values() {
        holdings.entry(lock).or_default().push(holding);
    }

    for (lock, places) in &placed {
        check_fencing(*lock, places, &mut anomalies);
    }
    for (lock, acquired) in &mut acquisitions {
        check_tokens(*lock, acquired, &mut anomalies);
    }
    for lock_holdings in holdings.values_mut() {
        count_overlaps(lock_holdings, &mut counts);
    }
    for (lock, lock_writes) in &writes {
        count_stale_writes(
            lock_writes,
            acquisitions.get(lock).map_or(&[][..], Vec::as_slice),
            &mut counts,
        );
    }

    let validity = if anomalies.is_empty() {
        Validity::Valid
    } else {
        Validity::Invalid
    };
    let (anomalies, mut notes) = anomalies.finish();
    notes.push(format!(
        "acquisitions: {} ok, {} failed, {} unknown; releases: {} ok, {} after the lease lapsed",
        counts.acquired,
        counts.acquire_failed,
        counts.acquire_unknown,
        counts.released,
        counts.release_lapsed
    ));
    notes.push(format!(
        "guarded writes: {} accepted, {} refused (a higher token seen), {} failed otherwise, {} unknown",
        counts.accepted, counts.refused, counts.write_failed, counts.write_unknown
    ));
    notes.push(format!(
        "overlaps (two holders at once, not promised under pauses): {}, the longest {} ms",
        counts.overlaps,
        counts.longest_overlap_ns / 1_000_000
    ));
    notes.push(format!(
        "stale writes (invoked after a higher token was acquired): {} refused, {} accepted (a fenced resource \
         accepts one only before the newer holder's first write), {} failed otherwise or unknown",
        counts.stale_refused, counts.stale_accepted, counts.stale_other
    ));
    Verdict {
        validity,
        checker: CHECKER_NAME.to_string(),
        ops_checked,
        anomalies,
        notes,
    }
}

/// How a guarded write ended, for the stale-write report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteClass {
    Accepted,
    Refused,
    Other,
}

/// Ends `process`'s open holding, if any.
fn close_holding(
    open_holding: &mut HashMap<u64, (u64, Holding)>,
    holdings: &mut BTreeMap<u64, Vec<Holding>>,
    process: u64,
) {
    if let Some((lock, holding)) = open_holding.remove(&process) {
        holdings.entry(lock).or_default().push(holding);
    }
}

/// Extends `process`'s open holding of `lock` with `token` to `end`.
fn extend_holding(
    open_holding: &mut HashMap<u64, (u64, Holding)>,
    process: u64,
    lock: u64,
    token: u64,
    end: u64,
    end_ns: u64,
) {
    if let Some((held_lock, holding)) = open_holding.get_mut(&process) {
        if *held_lock == lock && holding.token == token && end > holding.end {
            holding.end = end;
            holding.end_ns = end_ns;
        }
    }
}

/// In the resource's order, tokens never go back.
fn check_fencing(lock: u64, places: &BTreeMap<u64, Placed>, anomalies: &mut AnomalyList) {
    let mut highest: Option<(u64, Placed)> = None;
    for (seq, placed) in places {
        match highest {
            Some((highest_seq, highest_placed)) if placed.token < highest_placed.token => {
                anomalies.push(Anomaly {
                    kind: "fencing-violated".to_string(),
                    key: Some(lock),
                    description: format!(
                        "lock {lock}'s resource accepted token {} at place {seq} after token {} at place {highest_seq}",
                        placed.token, highest_placed.token
                    ),
                    ops: vec![highest_placed.op, placed.op],
                });
            }
            _ => highest = Some((*seq, *placed)),
        }
    }
}

/// Tokens are unique per lock and increase in real time.
fn check_tokens(lock: u64, acquired: &mut [Acquired], anomalies: &mut AnomalyList) {
    acquired.sort_by_key(|acquisition| acquisition.completion);
    // The highest token among the first `n` completions, and its acquisition.
    let mut highest_before: Vec<Option<Acquired>> = Vec::with_capacity(acquired.len() + 1);
    highest_before.push(None);
    for acquisition in acquired.iter() {
        let highest = match highest_before.last().copied().flatten() {
            Some(highest) if highest.token >= acquisition.token => highest,
            _ => *acquisition,
        };
        highest_before.push(Some(highest));
    }
    let mut seen_tokens: HashMap<u64, u64> = HashMap::new();
    for acquisition in acquired.iter() {
        if let Some(other) = seen_tokens.insert(acquisition.token, acquisition.invoke) {
            anomalies.push(Anomaly {
                kind: "duplicate-token".to_string(),
                key: Some(lock),
                description: format!(
                    "two acquisitions of lock {lock} returned token {}",
                    acquisition.token
                ),
                ops: vec![other, acquisition.invoke],
            });
        }
        let completed_before = acquired.partition_point(|earlier| earlier.completion < acquisition.invoke);
        if let Some(highest) = highest_before[completed_before] {
            if highest.token >= acquisition.token {
                anomalies.push(Anomaly {
                    kind: "token-not-increasing".to_string(),
                    key: Some(lock),
                    description: format!(
                        "lock {lock}: an acquisition completed with token {} before another was invoked, which got \
                         token {}",
                        highest.token, acquisition.token
                    ),
                    ops: vec![highest.invoke, acquisition.invoke],
                });
            }
        }
    }
}

/// Counts pairs of holdings of one lock (by different processes) that intersect.
fn count_overlaps(holdings: &mut [Holding], counts: &mut Counts) {
    holdings.sort_by_key(|holding| holding.start);
    for (position, holding) in holdings.iter().enumerate() {
        for later in &holdings[position + 1..] {
            if later.start >= holding.end {
                break;
            }
            if later.process != holding.process {
                counts.overlaps += 1;
                let overlap_ns = holding.end_ns.min(later.end_ns).saturating_sub(later.start_ns);
                counts.longest_overlap_ns = counts.longest_overlap_ns.max(overlap_ns);
            }
        }
    }
}

/// Classifies the guarded writes invoked after an acquisition of a higher token completed.
fn count_stale_writes(writes: &[(u64, u64, WriteClass)], acquired: &[Acquired], counts: &mut Counts) {
    // `acquired` is sorted by completion (`check_tokens`): the highest token completed
    // before each write's invocation.
    let mut highest_by_completion = Vec::with_capacity(acquired.len());
    let mut highest = 0;
    for acquisition in acquired {
        highest = highest.max(acquisition.token);
        highest_by_completion.push((acquisition.completion, highest));
    }
    for (invoke, token, class) in writes {
        let completed_before = highest_by_completion.partition_point(|(completion, _)| completion < invoke);
        let Some((_, highest)) = completed_before
            .checked_sub(1)
            .map(|last| highest_by_completion[last])
        else {
            continue;
        };
        if highest > *token {
            match class {
                WriteClass::Refused => counts.stale_refused += 1,
                WriteClass::Accepted => counts.stale_accepted += 1,
                WriteClass::Other => counts.stale_other += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::fixtures::Builder;

    fn acquire(builder: &mut Builder, process: u64, token: u64) -> &mut Builder {
        builder
            .invoke(process, F::LockAcquire, OpValue::Lock { lock: 0, token: None })
            .finish(
                process,
                OpType::Ok,
                Some(OpValue::Lock {
                    lock: 0,
                    token: Some(token),
                }),
            )
    }

    fn write_value(token: u64, seq: Option<u64>, seen: Option<(u64, u64)>) -> OpValue {
        OpValue::GuardedWrite {
            lock: 0,
            token,
            seq,
            seen,
        }
    }

    /// A guarded write of `token` that read `seen` and completed `op_type` (placed at
    /// `seen.0 + 1` unless refused).
    fn write(
        builder: &mut Builder,
        process: u64,
        token: u64,
        seen: (u64, u64),
        op_type: OpType,
    ) -> &mut Builder {
        let seq = (op_type != OpType::Fail).then_some(seen.0 + 1);
        builder
            .invoke(process, F::GuardedWrite, write_value(token, None, None))
            .finish(process, op_type, Some(write_value(token, seq, Some(seen))))
    }

    fn release(builder: &mut Builder, process: u64, token: u64, op_type: OpType) -> &mut Builder {
        let value = OpValue::Lock {
            lock: 0,
            token: Some(token),
        };
        builder
            .invoke(process, F::LockRelease, value.clone())
            .finish(process, op_type, Some(value))
    }

    fn kinds(verdict: &Verdict) -> Vec<&str> {
        verdict
            .anomalies
            .iter()
            .map(|anomaly| anomaly.kind.as_str())
            .collect()
    }

    /// Two holders one after the other, then a stale holder refused while it overlapped a
    /// newer one: valid, and the overlap and the refusal are reported.
    #[test]
    fn fenced_stale_holder_is_valid_and_reported() {
        let mut builder = Builder::default();
        acquire(&mut builder, 1, 10);
        write(&mut builder, 1, 10, (0, 0), OpType::Ok);
        release(&mut builder, 1, 10, OpType::Ok);
        acquire(&mut builder, 2, 20);
        write(&mut builder, 2, 20, (1, 10), OpType::Ok);
        // Process 2 pauses; its lease lapses and process 3 takes over.
        acquire(&mut builder, 3, 30);
        write(&mut builder, 3, 30, (2, 20), OpType::Ok);
        write(&mut builder, 2, 20, (3, 30), OpType::Fail);
        release(&mut builder, 2, 20, OpType::Fail);
        release(&mut builder, 3, 30, OpType::Ok);
        let verdict = check(&builder.build(), Listing::Sample);
        assert_eq!(verdict.validity, Validity::Valid, "{verdict:?}");
        let notes = verdict.notes.join("\n");
        assert!(notes.contains("3 accepted, 1 refused"), "{notes}");
        assert!(
            notes.contains("overlaps (two holders at once, not promised under pauses): 1"),
            "{notes}"
        );
        assert!(
            notes.contains("stale writes (invoked after a higher token was acquired): 1 refused"),
            "{notes}"
        );
    }

    /// The negative control: a stale holder's lower token accepted after a higher one.
    #[test]
    fn accepted_lower_token_is_invalid() {
        let mut builder = Builder::default();
        acquire(&mut builder, 1, 10);
        acquire(&mut builder, 2, 20);
        write(&mut builder, 2, 20, (0, 0), OpType::Ok);
        write(&mut builder, 1, 10, (1, 20), OpType::Ok);
        let verdict = check(&builder.build(), Listing::Sample);
        assert_eq!(verdict.validity, Validity::Invalid);
        assert_eq!(kinds(&verdict), ["fencing-violated"]);
    }

    /// A write of unknown outcome that took effect is placed by the write that read it.
    #[test]
    fn unknown_write_seen_later_is_checked() {
        let mut builder = Builder::default();
        acquire(&mut builder, 1, 20);
        write(&mut builder, 1, 20, (0, 0), OpType::Ok);
        // Token 10 written with an unknown outcome; a later read shows it took effect.
        write(&mut builder, 2, 10, (1, 20), OpType::Info);
        write(&mut builder, 1, 20, (2, 10), OpType::Ok);
        let verdict = check(&builder.build(), Listing::Sample);
        assert_eq!(kinds(&verdict), ["fencing-violated"]);
    }

    /// A write invoked first may read the state a write invoked later took: not a fork
    /// (a run's history had it, op 238 reading what op 240 wrote).
    #[test]
    fn reading_a_later_invoked_write_is_not_a_fork() {
        let mut builder = Builder::default();
        acquire(&mut builder, 1, 10);
        acquire(&mut builder, 2, 20);
        builder
            .invoke(2, F::GuardedWrite, write_value(20, None, None))
            .invoke(1, F::GuardedWrite, write_value(10, None, None))
            .finish(1, OpType::Ok, Some(write_value(10, Some(1), Some((0, 0)))))
            .finish(2, OpType::Ok, Some(write_value(20, Some(2), Some((1, 10)))));
        let verdict = check(&builder.build(), Listing::Sample);
        assert_eq!(verdict.validity, Validity::Valid, "{verdict:?}");
    }

    /// Two writes that both took effect on one state: a compare-and-set that was not atomic.
    #[test]
    fn two_writes_on_one_state_are_a_fork() {
        let mut builder = Builder::default();
        acquire(&mut builder, 1, 10);
        write(&mut builder, 1, 10, (0, 0), OpType::Ok);
        write(&mut builder, 1, 10, (0, 0), OpType::Ok);
        let verdict = check(&builder.build(), Listing::Sample);
        assert_eq!(kinds(&verdict), ["forked-resource"]);
    }

    /// An acquisition invoked after another completed must get a higher token, and tokens
    /// are never handed out twice.
    #[test]
    fn tokens_must_increase_in_real_time() {
        let mut builder = Builder::default();
        acquire(&mut builder, 1, 20);
        release(&mut builder, 1, 20, OpType::Ok);
        acquire(&mut builder, 2, 20);
        release(&mut builder, 2, 20, OpType::Ok);
        acquire(&mut builder, 3, 15);
        let verdict = check(&builder.build(), Listing::Sample);
        let mut found = kinds(&verdict);
        found.sort_unstable();
        assert_eq!(
            found,
            ["duplicate-token", "token-not-increasing", "token-not-increasing"]
        );
    }
}
