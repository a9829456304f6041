//! The client's error type and the one place that maps a `tonic::Status` to it.
//!
//! Besides the gRPC code, a failed call tells the retry loop whether the request could
//! have reached the cluster ([`Delivery`]). That decides whether a write that failed on
//! one router is *ambiguous* (it may have been applied) or definitely not applied.

use std::error::Error as StdError;

use ringkv_proto::metadata;
use tonic::{Code, Status, TimeoutExpired};

/// Every error the ringkv client returns.
///
/// Check [`Error::is_retryable`] before retrying: a retryable error means the same call
/// may succeed later. [`Error::OutcomeUnknown`] is never a failure: the write may have
/// been applied; read the key to find out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request was rejected as malformed (bad key, value too large, bad endpoint...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The addressed entity does not exist (gRPC NOT_FOUND).
    #[error("not found: {0}")]
    NotFound(String),
    /// The cluster cannot serve the request right now (no leader, no quorum, draining).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request did not complete within its deadline. For reads nothing changed; a
    /// write that timed out after it may have been sent is reported as
    /// [`Error::OutcomeUnknown`] instead.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// A write may or may not have been applied. This is not a failure: read the key to
    /// learn the outcome (retrying with a *new* request would apply it twice).
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The write's request id was already used for a different request (another key,
    /// value, kind or expected version; another range): nothing was written. A retry must
    /// repeat its request exactly; a new request needs a new request id. Not retryable.
    #[error("request id reused: {0}")]
    RequestIdReused(String),
    /// The history the request needs is gone (gRPC OUT_OF_RANGE): a read at a timestamp
    /// below a shard's version history ("snapshot too old": older than the nodes'
    /// `--mvcc-window-ms`, or from before a replica's crash or snapshot install; read at a
    /// newer timestamp), or a watch resumed from a position whose events were compacted
    /// (the message names where to resume). A transaction's read refused this way aborts it
    /// instead ([`Error::TxnAborted`] `TXN_TOO_OLD`, retryable). Not retryable as is.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// The cluster is overloaded or a limit (request size, batch size) was hit.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The cluster is not in a state that allows the request (e.g. not initialised).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The connection to the endpoint failed (refused, reset, protocol error).
    #[error("transport error: {0}")]
    Transport(String),
    /// The server answered with something that breaks the wire contract.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// A transaction aborted: none of its writes took effect. `reason` is the router's
    /// (`WRITE_CONFLICT`, `LOCK_CONFLICT`, `TXN_TOO_OLD`, `TXN_ABORTED`); when `retryable`,
    /// running the transaction again may succeed ([`crate::Client::transact`] does).
    /// (The router's message names the reason already.)
    #[error("{message}")]
    TxnAborted {
        reason: String,
        retryable: bool,
        message: String,
    },
    /// Any other gRPC status.
    #[error("{code:?}: {message}")]
    Other {
        /// The gRPC status code.
        code: Code,
        /// The status message.
        message: String,
    },
}

impl Error {
    /// Whether the same call may succeed if it is retried later.
    ///
    /// True for transient conditions (unavailable, transport, deadline, overload).
    /// False for [`Error::OutcomeUnknown`]: a retry is a *new* write with a new request
    /// id, so it could apply twice; resolve the ambiguity by reading first.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_)
                | Error::Transport(_)
                | Error::DeadlineExceeded(_)
                | Error::ResourceExhausted(_)
        )
    }

    /// Whether this is a transaction's abort after which running it again may succeed.
    pub fn is_retryable_abort(&self) -> bool {
        matches!(self, Error::TxnAborted { retryable: true, .. })
    }

    /// Whether this error means a write may have been applied.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Error::OutcomeUnknown(_))
    }
}

/// Whether a failed request could have reached (and changed) the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// The request never left this process (the connection could not be established).
    NotSent,
    /// The request may have been processed: the connection broke or the deadline expired
    /// after it was sent, or the server said the outcome is unknown.
    MaybeApplied,
    /// The server answered with a definite error: the request was not applied.
    Answered,
}

/// A failed call: the error to report and what it tells about delivery.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: Error,
    pub(crate) delivery: Delivery,
}

impl Failure {
    /// Classifies a status returned by a tonic call. This is the only place that maps
    /// gRPC codes and ringkv metadata to [`Error`].
    pub(crate) fn from_status(status: &Status) -> Failure {
        let message = status.message().to_string();
        // Statuses synthesised by the tonic transport carry their cause as `source`;
        // statuses sent by a server never do.
        if let Some(source) = StdError::source(status) {
            let message = with_causes(message, source);
            return Failure::from_local(status.code(), message, source);
        }
        if metadata::is_outcome_unknown(status) {
            return Failure {
                error: Error::OutcomeUnknown(message),
                delivery: Delivery::MaybeApplied,
            };
        }
        if let Some((reason, retryable)) = metadata::txn_abort(status) {
            return Failure {
                error: Error::TxnAborted {
                    reason,
                    retryable,
                    message,
                },
                delivery: Delivery::Answered,
            };
        }
        if metadata::is_request_id_reused(status) {
            return Failure {
                error: Error::RequestIdReused(message),
                delivery: Delivery::Answered,
            };
        }
        let error = match status.code() {
            Code::InvalidArgument => Error::InvalidArgument(message),
            Code::OutOfRange => Error::OutOfRange(message),
            Code::NotFound => Error::NotFound(message),
            Code::Unavailable => Error::Unavailable(message),
            Code::DeadlineExceeded => Error::DeadlineExceeded(message),
            Code::ResourceExhausted => Error::ResourceExhausted(message),
            Code::FailedPrecondition => Error::FailedPrecondition(message),
            code => Error::Other { code, message },
        };
        Failure {
            error,
            delivery: Delivery::Answered,
        }
    }

