//! On a disk whose syncs are slow, appends, value reads and entry reads do not wait for a
//! running sync. Under FUSE (and so under `ringkv-faultfs`, which the jepsen nemeses use) a
//! `write` to a file waits for a running `fsync` of that file (the kernel holds the inode
//! lock through it): when appends wrote inline, holding the log's state lock, an append —
//! and every caller behind the lock, such as a group's saved vote answering a leadership
//! confirmation — waited for the whole sync. Now only the writer thread waits.
//!
//! Needs FUSE (root and /dev/fuse); `RINGKV_SKIP_FUSE_TESTS=1` skips it where FUSE is missing.

use std::ops::Bound;
use std::time::{Duration, Instant};

mod common;

use ringkv_wal::{Wal, WalOptions};

/// Every sync takes this long.
const SLOW_SYNC: Duration = Duration::from_millis(1000);
/// The calls under test must return well within one sync.
const FAST: Duration = Duration::from_millis(300);

/// While a sync of the active segment runs (slowed to a second), an append of another
/// group, a value write and read, and a read of the new entry all return at once; the
/// entry is durable after the next sync.
#[test]
fn appends_and_reads_do_not_wait_for_a_running_sync() {
    let Some(common::FuseDir {
        dir: _dir,
        mount,
        mnt,
    }) = common::mount_or_skip("appends_and_reads_do_not_wait_for_a_running_sync")
    else {
        return;
    };
    let control = mount.control();
    let (wal, _) = Wal::open(&mnt.join("wal"), WalOptions::default()).expect("open");
    wal.append(1, 1, &[b"first".to_vec()]).expect("append");
    wal.sync().expect("sync");

    control.slow_syncs(SLOW_SYNC);
    wal.append(1, 2, &[b"second".to_vec()]).expect("append");
    let syncing = {
        let wal = wal.clone();
        std::thread::spawn(move || wal.sync())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while control.stats().slowed_syncs == 0 {
        assert!(Instant::now() < deadline, "the sync never reached the disk");
        std::thread::yield_now();
    }

    let started = Instant::now();
    wal.append(2, 1, &[b"other group".to_vec()]).expect("append");
    wal.set_meta(2, b'v', b"vote").expect("set a value");
    let vote = wal.meta(2, b'v');
    let read = wal
        .read(2, Bound::Included(1), Bound::Included(1), usize::MAX)
        .expect("read");
    let took = started.elapsed();
    assert_eq!(vote, Some(b"vote".to_vec()));
    assert_eq!(read, vec![(1, b"other group".to_vec())]);
    assert!(
        took < FAST,
        "an append, a value and a read waited {took:?} behind a sync of {SLOW_SYNC:?}"
    );

    syncing.join().expect("sync thread").expect("slow sync");
    wal.sync().expect("sync the second append");
    control.slow_syncs(Duration::ZERO);
    drop(wal);
    let (wal, _) = Wal::open(&mnt.join("wal"), WalOptions::default()).expect("reopen");
    let read = wal
        .read(2, Bound::Unbounded, Bound::Unbounded, usize::MAX)
        .expect("read");
    assert_eq!(read, vec![(1, b"other group".to_vec())]);
    drop(wal);
    mount.unmount().expect("unmount");
}
