//! Permissions at the router (issue 15): who the caller is, what its request touches, and
//! the permission table the router learns from the nodes.
//!
//! - Identity: the user of the token the request carries (`authorization: Bearer <token>`,
//!   from a password login, `Auth.Login`, which the router forwards to a node: see
//!   `auth_service.rs`), checked here with the token key the router fetches with the table;
//!   a token overrides the certificate's user, and one that does not check out is
//!   `UNAUTHENTICATED` (no fall back). Without a token: the user a caller's client
//!   certificate names (`ringkv://user/<name>`, read once per certificate); a client
//!   certificate naming none is refused; node and router certificates act as root; without
//!   TLS (`--insecure`) every caller is root and tokens are ignored. A TLS connection
//!   without a client certificate (allowed unless `require_client_cert`) is authenticated
//!   by its token alone: a call without one is `UNAUTHENTICATED` (`NO_CREDENTIALS`), but
//!   `Auth` (a login, a password change), which is outside the scope.
//! - [`Touches`]: what each `Kv` and `Txn` request touches: reads need read, writes and
//!   deletes write, a delete-range of everything (`all`, or no bounds) and transaction
//!   collection admin on the cluster. Scans, counts, batches and transactions list every key
//!   and range, and one refusal refuses the request as a whole before any node is called.
//! - [`AuthView`]: the table and its token key, fetched with `Admin.GetAuth` from a ring
//!   member every refresh interval (and kept when no member answers), so a change takes
//!   effect at the router within about a second (a deleted user's tokens, a rotated key).
//! - The user the request acts for is forwarded to the nodes in `x-ringkv-user`
//!   ([`USER`], a task-local the node calls of a request read): nodes check the same rules.
//!   Plain reads and writes that a lane merges across callers go as the router itself
//!   (root): the router checked each of them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use ringkv_authz::{Access, AuthTable, Grant, Permission, ROOT_USER};
use ringkv_proto::v1;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Status};
use tracing::debug;

use crate::error::{to_status, RouterError};
use crate::node_api::NodeApi;
use crate::topology::TopologyHandle;

tokio::task_local! {
    /// The user the current request acts for, read when a node call is built.
    pub static USER: String;
}

/// The user of the request running on this task, if it set one.
pub fn current_user() -> Option<String> {
    USER.try_with(Clone::clone).ok()
}

/// The user the current request acts for (root when none is set: no TLS, or the router's
/// own work).
pub fn acting_user() -> String {
    current_user().unwrap_or_else(|| ROOT_USER.to_string())
}

/// Most distinct client certificates whose users are remembered.
const MAX_REMEMBERED_CERTS: usize = 4096;

/// The users of the certificates seen, by DER (a certificate is parsed once).
#[derive(Default)]
pub struct UserCache {
    users: Mutex<HashMap<Vec<u8>, UserOrReason>>,
}

/// A certificate's user (`None`: a client certificate naming none), or why it is refused.
type UserOrReason = Result<Option<String>, String>;

impl UserCache {
    /// The user of the caller whose leaf certificate is `der` (None: no TLS, root): a client
    /// certificate's user, root for node and router certificates, or why it is refused.
    pub fn user_of(&self, der: Option<&[u8]>) -> Result<String, RouterError> {
        self.certificate_user(der)?.ok_or_else(|| {
            RouterError::Unauthenticated(
                "the client certificate names no user (ringkv://user/<name>); log in with a \
                 password and send its token"
                    .to_string(),
            )
        })
    }

