//! The log's writer thread: the only place that writes or syncs segments while the log is
//! open.
//!
//! Callers queue encoded records under the state lock (which updates the index, so their
//! entries are readable at once, from the queue) and return. The writer takes everything
//! queued — the records of every group — writes each segment's share with one `write`,
//! runs one `fdatasync` when anyone waits for durability, then calls the waiters back: group
//! commit of writes and syncs together. No lock is held across IO, so an append, a read or
//! a [`crate::Wal::meta`] never waits behind a slow disk (under FUSE a `write` waits for a
//! running fsync of the same file: that wait is the writer's alone); only a full queue
//! ([`crate::WalOptions::max_queued_bytes`]) makes a caller wait.
//!
//! A failed write or sync marks the log failed ([`crate::WalOptions::on_failure`] first),
//! fails every waiter and every later one, and writes nothing more; what is queued stays
//! readable. A panic on the thread is such a failure too (reported to `on_failure`, every
//! waiter failed), and the thread exits: nobody would call a waiter back or free queue room
//! again, so without it `sync`, `close` and every `LogFlushed` would wait forever. The
//! thread exits when the log closes, after writing what was queued.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use crate::index::Loc;
use crate::{segment, Done, Inner, Position, State, WalError};

/// Most bytes the writer takes from the queue for one batch (at least one record).
const MAX_BATCH_BYTES: usize = 8 << 20;

/// One queued step of the stream, in order.
pub(crate) enum Op {
    /// A frame to write at `offset` of `segment`.
    Frame {
        segment: u64,
        offset: u64,
        bytes: Arc<[u8]>,
    },
    /// Sync the segment written so far, then create `segment` (header, file and directory
    /// synced) and write to it from now on.
    Start { segment: u64 },
}

impl Op {
    /// The stream position right after this step.
    fn end(&self) -> Position {
        match self {
            Op::Frame {
                segment,
                offset,
                bytes,
            } => (*segment, offset + bytes.len() as u64),
            Op::Start { segment } => (*segment, segment::HEADER),
        }
    }

    /// The stream position where this step starts.
    fn start(&self) -> Position {
        match self {
            Op::Frame { segment, offset, .. } => (*segment, *offset),
            Op::Start { segment } => (*segment, 0),
        }
    }

    fn queued_bytes(&self) -> usize {
        match self {
            Op::Frame { bytes, .. } => bytes.len(),
            Op::Start { .. } => 0,
        }
    }
}

/// A caller waiting until `target` is written (and durable, if `durable`).
pub(crate) struct Waiter {
    pub target: Position,
    pub durable: bool,
    pub done: Done,
}

/// What the writer takes from the queue at once.
struct Batch {
    /// Copies of the queued steps (they stay queued, for reads, until written).
    ops: Vec<Op>,
    /// The stream position after them.
    end: Position,
    /// The waiters they satisfy.
    waiters: Vec<Waiter>,
}

/// Segments the writer started, with their files (to publish in the index).
type Started = Vec<(u64, Arc<File>)>;

/// The bytes of the entry at `loc` if it is still queued.
pub(crate) fn queued_bytes(queue: &std::collections::VecDeque<Op>, loc: &Loc) -> Option<Vec<u8>> {
    let at = (loc.segment, loc.offset);
    let after = queue.partition_point(|op| op.start() <= at);
    let Op::Frame {
        segment,
        offset,
        bytes,
    } = queue.get(after.checked_sub(1)?)?
    else {
        return None;
    };
    if *segment != loc.segment {
        return None;
    }
    let from = usize::try_from(loc.offset - offset).ok()?;
    bytes.get(from..from + loc.len as usize).map(<[u8]>::to_vec)
}

/// The segment the writer writes to.
struct Current {
    segment: u64,
    file: Arc<File>,
    /// The file's length: what the writer preallocated (or what was there at open).
    allocated: u64,
    /// Where the frames written to it end.
    end: u64,
}

