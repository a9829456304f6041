//! The batch workload: batches over small groups of keys, checked atomic per shard
//! ([`crate::checker::batch`]).
//!
//! Each group's keys are picked by shard: even groups put all [`GROUP_KEYS`] keys on one
//! shard, odd ones half on one shard and half on another (a cross-shard batch, atomic on
//! each shard's part only). A write is one `batch_write` giving every key of a group the
//! same value, unique in the run (or deleting every key of it); a read takes every key of
//! a group together, at a fresh timestamp of the oracle or — while the group's values fit
//! in one reply, so that each shard answers its keys under one lock — linearizably in one
//! call. A read that pages (values over the reply budget) is only one snapshot at a
//! timestamp, so large values are always read at one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{Client, Mutation, ReadConsistency};
use tokio_util::sync::CancellationToken;

use crate::history::{OpType, OpValue, Process, Recorder, F};
use crate::workload::{complete_err, complete_ok, completion_for, encode_value, parse_value};

/// Keys per group.
pub const GROUP_KEYS: usize = 4;

/// Groups in the run.
pub const GROUPS: u64 = 8;

/// Largest value a batch writes per key: a group's batch stays well under the request and
/// reply limits whatever `--value-bytes` asks for.
pub(crate) const MAX_VALUE_BYTES: usize = 512 * 1024;

/// Largest group (all its values) read linearizably in one call; larger ones are read at
/// a timestamp (a linearizable read that pages is not one read per shard).
const MAX_LINEARIZABLE_GROUP_BYTES: usize = 1024 * 1024;

/// One group: its keys and the shard of each.
#[derive(Debug, Clone)]
struct Group {
    keys: Vec<Vec<u8>>,
    shards: Vec<u32>,
}

/// Shared state of the batch workload.
pub struct BatchShared {
    groups: Vec<Group>,
    value_bytes: usize,
    next_value: AtomicU64,
}

impl BatchShared {
    /// Groups laid out over `shards` shards (the key-to-shard map depends on the shard count
    /// only); values padded to `value_bytes` (at most 512 KiB).
    pub fn new(shards: u32, value_bytes: usize) -> Arc<BatchShared> {
        let shards = shards.max(1);
        let groups = (0..GROUPS)
            .map(|group| {
                let first = (group / 2) as u32 % shards;
                let second = (first + 1) % shards;
                let wanted: Vec<u32> = if group % 2 == 0 {
                    vec![first; GROUP_KEYS]
                } else {
                    (0..GROUP_KEYS)
                        .map(|j| if j < GROUP_KEYS / 2 { first } else { second })
                        .collect()
                };
                group_on(group, &wanted, shards)
            })
            .collect();
        Arc::new(BatchShared {
            groups,
            value_bytes: value_bytes.min(MAX_VALUE_BYTES),
            next_value: AtomicU64::new(1),
        })
    }
}

/// The key `jepsen/batch/<group>/<n>`.
fn batch_key(group: u64, n: u64) -> Vec<u8> {
    format!("jepsen/batch/{group}/{n}").into_bytes()
}

fn shard_of(key: &[u8], shards: u32) -> u32 {
    ringkv_ring::shard::shard_of_hash(ringkv_ring::key_hash(key), shards).0
}

/// Group `group` with key `j` on shard `wanted[j]`: the first keys `jepsen/batch/<group>/<n>`
/// that land there (a key lands on a shard with probability 1/shards, so a few hundred
/// tries are plenty; past the bound a key goes wherever it lands, which the reads record).
fn group_on(group: u64, wanted: &[u32], shards: u32) -> Group {
    let mut keys: Vec<Option<(Vec<u8>, u32)>> = vec![None; wanted.len()];
    let mut n = 0u64;
    while keys.iter().any(Option::is_none) && n < 100_000 {
        let key = batch_key(group, n);
        let shard = shard_of(&key, shards);
        if let Some(slot) = keys
            .iter_mut()
            .zip(wanted)
            .find(|(slot, wanted_shard)| slot.is_none() && **wanted_shard == shard)
            .map(|(slot, _)| slot)
        {
            *slot = Some((key, shard));
        }
        n += 1;
    }
    let (keys, shards): (Vec<Vec<u8>>, Vec<u32>) = keys
        .into_iter()
        .zip(n..)
        .map(|(slot, spare)| {
            slot.unwrap_or_else(|| {
                let key = batch_key(group, spare);
                let shard = shard_of(&key, shards);
                (key, shard)
            })
        })
        .unzip();
    Group { keys, shards }
}

