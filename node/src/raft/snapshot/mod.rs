//! Snapshots of a group's state machine: the files, and building and installing them.
//!
//! - `file`: the snapshot file format (a stream of key/value records, [`SnapshotWriter`],
//!   [`SnapshotReader`]) and the directory holding a group's current snapshot
//!   ([`SnapshotDir`]); files are written aside, fsynced, renamed into place.
//! - `build`: a dump of the state-machine tree into a new snapshot file.
//! - `install`: a received snapshot loaded into a fresh tree beside the one in use; the
//!   state machine then switches to it (invariant 4).
//!
//! - `progress`: what the node's snapshots are doing (built, sent, received, installed), for
//!   its metrics.
//!
//! openraft drives both through the state machine's adapter, which holds the group's apply
//! lock for writing and runs them on a blocking thread.

mod build;
mod file;
mod install;
mod progress;

pub(crate) use build::dump;
pub use file::{SnapshotDir, SnapshotReader, SnapshotWriter};
pub(crate) use install::load;
pub use progress::{SnapshotActivity, SnapshotProgress, TRANSFER_IDLE_SECONDS};
