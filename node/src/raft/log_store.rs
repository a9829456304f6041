//! The durable Raft log of one group, kept in the node's shared write-ahead log
//! ([`ringkv_wal::Wal`], one stream of segments for every group).
//!
//! Entries are postcard-encoded [`Entry`]s at their log index; the group's small values are `VOTE`,
//! `COMMITTED` and `PURGED` (postcard too). Appends are acknowledged through the group-commit
//! [`Flusher`] only after an fdatasync covers them; the vote is synced before `save_vote` returns.
//! Entries are purged only after the state machine covering them is durable (sled flushed first).
//!
//! Logs of data directories written before the WAL (a `<group>.log` tree in sled: `e` +
//! index → entry, `v` vote, `c` committed, `p` purged, the same encodings) are moved into
//! the WAL when the node opens ([`migrate_legacy_logs`]).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, RaftLogReader};
use ringkv_wal::Wal;
use tokio::sync::watch;
use tracing::info;

use super::catch_up::CatchUp;
use super::flusher::{self, Flusher};
use super::types::{Entry, GroupId, LogId, RaftStorageError, TypeConfig, Vote};
use super::{decode, encode, storage_err};
use crate::storage::{EngineRef, StorageError};

/// The group's vote.
const VOTE: u8 = b'v';
/// The last committed log id (not synced: recomputed from a quorum after a crash).
const COMMITTED: u8 = b'c';
/// The last purged log id.
const PURGED: u8 = b'p';

/// What a replica had promised when its data was dropped: its vote and the last log id it
/// held. Raft's safety rests on a voter never forgetting either; a replica re-created here
/// under the same node id starts from them (see `group.rs`: its vote is restored, and it
/// grants no vote to a candidate whose log is behind `last_log_id`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tombstone {
    pub vote: Option<Vote>,
    pub last_log_id: Option<LogId>,
}

impl Tombstone {
    /// The later of two tombstones' promises (a group deleted twice keeps both).
    pub fn merge(self, other: Tombstone) -> Tombstone {
        let vote = match (self.vote, other.vote) {
            (Some(a), Some(b)) => Some(if b.leader_id().term > a.leader_id().term {
                b
            } else {
                a
            }),
            (a, b) => a.or(b),
        };
        Tombstone {
            vote,
            last_log_id: self.last_log_id.max(other.last_log_id),
        }
    }

    /// Why this replica must refuse a vote request from a candidate with `vote` and
    /// `last_log_id`; `None` when the tombstone does not forbid it.
    pub fn refuses(&self, vote: &Vote, last_log_id: Option<LogId>) -> Option<String> {
        if let Some(promised) = &self.vote {
            if vote.leader_id().term < promised.leader_id().term
                || (vote.leader_id().term == promised.leader_id().term
                    && vote.leader_id() != promised.leader_id())
            {
                return Some(format!(
                    "this replica was re-created after voting {promised}; it grants no vote at {vote}"
                ));
            }
        }
        if last_log_id < self.last_log_id {
            return Some(format!(
                "this replica was re-created after holding the log up to {:?}; the candidate's log ends at {last_log_id:?}",
                self.last_log_id
            ));
        }
        None
    }
}

/// The vote `group`'s log holds now: the latest vote this replica saved (openraft saves a
/// vote before it answers anyone with it).
pub fn saved_vote(wal: &Wal, group: GroupId) -> Result<Option<Vote>, StorageError> {
    let name = format!("{}.log", group.name());
    wal.meta(wal_group(group), VOTE)
        .map(|bytes| decode(&name, &bytes))
        .transpose()
}

/// The vote and last log id `group`'s log holds now (for a [`Tombstone`]).
pub fn tombstone(wal: &Wal, group: GroupId) -> Result<Tombstone, StorageError> {
    let id = wal_group(group);
    let name = format!("{}.log", group.name());
    let meta = |key: u8| -> Result<Option<Vec<u8>>, StorageError> { Ok(wal.meta(id, key)) };
    let vote = saved_vote(wal, group)?;
    let purged: Option<LogId> = meta(PURGED)?.map(|bytes| decode(&name, &bytes)).transpose()?;
    let last_entry = match wal.bounds(id) {
        Some((_, last)) => {
            let records = wal.read(id, Bound::Included(last), Bound::Included(last), usize::MAX)?;
            match records.last() {
                Some((_, bytes)) => Some(decode::<Entry>(&name, bytes)?.log_id),
                None => None,
            }
        }
        None => None,
    };
    Ok(Tombstone {
        vote,
        last_log_id: last_entry.max(purged),
    })
}

