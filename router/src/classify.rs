//! Classification of a failed node call: what went wrong, whether to retry, and — for
//! writes — whether the write was definitely not applied or its outcome is ambiguous.
//!
//! The contract (see `node.proto`): UNAVAILABLE with `x-ringkv-leader-id/-addr` = not the
//! leader; UNAVAILABLE without = no leader known; NOT_FOUND = shard not hosted;
//! FAILED_PRECONDITION = wrong shard or cluster (refresh the ring); INVALID_ARGUMENT = bad
//! input, or (marked `x-ringkv-request-id-reused`) a write whose request id the shard
//! remembers for a different request. A write error is a definite rejection only with
//! `x-ringkv-rejected: 1`; a transport error or timeout after the request was sent is
//! ambiguous.

use std::error::Error as StdError;

use ringkv_proto::metadata::{self, LeaderHint};
use ringkv_ring::NodeId;
use tonic::{Code, Status};

use crate::error::clip;

/// What went wrong with one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The node is not the leader; it named the leader (by id, address or both).
    NotLeader {
        leader_id: Option<NodeId>,
        leader_addr: Option<String>,
    },
    /// The node knows no leader, or the group is not ready.
    NoLeader,
    /// The node does not host this shard.
    NotHosted,
    /// Wrong shard for the key or cluster mismatch: the router's ring is stale.
    StaleRing,
    /// The node is overloaded (RESOURCE_EXHAUSTED). ABORTED is not this: a node aborts a
    /// transaction for good (a conflict), and replaying the request cannot succeed, so it
    /// is returned to the client as it came.
    Busy,
    /// The request met a transaction's lock (RESOURCE_EXHAUSTED with the lock in the
    /// details) and was not applied: resolve the lock, then retry.
    Locked {
        key: Vec<u8>,
        start_ts: u64,
        primary: Vec<u8>,
    },
    /// No connection could be made: the request was never sent.
    Unreachable,
    /// The attempt timed out (router-side or node-side deadline).
    Timeout,
    /// The connection failed in another way, possibly after the request was sent.
    Transport,
    /// The write's request id is remembered for a different request: not applied, and
    /// never retried (the answer would be the same). Returned to the client, marked.
    RequestIdReused { message: String },
    /// An error not worth retrying (bad input, internal error): returned to the client.
    Fatal { code: Code, message: String },
}

impl Failure {
    /// Whether the router's view of the cluster should be refreshed before retrying.
    pub fn wants_refresh(&self) -> bool {
        matches!(
            self,
            Failure::NoLeader
                | Failure::NotHosted
                | Failure::StaleRing
                | Failure::Unreachable
                | Failure::Timeout
                | Failure::Transport
        )
    }

    /// Whether the node that failed should stop being considered the shard's leader.
    pub fn invalidates_leader(&self) -> bool {
        matches!(
            self,
            Failure::NoLeader
                | Failure::NotHosted
                | Failure::StaleRing
                | Failure::Unreachable
                | Failure::Timeout
                | Failure::Transport
        )
    }
}

/// A classified attempt failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub failure: Failure,
    /// For writes: the write was definitely not applied by this attempt.
    pub definitely_not_applied: bool,
    /// Human-readable description (bounded length) for logs and final errors.
    pub detail: String,
}

impl Classified {
    /// The router's own per-attempt timeout fired: the write outcome is ambiguous.
    pub fn timeout() -> Self {
        Classified {
            failure: Failure::Timeout,
            definitely_not_applied: false,
            detail: "attempt timed out".to_string(),
        }
    }

    /// No node address could be found for the shard: nothing was sent.
    pub fn no_route(detail: String) -> Self {
        Classified {
            failure: Failure::Unreachable,
            definitely_not_applied: true,
            detail,
        }
    }
}

/// Classifies the error of one node call.
pub fn classify(status: &Status) -> Classified {
    let detail = format!("{:?}: {}", status.code(), clip(status.message()));
    if let Some(local) = local_failure(status) {
        return Classified {
            definitely_not_applied: local == Failure::Unreachable,
            failure: local,
            detail,
        };
    }
    if metadata::is_request_id_reused(status) {
        return Classified {
            failure: Failure::RequestIdReused {
                message: clip(status.message()),
            },
            definitely_not_applied: true,
            detail,
        };
    }
    let failure = match status.code() {
        Code::Unavailable => match metadata::leader_hint(status) {
            Some(LeaderHint {
                leader_id,
                leader_addr,
            }) => Failure::NotLeader {
                leader_id,
                leader_addr,
            },
            None => Failure::NoLeader,
        },
        Code::NotFound => Failure::NotHosted,
        Code::FailedPrecondition => Failure::StaleRing,
        Code::ResourceExhausted => match metadata::lock_info(status) {
            Some(lock) => Failure::Locked {
                key: lock.key,
                start_ts: lock.start_ts,
                primary: lock.primary,
            },
            None => Failure::Busy,
        },
        Code::DeadlineExceeded => Failure::Timeout,
        Code::Cancelled | Code::Unknown => Failure::Transport,
        code => Failure::Fatal {
            code,
            message: clip(status.message()),
        },
    };
    // INVALID_ARGUMENT is decided on the input before anything is proposed, so it is a
    // definite rejection even when a node forgets `x-ringkv-rejected`.
    let definitely_not_applied = metadata::is_rejected(status) || status.code() == Code::InvalidArgument;
    Classified {
        failure,
        definitely_not_applied,
        detail,
    }
}

