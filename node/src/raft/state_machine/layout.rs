//! The record layout of a group's state-machine tree and the codecs of its keys and values.
//!
//! Tree `<group>.sm.<generation>` (one tree per generation; a snapshot install fills the next
//! generation aside). Every record, by key prefix:
//!
//! | key | value | what |
//! | --- | --- | --- |
//! | `d` ‖ user key | `version \| 1 << 63` (u64 big-endian) ‖ `commit_ts` (u64 big-endian) ‖ flags (u8: 0, or 1 = an expiry follows) ‖ [`expires_at` (u64 big-endian), flag 1 only] ‖ value bytes | a key's latest version (see `mvcc.rs`); the version is the log index of the write. Written before MVCC: version (top bit clear) ‖ value, read as committed at 0 |
//! | `b` ‖ bucket (u16 big-endian) | postcard `Vec<(request id: [u8; 16], sequence: u64, clock_ms: u64, fingerprint: [u8; 16], Vec<(succeeded: bool, version: u64, existed: bool, current_version: Option<u64>)>)>` | a bucket of write de-duplication records (see `dedup/buckets.rs`): the writes whose request ids hash to it, oldest first, each with its sequence number in the table, the shard's de-duplication clock after its entry, its fingerprint and per-op outcome |
//! | `j` ‖ bucket (u16 big-endian) | postcard `Vec<(request id, sequence, clock_ms, fingerprint, DeleteRangeResult)>` | a bucket of delete-range de-duplication records, as `b` |
//! | `v` ‖ request id (16 bytes) | postcard `(fingerprint: [u8; 16], Vec<(succeeded: bool, version: u64, existed: bool, current_version: Option<u64>)>)` | de-duplication record of a write of the previous layout: the write's fingerprint and per-op outcome (a failed comparison's current version, not its value; read and drained, no longer written) |
//! | `w` ‖ request id (16 bytes) | postcard `Vec<WriteOpResult>` (`current: Option<Versioned>`) | de-duplication record of a write without a fingerprint (read, matching any write, and pruned; no longer written) |
//! | `l` ‖ log index (u64 big-endian) | postcard `(clock_ms: u64, Vec<request id>)` | the write records (`v` or `w`) made by that entry (pruning walks these oldest first), and the shard's de-duplication clock after it (written before that clock: the entry's own `issued_at_ms`); previous layout, no longer written |
//! | `u` ‖ request id (16 bytes) | postcard `(fingerprint: [u8; 16], DeleteRangeResult)` | de-duplication record of a delete-range of the previous layout |
//! | `g` ‖ request id (16 bytes) | postcard `DeleteRangeResult` | de-duplication record of a delete-range without a fingerprint (read and pruned; no longer written) |
//! | `h` ‖ log index (u64 big-endian) | postcard `(clock_ms: u64, Vec<request id>)` | the delete-range records (`u` or `g`) made by that entry, as `l` |
//! | `n` | postcard `(writes: u64, delete_ranges: u64, clock_ms: u64, writes_recorded: u64, delete_ranges_recorded: u64)` | how many write (`v`, `w`) and delete-range (`u`, `g`) records of the previous layout are left, the shard's de-duplication clock (the highest `issued_at_ms` applied), and how many writes and delete-ranges were recorded in buckets (`b`, `j`). Written before buckets: the first three fields; before the clock: the first two (the clock is then the newest `l`/`h` list's) |
//! | `r` ‖ request id (16 bytes) | postcard `(expires_at_ms: u64, Vec<WriteOpResult>)` | legacy write record (read and drained, no longer written) |
//! | `x` ‖ expires_at_ms (u64 big-endian) ‖ request id | empty | expiry index of the `r` records (legacy) |
//! | `q` ‖ request id (16 bytes) | postcard `(expires_at_ms: u64, DeleteRangeResult)` | legacy delete-range record |
//! | `y` ‖ expires_at_ms (u64 big-endian) ‖ request id | empty | expiry index of the `q` records (legacy) |
//! | `z` ‖ expires_at (u64 big-endian) ‖ user key | empty | expiry index: one record per head that expires (shards; see `expiry.rs`) |
//! | `a` | postcard `LogId` | last applied log id |
//! | `i` | postcard `(LogId, Vec<(key, Option<value>)>)` | the last applied entry's writes, recorded before they are made (see `apply.rs`) |
//! | `m` | postcard `StoredMembership` | last applied membership |
//! | `s` | u64 big-endian | the highest commit timestamp applied (shards; see `mvcc.rs`) |
//! | `k` ‖ user key | postcard `Lock` | a transaction's prewritten, uncommitted write of the key (shards; see `txn.rs`) |
//! | `t` ‖ start timestamp (u64 big-endian) | postcard `TxnStatus` | a transaction's status, on its primary key's shard |
//! | `f` | u64 big-endian | the transaction safe point: prewrites that started below it are refused, records below it may be gone (shards; see `txn.rs`) |
//! | `c` | postcard `ClusterConfig` | cluster configuration (system group only) |
//! | `o` | postcard `u64` | the timestamp oracle's persisted bound, in milliseconds (system group only) |
//!
//! Values marked postcard are postcard-encoded (integers as varints, a struct as its fields
//! in order). Outside the tree, the node catalog maps `sm-generation/<group>` to the postcard
//! `u64` generation in use.
//!
//! A snapshot is every pair of the tree as stored, so this table is also the snapshot's
//! content: existing data directories and snapshots load only as long as it does not change.
//! Records of other kinds sort on both sides of the `d` records: range reads stay among the
//! data records by bounding their ranges to the data prefix.

