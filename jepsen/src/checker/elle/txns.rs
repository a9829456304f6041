//! Transactions extracted from a history, and what their reads observed: the version order
//! of every key, and the anomalies visible without the dependency graph (`duplicate-append`,
//! `internal`, `incompatible-order`, `garbage-read`, `G1a`, `G1b`, `lost-update`).

use std::collections::{btree_map, hash_map, BTreeMap, BTreeSet, HashMap, HashSet};

use super::{AnomalyKind, Findings, ModelError, TxnCounts};
use crate::history::{History, MicroOp, OpType, OpValue, F};

/// Most transactions one history may hold: graph nodes are `u32`, and the product graph of
/// the cycle search numbers two states per node.
pub(super) const MAX_TXNS: usize = (u32::MAX / 4) as usize;

/// Most values of a list quoted in full in a description.
const MAX_QUOTED_VALUES: usize = 8;

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Committed.
    Ok,
    /// Certainly did not commit.
    Failed,
    /// May or may not have committed (`info`, or no completion).
    Unknown,
}

/// One transaction of the history, with micro-ops of type `M` (list-append's by default).
#[derive(Debug, Clone)]
pub(super) struct Txn<M = MicroOp> {
    /// History index of the invocation (the transaction is named `T<invoke_index>`).
    pub(super) invoke_index: u64,
    /// History index of the completion, if any.
    pub(super) completion_index: Option<u64>,
    pub(super) outcome: Outcome,
    /// The completion's micro-ops for an `ok` transaction (reads with results), else the
    /// invocation's.
    pub(super) micro_ops: Vec<M>,
}

impl<M> Txn<M> {
    /// `T<invoke index>`.
    pub(super) fn name(&self) -> String {
        format!("T{}", self.invoke_index)
    }

    /// History indexes of the invocation and the completion.
    pub(super) fn ops(&self) -> impl Iterator<Item = u64> {
        std::iter::once(self.invoke_index).chain(self.completion_index)
    }
}

impl Txn {
    /// The values this transaction appends to `key`, in order.
    pub(super) fn appends_to(&self, key: u64) -> impl Iterator<Item = u64> + '_ {
        self.micro_ops.iter().filter_map(move |micro_op| match micro_op {
            MicroOp::Append {
                key: appended_key,
                value,
            } if *appended_key == key => Some(*value),
            _ => None,
        })
    }
}

/// The `:txn` operations of `history`, in invocation order.
pub(super) fn extract(history: &History) -> Result<Vec<Txn>, ModelError> {
    extract_ops(
        history,
        &F::Txn,
        |value| match value {
            OpValue::Txn(micro_ops) => Some(micro_ops),
            _ => None,
        },
        |micro_op| matches!(micro_op, MicroOp::Read { values: None, .. }),
    )
}

/// The transactions of function `f` in `history`, in invocation order, for any model:
/// `micro_ops` finds an op's micro-ops, `unread` tells a read without its result (which an
/// `ok` completion must not hold).
pub(super) fn extract_ops<M: Clone>(
    history: &History,
    f: &F,
    micro_ops: impl Fn(&OpValue) -> Option<&Vec<M>>,
    unread: impl Fn(&M) -> bool,
) -> Result<Vec<Txn<M>>, ModelError> {
    let mut txns = Vec::new();
    for pair in history.pairs()? {
        if pair.f() != f {
            continue;
        }
        let Some(invoked) = micro_ops(&pair.invoke.value) else {
            return Err(ModelError::Malformed {
                index: pair.invoke.index,
                reason: "a txn invocation without micro-ops",
            });
        };
        let outcome = match pair.outcome() {
            OpType::Ok => Outcome::Ok,
            OpType::Fail => Outcome::Failed,
            OpType::Info | OpType::Invoke => Outcome::Unknown,
        };
        let micro_ops = match pair.completion {
            Some(completion) if outcome == Outcome::Ok => {
                let Some(completed) = micro_ops(&completion.value) else {
                    return Err(ModelError::Malformed {
                        index: completion.index,
                        reason: "an ok txn completion without micro-ops",
                    });
                };
                if completed.iter().any(&unread) {
                    return Err(ModelError::Malformed {
                        index: completion.index,
                        reason: "an ok txn without read results",
                    });
                }
                completed.clone()
            }
            _ => invoked.clone(),
        };
        txns.push(Txn {
            invoke_index: pair.invoke.index,
            completion_index: pair.completion.map(|completion| completion.index),
            outcome,
            micro_ops,
        });
    }
    if txns.len() > MAX_TXNS {
        return Err(ModelError::Malformed {
            index: txns.last().map_or(0, |txn| txn.invoke_index),
            reason: "more transactions than the checker numbers",
        });
    }
    Ok(txns)
}

