//! The replicated state machine of a group: versioned key/values with CAS and request
//! de-duplication (shards), the cluster configuration (system group), and snapshots.
//!
//! Layout (tree `<group>.sm.<generation>`): `d` + key → 8-byte big-endian version + value;
//! `r` + request id → de-duplication record of a write; `x` + expiry (ms, big-endian) +
//! request id → its expiry index; `q` + request id → de-duplication record of a delete-range;
//! `y` + expiry + request id → its expiry index; `a` → last applied log id; `m` → last
//! membership; `c` → cluster config.
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
    ClusterConfig, Command, CommandResult, DeleteRangeCommand, DeleteRangeResult, Entry, GroupId, LogId,
    RaftStorageError, RequestId, RingChangeOutcome, RingChangeRejection, SnapshotMeta, StoredMembership,
    TypeConfig, Versioned, WriteCommand, WriteOpResult,
};
use super::{decode, encode, storage_err};
use crate::raft::ring_change;
use crate::storage::{prefix_bounds, Batch, EngineRef, StorageError, TreeRef};

const DATA_PREFIX: u8 = b'd';
const DEDUP_PREFIX: u8 = b'r';
const EXPIRY_PREFIX: u8 = b'x';
const RANGE_DEDUP_PREFIX: u8 = b'q';
const RANGE_EXPIRY_PREFIX: u8 = b'y';
const APPLIED_KEY: &[u8] = b"a";
const MEMBERSHIP_KEY: &[u8] = b"m";
const CLUSTER_KEY: &[u8] = b"c";
/// Expired de-duplication records removed per applied entry and record kind (bounds the
/// work per entry).
const MAX_PRUNE_PER_WRITE: usize = 64;
/// Pairs per batch when loading a snapshot.
const LOAD_BATCH_PAIRS: usize = 1024;

fn data_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(DATA_PREFIX);
    out.extend_from_slice(key);
    out
}

/// The user key of a data record (`d` + key).
fn user_key(tree: &str, key: &[u8]) -> Result<Vec<u8>, StorageError> {
    match key.split_first() {
        Some((&DATA_PREFIX, rest)) => Ok(rest.to_vec()),
        _ => Err(StorageError::Corrupt {
            tree: tree.to_string(),
            detail: "data record key without the data prefix".to_string(),
        }),
    }
}

/// Lower and upper bounds of a range of tree keys.
type KeyBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Bounds of the data records of the keys in `[start, end)` (`None` end = no upper bound),
/// or `None` when the range is empty.
fn data_bounds(start: &[u8], end: Option<&[u8]>) -> Option<KeyBounds> {
    let upper = match end {
        Some(end) if start >= end => return None,
        Some(end) => Bound::Excluded(data_key(end)),
        // The end of the data prefix: never reaches the records under other prefixes.
        None => prefix_bounds(&[DATA_PREFIX]).1,
    };
    Some((Bound::Included(data_key(start)), upper))
}

/// De-duplication record key (`prefix` + request id).
fn request_key(prefix: u8, request_id: &RequestId) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(prefix);
    out.extend_from_slice(request_id);
    out
}

fn dedup_key(request_id: &RequestId) -> Vec<u8> {
    request_key(DEDUP_PREFIX, request_id)
}

fn range_dedup_key(request_id: &RequestId) -> Vec<u8> {
    request_key(RANGE_DEDUP_PREFIX, request_id)
}

