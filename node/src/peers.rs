//! Every node-to-node call that is not Raft replication, behind one seam: one way to get a
//! channel (the transport's shared connection per peer address), one deadline rule, one
//! mapping of a peer's `Status` to a [`NodeError`].
//!
//! Raft replication itself (append, vote, snapshot) goes through openraft's network
//! (`raft/network.rs`), which shares the same connections.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::raft_client::RaftClient;
use ringkv_proto::v1::RaftRpc;
use ringkv_proto::{metadata, v1};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;
use tonic::Code;

use crate::error::NodeError;
use crate::raft::network::{envelope, Transport};
use crate::raft::types::{Command, CommandResult, GroupId, NodeId};

/// Calls to other nodes.
#[derive(Clone)]
pub struct Peers {
    transport: Arc<Transport>,
    /// Deadline of a plain request/response call.
    rpc_timeout: Duration,
    max_message_bytes: usize,
}

/// Who a call went to, for error messages (`node` 0 when only the address is known).
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    pub node: NodeId,
    pub addr: &'a str,
}

impl Peer<'_> {
    /// A peer failure: the call did not reach the peer or the peer refused it.
    fn failed(&self, detail: impl std::fmt::Display) -> NodeError {
        NodeError::Peer {
            node: self.node,
            detail: format!("{}: {detail}", self.addr),
        }
    }

    fn status_failed(&self, status: &tonic::Status) -> NodeError {
        self.failed(status.message())
    }
}

/// A `Raft.Pipeline` frame's answer to a node asking for timestamps (`RAFT_RPC_TIMESTAMPS`,
/// postcard-encoded): what `Tso.GetTimestamps` answers, the leader hint included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Forwarded {
    /// The requested count of timestamps, from this one on.
    Issued { first: u64 },
    /// The peer does not lead the system group; the leader it knows, if any.
    NotLeader { leader: Option<(NodeId, String)> },
}

impl Forwarded {
    /// The answer to a request for timestamps: `Err` for what the frame fails with.
    pub fn of(answer: Result<Range<u64>, NodeError>) -> Result<Forwarded, NodeError> {
        match answer {
            Ok(range) => Ok(Forwarded::Issued { first: range.start }),
            Err(NodeError::NotLeader { leader, .. }) => Ok(Forwarded::NotLeader { leader }),
            Err(err) => Err(err),
        }
    }
}

/// The range `answer` gives for a request of `count` timestamps; "not the leader" names the
/// leader the peer knows, so the caller can follow.
fn answer_range(peer: Peer<'_>, answer: Forwarded, count: u32) -> Result<Range<u64>, NodeError> {
    match answer {
        Forwarded::Issued { first } => match first.checked_add(u64::from(count)) {
            Some(end) if first > 0 => Ok(first..end),
            _ => Err(peer.failed(format!("answered {count} timestamps from {first}"))),
        },
        Forwarded::NotLeader { leader } => Err(NodeError::NotLeader {
            group: GroupId::System,
            leader,
            proposed: false,
        }),
    }
}

/// Where a member stands before init: the answer to a `JoinCluster` probe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberStanding {
    /// The cluster id it has recorded.
    pub cluster_id: Option<String>,
    /// Whether it has applied a committed cluster configuration.
    pub initialized: bool,
    /// Whether its system group has a membership (Raft state).
    pub system_group_started: bool,
}

impl Peers {
    pub fn new(transport: Arc<Transport>, rpc_timeout: Duration, max_message_bytes: usize) -> Peers {
        Peers {
            transport,
            rpc_timeout,
            max_message_bytes,
        }
    }

    fn raft(&self, peer: Peer<'_>) -> Result<RaftClient<Channel>, NodeError> {
        self.transport
            .raft_client(peer.addr)
            .map_err(|err| peer.failed(err))
    }

