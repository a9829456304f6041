//! Range calls of `ShardKv`: scans, counts and range deletes of one shard. Each leaves the
//! reserved keyspace out unless the range lies inside it (`reserved.rs`). A scan or count
//! of the latest state reads the pieces of its range at one applied state
//! ([`AppliedState`]): when an entry applies between two pieces, the answer ends at the
//! reserved keyspace's edge and the caller reads on from there, as after any full page.

use std::future::Future;

use ringkv_proto::v1;

use super::limits::{self, check_range, count_limit, page_limit, reply_max_bytes};
use super::reserved;
use super::{check_read_at, ShardKvService};
use crate::error::NodeError;
use crate::group::Group;
use crate::node::Node;
use crate::raft::state_machine::{AppliedState, CountResult, GroupState, ScanOptions};

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
        let pieces = reserved::user_pieces(&request.start, end.as_deref());
        let mut reader = match request.read_ts {
            0 => CountReader::Latest {
                state: &group.state,
                now_ts,
                applied: AppliedState::new(),
            },
            read_ts => CountReader::At {
                node: &self.node,
                group: &group,
                read_ts,
            },
        };
        count_pieces(pieces, limit, &mut reader, |_| std::future::ready(())).await
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

/// How a count reads its pieces: the latest keys, at one applied state the pieces share
/// (an entry applied after one piece ends the answer before the next: [`count_pieces`]), or
/// the keys present at a timestamp (fenced per piece as any read at it).
enum CountReader<'a> {
    Latest {
        state: &'a GroupState,
        now_ts: Option<u64>,
        applied: AppliedState,
    },
    At {
        node: &'a Node,
        group: &'a Group,
        read_ts: u64,
    },
}

impl CountReader<'_> {
    async fn count(
        &mut self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u64,
    ) -> Result<CountResult, NodeError> {
        match self {
            CountReader::Latest {
                state,
                now_ts,
                applied,
            } => Ok(state
                .count_live_sharing(start, end, limit, *now_ts, applied)
                .await?),
            CountReader::At { node, group, read_ts } => {
                node.count_at(group, start, end, limit, *read_ts).await
            }
        }
    }
}

/// Counts `pieces` in order as one answer with `reader`, each with the limit left: the
/// first piece that ends with more ends the answer, at its last key, or at the reserved
/// keyspace's edge when it counted nothing after an earlier piece (an entry applied in
/// between, for the latest state) or the limit ran out between two pieces. `before_piece`
/// is awaited before each piece, with its index (tests apply entries there).
async fn count_pieces<F, Fut>(
    pieces: Vec<reserved::Piece>,
    limit: u64,
    reader: &mut CountReader<'_>,
    mut before_piece: F,
) -> Result<v1::ShardCountResponse, NodeError>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut limit_left = limit;
    let mut response = v1::ShardCountResponse::default();
    for (index, (start, end)) in pieces.into_iter().enumerate() {
        if limit_left == 0 {
            response.more = true;
            response.last_key = reserved::boundary_after(false);
            break;
        }
        before_piece(index).await;
        let result = reader.count(start, end, limit_left).await?;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::storage::RaftStateMachine;

    use super::*;
    use crate::raft::state_machine::test_support::{open, put};
    use crate::raft::state_machine::StateMachine;

    /// A count of everything across the reserved keyspace is one answer at one applied
    /// state: with an entry applied between its two pieces, the answer ends at the edge
    /// after the first piece (the router reads on after it) instead of adding a second
    /// piece read at a later state; undisturbed, it counts both pieces, never the lease
    /// record. Fails when each piece reads at its own state.
    #[tokio::test]
    async fn a_count_across_the_reserved_keyspace_is_at_one_applied_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let sm = Arc::new(tokio::sync::Mutex::new(StateMachine::new(state.clone())));
        let keys: [&[u8]; 5] = [b"A", b"B", b"__ringkv/lease/1", b"k1", b"k2"];
        for (index, key) in keys.into_iter().enumerate() {
            let index = index as u64 + 1;
            sm.lock()
                .await
                .apply(vec![put(index, key, b"v", index as u8)])
                .await
                .expect("apply");
        }
        let count_latest = |start: &[u8]| {
            let pieces = reserved::user_pieces(start, None);
            let state = state.clone();
            let sm = sm.clone();
            async move {
                let mut reader = CountReader::Latest {
                    state: &state,
                    now_ts: None,
                    applied: AppliedState::new(),
                };
                let apply_before_second_piece = |piece: usize| {
                    let sm = sm.clone();
                    async move {
                        if piece == 1 {
                            let applied = sm.lock().await.apply(vec![put(6, b"k3", b"v", 6)]).await;
                            applied.expect("apply between the pieces");
                        }
                    }
                };
                count_pieces(pieces, 100, &mut reader, apply_before_second_piece)
                    .await
                    .expect("count")
            }
        };
        let mut quiet_reader = CountReader::Latest {
            state: &state,
            now_ts: None,
            applied: AppliedState::new(),
        };
        let quiet = count_pieces(reserved::user_pieces(b"", None), 100, &mut quiet_reader, |_| {
            std::future::ready(())
        })
        .await
        .expect("count");
        assert_eq!((quiet.count, quiet.more), (4, false), "{quiet:?}");

        let cut = count_latest(b"").await;
        assert_eq!(
            cut,
            v1::ShardCountResponse {
                count: 2,
                more: true,
                last_key: reserved::boundary_after(false),
            },
            "the answer ends at the edge, before a piece read at a later state"
        );
        // The router's next call: the rest of the range, at the state as it is now.
        let mut after_edge = reserved::boundary_after(false);
        after_edge.push(0);
        let rest = count_latest(&after_edge).await;
        assert_eq!((rest.count, rest.more), (3, false), "{rest:?}");
    }
}
