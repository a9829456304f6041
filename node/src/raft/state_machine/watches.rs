//! Watches of a shard's changes (issue 16): every put and delete of a key range committed
//! after a timestamp, per key in commit order.
//!
//! A watch is a catch-up read of the state and the history in memory (`mvcc.rs`), then the
//! changes of every entry applied after it, which the apply path hands to the watch's
//! bounded queue ([`WatchHub::publish`], under the apply lock written). Nothing is lost or
//! repeated at the switch: the watch subscribes under the apply lock, so every entry
//! applied later reaches its queue; each catch-up page is read in one hold of the lock and
//! records the log index it saw; a queued change of a key is delivered only if its entry
//! applied after the page that covered the key.
//!
//! Bounds: at most [`MAX_WATCHERS_PER_SHARD`] watches per replica; a watch's queue holds at
//! most [`WATCH_QUEUE_BYTES`] of changes, and a watch whose reader falls further behind is
//! ended ([`WatchEnd::Overflowed`], its queue freed), never left to grow. A snapshot
//! install replaces the state and forgets the history under the watches: they end
//! ([`WatchEnd::Reset`]), to be resumed from their progress.
//!
//! A watch from a timestamp at or above the highest the shard applied (the router's watch
//! from now opens at a fresh oracle timestamp) skips the catch-up read: nothing applied
//! committed after it.
//!
//! Progress: a watch that delivered what was queued up to applied entry `A` has sent every
//! change committed at or below the shard's resolved timestamp at `A`: its highest applied
//! commit timestamp, lowered below the start of the oldest transaction holding a lock (a
//! transaction commits at its own timestamp, which may be below what the shard applied;
//! its commit timestamp is above its start).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::Notify;

use super::apply::EntryVersions;
use super::layout::lock_bounds;
use super::mvcc::Head;
use super::watch_catch_up::{CatchUpRead, Change, ChangeKind};
use super::{join_error, GroupState};
use crate::raft::decode;
use crate::raft::txn::Lock;
use crate::raft::types::LogId;
use crate::storage::{StorageError, TreeRef};

/// Most watches one shard replica serves at once.
pub const MAX_WATCHERS_PER_SHARD: usize = 1024;
/// Most bytes of changes a watch's queue holds for its reader.
pub const WATCH_QUEUE_BYTES: usize = 4 << 20;
/// Keys (with their versions) one catch-up page looks at in one hold of the apply lock.
const CATCH_UP_KEYS_PER_HOLD: usize = 1024;
/// Most locks read to find the oldest transaction: beyond, progress waits.
const MAX_LOCKS_SCANNED: usize = 10_000;

/// The keys a watch follows: `[start, end)` (`None` end: no upper bound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl WatchRange {
    fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }
}

/// Why a watch ended on the node's side.
#[derive(Debug, thiserror::Error)]
pub enum WatchEnd {
    #[error(
        "the watch fell behind: its reader left more than {limit_bytes} bytes of changes \
         unread (the node's watch buffer, WATCH_QUEUE_BYTES); watch again from the last progress"
    )]
    Overflowed { limit_bytes: usize },
    #[error("the replica's state was replaced by a snapshot; watch again from the last progress")]
    Reset,
    #[error("this shard replica serves {max} watches already (MAX_WATCHERS_PER_SHARD)")]
    TooMany { max: usize },
    /// The history does not reach back to `after_ts` (the service says so to the client:
    /// `NodeError::WatchCompacted`).
    #[error("watch from {after_ts} is below the history's floor {floor}")]
    Compacted { after_ts: u64, floor: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The changes of one applied entry that a watch follows.
type Batch = (u64, Vec<Change>);

#[derive(Debug, Default)]
struct Queue {
    batches: VecDeque<Batch>,
    bytes: usize,
    ended: Option<Ended>,
}

/// Why a queue stopped taking changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Overflowed { limit_bytes: usize },
    Reset,
}

impl From<Ended> for WatchEnd {
    fn from(ended: Ended) -> WatchEnd {
        match ended {
            Ended::Overflowed { limit_bytes } => WatchEnd::Overflowed { limit_bytes },
            Ended::Reset => WatchEnd::Reset,
        }
    }
}

/// One watch as the apply path sees it: its range and its queue.
#[derive(Debug)]
pub struct Watcher {
    range: WatchRange,
    keys_only: bool,
    limit_bytes: usize,
    queue: Mutex<Queue>,
    notify: Notify,
}

