//! Scatter-gather for batches, without IO: group a batch's items by shard, derive each
//! shard's sub-request id, match a node's results to the requested keys, and reassemble
//! per-shard outcomes in request order (or one error naming every failed shard).

use std::collections::{BTreeMap, HashMap};

use ringkv_proto::v1::KeyValueResult;
use ringkv_ring::ShardId;
use siphasher::sip128::SipHasher24;

use crate::error::{BatchFailure, RequestId, RouterError};

/// SipHash keys of the sub-request id derivation: ASCII `"ringkv-b"` and `"atch-sub"`.
/// Changing them would break de-duplication of batches retried across a router upgrade.
const SUB_ID_KEY_0: u64 = u64::from_be_bytes(*b"ringkv-b");
const SUB_ID_KEY_1: u64 = u64::from_be_bytes(*b"atch-sub");

/// The items of a batch that belong to one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardGroup {
    pub shard: ShardId,
    /// Positions in the request, ascending.
    pub indices: Vec<usize>,
}

/// Groups items by shard; groups are sorted by shard id, indices keep request order.
pub fn group_by_shard<T>(items: &[T], shard_of: impl Fn(&T) -> ShardId) -> Vec<ShardGroup> {
    let mut groups: BTreeMap<ShardId, Vec<usize>> = BTreeMap::new();
    for (index, item) in items.iter().enumerate() {
        groups.entry(shard_of(item)).or_default().push(index);
    }
    groups
        .into_iter()
        .map(|(shard, indices)| ShardGroup { shard, indices })
        .collect()
}

/// The request id of a batch's sub-request to one shard: the 128-bit SipHash-2-4 of
/// `(request_id, shard_id)`. Deterministic, so a retried batch de-duplicates per shard;
/// keyed and mixed, so structured client ids (counters) do not collide with each other.
pub fn sub_request_id(request_id: &RequestId, shard: ShardId) -> RequestId {
    let mut input = [0u8; 20];
    input[..16].copy_from_slice(request_id);
    input[16..].copy_from_slice(&shard.0.to_be_bytes());
    SipHasher24::new_with_keys(SUB_ID_KEY_0, SUB_ID_KEY_1)
        .hash(&input)
        .as_bytes()
}

/// The request id of chunk `chunk` of a shard's part of a delete-range: the sub-request id
/// of the shard, hashed again with the chunk number. A retried delete-range replays the
/// same chunk ids, so chunks that were applied return their first outcome.
pub fn chunk_request_id(request_id: &RequestId, shard: ShardId, chunk: u64) -> RequestId {
    let sub = sub_request_id(request_id, shard);
    let mut input = [0u8; 24];
    input[..16].copy_from_slice(&sub);
    input[16..].copy_from_slice(&chunk.to_be_bytes());
    SipHasher24::new_with_keys(SUB_ID_KEY_0, SUB_ID_KEY_1)
        .hash(&input)
        .as_bytes()
}

/// Matches a node's read results to the keys asked for, in the order asked.
pub fn match_read_results(
    keys: &[&[u8]],
    results: Vec<KeyValueResult>,
) -> Result<Vec<KeyValueResult>, String> {
    let positional = results.len() == keys.len()
        && results
            .iter()
            .zip(keys)
            .all(|(result, key)| result.key.as_slice() == *key);
    if positional {
        return Ok(results);
    }
    let by_key: HashMap<&[u8], &KeyValueResult> = results
        .iter()
        .map(|result| (result.key.as_slice(), result))
        .collect();
    keys.iter()
        .map(|key| {
            by_key
                .get(key)
                .map(|result| (*result).clone())
                .ok_or_else(|| format!("no result for a requested key ({} bytes)", key.len()))
        })
        .collect()
}

/// Collects per-shard outcomes of a batch into request order.
#[derive(Debug)]
pub struct Assembly<T> {
    slots: Vec<Option<T>>,
    total_shards: usize,
    failures: Vec<(ShardId, RouterError)>,
}

impl<T> Assembly<T> {
    /// An assembly for a batch of `len` items spread over `total_shards` shards.
    pub fn new(len: usize, total_shards: usize) -> Self {
        let mut slots = Vec::with_capacity(len);
        slots.resize_with(len, || None);
        Assembly {
            slots,
            total_shards,
            failures: Vec::new(),
        }
    }

