//! Failover decisions for one operation, without IO.
//!
//! The client tries routers in rotation. A failed attempt is retried on the next router
//! when the request was definitely not applied (connection refused, router answered
//! UNAVAILABLE) or when it is a write whose retry is safe because it reuses the same
//! request id (the cluster de-duplicates it). When a write attempt may have been applied
//! and no later attempt settles it, the operation reports
//! [`Error::OutcomeUnknown`] — never a plain failure.
//!
//! Ambiguity is sticky: once an attempt of a write may have been applied, only a success
//! settles the operation. Every other end — a definite refusal of a later attempt (a router
//! configured with other limits, a ring change, a request id a pruned de-duplication record
//! no longer vouches for), a transient error, spent attempts or time — is reported as
//! [`Error::OutcomeUnknown`], with the last error in its message: a later attempt's refusal
//! says nothing about what the earlier one did.
//!
//! Read streams (scan, count) that break after they opened are reopened by their caller
//! within a [`ResumeBudget`].

use std::time::Duration;

use crate::error::{Delivery, Failure};
use crate::Error;

/// Whether an operation changes state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Reads and status calls: safe to repeat.
    Read,
    /// Writes carrying a request id: safe to repeat with the same id.
    Write,
    /// Writes applied in several independent steps (delete-range chunks, the shards of a
    /// batch write): safe to repeat with the same id, and a failure may follow a partial
    /// application, so any transient error after the request reached a router leaves the
    /// outcome unknown.
    StepwiseWrite,
}

impl OpKind {
    fn is_write(self) -> bool {
        matches!(self, OpKind::Write | OpKind::StepwiseWrite)
    }
}

/// What to do after a failed attempt.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Try again on the next endpoint.
    Retry,
    /// Give up with this error.
    Fail(Error),
}

/// Attempt bookkeeping of one operation.
#[derive(Debug)]
pub(crate) struct RetryState {
    kind: OpKind,
    /// Some earlier write attempt may have been applied.
    ambiguous: bool,
}

impl RetryState {
    pub(crate) fn new(kind: OpKind) -> Self {
        RetryState {
            kind,
            ambiguous: false,
        }
    }

    /// Decides after a failed attempt. `can_retry` is false when the attempt or time
    /// budget is spent.
    pub(crate) fn on_failure(&mut self, failure: Failure, can_retry: bool) -> Decision {
        let maybe_partial = self.kind == OpKind::StepwiseWrite
            && failure.delivery == Delivery::Answered
            && failure.error.is_retryable();
        if self.kind.is_write() && (failure.delivery == Delivery::MaybeApplied || maybe_partial) {
            self.ambiguous = true;
        }
        let fail_over = match (failure.delivery, &failure.error) {
            (Delivery::NotSent, _) => true,
            (Delivery::Answered, Error::Unavailable(_)) => true,
            (Delivery::MaybeApplied, Error::Transport(_)) => true,
            (Delivery::MaybeApplied, Error::OutcomeUnknown(_)) => self.kind.is_write(),
            _ => false,
        };
        if fail_over && can_retry {
            Decision::Retry
        } else {
            Decision::Fail(self.final_error(failure.error))
        }
    }

    /// The error to report when the operation ends with `error`: after an attempt that
    /// may have been applied, always [`Error::OutcomeUnknown`] (naming `error`), whatever
    /// `error` is — a later attempt's answer, definite or not, does not tell whether the
    /// earlier one was applied.
    pub(crate) fn final_error(&self, error: Error) -> Error {
        if !self.ambiguous {
            return error;
        }
        match error {
            Error::OutcomeUnknown(_) => error,
            last => Error::OutcomeUnknown(format!(
                "an earlier attempt may have been applied; last error: {last}"
            )),
        }
    }
}

/// Whether a broken read stream (scan, count) is worth reopening: the connection
/// failed, the router could not serve, or no message came in time. Definite answers
/// (invalid argument, a foreign continuation token...) end the stream.
pub(crate) fn is_resumable(error: &Error) -> bool {
    matches!(
        error,
        Error::Transport(_) | Error::Unavailable(_) | Error::DeadlineExceeded(_)
    )
}

/// Bounds the reopening of a broken read stream: at most `max_attempts - 1` breaks in a
/// row without progress, where progress (a new entry or a new continuation token) resets
/// the count. A stream that keeps delivering is resumed as often as it breaks.
#[derive(Debug)]
pub(crate) struct ResumeBudget {
    max_attempts: u32,
    breaks_without_progress: u32,
}

