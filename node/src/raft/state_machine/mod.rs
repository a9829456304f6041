//! The replicated state machine of a group: versioned key/values with CAS and request
//! de-duplication (shards), the cluster configuration (system group), and snapshots.
//!
//! [`GroupState`] is what a node holds of one group's state: the tree of the current
//! generation (`<group>.sm.<generation>`), the apply lock that orders applies, snapshot
//! work and multi-key reads, and watchers of the applied log id and cluster configuration.
//! [`StateMachine`] hands it to openraft. By concern:
//!
//! - `layout`: every record of the tree (key prefixes, value encodings) and their codecs.
//! - `dedup`: the de-duplication tables of writes and delete-ranges (first outcome per
//!   request id within a window of the shard's de-duplication clock); `fingerprint`: what
//!   tells a retry from another request reusing its id.
//! - `apply`: what each committed entry does, as one atomic batch.
//! - `expiry`: expiring keys (TTL): their index, `expire`/`persist`, the purge entry.
//! - `read`: `get`, `get_many`, [`GroupState::scan`] and [`GroupState::count`].
//! - `holds`: range reads in holds of the apply lock of bounded work (applies run in
//!   between), each answer at one applied state; `range`: the scans and counts so read.
//! - `kept_history`: the history saved at a clean shutdown, taken back at open.
//! - `watches`: watches of a range's changes (catch-up from the history,
//!   `watch_catch_up`, then each applied entry's changes through a bounded queue).
//! - `adapter`: [`StateMachine`] and [`SnapshotBuilder`], the openraft traits.
//! - generations (this file): installing a snapshot fills a new generation of the tree
//!   aside (see [`crate::raft::snapshot`]), then flips the generation recorded in the node
//!   catalog and drops the old tree.

mod adapter;
mod apply;
mod dedup;
mod expiry;
mod fingerprint;
mod history_budget;
mod holds;
mod kept_history;
pub(in crate::raft) mod layout;
pub(crate) mod mvcc;
mod one_pc;
mod range;
mod read;
#[cfg(test)]
pub(crate) mod test_support;
mod txn;
mod txn_read;
mod validate;
mod watch_catch_up;
mod watches;
mod writes;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::watch;
use tracing::{debug, info};

pub use adapter::{SnapshotBuilder, StateMachine};
pub use dedup::DedupPolicy;
pub use holds::AppliedState;
pub use mvcc::{HistoryBudget, HistoryPolicy, HoldError};
pub use read::{CountResult, ScanOptions, ScanPage};
pub use validate::{ReadSet, MAX_CONFLICTS};
pub use watch_catch_up::{Change, ChangeKind};
pub use watches::{Watch, WatchEnd, WatchPage, WatchRange};
// What tells a retry of a write from another write reusing its request id (`fingerprint.rs`).
pub(crate) use fingerprint::{of_write as write_fingerprint, Fingerprint};

use super::snapshot::{self, SnapshotDir};
use super::types::{ClusterConfig, GroupId, LogId, SnapshotMeta, StoredMembership};
use super::{decode, encode};
use crate::storage::{EngineRef, StorageError, TreeRef};
use layout::{
    catalog_key, sm_tree_name, sm_tree_prefix, APPLIED_KEY, AUTH_KEY, CLUSTER_KEY, MEMBERSHIP_KEY,
    TSO_LIMIT_KEY,
};

/// Removes the catalog record of `group`'s state-machine generation (its trees are
/// dropped by the caller).
pub fn forget_group(catalog: &TreeRef, group: GroupId) -> Result<(), StorageError> {
    catalog.remove(&catalog_key(group))
}

