//! The pipeline against a fake peer on a real socket: batching, per-frame failures, a
//! broken stream, a peer without the RPC, and the size bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1::raft_client::RaftClient;
use ringkv_proto::v1::raft_server::{Raft, RaftServer};
use ringkv_proto::v1::{self, RaftFrameReplies, RaftFrameReply, RaftFrames, RaftMessage, RaftReply, RaftRpc};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, Streaming};

use super::Pipeline;

/// Echoes each frame's payload; a payload `fail` is answered NOT_FOUND, `break` ends the
/// stream with an error. `old`: a peer of a version without the pipeline.
#[derive(Clone, Default)]
struct FakePeer {
    old: bool,
    streams: Arc<AtomicUsize>,
    messages: Arc<AtomicUsize>,
}

type Unary = Result<Response<RaftReply>, Status>;

#[tonic::async_trait]
impl Raft for FakePeer {
    async fn append_entries(&self, _: Request<RaftMessage>) -> Unary {
        Err(Status::unimplemented("fake"))
    }
    async fn confirm_leadership(&self, _: Request<RaftMessage>) -> Unary {
        Err(Status::unimplemented("fake"))
    }
    async fn vote(&self, _: Request<RaftMessage>) -> Unary {
        Err(Status::unimplemented("fake"))
    }
    async fn install_snapshot(&self, _: Request<RaftMessage>) -> Unary {
        Err(Status::unimplemented("fake"))
    }

    type PipelineStream = ReceiverStream<Result<RaftFrameReplies, Status>>;