/// A failure produced by the local tonic client rather than sent by the node: such statuses
/// carry the transport error as their source.
fn local_failure(status: &Status) -> Option<Failure> {
    let mut source: Option<&(dyn StdError + 'static)> = Some(status.source()?);
    while let Some(err) = source {
        if err.downcast_ref::<tonic::ConnectError>().is_some() {
            return Some(Failure::Unreachable);
        }
        if err.downcast_ref::<tonic::TimeoutExpired>().is_some() {
            return Some(Failure::Timeout);
        }
        source = err.source();
    }
    Some(Failure::Transport)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A status from a node: `code`, optionally naming a leader, optionally marked rejected.
    fn from_node(code: Code, leader: Option<(u64, Option<&str>)>, rejected: bool) -> Status {
        let mut status = Status::new(code, "node says no");
        if let Some((leader_id, leader_addr)) = leader {
            metadata::set_leader_hint(&mut status, leader_id, leader_addr);
        }
        if rejected {
            metadata::set_rejected(&mut status);
        }
        status
    }

    /// Node error codes map to the failures of the contract.
    #[test]
    fn codes_map_to_failures() {
        let table = [
            (Code::Unavailable, Failure::NoLeader),
            (Code::NotFound, Failure::NotHosted),
            (Code::FailedPrecondition, Failure::StaleRing),
            (Code::ResourceExhausted, Failure::Busy),
            (Code::DeadlineExceeded, Failure::Timeout),
            (
                Code::InvalidArgument,
                Failure::Fatal {
                    code: Code::InvalidArgument,
                    message: "node says no".into(),
                },
            ),
            (
                Code::Internal,
                Failure::Fatal {
                    code: Code::Internal,
                    message: "node says no".into(),
                },
            ),
            (
                Code::Aborted,
                Failure::Fatal {
                    code: Code::Aborted,
                    message: "node says no".into(),
                },
            ),
        ];
        for (code, failure) in table {
            assert_eq!(classify(&Status::new(code, "node says no")).failure, failure);
        }
    }

    /// UNAVAILABLE with leader metadata is a redirect; a hint with no usable part is none
    /// (the parsing itself is tested in `ringkv_proto::metadata`).
    #[test]
    fn leader_hints_are_parsed() {
        let hinted = from_node(Code::Unavailable, Some((3, Some("n3:7100"))), false);
        assert_eq!(
            classify(&hinted).failure,
            Failure::NotLeader {
                leader_id: Some(3),
                leader_addr: Some("n3:7100".into())
            }
        );
        let id_only = from_node(Code::Unavailable, Some((7, None)), false);
        assert_eq!(
            classify(&id_only).failure,
            Failure::NotLeader {
                leader_id: Some(7),
                leader_addr: None
            }
        );
        let unusable = from_node(Code::Unavailable, Some((0, Some(""))), false);
        assert_eq!(classify(&unusable).failure, Failure::NoLeader);
    }

    /// A write error is definite only with `x-ringkv-rejected: 1` (or bad input, a reused
    /// request id, or no connection); everything else is ambiguous.
    #[test]
    fn ambiguous_versus_definite() {
        let rejected = from_node(Code::Unavailable, Some((2, None)), true);
        assert!(classify(&rejected).definitely_not_applied);

        let no_flag = from_node(Code::Unavailable, Some((2, None)), false);
        assert!(!classify(&no_flag).definitely_not_applied);

        let internal = Status::internal("apply failed");
        assert!(!classify(&internal).definitely_not_applied);

        let bad_input = Status::invalid_argument("key too long");
        assert!(classify(&bad_input).definitely_not_applied);

        let reused = classify(&metadata::request_id_reused("request id 07 was already used"));
        assert!(reused.definitely_not_applied);
        assert_eq!(
            reused.failure,
            Failure::RequestIdReused {
                message: "request id 07 was already used".into()
            }
        );
        assert!(!reused.failure.wants_refresh() && !reused.failure.invalidates_leader());

        assert!(!Classified::timeout().definitely_not_applied);
    }

    /// Local transport errors are told apart from node answers by their source chain.
    #[test]
    fn local_transport_errors() {
        let mut refused = Status::unavailable("tcp connect error");
        refused.set_source(Arc::new(tonic::ConnectError(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))));
        let refused = classify(&refused);
        assert_eq!(refused.failure, Failure::Unreachable);
        assert!(refused.definitely_not_applied);

        let mut expired = Status::cancelled("Timeout expired");
        expired.set_source(Arc::new(tonic::TimeoutExpired(())));
        let expired = classify(&expired);
        assert_eq!(expired.failure, Failure::Timeout);
        assert!(!expired.definitely_not_applied);

        let mut reset = Status::unavailable("connection reset");
        reset.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        let reset = classify(&reset);
        assert_eq!(reset.failure, Failure::Transport);
        assert!(!reset.definitely_not_applied);
        assert!(reset.failure.wants_refresh());
    }
}
