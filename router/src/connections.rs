//! Connections to nodes: one lazily connected tonic [`Channel`] per node address, cached,
//! and [`GrpcNodes`], the [`NodeApi`] over them.
//!
//! A channel multiplexes every request to its node over one HTTP/2 connection and
//! reconnects by itself; a failed connect surfaces as a per-request error that the retry
//! loop classifies as "unreachable".

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::shard_kv_client::ShardKvClient;
use ringkv_proto::v1::tso_client::TsoClient as TsoGrpcClient;
use ringkv_proto::v1::{
    GetTimestampsRequest, GetTimestampsResponse, NodeStatusRequest, NodeStatusResponse, RingChangeResponse,
    ShardCountRequest, ShardCountResponse, ShardDeleteRangeRequest, ShardDeleteRangeResponse,
    ShardReadRequest, ShardReadResponse, ShardScanRequest, ShardScanResponse, ShardWriteBatchRequest,
    ShardWriteBatchResponse, ShardWriteRequest, ShardWriteResponse, TransferLeaderRequest,
    TransferLeaderResponse,
};
use ringkv_tls::rustls::ClientConfig;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use prost::Message;
use ringkv_proto::v1::shard_frame::Call;
use ringkv_proto::v1::shard_frame_reply::Answer;

use crate::config::RouterConfig;
use crate::node_api::{NodeApi, RingChangeRequest, TxnCall, TxnReply};
use crate::node_pipeline::{self, NodePipeline};
use crate::read_merge::{ReadLane, SendRead, MAX_MERGED_KEYS};
use crate::write_merge::{SendWrite, WriteLane};

/// Most cached channels; beyond it an arbitrary one is dropped (it reconnects on next use).
const MAX_CHANNELS: usize = 4096;
/// Interval of HTTP/2 keep-alive pings on node connections.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a keep-alive ping may go unanswered before the connection is dropped.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How node connections are made.
#[derive(Debug, Clone)]
pub struct ChannelSettings {
    pub connect_timeout: Duration,
    /// Mutual TLS with the router's certificate, re-read when its files change
    /// (`ringkv_tls::DialConnector`; None: `--insecure`, plain HTTP/2).
    pub tls: Option<Arc<ClientConfig>>,
}

/// One lazily connected channel per node address.
#[derive(Debug)]
pub struct ChannelPool {
    settings: ChannelSettings,
    channels: Mutex<HashMap<String, Channel>>,
}

