//! Reads of a shard's transaction state: provisional values (read uncommitted), the locks
//! and the records a garbage collection visits. Each holds the apply lock for reading, like
//! every read (`read.rs`; a page of provisional values in holds, `holds.rs`); none checks
//! consistency: callers do.

use std::iter::Peekable;

use super::holds::{AppliedState, Cursor, Held, PageBuilder, RangeRead, Visits};
use super::layout::{data_bounds, lock_bounds, user_key};
use super::read::{read_within, ScanOptions, ScanPage};
use super::{join_error, mvcc, txn, GroupState};
use crate::raft::decode;
use crate::raft::txn::{Lock, LockedKey, TxnOp};
use crate::raft::types::Versioned;
use crate::storage::{StorageError, TreeRef};

impl GroupState {
    /// Reads `keys` at one point between applied entries with provisional values: a key
    /// locked by a transaction reads as the transaction's commit would leave it — a put's
    /// value, absent after a delete, the committed value with the suffix of an append — at
    /// version 0 (it has none yet); other keys read their heads. What READ UNCOMMITTED
    /// transactions read: the transaction may still roll back (a dirty read).
    pub async fn get_many_uncommitted(
        &self,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Versioned>>, StorageError> {
        self.get_many_uncommitted_within(keys, usize::MAX).await
    }

    /// [`GroupState::get_many_uncommitted`] of the first of `keys` whose keys and values
    /// fit in `max_bytes` (at least one).
    pub async fn get_many_uncommitted_within(
        &self,
        keys: &[Vec<u8>],
        max_bytes: usize,
    ) -> Result<Vec<Option<Versioned>>, StorageError> {
        self.get_many_uncommitted_live_within(keys, max_bytes, None).await
    }

    /// [`GroupState::get_many_uncommitted_within`] with committed values expired at oracle
    /// timestamp `now_ts` absent (`None`: none counts as expired; TTL, `raft/expiry.rs`).
    pub async fn get_many_uncommitted_live_within(
        &self,
        keys: &[Vec<u8>],
        max_bytes: usize,
        now_ts: Option<u64>,
    ) -> Result<Vec<Option<Versioned>>, StorageError> {
        let _guard = self.apply_lock.read().await;
        let tree = self.tree();
        let may_have_locks = self.may_have_locks();
        read_within(keys, max_bytes, |key| {
            let head = mvcc::head(&tree, key)?
                .filter(|head| now_ts.is_none_or(|now_ts| head.live_at(now_ts)))
                .map(mvcc::Head::versioned);
            let lock = if may_have_locks {
                txn::lock(&tree, key)?
            } else {
                None
            };
            let provisional = |value: Vec<u8>| Versioned { version: 0, value };
            Ok(match lock.map(|lock| lock.op) {
                None => head,
                Some(TxnOp::Put(value)) => Some(provisional(value)),
                Some(TxnOp::Delete) => None,
                Some(TxnOp::Append(suffix)) => {
                    let mut value = head.map(|head| head.value).unwrap_or_default();
                    value.extend_from_slice(&suffix);
                    Some(provisional(value))
                }
            })
        })
    }

    /// Up to `limit` locks of transactions that started below `below`, in key order, and
    /// whether more exist (what garbage collection resolves before it purges records).
    pub async fn locks_below(
        &self,
        below: u64,
        limit: usize,
    ) -> Result<(Vec<LockedKey>, bool), StorageError> {
        if !self.may_have_locks() {
            return Ok((Vec::new(), false));
        }
        let guard = self.apply_lock.clone().read_owned().await;
        let tree = self.tree();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let mut found = Vec::new();
            let mut next = Vec::new();
            while let Some(locked) = txn::first_lock_in(&tree, &next, None, below.saturating_sub(1))? {
                if found.len() >= limit {
                    return Ok((found, true));
                }
                next = locked.key.clone();
                next.push(0);
                found.push(locked);
            }
            Ok((found, false))
        })
        .await
        .map_err(join_error)?
    }

    /// Whether a garbage collection at `safe_point` would delete a record here.
    pub async fn has_collectable_records(&self, safe_point: u64) -> Result<bool, StorageError> {
        let _guard = self.apply_lock.read().await;
        let (keys, more) = txn::collectable_below(&self.tree(), safe_point, 1)?;
        Ok(!keys.is_empty() || more)
    }

    /// One page of a range with provisional values (read uncommitted): the heads of the
    /// range and the locks on it merged in scan order, each locked key as its transaction
    /// would leave it (a delete hides the key, a put or an append on a key without a head
    /// shows it). Read at one applied state in holds of the apply lock, like every scan.
    pub async fn scan_uncommitted(&self, options: ScanOptions) -> Result<ScanPage, StorageError> {
        self.scan_uncommitted_live(options, None).await
    }

    /// [`GroupState::scan_uncommitted`] with committed values expired at oracle timestamp
    /// `now_ts` left out (`None`: none counts as expired).
    pub async fn scan_uncommitted_live(
        &self,
        options: ScanOptions,
        now_ts: Option<u64>,
    ) -> Result<ScanPage, StorageError> {
        self.scan_uncommitted_live_sharing(options, now_ts, &mut AppliedState::new())
            .await
    }

    /// [`GroupState::scan_uncommitted_live`] as one of the reads of an answer at `applied`
    /// (see [`AppliedState`]).
    pub async fn scan_uncommitted_live_sharing(
        &self,
        options: ScanOptions,
        now_ts: Option<u64>,
        applied: &mut AppliedState,
    ) -> Result<ScanPage, StorageError> {
        let mut read = ScanUncommitted::new(&options, self.may_have_locks());
        read.now_ts = now_ts;
        self.read_in_holds_sharing(read, applied).await?.map_err(|below| {
            StorageError::Engine(format!(
                "a read of provisional values met the history floor {}",
                below.floor
            ))
        })
    }
}

