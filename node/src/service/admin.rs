//! `Admin` on a node: bootstrap, this node's status, ring changes, leader transfer and the
//! permission table. Cluster-wide status is a router's job.
//!
//! Everything but `NodeStatus` (without its key counts) needs admin on the cluster (issue 15; see `authz.rs`):
//! init, node add and decommission, leader transfer, changing and reading the permissions.

use std::sync::Arc;

use ringkv_proto::v1::{self, admin_server::Admin};
use tonic::{Request, Response, Status};

use super::authz::{self, Authorizer};
use super::credentials::PasswordHasher;
use super::status;
use crate::node::Node;
use crate::tso::Oracle;

pub struct AdminService {
    node: Node,
    oracle: Arc<Oracle>,
    auth: Authorizer,
    hasher: PasswordHasher,
}

impl AdminService {
    pub fn new(node: Node, oracle: Arc<Oracle>, hasher: PasswordHasher) -> AdminService {
        let auth = Authorizer::new(&node);
        AdminService {
            node,
            oracle,
            auth,
            hasher,
        }
    }

    /// Refuses the call unless its caller holds admin on the cluster.
    fn check_admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.auth
            .check(
                request,
                &[(ringkv_authz::Permission::Admin, ringkv_authz::Access::Cluster)],
            )
            .map_err(|err| status(err, false))
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn init_cluster(
        &self,
        request: Request<v1::InitClusterRequest>,
    ) -> Result<Response<v1::InitClusterResponse>, Status> {
        self.check_admin(&request)?;
        self.node
            .init_cluster(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|err| status(err, false))
    }

    async fn node_status(
        &self,
        request: Request<v1::NodeStatusRequest>,
    ) -> Result<Response<v1::NodeStatusResponse>, Status> {
        let count_keys = request.get_ref().count_keys;
        // Counting reads every replica's keys: admin only, like the other calls that reach
        // past this node's own state.
        if count_keys {
            self.check_admin(&request)?;
        }
        let mut status = self.node.status();
        if count_keys {
            self.node
                .count_status_keys(&mut status.replicas)
                .await
                .map_err(|err| super::status(err, false))?;
        }
        let tso = self.oracle.counters();
        status.tso = Some(v1::TsoCounters {
            requests: tso.requests,
            batches: tso.batches,
            advances: tso.advances,
            forwarded: tso.forwarded,
            framed: tso.framed,
        });
        Ok(Response::new(status))
    }

    async fn add_node(
        &self,
        request: Request<v1::AddNodeRequest>,
    ) -> Result<Response<v1::RingChangeResponse>, Status> {
        self.check_admin(&request)?;
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
        self.check_admin(&request)?;
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
        self.check_admin(&request)?;
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

    async fn change_auth(
        &self,
        request: Request<v1::ChangeAuthRequest>,
    ) -> Result<Response<v1::ChangeAuthResponse>, Status> {
        self.check_admin(&request)?;
        let change = authz::change_from_proto(request.get_ref().clone(), &self.hasher)
            .await
            .map_err(|err| status(err, false))?;
        let table = authz::change_auth(&self.node, change)
            .await
            .map_err(|err| status(err, false))?;
        Ok(Response::new(v1::ChangeAuthResponse {
            table: Some(authz::table_to_proto(&table)),
            token_key: authz::token_key_for(&request, &table),
        }))
    }

    async fn get_auth(
        &self,
        request: Request<v1::GetAuthRequest>,
    ) -> Result<Response<v1::GetAuthResponse>, Status> {
        self.check_admin(&request)?;
        let table = self.auth.table();
        Ok(Response::new(v1::GetAuthResponse {
            table: Some(authz::table_to_proto(&table)),
            caller: Authorizer::user_of(&request),
            token_key: authz::token_key_for(&request, &table),
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

    async fn hold_history(
        &self,
        request: Request<v1::HoldHistoryRequest>,
    ) -> Result<Response<v1::HoldHistoryResponse>, Status> {
        self.check_admin(&request)?;
        let request = request.into_inner();
        self.node
            .history_budget()
            .hold(
                request.hold_id,
                request.read_ts,
                std::time::Duration::from_millis(request.ttl_ms),
            )
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        Ok(Response::new(v1::HoldHistoryResponse { nodes: 1 }))
    }
}
