//! The `ringkv.v1.Kv` service: validate, find each key's shard, forward to the shard's
//! leader through the retry loop, and map the node's answer back to the client API.
//!
//! Put / Delete / CompareAndSwap become one `ShardKv.Write` op; Get one `ShardKv.Read`;
//! BatchGet / BatchPut are grouped by shard and fanned out (at most `max_fanout` at once),
//! each shard's BatchPut sub-request carrying an id derived from the batch's request id;
//! a BatchGet is read in rounds within the reply budget (`batch_get`).

use std::sync::Arc;

use futures::stream::{self, StreamExt};
use ringkv_lease::LeaseId;
use ringkv_proto::v1::kv_server::Kv;
use ringkv_proto::v1::{
    BatchGetRequest, BatchGetResponse, BatchPutRequest, BatchPutResponse, BatchWriteRequest,
    BatchWriteResponse, CompareAndSwapRequest, CompareAndSwapResponse, Consistency, CountRequest,
    CountResponse, DeleteRangeRequest, DeleteRangeResponse, DeleteRequest, DeleteResponse, ExpireRequest,
    ExpireResponse, GetRequest, GetResponse, MutationKind, MutationResult, PutRequest, PutResponse,
    ScanRequest, ScanResponse, WriteKind, WriteOp, WriteOpResult,
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::batch::{group_by_shard, match_read_results, sub_request_id, Assembly, ShardGroup};
use crate::batch_get;
use crate::context::RouterContext;
use crate::error::{to_status, RequestId, RouterError};
use crate::lease_store::RouterLeaseStore;
use crate::node_api::NodeApi;
use crate::one_key::{single, write_one};
use crate::range_ops;
use crate::streams::ResponseStream;
use crate::tso::TsoClient;
use crate::validate::{
    bad_field, check_one_expiry, check_read_ts, check_read_uncommitted, parse_consistency,
    request_id_or_random,
};

mod pipeline;

pub(crate) use pipeline::PipelineServing;

/// The client-facing key-value service.
pub struct KvService<N> {
    ctx: Arc<RouterContext<N>>,
    /// The oracle: where a watch from now takes its opening timestamp.
    tso: Arc<TsoClient>,
    /// What `Kv.Pipeline` streams need (`pipeline.rs`).
    pipeline: PipelineServing,
}

impl<N> Clone for KvService<N> {
    fn clone(&self) -> Self {
        KvService {
            ctx: Arc::clone(&self.ctx),
            tso: Arc::clone(&self.tso),
            pipeline: self.pipeline.clone(),
        }
    }
}

impl<N: NodeApi> KvService<N> {
    pub fn new(ctx: Arc<RouterContext<N>>, tso: Arc<TsoClient>) -> Self {
        KvService {
            ctx,
            tso,
            pipeline: PipelineServing::default(),
        }
    }

    /// Ends `Kv.Pipeline` streams when `serving` says so, counting their frames where it
    /// says.
    pub(crate) fn with_pipeline(mut self, serving: PipelineServing) -> Self {
        self.pipeline = serving;
        self
    }

    async fn handle_get(&self, request: GetRequest, deadline: Instant) -> Result<GetResponse, RouterError> {
        self.ctx.limits.check_key(&"key", &request.key)?;
        let consistency = parse_consistency(request.consistency)?;
        check_read_ts(consistency, request.read_ts)?;
        check_read_uncommitted(consistency, request.read_ts, request.read_uncommitted)?;
        let view = self.ctx.topology.wait_for_ring(deadline).await?;
        let shard = view.ring.shard_for_key(&request.key);
        let response = self
            .ctx
            .forwarder
            .read(
                shard,
                view.ring.shard_count(),
                vec![request.key.clone()],
                consistency,
                request.read_ts,
                request.read_uncommitted,
                deadline,
            )
            .await?;
        let result = single(
            shard,
            match_read_results(&[request.key.as_slice()], response.results),
        )?;
        Ok(GetResponse {
            found: result.found,
            value: result.value,
            version: result.version,
            expires_at_ts: result.expires_at_ts,
        })
    }

    async fn handle_put(&self, request: PutRequest, deadline: Instant) -> Result<PutResponse, RouterError> {
        self.ctx.limits.check_key(&"key", &request.key)?;
        check_one_expiry(request.ttl_ms, request.expires_at_ts)?;
        self.ctx.limits.check_value(&"value", &request.value)?;
        let request_id = request_id_or_random(&request.request_id)?;
        if request.lease != 0 {
            return self.put_with_lease(request, deadline).await;
        }
        let op = WriteOp {
            key: request.key,
            kind: WriteKind::Put as i32,
            value: request.value,
            expected_version: None,
            ttl_ms: request.ttl_ms,
            expires_at_ts: request.expires_at_ts,
            keep_value: false,
        };
        let result = self.write_one(request_id, op, deadline).await?;
        Ok(PutResponse {
            version: result.version,
        })
    }

    /// A put attached to a lease: the lease algorithm's attach (`ringkv-lease`), run by
    /// the router as the client library would.
    async fn put_with_lease(
        &self,
        request: PutRequest,
        deadline: Instant,
    ) -> Result<PutResponse, RouterError> {
        if request.ttl_ms != 0 || request.expires_at_ts != 0 {
            return Err(bad_field(
                "lease",
                "a key attached to a lease expires with it: set lease, or ttl_ms / expires_at_ts, not both"
                    .to_string(),
            ));
        }
        let store = RouterLeaseStore {
            ctx: Arc::clone(&self.ctx),
            tso: Arc::clone(&self.tso),
            deadline,
        };
        let versions = ringkv_lease::put_many_with_lease(
            &store,
            vec![(request.key, request.value)],
            LeaseId(request.lease),
        )
        .await?;
        let version = versions
            .first()
            .copied()
            .ok_or_else(|| RouterError::Internal("an attach answered no version".into()))?;
        Ok(PutResponse { version })
    }

    /// Sets (`ttl_ms` > 0) or removes a key's time to live, keeping its value.
    async fn handle_expire(
        &self,
        request: ExpireRequest,
        deadline: Instant,
    ) -> Result<ExpireResponse, RouterError> {
        self.ctx.limits.check_key(&"key", &request.key)?;
        check_one_expiry(request.ttl_ms, request.expires_at_ts)?;
        let request_id = request_id_or_random(&request.request_id)?;
        let op = WriteOp {
            key: request.key,
            kind: WriteKind::Put as i32,
            value: Vec::new(),
            expected_version: None,
            ttl_ms: request.ttl_ms,
            expires_at_ts: request.expires_at_ts,
            keep_value: true,
        };
        let result = self.write_one(request_id, op, deadline).await?;
        Ok(ExpireResponse {
            applied: result.succeeded,
            version: result.version,
        })
    }

    async fn handle_delete(
        &self,
        request: DeleteRequest,
        deadline: Instant,
    ) -> Result<DeleteResponse, RouterError> {
        self.ctx.limits.check_key(&"key", &request.key)?;
        let request_id = request_id_or_random(&request.request_id)?;
        let op = WriteOp {
            key: request.key,
            kind: WriteKind::Delete as i32,
            value: Vec::new(),
            expected_version: None,
            ttl_ms: 0,
            expires_at_ts: 0,
            keep_value: false,
        };
        let result = self.write_one(request_id, op, deadline).await?;
        Ok(DeleteResponse {
            existed: result.existed,
        })
    }

    async fn handle_compare_and_swap(
        &self,
        request: CompareAndSwapRequest,
        deadline: Instant,
    ) -> Result<CompareAndSwapResponse, RouterError> {
        self.ctx.limits.check_key(&"key", &request.key)?;
        if !request.delete {
            self.ctx.limits.check_value(&"new_value", &request.new_value)?;
        }
        check_one_expiry(request.ttl_ms, request.expires_at_ts)?;
        if request.delete && (request.ttl_ms != 0 || request.expires_at_ts != 0) {
            return Err(RouterError::InvalidArgument(
                "a time to live belongs to a put, not a delete".to_string(),
            ));
        }
        let request_id = request_id_or_random(&request.request_id)?;
        let (kind, value) = if request.delete {
            (WriteKind::Delete, Vec::new())
        } else {
            (WriteKind::Put, request.new_value)
        };
        let key = request.key.clone();
        let op = WriteOp {
            key: request.key,
            kind: kind as i32,
            value,
            expected_version: Some(request.expected_version),
            ttl_ms: request.ttl_ms,
            expires_at_ts: request.expires_at_ts,
            keep_value: false,
        };
        let result = self.write_one(request_id, op, deadline).await?;
        if !result.succeeded && result.current_found && result.current_value_omitted {
            // The node's reply left the value out (a retry answered from its de-duplication
            // record, or a value over the reply budget): the key's state as read now.
            return self.mismatch_read_back(key, deadline).await;
        }
        Ok(cas_response(result))
    }

    /// The response of a failed CAS whose current state is read after the comparison,
    /// linearizably: the version the comparison met unless the key changed since.
    async fn mismatch_read_back(
        &self,
        key: Vec<u8>,
        deadline: Instant,
    ) -> Result<CompareAndSwapResponse, RouterError> {
        let view = self.ctx.topology.wait_for_ring(deadline).await?;
        let shard = view.ring.shard_for_key(&key);
        let response = self
            .ctx
            .forwarder
            .read(
                shard,
                view.ring.shard_count(),
                vec![key.clone()],
                Consistency::Linearizable,
                0,
                false,
                deadline,
            )
            .await?;
        let current = single(shard, match_read_results(&[key.as_slice()], response.results))?;
        Ok(CompareAndSwapResponse {
            succeeded: false,
            new_version: 0,
            current_found: current.found,
            current_value: current.value,
            current_version: current.version,
        })
    }

    async fn handle_batch_get(
        &self,
        request: BatchGetRequest,
        deadline: Instant,
    ) -> Result<BatchGetResponse, RouterError> {
        batch_get::batch_get(&self.ctx, request, deadline).await
    }

    async fn handle_batch_put(
        &self,
        request: BatchPutRequest,
        deadline: Instant,
    ) -> Result<BatchPutResponse, RouterError> {
        let entries = request.entries;
        self.ctx.limits.check_batch_len("entries", entries.len())?;
        for (index, entry) in entries.iter().enumerate() {
            self.ctx
                .limits
                .check_key(&format_args!("entries[{index}].key"), &entry.key)?;
            self.ctx
                .limits
                .check_value(&format_args!("entries[{index}].value"), &entry.value)?;
        }
        let request_id = request_id_or_random(&request.request_id)?;
        let ops = entries
            .into_iter()
            .map(|entry| WriteOp {
                keep_value: false,
                ttl_ms: 0,
                expires_at_ts: 0,
                key: entry.key,
                kind: WriteKind::Put as i32,
                value: entry.value,
                expected_version: None,
            })
            .collect();
        let results = self.write_batch(request_id, ops, deadline).await?;
        Ok(BatchPutResponse {
            versions: results.iter().map(|r| r.version).collect(),
        })
    }

    async fn handle_batch_write(
        &self,
        request: BatchWriteRequest,
        deadline: Instant,
    ) -> Result<BatchWriteResponse, RouterError> {
        let mutations = request.mutations;
        self.ctx.limits.check_batch_len("mutations", mutations.len())?;
        let mut kinds = Vec::with_capacity(mutations.len());
        for (index, mutation) in mutations.iter().enumerate() {
            self.ctx
                .limits
                .check_key(&format_args!("mutations[{index}].key"), &mutation.key)?;
            let kind = MutationKind::try_from(mutation.kind).map_err(|_| {
                RouterError::InvalidArgument(format!(
                    "mutations[{index}].kind is {}, expected 0 = put or 1 = delete",
                    mutation.kind
                ))
            })?;
            match kind {
                MutationKind::Put => self
                    .ctx
                    .limits
                    .check_value(&format_args!("mutations[{index}].value"), &mutation.value)?,
                MutationKind::Delete if !mutation.value.is_empty() => {
                    return Err(RouterError::InvalidArgument(format!(
                        "mutations[{index}] is a delete and must not carry a value"
                    )));
                }
                MutationKind::Delete => {}
                MutationKind::Append => {
                    return Err(RouterError::InvalidArgument(format!(
                        "mutations[{index}] is an append, which only a transaction's commit takes"
                    )));
                }
            }
            kinds.push(kind);
        }
        let request_id = request_id_or_random(&request.request_id)?;
        let ops = mutations
            .into_iter()
            .zip(kinds)
            .map(|(mutation, kind)| WriteOp {
                keep_value: false,
                ttl_ms: 0,
                expires_at_ts: 0,
                key: mutation.key,
                kind: match kind {
                    MutationKind::Put => WriteKind::Put,
                    MutationKind::Delete | MutationKind::Append => WriteKind::Delete,
                } as i32,
                value: mutation.value,
                expected_version: None,
            })
            .collect();
        let results = self.write_batch(request_id, ops, deadline).await?;
        Ok(BatchWriteResponse {
            results: results
                .into_iter()
                .map(|r| MutationResult {
                    version: r.version,
                    existed: r.existed,
                })
                .collect(),
        })
    }

    /// Writes `ops` grouped by shard, one Raft entry per shard (at most `max_fanout` shards
    /// at once), each shard's sub-request with an id derived from `request_id`. Results
    /// come back in request order, or one error naming every failed shard.
    async fn write_batch(
        &self,
        request_id: RequestId,
        mut ops: Vec<WriteOp>,
        deadline: Instant,
    ) -> Result<Vec<WriteOpResult>, RouterError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let view = self.ctx.topology.wait_for_ring(deadline).await?;
        let shard_count = view.ring.shard_count();
        let groups = group_by_shard(&ops, |op| view.ring.shard_for_key(&op.key));
        // Move the ops into per-shard sub-requests, in request order within each shard.
        let sub_requests: Vec<(ShardGroup, Vec<WriteOp>)> = groups
            .iter()
            .map(|group| {
                let shard_ops = group
                    .indices
                    .iter()
                    .map(|i| std::mem::take(&mut ops[*i]))
                    .collect();
                (group.clone(), shard_ops)
            })
            .collect();
        let forwarder = &self.ctx.forwarder;
        let outcomes: Vec<(ShardGroup, _)> = stream::iter(sub_requests)
            .map(|(group, shard_ops)| async move {
                let sub_id = sub_request_id(&request_id, group.shard);
                let outcome = forwarder
                    .write(group.shard, shard_count, sub_id, shard_ops, deadline)
                    .await
                    .map(|response| response.results)
                    .map_err(|err| err.for_request(request_id));
                (group, outcome)
            })
            .buffer_unordered(self.ctx.max_fanout)
            .collect()
            .await;
        let mut assembly = Assembly::<WriteOpResult>::new(ops.len(), groups.len());
        for (group, outcome) in outcomes {
            fill_or_fail(&mut assembly, &group, outcome);
        }
        assembly.finish_write()
    }

    /// One op on one key's shard, through the leader.
    async fn write_one(
        &self,
        request_id: RequestId,
        op: WriteOp,
        deadline: Instant,
    ) -> Result<WriteOpResult, RouterError> {
        write_one(&self.ctx, request_id, op, deadline).await
    }
}

