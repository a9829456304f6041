//! `ShardKv`: shard-addressed reads, writes, range scans, counts and range deletes, called
//! by routers.

use ringkv_proto::metadata;
use ringkv_proto::v1::{self, shard_kv_server::ShardKv};
use ringkv_ring::Ring;
use std::sync::Arc;

use ringkv_metrics::RpcMetrics;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

mod expiry;
mod limits;
mod pipeline;
mod ranges;
mod reserved;
mod txn;
mod watch;

use expiry::never_expiring;
use limits::reply_max_bytes;
pub use pipeline::FrameAuth;
use pipeline::FrameCounters;

use super::status;
use crate::convert;
use crate::error::NodeError;
use crate::group::Group;
use crate::node::Node;
use crate::proposal;
use crate::raft::types::{CurrentValueBudget, WriteOp};

/// Most writes in one `WriteBatch` call.
const MAX_BATCH_WRITES: usize = 256;
#[derive(Clone)]
pub struct ShardKvService {
    node: Node,
    /// Cancelled when the server shuts down: pipeline streams end then.
    stopping: CancellationToken,
    /// Where pipeline frames are counted, as their unary calls would be.
    frame_counters: FrameCounters,
}

impl ShardKvService {
    pub fn new(node: Node, stopping: CancellationToken, metrics: &Arc<RpcMetrics>) -> ShardKvService {
        ShardKvService {
            node,
            stopping,
            frame_counters: FrameCounters::new(metrics),
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<(), NodeError> {
        let max = self.node.config().max_key_bytes;
        if key.is_empty() {
            return Err(NodeError::InvalidArgument("key must not be empty".to_string()));
        }
        if key.len() > max {
            return Err(NodeError::InvalidArgument(format!(
                "key is {} bytes, the limit is {max}",
                key.len()
            )));
        }
        Ok(())
    }

    /// Waits until a local read is linearizable when the request asks for it (the default).
    async fn check_consistency(&self, group: &Group, consistency: i32) -> Result<(), NodeError> {
        let consistency = v1::Consistency::try_from(consistency).unwrap_or(v1::Consistency::Linearizable);
        if consistency == v1::Consistency::Linearizable && !self.node.config().unsafe_skip_read_index {
            self.node.ensure_linearizable(group).await?;
        }
        Ok(())
    }

    async fn read(&self, request: v1::ShardReadRequest) -> Result<v1::ShardReadResponse, NodeError> {
        let (ring, group) = self.node.shard_group(request.shard_id)?;
        if request.keys.is_empty() || request.keys.len() > self.node.config().max_ops_per_write {
            return Err(NodeError::InvalidArgument(format!(
                "a read needs 1..={} keys (max_ops_per_write), got {}",
                self.node.config().max_ops_per_write,
                request.keys.len()
            )));
        }
        for key in &request.keys {
            self.check_key(key)?;
            let actual = ring.shard_for_key(key).0;
            if actual != request.shard_id {
                return Err(NodeError::WrongShard {
                    requested: request.shard_id,
                    actual,
                });
            }
        }
        let max_bytes = reply_max_bytes(request.max_bytes, self.node.config().max_message_bytes);
        let values = if request.read_uncommitted {
            limits::check_uncommitted(request.read_ts, request.consistency)?;
            self.check_consistency(&group, request.consistency).await?;
            never_expiring(
                self.node
                    .read_uncommitted(&group, &request.keys, max_bytes)
                    .await?,
            )
        } else if request.read_ts == 0 {
            self.check_consistency(&group, request.consistency).await?;
            if request.consistency == v1::Consistency::Linearizable as i32 {
                self.node.check_unlocked(&group, &request.keys, u64::MAX)?;
            }
            self.node.read_local(&group, &request.keys, max_bytes).await?
        } else {
            check_read_at(request.consistency)?;
            self.node
                .read_at(&group, &request.keys, request.read_ts, max_bytes)
                .await?
        };
        // The byte budget may have stopped the read: the values answer a prefix of the keys.
        let more = values.len() < request.keys.len();
        let results = request
            .keys
            .into_iter()
            .zip(values)
            .map(|(key, value)| expiry::read_result(key, value))
            .collect();
        Ok(v1::ShardReadResponse { results, more })
    }

    async fn write(&self, request: v1::ShardWriteRequest) -> Result<v1::ShardWriteResponse, NodeError> {
        let (ring, group) = self.node.shard_group(request.shard_id)?;
        let (request_id, ops) = self.check_write(&ring, request)?;
        let results = self.node.write(&group, request_id, ops).await?;
        Ok(convert::write_response(results))
    }

    /// Proposes the batch's writes together (so they share an entry where they can) and
    /// answers each one as `write` would have, with one [`CurrentValueBudget`] for the whole
    /// reply.
    async fn write_batch(
        &self,
        request: v1::ShardWriteBatchRequest,
    ) -> Result<v1::ShardWriteBatchResponse, NodeError> {
        if request.writes.is_empty() || request.writes.len() > MAX_BATCH_WRITES {
            return Err(NodeError::InvalidArgument(format!(
                "a write batch needs 1..={MAX_BATCH_WRITES} writes (MAX_BATCH_WRITES), got {}",
                request.writes.len()
            )));
        }
        let shard_id = request.shard_id;
        let (ring, group) = self.node.shard_group(shard_id)?;
        // Not the leader concerns every write: say it once, for the whole batch.
        if !proposal::is_leader(&group.raft, self.node.node_id()) {
            return Err(NodeError::NotLeader {
                group: group.id,
                leader: proposal::leader_hint(&group.raft),
                proposed: false,
            });
        }
        let writes = request.writes.into_iter().map(|mut write| {
            write.shard_id = shard_id;
            let checked = self.check_write(&ring, write);
            let group = &group;
            async move {
                let (request_id, ops) = checked?;
                self.node.write(group, request_id, ops).await
            }
        });
        let outcomes = futures::future::join_all(writes).await;
        // The batch's writes may span entries: the reply has one budget of its own.
        let mut budget = CurrentValueBudget::new();
        Ok(v1::ShardWriteBatchResponse {
            outcomes: outcomes
                .into_iter()
                .map(|outcome| v1::ShardWriteOutcome {
                    outcome: Some(match outcome {
                        Ok(mut results) => {
                            budget.spend(&mut results);
                            v1::shard_write_outcome::Outcome::Response(convert::write_response(results))
                        }
                        Err(err) => v1::shard_write_outcome::Outcome::Failure(metadata::write_failure(
                            &status(err, true),
                        )),
                    }),
                })
                .collect(),
        })
    }

    /// Checks a write's request id and ops against the limits and the ring.
    fn check_write(
        &self,
        ring: &Ring,
        request: v1::ShardWriteRequest,
    ) -> Result<([u8; 16], Vec<WriteOp>), NodeError> {
        let request_id: [u8; 16] = request.request_id.as_slice().try_into().map_err(|_| {
            NodeError::InvalidArgument(format!(
                "request_id must be 16 bytes, got {}",
                request.request_id.len()
            ))
        })?;
        let max_ops = self.node.config().max_ops_per_write;
        if request.ops.is_empty() || request.ops.len() > max_ops {
            return Err(NodeError::InvalidArgument(format!(
                "a write needs 1..={max_ops} ops (max_ops_per_write), got {}",
                request.ops.len()
            )));
        }
        let max_value = self.node.config().max_value_bytes;
        // One write is one Raft entry: it must fit in a replication message.
        let max_write_bytes = self.node.config().max_message_bytes / 2;
        let write_bytes: usize = request.ops.iter().map(|op| op.key.len() + op.value.len()).sum();
        if write_bytes > max_write_bytes {
            return Err(NodeError::InvalidArgument(format!(
                "write is {write_bytes} bytes, the limit for one shard write is {max_write_bytes}"
            )));
        }
        let mut ops = Vec::with_capacity(request.ops.len());
        for op in request.ops {
            self.check_key(&op.key)?;
            let actual = ring.shard_for_key(&op.key).0;
            if actual != request.shard_id {
                return Err(NodeError::WrongShard {
                    requested: request.shard_id,
                    actual,
                });
            }
            let kind = v1::WriteKind::try_from(op.kind)
                .map_err(|_| NodeError::InvalidArgument(format!("unknown write kind {}", op.kind)))?;
            let expiry = expiry::of_op(&op, kind)?;
            let value = match kind {
                // `expire` and `persist` keep the key's value.
                _ if expiry.keeps_value() => None,
                v1::WriteKind::Put => {
                    if op.value.len() > max_value {
                        return Err(NodeError::InvalidArgument(format!(
                            "value is {} bytes, the limit is {max_value}",
                            op.value.len()
                        )));
                    }
                    Some(op.value)
                }
                v1::WriteKind::Delete => None,
                v1::WriteKind::Append => {
                    return Err(NodeError::InvalidArgument(
                        "an append is a transaction's mutation, not a write".to_string(),
                    ))
                }
            };
            ops.push(WriteOp {
                key: op.key,
                value,
                expected_version: op.expected_version,
                expiry,
            });
        }
        Ok((request_id, ops))
    }
}

/// A read at a timestamp is served by the leader only: its consistency must be linearizable.
fn check_read_at(consistency: i32) -> Result<(), NodeError> {
    if consistency == v1::Consistency::Linearizable as i32 {
        return Ok(());
    }
    Err(NodeError::InvalidArgument(
        "a read at a timestamp is served by the leader only (linearizable consistency)".to_string(),
    ))
}

#[tonic::async_trait]
impl ShardKv for ShardKvService {
    async fn read(
        &self,
        request: Request<v1::ShardReadRequest>,
    ) -> Result<Response<v1::ShardReadResponse>, Status> {
        self.read(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|err| status(err, false))
    }

    async fn write(
        &self,
        request: Request<v1::ShardWriteRequest>,
    ) -> Result<Response<v1::ShardWriteResponse>, Status> {
        self.write(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|err| status(err, true))
    }

    async fn write_batch(
        &self,
        request: Request<v1::ShardWriteBatchRequest>,
    ) -> Result<Response<v1::ShardWriteBatchResponse>, Status> {
        self.write_batch(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|err| status(err, true))
    }

    async fn scan(
        &self,
        request: Request<v1::ShardScanRequest>,
    ) -> Result<Response<v1::ShardScanResponse>, Status> {
        self.scan(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|err| status(err, false))
    }

    async fn count(
        &self,
        request: Request<v1::ShardCountRequest>,
    ) -> Result<Response<v1::ShardCountResponse>, Status> {
        self.count(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|err| status(err, false))
    }

    async fn delete_range(
        &self,
        request: Request<v1::ShardDeleteRangeRequest>,
    ) -> Result<Response<v1::ShardDeleteRangeResponse>, Status> {
        self.delete_range(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|err| status(err, true))
    }

    async fn txn_prewrite(
        &self,
        request: Request<v1::ShardTxnPrewriteRequest>,
    ) -> Result<Response<v1::ShardTxnPrewriteResponse>, Status> {
        self.txn_prewrite(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|err| status(err, true))
    }

    async fn txn_commit(
        &self,
        request: Request<v1::ShardTxnCommitRequest>,
    ) -> Result<Response<v1::ShardTxnStatusResponse>, Status> {
        self.txn_commit(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|err| status(err, true))
    }

    async fn txn_rollback(
        &self,
        request: Request<v1::ShardTxnRollbackRequest>,
    ) -> Result<Response<v1::ShardTxnStatusResponse>, Status> {
        self.txn_rollback(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|err| status(err, true))
    }

    async fn txn_check_status(
        &self,
        request: Request<v1::ShardTxnCheckStatusRequest>,
    ) -> Result<Response<v1::ShardTxnStatusResponse>, Status> {
        self.txn_check_status(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|err| status(err, true))
    }

    async fn txn_validate(
        &self,
        request: Request<v1::ShardTxnValidateRequest>,
    ) -> Result<Response<v1::ShardTxnValidateResponse>, Status> {
        self.txn_validate(request.into_inner())
            .await
            .map(Response::new)
            .map_err(|err| status(err, true))
    }

    async fn txn_one_pc(
        &self,
        request: Request<v1::ShardTxnOnePcRequest>,
    ) -> Result<Response<v1::ShardTxnOnePcResponse>, Status> {
        let result = self.txn_one_pc(request.into_inner()).await;
        result.map(Response::new).map_err(|err| status(err, true))
    }

    async fn txn_gc(
        &self,
        request: Request<v1::ShardTxnGcRequest>,
    ) -> Result<Response<v1::ShardTxnGcResponse>, Status> {
        let result = self.txn_gc(request.into_inner()).await;
        result.map(Response::new).map_err(|err| status(err, true))
    }

    async fn txn_scan_locks(
        &self,
        request: Request<v1::ShardTxnScanLocksRequest>,
    ) -> Result<Response<v1::ShardTxnScanLocksResponse>, Status> {
        let result = self.txn_scan_locks(request.into_inner()).await;
        result.map(Response::new).map_err(|err| status(err, true))
    }

    type WatchStream = watch::WatchStream;
    type PipelineStream = pipeline::Replies;

    /// Frames served for root (this service alone checks no permissions:
    /// `AuthorizedShardKv` does).
    async fn pipeline(
        &self,
        request: Request<Streaming<v1::ShardFrames>>,
    ) -> Result<Response<Self::PipelineStream>, Status> {
        Ok(Response::new(self.serve_pipeline(None, request.into_inner())))
    }

    async fn watch(
        &self,
        request: Request<v1::ShardWatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let result = self.watch(request.into_inner()).await;
        result.map(Response::new).map_err(|err| status(err, false))
    }
}

#[cfg(test)]
mod tests {
    use super::limits::{
        check_range, count_limit, page_limit, DEFAULT_COUNT_LIMIT, MAX_COUNT_LIMIT, MAX_PAGE_LIMIT,
    };
    use super::*;

    /// Range bounds: empty means unbounded, start == end is an empty range, start > end and
    /// oversized keys are invalid arguments.
    #[test]
    fn range_checks() {
        assert_eq!(check_range(4, b"a", Vec::new()).expect("unbounded"), None);
        assert_eq!(check_range(4, b"", Vec::new()).expect("everything"), None);
        assert_eq!(
            check_range(4, b"a", b"a".to_vec()).expect("empty range"),
            Some(b"a".to_vec())
        );
        assert_eq!(
            check_range(4, b"a", b"b".to_vec()).expect("range"),
            Some(b"b".to_vec())
        );
        let inverted = check_range(4, b"b", b"a".to_vec()).expect_err("start > end");
        assert!(matches!(inverted, NodeError::InvalidArgument(msg) if msg.contains("greater")));
        // A bound may be a maximal key plus a zero byte (a router resuming after it).
        assert!(check_range(4, b"abcd\0", Vec::new()).is_ok());
        let long_start = check_range(4, b"abcdef", Vec::new()).expect_err("long start");
        assert!(
            matches!(long_start, NodeError::InvalidArgument(msg) if msg.contains("start bound is 6 bytes"))
        );
        let long_end = check_range(4, b"", b"abcdef".to_vec()).expect_err("long end");
        assert!(matches!(long_end, NodeError::InvalidArgument(msg) if msg.contains("end bound is 6 bytes")));
    }

    /// Limits: scan and delete-range pages need 1..=10000; counts default and cap; the byte
    /// budget of a page or a read defaults to 4 MiB and is capped at half a message.
    #[test]
    fn limits() {
        assert!(page_limit(0, "scan").is_err());
        assert_eq!(page_limit(1, "scan").expect("min"), 1);
        assert_eq!(page_limit(MAX_PAGE_LIMIT, "scan").expect("max"), MAX_PAGE_LIMIT);
        let over = page_limit(MAX_PAGE_LIMIT + 1, "delete-range").expect_err("over");
        assert!(matches!(over, NodeError::InvalidArgument(msg) if msg.contains("delete-range")));
        assert_eq!(count_limit(0), DEFAULT_COUNT_LIMIT);
        assert_eq!(count_limit(7), 7);
        assert_eq!(count_limit(u64::MAX), MAX_COUNT_LIMIT);
        assert_eq!(reply_max_bytes(0, 16 << 20), 4 << 20);
        assert_eq!(reply_max_bytes(0, 4 << 20), 2 << 20);
        assert_eq!(reply_max_bytes(100, 16 << 20), 100);
        assert_eq!(reply_max_bytes(u64::MAX, 16 << 20), 8 << 20);
    }
}
