//! Garbage collection of transaction records: every router runs it every
//! `txn_gc_interval_ms` (and `Txn.Gc` runs it on demand, streaming its progress to
//! `kvctl txn-gc`).
//!
//! A record on the primary key's shard is what lock resolution asks, so it may go only once
//! no lock will ever ask for it. One collection:
//!
//! 1. takes the **safe point** from the oracle: now − `txn_gc_age_ms`;
//! 2. **resolves every lock** of a transaction that started below it, on every shard (each
//!    committed or rolled back to match its primary's record; one still pending is left,
//!    and so is its record). A shard that cannot be scanned, or a lock that cannot be
//!    resolved, ends the collection before anything is deleted;
//! 3. **collects** on every shard the records below the safe point of transactions that
//!    rolled back or committed below it (`ShardKv.TxnGc`, a Raft entry only where there is
//!    one to delete).
//!
//! A transaction that committed below the safe point took its commit timestamp after every
//! one of its locks was in place, so before step 1: step 2 saw each lock it left, and none
//! comes back. A lock of a rolled-back transaction that shows up later (a prewrite that
//! applied late) finds no record — "forgotten" — and the resolver rolls it back. Every step
//! is idempotent, so routers collecting at once only repeat each other's work.

use std::time::Duration;

use futures::stream::{self, StreamExt};
use ringkv_proto::v1::{txn_gc_progress::Phase, ShardTxnGcRequest, ShardTxnScanLocksRequest, TxnGcProgress};
use ringkv_ring::ShardId;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::context::RouterContext;
use crate::error::RouterError;
use crate::forward::MetLock;
use crate::node_api::{NodeApi, TxnCall, TxnReply};
use crate::tso::TsoClient;

/// Locks read per `TxnScanLocks` call.
const SCAN_LOCKS_PAGE: u32 = 256;
/// Records deleted per `TxnGc` entry.
const PURGE_PAGE: u32 = 256;
/// Time one shard's step may take (its calls retry within it).
const SHARD_STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bits of a timestamp below its milliseconds.
const LOGICAL_BITS: u32 = 18;

/// Runs one collection of records older than `age`, calling `report` after each shard of each
/// phase. Returns the final progress (phase `DONE`).
pub async fn collect<N: NodeApi>(
    ctx: &RouterContext<N>,
    tso: &TsoClient,
    age: Duration,
    mut report: impl FnMut(&TxnGcProgress),
) -> Result<TxnGcProgress, RouterError> {
    let deadline = Instant::now() + SHARD_STEP_TIMEOUT;
    let now = tso.timestamps(1, deadline).await?.start;
    let age_ts = u64::try_from(age.as_millis())
        .unwrap_or(u64::MAX)
        .saturating_mul(1 << LOGICAL_BITS);
    let safe_point = now.saturating_sub(age_ts);
    let view = ctx.topology.wait_for_ring(deadline).await?;
    let shard_count = view.ring.shard_count();
    let mut progress = TxnGcProgress {
        phase: Phase::Resolve as i32,
        shards_done: 0,
        shards: shard_count,
        safe_point,
        locks_resolved: 0,
        records_purged: 0,
    };
    if safe_point == 0 {
        progress.phase = Phase::Done as i32;
        report(&progress);
        return Ok(progress);
    }
    for phase in [Phase::Resolve, Phase::Purge] {
        progress.phase = phase as i32;
        progress.shards_done = 0;
        report(&progress);
        let outcomes: Vec<Result<u64, RouterError>> = stream::iter(0..shard_count)
            .map(|shard| async move {
                let shard = ShardId(shard);
                match phase {
                    Phase::Resolve => resolve_shard(ctx, shard_count, shard, safe_point).await,
                    _ => purge_shard(ctx, shard_count, shard, safe_point).await,
                }
            })
            .buffer_unordered(ctx.max_fanout)
            .inspect(|outcome| {
                progress.shards_done += 1;
                let count = outcome.as_ref().copied().unwrap_or(0);
                match phase {
                    Phase::Resolve => progress.locks_resolved += count,
                    _ => progress.records_purged += count,
                }
                report(&progress);
            })
            .collect()
            .await;
        // Nothing is deleted unless every lock was resolved.
        for outcome in outcomes {
            outcome?;
        }
    }
    progress.phase = Phase::Done as i32;
    report(&progress);
    Ok(progress)
}

