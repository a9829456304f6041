//! Expiring keys in a shard's tree (issue 16, TTL; the rules are in `raft/expiry.rs`): the
//! expiry index, `expire`/`persist` ops, and the purge entry that removes expired keys.
//!
//! The index holds one record per head that expires: `z` ‖ `expires_at` (u64 big-endian) ‖
//! user key, empty value, so the keys to remove come oldest expiry first without a scan of
//! the data. [`super::apply::EntryVersions::set_expiring`] keeps it: a head replaced or
//! deleted takes its record with it, a new expiring head adds one, in the same batch.
//! A purge entry deletes, at its commit timestamp `C`, at most its limit of keys whose
//! expiry is at or below `C`: they are invisible at every timestamp at or above their
//! expiry already, and the version each deletion supersedes goes to the history with its
//! expiry, so reads below `C` answer as before. A second purge of the same keys finds
//! nothing (idempotent); every replica deletes the same keys at the same entry.

use super::apply::EntryVersions;
use super::GroupState;
use crate::raft::expiry::Expiry;
use crate::raft::types::{CommandResult, DeleteRangeResult, WriteOpResult};
use crate::storage::{prefix_bounds, Batch, StorageError, TreeRef};

/// Expiry index records: `z` + expiry + user key.
pub(super) const EXPIRY_INDEX_PREFIX: u8 = b'z';

