//! How long one attempt of a write may take: `rpc_timeout_ms`, or longer at a node whose
//! writes are known to take longer, up to [`MAX_TIMEOUT_FACTOR`] times it.
//!
//! A write cannot be answered before its shard's entry commits, and a retry does not make
//! it commit sooner: the node joins a retry to the write it still has pending (its request
//! id and content; `node/src/proposal/pending.rs`). When a node's writes take longer than
//! the attempt timeout (followers whose disks sync in a second: issue 14), every attempt
//! was abandoned and retried, and each retry queued behind the router's other calls to the
//! same shard (`write_merge.rs`) — so writes collapsed instead of slowing down. So, like a
//! TCP retransmission timer (RFC 6298):
//! - each node's write latency is estimated from the writes it answered (a smoothed
//!   latency and its variation; [`WriteLatency`]), and an attempt gets
//!   the larger of `smoothed + 4 * variation` and `2 * smoothed` when that exceeds
//!   `rpc_timeout_ms`;
//! - after an attempt of a write ran out of time, its next attempt, and every write's
//!   attempts at that node until it answers one again, get twice as long (the timer's back
//!   off; [`WriteAttempts`], [`WriteLatency::timed_out`]), so writes make progress before
//!   any estimate.
//!
//! Both are capped at [`MAX_TIMEOUT_FACTOR`] times `rpc_timeout_ms`, and every attempt by
//! the request's deadline: retries stay bounded, and a timed-out attempt stays ambiguous
//! (the write is reported outcome-unknown unless a later attempt succeeds). At a healthy
//! node writes take milliseconds: the estimate stays below `rpc_timeout_ms`, and failover
//! from an unresponsive node is as before — except that a write's attempt after one that
//! ran out of time waits twice as long (a not-leader answer or a refusal comes at once).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Longest attempt timeout, in multiples of `rpc_timeout_ms` (10 s with the default 2 s).
pub const MAX_TIMEOUT_FACTOR: u32 = 5;
/// Nodes whose write latency is remembered; beyond it the estimates start over (a router
/// talks to its cluster's nodes, far fewer).
const MAX_NODES: usize = 1024;

/// A smoothed write latency and its variation (RFC 6298, with its gains 1/8 and 1/4), and
/// the backed-off timeout after an attempt at the node ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Estimate {
    smoothed: Duration,
    variation: Duration,
    backed_off: Option<Duration>,
}

impl Estimate {
    fn first(sample: Duration) -> Estimate {
        Estimate {
            smoothed: sample,
            variation: sample / 2,
            backed_off: None,
        }
    }

    fn update(&mut self, sample: Duration) {
        self.backed_off = None;
        let deviation = self.smoothed.abs_diff(sample);
        self.variation = (self.variation * 3 + deviation) / 4;
        self.smoothed = (self.smoothed * 7 + sample) / 8;
    }

    fn timeout(&self) -> Duration {
        // Never under twice the smoothed latency: an attempt cut short costs a retry that
        // queues behind the node's next entry, a long one only delays failover.
        let estimated = self
            .smoothed
            .saturating_add(self.variation.saturating_mul(4))
            .max(self.smoothed.saturating_mul(2));
        self.backed_off
            .map_or(estimated, |backed_off| backed_off.max(estimated))
    }
}

/// Per node, how long its writes take, and the attempt timeout that follows.
#[derive(Debug)]
pub struct WriteLatency {
    floor: Duration,
    cap: Duration,
    nodes: Mutex<HashMap<String, Estimate>>,
}

impl WriteLatency {
    /// Attempt timeouts between `rpc_timeout` and [`MAX_TIMEOUT_FACTOR`] times it.
    pub fn new(rpc_timeout: Duration) -> WriteLatency {
        WriteLatency {
            floor: rpc_timeout,
            cap: rpc_timeout.saturating_mul(MAX_TIMEOUT_FACTOR),
            nodes: Mutex::new(HashMap::new()),
        }
    }

    /// The longest an attempt may take, whatever escalated it.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The timeout of a write attempt at `addr`.
    pub fn attempt_timeout(&self, addr: &str) -> Duration {
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let estimated = nodes.get(addr).map_or(Duration::ZERO, Estimate::timeout);
        estimated.clamp(self.floor, self.cap)
    }

    /// Records that a write answered by `addr` took `took` (since its first attempt there).
    pub fn record(&self, addr: &str, took: Duration) {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(estimate) = nodes.get_mut(addr) {
            estimate.update(took);
            return;
        }
        if nodes.len() >= MAX_NODES {
            nodes.clear();
        }
        nodes.insert(addr.to_string(), Estimate::first(took));
    }

    /// A write attempt at `addr` with `timeout` ran out of time: the node's attempts get
    /// twice as long (up to the cap) until it answers a write again.
    pub fn timed_out(&self, addr: &str, timeout: Duration) {
        let backed_off = timeout.saturating_mul(2).min(self.cap);
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if !nodes.contains_key(addr) && nodes.len() >= MAX_NODES {
            nodes.clear();
        }
        let estimate = nodes.entry(addr.to_string()).or_default();
        estimate.backed_off = Some(estimate.backed_off.map_or(backed_off, |old| old.max(backed_off)));
    }
}

/// Nodes whose first attempt of one write is remembered (a shard's replicas, and a few
/// more when leadership moves).
const MAX_NODES_PER_WRITE: usize = 8;