/// The writer thread's loop: take a batch, write it, sync if anyone waits for durability,
/// publish, call back. `active`/`file`/`end`/`allocated` are the segment being written when
/// the log opened, where its frames end and its file's length. A panic stops the log
/// ([`stop_after_panic`]).
pub(crate) fn run(inner: &Inner, active: u64, file: Arc<File>, end: u64, allocated: u64) {
    let mut current = Current {
        segment: active,
        file,
        allocated,
        end,
    };
    let mut buf = Vec::new();
    loop {
        // The batch's waiters live out here, so a panic cannot drop them unanswered.
        let mut waiters = Vec::new();
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            step(inner, &mut current, &mut buf, &mut waiters)
        }));
        let failure = match stepped {
            Ok(Step::Wrote(outcome)) => outcome.err(),
            Ok(Step::Exit) => return,
            Err(panic) => {
                stop_after_panic(inner, panic.as_ref(), waiters);
                return;
            }
        };
        for waiter in waiters {
            let result = match &failure {
                None => Ok(()),
                Some(reason) => Err(WalError::Failed(reason.clone())),
            };
            call(waiter.done, result);
        }
    }
}

/// What one step of the writer did.
enum Step {
    /// The log closed and everything queued is written: the thread exits.
    Exit,
    /// A batch was written (and synced, if a waiter needed that), or failed for this reason.
    Wrote(Result<(), String>),
}

/// One batch: takes it (its waiters into `waiters`), writes it, syncs it if a waiter needs
/// that, and publishes the outcome.
fn step(inner: &Inner, current: &mut Current, buf: &mut Vec<u8>, waiters: &mut Vec<Waiter>) -> Step {
    let Some(Batch {
        ops: batch,
        end,
        waiters: ready,
    }) = next_batch(inner)
    else {
        return Step::Exit;
    };
    *waiters = ready;
    let (outcome, started) = write_batch(inner, current, &batch, buf);
    #[cfg(test)]
    if inner.panic_next.swap(false, Ordering::SeqCst) {
        panic!("injected panic on the writer thread");
    }
    let wants_sync = waiters.iter().any(|waiter| waiter.durable);
    let outcome = outcome.and_then(|()| {
        if wants_sync {
            sync(inner, &current.file)
        } else {
            Ok(())
        }
    });
    let mut state = inner.lock_state();
    for (segment, file) in started {
        if let Some(held) = state.index.segments.get_mut(&segment) {
            held.file = Some(file);
        }
    }
    match outcome {
        Ok(()) => {
            let freed: usize = batch.iter().map(Op::queued_bytes).sum();
            for _ in 0..batch.len() {
                state.queue.pop_front();
            }
            state.queued_bytes -= freed;
            state.written = end;
            if wants_sync {
                state.synced = end;
            }
            inner.wake_room_waiters_locked(&state);
            Step::Wrote(Ok(()))
        }
        Err(reason) => {
            inner.fail_locked(&mut state, reason.clone());
            Step::Wrote(Err(reason))
        }
    }
}

/// After a panic on the writer thread: marks the log failed as a failed write does
/// ([`crate::WalOptions::on_failure`] first), fails `waiters` (the batch's) and every queued
/// waiter, and marks the writer stopped; the thread then exits. Later writes and waits are
/// refused at once (the log is failed).
fn stop_after_panic(inner: &Inner, panic: &(dyn std::any::Any + Send), mut waiters: Vec<Waiter>) {
    let message = panic
        .downcast_ref::<&str>()
        .map(|message| (*message).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string());
    let reason = {
        let mut state = inner.lock_state();
        inner.fail_locked(&mut state, format!("the writer thread panicked: {message}"));
        waiters.append(&mut state.waiters);
        state.stopped = true;
        state.failed.clone().unwrap_or(message)
    };
    for waiter in waiters {
        call(waiter.done, Err(WalError::Failed(reason.clone())));
    }
}

/// Sleeps on [`Inner::work`] until a caller wakes the writer, marked asleep meanwhile (only
/// a sleeping writer is signalled: `Inner::wake_writer`).
fn sleep<'a>(inner: &'a Inner, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
    state.writer_asleep = true;
    let mut state = inner
        .work
        .wait(state)
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    state.writer_asleep = false;
    state
}

