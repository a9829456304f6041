//! Reading certificates back: what they say (role, subject, SANs, validity, issuer) and
//! whether a given CA signed them and they are valid now.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::SystemTime;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::FromDer;

use crate::role::{ROLE_URI_PREFIX, USER_URI_PREFIX};
use crate::validity::{format_time, from_unix_seconds};
use crate::{read_text, CertError, Role};

/// The PEM label of a certificate.
const CERTIFICATE_LABEL: &str = "CERTIFICATE";

/// What a certificate says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject, e.g. `CN=ringkv node`.
    pub subject: String,
    /// The issuer's subject, e.g. `CN=ringkv CA prod`.
    pub issuer: String,
    /// The serial number, hex with ':' separators.
    pub serial: String,
    /// Whether it is a CA certificate (`basicConstraints: CA:TRUE`).
    pub is_ca: bool,
    /// DNS name SANs.
    pub dns_names: Vec<String>,
    /// IP address SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// URI SANs (the role URI among them).
    pub uris: Vec<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The subject's public key (the bits of `subjectPublicKey`).
    pub public_key_raw: Vec<u8>,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl CertInfo {
    /// Parses a DER certificate; `what` names it in errors.
    pub fn from_der(der: &[u8], what: &str) -> Result<CertInfo, CertError> {
        let cert = parse_der(der, what)?;
        let mut info = CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            is_ca: cert.is_ca(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            uris: Vec::new(),
            not_before: from_unix_seconds(cert.validity().not_before.timestamp()),
            not_after: from_unix_seconds(cert.validity().not_after.timestamp()),
            public_key_raw: cert.public_key().subject_public_key.data.to_vec(),
            der: der.to_vec(),
        };
        let sans = cert
            .subject_alternative_name()
            .map_err(|err| CertError::NotCertificate {
                what: what.to_string(),
                reason: format!("bad subjectAltName: {err}"),
            })?;
        for name in sans.iter().flat_map(|sans| sans.value.general_names.iter()) {
            match name {
                GeneralName::DNSName(dns_name) => info.dns_names.push((*dns_name).to_string()),
                GeneralName::URI(uri) => info.uris.push((*uri).to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(address) = ip_from_bytes(bytes) {
                        info.ip_addresses.push(address);
                    }
                }
                _ => {}
            }
        }
        Ok(info)
    }

    /// The role its `ringkv://role/...` URI grants.
    pub fn role(&self) -> Result<Role, CertError> {
        let mut role_uris = self.uris.iter().filter(|uri| uri.starts_with(ROLE_URI_PREFIX));
        let Some(uri) = role_uris.next() else {
            return Err(CertError::NoRole {
                subject: self.subject.clone(),
            });
        };
        if role_uris.next().is_some() {
            return Err(CertError::MultipleRoles {
                subject: self.subject.clone(),
            });
        }
        uri.strip_prefix(ROLE_URI_PREFIX)
            .and_then(Role::from_name)
            .ok_or_else(|| CertError::UnknownRole {
                subject: self.subject.clone(),
                uri: uri.clone(),
            })
    }

    /// The user its `ringkv://user/<name>` URI names (client certificates); `NoUser` when
    /// it has none, `BadUser` when it has several or the name is not a valid user name.
    pub fn user(&self) -> Result<String, CertError> {
        let mut user_uris = self.uris.iter().filter(|uri| uri.starts_with(USER_URI_PREFIX));
        let Some(uri) = user_uris.next() else {
            return Err(CertError::NoUser {
                subject: self.subject.clone(),
            });
        };
        let bad = |reason: String| CertError::BadUser {
            subject: self.subject.clone(),
            reason,
        };
        if user_uris.next().is_some() {
            return Err(bad("more than one user URI".to_string()));
        }
        let name = uri.strip_prefix(USER_URI_PREFIX).unwrap_or_default();
        crate::check_user(name).map_err(|err| bad(err.to_string()))?;
        Ok(name.to_string())
    }

    /// Whether `now` is inside the validity window.
    pub fn check_valid_at(&self, now: SystemTime) -> Result<(), CertError> {
        if now < self.not_before {
            return Err(CertError::NotYetValid {
                subject: self.subject.clone(),
                not_before: format_time(self.not_before),
            });
        }
        if now > self.not_after {
            return Err(CertError::Expired {
                subject: self.subject.clone(),
                not_after: format_time(self.not_after),
            });
        }
        Ok(())
    }

    /// Whether `ca` signed this certificate: `ca` is a CA, this certificate's issuer is
    /// `ca`'s subject and its signature verifies with `ca`'s key.
    pub fn check_signed_by(&self, ca: &CertInfo) -> Result<(), CertError> {
        let wrong_ca = || CertError::WrongCa {
            subject: self.subject.clone(),
            ca: ca.subject.clone(),
        };
        if !ca.is_ca {
            return Err(CertError::NotCa {
                subject: ca.subject.clone(),
            });
        }
        if self.issuer != ca.subject {
            return Err(wrong_ca());
        }
        let cert = parse_der(&self.der, "the certificate")?;
        let ca_cert = parse_der(&ca.der, "the CA certificate")?;
        cert.verify_signature(Some(ca_cert.public_key()))
            .map_err(|_| wrong_ca())
    }

    /// The checks a peer will make: signed by `ca`, both valid at `now`, one known role.
    pub fn verify(&self, ca: &CertInfo, now: SystemTime) -> Result<Role, CertError> {
        self.check_signed_by(ca)?;
        ca.check_valid_at(now)?;
        self.check_valid_at(now)?;
        self.role()
    }
}

/// The DER of the first PEM block of `pem`, which must be a certificate.
pub fn parse_certificate_pem(pem: &str, what: &str) -> Result<Vec<u8>, CertError> {
    let (_rest, block) = parse_x509_pem(pem.as_bytes()).map_err(|err| CertError::NotPem {
        what: what.to_string(),
        reason: err.to_string(),
    })?;
    if block.label != CERTIFICATE_LABEL {
        return Err(CertError::NotPem {
            what: what.to_string(),
            reason: format!("found a {} block, not a {CERTIFICATE_LABEL}", block.label),
        });
    }
    Ok(block.contents)
}

/// Reads and parses the PEM certificate at `path`.
pub fn read_certificate(path: &Path) -> Result<CertInfo, CertError> {
    let what = path.display().to_string();
    let der = parse_certificate_pem(&read_text(path)?, &what)?;
    CertInfo::from_der(&der, &what)
}

fn parse_der<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, CertError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|err| CertError::NotCertificate {
        what: what.to_string(),
        reason: err.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(CertError::NotCertificate {
            what: what.to_string(),
            reason: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(cert)
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(octets) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(|octets| IpAddr::V6(Ipv6Addr::from(octets)))
}
