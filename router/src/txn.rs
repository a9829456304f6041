//! The transaction coordinator: a `Txn.Commit` runs Percolator's two-phase commit over the
//! shards its writes touch, and keeps nothing once it answers.
//!
//! 1. Writes are grouped by shard. The **primary** shard is the one with the most writes
//!    (lowest id on a tie); its smallest key is the primary key, whose shard records the
//!    transaction's status.
//! 2. **Prewrite** on every shard in parallel: each locks all its keys or none. A key locked
//!    by another transaction is resolved (committed or rolled back to match its primary's
//!    record, which rolls back one past its time to live) and the shard prewritten again, a
//!    few times; a lock that stays is an abort (`LOCK_CONFLICT`). A key committed after the
//!    start aborts under repeatable read (`WRITE_CONFLICT`: first committer wins).
//! 3. A **commit timestamp** from the oracle, taken after every lock is in place: any read
//!    at or above it meets the locks or the committed values.
//!    **Serializable only: validate the reads** on every shard they touched, in parallel:
//!    a key read or a range scanned that changed between the start and the commit
//!    timestamp aborts (`SERIALIZATION_FAILURE`). A lock met there is resolved; one of an
//!    older transaction that stays pending aborts this one (wait-die: the younger dies, so
//!    two validations never wait on each other), one of a younger is waited for.
//! 4. **Commit the primary shard** — the commit point. Its record turns committed unless a
//!    reader rolled the transaction back first (`TXN_ABORTED`). A failure here leaves the
//!    outcome unknown (the commit is idempotent and was retried to the deadline): the
//!    client asks `Txn.Status`.
//! 5. **Commit the other shards** after answering, in the background (`secondaries.rs`;
//!    before answering when the background is full), in parallel. One that fails, or that a
//!    shutdown cuts short, is left to readers, who resolve its locks through the primary's
//!    record.
//!
//! On any abort before the commit point, the locks are rolled back (the primary's record
//! first, so nothing can commit it afterwards); a rollback that fails is left to readers
//! too, after the time to live.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use ringkv_proto::v1::{
    txn_conflict, txn_status_response, IsolationLevel, MutationKind, ShardTxnCheckStatusRequest,
    ShardTxnCommitRequest, ShardTxnOnePcRequest, ShardTxnPrewriteRequest, ShardTxnRollbackRequest,
    ShardTxnValidateRequest, TxnCommitRequest, TxnCommitResponse, TxnConflict, TxnMutation, TxnReadRange,
    TxnState, TxnStatusRequest, TxnStatusResponse, WriteKind,
};
use ringkv_ring::ShardId;
use tokio::time::Instant;
use tracing::debug;

use crate::context::RouterContext;
use crate::error::RouterError;
use crate::failpoint::{self, Failpoint};
use crate::forward::{pause, MetLock};
use crate::node_api::{NodeApi, TxnCall, TxnReply};
use crate::tso::TsoClient;

/// How long a transaction stays pending before a reader may roll it back (oracle time).
/// Locks exist only while a commit runs, which takes a few round trips.
pub const TXN_TTL: Duration = Duration::from_secs(5);

/// Rounds of resolving the locks a prewrite or a validation met before giving up with
/// `LOCK_CONFLICT`.
const LOCK_ROUNDS: usize = 4;

/// One shard's part of a transaction.
struct ShardPart {
    shard: ShardId,
    mutations: Vec<TxnMutation>,
}

impl ShardPart {
    fn keys(&self) -> Vec<Vec<u8>> {
        self.mutations
            .iter()
            .map(|mutation| mutation.key.clone())
            .collect()
    }
}

/// Locks still pending after a round of resolution.
#[derive(Default)]
struct LocksLeft {
    pending: bool,
    /// One of them belongs to a transaction older than this one (wait-die: die).
    older_pending: bool,
}

/// What a serializable transaction read on one shard, to validate at its commit.
#[derive(Default)]
struct ShardReads {
    keys: Vec<Vec<u8>>,
    ranges: Vec<TxnReadRange>,
}

/// Why a shard's prewrite did not lock its keys, or its validation failed.
enum PrewriteRefusal {
    /// Locked by live transactions (after resolving what could be resolved).
    Locked(Vec<u8>),
    WriteConflict {
        key: Vec<u8>,
        commit_ts: u64,
    },
    TooOld(Vec<u8>),
    /// Serializable: a key the transaction read was written at `commit_ts`, between its
    /// start and its commit timestamp.
    ReadChanged {
        key: Vec<u8>,
        commit_ts: u64,
    },
    /// The transaction was already committed (a retried commit) at this timestamp.
    AlreadyCommitted(u64),
    /// The transaction was already rolled back.
    RolledBack,
}

