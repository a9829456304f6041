//! Failover decisions for one operation, without IO.
//!
//! The client tries routers in rotation. A failed attempt is retried on the next router
//! when the request was definitely not applied (connection refused, router answered
//! UNAVAILABLE) or when it is a write whose retry is safe because it reuses the same
//! request id (the cluster de-duplicates it). When a write attempt may have been applied
//! and no later attempt settles it, the operation reports
//! [`Error::OutcomeUnknown`] — never a plain failure.

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
        if self.kind == OpKind::Write && failure.delivery == Delivery::MaybeApplied {
            self.ambiguous = true;
        }
        let fail_over = match (failure.delivery, &failure.error) {
            (Delivery::NotSent, _) => true,
            (Delivery::Answered, Error::Unavailable(_)) => true,
            (Delivery::MaybeApplied, Error::Transport(_)) => true,
            (Delivery::MaybeApplied, Error::OutcomeUnknown(_)) => self.kind == OpKind::Write,
            _ => false,
        };
        if fail_over && can_retry {
            Decision::Retry
        } else {
            Decision::Fail(self.final_error(failure.error))
        }
    }

    /// The error to report when the operation ends with `error`.
    pub(crate) fn final_error(&self, error: Error) -> Error {
        if !self.ambiguous {
            return error;
        }
        match error {
            Error::OutcomeUnknown(_) => error,
            // Only transient failures leave the earlier ambiguity unresolved; a definite
            // answer to the same request id would have reported the first outcome.
            transient if transient.is_retryable() => Error::OutcomeUnknown(format!(
                "the write may have been applied; last error: {transient}"
            )),
            definite => definite,
        }
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

    /// A definite answer after an ambiguous attempt is reported as is.
    #[test]
    fn definite_after_ambiguous_is_reported() {
        let mut state = RetryState::new(OpKind::Write);
        let _ = state.on_failure(
            failure(Error::Transport("reset".into()), Delivery::MaybeApplied),
            true,
        );
        let decision = state.on_failure(
            failure(Error::InvalidArgument("bad".into()), Delivery::Answered),
            true,
        );
        assert!(matches!(decision, Decision::Fail(Error::InvalidArgument(_))));
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
