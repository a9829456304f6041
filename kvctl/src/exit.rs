//! Exit codes and the mapping from errors to them.
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0    | success |
//! | 1    | key not found, a failed check (`check perf`: FAIL), or any other error |
//! | 2    | compare-and-swap mismatch |
//! | 3    | unavailable, deadline exceeded, transport or overload (retry later) |
//! | 4    | outcome unknown: the write may or may not have been applied |
//! | 64   | usage error (bad flags, bad hex, conflicting options), found by kvctl |
//! | 65   | data error: the cluster refused the input as invalid (gRPC `INVALID_ARGUMENT`: a key or value too large, a bad range) or too old (`OUT_OF_RANGE`: a snapshot no longer held) |
//!
//! The help (`kvctl --help`) and the README state the same table.

use ringkv_client::Error as ClientError;

/// Success.
pub const EXIT_OK: u8 = 0;
/// Key not found, or a generic error.
pub const EXIT_FAILURE: u8 = 1;
/// Compare-and-swap mismatch.
pub const EXIT_CAS_MISMATCH: u8 = 2;
/// Unavailable, deadline exceeded or another transient error.
pub const EXIT_UNAVAILABLE: u8 = 3;
/// The write may or may not have been applied.
pub const EXIT_OUTCOME_UNKNOWN: u8 = 4;
/// Bad command line (sysexits `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
/// Input the cluster refused as invalid (sysexits `EX_DATAERR`).
pub const EXIT_DATA_ERROR: u8 = 65;

/// How a command that did not fail ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The command did what was asked.
    Success,
    /// The key does not exist (the message was already printed).
    NotFound,
    /// The CAS comparison failed (the current state was already printed).
    CasMismatch,
    /// A check found the cluster wanting (the verdict was already printed).
    CheckFailed,
    /// Exit with this code: the status of a command kvctl ran for the user (`lock NAME --
    /// COMMAND`), or 1 when a held lock or leadership was lost (already said on stderr).
    Exit(u8),
}

impl Outcome {
    /// The process exit code of this outcome.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Success => EXIT_OK,
            Outcome::NotFound | Outcome::CheckFailed => EXIT_FAILURE,
            Outcome::CasMismatch => EXIT_CAS_MISMATCH,
            Outcome::Exit(code) => code,
        }
    }
}

/// A bad command line detected after clap parsing (e.g. invalid hex).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code of a client error.
pub fn client_exit_code(error: &ClientError) -> u8 {
    if error.is_outcome_unknown() {
        EXIT_OUTCOME_UNKNOWN
    } else if matches!(
        error,
        ClientError::InvalidArgument(_) | ClientError::OutOfRange(_)
    ) {
        EXIT_DATA_ERROR
    } else if error.is_retryable() {
        EXIT_UNAVAILABLE
    } else {
        EXIT_FAILURE
    }
}

/// The exit code of any error a command returned: the first usage or client error in
/// its chain decides, anything else is a generic failure.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<UsageError>() {
            return EXIT_USAGE;
        }
        if let Some(client_error) = cause.downcast_ref::<ClientError>() {
            return client_exit_code(client_error);
        }
    }
    EXIT_FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each client error class maps to its documented exit code.
    #[test]
    fn client_errors_map_to_codes() {
        let cases = [
            (ClientError::OutcomeUnknown("x".into()), EXIT_OUTCOME_UNKNOWN),
            (ClientError::Unavailable("x".into()), EXIT_UNAVAILABLE),
            (ClientError::DeadlineExceeded("x".into()), EXIT_UNAVAILABLE),
            (ClientError::Transport("x".into()), EXIT_UNAVAILABLE),
            (ClientError::ResourceExhausted("x".into()), EXIT_UNAVAILABLE),
            (ClientError::InvalidArgument("x".into()), EXIT_DATA_ERROR),
            (ClientError::OutOfRange("x".into()), EXIT_DATA_ERROR),
            (ClientError::FailedPrecondition("x".into()), EXIT_FAILURE),
            (ClientError::NotFound("x".into()), EXIT_FAILURE),
            (ClientError::RequestIdReused("x".into()), EXIT_FAILURE),
        ];
        for (error, code) in cases {
            assert_eq!(client_exit_code(&error), code, "{error}");
        }
    }

    /// Wrapped errors are found in the chain; usage errors give 64.
    #[test]
    fn chained_errors_map_to_codes() {
        let wrapped = anyhow::Error::new(ClientError::OutcomeUnknown("x".into())).context("put k");
        assert_eq!(exit_code(&wrapped), EXIT_OUTCOME_UNKNOWN);
        let usage = anyhow::Error::new(UsageError("bad hex".into())).context("key");
        assert_eq!(exit_code(&usage), EXIT_USAGE);
        assert_eq!(exit_code(&anyhow::anyhow!("disk full")), EXIT_FAILURE);
    }

    /// Outcomes map to 0, 1 and 2.
    #[test]
    fn outcomes_map_to_codes() {
        assert_eq!(Outcome::Success.exit_code(), 0);
        assert_eq!(Outcome::NotFound.exit_code(), 1);
        assert_eq!(Outcome::CasMismatch.exit_code(), 2);
    }
}