/// One write's attempts: when its first attempt at each node started, and the timeout it
/// escalated to when attempts ran out of time.
#[derive(Debug, Default)]
pub struct WriteAttempts {
    first_at: Vec<(String, tokio::time::Instant)>,
    escalated: Option<Duration>,
}

impl WriteAttempts {
    /// The timeout of an attempt starting now at `addr`, given the node's own
    /// ([`WriteLatency::attempt_timeout`]).
    pub fn start(&mut self, addr: &str, node_timeout: Duration) -> Duration {
        let known = self.first_at.iter().any(|(first, _)| first == addr);
        if !known && self.first_at.len() < MAX_NODES_PER_WRITE {
            self.first_at
                .push((addr.to_string(), tokio::time::Instant::now()));
        }
        self.escalated
            .map_or(node_timeout, |escalated| escalated.max(node_timeout))
    }

    /// How long `addr` took to answer the write, from the first attempt there (a retry the
    /// node joined to the write it still had pending answers with the write's latency).
    pub fn latency_at(&self, addr: &str) -> Option<Duration> {
        self.first_at
            .iter()
            .find(|(first, _)| first == addr)
            .map(|(_, since)| since.elapsed())
    }

    /// An attempt that had `timeout` ran out of time: the next one gets twice as long, up
    /// to `cap`.
    pub fn timed_out(&mut self, timeout: Duration, cap: Duration) {
        self.escalated = Some(timeout.saturating_mul(2).min(cap).max(timeout));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RPC_TIMEOUT: Duration = Duration::from_secs(2);

    /// Fast writes leave the attempt timeout at `rpc_timeout`.
    #[test]
    fn fast_writes_keep_the_configured_timeout() {
        let latency = WriteLatency::new(RPC_TIMEOUT);
        assert_eq!(latency.attempt_timeout("a"), RPC_TIMEOUT, "no estimate yet");
        for _ in 0..20 {
            latency.record("a", Duration::from_millis(5));
        }
        assert_eq!(latency.attempt_timeout("a"), RPC_TIMEOUT);
    }

    /// Writes of 2-4 s at one node give its attempts room above their latency, capped; other
    /// nodes keep `rpc_timeout`; fast writes bring it back down.
    #[test]
    fn slow_writes_lengthen_their_node_attempts_within_the_cap() {
        let latency = WriteLatency::new(RPC_TIMEOUT);
        for took_ms in [3000, 2000, 4000, 2500, 3500, 3000] {
            latency.record("slow", Duration::from_millis(took_ms));
        }
        let slow = latency.attempt_timeout("slow");
        assert!(slow > Duration::from_secs(4), "{slow:?}");
        assert!(slow <= RPC_TIMEOUT * MAX_TIMEOUT_FACTOR, "{slow:?}");
        assert_eq!(latency.attempt_timeout("other"), RPC_TIMEOUT);
        latency.record("huge", Duration::from_secs(3600));
        assert_eq!(latency.attempt_timeout("huge"), RPC_TIMEOUT * MAX_TIMEOUT_FACTOR);
        for _ in 0..40 {
            latency.record("slow", Duration::from_millis(5));
        }
        assert_eq!(latency.attempt_timeout("slow"), RPC_TIMEOUT);
    }

    /// An attempt that ran out of time doubles the node's attempt timeout (up to the cap)
    /// until the node answers a write; other nodes keep theirs.
    #[test]
    fn a_timed_out_attempt_backs_off_its_node() {
        let latency = WriteLatency::new(RPC_TIMEOUT);
        latency.timed_out("a", RPC_TIMEOUT);
        assert_eq!(latency.attempt_timeout("a"), 2 * RPC_TIMEOUT);
        assert_eq!(latency.attempt_timeout("b"), RPC_TIMEOUT);
        latency.timed_out("a", 2 * RPC_TIMEOUT);
        latency.timed_out("a", RPC_TIMEOUT);
        assert_eq!(latency.attempt_timeout("a"), 4 * RPC_TIMEOUT);
        latency.timed_out("a", 4 * RPC_TIMEOUT);
        assert_eq!(latency.attempt_timeout("a"), RPC_TIMEOUT * MAX_TIMEOUT_FACTOR);
        latency.record("a", Duration::from_millis(5));
        assert_eq!(
            latency.attempt_timeout("a"),
            RPC_TIMEOUT,
            "answered: estimated again"
        );
    }

    /// Each attempt that ran out of time doubles the next one's timeout, up to the cap; a
    /// longer estimate of the node wins; a node's latency counts from the first attempt
    /// there.
    #[tokio::test(start_paused = true)]
    async fn timeouts_escalate_up_to_the_cap() {
        let cap = RPC_TIMEOUT * MAX_TIMEOUT_FACTOR;
        let mut attempts = WriteAttempts::default();
        assert_eq!(attempts.start("a", RPC_TIMEOUT), RPC_TIMEOUT);
        let mut timeout = RPC_TIMEOUT;
        for expected in [4, 8, 10, 10].map(Duration::from_secs) {
            attempts.timed_out(timeout, cap);
            tokio::time::advance(timeout).await;
            timeout = attempts.start("a", RPC_TIMEOUT);
            assert_eq!(timeout, expected);
        }
        assert_eq!(
            attempts.latency_at("a"),
            Some(Duration::from_secs(2 + 4 + 8 + 10))
        );
        assert_eq!(attempts.latency_at("b"), None);
        assert_eq!(
            attempts.start("b", Duration::from_secs(12)),
            Duration::from_secs(12)
        );
    }
}
