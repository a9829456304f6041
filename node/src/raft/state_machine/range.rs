//! The range reads of a shard, each a [`RangeRead`] run in holds of the apply lock
//! (`holds.rs`): a page of the latest values ([`LatestScan`]), a page as of a timestamp
//! ([`ScanAt`]: the heads of the range merged with the versions in memory) and a count of
//! either ([`Count`]). Each reads from its cursor on, so a hold can stop after any key.

use std::ops::ControlFlow;

use super::holds::{Cursor, Held, PageBuilder, RangeRead, Visits};
use super::layout::{data_bounds, user_key};
use super::mvcc;
use super::read::{CountResult, ScanOptions, ScanPage};
use crate::raft::types::Versioned;
use crate::storage::{Pair, StorageError, TreeRef};

/// The data records of what is left of `cursor`'s range, in its scan order.
fn data_records<'t>(
    tree: &'t TreeRef,
    cursor: &Cursor,
) -> Option<Box<dyn Iterator<Item = Result<Pair, StorageError>> + Send + 't>> {
    let (lower, upper) = data_bounds(&cursor.start, cursor.end.as_deref())?;
    Some(if cursor.reverse {
        tree.range_rev(lower, upper)
    } else {
        tree.range(lower, upper)
    })
}

/// A page of the latest values: the heads of the range (those not expired at `now_ts`).
pub(super) struct LatestScan {
    cursor: Cursor,
    page: PageBuilder,
    keys_only: bool,
    now_ts: Option<u64>,
}

impl LatestScan {
    pub(super) fn new(options: &ScanOptions) -> LatestScan {
        LatestScan {
            cursor: Cursor::new(options.start.clone(), options.end.clone(), options.reverse),
            page: PageBuilder::new(options),
            keys_only: options.keys_only,
            now_ts: None,
        }
    }

    /// Leaves out the values expired at `now_ts` (`None`: none counts as expired).
    pub(super) fn expiring_at(mut self, now_ts: Option<u64>) -> LatestScan {
        self.now_ts = now_ts;
        self
    }
}

/// Whether a head (its `d` record value) has expired at `now_ts` (`None`: nothing has).
fn expired(tree: &TreeRef, bytes: &[u8], now_ts: Option<u64>) -> Result<bool, StorageError> {
    let Some(now_ts) = now_ts else {
        return Ok(false);
    };
    let (_, expires_at) = mvcc::decode_version_expiry(tree.name(), bytes)?;
    Ok(!mvcc::live_at(expires_at, now_ts))
}

impl RangeRead for LatestScan {
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
        let Some(records) = data_records(tree, &self.cursor) else {
            return Ok(Ok(Held::Done));
        };
        for record in records {
            if !visits.allow_another() {
                return Ok(Ok(Held::Paused));
            }
            let (record_key, value) = record?;
            visits.visit(record_key.len() + value.len());
            let key = user_key(tree.name(), &record_key)?;
            if expired(tree, &value, self.now_ts)? {
                self.cursor.pass(&key);
                continue;
            }
            let (versioned, expires_at) = if self.keys_only {
                let (version, expires_at) = mvcc::decode_version_expiry(tree.name(), &value)?;
                let versioned = Versioned {
                    version,
                    value: Vec::new(),
                };
                (versioned, expires_at)
            } else {
                let head = mvcc::decode_head(tree.name(), &value)?;
                let expires_at = head.expires_at;
                (head.versioned(), expires_at)
            };
            // Reading one entry past the page is what tells whether more remain.
            if !self.page.offer(&key, versioned, expires_at) {
                return Ok(Ok(Held::Done));
            }
            self.cursor.pass(&key);
        }
        Ok(Ok(Held::Done))
    }

    fn cut(&mut self) {
        self.page.cut();
    }

    fn answer(self) -> ScanPage {
        self.page.finish(&self.cursor)
    }
}

/// A count of the keys of a range: the latest ones (not expired at `now_ts`), or those
/// present at `read_ts`.
pub(super) struct Count {
    cursor: Cursor,
    limit: u64,
    read_ts: Option<u64>,
    now_ts: Option<u64>,
    /// The last key counted (empty before the first): where a count that stops resumes.
    last_counted: Vec<u8>,
    result: CountResult,
}

