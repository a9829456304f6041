//! Starting and stopping a router: bind the listener (port 0 supported), start the
//! topology refresher and the timestamp client, serve `Kv`, `Admin`, `Tso`, `Txn` and
//! `Lease` with tonic, and shut down gracefully.
//!
//! Shutdown order: stop accepting (which also ends every `Lease.LeaseKeepAlive` stream,
//! cleanly, so they do not hold the drain up) and drain in-flight requests (bounded by
//! `shutdown_timeout_ms`), join the streams' tasks, then stop the timestamp client and
//! join the refresher.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1::admin_server::AdminServer;
use ringkv_proto::v1::auth_server::AuthServer;
use ringkv_proto::v1::kv_server::KvServer;
use ringkv_proto::v1::lease_server::LeaseServer;
use ringkv_proto::v1::tso_server::TsoServer;
use ringkv_proto::v1::txn_server::TxnServer;
use ringkv_tls::rustls::{ClientConfig, ServerConfig};
use ringkv_tls::{ReloadingIdentity, TlsIncoming};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tracing::{info, warn};

use crate::admin_service::AdminService;
use crate::auth::UserScope;
use crate::auth_service::LoginService;
use crate::coalesce::Coalesced;
use crate::config::RouterConfig;
use crate::connections::GrpcNodes;
use crate::context::RouterContext;
use crate::error::{ServeError, StartError};
use crate::gossip::RouterGossip;
use crate::kv_service::{KvService, PipelineServing};
use crate::lease_service::LeaseService;
use crate::node_api::NodeApi;
use crate::observe::{Health, RouterMetrics};
use crate::refresher::{RefreshSettings, Refresher};
use crate::secondaries::SecondaryCommits;
use crate::streams::StreamSlots;
use crate::topology::TopologyHandle;
use crate::tso::TsoClient;
use crate::tso_service::TsoService;
use crate::txn_gc::TxnGcTask;
use crate::txn_service::TxnService;

