//! The fingerprint of a de-duplicated command: what tells a retry (the same request sent
//! again) from a different request that reuses its request id (invariant 5).
//!
//! A 128-bit SipHash-2-4 with fixed keys of the command's content, computed when the entry is
//! applied: every replica computes the same from the same entry, and neither the wire nor the
//! log format changes. It covers what the command does — each op's key, value (or deletion)
//! and expected version, in order, then their expiries when one is set (TTL); a
//! delete-range's start, end and limit — and not its clock
//! (`issued_at_ms`: a retry through another router or leader carries another one). A retry of
//! a router's sub-request has the same fingerprint because the router derives sub-requests
//! deterministically: a batch's ops of one shard in request order (the shard of a key depends
//! only on the shard count, which never changes), a delete-range's chunks from the outcomes of
//! the chunks before them (which a retry gets again from their records).
//!
//! Fingerprints are stored in de-duplication records (`dedup/`): this function must never
//! change, or retries across an upgrade would be refused as reused ids
//! (`fingerprints_never_change` pins it).

use std::hash::Hasher;

use siphasher::sip128::{Hasher128, SipHasher24};

use crate::raft::types::{DeleteRangeCommand, Expiry, WriteCommand};

/// The fingerprint of a command: 16 bytes of SipHash-2-4.
pub(crate) type Fingerprint = [u8; 16];

/// SipHash keys: ASCII `"ringkv-d"` and `"edup-fp1"`, the same on every replica.
const KEY_0: u64 = u64::from_be_bytes(*b"ringkv-d");
const KEY_1: u64 = u64::from_be_bytes(*b"edup-fp1");

/// First byte hashed for a write (so a write and a delete-range never share a fingerprint).
const WRITE_TAG: u8 = b'w';
/// First byte hashed for a delete-range.
const DELETE_RANGE_TAG: u8 = b'g';

/// The content hasher: every variable-length part is preceded by its length, every optional
/// part by a presence byte, so distinct commands hash distinct byte strings.
struct Content(SipHasher24);

impl Content {
    fn new(tag: u8) -> Content {
        let mut hasher = SipHasher24::new_with_keys(KEY_0, KEY_1);
        hasher.write(&[tag]);
        Content(hasher)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.0.write(&(bytes.len() as u64).to_le_bytes());
        self.0.write(bytes);
    }

    fn present(&mut self, present: bool) {
        self.0.write(&[u8::from(present)]);
    }

    fn number(&mut self, number: u64) {
        self.0.write(&number.to_le_bytes());
    }

    fn finish(self) -> Fingerprint {
        self.0.finish128().as_bytes()
    }
}

/// The fingerprint of a write: its ops in order.
pub(crate) fn of_write(write: &WriteCommand) -> Fingerprint {
    let mut content = Content::new(WRITE_TAG);
    content.number(write.ops.len() as u64);
    for op in &write.ops {
        content.bytes(&op.key);
        content.present(op.value.is_some());
        if let Some(value) = &op.value {
            content.bytes(value);
        }
        content.present(op.expected_version.is_some());
        if let Some(expected) = op.expected_version {
            content.number(expected);
        }
    }
    // Expiries (TTL) after every op, and only when one is set: a write without one hashes
    // what it hashed before they existed.
    if write.ops.iter().any(|op| op.expiry != Expiry::Never) {
        content.present(true);
        for op in &write.ops {
            let (kind, ttl_ms) = match op.expiry {
                Expiry::Never => (0, 0),
                Expiry::After { ttl_ms } => (1, ttl_ms),
                Expiry::Refresh { ttl_ms } => (2, ttl_ms),
                Expiry::Persist => (3, 0),
                Expiry::AtTs { expires_at_ts } => (4, expires_at_ts),
                Expiry::RefreshAtTs { expires_at_ts } => (5, expires_at_ts),
            };
            content.number(kind);
            content.number(ttl_ms);
        }
    }
    content.finish()
}

