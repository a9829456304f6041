//! Linearizability of a set of registers (one per key, initially `nil`) under `read`,
//! `write` and `cas(from, to)`, checked with the Wing–Gong–Lowe search (as in Knossos and
//! Porcupine).
//!
//! # Semantics
//! - An `ok` op took effect exactly once, at some point between its invocation and its
//!   completion; an `ok` read must return the register's value at that point, and an `ok` cas
//!   found its expected value there.
//! - A `fail` op never took effect: it is excluded.
//! - An `info` op (or one never completed) may take effect at any point after its invocation,
//!   or never: its completion is at +infinity and the search may leave it out. An `info` read
//!   tells nothing and is dropped.
//!
//! Time is the history index (the recorder assigns indexes in real-time order), so op A
//! precedes op B exactly when A's completion index is below B's invocation index.
//!
//! # P-compositionality
//! Linearizability is local (Herlihy & Wing): a history of many registers is linearizable iff
//! each key's sub-history is linearizable. The checker therefore splits the history by key and
//! checks each key independently (in parallel, on up to `max_threads` threads), which keeps
//! each search small.
//!
//! # The search (per key)
//! Each op becomes a call entry and a return entry in a doubly linked list sorted by time; the
//! return entry sits at the op's deadline (its completion, earlier when an observation forces
//! it, +infinity for an optional `info` op). In a configuration, the *pending* ops are those
//! whose call entries precede the first return entry: any of them may take effect next, and
//! the op of that first return entry must take effect before any later call. The search
//! linearizes a pending op the register model accepts: it *lifts* it (unlinks its call and
//! return entries), pushes it on a stack with the value before it, and continues from the new
//! configuration. When no pending op works, it pops the last choice, *unlifts* it (relinks
//! both entries, in reverse order) and tries the next candidate of that configuration. A cache
//! of (set of linearized ops, register value) prunes configurations already explored; values
//! no op observes are one cache value (no read or cas accepts them, any write replaces them).
//! The search succeeds when every required op is linearized (`info` ops left over never took
//! effect) and fails when it must backtrack past the first configuration. It gives up with
//! [`Validity::Unknown`] after `max_states_per_key` cached configurations.
//!
//! Candidates are tried in an order that lets valid histories through with little
//! backtracking: first the writers of the value the most urgent pending op needs, then
//! earliest deadline first. The order never changes the answer, only the time to reach it.
//!
//! # Reductions (each keeps the answer exact)
//! "Single-writer value": a value exactly one op writes (the initial value counts as the
//! writer of `nil`); our workloads write unique values, so nearly every value is one.
//! 1. *Impossible observations* are reported before any search: an `ok` read (or `ok` cas)
//!    that saw value `v` although every op that wrote `v` failed, began after the read
//!    completed, or was overwritten by an `ok` write that began after it completed and
//!    completed before the read began (for `nil`: the initial value was so overwritten). The
//!    last write before the read in any linearization would have to be one of those, so the
//!    key is not linearizable; the explanation is precise, and the search (which would have to
//!    exhaust every order before proving it) is skipped.
//! 2. *Unobserved indeterminate writes are dropped*: an `info` write (or cas) whose value no
//!    other op observes. If it took effect, only a write can follow it, so deleting it from a
//!    valid linearization leaves a valid one.
//! 3. *Deadlines from observations*, for a single-writer value `v` written by `P`: `P` must
//!    take effect before the earliest deadline of a required op observing `v` (an `info` `P`
//!    becomes required); and a required op observing `v` must take effect before any other
//!    required writer that begins after `P`'s deadline, so before that writer's deadline.
//!    Reductions 2 and 3 repeat until nothing changes.
//! 4. *Reads first*: a pending read of the current value is linearized at once, with no
//!    alternative explored. Moving that read to the front of any valid continuation keeps it
//!    valid (a read changes nothing, and a pending op may precede any later op).
//! 5. *Writers wait for their observers*: the writer `P` of a single-writer value must keep it
//!    in the register until the last required op observing it has been invoked, so `P` may
//!    not take effect while another required writer whose deadline falls before that
//!    invocation has not.
//! 6. *Protect a single-writer value*: once it is the register's value, it never comes back
//!    after being replaced; while required ops observing it are not linearized, no op may
//!    replace it, except a cas expecting it that is the last such observer (then that cas is
//!    linearized at once). With nothing allowed, the configuration is dead.
//!
//! On failure the verdict names the key and the context at the point of deepest progress: how
//! many ops were linearized, the register value and the op linearized last, the op whose
//! deadline could not be met, and the ops pending at that point.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::checker::{Anomaly, Checker, Listing, Validity, Verdict};
use crate::history::{History, OpPair, OpType, OpValue, Process, F};

/// Name of this checker in verdicts.
pub const CHECKER_NAME: &str = "linearizable";

/// Anomaly kind for every linearizability violation.
pub const NONLINEARIZABLE: &str = "nonlinearizable";

/// Largest number of pending ops listed in a failure's description and ops.
const MAX_CONTEXT_OPS: usize = 12;

/// Largest number of malformed ops quoted in notes.
const MAX_MALFORMED_NOTES: usize = 10;

/// Most rounds of reductions 2 and 3 per key.
const MAX_REDUCTION_ROUNDS: usize = 16;

/// Largest number of impossible observations reported per key.
const MAX_IMPOSSIBLE_PER_KEY: usize = 5;

/// Bounds of the linearizability search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearizableConfig {
    /// Most (linearized set, register value) configurations the search may cache for one key
    /// before giving up with `Unknown`. Memory is roughly 100 bytes per configuration.
    pub max_states_per_key: u64,
    /// Most keys searched at the same time (at least 1). Peak memory is about
    /// `max_threads * max_states_per_key * 100` bytes in the worst case.
    pub max_threads: usize,
    /// How many impossible observations are listed per key: `MAX_IMPOSSIBLE_PER_KEY` by
    /// default (the rest counted in a note), or every one.
    #[serde(default)]
    pub listing: Listing,
}

impl Default for LinearizableConfig {
    fn default() -> Self {
        let available = std::thread::available_parallelism().map_or(1, |threads| threads.get());
        Self {
            max_states_per_key: 10_000_000,
            max_threads: available.clamp(1, 4),
            listing: Listing::Sample,
        }
    }
}

/// The linearizability checker as a [`Checker`].
#[derive(Debug, Clone, Default)]
pub struct Linearizable {
    /// Search bounds.
    pub config: LinearizableConfig,
}

impl Checker for Linearizable {
    fn name(&self) -> &'static str {
        CHECKER_NAME
    }

    fn check(&self, history: &History) -> Verdict {
        check(history, &self.config)
    }
}

/// Checks the register ops (`read`, `write`, `cas`) of `history` for linearizability, key by
/// key. Other ops (set ops, nemesis events) are ignored.
pub fn check(history: &History, config: &LinearizableConfig) -> Verdict {
    let pairs = match history.pairs() {
        Ok(pairs) => pairs,
        Err(error) => return Verdict::unknown(CHECKER_NAME, format!("malformed history: {error}")),
    };
    let extracted = extract(&pairs);
    if !extracted.malformed.is_empty() {
        let mut notes = vec![format!(
            "{} malformed register ops; history not checked",
            extracted.malformed.len()
        )];
        notes.extend(extracted.malformed.into_iter().take(MAX_MALFORMED_NOTES));
        return Verdict {
            validity: Validity::Unknown,
            checker: CHECKER_NAME.to_string(),
            ops_checked: 0,
            anomalies: Vec::new(),
            notes,
        };
    }

    let jobs: Vec<(u64, Vec<KeyOp>)> = extracted.by_key.into_iter().collect();
    let (mut results, worker_failures) = check_keys(&jobs, config);
    results.sort_by_key(|result| result.key);

    let mut totals = KeyStats::default();
    for result in &results {
        totals.add(&result.stats);
    }
    let mut verdict = Verdict {
        validity: Validity::Valid,
        checker: CHECKER_NAME.to_string(),
        ops_checked: jobs.iter().map(|(_, ops)| ops.len()).sum(),
        anomalies: Vec::new(),
        notes: vec![format!(
            "{} keys, {} register ops; excluded {} failed ops and {} indeterminate reads; ignored \
             {} non-register ops; dropped {} indeterminate writes nobody observed; {} indeterminate \
             writes required by an observation; {} ops left with unknown outcome; {} search states",
            jobs.len(),
            jobs.iter().map(|(_, ops)| ops.len()).sum::<usize>(),
            extracted.excluded_failed,
            extracted.dropped_info_reads,
            extracted.ignored_other,
            totals.dropped_unobserved,
            totals.promoted,
            totals.optional_searched,
            totals.states_explored,
        )],
    };
    if worker_failures > 0 || results.len() != jobs.len() {
        verdict.validity = Validity::Unknown;
        verdict.notes.push(format!(
            "{} of {} keys were not checked ({worker_failures} search threads panicked)",
            jobs.len().saturating_sub(results.len()),
            jobs.len()
        ));
    }
    for result in results {
        match result.outcome {
            KeyOutcome::Linearizable => {}
            KeyOutcome::Violation { anomalies, total } => {
                verdict.validity = verdict.validity.and(Validity::Invalid);
                if total > anomalies.len() {
                    verdict.notes.push(format!(
                        "key {}: {total} impossible observations, {} reported",
                        result.key,
                        anomalies.len()
                    ));
                }
                verdict.anomalies.extend(anomalies);
            }
            KeyOutcome::Exhausted => {
                verdict.validity = verdict.validity.and(Validity::Unknown);
                verdict.notes.push(format!(
                    "key {}: search gave up after {} states (max_states_per_key); linearizability unknown",
                    result.key, result.stats.states_explored
                ));
            }
        }
    }
    verdict
}