impl ChannelPool {
    pub fn new(settings: ChannelSettings) -> Self {
        ChannelPool {
            settings,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The channel to `addr`, created (without connecting) on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let endpoint = self.endpoint(addr)?;
        let channel = match &self.settings.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(ringkv_tls::DialConnector::new(tls.clone())),
            None => endpoint.connect_lazy(),
        };
        if channels.len() >= MAX_CHANNELS {
            if let Some(evicted) = channels.keys().next().cloned() {
                channels.remove(&evicted);
            }
        }
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    fn endpoint(&self, addr: &str) -> Result<Endpoint, Status> {
        let authority = addr
            .strip_prefix("http://")
            .or_else(|| addr.strip_prefix("https://"))
            .unwrap_or(addr);
        // http:// even with TLS: the TLS is the connector's (`channel`), tonic adds none.
        let endpoint = Endpoint::from_shared(format!("http://{authority}")).map_err(|err| {
            // Nothing can be sent to a malformed address: classify it as unreachable.
            let mut status = Status::unavailable(format!("invalid node address {addr:?}: {err}"));
            status.set_source(Arc::new(tonic::ConnectError(Box::new(err))));
            status
        })?;
        Ok(endpoint
            .connect_timeout(self.settings.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true))
    }
}

/// Most read lanes, and most write lanes, kept; beyond it an arbitrary one is dropped (its
/// task ends once its requests are answered).
const MAX_LANES: usize = 4096;

/// The [`NodeApi`] over gRPC.
pub struct GrpcNodes {
    pool: ChannelPool,
    /// Largest response accepted from a node.
    max_response_bytes: usize,
    /// Reads per (node address, shard, consistency), merged while others are in flight.
    read_lanes: Mutex<HashMap<(String, u32, i32), ReadLane<LaneSender>>>,
    /// Writes per (node address, shard), merged while others are in flight.
    write_lanes: Mutex<HashMap<(String, u32), WriteLane<LaneSender>>>,
    /// The lanes' pipeline per node address.
    pipelines: Mutex<HashMap<String, Arc<NodePipeline>>>,
    /// How long opening a pipeline stream may take.
    connect_timeout: Duration,
}

impl std::fmt::Debug for GrpcNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcNodes")
            .field("pool", &self.pool)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

/// Sends a lane's (merged) reads or writes to its node: on the node's pipeline, or unary
/// when the call is large or the node has none.
#[derive(Clone)]
struct LaneSender {
    client: ShardKvClient<Channel>,
    pipeline: Arc<NodePipeline>,
}

impl LaneSender {
    /// `call` on the pipeline, bounded by `timeout`, acting for the task's user (none on a
    /// lane's task: the router itself, which checked every merged request).
    async fn piped(&self, call: Call, encoded_bytes: usize, timeout: Duration) -> Result<Answer, Status> {
        let user = crate::auth::current_user().unwrap_or_default();
        bounded(timeout, self.pipeline.call(call, encoded_bytes, user, timeout)).await
    }
}

impl SendRead for LaneSender {
    async fn send(&self, request: ShardReadRequest, timeout: Duration) -> Result<ShardReadResponse, Status> {
        let encoded_bytes = request.encoded_len();
        if self.pipeline.carries(encoded_bytes) {
            let answer = self.piped(Call::Read(request), encoded_bytes, timeout).await?;
            return node_pipeline::expect(answer, |answer| match answer {
                Answer::Read(read) => Some(read),
                _ => None,
            });
        }
        let mut client = self.client.clone();
        let response = bounded(timeout, client.read(with_timeout(request, timeout))).await?;
        Ok(response.into_inner())
    }
}

impl SendWrite for LaneSender {
    async fn send(
        &self,
        request: ShardWriteRequest,
        timeout: Duration,
    ) -> Result<ShardWriteResponse, Status> {
        let encoded_bytes = request.encoded_len();
        if self.pipeline.carries(encoded_bytes) {
            let answer = self.piped(Call::Write(request), encoded_bytes, timeout).await?;
            return node_pipeline::expect(answer, |answer| match answer {
                Answer::Write(write) => Some(write),
                _ => None,
            });
        }
        let mut client = self.client.clone();
        let response = bounded(timeout, client.write(with_timeout(request, timeout))).await?;
        Ok(response.into_inner())
    }

    async fn send_batch(
        &self,
        request: ShardWriteBatchRequest,
        timeout: Duration,
    ) -> Result<ShardWriteBatchResponse, Status> {
        let encoded_bytes = request.encoded_len();
        if self.pipeline.carries(encoded_bytes) {
            let answer = self
                .piped(Call::WriteBatch(request), encoded_bytes, timeout)
                .await?;
            return node_pipeline::expect(answer, |answer| match answer {
                Answer::WriteBatch(batch) => Some(batch),
                _ => None,
            });
        }
        let mut client = self.client.clone();
        let response = bounded(timeout, client.write_batch(with_timeout(request, timeout))).await?;
        Ok(response.into_inner())
    }
}

/// The lane under `key`, started with `start` on first use; at most [`MAX_LANES`] kept.
fn lane<K, L>(
    lanes: &Mutex<HashMap<K, L>>,
    key: K,
    start: impl FnOnce() -> Result<L, Status>,
) -> Result<L, Status>
where
    K: std::hash::Hash + Eq + Clone,
    L: Clone,
{
    let mut lanes = lanes.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(lane) = lanes.get(&key) {
        return Ok(lane.clone());
    }
    let lane = start()?;
    if lanes.len() >= MAX_LANES {
        if let Some(evicted) = lanes.keys().next().cloned() {
            lanes.remove(&evicted);
        }
    }
    lanes.insert(key, lane.clone());
    Ok(lane)
}

impl GrpcNodes {
    /// Connections to nodes as `config` says, with mutual TLS when `tls` is set.
    pub fn new(config: &RouterConfig, tls: Option<Arc<ClientConfig>>) -> Self {
        GrpcNodes {
            pool: ChannelPool::new(ChannelSettings {
                connect_timeout: config.connect_timeout(),
                tls,
            }),
            max_response_bytes: config.max_response_bytes,
            read_lanes: Mutex::new(HashMap::new()),
            write_lanes: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            connect_timeout: config.connect_timeout(),
        }
    }

