use std::ops::Bound;

use super::buckets::{bucket_key, bucket_of, bucket_records, BucketRecord, BUCKETS, MAX_RECORDS_PER_BUCKET};
use super::older::{Record, RequestList};
use super::*;
use crate::raft::decode;
use crate::raft::state_machine::layout::{expiry_key, list_key, request_key};
use crate::raft::types::{Current, Versioned, WriteOpResult};
use crate::storage::{self, prefix_bounds, EngineRef};

fn tree(dir: &std::path::Path) -> (EngineRef, TreeRef) {
    let engine = storage::open(dir).expect("engine");
    let tree = engine.open_tree("t").expect("tree");
    (engine, tree)
}

fn policy(min_records: u64, max_records: u64) -> DedupPolicy {
    DedupPolicy {
        window_ms: 60_000,
        min_records,
        max_records,
    }
}

const FINGERPRINT: Fingerprint = [9; 16];

fn ok() -> Vec<RecordedOp> {
    vec![RecordedOp {
        succeeded: true,
        version: 3,
        existed: false,
        current_version: None,
    }]
}

/// A write's outcome as records made before fingerprints encoded it.
#[derive(Serialize)]
struct OldOp {
    succeeded: bool,
    version: u64,
    existed: bool,
    current: Option<Versioned>,
}

fn old_ok() -> Vec<OldOp> {
    vec![OldOp {
        succeeded: true,
        version: 3,
        existed: false,
        current: None,
    }]
}

fn counts(tree: &TreeRef) -> Counts {
    Counts::read(tree).expect("counts")
}

/// Applies one entry at `index` recording the writes `ids`, stamped `issued_at_ms`
/// (`older`: the tree may hold records of older layouts); returns what it left and the
/// number of keys its batch removed.
fn apply_entry_with(
    tree: &TreeRef,
    policy: &DedupPolicy,
    index: u64,
    issued_at_ms: u64,
    ids: &[RequestId],
    older: bool,
) -> (Finished, usize) {
    let mut batch = Batch::default();
    let mut records = EntryRecords::new(*policy, counts(tree), older);
    records.observe_clock(issued_at_ms);
    for id in ids {
        records.record_write(id, FINGERPRINT, issued_at_ms, ok());
    }
    let finished = records.finish(tree, &mut batch, index).expect("finish");
    let removed = batch.ops.iter().filter(|(_, value)| value.is_none()).count();
    tree.apply_batch(batch).expect("apply");
    (finished, removed)
}

fn apply_entry(tree: &TreeRef, policy: &DedupPolicy, index: u64, issued_at_ms: u64, ids: &[RequestId]) {
    apply_entry_with(tree, policy, index, issued_at_ms, ids, false);
}

/// Applies one entry at `index` recording the writes `[id; 16]` of `ids`.
fn entry(tree: &TreeRef, policy: &DedupPolicy, index: u64, issued_at_ms: u64, ids: &[u8]) {
    let ids: Vec<RequestId> = ids.iter().map(|id| [*id; 16]).collect();
    apply_entry(tree, policy, index, issued_at_ms, &ids);
}

/// Request id number `n`.
fn nth_id(n: u64) -> RequestId {
    let mut id = [0; 16];
    id[8..].copy_from_slice(&n.to_be_bytes());
    id
}

/// Whether the write `id` is remembered now (older layouts looked at too).
fn is_remembered(tree: &TreeRef, policy: &DedupPolicy, id: &RequestId) -> bool {
    WRITES
        .lookup(tree, id, true, policy, counts(tree))
        .expect("lookup")
        .is_some()
}

fn remembered(tree: &TreeRef, policy: &DedupPolicy, ids: impl IntoIterator<Item = u8>) -> Vec<u8> {
    ids.into_iter()
        .filter(|id| is_remembered(tree, policy, &[*id; 16]))
        .collect()
}

/// How many of the request ids numbered `range` are remembered.
fn remembered_ids(tree: &TreeRef, policy: &DedupPolicy, range: std::ops::Range<u64>) -> u64 {
    range.filter(|n| is_remembered(tree, policy, &nth_id(*n))).count() as u64
}

