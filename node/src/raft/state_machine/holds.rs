//! Range reads in holds of the apply lock: a scan page or a count reads at most
//! [`HOLD_BUDGET`] records (or bytes) per hold, then releases the lock so waiting applies
//! run, then takes it again and reads on after the last key it looked at.
//!
//! Why an answer stays at one applied state: every apply and snapshot install bumps
//! `GroupState::applies` under the lock before it touches the tree. A read of the latest
//! state records the counter in its first hold; finding it unchanged at the next hold, it
//! knows the tree is the same and reads on; finding it changed, it ends the answer where
//! the last hold stopped (`more`), so every entry of the answer was read at the first hold's
//! state. The caller (the router) asks again from there, with a fresh leadership check —
//! as it does for the next page anyway. A read at a timestamp reads on across applies: its
//! answer depends only on versions committed at or below its timestamp, which applies after
//! its fence and lock check never add (`Node::prepare_read_at`, invariant 16); a history
//! pruned or replaced meanwhile makes a later hold fail "snapshot too old", never answer
//! differently.
//!
//! Each hold runs on a blocking thread; the lock is released between holds, never held
//! across an await outside them.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use super::read::{ScanOptions, ScanPage};
use super::{join_error, mvcc, GroupState};
use crate::raft::types::Versioned;
use crate::storage::{StorageError, TreeRef};

/// How much one hold of the apply lock may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HoldBudget {
    /// Records visited (data records, locks, versions in memory).
    pub records: usize,
    /// Key and value bytes of the records visited.
    pub bytes: usize,
}

/// About a millisecond of sled iteration on small records, or one large value: what an
/// apply waits for at most behind a range read.
pub(super) const HOLD_BUDGET: HoldBudget = HoldBudget {
    records: 1024,
    bytes: 1 << 20,
};

/// What one hold has read so far.
#[derive(Debug)]
pub(super) struct Visits {
    budget: HoldBudget,
    records: usize,
    bytes: usize,
}

impl Visits {
    fn new(budget: HoldBudget) -> Visits {
        Visits {
            budget,
            records: 0,
            bytes: 0,
        }
    }

    /// Whether this hold may visit another record: the first always may (progress).
    pub(super) fn allow_another(&self) -> bool {
        self.records == 0 || (self.records < self.budget.records && self.bytes < self.budget.bytes)
    }

    /// Counts a record of `bytes` key and value bytes.
    pub(super) fn visit(&mut self, bytes: usize) {
        self.records += 1;
        self.bytes = self.bytes.saturating_add(bytes);
    }
}

/// How a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    /// The read is complete: its limit, its byte budget or the end of its range.
    Done,
    /// The hold's budget ran out: read on after the cursor's last key.
    Paused,
}

/// The part of a range not read yet, narrowed as keys are looked at in scan order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cursor {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
    pub reverse: bool,
    /// The last key looked at.
    last: Option<Vec<u8>>,
}

impl Cursor {
    pub(super) fn new(start: Vec<u8>, end: Option<Vec<u8>>, reverse: bool) -> Cursor {
        Cursor {
            start,
            end,
            reverse,
            last: None,
        }
    }

    /// `key` (a user key of the range) has been looked at: what is left lies after it.
    pub(super) fn pass(&mut self, key: &[u8]) {
        if self.reverse {
            self.end = Some(key.to_vec());
        } else {
            let mut successor = Vec::with_capacity(key.len() + 1);
            successor.extend_from_slice(key);
            successor.push(0);
            self.start = successor;
        }
        self.last = Some(key.to_vec());
    }

    /// The last key looked at.
    pub(super) fn last(&self) -> Option<&[u8]> {
        self.last.as_deref()
    }
}

/// A scan page being filled: at most `limit` entries, whose keys and values stay within
/// `max_bytes` (a first entry larger than that is still taken).
#[derive(Debug)]
pub(super) struct PageBuilder {
    limit: usize,
    max_bytes: usize,
    keys_only: bool,
    bytes: usize,
    page: ScanPage,
}