/// What an isolation level asks of the commit: whether writes check for conflicts, and
/// whether reads are validated.
fn level_checks(isolation: i32) -> Result<(bool, bool), RouterError> {
    match IsolationLevel::try_from(isolation) {
        Ok(IsolationLevel::Serializable) => Ok((true, true)),
        Ok(IsolationLevel::RepeatableRead) => Ok((true, false)),
        Ok(IsolationLevel::ReadCommitted | IsolationLevel::ReadUncommitted) => Ok((false, false)),
        Err(_) => Err(RouterError::InvalidArgument(format!(
            "unknown isolation level {isolation}"
        ))),
    }
}

/// Checks the read set of a commit: only serializable transactions send one.
fn check_reads(
    limits: &crate::validate::Limits,
    request: &TxnCommitRequest,
    validates: bool,
) -> Result<(), RouterError> {
    let sends_reads = !request.read_keys.is_empty() || !request.read_ranges.is_empty();
    if sends_reads && !validates {
        return Err(RouterError::InvalidArgument(
            "read_keys and read_ranges are validated only for SERIALIZABLE transactions".to_string(),
        ));
    }
    limits.check_keys("read_keys", &request.read_keys)?;
    limits.check_batch_len("read_ranges", request.read_ranges.len())?;
    let max_bound = limits.max_key_bytes + 1;
    for (index, range) in request.read_ranges.iter().enumerate() {
        if range.start.len() > max_bound || range.end.len() > max_bound {
            return Err(RouterError::InvalidArgument(format!(
                "read_ranges[{index}] has a bound longer than {max_bound} bytes"
            )));
        }
        if !range.end.is_empty() && range.start > range.end {
            return Err(RouterError::InvalidArgument(format!(
                "read_ranges[{index}] starts after its end"
            )));
        }
    }
    Ok(())
}

/// `Txn.Commit`: the two-phase commit of the request's mutations (see the module docs).
pub async fn commit<N: NodeApi>(
    ctx: &Arc<RouterContext<N>>,
    tso: &TsoClient,
    request: TxnCommitRequest,
    deadline: Instant,
) -> Result<TxnCommitResponse, RouterError> {
    let (check_conflicts, validates) = level_checks(request.isolation)?;
    let check_conflicts = check_conflicts && !ctx.unsafe_skip_write_conflict;
    check_reads(&ctx.limits, &request, validates)?;
    let validates = validates && !ctx.unsafe_skip_read_validation;
    if request.start_ts == 0 {
        return Err(RouterError::InvalidArgument(
            "start_ts must be a timestamp of the oracle".to_string(),
        ));
    }
    ctx.limits.check_batch_len("mutations", request.mutations.len())?;
    // One mutation per key: a later one replaces an earlier one.
    let mut writes: BTreeMap<Vec<u8>, (WriteKind, Vec<u8>)> = BTreeMap::new();
    for (index, mutation) in request.mutations.into_iter().enumerate() {
        ctx.limits
            .check_key(&format_args!("mutations[{index}].key"), &mutation.key)?;
        let value = match MutationKind::try_from(mutation.kind) {
            Ok(kind @ (MutationKind::Put | MutationKind::Append)) => {
                ctx.limits
                    .check_value(&format_args!("mutations[{index}].value"), &mutation.value)?;
                let kind = if kind == MutationKind::Put {
                    WriteKind::Put
                } else {
                    WriteKind::Append
                };
                (kind, mutation.value)
            }
            Ok(MutationKind::Delete) => (WriteKind::Delete, Vec::new()),
            Err(_) => {
                return Err(RouterError::InvalidArgument(format!(
                    "mutations[{index}].kind {} is unknown",
                    mutation.kind
                )))
            }
        };
        writes.insert(mutation.key, value);
    }
    if writes.is_empty() {
        // Read-only: its reads were one snapshot, which is serializable at the start (every
        // writer is serialized at its commit timestamp); nothing to commit.
        return Ok(TxnCommitResponse {
            commit_ts: request.start_ts,
            primary: Vec::new(),
            one_phase: false,
        });
    }
    let view = ctx.topology.wait_for_ring(deadline).await?;
    let shard_count = view.ring.shard_count();
    let mut by_shard: BTreeMap<ShardId, Vec<TxnMutation>> = BTreeMap::new();
    for (key, (kind, value)) in writes {
        let shard = view.ring.shard_for_key(&key);
        by_shard.entry(shard).or_default().push(TxnMutation {
            key,
            kind: kind as i32,
            value,
        });
    }
    let mut parts: Vec<ShardPart> = by_shard
        .into_iter()
        .map(|(shard, mutations)| ShardPart { shard, mutations })
        .collect();
    // The primary first: the most writes, the lowest shard id on a tie (a stable sort).
    parts.sort_by_key(|part| std::cmp::Reverse(part.mutations.len()));
    let primary = parts
        .first()
        .and_then(|part| part.mutations.first())
        .map(|mutation| mutation.key.clone())
        .unwrap_or_default();
    // Serializable: each shard validates the keys read on it and every range scanned (a
    // range's keys are spread over all shards).
    let mut reads: BTreeMap<ShardId, ShardReads> = BTreeMap::new();
    if validates {
        for key in request.read_keys {
            let shard = view.ring.shard_for_key(&key);
            reads.entry(shard).or_default().keys.push(key);
        }
        if !request.read_ranges.is_empty() {
            for shard in 0..shard_count {
                reads.entry(ShardId(shard)).or_default().ranges = request.read_ranges.clone();
            }
        }
    }
    let coordinator = Coordinator {
        ctx,
        shard_count,
        start_ts: request.start_ts,
        primary,
        check_conflicts,
        deadline,
    };
    // One shard holds every write (and every read to validate): one entry, no locks.
    if let [part] = parts.as_slice() {
        if reads.keys().all(|shard| *shard == part.shard) {
            return coordinator.one_pc(part, reads.remove(&part.shard)).await;
        }
    }
    coordinator.run(tso, &parts, &reads).await
}

