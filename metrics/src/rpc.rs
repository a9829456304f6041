//! Requests, response codes and latency per method of a process's gRPC services.
//!
//! [`MeasureLayer`] goes on a whole tonic server (`Server::builder().layer(..)`) and counts
//! each call by the method its path names, from its arrival (before any other layer or
//! service, so refusals count too) until the response's headers: for a unary call the
//! whole handling, for a stream the time to its first message. The code is the
//! `grpc-status` of the response's headers (a refusal, or any unary error); a success, or a
//! stream that fails after it started, is `OK`. Per call: a scan of the method paths, an
//! `Arc` clone and three relaxed atomic additions — no lock, no allocation. Paths that name
//! no method given at construction (health, reflection) are not counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::{http, Service};

use crate::histogram::Histogram;
use crate::text::{Exposition, Kind};

/// gRPC status codes by number, as the `code` label spells them.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const UNKNOWN_CODE: usize = 2;
/// The metadata ringkv marks a failure with when the write may or may not have applied
/// (`ringkv_proto::metadata`; this crate depends on nothing internal).
const OUTCOME_UNKNOWN_HEADER: &str = "x-ringkv-outcome-unknown";

/// One method's counters.
#[derive(Debug)]
struct Method {
    /// The full service name, `ringkv.v1.ShardKv`.
    service: String,
    name: String,
    /// `/<package>.<Service>/<Method>`, the request path that names it.
    path: String,
    responses: [AtomicU64; CODE_NAMES.len()],
    /// Failures marked `x-ringkv-outcome-unknown` (the write may or may not have applied).
    outcome_unknown: AtomicU64,
    latency: Histogram,
}

/// The metrics of a process's gRPC services: per method, responses by code and a latency
/// histogram. The methods are fixed at construction (from the services' descriptors), so
/// the series are bounded: methods × codes that occurred.
#[derive(Debug)]
pub struct RpcMetrics {
    methods: Vec<Method>,
}

impl RpcMetrics {
    /// Metrics of these services (full name, method names).
    pub fn new(services: impl IntoIterator<Item = (String, Vec<String>)>) -> Arc<RpcMetrics> {
        let methods = services
            .into_iter()
            .flat_map(|(service, names)| {
                names.into_iter().map(move |name| Method {
                    path: format!("/{service}/{name}"),
                    service: service.clone(),
                    name,
                    responses: Default::default(),
                    outcome_unknown: AtomicU64::new(0),
                    latency: Histogram::default(),
                })
            })
            .collect();
        Arc::new(RpcMetrics { methods })
    }

    fn method_index(&self, path: &str) -> Option<usize> {
        self.methods.iter().position(|method| method.path == path)
    }

    fn record(&self, method: usize, answer: Answer, started: Instant) {
        let Some(method) = self.methods.get(method) else {
            return;
        };
        method.responses[answer.code.min(CODE_NAMES.len() - 1)].fetch_add(1, Ordering::Relaxed);
        if answer.outcome_unknown {
            method.outcome_unknown.fetch_add(1, Ordering::Relaxed);
        }
        method.latency.observe(started.elapsed());
    }

    /// The counter of `service`'s `method` (its full and short names), for calls that are
    /// not gRPC requests of their own — frames of a pipeline stream, each answered as its
    /// unary call would be; None for a method not given at construction.
    pub fn method(self: &Arc<Self>, service: &str, method: &str) -> Option<CallCounter> {
        let index = self
            .methods
            .iter()
            .position(|candidate| candidate.service == service && candidate.name == method)?;
        Some(CallCounter {
            metrics: Arc::clone(self),
            index,
        })
    }

    /// What calls of `service`'s `method` were answered so far.
    pub fn counts(&self, service: &str, method: &str) -> MethodCounts {
        let mut counts = MethodCounts::default();
        for found in self
            .methods
            .iter()
            .filter(|candidate| candidate.service == service && candidate.name == method)
        {
            counts.ok += found.responses[0].load(Ordering::Relaxed);
            counts.failed += found.responses[1..]
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .sum::<u64>();
            counts.outcome_unknown += found.outcome_unknown.load(Ordering::Relaxed);
        }
        counts
    }

