//! The lease algorithm (described in the crate docs), on any [`LeaseStore`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::record::LeaseRecord;
use crate::store::{CasResult, LeaseStore};
use crate::{
    checked_ttl_ms, deadline_after, lease_not_found, oracle_time_until, AttachWrite, Attached, Lease,
    LeaseError, LeaseId, LeaseStatus, LEASE_KEY_PREFIX, MAX_KEYS_PER_LEASE, MAX_RECORD_RACES,
};

/// Attached keys written at once by a keep-alive, a revoke or an attach.
const KEY_WRITE_CONCURRENCY: usize = 64;

/// A lease record as read: its value, version and deadline.
struct LiveRecord {
    record: LeaseRecord,
    version: u64,
    expires_at_ts: u64,
}

/// Grants a lease of `ttl` (1 s to one day); it expires `ttl` after its record commits
/// unless kept alive.
pub async fn grant<S: LeaseStore>(store: &S, ttl: Duration) -> Result<Lease, S::Error> {
    let ttl_ms = checked_ttl_ms(ttl)?;
    let record = LeaseRecord {
        ttl_ms,
        keys: BTreeSet::new(),
    };
    // A random id colliding with a live lease is astronomically rare; the
    // compare-and-set on absence makes it a retry instead of a takeover.
    for _ in 0..MAX_RECORD_RACES {
        let id = LeaseId(rand::random::<u64>().max(1));
        if store
            .create_with_ttl(&id.record_key(), record.encode(), ttl)
            .await?
        {
            let Some(live) = live_record(store, id).await? else {
                return Err(lease_not_found(id).into());
            };
            return Ok(Lease {
                id,
                ttl,
                expires_at_ts: live.expires_at_ts,
            });
        }
    }
    Err(LeaseError::Unavailable("no free lease id found".into()).into())
}

/// Grants the lease of `request_id` ([`LeaseId::for_request`]) with `ttl`, or answers it
/// when its record is already there: an earlier attempt of the same request granted it.
/// So a grant retried after a lost answer answers the lease it granted, never a second
/// one. A lease revoked (or expired) before the retry is granted again, with the same id
/// and no keys. INVALID_ARGUMENT when the record there has another TTL: the request id was
/// used for another grant.
pub async fn grant_for_request<S: LeaseStore>(
    store: &S,
    request_id: &[u8],
    ttl: Duration,
) -> Result<Lease, S::Error> {
    let ttl_ms = checked_ttl_ms(ttl)?;
    let id = LeaseId::for_request(request_id);
    let record = LeaseRecord {
        ttl_ms,
        keys: BTreeSet::new(),
    };
    for _ in 0..MAX_RECORD_RACES {
        // Created now, or already there: either way the lease is the record read next.
        store
            .create_with_ttl(&id.record_key(), record.encode(), ttl)
            .await?;
        let Some(live) = live_record(store, id).await? else {
            // Revoked or expired between the create and the read: create it again.
            continue;
        };
        if live.record.ttl_ms != ttl_ms {
            return Err(LeaseError::InvalidArgument(format!(
                "lease {id} of this request id was granted with a TTL of {} ms, not {ttl_ms} ms: \
                 a request id names one grant",
                live.record.ttl_ms
            ))
            .into());
        }
        return Ok(Lease {
            id,
            ttl,
            expires_at_ts: live.expires_at_ts,
        });
    }
    Err(LeaseError::Unavailable(format!("lease {id} kept vanishing as it was granted")).into())
}

/// The lease's record, or `None` when it expired or was revoked.
async fn live_record<S: LeaseStore>(store: &S, id: LeaseId) -> Result<Option<LiveRecord>, S::Error> {
    let Some(found) = store.get_expiring(&id.record_key()).await? else {
        return Ok(None);
    };
    let Some(record) = LeaseRecord::decode(&found.value) else {
        return Err(LeaseError::CorruptRecord(format!(
            "the record of lease {id} is not a lease record (written by something else?)"
        ))
        .into());
    };
    Ok(Some(LiveRecord {
        record,
        version: found.version,
        expires_at_ts: found.expires_at_ts.unwrap_or(u64::MAX),
    }))
}

