//! `Admin` on a node: bootstrap and this node's status. Cluster-wide status is a router's job.

use std::sync::Arc;

use ringkv_proto::v1::{self, admin_server::Admin};
use tonic::{Request, Response, Status};

use super::status;
use crate::node::Node;
use crate::tso::Oracle;

pub struct AdminService {
    node: Node,
    oracle: Arc<Oracle>,
}

impl AdminService {
    pub fn new(node: Node, oracle: Arc<Oracle>) -> AdminService {
        AdminService { node, oracle }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn init_cluster(
        &self,
        request: Request<v1::InitClusterRequest>,
    ) -> Result<Response<v1::InitClusterResponse>, Status> {
        self.node
            .init_cluster(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|err| status(err, false))
    }

    async fn node_status(
        &self,
        _request: Request<v1::NodeStatusRequest>,
    ) -> Result<Response<v1::NodeStatusResponse>, Status> {
        let mut status = self.node.status();
        let tso = self.oracle.counters();
        status.tso = Some(v1::TsoCounters {
            requests: tso.requests,
            batches: tso.batches,
            advances: tso.advances,
            forwarded: tso.forwarded,
        });
        Ok(Response::new(status))
    }

    async fn add_node(
        &self,
        request: Request<v1::AddNodeRequest>,
    ) -> Result<Response<v1::RingChangeResponse>, Status> {
        let request = request.into_inner();
        self.node
            .add_node(request.node_id, request.addr)
            .await
            .map(Response::new)
            .map_err(|err| status(err, false))
    }

    async fn decommission_node(
        &self,
        request: Request<v1::DecommissionNodeRequest>,
    ) -> Result<Response<v1::RingChangeResponse>, Status> {
        self.node
            .decommission_node(request.into_inner().node_id)
            .await
            .map(Response::new)
            .map_err(|err| status(err, false))
    }

    async fn transfer_leader(
        &self,
        request: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::TransferLeaderResponse>, Status> {
        let request = request.into_inner();
        let term = self
            .node
            .transfer_leader(request.shard_id, request.to_node)
            .await
            .map_err(|err| status(err, false))?;
        Ok(Response::new(v1::TransferLeaderResponse {
            leader_id: request.to_node,
            term,
        }))
    }

    async fn plan_ring_change(
        &self,
        _request: Request<v1::PlanRingChangeRequest>,
    ) -> Result<Response<v1::PlanRingChangeResponse>, Status> {
        Err(Status::unimplemented(
            "ring change plans are served by routers; point kvctl at a router endpoint",
        ))
    }

    async fn rebalance_status(
        &self,
        _request: Request<v1::RebalanceStatusRequest>,
    ) -> Result<Response<v1::RebalanceStatusResponse>, Status> {
        Err(Status::unimplemented(
            "rebalance status is served by routers; point kvctl at a router endpoint",
        ))
    }

    async fn cluster_status(
        &self,
        _request: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        Err(Status::unimplemented(
            "cluster status is served by routers; point kvctl at a router endpoint",
        ))
    }
}
