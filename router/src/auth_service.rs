//! `Auth` at the router (issue 15): a password login is forwarded to a ring member, which
//! checks the password against the hash in the permission table it applied and signs the
//! token; the router checks no password itself (it holds no hashes) but checks every token
//! it is sent on its own (`auth.rs`). A refused login (`UNAUTHENTICATED`) is not retried at
//! another member: each try costs a slow hash.

use std::sync::Arc;

use ringkv_proto::v1::auth_server::Auth;
use ringkv_proto::v1::{LoginRequest, LoginResponse};
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
        Ok(Response::new(response))
    }
}
