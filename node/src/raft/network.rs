//! The openraft network: every group's RPCs travel over the `ringkv.v1.Raft` gRPC service,
//! one shared HTTP/2 connection per peer node, each message tagged with its group.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use ringkv_proto::v1::raft_client::RaftClient;
use ringkv_proto::v1::{RaftMessage, RaftReply, RaftRpc};
use ringkv_tls::rustls::ClientConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::catch_up::Pacer;
use super::pipeline::Pipeline;
use super::snapshot::SnapshotProgress;
use super::types::{GroupId, NodeId, TypeConfig};

/// Errors reaching a peer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("peer {addr} unreachable: {detail}")]
    Unreachable { addr: String, detail: String },
    #[error("rpc to {addr} failed: {detail}")]
    Rpc { addr: String, detail: String },
    #[error("cannot encode or decode a raft message: {0}")]
    Codec(String),
}

/// Shared connections to peer nodes, keyed by address.
pub struct Transport {
    node_id: NodeId,
    cluster_id: RwLock<String>,
    channels: Mutex<HashMap<String, Channel>>,
    /// The `Raft.Pipeline` stream to each peer (appends, leadership confirmations, votes);
    /// `None`: the peer has no pipeline (an older version), its messages go unary.
    pipelines: Mutex<HashMap<String, Option<Arc<Pipeline>>>>,
    connect_timeout: Duration,
    /// Largest gRPC message accepted or sent (snapshot chunks and append batches fit in it).
    max_message_bytes: usize,
    /// Paces the catch-up traffic of every group of this node — snapshot chunks here, log
    /// entries for lagging followers where they are read — to one byte rate (None = unlimited).
    catch_up_pacer: Option<Arc<Pacer>>,
    /// Mutual TLS to peers with this node's certificate, re-read when its files change
    /// (`ringkv_tls::DialConnector`; None: `--insecure`, plain HTTP/2).
    tls: Option<Arc<ClientConfig>>,
    /// The node's snapshot activity: chunks sent here, builds and installs by its groups.
    snapshot_progress: Arc<SnapshotProgress>,
}

impl Transport {
    pub fn new(
        node_id: NodeId,
        connect_timeout: Duration,
        max_message_bytes: usize,
        catch_up_bytes_per_sec: u64,
        tls: Option<Arc<ClientConfig>>,
    ) -> Arc<Transport> {
        Arc::new(Transport {
            node_id,
            cluster_id: RwLock::new(String::new()),
            channels: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            connect_timeout,
            max_message_bytes,
            catch_up_pacer: Pacer::new(catch_up_bytes_per_sec),
            tls,
            snapshot_progress: Arc::default(),
        })
    }

    pub fn set_cluster_id(&self, cluster_id: &str) {
        match self.cluster_id.write() {
            Ok(mut current) => *current = cluster_id.to_string(),
            Err(poisoned) => *poisoned.into_inner() = cluster_id.to_string(),
        }
    }

