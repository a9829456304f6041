//! Hibernation of quiet shard groups: the state of one group, as pure transitions.
//!
//! An idle openraft group still costs a heartbeat per follower every heartbeat interval and
//! a tick per replica every 1.5 heartbeat intervals; with a thousand groups per node that
//! was a third of a core doing nothing. A quiet group therefore stops its Raft timers
//! (openraft's `runtime_config().tick(false)`: no heartbeats on the leader, no election
//! timer on a follower), and one keep-alive per node pair and interval (`keepalive.rs`)
//! stands in for the heartbeats of every sleeping group the pair shares.
//!
//! The life of a group led here:
//!
//! 1. **Awake**: ticks on. Any activity — a proposal, a write, a linearizable read, a leader
//!    transfer, a new log entry or term seen by the driver — restarts the quiet period.
//! 2. **Drowsy**: quiet for `hibernate_after` and *settled* (no learners, no joint config,
//!    every voter has the whole log, everything applied, no move or transfer claims the
//!    shard). Still heartbeating, but listed in keep-alives so followers stop their election
//!    timers first.
//! 3. **Asleep**: once one keep-alive round listing the group was accepted by a quorum of
//!    voters (the leader included) and by every voter gossip does not declare dead, the
//!    leader turns its ticks off. Any activity wakes it at once
//!    (ticks on; the next tick heartbeats). A follower that refuses the group wakes it too.
//!
//! A follower accepts a listed group only from the leader it follows, in that term, once it
//! applied as far as the leader (so its stale reads are not left behind); it then stops its
//! ticks until `sleep_lease` (+ a per-group jitter, so followers do not campaign in step)
//! passes without a keep-alive listing the group. When the lease runs out — the leader woke
//! (and heartbeats again), died, or cannot reach us — the follower's ticks resume, and since
//! it heard no heartbeat for long, it campaigns at its next tick unless heartbeats arrive.
//! Gossip declaring the leader's node dead wakes its followers at once.
//!
//! Safety does not depend on any of this: stopping timers never changes what Raft decides,
//! only when elections happen. Linearizable reads run openraft's own heartbeat round
//! (`ensure_linearizable` sends AppendEntries to every voter whatever the tick setting), and
//! writes replicate when proposed. Liveness does: every path ends with ticks on — lost
//! leadership, a new term, a role change, a lapsed lease, a dead leader — within the lease.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::raft::types::{NodeId, Raft};

/// Hibernation timing, from the node configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Quiet time after which a settled group led here goes to sleep (`None`: never).
    pub hibernate_after: Option<Duration>,
    /// How often a node sends keep-alives to its peers.
    pub keepalive_interval: Duration,
    /// How long a sleeping follower waits for the next keep-alive before it wakes.
    pub sleep_lease: Duration,
    /// Upper bound of the per-group jitter added to the lease.
    pub max_jitter: Duration,
}

impl Settings {
    /// Keep-alives that may go missing in a row before followers wake.
    pub const MISSED_KEEPALIVES: u32 = 3;

    pub fn new(
        hibernate_after_ms: u64,
        keepalive_interval_ms: u64,
        election_timeout_min_ms: u64,
        election_timeout_max_ms: u64,
    ) -> Settings {
        let keepalive_interval = Duration::from_millis(keepalive_interval_ms);
        Settings {
            hibernate_after: (hibernate_after_ms > 0).then(|| Duration::from_millis(hibernate_after_ms)),
            keepalive_interval,
            sleep_lease: keepalive_interval * Self::MISSED_KEEPALIVES,
            max_jitter: Duration::from_millis(
                election_timeout_max_ms.saturating_sub(election_timeout_min_ms),
            ),
        }
    }

    /// The lease jitter of `shard` on node `node`: fixed per replica, spread over
    /// `[0, max_jitter]` so the followers of one group do not wake in step.
    pub fn jitter(&self, node: NodeId, shard: u32) -> Duration {
        let span = self.max_jitter.as_millis() as u64;
        if span == 0 {
            return Duration::ZERO;
        }
        // A fixed mix (splitmix64's finaliser): deterministic, no RNG needed.
        let mut x = node.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(shard);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        Duration::from_millis(x % (span + 1))
    }
}

