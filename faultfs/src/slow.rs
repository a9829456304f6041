//! Slow syncs: a thread that answers `fsync`/`fdatasync` requests when their delay is over, so
//! the FUSE session thread never waits for one.
//!
//! # Why a thread of its own
//! The mount has one FUSE request thread (fuser's default) and one state mutex. Sleeping in the
//! `fsync` handler would hold up every other request of every process on the mount — reads,
//! writes, other files' syncs — which no real slow disk does: there, a sync waits for the device
//! while reads from the page cache and buffered writes go on. FUSE lets a filesystem answer a
//! request later from any thread (the kernel matches answers by request id), so the handler only
//! queues the request here and returns at once; this thread runs the sync when its delay is
//! over (under the state lock like every request, for as long as the real sync takes) and
//! answers it. Syncs are delayed from their arrival, so syncs issued together finish together,
//! as on a device that serves a queue.
//!
//! The sync itself runs at the end of the delay: until then its data is as volatile as any
//! unsynced write (a drop loses it), and the caller is blocked in `fsync` the whole time. A
//! process killed while its sync is delayed stays (unkillable, in the kernel) until the answer
//! comes, then exits — what a process stuck on a slow disk does too.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use fuser::{Errno, ReplyEmpty};
use tracing::warn;

use crate::error::Error;
use crate::fs::{lock, State};

/// Delayed syncs queued at most; a full queue holds up the FUSE thread (the device's queue is
/// full, so new requests wait), which bounds this process's memory.
const MAX_QUEUED_SYNCS: usize = 4096;

/// What a delayed sync syncs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SyncTarget {
    /// A file through one of its handles; `datasync` for `fdatasync`.
    File { ino: u64, fh: u64, datasync: bool },
    /// A directory.
    Dir { ino: u64 },
}

/// One sync waiting for its delay to pass.
struct Pending {
    due: Instant,
    /// Arrival order: ties (same due instant) are answered in it.
    seq: u64,
    target: SyncTarget,
    reply: ReplyEmpty,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// The thread answering delayed syncs; dropping it answers what is still queued at once and
/// joins the thread.
pub(crate) struct SlowSyncs {
    /// `None` only while dropping.
    sender: Option<SyncSender<Pending>>,
    next_seq: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

impl SlowSyncs {
    /// Starts the thread; syncs run against `state`.
    pub(crate) fn start(state: Arc<Mutex<State>>) -> Result<Self, Error> {
        let (sender, receiver) = mpsc::sync_channel(MAX_QUEUED_SYNCS);
        let thread = std::thread::Builder::new()
            .name("faultfs-slow-syncs".into())
            .spawn(move || serve(&receiver, &state))
            .map_err(|source| Error::Spawn {
                name: "faultfs-slow-syncs",
                source,
            })?;
        Ok(Self {
            sender: Some(sender),
            next_seq: AtomicU64::new(0),
            thread: Some(thread),
        })
    }

    /// Answers `reply` once `due` has passed, after syncing `target`.
    pub(crate) fn defer(&self, due: Instant, target: SyncTarget, reply: ReplyEmpty) {
        let pending = Pending {
            due,
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            target,
            reply,
        };
        let sent = match &self.sender {
            Some(sender) => sender.send(pending).map_err(|mpsc::SendError(pending)| pending),
            None => Err(pending),
        };
        if let Err(pending) = sent {
            // The thread is gone (it panicked): fail the sync rather than pretend it ran.
            warn!("the slow-sync thread is gone: failing the sync");
            pending.reply.error(Errno::EIO);
        }
    }
}

impl Drop for SlowSyncs {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                warn!("the slow-sync thread panicked");
            }
        }
    }
}

fn serve(receiver: &Receiver<Pending>, state: &Mutex<State>) {
    let mut queue: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    loop {
        let now = Instant::now();
        while queue.peek().is_some_and(|Reverse(next)| next.due <= now) {
            if let Some(Reverse(pending)) = queue.pop() {
                run(&pending.target, pending.reply, state);
            }
        }
        let received = match queue.peek() {
            Some(Reverse(next)) => receiver.recv_timeout(next.due.saturating_duration_since(now)),
            None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok(pending) => queue.push(Reverse(pending)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // The filesystem is going away: answer what is left now.
                for Reverse(pending) in queue.into_sorted_vec().into_iter().rev() {
                    run(&pending.target, pending.reply, state);
                }
                return;
            }
        }
    }
}

fn run(target: &SyncTarget, reply: ReplyEmpty, state: &Mutex<State>) {
    let synced = match *target {
        SyncTarget::File { ino, fh, datasync } => lock(state).fsync(ino, fh, datasync),
        SyncTarget::Dir { ino } => lock(state).fsync_dir(ino),
    };
    match synced {
        Ok(()) => reply.ok(),
        Err(errno) => reply.error(errno),
    }
}
