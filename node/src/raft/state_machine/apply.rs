//! Entry application: what each committed entry does to the state.
//!
//! Every entry's effects are computed as one [`Batch`] that also records the entry's log id
//! as applied, and written so that a crash never leaves half an entry applied (invariant 2).
//! A small batch is written as one record first (`i`, the intent), then each write on its
//! own. sled recovers a prefix of its log, so after a crash either the intent is missing
//! (nothing of the entry was applied; the log replays it) or it is there and [`redo_intent`]
//! finishes what it says, with the values computed the first time (a CAS is not
//! re-evaluated). sled's own atomic batches would do the same but roll its IO buffer twice
//! per batch, which cost a third of a node's CPU under a load of one-put entries; a batch
//! of at least [`ATOMIC_BATCH_BYTES`] is written that way all the same, since the intent
//! would write each of its values twice.
//!
//! The entry's bookkeeping — its applied log id, the commit high-water mark and the
//! de-duplication counts ([`INTENT_CARRIED_KEYS`]) — is in every entry's batch, whole (not
//! only what the entry changed), and written to its own records only by an atomic batch:
//! after an intent it stays in the intent record, since the next entry's intent (or batch)
//! carries it again. The records lag behind while entries go through
//! intents; the intent newer than the applied record is always the last entry's, and
//! [`redo_intent`] writes its bookkeeping out when the state is opened and before a
//! snapshot is dumped. Meanwhile the values live in memory (the applied watch, the
//! history's high-water mark, the de-duplication counts). This saves three of the seven
//! writes of a one-put entry.
//! Writes store versioned values (the version is the entry's log index, unique per key
//! because one entry never writes a key twice, see [`EntryVersions`]); plain writes and
//! delete-ranges, de-duplicated by request id and fingerprint, are `writes.rs`; the system
//! group's entries set or change the cluster configuration. The caller holds the apply lock
//! for writing.

use std::collections::HashMap;

use openraft::EntryPayload;
use serde::{Deserialize, Serialize, Serializer};
use tracing::warn;

use super::expiry;
use super::layout::{
    data_key, APPLIED_KEY, AUTH_KEY, CLUSTER_KEY, COUNTS_KEY, INTENT_KEY, MEMBERSHIP_KEY, TSO_LIMIT_KEY,
};
use super::mvcc::{self, Head, Superseded, HIGH_WATER_KEY};
use super::GroupState;
use crate::raft::ring_change;
use crate::raft::types::TSO_MAX_PHYSICAL_MS;
use crate::raft::types::{
    ClusterConfig, Command, CommandResult, Entry, ExpiringWrites, LogId, RingChangeOutcome,
    RingChangeRejection, StoredMembership, TtlCommand,
};
use crate::raft::{decode, encode};
use crate::storage::{Batch, StorageError, TreeRef};

/// One write of an entry's batch: a key and its new value (`None`: removed).
type Write = (Vec<u8>, Option<Vec<u8>>);

/// The writes of an intent record, encoded as a sequence of `(key, value)` pairs whose byte
/// strings go out as one slice each: the same postcard bytes as `Vec<Write>`, without a call
/// per byte (serde's default for `Vec<u8>`).
struct IntentWrites<'a>(&'a [Write]);

impl Serialize for IntentWrites<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct WriteRef<'a>(
            #[serde(with = "serde_bytes")] &'a [u8],
            #[serde(with = "serde_bytes")] Option<&'a [u8]>,
        );
        serializer.collect_seq(self.0.iter().map(|(key, value)| WriteRef(key, value.as_deref())))
    }
}

/// One write of a decoded intent record (see [`IntentWrites`]).
#[derive(Deserialize)]
struct IntentWrite(
    #[serde(with = "serde_bytes")] Vec<u8>,
    #[serde(with = "serde_bytes")] Option<Vec<u8>>,
);

/// Entries whose writes carry at least this many bytes go to sled as one atomic batch: the
/// batch's fixed cost (two IO buffer rolls) is then smaller than writing every value twice,
/// once in the intent record. Replaying a move's log (entries of many values) wrote half its
/// disk bytes into intent records.
const ATOMIC_BATCH_BYTES: usize = 4 << 10;

/// The keys of an entry's bookkeeping, written to the tree only by an atomic batch or
/// [`redo_intent`]: after an intent record, they stay in it (see the module docs).
const INTENT_CARRIED_KEYS: [&[u8]; 3] = [APPLIED_KEY, HIGH_WATER_KEY, COUNTS_KEY];

