//! The replicated commands of transactions and what applying them answers (Percolator's
//! two-phase commit, as `state_machine/txn.rs` applies it).
//!
//! A transaction reads at its start timestamp and buffers its writes in the client; at commit
//! its coordinator (the router) prewrites every written key — a **lock** holding the new value
//! — on each shard it touches, the shard of its **primary** key also recording the
//! transaction as pending; then it takes a commit timestamp from the oracle and commits the
//! primary (the commit point), then the others. Whoever meets a lock asks the primary's shard
//! what became of the transaction (`TxnCheckStatus`), which rolls back a transaction whose
//! time ran out; locks are then committed or removed to match (`TxnCommit` / `TxnRollback`).
//!
//! These are persisted in the Raft log: postcard encodes enum variants by index, so new
//! variants go at the end and fields are never added to existing structs.

use serde::{Deserialize, Serialize};

/// What a transaction does to one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    /// Store the value.
    Put(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Delete the key.
    Delete,
    /// Append the bytes to the value committed before it (an absent key counts as empty),
    /// taken when the commit applies: concurrent appends that both commit both land.
    Append(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMutation {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub op: TxnOp,
}

/// Prewrite the transaction's writes to keys of one shard: lock each key with its new value,
/// all or none. Applying it again is harmless (a key already locked by the transaction is
/// left as it is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnPrewrite {
    /// The transaction's start (read) timestamp, which names it.
    pub start_ts: u64,
    /// The transaction's primary key (maybe on another shard): where its status is recorded.
    #[serde(with = "serde_bytes")]
    pub primary: Vec<u8>,
    pub mutations: Vec<TxnMutation>,
    /// Refuse a key committed after `start_ts` (first committer wins: repeatable read and
    /// serializable); read committed and read uncommitted skip the check.
    pub check_conflicts: bool,
    /// On the primary key's shard: record the transaction as pending until this oracle
    /// timestamp (after it, a reader may roll it back). `None` on the other shards.
    pub expires_ts: Option<u64>,
}

/// Commit the transaction's locks on `keys` (of one shard) at `commit_ts`. On the primary's
/// shard (`primary`), the transaction record turns committed first — the commit point — and
/// nothing is committed if the record was rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCommit {
    pub start_ts: u64,
    pub commit_ts: u64,
    pub keys: Vec<Vec<u8>>,
    pub primary: bool,
}

/// Remove the transaction's locks on `keys` (of one shard). On the primary's shard, the
/// record turns rolled back first (so a late prewrite or commit fails) — unless it committed,
/// and then nothing is removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRollback {
    pub start_ts: u64,
    pub keys: Vec<Vec<u8>>,
    pub primary: bool,
}

/// On the primary key's shard: what became of transaction `start_ts`, rolling it back when
/// it is pending past its expiry at oracle time `now_ts`, or was never prewritten here (so it
/// never can be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCheckStatus {
    pub start_ts: u64,
    #[serde(with = "serde_bytes")]
    pub primary: Vec<u8>,
    pub now_ts: u64,
}

/// Garbage collection of transaction records on one shard: deletes up to `purge_limit`
/// records of transactions that started below `safe_point` and are over — rolled back, or
/// committed below `safe_point` — and raises the shard's transaction safe point to it (a
/// prewrite that started below the safe point is refused from then on, and a transaction
/// below it without a record is "forgotten"). The collector takes `safe_point` from the
/// oracle before it resolves every lock below it on every shard: a transaction committed
/// below it had every lock in place before, so none of its locks is left or comes back; a
/// lock of a rolled-back one that shows up later is rolled back by whoever meets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnGc {
    pub safe_point: u64,
    pub purge_limit: u32,
}

/// One-phase commit of a transaction whose writes (and, serializable, reads) are all on one
/// shard: one entry that checks what a prewrite checks, validates the reads over
/// `(start_ts, commit]` (exact: it runs inside the apply, and later writes commit above), and
/// commits the writes at the entry's commit timestamp — `commit_ts`, fetched and fenced like a
/// plain write's, lifted above the shard's highest if need be. The record it leaves
/// (`Committed`) makes a retry answer the first outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOnePc {
    pub start_ts: u64,
    pub commit_ts: u64,
    pub mutations: Vec<TxnMutation>,
    pub check_conflicts: bool,
    /// Serializable: keys read, validated at the commit.
    pub read_keys: Vec<Vec<u8>>,
    /// Serializable: ranges scanned, `[start, end)` (`None` end: no upper bound).
    pub read_ranges: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// A transaction's status, as recorded on its primary key's shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnStatus {
    /// Prewritten; may still commit. A reader may roll it back after `expires_ts`.
    Pending {
        expires_ts: u64,
    },
    Committed {
        commit_ts: u64,
    },
    RolledBack,
}

/// A prewritten key: the new value of an uncommitted transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub start_ts: u64,
    #[serde(with = "serde_bytes")]
    pub primary: Vec<u8>,
    /// What the commit does to the key.
    pub op: TxnOp,
}

/// A key found locked by a transaction: what a reader or writer needs to resolve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedKey {
    pub key: Vec<u8>,
    /// The locking transaction's start timestamp.
    pub start_ts: u64,
    /// Its primary key, where its status is recorded.
    pub primary: Vec<u8>,
}

impl Lock {
    /// This lock as found on `key`.
    pub fn of(&self, key: &[u8]) -> LockedKey {
        LockedKey {
            key: key.to_vec(),
            start_ts: self.start_ts,
            primary: self.primary.clone(),
        }
    }
}

/// Why a prewrite wrote nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnConflict {
    /// The key is locked by another transaction (`lock.start_ts`), which must be resolved
    /// first.
    Locked {
        key: Vec<u8>,
        start_ts: u64,
        primary: Vec<u8>,
    },
    /// The key was written at `commit_ts`, after the transaction's start: first committer
    /// wins.
    WriteConflict { key: Vec<u8>, commit_ts: u64 },
    /// Whether the key changed after the start is no longer known (its history is gone).
    TooOld { key: Vec<u8>, floor: u64 },
    /// The transaction was already rolled back (or committed): its prewrite comes too late.
    Finished(TxnStatus),
    /// Serializable: a key the transaction read (or a key of a range it scanned) was written
    /// at `commit_ts`, after its start and not after its commit.
    ReadChanged { key: Vec<u8>, commit_ts: u64 },
}

/// What applying a transaction command answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOutcome {
    /// Every key is locked by the transaction.
    Prewritten,
    /// Nothing was written.
    Conflicts(Vec<TxnConflict>),
    /// The transaction's status after a commit, rollback or status check.
    Status(TxnStatus),
    /// The transaction started below the shard's transaction safe point and has no record:
    /// it was garbage-collected, and its outcome is no longer known here.
    Forgotten { safe_point: u64 },
    /// A garbage collection: the shard's safe point, the records deleted, and whether
    /// records below the safe point remain.
    Collected {
        safe_point: u64,
        purged: u64,
        more: bool,
    },
}
