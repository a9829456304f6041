//! `ShardKv.Pipeline`: a router's reads and writes of any shards of this node as frames on
//! one stream (the router's side is `router/src/node_pipeline.rs`).
//!
//! Each frame is answered exactly as its unary call (`Read`, `Write`, `WriteBatch`) would
//! be — the same checks, the same permission check for the user it acts for, the same
//! status on failure (leader hints and "rejected"/"outcome unknown" marks travel in
//! [`FrameStatus`](ringkv_proto::v1::FrameStatus)). What a unary call's `grpc-timeout` did, a frame's
//! `timeout_ms` does: the node stops working on it then (a write may still apply: it is
//! answered "outcome unknown"). The stream's task and its bounds are `ringkv-pipeline`'s.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_authz::{Access, Permission};
use ringkv_metrics::{CallCounter, RpcMetrics};
use ringkv_proto::metadata;
use ringkv_proto::v1::shard_frame::Call;
use ringkv_proto::v1::shard_frame_reply::Answer as FrameAnswer;
use ringkv_proto::v1::{ShardFrame, ShardFrameReplies, ShardFrameReply, ShardFrames};
use ringkv_tls::Role;
use tonic::{Status, Streaming};

use super::ShardKvService;
use crate::service::authz::{Authorizer, Touches};
use crate::service::roles::Caller;
use crate::service::status;

/// The answers of one stream, as tonic sends them.
pub type Replies = ringkv_pipeline::Replies<ShardFrameReplies>;

/// The per-method request metrics frames count in (`Read`, `Write`, `WriteBatch` of
/// `ringkv.v1.ShardKv`), so the node's metrics read the same whether calls came unary or
/// framed.
#[derive(Clone)]
pub struct FrameCounters {
    read: Option<CallCounter>,
    write: Option<CallCounter>,
    write_batch: Option<CallCounter>,
}

impl FrameCounters {
    pub fn new(metrics: &Arc<RpcMetrics>) -> FrameCounters {
        let service = ringkv_proto::v1::shard_kv_server::SERVICE_NAME;
        FrameCounters {
            read: metrics.method(service, "Read"),
            write: metrics.method(service, "Write"),
            write_batch: metrics.method(service, "WriteBatch"),
        }
    }

    fn of(&self, call: &Call) -> Option<&CallCounter> {
        match call {
            Call::Read(_) => self.read.as_ref(),
            Call::Write(_) => self.write.as_ref(),
            Call::WriteBatch(_) => self.write_batch.as_ref(),
        }
    }
}

/// Who the frames of one stream act for: the stream's caller, or — on a stream a router
/// opened — the user each frame names (a unary call's `x-ringkv-user`, believed from
/// router certificates only).
#[derive(Clone)]
pub struct FrameAuth {
    auth: Authorizer,
    caller: Caller,
}

impl FrameAuth {
    pub fn new(auth: Authorizer, caller: Caller) -> FrameAuth {
        FrameAuth { auth, caller }
    }