    /// Places a shard's values at its items' positions.
    pub fn fill(&mut self, group: &ShardGroup, values: Vec<T>) -> Result<(), String> {
        if values.len() != group.indices.len() {
            return Err(format!(
                "{} results for {} items",
                values.len(),
                group.indices.len()
            ));
        }
        for (index, value) in group.indices.iter().zip(values) {
            match self.slots.get_mut(*index) {
                Some(slot) => *slot = Some(value),
                None => return Err(format!("item index {index} out of range")),
            }
        }
        Ok(())
    }

    /// Records a failed shard.
    pub fn fail(&mut self, shard: ShardId, err: RouterError) {
        self.failures.push((shard, err));
    }

    /// The values in request order, or the failure of every shard that failed: a single
    /// shard's error as is when the batch touched one shard, else a batch failure naming
    /// the failed shards.
    pub fn finish(self) -> Result<Vec<T>, RouterError> {
        if !self.failures.is_empty() {
            return Err(batch_error(self.total_shards, self.failures));
        }
        let len = self.slots.len();
        let values: Vec<T> = self.slots.into_iter().flatten().collect();
        if values.len() != len {
            return Err(RouterError::Internal(format!(
                "{} of {len} batch items have no result",
                len - values.len()
            )));
        }
        Ok(values)
    }

    /// [`Assembly::finish`] for a write: when some shards failed after others applied
    /// their part, the batch failure is marked partly applied (outcome unknown).
    pub fn finish_write(self) -> Result<Vec<T>, RouterError> {
        let applied_shards = self.total_shards.saturating_sub(self.failures.len());
        self.finish().map_err(|err| match err {
            RouterError::BatchFailed(mut batch) => {
                batch.partly_applied = applied_shards > 0;
                RouterError::BatchFailed(batch)
            }
            other => other,
        })
    }
}

