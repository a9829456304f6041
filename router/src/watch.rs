//! `Kv.Watch`: one stream per client, fed by one `ShardKv.Watch` per shard the target
//! touches (a key: its shard; a prefix or range: every shard, keys being hash-sharded).
//!
//! Each shard is followed by a task of the stream's own (a `JoinSet` the stream owns, so
//! they end with it) that opens the shard's watch at its leader through the forwarder's
//! retry loop, drops the events its [`WatchPosition`] already delivered, and hands each
//! node message on as one `WatchResponse` with the shard's progress. When the node's stream
//! ends or fails retryably (the leader stepped down or died, its state was replaced), the
//! task watches again at the current leader from the shard's progress: nothing is lost,
//! and copies are dropped by the position.
//!
//! Bounds: the messages waiting for the reader take at most `stream_buffer_bytes` (and 256
//! messages): a reader that falls further behind has its watch cut with RESOURCE_EXHAUSTED
//! naming the limit, and everything the watch holds is dropped. The stream takes a stream
//! slot and is served by `streams.rs` (idle and total deadlines).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use ringkv_proto::v1::{
    watch_request::Target, ShardProgress, ShardWatchRequest, WatchRequest, WatchResponse,
};
use ringkv_proto::watch::WatchPosition;
use ringkv_ring::keys::prefix_end;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::context::RouterContext;
use crate::error::{to_status, RouterError};
use crate::node_api::NodeApi;
use crate::streams::ResponseStream;
use crate::tso::TsoClient;

/// Most messages waiting for the reader (besides the byte bound).
const MAX_BUFFERED_MESSAGES: usize = 256;
/// Pause before watching a shard again after its stream ended.
const REOPEN_PAUSE: Duration = Duration::from_millis(50);

/// What the shard tasks of one watch share with its stream.
struct Shared {
    /// Bytes of messages waiting for the reader.
    buffered: AtomicUsize,
    limit_bytes: usize,
    /// The error that ends the watch, delivered before anything still buffered.
    failure: Mutex<Option<Status>>,
    failed: Notify,
}

impl Shared {
    fn fail(&self, status: Status) {
        let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        failure.get_or_insert(status);
        drop(failure);
        self.failed.notify_one();
    }

