//! `Kv.Pipeline`: a client's gets, puts, deletes and compare-and-swaps as frames on one
//! stream (the client's side is `ringkv-client`'s `pipeline.rs`).
//!
//! A unary call costs the router an HTTP/2 stream, its headers and trailers, and a pass
//! through tonic's layers per call: at 64 clients that was most of the router's CPU for a
//! get. A frame costs a protobuf message inside a stream message that carries whatever the
//! client had queued. Each frame is answered exactly as its unary call would be: the same
//! validation and handler (`KvService::handle_*`), the same permission check, an in-flight
//! permit and a deadline from the frame's `timeout_ms` as from a `grpc-timeout`, and the
//! same status on failure (in `FrameStatus`, marks such as "outcome unknown" included).
//!
//! Who a frame acts for is decided per frame, from what the stream was opened with: its
//! token (`authorization`), checked again for every frame so a deleted user or a rotated key
//! stops a long-lived stream as it stops unary calls, else its certificate's user. A
//! stream takes no stream slot (those bound streams that hold buffers for slow readers):
//! each frame takes an in-flight permit as its unary call would, at most
//! [`MAX_IN_FLIGHT_PER_STREAM`] at once; the stream's task and its bounds are
//! `ringkv-pipeline`'s (a client that reads no answer for its `send_stall` loses the
//! stream), and it ends when the router stops serving.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_metrics::{CallCounter, RpcMetrics};
use ringkv_proto::metadata;
use ringkv_proto::v1::kv_frame::Call;
use ringkv_proto::v1::kv_frame_reply::Answer as FrameAnswer;
use ringkv_proto::v1::{KvFrame, KvFrameReplies, KvFrameReply, KvFrames};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Status, Streaming};

use super::{respond, KvService};
use crate::auth::{Peer, USER};
use crate::error::to_status;
use crate::node_api::NodeApi;

/// The answers of one stream, as tonic sends them.
pub type Replies = ringkv_pipeline::Replies<KvFrameReplies>;

/// Frames of one stream answered at once: a quarter of the router's default
/// `max_inflight_requests`, so one stream cannot take every permit.
const MAX_IN_FLIGHT_PER_STREAM: usize = 1_024;

/// What a `Kv.Pipeline` stream needs beyond the service: when to end, where its frames are
/// counted, and its bounds.
#[derive(Clone)]
pub(crate) struct PipelineServing {
    /// Cancelled when the router stops serving: open streams end then.
    pub stopping: CancellationToken,
    pub counters: FrameCounters,
    pub limits: ringkv_pipeline::Limits,
}

impl PipelineServing {
    /// Streams that end with `stopping`, count in `metrics`, and send answers of at most
    /// half of `max_response_bytes` per message (so a message of answers fits what the
    /// router may send).
    pub fn new(
        stopping: CancellationToken,
        metrics: &Arc<RpcMetrics>,
        max_response_bytes: usize,
    ) -> PipelineServing {
        let defaults = ringkv_pipeline::Limits::default();
        PipelineServing {
            stopping,
            counters: FrameCounters::new(metrics),
            limits: ringkv_pipeline::Limits {
                max_in_flight: MAX_IN_FLIGHT_PER_STREAM,
                max_reply_bytes: defaults.max_reply_bytes.min(max_response_bytes / 2),
                ..defaults
            },
        }
    }
}

impl Default for PipelineServing {
    fn default() -> PipelineServing {
        PipelineServing {
            stopping: CancellationToken::new(),
            counters: FrameCounters::none(),
            limits: ringkv_pipeline::Limits {
                max_in_flight: MAX_IN_FLIGHT_PER_STREAM,
                ..ringkv_pipeline::Limits::default()
            },
        }
    }
}

/// The per-method request metrics frames count in (`Get`, `Put`, `Delete`,
/// `CompareAndSwap` of `ringkv.v1.Kv`), so the router's metrics read the same whether calls
/// came unary or framed.
#[derive(Clone)]
pub(crate) struct FrameCounters {
    get: Option<CallCounter>,
    put: Option<CallCounter>,
    delete: Option<CallCounter>,
    compare_and_swap: Option<CallCounter>,
}

impl FrameCounters {
    pub fn new(metrics: &Arc<RpcMetrics>) -> FrameCounters {
        let service = ringkv_proto::v1::kv_server::SERVICE_NAME;
        FrameCounters {
            get: metrics.method(service, "Get"),
            put: metrics.method(service, "Put"),
            delete: metrics.method(service, "Delete"),
            compare_and_swap: metrics.method(service, "CompareAndSwap"),
        }
    }

    fn none() -> FrameCounters {
        FrameCounters {
            get: None,
            put: None,
            delete: None,
            compare_and_swap: None,
        }
    }

    fn of(&self, call: &Call) -> Option<&CallCounter> {
        match call {
            Call::Get(_) => self.get.as_ref(),
            Call::Put(_) => self.put.as_ref(),
            Call::Delete(_) => self.delete.as_ref(),
            Call::CompareAndSwap(_) => self.compare_and_swap.as_ref(),
        }
    }
}

/// How the stream's caller reached the router, kept for the stream's frames.
#[derive(Clone)]
enum Opener {
    Plain,
    Certificate(Vec<u8>),
    NoCertificate,
}