/// Writes `batch` (whose last write records `log_id` as applied) crash-atomically: a large
/// batch as one sled batch, a small one as the intent record first, then each write but
/// the bookkeeping the intent carries ([`INTENT_CARRIED_KEYS`]).
fn write_atomically(tree: &TreeRef, log_id: LogId, batch: Batch) -> Result<(), StorageError> {
    let bytes: usize = batch
        .ops
        .iter()
        .map(|(key, value)| key.len() + value.as_ref().map_or(0, Vec::len))
        .sum();
    if bytes >= ATOMIC_BATCH_BYTES {
        // An older intent record may stay behind: redo ignores intents already applied.
        return tree.apply_batch(batch);
    }
    tree.insert(INTENT_KEY, &encode(&(log_id, IntentWrites(&batch.ops)))?)?;
    let not_carried = |(key, _): &&Write| !INTENT_CARRIED_KEYS.contains(&key.as_slice());
    apply_writes_one_by_one(tree, batch.ops.iter().filter(not_carried))
}

fn apply_writes_one_by_one<'a>(
    tree: &TreeRef,
    writes: impl IntoIterator<Item = &'a Write>,
) -> Result<(), StorageError> {
    for (key, value) in writes {
        match value {
            Some(value) => tree.insert(key, value)?,
            None => tree.remove(key)?,
        }
    }
    Ok(())
}

/// Settles the intent record: when it is newer than the applied log id (`applied`, as the
/// tree records it), makes all its writes — those of an entry a crash interrupted, and the
/// bookkeeping the intent carries (the last of which records it as applied). Returns the
/// log id it settled. Idempotent: the intent newer than the applied record is the last
/// entry's.
pub(super) fn redo_intent(tree: &TreeRef, applied: Option<LogId>) -> Result<Option<LogId>, StorageError> {
    let Some(bytes) = tree.get(INTENT_KEY)? else {
        return Ok(None);
    };
    let (log_id, writes): (LogId, Vec<IntentWrite>) = decode(tree.name(), &bytes)?;
    if applied.is_some_and(|applied| applied >= log_id) {
        return Ok(None);
    }
    let writes: Vec<Write> = writes
        .into_iter()
        .map(|IntentWrite(key, value)| (key, value))
        .collect();
    apply_writes_one_by_one(tree, &writes)?;
    Ok(Some(log_id))
}

