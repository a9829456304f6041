//! The receiving side: frames arrive in stream messages; each is answered as its unary RPC
//! would answer it, and the answers that are ready when one completes leave together in one
//! stream message.
//!
//! One task per stream serves its frames concurrently (no task per frame). Bounds
//! ([`Limits`]): a stream message of more than `max_frames` frames ends the stream with
//! `INVALID_ARGUMENT`; while `max_in_flight` frames are being answered no more are read
//! (the sender's stream backs up); `replies_queued` stream messages of answers wait for the
//! sender to read them before answering stops. The task ends when the sender ends the
//! stream (after answering what it read), when the stream fails, when the sender has read
//! no answer for `send_stall` while answers wait (frames stop being worked on while their
//! answers cannot leave: a sender that stops reading must not hold what they hold), or
//! when `stopping` is cancelled (a graceful shutdown waits for every
//! stream, and a sender never ends its own).

use std::future::Future;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

/// How much one stream may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Frames in one stream message; more ends the stream.
    pub max_frames: usize,
    /// Frames of one stream being answered at once.
    pub max_in_flight: usize,
    /// Stream messages of answers waiting for the sender to read them.
    pub replies_queued: usize,
    /// Answers in one stream message.
    pub max_replies: usize,
    /// Bytes of answers in one stream message ([`Answer::reply_bytes`]); an answer larger
    /// than this goes alone.
    pub max_reply_bytes: usize,
    /// Longest wait for the sender to make room for answers; then the stream ends.
    pub send_stall: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frames: crate::sender::MAX_FRAMES,
            max_in_flight: 4_096,
            replies_queued: 16,
            max_replies: 1_024,
            max_reply_bytes: 4 << 20,
            send_stall: Duration::from_secs(10),
        }
    }
}

/// What a receiver does with frames: how a stream message splits into frames, how each is
/// answered, and how answers make a stream message.
pub trait Answer: Send + Sync + 'static {
    /// A stream message of frames.
    type Frames: Send + 'static;
    type Frame: Send + 'static;
    /// The answer to one frame (a reply or a status, under the frame's id).
    type Reply: Send + 'static;
    /// A stream message of answers.
    type Replies: Send + 'static;
    /// Names the pipeline in statuses ("raft pipeline").
    const NAME: &'static str;
    fn unpack(frames: Self::Frames) -> Vec<Self::Frame>;
    fn pack(replies: Vec<Self::Reply>) -> Self::Replies;
    /// About how many bytes `reply` adds to a stream message.
    fn reply_bytes(reply: &Self::Reply) -> usize;
    /// The answer to `frame`: what its unary RPC would reply, or the status it would fail
    /// with, as a frame answer.
    fn answer(&self, frame: Self::Frame) -> impl Future<Output = Self::Reply> + Send + 'static;
}

/// The answers of one stream, as tonic sends them.
pub type Replies<R> = ReceiverStream<Result<R, Status>>;

/// Serves the frames of `inbound` with `service` on a task of its own; its answers are the
/// returned stream.
pub fn serve<A: Answer>(
    service: A,
    inbound: Streaming<A::Frames>,
    stopping: CancellationToken,
    limits: Limits,
) -> Replies<A::Replies> {
    let (replies, answers) = mpsc::channel(limits.replies_queued);
    tokio::spawn(run(service, inbound, replies, stopping, limits));
    ReceiverStream::new(answers)
}

async fn run<A: Answer>(
    service: A,
    mut inbound: Streaming<A::Frames>,
    replies: mpsc::Sender<Result<A::Replies, Status>>,
    stopping: CancellationToken,
    limits: Limits,
) {
    let mut answering = FuturesUnordered::new();
    let mut reading = true;
    loop {
        // The sender ended the stream and every frame it sent is answered.
        if !reading && answering.is_empty() {
            return;
        }
        tokio::select! {
            // The server is shutting down: end the stream (the sender fails what it had in
            // flight and reconnects, to this node once it is back).
            () = stopping.cancelled() => return,
            frames = inbound.message(), if reading && answering.len() < limits.max_in_flight => match frames {
                Ok(Some(frames)) => {
                    let frames = A::unpack(frames);
                    if frames.len() > limits.max_frames {
                        let refused = Status::invalid_argument(format!(
                            "a {} message carries {} frames, more than the {} allowed",
                            A::NAME,
                            frames.len(),
                            limits.max_frames
                        ));
                        let _ = replies.send(Err(refused)).await;
                        return;
                    }
                    for frame in frames {
                        answering.push(service.answer(frame));
                    }
                }
                // The sender is done: answer what was read, then end.
                Ok(None) => reading = false,
                // The sender went away (or sent something undecodable): nobody to answer.
                Err(_) => return,
            },
            Some(first) = answering.next(), if !answering.is_empty() => {
                // What is ready now leaves in as few messages as the limits allow.
                let mut bytes = A::reply_bytes(&first);
                let mut ready = vec![first];
                while let Some(Some(reply)) = answering.next().now_or_never() {
                    let reply_bytes = A::reply_bytes(&reply);
                    if ready.len() >= limits.max_replies || bytes + reply_bytes > limits.max_reply_bytes {
                        let full = std::mem::take(&mut ready);
                        if !send(&replies, A::pack(full), limits.send_stall).await {
                            return;
                        }
                        bytes = 0;
                    }
                    bytes += reply_bytes;
                    ready.push(reply);
                }
                if !send(&replies, A::pack(ready), limits.send_stall).await {
                    return;
                }
            },
            else => return,
        }
    }
}

/// Queues a stream message of answers; false when the stream is gone or its sender made no
/// room for `stall` (the stream then ends).
async fn send<R>(replies: &mpsc::Sender<Result<R, Status>>, message: R, stall: Duration) -> bool {
    matches!(
        tokio::time::timeout(stall, replies.send(Ok(message))).await,
        Ok(Ok(()))
    )
}
