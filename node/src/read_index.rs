//! Linearizable reads: under the leader lease, or sharing ReadIndex rounds.
//!
//! A linearizable read on a leader must know that no other leader could have committed a
//! write it does not have. Two ways:
//!
//! - **Lease** (`lease_reads`, on by default): openraft's followers refuse every candidate
//!   for `election_timeout_max` after they last heard from their leader. If a quorum
//!   acknowledged AppendEntries this leader sent at time `t`, no other leader can exist
//!   before `t + election_timeout_max` (by the followers' clocks). The leader reads while
//!   `now < t + election_timeout_min`: the difference absorbs clock-rate drift (monotonic
//!   clocks; wall-clock jumps do not matter). One message to the local Raft core, no network.
//!   A leader that ordered a transfer target to campaign (`transfer.rs`) stops trusting its
//!   lease for that term: the target votes for itself despite its own lease and may win
//!   with another follower's vote alone.
//! - **ReadIndex round** otherwise (lease lapsed, e.g. after a hibernation or a pause):
//!   openraft's `ensure_linearizable` sends a heartbeat to every follower and waits for a
//!   quorum to confirm the leadership.
//!
//! Either way the read then waits until the state machine applied up to the commit index
//! (or this leader's first entry) seen at the check.
//!
//! Callers that need only the leadership, not the state machine (the timestamp oracle, after
//! it allocates), ask [`ReadBatcher::confirm_leading`]: the last lease check proved that no
//! other leader can exist until some instant, and until then the answer needs no message
//! at all (the proof counts from before the check was sent, so it errs early).
//!
//! [`ReadBatcher`] runs one check for every read that arrived before the check started:
//! reads queue while a check is in flight and the next check serves them all. Why sharing
//! is safe: a check that *starts* after a read arrived confirms a commit index at least as
//! new as every write acknowledged before the read arrived, which is all that
//! linearizability asks of that read. A read never joins a check already in flight (that
//! check's commit index may predate a write the reader saw acknowledged).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::metrics::WaitError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::ReadLease;
use crate::error::NodeError;
use crate::proposal::forwarded_leader;
use crate::raft::types::{GroupId, NodeId, Raft};
use crate::transfer::Leadership;

/// Most reads waiting for the next round (further readers wait for room: backpressure).
const QUEUE_CAPACITY: usize = 4096;

type Waiter = oneshot::Sender<Result<(), NodeError>>;

/// Linearizable reads served on this node, by how their leadership was confirmed.
#[derive(Debug, Default)]
pub struct ReadCounters {
    /// Checks answered under the leader lease.
    pub lease: AtomicU64,
    /// ReadIndex rounds run (heartbeats to the followers).
    pub rounds: AtomicU64,
    /// Rounds that did not confirm the leadership.
    pub failed_rounds: AtomicU64,
    /// Leadership confirmations answered from the last lease check, without a message.
    pub proven: AtomicU64,
}

/// What a group's read task needs besides its Raft handle.
pub struct ReadSettings {
    pub group: GroupId,
    /// Bound of one check, and of the wait for the state machine after it.
    pub timeout_ms: u64,
    /// The lease reads may rely on (`None`: ReadIndex rounds only).
    pub lease: Option<ReadLease>,
    /// Whether this replica ordered a campaign in a term (which ends its lease).
    pub leadership: Arc<Leadership>,
    pub counters: Arc<ReadCounters>,
}

/// Handle to a group's read task; cheap to clone.
#[derive(Clone)]
pub struct ReadBatcher {
    tx: mpsc::Sender<Waiter>,
    group: GroupId,
    proof: Arc<LeaseProof>,
}

/// What the last successful lease check proved: in `term`, no other leader can exist
/// before `until`.
struct LeaseProof {
    last: Mutex<Option<(u64, Instant)>>,
    /// Whether this replica ordered a campaign in a term (which ends its lease).
    leadership: Arc<Leadership>,
    unsafe_ignore_transfers: bool,
    counters: Arc<ReadCounters>,
}

