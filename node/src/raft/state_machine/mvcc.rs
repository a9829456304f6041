//! Multi-version reads. Every key's latest version (its head, the `d` record) carries its
//! commit timestamp on disk; the versions heads replaced stay in memory for a window
//! ([`History`]), long enough for snapshot reads and transactions — the way FoundationDB
//! keeps its last seconds of versions in memory and only the newest on disk.
//!
//! - A **head** is the `d` record: `version | HEAD_V2` (u64 big-endian) ‖ `commit_ts` (u64
//!   big-endian) ‖ flags (u8) ‖ `expires_at` (u64 big-endian, only with flag
//!   [`FLAG_EXPIRES`]) ‖ value. Flags 0 (every head before TTL): no expiry. A head written
//!   before MVCC (the version's top bit clear: versions are log indexes, far below 2^63)
//!   reads as committed at timestamp 0.
//! - **Expiry** (TTL, `raft/expiry.rs`): a version with `expires_at` `E` is invisible to
//!   reads at `R ≥ E` and absent for writes committed at or above `E`.
//! - **Commit timestamps rise with the log.** A write entry commits every key it writes at one
//!   timestamp: the oracle timestamp it carries, or one above the highest timestamp the shard
//!   applied (`s`, on disk) if that is not higher. Shard leaders propose entries in the order
//!   of their timestamps (`concurrency.rs`), so in practice the carried one is used.
//! - **History**: when an entry replaces or deletes a head, the replaced version goes into
//!   memory with the timestamp it was superseded at. It stays until it is older than the
//!   window or the node's history budget is spent; the shard's **floor** then rises to the
//!   newest superseding timestamp evicted. At open and after a snapshot install the floor is
//!   the highest applied timestamp (the history of before is not known).
//! - **Visibility** at read timestamp `R ≥ floor`: the head if its `commit_ts ≤ R`, else the
//!   version in memory with `commit_ts ≤ R < superseded_ts`, else absent. Reads below the
//!   floor are refused: every version superseded after the floor is in memory, and any other
//!   version is either the head or was superseded at or before the floor.
//!
//! History is not replicated state: replicas may hold different windows (one restarted),
//! which only decides which reads each may answer, never what it answers.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use crate::raft::types::Versioned;
use crate::storage::{StorageError, TreeRef};

pub use super::history_budget::{HistoryBudget, HoldError};
use super::layout::data_key;
pub use saved::SavedVersion;

mod saved;

/// The highest commit timestamp the shard applied (u64 big-endian).
pub(super) const HIGH_WATER_KEY: &[u8] = b"s";
/// Marks a head in the multi-version format (versions are log indexes, below 2^63).
const HEAD_V2: u64 = 1 << 63;
/// Bytes of a head before its value: version, commit timestamp, flags (and 8 more with an
/// expiry).
const HEAD_BYTES: usize = 8 + 8 + 1;
/// Head flag: an expiry instant (u64 big-endian) follows the flags.
pub(super) const FLAG_EXPIRES: u8 = 1;
/// Bytes a history version costs beyond its key and value (maps, queues, timestamps).
const VERSION_OVERHEAD: usize = 96;
/// Bits of an oracle timestamp below its milliseconds (see `tso/window.rs`).
pub(super) const LOGICAL_BITS: u32 = 18;

/// A key's head: its latest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The log index of the write that produced it (what CAS compares).
    pub version: u64,
    /// When it was committed (0 for data written before MVCC).
    pub commit_ts: u64,
    /// When it stops being visible (oracle time), if it expires.
    pub expires_at: Option<u64>,
    pub value: Vec<u8>,
}

/// Whether a version with expiry `expires_at` is still visible at timestamp `ts`.
pub fn live_at(expires_at: Option<u64>, ts: u64) -> bool {
    expires_at.is_none_or(|expires_at| ts < expires_at)
}

impl Head {
    /// Whether the head is visible at `ts` (not expired; its commit is not checked).
    pub fn live_at(&self, ts: u64) -> bool {
        live_at(self.expires_at, ts)
    }

    /// The value as the single-key API shows it.
    pub fn versioned(self) -> Versioned {
        Versioned {
            version: self.version,
            value: self.value,
        }
    }
}