    fn take_failure(&self) -> Option<Status> {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// One shard's part of a watch.
#[derive(Clone)]
struct ShardWatch {
    shard_id: u32,
    shard_count: u32,
    start: Vec<u8>,
    end: Vec<u8>,
    keys_only: bool,
    /// Changes after it, until the first progress (a watch from now holds its opening
    /// timestamp as progress from the start, see [`watch`]).
    start_ts: u64,
}

/// The keys a watch follows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Watched {
    /// `[start, end)`; an empty end: no end.
    start: Vec<u8>,
    end: Vec<u8>,
    /// The single key, when it watches one (its shard alone is watched).
    key: Option<Vec<u8>>,
}

impl Watched {
    fn range(start: &[u8], end: &[u8]) -> Watched {
        Watched {
            start: start.to_vec(),
            end: end.to_vec(),
            key: None,
        }
    }
}

/// What `request` watches, checked.
fn target_range(request: &WatchRequest, max_key_bytes: usize) -> Result<Watched, RouterError> {
    let too_long = |what: &str, bytes: &[u8]| {
        (bytes.len() > max_key_bytes).then(|| {
            RouterError::InvalidArgument(format!(
                "watch {what} is {} bytes, the limit is {max_key_bytes} (max_key_bytes)",
                bytes.len()
            ))
        })
    };
    match &request.target {
        None => Err(RouterError::InvalidArgument(
            "a watch names a key, a prefix or a range".to_string(),
        )),
        Some(Target::Key(key)) => {
            if key.is_empty() {
                return Err(RouterError::InvalidArgument(
                    "watch key must not be empty".to_string(),
                ));
            }
            if let Some(err) = too_long("key", key) {
                return Err(err);
            }
            let mut end = key.clone();
            end.push(0);
            Ok(Watched {
                start: key.clone(),
                end,
                key: Some(key.clone()),
            })
        }
        Some(Target::Prefix(prefix)) => {
            if let Some(err) = too_long("prefix", prefix) {
                return Err(err);
            }
            Ok(Watched::range(prefix, &prefix_end(prefix).unwrap_or_default()))
        }
        Some(Target::Range(range)) => {
            if let Some(err) = too_long("range start", &range.start).or(too_long("range end", &range.end)) {
                return Err(err);
            }
            if !range.end.is_empty() && range.start > range.end {
                return Err(RouterError::InvalidArgument(
                    "watch range start is greater than its end".to_string(),
                ));
            }
            Ok(Watched::range(&range.start, &range.end))
        }
    }
}

/// Opens a watch: one task per shard it touches, fanned in to one stream.
///
/// A watch from now (`start_ts` 0) starts at an oracle timestamp `T` taken as it opens: the
/// first message gives every shard not resumed the progress `T`, and every stream of such a
/// shard opens from its progress, the first one from `T` too — not from the node's own
/// "now", which is later by the time the stream reaches it and would lose what committed in
/// between (a put acknowledged after the first message, committed above `T`, applied
/// before the node's watch subscribed). A node whose applied timestamps are all at or
/// below `T` opens such a watch without a catch-up read of the range
/// (`raft/state_machine/watches.rs`), so a watch from now stays cheap on a quiet shard.
pub async fn watch<N: NodeApi>(
    ctx: &Arc<RouterContext<N>>,
    tso: &TsoClient,
    request: WatchRequest,
    deadline: Instant,
) -> Result<ResponseStream<WatchResponse>, RouterError> {
    let Watched { start, end, key } = target_range(&request, ctx.limits.max_key_bytes)?;
    let view = ctx.topology.wait_for_ring(deadline).await?;
    let shard_count = view.ring.shard_count();
    let shards: Vec<u32> = match &key {
        Some(key) => vec![view.ring.shard_for_key(key).0],
        None => (0..shard_count).collect(),
    };
    let mut position = WatchPosition::from_progress(&request.resume);
    let from_now_ts = match request.start_ts {
        0 => Some(tso.timestamps(1, deadline).await?.start),
        _ => None,
    };
    let mut opening = Vec::new();
    // Every shard not resumed starts at the opening timestamp, its first stream included.
    if let Some(now_ts) = from_now_ts {
        for &shard_id in &shards {
            if position.progress(shard_id) == 0 {
                position.advance(shard_id, now_ts);
                opening.push(ShardProgress { shard_id, ts: now_ts });
            }
        }
    }
    let shared = Arc::new(Shared {
        buffered: AtomicUsize::new(0),
        limit_bytes: ctx.stream_buffer_bytes as usize,
        failure: Mutex::new(None),
        failed: Notify::new(),
    });
    let (tx, rx) = mpsc::channel(MAX_BUFFERED_MESSAGES);
    if !opening.is_empty() {
        // First in the channel, before any shard task runs; it cannot be full yet.
        let first = WatchResponse {
            events: Vec::new(),
            progress: opening,
        };
        shared.buffered.fetch_add(message_bytes(&first), Ordering::SeqCst);
        let _ = tx.try_send(first);
    }
    let open_timeout = deadline.saturating_duration_since(Instant::now());
    let mut tasks = JoinSet::new();
    for shard_id in shards {
        let shard = ShardWatch {
            shard_id,
            shard_count,
            start: start.clone(),
            end: end.clone(),
            keys_only: request.keys_only,
            start_ts: request.start_ts,
        };
        tasks.spawn(follow_shard(
            Arc::clone(ctx),
            shard,
            position.clone(),
            open_timeout,
            tx.clone(),
            Arc::clone(&shared),
        ));
    }
    drop(tx);
    let state = (rx, shared, tasks, false);
    Ok(Box::pin(futures::stream::unfold(
        state,
        |(mut rx, shared, tasks, done)| async move {
            if done {
                return None;
            }
            let next = tokio::select! {
                biased;
                () = shared.failed.notified() => None,
                message = rx.recv() => message,
            };
            if let Some(status) = shared.take_failure() {
                return Some((Err(status), (rx, shared, tasks, true)));
            }
            match next {
                Some(message) => {
                    shared
                        .buffered
                        .fetch_sub(message_bytes(&message), Ordering::SeqCst);
                    Some((Ok(message), (rx, shared, tasks, false)))
                }
                // Every shard task ended without a failure: only at shutdown.
                None => Some((
                    Err(Status::unavailable("watch ended: the router is shutting down")),
                    (rx, shared, tasks, true),
                )),
            }
        },
    )))
}

/// What a message costs in the buffer: its keys and values, and a little per event.
fn message_bytes(message: &WatchResponse) -> usize {
    let events: usize = message
        .events
        .iter()
        .map(|event| event.key.len() + event.value.len() + 32)
        .sum();
    events + 16 * message.progress.len()
}

/// Whether a shard stream that failed with `status` is watched again (from its progress).
fn reopens(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Cancelled | Code::Unknown | Code::DeadlineExceeded | Code::Aborted
    )
}

