//! The ordered scan across shards: one cursor per shard, a k-way merge by key, and bounded
//! buffering.
//!
//! Keys are hash-sharded, so every shard holds keys from the whole range. Each shard's part
//! is fetched page by page from its leader (range and limit pushed down, in key order), and
//! the [`Merger`] repeatedly takes the smallest head (largest when reverse) among the
//! cursors. A cursor whose buffer runs dry while its shard has more keys is refilled before
//! the merge goes on, since its next key may be the smallest; cursors that run dry together
//! are refilled together, in parallel (at most `max_fanout` at once).
//!
//! Memory is bounded by the fetch sizes: at most `per_fetch_entries` entries and about
//! `budget_bytes / shards` bytes per shard (at least [`MIN_FETCH_BYTES`]), whatever the
//! size of the whole result. The caller drains the merger in chunks ([`Merger::next_chunk`]),
//! so a streamed scan holds one chunk plus the cursors' buffers. A chunk's entries are
//! counted as they encode in a reply ([`repeated_field_bytes`]) and stop before the one that
//! would pass the chunk's byte budget (a first entry larger than it comes alone): a page
//! stays within the reply budget whatever its entry limit.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::future::Future;

use futures::stream::{self, StreamExt};
use ringkv_proto::budget::repeated_field_bytes;
use ringkv_proto::v1::{Consistency, ScanEntry, ShardScanRequest, ShardScanResponse};
use ringkv_ring::ShardId;
use tokio::time::Instant;

use crate::error::{BatchFailure, RouterError};
use crate::range::KeyRange;

/// The most entries one shard fetch asks for.
pub const MAX_FETCH_ENTRIES: u32 = 1000;
/// The least entries one shard fetch asks for (small pages cost round trips).
const MIN_FETCH_ENTRIES: u64 = 16;
/// The byte budget of one shard fetch never goes below this.
pub const MIN_FETCH_BYTES: u64 = 64 << 10;
/// Nor above this.
const MAX_FETCH_BYTES: u64 = 4 << 20;

/// Fetches one page of one shard's part of a range.
pub trait ShardPages: Send + Sync {
    fn fetch(
        &self,
        request: ShardScanRequest,
        deadline: Instant,
    ) -> impl Future<Output = Result<ShardScanResponse, RouterError>> + Send;
}

/// What to scan.
#[derive(Debug, Clone)]
pub struct ScanSpec {
    pub range: KeyRange,
    pub reverse: bool,
    pub keys_only: bool,
    pub consistency: Consistency,
    /// 0: the latest values; otherwise every shard's page as of this oracle timestamp.
    pub read_ts: u64,
    /// The latest values with provisional ones (read uncommitted).
    pub read_uncommitted: bool,
    /// Leave out shards that fail (reported in [`Merger::missing_shards`]) instead of
    /// failing the scan.
    pub allow_partial: bool,
    /// The most entries to return in total; `None` is unlimited.
    pub limit: Option<u64>,
}

/// Sizes of the merge.
#[derive(Debug, Clone, Copy)]
pub struct MergeSettings {
    /// Most shard fetches in flight at once.
    pub max_fanout: usize,
    /// Bytes of buffered entries aimed at across all shards.
    pub budget_bytes: u64,
}

/// One shard's position in the scan.
#[derive(Debug)]
struct Cursor {
    shard: ShardId,
    /// What is left of the range on this shard after what was fetched.
    rest: KeyRange,
    /// Fetched entries not yet in the heap (the head is in the heap).
    buffer: VecDeque<ScanEntry>,
    /// The shard may have keys in `rest`.
    more: bool,
}

