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
//! A user changes its own password with its current one (`ChangePassword`: the old password
//! is checked like a login's, then the new one hashed and committed as an admin's
//! `SetPassword` would be; no permission needed).
//!
//! Failed logins and password changes are counted per user and per client address
//! ([`LoginThrottle`]): past a few, further attempts are refused before any hash with
//! `RESOURCE_EXHAUSTED` and a `RetryInfo` saying how long to wait. The client address is the
//! caller's, or, for a router's call, the one the router forwards in `x-ringkv-client-addr`
//! (believed from router certificates only), so one guesser behind a router does not block
//! the router's other clients.
//!
//! Hashing is slow on purpose: it runs on blocking threads, a few at once
//! ([`PasswordHasher`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use ringkv_authz::password;
use ringkv_authz::throttle::{LoginThrottle, Throttled};
use ringkv_authz::{token, AuthChange, AuthTable};
use ringkv_proto::v1::{self, auth_server::Auth};
use ringkv_tls::Role;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::{info, warn};

use super::authz::change_auth;
use super::credentials::PasswordHasher;
use super::roles::Caller;
use crate::error::NodeError;
use crate::node::Node;

/// What every refused login answers, whatever the reason.
const LOGIN_REFUSED: &str = "wrong user name or password";

/// The node's `Auth` service.
pub struct LoginService {
    node: Node,
    hasher: PasswordHasher,
    throttle: LoginThrottle,
}

impl LoginService {
    pub fn new(node: Node, hasher: PasswordHasher) -> LoginService {
        LoginService {
            node,
            hasher,
            throttle: LoginThrottle::default(),
        }
    }

    /// Whether `password` is `user`'s, counted by the throttle (refused before any hash
    /// while the user or `address` must wait).
    async fn check_password(
        &self,
        user: &str,
        password: String,
        address: Option<IpAddr>,
    ) -> Result<(), Status> {
        self.throttle
            .check(user, address, Instant::now())
            .map_err(|throttled| throttled_status(&throttled))?;
        if password.len() > password::MAX_PASSWORD_BYTES || ringkv_authz::check_name(user).is_err() {
            self.throttle.failed(user, address, Instant::now());
            return Err(Status::unauthenticated(LOGIN_REFUSED));
        }
        let table = self.node.system_group().state.watch_auth().borrow().clone();
        let stored = table.passwords.get(user).map(|hash| hash.0.clone());
        let matched = self
            .hasher
            .verify(password, stored)
            .await
            .map_err(|err| super::status(err, false))?;
        if !matched {
            self.throttle.failed(user, address, Instant::now());
            return Err(Status::unauthenticated(LOGIN_REFUSED));
        }
        self.throttle.succeeded(user);
        Ok(())
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
        let address = client_address(&request);
        let v1::LoginRequest { user, password } = request.into_inner();
        self.check_password(&user, password, address).await?;
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

    async fn change_password(
        &self,
        request: Request<v1::ChangePasswordRequest>,
    ) -> Result<Response<v1::ChangePasswordResponse>, Status> {
        let address = client_address(&request);
        let v1::ChangePasswordRequest {
            user,
            old_password,
            new_password,
        } = request.into_inner();
        self.check_password(&user, old_password, address).await?;
        let hash = self
            .hasher
            .hash(new_password)
            .await
            .map_err(|err| super::status(err, false))?;
        change_auth(
            &self.node,
            AuthChange::SetPassword {
                user: user.clone(),
                hash,
            },
        )
        .await
        .map_err(|err| super::status(err, true))?;
        info!(%user, "a user changed its own password");
        Ok(Response::new(v1::ChangePasswordResponse {}))
    }
}

/// The address failed logins are counted against: the one a router forwards for its
/// client (believed from router certificates only), else the caller's own.
fn client_address<T>(request: &Request<T>) -> Option<IpAddr> {
    let from_router = request
        .extensions()
        .get::<Caller>()
        .is_some_and(|caller| caller.role == Role::Router);
    if from_router {
        let forwarded = request.metadata().get(ringkv_proto::metadata::CLIENT_ADDR);
        match forwarded.map(|value| value.to_str().ok().and_then(|text| text.parse().ok())) {
            Some(Some(address)) => return Some(address),
            Some(None) => warn!("a router forwarded a malformed client address; counting its own"),
            None => {}
        }
    }
    request.remote_addr().map(|address| address.ip())
}

/// `RESOURCE_EXHAUSTED` with how long to wait (`RetryInfo`) and the reason `LOGIN_THROTTLED`
/// (`ErrorInfo`, the router's rich error model).
pub fn throttled_status(throttled: &Throttled) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info("LOGIN_THROTTLED", "ringkv", HashMap::new());
    details.set_retry_info(Some(throttled.retry_after));
    Status::with_error_details(Code::ResourceExhausted, throttled.to_string(), details)
}
