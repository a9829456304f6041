//! The role a certificate grants, and how it is written into the certificate.
//!
//! A role is a SAN URI `ringkv://role/<node|router|client>`. Why a SAN URI, not the subject
//! or an extended key usage: the subject's common name already says who (a user name for
//! clients, so it cannot also say what); an extended key usage says what the key may do in
//! TLS (webpki checks serverAuth/clientAuth there), and a private EKU OID prints as a bare
//! number in `openssl x509 -text`; URI SANs are the convention of SPIFFE ids, every tool
//! prints them, and a verifier reads them from the peer's DER with one parse. A certificate
//! carries exactly one role URI. A client certificate also names its user, a second URI
//! `ringkv://user/<name>` ([`USER_URI_PREFIX`]).

use std::fmt;

/// The URI prefix of role SANs; the role name follows.
pub const ROLE_URI_PREFIX: &str = "ringkv://role/";

/// The URI prefix of user SANs, beside the role URI of client certificates; the user name
/// follows (`ringkv://user/alice`). The user is the client's identity for permissions (the
/// common name says the same for people reading the certificate, but is not trusted: client
/// certificates made before users existed carry only it).
pub const USER_URI_PREFIX: &str = "ringkv://user/";

/// The SAN URI naming user `name`.
pub fn user_uri(name: &str) -> String {
    format!("{USER_URI_PREFIX}{name}")
}

/// What a certificate may do in a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A storage node: serves and dials (server and client auth), SANs for its addresses.
    Node,
    /// A router: serves clients and dials nodes (server and client auth), SANs for its addresses.
    Router,
    /// A client (a user): client auth only, the user name as common name.
    Client,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 3] = [Role::Node, Role::Router, Role::Client];

    /// The lowercase name: `node`, `router`, `client`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Router => "router",
            Role::Client => "client",
        }
    }

    /// The SAN URI that encodes this role, e.g. `ringkv://role/node`.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.name())
    }

    /// Whether the certificate also authenticates a server (nodes and routers accept
    /// connections; clients only dial).
    pub fn is_server(self) -> bool {
        matches!(self, Role::Node | Role::Router)
    }

    /// The role named `name` (`node`, `router`, `client`).
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.name() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each role's URI names it back.
    #[test]
    fn role_uris_round_trip() {
        for role in Role::ALL {
            let uri = role.uri();
            let name = uri.strip_prefix(ROLE_URI_PREFIX).expect("prefix");
            assert_eq!(Role::from_name(name), Some(role), "{uri}");
        }
        assert_eq!(Role::from_name("admin"), None);
    }
}
