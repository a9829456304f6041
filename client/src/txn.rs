//! Transactions: [`Client::begin`] and [`Client::transact`].
//!
//! A [`Transaction`] lives here, in the client: it takes a start timestamp from the oracle,
//! reads through the routers (at the start timestamp under [`Isolation::RepeatableRead`],
//! the latest committed values under [`Isolation::ReadCommitted`]), sees its own writes,
//! buffers every write, and sends them in one `Txn.Commit`, which the router runs as a
//! two-phase commit across the shards. Nothing is locked until the commit, so a transaction
//! dropped without committing leaves nothing behind. A serializable transaction also keeps
//! what it read (keys, and ranges as far as its scans looked) and sends it with the commit,
//! which validates it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};

use futures::TryStreamExt;

use ringkv_proto::v1 as proto;

use crate::retry::{backoff_for_round, OpKind};
use crate::routers::{txn_client, with_deadline};
use crate::{Client, Error, KeyRange, ReadConsistency, ScanEntry, ScanOptions, Versioned};

/// Most runs of one [`Client::transact`] body (each after a retryable abort).
pub const MAX_TRANSACT_RUNS: u32 = 32;

/// How isolated a transaction is from concurrent ones (the contract: README's table).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Each read sees the newest value, a provisional one included (what another
    /// transaction prewrote and may still roll back: a dirty read), and never waits for a
    /// transaction to finish; writes still lock, so two transactions never interleave
    /// their writes to one key (no dirty writes). Scans see provisional values too.
    ReadUncommitted,
    /// Each read sees the latest committed values (a read may differ from an earlier one
    /// of the same key); concurrent writers do not abort each other.
    ReadCommitted,
    /// Snapshot isolation: every read sees the snapshot at the start; a write to a key
    /// committed by another transaction after the start aborts (first committer wins).
    /// Write skew is possible: two transactions may each read what the other writes.
    #[default]
    RepeatableRead,
    /// Snapshot isolation, and at the commit every key read and range scanned must be
    /// unchanged since the start (else a retryable `SERIALIZATION_FAILURE` abort): the
    /// transactions appear to run one at a time, in commit-timestamp order, which respects
    /// real time (strict serializability). No write skew, no phantoms.
    Serializable,
}

impl Isolation {
    fn wire(self) -> proto::IsolationLevel {
        match self {
            Isolation::ReadUncommitted => proto::IsolationLevel::ReadUncommitted,
            Isolation::ReadCommitted => proto::IsolationLevel::ReadCommitted,
            Isolation::RepeatableRead => proto::IsolationLevel::RepeatableRead,
            Isolation::Serializable => proto::IsolationLevel::Serializable,
        }
    }
}

/// What a committed transaction reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The timestamp its writes became visible at (its start for a read-only one).
    pub commit_ts: u64,
    /// Every write (and, serializable, every read) was on one shard: it committed in one
    /// Raft entry there, without locks (one-phase commit).
    pub one_phase: bool,
}

/// A transaction in progress: reads, buffered writes, then [`Transaction::commit`].
#[derive(Debug)]
pub struct Transaction {
    client: Client,
    start_ts: u64,
    isolation: Isolation,
    /// Buffered writes by key.
    writes: BTreeMap<Vec<u8>, Buffered>,
    /// Serializable only: what was read from the store, validated at the commit.
    reads: Mutex<ReadSet>,
}

/// Keys read and ranges scanned (`[start, end)`, an empty end unbounded).
#[derive(Debug, Default)]
struct ReadSet {
    keys: BTreeSet<Vec<u8>>,
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A write buffered until the commit.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Buffered {
    Put(Vec<u8>),
    Delete,
    /// Appended to whatever is committed when the transaction commits.
    Append(Vec<u8>),
}

impl Client {
    /// Begins a transaction at a fresh start timestamp.
    pub async fn begin(&self, isolation: Isolation) -> Result<Transaction, Error> {
        let start_ts = self.timestamp().await?;
        Ok(Transaction {
            client: self.clone(),
            start_ts,
            isolation,
            writes: BTreeMap::new(),
            reads: Mutex::default(),
        })
    }

