//! [`ClientConfig`]: timeouts and retry bounds, with a validating builder.

use std::path::Path;
use std::time::Duration;

use crate::credentials::ClientAuth;
use crate::Error;

/// Default overall deadline of one operation, retries included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on establishing one TCP/HTTP2 connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default number of attempts (across endpoints) per operation.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default wait before the first retry on an endpoint already tried.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// Default cap on the retry wait.
pub const DEFAULT_MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// Default longest wait for the next message of a streamed call (scan stream, count).
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest gRPC message accepted or sent (a batch of 1 MiB values adds up).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Upper bound accepted for `max_attempts`, so a typo cannot make retries unbounded.
const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// How a [`Client`](crate::Client) talks to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Overall deadline of one operation including failover retries; the remaining time
    /// is sent as the gRPC deadline (`grpc-timeout`) of each attempt. For streamed calls
    /// (`scan_stream`, `count`) it bounds opening the stream (and the router applies it
    /// to each round of shard calls), not the whole stream.
    pub request_timeout: Duration,
    /// Longest wait for the next message of an open stream (`scan_stream`, `count`)
    /// before it is treated as broken and reopened.
    pub stream_idle_timeout: Duration,
    /// Bound on establishing a connection to one endpoint.
    pub connect_timeout: Duration,
    /// Attempts per operation, across endpoints (1 = no retry).
    pub max_attempts: u32,
    /// Wait before retrying an endpoint already tried in the same operation; doubles per
    /// round.
    pub retry_backoff: Duration,
    /// Cap on the retry wait.
    pub max_retry_backoff: Duration,
    /// Largest gRPC message sent or accepted, in bytes.
    pub max_message_bytes: usize,
    /// TLS: connect over https, checking the server against the cluster CA and presenting
    /// the client's certificate, if it has one. None: plain http (an `--insecure` cluster).
    pub tls: Option<ClientTls>,
    /// A token or a user and password (issue 15): the calls act for that user, whatever
    /// user the certificate names. Needs `tls`; with a [CA-only](ClientTls::ca_only) `tls`
    /// it is the only credential (routers accept that; nodes require certificates). None:
    /// the certificate's user.
    pub auth: Option<ClientAuth>,
    /// Send gets, puts, deletes and compare-and-swaps as frames on one `Kv.Pipeline` stream
    /// per router (the default) instead of one HTTP/2 request each: the same answers, for
    /// much less CPU on both sides. Calls larger than 64 KiB, and every call to a router
    /// without the stream (an older version), go unary either way.
    pub pipeline: bool,
}

/// The client's TLS identity, PEM: the cluster CA, its certificate and its key. Without a
/// certificate ([`ClientTls::ca_only`]: `cert_pem` and `key_pem` empty) the client checks
/// the server and presents nothing: a router lets it in, and its calls must carry a token
/// ([`ClientConfig::auth`]); a node refuses it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The cluster CA's certificate: servers must present certificates it signed.
    pub ca_pem: String,
    /// The client's certificate, signed by the CA (any role: a client, or a router's or
    /// node's when a tool acts for them).
    pub cert_pem: String,
    /// The client's private key.
    pub key_pem: String,
}

impl ClientTls {
    /// Server-authenticated TLS without a client certificate: authenticate with
    /// [`ClientConfig::auth`] (routers only).
    pub fn ca_only(ca_pem: String) -> ClientTls {
        ClientTls {
            ca_pem,
            cert_pem: String::new(),
            key_pem: String::new(),
        }
    }

    /// Reads the CA's PEM file (`--ca` without `--cert`/`--key`), see [`ClientTls::ca_only`].
    pub fn from_ca_file(ca: &Path) -> Result<ClientTls, Error> {
        std::fs::read_to_string(ca)
            .map(ClientTls::ca_only)
            .map_err(|err| Error::InvalidArgument(format!("cannot read {}: {err}", ca.display())))
    }

    /// Whether a client certificate is presented.
    pub fn has_certificate(&self) -> bool {
        !self.cert_pem.is_empty()
    }