impl GroupState {
    /// Applies `entry` to `tree` as one batch and publishes the new applied log id (and
    /// cluster configuration, if it changed).
    pub(super) fn apply_entry(&self, tree: &TreeRef, entry: &Entry) -> Result<CommandResult, StorageError> {
        let mut batch = Batch::default();
        let mut versions: Option<EntryVersions> = None;
        let result = match &entry.payload {
            EntryPayload::Blank => CommandResult::None,
            EntryPayload::Membership(membership) => {
                let stored = StoredMembership::new(Some(entry.log_id), membership.clone());
                batch.insert(MEMBERSHIP_KEY.to_vec(), encode(&stored)?);
                CommandResult::None
            }
            // An entry without a commit timestamp commits just above the shard's highest.
            EntryPayload::Normal(Command::Write(writes)) => self.apply_writes(
                tree,
                entry.log_id.index,
                writes,
                &mut batch,
                versions.insert(self.entry_versions(0)),
            )?,
            EntryPayload::Normal(Command::WriteAt(timed)) => self.apply_writes(
                tree,
                entry.log_id.index,
                &timed.writes,
                &mut batch,
                versions.insert(self.entry_versions(timed.commit_ts)),
            )?,
            EntryPayload::Normal(Command::Ttl(TtlCommand::WriteAt(ExpiringWrites(timed)))) => self
                .apply_writes(
                    tree,
                    entry.log_id.index,
                    &timed.writes,
                    &mut batch,
                    versions.insert(self.entry_versions(timed.commit_ts)),
                )?,
            EntryPayload::Normal(Command::Ttl(TtlCommand::Purge(purge))) => self.apply_purge(
                tree,
                entry.log_id.index,
                purge.limit,
                &mut batch,
                versions.insert(self.entry_versions(purge.commit_ts)),
            )?,
            EntryPayload::Normal(Command::SetCluster(config)) => match tree.get(CLUSTER_KEY)? {
                Some(bytes) => CommandResult::Cluster(decode(tree.name(), &bytes)?),
                None => {
                    batch.insert(CLUSTER_KEY.to_vec(), encode(config)?);
                    CommandResult::Cluster(config.clone())
                }
            },
            EntryPayload::Normal(Command::DeleteRange(command)) => self.apply_delete_range(
                tree,
                entry.log_id.index,
                command,
                &mut batch,
                versions.insert(self.entry_versions(0)),
            )?,
            EntryPayload::Normal(Command::DeleteRangeAt(timed)) => self.apply_delete_range(
                tree,
                entry.log_id.index,
                &timed.command,
                &mut batch,
                versions.insert(self.entry_versions(timed.commit_ts)),
            )?,
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
            EntryPayload::Normal(
                command @ (Command::TxnPrewrite(_)
                | Command::TxnCommit(_)
                | Command::TxnRollback(_)
                | Command::TxnCheckStatus(_)
                | Command::TxnGc(_)
                | Command::TxnOnePc(_)),
            ) => {
                let (outcome, committed) = self.apply_txn(tree, entry.log_id.index, command, &mut batch)?;
                versions = committed;
                CommandResult::Txn(outcome)
            }
            EntryPayload::Normal(Command::TsoAdvance(limit_ms)) => {
                let current: u64 = match tree.get(TSO_LIMIT_KEY)? {
                    Some(bytes) => decode(tree.name(), &bytes)?,
                    None => 0,
                };
                let limit = current.max((*limit_ms).min(TSO_MAX_PHYSICAL_MS));
                if limit != current {
                    batch.insert(TSO_LIMIT_KEY.to_vec(), encode(&limit)?);
                }
                CommandResult::TsoLimit(limit)
            }
            EntryPayload::Normal(Command::Auth(change)) => {
                let current: ringkv_authz::AuthTable = match tree.get(AUTH_KEY)? {
                    Some(bytes) => super::decode_auth_table(tree.name(), &bytes)?,
                    None => Default::default(),
                };
                let outcome = current.apply(change);
                if let Ok(next) = &outcome {
                    batch.insert(AUTH_KEY.to_vec(), super::encode_auth_table(next)?);
                }
                CommandResult::Auth(outcome)
            }
        };
        // Every batch carries the whole bookkeeping, not only what its entry changed: a small
        // batch leaves it in the intent record, which the next entry's replaces, so a mark
        // or count left out here would never reach the tree. (It once did: the high-water
        // mark of a commit followed by a prewrite was lost, and a reopened or snapshot-fed
        // replica took an old mark as its history floor and answered reads below the
        // newest commit "absent" instead of refusing them as too old.)
        let high_water = match &versions {
            // A transaction commits at its own timestamp, which may be below the mark.
            Some(versions) => self.history().high_water().max(versions.commit_ts),
            None => self.history().high_water(),
        };
        batch.insert(HIGH_WATER_KEY.to_vec(), high_water.to_be_bytes().to_vec());
        if !batch.ops.iter().any(|(key, _)| key.as_slice() == COUNTS_KEY) {
            let counts = *self.dedup_counts();
            batch.insert(COUNTS_KEY.to_vec(), encode(&counts)?);
        }
        batch.insert(APPLIED_KEY.to_vec(), encode(&entry.log_id)?);
        write_atomically(tree, entry.log_id, batch)?;
        if let EntryPayload::Normal(
            Command::TxnCommit(_) | Command::TxnRollback(_) | Command::TxnCheckStatus(_),
        ) = &entry.payload
        {
            self.recount_locks(tree)?;
        }
        if let Some(versions) = versions {
            self.watches.publish(entry.log_id.index, &versions);
            self.history().record(versions.commit_ts, versions.replaced);
        }
        self.applied_tx.send_replace(Some(entry.log_id));
        if let CommandResult::Auth(Ok(table)) = &result {
            self.auth_tx.send_replace(std::sync::Arc::new(table.clone()));
        }
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

    /// The multi-version bookkeeping of a write entry carrying commit timestamp `carried`
    /// (0: none).
    pub(super) fn entry_versions(&self, carried: u64) -> EntryVersions {
        let high_water = self.history().high_water();
        let commit_ts = mvcc::entry_commit_ts(carried, high_water);
        if carried != 0 && carried != commit_ts {
            // Leaders propose in timestamp order (`concurrency.rs`); this is a defect.
            warn!(group = %self.group, carried, high_water, "write entry committed above its timestamp");
        }
        EntryVersions::exact(commit_ts)
    }
}

/// The multi-version effects of one write entry: every key it writes commits at
/// `commit_ts`; the heads it replaced go to the in-memory history once its batch is written.
pub(super) struct EntryVersions {
    pub(super) commit_ts: u64,
    /// Keys written so far by the entry, with their head now (`None`: absent), so the
    /// entry's writes see each other's effects before the batch is applied.
    heads: HashMap<Vec<u8>, Option<Head>>,
    replaced: Vec<Superseded>,
}

impl EntryVersions {
    /// Versions committed at exactly `commit_ts` (a transaction's commit).
    pub(super) fn exact(commit_ts: u64) -> EntryVersions {
        EntryVersions {
            commit_ts,
            heads: HashMap::new(),
            replaced: Vec::new(),
        }
    }

