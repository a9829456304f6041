//! Creating certificates: the cluster CA and the leaves it signs.
//!
//! Keys are ECDSA P-256 (rcgen's default: small, fast to make, accepted by rustls). The CA
//! may sign leaves only (path length 0). Each leaf carries one role URI (see `role`), the
//! key purposes its role needs, and an authority key identifier naming the CA's key.

use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::inspect::{parse_certificate_pem, CertInfo};
use crate::validity::{format_time, to_offset};
use crate::{read_text, CertError, Role, Validity};

/// Longest cluster or user name, in characters (the X.520 upper bound of a common name).
pub const MAX_NAME_CHARS: usize = 64;

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// The certificate (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// The private key (PKCS#8, `-----BEGIN PRIVATE KEY-----`): keep it secret.
    pub key_pem: String,
}

/// What a leaf certificate is for.
#[derive(Clone, Debug)]
pub struct LeafRequest {
    /// The role the certificate grants.
    pub role: Role,
    /// Node and router: DNS names or IP addresses peers dial (at least one). Client: none.
    pub hosts: Vec<String>,
    /// Client: the user name, the certificate's common name and its `ringkv://user/<name>`
    /// URI. Node and router: ignored.
    pub user: Option<String>,
    /// When the certificate is valid; must end before the CA's own validity does.
    pub validity: Validity,
}

/// The cluster's certificate authority: its certificate and signing key.
pub struct CertificateAuthority {
    cert_pem: String,
    info: CertInfo,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// A new self-signed CA with common name `ringkv CA <cluster_name>`.
    pub fn create(cluster_name: &str, validity: Validity) -> Result<CertificateAuthority, CertError> {
        check_cluster_name(cluster_name)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(&format!("ringkv CA {cluster_name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = to_offset(validity.not_before);
        params.not_after = to_offset(validity.not_after);
        let cert_pem = params.self_signed(&key)?.pem();
        CertificateAuthority::from_pem(&cert_pem, &key.serialize_pem())
    }

    /// The CA of a certificate and its key, both PEM; the key must be the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<CertificateAuthority, CertError> {
        let der = parse_certificate_pem(cert_pem, "the CA certificate")?;
        let info = CertInfo::from_der(&der, "the CA certificate")?;
        if !info.is_ca {
            return Err(CertError::NotCa {
                subject: info.subject,
            });
        }
        let key = KeyPair::from_pem(key_pem).map_err(|err| CertError::BadKey {
            what: "the CA key".to_string(),
            reason: err.to_string(),
        })?;
        if key.public_key_raw() != info.public_key_raw.as_slice() {
            return Err(CertError::CaKeyMismatch {
                subject: info.subject,
            });
        }
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(CertificateAuthority {
            cert_pem: cert_pem.to_string(),
            info,
            issuer,
        })
    }

    /// The CA of the files `cert_path` and `key_path`.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<CertificateAuthority, CertError> {
        CertificateAuthority::from_pem(&read_text(cert_path)?, &read_text(key_path)?)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM (PKCS#8).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// What the CA certificate says.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// A new key and a certificate for it, signed by this CA, as `request` asks.
    pub fn issue(&self, request: &LeafRequest) -> Result<IssuedCert, CertError> {
        if request.validity.not_after > self.info.not_after {
            return Err(CertError::OutlivesCa {
                not_after: format_time(request.validity.not_after),
                ca_not_after: format_time(self.info.not_after),
            });
        }
        let mut params = CertificateParams::default();
        params.subject_alt_names = leaf_sans(request)?;
        params
            .subject_alt_names
            .push(SanType::URI(request.role.uri().try_into()?));
        params.distinguished_name = match request.role {
            Role::Client => {
                let user = request.user.as_deref().unwrap_or_default();
                check_user(user)?;
                params
                    .subject_alt_names
                    .push(SanType::URI(crate::role::user_uri(user).try_into()?));
                common_name(user)
            }
            Role::Node | Role::Router => common_name(&format!("ringkv {}", request.role)),
        };
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = if request.role.is_server() {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = to_offset(request.validity.not_before);
        params.not_after = to_offset(request.validity.not_after);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The end of the CA's validity.
    pub fn not_after(&self) -> SystemTime {
        self.info.not_after
    }
}

/// The SANs of the request's hosts: IP addresses as such, anything else as a DNS name.
fn leaf_sans(request: &LeafRequest) -> Result<Vec<SanType>, CertError> {
    match request.role {
        Role::Client if !request.hosts.is_empty() => return Err(CertError::HostsOnClient),
        Role::Client => return Ok(Vec::new()),
        Role::Node | Role::Router if request.hosts.is_empty() => {
            return Err(CertError::NoHosts {
                role: request.role.to_string(),
            })
        }
        Role::Node | Role::Router => {}
    }
    request.hosts.iter().map(|host| host_san(host)).collect()
}

/// One host as a SAN.
fn host_san(host: &str) -> Result<SanType, CertError> {
    if let Ok(address) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(address));
    }
    let invalid = |reason: &str| CertError::InvalidHost {
        host: host.to_string(),
        reason: reason.to_string(),
    };
    if host.is_empty() || host.len() > 253 {
        return Err(invalid("a DNS name has 1 to 253 characters"));
    }
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().enumerate().all(|(index, c)| {
                c.is_ascii_alphanumeric() || c == '-' || (c == '*' && index == 0 && label.len() == 1)
            })
    });
    if !labels_ok {
        return Err(invalid(
            "not an IP address, nor a DNS name (dot-separated labels of letters, digits and '-')",
        ));
    }
    let name = host.to_string().try_into().map_err(|_| invalid("not ASCII"))?;
    Ok(SanType::DnsName(name))
}

/// A distinguished name of one common name.
fn common_name(name: &str) -> DistinguishedName {
    let mut distinguished_name = DistinguishedName::new();
    distinguished_name.push(DnType::CommonName, name);
    distinguished_name
}

/// A user name is also part of file names (`client.<user>.crt`): `[A-Za-z0-9._-]`, not
/// starting with '.', 1 to [`MAX_NAME_CHARS`] characters.
pub fn check_user(name: &str) -> Result<(), CertError> {
    let invalid = |reason: &str| CertError::InvalidUser {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid("a user name has 1 to 64 characters"));
    }
    if name.starts_with('.') {
        return Err(invalid("a user name does not start with '.'"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(invalid("a user name has only letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// A cluster name goes into the CA's common name: 1 to [`MAX_NAME_CHARS`] characters
/// (with the prefix), no control characters.
fn check_cluster_name(name: &str) -> Result<(), CertError> {
    let invalid = |reason: &str| CertError::InvalidClusterName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let max_chars = MAX_NAME_CHARS - "ringkv CA ".len();
    if name.trim().is_empty() || name.chars().count() > max_chars {
        return Err(invalid(&format!(
            "a cluster name has 1 to {max_chars} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("a cluster name has no control characters"));
    }
    Ok(())
}