/// One register operation as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegisterOp {
    /// A read that returned this value.
    Read(Option<u64>),
    /// A write of this value.
    Write(Option<u64>),
    /// A compare-and-set that succeeded if it took effect.
    Cas { from: u64, to: u64 },
}

impl RegisterOp {
    /// The register value after this op, or `None` when the op cannot happen on `state`.
    fn step(self, state: Option<u64>) -> Option<Option<u64>> {
        match self {
            RegisterOp::Read(returned) => (returned == state).then_some(state),
            RegisterOp::Write(value) => Some(value),
            RegisterOp::Cas { from, to } => (state == Some(from)).then_some(Some(to)),
        }
    }

    /// The value this op leaves in the register when it takes effect (`None` for reads).
    fn produced(self) -> Option<Option<u64>> {
        match self {
            RegisterOp::Read(_) => None,
            RegisterOp::Write(value) => Some(value),
            RegisterOp::Cas { to, .. } => Some(Some(to)),
        }
    }

    /// The value this op must find in the register (`None` for writes).
    fn observed(self) -> Option<Option<u64>> {
        match self {
            RegisterOp::Read(value) => Some(value),
            RegisterOp::Write(_) => None,
            RegisterOp::Cas { from, .. } => Some(Some(from)),
        }
    }
}

/// One op of a key's sub-history.
#[derive(Debug, Clone)]
struct KeyOp {
    op: RegisterOp,
    /// The history index by which the op must have taken effect: the completion of an `ok`
    /// op (or earlier, see the reductions); `None` for an op that may never take effect.
    deadline: Option<u64>,
    process: Process,
    invoke_index: u64,
    completion_index: Option<u64>,
    outcome: OpType,
}

impl KeyOp {
    /// Whether every linearization must contain this op.
    fn required(&self) -> bool {
        self.deadline.is_some()
    }

    /// Return time in the search: the deadline, or +infinity.
    fn return_time(&self) -> u64 {
        self.deadline.unwrap_or(u64::MAX)
    }

    fn history_indexes(&self) -> impl Iterator<Item = u64> {
        std::iter::once(self.invoke_index).chain(self.completion_index)
    }

    fn describe(&self) -> String {
        let action = match self.op {
            RegisterOp::Read(value) => format!("read -> {}", show(value)),
            RegisterOp::Write(value) => format!("write {}", show(value)),
            RegisterOp::Cas { from, to } => format!("cas {from} -> {to}"),
        };
        let process = match self.process {
            Process::Client(client) => client.to_string(),
            Process::Nemesis => "nemesis".to_string(),
        };
        let span = match self.completion_index {
            Some(completion) => format!("{}..{}", self.invoke_index, completion),
            None => format!("{}..", self.invoke_index),
        };
        let outcome = match self.outcome {
            OpType::Ok => "ok".to_string(),
            OpType::Fail => "fail".to_string(),
            OpType::Info | OpType::Invoke => match self.deadline {
                Some(deadline) => format!("info, observed by {deadline}"),
                None => "info".to_string(),
            },
        };
        format!("{action} (process {process}, ops {span}, {outcome})")
    }
}

fn show(value: Option<u64>) -> String {
    value.map_or("nil".to_string(), |value| value.to_string())
}

#[derive(Debug, Default)]
struct Extracted {
    by_key: BTreeMap<u64, Vec<KeyOp>>,
    excluded_failed: usize,
    dropped_info_reads: usize,
    ignored_other: usize,
    malformed: Vec<String>,
}

/// Splits register ops by key, applying the outcome semantics of the module docs.
fn extract(pairs: &[OpPair<'_>]) -> Extracted {
    let mut extracted = Extracted::default();
    for pair in pairs {
        let outcome = pair.outcome();
        let parsed = match (pair.f(), &pair.invoke.value) {
            (F::Read | F::Write | F::Cas, _) if outcome == OpType::Fail => {
                extracted.excluded_failed += 1;
                continue;
            }
            (F::Read, _) if outcome != OpType::Ok => {
                extracted.dropped_info_reads += 1;
                continue;
            }
            (F::Read, invoke_value) => match (invoke_value, pair.result_value()) {
                (OpValue::Register { key: asked, .. }, OpValue::Register { key, .. }) if asked != key => {
                    Err("read completion names another key than its invocation")
                }
                (_, OpValue::Register { key, value }) => Ok((*key, RegisterOp::Read(*value))),
                _ => Err("ok read without a [key value] result"),
            },
            (F::Write, OpValue::Register { key, value }) => Ok((*key, RegisterOp::Write(*value))),
            (F::Write, _) => Err("write without a [key value] argument"),
            (F::Cas, OpValue::Cas { key, from, to }) => Ok((*key, RegisterOp::Cas { from: *from, to: *to })),
            (F::Cas, _) => Err("cas without a [key [from to]] argument"),
            (
                F::Add
                | F::ReadAll
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
                | F::LockRelease,
                _,
            ) => {
                extracted.ignored_other += 1;
                continue;
            }
        };
        let completion_index = pair.completion.map(|completion| completion.index);
        match parsed {
            Ok((key, op)) => extracted.by_key.entry(key).or_default().push(KeyOp {
                op,
                deadline: if outcome == OpType::Ok {
                    completion_index
                } else {
                    None
                },
                process: pair.process(),
                invoke_index: pair.invoke.index,
                completion_index,
                outcome,
            }),
            Err(reason) => extracted
                .malformed
                .push(format!("op {}: {reason}", pair.invoke.index)),
        }
    }
    extracted
}

/// Per-key statistics for the verdict's notes.
#[derive(Debug, Default)]
struct KeyStats {
    dropped_unobserved: usize,
    promoted: usize,
    optional_searched: usize,
    states_explored: u64,
}

impl KeyStats {
    fn add(&mut self, other: &KeyStats) {
        self.dropped_unobserved += other.dropped_unobserved;
        self.promoted += other.promoted;
        self.optional_searched += other.optional_searched;
        self.states_explored += other.states_explored;
    }
}

enum KeyOutcome {
    Linearizable,
    /// The reported anomalies and how many were found in total.
    Violation {
        anomalies: Vec<Anomaly>,
        total: usize,
    },
    Exhausted,
}

struct KeyResult {
    key: u64,
    outcome: KeyOutcome,
    stats: KeyStats,
}

/// Checks every key, on up to `max_threads` threads. Returns the results (in no particular
/// order) and the number of worker threads that panicked.
fn check_keys(jobs: &[(u64, Vec<KeyOp>)], config: &LinearizableConfig) -> (Vec<KeyResult>, usize) {
    let max_states = config.max_states_per_key.max(1);
    let threads = config.max_threads.clamp(1, jobs.len().max(1));
    let next_job = AtomicUsize::new(0);
    let work = || {
        let mut results = Vec::new();
        while let Some((key, ops)) = jobs.get(next_job.fetch_add(1, Ordering::Relaxed)) {
            results.push(check_key(*key, ops, max_states, config.listing));
        }
        results
    };
    if threads == 1 {
        return (work(), 0);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
        let mut results = Vec::with_capacity(jobs.len());
        let mut failures = 0;
        for handle in handles {
            match handle.join() {
                Ok(worker_results) => results.extend(worker_results),
                Err(_) => failures += 1,
            }
        }
        (results, failures)
    })
}

/// Checks one key's sub-history: reductions 1–3, then the search.
fn check_key(key: u64, ops: &[KeyOp], max_states: u64, listing: Listing) -> KeyResult {
    let mut stats = KeyStats::default();
    let (anomalies, total) = impossible_observations(key, ops, listing.limit(MAX_IMPOSSIBLE_PER_KEY));
    if total > 0 {
        return KeyResult {
            key,
            outcome: KeyOutcome::Violation { anomalies, total },
            stats,
        };
    }
    let kept = reduce(ops, &mut stats);
    let (outcome, states_explored) = search(key, &kept, max_states);
    stats.states_explored = states_explored;
    KeyResult { key, outcome, stats }
}