    /// The read lane of `shard` at `consistency` on `addr`, started on first use.
    fn read_lane(&self, addr: &str, shard: u32, consistency: i32) -> Result<ReadLane<LaneSender>, Status> {
        lane(&self.read_lanes, (addr.to_string(), shard, consistency), || {
            let sender = self.lane_sender(addr)?;
            Ok(ReadLane::spawn(sender, shard, consistency))
        })
    }

    /// The write lane of `shard` on `addr`, started on first use.
    fn write_lane(&self, addr: &str, shard: u32) -> Result<WriteLane<LaneSender>, Status> {
        lane(&self.write_lanes, (addr.to_string(), shard), || {
            let sender = self.lane_sender(addr)?;
            Ok(WriteLane::spawn(sender, shard))
        })
    }

    /// What a new lane to `addr` sends with: the node's pipeline (started on first use)
    /// and its unary client.
    fn lane_sender(&self, addr: &str) -> Result<LaneSender, Status> {
        let client = self.shard_kv(addr)?;
        let pipeline = lane(&self.pipelines, addr.to_string(), || {
            Ok(Arc::new(NodePipeline::start(
                addr.to_string(),
                client.clone(),
                self.connect_timeout,
            )))
        })?;
        Ok(LaneSender { client, pipeline })
    }

    fn shard_kv(&self, addr: &str) -> Result<ShardKvClient<Channel>, Status> {
        Ok(ShardKvClient::new(self.pool.channel(addr)?).max_decoding_message_size(self.max_response_bytes))
    }
}

/// A request carrying its deadline to the node (`grpc-timeout`) and the user the request
/// it serves acts for (`x-ringkv-user`, when the calling task set one: `auth.rs`).
fn with_timeout<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    if let Some(user) = crate::auth::current_user() {
        if let Ok(value) = user.parse() {
            request.metadata_mut().insert(ringkv_proto::metadata::USER, value);
        }
    }
    request
}

/// `request` naming the client it is forwarded for (`x-ringkv-client-addr`: the node counts
/// failed logins per client, not per router).
fn with_client_addr<T>(mut request: Request<T>, client: Option<std::net::IpAddr>) -> Request<T> {
    if let Some(value) = client.and_then(|client| client.to_string().parse().ok()) {
        request
            .metadata_mut()
            .insert(ringkv_proto::metadata::CLIENT_ADDR, value);
    }
    request
}

/// Bounds a whole call, connecting included, by `timeout`; an expired call fails like a
/// tonic client timeout (CANCELLED with a `TimeoutExpired` source).
async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_elapsed) => {
            let mut status = Status::cancelled(format!("no answer within {} ms", timeout.as_millis()));
            status.set_source(Arc::new(tonic::TimeoutExpired(())));
            Err(status)
        }
    }
}

impl NodeApi for GrpcNodes {
    async fn read(
        &self,
        addr: &str,
        request: ShardReadRequest,
        timeout: Duration,
    ) -> Result<ShardReadResponse, Status> {
        // Snapshot, uncommitted and budgeted reads go alone: a lane merges plain reads only.
        if request.keys.len() >= MAX_MERGED_KEYS
            || request.read_ts != 0
            || request.read_uncommitted
            || request.max_bytes != 0
        {
            let mut client = self.shard_kv(addr)?;
            let response = bounded(timeout, client.read(with_timeout(request, timeout))).await?;
            return Ok(response.into_inner());
        }
        let lane = self.read_lane(addr, request.shard_id, request.consistency)?;
        bounded(timeout, lane.read(request.keys, timeout)).await
    }

    async fn write(
        &self,
        addr: &str,
        request: ShardWriteRequest,
        timeout: Duration,
    ) -> Result<ShardWriteResponse, Status> {
        let lane = self.write_lane(addr, request.shard_id)?;
        bounded(timeout, lane.write(request, timeout)).await
    }

