//! The timestamp oracle's arithmetic, pure: the timestamp format, what one leader may hand
//! out in its term, and when it must persist a higher bound first.
//!
//! A timestamp is `physical_ms << 18 | logical` (PD's format): 46 bits of milliseconds since
//! the Unix epoch and 18 bits of counter, so up to 262,144 timestamps per millisecond before
//! the physical part runs ahead of the clock. Timestamp 0 is never handed out.
//!
//! The rule that makes timestamps increase across leaders: a leader hands out only timestamps
//! below `compose(limit_ms, 0)`, where `limit_ms` is a bound committed in the system group
//! (`Command::TsoAdvance`), and a new leader starts at that committed bound. Nothing here
//! reads a clock: the caller passes `now_ms`, and a clock that jumps back only slows the
//! physical part (timestamps keep rising from the last one handed out).

use std::ops::Range;

use crate::raft::types::TSO_MAX_PHYSICAL_MS;

/// Bits of the logical counter.
pub const LOGICAL_BITS: u32 = 18;
/// How far ahead of the clock (or of the last timestamp) a new bound is set.
pub const WINDOW_MS: u64 = 3_000;
/// A bound closer than this to the clock is renewed before it runs out.
pub const RENEW_MARGIN_MS: u64 = 1_000;
/// A clock reading past this is taken as this (a clock fault: timestamps hold 46 bits of
/// milliseconds).
const MAX_CLOCK_MS: u64 = TSO_MAX_PHYSICAL_MS - WINDOW_MS;

/// The timestamp of `physical_ms` and `logical`.
pub fn compose(physical_ms: u64, logical: u64) -> u64 {
    (physical_ms << LOGICAL_BITS) | (logical & ((1 << LOGICAL_BITS) - 1))
}

/// The physical part (milliseconds since the Unix epoch) of `ts`.
pub fn physical_ms(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

/// The logical part of `ts`.
pub fn logical(ts: u64) -> u64 {
    ts & ((1 << LOGICAL_BITS) - 1)
}

/// What a leader may hand out in one term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The system group's term this window belongs to.
    term: u64,
    /// The last timestamp handed out, or the one below the first this leader may hand out.
    last: u64,
    /// Committed bound: every timestamp handed out is below `compose(limit_ms, 0)`.
    limit_ms: u64,
}

/// The next step of an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Hand out these timestamps (already recorded as handed out).
    Issue(Range<u64>),
    /// Commit this bound first (`Command::TsoAdvance`), then [`Window::raise_limit`] and
    /// allocate again.
    Advance { limit_ms: u64 },
}

