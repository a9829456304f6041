//! Who may call which service, checked once per request from the caller's TLS certificate.
//!
//! With TLS on, the handshake already proved that the caller holds a certificate of this
//! cluster's CA, valid now (rustls's client verifier). [`RoleGate`] wraps a generated
//! tonic server, like [`Bounded`](super::inflight::Bounded), and reads the role URI of
//! that certificate (`ringkv://role/<role>`, see `ringkv-tls`) before the request is
//! decoded: a role the service does not accept is answered `PERMISSION_DENIED` naming the
//! service, the role and who the certificate names, and the service never sees the
//! request. So a client certificate cannot speak `Raft` (no forged votes or appends).
//!
//! Who is accepted ([`SERVICE_ROLES`]): `Raft` — nodes only; `Tso` — routers, and nodes
//! (nodes forward timestamps to the system leader); `ShardKv` and `Admin` — nodes, routers
//! and clients, whose requests then go through the permission check of `authz.rs`; `Auth`
//! (password logins, `login.rs`) — everyone, with or without a user.
//!
//! The gate also says who the caller acts for, a [`Caller`] put in the request's extensions:
//! for a client certificate, the user of the token in `authorization: Bearer <token>` if
//! the request carries one (it overrides the certificate's user; a token that does not
//! check out is `UNAUTHENTICATED`, never a fall back to the certificate), else the
//! certificate's own user (`ringkv://user/<name>`; a client certificate naming none and no
//! token is refused here); the user a router names in `x-ringkv-user` (believed only from a
//! router certificate; a router without it acts for itself, as root: its own transaction
//! collection and status polls); root for nodes. Tokens are checked against the permission
//! table this node applied (in memory: `GroupState::watch_auth`).
//!
//! Without TLS (`--insecure`) no gate is installed: there is no certificate to read.
//! The refusals are made here, not through `NodeError`: like a failed handshake, they
//! happen before any service runs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use ringkv_authz::AuthTable;
use ringkv_proto::v1;
use ringkv_tls::Role;
use tokio::sync::watch;
use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

/// Which roles each service accepts, by service name.
pub const SERVICE_ROLES: [(&str, &[Role]); 5] = [
    (v1::raft_server::SERVICE_NAME, &[Role::Node]),
    (
        v1::shard_kv_server::SERVICE_NAME,
        &[Role::Router, Role::Node, Role::Client],
    ),
    (v1::tso_server::SERVICE_NAME, &[Role::Router, Role::Node]),
    (
        v1::admin_server::SERVICE_NAME,
        &[Role::Node, Role::Router, Role::Client],
    ),
    (
        v1::auth_server::SERVICE_NAME,
        &[Role::Node, Role::Router, Role::Client],
    ),
];

/// Most distinct peer certificates whose roles are remembered (a node meets its peers and
/// routers, a handful); past it the memory starts over.
const MAX_REMEMBERED_CERTS: usize = 1024;

/// A certificate's role and user (`None`: a node or router certificate, or a client
/// certificate naming no user), or why it is refused.
type RoleOrReason = Result<(Role, Option<String>), String>;

/// Who a request acts for, put in its extensions by [`RoleGate`] (absent without TLS: then
/// nothing is authenticated and every caller acts as root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The role of the certificate that called.
    pub role: Role,
    /// The user whose permissions apply.
    pub user: String,
}

/// The roles of the certificates seen, by DER: a certificate is parsed once, not once per
/// request (Raft messages come thousands a second). Shared by every gate of a server.
#[derive(Debug, Clone, Default)]
pub struct RoleCache {
    roles: Arc<Mutex<HashMap<Vec<u8>, RoleOrReason>>>,
    /// The permission table tokens are checked against (none: tokens are refused).
    tokens: Option<watch::Receiver<Arc<AuthTable>>>,
}

impl RoleCache {
    /// A cache whose gates check tokens against `table` (the system group's, as applied).
    pub fn with_tokens(table: watch::Receiver<Arc<AuthTable>>) -> RoleCache {
        RoleCache {
            roles: Arc::default(),
            tokens: Some(table),
        }
    }