    /// A status produced on this side of the connection, from its source chain.
    fn from_local(code: Code, message: String, source: &(dyn StdError + 'static)) -> Failure {
        let mut cause = Some(source);
        while let Some(err) = cause {
            if err.is::<tonic::ConnectError>() {
                return Failure {
                    error: Error::Transport(message),
                    delivery: Delivery::NotSent,
                };
            }
            if err.is::<TimeoutExpired>() {
                return Failure::deadline("the request timed out".to_string());
            }
            cause = err.source();
        }
        let error = match code {
            Code::DeadlineExceeded => Error::DeadlineExceeded(message),
            Code::ResourceExhausted => Error::ResourceExhausted(message),
            _ => Error::Transport(message),
        };
        Failure {
            error,
            delivery: Delivery::MaybeApplied,
        }
    }

    /// The client-side deadline expired while the request may have been in flight.
    pub(crate) fn deadline(message: String) -> Failure {
        Failure {
            error: Error::DeadlineExceeded(message),
            delivery: Delivery::MaybeApplied,
        }
    }
}

/// Appends the root cause of `source`'s chain when `message` does not already say it,
/// so "tcp connect error" becomes "tcp connect error: Connection refused (os error 111)".
fn with_causes(message: String, source: &(dyn StdError + 'static)) -> String {
    let mut root = source;
    // The chain of a transport error is short; bound the walk anyway.
    for _ in 0..16 {
        match root.source() {
            Some(next) => root = next,
            None => break,
        }
    }
    let root_text = root.to_string();
    if root_text.is_empty() || message.contains(&root_text) {
        message
    } else if message.is_empty() {
        root_text
    } else {
        format!("{message}: {root_text}")
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Error {
        Failure::from_status(&status).error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A plain server UNAVAILABLE is a definite answer mapped to `Unavailable`.
    #[test]
    fn server_unavailable_is_answered() {
        let failure = Failure::from_status(&Status::unavailable("no leader"));
        assert!(matches!(failure.error, Error::Unavailable(ref m) if m == "no leader"));
        assert_eq!(failure.delivery, Delivery::Answered);
    }

    /// The outcome-unknown metadata wins over the status code.
    #[test]
    fn outcome_unknown_metadata_maps_to_outcome_unknown() {
        let mut status = Status::deadline_exceeded("commit timed out");
        metadata::set_outcome_unknown(&mut status);
        let failure = Failure::from_status(&status);
        assert!(failure.error.is_outcome_unknown());
        assert_eq!(failure.delivery, Delivery::MaybeApplied);
        assert!(!failure.error.is_retryable());
    }

    /// A connect error means the request was never sent; its cause is in the message.
    #[test]
    fn connect_error_is_not_sent() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let mut status = Status::unavailable("tcp connect error");
        status.set_source(Arc::new(tonic::ConnectError(Box::new(io))));
        let failure = Failure::from_status(&status);
        assert!(
            matches!(failure.error, Error::Transport(ref m) if m == "tcp connect error: refused"),
            "{:?}",
            failure.error
        );
        assert_eq!(failure.delivery, Delivery::NotSent);
    }

    /// A client-side timeout is a deadline error whose write outcome is unknown.
    #[test]
    fn local_timeout_is_deadline_maybe_applied() {
        let mut status = Status::cancelled("Timeout expired");
        status.set_source(Arc::new(TimeoutExpired(())));
        let failure = Failure::from_status(&status);
        assert!(matches!(failure.error, Error::DeadlineExceeded(_)));
        assert_eq!(failure.delivery, Delivery::MaybeApplied);
    }

    /// A broken connection after sending may have applied the request.
    #[test]
    fn broken_connection_is_maybe_applied() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let mut status = Status::unknown("connection closed");
        status.set_source(Arc::new(io));
        let failure = Failure::from_status(&status);
        assert!(matches!(failure.error, Error::Transport(_)));
        assert_eq!(failure.delivery, Delivery::MaybeApplied);
    }

    /// A reused request id's refusal is its own error, answered and not retryable; a plain
    /// INVALID_ARGUMENT stays `InvalidArgument`.
    #[test]
    fn reused_request_ids_have_their_own_error() {
        let status = metadata::request_id_reused("request_id 07 was already used for a different request");
        let failure = Failure::from_status(&status);
        assert!(
            matches!(failure.error, Error::RequestIdReused(ref m) if m.contains("different request")),
            "{:?}",
            failure.error
        );
        assert_eq!(failure.delivery, Delivery::Answered);
        assert!(!failure.error.is_retryable() && !failure.error.is_outcome_unknown());
        assert!(failure.error.to_string().starts_with("request id reused: "));
        let plain = Error::from(Status::invalid_argument("key too long"));
        assert!(matches!(plain, Error::InvalidArgument(_)));
    }

    /// Codes without a dedicated variant keep their code in `Other`.
    #[test]
    fn other_codes_keep_their_code() {
        let error = Error::from(Status::aborted("conflict"));
        assert!(matches!(
            error,
            Error::Other {
                code: Code::Aborted,
                ..
            }
        ));
        assert!(!error.is_retryable());
    }

    /// Transient errors are retryable, definite ones are not.
    #[test]
    fn retryable_classification() {
        assert!(Error::Unavailable(String::new()).is_retryable());
        assert!(Error::Transport(String::new()).is_retryable());
        assert!(Error::DeadlineExceeded(String::new()).is_retryable());
        assert!(Error::ResourceExhausted(String::new()).is_retryable());
        assert!(!Error::InvalidArgument(String::new()).is_retryable());
        assert!(!Error::FailedPrecondition(String::new()).is_retryable());
        assert!(!Error::OutcomeUnknown(String::new()).is_retryable());
    }
}
