//! The receiving side of `Raft.Pipeline` (the sender is `raft/pipeline.rs`): frames of many
//! groups arrive in stream messages; each is answered as the unary RPC of its kind would
//! answer it (`service/raft.rs`), and the answers that are ready when one completes leave
//! together in one stream message.
//!
//! One task per stream serves its frames concurrently (no task per frame). Bounds: a
//! stream message of more than [`MAX_FRAMES`] frames ends the stream with
//! `INVALID_ARGUMENT`; while [`MAX_IN_FLIGHT`] frames are being answered no more are read
//! (the sender's stream backs up); [`REPLIES_QUEUED`] stream messages of answers wait for
//! the sender to read them before answering stops. The task ends when the sender ends the
//! stream (after answering what it read), when the stream fails, when the sender stops
//! reading answers, or when the server shuts down.

use std::future::Future;
use std::pin::Pin;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use ringkv_proto::v1::{RaftFrame, RaftFrameReplies, RaftFrameReply, RaftFrames, RaftRpc};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::raft::RaftService;
pub use crate::raft::pipeline::MAX_FRAMES;

/// Frames of one stream being answered at once.
pub const MAX_IN_FLIGHT: usize = 4_096;
/// Stream messages of answers waiting for the sender to read them.
pub const REPLIES_QUEUED: usize = 16;
/// Answers in one stream message.
const MAX_REPLIES: usize = 1_024;

/// The answers of one stream, as tonic sends them.
pub type Replies = ReceiverStream<Result<RaftFrameReplies, Status>>;

type Answering = Pin<Box<dyn Future<Output = RaftFrameReply> + Send>>;

/// Serves the frames of `inbound` on a task of its own; its answers are the returned stream.
pub fn serve(service: RaftService, inbound: Streaming<RaftFrames>) -> Replies {
    let (replies, answers) = mpsc::channel(REPLIES_QUEUED);
    tokio::spawn(run(service, inbound, replies));
    ReceiverStream::new(answers)
}

async fn run(
    service: RaftService,
    mut inbound: Streaming<RaftFrames>,
    replies: mpsc::Sender<Result<RaftFrameReplies, Status>>,
) {
    let mut answering: FuturesUnordered<Answering> = FuturesUnordered::new();
    let mut reading = true;
    let stopping = service.stopping().clone();
    loop {
        tokio::select! {
            // The server is shutting down: end the stream (the sender fails what it had in
            // flight and reconnects, to this node once it is back).
            () = stopping.cancelled() => return,
            frames = inbound.message(), if reading && answering.len() < MAX_IN_FLIGHT => match frames {
                Ok(Some(frames)) if frames.frames.len() > MAX_FRAMES => {
                    let refused = Status::invalid_argument(format!(
                        "a raft pipeline message carries {} frames, more than MAX_FRAMES = {MAX_FRAMES}",
                        frames.frames.len()
                    ));
                    let _ = replies.send(Err(refused)).await;
                    return;
                }
                Ok(Some(frames)) => {
                    for frame in frames.frames {
                        answering.push(Box::pin(answer(service.clone(), frame)));
                    }
                }
                // The sender is done: answer what was read, then end.
                Ok(None) => reading = false,
                // The sender went away (or sent something undecodable): nobody to answer.
                Err(_) => return,
            },
            Some(first) = answering.next(), if !answering.is_empty() => {
                let mut ready = vec![first];
                while ready.len() < MAX_REPLIES {
                    match answering.next().now_or_never() {
                        Some(Some(reply)) => ready.push(reply),
                        _ => break,
                    }
                }
                if replies.send(Ok(RaftFrameReplies { replies: ready })).await.is_err() {
                    return;
                }
            },
            else => return,
        }
    }
}

/// The answer to one frame: what its unary RPC would reply, or the status it would fail with.
async fn answer(service: RaftService, frame: RaftFrame) -> RaftFrameReply {
    let answered = match (RaftRpc::try_from(frame.rpc), frame.message) {
        (_, None) => Err(Status::invalid_argument(
            "a raft pipeline frame without a message",
        )),
        (Ok(RaftRpc::AppendEntries), Some(message)) => service.append(message).await,
        (Ok(RaftRpc::ConfirmLeadership), Some(message)) => service.confirm(message),
        (Ok(RaftRpc::Vote), Some(message)) => service.answer_vote(message).await,
        (Ok(RaftRpc::Unspecified) | Err(_), Some(_)) => Err(Status::invalid_argument(format!(
            "a raft pipeline frame of unknown kind {}",
            frame.rpc
        ))),
    };
    match answered {
        Ok(reply) => RaftFrameReply {
            id: frame.id,
            reply: Some(reply),
            code: 0,
            message: String::new(),
        },
        Err(status) => RaftFrameReply {
            id: frame.id,
            reply: None,
            code: status.code() as i32,
            message: status.message().to_string(),
        },
    }
}
