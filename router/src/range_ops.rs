//! The range operations of the `Kv` service: paged and streamed scans, counts and
//! delete-ranges, each scattered to every shard and gathered back.
//!
//! - Scan: one page of the [`Merger`], at most `limit` entries within the reply budget
//!   ([`RouterContext::reply_budget_bytes`]); the continuation token resumes after its last
//!   key.
//! - ScanStream: the merger drained chunk by chunk as the client reads. The stream is a
//!   `futures` unfold that `streams` polls for one chunk at a time, when the transport asks
//!   for it, so nothing runs ahead of the client: when HTTP/2 flow control stops the
//!   client's window, no shard is asked for more. Router memory is one chunk plus the
//!   cursors' buffers (`stream_buffer_bytes`), under the idle and total deadlines of
//!   `streams`.
//! - Count: every shard counted in parallel (each in bounded calls), progress streamed.
//! - DeleteRange: every shard deleted in parallel in chunks of one Raft entry each, each
//!   chunk with a request id derived from the request's, so retrying the whole request is
//!   safe.
//!
//! Streams refresh their per-round deadline: each round of shard calls gets the request's
//! timeout, so a long scan is bounded per step; the whole is bounded by
//! `stream_total_timeout_ms` (`streams`), and by the client's own deadline.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, Stream, StreamExt};
use ringkv_proto::v1::{
    CountRequest, CountResponse, DeleteRangeRequest, DeleteRangeResponse, ScanRequest, ScanResponse,
    ShardCountRequest, ShardDeleteRangeRequest, ShardScanRequest, ShardScanResponse,
};
use ringkv_ring::ShardId;
use tokio::time::Instant;

use crate::batch::chunk_request_id;
use crate::context::RouterContext;
use crate::error::{to_status, BatchFailure, RouterError};
use crate::node_api::NodeApi;
use crate::range::{decode_token, encode_token, KeyRange};
use crate::scan::{MergeSettings, Merger, ScanSpec, ShardPages};
use crate::streams::ResponseStream;
use crate::validate::{check_read_ts, check_read_uncommitted, parse_consistency, request_id_or_random};

/// The most entries one Scan page returns.
pub const MAX_SCAN_LIMIT: u32 = 10_000;
/// Entries per message of a streamed scan.
const STREAM_CHUNK_ENTRIES: usize = 256;
/// Bytes per message of a streamed scan (at least one entry). Small: the transport holds
/// up to two messages ahead of a reader that stopped reading (and tonic's encoder keeps a
/// buffer of the largest) for as long as the stream is open — 1 MiB messages made an unread
/// stream hold about 4.5 MiB, 256 KiB ones about 2.3 MiB (`tests/tests/scan_memory.rs`).
const STREAM_CHUNK_BYTES: u64 = 256 << 10;
/// Keys one delete-range chunk deletes (one Raft entry).
const DELETE_RANGE_CHUNK_KEYS: u32 = 1000;

/// Shard pages through the forwarder's retry loop.
pub struct ContextPages<N> {
    ctx: Arc<RouterContext<N>>,
    shard_count: u32,
}

impl<N: NodeApi> ShardPages for ContextPages<N> {
    async fn fetch(
        &self,
        request: ShardScanRequest,
        deadline: Instant,
    ) -> Result<ShardScanResponse, RouterError> {
        self.ctx.forwarder.scan(self.shard_count, request, deadline).await
    }
}

/// A scan request after validation: the query range, where to resume, and the merge spec.
struct ParsedScan {
    /// The range as the client gave it (tokens are tied to it).
    query: KeyRange,
    spec: ScanSpec,
}

fn parse_scan(
    ctx: &RouterContext<impl NodeApi>,
    request: &ScanRequest,
    streamed: bool,
) -> Result<ParsedScan, RouterError> {
    let query = KeyRange::parse(&ctx.limits, &request.start, &request.end, &request.prefix)?;
    let consistency = parse_consistency(request.consistency)?;
    check_read_ts(consistency, request.read_ts)?;
    check_read_uncommitted(consistency, request.read_ts, request.read_uncommitted)?;
    let limit = if streamed {
        (request.limit > 0).then_some(u64::from(request.limit))
    } else {
        if request.limit == 0 || request.limit > MAX_SCAN_LIMIT {
            return Err(RouterError::InvalidArgument(format!(
                "limit must be 1..={MAX_SCAN_LIMIT}, got {} (use ScanStream for larger results)",
                request.limit
            )));
        }
        Some(u64::from(request.limit))
    };
    let range = if request.continuation_token.is_empty() {
        query.clone()
    } else {
        let last = decode_token(&query, request.reverse, &request.continuation_token)?;
        query.after(&last, request.reverse)
    };
    Ok(ParsedScan {
        query,
        spec: ScanSpec {
            range,
            reverse: request.reverse,
            keys_only: request.keys_only,
            consistency,
            read_ts: request.read_ts,
            read_uncommitted: request.read_uncommitted,
            allow_partial: request.allow_partial,
            limit,
        },
    })
}

