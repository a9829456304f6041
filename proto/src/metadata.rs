//! The `x-ringkv-*` gRPC metadata on error statuses: the part of the error contract that
//! protobuf messages do not carry. Every writer (nodes, routers, test fakes) and every reader
//! (routers, the client) goes through these functions; the keys are private to this module.
//!
//! | key                        | set by          | meaning                                        |
//! |----------------------------|-----------------|------------------------------------------------|
//! | `x-ringkv-leader-id`       | node            | not the leader; this node id is (decimal)      |
//! | `x-ringkv-leader-addr`     | node            | not the leader; the leader's `host:port`       |
//! | `x-ringkv-rejected`        | node            | `1`: the write was definitely not applied      |
//! | `x-ringkv-outcome-unknown` | node and router | `1`: the write may or may not have been applied |
//! | `x-ringkv-txn-abort`       | router          | a transaction aborted (ABORTED): why           |
//! | `x-ringkv-retryable`       | router          | `1`: running the transaction again may succeed |
//! | `x-ringkv-user` (request) | router → node   | the user the router acts for (issue 15)        |
//! | `authorization` (request) | client → router or node | `Bearer <token>`: the caller acts for the token's user (issue 15; [`bearer_token`]) |
//! | `x-ringkv-request-id-reused` | node and router | `1`: INVALID_ARGUMENT because the write's request id was used for a different request; nothing was applied |
//!
//! A "key locked" error (`RESOURCE_EXHAUSTED`) carries the lock it met as its status
//! details: a protobuf-encoded `LockInfo` ([`locked`], [`lock_info`]).
//!
//! Readers are deliberately asymmetric about values. A rejection counts only when the value
//! is exactly `1` (reading a rejection where there was none would let a write be retried
//! elsewhere after it was applied), while outcome-unknown counts whatever the value (reading
//! it where there was none only makes a caller more careful).

use tonic::metadata::MetadataValue;
use tonic::Status;

/// Carries the leader's node id on a not-leader error.
const LEADER_ID: &str = "x-ringkv-leader-id";
/// Carries the leader's address on a not-leader error.
const LEADER_ADDR: &str = "x-ringkv-leader-addr";
/// Set on write errors whose outcome is unknown.
const OUTCOME_UNKNOWN: &str = "x-ringkv-outcome-unknown";
/// Set on write errors where the write was definitely not applied (rejected before it was
/// proposed), so a router may retry it anywhere.
const REJECTED: &str = "x-ringkv-rejected";

/// Set on a transaction's abort: the reason (`WRITE_CONFLICT`, `LOCK_CONFLICT`, ...).
const TXN_ABORT: &str = "x-ringkv-txn-abort";
/// Set on a transaction's abort: `1` when running it again may succeed.
const RETRYABLE: &str = "x-ringkv-retryable";

/// Set on the refusal of a write whose request id was used for a different request.
const REQUEST_ID_REUSED: &str = "x-ringkv-request-id-reused";

/// The value of the flag keys.
const FLAG_SET: &str = "1";

/// Longest leader address hint a reader accepts (the hint is network input).
/// The request metadata key by which a router tells a node which user it acts for (the user
/// its caller's client certificate names). A node believes it only from a router's
/// certificate (issue 15); a client's own certificate names its user.
pub const USER: &str = "x-ringkv-user";

/// The request metadata key by which a router tells a node the address of the client whose
/// password login (or password change) it forwards, so the node counts failed logins per
/// client, not per router. A node believes it only from a router's certificate.
pub const CLIENT_ADDR: &str = "x-ringkv-client-addr";

/// Request metadata: `Bearer <token>`, a token from `Auth.Login` (issue 15).
pub const AUTHORIZATION: &str = "authorization";
/// What precedes the token in [`AUTHORIZATION`].
pub const BEARER_PREFIX: &str = "Bearer ";

/// The token of an [`AUTHORIZATION`] value (`None`: not a bearer token).
pub fn bearer_token(value: &str) -> Option<&str> {
    value.strip_prefix(BEARER_PREFIX).map(str::trim)
}

pub const MAX_LEADER_ADDR_BYTES: usize = 256;

/// The leader a not-leader error names: at least one of the two parts is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's node id (never 0).
    pub leader_id: Option<u64>,
    /// The leader's `host:port`: non-empty, without whitespace, at most
    /// [`MAX_LEADER_ADDR_BYTES`].
    pub leader_addr: Option<String>,
}

