//! The client side of a process's TLS, following its files like the server side: node →
//! node and router → node connections present the certificate the files hold now.
//!
//! tonic's `ClientTlsConfig` is fixed when a channel is made, and a channel reconnects with
//! it for as long as it lives; so a process that dialled with it kept presenting the
//! certificate it started with until it restarted. [`ReloadingIdentity::client_config`]
//! is a rustls client configuration whose certificate resolver and server verifier ask the
//! [`ReloadingIdentity`] on every handshake (which re-reads changed files, at most once per
//! [`RELOAD_CHECK_INTERVAL`](crate::RELOAD_CHECK_INTERVAL), with the start-up checks), and
//! [`connect`] opens one TLS connection with it; [`DialConnector`] is that as the connector
//! nodes and routers give tonic for their channels (`Endpoint::connect_with_connector_lazy`,
//! with an `http://` URI: the TLS is ours), so every connection and reconnection of every
//! channel presents the current certificate. Connections already open keep theirs.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::reload::{rustls_error, ALPN_H2};
use crate::{CertError, ReloadingIdentity};

impl ReloadingIdentity {
    /// A rustls client configuration presenting the current certificate and checking
    /// servers against the current CA (HTTP/2 by ALPN), both re-read when the files change.
    pub fn client_config(self: &Arc<Self>) -> Result<Arc<ClientConfig>, CertError> {
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| rustls_error("the TLS protocol versions", err))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(VerifyServerWithCurrent(self.clone())))
            .with_client_cert_resolver(Arc::new(PresentCurrent(self.clone())));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }
}

/// Opens a TLS connection to `authority` (`host:port`, an IP or a name the server's
/// certificate must list) with `config` (TCP_NODELAY on).
pub async fn connect(config: Arc<ClientConfig>, authority: &str) -> io::Result<TlsStream<TcpStream>> {
    let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(host.to_string()).map_err(|err| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("server name {host:?}: {err}"),
        )
    })?;
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    TlsConnector::from(config).connect(server_name, stream).await
}

/// A tonic connector dialling with a [`ReloadingIdentity::client_config`]: the authority of
/// each URI it is asked for (its scheme is ignored: give tonic `http://host:port` so tonic
/// adds no TLS of its own).
#[derive(Clone, Debug)]
pub struct DialConnector {
    config: Arc<ClientConfig>,
}

impl DialConnector {
    pub fn new(config: Arc<ClientConfig>) -> DialConnector {
        DialConnector { config }
    }
}

/// A connection [`DialConnector`] made, as hyper reads and writes it.
pub type DialedConnection = TokioIo<TlsStream<TcpStream>>;

impl tower_service::Service<http::Uri> for DialConnector {
    type Response = DialedConnection;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<DialedConnection>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let authority = uri.authority().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("no host:port in {uri}"))
            })?;
            connect(config, authority.as_str()).await.map(TokioIo::new)
        })
    }
}

/// Presents the current certificate.
#[derive(Debug)]
struct PresentCurrent(Arc<ReloadingIdentity>);

impl ResolvesClientCert for PresentCurrent {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified_key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks servers against the current CA (webpki: signature, validity, the dialled name).
#[derive(Debug)]
struct VerifyServerWithCurrent(Arc<ReloadingIdentity>);

impl ServerCertVerifier for VerifyServerWithCurrent {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current().server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .server_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .server_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().server_verifier.supported_verify_schemes()
    }
}
