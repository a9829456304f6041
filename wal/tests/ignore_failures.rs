//! The negative control `WalOptions::unsafe_ignore_failures`: a failed write is treated as
//! success — the log neither stops nor reports it, so its caller would acknowledge an entry
//! no disk holds. The failure is a real one: the file size limit (`RLIMIT_FSIZE`, `EFBIG`),
//! which fails a write as a full disk does. It is process-wide, so this binary holds one test.
//! (Failed syncs are ignored the same way; the harness injects them with faultfs, see
//! `jepsen/tests/fail_stop_control.rs`.)

use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};

use ringkv_wal::{Wal, WalOptions};

static FAILURES: AtomicUsize = AtomicUsize::new(0);

fn count_failure(_reason: &str) {
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

/// Under the control, a write that cannot be made "succeeds": no report, the log goes on
/// accepting writes and syncs — and the entry is not there to read back, nor after a reopen.
#[test]
fn an_ignored_failed_write_is_acknowledged_and_lost() {
    // SAFETY: ignoring SIGXFSZ makes a write past the limit fail with EFBIG instead of killing
    // the process; no other handler is installed in this test binary.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let dir = tempfile::tempdir().expect("tempdir");
    let options = WalOptions {
        on_failure: Some(count_failure),
        // Room preallocated past the limit would take the write: the entry below outgrows it.
        preallocate_bytes: 4096,
        unsafe_ignore_failures: true,
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
    let entry = vec![9u8; 64 << 10];
    wal.append(7, 3, std::slice::from_ref(&entry))
        .expect("the failed write is treated as success");
    wal.sync().expect("and so is the sync after it");
    set_file_size_limit(libc::RLIM_INFINITY);
    wal.append(7, 4, &[b"four".to_vec()])
        .expect("the log still accepts writes");
    wal.sync().expect("sync");
    assert_eq!(FAILURES.load(Ordering::SeqCst), 0, "nothing reported");
    // The entry's place is a hole (zeros): what reads back is not what was written.
    let lost = wal.read(7, Bound::Included(3), Bound::Included(3), usize::MAX);
    assert!(
        !matches!(&lost, Ok(read) if read.as_slice() == [(3, entry.clone())]),
        "the entry was never written"
    );
    drop(wal);

    let (wal, recovery) = Wal::open(dir.path(), WalOptions::default()).expect("reopen");
    assert!(
        recovery.truncated_bytes > 0,
        "recovery cut at the hole: {recovery:?}"
    );
    let entries = wal
        .read(7, Bound::Unbounded, Bound::Unbounded, usize::MAX)
        .expect("read");
    assert_eq!(entries, vec![(1, b"one".to_vec()), (2, b"two".to_vec())]);
}
