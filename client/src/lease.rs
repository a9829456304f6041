//! Leases (issue 16, etcd's model) built in the client on keys with an absolute expiry:
//! grant, keep-alive, revoke, time-to-live, list, and keys attached to a lease.
//!
//! A lease is one record under a reserved key, `__ringkv/lease/<id, 16 hex digits>`, in
//! the shard that key hashes to. Its value holds the granted TTL and the attached keys
//! (at most [`MAX_KEYS_PER_LEASE`]); its expiry is the lease's deadline, an oracle
//! timestamp. Every attached key is written with that same deadline (`expires_at_ts`,
//! applied inside Raft), so the record and its keys vanish together with no background
//! work on the nodes: expiry is the existing TTL mechanism.
//!
//! - Grant: a compare-and-set creating the record with `ttl_ms` (deadline = its commit
//!   timestamp + TTL).
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

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::timestamp::LOGICAL_BITS;
use crate::{CasOutcome, Client, Error, KeyRange, ScanOptions};

/// The reserved keyspace: ringkv's own bookkeeping kept as keys (lease records). Scans
/// and counts leave it out unless their whole range lies inside it (a range of
/// [`LEASE_KEY_PREFIX`], say); [`every_range_with_reserved`] names all keys with it.
pub const RESERVED_KEY_PREFIX: &[u8] = b"__ringkv/";
/// The first key after the reserved keyspace.
const RESERVED_KEY_END: &[u8] = b"__ringkv0";
/// Where lease records live, in the reserved keyspace (a prefix users must be allowed to
/// write to use leases).
pub const LEASE_KEY_PREFIX: &[u8] = b"__ringkv/lease/";

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
/// The shortest TTL a lease may be granted (a keep-alive runs every third of it).
pub const MIN_LEASE_TTL_MS: u64 = 1_000;
/// The longest TTL a lease may be granted: one day.
pub const MAX_LEASE_TTL_MS: u64 = 86_400_000;
/// The most keys one lease holds (its record carries their names).
pub const MAX_KEYS_PER_LEASE: usize = 1_024;
/// How often a read-modify-write of a lease record runs again when the record changed
/// under it (another keep-alive, attach or revoke of the same lease).
pub const MAX_RECORD_RACES: usize = 16;
/// Attached keys written at once by a keep-alive or a revoke.
const KEY_WRITE_CONCURRENCY: usize = 64;
/// The first bytes of a lease record's value (its format's version).
const RECORD_MAGIC: &[u8] = b"ringkv-lease-v1\n";

/// A lease's id: a random non-zero 64-bit number, written as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub u64);

impl fmt::Display for LeaseId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:016x}", self.0)
    }
}

impl FromStr for LeaseId {
    type Err = Error;

