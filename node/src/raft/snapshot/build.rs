//! Building a snapshot: every pair of a group's state-machine tree dumped into a new
//! snapshot file, which becomes the group's current snapshot.
//!
//! The caller holds the group's apply lock for writing, so the dump is one point between
//! entries (applies wait meanwhile, a known limit until MVCC), and runs this on a blocking
//! thread: a dump reads the whole tree.

use std::fs::File;
use std::ops::Bound;

use super::file::{SnapshotDir, SnapshotWriter};
use crate::raft::types::{LogId, SnapshotMeta, StoredMembership};
use crate::storage::{StorageError, TreeRef};

/// Dumps `tree`, whose last applied entry is `last_applied` and membership
/// `last_membership`, into a new current snapshot of `snapshots`; returns its metadata and
/// its data file, opened for sending.
pub(crate) fn dump(
    tree: &TreeRef,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    snapshots: &SnapshotDir,
) -> Result<(SnapshotMeta, File), StorageError> {
    let building = snapshots.progress().building();
    let snapshot_id = new_snapshot_id(last_applied);
    let temp = snapshots.temp_path();
    let mut writer = SnapshotWriter::create(&temp)?;
    for pair in tree.range(Bound::Unbounded, Bound::Unbounded) {
        let (key, value) = pair?;
        writer.write(&key, &value)?;
    }
    writer.finish()?;
    let meta = SnapshotMeta {
        last_log_id: last_applied,
        last_membership,
        snapshot_id,
    };
    snapshots.publish(&meta, &temp)?;
    // Opened while the apply lock is still held: no other publish can remove it first.
    let file = File::open(snapshots.data_path(&meta.snapshot_id))?;
    building.succeeded();
    Ok((meta, file))
}

/// `<term>-<index>-<random hex>` of the last applied entry (`0-0-…` before any): unique,
/// and within the alphabet an installing peer accepts.
fn new_snapshot_id(last_applied: Option<LogId>) -> String {
    match last_applied {
        Some(log_id) => format!(
            "{}-{}-{:08x}",
            log_id.leader_id.term,
            log_id.index,
            rand::random::<u32>()
        ),
        None => format!("0-0-{:08x}", rand::random::<u32>()),
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;
    use crate::raft::snapshot::install::validate_snapshot_id;

    /// Snapshot ids name the last applied entry and pass the installer's id check.
    #[test]
    fn snapshot_ids_name_the_applied_entry() {
        let id = new_snapshot_id(Some(LogId::new(CommittedLeaderId::new(3, 1), 42)));
        assert!(id.starts_with("3-42-"), "{id}");
        assert!(validate_snapshot_id(&id).is_ok());
        let empty = new_snapshot_id(None);
        assert!(empty.starts_with("0-0-"), "{empty}");
        assert!(validate_snapshot_id(&empty).is_ok());
    }
}
