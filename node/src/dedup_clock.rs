//! The de-duplication clock a shard leader stamps on its write entries: the clock its
//! replica had applied when its term began, plus the time its *monotonic* clock measured
//! since — never its wall clock.
//!
//! A shard forgets a request's record once its de-duplication clock has moved more than
//! the window past the record's (`raft/state_machine/dedup/`, invariant 5). That clock is
//! the highest stamp its entries carried. Were the stamps wall clocks, a leader whose clock
//! jumped five minutes ahead would age every record by five minutes at once, and a retry
//! one second after its first attempt could apply twice (issue 14). Monotonic clocks do not
//! jump with the wall clock (NTP steps, a clock nemesis); lease reads already trust their
//! rates.
//!
//! Why the shard's clock then moves no faster than real time: a leader of term `T`
//! anchors at its first proposal in `T` (after `T` began) at the clock `A` its replica had
//! applied, and stamps `A + elapsed`. Take a record made by entry `E` and a later entry `G`
//! of this leader. If the replica had applied `E` when it anchored, `A` exceeds `E`'s clock
//! by at most the real time from `E`'s proposal to the anchor (by induction over the log),
//! so `G`'s stamp exceeds it by at most the time from `E`'s proposal to `G`'s. If not, `A`
//! is at most `E`'s clock (the clock is a running maximum along the log) and `E` was
//! proposed before the anchor (in an earlier term) or after it by this same leader (whose
//! stamps then differ by exactly the time between them). So a retry proposed within the
//! window of its first attempt finds its record, whatever the wall clocks do.
//!
//! The wall clock is read once, when the shard's clock was never set (no entry carried
//! one): it only gives a new shard's clock a starting point, before there is a record to
//! age. A leader of a shard whose entries carried wall clocks (written before this clock)
//! continues from the highest of them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::raft::state_machine::GroupState;

/// Where one term's stamps start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Anchor {
    term: u64,
    /// The stamp at `at`.
    clock_ms: u64,
    at: Instant,
}

impl Anchor {
    /// The anchor of a leader of `term` whose replica applied the shard clock
    /// `applied_clock_ms` (0: never set, then `wall_ms` starts it), taken at `at`.
    fn new(term: u64, applied_clock_ms: u64, wall_ms: u64, at: Instant) -> Anchor {
        let clock_ms = match applied_clock_ms {
            0 => wall_ms,
            applied => applied,
        };
        Anchor { term, clock_ms, at }
    }

    /// The stamp at `now`: the anchor's plus the monotonic time since.
    fn stamp(&self, now: Instant) -> u64 {
        let elapsed_ms = now.saturating_duration_since(self.at).as_millis();
        self.clock_ms
            .saturating_add(u64::try_from(elapsed_ms).unwrap_or(u64::MAX))
    }
}

/// One shard replica's stamper (used while it leads, under the shard's proposing lock, so
/// its stamps enter the log in order).
pub struct DedupClock {
    state: Arc<GroupState>,
    anchor: Mutex<Option<Anchor>>,
    /// NEGATIVE CONTROL ONLY: stamp the wall clock, as leaders did before issue 14.
    unsafe_wall_clock: bool,
}

impl DedupClock {
    /// The stamper of the replica whose state is `state`; `unsafe_wall_clock` is the
    /// `--unsafe-dedup-wall-clock` negative control.
    pub fn new(state: Arc<GroupState>, unsafe_wall_clock: bool) -> DedupClock {
        DedupClock {
            state,
            anchor: Mutex::new(None),
            unsafe_wall_clock,
        }
    }