impl PageBuilder {
    pub(super) fn new(options: &ScanOptions) -> PageBuilder {
        PageBuilder {
            limit: options.limit,
            max_bytes: options.max_bytes,
            keys_only: options.keys_only,
            bytes: 0,
            page: ScanPage::default(),
        }
    }

    /// Takes the next entry in scan order with its expiry (`None`: never), or answers false
    /// when the page is full (which then has more: this entry).
    pub(super) fn offer(&mut self, key: &[u8], mut versioned: Versioned, expires_at: Option<u64>) -> bool {
        if self.keys_only {
            versioned.value = Vec::new();
        }
        let entry_bytes = key.len() + versioned.value.len();
        let fits = self.page.entries.is_empty() || self.bytes.saturating_add(entry_bytes) <= self.max_bytes;
        if self.page.entries.len() >= self.limit || !fits {
            self.page.more = true;
            return false;
        }
        self.bytes = self.bytes.saturating_add(entry_bytes);
        self.page.entries.push((key.to_vec(), versioned));
        self.page.expiries.push(expires_at);
        true
    }

    /// The page, ending after `cursor`'s last key when it has more.
    pub(super) fn finish(mut self, cursor: &Cursor) -> ScanPage {
        if self.page.more {
            self.page.last_key = match cursor.last() {
                Some(last) => Some(last.to_vec()),
                None => self.page.entries.last().map(|(key, _)| key.clone()),
            };
        }
        self.page
    }

    /// Ends the page where the reading stopped, with more to read after `cursor`.
    pub(super) fn cut(&mut self) {
        self.page.more = true;
    }
}

/// A range read that can stop after any key and read on after it.
pub(super) trait RangeRead: Send + 'static {
    type Answer: Send + 'static;

    /// The oracle timestamp the read answers at; `None`: the latest state.
    fn read_ts(&self) -> Option<u64>;

    /// Reads on from where the last hold stopped, under the apply lock, until the read is
    /// complete or `visits` runs out. `history` is given to reads at a timestamp.
    fn hold(
        &mut self,
        tree: &TreeRef,
        history: Option<&mvcc::History>,
        visits: &mut Visits,
    ) -> Result<Result<Held, mvcc::BelowFloor>, StorageError>;

    /// The state changed since the first hold: answer what was read, with more to read
    /// after the last key looked at.
    fn cut(&mut self);

    fn answer(self) -> Self::Answer;
}

/// The applied state an answer of the latest state is read at: the apply counter its first
/// hold saw. The reads that make up one answer (a range's pieces on either side of the
/// reserved keyspace, `service/shard/reserved.rs`) share one, so a later read that finds
/// the counter moved ends the answer before reading anything: every entry of the answer was
/// read at one applied state, as if it were one read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppliedState {
    applies: Option<u64>,
}

impl AppliedState {
    /// No read yet: the first hold of the first read sets it.
    pub fn new() -> AppliedState {
        AppliedState::default()
    }
}

impl GroupState {
    /// Runs `read` in holds of the apply lock of [`HOLD_BUDGET`] each (see the module docs).
    /// `Err` when a read at a timestamp finds the history does not reach back to it.
    pub(super) async fn read_in_holds<R: RangeRead>(
        &self,
        read: R,
    ) -> Result<Result<R::Answer, mvcc::BelowFloor>, StorageError> {
        self.read_in_holds_sharing(read, &mut AppliedState::new()).await
    }

    /// [`GroupState::read_in_holds`] as one of the reads of an answer at `applied` (a
    /// latest read ends before its first hold when an entry applied since the answer's
    /// first read).
    pub(super) async fn read_in_holds_sharing<R: RangeRead>(
        &self,
        read: R,
        applied: &mut AppliedState,
    ) -> Result<Result<R::Answer, mvcc::BelowFloor>, StorageError> {
        self.read_in_holds_in(read, applied, HOLD_BUDGET, || std::future::ready(()))
            .await
    }