/// State shared by a group's state machine (owned by openraft) and its readers.
pub struct GroupState {
    group: GroupId,
    engine: EngineRef,
    catalog: TreeRef,
    /// Current generation and tree; replaced when a snapshot is installed.
    current: RwLock<(u64, TreeRef)>,
    /// Written while applying, installing or dumping a snapshot; read by multi-key reads,
    /// so a dump is consistent and a read never sees half an entry or a switching tree.
    /// Range reads hold it in bounded holds (`holds.rs`), so applies never wait long.
    apply_lock: Arc<tokio::sync::RwLock<()>>,
    /// Bumped under the apply lock (written) before every apply or snapshot install, i.e.
    /// before anything changes the tree: a range read that finds it unchanged after
    /// releasing the lock reads on at the same applied state.
    applies: AtomicU64,
    /// The last applied log id (in memory; durable at the next flush).
    applied_tx: watch::Sender<Option<LogId>>,
    snapshots: SnapshotDir,
    dedup: DedupPolicy,
    /// The tree may still hold de-duplication records of older formats: the legacy layout,
    /// or records made before fingerprints (cleared by the apply that finds none left; set
    /// again when a snapshot brings a new tree).
    legacy_dedup: AtomicBool,
    /// The shard's de-duplication clock as applied (see `dedup/`): what a new leader's
    /// stamps continue from (`dedup_clock.rs`).
    dedup_clock_ms: AtomicU64,
    /// The de-duplication record counts and clock as applied, read and written by each
    /// applied write entry (under the apply lock): their record in the tree lags while
    /// entries go through intent records (`apply.rs`).
    dedup_counts: Mutex<dedup::Counts>,
    /// Whether the tree may hold transaction locks: false only while it holds none, so the
    /// write and read paths skip their lock lookups when no transaction is committing (set
    /// before a prewrite is written, recomputed after every other transaction command and
    /// at open and snapshot install; see `txn.rs`).
    may_have_locks: AtomicBool,
    cluster_tx: watch::Sender<Option<ClusterConfig>>,
    /// The permission table as applied (system group; the default elsewhere): set at open,
    /// by each applied `Command::Auth` and by a snapshot install, so the permission checks
    /// read it from memory (`service/authz.rs`, `service/roles.rs`).
    auth_tx: watch::Sender<Arc<ringkv_authz::AuthTable>>,
    /// Set (under the apply lock) when the replica is being deleted: openraft's state-machine
    /// worker may outlive `Raft::shutdown`, and a late apply or snapshot install must not
    /// recreate the trees the deletion removes.
    retired: AtomicBool,
    /// Versions superseded within the window (see `mvcc.rs`); changed under the apply lock.
    /// (Shared so a range read on a blocking thread can hold it.)
    history: Arc<Mutex<mvcc::History>>,
    /// The watches of this replica's changes (`watches.rs`), fed by every applied write.
    watches: watches::WatchHub,
}

impl GroupState {
    /// Opens (or creates) the state of `group`, dropping trees left by an interrupted install
    /// and finishing the install itself when its snapshot was already published (see
    /// `GroupState::finish_interrupted_install`).
    pub fn open(
        group: GroupId,
        engine: EngineRef,
        catalog: TreeRef,
        snapshots: SnapshotDir,
        dedup: DedupPolicy,
        history: HistoryPolicy,
    ) -> Result<Arc<GroupState>, StorageError> {
        let generation = match catalog.get(&catalog_key(group))? {
            Some(bytes) => decode(catalog.name(), &bytes)?,
            None => 0u64,
        };
        let current_name = sm_tree_name(group, generation);
        // Before the stale trees go (its tree is one of them).
        let kept = kept_history::take(&engine, group)?;
        let prefix = sm_tree_prefix(group);
        for name in engine.tree_names()? {
            if name.starts_with(&prefix) && name != current_name {
                info!(group = %group, tree = %name, "dropping stale state machine tree");
                engine.drop_tree(&name)?;
            }
        }
        let tree = engine.open_tree(&current_name)?;
        let cluster = match tree.get(CLUSTER_KEY)? {
            Some(bytes) => Some(decode(tree.name(), &bytes)?),
            None => None,
        };
        let (cluster_tx, _) = watch::channel(cluster);
        let (auth_tx, _) = watch::channel(Arc::new(read_auth_table(&tree)?));
        let mut applied: Option<LogId> = match tree.get(APPLIED_KEY)? {
            Some(bytes) => Some(decode(tree.name(), &bytes)?),
            None => None,
        };
        if let Some(settled) = apply::redo_intent(&tree, applied)? {
            debug!(group = %group, log_id = %settled, "settled the last entry's intent record");
            applied = Some(settled);
        }
        let (applied_tx, _) = watch::channel(applied);
        let mut history = mvcc::History::new(history, mvcc::high_water(&tree)?);
        if let Some(kept) = kept {
            kept.restore_into(group, generation, applied, &mut history);
        }
        let may_have_locks = AtomicBool::new(txn::holds_locks(&tree)?);
        let dedup_counts = dedup::Counts::read(&tree)?;
        let dedup_clock_ms = AtomicU64::new(dedup_counts.clock_ms);
        let state = Arc::new(GroupState {
            group,
            engine,
            catalog,
            current: RwLock::new((generation, tree)),
            apply_lock: Arc::new(tokio::sync::RwLock::new(())),
            applies: AtomicU64::new(0),
            applied_tx,
            snapshots,
            dedup,
            legacy_dedup: AtomicBool::new(true),
            dedup_clock_ms,
            dedup_counts: Mutex::new(dedup_counts),
            may_have_locks,
            cluster_tx,
            auth_tx,
            retired: AtomicBool::new(false),
            history: Arc::new(Mutex::new(history)),
            watches: Default::default(),
        });
        state.finish_interrupted_install(applied)?;
        Ok(state)
    }

