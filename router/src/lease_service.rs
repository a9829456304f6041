//! The `ringkv.v1.Lease` service (lease.proto): etcd's leases for a client in any language,
//! served by every router alike.
//!
//! The router keeps no lease state: each call runs the lease algorithm of `ringkv-lease`
//! (the one the Rust client library runs) on `lease_store`, so the state is the lease
//! records and the attached keys' expiries, in the shards. Any router serves any lease;
//! a router restart loses nothing.
//!
//! `LeaseKeepAlive` is a bidirectional stream with bounded work per stream: at most
//! [`MAX_KEEP_ALIVES_IN_FLIGHT_PER_STREAM`] keep-alives run at once, one per lease id (an
//! id sent again while its keep-alive runs is marked to run once more after it, one answer
//! for both); at the limit the stream's requests are not read until one finishes (HTTP/2
//! flow control pushes back on the client). Answers go out through the router's stream
//! bounds (`streams`: a stream slot, one message made at a time, a reader that takes none
//! for `stream_idle_timeout_ms` is cut with DEADLINE_EXCEEDED, `stream_total_timeout_ms`).
//! A lease that is gone is answered with TTL 0, as in etcd; any other failure ends the
//! stream with its status; router shutdown ends it cleanly (OK), so clients reconnect.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, FuturesUnordered, Stream, StreamExt};
use ringkv_lease::{LeaseId, LeaseStatus};
use ringkv_proto::v1::lease_server::Lease as LeaseRpc;
use ringkv_proto::v1::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use crate::auth::{acting_user, USER};
use crate::context::RouterContext;
use crate::error::{to_status, RouterError};
use crate::kv_service::respond;
use crate::lease_store::{RouterLeaseStore, MAX_LISTED_LEASES};
use crate::node_api::NodeApi;
use crate::streams::ResponseStream;
use crate::tso::TsoClient;
use crate::validate::{bad_field, parse_request_id};

/// Most keep-alives one `LeaseKeepAlive` stream runs at once (each of another lease id).
pub const MAX_KEEP_ALIVES_IN_FLIGHT_PER_STREAM: usize = 64;

/// The lease service.
pub struct LeaseService<N> {
    ctx: Arc<RouterContext<N>>,
    tso: Arc<TsoClient>,
    /// Cancelled when the router starts shutting down: keep-alive streams end then.
    shutdown: CancellationToken,
}

impl<N: NodeApi> LeaseService<N> {
    pub fn new(ctx: Arc<RouterContext<N>>, tso: Arc<TsoClient>, shutdown: CancellationToken) -> Self {
        LeaseService { ctx, tso, shutdown }
    }

    fn store(&self, deadline: Instant) -> RouterLeaseStore<N> {
        RouterLeaseStore {
            ctx: Arc::clone(&self.ctx),
            tso: Arc::clone(&self.tso),
            deadline,
        }
    }

    async fn handle_grant(
        &self,
        request: LeaseGrantRequest,
        deadline: Instant,
    ) -> Result<LeaseGrantResponse, RouterError> {
        let ttl = Duration::from_millis(request.ttl_ms);
        ringkv_lease::checked_ttl_ms(ttl).map_err(|err| bad_field("ttl_ms", err.to_string()))?;
        let store = self.store(deadline);
        let lease = match parse_request_id(&request.request_id)? {
            Some(request_id) => ringkv_lease::grant_for_request(&store, &request_id, ttl).await?,
            None => ringkv_lease::grant(&store, ttl).await?,
        };
        Ok(LeaseGrantResponse {
            id: lease.id.0,
            ttl_ms: request.ttl_ms,
            expires_at_ts: lease.expires_at_ts,
        })
    }

    async fn handle_revoke(
        &self,
        request: LeaseRevokeRequest,
        deadline: Instant,
    ) -> Result<LeaseRevokeResponse, RouterError> {
        let id = lease_id("id", request.id)?;
        let deleted_keys = ringkv_lease::revoke(&self.store(deadline), id).await?;
        Ok(LeaseRevokeResponse { deleted_keys })
    }

    async fn handle_time_to_live(
        &self,
        request: LeaseTimeToLiveRequest,
        deadline: Instant,
    ) -> Result<LeaseTimeToLiveResponse, RouterError> {
        let id = lease_id("id", request.id)?;
        let LeaseStatus {
            lease,
            remaining,
            keys,
        } = ringkv_lease::time_to_live(&self.store(deadline), id).await?;
        Ok(LeaseTimeToLiveResponse {
            id: id.0,
            granted_ttl_ms: millis(lease.ttl),
            remaining_ms: millis(remaining),
            expires_at_ts: lease.expires_at_ts,
            keys: if request.keys { keys } else { Vec::new() },
        })
    }

