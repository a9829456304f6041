//! Leases (issue 16, etcd's model): grant, keep-alive, revoke, time-to-live, list, and
//! keys attached to a lease, as [`Client`] calls. The algorithm and the record format live
//! in `ringkv-lease`, shared with the router's `ringkv.v1.Lease` service (one
//! implementation): here the client is its [`LeaseStore`], each operation one request to a
//! router with the client's retries and request ids.

use std::time::Duration;

use futures::TryStreamExt;
use ringkv_lease::{CasResult, LeaseError, LeaseStore, StoredValue};

pub(crate) use ringkv_lease::{oracle_time_until, AttachWrite, Attached};
pub use ringkv_lease::{
    Lease, LeaseId, LeaseStatus, LEASE_KEY_PREFIX, MAX_KEYS_PER_LEASE, MAX_LEASE_TTL_MS, MAX_RECORD_RACES,
    MIN_LEASE_TTL_MS,
};

use crate::{CasOutcome, Client, Error, KeyRange, ScanOptions};

/// The reserved keyspace: ringkv's own bookkeeping kept as keys (lease records). Scans
/// and counts leave it out unless their whole range lies inside it (a range of
/// [`LEASE_KEY_PREFIX`], say); [`every_range_with_reserved`] names all keys with it.
pub const RESERVED_KEY_PREFIX: &[u8] = b"__ringkv/";
/// The first key after the reserved keyspace.
const RESERVED_KEY_END: &[u8] = b"__ringkv0";

/// Ranges that together hold every key, the reserved keyspace included, in key order: the
/// keys below it, the reserved keyspace, the keys above it. (A scan of
/// [`KeyRange::all`] leaves the reserved keyspace out; a backup copies these instead.)
pub fn every_range_with_reserved() -> [KeyRange; 3] {
    [
        KeyRange::ending_before(RESERVED_KEY_PREFIX),
        KeyRange::prefix(RESERVED_KEY_PREFIX),
        KeyRange::starting_at(RESERVED_KEY_END),
    ]
}

impl From<LeaseError> for Error {
    fn from(err: LeaseError) -> Error {
        match err {
            LeaseError::InvalidArgument(message) => Error::InvalidArgument(message),
            LeaseError::NotFound(message) => Error::NotFound(message),
            LeaseError::Unavailable(message) => Error::Unavailable(message),
            LeaseError::CorruptRecord(message) => Error::InvalidResponse(message),
        }
    }
}

fn cas_result(outcome: CasOutcome) -> CasResult {
    match outcome {
        CasOutcome::Swapped { new_version } => CasResult::Swapped { new_version },
        CasOutcome::Mismatch { current } => CasResult::Mismatch {
            present: current.is_some(),
        },
    }
}

impl LeaseStore for Client {
    type Error = Error;

    async fn get_expiring(&self, key: &[u8]) -> Result<Option<StoredValue>, Error> {
        Ok(Client::get_expiring(self, key).await?.map(|found| StoredValue {
            value: found.value.value,
            version: found.value.version,
            expires_at_ts: found.expires_at_ts,
        }))
    }

    async fn compare_and_swap_expiring_at(
        &self,
        key: &[u8],
        expected_version: u64,
        new_value: Option<Vec<u8>>,
        expires_at_ts: u64,
    ) -> Result<CasResult, Error> {
        Client::compare_and_swap_expiring_at(self, key, expected_version, new_value, expires_at_ts)
            .await
            .map(cas_result)
    }

    async fn create_with_ttl(&self, key: &[u8], value: Vec<u8>, ttl: Duration) -> Result<bool, Error> {
        let outcome = self.compare_and_swap_with_ttl(key, 0, value, ttl).await?;
        Ok(outcome.is_swapped())
    }

    async fn put_expiring_at(&self, key: &[u8], value: Vec<u8>, expires_at_ts: u64) -> Result<u64, Error> {
        Client::put_expiring_at(self, key, value, expires_at_ts).await
    }

    async fn expire_at(&self, key: &[u8], expires_at_ts: u64) -> Result<Option<u64>, Error> {
        Client::expire_at(self, key, expires_at_ts).await
    }

    async fn timestamp(&self) -> Result<u64, Error> {
        Client::timestamp(self).await
    }

    async fn lease_record_keys(&self) -> Result<Vec<Vec<u8>>, Error> {
        let range = KeyRange::prefix(LEASE_KEY_PREFIX);
        let entries = self
            .scan_stream(&range, &ScanOptions::new().keys_only(true))
            .entries()
            .try_collect::<Vec<_>>()
            .await?;
        Ok(entries.into_iter().map(|entry| entry.key).collect())
    }
}

impl Client {
    /// Grants a lease of `ttl` (1 s to one day); it expires `ttl` after its record commits
    /// unless kept alive.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<Lease, Error> {
        ringkv_lease::grant(self, ttl).await
    }

    /// Extends the lease once: its deadline and every attached key's become a fresh
    /// oracle timestamp plus its TTL. NOT_FOUND once it expired or was revoked.
    pub async fn lease_keep_alive_once(&self, id: LeaseId) -> Result<Lease, Error> {
        ringkv_lease::keep_alive_once(self, id).await
    }

    /// Revokes the lease: deletes every attached key, then the lease. Answers how many
    /// attached keys existed. NOT_FOUND when the lease expired or was revoked already.
    pub async fn lease_revoke(&self, id: LeaseId) -> Result<u64, Error> {
        ringkv_lease::revoke(self, id).await
    }

    /// The lease's TTL, the oracle time it has left and its attached keys.
    pub async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseStatus, Error> {
        ringkv_lease::time_to_live(self, id).await
    }

    /// The ids of the live leases, in id order.
    pub async fn lease_list(&self) -> Result<Vec<LeaseId>, Error> {
        ringkv_lease::list(self).await
    }

    /// Stores `value` under `key`, attached to lease `id`: the key vanishes when the lease
    /// expires or is revoked. NOT_FOUND when the lease is gone; INVALID_ARGUMENT when it
    /// would hold more than [`MAX_KEYS_PER_LEASE`] keys.
    pub async fn put_with_lease(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
        id: LeaseId,
    ) -> Result<u64, Error> {
        let versions = self
            .put_many_with_lease(vec![(key.as_ref().to_vec(), value.into())], id)
            .await?;
        versions
            .first()
            .copied()
            .ok_or_else(|| Error::InvalidResponse("an attach wrote nothing".into()))
    }

    /// [`Client::put_with_lease`] of many keys (distinct), written concurrently and added
    /// to the lease's record in one step; their versions, in order. Checked against
    /// [`MAX_KEYS_PER_LEASE`] before anything is written.
    pub async fn put_many_with_lease(
        &self,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        id: LeaseId,
    ) -> Result<Vec<u64>, Error> {
        ringkv_lease::put_many_with_lease(self, entries, id).await
    }

    /// Writes each key with lease `id`'s deadline, then adds them to the lease's record
    /// (see `ringkv-lease`); deletes them again when the lease is gone by then.
    pub(crate) async fn attach(
        &self,
        id: LeaseId,
        writes: Vec<(Vec<u8>, AttachWrite)>,
    ) -> Result<Attached, Error> {
        ringkv_lease::attach(self, id, writes).await
    }
}