/// The merge of a scan: a page buffers up to `scan_buffer_bytes` of shard pages, a stream
/// (held open while its reader reads) up to `stream_buffer_bytes`.
fn merge_settings(ctx: &RouterContext<impl NodeApi>, streamed: bool) -> MergeSettings {
    MergeSettings {
        max_fanout: ctx.max_fanout,
        budget_bytes: if streamed {
            ctx.stream_buffer_bytes
        } else {
            ctx.scan_buffer_bytes
        },
    }
}

/// The token for the page that ended at the merger's last key, or empty when done.
fn next_token<P: ShardPages>(merger: &Merger<P>, query: &KeyRange, reverse: bool, done: bool) -> Vec<u8> {
    match merger.last_key() {
        Some(last) if !done => encode_token(query, reverse, last),
        _ => Vec::new(),
    }
}

/// `Kv.Scan`: one page in key order.
pub async fn scan<N: NodeApi>(
    ctx: &Arc<RouterContext<N>>,
    request: ScanRequest,
    deadline: Instant,
) -> Result<ScanResponse, RouterError> {
    let parsed = parse_scan(ctx, &request, false)?;
    let limit = parsed.spec.limit.unwrap_or(1) as usize;
    let view = ctx.topology.wait_for_ring(deadline).await?;
    let shard_count = view.ring.shard_count();
    let pages = ContextPages {
        ctx: Arc::clone(ctx),
        shard_count,
    };
    let mut merger = Merger::new(
        pages,
        parsed.spec.clone(),
        shard_count,
        merge_settings(ctx, false),
    );
    // The page ends at the reply budget, whatever its limit: the token resumes after it.
    let max_bytes = ctx.reply_budget_bytes() as u64;
    let chunk = merger.next_chunk(limit, max_bytes, deadline).await?;
    Ok(ScanResponse {
        continuation_token: next_token(&merger, &parsed.query, request.reverse, chunk.exhausted),
        missing_shards: merger.missing_shards(),
        entries: chunk.entries,
    })
}

/// `Kv.ScanStream`: the whole range (or up to its limit) in chunks, as the client reads.
/// `deadline` bounds the opening, and each round of shard calls gets as long.
pub async fn scan_stream<N: NodeApi>(
    ctx: &Arc<RouterContext<N>>,
    request: ScanRequest,
    deadline: Instant,
) -> Result<ResponseStream<ScanResponse>, RouterError> {
    let parsed = parse_scan(ctx, &request, true)?;
    let round_timeout = deadline.saturating_duration_since(Instant::now());
    let view = ctx.topology.wait_for_ring(deadline).await?;
    let shard_count = view.ring.shard_count();
    let pages = ContextPages {
        ctx: Arc::clone(ctx),
        shard_count,
    };
    let merger = Merger::new(pages, parsed.spec.clone(), shard_count, merge_settings(ctx, true));
    let max_bytes = STREAM_CHUNK_BYTES.min(ctx.reply_budget_bytes() as u64);
    let state = StreamState {
        merger,
        query: parsed.query,
        reverse: request.reverse,
        round_timeout,
        max_bytes,
        finished: false,
    };
    let stream = stream::unfold(state, |mut state| async move {
        if state.finished {
            return None;
        }
        let deadline = Instant::now() + state.round_timeout;
        let item = match state
            .merger
            .next_chunk(STREAM_CHUNK_ENTRIES, state.max_bytes, deadline)
            .await
        {
            Ok(chunk) => {
                state.finished = chunk.exhausted || state.merger.limit_reached();
                Ok(ScanResponse {
                    continuation_token: next_token(
                        &state.merger,
                        &state.query,
                        state.reverse,
                        chunk.exhausted,
                    ),
                    missing_shards: state.merger.missing_shards(),
                    entries: chunk.entries,
                })
            }
            Err(err) => {
                state.finished = true;
                Err(to_status(&err))
            }
        };
        Some((item, state))
    });
    Ok(Box::pin(stream))
}

/// What a streamed scan carries between messages.
struct StreamState<N> {
    merger: Merger<ContextPages<N>>,
    query: KeyRange,
    reverse: bool,
    round_timeout: Duration,
    max_bytes: u64,
    finished: bool,
}

