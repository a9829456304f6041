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
//!
//! **Negative control.** [`ignore_storage_errors`] (`ringkv-node --unsafe-ignore-sync-errors`)
//! turns fail-stop off for the whole process: a failed sync or write of the log or of sled is
//! logged and treated as success, so the node goes on acknowledging writes its disk may not
//! hold (on Linux the pages of a failed sync stay readable in the page cache, so the node
//! sees nothing wrong) — and loses them at the next power cut. The harness must catch it
//! (`jepsen/tests/fail_stop_control.rs`). It is a process-wide switch, set once by the binary
//! before any storage opens, because fail-stop itself is a decision about the process.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{error, warn};

/// The exit code of a node whose storage failed (`EX_IOERR` of `sysexits.h`).
pub const EXIT_STORAGE_FAILED: i32 = 74;

/// Set by [`ignore_storage_errors`]: storage failures are logged and ignored.
static IGNORING_STORAGE_ERRORS: AtomicBool = AtomicBool::new(false);

/// NEGATIVE CONTROL ONLY — breaks durability on purpose: from now on a failed write or sync
/// of the write-ahead log (opened with [`super::wal_options`] after this call) or of sled is
/// logged and treated as success instead of stopping the process. Call it before the node
/// opens its storage.
pub fn ignore_storage_errors() {
    warn!(
        "NEGATIVE CONTROL: failed syncs and writes of the log and the state machine are ignored; \
         this node acknowledges writes its disk may not hold"
    );
    IGNORING_STORAGE_ERRORS.store(true, Ordering::SeqCst);
}

/// Whether [`ignore_storage_errors`] was called.
pub fn ignoring_storage_errors() -> bool {
    IGNORING_STORAGE_ERRORS.load(Ordering::SeqCst)
}

/// The write-ahead log's `on_failure`: a failed write or sync of the log stops the node.
pub fn wal_failed(reason: &str) {
    storage_failed("the write-ahead log", &reason)
}

/// Logs that `what` failed with `err` and ends the process with [`EXIT_STORAGE_FAILED`] —
/// unless storage errors are ignored ([`ignore_storage_errors`]): then it logs and returns,
/// and the caller goes on as if `what` had succeeded.
pub fn storage_failed(what: &str, err: &dyn Display) {
    if ignoring_storage_errors() {
        error!(%err, "NEGATIVE CONTROL: {what} failed; ignored, the node goes on");
        return;
    }
    error!(%err, "{what} failed: stopping the node (fail-stop); nothing more is acknowledged");
    eprintln!("fatal: {what} failed: {err}; the node stops (exit code {EXIT_STORAGE_FAILED})");
    std::process::exit(EXIT_STORAGE_FAILED)
}