    /// Runs `body` in a transaction and commits it, running it again (with a new start
    /// timestamp) after an abort that says a retry may succeed — a write conflict, a lock
    /// that stayed — up to [`MAX_TRANSACT_RUNS`] times, with a growing, jittered pause
    /// (`ClientConfig::retry_backoff` up to `max_retry_backoff`). `body` must be safe to
    /// run more than once: only its last run commits.
    ///
    /// ```no_run
    /// # use ringkv_client::{Client, Error, Isolation};
    /// # async fn transfer(client: &Client) -> Result<(), Error> {
    /// client
    ///     .transact(Isolation::RepeatableRead, |txn| {
    ///         Box::pin(async move {
    ///             let balance = |found: Option<ringkv_client::Versioned>| -> i64 {
    ///                 found.and_then(|v| String::from_utf8(v.value).ok()?.parse().ok()).unwrap_or(0)
    ///             };
    ///             let alice = balance(txn.get(b"account/alice").await?);
    ///             let bob = balance(txn.get(b"account/bob").await?);
    ///             txn.put(b"account/alice", (alice - 10).to_string());
    ///             txn.put(b"account/bob", (bob + 10).to_string());
    ///             Ok(())
    ///         })
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn transact<T, F>(&self, isolation: Isolation, mut body: F) -> Result<T, Error>
    where
        F: for<'t> FnMut(&'t mut Transaction) -> Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 't>>,
    {
        let max_attempts = MAX_TRANSACT_RUNS;
        let mut attempt = 1;
        loop {
            let mut txn = self.begin(isolation).await?;
            let outcome = match body(&mut txn).await {
                Ok(value) => txn.commit().await.map(|_| value),
                Err(err) => Err(err),
            };
            match outcome {
                Err(err) if err.is_retryable_abort() && attempt < max_attempts => {
                    // The routers' failover backoff, one round per rerun.
                    let config = self.config();
                    let backoff = backoff_for_round(attempt, config.retry_backoff, config.max_retry_backoff);
                    attempt += 1;
                    tokio::time::sleep(backoff.mul_f64(rand::random_range(0.5..=1.0))).await;
                }
                other => return other,
            }
        }
    }
}

impl Transaction {
    /// The start timestamp: the snapshot a repeatable-read transaction reads.
    pub fn start_ts(&self) -> u64 {
        self.start_ts
    }

    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// How reads of committed values are served.
    fn consistency(&self) -> ReadConsistency {
        match self.isolation {
            Isolation::RepeatableRead | Isolation::Serializable => ReadConsistency::At(self.start_ts),
            Isolation::ReadCommitted | Isolation::ReadUncommitted => ReadConsistency::Linearizable,
        }
    }

    /// A read of the transaction's snapshot that the cluster no longer holds (OUT_OF_RANGE:
    /// the transaction outlived the shards' version history, or a replica lost that history
    /// in a crash or a snapshot install) aborts it, retryably: run again, it reads a newer
    /// snapshot ([`Client::transact`] does so).
    fn too_old(&self, err: Error) -> Error {
        match err {
            Error::OutOfRange(message) => Error::TxnAborted {
                reason: "TXN_TOO_OLD".to_string(),
                retryable: true,
                message: format!(
                    "transaction aborted (TXN_TOO_OLD): its snapshot at {} can no longer be read: {message}",
                    self.start_ts
                ),
            },
            other => other,
        }
    }

    /// Whether point reads see provisional values ([`Isolation::ReadUncommitted`]).
    fn dirty(&self) -> bool {
        self.isolation == Isolation::ReadUncommitted
    }