impl Count {
    /// Counts at most `limit` keys of `[start, end)` (`None` end = no upper bound), the
    /// latest ones or (`read_ts`) those present at that timestamp.
    pub(super) fn new(start: Vec<u8>, end: Option<Vec<u8>>, limit: u64, read_ts: Option<u64>) -> Count {
        Count {
            cursor: Cursor::new(start, end, false),
            limit,
            read_ts,
            now_ts: None,
            last_counted: Vec::new(),
            result: CountResult::default(),
        }
    }

    /// Leaves out the latest values expired at `now_ts` (`None`: none counts as expired).
    pub(super) fn expiring_at(mut self, now_ts: Option<u64>) -> Count {
        self.now_ts = now_ts;
        self
    }

    /// Counts `key`, or answers `false` (and more) when the limit is reached. The key's
    /// bytes are copied into one reused buffer: counting allocates nothing per key.
    fn take(&mut self, key: &[u8]) -> bool {
        if self.result.count >= self.limit {
            self.result.more = true;
            return false;
        }
        self.result.count += 1;
        self.last_counted.clear();
        self.last_counted.extend_from_slice(key);
        true
    }
}

impl RangeRead for Count {
    type Answer = CountResult;

    fn read_ts(&self) -> Option<u64> {
        self.read_ts
    }

    fn hold(
        &mut self,
        tree: &TreeRef,
        history: Option<&mvcc::History>,
        visits: &mut Visits,
    ) -> Result<Result<Held, mvcc::BelowFloor>, StorageError> {
        if let (Some(read_ts), Some(history)) = (self.read_ts, history) {
            let mut cursor = self.cursor.clone();
            let held = for_each_at(tree, history, &mut cursor, read_ts, visits, |key, _, _| {
                if self.take(key) {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            });
            self.cursor = cursor;
            return held;
        }
        let Some(records) = data_records(tree, &self.cursor) else {
            return Ok(Ok(Held::Done));
        };
        // Data record keys are counted as they are (the data prefix and the user key): only
        // the last one is decoded.
        let mut last: Option<Vec<u8>> = None;
        let mut passed: Option<Vec<u8>> = None;
        let mut held = Held::Done;
        for record in records {
            if !visits.allow_another() {
                held = Held::Paused;
                break;
            }
            let (record_key, value) = record?;
            visits.visit(record_key.len() + value.len());
            if expired(tree, &value, self.now_ts)? {
                passed = Some(record_key);
                continue;
            }
            if self.result.count >= self.limit {
                self.result.more = true;
                break;
            }
            self.result.count += 1;
            last = Some(record_key);
            passed = None;
        }
        if let Some(last) = last {
            let key = user_key(tree.name(), &last)?;
            self.cursor.pass(&key);
            self.last_counted = key;
        }
        // Expired keys after the last one counted are passed too.
        if let Some(passed) = passed {
            self.cursor.pass(&user_key(tree.name(), &passed)?);
        }
        Ok(Ok(held))
    }

    fn cut(&mut self) {
        self.result.more = true;
    }

    fn answer(mut self) -> CountResult {
        if self.result.more && self.result.count > 0 {
            self.result.last_key = Some(self.last_counted);
        }
        self.result
    }
}

/// A page of a range as of `read_ts`.
pub(super) struct ScanAt {
    cursor: Cursor,
    page: PageBuilder,
    read_ts: u64,
}

impl ScanAt {
    pub(super) fn new(options: &ScanOptions, read_ts: u64) -> ScanAt {
        ScanAt {
            cursor: Cursor::new(options.start.clone(), options.end.clone(), options.reverse),
            page: PageBuilder::new(options),
            read_ts,
        }
    }
}

impl RangeRead for ScanAt {
    type Answer = ScanPage;

    fn read_ts(&self) -> Option<u64> {
        Some(self.read_ts)
    }