/// Every pair of `tree`.
fn dump(tree: &TreeRef) -> Vec<(Vec<u8>, Vec<u8>)> {
    tree.range(Bound::Unbounded, Bound::Unbounded)
        .collect::<Result<_, _>>()
        .expect("dump")
}

/// The write buckets of `tree`: (bucket count, records they hold, most in one).
fn write_buckets(tree: &TreeRef) -> (usize, usize, usize) {
    let (start, end) = prefix_bounds(&[WRITE_BUCKET_PREFIX]);
    let mut buckets = 0;
    let mut records = 0;
    let mut most = 0;
    for pair in tree.range(start, end) {
        let (_, value) = pair.expect("bucket");
        let held = bucket_records("t", &value).expect("decode");
        buckets += 1;
        records += held.len();
        most = most.max(held.len());
    }
    (buckets, records, most)
}

/// Entries 1..=`entries` at clock 1,000, entry `i` recording ids `2(i-1)` and `2(i-1)+1`.
fn pairs_of_requests(tree: &TreeRef, policy: &DedupPolicy, entries: u8) {
    for index in 0..entries {
        entry(
            tree,
            policy,
            u64::from(index) + 1,
            1_000,
            &[index * 2, index * 2 + 1],
        );
    }
}

/// A recorded outcome is found again by its request id, with its fingerprint, only in its
/// own table; recording is an overwrite of the id's bucket, counted in the table's sequence.
#[test]
fn recorded_outcomes_are_found_in_their_own_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_engine, tree) = tree(dir.path());
    let policy = policy(10, 20);
    let result = DeleteRangeResult {
        deleted: 2,
        last_deleted: Some(b"b".to_vec()),
        more: true,
    };
    let mut batch = Batch::default();
    let mut records = EntryRecords::new(policy, counts(&tree), false);
    records.record_delete_range(&[1; 16], FINGERPRINT, 1_000, result.clone());
    records.finish(&tree, &mut batch, 5).expect("finish");
    let keys: Vec<&[u8]> = batch.ops.iter().map(|(key, _)| key.as_slice()).collect();
    assert_eq!(
        keys,
        vec![
            &bucket_key(RANGE_BUCKET_PREFIX, bucket_of(&[1; 16]))[..],
            COUNTS_KEY
        ],
        "one bucket and the counts: no request list"
    );
    tree.apply_batch(batch).expect("apply");
    let found = DELETE_RANGES
        .lookup(&tree, &[1; 16], false, &policy, counts(&tree))
        .expect("lookup")
        .expect("found");
    assert_eq!(found, Found::new(FINGERPRINT, result));
    assert!(found.is_retry_of(&FINGERPRINT));
    assert!(!found.is_retry_of(&[8; 16]), "another command under the id");
    assert_eq!(
        DELETE_RANGES
            .lookup(&tree, &[2; 16], false, &policy, counts(&tree))
            .expect("lookup"),
        None
    );
    assert_eq!(
        WRITES
            .lookup(&tree, &[1; 16], false, &policy, counts(&tree))
            .expect("lookup"),
        None
    );
    assert_eq!(
        counts(&tree),
        Counts {
            writes: 0,
            delete_ranges: 0,
            clock_ms: 1_000,
            writes_recorded: 0,
            delete_ranges_recorded: 1,
        }
    );
}

/// Ids spread over the buckets as random ones would: a thousand ids differing in their
/// last bytes land in about 16,384 × (1 − e^(−1,000/16,384)) ≈ 970 buckets (a hash, not the
/// ids' bytes, chooses), and every bucket number is below [`BUCKETS`].
#[test]
fn request_ids_spread_over_the_buckets() {
    let mut seen = std::collections::HashSet::new();
    for n in 0..1_000 {
        let bucket = bucket_of(&nth_id(n));
        assert!(u64::from(bucket) < BUCKETS);
        seen.insert(bucket);
    }
    assert!(
        (950..=990).contains(&seen.len()),
        "{} buckets for 1,000 ids",
        seen.len()
    );
}