impl ResumeBudget {
    pub(crate) fn new(max_attempts: u32) -> Self {
        ResumeBudget {
            max_attempts,
            breaks_without_progress: 0,
        }
    }

    /// The stream made progress since the last break.
    pub(crate) fn on_progress(&mut self) {
        self.breaks_without_progress = 0;
    }

    /// The stream broke with `error`: `Some(round)` (1 for the first retry in a row, for
    /// [`backoff_for_round`]) when it should be reopened, `None` when the error is final.
    pub(crate) fn on_break(&mut self, error: &Error) -> Option<u32> {
        if !is_resumable(error) || self.breaks_without_progress + 1 >= self.max_attempts {
            return None;
        }
        self.breaks_without_progress += 1;
        Some(self.breaks_without_progress)
    }
}

/// The wait before retry round `round` (1 = the first time an endpoint is tried again):
/// `initial * 2^(round-1)`, capped at `max`.
pub(crate) fn backoff_for_round(round: u32, initial: Duration, max: Duration) -> Duration {
    if round == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(round - 1).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(error: Error, delivery: Delivery) -> Failure {
        Failure { error, delivery }
    }

    /// A refused connection fails over, for reads and writes alike.
    #[test]
    fn not_sent_fails_over() {
        for kind in [OpKind::Read, OpKind::Write] {
            let mut state = RetryState::new(kind);
            let decision = state.on_failure(
                failure(Error::Transport("refused".into()), Delivery::NotSent),
                true,
            );
            assert!(matches!(decision, Decision::Retry));
        }
    }

    /// A definite error such as INVALID_ARGUMENT is returned at once.
    #[test]
    fn definite_error_is_final() {
        let mut state = RetryState::new(OpKind::Write);
        let decision = state.on_failure(
            failure(Error::InvalidArgument("key too long".into()), Delivery::Answered),
            true,
        );
        assert!(matches!(decision, Decision::Fail(Error::InvalidArgument(_))));
    }

    /// A write whose connection broke, then whose retries ran out, is outcome-unknown.
    #[test]
    fn ambiguous_write_then_unavailable_is_outcome_unknown() {
        let mut state = RetryState::new(OpKind::Write);
        let first = state.on_failure(
            failure(Error::Transport("reset".into()), Delivery::MaybeApplied),
            true,
        );
        assert!(matches!(first, Decision::Retry));
        let second = state.on_failure(
            failure(Error::Transport("refused".into()), Delivery::NotSent),
            false,
        );
        assert!(matches!(second, Decision::Fail(Error::OutcomeUnknown(_))));
    }

    /// A read whose connection broke stays a transport error.
    #[test]
    fn ambiguous_read_stays_transport() {
        let mut state = RetryState::new(OpKind::Read);
        let decision = state.on_failure(
            failure(Error::Transport("reset".into()), Delivery::MaybeApplied),
            false,
        );
        assert!(matches!(decision, Decision::Fail(Error::Transport(_))));
    }

    /// A write that timed out on the client side is outcome-unknown.
    #[test]
    fn write_timeout_is_outcome_unknown() {
        let mut state = RetryState::new(OpKind::Write);
        let decision = state.on_failure(Failure::deadline("timed out".into()), true);
        assert!(matches!(decision, Decision::Fail(Error::OutcomeUnknown(_))));
    }

    /// A read that timed out is a deadline error and is not retried.
    #[test]
    fn read_timeout_is_deadline() {
        let mut state = RetryState::new(OpKind::Read);
        let decision = state.on_failure(Failure::deadline("timed out".into()), true);
        assert!(matches!(decision, Decision::Fail(Error::DeadlineExceeded(_))));
    }

    /// A server outcome-unknown on a write is retried with the same request id.
    #[test]
    fn server_outcome_unknown_write_retries() {
        let mut state = RetryState::new(OpKind::Write);
        let decision = state.on_failure(
            failure(Error::OutcomeUnknown("x".into()), Delivery::MaybeApplied),
            true,
        );
        assert!(matches!(decision, Decision::Retry));
        let last = state.on_failure(
            failure(Error::OutcomeUnknown("y".into()), Delivery::MaybeApplied),
            false,
        );
        assert!(matches!(last, Decision::Fail(Error::OutcomeUnknown(_))));
    }

    /// The ends of a write after an attempt that may have been applied: one row per
    /// (what made it ambiguous, how the operation ended). Every row ends outcome-unknown,
    /// naming the last error.
    #[test]
    fn every_end_after_an_ambiguous_attempt_is_outcome_unknown() {
        let txn_abort = || Error::TxnAborted {
            reason: "WRITE_CONFLICT".into(),
            retryable: true,
            message: "write conflict on k".into(),
        };
        // (kind, the ambiguous first failure, the last failure, whether attempts are left)
        let cases: Vec<(OpKind, Failure, Failure, bool, &str)> = vec![
            // The review's path: the attempt timed out at the router (outcome unknown), the
            // retry met a router whose shard had no leader, and the attempts ran out.
            (
                OpKind::Write,
                failure(
                    Error::OutcomeUnknown("commit timed out".into()),
                    Delivery::MaybeApplied,
                ),
                failure(Error::Unavailable("not the leader".into()), Delivery::Answered),
                false,
                "not the leader",
            ),
            // A connection reset, then a router with a smaller max_value_bytes refuses.
            (
                OpKind::Write,
                failure(Error::Transport("reset".into()), Delivery::MaybeApplied),
                failure(
                    Error::InvalidArgument("value too large".into()),
                    Delivery::Answered,
                ),
                true,
                "value too large",
            ),
            // A definite refusal of another kind, with attempts left.
            (
                OpKind::Write,
                failure(Error::Transport("reset".into()), Delivery::MaybeApplied),
                failure(
                    Error::FailedPrecondition("not initialised".into()),
                    Delivery::Answered,
                ),
                true,
                "not initialised",
            ),
            // A request id refused as reused after the first attempt may have applied (a
            // delete-range retried past its first chunk's de-duplication record).
            (
                OpKind::StepwiseWrite,
                failure(Error::Transport("reset".into()), Delivery::MaybeApplied),
                failure(Error::RequestIdReused("id 07 reused".into()), Delivery::Answered),
                true,
                "id 07 reused",
            ),
            // A commit whose outcome the router could not learn, retried and refused as
            // aborted: reported as an abort, `transact` would run the body again.
            (
                OpKind::Write,
                failure(
                    Error::OutcomeUnknown("commit not confirmed".into()),
                    Delivery::MaybeApplied,
                ),
                failure(txn_abort(), Delivery::Answered),
                true,
                "write conflict",
            ),
            // Attempts spent on a refused connection.
            (
                OpKind::Write,
                failure(Error::Transport("reset".into()), Delivery::MaybeApplied),
                failure(Error::Transport("refused".into()), Delivery::NotSent),
                false,
                "refused",
            ),
            // A server error without a dedicated variant.
            (
                OpKind::Write,
                failure(Error::Transport("reset".into()), Delivery::MaybeApplied),
                failure(
                    Error::Other {
                        code: tonic::Code::Internal,
                        message: "disk".into(),
                    },
                    Delivery::Answered,
                ),
                true,
                "disk",
            ),
            // A stepwise write the router answered UNAVAILABLE (maybe partly applied), then
            // refused as invalid.
            (
                OpKind::StepwiseWrite,
                failure(
                    Error::Unavailable("shard 3 has no leader".into()),
                    Delivery::Answered,
                ),
                failure(Error::InvalidArgument("bad range".into()), Delivery::Answered),
                true,
                "bad range",
            ),
        ];
        for (index, (kind, first, last, attempts_left, cause)) in cases.into_iter().enumerate() {
            let mut state = RetryState::new(kind);
            let decision = state.on_failure(first, true);
            assert!(matches!(decision, Decision::Retry), "case {index}: {decision:?}");
            match state.on_failure(last, attempts_left) {
                Decision::Fail(Error::OutcomeUnknown(message)) => {
                    assert!(message.contains(cause), "case {index}: {message}")
                }
                other => panic!("case {index}: expected outcome unknown, got {other:?}"),
            }
        }
    }

    /// The end of the operation by its deadline, after an ambiguous attempt, is
    /// outcome-unknown too (`final_error` is what the IO loop reports then).
    #[test]
    fn a_deadline_after_an_ambiguous_attempt_is_outcome_unknown() {
        let mut state = RetryState::new(OpKind::Write);
        let _ = state.on_failure(
            failure(Error::Transport("reset".into()), Delivery::MaybeApplied),
            true,
        );
        let error = state.final_error(Error::DeadlineExceeded("put did not complete".into()));
        assert!(matches!(error, Error::OutcomeUnknown(ref m) if m.contains("did not complete")));
    }

    /// Without an ambiguous attempt, definite failures stay definite, for writes and reads.
    #[test]
    fn definite_failures_without_ambiguity_stay_definite() {
        for kind in [OpKind::Read, OpKind::Write, OpKind::StepwiseWrite] {
            let mut state = RetryState::new(kind);
            let _ = state.on_failure(
                failure(Error::Transport("refused".into()), Delivery::NotSent),
                true,
            );
            let decision = state.on_failure(
                failure(Error::InvalidArgument("bad".into()), Delivery::Answered),
                true,
            );
            assert!(
                matches!(decision, Decision::Fail(Error::InvalidArgument(_))),
                "{kind:?}: {decision:?}"
            );
        }
        // A read whose connection broke is not ambiguous: reads change nothing.
        let mut read = RetryState::new(OpKind::Read);
        let _ = read.on_failure(
            failure(Error::Transport("reset".into()), Delivery::MaybeApplied),
            true,
        );
        let decision = read.on_failure(
            failure(Error::InvalidArgument("bad".into()), Delivery::Answered),
            true,
        );
        assert!(matches!(decision, Decision::Fail(Error::InvalidArgument(_))));
    }

    /// A delete-range that the router answered with a transient error may be partly
    /// applied: its final error is outcome-unknown, unlike a single-step write's.
    #[test]
    fn stepwise_write_answered_unavailable_is_outcome_unknown() {
        let mut state = RetryState::new(OpKind::StepwiseWrite);
        let first = state.on_failure(
            failure(
                Error::Unavailable("shard 3 has no leader".into()),
                Delivery::Answered,
            ),
            true,
        );
        assert!(matches!(first, Decision::Retry));
        let last = state.on_failure(
            failure(
                Error::Unavailable("shard 3 has no leader".into()),
                Delivery::Answered,
            ),
            false,
        );
        assert!(matches!(last, Decision::Fail(Error::OutcomeUnknown(_))));

        let mut single = RetryState::new(OpKind::Write);
        let last = single.on_failure(
            failure(Error::Unavailable("no leader".into()), Delivery::Answered),
            false,
        );
        assert!(matches!(last, Decision::Fail(Error::Unavailable(_))));
    }

    /// A delete-range never sent anywhere, or rejected as invalid, failed for sure.
    #[test]
    fn stepwise_write_definite_failures_stay_definite() {
        let mut state = RetryState::new(OpKind::StepwiseWrite);
        let decision = state.on_failure(
            failure(Error::Transport("refused".into()), Delivery::NotSent),
            false,
        );
        assert!(matches!(decision, Decision::Fail(Error::Transport(_))));
        let mut state = RetryState::new(OpKind::StepwiseWrite);
        let decision = state.on_failure(
            failure(Error::InvalidArgument("start > end".into()), Delivery::Answered),
            true,
        );
        assert!(matches!(decision, Decision::Fail(Error::InvalidArgument(_))));
    }

    /// Transient stream breaks are resumed, definite errors are not.
    #[test]
    fn resumable_errors() {
        assert!(is_resumable(&Error::Transport("reset".into())));
        assert!(is_resumable(&Error::Unavailable("draining".into())));
        assert!(is_resumable(&Error::DeadlineExceeded("idle".into())));
        assert!(!is_resumable(&Error::InvalidArgument("foreign token".into())));
        assert!(!is_resumable(&Error::ResourceExhausted(
            "message too large".into()
        )));
        assert!(!is_resumable(&Error::OutcomeUnknown("x".into())));
    }

    /// Breaks in a row are bounded by the attempt budget; progress resets the count.
    #[test]
    fn resume_budget_counts_breaks_without_progress() {
        let transient = Error::Unavailable("x".into());
        let mut budget = ResumeBudget::new(3);
        assert_eq!(budget.on_break(&transient), Some(1));
        assert_eq!(budget.on_break(&transient), Some(2));
        assert_eq!(budget.on_break(&transient), None);

        let mut budget = ResumeBudget::new(3);
        for _ in 0..10 {
            assert_eq!(budget.on_break(&transient), Some(1));
            budget.on_progress();
        }
        assert_eq!(budget.on_break(&Error::InvalidArgument("x".into())), None);
        assert_eq!(ResumeBudget::new(1).on_break(&transient), None);
    }

    /// Backoff doubles per round and is capped.
    #[test]
    fn backoff_doubles_and_caps() {
        let initial = Duration::from_millis(50);
        let max = Duration::from_millis(300);
        assert_eq!(backoff_for_round(0, initial, max), Duration::ZERO);
        assert_eq!(backoff_for_round(1, initial, max), Duration::from_millis(50));
        assert_eq!(backoff_for_round(2, initial, max), Duration::from_millis(100));
        assert_eq!(backoff_for_round(4, initial, max), max);
        assert_eq!(backoff_for_round(200, initial, max), max);
    }
}
