//! The `ringkv.v1.Admin` service on a router: `ClusterStatus` asks every ring member for
//! its `NodeStatus` in parallel (each bounded by `rpc_timeout_ms`, at most `max_fanout` at
//! once) and merges the answers (`cluster_status.rs`); `RebalanceStatus` does the same and
//! compares shard voters with placement, `PlanRingChange` evaluates a change on the ring
//! (`rebalance.rs`). `AddNode` and `DecommissionNode` go to a ring member, which forwards
//! them to the system leader. `InitCluster` is a node rpc: the router answers
//! UNIMPLEMENTED saying where to send it. `NodeStatus` answers for the router itself
//! (`process_role` "router": address, version, metrics address; no replicas, no ring).

use std::sync::Arc;

use futures::stream::{self, StreamExt};
use ringkv_proto::v1::admin_server::Admin;
use ringkv_proto::v1::{
    AddNodeRequest, ClusterStatusRequest, ClusterStatusResponse, DecommissionNodeRequest, InitClusterRequest,
    InitClusterResponse, MemberState, NodeStatusRequest, NodeStatusResponse, PlanRingChangeRequest,
    PlanRingChangeResponse, RebalanceStatusRequest, RebalanceStatusResponse, RingChangeResponse,
    TransferLeaderRequest, TransferLeaderResponse,
};
use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};
use tracing::debug;

use crate::cluster_status::{build_cluster_status, NodeProbe};
use crate::context::RouterContext;
use crate::error::{to_status, RouterError};
use crate::node_api::{NodeApi, RingChangeRequest};
use crate::rebalance;
use crate::topology::RingView;

/// Leaders a transfer is sent to before giving up (the leader may move meanwhile).
const TRANSFER_ATTEMPTS: usize = 3;

/// The router's admin service.
pub struct AdminService<N> {
    ctx: Arc<RouterContext<N>>,
    /// What `NodeStatus` answers about this router.
    itself: NodeStatusResponse,
}

