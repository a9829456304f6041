//! `Raft`: the multi-raft transport. Each message names its cluster and group; the
//! payload is the postcard-encoded openraft request, the reply the encoded `Result`.

use openraft::error::RaftError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest, VoteResponse,
};
use ringkv_proto::v1::{self, raft_server::Raft as RaftRpc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::debug;

use super::{raft_pipeline, status};
use crate::error::NodeError;
use crate::group::Group;
use crate::node::Node;
use crate::peers::Forwarded;
use crate::raft::types::{Command, CommandResult, GroupId, NodeId, TypeConfig, Vote};
use crate::rebalance::MembershipView;
use crate::tso::Oracle;
use std::cmp::Ordering;
use std::sync::Arc;

#[derive(Clone)]
pub struct RaftService {
    node: Node,
    /// Answers other nodes' requests for timestamps (pipeline frames).
    oracle: Arc<Oracle>,
    /// Cancelled when the server shuts down: pipeline streams end then (a graceful
    /// shutdown waits for every stream, and a peer never ends its pipeline).
    stopping: CancellationToken,
}

impl RaftService {
    pub fn new(node: Node, oracle: Arc<Oracle>, stopping: CancellationToken) -> RaftService {
        RaftService {
            node,
            oracle,
            stopping,
        }
    }

    /// Cancelled when the server shuts down.
    pub(super) fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// `AppendEntries`, unary or a pipeline frame.
    pub(super) async fn append(&self, message: v1::RaftMessage) -> Result<v1::RaftReply, Status> {
        let group = self.group(&message)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&message.payload)?;
        check_append_entries(rpc.entries.len())?;
        reply(&group.raft.append_entries(rpc).await)
    }

    /// `ConfirmLeadership`, unary or a pipeline frame.
    pub(super) fn confirm(&self, message: v1::RaftMessage) -> Result<v1::RaftReply, Status> {
        let group = self.group(&message)?;
        let leader: Vote = decode(&message.payload)?;
        let promised = self
            .node
            .promised_vote(group.id)
            .map_err(|err| status(err, false))?;
        let answer: Result<_, RaftError<NodeId>> = Ok(confirmation(&leader, promised));
        reply(&answer)
    }

    /// Timestamps for another node (a pipeline frame only: `Tso.GetTimestamps` is the
    /// unary way), answered as that RPC would, "not the leader" with the leader's hint.
    pub(super) async fn timestamps(&self, message: v1::RaftMessage) -> Result<v1::RaftReply, Status> {
        self.addressed_here(&message)?;
        let count: u32 = decode(&message.payload)?;
        let answer = self.oracle.timestamps_for_peer(count).await;
        let forwarded = Forwarded::of(answer).map_err(|err| status(err, false))?;
        let payload = postcard::to_allocvec(&forwarded)
            .map_err(|err| Status::internal(format!("cannot encode timestamps: {err}")))?;
        Ok(v1::RaftReply { payload })
    }

    /// `Vote`, unary or a pipeline frame.
    pub(super) async fn answer_vote(&self, message: v1::RaftMessage) -> Result<v1::RaftReply, Status> {
        let group = self.group(&message)?;
        let rpc: VoteRequest<NodeId> = decode(&message.payload)?;
        // A replica re-created here keeps its deleted predecessor's promises.
        let tombstone = self
            .node
            .group_tombstone(group.id)
            .map_err(|err| status(err, false))?;
        if let Some(reason) = tombstone.refuses(&rpc.vote, rpc.last_log_id) {
            debug!(group = %group.id, candidate = %rpc.vote, %reason, "vote refused");
            let current = group.raft.metrics().borrow().vote;
            let refused: Result<VoteResponse<NodeId>, RaftError<NodeId>> = Ok(VoteResponse {
                vote: current,
                vote_granted: false,
                last_log_id: tombstone.last_log_id,
            });
            return reply(&refused);
        }
        reply(&group.raft.vote(rpc).await)
    }

    fn group(&self, message: &v1::RaftMessage) -> Result<Arc<Group>, Status> {
        self.addressed_here(message)?;
        let group_id = if message.system {
            GroupId::System
        } else {
            GroupId::Shard(message.shard_id)
        };
        self.node
            .group(group_id)
            .ok_or_else(|| status(NodeError::ShardNotHosted(message.shard_id), false))
    }
}

