//! The log against a model: every sequence of operations, reopened at any point, recovers
//! exactly the acknowledged (synced) state; torn tails are cut; segments are collected.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use proptest::prelude::*;
use ringkv_wal::{LogSize, Wal, WalError, WalOptions};

fn small() -> WalOptions {
    WalOptions {
        segment_bytes: 512,
        max_segments: 3,
        ..WalOptions::default()
    }
}

fn entries(wal: &Wal, group: u64) -> Vec<(u64, Vec<u8>)> {
    wal.read(group, Bound::Unbounded, Bound::Unbounded, usize::MAX)
        .expect("read")
}

/// Appends, overwrites, truncation, purge, values and drops survive a reopen.
#[test]
fn operations_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, recovery) = Wal::open(dir.path(), WalOptions::default()).expect("open");
        assert_eq!(recovery.records, 0);
        wal.append(1, 1, &[b"a1".as_slice(), b"a2", b"a3", b"a4"])
            .expect("append");
        wal.append(2, 10, &[b"b10".as_slice()]).expect("append");
        wal.truncate(1, 3).expect("truncate");
        wal.append(1, 3, &[b"A3".as_slice()]).expect("overwrite");
        wal.purge(1, 1).expect("purge");
        wal.set_meta(1, b'v', b"vote-1").expect("meta");
        wal.set_meta(1, b'v', b"vote-2").expect("meta");
        wal.set_meta(3, b'v', b"gone").expect("meta");
        wal.drop_group(3).expect("drop");
        wal.sync().expect("sync");
    }
    let (wal, recovery) = Wal::open(dir.path(), WalOptions::default()).expect("reopen");
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(entries(&wal, 1), vec![(2, b"a2".to_vec()), (3, b"A3".to_vec())]);
    assert_eq!(entries(&wal, 2), vec![(10, b"b10".to_vec())]);
    assert_eq!(wal.meta(1, b'v'), Some(b"vote-2".to_vec()));
    assert_eq!(wal.groups(), vec![1, 2]);
    assert_eq!(wal.bounds(1), Some((2, 3)));
    assert_eq!(wal.meta(3, b'v'), None);
}

/// A read stops at its byte budget but always returns at least one entry.
#[test]
fn reads_honour_the_byte_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), WalOptions::default()).expect("open");
    let big = vec![7u8; 100];
    wal.append(1, 1, &[&big, &big, &big]).expect("append");
    assert_eq!(
        wal.read(1, Bound::Included(1), Bound::Unbounded, 10)
            .expect("read")
            .len(),
        1
    );
    assert_eq!(
        wal.read(1, Bound::Included(1), Bound::Unbounded, 250)
            .expect("read")
            .len(),
        2
    );
    assert_eq!(
        wal.read(1, Bound::Included(2), Bound::Excluded(3), 1000)
            .expect("read")
            .len(),
        1
    );
    assert!(wal
        .read(1, Bound::Included(3), Bound::Excluded(3), 1000)
        .expect("read")
        .is_empty());
    assert!(wal
        .read(9, Bound::Unbounded, Bound::Unbounded, 1000)
        .expect("read")
        .is_empty());
}

/// A torn write at the end of the last segment is cut at recovery; what came before stays
/// and the log accepts appends again.
#[test]
fn torn_tail_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // Without preallocation the file ends where the second record does.
        let unallocated = WalOptions {
            preallocate_bytes: 0,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(dir.path(), unallocated).expect("open");
        wal.append(1, 1, &[b"one".as_slice()]).expect("append");
        wal.append(1, 2, &[b"two".as_slice()]).expect("append");
        wal.sync().expect("sync");
    }
    let segment = only_segment(dir.path());
    let len = std::fs::metadata(&segment).expect("meta").len();
    // Cut the second record in half, then add garbage after a valid prefix.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open");
    file.set_len(len - 4).expect("cut");
    drop(file);
    let (wal, recovery) = Wal::open(dir.path(), WalOptions::default()).expect("reopen");
    assert!(recovery.truncated_bytes > 0);
    assert_eq!(entries(&wal, 1), vec![(1, b"one".to_vec())]);
    wal.append(1, 2, &[b"again".as_slice()])
        .expect("append after recovery");
    wal.sync().expect("sync");
    drop(wal);
    let (wal, recovery) = Wal::open(dir.path(), WalOptions::default()).expect("reopen");
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(
        entries(&wal, 1),
        vec![(1, b"one".to_vec()), (2, b"again".to_vec())]
    );
}

fn only_segment(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|entry| entry.expect("entry").path())
        .find(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .expect("segment")
}