/// One batch client process: half batch writes (one in six deleting the group), half reads
/// of a whole group.
pub async fn batch_client(
    process: u64,
    client: Client,
    shared: Arc<BatchShared>,
    recorder: Recorder,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.is_cancelled() {
        let group_id = rng.random_range(0..GROUPS);
        let group = &shared.groups[group_id as usize];
        if rng.random_bool(0.5) {
            let value =
                (!rng.random_bool(1.0 / 6.0)).then(|| shared.next_value.fetch_add(1, Ordering::Relaxed));
            let op = recorder.invoke(
                Process::Client(process),
                F::BatchWrite,
                OpValue::Register { key: group_id, value },
            );
            let mutations = group.keys.iter().map(|key| match value {
                Some(value) => Mutation::put(key, encode_value(value, shared.value_bytes)),
                None => Mutation::delete(key),
            });
            match client.batch_write(mutations).await {
                Ok(_) => complete_ok(&recorder, &op),
                Err(err) => complete_err(&recorder, &op, completion_for(&err), err.to_string()),
            }
        } else {
            let fits = shared.value_bytes.max(32) * GROUP_KEYS <= MAX_LINEARIZABLE_GROUP_BYTES;
            let at_timestamp = !fits || rng.random_bool(0.5);
            let invoked = OpValue::GroupRead {
                group: group_id,
                shards: group.shards.clone(),
                ts: None,
                values: None,
            };
            let op = recorder.invoke(Process::Client(process), F::BatchRead, invoked);
            match read_group(&client, group, at_timestamp).await {
                Ok((ts, values)) => {
                    let value = OpValue::GroupRead {
                        group: group_id,
                        shards: group.shards.clone(),
                        ts,
                        values: Some(values),
                    };
                    let _ = recorder.complete(&op, OpType::Ok, value, None);
                }
                // A failed read changed nothing.
                Err(err) => complete_err(&recorder, &op, OpType::Fail, err),
            }
        }
    }
}

/// Reads every key of `group` in one `batch_get`: at a fresh timestamp of the oracle (which
/// it returns), or linearizably.
async fn read_group(
    client: &Client,
    group: &Group,
    at_timestamp: bool,
) -> Result<(Option<u64>, Vec<Option<u64>>), String> {
    let ts = if at_timestamp {
        Some(client.timestamp().await.map_err(|err| err.to_string())?)
    } else {
        None
    };
    let consistency = ts.map_or(ReadConsistency::Linearizable, ReadConsistency::At);
    let found = client
        .batch_get_with(&group.keys, consistency)
        .await
        .map_err(|err| err.to_string())?;
    if found.len() != group.keys.len() {
        return Err(format!("{} results for {} keys", found.len(), group.keys.len()));
    }
    let values = found
        .iter()
        .map(|versioned| versioned.as_ref().map(|versioned| parse_value(&versioned.value)))
        .collect();
    Ok((ts, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Even groups sit on one shard, odd ones on two; the recorded shards are the keys' own.
    #[test]
    fn groups_are_laid_out_by_shard() {
        let shared = BatchShared::new(4, 0);
        for (id, group) in shared.groups.iter().enumerate() {
            let distinct: std::collections::BTreeSet<u32> = group.shards.iter().copied().collect();
            assert_eq!(
                distinct.len(),
                if id % 2 == 0 { 1 } else { 2 },
                "group {id}: {group:?}"
            );
            for (key, shard) in group.keys.iter().zip(&group.shards) {
                assert_eq!(shard_of(key, 4), *shard);
            }
        }
        let single = BatchShared::new(1, 0);
        assert!(single
            .groups
            .iter()
            .all(|group| group.shards.iter().all(|shard| *shard == 0)));
    }
}
