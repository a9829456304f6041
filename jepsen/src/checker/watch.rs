//! The watch workload's checker (README, "Watch": "every change of its keys committed after
//! its start exactly once, per key in commit order ... resumable after a disconnect").
//!
//! Each watcher's `watch` ops are its streams, in order; each names the progress it resumed
//! from and ended at (per shard: every change at or below it was delivered) and the events
//! it delivered. Per watcher:
//!
//! - `duplicate`: no put value and no `(key, commit_ts)` delivered twice;
//! - `below-progress`: no event at or below the progress its stream resumed from;
//! - `out-of-order`: per key, commit timestamps strictly increasing, and put versions too;
//! - `never-written` / `failed-write-seen`: each put event's value was written to that key
//!   by a put that did not certainly fail; `wrong-version`: an acknowledged put's event
//!   carries the version the put answered;
//! - `commit-ts-disagrees`: every watcher saw a value at one commit timestamp;
//! - `lost`: an acknowledged put is delivered by every watcher that covered it. A watcher
//!   covers a shard from its first stream's start to its last stream's end, except in
//!   gaps: a stream resumed above where the previous one ended (after "compacted", which
//!   the watcher counts and steps over). A put some watcher delivered has a known commit
//!   timestamp; for one nobody delivered, its commit timestamp lies between the timestamps
//!   of the oracle taken before it was invoked and after it completed (`timestamp` ops), and
//!   a watcher whose coverage holds that whole interval must have it. An acknowledged put
//!   no watcher delivered and none certainly covered cannot be checked: the verdict is
//!   `unknown` and says which keys;
//! - `lost-delete` / `unexpected-delete`: per key, a watcher covering every acknowledged
//!   delete that found a value delivers at least that many delete events, and no watcher
//!   more than those plus the deletes of unknown outcome (a delete of an absent key
//!   changes nothing and is no event).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Anomaly, AnomalyList, Listing, Validity, Verdict};
use crate::history::{History, OpType, OpValue, Process, WatchedEvent, F};

/// Name of this checker in verdicts.
pub const CHECKER_NAME: &str = "watch";

/// Anomalies of each kind listed by default.
const SAMPLE_PER_KIND: usize = 16;

/// Whether a watch's error is "compacted" (OUT_OF_RANGE: the shard's history no longer
/// reaches back to where the watch resumed from).
pub fn is_compacted(error: &str) -> bool {
    error.contains("compacted")
}

/// A put or delete attempt.
#[derive(Debug, Clone, Copy)]
struct Write {
    key: u64,
    invoke: u64,
    outcome: OpType,
    /// The ok completion's index.
    completion: Option<u64>,
    /// An acknowledged put's version, or an acknowledged delete's "a value existed" (1/0).
    result: Option<u64>,
}

/// One watch stream of a watcher.
struct Stream<'a> {
    invoke: u64,
    from: BTreeMap<u32, u64>,
    to: BTreeMap<u32, u64>,
    events: &'a [WatchedEvent],
    error: Option<&'a str>,
}

/// Timestamps of the oracle with their invocations and completions: bounds on the commit
/// timestamp of an op from the real-time order (the oracle's timestamps follow it, which
/// the timestamp workload checks). Shared with `checker::ttl`.
pub(crate) struct Clock {
    /// `(completion, ts)` sorted by completion, with the running maximum of `ts`.
    completed: Vec<(u64, u64)>,
    /// `(invoke, ts)` sorted by invocation, with the minimum `ts` from each position on.
    invoked: Vec<(u64, u64)>,
}