    /// Every key the entry changed with its head after the entry (`None`: deleted), in key
    /// order; a key deleted that had no head before changed nothing and is left out.
    pub(super) fn changes(&self) -> Vec<(&[u8], Option<&Head>)> {
        let replaced: std::collections::HashSet<&[u8]> =
            self.replaced.iter().map(|old| old.key.as_slice()).collect();
        let mut changes: Vec<(&[u8], Option<&Head>)> = self
            .heads
            .iter()
            .filter(|(key, head)| head.is_some() || replaced.contains(key.as_slice()))
            .map(|(key, head)| (key.as_slice(), head.as_ref()))
            .collect();
        changes.sort_unstable_by(|a, b| a.0.cmp(b.0));
        changes
    }

    /// `key`'s head as the entry sees it.
    pub(super) fn head(&self, tree: &TreeRef, key: &[u8]) -> Result<Option<Head>, StorageError> {
        match self.heads.get(key) {
            Some(head) => Ok(head.clone()),
            None => mvcc::head(tree, key),
        }
    }

    /// Makes `value` `key`'s head (`None`: removes it) in `batch`. `current` is the head the
    /// entry saw; the head from before the entry becomes history, and only it: one entry is
    /// one version of a key.
    pub(super) fn set(
        &mut self,
        batch: &mut Batch,
        key: &[u8],
        current: Option<Head>,
        version: u64,
        value: Option<&[u8]>,
    ) {
        self.set_expiring(batch, key, current, version, value, None);
    }

