//! Starting and stopping a node: open storage, bind, serve the gRPC services, shut down.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use ringkv_proto::v1::admin_server::AdminServer;
use ringkv_proto::v1::auth_server::AuthServer;
use ringkv_proto::v1::raft_server::RaftServer;
use ringkv_proto::v1::shard_kv_server::ShardKvServer;
use ringkv_proto::v1::tso_server::TsoServer;
use ringkv_tls::{ReloadingIdentity, TlsIncoming};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tracing::{error, info, warn};

use crate::config::{ConfigError, NodeConfig};
use crate::error::NodeError;
use crate::expiry_purger::ExpiryPurger;
use crate::gossip_agent::{GossipAgent, LivenessView};
use crate::health::Health;
use crate::keepalive::Hibernator;
use crate::membership::SystemDuties;
use crate::metrics::NodeMetrics;
use crate::node::Node;
use crate::reconcile::Reconciler;
use crate::service::admin::AdminService;
use crate::service::authz::{AuthorizedShardKv, Authorizer};
use crate::service::credentials::PasswordHasher;
use crate::service::inflight::{Bounded, InflightLimit};
use crate::service::login::LoginService;
use crate::service::raft::RaftService;
use crate::service::roles::{RoleCache, RoleGate};
use crate::service::shard::ShardKvService;
use crate::service::tso::TsoService;
use crate::storage::{self, StorageError, TreeRef};
use crate::tso::Oracle;

const CATALOG_TREE: &str = "node";
const LISTEN_ADDR_KEY: &[u8] = b"listen_addr";
/// Streams a peer may cancel before this server accepted them, per connection (h2's guard
/// against "rapid reset" floods; its default is 20). Raft RPCs to a follower whose disk is
/// slow time out every heartbeat interval, and each timeout cancels a stream: at 20, h2
/// closed the whole shared node-to-node connection (GOAWAY `ENHANCE_YOUR_CALM`), failing
/// every group's RPCs on it — leadership confirmations included. A flood is still bounded.
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 1024;
/// Most HTTP/2 streams (requests in flight) one connection may open at once (tonic sets no
/// limit by default). A peer or router beyond it waits for a stream to close (the client
/// queues), so this bounds what one connection holds; `max_inflight_requests` and
/// `max_inflight_peer_requests` bound all connections together. Above what the cluster
/// itself opens on one connection: a router serves at most 4,096 requests at once.
pub const MAX_CONCURRENT_STREAMS_PER_CONNECTION: u32 = 4096;
/// Largest `Admin` or `Tso` message accepted (their requests are small; tonic's default,
/// made explicit). Replies, such as a node status of many groups, are not limited.
pub const MAX_CONTROL_REQUEST_BYTES: usize = 4 << 20;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the data directory {dir}: {source}")]
    Storage { dir: String, source: StorageError },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("TLS: {0}")]
    Tls(#[from] ringkv_tls::CertError),
}

/// How the node speaks TLS: as a server (its certificate, callers' certificates of the CA
/// required) and as a client of its peers (its certificate, peers' checked against the CA),
/// all re-read when the files change. None: `--insecure`.
struct NodeTls {
    server: Arc<ringkv_tls::rustls::ServerConfig>,
    peers: Arc<ringkv_tls::rustls::ClientConfig>,
}

/// Reads and checks the node's certificate files (role `node`, signed by the CA, valid).
fn load_tls(config: &NodeConfig) -> Result<Option<NodeTls>, StartError> {
    let Some(paths) = &config.tls else {
        return Ok(None);
    };
    let files = ringkv_tls::TlsFiles {
        ca: paths.ca.clone(),
        cert: paths.cert.clone(),
        key: paths.key.clone(),
    };
    let material = files.load(&[ringkv_tls::Role::Node])?;
    let identity = ReloadingIdentity::load(files, ringkv_tls::Role::Node)?;
    info!(subject = %material.info.subject, serial = %material.info.serial, "serving mutual TLS");
    Ok(Some(NodeTls {
        server: identity.server_config()?,
        peers: identity.client_config()?,
    }))
}

/// Starts nodes.
pub struct NodeServer;

/// A running node.
pub struct NodeHandle {
    node: Node,
    local_addr: SocketAddr,
    cancel: CancellationToken,
    serve: tokio::task::JoinHandle<()>,
    reconciler: Reconciler,
    duties: SystemDuties,
    hibernator: Hibernator,
    purger: ExpiryPurger,
    oracle: Arc<Oracle>,
    gossip: Option<GossipAgent>,
    health: Health,
    metrics: Option<ringkv_metrics::MetricsServer>,
}

