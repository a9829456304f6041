//! Leases (issue 16, etcd's model) on keys with an absolute expiry: grant, keep-alive,
//! revoke, time-to-live, list, and keys attached to a lease. One implementation of the
//! algorithm, used by both sides that run it: the client library (`ringkv-client`, its
//! `Client::lease_*` calls, locks and elections) and the router's `ringkv.v1.Lease`
//! service, which lets a client in any language use leases without re-implementing this.
//! Each side supplies the few key-value operations the algorithm needs as a
//! [`LeaseStore`]; the lease state lives only in the records below, so any router (or
//! client) can serve any lease, and a restart loses nothing.
//!
//! A lease is one record under a reserved key, `__ringkv/lease/<id, 16 hex digits>`, in
//! the shard that key hashes to. Its value holds the granted TTL and the attached keys
//! (at most [`MAX_KEYS_PER_LEASE`]); its expiry is the lease's deadline, an oracle
//! timestamp. Every attached key is written with that same deadline (`expires_at_ts`,
//! applied inside Raft), so the record and its keys vanish together with no background
//! work on the nodes: expiry is the existing TTL mechanism.
//!
//! - Grant: a compare-and-set creating the record with `ttl_ms` (deadline = its commit
//!   timestamp + TTL). A grant under a request id ([`grant_for_request`]) takes the id
//!   [`LeaseId::for_request`] derives from it, and answers the record already there: a
//!   retry of it (after a lost answer, through any router) answers the same lease instead
//!   of granting a second one.
//! - Keep-alive: `T` = a fresh oracle timestamp, `D = T + TTL`; every attached key's
//!   expiry moves to `D` (keys already gone are dropped from the list), then the record
//!   is compare-and-set to `D`. Keys first: a keep-alive that fails part-way leaves keys
//!   *outliving* the record until the next one (never vanishing before it), so a lock
//!   key is not freed early; their deadlines differ until the next keep-alive aligns them.
//! - Attach (`put --lease`): the key is written with the record's deadline first, then
//!   added to the record by compare-and-set; when the record is gone by then (expired,
//!   revoked) the key is deleted again and the call fails with NOT_FOUND.
//! - Revoke: delete every attached key, then the record by compare-and-set (a key
//!   attached meanwhile makes it start over).
//! - Detach: a key listed in the record that has since been written without an expiry (a
//!   plain `put`, `persist`) is no longer attached, as in etcd where a put without a lease
//!   detaches the key: keep-alive and revoke leave it alone (each key is moved or deleted by
//!   compare-and-set on the version it was read at) and keep-alive drops it from the list.
//!   A key written with an expiry of its own (`put --ttl`) still counts as attached: a key's
//!   deadline may differ from the record's after a keep-alive that failed part-way, so an
//!   expiry alone cannot tell the two apart.
//!
//! Races between those are settled by the record's compare-and-set: each read-modify-write
//! runs again (at most [`MAX_RECORD_RACES`] times) when the record changed under it.
//!
//! The record's value, for clients in other languages: `ringkv-lease-v1\n`, the TTL in
//! milliseconds (u64 big-endian), the number of attached keys (u32 big-endian), then each
//! key as its length (u32 big-endian) and its bytes, in bytewise order.
//!
//! # Map
//! - this file: ids, answers, limits, [`LeaseError`];
//! - `record`: the record's value format;
//! - [`store`]: [`LeaseStore`], the key-value operations the algorithm runs on;
//! - `ops`: the algorithm ([`grant`], [`keep_alive_once`], [`revoke`],
//!   [`time_to_live`], [`list`], [`attach`], [`put_many_with_lease`]).

mod ops;
mod record;
pub mod store;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use ops::{
    attach, grant, grant_for_request, keep_alive_once, list, put_many_with_lease, revoke, time_to_live,
};
pub use store::{CasResult, LeaseStore, StoredValue};