/// The index record of `key` expiring at `expires_at`.
pub(super) fn index_key(expires_at: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + key.len());
    out.push(EXPIRY_INDEX_PREFIX);
    out.extend_from_slice(&expires_at.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The expiry and user key of an index record; `None` when it is too short.
fn split_index_key(record: &[u8]) -> Option<(u64, &[u8])> {
    let expires: [u8; 8] = record.get(1..9)?.try_into().ok()?;
    Some((u64::from_be_bytes(expires), record.get(9..)?))
}

/// The earliest expiry of `tree`'s heads, if any expires.
pub(super) fn earliest(tree: &TreeRef) -> Result<Option<u64>, StorageError> {
    let (start, end) = prefix_bounds(&[EXPIRY_INDEX_PREFIX]);
    match tree.range(start, end).next() {
        Some(pair) => {
            let (record, _) = pair?;
            Ok(split_index_key(&record).map(|(expires_at, _)| expires_at))
        }
        None => Ok(None),
    }
}

/// An `expire` or `persist` op (`expiry` keeps the value) on `key`, whose head the entry
/// sees as `head`: a live value is written again as a new version with its new expiry. A
/// key absent or expired at the entry's commit timestamp is left alone, and so is one
/// without an expiry that `persist` would leave unchanged (the op does not succeed).
pub(super) fn change_expiry(
    batch: &mut Batch,
    versions: &mut EntryVersions,
    key: &[u8],
    head: Option<super::mvcc::Head>,
    log_index: u64,
    expiry: Expiry,
) -> WriteOpResult {
    let commit_ts = versions.commit_ts;
    let Some(live) = head.as_ref().filter(|head| head.live_at(commit_ts)) else {
        return WriteOpResult::default();
    };
    if expiry == Expiry::Persist && live.expires_at.is_none() {
        return WriteOpResult {
            existed: true,
            ..WriteOpResult::default()
        };
    }
    let value = live.value.clone();
    versions.set_expiring(
        batch,
        key,
        head,
        log_index,
        Some(&value),
        expiry.instant(commit_ts),
    );
    WriteOpResult {
        succeeded: true,
        version: log_index,
        existed: true,
        current: None,
    }
}

impl GroupState {
    /// The earliest expiry among the shard's keys (oracle time), if any key expires: what
    /// tells a latest read whether it needs a clock, and the leader whether to purge.
    pub fn earliest_expiry(&self) -> Result<Option<u64>, StorageError> {
        earliest(&self.tree())
    }

    /// A purge entry: deletes at most `limit` keys whose expiry is at or below the entry's
    /// commit timestamp, oldest expiry first. Answers how many it deleted and whether more
    /// had expired (`more`).
    pub(super) fn apply_purge(
        &self,
        tree: &TreeRef,
        log_index: u64,
        limit: u32,
        batch: &mut Batch,
        versions: &mut EntryVersions,
    ) -> Result<CommandResult, StorageError> {
        let mut result = DeleteRangeResult::default();
        let (start, end) = prefix_bounds(&[EXPIRY_INDEX_PREFIX]);
        for pair in tree.range(start, end) {
            let (record, _) = pair?;
            let Some((expires_at, key)) = split_index_key(&record) else {
                return Err(StorageError::Corrupt {
                    tree: tree.name().to_string(),
                    detail: "expiry index record shorter than its expiry".to_string(),
                });
            };
            if expires_at > versions.commit_ts {
                break;
            }
            if result.deleted >= u64::from(limit) {
                result.more = true;
                break;
            }
            let head = versions.head(tree, key)?;
            match head {
                Some(head) if head.expires_at == Some(expires_at) => {
                    versions.set(batch, key, Some(head), log_index, None);
                    result.deleted += 1;
                    result.last_deleted = Some(key.to_vec());
                }
                // A record its head no longer matches (never left behind by `set_expiring`).
                _ => batch.remove(record.to_vec()),
            }
        }
        Ok(CommandResult::DeleteRange(result))
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;
    use openraft::EntryPayload;

    use super::*;
    use crate::raft::state_machine::test_support::{log_id, open, scan_options};
    use crate::raft::state_machine::{ScanOptions, StateMachine};
    use crate::raft::types::{Command, Entry, TimedPurge, TimedWrites, TtlCommand, WriteCommand, WriteOp};

    /// Oracle timestamp of `ms` milliseconds (logical part 0).
    fn ms(ms: u64) -> u64 {
        ms << 18
    }

    fn op(key: &[u8], value: Option<&[u8]>, expected_version: Option<u64>, expiry: Expiry) -> WriteOp {
        WriteOp {
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
            expected_version,
            expiry,
        }
    }

    /// Entry `index`: one write of `ops` committed at `commit_ms`.
    fn write_at(index: u64, commit_ms: u64, ops: Vec<WriteOp>) -> Entry {
        write_with_id(index, commit_ms, [index as u8; 16], ops)
    }

    /// [`write_at`] with request id `request_id`.
    fn write_with_id(index: u64, commit_ms: u64, request_id: [u8; 16], ops: Vec<WriteOp>) -> Entry {
        Entry {
            log_id: log_id(2, index),
            payload: EntryPayload::Normal(Command::write_at(TimedWrites {
                commit_ts: ms(commit_ms),
                writes: vec![WriteCommand {
                    request_id,
                    issued_at_ms: 1_000,
                    ops,
                }],
            })),
        }
    }

    fn purge(index: u64, commit_ms: u64, limit: u32) -> Entry {
        Entry {
            log_id: log_id(2, index),
            payload: EntryPayload::Normal(Command::Ttl(TtlCommand::Purge(TimedPurge {
                commit_ts: ms(commit_ms),
                limit,
            }))),
        }
    }

    /// The op results of an entry of one write.
    async fn results(sm: &mut StateMachine, entry: Entry) -> Vec<WriteOpResult> {
        match sm.apply(vec![entry]).await.expect("apply").pop() {
            Some(CommandResult::Write(mut outcomes)) => outcomes
                .pop()
                .and_then(|outcome| outcome.results().map(<[WriteOpResult]>::to_vec))
                .expect("applied"),
            other => panic!("write outcome expected, got {other:?}"),
        }
    }

    async fn purged(sm: &mut StateMachine, entry: Entry) -> DeleteRangeResult {
        match sm.apply(vec![entry]).await.expect("apply").pop() {
            Some(CommandResult::DeleteRange(result)) => result,
            other => panic!("purge outcome expected, got {other:?}"),
        }
    }

    /// What a get, a scan and a count of the latest values say at `now_ms`, and a get, a
    /// scan and a count at that timestamp: the keys each finds.
    async fn views(state: &GroupState, now_ms: u64) -> [Vec<Vec<u8>>; 6] {
        let all = [b"k".to_vec(), b"p".to_vec()];
        let found = |values: Vec<Option<crate::raft::types::Versioned>>| -> Vec<Vec<u8>> {
            all.iter()
                .zip(values)
                .filter(|(_, value)| value.is_some())
                .map(|(key, _)| key.clone())
                .collect()
        };
        let latest = state
            .get_many_live_within(&all, usize::MAX, Some(ms(now_ms)))
            .await
            .expect("get");
        let latest = found(
            latest
                .into_iter()
                .map(|value| value.map(|(value, _)| value))
                .collect(),
        );
        let scanned = state
            .scan_live(scan_options(b"", None, 100), Some(ms(now_ms)))
            .await
            .expect("scan");
        let scanned: Vec<Vec<u8>> = scanned.entries.into_iter().map(|(key, _)| key).collect();
        let counted = state
            .count_live(Vec::new(), None, 100, Some(ms(now_ms)))
            .await
            .expect("count");
        let at = found(
            state
                .get_many_at(&all, ms(now_ms))
                .await
                .expect("get at")
                .expect("above the floor"),
        );
        let scanned_at = state
            .scan_at(scan_options(b"", None, 100), ms(now_ms))
            .await
            .expect("scan at")
            .expect("above the floor");
        let scanned_at: Vec<Vec<u8>> = scanned_at.entries.into_iter().map(|(key, _)| key).collect();
        let counted_at = state
            .count_at(Vec::new(), None, 100, ms(now_ms))
            .await
            .expect("count at")
            .expect("above the floor");
        let count_keys = |count: u64| all[..count as usize].to_vec();
        // With keys k (expiring) and p (not), a count of n keys is the first n.
        let counted = if counted.count == 1 {
            vec![b"p".to_vec()]
        } else {
            count_keys(counted.count)
        };
        let counted_at = if counted_at.count == 1 {
            vec![b"p".to_vec()]
        } else {
            count_keys(counted_at.count)
        };
        [latest, scanned, counted, at, scanned_at, counted_at]
    }

    /// A value put with a time to live is visible strictly before its commit timestamp plus
    /// the TTL and invisible from then on, and gets, scans and counts — of the latest values
    /// judged at a timestamp, and at a read timestamp — all agree at every moment.
    #[tokio::test]
    async fn expiry_is_decided_at_the_read_timestamp_and_every_read_agrees() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        results(
            &mut sm,
            write_at(1, 990, vec![op(b"p", Some(b"v"), None, Expiry::Never)]),
        )
        .await;
        let put = results(
            &mut sm,
            write_at(
                2,
                1_000,
                vec![op(b"k", Some(b"v"), None, Expiry::After { ttl_ms: 100 })],
            ),
        )
        .await;
        assert!(put[0].succeeded);
        let both = vec![b"k".to_vec(), b"p".to_vec()];
        let only_p = vec![b"p".to_vec()];
        for (now_ms, expected) in [(1_000, &both), (1_099, &both), (1_100, &only_p), (5_000, &only_p)] {
            for (view, keys) in views(&state, now_ms).await.iter().enumerate() {
                assert_eq!(keys, expected, "view {view} at {now_ms} ms");
            }
        }
        let latest = state
            .get_many_live_within(&[b"k".to_vec()], usize::MAX, Some(ms(1_050)))
            .await
            .expect("get");
        assert_eq!(
            latest[0].as_ref().map(|(_, expires_at)| *expires_at),
            Some(Some(ms(1_100)))
        );
        assert_eq!(state.earliest_expiry().expect("index"), Some(ms(1_100)));
    }

    /// A read at a timestamp answers the expiry of the version it finds, a replaced one in
    /// the history as well as the head (the jepsen `ttl` workload found such reads answered
    /// "never").
    #[tokio::test]
    async fn reads_at_a_timestamp_answer_the_version_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let key = vec![b"k".to_vec()];
        results(
            &mut sm,
            write_at(
                1,
                1_000,
                vec![op(b"k", Some(b"old"), None, Expiry::After { ttl_ms: 500 })],
            ),
        )
        .await;
        results(
            &mut sm,
            write_at(2, 1_100, vec![op(b"k", Some(b"new"), None, Expiry::Never)]),
        )
        .await;
        let read_at = |ts_ms| {
            let state = state.clone();
            let key = key.clone();
            async move {
                let values = state
                    .get_many_at_within(&key, ms(ts_ms), usize::MAX)
                    .await
                    .expect("read")
                    .expect("above the floor");
                values[0]
                    .clone()
                    .map(|(versioned, expires_at)| (versioned.value, expires_at))
            }
        };
        assert_eq!(read_at(1_050).await, Some((b"old".to_vec(), Some(ms(1_500)))));
        assert_eq!(read_at(1_150).await, Some((b"new".to_vec(), None)));
    }

    /// Scan pages carry each entry's expiry (what a backup keeps), for the latest values,
    /// keys only, and at a timestamp (the version's expiry then).
    #[tokio::test]
    async fn scan_pages_answer_each_entry_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        results(
            &mut sm,
            write_at(
                1,
                1_000,
                vec![
                    op(b"a", Some(b"1"), None, Expiry::After { ttl_ms: 500 }),
                    op(b"b", Some(b"2"), None, Expiry::Never),
                ],
            ),
        )
        .await;
        results(
            &mut sm,
            write_at(
                2,
                1_100,
                vec![op(b"a", Some(b"3"), None, Expiry::After { ttl_ms: 900 })],
            ),
        )
        .await;
        let options = |keys_only| ScanOptions {
            keys_only,
            ..scan_options(b"", None, 10)
        };
        let expiries = |page: crate::raft::state_machine::ScanPage| {
            page.entries
                .iter()
                .map(|(key, _)| key.clone())
                .zip(page.expiries)
                .collect::<Vec<_>>()
        };
        let latest = vec![(b"a".to_vec(), Some(ms(2_000))), (b"b".to_vec(), None)];
        for keys_only in [false, true] {
            let page = state
                .scan_live(options(keys_only), Some(ms(1_200)))
                .await
                .expect("scan");
            assert_eq!(expiries(page), latest, "keys only: {keys_only}");
        }
        let page = state
            .scan_at(options(false), ms(1_050))
            .await
            .expect("scan")
            .expect("above the floor");
        assert_eq!(
            expiries(page),
            vec![(b"a".to_vec(), Some(ms(1_500))), (b"b".to_vec(), None)]
        );
    }

    /// An absolute expiry (leases) is the same instant whatever the commit timestamp: a put
    /// and a refresh to a deadline after the commit expire exactly there, and a put whose
    /// deadline is at or below its commit timestamp is expired at once for every read.
    #[tokio::test]
    async fn an_absolute_expiry_ignores_the_commit_timestamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let at = |ms_at: u64| Expiry::AtTs {
            expires_at_ts: ms(ms_at),
        };
        let refresh_at = |ms_at: u64| Expiry::RefreshAtTs {
            expires_at_ts: ms(ms_at),
        };
        results(
            &mut sm,
            write_at(1, 990, vec![op(b"p", Some(b"v"), None, Expiry::Never)]),
        )
        .await;
        let put = results(
            &mut sm,
            write_at(2, 1_000, vec![op(b"k", Some(b"v"), None, at(1_200))]),
        )
        .await;
        assert!(put[0].succeeded);
        let both = vec![b"k".to_vec(), b"p".to_vec()];
        let only_p = vec![b"p".to_vec()];
        for (now_ms, expected) in [(1_199, &both), (1_200, &only_p)] {
            for (view, keys) in views(&state, now_ms).await.iter().enumerate() {
                assert_eq!(keys, expected, "view {view} at {now_ms} ms");
            }
        }
        // A keep-alive moves the deadline to an instant of its own, kept exactly.
        let refreshed = results(
            &mut sm,
            write_at(3, 1_100, vec![op(b"k", None, None, refresh_at(1_500))]),
        )
        .await;
        assert!(refreshed[0].succeeded && refreshed[0].version == 3);
        for (now_ms, expected) in [(1_499, &both), (1_500, &only_p)] {
            for (view, keys) in views(&state, now_ms).await.iter().enumerate() {
                assert_eq!(keys, expected, "view {view} at {now_ms} ms, refreshed");
            }
        }
        // A write that commits after its deadline is never seen.
        results(
            &mut sm,
            write_at(4, 1_600, vec![op(b"k", Some(b"late"), None, at(1_550))]),
        )
        .await;
        for now_ms in [1_600, 1_601, 9_000] {
            for (view, keys) in views(&state, now_ms).await.iter().enumerate() {
                assert_eq!(keys, &only_p, "view {view} at {now_ms} ms, late write");
            }
        }
        // And a refresh that commits after the deadline it asks for expires the key at once.
        results(
            &mut sm,
            write_at(5, 1_700, vec![op(b"p", Some(b"v"), None, Expiry::Never)]),
        )
        .await;
        let late = results(
            &mut sm,
            write_at(6, 1_800, vec![op(b"p", None, None, refresh_at(1_750))]),
        )
        .await;
        assert!(late[0].succeeded);
        for (view, keys) in views(&state, 1_800).await.iter().enumerate() {
            assert!(keys.is_empty(), "view {view} after a late refresh: {keys:?}");
        }
    }

    /// Reads of provisional values (read uncommitted) agree about expiry: a committed value
    /// expired at the reading timestamp is absent to a get and a scan.
    #[tokio::test]
    async fn uncommitted_reads_leave_expired_values_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let ttl = Expiry::After { ttl_ms: 100 };
        results(&mut sm, write_at(1, 1_000, vec![op(b"k", Some(b"v"), None, ttl)])).await;
        for (now_ms, present) in [(1_099, true), (1_100, false)] {
            let got = state
                .get_many_uncommitted_live_within(&[b"k".to_vec()], usize::MAX, Some(ms(now_ms)))
                .await
                .expect("get");
            assert_eq!(got[0].is_some(), present, "get at {now_ms} ms");
            let page = state
                .scan_uncommitted_live(scan_options(b"", None, 10), Some(ms(now_ms)))
                .await
                .expect("scan");
            assert_eq!(page.entries.len(), usize::from(present), "scan at {now_ms} ms");
        }
    }

    /// A write committed at or after a key's expiry finds the key absent (a CAS expecting
    /// version 0 succeeds, one expecting the old version fails, a delete finds nothing);
    /// before it, present. A put without a TTL drops the expiry and its index record.
    #[tokio::test]
    async fn writes_judge_expiry_at_their_commit_timestamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let ttl = Expiry::After { ttl_ms: 100 };
        let put = results(
            &mut sm,
            write_at(1, 1_000, vec![op(b"k", Some(b"v1"), None, ttl)]),
        )
        .await;
        let early = results(
            &mut sm,
            write_at(2, 1_099, vec![op(b"k", Some(b"x"), Some(0), ttl)]),
        )
        .await;
        assert!(
            !early[0].succeeded && early[0].existed,
            "still present at 1099 ms"
        );
        let stale = results(
            &mut sm,
            write_at(3, 1_100, vec![op(b"k", Some(b"x"), Some(put[0].version), ttl)]),
        )
        .await;
        assert!(!stale[0].succeeded && !stale[0].existed, "expired at 1100 ms");
        assert_eq!(stale[0].current, None);
        let fresh = results(
            &mut sm,
            write_at(4, 1_200, vec![op(b"k", Some(b"v2"), Some(0), ttl)]),
        )
        .await;
        assert!(
            fresh[0].succeeded && !fresh[0].existed,
            "a CAS on an expired key expects absence"
        );
        assert_eq!(state.earliest_expiry().expect("index"), Some(ms(1_300)));
        let plain = results(
            &mut sm,
            write_at(5, 1_250, vec![op(b"k", Some(b"v3"), None, Expiry::Never)]),
        )
        .await;
        assert!(plain[0].succeeded && plain[0].existed);
        assert_eq!(
            state.earliest_expiry().expect("index"),
            None,
            "the index record went with the expiry"
        );
        let value = state.get(b"k").await.expect("get").expect("present");
        assert_eq!(value.value, b"v3");
    }

    /// `expire` and `persist` keep the value under a new version; they leave absent keys,
    /// and `persist` keys without an expiry, alone.
    #[tokio::test]
    async fn expire_and_persist_keep_the_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        results(
            &mut sm,
            write_at(1, 1_000, vec![op(b"k", Some(b"v"), None, Expiry::Never)]),
        )
        .await;
        let persist = results(
            &mut sm,
            write_at(2, 1_001, vec![op(b"k", None, None, Expiry::Persist)]),
        )
        .await;
        assert!(!persist[0].succeeded && persist[0].existed, "nothing to persist");
        let missing = results(
            &mut sm,
            write_at(
                3,
                1_002,
                vec![op(b"absent", None, None, Expiry::Refresh { ttl_ms: 10 })],
            ),
        )
        .await;
        assert!(!missing[0].succeeded && !missing[0].existed);
        let expire = results(
            &mut sm,
            write_at(
                4,
                1_003,
                vec![op(b"k", None, None, Expiry::Refresh { ttl_ms: 47 })],
            ),
        )
        .await;
        assert!(expire[0].succeeded && expire[0].version == 4);
        let read = |now_ms: u64| {
            let state = state.clone();
            async move {
                let values = state
                    .get_many_live_within(&[b"k".to_vec()], usize::MAX, Some(ms(now_ms)))
                    .await
                    .expect("get");
                values.into_iter().next().flatten()
            }
        };
        let (value, expires_at) = read(1_010).await.expect("present");
        assert_eq!(
            (value.value.as_slice(), value.version, expires_at),
            (&b"v"[..], 4, Some(ms(1_050)))
        );
        let persisted = results(
            &mut sm,
            write_at(5, 1_020, vec![op(b"k", None, None, Expiry::Persist)]),
        )
        .await;
        assert!(persisted[0].succeeded);
        let (value, expires_at) = read(9_000).await.expect("persisted");
        assert_eq!(
            (value.value.as_slice(), value.version, expires_at),
            (&b"v"[..], 5, None)
        );
        assert_eq!(state.earliest_expiry().expect("index"), None);
        // Expired, `expire` finds nothing to keep.
        results(
            &mut sm,
            write_at(
                6,
                1_030,
                vec![op(b"k", None, None, Expiry::Refresh { ttl_ms: 10 })],
            ),
        )
        .await;
        let late = results(
            &mut sm,
            write_at(
                7,
                1_040,
                vec![op(b"k", None, None, Expiry::Refresh { ttl_ms: 10 })],
            ),
        )
        .await;
        assert!(!late[0].succeeded && !late[0].existed);
    }

    /// Purge entries delete only expired keys, at most their limit each, oldest expiry
    /// first; a purge of nothing deletes nothing (idempotent); reads below the purge still
    /// see the values (history), and two replicas applying the same entries agree.
    #[tokio::test]
    async fn purges_are_bounded_idempotent_and_deterministic() {
        let mut replicas = Vec::new();
        for _ in 0..2 {
            let dir = tempfile::tempdir().expect("tempdir");
            let (engine, state) = open(dir.path());
            let mut sm = StateMachine::new(state.clone());
            let mut index = 0;
            for (key, ttl_ms) in [(b"a", 10), (b"b", 20), (b"c", 30), (b"d", 40), (b"e", 5_000)] {
                index += 1;
                results(
                    &mut sm,
                    write_at(
                        index,
                        1_000 + index,
                        vec![op(key, Some(b"v"), None, Expiry::After { ttl_ms })],
                    ),
                )
                .await;
            }
            let mut rounds = Vec::new();
            for limit in [3, 3, 3] {
                index += 1;
                rounds.push(purged(&mut sm, purge(index, 1_100, limit)).await);
            }
            let deleted: Vec<(u64, bool)> = rounds.iter().map(|round| (round.deleted, round.more)).collect();
            assert_eq!(deleted, vec![(3, true), (1, false), (0, false)]);
            assert_eq!(
                rounds[0].last_deleted.as_deref(),
                Some(&b"c"[..]),
                "oldest expiry first"
            );
            let left = state.scan(scan_options(b"", None, 100)).await.expect("scan");
            let left: Vec<Vec<u8>> = left.entries.into_iter().map(|(key, _)| key).collect();
            assert_eq!(left, vec![b"e".to_vec()], "only the key not expired is left");
            assert_eq!(state.earliest_expiry().expect("index"), Some(ms(6_005)));
            let before = state
                .get_many_at(&[b"a".to_vec(), b"d".to_vec()], ms(1_005))
                .await
                .expect("get at")
                .expect("above the floor");
            assert!(
                before.iter().all(Option::is_some),
                "history still answers below the purge"
            );
            replicas.push((dir, engine, left, rounds));
        }
        assert_eq!(replicas[0].2, replicas[1].2);
        assert_eq!(replicas[0].3, replicas[1].3);
    }

    /// The expiry is part of a write's fingerprint: a retry with the same TTL gets its
    /// first outcome, the same request id with another TTL (or none) is refused.
    #[tokio::test]
    async fn a_request_id_reused_with_another_ttl_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let entry = |index: u64, expiry: Expiry| {
            let ops = vec![op(b"k", Some(b"v"), None, expiry)];
            write_with_id(index, 1_000 + index, [9; 16], ops)
        };
        let outcome = |results: Vec<CommandResult>| match results.into_iter().next() {
            Some(CommandResult::Write(mut outcomes)) => outcomes.pop().expect("one outcome"),
            other => panic!("write outcome expected, got {other:?}"),
        };
        let first = outcome(
            sm.apply(vec![entry(1, Expiry::After { ttl_ms: 100 })])
                .await
                .expect("apply"),
        );
        let retry = outcome(
            sm.apply(vec![entry(2, Expiry::After { ttl_ms: 100 })])
                .await
                .expect("apply"),
        );
        assert_eq!(first, retry, "a retry gets the first outcome");
        for (index, expiry) in [(3, Expiry::After { ttl_ms: 200 }), (4, Expiry::Never)] {
            let reused = outcome(sm.apply(vec![entry(index, expiry)]).await.expect("apply"));
            assert_eq!(
                reused,
                crate::raft::types::WriteOutcome::RequestIdReused([9; 16]),
                "{expiry:?}"
            );
        }
    }

    /// An entry whose ops carry expiries encodes them and decodes to the same command; one
    /// without stays a `WriteAt`, encoded as before TTL.
    #[test]
    fn expiring_entries_round_trip_and_plain_ones_keep_their_encoding() {
        let timed = |expiry| TimedWrites {
            commit_ts: 7,
            writes: vec![WriteCommand {
                request_id: [1; 16],
                issued_at_ms: 2,
                ops: vec![op(b"k", Some(b"v"), None, expiry)],
            }],
        };
        for expiry in [
            Expiry::After { ttl_ms: 9 },
            Expiry::Refresh { ttl_ms: 3 },
            Expiry::Persist,
        ] {
            let command = Command::write_at(timed(expiry));
            assert!(matches!(command, Command::Ttl(_)));
            let bytes = postcard::to_allocvec(&command).expect("encode");
            assert_eq!(
                bytes.first(),
                Some(&14),
                "Command::Ttl comes after every other variant"
            );
            let decoded: Command = postcard::from_bytes(&bytes).expect("decode");
            assert_eq!(decoded, command);
        }
        let plain = Command::write_at(timed(Expiry::Never));
        assert_eq!(plain, Command::WriteAt(timed(Expiry::Never)));
        let bytes = postcard::to_allocvec(&plain).expect("encode");
        assert_eq!(bytes[..3], [5, 7, 1], "a WriteAt of one write, as before");
        let purge = Command::Ttl(TtlCommand::Purge(TimedPurge {
            commit_ts: 1,
            limit: 2,
        }));
        assert_eq!(postcard::to_allocvec(&purge).expect("encode"), vec![14, 1, 1, 2]);
    }
}