/// Expiry index key (`prefix` + expiry + request id).
fn expiry_key(prefix: u8, expires_at_ms: u64, request_id: &RequestId) -> Vec<u8> {
    let mut out = Vec::with_capacity(25);
    out.push(prefix);
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

fn decode_version(tree: &str, bytes: &[u8]) -> Result<u64, StorageError> {
    match bytes.first_chunk::<8>() {
        Some(version) => Ok(u64::from_be_bytes(*version)),
        None => Err(StorageError::Corrupt {
            tree: tree.to_string(),
            detail: "stored value shorter than its version".to_string(),
        }),
    }
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

/// De-duplication record of a delete-range (its own prefix: [`DedupRecord`] is persisted
/// and keeps its encoding).
#[derive(Debug, Serialize, Deserialize)]
struct RangeDedupRecord {
    expires_at_ms: u64,
    result: DeleteRangeResult,
}

/// What a scan reads: a key range, a direction and a budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOptions {
    /// First key of the range (inclusive; empty = the first key).
    pub start: Vec<u8>,
    /// End of the range (exclusive); `None` = no upper bound.
    pub end: Option<Vec<u8>>,
    /// Most entries returned (0 returns none).
    pub limit: usize,
    /// Stop once the returned keys and values hold at least this many bytes; the first
    /// entry is always returned, whatever its size.
    pub max_bytes: usize,
    /// Descending key order: start from the greatest key of the range.
    pub reverse: bool,
    /// Return versions without values.
    pub keys_only: bool,
}

/// One page of a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Keys with their versions and values (empty values when keys only), in scan order.
    pub entries: Vec<(Vec<u8>, Versioned)>,
    /// Whether the range holds at least one more key past the last entry (in scan order).
    pub more: bool,
}

/// The outcome of counting the keys of a range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountResult {
    /// Keys counted.
    pub count: u64,
    /// Whether the limit stopped the count with keys left after `last_key`.
    pub more: bool,
    /// The last key counted; set only when `more`.
    pub last_key: Option<Vec<u8>>,
}

/// One page of the range of `options` from `tree` (the caller holds the apply lock).
fn scan_tree(tree: &TreeRef, options: &ScanOptions) -> Result<ScanPage, StorageError> {
    let mut page = ScanPage::default();
    let Some((start, end)) = data_bounds(&options.start, options.end.as_deref()) else {
        return Ok(page);
    };
    let pairs = if options.reverse {
        tree.range_rev(start, end)
    } else {
        tree.range(start, end)
    };
    let mut bytes = 0usize;
    for pair in pairs {
        let (key, value) = pair?;
        // Reading one pair past the page is what tells whether more remain.
        let budget_spent = !page.entries.is_empty() && bytes >= options.max_bytes;
        if page.entries.len() >= options.limit || budget_spent {
            page.more = true;
            break;
        }
        let key = user_key(tree.name(), &key)?;
        let versioned = if options.keys_only {
            Versioned {
                version: decode_version(tree.name(), &value)?,
                value: Vec::new(),
            }
        } else {
            decode_value(tree.name(), &value)?
        };
        bytes = bytes.saturating_add(key.len() + versioned.value.len());
        page.entries.push((key, versioned));
    }
    Ok(page)
}

/// Counts at most `limit` keys of `[start, end)` in `tree` (the caller holds the apply lock).
fn count_tree(
    tree: &TreeRef,
    start: &[u8],
    end: Option<&[u8]>,
    limit: u64,
) -> Result<CountResult, StorageError> {
    let mut result = CountResult::default();
    let Some((start, end)) = data_bounds(start, end) else {
        return Ok(result);
    };
    let mut last: Option<Vec<u8>> = None;
    for pair in tree.range(start, end) {
        let (key, _) = pair?;
        if result.count >= limit {
            result.more = true;
            result.last_key = match last {
                Some(last) => Some(user_key(tree.name(), &last)?),
                None => None,
            };
            break;
        }
        result.count += 1;
        last = Some(key);
    }
    Ok(result)
}

fn sm_tree_name(group: GroupId, generation: u64) -> String {
    format!("{}.sm.{generation}", group.name())
}