/// A cursor's head entry in the merge heap.
#[derive(Debug)]
struct Head {
    entry: ScanEntry,
    cursor: usize,
    reverse: bool,
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap pops the greatest: the smallest key forward, the largest in reverse.
        let by_key = self.entry.key.cmp(&other.entry.key);
        let by_key = if self.reverse { by_key } else { by_key.reverse() };
        by_key.then_with(|| other.cursor.cmp(&self.cursor))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

/// A chunk of merged entries.
#[derive(Debug, Default)]
pub struct Chunk {
    pub entries: Vec<ScanEntry>,
    /// Nothing is left in the range: every shard is exhausted (or missing).
    pub exhausted: bool,
}

/// The k-way merge of every shard's part of a range.
pub struct Merger<P> {
    pages: P,
    spec: ScanSpec,
    settings: MergeSettings,
    cursors: Vec<Cursor>,
    heap: BinaryHeap<Head>,
    /// Cursors to refill before the next entry can be taken.
    pending: Vec<usize>,
    missing: BTreeSet<u32>,
    emitted: u64,
    last_key: Option<Vec<u8>>,
}

impl<P: ShardPages> Merger<P> {
    /// A merge over shards `0..shard_count`. Nothing is fetched until the first chunk.
    pub fn new(pages: P, spec: ScanSpec, shard_count: u32, settings: MergeSettings) -> Self {
        let cursors: Vec<Cursor> = if spec.range.is_empty() {
            Vec::new()
        } else {
            (0..shard_count)
                .map(|shard| Cursor {
                    shard: ShardId(shard),
                    rest: spec.range.clone(),
                    buffer: VecDeque::new(),
                    more: true,
                })
                .collect()
        };
        let pending = (0..cursors.len()).collect();
        Merger {
            pages,
            spec,
            settings,
            cursors,
            heap: BinaryHeap::new(),
            pending,
            missing: BTreeSet::new(),
            emitted: 0,
            last_key: None,
        }
    }

    /// Shards left out so far (only with `allow_partial`).
    pub fn missing_shards(&self) -> Vec<u32> {
        self.missing.iter().copied().collect()
    }

    /// The last key returned so far.
    pub fn last_key(&self) -> Option<&[u8]> {
        self.last_key.as_deref()
    }

    /// The next entries in key order: at most `max_entries`, whose encoded size in a reply
    /// stays within `max_bytes` (the chunk stops before the entry that would pass it; a first
    /// entry is always taken). A shard that fails ends the scan with an error naming it,
    /// unless `allow_partial`.
    pub async fn next_chunk(
        &mut self,
        max_entries: usize,
        max_bytes: u64,
        deadline: Instant,
    ) -> Result<Chunk, RouterError> {
        let mut chunk = Chunk::default();
        let mut bytes = 0u64;
        loop {
            if self.limit_reached() || chunk.entries.len() >= max_entries {
                break;
            }
            if !self.pending.is_empty() {
                self.refill(deadline).await?;
                continue;
            }
            let Some(next) = self.heap.peek() else {
                break;
            };
            let entry_bytes = repeated_field_bytes(&next.entry) as u64;
            if !chunk.entries.is_empty() && bytes.saturating_add(entry_bytes) > max_bytes {
                break;
            }
            let Some(head) = self.heap.pop() else {
                break;
            };
            let cursor = &mut self.cursors[head.cursor];
            match cursor.buffer.pop_front() {
                Some(next) => self.heap.push(Head {
                    entry: next,
                    cursor: head.cursor,
                    reverse: self.spec.reverse,
                }),
                None if cursor.more => self.pending.push(head.cursor),
                None => {}
            }
            bytes = bytes.saturating_add(entry_bytes);
            self.emitted += 1;
            self.last_key = Some(head.entry.key.clone());
            chunk.entries.push(head.entry);
        }
        chunk.exhausted = self.heap.is_empty() && self.pending.is_empty();
        Ok(chunk)
    }

    /// Whether the scan's total limit has been returned.
    pub fn limit_reached(&self) -> bool {
        self.spec.limit.is_some_and(|limit| self.emitted >= limit)
    }

    /// Entries one fetch of one of `active` shards asks for.
    fn fetch_entries(&self, active: usize) -> u32 {
        let per_shard = match self.spec.limit {
            // Twice a fair share of what is left, so most shards need one round.
            Some(limit) => {
                let left = limit.saturating_sub(self.emitted).max(1);
                (left.saturating_mul(2) / active.max(1) as u64)
                    .max(MIN_FETCH_ENTRIES)
                    .min(left)
            }
            None => u64::from(MAX_FETCH_ENTRIES),
        };
        per_shard.min(u64::from(MAX_FETCH_ENTRIES)) as u32
    }

