//! Validity windows of certificates.

use std::time::{Duration, SystemTime};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::CertError;

/// Default lifetime of a CA certificate: 10 years.
pub const DEFAULT_CA_LIFETIME_DAYS: u32 = 3650;
/// Default lifetime of a node, router or client certificate: 1 year.
pub const DEFAULT_LEAF_LIFETIME_DAYS: u32 = 365;
/// Longest lifetime accepted, in days (100 years): a bound, not a recommendation.
pub const MAX_LIFETIME_DAYS: u32 = 36_500;
/// How far before "now" a new certificate's validity starts, so that a peer whose clock is
/// a little behind ours accepts it at once.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(3600);

const SECONDS_PER_DAY: u64 = 86_400;

/// When a certificate is valid: `not_before` up to and including `not_after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Start of the window.
    pub not_before: SystemTime,
    /// End of the window.
    pub not_after: SystemTime,
}

impl Validity {
    /// `days` days from now, starting [`CLOCK_SKEW_ALLOWANCE`] ago.
    pub fn days_from_now(days: u32) -> Result<Validity, CertError> {
        if days == 0 || days > MAX_LIFETIME_DAYS {
            return Err(CertError::InvalidValidity {
                reason: format!("lifetime must be 1 to {MAX_LIFETIME_DAYS} days, not {days}"),
            });
        }
        let now = SystemTime::now();
        Validity::between(
            now - CLOCK_SKEW_ALLOWANCE,
            now + Duration::from_secs(u64::from(days) * SECONDS_PER_DAY),
        )
    }

    /// An explicit window (tests use one in the past to make an expired certificate).
    pub fn between(not_before: SystemTime, not_after: SystemTime) -> Result<Validity, CertError> {
        if not_after <= not_before {
            return Err(CertError::InvalidValidity {
                reason: "not_after must be later than not_before".to_string(),
            });
        }
        Ok(Validity {
            not_before,
            not_after,
        })
    }
}

/// `time` as an `OffsetDateTime` (UTC), for rcgen.
pub(crate) fn to_offset(time: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(time)
}

/// A Unix timestamp (seconds) as a `SystemTime`.
pub(crate) fn from_unix_seconds(seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        SystemTime::UNIX_EPOCH + magnitude
    } else {
        SystemTime::UNIX_EPOCH - magnitude
    }
}

/// `time` in RFC 3339 (UTC), e.g. `2027-12-05T17:40:00Z`.
pub fn format_time(time: SystemTime) -> String {
    to_offset(time)
        .replace_nanosecond(0)
        .unwrap_or_else(|_| to_offset(time))
        .format(&Rfc3339)
        .unwrap_or_else(|err| format!("<unformattable time: {err}>"))
}