impl Watcher {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn offer(&self, log_index: u64, commit_ts: u64, changes: &[(&[u8], Option<&Head>)]) {
        let matching: Vec<Change> = changes
            .iter()
            .filter(|(key, _)| self.range.contains(key))
            .map(|(key, head)| match head {
                Some(head) => Change {
                    kind: ChangeKind::Put,
                    key: key.to_vec(),
                    value: if self.keys_only {
                        Vec::new()
                    } else {
                        head.value.clone()
                    },
                    version: head.version,
                    commit_ts: head.commit_ts,
                },
                None => Change {
                    kind: ChangeKind::Delete,
                    key: key.to_vec(),
                    value: Vec::new(),
                    version: 0,
                    commit_ts,
                },
            })
            .collect();
        if matching.is_empty() {
            return;
        }
        let bytes: usize = matching.iter().map(Change::bytes).sum();
        let mut queue = self.queue();
        if queue.ended.is_some() {
            return;
        }
        if queue.bytes + bytes > self.limit_bytes {
            *queue = Queue {
                ended: Some(Ended::Overflowed {
                    limit_bytes: self.limit_bytes,
                }),
                ..Queue::default()
            };
        } else {
            queue.bytes += bytes;
            queue.batches.push_back((log_index, matching));
        }
        drop(queue);
        self.notify.notify_one();
    }

    fn end(&self, end: Ended) {
        let mut queue = self.queue();
        if queue.ended.is_none() {
            *queue = Queue {
                ended: Some(end),
                ..Queue::default()
            };
        }
        drop(queue);
        self.notify.notify_one();
    }

    /// Takes queued batches of at most `max_bytes` (one at least); `Err` once the watch
    /// ended. The flag says whether the queue is empty now.
    fn take(&self, max_bytes: usize) -> Result<(Vec<Batch>, bool), WatchEnd> {
        let mut queue = self.queue();
        if let Some(end) = queue.ended {
            return Err(end.into());
        }
        let mut taken = Vec::new();
        let mut bytes = 0;
        while let Some((_, changes)) = queue.batches.front() {
            let size: usize = changes.iter().map(Change::bytes).sum();
            if !taken.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            queue.bytes -= size;
            taken.extend(queue.batches.pop_front());
        }
        Ok((taken, queue.batches.is_empty()))
    }
}

/// The watches of one shard replica.
#[derive(Debug, Default)]
pub struct WatchHub {
    watchers: Mutex<Vec<Weak<Watcher>>>,
}

impl WatchHub {
    fn watchers(&self) -> MutexGuard<'_, Vec<Weak<Watcher>>> {
        self.watchers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands an applied write entry's changes to the watches that follow them (called
    /// under the apply lock, written, before the history takes the replaced versions).
    pub(super) fn publish(&self, log_index: u64, versions: &EntryVersions) {
        let mut watchers = self.watchers();
        if watchers.is_empty() {
            return;
        }
        watchers.retain(|watcher| watcher.strong_count() > 0);
        let changes = versions.changes();
        for watcher in watchers.iter().filter_map(Weak::upgrade) {
            watcher.offer(log_index, versions.commit_ts, &changes);
        }
    }

    /// Ends every watch: the state under them was replaced (a snapshot install).
    pub(super) fn reset(&self) {
        for watcher in self.watchers().drain(..).filter_map(|weak| weak.upgrade()) {
            watcher.end(Ended::Reset);
        }
    }

    fn subscribe(
        &self,
        range: WatchRange,
        keys_only: bool,
        limit_bytes: usize,
    ) -> Result<Arc<Watcher>, WatchEnd> {
        let mut watchers = self.watchers();
        watchers.retain(|watcher| watcher.strong_count() > 0);
        if watchers.len() >= MAX_WATCHERS_PER_SHARD {
            return Err(WatchEnd::TooMany {
                max: MAX_WATCHERS_PER_SHARD,
            });
        }
        let watcher = Arc::new(Watcher {
            range,
            keys_only,
            limit_bytes,
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
        });
        watchers.push(Arc::downgrade(&watcher));
        Ok(watcher)
    }
}

/// A watch being served: its queue, and how far its catch-up got.
#[derive(Debug)]
pub struct Watch {
    watcher: Arc<Watcher>,
    /// Changes at or below it are not delivered.
    after_ts: u64,
    /// Where the catch-up reads on (`None`: it is done, or there is none).
    catch_up: Option<Vec<u8>>,
    /// Per catch-up page: the end of the keys it covered (exclusive; `None`: the range's
    /// end) and the log index it read at. A queued change of a key is new only if its entry
    /// is above the index of the page that covered the key.
    covered: Vec<(Option<Vec<u8>>, u64)>,
    /// The progress the watch starts from (a watch from now: the resolved timestamp when
    /// it subscribed), sent with its first page.
    start_progress: Option<u64>,
    /// Keys one catch-up page looks at.
    keys_per_hold: usize,
}

