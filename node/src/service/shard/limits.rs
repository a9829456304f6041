//! The bounds of `ShardKv` range calls: page and count limits, byte budgets, range bounds.

use ringkv_proto::v1;

use crate::error::NodeError;

/// Most entries of one scan page, and most keys deleted by one delete-range call.
pub(super) const MAX_PAGE_LIMIT: u32 = 10_000;
/// Keys counted by one count call when the request leaves the limit at 0.
pub(super) const DEFAULT_COUNT_LIMIT: u64 = 100_000;
/// Most keys counted by one count call (larger limits are lowered to it).
pub(super) const MAX_COUNT_LIMIT: u64 = 1_000_000;
/// Key + value bytes of one scan page or read when the request leaves `max_bytes` at 0.
const DEFAULT_REPLY_BYTES: usize = 4 << 20;

/// Checks the bounds of a range `[start, end)` (empty end = no upper bound) and returns the
/// end as an option. `start == end` is a valid, empty range.
///
/// A bound may be one byte longer than a key: a router resuming after a maximal key sends
/// that key followed by a zero byte.
pub(super) fn check_range(
    max_key_bytes: usize,
    start: &[u8],
    end: Vec<u8>,
) -> Result<Option<Vec<u8>>, NodeError> {
    let max_bound = max_key_bytes + 1;
    for (name, key) in [("start", start), ("end", end.as_slice())] {
        if key.len() > max_bound {
            return Err(NodeError::InvalidArgument(format!(
                "range {name} bound is {} bytes, the limit is {max_bound}",
                key.len()
            )));
        }
    }
    if end.is_empty() {
        return Ok(None);
    }
    if start > end.as_slice() {
        return Err(NodeError::InvalidArgument(
            "range start key is greater than its end key".to_string(),
        ));
    }
    Ok(Some(end))
}

/// A read of provisional values is of the latest values, through the leader.
pub(super) fn check_uncommitted(read_ts: u64, consistency: i32) -> Result<(), NodeError> {
    if read_ts != 0 || consistency != v1::Consistency::Linearizable as i32 {
        return Err(NodeError::InvalidArgument(
            "read_uncommitted reads the latest values through the leader: no read_ts, not stale".to_string(),
        ));
    }
    Ok(())
}

/// Checks the entry limit of a scan page or a delete-range (`what` names the call).
pub(super) fn page_limit(limit: u32, what: &str) -> Result<u32, NodeError> {
    if (1..=MAX_PAGE_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(NodeError::InvalidArgument(format!(
            "a {what} needs a limit of 1..={MAX_PAGE_LIMIT}, got {limit}"
        )))
    }
}

/// The keys one count call may count: 0 means the default; larger limits are lowered to
/// the maximum (the caller continues after `last_key`).
pub(super) fn count_limit(limit: u64) -> u64 {
    match limit {
        0 => DEFAULT_COUNT_LIMIT,
        limit => limit.min(MAX_COUNT_LIMIT),
    }
}

/// The byte budget of one scan page or read: 0 means the default; capped at half a message,
/// so a reply within it (or holding one entry, at most a maximal key and value, which a
/// valid config fits in a message) leaves room for its encoding and other fields.
pub(super) fn reply_max_bytes(max_bytes: u64, max_message_bytes: usize) -> usize {
    let requested = match max_bytes {
        0 => DEFAULT_REPLY_BYTES,
        bytes => usize::try_from(bytes).unwrap_or(usize::MAX),
    };
    requested.min(max_message_bytes / 2)
}
