//! Permissions at the node (issue 15): every `ShardKv` request is checked against the user
//! it acts for, with the same rules the router applies (`ringkv-authz`), so a client that
//! bypasses the router gets nothing more.
//!
//! Who a request acts for is the [`Caller`] that [`RoleGate`](super::roles::RoleGate) put in
//! its extensions (a client certificate's user; the user a router forwards in
//! `x-ringkv-user`; root for nodes). Without TLS there is no caller and no check: nothing
//! is authenticated, so everything acts as root.
//!
//! [`AuthorizedShardKv`] wraps the `ShardKv` service: what each request touches is declared
//! once per message type ([`Touches`]), checked as a whole before the service sees it: one
//! key or range refused refuses the request (`PERMISSION_DENIED` naming the user, the
//! permission and the key or range). Reads need read; writes, deletes, delete-ranges and
//! transaction prewrites need write; the steps that only carry out a transaction's decision
//! (commit, rollback, check-status of a primary — a reader resolving a lock it met needs
//! them) and validations need read; shard-wide maintenance (`TxnGc`, `TxnScanLocks`)
//! needs admin on the cluster.
//!
//! The table is the system group's, as this node applied it (every node is a member of
//! the system group), kept in memory by the state machine (`GroupState::watch_auth`: set by
//! each applied `Command::Auth` and each snapshot install), so a check reads no storage.

use std::sync::Arc;

use ringkv_authz::{Access, AuthTable, Permission};
use ringkv_proto::v1::{self, shard_kv_server::ShardKv};
use ringkv_tls::Role;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::credentials::PasswordHasher;
use super::roles::Caller;
use super::shard::{FrameAuth, ShardKvService};
use super::status;
use crate::error::NodeError;
use crate::node::Node;

/// What one request touches: `(permission, access)` pairs, all of which must be allowed.
pub trait Touches {
    fn touches(&self) -> Vec<(Permission, Access<'_>)>;
}

impl Touches for v1::ShardReadRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        Access::keys(Permission::Read, &self.keys).collect()
    }
}

impl Touches for v1::ShardWriteRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        Access::keys(Permission::Write, self.ops.iter().map(|op| &op.key)).collect()
    }
}

impl Touches for v1::ShardWriteBatchRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        self.writes.iter().flat_map(Touches::touches).collect()
    }
}

impl Touches for v1::ShardScanRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        vec![(Permission::Read, Access::range(&self.start, &self.end))]
    }
}

impl Touches for v1::ShardCountRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        vec![(Permission::Read, Access::range(&self.start, &self.end))]
    }
}

impl Touches for v1::ShardDeleteRangeRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        vec![(Permission::Write, Access::range(&self.start, &self.end))]
    }
}

impl Touches for v1::ShardTxnPrewriteRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        let mut touched: Vec<_> =
            Access::keys(Permission::Write, self.mutations.iter().map(|m| &m.key)).collect();
        touched.push((Permission::Write, Access::Key(&self.primary)));
        touched
    }
}

impl Touches for v1::ShardTxnCommitRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        Access::keys(Permission::Read, &self.keys).collect()
    }
}

impl Touches for v1::ShardTxnRollbackRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        Access::keys(Permission::Read, &self.keys).collect()
    }
}

impl Touches for v1::ShardTxnCheckStatusRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        vec![(Permission::Read, Access::Key(&self.primary))]
    }
}

impl Touches for v1::ShardTxnValidateRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        let mut touched: Vec<_> = Access::keys(Permission::Read, &self.keys).collect();
        touched.extend(
            self.ranges
                .iter()
                .map(|read| (Permission::Read, Access::range(&read.start, &read.end))),
        );
        touched
    }
}

impl Touches for v1::ShardTxnOnePcRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        let mut touched: Vec<_> =
            Access::keys(Permission::Write, self.mutations.iter().map(|m| &m.key)).collect();
        touched.extend(Access::keys(Permission::Read, &self.read_keys));
        touched.extend(
            self.read_ranges
                .iter()
                .map(|read| (Permission::Read, Access::range(&read.start, &read.end))),
        );
        touched
    }
}

impl Touches for v1::ShardTxnGcRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        vec![(Permission::Admin, Access::Cluster)]
    }
}

impl Touches for v1::ShardTxnScanLocksRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        vec![(Permission::Admin, Access::Cluster)]
    }
}

impl Touches for v1::ShardWatchRequest {
    fn touches(&self) -> Vec<(Permission, Access<'_>)> {
        vec![(Permission::Read, Access::range(&self.start, &self.end))]
    }
}

/// The permission table as this node applied it, and the check of a caller against it.
#[derive(Clone)]
pub struct Authorizer {
    table: watch::Receiver<Arc<AuthTable>>,
}

impl Authorizer {
    pub fn new(node: &Node) -> Authorizer {
        Authorizer::watching(node.system_group().state.watch_auth())
    }

