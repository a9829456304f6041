//! Fixtures for the state machine's unit tests: a state opened in a temporary directory
//! and entries to apply to it.

use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload};

use super::{GroupState, ScanOptions, ScanPage, StateMachine};
use crate::raft::snapshot::SnapshotDir;
use crate::raft::txn::{TxnMutation, TxnOp, TxnPrewrite};
use crate::raft::types::{
    Command, CommandResult, DeleteRangeCommand, DeleteRangeResult, Entry, GroupId, LogId, WriteCommand,
    WriteOp,
};
use crate::storage::{self, EngineRef};

/// A log id of leader `term` (node 1).
pub(crate) fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// A write entry at `index` putting `key` = `value`, issued at 1 000 ms.
pub(crate) fn put(index: u64, key: &[u8], value: &[u8], request_id: u8) -> Entry {
    Entry {
        log_id: log_id(2, index),
        payload: EntryPayload::Normal(Command::Write(vec![WriteCommand {
            request_id: [request_id; 16],
            issued_at_ms: 1_000,
            ops: vec![WriteOp {
                key: key.to_vec(),
                value: Some(value.to_vec()),
                expected_version: None,
                expiry: Default::default(),
            }],
        }])),
    }
}

/// A prewrite command of a transaction started at `start_ts` (write-conflict checks on)
/// putting or deleting (`None`) each key; the first key is its primary, whose lock expires
/// at `primary_expires`.
pub(crate) fn prewrite(
    start_ts: u64,
    writes: &[(&[u8], Option<&[u8]>)],
    primary_expires: Option<u64>,
) -> Command {
    Command::TxnPrewrite(TxnPrewrite {
        start_ts,
        primary: writes.first().map(|(key, _)| key.to_vec()).unwrap_or_default(),
        mutations: writes
            .iter()
            .map(|(key, value)| TxnMutation {
                key: key.to_vec(),
                op: value.map_or(TxnOp::Delete, |value| TxnOp::Put(value.to_vec())),
            })
            .collect(),
        check_conflicts: true,
        expires_ts: primary_expires,
    })
}

/// A delete-range entry at `index`, issued at 1 000 ms.
pub(crate) fn delete_range(
    index: u64,
    start: &[u8],
    end: Option<&[u8]>,
    limit: u32,
    request_id: u8,
) -> Entry {
    Entry {
        log_id: log_id(2, index),
        payload: EntryPayload::Normal(Command::DeleteRange(DeleteRangeCommand {
            request_id: [request_id; 16],
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            limit,
            issued_at_ms: 1_000,
        })),
    }
}

/// Applies one delete-range entry and returns its outcome.
pub(crate) async fn apply_delete_range(sm: &mut StateMachine, entry: Entry) -> DeleteRangeResult {
    let mut results = sm.apply(vec![entry]).await.expect("apply delete-range");
    match results.pop() {
        Some(CommandResult::DeleteRange(result)) => result,
        other => panic!("delete-range result expected, got {other:?}"),
    }
}

/// A forward scan of `[start, end)` with no byte budget.
pub(crate) fn scan_options(start: &[u8], end: Option<&[u8]>, limit: usize) -> ScanOptions {
    ScanOptions {
        start: start.to_vec(),
        end: end.map(<[u8]>::to_vec),
        limit,
        max_bytes: usize::MAX,
        reverse: false,
        keys_only: false,
    }
}

/// The keys of a page, in order.
pub(crate) fn keys(page: &ScanPage) -> Vec<&[u8]> {
    page.entries.iter().map(|(key, _)| key.as_slice()).collect()
}

/// A state with keys a..e at versions 1..5 (values `v<key>`), plus a write dedup record.
pub(crate) async fn five_keys(dir: &std::path::Path) -> (EngineRef, Arc<GroupState>, StateMachine) {
    let (engine, state) = open(dir);
    let mut sm = StateMachine::new(state.clone());
    let entries: Vec<Entry> = [b"a", b"b", b"c", b"d", b"e"]
        .iter()
        .zip(1u8..)
        .map(|(key, i)| put(u64::from(i), *key, &[b'v', key[0]], i))
        .collect();
    sm.apply(entries).await.expect("apply");
    (engine, state, sm)
}

/// Opens (or reopens) the state of shard 0 in `dir` with a 60 s de-duplication window.
pub(crate) fn open(dir: &std::path::Path) -> (EngineRef, Arc<GroupState>) {
    open_with_policy(dir, super::DedupPolicy::with_window(60_000))
}

/// Opens (or reopens) the state of shard 0 in `dir` with a de-duplication `policy`.
pub(crate) fn open_with_policy(
    dir: &std::path::Path,
    policy: super::DedupPolicy,
) -> (EngineRef, Arc<GroupState>) {
    let engine = storage::open_for_test(&dir.join("db"));
    let catalog = engine.open_tree("node").expect("catalog");
    let snapshots = SnapshotDir::open(dir.join("snapshots")).expect("snapshots");
    let state = GroupState::open(
        GroupId::Shard(0),
        engine.clone(),
        catalog,
        snapshots,
        policy,
        super::HistoryPolicy::standalone(10_000, 64 << 20),
    )
    .expect("state");
    (engine, state)
}

/// Applies `command` as entry `index` and returns its transaction outcome.
pub(crate) async fn apply_txn(
    sm: &mut StateMachine,
    index: u64,
    command: Command,
) -> crate::raft::txn::TxnOutcome {
    let entry = Entry {
        log_id: log_id(2, index),
        payload: EntryPayload::Normal(command),
    };
    match sm.apply(vec![entry]).await.expect("apply").pop() {
        Some(CommandResult::Txn(outcome)) => outcome,
        other => panic!("a transaction outcome expected, got {other:?}"),
    }
}
