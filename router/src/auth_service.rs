//! `Auth` at the router (issue 15): a password login is forwarded to a ring member, which
//! checks the password against the hash in the permission table it applied and signs the
//! token; the router checks no password itself (it holds no hashes) but checks every token
//! it is sent on its own (`auth.rs`). A refused login (`UNAUTHENTICATED`) is not retried at
//! another member: each try costs a slow hash. A token signed with a key this router has not
//! learnt yet (the cluster's first login commits the first key) is answered only once the
//! router has fetched the table with that key (within the request's deadline), so the token
//! works at this router at once.

use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1::auth_server::Auth;
use ringkv_proto::v1::{LoginRequest, LoginResponse};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::admin_service::AdminService;
use crate::context::RouterContext;
use crate::error::to_status;
use crate::node_api::NodeApi;

pub struct LoginService<N> {
    ctx: Arc<RouterContext<N>>,
    members: AdminService<N>,
}

impl<N: NodeApi> LoginService<N> {
    pub fn new(ctx: Arc<RouterContext<N>>) -> Self {
        LoginService {
            members: AdminService::new(Arc::clone(&ctx)),
            ctx,
        }
    }
}

#[tonic::async_trait]
impl<N: NodeApi> Auth for LoginService<N> {
    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        let admission = self.ctx.admit(request.metadata()).map_err(|e| to_status(&e))?;
        let login = request.into_inner();
        let response = self
            .members
            .ask_members(admission.deadline, |addr, timeout| {
                let login = login.clone();
                async move { self.ctx.nodes.login(&addr, login, timeout).await }
            })
            .await?;
        self.learn_key_of(&response.token, admission.deadline).await;
        Ok(Response::new(response))
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
