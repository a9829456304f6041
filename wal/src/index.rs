//! The in-memory index: where every live entry and value of every group is, and how many
//! of them each segment still holds (a segment holding none can be deleted).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::ops::Bound;
use std::sync::Arc;

use crate::record::Record;

/// Where an entry's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

/// A segment file and how many live entries and values it holds. The file is `None` while
/// the segment is only queued (the writer thread creates it when it gets there).
pub(crate) struct Segment {
    pub file: Option<Arc<File>>,
    pub refs: usize,
}

/// One group's live entries (by index; gaps allowed, as a log may have one while a
/// snapshot install and its purge are in flight) and small values.
#[derive(Default)]
pub(crate) struct GroupIndex {
    pub entries: BTreeMap<u64, Loc>,
    /// Sum of the entries' lengths, kept as they come and go (read by every metrics scrape,
    /// which must not walk every entry of every group under the state lock).
    pub entry_bytes: u64,
    /// Value and the segment holding its record.
    pub meta: BTreeMap<u8, (Vec<u8>, u64)>,
}

impl GroupIndex {
    /// Bytes of the live entries and values (what a rewrite would copy).
    pub fn live_bytes(&self) -> u64 {
        let meta: u64 = self.meta.values().map(|(value, _)| value.len() as u64).sum();
        self.entry_bytes + meta
    }

    /// Whether any live entry or value of this group is in `segment`.
    pub fn references(&self, segment: u64) -> bool {
        self.entries.values().any(|loc| loc.segment == segment)
            || self.meta.values().any(|(_, held)| *held == segment)
    }
}

/// Every group's index and every segment's reference count.
#[derive(Default)]
pub(crate) struct Index {
    pub groups: HashMap<u64, GroupIndex>,
    pub segments: BTreeMap<u64, Segment>,
}

impl Index {
    /// Applies `record`, read from (or just written to) the frame at `frame_offset` of
    /// `segment`. `entry_base` is added to the entries' offsets to make them absolute.
    pub fn apply(&mut self, segment: u64, entry_base: u64, record: &Record<'_>) {
        match record {
            Record::Append {
                group,
                first,
                entries,
            } => {
                for (i, (offset, len)) in entries.iter().enumerate() {
                    let loc = Loc {
                        segment,
                        offset: entry_base + *offset as u64,
                        len: *len,
                    };
                    self.add_ref(segment);
                    let index = self.group(*group);
                    let old = index.entries.insert(first + i as u64, loc);
                    index.entry_bytes += u64::from(*len);
                    if let Some(old) = old {
                        index.entry_bytes = index.entry_bytes.saturating_sub(u64::from(old.len));
                        self.release(old.segment);
                    }
                }
            }
            Record::Truncate { group, from } => {
                let Some(index) = self.groups.get_mut(group) else {
                    return;
                };
                let removed = index.entries.split_off(from);
                index.entry_bytes = index.entry_bytes.saturating_sub(bytes_of(&removed));
                self.release_all(removed.values().map(|loc| loc.segment));
            }
            Record::Purge { group, upto } => {
                let Some(index) = self.groups.get_mut(group) else {
                    return;
                };
                let kept = match upto.checked_add(1) {
                    Some(next) => index.entries.split_off(&next),
                    None => BTreeMap::new(),
                };
                let removed = std::mem::replace(&mut index.entries, kept);
                index.entry_bytes = index.entry_bytes.saturating_sub(bytes_of(&removed));
                self.release_all(removed.values().map(|loc| loc.segment));
            }
            Record::Meta { group, key, value } => {
                self.add_ref(segment);
                let old = self.group(*group).meta.insert(*key, (value.to_vec(), segment));
                if let Some((_, old)) = old {
                    self.release(old);
                }
            }
            Record::Drop { group } => {
                if let Some(index) = self.groups.remove(group) {
                    self.release_all(index.entries.values().map(|loc| loc.segment));
                    self.release_all(index.meta.values().map(|(_, segment)| *segment));
                }
            }
        }
    }

    /// The locations of `group`'s entries in `(start, end)`, ascending.
    pub fn locs(&self, group: u64, start: Bound<u64>, end: Bound<u64>) -> Vec<(u64, Loc)> {
        match self.groups.get(&group) {
            Some(index) if range_is_valid(start, end) => index
                .entries
                .range((start, end))
                .map(|(i, loc)| (*i, *loc))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn group(&mut self, group: u64) -> &mut GroupIndex {
        self.groups.entry(group).or_default()
    }

    fn add_ref(&mut self, segment: u64) {
        if let Some(held) = self.segments.get_mut(&segment) {
            held.refs += 1;
        }
    }

    fn release(&mut self, segment: u64) {
        if let Some(held) = self.segments.get_mut(&segment) {
            held.refs = held.refs.saturating_sub(1);
        }
    }

    fn release_all(&mut self, segments: impl Iterator<Item = u64>) {
        for segment in segments {
            self.release(segment);
        }
    }
}

/// Sum of the lengths of `entries`.
fn bytes_of(entries: &BTreeMap<u64, Loc>) -> u64 {
    entries.values().map(|loc| u64::from(loc.len)).sum()
}

/// `BTreeMap::range` panics on an empty or inverted range; such a range holds nothing.
fn range_is_valid(start: Bound<u64>, end: Bound<u64>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s <= e,
        (Bound::Included(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e))
        | (Bound::Excluded(s), Bound::Excluded(e)) => s < e,
        _ => true,
    }
}