/// The address to bind: the configured one, except that port 0 reuses the port recorded
/// in the data directory (peers know the node by its address).
fn listen_addr(config: &NodeConfig, catalog: &TreeRef) -> Result<SocketAddr, StartError> {
    let configured: SocketAddr = config
        .listen
        .parse()
        .map_err(|_| ConfigError(format!("listen must be ip:port, got {:?}", config.listen)))?;
    if configured.port() != 0 {
        return Ok(configured);
    }
    let recorded = catalog
        .get(LISTEN_ADDR_KEY)
        .map_err(|source| StartError::Storage {
            dir: config.data_dir.display().to_string(),
            source,
        })?
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|addr| addr.parse::<SocketAddr>().ok());
    Ok(match recorded {
        Some(recorded) if recorded.ip() == configured.ip() => recorded,
        _ => configured,
    })
}

/// Serves the node's metrics at `addr` (`--metrics-addr`) and records where.
async fn start_metrics(
    addr: &str,
    node: &Node,
    oracle: &Arc<Oracle>,
    liveness: &LivenessView,
    rpc: &Arc<ringkv_metrics::RpcMetrics>,
) -> Result<ringkv_metrics::MetricsServer, StartError> {
    let bind_err = |source| StartError::Bind {
        addr: addr.to_string(),
        source,
    };
    let socket_addr = addr
        .parse()
        .map_err(|_| ConfigError(format!("metrics_addr must be ip:port, got {addr:?}")))?;
    let scraped = NodeMetrics {
        node: node.clone(),
        oracle: oracle.clone(),
        liveness: liveness.clone(),
        rpc: rpc.clone(),
    };
    let server = ringkv_metrics::MetricsServer::start(socket_addr, Arc::new(move || scraped.render()))
        .await
        .map_err(bind_err)?;
    node.set_metrics_addr(server.local_addr());
    Ok(server)
}

fn write_addr_file(path: &Path, addr: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, addr)?;
    std::fs::rename(&tmp, path)
}

