//! Errors of the router, and the one deliberate mapping of a per-request error to a gRPC
//! status ([`to_status`]).
//!
//! - [`RouterError`]: per-request errors of the `Kv` and `Admin` services.
//! - [`StartError`] / [`ServeError`]: fatal errors of the process (bind, serve), kept apart.

use std::fmt;
use std::net::SocketAddr;

use ringkv_proto::metadata;
use ringkv_ring::{MemberState, NodeId, ShardId};
use tonic::{Code, Status};

use crate::config::ConfigError;

pub mod details;

/// Longest node error text embedded in one of our messages (node text is network input).
const MAX_EMBEDDED_MESSAGE_BYTES: usize = 512;
/// Most per-shard error texts spelled out in a batch failure message.
const MAX_DETAILED_SHARD_ERRORS: usize = 4;
/// Most shard ids listed in a batch failure message.
const MAX_LISTED_SHARDS: usize = 256;

/// A 16-byte write request id.
pub type RequestId = [u8; 16];

/// Why one client request failed.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The request breaks a limit or is malformed; nothing was sent to a node.
    #[error("{0}")]
    InvalidArgument(String),
    /// One field of the request is malformed or breaks a limit (the rich error model's
    /// BadRequest field violation names it); nothing was sent to a node.
    #[error("{message}")]
    BadField { field: String, message: String },
    /// The caller's user lacks a permission the request needs (issue 15, `auth.rs`);
    /// nothing was sent to a node.
    #[error("permission denied: {0}")]
    PermissionDenied(#[from] ringkv_authz::Denied),
    /// The caller's certificate names no usable user.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's token does not check out (forged, of another cluster, expired, its
    /// user gone, the key rotated): `UNAUTHENTICATED`.
    #[error("{0}")]
    TokenRefused(String),
    /// Too many failed password logins of this user or from this address: the login was not
    /// tried (`RESOURCE_EXHAUSTED`, with RetryInfo).
    #[error("{0}")]
    LoginThrottled(#[from] ringkv_authz::throttle::Throttled),
    /// A TLS connection without a client certificate sent no token, and the call is not a
    /// login (`UNAUTHENTICATED`).
    #[error("{0}")]
    NoCredentials(String),
    /// More than `max_inflight_requests` requests are being served.
    #[error("too many requests in flight (max_inflight_requests = {max_inflight_requests})")]
    Overloaded { max_inflight_requests: usize },
    /// `max_open_streams` streams (ScanStream, Count) are open.
    #[error("too many streams open (max_open_streams = {max_open_streams}); close one or retry later")]
    TooManyStreams { max_open_streams: usize },
    /// A stream's reader took no message for `stream_idle_timeout_ms`: the router cut it.
    #[error(
        "stream cut: its reader took no message for {idle_timeout_ms} ms (stream_idle_timeout_ms); \
         a scan resumes from its last continuation token, a count starts over"
    )]
    StreamIdle { idle_timeout_ms: u64 },
    /// A stream stayed open for `stream_total_timeout_ms`: the router cut it.
    #[error(
        "stream cut: open for {total_timeout_ms} ms (stream_total_timeout_ms); a scan resumes \
         from its last continuation token, a count starts over"
    )]
    StreamExpired { total_timeout_ms: u64 },
    /// No ring is known: the cluster is not initialised or no node answered.
    #[error("cluster not initialised or no node reachable")]
    NoCluster,
    /// The shard had no reachable leader (or replica) before the deadline.
    #[error("shard {shard} unavailable after {attempts} attempts: {last_error}")]
    ShardUnavailable {
        shard: ShardId,
        attempts: u32,
        last_error: String,
    },
    /// The deadline passed while an attempt was in flight (or before any could be made).
    #[error("deadline exceeded on shard {shard} after {attempts} attempts: {last_error}")]
    DeadlineExceeded {
        shard: ShardId,
        attempts: u32,
        last_error: String,
    },
    /// A write may or may not have been applied. Never reported as a plain failure.
    #[error(
        "write outcome unknown: shard {shard}, request_id {}, {attempts} attempts, last error: \
         {last_error}; retry with the same request_id to learn the outcome",
        hex(request_id)
    )]
    OutcomeUnknown {
        shard: ShardId,
        request_id: RequestId,
        attempts: u32,
        last_error: String,
    },
    /// The shard remembers the write's request id for a different request (another key,
    /// value, kind or expected version; another range): nothing was written. Never retried.
    /// `request_id` is the client's (a batch's shard part and a delete-range's chunk use ids
    /// derived from it).
    #[error(
        "request_id {} was already used for a different request (shard {shard}): nothing was \
         written; a retry must repeat its request exactly, a new request needs a new request_id",
        hex(request_id)
    )]
    RequestIdReused { shard: ShardId, request_id: RequestId },
    /// A node answered with an error the router does not retry (bad input, internal error):
    /// returned to the client with the node's code and message.
    #[error("node {node} failed shard {shard}: {code:?}: {message}")]
    Node {
        shard: ShardId,
        node: String,
        code: Code,
        message: String,
    },
    /// A BatchGet's values do not fit in one reply's byte budget and the caller did not
    /// allow paging.
    #[error(
        "the values of {keys} keys do not fit in one reply ({budget_bytes} bytes; the first {fit} \
         do): ask for fewer keys at once, or set allow_paging to receive them in pages"
    )]
    ReplyTooLarge {
        keys: usize,
        fit: usize,
        budget_bytes: usize,
    },
    /// A node's answer broke the contract (wrong number of results, unknown keys).
    #[error("a node sent an invalid response for shard {shard}: {reason}")]
    BadNodeResponse { shard: ShardId, reason: String },
    /// The shard count changed while the request was routed (the cluster was re-created).
    #[error("the cluster changed during the request (shards {expected} -> {actual}); retry")]
    RingChanged { expected: u32, actual: u32 },
    /// Some shards of a batch failed; the others succeeded.
    #[error("{0}")]
    BatchFailed(BatchFailure),
    /// The rpc is not served by routers.
    #[error("{0}")]
    Unimplemented(&'static str),
    /// A cluster-level operation found no node able to serve it.
    #[error("{0}")]
    Unavailable(String),
    /// What the request names does not exist: a lease that expired, was revoked or never
    /// existed (`NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// A planned ring change cannot be made.
    #[error(transparent)]
    PlanRejected(#[from] PlanRejection),
    /// A router invariant was broken (a bug).
    #[error("internal router error: {0}")]
    Internal(String),
    /// A transaction aborted: none of its writes is visible, none will be.
    #[error("transaction aborted ({reason}): {detail}")]
    TxnAborted {
        reason: &'static str,
        retryable: bool,
        detail: String,
    },
    /// A transaction's commit may or may not have taken effect.
    #[error(
        "commit outcome unknown for transaction {start_ts} (primary key {}): {detail}; ask Txn.Status with the start timestamp and primary key",
        hex(primary)
    )]
    TxnOutcomeUnknown {
        start_ts: u64,
        primary: Vec<u8>,
        detail: String,
    },
}

