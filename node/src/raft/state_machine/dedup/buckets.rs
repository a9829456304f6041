//! The bucketed layout of a de-duplication table: every record lives in one of a fixed set
//! of [`BUCKETS`] buckets, chosen by a hash of its request id, and a bucket is one tree
//! record holding its records oldest first.
//!
//! Why buckets: sled 0.34 charges for a key it has not seen, not for a write. Overwriting
//! an existing key costs a fraction of a microsecond; inserting a new key or removing one
//! changes a leaf's structure and costs 5–13 µs (`docs/benchmarks/2026-12-06-dedup-buckets`).
//! A record per request id plus a request list per entry made `k + 1` new keys per write
//! entry and, once pruning started, as many removes: a third of an entry's apply. A bucket
//! exists after its first record, so recording a request is a read and an overwrite of a
//! key that is already there, and pruning is done in the same overwrite: each bucket drops
//! what the [`Horizon`] no longer keeps whenever it is written. Nothing walks the table.
//!
//! What is kept is decided by each record's sequence number (the table's count of requests
//! recorded, at its request) and the shard's de-duplication clock when its entry was
//! applied, against the table's sequence and the shard's clock now: exactly the policy's
//! promise (the last `min_records` requests, older ones within the window, never more than
//! `max_records`), applied at lookup, so a record a bucket still holds but the policy let
//! go is not found. Every input is the entries' and the tree's, so every replica decides
//! the same.
//!
//! A bucket's value is its records one after another, each with its outcome as bytes: a
//! lookup decodes only the record it finds, and writing a bucket copies the records it keeps
//! as they are, so recording costs the same whatever the outcomes hold.
//!
//! How many buckets: a bucket becomes a key that exists only once a request has hashed to
//! it, and until then recording one is an insert; and every record a bucket holds is
//! rewritten with it, and sled rewrites whole pages of buckets. At [`BUCKETS`] = 16,384 a
//! bucket holds one record on average while a table remembers its last 16,384 requests and
//! 16 at the cap of 262,144 (under a sustained 870 writes per second to one shard for the
//! 5-minute window). 4,096 buckets filled sooner but wrote 68 % more bytes per put in steady
//! state (`docs/benchmarks/2026-12-06-dedup-buckets`). A bucket holds at most
//! [`MAX_RECORDS_PER_BUCKET`], out of reach for random request ids; ids made to collide push
//! out the oldest records of their own bucket first.

use std::collections::HashMap;
use std::hash::Hasher;
use std::ops::Range;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher13;

use super::{DedupPolicy, Found};
use crate::raft::state_machine::fingerprint::Fingerprint;
use crate::raft::types::RequestId;
use crate::raft::{decode, encode};
use crate::storage::{Batch, StorageError, TreeRef};

/// Buckets per table.
pub(super) const BUCKETS: u64 = 16_384;

/// The most records one bucket holds (its oldest go first).
pub(super) const MAX_RECORDS_PER_BUCKET: usize = 64;

/// The hash keys choosing a request id's bucket: fixed, since every replica, and every
/// build, must choose the same one.
const BUCKET_HASH_KEYS: (u64, u64) = (0x7269_6e67_6b76_6465, 0x6475_7062_7563_6b74);

/// A record in a bucket, as stored: a request id's fingerprint and first outcome (postcard
/// bytes of the table's outcome type), and what decides how long it is kept. A bucket's
/// value is its records' postcard encodings one after another, oldest first.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct BucketRecord<'a> {
    pub(super) request_id: RequestId,
    /// The table's count of recorded requests once this one was (the first is 1).
    pub(super) sequence: u64,
    /// The shard's de-duplication clock after the entry that recorded it.
    pub(super) clock_ms: u64,
    pub(super) fingerprint: Fingerprint,
    #[serde(borrow, with = "serde_bytes")]
    pub(super) result: &'a [u8],
}

/// What a table keeps, as of some entry: its records whose [`Horizon::keeps`] holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Horizon {
    /// The table's count of recorded requests.
    pub(super) recorded: u64,
    /// The shard's de-duplication clock.
    pub(super) clock_ms: u64,
    pub(super) policy: DedupPolicy,
}