/// Where one group stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleepState {
    /// Ticks on (every group starts here).
    Awake,
    /// Led here, quiet and settled: listed in keep-alives, ticks still on.
    Drowsy { term: u64 },
    /// Led here: ticks off, listed in keep-alives.
    LeaderAsleep { term: u64 },
    /// Follows `leader` in `term`: ticks off until `until` unless a keep-alive renews it.
    FollowerAsleep {
        leader: NodeId,
        term: u64,
        until: Instant,
    },
}

/// What the caller must do to the group's Raft timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    /// `runtime_config().tick(true)`.
    TickOn,
    /// `runtime_config().tick(false)`.
    TickOff,
}

/// What the driver sees of a group on one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// This replica leads the group.
    pub leading: bool,
    pub term: u64,
    /// See the module docs: nothing in flight, every voter has the whole log.
    pub settled: bool,
}

/// One group's hibernation: its state and when it last saw activity.
#[derive(Debug, Clone, Copy)]
pub struct Sleep {
    state: SleepState,
    last_active: Instant,
}

impl Sleep {
    pub fn new(now: Instant) -> Sleep {
        Sleep {
            state: SleepState::Awake,
            last_active: now,
        }
    }

    pub fn state(&self) -> SleepState {
        self.state
    }

    /// Ticks are off here.
    pub fn is_asleep(&self) -> bool {
        matches!(
            self.state,
            SleepState::LeaderAsleep { .. } | SleepState::FollowerAsleep { .. }
        )
    }

    /// The term to list the group with in keep-alives (led here, drowsy or asleep).
    pub fn listed_term(&self) -> Option<u64> {
        match self.state {
            SleepState::Drowsy { term } | SleepState::LeaderAsleep { term } => Some(term),
            _ => None,
        }
    }

    fn wake(&mut self, now: Instant) -> Effect {
        let effect = if self.is_asleep() {
            Effect::TickOn
        } else {
            Effect::None
        };
        self.state = SleepState::Awake;
        self.last_active = now;
        effect
    }

    /// Activity on the group (a request, a proposal, a transfer): a leader wakes at once and
    /// the quiet period restarts. A sleeping follower stays asleep: requests it cannot serve
    /// go to the leader, and its lease bounds the sleep.
    pub fn touch(&mut self, now: Instant) -> Effect {
        match self.state {
            SleepState::FollowerAsleep { .. } => Effect::None,
            _ => self.wake(now),
        }
    }

    /// The role or term changed (seen by the leadership watch): wake whatever the state.
    pub fn role_changed(&mut self, now: Instant) -> Effect {
        self.wake(now)
    }

    /// The driver's periodic look at the group.
    pub fn observe(&mut self, now: Instant, seen: Observation, settings: &Settings) -> Effect {
        match self.state {
            SleepState::FollowerAsleep { .. } if !seen.leading => Effect::None,
            SleepState::FollowerAsleep { .. } => self.wake(now),
            _ if !seen.leading || !seen.settled => self.wake(now),
            SleepState::Drowsy { term } | SleepState::LeaderAsleep { term } if term != seen.term => {
                self.wake(now)
            }
            SleepState::Drowsy { .. } | SleepState::LeaderAsleep { .. } => Effect::None,
            SleepState::Awake => {
                let quiet = now.saturating_duration_since(self.last_active);
                if settings.hibernate_after.is_some_and(|after| quiet >= after) {
                    self.state = SleepState::Drowsy { term: seen.term };
                }
                Effect::None
            }
        }
    }

    /// How the keep-alive round that listed the group in `term` went: whether a quorum of
    /// voters (this leader included) accepted it, and whether any voter refused it.
    pub fn round_outcome(&mut self, now: Instant, term: u64, quorum_accepted: bool, refused: bool) -> Effect {
        match self.state {
            SleepState::Drowsy { term: listed } | SleepState::LeaderAsleep { term: listed }
                if listed == term && refused =>
            {
                self.wake(now)
            }
            SleepState::Drowsy { term: listed } if listed == term && quorum_accepted => {
                self.state = SleepState::LeaderAsleep { term };
                Effect::TickOff
            }
            _ => Effect::None,
        }
    }