/// However far the entries' clock jumps, the last `min_records` requests are remembered;
/// older ones go once the clock passes the window.
#[test]
fn a_clock_jump_never_forgets_the_last_min_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_engine, tree) = tree(dir.path());
    let policy = policy(4, 100);
    pairs_of_requests(&tree, &policy, 6);
    assert_eq!(
        remembered(&tree, &policy, 0..12),
        (0..12).collect::<Vec<_>>(),
        "within the window"
    );
    // A leader ten years ahead: everything older than the window, yet the last 4 stay.
    entry(&tree, &policy, 7, u64::MAX / 2, &[]);
    assert_eq!(remembered(&tree, &policy, 0..12), vec![8, 9, 10, 11]);
}

/// The cap holds whatever the clock: the oldest requests go first.
#[test]
fn the_cap_bounds_the_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_engine, tree) = tree(dir.path());
    let policy = policy(2, 6);
    pairs_of_requests(&tree, &policy, 5);
    assert_eq!(remembered(&tree, &policy, 0..10), vec![4, 5, 6, 7, 8, 9]);
    assert_eq!(counts(&tree).writes_recorded, 10);
}

/// Request ids made to collide fill one bucket: it keeps its newest
/// [`MAX_RECORDS_PER_BUCKET`], and other buckets are untouched.
#[test]
fn a_bucket_keeps_its_newest_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_engine, tree) = tree(dir.path());
    let policy = policy(1_024, 8_192);
    let target = bucket_of(&nth_id(0));
    let colliding: Vec<RequestId> = (0..)
        .map(nth_id)
        .filter(|id| bucket_of(id) == target)
        .take(MAX_RECORDS_PER_BUCKET + 10)
        .collect();
    apply_entry(&tree, &policy, 1, 1_000, &colliding[..40]);
    apply_entry(&tree, &policy, 2, 1_000, &colliding[40..]);
    assert_eq!(
        write_buckets(&tree),
        (1, MAX_RECORDS_PER_BUCKET, MAX_RECORDS_PER_BUCKET)
    );
    let kept: Vec<bool> = colliding
        .iter()
        .map(|id| is_remembered(&tree, &policy, id))
        .collect();
    assert!(kept[..10].iter().all(|kept| !kept), "the oldest 10 went");
    assert!(kept[10..].iter().all(|kept| *kept), "the newest 64 stay");
}

/// Records made before fingerprints (`w`, listed in the request lists of the previous
/// layout) are still found while older records may be left, match any command, and are
/// pruned with their lists; once none is left, the table says so.
#[test]
fn records_without_fingerprints_match_and_are_pruned_with_their_lists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_engine, tree) = tree(dir.path());
    // As an older build wrote them: the outcome alone under `w`, listed under `l`.
    tree.insert(
        &request_key(WRITE_UNFINGERPRINTED_PREFIX, &[7; 16]),
        &encode(&old_ok()).expect("encode"),
    )
    .expect("insert");
    let list = RequestList {
        clock_ms: 1_000,
        ids: vec![[7; 16]],
    };
    tree.insert(&list_key(WRITE_LIST_PREFIX, 1), &encode(&list).expect("encode"))
        .expect("insert");
    // The counts as written before the clock: (writes, delete_ranges).
    tree.insert(COUNTS_KEY, &encode(&(1u64, 0u64)).expect("encode"))
        .expect("insert");
    let policy = policy(0, 1);
    let found = WRITES
        .lookup(&tree, &[7; 16], true, &policy, counts(&tree))
        .expect("lookup")
        .expect("found");
    assert_eq!(found.result, ok());
    assert!(found.is_retry_of(&[1; 16]) && found.is_retry_of(&[2; 16]));
    assert_eq!(
        WRITES
            .lookup(&tree, &[7; 16], false, &policy, counts(&tree))
            .expect("lookup"),
        None,
        "not looked for once none may be left"
    );

    // Entry 2 records one more write, in a bucket; a cap of 1 prunes entry 1's list and
    // its record.
    let (finished, _) = apply_entry_with(&tree, &policy, 2, 1_000, &[[8; 16]], true);
    assert!(
        finished.older_left,
        "the list was still there when the entry looked"
    );
    assert!(!is_remembered(&tree, &policy, &[7; 16]));
    assert!(is_remembered(&tree, &policy, &[8; 16]));
    assert_eq!(counts(&tree).writes, 0);
    let (finished, _) = apply_entry_with(&tree, &policy, 3, 1_000, &[], true);
    assert!(!finished.older_left, "none left");
}

