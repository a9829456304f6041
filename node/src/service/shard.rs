//! `ShardKv`: shard-addressed reads and writes, called by routers.

use ringkv_proto::v1::{self, shard_kv_server::ShardKv};
use tonic::{Request, Response, Status};

use super::status;
use crate::error::NodeError;
use crate::node::Node;
use crate::raft::types::WriteOp;

pub struct ShardKvService {
    node: Node,
}

impl ShardKvService {
    pub fn new(node: Node) -> ShardKvService {
        ShardKvService { node }
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

    async fn read(&self, request: v1::ShardReadRequest) -> Result<v1::ShardReadResponse, NodeError> {
        let (ring, group) = self.node.shard_group(request.shard_id)?;
        if request.keys.is_empty() || request.keys.len() > self.node.config().max_ops_per_write {
            return Err(NodeError::InvalidArgument(format!(
                "a read needs 1..={} keys, got {}",
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
        let consistency =
            v1::Consistency::try_from(request.consistency).unwrap_or(v1::Consistency::Linearizable);
        if consistency == v1::Consistency::Linearizable && !self.node.config().unsafe_skip_read_index {
            self.node.ensure_linearizable(&group).await?;
        }
        let values = self.node.read_local(&group, &request.keys).await?;
        let results = request
            .keys
            .into_iter()
            .zip(values)
            .map(|(key, value)| match value {
                Some(versioned) => v1::KeyValueResult {
                    key,
                    found: true,
                    value: versioned.value,
                    version: versioned.version,
                },
                None => v1::KeyValueResult {
                    key,
                    found: false,
                    value: Vec::new(),
                    version: 0,
                },
            })
            .collect();
        Ok(v1::ShardReadResponse { results })
    }

    async fn write(&self, request: v1::ShardWriteRequest) -> Result<v1::ShardWriteResponse, NodeError> {
        let (ring, group) = self.node.shard_group(request.shard_id)?;
        let request_id: [u8; 16] = request.request_id.as_slice().try_into().map_err(|_| {
            NodeError::InvalidArgument(format!(
                "request_id must be 16 bytes, got {}",
                request.request_id.len()
            ))
        })?;
        let max_ops = self.node.config().max_ops_per_write;
        if request.ops.is_empty() || request.ops.len() > max_ops {
            return Err(NodeError::InvalidArgument(format!(
                "a write needs 1..={max_ops} ops, got {}",
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
            let value = match kind {
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
            };
            ops.push(WriteOp {
                key: op.key,
                value,
                expected_version: op.expected_version,
            });
        }
        let results = self.node.write(&group, request_id, ops).await?;
        Ok(v1::ShardWriteResponse {
            results: results
                .into_iter()
                .map(|result| {
                    let (current_found, current_value, current_version) = match result.current {
                        Some(current) => (true, current.value, current.version),
                        None => (false, Vec::new(), 0),
                    };
                    v1::WriteOpResult {
                        succeeded: result.succeeded,
                        version: result.version,
                        existed: result.existed,
                        current_found,
                        current_value,
                        current_version,
                    }
                })
                .collect(),
        })
    }
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
}
