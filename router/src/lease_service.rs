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

use futures::stream::{self, FuturesUnordered, StreamExt};
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
use crate::validate::bad_field;

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
        let lease = ringkv_lease::grant(&self.store(deadline), ttl).await?;
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
        let keeper = KeepAliveStream {
            ctx: Arc::clone(&self.ctx),
            tso: Arc::clone(&self.tso),
            user: acting_user(),
            requests: request.into_inner(),
            requests_open: true,
            running: FuturesUnordered::new(),
            asked_again: HashMap::new(),
            shutdown: self.shutdown.clone(),
        };
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

/// The state of one `LeaseKeepAlive` stream (see the module docs).
struct KeepAliveStream<N> {
    ctx: Arc<RouterContext<N>>,
    tso: Arc<TsoClient>,
    /// The caller, whose permissions each keep-alive's steps are checked against (the
    /// keep-alives run on the stream's task, outside the request's scope).
    user: String,
    requests: Streaming<LeaseKeepAliveRequest>,
    /// The client may still send requests.
    requests_open: bool,
    /// The keep-alives running, at most [`MAX_KEEP_ALIVES_IN_FLIGHT_PER_STREAM`].
    running: FuturesUnordered<Pin<Box<dyn Future<Output = KeepAliveDone> + Send>>>,
    /// The lease ids running, and whether each was sent again meanwhile.
    asked_again: HashMap<LeaseId, bool>,
    shutdown: CancellationToken,
}

impl<N: NodeApi> KeepAliveStream<N> {
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
        let store = RouterLeaseStore {
            ctx: Arc::clone(&self.ctx),
            tso: Arc::clone(&self.tso),
            deadline: Instant::now() + self.ctx.timeouts.default_timeout,
        };
        self.asked_again.insert(id, false);
        let keep_alive = async move { (id, ringkv_lease::keep_alive_once(&store, id).await) };
        self.running
            .push(Box::pin(USER.scope(self.user.clone(), keep_alive)));
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
                request = self.requests.message(), if self.requests_open && room => match request {
                    Ok(Some(request)) => {
                        let id = match lease_id("id", request.id) {
                            Ok(id) => id,
                            Err(err) => return Some(Err(to_status(&err))),
                        };
                        match self.asked_again.get_mut(&id) {
                            Some(again) => *again = true,
                            None => self.start(id),
                        }
                    }
                    Ok(None) => self.requests_open = false,
                    Err(status) => {
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