/// Where lease records live, in the reserved keyspace `__ringkv/` (a prefix users must be
/// allowed to write to use leases).
pub const LEASE_KEY_PREFIX: &[u8] = b"__ringkv/lease/";
/// The shortest TTL a lease may be granted (a keep-alive runs every third of it).
pub const MIN_LEASE_TTL_MS: u64 = 1_000;
/// The longest TTL a lease may be granted: one day.
pub const MAX_LEASE_TTL_MS: u64 = 86_400_000;
/// The most keys one lease holds (its record carries their names).
pub const MAX_KEYS_PER_LEASE: usize = 1_024;
/// How often a read-modify-write of a lease record runs again when the record changed
/// under it (another keep-alive, attach or revoke of the same lease).
pub const MAX_RECORD_RACES: usize = 16;

/// The fixed SipHash keys of [`LeaseId::for_request`]: part of the wire contract (a
/// retry through a router of another version must derive the same id), never changed.
const GRANT_ID_KEYS: (u64, u64) = (0x7269_6e67_6b76_6c65, 0x6173_652d_6772_6e74);
/// Bits of an oracle timestamp's logical counter (`physical_ms << 18 | logical`).
pub const TIMESTAMP_LOGICAL_BITS: u32 = 18;

/// Why a lease operation failed, as the algorithm sees it; each [`LeaseStore`] turns it
/// into its own error type (the client's `Error`, the router's gRPC status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Bad input: a TTL out of range, a malformed id, too many keys, a key given twice.
    #[error("{0}")]
    InvalidArgument(String),
    /// The lease expired, was revoked or never existed.
    #[error("{0}")]
    NotFound(String),
    /// The lease's record kept changing under [`MAX_RECORD_RACES`] attempts, or no free id
    /// was found: worth trying again.
    #[error("{0}")]
    Unavailable(String),
    /// A key under [`LEASE_KEY_PREFIX`] holds something that is not a lease record.
    #[error("{0}")]
    CorruptRecord(String),
}

/// A lease's id: a random non-zero 64-bit number, written as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub u64);

impl fmt::Display for LeaseId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:016x}", self.0)
    }
}

impl FromStr for LeaseId {
    type Err = LeaseError;

    fn from_str(text: &str) -> Result<LeaseId, LeaseError> {
        match u64::from_str_radix(text, 16) {
            Ok(0) | Err(_) => Err(LeaseError::InvalidArgument(format!(
                "a lease id is 1 to 16 hex digits, not zero; got {text:?}"
            ))),
            Ok(id) => Ok(LeaseId(id)),
        }
    }
}

impl LeaseId {
    /// The key of this lease's record.
    pub fn record_key(self) -> Vec<u8> {
        let mut key = LEASE_KEY_PREFIX.to_vec();
        key.extend_from_slice(self.to_string().as_bytes());
        key
    }

    /// The lease whose record `key` is (`None` for any other key).
    pub fn of_record_key(key: &[u8]) -> Option<LeaseId> {
        let suffix = key.strip_prefix(LEASE_KEY_PREFIX)?;
        std::str::from_utf8(suffix).ok()?.parse().ok()
    }

    /// The lease id a grant under `request_id` takes: a keyed SipHash-1-3 of the bytes
    /// with fixed keys (so every router and every version derives the same), non-zero.
    /// Two request ids share an id with probability 2^-64 per pair.
    pub fn for_request(request_id: &[u8]) -> LeaseId {
        use std::hash::Hasher;
        let mut hasher = siphasher::sip::SipHasher13::new_with_keys(GRANT_ID_KEYS.0, GRANT_ID_KEYS.1);
        hasher.write(request_id);
        LeaseId(hasher.finish().max(1))
    }

    /// A lease id from a wire field: non-zero.
    pub fn from_wire(id: u64) -> Result<LeaseId, LeaseError> {
        if id == 0 {
            return Err(LeaseError::InvalidArgument("a lease id is not zero".into()));
        }
        Ok(LeaseId(id))
    }
}

/// A live lease: its TTL and current deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub ttl: Duration,
    /// When it expires unless kept alive, as an oracle timestamp.
    pub expires_at_ts: u64,
}