/// The transaction that appended a value to a key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Writer {
    /// Position of the transaction in the extracted list.
    pub(super) txn: u32,
    /// Whether the value is the transaction's last append to the key.
    pub(super) last: bool,
}

/// One read of an `ok` transaction, as an observation of the committed order: the list read
/// without the transaction's own trailing appends.
#[derive(Debug, Clone, Copy)]
pub(super) struct Observation {
    /// Position of the reading transaction.
    pub(super) txn: u32,
    /// Position of the read among the transaction's micro-ops.
    micro_op: u32,
    pub(super) key: u64,
    /// Length of the observed prefix.
    len: u32,
    /// Whether the observed prefix is a prefix of the key's version order.
    pub(super) compatible: bool,
}

/// The version order of one key: the longest observation of it.
#[derive(Debug, Clone)]
pub(super) struct Order {
    pub(super) values: Vec<u64>,
    /// Position of the transaction whose read it is.
    reader: u32,
    /// Whether dependency edges may be derived from it (no value of the key duplicated).
    pub(super) usable: bool,
}

/// What the reads of a history observed.
#[derive(Debug, Default)]
pub(super) struct Observed {
    /// The writer of each `(key, value)` (the first, if duplicated).
    pub(super) writers: HashMap<(u64, u64), Writer>,
    /// The version order of each key read.
    pub(super) orders: BTreeMap<u64, Order>,
    /// Every usable read of an `ok` transaction.
    pub(super) observations: Vec<Observation>,
    /// Per transaction: `ok`, or `info` with an observed append.
    pub(super) committed: Vec<bool>,
    pub(super) counts: TxnCounts,
    pub(super) notes: Vec<String>,
}

impl Observed {
    /// The values `observation` saw, oldest first.
    pub(super) fn values<'a>(&self, txns: &'a [Txn], observation: &Observation) -> &'a [u64] {
        let micro_op = txns
            .get(observation.txn as usize)
            .and_then(|txn| txn.micro_ops.get(observation.micro_op as usize));
        match micro_op {
            Some(MicroOp::Read {
                values: Some(values), ..
            }) => values.get(..observation.len as usize).unwrap_or(values),
            _ => &[],
        }
    }
}

