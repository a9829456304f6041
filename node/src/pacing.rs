//! Pacing of a periodic duty that looks at every group: after a quiet pass (nothing
//! pending) the next few ticks are skipped, unless the ring epoch moved. Pure, so the
//! rule is tested without timers.
//!
//! The system leader's membership pass fetches every replica's status from every member;
//! run every second with 1024 shards it was a large part of an idle node's CPU. While
//! quiet it runs every [`QUIET_PASS_EVERY`] intervals, and never skips more than a quarter
//! of the dead-node timeout (gossip keeps the members' liveness in between).

/// Ticks per pass while quiet.
pub const QUIET_PASS_EVERY: u64 = 10;

/// Which ticks of a periodic duty run a pass.
#[derive(Debug, Clone)]
pub struct QuietPacer {
    /// Ticks skipped after a quiet pass.
    skip_after_quiet: u64,
    /// Ticks left to skip.
    skip: u64,
    /// The ring epoch the last pass saw.
    seen_epoch: Option<u64>,
}

impl QuietPacer {
    /// Runs a pass every `quiet_every` ticks while quiet (at least every tick).
    pub fn new(quiet_every: u64) -> QuietPacer {
        QuietPacer {
            skip_after_quiet: quiet_every.saturating_sub(1),
            skip: 0,
            seen_epoch: None,
        }
    }

    /// The pacer of a duty ticking every `interval_ms` that must notice a member silent for
    /// `dead_node_timeout_ms` (0 = never declared dead).
    pub fn for_duty(interval_ms: u64, dead_node_timeout_ms: u64) -> QuietPacer {
        let quarter_ticks = (dead_node_timeout_ms / 4) / interval_ms.max(1);
        QuietPacer::new(match dead_node_timeout_ms {
            0 => QUIET_PASS_EVERY,
            _ => QUIET_PASS_EVERY.min(quarter_ticks.max(1)),
        })
    }

    /// Whether this tick runs a pass, given the ring epoch now.
    pub fn should_run(&mut self, epoch: Option<u64>) -> bool {
        if self.skip > 0 && epoch == self.seen_epoch {
            self.skip -= 1;
            return false;
        }
        self.seen_epoch = epoch;
        true
    }

    /// How the pass went: quiet passes earn the skips.
    pub fn ran(&mut self, quiet: bool) {
        self.skip = if quiet { self.skip_after_quiet } else { 0 };
    }

    /// Forget the skips (e.g. the duty changed hands).
    pub fn reset(&mut self) {
        self.skip = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quiet passes space out; a busy pass, a new epoch or a reset brings back every tick.
    #[test]
    fn quiet_passes_space_out() {
        let mut pacer = QuietPacer::new(3);
        assert!(pacer.should_run(Some(1)));
        pacer.ran(true);
        assert!(!pacer.should_run(Some(1)));
        assert!(!pacer.should_run(Some(1)));
        assert!(pacer.should_run(Some(1)), "every third tick while quiet");
        pacer.ran(true);
        assert!(pacer.should_run(Some(2)), "a new epoch runs at once");
        pacer.ran(false);
        assert!(pacer.should_run(Some(2)), "busy: every tick");
        pacer.ran(true);
        pacer.reset();
        assert!(pacer.should_run(Some(2)));
        let mut every_tick = QuietPacer::new(0);
        every_tick.ran(true);
        assert!(every_tick.should_run(None));
    }

    /// The quiet stretch never exceeds a quarter of the dead-node timeout.
    #[test]
    fn quiet_stretch_is_bounded_by_the_dead_timeout() {
        for (interval_ms, dead_ms, expected_every) in [
            (1000, 0, 10),
            (1000, 300_000, 10),
            (1000, 8_000, 2),
            (1000, 1_000, 1),
        ] {
            let mut pacer = QuietPacer::for_duty(interval_ms, dead_ms);
            assert!(pacer.should_run(None));
            pacer.ran(true);
            let ticks = 1 + (0..20).take_while(|_| !pacer.should_run(None)).count() as u64;
            assert_eq!(
                ticks, expected_every,
                "interval {interval_ms} ms, dead after {dead_ms} ms"
            );
        }
    }
}
