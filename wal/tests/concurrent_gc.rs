//! Garbage collections that run at once (every group's purger collects after its purge)
//! delete each free segment once and never fail the log: before, both chose the same
//! segments and the second one's delete failed with `ENOENT`, which stopped the node.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use ringkv_wal::{Wal, WalOptions};

static FAILURES: AtomicUsize = AtomicUsize::new(0);

fn count_failure(reason: &str) {
    eprintln!("the log failed: {reason}");
    FAILURES.fetch_add(1, Ordering::SeqCst);
}

fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .expect("list")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.file_name().to_string_lossy().ends_with(".wal"))
        })
        .count()
}

/// Collections started together (threads released by a barrier), over many rounds: none
/// fails, `on_failure` is never called, and the segments they report deleted add up to the
/// files that went away, each counted once.
#[test]
fn concurrent_collections_delete_each_segment_once() {
    const COLLECTORS: usize = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = WalOptions {
        segment_bytes: 4096,
        // No rewrites: only free segments are deleted.
        max_segments: usize::MAX,
        on_failure: Some(count_failure),
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir.path(), options).expect("open");
    let mut next = 1u64;
    for round in 0..20 {
        let first = next;
        for _ in 0..20 {
            wal.append(1, next, &[vec![round as u8; 1000]]).expect("append");
            next += 1;
        }
        wal.purge(1, next - 1).expect("purge");
        wal.sync().expect("sync");
        let files_before = segment_files(dir.path());
        let deleted_before = wal.stats().deleted_segments;
        let barrier = Arc::new(Barrier::new(COLLECTORS));
        let collectors: Vec<_> = (0..COLLECTORS)
            .map(|_| {
                let (wal, barrier) = (wal.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    wal.collect_garbage()
                })
            })
            .collect();
        let results: Vec<_> = collectors
            .into_iter()
            .map(|collector| collector.join().expect("collector"))
            .collect();
        let deleted: usize = results
            .iter()
            .map(|result| match result {
                Ok(deleted) => *deleted,
                Err(err) => {
                    panic!("round {round} (entries from {first}): a collection failed: {err}; {results:?}")
                }
            })
            .sum();
        assert!(deleted > 0, "round {round}: something was free: {results:?}");
        assert_eq!(
            segment_files(dir.path()),
            files_before - deleted,
            "round {round}: each deleted segment is counted once: {results:?}"
        );
        assert_eq!(
            wal.stats().deleted_segments - deleted_before,
            deleted as u64,
            "round {round}"
        );
        assert_eq!(
            FAILURES.load(Ordering::SeqCst),
            0,
            "round {round}: the log never failed"
        );
    }
}
