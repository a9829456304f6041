//! `Kv.BatchGet` within one reply's byte budget.
//!
//! The keys are grouped by shard and read in rounds: each round reads, from every shard with
//! keys still unread, as many of them as fit in that shard's share of the budget left
//! (`ShardReadRequest.max_bytes`; a node answers a prefix of the keys asked, at least one).
//! Rounds go on until every key is read or the budget is spent. Then the reply takes the
//! results in request order while they fit in the budget ([`Pages::finish`]): with
//! `allow_paging` the keys left out are named in `remaining` (the caller asks again for
//! them); without it, a batch that does not fit whole is refused (RESOURCE_EXHAUSTED), so a
//! caller that does not know about pages never takes a partial answer for a whole one.
//!
//! Router memory for one batch: the budget, plus at most one value per shard of a round
//! (the first key of a shard's read is answered whatever its size).

use futures::stream::{self, StreamExt};
use ringkv_proto::budget::{remaining_reserve_bytes, repeated_field_bytes};
use ringkv_proto::v1::{
    BatchGetRequest, BatchGetResponse, KeyValueResult, ShardReadRequest, ShardReadResponse,
};
use ringkv_ring::ShardId;
use tokio::time::Instant;

use crate::batch::{batch_error, group_by_shard, match_read_results, ShardGroup};
use crate::context::RouterContext;
use crate::error::RouterError;
use crate::node_api::NodeApi;
use crate::validate::{check_read_ts, check_read_uncommitted, parse_consistency};

/// The least bytes one shard's read of a round may fill (a share of a nearly spent budget
/// would take a round trip per key).
const MIN_SHARD_READ_BYTES: usize = 64 << 10;

/// A batch's keys as they are read, round after round, and the reply they make. No IO.
#[derive(Debug)]
pub struct Pages<'k> {
    keys: &'k [Vec<u8>],
    /// The result of each key read so far, by position in the request.
    slots: Vec<Option<KeyValueResult>>,
    /// Per shard, the positions of its keys not read yet, in request order.
    unread: Vec<ShardGroup>,
    /// Encoded bytes of the results read so far.
    read_bytes: usize,
    /// Encoded bytes the reply's results may hold.
    budget_bytes: usize,
}

