//! `ShardKv.Pipeline` from the router: the reads and writes its lanes send to one node go
//! as frames on one stream to that node instead of an HTTP/2 request each.
//!
//! Profiled under 64 clients' linearizable gets, the HTTP/2 handling of the unary
//! router → node calls was about a third of all server CPU: the node's connection task
//! for each request's headers, trailers and task, and the router's client side. On a
//! pipeline the frames of every shard's lanes that queued while the previous message was
//! sent share one stream message, and the node answers them together
//! (`ringkv_pipeline`; the node's side is `node/src/service/shard/pipeline.rs`).
//!
//! The contract is the unary call's: a frame is answered with the response the call would
//! return or the status it would fail with, leader hints and "rejected"/"outcome unknown"
//! marks included, so the lanes and the retry loop see no difference. A broken stream
//! fails its frames `UNAVAILABLE` with a connection reset as source — a transport failure
//! after sending, ambiguous for a write, exactly as a unary call's. Calls larger than
//! [`MAX_FRAME_BYTES`] go unary (they would hold up the stream's small ones). A node
//! without the RPC (an older version) answers `UNIMPLEMENTED`: that attempt fails as
//! not applied (`UNAVAILABLE`, marked rejected: the node ran nothing) and the router uses
//! unary calls for that node from then on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ringkv_pipeline::{Pipeline, Protocol};
use ringkv_proto::metadata;
use ringkv_proto::v1::shard_frame::Call;
use ringkv_proto::v1::shard_frame_reply::Answer;
use ringkv_proto::v1::shard_kv_client::ShardKvClient;
use ringkv_proto::v1::{ShardFrame, ShardFrameReplies, ShardFrames};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// Calls larger than this (encoded) go unary.
pub const MAX_FRAME_BYTES: usize = 256 << 10;
/// Bytes of frames in one stream message; well under any node's `max_message_bytes`
/// (which holds at least one maximal value).
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// What a frame adds to its message beyond its call and user (tags, id, timeout, lengths).
const FRAME_OVERHEAD_BYTES: usize = 32;

/// A frame with its size, measured once (the lane measured the call to choose the
/// pipeline; the driver budgets stream messages with it).
pub struct SizedFrame {
    frame: ShardFrame,
    bytes: usize,
}

/// Frames to one node over its `ShardKv` client.
pub struct ShardProtocol {
    client: ShardKvClient<Channel>,
}

impl Protocol for ShardProtocol {
    type Request = SizedFrame;
    type Reply = Answer;
    type Frames = ShardFrames;
    type Replies = ShardFrameReplies;
    const NAME: &'static str = "shard pipeline";

    fn request_bytes(sized: &SizedFrame) -> usize {
        sized.bytes
    }

    fn frames(frames: Vec<(u64, SizedFrame)>) -> ShardFrames {
        let frames = frames
            .into_iter()
            .map(|(id, sized)| ShardFrame { id, ..sized.frame })
            .collect();
        ShardFrames { frames }
    }

    fn replies(replies: ShardFrameReplies) -> Vec<(u64, Result<Answer, Status>)> {
        replies
            .replies
            .into_iter()
            .map(|reply| {
                let answer = match reply.answer {
                    Some(Answer::Failed(failed)) => Err(ringkv_pipeline::status::from_frame(failed)),
                    Some(answer) => Ok(answer),
                    None => Err(Status::internal("the node answered a shard frame with nothing")),
                };
                (reply.id, answer)
            })
            .collect()
    }

    async fn open(
        &mut self,
        frames: ReceiverStream<ShardFrames>,
    ) -> Result<Streaming<ShardFrameReplies>, Status> {
        Ok(self.client.pipeline(frames).await?.into_inner())
    }
}

/// The pipeline to one node, or the note that the node has none.
pub struct NodePipeline {
    pipeline: Pipeline<ShardProtocol>,
    /// Set once the node answered `UNIMPLEMENTED`.
    unary_only: AtomicBool,
}

impl NodePipeline {
    /// Starts the pipeline to `addr` over `client` (it connects on the first call).
    pub fn start(addr: String, client: ShardKvClient<Channel>, open_timeout: Duration) -> NodePipeline {
        NodePipeline {
            pipeline: Pipeline::start(addr, ShardProtocol { client }, MAX_MESSAGE_BYTES, open_timeout),
            unary_only: AtomicBool::new(false),
        }
    }

    /// Whether a call of `encoded_bytes` goes on the pipeline (else unary): the node has
    /// one and the call is small.
    pub fn carries(&self, encoded_bytes: usize) -> bool {
        encoded_bytes <= MAX_FRAME_BYTES && !self.unary_only.load(Ordering::Relaxed)
    }

    /// Sends `call` (`encoded_bytes` long, as [`NodePipeline::carries`] measured it),
    /// acting for `user` (empty: the router itself), and waits up to `timeout` (the node
    /// stops working on it then too).
    pub async fn call(
        &self,
        call: Call,
        encoded_bytes: usize,
        user: String,
        timeout: Duration,
    ) -> Result<Answer, Status> {
        let bytes = encoded_bytes + user.len() + FRAME_OVERHEAD_BYTES;
        let frame = ShardFrame {
            id: 0,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            user,
            call: Some(call),
        };
        match self.pipeline.call(SizedFrame { frame, bytes }).await {
            Err(status) if status.code() == Code::Unimplemented => {
                self.unary_only.store(true, Ordering::Relaxed);
                tracing::info!("a node has no shard pipeline: unary calls to it from now on");
                let mut not_sent = Status::unavailable(format!(
                    "the node has no shard pipeline ({}); retry: unary calls from now on",
                    status.message()
                ));
                metadata::set_rejected(&mut not_sent);
                Err(not_sent)
            }
            answered => answered,
        }
    }
}

/// `answer` when it is the kind `want` picks; a node that answered another kind broke the
/// contract (INTERNAL; for a write the router cannot know whether it applied, and the
/// unmarked status says so).
pub fn expect<T>(answer: Answer, want: impl FnOnce(Answer) -> Option<T>) -> Result<T, Status> {
    want(answer)
        .ok_or_else(|| Status::internal("the node answered a shard frame with the wrong kind of answer"))
}
