//! The router as a [`LeaseStore`]: the key-value steps of the lease algorithm
//! (`ringkv-lease`, the same one the client library runs) on the router's own request path
//! — each a one-key read or write through the forwarder to the shard's leader, with the
//! forwarder's retries under one request id, and the timestamp from the router's oracle
//! client. Used by the `Lease` service (`lease_service`) and by `Kv.Put` with a lease.
//!
//! Each step is checked against the caller's permissions as the request it stands for
//! (a get reads its key, the others write theirs), as the client library's steps are
//! when a client runs the algorithm itself; nothing is sent to a node before its step passed.

use std::sync::Arc;
use std::time::Duration;

use ringkv_lease::{CasResult, LeaseError, LeaseStore, StoredValue, LEASE_KEY_PREFIX};
use ringkv_proto::v1::{
    Consistency, GetRequest, KeyValueResult, PutRequest, ScanRequest, WriteKind, WriteOp, WriteOpResult,
};
use tokio::time::Instant;

use crate::batch::match_read_results;
use crate::context::RouterContext;
use crate::error::{RequestId, RouterError};
use crate::node_api::NodeApi;
use crate::one_key;
use crate::range_ops;
use crate::tso::TsoClient;

/// Most lease ids `Lease.LeaseLeases` answers (8 bytes each); more are cut and the answer
/// says so.
pub const MAX_LISTED_LEASES: usize = 100_000;
/// Record keys read per page when listing leases.
const LIST_PAGE_ENTRIES: u32 = 10_000;

impl From<LeaseError> for RouterError {
    fn from(err: LeaseError) -> RouterError {
        match err {
            LeaseError::InvalidArgument(message) => RouterError::InvalidArgument(message),
            LeaseError::NotFound(message) => RouterError::NotFound(message),
            LeaseError::Unavailable(message) => RouterError::Unavailable(message),
            LeaseError::CorruptRecord(message) => RouterError::Internal(message),
        }
    }
}

/// The lease algorithm's steps for one request (or one keep-alive), all before `deadline`.
pub struct RouterLeaseStore<N> {
    pub ctx: Arc<RouterContext<N>>,
    pub tso: Arc<TsoClient>,
    pub deadline: Instant,
}

impl<N: NodeApi> RouterLeaseStore<N> {
    /// Whether the caller may write `key`.
    fn authorize_write(&self, key: &[u8]) -> Result<(), RouterError> {
        self.ctx.limits.check_key(&"key", key)?;
        self.ctx.auth.authorize_message(&PutRequest {
            key: key.to_vec(),
            ..PutRequest::default()
        })
    }

    /// One op on its key's shard, through the leader, under a fresh request id kept
    /// across the forwarder's retries.
    async fn write_one(&self, op: WriteOp) -> Result<WriteOpResult, RouterError> {
        self.authorize_write(&op.key)?;
        self.ctx.limits.check_value(&"value", &op.value)?;
        let request_id: RequestId = rand::random();
        one_key::write_one(&self.ctx, request_id, op, self.deadline).await
    }
}

fn write_op(
    key: &[u8],
    value: Option<Vec<u8>>,
    expected_version: Option<u64>,
    expires_at_ts: u64,
) -> WriteOp {
    let kind = if value.is_some() {
        WriteKind::Put
    } else {
        WriteKind::Delete
    };
    WriteOp {
        key: key.to_vec(),
        kind: kind as i32,
        expires_at_ts: if value.is_some() { expires_at_ts } else { 0 },
        value: value.unwrap_or_default(),
        expected_version,
        ttl_ms: 0,
        keep_value: false,
    }
}

fn cas_result(result: &WriteOpResult) -> CasResult {
    if result.succeeded {
        CasResult::Swapped {
            new_version: result.version,
        }
    } else {
        CasResult::Mismatch {
            present: result.current_found,
        }
    }
}

impl<N: NodeApi> LeaseStore for RouterLeaseStore<N> {
    type Error = RouterError;

    async fn get_expiring(&self, key: &[u8]) -> Result<Option<StoredValue>, RouterError> {
        self.ctx.limits.check_key(&"key", key)?;
        self.ctx.auth.authorize_message(&GetRequest {
            key: key.to_vec(),
            ..GetRequest::default()
        })?;
        let view = self.ctx.topology.wait_for_ring(self.deadline).await?;
        let shard = view.ring.shard_for_key(key);
        let response = self
            .ctx
            .forwarder
            .read(
                shard,
                view.ring.shard_count(),
                vec![key.to_vec()],
                Consistency::Linearizable,
                0,
                false,
                self.deadline,
            )
            .await?;
        let found: KeyValueResult = one_key::single(shard, match_read_results(&[key], response.results))?;
        if !found.found {
            return Ok(None);
        }
        Ok(Some(StoredValue {
            value: found.value,
            version: found.version,
            expires_at_ts: (found.expires_at_ts != 0).then_some(found.expires_at_ts),
        }))
    }

    async fn compare_and_swap_expiring_at(
        &self,
        key: &[u8],
        expected_version: u64,
        new_value: Option<Vec<u8>>,
        expires_at_ts: u64,
    ) -> Result<CasResult, RouterError> {
        let op = write_op(key, new_value, Some(expected_version), expires_at_ts);
        Ok(cas_result(&self.write_one(op).await?))
    }

    async fn create_with_ttl(&self, key: &[u8], value: Vec<u8>, ttl: Duration) -> Result<bool, RouterError> {
        let mut op = write_op(key, Some(value), Some(0), 0);
        op.ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        Ok(self.write_one(op).await?.succeeded)
    }

    async fn put_expiring_at(
        &self,
        key: &[u8],
        value: Vec<u8>,
        expires_at_ts: u64,
    ) -> Result<u64, RouterError> {
        let op = write_op(key, Some(value), None, expires_at_ts);
        Ok(self.write_one(op).await?.version)
    }

    async fn expire_at(&self, key: &[u8], expires_at_ts: u64) -> Result<Option<u64>, RouterError> {
        let mut op = write_op(key, Some(Vec::new()), None, expires_at_ts);
        op.keep_value = true;
        let result = self.write_one(op).await?;
        Ok(result.succeeded.then_some(result.version))
    }

    async fn timestamp(&self) -> Result<u64, RouterError> {
        Ok(self.tso.timestamps(1, self.deadline).await?.start)
    }

    /// Pages through the records' keys, stopping after [`MAX_LISTED_LEASES`] + 1 (the
    /// service tells the caller the list was cut).
    async fn lease_record_keys(&self) -> Result<Vec<Vec<u8>>, RouterError> {
        let mut keys = Vec::new();
        let mut continuation_token = Vec::new();
        loop {
            let request = ScanRequest {
                prefix: LEASE_KEY_PREFIX.to_vec(),
                limit: LIST_PAGE_ENTRIES,
                keys_only: true,
                continuation_token,
                ..ScanRequest::default()
            };
            self.ctx.auth.authorize_message(&request)?;
            let page = range_ops::scan(&self.ctx, request, self.deadline).await?;
            keys.extend(page.entries.into_iter().map(|entry| entry.key));
            if page.continuation_token.is_empty() || keys.len() > MAX_LISTED_LEASES {
                return Ok(keys);
            }
            continuation_token = page.continuation_token;
        }
    }
}