impl NodeServer {
    /// Opens the data directory, binds the listener and starts serving.
    pub async fn start(config: NodeConfig) -> Result<NodeHandle, StartError> {
        config.validate()?;
        let metrics_addr = config.metrics_addr.clone();
        let tls = load_tls(&config)?;
        let storage_err = |source| StartError::Storage {
            dir: config.data_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&config.data_dir).map_err(|err| storage_err(err.into()))?;
        let engine = storage::open(&config.data_dir.join("db")).map_err(storage_err)?;
        let catalog = engine.open_tree(CATALOG_TREE).map_err(storage_err)?;
        crate::node::check_identity(&catalog, &config)?;
        let bind_addr = listen_addr(&config, &catalog)?;
        let listener = TcpListener::bind(bind_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: bind_addr.to_string(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: bind_addr.to_string(),
            source,
        })?;
        catalog
            .insert(LISTEN_ADDR_KEY, local_addr.to_string().as_bytes())
            .map_err(storage_err)?;
        let advertise = match &config.advertise_addr {
            Some(addr) => addr.clone(),
            None if local_addr.ip().is_unspecified() => {
                return Err(ConfigError(format!(
                    "listening on {local_addr} needs --advertise-addr so peers can reach this node"
                ))
                .into())
            }
            None => local_addr.to_string(),
        };
        let max_message_bytes = config.max_message_bytes;
        let hasher = PasswordHasher::new(config.password_hash_iterations);
        let client_limit = InflightLimit::new("max_inflight_requests", config.max_inflight_requests);
        let peer_limit = InflightLimit::new("max_inflight_peer_requests", config.max_inflight_peer_requests);
        let peer_tls = tls.as_ref().map(|tls| tls.peers.clone());
        let node = Node::open(config, advertise, engine, catalog, peer_tls).await?;
        let liveness = LivenessView::default();
        let reconciler = Reconciler::spawn(node.clone());
        let duties = SystemDuties::spawn(node.clone(), liveness.clone());
        let hibernator = Hibernator::spawn(node.clone(), liveness.clone());
        let purger = ExpiryPurger::spawn(node.clone());
        let oracle = Oracle::start(node.clone());
        node.set_timestamp_source(oracle.clone());
        let rpc_metrics = crate::metrics::rpc_metrics();
        let metrics = match metrics_addr {
            None => None,
            Some(addr) => Some(start_metrics(&addr, &node, &oracle, &liveness, &rpc_metrics).await?),
        };
        let (health, health_service) = Health::start(&node).await;
        let served = [
            ringkv_proto::v1::shard_kv_server::SERVICE_NAME,
            ringkv_proto::v1::raft_server::SERVICE_NAME,
            ringkv_proto::v1::admin_server::SERVICE_NAME,
            ringkv_proto::v1::auth_server::SERVICE_NAME,
            ringkv_proto::v1::tso_server::SERVICE_NAME,
        ];
        let reflection =
            ringkv_metrics::reflection(&[ringkv_proto::descriptor::FILE_DESCRIPTOR_SET], &served)
                .map_err(|err| NodeError::Fatal(format!("server reflection: {err}")))?;
        let cancel = CancellationToken::new();
        // With TLS every service checks the caller's role (`service/roles.rs`); without,
        // there is no certificate to check.
        let server_tls = tls.map(|tls| tls.server);
        let roles = match &server_tls {
            Some(_) => Some(RoleCache::with_tokens(node.system_group().state.watch_auth())),
            None => {
                warn!(
                    %local_addr,
                    "INSECURE: no TLS (--insecure); this cluster is open: anyone who can reach \
                     its ports can read, write and reconfigure it"
                );
                None
            }
        };
        let router = tonic::transport::Server::builder()
            .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESET_STREAMS))
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS_PER_CONNECTION)
            .layer(ringkv_metrics::MeasureLayer::new(rpc_metrics.clone()))
            .add_service(RoleGate::new(
                Bounded::new(
                    ShardKvServer::new(AuthorizedShardKv::new(
                        ShardKvService::new(node.clone(), cancel.clone(), &rpc_metrics),
                        Authorizer::new(&node),
                    ))
                    .max_decoding_message_size(max_message_bytes)
                    .max_encoding_message_size(max_message_bytes),
                    client_limit.clone(),
                ),
                roles.clone(),
            ))
            .add_service(RoleGate::new(
                Bounded::new(
                    RaftServer::new(RaftService::new(node.clone(), oracle.clone(), cancel.clone()))
                        .max_decoding_message_size(max_message_bytes)
                        .max_encoding_message_size(max_message_bytes),
                    peer_limit,
                ),
                roles.clone(),
            ))
            .add_service(RoleGate::new(
                Bounded::new(
                    AdminServer::new(AdminService::new(node.clone(), oracle.clone(), hasher.clone()))
                        .max_decoding_message_size(MAX_CONTROL_REQUEST_BYTES),
                    client_limit.clone(),
                ),
                roles.clone(),
            ))
            .add_service(RoleGate::new(
                Bounded::new(
                    AuthServer::new(LoginService::new(node.clone(), hasher))
                        .max_decoding_message_size(MAX_CONTROL_REQUEST_BYTES),
                    client_limit.clone(),
                ),
                roles.clone(),
            ))
            .add_service(RoleGate::new(
                Bounded::new(
                    TsoServer::new(TsoService::new(oracle.clone()))
                        .max_decoding_message_size(MAX_CONTROL_REQUEST_BYTES),
                    client_limit,
                ),
                roles,
            ))
            // Outside the role gate: with TLS the handshake already asks for a certificate
            // of the cluster's CA (`health.rs`).
            .add_service(health_service)
            .add_service(reflection);
        let shutdown = cancel.clone();
        let serve = tokio::spawn(async move {
            let served = match server_tls {
                // TLS of our own (`ringkv-tls`), so rotated files are served without a restart.
                Some(config) => {
                    let (accepting, connections) = TlsIncoming::start(listener, config);
                    let served = router
                        .serve_with_incoming_shutdown(connections, shutdown.cancelled_owned())
                        .await;
                    accepting.shutdown().await;
                    served
                }
                None => {
                    // Nagle would hold small responses behind delayed ACKs (tens of ms per request).
                    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                        .await
                }
            };
            if let Err(err) = served {
                error!(%err, "grpc server failed");
            }
        });
        info!(%local_addr, "serving");
        let gossip = match GossipAgent::start(node.clone(), liveness, local_addr, node.addr()).await {
            Ok(agent) => Some(agent),
            Err(err) => {
                // Gossip is advisory (liveness, leader hints): the node serves without it.
                warn!(%err, "gossip did not start; liveness comes from direct status polls only");
                None
            }
        };
        Ok(NodeHandle {
            node,
            local_addr,
            cancel,
            serve,
            reconciler,
            duties,
            hibernator,
            purger,
            oracle,
            gossip,
            health,
            metrics,
        })
    }
}

impl NodeHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Writes the advertised address to `path` atomically (tests and tools wait for it).
    pub fn write_addr_file(&self, path: &Path) -> std::io::Result<()> {
        write_addr_file(path, self.node.addr())
    }

    /// Reports health NOT_SERVING, stops gossip and serving, then the reconciler and the
    /// system duties (and the moves they run), the hibernation driver, the timestamp oracle
    /// and the metrics endpoint, then every Raft group, and flushes storage.
    pub async fn shutdown(self) {
        self.health.shutdown().await;
        if let Some(gossip) = self.gossip {
            gossip.shutdown().await;
        }
        self.cancel.cancel();
        if let Err(err) = self.serve.await {
            error!(%err, "grpc server task failed");
        }
        self.reconciler.shutdown().await;
        self.duties.shutdown().await;
        self.hibernator.shutdown().await;
        self.purger.shutdown().await;
        self.oracle.shutdown().await;
        if let Some(metrics) = self.metrics {
            metrics.shutdown().await;
        }
        self.node.shutdown().await;
    }
}