/// Resolves every lock below `safe_point` on one shard; the number resolved. A lock that
/// stays (its transaction pending, or unresolvable) is an error: nothing may be collected.
async fn resolve_shard<N: NodeApi>(
    ctx: &RouterContext<N>,
    shard_count: u32,
    shard: ShardId,
    safe_point: u64,
) -> Result<u64, RouterError> {
    let deadline = Instant::now() + SHARD_STEP_TIMEOUT;
    let mut resolved = 0;
    loop {
        let call = TxnCall::ScanLocks(ShardTxnScanLocksRequest {
            shard_id: shard.0,
            below: safe_point,
            limit: SCAN_LOCKS_PAGE,
        });
        let TxnReply::ScanLocks(page) = ctx.forwarder.txn(shard_count, call, deadline).await? else {
            return Err(RouterError::BadNodeResponse {
                shard,
                reason: "not a lock scan in answer to one".to_string(),
            });
        };
        if page.locks.is_empty() {
            return Ok(resolved);
        }
        for lock in page.locks {
            let met = MetLock {
                key: lock.key,
                start_ts: lock.start_ts,
                primary: lock.primary,
            };
            if !ctx.forwarder.resolve_lock(shard_count, met, deadline).await? {
                return Err(RouterError::Unavailable(format!(
                    "transaction {} below the safe point {safe_point} is still pending on shard {}; collect later",
                    lock.start_ts, shard.0
                )));
            }
            resolved += 1;
        }
    }
}

/// Collects the records below `safe_point` on one shard; the number deleted.
async fn purge_shard<N: NodeApi>(
    ctx: &RouterContext<N>,
    shard_count: u32,
    shard: ShardId,
    safe_point: u64,
) -> Result<u64, RouterError> {
    let deadline = Instant::now() + SHARD_STEP_TIMEOUT;
    let mut purged = 0;
    loop {
        let call = TxnCall::Gc(ShardTxnGcRequest {
            shard_id: shard.0,
            safe_point,
            purge_limit: PURGE_PAGE,
        });
        let TxnReply::Gc(page) = ctx.forwarder.txn(shard_count, call, deadline).await? else {
            return Err(RouterError::BadNodeResponse {
                shard,
                reason: "not a collection in answer to one".to_string(),
            });
        };
        purged += page.purged;
        if !page.more {
            return Ok(purged);
        }
    }
}

/// The router's periodic collection: one task, stopped by [`TxnGcTask::shutdown`].
#[derive(Debug)]
pub struct TxnGcTask {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl TxnGcTask {
    /// Collects every `interval` (starting with up to a tenth of jitter, so routers drift
    /// apart).
    pub fn spawn<N: NodeApi>(
        ctx: std::sync::Arc<RouterContext<N>>,
        tso: std::sync::Arc<TsoClient>,
        interval: Duration,
        age: Duration,
    ) -> TxnGcTask {
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        // The first round after one interval and a tenth of jitter, so that routers started
        // together drift apart; a round that overran its tick waits a full interval.
        let jitter = interval.mul_f64(rand::random_range(0.0..0.1));
        let mut ticks = tokio::time::interval_at(Instant::now() + interval + jitter, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let run = collect(&ctx, &tso, age, |_| {});
                let outcome = tokio::select! {
                    () = stop.cancelled() => return,
                    outcome = run => outcome,
                };
                match outcome {
                    Ok(done) if done.records_purged > 0 || done.locks_resolved > 0 => info!(
                        safe_point = done.safe_point,
                        locks_resolved = done.locks_resolved,
                        records_purged = done.records_purged,
                        "collected transaction records"
                    ),
                    Ok(_) => debug!("no transaction record to collect"),
                    Err(err) => {
                        warn!(%err, "transaction record collection did not finish; next round retries")
                    }
                }
            }
        });
        TxnGcTask { cancel, task }
    }

    /// Stops the task (a collection in progress is dropped between calls; every step is
    /// idempotent) and waits for it.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(err) = self.task.await {
            warn!(%err, "transaction record collection task failed");
        }
    }
}