impl RouterError {
    /// This error with `request_id` (the client's) for a reused request id, whatever id
    /// the shard was sent.
    pub fn for_request(self, request_id: RequestId) -> RouterError {
        match self {
            RouterError::RequestIdReused { shard, .. } => RouterError::RequestIdReused { shard, request_id },
            other => other,
        }
    }

    /// Whether a write covered by this error may have been applied (in part or whole).
    pub fn is_outcome_unknown(&self) -> bool {
        match self {
            RouterError::OutcomeUnknown { .. } | RouterError::TxnOutcomeUnknown { .. } => true,
            RouterError::BatchFailed(batch) => {
                batch.partly_applied || batch.failures.iter().any(|(_, err)| err.is_outcome_unknown())
            }
            _ => false,
        }
    }
}

/// The failed shards of a batch, each with its own error.
#[derive(Debug)]
pub struct BatchFailure {
    /// What failed, for the message: `batch`, `scan`, `count`, `delete-range`.
    pub operation: &'static str,
    /// Shards the batch touched.
    pub total_shards: usize,
    /// The failed shards, sorted by shard id.
    pub failures: Vec<(ShardId, RouterError)>,
    /// A write only: part of it was applied before it failed (a shard's part of a batch, a
    /// chunk of a delete-range), so it is neither done nor undone — outcome unknown, never
    /// a plain failure, whatever its failed shards said. Always false for reads.
    pub partly_applied: bool,
}

impl BatchFailure {
    /// The ids of the failed shards whose write outcome is unknown.
    pub fn outcome_unknown_shards(&self) -> Vec<ShardId> {
        self.failures
            .iter()
            .filter(|(_, err)| err.is_outcome_unknown())
            .map(|(shard, _)| *shard)
            .collect()
    }
}