/// A shard of the previous layout (a record per request id and a request list per entry)
/// goes on in buckets: its records are found while they are remembered, and drained once
/// the window has passed them and the requests recorded since in buckets make up the last
/// `min_records`, never before.
#[test]
fn the_previous_layout_drains_into_buckets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_engine, tree) = tree(dir.path());
    let policy = policy(4, 100);
    // As the previous build wrote them: 3 entries of 2 records, at clock 1,000.
    for index in 0..3u8 {
        let ids = [[index * 2; 16], [index * 2 + 1; 16]];
        for id in &ids {
            let record = Record {
                fingerprint: FINGERPRINT,
                result: ok(),
            };
            tree.insert(
                &request_key(WRITE_RECORD_PREFIX, id),
                &encode(&record).expect("encode"),
            )
            .expect("insert");
        }
        let list = RequestList {
            clock_ms: 1_000,
            ids: ids.to_vec(),
        };
        tree.insert(
            &list_key(WRITE_LIST_PREFIX, u64::from(index) + 1),
            &encode(&list).expect("encode"),
        )
        .expect("insert");
    }
    tree.insert(COUNTS_KEY, &encode(&(6u64, 0u64, 1_000u64)).expect("encode"))
        .expect("insert");
    assert_eq!(remembered(&tree, &policy, 0..6), (0..6).collect::<Vec<_>>());

    // Past the window: with nothing recorded since, the last 4 of the previous layout stay.
    let (finished, _) = apply_entry_with(&tree, &policy, 4, 70_000, &[], true);
    assert!(finished.older_left);
    assert_eq!(remembered(&tree, &policy, 0..6), vec![2, 3, 4, 5]);
    assert_eq!(counts(&tree).writes, 4);
    // Two requests in buckets: the oldest remaining list goes, the newest stays (4 = 2 + 2).
    let (finished, _) = apply_entry_with(&tree, &policy, 5, 70_000, &[[20; 16], [21; 16]], true);
    assert!(finished.older_left);
    assert_eq!(
        remembered(&tree, &policy, (0..6).chain([20, 21])),
        vec![4, 5, 20, 21]
    );
    // Two more: the previous layout is gone, and the table says so at the next entry.
    let (finished, _) = apply_entry_with(&tree, &policy, 6, 70_000, &[[22; 16], [23; 16]], true);
    assert!(finished.older_left, "still there when the entry looked");
    assert_eq!(remembered(&tree, &policy, 0..6), Vec::<u8>::new());
    assert_eq!(counts(&tree).writes, 0);
    let (finished, _) = apply_entry_with(&tree, &policy, 7, 70_000, &[], true);
    assert!(!finished.older_left);
    let left: Vec<u8> = dump(&tree).into_iter().map(|(key, _)| key[0]).collect();
    assert!(
        left.iter()
            .all(|prefix| [WRITE_BUCKET_PREFIX, COUNTS_KEY[0]].contains(prefix)),
        "only buckets and the counts: {left:?}"
    );
}