/// One page of a watch: changes, and the progress they bring it to (if any).
#[derive(Debug, Default)]
pub struct WatchPage {
    pub changes: Vec<Change>,
    pub progress: Option<u64>,
    /// More is ready at once (the catch-up goes on, or the queue holds more).
    pub more: bool,
}

impl Watch {
    /// Waits until a change is queued or the watch ended.
    pub async fn changed(&self) {
        self.watcher.notify.notified().await
    }

    /// Whether the watch ended (its next page says why).
    pub fn ended(&self) -> bool {
        self.watcher.queue().ended.is_some()
    }

    fn is_new(&self, key: &[u8], log_index: u64) -> bool {
        let page = self
            .covered
            .iter()
            .find(|(end, _)| end.as_deref().is_none_or(|end| key < end));
        page.is_none_or(|(_, read_at)| log_index > *read_at)
    }
}

fn index_of(applied: Option<LogId>) -> u64 {
    applied.map_or(0, |log_id| log_id.index)
}

/// The oldest start among the transactions holding locks on `tree` (`None`: no lock), or
/// `Err(())` when there are too many locks to look at.
fn oldest_lock(tree: &TreeRef) -> Result<Result<Option<u64>, ()>, StorageError> {
    let Some((lower, upper)) = lock_bounds(&[], None) else {
        return Ok(Ok(None));
    };
    let mut oldest: Option<u64> = None;
    for (scanned, pair) in tree.range(lower, upper).enumerate() {
        if scanned >= MAX_LOCKS_SCANNED {
            return Ok(Err(()));
        }
        let (_, bytes) = pair?;
        let lock: Lock = decode(tree.name(), &bytes)?;
        oldest = Some(oldest.map_or(lock.start_ts, |oldest: u64| oldest.min(lock.start_ts)));
    }
    Ok(Ok(oldest))
}

impl GroupState {
    /// Starts a watch of `range`: changes committed after `after_ts` (`None`: from now).
    /// `Compacted` when the history does not reach back to `after_ts`.
    pub async fn watch(
        &self,
        range: WatchRange,
        after_ts: Option<u64>,
        keys_only: bool,
    ) -> Result<Watch, WatchEnd> {
        self.watch_with_limits(
            range,
            after_ts,
            keys_only,
            WATCH_QUEUE_BYTES,
            CATCH_UP_KEYS_PER_HOLD,
        )
        .await
    }

    /// [`GroupState::watch`] with a queue bound and catch-up pages of `keys_per_hold` keys.
    pub(super) async fn watch_with_limits(
        &self,
        range: WatchRange,
        after_ts: Option<u64>,
        keys_only: bool,
        limit_bytes: usize,
        keys_per_hold: usize,
    ) -> Result<Watch, WatchEnd> {
        let _guard = self.apply_lock.read().await;
        let start = range.start.clone();
        let watcher = self.watches.subscribe(range, keys_only, limit_bytes)?;
        let (after_ts, catch_up, start_progress) = match after_ts {
            Some(after_ts) => {
                let history = self.history();
                let (floor, high_water) = (history.floor(), history.high_water());
                drop(history);
                if after_ts < floor {
                    return Err(WatchEnd::Compacted { after_ts, floor });
                }
                // Nothing applied here committed after it (every entry applied so far
                // committed at or below the high-water mark): the queue brings every change
                // after it, and the catch-up read of the range would find none.
                let catch_up = (after_ts < high_water).then_some(start);
                (after_ts, catch_up, None)
            }
            None => {
                let progress = self.resolved_ts(&self.tree())?;
                (progress.unwrap_or(0), None, progress)
            }
        };
        Ok(Watch {
            watcher,
            after_ts,
            catch_up,
            covered: Vec::new(),
            start_progress,
            keys_per_hold,
        })
    }

