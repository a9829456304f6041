//! Endpoint parsing: `host:port` or `http://host:port` to a lazily connected channel.

use tonic::transport::{Channel, Endpoint};

use crate::{ClientConfig, Error};

/// Normalises a user-given address to an `http://host:port` URI string.
///
/// Accepts `host:port` and `http://host:port` (a trailing `/` is dropped). TLS is not
/// supported yet, so `https://` is rejected rather than silently downgraded.
pub fn normalize_endpoint(address: &str) -> Result<String, Error> {
    let trimmed = address.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(Error::InvalidArgument("empty endpoint".into()));
    }
    if trimmed.starts_with("https://") {
        return Err(Error::InvalidArgument(format!(
            "endpoint {trimmed:?}: TLS (https) is not supported"
        )));
    }
    let authority = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    if authority.is_empty() || authority.contains('/') || authority.contains("://") {
        return Err(Error::InvalidArgument(format!(
            "endpoint {address:?} must look like host:port or http://host:port"
        )));
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !has_port {
        return Err(Error::InvalidArgument(format!(
            "endpoint {address:?} needs a port (host:port)"
        )));
    }
    Ok(format!("http://{authority}"))
}

/// The `host:port` part of an endpoint, as nodes advertise addresses.
pub(crate) fn authority_of(uri: &str) -> &str {
    uri.strip_prefix("http://").unwrap_or(uri)
}

/// Builds a lazily connected channel to one endpoint.
///
/// Must be called inside a tokio runtime (tonic spawns the connection driver).
pub(crate) fn lazy_channel(address: &str, config: &ClientConfig) -> Result<Channel, Error> {
    let uri = normalize_endpoint(address)?;
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|err| Error::InvalidArgument(format!("endpoint {uri:?}: {err}")))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bare `host:port` gets the http scheme.
    #[test]
    fn adds_scheme() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:7000").expect("valid"),
            "http://127.0.0.1:7000"
        );
        assert_eq!(
            normalize_endpoint(" localhost:1 ").expect("valid"),
            "http://localhost:1"
        );
    }

    /// An explicit http scheme and a trailing slash are accepted.
    #[test]
    fn keeps_http_scheme() {
        assert_eq!(
            normalize_endpoint("http://[::1]:7000/").expect("valid"),
            "http://[::1]:7000"
        );
    }

    /// Missing ports, https, paths and empty strings are rejected.
    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "   ",
            "localhost",
            "https://a:1",
            "http://a:1/x",
            ":7000",
            "a:99999",
            "ftp://a:1",
        ] {
            assert!(normalize_endpoint(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    /// The authority strips the scheme again.
    #[test]
    fn authority_strips_scheme() {
        assert_eq!(authority_of("http://127.0.0.1:7001"), "127.0.0.1:7001");
        assert_eq!(authority_of("127.0.0.1:7001"), "127.0.0.1:7001");
    }
}