/// Legacy records are still found (matching any command) and drain by their recorded
/// expiry; new records never use the legacy prefixes.
#[test]
fn legacy_records_are_found_and_drain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_engine, tree) = tree(dir.path());
    let policy = policy(4, 8);
    // As the legacy layout wrote them: (expiry, result) under `r`, index under `x`.
    let legacy = (61_000u64, old_ok());
    tree.insert(
        &request_key(WRITE_DEDUP_PREFIX, &[7; 16]),
        &encode(&legacy).expect("encode"),
    )
    .expect("insert");
    tree.insert(&expiry_key(WRITE_EXPIRY_PREFIX, 61_000, &[7; 16]), &[])
        .expect("insert");
    let found = WRITES
        .lookup(&tree, &[7; 16], true, &policy, counts(&tree))
        .expect("lookup")
        .expect("found");
    assert_eq!(found.result, ok());
    assert!(found.is_retry_of(&FINGERPRINT));

    let (finished, _) = apply_entry_with(&tree, &policy, 1, 0, &[], true);
    assert!(finished.older_left, "not expired yet");
    assert!(is_remembered(&tree, &policy, &[7; 16]));

    let (finished, _) = apply_entry_with(&tree, &policy, 2, 61_001, &[], true);
    assert!(!finished.older_left, "drained");
    assert!(!is_remembered(&tree, &policy, &[7; 16]));
    let left: Vec<Vec<u8>> = dump(&tree).into_iter().map(|(key, _)| key).collect();
    assert_eq!(left, vec![COUNTS_KEY.to_vec()], "only the counts and clock");
    assert_eq!(clock_ms(&tree).expect("clock"), 61_001);
}

/// A failed comparison's record keeps the key's version, not its value; a record of the
/// older format that kept the value answers with the version only too.
#[test]
fn a_failed_comparison_is_recorded_as_its_version() {
    let failed = WriteOpResult {
        succeeded: false,
        version: 0,
        existed: true,
        current: Some(Current {
            version: 5,
            value: Some(vec![1; 1 << 20]),
        }),
    };
    let recorded = RecordedOp::of(&failed);
    let result = encode(&vec![recorded.clone()]).expect("encode");
    let bytes = encode(&BucketRecord {
        request_id: [1; 16],
        sequence: 1,
        clock_ms: 1_000,
        fingerprint: FINGERPRINT,
        result: &result,
    })
    .expect("encode");
    assert!(bytes.len() < 48, "{} bytes", bytes.len());
    assert_eq!(
        recorded.answer(),
        WriteOpResult {
            current: Some(Current {
                version: 5,
                value: None
            }),
            ..failed
        }
    );
    let old = vec![UnfingerprintedOp {
        succeeded: false,
        version: 0,
        existed: true,
        current: Some(Versioned {
            version: 5,
            value: b"v".to_vec(),
        }),
    }];
    assert_eq!(outcome::recorded_ops(old), vec![recorded]);
}

/// Lists and records of the previous layout, with the counts written before the clock (two
/// fields), still decode: the shard's clock is then the newest list's, and the records are
/// pruned once it passes the window; the counts are written in full from then on.
#[test]
fn lists_and_counts_written_before_the_clock_are_read_and_pruned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_engine, tree) = tree(dir.path());
    let record = Record {
        fingerprint: FINGERPRINT,
        result: ok(),
    };
    tree.insert(
        &request_key(WRITE_RECORD_PREFIX, &[1; 16]),
        &encode(&record).expect("encode"),
    )
    .expect("insert");
    let range_record = Record {
        fingerprint: FINGERPRINT,
        result: DeleteRangeResult::default(),
    };
    tree.insert(
        &request_key(RANGE_RECORD_PREFIX, &[2; 16]),
        &encode(&range_record).expect("encode"),
    )
    .expect("insert");
    for (prefix, index, clock_ms, id) in [
        (WRITE_LIST_PREFIX, 1, 1_000u64, 1u8),
        (RANGE_LIST_PREFIX, 2, 2_000, 2),
    ] {
        let list = (clock_ms, vec![[id; 16]]);
        tree.insert(&list_key(prefix, index), &encode(&list).expect("encode"))
            .expect("insert");
    }
    tree.insert(COUNTS_KEY, &encode(&(1u64, 1u64)).expect("encode"))
        .expect("insert");
    assert_eq!(
        counts(&tree),
        Counts {
            writes: 1,
            delete_ranges: 1,
            clock_ms: 2_000,
            ..Counts::default()
        }
    );
    let policy = policy(0, 100);
    let range_remembered = |tree: &TreeRef| {
        DELETE_RANGES
            .lookup(tree, &[2; 16], true, &policy, counts(tree))
            .expect("lookup")
            .is_some()
    };
    assert!(is_remembered(&tree, &policy, &[1; 16]));
    assert!(range_remembered(&tree));

    // An entry with no clock of its own keeps the shard's; one past the window of both
    // lists prunes them.
    apply_entry_with(&tree, &policy, 3, 0, &[], true);
    assert_eq!(counts(&tree).clock_ms, 2_000);
    assert!(is_remembered(&tree, &policy, &[1; 16]));
    apply_entry_with(&tree, &policy, 4, 2_000 + 60_001, &[], true);
    assert!(!is_remembered(&tree, &policy, &[1; 16]));
    assert!(!range_remembered(&tree));
    let stored = tree.get(COUNTS_KEY).expect("get").expect("counts");
    assert_eq!(
        decode::<(u64, u64, u64, u64, u64)>(tree.name(), &stored).expect("decode"),
        (0, 0, 62_001, 0, 0),
        "written in full"
    );
}