impl RaftService {
    /// Refuses a message of another cluster, or one meant for another node id.
    fn addressed_here(&self, message: &v1::RaftMessage) -> Result<(), Status> {
        self.node
            .check_cluster(&message.cluster_id)
            .map_err(|err| status(err, false))?;
        if message.to_node != 0 && message.to_node != self.node.node_id() {
            return Err(status(
                NodeError::WrongNode {
                    meant_for: message.to_node,
                    reached: self.node.node_id(),
                },
                false,
            ));
        }
        Ok(())
    }
}

/// Most entries one `AppendEntries` may carry. Far above what a leader sends (openraft's
/// `max_payload_entries`, 300 by default, within the 1 MiB replication batch), it bounds the
/// work one append hands to the Raft core and the log; the message's bytes (and so what
/// decoding it costs) are bounded by `max_message_bytes`.
pub const MAX_APPEND_ENTRIES: usize = 65_536;

/// Refuses an append of more than [`MAX_APPEND_ENTRIES`] entries.
fn check_append_entries(entries: usize) -> Result<(), Status> {
    if entries > MAX_APPEND_ENTRIES {
        return Err(status(
            NodeError::InvalidArgument(format!(
                "an append carries {entries} entries, more than MAX_APPEND_ENTRIES = {MAX_APPEND_ENTRIES}"
            )),
            false,
        ));
    }
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(payload).map_err(|err| {
        let malformed = NodeError::Malformed {
            what: "raft payload",
            detail: err.to_string(),
        };
        status(malformed, false)
    })
}

fn reply<T: Serialize>(value: &T) -> Result<v1::RaftReply, Status> {
    let payload = postcard::to_allocvec(value).map_err(|err| {
        let encode = NodeError::Encode {
            what: "raft reply",
            detail: err.to_string(),
        };
        status(encode, false)
    })?;
    Ok(v1::RaftReply { payload })
}

