//! Classification of a failed node call: what went wrong, whether to retry, and — for
//! writes — whether the write was definitely not applied or its outcome is ambiguous.
//!
//! The contract (see `node.proto`): UNAVAILABLE with `x-ringkv-leader-id/-addr` = not the
//! leader; UNAVAILABLE without = no leader known; NOT_FOUND = shard not hosted;
//! FAILED_PRECONDITION = wrong shard or cluster (refresh the ring); INVALID_ARGUMENT = bad
//! input. A write error is a definite rejection only with `x-ringkv-rejected: 1`; a
//! transport error or timeout after the request was sent is ambiguous.

use std::error::Error as StdError;

use ringkv_proto::{LEADER_ADDR_METADATA, LEADER_ID_METADATA};
use ringkv_ring::NodeId;
use tonic::{Code, Status};

use crate::error::{clip, has_rejected_flag};

/// Longest accepted leader address hint.
const MAX_ADDR_HINT_BYTES: usize = 256;

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
    /// The node is overloaded or aborted the request (RESOURCE_EXHAUSTED, ABORTED).
    Busy,
    /// No connection could be made: the request was never sent.
    Unreachable,
    /// The attempt timed out (router-side or node-side deadline).
    Timeout,
    /// The connection failed in another way, possibly after the request was sent.
    Transport,
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
    let failure = match status.code() {
        Code::Unavailable => match leader_hint(status) {
            Some((leader_id, leader_addr)) => Failure::NotLeader {
                leader_id,
                leader_addr,
            },
            None => Failure::NoLeader,
        },
        Code::NotFound => Failure::NotHosted,
        Code::FailedPrecondition => Failure::StaleRing,
        Code::ResourceExhausted | Code::Aborted => Failure::Busy,
        Code::DeadlineExceeded => Failure::Timeout,
        Code::Cancelled | Code::Unknown => Failure::Transport,
        code => Failure::Fatal {
            code,
            message: clip(status.message()),
        },
    };
    // INVALID_ARGUMENT is decided on the input before anything is proposed, so it is a
    // definite rejection even when a node forgets `x-ringkv-rejected`.
    let definitely_not_applied = has_rejected_flag(status) || status.code() == Code::InvalidArgument;
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

/// The leader named by a not-leader error, if any part of the hint is usable.
fn leader_hint(status: &Status) -> Option<(Option<NodeId>, Option<String>)> {
    let metadata = status.metadata();
    let id_present = metadata.get(LEADER_ID_METADATA).is_some();
    let addr_present = metadata.get(LEADER_ADDR_METADATA).is_some();
    if !id_present && !addr_present {
        return None;
    }
    let leader_id = metadata
        .get(LEADER_ID_METADATA)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<NodeId>().ok())
        .filter(|id| *id != 0);
    let leader_addr = metadata
        .get(LEADER_ADDR_METADATA)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|addr| {
            !addr.is_empty() && addr.len() <= MAX_ADDR_HINT_BYTES && !addr.chars().any(char::is_whitespace)
        })
        .map(str::to_string);
    if leader_id.is_none() && leader_addr.is_none() {
        return None;
    }
    Some((leader_id, leader_addr))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ringkv_proto::REJECTED_METADATA;
    use tonic::metadata::MetadataValue;

    use super::*;

    fn with_metadata(code: Code, pairs: &[(&'static str, &'static str)]) -> Status {
        let mut status = Status::new(code, "node says no");
        for (key, value) in pairs {
            status
                .metadata_mut()
                .insert(*key, MetadataValue::from_static(value));
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
        ];
        for (code, failure) in table {
            assert_eq!(classify(&Status::new(code, "node says no")).failure, failure);
        }
    }

    /// UNAVAILABLE with leader metadata is a redirect; garbage hints are ignored.
    #[test]
    fn leader_hints_are_parsed() {
        let hinted = with_metadata(
            Code::Unavailable,
            &[(LEADER_ID_METADATA, "3"), (LEADER_ADDR_METADATA, "n3:7100")],
        );
        assert_eq!(
            classify(&hinted).failure,
            Failure::NotLeader {
                leader_id: Some(3),
                leader_addr: Some("n3:7100".into())
            }
        );
        let id_only = with_metadata(Code::Unavailable, &[(LEADER_ID_METADATA, "7")]);
        assert_eq!(
            classify(&id_only).failure,
            Failure::NotLeader {
                leader_id: Some(7),
                leader_addr: None
            }
        );
        let garbage = with_metadata(
            Code::Unavailable,
            &[(LEADER_ID_METADATA, "zero"), (LEADER_ADDR_METADATA, "")],
        );
        assert_eq!(classify(&garbage).failure, Failure::NoLeader);
        let zero = with_metadata(Code::Unavailable, &[(LEADER_ID_METADATA, "0")]);
        assert_eq!(classify(&zero).failure, Failure::NoLeader);
    }

    /// A write error is definite only with `x-ringkv-rejected: 1` (or bad input, or no
    /// connection); everything else is ambiguous.
    #[test]
    fn ambiguous_versus_definite() {
        let rejected = with_metadata(
            Code::Unavailable,
            &[(REJECTED_METADATA, "1"), (LEADER_ID_METADATA, "2")],
        );
        assert!(classify(&rejected).definitely_not_applied);

        let no_flag = with_metadata(Code::Unavailable, &[(LEADER_ID_METADATA, "2")]);
        assert!(!classify(&no_flag).definitely_not_applied);

        let wrong_flag = with_metadata(Code::NotFound, &[(REJECTED_METADATA, "0")]);
        assert!(!classify(&wrong_flag).definitely_not_applied);

        let internal = Status::internal("apply failed");
        assert!(!classify(&internal).definitely_not_applied);

        let bad_input = Status::invalid_argument("key too long");
        assert!(classify(&bad_input).definitely_not_applied);

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