    async fn pipeline(
        &self,
        request: Request<Streaming<RaftFrames>>,
    ) -> Result<Response<Self::PipelineStream>, Status> {
        if self.old {
            return Err(Status::unimplemented("no such method"));
        }
        self.streams.fetch_add(1, Ordering::SeqCst);
        let mut inbound = request.into_inner();
        let (replies, answers) = mpsc::channel(4);
        let messages = self.messages.clone();
        tokio::spawn(async move {
            while let Ok(Some(frames)) = inbound.message().await {
                messages.fetch_add(1, Ordering::SeqCst);
                let mut ready = Vec::new();
                for frame in frames.frames {
                    let payload = frame.message.map(|message| message.payload).unwrap_or_default();
                    if payload == b"break" {
                        let _ = replies.send(Err(Status::internal("broken"))).await;
                        return;
                    }
                    let (code, reply) = match payload == b"fail" {
                        true => (Code::NotFound as i32, None),
                        false => (0, Some(RaftReply { payload })),
                    };
                    ready.push(RaftFrameReply {
                        id: frame.id,
                        reply,
                        code,
                        message: "answered".to_string(),
                    });
                }
                if replies
                    .send(Ok(RaftFrameReplies { replies: ready }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(answers)))
    }

    async fn join_cluster(
        &self,
        _: Request<v1::JoinClusterRequest>,
    ) -> Result<Response<v1::JoinClusterResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn propose_system(&self, _: Request<RaftMessage>) -> Unary {
        Err(Status::unimplemented("fake"))
    }
    async fn group_membership(
        &self,
        _: Request<v1::GroupMembershipRequest>,
    ) -> Result<Response<v1::GroupMembershipResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn campaign(
        &self,
        _: Request<v1::CampaignRequest>,
    ) -> Result<Response<v1::CampaignResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn keep_alive(
        &self,
        _: Request<v1::KeepAliveRequest>,
    ) -> Result<Response<v1::KeepAliveResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// A served fake peer and a pipeline to it; the server stops when the guard drops.
struct Fixture {
    peer: FakePeer,
    pipeline: Arc<Pipeline>,
    _stop: tokio_util::sync::DropGuard,
}

async fn fixture(peer: FakePeer, max_message_bytes: usize) -> Fixture {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let stop = CancellationToken::new();
    let server = RaftServer::new(peer.clone());
    let stopped = stop.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped.cancelled())
            .await
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy();
    let pipeline = Pipeline::start(
        addr,
        RaftClient::new(channel),
        max_message_bytes,
        Duration::from_secs(5),
    );
    Fixture {
        peer,
        pipeline: Arc::new(pipeline),
        _stop: stop.drop_guard(),
    }
}

fn message(payload: &[u8]) -> RaftMessage {
    RaftMessage {
        payload: payload.to_vec(),
        ..RaftMessage::default()
    }
}

async fn call(pipeline: &Pipeline, payload: &[u8]) -> Result<Vec<u8>, Status> {
    pipeline
        .call(RaftRpc::AppendEntries, message(payload))
        .await
        .map(|reply| reply.payload)
}

/// Messages queued together travel in one stream message, each answered to its caller.
#[tokio::test(flavor = "current_thread")]
async fn queued_messages_share_stream_messages_and_each_gets_its_answer() {
    let fixture = fixture(FakePeer::default(), 4 << 20).await;
    let calls: Vec<_> = (0..200u32)
        .map(|n| {
            let pipeline = fixture.pipeline.clone();
            tokio::spawn(async move { (n, call(&pipeline, &n.to_be_bytes()).await) })
        })
        .collect();
    for joined in calls {
        let (n, answered) = joined.await.expect("caller");
        assert_eq!(answered.expect("answer"), n.to_be_bytes().to_vec());
    }
    let messages = fixture.peer.messages.load(Ordering::SeqCst);
    assert!(messages < 200, "200 calls took {messages} stream messages");
    assert_eq!(fixture.peer.streams.load(Ordering::SeqCst), 1);
}

/// A frame the peer fails fails alone, with the peer's code; the stream goes on.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_frame_fails_alone() {
    let fixture = fixture(FakePeer::default(), 4 << 20).await;
    let (failed, answered) = tokio::join!(call(&fixture.pipeline, b"fail"), call(&fixture.pipeline, b"ok"));
    assert_eq!(failed.expect_err("failed").code(), Code::NotFound);
    assert_eq!(answered.expect("answered"), b"ok".to_vec());
    assert_eq!(
        call(&fixture.pipeline, b"again").await.expect("again"),
        b"again".to_vec()
    );
    assert_eq!(fixture.peer.streams.load(Ordering::SeqCst), 1);
}

/// A stream that breaks fails what was in flight as UNAVAILABLE; the next call opens a
/// new stream.
#[tokio::test(flavor = "current_thread")]
async fn a_broken_stream_fails_its_frames_and_the_next_call_reopens() {
    let fixture = fixture(FakePeer::default(), 4 << 20).await;
    let broken = call(&fixture.pipeline, b"break").await.expect_err("broken");
    assert_eq!(broken.code(), Code::Unavailable, "{broken:?}");
    assert_eq!(
        call(&fixture.pipeline, b"after").await.expect("after"),
        b"after".to_vec()
    );
    assert_eq!(fixture.peer.streams.load(Ordering::SeqCst), 2);
}

/// A peer without the RPC answers UNIMPLEMENTED (the transport then goes unary).
#[tokio::test(flavor = "current_thread")]
async fn a_peer_without_the_pipeline_answers_unimplemented() {
    let old = FakePeer {
        old: true,
        ..FakePeer::default()
    };
    let fixture = fixture(old, 4 << 20).await;
    let refused = call(&fixture.pipeline, b"x").await.expect_err("old peer");
    assert_eq!(refused.code(), Code::Unimplemented);
}

/// A message larger than a stream message may be is refused as too large (openraft then
/// sends fewer entries), and sends nothing.
#[tokio::test(flavor = "current_thread")]
async fn a_message_over_the_limit_is_refused_as_too_large() {
    let fixture = fixture(FakePeer::default(), 4096).await;
    let refused = call(&fixture.pipeline, &[7u8; 8192])
        .await
        .expect_err("too large");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(fixture.peer.streams.load(Ordering::SeqCst), 0);
    assert_eq!(
        call(&fixture.pipeline, b"small").await.expect("small"),
        b"small".to_vec()
    );
}