impl Opener {
    fn of<T>(request: &Request<T>) -> Opener {
        let tls = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
        let certs = tls.and_then(TlsConnectInfo::peer_certs);
        let leaf = certs.as_ref().and_then(|certs| certs.first());
        match (tls, leaf) {
            (None, _) => Opener::Plain,
            (Some(_), Some(leaf)) => Opener::Certificate(leaf.as_ref().to_vec()),
            (Some(_), None) => Opener::NoCertificate,
        }
    }

    fn peer(&self) -> Peer<'_> {
        match self {
            Opener::Plain => Peer::Plain,
            Opener::Certificate(leaf) => Peer::Certificate(leaf),
            Opener::NoCertificate => Peer::NoCertificate,
        }
    }
}

impl<N: NodeApi> KvService<N> {
    /// Serves the frames of `request`'s stream on a task of its own.
    pub(super) fn serve_pipeline(&self, request: Request<Streaming<KvFrames>>) -> Replies {
        let answers = FrameAnswers {
            service: self.clone(),
            opener: Arc::new(Opener::of(&request)),
            token: request
                .metadata()
                .get(metadata::AUTHORIZATION)
                .map(|value| Arc::from(value.to_str().unwrap_or("\u{fffd}"))),
        };
        let stopping = self.pipeline.stopping.clone();
        ringkv_pipeline::serve(answers, request.into_inner(), stopping, self.pipeline.limits)
    }
}

struct FrameAnswers<N> {
    service: KvService<N>,
    opener: Arc<Opener>,
    /// The `authorization` value the stream was opened with.
    token: Option<Arc<str>>,
}

impl<N: NodeApi> ringkv_pipeline::receiver::Answer for FrameAnswers<N> {
    type Frames = KvFrames;
    type Frame = KvFrame;
    type Reply = KvFrameReply;
    type Replies = KvFrameReplies;
    const NAME: &'static str = "kv pipeline";

    fn unpack(frames: KvFrames) -> Vec<KvFrame> {
        frames.frames
    }

    fn pack(replies: Vec<KvFrameReply>) -> KvFrameReplies {
        KvFrameReplies { replies }
    }

    fn reply_bytes(reply: &KvFrameReply) -> usize {
        prost::Message::encoded_len(reply)
    }

    fn answer(&self, frame: KvFrame) -> impl Future<Output = KvFrameReply> + Send + 'static {
        let service = self.service.clone();
        let opener = Arc::clone(&self.opener);
        let token = self.token.clone();
        async move {
            let id = frame.id;
            let answer = match answer(service, &opener, token.as_deref(), frame).await {
                Ok(answer) => answer,
                Err(status) => FrameAnswer::Failed(ringkv_pipeline::status::to_frame(&status)),
            };
            KvFrameReply {
                id,
                answer: Some(answer),
            }
        }
    }
}

/// What the frame's unary call would answer, counted as that call.
async fn answer<N: NodeApi>(
    service: KvService<N>,
    opener: &Opener,
    token: Option<&str>,
    frame: KvFrame,
) -> Result<FrameAnswer, Status> {
    let Some(call) = frame.call else {
        return Err(Status::invalid_argument("a kv pipeline frame without a call"));
    };
    let started = Instant::now();
    let counter = service.pipeline.counters.of(&call).cloned();
    let timeout = (frame.timeout_ms > 0).then(|| Duration::from_millis(u64::from(frame.timeout_ms)));
    let answered = match service.ctx.auth.user_of(opener.peer(), token) {
        Ok(user) => USER.scope(user, answer_call(&service, timeout, call)).await,
        Err(err) => Err(to_status(&err)),
    };
    if let Some(counter) = counter {
        match &answered {
            Ok(_) => counter.observe(0, false, started),
            Err(status) => counter.observe(
                status.code() as i32,
                metadata::is_outcome_unknown(status),
                started,
            ),
        }
    }
    answered
}

/// `call` as its unary RPC handles it, for the user in scope, within `timeout`.
async fn answer_call<N: NodeApi>(
    service: &KvService<N>,
    timeout: Option<Duration>,
    call: Call,
) -> Result<FrameAnswer, Status> {
    let auth = &service.ctx.auth;
    let allowed = match &call {
        Call::Get(get) => auth.authorize_message(get),
        Call::Put(put) => auth.authorize_message(put),
        Call::Delete(delete) => auth.authorize_message(delete),
        Call::CompareAndSwap(cas) => auth.authorize_message(cas),
    };
    allowed.map_err(|err| to_status(&err))?;
    let admission = service.ctx.admit_within(timeout).map_err(|err| to_status(&err))?;
    let deadline = admission.deadline;
    let answered =
        match call {
            Call::Get(get) => respond("get", service.handle_get(get, deadline).await)
                .map(|r| FrameAnswer::Get(r.into_inner())),
            Call::Put(put) => respond("put", service.handle_put(put, deadline).await)
                .map(|r| FrameAnswer::Put(r.into_inner())),
            Call::Delete(delete) => respond("delete", service.handle_delete(delete, deadline).await)
                .map(|r| FrameAnswer::Delete(r.into_inner())),
            Call::CompareAndSwap(cas) => respond(
                "compare_and_swap",
                service.handle_compare_and_swap(cas, deadline).await,
            )
            .map(|r| FrameAnswer::CompareAndSwap(r.into_inner())),
        };
    drop(admission);
    answered
}
