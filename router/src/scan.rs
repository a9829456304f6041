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
//! so a streamed scan holds one chunk plus the cursors' buffers.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::future::Future;

use futures::stream::{self, StreamExt};
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

    /// The next entries in key order: at most `max_entries`, stopping once they hold
    /// `max_bytes` (at least one entry). A shard that fails ends the scan with an error
    /// naming it, unless `allow_partial`.
    pub async fn next_chunk(
        &mut self,
        max_entries: usize,
        max_bytes: u64,
        deadline: Instant,
    ) -> Result<Chunk, RouterError> {
        let mut chunk = Chunk::default();
        let mut bytes = 0u64;
        loop {
            if self.limit_reached()
                || chunk.entries.len() >= max_entries
                || (bytes >= max_bytes && !chunk.entries.is_empty())
            {
                break;
            }
            if !self.pending.is_empty() {
                self.refill(deadline).await?;
                continue;
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
            bytes += (head.entry.key.len() + head.entry.value.len()) as u64;
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
        }))
    }

    /// Takes a shard's page into its cursor after checking it keeps the contract: keys in
    /// the range asked for, strictly in scan order, and progress whenever more is claimed.
    fn accept(&mut self, index: usize, response: ShardScanResponse) -> Result<(), RouterError> {
        let reverse = self.spec.reverse;
        let cursor = &mut self.cursors[index];
        let bad = |reason: String| RouterError::BadNodeResponse {
            shard: cursor.shard,
            reason,
        };
        if response.more && response.entries.is_empty() {
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
        if let Some(last) = response.entries.last() {
            cursor.rest = cursor.rest.after(&last.key, reverse);
        }
        cursor.more = response.more && !cursor.rest.is_empty();
        let mut entries = response.entries.into_iter();
        if let Some(first) = entries.next() {
            cursor.buffer.extend(entries);
            self.heap.push(Head {
                entry: first,
                cursor: index,
                reverse,
            });
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
            for (key, version) in in_range {
                if entries.len() == request.limit as usize {
                    more = true;
                    break;
                }
                entries.push(ScanEntry {
                    key: key.clone(),
                    value: if request.keys_only {
                        Vec::new()
                    } else {
                        key.clone()
                    },
                    version: *version,
                });
            }
            Ok(ShardScanResponse { entries, more })
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

    /// Chunks stop at the byte budget but always carry at least one entry.
    #[tokio::test]
    async fn chunks_respect_the_byte_budget() {
        let keys: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i, 1, 2, 3]).collect();
        let fake = FakeShards::new(3, &keys);
        let mut merger = Merger::new(&fake, spec(KeyRange::all(), false, None), 3, SETTINGS);
        let chunk = merger.next_chunk(100, 20, deadline()).await.expect("chunk");
        // Each entry is 4 key + 4 value bytes: the third crosses 20 bytes.
        assert_eq!(chunk.entries.len(), 3);
        let one = merger.next_chunk(100, 1, deadline()).await.expect("chunk");
        assert_eq!(one.entries.len(), 1);
    }
}