/// Restores the vote of a replica re-created after `tombstone`: a fresh log has none, and
/// without it the replica could vote twice in a term it voted in before. Returns whether a
/// vote was written (then synced before the group starts). Waits for the WAL's writer
/// thread without blocking the caller's runtime worker: a slow disk's sync must not stall
/// the other tasks of the node opening its groups.
pub async fn restore_vote(wal: &Wal, group: GroupId, tombstone: &Tombstone) -> Result<bool, StorageError> {
    let id = wal_group(group);
    match (&tombstone.vote, wal.meta(id, VOTE)) {
        (Some(vote), None) => {
            wal.set_meta_async(id, VOTE, &encode(vote)?).await?;
            flusher::synced(wal).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// The log store of one group. Clones share the same log.
#[derive(Clone)]
pub struct LogStore {
    wal: Wal,
    /// The group's id in the WAL.
    group: u64,
    /// For messages: `<group>.log`.
    name: String,
    flusher: Flusher,
    /// The state machines' engine, flushed before entries are purged.
    engine: EngineRef,
    /// Purge requests from openraft, carried out by the group's purger task.
    purge_tx: std::sync::Arc<watch::Sender<Option<LogId>>>,
    /// Most bytes of entries returned for one replication RPC (at least one entry).
    max_batch_bytes: usize,
    /// Paces replication reads of committed entries (followers catching up).
    catch_up: CatchUp,
}

/// The id of `group`'s log in the WAL.
pub fn wal_group(group: GroupId) -> u64 {
    match group {
        GroupId::System => u64::MAX,
        GroupId::Shard(shard) => u64::from(shard),
    }
}

impl LogStore {
    /// Opens `group`'s log; also returns the purge requests the group's purger must carry
    /// out (with [`LogStore::purge_now`]).
    pub fn open(
        wal: Wal,
        group: GroupId,
        engine: EngineRef,
        flusher: Flusher,
        max_batch_bytes: usize,
        catch_up: CatchUp,
    ) -> (LogStore, watch::Receiver<Option<LogId>>) {
        let (purge_tx, purge_rx) = watch::channel(None);
        let store = LogStore {
            wal,
            group: wal_group(group),
            name: format!("{}.log", group.name()),
            flusher,
            engine,
            purge_tx: std::sync::Arc::new(purge_tx),
            max_batch_bytes,
            catch_up,
        };
        (store, purge_rx)
    }

    /// Deletes entries up to `log_id`: first makes the state machine (applied up to there)
    /// durable, records the purge point, then purges and collects freed segments.
    pub async fn purge_now(&self, log_id: LogId) -> Result<(), StorageError> {
        let engine = self.engine.clone();
        blocking(move || engine.flush()).await?;
        self.wal
            .set_meta_async(self.group, PURGED, &encode(&log_id)?)
            .await?;
        self.wal.purge_async(self.group, log_id.index).await?;
        let wal = self.wal.clone();
        blocking(move || wal.collect_garbage().map(drop).map_err(StorageError::from)).await
    }

    /// Before entries starting at `first` are appended after a gap (a follower that installed
    /// a snapshot ahead of its log appends the entries after the snapshot), carries out at once
    /// the purge openraft asked for up to the snapshot. The purger would do it later; a crash
    /// before it did would leave the old entries, a hole, then the new ones, and the group
    /// could not start again (openraft reads the log from the old purge point on). The purge
    /// record goes into the WAL before the new entries, so any durable prefix that holds them
    /// holds it too.
    async fn close_gap_before(&self, first: u64) -> Result<(), StorageError> {
        let last_entry = self.wal.bounds(self.group).map(|(_, last)| last);
        // The common case (every append but the first after a snapshot) decides here, without
        // reading the purge point.
        if last_entry.is_some_and(|last| first <= last + 1) {
            return Ok(());
        }
        let purged = self.read_meta::<LogId>(PURGED)?.map(|log_id| log_id.index);
        let end = last_entry.max(purged).unwrap_or(0);
        if first <= end + 1 {
            return Ok(());
        }
        let pending = *self.purge_tx.borrow();
        match pending {
            Some(snapshot) if snapshot.index + 1 == first => self.purge_now(snapshot).await,
            // Not a gap openraft leaves after a snapshot: appending would leave a log with a
            // hole nobody can start from. Refuse (the group stops, visibly) instead.
            _ => Err(StorageError::Corrupt {
                tree: self.name.clone(),
                detail: format!(
                    "entries from {first} would follow a log that ends at {end}, with no purge up to them"
                ),
            }),
        }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: u8) -> Result<Option<T>, StorageError> {
        match self.wal.meta(self.group, key) {
            Some(bytes) => Ok(Some(decode(&self.name, &bytes)?)),
            None => Ok(None),
        }
    }

    fn entries_in(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.entries_and_bytes_in(start, end, max_bytes)?.0)
    }

    /// Like [`LogStore::entries_in`], also returning the entries' encoded size. Entries
    /// that start above `start` where nothing was purged are an error, never a shifted batch
    /// (a caller would take them for the ones it asked for).
    fn entries_and_bytes_in(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
        max_bytes: usize,
    ) -> Result<(Vec<Entry>, usize), StorageError> {
        let records = self.wal.read(self.group, start, end, max_bytes)?;
        if let (Bound::Included(wanted), Some((first, _))) = (start, records.first()) {
            let purged = || {
                self.read_meta::<LogId>(PURGED)
                    .map(|purged| purged.map(|log_id| log_id.index))
            };
            if *first > wanted && purged()?.is_none_or(|purged| purged + 1 < *first) {
                return Err(StorageError::Corrupt {
                    tree: self.name.clone(),
                    detail: format!(
                        "log entries from {wanted} asked for; the log has them only from {first}, with no purge up to them"
                    ),
                });
            }
        }
        let bytes = records.iter().map(|(_, bytes)| bytes.len()).sum();
        let entries = records
            .into_iter()
            .map(|(_, bytes)| decode(&self.name, &bytes))
            .collect::<Result<_, _>>()?;
        Ok((entries, bytes))
    }
}

/// Runs blocking storage work off the async workers.
async fn blocking(
    work: impl FnOnce() -> Result<(), StorageError> + Send + 'static,
) -> Result<(), StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| StorageError::Engine(format!("storage task failed: {err}")))?
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        self.entries_in(
            range.start_bound().cloned(),
            range.end_bound().cloned(),
            usize::MAX,
        )
        .map_err(|err| storage_err(ErrorSubject::Logs, ErrorVerb::Read, err))
    }

    /// Replication reads: one gRPC message at most, committed entries paced (`CatchUp::read_limit`).
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        let limit = self.catch_up.read_limit(start, self.max_batch_bytes).await;
        let (entries, bytes) = self
            .entries_and_bytes_in(Bound::Included(start), Bound::Excluded(end), limit)
            .map_err(|err| storage_err(ErrorSubject::Logs, ErrorVerb::Read, err))?;
        if let Some(last) = entries.last().map(|entry| entry.log_id.index) {
            let cut = limit < self.max_batch_bytes && last.saturating_add(1) < end; // entries left
            self.catch_up.pace_read(last, bytes, cut).await;
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let read = || -> Result<LogState<TypeConfig>, StorageError> {
            let last_purged_log_id: Option<LogId> = self.read_meta(PURGED)?;
            let last_entry = match self.wal.bounds(self.group) {
                Some((_, last)) => {
                    let entries =
                        self.entries_in(Bound::Included(last), Bound::Included(last), usize::MAX)?;
                    entries.last().map(|entry| entry.log_id)
                }
                None => None,
            };
            // A crash during a purge may leave no entry above the purge point.
            let last_log_id = std::cmp::max(last_entry, last_purged_log_id);
            Ok(LogState {
                last_purged_log_id,
                last_log_id,
            })
        };
        read().map_err(|err| storage_err(ErrorSubject::Logs, ErrorVerb::Read, err))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), RaftStorageError> {
        let write = async {
            self.wal.set_meta_async(self.group, VOTE, &encode(vote)?).await?;
            self.flusher.flush().await
        };
        write
            .await
            .map_err(|err| storage_err(ErrorSubject::Vote, ErrorVerb::Write, err))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, RaftStorageError> {
        self.read_meta(VOTE)
            .map_err(|err| storage_err(ErrorSubject::Vote, ErrorVerb::Read, err))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        // Not synced, and not for every commit (`CatchUp::set_committed` says why).
        if !self.catch_up.set_committed(committed.map(|log_id| log_id.index)) {
            return Ok(());
        }
        let write = async {
            self.wal
                .set_meta_async(self.group, COMMITTED, &encode(&committed)?)
                .await?;
            Ok::<(), StorageError>(())
        };
        write
            .await
            .map_err(|err| storage_err(ErrorSubject::Store, ErrorVerb::Write, err))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, RaftStorageError> {
        let read = || -> Result<Option<LogId>, StorageError> {
            Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
        };
        read().map_err(|err| storage_err(ErrorSubject::Store, ErrorVerb::Read, err))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut entries = entries.into_iter().peekable();
        if let Some(first) = entries.peek() {
            self.close_gap_before(first.log_id.index)
                .await
                .map_err(|err| storage_err(ErrorSubject::Logs, ErrorVerb::Write, err))?;
        }
        let write = async {
            // openraft appends consecutive entries; write each run of them as one record.
            // A full WAL queue (a slow disk) makes this wait without parking the worker.
            let mut runs: Vec<(u64, Vec<Vec<u8>>)> = Vec::new();
            for entry in entries {
                let index = entry.log_id.index;
                let encoded = encode(&entry)?;
                match runs.last_mut() {
                    Some((first, run)) if index == *first + run.len() as u64 => run.push(encoded),
                    _ => runs.push((index, vec![encoded])),
                }
            }
            for (first, run) in &runs {
                self.wal.append_async(self.group, *first, run).await?;
            }
            Ok::<(), StorageError>(())
        };
        write
            .await
            .map_err(|err| storage_err(ErrorSubject::Logs, ErrorVerb::Write, err))?;
        // Acknowledged by the WAL's writer thread after the covering fdatasync.
        self.flusher.flush_log(callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        self.wal
            .truncate_async(self.group, log_id.index)
            .await
            .map_err(|err| storage_err(ErrorSubject::Logs, ErrorVerb::Delete, err))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        // Deferred to the group's purger: it deletes once applied state covers `log_id`.
        self.purge_tx.send_if_modified(|pending| {
            let newer = pending.is_none_or(|pending| pending.index < log_id.index);
            if newer {
                *pending = Some(log_id);
            }
            newer
        });
        Ok(())
    }
}

/// The group whose log a legacy tree named `name` holds.
fn legacy_group(name: &str) -> Option<GroupId> {
    let group = name.strip_suffix(".log")?;
    if group == GroupId::System.name() {
        return Some(GroupId::System);
    }
    group.strip_prefix("shard-")?.parse().ok().map(GroupId::Shard)
}

/// Moves logs kept in sled trees (data directories written before the WAL) into `wal`:
/// copies entries and values, syncs the WAL, then drops the tree. A crash midway repeats
/// the copy of a group the WAL does not hold yet and only drops the tree of one it does.
pub fn migrate_legacy_logs(engine: &EngineRef, wal: &Wal) -> Result<(), StorageError> {
    let legacy: Vec<(String, GroupId)> = engine
        .tree_names()?
        .into_iter()
        .filter_map(|name| legacy_group(&name).map(|group| (name, group)))
        .collect();
    if legacy.is_empty() {
        return Ok(());
    }
    let held = wal.groups();
    for (name, group) in &legacy {
        let id = wal_group(*group);
        if held.contains(&id) {
            continue;
        }
        let tree = engine.open_tree(name)?;
        let mut entries = 0usize;
        for pair in tree.range(Bound::Unbounded, Bound::Unbounded) {
            let (key, value) = pair?;
            match key.as_slice() {
                [b'e', index @ ..] => {
                    let index: [u8; 8] = index.try_into().map_err(|_| StorageError::Corrupt {
                        tree: name.clone(),
                        detail: "entry key is not an index".to_string(),
                    })?;
                    wal.append(id, u64::from_be_bytes(index), &[value])?;
                    entries += 1;
                }
                [key @ (b'v' | b'c' | b'p')] => wal.set_meta(id, *key, &value)?,
                _ => {}
            }
        }
        info!(group = %group, entries, "moved a raft log from sled into the write-ahead log");
    }
    wal.sync()?;
    for (name, _) in &legacy {
        engine.drop_tree(name)?;
    }
    engine.flush()
}

#[cfg(test)]
mod tests {
    use openraft::Vote as RaftVote;

    use super::*;
    use crate::raft::state_machine::test_support::{log_id, put};
    use crate::storage::{self, Batch};

    /// A replica re-created after a deletion grants no vote its predecessor could not have:
    /// none at a lower term or to another candidate of the term it voted in, none to a
    /// candidate whose log is behind the one it held (the fork a jepsen run found: a
    /// re-created, empty voter elected a restarted node with a stale log).
    #[test]
    fn tombstones_refuse_what_the_deleted_replica_could_not_grant() {
        let tombstone = Tombstone {
            vote: Some(RaftVote::new_committed(30, 5)),
            last_log_id: Some(log_id(30, 25_614)),
        };
        let stale = RaftVote::new(31, 2);
        assert!(
            tombstone.refuses(&stale, Some(log_id(28, 24_917))).is_some(),
            "stale log"
        );
        assert!(tombstone.refuses(&stale, Some(log_id(31, 25_700))).is_none());
        assert!(
            tombstone
                .refuses(&RaftVote::new(29, 2), Some(log_id(31, 30_000)))
                .is_some(),
            "older term"
        );
        assert!(
            tombstone
                .refuses(&RaftVote::new(30, 3), Some(log_id(31, 30_000)))
                .is_some(),
            "another candidate of the term"
        );
        assert!(tombstone
            .refuses(&RaftVote::new(30, 5), Some(log_id(30, 25_614)))
            .is_none());
        assert!(Tombstone::default().refuses(&stale, None).is_none());
        let older = Tombstone {
            vote: Some(RaftVote::new(12, 1)),
            last_log_id: Some(log_id(12, 900)),
        };
        assert_eq!(older.merge(tombstone), tombstone);
        assert_eq!(tombstone.merge(older), tombstone);
    }

    /// A deleted group's tombstone holds its vote and last log id; a fresh log under the
    /// same group gets the vote back.
    #[tokio::test]
    async fn a_re_created_log_gets_its_predecessors_vote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = open_wal(dir.path());
        let group = GroupId::Shard(3);
        let vote = RaftVote::new_committed(7, 2);
        wal.set_meta(wal_group(group), VOTE, &encode(&vote).expect("encode"))
            .expect("vote");
        let entry = put(12, b"k", b"v", 1);
        wal.append(wal_group(group), 12, &[encode(&entry).expect("encode")])
            .expect("append");
        let dropped = tombstone(&wal, group).expect("tombstone");
        assert_eq!(dropped.vote, Some(vote));
        assert_eq!(dropped.last_log_id, Some(entry.log_id));
        wal.drop_group(wal_group(group)).expect("drop");
        assert!(restore_vote(&wal, group, &dropped).await.expect("restore"));
        assert_eq!(tombstone(&wal, group).expect("tombstone").vote, Some(vote));
        assert!(
            !restore_vote(&wal, group, &dropped).await.expect("restore"),
            "a stored vote stays"
        );
    }

    fn open_wal(dir: &std::path::Path) -> Wal {
        Wal::open(&dir.join("wal"), ringkv_wal::WalOptions::default())
            .expect("wal")
            .0
    }

    fn unpaced() -> CatchUp {
        CatchUp::new(None, std::time::Duration::ZERO)
    }

    /// Entries, vote and purge point come back after a reopen; truncation and purge remove
    /// exactly what they name; purge makes the state machine's engine durable first.
    #[tokio::test]
    async fn log_round_trip_through_the_wal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = storage::open(&dir.path().join("db")).expect("engine");
        let group = GroupId::Shard(3);
        {
            let wal = open_wal(dir.path());
            let flusher = Flusher::new(wal.clone(), false);
            let (mut store, _purges) =
                LogStore::open(wal.clone(), group, engine.clone(), flusher, 1 << 20, unpaced());
            let encoded: Vec<Vec<u8>> = (1..=5)
                .map(|i| encode(&put(i, b"k", b"v", i as u8)).expect("encode"))
                .collect();
            wal.append(wal_group(group), 1, &encoded).expect("append");
            let vote = RaftVote::new(2, 1);
            store.save_vote(&vote).await.expect("vote");
            store.truncate(log_id(2, 5)).await.expect("truncate");
            store.purge_now(log_id(2, 2)).await.expect("purge");
            wal.close().expect("close");
        }
        let wal = open_wal(dir.path());
        let flusher = Flusher::new(wal.clone(), false);
        let (mut store, _purges) = LogStore::open(wal, group, engine, flusher, 1 << 20, unpaced());
        assert_eq!(store.read_vote().await.expect("vote"), Some(RaftVote::new(2, 1)));
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 2)));
        assert_eq!(state.last_log_id, Some(log_id(2, 4)));
        let entries = store.try_get_log_entries(0..100).await.expect("entries");
        let indexes: Vec<u64> = entries.iter().map(|entry| entry.log_id.index).collect();
        assert_eq!(indexes, vec![3, 4]);
        assert_eq!(entries[0], put(3, b"k", b"v", 3));
        let limited = store.limited_get_log_entries(3, 5).await.expect("limited");
        assert_eq!(limited.len(), 2);
    }

    /// The committed log id openraft saves reaches the group's handle the metrics read
    /// (`ringkv_raft_commit_index`): the handle given to the log store, not a copy.
    #[tokio::test]
    async fn saved_committed_index_reaches_the_groups_handle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = storage::open(&dir.path().join("db")).expect("engine");
        let wal = open_wal(dir.path());
        let flusher = Flusher::new(wal.clone(), false);
        let handle = unpaced();
        let (mut store, _purges) =
            LogStore::open(wal, GroupId::Shard(5), engine, flusher, 1 << 20, handle.clone());
        assert_eq!(handle.committed_index(), None);
        store.save_committed(Some(log_id(2, 17))).await.expect("save");
        assert_eq!(handle.committed_index(), Some(17));
        store.save_committed(Some(log_id(2, 0))).await.expect("save");
        assert_eq!(handle.committed_index(), Some(17), "never goes back");
        assert_eq!(
            store.read_committed().await.expect("read"),
            Some(log_id(2, 17)),
            "a save within COMMITTED_SAVE_INTERVAL of the last one is not written"
        );
    }

    /// A log whose entries start above what was purged (a hole) answers a read from below
    /// them with an error, never with the entries above the hole in place of those asked
    /// for; a read from a purged index still gets what follows the purge.
    #[tokio::test]
    async fn a_hole_is_an_error_not_a_shifted_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = storage::open(&dir.path().join("db")).expect("engine");
        let group = GroupId::Shard(4);
        let wal = open_wal(dir.path());
        let flusher = Flusher::new(wal.clone(), false);
        let (mut store, _purges) = LogStore::open(wal.clone(), group, engine, flusher, 1 << 20, unpaced());
        let encoded: Vec<Vec<u8>> = (9000..9003)
            .map(|i| encode(&put(i, b"k", b"v", i as u8)).expect("encode"))
            .collect();
        wal.append(wal_group(group), 9000, &encoded).expect("append");
        assert!(store.limited_get_log_entries(0, 9003).await.is_err());
        assert!(store.try_get_log_entries(5..9003).await.is_err());
        assert_eq!(
            store
                .limited_get_log_entries(9001, 9003)
                .await
                .expect("read")
                .len(),
            2
        );
        store.purge_now(log_id(2, 8999)).await.expect("purge");
        assert_eq!(
            store
                .limited_get_log_entries(0, 9003)
                .await
                .expect("after the purge")
                .len(),
            3
        );
    }

    /// A follower that installed a snapshot (openraft asked to purge up to it; the purger has
    /// not run) appends the entries after it: the purge is recorded first, so a crash right
    /// after leaves a log without a hole (issue 14: old entries, a gap, new entries, and a
    /// group that cannot start).
    #[tokio::test]
    async fn appending_after_a_snapshot_leaves_no_hole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = storage::open(&dir.path().join("db")).expect("engine");
        let group = GroupId::Shard(4);
        let encoded = |range: std::ops::RangeInclusive<u64>| -> Vec<Vec<u8>> {
            range
                .map(|i| encode(&put(i, b"k", b"v", i as u8)).expect("encode"))
                .collect()
        };
        {
            let wal = open_wal(dir.path());
            let flusher = Flusher::new(wal.clone(), false);
            let (mut store, _purges) =
                LogStore::open(wal.clone(), group, engine.clone(), flusher, 1 << 20, unpaced());
            wal.append(wal_group(group), 1, &encoded(1..=5)).expect("append");
            // The snapshot covers 1..=20; openraft asks for the purge, the purger is slow.
            store.purge(log_id(2, 20)).await.expect("purge request");
            store.close_gap_before(21).await.expect("close the gap");
            wal.append(wal_group(group), 21, &encoded(21..=23))
                .expect("append");
            wal.sync().expect("sync");
            // The crash: nothing else runs.
            wal.close().expect("close");
        }
        let wal = open_wal(dir.path());
        let flusher = Flusher::new(wal.clone(), false);
        let (mut store, _purges) = LogStore::open(wal, group, engine, flusher, 1 << 20, unpaced());
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 20)));
        assert_eq!(state.last_log_id, Some(log_id(2, 23)));
        let entries = store.try_get_log_entries(21..24).await.expect("entries");
        assert_eq!(entries.len(), 3, "no hole after the purge point");
        // Appending right after the log's end needs nothing.
        store.close_gap_before(24).await.expect("contiguous");
    }

    /// The same crash through the path openraft takes: the follower's store is asked to
    /// purge up to the installed snapshot (deferred: no purger runs here), then `append`s
    /// the entries after it, and the node dies before the purger records anything. The
    /// reopened log has no hole, and openraft's start-up (`get_initial_state`, which reads
    /// every log id from the purge point on) succeeds. Without the purge `append` carries
    /// out first, the log would be 1..=5, a hole, 21..=23 with no purge point, and the start
    /// would fail on the missing entries (issue 14, defect 2).
    #[tokio::test]
    async fn a_crash_after_appending_past_a_snapshot_leaves_a_group_that_opens() {
        use openraft::storage::{RaftLogStorageExt, StorageHelper};

        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, state) = crate::raft::state_machine::test_support::open(dir.path());
        let group = GroupId::Shard(0);
        {
            let wal = open_wal(dir.path());
            let flusher = Flusher::new(wal.clone(), false);
            let (mut store, _purges) =
                LogStore::open(wal.clone(), group, engine.clone(), flusher, 1 << 20, unpaced());
            store
                .blocking_append((1..=5).map(|i| put(i, b"k", b"v", i as u8)))
                .await
                .expect("append 1..=5");
            // The snapshot covers 1..=20: openraft asks for the purge, the purger is slow.
            store.purge(log_id(2, 20)).await.expect("purge request");
            store
                .blocking_append((21..=23).map(|i| put(i, b"k", b"v", i as u8)))
                .await
                .expect("append after the snapshot");
            // The crash: the appends are durable (acknowledged), nothing else runs.
            drop(store);
            wal.close().expect("close");
        }
        let wal = open_wal(dir.path());
        let flusher = Flusher::new(wal.clone(), false);
        let (mut store, _purges) = LogStore::open(wal, group, engine, flusher, 1 << 20, unpaced());
        let log = store.get_log_state().await.expect("log state");
        assert_eq!(log.last_purged_log_id, Some(log_id(2, 20)));
        assert_eq!(log.last_log_id, Some(log_id(2, 23)));
        let entries = store.try_get_log_entries(21..24).await.expect("entries");
        let indexes: Vec<u64> = entries.iter().map(|entry| entry.log_id.index).collect();
        assert_eq!(indexes, vec![21, 22, 23], "no hole after the purge point");
        let mut state_machine = crate::raft::state_machine::StateMachine::new(state);
        StorageHelper::new(&mut store, &mut state_machine)
            .get_initial_state()
            .await
            .expect("the group opens after the crash");
    }

    /// Entries that would follow the log's end after a gap no snapshot explains (no purge
    /// requested up to just before them) are refused with an error, and nothing is written:
    /// reads return the log as it was, never the refused entries in place of missing ones.
    #[tokio::test]
    async fn an_append_after_an_unexplained_gap_is_refused() {
        use openraft::storage::RaftLogStorageExt;

        let dir = tempfile::tempdir().expect("tempdir");
        let engine = storage::open(&dir.path().join("db")).expect("engine");
        let group = GroupId::Shard(4);
        let wal = open_wal(dir.path());
        let flusher = Flusher::new(wal.clone(), false);
        let (mut store, _purges) = LogStore::open(wal, group, engine, flusher, 1 << 20, unpaced());
        store
            .blocking_append((1..=5).map(|i| put(i, b"k", b"v", i as u8)))
            .await
            .expect("append 1..=5");
        let refused = store
            .blocking_append((21..=23).map(|i| put(i, b"k", b"v", i as u8)))
            .await
            .expect_err("no purge explains the gap");
        assert!(
            refused.to_string().contains("with no purge up to them"),
            "{refused}"
        );
        // A purge requested up to another point does not explain it either.
        store.purge(log_id(2, 15)).await.expect("purge request");
        store
            .blocking_append((21..=23).map(|i| put(i, b"k", b"v", i as u8)))
            .await
            .expect_err("a purge up to 15 does not explain entries from 21");
        let log = store.get_log_state().await.expect("log state");
        assert_eq!(log.last_log_id, Some(log_id(2, 5)), "nothing was appended");
        let entries = store.try_get_log_entries(1..24).await.expect("entries");
        let indexes: Vec<u64> = entries.iter().map(|entry| entry.log_id.index).collect();
        assert_eq!(indexes, vec![1, 2, 3, 4, 5]);
        assert!(store
            .try_get_log_entries(21..24)
            .await
            .expect("entries")
            .is_empty());
    }

    /// With the WAL's queue full (a slow disk) a log write waits for room without parking
    /// its thread: another task of the same current-thread runtime runs meanwhile (before,
    /// the write blocked the thread on a condition variable, and on a node every worker
    /// could end up parked there, stalling gRPC and leadership confirmations).
    #[tokio::test]
    async fn a_full_wal_queue_does_not_park_the_runtime() {
        use std::sync::mpsc;
        use std::time::Duration;

        let dir = tempfile::tempdir().expect("tempdir");
        let engine = storage::open(&dir.path().join("db")).expect("engine");
        let options = ringkv_wal::WalOptions {
            max_queued_bytes: 1,
            ..ringkv_wal::WalOptions::default()
        };
        let wal = Wal::open(&dir.path().join("wal"), options).expect("wal").0;
        // Hold the writer thread: it calls this waiter back, which waits until released.
        let (held_tx, held_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        wal.append(9, 1, &[b"first".to_vec()]).expect("append");
        wal.on_written(Box::new(move |_| {
            let _ = held_tx.send(());
            let _ = release_rx.recv_timeout(Duration::from_secs(60));
        }));
        held_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer is held");
        wal.append(9, 2, &[b"fills the queue".to_vec()]).expect("queued");
        // Releases the writer once the other task ran, or after 5 s without it.
        let (ran_tx, ran_rx) = mpsc::channel();
        let watchdog = std::thread::spawn(move || {
            let ran = ran_rx.recv_timeout(Duration::from_secs(5)).is_ok();
            let _ = release_tx.send(());
            ran
        });
        let flusher = Flusher::new(wal.clone(), false);
        let (mut store, _purges) = LogStore::open(
            wal.clone(),
            GroupId::Shard(3),
            engine,
            flusher,
            1 << 20,
            unpaced(),
        );
        let write = tokio::spawn(async move { store.save_committed(Some(log_id(1, 7))).await });
        // The write starts first and finds the queue full.
        tokio::task::yield_now().await;
        let other = tokio::spawn(async move {
            let _ = ran_tx.send(());
        });
        let written = tokio::time::timeout(Duration::from_secs(30), write)
            .await
            .expect("the write finishes once the writer is released")
            .expect("write task");
        assert!(written.is_ok(), "{written:?}");
        other.await.expect("other task");
        assert!(
            watchdog.join().expect("watchdog"),
            "another task ran while the write waited for room"
        );
        let committed = wal
            .meta(wal_group(GroupId::Shard(3)), COMMITTED)
            .expect("committed");
        assert_eq!(
            decode::<Option<LogId>>("test", &committed).expect("decode"),
            Some(log_id(1, 7))
        );
    }

    /// A log kept in a sled tree by an older version moves into the WAL intact, and the
    /// tree is dropped.
    #[test]
    fn legacy_sled_logs_are_migrated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = storage::open(&dir.path().join("db")).expect("engine");
        let tree = engine.open_tree("shard-7.log").expect("tree");
        let mut batch = Batch::default();
        for i in 1..=3u64 {
            let mut key = vec![b'e'];
            key.extend_from_slice(&i.to_be_bytes());
            batch.insert(key, encode(&put(i, b"k", b"v", i as u8)).expect("encode"));
        }
        batch.insert(
            b"v".to_vec(),
            encode(&RaftVote::<u64>::new(4, 2)).expect("encode"),
        );
        batch.insert(b"p".to_vec(), encode(&log_id(1, 0)).expect("encode"));
        tree.apply_batch(batch).expect("batch");
        engine
            .open_tree("sys.log")
            .expect("system tree")
            .insert(b"v", b"\x01")
            .expect("insert");
        let wal = open_wal(dir.path());
        migrate_legacy_logs(&engine, &wal).expect("migrate");
        assert!(!engine
            .tree_names()
            .expect("names")
            .iter()
            .any(|name| name.ends_with(".log")));
        assert_eq!(wal.groups(), vec![7, wal_group(GroupId::System)]);
        assert_eq!(wal.bounds(7), Some((1, 3)));
        let vote: RaftVote<u64> = decode("test", &wal.meta(7, VOTE).expect("vote")).expect("decode");
        assert_eq!(vote, RaftVote::new(4, 2));
        let entry: Entry = decode(
            "test",
            &wal.read(7, Bound::Included(2), Bound::Included(2), 1 << 20)
                .expect("read")[0]
                .1,
        )
        .expect("decode");
        assert_eq!(entry, put(2, b"k", b"v", 2));
        // Nothing left to move: a second pass is a no-op.
        migrate_legacy_logs(&engine, &wal).expect("migrate again");
        assert_eq!(wal.bounds(7), Some((1, 3)));
    }

    /// Replication reads of committed entries wait for the catch-up budget; reads that
    /// reach past the commit index (fresh entries a quorum still needs) do not.
    #[tokio::test(start_paused = true)]
    async fn replication_reads_of_committed_entries_are_paced() {
        use std::time::Duration;

        let dir = tempfile::tempdir().expect("tempdir");
        let engine = storage::open(&dir.path().join("db")).expect("engine");
        let wal = open_wal(dir.path());
        let flusher = Flusher::new(wal.clone(), false);
        let group = GroupId::Shard(3);
        // 1 MiB/s; each read is four 100 KiB entries (over the 256 KiB threshold).
        let catch_up = CatchUp::new(
            crate::raft::catch_up::Pacer::new(1 << 20),
            Duration::from_secs(60),
        );
        let (mut store, _purges) = LogStore::open(wal.clone(), group, engine, flusher, 450 << 10, catch_up);
        let value = vec![7u8; 100 << 10];
        let encoded: Vec<Vec<u8>> = (1..=12)
            .map(|i| encode(&put(i, b"k", &value, i as u8)).expect("encode"))
            .collect();
        wal.append(wal_group(group), 1, &encoded).expect("append");
        store.save_committed(Some(log_id(1, 8))).await.expect("committed");
        let timed_read = |start: u64| {
            let mut store = store.clone();
            async move {
                let began = tokio::time::Instant::now();
                let entries = store.limited_get_log_entries(start, 13).await.expect("read");
                (entries.len(), began.elapsed())
            }
        };
        let (read, waited) = timed_read(1).await;
        assert_eq!(
            (read, waited),
            (4, Duration::ZERO),
            "the first slot starts at once"
        );
        let (read, waited) = timed_read(5).await;
        assert_eq!(read, 4);
        assert!(
            waited >= Duration::from_millis(350),
            "waited {waited:?} for the first read's slot"
        );
        let (read, waited) = timed_read(9).await;
        assert_eq!((read, waited), (4, Duration::ZERO), "fresh entries never wait");
    }
}
