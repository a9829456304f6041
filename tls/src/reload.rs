//! A server TLS configuration that follows its files: certificates rotate without a restart.
//!
//! [`ReloadingIdentity`] holds what [`TlsFiles::load`] read and checked: the server's
//! certificate and key, and a verifier of clients' certificates built from the CA. At most
//! once per [`RELOAD_CHECK_INTERVAL`], a TLS handshake first looks at the three files'
//! modification times; when one changed, the files are read and checked again (the same
//! checks as at start: CA signature, validity, role, key) and, if they pass, the next
//! handshakes present the new certificate and accept clients of the new CA. Files that do
//! not pass (a half-copied key, a certificate of the wrong role) are refused with a warning
//! and the previous identity stays: a bad rotation never takes a server down. Connections
//! already open keep the certificates they were made with.
//!
//! A server requires clients' certificates ([`ReloadingIdentity::server_config`]), or, for a
//! router's client port only, verifies those it is sent and lets clients without one connect
//! ([`ReloadingIdentity::server_config_client_cert_optional`]): such a client is
//! authenticated by the token it sends instead (the router's `auth.rs`). A client
//! certificate that is sent must still be of the current CA: a certificate of another CA is
//! refused at the handshake either way.
//!
//! The client side of a process (a node dialling its peers, a router dialling nodes) follows
//! the same files through [`ReloadingIdentity::client_config`] (`dial.rs`): each new
//! connection presents the current certificate and checks the server against the current CA.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use tracing::{info, warn};

use crate::{parse_certificate_pem, CertError, Role, TlsFiles, TlsMaterial};

/// How often a handshake looks at the files' modification times, at most.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The ALPN protocol of gRPC.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// What the server presents and whom it accepts, as read from the files at `stamps`.
#[derive(Clone)]
pub(crate) struct Loaded {
    /// Modification times of the CA, certificate and key files when they were read.
    stamps: [Option<SystemTime>; 3],
    /// The certificate's subject and serial, for the logs.
    serial: String,
    pub(crate) certified_key: Arc<CertifiedKey>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    /// Checks the servers this process dials (`dial.rs`) against the same CA.
    pub(crate) server_verifier: Arc<WebPkiServerVerifier>,
}

/// A server's TLS identity that re-reads its files when they change.
pub struct ReloadingIdentity {
    files: TlsFiles,
    role: Role,
    pub(crate) provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Loaded>>,
    next_check: Mutex<Instant>,
}

impl fmt::Debug for ReloadingIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingIdentity")
            .field("files", &self.files)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl ReloadingIdentity {
    /// Reads and checks `files` (their certificate must grant `role`).
    pub fn load(files: TlsFiles, role: Role) -> Result<Arc<ReloadingIdentity>, CertError> {
        // ring on purpose (aws-lc-rs needs cmake); rustls deprecates its provider for
        // lacking post-quantum key exchange, which tonic's `tls-ring` goes without too.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = read(&files, role, &provider)?;
        Ok(Arc::new(ReloadingIdentity {
            files,
            role,
            provider,
            current: RwLock::new(Arc::new(loaded)),
            next_check: Mutex::new(Instant::now() + RELOAD_CHECK_INTERVAL),
        }))
    }

    /// A rustls server configuration presenting the current certificate and requiring
    /// clients' certificates of the current CA (HTTP/2 by ALPN).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, CertError> {
        self.config(true)
    }

    /// As [`ReloadingIdentity::server_config`], but a client may connect without a
    /// certificate (one it sends must be of the current CA): for a router's client port,
    /// whose callers without a certificate must send a token.
    pub fn server_config_client_cert_optional(self: &Arc<Self>) -> Result<Arc<ServerConfig>, CertError> {
        self.config(false)
    }

    fn config(self: &Arc<Self>, client_cert_required: bool) -> Result<Arc<ServerConfig>, CertError> {
        let verifier = VerifyWithCurrent {
            identity: self.clone(),
            client_cert_required,
        };
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| rustls_error("the TLS protocol versions", err))?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(ResolveCurrent(self.clone())));
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }

    /// The serial number of the certificate presented now.
    pub fn serial(&self) -> String {
        self.current().serial.clone()
    }

    /// The identity to use now, re-read first if its files changed (checked at most once
    /// per [`RELOAD_CHECK_INTERVAL`]).
    pub(crate) fn current(&self) -> Arc<Loaded> {
        self.reload_if_changed();
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn reload_if_changed(&self) {
        {
            let mut next_check = self.next_check.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if now < *next_check {
                return;
            }
            *next_check = now + RELOAD_CHECK_INTERVAL;
        }
        let stamps = stamps(&self.files);
        let known = self.current.read().unwrap_or_else(PoisonError::into_inner).stamps;
        if stamps == known {
            return;
        }
        match read(&self.files, self.role, &self.provider) {
            Ok(loaded) => {
                info!(certificate = %loaded.serial, "TLS files changed; serving the new certificate");
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
            }
            Err(err) => {
                // Keep serving with what was good; look again at the next change.
                warn!(%err, "TLS files changed but are refused; keeping the previous certificate");
                // Their stamps are remembered, so they are not read again until they change.
                let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
                let kept = Loaded {
                    stamps,
                    ..(**current).clone()
                };
                *current = Arc::new(kept);
            }
        }
    }
}

