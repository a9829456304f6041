//! Talking to storage nodes (and routers) directly: `NodeStatus`, the standard gRPC health
//! check ([`health`]) and cluster bootstrap.
//!
//! [`init_cluster`] asks every node for its identity (`Admin.NodeStatus`), then sends
//! `Admin.InitCluster` with all of them to the first node. Init is idempotent on the
//! node side, so running it against an existing cluster answers
//! `already_initialized = true`.

use std::collections::HashSet;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use ringkv_proto::v1 as proto;
use ringkv_proto::v1::admin_client::AdminClient;

use crate::endpoint::{authority_of, lazy_channel, normalize_endpoint};
use crate::error::Failure;
use crate::retry::backoff_for_round;
use crate::{ClientConfig, Error};

/// Most NodeStatus calls in flight at once during init.
pub const MAX_STATUS_FANOUT: usize = 16;
/// Attempts at sending InitCluster (safe: init is idempotent).
pub const INIT_ATTEMPTS: u32 = 3;
/// Most members accepted in one init request.
pub const MAX_INIT_NODES: usize = 1024;

/// Asks one node (`host:port`) for its identity, ring and replicas; one attempt bounded
/// by `config.request_timeout`.
pub async fn node_status(endpoint: &str, config: &ClientConfig) -> Result<proto::NodeStatusResponse, Error> {
    node_status_asking(endpoint, proto::NodeStatusRequest::default(), config).await
}

/// [`node_status`] with each shard replica's key count (`ReplicaInfo.key_count`): the
/// node walks the keys of every replica it holds (bounded per replica), so this costs more
/// than a plain status, and needs admin when permissions are on. A router answers without
/// counts (it holds no keys).
pub async fn node_status_with_key_counts(
    endpoint: &str,
    config: &ClientConfig,
) -> Result<proto::NodeStatusResponse, Error> {
    let request = proto::NodeStatusRequest { count_keys: true };
    node_status_asking(endpoint, request, config).await
}

async fn node_status_asking(
    endpoint: &str,
    request: proto::NodeStatusRequest,
    config: &ClientConfig,
) -> Result<proto::NodeStatusResponse, Error> {
    let channel = lazy_channel(endpoint, config)?;
    let mut request = tonic::Request::new(request);
    request.set_timeout(config.request_timeout);
    let mut admin = AdminClient::new(channel).max_decoding_message_size(config.max_message_bytes);
    let call = admin.node_status(request);
    match tokio::time::timeout(config.request_timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(Error::from(status)),
        Err(_elapsed) => Err(Error::DeadlineExceeded(format!(
            "node {endpoint} did not answer NodeStatus within {:?}",
            config.request_timeout
        ))),
    }
}

/// What the standard gRPC health service (`grpc.health.v1.Health`) of a node or router said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Serving,
    NotServing,
    /// UNKNOWN, or a status this client does not know.
    Unknown,
}

/// Asks `endpoint`'s health service about `service` (`""`: the whole process); one attempt
/// bounded by `config.request_timeout`.
pub async fn health(endpoint: &str, service: &str, config: &ClientConfig) -> Result<Health, Error> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let channel = lazy_channel(endpoint, config)?;
    let mut request = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
        service: service.to_string(),
    });
    request.set_timeout(config.request_timeout);
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    match tokio::time::timeout(config.request_timeout, client.check(request)).await {
        Ok(Ok(response)) => Ok(match response.into_inner().status() {
            ServingStatus::Serving => Health::Serving,
            ServingStatus::NotServing => Health::NotServing,
            ServingStatus::Unknown | ServingStatus::ServiceUnknown => Health::Unknown,
        }),
        Ok(Err(status)) => Err(Error::from(status)),
        Err(_elapsed) => Err(Error::DeadlineExceeded(format!(
            "{endpoint} did not answer a health check within {:?}",
            config.request_timeout
        ))),
    }
}

/// Bootstraps a cluster from `node_endpoints` with the default configuration.
///
/// See [`init_cluster_with`].
pub async fn init_cluster(
    node_endpoints: &[String],
    shards: u32,
    replication_factor: u32,
) -> Result<proto::InitClusterResponse, Error> {
    init_cluster_with(
        node_endpoints,
        shards,
        replication_factor,
        &ClientConfig::default(),
    )
    .await
}