    /// The next page of `watch`, without waiting: a catch-up page while the catch-up lasts
    /// (one hold of the apply lock), then what its queue holds, at most `max_bytes` of
    /// changes (one change at least). Progress comes with the page that empties the queue.
    pub async fn watch_next(&self, watch: &mut Watch, max_bytes: usize) -> Result<WatchPage, WatchEnd> {
        let guard = self.apply_lock.clone().read_owned().await;
        if let Some(start) = watch.catch_up.take() {
            let tree = self.tree();
            let history = Arc::clone(&self.history);
            let end = watch.watcher.range.end.clone();
            let after_ts = watch.after_ts;
            let keys_only = watch.watcher.keys_only;
            let keys_per_hold = watch.keys_per_hold;
            let applied = index_of(*self.applied_tx.borrow());
            let page = tokio::task::spawn_blocking(move || {
                let _guard = guard;
                let history = history.lock().unwrap_or_else(PoisonError::into_inner);
                let page = CatchUpRead {
                    after_ts,
                    keys_only,
                    keys_per_hold,
                    max_bytes,
                };
                page.read(&tree, &history, start, end)
            })
            .await
            .map_err(join_error)??
            .map_err(|below| WatchEnd::Compacted {
                after_ts,
                floor: below.floor,
            })?;
            watch
                .covered
                .push((page.next.clone().or(watch.watcher.range.end.clone()), applied));
            watch.catch_up = page.next;
            return Ok(WatchPage {
                changes: page.changes,
                progress: None,
                more: true,
            });
        }
        let (batches, drained) = watch.watcher.take(max_bytes)?;
        let mut changes = Vec::new();
        for (log_index, batch) in batches {
            changes.extend(
                batch.into_iter().filter(|change| {
                    change.commit_ts > watch.after_ts && watch.is_new(&change.key, log_index)
                }),
            );
        }
        let progress = if drained {
            let tree = self.tree();
            let start = watch.start_progress.take();
            start.or(self.resolved_ts(&tree)?)
        } else {
            None
        };
        drop(guard);
        Ok(WatchPage {
            changes,
            progress,
            more: !drained,
        })
    }