/// The active segment is preallocated ahead of the writes: the file is longer than its
/// records, and recovery takes the zeros after them for unwritten room, not a torn write
/// (nothing is cut, the room stays), and appends go on after the last record.
#[test]
fn preallocated_room_is_not_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = WalOptions {
        preallocate_bytes: 64 << 10,
        ..WalOptions::default()
    };
    {
        let (wal, _) = Wal::open(dir.path(), options).expect("open");
        wal.append(1, 1, &[b"one".as_slice(), b"two"]).expect("append");
        wal.sync().expect("sync");
        assert_eq!(wal.stats().preallocations, 1);
    }
    let segment = only_segment(dir.path());
    let bytes = std::fs::read(&segment).expect("read");
    let data_end = bytes.iter().rposition(|&byte| byte != 0).expect("records") + 1;
    assert!(data_end < 200, "two small records, {data_end} bytes");
    assert_eq!(bytes.len(), (64 << 10) + 8, "preallocated past the header");
    for round in 0..2u64 {
        let (wal, recovery) = Wal::open(dir.path(), options).expect("reopen");
        assert_eq!(recovery.truncated_bytes, 0, "round {round}: {recovery:?}");
        let len = std::fs::metadata(&segment).expect("meta").len();
        assert_eq!(len, (64 << 10) + 8, "round {round}: the room is kept");
        let expected: Vec<(u64, Vec<u8>)> = [b"one".to_vec(), b"two".to_vec()]
            .into_iter()
            .chain((0..round).map(|n| format!("more{n}").into_bytes()))
            .enumerate()
            .map(|(at, entry)| (at as u64 + 1, entry))
            .collect();
        assert_eq!(entries(&wal, 1), expected, "round {round}");
        wal.append(1, 3 + round, &[format!("more{round}").into_bytes()])
            .expect("append");
        wal.sync().expect("sync");
    }

    // A record torn inside the room (its last bytes never reached the disk, zeros follow):
    // cut, and the room allocated again by the next write.
    let bytes = std::fs::read(&segment).expect("read");
    let data_end = bytes.iter().rposition(|&byte| byte != 0).expect("records") + 1;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open");
    std::os::unix::fs::FileExt::write_all_at(&file, &[0; 4], data_end as u64 - 4).expect("tear");
    drop(file);
    let (wal, recovery) = Wal::open(dir.path(), options).expect("reopen");
    assert!(recovery.truncated_bytes > 0, "{recovery:?}");
    assert_eq!(entries(&wal, 1).len(), 3, "the torn fourth entry is gone");
    wal.append(1, 4, &[b"again".as_slice()]).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    let (wal, recovery) = Wal::open(dir.path(), options).expect("reopen");
    assert_eq!(recovery.truncated_bytes, 0, "{recovery:?}");
    assert_eq!(entries(&wal, 1).last(), Some(&(4, b"again".to_vec())));
    assert!(std::fs::metadata(&segment).expect("meta").len() > (64 << 10));
}

/// A damaged record in a segment that is not the last is corruption: the open fails
/// rather than silently dropping acknowledged entries that follow it.
#[test]
fn corruption_before_the_last_segment_fails_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) = Wal::open(dir.path(), small()).expect("open");
        for index in 1..=40u64 {
            wal.append(1, index, &[vec![index as u8; 40]]).expect("append");
        }
        wal.sync().expect("sync");
    }
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|entry| entry.expect("entry").path())
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "small segments rotate");
    let mut bytes = std::fs::read(&segments[0]).expect("read");
    let at = bytes.len() - 10;
    bytes[at] ^= 0xff;
    std::fs::write(&segments[0], bytes).expect("write");
    match Wal::open(dir.path(), small()) {
        Err(WalError::Corrupt(_)) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("corruption went unnoticed"),
    }
}

/// The segment files of `dir`, oldest first.
fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|entry| entry.expect("entry").path())
        .collect();
    segments.sort();
    segments
}

