//! What the log's FUSE tests share: a `ringkv-faultfs` mount over a temporary directory,
//! or a skip where FUSE is missing (`RINGKV_SKIP_FUSE_TESTS=1`).

use std::path::PathBuf;

use ringkv_faultfs::FaultMount;

/// A faultfs mount at `mnt`, over a backing directory; both live in `dir`. Bind `dir` first
/// (`FuseDir { dir: _dir, mount, mnt }`): locals drop in reverse, so the mount goes before
/// the directory under it.
pub struct FuseDir {
    pub dir: tempfile::TempDir,
    pub mount: FaultMount,
    pub mnt: PathBuf,
}

/// A fresh mount for `test`, or `None` when FUSE is missing and the environment says to
/// skip (without it, a missing FUSE fails the test).
pub fn mount_or_skip(test: &str) -> Option<FuseDir> {
    if !ringkv_faultfs::fuse_or_skip(test) {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let backing = dir.path().join("backing");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&backing).expect("backing");
    std::fs::create_dir(&mnt).expect("mountpoint");
    let mount = FaultMount::mount(&backing, &mnt).expect("mount");
    Some(FuseDir { dir, mount, mnt })
}
