//! One write-ahead log per node, shared by every Raft group on it.
//!
//! A multi-raft node runs hundreds of Raft groups; giving each its own log (or its own tree
//! in a general-purpose store) turns every append into scattered writes and every fsync
//! into a flush of everything. Here all groups append to one stream of segment files, so
//! one `fdatasync` ([`Wal::sync`]) makes the appends of every group durable at once (group
//! commit across shards), and an in-memory index per group says where each entry is.
//!
//! - **Records** (module `record`): append, truncate, purge, set a small value (the vote,
//!   …), drop a group — each framed with its length and a CRC-32 of its body.
//! - **Segments** (module `segment`): files `<id>.wal` of about
//!   [`WalOptions::segment_bytes`]; the active one is synced before the next is created, so
//!   only the last segment can end in a torn write. Recovery replays every segment in order
//!   and cuts the last one at its first invalid frame; an invalid frame in any earlier
//!   segment is corruption and fails the open.
//! - **Purge by segment**: every segment counts the live entries and values it holds.
//!   [`Wal::collect_garbage`] deletes the oldest segments once they hold none, after a sync
//!   has made the records that released them durable; when more than
//!   [`WalOptions::max_segments`] exist, the groups pinning the oldest one (an idle group's
//!   log or vote) are rewritten into the active segment first — unless they hold more than
//!   half a segment, which only busy groups do (they free it at their next purge).
//! - **Fail-stop**: after a failed write or sync (`ENOSPC`, `EIO`, …) the log accepts
//!   nothing more (a partial record would hide every later one from recovery, and a failed
//!   fsync may have dropped pages); the node must restart and recover. The failure is
//!   reported once to [`WalOptions::on_failure`], so the process can stop at once instead of
//!   waiting for its next write to be refused (which an idle group never makes).
//!   [`WalOptions::unsafe_ignore_failures`] switches this off for a negative control.
//!
//! Entries and values are opaque bytes; groups are `u64` ids. Appending at an index that
//! exists overwrites it (truncation is explicit, as Raft asks for it); gaps are allowed.

mod index;
mod record;
mod segment;

use std::fs::File;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{info, warn};

use index::{Index, Loc, Segment};
use record::{Record, FRAME_HEADER};

/// Errors of the log. Every one but [`WalError::TooLarge`] means the disk failed or holds
/// something this code did not write.
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
}

/// Sizes of the log, and what to do when it fails.
#[derive(Debug, Clone, Copy)]
pub struct WalOptions {
    /// A new segment starts once the active one holds this many bytes.
    pub segment_bytes: u64,
    /// More segments than this make [`Wal::collect_garbage`] rewrite what pins the oldest.
    pub max_segments: usize,
    /// Called once, with the reason, when a write or sync fails and the log stops accepting
    /// writes (after it marked itself failed, before the failing call returns). A node passes
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
    pub syncs: u64,
    pub deleted_segments: u64,
    pub rewritten_groups: u64,
}

/// What recovery found when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub records: u64,
    /// Bytes cut from the end of the last segment (a torn write or unwritten space).
    pub truncated_bytes: u64,
}

/// The log. Clones share it.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    options: WalOptions,
    state: Mutex<State>,
    /// The position every byte before which is durable; held while syncing, so concurrent
    /// callers share one fsync.
    synced: Mutex<Position>,
    appended_bytes: AtomicU64,
    syncs: AtomicU64,
    deleted_segments: AtomicU64,
    rewritten_groups: AtomicU64,
}

/// A byte position in the stream of segments.
type Position = (u64, u64);

struct State {
    index: Index,
    active: u64,
    active_len: u64,
    /// Reused frame buffer.
    buf: Vec<u8>,
    /// Why the log stopped accepting writes, if it did.
    failed: Option<String>,
}

