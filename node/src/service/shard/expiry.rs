//! TTL (issue 16) on the `ShardKv` wire: a write op's expiry, and read results with theirs.

use ringkv_proto::v1;

use crate::error::NodeError;
use crate::raft::types::{Expiry, Versioned};

/// The expiry a write op asks for: `keep_value` (expire/persist) keeps the key's value and
/// sets (`ttl_ms` > 0 or `expires_at_ts` > 0) or removes its expiry; otherwise a put's
/// `ttl_ms` or `expires_at_ts` (both 0: never; both set: refused).
pub(super) fn of_op(op: &v1::WriteOp, kind: v1::WriteKind) -> Result<Expiry, NodeError> {
    if op.expires_at_ts != 0 {
        if op.ttl_ms != 0 {
            return Err(NodeError::InvalidArgument(
                "set ttl_ms or expires_at_ts, not both".to_string(),
            ));
        }
        return Ok(match (op.keep_value, kind) {
            (true, _) => Expiry::RefreshAtTs {
                expires_at_ts: op.expires_at_ts,
            },
            (false, v1::WriteKind::Put) => Expiry::AtTs {
                expires_at_ts: op.expires_at_ts,
            },
            (false, _) => {
                return Err(NodeError::InvalidArgument(
                    "an expiry belongs to a put".to_string(),
                ))
            }
        });
    }
    Ok(match (op.keep_value, op.ttl_ms, kind) {
        (false, 0, _) => Expiry::Never,
        (false, ttl_ms, v1::WriteKind::Put) => Expiry::After { ttl_ms },
        (false, _, _) => {
            return Err(NodeError::InvalidArgument(
                "a time to live belongs to a put".to_string(),
            ))
        }
        (true, 0, _) => Expiry::Persist,
        (true, ttl_ms, _) => Expiry::Refresh { ttl_ms },
    })
}

/// Values read without their expiry (provisional reads): answered as never expiring.
pub(super) fn never_expiring(values: Vec<Option<Versioned>>) -> Vec<Option<(Versioned, Option<u64>)>> {
    values
        .into_iter()
        .map(|value| value.map(|value| (value, None)))
        .collect()
}

/// The result of reading `key`: its value and expiry (0: never), or not found.
pub(super) fn read_result(key: Vec<u8>, value: Option<(Versioned, Option<u64>)>) -> v1::KeyValueResult {
    match value {
        Some((versioned, expires_at)) => v1::KeyValueResult {
            key,
            found: true,
            value: versioned.value,
            version: versioned.version,
            expires_at_ts: expires_at.unwrap_or(0),
        },
        None => v1::KeyValueResult {
            key,
            found: false,
            value: Vec::new(),
            version: 0,
            expires_at_ts: 0,
        },
    }
}
