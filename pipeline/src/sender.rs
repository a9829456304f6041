//! The sending side: one stream per peer carrying the calls of many callers.
//!
//! Every call for a peer goes into one bounded queue; the peer's driver task takes whatever
//! is queued when it gets to run (up to the message size limit) and sends it as one stream
//! message, and the receiver answers each frame as it completes ([`crate::receiver`]).
//! Nothing waits to fill a batch: the batch is what queued while the previous send ran.
//!
//! Callers see the unary contract: a reply or a gRPC status. A broken stream fails every
//! frame in flight with `UNAVAILABLE`, whose source is a connection reset (a caller that
//! must know tells it from an answer of the peer by that source: the frame may or may not
//! have been served); the next call opens a new stream. Opening fails with the status the
//! open failed with (a connection refused keeps tonic's `ConnectError` source: nothing was
//! sent). A peer without the RPC (an older version) answers `UNIMPLEMENTED`; the caller
//! then uses the unary RPCs for that peer.
//!
//! Bounds: the queue holds [`QUEUED`] calls (callers wait for room), at most
//! [`MAX_WAITING`] frames await replies (beyond that the driver stops taking calls, and
//! when every one of them belongs to a caller that gave up, it resets the stream), and a
//! stream message holds at most [`MAX_FRAMES`] frames within the peer's message limit. The
//! driver is owned by its [`Pipeline`]: it ends when the pipeline is dropped.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

/// Calls queued for one peer before callers wait.
pub const QUEUED: usize = 4_096;
/// Frames awaiting replies on one stream.
pub const MAX_WAITING: usize = 8_192;
/// Frames in one stream message (the receiver refuses more: [`crate::receiver::Limits`]).
pub const MAX_FRAMES: usize = 1_024;
/// Stream messages the driver may have handed to the stream and not yet sent.
const OUTBOUND: usize = 16;
/// How often a stream full of frames checks whether their callers all gave up.
const WEDGE_CHECK: Duration = Duration::from_secs(1);
/// What a stream message adds beyond its frames (the frames' own framing is in
/// [`Protocol::request_bytes`]).
const MESSAGE_OVERHEAD_BYTES: usize = 64;

/// What travels on one kind of pipeline: the caller's protobuf messages and how to open
/// the stream.
pub trait Protocol: Send + 'static {
    /// One call's request, as a frame carries it (without the frame's id).
    type Request: Send + 'static;
    /// One call's successful answer.
    type Reply: Send + 'static;
    /// A stream message of frames (sender to receiver).
    type Frames: Send + 'static;
    /// A stream message of answers (receiver to sender).
    type Replies: Send + 'static;
    /// Names the pipeline in statuses ("raft pipeline").
    const NAME: &'static str;
    /// The bytes `request` adds to a stream message, framing included (for the budget).
    fn request_bytes(request: &Self::Request) -> usize;
    /// One stream message of `frames`, each with its id.
    fn frames(frames: Vec<(u64, Self::Request)>) -> Self::Frames;
    /// The answers a stream message carries, each under its frame's id.
    fn replies(replies: Self::Replies) -> Vec<(u64, Result<Self::Reply, Status>)>;
    /// Opens a stream whose frames come from `frames`; its answers.
    fn open(
        &mut self,
        frames: ReceiverStream<Self::Frames>,
    ) -> impl Future<Output = Result<Streaming<Self::Replies>, Status>> + Send;
}

/// One call for the peer and where its answer goes.
struct Queued<P: Protocol> {
    request: P::Request,
    reply: oneshot::Sender<Result<P::Reply, Status>>,
}

/// The pipeline to one peer: a handle on its driver task.
pub struct Pipeline<P: Protocol> {
    queue: mpsc::Sender<Queued<P>>,
    driver: tokio::task::JoinHandle<()>,
}

