//! Range calls of `ShardKv`: scans, counts and range deletes of one shard. Each leaves the
//! reserved keyspace out unless the range lies inside it (`reserved.rs`). A scan or count
//! of the latest state reads the pieces of its range at one applied state
//! ([`AppliedState`]): when an entry applies between two pieces, the answer ends at the
//! reserved keyspace's edge and the caller reads on from there, as after any full page.

use ringkv_proto::v1;

use super::limits::{self, check_range, count_limit, page_limit, reply_max_bytes};
use super::reserved;
use super::{check_read_at, ShardKvService};
use crate::error::NodeError;
use crate::raft::state_machine::{AppliedState, ScanOptions};

/// How a scan reads its pieces: the latest values, provisional ones included, or as of a
/// timestamp (checks that cover the whole range are done before the first piece; the
/// expiry clock is read once, so the pieces agree on which keys expired).
#[derive(Clone, Copy)]
enum ScanMode {
    Uncommitted { now_ts: Option<u64> },
    Latest { now_ts: Option<u64> },
    At { read_ts: u64 },
}

impl ShardKvService {
    /// A page of one shard's keys. The reserved keyspace is left out unless the range lies
    /// inside it (`reserved.rs`): the range is read as its pieces on either side, the
    /// limit and byte budget shared, in scan order.
    pub(super) async fn scan(
        &self,
        request: v1::ShardScanRequest,
    ) -> Result<v1::ShardScanResponse, NodeError> {
        let (_ring, group) = self.node.shard_group(request.shard_id)?;
        let config = self.node.config();
        let end = check_range(config.max_key_bytes, &request.start, request.end)?;
        let limit = page_limit(request.limit, "scan")?;
        let mode = if request.read_uncommitted {
            limits::check_uncommitted(request.read_ts, request.consistency)?;
            self.check_consistency(&group, request.consistency).await?;
            ScanMode::Uncommitted {
                now_ts: self.node.expiry_clock(&group).await?,
            }
        } else if request.read_ts == 0 {
            self.check_consistency(&group, request.consistency).await?;
            if request.consistency == v1::Consistency::Linearizable as i32 {
                self.node
                    .check_range_unlocked(&group, &request.start, end.as_deref(), u64::MAX)?;
            }
            ScanMode::Latest {
                now_ts: self.node.expiry_clock(&group).await?,
            }
        } else {
            check_read_at(request.consistency)?;
            ScanMode::At {
                read_ts: request.read_ts,
            }
        };
        let mut pieces = reserved::user_pieces(&request.start, end.as_deref());
        if request.reverse {
            pieces.reverse();
        }
        let mut limit_left = limit as usize;
        let mut bytes_left = reply_max_bytes(request.max_bytes, config.max_message_bytes);
        let mut response = v1::ShardScanResponse::default();
        let mut applied = AppliedState::new();
        for (index, (start, end)) in pieces.into_iter().enumerate() {
            if limit_left == 0 || bytes_left == 0 {
                // The page is full with the range's last pieces unread.
                response.more = true;
                response.last_key = reserved::boundary_after(request.reverse);
                break;
            }
            let options = ScanOptions {
                start,
                end,
                limit: limit_left,
                max_bytes: bytes_left,
                reverse: request.reverse,
                keys_only: request.keys_only,
            };
            let page = match mode {
                ScanMode::Uncommitted { now_ts } => {
                    group
                        .state
                        .scan_uncommitted_live_sharing(options, now_ts, &mut applied)
                        .await?
                }
                ScanMode::Latest { now_ts } => {
                    group
                        .state
                        .scan_live_sharing(options, now_ts, &mut applied)
                        .await?
                }
                ScanMode::At { read_ts } => self.node.scan_at(&group, options, read_ts).await?,
            };
            limit_left = limit_left.saturating_sub(page.entries.len());
            for ((key, versioned), expires_at) in page.entries.into_iter().zip(page.expiries) {
                bytes_left = bytes_left.saturating_sub(key.len() + versioned.value.len());
                response.entries.push(v1::ScanEntry {
                    key,
                    value: versioned.value,
                    version: versioned.version,
                    expires_at_ts: expires_at.unwrap_or(0),
                });
            }
            if page.more {
                response.more = true;
                response.last_key = match page.last_key {
                    Some(last_key) => last_key,
                    // Nothing of this piece looked at (an entry applied after the last
                    // piece, or the page was full): resume where the last piece ended.
                    None if index > 0 => reserved::boundary_after(request.reverse),
                    None => Vec::new(),
                };
                break;
            }
        }
        Ok(response)
    }

    /// A count of one shard's keys, leaving out the reserved keyspace as [`Self::scan`]
    /// does (the limit and, for the latest state, the applied state shared by the pieces).
    pub(super) async fn count(
        &self,
        request: v1::ShardCountRequest,
    ) -> Result<v1::ShardCountResponse, NodeError> {
        let (_ring, group) = self.node.shard_group(request.shard_id)?;
        let end = check_range(self.node.config().max_key_bytes, &request.start, request.end)?;
        let limit = count_limit(request.limit);
        let mut now_ts = None;
        if request.read_ts == 0 {
            self.check_consistency(&group, request.consistency).await?;
            if request.consistency == v1::Consistency::Linearizable as i32 {
                self.node
                    .check_range_unlocked(&group, &request.start, end.as_deref(), u64::MAX)?;
            }
            now_ts = self.node.expiry_clock(&group).await?;
        } else {
            check_read_at(request.consistency)?;
        }
        let mut limit_left = limit;
        let mut applied = AppliedState::new();
        let mut response = v1::ShardCountResponse::default();
        for (index, (start, end)) in reserved::user_pieces(&request.start, end.as_deref())
            .into_iter()
            .enumerate()
        {
            if limit_left == 0 {
                response.more = true;
                response.last_key = reserved::boundary_after(false);
                break;
            }
            let result = if request.read_ts == 0 {
                group
                    .state
                    .count_live_sharing(start, end, limit_left, now_ts, &mut applied)
                    .await?
            } else {
                self.node
                    .count_at(&group, start, end, limit_left, request.read_ts)
                    .await?
            };
            response.count += result.count;
            limit_left = limit_left.saturating_sub(result.count);
            if result.more {
                response.more = true;
                response.last_key = match result.last_key {
                    Some(last_key) => last_key,
                    None if index > 0 => reserved::boundary_after(false),
                    None => Vec::new(),
                };
                break;
            }
        }
        Ok(response)
    }

    /// Deletes a chunk of one shard's range, leaving out the reserved keyspace as
    /// [`Self::scan`] does. A chunk is one Raft entry of one piece of the range (a retry
    /// with the same request id maps to the same piece): the first piece's last chunk ends
    /// at the reserved keyspace's edge, with more, and the caller's next chunk starts
    /// after it, in the piece above.
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
        let mut pieces = reserved::user_pieces(&request.start, end.as_deref()).into_iter();
        let Some((start, end)) = pieces.next() else {
            return Ok(v1::ShardDeleteRangeResponse::default());
        };
        let result = self
            .node
            .delete_range(&group, request_id, start, end, limit)
            .await?;
        let mut response = v1::ShardDeleteRangeResponse {
            deleted: result.deleted,
            more: result.more,
            last_deleted: result.last_deleted.unwrap_or_default(),
        };
        if !response.more && pieces.next().is_some() {
            response.more = true;
            response.last_deleted = reserved::boundary_after(false);
        }
        Ok(response)
    }
}