impl LeaseProof {
    fn record(&self, term: u64, until: Instant) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|(old_term, old_until)| (term, until) > (old_term, old_until)) {
            *last = Some((term, until));
        }
    }

    /// Whether the proof still holds now for `term`.
    fn holds(&self, term: u64) -> bool {
        let last = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let proven = last.is_some_and(|(proven_term, until)| proven_term == term && Instant::now() < until);
        proven && (self.unsafe_ignore_transfers || self.leadership.lease_holds(term))
    }
}

impl ReadBatcher {
    /// Starts the task confirming the group's reads; it stops when `cancel` fires. The
    /// caller owns the returned future (spawn it on the group's task tracker).
    pub fn spawn(
        raft: Raft,
        settings: ReadSettings,
        cancel: CancellationToken,
    ) -> (
        ReadBatcher,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let group = settings.group;
        let proof = Arc::new(LeaseProof {
            last: Mutex::new(None),
            leadership: settings.leadership.clone(),
            unsafe_ignore_transfers: settings.lease.is_some_and(|lease| lease.unsafe_ignore_transfers),
            counters: settings.counters.clone(),
        });
        let task = run(raft, settings, proof.clone(), rx, cancel);
        (ReadBatcher { tx, group, proof }, task)
    }

    /// Waits until a read on the group at this moment would be linearizable.
    pub async fn confirm(&self) -> Result<(), NodeError> {
        let stopped = || NodeError::Fatal(format!("{} is shutting down", self.group));
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Waits until this replica is known to lead the group in `term` at this moment: at
    /// once while the last lease check's proof holds, else after a check of its own (as
    /// [`ReadBatcher::confirm`], which also waits for the state machine). The caller
    /// still checks that `term` is the term it leads (a check proves the current one).
    pub async fn confirm_leading(&self, term: u64) -> Result<(), NodeError> {
        if self.proof.holds(term) {
            self.proof.counters.proven.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.confirm().await
    }
}

async fn run(
    raft: Raft,
    settings: ReadSettings,
    proof: Arc<LeaseProof>,
    mut rx: mpsc::Receiver<Waiter>,
    cancel: CancellationToken,
) {
    let group = settings.group;
    let mut batch: Vec<Waiter> = Vec::new();
    loop {
        let first = tokio::select! {
            waiter = rx.recv() => waiter,
            _ = cancel.cancelled() => None,
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < QUEUE_CAPACITY {
            match rx.try_recv() {
                Ok(waiter) => batch.push(waiter),
                Err(_) => break,
            }
        }
        let result = tokio::select! {
            result = check(&raft, &settings, &proof) => result,
            _ = cancel.cancelled() => Err(NodeError::Fatal(format!("{group} is shutting down"))),
        };
        for waiter in batch.drain(..) {
            let _ = waiter.send(result.as_ref().map(|_| ()).map_err(NodeError::duplicate));
        }
    }
}

/// One check for a batch of reads: under the lease if it holds, else a ReadIndex round.
async fn check(raft: &Raft, settings: &ReadSettings, proof: &LeaseProof) -> Result<(), NodeError> {
    if let Some(lease) = settings.lease {
        if let Some(read_log_id) = lease_check(raft, settings, lease, proof).await? {
            settings.counters.lease.fetch_add(1, Ordering::Relaxed);
            return wait_applied(raft, settings, read_log_id).await;
        }
    }
    settings.counters.rounds.fetch_add(1, Ordering::Relaxed);
    let confirmed = round(raft, settings).await;
    if confirmed.is_err() {
        settings.counters.failed_rounds.fetch_add(1, Ordering::Relaxed);
    }
    confirmed
}

/// The index the state machine must reach, if the lease holds now.
async fn lease_check(
    raft: &Raft,
    settings: &ReadSettings,
    lease: ReadLease,
    proof: &LeaseProof,
) -> Result<Option<u64>, NodeError> {
    // Counted from before the question: the core's clock, when it answers, is later.
    let asked = Instant::now();
    let Some(read) = raft
        .lease_read(lease.duration)
        .await
        .map_err(|err| check_error(settings, err))?
    else {
        return Ok(None);
    };
    if !lease.unsafe_ignore_transfers && !settings.leadership.lease_holds(read.term) {
        return Ok(None);
    }
    proof.record(read.term, asked + read.remaining);
    Ok(Some(read.read_log_id.map_or(0, |log_id| log_id.index)))
}

async fn wait_applied(raft: &Raft, settings: &ReadSettings, index: u64) -> Result<(), NodeError> {
    raft.wait(Some(Duration::from_millis(settings.timeout_ms)))
        .applied_index_at_least(Some(index), "a lease read")
        .await
        .map(|_| ())
        .map_err(|err| match err {
            WaitError::Timeout(..) => NodeError::Timeout {
                what: format!("{} to apply up to index {index} for a read", settings.group),
                timeout_ms: settings.timeout_ms,
                proposed: false,
            },
            WaitError::ShuttingDown => NodeError::Fatal(format!("{} is shutting down", settings.group)),
        })
}

/// One ReadIndex round: leadership confirmed by a quorum, then applied up to the read index.
async fn round(raft: &Raft, settings: &ReadSettings) -> Result<(), NodeError> {
    let timeout_ms = settings.timeout_ms;
    let check = tokio::time::timeout(Duration::from_millis(timeout_ms), raft.ensure_linearizable());
    match check.await {
        Err(_elapsed) => Err(NodeError::Timeout {
            what: format!("{} to confirm leadership for a read", settings.group),
            timeout_ms,
            proposed: false,
        }),
        Ok(result) => result.map(|_| ()).map_err(|err| check_error(settings, err)),
    }
}

fn check_error(
    settings: &ReadSettings,
    err: RaftError<NodeId, CheckIsLeaderError<NodeId, openraft::BasicNode>>,
) -> NodeError {
    let group = settings.group;
    match err {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)) => NodeError::NotLeader {
            group,
            leader: forwarded_leader(forward),
            proposed: false,
        },
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(err)) => NodeError::NoQuorum {
            group,
            detail: err.to_string(),
        },
        RaftError::Fatal(fatal) => NodeError::Fatal(fatal.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_proof(unsafe_ignore_transfers: bool) -> LeaseProof {
        LeaseProof {
            last: Mutex::new(None),
            leadership: Arc::new(Leadership::default()),
            unsafe_ignore_transfers,
            counters: Arc::default(),
        }
    }

    #[test]
    fn a_proof_holds_in_its_term_until_it_runs_out() {
        let proof = empty_proof(false);
        assert!(!proof.holds(5), "nothing proven yet");
        let now = Instant::now();
        proof.record(5, now + Duration::from_secs(60));
        assert!(proof.holds(5));
        assert!(!proof.holds(6), "a proof of term 5 says nothing of term 6");
        assert!(!proof.holds(4));

        let ran_out = empty_proof(false);
        ran_out.record(5, now);
        assert!(!ran_out.holds(5), "a proof that ran out");
    }

    #[test]
    fn the_later_proof_is_kept() {
        let proof = empty_proof(false);
        let now = Instant::now();
        proof.record(5, now + Duration::from_secs(60));
        proof.record(5, now);
        assert!(
            proof.holds(5),
            "an older check's proof does not shorten a newer one"
        );
        proof.record(6, now);
        assert!(!proof.holds(5), "a newer term's proof replaces the old term's");
        assert!(!proof.holds(6));
    }

    #[test]
    fn an_ordered_campaign_ends_the_proof_of_its_term() {
        let safe = empty_proof(false);
        let control = empty_proof(true);
        for proof in [&safe, &control] {
            proof.record(5, Instant::now() + Duration::from_secs(60));
            proof.leadership.end_lease(5);
        }
        assert!(!safe.holds(5));
        assert!(control.holds(5), "the negative control keeps trusting it");
    }
}