    fn from_str(text: &str) -> Result<LeaseId, Error> {
        match u64::from_str_radix(text, 16) {
            Ok(0) | Err(_) => Err(Error::InvalidArgument(format!(
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
}

/// A live lease: its TTL and current deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub ttl: Duration,
    /// When it expires unless kept alive, as an oracle timestamp.
    pub expires_at_ts: u64,
}

/// What [`Client::lease_time_to_live`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    pub lease: Lease,
    /// Oracle time left until the deadline.
    pub remaining: Duration,
    /// The keys attached (some may have been deleted since they were attached).
    pub keys: Vec<Vec<u8>>,
}

/// A lease record's value: the granted TTL and the attached keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct LeaseRecord {
    ttl_ms: u64,
    keys: BTreeSet<Vec<u8>>,
}

impl LeaseRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = RECORD_MAGIC.to_vec();
        out.extend_from_slice(&self.ttl_ms.to_be_bytes());
        out.extend_from_slice(&(self.keys.len() as u32).to_be_bytes());
        for key in &self.keys {
            out.extend_from_slice(&(key.len() as u32).to_be_bytes());
            out.extend_from_slice(key);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<LeaseRecord> {
        let mut rest = bytes.strip_prefix(RECORD_MAGIC)?;
        let mut take = |len: usize| -> Option<&[u8]> {
            let (head, tail) = (rest.get(..len)?, rest.get(len..)?);
            rest = tail;
            Some(head)
        };
        let ttl_ms = u64::from_be_bytes(take(8)?.try_into().ok()?);
        let count = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        if count > MAX_KEYS_PER_LEASE {
            return None;
        }
        let mut keys = BTreeSet::new();
        for _ in 0..count {
            let len = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
            keys.insert(take(len)?.to_vec());
        }
        Some(LeaseRecord { ttl_ms, keys })
    }
}

/// A lease record as read: its value, version and deadline.
struct LiveRecord {
    record: LeaseRecord,
    version: u64,
    expires_at_ts: u64,
}

/// How an attached key is written.
#[derive(Debug, Clone)]
pub(crate) enum AttachWrite {
    /// A put, whatever the key held.
    Put(Vec<u8>),
    /// Only if the key is absent (locks, elections).
    Create(Vec<u8>),
}

/// What attaching a key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attached {
    /// The keys were written (these versions, in key order) and are on the lease's list.
    Written { versions: Vec<u64>, expires_at_ts: u64 },
    /// [`AttachWrite::Create`] found the key present: nothing was written.
    Taken,
}

/// The oracle timestamp `ttl_ms` after `now_ts`.
fn deadline_after(now_ts: u64, ttl_ms: u64) -> u64 {
    now_ts.saturating_add(ttl_ms.saturating_mul(1 << LOGICAL_BITS))
}

/// Oracle time from `now_ts` until `deadline_ts` (zero once it passed).
pub(crate) fn oracle_time_until(deadline_ts: u64, now_ts: u64) -> Duration {
    Duration::from_millis(deadline_ts.saturating_sub(now_ts) >> LOGICAL_BITS)
}

/// A lease TTL in milliseconds within [`MIN_LEASE_TTL_MS`]..=[`MAX_LEASE_TTL_MS`].
fn checked_ttl_ms(ttl: Duration) -> Result<u64, Error> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    if !(MIN_LEASE_TTL_MS..=MAX_LEASE_TTL_MS).contains(&ttl_ms) {
        return Err(Error::InvalidArgument(format!(
            "a lease TTL is {MIN_LEASE_TTL_MS} ms to {MAX_LEASE_TTL_MS} ms (one day), got {ttl_ms} ms"
        )));
    }
    Ok(ttl_ms)
}

fn lease_not_found(id: LeaseId) -> Error {
    Error::NotFound(format!(
        "lease {id} not found: it expired, was revoked or never existed"
    ))
}