    async fn handle_leases(&self, deadline: Instant) -> Result<LeaseLeasesResponse, RouterError> {
        let mut ids: Vec<u64> = ringkv_lease::list(&self.store(deadline))
            .await?
            .into_iter()
            .map(|id| id.0)
            .collect();
        let truncated = ids.len() > MAX_LISTED_LEASES;
        ids.truncate(MAX_LISTED_LEASES);
        Ok(LeaseLeasesResponse { ids, truncated })
    }
}

/// A lease id from the wire: not zero.
fn lease_id(field: &str, id: u64) -> Result<LeaseId, RouterError> {
    LeaseId::from_wire(id).map_err(|err| bad_field(field, err.to_string()))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[tonic::async_trait]
impl<N: NodeApi> LeaseRpc for LeaseService<N> {
    type LeaseKeepAliveStream = ResponseStream<LeaseKeepAliveResponse>;

    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        respond(
            "lease_grant",
            self.handle_grant(request.into_inner(), admission.deadline).await,
        )
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        respond(
            "lease_revoke",
            self.handle_revoke(request.into_inner(), admission.deadline).await,
        )
    }

    /// Takes a stream slot, not an in-flight permit (see `streams`); each keep-alive has
    /// the router's default request timeout.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let admission = self
            .ctx
            .admit_stream(request.metadata())
            .map_err(|e| to_status(&e))?;
        let (ctx, tso, user) = (Arc::clone(&self.ctx), Arc::clone(&self.tso), acting_user());
        // The stream's task runs outside the request's scope: each keep-alive runs under the
        // caller's user, whose permissions its steps are checked against.
        let keep_alive: KeepAliveFn = Box::new(move |id| {
            let store = RouterLeaseStore {
                ctx: Arc::clone(&ctx),
                tso: Arc::clone(&tso),
                deadline: Instant::now() + ctx.timeouts.default_timeout,
            };
            let keep_alive = async move { (id, ringkv_lease::keep_alive_once(&store, id).await) };
            Box::pin(USER.scope(user.clone(), keep_alive))
        });
        let keeper = KeepAliveStream::new(Box::pin(request.into_inner()), keep_alive, self.shutdown.clone());
        Ok(Response::new(
            self.ctx.streams.serve(admission.slot, keeper.into_answers()),
        ))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        respond(
            "lease_time_to_live",
            self.handle_time_to_live(request.into_inner(), admission.deadline)
                .await,
        )
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        respond("lease_leases", self.handle_leases(admission.deadline).await)
    }
}

/// One keep-alive's outcome.
type KeepAliveDone = (LeaseId, Result<ringkv_lease::Lease, RouterError>);
/// One keep-alive, running.
type KeepAliveFuture = Pin<Box<dyn Future<Output = KeepAliveDone> + Send>>;
/// Starts one keep-alive of a lease.
type KeepAliveFn = Box<dyn Fn(LeaseId) -> KeepAliveFuture + Send>;
/// What the client sends on a keep-alive stream.
type KeepAliveRequests = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send>>;

/// The state of one `LeaseKeepAlive` stream (see the module docs).
struct KeepAliveStream {
    requests: KeepAliveRequests,
    /// The client may still send requests.
    requests_open: bool,
    keep_alive: KeepAliveFn,
    /// The keep-alives running, at most [`MAX_KEEP_ALIVES_IN_FLIGHT_PER_STREAM`].
    running: FuturesUnordered<KeepAliveFuture>,
    /// The lease ids running, and whether each was sent again meanwhile.
    asked_again: HashMap<LeaseId, bool>,
    shutdown: CancellationToken,
}

impl KeepAliveStream {
    fn new(requests: KeepAliveRequests, keep_alive: KeepAliveFn, shutdown: CancellationToken) -> Self {
        KeepAliveStream {
            requests,
            requests_open: true,
            keep_alive,
            running: FuturesUnordered::new(),
            asked_again: HashMap::new(),
            shutdown,
        }
    }

