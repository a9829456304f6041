//! A power cut on a log whose active segment is preallocated: what was synced comes back,
//! what was written and not synced is gone, and the room preallocated ahead of the writes
//! reads as room (no torn tail), so the log appends after its last synced entry again.
//! The cut is `ringkv-faultfs`'s: everything written since a file's last sync (its size
//! change from the preallocation included) is dropped.
//!
//! Needs FUSE (root and /dev/fuse); `RINGKV_SKIP_FUSE_TESTS=1` skips it where FUSE is missing.

use std::ops::Bound;
use std::time::{Duration, Instant};

mod common;

use ringkv_wal::{Wal, WalOptions};

fn entries(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
    wal.read(1, Bound::Unbounded, Bound::Unbounded, usize::MAX)
        .expect("read")
}

fn numbered(from: u64, to: u64, tag: &str) -> Vec<Vec<u8>> {
    (from..=to).map(|n| format!("{tag}{n}").into_bytes()).collect()
}

#[test]
fn synced_entries_and_preallocated_room_survive_a_power_cut() {
    let Some(common::FuseDir {
        dir: _dir,
        mount,
        mnt,
    }) = common::mount_or_skip("synced_entries_and_preallocated_room_survive_a_power_cut")
    else {
        return;
    };
    let control = mount.control();
    let options = WalOptions {
        preallocate_bytes: 64 << 10,
        ..WalOptions::default()
    };
    let log = mnt.join("wal");

    let (wal, _) = Wal::open(&log, options).expect("open");
    wal.append(1, 1, &numbered(1, 3, "synced")).expect("append");
    wal.sync().expect("sync");
    assert_eq!(wal.stats().preallocations, 1, "the first write preallocated");
    let written = wal.stats().written_bytes;
    wal.append(1, 4, &numbered(4, 6, "unsynced")).expect("append");
    let deadline = Instant::now() + Duration::from_secs(10);
    while wal.stats().written_bytes == written {
        assert!(
            Instant::now() < deadline,
            "the writer never wrote the unsynced entries"
        );
        std::thread::yield_now();
    }
    let report = control.drop_unsynced();
    assert!(
        report.dropped_bytes > 0,
        "the unsynced entries were in the disk's cache: {report:?}"
    );
    // Closing writes what is queued (nothing: the writer wrote it all before the cut) and
    // syncs nothing new, as a process that died with the power.
    drop(wal);

    let (wal, recovery) = Wal::open(&log, options).expect("reopen after the cut");
    assert_eq!(
        recovery.truncated_bytes, 0,
        "the room after the synced entries is not a torn tail: {recovery:?}"
    );
    let synced: Vec<(u64, Vec<u8>)> = (1..=3).zip(numbered(1, 3, "synced")).collect();
    assert_eq!(entries(&wal), synced, "the synced entries, and nothing else");
    wal.append(1, 4, &numbered(4, 5, "again")).expect("append");
    wal.sync().expect("sync");
    drop(wal);

    let (wal, recovery) = Wal::open(&log, options).expect("reopen");
    assert_eq!(recovery.truncated_bytes, 0, "{recovery:?}");
    let expected: Vec<(u64, Vec<u8>)> = synced
        .into_iter()
        .chain((4..=5).zip(numbered(4, 5, "again")))
        .collect();
    assert_eq!(entries(&wal), expected);
    drop(wal);
    mount.unmount().expect("unmount");
}