/// The counts as the build before buckets wrote them (three fields) read as nothing
/// recorded in buckets yet.
#[test]
fn counts_written_before_buckets_are_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_engine, tree) = tree(dir.path());
    tree.insert(COUNTS_KEY, &encode(&(5u64, 2u64, 9_000u64)).expect("encode"))
        .expect("insert");
    assert_eq!(
        counts(&tree),
        Counts {
            writes: 5,
            delete_ranges: 2,
            clock_ms: 9_000,
            writes_recorded: 0,
            delete_ranges_recorded: 0,
        }
    );
}

/// The shard's clock is the highest its entries carried: an entry stamped below it (a
/// leader that anchored before applying its predecessor's last entries) is recorded at
/// the shard's clock, so its records age no faster than the entries before it.
#[test]
fn the_shard_clock_never_goes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_engine, tree) = tree(dir.path());
    let policy = policy(0, 100);
    // A retry-only entry (nothing recorded) carries 10,000; the next is stamped 5,000.
    entry(&tree, &policy, 1, 10_000, &[]);
    entry(&tree, &policy, 2, 5_000, &[2]);
    assert_eq!(counts(&tree).clock_ms, 10_000);
    // Past 5,000 + the window, not past 10,000 + the window: still remembered.
    entry(&tree, &policy, 3, 66_000, &[]);
    assert_eq!(remembered(&tree, &policy, [2]), vec![2]);
    entry(&tree, &policy, 4, 70_001, &[]);
    assert_eq!(remembered(&tree, &policy, [2]), Vec::<u8>::new());
}

/// Issue 14, defect 5, in buckets: under sustained batched load — a thousand entries of 256
/// records each (31 times the cap), all within the window — exactly the last `max_records`
/// requests are remembered, no entry removes a key (records go in the overwrite of their
/// bucket), and the buckets hold at most the records remembered plus those of buckets not
/// written since they were let go. Once the clock passes the window, the last
/// `min_records` stay.
#[test]
fn sustained_batched_load_stays_under_the_cap() {
    const PER_ENTRY: u64 = 256;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_engine, tree) = tree(dir.path());
    let policy = policy(1_024, 8_192);
    let mut next_id = 0;
    let mut batch_of = |n: u64| -> Vec<RequestId> {
        let ids = (next_id..next_id + n).map(nth_id).collect();
        next_id += n;
        ids
    };
    let entries = 1_000;
    for index in 1..=entries {
        let (_, removed) = apply_entry_with(&tree, &policy, index, 1_000, &batch_of(PER_ENTRY), false);
        assert_eq!(removed, 0, "entry {index} removed keys");
    }
    let newest = entries * PER_ENTRY;
    assert_eq!(
        remembered_ids(&tree, &policy, newest - 8_192 - 256..newest),
        8_192,
        "the last max_records, no more"
    );
    let (buckets, held, most) = write_buckets(&tree);
    assert_eq!(buckets as u64, BUCKETS, "every bucket written");
    // The 8,192 remembered, and records let go in buckets not written since: a bucket is
    // written once per 16,384 requests on average, so up to about as many more.
    assert!(
        held as u64 <= policy.max_records + 2 * BUCKETS,
        "{held} records held"
    );
    println!("{held} records held in {buckets} buckets");
    assert!(most <= MAX_RECORDS_PER_BUCKET, "{most} in one bucket");

    // The clock passes the window: entries of one record each leave the last
    // `min_records` remembered and forget the rest.
    let later = 1_000 + 60_001;
    apply_entry(&tree, &policy, entries + 1, later, &batch_of(1));
    let newest = next_id;
    assert_eq!(
        remembered_ids(&tree, &policy, newest - policy.min_records - 256..newest),
        policy.min_records,
        "the last min_records are remembered, and no older one"
    );
}