fn corrupt(tree: &str, detail: &str) -> StorageError {
    StorageError::Corrupt {
        tree: tree.to_string(),
        detail: detail.to_string(),
    }
}

/// The `d` record value of a head.
pub(super) fn encode_head(version: u64, commit_ts: u64, expires_at: Option<u64>, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD_BYTES + 8 + value.len());
    out.extend_from_slice(&(version | HEAD_V2).to_be_bytes());
    out.extend_from_slice(&commit_ts.to_be_bytes());
    match expires_at {
        Some(expires_at) => {
            out.push(FLAG_EXPIRES);
            out.extend_from_slice(&expires_at.to_be_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(value);
    out
}

/// The parts of a `d` record value: version, commit timestamp, expiry, value bytes.
struct HeadParts<'a> {
    version: u64,
    commit_ts: u64,
    expires_at: Option<u64>,
    value: &'a [u8],
}

fn head_parts<'a>(tree: &str, bytes: &'a [u8]) -> Result<HeadParts<'a>, StorageError> {
    let Some((version, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(corrupt(tree, "stored value shorter than its version"));
    };
    let version = u64::from_be_bytes(*version);
    if version & HEAD_V2 == 0 {
        return Ok(HeadParts {
            version,
            commit_ts: 0,
            expires_at: None,
            value: rest,
        });
    }
    let Some((commit_ts, rest)) = rest.split_first_chunk::<8>() else {
        return Err(corrupt(tree, "versioned head shorter than its commit timestamp"));
    };
    let (expires_at, value) = match rest.split_first() {
        Some((0, value)) => (None, value),
        Some((&FLAG_EXPIRES, rest)) => match rest.split_first_chunk::<8>() {
            Some((expires_at, value)) => (Some(u64::from_be_bytes(*expires_at)), value),
            None => return Err(corrupt(tree, "expiring head shorter than its expiry")),
        },
        Some((flags, _)) => return Err(corrupt(tree, &format!("head with unknown flags {flags:#04x}"))),
        None => return Err(corrupt(tree, "versioned head without flags")),
    };
    Ok(HeadParts {
        version: version & !HEAD_V2,
        commit_ts: u64::from_be_bytes(*commit_ts),
        expires_at,
        value,
    })
}

/// A `d` record value, in either format.
pub(super) fn decode_head(tree: &str, bytes: &[u8]) -> Result<Head, StorageError> {
    let parts = head_parts(tree, bytes)?;
    Ok(Head {
        version: parts.version,
        commit_ts: parts.commit_ts,
        expires_at: parts.expires_at,
        value: parts.value.to_vec(),
    })
}

/// The version and expiry of a `d` record value, without copying its value.
pub(super) fn decode_version_expiry(tree: &str, bytes: &[u8]) -> Result<(u64, Option<u64>), StorageError> {
    let parts = head_parts(tree, bytes)?;
    Ok((parts.version, parts.expires_at))
}

/// `key`'s head.
pub(super) fn head(tree: &TreeRef, key: &[u8]) -> Result<Option<Head>, StorageError> {
    match tree.get(&data_key(key))? {
        Some(bytes) => Ok(Some(decode_head(tree.name(), &bytes)?)),
        None => Ok(None),
    }
}

/// The highest commit timestamp applied to `tree` (0: none yet).
pub(super) fn high_water(tree: &TreeRef) -> Result<u64, StorageError> {
    match tree.get(HIGH_WATER_KEY)? {
        Some(bytes) => match bytes.first_chunk::<8>() {
            Some(bytes) => Ok(u64::from_be_bytes(*bytes)),
            None => Err(corrupt(
                tree.name(),
                "commit high-water mark shorter than 8 bytes",
            )),
        },
        None => Ok(0),
    }
}

/// The commit timestamp of an entry carrying `carried` (0: none) on a shard whose highest
/// applied one is `high_water`: never at or below it, so a shard's timestamps rise with its
/// log on every replica alike.
pub(super) fn entry_commit_ts(carried: u64, high_water: u64) -> u64 {
    carried.max(high_water.saturating_add(1))
}

/// A version replaced by a later write or deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superseded {
    pub key: Vec<u8>,
    pub version: u64,
    pub commit_ts: u64,
    pub expires_at: Option<u64>,
    pub value: Vec<u8>,
}

