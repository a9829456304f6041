//! `Auth` at the router (issue 15): a password login is forwarded to a ring member, which
//! checks the password against the hash in the permission table it applied and signs the
//! token; the router checks no password itself (it holds no hashes) but checks every token
//! it is sent on its own (`auth.rs`). A refused login (`UNAUTHENTICATED`) is not retried at
//! another member: each try costs a slow hash. A token signed with a key this router has not
//! learnt yet (the cluster's first login commits the first key) is answered only once the
//! router has fetched the table with that key (within the request's deadline), so the token
//! works at this router at once.
//!
//! A user changes its own password (`ChangePassword`) the same way: forwarded to a member,
//! which checks the old password like a login's and commits the new one's hash.
//!
//! Failed logins and password changes are counted here too ([`LoginThrottle`], per user and
//! per client address): past a few, the next attempts are refused without being forwarded,
//! `RESOURCE_EXHAUSTED` with `RetryInfo` (`LOGIN_THROTTLED`). The client's address goes with
//! the forwarded call (`x-ringkv-client-addr`), so the node counts it per client as well
//! (its own count covers callers of other routers, and callers bypassing routers).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ringkv_authz::throttle::LoginThrottle;
use ringkv_proto::v1::auth_server::Auth;
use ringkv_proto::v1::{ChangePasswordRequest, ChangePasswordResponse, LoginRequest, LoginResponse};
use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};

use crate::admin_service::AdminService;
use crate::context::RouterContext;
use crate::error::{to_status, RouterError};
use crate::node_api::NodeApi;

pub struct LoginService<N> {
    ctx: Arc<RouterContext<N>>,
    members: AdminService<N>,
    throttle: LoginThrottle,
}

impl<N: NodeApi> LoginService<N> {
    pub fn new(ctx: Arc<RouterContext<N>>) -> Self {
        LoginService {
            members: AdminService::new(Arc::clone(&ctx)),
            ctx,
            throttle: LoginThrottle::default(),
        }
    }

    /// Refuses `user`'s attempt from `client` while either must wait.
    fn check_throttle(&self, user: &str, client: Option<IpAddr>) -> Result<(), Status> {
        self.throttle
            .check(user, client, std::time::Instant::now())
            .map_err(|throttled| to_status(&RouterError::LoginThrottled(throttled)))
    }

    /// Counts a member's answer to `user`'s attempt from `client`.
    fn count<T>(&self, user: &str, client: Option<IpAddr>, answer: &Result<T, Status>) {
        match answer {
            Ok(_) => self.throttle.succeeded(user),
            Err(status) if status.code() == Code::Unauthenticated => {
                self.throttle.failed(user, client, std::time::Instant::now())
            }
            Err(_) => {}
        }
    }
}

/// Whether a member's answer ends the attempt (another member would refuse it too): a
/// throttled login.
fn is_throttled(status: &Status) -> bool {
    status.code() == Code::ResourceExhausted
}

#[tonic::async_trait]
impl<N: NodeApi> Auth for LoginService<N> {
    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        let client = request.remote_addr().map(|addr| addr.ip());
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        let login = request.into_inner();
        self.check_throttle(&login.user, client)?;
        let answer = self
            .members
            .ask_members_until(admission.deadline, is_throttled, |addr, timeout| {
                let login = login.clone();
                async move { self.ctx.nodes.login(&addr, login, client, timeout).await }
            })
            .await;
        self.count(&login.user, client, &answer);
        let response = answer?;
        self.learn_key_of(&response.token, admission.deadline).await;
        Ok(Response::new(response))
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let client = request.remote_addr().map(|addr| addr.ip());
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        let change = request.into_inner();
        self.check_throttle(&change.user, client)?;
        let answer = self
            .members
            .ask_members_until(admission.deadline, is_throttled, |addr, timeout| {
                let change = change.clone();
                async move {
                    self.ctx
                        .nodes
                        .change_password(&addr, change, client, timeout)
                        .await
                }
            })
            .await;
        self.count(&change.user, client, &answer);
        Ok(Response::new(answer?))
    }
}

/// Pause between two fetches of the table while waiting for a new token key.
const KEY_POLL_INTERVAL: Duration = Duration::from_millis(50);

impl<N: NodeApi> LoginService<N> {
    /// Fetches the table until it holds the key `token` was signed with, or `deadline`.
    async fn learn_key_of(&self, token: &str, deadline: Instant) {
        let key_id: Option<u32> = token.split(':').nth(1).and_then(|id| id.parse().ok());
        let known = || self.ctx.auth.table().token_key.as_ref().map(|key| key.id) >= key_id;
        while !known() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            self.ctx
                .auth
                .refresh(self.ctx.nodes.as_ref(), &self.ctx.topology, left)
                .await;
            if !known() {
                tokio::time::sleep(KEY_POLL_INTERVAL.min(left)).await;
            }
        }
    }
}
