//! The bank checker: transfers move money between [`ACCOUNTS`] accounts, so every read of all
//! of them as one snapshot sums to [`TOTAL`] and shows no negative balance (a transfer moves
//! money only from an account that holds it, as the transaction read it).
//!
//! What a read must show depends on the level it ran at:
//!
//! - **repeatable read and stronger** (one snapshot per transaction, first committer wins):
//!   every `ok` read sums to the total with no negative balance; a read that does not is a
//!   `wrong-total` or `negative-value` anomaly.
//! - **read committed and read uncommitted**: a read takes a fresh timestamp per key (or sees
//!   provisional values), and two transfers reading the same balance can both commit (lost
//!   update), so wrong totals and negative balances are allowed. They are listed, with how
//!   many were seen, and the verdict stays valid: a level that shows them is what it says.
//!
//! At every level an account without a balance (`missing-account`) or with one no transfer
//! could have written (`garbage-balance`) is a violation: nothing deletes or corrupts accounts.

use std::collections::BTreeMap;

use crate::checker::elle::Isolation;
use crate::checker::{Anomaly, Listing, Validity, Verdict};
use crate::history::{History, OpType, OpValue, F};

/// Accounts of the bank workload.
pub const ACCOUNTS: u64 = 8;

/// Each account's balance before the first transfer.
pub const INITIAL_BALANCE: i64 = 100;

/// What every snapshot of all accounts sums to.
pub const TOTAL: i64 = ACCOUNTS as i64 * INITIAL_BALANCE;

/// Name of this checker in verdicts.
pub const CHECKER_NAME: &str = "bank";

/// Most anomalies of one kind listed in a report (all are counted).
const MAX_LISTED_PER_KIND: usize = 16;

/// The balance the workload records for a stored value that is not a number.
const GARBAGE: i64 = crate::bank::GARBAGE;

/// Checks every bank read of `history` against `level`.
pub fn check(history: &History, level: Isolation) -> Verdict {
    check_with(history, level, Listing::Sample)
}

