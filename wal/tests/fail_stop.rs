//! A failed write stops the log and is reported once to `on_failure`, so a node can stop at
//! once. The failure is a real one: the file size limit (`RLIMIT_FSIZE`, `EFBIG`), which
//! fails a write as a full disk does. It is process-wide, so this binary holds one test.

use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};

use ringkv_wal::{Wal, WalError, WalOptions};

static FAILURES: AtomicUsize = AtomicUsize::new(0);

fn count_failure(reason: &str) {
    assert!(reason.contains("write failed"), "{reason}");
    FAILURES.fetch_add(1, Ordering::SeqCst);
}

fn set_file_size_limit(bytes: libc::rlim_t) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid, initialised struct.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// A write that cannot be made (by the writer thread) marks the log failed and calls
/// `on_failure` once; the sync waiting for it fails; every later write and sync is refused;
/// a reopen recovers what was synced.
#[test]
fn a_failed_write_is_reported_once_and_stops_the_log() {
    // SAFETY: ignoring SIGXFSZ makes a write past the limit fail with EFBIG instead of killing
    // the process; no other handler is installed in this test binary.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let dir = tempfile::tempdir().expect("tempdir");
    let options = WalOptions {
        on_failure: Some(count_failure),
        // Room preallocated past the limit would take the write: the entry below outgrows it.
        preallocate_bytes: 4096,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir.path(), options).expect("open");
    wal.append(7, 1, &[b"one".to_vec(), b"two".to_vec()])
        .expect("append");
    wal.sync().expect("sync");
    let segment_len = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|entry| entry.expect("entry").metadata().expect("metadata").len())
        .max()
        .expect("a segment");

    set_file_size_limit(segment_len + 16);
    wal.append(7, 3, &[vec![0u8; 64 << 10]])
        .expect("queued: the writer thread writes it");
    let (tx, rx) = std::sync::mpsc::channel();
    wal.on_durable(Box::new(move |result| {
        // Reported before any waiter learns of it.
        let _ = tx.send((result, FAILURES.load(Ordering::SeqCst)));
    }));
    let (waited, reported) = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the waiter is answered");
    assert!(matches!(waited, Err(WalError::Failed(_))), "{waited:?}");
    assert_eq!(reported, 1, "on_failure ran before the waiter was failed");
    let failed = wal.sync();
    assert!(matches!(failed, Err(WalError::Failed(_))), "{failed:?}");
    assert_eq!(FAILURES.load(Ordering::SeqCst), 1, "the failure is reported");
    let refused = wal.append(7, 3, &[b"small".to_vec()]);
    assert!(matches!(refused, Err(WalError::Failed(_))), "{refused:?}");
    assert!(matches!(wal.set_meta(7, b'v', b"vote"), Err(WalError::Failed(_))));
    assert!(
        matches!(wal.sync(), Err(WalError::Failed(_))),
        "no sync after a failure"
    );
    assert_eq!(FAILURES.load(Ordering::SeqCst), 1, "reported once");
    set_file_size_limit(libc::RLIM_INFINITY);
    drop(wal);

    let (wal, _) = Wal::open(dir.path(), WalOptions::default()).expect("reopen");
    let entries = wal
        .read(7, Bound::Unbounded, Bound::Unbounded, usize::MAX)
        .expect("read");
    assert_eq!(entries, vec![(1, b"one".to_vec()), (2, b"two".to_vec())]);
}