    /// The stamp (`issued_at_ms`) of a write entry this replica proposes now as the leader
    /// of `term` (checked by the caller).
    pub fn stamp(&self, term: u64) -> u64 {
        let wall_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        });
        self.stamp_at(term, Instant::now(), wall_ms)
    }

    /// [`DedupClock::stamp`] at monotonic time `now`, when the wall clock reads `wall_ms`.
    fn stamp_at(&self, term: u64, now: Instant, wall_ms: u64) -> u64 {
        if self.unsafe_wall_clock {
            return wall_ms;
        }
        let mut anchor = self.anchor.lock().unwrap_or_else(PoisonError::into_inner);
        let current = match *anchor {
            Some(current) if current.term == term => current,
            _ => *anchor.insert(Anchor::new(term, self.state.dedup_clock_ms(), wall_ms, now)),
        };
        current.stamp(now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::storage::RaftStateMachine;
    use openraft::EntryPayload;

    use super::*;
    use crate::raft::state_machine::test_support::{log_id, open_with_policy};
    use crate::raft::state_machine::{DedupPolicy, StateMachine};
    use crate::raft::types::{Command, CommandResult, Entry, WriteCommand, WriteOp, WriteOutcome};

    const SECOND: Duration = Duration::from_secs(1);
    const FIVE_MINUTES_MS: u64 = 5 * 60 * 1000;

    /// Stamps move with the monotonic clock only; a new term anchors at the clock the
    /// replica applied; only a shard that never had a clock starts from the wall clock.
    #[test]
    fn stamps_follow_the_monotonic_clock_from_the_applied_clock() {
        let start = Instant::now();
        let fresh = Anchor::new(2, 0, 1_000_000, start);
        assert_eq!(
            fresh.stamp(start),
            1_000_000,
            "a new shard starts at the wall clock"
        );
        assert_eq!(fresh.stamp(start + 3 * SECOND), 1_003_000);
        let later = Anchor::new(3, 1_003_000, 9_999_999_999, start + 10 * SECOND);
        assert_eq!(
            later.stamp(start + 10 * SECOND),
            1_003_000,
            "the applied clock, not the wall clock"
        );
        assert_eq!(later.stamp(start + 12 * SECOND), 1_005_000);
        assert_eq!(later.stamp(start), 1_003_000, "never before the anchor");
    }

    /// A write entry at `index` putting `key` = `value` under request id `[id; 16]`,
    /// stamped `issued_at_ms`.
    fn put(index: u64, id: u8, key: &[u8], value: u8, issued_at_ms: u64) -> Entry {
        Entry {
            log_id: log_id(2, index),
            payload: EntryPayload::Normal(Command::Write(vec![WriteCommand {
                request_id: [id; 16],
                issued_at_ms,
                ops: vec![WriteOp {
                    key: key.to_vec(),
                    value: Some(vec![value]),
                    expected_version: None,
                    expiry: Default::default(),
                }],
            }])),
        }
    }

    /// The version a write entry reports for its only op.
    fn version(results: Vec<CommandResult>) -> u64 {
        match results.as_slice() {
            [CommandResult::Write(outcomes)] => match outcomes.as_slice() {
                [WriteOutcome::Applied(results)] => results[0].version,
                other => panic!("an applied write expected, got {other:?}"),
            },
            other => panic!("a write result expected, got {other:?}"),
        }
    }

    /// A request, then its leader's wall clock jumps five minutes ahead while it stamps
    /// more requests than the last `min_records`, then the request is retried ten seconds
    /// after its first attempt: returns the versions of the first attempt and the retry,
    /// and the key's version after both.
    async fn retry_after_a_wall_clock_jump(unsafe_wall_clock: bool) -> (u64, u64, u64) {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = DedupPolicy {
            window_ms: 60_000,
            min_records: 2,
            max_records: 1_000,
        };
        let (_engine, state) = open_with_policy(dir.path(), policy);
        let mut sm = StateMachine::new(state.clone());
        let clock = DedupClock::new(state.clone(), unsafe_wall_clock);
        let start = Instant::now();
        let wall_ms = 1_700_000_000_000;
        let stamp = clock.stamp_at(2, start, wall_ms);
        let first = version(sm.apply(vec![put(1, 1, b"k", 1, stamp)]).await.expect("apply"));
        for index in 2..=6 {
            let elapsed = (index - 1) * SECOND.as_millis() as u64;
            let stamp = clock.stamp_at(
                2,
                start + Duration::from_millis(elapsed),
                wall_ms + FIVE_MINUTES_MS + elapsed,
            );
            sm.apply(vec![put(index, index as u8, b"other", 2, stamp)])
                .await
                .expect("apply");
        }
        let stamp = clock.stamp_at(2, start + 10 * SECOND, wall_ms + FIVE_MINUTES_MS + 10_000);
        let retry = version(
            sm.apply(vec![put(7, 1, b"k", 1, stamp)])
                .await
                .expect("apply retry"),
        );
        let stored = state.get(b"k").await.expect("get").expect("present");
        (first, retry, stored.version)
    }

    /// Issue 14, defect 1: a leader whose wall clock jumps five minutes ahead (past the
    /// window) does not age records: a retry ten seconds after its first attempt, beyond
    /// the last `min_records` requests, gets its first outcome and writes nothing.
    #[tokio::test]
    async fn a_wall_clock_jump_does_not_make_a_retry_apply_twice() {
        let (first, retry, stored) = retry_after_a_wall_clock_jump(false).await;
        assert_eq!((first, retry, stored), (1, 1, 1), "the retry is the first write");
    }

    /// Negative control: stamped with the wall clock (before the fix), the same retry
    /// applies a second time.
    #[tokio::test]
    async fn negative_control_wall_clock_stamps_apply_the_retry_twice() {
        let (first, retry, stored) = retry_after_a_wall_clock_jump(true).await;
        assert_eq!((first, retry, stored), (1, 7, 7), "the retry wrote again");
    }

    /// A new leader continues from the clock its replica applied, whatever its wall clock
    /// says, and a replica that restarted continues from the clock in its tree.
    #[tokio::test]
    async fn a_new_leader_continues_from_the_applied_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, state) = open_with_policy(dir.path(), DedupPolicy::with_window(60_000));
        let mut sm = StateMachine::new(state.clone());
        let start = Instant::now();
        let leader = DedupClock::new(state.clone(), false);
        let stamp = leader.stamp_at(2, start, 5_000_000);
        assert_eq!(stamp, 5_000_000);
        sm.apply(vec![put(1, 1, b"k", 1, stamp + 2_000)])
            .await
            .expect("apply");
        assert_eq!(state.dedup_clock_ms(), 5_002_000);
        // Another replica of the group leads term 3 with a wall clock ten minutes ahead.
        let next = DedupClock::new(state.clone(), false);
        assert_eq!(
            next.stamp_at(3, start + SECOND, 5_000_000 + 2 * FIVE_MINUTES_MS),
            5_002_000
        );
        // A stamp below the clock (an anchor taken before the last entries were applied)
        // leaves the clock where it is.
        sm.apply(vec![put(2, 2, b"k", 2, 5_001_000)])
            .await
            .expect("apply");
        assert_eq!(state.dedup_clock_ms(), 5_002_000);
        drop((sm, leader, next, state, engine));
        let (_engine, reopened) = open_with_policy(dir.path(), DedupPolicy::with_window(60_000));
        assert_eq!(reopened.dedup_clock_ms(), 5_002_000, "kept with the counts");
    }
}