    /// [`EntryVersions::set`] of a value that expires at `expires_at` (oracle time), kept in
    /// the expiry index (`expiry.rs`) while it is the head.
    pub(super) fn set_expiring(
        &mut self,
        batch: &mut Batch,
        key: &[u8],
        current: Option<Head>,
        version: u64,
        value: Option<&[u8]>,
        expires_at: Option<u64>,
    ) {
        if let Some(old_expiry) = current.as_ref().and_then(|head| head.expires_at) {
            batch.remove(expiry::index_key(old_expiry, key));
        }
        if !self.heads.contains_key(key) {
            if let Some(old) = current {
                self.replaced.push(Superseded {
                    key: key.to_vec(),
                    version: old.version,
                    commit_ts: old.commit_ts,
                    expires_at: old.expires_at,
                    value: old.value,
                });
            }
        }
        let head = match value {
            Some(value) => {
                if let Some(expires_at) = expires_at {
                    batch.insert(expiry::index_key(expires_at, key), Vec::new());
                }
                batch.insert(
                    data_key(key),
                    mvcc::encode_head(version, self.commit_ts, expires_at, value),
                );
                Some(Head {
                    version,
                    commit_ts: self.commit_ts,
                    expires_at,
                    value: value.to_vec(),
                })
            }
            None => {
                batch.remove(data_key(key));
                None
            }
        };
        self.heads.insert(key.to_vec(), head);
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;
    use openraft::EntryPayload;

    use super::*;
    use crate::raft::state_machine::dedup::{DELETE_RANGES, WRITES};
    use crate::raft::state_machine::layout::encode_value;
    use crate::raft::state_machine::layout::RANGE_LIST_PREFIX;
    use crate::raft::state_machine::test_support::{
        apply_delete_range, apply_txn, delete_range, five_keys, keys, log_id, open, open_with_policy,
        prewrite, put, scan_options,
    };
    use crate::raft::state_machine::DedupPolicy;
    use crate::raft::state_machine::StateMachine;
    use crate::raft::types::{DeleteRangeResult, Versioned, WriteCommand, WriteOp};
    use crate::storage::prefix_bounds;

    /// A retried request id returns the first outcome and is not applied twice; versions
    /// are log indexes; a failed CAS reports the current value.
    #[tokio::test]
    async fn dedup_versions_and_cas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let first = sm.apply(vec![put(3, b"k", b"v1", 1)]).await.expect("apply");
        let retry = sm.apply(vec![put(4, b"k", b"v1", 1)]).await.expect("apply retry");
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
                    expiry: Default::default(),
                }],
            }])),
        };
        let results = sm.apply(vec![cas]).await.expect("cas");
        let CommandResult::Write(outcomes) = &results[0] else {
            panic!("write result expected")
        };
        assert!(!outcomes[0].results().expect("applied")[0].succeeded);
        assert_eq!(
            outcomes[0].results().expect("applied")[0]
                .current
                .as_ref()
                .map(|c| c.version),
            Some(3)
        );
    }

    /// A crash after an entry's intent record and some of its writes: reopening finishes the
    /// entry with the outcome computed the first time (the CAS is not evaluated again, which
    /// would now fail against its own write) and records it as applied.
    #[tokio::test]
    async fn an_interrupted_entry_is_finished_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cas = |index: u64, expected: u64| Entry {
            log_id: log_id(2, index),
            payload: EntryPayload::Normal(Command::Write(vec![WriteCommand {
                request_id: [7; 16],
                issued_at_ms: 1_000,
                ops: vec![WriteOp {
                    key: b"k".to_vec(),
                    value: Some(b"v2".to_vec()),
                    expected_version: Some(expected),
                    expiry: Default::default(),
                }],
            }])),
        };
        {
            let (engine, state) = open(dir.path());
            let mut sm = StateMachine::new(state.clone());
            sm.apply(vec![put(3, b"k", b"v1", 1)]).await.expect("apply");
            sm.apply(vec![cas(4, 3)]).await.expect("cas");
            // Undo the tail of the entry as a crash would have: the value is written, the
            // de-duplication record and the applied id are not.
            let tree = state.tree();
            tree.insert(APPLIED_KEY, &encode(&log_id(2, 3)).expect("encode"))
                .expect("insert");
            let (start, end) = crate::storage::prefix_bounds(&[super::super::layout::WRITE_BUCKET_PREFIX]);
            let dedup: Vec<Vec<u8>> = tree.range(start, end).map(|pair| pair.expect("pair").0).collect();
            assert!(!dedup.is_empty());
            for key in dedup {
                tree.remove(&key).expect("remove");
            }
            engine.flush().expect("flush");
        }
        let (_engine, state) = open(dir.path());
        assert_eq!(
            *state.watch_applied().borrow(),
            Some(log_id(2, 4)),
            "the entry was finished"
        );
        let stored = state.get(b"k").await.expect("get").expect("present");
        assert_eq!((stored.value.as_slice(), stored.version), (&b"v2"[..], 4));
        let mut sm = StateMachine::new(state.clone());
        let retry = sm.apply(vec![cas(5, 3)]).await.expect("retry");
        let CommandResult::Write(outcomes) = &retry[0] else {
            panic!("write result expected")
        };
        assert!(
            outcomes[0].results().expect("applied")[0].succeeded,
            "a retry returns the first outcome: success"
        );
        // Without an interrupted entry, opening changes nothing.
        assert_eq!(
            redo_intent(&state.tree(), Some(log_id(2, 5))).expect("redo"),
            None
        );
    }

    /// The applied log id, high-water mark and de-duplication counts as memory holds them.
    fn bookkeeping_in_memory(state: &GroupState) -> (Option<LogId>, u64, super::super::dedup::Counts) {
        (
            *state.watch_applied().borrow(),
            state.history().high_water(),
            *state.dedup_counts(),
        )
    }

    /// After an intent record the entry's bookkeeping stays in it: the applied record, the
    /// high-water mark and the counts lag in the tree while memory is current; a snapshot
    /// dump writes them out first, and a reopen recovers them all from the intent.
    #[tokio::test]
    async fn bookkeeping_travels_in_the_intent_record() {
        use openraft::RaftSnapshotBuilder;

        let dir = tempfile::tempdir().expect("tempdir");
        let recorded = |tree: &TreeRef| -> (Option<LogId>, u64, super::super::dedup::Counts) {
            let applied = tree
                .get(APPLIED_KEY)
                .expect("get")
                .map(|bytes| decode("t", &bytes).expect("decode"));
            let high_water = mvcc::high_water(tree).expect("high water");
            (
                applied,
                high_water,
                super::super::dedup::Counts::read(tree).expect("counts"),
            )
        };
        let current = {
            let (engine, state) = open(dir.path());
            let mut sm = StateMachine::new(state.clone());
            sm.apply(vec![put(3, b"a", b"1", 1)]).await.expect("apply");
            sm.apply(vec![put(4, b"b", b"2", 2), put(5, b"c", b"3", 3)])
                .await
                .expect("apply");
            let current = bookkeeping_in_memory(&state);
            assert_eq!(current.0, Some(log_id(2, 5)));
            assert_eq!(current.2.writes_recorded, 3, "three requests recorded");
            let lagging = recorded(&state.tree());
            assert_eq!(lagging.0, None, "no entry wrote the applied record itself");
            assert_ne!(lagging, current);
            // A dump copies the tree: its records are written out first.
            let mut builder = sm.get_snapshot_builder().await;
            let snapshot = builder.build_snapshot().await.expect("snapshot");
            assert_eq!(snapshot.meta.last_log_id, Some(log_id(2, 5)));
            assert_eq!(recorded(&state.tree()), current);
            sm.apply(vec![put(6, b"d", b"4", 4)]).await.expect("apply");
            let current = bookkeeping_in_memory(&state);
            assert_eq!(recorded(&state.tree()).0, Some(log_id(2, 5)), "lagging again");
            engine.flush().expect("flush");
            current
        };
        let (_engine, state) = open(dir.path());
        assert_eq!(
            bookkeeping_in_memory(&state),
            current,
            "recovered from the intent record"
        );
        assert_eq!(recorded(&state.tree()), current, "and written out");
        let mut sm = StateMachine::new(state.clone());
        let retry = sm.apply(vec![put(7, b"a", b"1", 1)]).await.expect("retry");
        let CommandResult::Write(outcomes) = &retry[0] else {
            panic!("write result expected")
        };
        assert_eq!(
            outcomes[0].results().expect("applied")[0].version,
            3,
            "the first outcome"
        );
    }

    /// An entry that changes no bookkeeping (a prewrite: no version, no request recorded)
    /// still carries all of it in its intent record, so the mark and counts of the entry
    /// before it are what a reopen finds.
    #[tokio::test]
    async fn an_entry_that_changes_no_bookkeeping_still_carries_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let current = {
            let (engine, state) = open(dir.path());
            let mut sm = StateMachine::new(state.clone());
            sm.apply(vec![put(3, b"a", b"1", 1)]).await.expect("apply");
            apply_txn(&mut sm, 4, prewrite(1, &[(b"b", Some(b"2"))], Some(10_000))).await;
            let current = bookkeeping_in_memory(&state);
            assert!(current.1 > 0, "the put raised the high-water mark");
            assert_eq!(current.2.writes_recorded, 1, "the put was recorded");
            engine.flush().expect("flush");
            current
        };
        let (_engine, state) = open(dir.path());
        assert_eq!(bookkeeping_in_memory(&state), current);
    }

    /// A crash right after the last entry's intent record, with the bookkeeping records
    /// lagging several entries behind: the reopened state finishes the entry (its value and
    /// de-duplication record) and takes the bookkeeping from the intent, not the records.
    #[tokio::test]
    async fn a_crash_after_an_intent_with_lagging_records_recovers_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let expected = {
            let (engine, state) = open(dir.path());
            let mut sm = StateMachine::new(state.clone());
            for (index, key) in (3u64..).zip([b"a", b"b", b"c"]) {
                sm.apply(vec![put(index, key, b"v", index as u8)])
                    .await
                    .expect("apply");
            }
            let expected = bookkeeping_in_memory(&state);
            // The last entry's writes after its intent never reached the tree.
            let tree = state.tree();
            tree.remove(&data_key(b"c")).expect("remove");
            let last_record = super::super::dedup::write_bucket_key(&[5; 16]);
            assert!(
                tree.get(&last_record).expect("get").is_some(),
                "the last entry's record"
            );
            tree.remove(&last_record).expect("remove");
            assert_eq!(tree.get(APPLIED_KEY).expect("get"), None, "the records lag");
            engine.flush().expect("flush");
            expected
        };
        let (_engine, state) = open(dir.path());
        let reopened = bookkeeping_in_memory(&state);
        assert_eq!(reopened, expected);
        let value = state.get(b"c").await.expect("get").expect("finished");
        assert_eq!((value.value, value.version), (b"v".to_vec(), 5));
        let mut sm = StateMachine::new(state.clone());
        let retry = sm.apply(vec![put(6, b"c", b"v", 5)]).await.expect("retry");
        let CommandResult::Write(outcomes) = &retry[0] else {
            panic!("write result expected")
        };
        assert_eq!(
            outcomes[0].results().expect("applied")[0].version,
            5,
            "the first outcome: the record was finished too"
        );
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
        let retry = apply_delete_range(&mut sm, delete_range(11, b"a", Some(b"e"), 2, 21)).await;
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

    /// Delete-range de-duplication records expire with the window like write records,
    /// beyond the last `min_records` of each table.
    #[tokio::test]
    async fn delete_range_dedup_records_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = DedupPolicy {
            window_ms: 60_000,
            min_records: 1,
            max_records: 100,
        };
        let (_engine, state) = open_with_policy(dir.path(), policy);
        let mut sm = StateMachine::new(state.clone());
        for (index, key) in (1u8..).zip([b"a", b"b", b"c"]) {
            sm.apply(vec![put(u64::from(index), key, b"v", index)])
                .await
                .expect("apply");
        }
        apply_delete_range(&mut sm, delete_range(6, b"", None, 1, 20)).await;
        let tree = state.tree();
        let remembered_range = |id: u8| {
            DELETE_RANGES
                .lookup(&tree, &[id; 16], false, &policy, *state.dedup_counts())
                .expect("lookup")
                .is_some()
        };
        let remembered_write = |id: u8| {
            WRITES
                .lookup(&tree, &[id; 16], false, &policy, *state.dedup_counts())
                .expect("lookup")
                .is_some()
        };
        assert!(remembered_range(20));
        let mut later = delete_range(7, b"x", None, 1, 21);
        if let EntryPayload::Normal(Command::DeleteRange(command)) = &mut later.payload {
            // Past the window of every record so far (issued at 1_000, window 60_000).
            command.issued_at_ms = 1_000 + 60_000 + 1;
        }
        apply_delete_range(&mut sm, later).await;
        assert!(!remembered_range(20));
        assert!(!remembered_write(1), "expired write records too");
        assert!(remembered_write(3), "the last write record is within min_records");
        let (start, end) = prefix_bounds(&[RANGE_LIST_PREFIX]);
        assert_eq!(tree.range(start, end).count(), 0, "no request lists: buckets");
        // The expired id deletes again.
        let again = apply_delete_range(&mut sm, delete_range(8, b"", None, 1, 20)).await;
        assert_eq!(again.last_deleted, Some(b"b".to_vec()));
    }

    /// Entries stamped far ahead (by a wall clock, as before the de-duplication clock, or a
    /// monotonic clock that jumped) cannot make a recent retry apply twice: the last
    /// `min_records` requests are remembered whatever the entries' clocks say.
    #[tokio::test]
    async fn a_clock_far_ahead_does_not_forget_recent_requests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let incr = |index: u64, request_id: u8, issued_at_ms: u64| Entry {
            log_id: log_id(2, index),
            payload: EntryPayload::Normal(Command::Write(vec![WriteCommand {
                request_id: [request_id; 16],
                issued_at_ms,
                ops: vec![WriteOp {
                    key: b"k".to_vec(),
                    value: Some(vec![request_id]),
                    expected_version: None,
                    expiry: Default::default(),
                }],
            }])),
        };
        sm.apply(vec![incr(3, 1, 1_000)]).await.expect("apply");
        // A new leader ten minutes ahead writes, then the first request is retried.
        let ahead = 1_000 + 10 * 60_000;
        sm.apply(vec![incr(4, 2, ahead)]).await.expect("apply");
        let retry = sm.apply(vec![incr(5, 1, ahead)]).await.expect("retry");
        let CommandResult::Write(outcomes) = &retry[0] else {
            panic!("write result expected")
        };
        assert_eq!(
            outcomes[0].results().expect("applied")[0].version,
            3,
            "the first outcome, not a second write"
        );
        let stored = state.get(b"k").await.expect("get").expect("present");
        assert_eq!((stored.value, stored.version), (vec![2], 4));
    }

    /// Intent records keep the encoding of a plain `(LogId, Vec<Write>)`, so an intent left by
    /// an older build is finished by this one, and the other way round.
    /// The oracle's bound only rises, survives a reopen, and a lower proposal reports the
    /// bound in force.
    #[tokio::test]
    async fn the_oracle_bound_only_rises() {
        let dir = tempfile::tempdir().expect("tempdir");
        let advance = |index: u64, limit_ms: u64| Entry {
            log_id: log_id(2, index),
            payload: EntryPayload::Normal(Command::TsoAdvance(limit_ms)),
        };
        {
            let (_engine, state) = open(dir.path());
            assert_eq!(state.tso_limit_ms().expect("limit"), 0);
            let mut sm = StateMachine::new(state.clone());
            let results = sm
                .apply(vec![advance(1, 5_000), advance(2, 3_000), advance(3, 9_000)])
                .await
                .expect("apply");
            assert_eq!(
                results,
                vec![
                    CommandResult::TsoLimit(5_000),
                    CommandResult::TsoLimit(5_000),
                    CommandResult::TsoLimit(9_000)
                ]
            );
            // A bound past what a timestamp can hold (a clock fault) stops at the maximum.
            let results = sm.apply(vec![advance(4, u64::MAX)]).await.expect("apply");
            assert_eq!(results, vec![CommandResult::TsoLimit(TSO_MAX_PHYSICAL_MS)]);
            let results = sm.apply(vec![advance(5, 9_000)]).await.expect("apply");
            assert_eq!(results, vec![CommandResult::TsoLimit(TSO_MAX_PHYSICAL_MS)]);
            state.engine.flush().expect("flush");
        }
        let (_engine, state) = open(dir.path());
        assert_eq!(state.tso_limit_ms().expect("limit"), TSO_MAX_PHYSICAL_MS);
    }

    /// Writes of one key within one entry are one version at the entry's commit timestamp;
    /// only the head from before the entry becomes history; an entry whose timestamp is not
    /// above the shard's highest commits just above it; deletions keep the deleted version.
    #[tokio::test]
    async fn entries_are_versions_at_their_timestamps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let op = |key: &[u8], value: Option<&[u8]>| WriteOp {
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
            expected_version: None,
            expiry: Default::default(),
        };
        let entry = |index: u64, commit_ts: u64, ops: Vec<WriteOp>| Entry {
            log_id: log_id(1, index),
            payload: EntryPayload::Normal(Command::WriteAt(crate::raft::types::TimedWrites {
                commit_ts,
                writes: vec![WriteCommand {
                    request_id: [index as u8; 16],
                    issued_at_ms: 1_000,
                    ops,
                }],
            })),
        };
        sm.apply(vec![
            entry(1, 50, vec![op(b"k", Some(b"old")), op(b"gone", Some(b"x"))]),
            entry(
                2,
                100,
                vec![op(b"k", Some(b"a")), op(b"k", Some(b"b")), op(b"k", Some(b"c"))],
            ),
            // Carries a timestamp below the shard's highest: commits at 101.
            entry(3, 90, vec![op(b"gone", None)]),
        ])
        .await
        .expect("apply");
        let at = |ts: u64| {
            let state = state.clone();
            async move {
                let values = state
                    .get_many_at(&[b"k".to_vec(), b"gone".to_vec()], ts)
                    .await
                    .expect("read")
                    .expect("within the history");
                values
                    .into_iter()
                    .map(|value| value.map(|v| (v.version, v.value)))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(at(49).await, vec![None, None]);
        assert_eq!(
            at(50).await,
            vec![Some((1, b"old".to_vec())), Some((1, b"x".to_vec()))]
        );
        assert_eq!(
            at(99).await,
            vec![Some((1, b"old".to_vec())), Some((1, b"x".to_vec()))]
        );
        assert_eq!(
            at(100).await,
            vec![Some((2, b"c".to_vec())), Some((1, b"x".to_vec()))],
            "no intermediate value of the entry, and the delete is not yet"
        );
        assert_eq!(at(101).await, vec![Some((2, b"c".to_vec())), None]);
        assert_eq!(state.history_span(), (0, 2), "one replaced head per key");
        // Reopened: the history is gone; the floor is the highest applied timestamp, and
        // heads still answer reads below it.
        drop(sm);
        drop(state);
        drop(_engine);
        let (_engine, state) = open(dir.path());
        assert_eq!(state.history_span(), (101, 0));
        let below = state.get_many_at(&[b"k".to_vec()], 100).await.expect("read");
        assert_eq!(
            below.expect("the head answers").pop().flatten().map(|v| v.value),
            Some(b"c".to_vec())
        );
        let gone = state.get_many_at(&[b"gone".to_vec()], 100).await.expect("read");
        assert_eq!(gone, Err(mvcc::BelowFloor { floor: 101 }));
    }

    #[test]
    fn intent_records_keep_their_encoding() {
        let writes: Vec<Write> = vec![
            (b"d/key".to_vec(), Some((0..=255).collect())),
            (b"d/gone".to_vec(), None),
        ];
        let encoded = encode(&(log_id(2, 9), IntentWrites(&writes))).expect("encode");
        assert_eq!(encoded, encode(&(log_id(2, 9), &writes)).expect("encode"));
        let (decoded_id, decoded): (LogId, Vec<IntentWrite>) = decode("t", &encoded).expect("decode");
        let decoded: Vec<Write> = decoded.into_iter().map(|IntentWrite(k, v)| (k, v)).collect();
        assert_eq!((decoded_id, decoded), (log_id(2, 9), writes));
    }

    /// An entry of many bytes goes to sled as one atomic batch, with no intent record of its
    /// own; the intent left by an earlier small entry is not redone at open.
    #[tokio::test]
    async fn a_large_entry_is_one_sled_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = vec![9u8; ATOMIC_BATCH_BYTES];
        {
            let (engine, state) = open(dir.path());
            let mut sm = StateMachine::new(state.clone());
            sm.apply(vec![put(3, b"small", b"v", 1)]).await.expect("apply");
            sm.apply(vec![put(4, b"big", &big, 2)]).await.expect("apply");
            let intent = state.tree().get(INTENT_KEY).expect("get").expect("an intent");
            let (intent_id, _): (LogId, Vec<IntentWrite>) = decode("t", &intent).expect("decode");
            assert_eq!(intent_id, log_id(2, 3), "the large entry wrote no intent");
            // Overwrite the small key outside the state machine: a redo of the stale intent
            // at open would put its old value back.
            let tree = state.tree();
            tree.insert(
                &super::super::layout::data_key(b"small"),
                &encode_value(&Versioned {
                    version: 3,
                    value: b"changed".to_vec(),
                }),
            )
            .expect("insert");
            engine.flush().expect("flush");
        }
        let (_engine, state) = open(dir.path());
        assert_eq!(*state.watch_applied().borrow(), Some(log_id(2, 4)));
        let big_value = state.get(b"big").await.expect("get").expect("present");
        assert_eq!((big_value.value, big_value.version), (big, 4));
        let small = state.get(b"small").await.expect("get").expect("present");
        assert_eq!(
            small.value,
            b"changed".to_vec(),
            "the stale intent was not redone"
        );
    }
}