/// Places a shard's values, or records its failure.
fn fill_or_fail<T>(assembly: &mut Assembly<T>, group: &ShardGroup, outcome: Result<Vec<T>, RouterError>) {
    match outcome {
        Ok(values) => {
            if let Err(reason) = assembly.fill(group, values) {
                assembly.fail(
                    group.shard,
                    RouterError::BadNodeResponse {
                        shard: group.shard,
                        reason,
                    },
                );
            }
        }
        Err(err) => assembly.fail(group.shard, err),
    }
}

/// Maps a conditional op's result to the client's CAS response.
fn cas_response(result: WriteOpResult) -> CompareAndSwapResponse {
    if result.succeeded {
        CompareAndSwapResponse {
            succeeded: true,
            new_version: result.version,
            ..CompareAndSwapResponse::default()
        }
    } else {
        CompareAndSwapResponse {
            succeeded: false,
            new_version: 0,
            current_found: result.current_found,
            current_value: result.current_value,
            current_version: result.current_version,
        }
    }
}

/// Logs a failed request where it is handled and turns the result into a gRPC reply.
pub fn respond<T>(rpc: &'static str, result: Result<T, RouterError>) -> Result<Response<T>, Status> {
    match result {
        Ok(value) => Ok(Response::new(value)),
        Err(err) => {
            match &err {
                RouterError::OutcomeUnknown { .. }
                | RouterError::BadNodeResponse { .. }
                | RouterError::Internal(_) => warn!(rpc, %err, "request failed"),
                RouterError::BatchFailed(_) if err.is_outcome_unknown() => {
                    warn!(rpc, %err, "request failed")
                }
                _ => debug!(rpc, %err, "request failed"),
            }
            Err(to_status(&err))
        }
    }
}