impl Superseded {
    fn cost(&self) -> usize {
        2 * self.key.len() + self.value.len() + VERSION_OVERHEAD
    }
}

/// One version in memory: live from `commit_ts` until `superseded_ts`.
#[derive(Debug)]
struct OldVersion {
    version: u64,
    commit_ts: u64,
    superseded_ts: u64,
    expires_at: Option<u64>,
    value: Vec<u8>,
}

impl OldVersion {
    /// Its `superseded_ts`, unless it had expired by then: replacing or deleting (purging) an
    /// expired value changes nothing a read sees — its expiry was the change.
    fn replaced_while_live(&self) -> Option<u64> {
        let live = self.expires_at.is_none_or(|at| at > self.superseded_ts);
        live.then_some(self.superseded_ts)
    }
}

/// What a shard keeps of history: for how long, and the node's budget it draws on.
#[derive(Debug, Clone)]
pub struct HistoryPolicy {
    /// Versions superseded longer ago than this (in oracle time) are dropped.
    pub window_ms: u64,
    pub budget: Arc<HistoryBudget>,
}

impl HistoryPolicy {
    /// A policy with a budget of its own (tests, tools).
    pub fn standalone(window_ms: u64, max_bytes: usize) -> HistoryPolicy {
        HistoryPolicy {
            window_ms,
            budget: HistoryBudget::new(max_bytes),
        }
    }
}

/// A read timestamp below what a shard's history covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BelowFloor {
    pub floor: u64,
}

/// The versions of one shard superseded within the window (see the module docs).
#[derive(Debug)]
pub struct History {
    policy: HistoryPolicy,
    /// Per key, oldest first.
    versions: BTreeMap<Vec<u8>, VecDeque<OldVersion>>,
    /// Keys in the order their versions were superseded (oldest first): eviction order.
    order: VecDeque<(u64, Vec<u8>)>,
    /// Reads below this are refused.
    floor: u64,
    /// The highest commit timestamp applied (mirrors `s` on disk).
    high_water: u64,
    /// Bytes held, as charged to the budget.
    bytes: usize,
}

impl History {
    /// An empty history of a shard whose highest applied commit timestamp is `high_water`.
    pub fn new(policy: HistoryPolicy, high_water: u64) -> History {
        History {
            policy,
            versions: BTreeMap::new(),
            order: VecDeque::new(),
            floor: high_water,
            high_water,
            bytes: 0,
        }
    }

    /// Forgets every version (a snapshot replaced the state); the floor becomes `high_water`.
    pub fn reset(&mut self, high_water: u64) {
        self.policy.budget.release(self.bytes);
        self.versions.clear();
        self.order.clear();
        self.bytes = 0;
        self.floor = high_water;
        self.high_water = high_water;
    }

