//! Where a watch got to on each shard (`Kv.Watch`), and which re-sent events to drop when
//! it resumes: routers keep one per shard stream they follow, clients one per watch.
//!
//! A shard's progress `P` says every change committed at or below `P` was delivered. A
//! transaction commits at its own timestamp, which may be below what a shard applied, so
//! events above `P` may have been delivered already when a watch resumes from `P`: they
//! are remembered (key and commit timestamp) until the progress passes them, and a resumed
//! stream's copies are dropped.

use std::collections::{BTreeMap, HashSet};

use crate::v1::{ShardProgress, WatchEvent};

/// Most events remembered above a shard's progress; beyond, [`WatchPosition::admit`] fails.
pub const MAX_EVENTS_ABOVE_PROGRESS: usize = 65_536;

/// Too many events above a shard's progress to remember.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyAboveProgress {
    pub shard_id: u32,
}

#[derive(Debug, Default, Clone)]
struct Shard {
    progress: u64,
    above: HashSet<(Vec<u8>, u64)>,
}

/// Per shard: the progress and the events delivered above it.
#[derive(Debug, Default, Clone)]
pub struct WatchPosition {
    shards: BTreeMap<u32, Shard>,
}

impl WatchPosition {
    /// A position resuming from `resume` (as a previous stream's progress named it).
    pub fn from_progress(resume: &[ShardProgress]) -> WatchPosition {
        let mut position = WatchPosition::default();
        for shard in resume {
            position.advance(shard.shard_id, shard.ts);
        }
        position
    }

    /// Whether `event` is new (and then remembers it); `Err` when too many events wait
    /// above their shard's progress.
    pub fn admit(&mut self, event: &WatchEvent) -> Result<bool, TooManyAboveProgress> {
        let shard = self.shards.entry(event.shard_id).or_default();
        if event.commit_ts <= shard.progress {
            return Ok(false);
        }
        if shard.above.len() >= MAX_EVENTS_ABOVE_PROGRESS {
            return Err(TooManyAboveProgress {
                shard_id: event.shard_id,
            });
        }
        Ok(shard.above.insert((event.key.clone(), event.commit_ts)))
    }

    /// Every change of `shard_id` at or below `ts` was delivered.
    pub fn advance(&mut self, shard_id: u32, ts: u64) {
        let shard = self.shards.entry(shard_id).or_default();
        if ts > shard.progress {
            shard.progress = ts;
            shard.above.retain(|(_, commit_ts)| *commit_ts > ts);
        }
    }

    /// The progress of `shard_id` (0: none yet).
    pub fn progress(&self, shard_id: u32) -> u64 {
        self.shards.get(&shard_id).map_or(0, |shard| shard.progress)
    }

    /// The progress of every shard with one, to resume from.
    pub fn resume(&self) -> Vec<ShardProgress> {
        self.shards
            .iter()
            .filter(|(_, shard)| shard.progress > 0)
            .map(|(shard_id, shard)| ShardProgress {
                shard_id: *shard_id,
                ts: shard.progress,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(shard_id: u32, key: &[u8], commit_ts: u64) -> WatchEvent {
        WatchEvent {
            key: key.to_vec(),
            commit_ts,
            shard_id,
            ..WatchEvent::default()
        }
    }

    /// Events at or below the progress, and events seen above it, are dropped; passing
    /// progress forgets what it covers.
    #[test]
    fn resent_events_are_dropped() {
        let mut position = WatchPosition::default();
        assert_eq!(position.admit(&event(1, b"a", 10)), Ok(true));
        assert_eq!(position.admit(&event(1, b"a", 10)), Ok(false), "a copy");
        position.advance(1, 8);
        assert_eq!(position.admit(&event(1, b"a", 10)), Ok(false), "still above 8");
        assert_eq!(position.admit(&event(1, b"b", 7)), Ok(false), "covered by 8");
        assert_eq!(position.admit(&event(2, b"b", 7)), Ok(true), "another shard");
        position.advance(1, 10);
        assert_eq!(position.resume(), vec![ShardProgress { shard_id: 1, ts: 10 }]);
        assert_eq!(WatchPosition::from_progress(&position.resume()).progress(1), 10);
    }
}
