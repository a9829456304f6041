//! One write-ahead log per node, shared by every Raft group on it.
//!
//! A multi-raft node runs hundreds of Raft groups; giving each its own log (or its own tree
//! in a general-purpose store) turns every append into scattered writes and every fsync
//! into a flush of everything. Here all groups append to one stream of segment files, so
//! one `fdatasync` ([`Wal::sync`]) makes the appends of every group durable at once (group
//! commit across shards), and an in-memory index per group says where each entry is.
//!
//! - **Writer thread** (module `writer`): callers only queue records (bounded by
//!   [`WalOptions::max_queued_bytes`]) and update the index, so what they queued is readable
//!   at once and no caller waits on IO. A caller that finds the queue full waits for room:
//!   [`Wal::append`] and the other plain writes block their thread; async callers use
//!   [`Wal::append_async`], [`Wal::set_meta_async`], [`Wal::truncate_async`] and
//!   [`Wal::purge_async`], which wait without blocking it (a slow disk must not park a
//!   runtime's workers). One thread per log writes everything queued with one
//!   `write` per segment, runs one `fdatasync` for every waiter ([`Wal::on_durable`],
//!   [`Wal::sync`]) and calls them back. [`Wal::close`] (or dropping the last handle)
//!   writes what is queued and joins the thread.
//! - **Records** (module `record`): append, truncate, purge, set a small value (the vote,
//!   …), drop a group — each framed with its length and a CRC-32 of its body.
//! - **Segments** (module `segment`): files `<id>.wal` of about
//!   [`WalOptions::segment_bytes`]; the active one is cut to the end of its frames and synced
//!   before the next is created, so only the last segment can end in a torn write or in
//!   zeros. The writer preallocates the active segment [`WalOptions::preallocate_bytes`]
//!   ahead (`fallocate`), so a sync after a write need not write a new file size. Recovery
//!   replays every segment in order and cuts the last one at its first invalid frame (zeros
//!   from there to the end are room preallocated and not yet written: kept, not cut); an
//!   invalid frame or a zeroed end in any earlier segment is corruption and fails the open
//!   (segments of format version 1, which kept their room when the writer moved on, may end
//!   in zeros wherever they are).
//! - **Purge by segment**: every segment counts the live entries and values it holds.
//!   [`Wal::collect_garbage`] deletes the oldest segments once they hold none, after a sync
//!   has made the records that released them durable; when more than
//!   [`WalOptions::max_segments`] exist, the groups pinning the oldest one (an idle group's
//!   log or vote) are rewritten into the active segment first — unless they hold more than
//!   half a segment, which only busy groups do (they free it at their next purge). A rewrite
//!   reads with the state unlocked and queues its copies as appends do (waiting for room);
//!   it skips an entry the group changed meanwhile. Collections run one at a time.
//! - **Fail-stop**: after a failed write or sync (`ENOSPC`, `EIO`, …) the log accepts
//!   nothing more (a partial record would hide every later one from recovery, and a failed
//!   fsync may have dropped pages); the node must restart and recover. The failure is
//!   reported once to [`WalOptions::on_failure`], before any waiter is failed, so the process
//!   can stop at once instead of waiting for its next write to be refused (which an idle
//!   group never makes). A write fails on the writer thread, after the append that queued it
//!   returned: its waiters, and every later call, get [`WalError::Failed`]. A panic on the
//!   writer thread is handled as such a failure (reported, waiters failed), so nothing waits
//!   forever for a thread that is gone.
//!   [`WalOptions::unsafe_ignore_failures`] switches this off for a negative control.
//!
//! Entries and values are opaque bytes; groups are `u64` ids. Appending at an index that
//! exists overwrites it (truncation is explicit, as Raft asks for it); gaps are allowed.

mod index;
mod record;
mod segment;
mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tracing::{info, warn};

use index::{Index, Loc, Segment};
use record::{Record, FRAME_HEADER};
use writer::{Op, Waiter};

/// Errors of the log. Every one but [`WalError::TooLarge`] and [`WalError::Closed`] means
/// the disk failed or holds something this code did not write.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("wal corrupt: {0}")]
    Corrupt(String),
    #[error("wal record too large")]
    TooLarge,
    #[error("wal stopped after an earlier failure ({0}); restart the node to recover")]
    Failed(String),
    #[error("wal closed")]
    Closed,
}