/// Names the leader on a not-leader error. An address that cannot be sent as gRPC metadata
/// (non-ASCII) is left out.
pub fn set_leader_hint(status: &mut Status, leader_id: u64, leader_addr: Option<&str>) {
    let metadata = status.metadata_mut();
    metadata.insert(LEADER_ID, MetadataValue::from(leader_id));
    if let Some(value) = leader_addr.and_then(|addr| MetadataValue::try_from(addr).ok()) {
        metadata.insert(LEADER_ADDR, value);
    }
}

/// The leader a not-leader error names, if any part of the hint is usable: an id that is
/// not a non-zero number and an address that is empty, too long or contains whitespace are
/// ignored (surrounding whitespace is trimmed).
pub fn leader_hint(status: &Status) -> Option<LeaderHint> {
    let metadata = status.metadata();
    let leader_id = metadata
        .get(LEADER_ID)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|id| *id != 0);
    let leader_addr = metadata
        .get(LEADER_ADDR)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|addr| {
            !addr.is_empty() && addr.len() <= MAX_LEADER_ADDR_BYTES && !addr.chars().any(char::is_whitespace)
        })
        .map(str::to_string);
    if leader_id.is_none() && leader_addr.is_none() {
        return None;
    }
    Some(LeaderHint {
        leader_id,
        leader_addr,
    })
}

/// Marks a write error as a definite rejection: the write was not applied.
pub fn set_rejected(status: &mut Status) {
    status
        .metadata_mut()
        .insert(REJECTED, MetadataValue::from_static(FLAG_SET));
}

/// Whether a write error is marked as a definite rejection (value exactly `1`, trimmed).
pub fn is_rejected(status: &Status) -> bool {
    status
        .metadata()
        .get(REJECTED)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim() == FLAG_SET)
}

/// Marks a write error as ambiguous: the write may or may not have been applied.
pub fn set_outcome_unknown(status: &mut Status) {
    status
        .metadata_mut()
        .insert(OUTCOME_UNKNOWN, MetadataValue::from_static(FLAG_SET));
}

/// Whether a write error is marked as ambiguous (the key present, whatever its value).
pub fn is_outcome_unknown(status: &Status) -> bool {
    status.metadata().get(OUTCOME_UNKNOWN).is_some()
}

/// The refusal of a write (or delete-range) whose request id is remembered for a different
/// request: INVALID_ARGUMENT, marked so routers and clients tell it from other bad input.
/// Nothing was applied; it must not be retried as it is.
pub fn request_id_reused(message: impl Into<String>) -> Status {
    let mut status = Status::invalid_argument(message);
    status
        .metadata_mut()
        .insert(REQUEST_ID_REUSED, MetadataValue::from_static(FLAG_SET));
    status
}

/// Whether a status is the refusal of a reused request id (INVALID_ARGUMENT with the flag
/// exactly `1`).
pub fn is_request_id_reused(status: &Status) -> bool {
    status.code() == tonic::Code::InvalidArgument
        && status
            .metadata()
            .get(REQUEST_ID_REUSED)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.trim() == FLAG_SET)
}

/// An aborted transaction: ABORTED with the reason (an upper-case word) and whether running
/// it again may succeed.
pub fn txn_aborted(message: impl Into<String>, reason: &'static str, retryable: bool) -> Status {
    let mut status = Status::aborted(message);
    status
        .metadata_mut()
        .insert(TXN_ABORT, MetadataValue::from_static(reason));
    let flag = if retryable { FLAG_SET } else { "0" };
    status
        .metadata_mut()
        .insert(RETRYABLE, MetadataValue::from_static(flag));
    status
}

/// The reason and retryable flag of an aborted transaction; `None` for another status.
pub fn txn_abort(status: &Status) -> Option<(String, bool)> {
    if status.code() != tonic::Code::Aborted {
        return None;
    }
    let reason = status
        .metadata()
        .get(TXN_ABORT)?
        .to_str()
        .ok()?
        .trim()
        .to_string();
    let retryable = status
        .metadata()
        .get(RETRYABLE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim() == FLAG_SET);
    Some((reason, retryable))
}

/// A "key locked" error: the request met a transaction's lock (in the details), was not
/// applied, and may be retried once the lock is resolved.
pub fn locked(message: impl Into<String>, lock: &crate::v1::LockInfo) -> Status {
    use prost::Message;
    Status::with_details(
        tonic::Code::ResourceExhausted,
        message,
        lock.encode_to_vec().into(),
    )
}

