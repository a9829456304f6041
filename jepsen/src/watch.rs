//! The watch workload: writers put and delete a few keys while watchers follow their prefix
//! through the routers, checked by [`crate::checker::watch`] (every acknowledged write
//! delivered exactly once, per key in commit order, nothing nobody wrote).
//!
//! Writers put values unique in the run to [`KEYS`] keys `jepsen/watch/<k>` (one op in
//! four deletes instead). Watchers watch the prefix as a user of `ringkv_client` would:
//! [`Client::watch_from`] a [`WatchPosition`], and after every end of the stream (a break
//! the client's retry budget did not cover, a reader cut for falling behind, "compacted")
//! again from [`WatchStream::position`](ringkv_client::WatchStream::position). Each stream
//! is one `watch` op: the progress it resumed from, the progress it ended at and the
//! events it delivered, so the checker sees exactly what each stream covered.
//!
//! Watchers also end their stream themselves every [`RECONNECT_EVERY`] and resume, so
//! resuming from a position is exercised in quiet times too. The negative control
//! `--unsafe-watch-resume-from-now` resumes every watch from now instead, as a client that
//! forgot its position would, while recording the position it claims to resume from: the
//! changes committed while it was away are lost, and the checker must say so.
//!
//! Every watcher starts from one timestamp of the oracle taken before any writer starts
//! ([`WatchShared::start_ts`]), so every write is after it. "Compacted" (OUT_OF_RANGE: a
//! shard's in-memory history no longer reaches back to the progress, after a node restart
//! or beyond `--mvcc-window-ms`) is the documented answer when changes are gone: the
//! watcher then moves the shards it concerns up to the floor the error names (a fresh
//! timestamp of the oracle when it names none) and goes on; the checker sees the gap from
//! the recorded progress and counts it. When the writers are done
//! ([`WatchShared::finish`]), each watcher takes one more timestamp of the oracle (a
//! `timestamp` op) and watches until every shard's progress passed it: then it has seen
//! every acknowledged write, unless a gap says otherwise. A shard's progress moves only
//! with what it applies, so the watcher also puts a fence key on every shard (the liveness
//! probe's keys, outside the prefix, not recorded) once it has the timestamp, and again
//! every second (`FENCE_EVERY`) until it caught up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{Client, Error, WatchEvent, WatchEventKind, WatchOptions, WatchPosition, WatchTarget};
use tokio_util::sync::CancellationToken;

use crate::history::{Op, OpType, OpValue, Process, Recorder, WatchedEvent, F};
use crate::workload::{complete_err, completion_for, encode_value, parse_value};

/// Keys the writers write.
pub const KEYS: u64 = 6;

/// The prefix every watch key starts with.
pub const PREFIX: &str = "jepsen/watch/";

/// Share of the workload's client processes that watch (at least one; the rest write).
const WATCHERS_PER_WRITER: f64 = 0.4;

/// Pause before a watcher opens its next stream after one ended with an error (bounded
/// pacing: the client library already waited out its own retry budget).
const REOPEN_PAUSE: Duration = Duration::from_millis(100);

/// How long a watcher keeps one stream before it ends it and resumes from its position.
pub const RECONNECT_EVERY: Duration = Duration::from_secs(3);

/// How often a catching-up watcher puts its fence keys again while a shard's progress has
/// not passed its final timestamp.
const FENCE_EVERY: Duration = Duration::from_secs(1);

/// How often a catching-up watcher looks whether its progress passed the final timestamp.
const CATCH_UP_POLL: Duration = Duration::from_millis(50);

/// Key `key` of the workload.
pub fn watch_key(key: u64) -> Vec<u8> {
    format!("{PREFIX}{key}").into_bytes()
}

/// Shared state of the watch workload.
pub struct WatchShared {
    /// The oracle timestamp every watcher starts after, taken before any writer started.
    pub start_ts: u64,
    /// Shards of the cluster (0..shards): each watcher's first position names them all.
    shards: u32,
    /// One key outside the prefix on each shard: written after the final timestamp, so
    /// every shard's progress passes it.
    fence_keys: Vec<Vec<u8>>,
    next_value: AtomicU64,
    /// Cancelled once every writer stopped and the cluster was healed: watchers then catch
    /// up and stop.
    finished: CancellationToken,
    /// Negative control: resume every watch from now, not from the watcher's position.
    unsafe_resume_from_now: bool,
}