/// Sizes of the log, and what to do when it fails.
#[derive(Debug, Clone, Copy)]
pub struct WalOptions {
    /// A new segment starts once the active one holds this many bytes.
    pub segment_bytes: u64,
    /// More segments than this make [`Wal::collect_garbage`] rewrite what pins the oldest.
    pub max_segments: usize,
    /// Most bytes of records queued for the writer thread and not yet written; a write that
    /// finds the queue this full waits for room (backpressure; the `_async` writes without
    /// blocking their thread).
    pub max_queued_bytes: usize,
    /// How far ahead of its writes the active segment is preallocated (`fallocate`), so an
    /// `fdatasync` writes data and no new file size; 0 = never (the file grows with each
    /// write). Recovery reads the unwritten rest (zeros) as room, not as a torn write.
    pub preallocate_bytes: u64,
    /// Called once, with the reason, when a write or sync fails and the log stops accepting
    /// writes (after it marked itself failed, before any waiter learns of it). A node passes
    /// its fail-stop here; `None` only returns [`WalError::Failed`] from then on.
    pub on_failure: Option<fn(&str)>,
    /// NEGATIVE CONTROL ONLY — breaks durability on purpose: a failed write or sync (of a
    /// segment or of the log's directory) is logged and treated as success; the log neither
    /// stops nor calls `on_failure`, so its caller acknowledges what may not be on disk (and
    /// a failed write leaves a hole that reads and recovery find corrupt). Failures that
    /// leave nothing to go on with (a segment that cannot be created or deleted) still stop
    /// the log. A fault-injection harness must catch a node running with it.
    pub unsafe_ignore_failures: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            max_segments: 8,
            max_queued_bytes: 64 << 20,
            preallocate_bytes: 4 << 20,
            on_failure: None,
            unsafe_ignore_failures: false,
        }
    }
}

/// Counters of the log since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    pub segments: usize,
    pub groups: usize,
    pub appended_bytes: u64,
    /// `write` calls of the writer thread (each writes a batch of records).
    pub writes: u64,
    pub syncs: u64,
    pub deleted_segments: u64,
    pub rewritten_groups: u64,
    /// Bytes the writer thread wrote to segment files (appends, values and rewrites).
    pub written_bytes: u64,
    /// `fallocate` calls that preallocated room in the active segment
    /// ([`WalOptions::preallocate_bytes`]).
    pub preallocations: u64,
    /// The writer's fdatasyncs of the active segment by latency: per bucket of
    /// [`SYNC_LATENCY_BOUNDS_SECONDS`] (not cumulative), the last one beyond the last bound.
    pub sync_latency_counts: [u64; SYNC_LATENCY_BUCKETS],
    /// The time those fdatasyncs took together, in nanoseconds.
    pub sync_latency_nanos: u64,
}

/// One group's live entries ([`Wal::log_sizes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogSize {
    pub entries: usize,
    /// Bytes of the entries as appended (record framing not counted).
    pub entry_bytes: u64,
}

/// Upper bounds (seconds) of the buckets the writer counts its fdatasyncs in (those of the
/// Prometheus histograms of `ringkv-metrics`; the node checks that they match).
pub const SYNC_LATENCY_BOUNDS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of the sync latency: one per bound and one beyond.
pub const SYNC_LATENCY_BUCKETS: usize = SYNC_LATENCY_BOUNDS_SECONDS.len() + 1;

/// What recovery found when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub records: u64,
    /// Bytes cut from the end of the last segment: a torn write (preallocated space not yet
    /// written, which reads as zeros, is kept and not counted).
    pub truncated_bytes: u64,
}

/// The log. Clones share it; the last clone dropped (or [`Wal::close`]) stops its writer
/// thread after it wrote everything queued.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
    writer: Arc<WriterHandle>,
}

/// What the callers and the writer thread share.
pub(crate) struct Inner {
    dir: PathBuf,
    options: WalOptions,
    /// Held only for index updates, queueing and copies: never across IO.
    state: Mutex<State>,
    /// Signalled when the writer has work: queued records, waiters, closing.
    work: Condvar,
    /// Signalled when the writer freed queue room, or the log failed or closed (see
    /// [`Inner::wake_room_waiters`]).
    room: Condvar,
    /// The same signal for async callers ([`Wal::append_async`], …), who wait for room
    /// without blocking their thread.
    room_async: tokio::sync::Notify,
    /// Held by [`Wal::collect_garbage`] throughout: two collections at once would choose
    /// the same segments, and the second would fail deleting what the first deleted.
    collecting: Mutex<()>,
    /// Test hook: the writer thread panics in its next batch, after writing it.
    #[cfg(test)]
    panic_next: std::sync::atomic::AtomicBool,
    appended_bytes: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    deleted_segments: AtomicU64,
    rewritten_groups: AtomicU64,
    written_bytes: AtomicU64,
    preallocations: AtomicU64,
    /// Set when the file system has no `fallocate`: the writer stops asking.
    no_fallocate: std::sync::atomic::AtomicBool,
    /// See [`WalStats::sync_latency_counts`].
    sync_latency_counts: [AtomicU64; SYNC_LATENCY_BUCKETS],
    sync_latency_nanos: AtomicU64,
}

