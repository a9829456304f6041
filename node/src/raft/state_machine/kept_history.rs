//! A shard's history kept across a clean restart: at shutdown the node stores each group's
//! history of replaced versions (`mvcc.rs`, otherwise in memory only) in a tree of its own,
//! with the state it belongs to (generation, applied log id, high-water mark); at open the
//! group takes it back if its state is exactly that one, so watches and reads at a
//! timestamp from before the restart are served instead of refused as below the floor.
//!
//! Only a clean shutdown saves (the node's state is flushed right after); after a crash
//! the history is what the entries re-applied from the log at start rebuild. The tree is
//! read once and dropped at open whatever it holds (the state moves on from there), and a
//! saved history that does not match, or does not read back whole, is ignored: it can only
//! make a floor lower when every version above it is there.

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::layout::sm_tree_prefix;
use super::mvcc::{History, SavedVersion};
use super::{join_error, GroupState};
use crate::raft::types::{GroupId, LogId};
use crate::raft::{decode, encode};
use crate::storage::{EngineRef, StorageError};

/// The record that describes what the tree holds; written last.
const META_KEY: &[u8] = b"meta";

/// The state a saved history belongs to, and how many versions were saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedMeta {
    generation: u64,
    applied: Option<LogId>,
    high_water: u64,
    floor: u64,
    versions: u64,
}

/// A history read back at open, to be taken if the state matches.
pub(super) struct KeptHistory {
    meta: SavedMeta,
    versions: Vec<SavedVersion>,
}

/// The tree of `group`'s saved history: under the group's state-machine prefix, so a
/// replica deleted while its node was down loses it with its state trees.
fn tree_name(group: GroupId) -> String {
    format!("{}history", sm_tree_prefix(group))
}

/// Reads `group`'s saved history, if there is one that reads back whole, and drops its
/// tree. Never fails the open: a history that does not read back is logged and ignored.
pub(super) fn take(engine: &EngineRef, group: GroupId) -> Result<Option<KeptHistory>, StorageError> {
    let name = tree_name(group);
    if !engine.tree_names()?.contains(&name) {
        return Ok(None);
    }
    let read = || -> Result<Option<KeptHistory>, StorageError> {
        let tree = engine.open_tree(&name)?;
        let Some(bytes) = tree.get(META_KEY)? else {
            return Ok(None);
        };
        let meta: SavedMeta = decode(&name, &bytes)?;
        let mut versions = Vec::new();
        for index in 0..meta.versions {
            match tree.get(&index.to_be_bytes())? {
                Some(bytes) => versions.push(decode(&name, &bytes)?),
                None => return Ok(None),
            }
        }
        Ok(Some(KeptHistory { meta, versions }))
    };
    let kept = read().unwrap_or_else(|err| {
        warn!(group = %group, %err, "the history saved at shutdown does not read back; starting without it");
        None
    });
    engine.drop_tree(&name)?;
    Ok(kept)
}

impl KeptHistory {
    /// Gives `history` the saved versions and floor if they belong to the state opened
    /// (same generation, applied log id and high-water mark); else leaves it as it is.
    pub(super) fn restore_into(
        self,
        group: GroupId,
        generation: u64,
        applied: Option<LogId>,
        history: &mut History,
    ) {
        let opened = (generation, applied, history.high_water());
        let saved = (self.meta.generation, self.meta.applied, self.meta.high_water);
        if opened != saved {
            info!(group = %group, ?opened, ?saved, "the history saved at shutdown is of another state; starting without it");
            return;
        }
        let versions = self.versions.len();
        history.restore(self.meta.floor, self.versions);
        info!(group = %group, versions, floor = history.floor(), "took back the history saved at shutdown");
    }
}

impl GroupState {
    /// Saves the history for the next open (at node shutdown, once the group stopped
    /// applying; the caller flushes the engine after). Under the apply lock, so it is the
    /// history of the applied log id it records.
    pub async fn save_history(&self) -> Result<(), StorageError> {
        let guard = self.apply_lock.clone().write_owned().await;
        if self.retired.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let generation = self.current().0;
        let applied = *self.applied_tx.borrow();
        let (high_water, (floor, versions)) = {
            let history = self.history();
            (history.high_water(), history.saved())
        };
        let (engine, group) = (self.engine.clone(), self.group);
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let name = tree_name(group);
            engine.drop_tree(&name)?;
            let tree = engine.open_tree(&name)?;
            for (index, version) in (0u64..).zip(&versions) {
                tree.insert(&index.to_be_bytes(), &encode(version)?)?;
            }
            let meta = SavedMeta {
                generation,
                applied,
                high_water,
                floor,
                versions: versions.len() as u64,
            };
            tree.insert(META_KEY, &encode(&meta)?)
        })
        .await
        .map_err(join_error)?
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;

    use super::*;
    use crate::raft::state_machine::test_support::{open, put};
    use crate::raft::state_machine::StateMachine;

    /// A history saved at shutdown is taken back by the state it was saved with (its floor
    /// and versions: a read below the restart is answered), once; saved and then followed
    /// by another entry, it belongs to another state and is left out.
    #[tokio::test]
    async fn a_saved_history_is_taken_back_by_its_own_state_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        sm.apply(vec![put(1, b"k", b"v1", 1)]).await.expect("apply");
        sm.apply(vec![put(2, b"k", b"v2", 2)]).await.expect("apply");
        let (floor, held, high_water) = {
            let history = state.history();
            (history.floor(), history.len(), history.high_water())
        };
        assert!(floor < high_water && held == 1);
        state.save_history().await.expect("save");
        engine.flush().expect("flush");
        drop((sm, state, engine));

        let (engine, state) = open(dir.path());
        let restored = {
            let history = state.history();
            (history.floor(), history.len())
        };
        assert_eq!(restored, (floor, held), "taken back");
        let name = tree_name(GroupId::Shard(0));
        assert!(!engine.tree_names().expect("names").contains(&name), "read once");
        let mut sm = StateMachine::new(state.clone());
        state.save_history().await.expect("save");
        sm.apply(vec![put(3, b"k", b"v3", 3)]).await.expect("apply");
        engine.flush().expect("flush");
        drop((sm, state, engine));

        let (_engine, state) = open(dir.path());
        let history = state.history();
        assert_eq!(
            (history.floor(), history.len()),
            (history.high_water(), 0),
            "saved before the last entry: not this state's"
        );
    }
}