impl Horizon {
    /// Whether a record of `sequence`, recorded at the shard clock `clock_ms`, is still
    /// remembered: one of the last `max_records` requests and either one of the last
    /// `min_records` or within the window.
    pub(super) fn keeps(&self, sequence: u64, clock_ms: u64) -> bool {
        let newer = self.recorded.saturating_sub(sequence);
        newer < self.policy.max_records
            && (newer < self.policy.min_records
                || clock_ms.saturating_add(self.policy.window_ms) >= self.clock_ms)
    }
}

/// The bucket of `request_id`.
pub(super) fn bucket_of(request_id: &RequestId) -> u16 {
    let mut hasher = SipHasher13::new_with_keys(BUCKET_HASH_KEYS.0, BUCKET_HASH_KEYS.1);
    hasher.write(request_id);
    // BUCKETS is 2^14: the remainder fits a u16.
    (hasher.finish() % BUCKETS) as u16
}

/// A bucket's key: `prefix` + bucket number (big-endian).
pub(super) fn bucket_key(prefix: u8, bucket: u16) -> [u8; 3] {
    let [high, low] = bucket.to_be_bytes();
    [prefix, high, low]
}

/// The records of a bucket as stored, in `tree`'s value `bytes`, with each one's place.
pub(super) fn bucket_records<'a>(
    tree: &str,
    bytes: &'a [u8],
) -> Result<Vec<(Range<usize>, BucketRecord<'a>)>, StorageError> {
    let mut records = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        let (record, rest) =
            postcard::take_from_bytes::<BucketRecord<'_>>(&bytes[start..]).map_err(|err| {
                StorageError::Corrupt {
                    tree: tree.to_string(),
                    detail: format!("de-duplication bucket: {err}"),
                }
            })?;
        let end = bytes.len() - rest.len();
        records.push((start..end, record));
        start = end;
    }
    Ok(records)
}

/// A bucket read by an entry: its value as stored, then the records the entry added, and
/// where each record is in it.
#[derive(Default)]
struct Bucket {
    bytes: Vec<u8>,
    records: Vec<Placed>,
}

/// A record's place in its bucket's bytes, and what a lookup and the horizon need of it.
struct Placed {
    span: Range<usize>,
    request_id: RequestId,
    sequence: u64,
    clock_ms: u64,
}

impl Bucket {
    fn read(tree: &str, bytes: Vec<u8>) -> Result<Bucket, StorageError> {
        let records = bucket_records(tree, &bytes)?
            .into_iter()
            .map(|(span, record)| Placed {
                span,
                request_id: record.request_id,
                sequence: record.sequence,
                clock_ms: record.clock_ms,
            })
            .collect();
        Ok(Bucket { bytes, records })
    }

    fn push(&mut self, record: &BucketRecord<'_>) -> Result<(), StorageError> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&encode(record)?);
        self.records.push(Placed {
            span: start..self.bytes.len(),
            request_id: record.request_id,
            sequence: record.sequence,
            clock_ms: record.clock_ms,
        });
        Ok(())
    }

    /// The bucket's value keeping only the records `after` keeps, at most
    /// [`MAX_RECORDS_PER_BUCKET`] of the newest.
    fn kept(&self, after: &Horizon) -> Vec<u8> {
        let kept: Vec<&Placed> = self
            .records
            .iter()
            .filter(|record| after.keeps(record.sequence, record.clock_ms))
            .collect();
        let excess = kept.len().saturating_sub(MAX_RECORDS_PER_BUCKET);
        let mut bytes = Vec::with_capacity(self.bytes.len());
        for record in &kept[excess..] {
            bytes.extend_from_slice(&self.bytes[record.span.clone()]);
        }
        bytes
    }
}