/// The owner of the writer thread: dropping the last one stops and joins it.
struct WriterHandle {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

impl WriterHandle {
    /// Asks the writer to finish what is queued and waits for it to exit.
    fn stop(&self) {
        self.inner.lock_state().closing = true;
        self.inner.work.notify_all();
        self.inner.wake_room_waiters();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = thread {
            if thread.thread().id() == std::thread::current().id() {
                // The last handle went away in a callback, on the writer thread itself: it
                // exits on its own once the queue is empty (`closing` is set).
                return;
            }
            if thread.join().is_err() {
                tracing::error!("the write-ahead log's writer thread panicked");
            }
        }
    }
}

/// Most bytes of entries a rewrite ([`Wal::collect_garbage`]) queues before it waits for
/// room again, as appends do.
const REWRITE_CHUNK_BYTES: usize = 1 << 20;

/// A byte position in the stream of segments.
pub(crate) type Position = (u64, u64);

pub(crate) struct State {
    index: Index,
    /// The segment records are queued into, and its length once the queue is written.
    active: u64,
    active_len: u64,
    /// Records (and segment starts) not yet written, in stream order: reads of their
    /// entries are served from here. Bounded by [`WalOptions::max_queued_bytes`].
    queue: std::collections::VecDeque<Op>,
    queued_bytes: usize,
    /// Every byte before this is written (what is at or after it is in `queue`).
    written: Position,
    /// Every byte before this is durable.
    synced: Position,
    /// Callers waiting for a position to be written or durable, in arrival order.
    waiters: Vec<Waiter>,
    /// Why the log stopped accepting writes, if it did.
    failed: Option<String>,
    /// Set by [`Wal::close`] (or the last drop): no new writes; the writer drains and exits.
    closing: bool,
    /// Set by the writer thread as it exits: nobody calls waiters back any more.
    stopped: bool,
    /// Set by the writer thread while it sleeps on [`Inner::work`]: only then does new work
    /// signal it (see [`Inner::wake_writer`]).
    writer_asleep: bool,
    /// Threads blocked on [`Inner::room`]: only then does freed room signal it.
    blocked_for_room: usize,
}

/// How to call back a caller waiting on the writer: with the outcome of the write (and
/// sync) covering what it waited for.
pub type Done = Box<dyn FnOnce(Result<(), WalError>) + Send>;

impl Wal {
    /// Opens (or creates) the log in `dir`, recovers every group from its segments and starts
    /// the log's writer thread.
    pub fn open(dir: &Path, options: WalOptions) -> Result<(Wal, Recovery), WalError> {
        std::fs::create_dir_all(dir)?;
        if let Some(parent) = dir.parent() {
            segment::sync_dir(parent)?;
        }
        let (index, recovery, active, active_len, allocated) = recover(dir)?;
        if recovery.segments > 0 {
            info!(
                segments = recovery.segments,
                records = recovery.records,
                groups = index.groups.len(),
                "write-ahead log recovered"
            );
        }
        let active_file = index
            .segments
            .get(&active)
            .and_then(|held| held.file.clone())
            .ok_or_else(|| WalError::Corrupt("active segment missing".to_string()))?;
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            options,
            state: Mutex::new(State {
                index,
                active,
                active_len,
                queue: std::collections::VecDeque::new(),
                queued_bytes: 0,
                written: (active, active_len),
                synced: (active, active_len),
                waiters: Vec::new(),
                failed: None,
                closing: false,
                stopped: false,
                writer_asleep: false,
                blocked_for_room: 0,
            }),
            work: Condvar::new(),
            room: Condvar::new(),
            room_async: tokio::sync::Notify::new(),
            collecting: Mutex::new(()),
            #[cfg(test)]
            panic_next: std::sync::atomic::AtomicBool::new(false),
            appended_bytes: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            deleted_segments: AtomicU64::new(0),
            rewritten_groups: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            preallocations: AtomicU64::new(0),
            no_fallocate: std::sync::atomic::AtomicBool::new(false),
            sync_latency_counts: Default::default(),
            sync_latency_nanos: AtomicU64::new(0),
        });
        let thread = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("ringkv-wal-writer".to_string())
                .spawn(move || writer::run(&inner, active, active_file, active_len, allocated))?
        };
        let writer = Arc::new(WriterHandle {
            inner: inner.clone(),
            thread: Mutex::new(Some(thread)),
        });
        Ok((Wal { inner, writer }, recovery))
    }

    /// Queues `entries` as `group`'s entries `first, first + 1, …` (overwriting any at those
    /// indexes). They are readable at once, written by the writer thread soon, and durable
    /// once a later [`Wal::sync`] or [`Wal::on_durable`] returns. Waits only when the queue
    /// is full ([`WalOptions::max_queued_bytes`]), blocking the thread: async callers use
    /// [`Wal::append_async`].
    pub fn append<E: AsRef<[u8]>>(&self, group: u64, first: u64, entries: &[E]) -> Result<(), WalError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut frame = Vec::new();
        let positions = record::encode_append(&mut frame, group, first, entries)?;
        let mut state = self.writable()?;
        self.inner
            .queue_append(&mut state, group, first, frame, &positions);
        Ok(())
    }

    /// [`Wal::append`] for async callers: waits for queue room without blocking the thread
    /// (a full queue behind a slow disk must not park a runtime's workers).
    pub async fn append_async<E: AsRef<[u8]> + Sync>(
        &self,
        group: u64,
        first: u64,
        entries: &[E],
    ) -> Result<(), WalError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut frame = Vec::new();
        let positions = record::encode_append(&mut frame, group, first, entries)?;
        let mut state = self.writable_async().await?;
        self.inner
            .queue_append(&mut state, group, first, frame, &positions);
        Ok(())
    }

    /// Removes `group`'s entries with index ≥ `from`.
    pub fn truncate(&self, group: u64, from: u64) -> Result<(), WalError> {
        let mut frame = Vec::new();
        record::encode_truncate(&mut frame, group, from)?;
        self.queue_record(frame, Record::Truncate { group, from })
    }

    /// Removes `group`'s entries with index ≤ `upto`.
    pub fn purge(&self, group: u64, upto: u64) -> Result<(), WalError> {
        let mut frame = Vec::new();
        record::encode_purge(&mut frame, group, upto)?;
        self.queue_record(frame, Record::Purge { group, upto })
    }

    /// Sets `group`'s value `key` (small: a vote, a log id). Readable at once (from memory:
    /// [`Wal::meta`] never waits for IO).
    pub fn set_meta(&self, group: u64, key: u8, value: &[u8]) -> Result<(), WalError> {
        let mut frame = Vec::new();
        record::encode_meta(&mut frame, group, key, value)?;
        self.queue_record(frame, Record::Meta { group, key, value })
    }

    /// [`Wal::truncate`] for async callers (waits for queue room without blocking).
    pub async fn truncate_async(&self, group: u64, from: u64) -> Result<(), WalError> {
        let mut frame = Vec::new();
        record::encode_truncate(&mut frame, group, from)?;
        self.queue_record_async(frame, Record::Truncate { group, from })
            .await
    }

    /// [`Wal::purge`] for async callers (waits for queue room without blocking).
    pub async fn purge_async(&self, group: u64, upto: u64) -> Result<(), WalError> {
        let mut frame = Vec::new();
        record::encode_purge(&mut frame, group, upto)?;
        self.queue_record_async(frame, Record::Purge { group, upto })
            .await
    }

    /// [`Wal::set_meta`] for async callers (waits for queue room without blocking).
    pub async fn set_meta_async(&self, group: u64, key: u8, value: &[u8]) -> Result<(), WalError> {
        let mut frame = Vec::new();
        record::encode_meta(&mut frame, group, key, value)?;
        self.queue_record_async(frame, Record::Meta { group, key, value })
            .await
    }

    /// Forgets every entry and value of `group`.
    pub fn drop_group(&self, group: u64) -> Result<(), WalError> {
        let mut frame = Vec::new();
        record::encode_drop(&mut frame, group)?;
        self.queue_record(frame, Record::Drop { group })
    }

    /// `group`'s value `key`.
    pub fn meta(&self, group: u64, key: u8) -> Option<Vec<u8>> {
        let state = self.inner.lock_state();
        let group = state.index.groups.get(&group)?;
        group.meta.get(&key).map(|(value, _)| value.clone())
    }

    /// The groups with any entry or value.
    pub fn groups(&self) -> Vec<u64> {
        let mut groups: Vec<u64> = self.inner.lock_state().index.groups.keys().copied().collect();
        groups.sort_unstable();
        groups
    }

    /// Every group's live entries: how many and their bytes (kept by the index as entries
    /// come and go, so this is one pass over the groups, not over their entries).
    pub fn log_sizes(&self) -> BTreeMap<u64, LogSize> {
        let state = self.inner.lock_state();
        state
            .index
            .groups
            .iter()
            .map(|(group, index)| {
                let size = LogSize {
                    entries: index.entries.len(),
                    entry_bytes: index.entry_bytes,
                };
                (*group, size)
            })
            .collect()
    }

    /// The lowest and highest index of `group`'s entries.
    pub fn bounds(&self, group: u64) -> Option<(u64, u64)> {
        let state = self.inner.lock_state();
        let entries = &state.index.groups.get(&group)?.entries;
        Some((*entries.first_key_value()?.0, *entries.last_key_value()?.0))
    }

    /// `group`'s entries with index in `(start, end)`, ascending, as `(index, bytes)`; stops
    /// once `max_bytes` would be exceeded (but returns at least one entry if any exists).
    /// Entries not written yet are copied from the writer's queue; the others are read from
    /// their segments after the state is unlocked.
    pub fn read(
        &self,
        group: u64,
        start: Bound<u64>,
        end: Bound<u64>,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
        let (locs, sources) = {
            let state = self.inner.lock_state();
            let mut locs = state.index.locs(group, start, end);
            let mut total = 0usize;
            let keep = locs
                .iter()
                .take_while(|(_, loc)| {
                    total += loc.len as usize;
                    total <= max_bytes
                })
                .count()
                .max(1);
            locs.truncate(keep);
            let sources = sources(&state, &locs)?;
            (locs, sources)
        };
        read_runs(&locs, sources)
    }

    /// Makes everything queued before this call durable: waits for the writer thread to
    /// write it and run the `fdatasync` covering it (shared with every other waiter of the
    /// batch). Must not be called from a [`Done`] callback (it runs on the writer thread).
    pub fn sync(&self) -> Result<(), WalError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.on_durable(Box::new(move |result| {
            let _ = tx.send(result);
        }));
        rx.recv().unwrap_or(Err(WalError::Closed))
    }

    /// Calls `done` once everything queued before this call is durable (or with the error
    /// that stopped the log). `done` runs on the writer thread (or at once, on this one, if
    /// nothing needs to wait): it must be quick and must not wait on the log.
    pub fn on_durable(&self, done: Done) {
        self.inner.wait_for(done, true);
    }

    /// Calls `done` once everything queued before this call is written, without waiting for
    /// a sync — the unsafe negative control `--unsafe-skip-fsync` acknowledges this way.
    pub fn on_written(&self, done: Done) {
        self.inner.wait_for(done, false);
    }

    /// Makes everything queued durable, then stops the writer thread; later writes fail
    /// with [`WalError::Closed`] (reads go on). The node calls it last at shutdown.
    pub fn close(&self) -> Result<(), WalError> {
        let synced = self.sync();
        self.writer.stop();
        synced
    }

    /// Deletes the oldest segments that hold nothing live, after a sync makes the records
    /// that released them durable; first, if there are more than
    /// [`WalOptions::max_segments`], rewrites the groups pinning the oldest segment into the
    /// active one (when what they hold is at most half a segment). Returns how many segments
    /// were deleted. Blocks on IO (a sync, reads of what it rewrites): not for async callers.
    /// Collections run one at a time; a segment file found already gone counts as deleted.
    pub fn collect_garbage(&self) -> Result<usize, WalError> {
        let _collecting = self
            .inner
            .collecting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.rewrite_oldest()?;
        let candidates = {
            let state = self.writable()?;
            let active = state.active;
            state
                .index
                .segments
                .iter()
                .take_while(|(id, held)| **id != active && held.refs == 0)
                .map(|(id, _)| *id)
                .collect::<Vec<u64>>()
        };
        if candidates.is_empty() {
            return Ok(0);
        }
        // References to old segments only ever drop, so the candidates stay free; the sync
        // also means the writer has moved past them (it started every later segment).
        self.sync()?;
        for id in &candidates {
            match std::fs::remove_file(segment::path(&self.inner.dir, *id)) {
                Ok(()) => {}
                // Gone already: what deleting it was for.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    warn!(segment = id, "a free segment of the log was already deleted");
                }
                Err(err) => {
                    return Err(self.inner.fail(format!("deleting segment {id} failed: {err}")));
                }
            }
        }
        if let Err(err) = segment::sync_dir(&self.inner.dir) {
            let reason = format!("syncing the log directory failed: {err}");
            if !self.inner.ignored(&reason) {
                return Err(self.inner.fail(reason));
            }
        }
        let mut state = self.inner.lock_state();
        for id in &candidates {
            state.index.segments.remove(id);
        }
        self.inner
            .deleted_segments
            .fetch_add(candidates.len() as u64, Ordering::Relaxed);
        Ok(candidates.len())
    }

    /// When there are more than [`WalOptions::max_segments`], rewrites the live entries and
    /// values of every group pinning the oldest segment into the active one, so the oldest
    /// can be deleted. Reads what it copies with the state unlocked, and queues the copies
    /// as appends do (waiting for room, at most [`REWRITE_CHUNK_BYTES`] at a time), each
    /// entry only if the index still points where it was read (a group may append,
    /// truncate or purge meanwhile). Runs under [`Inner::collecting`], so nothing else
    /// deletes segments meanwhile.
    fn rewrite_oldest(&self) -> Result<(), WalError> {
        let (oldest, reads) = {
            let state = self.writable()?;
            if state.index.segments.len() <= self.inner.options.max_segments {
                return Ok(());
            }
            let Some((&oldest, _)) = state.index.segments.first_key_value() else {
                return Ok(());
            };
            if oldest == state.active {
                return Ok(());
            }
            let pinning: Vec<u64> = state
                .index
                .groups
                .iter()
                .filter(|(_, group)| group.references(oldest))
                .map(|(id, _)| *id)
                .collect();
            // Worth it for idle groups holding a few entries and their vote; groups with much
            // live log are busy and free the segment themselves at their next purge.
            let live_bytes: u64 = pinning
                .iter()
                .filter_map(|group| state.index.groups.get(group))
                .map(|index| index.live_bytes())
                .sum();
            if live_bytes > self.inner.options.segment_bytes / 2 {
                return Ok(());
            }
            let mut reads = Vec::with_capacity(pinning.len());
            for group in pinning {
                let locs = state.index.locs(group, Bound::Unbounded, Bound::Unbounded);
                let sources = sources(&state, &locs)?;
                reads.push((group, locs, sources));
            }
            (oldest, reads)
        };
        for (group, locs, sources) in reads {
            let entries = read_runs(&locs, sources)?;
            self.requeue_entries(group, &locs, entries)?;
            self.requeue_meta(group, oldest)?;
            self.inner.rewritten_groups.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Queues `group`'s `entries` (read from `locs`) again, one append per run of consecutive
    /// indexes, skipping every entry whose location changed since it was read.
    fn requeue_entries(
        &self,
        group: u64,
        locs: &[(u64, Loc)],
        entries: Vec<(u64, Vec<u8>)>,
    ) -> Result<(), WalError> {
        debug_assert_eq!(locs.len(), entries.len());
        let mut pending = locs.iter().zip(entries).peekable();
        while pending.peek().is_some() {
            let mut state = self.writable()?;
            let mut chunk_bytes = 0usize;
            let mut run: Vec<Vec<u8>> = Vec::new();
            let mut run_first = 0;
            while chunk_bytes < REWRITE_CHUNK_BYTES {
                let Some(((index, loc), (_, bytes))) = pending.next() else {
                    break;
                };
                let current = state
                    .index
                    .groups
                    .get(&group)
                    .and_then(|held| held.entries.get(index))
                    == Some(loc);
                let follows = !run.is_empty() && *index == run_first + run.len() as u64;
                if !run.is_empty() && (!current || !follows) {
                    self.inner
                        .requeue_run(&mut state, group, run_first, &std::mem::take(&mut run))?;
                }
                if !current {
                    continue;
                }
                if run.is_empty() {
                    run_first = *index;
                }
                chunk_bytes += bytes.len();
                run.push(bytes);
            }
            if !run.is_empty() {
                self.inner.requeue_run(&mut state, group, run_first, &run)?;
            }
        }
        Ok(())
    }

    /// Queues again `group`'s values held in segment `oldest` (current values, from memory).
    fn requeue_meta(&self, group: u64, oldest: u64) -> Result<(), WalError> {
        let mut state = self.writable()?;
        let meta: Vec<(u8, Vec<u8>)> = state
            .index
            .groups
            .get(&group)
            .map(|index| {
                index
                    .meta
                    .iter()
                    .filter(|(_, (_, segment))| *segment == oldest)
                    .map(|(key, (value, _))| (*key, value.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (key, value) in meta {
            let mut frame = Vec::new();
            record::encode_meta(&mut frame, group, key, &value)?;
            let (segment, offset) = self.inner.queue_frame(&mut state, frame);
            let record = Record::Meta {
                group,
                key,
                value: &value,
            };
            state.index.apply(segment, offset + FRAME_HEADER as u64, &record);
        }
        Ok(())
    }

    /// Counters since the log was opened.
    pub fn stats(&self) -> WalStats {
        let state = self.inner.lock_state();
        WalStats {
            segments: state.index.segments.len(),
            groups: state.index.groups.len(),
            appended_bytes: self.inner.appended_bytes.load(Ordering::Relaxed),
            writes: self.inner.writes.load(Ordering::Relaxed),
            syncs: self.inner.syncs.load(Ordering::Relaxed),
            deleted_segments: self.inner.deleted_segments.load(Ordering::Relaxed),
            rewritten_groups: self.inner.rewritten_groups.load(Ordering::Relaxed),
            written_bytes: self.inner.written_bytes.load(Ordering::Relaxed),
            preallocations: self.inner.preallocations.load(Ordering::Relaxed),
            sync_latency_counts: std::array::from_fn(|bucket| {
                self.inner.sync_latency_counts[bucket].load(Ordering::Relaxed)
            }),
            sync_latency_nanos: self.inner.sync_latency_nanos.load(Ordering::Relaxed),
        }
    }

    /// The state, once the queue has room, unless the log has failed or closed. Blocks the
    /// thread while the queue is full: for callers that are not async.
    fn writable(&self) -> Result<MutexGuard<'_, State>, WalError> {
        let mut state = self.inner.lock_state();
        while !self.inner.admits(&state)? {
            state.blocked_for_room += 1;
            state = self
                .inner
                .room
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.blocked_for_room -= 1;
        }
        Ok(state)
    }

    /// [`Wal::writable`] for async callers: waits for room without blocking the thread.
    async fn writable_async(&self) -> Result<MutexGuard<'_, State>, WalError> {
        loop {
            // Created before the check, so a wake-up between the check and the wait counts.
            let room = self.inner.room_async.notified();
            {
                let state = self.inner.lock_state();
                if self.inner.admits(&state)? {
                    return Ok(state);
                }
            }
            room.await;
        }
    }

    /// Queues an encoded record other than an append and applies it to the index.
    fn queue_record(&self, frame: Vec<u8>, record: Record<'_>) -> Result<(), WalError> {
        let mut state = self.writable()?;
        let (segment, offset) = self.inner.queue_frame(&mut state, frame);
        state.index.apply(segment, offset + FRAME_HEADER as u64, &record);
        Ok(())
    }

    /// [`Wal::queue_record`] for async callers.
    async fn queue_record_async(&self, frame: Vec<u8>, record: Record<'_>) -> Result<(), WalError> {
        let mut state = self.writable_async().await?;
        let (segment, offset) = self.inner.queue_frame(&mut state, frame);
        state.index.apply(segment, offset + FRAME_HEADER as u64, &record);
        Ok(())
    }
}

impl Inner {
    /// Counts one fdatasync of the writer that took `took`.
    pub(crate) fn count_sync(&self, took: std::time::Duration) {
        let seconds = took.as_secs_f64();
        let bucket = SYNC_LATENCY_BOUNDS_SECONDS.partition_point(|bound| *bound < seconds);
        self.sync_latency_counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sync_latency_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Whether a write may be queued now: `Ok(false)` while the queue is full; an error once
    /// the log failed or closed.
    fn admits(&self, state: &State) -> Result<bool, WalError> {
        if let Some(reason) = &state.failed {
            return Err(WalError::Failed(reason.clone()));
        }
        if state.closing {
            return Err(WalError::Closed);
        }
        Ok(state.queued_bytes < self.options.max_queued_bytes)
    }

    /// Wakes every caller waiting for queue room, blocked or async (to queue, or to learn
    /// that the log failed or closed).
    pub(crate) fn wake_room_waiters(&self) {
        self.room.notify_all();
        self.room_async.notify_waiters();
    }

    /// [`Inner::wake_room_waiters`] with the state locked, for the writer after each batch:
    /// the blocked threads are signalled only if there are any (a `futex` call otherwise
    /// spent per batch); the async waiters' signal costs nothing without waiters.
    pub(crate) fn wake_room_waiters_locked(&self, state: &State) {
        if state.blocked_for_room > 0 {
            self.room.notify_all();
        }
        self.room_async.notify_waiters();
    }

    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the index half-updated in a way that
        // matters more than the panic itself; keep serving reads.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a failed write or sync goes on as if it had succeeded
    /// ([`WalOptions::unsafe_ignore_failures`], a negative control); logs `reason` if so.
    pub(crate) fn ignored(&self, reason: &str) -> bool {
        if !self.options.unsafe_ignore_failures {
            return false;
        }
        tracing::error!(
            %reason,
            "NEGATIVE CONTROL: ignoring a failed write or sync of the write-ahead log"
        );
        true
    }

    /// Marks the log failed (every later write and sync is refused) and reports it.
    fn fail(&self, reason: String) -> WalError {
        let mut state = self.lock_state();
        self.fail_locked(&mut state, reason)
    }

    /// [`Inner::fail`] with the state already locked. The first failure is logged and
    /// passed to [`WalOptions::on_failure`] (which may end the process); later ones only
    /// return. Wakes writers waiting for room (they are refused now).
    pub(crate) fn fail_locked(&self, state: &mut State, reason: String) -> WalError {
        if state.failed.is_some() {
            return WalError::Failed(reason);
        }
        tracing::error!(%reason, "write-ahead log failed; refusing further writes");
        state.failed = Some(reason.clone());
        if let Some(on_failure) = self.options.on_failure {
            on_failure(&reason);
        }
        self.wake_room_waiters();
        self.work.notify_all();
        WalError::Failed(reason)
    }

    /// Registers `done` for everything queued so far (written, and durable if `durable`).
    fn wait_for(&self, done: Done, durable: bool) {
        let mut state = self.lock_state();
        if let Some(reason) = &state.failed {
            let reason = reason.clone();
            drop(state);
            done(Err(WalError::Failed(reason)));
            return;
        }
        let target = (state.active, state.active_len);
        let reached = if durable { state.synced } else { state.written };
        if reached >= target {
            drop(state);
            done(Ok(()));
            return;
        }
        if state.stopped {
            drop(state);
            done(Err(WalError::Closed));
            return;
        }
        state.waiters.push(Waiter {
            target,
            durable,
            done,
        });
        let wake = std::mem::take(&mut state.writer_asleep);
        drop(state);
        if wake {
            self.work.notify_one();
        }
    }

    /// Wakes the writer thread for new work if it sleeps. A busy writer takes the work from
    /// the queue when its batch is done, so the signal (a `futex` call per queued record,
    /// even with nobody waiting) is saved; the flag is read and cleared under the state lock
    /// the writer sets it under before it sleeps, so no signal is lost.
    fn wake_writer(&self, state: &mut State) {
        if std::mem::take(&mut state.writer_asleep) {
            self.work.notify_one();
        }
    }

    /// Queues an append frame and applies it to the index.
    fn queue_append(
        &self,
        state: &mut State,
        group: u64,
        first: u64,
        frame: Vec<u8>,
        positions: &[(usize, u32)],
    ) {
        let (segment, offset) = self.queue_frame(state, frame);
        let entries = positions
            .iter()
            .map(|&(at, len)| (at - FRAME_HEADER, len))
            .collect();
        let record = Record::Append {
            group,
            first,
            entries,
        };
        state.index.apply(segment, offset + FRAME_HEADER as u64, &record);
    }

    /// Puts one frame at the end of the stream (queueing the start of a new segment first
    /// if the active one is full); returns the segment and offset it will be written at.
    fn queue_frame(&self, state: &mut State, frame: Vec<u8>) -> (u64, u64) {
        let len = frame.len() as u64;
        if state.active_len > segment::HEADER && state.active_len + len > self.options.segment_bytes {
            let next = state.active + 1;
            state.index.segments.insert(next, Segment { file: None, refs: 0 });
            state.queue.push_back(Op::Start { segment: next });
            state.active = next;
            state.active_len = segment::HEADER;
        }
        let (segment, offset) = (state.active, state.active_len);
        state.queued_bytes += frame.len();
        state.queue.push_back(Op::Frame {
            segment,
            offset,
            bytes: Arc::from(frame),
        });
        state.active_len += len;
        self.appended_bytes.fetch_add(len, Ordering::Relaxed);
        self.wake_writer(state);
        (segment, offset)
    }

    /// Queues one run of a group's consecutive entries again (a rewrite).
    fn requeue_run(
        &self,
        state: &mut State,
        group: u64,
        first: u64,
        run: &[Vec<u8>],
    ) -> Result<(), WalError> {
        let mut frame = Vec::new();
        let positions = record::encode_append(&mut frame, group, first, run)?;
        self.queue_append(state, group, first, frame, &positions);
        Ok(())
    }
}

/// Reads every segment of `dir`: the index they hold, what recovery found, and the active
/// (last) segment, the length of its frames and its file's length (preallocated space
/// included). Cuts a torn tail of the last segment; creates the first segment of an empty
/// log.
fn recover(dir: &Path) -> Result<(Index, Recovery, u64, u64, u64), WalError> {
    let ids = segment::list(dir)?;
    let mut index = Index::default();
    let mut recovery = Recovery {
        segments: ids.len(),
        ..Recovery::default()
    };
    let mut active = None;
    for (n, &id) in ids.iter().enumerate() {
        let last = n + 1 == ids.len();
        let path = segment::path(dir, id);
        let bytes = std::fs::read(&path)?;
        let file = Arc::new(File::options().read(true).write(true).open(&path)?);
        index.segments.insert(
            id,
            Segment {
                file: Some(file.clone()),
                refs: 0,
            },
        );
        let segment::Contents {
            frames,
            end,
            cut_when_done,
        } = segment::frames(&bytes)?;
        for frame in &frames {
            index.apply(id, frame.offset + FRAME_HEADER as u64, &frame.record);
        }
        recovery.records += frames.len() as u64;
        let mut len = bytes.len() as u64;
        let mut allocated = len;
        if let segment::End::Unwritten { at } = end {
            if !last && cut_when_done {
                // The writer cut this segment to its frames before it started the next one:
                // zeros here replaced synced frames.
                return Err(WalError::Corrupt(format!(
                    "segment {id} ends in {} zero bytes after byte {at} but is not the last",
                    len - at
                )));
            }
            len = at;
        }
        if let segment::End::Torn { at, reason } = end {
            if !last {
                return Err(WalError::Corrupt(format!(
                    "segment {id} is invalid at byte {at} ({reason}) but is not the last"
                )));
            }
            recovery.truncated_bytes = len - at;
            if recovery.truncated_bytes > 0 {
                warn!(
                    segment = id,
                    at,
                    reason,
                    bytes = recovery.truncated_bytes,
                    "cutting the torn tail of the log"
                );
            }
            if at < segment::HEADER {
                use std::os::unix::fs::FileExt;
                file.set_len(0)?;
                file.write_all_at(segment::MAGIC, 0)?;
                len = segment::HEADER;
            } else {
                file.set_len(at)?;
                len = at;
            }
            allocated = len;
            file.sync_all()?;
        }
        if last {
            // What a killed process wrote may still be only in the page cache.
            file.sync_all()?;
            active = Some((id, len, allocated));
        }
    }
    let (active, active_len, allocated) = match active {
        Some(active) => active,
        None => {
            let file = segment::create(dir, 1)?;
            index.segments.insert(
                1,
                Segment {
                    file: Some(Arc::new(file)),
                    refs: 0,
                },
            );
            (1, segment::HEADER, segment::HEADER)
        }
    };
    Ok((index, recovery, active, active_len, allocated))
}

/// Where the bytes of an entry come from.
enum Source {
    /// Not written yet: copied from the writer's queue.
    Queued(Vec<u8>),
    /// Its segment file.
    File(Arc<File>),
}

/// The source of each of `locs`: the queue for what is not written yet, else the segment.
fn sources(state: &State, locs: &[(u64, Loc)]) -> Result<Vec<Source>, WalError> {
    locs.iter()
        .map(|(_, loc)| {
            if loc.len == 0 {
                // Nothing to read (and it may lie right at the end of what is written).
                return Ok(Source::Queued(Vec::new()));
            }
            if (loc.segment, loc.offset) >= state.written {
                return writer::queued_bytes(&state.queue, loc)
                    .map(Source::Queued)
                    .ok_or_else(|| {
                        WalError::Corrupt(format!(
                            "entry at {}:{} is neither written nor queued",
                            loc.segment, loc.offset
                        ))
                    });
            }
            state
                .index
                .segments
                .get(&loc.segment)
                .and_then(|held| held.file.clone())
                .map(Source::File)
                .ok_or_else(|| WalError::Corrupt(format!("entry in missing segment {}", loc.segment)))
        })
        .collect()
}

/// Reads the entries at `locs` from their `sources`: one read per run of entries that lie
/// next to each other in the same segment file.
fn read_runs(locs: &[(u64, Loc)], sources: Vec<Source>) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
    let mut out = Vec::with_capacity(locs.len());
    let mut sources = sources.into_iter().peekable();
    let mut i = 0;
    while let Some(source) = sources.next() {
        let file = match source {
            Source::Queued(bytes) => {
                out.push((locs[i].0, bytes));
                i += 1;
                continue;
            }
            Source::File(file) => file,
        };
        let start = locs[i].1;
        let mut end = i + 1;
        let mut run_end = start.offset + start.len as u64;
        // Entries of one append lie 4 bytes apart (each is preceded by its length).
        while end < locs.len()
            && matches!(sources.peek(), Some(Source::File(_)))
            && locs[end].1.segment == start.segment
            && locs[end].1.offset == run_end + 4
        {
            run_end = locs[end].1.offset + locs[end].1.len as u64;
            end += 1;
            sources.next();
        }
        let bytes = segment::read_at(&file, start.offset, (run_end - start.offset) as usize)?;
        for (index, loc) in &locs[i..end] {
            let from = (loc.offset - start.offset) as usize;
            out.push((*index, bytes[from..from + loc.len as usize].to_vec()));
        }
        i = end;
    }
    Ok(out)
}
