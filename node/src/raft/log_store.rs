//! The durable Raft log of one group: entries, vote, committed and purged ids in one tree.
//!
//! Layout (tree `<group>.log`): `e` + index (big-endian u64) → entry; `v` → vote;
//! `c` → committed log id; `p` → last purged log id. Appends are acknowledged through the
//! group-commit [`Flusher`] only after an fsync covers them; the vote is flushed before
//! `save_vote` returns.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, RaftLogReader};
use tokio::sync::watch;

use super::flusher::Flusher;
use super::types::{Entry, LogId, RaftStorageError, TypeConfig, Vote};
use super::{decode, encode, storage_err};
use crate::storage::{Batch, EngineRef, StorageError, TreeRef};

const ENTRY_PREFIX: u8 = b'e';
const VOTE_KEY: &[u8] = b"v";
const COMMITTED_KEY: &[u8] = b"c";
const PURGED_KEY: &[u8] = b"p";

fn entry_key(index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(ENTRY_PREFIX);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// The log store of one group. Clones share the same tree.
#[derive(Clone)]
pub struct LogStore {
    tree: TreeRef,
    flusher: Flusher,
    /// Purge requests from openraft, carried out by the group's purger task.
    purge_tx: std::sync::Arc<watch::Sender<Option<LogId>>>,
    /// Most bytes of entries returned for one replication RPC (at least one entry).
    max_batch_bytes: usize,
}

impl LogStore {
    /// Opens the log; also returns the purge requests the group's purger must carry out
    /// (with [`LogStore::purge_now`]).
    pub fn open(
        engine: EngineRef,
        tree_name: &str,
        flusher: Flusher,
        max_batch_bytes: usize,
    ) -> Result<(LogStore, watch::Receiver<Option<LogId>>), StorageError> {
        let tree = engine.open_tree(tree_name)?;
        let (purge_tx, purge_rx) = watch::channel(None);
        let store = LogStore {
            tree,
            flusher,
            purge_tx: std::sync::Arc::new(purge_tx),
            max_batch_bytes,
        };
        Ok((store, purge_rx))
    }

    /// Deletes entries up to `log_id`: first flushes (so state applied up to there is
    /// durable), records the purge point, then deletes ascending (no holes on a crash).
    pub async fn purge_now(&self, log_id: LogId) -> Result<(), StorageError> {
        self.flusher.flush().await?;
        self.tree.insert(PURGED_KEY, &encode(&log_id)?)?;
        self.remove_entries(
            Bound::Included(vec![ENTRY_PREFIX]),
            Bound::Included(entry_key(log_id.index)),
            false,
        )
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.tree.get(key)? {
            Some(bytes) => Ok(Some(decode(self.tree.name(), &bytes)?)),
            None => Ok(None),
        }
    }

    fn entries_in(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Result<Vec<Entry>, StorageError> {
        let mut entries = Vec::new();
        for pair in self.tree.range(start, end) {
            let (_, bytes) = pair?;
            entries.push(decode(self.tree.name(), &bytes)?);
        }
        Ok(entries)
    }

    /// Removes entries with keys in `range` in bounded batches, ascending or (`descending`)
    /// from the end, so a crash between batches never leaves a hole in the log.
    fn remove_entries(
        &self,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        descending: bool,
    ) -> Result<(), StorageError> {
        let mut keys: Vec<Vec<u8>> = self
            .tree
            .range(start, end)
            .map(|pair| pair.map(|(key, _)| key))
            .collect::<Result<_, _>>()?;
        if descending {
            keys.reverse();
        }
        for chunk in keys.chunks(1024) {
            let mut batch = Batch::default();
            for key in chunk {
                batch.remove(key.clone());
            }
            self.tree.apply_batch(batch)?;
        }
        Ok(())
    }
}

fn to_key_bound(bound: Bound<&u64>) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(index) => Bound::Included(entry_key(*index)),
        Bound::Excluded(index) => Bound::Excluded(entry_key(*index)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn entry_range_end() -> Bound<Vec<u8>> {
    Bound::Excluded(vec![ENTRY_PREFIX + 1])
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        let start = match range.start_bound() {
            Bound::Unbounded => Bound::Included(vec![ENTRY_PREFIX]),
            bound => to_key_bound(bound),
        };
        let end = match range.end_bound() {
            Bound::Unbounded => entry_range_end(),
            bound => to_key_bound(bound),
        };
        self.entries_in(start, end)
            .map_err(|err| storage_err(ErrorSubject::Logs, ErrorVerb::Read, err))
    }

    /// Entries `start..end`, cut at a byte budget so one replication RPC fits in a gRPC
    /// message (always at least one entry).
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        let read = || -> Result<Vec<Entry>, StorageError> {
            let mut entries = Vec::new();
            let mut bytes = 0usize;
            for pair in self
                .tree
                .range(Bound::Included(entry_key(start)), Bound::Excluded(entry_key(end)))
            {
                let (_, value) = pair?;
                bytes += value.len();
                if !entries.is_empty() && bytes > self.max_batch_bytes {
                    break;
                }
                entries.push(decode(self.tree.name(), &value)?);
            }
            Ok(entries)
        };
        read().map_err(|err| storage_err(ErrorSubject::Logs, ErrorVerb::Read, err))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let read = || -> Result<LogState<TypeConfig>, StorageError> {
            let last_purged_log_id: Option<LogId> = self.read_meta(PURGED_KEY)?;
            let last = self
                .tree
                .last_in(Bound::Included(vec![ENTRY_PREFIX]), entry_range_end())?;
            let last_entry = match last {
                Some((_, bytes)) => {
                    let entry: Entry = decode(self.tree.name(), &bytes)?;
                    Some(entry.log_id)
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
            self.tree.insert(VOTE_KEY, &encode(vote)?)?;
            self.flusher.flush().await
        };
        write
            .await
            .map_err(|err| storage_err(ErrorSubject::Vote, ErrorVerb::Write, err))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, RaftStorageError> {
        self.read_meta(VOTE_KEY)
            .map_err(|err| storage_err(ErrorSubject::Vote, ErrorVerb::Read, err))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        // Not flushed: after a crash the committed id is recomputed from a quorum.
        let write = || -> Result<(), StorageError> {
            self.tree.insert(COMMITTED_KEY, &encode(&committed)?)?;
            Ok(())
        };
        write().map_err(|err| storage_err(ErrorSubject::Store, ErrorVerb::Write, err))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, RaftStorageError> {
        let read = || -> Result<Option<LogId>, StorageError> {
            Ok(self.read_meta::<Option<LogId>>(COMMITTED_KEY)?.flatten())
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
        let write = || -> Result<(), StorageError> {
            let mut batch = Batch::default();
            for entry in entries {
                batch.insert(entry_key(entry.log_id.index), encode(&entry)?);
            }
            self.tree.apply_batch(batch)
        };
        write().map_err(|err| storage_err(ErrorSubject::Logs, ErrorVerb::Write, err))?;
        // Acknowledged by the group-commit flusher after the covering fsync.
        self.flusher.flush_log(callback).await;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        self.remove_entries(Bound::Included(entry_key(log_id.index)), entry_range_end(), true)
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