    /// The answers, ending after the first error.
    fn into_answers(self) -> ResponseStream<LeaseKeepAliveResponse> {
        Box::pin(stream::unfold(Some(self), |state| async move {
            let mut state = state?;
            match state.next_answer().await? {
                Ok(answer) => Some((Ok(answer), Some(state))),
                Err(status) => Some((Err(status), None)),
            }
        }))
    }

    fn start(&mut self, id: LeaseId) {
        self.asked_again.insert(id, false);
        self.running.push((self.keep_alive)(id));
    }

    /// The next answer; `None` when the client closed its side and every keep-alive was
    /// answered, the client went away, or the router is shutting down.
    async fn next_answer(&mut self) -> Option<Result<LeaseKeepAliveResponse, Status>> {
        loop {
            if !self.requests_open && self.running.is_empty() {
                return None;
            }
            let room = self.running.len() < MAX_KEEP_ALIVES_IN_FLIGHT_PER_STREAM;
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return None,
                Some((id, outcome)) = self.running.next(), if !self.running.is_empty() => {
                    if self.asked_again.remove(&id) == Some(true) && outcome.is_ok() {
                        self.start(id);
                    }
                    return Some(answer(id, outcome));
                }
                request = self.requests.next(), if self.requests_open && room => match request {
                    Some(Ok(request)) => {
                        let id = match lease_id("id", request.id) {
                            Ok(id) => id,
                            Err(err) => return Some(Err(to_status(&err))),
                        };
                        match self.asked_again.get_mut(&id) {
                            Some(again) => *again = true,
                            None => self.start(id),
                        }
                    }
                    None => self.requests_open = false,
                    Some(Err(status)) => {
                        debug!(%status, "keep-alive stream broken by the client");
                        return None;
                    }
                },
            }
        }
    }
}