impl fmt::Display for BatchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed: Vec<ShardId> = self.failures.iter().map(|(shard, _)| *shard).collect();
        write!(
            f,
            "{} failed on {} of {} shards: {}",
            self.operation,
            failed.len(),
            self.total_shards,
            list_shards(&failed)
        )?;
        let unknown = self.outcome_unknown_shards();
        if !unknown.is_empty() {
            write!(f, "; write outcome unknown on shards {}", list_shards(&unknown))?;
        }
        if self.partly_applied {
            write!(
                f,
                "; part of the write was applied (outcome unknown: retry with the same request_id)"
            )?;
        }
        for (shard, err) in self.failures.iter().take(MAX_DETAILED_SHARD_ERRORS) {
            write!(f, "; shard {shard}: {err}")?;
        }
        if self.failures.len() > MAX_DETAILED_SHARD_ERRORS {
            write!(
                f,
                "; ({} more shard errors)",
                self.failures.len() - MAX_DETAILED_SHARD_ERRORS
            )?;
        }
        Ok(())
    }
}

/// `1, 2, 3` with at most [`MAX_LISTED_SHARDS`] ids.
fn list_shards(shards: &[ShardId]) -> String {
    let mut text = shards
        .iter()
        .take(MAX_LISTED_SHARDS)
        .map(|shard| shard.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if shards.len() > MAX_LISTED_SHARDS {
        text.push_str(&format!(" and {} more", shards.len() - MAX_LISTED_SHARDS));
    }
    text
}

/// The gRPC status for a router error: the single place where codes are chosen.
///
/// bad input → INVALID_ARGUMENT; overload, too many streams, a reply over its budget →
/// RESOURCE_EXHAUSTED; no leader / unreachable /
/// ring change → UNAVAILABLE; deadline, a stream cut → DEADLINE_EXCEEDED; outcome unknown → UNAVAILABLE
/// with `x-ringkv-outcome-unknown: 1`; a reused request id → INVALID_ARGUMENT with
/// `x-ringkv-request-id-reused: 1`; node errors → the node's own code and message;
/// partial batch failure → UNAVAILABLE naming the shards (or the shared code when every
/// failed shard failed the same way, marked as a reused request id when that is what every
/// failed shard said).
///
/// Every status also carries the rich error model's details ([`details`]).
pub fn to_status(err: &RouterError) -> Status {
    details::with_details(err, status_code_and_metadata(err))
}

fn status_code_and_metadata(err: &RouterError) -> Status {
    let message = err.to_string();
    match err {
        RouterError::InvalidArgument(_) | RouterError::BadField { .. } | RouterError::PlanRejected(_) => {
            Status::invalid_argument(message)
        }
        RouterError::PermissionDenied(_) | RouterError::Unauthenticated(_) => {
            Status::permission_denied(message)
        }
        RouterError::TokenRefused(_) | RouterError::NoCredentials(_) => Status::unauthenticated(message),
        RouterError::LoginThrottled(_) => Status::resource_exhausted(message),
        RouterError::Overloaded { .. }
        | RouterError::TooManyStreams { .. }
        | RouterError::ReplyTooLarge { .. } => Status::resource_exhausted(message),
        RouterError::StreamIdle { .. } | RouterError::StreamExpired { .. } => {
            Status::deadline_exceeded(message)
        }
        RouterError::NoCluster | RouterError::ShardUnavailable { .. } | RouterError::RingChanged { .. } => {
            Status::unavailable(message)
        }
        RouterError::DeadlineExceeded { .. } => Status::deadline_exceeded(message),
        RouterError::OutcomeUnknown { .. } | RouterError::TxnOutcomeUnknown { .. } => {
            outcome_unknown_status(message)
        }
        RouterError::TxnAborted {
            reason, retryable, ..
        } => ringkv_proto::metadata::txn_aborted(message, reason, *retryable),
        RouterError::RequestIdReused { .. } => metadata::request_id_reused(message),
        RouterError::Node {
            code,
            message: node_message,
            ..
        } => Status::new(*code, node_message.clone()),
        RouterError::BadNodeResponse { .. } | RouterError::Internal(_) => Status::internal(message),
        RouterError::Unimplemented(_) => Status::unimplemented(message),
        RouterError::Unavailable(_) => Status::unavailable(message),
        RouterError::NotFound(_) => Status::not_found(message),
        RouterError::BatchFailed(batch) => {
            if err.is_outcome_unknown() {
                return outcome_unknown_status(message);
            }
            let reused =
                |(_, err): &(ShardId, RouterError)| matches!(err, RouterError::RequestIdReused { .. });
            if !batch.failures.is_empty() && batch.failures.iter().all(reused) {
                return metadata::request_id_reused(message);
            }
            let mut codes = batch
                .failures
                .iter()
                .map(|(_, err)| status_code_and_metadata(err).code());
            let first = codes.next().unwrap_or(Code::Unavailable);
            let shared = codes.all(|code| code == first);
            if shared {
                Status::new(first, message)
            } else {
                Status::unavailable(message)
            }
        }
    }
}

impl From<RouterError> for Status {
    fn from(err: RouterError) -> Status {
        to_status(&err)
    }
}

fn outcome_unknown_status(message: String) -> Status {
    let mut status = Status::unavailable(message);
    metadata::set_outcome_unknown(&mut status);
    status
}

/// A node's text, cut to a bounded length on a character boundary.
pub(crate) fn clip(text: &str) -> String {
    if text.len() <= MAX_EMBEDDED_MESSAGE_BYTES {
        return text.to_string();
    }
    let mut end = MAX_EMBEDDED_MESSAGE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Lowercase hex of a request id.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Fatal errors starting a router.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] ringkv_tls::CertError),
}

