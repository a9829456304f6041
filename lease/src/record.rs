//! A lease record's value (the format is in the crate docs, for clients in other
//! languages): the granted TTL and the attached keys.

use std::collections::BTreeSet;

use crate::MAX_KEYS_PER_LEASE;

/// The first bytes of a lease record's value (its format's version).
const RECORD_MAGIC: &[u8] = b"ringkv-lease-v1\n";

/// A lease record's value: the granted TTL and the attached keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LeaseRecord {
    pub(crate) ttl_ms: u64,
    pub(crate) keys: BTreeSet<Vec<u8>>,
}

impl LeaseRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = RECORD_MAGIC.to_vec();
        out.extend_from_slice(&self.ttl_ms.to_be_bytes());
        out.extend_from_slice(&(self.keys.len() as u32).to_be_bytes());
        for key in &self.keys {
            out.extend_from_slice(&(key.len() as u32).to_be_bytes());
            out.extend_from_slice(key);
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<LeaseRecord> {
        let mut rest = bytes.strip_prefix(RECORD_MAGIC)?;
        let mut take = |len: usize| -> Option<&[u8]> {
            let (head, tail) = (rest.get(..len)?, rest.get(len..)?);
            rest = tail;
            Some(head)
        };
        let ttl_ms = u64::from_be_bytes(take(8)?.try_into().ok()?);
        let count = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        if count > MAX_KEYS_PER_LEASE {
            return None;
        }
        let mut keys = BTreeSet::new();
        for _ in 0..count {
            let len = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
            keys.insert(take(len)?.to_vec());
        }
        Some(LeaseRecord { ttl_ms, keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record decodes to what was encoded; anything else (another format, a truncated
    /// record, too many keys) is refused.
    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let record = LeaseRecord {
            ttl_ms: 5_000,
            keys: [b"a".to_vec(), b"lock/x".to_vec()].into_iter().collect(),
        };
        let bytes = record.encode();
        assert_eq!(LeaseRecord::decode(&bytes), Some(record));
        assert_eq!(LeaseRecord::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(LeaseRecord::decode(b"hello"), None);
        let mut too_many = RECORD_MAGIC.to_vec();
        too_many.extend_from_slice(&1_000u64.to_be_bytes());
        too_many.extend_from_slice(&(MAX_KEYS_PER_LEASE as u32 + 1).to_be_bytes());
        assert_eq!(LeaseRecord::decode(&too_many), None);
    }
}