/// The fingerprint of a delete-range: its range and limit.
pub(super) fn of_delete_range(command: &DeleteRangeCommand) -> Fingerprint {
    let mut content = Content::new(DELETE_RANGE_TAG);
    content.bytes(&command.start);
    content.present(command.end.is_some());
    if let Some(end) = &command.end {
        content.bytes(end);
    }
    content.number(u64::from(command.limit));
    content.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::WriteOp;

    fn op(key: &[u8], value: Option<&[u8]>, expected_version: Option<u64>) -> WriteOp {
        WriteOp {
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
            expected_version,
            expiry: Default::default(),
        }
    }

    fn write(request_id: u8, issued_at_ms: u64, ops: Vec<WriteOp>) -> WriteCommand {
        WriteCommand {
            request_id: [request_id; 16],
            issued_at_ms,
            ops,
        }
    }

    fn range(start: &[u8], end: Option<&[u8]>, limit: u32, issued_at_ms: u64) -> DeleteRangeCommand {
        DeleteRangeCommand {
            request_id: [1; 16],
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            limit,
            issued_at_ms,
        }
    }

    /// Fingerprints are stored: the same command must hash to the same bytes in every
    /// build, on every replica.
    #[test]
    fn fingerprints_never_change() {
        let put = write(1, 1_000, vec![op(b"k", Some(b"v"), None)]);
        assert_eq!(
            of_write(&put),
            [
                0xc2, 0x07, 0xcd, 0xa7, 0x56, 0x1c, 0x73, 0xde, 0x12, 0x56, 0x27, 0x77, 0x64, 0x12, 0x9c,
                0x53
            ]
        );
        assert_eq!(
            of_delete_range(&range(b"a", Some(b"z"), 100, 1_000)),
            [
                0x11, 0xb1, 0x8b, 0x7e, 0x2d, 0x2e, 0xff, 0xf4, 0x21, 0xec, 0x2f, 0x8d, 0x89, 0x58, 0x49,
                0x12
            ]
        );
    }

    /// Streaming the parts hashes exactly their concatenation (no hidden framing).
    #[test]
    fn the_fingerprint_is_the_hash_of_the_framed_content() {
        let put = write(1, 1_000, vec![op(b"k", Some(b"v"), Some(7))]);
        let framed = [
            &[WRITE_TAG][..],
            &1u64.to_le_bytes(),
            &1u64.to_le_bytes(),
            b"k",
            &[1],
            &1u64.to_le_bytes(),
            b"v",
            &[1],
            &7u64.to_le_bytes(),
        ]
        .concat();
        let whole = SipHasher24::new_with_keys(KEY_0, KEY_1).hash(&framed).as_bytes();
        assert_eq!(of_write(&put), whole);
    }

    /// A retry (same content, another clock or id) has the same fingerprint; any change of
    /// what the command does changes it.
    #[test]
    fn only_the_content_counts() {
        let base = write(1, 1_000, vec![op(b"k", Some(b"v"), None)]);
        assert_eq!(
            of_write(&base),
            of_write(&write(2, 99_000, base.ops.clone())),
            "clock and id are not content"
        );
        let different = [
            vec![op(b"k2", Some(b"v"), None)],
            vec![op(b"k", Some(b"v2"), None)],
            vec![op(b"k", None, None)],
            vec![op(b"k", Some(b""), None)],
            vec![op(b"k", Some(b"v"), Some(0))],
            vec![op(b"k", Some(b"v"), Some(3))],
            vec![op(b"k", Some(b"v"), None), op(b"k", Some(b"v"), None)],
            // Framing: the key/value boundary moves.
            vec![op(b"kv", Some(b""), None)],
        ];
        for (case, ops) in different.into_iter().enumerate() {
            assert_ne!(of_write(&base), of_write(&write(1, 1_000, ops)), "case {case}");
        }
        let base_range = range(b"a", Some(b"z"), 100, 1_000);
        assert_eq!(
            of_delete_range(&base_range),
            of_delete_range(&range(b"a", Some(b"z"), 100, 5_000))
        );
        for (case, other) in [
            range(b"b", Some(b"z"), 100, 1_000),
            range(b"a", Some(b"y"), 100, 1_000),
            range(b"a", None, 100, 1_000),
            range(b"a", Some(b"z"), 99, 1_000),
        ]
        .iter()
        .enumerate()
        {
            assert_ne!(
                of_delete_range(&base_range),
                of_delete_range(other),
                "case {case}"
            );
        }
    }
}
