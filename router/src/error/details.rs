//! The standard rich gRPC error model on every error the router returns: each status carries
//! a `google.rpc.Status` in its details (`grpc-status-details-bin`) with
//!
//! - `google.rpc.ErrorInfo`: a stable machine-readable `reason` ([`reason`], domain
//!   [`DOMAIN`]) and what the error is about as `metadata` (shard, request id, ...);
//! - `google.rpc.RetryInfo`, only where sending the *same* request again is safe and may
//!   succeed, with the delay to wait first: nothing was applied (no leader, overload, a ring
//!   change under the request). Never on "outcome unknown": that retry is safe only with the
//!   same `request_id` (`ErrorInfo.metadata.request_id`; README "Errors and retries");
//! - `google.rpc.BadRequest` field violations for input the router refused, naming the field;
//! - `google.rpc.RequestInfo` with the write's request id, where there is one.
//!
//! A client in any language reads these with its gRPC library's rich-status helpers (Python:
//! `grpc_status.rpc_status.from_call`), without our `x-ringkv-*` metadata, which stays for
//! the Rust client and older callers (`ringkv_proto::metadata`). The codes themselves are
//! chosen in one place, [`super::to_status`].

use std::collections::HashMap;
use std::time::Duration;

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use super::{hex, RouterError};

/// `ErrorInfo.domain` of every router error.
pub const DOMAIN: &str = "ringkv";

/// How long a client should wait before it sends a retryable request again: about one
/// election timeout for a missing leader, less for overload.
const RETRY_AFTER_NO_LEADER: Duration = Duration::from_millis(300);
const RETRY_AFTER_OVERLOAD: Duration = Duration::from_millis(50);

/// `ErrorInfo.reason` of `err`: a constant per kind of error (`[A-Z0-9_]+`).
pub fn reason(err: &RouterError) -> &'static str {
    match err {
        RouterError::InvalidArgument(_) => "INVALID_ARGUMENT",
        RouterError::BadField { .. } => "BAD_FIELD",
        RouterError::PermissionDenied(_) => "PERMISSION_DENIED",
        RouterError::Unauthenticated(_) => "UNAUTHENTICATED",
        RouterError::Overloaded { .. } => "OVERLOADED",
        RouterError::TooManyStreams { .. } => "TOO_MANY_STREAMS",
        RouterError::StreamIdle { .. } => "STREAM_IDLE",
        RouterError::StreamExpired { .. } => "STREAM_EXPIRED",
        RouterError::NoCluster => "NO_CLUSTER",
        RouterError::ShardUnavailable { .. } => "SHARD_UNAVAILABLE",
        RouterError::DeadlineExceeded { .. } => "DEADLINE_EXCEEDED",
        RouterError::OutcomeUnknown { .. } => "OUTCOME_UNKNOWN",
        RouterError::RequestIdReused { .. } => "REQUEST_ID_REUSED",
        RouterError::Node { .. } => "NODE_ERROR",
        RouterError::ReplyTooLarge { .. } => "REPLY_TOO_LARGE",
        RouterError::BadNodeResponse { .. } => "BAD_NODE_RESPONSE",
        RouterError::RingChanged { .. } => "RING_CHANGED",
        RouterError::BatchFailed(_) if err.is_outcome_unknown() => "OUTCOME_UNKNOWN",
        RouterError::BatchFailed(_) => "BATCH_FAILED",
        RouterError::Unimplemented(_) => "UNIMPLEMENTED",
        RouterError::Unavailable(_) => "UNAVAILABLE",
        RouterError::NotFound(_) => "NOT_FOUND",
        RouterError::PlanRejected(_) => "PLAN_REJECTED",
        RouterError::Internal(_) => "INTERNAL",
        RouterError::TxnAborted { .. } => "TXN_ABORTED",
        RouterError::TxnOutcomeUnknown { .. } => "TXN_OUTCOME_UNKNOWN",
        RouterError::TokenRefused(_) => "TOKEN_REFUSED",
        RouterError::LoginThrottled(_) => "LOGIN_THROTTLED",
        RouterError::NoCredentials(_) => "NO_CREDENTIALS",
    }
}