type Pairs<'a> = Peekable<Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StorageError>> + 'a>>;

/// The next user key of `pairs` (records of one prefix: data, or locks), without taking it.
fn peek_key(pairs: &mut Pairs<'_>, tree: &TreeRef, data: bool) -> Result<Option<Vec<u8>>, StorageError> {
    match pairs.peek() {
        None => Ok(None),
        Some(Ok((key, _))) if data => Ok(Some(user_key(tree.name(), key)?)),
        Some(Ok((key, _))) => Ok(Some(key.get(1..).unwrap_or_default().to_vec())),
        Some(Err(_)) => match pairs.next() {
            Some(Err(err)) => Err(err),
            _ => Ok(None),
        },
    }
}

/// A page of provisional values (see [`GroupState::scan_uncommitted`]). Whether the tree
/// may hold locks is read once: the page ends at the first apply.
pub(super) struct ScanUncommitted {
    cursor: Cursor,
    page: PageBuilder,
    may_have_locks: bool,
    /// Committed values expired at this oracle timestamp are absent.
    now_ts: Option<u64>,
}

impl ScanUncommitted {
    pub(super) fn new(options: &ScanOptions, may_have_locks: bool) -> ScanUncommitted {
        ScanUncommitted {
            cursor: Cursor::new(options.start.clone(), options.end.clone(), options.reverse),
            page: PageBuilder::new(options),
            may_have_locks,
            now_ts: None,
        }
    }
}

impl RangeRead for ScanUncommitted {
    type Answer = ScanPage;

    fn read_ts(&self) -> Option<u64> {
        None
    }

    fn hold(
        &mut self,
        tree: &TreeRef,
        _history: Option<&mvcc::History>,
        visits: &mut Visits,
    ) -> Result<Result<Held, mvcc::BelowFloor>, StorageError> {
        let (start, end) = (self.cursor.start.clone(), self.cursor.end.clone());
        let Some((lower, upper)) = data_bounds(&start, end.as_deref()) else {
            return Ok(Ok(Held::Done));
        };
        let reverse = self.cursor.reverse;
        let ordered = |lower, upper| -> Pairs<'_> {
            let pairs: Box<dyn Iterator<Item = _>> = if reverse {
                Box::new(tree.range_rev(lower, upper))
            } else {
                Box::new(tree.range(lower, upper))
            };
            pairs.peekable()
        };
        let mut heads = ordered(lower, upper);
        let mut locks = match lock_bounds(&start, end.as_deref()).filter(|_| self.may_have_locks) {
            Some((lower, upper)) => ordered(lower, upper),
            None => (Box::new(std::iter::empty()) as Box<dyn Iterator<Item = _> + '_>).peekable(),
        };
        let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
        let mut last: Option<Vec<u8>> = None;
        let held = loop {
            let head_key = peek_key(&mut heads, tree, true)?;
            let lock_key = peek_key(&mut locks, tree, false)?;
            // Which comes next in scan order: the head, the lock, or both (the same key).
            let (take_head, take_lock) = match (&head_key, &lock_key) {
                (None, None) => break Held::Done,
                (Some(head), Some(lock)) if head == lock => (true, true),
                (Some(head), Some(lock)) => (before(head, lock), !before(head, lock)),
                (Some(_), None) => (true, false),
                (None, Some(_)) => (false, true),
            };
            if !visits.allow_another() {
                break Held::Paused;
            }
            let key = if take_head { head_key } else { lock_key }.unwrap_or_default();
            let head = if take_head {
                heads.next().transpose()?.map(|(_, value)| value)
            } else {
                None
            };
            let lock = if take_lock {
                locks.next().transpose()?.map(|(_, value)| value)
            } else {
                None
            };
            let record_bytes = head.as_ref().map_or(0, Vec::len) + lock.as_ref().map_or(0, Vec::len);
            visits.visit(key.len() + record_bytes);
            let now_ts = self.now_ts;
            let head = head
                .map(|bytes| mvcc::decode_head(tree.name(), &bytes))
                .transpose()?
                .filter(|head| now_ts.is_none_or(|now_ts| head.live_at(now_ts)));
            let entry = match lock {
                None => head.map(|head| {
                    let expires_at = head.expires_at;
                    (head.versioned(), expires_at)
                }),
                Some(bytes) => {
                    let lock: Lock = decode(tree.name(), &bytes)?;
                    txn::committed_value(lock.op, head.as_ref())
                        .map(|value| (Versioned { version: 0, value }, None))
                }
            };
            // Finding one entry past the page is what tells whether more remain.
            if let Some((versioned, expires_at)) = entry {
                if !self.page.offer(&key, versioned, expires_at) {
                    break Held::Done;
                }
            }
            last = Some(key);
        };
        if let Some(last) = last {
            self.cursor.pass(&last);
        }
        Ok(Ok(held))
    }

    fn cut(&mut self) {
        self.page.cut();
    }

    fn answer(self) -> ScanPage {
        self.page.finish(&self.cursor)
    }
}