impl<P: Protocol> Pipeline<P> {
    /// Starts the driver of the stream to `addr` opened by `protocol`. `max_message_bytes`:
    /// the largest stream message either side accepts; `open_timeout`: how long opening the
    /// stream may take.
    pub fn start(addr: String, protocol: P, max_message_bytes: usize, open_timeout: Duration) -> Pipeline<P> {
        let (queue, queued) = mpsc::channel(QUEUED);
        let driver = Driver {
            addr,
            protocol,
            budget: max_message_bytes.saturating_sub(MESSAGE_OVERHEAD_BYTES),
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

    /// Whether the driver task has ended (it runs until the pipeline is dropped, so only if
    /// it failed): every call is refused from then on.
    pub fn stopped(&self) -> bool {
        self.driver.is_finished()
    }

    /// Sends `request` and waits for its answer: the reply, or the status the peer (or the
    /// stream) failed it with. `UNIMPLEMENTED`: the peer has no pipeline.
    pub async fn call(&self, request: P::Request) -> Result<P::Reply, Status> {
        let (reply, answer) = oneshot::channel();
        if self.queue.send(Queued { request, reply }).await.is_err() {
            return Err(Status::unavailable(format!("the {} has stopped", P::NAME)));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(broken(format!("the {} dropped the call", P::NAME))))
    }
}

impl<P: Protocol> Drop for Pipeline<P> {
    fn drop(&mut self) {
        // A driver stuck opening a stream to a dead peer goes at once; the callers it held
        // hear that it dropped their calls.
        self.driver.abort();
    }
}

/// `UNAVAILABLE` for a frame that may or may not have been served: the stream broke.
fn broken(message: String) -> Status {
    let mut status = Status::unavailable(message);
    status.set_source(Arc::new(std::io::Error::from(
        std::io::ErrorKind::ConnectionReset,
    )));
    status
}

/// An open stream: where stream messages go, and the replies coming back.
struct Stream<P: Protocol> {
    outbound: mpsc::Sender<P::Frames>,
    replies: Streaming<P::Replies>,
}

struct Driver<P: Protocol> {
    addr: String,
    protocol: P,
    budget: usize,
    open_timeout: Duration,
    queued: mpsc::Receiver<Queued<P>>,
    /// A call taken from the queue that did not fit the last stream message.
    carried: Option<Queued<P>>,
    stream: Option<Stream<P>>,
    /// A stream message the stream had no room for yet (nothing more is taken meanwhile).
    unsent: Option<P::Frames>,
    waiting: HashMap<u64, oneshot::Sender<Result<P::Reply, Status>>>,
    next_id: u64,
}

impl<P: Protocol> Driver<P> {
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
                        self.reset(broken(format!(
                            "the {} to {} had {MAX_WAITING} frames without replies",
                            P::NAME,
                            self.addr
                        )));
                    }
                }
            }
        }
        self.reset(broken(format!("the {} has stopped", P::NAME)));
    }

    fn closed(&self) -> Status {
        broken(format!("the {} to {} closed", P::NAME, self.addr))
    }

    /// Whether every frame awaiting a reply belongs to a caller that gave up.
    fn abandoned(&mut self) -> bool {
        self.waiting.retain(|_, reply| !reply.is_closed());
        self.waiting.len() >= MAX_WAITING
    }

    /// Sends `first` and whatever else is queued, as far as the budget goes.
    async fn send(&mut self, first: Queued<P>) {
        let first_bytes = P::request_bytes(&first.request);
        if first_bytes > self.budget {
            let too_large = Status::resource_exhausted(format!(
                "a call of {first_bytes} bytes is larger than the {} bytes a {} message may carry",
                self.budget,
                P::NAME
            ));
            let _ = first.reply.send(Err(too_large));
            return;
        }
        let mut bytes = first_bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_FRAMES {
            let Ok(next) = self.queued.try_recv() else {
                break;
            };
            let next_bytes = P::request_bytes(&next.request);
            if bytes + next_bytes > self.budget {
                self.carried = Some(next);
                break;
            }
            bytes += next_bytes;
            batch.push(next);
        }
        // Callers that gave up need no frame.
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
            frames.push((id, queued.request));
        }
        let frames = P::frames(frames);
        // Never waits for room here: replies must keep being read while the stream is full
        // (the peer stops reading frames while it cannot send replies).
        let full = match &self.stream {
            Some(stream) => match stream.outbound.try_send(frames) {
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

    async fn open(&mut self) -> Result<Stream<P>, Status> {
        let (outbound, frames) = mpsc::channel(OUTBOUND);
        let opened =
            tokio::time::timeout(self.open_timeout, self.protocol.open(ReceiverStream::new(frames))).await;
        match opened {
            Ok(Ok(replies)) => Ok(Stream { outbound, replies }),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::unavailable(format!(
                "opening the {} to {} took longer than {:?}",
                P::NAME,
                self.addr,
                self.open_timeout
            ))),
        }
    }

    fn answer(&mut self, replies: Result<Option<P::Replies>, Status>) {
        match replies {
            Ok(Some(replies)) => {
                for (id, answer) in P::replies(replies) {
                    if let Some(waiting) = self.waiting.remove(&id) {
                        let _ = waiting.send(answer);
                    }
                }
            }
            Ok(None) => self.reset(broken(format!("{} ended the {}", self.addr, P::NAME))),
            Err(status) => self.reset(broken(format!(
                "the {} to {} failed: {}",
                P::NAME,
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

/// The carried call, or the next queued one (None: the queue closed).
async fn next_queued<P: Protocol>(
    queued: &mut mpsc::Receiver<Queued<P>>,
    carried: &mut Option<Queued<P>>,
) -> Option<Queued<P>> {
    match carried.take() {
        Some(carried) => Some(carried),
        None => queued.recv().await,
    }
}

/// Room for one stream message on the open stream (None: no stream, or it closed).
async fn room_on<T>(outbound: Option<mpsc::Sender<T>>) -> Option<mpsc::OwnedPermit<T>> {
    match outbound {
        Some(outbound) => outbound.reserve_owned().await.ok(),
        None => None,
    }
}

/// The next replies of the open stream; never ready without one.
async fn next_replies<P: Protocol>(stream: &mut Option<Stream<P>>) -> Result<Option<P::Replies>, Status> {
    match stream {
        Some(stream) => stream.replies.message().await,
        None => std::future::pending().await,
    }
}