use std::ops::Bound;

#[cfg(test)]
use crate::raft::types::Versioned;
use crate::raft::types::{GroupId, RequestId};
use crate::storage::{prefix_bounds, StorageError};

/// Data records: `d` + user key.
pub(super) const DATA_PREFIX: u8 = b'd';
/// Buckets of de-duplication records of writes: `b` + bucket (u16 big-endian).
pub(super) const WRITE_BUCKET_PREFIX: u8 = b'b';
/// Buckets of de-duplication records of delete-ranges: `j` + bucket (u16 big-endian).
pub(super) const RANGE_BUCKET_PREFIX: u8 = b'j';
/// De-duplication records of writes of the previous layout: `v` + request id.
pub(super) const WRITE_RECORD_PREFIX: u8 = b'v';
/// De-duplication records of writes written before fingerprints: `w` + request id.
pub(super) const WRITE_UNFINGERPRINTED_PREFIX: u8 = b'w';
/// Request lists of the write records: `l` + log index.
pub(super) const WRITE_LIST_PREFIX: u8 = b'l';
/// De-duplication records of delete-ranges, with their fingerprints: `u` + request id.
pub(super) const RANGE_RECORD_PREFIX: u8 = b'u';
/// De-duplication records of delete-ranges written before fingerprints: `g` + request id.
pub(super) const RANGE_UNFINGERPRINTED_PREFIX: u8 = b'g';
/// Request lists of the delete-range records: `h` + log index.
pub(super) const RANGE_LIST_PREFIX: u8 = b'h';
/// The record counts of both de-duplication tables.
pub(super) const COUNTS_KEY: &[u8] = b"n";
/// Legacy de-duplication records of writes: `r` + request id.
pub(super) const WRITE_DEDUP_PREFIX: u8 = b'r';
/// Legacy expiry index of the write records: `x` + expiry + request id.
pub(super) const WRITE_EXPIRY_PREFIX: u8 = b'x';
/// Legacy de-duplication records of delete-ranges: `q` + request id.
pub(super) const RANGE_DEDUP_PREFIX: u8 = b'q';
/// Legacy expiry index of the delete-range records: `y` + expiry + request id.
pub(super) const RANGE_EXPIRY_PREFIX: u8 = b'y';
/// Transaction locks: `k` + user key.
pub(super) const LOCK_PREFIX: u8 = b'k';
/// Transaction records: `t` + start timestamp.
pub(super) const TXN_RECORD_PREFIX: u8 = b't';
/// The transaction safe point (u64 big-endian).
pub(super) const TXN_SAFE_POINT_KEY: &[u8] = b"f";
/// The last applied log id.
pub(in crate::raft) const APPLIED_KEY: &[u8] = b"a";
/// The writes of the entry being applied, recorded first (see `apply.rs`).
pub(in crate::raft) const INTENT_KEY: &[u8] = b"i";
/// The last applied membership.
pub(in crate::raft) const MEMBERSHIP_KEY: &[u8] = b"m";
/// The cluster configuration.
pub(super) const CLUSTER_KEY: &[u8] = b"c";
/// The timestamp oracle's persisted bound (milliseconds).
pub(super) const TSO_LIMIT_KEY: &[u8] = b"o";
/// The permission table (system group; `ringkv_authz::AuthTable`, postcard).
pub(super) const AUTH_KEY: &[u8] = b"e";

/// Bytes of a request id in a key.
const REQUEST_ID_BYTES: usize = std::mem::size_of::<RequestId>();
/// Bytes of an expiry in an index key.
const EXPIRY_BYTES: usize = std::mem::size_of::<u64>();

/// The tree holding `generation` of `group`'s state machine.
pub(in crate::raft) fn sm_tree_name(group: GroupId, generation: u64) -> String {
    format!("{}{generation}", sm_tree_prefix(group))
}