/// The writer cuts a segment to the end of its frames before it starts the next, so only
/// the last segment may end in preallocated room. A zeroed end of an earlier segment is
/// synced entries lost, and fails the open; a format version 1 segment, written when
/// segments kept their room, still opens with its room.
#[test]
fn only_the_last_segment_ends_in_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = WalOptions {
        segment_bytes: 4096,
        max_segments: 100,
        preallocate_bytes: 4096,
        ..WalOptions::default()
    };
    let written: Vec<(u64, Vec<u8>)> = (1..=40u64).map(|index| (index, vec![index as u8; 200])).collect();
    {
        let (wal, _) = Wal::open(dir.path(), options).expect("open");
        for (index, entry) in &written {
            wal.append(1, *index, &[entry]).expect("append");
        }
        wal.sync().expect("sync");
        assert!(wal.stats().preallocations > 2, "{:?}", wal.stats());
    }
    let files = segments(dir.path());
    assert!(files.len() >= 3, "small segments rotate: {files:?}");
    for earlier in &files[..files.len() - 1] {
        let bytes = std::fs::read(earlier).expect("read");
        assert!(bytes.len() < 4096, "{earlier:?} was cut: {} bytes", bytes.len());
        let last_entry_byte = *bytes.last().expect("frames");
        assert_ne!(last_entry_byte, 0, "{earlier:?} ends in its last frame");
    }
    let last = std::fs::read(files.last().expect("last")).expect("read");
    assert_eq!(last.len(), 4096, "the last segment keeps its room");
    let (wal, recovery) = Wal::open(dir.path(), options).expect("reopen");
    assert_eq!(recovery.truncated_bytes, 0, "{recovery:?}");
    assert_eq!(entries(&wal, 1), written);
    drop(wal);

    // The first segment's end zeroed (the disk lost its last frame and kept the length):
    // corruption, not room.
    let first = &files[0];
    let original = std::fs::read(first).expect("read");
    let mut zeroed = original.clone();
    zeroed.resize(4096, 0);
    // Every frame here is one 200-byte entry's append: its length is the first frame's.
    let body_len = u32::from_le_bytes(original[8..12].try_into().expect("4 bytes")) as usize;
    let frame_start = original.len() - (8 + body_len);
    zeroed[frame_start..].fill(0);
    std::fs::write(first, &zeroed).expect("write");
    match Wal::open(dir.path(), options) {
        Err(WalError::Corrupt(reason)) => assert!(reason.contains("zero bytes"), "{reason}"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a zeroed end of an earlier segment went unnoticed"),
    }

    // A version 1 segment that kept its room past its last frame opens as before.
    let mut roomy = original;
    roomy[..8].copy_from_slice(b"RKVWAL01");
    roomy.resize(4096, 0);
    std::fs::write(first, &roomy).expect("write");
    let (wal, recovery) = Wal::open(dir.path(), options).expect("a version 1 segment opens");
    assert_eq!(recovery.truncated_bytes, 0, "{recovery:?}");
    assert_eq!(entries(&wal, 1), written);
}

/// Purged segments are deleted; an idle group pinning the oldest segment is rewritten
/// forward once there are too many segments, and keeps its entries and vote.
#[test]
fn segments_are_collected_and_idle_groups_rewritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), small()).expect("open");
    wal.append(9, 1, &[b"idle-1".as_slice(), b"idle-2"])
        .expect("idle append");
    wal.set_meta(9, b'v', b"idle vote").expect("idle vote");
    for index in 1..=200u64 {
        wal.append(1, index, &[vec![1u8; 30]]).expect("append");
        if index % 20 == 0 {
            wal.purge(1, index - 5).expect("purge");
            wal.collect_garbage().expect("gc");
        }
    }
    let stats = wal.stats();
    assert!(stats.deleted_segments > 0, "{stats:?}");
    assert!(stats.rewritten_groups > 0, "{stats:?}");
    assert!(stats.segments <= small().max_segments + 2, "{stats:?}");
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), small()).expect("reopen");
    assert_eq!(
        entries(&wal, 9),
        vec![(1, b"idle-1".to_vec()), (2, b"idle-2".to_vec())]
    );
    assert_eq!(wal.meta(9, b'v'), Some(b"idle vote".to_vec()));
    assert_eq!(wal.bounds(1), Some((196, 200)));
}

/// Groups holding much live log are not copied forward (they are busy and free the segment
/// at their next purge): segments then outnumber the limit until they do.
#[test]
fn busy_groups_are_not_rewritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), small()).expect("open");
    for index in 1..=60u64 {
        wal.append(1, index, &[vec![1u8; 40]]).expect("append");
    }
    assert_eq!(wal.collect_garbage().expect("gc"), 0);
    let stats = wal.stats();
    assert_eq!(stats.rewritten_groups, 0, "{stats:?}");
    assert!(stats.segments > small().max_segments, "{stats:?}");
    wal.purge(1, 60).expect("purge");
    assert!(
        wal.collect_garbage().expect("gc") > 0,
        "the purge frees the segments"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        group: u64,
        first: u64,
        count: u8,
        len: u8,
    },
    Truncate {
        group: u64,
        from: u64,
    },
    Purge {
        group: u64,
        upto: u64,
    },
    Meta {
        group: u64,
        value: u8,
    },
    Drop {
        group: u64,
    },
    Sync,
    Gc,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let group = 0u64..4;
    prop_oneof![
        6 => (group.clone(), 1u64..40, 1u8..5, 0u8..60).prop_map(|(group, first, count, len)| Op::Append { group, first, count, len }),
        1 => (group.clone(), 1u64..40).prop_map(|(group, from)| Op::Truncate { group, from }),
        1 => (group.clone(), 0u64..40).prop_map(|(group, upto)| Op::Purge { group, upto }),
        1 => (group.clone(), any::<u8>()).prop_map(|(group, value)| Op::Meta { group, value }),
        1 => group.prop_map(|group| Op::Drop { group }),
        1 => Just(Op::Sync),
        1 => Just(Op::Gc),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default, Clone, PartialEq, Debug)]