impl<N: NodeApi> AdminService<N> {
    pub fn new(ctx: Arc<RouterContext<N>>) -> Self {
        let itself = NodeStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            process_role: "router".to_string(),
            ..NodeStatusResponse::default()
        };
        AdminService { ctx, itself }
    }

    /// `NodeStatus` reports this router at `addr`, with its metrics endpoint if it has one.
    pub fn reporting(
        mut self,
        addr: std::net::SocketAddr,
        metrics_addr: Option<std::net::SocketAddr>,
    ) -> Self {
        self.itself.addr = addr.to_string();
        self.itself.metrics_addr = metrics_addr.map(|addr| addr.to_string()).unwrap_or_default();
        self
    }

    async fn handle_cluster_status(&self, deadline: Instant) -> Result<ClusterStatusResponse, RouterError> {
        let (view, probes) = self.probe_members(deadline).await?;
        let mut status = build_cluster_status(&view, &probes);
        for node in &mut status.nodes {
            match self.ctx.gossip.get(node.node_id) {
                Some(seen) => {
                    node.liveness = seen.liveness.to_string();
                    node.last_heard_ms = seen.last_heard.map(|ago| ago.as_millis() as u64);
                }
                None => node.liveness = "unknown".to_string(),
            }
        }
        Ok(status)
    }

    async fn handle_rebalance_status(
        &self,
        deadline: Instant,
    ) -> Result<RebalanceStatusResponse, RouterError> {
        let (view, probes) = self.probe_members(deadline).await?;
        let statuses: Vec<NodeStatusResponse> = probes
            .into_iter()
            .filter_map(|probe| {
                probe
                    .answer
                    .ok()
                    .filter(|status| status.node_id == probe.member.node_id)
            })
            .collect();
        // Nodes may have applied a newer ring than the router's cache: judge by the newest.
        let newest = statuses
            .iter()
            .filter_map(|status| status.ring.as_ref())
            .filter(|ring| ring.cluster_id == view.info.cluster_id)
            .max_by_key(|ring| ring.epoch)
            .filter(|ring| ring.epoch > view.info.epoch)
            .cloned()
            .unwrap_or_else(|| view.info.clone());
        rebalance::rebalance_status(&newest, &statuses)
    }

    /// Sends a ring change to ring members in turn until one answers (it forwards the
    /// change to the system leader); a definite refusal is returned at once, with the node's
    /// code (`FAILED_PRECONDITION` for a member that lost its data and must be added under a
    /// new id; `INVALID_ARGUMENT` for a refused change).
    async fn handle_ring_change(
        &self,
        change: RingChangeRequest,
        deadline: Instant,
    ) -> Result<RingChangeResponse, Status> {
        let view = self
            .ctx
            .topology
            .wait_for_ring(deadline)
            .await
            .map_err(|err| to_status(&err))?;
        let mut last_error = String::from("no ring member to ask");
        for member in view
            .info
            .members
            .iter()
            .filter(|m| matches!(m.state(), MemberState::Active | MemberState::Joining))
        {
            let timeout = deadline.saturating_duration_since(Instant::now());
            if timeout.is_zero() {
                break;
            }
            match self
                .ctx
                .nodes
                .change_ring(&member.addr, change.clone(), timeout)
                .await
            {
                Ok(response) => {
                    self.ctx.topology.request_refresh();
                    return Ok(response);
                }
                Err(status) if status.code() == Code::FailedPrecondition => {
                    return Err(Status::failed_precondition(status.message()));
                }
                Err(status) if matches!(status.code(), Code::InvalidArgument | Code::AlreadyExists) => {
                    return Err(to_status(&RouterError::InvalidArgument(
                        status.message().to_string(),
                    )));
                }
                Err(status) => {
                    debug!(addr = %member.addr, code = ?status.code(), "ring change not taken; trying another member");
                    last_error = format!("node {}: {}", member.node_id, status.message());
                }
            }
        }
        Err(to_status(&RouterError::Unavailable(format!(
            "no node took the ring change: {last_error}"
        ))))
    }

    /// Sends a leader transfer to the shard's leader; a node that is no longer the leader
    /// is skipped (after a refresh) up to a few times, a definite refusal returns at once.
    /// Asks ring members in turn until one answers; a refusal (a bad argument, a refused
    /// change, a denied permission, a refused login) is the answer.
    pub(crate) async fn ask_members<T, F, Fut>(&self, deadline: Instant, call: F) -> Result<T, Status>
    where
        F: Fn(String, std::time::Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        self.ask_members_until(deadline, |_| false, call).await
    }

    /// As [`AdminService::ask_members`], and a status for which `also_final` holds is the
    /// answer too (a throttled login: another member would refuse it as well).
    pub(crate) async fn ask_members_until<T, F, Fut>(
        &self,
        deadline: Instant,
        also_final: impl Fn(&Status) -> bool,
        call: F,
    ) -> Result<T, Status>
    where
        F: Fn(String, std::time::Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let view = self
            .ctx
            .topology
            .wait_for_ring(deadline)
            .await
            .map_err(|err| to_status(&err))?;
        let mut last_error = Status::unavailable("no ring member to ask");
        for member in &view.info.members {
            let timeout = deadline.saturating_duration_since(Instant::now());
            if timeout.is_zero() {
                break;
            }
            match call(member.addr.clone(), timeout).await {
                Ok(answer) => return Ok(answer),
                Err(status)
                    if matches!(
                        status.code(),
                        Code::InvalidArgument
                            | Code::FailedPrecondition
                            | Code::PermissionDenied
                            | Code::Unauthenticated
                    ) || also_final(&status) =>
                {
                    return Err(status)
                }
                Err(status) => {
                    debug!(addr = %member.addr, code = ?status.code(), "not answered; trying another member");
                    last_error = status;
                }
            }
        }
        Err(last_error)
    }

    async fn handle_transfer_leader(
        &self,
        request: TransferLeaderRequest,
        deadline: Instant,
    ) -> Result<TransferLeaderResponse, RouterError> {
        let view = self.ctx.topology.wait_for_ring(deadline).await?;
        let shards = view.ring.shard_count();
        if request.shard_id >= shards {
            return Err(RouterError::InvalidArgument(format!(
                "shard {} does not exist (the cluster has {shards} shards)",
                request.shard_id
            )));
        }
        if view.ring.member(request.to_node).is_none() {
            return Err(RouterError::InvalidArgument(format!(
                "node {} is not a ring member",
                request.to_node
            )));
        }
        let shard = ringkv_ring::ShardId(request.shard_id);
        let mut last_error = String::from("no leader known");
        for attempt in 0..TRANSFER_ATTEMPTS {
            let timeout = deadline.saturating_duration_since(Instant::now());
            if timeout.is_zero() {
                break;
            }
            let target = self
                .ctx
                .topology
                .route(shard, shards, crate::topology::RouteMode::Leader, attempt)
                .map_err(|err| RouterError::Unavailable(err.to_string()))?;
            match self
                .ctx
                .nodes
                .transfer_leader(&target.addr, request, timeout)
                .await
            {
                Ok(response) => {
                    self.ctx.topology.update_leader(shard, response.leader_id, None);
                    return Ok(response);
                }
                Err(status) if matches!(status.code(), Code::InvalidArgument | Code::FailedPrecondition) => {
                    return Err(RouterError::InvalidArgument(status.message().to_string()));
                }
                Err(status) => {
                    debug!(addr = %target.addr, code = ?status.code(), "leader transfer not taken; trying again");
                    last_error = status.message().to_string();
                    if let Some(node_id) = target.node_id {
                        self.ctx.topology.invalidate(shard, node_id);
                    }
                    self.ctx.topology.request_refresh();
                }
            }
        }
        Err(RouterError::Unavailable(format!(
            "leader transfer of shard {} did not happen: {last_error}",
            request.shard_id
        )))
    }

    async fn probe_members(&self, deadline: Instant) -> Result<(Arc<RingView>, Vec<NodeProbe>), RouterError> {
        let view = self.ctx.topology.wait_for_ring(deadline).await?;
        let nodes = &self.ctx.nodes;
        let rpc_timeout = self.ctx.rpc_timeout;
        let mut probes: Vec<NodeProbe> = stream::iter(view.info.members.iter().cloned())
            .map(|member| async move {
                let timeout = rpc_timeout.min(deadline.saturating_duration_since(Instant::now()));
                let answer =
                    match tokio::time::timeout(timeout, nodes.node_status(&member.addr, timeout)).await {
                        Ok(Ok(status)) => Ok(status),
                        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
                        Err(_elapsed) => Err(format!("no answer within {} ms", timeout.as_millis())),
                    };
                NodeProbe { member, answer }
            })
            .buffer_unordered(self.ctx.max_fanout)
            .collect()
            .await;
        probes.sort_by_key(|probe| probe.member.node_id);
        Ok((view, probes))
    }
}