impl Clock {
    /// From `(invoke, completion, ts)` of every timestamp taken.
    pub(crate) fn new(mut timestamps: Vec<(u64, u64, u64)>) -> Clock {
        timestamps.sort_unstable_by_key(|(_, completion, _)| *completion);
        let mut highest = 0;
        let completed = timestamps
            .iter()
            .map(|(_, completion, ts)| {
                highest = highest.max(*ts);
                (*completion, highest)
            })
            .collect();
        timestamps.sort_unstable_by_key(|(invoke, _, _)| *invoke);
        let mut invoked: Vec<(u64, u64)> = timestamps.iter().map(|(invoke, _, ts)| (*invoke, *ts)).collect();
        for position in (0..invoked.len().saturating_sub(1)).rev() {
            invoked[position].1 = invoked[position].1.min(invoked[position + 1].1);
        }
        Clock { completed, invoked }
    }

    /// The highest timestamp returned before history index `index`: an op invoked at
    /// `index` commits above it.
    pub(crate) fn before(&self, index: u64) -> Option<u64> {
        let position = self
            .completed
            .partition_point(|(completion, _)| *completion < index);
        position.checked_sub(1).map(|position| self.completed[position].1)
    }

    /// The lowest timestamp asked for after history index `index`: an op completed at
    /// `index` committed below it.
    pub(crate) fn after(&self, index: u64) -> Option<u64> {
        let position = self.invoked.partition_point(|(invoke, _)| *invoke <= index);
        self.invoked.get(position).map(|(_, ts)| *ts)
    }
}

/// What one watcher covered and delivered.
#[derive(Default)]
struct Watcher {
    /// Per shard, the merged `(from, to]` intervals its streams covered, in order.
    coverage: BTreeMap<u32, Vec<(u64, u64)>>,
    /// Put values delivered, with their commit timestamps.
    values: HashMap<u64, u64>,
    /// Delete events per key.
    deletes: HashMap<u64, usize>,
    gaps: usize,
    compacted: usize,
    /// Whether its last stream's progress passed its last timestamp on every shard.
    caught_up: bool,
    streams: usize,
    events: usize,
}

impl Watcher {
    /// Whether `ts` of `shard` lies in what the watcher covered.
    fn covers(&self, shard: u32, ts: u64) -> bool {
        self.coverage
            .get(&shard)
            .is_some_and(|intervals| intervals.iter().any(|(from, to)| *from < ts && ts <= *to))
    }

    /// Whether every commit timestamp in `(lower, upper)` of `shard` (every shard when
    /// unknown) lies in one interval the watcher covered.
    fn certainly_covers(&self, shard: Option<u32>, lower: u64, upper: u64) -> bool {
        let covers_shard = |intervals: &Vec<(u64, u64)>| {
            intervals
                .iter()
                .any(|(from, to)| *from <= lower && upper <= to.saturating_add(1))
        };
        match shard {
            Some(shard) => self.coverage.get(&shard).is_some_and(covers_shard),
            None => !self.coverage.is_empty() && self.coverage.values().all(covers_shard),
        }
    }
}