    /// Fetches the next page of every pending cursor, in parallel.
    async fn refill(&mut self, deadline: Instant) -> Result<(), RouterError> {
        let active = self.cursors.iter().filter(|cursor| cursor.more).count();
        let limit = self.fetch_entries(active);
        let max_bytes =
            (self.settings.budget_bytes / active.max(1) as u64).clamp(MIN_FETCH_BYTES, MAX_FETCH_BYTES);
        let requests: Vec<(usize, ShardScanRequest)> = self
            .pending
            .drain(..)
            .map(|index| {
                let cursor = &self.cursors[index];
                let request = ShardScanRequest {
                    shard_id: cursor.shard.0,
                    start: cursor.rest.start.clone(),
                    end: cursor.rest.end_bytes(),
                    limit,
                    max_bytes,
                    reverse: self.spec.reverse,
                    keys_only: self.spec.keys_only,
                    consistency: self.spec.consistency as i32,
                    read_ts: self.spec.read_ts,
                    read_uncommitted: self.spec.read_uncommitted,
                };
                (index, request)
            })
            .collect();
        let pages = &self.pages;
        let results: Vec<(usize, Result<ShardScanResponse, RouterError>)> = stream::iter(requests)
            .map(|(index, request)| async move { (index, pages.fetch(request, deadline).await) })
            .buffer_unordered(self.settings.max_fanout.max(1))
            .collect()
            .await;
        let mut failures = Vec::new();
        for (index, result) in results {
            let shard = self.cursors[index].shard;
            let accepted = result.and_then(|response| self.accept(index, response));
            if let Err(err) = accepted {
                let cursor = &mut self.cursors[index];
                cursor.more = false;
                cursor.buffer.clear();
                if self.spec.allow_partial {
                    self.missing.insert(shard.0);
                } else {
                    failures.push((shard, err));
                }
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        failures.sort_by_key(|(shard, _)| *shard);
        if self.cursors.len() == 1 && failures.len() == 1 {
            if let Some((_, err)) = failures.pop() {
                return Err(err);
            }
        }
        Err(RouterError::BatchFailed(BatchFailure {
            operation: "scan",
            total_shards: self.cursors.len(),
            failures,
            partly_applied: false,
        }))
    }

    /// Takes a shard's page into its cursor after checking it keeps the contract: keys in
    /// the range asked for, strictly in scan order, and progress whenever more is claimed
    /// (an entry, or a `last_key` in the range: a node may end a page before any entry it
    /// could see, when the shard applied a write meanwhile).
    fn accept(&mut self, index: usize, response: ShardScanResponse) -> Result<(), RouterError> {
        let reverse = self.spec.reverse;
        let cursor = &mut self.cursors[index];
        let bad = |reason: String| RouterError::BadNodeResponse {
            shard: cursor.shard,
            reason,
        };
        if response.more && response.entries.is_empty() && response.last_key.is_empty() {
            return Err(bad("no entries but more claimed".to_string()));
        }
        let mut previous: Option<&[u8]> = None;
        for entry in &response.entries {
            if !cursor.rest.contains(&entry.key) {
                return Err(bad("a key outside the requested range".to_string()));
            }
            if let Some(previous) = previous {
                let in_order = if reverse {
                    entry.key.as_slice() < previous
                } else {
                    entry.key.as_slice() > previous
                };
                if !in_order {
                    return Err(bad("keys out of order".to_string()));
                }
            }
            previous = Some(&entry.key);
        }
        // Where the page stopped: the node's last key looked at (not before the last entry),
        // or, from older nodes and complete pages, the last entry.
        let stopped_at = if response.more && !response.last_key.is_empty() {
            let after_entries = previous.is_none_or(|last_entry| {
                if reverse {
                    response.last_key.as_slice() <= last_entry
                } else {
                    response.last_key.as_slice() >= last_entry
                }
            });
            if !cursor.rest.contains(&response.last_key) || !after_entries {
                return Err(bad(
                    "a page's last key before its entries or outside the range".to_string()
                ));
            }
            Some(response.last_key.as_slice())
        } else {
            previous
        };
        if let Some(stopped_at) = stopped_at {
            cursor.rest = cursor.rest.after(stopped_at, reverse);
        }
        cursor.more = response.more && !cursor.rest.is_empty();
        let mut entries = response.entries.into_iter();
        match entries.next() {
            Some(first) => {
                cursor.buffer.extend(entries);
                self.heap.push(Head {
                    entry: first,
                    cursor: index,
                    reverse,
                });
            }
            // Nothing to merge yet from this shard: fetch on from where its page stopped.
            None if cursor.more => self.pending.push(index),
            None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{BTreeMap, HashSet};
    use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
    use std::sync::Mutex;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    /// Shards as in-memory ordered maps; a key's shard is its first byte modulo the count.
    pub(crate) struct FakeShards {
        pub(crate) shards: Vec<BTreeMap<Vec<u8>, u64>>,
        pub(crate) failing: HashSet<u32>,
        pub(crate) fetches: AtomicUsize,
        pub(crate) max_limit_seen: Mutex<u32>,
        /// Values of this many bytes (0: each value is its key), and pages that stop once
        /// their keys and values pass `max_bytes` of the request, as a node's do.
        pub(crate) value_bytes: usize,
        /// Pages that end after this many keys looked at, with no entry if none was seen
        /// (keys with this first byte are invisible), as a node's may when an apply ends them.
        pub(crate) invisible_first_byte: Option<u8>,
    }

    impl FakeShards {
        pub(crate) fn new(shard_count: u32, keys: &[Vec<u8>]) -> Self {
            let mut shards = vec![BTreeMap::new(); shard_count as usize];
            for (version, key) in keys.iter().enumerate() {
                let shard = shard_of(key, shard_count);
                shards[shard as usize].insert(key.clone(), version as u64 + 1);
            }
            FakeShards {
                shards,
                failing: HashSet::new(),
                fetches: AtomicUsize::new(0),
                max_limit_seen: Mutex::new(0),
                value_bytes: 0,
                invisible_first_byte: None,
            }
        }
    }

    pub(crate) fn shard_of(key: &[u8], shard_count: u32) -> u32 {
        u32::from(key.first().copied().unwrap_or(0)) % shard_count
    }

    impl ShardPages for FakeShards {
        async fn fetch(
            &self,
            request: ShardScanRequest,
            _deadline: Instant,
        ) -> Result<ShardScanResponse, RouterError> {
            self.fetches.fetch_add(1, AtomicOrdering::Relaxed);
            if let Ok(mut max) = self.max_limit_seen.lock() {
                *max = (*max).max(request.limit);
            }
            if self.failing.contains(&request.shard_id) {
                return Err(RouterError::ShardUnavailable {
                    shard: ShardId(request.shard_id),
                    attempts: 1,
                    last_error: "scripted".into(),
                });
            }
            let shard = &self.shards[request.shard_id as usize];
            let range = KeyRange {
                start: request.start.clone(),
                end: (!request.end.is_empty()).then(|| request.end.clone()),
            };
            let in_range: Box<dyn Iterator<Item = (&Vec<u8>, &u64)>> = if request.reverse {
                Box::new(shard.iter().rev().filter(|(k, _)| range.contains(k)))
            } else {
                Box::new(shard.iter().filter(|(k, _)| range.contains(k)))
            };
            let mut entries = Vec::new();
            let mut more = false;
            let mut bytes = 0u64;
            let mut last_key = Vec::new();
            for (key, version) in in_range {
                let value = match (request.keys_only, self.value_bytes) {
                    (true, _) => Vec::new(),
                    (false, 0) => key.clone(),
                    (false, size) => vec![key[0]; size],
                };
                let entry_bytes = (key.len() + value.len()) as u64;
                let full = !entries.is_empty() && bytes + entry_bytes > request.max_bytes;
                if entries.len() == request.limit as usize || full {
                    more = true;
                    break;
                }
                if self.invisible_first_byte == key.first().copied() {
                    // Looked at but not visible: the page ends here, with what it has.
                    more = true;
                    last_key = key.clone();
                    break;
                }
                bytes += entry_bytes;
                entries.push(ScanEntry {
                    key: key.clone(),
                    value,
                    version: *version,
                    ..Default::default()
                });
            }
            Ok(ShardScanResponse {
                entries,
                more,
                last_key,
            })
        }
    }

    fn spec(range: KeyRange, reverse: bool, limit: Option<u64>) -> ScanSpec {
        ScanSpec {
            range,
            reverse,
            keys_only: false,
            consistency: Consistency::Linearizable,
            read_ts: 0,
            read_uncommitted: false,
            allow_partial: false,
            limit,
        }
    }

    const SETTINGS: MergeSettings = MergeSettings {
        max_fanout: 4,
        budget_bytes: 1 << 20,
    };

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    async fn drain(merger: &mut Merger<&FakeShards>, chunk: usize) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        loop {
            let next = merger
                .next_chunk(chunk, u64::MAX, deadline())
                .await
                .expect("chunk");
            keys.extend(next.entries.into_iter().map(|e| e.key));
            if next.exhausted || merger.limit_reached() {
                return keys;
            }
        }
    }

    impl ShardPages for &FakeShards {
        fn fetch(
            &self,
            request: ShardScanRequest,
            deadline: Instant,
        ) -> impl Future<Output = Result<ShardScanResponse, RouterError>> + Send {
            (**self).fetch(request, deadline)
        }
    }

    proptest! {
        /// Whatever the keys, range, direction, limit and chunking, the merge returns
        /// exactly the model's keys in order.
        #[test]
        fn merge_matches_a_sorted_model(
            keys in proptest::collection::vec(proptest::collection::vec(0u8..8, 0..4), 0..120),
            shard_count in 1u32..6,
            start in proptest::collection::vec(0u8..8, 0..3),
            end in proptest::option::of(proptest::collection::vec(0u8..8, 0..3)),
            reverse in any::<bool>(),
            limit in proptest::option::of(1u64..50),
            chunk in 1usize..20,
        ) {
            let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| !k.is_empty()).collect();
            let fake = FakeShards::new(shard_count, &keys);
            let range = KeyRange { start, end };
            let model: BTreeMap<Vec<u8>, ()> = keys.iter().filter(|k| range.contains(k)).map(|k| (k.clone(), ())).collect();
            let mut expected: Vec<Vec<u8>> = model.into_keys().collect();
            if reverse {
                expected.reverse();
            }
            if let Some(limit) = limit {
                expected.truncate(limit as usize);
            }
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
            let got = runtime.block_on(async {
                let mut merger = Merger::new(&fake, spec(range.clone(), reverse, limit), shard_count, SETTINGS);
                drain(&mut merger, chunk).await
            });
            prop_assert_eq!(got, expected);
        }
    }

    /// A limited scan fetches about its share per shard, not the limit from every shard.
    #[tokio::test]
    async fn limits_are_pushed_down_in_shares() {
        // Spread over the shards (a fake key's shard is its first byte).
        let keys: Vec<Vec<u8>> = (0..2000u32)
            .map(|i| vec![(i % 251) as u8, (i / 251) as u8])
            .collect();
        let fake = FakeShards::new(8, &keys);
        let mut merger = Merger::new(&fake, spec(KeyRange::all(), false, Some(100)), 8, SETTINGS);
        let chunk = merger.next_chunk(100, u64::MAX, deadline()).await.expect("chunk");
        assert_eq!(chunk.entries.len(), 100);
        assert!(merger.limit_reached() && !chunk.exhausted);
        let max_limit = fake.max_limit_seen.lock().map(|m| *m).unwrap_or(0);
        assert!(max_limit <= 25, "per-shard fetch limit {max_limit}");
    }

    /// A failing shard fails the scan naming it, or is reported missing with allow_partial.
    #[tokio::test]
    async fn failing_shards_are_named_or_reported() {
        let keys: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i, 1]).collect();
        let mut fake = FakeShards::new(4, &keys);
        fake.failing.insert(2);
        let mut merger = Merger::new(&fake, spec(KeyRange::all(), false, None), 4, SETTINGS);
        let err = merger
            .next_chunk(10, u64::MAX, deadline())
            .await
            .expect_err("must fail");
        let message = err.to_string();
        assert!(message.contains("scan failed on 1 of 4 shards: 2"), "{message}");

        let mut partial = spec(KeyRange::all(), false, None);
        partial.allow_partial = true;
        let mut merger = Merger::new(&fake, partial, 4, SETTINGS);
        let keys = drain(&mut merger, 7).await;
        assert_eq!(keys.len(), 48);
        assert!(keys.iter().all(|k| shard_of(k, 4) != 2));
        assert_eq!(merger.missing_shards(), vec![2]);
    }