/// Follows one shard until the watch ends: opens its watch at the leader, hands on what
/// is new, and watches again from the shard's progress when the node's stream ends.
async fn follow_shard<N: NodeApi>(
    ctx: Arc<RouterContext<N>>,
    shard: ShardWatch,
    mut position: WatchPosition,
    open_timeout: Duration,
    tx: mpsc::Sender<WatchResponse>,
    shared: Arc<Shared>,
) {
    loop {
        let after_ts = match position.progress(shard.shard_id) {
            0 => shard.start_ts,
            progress => progress,
        };
        let request = ShardWatchRequest {
            shard_id: shard.shard_id,
            start: shard.start.clone(),
            end: shard.end.clone(),
            after_ts,
            keys_only: shard.keys_only,
        };
        let deadline = Instant::now() + open_timeout;
        let mut stream = match ctx.forwarder.watch(shard.shard_count, request, deadline).await {
            Ok(stream) => stream,
            Err(err) => return shared.fail(to_status(&err)),
        };
        while let Some(message) = stream.next().await {
            let message = match message {
                Ok(message) => message,
                Err(status) if reopens(&status) => {
                    tracing::debug!(shard = shard.shard_id, %status, "watch stream of a shard ended; watching again");
                    break;
                }
                Err(status) => return shared.fail(status),
            };
            let mut events = Vec::with_capacity(message.events.len());
            for event in message.events {
                match position.admit(&event) {
                    Ok(true) => events.push(event),
                    Ok(false) => {}
                    Err(_) => {
                        return shared.fail(Status::resource_exhausted(format!(
                            "watch of shard {}: more than {} events delivered above its progress \
                             (MAX_EVENTS_ABOVE_PROGRESS); watch again from the last progress",
                            shard.shard_id,
                            ringkv_proto::watch::MAX_EVENTS_ABOVE_PROGRESS
                        )))
                    }
                }
            }
            let mut progress = Vec::new();
            if message.progress_ts > position.progress(shard.shard_id) {
                position.advance(shard.shard_id, message.progress_ts);
                progress.push(ShardProgress {
                    shard_id: shard.shard_id,
                    ts: message.progress_ts,
                });
            }
            if events.is_empty() && progress.is_empty() {
                continue;
            }
            let response = WatchResponse { events, progress };
            let bytes = message_bytes(&response);
            let buffered = shared.buffered.fetch_add(bytes, Ordering::SeqCst) + bytes;
            let lagging = || {
                Status::resource_exhausted(format!(
                    "watch cut: its reader fell behind, more than {} bytes of events waited unread \
                     (stream_buffer_bytes); watch again from the last progress",
                    shared.limit_bytes
                ))
            };
            if buffered > shared.limit_bytes {
                return shared.fail(lagging());
            }
            match tx.try_send(response) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => return shared.fail(lagging()),
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(REOPEN_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use ringkv_proto::v1::{
        GetTimestampsRequest, GetTimestampsResponse, KeyRange, NodeStatusResponse, ShardCountRequest,
        ShardCountResponse, ShardDeleteRangeRequest, ShardDeleteRangeResponse, ShardReadRequest,
        ShardReadResponse, ShardScanRequest, ShardScanResponse, ShardWatchResponse, ShardWriteRequest,
        ShardWriteResponse,
    };

    use super::*;
    use crate::config::RouterConfig;
    use crate::forward::tests::topology_3_nodes;
    use crate::node_api::ShardWatchStream;

    /// The oracle's only timestamp in [`FakeShard`].
    const OPENING_TS: u64 = 7_000;

    /// Nodes whose oracle answers [`OPENING_TS`] and whose shard watch breaks (UNAVAILABLE)
    /// before any progress the first time, then stays open after one progress; every
    /// watch's `after_ts` is recorded.
    #[derive(Default)]
    struct FakeShard {
        watch_after: Mutex<Vec<u64>>,
        timestamps: AtomicU64,
    }

    impl NodeApi for FakeShard {
        async fn read(&self, _: &str, _: ShardReadRequest, _: Duration) -> Result<ShardReadResponse, Status> {
            Err(Status::unimplemented("read"))
        }
        async fn write(
            &self,
            _: &str,
            _: ShardWriteRequest,
            _: Duration,
        ) -> Result<ShardWriteResponse, Status> {
            Err(Status::unimplemented("write"))
        }
        async fn scan(&self, _: &str, _: ShardScanRequest, _: Duration) -> Result<ShardScanResponse, Status> {
            Err(Status::unimplemented("scan"))
        }
        async fn count(
            &self,
            _: &str,
            _: ShardCountRequest,
            _: Duration,
        ) -> Result<ShardCountResponse, Status> {
            Err(Status::unimplemented("count"))
        }
        async fn delete_range(
            &self,
            _: &str,
            _: ShardDeleteRangeRequest,
            _: Duration,
        ) -> Result<ShardDeleteRangeResponse, Status> {
            Err(Status::unimplemented("delete range"))
        }
        async fn node_status(&self, _: &str, _: Duration) -> Result<NodeStatusResponse, Status> {
            Err(Status::unimplemented("status"))
        }
        async fn timestamps(
            &self,
            _: &str,
            request: GetTimestampsRequest,
            _: Duration,
        ) -> Result<GetTimestampsResponse, Status> {
            self.timestamps.fetch_add(1, Ordering::SeqCst);
            Ok(GetTimestampsResponse {
                first: OPENING_TS,
                count: request.count,
            })
        }
        async fn watch(
            &self,
            _: &str,
            request: ShardWatchRequest,
            _: Duration,
        ) -> Result<ShardWatchStream, Status> {
            let first = {
                let mut calls = self.watch_after.lock().unwrap_or_else(PoisonError::into_inner);
                calls.push(request.after_ts);
                calls.len() == 1
            };
            let stream: ShardWatchStream = if first {
                Box::pin(futures::stream::iter([Err(Status::unavailable(
                    "leader stepped down",
                ))]))
            } else {
                let progress = ShardWatchResponse {
                    events: Vec::new(),
                    progress_ts: OPENING_TS + 5,
                };
                Box::pin(futures::stream::iter([Ok(progress)]).chain(futures::stream::pending()))
            };
            Ok(stream)
        }
    }

    /// A watch from now gives its shard the opening timestamp as progress first, and the
    /// shard's streams open from it — the first one too, not from the node's later now
    /// (which would lose what committed in between), and the one after a break before any
    /// progress.
    #[tokio::test]
    async fn a_watch_from_now_reopens_from_its_opening_timestamp() {
        let nodes = Arc::new(FakeShard::default());
        let config = RouterConfig::for_test(vec!["n1:7001".into()]);
        let ctx = Arc::new(RouterContext::new(
            &config,
            Arc::clone(&nodes),
            topology_3_nodes(),
        ));
        let tso = TsoClient::spawn(Arc::clone(&nodes), topology_3_nodes(), Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = watch(&ctx, &tso, request(Target::Key(b"k".to_vec())), deadline)
            .await
            .expect("watch opens");
        let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a first message")
            .expect("the stream goes on")
            .expect("no error");
        assert!(first.events.is_empty());
        assert_eq!(first.progress.len(), 1, "{first:?}");
        assert_eq!(first.progress[0].ts, OPENING_TS, "{first:?}");
        let second = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the reopened stream's progress")
            .expect("the stream goes on")
            .expect("no error");
        assert_eq!(second.progress[0].ts, OPENING_TS + 5, "{second:?}");
        let calls = nodes
            .watch_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert_eq!(
            calls,
            vec![OPENING_TS, OPENING_TS],
            "from the opening timestamp, twice"
        );
        assert_eq!(nodes.timestamps.load(Ordering::SeqCst), 1);
        tso.shutdown().await;
    }

    fn request(target: Target) -> WatchRequest {
        WatchRequest {
            target: Some(target),
            ..WatchRequest::default()
        }
    }

    /// A key watches `[key, key\0)` on its shard, a prefix its range (empty: everything), a
    /// range itself; a missing target, an empty key, an oversized key or a reversed range
    /// is refused.
    #[test]
    fn targets_become_ranges() {
        let key = target_range(&request(Target::Key(b"k".to_vec())), 8).expect("key");
        assert_eq!(
            (key.start.as_slice(), key.end.as_slice()),
            (&b"k"[..], &b"k\0"[..])
        );
        assert_eq!(key.key.as_deref(), Some(&b"k"[..]));
        let prefix = target_range(&request(Target::Prefix(b"ab".to_vec())), 8).expect("prefix");
        assert_eq!(prefix, Watched::range(b"ab", b"ac"));
        let all = target_range(&request(Target::Prefix(Vec::new())), 8).expect("all");
        assert_eq!(all, Watched::range(b"", b""));
        let range = KeyRange {
            start: b"a".to_vec(),
            end: b"c".to_vec(),
        };
        assert_eq!(
            target_range(&request(Target::Range(range)), 8).expect("range"),
            Watched::range(b"a", b"c")
        );
        let refused = [
            WatchRequest::default(),
            request(Target::Key(Vec::new())),
            request(Target::Key(vec![b'k'; 9])),
            request(Target::Range(KeyRange {
                start: b"c".to_vec(),
                end: b"a".to_vec(),
            })),
        ];
        for (case, bad) in refused.iter().enumerate() {
            assert!(
                matches!(target_range(bad, 8), Err(RouterError::InvalidArgument(_))),
                "case {case}"
            );
        }
    }
}