/// Bootstraps a cluster: learns each node's id and advertised address with
/// `Admin.NodeStatus`, then sends `Admin.InitCluster` to the first node.
///
/// Idempotent: against an existing cluster with the same parameters the answer has
/// `already_initialized = true`.
pub async fn init_cluster_with(
    node_endpoints: &[String],
    shards: u32,
    replication_factor: u32,
    config: &ClientConfig,
) -> Result<proto::InitClusterResponse, Error> {
    validate_init_params(node_endpoints.len(), shards, replication_factor)?;
    let statuses: Vec<(String, proto::NodeStatusResponse)> = stream::iter(node_endpoints)
        .map(|endpoint| async move {
            let status = node_status(endpoint, config)
                .await
                .map_err(|err| annotate(err, &format!("node {endpoint} did not answer NodeStatus")))?;
            Ok::<_, Error>((endpoint.clone(), status))
        })
        .buffered(MAX_STATUS_FANOUT)
        .try_collect()
        .await?;
    let request = plan_init(&statuses, shards, replication_factor)?;
    let first = node_endpoints
        .first()
        .ok_or_else(|| Error::InvalidArgument("no node endpoints given".into()))?;
    send_init(first, request, config).await
}

/// Checks the init parameters before any network call.
pub fn validate_init_params(node_count: usize, shards: u32, replication_factor: u32) -> Result<(), Error> {
    if node_count == 0 {
        return Err(Error::InvalidArgument("no node endpoints given".into()));
    }
    if node_count > MAX_INIT_NODES {
        return Err(Error::InvalidArgument(format!(
            "at most {MAX_INIT_NODES} nodes can be initialised at once, got {node_count}"
        )));
    }
    if !shards.is_power_of_two() {
        return Err(Error::InvalidArgument(format!(
            "shards must be a power of two, got {shards}"
        )));
    }
    if replication_factor == 0 {
        return Err(Error::InvalidArgument(
            "replication factor must be at least 1".into(),
        ));
    }
    if usize::try_from(replication_factor).map_or(true, |rf| rf > node_count) {
        return Err(Error::InvalidArgument(format!(
            "replication factor {replication_factor} exceeds the {node_count} nodes given"
        )));
    }
    Ok(())
}

/// Builds the InitCluster request from the nodes' self-descriptions.
///
/// A node that advertises no address is recorded with the address it was reached at.
/// Two endpoints answering with the same node id are rejected (the same node listed
/// twice, or two nodes started with the same `--node-id`).
pub fn plan_init(
    statuses: &[(String, proto::NodeStatusResponse)],
    shards: u32,
    replication_factor: u32,
) -> Result<proto::InitClusterRequest, Error> {
    validate_init_params(statuses.len(), shards, replication_factor)?;
    let mut seen_ids = HashSet::new();
    let mut seen_addrs = HashSet::new();
    let mut nodes = Vec::with_capacity(statuses.len());
    for (endpoint, status) in statuses {
        if status.process_role == "router" {
            return Err(Error::InvalidArgument(format!(
                "{endpoint} is a router, not a storage node: give the nodes' addresses"
            )));
        }
        if status.node_id == 0 {
            return Err(Error::InvalidResponse(format!(
                "node {endpoint} reports node id 0"
            )));
        }
        if !seen_ids.insert(status.node_id) {
            return Err(Error::InvalidArgument(format!(
                "node id {} is reported by more than one endpoint (last: {endpoint})",
                status.node_id
            )));
        }
        let addr = if status.addr.trim().is_empty() {
            authority_of(&normalize_endpoint(endpoint)?).to_string()
        } else {
            status.addr.trim().to_string()
        };
        if !seen_addrs.insert(addr.clone()) {
            return Err(Error::InvalidArgument(format!(
                "address {addr} is advertised by more than one node"
            )));
        }
        nodes.push(proto::NodeAddress {
            node_id: status.node_id,
            addr,
        });
    }
    Ok(proto::InitClusterRequest {
        nodes,
        shards,
        replication_factor,
    })
}

/// Sends InitCluster to one node, retrying a bounded number of times on transient
/// errors (safe: init is idempotent).
async fn send_init(
    endpoint: &str,
    request: proto::InitClusterRequest,
    config: &ClientConfig,
) -> Result<proto::InitClusterResponse, Error> {
    let channel = lazy_channel(endpoint, config)?;
    let mut admin = AdminClient::new(channel);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut call_request = tonic::Request::new(request.clone());
        call_request.set_timeout(config.request_timeout);
        let call = admin.init_cluster(call_request);
        let error = match tokio::time::timeout(config.request_timeout, call).await {
            Ok(Ok(response)) => return Ok(response.into_inner()),
            Ok(Err(status)) => Failure::from_status(&status).error,
            Err(_elapsed) => Error::DeadlineExceeded(format!(
                "InitCluster did not complete within {:?}",
                config.request_timeout
            )),
        };
        let transient = matches!(error, Error::Unavailable(_) | Error::Transport(_));
        if !transient || attempt >= INIT_ATTEMPTS {
            return Err(annotate(error, &format!("InitCluster on {endpoint} failed")));
        }
        let backoff = backoff_for_round(attempt, Duration::from_millis(200), Duration::from_secs(2));
        tokio::time::sleep(backoff).await;
    }
}