    /// An install publishes the received snapshot before it switches the state to it
    /// (`snapshot/install.rs`), so a crash in between leaves a current snapshot ahead of the
    /// state — and openraft, which trusts the snapshot, would purge nothing, apply from the
    /// state's point and accept entries after the snapshot on a log that lacks those before
    /// it: a hole it can never start from again (found by a jepsen run: a replica killed
    /// mid-install). A snapshot of this replica's own is never ahead of its state, so one
    /// that is ahead was being installed: load it again and switch, as the install would have.
    fn finish_interrupted_install(&self, applied: Option<LogId>) -> Result<(), StorageError> {
        let Some((meta, file)) = self.snapshots.open_current()? else {
            return Ok(());
        };
        if meta.last_log_id <= applied {
            return Ok(());
        }
        info!(
            group = %self.group,
            snapshot_id = %meta.snapshot_id,
            applied = ?applied,
            "finishing the install of a snapshot a crash interrupted"
        );
        self.install_snapshot_blocking(&meta, file)
    }

    /// Records, under the apply lock held for writing, that the tree may change now (see
    /// `applies`).
    fn note_apply(&self) {
        self.applies.fetch_add(1, Ordering::SeqCst);
    }

    /// Marks the state retired once no apply, install or snapshot dump is running; every
    /// later one fails instead of writing. Called before the replica's data is deleted.
    pub async fn retire(&self) {
        let _guard = self.apply_lock.write().await;
        self.retired.store(true, Ordering::SeqCst);
    }