/// The name shared by every generation's tree of `group`.
pub(super) fn sm_tree_prefix(group: GroupId) -> String {
    format!("{}.sm.", group.name())
}

/// The node-catalog key recording `group`'s generation in use.
pub(super) fn catalog_key(group: GroupId) -> Vec<u8> {
    format!("sm-generation/{}", group.name()).into_bytes()
}

/// The data record key of a user key (`d` + key).
pub(super) fn data_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(DATA_PREFIX);
    out.extend_from_slice(key);
    out
}

/// The lock record key of a user key (`k` + key).
pub(super) fn lock_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(LOCK_PREFIX);
    out.extend_from_slice(key);
    out
}

/// The transaction record key of transaction `start_ts` (`t` + start timestamp).
pub(super) fn txn_record_key(start_ts: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8);
    out.push(TXN_RECORD_PREFIX);
    out.extend_from_slice(&start_ts.to_be_bytes());
    out
}

/// The user key of a data record (`d` + key).
pub(super) fn user_key(tree: &str, key: &[u8]) -> Result<Vec<u8>, StorageError> {
    match key.split_first() {
        Some((&DATA_PREFIX, rest)) => Ok(rest.to_vec()),
        _ => Err(StorageError::Corrupt {
            tree: tree.to_string(),
            detail: "data record key without the data prefix".to_string(),
        }),
    }
}

/// Lower and upper bounds of a range of tree keys.
pub(super) type KeyBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Bounds of every data record.
pub(super) fn all_data_bounds() -> KeyBounds {
    prefix_bounds(&[DATA_PREFIX])
}

/// Bounds of the data records of the keys in `[start, end)` (`None` end = no upper bound),
/// or `None` when the range is empty.
pub(super) fn data_bounds(start: &[u8], end: Option<&[u8]>) -> Option<KeyBounds> {
    let upper = match end {
        Some(end) if start >= end => return None,
        Some(end) => Bound::Excluded(data_key(end)),
        // The end of the data prefix: never reaches the records under other prefixes.
        None => all_data_bounds().1,
    };
    Some((Bound::Included(data_key(start)), upper))
}

/// Bounds of the lock records of the keys in `[start, end)` (`None` end = no upper bound),
/// or `None` when the range is empty.
pub(super) fn lock_bounds(start: &[u8], end: Option<&[u8]>) -> Option<KeyBounds> {
    let upper = match end {
        Some(end) if start >= end => return None,
        Some(end) => Bound::Excluded(lock_key(end)),
        None => prefix_bounds(&[LOCK_PREFIX]).1,
    };
    Some((Bound::Included(lock_key(start)), upper))
}

/// A data record value in the format before MVCC: version (big-endian) then the value bytes
/// (still read, see `mvcc::decode_head`; tests write it to check that).
#[cfg(test)]
pub(super) fn encode_value(versioned: &Versioned) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + versioned.value.len());
    out.extend_from_slice(&versioned.version.to_be_bytes());
    out.extend_from_slice(&versioned.value);
    out
}

/// A de-duplication record key (`prefix` + request id).
pub(super) fn request_key(prefix: u8, request_id: &RequestId) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + REQUEST_ID_BYTES);
    out.push(prefix);
    out.extend_from_slice(request_id);
    out
}

/// A request list key (`prefix` + log index, big-endian): lists sort oldest first.
#[cfg(test)]
pub(super) fn list_key(prefix: u8, log_index: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8);
    out.push(prefix);
    out.extend_from_slice(&log_index.to_be_bytes());
    out
}

/// The log index of a request list key; `None` when the key does not hold one.
pub(super) fn split_list_key(key: &[u8]) -> Option<u64> {
    let index: [u8; 8] = key.get(1..)?.try_into().ok()?;
    Some(u64::from_be_bytes(index))
}

/// An expiry index key (`prefix` + expiry + request id): index keys sort by expiry. Only
/// tests still write legacy records.
#[cfg(test)]
pub(super) fn expiry_key(prefix: u8, expires_at_ms: u64, request_id: &RequestId) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + EXPIRY_BYTES + REQUEST_ID_BYTES);
    out.push(prefix);
    out.extend_from_slice(&expires_at_ms.to_be_bytes());
    out.extend_from_slice(request_id);
    out
}

/// The expiry of an expiry index key and its request id when the key holds one whole;
/// `None` when the key is too short to hold an expiry.
pub(super) fn split_expiry_key(key: &[u8]) -> Option<(u64, Option<RequestId>)> {
    let expiry_end = 1 + EXPIRY_BYTES;
    let expires: [u8; EXPIRY_BYTES] = key.get(1..expiry_end)?.try_into().ok()?;
    let request_id = key
        .get(expiry_end..expiry_end + REQUEST_ID_BYTES)
        .and_then(|id| id.try_into().ok());
    Some((u64::from_be_bytes(expires), request_id))
}