#[tonic::async_trait]
impl<N: NodeApi> Kv for KvService<N> {
    type ScanStreamStream = ResponseStream<ScanResponse>;
    type CountStream = ResponseStream<CountResponse>;
    type WatchStream = ResponseStream<ringkv_proto::v1::WatchResponse>;
    type PipelineStream = pipeline::Replies;

    /// Frames on one stream, each answered as its unary call (`pipeline.rs`).
    async fn pipeline(
        &self,
        request: Request<tonic::Streaming<ringkv_proto::v1::KvFrames>>,
    ) -> Result<Response<Self::PipelineStream>, Status> {
        Ok(Response::new(self.serve_pipeline(request)))
    }

    async fn batch_write(
        &self,
        request: Request<BatchWriteRequest>,
    ) -> Result<Response<BatchWriteResponse>, Status> {
        self.ctx.auth.authorize(&request)?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        respond(
            "batch_write",
            self.handle_batch_write(request.into_inner(), admission.deadline)
                .await,
        )
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        self.ctx.auth.authorize(&request)?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        respond(
            "scan",
            range_ops::scan(&self.ctx, request.into_inner(), admission.deadline).await,
        )
    }

    /// A stream takes a stream slot, not an in-flight permit (see `streams`).
    async fn scan_stream(
        &self,
        request: Request<ScanRequest>,
    ) -> Result<Response<Self::ScanStreamStream>, Status> {
        self.ctx.auth.authorize(&request)?;
        let admission = self
            .ctx
            .admit_stream(request.metadata())
            .map_err(|e| to_status(&e))?;
        let opened = range_ops::scan_stream(&self.ctx, request.into_inner(), admission.deadline).await;
        respond(
            "scan_stream",
            opened.map(|stream| self.ctx.streams.serve(admission.slot, stream)),
        )
    }

