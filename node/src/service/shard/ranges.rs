//! Range calls of `ShardKv`: scans, counts and range deletes of one shard.

use ringkv_proto::v1;

use super::limits::{self, check_range, count_limit, page_limit, reply_max_bytes};
use super::{check_read_at, ShardKvService};
use crate::error::NodeError;
use crate::raft::state_machine::ScanOptions;

impl ShardKvService {
    pub(super) async fn scan(
        &self,
        request: v1::ShardScanRequest,
    ) -> Result<v1::ShardScanResponse, NodeError> {
        let (_ring, group) = self.node.shard_group(request.shard_id)?;
        let config = self.node.config();
        let end = check_range(config.max_key_bytes, &request.start, request.end)?;
        let limit = page_limit(request.limit, "scan")?;
        let options = ScanOptions {
            start: request.start,
            end,
            limit: limit as usize,
            max_bytes: reply_max_bytes(request.max_bytes, config.max_message_bytes),
            reverse: request.reverse,
            keys_only: request.keys_only,
        };
        let page = if request.read_uncommitted {
            limits::check_uncommitted(request.read_ts, request.consistency)?;
            self.check_consistency(&group, request.consistency).await?;
            let now_ts = self.node.expiry_clock(&group).await?;
            group.state.scan_uncommitted_live(options, now_ts).await?
        } else if request.read_ts == 0 {
            self.check_consistency(&group, request.consistency).await?;
            if request.consistency == v1::Consistency::Linearizable as i32 {
                let end = options.end.as_deref();
                self.node
                    .check_range_unlocked(&group, &options.start, end, u64::MAX)?;
            }
            self.node.scan_local(&group, options).await?
        } else {
            check_read_at(request.consistency)?;
            self.node.scan_at(&group, options, request.read_ts).await?
        };
        Ok(v1::ShardScanResponse {
            entries: page
                .entries
                .into_iter()
                .zip(page.expiries)
                .map(|((key, versioned), expires_at)| v1::ScanEntry {
                    key,
                    value: versioned.value,
                    version: versioned.version,
                    expires_at_ts: expires_at.unwrap_or(0),
                })
                .collect(),
            more: page.more,
            last_key: page.last_key.unwrap_or_default(),
        })
    }

    pub(super) async fn count(
        &self,
        request: v1::ShardCountRequest,
    ) -> Result<v1::ShardCountResponse, NodeError> {
        let (_ring, group) = self.node.shard_group(request.shard_id)?;
        let end = check_range(self.node.config().max_key_bytes, &request.start, request.end)?;
        let limit = count_limit(request.limit);
        let result = if request.read_ts == 0 {
            self.check_consistency(&group, request.consistency).await?;
            if request.consistency == v1::Consistency::Linearizable as i32 {
                self.node
                    .check_range_unlocked(&group, &request.start, end.as_deref(), u64::MAX)?;
            }
            self.node.count_local(&group, request.start, end, limit).await?
        } else {
            check_read_at(request.consistency)?;
            self.node
                .count_at(&group, request.start, end, limit, request.read_ts)
                .await?
        };
        Ok(v1::ShardCountResponse {
            count: result.count,
            more: result.more,
            last_key: result.last_key.unwrap_or_default(),
        })
    }

    pub(super) async fn delete_range(
        &self,
        request: v1::ShardDeleteRangeRequest,
    ) -> Result<v1::ShardDeleteRangeResponse, NodeError> {
        let (_ring, group) = self.node.shard_group(request.shard_id)?;
        let request_id: [u8; 16] = request.request_id.as_slice().try_into().map_err(|_| {
            NodeError::InvalidArgument(format!(
                "request_id must be 16 bytes, got {}",
                request.request_id.len()
            ))
        })?;
        let end = check_range(self.node.config().max_key_bytes, &request.start, request.end)?;
        let limit = page_limit(request.limit, "delete-range")?;
        let result = self
            .node
            .delete_range(&group, request_id, request.start, end, limit)
            .await?;
        Ok(v1::ShardDeleteRangeResponse {
            deleted: result.deleted,
            more: result.more,
            last_deleted: result.last_deleted.unwrap_or_default(),
        })
    }
}
