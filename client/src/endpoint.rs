//! Endpoint parsing: `host:port`, `http://host:port` or `https://host:port` to a lazily
//! connected channel, over mutual TLS when the config has TLS settings.

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{ClientConfig, Error};

/// Normalises a user-given address to a `scheme://host:port` URI string.
///
/// Accepts `host:port` (http), `http://host:port` and `https://host:port` (a trailing `/`
/// is dropped). Whether TLS is used is the config's choice (see [`crate::ClientTls`]);
/// an `https://` endpoint without TLS settings is refused when connecting, not downgraded.
pub fn normalize_endpoint(address: &str) -> Result<String, Error> {
    let trimmed = address.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(Error::InvalidArgument("empty endpoint".into()));
    }
    let (scheme, authority) = match trimmed.strip_prefix("https://") {
        Some(authority) => ("https", authority),
        None => ("http", trimmed.strip_prefix("http://").unwrap_or(trimmed)),
    };
    if authority.is_empty() || authority.contains('/') || authority.contains("://") {
        return Err(Error::InvalidArgument(format!(
            "endpoint {address:?} must look like host:port, http://host:port or https://host:port"
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
    Ok(format!("{scheme}://{authority}"))
}

/// The `host:port` part of an endpoint, as nodes advertise addresses.
pub(crate) fn authority_of(uri: &str) -> &str {
    uri.strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
        .unwrap_or(uri)
}

/// Builds a lazily connected channel to one endpoint: https with the config's TLS
/// settings when it has them, else plain http.
///
/// Must be called inside a tokio runtime (tonic spawns the connection driver).
pub(crate) fn lazy_channel(address: &str, config: &ClientConfig) -> Result<Channel, Error> {
    let uri = normalize_endpoint(address)?;
    let authority = authority_of(&uri);
    let invalid = |err: tonic::transport::Error| Error::InvalidArgument(format!("endpoint {uri:?}: {err}"));
    let endpoint = match &config.tls {
        Some(tls) => {
            let tls_config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            let tls_config = match tls.has_certificate() {
                true => tls_config.identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem)),
                false => tls_config,
            };
            Endpoint::from_shared(format!("https://{authority}"))
                .and_then(|endpoint| endpoint.tls_config(tls_config))
                .map_err(invalid)?
        }
        None if uri.starts_with("https://") => {
            return Err(Error::InvalidArgument(format!(
                "endpoint {uri:?} is https, but no TLS settings were given (a CA, a \
                 certificate and a key)"
            )))
        }
        None => Endpoint::from_shared(uri.clone()).map_err(invalid)?,
    };
    Ok(endpoint
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .connect_lazy())
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

    /// An https scheme is kept (TLS is the config's choice; see `lazy_channel`).
    #[test]
    fn keeps_https_scheme() {
        assert_eq!(normalize_endpoint("https://a:1").expect("valid"), "https://a:1");
        assert_eq!(authority_of("https://a:1"), "a:1");
    }

    /// Missing ports, paths and empty strings are rejected.
    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "   ",
            "localhost",
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