/// How often the router fetches the permission table at most (`auth.rs`): a change made
/// through another router takes effect here within about this long.
const AUTH_REFRESH_INTERVAL: Duration = Duration::from_millis(500);
/// Interval of HTTP/2 keep-alive pings to clients.
const CLIENT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a client keep-alive ping may go unanswered.
const CLIENT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most HTTP/2 streams (requests in flight) one client connection may open at once (tonic
/// sets no limit by default); a client beyond it waits for a stream to close. All
/// connections together are bounded by `max_inflight_requests` and `max_open_streams`.
pub const MAX_CONCURRENT_STREAMS_PER_CONNECTION: u32 = 1024;

/// Entry point: `Router::start(config)`.
pub struct Router;

impl Router {
    /// Validates `config`, binds its listen address and starts serving.
    pub async fn start(config: RouterConfig) -> Result<RouterHandle, StartError> {
        config.validate()?;
        if config.unsafe_skip_write_conflict {
            warn!("NEGATIVE CONTROL: transactions commit without the write-conflict check");
        }
        if config.unsafe_skip_read_validation {
            warn!("NEGATIVE CONTROL: serializable transactions commit without read validation");
        }
        if config.unsafe_resolve_without_primary {
            warn!("NEGATIVE CONTROL: locks met are rolled back without asking their primary's record");
        }
        if config.unsafe_fresh_request_id_per_attempt {
            warn!("NEGATIVE CONTROL: every attempt of a shard write gets a fresh request id");
        }
        if config.unsafe_tso_prefetch > 0 {
            warn!(
                count = config.unsafe_tso_prefetch,
                "NEGATIVE CONTROL: timestamps are handed out from a range this router took ahead"
            );
        }
        if let Some(failpoint) = config.unsafe_failpoint {
            warn!(%failpoint, "TEST FAILPOINT: the router exits when a commit reaches it");
        }
        let tls = load_tls(&config)?;
        let node_tls = tls.as_ref().map(|(_, client)| client.clone());
        let nodes = Arc::new(GrpcNodes::new(&config, node_tls));
        Self::start_with(config, nodes, tls.map(|(server, _)| server)).await
    }

    /// Starts a router whose node calls go through `nodes`, serving TLS with `tls` (None:
    /// `--insecure`).
    pub(crate) async fn start_with<N: NodeApi>(
        config: RouterConfig,
        nodes: Arc<N>,
        tls: Option<Arc<ServerConfig>>,
    ) -> Result<RouterHandle, StartError> {
        let bind_error = |source| StartError::Bind {
            addr: config.listen_addr,
            source,
        };
        let listener = TcpListener::bind(config.listen_addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;

        let topology = TopologyHandle::new();
        let refresher = Refresher::spawn(
            Arc::clone(&nodes),
            topology.clone(),
            RefreshSettings {
                seeds: config.seed_nodes.clone(),
                interval: config.refresh_interval(),
                rpc_timeout: config.rpc_timeout(),
                max_fanout: config.max_fanout,
            },
            CancellationToken::new(),
        );

        let tso = Arc::new(TsoClient::spawn_prefetching(
            Arc::clone(&nodes),
            topology.clone(),
            config.rpc_timeout(),
            config.unsafe_tso_prefetch,
        ));
        let rpc_metrics = crate::observe::rpc_metrics();
        let metrics = match config.metrics_addr {
            None => None,
            Some(addr) => {
                let scraped = RouterMetrics {
                    rpc: Arc::clone(&rpc_metrics),
                    tso: Arc::clone(&tso),
                };
                let render = Arc::new(move || scraped.render());
                let server = ringkv_metrics::MetricsServer::start(addr, render)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?;
                Some(server)
            }
        };
        let (health, health_service) = Health::start().await;
        let served = [
            ringkv_proto::v1::kv_server::SERVICE_NAME,
            ringkv_proto::v1::admin_server::SERVICE_NAME,
            ringkv_proto::v1::tso_server::SERVICE_NAME,
            ringkv_proto::v1::txn_server::SERVICE_NAME,
            ringkv_proto::v1::auth_server::SERVICE_NAME,
            ringkv_proto::v1::lease_server::SERVICE_NAME,
        ];
        let reflection =
            ringkv_metrics::reflection(&[ringkv_proto::descriptor::FILE_DESCRIPTOR_SET], &served).map_err(
                |err| crate::config::ConfigError::Invalid {
                    field: "server reflection",
                    reason: err.to_string(),
                },
            )?;
        let ctx = Arc::new(RouterContext::new(&config, nodes, topology.clone()));
        let secondaries = ctx.secondaries.clone();
        let streams = ctx.streams.clone();
        let txn_gc = (config.txn_gc_interval_ms > 0).then(|| {
            TxnGcTask::spawn(
                Arc::clone(&ctx),
                Arc::clone(&tso),
                Duration::from_millis(config.txn_gc_interval_ms),
                config.txn_gc_age(),
            )
        });
        let gossip = match RouterGossip::start(
            local_addr,
            config.seed_nodes.clone(),
            config.gossip_interval(),
            topology,
            Arc::clone(&ctx.gossip),
            config.gossip_key.as_deref(),
        )
        .await
        {
            Ok(gossip) => Some(gossip),
            Err(err) => {
                warn!(%err, "gossip did not start; the router follows the cluster by polling only");
                None
            }
        };
        let stop_serving = CancellationToken::new();
        let kv_pipeline = PipelineServing::new(stop_serving.clone(), &rpc_metrics, config.max_response_bytes);
        let kv = KvServer::new(KvService::new(Arc::clone(&ctx), Arc::clone(&tso)).with_pipeline(kv_pipeline))
            .max_decoding_message_size(config.max_request_bytes)
            .max_encoding_message_size(config.max_response_bytes);
        let tso_service = TsoServer::new(TsoService::new(Arc::clone(&ctx), Arc::clone(&tso)))
            .max_decoding_message_size(config.max_request_bytes)
            .max_encoding_message_size(config.max_response_bytes);
        let txn_service = TxnServer::new(TxnService::new(
            Arc::clone(&ctx),
            Arc::clone(&tso),
            config.txn_gc_age(),
        ))
        .max_decoding_message_size(config.max_request_bytes)
        .max_encoding_message_size(config.max_response_bytes);
        let metrics_addr = metrics.as_ref().map(ringkv_metrics::MetricsServer::local_addr);
        let admin = AdminServer::new(AdminService::new(Arc::clone(&ctx)).reporting(local_addr, metrics_addr))
            .max_decoding_message_size(config.max_request_bytes)
            .max_encoding_message_size(config.max_response_bytes);

        let view = ctx.auth.clone();
        let login = AuthServer::new(LoginService::new(Arc::clone(&ctx)))
            .max_decoding_message_size(config.max_request_bytes);
        let stop_auth = CancellationToken::new();
        let auth_refresh = ctx.auth.spawn_refresh(
            Arc::clone(&ctx.nodes),
            ctx.topology.clone(),
            config.refresh_interval().min(AUTH_REFRESH_INTERVAL),
            config.rpc_timeout(),
            stop_auth.clone(),
        );
        let lease_service = LeaseServer::new(LeaseService::new(
            Arc::clone(&ctx),
            Arc::clone(&tso),
            stop_serving.clone(),
        ))
        .max_decoding_message_size(config.max_request_bytes)
        .max_encoding_message_size(config.max_response_bytes);
        if tls.is_none() {
            warn!(
                %local_addr,
                "INSECURE: no TLS (--insecure); anyone who can reach this router reads and \
                 writes every key"
            );
        }
        let routes = Server::builder()
            .http2_keepalive_interval(Some(CLIENT_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(CLIENT_KEEPALIVE_TIMEOUT))
            .layer(ringkv_metrics::MeasureLayer::new(rpc_metrics))
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS_PER_CONNECTION)
            .add_service(UserScope::new(kv, view.clone()))
            .add_service(UserScope::new(admin, view.clone()))
            .add_service(UserScope::new(tso_service, view.clone()))
            .add_service(UserScope::new(txn_service, view.clone()))
            .add_service(UserScope::new(lease_service, view))
            // Logging in needs no user: it is how a caller without one gets one.
            .add_service(login);
        let stop = stop_serving.clone().cancelled_owned();
        // Outside the user scope: health and reflection answer any TLS client, with a
        // certificate of the cluster's CA or (unless `require_client_cert`) without one
        // (`observe.rs`); they show no keys.
        let routes = routes.add_service(health_service).add_service(reflection);
        let server = tokio::spawn(async move {
            match tls {
                // Who acts for which user is `auth.rs`'s; TLS of our own (`ringkv-tls`), so
                // rotated files are served without a restart.
                // Each connection's writes gathered (`coalesce.rs`): about two `writev`s
                // per answer otherwise.
                Some(config) => {
                    let (accepting, connections) = TlsIncoming::start(listener, config);
                    let connections = connections.map(|accepted| accepted.map(Coalesced::new));
                    let served = routes.serve_with_incoming_shutdown(connections, stop).await;
                    accepting.shutdown().await;
                    served
                }
                None => {
                    let incoming = TcpIncoming::from(listener)
                        .with_nodelay(Some(true))
                        .map(|accepted| accepted.map(Coalesced::new));
                    routes.serve_with_incoming_shutdown(incoming, stop).await
                }
            }
        });
        info!(%local_addr, seeds = ?config.seed_nodes, "router listening");

        Ok(RouterHandle {
            local_addr,
            stop_serving,
            server,
            refresher,
            stop_auth,
            auth_refresh,
            tso,
            gossip,
            txn_gc,
            secondaries,
            streams,
            shutdown_timeout: config.shutdown_timeout(),
            health,
            metrics,
        })
    }
}

/// The router's TLS as a server (to clients) and as a client (of nodes).
type RouterTls = (Arc<ServerConfig>, Arc<ClientConfig>);

/// Reads and checks the router's certificate files (role `router`, signed by the CA,
/// valid): the server's TLS (clients' certificates of the CA checked, and required with
/// `require_client_cert`) and the client TLS towards nodes, all re-read when the files
/// change. None: `--insecure`.
fn load_tls(config: &RouterConfig) -> Result<Option<RouterTls>, StartError> {
    let Some(paths) = &config.tls else {
        return Ok(None);
    };
    let files = ringkv_tls::TlsFiles {
        ca: paths.ca.clone(),
        cert: paths.cert.clone(),
        key: paths.key.clone(),
    };
    let material = files.load(&[ringkv_tls::Role::Router])?;
    let identity = ReloadingIdentity::load(files, ringkv_tls::Role::Router)?;
    // Clients without a certificate authenticate with tokens (`auth.rs`); nodes, which
    // serve no such clients, always require certificates.
    let server = match config.require_client_cert {
        true => identity.server_config()?,
        false => identity.server_config_client_cert_optional()?,
    };
    info!(subject = %material.info.subject, serial = %material.info.serial, "serving mutual TLS");
    Ok(Some((server, identity.client_config()?)))
}

/// A running router. Dropping it without [`RouterHandle::shutdown`] leaves its tasks
/// running until the runtime stops.
#[derive(Debug)]
pub struct RouterHandle {
    local_addr: SocketAddr,
    stop_serving: CancellationToken,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    refresher: Refresher,
    stop_auth: CancellationToken,
    auth_refresh: JoinHandle<()>,
    tso: Arc<TsoClient>,
    gossip: Option<RouterGossip>,
    txn_gc: Option<TxnGcTask>,
    secondaries: SecondaryCommits,
    streams: StreamSlots,
    shutdown_timeout: Duration,
    health: Health,
    metrics: Option<ringkv_metrics::MetricsServer>,
}

impl RouterHandle {
    /// The address the router listens on (the real port when started with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving gracefully and joins every task.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.run_until(std::future::ready(())).await
    }

    /// Serves until `signal` resolves (or the server fails), then shuts down gracefully.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), ServeError> {
        let ended_early = tokio::select! {
            result = &mut self.server => Some(result),
            () = signal => None,
        };
        self.health.stop_serving().await;
        self.stop_serving.cancel();
        let served = match ended_early {
            Some(result) => result,
            None => match tokio::time::timeout(self.shutdown_timeout, &mut self.server).await {
                Ok(result) => result,
                Err(_elapsed) => {
                    warn!(
                        shutdown_timeout_ms = self.shutdown_timeout.as_millis() as u64,
                        "graceful shutdown timed out; cutting in-flight requests"
                    );
                    self.server.abort();
                    match (&mut self.server).await {
                        Err(err) if err.is_cancelled() => Ok(Ok(())),
                        other => other,
                    }
                }
            },
        };
        // The server dropped its streams: their tasks end at once.
        self.streams.shutdown(self.shutdown_timeout).await;
        if let Some(txn_gc) = self.txn_gc.take() {
            txn_gc.shutdown().await;
        }
        self.secondaries.shutdown(self.shutdown_timeout).await;
        self.tso.shutdown().await;
        if let Some(metrics) = self.metrics.take() {
            metrics.shutdown().await;
        }
        self.refresher.shutdown().await;
        self.stop_auth.cancel();
        let _ = self.auth_refresh.await;
        if let Some(gossip) = self.gossip.take() {
            gossip.shutdown().await;
        }
        info!(local_addr = %self.local_addr, "router stopped");
        served??;
        Ok(())
    }
}
