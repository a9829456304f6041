//! `ringkv-faultfs`: a FUSE filesystem that loses unsynced data on command — the building block of
//! the disk-fault (`lose-unsynced`) nemesis, after the idea of LazyFS.
//!
//! # Why
//! A `kill -9` loses nothing a process wrote: the kernel's page cache survives it. A power cut or
//! kernel crash loses everything not made durable with `fsync`/`fdatasync`, and that is the only
//! way to test that a database really syncs before it acknowledges. This filesystem simulates the
//! worst case POSIX allows: mount it under a node's data directory, kill the node, drop the
//! unsynced data, restart the node on the same mount, and check what the cluster still knows.
//!
//! # What it does
//! `MOUNTPOINT` serves `BACKING_DIR` through FUSE. File data written since the file's last
//! `fsync`/`fdatasync` (and all data of files never synced) stays in a volatile layer in memory
//! ([`layer::VolatileFile`]); reads see that layer on top of the backing file, so the running
//! process sees its own writes. A sync writes the file's layer to the backing file (and syncs the
//! backing file for real). Size changes (truncate, extend, `O_TRUNC`, preallocation) are volatile
//! too. [`Control::drop_unsynced`] throws the whole layer away: the page-cache loss of a power cut.
//!
//! It also fails, slows and fills on command ([`Control`], or the control socket): every file
//! sync answers `EIO` and loses the file's unsynced data ([`Control::fail_syncs`]), or keeps it
//! readable until a drop ([`Control::fail_syncs_keeping_unsynced`]); every sync
//! waits a delay, then succeeds, without holding up other requests ([`Control::slow_syncs`]);
//! writes that need new space and creations answer `ENOSPC` while reads go on
//! ([`Control::fill`]).
//!
//! # Metadata (create, rename, unlink, mkdir, chmod, ...)
//! Applied to the backing directory at once, i.e. treated as durable, with one exception: a regular
//! file created through the mount and never synced since is removed by a drop (its data was all
//! volatile anyway, and its directory entry was never made durable either). Known limits, left for a
//! follow-up with directory-fsync semantics: a rename or unlink is never undone by a drop (POSIX
//! would allow losing it without a directory fsync), a file whose own `fsync` ran counts as created
//! durably even without a directory fsync (ext4-like, lenient), and renaming a never-synced file over
//! an existing one loses both at a drop. Directory fsyncs are counted ([`Stats::dir_fsyncs`]).
//!
//! # Modules
//! - [`layer`]: the volatile layer of one file, pure (no IO), unit-tested against a plain model.
//! - `fs`: the [`fuser::Filesystem`] — inode table, handles, reads through the layer, syncs.
//! - [`mount`]: [`FaultMount`] (mount, unmount, the session thread) and [`Control`] (drop, stats).
//! - `slow`: the thread that answers syncs after their delay (slow syncs), so a slow sync holds
//!   up only its caller, never the FUSE request thread.
//! - [`control`]: the control socket that `ringkv-faultfs drop-unsynced` talks to.
//! - [`stats`]: the counters ([`Stats`]) and what one drop lost ([`DropReport`]).
//!
//! The binary (`src/bin/ringkv-faultfs.rs`) is `ringkv-faultfs mount | drop-unsynced | stats |
//! fail-syncs | slow-syncs | fast-syncs | heal-syncs | fill | unfill`; see the README.

pub mod control;
pub mod error;
mod fs;
pub mod layer;
pub mod mount;
mod slow;
pub mod stats;

pub use error::Error;
pub use mount::{fuse_available, fuse_or_skip, Control, FailedSyncData, FaultMount, SKIP_FUSE_TESTS_ENV};
pub use stats::{DropReport, Stats};
