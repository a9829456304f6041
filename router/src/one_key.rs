//! One key's request on its shard: the steps `kv_service` and `lease_store` share (a
//! write through the forwarder to the shard's leader, and the single result of a one-key
//! answer). A module of its own so neither service depends on the other.

use ringkv_proto::v1::{WriteOp, WriteOpResult};
use ringkv_ring::ShardId;
use tokio::time::Instant;

use crate::context::RouterContext;
use crate::error::{RequestId, RouterError};
use crate::node_api::NodeApi;

/// One op on one key's shard, through the leader (the `Lease` service's steps too).
pub(crate) async fn write_one<N: NodeApi>(
    ctx: &RouterContext<N>,
    request_id: RequestId,
    op: WriteOp,
    deadline: Instant,
) -> Result<WriteOpResult, RouterError> {
    let view = ctx.topology.wait_for_ring(deadline).await?;
    let shard = view.ring.shard_for_key(&op.key);
    let response = ctx
        .forwarder
        .write(shard, view.ring.shard_count(), request_id, vec![op], deadline)
        .await?;
    // The forwarder checked one result per op.
    single(shard, Ok(response.results))
}

/// The only element of a one-element result list.
pub(crate) fn single<T>(shard: ShardId, results: Result<Vec<T>, String>) -> Result<T, RouterError> {
    let bad = |reason: String| RouterError::BadNodeResponse { shard, reason };
    let mut results = results.map_err(bad)?;
    if results.len() != 1 {
        return Err(bad(format!("{} results for one key", results.len())));
    }
    results
        .pop()
        .ok_or_else(|| bad("no result for the key".to_string()))
}