    /// Checks against the table `table` holds, as it changes.
    pub fn watching(table: watch::Receiver<Arc<AuthTable>>) -> Authorizer {
        Authorizer { table }
    }

    /// The table as this node's system group replica applied it.
    pub fn table(&self) -> Arc<AuthTable> {
        Arc::clone(&self.table.borrow())
    }

    /// Whether the caller of `request` may do everything `touched` lists; no caller (no
    /// TLS): yes.
    pub fn check<T>(
        &self,
        request: &Request<T>,
        touched: &[(Permission, Access<'_>)],
    ) -> Result<(), NodeError> {
        match request.extensions().get::<Caller>() {
            Some(caller) => self.check_user(&caller.user, touched),
            None => Ok(()),
        }
    }

    /// Whether `user` may do everything `touched` lists.
    pub fn check_user(&self, user: &str, touched: &[(Permission, Access<'_>)]) -> Result<(), NodeError> {
        if user == ringkv_authz::ROOT_USER {
            return Ok(());
        }
        let table = self.table();
        for (permission, access) in touched {
            table.check(user, *permission, *access)?;
        }
        Ok(())
    }

    /// The user `request` acts for (root without TLS).
    pub fn user_of<T>(request: &Request<T>) -> String {
        request
            .extensions()
            .get::<Caller>()
            .map(|caller| caller.user.clone())
            .unwrap_or_else(|| ringkv_authz::ROOT_USER.to_string())
    }
}

/// The `ShardKv` service behind the permission check.
pub struct AuthorizedShardKv {
    inner: ShardKvService,
    auth: Authorizer,
}

impl AuthorizedShardKv {
    pub fn new(inner: ShardKvService, auth: Authorizer) -> AuthorizedShardKv {
        AuthorizedShardKv { inner, auth }
    }

    fn check<T: Touches>(&self, request: &Request<T>, is_write: bool) -> Result<(), Status> {
        self.auth
            .check(request, &request.get_ref().touches())
            .map_err(|err| status(err, is_write))
    }
}

/// Each method: check the request as a whole, then hand it to the service.
macro_rules! authorized {
    ($($method:ident($request:ty) -> $response:ty, $is_write:expr;)*) => {
        #[tonic::async_trait]
        impl ShardKv for AuthorizedShardKv {
            $(
                async fn $method(&self, request: Request<$request>) -> Result<Response<$response>, Status> {
                    self.check(&request, $is_write)?;
                    ShardKv::$method(&self.inner, request).await
                }
            )*

            type WatchStream = <ShardKvService as ShardKv>::WatchStream;
            type PipelineStream = <ShardKvService as ShardKv>::PipelineStream;

            /// Each frame is checked as its unary call would be, for the user it names
            /// (believed from routers only: `FrameAuth`).
            async fn pipeline(
                &self,
                request: Request<tonic::Streaming<v1::ShardFrames>>,
            ) -> Result<Response<Self::PipelineStream>, Status> {
                let auth = request
                    .extensions()
                    .get::<Caller>()
                    .map(|caller| FrameAuth::new(self.auth.clone(), caller.clone()));
                Ok(Response::new(self.inner.serve_pipeline(auth, request.into_inner())))
            }

            async fn watch(
                &self,
                request: Request<v1::ShardWatchRequest>,
            ) -> Result<Response<Self::WatchStream>, Status> {
                self.check(&request, false)?;
                ShardKv::watch(&self.inner, request).await
            }
        }
    };
}

authorized! {
    read(v1::ShardReadRequest) -> v1::ShardReadResponse, false;
    write(v1::ShardWriteRequest) -> v1::ShardWriteResponse, true;
    write_batch(v1::ShardWriteBatchRequest) -> v1::ShardWriteBatchResponse, true;
    scan(v1::ShardScanRequest) -> v1::ShardScanResponse, false;
    count(v1::ShardCountRequest) -> v1::ShardCountResponse, false;
    delete_range(v1::ShardDeleteRangeRequest) -> v1::ShardDeleteRangeResponse, true;
    txn_prewrite(v1::ShardTxnPrewriteRequest) -> v1::ShardTxnPrewriteResponse, true;
    txn_commit(v1::ShardTxnCommitRequest) -> v1::ShardTxnStatusResponse, true;
    txn_rollback(v1::ShardTxnRollbackRequest) -> v1::ShardTxnStatusResponse, true;
    txn_check_status(v1::ShardTxnCheckStatusRequest) -> v1::ShardTxnStatusResponse, true;
    txn_validate(v1::ShardTxnValidateRequest) -> v1::ShardTxnValidateResponse, false;
    txn_gc(v1::ShardTxnGcRequest) -> v1::ShardTxnGcResponse, true;
    txn_scan_locks(v1::ShardTxnScanLocksRequest) -> v1::ShardTxnScanLocksResponse, false;
    txn_one_pc(v1::ShardTxnOnePcRequest) -> v1::ShardTxnOnePcResponse, true;
}

/// The table as the protobuf message `Admin.GetAuth` and `Admin.ChangeAuth` answer with.
pub fn table_to_proto(table: &AuthTable) -> v1::AuthTable {
    v1::AuthTable {
        enabled: table.enabled,
        roles: table
            .roles
            .iter()
            .map(|(name, grants)| v1::AuthRole {
                name: name.clone(),
                grants: grants.iter().map(grant_to_proto).collect(),
            })
            .collect(),
        users: table
            .users
            .iter()
            .map(|(name, roles)| v1::AuthUser {
                name: name.clone(),
                roles: roles.iter().cloned().collect(),
                has_password: table.passwords.contains_key(name),
            })
            .collect(),
        token_ttl_ms: table.token_ttl_ms(),
        root_has_password: table.passwords.contains_key(ringkv_authz::ROOT_USER),
    }
}

/// The token key for a caller that verifies tokens itself: a router or a node (none for
/// clients, and none without TLS: no tokens then).
pub fn token_key_for<T>(request: &Request<T>, table: &AuthTable) -> Option<v1::TokenKey> {
    let caller = request.extensions().get::<Caller>()?;
    if !matches!(caller.role, Role::Router | Role::Node) {
        return None;
    }
    table.token_key.as_ref().map(|key| v1::TokenKey {
        id: key.id,
        secret: key.secret.clone(),
    })
}

fn grant_to_proto(grant: &ringkv_authz::Grant) -> v1::Grant {
    let permission = match grant.permission {
        Permission::Read => v1::Permission::Read,
        Permission::Write => v1::Permission::Write,
        Permission::Admin => v1::Permission::Admin,
    };
    v1::Grant {
        prefix: grant.prefix.clone(),
        permission: permission as i32,
    }
}

fn grant_from_proto(grant: Option<v1::Grant>) -> Result<ringkv_authz::Grant, NodeError> {
    let grant =
        grant.ok_or_else(|| NodeError::InvalidArgument("a grant needs its prefix and permission".into()))?;
    let permission = match v1::Permission::try_from(grant.permission) {
        Ok(v1::Permission::Read) => Permission::Read,
        Ok(v1::Permission::Write) => Permission::Write,
        Ok(v1::Permission::Admin) => Permission::Admin,
        _ => {
            return Err(NodeError::InvalidArgument(format!(
                "unknown permission {} (read, write or admin)",
                grant.permission
            )))
        }
    };
    Ok(ringkv_authz::Grant {
        prefix: grant.prefix,
        permission,
    })
}

/// The change a `ChangeAuthRequest` asks for: a password is hashed here (by `hasher`, never
/// stored or proposed in plaintext), a new token key's secret drawn here.
pub async fn change_from_proto(
    request: v1::ChangeAuthRequest,
    hasher: &PasswordHasher,
) -> Result<ringkv_authz::AuthChange, NodeError> {
    use ringkv_authz::AuthChange;
    use v1::change_auth_request::Change;
    let Some(change) = request.change else {
        return Err(NodeError::InvalidArgument("ChangeAuth names no change".into()));
    };
    Ok(match change {
        Change::AddRole(role) => AuthChange::AddRole { role },
        Change::DeleteRole(role) => AuthChange::DeleteRole { role },
        Change::Grant(grant) => AuthChange::Grant {
            role: grant.role,
            grant: grant_from_proto(grant.grant)?,
        },
        Change::Revoke(revoke) => AuthChange::Revoke {
            role: revoke.role,
            prefix: revoke.grant.map(|grant| grant.prefix).unwrap_or_default(),
        },
        Change::AddUser(user) => AuthChange::AddUser {
            user: user.name,
            roles: user.roles,
        },
        Change::DeleteUser(user) => AuthChange::DeleteUser { user },
        Change::GrantRole(binding) => AuthChange::GrantRole {
            user: binding.user,
            role: binding.role,
        },
        Change::RevokeRole(binding) => AuthChange::RevokeRole {
            user: binding.user,
            role: binding.role,
        },
        Change::Enable(_) => AuthChange::Enable,
        Change::SetPassword(v1::UserPassword { user, password }) => AuthChange::SetPassword {
            user,
            hash: hasher.hash(password).await?,
        },
        Change::RotateTokenKey(_) => AuthChange::RotateTokenKey {
            secret: ringkv_authz::token::new_secret().map_err(|err| NodeError::Fatal(err.to_string()))?,
        },
        Change::SetTokenTtlMs(ttl_ms) => AuthChange::SetTokenTtl { ttl_ms },
    })
}

/// Commits `change` in the system group: the table after it, or why it was refused.
pub async fn change_auth(node: &Node, change: ringkv_authz::AuthChange) -> Result<AuthTable, NodeError> {
    match node
        .propose_system(crate::raft::types::Command::Auth(change))
        .await?
    {
        crate::raft::types::CommandResult::Auth(outcome) => Ok(outcome?),
        other => Err(NodeError::OutcomeUnknown(format!("unexpected result {other:?}"))),
    }
}