    /// A keep-alive from `leader` (which the caller checked this replica follows in `term`,
    /// caught up) lists the group: sleep, or sleep on, until `until`. Refused (false) while
    /// this replica thinks it leads.
    pub fn accept(&mut self, leader: NodeId, term: u64, until: Instant) -> (bool, Effect) {
        match self.state {
            SleepState::Drowsy { .. } | SleepState::LeaderAsleep { .. } => (false, Effect::None),
            SleepState::FollowerAsleep { .. } => {
                self.state = SleepState::FollowerAsleep { leader, term, until };
                (true, Effect::None)
            }
            SleepState::Awake => {
                self.state = SleepState::FollowerAsleep { leader, term, until };
                (true, Effect::TickOff)
            }
        }
    }

    /// A sleeping follower wakes when its lease ran out or its leader's node is dead.
    pub fn expire(&mut self, now: Instant, leader_dead: impl FnOnce(NodeId) -> bool) -> Effect {
        match self.state {
            SleepState::FollowerAsleep { leader, until, .. } if until <= now || leader_dead(leader) => {
                self.wake(now)
            }
            _ => Effect::None,
        }
    }

    /// This node could not watch the time (its driver ran late, e.g. the process was
    /// paused): a sleeping follower's lease restarts rather than blaming the leader.
    pub fn extend(&mut self, now: Instant, lease: Duration) {
        if let SleepState::FollowerAsleep { leader, term, until } = self.state {
            self.state = SleepState::FollowerAsleep {
                leader,
                term,
                until: until.max(now + lease),
            };
        }
    }
}

/// One hosted group's hibernation: its [`Sleep`] state, applied to its Raft timers under
/// one lock (so two transitions never apply their effects out of order).
pub struct Hibernation {
    raft: Raft,
    sleep: Mutex<Sleep>,
    /// Changes of role, term or known leader the leadership watch reported (the node's
    /// `ringkv_raft_role_changes_total`).
    role_changes: std::sync::atomic::AtomicU64,
}

