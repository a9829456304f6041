//! The older layouts of a de-duplication table (see [`super`]): the previous one, a record
//! per request id and a request list per entry, with records made before fingerprints
//! listed in the same lists; and the legacy one, a record per id and an expiry index. They
//! are read while a tree may hold any, and drained; nothing new is written in them.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{DedupPolicy, DedupTable, Found};
use crate::raft::decode;
use crate::raft::state_machine::fingerprint::Fingerprint;
use crate::raft::state_machine::layout::{request_key, split_expiry_key, split_list_key};
use crate::raft::types::RequestId;
use crate::storage::{prefix_bounds, Batch, StorageError, TreeRef};

/// Request lists of the previous layout pruned per entry and table for being older than
/// the window (the cap is enforced in full: it removes no more lists than needed).
const MAX_EXPIRED_LISTS_PER_ENTRY: usize = 8;

/// Legacy records removed per applied entry and table while they drain.
const MAX_LEGACY_PRUNE_PER_ENTRY: usize = 64;

/// A record of the previous layout: the command's fingerprint and its first outcome (`S`).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Record<S> {
    pub(super) fingerprint: Fingerprint,
    pub(super) result: S,
}

/// A request list of the previous layout: the shard's de-duplication clock once its entry
/// was applied (lists written before that clock existed hold the entry's own clock, the
/// latest `issued_at_ms` of its commands: the same encoding) and the ids it recorded.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RequestList {
    pub(super) clock_ms: u64,
    pub(super) ids: Vec<RequestId>,
}

/// A legacy record: postcard encodes a struct as its fields in order.
#[derive(Debug, Deserialize)]
struct LegacyRecord<R> {
    #[allow(dead_code)]
    expires_at_ms: u64,
    result: R,
}

impl<S: Serialize + DeserializeOwned, O: DeserializeOwned> DedupTable<S, O> {
    /// The record of `request_id` in an older layout, if it is still in `tree`.
    pub(super) fn lookup_older(
        &self,
        tree: &TreeRef,
        request_id: &RequestId,
    ) -> Result<Option<Found<S>>, StorageError> {
        if let Some(bytes) = tree.get(&request_key(self.prefixes.record, request_id))? {
            let record: Record<S> = decode(tree.name(), &bytes)?;
            return Ok(Some(Found::new(record.fingerprint, record.result)));
        }
        let unfingerprinted = match tree.get(&request_key(self.prefixes.unfingerprinted, request_id))? {
            Some(bytes) => Some(decode::<O>(tree.name(), &bytes)?),
            None => match tree.get(&request_key(self.prefixes.legacy_record, request_id))? {
                Some(bytes) => Some(decode::<LegacyRecord<O>>(tree.name(), &bytes)?.result),
                None => None,
            },
        };
        Ok(unfingerprinted.map(|result| Found {
            fingerprint: None,
            result: (self.upgrade)(result),
        }))
    }
}

impl<S, O> DedupTable<S, O> {
    /// Prunes the previous layout's request lists with their records (`older`: and the
    /// records made before fingerprints their ids may name), by the shard's clock
    /// `clock_ms` after the entry at `log_index`: a list goes once the window has passed it
    /// and the requests recorded after it (`count` records of this layout left, `newer`
    /// recorded in buckets) make up the last `min_records`, or for the cap. Returns the
    /// records of this layout left.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn prune_previous(
        &self,
        tree: &TreeRef,
        batch: &mut Batch,
        policy: &DedupPolicy,
        log_index: u64,
        clock_ms: u64,
        count: u64,
        newer: u64,
    ) -> Result<u64, StorageError> {
        // Of the bucketed records, at most `max_records` are remembered.
        let newer = newer.min(policy.max_records);
        if count + newer <= policy.min_records {
            return Ok(count);
        }
        let mut count = count;
        let (start, end) = prefix_bounds(&[self.prefixes.list]);
        let mut expired_lists = 0;
        for pair in tree.range(start, end) {
            let (key, value) = pair?;
            if split_list_key(&key).is_none_or(|index| index >= log_index) {
                break;
            }
            let list: RequestList = decode(tree.name(), &value)?;
            let left = count.saturating_sub(list.ids.len() as u64);
            let over_cap = count + newer > policy.max_records;
            let expired = left + newer >= policy.min_records
                && list.clock_ms.saturating_add(policy.window_ms) < clock_ms
                && expired_lists < MAX_EXPIRED_LISTS_PER_ENTRY;
            if !over_cap && !expired {
                break;
            }
            if !over_cap {
                expired_lists += 1;
            }
            for id in &list.ids {
                batch.remove(request_key(self.prefixes.record, id));
                batch.remove(request_key(self.prefixes.unfingerprinted, id));
            }
            batch.remove(key);
            count = left;
        }
        Ok(count)
    }

    /// Removes in `batch` (at most [`MAX_LEGACY_PRUNE_PER_ENTRY`]) legacy records that
    /// expired before `clock_ms` (their expiry was the proposer's wall clock plus the
    /// window; the shard's clock continues from its entries' clocks), oldest first. Returns
    /// whether any record of an older layout (legacy, previous, or made before
    /// fingerprints) may be left.
    pub(super) fn prune_older(
        &self,
        tree: &TreeRef,
        clock_ms: u64,
        batch: &mut Batch,
    ) -> Result<bool, StorageError> {
        // Records of the previous layout, and those made before fingerprints, go with their
        // request lists: any list still there? (One removed by this batch still counts,
        // until the next entry looks again.)
        let (start, end) = prefix_bounds(&[self.prefixes.list]);
        let previous_left = tree.range(start, end).next().transpose()?.is_some();
        let (start, end) = prefix_bounds(&[self.prefixes.legacy_index]);
        for (pruned, pair) in tree.range(start, end).enumerate() {
            let (key, _) = pair?;
            let Some((expires_at_ms, request_id)) = split_expiry_key(&key) else {
                return Ok(true);
            };
            if expires_at_ms >= clock_ms || pruned == MAX_LEGACY_PRUNE_PER_ENTRY {
                return Ok(true);
            }
            if let Some(request_id) = request_id {
                batch.remove(request_key(self.prefixes.legacy_record, &request_id));
            }
            batch.remove(key);
        }
        Ok(previous_left)
    }
}
