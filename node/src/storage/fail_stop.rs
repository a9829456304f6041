//! Fail-stop on a failed write or durability point.
//!
//! When an `fsync`/`fdatasync` of the write-ahead log or a flush of the state machine fails,
//! the node cannot know what its disk still holds: after an `EIO` Linux may already have
//! dropped the dirty pages and report the next sync as successful (PostgreSQL's
//! "fsyncgate"). Retrying, or going on with the Raft groups that did not notice, could
//! acknowledge a write or a vote that is not on disk, or purge log entries whose state is
//! not either. So the node stops at once — no graceful shutdown, which would sync again and
//! might "succeed" — with exit code [`EXIT_STORAGE_FAILED`] and the reason in its log. Its
//! peers stop hearing it (status polls, gossip), the system leader declares it dead after
//! `dead_node_timeout_ms` and its replicas are re-created elsewhere; once the disk is fixed
//! it restarts from what was synced, like after a power cut.
//!
//! A failed *write* (`ENOSPC` of a full disk, `EIO`) stops the node the same way, whether it
//! hits the write-ahead log ([`wal_failed`], passed to the log as its
//! `WalOptions::on_failure`) or sled (every tree write of `sled_engine`). Without it, only the
//! Raft group whose write failed stopped (openraft treats a storage error as fatal for that
//! group) while the process kept gossiping "alive" and serving its other groups — and the
//! log, once failed, refuses every later write, so those groups would have died one by one
//! without ever being declared dead. Refusing writes while staying up (what TiKV does while
//! its reserved space lasts) would need the node to know it is full *before* a write fails;
//! after one failed, a partial WAL record may sit at its end and sled's state is unknown.
//!
//! This is the one place that exits the process from inside the node library: it is what
//! fail-stop means, and every caller that could hit it is a durability point.

use std::fmt::Display;

use tracing::error;

/// The exit code of a node whose storage failed (`EX_IOERR` of `sysexits.h`).
pub const EXIT_STORAGE_FAILED: i32 = 74;

/// The write-ahead log's `on_failure`: a failed write or sync of the log stops the node.
pub fn wal_failed(reason: &str) {
    storage_failed("the write-ahead log", &reason)
}

/// Logs that `what` failed with `err` and ends the process with [`EXIT_STORAGE_FAILED`].
pub fn storage_failed(what: &str, err: &dyn Display) -> ! {
    error!(%err, "{what} failed: stopping the node (fail-stop); nothing more is acknowledged");
    eprintln!("fatal: {what} failed: {err}; the node stops (exit code {EXIT_STORAGE_FAILED})");
    std::process::exit(EXIT_STORAGE_FAILED)
}