/// Reduction 1: `ok` ops that observed a value no op could have left in the register by then.
/// Returns at most `max_listed` anomalies and the total found.
fn impossible_observations(key: u64, ops: &[KeyOp], max_listed: usize) -> (Vec<Anomaly>, usize) {
    let mut producers: HashMap<Option<u64>, Vec<usize>> = HashMap::new();
    for (id, op) in ops.iter().enumerate() {
        if let Some(value) = op.op.produced() {
            producers.entry(value).or_default().push(id);
        }
    }
    // Ops that certainly took effect, by invocation, with the earliest completion among each
    // suffix: "some certain write began after t and completed before u" is one lookup.
    let mut certain: Vec<(u64, u64, usize)> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| op.outcome == OpType::Ok && op.op.produced().is_some())
        .filter_map(|(id, op)| {
            op.completion_index
                .map(|completion| (op.invoke_index, completion, id))
        })
        .collect();
    certain.sort_unstable();
    let mut earliest_completion_from: Vec<(u64, usize)> = vec![(u64::MAX, usize::MAX); certain.len() + 1];
    for position in (0..certain.len()).rev() {
        let (_, completion, id) = certain[position];
        earliest_completion_from[position] = earliest_completion_from[position + 1].min((completion, id));
    }
    let overwriter = |after: Option<u64>, before: u64| -> Option<usize> {
        let start = after.map_or(0, |after| {
            certain.partition_point(|(invoke, _, _)| *invoke <= after)
        });
        let (completion, id) = earliest_completion_from[start];
        (completion < before).then_some(id)
    };

    let mut anomalies = Vec::new();
    let mut total = 0;
    for (observer_id, observer) in ops.iter().enumerate() {
        let (Some(value), OpType::Ok, Some(observer_completion)) = (
            observer.op.observed(),
            observer.outcome,
            observer.completion_index,
        ) else {
            continue;
        };
        let mut reasons: Vec<String> = Vec::new();
        let mut involved: Vec<usize> = vec![observer_id];
        let mut possible = false;
        if value.is_none() {
            match overwriter(None, observer.invoke_index) {
                None => possible = true,
                Some(writer) => {
                    reasons.push(format!(
                        "the initial nil was overwritten by {}",
                        ops[writer].describe()
                    ));
                    involved.push(writer);
                }
            }
        }
        let candidates = producers.get(&value).map_or(&[][..], Vec::as_slice);
        for &producer_id in candidates.iter().filter(|id| **id != observer_id) {
            if possible {
                break;
            }
            let producer = &ops[producer_id];
            if producer.invoke_index > observer_completion {
                reasons.push(format!("{} began after it completed", producer.describe()));
                involved.push(producer_id);
                continue;
            }
            let overwritten = match (producer.outcome, producer.completion_index) {
                (OpType::Ok, Some(completion)) => overwriter(Some(completion), observer.invoke_index),
                _ => None,
            };
            match overwritten {
                Some(writer) => {
                    reasons.push(format!(
                        "{} was overwritten by {} before it began",
                        producer.describe(),
                        ops[writer].describe()
                    ));
                    involved.extend([producer_id, writer]);
                }
                None => possible = true,
            }
        }
        if possible {
            continue;
        }
        total += 1;
        if anomalies.len() >= max_listed {
            continue;
        }
        if candidates.iter().all(|id| *id == observer_id) && value.is_some() {
            reasons.push(format!("no op that did not fail wrote {}", show(value)));
        }
        let mut indexes: Vec<u64> = involved
            .iter()
            .flat_map(|id| ops[*id].history_indexes())
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        anomalies.push(Anomaly {
            kind: NONLINEARIZABLE.to_string(),
            key: Some(key),
            description: format!(
                "key {key}: {} saw {}, which no linearization allows: {}",
                observer.describe(),
                show(value),
                reasons.join("; ")
            ),
            ops: indexes,
        });
    }
    (anomalies, total)
}

/// Reductions 2 and 3, repeated until nothing changes (dropping a write can leave another
/// unobserved; a newly required op can make its own writer required), at most
/// `MAX_REDUCTION_ROUNDS` times (stopping early is still exact, just slower to search).
fn reduce(ops: &[KeyOp], stats: &mut KeyStats) -> Vec<KeyOp> {
    let mut kept = ops.to_vec();
    for _ in 0..MAX_REDUCTION_ROUNDS {
        let before = kept.len();
        kept = drop_unobserved_info_writes(kept);
        let (promoted, tightened) = tighten_deadlines(&mut kept);
        stats.promoted += promoted;
        if kept.len() == before && tightened == 0 {
            break;
        }
    }
    stats.dropped_unobserved = ops.len() - kept.len();
    stats.optional_searched = kept.iter().filter(|op| !op.required()).count();
    kept
}

/// Reduction 2: removes `info` writes and cas whose written value no other op observes.
fn drop_unobserved_info_writes(ops: Vec<KeyOp>) -> Vec<KeyOp> {
    let mut observers: HashMap<Option<u64>, usize> = HashMap::new();
    for value in ops.iter().filter_map(|op| op.op.observed()) {
        *observers.entry(value).or_insert(0) += 1;
    }
    ops.into_iter()
        .filter(|op| {
            let Some(value) = op.op.produced() else {
                return true;
            };
            // A cas from v to v observes its own value: that does not count.
            let own = usize::from(op.op.observed() == Some(value));
            op.required() || observers.get(&value).is_some_and(|count| *count > own)
        })
        .collect()
}

/// Values exactly one op writes; the initial value counts as a writer of `nil`.
fn single_writer_values(ops: &[KeyOp]) -> HashSet<Option<u64>> {
    let mut writers: HashMap<Option<u64>, usize> = HashMap::from([(None, 1)]);
    for value in ops.iter().filter_map(|op| op.op.produced()) {
        *writers.entry(value).or_insert(0) += 1;
    }
    writers
        .into_iter()
        .filter(|(_, count)| *count == 1)
        .map(|(value, _)| value)
        .collect()
}

/// Per op: for the single writer of a value some required op observes, the required observer
/// invoked last, as (its invocation index, op); `None` for every other op.
fn last_observer_of_written_value(ops: &[KeyOp]) -> Vec<Option<(u64, u32)>> {
    let single_writer = single_writer_values(ops);
    let mut last_observer: HashMap<Option<u64>, (u64, u32)> = HashMap::new();
    for (id, op) in ops.iter().enumerate().filter(|(_, op)| op.required()) {
        if let Some(value) = op.op.observed() {
            let last = last_observer.entry(value).or_insert((op.invoke_index, id as u32));
            *last = (*last).max((op.invoke_index, id as u32));
        }
    }
    ops.iter()
        .map(|op| match op.op.produced() {
            Some(value) if single_writer.contains(&value) => last_observer.get(&value).copied(),
            _ => None,
        })
        .collect()
}

/// Reduction 3 (one round). For a value `v` with a single writer `P` (the initial value
/// counts as the writer of `nil`):
/// - `P` must take effect before any required op that observes `v` does, so `P`'s deadline
///   is at most the earliest such observer's deadline (an optional `P` becomes required);
/// - a required op observing `v` must take effect while the register still holds `v`, so
///   before any other required writer that begins after `P`'s deadline, and its deadline is at
///   most the earliest such writer's deadline.
///
/// Returns how many optional ops became required and how many deadlines changed.
fn tighten_deadlines(ops: &mut [KeyOp]) -> (usize, usize) {
    let single_writer_set = single_writer_values(ops);
    let single_writer = |value: Option<u64>| single_writer_set.contains(&value);
    let mut earliest_observation: HashMap<Option<u64>, u64> = HashMap::new();
    for op in ops.iter() {
        if let (Some(value), Some(deadline)) = (op.op.observed(), op.deadline) {
            let earliest = earliest_observation.entry(value).or_insert(deadline);
            *earliest = (*earliest).min(deadline);
        }
    }

    let mut promoted = 0;
    let mut tightened = 0;
    for op in ops.iter_mut() {
        let Some(value) = op.op.produced() else { continue };
        let Some(&observed_by) = earliest_observation.get(&value) else {
            continue;
        };
        if !single_writer(value) || observed_by <= op.invoke_index {
            continue;
        }
        match op.deadline {
            None => promoted += 1,
            Some(deadline) if deadline <= observed_by => continue,
            Some(_) => {}
        }
        tightened += 1;
        op.deadline = Some(observed_by);
    }

    // Required writers by invocation, with the two earliest deadlines (of distinct ops) among
    // each suffix, so "the earliest deadline of another writer invoked after t" is one lookup.
    let mut required_writers: Vec<(u64, u64, usize)> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| op.op.produced().is_some())
        .filter_map(|(id, op)| op.deadline.map(|deadline| (op.invoke_index, deadline, id)))
        .collect();
    required_writers.sort_unstable();
    let none = (u64::MAX, usize::MAX);
    let mut earliest_two: Vec<[(u64, usize); 2]> = vec![[none, none]; required_writers.len() + 1];
    for position in (0..required_writers.len()).rev() {
        let (_, deadline, id) = required_writers[position];
        let [first, second] = earliest_two[position + 1];
        earliest_two[position] = if (deadline, id) < first {
            [(deadline, id), first]
        } else {
            [first, second.min((deadline, id))]
        };
    }
    let writer_of: HashMap<Option<u64>, Option<u64>> = ops
        .iter()
        .filter_map(|op| op.op.produced().map(|value| (value, op.deadline)))
        .filter(|(value, _)| single_writer(*value))
        .collect();
    for (id, op) in ops.iter_mut().enumerate() {
        let (Some(value), Some(deadline)) = (op.op.observed(), op.deadline) else {
            continue;
        };
        if !single_writer(value) {
            continue;
        }
        // When the single writer of `value` had certainly taken effect (`None`: the initial nil).
        let written_by = match writer_of.get(&value) {
            Some(Some(writer_deadline)) => Some(*writer_deadline),
            Some(None) => continue,
            None if value.is_none() => None,
            None => continue,
        };
        let start = written_by.map_or(0, |after| {
            required_writers.partition_point(|(invoke, _, _)| *invoke <= after)
        });
        let [first, second] = earliest_two[start];
        let (bound, _) = if first.1 == id { second } else { first };
        if bound < deadline && bound > op.invoke_index {
            op.deadline = Some(bound);
            tightened += 1;
        }
    }
    (promoted, tightened)
}

const HEAD: u32 = 0;
const NONE: u32 = u32::MAX;

/// A call or return event in the search's doubly linked list.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The op (index into the key's ops); unused for the head sentinel.
    op: u32,
    is_call: bool,
    /// For a call entry, its return entry.
    partner: u32,
    prev: u32,
    next: u32,
}