/// [`check`], listing as many anomalies of each kind as `listing` says.
pub fn check_with(history: &History, level: Isolation, listing: Listing) -> Verdict {
    let max_listed = listing.limit(MAX_LISTED_PER_KIND);
    let pairs = match history.pairs() {
        Ok(pairs) => pairs,
        Err(err) => return Verdict::unknown(CHECKER_NAME, format!("malformed history: {err}")),
    };
    let snapshot_reads = level >= Isolation::RepeatableRead;
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut anomalies = Vec::new();
    let mut transfers = [0usize; 3];
    let mut reads = 0usize;
    let (mut lowest, mut highest) = (i64::MAX, i64::MIN);
    for pair in &pairs {
        match pair.f() {
            F::Transfer => match pair.outcome() {
                OpType::Ok => transfers[0] += 1,
                OpType::Fail => transfers[1] += 1,
                _ => transfers[2] += 1,
            },
            F::BankRead if pair.outcome() == OpType::Ok => {
                let OpValue::Balances(Some(balances)) = pair.result_value() else {
                    continue;
                };
                reads += 1;
                let ops: Vec<u64> = std::iter::once(pair.invoke.index)
                    .chain(pair.completion.map(|completion| completion.index))
                    .collect();
                let mut found = Vec::new();
                let missing: Vec<usize> = (0..ACCOUNTS as usize)
                    .filter(|account| balances.get(*account).copied().flatten().is_none())
                    .collect();
                if !missing.is_empty() || balances.len() != ACCOUNTS as usize {
                    found.push((
                        "missing-account",
                        format!("accounts {missing:?} have no balance: {balances:?}"),
                    ));
                }
                if balances.contains(&Some(GARBAGE)) {
                    found.push((
                        "garbage-balance",
                        format!("a balance is not a number: {balances:?}"),
                    ));
                }
                if found.is_empty() {
                    let total: i64 = balances.iter().flatten().sum();
                    lowest = lowest.min(total);
                    highest = highest.max(total);
                    if total != TOTAL {
                        found.push((
                            "wrong-total",
                            format!("balances sum to {total}, not {TOTAL}: {balances:?}"),
                        ));
                    }
                    if balances.iter().flatten().any(|balance| *balance < 0) {
                        found.push(("negative-value", format!("a balance is negative: {balances:?}")));
                    }
                }
                for (kind, description) in found {
                    let count = counts.entry(kind).or_default();
                    *count += 1;
                    if *count <= max_listed {
                        anomalies.push(Anomaly {
                            kind: kind.to_string(),
                            key: None,
                            description,
                            ops: ops.clone(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    let forbids = |kind: &str| snapshot_reads || matches!(kind, "missing-account" | "garbage-balance");
    let describe = |forbidden: bool| {
        counts
            .iter()
            .filter(|(kind, _)| forbids(kind) == forbidden)
            .map(|(kind, count)| format!("{kind} ({count})"))
            .collect::<Vec<_>>()
    };
    let (forbidden, allowed) = (describe(true), describe(false));
    let mut notes = vec![
        format!(
            "checked against {level}: {}",
            if snapshot_reads {
                "every read is one snapshot, so it sums to the total with no negative balance"
            } else {
                "reads are not snapshots and updates may be lost, so only missing and garbage balances are violations"
            }
        ),
        format!(
            "{} transfers: {} ok, {} failed, {} unknown; {reads} reads of every account",
            transfers.iter().sum::<usize>(),
            transfers[0],
            transfers[1],
            transfers[2]
        ),
    ];
    if reads > 0 && lowest <= highest {
        notes.push(format!("totals read: {lowest} to {highest} (expected {TOTAL})"));
    }
    if !forbidden.is_empty() {
        notes.push(format!("forbidden at {level}: {}", forbidden.join(", ")));
    }
    if !allowed.is_empty() {
        notes.push(format!(
            "allowed at {level} (listed, not violations): {}",
            allowed.join(", ")
        ));
    }
    let validity = if !forbidden.is_empty() {
        Validity::Invalid
    } else if reads == 0 {
        notes.push("no read succeeded: nothing to check".to_string());
        Validity::Unknown
    } else {
        Validity::Valid
    };
    Verdict {
        validity,
        checker: CHECKER_NAME.to_string(),
        ops_checked: transfers.iter().sum::<usize>() + reads,
        anomalies,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Process};

    fn op(index: u64, process: u64, op_type: OpType, f: F, value: OpValue) -> Op {
        Op {
            index,
            time_ns: index * 1000,
            process: Process::Client(process),
            op_type,
            f,
            value,
            error: None,
        }
    }

    /// A history of one transfer and one read that saw `balances`.
    fn history(balances: Vec<Option<i64>>) -> History {
        let transfer = OpValue::Transfer {
            from: 0,
            to: 1,
            amount: 5,
        };
        History::new(vec![
            op(0, 0, OpType::Invoke, F::Transfer, transfer.clone()),
            op(1, 1, OpType::Invoke, F::BankRead, OpValue::Balances(None)),
            op(2, 0, OpType::Ok, F::Transfer, transfer),
            op(3, 1, OpType::Ok, F::BankRead, OpValue::Balances(Some(balances))),
        ])
    }

    fn balances(first: i64, second: i64) -> Vec<Option<i64>> {
        let mut balances = vec![Some(INITIAL_BALANCE); ACCOUNTS as usize];
        balances[0] = Some(first);
        balances[1] = Some(second);
        balances
    }

    fn kinds(verdict: &Verdict) -> Vec<&str> {
        verdict
            .anomalies
            .iter()
            .map(|anomaly| anomaly.kind.as_str())
            .collect()
    }

    #[test]
    fn a_conserved_total_is_valid_at_every_level() {
        for level in Isolation::ALL {
            let verdict = check(&history(balances(95, 105)), level);
            assert_eq!(verdict.validity, Validity::Valid, "{level}: {verdict:?}");
        }
    }

    #[test]
    fn a_wrong_total_is_forbidden_only_under_snapshot_levels() {
        // The read saw the debit but not the credit: a fractured read.
        let fractured = history(balances(95, 100));
        for level in [Isolation::RepeatableRead, Isolation::StrictSerializable] {
            let verdict = check(&fractured, level);
            assert_eq!(verdict.validity, Validity::Invalid, "{level}");
            assert_eq!(kinds(&verdict), ["wrong-total"]);
            assert_eq!(verdict.anomalies[0].ops, [1, 3]);
        }
        let verdict = check(&fractured, Isolation::ReadCommitted);
        assert_eq!(verdict.validity, Validity::Valid);
        assert_eq!(kinds(&verdict), ["wrong-total"], "listed though allowed");
        assert!(verdict
            .notes
            .iter()
            .any(|note| note.contains("allowed at read-committed")));
    }

    #[test]
    fn a_negative_balance_is_forbidden_under_snapshot_levels() {
        let verdict = check(&history(balances(-5, 205)), Isolation::RepeatableRead);
        assert_eq!(verdict.validity, Validity::Invalid);
        assert_eq!(kinds(&verdict), ["negative-value"]);
    }

    #[test]
    fn missing_and_garbage_balances_are_forbidden_at_every_level() {
        let mut missing = balances(100, 100);
        missing[3] = None;
        let mut garbage = balances(100, 100);
        garbage[2] = Some(GARBAGE);
        for (read, kind) in [(missing, "missing-account"), (garbage, "garbage-balance")] {
            let verdict = check(&history(read), Isolation::ReadUncommitted);
            assert_eq!(verdict.validity, Validity::Invalid, "{kind}");
            assert_eq!(kinds(&verdict), [kind]);
        }
    }

    #[test]
    fn failed_reads_check_nothing() {
        let history = History::new(vec![
            op(0, 1, OpType::Invoke, F::BankRead, OpValue::Balances(None)),
            op(1, 1, OpType::Fail, F::BankRead, OpValue::Balances(None)),
        ]);
        assert_eq!(
            check(&history, Isolation::Serializable).validity,
            Validity::Unknown
        );
    }
}