/// The lock a "key locked" error met; `None` for any other status (or undecodable details:
/// network input).
pub fn lock_info(status: &Status) -> Option<crate::v1::LockInfo> {
    use prost::Message;
    if status.code() != tonic::Code::ResourceExhausted || status.details().is_empty() {
        return None;
    }
    crate::v1::LockInfo::decode(status.details()).ok()
}

/// Every key above, the ones a [`write_failure`] carries.
const KEYS: [&str; 5] = [
    LEADER_ID,
    LEADER_ADDR,
    OUTCOME_UNKNOWN,
    REJECTED,
    REQUEST_ID_REUSED,
];

/// One write's error status of a `ShardKv.WriteBatch`, as a message (code, message and the
/// `x-ringkv-*` metadata).
pub fn write_failure(status: &Status) -> crate::v1::WriteFailure {
    let metadata = KEYS
        .iter()
        .filter_map(|key| {
            let value = status.metadata().get(*key)?.to_str().ok()?;
            Some(crate::v1::MetadataEntry {
                key: (*key).to_string(),
                value: value.to_string(),
            })
        })
        .collect();
    crate::v1::WriteFailure {
        code: status.code() as i32,
        message: status.message().to_string(),
        metadata,
        details: status.details().to_vec(),
    }
}

/// The status a [`write_failure`] describes. Network input: an unknown code reads as
/// `UNKNOWN`, and metadata outside the `x-ringkv-*` keys above (or not sendable as metadata)
/// is dropped.
pub fn failure_status(failure: crate::v1::WriteFailure) -> Status {
    let mut status = Status::with_details(
        tonic::Code::from_i32(failure.code),
        failure.message,
        failure.details.into(),
    );
    for entry in failure.metadata {
        let Some(key) = KEYS.iter().find(|key| **key == entry.key) else {
            continue;
        };
        if let Ok(value) = MetadataValue::try_from(entry.value.as_str()) {
            status.metadata_mut().insert(*key, value);
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure message carries a status's code, message and flags, and nothing else.
    #[test]
    fn write_failures_round_trip_only_ringkv_metadata() {
        let mut status = Status::unavailable("not the leader");
        set_leader_hint(&mut status, 3, Some("10.0.0.3:7003"));
        set_rejected(&mut status);
        status
            .metadata_mut()
            .insert("x-other", MetadataValue::from_static("secret"));
        let mut failure = write_failure(&status);
        assert_eq!(failure.metadata.len(), 3);
        failure.metadata.push(crate::v1::MetadataEntry {
            key: "x-injected".to_string(),
            value: "1".to_string(),
        });
        let back = failure_status(failure);
        assert_eq!(back.code(), tonic::Code::Unavailable);
        assert_eq!(back.message(), "not the leader");
        assert!(is_rejected(&back));
        assert!(!is_outcome_unknown(&back));
        assert_eq!(
            leader_hint(&back),
            Some(LeaderHint {
                leader_id: Some(3),
                leader_addr: Some("10.0.0.3:7003".to_string()),
            })
        );
        assert!(back.metadata().get("x-other").is_none());
        assert!(back.metadata().get("x-injected").is_none());
        let unknown_code = failure_status(crate::v1::WriteFailure {
            code: 999,
            message: String::new(),
            metadata: Vec::new(),
            details: Vec::new(),
        });
        assert_eq!(unknown_code.code(), tonic::Code::Unknown);
    }

    /// A "key locked" error carries its lock, also through a batch's failure message;
    /// other statuses carry none, and undecodable details read as none.
    #[test]
    fn locks_travel_in_the_details() {
        let lock = crate::v1::LockInfo {
            key: b"k".to_vec(),
            start_ts: 7,
            primary: b"p".to_vec(),
        };
        let status = locked("key k is locked", &lock);
        assert_eq!(lock_info(&status), Some(lock.clone()));
        assert_eq!(lock_info(&failure_status(write_failure(&status))), Some(lock));
        assert_eq!(lock_info(&Status::resource_exhausted("overloaded")), None);
        let garbage = Status::with_details(tonic::Code::ResourceExhausted, "x", vec![0xff; 3].into());
        assert_eq!(lock_info(&garbage), None);
    }

    /// A reused request id's refusal is marked INVALID_ARGUMENT, keeps its mark through a
    /// batch's failure message, and nothing else reads as one.
    #[test]
    fn reused_request_ids_are_marked() {
        let mut status = request_id_reused("request id 07 was already used");
        set_rejected(&mut status);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(is_request_id_reused(&status));
        let back = failure_status(write_failure(&status));
        assert!(is_request_id_reused(&back) && is_rejected(&back));
        assert_eq!(back.message(), status.message());
        assert!(!is_request_id_reused(&Status::invalid_argument("bad key")));
        let mut other_code = Status::unavailable("x");
        other_code
            .metadata_mut()
            .insert(REQUEST_ID_REUSED, MetadataValue::from_static(FLAG_SET));
        assert!(!is_request_id_reused(&other_code));
    }

    /// A metadata key and its raw value.
    type Pair = (&'static str, &'static str);

    fn with_metadata(pairs: &[Pair]) -> Status {
        let mut status = Status::unavailable("node says no");
        for (key, value) in pairs {
            status
                .metadata_mut()
                .insert(*key, MetadataValue::from_static(value));
        }
        status
    }

    /// The keys and values on the wire are the ones older versions write and read.
    #[test]
    fn wire_format_is_unchanged() {
        let mut status = Status::unavailable("not the leader");
        set_leader_hint(&mut status, 3, Some("n3:7100"));
        set_rejected(&mut status);
        set_outcome_unknown(&mut status);
        let value = |key: &str| {
            status
                .metadata()
                .get(key)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string)
        };
        assert_eq!(value("x-ringkv-leader-id").as_deref(), Some("3"));
        assert_eq!(value("x-ringkv-leader-addr").as_deref(), Some("n3:7100"));
        assert_eq!(value("x-ringkv-rejected").as_deref(), Some("1"));
        assert_eq!(value("x-ringkv-outcome-unknown").as_deref(), Some("1"));
    }

    /// What a setter writes, the getter reads; an unmarked status reads as unmarked.
    #[test]
    fn setters_and_getters_agree() {
        let plain = Status::unavailable("no leader");
        assert_eq!(leader_hint(&plain), None);
        assert!(!is_rejected(&plain));
        assert!(!is_outcome_unknown(&plain));

        let mut hinted = plain.clone();
        set_leader_hint(&mut hinted, 7, None);
        assert_eq!(
            leader_hint(&hinted),
            Some(LeaderHint {
                leader_id: Some(7),
                leader_addr: None
            })
        );
        let mut non_ascii = plain.clone();
        set_leader_hint(&mut non_ascii, 7, Some("nœud:1"));
        assert_eq!(leader_hint(&non_ascii).and_then(|hint| hint.leader_addr), None);

        let mut rejected = plain.clone();
        set_rejected(&mut rejected);
        assert!(is_rejected(&rejected));
        assert!(!is_outcome_unknown(&rejected));

        let mut unknown = plain;
        set_outcome_unknown(&mut unknown);
        assert!(is_outcome_unknown(&unknown));
        assert!(!is_rejected(&unknown));
    }

    /// Garbage hints are ignored part by part; a hint with no usable part is no hint.
    #[test]
    fn garbage_hints_are_ignored() {
        let long_addr: &'static str = "a".repeat(MAX_LEADER_ADDR_BYTES + 1).leak();
        let table: [(&[Pair], Option<LeaderHint>); 6] = [
            (
                &[(LEADER_ID, " 3 "), (LEADER_ADDR, " n3:7100 ")],
                Some(LeaderHint {
                    leader_id: Some(3),
                    leader_addr: Some("n3:7100".into()),
                }),
            ),
            (&[(LEADER_ID, "zero"), (LEADER_ADDR, "")], None),
            (&[(LEADER_ID, "0")], None),
            (&[(LEADER_ADDR, "n 3:7100")], None),
            (&[(LEADER_ADDR, long_addr)], None),
            (
                &[(LEADER_ID, "-1"), (LEADER_ADDR, "n3:7100")],
                Some(LeaderHint {
                    leader_id: None,
                    leader_addr: Some("n3:7100".into()),
                }),
            ),
        ];
        for (case, (pairs, expected)) in table.into_iter().enumerate() {
            assert_eq!(leader_hint(&with_metadata(pairs)), expected, "case {case}");
        }
    }

    /// A rejection needs the value `1`; outcome-unknown counts whatever its value.
    #[test]
    fn flag_values_are_read_asymmetrically() {
        assert!(is_rejected(&with_metadata(&[(REJECTED, " 1 ")])));
        assert!(!is_rejected(&with_metadata(&[(REJECTED, "0")])));
        assert!(!is_rejected(&with_metadata(&[(REJECTED, "true")])));
        assert!(is_outcome_unknown(&with_metadata(&[(OUTCOME_UNKNOWN, "true")])));
        assert!(is_outcome_unknown(&with_metadata(&[(OUTCOME_UNKNOWN, "")])));
    }
}
