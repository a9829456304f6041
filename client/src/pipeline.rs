//! `Kv.Pipeline` from the client: gets, puts, deletes and compare-and-swaps to one router
//! go as frames on one stream instead of an HTTP/2 request each (the router's side is
//! `router/src/kv_service/pipeline.rs`; the stream's driver is `ringkv-pipeline`'s).
//!
//! Profiled under 64 clients' gets, the HTTP/2 handling of each unary call (its stream,
//! headers, trailers and task, on both sides) was most of the router's CPU and most of the
//! client's. On a pipeline, the calls that queued while the previous stream message was
//! sent share the next one, and the router answers those ready together in one message.
//!
//! The contract is the unary call's, so the retry loop (`routers.rs`, `retry.rs`) sees no
//! difference: a frame is answered with the response the call would return or the status
//! it would fail with (marks such as "outcome unknown" included). A broken stream fails its
//! frames `UNAVAILABLE` with a connection reset as source (a transport failure after
//! sending: ambiguous for a write, as a unary call's), and a stream that could not be
//! opened fails them as the open failed (a refused connection: nothing was sent). Calls
//! larger than [`MAX_FRAME_BYTES`] go unary (they would hold up the small ones). A router
//! without the RPC (an older version) answers the stream's open `UNIMPLEMENTED` with no
//! message (what a gRPC server says of a method it lacks; a frame refused `UNIMPLEMENTED`
//! by the router carries one): the call goes unary at once and so does every later call
//! to that router. A pipeline whose driver stopped is replaced at the next call. The
//! stream carries the token it was opened with: once the client's token changes (a login
//! renewed it, a refusal made the client forget it) the next call opens a new stream, and
//! a frame refused `UNAUTHENTICATED` drops its stream too. Calls in flight on a replaced
//! stream finish on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ringkv_pipeline::{Pipeline, Protocol};
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_proto::v1::kv_frame::Call;
use ringkv_proto::v1::kv_frame_reply::Answer;
use ringkv_proto::v1::{KvFrame, KvFrameReplies, KvFrames};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use crate::credentials::{AuthChannel, Credentials};

/// Calls larger than this (encoded) go unary.
pub(crate) const MAX_FRAME_BYTES: usize = 32 << 10;
/// Bytes of frames in one stream message: under the smallest `max_request_bytes` a router
/// accepts (its largest key and value plus 64 KiB), so a message never breaks the stream
/// for its size; about 200 small calls.
const MAX_MESSAGE_BYTES: usize = 64 << 10;
/// What a frame adds to its message beyond its call (tags, id, timeout, lengths).
const FRAME_OVERHEAD_BYTES: usize = 24;

/// A frame with its size, measured once.
pub(crate) struct SizedFrame {
    frame: KvFrame,
    bytes: usize,
}

/// Frames to one router over its `Kv` client.
pub(crate) struct KvProtocol {
    client: KvClient<AuthChannel>,
}

impl Protocol for KvProtocol {
    type Request = SizedFrame;
    type Reply = Answer;
    type Frames = KvFrames;
    type Replies = KvFrameReplies;
    const NAME: &'static str = "kv pipeline";

    fn request_bytes(sized: &SizedFrame) -> usize {
        sized.bytes
    }

    fn frames(frames: Vec<(u64, SizedFrame)>) -> KvFrames {
        let frames = frames
            .into_iter()
            .map(|(id, sized)| KvFrame { id, ..sized.frame })
            .collect();
        KvFrames { frames }
    }

    fn replies(replies: KvFrameReplies) -> Vec<(u64, Result<Answer, Status>)> {
        replies
            .replies
            .into_iter()
            .map(|reply| {
                let answer = match reply.answer {
                    Some(Answer::Failed(failed)) => Err(ringkv_pipeline::status::from_frame(failed)),
                    Some(answer) => Ok(answer),
                    None => Err(Status::internal("the router answered a kv frame with nothing")),
                };
                (reply.id, answer)
            })
            .collect()
    }

    async fn open(&mut self, frames: ReceiverStream<KvFrames>) -> Result<Streaming<KvFrameReplies>, Status> {
        Ok(self.client.pipeline(frames).await?.into_inner())
    }
}