    /// [`GroupState::read_in_holds`] with a hold budget and `between` awaited between two
    /// holds, with the lock released (tests apply entries there).
    #[cfg(test)]
    pub(super) async fn read_in_holds_with<R, F, Fut>(
        &self,
        read: R,
        budget: HoldBudget,
        between: F,
    ) -> Result<Result<R::Answer, mvcc::BelowFloor>, StorageError>
    where
        R: RangeRead,
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        self.read_in_holds_in(read, &mut AppliedState::new(), budget, between)
            .await
    }

    /// The loop of holds: a read of the latest state checks at every hold that the apply
    /// counter is the one `applied` recorded (set at the first hold of the answer's first
    /// read), and ends the answer where the last hold stopped when it moved.
    async fn read_in_holds_in<R, F, Fut>(
        &self,
        mut read: R,
        applied: &mut AppliedState,
        budget: HoldBudget,
        mut between: F,
    ) -> Result<Result<R::Answer, mvcc::BelowFloor>, StorageError>
    where
        R: RangeRead,
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            let guard = self.apply_lock.clone().read_owned().await;
            let applies = self.applies.load(Ordering::SeqCst);
            let latest = read.read_ts().is_none();
            if latest && applied.applies.is_some_and(|first| first != applies) {
                read.cut();
                return Ok(Ok(read.answer()));
            }
            if latest {
                applied.applies.get_or_insert(applies);
            }
            let tree = self.tree();
            let history = (!latest).then(|| Arc::clone(&self.history));
            let (returned, held) = tokio::task::spawn_blocking(move || {
                let _guard = guard;
                let history = history
                    .as_ref()
                    .map(|history| history.lock().unwrap_or_else(PoisonError::into_inner));
                let mut visits = Visits::new(budget);
                let held = read.hold(&tree, history.as_deref(), &mut visits);
                (read, held)
            })
            .await
            .map_err(join_error)?;
            read = returned;
            match held? {
                Err(below) => return Ok(Err(below)),
                Ok(Held::Done) => return Ok(Ok(read.answer())),
                Ok(Held::Paused) => between().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use openraft::storage::RaftStateMachine;

    use super::*;
    use crate::raft::state_machine::range::{Count, LatestScan, ScanAt};
    use crate::raft::state_machine::test_support::{log_id, open, put, scan_options};
    use crate::raft::state_machine::{CountResult, StateMachine};
    use crate::raft::types::{Command, Entry, WriteCommand, WriteOp};

    /// Holds of three records each.
    const SMALL: HoldBudget = HoldBudget {
        records: 3,
        bytes: usize::MAX,
    };

    /// Ten keys `k0`..`k9` (entries 1..=10) and the state machine, shared with the hooks.
    async fn ten_keys(
        dir: &std::path::Path,
    ) -> (
        crate::storage::EngineRef,
        Arc<GroupState>,
        Arc<tokio::sync::Mutex<StateMachine>>,
    ) {
        let (engine, state) = open(dir);
        let mut sm = StateMachine::new(state.clone());
        for i in 0..10u8 {
            let key = [b'k', b'0' + i];
            sm.apply(vec![put(u64::from(i) + 1, &key, b"v", i)])
                .await
                .expect("apply");
        }
        (engine, state, Arc::new(tokio::sync::Mutex::new(sm)))
    }

    /// A count of the latest keys releases the apply lock between its holds: an apply waiting
    /// behind it gets the lock after one hold, and the count's answer ends there (`more`,
    /// resumable after its last key), so every key it counted was read at one applied state.
    /// With no apply in between, the count reads on across holds to one full answer.
    #[tokio::test]
    async fn a_count_lets_applies_in_between_its_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state, sm) = ten_keys(dir.path()).await;
        let next_index = Arc::new(AtomicU64::new(11));
        let apply_between = || {
            let (state, sm, next_index) = (state.clone(), sm.clone(), next_index.clone());
            async move {
                assert!(
                    state.apply_lock.try_write().is_ok(),
                    "the apply lock is free between holds"
                );
                let index = next_index.fetch_add(1, Ordering::SeqCst);
                // A new key inside the counted range, after the keys counted so far.
                let entry = put(index, format!("k5{index}").as_bytes(), b"v", index as u8);
                sm.lock()
                    .await
                    .apply(vec![entry])
                    .await
                    .expect("apply between holds");
            }
        };
        let count = |read_ts| Count::new(b"k".to_vec(), Some(b"l".to_vec()), 100, read_ts);
        let first = tokio::time::timeout(
            Duration::from_secs(10),
            state.read_in_holds_with(count(None), SMALL, apply_between),
        )
        .await
        .expect("the apply between holds does not wait for the count")
        .expect("count")
        .expect("latest");
        assert_eq!(
            first,
            CountResult {
                count: 3,
                more: true,
                last_key: Some(b"k2".to_vec()),
            },
            "the count ends at the hold after which an entry applied"
        );
        assert_eq!(next_index.load(Ordering::SeqCst), 12, "one apply between holds");

        // Undisturbed, it reads on across holds: all 11 keys in one answer.
        let quiet = state
            .read_in_holds_with(count(None), SMALL, || std::future::ready(()))
            .await
            .expect("count")
            .expect("latest");
        assert_eq!(quiet.count, 11);
        assert!(!quiet.more);

        // A count at a timestamp reads on across applies: the answer is the state at it.
        let read_ts = state.history().high_water();
        let at = state
            .read_in_holds_with(count(Some(read_ts)), SMALL, apply_between)
            .await
            .expect("count")
            .expect("above the floor");
        assert_eq!(at.count, 11, "keys written after the timestamp are not counted");
        assert!(!at.more);
        let applied = next_index.load(Ordering::SeqCst) - 12;
        assert!(applied >= 3, "an apply after each hold but the last: {applied}");
    }

    /// The reads of one answer share its applied state: a read after an entry applied since
    /// the answer's first read ends before it reads anything (`more`, no last key: the caller
    /// resumes where the first read ended), so the pieces of a range on either side of the
    /// reserved keyspace never mix two applied states. Without an apply in between, the
    /// second read reads on as a read of its own would.
    #[tokio::test]
    async fn reads_of_one_answer_end_at_an_apply_between_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state, sm) = ten_keys(dir.path()).await;
        let first_piece = || Count::new(b"k0".to_vec(), Some(b"k5".to_vec()), 100, None);
        let second_piece = || Count::new(b"k5".to_vec(), Some(b"l".to_vec()), 100, None);

        let mut applied = AppliedState::new();
        let first = state
            .read_in_holds_sharing(first_piece(), &mut applied)
            .await
            .expect("count")
            .expect("latest");
        assert_eq!(first.count, 5);
        // Written between the two pieces: on the second piece's side.
        sm.lock()
            .await
            .apply(vec![put(11, b"k55", b"v", 11)])
            .await
            .expect("apply between the pieces");
        let second = state
            .read_in_holds_sharing(second_piece(), &mut applied)
            .await
            .expect("count")
            .expect("latest");
        assert_eq!(
            second,
            CountResult {
                count: 0,
                more: true,
                last_key: None,
            },
            "the second piece does not read a state after the first piece's"
        );
        let scan = state
            .read_in_holds_sharing(LatestScan::new(&scan_options(b"k5", None, 100)), &mut applied)
            .await
            .expect("scan")
            .expect("latest");
        assert!(scan.entries.is_empty() && scan.more && scan.last_key.is_none());

        // A new answer starts at the state as it is now, and reads both pieces through.
        let mut applied = AppliedState::new();
        for (piece, expected) in [(first_piece(), 5), (second_piece(), 6)] {
            let counted = state
                .read_in_holds_sharing(piece, &mut applied)
                .await
                .expect("count")
                .expect("latest");
            assert_eq!((counted.count, counted.more), (expected, false));
        }
        // A read at a timestamp is not one of the latest state's: an apply does not end it.
        let read_ts = state.history().high_water();
        let mut applied = AppliedState::new();
        let at =
            |start: &[u8], end: &[u8]| Count::new(start.to_vec(), Some(end.to_vec()), 100, Some(read_ts));
        state
            .read_in_holds_sharing(at(b"k0", b"k5"), &mut applied)
            .await
            .expect("count")
            .expect("above the floor");
        sm.lock()
            .await
            .apply(vec![put(12, b"k56", b"v", 12)])
            .await
            .expect("apply");
        let later = state
            .read_in_holds_sharing(at(b"k5", b"l"), &mut applied)
            .await
            .expect("count")
            .expect("above the floor");
        assert_eq!((later.count, later.more), (6, false));
    }

    /// A write entry at `index` putting (`Some`) or deleting `key`.
    fn write(index: u64, key: &[u8], value: Option<&[u8]>) -> Entry {
        Entry {
            log_id: log_id(2, index),
            payload: openraft::EntryPayload::Normal(Command::Write(vec![WriteCommand {
                request_id: [index as u8; 16],
                issued_at_ms: 1_000,
                ops: vec![WriteOp {
                    key: key.to_vec(),
                    value: value.map(<[u8]>::to_vec),
                    expected_version: None,
                    expiry: Default::default(),
                }],
            }])),
        }
    }

    /// Holds of one record each read exactly what one hold reads, when nothing applies in
    /// between: a cursor resumes after the last key looked at, for pages of the latest
    /// values and at a timestamp (heads merged with the history), in both directions, at
    /// any limit and byte budget, and for counts.
    #[tokio::test]
    async fn reads_resumed_after_every_record_match_reads_in_one_hold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state, sm) = ten_keys(dir.path()).await;
        let read_ts = state.history().high_water();
        let later = [
            write(11, b"k3", Some(b"new")),
            write(12, b"k5", None),
            write(13, b"k7", Some(b"newer")),
            write(14, b"k35", Some(b"created")),
        ];
        sm.lock().await.apply(later.to_vec()).await.expect("apply");
        let tiny = HoldBudget {
            records: 1,
            bytes: usize::MAX,
        };
        let none = || std::future::ready(());
        let ranges: [(&[u8], Option<&[u8]>); 4] = [
            (b"", None),
            (b"k2", Some(b"k8")),
            (b"k5", None),
            (b"k4", Some(b"k4")),
        ];
        for (start, end) in ranges {
            for reverse in [false, true] {
                for limit in [0, 1, 3, 100] {
                    for max_bytes in [usize::MAX, 5] {
                        let options = ScanOptions {
                            reverse,
                            max_bytes,
                            ..scan_options(start, end, limit)
                        };
                        let case = format!("{options:?}");
                        let whole = state
                            .read_in_holds(LatestScan::new(&options))
                            .await
                            .expect("scan");
                        let held = state
                            .read_in_holds_with(LatestScan::new(&options), tiny, none)
                            .await
                            .expect("scan");
                        assert_eq!(held, whole, "latest {case}");
                        let whole = state
                            .read_in_holds(ScanAt::new(&options, read_ts))
                            .await
                            .expect("scan");
                        let held = state
                            .read_in_holds_with(ScanAt::new(&options, read_ts), tiny, none)
                            .await
                            .expect("scan");
                        assert_eq!(held, whole, "at {read_ts}: {case}");
                    }
                }
            }
            for limit in [1, 3, 100] {
                for at in [None, Some(read_ts)] {
                    let count = || Count::new(start.to_vec(), end.map(<[u8]>::to_vec), limit, at);
                    let whole = state.read_in_holds(count()).await.expect("count");
                    let held = state
                        .read_in_holds_with(count(), tiny, none)
                        .await
                        .expect("count");
                    assert_eq!(held, whole, "count {start:?}..{end:?} limit {limit} at {at:?}");
                }
            }
        }
        // The timestamp sees the keys as they were: ten, k3 and k7 with their old values.
        let all = scan_options(b"", None, 100);
        let page = state
            .read_in_holds_with(ScanAt::new(&all, read_ts), tiny, none)
            .await
            .expect("scan")
            .expect("above the floor");
        assert_eq!(page.entries.len(), 10);
        assert!(page.entries.iter().all(|(_, versioned)| versioned.value == b"v"));
    }
}
