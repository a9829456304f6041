//! What a shard keeps about its de-duplication tables besides their records: how many
//! requests each table recorded in buckets, how many records of the previous layout it
//! still holds, and the shard's de-duplication clock (see [`super`]), in one record.

use serde::Serialize;

use super::older::RequestList;
use crate::raft::decode;
use crate::raft::state_machine::layout::{COUNTS_KEY, RANGE_LIST_PREFIX, WRITE_LIST_PREFIX};
use crate::storage::{prefix_bounds, StorageError, TreeRef};

/// The counts of both tables and the shard's de-duplication clock (`COUNTS_KEY`; absent =
/// all zero): postcard `(writes, delete_ranges, clock_ms, writes_recorded,
/// delete_ranges_recorded)`. Older builds wrote a prefix of it: before buckets the first
/// three fields (nothing recorded in buckets yet), before the clock the first two (the
/// clock is then the newest request list's).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub(in crate::raft::state_machine) struct Counts {
    /// Write records of the previous layout still held (`v`, `w`).
    pub(in crate::raft::state_machine) writes: u64,
    /// Delete-range records of the previous layout still held (`u`, `g`).
    pub(in crate::raft::state_machine) delete_ranges: u64,
    /// The highest clock the shard's entries carried (see [`super`]).
    pub(in crate::raft::state_machine) clock_ms: u64,
    /// Writes recorded in buckets so far: the sequence number of the latest.
    pub(in crate::raft::state_machine) writes_recorded: u64,
    /// Delete-ranges recorded in buckets so far.
    pub(in crate::raft::state_machine) delete_ranges_recorded: u64,
}

impl Counts {
    /// The counts and clock as `tree` holds them.
    pub(in crate::raft::state_machine) fn read(tree: &TreeRef) -> Result<Counts, StorageError> {
        let Some(bytes) = tree.get(COUNTS_KEY)? else {
            return Ok(Counts::default());
        };
        let corrupt = |err: postcard::Error| StorageError::Corrupt {
            tree: tree.name().to_string(),
            detail: format!("de-duplication counts: {err}"),
        };
        let ((writes, delete_ranges), rest) =
            postcard::take_from_bytes::<(u64, u64)>(&bytes).map_err(corrupt)?;
        if rest.is_empty() {
            return Ok(Counts {
                writes,
                delete_ranges,
                clock_ms: newest_list_clock(tree)?,
                ..Counts::default()
            });
        }
        let (clock_ms, rest) = postcard::take_from_bytes::<u64>(rest).map_err(corrupt)?;
        let (writes_recorded, delete_ranges_recorded) = match rest.is_empty() {
            true => (0, 0),
            false => postcard::from_bytes::<(u64, u64)>(rest).map_err(corrupt)?,
        };
        Ok(Counts {
            writes,
            delete_ranges,
            clock_ms,
            writes_recorded,
            delete_ranges_recorded,
        })
    }
}

/// The shard's de-duplication clock as `tree` holds it (0: no entry carried one yet).
#[cfg(test)]
pub(in crate::raft::state_machine) fn clock_ms(tree: &TreeRef) -> Result<u64, StorageError> {
    Ok(Counts::read(tree)?.clock_ms)
}

/// The clock of the newest request list of either table (0: none): the shard's clock in a
/// tree written before the clock was kept with the counts.
fn newest_list_clock(tree: &TreeRef) -> Result<u64, StorageError> {
    let mut newest = 0;
    for prefix in [WRITE_LIST_PREFIX, RANGE_LIST_PREFIX] {
        let (start, end) = prefix_bounds(&[prefix]);
        if let Some((_, value)) = tree.last_in(start, end)? {
            let list: RequestList = decode(tree.name(), &value)?;
            newest = newest.max(list.clock_ms);
        }
    }
    Ok(newest)
}