/// The buckets of one table an entry has read or written, and the requests it recorded.
pub(super) struct EntryBuckets<S> {
    prefix: u8,
    /// Buckets read so far, as stored (records the horizon let go included).
    loaded: HashMap<u16, Bucket>,
    /// Requests first seen in this entry: id, fingerprint, outcome.
    recorded: Vec<(RequestId, Fingerprint, S)>,
}

impl<S: Serialize + DeserializeOwned> EntryBuckets<S> {
    pub(super) fn new(prefix: u8) -> EntryBuckets<S> {
        EntryBuckets {
            prefix,
            loaded: HashMap::new(),
            recorded: Vec::new(),
        }
    }

    /// The record of `request_id` if `horizon` (the table's before this entry) keeps it.
    /// Requests recorded by this entry are the caller's to remember.
    pub(super) fn lookup(
        &mut self,
        tree: &TreeRef,
        request_id: &RequestId,
        horizon: &Horizon,
    ) -> Result<Option<Found<S>>, StorageError> {
        let name = tree.name();
        let bucket = self.bucket(tree, bucket_of(request_id))?;
        let Some(placed) = bucket
            .records
            .iter()
            .rev()
            .find(|record| &record.request_id == request_id)
            .filter(|record| horizon.keeps(record.sequence, record.clock_ms))
        else {
            return Ok(None);
        };
        let record: BucketRecord<'_> = decode_borrowed(name, &bucket.bytes[placed.span.clone()])?;
        Ok(Some(Found::new(record.fingerprint, decode(name, record.result)?)))
    }

    /// Records the fingerprint and first outcome of `request_id` (written by
    /// [`EntryBuckets::finish`]).
    pub(super) fn record(&mut self, request_id: &RequestId, fingerprint: Fingerprint, result: S) {
        self.recorded.push((*request_id, fingerprint, result));
    }

    /// How many requests this entry recorded.
    pub(super) fn len(&self) -> u64 {
        self.recorded.len() as u64
    }

    /// Adds the entry's records to their buckets, numbered on from `recorded_before` and
    /// stamped with the shard's clock after the entry, drops from each bucket written what
    /// `after` (the table's horizon after the entry) no longer keeps, and writes those
    /// buckets in `batch`.
    pub(super) fn finish(
        mut self,
        tree: &TreeRef,
        batch: &mut Batch,
        recorded_before: u64,
        after: &Horizon,
    ) -> Result<(), StorageError> {
        let mut written = Vec::new();
        for (sequence, (request_id, fingerprint, result)) in
            (recorded_before + 1..).zip(std::mem::take(&mut self.recorded))
        {
            let bucket = bucket_of(&request_id);
            let result = encode(&result)?;
            self.bucket(tree, bucket)?.push(&BucketRecord {
                request_id,
                sequence,
                clock_ms: after.clock_ms,
                fingerprint,
                result: &result,
            })?;
            if !written.contains(&bucket) {
                written.push(bucket);
            }
        }
        for bucket in written {
            if let Some(loaded) = self.loaded.get(&bucket) {
                batch.insert(bucket_key(self.prefix, bucket).to_vec(), loaded.kept(after));
            }
        }
        Ok(())
    }

    /// Bucket `bucket` as stored (read once per entry).
    fn bucket(&mut self, tree: &TreeRef, bucket: u16) -> Result<&mut Bucket, StorageError> {
        use std::collections::hash_map::Entry;
        match self.loaded.entry(bucket) {
            Entry::Occupied(occupied) => Ok(occupied.into_mut()),
            Entry::Vacant(vacant) => {
                let loaded = match tree.get(&bucket_key(self.prefix, bucket))? {
                    Some(bytes) => Bucket::read(tree.name(), bytes)?,
                    None => Bucket::default(),
                };
                Ok(vacant.insert(loaded))
            }
        }
    }
}

/// Decodes a record that borrows from `bytes`.
fn decode_borrowed<'a>(tree: &str, bytes: &'a [u8]) -> Result<BucketRecord<'a>, StorageError> {
    postcard::from_bytes(bytes).map_err(|err| StorageError::Corrupt {
        tree: tree.to_string(),
        detail: format!("de-duplication bucket: {err}"),
    })
}