    async fn count(&self, request: Request<CountRequest>) -> Result<Response<Self::CountStream>, Status> {
        self.ctx.auth.authorize(&request)?;
        let admission = self
            .ctx
            .admit_stream(request.metadata())
            .map_err(|e| to_status(&e))?;
        let opened = range_ops::count(&self.ctx, request.into_inner(), admission.deadline).await;
        respond(
            "count",
            opened.map(|stream| self.ctx.streams.serve(admission.slot, stream)),
        )
    }

    /// A watch takes a stream slot; its shard streams are its own (see `watch`).
    async fn watch(
        &self,
        request: Request<ringkv_proto::v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.ctx.auth.authorize(&request)?;
        let admission = self
            .ctx
            .admit_stream(request.metadata())
            .map_err(|e| to_status(&e))?;
        let opened =
            crate::watch::watch(&self.ctx, &self.tso, request.into_inner(), admission.deadline).await;
        respond(
            "watch",
            opened.map(|stream| self.ctx.streams.serve(admission.slot, stream)),
        )
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        self.ctx.auth.authorize(&request)?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        respond(
            "delete_range",
            range_ops::delete_range(&self.ctx, request.into_inner(), admission.deadline).await,
        )
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.ctx.auth.authorize(&request)?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        respond(
            "get",
            self.handle_get(request.into_inner(), admission.deadline).await,
        )
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.ctx.auth.authorize(&request)?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        respond(
            "put",
            self.handle_put(request.into_inner(), admission.deadline).await,
        )
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        self.ctx.auth.authorize(&request)?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        respond(
            "delete",
            self.handle_delete(request.into_inner(), admission.deadline).await,
        )
    }