    /// Reads the three PEM files (`--ca`, `--cert`, `--key`). Their contents are checked
    /// by the TLS handshake, not here.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<ClientTls, Error> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|err| Error::InvalidArgument(format!("cannot read {}: {err}", path.display())))
        };
        Ok(ClientTls {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            max_retry_backoff: DEFAULT_MAX_RETRY_BACKOFF,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            tls: None,
            auth: None,
            pipeline: true,
        }
    }
}

impl ClientConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ClientConfigBuilder {
        ClientConfigBuilder {
            config: ClientConfig::default(),
        }
    }

    /// Checks that every bound is usable.
    pub fn validate(&self) -> Result<(), Error> {
        if self.request_timeout.is_zero() {
            return Err(Error::InvalidArgument("request timeout must be positive".into()));
        }
        if self.stream_idle_timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "stream idle timeout must be positive".into(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::InvalidArgument("connect timeout must be positive".into()));
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS_LIMIT {
            return Err(Error::InvalidArgument(format!(
                "max attempts must be in 1..={MAX_ATTEMPTS_LIMIT}, got {}",
                self.max_attempts
            )));
        }
        if self.retry_backoff > self.max_retry_backoff {
            return Err(Error::InvalidArgument(
                "retry backoff must not exceed max retry backoff".into(),
            ));
        }
        if self.max_message_bytes == 0 {
            return Err(Error::InvalidArgument("max message size must be positive".into()));
        }
        if self.auth.is_some() && self.tls.is_none() {
            return Err(Error::InvalidArgument(
                "a token or password needs TLS (--ca, --cert, --key): servers read tokens only \
                 from callers with a certificate of the cluster's CA"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Builds a validated [`ClientConfig`].
#[derive(Clone, Debug)]
pub struct ClientConfigBuilder {
    config: ClientConfig,
}

impl ClientConfigBuilder {
    /// Overall deadline of one operation (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Longest wait for the next message of an open stream (default 30 s).
    pub fn stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.stream_idle_timeout = timeout;
        self
    }

    /// Bound on establishing a connection (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Attempts per operation across endpoints (default 3).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.max_attempts = attempts;
        self
    }

    /// Initial and maximum wait between retry rounds (defaults 50 ms and 1 s).
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.retry_backoff = initial;
        self.config.max_retry_backoff = max;
        self
    }

    /// Largest gRPC message sent or accepted (default 64 MiB).
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.config.max_message_bytes = bytes;
        self
    }

    /// Connect with mutual TLS (default: none, plain http).
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// Authenticate with a token or a user and password (needs [`Self::tls`]).
    pub fn auth(mut self, auth: ClientAuth) -> Self {
        self.config.auth = Some(auth);
        self
    }

    /// Whether gets, puts, deletes and compare-and-swaps go as frames on one stream per
    /// router ([`ClientConfig::pipeline`]).
    pub fn pipeline(mut self, pipeline: bool) -> Self {
        self.config.pipeline = pipeline;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<ClientConfig, Error> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults are valid and match the documented values.
    #[test]
    fn defaults_are_valid() {
        let config = ClientConfig::builder().build().expect("defaults are valid");
        assert_eq!(config.request_timeout, Duration::from_secs(5));
        assert_eq!(config, ClientConfig::default());
    }

    /// Zero timeouts and zero attempts are rejected.
    #[test]
    fn rejects_zero_bounds() {
        assert!(ClientConfig::builder()
            .request_timeout(Duration::ZERO)
            .build()
            .is_err());
        assert!(ClientConfig::builder()
            .connect_timeout(Duration::ZERO)
            .build()
            .is_err());
        assert!(ClientConfig::builder()
            .stream_idle_timeout(Duration::ZERO)
            .build()
            .is_err());
        assert!(ClientConfig::builder().max_attempts(0).build().is_err());
        assert!(ClientConfig::builder().max_attempts(1000).build().is_err());
    }
}