    async fn scan(
        &self,
        addr: &str,
        request: ShardScanRequest,
        timeout: Duration,
    ) -> Result<ShardScanResponse, Status> {
        let mut client = self.shard_kv(addr)?;
        let response = bounded(timeout, client.scan(with_timeout(request, timeout))).await?;
        Ok(response.into_inner())
    }

    async fn count(
        &self,
        addr: &str,
        request: ShardCountRequest,
        timeout: Duration,
    ) -> Result<ShardCountResponse, Status> {
        let mut client = self.shard_kv(addr)?;
        let response = bounded(timeout, client.count(with_timeout(request, timeout))).await?;
        Ok(response.into_inner())
    }

    async fn delete_range(
        &self,
        addr: &str,
        request: ShardDeleteRangeRequest,
        timeout: Duration,
    ) -> Result<ShardDeleteRangeResponse, Status> {
        let mut client = self.shard_kv(addr)?;
        let response = bounded(timeout, client.delete_range(with_timeout(request, timeout))).await?;
        Ok(response.into_inner())
    }

    async fn txn(&self, addr: &str, call: TxnCall, timeout: Duration) -> Result<TxnReply, Status> {
        let mut client = self.shard_kv(addr)?;
        let reply = match call {
            TxnCall::Prewrite(request) => TxnReply::Prewrite(
                bounded(timeout, client.txn_prewrite(with_timeout(request, timeout)))
                    .await?
                    .into_inner(),
            ),
            TxnCall::Commit(request) => TxnReply::Status(
                bounded(timeout, client.txn_commit(with_timeout(request, timeout)))
                    .await?
                    .into_inner(),
            ),
            TxnCall::Rollback(request) => TxnReply::Status(
                bounded(timeout, client.txn_rollback(with_timeout(request, timeout)))
                    .await?
                    .into_inner(),
            ),
            TxnCall::CheckStatus(request) => TxnReply::Status(
                bounded(timeout, client.txn_check_status(with_timeout(request, timeout)))
                    .await?
                    .into_inner(),
            ),
            TxnCall::Validate(request) => TxnReply::Validate(
                bounded(timeout, client.txn_validate(with_timeout(request, timeout)))
                    .await?
                    .into_inner(),
            ),
            TxnCall::Gc(request) => TxnReply::Gc(
                bounded(timeout, client.txn_gc(with_timeout(request, timeout)))
                    .await?
                    .into_inner(),
            ),
            TxnCall::OnePc(request) => TxnReply::OnePc(
                bounded(timeout, client.txn_one_pc(with_timeout(request, timeout)))
                    .await?
                    .into_inner(),
            ),
            TxnCall::ScanLocks(request) => TxnReply::ScanLocks(
                bounded(timeout, client.txn_scan_locks(with_timeout(request, timeout)))
                    .await?
                    .into_inner(),
            ),
        };
        Ok(reply)
    }

    async fn watch(
        &self,
        addr: &str,
        request: ringkv_proto::v1::ShardWatchRequest,
        timeout: Duration,
    ) -> Result<crate::node_api::ShardWatchStream, Status> {
        let mut client = self.shard_kv(addr)?;
        // No grpc-timeout: the stream lasts as long as the watch.
        let mut request = with_timeout(request, timeout);
        request.metadata_mut().remove("grpc-timeout");
        let response = bounded(timeout, client.watch(request)).await?;
        Ok(Box::pin(response.into_inner()))
    }