impl WatchShared {
    /// Takes the start timestamp before any writer starts, recorded as a `timestamp` op of
    /// `process` (every write commits above it: the checker's lower bound for writes no
    /// watcher delivered); `fence_keys` are one key on each shard, outside the prefix.
    pub async fn set_up(
        process: u64,
        client: &Client,
        recorder: &Recorder,
        shards: u32,
        fence_keys: Vec<Vec<u8>>,
        timeout: Duration,
        unsafe_resume_from_now: bool,
    ) -> anyhow::Result<Arc<WatchShared>> {
        let start_ts = ringkv_launcher::wait_for(
            "a timestamp of the oracle to start watches at",
            timeout,
            || async {
                let op = recorder.invoke(Process::Client(process), F::Timestamp, OpValue::Timestamp(None));
                match client.timestamp().await {
                    Ok(ts) => {
                        let _ = recorder.complete(&op, OpType::Ok, OpValue::Timestamp(Some(ts)), None);
                        Some(ts)
                    }
                    Err(err) => {
                        complete_err(recorder, &op, completion_for(&err), err.to_string());
                        None
                    }
                }
            },
        )
        .await?;
        Ok(Arc::new(WatchShared {
            start_ts,
            shards: shards.max(1),
            fence_keys,
            next_value: AtomicU64::new(1),
            finished: CancellationToken::new(),
            unsafe_resume_from_now,
        }))
    }

    /// Whether client process number `index` of the workload (of `concurrency`) watches.
    pub fn is_watcher(index: usize, concurrency: usize) -> bool {
        let watchers = ((concurrency as f64 * WATCHERS_PER_WRITER).round() as usize).max(1);
        index < watchers
    }

    /// The writers are done and the cluster healed: watchers catch up and stop.
    pub fn finish(&self) {
        self.finished.cancel();
    }
}

/// One writer process: puts (three in four) and deletes of random keys.
pub async fn writer(
    process: u64,
    client: Client,
    shared: Arc<WatchShared>,
    recorder: Recorder,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.is_cancelled() {
        let key = rng.random_range(0..KEYS);
        if rng.random_bool(0.75) {
            let value = shared.next_value.fetch_add(1, Ordering::Relaxed);
            let write = |result| OpValue::KeyWrite {
                key,
                value: Some(value),
                result,
            };
            let op = recorder.invoke(Process::Client(process), F::WatchPut, write(None));
            match client.put(watch_key(key), encode_value(value, 0)).await {
                Ok(version) => {
                    let _ = recorder.complete(&op, OpType::Ok, write(Some(version)), None);
                }
                Err(err) => complete_err(&recorder, &op, completion_for(&err), err.to_string()),
            }
        } else {
            let delete = |result| OpValue::KeyWrite {
                key,
                value: None,
                result,
            };
            let op = recorder.invoke(Process::Client(process), F::WatchDelete, delete(None));
            match client.delete(watch_key(key)).await {
                Ok(existed) => {
                    let _ = recorder.complete(&op, OpType::Ok, delete(Some(u64::from(existed))), None);
                }
                Err(err) => complete_err(&recorder, &op, completion_for(&err), err.to_string()),
            }
        }
    }
}

/// How one watch stream ended.
enum StreamEnd {
    /// The writers are done: the watcher takes its final timestamp and watches on.
    Finished,
    /// The watcher ended the stream itself, to resume it ([`RECONNECT_EVERY`]).
    Reconnect,
    /// Every shard's progress passed the final timestamp.
    CaughtUp,
    /// The stream ended with this error (or, `None`, without one).
    Ended(Option<Error>),
    /// The catch-up took longer than its bound.
    GaveUp,
}

