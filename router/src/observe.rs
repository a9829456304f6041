//! The router's metrics (`--metrics-addr`) and health (server reflection is
//! `ringkv_metrics::reflection`).
//!
//! Metrics are rendered at every scrape: requests by service, method and code with latency
//! histograms (counted as they arrive by `ringkv_metrics::MeasureLayer` around the whole
//! server: atomics only), transaction commits by outcome (from `Txn.Commit`'s answers:
//! committed, aborted — any refusal or failure that is not outcome-unknown — and unknown,
//! marked `x-ringkv-outcome-unknown`), and the oracle client's requests and calls.
//!
//! Health (`grpc.health.v1`): `""` is `SERVING` from the moment the router serves and
//! `NOT_SERVING` once its shutdown begins. With mutual TLS the health and reflection
//! services need a certificate of the cluster's CA, like every other.

use std::sync::Arc;

use ringkv_metrics::{Exposition, Kind, RpcMetrics};
use ringkv_proto::v1;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::tso::TsoClient;

/// Per-method metrics of the router's gRPC services (`Kv`, `Txn`, `Tso`, `Admin`, `Lease`).
pub fn rpc_metrics() -> Arc<RpcMetrics> {
    let services = [
        v1::kv_server::SERVICE_NAME,
        v1::txn_server::SERVICE_NAME,
        v1::tso_server::SERVICE_NAME,
        v1::admin_server::SERVICE_NAME,
        v1::lease_server::SERVICE_NAME,
    ];
    RpcMetrics::new(services.map(|name| (name.to_string(), ringkv_proto::descriptor::service_methods(name))))
}

/// What a scrape of the router reads.
pub struct RouterMetrics {
    pub rpc: Arc<RpcMetrics>,
    pub tso: Arc<TsoClient>,
}

impl RouterMetrics {
    /// The exposition text of this moment.
    pub fn render(&self) -> String {
        let mut exposition = Exposition::new();
        self.rpc.write(&mut exposition);
        let commits = self.rpc.counts(v1::txn_server::SERVICE_NAME, "Commit");
        exposition
            .family(
                "ringkv_txn_commits_total",
                Kind::Counter,
                "Transaction commits answered by this router, by outcome (aborted: refused or failed, not committed).",
            )
            .sample(&[("outcome", "committed")], commits.ok as f64)
            .sample(&[("outcome", "aborted")], (commits.failed - commits.outcome_unknown) as f64)
            .sample(&[("outcome", "unknown")], commits.outcome_unknown as f64);
        let tso = self.tso.counters();
        exposition
            .family(
                "ringkv_tso_requests_total",
                Kind::Counter,
                "Timestamp requests this router answered.",
            )
            .sample(&[], tso.requests as f64);
        exposition
            .family(
                "ringkv_tso_calls_total",
                Kind::Counter,
                "Calls to the system leader's oracle that answered (each serves many requests).",
            )
            .sample(&[], tso.calls as f64);
        exposition.finish()
    }
}

/// The router's health reporter.
#[derive(Debug, Clone)]
pub struct Health {
    reporter: HealthReporter,
}

/// The gRPC health service to serve next to the router's own.
pub type HealthService = tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>;

impl Health {
    /// Reports the router `SERVING` until [`Health::stop_serving`].
    pub async fn start() -> (Health, HealthService) {
        let reporter = HealthReporter::new();
        let service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
        );
        reporter.set_service_status("", ServingStatus::Serving).await;
        (Health { reporter }, service)
    }

    /// Reports `NOT_SERVING` (at the start of shutdown).
    pub async fn stop_serving(&self) {
        self.reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }
}