    fn check_not_retired(&self) -> Result<(), StorageError> {
        if self.retired.load(Ordering::SeqCst) {
            return Err(StorageError::Engine(format!(
                "{} is being deleted from this node",
                self.group
            )));
        }
        Ok(())
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The current generation and its tree.
    fn current(&self) -> (u64, TreeRef) {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn tree(&self) -> TreeRef {
        self.current().1
    }

    fn dedup_counts(&self) -> std::sync::MutexGuard<'_, dedup::Counts> {
        self.dedup_counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn history(&self) -> std::sync::MutexGuard<'_, mvcc::History> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Watches the last applied log id.
    pub fn watch_applied(&self) -> watch::Receiver<Option<LogId>> {
        self.applied_tx.subscribe()
    }

    /// Watches the cluster configuration applied by this group (system group only).
    pub fn watch_cluster(&self) -> watch::Receiver<Option<ClusterConfig>> {
        self.cluster_tx.subscribe()
    }

    /// The permission table as applied, kept current (see the `auth_tx` field).
    pub fn watch_auth(&self) -> watch::Receiver<Arc<ringkv_authz::AuthTable>> {
        self.auth_tx.subscribe()
    }

    /// The shard's de-duplication clock, as far as this replica applied (0: no entry carried
    /// one yet). A new leader's stamps continue from it (`dedup_clock.rs`).
    pub fn dedup_clock_ms(&self) -> u64 {
        self.dedup_clock_ms.load(Ordering::SeqCst)
    }

    /// The timestamp oracle's persisted bound in milliseconds, as far as this replica applied
    /// (system group only; 0 before the first [`crate::raft::types::Command::TsoAdvance`]).
    pub fn tso_limit_ms(&self) -> Result<u64, StorageError> {
        let tree = self.tree();
        match tree.get(TSO_LIMIT_KEY)? {
            Some(bytes) => decode(tree.name(), &bytes),
            None => Ok(0),
        }
    }

    /// The permission table, as far as this replica applied (system group only; the default,
    /// not enabled, before the first [`crate::raft::types::Command::Auth`]).
    pub fn auth_table(&self) -> Result<ringkv_authz::AuthTable, StorageError> {
        read_auth_table(&self.tree())
    }

    /// The last applied log id (in memory: its record may lag, see `apply.rs`) and the
    /// membership as applied.
    fn applied_state(&self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let tree = self.tree();
        let applied = *self.applied_tx.borrow();
        let membership = match tree.get(MEMBERSHIP_KEY)? {
            Some(bytes) => decode(tree.name(), &bytes)?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    /// Dumps the state to a new snapshot file. Runs on a blocking thread with the apply
    /// lock held.
    fn build_snapshot_blocking(&self) -> Result<(SnapshotMeta, std::fs::File), StorageError> {
        self.settle_intent()?;
        let (last_applied, membership) = self.applied_state()?;
        snapshot::dump(&self.tree(), last_applied, membership, &self.snapshots)
    }

    /// Writes out the bookkeeping the last entry's intent record carries (`apply.rs`), so
    /// the tree's own records are current: a dump copies them. Under the apply lock.
    fn settle_intent(&self) -> Result<(), StorageError> {
        let tree = self.tree();
        let recorded: Option<LogId> = match tree.get(APPLIED_KEY)? {
            Some(bytes) => Some(decode(tree.name(), &bytes)?),
            None => None,
        };
        apply::redo_intent(&tree, recorded)?;
        Ok(())
    }

    /// Loads a received snapshot into a new tree generation and switches to it. Runs on a
    /// blocking thread with the apply lock held.
    fn install_snapshot_blocking(
        &self,
        meta: &SnapshotMeta,
        file: std::fs::File,
    ) -> Result<(), StorageError> {
        let (old_generation, old_tree) = self.current();
        let generation = old_generation + 1;
        let (tree, pairs) = snapshot::load(
            &self.engine,
            &sm_tree_name(self.group, generation),
            meta,
            file,
            &self.snapshots,
        )?;
        self.switch_generation((old_generation, old_tree), (generation, tree), meta.last_log_id)?;
        info!(group = %self.group, pairs, snapshot_id = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    /// Switches from the current generation `from` to the loaded generation `to` (applied
    /// up to `last_applied`): `to` is made durable, then recorded in the catalog, then
    /// current; the tree of `from` is dropped last.
    fn switch_generation(
        &self,
        from: (u64, TreeRef),
        to: (u64, TreeRef),
        last_applied: Option<LogId>,
    ) -> Result<(), StorageError> {
        let (old_generation, old_tree) = from;
        let (generation, tree) = to;
        debug_assert_eq!(generation, old_generation + 1, "generations follow each other");
        // The new tree is durable before the catalog points at it.
        self.engine.flush()?;
        self.catalog
            .insert(&catalog_key(self.group), &encode(&generation)?)?;
        self.engine.flush()?;
        let cluster: Option<ClusterConfig> = match tree.get(CLUSTER_KEY)? {
            Some(bytes) => Some(decode(tree.name(), &bytes)?),
            None => None,
        };
        // The snapshot brings no history: reads below its newest version are refused.
        self.history().reset(mvcc::high_water(&tree)?);
        self.watches.reset();
        // A snapshot taken mid-commit carries locks.
        self.may_have_locks
            .store(txn::holds_locks(&tree)?, Ordering::SeqCst);
        let dedup_counts = dedup::Counts::read(&tree)?;
        *self.dedup_counts() = dedup_counts;
        self.dedup_clock_ms.store(dedup_counts.clock_ms, Ordering::SeqCst);
        match self.current.write() {
            Ok(mut current) => *current = (generation, tree),
            Err(poisoned) => *poisoned.into_inner() = (generation, tree),
        }
        self.legacy_dedup.store(true, Ordering::SeqCst);
        drop(old_tree);
        self.engine.drop_tree(&sm_tree_name(self.group, old_generation))?;
        self.auth_tx
            .send_replace(Arc::new(read_auth_table(&self.tree())?));
        self.applied_tx.send_replace(last_applied);
        if cluster.is_some() {
            self.cluster_tx.send_replace(cluster);
        }
        Ok(())
    }
}

/// The permission table stored in `tree` (the default, not enabled, when none is).
fn read_auth_table(tree: &TreeRef) -> Result<ringkv_authz::AuthTable, StorageError> {
    match tree.get(AUTH_KEY)? {
        Some(bytes) => decode_auth_table(tree.name(), &bytes),
        None => Ok(Default::default()),
    }
}

/// Decodes the permission table as stored: today's form or the one stored before
/// passwords and tokens (`AuthTable::from_stored`).
pub(super) fn decode_auth_table(tree: &str, bytes: &[u8]) -> Result<ringkv_authz::AuthTable, StorageError> {
    ringkv_authz::AuthTable::from_stored(bytes).map_err(|detail| StorageError::Corrupt {
        tree: tree.to_string(),
        detail,
    })
}

/// The stored form of the permission table.
pub(super) fn encode_auth_table(table: &ringkv_authz::AuthTable) -> Result<Vec<u8>, StorageError> {
    table.to_stored().map_err(|detail| StorageError::Corrupt {
        tree: "encode".to_string(),
        detail,
    })
}

fn join_error(err: tokio::task::JoinError) -> StorageError {
    StorageError::Engine(format!("blocking task failed: {err}"))
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;
    use openraft::RaftSnapshotBuilder;

    use super::test_support::{open, put};
    use super::*;

    /// A retired state refuses applies and snapshot dumps (a deleted replica's late work
    /// must not recreate its trees).
    #[tokio::test]
    async fn retired_state_refuses_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        sm.apply(vec![put(3, b"k", b"v1", 1)]).await.expect("apply");
        state.retire().await;
        let late = sm.apply(vec![put(4, b"k", b"v2", 2)]).await;
        assert!(late.is_err(), "an apply after retire fails");
        let mut builder = sm.get_snapshot_builder().await;
        assert!(
            builder.build_snapshot().await.is_err(),
            "a dump after retire fails"
        );
    }
    /// The permission table in memory follows what is applied: an applied `Command::Auth`
    /// and a snapshot install both replace it (the node's permission checks read only it).
    #[tokio::test]
    async fn the_applied_permission_table_is_watched() {
        use openraft::EntryPayload;

        use crate::raft::types::{Command, Entry};

        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let applied = state.watch_auth();
        assert!(!applied.borrow().enabled);
        let enable = Entry {
            log_id: super::test_support::log_id(2, 3),
            payload: EntryPayload::Normal(Command::Auth(ringkv_authz::AuthChange::Enable)),
        };
        sm.apply(vec![enable]).await.expect("apply");
        assert!(applied.borrow().enabled, "an applied change");

        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        let target_dir = tempfile::tempdir().expect("tempdir");
        let (_target_engine, target) = open(target_dir.path());
        let installed = target.watch_auth();
        assert!(!installed.borrow().enabled);
        StateMachine::new(target.clone())
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .expect("install");
        assert!(installed.borrow().enabled, "a snapshot install");
    }
}