/// `Kv.Count`: progress as shards finish, then the exact count. `deadline` bounds the
/// opening, and each shard call gets as long.
pub async fn count<N: NodeApi>(
    ctx: &Arc<RouterContext<N>>,
    request: CountRequest,
    deadline: Instant,
) -> Result<ResponseStream<CountResponse>, RouterError> {
    let range = KeyRange::parse(&ctx.limits, &request.start, &request.end, &request.prefix)?;
    let consistency = parse_consistency(request.consistency)?;
    check_read_ts(consistency, request.read_ts)?;
    let (consistency, read_ts) = (consistency as i32, request.read_ts);
    let round_timeout = deadline.saturating_duration_since(Instant::now());
    let view = ctx.topology.wait_for_ring(deadline).await?;
    let shard_count = view.ring.shard_count();
    let shards: Vec<u32> = if range.is_empty() {
        Vec::new()
    } else {
        (0..shard_count).collect()
    };
    let shards_total = shards.len() as u32;
    let progress = Arc::new(AtomicU64::new(0));
    let counts = {
        let fanout = ctx.max_fanout;
        let ctx = Arc::clone(ctx);
        let progress = Arc::clone(&progress);
        stream::iter(shards)
            .map(move |shard| {
                let ctx = Arc::clone(&ctx);
                let progress = Arc::clone(&progress);
                let range = range.clone();
                async move {
                    let counted = count_shard(
                        &ctx,
                        shard_count,
                        ShardId(shard),
                        range,
                        (consistency, read_ts),
                        round_timeout,
                        &progress,
                    )
                    .await;
                    (ShardId(shard), counted)
                }
            })
            .buffer_unordered(fanout)
    };
    let state = CountState {
        counts: Box::pin(counts),
        progress,
        total: 0,
        shards_done: 0,
        shards_total,
        missing: Vec::new(),
        failures: Vec::new(),
        allow_partial: request.allow_partial,
        finished: false,
    };
    let stream = stream::unfold(state, |mut state| async move {
        if state.finished {
            return None;
        }
        match state.counts.next().await {
            Some((shard, result)) => {
                state.shards_done += 1;
                match result {
                    Ok(count) => state.total += count,
                    Err(err) if state.allow_partial => {
                        drop(err);
                        state.missing.push(shard.0);
                    }
                    Err(err) => state.failures.push((shard, err)),
                }
                let message = CountResponse {
                    count: state.progress.load(Ordering::Relaxed),
                    shards_done: state.shards_done,
                    shards_total: state.shards_total,
                    done: false,
                    missing_shards: Vec::new(),
                };
                Some((Ok(message), state))
            }
            None => {
                state.finished = true;
                if !state.failures.is_empty() {
                    let mut failures = std::mem::take(&mut state.failures);
                    failures.sort_by_key(|(shard, _)| *shard);
                    let err = RouterError::BatchFailed(BatchFailure {
                        operation: "count",
                        total_shards: state.shards_total as usize,
                        failures,
                        partly_applied: false,
                    });
                    return Some((Err(to_status(&err)), state));
                }
                state.missing.sort_unstable();
                let message = CountResponse {
                    count: state.total,
                    shards_done: state.shards_done,
                    shards_total: state.shards_total,
                    done: true,
                    missing_shards: std::mem::take(&mut state.missing),
                };
                Some((Ok(message), state))
            }
        }
    });
    Ok(Box::pin(stream))
}

type ShardCounts = Pin<Box<dyn Stream<Item = (ShardId, Result<u64, RouterError>)> + Send>>;

/// What a count stream carries between messages.
struct CountState {
    counts: ShardCounts,
    /// Keys counted so far, finished shards or not (for progress only).
    progress: Arc<AtomicU64>,
    /// Keys of the shards that finished.
    total: u64,
    shards_done: u32,
    shards_total: u32,
    missing: Vec<u32>,
    failures: Vec<(ShardId, RouterError)>,
    allow_partial: bool,
    finished: bool,
}

/// Counts one shard's part of `range` in bounded calls, each with a fresh deadline.
async fn count_shard<N: NodeApi>(
    ctx: &RouterContext<N>,
    shard_count: u32,
    shard: ShardId,
    mut rest: KeyRange,
    (consistency, read_ts): (i32, u64),
    round_timeout: Duration,
    progress: &AtomicU64,
) -> Result<u64, RouterError> {
    let mut total = 0u64;
    loop {
        let request = ShardCountRequest {
            shard_id: shard.0,
            start: rest.start.clone(),
            end: rest.end_bytes(),
            limit: 0,
            consistency,
            read_ts,
        };
        let deadline = Instant::now() + round_timeout;
        let response = ctx.forwarder.count(shard_count, request, deadline).await?;
        total += response.count;
        progress.fetch_add(response.count, Ordering::Relaxed);
        if !response.more {
            return Ok(total);
        }
        // Progress is a last key inside what is left: the next call starts after it. A
        // node may count nothing before it, when it ends its answer at the reserved
        // keyspace's edge (an entry applied between the range's pieces there).
        if !rest.contains(&response.last_key) {
            return Err(RouterError::BadNodeResponse {
                shard,
                reason: "a partial count without progress inside the range".to_string(),
            });
        }
        rest = rest.after(&response.last_key, false);
        if rest.is_empty() {
            return Ok(total);
        }
    }
}

