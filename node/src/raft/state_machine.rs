//! The replicated state machine of a group: versioned key/values with CAS and request
//! de-duplication (shards), the cluster configuration (system group), and snapshots.
//!
//! Layout (tree `<group>.sm.<generation>`): `d` + key → 8-byte big-endian version + value;
//! `r` + request id → de-duplication record; `x` + expiry (ms, big-endian) + request id →
//! expiry index; `a` → last applied log id; `m` → last membership; `c` → cluster config.
//! Every entry is applied as one atomic batch that also moves `a`, so a crash never leaves
//! half an entry applied. Installing a snapshot fills a new generation of the tree aside,
//! then flips the generation recorded in the node catalog and drops the old tree.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom};
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::info;

use super::snapshot::{SnapshotDir, SnapshotReader, SnapshotWriter};
use super::types::{
    ClusterConfig, Command, CommandResult, Entry, GroupId, LogId, RaftStorageError, RequestId, SnapshotMeta,
    StoredMembership, TypeConfig, Versioned, WriteCommand, WriteOpResult,
};
use super::{decode, encode, storage_err};
use crate::storage::{prefix_bounds, Batch, EngineRef, StorageError, TreeRef};

const DATA_PREFIX: u8 = b'd';
const DEDUP_PREFIX: u8 = b'r';
const EXPIRY_PREFIX: u8 = b'x';
const APPLIED_KEY: &[u8] = b"a";
const MEMBERSHIP_KEY: &[u8] = b"m";
const CLUSTER_KEY: &[u8] = b"c";
/// Expired de-duplication records removed per applied write (bounds the work per entry).
const MAX_PRUNE_PER_WRITE: usize = 64;
/// Pairs per batch when loading a snapshot.
const LOAD_BATCH_PAIRS: usize = 1024;

fn data_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(DATA_PREFIX);
    out.extend_from_slice(key);
    out
}

fn dedup_key(request_id: &RequestId) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(DEDUP_PREFIX);
    out.extend_from_slice(request_id);
    out
}

fn expiry_key(expires_at_ms: u64, request_id: &RequestId) -> Vec<u8> {
    let mut out = Vec::with_capacity(25);
    out.push(EXPIRY_PREFIX);
    out.extend_from_slice(&expires_at_ms.to_be_bytes());
    out.extend_from_slice(request_id);
    out
}

fn encode_value(versioned: &Versioned) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + versioned.value.len());
    out.extend_from_slice(&versioned.version.to_be_bytes());
    out.extend_from_slice(&versioned.value);
    out
}

fn decode_value(tree: &str, bytes: &[u8]) -> Result<Versioned, StorageError> {
    let Some((version, value)) = bytes.split_first_chunk::<8>() else {
        return Err(StorageError::Corrupt {
            tree: tree.to_string(),
            detail: "stored value shorter than its version".to_string(),
        });
    };
    Ok(Versioned {
        version: u64::from_be_bytes(*version),
        value: value.to_vec(),
    })
}

#[derive(Debug, Serialize, Deserialize)]
struct DedupRecord {
    expires_at_ms: u64,
    results: Vec<WriteOpResult>,
}

fn sm_tree_name(group: GroupId, generation: u64) -> String {
    format!("{}.sm.{generation}", group.name())
}

fn catalog_key(group: GroupId) -> Vec<u8> {
    format!("sm-generation/{}", group.name()).into_bytes()
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
    apply_lock: Arc<tokio::sync::RwLock<()>>,
    /// The last applied log id (in memory; durable at the next flush).
    applied_tx: watch::Sender<Option<LogId>>,
    snapshots: SnapshotDir,
    dedup_window_ms: u64,
    cluster_tx: watch::Sender<Option<ClusterConfig>>,
}

