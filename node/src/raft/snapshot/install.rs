//! Installing a received snapshot: its records loaded into a fresh tree beside the one in
//! use, and the file kept as the group's current snapshot.
//!
//! Only loading happens here; the state machine then points the node catalog at the new
//! tree and drops the old one (invariant 4). The file is published before that switch, so a
//! restart never finds state ahead of every snapshot it could send. The caller holds the
//! group's apply lock for writing and runs this on a blocking thread.

use std::fs::File;
use std::io::{Seek, SeekFrom};

use super::file::{SnapshotDir, SnapshotReader, SnapshotWriter};
use crate::raft::encode;
use crate::raft::state_machine::layout::{APPLIED_KEY, MEMBERSHIP_KEY};
use crate::raft::types::SnapshotMeta;
use crate::storage::{Batch, EngineRef, StorageError, TreeRef};

/// Pairs per batch when loading a snapshot.
const LOAD_BATCH_PAIRS: usize = 1024;

/// Loads the snapshot `meta` from `file` into the tree `tree_name` (emptied first), records
/// the snapshot's applied log id and membership in it, and publishes a copy of the file as
/// the current snapshot of `snapshots`. Returns the tree and the number of pairs loaded.
pub(crate) fn load(
    engine: &EngineRef,
    tree_name: &str,
    meta: &SnapshotMeta,
    mut file: File,
    snapshots: &SnapshotDir,
) -> Result<(TreeRef, usize), StorageError> {
    validate_snapshot_id(&meta.snapshot_id)?;
    let installing = snapshots.progress().installing();
    file.seek(SeekFrom::Start(0))?;
    engine.drop_tree(tree_name)?;
    let tree = engine.open_tree(tree_name)?;
    let copy_path = snapshots.temp_path();
    let mut copy = SnapshotWriter::create(&copy_path)?;
    let mut reader = SnapshotReader::new(file);
    let mut batch = Batch::default();
    let mut pairs = 0usize;
    while let Some((key, value)) = reader.next_record()? {
        copy.write(&key, &value)?;
        batch.insert(key, value);
        pairs += 1;
        if pairs.is_multiple_of(LOAD_BATCH_PAIRS) {
            tree.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    copy.finish()?;
    match meta.last_log_id {
        Some(log_id) => batch.insert(APPLIED_KEY.to_vec(), encode(&log_id)?),
        None => batch.remove(APPLIED_KEY.to_vec()),
    }
    batch.insert(MEMBERSHIP_KEY.to_vec(), encode(&meta.last_membership)?);
    tree.apply_batch(batch)?;
    // The snapshot file is in place before the state switches to it, so a restart
    // never finds state ahead of every snapshot it could send.
    snapshots.publish(meta, &copy_path)?;
    installing.succeeded();
    Ok((tree, pairs))
}

/// Snapshot ids come from peers and name files: allow only a safe alphabet.
pub(super) fn validate_snapshot_id(snapshot_id: &str) -> Result<(), StorageError> {
    let safe = !snapshot_id.is_empty()
        && snapshot_id.len() <= 128
        && snapshot_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if safe {
        Ok(())
    } else {
        Err(StorageError::Corrupt {
            tree: "snapshot".to_string(),
            detail: format!("invalid snapshot id {snapshot_id:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::storage::{RaftStateMachine, Snapshot};
    use openraft::RaftSnapshotBuilder;

    use super::*;
    use crate::raft::state_machine::test_support::{
        apply_delete_range, delete_range, five_keys, log_id, open, put,
    };
    use crate::raft::state_machine::{GroupState, StateMachine};
    use crate::raft::types::{CommandResult, DeleteRangeResult, TypeConfig, WriteOpResult};

    /// Opens a fresh state in `dir` and installs `snapshot` into it.
    async fn install_into(
        dir: &std::path::Path,
        snapshot: Snapshot<TypeConfig>,
    ) -> (EngineRef, Arc<GroupState>, StateMachine) {
        let (engine, state) = open(dir);
        let mut sm = StateMachine::new(state.clone());
        sm.install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .expect("install");
        (engine, state, sm)
    }

    /// Ids that could name a file outside the snapshot directory (or none) are refused.
    #[test]
    fn unsafe_snapshot_ids_are_refused() {
        assert!(validate_snapshot_id("2-20-0a1b2c3d").is_ok());
        let too_long = "a".repeat(129);
        for id in ["", "../x", "a/b", "a.data", too_long.as_str()] {
            assert!(validate_snapshot_id(id).is_err(), "{id:?}");
        }
    }

    /// A snapshot written, byte for byte, in the record layout existing data directories and
    /// snapshots hold (literal bytes, not this crate's codecs) installs: its data is read
    /// back and retries of its write and delete-range request ids get their first outcomes.
    #[tokio::test]
    async fn snapshot_in_the_stored_format_installs() {
        const EXPIRES_61_000_VARINT: [u8; 3] = [0xc8, 0xdc, 0x03];
        const EXPIRES_61_000_BE: [u8; 8] = [0, 0, 0, 0, 0, 0, 0xee, 0x48];
        let records: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"dk".to_vec(), [&[0, 0, 0, 0, 0, 0, 0, 3][..], b"v"].concat()),
            (
                [&[b'q'][..], &[2; 16]].concat(),
                [&EXPIRES_61_000_VARINT[..], &[2, 1, 1, b'b', 1]].concat(),
            ),
            (
                [&[b'r'][..], &[1; 16]].concat(),
                [&EXPIRES_61_000_VARINT[..], &[1, 1, 3, 0, 0]].concat(),
            ),
            ([&[b'x'][..], &EXPIRES_61_000_BE, &[1; 16]].concat(), Vec::new()),
            ([&[b'y'][..], &EXPIRES_61_000_BE, &[2; 16]].concat(), Vec::new()),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fixture.data");
        let mut writer = SnapshotWriter::create(&path).expect("create");
        for (key, value) in &records {
            writer.write(key, value).expect("write");
        }
        writer.finish().expect("finish");
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(2, 5)),
            last_membership: Default::default(),
            snapshot_id: "2-5-00000001".to_string(),
        };
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::open(&path).await.expect("open fixture")),
        };
        let (_engine, state, mut sm) = install_into(&dir.path().join("node"), snapshot).await;

        let stored = state.get(b"k").await.expect("get").expect("present");
        assert_eq!((stored.version, stored.value.as_slice()), (3, &b"v"[..]));
        let retried_write = sm.apply(vec![put(6, b"k", b"other", 1)]).await.expect("apply");
        assert_eq!(
            retried_write,
            vec![CommandResult::Write(vec![
                crate::raft::types::WriteOutcome::Applied(vec![WriteOpResult {
                    succeeded: true,
                    version: 3,
                    existed: false,
                    current: None,
                }])
            ])]
        );
        let retried_delete = apply_delete_range(&mut sm, delete_range(7, b"", None, 10, 2)).await;
        assert_eq!(
            retried_delete,
            DeleteRangeResult {
                deleted: 2,
                last_deleted: Some(b"b".to_vec()),
                more: true,
            }
        );
        let stored = state.get(b"k").await.expect("get").expect("still present");
        assert_eq!(stored.version, 3, "neither retry was applied again");
    }

    /// Installing a snapshot records the applied log id so that reopening the state (a
    /// restart right after the install) reports exactly the snapshot's log id and data.
    #[tokio::test]
    async fn installed_snapshot_survives_reopen() {
        let source_dir = tempfile::tempdir().expect("tempdir");
        let (_source_engine, source) = open(source_dir.path());
        let mut source_sm = StateMachine::new(source.clone());
        source_sm
            .apply(
                (1..=20)
                    .map(|i| put(i, format!("k{i}").as_bytes(), b"v", i as u8))
                    .collect::<Vec<_>>(),
            )
            .await
            .expect("apply");
        let mut builder = source_sm.get_snapshot_builder().await;
        let snapshot = builder.build_snapshot().await.expect("build");
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(2, 20)));

        let target_dir = tempfile::tempdir().expect("tempdir");
        {
            let (_engine, _target, mut target_sm) = install_into(target_dir.path(), snapshot).await;
            let (applied, _) = target_sm.applied_state().await.expect("applied");
            assert_eq!(applied, Some(log_id(2, 20)));
        }
        let (_engine, reopened) = open(target_dir.path());
        let (applied, _) = StateMachine::new(reopened.clone())
            .applied_state()
            .await
            .expect("applied after reopen");
        assert_eq!(applied, Some(log_id(2, 20)));
        assert_eq!(reopened.data_len().expect("len"), 20);
        let current = SnapshotDir::open(target_dir.path().join("snapshots"))
            .expect("snapshots")
            .current()
            .expect("meta")
            .expect("a current snapshot");
        assert_eq!(current.last_log_id, Some(log_id(2, 20)));
    }

    /// A crash after the received snapshot was published but before the state switched to
    /// it (the install's two steps) is finished at reopen: the state is the snapshot's, not
    /// an empty one behind a snapshot openraft would trust.
    #[tokio::test]
    async fn an_install_a_crash_interrupted_is_finished_at_reopen() {
        let source_dir = tempfile::tempdir().expect("tempdir");
        let (_source_engine, source) = open(source_dir.path());
        let mut source_sm = StateMachine::new(source.clone());
        source_sm
            .apply(
                (1..=20)
                    .map(|i| put(i, format!("k{i}").as_bytes(), b"v", i as u8))
                    .collect::<Vec<_>>(),
            )
            .await
            .expect("apply");
        let snapshot = source_sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");

        let target_dir = tempfile::tempdir().expect("tempdir");
        {
            let (engine, target) = open(target_dir.path());
            let snapshots = SnapshotDir::open(target_dir.path().join("snapshots")).expect("snapshots");
            let tree_name =
                crate::raft::state_machine::layout::sm_tree_name(crate::raft::types::GroupId::Shard(0), 1);
            // The install's load and publish, then the crash: no switch.
            let file = snapshot.snapshot.try_into_std().expect("a std file");
            load(&engine, &tree_name, &snapshot.meta, file, &snapshots).expect("load");
            assert_eq!(target.data_len().expect("len"), 0, "still the old state");
        }
        let (_engine, reopened) = open(target_dir.path());
        let (applied, _) = StateMachine::new(reopened.clone())
            .applied_state()
            .await
            .expect("applied after reopen");
        assert_eq!(applied, Some(log_id(2, 20)));
        assert_eq!(reopened.data_len().expect("len"), 20);
    }

    /// A snapshot carries the delete-range de-duplication records: a retry on the replica
    /// that installed it returns the first outcome.
    #[tokio::test]
    async fn snapshot_carries_delete_range_dedup() {
        let source_dir = tempfile::tempdir().expect("tempdir");
        let (_source_engine, _source, mut source_sm) = five_keys(source_dir.path()).await;
        let first = apply_delete_range(&mut source_sm, delete_range(6, b"b", None, 2, 20)).await;
        let mut builder = source_sm.get_snapshot_builder().await;
        let snapshot = builder.build_snapshot().await.expect("build");

        let target_dir = tempfile::tempdir().expect("tempdir");
        let (_engine, target, mut target_sm) = install_into(target_dir.path(), snapshot).await;
        assert_eq!(target.data_len().expect("len"), 3);
        let retry = apply_delete_range(&mut target_sm, delete_range(7, b"b", None, 2, 20)).await;
        assert_eq!(retry, first);
        assert_eq!(target.data_len().expect("len"), 3);
    }
}
