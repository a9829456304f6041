//! Mounting and unmounting: a [`FaultMount`] owns the FUSE session thread; a [`Control`] drops the
//! volatile layer and reads the counters from any thread.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fuser::{Config, MountOption, Session, SessionUnmounter};
use tracing::{info, warn};

use crate::error::Error;
use crate::fs::{lock, FaultFs, State};
use crate::stats::{DropReport, Stats};

/// Checks that this process can serve a FUSE mount: `/dev/fuse` exists and we are root (the
/// mount(2) path; without root, fuser would need the setuid `fusermount3` and `user_allow_other`).
pub fn fuse_available() -> Result<(), Error> {
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::FuseUnavailable {
            reason: "/dev/fuse does not exist (modprobe fuse?)".into(),
        });
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::FuseUnavailable {
            reason: "not running as root".into(),
        });
    }
    Ok(())
}

/// The environment variable that, set to `1`, skips the tests needing FUSE where it is
/// unavailable instead of failing them.
pub const SKIP_FUSE_TESTS_ENV: &str = "RINGKV_SKIP_FUSE_TESTS";

/// For tests that mount a fault filesystem: whether `test` runs. `true` when FUSE is
/// available; `false` (after saying why) when it is not and [`SKIP_FUSE_TESTS_ENV`] is `1`.
/// Otherwise panics with the reason, so a machine without FUSE never passes those tests
/// silently.
pub fn fuse_or_skip(test: &str) -> bool {
    match fuse_available() {
        Ok(()) => true,
        Err(err) if std::env::var(SKIP_FUSE_TESTS_ENV).as_deref() == Ok("1") => {
            eprintln!("skipping {test}: {err} ({SKIP_FUSE_TESTS_ENV}=1)");
            false
        }
        Err(err) => panic!(
            "{test} needs FUSE: {err}. Run as root with /dev/fuse, or set {SKIP_FUSE_TESTS_ENV}=1 to skip"
        ),
    }
}

/// What a failing disk does with a file's unsynced data when a sync of the file answers `EIO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedSyncData {
    /// Lost at once: the worst case Linux allows (the dirty pages are dropped, so a later sync
    /// finds nothing to write and succeeds). A process that reads its recent writes back then
    /// finds them gone.
    Lost,
    /// Kept readable until a drop, what Linux usually does: the pages stay in the page cache
    /// (marked clean), so the process reads its writes back as if nothing happened, and loses
    /// them only at their eviction or a power cut ([`Control::drop_unsynced`]). A process that
    /// ignores the error goes on serving data no disk holds. (Linux never writes such pages
    /// again; here a sync after [`Control::heal_syncs`] writes them, so drop before healing to
    /// model a reboot.)
    Kept,
}

/// Drops the volatile layer and reads the counters of one mounted filesystem; cheap to clone.
#[derive(Clone)]
pub struct Control {
    state: Arc<Mutex<State>>,
}

impl Control {
    /// Throws away everything not synced (a simulated power cut) and logs what was lost. Meant for
    /// when the processes using the mount have been killed; a live process would see its unsynced
    /// writes vanish.
    pub fn drop_unsynced(&self) -> DropReport {
        lock(&self.state).drop_unsynced()
    }

    /// The counters since the mount.
    pub fn stats(&self) -> Stats {
        lock(&self.state).stats()
    }

    /// From now on every file `fsync`/`fdatasync` fails with `EIO` and loses the file's
    /// unsynced data (a failing disk, as Linux reports it at worst); `false` heals.
    pub fn fail_syncs(&self, fail: bool) {
        lock(&self.state).set_failing_syncs(fail.then_some(FailedSyncData::Lost));
    }

    /// From now on every file `fsync`/`fdatasync` fails with `EIO` but keeps the file's
    /// unsynced data readable until [`Control::drop_unsynced`] ([`FailedSyncData::Kept`]: a
    /// failing disk under the page cache); [`Control::heal_syncs`] or `fail_syncs(false)`
    /// heals.
    pub fn fail_syncs_keeping_unsynced(&self) {
        lock(&self.state).set_failing_syncs(Some(FailedSyncData::Kept));
    }

    /// From now on every `fsync`/`fdatasync` (of files and directories) waits `delay` before it
    /// runs and succeeds (a slow disk); [`Duration::ZERO`] makes syncs fast again. Only the
    /// syncing caller waits: reads, writes and other requests are served meanwhile. A sync
    /// already waiting keeps the delay it arrived with.
    pub fn slow_syncs(&self, delay: Duration) {
        lock(&self.state).set_sync_delay(delay);
    }

    /// Makes the disk full once writes have taken `headroom_bytes` more of new space (`0`: full
    /// at once). A full disk answers `ENOSPC` to a write that extends a file, a preallocation
    /// that grows one, and the creation of a file, directory or symlink; reads, overwrites
    /// inside a file, truncation, renames, unlinks and syncs keep working. Space freed by
    /// truncating or unlinking is not given back (the disk fills up once). See the README.
    pub fn fill(&self, headroom_bytes: u64) {
        lock(&self.state).set_space_left(Some(headroom_bytes));
    }