fn catalog_key(group: GroupId) -> Vec<u8> {
    format!("sm-generation/{}", group.name()).into_bytes()
}

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
    apply_lock: Arc<tokio::sync::RwLock<()>>,
    /// The last applied log id (in memory; durable at the next flush).
    applied_tx: watch::Sender<Option<LogId>>,
    snapshots: SnapshotDir,
    dedup_window_ms: u64,
    cluster_tx: watch::Sender<Option<ClusterConfig>>,
    /// Set (under the apply lock) when the replica is being deleted: openraft's state-machine
    /// worker may outlive `Raft::shutdown`, and a late apply or snapshot install must not
    /// recreate the trees the deletion removes.
    retired: std::sync::atomic::AtomicBool,
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
            retired: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Marks the state retired once no apply, install or snapshot dump is running; every
    /// later one fails instead of writing. Called before the replica's data is deleted.
    pub async fn retire(&self) {
        let _guard = self.apply_lock.write().await;
        self.retired.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn check_not_retired(&self) -> Result<(), StorageError> {
        if self.retired.load(std::sync::atomic::Ordering::SeqCst) {
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

    /// Reads one page of a range from the local state at one point between applied entries
    /// (no consistency check: callers do that). Iterates on a blocking thread.
    pub async fn scan(&self, options: ScanOptions) -> Result<ScanPage, StorageError> {
        let guard = self.apply_lock.clone().read_owned().await;
        let tree = self.tree();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            scan_tree(&tree, &options)
        })
        .await
        .map_err(join_error)?
    }

    /// Counts at most `limit` keys of `[start, end)` (`None` end = no upper bound) in the
    /// local state at one point between applied entries (no consistency check: callers do
    /// that). Iterates on a blocking thread.
    pub async fn count(
        &self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u64,
    ) -> Result<CountResult, StorageError> {
        let guard = self.apply_lock.clone().read_owned().await;
        let tree = self.tree();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            count_tree(&tree, &start, end.as_deref(), limit)
        })
        .await
        .map_err(join_error)?
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
            EntryPayload::Normal(Command::DeleteRange(command)) => {
                self.apply_delete_range(tree, command, &mut batch)?
            }
            EntryPayload::Normal(Command::ChangeRing(change)) => match tree.get(CLUSTER_KEY)? {
                None => CommandResult::Ring(RingChangeOutcome::Rejected(RingChangeRejection::NotInitialized)),
                Some(bytes) => {
                    let current: ClusterConfig = decode(tree.name(), &bytes)?;
                    let outcome = ring_change::apply(&current, change);
                    if let RingChangeOutcome::Applied(next) = &outcome {
                        batch.insert(CLUSTER_KEY.to_vec(), encode(next)?);
                    }
                    CommandResult::Ring(outcome)
                }
            },
        };
        batch.insert(APPLIED_KEY.to_vec(), encode(&entry.log_id)?);
        tree.apply_batch(batch)?;
        self.applied_tx.send_replace(Some(entry.log_id));
        let new_config = match &result {
            CommandResult::Cluster(config) | CommandResult::Ring(RingChangeOutcome::Applied(config)) => {
                Some(config.clone())
            }
            _ => None,
        };
        if let Some(config) = new_config {
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
        batch.insert(
            expiry_key(EXPIRY_PREFIX, expires_at_ms, &write.request_id),
            Vec::new(),
        );
        seen.insert(write.request_id, results.clone());
        Ok(results)
    }

    /// Deletes the first `limit` keys of the command's range (in key order) in `batch`. A
    /// request id seen within the window returns its first outcome and deletes nothing.
    fn apply_delete_range(
        &self,
        tree: &TreeRef,
        command: &DeleteRangeCommand,
        batch: &mut Batch,
    ) -> Result<CommandResult, StorageError> {
        let dedup = range_dedup_key(&command.request_id);
        let result = match tree.get(&dedup)? {
            Some(bytes) => decode::<RangeDedupRecord>(tree.name(), &bytes)?.result,
            None => {
                let mut result = DeleteRangeResult::default();
                let limit = u64::from(command.limit);
                if let Some((start, end)) = data_bounds(&command.start, command.end.as_deref()) {
                    let mut last: Option<Vec<u8>> = None;
                    for pair in tree.range(start, end) {
                        let (key, _) = pair?;
                        if result.deleted >= limit {
                            result.more = true;
                            break;
                        }
                        batch.remove(key.clone());
                        result.deleted += 1;
                        last = Some(key);
                    }
                    result.last_deleted = match last {
                        Some(last) => Some(user_key(tree.name(), &last)?),
                        None => None,
                    };
                }
                let expires_at_ms = command.issued_at_ms.saturating_add(self.dedup_window_ms);
                let record = RangeDedupRecord {
                    expires_at_ms,
                    result: result.clone(),
                };
                batch.insert(dedup, encode(&record)?);
                batch.insert(
                    expiry_key(RANGE_EXPIRY_PREFIX, expires_at_ms, &command.request_id),
                    Vec::new(),
                );
                result
            }
        };
        self.prune_expired(tree, command.issued_at_ms, batch)?;
        Ok(CommandResult::DeleteRange(result))
    }

    /// Drops de-duplication records (of writes and of delete-ranges) that expired before
    /// `now_ms` (the entry's own clock, so every replica prunes the same records).
    fn prune_expired(&self, tree: &TreeRef, now_ms: u64, batch: &mut Batch) -> Result<(), StorageError> {
        prune_index(tree, EXPIRY_PREFIX, DEDUP_PREFIX, now_ms, batch)?;
        prune_index(tree, RANGE_EXPIRY_PREFIX, RANGE_DEDUP_PREFIX, now_ms, batch)
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

/// Drops (at most [`MAX_PRUNE_PER_WRITE`]) records `record_prefix` + request id whose entry
/// in the expiry index `index_prefix` expired before `now_ms`, with their index entries.
fn prune_index(
    tree: &TreeRef,
    index_prefix: u8,
    record_prefix: u8,
    now_ms: u64,
    batch: &mut Batch,
) -> Result<(), StorageError> {
    let (start, end) = prefix_bounds(&[index_prefix]);
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
            batch.remove(request_key(record_prefix, &request_id));
        }
        batch.remove(key);
    }
    Ok(())
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
    use crate::raft::types::{DeleteRangeCommand, WriteCommand, WriteOp};
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

    fn delete_range(index: u64, start: &[u8], end: Option<&[u8]>, limit: u32, request_id: u8) -> Entry {
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
    async fn apply_delete_range(sm: &mut StateMachine, entry: Entry) -> DeleteRangeResult {
        let mut results = sm.apply(vec![entry]).await.expect("apply delete-range");
        match results.pop() {
            Some(CommandResult::DeleteRange(result)) => result,
            other => panic!("delete-range result expected, got {other:?}"),
        }
    }

    fn scan_options(start: &[u8], end: Option<&[u8]>, limit: usize) -> ScanOptions {
        ScanOptions {
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            limit,
            max_bytes: usize::MAX,
            reverse: false,
            keys_only: false,
        }
    }

    fn keys(page: &ScanPage) -> Vec<&[u8]> {
        page.entries.iter().map(|(key, _)| key.as_slice()).collect()
    }

    /// A state with keys a..e at versions 1..5 (values `v<key>`), plus a write dedup record.
    async fn five_keys(dir: &std::path::Path) -> (EngineRef, Arc<GroupState>, StateMachine) {
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

    /// Forward and reverse scans honour the range and the limit, report `more` exactly when
    /// a key remains, return versions, and never reach records outside the data prefix.
    #[tokio::test]
    async fn scan_forward_and_reverse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state, _sm) = five_keys(dir.path()).await;

        let all = state.scan(scan_options(b"", None, 10)).await.expect("scan");
        assert_eq!(keys(&all), vec![&b"a"[..], b"b", b"c", b"d", b"e"]);
        assert!(!all.more);
        assert_eq!(
            all.entries[0].1,
            Versioned {
                version: 1,
                value: b"va".to_vec()
            }
        );
        assert_eq!(all.entries[4].1.version, 5);

        let exact = state.scan(scan_options(b"", None, 5)).await.expect("scan");
        assert_eq!(exact.entries.len(), 5);
        assert!(!exact.more, "a page ending exactly at the last key has no more");
        let short = state.scan(scan_options(b"", None, 4)).await.expect("scan");
        assert_eq!(keys(&short), vec![&b"a"[..], b"b", b"c", b"d"]);
        assert!(short.more);

        let bounded = state
            .scan(scan_options(b"b", Some(b"d"), 10))
            .await
            .expect("scan");
        assert_eq!(keys(&bounded), vec![&b"b"[..], b"c"]);
        assert!(!bounded.more);
        let first = state.scan(scan_options(b"b", Some(b"d"), 1)).await.expect("scan");
        assert_eq!(keys(&first), vec![&b"b"[..]]);
        assert!(first.more);
        let between = state
            .scan(scan_options(b"bb", Some(b"cc"), 10))
            .await
            .expect("scan");
        assert_eq!(keys(&between), vec![&b"c"[..]]);
        let tail = state.scan(scan_options(b"c", None, 10)).await.expect("scan");
        assert_eq!(keys(&tail), vec![&b"c"[..], b"d", b"e"]);

        let reverse = |start: &[u8], end: Option<&[u8]>, limit| ScanOptions {
            reverse: true,
            ..scan_options(start, end, limit)
        };
        let last_two = state.scan(reverse(b"", None, 2)).await.expect("scan");
        assert_eq!(keys(&last_two), vec![&b"e"[..], b"d"]);
        assert!(last_two.more);
        let all_rev = state.scan(reverse(b"", None, 5)).await.expect("scan");
        assert_eq!(keys(&all_rev), vec![&b"e"[..], b"d", b"c", b"b", b"a"]);
        assert!(!all_rev.more);
        let bounded_rev = state.scan(reverse(b"b", Some(b"d"), 2)).await.expect("scan");
        assert_eq!(keys(&bounded_rev), vec![&b"c"[..], b"b"]);
        assert!(!bounded_rev.more, "exactly the keys of the range");
        let one_rev = state.scan(reverse(b"b", Some(b"d"), 1)).await.expect("scan");
        assert_eq!(keys(&one_rev), vec![&b"c"[..]]);
        assert!(one_rev.more);
        // Resuming before the last entry of a reverse page (end = that key) continues it.
        let rest_rev = state.scan(reverse(b"b", Some(b"c"), 10)).await.expect("scan");
        assert_eq!(keys(&rest_rev), vec![&b"b"[..]]);
        assert!(!rest_rev.more);
    }

    /// Keys made of 0xff bytes sort last among data records and are still found by an
    /// unbounded scan in both directions (the data prefix ends at `e`, not at the key space).
    #[tokio::test]
    async fn scan_unbounded_end_stays_in_the_data_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state, mut sm) = five_keys(dir.path()).await;
        sm.apply(vec![put(6, &[0xff, 0xff], b"max", 6)])
            .await
            .expect("apply");
        let forward = state.scan(scan_options(b"d", None, 10)).await.expect("scan");
        assert_eq!(keys(&forward), vec![&b"d"[..], b"e", &[0xff, 0xff]]);
        assert!(!forward.more);
        let backward = state
            .scan(ScanOptions {
                reverse: true,
                ..scan_options(b"", None, 1)
            })
            .await
            .expect("scan");
        assert_eq!(keys(&backward), vec![&[0xff, 0xff][..]]);
        assert!(backward.more);
        assert_eq!(state.count(Vec::new(), None, 100).await.expect("count").count, 6);
    }

    /// The byte budget stops a page once the returned keys and values reach it, always
    /// returns the first entry, and counts only the key for keys-only scans (which keep the
    /// version).
    #[tokio::test]
    async fn scan_byte_budget_and_keys_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state, _sm) = five_keys(dir.path()).await;
        // Every entry holds 1 key byte + 2 value bytes.
        let budget = |max_bytes, keys_only| ScanOptions {
            max_bytes,
            keys_only,
            ..scan_options(b"", None, 10)
        };
        let two = state.scan(budget(6, false)).await.expect("scan");
        assert_eq!(keys(&two), vec![&b"a"[..], b"b"]);
        assert!(two.more);
        let three = state.scan(budget(7, false)).await.expect("scan");
        assert_eq!(three.entries.len(), 3);
        let one = state.scan(budget(1, false)).await.expect("scan");
        assert_eq!(keys(&one), vec![&b"a"[..]]);
        assert!(one.more);
        let zero = state.scan(budget(0, false)).await.expect("scan");
        assert_eq!(zero.entries.len(), 1, "at least one entry");
        let everything = state.scan(budget(15, false)).await.expect("scan");
        assert_eq!(everything.entries.len(), 5);
        assert!(!everything.more, "the budget is reached only at the last key");

        let keys_only = state.scan(budget(2, true)).await.expect("scan");
        assert_eq!(keys(&keys_only), vec![&b"a"[..], b"b"]);
        assert!(keys_only.more);
        assert_eq!(
            keys_only.entries[1].1,
            Versioned {
                version: 2,
                value: Vec::new()
            }
        );
    }

    /// Empty and inverted ranges, ranges holding no key, and limit 0 return no entries.
    #[tokio::test]
    async fn scan_empty_ranges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, empty) = open(&dir.path().join("empty"));
        let page = empty.scan(scan_options(b"", None, 10)).await.expect("scan");
        assert_eq!(page, ScanPage::default());
        assert_eq!(
            empty.count(Vec::new(), None, 10).await.expect("count"),
            CountResult::default()
        );

        let (_engine, state, _sm) = five_keys(&dir.path().join("full")).await;
        for (start, end) in [
            (&b"c"[..], Some(&b"c"[..])),
            (b"d", Some(b"b")),
            (b"x", None),
            (b"b", Some(b"")),
        ] {
            for reverse in [false, true] {
                let options = ScanOptions {
                    reverse,
                    ..scan_options(start, end, 10)
                };
                let page = state.scan(options).await.expect("scan");
                assert_eq!(page, ScanPage::default(), "range {start:?}..{end:?}");
            }
            let count = state
                .count(start.to_vec(), end.map(<[u8]>::to_vec), 10)
                .await
                .expect("count");
            assert_eq!(count, CountResult::default());
        }
        let none = state.scan(scan_options(b"", None, 0)).await.expect("scan");
        assert!(none.entries.is_empty());
        assert!(none.more);
    }

    /// Counts stop at the limit with `more` and the last key counted, and resume after it.
    #[tokio::test]
    async fn count_with_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state, _sm) = five_keys(dir.path()).await;
        let all = state.count(Vec::new(), None, 100).await.expect("count");
        assert_eq!(
            all,
            CountResult {
                count: 5,
                more: false,
                last_key: None
            }
        );
        let exact = state.count(Vec::new(), None, 5).await.expect("count");
        assert_eq!(
            exact,
            CountResult {
                count: 5,
                more: false,
                last_key: None
            }
        );
        let partial = state.count(Vec::new(), None, 3).await.expect("count");
        assert_eq!(
            partial,
            CountResult {
                count: 3,
                more: true,
                last_key: Some(b"c".to_vec()),
            }
        );
        let mut resume = b"c".to_vec();
        resume.push(0);
        let rest = state.count(resume, None, 3).await.expect("count");
        assert_eq!(
            rest,
            CountResult {
                count: 2,
                more: false,
                last_key: None
            }
        );
        let bounded = state
            .count(b"b".to_vec(), Some(b"e".to_vec()), 100)
            .await
            .expect("count");
        assert_eq!(bounded.count, 3);
        let bounded_partial = state
            .count(b"b".to_vec(), Some(b"e".to_vec()), 2)
            .await
            .expect("count");
        assert_eq!(bounded_partial.last_key, Some(b"c".to_vec()));
        assert!(bounded_partial.more);
    }

    /// A delete-range removes the first `limit` keys of its range per entry and reports
    /// whether keys remain; a retried request id returns the first outcome without deleting
    /// again, also after a restart.
    #[tokio::test]
    async fn delete_range_chunks_dedup_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (engine, state, mut sm) = five_keys(dir.path()).await;
            let first = apply_delete_range(&mut sm, delete_range(6, b"a", Some(b"e"), 2, 20)).await;
            assert_eq!(
                first,
                DeleteRangeResult {
                    deleted: 2,
                    last_deleted: Some(b"b".to_vec()),
                    more: true,
                }
            );
            let second = apply_delete_range(&mut sm, delete_range(7, b"a", Some(b"e"), 2, 21)).await;
            assert_eq!(
                second,
                DeleteRangeResult {
                    deleted: 2,
                    last_deleted: Some(b"d".to_vec()),
                    more: false,
                },
                "the chunk ends exactly at the end of the range"
            );
            let empty = apply_delete_range(&mut sm, delete_range(8, b"a", Some(b"e"), 2, 22)).await;
            assert_eq!(empty, DeleteRangeResult::default());
            let remaining = state.scan(scan_options(b"", None, 10)).await.expect("scan");
            assert_eq!(keys(&remaining), vec![&b"e"[..]]);

            // `a` is written again; a retry of the first delete-range must not delete it.
            sm.apply(vec![put(9, b"a", b"again", 30)]).await.expect("apply");
            let retry = apply_delete_range(&mut sm, delete_range(10, b"a", Some(b"e"), 2, 20)).await;
            assert_eq!(retry, first);
            assert_eq!(state.get(b"a").await.expect("get").map(|v| v.version), Some(9));
            engine.flush().expect("flush");
        }
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let retry = apply_delete_range(&mut sm, delete_range(11, b"", None, 100, 21)).await;
        assert_eq!(
            retry.last_deleted,
            Some(b"d".to_vec()),
            "first outcome after a restart"
        );
        assert_eq!(state.data_len().expect("len"), 2);
        let rest = apply_delete_range(&mut sm, delete_range(12, b"", None, 100, 23)).await;
        assert_eq!(
            rest,
            DeleteRangeResult {
                deleted: 2,
                last_deleted: Some(b"e".to_vec()),
                more: false,
            }
        );
        assert_eq!(state.data_len().expect("len"), 0);
    }

    /// Delete-range de-duplication records expire with the window like write records.
    #[tokio::test]
    async fn delete_range_dedup_records_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state, mut sm) = five_keys(dir.path()).await;
        apply_delete_range(&mut sm, delete_range(6, b"", None, 1, 20)).await;
        let tree = state.tree();
        assert!(tree.get(&range_dedup_key(&[20; 16])).expect("get").is_some());
        let mut later = delete_range(7, b"x", None, 1, 21);
        if let EntryPayload::Normal(Command::DeleteRange(command)) = &mut later.payload {
            // Past the window of every record so far (issued at 1_000, window 60_000).
            command.issued_at_ms = 1_000 + 60_000 + 1;
        }
        apply_delete_range(&mut sm, later).await;
        assert!(tree.get(&range_dedup_key(&[20; 16])).expect("get").is_none());
        assert!(
            tree.get(&dedup_key(&[1; 16])).expect("get").is_none(),
            "write records too"
        );
        let (start, end) = prefix_bounds(&[RANGE_EXPIRY_PREFIX]);
        assert_eq!(
            tree.range(start, end).count(),
            1,
            "only the newest expiry entry is left"
        );
        // The expired id deletes again.
        let again = apply_delete_range(&mut sm, delete_range(8, b"", None, 1, 20)).await;
        assert_eq!(again.last_deleted, Some(b"b".to_vec()));
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
        let (_engine, target) = open(target_dir.path());
        let mut target_sm = StateMachine::new(target.clone());
        target_sm
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .expect("install");
        assert_eq!(target.data_len().expect("len"), 3);
        let retry = apply_delete_range(&mut target_sm, delete_range(7, b"b", None, 2, 20)).await;
        assert_eq!(retry, first);
        assert_eq!(target.data_len().expect("len"), 3);
    }
}