/// Waits for work and takes the next batch: up to [`MAX_BATCH_BYTES`] of queued steps and the
/// waiters they satisfy. `None` when the writer must exit.
fn next_batch(inner: &Inner) -> Option<Batch> {
    let mut state = inner.lock_state();
    loop {
        if let Some(reason) = state.failed.clone() {
            // Nothing more is written: fail whoever waits; exit once closing.
            let waiters = std::mem::take(&mut state.waiters);
            if waiters.is_empty() {
                if state.closing {
                    state.stopped = true;
                    return None;
                }
                state = sleep(inner, state);
                continue;
            }
            drop(state);
            for waiter in waiters {
                call(waiter.done, Err(WalError::Failed(reason.clone())));
            }
            state = inner.lock_state();
            continue;
        }
        if !state.queue.is_empty() || !state.waiters.is_empty() {
            break;
        }
        if state.closing {
            state.stopped = true;
            return None;
        }
        state = sleep(inner, state);
    }
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    for op in &state.queue {
        if !batch.is_empty() && bytes + op.queued_bytes() > MAX_BATCH_BYTES {
            break;
        }
        bytes += op.queued_bytes();
        batch.push(match op {
            Op::Frame {
                segment,
                offset,
                bytes,
            } => Op::Frame {
                segment: *segment,
                offset: *offset,
                bytes: bytes.clone(),
            },
            Op::Start { segment } => Op::Start { segment: *segment },
        });
    }
    let end = batch.last().map_or(state.written, Op::end);
    let (ready, later): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut state.waiters)
        .into_iter()
        .partition(|waiter| waiter.target <= end);
    state.waiters = later;
    Some(Batch {
        ops: batch,
        end,
        waiters: ready,
    })
}

/// Writes `batch` in order: each run of frames of one segment with one `write`, each
/// segment start as its own steps. Returns the outcome (a failure's reason) and the
/// segments started, with their files.
fn write_batch(
    inner: &Inner,
    current: &mut Current,
    batch: &[Op],
    buf: &mut Vec<u8>,
) -> (Result<(), String>, Started) {
    let mut started = Vec::new();
    let mut run_offset = 0u64;
    buf.clear();
    for op in batch {
        match op {
            Op::Frame { offset, bytes, .. } => {
                if buf.is_empty() {
                    run_offset = *offset;
                }
                buf.extend_from_slice(bytes);
            }
            Op::Start { segment } => {
                if let Err(reason) = write_run(inner, current, buf, run_offset) {
                    return (Err(reason), started);
                }
                match start_segment(inner, current, *segment) {
                    Ok(file) => {
                        *current = Current {
                            segment: *segment,
                            file: file.clone(),
                            allocated: segment::HEADER,
                            end: segment::HEADER,
                        };
                        started.push((*segment, file));
                    }
                    Err(reason) => return (Err(reason), started),
                }
            }
        }
    }
    (write_run(inner, current, buf, run_offset), started)
}

/// Writes the frames gathered in `buf` at `offset` of the current segment with one `write`
/// (preallocating first where they would pass its end), and empties `buf`.
fn write_run(inner: &Inner, current: &mut Current, buf: &mut Vec<u8>, offset: u64) -> Result<(), String> {
    if buf.is_empty() {
        return Ok(());
    }
    preallocate(inner, current, offset + buf.len() as u64);
    let written = current.file.write_all_at(buf, offset);
    current.end = current.end.max(offset + buf.len() as u64);
    inner.writes.fetch_add(1, Ordering::Relaxed);
    if written.is_ok() {
        inner.written_bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
    }
    buf.clear();
    match written {
        Err(err) => {
            let reason = format!("write failed: {err}");
            if inner.ignored(&reason) {
                Ok(())
            } else {
                Err(reason)
            }
        }
        Ok(()) => Ok(()),
    }
}

/// Makes the current segment at least `end` bytes long with preallocated space, and
/// [`crate::WalOptions::preallocate_bytes`] beyond where it was when it falls short (not past
/// the segment size, unless `end` is). A failure only costs the speed: the write that follows
/// grows the file as it would have anyway (and reports a full or failed disk itself); a file
/// system without `fallocate` is not asked again.
fn preallocate(inner: &Inner, current: &mut Current, end: u64) {
    let ahead = inner.options.preallocate_bytes;
    if end <= current.allocated || ahead == 0 || inner.no_fallocate.load(Ordering::Relaxed) {
        return;
    }
    let to = current
        .allocated
        .saturating_add(ahead)
        .min(inner.options.segment_bytes)
        .max(end);
    match segment::preallocate(&current.file, current.allocated, to) {
        Ok(()) => {
            current.allocated = to;
            inner.preallocations.fetch_add(1, Ordering::Relaxed);
        }
        Err(err) => {
            let unsupported = matches!(
                err.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
            );
            if unsupported {
                inner.no_fallocate.store(true, Ordering::Relaxed);
                tracing::info!(%err, "no fallocate here: the log's segments grow with each write");
            } else {
                tracing::debug!(segment = current.segment, %err, "preallocating the log failed");
            }
        }
    }
}