/// One watcher process: watches the prefix from the workload's start timestamp, stream
/// after stream, until it caught up with the final timestamp (or `catch_up_timeout` after
/// the writers finished).
pub async fn watcher(
    process: u64,
    client: Client,
    shared: Arc<WatchShared>,
    recorder: Recorder,
    catch_up_timeout: Duration,
) {
    let options = WatchOptions::new(WatchTarget::Prefix(PREFIX.as_bytes().to_vec())).after(shared.start_ts);
    let start: Vec<ringkv_client::proto::ShardProgress> = (0..shared.shards)
        .map(|shard_id| ringkv_client::proto::ShardProgress {
            shard_id,
            ts: shared.start_ts,
        })
        .collect();
    let mut position = WatchPosition::from_progress(&start);
    let mut target: Option<u64> = None;
    let mut give_up_at: Option<Instant> = None;
    loop {
        if target.is_none() && shared.finished.is_cancelled() {
            let deadline = Instant::now() + catch_up_timeout;
            give_up_at = Some(deadline);
            match final_timestamp(process, &client, &recorder, deadline).await {
                Some(ts) => target = Some(ts),
                None => return,
            }
        }
        let mut fenced_at: Option<Instant> = None;
        let from = progress_of(&position, shared.shards);
        let op = recorder.invoke(
            Process::Client(process),
            F::Watch,
            OpValue::Watch {
                from: from.clone(),
                to: None,
                events: None,
            },
        );
        let resumes_from_now =
            shared.unsafe_resume_from_now && from.iter().any(|(_, ts)| *ts > shared.start_ts);
        let mut stream = if resumes_from_now {
            // The negative control: from now, whatever the position (recorded as `from`) says.
            client.watch(WatchOptions::new(options.target.clone()))
        } else {
            client.watch_from(options.clone(), position.clone())
        };
        let reconnect_at = tokio::time::Instant::now() + RECONNECT_EVERY;
        let mut events = Vec::new();
        let mut poll = tokio::time::interval(CATCH_UP_POLL);
        let end = loop {
            tokio::select! {
                () = shared.finished.cancelled(), if target.is_none() => break StreamEnd::Finished,
                () = tokio::time::sleep_until(reconnect_at), if target.is_none() => break StreamEnd::Reconnect,
                _ = poll.tick(), if target.is_some() => {
                    let position = stream.position();
                    if target.is_some_and(|target| caught_up(&position, shared.shards, target)) {
                        break StreamEnd::CaughtUp;
                    }
                    if give_up_at.is_some_and(|deadline| Instant::now() >= deadline) {
                        break StreamEnd::GaveUp;
                    }
                    if fenced_at.is_none_or(|at| at.elapsed() >= FENCE_EVERY) {
                        fenced_at = Some(Instant::now());
                        put_fences(&client, &shared.fence_keys).await;
                    }
                }
                item = stream.next() => match item {
                    Some(Ok(event)) => events.push(watched(&event)),
                    Some(Err(err)) => break StreamEnd::Ended(Some(err)),
                    None => break StreamEnd::Ended(None),
                },
            }
        };
        position = stream.position();
        drop(stream);
        record_stream(
            &recorder,
            &op,
            from,
            progress_of(&position, shared.shards),
            events,
            &end,
        );
        match end {
            StreamEnd::CaughtUp | StreamEnd::GaveUp => return,
            StreamEnd::Finished | StreamEnd::Reconnect => {}
            StreamEnd::Ended(error) => {
                // OUT_OF_RANGE naming "compacted".
                if let Some(Error::OutOfRange(message)) = &error {
                    if crate::checker::watch::is_compacted(message) {
                        skip_compacted(&client, &mut position, message).await;
                    }
                }
                if give_up_at.is_some_and(|deadline| Instant::now() >= deadline) {
                    return;
                }
                tokio::time::sleep(REOPEN_PAUSE).await;
            }
        }
    }
}

/// Puts every fence key once (failures are left to the next round).
async fn put_fences(client: &Client, keys: &[Vec<u8>]) {
    for key in keys {
        let _ = client.put(key, b"fence".to_vec()).await;
    }
}

/// Records the end of one watch stream: `ok` with what it delivered (also when it ended
/// with an error: the events were delivered all the same; the error says how it ended).
fn record_stream(
    recorder: &Recorder,
    op: &Op,
    from: Vec<(u32, u64)>,
    to: Vec<(u32, u64)>,
    events: Vec<WatchedEvent>,
    end: &StreamEnd,
) {
    let error = match end {
        StreamEnd::Finished | StreamEnd::CaughtUp | StreamEnd::Reconnect => None,
        StreamEnd::GaveUp => Some("gave up catching up with the final timestamp".to_string()),
        StreamEnd::Ended(Some(error)) => Some(error.to_string()),
        StreamEnd::Ended(None) => Some("the watch stream ended".to_string()),
    };
    let value = OpValue::Watch {
        from,
        to: Some(to),
        events: Some(events),
    };
    let _ = recorder.complete(op, OpType::Ok, value, error);
}