impl Client {
    /// Grants a lease of `ttl` (1 s to one day); it expires `ttl` after its record commits
    /// unless kept alive.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<Lease, Error> {
        let ttl_ms = checked_ttl_ms(ttl)?;
        let record = LeaseRecord {
            ttl_ms,
            keys: BTreeSet::new(),
        };
        // A random id colliding with a live lease is astronomically rare; the
        // compare-and-set on absence makes it a retry instead of a takeover.
        for _ in 0..MAX_RECORD_RACES {
            let id = LeaseId(rand::random::<u64>().max(1));
            let outcome = self
                .compare_and_swap_with_ttl(id.record_key(), 0, record.encode(), ttl)
                .await?;
            if outcome.is_swapped() {
                let Some(live) = self.live_record(id).await? else {
                    return Err(lease_not_found(id));
                };
                return Ok(Lease {
                    id,
                    ttl,
                    expires_at_ts: live.expires_at_ts,
                });
            }
        }
        Err(Error::Unavailable("no free lease id found".into()))
    }

    /// The lease's record, or `None` when it expired or was revoked.
    async fn live_record(&self, id: LeaseId) -> Result<Option<LiveRecord>, Error> {
        let Some(found) = self.get_expiring(id.record_key()).await? else {
            return Ok(None);
        };
        let Some(record) = LeaseRecord::decode(&found.value.value) else {
            return Err(Error::InvalidResponse(format!(
                "the record of lease {id} is not a lease record (written by something else?)"
            )));
        };
        Ok(Some(LiveRecord {
            record,
            version: found.value.version,
            expires_at_ts: found.expires_at_ts.unwrap_or(u64::MAX),
        }))
    }

    /// Extends the lease once: its deadline and every attached key's become a fresh
    /// oracle timestamp plus its TTL. NOT_FOUND once it expired or was revoked.
    pub async fn lease_keep_alive_once(&self, id: LeaseId) -> Result<Lease, Error> {
        for _ in 0..MAX_RECORD_RACES {
            let Some(live) = self.live_record(id).await? else {
                return Err(lease_not_found(id));
            };
            let deadline = deadline_after(self.timestamp().await?, live.record.ttl_ms);
            let refreshed: Vec<(Vec<u8>, bool)> = stream::iter(live.record.keys.iter().cloned())
                .map(|key| async move {
                    let attached = self.move_attached_key(&key, Some(deadline)).await?;
                    Ok::<_, Error>((key, attached))
                })
                .buffer_unordered(KEY_WRITE_CONCURRENCY)
                .try_collect()
                .await?;
            let mut record = live.record.clone();
            for (key, attached) in refreshed {
                if !attached {
                    record.keys.remove(&key);
                }
            }
            let outcome = self
                .compare_and_swap_expiring_at(&id.record_key(), live.version, Some(record.encode()), deadline)
                .await?;
            match outcome {
                CasOutcome::Swapped { .. } => {
                    return Ok(Lease {
                        id,
                        ttl: Duration::from_millis(record.ttl_ms),
                        expires_at_ts: deadline,
                    })
                }
                CasOutcome::Mismatch { current: None } => return Err(lease_not_found(id)),
                CasOutcome::Mismatch { current: Some(_) } => continue,
            }
        }
        Err(Error::Unavailable(format!(
            "lease {id} kept changing under {MAX_RECORD_RACES} keep-alive attempts"
        )))
    }

    /// Revokes the lease: deletes every attached key, then the lease. Answers how many
    /// attached keys existed. NOT_FOUND when the lease expired or was revoked already.
    pub async fn lease_revoke(&self, id: LeaseId) -> Result<u64, Error> {
        let mut deleted = 0;
        for _ in 0..MAX_RECORD_RACES {
            let Some(live) = self.live_record(id).await? else {
                return Err(lease_not_found(id));
            };
            let existed: Vec<bool> = stream::iter(live.record.keys.iter().cloned())
                .map(|key| async move { self.move_attached_key(&key, None).await })
                .buffer_unordered(KEY_WRITE_CONCURRENCY)
                .try_collect()
                .await?;
            deleted += existed.into_iter().filter(|existed| *existed).count() as u64;
            match self
                .compare_and_swap_expiring_at(&id.record_key(), live.version, None, 0)
                .await?
            {
                // Expired meanwhile: its keys are gone either way.
                CasOutcome::Swapped { .. } | CasOutcome::Mismatch { current: None } => return Ok(deleted),
                CasOutcome::Mismatch { current: Some(_) } => continue,
            }
        }
        Err(Error::Unavailable(format!(
            "lease {id} kept changing under {MAX_RECORD_RACES} revoke attempts"
        )))
    }

    /// Moves attached `key` to `deadline`, keeping its value, or deletes it (`None`), by
    /// compare-and-set on the version read: answers whether the key was still attached (present
    /// with an expiry). A key present without one was written since without the lease
    /// (detached) and is left alone.
    async fn move_attached_key(&self, key: &[u8], deadline: Option<u64>) -> Result<bool, Error> {
        for _ in 0..MAX_RECORD_RACES {
            let Some(found) = self.get_expiring(key).await? else {
                return Ok(false);
            };
            if found.expires_at_ts.is_none() {
                return Ok(false);
            }
            let version = found.value.version;
            let outcome = match deadline {
                Some(deadline) => {
                    self.compare_and_swap_expiring_at(key, version, Some(found.value.value), deadline)
                        .await?
                }
                None => self.compare_and_swap_expiring_at(key, version, None, 0).await?,
            };
            match outcome {
                CasOutcome::Swapped { .. } => return Ok(true),
                CasOutcome::Mismatch { current: None } => return Ok(false),
                // Written meanwhile: look at it again.
                CasOutcome::Mismatch { current: Some(_) } => continue,
            }
        }
        Err(Error::Unavailable(format!(
            "key {} kept changing under {MAX_RECORD_RACES} attempts to move it with its lease",
            String::from_utf8_lossy(key)
        )))
    }

    /// The lease's TTL, the oracle time it has left and its attached keys.
    pub async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseStatus, Error> {
        let Some(live) = self.live_record(id).await? else {
            return Err(lease_not_found(id));
        };
        let now_ts = self.timestamp().await?;
        Ok(LeaseStatus {
            lease: Lease {
                id,
                ttl: Duration::from_millis(live.record.ttl_ms),
                expires_at_ts: live.expires_at_ts,
            },
            remaining: oracle_time_until(live.expires_at_ts, now_ts),
            keys: live.record.keys.into_iter().collect(),
        })
    }

    /// The ids of the live leases, in id order.
    pub async fn lease_list(&self) -> Result<Vec<LeaseId>, Error> {
        let range = KeyRange::prefix(LEASE_KEY_PREFIX);
        let entries = self
            .scan_stream(&range, &ScanOptions::new().keys_only(true))
            .entries()
            .try_collect::<Vec<_>>()
            .await?;
        Ok(entries
            .iter()
            .filter_map(|entry| {
                let suffix = entry.key.strip_prefix(LEASE_KEY_PREFIX)?;
                std::str::from_utf8(suffix).ok()?.parse().ok()
            })
            .collect())
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
        let request_order: Vec<Vec<u8>> = entries.iter().map(|(key, _)| key.clone()).collect();
        let writes = entries
            .into_iter()
            .map(|(key, value)| (key, AttachWrite::Put(value)))
            .collect();
        let Attached::Written { versions, .. } = self.attach(id, writes).await? else {
            return Err(Error::InvalidResponse("a put found its key taken".into()));
        };
        // `attach` answers in key order.
        let mut key_order = request_order.clone();
        key_order.sort();
        let by_key: std::collections::BTreeMap<Vec<u8>, u64> = key_order.into_iter().zip(versions).collect();
        Ok(request_order
            .iter()
            .map(|key| by_key.get(key).copied().unwrap_or(0))
            .collect())
    }

    /// Writes each key with lease `id`'s deadline, then adds them to the lease's record (see
    /// the module docs); deletes them again when the lease is gone by then.
    pub(crate) async fn attach(
        &self,
        id: LeaseId,
        writes: Vec<(Vec<u8>, AttachWrite)>,
    ) -> Result<Attached, Error> {
        let keys: BTreeSet<Vec<u8>> = writes.iter().map(|(key, _)| key.clone()).collect();
        if keys.len() != writes.len() {
            return Err(Error::InvalidArgument(
                "a key given twice to attach to a lease".into(),
            ));
        }
        if keys.iter().any(|key| key.starts_with(LEASE_KEY_PREFIX)) {
            return Err(Error::InvalidArgument(
                "keys under __ringkv/lease/ are lease records: they cannot be attached to a lease".into(),
            ));
        }
        // The versions written and the deadline they were written with.
        let mut written: Option<(Vec<u64>, u64)> = None;
        for _ in 0..MAX_RECORD_RACES {
            let Some(live) = self.live_record(id).await? else {
                if let Some((versions, _)) = &written {
                    // The lease ended between the writes and the record: undo the writes.
                    self.undo_writes(&keys, versions).await?;
                }
                return Err(lease_not_found(id));
            };
            let after = live.record.keys.union(&keys).count();
            if after > MAX_KEYS_PER_LEASE {
                return Err(Error::InvalidArgument(format!(
                    "lease {id} would hold {after} keys; a lease holds at most {MAX_KEYS_PER_LEASE} (MAX_KEYS_PER_LEASE)"
                )));
            }
            let deadline = live.expires_at_ts;
            let versions = match written.take() {
                None => match self.write_attached(&writes, deadline).await? {
                    Some(versions) => versions,
                    None => return Ok(Attached::Taken),
                },
                // A keep-alive moved the deadline since the writes: follow it.
                Some((versions, written_at)) if written_at != deadline => {
                    let refreshed: Vec<Option<u64>> = stream::iter(keys.iter().cloned())
                        .map(|key| async move { self.expire_at(&key, deadline).await })
                        .buffered(KEY_WRITE_CONCURRENCY)
                        .try_collect()
                        .await?;
                    refreshed
                        .into_iter()
                        .zip(versions)
                        .map(|(refreshed, version)| refreshed.unwrap_or(version))
                        .collect()
                }
                Some((versions, _)) => versions,
            };
            written = Some((versions.clone(), deadline));
            let mut record = live.record.clone();
            record.keys.extend(keys.iter().cloned());
            if record == live.record {
                return Ok(Attached::Written {
                    versions,
                    expires_at_ts: deadline,
                });
            }
            let outcome = self
                .compare_and_swap_expiring_at(&id.record_key(), live.version, Some(record.encode()), deadline)
                .await?;
            if outcome.is_swapped() {
                return Ok(Attached::Written {
                    versions,
                    expires_at_ts: deadline,
                });
            }
        }
        Err(Error::Unavailable(format!(
            "lease {id} kept changing under {MAX_RECORD_RACES} attach attempts"
        )))
    }

    /// Writes `writes` (keys in [`BTreeSet`] order) expiring at `deadline`; their versions,
    /// or `None` when a [`AttachWrite::Create`] found its key present (the others undone).
    async fn write_attached(
        &self,
        writes: &[(Vec<u8>, AttachWrite)],
        deadline: u64,
    ) -> Result<Option<Vec<u64>>, Error> {
        let mut sorted: Vec<(Vec<u8>, AttachWrite)> = writes.to_vec();
        sorted.sort_by(|left, right| left.0.cmp(&right.0));
        let outcomes: Vec<Option<u64>> = stream::iter(sorted.iter().cloned())
            .map(|(key, write)| async move {
                match write {
                    AttachWrite::Put(value) => Ok(Some(self.put_expiring_at(&key, value, deadline).await?)),
                    AttachWrite::Create(value) => {
                        match self
                            .compare_and_swap_expiring_at(&key, 0, Some(value), deadline)
                            .await?
                        {
                            CasOutcome::Swapped { new_version } => Ok(Some(new_version)),
                            CasOutcome::Mismatch { .. } => Ok::<_, Error>(None),
                        }
                    }
                }
            })
            .buffered(KEY_WRITE_CONCURRENCY)
            .try_collect()
            .await?;
        if outcomes.iter().all(Option::is_some) {
            return Ok(Some(outcomes.into_iter().flatten().collect()));
        }
        for ((key, _), outcome) in sorted.iter().zip(&outcomes) {
            if let Some(version) = outcome {
                self.compare_and_swap_expiring_at(key, *version, None, 0).await?;
            }
        }
        Ok(None)
    }

    /// Deletes `keys` if they still have the `versions` an attach wrote.
    async fn undo_writes(&self, keys: &BTreeSet<Vec<u8>>, versions: &[u64]) -> Result<(), Error> {
        let pairs: Vec<(Vec<u8>, u64)> = keys.iter().cloned().zip(versions.iter().copied()).collect();
        stream::iter(pairs)
            .map(|(key, version)| async move { self.compare_and_swap_expiring_at(&key, version, None, 0).await })
            .buffer_unordered(KEY_WRITE_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record decodes to what was encoded; anything else (another format, a truncated
    /// record, too many keys) is refused.
    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let record = LeaseRecord {
            ttl_ms: 5_000,
            keys: [b"a".to_vec(), b"lock/x".to_vec()].into_iter().collect(),
        };
        let bytes = record.encode();
        assert_eq!(LeaseRecord::decode(&bytes), Some(record));
        assert_eq!(LeaseRecord::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(LeaseRecord::decode(b"hello"), None);
        let mut too_many = RECORD_MAGIC.to_vec();
        too_many.extend_from_slice(&1_000u64.to_be_bytes());
        too_many.extend_from_slice(&(MAX_KEYS_PER_LEASE as u32 + 1).to_be_bytes());
        assert_eq!(LeaseRecord::decode(&too_many), None);
    }

    /// Lease ids are non-zero hex; TTLs are bounded both ways.
    #[test]
    fn ids_and_ttls_are_checked() {
        assert_eq!("00000000000000ff".parse::<LeaseId>().ok(), Some(LeaseId(255)));
        assert_eq!(LeaseId(255).to_string(), "00000000000000ff");
        assert!("0".parse::<LeaseId>().is_err());
        assert!("xyz".parse::<LeaseId>().is_err());
        assert!(checked_ttl_ms(Duration::ZERO).is_err());
        assert!(checked_ttl_ms(Duration::from_millis(MAX_LEASE_TTL_MS + 1)).is_err());
        assert_eq!(checked_ttl_ms(Duration::from_secs(2)).ok(), Some(2_000));
        assert_eq!(
            oracle_time_until(5 << LOGICAL_BITS, 2 << LOGICAL_BITS),
            Duration::from_millis(3)
        );
        assert_eq!(oracle_time_until(1, 2), Duration::ZERO);
    }
}