    async fn compare_and_swap(
        &self,
        request: Request<CompareAndSwapRequest>,
    ) -> Result<Response<CompareAndSwapResponse>, Status> {
        self.ctx.auth.authorize(&request)?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        respond(
            "compare_and_swap",
            self.handle_compare_and_swap(request.into_inner(), admission.deadline)
                .await,
        )
    }

    async fn expire(&self, request: Request<ExpireRequest>) -> Result<Response<ExpireResponse>, Status> {
        self.ctx.auth.authorize(&request)?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        respond(
            "expire",
            self.handle_expire(request.into_inner(), admission.deadline).await,
        )
    }

    async fn batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<BatchGetResponse>, Status> {
        self.ctx.auth.authorize(&request)?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        respond(
            "batch_get",
            self.handle_batch_get(request.into_inner(), admission.deadline)
                .await,
        )
    }

    async fn batch_put(
        &self,
        request: Request<BatchPutRequest>,
    ) -> Result<Response<BatchPutResponse>, Status> {
        self.ctx.auth.authorize(&request)?;
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        respond(
            "batch_put",
            self.handle_batch_put(request.into_inner(), admission.deadline)
                .await,
        )
    }
}

#[cfg(test)]
mod tests {
    use ringkv_proto::metadata;
    use ringkv_proto::v1::KeyValue;
    use tonic::Code;

