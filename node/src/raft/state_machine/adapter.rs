//! The openraft adapter: `RaftStateMachine` and `RaftSnapshotBuilder` for a group's state.
//!
//! Thin on purpose: each method takes the apply lock, refuses work once the replica is
//! retired, hands the work to [`GroupState`] (on a blocking thread when it reads or writes
//! a whole tree) and wraps errors as openraft storage errors naming what failed.

use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use tracing::info;

use super::{join_error, GroupState};
use crate::raft::storage_err;
use crate::raft::types::{
    CommandResult, Entry, LogId, RaftStorageError, SnapshotMeta, StoredMembership, TypeConfig,
};
use crate::storage::StorageError;

/// The `RaftStateMachine` of one group (owned by openraft).
pub struct StateMachine {
    state: Arc<GroupState>,
}

impl StateMachine {
    pub fn new(state: Arc<GroupState>) -> StateMachine {
        StateMachine { state }
    }
}

/// Builds snapshots of one group.
pub struct SnapshotBuilder {
    state: Arc<GroupState>,
}

/// The current snapshot, read and opened under the snapshot directory's lock so a
/// concurrent publish cannot delete the file in between.
fn open_current_snapshot(state: &GroupState) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
    let Some((meta, file)) = state.snapshots.open_current()? else {
        return Ok(None);
    };
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(tokio::fs::File::from_std(file)),
    }))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let build = async {
            let guard = self.state.apply_lock.clone().write_owned().await;
            self.state.check_not_retired()?;
            let state = self.state.clone();
            let (meta, file) = tokio::task::spawn_blocking(move || {
                let _guard = guard;
                state.build_snapshot_blocking()
            })
            .await
            .map_err(join_error)??;
            info!(group = %self.state.group, snapshot_id = %meta.snapshot_id, "built snapshot");
            Ok::<_, StorageError>(Snapshot {
                meta,
                snapshot: Box::new(tokio::fs::File::from_std(file)),
            })
        };
        build
            .await
            .map_err(|err| storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, err))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        self.state
            .applied_state()
            .map_err(|err| storage_err(ErrorSubject::StateMachine, ErrorVerb::Read, err))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let _guard = self.state.apply_lock.write().await;
        self.state
            .check_not_retired()
            .map_err(|err| storage_err(ErrorSubject::StateMachine, ErrorVerb::Write, err))?;
        self.state.note_apply();
        let tree = self.state.tree();
        let mut results = Vec::new();
        for entry in entries {
            let result = self
                .state
                .apply_entry(&tree, &entry)
                .map_err(|err| storage_err(ErrorSubject::Apply(entry.log_id), ErrorVerb::Write, err))?;
            results.push(result);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            state: self.state.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, RaftStorageError> {
        let path = self.state.snapshots.temp_path();
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|err| storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, err))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), RaftStorageError> {
        let install = async {
            let guard = self.state.apply_lock.clone().write_owned().await;
            self.state.check_not_retired()?;
            self.state.note_apply();
            let file = snapshot.into_std().await;
            let state = self.state.clone();
            let meta = meta.clone();
            tokio::task::spawn_blocking(move || {
                let _guard = guard;
                state.install_snapshot_blocking(&meta, file)
            })
            .await
            .map_err(join_error)?
        };
        install.await.map_err(|err| {
            storage_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                err,
            )
        })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let state = self.state.clone();
        let current = tokio::task::spawn_blocking(move || open_current_snapshot(&state))
            .await
            .map_err(join_error)
            .and_then(|result| result);
        current.map_err(|err| storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, err))
    }
}