/// Checks the `watch-put`, `watch-delete`, `watch` and `timestamp` ops of `history`;
/// other ops are ignored.
pub fn check(history: &History, listing: Listing) -> Verdict {
    let pairs = match history.pairs() {
        Ok(pairs) => pairs,
        Err(error) => return Verdict::unknown(CHECKER_NAME, format!("malformed history: {error}")),
    };
    let mut puts: HashMap<u64, Write> = HashMap::new();
    let mut deletes: Vec<Write> = Vec::new();
    let mut streams: BTreeMap<Process, Vec<Stream<'_>>> = BTreeMap::new();
    let mut timestamps = Vec::new();
    // Each process's last timestamp: a watcher's final one.
    let mut final_timestamps: HashMap<Process, u64> = HashMap::new();
    let mut ops_checked = 0usize;
    for pair in &pairs {
        let outcome = pair.outcome();
        let completion = pair
            .completion
            .filter(|_| outcome == OpType::Ok)
            .map(|op| op.index);
        match (pair.f(), pair.result_value()) {
            (F::WatchPut | F::WatchDelete, OpValue::KeyWrite { key, value, result }) => {
                ops_checked += 1;
                let write = Write {
                    key: *key,
                    invoke: pair.invoke.index,
                    outcome,
                    completion,
                    result: *result,
                };
                match value {
                    Some(value) => {
                        puts.insert(*value, write);
                    }
                    None => deletes.push(write),
                }
            }
            (F::Watch, OpValue::Watch { from, to, events }) if outcome == OpType::Ok => {
                ops_checked += 1;
                let (Some(to), Some(events)) = (to, events) else {
                    return Verdict::unknown(
                        CHECKER_NAME,
                        format!("op {}: an ok watch without its end or events", pair.invoke.index),
                    );
                };
                streams.entry(pair.process()).or_default().push(Stream {
                    invoke: pair.invoke.index,
                    from: from.iter().copied().collect(),
                    to: to.iter().copied().collect(),
                    events,
                    error: pair.completion.and_then(|op| op.error.as_deref()),
                });
            }
            (F::Timestamp, OpValue::Timestamp(Some(ts))) => {
                if let Some(completion) = completion {
                    timestamps.push((pair.invoke.index, completion, *ts));
                    final_timestamps.insert(pair.process(), *ts);
                }
            }
            _ => {}
        }
    }
    if streams.is_empty() {
        return Verdict::unknown(CHECKER_NAME, "no watch stream in the history".to_string());
    }
    let clock = Clock::new(timestamps);
    let mut anomalies = AnomalyList::new(listing, SAMPLE_PER_KIND);
    let mut key_shards: HashMap<u64, u32> = HashMap::new();
    let mut commit_ts_of: HashMap<u64, (u64, Process)> = HashMap::new();
    let mut watchers: BTreeMap<Process, Watcher> = BTreeMap::new();
    for (process, streams) in &streams {
        let mut watcher = check_watcher(
            *process,
            streams,
            &puts,
            &mut commit_ts_of,
            &mut key_shards,
            &mut anomalies,
        );
        let final_ts = final_timestamps.get(process).copied();
        watcher.caught_up = streams.last().zip(final_ts).is_some_and(|(last, final_ts)| {
            !last.to.is_empty() && last.to.values().all(|progress| *progress >= final_ts)
        });
        watchers.insert(*process, watcher);
    }
    let unchecked = check_lost_puts(
        &puts,
        &watchers,
        &commit_ts_of,
        &key_shards,
        &clock,
        &mut anomalies,
    );
    check_deletes(&deletes, &watchers, &key_shards, &clock, &mut anomalies);

    let mut notes: Vec<String> = watchers
        .iter()
        .map(|(process, watcher)| {
            format!(
                "watcher {process:?}: {} streams, {} events, {} compacted, {} gaps in its coverage, {}",
                watcher.streams,
                watcher.events,
                watcher.compacted,
                watcher.gaps,
                if watcher.caught_up {
                    "caught up with its final timestamp"
                } else {
                    "did not catch up with a final timestamp"
                }
            )
        })
        .collect();
    let acknowledged = puts.values().filter(|put| put.outcome == OpType::Ok).count();
    notes.push(format!(
        "{acknowledged} acknowledged puts, {} deletes ({} acknowledged as having deleted a value)",
        deletes.len(),
        deletes
            .iter()
            .filter(|delete| delete.outcome == OpType::Ok && delete.result == Some(1))
            .count()
    ));
    let compacted: usize = watchers.values().map(|watcher| watcher.compacted).sum();
    if compacted > 0 {
        notes.push(format!(
            "{compacted} streams ended \"compacted\" (a shard's history no longer reached back to \
             the watcher's progress: documented after a node restart or beyond --mvcc-window-ms); \
             the watchers resumed above it, and the changes in between are not checked for them"
        ));
    }
    let is_valid = anomalies.is_empty();
    if !unchecked.is_empty() {
        let keys: Vec<String> = unchecked
            .iter()
            .map(|(key, count)| format!("key {key}: {count}"))
            .collect();
        notes.push(format!(
            "not checked for loss: acknowledged puts no watcher delivered while none certainly \
             covered them (every watcher had a gap there, or no timestamp bounds them): {}",
            keys.join(", ")
        ));
    }
    let (anomalies, more) = anomalies.finish();
    notes.extend(more);
    let validity = if !is_valid {
        Validity::Invalid
    } else if unchecked.is_empty() {
        Validity::Valid
    } else {
        Validity::Unknown
    };
    Verdict {
        validity,
        checker: CHECKER_NAME.to_string(),
        ops_checked,
        anomalies,
        notes,
    }
}

