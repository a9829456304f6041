//! `Tso` on a router: timestamps from the system group's leader, concurrent requests
//! coalesced into one call (see `tso.rs`).

use std::sync::Arc;

use ringkv_proto::v1::tso_server::Tso;
use ringkv_proto::v1::{GetTimestampsRequest, GetTimestampsResponse};
use tonic::{Request, Response, Status};

use crate::context::RouterContext;
use crate::error::to_status;
use crate::node_api::NodeApi;
use crate::tso::TsoClient;

pub struct TsoService<N> {
    ctx: Arc<RouterContext<N>>,
    client: Arc<TsoClient>,
}

impl<N> TsoService<N> {
    pub fn new(ctx: Arc<RouterContext<N>>, client: Arc<TsoClient>) -> Self {
        TsoService { ctx, client }
    }
}

#[tonic::async_trait]
impl<N: NodeApi> Tso for TsoService<N> {
    async fn get_timestamps(
        &self,
        request: Request<GetTimestampsRequest>,
    ) -> Result<Response<GetTimestampsResponse>, Status> {
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        let count = request.into_inner().count.max(1);
        let range = self
            .client
            .timestamps(count, admission.deadline)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(GetTimestampsResponse {
            first: range.start,
            count,
        }))
    }
}
