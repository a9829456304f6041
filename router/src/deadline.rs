//! Request deadlines: a client's `grpc-timeout` header (capped by `max_request_timeout_ms`)
//! or `default_request_timeout_ms`, minus a small margin so the router's answer (for
//! example "write outcome unknown") reaches the client before the client gives up.

use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

/// Name of the gRPC deadline header.
const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";
/// Largest margin kept between the router's deadline and the client's.
const MAX_REPLY_MARGIN: Duration = Duration::from_millis(50);

/// How long the router may spend on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutPolicy {
    pub default_timeout: Duration,
    pub max_timeout: Duration,
}

impl TimeoutPolicy {
    /// The budget for a request given its (optional, raw) `grpc-timeout` header value.
    pub fn budget(&self, header: Option<&str>) -> Duration {
        self.budget_for(header.and_then(parse_grpc_timeout))
    }

    /// The budget for a request whose client waits `client_timeout` (None: not said).
    pub fn budget_for(&self, client_timeout: Option<Duration>) -> Duration {
        let Some(client_timeout) = client_timeout else {
            return self.default_timeout.min(self.max_timeout);
        };
        let capped = client_timeout.min(self.max_timeout);
        if capped < client_timeout {
            // The client waits longer than we will work: no margin needed.
            return capped;
        }
        capped.saturating_sub(reply_margin(capped))
    }

    /// The deadline of a request whose metadata was received now.
    pub fn deadline(&self, metadata: &MetadataMap) -> Instant {
        let header = metadata
            .get(GRPC_TIMEOUT_HEADER)
            .and_then(|value| value.to_str().ok());
        Instant::now() + self.budget(header)
    }
}

/// A tenth of the client's timeout, at most [`MAX_REPLY_MARGIN`].
fn reply_margin(client_timeout: Duration) -> Duration {
    (client_timeout / 10).min(MAX_REPLY_MARGIN)
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit `H M S m u n`.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    match unit {
        'H' => Some(Duration::from_secs(amount * 3600)),
        'M' => Some(Duration::from_secs(amount * 60)),
        'S' => Some(Duration::from_secs(amount)),
        'm' => Some(Duration::from_millis(amount)),
        'u' => Some(Duration::from_micros(amount)),
        'n' => Some(Duration::from_nanos(amount)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: TimeoutPolicy = TimeoutPolicy {
        default_timeout: Duration::from_secs(5),
        max_timeout: Duration::from_secs(60),
    };

    /// Every unit of the gRPC spec parses; malformed values are ignored.
    #[test]
    fn parses_grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("4S"), Some(Duration::from_secs(4)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("99u"), Some(Duration::from_micros(99)));
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "10", "123456789S", "1x", "-1S", "1.5S", "é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    /// Without a header the default applies; a header overrides it, capped by the maximum.
    #[test]
    fn budget_follows_header_default_and_cap() {
        assert_eq!(POLICY.budget(None), Duration::from_secs(5));
        assert_eq!(POLICY.budget(Some("garbage")), Duration::from_secs(5));
        assert_eq!(POLICY.budget(Some("10H")), Duration::from_secs(60));
        // 1 s from the client: keep 50 ms for the reply.
        assert_eq!(POLICY.budget(Some("1S")), Duration::from_millis(950));
        // 100 ms from the client: keep a tenth.
        assert_eq!(POLICY.budget(Some("100m")), Duration::from_millis(90));
    }
}