/// A keep-alive's answer: the new deadline, TTL 0 for a lease that is gone, or the error
/// that ends the stream.
fn answer(
    id: LeaseId,
    outcome: Result<ringkv_lease::Lease, RouterError>,
) -> Result<LeaseKeepAliveResponse, Status> {
    match outcome {
        Ok(lease) => Ok(LeaseKeepAliveResponse {
            id: id.0,
            ttl_ms: millis(lease.ttl),
            expires_at_ts: lease.expires_at_ts,
        }),
        Err(RouterError::NotFound(_)) => Ok(LeaseKeepAliveResponse {
            id: id.0,
            ttl_ms: 0,
            expires_at_ts: 0,
        }),
        Err(err) => {
            warn!(lease = %id, %err, "keep-alive failed; ending the stream");
            Err(to_status(&err))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::channel::mpsc;
    use futures::FutureExt;
    use tokio::sync::oneshot;
    use tonic::Code;

    use super::*;

    type Outcome = Result<ringkv_lease::Lease, RouterError>;

    /// A keep-alive started, and how the test finishes it.
    type Running = (LeaseId, oneshot::Sender<Outcome>);

    /// Keep-alives the test finishes by hand, in the order they started.
    #[derive(Clone, Default)]
    struct Started(Arc<Mutex<Vec<Running>>>);

    impl Started {
        fn keep_alive(&self) -> KeepAliveFn {
            let started = self.clone();
            Box::new(move |id| {
                let (finish, finished) = oneshot::channel();
                started.0.lock().unwrap().push((id, finish));
                Box::pin(async move {
                    let outcome = finished
                        .await
                        .unwrap_or_else(|_| Err(RouterError::Internal("dropped".into())));
                    (id, outcome)
                })
            })
        }

        fn ids(&self) -> Vec<u64> {
            self.0.lock().unwrap().iter().map(|(id, _)| id.0).collect()
        }

        /// Finishes the `index`th keep-alive started.
        fn finish(&self, index: usize, outcome: Outcome) {
            let (_, finish) = self.0.lock().unwrap().remove(index);
            finish.send(outcome).unwrap();
        }
    }

    fn lease(id: u64) -> Outcome {
        Ok(ringkv_lease::Lease {
            id: LeaseId(id),
            ttl: Duration::from_secs(2),
            expires_at_ts: 42,
        })
    }

    struct Harness {
        send: mpsc::UnboundedSender<Result<LeaseKeepAliveRequest, Status>>,
        answers: ResponseStream<LeaseKeepAliveResponse>,
        started: Started,
        shutdown: CancellationToken,
    }

    fn harness() -> Harness {
        let (send, requests) = mpsc::unbounded();
        let started = Started::default();
        let shutdown = CancellationToken::new();
        let keeper = KeepAliveStream::new(Box::pin(requests), started.keep_alive(), shutdown.clone());
        Harness {
            send,
            answers: keeper.into_answers(),
            started,
            shutdown,
        }
    }

    impl Harness {
        fn ask(&self, id: u64) {
            self.send
                .unbounded_send(Ok(LeaseKeepAliveRequest { id }))
                .unwrap();
        }

        /// The next answer if one is ready now (everything here is in memory: one poll
        /// reads every request sent and finishes every keep-alive finished).
        fn ready(&mut self) -> Option<Option<Result<LeaseKeepAliveResponse, Status>>> {
            self.answers.next().now_or_never()
        }
    }

    /// An id sent again while its keep-alive runs starts no second one: it runs once more
    /// after the first finishes, and each run is answered once.
    #[tokio::test]
    async fn one_keep_alive_per_lease_id_at_a_time() {
        let mut stream = harness();
        for _ in 0..3 {
            stream.ask(7);
        }
        assert!(stream.ready().is_none());
        assert_eq!(stream.started.ids(), vec![7]);
        stream.started.finish(0, lease(7));
        let answer = stream.ready().unwrap().unwrap().unwrap();
        assert_eq!((answer.id, answer.ttl_ms, answer.expires_at_ts), (7, 2_000, 42));
        assert_eq!(stream.started.ids(), vec![7], "the repeat runs once more");
        stream.started.finish(0, lease(7));
        assert_eq!(stream.ready().unwrap().unwrap().unwrap().id, 7);
        assert!(stream.ready().is_none());
        assert!(stream.started.ids().is_empty(), "no third run");
    }

    /// At most MAX_KEEP_ALIVES_IN_FLIGHT_PER_STREAM run at once; the next request is read
    /// only when one finishes.
    #[tokio::test]
    async fn keep_alives_in_flight_are_bounded() {
        let mut stream = harness();
        let max = MAX_KEEP_ALIVES_IN_FLIGHT_PER_STREAM as u64;
        for id in 1..=max + 1 {
            stream.ask(id);
        }
        assert!(stream.ready().is_none());
        assert_eq!(stream.started.ids(), (1..=max).collect::<Vec<_>>());
        stream.started.finish(0, lease(1));
        assert_eq!(stream.ready().unwrap().unwrap().unwrap().id, 1);
        assert!(stream.ready().is_none());
        assert_eq!(stream.started.ids().last(), Some(&(max + 1)));
        assert_eq!(stream.started.ids().len(), MAX_KEEP_ALIVES_IN_FLIGHT_PER_STREAM);
    }

    /// A lease that is gone is answered with TTL 0 and the stream goes on; another failure
    /// ends the stream with its status; a zero id is INVALID_ARGUMENT.
    #[tokio::test]
    async fn gone_leases_answer_ttl_zero_and_errors_end_the_stream() {
        let mut stream = harness();
        stream.ask(3);
        assert!(stream.ready().is_none());
        stream
            .started
            .finish(0, Err(RouterError::NotFound("gone".into())));
        let answer = stream.ready().unwrap().unwrap().unwrap();
        assert_eq!((answer.id, answer.ttl_ms, answer.expires_at_ts), (3, 0, 0));
        stream.ask(4);
        assert!(stream.ready().is_none());
        stream
            .started
            .finish(0, Err(RouterError::Unavailable("no leader".into())));
        let status = stream.ready().unwrap().unwrap().unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(stream.ready().unwrap().is_none(), "the stream ended");

        let mut stream = harness();
        stream.ask(0);
        let status = stream.ready().unwrap().unwrap().unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(stream.ready().unwrap().is_none());
    }

    /// Shutdown ends the stream cleanly even with keep-alives running; a client that
    /// closes its side gets the answers still due, then the end.
    #[tokio::test]
    async fn shutdown_and_the_clients_close_end_the_stream() {
        let mut stream = harness();
        stream.ask(5);
        assert!(stream.ready().is_none());
        stream.shutdown.cancel();
        assert!(stream.ready().unwrap().is_none());

        let mut stream = harness();
        stream.ask(6);
        stream.send.close_channel();
        assert!(stream.ready().is_none());
        stream.started.finish(0, lease(6));
        assert_eq!(stream.ready().unwrap().unwrap().unwrap().id, 6);
        assert!(stream.ready().unwrap().is_none());
    }
}
