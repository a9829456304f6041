//! Writes with an absolute expiry (`expires_at_ts`), the primitive leases stand on: every
//! key attached to a lease gets the lease's deadline, one oracle timestamp, whatever its
//! write's commit timestamp; a write that commits after the deadline is expired at once.
//! Also a get that answers the key's expiry with its value.

use ringkv_proto::v1 as proto;

use crate::client::{checked_key, new_request_id};
use crate::retry::OpKind;
use crate::routers::{kv_client, with_deadline};
use crate::types::versioned;
use crate::{CasOutcome, Client, Error, Versioned};

/// A value with its expiry (an oracle timestamp; `None`: never).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringValue {
    pub value: Versioned,
    pub expires_at_ts: Option<u64>,
}

impl Client {
    /// Stores `value` under `key`, expiring at oracle timestamp `expires_at_ts` (at once if
    /// the write commits at or after it); returns the new version.
    pub async fn put_expiring_at(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
        expires_at_ts: u64,
    ) -> Result<u64, Error> {
        let message = proto::PutRequest {
            key: checked_key(key.as_ref())?,
            value: value.into(),
            request_id: new_request_id(),
            ttl_ms: 0,
            expires_at_ts: nonzero_deadline(expires_at_ts)?,
            lease: 0,
        };
        let max_bytes = self.routers().config().max_message_bytes;
        let response = self
            .routers()
            .call(OpKind::Write, "put", |channel, timeout| {
                let request = with_deadline(message.clone(), timeout);
                async move { kv_client(channel, max_bytes).put(request).await }
            })
            .await?;
        Ok(response.version)
    }

    /// [`Client::compare_and_swap`] of a new value (`Some`) or a delete (`None`); a new
    /// value expires at `expires_at_ts` (0: never).
    pub(crate) async fn compare_and_swap_expiring_at(
        &self,
        key: &[u8],
        expected_version: u64,
        new_value: Option<Vec<u8>>,
        expires_at_ts: u64,
    ) -> Result<CasOutcome, Error> {
        let delete = new_value.is_none();
        let message = proto::CompareAndSwapRequest {
            key: checked_key(key)?,
            expected_version,
            new_value: new_value.unwrap_or_default(),
            delete,
            request_id: new_request_id(),
            ttl_ms: 0,
            expires_at_ts: if delete { 0 } else { expires_at_ts },
        };
        self.send_compare_and_swap(message).await
    }

    /// Moves `key`'s expiry to oracle timestamp `expires_at_ts`, keeping its value (under
    /// a new version). `None` when the key is absent or expired.
    pub async fn expire_at(&self, key: impl AsRef<[u8]>, expires_at_ts: u64) -> Result<Option<u64>, Error> {
        let message = proto::ExpireRequest {
            key: checked_key(key.as_ref())?,
            ttl_ms: 0,
            request_id: new_request_id(),
            expires_at_ts: nonzero_deadline(expires_at_ts)?,
        };
        self.send_expire(message).await
    }

    /// Reads `key` linearizably with its expiry; `None` when absent or expired.
    pub async fn get_expiring(&self, key: impl AsRef<[u8]>) -> Result<Option<ExpiringValue>, Error> {
        let message = proto::GetRequest {
            key: checked_key(key.as_ref())?,
            consistency: proto::Consistency::Linearizable as i32,
            read_ts: 0,
            read_uncommitted: false,
        };
        let max_bytes = self.routers().config().max_message_bytes;
        let response = self
            .routers()
            .call(OpKind::Read, "get", |channel, timeout| {
                let request = with_deadline(message.clone(), timeout);
                async move { kv_client(channel, max_bytes).get(request).await }
            })
            .await?;
        let expires_at_ts = (response.expires_at_ts != 0).then_some(response.expires_at_ts);
        Ok(versioned(response.found, response.value, response.version)
            .map(|value| ExpiringValue { value, expires_at_ts }))
    }
}

/// 0 would mean "never expires": an absolute deadline must be a timestamp.
fn nonzero_deadline(expires_at_ts: u64) -> Result<u64, Error> {
    if expires_at_ts == 0 {
        return Err(Error::InvalidArgument(
            "an absolute expiry must be an oracle timestamp, not 0".into(),
        ));
    }
    Ok(expires_at_ts)
}