/// The list of call and return entries, sorted by time, with a head sentinel at index 0.
struct EntryList {
    entries: Vec<Entry>,
}

impl EntryList {
    fn new(ops: &[KeyOp]) -> Self {
        // (time, 0 = call / 1 = return, op): at equal times (only +infinity) calls come first.
        let mut events: Vec<(u64, u8, u32)> = Vec::with_capacity(ops.len() * 2);
        for (id, op) in ops.iter().enumerate() {
            debug_assert!(op.return_time() > op.invoke_index, "an op returns after its call");
            events.push((op.invoke_index, 0, id as u32));
            events.push((op.return_time(), 1, id as u32));
        }
        events.sort_unstable();
        let sentinel = Entry {
            op: NONE,
            is_call: false,
            partner: NONE,
            prev: NONE,
            next: NONE,
        };
        let mut entries = vec![sentinel; events.len() + 1];
        let mut call_entry_of_op = vec![NONE; ops.len()];
        for (position, (_, kind, op)) in events.iter().enumerate() {
            let index = position as u32 + 1;
            let next = if position + 1 == events.len() {
                NONE
            } else {
                index + 1
            };
            entries[index as usize] = Entry {
                op: *op,
                is_call: *kind == 0,
                partner: NONE,
                prev: index - 1,
                next,
            };
            if *kind == 0 {
                call_entry_of_op[*op as usize] = index;
            } else {
                let call = call_entry_of_op[*op as usize];
                debug_assert_ne!(call, NONE, "a return entry sorts after its call");
                if call != NONE {
                    entries[call as usize].partner = index;
                }
            }
        }
        entries[HEAD as usize].next = if events.is_empty() { NONE } else { 1 };
        Self { entries }
    }

    fn get(&self, index: u32) -> Entry {
        self.entries[index as usize]
    }

    fn first(&self) -> u32 {
        self.entries[HEAD as usize].next
    }

    fn unlink(&mut self, index: u32) {
        let Entry { prev, next, .. } = self.get(index);
        self.entries[prev as usize].next = next;
        if next != NONE {
            self.entries[next as usize].prev = prev;
        }
    }

    fn relink(&mut self, index: u32) {
        let Entry { prev, next, .. } = self.get(index);
        self.entries[prev as usize].next = index;
        if next != NONE {
            self.entries[next as usize].prev = index;
        }
    }

    /// Removes a call entry and its return entry from the list.
    fn lift(&mut self, call: u32) {
        self.unlink(call);
        self.unlink(self.get(call).partner);
    }

    /// Undoes [`EntryList::lift`] (in reverse order, as dancing links require).
    fn unlift(&mut self, call: u32) {
        self.relink(self.get(call).partner);
        self.relink(call);
    }
}

/// Which ops are linearized, as two bitsets: required ops and optional (`info`) ops. Kept
/// apart so that the required set stays a dense prefix of ones the cache key can skip.
struct Linearized {
    /// Per op: (is required, bit within its class).
    slots: Vec<(bool, u32)>,
    required: Vec<u64>,
    optional: Vec<u64>,
}

/// A configuration of the search: the linearized sets (leading all-ones words counted, the
/// rest up to the last non-zero word kept) and the register value. Equal configurations have
/// equal keys and vice versa.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    /// The register value, or `None` for any value no op observes (see [`Search::canonical`]).
    state: Option<Option<u64>>,
    required_full_words: u32,
    optional_full_words: u32,
    required_tail_words: u32,
    words: Box<[u64]>,
}

impl Linearized {
    fn new(ops: &[KeyOp]) -> Self {
        let mut required_count = 0u32;
        let mut optional_count = 0u32;
        let slots: Vec<(bool, u32)> = ops
            .iter()
            .map(|op| {
                let counter = if op.required() {
                    &mut required_count
                } else {
                    &mut optional_count
                };
                let bit = *counter;
                *counter += 1;
                (op.required(), bit)
            })
            .collect();
        let words = |bits: u32| vec![0u64; (bits as usize).div_ceil(64)];
        Self {
            slots,
            required: words(required_count),
            optional: words(optional_count),
        }
    }

    fn word_and_mask(&mut self, op: u32) -> (&mut u64, u64) {
        let (required, bit) = self.slots[op as usize];
        let words = if required {
            &mut self.required
        } else {
            &mut self.optional
        };
        (&mut words[(bit / 64) as usize], 1u64 << (bit % 64))
    }

    fn set(&mut self, op: u32) {
        let (word, mask) = self.word_and_mask(op);
        debug_assert_eq!(*word & mask, 0, "op linearized twice");
        *word |= mask;
    }

    fn contains(&self, op: u32) -> bool {
        let (required, bit) = self.slots[op as usize];
        let words = if required { &self.required } else { &self.optional };
        words[(bit / 64) as usize] & (1u64 << (bit % 64)) != 0
    }

    fn clear(&mut self, op: u32) {
        let (word, mask) = self.word_and_mask(op);
        debug_assert_ne!(*word & mask, 0, "clearing an op that is not linearized");
        *word &= !mask;
    }

    fn cache_key(&self, state: Option<Option<u64>>) -> CacheKey {
        fn trim(words: &[u64]) -> (u32, &[u64]) {
            let full = words.iter().take_while(|word| **word == u64::MAX).count();
            let rest = &words[full..];
            let end = rest
                .iter()
                .rposition(|word| *word != 0)
                .map_or(0, |last| last + 1);
            (full as u32, &rest[..end])
        }
        let (required_full_words, required_tail) = trim(&self.required);
        let (optional_full_words, optional_tail) = trim(&self.optional);
        let mut words = Vec::with_capacity(required_tail.len() + optional_tail.len());
        words.extend_from_slice(required_tail);
        words.extend_from_slice(optional_tail);
        CacheKey {
            state,
            required_full_words,
            optional_full_words,
            required_tail_words: required_tail.len() as u32,
            words: words.into_boxed_slice(),
        }
    }
}

/// One lifted op on the search stack.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// The op's call entry.
    call: u32,
    /// The register value before the op.
    state_before: Option<u64>,
    /// Linearized by reduction 4: the configuration below it has no other branch to try.
    forced: bool,
}

/// A configuration where the search chooses which pending op takes effect next.
struct Level {
    /// Call entries of the pending ops the model accepts here, earliest deadline first.
    candidates: Vec<u32>,
    /// The next candidate to try.
    next: usize,
}

/// Where the search got furthest before failing.
struct Stuck {
    /// Number of ops linearized.
    depth: usize,
    /// The register value at that point.
    state: Option<u64>,
    /// The pending op with the earliest deadline (`None`: only optional ops were pending).
    blocked: Option<u32>,
    /// The op linearized last.
    last_linearized: Option<u32>,
    /// Pending ops (call entries before the first return entry), at most `MAX_CONTEXT_OPS`,
    /// each with why it could not take effect next and the other ops that reason names.
    pending: Vec<(u32, String, Vec<u32>)>,
    /// Number of pending ops.
    pending_total: usize,
}

/// The search state of one key.
struct Search<'a> {
    ops: &'a [KeyOp],
    list: EntryList,
    linearized: Linearized,
    cache: HashSet<CacheKey>,
    /// Values some op of this key observes (reads returning them, cas expecting them).
    observed: HashSet<Option<u64>>,
    /// Values exactly one op writes (`nil` counts the initial value as its writer).
    single_writer: HashSet<Option<u64>>,
    /// Per op, for the single writer of an observed value: the required op observing it that
    /// is invoked last, as (invocation index, op). See [`Search::must_wait_for`].
    last_observer: Vec<Option<(u64, u32)>>,
    /// (deadline, op) of the required writers not linearized yet.
    unlinearized_writers: BTreeSet<(u64, u32)>,
    /// Per value, how many required ops observing it are not linearized yet.
    unlinearized_observers: HashMap<Option<u64>, u32>,
    stack: Vec<Frame>,
    state: Option<u64>,
    remaining_required: usize,
    states_explored: u64,
    max_states: u64,
}

/// What a configuration allows (see [`Search::next_move`]).
enum NextMove {
    /// This op must take effect next; no alternative needs exploring.
    Forced(u32),
    /// No op can take effect: the configuration is dead.
    Dead,
    /// Try the candidates.
    Choose,
}

