//! The sending side of `Raft.Pipeline`: one stream per peer node carrying the
//! AppendEntries, ConfirmLeadership and Vote messages of every group.
//!
//! A node leading many groups sends one message per group, follower and entry; as unary
//! calls each would cost an HTTP/2 stream, its headers and trailers and a task at the
//! receiver. The driver, its batching and its bounds are `ringkv-pipeline`'s; this module
//! says what a Raft frame is. Callers see the unary contract: a reply or a gRPC status
//! (`UNAVAILABLE` when the stream broke: openraft backs off and resends; `UNIMPLEMENTED`
//! from a peer without the RPC, which then gets unary calls).

use std::time::Duration;

use ringkv_proto::v1::raft_client::RaftClient;
use ringkv_proto::v1::{RaftFrame, RaftFrameReplies, RaftFrames, RaftMessage, RaftReply, RaftRpc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

pub use ringkv_pipeline::sender::MAX_FRAMES;

/// What a frame adds to its message beyond the payload and cluster id (tags, ids, lengths).
const FRAME_OVERHEAD: usize = 64;

/// Raft frames to one peer, over its `Raft` client.
pub struct RaftProtocol {
    client: RaftClient<Channel>,
}

impl ringkv_pipeline::Protocol for RaftProtocol {
    type Request = (RaftRpc, RaftMessage);
    type Reply = RaftReply;
    type Frames = RaftFrames;
    type Replies = RaftFrameReplies;
    const NAME: &'static str = "raft pipeline";

    fn request_bytes((_, message): &Self::Request) -> usize {
        message.payload.len() + message.cluster_id.len() + FRAME_OVERHEAD
    }

    fn frames(frames: Vec<(u64, Self::Request)>) -> RaftFrames {
        let frames = frames
            .into_iter()
            .map(|(id, (rpc, message))| RaftFrame {
                id,
                rpc: rpc as i32,
                message: Some(message),
            })
            .collect();
        RaftFrames { frames }
    }

    fn replies(replies: RaftFrameReplies) -> Vec<(u64, Result<RaftReply, Status>)> {
        replies
            .replies
            .into_iter()
            .map(|reply| (reply.id, into_result(reply.code, reply.message, reply.reply)))
            .collect()
    }

    async fn open(
        &mut self,
        frames: ReceiverStream<RaftFrames>,
    ) -> Result<Streaming<RaftFrameReplies>, Status> {
        Ok(self.client.pipeline(frames).await?.into_inner())
    }
}

/// The pipeline to one peer: a handle on its driver task (which ends with it).
pub struct Pipeline(ringkv_pipeline::Pipeline<RaftProtocol>);

impl Pipeline {
    /// Starts the driver of the stream to `addr` over `client`. `max_message_bytes`: the
    /// largest stream message either side accepts; `open_timeout`: how long opening the
    /// stream may take.
    pub fn start(
        addr: String,
        client: RaftClient<Channel>,
        max_message_bytes: usize,
        open_timeout: Duration,
    ) -> Pipeline {
        Pipeline(ringkv_pipeline::Pipeline::start(
            addr,
            RaftProtocol { client },
            max_message_bytes,
            open_timeout,
        ))
    }

    /// Sends `message` as `rpc` and waits for its answer: the reply, or the status the
    /// peer (or the stream) failed it with. `UNIMPLEMENTED`: the peer has no pipeline.
    pub async fn call(&self, rpc: RaftRpc, message: RaftMessage) -> Result<RaftReply, Status> {
        self.0.call((rpc, message)).await
    }
}

/// A frame's answer as the unary call's result.
fn into_result(code: i32, message: String, reply: Option<RaftReply>) -> Result<RaftReply, Status> {
    match Code::from_i32(code) {
        Code::Ok => Ok(reply.unwrap_or_default()),
        code => Err(Status::new(code, message)),
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
