//! What a TLS-speaking process is given — the cluster CA, its own certificate and its key —
//! read and checked once at start, so a wrong file is a clear error before anything
//! listens or dials, not a handshake failure on every connection later. And the role of a
//! peer's certificate, for the servers' per-service checks.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::{parse_certificate_pem, read_text, CertError, CertInfo, Role};

/// The three files a node, router or client is started with (`--ca`, `--cert`, `--key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA's certificate: peers must present certificates it signed.
    pub ca: PathBuf,
    /// This process's certificate, signed by the CA.
    pub cert: PathBuf,
    /// This process's private key (the certificate's).
    pub key: PathBuf,
}

/// The contents of [`TlsFiles`], checked: the certificate is signed by the CA, valid now,
/// carries one of the expected roles, and the key is its key.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// This process's certificate, PEM.
    pub cert_pem: String,
    /// This process's private key, PEM.
    pub key_pem: String,
    /// The role the certificate grants.
    pub role: Role,
    /// What the certificate says.
    pub info: CertInfo,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsMaterial")
            .field("role", &self.role)
            .field("subject", &self.info.subject)
            .finish_non_exhaustive()
    }
}

impl TlsFiles {
    /// Reads the three files and checks them; `expected` lists the roles this process may
    /// hold (a node needs a node certificate).
    pub fn load(&self, expected: &[Role]) -> Result<TlsMaterial, CertError> {
        let ca_pem = read_text(&self.ca)?;
        let cert_pem = read_text(&self.cert)?;
        let key_pem = read_text(&self.key)?;
        let ca_what = self.ca.display().to_string();
        let ca = CertInfo::from_der(&parse_certificate_pem(&ca_pem, &ca_what)?, &ca_what)?;
        let cert_what = self.cert.display().to_string();
        let info = CertInfo::from_der(&parse_certificate_pem(&cert_pem, &cert_what)?, &cert_what)?;
        let role = info.verify(&ca, SystemTime::now())?;
        if !expected.contains(&role) {
            return Err(CertError::WrongRole {
                subject: info.subject.clone(),
                role: role.to_string(),
                expected: expected
                    .iter()
                    .map(|role| role.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            });
        }
        let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|err| CertError::BadKey {
            what: self.key.display().to_string(),
            reason: err.to_string(),
        })?;
        if key.public_key_raw() != info.public_key_raw.as_slice() {
            return Err(CertError::KeyMismatch {
                key: self.key.clone(),
                subject: info.subject.clone(),
            });
        }
        Ok(TlsMaterial {
            ca_pem,
            cert_pem,
            key_pem,
            role,
            info,
        })
    }
}

/// The role of a peer's certificate (DER, as the TLS handshake delivered it). The
/// handshake already checked the signature and validity; this reads the role URI.
pub fn peer_role(der: &[u8]) -> Result<Role, CertError> {
    CertInfo::from_der(der, "the peer certificate")?.role()
}

/// Who a peer's certificate (DER, as the TLS handshake delivered it) says it is: its role,
/// and for a client certificate its user (`Err` inside: a client certificate that names no
/// valid user, so it can be refused with the reason while its role is still known).
pub fn peer_identity(der: &[u8]) -> Result<(Role, Result<String, CertError>), CertError> {
    let info = CertInfo::from_der(der, "the peer certificate")?;
    let role = info.role()?;
    Ok((role, info.user()))
}