/// The modification times of the CA, certificate and key files (None: unreadable).
fn stamps(files: &TlsFiles) -> [Option<SystemTime>; 3] {
    [&files.ca, &files.cert, &files.key].map(|path| {
        std::fs::metadata(path)
            .and_then(|metadata| metadata.modified())
            .ok()
    })
}

pub(crate) fn rustls_error(what: &str, err: impl fmt::Display) -> CertError {
    CertError::Rustls {
        what: what.to_string(),
        reason: err.to_string(),
    }
}

/// Reads, checks and turns the files into what rustls needs.
fn read(files: &TlsFiles, role: Role, provider: &Arc<CryptoProvider>) -> Result<Loaded, CertError> {
    // The stamps first: a file changed while it is read is read again at the next check.
    let stamps = stamps(files);
    let material: TlsMaterial = files.load(&[role])?;
    let cert_what = files.cert.display().to_string();
    let cert = CertificateDer::from(parse_certificate_pem(&material.cert_pem, &cert_what)?);
    let key = PrivateKeyDer::from_pem_slice(material.key_pem.as_bytes())
        .map_err(|err| rustls_error(&files.key.display().to_string(), err))?;
    let certified_key = CertifiedKey::from_der(vec![cert], key, provider)
        .map_err(|err| rustls_error(&files.key.display().to_string(), err))?;
    let ca_what = files.ca.display().to_string();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(parse_certificate_pem(
            &material.ca_pem,
            &ca_what,
        )?))
        .map_err(|err| rustls_error(&ca_what, err))?;
    let roots = Arc::new(roots);
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|err| rustls_error(&ca_what, err))?;
    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|err| rustls_error(&ca_what, err))?;
    Ok(Loaded {
        stamps,
        serial: format!("{} ({})", material.info.serial, material.info.subject),
        certified_key: Arc::new(certified_key),
        client_verifier,
        server_verifier,
    })
}

/// Presents the current certificate.
#[derive(Debug)]
struct ResolveCurrent(Arc<ReloadingIdentity>);

impl ResolvesServerCert for ResolveCurrent {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified_key.clone())
    }
}

/// Verifies clients against the current CA (a certificate is required, or optional).
#[derive(Debug)]
struct VerifyWithCurrent {
    identity: Arc<ReloadingIdentity>,
    client_cert_required: bool,
}

impl ClientCertVerifier for VerifyWithCurrent {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.client_cert_required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints (they would borrow from an identity that may be replaced): clients
        // present the one certificate they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.identity
            .current()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.identity
            .current()
            .client_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.identity
            .current()
            .client_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.identity.current().client_verifier.supported_verify_schemes()
    }
}