    pub fn high_water(&self) -> u64 {
        self.high_water
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Versions held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Records an applied entry: it committed at `commit_ts` and superseded `replaced`.
    /// Then drops what fell out of the window, and the oldest versions while the node's
    /// budget is spent.
    pub fn record(&mut self, commit_ts: u64, replaced: Vec<Superseded>) {
        self.high_water = self.high_water.max(commit_ts);
        let mut added = 0;
        for old in replaced {
            added += old.cost();
            self.order.push_back((commit_ts, old.key.clone()));
            self.versions.entry(old.key).or_default().push_back(OldVersion {
                version: old.version,
                commit_ts: old.commit_ts,
                superseded_ts: commit_ts,
                expires_at: old.expires_at,
                value: old.value,
            });
        }
        self.bytes += added;
        self.policy.budget.charge(added);
        let window = self.policy.window_ms.saturating_mul(1 << LOGICAL_BITS);
        // A hold keeps what a read at its timestamp needs: every version superseded after it.
        let oldest_kept = commit_ts
            .saturating_sub(window)
            .min(self.policy.budget.oldest_hold());
        while self
            .order
            .front()
            .is_some_and(|(superseded, _)| *superseded < oldest_kept)
        {
            self.evict_oldest();
        }
        while self.policy.budget.over() && !self.order.is_empty() {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        let Some((superseded_ts, key)) = self.order.pop_front() else {
            return;
        };
        self.floor = self.floor.max(superseded_ts);
        let mut freed = 0;
        if let Some(versions) = self.versions.get_mut(&key) {
            if let Some(old) = versions.pop_front() {
                freed = 2 * key.len() + old.value.len() + VERSION_OVERHEAD;
            }
            if versions.is_empty() {
                self.versions.remove(&key);
            }
        }
        self.bytes -= freed;
        self.policy.budget.release(freed);
    }

    /// `key` at `read_ts`, given its head, with the version's expiry (`None`: never): the
    /// head if committed by then (right at any timestamp), else the version live at
    /// `read_ts` if one was — known only at or above the floor. A version expired at
    /// `read_ts` is absent.
    pub fn read(
        &self,
        key: &[u8],
        head: Option<Head>,
        read_ts: u64,
    ) -> Result<Option<(Versioned, Option<u64>)>, BelowFloor> {
        if let Some(head) = head {
            if head.commit_ts <= read_ts {
                let expires_at = head.expires_at;
                return Ok(head.live_at(read_ts).then(|| (head.versioned(), expires_at)));
            }
        }
        if read_ts < self.floor {
            return Err(BelowFloor { floor: self.floor });
        }
        let live = self.versions.get(key).and_then(|versions| {
            versions
                .iter()
                .rev()
                .find(|old| old.commit_ts <= read_ts)
                .filter(|old| old.superseded_ts > read_ts && live_at(old.expires_at, read_ts))
        });
        Ok(live.map(|old| {
            let versioned = Versioned {
                version: old.version,
                value: old.value.clone(),
            };
            (versioned, old.expires_at)
        }))
    }
}

impl History {
    /// The newest timestamp a value of `key` was written, replaced or deleted at (not the
    /// purge of an expired one: `OldVersion::replaced_while_live`), when after `ts`.
    /// `Err` when `ts` is below the floor: a change after it may be forgotten.
    pub fn superseded_after(&self, key: &[u8], ts: u64) -> Result<Option<u64>, BelowFloor> {
        if ts < self.floor {
            return Err(BelowFloor { floor: self.floor });
        }
        let versions = self.versions.get(key).into_iter().flatten();
        let newest = versions
            .flat_map(|old| [Some(old.commit_ts), old.replaced_while_live()])
            .flatten()
            .max();
        Ok(newest.filter(|changed| *changed > ts))
    }

    /// A timestamp in `(after, upto]` at which `key` (whose head is `head`) was written or
    /// deleted, if there is one: what serializable read validation asks of every key read.
    /// A head committed at or before `after` settles it (nothing is newer); otherwise the
    /// history must reach back to `after` (`Err` below the floor).
    pub fn changed_between(
        &self,
        key: &[u8],
        head: Option<&Head>,
        after: u64,
        upto: u64,
    ) -> Result<Option<u64>, BelowFloor> {
        let within = |ts: u64| ts > after && ts <= upto;
        match head {
            Some(head) if within(head.commit_ts) => return Ok(Some(head.commit_ts)),
            // Expiring is a change too: the value vanishes at its expiry.
            Some(head) if head.commit_ts <= after => return Ok(head.expires_at.filter(|at| within(*at))),
            _ => {}
        }
        if after < self.floor {
            return Err(BelowFloor { floor: self.floor });
        }
        let changed = self.versions.get(key).and_then(|versions| {
            versions.iter().find_map(|old| {
                [Some(old.commit_ts), old.expires_at, old.replaced_while_live()]
                    .into_iter()
                    .flatten()
                    .find(|ts| within(*ts))
            })
        });
        Ok(changed)
    }

    /// The keys with versions in memory in `[start, end)` (`None` end: no upper bound), in
    /// key order: with the heads of the range, every key a scan at a timestamp at or above
    /// the floor may find (a key absent from both had no version live at or above it).
    pub fn keys_in<'a>(
        &'a self,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> impl DoubleEndedIterator<Item = &'a [u8]> + 'a {
        let empty = end.is_some_and(|end| start >= end);
        let upper = match end {
            Some(end) if !empty => Bound::Excluded(end),
            // An empty range is asked for as `[start, start)`, which `range` accepts.
            Some(_) => Bound::Excluded(start),
            None => Bound::Unbounded,
        };
        self.versions
            .range::<[u8], _>((Bound::Included(start), upper))
            .map(|(key, _)| key.as_slice())
    }
}

impl History {
    /// `key`'s versions in memory, oldest first: what a watch's catch-up reads (`watch.rs`).
    pub(super) fn versions_of<'a>(&'a self, key: &[u8]) -> impl Iterator<Item = OldVersionRef<'a>> + 'a {
        self.versions
            .get(key)
            .into_iter()
            .flatten()
            .map(|old| OldVersionRef {
                version: old.version,
                commit_ts: old.commit_ts,
                superseded_ts: old.superseded_ts,
                value: &old.value,
            })
    }
}