/// One commit in progress.
struct Coordinator<'a, N> {
    ctx: &'a Arc<RouterContext<N>>,
    shard_count: u32,
    start_ts: u64,
    primary: Vec<u8>,
    check_conflicts: bool,
    deadline: Instant,
}

impl<N: NodeApi> Coordinator<'_, N> {
    async fn run(
        &self,
        tso: &TsoClient,
        parts: &[ShardPart],
        reads: &BTreeMap<ShardId, ShardReads>,
    ) -> Result<TxnCommitResponse, RouterError> {
        let fanout = self.ctx.max_fanout;
        let prewrites: Vec<(usize, Result<Option<PrewriteRefusal>, RouterError>)> =
            stream::iter(0..parts.len())
                .map(|index| async move { (index, self.prewrite(&parts[index], index == 0).await) })
                .buffer_unordered(fanout)
                .collect()
                .await;
        let mut refusal = None;
        let mut error = None;
        for (_, outcome) in prewrites {
            match outcome {
                Ok(None) => {}
                Ok(Some(found)) => refusal = refusal.or(Some(found)),
                Err(err) => error = error.or(Some(err)),
            }
        }
        if let Some(PrewriteRefusal::AlreadyCommitted(commit_ts)) = refusal {
            return Ok(self.committed(commit_ts));
        }
        if refusal.is_some() || error.is_some() {
            self.roll_back(parts).await;
            return Err(match (refusal, error) {
                (Some(refusal), _) => abort(self.start_ts, refusal),
                (None, Some(err)) => err,
                (None, None) => RouterError::Internal("an abort without a reason".to_string()),
            });
        }
        failpoint::check(self.ctx.failpoint, Failpoint::TxnExitAfterPrewrite);
        let commit_ts = tso.timestamps(1, self.deadline).await?.start;
        if !reads.is_empty() {
            let refusal = match self.validate(reads, commit_ts).await {
                Ok(refusal) => refusal,
                Err(err) => {
                    self.roll_back(parts).await;
                    return Err(err);
                }
            };
            if let Some(refusal) = refusal {
                self.roll_back(parts).await;
                return Err(abort(self.start_ts, refusal));
            }
        }
        let Some((primary_part, others)) = parts.split_first() else {
            return Err(RouterError::Internal("a commit without a shard".to_string()));
        };
        let primary_commit = TxnCall::Commit(ShardTxnCommitRequest {
            shard_id: primary_part.shard.0,
            start_ts: self.start_ts,
            commit_ts,
            keys: primary_part.keys(),
            primary: true,
        });
        let status = match self
            .ctx
            .forwarder
            .txn_status(self.shard_count, primary_commit, self.deadline)
            .await
        {
            Ok(status) => status,
            Err(err) => {
                return Err(RouterError::TxnOutcomeUnknown {
                    start_ts: self.start_ts,
                    primary: self.primary.clone(),
                    detail: err.to_string(),
                })
            }
        };
        let commit_ts = match TxnState::try_from(status.state) {
            Ok(TxnState::Committed) => status.commit_ts,
            Ok(TxnState::RolledBack) => {
                self.roll_back(others).await;
                return Err(RouterError::TxnAborted {
                    reason: "TXN_ABORTED",
                    retryable: true,
                    detail: format!(
                        "transaction {} was rolled back by another client before it committed (its time to live ran out)",
                        self.start_ts
                    ),
                });
            }
            _ => {
                return Err(RouterError::TxnOutcomeUnknown {
                    start_ts: self.start_ts,
                    primary: self.primary.clone(),
                    detail: format!("the primary's commit answered state {}", status.state),
                })
            }
        };
        failpoint::check(self.ctx.failpoint, Failpoint::TxnExitAfterPrimaryCommit);
        // Committed. The other shards' locks commit after the answer when there is room in
        // the background (`secondaries.rs`), else now; any left are resolved by readers.
        let commits: Vec<ShardTxnCommitRequest> = others
            .iter()
            .map(|part| ShardTxnCommitRequest {
                shard_id: part.shard.0,
                start_ts: self.start_ts,
                commit_ts,
                keys: part.keys(),
                primary: false,
            })
            .collect();
        if commits.is_empty() {
            return Ok(self.committed(commit_ts));
        }
        match self.ctx.secondaries.slot() {
            Some(slot) => {
                let ctx = Arc::clone(self.ctx);
                let shard_count = self.shard_count;
                // Its own deadline: the client's may be about to end, and it is answered.
                let deadline = Instant::now() + ctx.timeouts.default_timeout;
                let background = ctx.secondaries.clone();
                background.spawn(slot, async move {
                    commit_secondaries(&ctx, shard_count, commits, deadline).await;
                });
            }
            None => commit_secondaries(self.ctx, self.shard_count, commits, self.deadline).await,
        }
        Ok(self.committed(commit_ts))
    }

    fn committed(&self, commit_ts: u64) -> TxnCommitResponse {
        TxnCommitResponse {
            commit_ts,
            primary: self.primary.clone(),
            one_phase: false,
        }
    }

    /// Prewrites one shard's part, resolving the locks it meets for a few rounds.
    async fn prewrite(
        &self,
        part: &ShardPart,
        is_primary: bool,
    ) -> Result<Option<PrewriteRefusal>, RouterError> {
        let request = ShardTxnPrewriteRequest {
            shard_id: part.shard.0,
            start_ts: self.start_ts,
            primary: self.primary.clone(),
            mutations: part.mutations.clone(),
            check_conflicts: self.check_conflicts,
            ttl_ms: if is_primary { TXN_TTL.as_millis() as u64 } else { 0 },
        };
        let mut backoff = self.ctx.forwarder.backoff();
        for round in 0..LOCK_ROUNDS {
            let reply = self
                .ctx
                .forwarder
                .txn(
                    self.shard_count,
                    TxnCall::Prewrite(request.clone()),
                    self.deadline,
                )
                .await?;
            let TxnReply::Prewrite(response) = reply else {
                return Err(RouterError::BadNodeResponse {
                    shard: part.shard,
                    reason: "a status answer to a prewrite".to_string(),
                });
            };
            let Some(refusal) = self.refusal(&response.conflicts) else {
                return Ok(None);
            };
            let PrewriteRefusal::Locked(_) = refusal else {
                return Ok(Some(refusal));
            };
            // Resolve every lock met (each asks its primary), then try again.
            let mut pending = false;
            pending |= self.resolve_locks(&response.conflicts).await?.pending;
            if round + 1 == LOCK_ROUNDS {
                return Ok(Some(refusal));
            }
            if pending {
                pause(&mut backoff, self.deadline).await;
            }
        }
        Ok(None)
    }

    /// Commits a single-shard transaction in one entry (`ShardKv.TxnOnePc`), resolving the
    /// locks it meets for a few rounds (each round is a new entry at a new timestamp).
    async fn one_pc(
        &self,
        part: &ShardPart,
        reads: Option<ShardReads>,
    ) -> Result<TxnCommitResponse, RouterError> {
        let reads = reads.unwrap_or_default();
        let request = ShardTxnOnePcRequest {
            shard_id: part.shard.0,
            start_ts: self.start_ts,
            mutations: part.mutations.clone(),
            check_conflicts: self.check_conflicts,
            read_keys: reads.keys,
            read_ranges: reads.ranges,
        };
        let mut backoff = self.ctx.forwarder.backoff();
        for round in 0..LOCK_ROUNDS {
            let call = TxnCall::OnePc(request.clone());
            let reply = match self
                .ctx
                .forwarder
                .txn(self.shard_count, call, self.deadline)
                .await
            {
                Ok(reply) => reply,
                Err(
                    err @ (RouterError::InvalidArgument(_)
                    | RouterError::BadField { .. }
                    | RouterError::Node { .. }),
                ) => return Err(err),
                // The entry may have been committed: its record says.
                Err(err) => {
                    return Err(RouterError::TxnOutcomeUnknown {
                        start_ts: self.start_ts,
                        primary: self.primary.clone(),
                        detail: err.to_string(),
                    })
                }
            };
            let TxnReply::OnePc(response) = reply else {
                return Err(RouterError::BadNodeResponse {
                    shard: part.shard,
                    reason: "not a one-phase commit's answer".to_string(),
                });
            };
            let refusal = match self.refusal(&response.conflicts) {
                None => return Ok(self.committed_in_one_phase(response.commit_ts)),
                Some(PrewriteRefusal::AlreadyCommitted(commit_ts)) => {
                    return Ok(self.committed_in_one_phase(commit_ts))
                }
                Some(PrewriteRefusal::Locked(key)) => key,
                Some(other) => return Err(abort(self.start_ts, other)),
            };
            let mut pending = false;
            pending |= self.resolve_locks(&response.conflicts).await?.pending;
            if round + 1 == LOCK_ROUNDS {
                return Err(abort(self.start_ts, PrewriteRefusal::Locked(refusal)));
            }
            if pending {
                pause(&mut backoff, self.deadline).await;
            }
        }
        Err(RouterError::Internal(
            "a one-phase commit without an outcome".to_string(),
        ))
    }

    fn committed_in_one_phase(&self, commit_ts: u64) -> TxnCommitResponse {
        TxnCommitResponse {
            one_phase: true,
            ..self.committed(commit_ts)
        }
    }

    /// Validates the reads on every shard they touched, in parallel: the first refusal
    /// met, if any.
    async fn validate(
        &self,
        reads: &BTreeMap<ShardId, ShardReads>,
        commit_ts: u64,
    ) -> Result<Option<PrewriteRefusal>, RouterError> {
        let shards: Vec<(ShardId, &ShardReads)> =
            reads.iter().map(|(shard, reads)| (*shard, reads)).collect();
        let shards = &shards;
        let outcomes: Vec<Result<Option<PrewriteRefusal>, RouterError>> = stream::iter(0..shards.len())
            .map(|index| async move {
                let (shard, shard_reads) = shards[index];
                self.validate_shard(shard, shard_reads, commit_ts).await
            })
            .buffer_unordered(self.ctx.max_fanout)
            .collect()
            .await;
        let mut error = None;
        for outcome in outcomes {
            match outcome {
                Ok(Some(refusal)) => return Ok(Some(refusal)),
                Ok(None) => {}
                Err(err) => error = error.or(Some(err)),
            }
        }
        error.map_or(Ok(None), Err)
    }

    /// Validates the reads on one shard, resolving the locks it meets (wait-die: a pending
    /// lock of an older transaction aborts this one; one of a younger is waited for, a few
    /// rounds).
    async fn validate_shard(
        &self,
        shard: ShardId,
        reads: &ShardReads,
        commit_ts: u64,
    ) -> Result<Option<PrewriteRefusal>, RouterError> {
        let request = ShardTxnValidateRequest {
            shard_id: shard.0,
            start_ts: self.start_ts,
            commit_ts,
            keys: reads.keys.clone(),
            ranges: reads.ranges.clone(),
        };
        let mut backoff = self.ctx.forwarder.backoff();
        for round in 0..LOCK_ROUNDS {
            let reply = self
                .ctx
                .forwarder
                .txn(
                    self.shard_count,
                    TxnCall::Validate(request.clone()),
                    self.deadline,
                )
                .await?;
            let TxnReply::Validate(response) = reply else {
                return Err(RouterError::BadNodeResponse {
                    shard,
                    reason: "a status answer to a read validation".to_string(),
                });
            };
            let Some(refusal) = self.refusal(&response.conflicts) else {
                return Ok(None);
            };
            let refusal = match refusal {
                PrewriteRefusal::Locked(key) => key,
                other => return Ok(Some(other)),
            };
            let mut waiting = false;
            let left = self.resolve_locks(&response.conflicts).await?;
            if left.older_pending {
                return Ok(Some(PrewriteRefusal::Locked(refusal)));
            }
            waiting |= left.pending;
            if round + 1 == LOCK_ROUNDS {
                return Ok(Some(PrewriteRefusal::Locked(refusal)));
            }
            if waiting {
                pause(&mut backoff, self.deadline).await;
            }
        }
        Ok(None)
    }

    /// Resolves every lock among `conflicts` through its primary's record: what stayed.
    async fn resolve_locks(&self, conflicts: &[TxnConflict]) -> Result<LocksLeft, RouterError> {
        let mut left = LocksLeft::default();
        for conflict in conflicts {
            if txn_conflict::Kind::try_from(conflict.kind) != Ok(txn_conflict::Kind::Locked) {
                continue;
            }
            let lock = MetLock {
                key: conflict.key.clone(),
                start_ts: conflict.start_ts,
                primary: conflict.primary.clone(),
            };
            let older = lock.start_ts < self.start_ts;
            if !self
                .ctx
                .forwarder
                .resolve_lock(self.shard_count, lock, self.deadline)
                .await?
            {
                left.pending = true;
                left.older_pending |= older;
            }
        }
        Ok(left)
    }

    /// The refusal a prewrite's conflicts amount to (`None`: no conflicts). Anything other
    /// than locks is final; locks are resolved and retried.
    fn refusal(&self, conflicts: &[TxnConflict]) -> Option<PrewriteRefusal> {
        let mut locked = None;
        for conflict in conflicts {
            match txn_conflict::Kind::try_from(conflict.kind) {
                Ok(txn_conflict::Kind::Locked) => locked = locked.or(Some(conflict.key.clone())),
                Ok(txn_conflict::Kind::WriteConflict) => {
                    return Some(PrewriteRefusal::WriteConflict {
                        key: conflict.key.clone(),
                        commit_ts: conflict.commit_ts,
                    })
                }
                Ok(txn_conflict::Kind::TooOld) => return Some(PrewriteRefusal::TooOld(conflict.key.clone())),
                Ok(txn_conflict::Kind::ReadChanged) => {
                    return Some(PrewriteRefusal::ReadChanged {
                        key: conflict.key.clone(),
                        commit_ts: conflict.commit_ts,
                    })
                }
                Ok(txn_conflict::Kind::Finished) => {
                    return Some(match TxnState::try_from(conflict.state) {
                        Ok(TxnState::Committed) => PrewriteRefusal::AlreadyCommitted(conflict.commit_ts),
                        _ => PrewriteRefusal::RolledBack,
                    })
                }
                Err(_) => return Some(PrewriteRefusal::RolledBack),
            }
        }
        locked.map(PrewriteRefusal::Locked)
    }

    /// Rolls the transaction back on `parts`: the primary's record first (when among them),
    /// so nothing commits it afterwards, then the rest in parallel. Failures are left to
    /// readers (the locks expire).
    async fn roll_back(&self, parts: &[ShardPart]) {
        let rollback = |part: &ShardPart, primary: bool| {
            TxnCall::Rollback(ShardTxnRollbackRequest {
                shard_id: part.shard.0,
                start_ts: self.start_ts,
                keys: part.keys(),
                primary,
            })
        };
        let mut rest = parts;
        if let Some(first) = parts.first() {
            if first
                .mutations
                .iter()
                .any(|mutation| mutation.key == self.primary)
            {
                let call = rollback(first, true);
                if let Err(err) = self
                    .ctx
                    .forwarder
                    .txn(self.shard_count, call, self.deadline)
                    .await
                {
                    debug!(start_ts = self.start_ts, %err, "rollback of the primary left to readers");
                }
                rest = &parts[1..];
            }
        }
        let fanout = self.ctx.max_fanout;
        stream::iter(0..rest.len())
            .map(|index| async move {
                let part = &rest[index];
                let call = rollback(part, false);
                if let Err(err) = self
                    .ctx
                    .forwarder
                    .txn(self.shard_count, call, self.deadline)
                    .await
                {
                    debug!(start_ts = self.start_ts, shard = part.shard.0, %err, "rollback left to readers");
                }
            })
            .buffer_unordered(fanout)
            .collect::<Vec<()>>()
            .await;
    }
}

