//! A full disk: writes that need new space and creations fail with `ENOSPC`; reads, overwrites,
//! syncs, renames and unlinks keep working; `unfill` gives the space back.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;

use common::Fixture;

fn assert_enospc<T: std::fmt::Debug>(result: std::io::Result<T>, what: &str) {
    let err = result.expect_err(&format!("{what} must fail on a full disk"));
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{what}: {err}");
    assert_eq!(err.kind(), ErrorKind::StorageFull, "{what}");
}

/// On a full disk only what needs new space fails, with `ENOSPC`; everything else works, and
/// after `unfill` the failed writes succeed.
#[test]
fn a_full_disk_refuses_new_space_and_serves_the_rest() {
    let Some(fx) = Fixture::mount("a_full_disk_refuses_new_space_and_serves_the_rest") else {
        return;
    };
    let path = fx.mnt.join("log");
    let mut log = OpenOptions::new().create(true).append(true).open(&path).unwrap();
    log.write_all(b"synced").unwrap();
    log.sync_data().unwrap();
    log.write_all(b"+unsynced").unwrap();
    fs::write(fx.mnt.join("other"), b"other").unwrap();
    fx.control().fill(0);
    assert_eq!(fx.control().stats().space_left_bytes, Some(0));

    assert_enospc(log.write_all(b"more"), "an append");
    assert_enospc(File::create(fx.mnt.join("new")), "creating a file");
    assert_enospc(fs::create_dir(fx.mnt.join("dir")), "creating a directory");
    assert_enospc(
        std::os::unix::fs::symlink("log", fx.mnt.join("link")),
        "creating a symlink",
    );
    assert!(
        !fx.backing.join("new").exists(),
        "a refused creation leaves nothing behind"
    );

    assert_eq!(fs::read(&path).unwrap(), b"synced+unsynced", "reads work");
    let overwrite = OpenOptions::new().write(true).open(&path).unwrap();
    overwrite
        .write_all_at(b"S", 0)
        .expect("an overwrite needs no new space");
    log.sync_data().expect("syncing what was accepted works");
    File::create(fx.mnt.join("other")).expect("opening an existing file with O_CREAT works");
    fs::rename(fx.mnt.join("other"), fx.mnt.join("renamed")).expect("a rename works");
    fs::remove_file(fx.mnt.join("renamed")).expect("an unlink works");
    let statfs = nix::sys::statvfs::statvfs(&fx.mnt).unwrap();
    assert_eq!(statfs.blocks_available(), 0, "statfs reports the disk full");
    assert_eq!(fx.control().stats().enospc_errors, 4);

    fx.control().unfill();
    log.write_all(b"+more").expect("unfilled: appends work again");
    File::create(fx.mnt.join("new")).expect("unfilled: creations work again");
    log.sync_data().unwrap();
    drop((log, overwrite));
    fx.control().drop_unsynced();
    assert_eq!(fs::read(&path).unwrap(), b"Synced+unsynced+more");
    assert_eq!(fx.control().stats().space_left_bytes, None);
}

/// `fill` with headroom lets writes take that much new space, then the disk is full; a write
/// that needs more than is left fails whole.
#[test]
fn headroom_is_used_up_by_growth_only() {
    let Some(fx) = Fixture::mount("headroom_is_used_up_by_growth_only") else {
        return;
    };
    let path = fx.mnt.join("file");
    let file = File::create(&path).unwrap();
    file.write_all_at(b"0123456789", 0).unwrap();
    fx.control().fill(6);
    file.write_all_at(b"abcd", 2)
        .expect("an overwrite takes no space");
    file.write_all_at(b"ABCD", 8).expect("grows by 2 of 6");
    assert_eq!(fx.control().stats().space_left_bytes, Some(4));
    assert_enospc(file.write_all_at(b"EFGHI", 12), "growing by 5 with 4 left");
    file.write_all_at(b"EFGH", 12).expect("grows by the last 4");
    assert_enospc(file.write_all_at(b"X", 16), "growing a full disk");
    assert_enospc(File::create(fx.mnt.join("new")), "creating a file on a full disk");
    assert_eq!(fs::read(&path).unwrap(), b"01abcd67ABCDEFGH");
    let stats = fx.control().stats();
    assert_eq!((stats.space_left_bytes, stats.enospc_errors), (Some(0), 3));
}
