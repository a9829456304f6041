//! What a shard keeps about its de-duplication tables besides their records: the record
//! count of each table and the shard's de-duplication clock (see [`super`]), in one record.

use serde::Serialize;

use super::RequestList;
use crate::raft::decode;
use crate::raft::state_machine::layout::{COUNTS_KEY, RANGE_LIST_PREFIX, WRITE_LIST_PREFIX};
use crate::storage::{prefix_bounds, StorageError, TreeRef};

/// The record counts of both tables and the shard's de-duplication clock (`COUNTS_KEY`;
/// absent = all zero): postcard `(writes, delete_ranges, clock_ms)`. Written before the
/// clock, the record holds the two counts only, and the clock is then the newest request
/// list's.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub(in crate::raft::state_machine) struct Counts {
    pub(in crate::raft::state_machine) writes: u64,
    pub(in crate::raft::state_machine) delete_ranges: u64,
    /// The highest clock the shard's entries carried (see [`super`]).
    pub(in crate::raft::state_machine) clock_ms: u64,
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
        let clock_ms = match rest.is_empty() {
            true => newest_list_clock(tree)?,
            false => postcard::from_bytes(rest).map_err(corrupt)?,
        };
        Ok(Counts {
            writes,
            delete_ranges,
            clock_ms,
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