    /// The user `token` stands for, or the `UNAUTHENTICATED` status to answer.
    fn token_user(&self, service: &str, token: &str) -> Result<String, Status> {
        let Some(table) = &self.tokens else {
            return Err(Status::unauthenticated(format!(
                "{service}: this node accepts no tokens"
            )));
        };
        let table = Arc::clone(&table.borrow());
        ringkv_authz::token::verify(&table, token, ringkv_authz::token::now_unix_ms())
            .map_err(|err| Status::unauthenticated(format!("{service}: {err}")))
    }

    /// The role of the certificate `der`, or why it has none.
    fn role_of(&self, der: &[u8]) -> RoleOrReason {
        let mut roles = self.roles.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = roles.get(der) {
            return known.clone();
        }
        let role = match ringkv_tls::peer_identity(der) {
            Err(err) => Err(err.to_string()),
            Ok((Role::Client, Err(_no_user))) => Ok((Role::Client, None)),
            Ok((Role::Client, Ok(user))) => Ok((Role::Client, Some(user))),
            Ok((role, _)) => Ok((role, None)),
        };
        if roles.len() >= MAX_REMEMBERED_CERTS {
            roles.clear();
        }
        roles.insert(der.to_vec(), role.clone());
        role
    }
}

/// The roles `service` accepts (none for an unknown service: nothing is let through).
pub fn accepted_roles(service: &str) -> &'static [Role] {
    SERVICE_ROLES
        .iter()
        .find(|(name, _)| *name == service)
        .map(|(_, roles)| *roles)
        .unwrap_or(&[])
}

/// What a request says about who it acts for, besides its certificate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Claims<'a> {
    /// The `x-ringkv-user` metadata (believed from routers only).
    pub forwarded_user: Option<&'a str>,
    /// The token of `authorization: Bearer <token>` (read from clients only).
    pub token: Option<&'a str>,
}

/// Whether the caller whose leaf certificate is `peer_cert` (DER; None: it presented none)
/// may call `service`, and who it acts for (see the module docs); the status to answer if
/// not.
pub fn check_caller(
    service: &str,
    peer_cert: Option<&[u8]>,
    claims: Claims<'_>,
    cache: &RoleCache,
) -> Result<Caller, Status> {
    let Some(der) = peer_cert else {
        return Err(Status::unauthenticated(format!(
            "{service} needs a client certificate of this cluster's CA"
        )));
    };
    let (role, user) = cache.role_of(der).map_err(|reason| {
        Status::permission_denied(format!("{service} refused the caller's certificate: {reason}"))
    })?;
    let accepted = accepted_roles(service);
    if accepted.contains(&role) {
        let user = match (role, user, claims.forwarded_user) {
            (Role::Client, _, _) if service == v1::auth_server::SERVICE_NAME => String::new(),
            (Role::Client, user, _) => match (claims.token, user) {
                (Some(token), _) => cache.token_user(service, token)?,
                (None, Some(user)) => user,
                (None, None) => {
                    return Err(Status::permission_denied(format!(
                        "{service} refused the caller's certificate: a client certificate naming \
                         no user (ringkv://user/<name>) needs a token (log in with a password)"
                    )))
                }
            },
            (Role::Router, _, Some(forwarded)) => {
                ringkv_tls::check_user(forwarded).map_err(|err| {
                    Status::invalid_argument(format!("{service}: bad {}: {err}", v1_user_key()))
                })?;
                forwarded.to_string()
            }
            _ => ringkv_authz::ROOT_USER.to_string(),
        };
        return Ok(Caller { role, user });
    }
    let names: Vec<&str> = accepted.iter().map(|role| role.name()).collect();
    Err(Status::permission_denied(format!(
        "{service} accepts only {} certificates; the caller presented a {role} certificate",
        names.join(", ")
    )))
}

fn v1_user_key() -> &'static str {
    ringkv_proto::metadata::USER
}

