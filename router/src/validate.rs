//! Input validation: every client request is checked against the configured limits before
//! anything is sent to a node. Messages name the field and the limit.

use ringkv_proto::v1::Consistency;

use crate::config::RouterConfig;
use crate::error::{RequestId, RouterError};

/// The request limits of [`RouterConfig`] that validation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_batch_keys: usize,
}

impl Limits {
    /// The limits of a router config.
    pub fn from_config(config: &RouterConfig) -> Self {
        Limits {
            max_key_bytes: config.max_key_bytes,
            max_value_bytes: config.max_value_bytes,
            max_batch_keys: config.max_batch_keys,
        }
    }

    /// A key is 1..=`max_key_bytes` bytes. `field` names it in the message (`key`, `keys[3]`).
    pub fn check_key(&self, field: &dyn std::fmt::Display, key: &[u8]) -> Result<(), RouterError> {
        if key.is_empty() {
            return Err(bad_field(field, format!("{field} must not be empty")));
        }
        if key.len() > self.max_key_bytes {
            return Err(bad_field(
                field,
                format!(
                    "{field} is {} bytes, more than max_key_bytes = {}",
                    key.len(),
                    self.max_key_bytes
                ),
            ));
        }
        Ok(())
    }

    /// A value is at most `max_value_bytes` bytes (empty values are allowed).
    pub fn check_value(&self, field: &dyn std::fmt::Display, value: &[u8]) -> Result<(), RouterError> {
        if value.len() > self.max_value_bytes {
            return Err(bad_field(
                field,
                format!(
                    "{field} is {} bytes, more than max_value_bytes = {}",
                    value.len(),
                    self.max_value_bytes
                ),
            ));
        }
        Ok(())
    }

    /// A batch has at most `max_batch_keys` items.
    pub fn check_batch_len(&self, field: &str, len: usize) -> Result<(), RouterError> {
        if len > self.max_batch_keys {
            return Err(bad_field(
                field,
                format!(
                    "{field} has {len} items, more than max_batch_keys = {}",
                    self.max_batch_keys
                ),
            ));
        }
        Ok(())
    }

    /// Checks every key of a batch of keys.
    pub fn check_keys(&self, field: &str, keys: &[Vec<u8>]) -> Result<(), RouterError> {
        self.check_batch_len(field, keys.len())?;
        for (index, key) in keys.iter().enumerate() {
            self.check_key(&format_args!("{field}[{index}]"), key)?;
        }
        Ok(())
    }
}

/// A malformed `field` (its name as the request spells it, with an index in a batch:
/// `keys[3]`), for the rich error model's field violation.
pub fn bad_field(field: impl std::fmt::Display, message: String) -> RouterError {
    RouterError::BadField {
        field: field.to_string(),
        message,
    }
}

/// A client's request id: empty (the router picks one) or exactly 16 bytes.
pub fn parse_request_id(bytes: &[u8]) -> Result<Option<RequestId>, RouterError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    match RequestId::try_from(bytes) {
        Ok(id) => Ok(Some(id)),
        Err(_) => Err(bad_field(
            "request_id",
            format!(
                "request_id must be empty or exactly 16 bytes, got {} bytes",
                bytes.len()
            ),
        )),
    }
}

/// The client's request id, or a fresh random one for a request that came without. Called
/// once per request: every attempt of it, and every shard's part (`batch::sub_request_id`,
/// `batch::chunk_request_id`), carries this id, so the router's own retries of a request
/// without an id are as safe as a client's retries with one (the node de-duplicates them).
pub fn request_id_or_random(bytes: &[u8]) -> Result<RequestId, RouterError> {
    Ok(parse_request_id(bytes)?.unwrap_or_else(rand::random))
}

/// A known read consistency.
pub fn parse_consistency(value: i32) -> Result<Consistency, RouterError> {
    Consistency::try_from(value).map_err(|_| {
        bad_field(
            "consistency",
            format!("unknown consistency {value} (expected 0 = linearizable or 1 = stale)"),
        )
    })
}

/// A read at a timestamp goes through the leader: stale consistency cannot ask for one.
pub fn check_read_ts(consistency: Consistency, read_ts: u64) -> Result<(), RouterError> {
    if read_ts != 0 && consistency == Consistency::Stale {
        return Err(bad_field(
            "read_ts",
            "a read at a timestamp is served by the shard leader: it cannot be stale".to_string(),
        ));
    }
    Ok(())
}

