//! `Tso` on a node: timestamps from the oracle, answered by the system group's leader.

use std::sync::Arc;

use ringkv_proto::v1::{self, tso_server::Tso};
use tonic::{Request, Response, Status};

use super::status;
use crate::tso::Oracle;

pub struct TsoService {
    oracle: Arc<Oracle>,
}

impl TsoService {
    pub fn new(oracle: Arc<Oracle>) -> TsoService {
        TsoService { oracle }
    }
}

#[tonic::async_trait]
impl Tso for TsoService {
    async fn get_timestamps(
        &self,
        request: Request<v1::GetTimestampsRequest>,
    ) -> Result<Response<v1::GetTimestampsResponse>, Status> {
        let count = request.into_inner().count.max(1);
        let range = self
            .oracle
            .timestamps_here(count)
            .await
            .map_err(|err| status(err, false))?;
        Ok(Response::new(v1::GetTimestampsResponse {
            first: range.start,
            count,
        }))
    }
}