fn anomaly(kind: &str, key: Option<u64>, description: String, ops: Vec<u64>) -> Anomaly {
    Anomaly {
        kind: kind.to_string(),
        key,
        description,
        ops,
    }
}

/// One watcher's streams: duplicates, order, values, and what it covered.
fn check_watcher(
    process: Process,
    streams: &[Stream<'_>],
    puts: &HashMap<u64, Write>,
    commit_ts_of: &mut HashMap<u64, (u64, Process)>,
    key_shards: &mut HashMap<u64, u32>,
    anomalies: &mut AnomalyList,
) -> Watcher {
    let mut watcher = Watcher::default();
    let mut delivered: HashSet<(u64, u64)> = HashSet::new();
    // Per key: the last commit timestamp and the last put version delivered.
    let mut last: HashMap<u64, (u64, u64)> = HashMap::new();
    for stream in streams {
        watcher.streams += 1;
        if stream.error.is_some_and(is_compacted) {
            watcher.compacted += 1;
        }
        for (shard, from) in &stream.from {
            let to = stream.to.get(shard).copied().unwrap_or(*from).max(*from);
            let intervals = watcher.coverage.entry(*shard).or_default();
            match intervals.last_mut() {
                Some((_, end)) if *from <= *end => *end = (*end).max(to),
                Some(_) => {
                    watcher.gaps += 1;
                    intervals.push((*from, to));
                }
                None => intervals.push((*from, to)),
            }
        }
        for event in stream.events {
            watcher.events += 1;
            key_shards.entry(event.key).or_insert(event.shard);
            let ops = vec![stream.invoke];
            let describe = |what: &str| {
                format!(
                    "watcher {process:?}, key {}: {what} (value {:?}, version {}, commit ts {}, shard {})",
                    event.key, event.value, event.version, event.commit_ts, event.shard
                )
            };
            if !delivered.insert((event.key, event.commit_ts)) {
                anomalies.push(anomaly(
                    "duplicate",
                    Some(event.key),
                    describe("delivered twice"),
                    ops.clone(),
                ));
                continue;
            }
            if stream
                .from
                .get(&event.shard)
                .is_some_and(|from| event.commit_ts <= *from)
            {
                anomalies.push(anomaly(
                    "below-progress",
                    Some(event.key),
                    describe("delivered at or below the progress its stream resumed from"),
                    ops.clone(),
                ));
            }
            let (last_ts, last_version) = last.get(&event.key).copied().unwrap_or((0, 0));
            if event.commit_ts <= last_ts || (event.value.is_some() && event.version <= last_version) {
                anomalies.push(anomaly(
                    "out-of-order",
                    Some(event.key),
                    describe(&format!(
                        "after commit ts {last_ts} and version {last_version} of the same key"
                    )),
                    ops.clone(),
                ));
            }
            let version = if event.value.is_some() {
                event.version
            } else {
                last_version
            };
            last.insert(
                event.key,
                (event.commit_ts.max(last_ts), version.max(last_version)),
            );
            let Some(value) = event.value else {
                *watcher.deletes.entry(event.key).or_default() += 1;
                continue;
            };
            if watcher.values.insert(value, event.commit_ts).is_some() {
                anomalies.push(anomaly(
                    "duplicate",
                    Some(event.key),
                    describe("value delivered twice"),
                    ops,
                ));
                continue;
            }
            match puts.get(&value) {
                Some(put) if put.key == event.key => {
                    let mut ops = ops;
                    ops.push(put.invoke);
                    if put.outcome == OpType::Fail {
                        anomalies.push(anomaly(
                            "failed-write-seen",
                            Some(event.key),
                            describe("written by a put that certainly failed"),
                            ops,
                        ));
                    } else if put.outcome == OpType::Ok && put.result != Some(event.version) {
                        anomalies.push(anomaly(
                            "wrong-version",
                            Some(event.key),
                            describe(&format!("its put was acknowledged with version {:?}", put.result)),
                            ops,
                        ));
                    }
                }
                _ => anomalies.push(anomaly(
                    "never-written",
                    Some(event.key),
                    describe("no put of this value to this key"),
                    ops,
                )),
            }
            match commit_ts_of.get(&value) {
                Some((ts, other)) if *ts != event.commit_ts => anomalies.push(anomaly(
                    "commit-ts-disagrees",
                    Some(event.key),
                    describe(&format!("watcher {other:?} saw it at commit ts {ts}")),
                    vec![stream.invoke],
                )),
                Some(_) => {}
                None => {
                    commit_ts_of.insert(value, (event.commit_ts, process));
                }
            }
        }
    }
    watcher
}

/// Every acknowledged put delivered by each watcher that covered it; returns, per key, how
/// many could not be checked.
fn check_lost_puts(
    puts: &HashMap<u64, Write>,
    watchers: &BTreeMap<Process, Watcher>,
    commit_ts_of: &HashMap<u64, (u64, Process)>,
    key_shards: &HashMap<u64, u32>,
    clock: &Clock,
    anomalies: &mut AnomalyList,
) -> BTreeMap<u64, usize> {
    let mut unchecked: BTreeMap<u64, usize> = BTreeMap::new();
    let mut acknowledged: Vec<(&u64, &Write)> =
        puts.iter().filter(|(_, put)| put.outcome == OpType::Ok).collect();
    acknowledged.sort_unstable_by_key(|(_, put)| put.invoke);
    for (value, put) in acknowledged {
        let shard = key_shards.get(&put.key).copied();
        match (commit_ts_of.get(value), shard) {
            (Some((commit_ts, _)), Some(shard)) => {
                for (process, watcher) in watchers {
                    if watcher.covers(shard, *commit_ts) && !watcher.values.contains_key(value) {
                        anomalies.push(anomaly(
                            "lost",
                            Some(put.key),
                            format!(
                                "watcher {process:?} covered shard {shard} at commit ts {commit_ts} \
                                 but never delivered value {value} (acknowledged, version {:?})",
                                put.result
                            ),
                            vec![put.invoke],
                        ));
                    }
                }
            }
            _ => {
                let bounds = clock
                    .before(put.invoke)
                    .zip(put.completion.and_then(|completion| clock.after(completion)));
                let covering = bounds.and_then(|(lower, upper)| {
                    watchers
                        .iter()
                        .find(|(_, watcher)| watcher.certainly_covers(shard, lower, upper))
                });
                match covering {
                    Some((process, _)) => anomalies.push(anomaly(
                        "lost",
                        Some(put.key),
                        format!(
                            "no watcher delivered value {value} (acknowledged, version {:?}), though \
                             watcher {process:?} covered every commit timestamp it can have",
                            put.result
                        ),
                        vec![put.invoke],
                    )),
                    None => *unchecked.entry(put.key).or_default() += 1,
                }
            }
        }
    }
    unchecked
}

/// Per key and watcher, delete events against the deletes that can have produced them.
fn check_deletes(
    deletes: &[Write],
    watchers: &BTreeMap<Process, Watcher>,
    key_shards: &HashMap<u64, u32>,
    clock: &Clock,
    anomalies: &mut AnomalyList,
) {
    let mut by_key: BTreeMap<u64, Vec<&Write>> = BTreeMap::new();
    for delete in deletes {
        by_key.entry(delete.key).or_default().push(delete);
    }
    let keys: HashSet<u64> = by_key
        .keys()
        .copied()
        .chain(
            watchers
                .values()
                .flat_map(|watcher| watcher.deletes.keys().copied()),
        )
        .collect();
    for key in keys {
        let deletes = by_key.get(&key).map(Vec::as_slice).unwrap_or_default();
        let removing: Vec<&&Write> = deletes
            .iter()
            .filter(|delete| delete.outcome == OpType::Ok && delete.result == Some(1))
            .collect();
        let unknown = deletes
            .iter()
            .filter(|delete| delete.outcome == OpType::Info)
            .count();
        let shard = key_shards.get(&key).copied();
        for (process, watcher) in watchers {
            let seen = watcher.deletes.get(&key).copied().unwrap_or(0);
            if seen > removing.len() + unknown {
                anomalies.push(anomaly(
                    "unexpected-delete",
                    Some(key),
                    format!(
                        "watcher {process:?} delivered {seen} deletes; only {} acknowledged deletes \
                         found a value and {unknown} are of unknown outcome",
                        removing.len()
                    ),
                    Vec::new(),
                ));
            }
            let covers_all = removing.iter().all(|delete| {
                let bounds = clock
                    .before(delete.invoke)
                    .zip(delete.completion.and_then(|completion| clock.after(completion)));
                bounds.is_some_and(|(lower, upper)| watcher.certainly_covers(shard, lower, upper))
            });
            if covers_all && seen < removing.len() {
                anomalies.push(anomaly(
                    "lost-delete",
                    Some(key),
                    format!(
                        "watcher {process:?} covered every acknowledged delete that found a value ({}) \
                         but delivered {seen} deletes",
                        removing.len()
                    ),
                    removing.iter().map(|delete| delete.invoke).collect(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, OpValue};

    /// Builds a watch history: ops get consecutive indexes.
    #[derive(Default)]
    struct Builder {
        ops: Vec<Op>,
    }

    impl Builder {
        fn push(&mut self, process: u64, op_type: OpType, f: F, value: OpValue, error: Option<&str>) -> u64 {
            let index = self.ops.len() as u64;
            self.ops.push(Op {
                index,
                time_ns: index,
                process: Process::Client(process),
                op_type,
                f,
                value,
                error: error.map(str::to_string),
            });
            index
        }

        fn timestamp(&mut self, process: u64, ts: u64) {
            self.push(
                process,
                OpType::Invoke,
                F::Timestamp,
                OpValue::Timestamp(None),
                None,
            );
            self.push(
                process,
                OpType::Ok,
                F::Timestamp,
                OpValue::Timestamp(Some(ts)),
                None,
            );
        }

        /// An acknowledged put (`outcome` ok: version `version`).
        fn put(&mut self, process: u64, key: u64, value: u64, outcome: OpType, version: u64) {
            let write = |result| OpValue::KeyWrite {
                key,
                value: Some(value),
                result,
            };
            self.push(process, OpType::Invoke, F::WatchPut, write(None), None);
            let result = (outcome == OpType::Ok).then_some(version);
            self.push(process, outcome, F::WatchPut, write(result), None);
        }

        fn delete(&mut self, process: u64, key: u64, outcome: OpType, existed: bool) {
            let write = |result| OpValue::KeyWrite {
                key,
                value: None,
                result,
            };
            self.push(process, OpType::Invoke, F::WatchDelete, write(None), None);
            let result = (outcome == OpType::Ok).then_some(u64::from(existed));
            self.push(process, outcome, F::WatchDelete, write(result), None);
        }

        fn stream(
            &mut self,
            process: u64,
            from: u64,
            to: u64,
            events: Vec<WatchedEvent>,
            error: Option<&str>,
        ) {
            let from = vec![(0, from)];
            self.push(
                process,
                OpType::Invoke,
                F::Watch,
                OpValue::Watch {
                    from: from.clone(),
                    to: None,
                    events: None,
                },
                None,
            );
            let value = OpValue::Watch {
                from,
                to: Some(vec![(0, to)]),
                events: Some(events),
            };
            self.push(process, OpType::Ok, F::Watch, value, error);
        }

        fn history(self) -> History {
            History { ops: self.ops }
        }
    }

    fn put_event(key: u64, value: u64, version: u64, commit_ts: u64) -> WatchedEvent {
        WatchedEvent {
            key,
            value: Some(value),
            version,
            commit_ts,
            shard: 0,
        }
    }

    fn delete_event(key: u64, commit_ts: u64) -> WatchedEvent {
        WatchedEvent {
            key,
            value: None,
            version: 0,
            commit_ts,
            shard: 0,
        }
    }

    /// Two puts and a delete, timestamps around them, two watchers (one resuming once):
    /// valid; the watchers' events are what the history holds.
    fn base(watcher_1: Vec<WatchedEvent>, watcher_2: Vec<WatchedEvent>) -> Builder {
        let mut builder = Builder::default();
        builder.timestamp(9, 10);
        builder.put(1, 0, 1, OpType::Ok, 5);
        builder.put(1, 0, 2, OpType::Ok, 7);
        builder.delete(1, 0, OpType::Ok, true);
        builder.timestamp(9, 100);
        let (first, second) = watcher_1.split_at(watcher_1.len().min(1));
        builder.stream(2, 10, 25, first.to_vec(), Some("unavailable: router gone"));
        builder.stream(2, 25, 100, second.to_vec(), None);
        builder.stream(3, 10, 100, watcher_2, None);
        builder
    }

    fn all_events() -> Vec<WatchedEvent> {
        vec![
            put_event(0, 1, 5, 20),
            put_event(0, 2, 7, 30),
            delete_event(0, 40),
        ]
    }

    #[test]
    fn exact_delivery_is_valid() {
        let verdict = check(&base(all_events(), all_events()).history(), Listing::All);
        assert_eq!(verdict.validity, Validity::Valid, "{verdict:?}");
        // Neither watcher took a final timestamp.
        assert!(
            verdict
                .notes
                .iter()
                .all(|note| !note.contains("caught up with its final")),
            "{verdict:?}"
        );
        let mut builder = base(all_events(), all_events());
        builder.timestamp(3, 90);
        builder.stream(3, 100, 120, Vec::new(), None);
        let verdict = check(&builder.history(), Listing::All);
        assert!(
            verdict.notes.iter().any(
                |note| note.starts_with("watcher Client(3)") && note.contains("caught up with its final")
            ),
            "{verdict:?}"
        );
    }

    /// Negative control: an acknowledged put one watcher dropped is lost.
    #[test]
    fn a_dropped_event_is_lost() {
        let mut dropped = all_events();
        dropped.remove(1);
        let verdict = check(&base(all_events(), dropped).history(), Listing::All);
        assert_eq!(verdict.validity, Validity::Invalid);
        assert!(
            verdict.anomalies.iter().any(|anomaly| anomaly.kind == "lost"),
            "{verdict:?}"
        );
    }

    /// Negative control: a put nobody delivered, inside a watcher's whole coverage, is lost.
    #[test]
    fn a_put_no_watcher_delivered_is_lost() {
        let mut dropped = all_events();
        dropped.remove(1);
        let verdict = check(&base(dropped.clone(), dropped).history(), Listing::All);
        assert_eq!(verdict.validity, Validity::Invalid);
        assert!(
            verdict.anomalies.iter().any(|anomaly| anomaly.kind == "lost"),
            "{verdict:?}"
        );
    }

    /// Negative control: an event delivered again after a resume is a duplicate.
    #[test]
    fn a_repeated_event_is_a_duplicate() {
        let mut repeated = all_events();
        repeated.insert(1, put_event(0, 1, 5, 20));
        let verdict = check(&base(repeated, all_events()).history(), Listing::All);
        assert_eq!(verdict.validity, Validity::Invalid);
        assert!(
            verdict
                .anomalies
                .iter()
                .any(|anomaly| anomaly.kind == "duplicate"),
            "{verdict:?}"
        );
    }

    /// Negative control: events of a key out of commit order; a value nobody wrote; a
    /// wrong version; a delete too many.
    #[test]
    fn misordered_invented_and_extra_events_are_caught() {
        let swapped = vec![
            put_event(0, 2, 7, 30),
            put_event(0, 1, 5, 20),
            delete_event(0, 40),
        ];
        let invented = vec![
            put_event(0, 1, 5, 20),
            put_event(0, 99, 7, 30),
            delete_event(0, 40),
        ];
        let versioned = vec![
            put_event(0, 1, 6, 20),
            put_event(0, 2, 7, 30),
            delete_event(0, 40),
        ];
        let mut extra = all_events();
        extra.push(delete_event(0, 50));
        for (events, kind) in [
            (swapped, "out-of-order"),
            (invented, "never-written"),
            (versioned, "wrong-version"),
            (extra, "unexpected-delete"),
        ] {
            let verdict = check(&base(events, all_events()).history(), Listing::All);
            assert_eq!(verdict.validity, Validity::Invalid, "{kind}");
            assert!(
                verdict.anomalies.iter().any(|anomaly| anomaly.kind == kind),
                "{kind}: {verdict:?}"
            );
        }
    }

    /// Negative control: a lost delete, in a watcher that covered it.
    #[test]
    fn a_dropped_delete_is_caught() {
        let mut dropped = all_events();
        dropped.pop();
        let verdict = check(&base(all_events(), dropped).history(), Listing::All);
        assert!(
            verdict
                .anomalies
                .iter()
                .any(|anomaly| anomaly.kind == "lost-delete"),
            "{verdict:?}"
        );
    }

    /// A value a failed put wrote must never be delivered.
    #[test]
    fn a_failed_put_seen_is_caught() {
        let mut builder = Builder::default();
        builder.timestamp(9, 10);
        builder.put(1, 0, 1, OpType::Fail, 0);
        builder.timestamp(9, 100);
        builder.stream(2, 10, 100, vec![put_event(0, 1, 5, 20)], None);
        let verdict = check(&builder.history(), Listing::All);
        assert!(
            verdict
                .anomalies
                .iter()
                .any(|anomaly| anomaly.kind == "failed-write-seen"),
            "{verdict:?}"
        );
    }

    /// After "compacted" the watchers resume above the gap: a put in it that nobody
    /// delivered cannot be checked, and the verdict says so instead of passing.
    #[test]
    fn a_gap_every_watcher_has_makes_the_verdict_unknown() {
        let mut builder = Builder::default();
        builder.timestamp(9, 10);
        builder.put(1, 0, 1, OpType::Ok, 5);
        builder.timestamp(9, 30);
        builder.put(1, 0, 2, OpType::Ok, 7);
        builder.timestamp(9, 100);
        let compacted = Some("invalid argument: watch from timestamp 15: the shard's history before 60 is gone (compacted: ...)");
        for watcher in [2, 3] {
            builder.stream(watcher, 10, 15, vec![put_event(0, 1, 5, 12)], compacted);
            builder.stream(watcher, 60, 100, Vec::new(), None);
        }
        let verdict = check(&builder.history(), Listing::All);
        assert_eq!(verdict.validity, Validity::Unknown, "{verdict:?}");
        assert!(
            verdict.notes.iter().any(|note| note.contains("key 0: 1")),
            "{verdict:?}"
        );
        assert!(
            verdict
                .notes
                .iter()
                .any(|note| note.contains("1 compacted, 1 gaps")),
            "{verdict:?}"
        );
    }

    /// The new ops survive the EDN round trip.
    #[test]
    fn watch_ops_round_trip_through_edn() {
        let history = base(all_events(), all_events()).history();
        let text = crate::edn::history_to_edn(&history);
        assert_eq!(crate::edn::parse_history(&text).expect("parse"), history);
    }
}