#[tonic::async_trait]
impl<N: NodeApi> Admin for AdminService<N> {
    async fn init_cluster(
        &self,
        _request: Request<InitClusterRequest>,
    ) -> Result<Response<InitClusterResponse>, Status> {
        Err(to_status(&RouterError::Unimplemented(
            "InitCluster is served by storage nodes, not routers: send it to a node's address",
        )))
    }

    async fn node_status(
        &self,
        _request: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusResponse>, Status> {
        Ok(Response::new(self.itself.clone()))
    }

    async fn add_node(
        &self,
        request: Request<AddNodeRequest>,
    ) -> Result<Response<RingChangeResponse>, Status> {
        self.ctx.auth.authorize_admin()?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        let request = request.into_inner();
        if request.node_id == 0 || request.addr.is_empty() {
            return Err(to_status(&RouterError::InvalidArgument(
                "add node needs a non-zero node id and the node's host:port".to_string(),
            )));
        }
        self.handle_ring_change(RingChangeRequest::Add(request), admission.deadline)
            .await
            .map(Response::new)
    }

    async fn decommission_node(
        &self,
        request: Request<DecommissionNodeRequest>,
    ) -> Result<Response<RingChangeResponse>, Status> {
        self.ctx.auth.authorize_admin()?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        self.handle_ring_change(
            RingChangeRequest::Decommission(request.into_inner()),
            admission.deadline,
        )
        .await
        .map(Response::new)
    }

    async fn hold_history(
        &self,
        request: Request<ringkv_proto::v1::HoldHistoryRequest>,
    ) -> Result<Response<ringkv_proto::v1::HoldHistoryResponse>, Status> {
        self.ctx.auth.authorize_admin()?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        crate::history_hold::hold_on_every_node(&self.ctx, request.into_inner(), admission.deadline)
            .await
            .map(Response::new)
            .map_err(|err| to_status(&err))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        self.ctx.auth.authorize_admin()?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        self.handle_transfer_leader(request.into_inner(), admission.deadline)
            .await
            .map(Response::new)
            .map_err(|err| to_status(&err))
    }

    /// Forwarded to a ring member with the caller's user (`x-ringkv-user`); the node checks
    /// admin again and commits the change.
    async fn change_auth(
        &self,
        request: Request<ringkv_proto::v1::ChangeAuthRequest>,
    ) -> Result<Response<ringkv_proto::v1::ChangeAuthResponse>, Status> {
        self.ctx.auth.authorize_admin()?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        let change = request.into_inner();
        let mut response = self
            .ask_members(admission.deadline, |addr, timeout| {
                let change = change.clone();
                async move { self.ctx.nodes.change_auth(&addr, change, timeout).await }
            })
            .await?;
        self.ctx
            .auth
            .learn(response.table.clone(), response.token_key.take());
        Ok(Response::new(response))
    }

    async fn get_auth(
        &self,
        request: Request<ringkv_proto::v1::GetAuthRequest>,
    ) -> Result<Response<ringkv_proto::v1::GetAuthResponse>, Status> {
        self.ctx.auth.authorize_admin()?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        let mut response = self
            .ask_members(admission.deadline, |addr, timeout| async move {
                self.ctx.nodes.get_auth(&addr, timeout).await
            })
            .await?;
        // The token key is for routers; never for a client.
        response.token_key = None;
        Ok(Response::new(response))
    }

    async fn plan_ring_change(
        &self,
        request: Request<PlanRingChangeRequest>,
    ) -> Result<Response<PlanRingChangeResponse>, Status> {
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        let Some(change) = request.into_inner().change else {
            return Err(to_status(&RouterError::InvalidArgument(
                "say which change to plan: add, decommission or dead".to_string(),
            )));
        };
        let view = self
            .ctx
            .topology
            .wait_for_ring(admission.deadline)
            .await
            .map_err(|err| to_status(&err))?;
        rebalance::plan(&view.info, &change)
            .map(Response::new)
            .map_err(|err| to_status(&err))
    }

    async fn rebalance_status(
        &self,
        request: Request<RebalanceStatusRequest>,
    ) -> Result<Response<RebalanceStatusResponse>, Status> {
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        self.handle_rebalance_status(admission.deadline)
            .await
            .map(Response::new)
            .map_err(|err| to_status(&err))
    }

    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        match self.handle_cluster_status(admission.deadline).await {
            Ok(response) => Ok(Response::new(response)),
            Err(err) => {
                debug!(%err, "cluster status failed");
                Err(to_status(&err))
            }
        }
    }
}
