//! Keys that expire (issue 16, TTL): puts and compare-and-sets with a time to live,
//! `expire`, `persist` and the time a key has left.
//!
//! Expiry is oracle time, decided inside the cluster: a value put with a TTL of `t` ms
//! expires `t` ms after its write's commit timestamp, and from then on every read and write
//! finds the key absent (gets, scans, counts and transactions agree). [`Client::ttl`]
//! compares the key's expiry with a fresh timestamp of the oracle.

use std::time::Duration;

use ringkv_proto::v1 as proto;

use crate::client::{checked_key, new_request_id};
use crate::retry::OpKind;
use crate::routers::{kv_client, with_deadline};
use crate::timestamp::LOGICAL_BITS;
use crate::{CasOutcome, Client, Error};

/// What a key has left to live (Redis' `TTL` answers -2, -1 or the seconds left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key is absent (or expired).
    Missing,
    /// The key never expires.
    Persistent,
    /// The key expires in this much oracle time; `expires_at_ts` is its expiry as an
    /// oracle timestamp.
    Expires { remaining: Duration, expires_at_ts: u64 },
}

/// A time to live in whole milliseconds, at least 1 (0 would mean "never").
fn ttl_ms(ttl: Duration) -> Result<u64, Error> {
    match u64::try_from(ttl.as_millis()) {
        Ok(0) => Err(Error::InvalidArgument(
            "a time to live must be at least 1 ms".into(),
        )),
        Ok(ms) => Ok(ms),
        Err(_) => Err(Error::InvalidArgument("a time to live too long".into())),
    }
}

impl Client {
    /// Stores `value` under `key`, expiring `ttl` after the write commits; returns the new
    /// version.
    pub async fn put_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
        ttl: Duration,
    ) -> Result<u64, Error> {
        let message = proto::PutRequest {
            key: checked_key(key.as_ref())?,
            value: value.into(),
            request_id: new_request_id(),
            ttl_ms: ttl_ms(ttl)?,
            expires_at_ts: 0,
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

    /// [`Client::compare_and_swap`] of a new value that expires `ttl` after the write
    /// commits (an expired key counts as absent: version 0).
    pub async fn compare_and_swap_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        expected_version: u64,
        new_value: impl Into<Vec<u8>>,
        ttl: Duration,
    ) -> Result<CasOutcome, Error> {
        let message = proto::CompareAndSwapRequest {
            key: checked_key(key.as_ref())?,
            expected_version,
            new_value: new_value.into(),
            delete: false,
            request_id: new_request_id(),
            ttl_ms: ttl_ms(ttl)?,
            expires_at_ts: 0,
        };
        self.send_compare_and_swap(message).await
    }

    /// Makes `key` expire `ttl` after this write commits, keeping its value (under a new
    /// version). Returns the new version, or `None` when the key is absent or expired.
    pub async fn expire(&self, key: impl AsRef<[u8]>, ttl: Duration) -> Result<Option<u64>, Error> {
        self.change_expiry(key.as_ref(), ttl_ms(ttl)?).await
    }

    /// Makes `key` never expire, keeping its value (under a new version). Returns the new
    /// version, or `None` when the key is absent, expired or had no expiry.
    pub async fn persist(&self, key: impl AsRef<[u8]>) -> Result<Option<u64>, Error> {
        self.change_expiry(key.as_ref(), 0).await
    }

    async fn change_expiry(&self, key: &[u8], ttl_ms: u64) -> Result<Option<u64>, Error> {
        let message = proto::ExpireRequest {
            key: checked_key(key)?,
            ttl_ms,
            request_id: new_request_id(),
            expires_at_ts: 0,
        };
        self.send_expire(message).await
    }

    /// Sends a compare-and-swap (one request id for every attempt).
    pub(crate) async fn send_compare_and_swap(
        &self,
        message: proto::CompareAndSwapRequest,
    ) -> Result<CasOutcome, Error> {
        let max_bytes = self.routers().config().max_message_bytes;
        let response = self
            .routers()
            .call(OpKind::Write, "compare-and-swap", |channel, timeout| {
                let request = with_deadline(message.clone(), timeout);
                async move { kv_client(channel, max_bytes).compare_and_swap(request).await }
            })
            .await?;
        Ok(CasOutcome::from(response))
    }

    /// Sends an expire (one request id for every attempt): the new version when applied.
    pub(crate) async fn send_expire(&self, message: proto::ExpireRequest) -> Result<Option<u64>, Error> {
        let max_bytes = self.routers().config().max_message_bytes;
        let response = self
            .routers()
            .call(OpKind::Write, "expire", |channel, timeout| {
                let request = with_deadline(message.clone(), timeout);
                async move { kv_client(channel, max_bytes).expire(request).await }
            })
            .await?;
        Ok(response.applied.then_some(response.version))
    }

    /// What `key` has left to live: read linearizably, compared with an oracle timestamp
    /// taken after the read.
    pub async fn ttl(&self, key: impl AsRef<[u8]>) -> Result<Ttl, Error> {
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
        if !response.found {
            return Ok(Ttl::Missing);
        }
        if response.expires_at_ts == 0 {
            return Ok(Ttl::Persistent);
        }
        let now_ts = self.timestamp().await?;
        Ok(remaining(response.expires_at_ts, now_ts))
    }
}

/// What a key expiring at `expires_at_ts` has left at `now_ts`.
fn remaining(expires_at_ts: u64, now_ts: u64) -> Ttl {
    if now_ts >= expires_at_ts {
        return Ttl::Missing;
    }
    let remaining_ms = (expires_at_ts - now_ts) >> LOGICAL_BITS;
    Ttl::Expires {
        remaining: Duration::from_millis(remaining_ms),
        expires_at_ts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remaining time is the expiry minus now in milliseconds; a passed expiry is missing;
    /// a TTL is at least 1 ms.
    #[test]
    fn remaining_time_and_ttl_bounds() {
        let ms = |ms: u64| ms << LOGICAL_BITS;
        assert_eq!(
            remaining(ms(1_500), ms(1_000)),
            Ttl::Expires {
                remaining: Duration::from_millis(500),
                expires_at_ts: ms(1_500)
            }
        );
        assert_eq!(remaining(ms(1_000), ms(1_000)), Ttl::Missing);
        assert!(ttl_ms(Duration::from_micros(10)).is_err());
        assert_eq!(ttl_ms(Duration::from_secs(2)).ok(), Some(2_000));
    }
}