/// One `fdatasync` of the segment being written, counted by its latency.
fn sync(inner: &Inner, file: &File) -> Result<(), String> {
    let started = std::time::Instant::now();
    let synced = file.sync_data();
    inner.count_sync(started.elapsed());
    if let Err(err) = synced {
        let reason = format!("fdatasync failed: {err}");
        if !inner.ignored(&reason) {
            return Err(reason);
        }
    }
    inner.syncs.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Cuts the segment written so far to the end of its frames (its preallocated room) and syncs
/// it (only the last segment may end in a torn write or in zeros), then creates segment
/// `next`, its header and directory entry durable.
fn start_segment(inner: &Inner, current: &Current, next: u64) -> Result<Arc<File>, String> {
    let previous = current.segment;
    if current.allocated > current.end {
        if let Err(err) = current.file.set_len(current.end) {
            let reason = format!("cutting segment {previous} to its frames failed: {err}");
            if !inner.ignored(&reason) {
                return Err(format!("starting segment {next} failed: {reason}"));
            }
        }
    }
    if let Err(err) = current.file.sync_data() {
        let reason = format!("syncing segment {previous} failed: {err}");
        if !inner.ignored(&reason) {
            return Err(format!("starting segment {next} failed: {reason}"));
        }
    }
    let file = segment::create_unsynced(&inner.dir, next)
        .map_err(|err| format!("starting segment {next} failed: {err}"))?;
    let durable = file
        .sync_data()
        .map_err(WalError::from)
        .and_then(|()| segment::sync_dir(&inner.dir));
    if let Err(err) = durable {
        let reason = format!("starting segment {next} failed: {err}");
        if !inner.ignored(&reason) {
            return Err(reason);
        }
    }
    inner.syncs.fetch_add(1, Ordering::Relaxed);
    Ok(Arc::new(file))
}

/// Calls a waiter back; a panicking callback is logged and does not stop the writer.
fn call(done: Done, result: Result<(), WalError>) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| done(result))).is_err() {
        tracing::error!("a write-ahead log waiter's callback panicked");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    use crate::{Wal, WalError, WalOptions};

    static PANICS_REPORTED: AtomicUsize = AtomicUsize::new(0);

    fn count_panic(reason: &str) {
        assert!(reason.contains("panicked"), "{reason}");
        PANICS_REPORTED.fetch_add(1, Ordering::SeqCst);
    }

    /// Runs `call` on another thread and waits up to 10 s for its answer (`None` if it hangs).
    fn answered<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(call());
        });
        rx.recv_timeout(Duration::from_secs(10)).ok()
    }

    /// A panic on the writer thread stops the log as a failed write does: `on_failure` hears
    /// of it first, the waiter of the batch and every later sync fail instead of waiting
    /// forever, writes are refused, and `close` returns.
    #[test]
    fn a_panic_on_the_writer_thread_stops_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = WalOptions {
            on_failure: Some(count_panic),
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(dir.path(), options).expect("open");
        wal.append(1, 1, &[b"one".to_vec()]).expect("append");
        wal.sync().expect("sync");

        wal.inner.panic_next.store(true, Ordering::SeqCst);
        wal.append(1, 2, &[b"two".to_vec()]).expect("queued");
        let (tx, rx) = mpsc::channel();
        wal.on_durable(Box::new(move |result| {
            let _ = tx.send((result, PANICS_REPORTED.load(Ordering::SeqCst)));
        }));
        let (waited, reported) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the waiter of the batch is answered");
        assert!(matches!(waited, Err(WalError::Failed(_))), "{waited:?}");
        assert_eq!(reported, 1, "on_failure ran before the waiter was failed");

        let synced = answered({
            let wal = wal.clone();
            move || wal.sync()
        })
        .expect("a later sync is answered");
        assert!(matches!(synced, Err(WalError::Failed(_))), "{synced:?}");
        let refused = wal.append(1, 3, &[b"three".to_vec()]);
        assert!(matches!(refused, Err(WalError::Failed(_))), "{refused:?}");
        assert_eq!(wal.meta(1, b'v'), None, "reads go on");
        let closed = answered({
            let wal = wal.clone();
            move || wal.close()
        })
        .expect("close returns");
        assert!(matches!(closed, Err(WalError::Failed(_))), "{closed:?}");
        assert_eq!(PANICS_REPORTED.load(Ordering::SeqCst), 1, "reported once");
    }
}