    async fn get_auth(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<ringkv_proto::v1::GetAuthResponse, Status> {
        let mut client =
            AdminClient::new(self.pool.channel(addr)?).max_decoding_message_size(self.max_response_bytes);
        let request = with_timeout(ringkv_proto::v1::GetAuthRequest {}, timeout);
        Ok(bounded(timeout, client.get_auth(request)).await?.into_inner())
    }

    async fn change_auth(
        &self,
        addr: &str,
        request: ringkv_proto::v1::ChangeAuthRequest,
        timeout: Duration,
    ) -> Result<ringkv_proto::v1::ChangeAuthResponse, Status> {
        let mut client =
            AdminClient::new(self.pool.channel(addr)?).max_decoding_message_size(self.max_response_bytes);
        let request = with_timeout(request, timeout);
        Ok(bounded(timeout, client.change_auth(request)).await?.into_inner())
    }

    async fn login(
        &self,
        addr: &str,
        request: ringkv_proto::v1::LoginRequest,
        client: Option<std::net::IpAddr>,
        timeout: Duration,
    ) -> Result<ringkv_proto::v1::LoginResponse, Status> {
        let mut auth = ringkv_proto::v1::auth_client::AuthClient::new(self.pool.channel(addr)?);
        let request = with_client_addr(with_timeout(request, timeout), client);
        Ok(bounded(timeout, auth.login(request)).await?.into_inner())
    }

    async fn change_password(
        &self,
        addr: &str,
        request: ringkv_proto::v1::ChangePasswordRequest,
        client: Option<std::net::IpAddr>,
        timeout: Duration,
    ) -> Result<ringkv_proto::v1::ChangePasswordResponse, Status> {
        let mut auth = ringkv_proto::v1::auth_client::AuthClient::new(self.pool.channel(addr)?);
        let request = with_client_addr(with_timeout(request, timeout), client);
        Ok(bounded(timeout, auth.change_password(request))
            .await?
            .into_inner())
    }

    async fn hold_history(
        &self,
        addr: &str,
        request: ringkv_proto::v1::HoldHistoryRequest,
        timeout: Duration,
    ) -> Result<ringkv_proto::v1::HoldHistoryResponse, Status> {
        let mut client =
            AdminClient::new(self.pool.channel(addr)?).max_decoding_message_size(self.max_response_bytes);
        Ok(
            bounded(timeout, client.hold_history(with_timeout(request, timeout)))
                .await?
                .into_inner(),
        )
    }

    async fn node_status(&self, addr: &str, timeout: Duration) -> Result<NodeStatusResponse, Status> {
        let mut client =
            AdminClient::new(self.pool.channel(addr)?).max_decoding_message_size(self.max_response_bytes);
        let response = bounded(
            timeout,
            client.node_status(with_timeout(NodeStatusRequest::default(), timeout)),
        )
        .await?;
        Ok(response.into_inner())
    }

    async fn change_ring(
        &self,
        addr: &str,
        change: RingChangeRequest,
        timeout: Duration,
    ) -> Result<RingChangeResponse, Status> {
        let mut client =
            AdminClient::new(self.pool.channel(addr)?).max_decoding_message_size(self.max_response_bytes);
        let response = match change {
            RingChangeRequest::Add(request) => {
                bounded(timeout, client.add_node(with_timeout(request, timeout))).await?
            }
            RingChangeRequest::Decommission(request) => {
                bounded(timeout, client.decommission_node(with_timeout(request, timeout))).await?
            }
        };
        Ok(response.into_inner())
    }

    async fn timestamps(
        &self,
        addr: &str,
        request: GetTimestampsRequest,
        timeout: Duration,
    ) -> Result<GetTimestampsResponse, Status> {
        let mut client = TsoGrpcClient::new(self.pool.channel(addr)?);
        let response = bounded(timeout, client.get_timestamps(with_timeout(request, timeout))).await?;
        Ok(response.into_inner())
    }

    async fn transfer_leader(
        &self,
        addr: &str,
        request: TransferLeaderRequest,
        timeout: Duration,
    ) -> Result<TransferLeaderResponse, Status> {
        let mut client =
            AdminClient::new(self.pool.channel(addr)?).max_decoding_message_size(self.max_response_bytes);
        let response = bounded(timeout, client.transfer_leader(with_timeout(request, timeout))).await?;
        Ok(response.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Channels are cached per address and malformed addresses fail as unreachable.
    #[tokio::test]
    async fn channels_are_cached_and_addresses_checked() {
        let pool = ChannelPool::new(ChannelSettings {
            connect_timeout: Duration::from_millis(100),
            tls: None,
        });
        assert!(pool.channel("127.0.0.1:1").is_ok());
        assert!(pool.channel("127.0.0.1:1").is_ok());
        assert_eq!(pool.channels.lock().map(|c| c.len()).unwrap_or(0), 1);
        let err = pool.channel("bad host:1");
        let Err(status) = err else {
            panic!("expected an error")
        };
        let classified = crate::classify::classify(&status);
        assert_eq!(classified.failure, crate::classify::Failure::Unreachable);
    }
}
