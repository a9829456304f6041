//! The sending side of `Raft.Pipeline`: one stream per peer node carrying the
//! AppendEntries, ConfirmLeadership and Vote messages of every group.
//!
//! A unary gRPC call costs an HTTP/2 stream, its headers and trailers, a task on the
//! receiver and a round through tonic's layers — per message, and a node leading many
//! groups sends one message per group, follower and entry. Here every message for a peer
//! goes into one bounded queue; the peer's driver task takes whatever is queued when it
//! gets to run (up to the message size limit) and sends it as one stream message, and the
//! receiver answers each frame as it completes (`service/raft_pipeline.rs`). Nothing
//! waits to fill a batch: the batch is what queued while the previous send ran.
//!
//! Callers see the unary contract: a reply or a gRPC status. A broken stream fails every
//! frame in flight with `UNAVAILABLE` (openraft backs off and resends), and the next
//! message opens a new stream. A peer without the RPC (an older version) answers
//! `UNIMPLEMENTED`; the caller then uses the unary RPCs for that peer.
//!
//! Bounds: the queue holds [`QUEUED`] messages (callers wait for room), at most
//! [`MAX_WAITING`] frames await replies (beyond that the driver stops taking messages,
//! and when every one of them belongs to a caller that gave up, it resets the stream), and
//! a stream message holds at most [`MAX_FRAMES`] frames within the peer's message limit.
//! The driver is owned by its [`Pipeline`]: it ends when the pipeline (held by the
//! transport) is dropped, answering what it still holds.

use std::collections::HashMap;
use std::time::Duration;

use ringkv_proto::v1::raft_client::RaftClient;
use ringkv_proto::v1::{RaftFrame, RaftFrameReplies, RaftFrames, RaftMessage, RaftReply, RaftRpc};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// Messages queued for one peer before callers wait.
pub const QUEUED: usize = 4_096;
/// Frames awaiting replies on one stream.
pub const MAX_WAITING: usize = 8_192;
/// Frames in one stream message (the receiver refuses more: `service/raft_pipeline.rs`).
pub const MAX_FRAMES: usize = 1_024;
/// Stream messages the driver may have handed to the stream and not yet sent.
const OUTBOUND: usize = 16;
/// How often a stream full of frames checks whether their callers all gave up.
const WEDGE_CHECK: Duration = Duration::from_secs(1);
/// What a frame adds to its message beyond the payload and cluster id (tags, ids, lengths).
const FRAME_OVERHEAD: usize = 64;

/// One message for the peer and where its answer goes.
struct Queued {
    rpc: RaftRpc,
    message: RaftMessage,
    reply: oneshot::Sender<Result<RaftReply, Status>>,
}

impl Queued {
    fn bytes(&self) -> usize {
        self.message.payload.len() + self.message.cluster_id.len() + FRAME_OVERHEAD
    }
}

/// The pipeline to one peer: a handle on its driver task.
pub struct Pipeline {
    queue: mpsc::Sender<Queued>,
    driver: tokio::task::JoinHandle<()>,
}

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
        let (queue, queued) = mpsc::channel(QUEUED);
        let driver = Driver {
            addr,
            client,
            budget: max_message_bytes.saturating_sub(FRAME_OVERHEAD),
            open_timeout,
            queued,
            carried: None,
            stream: None,
            unsent: None,
            waiting: HashMap::new(),
            next_id: 0,
        };
        Pipeline {
            queue,
            driver: tokio::spawn(driver.run()),
        }
    }

    /// Sends `message` as `rpc` and waits for its answer: the reply, or the status the
    /// peer (or the stream) failed it with. `UNIMPLEMENTED`: the peer has no pipeline.
    pub async fn call(&self, rpc: RaftRpc, message: RaftMessage) -> Result<RaftReply, Status> {
        let (reply, answer) = oneshot::channel();
        let queued = Queued { rpc, message, reply };
        if self.queue.send(queued).await.is_err() {
            return Err(Status::unavailable("the raft pipeline has stopped"));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Status::unavailable("the raft pipeline dropped the message")))
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Closing the queue ends the driver once it has sent what it holds; a driver
        // stuck opening a stream to a dead peer goes at once.
        self.driver.abort();
    }
}

/// An open stream: where stream messages go, and the replies coming back.
struct Stream {
    outbound: mpsc::Sender<RaftFrames>,
    replies: Streaming<RaftFrameReplies>,
}

struct Driver {
    addr: String,
    client: RaftClient<Channel>,
    budget: usize,
    open_timeout: Duration,
    queued: mpsc::Receiver<Queued>,
    /// A message taken from the queue that did not fit the last stream message.
    carried: Option<Queued>,
    stream: Option<Stream>,
    /// A stream message the stream had no room for yet (nothing more is taken meanwhile).
    unsent: Option<RaftFrames>,
    waiting: HashMap<u64, oneshot::Sender<Result<RaftReply, Status>>>,
    next_id: u64,
}

