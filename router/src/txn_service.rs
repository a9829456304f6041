//! `Txn` on a router: transaction commits coordinated here (see `txn.rs`), and the status
//! of a transaction whose commit ended with "outcome unknown".

use std::sync::Arc;

use ringkv_proto::v1::txn_server::Txn;
use ringkv_proto::v1::{TxnCommitRequest, TxnCommitResponse, TxnStatusRequest, TxnStatusResponse};
use tonic::{Request, Response, Status};

use crate::context::RouterContext;
use crate::error::to_status;
use crate::node_api::NodeApi;
use crate::tso::TsoClient;
use crate::txn;

pub struct TxnService<N> {
    ctx: Arc<RouterContext<N>>,
    tso: Arc<TsoClient>,
}

impl<N> TxnService<N> {
    pub fn new(ctx: Arc<RouterContext<N>>, tso: Arc<TsoClient>) -> Self {
        TxnService { ctx, tso }
    }
}

#[tonic::async_trait]
impl<N: NodeApi> Txn for TxnService<N> {
    async fn commit(
        &self,
        request: Request<TxnCommitRequest>,
    ) -> Result<Response<TxnCommitResponse>, Status> {
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        txn::commit(&self.ctx, &self.tso, request.into_inner(), admission.deadline)
            .await
            .map(Response::new)
            .map_err(|e| to_status(&e))
    }

    async fn status(
        &self,
        request: Request<TxnStatusRequest>,
    ) -> Result<Response<TxnStatusResponse>, Status> {
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        txn::status(&self.ctx, request.into_inner(), admission.deadline)
            .await
            .map(Response::new)
            .map_err(|e| to_status(&e))
    }
}
