//! The `ringkv.v1.Admin` service on a router: `ClusterStatus` asks every ring member for
//! its `NodeStatus` in parallel (each bounded by `rpc_timeout_ms`, at most `max_fanout` at
//! once) and merges the answers (`cluster_status.rs`). `InitCluster` and `NodeStatus` are
//! node rpcs: the router answers UNIMPLEMENTED saying where to send them.

use std::sync::Arc;

use futures::stream::{self, StreamExt};
use ringkv_proto::v1::admin_server::Admin;
use ringkv_proto::v1::{
    ClusterStatusRequest, ClusterStatusResponse, InitClusterRequest, InitClusterResponse, NodeStatusRequest,
    NodeStatusResponse,
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::debug;

use crate::cluster_status::{build_cluster_status, NodeProbe};
use crate::context::RouterContext;
use crate::error::{to_status, RouterError};
use crate::node_api::NodeApi;

/// The router's admin service.
pub struct AdminService<N> {
    ctx: Arc<RouterContext<N>>,
}

impl<N: NodeApi> AdminService<N> {
    pub fn new(ctx: Arc<RouterContext<N>>) -> Self {
        AdminService { ctx }
    }

    async fn handle_cluster_status(&self, deadline: Instant) -> Result<ClusterStatusResponse, RouterError> {
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
        Ok(build_cluster_status(&view, &probes))
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
        Err(to_status(&RouterError::Unimplemented(
            "NodeStatus is served by storage nodes, not routers: send it to a node's address \
             (or ask the router for ClusterStatus)",
        )))
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
