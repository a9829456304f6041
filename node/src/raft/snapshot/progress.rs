//! What a node's snapshots are doing right now, for its metrics: how many are being built,
//! sent, received and installed, how many finished, and the bytes streamed.
//!
//! Building and installing are single calls, counted by a guard held across them. Sending
//! and receiving are not: openraft 0.9 streams a snapshot as a series of `InstallSnapshot`
//! chunks, each its own RPC, and a transfer it abandons (the follower went away, a newer
//! snapshot replaced it) sends no last chunk. So a transfer counts as in progress from any
//! chunk until its last (`done`) chunk was answered, or until no chunk of it was seen for
//! [`TRANSFER_IDLE_SECONDS`]: a gauge that cannot stick above zero. The tables hold one
//! entry per group and peer at most, and lose stale ones whenever they are touched.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::raft::types::{GroupId, NodeId};

/// A transfer with no chunk for this long is no longer counted as in progress (openraft
/// sends the next chunk as soon as the previous one is answered, so live transfers are
/// far below it even when paced to a slow catch-up rate with large chunks).
pub const TRANSFER_IDLE_SECONDS: u64 = 30;

/// A node's snapshot activity (shared by its groups, its Raft transport and its Raft
/// service).
#[derive(Debug, Default)]
pub struct SnapshotProgress {
    building: AtomicU64,
    installing: AtomicU64,
    built: AtomicU64,
    installed: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    sent_bytes: AtomicU64,
    received_bytes: AtomicU64,
    /// Transfers this node sends, by group and target: when their last chunk went out.
    sending: Mutex<HashMap<(GroupId, NodeId), Instant>>,
    /// Transfers this node receives, by group: when their last chunk arrived.
    receiving: Mutex<HashMap<GroupId, Instant>>,
}

/// The numbers of one moment ([`SnapshotProgress::read`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotActivity {
    pub building: u64,
    pub sending: u64,
    pub receiving: u64,
    pub installing: u64,
    pub built: u64,
    pub sent: u64,
    pub received: u64,
    pub installed: u64,
    pub sent_bytes: u64,
    pub received_bytes: u64,
}

/// Counts one build or install while it lives.
#[must_use = "the work counts as in progress only while the guard lives"]
pub struct InProgress<'a> {
    running: &'a AtomicU64,
    finished: &'a AtomicU64,
    succeeded: bool,
}

impl InProgress<'_> {
    /// The work finished (a guard dropped without this counts no finished snapshot).
    pub fn succeeded(mut self) {
        self.succeeded = true;
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::Relaxed);
        if self.succeeded {
            self.finished.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Drops the transfers idle for longer than [`TRANSFER_IDLE_SECONDS`]; returns how many
/// remain.
fn live<K: Eq + std::hash::Hash>(transfers: &mut HashMap<K, Instant>, now: Instant) -> u64 {
    let idle = Duration::from_secs(TRANSFER_IDLE_SECONDS);
    transfers.retain(|_, last_chunk| now.saturating_duration_since(*last_chunk) < idle);
    transfers.len() as u64
}

impl SnapshotProgress {
    /// A snapshot build starts.
    pub fn building(&self) -> InProgress<'_> {
        self.building.fetch_add(1, Ordering::Relaxed);
        InProgress {
            running: &self.building,
            finished: &self.built,
            succeeded: false,
        }
    }

    /// A received snapshot's install starts.
    pub fn installing(&self) -> InProgress<'_> {
        self.installing.fetch_add(1, Ordering::Relaxed);
        InProgress {
            running: &self.installing,
            finished: &self.installed,
            succeeded: false,
        }
    }

    /// A chunk of `bytes` of `group`'s snapshot goes to `target`; `last` when it is the
    /// transfer's last chunk. Call [`SnapshotProgress::chunk_sent`] once it was answered.
    pub fn sending_chunk(&self, group: GroupId, target: NodeId, bytes: usize) {
        let now = Instant::now();
        let mut sending = lock(&self.sending);
        live(&mut sending, now);
        sending.insert((group, target), now);
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The target answered a chunk to it: `last` when it was the transfer's last chunk, `ok`
    /// when the target took it.
    pub fn chunk_sent(&self, group: GroupId, target: NodeId, last: bool, ok: bool) {
        if !last {
            return;
        }
        lock(&self.sending).remove(&(group, target));
        if ok {
            self.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A chunk of `bytes` of a snapshot of `group` arrived.
    pub fn receiving_chunk(&self, group: GroupId, bytes: usize) {
        let now = Instant::now();
        let mut receiving = lock(&self.receiving);
        live(&mut receiving, now);
        receiving.insert(group, now);
        self.received_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// This node answered a chunk of `group`'s snapshot (see [`SnapshotProgress::chunk_sent`]).
    pub fn chunk_received(&self, group: GroupId, last: bool, ok: bool) {
        if !last {
            return;
        }
        lock(&self.receiving).remove(&group);
        if ok {
            self.received.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The numbers now.
    pub fn read(&self) -> SnapshotActivity {
        let now = Instant::now();
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SnapshotActivity {
            building: load(&self.building),
            sending: live(&mut lock(&self.sending), now),
            receiving: live(&mut lock(&self.receiving), now),
            installing: load(&self.installing),
            built: load(&self.built),
            sent: load(&self.sent),
            received: load(&self.received),
            installed: load(&self.installed),
            sent_bytes: load(&self.sent_bytes),
            received_bytes: load(&self.received_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build or install counts while its guard lives, and as finished only on success.
    #[test]
    fn guards_count_while_they_live() {
        let progress = SnapshotProgress::default();
        let build = progress.building();
        let install = progress.installing();
        assert_eq!((progress.read().building, progress.read().installing), (1, 1));
        build.succeeded();
        drop(install);
        let now = progress.read();
        assert_eq!((now.building, now.installing), (0, 0));
        assert_eq!(
            (now.built, now.installed),
            (1, 0),
            "the failed install is not counted"
        );
    }

    /// A transfer counts from its first chunk until its last one was answered; bytes add up.
    #[test]
    fn transfers_count_until_their_last_chunk() {
        let progress = SnapshotProgress::default();
        let shard = GroupId::Shard(3);
        progress.sending_chunk(shard, 2, 100);
        progress.chunk_sent(shard, 2, false, true);
        progress.sending_chunk(GroupId::System, 2, 50);
        progress.receiving_chunk(shard, 70);
        let now = progress.read();
        assert_eq!((now.sending, now.receiving), (2, 1));
        progress.sending_chunk(shard, 2, 10);
        progress.chunk_sent(shard, 2, true, true);
        progress.chunk_sent(GroupId::System, 2, true, false);
        progress.chunk_received(shard, true, true);
        let now = progress.read();
        assert_eq!((now.sending, now.receiving), (0, 0));
        assert_eq!((now.sent, now.received), (1, 1), "the failed send is not counted");
        assert_eq!((now.sent_bytes, now.received_bytes), (160, 70));
    }

    /// A transfer abandoned without its last chunk stops counting once idle.
    #[test]
    fn abandoned_transfers_stop_counting() {
        let mut transfers = HashMap::new();
        let now = Instant::now();
        transfers.insert(1u32, now);
        transfers.insert(2u32, now - Duration::from_secs(TRANSFER_IDLE_SECONDS + 1));
        assert_eq!(live(&mut transfers, now), 1);
        assert!(transfers.contains_key(&1));
    }
}
