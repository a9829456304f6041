//! The receiving side of `Raft.Pipeline` (the sender is `raft/pipeline.rs`): frames of many
//! groups arrive in stream messages; each is answered as the unary RPC of its kind would
//! answer it (`service/raft.rs`). The stream's task, its bounds and its end are
//! `ringkv-pipeline`'s ([`ringkv_pipeline::receiver`]).

use std::future::Future;

use ringkv_proto::v1::{RaftFrame, RaftFrameReplies, RaftFrameReply, RaftFrames, RaftRpc};
use tonic::{Status, Streaming};

use super::raft::RaftService;
pub use crate::raft::pipeline::MAX_FRAMES;

/// The answers of one stream, as tonic sends them.
pub type Replies = ringkv_pipeline::Replies<RaftFrameReplies>;

/// Serves the frames of `inbound` on a task of its own; its answers are the returned stream.
pub fn serve(service: RaftService, inbound: Streaming<RaftFrames>) -> Replies {
    let stopping = service.stopping().clone();
    ringkv_pipeline::serve(RaftFrameAnswers(service), inbound, stopping, Default::default())
}

struct RaftFrameAnswers(RaftService);

impl ringkv_pipeline::receiver::Answer for RaftFrameAnswers {
    type Frames = RaftFrames;
    type Frame = RaftFrame;
    type Reply = RaftFrameReply;
    type Replies = RaftFrameReplies;
    const NAME: &'static str = "raft pipeline";

    fn unpack(frames: RaftFrames) -> Vec<RaftFrame> {
        frames.frames
    }

    fn pack(replies: Vec<RaftFrameReply>) -> RaftFrameReplies {
        RaftFrameReplies { replies }
    }

    fn reply_bytes(reply: &RaftFrameReply) -> usize {
        prost::Message::encoded_len(reply)
    }

    fn answer(&self, frame: RaftFrame) -> impl Future<Output = RaftFrameReply> + Send + 'static {
        answer(self.0.clone(), frame)
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
        (Ok(RaftRpc::Timestamps), Some(message)) => service.timestamps(message).await,
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