/// Prefixes an error's message with context, keeping its variant (and exit code).
fn annotate(error: Error, context: &str) -> Error {
    match error {
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("{context}: {m}")),
        Error::NotFound(m) => Error::NotFound(format!("{context}: {m}")),
        Error::Unavailable(m) => Error::Unavailable(format!("{context}: {m}")),
        Error::DeadlineExceeded(m) => Error::DeadlineExceeded(format!("{context}: {m}")),
        Error::OutcomeUnknown(m) => Error::OutcomeUnknown(format!("{context}: {m}")),
        Error::RequestIdReused(m) => Error::RequestIdReused(format!("{context}: {m}")),
        Error::ResourceExhausted(m) => Error::ResourceExhausted(format!("{context}: {m}")),
        Error::OutOfRange(m) => Error::OutOfRange(format!("{context}: {m}")),
        Error::FailedPrecondition(m) => Error::FailedPrecondition(format!("{context}: {m}")),
        Error::Transport(m) => Error::Transport(format!("{context}: {m}")),
        Error::InvalidResponse(m) => Error::InvalidResponse(format!("{context}: {m}")),
        Error::TxnAborted {
            reason,
            retryable,
            message,
        } => Error::TxnAborted {
            reason,
            retryable,
            message: format!("{context}: {message}"),
        },
        Error::Other { code, message } => Error::Other {
            code,
            message: format!("{context}: {message}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(node_id: u64, addr: &str) -> proto::NodeStatusResponse {
        proto::NodeStatusResponse {
            node_id,
            addr: addr.to_string(),
            ..Default::default()
        }
    }

    /// A router's address among the nodes is refused, naming it (a router answers
    /// NodeStatus for itself since issue 16).
    #[test]
    fn plan_refuses_a_router() {
        let router = proto::NodeStatusResponse {
            process_role: "router".to_string(),
            ..status(0, "127.0.0.1:7000")
        };
        let statuses = vec![
            ("127.0.0.1:7001".to_string(), status(1, "127.0.0.1:7001")),
            ("127.0.0.1:7000".to_string(), router),
        ];
        let err = plan_init(&statuses, 16, 2).expect_err("a router is not a node");
        assert!(err.to_string().contains("127.0.0.1:7000 is a router"), "{err}");
    }

    /// The plan lists every node with its advertised address, in the given order.
    #[test]
    fn plan_uses_advertised_addresses() {
        let statuses = vec![
            ("127.0.0.1:7001".to_string(), status(1, "10.0.0.1:7001")),
            ("127.0.0.1:7002".to_string(), status(2, "10.0.0.2:7002")),
        ];
        let plan = plan_init(&statuses, 16, 2).expect("valid plan");
        assert_eq!(plan.shards, 16);
        assert_eq!(plan.replication_factor, 2);
        assert_eq!(
            plan.nodes,
            vec![
                proto::NodeAddress {
                    node_id: 1,
                    addr: "10.0.0.1:7001".into()
                },
                proto::NodeAddress {
                    node_id: 2,
                    addr: "10.0.0.2:7002".into()
                },
            ]
        );
    }

    /// A node without an advertised address is recorded at the address it was reached.
    #[test]
    fn plan_falls_back_to_endpoint() {
        let statuses = vec![("http://127.0.0.1:7001".to_string(), status(1, ""))];
        let plan = plan_init(&statuses, 1, 1).expect("valid plan");
        assert_eq!(plan.nodes[0].addr, "127.0.0.1:7001");
    }

    /// The same node id from two endpoints is rejected.
    #[test]
    fn plan_rejects_duplicate_ids() {
        let statuses = vec![
            ("127.0.0.1:7001".to_string(), status(1, "a:1")),
            ("127.0.0.1:7002".to_string(), status(1, "b:1")),
        ];
        assert!(matches!(
            plan_init(&statuses, 16, 1),
            Err(Error::InvalidArgument(_))
        ));
    }

    /// Shards must be a power of two and the replication factor fit the node count.
    #[test]
    fn params_are_validated() {
        assert!(validate_init_params(3, 16, 3).is_ok());
        assert!(validate_init_params(3, 12, 3).is_err());
        assert!(validate_init_params(3, 0, 3).is_err());
        assert!(validate_init_params(3, 16, 0).is_err());
        assert!(validate_init_params(2, 16, 3).is_err());
        assert!(validate_init_params(0, 16, 1).is_err());
    }

    /// Annotating keeps the variant.
    #[test]
    fn annotate_keeps_variant() {
        let error = annotate(Error::Unavailable("down".into()), "node a:1");
        assert!(matches!(error, Error::Unavailable(ref m) if m == "node a:1: down"));
    }
}