/// Extends the lease once: its deadline and every attached key's become a fresh oracle
/// timestamp plus its TTL. NOT_FOUND once it expired or was revoked.
pub async fn keep_alive_once<S: LeaseStore>(store: &S, id: LeaseId) -> Result<Lease, S::Error> {
    for _ in 0..MAX_RECORD_RACES {
        let Some(live) = live_record(store, id).await? else {
            return Err(lease_not_found(id).into());
        };
        let deadline = deadline_after(store.timestamp().await?, live.record.ttl_ms);
        let refreshed: Vec<(Vec<u8>, bool)> = stream::iter(live.record.keys.iter().cloned())
            .map(|key| async move {
                let attached = move_attached_key(store, &key, Some(deadline)).await?;
                Ok::<_, S::Error>((key, attached))
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
        let outcome = store
            .compare_and_swap_expiring_at(&id.record_key(), live.version, Some(record.encode()), deadline)
            .await?;
        match outcome {
            CasResult::Swapped { .. } => {
                return Ok(Lease {
                    id,
                    ttl: Duration::from_millis(record.ttl_ms),
                    expires_at_ts: deadline,
                })
            }
            CasResult::Mismatch { present: false } => return Err(lease_not_found(id).into()),
            CasResult::Mismatch { present: true } => continue,
        }
    }
    Err(LeaseError::Unavailable(format!(
        "lease {id} kept changing under {MAX_RECORD_RACES} keep-alive attempts"
    ))
    .into())
}

/// Revokes the lease: deletes every attached key, then the lease. Answers how many
/// attached keys existed. NOT_FOUND when the lease expired or was revoked already.
pub async fn revoke<S: LeaseStore>(store: &S, id: LeaseId) -> Result<u64, S::Error> {
    let mut deleted = 0;
    for _ in 0..MAX_RECORD_RACES {
        let Some(live) = live_record(store, id).await? else {
            return Err(lease_not_found(id).into());
        };
        let existed: Vec<bool> = stream::iter(live.record.keys.iter().cloned())
            .map(|key| async move { move_attached_key(store, &key, None).await })
            .buffer_unordered(KEY_WRITE_CONCURRENCY)
            .try_collect()
            .await?;
        deleted += existed.into_iter().filter(|existed| *existed).count() as u64;
        match store
            .compare_and_swap_expiring_at(&id.record_key(), live.version, None, 0)
            .await?
        {
            // Expired meanwhile: its keys are gone either way.
            CasResult::Swapped { .. } | CasResult::Mismatch { present: false } => return Ok(deleted),
            CasResult::Mismatch { present: true } => continue,
        }
    }
    Err(LeaseError::Unavailable(format!(
        "lease {id} kept changing under {MAX_RECORD_RACES} revoke attempts"
    ))
    .into())
}

/// Moves attached `key` to `deadline`, keeping its value, or deletes it (`None`), by
/// compare-and-set on the version read: answers whether the key was still attached (present
/// with an expiry). A key present without one was written since without the lease
/// (detached) and is left alone.
async fn move_attached_key<S: LeaseStore>(
    store: &S,
    key: &[u8],
    deadline: Option<u64>,
) -> Result<bool, S::Error> {
    for _ in 0..MAX_RECORD_RACES {
        let Some(found) = store.get_expiring(key).await? else {
            return Ok(false);
        };
        if found.expires_at_ts.is_none() {
            return Ok(false);
        }
        let outcome = match deadline {
            Some(deadline) => {
                store
                    .compare_and_swap_expiring_at(key, found.version, Some(found.value), deadline)
                    .await?
            }
            None => {
                store
                    .compare_and_swap_expiring_at(key, found.version, None, 0)
                    .await?
            }
        };
        match outcome {
            CasResult::Swapped { .. } => return Ok(true),
            CasResult::Mismatch { present: false } => return Ok(false),
            // Written meanwhile: look at it again.
            CasResult::Mismatch { present: true } => continue,
        }
    }
    Err(LeaseError::Unavailable(format!(
        "key {} kept changing under {MAX_RECORD_RACES} attempts to move it with its lease",
        String::from_utf8_lossy(key)
    ))
    .into())
}

/// The lease's TTL, the oracle time it has left and its attached keys.
pub async fn time_to_live<S: LeaseStore>(store: &S, id: LeaseId) -> Result<LeaseStatus, S::Error> {
    let Some(live) = live_record(store, id).await? else {
        return Err(lease_not_found(id).into());
    };
    let now_ts = store.timestamp().await?;
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
pub async fn list<S: LeaseStore>(store: &S) -> Result<Vec<LeaseId>, S::Error> {
    let keys = store.lease_record_keys().await?;
    Ok(keys
        .iter()
        .filter_map(|key| LeaseId::of_record_key(key))
        .collect())
}

/// Stores each `(key, value)` (keys distinct) attached to lease `id`: the keys vanish when
/// the lease expires or is revoked. Written concurrently and added to the lease's record
/// in one step; their versions, in the order given. NOT_FOUND when the lease is gone;
/// INVALID_ARGUMENT when it would hold more than [`MAX_KEYS_PER_LEASE`] keys (checked
/// before anything is written).
pub async fn put_many_with_lease<S: LeaseStore>(
    store: &S,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    id: LeaseId,
) -> Result<Vec<u64>, S::Error> {
    let request_order: Vec<Vec<u8>> = entries.iter().map(|(key, _)| key.clone()).collect();
    let writes = entries
        .into_iter()
        .map(|(key, value)| (key, AttachWrite::Put(value)))
        .collect();
    let Attached::Written { versions, .. } = attach(store, id, writes).await? else {
        return Err(LeaseError::Unavailable("a put found its key taken".into()).into());
    };
    // `attach` answers in key order.
    let mut key_order = request_order.clone();
    key_order.sort();
    let by_key: BTreeMap<Vec<u8>, u64> = key_order.into_iter().zip(versions).collect();
    Ok(request_order
        .iter()
        .map(|key| by_key.get(key).copied().unwrap_or(0))
        .collect())
}

/// Writes each key with lease `id`'s deadline, then adds them to the lease's record (see
/// the crate docs); deletes them again when the lease is gone by then.
pub async fn attach<S: LeaseStore>(
    store: &S,
    id: LeaseId,
    writes: Vec<(Vec<u8>, AttachWrite)>,
) -> Result<Attached, S::Error> {
    let keys: BTreeSet<Vec<u8>> = writes.iter().map(|(key, _)| key.clone()).collect();
    if keys.len() != writes.len() {
        return Err(LeaseError::InvalidArgument("a key given twice to attach to a lease".into()).into());
    }
    if keys.iter().any(|key| key.starts_with(LEASE_KEY_PREFIX)) {
        return Err(LeaseError::InvalidArgument(
            "keys under __ringkv/lease/ are lease records: they cannot be attached to a lease".into(),
        )
        .into());
    }
    // The versions written and the deadline they were written with.
    let mut written: Option<(Vec<u64>, u64)> = None;
    for _ in 0..MAX_RECORD_RACES {
        let Some(live) = live_record(store, id).await? else {
            if let Some((versions, _)) = &written {
                // The lease ended between the writes and the record: undo the writes.
                undo_writes(store, &keys, versions).await?;
            }
            return Err(lease_not_found(id).into());
        };
        let after = live.record.keys.union(&keys).count();
        if after > MAX_KEYS_PER_LEASE {
            return Err(LeaseError::InvalidArgument(format!(
                "lease {id} would hold {after} keys; a lease holds at most {MAX_KEYS_PER_LEASE} (MAX_KEYS_PER_LEASE)"
            ))
            .into());
        }
        let deadline = live.expires_at_ts;
        let versions = match written.take() {
            None => match write_attached(store, &writes, deadline).await? {
                Some(versions) => versions,
                None => return Ok(Attached::Taken),
            },
            // A keep-alive moved the deadline since the writes: follow it.
            Some((versions, written_at)) if written_at != deadline => {
                let refreshed: Vec<Option<u64>> = stream::iter(keys.iter().cloned())
                    .map(|key| async move { store.expire_at(&key, deadline).await })
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
        let outcome = store
            .compare_and_swap_expiring_at(&id.record_key(), live.version, Some(record.encode()), deadline)
            .await?;
        if outcome.is_swapped() {
            return Ok(Attached::Written {
                versions,
                expires_at_ts: deadline,
            });
        }
    }
    Err(LeaseError::Unavailable(format!(
        "lease {id} kept changing under {MAX_RECORD_RACES} attach attempts"
    ))
    .into())
}

/// Writes `writes` (keys in [`BTreeSet`] order) expiring at `deadline`; their versions, or
/// `None` when a [`AttachWrite::Create`] found its key present (the others undone).
async fn write_attached<S: LeaseStore>(
    store: &S,
    writes: &[(Vec<u8>, AttachWrite)],
    deadline: u64,
) -> Result<Option<Vec<u64>>, S::Error> {
    let mut sorted: Vec<(Vec<u8>, AttachWrite)> = writes.to_vec();
    sorted.sort_by(|left, right| left.0.cmp(&right.0));
    let outcomes: Vec<Option<u64>> = stream::iter(sorted.iter().cloned())
        .map(|(key, write)| async move {
            match write {
                AttachWrite::Put(value) => Ok(Some(store.put_expiring_at(&key, value, deadline).await?)),
                AttachWrite::Create(value) => {
                    match store
                        .compare_and_swap_expiring_at(&key, 0, Some(value), deadline)
                        .await?
                    {
                        CasResult::Swapped { new_version } => Ok(Some(new_version)),
                        CasResult::Mismatch { .. } => Ok::<_, S::Error>(None),
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
            store.compare_and_swap_expiring_at(key, *version, None, 0).await?;
        }
    }
    Ok(None)
}

/// Deletes `keys` if they still have the `versions` an attach wrote.
async fn undo_writes<S: LeaseStore>(
    store: &S,
    keys: &BTreeSet<Vec<u8>>,
    versions: &[u64],
) -> Result<(), S::Error> {
    let pairs: Vec<(Vec<u8>, u64)> = keys.iter().cloned().zip(versions.iter().copied()).collect();
    stream::iter(pairs)
        .map(|(key, version)| async move { store.compare_and_swap_expiring_at(&key, version, None, 0).await })
        .buffer_unordered(KEY_WRITE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}
