//! Errors of this crate (the FUSE request paths answer with errnos instead, see `fs`).

use std::io;
use std::path::PathBuf;

/// Why mounting, unmounting or a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// FUSE cannot be used here at all (no `/dev/fuse`, or not allowed to mount).
    #[error("FUSE is unavailable: {reason}")]
    FuseUnavailable { reason: String },
    /// The backing directory is missing or not a directory.
    #[error("backing directory {path:?} is not usable: {source}")]
    Backing { path: PathBuf, source: io::Error },
    /// mount(2) or fusermount failed.
    #[error("failed to mount {mountpoint:?}: {source}")]
    Mount { mountpoint: PathBuf, source: io::Error },
    /// umount(2) failed.
    #[error("failed to unmount {mountpoint:?}: {source}")]
    Unmount { mountpoint: PathBuf, source: io::Error },
    /// The control socket could not be bound or reached.
    #[error("control socket {path:?}: {source}")]
    ControlSocket { path: PathBuf, source: io::Error },
    /// The control socket answered something this client does not understand.
    #[error("control socket {path:?} answered {answer:?}")]
    ControlAnswer { path: PathBuf, answer: String },
    /// A thread could not be started.
    #[error("failed to spawn thread {name}: {source}")]
    Spawn { name: &'static str, source: io::Error },
}