    /// Whether the user `frame_user` (empty: the stream's caller) may do what `touched`
    /// lists.
    fn check(
        &self,
        frame_user: &str,
        touched: &[(Permission, Access<'_>)],
        is_write: bool,
    ) -> Result<(), Status> {
        let user = match (self.caller.role, frame_user) {
            (_, "") => self.caller.user.as_str(),
            (Role::Router, forwarded) => {
                ringkv_tls::check_user(forwarded).map_err(|err| {
                    Status::invalid_argument(format!("a shard pipeline frame names a bad user: {err}"))
                })?;
                forwarded
            }
            (role, _) => {
                return Err(Status::permission_denied(format!(
                    "a shard pipeline frame names a user, which only routers may do; the \
                     stream was opened with a {role} certificate"
                )))
            }
        };
        self.auth
            .check_user(user, touched)
            .map_err(|err| status(err, is_write))
    }
}

impl ShardKvService {
    /// Serves the frames of `inbound` on a task of its own; `auth`: who they act for
    /// (None without TLS: everything acts as root).
    pub fn serve_pipeline(&self, auth: Option<FrameAuth>, inbound: Streaming<ShardFrames>) -> Replies {
        let answers = FrameAnswers {
            service: self.clone(),
            auth,
        };
        let stopping = self.stopping.clone();
        ringkv_pipeline::serve(answers, inbound, stopping, Default::default())
    }
}

struct FrameAnswers {
    service: ShardKvService,
    auth: Option<FrameAuth>,
}

impl ringkv_pipeline::receiver::Answer for FrameAnswers {
    type Frames = ShardFrames;
    type Frame = ShardFrame;
    type Reply = ShardFrameReply;
    type Replies = ShardFrameReplies;
    const NAME: &'static str = "shard pipeline";

    fn unpack(frames: ShardFrames) -> Vec<ShardFrame> {
        frames.frames
    }

    fn pack(replies: Vec<ShardFrameReply>) -> ShardFrameReplies {
        ShardFrameReplies { replies }
    }

    fn reply_bytes(reply: &ShardFrameReply) -> usize {
        prost::Message::encoded_len(reply)
    }

    fn answer(&self, frame: ShardFrame) -> impl Future<Output = ShardFrameReply> + Send + 'static {
        let service = self.service.clone();
        let auth = self.auth.clone();
        async move {
            let id = frame.id;
            let answer = match answer(service, auth, frame).await {
                Ok(answer) => answer,
                Err(status) => FrameAnswer::Failed(ringkv_pipeline::status::to_frame(&status)),
            };
            ShardFrameReply {
                id,
                answer: Some(answer),
            }
        }
    }
}

/// What the frame's unary call would answer, within the frame's time.
async fn answer(
    service: ShardKvService,
    auth: Option<FrameAuth>,
    frame: ShardFrame,
) -> Result<FrameAnswer, Status> {
    let Some(call) = frame.call else {
        return Err(Status::invalid_argument("a shard pipeline frame without a call"));
    };
    let started = Instant::now();
    let counter = service.frame_counters.of(&call).cloned();
    let answered = answer_call(&service, auth, frame.user, frame.timeout_ms, call).await;
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

/// What `call`'s unary call would answer, acting for `user`, within `timeout_ms`.
async fn answer_call(
    service: &ShardKvService,
    auth: Option<FrameAuth>,
    user: String,
    timeout_ms: u32,
    call: Call,
) -> Result<FrameAnswer, Status> {
    let is_write = !matches!(call, Call::Read(_));
    if let Some(auth) = &auth {
        let touched = match &call {
            Call::Read(read) => read.touches(),
            Call::Write(write) => write.touches(),
            Call::WriteBatch(batch) => batch.touches(),
        };
        auth.check(&user, &touched, is_write)?;
    }
    let work = async {
        let answered = match call {
            Call::Read(read) => service.read(read).await.map(FrameAnswer::Read),
            Call::Write(write) => service.write(write).await.map(FrameAnswer::Write),
            Call::WriteBatch(batch) => service.write_batch(batch).await.map(FrameAnswer::WriteBatch),
        };
        answered.map_err(|err| status(err, is_write))
    };
    if timeout_ms == 0 {
        return work.await;
    }
    let timeout = Duration::from_millis(u64::from(timeout_ms));
    match tokio::time::timeout(timeout, work).await {
        Ok(answered) => answered,
        Err(_elapsed) => {
            let mut expired =
                Status::deadline_exceeded(format!("no answer within the frame's {timeout_ms} ms"));
            if is_write {
                metadata::set_outcome_unknown(&mut expired);
            }
            Err(expired)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ringkv_authz::{AuthChange, AuthTable, Grant};
    use ringkv_proto::v1::ShardReadRequest;
    use tokio::sync::watch;
    use tonic::Code;

    use super::*;

    /// A table where `reader` may read `app/`, enforced.
    fn authorizer() -> Authorizer {
        let changes = [
            AuthChange::AddRole { role: "r".into() },
            AuthChange::Grant {
                role: "r".into(),
                grant: Grant {
                    prefix: b"app/".to_vec(),
                    permission: Permission::Read,
                },
            },
            AuthChange::AddUser {
                user: "reader".into(),
                roles: vec!["r".into()],
            },
            AuthChange::Enable,
        ];
        let mut table = AuthTable::default();
        for change in &changes {
            table = table.apply(change).expect("a valid change");
        }
        let (_keep, table) = watch::channel(Arc::new(table));
        Authorizer::watching(table)
    }

    /// Whether `auth` lets a frame naming `user` read `key`.
    fn read(auth: &FrameAuth, user: &str, key: &[u8]) -> Result<(), Code> {
        let request = ShardReadRequest {
            keys: vec![key.to_vec()],
            ..Default::default()
        };
        auth.check(user, &request.touches(), false)
            .map_err(|status| status.code())
    }

    /// A router's frame acts for the user it names, checked like that user's unary call;
    /// without one it acts for the stream's caller (root for a router).
    #[test]
    fn a_routers_frames_act_for_the_user_they_name() {
        let router = FrameAuth::new(
            authorizer(),
            Caller {
                role: Role::Router,
                user: ringkv_authz::ROOT_USER.into(),
            },
        );
        assert_eq!(read(&router, "reader", b"app/1"), Ok(()));
        assert_eq!(read(&router, "reader", b"other/1"), Err(Code::PermissionDenied));
        assert_eq!(read(&router, "", b"other/1"), Ok(()));
        assert_eq!(read(&router, ".bad", b"app/1"), Err(Code::InvalidArgument));
    }

    /// A client's stream acts for its own user; a frame naming another is refused.
    #[test]
    fn a_clients_frames_cannot_name_another_user() {
        let client = FrameAuth::new(
            authorizer(),
            Caller {
                role: Role::Client,
                user: "reader".into(),
            },
        );
        assert_eq!(read(&client, "", b"app/1"), Ok(()));
        assert_eq!(read(&client, "", b"other/1"), Err(Code::PermissionDenied));
        assert_eq!(read(&client, "root", b"other/1"), Err(Code::PermissionDenied));
    }
}