/// Reports every read of a committed transaction that saw a value appended by a transaction
/// that never committed (`G1a`, an aborted read) and takes those values out of the read.
/// What remains is what the read saw of transactions that may have committed: the version
/// orders and dependencies are built from that, so a dirty read — which READ UNCOMMITTED
/// allows, and which puts a value no later read has into a list — is reported once, as
/// `G1a`, not also as an `incompatible-order` of every read after it.
///
/// A transaction never committed when it failed, or — its outcome unknown — when a read
/// saw its value at a position of the key's list where the longest read of the key (values
/// of failed transactions aside) holds another value and never this one: lists only grow,
/// so a committed value would be there.
pub(super) fn strip_aborted_reads(txns: &mut [Txn], findings: &mut Findings) {
    let mut aborted: HashMap<(u64, u64), (usize, &'static str)> = HashMap::new();
    for (position, txn) in txns.iter().enumerate() {
        if txn.outcome == Outcome::Failed {
            for micro_op in &txn.micro_ops {
                if let MicroOp::Append { key, value } = micro_op {
                    aborted
                        .entry((*key, *value))
                        .or_insert((position, "which failed"));
                }
            }
        }
    }
    let mut unknown: HashMap<(u64, u64), usize> = HashMap::new();
    for (position, txn) in txns.iter().enumerate() {
        if txn.outcome == Outcome::Unknown {
            for micro_op in &txn.micro_ops {
                if let MicroOp::Append { key, value } = micro_op {
                    unknown.entry((*key, *value)).or_insert(position);
                }
            }
        }
    }
    // Committed reads, each without the reader's own appends at its end.
    let committed_reads = |txns: &[Txn]| -> Vec<(u64, Vec<u64>)> {
        let mut reads = Vec::new();
        for txn in txns.iter().filter(|txn| txn.outcome == Outcome::Ok) {
            for micro_op in &txn.micro_ops {
                if let MicroOp::Read {
                    key,
                    values: Some(values),
                } = micro_op
                {
                    let own: Vec<u64> = txn.appends_to(*key).collect();
                    let mut values = values.clone();
                    while values.last().is_some_and(|last| own.contains(last)) {
                        values.pop();
                    }
                    reads.push((*key, values));
                }
            }
        }
        reads
    };
    if !unknown.is_empty() {
        let reads = committed_reads(txns);
        let mut longest: HashMap<u64, Vec<u64>> = HashMap::new();
        for (key, values) in &reads {
            let kept: Vec<u64> = values
                .iter()
                .copied()
                .filter(|value| !aborted.contains_key(&(*key, *value)))
                .collect();
            let entry = longest.entry(*key).or_default();
            if kept.len() > entry.len() {
                *entry = kept;
            }
        }
        // A read's provisional part is its last values, all of one transaction. A value some
        // read has with another transaction's after it was committed once.
        let mut committed_once: HashSet<(u64, usize)> = HashSet::new();
        let mut candidates: Vec<(u64, usize, usize)> = Vec::new();
        for (key, values) in &reads {
            let kept: Vec<u64> = values
                .iter()
                .copied()
                .filter(|value| !aborted.contains_key(&(*key, *value)))
                .collect();
            let writer_at = |position: usize| unknown.get(&(*key, kept[position])).copied();
            let mut start = kept.len();
            let tail_writer = kept.len().checked_sub(1).and_then(writer_at);
            while start > 0 && tail_writer.is_some() && writer_at(start - 1) == tail_writer {
                start -= 1;
            }
            for position in 0..start {
                if let Some(writer) = writer_at(position) {
                    committed_once.insert((*key, writer));
                }
            }
            if let Some(writer) = tail_writer {
                candidates.push((*key, writer, start));
            }
        }
        let mut never_committed: BTreeSet<usize> = BTreeSet::new();
        for (key, writer, position) in candidates {
            if committed_once.contains(&(key, writer)) {
                continue;
            }
            let order = longest.get(&key).map_or(&[][..], Vec::as_slice);
            let appended: Vec<u64> = txns[writer].appends_to(key).collect();
            let displaced = order.get(position).is_some_and(|there| !appended.contains(there));
            if displaced && !order.iter().any(|value| appended.contains(value)) {
                never_committed.insert(writer);
            }
        }
        for writer in never_committed {
            for micro_op in &txns[writer].micro_ops {
                if let MicroOp::Append { key, value } = micro_op {
                    aborted.insert(
                        (*key, *value),
                        (writer, "whose outcome was unknown and which never committed"),
                    );
                }
            }
        }
    }
    if aborted.is_empty() {
        return;
    }
    for position in 0..txns.len() {
        if txns[position].outcome != Outcome::Ok {
            continue;
        }
        for micro_op_position in 0..txns[position].micro_ops.len() {
            let MicroOp::Read {
                key,
                values: Some(values),
            } = &txns[position].micro_ops[micro_op_position]
            else {
                continue;
            };
            let key = *key;
            let Some((value, (writer, how))) = values
                .iter()
                .find_map(|value| Some((*value, *aborted.get(&(key, *value))?)))
            else {
                continue;
            };
            let reader = &txns[position];
            let writer_txn = &txns[writer];
            findings.add(
                AnomalyKind::G1a,
                Some(key),
                format!(
                    "{} read key {key} as {}: {value} was appended by {}, {how}",
                    reader.name(),
                    show(values),
                    writer_txn.name()
                ),
                reader.ops().chain(writer_txn.ops()).collect(),
            );
            if let MicroOp::Read {
                values: Some(values), ..
            } = &mut txns[position].micro_ops[micro_op_position]
            {
                values.retain(|value| !aborted.contains_key(&(key, *value)));
            }
        }
    }
}

/// Derives version orders and observations from the reads of `txns`, reporting the
/// anomalies they show on their own.
pub(super) fn observe(txns: &[Txn], findings: &mut Findings) -> Observed {
    let mut observed = Observed::default();
    let mut duplicated_keys = BTreeSet::new();
    observed.writers = index_writers(txns, findings, &mut duplicated_keys);
    let based_on = read_observations(txns, findings, &mut observed);
    observed.orders = version_orders(txns, &observed, findings, &mut duplicated_keys);
    for key in &duplicated_keys {
        if let Some(order) = observed.orders.get_mut(key) {
            order.usable = false;
        }
    }
    if !duplicated_keys.is_empty() {
        observed.notes.push(format!(
            "{} keys with duplicated values left out of the dependency graph",
            duplicated_keys.len()
        ));
    }
    check_observations(txns, findings, &mut observed);
    mark_committed(txns, &mut observed);
    report_lost_updates(txns, findings, based_on);
    observed
}

/// The writer of every appended value; a value appended twice is a `duplicate-append`.
fn index_writers(
    txns: &[Txn],
    findings: &mut Findings,
    duplicated_keys: &mut BTreeSet<u64>,
) -> HashMap<(u64, u64), Writer> {
    let mut writers: HashMap<(u64, u64), Writer> = HashMap::new();
    for (position, txn) in txns.iter().enumerate() {
        let mut last_by_key: HashMap<u64, u64> = HashMap::new();
        for micro_op in &txn.micro_ops {
            if let MicroOp::Append { key, value } = micro_op {
                last_by_key.insert(*key, *value);
            }
        }
        for micro_op in &txn.micro_ops {
            let MicroOp::Append { key, value } = micro_op else {
                continue;
            };
            let writer = Writer {
                txn: position as u32,
                last: last_by_key.get(key) == Some(value),
            };
            match writers.entry((*key, *value)) {
                hash_map::Entry::Vacant(vacant) => {
                    vacant.insert(writer);
                }
                hash_map::Entry::Occupied(first) => {
                    let first_txn = &txns[first.get().txn as usize];
                    let description = if first.get().txn == writer.txn {
                        format!("{} appended {value} to key {key} twice", txn.name())
                    } else {
                        format!(
                            "{} and {} both appended {value} to key {key}",
                            first_txn.name(),
                            txn.name()
                        )
                    };
                    let ops = first_txn.ops().chain(txn.ops()).collect();
                    findings.add(AnomalyKind::DuplicateAppend, Some(*key), description, ops);
                    duplicated_keys.insert(*key);
                }
            }
        }
    }
    writers
}

/// For lost updates: (key, last value of the read a transaction's first append to the key
/// followed) → the transactions.
type BasedOn = BTreeMap<(u64, Option<u64>), Vec<u32>>;

/// Walks every `ok` transaction's micro-ops: checks each read against the transaction's own
/// appends (`internal`), records the usable ones as observations, and the version each
/// transaction read before its first append to a key.
fn read_observations(txns: &[Txn], findings: &mut Findings, observed: &mut Observed) -> BasedOn {
    let mut based_on = BasedOn::new();
    for (position, txn) in txns.iter().enumerate() {
        if txn.outcome != Outcome::Ok {
            continue;
        }
        let mut all_appends: HashMap<u64, Vec<u64>> = HashMap::new();
        for micro_op in &txn.micro_ops {
            if let MicroOp::Append { key, value } = micro_op {
                all_appends.entry(*key).or_default().push(*value);
            }
        }
        let mut own_appends: HashMap<u64, Vec<u64>> = HashMap::new();
        let mut read_before_append: HashMap<u64, Option<u64>> = HashMap::new();
        for (micro_op_position, micro_op) in txn.micro_ops.iter().enumerate() {
            match micro_op {
                MicroOp::Append { key, value } => {
                    let appended = own_appends.entry(*key).or_default();
                    if appended.is_empty() {
                        if let Some(version) = read_before_append.get(key) {
                            based_on
                                .entry((*key, *version))
                                .or_default()
                                .push(position as u32);
                        }
                    }
                    appended.push(*value);
                }
                MicroOp::Read {
                    key,
                    values: Some(values),
                } => {
                    let own: &[u64] = own_appends.get(key).map_or(&[], Vec::as_slice);
                    let Some(prefix) = values
                        .len()
                        .checked_sub(own.len())
                        .filter(|_| values.ends_with(own))
                        .and_then(|prefix_len| values.get(..prefix_len))
                    else {
                        findings.add(
                            AnomalyKind::Internal,
                            Some(*key),
                            format!(
                                "{} appended {} to key {key}, then read it as {}, which does not end with them",
                                txn.name(),
                                show(own),
                                show(values)
                            ),
                            txn.ops().collect(),
                        );
                        continue;
                    };
                    let misplaced = all_appends
                        .get(key)
                        .into_iter()
                        .flatten()
                        .find(|own_value| prefix.contains(own_value));
                    if let Some(own_value) = misplaced {
                        findings.add(
                            AnomalyKind::Internal,
                            Some(*key),
                            format!(
                                "{} read key {key} as {}: its own append {own_value} is not among its trailing appends",
                                txn.name(),
                                show(values)
                            ),
                            txn.ops().collect(),
                        );
                        continue;
                    }
                    if own.is_empty() {
                        read_before_append.insert(*key, prefix.last().copied());
                    }
                    observed.observations.push(Observation {
                        txn: position as u32,
                        micro_op: micro_op_position as u32,
                        key: *key,
                        len: prefix.len() as u32,
                        compatible: false,
                    });
                }
                // `extract` refuses ok transactions with unread reads.
                MicroOp::Read { values: None, .. } => {}
            }
        }
    }
    based_on
}

/// The longest observation of each key is its version order; a value repeated in it is a
/// `duplicate-append`.
fn version_orders(
    txns: &[Txn],
    observed: &Observed,
    findings: &mut Findings,
    duplicated_keys: &mut BTreeSet<u64>,
) -> BTreeMap<u64, Order> {
    let mut longest: BTreeMap<u64, &Observation> = BTreeMap::new();
    for observation in &observed.observations {
        match longest.entry(observation.key) {
            btree_map::Entry::Vacant(vacant) => {
                vacant.insert(observation);
            }
            btree_map::Entry::Occupied(mut occupied) => {
                if observation.len > occupied.get().len {
                    occupied.insert(observation);
                }
            }
        }
    }
    let mut orders = BTreeMap::new();
    for (key, observation) in longest {
        let values = observed.values(txns, observation);
        let mut seen = HashSet::with_capacity(values.len());
        if let Some(repeated) = values.iter().find(|value| !seen.insert(**value)) {
            let reader = &txns[observation.txn as usize];
            findings.add(
                AnomalyKind::DuplicateAppend,
                Some(key),
                format!(
                    "{} read key {key} as {}: {repeated} appears twice",
                    reader.name(),
                    show(values)
                ),
                reader.ops().collect(),
            );
            duplicated_keys.insert(key);
        }
        orders.insert(
            key,
            Order {
                values: values.to_vec(),
                reader: observation.txn,
                usable: true,
            },
        );
    }
    orders
}

/// Where a key's version order first holds a value nobody appended, and a value appended by a
/// failed transaction.
#[derive(Debug, Clone, Copy, Default)]
struct BadPositions {
    garbage: Option<usize>,
    failed: Option<usize>,
}

fn bad_positions(
    txns: &[Txn],
    writers: &HashMap<(u64, u64), Writer>,
    key: u64,
    values: &[u64],
) -> BadPositions {
    let mut bad = BadPositions::default();
    for (position, value) in values.iter().enumerate() {
        match writers.get(&(key, *value)) {
            None => {
                bad.garbage.get_or_insert(position);
            }
            Some(writer) if txns[writer.txn as usize].outcome == Outcome::Failed => {
                bad.failed.get_or_insert(position);
            }
            Some(_) => {}
        }
        if bad.garbage.is_some() && bad.failed.is_some() {
            break;
        }
    }
    bad
}

/// Checks every observation against its key's version order (`incompatible-order`) and its
/// values' writers (`garbage-read`, `G1a`, `G1b`).
fn check_observations(txns: &[Txn], findings: &mut Findings, observed: &mut Observed) {
    let order_bad: BTreeMap<u64, BadPositions> = observed
        .orders
        .iter()
        .map(|(key, order)| (*key, bad_positions(txns, &observed.writers, *key, &order.values)))
        .collect();
    let mut observations = std::mem::take(&mut observed.observations);
    for observation in &mut observations {
        let reader = &txns[observation.txn as usize];
        let key = observation.key;
        let values = observed.values(txns, observation);
        let Some(order) = observed.orders.get(&key) else {
            continue;
        };
        observation.compatible = order.values.get(..values.len()) == Some(values);
        let bad = if observation.compatible {
            let in_order = order_bad.get(&key).copied().unwrap_or_default();
            BadPositions {
                garbage: in_order.garbage.filter(|position| *position < values.len()),
                failed: in_order.failed.filter(|position| *position < values.len()),
            }
        } else {
            let longest_reader = &txns[order.reader as usize];
            findings.add(
                AnomalyKind::IncompatibleOrder,
                Some(key),
                format!(
                    "{} read key {key} as {}, which is not a prefix of {} read by {}",
                    reader.name(),
                    show(values),
                    show(&order.values),
                    longest_reader.name()
                ),
                reader.ops().chain(longest_reader.ops()).collect(),
            );
            bad_positions(txns, &observed.writers, key, values)
        };
        if let Some(garbage) = bad.garbage.and_then(|position| values.get(position)) {
            findings.add(
                AnomalyKind::GarbageRead,
                Some(key),
                format!(
                    "{} read key {key} as {}: no transaction appended {garbage} to it",
                    reader.name(),
                    show(values)
                ),
                reader.ops().collect(),
            );
        }
        let failed = bad
            .failed
            .and_then(|position| values.get(position))
            .and_then(|value| Some((*value, observed.writers.get(&(key, *value))?)));
        if let Some((value, writer)) = failed {
            let writer_txn = &txns[writer.txn as usize];
            findings.add(
                AnomalyKind::G1a,
                Some(key),
                format!(
                    "{} read key {key} as {}: {value} was appended by {}, which failed",
                    reader.name(),
                    show(values),
                    writer_txn.name()
                ),
                reader.ops().chain(writer_txn.ops()).collect(),
            );
        }
        let last = values
            .last()
            .and_then(|value| Some((*value, observed.writers.get(&(key, *value))?)));
        if let Some((value, writer)) = last {
            let writer_txn = &txns[writer.txn as usize];
            let intermediate =
                !writer.last && writer.txn != observation.txn && writer_txn.outcome != Outcome::Failed;
            if intermediate {
                let later = writer_txn.appends_to(key).last().unwrap_or(value);
                findings.add(
                    AnomalyKind::G1b,
                    Some(key),
                    format!(
                        "{} read key {key} as {}: {value} is an intermediate append of {}, which later appended {later}",
                        reader.name(),
                        show(values),
                        writer_txn.name()
                    ),
                    reader.ops().chain(writer_txn.ops()).collect(),
                );
            }
        }
    }
    observed.observations = observations;
}

/// `ok` transactions committed; `info` ones did if a read observed one of their appends.
fn mark_committed(txns: &[Txn], observed: &mut Observed) {
    let mut committed: Vec<bool> = txns.iter().map(|txn| txn.outcome == Outcome::Ok).collect();
    let writers = &observed.writers;
    let mut mark = |key: u64, values: &[u64]| {
        for value in values {
            if let Some(writer) = writers.get(&(key, *value)) {
                if txns[writer.txn as usize].outcome == Outcome::Unknown {
                    committed[writer.txn as usize] = true;
                }
            }
        }
    };
    for (key, order) in &observed.orders {
        mark(*key, &order.values);
    }
    for observation in observed
        .observations
        .iter()
        .filter(|observation| !observation.compatible)
    {
        mark(observation.key, observed.values(txns, observation));
    }
    observed.committed = committed;
    let mut counts = TxnCounts::default();
    for (txn, committed) in txns.iter().zip(&observed.committed) {
        match txn.outcome {
            Outcome::Ok => counts.ok += 1,
            Outcome::Failed => counts.failed += 1,
            Outcome::Unknown => {
                counts.info += 1;
                counts.info_observed += usize::from(*committed);
            }
        }
    }
    observed.counts = counts;
}

/// Two committed transactions that read the same version of a key and then both appended
/// to it: one of the appends was made without knowing of the other.
fn report_lost_updates(txns: &[Txn], findings: &mut Findings, based_on: BasedOn) {
    for ((key, version), readers) in based_on {
        if readers.len() < 2 {
            continue;
        }
        let names: Vec<String> = readers
            .iter()
            .map(|reader| txns[*reader as usize].name())
            .collect();
        let version = version.map_or_else(|| "empty".to_string(), |last| format!("ending at {last}"));
        findings.add(
            AnomalyKind::LostUpdate,
            Some(key),
            format!(
                "{} all read key {key} {version} and then appended to it",
                names.join(", ")
            ),
            readers
                .iter()
                .flat_map(|reader| txns[*reader as usize].ops())
                .collect(),
        );
    }
}

/// A list in EDN form, its middle elided when long: `[1 2 ... 17 18 19 20]`.
pub(super) fn show(values: &[u64]) -> String {
    let join = |part: &[u64]| part.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    if values.len() <= MAX_QUOTED_VALUES {
        return format!("[{}]", join(values));
    }
    let head = values.get(..2).unwrap_or_default();
    let tail = values.get(values.len() - 4..).unwrap_or_default();
    format!("[{} ... {}] ({} values)", join(head), join(tail), values.len())
}
