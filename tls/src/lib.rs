//! ringkv certificates: a cluster CA, and the certificates it signs for nodes, routers and
//! clients, written as PEM files and read back with their checks.
//!
//! This crate makes and checks the certificates; nodes and routers present and verify them
//! on every gRPC connection (mutual TLS, tonic on rustls), read their files through
//! [`TlsFiles`], serve with [`ReloadingIdentity`] and [`TlsIncoming`] and dial with
//! [`connect`] (rustls on ring, so rotated files take effect without a restart). It does not depend on tonic.
//!
//! - `role` — the [`Role`] a certificate grants and its encoding, a SAN URI
//!   `ringkv://role/<node|router|client>` (the module docs say why), and a client's user,
//!   a second SAN URI `ringkv://user/<name>`.
//! - `issue` — [`CertificateAuthority`]: create a CA or load one, and issue leaves
//!   ([`LeafRequest`] → [`IssuedCert`]).
//! - `inspect` — [`CertInfo`]: what a certificate says, and [`CertInfo::verify`]: signed by
//!   the CA, valid now, one known role.
//! - `files` — `<name>.crt` / `<name>.key` in a directory; keys 0600; no overwrite unless asked.
//! - `material` — [`TlsFiles`] → [`TlsMaterial`]: a process's CA, certificate and key, read
//!   and checked at start; [`peer_role`]: the role of a peer's certificate;
//!   [`peer_identity`]: its role and user.
//! - `reload` — [`ReloadingIdentity`]: a server's rustls configuration that re-reads its
//!   files when they change (certificate rotation without a restart).
//! - `incoming` — [`TlsIncoming`]: accepting TLS connections with that configuration for
//!   tonic (handshakes concurrent and bounded).
//! - `dial` — [`ReloadingIdentity::client_config`] and [`connect`]: the client side, also
//!   following the files (a node dialling its peers, a router dialling nodes).
//! - `probe` — [`presented_certificate`]: which certificate a server presents now.
//! - `validity` — [`Validity`] windows and their defaults (CA 10 years, leaves 1 year).
//! - `error` — [`CertError`], one variant per bad input.
//!
//! ```
//! use ringkv_tls::{CertificateAuthority, LeafRequest, Role, Validity};
//!
//! let ca = CertificateAuthority::create("demo", Validity::days_from_now(3650)?)?;
//! let node = ca.issue(&LeafRequest {
//!     role: Role::Node,
//!     hosts: vec!["127.0.0.1".into(), "node1.example".into()],
//!     user: None,
//!     validity: Validity::days_from_now(365)?,
//! })?;
//! let der = ringkv_tls::parse_certificate_pem(&node.cert_pem, "node.crt")?;
//! let info = ringkv_tls::CertInfo::from_der(&der, "node.crt")?;
//! assert_eq!(info.verify(ca.info(), std::time::SystemTime::now())?, Role::Node);
//! # Ok::<(), ringkv_tls::CertError>(())
//! ```

mod dial;
mod error;
mod files;
mod incoming;
mod inspect;
mod issue;
mod material;
mod probe;
mod reload;
mod role;
mod validity;

pub use dial::{connect, DialConnector, DialedConnection};
pub use error::CertError;
pub use files::{
    leaf_base_name, read_text, write_pair, CertPaths, CA_BASE_NAME, CERTS_DIR_MODE, CERT_FILE_MODE,
    KEY_FILE_MODE,
};
pub use incoming::{TlsConnections, TlsIncoming, HANDSHAKE_TIMEOUT, MAX_CONCURRENT_HANDSHAKES};
pub use inspect::{parse_certificate_pem, read_certificate, CertInfo};
pub use issue::{check_user, CertificateAuthority, IssuedCert, LeafRequest, MAX_NAME_CHARS};
pub use material::{peer_identity, peer_role, TlsFiles, TlsMaterial};
pub use probe::presented_certificate;
pub use reload::{ReloadingIdentity, RELOAD_CHECK_INTERVAL};
pub use role::{user_uri, Role, ROLE_URI_PREFIX, USER_URI_PREFIX};
/// The rustls this crate configures (ring only), for the types of its configurations.
pub use rustls;
pub use validity::{
    format_time, Validity, CLOCK_SKEW_ALLOWANCE, DEFAULT_CA_LIFETIME_DAYS, DEFAULT_LEAF_LIFETIME_DAYS,
    MAX_LIFETIME_DAYS,
};

#[cfg(test)]
mod tests;