impl Window {
    /// The window of a leader of `term` whose system group has committed `limit_ms`: it
    /// starts at the bound, above everything any earlier leader could have handed out.
    pub fn new(term: u64, limit_ms: u64) -> Window {
        let limit_ms = limit_ms.min(TSO_MAX_PHYSICAL_MS);
        Window {
            term,
            last: compose(limit_ms, 0).saturating_sub(1),
            limit_ms,
        }
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    #[cfg(test)]
    pub fn limit_ms(&self) -> u64 {
        self.limit_ms
    }

    /// Allocates `count` (≥ 1) consecutive timestamps at `now_ms`: none below the clock,
    /// each above every one handed out before.
    pub fn allocate(&mut self, now_ms: u64, count: u64) -> Step {
        let now_ms = now_ms.min(MAX_CLOCK_MS);
        let count = count.max(1);
        let first = (self.last + 1).max(compose(now_ms, 0));
        let end = first.saturating_add(count);
        if end > compose(self.limit_ms, 0) {
            let needed_ms = physical_ms(end - 1).saturating_add(1);
            return Step::Advance {
                limit_ms: needed_ms
                    .max(now_ms)
                    .saturating_add(WINDOW_MS)
                    .min(TSO_MAX_PHYSICAL_MS),
            };
        }
        self.last = end - 1;
        Step::Issue(first..end)
    }

    /// Records a bound the system group committed (bounds only rise).
    pub fn raise_limit(&mut self, limit_ms: u64) {
        self.limit_ms = self.limit_ms.max(limit_ms);
    }

    /// The bound to commit now so that allocations at `now_ms` do not wait for one: `Some`
    /// once the clock (or the last timestamp) is within [`RENEW_MARGIN_MS`] of the bound.
    pub fn renewal(&self, now_ms: u64) -> Option<u64> {
        let ahead = now_ms.min(MAX_CLOCK_MS).max(physical_ms(self.last));
        let wanted = (ahead + WINDOW_MS).min(TSO_MAX_PHYSICAL_MS);
        (ahead + RENEW_MARGIN_MS >= self.limit_ms && wanted > self.limit_ms).then_some(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window of a leader whose term already committed `limit_ms`.
    fn with_room(limit_ms: u64) -> Window {
        let mut window = Window::new(1, 0);
        window.raise_limit(limit_ms);
        window
    }

    fn issue(window: &mut Window, now_ms: u64, count: u64) -> Range<u64> {
        match window.allocate(now_ms, count) {
            Step::Issue(range) => range,
            Step::Advance { limit_ms } => panic!("expected timestamps, got an advance to {limit_ms}"),
        }
    }

    #[test]
    fn the_format_splits_milliseconds_and_counter() {
        let ts = compose(1_700_000_000_000, 5);
        assert_eq!(physical_ms(ts), 1_700_000_000_000);
        assert_eq!(logical(ts), 5);
        assert!(compose(2, 0) > compose(1, (1 << LOGICAL_BITS) - 1));
    }

    /// A fresh cluster's first leader must commit a bound before it hands anything out.
    #[test]
    fn a_new_leader_commits_a_bound_first() {
        let mut window = Window::new(3, 0);
        assert_eq!(window.allocate(10_000, 1), Step::Advance { limit_ms: 13_001 });
        window.raise_limit(13_001);
        assert_eq!(
            issue(&mut window, 10_000, 2),
            compose(10_000, 0)..compose(10_000, 2)
        );
    }

    /// Timestamps rise within a millisecond, follow the clock, and never go back when it
    /// does.
    #[test]
    fn timestamps_rise_whatever_the_clock_does() {
        let mut window = with_room(100_000);
        let a = issue(&mut window, 50_000, 3);
        let b = issue(&mut window, 50_000, 1);
        assert_eq!(b.start, a.end);
        let c = issue(&mut window, 50_007, 1);
        assert_eq!(c.start, compose(50_007, 0));
        let back = issue(&mut window, 40_000, 1);
        assert_eq!(
            back.start, c.end,
            "a clock that went back does not lower timestamps"
        );
    }

    /// A new leader starts above its committed bound even when its clock is behind the
    /// earlier leader's: whatever the old leader handed out was below that bound.
    #[test]
    fn a_later_leader_starts_above_the_bound() {
        let mut old = with_room(80_000);
        let handed_out = issue(&mut old, 79_999, 10);
        assert!(handed_out.end <= compose(80_000, 0));
        let mut new = Window::new(2, 80_000);
        assert_eq!(new.allocate(60_000, 1), Step::Advance { limit_ms: 83_001 });
        new.raise_limit(83_001);
        let first = issue(&mut new, 60_000, 1);
        assert!(first.start >= handed_out.end);
        assert_eq!(first.start, compose(80_000, 0));
    }

    /// A burst larger than the counter's room in one millisecond spills into the next
    /// milliseconds, and past the bound asks for a higher one.
    #[test]
    fn a_burst_spills_into_later_milliseconds_up_to_the_bound() {
        let mut window = with_room(10_002);
        let big = issue(&mut window, 10_000, 1 << LOGICAL_BITS);
        assert_eq!(big, compose(10_000, 0)..compose(10_001, 0));
        let next = issue(&mut window, 10_000, 1);
        assert_eq!(next.start, compose(10_001, 0));
        match window.allocate(10_000, 1 << LOGICAL_BITS) {
            Step::Advance { limit_ms } => assert!(compose(limit_ms, 0) > compose(10_002, 1)),
            other => panic!("expected an advance, got {other:?}"),
        }
    }

    /// A clock past what a timestamp can hold is a clock fault: no overflow, no wrap, and
    /// timestamps keep rising until the 46 bits run out.
    #[test]
    fn a_clock_beyond_the_format_neither_wraps_nor_panics() {
        let mut window = with_room(0);
        let step = window.allocate(u64::MAX, 1);
        let Step::Advance { limit_ms } = step else {
            panic!("expected an advance, got {step:?}");
        };
        assert_eq!(limit_ms, TSO_MAX_PHYSICAL_MS);
        window.raise_limit(limit_ms);
        let first = issue(&mut window, u64::MAX, 1);
        let second = issue(&mut window, u64::MAX, 1);
        assert!(second.start > first.start);
        assert!(first.start >= compose(MAX_CLOCK_MS, 0));
        assert_eq!(
            window.renewal(u64::MAX),
            None,
            "no bound beyond the maximum to ask for"
        );
        // The last millisecond runs out: an advance that cannot rise, never a wrap.
        let rest = compose(TSO_MAX_PHYSICAL_MS, 0) - second.end;
        assert!(matches!(
            window.allocate(u64::MAX, rest + 1),
            Step::Advance { .. }
        ));
    }

    /// The bound is renewed a margin before the clock reaches it, and bounds never fall.
    #[test]
    fn renewal_comes_before_the_bound_runs_out() {
        let mut window = with_room(20_000);
        assert_eq!(window.renewal(18_000), None);
        assert_eq!(window.renewal(19_000), Some(22_000));
        window.raise_limit(22_000);
        window.raise_limit(5_000);
        assert_eq!(window.limit_ms(), 22_000);
        assert_eq!(window.renewal(19_000), None);
    }
}