/// The final timestamp, as a `timestamp` op of the watcher: every write completed before it
/// was invoked committed below it. `None` when none came before `deadline`.
async fn final_timestamp(
    process: u64,
    client: &Client,
    recorder: &Recorder,
    deadline: Instant,
) -> Option<u64> {
    while Instant::now() < deadline {
        let op = recorder.invoke(Process::Client(process), F::Timestamp, OpValue::Timestamp(None));
        match client.timestamp().await {
            Ok(ts) => {
                let _ = recorder.complete(&op, OpType::Ok, OpValue::Timestamp(Some(ts)), None);
                return Some(ts);
            }
            Err(err) => complete_err(recorder, &op, completion_for(&err), err.to_string()),
        }
        tokio::time::sleep(REOPEN_PAUSE).await;
    }
    None
}

/// After "compacted": the shards whose progress is at or below the timestamp the refused
/// watch started from move up to the floor the error names (the oldest timestamp that
/// shard can resume from), or to a fresh timestamp of the oracle when the message names
/// none. What lies in between is lost to this watcher; the checker sees the gap.
async fn skip_compacted(client: &Client, position: &mut WatchPosition, message: &str) {
    let (after_ts, floor) = match parse_compacted(message) {
        Some(parsed) => parsed,
        None => match client.timestamp().await {
            Ok(now) => (u64::MAX, now),
            Err(_) => return,
        },
    };
    let shards: Vec<(u32, u64)> = position
        .resume()
        .iter()
        .map(|progress| (progress.shard_id, progress.ts))
        .collect();
    for (shard_id, progress) in shards {
        if progress <= after_ts {
            position.advance(shard_id, floor);
        }
    }
}

/// `(after_ts, floor)` of a compacted error: "watch from timestamp A: the shard's history
/// before F is gone ...".
pub fn parse_compacted(message: &str) -> Option<(u64, u64)> {
    let number_after = |marker: &str| -> Option<u64> {
        let rest = &message[message.find(marker)? + marker.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some((
        number_after("watch from timestamp ")?,
        number_after("history before ")?,
    ))
}

/// Whether every shard's progress reached `target`.
fn caught_up(position: &WatchPosition, shards: u32, target: u64) -> bool {
    (0..shards).all(|shard| position.progress(shard) >= target)
}

/// The progress of shards `0..shards` (and any other the position knows).
fn progress_of(position: &WatchPosition, shards: u32) -> Vec<(u32, u64)> {
    let mut progress: BTreeMap<u32, u64> = (0..shards)
        .map(|shard| (shard, position.progress(shard)))
        .collect();
    for shard in position.resume() {
        progress.insert(shard.shard_id, shard.ts);
    }
    progress.into_iter().collect()
}

/// An event as the history records it; a key outside the workload's is `u64::MAX`.
fn watched(event: &WatchEvent) -> WatchedEvent {
    let key = event
        .key
        .strip_prefix(PREFIX.as_bytes())
        .and_then(|suffix| std::str::from_utf8(suffix).ok())
        .and_then(|suffix| suffix.parse().ok())
        .unwrap_or(u64::MAX);
    WatchedEvent {
        key,
        value: (event.kind == WatchEventKind::Put).then(|| parse_value(&event.value)),
        version: event.version,
        commit_ts: event.commit_ts,
        shard: event.shard_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compacted message the nodes send names where the refused watch started and the
    /// floor to resume from.
    #[test]
    fn compacted_messages_parse() {
        let message = "watch from timestamp 1234: the shard's history before 5678 is gone (compacted: \
                       versions are kept for --mvcc-window-ms, and not across a restart); resume from 5678 \
                       or later (changes in between are lost)";
        assert_eq!(parse_compacted(message), Some((1234, 5678)));
        assert_eq!(parse_compacted("snapshot too old"), None);
    }

    /// Two of five processes watch; one of one.
    #[test]
    fn watchers_and_writers_split() {
        let watchers = |concurrency| {
            (0..concurrency)
                .filter(|index| WatchShared::is_watcher(*index, concurrency))
                .count()
        };
        assert_eq!(watchers(5), 2);
        assert_eq!(watchers(1), 1);
        assert_eq!(watchers(3), 1);
    }
}