    fn hold(
        &mut self,
        tree: &TreeRef,
        history: Option<&mvcc::History>,
        visits: &mut Visits,
    ) -> Result<Result<Held, mvcc::BelowFloor>, StorageError> {
        let Some(history) = history else {
            return Err(StorageError::Engine(
                "a read at a timestamp without the history".to_string(),
            ));
        };
        let page = &mut self.page;
        for_each_at(
            tree,
            history,
            &mut self.cursor,
            self.read_ts,
            visits,
            |key, versioned, expires_at| {
                // Finding one entry past the page is what tells whether more remain.
                if page.offer(key, versioned, expires_at) {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            },
        )
    }

    fn cut(&mut self) {
        self.page.cut();
    }

    fn answer(self) -> ScanPage {
        self.page.finish(&self.cursor)
    }
}

/// Calls `visit` with every key of `cursor`'s range present as of `read_ts`, its version
/// then and that version's expiry, in scan order, until it breaks (`Done`) or the hold's `visits` run out (`Paused`);
/// the cursor passes every key looked at but the one `visit` refused. The candidates are the
/// heads of the range merged with the keys of the history (the caller holds the apply lock,
/// so both stay at one point between entries).
fn for_each_at(
    tree: &TreeRef,
    history: &mvcc::History,
    cursor: &mut Cursor,
    read_ts: u64,
    visits: &mut Visits,
    mut visit: impl FnMut(&[u8], Versioned, Option<u64>) -> ControlFlow<()>,
) -> Result<Result<Held, mvcc::BelowFloor>, StorageError> {
    if read_ts < history.floor() {
        // A key deleted after `read_ts` may have left no trace: nothing is certain.
        return Ok(Err(mvcc::BelowFloor {
            floor: history.floor(),
        }));
    }
    let reverse = cursor.reverse;
    let Some(mut heads) = data_records(tree, cursor) else {
        return Ok(Ok(Held::Done));
    };
    let mut next_head = || -> Result<Option<(Vec<u8>, mvcc::Head, usize)>, StorageError> {
        match heads.next() {
            Some(pair) => {
                let (key, bytes) = pair?;
                Ok(Some((
                    user_key(tree.name(), &key)?,
                    mvcc::decode_head(tree.name(), &bytes)?,
                    key.len() + bytes.len(),
                )))
            }
            None => Ok(None),
        }
    };
    let old_keys = history.keys_in(&cursor.start, cursor.end.as_deref());
    let mut old: Box<dyn Iterator<Item = &[u8]>> = if reverse {
        Box::new(old_keys.rev())
    } else {
        Box::new(old_keys)
    };
    let mut head = next_head()?;
    let mut old_key = old.next();
    let mut last: Option<Vec<u8>> = None;
    let held = loop {
        // The next candidate in scan order: a head, a key of the history, or both.
        let head_first = match (&head, old_key) {
            (None, None) => break Held::Done,
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (Some((key, _, _)), Some(old)) if key.as_slice() == old => None,
            (Some((key, _, _)), Some(old)) => Some((key.as_slice() < old) != reverse),
        };
        if !visits.allow_another() {
            break Held::Paused;
        }
        let (key, current) = match head_first {
            Some(false) => {
                let key = old_key.map(<[u8]>::to_vec).unwrap_or_default();
                old_key = old.next();
                visits.visit(key.len());
                (key, None)
            }
            both_or_head => {
                if both_or_head.is_none() {
                    old_key = old.next();
                }
                match head.take() {
                    Some((key, current, bytes)) => {
                        head = next_head()?;
                        visits.visit(bytes);
                        (key, Some(current))
                    }
                    None => break Held::Done,
                }
            }
        };
        match history.read(&key, current, read_ts) {
            Ok(Some((versioned, expires_at))) => {
                if visit(&key, versioned, expires_at).is_break() {
                    break Held::Done;
                }
            }
            Ok(None) => {}
            Err(below) => return Ok(Err(below)),
        }
        last = Some(key);
    };
    if let Some(last) = last {
        cursor.pass(&last);
    }
    Ok(Ok(held))
}