    pub fn cluster_id(&self) -> String {
        match self.cluster_id.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The node's catch-up pacer (None = unlimited).
    pub fn catch_up_pacer(&self) -> Option<Arc<Pacer>> {
        self.catch_up_pacer.clone()
    }

    /// The node's snapshot activity (for its metrics).
    pub fn snapshot_progress(&self) -> &Arc<SnapshotProgress> {
        &self.snapshot_progress
    }

    /// A (lazily connected, shared) channel to `addr`.
    pub fn channel(&self, addr: &str) -> Result<Channel, TransportError> {
        let mut channels = match self.channels.lock() {
            Ok(channels) => channels,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let invalid = |err: tonic::transport::Error| TransportError::Unreachable {
            addr: addr.to_string(),
            detail: format!("invalid address: {err}"),
        };
        // http:// even with TLS: the TLS is the connector's (it presents the certificate the
        // files hold at each connection), tonic adds none.
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(invalid)?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = match &self.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(ringkv_tls::DialConnector::new(tls.clone())),
            None => endpoint.connect_lazy(),
        };
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// A Raft service client for `addr` with the message size limits applied.
    pub fn raft_client(&self, addr: &str) -> Result<RaftClient<Channel>, TransportError> {
        Ok(RaftClient::new(self.channel(addr)?)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }
}

impl Transport {
    /// The pipeline to `addr`, started at first use (None: the peer has none).
    pub(crate) fn pipeline(&self, addr: &str) -> Result<Option<Arc<Pipeline>>, TransportError> {
        let mut pipelines = match self.pipelines.lock() {
            Ok(pipelines) => pipelines,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(pipeline) = pipelines.get(addr) {
            return Ok(pipeline.clone());
        }
        let pipeline = Arc::new(Pipeline::start(
            addr.to_string(),
            self.raft_client(addr)?,
            self.max_message_bytes,
            self.connect_timeout,
        ));
        pipelines.insert(addr.to_string(), Some(pipeline.clone()));
        Ok(Some(pipeline))
    }

    /// Sends the messages for `addr` unary from now on (its node has no pipeline).
    fn without_pipeline(&self, addr: &str) {
        let mut pipelines = match self.pipelines.lock() {
            Ok(pipelines) => pipelines,
            Err(poisoned) => poisoned.into_inner(),
        };
        pipelines.insert(addr.to_string(), None);
    }
}

/// Creates the connections of one group.
pub struct NetworkFactory {
    group: GroupId,
    transport: Arc<Transport>,
}

impl NetworkFactory {
    pub fn new(group: GroupId, transport: Arc<Transport>) -> NetworkFactory {
        NetworkFactory { group, transport }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            group: self.group,
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
        }
    }
}

/// One group's view of one peer.
pub struct Connection {
    group: GroupId,
    target: NodeId,
    addr: String,
    transport: Arc<Transport>,
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    ConfirmLeadership,
    Vote,
    Snapshot,
}

impl Rpc {
    /// The frame kind it travels as on a pipeline; snapshots stay unary (a chunk must not
    /// hold the small messages up).
    fn pipelined(self) -> Option<RaftRpc> {
        match self {
            Rpc::Append => Some(RaftRpc::AppendEntries),
            Rpc::ConfirmLeadership => Some(RaftRpc::ConfirmLeadership),
            Rpc::Vote => Some(RaftRpc::Vote),
            Rpc::Snapshot => None,
        }
    }
}

/// Builds the envelope for a group message.
pub fn envelope(cluster_id: String, group: GroupId, from_node: NodeId, payload: Vec<u8>) -> RaftMessage {
    let (shard_id, system) = match group {
        GroupId::System => (0, true),
        GroupId::Shard(shard) => (shard, false),
    };
    RaftMessage {
        cluster_id,
        shard_id,
        system,
        from_node,
        payload,
        to_node: 0,
    }
}

type CallError<E> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

/// How long a message waits for a peer to open its group (bounded by half the RPC's time
/// to live): right after `cluster init`, or when a move reaches a new replica, a leader
/// may address a peer a few milliseconds before the peer has opened the group. Failing at
/// once would log an openraft ERROR at every healthy start.
const NOT_HOSTED_GRACE: Duration = Duration::from_millis(500);
/// Pause between two sends to a peer that does not host the group yet.
const NOT_HOSTED_RETRY: Duration = Duration::from_millis(25);

impl Connection {
    /// Sends one RPC. `entries_hint`: for appends, how many entries to retry with when the
    /// message is too large for gRPC.
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
        entries_hint: u64,
    ) -> Result<Resp, CallError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let grace_until = tokio::time::Instant::now() + NOT_HOSTED_GRACE.min(option.hard_ttl() / 2);
        loop {
            match self.send(rpc, request, option).await? {
                Ok(reply) => return self.decode_reply(reply),
                Err(status)
                    if status.code() == tonic::Code::NotFound
                        && tokio::time::Instant::now() + NOT_HOSTED_RETRY < grace_until =>
                {
                    tokio::time::sleep(NOT_HOSTED_RETRY).await;
                }
                Err(status) => return Err(self.failed(rpc, &status, entries_hint)),
            }
        }
    }

    /// Sends one RPC: the reply, or the gRPC status the peer answered with.
    async fn send<Req: Serialize, E: std::error::Error>(
        &self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Result<RaftReply, tonic::Status>, CallError<E>> {
        let message = self.message(request)?;
        if let Some(kind) = rpc.pipelined() {
            let pipeline = self
                .transport
                .pipeline(&self.addr)
                .map_err(|err| RPCError::Unreachable(Unreachable::new(&err)))?;
            if let Some(pipeline) = pipeline {
                match pipeline.call(kind, message).await {
                    Err(status) if status.code() == tonic::Code::Unimplemented => {
                        tracing::info!(peer = %self.addr, "the peer has no raft pipeline: unary RPCs to it");
                        self.transport.without_pipeline(&self.addr);
                        return self.send_unary(rpc, self.message(request)?, option).await;
                    }
                    answered => return Ok(answered),
                }
            }
        }
        self.send_unary(rpc, message, option).await
    }

    /// The envelope of `request` for the target.
    // The error type is openraft's (`RaftNetwork`'s signatures), large or not.
    #[allow(clippy::result_large_err)]
    fn message<Req: Serialize, E: std::error::Error>(
        &self,
        request: &Req,
    ) -> Result<RaftMessage, CallError<E>> {
        let payload = postcard::to_allocvec(request)
            .map_err(|err| RPCError::Network(NetworkError::new(&TransportError::Codec(err.to_string()))))?;
        let mut message = envelope(
            self.transport.cluster_id(),
            self.group,
            self.transport.node_id(),
            payload,
        );
        message.to_node = self.target;
        Ok(message)
    }

    /// Sends one message as a unary RPC.
    async fn send_unary<E: std::error::Error>(
        &self,
        rpc: Rpc,
        message: RaftMessage,
        option: &RPCOption,
    ) -> Result<Result<RaftReply, tonic::Status>, CallError<E>> {
        let mut client = self
            .transport
            .raft_client(&self.addr)
            .map_err(|err| RPCError::Unreachable(Unreachable::new(&err)))?;
        let mut request = tonic::Request::new(message);
        request.set_timeout(option.hard_ttl());
        let reply = match rpc {
            Rpc::Append => client.append_entries(request).await,
            Rpc::ConfirmLeadership => client.confirm_leadership(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        };
        Ok(reply.map(tonic::Response::into_inner))
    }

    /// What openraft makes of a failed RPC.
    fn failed<E: std::error::Error>(
        &self,
        rpc: Rpc,
        status: &tonic::Status,
        entries_hint: u64,
    ) -> CallError<E> {
        let detail = status.message().to_string();
        let addr = self.addr.clone();
        match status.code() {
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted if matches!(rpc, Rpc::Append) => {
                RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries_hint.max(1)))
            }
            // Connection failures, and a peer that does not host this group (yet):
            // openraft backs off before trying again.
            tonic::Code::Unavailable | tonic::Code::NotFound | tonic::Code::FailedPrecondition => {
                RPCError::Unreachable(Unreachable::new(&TransportError::Unreachable { addr, detail }))
            }
            _ => RPCError::Network(NetworkError::new(&TransportError::Rpc { addr, detail })),
        }
    }

    // The error type is openraft's (`RaftNetwork`'s signatures), large or not.
    #[allow(clippy::result_large_err)]
    fn decode_reply<Resp, E>(&self, reply: RaftReply) -> Result<Resp, CallError<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result: Result<Resp, RaftError<NodeId, E>> = postcard::from_bytes(&reply.payload)
            .map_err(|err| RPCError::Network(NetworkError::new(&TransportError::Codec(err.to_string()))))?;
        result.map_err(|err| RPCError::RemoteError(RemoteError::new(self.target, err)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let hint = (rpc.entries.len() as u64 / 2).max(1);
        self.call(Rpc::Append, &rpc, &option, hint).await
    }

    /// Answered by the target from its saved vote (`Raft.ConfirmLeadership`), not behind its
    /// log flushes; a target without that RPC (an older version) gets an AppendEntries.
    async fn confirm_leadership(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        if std::env::var_os("REVERT_FIX").is_some() {
            return self.append_entries(rpc, option).await;
        }
        match self.send(Rpc::ConfirmLeadership, &rpc.vote, &option).await? {
            Ok(reply) => self.decode_reply(reply),
            // A peer of an older version.
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                self.append_entries(rpc, option).await
            }
            Err(status) => Err(self.failed(Rpc::ConfirmLeadership, &status, 1)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        if let Some(pacer) = &self.transport.catch_up_pacer {
            pacer.pace(rpc.data.len()).await;
        }
        let progress = self.transport.snapshot_progress.clone();
        progress.sending_chunk(self.group, self.target, rpc.data.len());
        let last = rpc.done;
        let answer = self.call(Rpc::Snapshot, &rpc, &option, 1).await;
        progress.chunk_sent(self.group, self.target, last, answer.is_ok());
        answer
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.send(Rpc::Vote, &rpc, &option).await? {
            Ok(reply) => self.decode_reply(reply),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(withheld_vote(rpc)),
            Err(status) => Err(self.failed(Rpc::Vote, &status, 1)),
        }
    }
}

/// The answer of a peer that does not host the group (yet: it creates it on `cluster init`
/// or when a move reaches it): a vote withheld, as a member without the group's state
/// would give. It carries the candidate's own vote, so the candidate neither counts it
/// nor steps down. As an error, openraft would log an ERROR for every group at every
/// healthy start, when one node's groups campaign before its peers have opened theirs.
fn withheld_vote(request: VoteRequest<NodeId>) -> VoteResponse<NodeId> {
    VoteResponse {
        vote: request.vote,
        vote_granted: false,
        last_log_id: None,
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, Vote};

    use super::*;

    /// A peer without the group withholds its vote with the candidate's own vote: neither
    /// granted nor newer, so the candidate neither counts it nor steps down.
    #[test]
    fn unhosted_peer_withholds_its_vote() {
        let vote = Vote::new(3, 1);
        let request = VoteRequest::new(vote, Some(LogId::new(CommittedLeaderId::new(2, 1), 7)));
        let answer = withheld_vote(request);
        assert!(!answer.vote_granted);
        assert_eq!(answer.vote, vote);
        assert_eq!(answer.last_log_id, None);
    }
}