    /// Undoes [`Control::fill`]: writes may take new space again.
    pub fn unfill(&self) {
        lock(&self.state).set_space_left(None);
    }

    /// Syncs work normally again: neither failing ([`Control::fail_syncs`]) nor slow
    /// ([`Control::slow_syncs`]).
    pub fn heal_syncs(&self) {
        let mut state = lock(&self.state);
        state.set_failing_syncs(None);
        state.set_sync_delay(Duration::ZERO);
    }
}

/// A mounted fault filesystem. Dropping it unmounts (best effort); prefer [`FaultMount::unmount`],
/// which reports errors.
pub struct FaultMount {
    mountpoint: PathBuf,
    control: Control,
    unmounter: SessionUnmounter,
    session: Option<JoinHandle<io::Result<()>>>,
}

impl FaultMount {
    /// Serves `mountpoint` as a pass-through of `backing` with a volatile layer.
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<Self, Error> {
        Self::mount_with_exit_hook(backing, mountpoint, || {})
    }

    /// Like [`FaultMount::mount`]; `on_session_end` runs on the session thread when the mount goes
    /// away, whoever unmounted it (the binary uses it to stop waiting for signals).
    pub fn mount_with_exit_hook(
        backing: &Path,
        mountpoint: &Path,
        on_session_end: impl FnOnce() + Send + 'static,
    ) -> Result<Self, Error> {
        fuse_available()?;
        let backing_root = backing.canonicalize().map_err(|source| Error::Backing {
            path: backing.to_path_buf(),
            source,
        })?;
        if !backing_root.is_dir() {
            let source = io::Error::new(io::ErrorKind::NotADirectory, "not a directory");
            return Err(Error::Backing {
                path: backing_root,
                source,
            });
        }
        let state = Arc::new(Mutex::new(State::new(backing_root.clone())));
        let filesystem = FaultFs::new(Arc::clone(&state))?;
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName(format!("ringkv-faultfs:{}", backing_root.display())),
            MountOption::Subtype("ringkv-faultfs".into()),
            MountOption::DefaultPermissions,
        ];
        config.acl = fuser::SessionACL::All;
        let mount_error = |source| Error::Mount {
            mountpoint: mountpoint.to_path_buf(),
            source,
        };
        let mut session = Session::new(filesystem, mountpoint, &config).map_err(mount_error)?;
        let unmounter = session.unmount_callable();
        let thread = std::thread::Builder::new()
            .name("faultfs-session".into())
            .spawn(move || {
                let result = session.run();
                on_session_end();
                result
            });
        let session = match thread {
            Ok(handle) => handle,
            Err(source) => {
                let mut unmounter = unmounter;
                if let Err(err) = unmounter.unmount() {
                    warn!(%err, "failed to unmount after the session thread could not start");
                }
                return Err(Error::Spawn {
                    name: "faultfs-session",
                    source,
                });
            }
        };
        info!(backing = %backing_root.display(), mountpoint = %mountpoint.display(), "mounted");
        Ok(Self {
            mountpoint: mountpoint.to_path_buf(),
            control: Control { state },
            unmounter,
            session: Some(session),
        })
    }

    /// The handle that drops unsynced data and reads counters.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts and joins the session thread. If the mount is busy (a process still has a file
    /// open on it), it is detached lazily instead and the session thread is left to end with the
    /// last open file (or with this process); the error says so.
    pub fn unmount(mut self) -> Result<(), Error> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<(), Error> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        if session.is_finished() {
            // Unmounted from outside (umount, fusermount -u): nothing left to do.
            return join(session, &self.mountpoint);
        }
        let device = std::fs::metadata(&self.mountpoint).map(|meta| meta.dev()).ok();
        match self.unmounter.unmount() {
            Ok(()) => join(session, &self.mountpoint),
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                warn!(mountpoint = %self.mountpoint.display(), ?device, "mount busy: detaching lazily");
                let detached = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
                if let Err(errno) = detached {
                    warn!(%errno, "lazy unmount failed too");
                }
                Err(Error::Unmount {
                    mountpoint: self.mountpoint.clone(),
                    source: err,
                })
            }
            Err(source) => Err(Error::Unmount {
                mountpoint: self.mountpoint.clone(),
                source,
            }),
        }
    }
}

fn join(session: JoinHandle<io::Result<()>>, mountpoint: &Path) -> Result<(), Error> {
    let result = session
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("FUSE session thread panicked")));
    result.map_err(|source| Error::Unmount {
        mountpoint: mountpoint.to_path_buf(),
        source,
    })?;
    info!(mountpoint = %mountpoint.display(), "unmounted");
    Ok(())
}

impl Drop for FaultMount {
    fn drop(&mut self) {
        if let Err(err) = self.unmount_inner() {
            warn!(%err, "unmount on drop failed");
        }
    }
}