/// The pipeline to one router, started on its first call, or the note that the router has
/// none.
pub(crate) struct KvPipeline {
    addr: String,
    channel: AuthChannel,
    max_message_bytes: usize,
    open_timeout: Duration,
    /// Whose token the stream carries (None: the certificate's user).
    credentials: Option<Arc<Credentials>>,
    /// The stream's driver once started, with the credentials' generation when it was
    /// (dropped to reopen with a fresh token).
    current: Mutex<Option<(Arc<Pipeline<KvProtocol>>, u64)>>,
    /// Set when pipelining is off, or once the router answered `UNIMPLEMENTED`.
    unary_only: AtomicBool,
}

impl std::fmt::Debug for KvPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvPipeline")
            .field("addr", &self.addr)
            .field("unary_only", &self.unary_only.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl KvPipeline {
    /// The pipeline to the router at `addr` over `channel`, which sends the token of
    /// `credentials` (nothing starts before the first call); `enabled: false` sends every
    /// call unary.
    pub(crate) fn new(
        addr: String,
        channel: AuthChannel,
        credentials: Option<Arc<Credentials>>,
        max_message_bytes: usize,
        open_timeout: Duration,
        enabled: bool,
    ) -> KvPipeline {
        KvPipeline {
            addr,
            channel,
            max_message_bytes,
            open_timeout,
            credentials,
            current: Mutex::new(None),
            unary_only: AtomicBool::new(!enabled),
        }
    }

    /// Sends `call` as a frame and waits up to `timeout` (the router's deadline for it);
    /// `None` when the call goes unary instead: pipelining is off, the call is larger than
    /// [`MAX_FRAME_BYTES`], or the router has no pipeline.
    pub(crate) async fn call(&self, call: Call, timeout: Duration) -> Option<Result<Answer, Status>> {
        if self.unary_only.load(Ordering::Relaxed) {
            return None;
        }
        let frame = KvFrame {
            id: 0,
            // At least 1: 0 would mean "the router's default".
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX).max(1),
            call: Some(call),
        };
        let bytes = prost::Message::encoded_len(&frame) + FRAME_OVERHEAD_BYTES;
        if bytes > MAX_FRAME_BYTES {
            return None;
        }
        let pipeline = self.pipeline();
        match pipeline.call(SizedFrame { frame, bytes }).await {
            Err(status) if status.code() == Code::Unimplemented && status.message().is_empty() => {
                self.unary_only.store(true, Ordering::Relaxed);
                tracing::info!(router = %self.addr, "the router has no kv pipeline: unary calls to it from now on");
                None
            }
            // A stale token, or a driver that stopped: the next call starts afresh.
            Err(status) if status.code() == Code::Unauthenticated || pipeline.stopped() => {
                self.forget(&pipeline);
                Some(Err(status))
            }
            answered => Some(answered),
        }
    }

    /// The running pipeline, started if there is none or if it carries an older token.
    fn pipeline(&self) -> Arc<Pipeline<KvProtocol>> {
        let generation = self
            .credentials
            .as_ref()
            .map_or(0, |credentials| credentials.generation());
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        match current.as_ref() {
            // A stream opened at a later generation than this caller saw is newer still.
            Some((running, opened)) if *opened >= generation => Arc::clone(running),
            _ => {
                let protocol = KvProtocol {
                    client: KvClient::new(self.channel.clone())
                        .max_decoding_message_size(self.max_message_bytes)
                        .max_encoding_message_size(self.max_message_bytes),
                };
                let started = Arc::new(Pipeline::start(
                    self.addr.clone(),
                    protocol,
                    MAX_MESSAGE_BYTES.min(self.max_message_bytes),
                    self.open_timeout,
                ));
                *current = Some((Arc::clone(&started), generation));
                started
            }
        }
    }

    /// Drops `stale` (if it is still the running pipeline) so the next call opens a stream
    /// with the credentials then in force.
    fn forget(&self, stale: &Arc<Pipeline<KvProtocol>>) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current
            .as_ref()
            .is_some_and(|(running, _)| Arc::ptr_eq(running, stale))
        {
            *current = None;
        }
    }
}

/// `answer` when it is the kind `want` picks; a router that answered another kind broke
/// the contract (INTERNAL, without a transport source: for a write that was answered,
/// whatever the answer says).
pub(crate) fn expect<T>(answer: Answer, want: impl FnOnce(Answer) -> Option<T>) -> Result<T, Status> {
    want(answer)
        .ok_or_else(|| Status::internal("the router answered a kv frame with the wrong kind of answer"))
}