/// A version in memory, as [`History::versions_of`] shows it.
#[derive(Debug, Clone, Copy)]
pub(super) struct OldVersionRef<'a> {
    pub version: u64,
    pub commit_ts: u64,
    /// When a later write replaced it or a delete removed it.
    pub superseded_ts: u64,
    pub value: &'a [u8],
}

impl Drop for History {
    fn drop(&mut self) {
        self.policy.budget.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    /// Purging a value that had expired is no change: neither a write conflict for a
    /// transaction that started after the expiry nor a changed read for serializable
    /// validation; deleting a live value, or a write after the start, still is.
    #[test]
    fn purging_an_expired_value_changes_nothing() {
        let ms = |ms: u64| ms << LOGICAL_BITS;
        let mut history = History::new(HistoryPolicy::standalone(60_000, usize::MAX), ms(100));
        let old = |key: &[u8], commit_ms: u64, expires_ms: Option<u64>| Superseded {
            key: key.to_vec(),
            version: 1,
            commit_ts: ms(commit_ms),
            expires_at: expires_ms.map(ms),
            value: b"v".to_vec(),
        };
        // "gone" expired at 110 and was purged at 130; "live" was deleted at 130 while live.
        history.record(
            ms(130),
            vec![old(b"gone", 100, Some(110)), old(b"live", 100, None)],
        );
        assert_eq!(
            history.superseded_after(b"gone", ms(120)),
            Ok(None),
            "purged after its expiry"
        );
        assert_eq!(history.changed_between(b"gone", None, ms(120), ms(140)), Ok(None));
        assert_eq!(
            history.superseded_after(b"gone", ms(105)),
            Ok(None),
            "expiry is no write"
        );
        assert_eq!(
            history.changed_between(b"gone", None, ms(105), ms(140)),
            Ok(Some(ms(110)))
        );
        assert_eq!(history.superseded_after(b"live", ms(120)), Ok(Some(ms(130))));
        assert_eq!(
            history.changed_between(b"live", None, ms(120), ms(140)),
            Ok(Some(ms(130)))
        );
        // A value written after the start, expired and purged since, is still a write.
        history.record(ms(160), vec![old(b"late", 135, Some(140))]);
        assert_eq!(history.superseded_after(b"late", ms(120)), Ok(Some(ms(135))));
    }

    /// A hold keeps a timestamp readable past the window until it is released or lapses;
    /// bad holds are refused.
    #[test]
    fn holds_keep_history_past_the_window() {
        let ms = |ms: u64| ms << LOGICAL_BITS;
        let policy = HistoryPolicy::standalone(10, usize::MAX);
        let budget = policy.budget.clone();
        let mut history = History::new(policy, ms(100));
        let old = |value: &[u8]| Superseded {
            key: b"k".to_vec(),
            version: 1,
            commit_ts: ms(100),
            expires_at: None,
            value: value.to_vec(),
        };
        budget.hold(7, ms(105), Duration::from_secs(60)).expect("hold");
        history.record(ms(110), vec![old(b"v1")]);
        // 100 ms later, far past the 10 ms window: the held timestamp still reads v1.
        history.record(ms(210), Vec::new());
        let head = Some(Head {
            version: 2,
            commit_ts: ms(110),
            expires_at: None,
            value: b"v2".to_vec(),
        });
        let read = history
            .read(b"k", head.clone(), ms(105))
            .expect("held: above the floor");
        assert_eq!(read.map(|(v, _)| v.value), Some(b"v1".to_vec()));
        // Released: the next entry evicts it, and the read is refused.
        budget.hold(7, ms(105), Duration::ZERO).expect("release");
        history.record(ms(220), Vec::new());
        assert!(history.read(b"k", head, ms(105)).is_err());

        assert_eq!(budget.hold(0, 1, Duration::from_secs(1)), Err(HoldError::NoId));
        assert!(matches!(
            budget.hold(1, 1, HistoryBudget::MAX_HOLD + Duration::from_secs(1)),
            Err(HoldError::TooLong(_))
        ));
        for id in 1..=HistoryBudget::MAX_HOLDS as u64 {
            budget
                .hold(id, 1, Duration::from_secs(60))
                .expect("within the bound");
        }
        assert_eq!(
            budget.hold(1_000, 1, Duration::from_secs(60)),
            Err(HoldError::TooMany)
        );
        budget
            .hold(1, 2, Duration::from_secs(60))
            .expect("a renewal always fits");
    }

    #[test]
    fn heads_of_both_formats_decode() {
        let legacy = [&7u64.to_be_bytes()[..], b"old"].concat();
        assert_eq!(
            decode_head("t", &legacy).expect("legacy head"),
            Head {
                version: 7,
                commit_ts: 0,
                expires_at: None,
                value: b"old".to_vec()
            }
        );
        for value in [b"v".to_vec(), Vec::new()] {
            for expires_at in [None, Some(1 << 41)] {
                let encoded = encode_head(9, 1 << 40, expires_at, &value);
                assert_eq!(
                    decode_head("t", &encoded).expect("head"),
                    Head {
                        version: 9,
                        commit_ts: 1 << 40,
                        expires_at,
                        value: value.clone()
                    }
                );
                assert_eq!(
                    decode_version_expiry("t", &encoded).expect("version"),
                    (9, expires_at)
                );
            }
        }
        // A head without an expiry is byte for byte the format before TTL.
        assert_eq!(
            encode_head(9, 5, None, b"v"),
            [
                &(9u64 | HEAD_V2).to_be_bytes()[..],
                &5u64.to_be_bytes(),
                &[0],
                b"v"
            ]
            .concat()
        );
        let mut short = encode_head(9, 5, None, b"v");
        short[16] = FLAG_EXPIRES;
        assert!(
            decode_head("t", &short).is_err(),
            "an expiry flag without its expiry"
        );
        assert!(decode_head("t", &[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0]).is_err());
        let mut flagged = encode_head(9, 5, None, b"v");
        flagged[16] = 2;
        assert!(decode_head("t", &flagged).is_err(), "unknown flags are refused");
        assert!(decode_head("t", &[0; 7]).is_err());
    }

    #[test]
    fn entry_timestamps_rise_above_the_high_water_mark() {
        assert_eq!(entry_commit_ts(50, 10), 50);
        assert_eq!(entry_commit_ts(5, 10), 11);
        assert_eq!(entry_commit_ts(0, 10), 11, "an entry without a timestamp");
        assert_eq!(entry_commit_ts(0, u64::MAX), u64::MAX);
    }

    /// Every version ever written, per key, oldest first: (commit_ts, version, value).
    type Model = BTreeMap<u8, Vec<(u64, u64, Option<u8>)>>;

    /// One entry of the model test: writes (`None`: delete) to keys 0..4.
    type Step = Vec<(u8, Option<u8>)>;

    fn step() -> impl Strategy<Value = (u64, Step)> {
        (
            0u64..3,
            proptest::collection::vec((0u8..4, proptest::option::weighted(0.7, any::<u8>())), 1..4),
        )
    }

    /// What the model says `key` is at `read_ts`.
    fn model_read(model: &Model, key: u8, read_ts: u64) -> Option<(u64, Vec<u8>)> {
        model
            .get(&key)
            .and_then(|versions| versions.iter().rev().find(|(ts, _, _)| *ts <= read_ts))
            .and_then(|(_, version, value)| value.map(|value| (*version, vec![value])))
    }

    proptest! {
        /// Against a model that keeps every version forever: after any entries (each at one
        /// timestamp, keys written once or more per entry, deletes included) and under any
        /// window and budget, a read at any timestamp sees what the model sees, or is refused
        /// — only below the floor, and only when the head does not answer it; the budget's
        /// count returns to zero.
        #[test]
        fn reads_above_the_floor_match_a_model_that_keeps_everything(
            steps in proptest::collection::vec(step(), 1..30),
            window_ms in 0u64..4,
            max_bytes in prop_oneof![Just(0usize), Just(300), Just(usize::MAX)],
        ) {
            let budget = HistoryBudget::new(max_bytes);
            let policy = HistoryPolicy { window_ms, budget: budget.clone() };
            let mut history = History::new(policy, 0);
            let mut heads: BTreeMap<u8, Head> = BTreeMap::new();
            let mut model = Model::new();
            let tick = 1u64 << LOGICAL_BITS;
            for (index, (gap, writes)) in steps.iter().enumerate() {
                let log_index = index as u64 + 1;
                let commit_ts = entry_commit_ts(history.high_water() + gap * tick, history.high_water());
                let mut touched: BTreeMap<u8, ()> = BTreeMap::new();
                let mut replaced = Vec::new();
                for (key, value) in writes {
                    if touched.insert(*key, ()).is_none() {
                        if let Some(old) = heads.get(key) {
                            replaced.push(Superseded {
                                key: vec![*key],
                                version: old.version,
                                commit_ts: old.commit_ts,
                                expires_at: None,
                                value: old.value.clone(),
                            });
                        }
                    }
                    match value {
                        Some(value) => {
                            heads.insert(*key, Head { version: log_index, commit_ts, expires_at: None, value: vec![*value] });
                        }
                        None => {
                            heads.remove(key);
                        }
                    }
                }
                for key in touched.keys() {
                    let versions = model.entry(*key).or_default();
                    let value = heads.get(key).map(|head| head.value[0]);
                    // One version per key per entry: the entry's last write to it.
                    versions.push((commit_ts, log_index, value));
                }
                history.record(commit_ts, replaced);
                // Every timestamp where an answer may change, and its neighbours.
                let mut points: Vec<u64> = model
                    .values()
                    .flatten()
                    .map(|(ts, _, _)| *ts)
                    .chain([0, history.floor()])
                    .flat_map(|ts| [ts.saturating_sub(1), ts, ts + 1])
                    .collect();
                points.sort_unstable();
                points.dedup();
                for key in 0u8..4 {
                    for &read_ts in &points {
                        let head = heads.get(&key).cloned();
                        let head_covers = head.as_ref().is_some_and(|head| head.commit_ts <= read_ts);
                        match history.read(&[key], head, read_ts) {
                            Ok(got) => {
                                let got = got.map(|(versioned, _)| (versioned.version, versioned.value));
                                prop_assert_eq!(got, model_read(&model, key, read_ts), "key {} at {}", key, read_ts);
                            }
                            Err(below) => {
                                prop_assert!(read_ts < history.floor() && !head_covers, "key {} at {} refused", key, read_ts);
                                prop_assert_eq!(below, BelowFloor { floor: history.floor() });
                            }
                        }
                    }
                }
                // Read validation: a change between two timestamps is reported exactly
                // when the key's value differs somewhere in between.
                for key in 0u8..4 {
                    let head = heads.get(&key);
                    for (i, &after) in points.iter().enumerate() {
                        for &upto in &points[i..] {
                            let before = model_read(&model, key, after);
                            let differs = points
                                .iter()
                                .filter(|ts| **ts > after && **ts <= upto)
                                .any(|ts| model_read(&model, key, *ts) != before);
                            match history.changed_between(&[key], head, after, upto) {
                                Ok(Some(ts)) => {
                                    prop_assert!(ts > after && ts <= upto);
                                    let written = model[&key].iter().any(|(at, _, _)| *at == ts);
                                    prop_assert!(written, "key {} changed at {} per the history only", key, ts);
                                    prop_assert!(differs, "key {} reported changed in ({}, {}]", key, after, upto);
                                }
                                Ok(None) => prop_assert!(!differs, "key {} changed in ({}, {}]", key, after, upto),
                                Err(_) => prop_assert!(after < history.floor()),
                            }
                        }
                    }
                }
                if max_bytes == usize::MAX && window_ms == 3 {
                    prop_assert!(history.floor() <= commit_ts.saturating_sub(3 * tick));
                }
            }
            prop_assert_eq!(budget.used(), history.bytes);
            drop(history);
            prop_assert_eq!(budget.used(), 0, "a dropped history returns what it held");
        }
    }
}
