//! Test fixture: a fault filesystem mounted on a fresh temp dir, unmounted when dropped (also when
//! the test fails), and the FUSE-availability gate every test goes through.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ringkv_faultfs::{Control, FaultMount};

pub use ringkv_faultfs::fuse_or_skip;

/// A mounted fault filesystem over `backing`, served at `mnt`. Field order matters: the mount is
/// dropped (unmounted) before the temp dir is removed.
pub struct Fixture {
    pub mount: Option<FaultMount>,
    pub backing: PathBuf,
    pub mnt: PathBuf,
    dir: tempfile::TempDir,
}

impl Fixture {
    /// Mounts a fresh fixture, or `None` when FUSE tests are skipped.
    pub fn mount(test: &str) -> Option<Self> {
        if !fuse_or_skip(test) {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let backing = dir.path().join("backing");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&backing).expect("backing dir");
        std::fs::create_dir(&mnt).expect("mountpoint");
        let mount = FaultMount::mount(&backing, &mnt).expect("mount");
        Some(Self {
            mount: Some(mount),
            backing,
            mnt,
            dir,
        })
    }

    pub fn control(&self) -> Control {
        self.mount.as_ref().expect("mounted").control()
    }

    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Unmounts now, reporting errors (dropping the fixture unmounts too, best effort).
    pub fn unmount(&mut self) {
        if let Some(mount) = self.mount.take() {
            mount.unmount().expect("unmount");
        }
    }
}

/// True when `path` is a mountpoint (listed in /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(canonical.to_str().expect("utf-8 path")))
}