    fn admin(&self, peer: Peer<'_>) -> Result<AdminClient<Channel>, NodeError> {
        let channel = self
            .transport
            .channel(peer.addr)
            .map_err(|err| peer.failed(err))?;
        Ok(AdminClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        request
    }

    /// Asks `peer` where it stands (its recorded cluster, whether it is initialised), recording
    /// nothing. One that cannot be reached, or answers for another node, is a peer failure.
    pub async fn probe(&self, peer: Peer<'_>) -> Result<MemberStanding, NodeError> {
        let probe = v1::JoinClusterRequest {
            cluster_id: String::new(),
            node_id: peer.node,
            probe: true,
        };
        match self
            .raft(peer)?
            .join_cluster(self.request(probe, self.rpc_timeout))
            .await
        {
            Ok(answer) => {
                let answer = answer.into_inner();
                Ok(MemberStanding {
                    cluster_id: Some(answer.cluster_id).filter(|id| !id.is_empty()),
                    initialized: answer.initialized,
                    system_group_started: answer.system_group_started,
                })
            }
            Err(status)
                if status.code() == tonic::Code::FailedPrecondition
                    || status.code() == tonic::Code::InvalidArgument =>
            {
                Err(NodeError::InvalidArgument(format!(
                    "node {} at {} refused to say where it stands: {}",
                    peer.node,
                    peer.addr,
                    status.message()
                )))
            }
            Err(status) => Err(peer.failed(format!(
                "cannot ask the node where it stands: {}",
                status.message()
            ))),
        }
    }

    /// Asks `peer` to record `cluster_id` as its cluster. A peer that refuses (it belongs to
    /// another cluster, or is another node) is a bad request (`InvalidArgument`); one that
    /// cannot be reached is a peer failure.
    pub async fn join(&self, peer: Peer<'_>, cluster_id: &str) -> Result<(), NodeError> {
        let join = v1::JoinClusterRequest {
            cluster_id: cluster_id.to_string(),
            node_id: peer.node,
            probe: false,
        };
        match self
            .raft(peer)?
            .join_cluster(self.request(join, self.rpc_timeout))
            .await
        {
            Ok(_) => Ok(()),
            Err(status)
                if status.code() == tonic::Code::FailedPrecondition
                    || status.code() == tonic::Code::InvalidArgument =>
            {
                Err(NodeError::InvalidArgument(format!(
                    "node {} at {} refused to join: {}",
                    peer.node,
                    peer.addr,
                    status.message()
                )))
            }
            Err(status) => Err(peer.failed(format!("cannot reach the node: {}", status.message()))),
        }
    }

    /// Orders `peer` to campaign for `shard` (a leader transfer's last step).
    pub async fn campaign(&self, peer: Peer<'_>, order: v1::CampaignRequest) -> Result<(), NodeError> {
        self.raft(peer)?
            .campaign(self.request(order, self.rpc_timeout))
            .await
            .map(|_| ())
            .map_err(|status| peer.status_failed(&status))
    }

    /// Sends a hibernation keep-alive (`keepalive.rs`), waiting at most `timeout`.
    pub async fn keep_alive(
        &self,
        peer: Peer<'_>,
        request: v1::KeepAliveRequest,
        timeout: Duration,
    ) -> Result<v1::KeepAliveResponse, NodeError> {
        self.raft(peer)?
            .keep_alive(self.request(request, timeout))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| peer.status_failed(&status))
    }