    /// As [`UserCache::user_of`], but `None` for a client certificate naming no user.
    fn certificate_user(&self, der: Option<&[u8]>) -> Result<Option<String>, RouterError> {
        let Some(der) = der else {
            return Ok(Some(ROOT_USER.to_string()));
        };
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        let user = match users.get(der) {
            Some(known) => known.clone(),
            None => {
                let user = match ringkv_tls::peer_identity(der) {
                    Err(err) => Err(err.to_string()),
                    Ok((ringkv_tls::Role::Client, user)) => Ok(user.ok()),
                    Ok(_) => Ok(Some(ROOT_USER.to_string())),
                };
                if users.len() >= MAX_REMEMBERED_CERTS {
                    users.clear();
                }
                users.insert(der.to_vec(), user.clone());
                user
            }
        };
        user.map_err(RouterError::Unauthenticated)
    }
}

/// A gRPC service whose requests run with [`USER`] set to the caller's user: its token's,
/// else its certificate's (a bad token is refused with `UNAUTHENTICATED`, a client
/// certificate naming no user without a token with `PERMISSION_DENIED`, before the service
/// runs).
#[derive(Clone)]
pub struct UserScope<S> {
    inner: S,
    view: AuthView,
}

impl<S> UserScope<S> {
    pub fn new(inner: S, view: AuthView) -> UserScope<S> {
        UserScope { inner, view }
    }
}

impl<S: NamedService> NamedService for UserScope<S> {
    const NAME: &'static str = S::NAME;
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

impl<S, B> Service<http::Request<B>> for UserScope<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let tls = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
        let certs = tls.and_then(TlsConnectInfo::peer_certs);
        let leaf = certs.as_ref().and_then(|certs| certs.first());
        let peer = match (tls, leaf) {
            (None, _) => Peer::Plain,
            (Some(_), Some(leaf)) => Peer::Certificate(leaf.as_ref()),
            (Some(_), None) => Peer::NoCertificate,
        };
        let token = request
            .headers()
            .get(ringkv_proto::metadata::AUTHORIZATION)
            .map(|value| value.to_str().unwrap_or("\u{fffd}"));
        match self.view.user_of(peer, token) {
            Err(err) => Box::pin(std::future::ready(Ok(to_status(&err).into_http()))),
            Ok(user) => Box::pin(USER.scope(user, self.inner.call(request))),
        }
    }
}

/// How a caller reached the router.
#[derive(Clone, Copy, Debug)]
pub enum Peer<'a> {
    /// Without TLS (`--insecure`): root.
    Plain,
    /// Over TLS with this client certificate (DER), verified against the CA.
    Certificate(&'a [u8]),
    /// Over TLS without a client certificate: only a token says who it is.
    NoCertificate,
}

/// What a TLS caller without a client certificate and without a token is told.
const NO_CREDENTIALS: &str = "this connection presented no client certificate and the call carries \
     no token: log in with a password first (Auth.Login; kvctl --user NAME, with --password or \
     at the prompt) and send the token (authorization: Bearer <token>; kvctl --token), or \
     connect with a client certificate of the cluster's CA (--cert/--key)";

/// What one request touches: `(permission, access)` pairs, all of which must be allowed.
pub trait Touches {
    fn touches(&self) -> Vec<(Permission, Access<'_>)>;
}

/// `[start, end)` (empty end: no end), or every key starting with `prefix`.
fn range<'a>(start: &'a [u8], end: &'a [u8], prefix: &'a [u8]) -> Access<'a> {
    if !prefix.is_empty() {
        return Access::Prefix(prefix);
    }
    Access::range(start, end)
}

impl Touches for v1::GetRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        vec![(Permission::Read, Access::Key(&self.key))]
    }
}

impl Touches for v1::PutRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        vec![(Permission::Write, Access::Key(&self.key))]
    }
}

impl Touches for v1::DeleteRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        vec![(Permission::Write, Access::Key(&self.key))]
    }
}

impl Touches for v1::CompareAndSwapRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        vec![(Permission::Write, Access::Key(&self.key))]
    }
}

impl Touches for v1::ExpireRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        vec![(Permission::Write, Access::Key(&self.key))]
    }
}

impl Touches for v1::BatchGetRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        Access::keys(Permission::Read, &self.keys).collect()
    }
}

