//! `Auth` on a node (issue 15): password logins for short-lived tokens, and the hashing of
//! new passwords.
//!
//! A login checks the password against the hash in the permission table this node applied
//! (a missing user or password is checked against a decoy hash, and every refusal is the same
//! `UNAUTHENTICATED` message: no hint whether the user exists), then signs a token with the
//! table's token key (`ringkv_authz::token`), valid for the table's token lifetime. The first
//! login of a cluster commits a token key first (`AuthChange::InitTokenKey`, kept if another
//! node's got there first). The token is checked by every node and router on its own
//! (`roles.rs`, the router's `auth.rs`).
//!
//! Hashing is slow on purpose: it runs on blocking threads, a few at once
//! ([`PasswordHasher`]).

use std::sync::Arc;

use ringkv_authz::password;
use ringkv_authz::{token, AuthChange, AuthTable};
use ringkv_proto::v1::{self, auth_server::Auth};
use tonic::{Request, Response, Status};
use tracing::info;

use super::authz::change_auth;
use super::credentials::PasswordHasher;
use crate::error::NodeError;
use crate::node::Node;

/// What every refused login answers, whatever the reason.
const LOGIN_REFUSED: &str = "wrong user name or password";

/// The node's `Auth` service.
pub struct LoginService {
    node: Node,
    hasher: PasswordHasher,
}

impl LoginService {
    pub fn new(node: Node, hasher: PasswordHasher) -> LoginService {
        LoginService { node, hasher }
    }

    /// The table as this node applied it, with a token key (committing the first if none).
    async fn table_with_key(&self) -> Result<Arc<AuthTable>, NodeError> {
        let table = self.node.system_group().state.watch_auth().borrow().clone();
        if table.token_key.is_some() {
            return Ok(table);
        }
        let secret = token::new_secret().map_err(|err| NodeError::Fatal(err.to_string()))?;
        info!("committing the cluster's first token key");
        let table = change_auth(&self.node, AuthChange::InitTokenKey { secret }).await?;
        Ok(Arc::new(table))
    }
}

#[tonic::async_trait]
impl Auth for LoginService {
    async fn login(&self, request: Request<v1::LoginRequest>) -> Result<Response<v1::LoginResponse>, Status> {
        let v1::LoginRequest { user, password } = request.into_inner();
        if password.len() > password::MAX_PASSWORD_BYTES || ringkv_authz::check_name(&user).is_err() {
            return Err(Status::unauthenticated(LOGIN_REFUSED));
        }
        let table = self.node.system_group().state.watch_auth().borrow().clone();
        let stored = table.passwords.get(&user).map(|hash| hash.0.clone());
        let matched = self
            .hasher
            .verify(password, stored)
            .await
            .map_err(|err| super::status(err, false))?;
        if !matched {
            return Err(Status::unauthenticated(LOGIN_REFUSED));
        }
        let table = self
            .table_with_key()
            .await
            .map_err(|err| super::status(err, false))?;
        let key = table
            .token_key
            .as_ref()
            .ok_or_else(|| Status::unavailable("no token key committed yet; try again"))?;
        let expires_at_unix_ms = token::now_unix_ms().saturating_add(table.token_ttl_ms());
        Ok(Response::new(v1::LoginResponse {
            token: token::sign(key, &user, expires_at_unix_ms),
            expires_at_unix_ms,
        }))
    }
}
