//! The writer thread: what callers queue is readable at once, written in order, and
//! acknowledged only after the write (and, for `on_durable`, the sync) covering it; a full
//! queue holds callers back; closing writes and syncs what is queued, then refuses writes.

use std::ops::Bound;
use std::sync::mpsc;
use std::time::Duration;

use ringkv_wal::{Wal, WalError, WalOptions};

fn entries(wal: &Wal, group: u64) -> Vec<(u64, Vec<u8>)> {
    wal.read(group, Bound::Unbounded, Bound::Unbounded, usize::MAX)
        .expect("read")
}

/// Callbacks come back in the order they were registered, each after a sync that ran after
/// it was registered; `on_written` needs no sync.
#[test]
fn callbacks_fire_in_order_after_the_sync_covering_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), WalOptions::default()).expect("open");
    let (tx, rx) = mpsc::channel();
    for n in 0..50u64 {
        // Read before the append: the writer may sync it before the next line runs.
        let syncs_before = wal.stats().syncs;
        wal.append(1, n + 1, &[n.to_le_bytes()]).expect("append");
        let (tx, observer) = (tx.clone(), wal.clone());
        wal.on_durable(Box::new(move |result| {
            let syncs = observer.stats().syncs;
            let _ = tx.send((n, result.is_ok(), syncs > syncs_before));
        }));
    }
    let acknowledged: Vec<(u64, bool, bool)> = (0..50)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("acknowledged"))
        .collect();
    for (position, (n, ok, synced)) in acknowledged.iter().enumerate() {
        assert_eq!(*n, position as u64, "in registration order: {acknowledged:?}");
        assert!(*ok && *synced, "acknowledged after a sync: {acknowledged:?}");
    }
    assert!(wal.stats().syncs <= 50, "{:?}", wal.stats());

    let syncs = wal.stats().syncs;
    wal.append(1, 51, &[b"written".to_vec()]).expect("append");
    let (tx, rx) = mpsc::channel();
    wal.on_written(Box::new(move |result| {
        let _ = tx.send(result.is_ok());
    }));
    assert!(rx.recv_timeout(Duration::from_secs(10)).expect("acknowledged"));
    assert_eq!(wal.stats().syncs, syncs, "on_written runs no sync");
}

/// What `append` queued is readable before the writer gets to it and after; with a queue of
/// one byte every append waits for the writer, and all of them land, in order.
#[test]
fn a_full_queue_holds_appends_back_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = WalOptions {
        max_queued_bytes: 1,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir.path(), options).expect("open");
    let writers: Vec<_> = (0..4u64)
        .map(|group| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                for index in 1..=100u64 {
                    wal.append(group, index, &[format!("{group}/{index}")])
                        .expect("append");
                    let last = wal
                        .read(group, Bound::Included(index), Bound::Included(index), usize::MAX)
                        .expect("read");
                    assert_eq!(last, vec![(index, format!("{group}/{index}").into_bytes())]);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    wal.sync().expect("sync");
    let stats = wal.stats();
    assert!(stats.writes <= 400, "{stats:?}");
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), WalOptions::default()).expect("reopen");
    for group in 0..4u64 {
        let found = entries(&wal, group);
        assert_eq!(found.len(), 100, "group {group}");
        assert!(found
            .iter()
            .all(|(index, bytes)| bytes == format!("{group}/{index}").as_bytes()));
    }
}

/// Many small appends queued together go out in far fewer `write`s and syncs than appends.
#[test]
fn queued_appends_share_writes_and_syncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), WalOptions::default()).expect("open");
    let threads: Vec<_> = (0..8u64)
        .map(|group| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                for index in 1..=50u64 {
                    wal.append(group, index, &[vec![7u8; 100]]).expect("append");
                    wal.sync().expect("sync");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    let stats = wal.stats();
    assert!(stats.syncs < 400, "some syncs were shared: {stats:?}");
    assert!(stats.writes <= 400, "{stats:?}");
}

/// `close` writes and syncs what is queued and stops the writer; later writes are refused,
/// reads go on, and a reopen finds everything.
#[test]
fn close_flushes_and_refuses_later_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), WalOptions::default()).expect("open");
    for index in 1..=20u64 {
        wal.append(3, index, &[index.to_le_bytes()]).expect("append");
    }
    wal.set_meta(3, b'v', b"vote").expect("meta");
    let other = wal.clone();
    wal.close().expect("close");
    assert!(matches!(other.append(3, 21, &[b"late"]), Err(WalError::Closed)));
    assert!(matches!(other.set_meta(3, b'v', b"late"), Err(WalError::Closed)));
    assert_eq!(other.meta(3, b'v'), Some(b"vote".to_vec()), "reads go on");
    assert_eq!(entries(&other, 3).len(), 20);
    let (tx, rx) = mpsc::channel();
    other.on_durable(Box::new(move |result| {
        let _ = tx.send(result.is_ok());
    }));
    assert!(
        rx.recv_timeout(Duration::from_secs(10)).expect("answered"),
        "everything is durable"
    );
    drop(wal);
    drop(other);
    let (wal, _) = Wal::open(dir.path(), WalOptions::default()).expect("reopen");
    assert_eq!(entries(&wal, 3).len(), 20);
    assert_eq!(wal.meta(3, b'v'), Some(b"vote".to_vec()));
}

/// The writer is signalled only while it sleeps (a busy one finds new work when its batch is
/// done). Callers on several threads, some finding it asleep and some while it writes, are
/// all acknowledged: no signal is lost between the writer marking itself asleep and the
/// callers reading the mark. Every 50 records the callers meet at a barrier, so the writer
/// runs out of work, and then come back at once.
#[test]
fn no_caller_is_left_waiting_whether_the_writer_sleeps_or_works() {
    const THREADS: u64 = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), WalOptions::default()).expect("open");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|group| {
            let (wal, barrier) = (wal.clone(), barrier.clone());
            std::thread::spawn(move || {
                for n in 0..300u64 {
                    if n % 50 == 0 {
                        barrier.wait();
                    }
                    wal.append(group, n + 1, &[n.to_le_bytes()]).expect("append");
                    let (tx, rx) = mpsc::sync_channel(1);
                    let callback: ringkv_wal::Done = Box::new(move |result| {
                        let _ = tx.send(result.is_ok());
                    });
                    match n % 3 {
                        0 => wal.on_durable(callback),
                        _ => wal.on_written(callback),
                    }
                    let acknowledged = rx.recv_timeout(Duration::from_secs(10));
                    assert_eq!(acknowledged, Ok(true), "group {group}, entry {n}");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a caller thread failed");
    }
    for group in 0..THREADS {
        assert_eq!(entries(&wal, group).len(), 300, "group {group}");
    }
}