enum Lift {
    Lifted,
    /// The configuration it leads to was explored before.
    Cached,
    /// The state bound is reached.
    Exhausted,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [KeyOp], max_states: u64) -> Self {
        Self {
            ops,
            list: EntryList::new(ops),
            linearized: Linearized::new(ops),
            cache: HashSet::new(),
            observed: ops.iter().filter_map(|op| op.op.observed()).collect(),
            single_writer: single_writer_values(ops),
            last_observer: last_observer_of_written_value(ops),
            unlinearized_writers: ops
                .iter()
                .enumerate()
                .filter(|(_, op)| op.op.produced().is_some())
                .filter_map(|(id, op)| op.deadline.map(|deadline| (deadline, id as u32)))
                .collect(),
            unlinearized_observers: ops
                .iter()
                .filter(|op| op.required())
                .filter_map(|op| op.op.observed())
                .fold(HashMap::new(), |mut counts, value| {
                    *counts.entry(value).or_insert(0) += 1;
                    counts
                }),
            stack: Vec::new(),
            state: None,
            remaining_required: ops.iter().filter(|op| op.required()).count(),
            states_explored: 0,
            max_states,
        }
    }

    /// The register value as the cache sees it: all values no op observes behave alike (no
    /// read or cas accepts them, every write replaces them), so they share one cache entry.
    fn canonical(&self, state: Option<u64>) -> Option<Option<u64>> {
        self.observed.contains(&state).then_some(state)
    }

    /// Linearizes the op of `call` (which the model accepts, leading to `next_state`) unless
    /// the resulting configuration is cached.
    fn try_lift(&mut self, call: u32, next_state: Option<u64>, forced: bool) -> Lift {
        let op = self.list.get(call).op;
        self.linearized.set(op);
        if !self
            .cache
            .insert(self.linearized.cache_key(self.canonical(next_state)))
        {
            self.linearized.clear(op);
            return Lift::Cached;
        }
        self.states_explored += 1;
        if self.states_explored > self.max_states {
            return Lift::Exhausted;
        }
        self.stack.push(Frame {
            call,
            state_before: self.state,
            forced,
        });
        self.state = next_state;
        if self.ops[op as usize].required() {
            self.remaining_required -= 1;
        }
        self.list.lift(call);
        self.count_linearized(op, true);
        Lift::Lifted
    }

    /// Keeps `unlinearized_writers` and `unlinearized_observers` up to date when `op` is
    /// linearized (`true`) or unlinearized (`false`).
    fn count_linearized(&mut self, op: u32, linearized: bool) {
        let key_op = &self.ops[op as usize];
        let Some(deadline) = key_op.deadline else { return };
        if key_op.op.produced().is_some() {
            if linearized {
                self.unlinearized_writers.remove(&(deadline, op));
            } else {
                self.unlinearized_writers.insert((deadline, op));
            }
        }
        if let Some(value) = key_op.op.observed() {
            let count = self.unlinearized_observers.entry(value).or_insert(0);
            if linearized {
                debug_assert!(*count > 0, "observer counted once");
                *count = count.saturating_sub(1);
            } else {
                *count += 1;
            }
        }
    }

    /// Undoes lifts up to and including the most recent unforced one (the choice made at the
    /// configuration below). Returns `false` when no choice is left to revisit.
    fn undo_to_choice(&mut self) -> bool {
        while let Some(frame) = self.stack.pop() {
            let op = self.list.get(frame.call).op;
            self.linearized.clear(op);
            if self.ops[op as usize].required() {
                self.remaining_required += 1;
            }
            self.list.unlift(frame.call);
            self.count_linearized(op, false);
            self.state = frame.state_before;
            if !frame.forced {
                return true;
            }
        }
        false
    }

    /// Calls of the pending ops: the call entries before the first return entry (an op whose
    /// return entry comes first must take effect before any later call). Also returns that
    /// return entry (`NONE` when only calls are left).
    fn pending(&self) -> (Vec<u32>, u32) {
        let mut calls = Vec::new();
        let mut cursor = self.list.first();
        while cursor != NONE {
            let entry = self.list.get(cursor);
            if !entry.is_call {
                break;
            }
            calls.push(cursor);
            cursor = entry.next;
        }
        (calls, cursor)
    }

    /// Reduction 5: whether writer `op` cannot take effect yet, and if so (the other writer
    /// that must go first, the observer that needs `op`'s value). That value must stay in the
    /// register until its last required observer has been invoked, so every other required
    /// writer whose deadline falls before that invocation must take effect first.
    fn must_wait_for(&self, op: u32) -> Option<(u32, u32)> {
        let (until, observer) = self.last_observer[op as usize]?;
        let (deadline, writer) = self
            .unlinearized_writers
            .iter()
            .find(|(_, writer)| *writer != op)?;
        (*deadline < until).then_some((*writer, observer))
    }

    fn must_wait(&self, op: u32) -> bool {
        self.must_wait_for(op).is_some()
    }

    /// Whether reduction 6 forbids `op` now: it would replace a single-writer value that
    /// required ops still have to observe. Returns how many.
    fn replaces_needed_value(&self, op: u32) -> Option<u32> {
        let key_op = &self.ops[op as usize];
        key_op.op.produced()?;
        let waiting = self.unlinearized_observers.get(&self.state).copied().unwrap_or(0);
        if waiting == 0 || !self.single_writer.contains(&self.state) {
            return None;
        }
        let last_observer_itself =
            key_op.required() && key_op.op.observed() == Some(self.state) && waiting == 1;
        (!last_observer_itself).then_some(waiting)
    }

    /// Why the pending `op` cannot take effect next, for failure reports, with the other ops
    /// the reason names.
    fn why_not_next(&self, op: u32) -> (String, Vec<u32>) {
        if self.ops[op as usize].op.step(self.state).is_none() {
            return (
                format!("needs another value than {}", show(self.state)),
                Vec::new(),
            );
        }
        if let Some(waiting) = self.replaces_needed_value(op) {
            // Reports only: a scan for the required ops that still need the current value.
            let needing: Vec<u32> = (0..self.ops.len() as u32)
                .filter(|id| *id != op && !self.linearized.contains(*id))
                .filter(|id| {
                    let other = &self.ops[*id as usize];
                    other.required() && other.op.observed() == Some(self.state)
                })
                .take(MAX_CONTEXT_OPS)
                .collect();
            let named: Vec<String> = needing
                .iter()
                .map(|id| self.ops[*id as usize].describe())
                .collect();
            let why = format!(
                "would replace {}, which {waiting} required ops must still see: {}",
                show(self.state),
                named.join(", ")
            );
            return (why, needing);
        }
        if let Some((writer, observer)) = self.must_wait_for(op) {
            let writer_op = &self.ops[writer as usize];
            let why = format!(
                "must wait for {} (due by op {}), as {} needs its value",
                writer_op.describe(),
                writer_op.return_time(),
                self.ops[observer as usize].describe()
            );
            return (why, vec![writer, observer]);
        }
        ("no continuation after it works".to_string(), Vec::new())
    }

    /// Reductions 4 and 6: what the current configuration allows.
    ///
    /// - A pending read of the current value is linearized at once (reduction 4).
    /// - When the current value has a single writer (so it never comes back once replaced)
    ///   and required ops that observe it are not linearized yet, no op that replaces it may
    ///   take effect, except a cas expecting it that is the last such observer (reduction 6).
    fn next_move(&self) -> NextMove {
        let mut cas_expecting_state = None;
        let mut cursor = self.list.first();
        while cursor != NONE {
            let entry = self.list.get(cursor);
            if !entry.is_call {
                break;
            }
            let op = &self.ops[entry.op as usize];
            match op.op {
                RegisterOp::Read(value) if value == self.state => return NextMove::Forced(cursor),
                RegisterOp::Cas { from, .. }
                    if Some(from) == self.state && op.required() && cas_expecting_state.is_none() =>
                {
                    cas_expecting_state = Some(cursor);
                }
                _ => {}
            }
            cursor = entry.next;
        }
        let waiting_observers = self.unlinearized_observers.get(&self.state).copied().unwrap_or(0);
        if waiting_observers == 0 || !self.single_writer.contains(&self.state) {
            return NextMove::Choose;
        }
        match cas_expecting_state {
            Some(cas) if waiting_observers == 1 && !self.must_wait(self.list.get(cas).op) => {
                NextMove::Forced(cas)
            }
            _ => NextMove::Dead,
        }
    }

    /// The pending ops the model accepts now, in the order to try them: first the writers of
    /// the value the most urgent pending op (earliest deadline) needs, then earliest deadline
    /// first. Any order is exact; this one makes most valid histories linearize with little
    /// backtracking.
    fn candidates(&self) -> Vec<u32> {
        let (calls, first_return) = self.pending();
        let needed = (first_return != NONE)
            .then(|| self.ops[self.list.get(first_return).op as usize].op)
            .filter(|urgent| urgent.step(self.state).is_none())
            .and_then(RegisterOp::observed);
        let mut candidates: Vec<u32> = calls
            .into_iter()
            .filter(|call| {
                let op = self.list.get(*call).op;
                self.ops[op as usize].op.step(self.state).is_some() && !self.must_wait(op)
            })
            .collect();
        candidates.sort_by_key(|call| {
            let op = &self.ops[self.list.get(*call).op as usize];
            let enables_urgent = needed.is_some() && op.op.produced() == needed;
            (!enables_urgent, op.return_time(), *call)
        });
        candidates
    }

    fn stuck_here(&self) -> Stuck {
        let (calls, first_return) = self.pending();
        Stuck {
            depth: self.stack.len(),
            state: self.state,
            blocked: (first_return != NONE).then(|| self.list.get(first_return).op),
            last_linearized: self.stack.last().map(|frame| self.list.get(frame.call).op),
            pending: calls
                .iter()
                .take(MAX_CONTEXT_OPS)
                .map(|call| {
                    let op = self.list.get(*call).op;
                    let (why, related) = self.why_not_next(op);
                    (op, why, related)
                })
                .collect(),
            pending_total: calls.len(),
        }
    }
}

