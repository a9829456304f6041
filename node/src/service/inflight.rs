//! Backpressure at the node: at most `max_inflight_requests` client requests and
//! `max_inflight_peer_requests` Raft requests are served at once, over all connections. A
//! request beyond the limit is refused at once with `RESOURCE_EXHAUSTED` naming the limit
//! (marked not applied: a router retries it within its deadline) instead of queueing, so a
//! flood from one caller, router or not, costs the node a permit check per request.
//!
//! [`Bounded`] wraps a generated tonic server (it stays a `NamedService`), so the limit is
//! counted before the request is decoded and the services themselves know nothing of it.
//! Client and peer requests have separate limits: client load cannot starve Raft.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::Status;

use super::status;
use crate::error::NodeError;

/// A shared bound on requests in flight, named after its config field.
#[derive(Debug, Clone)]
pub struct InflightLimit {
    permits: Arc<Semaphore>,
    field: &'static str,
    max_inflight: usize,
}

impl InflightLimit {
    /// A bound of `max_inflight` requests; `field` names the config field in errors.
    pub fn new(field: &'static str, max_inflight: usize) -> InflightLimit {
        let max_inflight = max_inflight.clamp(1, Semaphore::MAX_PERMITS);
        InflightLimit {
            permits: Arc::new(Semaphore::new(max_inflight)),
            field,
            max_inflight,
        }
    }

    /// A permit held for one request, or the `RESOURCE_EXHAUSTED` status to answer.
    pub fn try_acquire(&self) -> Result<OwnedSemaphorePermit, Status> {
        Arc::clone(&self.permits).try_acquire_owned().map_err(|_| {
            let overloaded = NodeError::Overloaded(format!(
                "{} requests in flight, the limit {} = {}; retry later",
                self.max_inflight, self.field, self.max_inflight
            ));
            // Refused before decoding: marked as not applied, whatever the call.
            status(overloaded, true)
        })
    }
}

/// A gRPC service whose calls each hold a permit of an [`InflightLimit`] until answered.
#[derive(Debug, Clone)]
pub struct Bounded<S> {
    inner: S,
    limit: InflightLimit,
}

impl<S> Bounded<S> {
    pub fn new(inner: S, limit: InflightLimit) -> Bounded<S> {
        Bounded { inner, limit }
    }
}

impl<S: NamedService> NamedService for Bounded<S> {
    const NAME: &'static str = S::NAME;
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

impl<S, B> Service<http::Request<B>> for Bounded<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match self.limit.try_acquire() {
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
            Ok(permit) => {
                let response = self.inner.call(request);
                Box::pin(async move {
                    let response = response.await;
                    drop(permit);
                    response
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_proto::metadata;
    use std::time::Duration;

    use tokio::sync::watch;

    /// A service that answers once `release` turns true.
    #[derive(Clone)]
    struct Held {
        release: watch::Receiver<bool>,
    }

    impl Service<http::Request<()>> for Held {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = ResponseFuture;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: http::Request<()>) -> Self::Future {
            let mut release = self.release.clone();
            Box::pin(async move {
                // A dropped sender releases too.
                let _ = release.wait_for(|released| *released).await;
                Ok(http::Response::new(tonic::body::Body::empty()))
            })
        }
    }

    fn grpc_status(response: &http::Response<tonic::body::Body>) -> Option<String> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    }

    /// Beyond the limit a call is answered at once with RESOURCE_EXHAUSTED naming the
    /// limit and marked not applied; an answered call frees its permit.
    #[tokio::test]
    async fn refuses_calls_beyond_the_limit() {
        let (release, released) = watch::channel(false);
        let limit = InflightLimit::new("max_inflight_requests", 2);
        let mut service = Bounded::new(Held { release: released }, limit.clone());
        let first = tokio::spawn(service.call(http::Request::new(())));
        let second = tokio::spawn(service.call(http::Request::new(())));
        let refused = tokio::time::timeout(Duration::from_secs(10), service.call(http::Request::new(())))
            .await
            .expect("a call beyond the limit is answered at once, not held")
            .expect("infallible");
        assert_eq!(grpc_status(&refused).as_deref(), Some("8"), "RESOURCE_EXHAUSTED");
        let status = Status::from_header_map(refused.headers()).expect("a status");
        assert!(
            status.message().contains("max_inflight_requests = 2"),
            "{}",
            status.message()
        );
        assert!(metadata::is_rejected(&status));

        assert_eq!(limit.permits.available_permits(), 0);

        release.send_replace(true);
        for held in [first, second] {
            let answered = held.await.expect("joined").expect("infallible");
            assert_eq!(grpc_status(&answered), None, "served");
        }
        assert_eq!(
            limit.permits.available_permits(),
            2,
            "answered calls free their permits"
        );
        let answered = service.call(http::Request::new(())).await.expect("infallible");
        assert_eq!(grpc_status(&answered), None, "served after permits were released");
    }
}