    /// Calls of `method` (its name, in any service) answered with `code` (its name, `OK`).
    pub fn responses(&self, method: &str, code: &str) -> u64 {
        let Some(code) = CODE_NAMES.iter().position(|name| *name == code) else {
            return 0;
        };
        self.methods
            .iter()
            .filter(|candidate| candidate.name == method)
            .map(|method| method.responses[code].load(Ordering::Relaxed))
            .sum()
    }

    /// Writes `ringkv_grpc_requests_total{service,method,code}` (codes that occurred) and
    /// `ringkv_grpc_request_duration_seconds{service,method}` (methods called at least once).
    pub fn write(&self, exposition: &mut Exposition) {
        let mut requests = exposition.family(
            "ringkv_grpc_requests_total",
            Kind::Counter,
            "gRPC requests served, by service, method and response code.",
        );
        for method in &self.methods {
            for (code, count) in CODE_NAMES.iter().zip(&method.responses) {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let labels = [
                        ("service", method.service.as_str()),
                        ("method", method.name.as_str()),
                        ("code", code),
                    ];
                    requests.sample(&labels, count as f64);
                }
            }
        }
        let mut latency = exposition.family(
            "ringkv_grpc_request_duration_seconds",
            Kind::Histogram,
            "Time from a gRPC request's arrival to its response headers (a unary call's whole handling).",
        );
        for method in &self.methods {
            let snapshot = method.latency.snapshot();
            if snapshot.count() > 0 {
                let labels = [
                    ("service", method.service.as_str()),
                    ("method", method.name.as_str()),
                ];
                latency.histogram(&labels, &snapshot);
            }
        }
    }
}

/// How one method's calls were answered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MethodCounts {
    pub ok: u64,
    /// Any other code, outcome-unknown failures included.
    pub failed: u64,
    /// Failures marked `x-ringkv-outcome-unknown`.
    pub outcome_unknown: u64,
}

/// How a response answered: its code, and whether it is marked outcome-unknown.
#[derive(Debug, Clone, Copy)]
struct Answer {
    code: usize,
    outcome_unknown: bool,
}

/// Counts the calls of one method that arrive other than as gRPC requests (see
/// [`RpcMetrics::method`]): the same series as the method's own requests.
#[derive(Debug, Clone)]
pub struct CallCounter {
    metrics: Arc<RpcMetrics>,
    index: usize,
}

impl CallCounter {
    /// One call that arrived at `started`, answered with gRPC `code` (0: OK; an unknown
    /// code counts as UNKNOWN), marked outcome-unknown or not.
    pub fn observe(&self, code: i32, outcome_unknown: bool, started: Instant) {
        let code = usize::try_from(code)
            .ok()
            .filter(|code| *code < CODE_NAMES.len())
            .unwrap_or(UNKNOWN_CODE);
        self.metrics.record(
            self.index,
            Answer {
                code,
                outcome_unknown,
            },
            started,
        );
    }
}

/// The tower layer that counts every call of a server in an [`RpcMetrics`].
#[derive(Debug, Clone)]
pub struct MeasureLayer {
    metrics: Arc<RpcMetrics>,
}

impl MeasureLayer {
    pub fn new(metrics: Arc<RpcMetrics>) -> MeasureLayer {
        MeasureLayer { metrics }
    }
}

impl<S> tower_layer::Layer<S> for MeasureLayer {
    type Service = Measured<S>;

