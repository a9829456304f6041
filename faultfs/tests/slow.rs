//! Slow syncs: every sync takes at least the delay and then succeeds, while reads, writes and
//! other syncs go on (they are not queued behind a slow sync).

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::Fixture;
use ringkv_faultfs::Control;

/// Waits (without sleeping) until `slowed` syncs have reached the slow-sync queue.
fn wait_for_slowed_syncs(control: &Control, slowed: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while control.stats().slowed_syncs < slowed {
        assert!(
            Instant::now() < deadline,
            "only {} of {slowed} syncs arrived",
            control.stats().slowed_syncs
        );
        std::thread::yield_now();
    }
}

/// A file sync, a data sync and a directory sync each take at least the delay, then succeed
/// and make the data durable; after `fast-syncs` a sync is quick again.
#[test]
fn every_sync_takes_at_least_the_delay_and_succeeds() {
    let Some(fx) = Fixture::mount("every_sync_takes_at_least_the_delay_and_succeeds") else {
        return;
    };
    let delay = Duration::from_millis(300);
    let path = fx.mnt.join("log");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"AAAA").unwrap();
    fx.control().slow_syncs(delay);
    assert_eq!(fx.control().stats().sync_delay_ms, 300);

    let started = Instant::now();
    file.sync_data().expect("a slow sync succeeds");
    assert!(
        started.elapsed() >= delay,
        "fdatasync took {:?}",
        started.elapsed()
    );
    assert_eq!(
        fs::read(fx.backing.join("log")).unwrap(),
        b"AAAA",
        "synced after the delay"
    );

    file.write_all(b"BBBB").unwrap();
    let started = Instant::now();
    file.sync_all().expect("a slow fsync succeeds");
    assert!(started.elapsed() >= delay, "fsync took {:?}", started.elapsed());

    let dir = File::open(&fx.mnt).unwrap();
    let started = Instant::now();
    dir.sync_all().expect("a slow directory sync succeeds");
    assert!(
        started.elapsed() >= delay,
        "directory fsync took {:?}",
        started.elapsed()
    );

    fx.control().slow_syncs(Duration::ZERO);
    file.write_all(b"CCCC").unwrap();
    let started = Instant::now();
    file.sync_data().unwrap();
    assert!(
        started.elapsed() < delay,
        "a fast sync took {:?}",
        started.elapsed()
    );
    drop(file);
    let stats = fx.control().stats();
    assert_eq!((stats.slowed_syncs, stats.sync_delay_ms), (3, 0));
    fx.control().drop_unsynced();
    assert_eq!(fs::read(&path).unwrap(), b"AAAABBBBCCCC");
}

/// While one sync waits out a long delay, reads, writes, creates and stats of the mount are
/// answered at once (the FUSE request thread is not held up).
#[test]
fn a_slow_sync_does_not_hold_up_other_requests() {
    let Some(fx) = Fixture::mount("a_slow_sync_does_not_hold_up_other_requests") else {
        return;
    };
    let delay = Duration::from_secs(3);
    let mut slow = File::create(fx.mnt.join("slow")).unwrap();
    slow.write_all(b"slow").unwrap();
    let other_path = fx.mnt.join("other");
    fs::write(&other_path, b"other").unwrap();
    fx.control().slow_syncs(delay);

    let syncing = std::thread::spawn(move || {
        let started = Instant::now();
        slow.sync_data().map(|()| started.elapsed())
    });
    wait_for_slowed_syncs(&fx.control(), 1);

    let started = Instant::now();
    let other = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&other_path)
        .unwrap();
    for round in 0..100u64 {
        other.write_all_at(&round.to_le_bytes(), round * 8).unwrap();
        let mut back = [0; 8];
        other.read_exact_at(&mut back, round * 8).unwrap();
        assert_eq!(u64::from_le_bytes(back), round);
    }
    fs::write(fx.mnt.join("created"), b"new file").unwrap();
    assert_eq!(fs::read(fx.mnt.join("created")).unwrap(), b"new file");
    fs::metadata(&other_path).unwrap();
    let others_took = started.elapsed();
    assert!(
        !syncing.is_finished(),
        "the slow sync finished before the other requests did ({others_took:?})"
    );
    assert!(others_took < delay / 3, "other requests took {others_took:?}");

    let sync_took = syncing.join().unwrap().expect("the slow sync succeeds");
    assert!(sync_took >= delay, "the slow sync took {sync_took:?}");
    fx.control().heal_syncs();
    assert_eq!(
        fx.control().stats().sync_delay_ms,
        0,
        "heal-syncs undoes slow-syncs"
    );
}

/// Syncs of several files issued together finish together, after about one delay: they are
/// not served one after another.
#[test]
fn concurrent_slow_syncs_are_not_serialised() {
    let Some(fx) = Fixture::mount("concurrent_slow_syncs_are_not_serialised") else {
        return;
    };
    const FILES: u32 = 4;
    let delay = Duration::from_millis(800);
    let mut files = Vec::new();
    for index in 0..FILES {
        let mut file = File::create(fx.mnt.join(format!("file-{index}"))).unwrap();
        file.write_all(b"data").unwrap();
        files.push(file);
    }
    fx.control().slow_syncs(delay);
    let started = Instant::now();
    let syncs: Vec<_> = files
        .into_iter()
        .map(|file| std::thread::spawn(move || file.sync_data()))
        .collect();
    for sync in syncs {
        sync.join().unwrap().expect("a slow sync succeeds");
    }
    let all_took = started.elapsed();
    assert!(all_took >= delay, "{FILES} syncs took {all_took:?}");
    assert!(
        all_took < delay * 2,
        "{FILES} concurrent syncs took {all_took:?}: served one after another"
    );
    assert_eq!(fx.control().stats().slowed_syncs, u64::from(FILES));
}

/// A sync that is slow and failing waits out the delay, then fails with `EIO`; `heal-syncs`
/// undoes both.
#[test]
fn a_slow_failing_sync_fails_after_the_delay() {
    let Some(fx) = Fixture::mount("a_slow_failing_sync_fails_after_the_delay") else {
        return;
    };
    let delay = Duration::from_millis(200);
    let mut file = File::create(fx.mnt.join("log")).unwrap();
    file.write_all(b"AAAA").unwrap();
    fx.control().slow_syncs(delay);
    fx.control().fail_syncs(true);
    let started = Instant::now();
    let failed = file.sync_data().expect_err("the disk is failing");
    assert_eq!(failed.raw_os_error(), Some(libc::EIO), "{failed}");
    assert!(
        started.elapsed() >= delay,
        "the failing sync took {:?}",
        started.elapsed()
    );
    fx.control().heal_syncs();
    let stats = fx.control().stats();
    assert!(!stats.syncs_failing && stats.sync_delay_ms == 0, "{stats:?}");
    file.sync_data().expect("healed");
}
