//! A rewrite (garbage collection copying an idle group out of the oldest segment) queues its
//! copies as appends do: a chunk at a time, each waiting for queue room, never the whole
//! group past [`WalOptions::max_queued_bytes`] at once.

use std::ops::Bound;
use std::sync::mpsc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use ringkv_wal::{Wal, WalOptions};

const ENTRY_BYTES: usize = 64 << 10;
/// The idle group's live bytes: over one chunk of a rewrite (1 MiB).
const IDLE_ENTRIES: u64 = 24;

/// With the writer held and a queue bound of 64 KiB, the rewrite of an idle group of 1.5 MiB
/// queues at most one chunk; released, it finishes, the oldest segment goes and the group's
/// entries are intact.
#[test]
fn a_rewrite_waits_for_queue_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = WalOptions {
        segment_bytes: 4 << 20,
        max_segments: 2,
        max_queued_bytes: 64 << 10,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir.path(), options).expect("open");
    let idle: Vec<Vec<u8>> = (0..IDLE_ENTRIES).map(|n| vec![n as u8; ENTRY_BYTES]).collect();
    wal.append(1, 1, &idle).expect("idle group");
    for index in 1..=160u64 {
        wal.append(2, index, &[vec![7u8; ENTRY_BYTES]])
            .expect("busy group");
    }
    wal.purge(2, 160).expect("purge");
    wal.sync().expect("sync");
    assert!(wal.stats().segments > 2, "{:?}", wal.stats());

    let release_tx = hold_writer(&wal);
    let before = wal.stats().appended_bytes;
    let collector = {
        let wal = wal.clone();
        std::thread::spawn(move || wal.collect_garbage())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let queued = loop {
        let queued = wal.stats().appended_bytes - before;
        if queued > 0 {
            break queued;
        }
        assert!(Instant::now() < deadline, "the rewrite never queued anything");
        std::thread::yield_now();
    };
    let idle_bytes = IDLE_ENTRIES * ENTRY_BYTES as u64;
    assert!(
        queued < idle_bytes * 3 / 4,
        "the rewrite queued {queued} bytes at once past a queue bound of 64 KiB"
    );
    release_tx.send(()).expect("release");
    let deleted = collector.join().expect("collector").expect("collect");
    assert!(deleted > 0, "{:?}", wal.stats());
    assert!(wal.stats().rewritten_groups > 0, "{:?}", wal.stats());
    let entries = wal
        .read(1, Bound::Unbounded, Bound::Unbounded, usize::MAX)
        .expect("read");
    assert_eq!(entries.len() as u64, IDLE_ENTRIES);
    assert!(entries
        .iter()
        .all(|(index, bytes)| *bytes == vec![(*index - 1) as u8; ENTRY_BYTES]));
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), WalOptions::default()).expect("reopen");
    let entries = wal
        .read(1, Bound::Unbounded, Bound::Unbounded, usize::MAX)
        .expect("read");
    assert_eq!(entries.len() as u64, IDLE_ENTRIES, "the copies are durable");
}

/// Holds the writer thread in an `on_written` callback until the returned sender sends (or
/// 60 s pass). A callback registered once the writer has already written everything runs at
/// once on the caller's thread: it then returns without waiting, and another append is
/// tried, until one is registered while its append is still queued.
fn hold_writer(wal: &Wal) -> mpsc::Sender<()> {
    let caller: ThreadId = std::thread::current().id();
    for index in 1..=1000u64 {
        let (held_tx, held_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        wal.append(3, index, &[b"hold".to_vec()]).expect("append");
        wal.on_written(Box::new(move |_| {
            let on_writer = std::thread::current().id() != caller;
            let _ = held_tx.send(on_writer);
            if on_writer {
                let _ = release_rx.recv_timeout(Duration::from_secs(60));
            }
        }));
        let on_writer = held_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the callback runs");
        if on_writer {
            return release_tx;
        }
    }
    panic!("every append was written before its callback was registered");
}