#[cfg(test)]
mod tests {
    use std::ops::RangeBounds;

    use proptest::prelude::*;

    use super::*;

    /// Keys drawn from a small alphabet with the extreme bytes, so ranges and prefixes meet.
    fn small_key() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![Just(0u8), Just(b'd'), Just(0xffu8), any::<u8>()],
            0..5,
        )
    }

    /// Tree names, catalog keys and fixed keys are part of the on-disk format.
    #[test]
    fn names_and_fixed_keys_are_stable() {
        assert_eq!(sm_tree_name(GroupId::Shard(3), 7), "shard-3.sm.7");
        assert!(sm_tree_name(GroupId::System, 0).starts_with(&sm_tree_prefix(GroupId::System)));
        assert_eq!(catalog_key(GroupId::Shard(3)), b"sm-generation/shard-3".to_vec());
        assert_eq!(
            [APPLIED_KEY, INTENT_KEY, MEMBERSHIP_KEY, CLUSTER_KEY],
            [&b"a"[..], b"i", b"m", b"c"]
        );
        assert_eq!(data_key(b"k"), b"dk".to_vec());
        assert_eq!(
            encode_value(&Versioned {
                version: 258,
                value: b"v".to_vec()
            }),
            vec![0, 0, 0, 0, 0, 0, 1, 2, b'v']
        );
        assert_eq!(request_key(b'r', &[7; 16]), [&[b'r'][..], &[7; 16]].concat());
        assert_eq!(list_key(b'l', 258), vec![b'l', 0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(split_list_key(&list_key(b'l', 258)), Some(258));
        assert_eq!(split_list_key(b"l1"), None);
        assert_eq!(COUNTS_KEY, b"n");
        assert_eq!(
            [
                WRITE_RECORD_PREFIX,
                WRITE_UNFINGERPRINTED_PREFIX,
                WRITE_LIST_PREFIX,
                RANGE_RECORD_PREFIX,
                RANGE_UNFINGERPRINTED_PREFIX,
                RANGE_LIST_PREFIX
            ],
            *b"vwlugh"
        );
        assert_eq!(
            expiry_key(b'x', 258, &[7; 16]),
            [&[b'x', 0, 0, 0, 0, 0, 0, 1, 2][..], &[7; 16]].concat()
        );
    }

    /// A data key without the data prefix and a value shorter than a version are corrupt.
    #[test]
    fn malformed_records_are_corrupt() {
        assert!(user_key("t", b"").is_err());
        assert!(user_key("t", b"rk").is_err());
        assert_eq!(split_expiry_key(&[b'x', 0, 0]), None);
        assert_eq!(split_expiry_key(&[b'x', 0, 0, 0, 0, 0, 0, 0, 9]), Some((9, None)));
    }

    proptest! {
        /// A data record's key decodes to the user key.
        #[test]
        fn data_keys_round_trip(key in small_key()) {
            prop_assert_eq!(user_key("t", &data_key(&key)).ok(), Some(key));
        }

        /// An expiry index key splits back into its expiry and request id, and index keys
        /// sort by expiry first (pruning walks them oldest first).
        #[test]
        fn expiry_keys_round_trip_and_sort_by_expiry(
            first in any::<(u64, [u8; 16])>(),
            second in any::<(u64, [u8; 16])>(),
        ) {
            let first_key = expiry_key(b'x', first.0, &first.1);
            prop_assert_eq!(split_expiry_key(&first_key), Some((first.0, Some(first.1))));
            let second_key = expiry_key(b'x', second.0, &second.1);
            prop_assert_eq!(first_key.cmp(&second_key), first.cmp(&second));
        }

        /// The bounds of `[start, end)` hold a tree key exactly when it is the data record
        /// of a key in the range: never a record of another kind.
        #[test]
        fn data_bounds_hold_exactly_the_range(
            start in small_key(),
            end in proptest::option::of(small_key()),
            tree_key in small_key(),
        ) {
            let in_range = |key: &[u8]| key >= start.as_slice() && end.as_ref().is_none_or(|end| key < end.as_slice());
            let expected = match tree_key.split_first() {
                Some((&DATA_PREFIX, key)) => in_range(key),
                _ => false,
            };
            let held = data_bounds(&start, end.as_deref()).is_some_and(|bounds| bounds.contains(&tree_key));
            prop_assert_eq!(held, expected);
        }
    }
}