/// How long to wait before sending the same request again, if that is safe and may succeed.
/// `None`: do not send it again as it is (bad input, permissions, an abort that would abort
/// again, a node's definite error). A transaction that aborted retryably is *run* again (a new
/// start timestamp), not re-sent; its RetryInfo says so with a zero delay.
pub fn retry_after(err: &RouterError) -> Option<Duration> {
    match err {
        RouterError::Overloaded { .. } | RouterError::TooManyStreams { .. } => Some(RETRY_AFTER_OVERLOAD),
        // Definitely not applied: a write whose attempt may have applied is OutcomeUnknown.
        RouterError::NoCluster
        | RouterError::ShardUnavailable { .. }
        | RouterError::RingChanged { .. }
        | RouterError::DeadlineExceeded { .. } => Some(RETRY_AFTER_NO_LEADER),
        // Not RetryInfo: re-sending "the same request" is safe only with the same request id
        // (`ErrorInfo.metadata.request_id`, which the router made up when the caller sent
        // none), and a client that knows that reads the reason. `Unavailable` also ends
        // cluster-level operations (a ring change) that may have taken effect.
        RouterError::OutcomeUnknown { .. } | RouterError::Unavailable(_) => None,
        // Partly applied: like an unknown outcome, safe only with the same request id.
        RouterError::BatchFailed(batch) if batch.partly_applied => None,
        RouterError::BatchFailed(batch) => {
            // Every failed shard must be retryable for the batch to be.
            let delays: Option<Vec<Duration>> =
                batch.failures.iter().map(|(_, err)| retry_after(err)).collect();
            delays.and_then(|delays| delays.into_iter().max())
        }
        RouterError::TxnAborted { retryable: true, .. } => Some(Duration::ZERO),
        // Another login, even with the right password, is refused until then.
        RouterError::LoginThrottled(throttled) => Some(throttled.retry_after),
        _ => None,
    }
}

/// What the error is about, as `ErrorInfo.metadata`.
fn metadata(err: &RouterError) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let mut put = |key: &str, value: String| {
        map.insert(key.to_string(), value);
    };
    match err {
        RouterError::ShardUnavailable { shard, attempts, .. }
        | RouterError::DeadlineExceeded { shard, attempts, .. } => {
            put("shard", shard.to_string());
            put("attempts", attempts.to_string());
        }
        RouterError::OutcomeUnknown {
            shard,
            request_id,
            attempts,
            ..
        } => {
            put("shard", shard.to_string());
            put("request_id", hex(request_id));
            put("attempts", attempts.to_string());
        }
        RouterError::RequestIdReused { shard, request_id } => {
            put("shard", shard.to_string());
            put("request_id", hex(request_id));
        }
        RouterError::Node {
            shard, node, code, ..
        } => {
            put("shard", shard.to_string());
            put("node", node.clone());
            put("node_code", format!("{code:?}"));
        }
        RouterError::BadNodeResponse { shard, .. } => put("shard", shard.to_string()),
        RouterError::Overloaded {
            max_inflight_requests,
        } => put("max_inflight_requests", max_inflight_requests.to_string()),
        RouterError::TooManyStreams { max_open_streams } => {
            put("max_open_streams", max_open_streams.to_string())
        }
        RouterError::BatchFailed(batch) => {
            let list = |shards: Vec<String>| shards.join(",");
            put(
                "failed_shards",
                list(
                    batch
                        .failures
                        .iter()
                        .map(|(shard, _)| shard.to_string())
                        .collect(),
                ),
            );
            let unknown = batch.outcome_unknown_shards();
            if !unknown.is_empty() {
                put(
                    "outcome_unknown_shards",
                    list(unknown.iter().map(ToString::to_string).collect()),
                );
            }
            if batch.partly_applied {
                put("partly_applied", "true".to_string());
            }
        }
        RouterError::TxnAborted {
            reason, retryable, ..
        } => {
            put("abort_reason", reason.to_string());
            put("retryable", retryable.to_string());
        }
        RouterError::TxnOutcomeUnknown {
            start_ts, primary, ..
        } => {
            put("start_ts", start_ts.to_string());
            put("primary_key_hex", hex(primary));
        }
        RouterError::BadField { field, .. } => put("field", field.clone()),
        _ => {}
    }
    map
}