    use super::*;
    use crate::config::RouterConfig;
    use crate::forward::tests::{topology_3_nodes, FakeNodes, Script};

    fn service(nodes: &Arc<FakeNodes>) -> KvService<FakeNodes> {
        let mut config = RouterConfig::for_test(vec!["n1:7001".into()]);
        config.max_key_bytes = 16;
        config.max_value_bytes = 32;
        config.max_batch_keys = 8;
        config.rpc_timeout_ms = 50;
        let ctx = RouterContext::new(&config, Arc::clone(nodes), topology_3_nodes());
        let tso = TsoClient::spawn(Arc::clone(nodes), topology_3_nodes(), config.rpc_timeout());
        KvService::new(Arc::new(ctx), Arc::new(tso))
    }

    fn deadline() -> Instant {
        Instant::now() + std::time::Duration::from_millis(400)
    }

    /// Bad input is rejected with INVALID_ARGUMENT naming the limit, before any node call.
    #[tokio::test(start_paused = true)]
    async fn invalid_input_is_rejected_first() {
        let nodes = Arc::new(FakeNodes::default());
        let kv = service(&nodes);
        let cases: Vec<(Result<(), RouterError>, &str)> = vec![
            (
                kv.handle_get(
                    GetRequest {
                        key: vec![],
                        consistency: 0,
                        read_ts: 0,
                        read_uncommitted: false,
                    },
                    deadline(),
                )
                .await
                .map(|_| ()),
                "key must not be empty",
            ),
            (
                kv.handle_put(
                    PutRequest {
                        ttl_ms: 0,
                        expires_at_ts: 0,
                        key: vec![1; 17],
                        value: vec![],
                        request_id: vec![],
                        lease: 0,
                    },
                    deadline(),
                )
                .await
                .map(|_| ()),
                "max_key_bytes = 16",
            ),
            (
                kv.handle_put(
                    PutRequest {
                        ttl_ms: 0,
                        expires_at_ts: 0,
                        key: b"k".to_vec(),
                        value: vec![0; 33],
                        request_id: vec![],
                        lease: 0,
                    },
                    deadline(),
                )
                .await
                .map(|_| ()),
                "max_value_bytes = 32",
            ),
            (
                kv.handle_delete(
                    DeleteRequest {
                        key: b"k".to_vec(),
                        request_id: vec![1; 3],
                    },
                    deadline(),
                )
                .await
                .map(|_| ()),
                "request_id must be empty or exactly 16 bytes",
            ),
            (
                kv.handle_batch_get(
                    BatchGetRequest {
                        keys: vec![b"k".to_vec(); 9],
                        ..BatchGetRequest::default()
                    },
                    deadline(),
                )
                .await
                .map(|_| ()),
                "max_batch_keys = 8",
            ),
            (
                kv.handle_batch_put(
                    BatchPutRequest {
                        entries: vec![KeyValue {
                            key: b"k".to_vec(),
                            value: vec![0; 40],
                        }],
                        request_id: vec![],
                    },
                    deadline(),
                )
                .await
                .map(|_| ()),
                "entries[0].value is 40 bytes",
            ),
        ];
        for (result, expected) in cases {
            let Err(err) = result else {
                panic!("expected {expected:?}")
            };
            let status = to_status(&err);
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(status.message().contains(expected), "{}", status.message());
        }
        assert!(nodes.called_addrs().is_empty());
    }