    /// Asks the node at `peer` (the leader of `shard`) to hand the leadership to `target`,
    /// waiting at most `timeout` (a transfer may wait out a lease and an election).
    pub async fn transfer_leader(
        &self,
        peer: Peer<'_>,
        shard: u32,
        target: NodeId,
        timeout: Duration,
    ) -> Result<v1::TransferLeaderResponse, NodeError> {
        let request = v1::TransferLeaderRequest {
            shard_id: shard,
            to_node: target,
        };
        self.admin(peer)?
            .transfer_leader(self.request(request, timeout))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| peer.status_failed(&status))
    }

    /// `count` timestamps from the timestamp oracle at `peer` (the system leader, we hope):
    /// as a frame on the peer's `Raft.Pipeline` stream, or with `Tso.GetTimestamps` when the
    /// peer takes no such frame (an older version).
    pub async fn timestamps(&self, peer: Peer<'_>, count: u32) -> Result<Range<u64>, NodeError> {
        if let Some(answer) = self.timestamps_framed(peer, count).await? {
            return answer_range(peer, answer, count);
        }
        let channel = self
            .transport
            .channel(peer.addr)
            .map_err(|err| peer.failed(err))?;
        let answer = v1::tso_client::TsoClient::new(channel)
            .get_timestamps(self.request(v1::GetTimestampsRequest { count }, self.rpc_timeout))
            .await
            .map_err(|status| match metadata::leader_hint(&status) {
                // Not the leader after all: say who is, so the caller can follow.
                Some(hint) => NodeError::NotLeader {
                    group: GroupId::System,
                    leader: hint.leader_id.zip(hint.leader_addr),
                    proposed: false,
                },
                None => peer.status_failed(&status),
            })?
            .into_inner();
        if answer.count != count {
            return Err(peer.failed(format!(
                "answered {} timestamps from {} for {count}",
                answer.count, answer.first
            )));
        }
        answer_range(peer, Forwarded::Issued { first: answer.first }, count)
    }

    /// Timestamps asked for as a frame on the peer's `Raft.Pipeline` stream, among the Raft
    /// messages to it: no HTTP/2 stream, headers or task of its own. `None`: the peer takes
    /// no such frame (or no pipeline at all); ask it unary.
    async fn timestamps_framed(&self, peer: Peer<'_>, count: u32) -> Result<Option<Forwarded>, NodeError> {
        let Some(pipeline) = self
            .transport
            .pipeline(peer.addr)
            .map_err(|err| peer.failed(err))?
        else {
            return Ok(None);
        };
        let payload = postcard::to_allocvec(&count).map_err(|err| peer.failed(err))?;
        let mut message = envelope(
            self.transport.cluster_id(),
            GroupId::System,
            self.transport.node_id(),
            payload,
        );
        message.to_node = peer.node;
        let call = tokio::time::timeout(self.rpc_timeout, pipeline.call(RaftRpc::Timestamps, message));
        let reply = match call.await {
            Err(_elapsed) => {
                return Err(peer.failed(format!(
                    "no timestamps within {} ms",
                    self.rpc_timeout.as_millis()
                )))
            }
            Ok(Ok(reply)) => reply,
            // A peer without pipelines, or with one that does not know this frame.
            Ok(Err(status))
                if status.code() == Code::Unimplemented
                    || (status.code() == Code::InvalidArgument
                        && status.message().contains("unknown kind")) =>
            {
                return Ok(None)
            }
            Ok(Err(status)) => return Err(peer.status_failed(&status)),
        };
        postcard::from_bytes(&reply.payload).map(Some).map_err(|err| {
            peer.failed(format!(
                "an undecodable answer to a request for timestamps: {err}"
            ))
        })
    }

    /// `peer`'s status.
    pub async fn status(&self, peer: Peer<'_>) -> Result<v1::NodeStatusResponse, NodeError> {
        self.admin(peer)?
            .node_status(self.request(v1::NodeStatusRequest::default(), self.rpc_timeout))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| peer.status_failed(&status))
    }

    /// What the group's membership is, as `peer` (the shard's leader, we hope) sees it.
    pub async fn group_membership(
        &self,
        peer: Peer<'_>,
        shard: u32,
        from_node: NodeId,
    ) -> Result<v1::GroupMembershipResponse, NodeError> {
        let request = v1::GroupMembershipRequest {
            cluster_id: self.transport.cluster_id(),
            shard_id: shard,
            from_node,
        };
        self.raft(peer)?
            .group_membership(self.request(request, self.rpc_timeout))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| peer.status_failed(&status))
    }

    /// Commits `command` in the system group through its leader `peer`, waiting at most
    /// `timeout` (a write's deadline).
    pub async fn propose_system(
        &self,
        peer: Peer<'_>,
        from_node: NodeId,
        command: &Command,
        timeout: Duration,
    ) -> Result<CommandResult, NodeError> {
        let payload = postcard::to_allocvec(command).map_err(|err| peer.failed(err))?;
        let message = envelope(self.transport.cluster_id(), GroupId::System, from_node, payload);
        let reply = self
            .raft(peer)?
            .propose_system(self.request(message, timeout))
            .await
            .map_err(|status| peer.status_failed(&status))?;
        let outcome: Result<CommandResult, String> =
            postcard::from_bytes(&reply.into_inner().payload).map_err(|err| peer.failed(err))?;
        outcome.map_err(|detail| peer.failed(detail))
    }
}