/// A read of provisional values is of the latest values, through the leader.
pub fn check_read_uncommitted(
    consistency: Consistency,
    read_ts: u64,
    uncommitted: bool,
) -> Result<(), RouterError> {
    if uncommitted && (read_ts != 0 || consistency == Consistency::Stale) {
        return Err(bad_field(
            "read_uncommitted",
            "read_uncommitted reads the latest values through the leader: it takes neither read_ts nor stale consistency"
                .to_string(),
        ));
    }
    Ok(())
}

/// A write's expiry is relative (`ttl_ms`) or absolute (`expires_at_ts`, leases), not both.
pub fn check_one_expiry(ttl_ms: u64, expires_at_ts: u64) -> Result<(), RouterError> {
    if ttl_ms != 0 && expires_at_ts != 0 {
        return Err(bad_field(
            "expires_at_ts",
            "set ttl_ms or expires_at_ts, not both".to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_key_bytes: 8,
        max_value_bytes: 16,
        max_batch_keys: 3,
    };

    fn message(result: Result<(), RouterError>) -> String {
        match result {
            Err(RouterError::BadField { message, .. }) => message,
            other => panic!("expected BadField, got {other:?}"),
        }
    }

    /// Keys must be non-empty and within max_key_bytes; messages name the limit.
    #[test]
    fn keys_are_bounded() {
        assert!(LIMITS.check_key(&"key", b"k").is_ok());
        assert!(LIMITS.check_key(&"key", &[0u8; 8]).is_ok());
        assert_eq!(message(LIMITS.check_key(&"key", b"")), "key must not be empty");
        assert_eq!(
            message(LIMITS.check_key(&"key", &[0u8; 9])),
            "key is 9 bytes, more than max_key_bytes = 8"
        );
    }

    /// Values may be empty but not larger than max_value_bytes.
    #[test]
    fn values_are_bounded() {
        assert!(LIMITS.check_value(&"value", b"").is_ok());
        assert!(LIMITS.check_value(&"value", &[0u8; 16]).is_ok());
        assert!(message(LIMITS.check_value(&"value", &[0u8; 17])).contains("max_value_bytes = 16"));
    }

    /// Batches are bounded by max_batch_keys and each key is named by its index.
    #[test]
    fn batches_are_bounded() {
        let keys = vec![b"a".to_vec(), b"b".to_vec()];
        assert!(LIMITS.check_keys("keys", &keys).is_ok());
        let too_many = vec![b"a".to_vec(); 4];
        assert_eq!(
            message(LIMITS.check_keys("keys", &too_many)),
            "keys has 4 items, more than max_batch_keys = 3"
        );
        let with_empty = vec![b"a".to_vec(), Vec::new()];
        assert_eq!(
            message(LIMITS.check_keys("keys", &with_empty)),
            "keys[1] must not be empty"
        );
    }

    /// A request id is empty or exactly 16 bytes.
    #[test]
    fn request_ids_are_empty_or_sixteen_bytes() {
        assert!(matches!(parse_request_id(b""), Ok(None)));
        assert!(matches!(parse_request_id(&[7u8; 16]), Ok(Some(id)) if id == [7u8; 16]));
        let err = parse_request_id(&[7u8; 5]);
        assert!(
            matches!(err, Err(RouterError::BadField { ref field, ref message }) if field == "request_id" && message.contains("got 5 bytes"))
        );
        let first = request_id_or_random(b"").ok();
        let second = request_id_or_random(b"").ok();
        assert!(first.is_some() && first != second);
    }

    /// Unknown consistency values are rejected.
    #[test]
    fn consistency_is_checked() {
        assert!(matches!(parse_consistency(0), Ok(Consistency::Linearizable)));
        assert!(matches!(parse_consistency(1), Ok(Consistency::Stale)));
        assert!(parse_consistency(9).is_err());
    }

    /// A write's expiry is a TTL or an absolute deadline, never both.
    #[test]
    fn an_expiry_is_relative_or_absolute() {
        assert!(check_one_expiry(0, 0).is_ok());
        assert!(check_one_expiry(5, 0).is_ok());
        assert!(check_one_expiry(0, 5).is_ok());
        assert!(check_one_expiry(5, 5).is_err());
    }
}
