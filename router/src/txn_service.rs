//! `Txn` on a router: transaction commits coordinated here (see `txn.rs`), the status of a
//! transaction whose commit ended with "outcome unknown", and a collection of old
//! transaction records on demand (`txn_gc.rs`), its progress streamed.

use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1::txn_gc_progress::Phase;
use ringkv_proto::v1::txn_server::Txn;
use ringkv_proto::v1::{
    TxnCommitRequest, TxnCommitResponse, TxnGcProgress, TxnGcRequest, TxnStatusRequest, TxnStatusResponse,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::context::RouterContext;
use crate::error::to_status;
use crate::node_api::NodeApi;
use crate::streams::ResponseStream;
use crate::tso::TsoClient;
use crate::{txn, txn_gc};

/// Progress messages of one `Txn.Gc` buffered for a slow reader (later ones wait).
const GC_PROGRESS_BUFFER: usize = 16;

pub struct TxnService<N> {
    ctx: Arc<RouterContext<N>>,
    tso: Arc<TsoClient>,
    /// `txn_gc_age_ms`: what `Txn.Gc` collects when the request names no age.
    gc_age: Duration,
}

impl<N> TxnService<N> {
    pub fn new(ctx: Arc<RouterContext<N>>, tso: Arc<TsoClient>, gc_age: Duration) -> Self {
        TxnService { ctx, tso, gc_age }
    }
}

#[tonic::async_trait]
impl<N: NodeApi> Txn for TxnService<N> {
    type GcStream = ResponseStream<TxnGcProgress>;

    /// Runs on its own task, which ends with the collection or when the caller goes away
    /// (its progress can no longer be sent). The task holds a stream slot, so collections
    /// running at once are bounded by `max_open_streams` with the other streams.
    async fn gc(&self, request: Request<TxnGcRequest>) -> Result<Response<Self::GcStream>, Status> {
        self.ctx.auth.authorize(&request)?;
        let admission = self
            .ctx
            .admit_stream(request.metadata())
            .map_err(|e| to_status(&e))?;
        let age = match request.into_inner().age_ms {
            0 => self.gc_age,
            ms => Duration::from_millis(ms),
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(GC_PROGRESS_BUFFER);
        let (ctx, tso) = (Arc::clone(&self.ctx), Arc::clone(&self.tso));
        tokio::spawn(async move {
            let _slot = admission.slot;
            let progress = sender.clone();
            let run = txn_gc::collect(&ctx, &tso, age, |step| {
                // A full buffer drops a step; the last one is sent below, awaited.
                if step.phase != Phase::Done as i32 {
                    let _ = progress.try_send(Ok(*step));
                }
            });
            let outcome = tokio::select! {
                () = sender.closed() => return,
                outcome = run => outcome,
            };
            let _ = sender.send(outcome.map_err(|err| to_status(&err))).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn commit(
        &self,
        request: Request<TxnCommitRequest>,
    ) -> Result<Response<TxnCommitResponse>, Status> {
        self.ctx.auth.authorize(&request)?;
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
        self.ctx.auth.authorize(&request)?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        txn::status(&self.ctx, request.into_inner(), admission.deadline)
            .await
            .map(Response::new)
            .map_err(|e| to_status(&e))
    }
}