impl Wal {
    /// Opens (or creates) the log in `dir` and recovers every group from its segments.
    pub fn open(dir: &Path, options: WalOptions) -> Result<(Wal, Recovery), WalError> {
        std::fs::create_dir_all(dir)?;
        if let Some(parent) = dir.parent() {
            segment::sync_dir(parent)?;
        }
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
                    file: file.clone(),
                    refs: 0,
                },
            );
            let (frames, end) = segment::frames(&bytes)?;
            for frame in &frames {
                index.apply(id, frame.offset + FRAME_HEADER as u64, &frame.record);
            }
            recovery.records += frames.len() as u64;
            let mut len = bytes.len() as u64;
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
                    file.set_len(0)?;
                    file.write_all_at(segment::MAGIC, 0)?;
                    len = segment::HEADER;
                } else {
                    file.set_len(at)?;
                    len = at;
                }
                file.sync_all()?;
            }
            if last {
                // What a killed process wrote may still be only in the page cache.
                file.sync_all()?;
                active = Some((id, len));
            }
        }
        let (active, active_len) = match active {
            Some(active) => active,
            None => {
                let file = segment::create(dir, 1)?;
                index.segments.insert(
                    1,
                    Segment {
                        file: Arc::new(file),
                        refs: 0,
                    },
                );
                (1, segment::HEADER)
            }
        };
        if recovery.segments > 0 {
            info!(
                segments = recovery.segments,
                records = recovery.records,
                groups = index.groups.len(),
                "write-ahead log recovered"
            );
        }
        let wal = Wal {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                options,
                state: Mutex::new(State {
                    index,
                    active,
                    active_len,
                    buf: Vec::new(),
                    failed: None,
                }),
                synced: Mutex::new((active, active_len)),
                appended_bytes: AtomicU64::new(0),
                syncs: AtomicU64::new(0),
                deleted_segments: AtomicU64::new(0),
                rewritten_groups: AtomicU64::new(0),
            }),
        };
        Ok((wal, recovery))
    }

    /// Writes `entries` as `group`'s entries `first, first + 1, …` (overwriting any at those
    /// indexes). Durable after the next [`Wal::sync`].
    pub fn append<E: AsRef<[u8]>>(&self, group: u64, first: u64, entries: &[E]) -> Result<(), WalError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut state = self.state()?;
        self.append_locked(&mut state, group, first, entries)
    }

    /// Removes `group`'s entries with index ≥ `from`.
    pub fn truncate(&self, group: u64, from: u64) -> Result<(), WalError> {
        self.write_record(
            |buf| record::encode_truncate(buf, group, from),
            Record::Truncate { group, from },
        )
    }

    /// Removes `group`'s entries with index ≤ `upto`.
    pub fn purge(&self, group: u64, upto: u64) -> Result<(), WalError> {
        self.write_record(
            |buf| record::encode_purge(buf, group, upto),
            Record::Purge { group, upto },
        )
    }

    /// Sets `group`'s value `key` (small: a vote, a log id).
    pub fn set_meta(&self, group: u64, key: u8, value: &[u8]) -> Result<(), WalError> {
        self.write_record(
            |buf| record::encode_meta(buf, group, key, value),
            Record::Meta { group, key, value },
        )
    }

    /// Forgets every entry and value of `group`.
    pub fn drop_group(&self, group: u64) -> Result<(), WalError> {
        self.write_record(|buf| record::encode_drop(buf, group), Record::Drop { group })
    }

    /// `group`'s value `key`.
    pub fn meta(&self, group: u64, key: u8) -> Option<Vec<u8>> {
        let state = self.lock_state();
        let group = state.index.groups.get(&group)?;
        group.meta.get(&key).map(|(value, _)| value.clone())
    }

    /// The groups with any entry or value.
    pub fn groups(&self) -> Vec<u64> {
        let mut groups: Vec<u64> = self.lock_state().index.groups.keys().copied().collect();
        groups.sort_unstable();
        groups
    }

    /// The lowest and highest index of `group`'s entries.
    pub fn bounds(&self, group: u64) -> Option<(u64, u64)> {
        let state = self.lock_state();
        let entries = &state.index.groups.get(&group)?.entries;
        Some((*entries.first_key_value()?.0, *entries.last_key_value()?.0))
    }

    /// `group`'s entries with index in `(start, end)`, ascending, as `(index, bytes)`; stops
    /// once `max_bytes` would be exceeded (but returns at least one entry if any exists).
    pub fn read(
        &self,
        group: u64,
        start: Bound<u64>,
        end: Bound<u64>,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
        let (locs, files) = {
            let state = self.lock_state();
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
            let files: Vec<Arc<File>> = locs
                .iter()
                .map(|(_, loc)| {
                    state
                        .index
                        .segments
                        .get(&loc.segment)
                        .map(|held| held.file.clone())
                        .ok_or_else(|| WalError::Corrupt(format!("entry in missing segment {}", loc.segment)))
                })
                .collect::<Result<_, _>>()?;
            (locs, files)
        };
        read_runs(&locs, &files)
    }

    /// Makes everything written before this call durable: one `fdatasync` of the active
    /// segment (earlier segments were synced when the next one started). Concurrent callers
    /// share a sync.
    pub fn sync(&self) -> Result<(), WalError> {
        let (file, target) = {
            let state = self.state()?;
            let held = state
                .index
                .segments
                .get(&state.active)
                .ok_or_else(|| WalError::Corrupt("active segment missing".to_string()))?;
            (held.file.clone(), (state.active, state.active_len))
        };
        let mut synced = self
            .inner
            .synced
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *synced >= target {
            return Ok(());
        }
        if let Err(err) = file.sync_data() {
            let reason = format!("fdatasync failed: {err}");
            if !self.ignored(&reason) {
                return Err(self.fail(reason));
            }
        }
        self.inner.syncs.fetch_add(1, Ordering::Relaxed);
        *synced = target;
        Ok(())
    }

    /// Deletes the oldest segments that hold nothing live, after a sync makes the records
    /// that released them durable; first, if there are more than
    /// [`WalOptions::max_segments`], rewrites the groups pinning the oldest segment into the
    /// active one (when what they hold is at most half a segment). Returns how many segments
    /// were deleted.
    pub fn collect_garbage(&self) -> Result<usize, WalError> {
        let candidates = {
            let mut state = self.state()?;
            if state.index.segments.len() > self.inner.options.max_segments {
                self.rewrite_oldest(&mut state)?;
            }
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
        // References to old segments only ever drop, so the candidates stay free.
        self.sync()?;
        for id in &candidates {
            if let Err(err) = std::fs::remove_file(segment::path(&self.inner.dir, *id)) {
                return Err(self.fail(format!("deleting segment {id} failed: {err}")));
            }
        }
        if let Err(err) = segment::sync_dir(&self.inner.dir) {
            let reason = format!("syncing the log directory failed: {err}");
            if !self.ignored(&reason) {
                return Err(self.fail(reason));
            }
        }
        let mut state = self.lock_state();
        for id in &candidates {
            state.index.segments.remove(id);
        }
        self.inner
            .deleted_segments
            .fetch_add(candidates.len() as u64, Ordering::Relaxed);
        Ok(candidates.len())
    }

    /// Counters since the log was opened.
    pub fn stats(&self) -> WalStats {
        let state = self.lock_state();
        WalStats {
            segments: state.index.segments.len(),
            groups: state.index.groups.len(),
            appended_bytes: self.inner.appended_bytes.load(Ordering::Relaxed),
            syncs: self.inner.syncs.load(Ordering::Relaxed),
            deleted_segments: self.inner.deleted_segments.load(Ordering::Relaxed),
            rewritten_groups: self.inner.rewritten_groups.load(Ordering::Relaxed),
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the index half-updated in a way that
        // matters more than the panic itself; keep serving reads.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state, unless the log has failed.
    fn state(&self) -> Result<MutexGuard<'_, State>, WalError> {
        let state = self.lock_state();
        match &state.failed {
            Some(reason) => Err(WalError::Failed(reason.clone())),
            None => Ok(state),
        }
    }

    /// Whether a failed write or sync goes on as if it had succeeded
    /// ([`WalOptions::unsafe_ignore_failures`], a negative control); logs `reason` if so.
    fn ignored(&self, reason: &str) -> bool {
        if !self.inner.options.unsafe_ignore_failures {
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

    /// [`Wal::fail`] with the state already locked. The first failure is logged and passed
    /// to [`WalOptions::on_failure`] (which may end the process); later ones only return.
    fn fail_locked(&self, state: &mut State, reason: String) -> WalError {
        if state.failed.is_some() {
            return WalError::Failed(reason);
        }
        tracing::error!(%reason, "write-ahead log failed; refusing further writes");
        state.failed = Some(reason.clone());
        if let Some(on_failure) = self.inner.options.on_failure {
            on_failure(&reason);
        }
        WalError::Failed(reason)
    }

    /// Encodes a record with `encode`, writes it and applies `record` to the index.
    fn write_record(
        &self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), WalError>,
        record: Record<'_>,
    ) -> Result<(), WalError> {
        let mut state = self.state()?;
        self.record_locked(&mut state, encode, record)
    }

    /// [`Wal::write_record`] with the state already locked.
    fn record_locked(
        &self,
        state: &mut State,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), WalError>,
        record: Record<'_>,
    ) -> Result<(), WalError> {
        let mut buf = std::mem::take(&mut state.buf);
        buf.clear();
        let result = encode(&mut buf)
            .and_then(|()| self.write_frame(state, &buf))
            .map(|(segment, offset)| state.index.apply(segment, offset + FRAME_HEADER as u64, &record));
        state.buf = buf;
        result
    }

    /// [`Wal::append`] with the state already locked.
    fn append_locked<E: AsRef<[u8]>>(
        &self,
        state: &mut State,
        group: u64,
        first: u64,
        entries: &[E],
    ) -> Result<(), WalError> {
        let mut buf = std::mem::take(&mut state.buf);
        buf.clear();
        let result = record::encode_append(&mut buf, group, first, entries).and_then(|positions| {
            let (segment, offset) = self.write_frame(state, &buf)?;
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
            Ok(())
        });
        state.buf = buf;
        result
    }

    /// Writes one frame at the end of the active segment (starting a new segment first if
    /// the active one is full); returns the segment and offset it was written at.
    fn write_frame(&self, state: &mut State, frame: &[u8]) -> Result<(u64, u64), WalError> {
        if state.active_len > segment::HEADER
            && state.active_len + frame.len() as u64 > self.inner.options.segment_bytes
        {
            self.rotate(state)?;
        }
        let held = state
            .index
            .segments
            .get(&state.active)
            .ok_or_else(|| WalError::Corrupt("active segment missing".to_string()))?;
        let offset = state.active_len;
        if let Err(err) = held.file.write_all_at(frame, offset) {
            let reason = format!("write failed: {err}");
            if !self.ignored(&reason) {
                return Err(self.fail_locked(state, reason));
            }
        }
        state.active_len += frame.len() as u64;
        self.inner
            .appended_bytes
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        Ok((state.active, offset))
    }

    /// Syncs the active segment and starts the next one.
    fn rotate(&self, state: &mut State) -> Result<(), WalError> {
        let next = state.active + 1;
        let mut synced = state
            .index
            .segments
            .get(&state.active)
            .ok_or_else(|| WalError::Corrupt("active segment missing".to_string()))
            .and_then(|held| held.file.sync_data().map_err(WalError::from));
        if let Err(WalError::Io(err)) = &synced {
            if self.ignored(&format!("syncing segment {} failed: {err}", state.active)) {
                synced = Ok(());
            }
        }
        let created = synced.and_then(|()| segment::create_unsynced(&self.inner.dir, next));
        let file = match created {
            Ok(file) => file,
            Err(err) => return Err(self.fail_locked(state, format!("starting segment {next} failed: {err}"))),
        };
        let durable = file
            .sync_data()
            .map_err(WalError::from)
            .and_then(|()| segment::sync_dir(&self.inner.dir));
        if let Err(err) = durable {
            let reason = format!("starting segment {next} failed: {err}");
            if !self.ignored(&reason) {
                return Err(self.fail_locked(state, reason));
            }
        }
        self.inner.syncs.fetch_add(1, Ordering::Relaxed);
        state.index.segments.insert(
            next,
            Segment {
                file: Arc::new(file),
                refs: 0,
            },
        );
        state.active = next;
        state.active_len = segment::HEADER;
        Ok(())
    }

    /// Rewrites the live entries and values of every group pinning the oldest segment into
    /// the active segment, so the oldest can be deleted.
    fn rewrite_oldest(&self, state: &mut State) -> Result<(), WalError> {
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
        // live log are busy and free the segment themselves at their next purge. Copying
        // them would stall every append (the state is locked) for nothing.
        let live_bytes: u64 = pinning
            .iter()
            .filter_map(|group| state.index.groups.get(group))
            .map(|index| index.live_bytes())
            .sum();
        if live_bytes > self.inner.options.segment_bytes / 2 {
            return Ok(());
        }
        for group in pinning {
            let locs = state.index.locs(group, Bound::Unbounded, Bound::Unbounded);
            let files: Vec<Arc<File>> = locs
                .iter()
                .filter_map(|(_, loc)| {
                    state
                        .index
                        .segments
                        .get(&loc.segment)
                        .map(|held| held.file.clone())
                })
                .collect();
            if files.len() != locs.len() {
                return Err(WalError::Corrupt(format!(
                    "group {group} has an entry in a missing segment"
                )));
            }
            let entries = read_runs(&locs, &files)?;
            // One append per run of consecutive indexes (a log may have a gap).
            let mut run: Vec<Vec<u8>> = Vec::new();
            let mut run_first = 0;
            for (index, bytes) in entries {
                if !run.is_empty() && index != run_first + run.len() as u64 {
                    self.append_locked(state, group, run_first, &std::mem::take(&mut run))?;
                }
                if run.is_empty() {
                    run_first = index;
                }
                run.push(bytes);
            }
            if !run.is_empty() {
                self.append_locked(state, group, run_first, &run)?;
            }
            let meta: Vec<(u8, Vec<u8>)> = state
                .index
                .groups
                .get(&group)
                .map(|index| {
                    index
                        .meta
                        .iter()
                        .map(|(key, (value, _))| (*key, value.clone()))
                        .collect()
                })
                .unwrap_or_default();
            for (key, value) in meta {
                let record = Record::Meta {
                    group,
                    key,
                    value: &value,
                };
                self.record_locked(state, |buf| record::encode_meta(buf, group, key, &value), record)?;
            }
            self.inner.rewritten_groups.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Reads the entries at `locs` (with the file of each), one read per run of entries that
/// lie next to each other in the same segment.
fn read_runs(locs: &[(u64, Loc)], files: &[Arc<File>]) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
    let mut out = Vec::with_capacity(locs.len());
    let mut i = 0;
    while i < locs.len() {
        let start = locs[i].1;
        let mut end = i + 1;
        let mut run_end = start.offset + start.len as u64;
        // Entries of one append lie 4 bytes apart (each is preceded by its length).
        while end < locs.len() && locs[end].1.segment == start.segment && locs[end].1.offset == run_end + 4 {
            run_end = locs[end].1.offset + locs[end].1.len as u64;
            end += 1;
        }
        let bytes = segment::read_at(&files[i], start.offset, (run_end - start.offset) as usize)?;
        for (index, loc) in &locs[i..end] {
            let from = (loc.offset - start.offset) as usize;
            out.push((*index, bytes[from..from + loc.len as usize].to_vec()));
        }
        i = end;
    }
    Ok(out)
}