/// What [`time_to_live`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    pub lease: Lease,
    /// Oracle time left until the deadline.
    pub remaining: Duration,
    /// The keys attached (some may have been deleted since they were attached).
    pub keys: Vec<Vec<u8>>,
}

/// How an attached key is written.
#[derive(Debug, Clone)]
pub enum AttachWrite {
    /// A put, whatever the key held.
    Put(Vec<u8>),
    /// Only if the key is absent (locks, elections).
    Create(Vec<u8>),
}

/// What attaching keys did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attached {
    /// The keys were written (these versions, in key order) and are on the lease's list.
    Written { versions: Vec<u64>, expires_at_ts: u64 },
    /// [`AttachWrite::Create`] found the key present: nothing was written.
    Taken,
}

/// The oracle timestamp `ttl_ms` after `now_ts`.
pub fn deadline_after(now_ts: u64, ttl_ms: u64) -> u64 {
    now_ts.saturating_add(ttl_ms.saturating_mul(1 << TIMESTAMP_LOGICAL_BITS))
}

/// Oracle time from `now_ts` until `deadline_ts` (zero once it passed).
pub fn oracle_time_until(deadline_ts: u64, now_ts: u64) -> Duration {
    Duration::from_millis(deadline_ts.saturating_sub(now_ts) >> TIMESTAMP_LOGICAL_BITS)
}

/// A lease TTL in milliseconds within [`MIN_LEASE_TTL_MS`]..=[`MAX_LEASE_TTL_MS`].
pub fn checked_ttl_ms(ttl: Duration) -> Result<u64, LeaseError> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    if !(MIN_LEASE_TTL_MS..=MAX_LEASE_TTL_MS).contains(&ttl_ms) {
        return Err(LeaseError::InvalidArgument(format!(
            "a lease TTL is {MIN_LEASE_TTL_MS} ms to {MAX_LEASE_TTL_MS} ms (one day), got {ttl_ms} ms"
        )));
    }
    Ok(ttl_ms)
}

/// The error of a lease that is gone.
pub fn lease_not_found(id: LeaseId) -> LeaseError {
    LeaseError::NotFound(format!(
        "lease {id} not found: it expired, was revoked or never existed"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lease ids are non-zero hex; TTLs are bounded both ways.
    #[test]
    fn ids_and_ttls_are_checked() {
        assert_eq!("00000000000000ff".parse::<LeaseId>().ok(), Some(LeaseId(255)));
        assert_eq!(LeaseId(255).to_string(), "00000000000000ff");
        assert_eq!(
            LeaseId::of_record_key(&LeaseId(255).record_key()),
            Some(LeaseId(255))
        );
        assert_eq!(LeaseId::of_record_key(b"__ringkv/lease/zz"), None);
        assert!("0".parse::<LeaseId>().is_err());
        assert!("xyz".parse::<LeaseId>().is_err());
        assert!(LeaseId::from_wire(0).is_err());
        assert!(checked_ttl_ms(Duration::ZERO).is_err());
        assert!(checked_ttl_ms(Duration::from_millis(MAX_LEASE_TTL_MS + 1)).is_err());
        assert_eq!(checked_ttl_ms(Duration::from_secs(2)).ok(), Some(2_000));
        assert_eq!(
            oracle_time_until(5 << TIMESTAMP_LOGICAL_BITS, 2 << TIMESTAMP_LOGICAL_BITS),
            Duration::from_millis(3)
        );
        assert_eq!(oracle_time_until(1, 2), Duration::ZERO);
    }

    /// A grant's id under a request id is part of the wire contract: a retry through a
    /// router of another version must find the same lease. Pinned, distinct, non-zero.
    #[test]
    fn grant_ids_derive_from_request_ids_stably() {
        assert_eq!(LeaseId::for_request(&[0; 16]), LeaseId(0xe046_14f3_6b7b_e4b1));
        let ids: std::collections::BTreeSet<LeaseId> = (0..1000u32)
            .map(|n| LeaseId::for_request(&n.to_le_bytes()))
            .collect();
        assert_eq!(ids.len(), 1000);
        assert!(!ids.contains(&LeaseId(0)));
    }
}
