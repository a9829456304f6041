//! [`LeaseStore`]: the key-value operations the lease algorithm runs on, so one algorithm
//! serves both the client library (over gRPC to a router) and the router (its own
//! in-process request path to the shard leaders).
//!
//! Every operation is one linearizable read or one conditional or unconditional write of
//! one key, retried by the implementation as any such request is (writes with one request
//! id across their retries); the algorithm settles races with the record's
//! compare-and-set, never by assuming a write did not happen.

use std::future::Future;
use std::time::Duration;

use crate::LeaseError;

/// A key's value, version and expiry, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    pub value: Vec<u8>,
    pub version: u64,
    /// The oracle timestamp it expires at; `None`: never.
    pub expires_at_ts: Option<u64>,
}

/// What a compare-and-set did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasResult {
    /// The comparison held and the write (or delete) was applied.
    Swapped { new_version: u64 },
    /// The key did not have the expected version: nothing changed. `present`: whether the
    /// key exists now.
    Mismatch { present: bool },
}

impl CasResult {
    pub fn is_swapped(self) -> bool {
        matches!(self, CasResult::Swapped { .. })
    }
}

/// The key-value operations leases are built on (see the module docs). `Error` is the
/// implementation's own error, which the algorithm's own failures convert into.
pub trait LeaseStore: Sync {
    type Error: From<LeaseError> + Send;

    /// The key's value, version and expiry, read linearizably; `None` when absent or expired.
    fn get_expiring(
        &self,
        key: &[u8],
    ) -> impl Future<Output = Result<Option<StoredValue>, Self::Error>> + Send;

    /// Writes `new_value` expiring at oracle timestamp `expires_at_ts` (or deletes the key:
    /// `None`) if the key has `expected_version` (0: absent).
    fn compare_and_swap_expiring_at(
        &self,
        key: &[u8],
        expected_version: u64,
        new_value: Option<Vec<u8>>,
        expires_at_ts: u64,
    ) -> impl Future<Output = Result<CasResult, Self::Error>> + Send;

    /// Creates the absent `key` with `value`, expiring `ttl` after the write's commit
    /// timestamp; whether it was absent (and is now written).
    fn create_with_ttl(
        &self,
        key: &[u8],
        value: Vec<u8>,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Stores `value` under `key` expiring at `expires_at_ts`; the new version.
    fn put_expiring_at(
        &self,
        key: &[u8],
        value: Vec<u8>,
        expires_at_ts: u64,
    ) -> impl Future<Output = Result<u64, Self::Error>> + Send;

    /// Moves `key`'s expiry to `expires_at_ts`, keeping its value; the new version, `None`
    /// when the key is absent.
    fn expire_at(
        &self,
        key: &[u8],
        expires_at_ts: u64,
    ) -> impl Future<Output = Result<Option<u64>, Self::Error>> + Send;

    /// A fresh oracle timestamp.
    fn timestamp(&self) -> impl Future<Output = Result<u64, Self::Error>> + Send;

    /// Every key under [`crate::LEASE_KEY_PREFIX`] (live lease records), in key order.
    fn lease_record_keys(&self) -> impl Future<Output = Result<Vec<Vec<u8>>, Self::Error>> + Send;
}