/// `Kv.DeleteRange`: every shard in parallel, each in chunks of one Raft entry.
pub async fn delete_range<N: NodeApi>(
    ctx: &Arc<RouterContext<N>>,
    request: DeleteRangeRequest,
    deadline: Instant,
) -> Result<DeleteRangeResponse, RouterError> {
    let everything = request.start.is_empty() && request.end.is_empty() && request.prefix.is_empty();
    if everything && !request.all {
        return Err(RouterError::InvalidArgument(
            "no range given: set start/end or prefix, or all = true to delete every key".to_string(),
        ));
    }
    if request.all && !everything {
        return Err(RouterError::InvalidArgument(
            "all = true deletes every key and takes no start, end or prefix".to_string(),
        ));
    }
    let range = KeyRange::parse(&ctx.limits, &request.start, &request.end, &request.prefix)?;
    let request_id = request_id_or_random(&request.request_id)?;
    if range.is_empty() {
        return Ok(DeleteRangeResponse { deleted: 0 });
    }
    let view = ctx.topology.wait_for_ring(deadline).await?;
    let shard_count = view.ring.shard_count();
    let outcomes: Vec<(ShardId, Result<u64, ShardDeleteFailure>)> = stream::iter(0..shard_count)
        .map(|shard| {
            let range = range.clone();
            async move {
                let shard = ShardId(shard);
                let outcome = delete_shard_range(ctx, shard_count, shard, range, request_id, deadline).await;
                (shard, outcome)
            }
        })
        .buffer_unordered(ctx.max_fanout)
        .collect()
        .await;
    let mut deleted = 0;
    let mut failures = Vec::new();
    // A shard that finished, or a failed shard whose earlier chunks were applied: the
    // delete-range as a whole is then partly applied (outcome unknown), not failed.
    let mut partly_applied = false;
    for (shard, outcome) in outcomes {
        match outcome {
            Ok(count) => {
                deleted += count;
                partly_applied = true;
            }
            Err(failure) => {
                partly_applied |= failure.chunks_applied > 0;
                failures.push((shard, failure.error));
            }
        }
    }
    if !failures.is_empty() {
        failures.sort_by_key(|(shard, _)| *shard);
        return Err(RouterError::BatchFailed(BatchFailure {
            operation: "delete-range",
            total_shards: shard_count as usize,
            failures,
            partly_applied,
        }));
    }
    Ok(DeleteRangeResponse { deleted })
}

/// How one shard's part of a delete-range failed.
struct ShardDeleteFailure {
    error: RouterError,
    /// Chunks applied before the failure.
    chunks_applied: u64,
}

async fn delete_shard_range<N: NodeApi>(
    ctx: &RouterContext<N>,
    shard_count: u32,
    shard: ShardId,
    mut rest: KeyRange,
    request_id: [u8; 16],
    deadline: Instant,
) -> Result<u64, ShardDeleteFailure> {
    let mut deleted = 0;
    for chunk in 0u64.. {
        let failed = |error: RouterError| ShardDeleteFailure {
            error,
            chunks_applied: chunk,
        };
        let request = ShardDeleteRangeRequest {
            shard_id: shard.0,
            request_id: chunk_request_id(&request_id, shard, chunk).to_vec(),
            start: rest.start.clone(),
            end: rest.end_bytes(),
            limit: DELETE_RANGE_CHUNK_KEYS,
        };
        let response = ctx
            .forwarder
            .delete_range(shard_count, request, deadline)
            .await
            .map_err(|err| failed(err.for_request(request_id)))?;
        deleted += response.deleted;
        if !response.more {
            break;
        }
        // Progress is a last key inside what is left: the next chunk starts after it. A
        // node may delete nothing before it: the reserved keyspace's edge, when the chunk
        // ends with the piece of the range below it.
        if !rest.contains(&response.last_deleted) {
            // This chunk was applied too.
            return Err(ShardDeleteFailure {
                error: RouterError::BadNodeResponse {
                    shard,
                    reason: "a partial delete-range without progress inside the range".to_string(),
                },
                chunks_applied: chunk + 1,
            });
        }
        rest = rest.after(&response.last_deleted, false);
        if rest.is_empty() {
            break;
        }
    }
    Ok(deleted)
}