/// The abort a prewrite refusal amounts to.
/// Commits a committed transaction's locks on the shards other than the primary's, in
/// parallel; a commit that fails is left to readers (they resolve through the primary).
async fn commit_secondaries<N: NodeApi>(
    ctx: &RouterContext<N>,
    shard_count: u32,
    commits: Vec<ShardTxnCommitRequest>,
    deadline: Instant,
) {
    stream::iter(commits)
        .map(|commit| async move {
            let (start_ts, shard) = (commit.start_ts, commit.shard_id);
            let call = TxnCall::Commit(commit);
            if let Err(err) = ctx.forwarder.txn_status(shard_count, call, deadline).await {
                debug!(start_ts, shard, %err, "secondary commit left to readers");
            }
        })
        .buffer_unordered(ctx.max_fanout)
        .collect::<Vec<()>>()
        .await;
}

fn abort(start_ts: u64, refusal: PrewriteRefusal) -> RouterError {
    let key = |key: &[u8]| String::from_utf8_lossy(key).into_owned();
    match refusal {
        PrewriteRefusal::Locked(locked) => RouterError::TxnAborted {
            reason: "LOCK_CONFLICT",
            retryable: true,
            detail: format!("key {} stayed locked by another transaction", key(&locked)),
        },
        PrewriteRefusal::WriteConflict { key: written, commit_ts } => RouterError::TxnAborted {
            reason: "WRITE_CONFLICT",
            retryable: true,
            detail: format!(
                "key {} was committed at {commit_ts}, after this transaction started at {start_ts}",
                key(&written)
            ),
        },
        PrewriteRefusal::ReadChanged { key: read, commit_ts } => RouterError::TxnAborted {
            reason: "SERIALIZATION_FAILURE",
            retryable: true,
            detail: format!(
                "key {} read by this transaction (started at {start_ts}) was written at {commit_ts}, before it could commit",
                key(&read)
            ),
        },
        PrewriteRefusal::TooOld(old) => RouterError::TxnAborted {
            reason: "TXN_TOO_OLD",
            retryable: true,
            detail: format!(
                "whether key {} changed since {start_ts} is no longer known (older than the shards' version history)",
                key(&old)
            ),
        },
        PrewriteRefusal::RolledBack => RouterError::TxnAborted {
            reason: "TXN_ABORTED",
            retryable: true,
            detail: format!("transaction {start_ts} was already rolled back"),
        },
        PrewriteRefusal::AlreadyCommitted(_) => RouterError::Internal("a committed transaction aborted".to_string()),
    }
}

/// `Txn.Status`: what became of a transaction, from its primary key's shard (one pending
/// past its time to live is rolled back by asking).
pub async fn status<N: NodeApi>(
    ctx: &RouterContext<N>,
    request: TxnStatusRequest,
    deadline: Instant,
) -> Result<TxnStatusResponse, RouterError> {
    ctx.limits.check_key(&"primary", &request.primary)?;
    let view = ctx.topology.wait_for_ring(deadline).await?;
    let call = TxnCall::CheckStatus(ShardTxnCheckStatusRequest {
        shard_id: view.ring.shard_for_key(&request.primary).0,
        start_ts: request.start_ts,
        primary: request.primary,
    });
    let status = ctx
        .forwarder
        .txn_status(view.ring.shard_count(), call, deadline)
        .await?;
    let (state, commit_ts) = match TxnState::try_from(status.state) {
        Ok(TxnState::Committed) => (txn_status_response::State::Committed, status.commit_ts),
        Ok(TxnState::RolledBack) => (txn_status_response::State::Aborted, 0),
        _ => (txn_status_response::State::Pending, 0),
    };
    Ok(TxnStatusResponse {
        state: state as i32,
        commit_ts,
    })
}