/// A gRPC service that answers only callers whose certificate role it accepts; with no
/// cache (the server runs without TLS) it lets every call through.
#[derive(Debug, Clone)]
pub struct RoleGate<S> {
    inner: S,
    cache: Option<RoleCache>,
}

impl<S: NamedService> RoleGate<S> {
    /// Checks roles when `cache` is set (TLS on), else passes calls through.
    pub fn new(inner: S, cache: Option<RoleCache>) -> RoleGate<S> {
        RoleGate { inner, cache }
    }
}

impl<S: NamedService> NamedService for RoleGate<S> {
    const NAME: &'static str = S::NAME;
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

impl<S, B> Service<http::Request<B>> for RoleGate<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + NamedService,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let Some(cache) = &self.cache else {
            return Box::pin(self.inner.call(request));
        };
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .map(|value| value.to_str().unwrap_or("\u{fffd}").to_string())
        };
        let forwarded_user = header(ringkv_proto::metadata::USER);
        let authorization = header(ringkv_proto::metadata::AUTHORIZATION);
        // A malformed `authorization` is a token that does not check out, not no token.
        let token = authorization
            .as_deref()
            .map(|value| ringkv_proto::metadata::bearer_token(value).unwrap_or(value));
        let peer_certs = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        let leaf = peer_certs.as_ref().and_then(|certs| certs.first());
        let claims = Claims {
            forwarded_user: forwarded_user.as_deref(),
            token,
        };
        match check_caller(S::NAME, leaf.map(|cert| cert.as_ref()), claims, cache) {
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use ringkv_tls::{CertificateAuthority, LeafRequest, Validity};
    use tonic::Code;

    use super::*;

    fn leaf_der(ca: &CertificateAuthority, role: Role) -> Vec<u8> {
        let (hosts, user) = match role {
            Role::Client => (vec![], Some("alice".to_string())),
            _ => (vec!["127.0.0.1".to_string()], None),
        };
        let issued = ca
            .issue(&LeafRequest {
                role,
                hosts,
                user,
                validity: Validity::days_from_now(1).expect("validity"),
            })
            .expect("issue");
        ringkv_tls::parse_certificate_pem(&issued.cert_pem, "leaf").expect("pem")
    }

    /// Each service accepts exactly its roles; a client certificate cannot speak Raft,
    /// and the refusal names the service and the role; no certificate is unauthenticated.
    #[test]
    fn services_accept_only_their_roles() {
        let ca =
            CertificateAuthority::create("test", Validity::days_from_now(2).expect("validity")).expect("ca");
        let cache = RoleCache::default();
        let cases = [
            ("ringkv.v1.Raft", Role::Node, true),
            ("ringkv.v1.Raft", Role::Router, false),
            ("ringkv.v1.Raft", Role::Client, false),
            ("ringkv.v1.ShardKv", Role::Router, true),
            ("ringkv.v1.ShardKv", Role::Node, true),
            ("ringkv.v1.ShardKv", Role::Client, true),
            ("ringkv.v1.Tso", Role::Router, true),
            ("ringkv.v1.Tso", Role::Client, false),
            ("ringkv.v1.Admin", Role::Client, true),
            ("ringkv.v1.Admin", Role::Router, true),
            ("ringkv.v1.Admin", Role::Node, true),
            ("ringkv.v1.Unknown", Role::Node, false),
        ];
        for (index, (service, role, accepted)) in cases.into_iter().enumerate() {
            let der = leaf_der(&ca, role);
            // Twice: the second answer comes from the cache and must be the same.
            for _ in 0..2 {
                let answer = check_caller(service, Some(&der), Claims::default(), &cache);
                assert_eq!(answer.is_ok(), accepted, "case {index}: {service} {role}");
                if let Err(status) = answer {
                    assert_eq!(status.code(), Code::PermissionDenied, "case {index}");
                    assert!(
                        status.message().contains(service),
                        "case {index}: {}",
                        status.message()
                    );
                    assert!(status.message().contains(role.name()), "case {index}");
                }
            }
        }
        let none =
            check_caller("ringkv.v1.Admin", None, Claims::default(), &cache).expect_err("no certificate");
        assert_eq!(none.code(), Code::Unauthenticated);
        let no_role = check_caller("ringkv.v1.Admin", Some(&ca.info().der), Claims::default(), &cache)
            .expect_err("a CA has no role");
        assert_eq!(no_role.code(), Code::PermissionDenied);
        assert!(ca.info().check_valid_at(SystemTime::now()).is_ok());
    }

    /// Who a caller acts for: a client its certificate's user (whatever it claims in the
    /// metadata), a router the user it forwards (or root without one), a node root.
    #[test]
    fn callers_act_for_the_right_user() {
        let ca =
            CertificateAuthority::create("test", Validity::days_from_now(2).expect("validity")).expect("ca");
        let cache = RoleCache::default();
        let service = "ringkv.v1.ShardKv";
        let cases = [
            (Role::Client, None, "alice"),
            (Role::Client, Some("root"), "alice"),
            (Role::Router, Some("bob"), "bob"),
            (Role::Router, None, "root"),
            (Role::Node, Some("bob"), "root"),
        ];
        for (index, (role, forwarded, user)) in cases.into_iter().enumerate() {
            let der = leaf_der(&ca, role);
            let claims = Claims {
                forwarded_user: forwarded,
                token: None,
            };
            let caller = check_caller(service, Some(&der), claims, &cache).expect("accepted");
            assert_eq!(caller.user, user, "case {index}");
            assert_eq!(caller.role, role, "case {index}");
        }
        let router = leaf_der(&ca, Role::Router);
        let claims = Claims {
            forwarded_user: Some("../x"),
            token: None,
        };
        let bad = check_caller(service, Some(&router), claims, &cache).expect_err("bad user");
        assert_eq!(bad.code(), Code::InvalidArgument);
    }

    /// A client's token overrides its certificate's user; a token that does not check out
    /// is UNAUTHENTICATED (no fall back to the certificate); logging in needs no user.
    #[test]
    fn tokens_override_certificate_users() {
        let ca =
            CertificateAuthority::create("test", Validity::days_from_now(2).expect("validity")).expect("ca");
        let table = AuthTable::default()
            .apply(&ringkv_authz::AuthChange::AddUser {
                user: "bob".into(),
                roles: Vec::new(),
            })
            .and_then(|table| table.apply(&ringkv_authz::AuthChange::InitTokenKey { secret: vec![5; 32] }))
            .expect("table");
        let key = table.token_key.clone().expect("key");
        let (_keep, tokens) = watch::channel(Arc::new(table));
        let cache = RoleCache::with_tokens(tokens);
        let service = "ringkv.v1.ShardKv";
        let alice = leaf_der(&ca, Role::Client);
        let valid = ringkv_authz::token::sign(&key, "bob", ringkv_authz::token::now_unix_ms() + 60_000);
        fn with(token: Option<&str>) -> Claims<'_> {
            Claims {
                forwarded_user: None,
                token,
            }
        }
        let caller = check_caller(service, Some(&alice), with(Some(&valid)), &cache).expect("token");
        assert_eq!(caller.user, "bob");
        let forged = check_caller(
            service,
            Some(&alice),
            with(Some("rk1:1:99999999999999:root:00")),
            &cache,
        )
        .expect_err("forged");
        assert_eq!(forged.code(), Code::Unauthenticated);
        let expired = ringkv_authz::token::sign(&key, "bob", 1);
        let refused = check_caller(service, Some(&alice), with(Some(&expired)), &cache).expect_err("expired");
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert!(refused.message().contains("expired"), "{}", refused.message());
        assert!(check_caller("ringkv.v1.Auth", Some(&alice), with(None), &cache).is_ok());
        assert_eq!(
            check_caller(service, Some(&alice), with(None), &cache)
                .expect("cert")
                .user,
            "alice"
        );
    }
}