/// Fatal errors while serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("grpc server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("grpc server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why a ring change cannot be planned (nothing was sent to a node).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanRejection {
    #[error("node {node_id} is not a ring member")]
    NotMember { node_id: NodeId },
    /// Decommissioning or declaring dead a member that owns no tokens any more.
    #[error("node {node_id} is {}: it owns no replicas to move", .state.as_str())]
    OwnsNothing { node_id: NodeId, state: MemberState },
    #[error("a node to add needs a non-zero id and an address")]
    IncompleteNode,
    #[error("node {node_id} is already a ring member")]
    AlreadyMember { node_id: NodeId },
    /// The ring after the change would be invalid (e.g. fewer owners than RF).
    #[error("the change is not possible: {0}")]
    Impossible(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable(shard: u32) -> RouterError {
        RouterError::ShardUnavailable {
            shard: ShardId(shard),
            attempts: 3,
            last_error: "no leader".into(),
        }
    }

    fn unknown(shard: u32) -> RouterError {
        RouterError::OutcomeUnknown {
            shard: ShardId(shard),
            request_id: [0xab; 16],
            attempts: 2,
            last_error: "timeout".into(),
        }
    }

    /// Each error kind maps to its documented gRPC code.
    #[test]
    fn codes_follow_the_table() {
        let table: Vec<(RouterError, Code)> = vec![
            (RouterError::InvalidArgument("x".into()), Code::InvalidArgument),
            (
                RouterError::Overloaded {
                    max_inflight_requests: 1,
                },
                Code::ResourceExhausted,
            ),
            (RouterError::NoCluster, Code::Unavailable),
            (unavailable(1), Code::Unavailable),
            (
                RouterError::DeadlineExceeded {
                    shard: ShardId(1),
                    attempts: 1,
                    last_error: "t".into(),
                },
                Code::DeadlineExceeded,
            ),
            (unknown(1), Code::Unavailable),
            (
                RouterError::Node {
                    shard: ShardId(0),
                    node: "n1".into(),
                    code: Code::InvalidArgument,
                    message: "bad key".into(),
                },
                Code::InvalidArgument,
            ),
            (RouterError::Unimplemented("no"), Code::Unimplemented),
        ];
        for (err, code) in table {
            assert_eq!(to_status(&err).code(), code, "{err}");
        }
    }

    /// An ambiguous write carries the outcome-unknown metadata and message; nothing else does.
    #[test]
    fn outcome_unknown_has_metadata() {
        let status = to_status(&unknown(4));
        assert!(status.message().starts_with("write outcome unknown: "));
        assert!(status.message().contains(&"ab".repeat(16)));
        assert!(metadata::is_outcome_unknown(&status));
        let plain = to_status(&unavailable(4));
        assert!(!metadata::is_outcome_unknown(&plain));
    }

    /// Node errors are passed through with the node's code and exact message.
    #[test]
    fn node_errors_pass_through() {
        let status = to_status(&RouterError::Node {
            shard: ShardId(2),
            node: "n1".into(),
            code: Code::InvalidArgument,
            message: "key too long".into(),
        });
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "key too long");
    }

    /// A partial batch failure names every failed shard and flags ambiguous ones.
    #[test]
    fn batch_failure_names_shards() {
        let err = RouterError::BatchFailed(BatchFailure {
            operation: "batch",
            total_shards: 4,
            failures: vec![(ShardId(1), unavailable(1)), (ShardId(3), unknown(3))],
            partly_applied: false,
        });
        let status = to_status(&err);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("batch failed on 2 of 4 shards: 1, 3"));
        assert!(status.message().contains("write outcome unknown on shards 3"));
        assert!(metadata::is_outcome_unknown(&status));

        let definite = RouterError::BatchFailed(BatchFailure {
            operation: "batch",
            total_shards: 4,
            failures: vec![(ShardId(1), unavailable(1)), (ShardId(2), unavailable(2))],
            partly_applied: false,
        });
        let status = to_status(&definite);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!metadata::is_outcome_unknown(&status));
    }

    /// A write that failed on some shards after others applied their part is outcome
    /// unknown, whatever its failed shards said: not a definite failure.
    #[test]
    fn a_partly_applied_write_is_outcome_unknown() {
        let err = RouterError::BatchFailed(BatchFailure {
            operation: "batch",
            total_shards: 4,
            failures: vec![(ShardId(1), unavailable(1)), (ShardId(2), unavailable(2))],
            partly_applied: true,
        });
        assert!(err.is_outcome_unknown());
        let status = to_status(&err);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(metadata::is_outcome_unknown(&status));
        assert!(
            status.message().contains("part of the write was applied"),
            "{}",
            status.message()
        );
    }

    /// A batch whose shards all failed with the same code keeps that code.
    #[test]
    fn batch_failure_keeps_a_shared_code() {
        let node_error = |shard| RouterError::Node {
            shard: ShardId(shard),
            node: "n".into(),
            code: Code::InvalidArgument,
            message: "bad".into(),
        };
        let err = RouterError::BatchFailed(BatchFailure {
            operation: "batch",
            total_shards: 2,
            failures: vec![(ShardId(0), node_error(0)), (ShardId(1), node_error(1))],
            partly_applied: false,
        });
        assert_eq!(to_status(&err).code(), Code::InvalidArgument);
    }

    /// A reused request id is a marked INVALID_ARGUMENT naming the client's id, alone or
    /// when it is what every failed shard of a batch said; a batch with other failures too
    /// keeps the usual code, without the mark.
    #[test]
    fn reused_request_ids_are_marked() {
        let reused = |shard| RouterError::RequestIdReused {
            shard: ShardId(shard),
            request_id: [0x11; 16],
        };
        let alone = to_status(&reused(3).for_request([0xcd; 16]));
        assert_eq!(alone.code(), Code::InvalidArgument);
        assert!(metadata::is_request_id_reused(&alone));
        assert!(alone.message().contains(&"cd".repeat(16)), "{}", alone.message());
        assert!(alone.message().contains("already used for a different request"));
        let batch = |failures| {
            to_status(&RouterError::BatchFailed(BatchFailure {
                operation: "batch",
                total_shards: 3,
                failures,
                partly_applied: false,
            }))
        };
        let all = batch(vec![(ShardId(1), reused(1)), (ShardId(2), reused(2))]);
        assert_eq!(all.code(), Code::InvalidArgument);
        assert!(metadata::is_request_id_reused(&all));
        let mixed = batch(vec![(ShardId(1), reused(1)), (ShardId(2), unavailable(2))]);
        assert_eq!(mixed.code(), Code::Unavailable);
        assert!(!metadata::is_request_id_reused(&mixed));
        let plain = to_status(&unavailable(1).for_request([0xcd; 16]));
        assert!(!metadata::is_request_id_reused(&plain));
    }

    /// Long node messages are clipped on a character boundary.
    #[test]
    fn clip_bounds_length() {
        let long = "é".repeat(1000);
        let clipped = clip(&long);
        assert!(clipped.len() <= MAX_EMBEDDED_MESSAGE_BYTES + "…".len());
        assert_eq!(clip("short"), "short");
        assert_eq!(hex(&[0x00, 0xff, 0x1a]), "00ff1a");
    }
}