    /// Every change committed at or below it has been applied here (see the module docs);
    /// `None` while too many locks are held to tell. Called under the apply lock.
    fn resolved_ts(&self, tree: &TreeRef) -> Result<Option<u64>, StorageError> {
        let high_water = self.history().high_water();
        if !self.may_have_locks() {
            return Ok(Some(high_water));
        }
        Ok(match oldest_lock(tree)? {
            Ok(None) => Some(high_water),
            Ok(Some(oldest)) => Some(high_water.min(oldest.saturating_sub(1))),
            Err(()) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::storage::RaftStateMachine;
    use openraft::EntryPayload;

    use super::*;
    use crate::raft::state_machine::test_support::{open, put};
    use crate::raft::state_machine::StateMachine;
    use crate::raft::types::{Command, Entry};

    fn delete(index: u64, key: &[u8], request_id: u8) -> Entry {
        let mut entry = put(index, key, b"", request_id);
        if let EntryPayload::Normal(Command::Write(writes)) = &mut entry.payload {
            writes[0].ops[0].value = None;
        }
        entry
    }

    fn everything() -> WatchRange {
        WatchRange {
            start: Vec::new(),
            end: None,
        }
    }

    /// Per key, what a watch saw: (put value or delete, commit timestamp).
    type Seen = BTreeMap<Vec<u8>, Vec<(Option<Vec<u8>>, u64)>>;

    fn record(seen: &mut Seen, changes: Vec<Change>) {
        for change in changes {
            let value = (change.kind == ChangeKind::Put).then_some(change.value);
            seen.entry(change.key)
                .or_default()
                .push((value, change.commit_ts));
        }
    }

    /// A watch from the start whose catch-up runs one key per hold while entries apply
    /// between its pages sees every change of every key exactly once, in commit order —
    /// those the catch-up read, those queued while it ran (some of which it read too), and
    /// those applied after it.
    #[tokio::test]
    async fn the_switch_from_catch_up_to_live_loses_and_repeats_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let keys: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
        // What each key went through, in apply order (`None`: deleted).
        let mut expected: BTreeMap<Vec<u8>, Vec<Option<Vec<u8>>>> = BTreeMap::new();
        let mut index = 0u64;
        let mut apply = |step: u64| {
            index += 1;
            let key = keys[(step % 4) as usize];
            let entry = if step % 5 == 4 {
                delete(index, key, index as u8)
            } else {
                put(index, key, format!("v{index}").as_bytes(), index as u8)
            };
            (entry, key.to_vec(), step % 5 == 4, index)
        };
        let mut applied = Vec::new();
        for step in 0..12 {
            applied.push(apply(step));
        }
        let mut feed = |applied: Vec<(Entry, Vec<u8>, bool, u64)>| {
            let entries: Vec<Entry> = applied.iter().map(|(entry, ..)| entry.clone()).collect();
            for (_, key, deleted, index) in applied {
                let history = expected.entry(key).or_default();
                let existed = history.last().is_some_and(Option::is_some);
                if deleted {
                    // A delete of an absent key changes nothing.
                    if existed {
                        history.push(None);
                    }
                } else {
                    history.push(Some(format!("v{index}").into_bytes()));
                }
            }
            entries
        };
        sm.apply(feed(applied)).await.expect("apply");

        let mut watch = state
            .watch_with_limits(everything(), Some(0), false, WATCH_QUEUE_BYTES, 1)
            .await
            .expect("watch");
        let mut seen = Seen::new();
        let mut step = 12;
        for _ in 0..40 {
            let page = state.watch_next(&mut watch, 1 << 20).await.expect("page");
            record(&mut seen, page.changes);
            // Entries between every page, during the catch-up and after.
            let more: Vec<_> = (0..2)
                .map(|_| {
                    step += 1;
                    apply(step)
                })
                .collect();
            sm.apply(feed(more)).await.expect("apply");
        }
        loop {
            let page = state.watch_next(&mut watch, 1 << 20).await.expect("page");
            record(&mut seen, page.changes);
            if !page.more {
                assert!(page.progress.is_some(), "a drained queue brings progress");
                break;
            }
        }
        for (key, history) in &expected {
            let got = seen.get(key).cloned().unwrap_or_default();
            let values: Vec<Option<Vec<u8>>> = got.iter().map(|(value, _)| value.clone()).collect();
            assert_eq!(&values, history, "key {key:?}");
            assert!(
                got.windows(2).all(|pair| pair[0].1 < pair[1].1),
                "key {key:?} in commit order"
            );
        }
    }

    /// A watch whose reader takes nothing while changes pour in is ended once its queue
    /// would pass its bound, naming the bound; its queue is freed at once.
    #[tokio::test]
    async fn a_lagging_watch_is_ended_naming_its_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let mut watch = state
            .watch_with_limits(everything(), None, false, 1000, CATCH_UP_KEYS_PER_HOLD)
            .await
            .expect("watch");
        let first = state.watch_next(&mut watch, 1 << 20).await.expect("first page");
        assert!(first.changes.is_empty());
        assert_eq!(
            first.progress,
            Some(0),
            "a watch from now starts at the shard's progress"
        );
        for index in 1..=20u64 {
            sm.apply(vec![put(index, b"k", &[7u8; 100], index as u8)])
                .await
                .expect("apply");
        }
        assert!(watch.ended());
        assert_eq!(watch.watcher.queue().bytes, 0, "the queue is freed");
        match state.watch_next(&mut watch, 1 << 20).await {
            Err(end @ WatchEnd::Overflowed { limit_bytes: 1000 }) => {
                assert!(end.to_string().contains("WATCH_QUEUE_BYTES"), "{end}");
            }
            other => panic!("expected the overflow, got {other:?}"),
        }
    }

    /// The values of the changes a watch delivers until it has nothing more ready.
    async fn drain(state: &GroupState, watch: &mut Watch) -> Vec<Vec<u8>> {
        let mut values = Vec::new();
        loop {
            let page = state.watch_next(watch, 1 << 20).await.expect("page");
            values.extend(page.changes.into_iter().map(|change| change.value));
            if !page.more {
                return values;
            }
        }
    }

    /// A watch from the highest applied timestamp on (what a watch from now asks for)
    /// skips the catch-up read and still sees the next change; one from below it reads
    /// what committed since first.
    #[tokio::test]
    async fn a_watch_from_the_high_water_mark_skips_the_catch_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        sm.apply(vec![put(1, b"k", b"v1", 1)]).await.expect("apply");
        let high_water = state.history().high_water();
        let mut from_now = state
            .watch(everything(), Some(high_water), false)
            .await
            .expect("watch");
        assert!(from_now.catch_up.is_none(), "nothing to catch up on");
        let mut from_before = state
            .watch(everything(), Some(high_water - 1), false)
            .await
            .expect("watch");
        assert!(from_before.catch_up.is_some());
        sm.apply(vec![put(2, b"k", b"v2", 2)]).await.expect("apply");
        assert_eq!(drain(&state, &mut from_now).await, vec![b"v2".to_vec()]);
        assert_eq!(
            drain(&state, &mut from_before).await,
            vec![b"v1".to_vec(), b"v2".to_vec()]
        );
    }

    /// A watch from before the history's floor is refused, naming where it can resume.
    #[tokio::test]
    async fn a_watch_below_the_floor_is_compacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        sm.apply(vec![put(1, b"k", b"v", 1)]).await.expect("apply");
        drop((sm, state, engine));
        // Reopened: the history is gone, the floor is the highest applied timestamp.
        let (_engine, state) = open(dir.path());
        match state.watch(everything(), Some(0), false).await {
            Err(WatchEnd::Compacted { after_ts: 0, floor }) => assert!(floor > 0),
            other => panic!("expected compacted, got {other:?}"),
        }
    }
}