    /// A batch put spanning shards returns versions in request order, with one write per
    /// shard carrying that shard's derived sub-request id.
    #[tokio::test(start_paused = true)]
    async fn batch_put_fans_out_per_shard() {
        let nodes = Arc::new(FakeNodes::default());
        let kv = service(&nodes);
        let entries: Vec<KeyValue> = (0..8u8)
            .map(|i| KeyValue {
                key: vec![b'k', i],
                value: vec![i],
            })
            .collect();
        let request_id = [5u8; 16];
        let result = kv
            .handle_batch_put(
                BatchPutRequest {
                    entries: entries.clone(),
                    request_id: request_id.to_vec(),
                },
                deadline(),
            )
            .await;
        let Ok(response) = result else {
            panic!("batch put failed: {result:?}")
        };
        assert_eq!(response.versions.len(), 8);
        let Some(view) = kv.ctx.topology.ring() else {
            panic!("ring expected")
        };
        let groups = group_by_shard(&entries, |e| view.ring.shard_for_key(&e.key));
        let calls = nodes.calls.lock().map(|c| c.clone()).unwrap_or_default();
        assert_eq!(calls.len(), groups.len());
        for group in &groups {
            let expected = sub_request_id(&request_id, group.shard).to_vec();
            assert!(calls.iter().any(|(_, id)| *id == expected));
            // The fake assigns 100 + position within the shard's ops.
            for (position, index) in group.indices.iter().enumerate() {
                assert_eq!(response.versions[*index], 100 + position as u64);
            }
        }
    }

