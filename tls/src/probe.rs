//! Asking a TLS server which certificate it presents (a mutual-TLS handshake as a client,
//! nothing sent): how tests, and operators after a rotation, see what a server serves now.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{parse_certificate_pem, CertError, CertInfo, TlsMaterial};

/// The certificate the server at `addr` (`host:port`) presents to a client that trusts
/// `client`'s CA and presents `client`'s certificate, within `timeout`.
pub async fn presented_certificate(
    addr: &str,
    client: &TlsMaterial,
    timeout: Duration,
) -> Result<CertInfo, CertError> {
    let failed = |what: &str, reason: String| CertError::Rustls {
        what: format!("{what} {addr}"),
        reason,
    };
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(parse_certificate_pem(
            &client.ca_pem,
            "the CA",
        )?))
        .map_err(|err| failed("trusting the CA for", err.to_string()))?;
    let cert = CertificateDer::from(parse_certificate_pem(&client.cert_pem, "the client certificate")?);
    let key = PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes())
        .map_err(|err| failed("reading the client key for", err.to_string()))?;
    // ring on purpose, as in `reload.rs`.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| failed("configuring TLS for", err.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)
        .map_err(|err| failed("configuring TLS for", err.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server_name =
        ServerName::try_from(host.to_string()).map_err(|err| failed("naming the server", err.to_string()))?;
    let handshake = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|err| failed("connecting to", err.to_string()))?;
        TlsConnector::from(Arc::new(config))
            .connect(server_name, stream)
            .await
            .map_err(|err| failed("TLS handshake with", err.to_string()))
    };
    let connection = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| failed("TLS handshake with", format!("no answer within {timeout:?}")))??;
    let presented = connection
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or_else(|| {
            failed(
                "TLS handshake with",
                "the server presented no certificate".to_string(),
            )
        })?;
    CertInfo::from_der(presented.as_ref(), &format!("the certificate of {addr}"))
}