impl Touches for v1::BatchPutRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        Access::keys(Permission::Write, self.entries.iter().map(|entry| &entry.key)).collect()
    }
}

impl Touches for v1::BatchWriteRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        Access::keys(
            Permission::Write,
            self.mutations.iter().map(|mutation| &mutation.key),
        )
        .collect()
    }
}

impl Touches for v1::ScanRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        vec![(Permission::Read, range(&self.start, &self.end, &self.prefix))]
    }
}

impl Touches for v1::WatchRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        use v1::watch_request::Target;
        let access = match &self.target {
            Some(Target::Key(key)) => Access::Key(key),
            Some(Target::Prefix(prefix)) => Access::Prefix(prefix),
            Some(Target::Range(range)) => Access::range(&range.start, &range.end),
            None => return Vec::new(),
        };
        vec![(Permission::Read, access)]
    }
}

impl Touches for v1::CountRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        vec![(Permission::Read, range(&self.start, &self.end, &self.prefix))]
    }
}

impl Touches for v1::DeleteRangeRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        let everything = self.all || (self.start.is_empty() && self.end.is_empty() && self.prefix.is_empty());
        if everything {
            return vec![(Permission::Admin, Access::Cluster)];
        }
        vec![(Permission::Write, range(&self.start, &self.end, &self.prefix))]
    }
}

impl Touches for v1::TxnCommitRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        let mut touched: Vec<_> =
            Access::keys(Permission::Write, self.mutations.iter().map(|m| &m.key)).collect();
        touched.extend(Access::keys(Permission::Read, &self.read_keys));
        touched.extend(
            self.read_ranges
                .iter()
                .map(|read| (Permission::Read, range(&read.start, &read.end, b""))),
        );
        touched
    }
}

impl Touches for v1::TxnStatusRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        vec![(Permission::Read, Access::Key(&self.primary))]
    }
}

impl Touches for v1::TxnGcRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        vec![(Permission::Admin, Access::Cluster)]
    }
}

/// The permission table as the router last learnt it (not enabled until it learns one).
#[derive(Clone, Default)]
pub struct AuthView {
    table: Arc<RwLock<Arc<AuthTable>>>,
    users: Arc<UserCache>,
}