impl GroupState {
    /// Opens (or creates) the state of `group`, dropping trees left by an interrupted install.
    pub fn open(
        group: GroupId,
        engine: EngineRef,
        catalog: TreeRef,
        snapshots: SnapshotDir,
        dedup_window_ms: u64,
    ) -> Result<Arc<GroupState>, StorageError> {
        let generation = match catalog.get(&catalog_key(group))? {
            Some(bytes) => decode(catalog.name(), &bytes)?,
            None => 0u64,
        };
        let current_name = sm_tree_name(group, generation);
        let prefix = format!("{}.sm.", group.name());
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
        let applied: Option<LogId> = match tree.get(APPLIED_KEY)? {
            Some(bytes) => Some(decode(tree.name(), &bytes)?),
            None => None,
        };
        let (applied_tx, _) = watch::channel(applied);
        Ok(Arc::new(GroupState {
            group,
            engine,
            catalog,
            current: RwLock::new((generation, tree)),
            apply_lock: Arc::new(tokio::sync::RwLock::new(())),
            applied_tx,
            snapshots,
            dedup_window_ms,
            cluster_tx,
        }))
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    fn tree(&self) -> TreeRef {
        match self.current.read() {
            Ok(current) => current.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    /// Reads `key` from the local state (no consistency check: callers do that).
    pub async fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StorageError> {
        let mut values = self.get_many(std::slice::from_ref(&key.to_vec())).await?;
        Ok(values.pop().flatten())
    }

    /// Reads `keys` from the local state at one point between applied entries.
    pub async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Versioned>>, StorageError> {
        let _guard = self.apply_lock.read().await;
        let tree = self.tree();
        keys.iter()
            .map(|key| match tree.get(&data_key(key))? {
                Some(bytes) => Ok(Some(decode_value(tree.name(), &bytes)?)),
                None => Ok(None),
            })
            .collect()
    }

    /// Watches the last applied log id.
    pub fn watch_applied(&self) -> watch::Receiver<Option<LogId>> {
        self.applied_tx.subscribe()
    }

    /// Watches the cluster configuration applied by this group (system group only).
    pub fn watch_cluster(&self) -> watch::Receiver<Option<ClusterConfig>> {
        self.cluster_tx.subscribe()
    }

    /// Every stored key/value pair (`d` records), ascending; for tests and tools.
    pub fn data_len(&self) -> Result<usize, StorageError> {
        let (start, end) = prefix_bounds(&[DATA_PREFIX]);
        let mut count = 0;
        for pair in self.tree().range(start, end) {
            pair?;
            count += 1;
        }
        Ok(count)
    }

    fn applied_state(&self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let tree = self.tree();
        let applied = match tree.get(APPLIED_KEY)? {
            Some(bytes) => Some(decode(tree.name(), &bytes)?),
            None => None,
        };
        let membership = match tree.get(MEMBERSHIP_KEY)? {
            Some(bytes) => decode(tree.name(), &bytes)?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    fn apply_entry(&self, tree: &TreeRef, entry: &Entry) -> Result<CommandResult, StorageError> {
        let mut batch = Batch::default();
        let result = match &entry.payload {
            EntryPayload::Blank => CommandResult::None,
            EntryPayload::Membership(membership) => {
                let stored = StoredMembership::new(Some(entry.log_id), membership.clone());
                batch.insert(MEMBERSHIP_KEY.to_vec(), encode(&stored)?);
                CommandResult::None
            }
            EntryPayload::Normal(Command::Write(writes)) => {
                self.apply_writes(tree, entry.log_id.index, writes, &mut batch)?
            }
            EntryPayload::Normal(Command::SetCluster(config)) => match tree.get(CLUSTER_KEY)? {
                Some(bytes) => CommandResult::Cluster(decode(tree.name(), &bytes)?),
                None => {
                    batch.insert(CLUSTER_KEY.to_vec(), encode(config)?);
                    CommandResult::Cluster(config.clone())
                }
            },
        };
        batch.insert(APPLIED_KEY.to_vec(), encode(&entry.log_id)?);
        tree.apply_batch(batch)?;
        self.applied_tx.send_replace(Some(entry.log_id));
        if let CommandResult::Cluster(config) = &result {
            let config = config.clone();
            self.cluster_tx.send_if_modified(|current| {
                let changed = current.as_ref() != Some(&config);
                *current = Some(config);
                changed
            });
        }
        Ok(result)
    }

    /// Applies the writes of one entry. Writes in one entry see each other's effects; a
    /// request id seen earlier (in this entry or within the window) returns its first outcome.
    fn apply_writes(
        &self,
        tree: &TreeRef,
        log_index: u64,
        writes: &[WriteCommand],
        batch: &mut Batch,
    ) -> Result<CommandResult, StorageError> {
        let mut overlay: HashMap<Vec<u8>, Option<Versioned>> = HashMap::new();
        let mut seen: HashMap<RequestId, Vec<WriteOpResult>> = HashMap::new();
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut latest_ms = 0;
        for write in writes {
            outcomes.push(self.apply_write(tree, log_index, write, batch, &mut overlay, &mut seen)?);
            latest_ms = latest_ms.max(write.issued_at_ms);
        }
        self.prune_expired(tree, latest_ms, batch)?;
        Ok(CommandResult::Write(outcomes))
    }

    fn apply_write(
        &self,
        tree: &TreeRef,
        log_index: u64,
        write: &WriteCommand,
        batch: &mut Batch,
        overlay: &mut HashMap<Vec<u8>, Option<Versioned>>,
        seen: &mut HashMap<RequestId, Vec<WriteOpResult>>,
    ) -> Result<Vec<WriteOpResult>, StorageError> {
        if let Some(results) = seen.get(&write.request_id) {
            return Ok(results.clone());
        }
        let dedup = dedup_key(&write.request_id);
        if let Some(bytes) = tree.get(&dedup)? {
            let record: DedupRecord = decode(tree.name(), &bytes)?;
            return Ok(record.results);
        }
        let mut results = Vec::with_capacity(write.ops.len());
        for op in &write.ops {
            let current = match overlay.get(&op.key) {
                Some(current) => current.clone(),
                None => match tree.get(&data_key(&op.key))? {
                    Some(bytes) => Some(decode_value(tree.name(), &bytes)?),
                    None => None,
                },
            };
            let current_version = current.as_ref().map_or(0, |value| value.version);
            if op
                .expected_version
                .is_some_and(|expected| expected != current_version)
            {
                results.push(WriteOpResult {
                    succeeded: false,
                    version: 0,
                    existed: current.is_some(),
                    current,
                });
                continue;
            }
            let existed = current.is_some();
            match &op.value {
                Some(value) => {
                    let stored = Versioned {
                        version: log_index,
                        value: value.clone(),
                    };
                    batch.insert(data_key(&op.key), encode_value(&stored));
                    overlay.insert(op.key.clone(), Some(stored));
                    results.push(WriteOpResult {
                        succeeded: true,
                        version: log_index,
                        existed,
                        current: None,
                    });
                }
                None => {
                    batch.remove(data_key(&op.key));
                    overlay.insert(op.key.clone(), None);
                    results.push(WriteOpResult {
                        succeeded: true,
                        version: 0,
                        existed,
                        current: None,
                    });
                }
            }
        }
        let expires_at_ms = write.issued_at_ms.saturating_add(self.dedup_window_ms);
        let record = DedupRecord {
            expires_at_ms,
            results: results.clone(),
        };
        batch.insert(dedup, encode(&record)?);
        batch.insert(expiry_key(expires_at_ms, &write.request_id), Vec::new());
        seen.insert(write.request_id, results.clone());
        Ok(results)
    }

    /// Drops de-duplication records that expired before `now_ms` (the entry's own clock,
    /// so every replica prunes the same records).
    fn prune_expired(&self, tree: &TreeRef, now_ms: u64, batch: &mut Batch) -> Result<(), StorageError> {
        let (start, end) = prefix_bounds(&[EXPIRY_PREFIX]);
        for pair in tree.range(start, end).take(MAX_PRUNE_PER_WRITE) {
            let (key, _) = pair?;
            let Some(expires) = key.get(1..9) else { break };
            let mut expires_bytes = [0u8; 8];
            expires_bytes.copy_from_slice(expires);
            if u64::from_be_bytes(expires_bytes) >= now_ms {
                break;
            }
            let mut request_id = [0u8; 16];
            if let Some(id) = key.get(9..25) {
                request_id.copy_from_slice(id);
                batch.remove(dedup_key(&request_id));
            }
            batch.remove(key);
        }
        Ok(())
    }

    /// Dumps the state to a new snapshot file. Runs on a blocking thread with the apply
    /// lock held.
    fn build_snapshot_blocking(&self) -> Result<(SnapshotMeta, std::fs::File), StorageError> {
        let tree = self.tree();
        let (last_applied, membership) = self.applied_state()?;
        let snapshot_id = match last_applied {
            Some(log_id) => format!(
                "{}-{}-{:08x}",
                log_id.leader_id.term,
                log_id.index,
                rand::random::<u32>()
            ),
            None => format!("0-0-{:08x}", rand::random::<u32>()),
        };
        let temp = self.snapshots.temp_path();
        let mut writer = SnapshotWriter::create(&temp)?;
        for pair in tree.range(Bound::Unbounded, Bound::Unbounded) {
            let (key, value) = pair?;
            writer.write(&key, &value)?;
        }
        writer.finish()?;
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        self.snapshots.publish(&meta, &temp)?;
        // Opened while the apply lock is still held: no other publish can remove it first.
        let file = std::fs::File::open(self.snapshots.data_path(&meta.snapshot_id))?;
        Ok((meta, file))
    }

    /// Loads a received snapshot into a new tree generation and switches to it. Runs on a
    /// blocking thread with the apply lock held.
    fn install_snapshot_blocking(
        &self,
        meta: &SnapshotMeta,
        mut file: std::fs::File,
    ) -> Result<(), StorageError> {
        validate_snapshot_id(&meta.snapshot_id)?;
        file.seek(SeekFrom::Start(0))?;
        let (old_generation, old_tree) = match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let generation = old_generation + 1;
        let name = sm_tree_name(self.group, generation);
        self.engine.drop_tree(&name)?;
        let tree = self.engine.open_tree(&name)?;
        let copy_path = self.snapshots.temp_path();
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
        self.snapshots.publish(meta, &copy_path)?;
        // The new tree is durable before the catalog points at it.
        self.engine.flush()?;
        self.catalog
            .insert(&catalog_key(self.group), &encode(&generation)?)?;
        self.engine.flush()?;
        let cluster: Option<ClusterConfig> = match tree.get(CLUSTER_KEY)? {
            Some(bytes) => Some(decode(tree.name(), &bytes)?),
            None => None,
        };
        match self.current.write() {
            Ok(mut current) => *current = (generation, tree),
            Err(poisoned) => *poisoned.into_inner() = (generation, tree),
        }
        drop(old_tree);
        self.engine.drop_tree(&sm_tree_name(self.group, old_generation))?;
        self.applied_tx.send_replace(meta.last_log_id);
        if cluster.is_some() {
            self.cluster_tx.send_replace(cluster);
        }
        info!(group = %self.group, pairs, snapshot_id = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }
}

/// Snapshot ids come from peers and name files: allow only a safe alphabet.
fn validate_snapshot_id(snapshot_id: &str) -> Result<(), StorageError> {
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

fn join_error(err: tokio::task::JoinError) -> StorageError {
    StorageError::Engine(format!("blocking task failed: {err}"))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let build = async {
            let guard = self.state.apply_lock.clone().write_owned().await;
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

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};

    use super::*;
    use crate::raft::types::{WriteCommand, WriteOp};
    use crate::storage;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn put(index: u64, key: &[u8], value: &[u8], request_id: u8) -> Entry {
        Entry {
            log_id: log_id(2, index),
            payload: EntryPayload::Normal(Command::Write(vec![WriteCommand {
                request_id: [request_id; 16],
                issued_at_ms: 1_000,
                ops: vec![WriteOp {
                    key: key.to_vec(),
                    value: Some(value.to_vec()),
                    expected_version: None,
                }],
            }])),
        }
    }

    fn open(dir: &std::path::Path) -> (EngineRef, Arc<GroupState>) {
        // sled's IO threads may hold the directory lock briefly after the last handle of a
        // previous open is dropped: wait (bounded) for it to be released.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let engine = loop {
            match storage::open(&dir.join("db")) {
                Ok(engine) => break engine,
                Err(err) if std::time::Instant::now() < deadline => {
                    let _ = err;
                    std::thread::yield_now();
                }
                Err(err) => panic!("cannot reopen the engine: {err}"),
            }
        };
        let catalog = engine.open_tree("node").expect("catalog");
        let snapshots = SnapshotDir::open(dir.join("snapshots")).expect("snapshots");
        let state =
            GroupState::open(GroupId::Shard(0), engine.clone(), catalog, snapshots, 60_000).expect("state");
        (engine, state)
    }

    /// A retried request id returns the first outcome and is not applied twice; versions
    /// are log indexes; a failed CAS reports the current value.
    #[tokio::test]
    async fn dedup_versions_and_cas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let first = sm.apply(vec![put(3, b"k", b"v1", 1)]).await.expect("apply");
        let retry = sm.apply(vec![put(4, b"k", b"v2", 1)]).await.expect("apply retry");
        assert_eq!(first, retry, "a retry returns the first outcome");
        let stored = state.get(b"k").await.expect("get").expect("present");
        assert_eq!((stored.value.as_slice(), stored.version), (&b"v1"[..], 3));
        let cas = Entry {
            log_id: log_id(2, 5),
            payload: EntryPayload::Normal(Command::Write(vec![WriteCommand {
                request_id: [9; 16],
                issued_at_ms: 1_000,
                ops: vec![WriteOp {
                    key: b"k".to_vec(),
                    value: Some(b"v3".to_vec()),
                    expected_version: Some(2),
                }],
            }])),
        };
        let results = sm.apply(vec![cas]).await.expect("cas");
        let CommandResult::Write(outcomes) = &results[0] else {
            panic!("write result expected")
        };
        assert!(!outcomes[0][0].succeeded);
        assert_eq!(outcomes[0][0].current.as_ref().map(|c| c.version), Some(3));
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
            let (_engine, target) = open(target_dir.path());
            let mut target_sm = StateMachine::new(target.clone());
            target_sm
                .install_snapshot(&snapshot.meta, snapshot.snapshot)
                .await
                .expect("install");
            let (applied, _) = target_sm.applied_state().await.expect("applied");
            assert_eq!(applied, Some(log_id(2, 20)));
        }
        let (_engine, reopened) = open(target_dir.path());
        let (applied, _) = reopened.applied_state().expect("applied after reopen");
        assert_eq!(applied, Some(log_id(2, 20)));
        assert_eq!(reopened.data_len().expect("len"), 20);
        let current = reopened
            .snapshots
            .current()
            .expect("meta")
            .expect("a current snapshot");
        assert_eq!(current.last_log_id, Some(log_id(2, 20)));
    }
}