    /// Under [`Isolation::Serializable`], remembers that `keys` were read from the store.
    fn record_keys<'k>(&self, keys: impl IntoIterator<Item = &'k Vec<u8>>) {
        if self.isolation == Isolation::Serializable {
            let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
            reads.keys.extend(keys.into_iter().cloned());
        }
    }

    /// Reads `key`: the transaction's own write if it made one, else the committed value
    /// its isolation level sees. (A value written by the transaction reads with version 0:
    /// it has none until the commit.)
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Versioned>, Error> {
        let key = key.as_ref();
        match self.writes.get(key) {
            Some(Buffered::Put(value)) => Ok(Some(own(value.clone()))),
            Some(Buffered::Delete) => Ok(None),
            Some(Buffered::Append(suffix)) => {
                let committed = self
                    .client
                    .get_inner(key, self.consistency(), self.dirty())
                    .await
                    .map_err(|err| self.too_old(err))?;
                self.record_keys([&key.to_vec()]);
                Ok(Some(appended(committed, suffix)))
            }
            None => {
                let found = self
                    .client
                    .get_inner(key, self.consistency(), self.dirty())
                    .await
                    .map_err(|err| self.too_old(err))?;
                self.record_keys([&key.to_vec()]);
                Ok(found)
            }
        }
    }

    /// Reads the first `limit` entries of `range` in key order, as the transaction sees
    /// them: the committed entries its isolation level sees (one snapshot across every
    /// shard under repeatable read and serializable), with its own writes applied — a put
    /// adds or replaces an entry, a delete removes one, an append extends one (entries it
    /// wrote have version 0). Under serializable, the part of the range the scan looked at
    /// (all of it, or up to the last entry returned when `limit` cut it short) must not
    /// change before the commit: no phantoms.
    pub async fn scan(&self, range: &KeyRange, limit: usize) -> Result<Vec<ScanEntry>, Error> {
        range.validate()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let own: Vec<(&Vec<u8>, &Buffered)> = self
            .writes
            .iter()
            .filter(|(key, _)| range.contains(key))
            .collect();
        // Enough committed entries that `limit` remain after the transaction's deletes.
        let deletes = own
            .iter()
            .filter(|(_, write)| **write == Buffered::Delete)
            .count();
        let want = limit.saturating_add(deletes);
        let mut options = ScanOptions::new()
            .limit(u32::try_from(want).unwrap_or(u32::MAX))
            .consistency(self.consistency());
        options.read_uncommitted = self.dirty();
        let committed: Vec<ScanEntry> = self
            .client
            .scan_stream(range, &options)
            .entries()
            .try_collect()
            .await
            .map_err(|err| self.too_old(err))?;
        // Past the last committed entry read, more committed entries may exist: own writes
        // there cannot be placed among them.
        let horizon = (committed.len() >= want)
            .then(|| committed.last().map(|entry| entry.key.clone()))
            .flatten();
        let mut merged: BTreeMap<Vec<u8>, ScanEntry> = committed
            .into_iter()
            .map(|entry| (entry.key.clone(), entry))
            .collect();
        for (key, write) in own {
            if horizon.as_ref().is_some_and(|horizon| key > horizon) {
                continue;
            }
            let entry = |value: Vec<u8>| ScanEntry {
                key: key.clone(),
                value,
                version: 0,
                // A transaction's own write has no TTL.
                expires_at_ts: None,
            };
            match write {
                Buffered::Put(value) => {
                    merged.insert(key.clone(), entry(value.clone()));
                }
                Buffered::Delete => {
                    merged.remove(key);
                }
                Buffered::Append(suffix) => {
                    let mut value = merged.remove(key).map(|found| found.value).unwrap_or_default();
                    value.extend_from_slice(suffix);
                    merged.insert(key.clone(), entry(value));
                }
            }
        }
        let entries: Vec<ScanEntry> = merged.into_values().take(limit).collect();
        if self.isolation == Isolation::Serializable {
            let (start, end) = range.span();
            let looked_until = match entries.last() {
                Some(last) if entries.len() == limit => {
                    let mut after = last.key.clone();
                    after.push(0);
                    after
                }
                _ => end.unwrap_or_default(),
            };
            let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
            reads.ranges.push((start, looked_until));
        }
        Ok(entries)
    }

    /// Reads `keys` (one result per key, in order), as [`Transaction::get`] does.
    pub async fn batch_get<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Versioned>>, Error> {
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|key| key.as_ref().to_vec()).collect();
        let needs_read = |key: &Vec<u8>| matches!(self.writes.get(key), None | Some(Buffered::Append(_)));
        let to_read: Vec<&Vec<u8>> = keys.iter().filter(|key| needs_read(key)).collect();
        let mut read = if to_read.is_empty() {
            Vec::new()
        } else {
            let values = self
                .client
                .batch_get_inner(to_read.iter().copied(), self.consistency(), self.dirty())
                .await
                .map_err(|err| self.too_old(err))?;
            self.record_keys(to_read.iter().copied());
            values
        }
        .into_iter();
        let mut next_read = || {
            read.next()
                .ok_or_else(|| Error::InvalidResponse("too few results for a batch read".to_string()))
        };
        keys.iter()
            .map(|key| match self.writes.get(key) {
                Some(Buffered::Put(value)) => Ok(Some(own(value.clone()))),
                Some(Buffered::Delete) => Ok(None),
                Some(Buffered::Append(suffix)) => Ok(Some(appended(next_read()?, suffix))),
                None => next_read(),
            })
            .collect()
    }

    /// Buffers a write of `value` to `key` (sent at the commit).
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) {
        self.writes
            .insert(key.as_ref().to_vec(), Buffered::Put(value.into()));
    }

    /// Buffers a delete of `key` (sent at the commit).
    pub fn delete(&mut self, key: impl AsRef<[u8]>) {
        self.writes.insert(key.as_ref().to_vec(), Buffered::Delete);
    }

    /// Buffers an append of `suffix` to `key`'s value (absent: empty). The append lands on
    /// the value committed when the transaction commits, not the one it read: two
    /// transactions appending to one key both land (under repeatable read the later
    /// committer aborts instead, as for any write conflict).
    pub fn append(&mut self, key: impl AsRef<[u8]>, suffix: impl AsRef<[u8]>) {
        let suffix = suffix.as_ref();
        let merged = match self.writes.remove(key.as_ref()) {
            Some(Buffered::Put(mut value)) => {
                value.extend_from_slice(suffix);
                Buffered::Put(value)
            }
            Some(Buffered::Delete) => Buffered::Put(suffix.to_vec()),
            Some(Buffered::Append(mut pending)) => {
                pending.extend_from_slice(suffix);
                Buffered::Append(pending)
            }
            None => Buffered::Append(suffix.to_vec()),
        };
        self.writes.insert(key.as_ref().to_vec(), merged);
    }

    /// Writes buffered so far.
    pub fn pending_writes(&self) -> usize {
        self.writes.len()
    }

    /// Commits: every buffered write becomes visible at one commit timestamp, on every
    /// shard, or none does. A read-only transaction commits without a call. An abort is
    /// [`Error::TxnAborted`] (see [`Error::is_retryable_abort`]); "outcome unknown" means
    /// the commit may have happened: [`Client::txn_status`] settles it.
    pub async fn commit(self) -> Result<Committed, Error> {
        if self.writes.is_empty() {
            return Ok(Committed {
                commit_ts: self.start_ts,
                one_phase: false,
            });
        }
        let mutations: Vec<proto::Mutation> = self
            .writes
            .into_iter()
            .map(|(key, write)| {
                let (kind, value) = match write {
                    Buffered::Put(value) => (proto::MutationKind::Put, value),
                    Buffered::Delete => (proto::MutationKind::Delete, Vec::new()),
                    Buffered::Append(suffix) => (proto::MutationKind::Append, suffix),
                };
                proto::Mutation {
                    key,
                    kind: kind as i32,
                    value,
                }
            })
            .collect();
        let reads = self.reads.into_inner().unwrap_or_else(PoisonError::into_inner);
        let message = proto::TxnCommitRequest {
            start_ts: self.start_ts,
            isolation: self.isolation.wire() as i32,
            mutations,
            read_keys: reads.keys.into_iter().collect(),
            read_ranges: reads
                .ranges
                .into_iter()
                .map(|(start, end)| proto::TxnReadRange { start, end })
                .collect(),
        };
        let max_bytes = self.client.config().max_message_bytes;
        // A commit is idempotent (same start timestamp, same writes): retrying one whose
        // answer was lost returns its outcome.
        let response = self
            .client
            .routers()
            .call(OpKind::Write, "commit", |channel, timeout| {
                let request = with_deadline(message.clone(), timeout);
                async move { txn_client(channel, max_bytes).commit(request).await }
            })
            .await?;
        Ok(Committed {
            commit_ts: response.commit_ts,
            one_phase: response.one_phase,
        })
    }

    /// Drops the transaction: nothing was locked or written before a commit.
    pub fn rollback(self) {}
}