/// `status` (chosen for `err` by `to_status`) with the rich error details of `err`; its code,
/// message and metadata are kept.
pub fn with_details(err: &RouterError, status: Status) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(reason(err), DOMAIN, metadata(err));
    if let Some(delay) = retry_after(err) {
        details.set_retry_info(Some(delay));
    }
    match err {
        RouterError::BadField { field, message } => {
            details.add_bad_request_violation(field.clone(), message.clone());
        }
        RouterError::RequestIdReused { request_id, .. } => {
            details.add_bad_request_violation(
                "request_id",
                "already used for a different request: a new request needs a new request_id",
            );
            details.set_request_info(hex(request_id), "");
        }
        RouterError::OutcomeUnknown { request_id, .. } => {
            details.set_request_info(hex(request_id), "");
        }
        _ => {}
    }
    Status::with_error_details_and_metadata(
        status.code(),
        status.message().to_string(),
        details,
        status.metadata().clone(),
    )
}

#[cfg(test)]
mod tests {
    use ringkv_ring::ShardId;
    use tonic::Code;

    use super::*;
    use crate::error::{to_status, BatchFailure};

    fn unknown(shard: u32) -> RouterError {
        RouterError::OutcomeUnknown {
            shard: ShardId(shard),
            request_id: [0xab; 16],
            attempts: 2,
            last_error: "timeout".into(),
        }
    }

    /// Every status carries ErrorInfo with its reason and domain; the code, message and our
    /// metadata are unchanged.
    #[test]
    fn statuses_carry_error_info_and_keep_their_metadata() {
        let status = to_status(&unknown(3));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(ringkv_proto::metadata::is_outcome_unknown(&status));
        let details = status.get_error_details();
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "OUTCOME_UNKNOWN");
        assert_eq!(info.domain, DOMAIN);
        assert_eq!(info.metadata.get("shard").map(String::as_str), Some("3"));
        assert_eq!(
            info.metadata.get("request_id").map(String::as_str),
            Some(&*"ab".repeat(16))
        );
        assert!(
            details.retry_info().is_none(),
            "re-sending is safe only with the request id, which RetryInfo cannot say"
        );
        assert_eq!(
            details.request_info().map(|info| info.request_id.clone()),
            Some("ab".repeat(16))
        );
    }

    /// Bad input names its field; nothing about it is retryable.
    #[test]
    fn bad_fields_are_field_violations_without_retry() {
        let err = RouterError::BadField {
            field: "key".into(),
            message: "key must not be empty".into(),
        };
        let status = to_status(&err);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "key must not be empty");
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("bad request").field_violations;
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "key");
        assert!(details.retry_info().is_none());
    }

    /// RetryInfo only where re-sending the same request is safe: never for a definite
    /// failure, and a batch only when every failed shard is.
    #[test]
    fn retry_info_only_where_a_retry_is_safe() {
        let unavailable = RouterError::ShardUnavailable {
            shard: ShardId(1),
            attempts: 3,
            last_error: "no leader".into(),
        };
        assert!(retry_after(&unavailable).is_some());
        assert!(retry_after(&RouterError::InvalidArgument("x".into())).is_none());
        let reused = RouterError::RequestIdReused {
            shard: ShardId(1),
            request_id: [1; 16],
        };
        assert!(retry_after(&reused).is_none());
        let mixed = RouterError::BatchFailed(BatchFailure {
            operation: "batch",
            total_shards: 4,
            failures: vec![(ShardId(1), unavailable), (ShardId(2), reused)],
            partly_applied: false,
        });
        assert!(retry_after(&mixed).is_none());
        assert_eq!(reason(&mixed), "BATCH_FAILED");
        let all_retryable = RouterError::BatchFailed(BatchFailure {
            operation: "batch",
            total_shards: 4,
            failures: vec![(ShardId(2), unknown(2))],
            partly_applied: true,
        });
        assert_eq!(reason(&all_retryable), "OUTCOME_UNKNOWN");
        assert!(retry_after(&all_retryable).is_none());
        let info = to_status(&all_retryable).get_error_details();
        let info = info.error_info().expect("error info");
        assert_eq!(
            info.metadata.get("outcome_unknown_shards").map(String::as_str),
            Some("2")
        );
        assert_eq!(
            info.metadata.get("partly_applied").map(String::as_str),
            Some("true")
        );
    }

    /// Reasons are what the rich error model allows: `[A-Z0-9_]+`, at most 63 characters.
    #[test]
    fn reasons_are_well_formed() {
        let errors = [
            RouterError::NoCluster,
            RouterError::Internal("x".into()),
            RouterError::TxnAborted {
                reason: "WRITE_CONFLICT",
                retryable: true,
                detail: "x".into(),
            },
            unknown(1),
        ];
        for err in &errors {
            let reason = reason(err);
            assert!(
                reason.len() <= 63
                    && reason
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            );
        }
    }
}
