//! The one error type of the crate: every bad input has its own variant, so callers (kvctl
//! today, the TLS wiring of nodes and routers next) can tell a usage mistake from a refused
//! certificate. An IO error is part of its variant's message, not a separate source, so
//! the message is whole however it is printed.

use std::path::PathBuf;

/// Why a certificate could not be created, written, read or accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read (missing, unreadable).
    #[error("cannot read {}: {io_error}", path.display())]
    Read { path: PathBuf, io_error: std::io::Error },
    /// A file or its directory could not be written.
    #[error("cannot write {}: {io_error}", path.display())]
    Write { path: PathBuf, io_error: std::io::Error },
    /// The file exists and overwriting was not asked for.
    #[error("{} already exists; refusing to overwrite it", path.display())]
    AlreadyExists { path: PathBuf },
    /// The input is not PEM, or holds no block of the expected kind.
    #[error("{what} is not PEM ({reason})")]
    NotPem { what: String, reason: String },
    /// The PEM block decodes, but not to an X.509 certificate.
    #[error("{what} is not an X.509 certificate ({reason})")]
    NotCertificate { what: String, reason: String },
    /// The PEM block is not a private key rcgen can sign with.
    #[error("{what} is not a usable private key ({reason})")]
    BadKey { what: String, reason: String },
    /// The CA certificate is not a CA (no `basicConstraints: CA:TRUE`).
    #[error("{subject} is not a CA certificate")]
    NotCa { subject: String },
    /// The private key given for the CA is not the key of the CA certificate.
    #[error("the CA key does not belong to the CA certificate {subject}")]
    CaKeyMismatch { subject: String },
    /// The certificate was not signed by the given CA.
    #[error("{subject} is not signed by the CA {ca}")]
    WrongCa { subject: String, ca: String },
    /// The certificate's validity ended.
    #[error("{subject} expired at {not_after}")]
    Expired { subject: String, not_after: String },
    /// The certificate's validity has not begun.
    #[error("{subject} is not valid before {not_before}")]
    NotYetValid { subject: String, not_before: String },
    /// The certificate carries no `ringkv://role/...` SAN URI.
    #[error("{subject} carries no ringkv role (no SAN URI ringkv://role/<node|router|client>)")]
    NoRole { subject: String },
    /// A `ringkv://role/...` URI names no known role.
    #[error("{subject} has an unknown ringkv role URI {uri}")]
    UnknownRole { subject: String, uri: String },
    /// More than one role URI: a certificate has exactly one role.
    #[error("{subject} carries more than one ringkv role")]
    MultipleRoles { subject: String },
    /// A client certificate without a `ringkv://user/<name>` URI: made before users existed
    /// (its common name is not trusted as an identity), or not by `kvctl cert create-client`.
    #[error("{subject} names no user (no ringkv://user/<name> URI): re-issue it with `kvctl cert create-client --user <name>`")]
    NoUser { subject: String },
    /// More than one user URI, or one whose name is not a valid user name.
    #[error("{subject} has a bad ringkv user URI: {reason}")]
    BadUser { subject: String, reason: String },
    /// A host is neither an IP address nor a valid DNS name.
    #[error("invalid host {host:?}: {reason}")]
    InvalidHost { host: String, reason: String },
    /// A node or router certificate needs at least one host.
    #[error("a {role} certificate needs at least one host name or IP address")]
    NoHosts { role: String },
    /// Client certificates name a user, not hosts.
    #[error("a client certificate takes a user name, not hosts")]
    HostsOnClient,
    /// A user name that is empty, too long, or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid user name {name:?}: {reason}")]
    InvalidUser { name: String, reason: String },
    /// A cluster name that is empty, too long or has control characters.
    #[error("invalid cluster name {name:?}: {reason}")]
    InvalidClusterName { name: String, reason: String },
    /// A validity window that is empty or out of range.
    #[error("invalid validity: {reason}")]
    InvalidValidity { reason: String },
    /// The leaf would outlive the CA that signs it.
    #[error("the certificate would be valid until {not_after}, after its CA expires ({ca_not_after})")]
    OutlivesCa { not_after: String, ca_not_after: String },
    /// The certificate's role is not one this process may hold (a node needs a node certificate).
    #[error("{subject} is a {role} certificate; this needs a {expected} certificate")]
    WrongRole {
        subject: String,
        role: String,
        expected: String,
    },
    /// The private key is not the key of the certificate it was given with.
    #[error("{} is not the key of the certificate {subject}", key.display())]
    KeyMismatch { key: PathBuf, subject: String },
    /// rustls refused a certificate, key or configuration.
    #[error("{what}: {reason}")]
    Rustls { what: String, reason: String },
    /// rcgen refused to build or sign the certificate.
    #[error("cannot generate the certificate: {0}")]
    Generate(#[from] rcgen::Error),
}
