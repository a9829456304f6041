//! The byte budget of one reply: how much a reply carrying values may hold, so that a
//! client with gRPC's default settings can always receive it.
//!
//! gRPC implementations refuse to receive messages over 4 MiB unless told otherwise (tonic's
//! `max_decoding_message_size`, grpc-go's `MaxCallRecvMsgSize`, grpc-python's
//! `grpc.max_receive_message_length`). A reply's entries (`ScanResponse.entries`,
//! `BatchGetResponse.results`) are counted as encoded protobuf ([`repeated_field_bytes`])
//! and held to [`REPLY_BUDGET_BYTES`]; what else a reply carries fits in
//! [`REPLY_OVERHEAD_BYTES`]:
//!
//! - a continuation token: a key (at most 64 KiB, the largest key limit a router accepts)
//!   plus 14 bytes, with its field header: under 66 KiB;
//! - missing shard ids, packed: at most 65,536 shards × 3 bytes, under 193 KiB;
//! - `BatchGetResponse.remaining`, packed: 3 bytes per key left (positions below 2²¹),
//!   counted against the results' budget by the router ([`remaining_reserve_bytes`]).
//!
//! 3.5 MiB + 512 KiB = 4 MiB. A reply always answers at least one entry, so an entry larger
//! than the budget (a value above 3.5 MiB needs a raised `max_value_bytes`) is sent alone, in
//! a message that large: clients reading such values must raise their receive limit.

/// The largest message gRPC clients receive by default (4 MiB).
pub const DEFAULT_CLIENT_MESSAGE_BYTES: usize = 4 << 20;

/// Room in a reply for everything but its entries (see the module docs).
pub const REPLY_OVERHEAD_BYTES: usize = 512 << 10;

/// Encoded bytes of the entries of one reply: 3.5 MiB.
pub const REPLY_BUDGET_BYTES: usize = DEFAULT_CLIENT_MESSAGE_BYTES - REPLY_OVERHEAD_BYTES;

/// The bytes `message` adds to a reply as one element of a repeated message field: its
/// encoding plus the field's tag and length prefix.
pub fn repeated_field_bytes(message: &impl prost::Message) -> usize {
    // Every repeated field of a reply has a field number below 16: a one-byte tag.
    prost::encoding::message::encoded_len(1, message)
}

/// Bytes set aside in a `BatchGet` reply for the positions of `keys` keys left out: one
/// packed varint of at most 3 bytes each, plus the field's tag and length.
pub fn remaining_reserve_bytes(keys: usize) -> usize {
    keys.saturating_mul(3).saturating_add(8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{BatchGetResponse, KeyValueResult, ScanEntry, ScanResponse};
    use prost::Message;

    /// The entries' counted bytes add up to exactly the encoded reply without its other
    /// fields, and the worst-case overhead fits in what is set aside.
    #[test]
    fn counted_bytes_match_the_encoding() {
        let entries: Vec<ScanEntry> = (0..5u8)
            .map(|i| ScanEntry {
                key: vec![i; 10 + usize::from(i)],
                value: vec![i; 300 * usize::from(i)],
                version: u64::MAX >> i,
                ..Default::default()
            })
            .collect();
        let counted: usize = entries.iter().map(repeated_field_bytes).sum();
        let reply = ScanResponse {
            entries,
            ..ScanResponse::default()
        };
        assert_eq!(counted, reply.encoded_len());

        let worst = ScanResponse {
            continuation_token: vec![0xff; (64 << 10) + 14],
            missing_shards: (0..1u32 << 16).collect(),
            ..ScanResponse::default()
        };
        assert!(
            worst.encoded_len() <= REPLY_OVERHEAD_BYTES,
            "{}",
            worst.encoded_len()
        );

        let keys = 100_000;
        let remaining = BatchGetResponse {
            results: vec![KeyValueResult::default()],
            remaining: (0..keys as u32).collect(),
        };
        let results_bytes = repeated_field_bytes(&KeyValueResult::default());
        assert!(remaining.encoded_len() - results_bytes <= remaining_reserve_bytes(keys));
        assert_eq!(
            REPLY_BUDGET_BYTES + REPLY_OVERHEAD_BYTES,
            DEFAULT_CLIENT_MESSAGE_BYTES
        );
    }
}