/// A value the transaction wrote itself: it has no version until the commit.
fn own(value: Vec<u8>) -> Versioned {
    Versioned { version: 0, value }
}

/// A committed value (absent: empty) with the transaction's pending append.
fn appended(committed: Option<Versioned>, suffix: &[u8]) -> Versioned {
    let mut value = committed.map(|found| found.value).unwrap_or_default();
    value.extend_from_slice(suffix);
    own(value)
}

/// Where a collection of old transaction records is ([`Client::collect_txn_records`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnGcProgress {
    /// `resolve` (locks below the safe point), `purge` (records below it) or `done`.
    pub phase: &'static str,
    /// Shards finished in this phase, of `shards`.
    pub shards_done: u32,
    pub shards: u32,
    /// Records of transactions that started below this oracle timestamp go.
    pub safe_point: u64,
    pub locks_resolved: u64,
    pub records_purged: u64,
}

impl From<proto::TxnGcProgress> for TxnGcProgress {
    fn from(progress: proto::TxnGcProgress) -> Self {
        use proto::txn_gc_progress::Phase;
        let phase = match Phase::try_from(progress.phase) {
            Ok(Phase::Resolve) => "resolve",
            Ok(Phase::Purge) => "purge",
            Ok(Phase::Done) => "done",
            Err(_) => "unknown",
        };
        TxnGcProgress {
            phase,
            shards_done: progress.shards_done,
            shards: progress.shards,
            safe_point: progress.safe_point,
            locks_resolved: progress.locks_resolved,
            records_purged: progress.records_purged,
        }
    }
}

