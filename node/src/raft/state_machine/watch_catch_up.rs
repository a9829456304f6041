//! A watch's catch-up (`watches.rs`): the changes of a range after a timestamp, read from
//! the heads and the history in memory, key by key in key order, one page per hold of the
//! apply lock.
//!
//! A key's changes come from its versions in memory, oldest first, then its head: each
//! version was put at its commit timestamp; one superseded at a timestamp at which no
//! version was put was deleted then. Versions evicted from the history were superseded at
//! or below its floor, so from any timestamp at or above the floor nothing is missing.

use super::layout::{data_bounds, user_key};
use super::mvcc::{self, Head};
use crate::storage::{StorageError, TreeRef};

/// What a queued change costs beyond its key and value.
const CHANGE_OVERHEAD: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Put,
    Delete,
}

/// One change of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub key: Vec<u8>,
    /// The value put (empty for a delete, or when the watch asked for keys only).
    pub value: Vec<u8>,
    /// The version a put made (0 for a delete).
    pub version: u64,
    pub commit_ts: u64,
}

impl Change {
    /// What the change costs in a queue or a message.
    pub fn bytes(&self) -> usize {
        self.key.len() + self.value.len() + CHANGE_OVERHEAD
    }
}

/// The changes of `key` committed after `after_ts`, oldest first, from its head and its
/// versions in memory (the caller checked `after_ts` is not below the history's floor).
pub(super) fn key_changes(
    history: &mvcc::History,
    key: &[u8],
    head: Option<&Head>,
    after_ts: u64,
    keys_only: bool,
) -> Vec<Change> {
    let value = |bytes: &[u8]| if keys_only { Vec::new() } else { bytes.to_vec() };
    let old: Vec<mvcc::OldVersionRef<'_>> = history.versions_of(key).collect();
    let mut changes = Vec::new();
    for (i, version) in old.iter().enumerate() {
        if version.commit_ts > after_ts {
            changes.push(Change {
                kind: ChangeKind::Put,
                key: key.to_vec(),
                value: value(version.value),
                version: version.version,
                commit_ts: version.commit_ts,
            });
        }
        let next_put = old
            .get(i + 1)
            .map(|next| next.commit_ts)
            .or(head.map(|head| head.commit_ts));
        // Superseded by no put at that timestamp: a delete.
        if next_put != Some(version.superseded_ts) && version.superseded_ts > after_ts {
            changes.push(Change {
                kind: ChangeKind::Delete,
                key: key.to_vec(),
                value: Vec::new(),
                version: 0,
                commit_ts: version.superseded_ts,
            });
        }
    }
    if let Some(head) = head.filter(|head| head.commit_ts > after_ts) {
        changes.push(Change {
            kind: ChangeKind::Put,
            key: key.to_vec(),
            value: value(&head.value),
            version: head.version,
            commit_ts: head.commit_ts,
        });
    }
    changes
}

/// A catch-up page: the changes of the keys it looked at, and where the next page starts
/// (`None`: the catch-up is done).
pub(super) struct CatchUpPage {
    pub changes: Vec<Change>,
    pub next: Option<Vec<u8>>,
}

/// What a catch-up page reads: the changes after `after_ts`, with values or not, of at
/// most `keys_per_hold` keys or `max_bytes` of changes (a key's changes whole).
#[derive(Debug, Clone, Copy)]
pub(super) struct CatchUpRead {
    pub after_ts: u64,
    pub keys_only: bool,
    pub keys_per_hold: usize,
    pub max_bytes: usize,
}

impl CatchUpRead {
    /// Reads the keys of `[start, end)` in key order, under the apply lock.
    pub(super) fn read(
        &self,
        tree: &TreeRef,
        history: &mvcc::History,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    ) -> Result<Result<CatchUpPage, mvcc::BelowFloor>, StorageError> {
        let CatchUpRead {
            after_ts,
            keys_only,
            keys_per_hold,
            max_bytes,
        } = *self;
        if after_ts < history.floor() {
            return Ok(Err(mvcc::BelowFloor {
                floor: history.floor(),
            }));
        }
        let Some((lower, upper)) = data_bounds(&start, end.as_deref()) else {
            return Ok(Ok(CatchUpPage {
                changes: Vec::new(),
                next: None,
            }));
        };
        let mut records = tree.range(lower, upper);
        let mut next_head = || -> Result<Option<(Vec<u8>, Head)>, StorageError> {
            match records.next() {
                Some(pair) => {
                    let (record_key, value) = pair?;
                    Ok(Some((
                        user_key(tree.name(), &record_key)?,
                        mvcc::decode_head(tree.name(), &value)?,
                    )))
                }
                None => Ok(None),
            }
        };
        let mut old_keys = history.keys_in(&start, end.as_deref());
        let mut head = next_head()?;
        let mut old = old_keys.next();
        let mut changes = Vec::new();
        let mut bytes = 0;
        let mut visited = 0;
        loop {
            // The next key in order: a head's, a key of the history's, or both.
            let key = match (&head, old) {
                (None, None) => return Ok(Ok(CatchUpPage { changes, next: None })),
                (Some((head_key, _)), Some(old)) if old < head_key.as_slice() => old.to_vec(),
                (Some((head_key, _)), _) => head_key.clone(),
                (None, Some(old)) => old.to_vec(),
            };
            if visited >= keys_per_hold || (bytes >= max_bytes && !changes.is_empty()) {
                return Ok(Ok(CatchUpPage {
                    changes,
                    next: Some(key),
                }));
            }
            visited += 1;
            let current = match head.take() {
                Some((head_key, current)) if head_key == key => {
                    head = next_head()?;
                    Some(current)
                }
                other => {
                    head = other;
                    None
                }
            };
            if old == Some(key.as_slice()) {
                old = old_keys.next();
            }
            for change in key_changes(history, &key, current.as_ref(), after_ts, keys_only) {
                bytes += change.bytes();
                changes.push(change);
            }
        }
    }
}