impl Hibernation {
    pub fn new(raft: Raft) -> Hibernation {
        Hibernation {
            raft,
            sleep: Mutex::new(Sleep::new(Instant::now())),
            role_changes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Runs one transition and applies its effect to the group's timers.
    pub fn step<R>(&self, transition: impl FnOnce(&mut Sleep) -> (R, Effect)) -> R {
        let mut sleep = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
        let (result, effect) = transition(&mut sleep);
        match effect {
            Effect::None => {}
            Effect::TickOn => self.raft.runtime_config().tick(true),
            Effect::TickOff => self.raft.runtime_config().tick(false),
        }
        result
    }

    /// Activity on the group: see [`Sleep::touch`].
    pub fn touch(&self) {
        self.step(|sleep| ((), sleep.touch(Instant::now())));
    }

    /// The role or term changed: see [`Sleep::role_changed`].
    pub fn role_changed(&self) {
        self.role_changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.step(|sleep| ((), sleep.role_changed(Instant::now())));
    }

    /// How many times the role, term or known leader changed since the replica opened.
    pub fn role_changes(&self) -> u64 {
        self.role_changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A copy of the current state.
    pub fn get(&self) -> Sleep {
        *self.sleep.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::new(1_000, 200, 500, 1_000)
    }

    fn leading(term: u64) -> Observation {
        Observation {
            leading: true,
            term,
            settled: true,
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    /// A settled leader dozes off after the quiet period, sleeps once a quorum accepted,
    /// and any activity wakes it with its ticks back on.
    #[test]
    fn leader_sleeps_after_quiet_and_wakes_on_activity() {
        let start = Instant::now();
        let mut sleep = Sleep::new(start);
        let s = settings();
        assert_eq!(sleep.observe(start + SECOND / 2, leading(3), &s), Effect::None);
        assert_eq!(sleep.state(), SleepState::Awake, "not quiet long enough");
        assert_eq!(sleep.observe(start + SECOND, leading(3), &s), Effect::None);
        assert_eq!(sleep.state(), SleepState::Drowsy { term: 3 });
        assert_eq!(sleep.listed_term(), Some(3));
        assert!(!sleep.is_asleep(), "drowsy still heartbeats");
        // A round without a quorum keeps it drowsy; a round for an older term is ignored.
        assert_eq!(sleep.round_outcome(start + SECOND, 3, false, false), Effect::None);
        assert_eq!(sleep.round_outcome(start + SECOND, 2, true, false), Effect::None);
        assert_eq!(sleep.state(), SleepState::Drowsy { term: 3 });
        assert_eq!(
            sleep.round_outcome(start + SECOND, 3, true, false),
            Effect::TickOff
        );
        assert_eq!(sleep.state(), SleepState::LeaderAsleep { term: 3 });
        assert!(sleep.is_asleep());
        let later = start + 5 * SECOND;
        assert_eq!(sleep.observe(later, leading(3), &s), Effect::None, "stays asleep");
        assert_eq!(sleep.touch(later), Effect::TickOn);
        assert_eq!(sleep.state(), SleepState::Awake);
        assert_eq!(
            sleep.observe(later + SECOND / 2, leading(3), &s),
            Effect::None,
            "the quiet period restarts at the activity"
        );
        assert_eq!(sleep.state(), SleepState::Awake);
    }

    /// Every way a sleeping leader can stop being a quiet leader wakes it: lost leadership,
    /// a new term, unsettled (a move, a learner, a lagging voter), a refusing follower.
    #[test]
    fn leader_wakes_on_any_change() {
        let start = Instant::now();
        let s = settings();
        let asleep = || {
            let mut sleep = Sleep::new(start);
            sleep.observe(start + SECOND, leading(4), &s);
            sleep.round_outcome(start + SECOND, 4, true, false);
            assert_eq!(sleep.state(), SleepState::LeaderAsleep { term: 4 });
            sleep
        };
        let at = start + 2 * SECOND;
        type Case<'a> = (&'static str, Box<dyn Fn(&mut Sleep) -> Effect + 'a>);
        let cases: [Case<'_>; 5] = [
            (
                "lost leadership",
                Box::new(|sleep| {
                    sleep.observe(
                        at,
                        Observation {
                            leading: false,
                            ..leading(4)
                        },
                        &s,
                    )
                }),
            ),
            ("new term", Box::new(|sleep| sleep.observe(at, leading(5), &s))),
            (
                "unsettled",
                Box::new(|sleep| {
                    sleep.observe(
                        at,
                        Observation {
                            settled: false,
                            ..leading(4)
                        },
                        &s,
                    )
                }),
            ),
            (
                "refused",
                Box::new(|sleep| sleep.round_outcome(at, 4, true, true)),
            ),
            ("role change", Box::new(|sleep| sleep.role_changed(at))),
        ];
        for (index, (name, step)) in cases.iter().enumerate() {
            let mut sleep = asleep();
            assert_eq!(step(&mut sleep), Effect::TickOn, "case {index}: {name}");
            assert_eq!(sleep.state(), SleepState::Awake, "case {index}: {name}");
        }
    }

    /// A drowsy leader refused by a follower goes back to awake (it never turned its
    /// ticks off, so nothing to turn on).
    #[test]
    fn refused_drowsy_leader_stays_awake() {
        let start = Instant::now();
        let mut sleep = Sleep::new(start);
        sleep.observe(start + SECOND, leading(1), &settings());
        assert_eq!(sleep.round_outcome(start + SECOND, 1, true, true), Effect::None);
        assert_eq!(sleep.state(), SleepState::Awake);
    }

    /// With hibernation off, a group never dozes off.
    #[test]
    fn disabled_never_sleeps() {
        let start = Instant::now();
        let mut sleep = Sleep::new(start);
        let off = Settings::new(0, 200, 500, 1_000);
        sleep.observe(start + 3600 * SECOND, leading(1), &off);
        assert_eq!(sleep.state(), SleepState::Awake);
    }

    /// A follower sleeps on a keep-alive, renews with each, and wakes when the lease runs
    /// out or its leader is dead; a request at the follower does not wake it.
    #[test]
    fn follower_sleeps_under_a_lease() {
        let start = Instant::now();
        let lease = settings().sleep_lease;
        let mut sleep = Sleep::new(start);
        assert_eq!(sleep.accept(1, 7, start + lease), (true, Effect::TickOff));
        assert!(sleep.is_asleep());
        assert_eq!(sleep.touch(start), Effect::None);
        assert_eq!(
            sleep.accept(1, 7, start + 2 * lease),
            (true, Effect::None),
            "renewed"
        );
        assert_eq!(sleep.expire(start + lease, |_| false), Effect::None);
        assert_eq!(
            sleep.observe(
                start + lease,
                Observation {
                    leading: false,
                    term: 7,
                    settled: false
                },
                &settings()
            ),
            Effect::None,
            "the driver's pass leaves a follower alone"
        );
        assert_eq!(
            sleep.expire(start + 2 * lease, |_| false),
            Effect::TickOn,
            "lease over"
        );
        assert_eq!(sleep.state(), SleepState::Awake);

        sleep.accept(1, 7, start + 10 * lease);
        assert_eq!(
            sleep.expire(start, |leader| leader == 2),
            Effect::None,
            "another node died"
        );
        assert_eq!(
            sleep.expire(start, |leader| leader == 1),
            Effect::TickOn,
            "its leader died"
        );
    }

    /// A replica that thinks it leads refuses to sleep as a follower; one that becomes the
    /// leader wakes on the driver's next look.
    #[test]
    fn leader_and_follower_roles_do_not_mix() {
        let start = Instant::now();
        let s = settings();
        let mut leader = Sleep::new(start);
        leader.observe(start + SECOND, leading(2), &s);
        assert_eq!(leader.accept(3, 2, start + SECOND), (false, Effect::None));
        assert_eq!(leader.state(), SleepState::Drowsy { term: 2 });

        let mut follower = Sleep::new(start);
        follower.accept(3, 2, start + 10 * SECOND);
        assert_eq!(follower.observe(start + SECOND, leading(3), &s), Effect::TickOn);
        assert_eq!(follower.state(), SleepState::Awake);
    }

    /// A late driver (a paused process) restarts sleeping followers' leases instead of
    /// waking them all at once.
    #[test]
    fn late_driver_extends_leases() {
        let start = Instant::now();
        let lease = settings().sleep_lease;
        let mut sleep = Sleep::new(start);
        sleep.accept(1, 7, start + lease);
        let resumed = start + 60 * SECOND;
        sleep.extend(resumed, lease);
        assert_eq!(sleep.expire(resumed, |_| false), Effect::None);
        assert_eq!(sleep.expire(resumed + lease, |_| false), Effect::TickOn);
    }

    /// The lease jitter stays within its bound, differs between replicas, and is fixed.
    #[test]
    fn jitter_is_bounded_and_spread() {
        let s = settings();
        let jitters: Vec<Duration> = (0..64).map(|shard| s.jitter(1, shard)).collect();
        assert!(jitters.iter().all(|jitter| *jitter <= s.max_jitter));
        assert!(jitters.iter().any(|jitter| *jitter != jitters[0]), "spread");
        assert_eq!(s.jitter(2, 9), s.jitter(2, 9));
        assert_ne!(
            (0..16).map(|shard| s.jitter(1, shard)).collect::<Vec<_>>(),
            (0..16).map(|shard| s.jitter(2, shard)).collect::<Vec<_>>(),
            "followers of one group differ"
        );
        assert_eq!(Settings::new(1, 200, 500, 500).jitter(1, 1), Duration::ZERO);
    }
}