impl Client {
    /// Collects the records of transactions older than `age` now (`None`: the router's
    /// `txn_gc_age_ms`), as routers do on their own every `txn_gc_interval_ms`: resolves
    /// every lock below the safe point on every shard, then deletes the records of finished
    /// transactions below it. `on_progress` sees each step the router reports (some may be
    /// skipped when the client reads slowly); the final one (`done`) is returned. Not
    /// retried: running it again is safe.
    pub async fn collect_txn_records(
        &self,
        age: Option<std::time::Duration>,
        mut on_progress: impl FnMut(&TxnGcProgress),
    ) -> Result<TxnGcProgress, Error> {
        let message = proto::TxnGcRequest {
            age_ms: age.map_or(0, |age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX).max(1)),
        };
        let max_bytes = self.config().max_message_bytes;
        let mut stream = self
            .routers()
            .call(OpKind::Read, "txn gc", |channel, timeout| {
                let request = with_deadline(message, timeout);
                async move { txn_client(channel, max_bytes).gc(request).await }
            })
            .await?;
        loop {
            match stream.message().await {
                Ok(Some(step)) => {
                    let step = TxnGcProgress::from(step);
                    on_progress(&step);
                    if step.phase == "done" {
                        return Ok(step);
                    }
                }
                Ok(None) => {
                    return Err(Error::Unavailable(
                        "the collection's stream ended before it was done".to_string(),
                    ))
                }
                Err(status) => return Err(crate::error::Failure::from_status(&status).error),
            }
        }
    }
}

/// What became of a transaction whose commit ended with "outcome unknown".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnState {
    /// Still being committed: ask again.
    Pending,
    Committed {
        commit_ts: u64,
    },
    Aborted,
}

impl Client {
    /// The state of transaction `start_ts` with primary key `primary` (named in an
    /// "outcome unknown" error). One still pending past its time to live is rolled back.
    pub async fn txn_status(&self, start_ts: u64, primary: impl AsRef<[u8]>) -> Result<TxnState, Error> {
        let message = proto::TxnStatusRequest {
            start_ts,
            primary: primary.as_ref().to_vec(),
        };
        let max_bytes = self.config().max_message_bytes;
        let response = self
            .routers()
            .call(OpKind::Read, "txn status", |channel, timeout| {
                let request = with_deadline(message.clone(), timeout);
                async move { txn_client(channel, max_bytes).status(request).await }
            })
            .await?;
        Ok(
            match proto::txn_status_response::State::try_from(response.state) {
                Ok(proto::txn_status_response::State::Committed) => TxnState::Committed {
                    commit_ts: response.commit_ts,
                },
                Ok(proto::txn_status_response::State::Aborted) => TxnState::Aborted,
                _ => TxnState::Pending,
            },
        )
    }
}