/// Wing–Gong–Lowe search of one key. Returns the outcome and the states explored.
fn search(key: u64, ops: &[KeyOp], max_states: u64) -> (KeyOutcome, u64) {
    let mut search = Search::new(ops, max_states);
    let mut levels: Vec<Level> = Vec::new();
    let mut deepest: Option<Stuck> = None;
    // Whether the search just reached a configuration it has not examined yet; otherwise it
    // tries the next candidate of the top level.
    let mut fresh = true;
    loop {
        if search.remaining_required == 0 {
            return (KeyOutcome::Linearizable, search.states_explored);
        }
        if fresh {
            fresh = false;
            match search.next_move() {
                NextMove::Forced(call) => {
                    let Some(next_state) = ops[search.list.get(call).op as usize].op.step(search.state)
                    else {
                        debug_assert!(false, "forced ops are ops the model accepts");
                        break;
                    };
                    match search.try_lift(call, next_state, true) {
                        Lift::Lifted => fresh = true,
                        Lift::Exhausted => return (KeyOutcome::Exhausted, max_states),
                        // The only branch worth taking from here was explored before and failed.
                        Lift::Cached => {
                            if !search.undo_to_choice() {
                                break;
                            }
                        }
                    }
                    continue;
                }
                NextMove::Dead => {
                    if deepest
                        .as_ref()
                        .is_none_or(|stuck| search.stack.len() > stuck.depth)
                    {
                        deepest = Some(search.stuck_here());
                    }
                    if !search.undo_to_choice() {
                        break;
                    }
                    continue;
                }
                NextMove::Choose => {}
            }
            levels.push(Level {
                candidates: search.candidates(),
                next: 0,
            });
        }
        let Some(level) = levels.last_mut() else {
            break;
        };
        if let Some(&call) = level.candidates.get(level.next) {
            level.next += 1;
            let Some(next_state) = ops[search.list.get(call).op as usize].op.step(search.state) else {
                debug_assert!(false, "candidates are ops the model accepts");
                continue;
            };
            match search.try_lift(call, next_state, false) {
                Lift::Lifted => fresh = true,
                Lift::Exhausted => return (KeyOutcome::Exhausted, max_states),
                Lift::Cached => {}
            }
            continue;
        }
        // No candidate of this configuration leads to a linearization: backtrack.
        if deepest
            .as_ref()
            .is_none_or(|stuck| search.stack.len() > stuck.depth)
        {
            deepest = Some(search.stuck_here());
        }
        levels.pop();
        if !search.undo_to_choice() {
            break;
        }
    }
    let anomaly = describe_violation(key, ops, deepest);
    (
        KeyOutcome::Violation {
            anomalies: vec![anomaly],
            total: 1,
        },
        search.states_explored,
    )
}