    /// A batch get returns one result per key, in request order, duplicates included.
    #[tokio::test(start_paused = true)]
    async fn batch_get_keeps_request_order() {
        let nodes = Arc::new(FakeNodes::default());
        let kv = service(&nodes);
        let keys: Vec<Vec<u8>> = vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"a".to_vec()];
        let result = kv
            .handle_batch_get(
                BatchGetRequest {
                    keys: keys.clone(),
                    consistency: Consistency::Stale as i32,
                    ..BatchGetRequest::default()
                },
                deadline(),
            )
            .await;
        let Ok(response) = result else {
            panic!("batch get failed: {result:?}")
        };
        let returned: Vec<Vec<u8>> = response.results.into_iter().map(|r| r.key).collect();
        assert_eq!(returned, keys);
    }

    /// When one shard's write is ambiguous, the batch fails naming it as outcome unknown.
    #[tokio::test(start_paused = true)]
    async fn batch_put_partial_failure_names_shards() {
        let nodes = Arc::new(FakeNodes::default());
        let kv = service(&nodes);
        for id in 1..=3 {
            nodes.always(&format!("n{id}:7001"), || Script::Hang);
        }
        let entries: Vec<KeyValue> = (0..4u8)
            .map(|i| KeyValue {
                key: vec![b'x', i],
                value: vec![i],
            })
            .collect();
        let result = kv
            .handle_batch_put(
                BatchPutRequest {
                    entries,
                    request_id: vec![],
                },
                deadline(),
            )
            .await;
        let Err(err) = result else {
            panic!("expected a failure")
        };
        let status = to_status(&err);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(metadata::is_outcome_unknown(&status));
        assert!(
            status.message().contains("outcome unknown"),
            "{}",
            status.message()
        );
    }

    /// A batch put whose shards failed for sure after the other shards applied their part
    /// is partly applied: outcome unknown (marked), never the plain UNAVAILABLE of a batch
    /// that failed. The same holds for a request that came without a request id (the
    /// router's own id names it).
    #[tokio::test(start_paused = true)]
    async fn a_partly_applied_batch_put_is_outcome_unknown() {
        let nodes = Arc::new(FakeNodes::default());
        let kv = service(&nodes);
        let entries: Vec<KeyValue> = (0..8u8)
            .map(|i| KeyValue {
                key: vec![b'p', i],
                value: vec![i],
            })
            .collect();
        let Some(view) = kv.ctx.topology.ring() else {
            panic!("ring expected")
        };
        let groups = group_by_shard(&entries, |e| view.ring.shard_for_key(&e.key));
        assert!(groups.len() >= 2, "the batch spans shards");
        nodes.refuse_shard(groups[0].shard.0);
        let result = kv
            .handle_batch_put(
                BatchPutRequest {
                    entries,
                    request_id: vec![],
                },
                deadline(),
            )
            .await;
        let Err(err) = result else {
            panic!("expected a failure")
        };
        let status = to_status(&err);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(metadata::is_outcome_unknown(&status), "{}", status.message());
        assert!(
            status.message().contains("part of the write was applied"),
            "{}",
            status.message()
        );
    }

    /// A delete-range that failed on one shard after the others deleted their part is
    /// outcome unknown; one that every shard refused is a plain failure.
    #[tokio::test(start_paused = true)]
    async fn a_partly_applied_delete_range_is_outcome_unknown() {
        let nodes = Arc::new(FakeNodes::default());
        let kv = service(&nodes);
        let request = DeleteRangeRequest {
            start: b"a".to_vec(),
            end: b"z".to_vec(),
            ..DeleteRangeRequest::default()
        };
        nodes.refuse_shard(2);
        let partial = range_ops::delete_range(&kv.ctx, request.clone(), deadline()).await;
        let Err(err) = partial else {
            panic!("expected a failure")
        };
        assert!(metadata::is_outcome_unknown(&to_status(&err)), "{err}");

        for shard in 0..8 {
            nodes.refuse_shard(shard);
        }
        let refused = range_ops::delete_range(&kv.ctx, request, deadline()).await;
        let Err(err) = refused else {
            panic!("expected a failure")
        };
        let status = to_status(&err);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!metadata::is_outcome_unknown(&status), "{err}");
    }

    /// A failed CAS whose node reply left the current value out (a retry answered from its
    /// record) answers with the key's state read back through the leader.
    #[tokio::test(start_paused = true)]
    async fn a_cas_mismatch_without_its_value_reads_the_key_back() {
        let nodes = Arc::new(FakeNodes::default());
        let kv = service(&nodes);
        for id in 1..=3 {
            nodes.script(
                &format!("n{id}:7001"),
                vec![Script::ComparisonFailed { current_version: 1 }],
            );
        }
        let response = kv
            .handle_compare_and_swap(
                CompareAndSwapRequest {
                    ttl_ms: 0,
                    expires_at_ts: 0,
                    key: b"k".to_vec(),
                    expected_version: 5,
                    new_value: b"v".to_vec(),
                    delete: false,
                    request_id: vec![3; 16],
                },
                deadline(),
            )
            .await;
        let Ok(response) = response else {
            panic!("cas failed: {response:?}")
        };
        assert!(!response.succeeded);
        // The fake read answers version 1 with the address of the node that served it.
        assert_eq!((response.current_found, response.current_version), (true, 1));
        assert!(
            response.current_value.starts_with(b"n"),
            "{:?}",
            response.current_value
        );
        assert_eq!(nodes.called_addrs().len(), 2, "the write, then the read");
    }

    /// CAS maps to one conditional op, and failures map the node's current state back.
    #[test]
    fn cas_results_map_back() {
        let success = cas_response(WriteOpResult {
            succeeded: true,
            version: 12,
            ..WriteOpResult::default()
        });
        assert!(success.succeeded && success.new_version == 12);
        let failure = cas_response(WriteOpResult {
            succeeded: false,
            version: 0,
            existed: true,
            current_found: true,
            current_value: b"now".to_vec(),
            current_version: 9,
            current_value_omitted: false,
        });
        assert!(!failure.succeeded);
        assert_eq!(
            (
                failure.current_found,
                failure.current_value.as_slice(),
                failure.current_version
            ),
            (true, b"now".as_slice(), 9)
        );
    }
}
