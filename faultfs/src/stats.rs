//! Counters a nemesis reports ("the node issued 0 fsyncs") and the result of one drop.

use serde::{Deserialize, Serialize};

/// What the filesystem has seen since it was mounted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// `fsync` calls on files.
    pub fsyncs: u64,
    /// `fdatasync` calls on files.
    pub fdatasyncs: u64,
    /// `fsync`/`fdatasync` calls on directories (counted; metadata is durable anyway, see the crate
    /// docs).
    pub dir_fsyncs: u64,
    /// Bytes written to the backing directory by syncs.
    pub synced_bytes: u64,
    /// Bytes accepted by `write` (all of them start in the volatile layer).
    pub written_bytes: u64,
    /// Times the volatile layer was dropped.
    pub drops: u64,
    /// Bytes of unsynced data thrown away by all drops.
    pub dropped_bytes: u64,
    /// Files created through the mount and never synced that all drops removed.
    pub dropped_files: u64,
    /// Bytes now held only in memory.
    pub volatile_bytes: u64,
    /// Files that now have unsynced changes (data or size).
    pub volatile_files: u64,
    /// File syncs answered `EIO` while syncs were failing (their unsynced data was lost).
    #[serde(default)]
    pub failed_syncs: u64,
    /// Whether file syncs fail now ([`crate::Control::fail_syncs`]).
    #[serde(default)]
    pub syncs_failing: bool,
    /// Whether failing syncs keep the unsynced data readable until a drop
    /// ([`crate::Control::fail_syncs_keeping_unsynced`]) rather than lose it at once.
    #[serde(default)]
    pub failing_syncs_keep_unsynced: bool,
    /// File and directory syncs that waited for the sync delay ([`crate::Control::slow_syncs`]).
    #[serde(default)]
    pub slowed_syncs: u64,
    /// How long a sync arriving now waits before it runs, in milliseconds (0: not slowed).
    #[serde(default)]
    pub sync_delay_ms: u64,
    /// Writes, preallocations and creations answered `ENOSPC` ([`crate::Control::fill`]).
    #[serde(default)]
    pub enospc_errors: u64,
    /// New space writes may still take before the disk is full; `None`: not filled.
    #[serde(default)]
    pub space_left_bytes: Option<u64>,
}

/// What one drop threw away.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropReport {
    /// Bytes of unsynced data lost.
    pub dropped_bytes: u64,
    /// Files whose unsynced changes (data or size) were lost.
    pub reverted_files: u64,
    /// Files created through the mount and never synced, removed from the backing directory.
    pub dropped_files: u64,
}