/// One entry of a generated history: how many writes it records and how its clock moves
/// (a jump or strobe of minutes either way, or a step).
#[derive(Debug, Clone)]
struct Step {
    records: u64,
    clock_delta_ms: i64,
}

fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
    use proptest::prelude::*;
    let delta = prop_oneof![
        4 => 0i64..2_000,
        1 => Just(5 * 60_000i64),
        1 => Just(-5 * 60_000i64),
    ];
    proptest::collection::vec(
        (0u64..=64, delta).prop_map(|(records, clock_delta_ms)| Step {
            records,
            clock_delta_ms,
        }),
        1..80,
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Whatever the entries' sizes and clocks (jumps and strobes of five minutes): a
    /// request is remembered exactly as the policy says — while fewer than `min_records`
    /// were recorded after it, or fewer than `max_records` and its entry's clock is within
    /// the window of the shard's — no entry removes a key; and a replica that restarted from
    /// a copy of the tree midway (a snapshot) ends with exactly the same tree.
    #[test]
    fn remembering_is_exact_and_deterministic(history in steps()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = storage::open(dir.path()).expect("engine");
        let replica = engine.open_tree("replica").expect("tree");
        let copied = engine.open_tree("copied").expect("tree");
        let policy = DedupPolicy { window_ms: 60_000, min_records: 32, max_records: 256 };
        let mut clock_ms: i64 = 10_000_000;
        let mut shard_clock_ms = 0u64;
        let mut next_id = 0;
        // Request ids recorded by each entry so far, oldest first, with the shard's clock
        // after their entry.
        let mut recorded: Vec<(Vec<u64>, u64)> = Vec::new();
        for (index, step) in (1u64..).zip(&history) {
            clock_ms = (clock_ms + step.clock_delta_ms).max(0);
            shard_clock_ms = shard_clock_ms.max(clock_ms as u64);
            let ids: Vec<u64> = (next_id..next_id + step.records).collect();
            next_id += step.records;
            let request_ids: Vec<RequestId> = ids.iter().map(|n| nth_id(*n)).collect();
            let (_, removed) = apply_entry_with(&replica, &policy, index, clock_ms as u64, &request_ids, false);
            if index as usize == history.len() / 2 {
                for (key, value) in dump(&replica) {
                    copied.insert(&key, &value).expect("copy");
                }
            } else if index as usize > history.len() / 2 {
                apply_entry(&copied, &policy, index, clock_ms as u64, &request_ids);
            }
            recorded.push((ids, shard_clock_ms));
            proptest::prop_assert_eq!(removed, 0);
            let mut newer = 0;
            for (ids, entry_clock_ms) in recorded.iter().rev() {
                for n in ids.iter().rev() {
                    let expected = newer < policy.min_records
                        || (newer < policy.max_records
                            && entry_clock_ms + policy.window_ms >= shard_clock_ms);
                    proptest::prop_assert_eq!(
                        is_remembered(&replica, &policy, &nth_id(*n)),
                        expected,
                        "request {} with {} recorded after it", n, newer
                    );
                    newer += 1;
                }
            }
        }
        if history.len() > 1 {
            proptest::prop_assert_eq!(dump(&replica), dump(&copied));
        }
    }
}
