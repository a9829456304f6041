//! The standard gRPC health service (`grpc.health.v1.Health`) of a node, for load balancers,
//! orchestrators and `grpcurl` (server reflection is `ringkv_metrics::reflection`).
//!
//! Health answers for two names:
//! - `""` (the process): `SERVING` from the moment the node serves gRPC — it can then be
//!   initialised, join a cluster or serve its own; `NOT_SERVING` once shutdown begins.
//! - `ringkv.v1.ShardKv`: `SERVING` once the node belongs to an initialised cluster (it has
//!   applied the cluster configuration), `NOT_SERVING` before that and from shutdown on.
//!
//! A node whose storage fails stops at once (fail-stop, exit code 74): its health check then
//! cannot connect, which health checkers read as not serving. With mutual TLS the health
//! and reflection services, like every other, need a certificate of the cluster's CA (any
//! role): the handshake requires one before any service runs.

use ringkv_proto::v1::shard_kv_server::SERVICE_NAME as SHARD_KV;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tracing::warn;

use crate::node::Node;

/// The node's health reporter and the task that follows its cluster membership.
pub struct Health {
    reporter: HealthReporter,
    cancel: CancellationToken,
    watcher: JoinHandle<()>,
}

/// The gRPC health service to serve next to the node's own.
pub type HealthService = tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>;

impl Health {
    /// Reports the process `SERVING` and `ringkv.v1.ShardKv` as the cluster configuration
    /// says, from now until [`Health::shutdown`].
    pub async fn start(node: &Node) -> (Health, HealthService) {
        let reporter = HealthReporter::new();
        let service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
        );
        reporter.set_service_status("", ServingStatus::Serving).await;
        reporter
            .set_service_status(SHARD_KV, ServingStatus::NotServing)
            .await;
        let cancel = CancellationToken::new();
        let watcher = tokio::spawn(follow_cluster(node.clone(), reporter.clone(), cancel.clone()));
        (
            Health {
                reporter,
                cancel,
                watcher,
            },
            service,
        )
    }

    /// Reports everything `NOT_SERVING` (callers polling health stop sending here) and
    /// stops following the cluster.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(err) = self.watcher.await {
            warn!(%err, "health watcher task failed");
        }
        self.reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        self.reporter
            .set_service_status(SHARD_KV, ServingStatus::NotServing)
            .await;
    }
}

/// `ringkv.v1.ShardKv` follows whether the node holds a cluster configuration.
async fn follow_cluster(node: Node, reporter: HealthReporter, cancel: CancellationToken) {
    let mut cluster = node.watch_cluster();
    loop {
        let initialised = cluster.borrow_and_update().is_some();
        let status = if initialised {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status(SHARD_KV, status).await;
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = cluster.changed() => if changed.is_err() { return },
        }
    }
}