fn describe_violation(key: u64, ops: &[KeyOp], deepest: Option<Stuck>) -> Anomaly {
    let required_total = ops.iter().filter(|op| op.required()).count();
    let Some(stuck) = deepest else {
        return Anomaly {
            kind: NONLINEARIZABLE.to_string(),
            key: Some(key),
            description: format!("key {key}: no linearization of its {required_total} required ops exists"),
            ops: Vec::new(),
        };
    };
    let op_at = |id: u32| &ops[id as usize];
    let last = stuck.last_linearized.map_or("no op yet".to_string(), |id| {
        format!("last: {}", op_at(id).describe())
    });
    let blocked = stuck
        .blocked
        .map_or("the end of the history".to_string(), |id| op_at(id).describe());
    let mut pending: Vec<String> = stuck
        .pending
        .iter()
        .map(|(id, why, _)| format!("{}: {why}", op_at(*id).describe()))
        .collect();
    if stuck.pending_total > stuck.pending.len() {
        pending.push(format!("... {} more", stuck.pending_total - stuck.pending.len()));
    }
    let description = format!(
        "key {key}: not linearizable. Deepest progress: {} of {required_total} required ops \
         linearized, register = {} ({last}); {blocked} must take effect before any later op \
         begins, but none of the {} pending ops can take effect next: [{}]",
        stuck.depth,
        show(stuck.state),
        stuck.pending_total,
        pending.join("; "),
    );
    let mut indexes: Vec<u64> = stuck
        .last_linearized
        .into_iter()
        .chain(stuck.blocked)
        .chain(
            stuck
                .pending
                .iter()
                .flat_map(|(id, _, related)| std::iter::once(*id).chain(related.iter().copied())),
        )
        .flat_map(|id| op_at(id).history_indexes())
        .collect();
    indexes.sort_unstable();
    indexes.dedup();
    Anomaly {
        kind: NONLINEARIZABLE.to_string(),
        key: Some(key),
        description,
        ops: indexes,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Instant;

    use proptest::prelude::*;

    use super::*;
    use crate::checker::fixtures::Builder;

    fn config() -> LinearizableConfig {
        LinearizableConfig {
            max_states_per_key: 1_000_000,
            max_threads: 2,
            listing: Listing::Sample,
        }
    }

    fn validity(builder: &Builder) -> Validity {
        check(&builder.build(), &config()).validity
    }

    /// An empty history, and one with only nemesis or set ops, is valid.
    #[test]
    fn empty_history_is_valid() {
        assert_eq!(validity(&Builder::default()), Validity::Valid);
        let mut set_only = Builder::default();
        set_only.add(0, 1).ok(0);
        let verdict = check(&set_only.build(), &config());
        assert_eq!((verdict.validity, verdict.ops_checked), (Validity::Valid, 0));
    }

    /// A read of a never-written key returns nil; sequential write then read sees the write.
    #[test]
    fn sequential_write_then_read_is_valid() {
        let mut history = Builder::default();
        history.read(0, 1).ok_read(0, 1, None);
        history.write(0, 1, 5).ok(0);
        history.read(1, 1).ok_read(1, 1, Some(5));
        assert_eq!(validity(&history), Validity::Valid);
    }

    /// A read that starts after a write completed cannot return the older value.
    #[test]
    fn stale_read_after_completed_write_is_invalid() {
        let mut history = Builder::default();
        history.write(0, 1, 5).ok(0);
        history.write(0, 1, 6).ok(0);
        history.read(1, 1).ok_read(1, 1, Some(5));
        let verdict = check(&history.build(), &config());
        assert_eq!(verdict.validity, Validity::Invalid);
        let anomaly = &verdict.anomalies[0];
        assert_eq!((anomaly.kind.as_str(), anomaly.key), ("nonlinearizable", Some(1)));
        assert!(
            anomaly.ops.contains(&4) && anomaly.ops.contains(&5),
            "{anomaly:?}"
        );
        assert!(
            anomaly.description.contains("read -> 5"),
            "{}",
            anomaly.description
        );
    }

    /// A read returning a value nobody wrote is invalid.
    #[test]
    fn read_of_unwritten_value_is_invalid() {
        let mut history = Builder::default();
        history.write(0, 1, 5).ok(0);
        history.read(1, 1).ok_read(1, 1, Some(99));
        assert_eq!(validity(&history), Validity::Invalid);
    }

    /// A read concurrent with a write may see either the old or the new value.
    #[test]
    fn concurrent_write_and_read_valid_in_both_orders() {
        for observed in [None, Some(5)] {
            let mut history = Builder::default();
            history.write(0, 1, 5).read(1, 1).ok_read(1, 1, observed).ok(0);
            assert_eq!(validity(&history), Validity::Valid, "read returned {observed:?}");
        }
        // Two reads concurrent with the write: new then old is still fine (the second read
        // began before the first one ended)...
        let mut history = Builder::default();
        history
            .write(0, 1, 5)
            .read(1, 1)
            .read(2, 1)
            .ok_read(1, 1, Some(5))
            .ok_read(2, 1, None)
            .ok(0);
        assert_eq!(validity(&history), Validity::Valid);
        // ... but once a read of the new value completed, a later read cannot see the old one.
        let mut history = Builder::default();
        history
            .write(0, 1, 5)
            .read(1, 1)
            .ok_read(1, 1, Some(5))
            .read(2, 1)
            .ok_read(2, 1, None)
            .ok(0);
        assert_eq!(validity(&history), Validity::Invalid);
    }

    /// An ok cas requires its expected value; a failed cas never took effect.
    #[test]
    fn cas_success_and_failure_semantics() {
        let mut success = Builder::default();
        success
            .write(0, 1, 1)
            .ok(0)
            .cas(0, 1, 1, 2)
            .ok(0)
            .read(0, 1)
            .ok_read(0, 1, Some(2));
        assert_eq!(validity(&success), Validity::Valid);

        let mut wrong_expectation = Builder::default();
        wrong_expectation.write(0, 1, 1).ok(0).cas(0, 1, 7, 2).ok(0);
        assert_eq!(validity(&wrong_expectation), Validity::Invalid);

        let mut failed = Builder::default();
        failed
            .write(0, 1, 1)
            .ok(0)
            .cas(0, 1, 1, 2)
            .fail(0)
            .read(0, 1)
            .ok_read(0, 1, Some(1));
        assert_eq!(validity(&failed), Validity::Valid);

        let mut failed_but_observed = Builder::default();
        failed_but_observed
            .write(0, 1, 1)
            .ok(0)
            .cas(0, 1, 1, 2)
            .fail(0)
            .read(0, 1)
            .ok_read(0, 1, Some(2));
        assert_eq!(validity(&failed_but_observed), Validity::Invalid);

        let mut chained = Builder::default();
        chained
            .write(0, 1, 1)
            .ok(0)
            .cas(0, 1, 1, 2)
            .cas(1, 1, 2, 3)
            .ok(1)
            .ok(0);
        chained.read(0, 1).ok_read(0, 1, Some(3));
        assert_eq!(
            validity(&chained),
            Validity::Valid,
            "concurrent cas ops chain in either order"
        );
    }

    /// An info write may or may not have happened: later reads of either value are valid.
    #[test]
    fn info_write_makes_later_read_valid_either_way() {
        for observed in [Some(1), Some(2)] {
            let mut history = Builder::default();
            history.write(0, 1, 1).ok(0).write(0, 1, 2).info(0);
            history.read(1, 1).ok_read(1, 1, observed);
            history.read(1, 1).ok_read(1, 1, observed);
            assert_eq!(validity(&history), Validity::Valid, "read {observed:?}");
        }
        // Once a later read saw it, it stays visible.
        let mut flicker = Builder::default();
        flicker.write(0, 1, 1).ok(0).write(0, 1, 2).info(0);
        flicker
            .read(1, 1)
            .ok_read(1, 1, Some(2))
            .read(1, 1)
            .ok_read(1, 1, Some(1));
        assert_eq!(validity(&flicker), Validity::Invalid);
        // An invocation never completed behaves the same as info.
        let mut unfinished = Builder::default();
        unfinished
            .write(0, 1, 2)
            .read(1, 1)
            .ok_read(1, 1, Some(2))
            .read(1, 1)
            .ok_read(1, 1, Some(2));
        assert_eq!(validity(&unfinished), Validity::Valid);
    }

    /// An info write cannot take effect before it was invoked.
    #[test]
    fn info_write_read_before_invocation_is_invalid() {
        let mut history = Builder::default();
        history.read(1, 1).ok_read(1, 1, Some(2));
        history.write(0, 1, 2).info(0);
        assert_eq!(validity(&history), Validity::Invalid);
    }

    /// Info reads tell nothing; failed writes never happened.
    #[test]
    fn info_reads_and_failed_writes_are_excluded() {
        let mut history = Builder::default();
        history.read(0, 1).ok_read(0, 1, None);
        history.read(1, 1).info(1);
        history.write(2, 1, 9).fail(2);
        history.read(0, 1).ok_read(0, 1, None);
        let verdict = check(&history.build(), &config());
        assert_eq!((verdict.validity, verdict.ops_checked), (Validity::Valid, 2));
    }

    /// Keys are checked independently and the violation names its key.
    #[test]
    fn violation_is_reported_per_key() {
        let mut history = Builder::default();
        history.write(0, 1, 10).ok(0).read(0, 1).ok_read(0, 1, Some(10));
        history.write(1, 2, 20).ok(1).read(1, 2).ok_read(1, 2, Some(10));
        history.write(0, 3, 30).ok(0);
        let verdict = check(&history.build(), &config());
        assert_eq!(verdict.validity, Validity::Invalid);
        assert_eq!(verdict.anomalies.len(), 1);
        assert_eq!(verdict.anomalies[0].key, Some(2));
    }

    /// Many timed-out writes nobody observed are pruned and do not blow up the search,
    /// while an observed info write still counts.
    #[test]
    fn unobserved_info_writes_do_not_explode() {
        let mut history = Builder::default();
        for value in 0..60 {
            history.write(value + 10, 1, 1_000 + value);
        }
        history.write(0, 1, 1).ok(0);
        for value in 0..60 {
            history.info(value + 10);
        }
        history.read(1, 1).ok_read(1, 1, Some(1));
        let verdict = check(&history.build(), &config());
        assert_eq!(verdict.validity, Validity::Valid);
        assert!(
            verdict.notes[0].contains("dropped 60 indeterminate writes"),
            "{:?}",
            verdict.notes
        );

        let mut observed = Builder::default();
        observed
            .write(0, 1, 1)
            .ok(0)
            .write(2, 1, 2)
            .info(2)
            .read(1, 1)
            .ok_read(1, 1, Some(2));
        observed.write(0, 1, 3).ok(0).read(1, 1).ok_read(1, 1, Some(2));
        assert_eq!(validity(&observed), Validity::Invalid);
    }

    /// By default five impossible observations are listed per key and the rest counted in
    /// a note; `Listing::All` lists every one.
    #[test]
    fn all_violations_lists_every_impossible_observation() {
        let mut history = Builder::default();
        history.write(0, 1, 1).ok(0);
        for _ in 0..9 {
            history.read(1, 1).ok_read(1, 1, Some(99));
        }
        let sample = check(&history.build(), &config());
        assert_eq!(sample.validity, Validity::Invalid);
        assert_eq!(sample.anomalies.len(), MAX_IMPOSSIBLE_PER_KEY);
        assert!(
            sample
                .notes
                .iter()
                .any(|note| note.contains("9 impossible observations")),
            "{sample:?}"
        );
        let all = LinearizableConfig {
            listing: Listing::All,
            ..config()
        };
        assert_eq!(check(&history.build(), &all).anomalies.len(), 9);
    }

    /// The search bound turns an undecided search into Unknown with a note.
    #[test]
    fn search_bound_gives_unknown() {
        let mut history = Builder::default();
        history
            .write(0, 1, 1)
            .write(1, 1, 2)
            .write(2, 1, 3)
            .ok(0)
            .ok(1)
            .ok(2);
        let tight = LinearizableConfig {
            max_states_per_key: 2,
            max_threads: 1,
            listing: Listing::Sample,
        };
        let verdict = check(&history.build(), &tight);
        assert_eq!(verdict.validity, Validity::Unknown);
        assert!(
            verdict.notes.iter().any(|note| note.contains("gave up")),
            "{:?}",
            verdict.notes
        );
    }

    /// A history that breaks the invoke/complete discipline is Unknown, not a panic.
    #[test]
    fn malformed_history_is_unknown() {
        let mut builder = Builder::default();
        builder.write(0, 1, 1).ok(0).read(0, 1).ok_read(0, 1, Some(1));
        let mut no_result = builder.build();
        no_result.ops[3].value = OpValue::Nil;
        let verdict = check(&no_result, &config());
        assert_eq!(verdict.validity, Validity::Unknown);
        assert!(
            verdict.notes.iter().any(|note| note.contains("op 2")),
            "{:?}",
            verdict.notes
        );
        let mut orphan_completion = builder.build();
        orphan_completion.ops.remove(2);
        assert_eq!(check(&orphan_completion, &config()).validity, Validity::Unknown);
    }

    /// A simulated register execution: processes invoke ops, the simulation linearizes them at
    /// a point between invocation and completion, and completes them ok / fail / info.
    fn simulate(processes: u64, keys: u64, choices: &[u32]) -> History {
        #[derive(Clone, Copy)]
        enum Pending {
            Read { key: u64 },
            Write { key: u64, value: u64 },
            Cas { key: u64, from: u64, to: u64 },
        }
        #[derive(Clone, Copy)]
        enum Slot {
            Idle,
            Invoked(Pending),
            /// Took effect: read result, or whether a cas succeeded.
            Applied(Pending, Option<u64>, bool),
        }
        let mut history = Builder::default();
        let mut registers: HashMap<u64, Option<u64>> = HashMap::new();
        let mut written: Vec<u64> = Vec::new();
        let mut next_value = 1u64;
        let mut slots = vec![Slot::Idle; processes as usize];
        for choice in choices {
            let process = u64::from(*choice) % processes;
            let bits = u64::from(*choice) / processes;
            let slot = &mut slots[process as usize];
            match *slot {
                Slot::Idle => {
                    let key = (bits / 3) % keys;
                    *slot = Slot::Invoked(match bits % 3 {
                        0 => {
                            history.read(process, key);
                            Pending::Read { key }
                        }
                        1 => {
                            history.write(process, key, next_value);
                            next_value += 1;
                            Pending::Write {
                                key,
                                value: next_value - 1,
                            }
                        }
                        _ => {
                            let current = registers.get(&key).copied().flatten();
                            let from = match (current, bits % 4) {
                                (Some(current), 0..=2) => current,
                                _ => written
                                    .get((bits as usize / 12) % written.len().max(1))
                                    .copied()
                                    .unwrap_or(0),
                            };
                            history.cas(process, key, from, next_value);
                            next_value += 1;
                            Pending::Cas {
                                key,
                                from,
                                to: next_value - 1,
                            }
                        }
                    });
                }
                Slot::Invoked(pending) => match bits % 8 {
                    0 => {
                        history.fail(process);
                        *slot = Slot::Idle;
                    }
                    1 => {
                        history.info(process);
                        *slot = Slot::Idle;
                    }
                    _ => {
                        let (result, success) = match pending {
                            Pending::Read { key } => (registers.get(&key).copied().flatten(), true),
                            Pending::Write { key, value } => {
                                registers.insert(key, Some(value));
                                written.push(value);
                                (None, true)
                            }
                            Pending::Cas { key, from, to } => {
                                let current = registers.get(&key).copied().flatten();
                                let success = current == Some(from);
                                if success {
                                    registers.insert(key, Some(to));
                                    written.push(to);
                                }
                                (None, success)
                            }
                        };
                        *slot = Slot::Applied(pending, result, success);
                    }
                },
                Slot::Applied(pending, result, success) => {
                    match (pending, bits % 6) {
                        (_, 0) => history.info(process),
                        (Pending::Read { key }, _) => history.ok_read(process, key, result),
                        (_, _) if success => history.ok(process),
                        (_, _) => history.fail(process),
                    };
                    *slot = Slot::Idle;
                }
            }
        }
        history.build()
    }

    /// Values an ok read certainly could not have returned (see the module test docs):
    /// a fresh value, values whose writes failed, values written only after the read
    /// completed, values overwritten by a definite write before the read began, and nil
    /// once a definite write completed before the read began.
    fn impossible_values(history: &History, read_position: usize) -> Vec<Option<u64>> {
        let pairs = history.pairs().expect("simulated history pairs");
        let read = pairs[read_position];
        let (
            Some(read_completion),
            OpValue::Register {
                key: read_key,
                value: original,
            },
        ) = (read.completion, read.result_value())
        else {
            return Vec::new();
        };
        let produced = |pair: &OpPair<'_>| match pair.invoke.value {
            OpValue::Register {
                key,
                value: Some(value),
            } if key == *read_key && pair.invoke.f == F::Write => Some(value),
            OpValue::Cas { key, to, .. } if key == *read_key => Some(to),
            _ => None,
        };
        let definite: Vec<(u64, u64)> = pairs
            .iter()
            .filter(|pair| pair.outcome() == OpType::Ok && produced(pair).is_some())
            .filter_map(|pair| {
                pair.completion
                    .map(|completion| (pair.invoke.index, completion.index))
            })
            .collect();
        let overwritten_before_read = |completed_at: u64| {
            definite
                .iter()
                .any(|(invoke, complete)| completed_at < *invoke && *complete < read.invoke.index)
        };
        let mut candidates: Vec<Option<u64>> = vec![None, Some(1_000_000_000)];
        candidates.extend(pairs.iter().filter_map(produced).map(Some));
        candidates.retain(|candidate| {
            if candidate == original {
                return false;
            }
            let Some(value) = candidate else {
                return definite.iter().any(|(_, complete)| *complete < read.invoke.index);
            };
            !pairs.iter().any(|pair| {
                produced(pair) == Some(*value)
                    && pair.outcome() != OpType::Fail
                    && pair.invoke.index < read_completion.index
                    && !(pair.outcome() == OpType::Ok
                        && pair
                            .completion
                            .is_some_and(|completion| overwritten_before_read(completion.index)))
            })
        });
        candidates
    }

    /// A small random history (not necessarily linearizable) over two keys, with values drawn
    /// from `1..=values`: few values make them repeat, many make most values single-writer.
    fn random_history(processes: u64, values: u64, choices: &[u32]) -> History {
        let mut history = Builder::default();
        // Per process: the key of its outstanding op and whether it is a read.
        let mut busy: Vec<Option<(u64, bool)>> = vec![None; processes as usize];
        for choice in choices {
            let process = u64::from(*choice) % processes;
            let bits = u64::from(*choice) / processes;
            let key = bits % 2;
            let value = (bits / 2) % values + 1;
            let other = (bits / 2 / values) % values + 1;
            let kind = bits / 2 / values / values;
            match busy[process as usize] {
                None => {
                    match kind % 3 {
                        0 => history.read(process, key),
                        1 => history.write(process, key, value),
                        _ => history.cas(process, key, value, other),
                    };
                    busy[process as usize] = Some((key, kind.is_multiple_of(3)));
                }
                Some((key, is_read)) => {
                    match kind % 5 {
                        0 => history.fail(process),
                        1 => history.info(process),
                        _ if is_read => history.ok_read(process, key, (value != values).then_some(value)),
                        _ => history.ok(process),
                    };
                    busy[process as usize] = None;
                }
            }
        }
        history.build()
    }

    /// Exhaustive linearizability of one key (at most 64 ops): tries every order of the ops
    /// that respects real time, `ok` ops required and `info` ops optional, remembering failed
    /// (linearized set, value) configurations. It shares no code with the checker's search.
    fn brute_force(
        ops: &[(RegisterOp, u64, u64, bool)],
        used: u64,
        state: Option<u64>,
        failed: &mut HashSet<(u64, Option<u64>)>,
    ) -> bool {
        let is_used = |op: usize| used & (1u64 << op) != 0;
        if (0..ops.len()).all(|op| is_used(op) || !ops[op].3) {
            return true;
        }
        if failed.contains(&(used, state)) {
            return false;
        }
        for candidate in (0..ops.len()).filter(|op| !is_used(*op)) {
            let (op, call, _, _) = ops[candidate];
            let must_precede =
                (0..ops.len()).any(|other| !is_used(other) && ops[other].3 && ops[other].2 < call);
            if must_precede {
                continue;
            }
            if let Some(next) = op.step(state) {
                if brute_force(ops, used | (1u64 << candidate), next, failed) {
                    return true;
                }
            }
        }
        failed.insert((used, state));
        false
    }

    fn brute_force_history(history: &History) -> bool {
        let pairs = history.pairs().expect("random history pairs");
        let extracted = extract(&pairs);
        extracted.by_key.values().all(|ops| {
            assert!(ops.len() <= 64, "brute force handles at most 64 ops per key");
            let ops: Vec<(RegisterOp, u64, u64, bool)> = ops
                .iter()
                .map(|op| (op.op, op.invoke_index, op.return_time(), op.required()))
                .collect();
            brute_force(&ops, 0, None, &mut HashSet::new())
        })
    }

    proptest! {
        // Some generated histories have no ok read, or no impossible value to corrupt it with.
        #![proptest_config(ProptestConfig { max_global_rejects: 1 << 16, ..ProptestConfig::default() })]

        /// Histories of a simulated linearizable register are always judged valid.
        #[test]
        fn simulated_histories_are_valid(
            processes in 1u64..6,
            keys in 1u64..4,
            choices in proptest::collection::vec(any::<u32>(), 0..160),
        ) {
            let history = simulate(processes, keys, &choices);
            let verdict = check(&history, &config());
            prop_assert_eq!(verdict.validity, Validity::Valid, "{:?}\n{}", verdict, crate::edn::history_to_edn(&history));
        }

        /// On small random histories the search agrees with an exhaustive enumeration.
        #[test]
        fn agrees_with_brute_force(
            processes in 1u64..6,
            values in 2u64..12,
            choices in proptest::collection::vec(any::<u32>(), 0..60),
        ) {
            let history = random_history(processes, values, &choices);
            let expected = if brute_force_history(&history) { Validity::Valid } else { Validity::Invalid };
            let verdict = check(&history, &config());
            prop_assert_eq!(verdict.validity, expected, "{:?}\n{}", verdict, crate::edn::history_to_edn(&history));
        }

        /// Changing one ok read to a value it could not have seen is caught.
        #[test]
        fn corrupted_read_is_invalid(
            processes in 1u64..6,
            keys in 1u64..3,
            choices in proptest::collection::vec(any::<u32>(), 1..160),
            pick in any::<usize>(),
        ) {
            let history = simulate(processes, keys, &choices);
            let pairs = history.pairs().expect("pairs");
            let reads: Vec<usize> = (0..pairs.len())
                .filter(|position| pairs[*position].invoke.f == F::Read && pairs[*position].outcome() == OpType::Ok)
                .collect();
            prop_assume!(!reads.is_empty());
            let read_position = reads[pick % reads.len()];
            let impossible = impossible_values(&history, read_position);
            prop_assume!(!impossible.is_empty());
            let corrupt_value = impossible[(pick / 7) % impossible.len()];
            let completion_index = pairs[read_position].completion.map(|completion| completion.index);
            let mut corrupted = history.clone();
            for op in &mut corrupted.ops {
                if Some(op.index) == completion_index {
                    if let OpValue::Register { value, .. } = &mut op.value {
                        *value = corrupt_value;
                    }
                }
            }
            let verdict = check(&corrupted, &config());
            prop_assert_eq!(verdict.validity, Validity::Invalid, "{:?}\n{}", verdict, crate::edn::history_to_edn(&corrupted));
        }
    }

    /// Tens of thousands of ops over many keys with heavy concurrency check quickly.
    #[test]
    fn large_history_checks_quickly() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let choices: Vec<u32> = (0..90_000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 32) as u32
            })
            .collect();
        let spread = simulate(40, 30, &choices);
        assert!(spread.len() > 50_000);
        // One hot key with about a hundred ops in flight at any time.
        let hot_key = simulate(200, 1, &choices[..30_000]);
        for history in [spread, hot_key] {
            let started = Instant::now();
            let verdict = check(&history, &LinearizableConfig::default());
            assert_eq!(verdict.validity, Validity::Valid, "{verdict:?}");
            assert!(started.elapsed().as_secs() < 5, "took {:?}", started.elapsed());
        }
    }

    /// When only the search can find the violation, the report names the key, the op that
    /// could not be linearized and the ops pending at the point of deepest progress.
    #[test]
    fn search_failure_reports_deepest_context() {
        let mut history = Builder::default();
        history.write(0, 7, 1).ok(0);
        // ops 2..9: two reads overlap a write of 2; the first sees 2, the later one sees 1 again.
        history
            .write(0, 7, 2)
            .read(1, 7)
            .ok_read(1, 7, Some(2))
            .read(2, 7)
            .ok_read(2, 7, Some(1))
            .ok(0);
        let verdict = check(&history.build(), &config());
        assert_eq!(verdict.validity, Validity::Invalid);
        let anomaly = &verdict.anomalies[0];
        assert_eq!((anomaly.kind.as_str(), anomaly.key), (NONLINEARIZABLE, Some(7)));
        assert!(
            anomaly.description.contains("Deepest progress"),
            "{}",
            anomaly.description
        );
        assert!(
            anomaly
                .description
                .contains("read -> 1 (process 2, ops 5..6, ok)"),
            "{}",
            anomaly.description
        );
        assert!(
            anomaly.ops.contains(&5) && anomaly.ops.contains(&6),
            "{anomaly:?}"
        );
    }
}