/// The answer to a leadership confirmation from `leader`, given the highest vote this
/// replica has `promised`: the same vote check an AppendEntries passes through in the Raft
/// core (a vote at least as high as every vote saved here is accepted), without waiting for
/// the core. Only a `HigherVote` answer denies the leadership.
fn confirmation(leader: &Vote, promised: Option<Vote>) -> AppendEntriesResponse<NodeId> {
    match promised {
        Some(promised) if leader.partial_cmp(&promised).is_none_or(Ordering::is_lt) => {
            AppendEntriesResponse::HigherVote(promised)
        }
        _ => AppendEntriesResponse::Success,
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<v1::RaftMessage>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        self.append(request.into_inner()).await.map(Response::new)
    }

    async fn confirm_leadership(
        &self,
        request: Request<v1::RaftMessage>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        self.confirm(request.into_inner()).map(Response::new)
    }

    async fn vote(&self, request: Request<v1::RaftMessage>) -> Result<Response<v1::RaftReply>, Status> {
        self.answer_vote(request.into_inner()).await.map(Response::new)
    }

    type PipelineStream = raft_pipeline::Replies;

    async fn pipeline(
        &self,
        request: Request<tonic::Streaming<v1::RaftFrames>>,
    ) -> Result<Response<Self::PipelineStream>, Status> {
        Ok(Response::new(raft_pipeline::serve(
            self.clone(),
            request.into_inner(),
        )))
    }
    async fn install_snapshot(
        &self,
        request: Request<v1::RaftMessage>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        let message = request.into_inner();
        let group = self.group(&message)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(&message.payload)?;
        let progress = self.node.snapshot_progress();
        progress.receiving_chunk(group.id, rpc.data.len());
        let last = rpc.done;
        let answer = group.raft.install_snapshot(rpc).await;
        progress.chunk_received(group.id, last, answer.is_ok());
        reply(&answer).map(Response::new)
    }

    async fn join_cluster(
        &self,
        request: Request<v1::JoinClusterRequest>,
    ) -> Result<Response<v1::JoinClusterResponse>, Status> {
        let request = request.into_inner();
        if request.node_id != self.node.node_id() {
            let wrong = NodeError::WrongNode {
                meant_for: request.node_id,
                reached: self.node.node_id(),
            };
            return Err(status(wrong, false));
        }
        if request.probe {
            let standing = self.node.standing();
            return Ok(Response::new(v1::JoinClusterResponse {
                cluster_id: standing.cluster_id.unwrap_or_default(),
                initialized: standing.initialized,
                system_group_started: standing.system_group_started,
            }));
        }
        self.node
            .join_cluster(&request.cluster_id)
            .map_err(|err| status(err, false))?;
        Ok(Response::new(v1::JoinClusterResponse::default()))
    }

    async fn campaign(
        &self,
        request: Request<v1::CampaignRequest>,
    ) -> Result<Response<v1::CampaignResponse>, Status> {
        let request = request.into_inner();
        self.node
            .check_cluster(&request.cluster_id)
            .map_err(|err| status(err, false))?;
        if request.to_node != self.node.node_id() {
            let wrong = NodeError::WrongNode {
                meant_for: request.to_node,
                reached: self.node.node_id(),
            };
            return Err(status(wrong, false));
        }
        let group = self
            .node
            .group(GroupId::Shard(request.shard_id))
            .ok_or_else(|| status(NodeError::ShardNotHosted(request.shard_id), false))?;
        {
            let metrics = group.raft.metrics();
            let metrics = metrics.borrow();
            crate::transfer::campaign_is_current(
                &metrics,
                request.from_node,
                request.term,
                request.last_log_index,
            )
            .map_err(|refusal| status(refusal.into(), false))?;
        }
        // A sleeping follower's ticks are off; the election below does not need them, but
        // the leader it becomes does.
        group.hibernation.role_changed();
        tracing::info!(
            shard = request.shard_id,
            from = request.from_node,
            term = request.term,
            "campaigning: the leader hands over"
        );
        group
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|fatal| status(NodeError::Fatal(fatal.to_string()), false))?;
        Ok(Response::new(v1::CampaignResponse {}))
    }

    async fn group_membership(
        &self,
        request: Request<v1::GroupMembershipRequest>,
    ) -> Result<Response<v1::GroupMembershipResponse>, Status> {
        let request = request.into_inner();
        self.node
            .check_cluster(&request.cluster_id)
            .map_err(|err| status(err, false))?;
        let group = self
            .node
            .group(GroupId::Shard(request.shard_id))
            .ok_or_else(|| status(NodeError::ShardNotHosted(request.shard_id), false))?;
        let view = MembershipView::of(&group);
        if !view.leader {
            return Err(status(
                NodeError::NotLeader {
                    group: group.id,
                    leader: None,
                    proposed: false,
                },
                false,
            ));
        }
        Ok(Response::new(view.to_proto()))
    }

    async fn keep_alive(
        &self,
        request: Request<v1::KeepAliveRequest>,
    ) -> Result<Response<v1::KeepAliveResponse>, Status> {
        crate::keepalive::receive(&self.node, request.into_inner())
            .map(Response::new)
            .map_err(|err| status(err, false))
    }

    async fn propose_system(
        &self,
        request: Request<v1::RaftMessage>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        let message = request.into_inner();
        let group = self.group(&message)?;
        if group.id != GroupId::System {
            return Err(status(
                NodeError::InvalidArgument("system proposals must target the system group".to_string()),
                false,
            ));
        }
        let command: Command = decode(&message.payload)?;
        let outcome: Result<CommandResult, String> = self
            .node
            .propose(&group, command)
            .await
            .map_err(|err| err.to_string());
        reply(&outcome).map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(leader: Vote, promised: Option<Vote>) -> AppendEntriesResponse<NodeId> {
        confirmation(&leader, promised)
    }

    /// Appends up to MAX_APPEND_ENTRIES entries pass; one more is refused, naming the limit.
    #[test]
    fn appends_are_bounded_in_entries() {
        assert!(check_append_entries(0).is_ok());
        assert!(check_append_entries(MAX_APPEND_ENTRIES).is_ok());
        let refused = check_append_entries(MAX_APPEND_ENTRIES + 1).expect_err("one too many");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused
                .message()
                .contains("65537 entries, more than MAX_APPEND_ENTRIES = 65536"),
            "{}",
            refused.message()
        );
    }

    #[test]
    fn a_replica_confirms_a_leader_unless_it_saved_a_higher_vote() {
        let leader = Vote::new_committed(7, 1);
        assert_eq!(answer(leader, None), AppendEntriesResponse::Success);
        assert_eq!(answer(leader, Some(leader)), AppendEntriesResponse::Success);
        // Behind the leader (a restarted or lagging replica): nothing higher was promised.
        assert_eq!(
            answer(leader, Some(Vote::new_committed(6, 2))),
            AppendEntriesResponse::Success
        );
        assert_eq!(
            answer(leader, Some(Vote::new(7, 1))),
            AppendEntriesResponse::Success
        );
        // A vote granted to a candidate of the next term, or a newer leader, denies it.
        let candidate = Vote::new(8, 3);
        assert_eq!(
            answer(leader, Some(candidate)),
            AppendEntriesResponse::HigherVote(candidate)
        );
        let newer = Vote::new_committed(8, 3);
        assert_eq!(
            answer(leader, Some(newer)),
            AppendEntriesResponse::HigherVote(newer)
        );
    }
}