/// The error of a batch over `total_shards` shards whose `failures` failed: a single
/// shard's error as is when the batch touched one shard, else a batch failure naming the
/// failed shards.
pub fn batch_error(total_shards: usize, mut failures: Vec<(ShardId, RouterError)>) -> RouterError {
    failures.sort_by_key(|(shard, _)| *shard);
    if total_shards == 1 && failures.len() == 1 {
        if let Some((_, err)) = failures.pop() {
            return err;
        }
    }
    RouterError::BatchFailed(BatchFailure {
        operation: "batch",
        total_shards,
        failures,
        partly_applied: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(key: &[u8], version: u64) -> KeyValueResult {
        KeyValueResult {
            expires_at_ts: 0,
            key: key.to_vec(),
            found: version != 0,
            value: key.to_vec(),
            version,
        }
    }

    /// Items are grouped by shard, groups sorted, indices in request order.
    #[test]
    fn groups_by_shard() {
        let items = [5u32, 1, 5, 3, 1];
        let groups = group_by_shard(&items, |item| ShardId(*item));
        assert_eq!(
            groups,
            vec![
                ShardGroup {
                    shard: ShardId(1),
                    indices: vec![1, 4]
                },
                ShardGroup {
                    shard: ShardId(3),
                    indices: vec![3]
                },
                ShardGroup {
                    shard: ShardId(5),
                    indices: vec![0, 2]
                },
            ]
        );
        assert!(group_by_shard::<u32>(&[], |_| ShardId(0)).is_empty());
    }

    /// Sub-request ids are deterministic, differ per shard and per request.
    #[test]
    fn sub_request_ids_are_deterministic_and_distinct() {
        let id = [1u8; 16];
        assert_eq!(sub_request_id(&id, ShardId(3)), sub_request_id(&id, ShardId(3)));
        assert_ne!(sub_request_id(&id, ShardId(3)), sub_request_id(&id, ShardId(4)));
        assert_ne!(
            sub_request_id(&id, ShardId(3)),
            sub_request_id(&[2u8; 16], ShardId(3))
        );
        assert_ne!(sub_request_id(&id, ShardId(0)), id);
        // Counter-like ids do not collide across shards the way an xor would.
        let mut next = id;
        next[15] ^= 1;
        assert_ne!(sub_request_id(&id, ShardId(1)), sub_request_id(&next, ShardId(0)));
    }

    /// Chunk ids are deterministic and distinct per chunk and shard.
    #[test]
    fn chunk_request_ids_are_deterministic_and_distinct() {
        let id = [7u8; 16];
        assert_eq!(
            chunk_request_id(&id, ShardId(1), 0),
            chunk_request_id(&id, ShardId(1), 0)
        );
        assert_ne!(
            chunk_request_id(&id, ShardId(1), 0),
            chunk_request_id(&id, ShardId(1), 1)
        );
        assert_ne!(
            chunk_request_id(&id, ShardId(1), 0),
            chunk_request_id(&id, ShardId(2), 0)
        );
        assert_ne!(
            chunk_request_id(&id, ShardId(1), 0),
            sub_request_id(&id, ShardId(1))
        );
    }

    /// Read results match keys by position or, failing that, by key; missing keys fail.
    #[test]
    fn read_results_match_keys() {
        let keys: [&[u8]; 3] = [b"a", b"b", b"a"];
        let in_order = vec![result(b"a", 1), result(b"b", 2), result(b"a", 1)];
        assert_eq!(match_read_results(&keys, in_order.clone()), Ok(in_order));

        let shuffled = vec![result(b"b", 2), result(b"a", 1)];
        let matched = match_read_results(&keys, shuffled);
        let versions: Option<Vec<u64>> = matched
            .ok()
            .map(|results| results.iter().map(|r| r.version).collect());
        assert_eq!(versions, Some(vec![1, 2, 1]));

        assert!(match_read_results(&keys, vec![result(b"a", 1)]).is_err());
    }

    /// Values from several shards come back in request order.
    #[test]
    fn assembly_restores_request_order() {
        let items = ["x0", "y1", "x2", "z3"];
        let groups = group_by_shard(&items, |item| ShardId(u32::from(item.as_bytes()[0])));
        let mut assembly = Assembly::new(items.len(), groups.len());
        for group in &groups {
            let values = group.indices.iter().map(|i| items[*i].to_string()).collect();
            assert!(assembly.fill(group, values).is_ok());
        }
        assert_eq!(
            assembly.finish().ok(),
            Some(vec!["x0".into(), "y1".into(), "x2".into(), "z3".into()])
        );

        let mut short = Assembly::<u64>::new(2, 1);
        let group = ShardGroup {
            shard: ShardId(0),
            indices: vec![0, 1],
        };
        assert!(short.fill(&group, vec![1]).is_err());
    }

    /// One failed shard of several fails the whole batch, naming the shard.
    #[test]
    fn assembly_names_failed_shards() {
        let mut assembly = Assembly::<u64>::new(3, 2);
        let ok_group = ShardGroup {
            shard: ShardId(1),
            indices: vec![0, 2],
        };
        assert!(assembly.fill(&ok_group, vec![10, 12]).is_ok());
        assembly.fail(ShardId(7), RouterError::NoCluster);
        match assembly.finish() {
            Err(RouterError::BatchFailed(batch)) => {
                assert_eq!(batch.total_shards, 2);
                assert_eq!(batch.failures.len(), 1);
                assert_eq!(batch.failures[0].0, ShardId(7));
            }
            other => panic!("expected a batch failure, got {other:?}"),
        }

        let mut single = Assembly::<u64>::new(1, 1);
        single.fail(ShardId(2), RouterError::NoCluster);
        assert!(matches!(single.finish(), Err(RouterError::NoCluster)));
    }

    /// A write whose shards failed after others applied their part is partly applied
    /// (outcome unknown); one whose every shard failed is not.
    #[test]
    fn a_write_failing_after_other_shards_applied_is_partly_applied() {
        let unavailable = |shard| RouterError::ShardUnavailable {
            shard: ShardId(shard),
            attempts: 3,
            last_error: "no leader".into(),
        };
        let mut partial = Assembly::<u64>::new(3, 2);
        let applied = ShardGroup {
            shard: ShardId(1),
            indices: vec![0, 2],
        };
        assert!(partial.fill(&applied, vec![10, 12]).is_ok());
        partial.fail(ShardId(7), unavailable(7));
        match partial.finish_write() {
            Err(err @ RouterError::BatchFailed(_)) => assert!(err.is_outcome_unknown(), "{err}"),
            other => panic!("expected a batch failure, got {other:?}"),
        }

        let mut none_applied = Assembly::<u64>::new(2, 2);
        none_applied.fail(ShardId(1), unavailable(1));
        none_applied.fail(ShardId(7), unavailable(7));
        match none_applied.finish_write() {
            Err(err @ RouterError::BatchFailed(_)) => assert!(!err.is_outcome_unknown(), "{err}"),
            other => panic!("expected a batch failure, got {other:?}"),
        }
    }
}