    /// Chunks stop before the entry that would pass the byte budget (counted as encoded in a
    /// reply) but always carry at least one entry.
    #[tokio::test]
    async fn chunks_respect_the_byte_budget() {
        let keys: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i, 1, 2, 3]).collect();
        let fake = FakeShards::new(3, &keys);
        let mut merger = Merger::new(&fake, spec(KeyRange::all(), false, None), 3, SETTINGS);
        let chunk = merger.next_chunk(100, 40, deadline()).await.expect("chunk");
        // Each entry encodes in 16 bytes (4 key + 4 value bytes, a version, field headers):
        // a third would pass 40.
        assert_eq!(chunk.entries.len(), 2);
        let one = merger.next_chunk(100, 1, deadline()).await.expect("chunk");
        assert_eq!(one.entries.len(), 1);
    }

    /// Pages of large values (issue 14, defect 12): a chunk with a limit of 100 stops at its
    /// byte budget, and resuming after its last key — what a continuation token names —
    /// returns every key exactly once, in order, in chunks that never pass the budget.
    #[tokio::test]
    async fn pages_of_large_values_stop_at_the_budget_and_resume_after_their_last_key() {
        let keys: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i, b'k']).collect();
        let mut fake = FakeShards::new(4, &keys);
        fake.value_bytes = 1000;
        let budget = 2500u64;
        for reverse in [false, true] {
            let mut seen: Vec<Vec<u8>> = Vec::new();
            let mut range = KeyRange::all();
            for _ in 0..100 {
                let mut merger = Merger::new(&fake, spec(range.clone(), reverse, Some(100)), 4, SETTINGS);
                let chunk = merger.next_chunk(100, budget, deadline()).await.expect("chunk");
                let bytes: usize = chunk.entries.iter().map(repeated_field_bytes).sum();
                assert!(bytes as u64 <= budget, "a page of {bytes} bytes");
                assert_eq!(chunk.entries.len(), 2, "two ~1 KB entries fit in 2500 bytes");
                seen.extend(chunk.entries.into_iter().map(|entry| entry.key));
                if chunk.exhausted {
                    break;
                }
                let last = merger.last_key().expect("a last key").to_vec();
                range = range.after(&last, reverse);
            }
            let mut expected = keys.clone();
            if reverse {
                expected.reverse();
            }
            assert_eq!(seen, expected, "every key once, in order (reverse: {reverse})");
        }
        // An entry larger than the whole budget still comes, alone.
        let mut merger = Merger::new(&fake, spec(KeyRange::all(), false, Some(100)), 4, SETTINGS);
        let lone = merger.next_chunk(100, 10, deadline()).await.expect("chunk");
        assert_eq!(lone.entries.len(), 1);
    }

    /// A shard page that ends before any entry it could see, with the last key it looked
    /// at, moves its cursor past that key: the merge goes on and misses nothing visible.
    #[tokio::test]
    async fn pages_without_entries_resume_after_their_last_key() {
        let keys: Vec<Vec<u8>> = (0..30u8).map(|i| vec![i % 3, i]).collect();
        let mut fake = FakeShards::new(1, &keys);
        fake.invisible_first_byte = Some(1);
        let mut merger = Merger::new(&fake, spec(KeyRange::all(), false, None), 1, SETTINGS);
        let got = drain(&mut merger, 100).await;
        let visible: Vec<Vec<u8>> = {
            let mut visible: Vec<Vec<u8>> = keys.iter().filter(|key| key[0] != 1).cloned().collect();
            visible.sort();
            visible
        };
        assert_eq!(got, visible);
    }
}