impl AuthView {
    /// The table now.
    pub fn table(&self) -> Arc<AuthTable> {
        Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Adopts `table` and its token key (a change's answer) at once, before the next refresh.
    pub fn learn(&self, table: Option<v1::AuthTable>, token_key: Option<v1::TokenKey>) {
        if let Some(Ok(table)) = table.map(|table| table_from_proto(table, token_key)) {
            self.set(table);
        }
    }

    /// Who a request acts for: the user of `authorization` (`Bearer <token>`) if given and
    /// TLS is on, else its certificate's (none: no TLS, root); a TLS caller without a
    /// certificate needs the token.
    pub fn user_of(&self, peer: Peer<'_>, authorization: Option<&str>) -> Result<String, RouterError> {
        let leaf = match (peer, authorization) {
            (Peer::Plain, _) => return self.users.user_of(None),
            (Peer::Certificate(leaf), None) => return self.users.user_of(Some(leaf)),
            (Peer::NoCertificate, None) => return Err(RouterError::NoCredentials(NO_CREDENTIALS.into())),
            (Peer::Certificate(leaf), Some(_)) => Some(leaf),
            (Peer::NoCertificate, Some(_)) => None,
        };
        if let Some(leaf) = leaf {
            // The certificate must still be one this router accepts (a role of the CA).
            self.users.certificate_user(Some(leaf))?;
        }
        let value = authorization.unwrap_or_default();
        let token = ringkv_proto::metadata::bearer_token(value).unwrap_or(value);
        ringkv_authz::token::verify(&self.table(), token, ringkv_authz::token::now_unix_ms())
            .map_err(|err| RouterError::TokenRefused(err.to_string()))
    }

    fn set(&self, table: AuthTable) {
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
    }

    /// Whether the request's user (set by [`UserScope`]; none: root) may do all `request`
    /// touches; the status to answer if not.
    pub fn authorize<T: Touches>(&self, request: &Request<T>) -> Result<(), Status> {
        self.check(&acting_user(), &request.get_ref().touches())
            .map_err(|err| to_status(&err))
    }

    /// [`AuthView::authorize`] of a request the router makes on its caller's behalf (the
    /// steps of a lease operation, `lease_store`), for the acting user.
    pub fn authorize_message<T: Touches>(&self, message: &T) -> Result<(), RouterError> {
        self.check(&acting_user(), &message.touches())
    }

    /// Whether the request's user holds admin on the cluster; the status to answer if not.
    pub fn authorize_admin(&self) -> Result<(), Status> {
        self.check(&acting_user(), &[(Permission::Admin, Access::Cluster)])
            .map_err(|err| to_status(&err))
    }

    fn check(&self, user: &str, touched: &[(Permission, Access<'_>)]) -> Result<(), RouterError> {
        if user == ROOT_USER {
            return Ok(());
        }
        let table = self.table();
        for (permission, access) in touched {
            table.check(user, *permission, *access)?;
        }
        Ok(())
    }

    /// Fetches the table from a ring member every `interval` until `cancel`.
    pub fn spawn_refresh<N: NodeApi>(
        &self,
        nodes: Arc<N>,
        topology: TopologyHandle,
        interval: Duration,
        rpc_timeout: Duration,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        let view = self.clone();
        tokio::spawn(async move {
            loop {
                view.refresh(nodes.as_ref(), &topology, rpc_timeout).await;
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        })
    }

    /// Fetches the table from the first ring member that answers (kept if none does).
    pub(crate) async fn refresh<N: NodeApi>(
        &self,
        nodes: &N,
        topology: &TopologyHandle,
        rpc_timeout: Duration,
    ) {
        let Some(ring) = topology.ring() else {
            return;
        };
        for member in &ring.info.members {
            match nodes.get_auth(&member.addr, rpc_timeout).await {
                Ok(response) => match response
                    .table
                    .map(|table| table_from_proto(table, response.token_key))
                {
                    Some(Ok(table)) => return self.set(table),
                    Some(Err(err)) => debug!(addr = %member.addr, %err, "bad permission table"),
                    None => debug!(addr = %member.addr, "no permission table in the answer"),
                },
                Err(status) => {
                    debug!(addr = %member.addr, code = ?status.code(), "permission table not fetched")
                }
            }
        }
    }
}

/// The table from its protobuf message, with the token key sent beside it (a router
/// verifies tokens with it). Password hashes are not sent: a router checks no password.
pub fn table_from_proto(table: v1::AuthTable, token_key: Option<v1::TokenKey>) -> Result<AuthTable, String> {
    let mut roles = std::collections::BTreeMap::new();
    for role in table.roles {
        let grants = role
            .grants
            .into_iter()
            .map(|grant| {
                let permission = match v1::Permission::try_from(grant.permission) {
                    Ok(v1::Permission::Read) => Permission::Read,
                    Ok(v1::Permission::Write) => Permission::Write,
                    Ok(v1::Permission::Admin) => Permission::Admin,
                    _ => return Err(format!("unknown permission {}", grant.permission)),
                };
                Ok(Grant {
                    prefix: grant.prefix,
                    permission,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        roles.insert(role.name, grants);
    }
    let users = table
        .users
        .into_iter()
        .map(|user| (user.name, user.roles.into_iter().collect()))
        .collect();
    Ok(AuthTable {
        enabled: table.enabled,
        roles,
        users,
        token_key: token_key.map(|key| ringkv_authz::TokenKey {
            id: key.id,
            secret: key.secret,
        }),
        token_ttl_ms: table.token_ttl_ms,
        ..AuthTable::default()
    })
}