    fn layer(&self, inner: S) -> Measured<S> {
        Measured {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// A service whose calls are counted in an [`RpcMetrics`].
#[derive(Debug, Clone)]
pub struct Measured<S> {
    inner: S,
    metrics: Arc<RpcMetrics>,
}

impl<S, B, R> Service<http::Request<B>> for Measured<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = MeasuredCall<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = self.metrics.method_index(request.uri().path());
        MeasuredCall {
            call: self.inner.call(request),
            counted: method.map(|method| (Arc::clone(&self.metrics), method, Instant::now())),
        }
    }
}

pin_project_lite::pin_project! {
    /// A call in flight; counted when its response (or error) is ready.
    pub struct MeasuredCall<F> {
        #[pin]
        call: F,
        // The metrics, the method's index and when the call arrived; `None` for a path
        // that names no method, or once counted.
        counted: Option<(Arc<RpcMetrics>, usize, Instant)>,
    }
}

impl<F, R, E> Future for MeasuredCall<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.call.poll(cx));
        if let Some((metrics, method, started)) = this.counted.take() {
            let answer = match &output {
                Ok(response) => Answer {
                    code: response_code(response),
                    outcome_unknown: response.headers().contains_key(OUTCOME_UNKNOWN_HEADER),
                },
                Err(_) => Answer {
                    code: UNKNOWN_CODE,
                    outcome_unknown: false,
                },
            };
            metrics.record(method, answer, started);
        }
        Poll::Ready(output)
    }
}

/// The `grpc-status` of a response's headers; none (the status follows in the trailers) is
/// `OK`, an unreadable one `UNKNOWN`.
fn response_code<R>(response: &http::Response<R>) -> usize {
    match response.headers().get("grpc-status") {
        None => 0,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|code| code.parse::<usize>().ok())
            .filter(|code| *code < CODE_NAMES.len())
            .unwrap_or(UNKNOWN_CODE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// Answers `grpc-status: 5` for the path `/s.S/Missing`, 14 marked outcome-unknown for
    /// `/s.S/Lost`, OK otherwise.
    #[derive(Clone)]
    struct Answering;

    impl Service<http::Request<()>> for Answering {
        type Response = http::Response<()>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<http::Response<()>, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            let mut response = http::Response::new(());
            if request.uri().path().ends_with("/Missing") {
                response
                    .headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static("5"));
            }
            if request.uri().path().ends_with("/Lost") {
                let headers = response.headers_mut();
                headers.insert("grpc-status", http::HeaderValue::from_static("14"));
                headers.insert(OUTCOME_UNKNOWN_HEADER, http::HeaderValue::from_static("1"));
            }
            std::future::ready(Ok(response))
        }
    }

    fn request(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).expect("a request")
    }

    /// Calls are counted per method and code; other paths are not counted; the exposition
    /// names them and has latency buckets for the methods called.
    #[tokio::test]
    async fn counts_calls_by_method_and_code() {
        let methods = ["Get", "Missing", "Lost", "Idle"].map(String::from).to_vec();
        let metrics = RpcMetrics::new([("s.S".to_string(), methods)]);
        let layer = MeasureLayer::new(Arc::clone(&metrics));
        let mut service = tower_layer::Layer::layer(&layer, Answering);
        for path in [
            "/s.S/Get",
            "/s.S/Get",
            "/s.S/Missing",
            "/s.S/Lost",
            "/s.S/Other",
            "/t.T/Get",
        ] {
            service.call(request(path)).await.expect("infallible");
        }
        assert_eq!(metrics.responses("Get", "OK"), 2);
        assert_eq!(metrics.responses("Missing", "NOT_FOUND"), 1);
        assert_eq!(metrics.responses("Missing", "OK"), 0);
        let lost = metrics.counts("s.S", "Lost");
        assert_eq!((lost.ok, lost.failed, lost.outcome_unknown), (0, 1, 1));
        assert_eq!(metrics.counts("s.S", "Get").ok, 2);
        let mut exposition = Exposition::new();
        metrics.write(&mut exposition);
        let text = exposition.finish();
        crate::check_exposition(&text).expect("valid");
        assert!(text.contains("ringkv_grpc_requests_total{service=\"s.S\",method=\"Get\",code=\"OK\"} 2\n"));
        assert!(text.contains(
            "ringkv_grpc_requests_total{service=\"s.S\",method=\"Missing\",code=\"NOT_FOUND\"} 1\n"
        ));
        assert!(
            text.contains("ringkv_grpc_request_duration_seconds_count{service=\"s.S\",method=\"Get\"} 2\n")
        );
        assert!(!text.contains("Idle"), "a method never called writes no series");
    }
}