impl<'k> Pages<'k> {
    /// The reads of `keys`, grouped by shard by `groups`, for a reply whose entries may hold
    /// `reply_budget_bytes` (what the positions of keys left out may need is set aside).
    pub fn new(keys: &'k [Vec<u8>], groups: Vec<ShardGroup>, reply_budget_bytes: usize) -> Pages<'k> {
        Pages {
            keys,
            slots: vec![None; keys.len()],
            unread: groups,
            read_bytes: 0,
            budget_bytes: reply_budget_bytes.saturating_sub(remaining_reserve_bytes(keys.len())),
        }
    }

    /// The reads of the next round: every shard with keys unread, with its share of the
    /// budget left. Empty when every key is read or the budget is spent.
    pub fn next_round(&self) -> Vec<(ShardGroup, usize)> {
        let shards = self
            .unread
            .iter()
            .filter(|group| !group.indices.is_empty())
            .count();
        if shards == 0 || self.read_bytes >= self.budget_bytes {
            return Vec::new();
        }
        let share = ((self.budget_bytes - self.read_bytes) / shards).max(MIN_SHARD_READ_BYTES);
        self.unread
            .iter()
            .filter(|group| !group.indices.is_empty())
            .map(|group| (group.clone(), share))
            .collect()
    }

    /// Takes a shard's answer to the read of `group`'s keys: results for all of them, or
    /// for a prefix of them (at least one) with `more`.
    pub fn accept(&mut self, group: &ShardGroup, response: ShardReadResponse) -> Result<(), String> {
        let asked: Vec<&[u8]> = group
            .indices
            .iter()
            .map(|index| self.keys[*index].as_slice())
            .collect();
        let results = if response.results.len() == asked.len() {
            match_read_results(&asked, response.results)?
        } else {
            if !response.more || response.results.is_empty() || response.results.len() > asked.len() {
                return Err(format!(
                    "{} results for {} keys (more: {})",
                    response.results.len(),
                    asked.len(),
                    response.more
                ));
            }
            if let Some((result, _)) = response.results.iter().zip(&asked).find(|(r, k)| r.key != **k) {
                return Err(format!(
                    "a partial read answered a key ({} bytes) out of request order",
                    result.key.len()
                ));
            }
            response.results
        };
        let answered = results.len();
        for (index, result) in group.indices.iter().zip(results) {
            self.read_bytes = self.read_bytes.saturating_add(repeated_field_bytes(&result));
            self.slots[*index] = Some(result);
        }
        if let Some(unread) = self.unread.iter_mut().find(|unread| unread.shard == group.shard) {
            unread.indices.drain(..answered.min(unread.indices.len()));
        }
        Ok(())
    }

    /// The reply: the results read, in request order, while they fit in the budget (at
    /// least one); the keys left out named in `remaining` when `allow_paging`, else
    /// refused unless there are none.
    pub fn finish(self, allow_paging: bool) -> Result<BatchGetResponse, RouterError> {
        let keys = self.keys.len();
        let mut results = Vec::with_capacity(keys);
        let mut remaining = Vec::new();
        let mut bytes = 0usize;
        for (index, slot) in self.slots.into_iter().enumerate() {
            let fits = |result: &KeyValueResult| {
                let total = bytes.saturating_add(repeated_field_bytes(result));
                (results.is_empty() || total <= self.budget_bytes).then_some(total)
            };
            match slot.as_ref().and_then(fits) {
                Some(total) => {
                    bytes = total;
                    results.extend(slot);
                }
                None => remaining.push(index),
            }
        }
        if remaining.is_empty() {
            return Ok(BatchGetResponse {
                results,
                remaining: Vec::new(),
            });
        }
        if !allow_paging {
            return Err(RouterError::ReplyTooLarge {
                keys,
                fit: results.len(),
                budget_bytes: self.budget_bytes,
            });
        }
        let remaining = remaining
            .into_iter()
            .map(|index| {
                u32::try_from(index).map_err(|_| RouterError::Internal("a batch position over u32".into()))
            })
            .collect::<Result<Vec<u32>, RouterError>>()?;
        Ok(BatchGetResponse { results, remaining })
    }
}

/// `Kv.BatchGet`: every key's shard read in rounds within the reply budget (see the module
/// docs).
pub async fn batch_get<N: NodeApi>(
    ctx: &RouterContext<N>,
    request: BatchGetRequest,
    deadline: Instant,
) -> Result<BatchGetResponse, RouterError> {
    let keys = request.keys;
    ctx.limits.check_keys("keys", &keys)?;
    let consistency = parse_consistency(request.consistency)?;
    check_read_ts(consistency, request.read_ts)?;
    check_read_uncommitted(consistency, request.read_ts, request.read_uncommitted)?;
    if keys.is_empty() {
        return Ok(BatchGetResponse::default());
    }
    let view = ctx.topology.wait_for_ring(deadline).await?;
    let shard_count = view.ring.shard_count();
    let groups = group_by_shard(&keys, |key| view.ring.shard_for_key(key));
    let total_shards = groups.len();
    let mut pages = Pages::new(&keys, groups, ctx.reply_budget_bytes());
    loop {
        let round = pages.next_round();
        if round.is_empty() {
            break;
        }
        let keys = &keys;
        let outcomes: Vec<(ShardGroup, Result<ShardReadResponse, RouterError>)> = stream::iter(round)
            .map(|(group, max_bytes)| async move {
                let read = ShardReadRequest {
                    shard_id: group.shard.0,
                    keys: group.indices.iter().map(|index| keys[*index].clone()).collect(),
                    consistency: consistency as i32,
                    read_ts: request.read_ts,
                    read_uncommitted: request.read_uncommitted,
                    max_bytes: max_bytes as u64,
                };
                let outcome = ctx
                    .forwarder
                    .read_page(shard_count, read, consistency, deadline)
                    .await;
                (group, outcome)
            })
            .buffer_unordered(ctx.max_fanout)
            .collect()
            .await;
        let mut failures: Vec<(ShardId, RouterError)> = Vec::new();
        for (group, outcome) in outcomes {
            let accepted = outcome.and_then(|response| {
                pages
                    .accept(&group, response)
                    .map_err(|reason| RouterError::BadNodeResponse {
                        shard: group.shard,
                        reason,
                    })
            });
            if let Err(err) = accepted {
                failures.push((group.shard, err));
            }
        }
        if !failures.is_empty() {
            return Err(batch_error(total_shards, failures));
        }
    }
    pages.finish(request.allow_paging)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Vec<u8> {
        format!("k{i:02}").into_bytes()
    }

    fn result(key: &[u8], value_bytes: usize) -> KeyValueResult {
        KeyValueResult {
            expires_at_ts: 0,
            key: key.to_vec(),
            found: true,
            value: vec![1; value_bytes],
            version: 1,
        }
    }

    /// What a node answers: the results of the first keys whose keys and values fit in
    /// `max_bytes` (at least one), with `more` when it stopped early.
    fn node_read(
        keys: &[Vec<u8>],
        group: &ShardGroup,
        max_bytes: usize,
        value_bytes: usize,
    ) -> ShardReadResponse {
        let mut results = Vec::new();
        let mut bytes = 0;
        for index in &group.indices {
            let size = keys[*index].len() + value_bytes;
            if !results.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            results.push(result(&keys[*index], value_bytes));
        }
        let more = results.len() < group.indices.len();
        ShardReadResponse { results, more }
    }

    /// Reads every round as nodes would, then finishes.
    fn run(
        keys: &[Vec<u8>],
        shards: u32,
        value_bytes: usize,
        budget: usize,
        paging: bool,
    ) -> Result<BatchGetResponse, RouterError> {
        let groups = group_by_shard(keys, |key| ShardId(u32::from(key[2]) % shards));
        let mut pages = Pages::new(keys, groups, budget);
        for _ in 0..1000 {
            let round = pages.next_round();
            if round.is_empty() {
                break;
            }
            for (group, max_bytes) in round {
                let response = node_read(keys, &group, max_bytes, value_bytes);
                pages.accept(&group, response).expect("a valid answer");
            }
        }
        pages.finish(paging)
    }

    /// A batch within the budget is answered whole, in request order, with nothing remaining.
    #[test]
    fn small_batches_are_answered_whole() {
        let keys: Vec<Vec<u8>> = (0..20).map(key).collect();
        let response = run(&keys, 4, 100, 1 << 20, false).expect("fits");
        assert!(response.remaining.is_empty());
        let got: Vec<&Vec<u8>> = response.results.iter().map(|result| &result.key).collect();
        assert_eq!(got, keys.iter().collect::<Vec<_>>());
    }

    /// Large values are paged (issue 14, defect 12): each reply stays within the budget,
    /// answers at least one key, and asking again for the remaining positions answers every
    /// key exactly once; without paging the batch is refused as too large.
    #[test]
    fn large_values_are_paged_within_the_budget() {
        let keys: Vec<Vec<u8>> = (0..40).map(key).collect();
        let budget = 3 << 20;
        let value_bytes = 1 << 20;
        let refused = run(&keys, 8, value_bytes, budget, false).expect_err("too large");
        assert!(
            matches!(refused, RouterError::ReplyTooLarge { keys: 40, fit: 2, .. }),
            "{refused}"
        );
        assert_eq!(
            crate::error::to_status(&refused).code(),
            tonic::Code::ResourceExhausted
        );

        let mut pending: Vec<Vec<u8>> = keys.clone();
        let mut answered: Vec<Vec<u8>> = Vec::new();
        let mut replies = 0;
        while !pending.is_empty() {
            let response = run(&pending, 8, value_bytes, budget, true).expect("a page");
            replies += 1;
            let bytes: usize = response.results.iter().map(repeated_field_bytes).sum();
            assert!(bytes <= budget, "a reply of {bytes} bytes");
            assert!(!response.results.is_empty(), "progress");
            assert_eq!(response.results.len() + response.remaining.len(), pending.len());
            answered.extend(response.results.into_iter().map(|result| result.key));
            pending = response
                .remaining
                .iter()
                .map(|position| pending[*position as usize].clone())
                .collect();
        }
        answered.sort();
        assert_eq!(answered, keys, "every key exactly once");
        assert_eq!(replies, 20, "two 1 MiB values per 3 MiB reply");
    }

    /// A value larger than the whole budget is answered alone.
    #[test]
    fn a_value_over_the_budget_comes_alone() {
        let keys: Vec<Vec<u8>> = (0..3).map(key).collect();
        let response = run(&keys, 1, 2000, 1000, true).expect("a page");
        assert_eq!(response.results.len(), 1);
        assert_eq!(response.remaining, vec![1, 2]);
        let one = run(&keys[..1], 1, 2000, 1000, false).expect("a lone key is never refused");
        assert_eq!(one.results.len(), 1);
    }

    /// Answers that break the contract are refused: too many results, a partial answer
    /// without `more` or out of order.
    #[test]
    fn bad_answers_are_refused() {
        let keys: Vec<Vec<u8>> = (0..3).map(key).collect();
        let group = ShardGroup {
            shard: ShardId(0),
            indices: vec![0, 1, 2],
        };
        let mut pages = Pages::new(&keys, vec![group.clone()], 1 << 20);
        let partial = ShardReadResponse {
            results: vec![result(&keys[0], 1)],
            more: false,
        };
        assert!(pages.accept(&group, partial).is_err());
        let disordered = ShardReadResponse {
            results: vec![result(&keys[1], 1)],
            more: true,
        };
        assert!(pages.accept(&group, disordered).is_err());
        let empty = ShardReadResponse {
            results: Vec::new(),
            more: true,
        };
        assert!(pages.accept(&group, empty).is_err());
        let prefix = ShardReadResponse {
            results: vec![result(&keys[0], 1)],
            more: true,
        };
        assert!(pages.accept(&group, prefix).is_ok());
        assert_eq!(
            pages.next_round()[0].0.indices,
            vec![1, 2],
            "the rest is read next"
        );
    }
}