struct Model {
    entries: HashMap<u64, BTreeMap<u64, Vec<u8>>>,
    meta: HashMap<u64, Vec<u8>>,
}

impl Model {
    /// Each group's entries and their bytes, as [`Wal::log_sizes`] should count them.
    fn sizes(&self) -> BTreeMap<u64, LogSize> {
        self.entries
            .iter()
            .map(|(group, entries)| {
                let size = LogSize {
                    entries: entries.len(),
                    entry_bytes: entries.values().map(|bytes| bytes.len() as u64).sum(),
                };
                (*group, size)
            })
            .collect()
    }
}

/// The log's own count of each group's entries and bytes (groups with entries only: a
/// group holding only a value has no log to size).
fn log_sizes(wal: &Wal) -> BTreeMap<u64, LogSize> {
    wal.log_sizes()
        .into_iter()
        .filter(|(_, size)| size.entries > 0)
        .collect()
}

fn observe(wal: &Wal) -> Model {
    let mut model = Model::default();
    for group in 0..4 {
        let found: BTreeMap<u64, Vec<u8>> = entries(wal, group).into_iter().collect();
        if !found.is_empty() {
            model.entries.insert(group, found);
        }
        if let Some(value) = wal.meta(group, b'v') {
            model.meta.insert(group, value);
        }
    }
    model
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// After any sequence of operations (with syncs, collections and reopens in between,
    /// on tiny segments so rotation and rewriting happen often) the log holds exactly what
    /// the model says.
    #[test]
    fn matches_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path(), small()).expect("open");
        let mut model = Model::default();
        for (step, op) in ops.iter().enumerate() {
            match op.clone() {
                Op::Append { group, first, count, len } => {
                    let batch: Vec<Vec<u8>> = (0..count).map(|i| vec![step as u8 ^ i; len as usize]).collect();
                    wal.append(group, first, &batch).expect("append");
                    let entries = model.entries.entry(group).or_default();
                    for (i, bytes) in batch.into_iter().enumerate() {
                        entries.insert(first + i as u64, bytes);
                    }
                }
                Op::Truncate { group, from } => {
                    wal.truncate(group, from).expect("truncate");
                    if let Some(entries) = model.entries.get_mut(&group) {
                        entries.split_off(&from);
                    }
                }
                Op::Purge { group, upto } => {
                    wal.purge(group, upto).expect("purge");
                    if let Some(entries) = model.entries.get_mut(&group) {
                        *entries = entries.split_off(&(upto + 1));
                    }
                }
                Op::Meta { group, value } => {
                    wal.set_meta(group, b'v', &[value]).expect("meta");
                    model.meta.insert(group, vec![value]);
                }
                Op::Drop { group } => {
                    wal.drop_group(group).expect("drop");
                    model.entries.remove(&group);
                    model.meta.remove(&group);
                }
                Op::Sync => wal.sync().expect("sync"),
                Op::Gc => { wal.collect_garbage().expect("gc"); }
                Op::Reopen => {
                    drop(wal);
                    wal = Wal::open(dir.path(), small()).expect("reopen").0;
                }
            }
            model.entries.retain(|_, entries| !entries.is_empty());
            prop_assert_eq!(observe(&wal), model.clone(), "after step {} ({:?})", step, op);
            prop_assert_eq!(log_sizes(&wal), model.sizes(), "sizes after step {} ({:?})", step, op);
        }
        drop(wal);
        let (wal, recovery) = Wal::open(dir.path(), small()).expect("final reopen");
        prop_assert_eq!(recovery.truncated_bytes, 0);
        prop_assert_eq!(log_sizes(&wal), model.sizes());
        prop_assert_eq!(observe(&wal), model);
    }
}

/// The writer counts the bytes it writes and its fdatasyncs by latency (the node's metrics).
#[test]
fn counts_written_bytes_and_sync_latencies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), small()).expect("open");
    for index in 1..=10u64 {
        wal.append(1, index, &[vec![7u8; 30]]).expect("append");
    }
    wal.sync().expect("sync");
    let stats = wal.stats();
    assert!(stats.written_bytes >= 10 * 30, "{stats:?}");
    let counted: u64 = stats.sync_latency_counts.iter().sum();
    assert!(counted >= 1, "{stats:?}");
    assert!(counted <= stats.syncs, "{stats:?}");
    assert!(stats.sync_latency_nanos > 0, "{stats:?}");
}
