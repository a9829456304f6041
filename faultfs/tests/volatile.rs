//! What survives a drop of unsynced data: synced bytes do, nothing else does.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use common::Fixture;

fn read(path: &std::path::Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

/// A synced file keeps its data, in the backing dir and through the mount; a never-synced file
/// created through the mount disappears with its data.
#[test]
fn synced_file_survives_and_unsynced_file_is_lost() {
    let Some(fx) = Fixture::mount("synced_file_survives_and_unsynced_file_is_lost") else {
        return;
    };
    let mut synced = File::create(fx.mnt.join("synced")).unwrap();
    synced.write_all(b"durable").unwrap();
    synced.sync_all().unwrap();
    let mut unsynced = File::create(fx.mnt.join("unsynced")).unwrap();
    unsynced.write_all(b"volatile").unwrap();
    assert_eq!(
        read(&fx.mnt.join("unsynced")),
        b"volatile",
        "the writer sees its own writes"
    );
    assert_eq!(
        read(&fx.backing.join("unsynced")),
        b"",
        "unsynced data is not in the backing dir"
    );
    drop((synced, unsynced));

    let report = fx.control().drop_unsynced();
    assert_eq!(report.dropped_bytes, 8);
    assert_eq!(report.dropped_files, 1);
    assert_eq!(read(&fx.backing.join("synced")), b"durable");
    assert_eq!(read(&fx.mnt.join("synced")), b"durable");
    assert!(
        !fx.mnt.join("unsynced").exists(),
        "a never-synced file is gone after the drop"
    );
    assert!(!fx.backing.join("unsynced").exists());
    let stats = fx.control().stats();
    assert_eq!((stats.fsyncs, stats.drops, stats.dropped_bytes), (1, 1, 8));
    assert_eq!(stats.volatile_bytes, 0);
}

/// Write A, fsync, write B, drop: A only.
#[test]
fn partially_synced_file_keeps_the_synced_prefix() {
    let Some(fx) = Fixture::mount("partially_synced_file_keeps_the_synced_prefix") else {
        return;
    };
    let path = fx.mnt.join("log");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"AAAA").unwrap();
    file.sync_data().unwrap();
    file.write_all(b"BBBB").unwrap();
    assert_eq!(read(&path), b"AAAABBBB");
    assert_eq!(fx.control().stats().volatile_bytes, 4);
    drop(file);

    let report = fx.control().drop_unsynced();
    assert_eq!(
        (report.dropped_bytes, report.reverted_files, report.dropped_files),
        (4, 1, 0)
    );
    assert_eq!(read(&path), b"AAAA");
    assert_eq!(read(&fx.backing.join("log")), b"AAAA");
    assert_eq!(fx.control().stats().fdatasyncs, 1);
}

/// Overwriting bytes inside the synced region and dropping brings the old bytes back.
#[test]
fn overwrite_in_synced_region_reverts_on_drop() {
    let Some(fx) = Fixture::mount("overwrite_in_synced_region_reverts_on_drop") else {
        return;
    };
    let path = fx.mnt.join("data");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"0123456789").unwrap();
    file.sync_all().unwrap();
    file.seek(SeekFrom::Start(3)).unwrap();
    file.write_all(b"xyz").unwrap();
    assert_eq!(read(&path), b"012xyz6789");
    drop(file);

    fx.control().drop_unsynced();
    assert_eq!(read(&path), b"0123456789");
    // A later sync of the reverted file writes nothing back.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.sync_all().unwrap();
    assert_eq!(read(&fx.backing.join("data")), b"0123456789");
}

/// Truncation is volatile until synced: a dropped truncate restores the old length and bytes, a
/// synced truncate-then-extend reads zeros where the old bytes were.
#[test]
fn truncation_is_volatile_until_synced() {
    let Some(fx) = Fixture::mount("truncation_is_volatile_until_synced") else {
        return;
    };
    let path = fx.mnt.join("t");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"abcdefgh").unwrap();
    file.sync_all().unwrap();
    file.set_len(3).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 3);
    assert_eq!(read(&path), b"abc");
    assert_eq!(
        read(&fx.backing.join("t")),
        b"abcdefgh",
        "the truncate is not durable yet"
    );
    drop(file);
    fx.control().drop_unsynced();
    assert_eq!(read(&path), b"abcdefgh", "a dropped truncate restores the bytes");

    // O_TRUNC is volatile too.
    let mut file = OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
    assert_eq!(read(&path), b"");
    file.write_all(b"xy").unwrap();
    file.set_len(5).unwrap();
    assert_eq!(
        read(&path),
        b"xy\0\0\0",
        "truncate then extend reads zeros, not the old bytes"
    );
    file.sync_all().unwrap();
    drop(file);
    fx.control().drop_unsynced();
    assert_eq!(read(&path), b"xy\0\0\0");
    assert_eq!(read(&fx.backing.join("t")), b"xy\0\0\0");
}