impl Driver {
    async fn run(mut self) {
        loop {
            let room = self.waiting.len() < MAX_WAITING && self.unsent.is_none();
            let blocked = match (&self.unsent, &self.stream) {
                (Some(_), Some(stream)) => Some(stream.outbound.clone()),
                _ => None,
            };
            tokio::select! {
                first = next_queued(&mut self.queued, &mut self.carried), if room => match first {
                    Some(first) => self.send(first).await,
                    None => break,
                },
                replies = next_replies(&mut self.stream) => self.answer(replies),
                permit = room_on(blocked), if self.unsent.is_some() => match (permit, self.unsent.take()) {
                    (Some(permit), Some(frames)) => {
                        permit.send(frames);
                    }
                    _ => self.reset(self.closed()),
                },
                // Full of frames: when nobody waits for any of them any more, the stream is
                // wedged.
                () = tokio::time::sleep(WEDGE_CHECK), if self.waiting.len() >= MAX_WAITING => {
                    if self.abandoned() {
                        self.reset(Status::unavailable(format!(
                            "the raft pipeline to {} had {MAX_WAITING} frames without replies",
                            self.addr
                        )));
                    }
                }
            }
        }
        self.reset(Status::unavailable("the raft pipeline has stopped"));
    }

    fn closed(&self) -> Status {
        Status::unavailable(format!("the raft pipeline to {} closed", self.addr))
    }

    /// Whether every frame awaiting a reply belongs to a caller that gave up.
    fn abandoned(&mut self) -> bool {
        self.waiting.retain(|_, reply| !reply.is_closed());
        self.waiting.len() >= MAX_WAITING
    }

    /// Sends `first` and whatever else is queued, as far as the budget goes.
    async fn send(&mut self, first: Queued) {
        if first.bytes() > self.budget {
            let too_large = Status::resource_exhausted(format!(
                "a raft message of {} bytes is larger than the {} bytes a pipeline message may carry",
                first.bytes(),
                self.budget
            ));
            let _ = first.reply.send(Err(too_large));
            return;
        }
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        while batch.len() < MAX_FRAMES {
            let Ok(next) = self.queued.try_recv() else {
                break;
            };
            if bytes + next.bytes() > self.budget {
                self.carried = Some(next);
                break;
            }
            bytes += next.bytes();
            batch.push(next);
        }
        // Callers that gave up (openraft's timeout) need no frame.
        batch.retain(|queued| !queued.reply.is_closed());
        if batch.is_empty() {
            return;
        }
        if self.stream.is_none() {
            match self.open().await {
                Ok(stream) => self.stream = Some(stream),
                Err(status) => {
                    for queued in batch {
                        let _ = queued.reply.send(Err(status.clone()));
                    }
                    return;
                }
            }
        }
        let mut frames = Vec::with_capacity(batch.len());
        for queued in batch {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            self.waiting.insert(id, queued.reply);
            frames.push(RaftFrame {
                id,
                rpc: queued.rpc as i32,
                message: Some(queued.message),
            });
        }
        // Never waits for room here: replies must keep being read while the stream is full
        // (the peer stops reading frames while it cannot send replies).
        let full = match &self.stream {
            Some(stream) => match stream.outbound.try_send(RaftFrames { frames }) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(frames)) => Some(frames),
                Err(mpsc::error::TrySendError::Closed(_)) => None,
            },
            None => None,
        };
        match full {
            Some(frames) => self.unsent = Some(frames),
            None => self.reset(self.closed()),
        }
    }

    async fn open(&mut self) -> Result<Stream, Status> {
        let (outbound, frames) = mpsc::channel(OUTBOUND);
        let opened = tokio::time::timeout(
            self.open_timeout,
            self.client.pipeline(ReceiverStream::new(frames)),
        )
        .await;
        match opened {
            Ok(Ok(replies)) => Ok(Stream {
                outbound,
                replies: replies.into_inner(),
            }),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::unavailable(format!(
                "opening the raft pipeline to {} took longer than {:?}",
                self.addr, self.open_timeout
            ))),
        }
    }

    fn answer(&mut self, replies: Result<Option<RaftFrameReplies>, Status>) {
        match replies {
            Ok(Some(replies)) => {
                for reply in replies.replies {
                    if let Some(waiting) = self.waiting.remove(&reply.id) {
                        let _ = waiting.send(into_result(reply.code, reply.message, reply.reply));
                    }
                }
            }
            Ok(None) => self.reset(Status::unavailable(format!(
                "{} ended the raft pipeline",
                self.addr
            ))),
            Err(status) => self.reset(Status::unavailable(format!(
                "the raft pipeline to {} failed: {}",
                self.addr,
                status.message()
            ))),
        }
    }

    /// Drops the stream and fails every frame in flight with `status`.
    fn reset(&mut self, status: Status) {
        self.stream = None;
        self.unsent = None;
        for (_, waiting) in self.waiting.drain() {
            let _ = waiting.send(Err(status.clone()));
        }
    }
}

/// The carried message, or the next queued one (None: the queue closed).
async fn next_queued(queued: &mut mpsc::Receiver<Queued>, carried: &mut Option<Queued>) -> Option<Queued> {
    match carried.take() {
        Some(carried) => Some(carried),
        None => queued.recv().await,
    }
}

/// Room for one stream message on the open stream (None: no stream, or it closed).
async fn room_on(outbound: Option<mpsc::Sender<RaftFrames>>) -> Option<mpsc::OwnedPermit<RaftFrames>> {
    match outbound {
        Some(outbound) => outbound.reserve_owned().await.ok(),
        None => None,
    }
}

/// The next replies of the open stream; never ready without one.
async fn next_replies(stream: &mut Option<Stream>) -> Result<Option<RaftFrameReplies>, Status> {
    match stream {
        Some(stream) => stream.replies.message().await,
        None => std::future::pending().await,
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