/// Metadata operations reach the backing dir at once (the documented first version): mkdir and a
/// rename of a synced file survive a drop, and data synced before a rename follows the file.
#[test]
fn metadata_operations_are_durable() {
    let Some(fx) = Fixture::mount("metadata_operations_are_durable") else {
        return;
    };
    fs::create_dir(fx.mnt.join("dir")).unwrap();
    let mut file = File::create(fx.mnt.join("dir/tmp")).unwrap();
    file.write_all(b"state").unwrap();
    file.sync_all().unwrap();
    drop(file);
    fs::rename(fx.mnt.join("dir/tmp"), fx.mnt.join("dir/final")).unwrap();
    let mut names: Vec<_> = fs::read_dir(fx.mnt.join("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["final"]);

    fx.control().drop_unsynced();
    assert_eq!(read(&fx.mnt.join("dir/final")), b"state");
    assert!(fx.backing.join("dir/final").exists());
    fs::remove_file(fx.mnt.join("dir/final")).unwrap();
    assert!(!fx.backing.join("dir/final").exists());
    let dir = File::open(fx.mnt.join("dir")).unwrap();
    dir.sync_all().unwrap();
    assert_eq!(fx.control().stats().dir_fsyncs, 1);
}

/// A file that already existed in the backing dir (durable) keeps existing when only its new
/// appends are dropped, and an append-mode writer sees its own appends.
#[test]
fn appends_to_a_durable_file_are_dropped() {
    let Some(fx) = Fixture::mount("appends_to_a_durable_file_are_dropped") else {
        return;
    };
    fs::write(fx.backing.join("pre"), b"old").unwrap();
    let path = fx.mnt.join("pre");
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"+new").unwrap();
    let mut seen = String::new();
    File::open(&path).unwrap().read_to_string(&mut seen).unwrap();
    assert_eq!(seen, "old+new");
    drop(file);
    let report = fx.control().drop_unsynced();
    assert_eq!(report.dropped_files, 0);
    assert_eq!(read(&path), b"old");
}

/// Unmounting leaves no mount behind.
#[test]
fn unmount_is_clean() {
    let Some(mut fx) = Fixture::mount("unmount_is_clean") else {
        return;
    };
    assert!(common::is_mounted(&fx.mnt));
    fx.unmount();
    assert!(!common::is_mounted(&fx.mnt));
}

/// A file replaced in the backing dir behind the mount (as a corruption nemesis might do while the
/// node is down) does not inherit the old file's unsynced data.
#[test]
fn file_replaced_behind_the_mount_does_not_inherit_unsynced_data() {
    let Some(fx) = Fixture::mount("file_replaced_behind_the_mount_does_not_inherit_unsynced_data") else {
        return;
    };
    fs::write(fx.backing.join("f"), b"old").unwrap();
    let mut file = OpenOptions::new().write(true).open(fx.mnt.join("f")).unwrap();
    file.write_all(b"OLD+unsynced").unwrap();
    drop(file);
    fs::remove_file(fx.backing.join("f")).unwrap();
    fs::write(fx.backing.join("f"), b"replacement").unwrap();
    assert_eq!(read(&fx.mnt.join("f")), b"replacement");
}

/// While syncs fail, an fdatasync answers EIO and the file's unsynced bytes are lost (a later
/// successful sync cannot bring them back: Linux's worst case); after healing, syncs work.
#[test]
fn failing_syncs_answer_eio_and_lose_the_unsynced_data() {
    let Some(fx) = Fixture::mount("failing_syncs_answer_eio_and_lose_the_unsynced_data") else {
        return;
    };
    let path = fx.mnt.join("wal");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"AAAA").unwrap();
    file.sync_data().unwrap();
    file.write_all(b"BBBB").unwrap();
    fx.control().fail_syncs(true);
    assert!(fx.control().stats().syncs_failing);
    let failed = file.sync_data().expect_err("a sync of a failing disk must fail");
    assert_eq!(failed.raw_os_error(), Some(libc::EIO), "{failed}");
    fx.control().fail_syncs(false);
    file.sync_data().expect("healed");
    assert_eq!(read(&path), b"AAAA", "the bytes of the failed sync are gone");
    drop(file);
    let stats = fx.control().stats();
    assert_eq!((stats.failed_syncs, stats.dropped_bytes), (1, 4));
    assert!(!stats.syncs_failing);
}

/// While syncs fail keeping the unsynced data (`fail-syncs keep`), an fdatasync answers EIO yet
/// the process still reads its unsynced bytes back (the page cache keeps them); a drop loses
/// them, as a power cut of that machine would.
#[test]
fn failing_syncs_that_keep_the_data_answer_eio_and_lose_it_at_the_drop() {
    let Some(fx) = Fixture::mount("failing_syncs_that_keep_the_data_answer_eio_and_lose_it_at_the_drop")
    else {
        return;
    };
    let path = fx.mnt.join("wal");
    let mut file = File::create(&path).unwrap();
    file.write_all(b"AAAA").unwrap();
    file.sync_data().unwrap();
    file.write_all(b"BBBB").unwrap();
    fx.control().fail_syncs_keeping_unsynced();
    let stats = fx.control().stats();
    assert!(
        stats.syncs_failing && stats.failing_syncs_keep_unsynced,
        "{stats:?}"
    );
    let failed = file.sync_data().expect_err("a sync of a failing disk must fail");
    assert_eq!(failed.raw_os_error(), Some(libc::EIO), "{failed}");
    assert_eq!(
        read(&path),
        b"AAAABBBB",
        "the bytes of the failed sync are still readable"
    );
    file.write_all(b"CC").unwrap();
    file.sync_all()
        .expect_err("every sync fails while the disk fails");
    assert_eq!(read(&path), b"AAAABBBBCC");
    drop(file);
    let stats = fx.control().stats();
    assert_eq!(
        (stats.failed_syncs, stats.dropped_bytes, stats.volatile_bytes),
        (2, 0, 6)
    );
    let dropped = fx.control().drop_unsynced();
    assert_eq!(dropped.dropped_bytes, 6);
    assert_eq!(read(&path), b"AAAA", "the drop lost what no sync made durable");
    fx.control().heal_syncs();
    let stats = fx.control().stats();
    assert!(
        !stats.syncs_failing && !stats.failing_syncs_keep_unsynced,
        "{stats:?}"
    );
}
