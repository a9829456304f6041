//! A shard's writes still pending at its batcher, by request id: a retry of one joins it.
//!
//! A router retries a write whose attempt timed out with the same request id
//! (`router/src/forward.rs`). Proposed again, the retry would wait for an entry of its own
//! behind the one that carries the original, and de-duplication would only make that entry
//! answer with the original's outcome — later. When followers' disks sync slowly an entry
//! takes longer than the router's attempt timeout, so each retry was abandoned in turn and
//! the write never got its answer (issue 14). Instead, a retry of a write that is still
//! queued or being committed here — the same request id and the same [`Fingerprint`], the
//! pair de-duplication matches — waits for that write's outcome and proposes nothing.
//!
//! A write is pending from when it is queued until the batcher answers it (applied,
//! refused, failed or timed out); the batcher answers it whether or not its first caller
//! still waits (a gRPC call whose client gave up is dropped, its write is not). A write
//! that reuses a pending request id with other content is not joined: it is queued as
//! before and de-duplication refuses it as a reused id. The table is bounded
//! ([`MAX_PENDING_WRITES`], [`MAX_WAITERS`]); a write beyond a bound is queued as before.
//!
//! A retry often arrives just after its write was answered (the router gave up on the
//! attempt a moment before). The last [`MAX_ANSWERED`] writes applied are remembered with
//! their outcome, as the de-duplication record answers a retry — without the values of
//! failed comparisons — and such a retry is answered at once instead of waiting for an
//! entry that de-duplication would answer the same way. Only applied outcomes are kept
//! (committed: true whoever leads now); a retry of a write that failed or timed out is
//! proposed again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::error::NodeError;
use crate::raft::state_machine::Fingerprint;
use crate::raft::types::{RequestId, WriteOpResult};

/// What a write's callers are answered.
pub type Outcome = Result<Vec<WriteOpResult>, NodeError>;

/// Most writes tracked per shard. The batcher holds at most its queue (1,024 writes), one
/// carried write, the entry it builds and the entry in flight (256 writes each), so this
/// bound is only reached if that changes; writes beyond it are queued untracked.
const MAX_PENDING_WRITES: usize = 4096;
/// Most callers waiting for one write (its first caller and the retries that joined it).
/// A router retries a write a few times within its deadline; callers that gave up are
/// pruned before a new one joins.
const MAX_WAITERS: usize = 16;

/// Most applied writes remembered per shard with their outcome (the values of failed
/// comparisons left out).
const MAX_ANSWERED: usize = 1024;
/// Most op results of the applied writes remembered per shard (a write has up to 1,000 ops;
/// about 3 MiB in all).
const MAX_ANSWERED_OPS: usize = 65_536;

/// One pending write: what it does and who waits for its outcome.
struct Pending {
    fingerprint: Fingerprint,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

/// The pending writes of one shard, and the last ones applied.
#[derive(Default)]
pub struct PendingWrites {
    writes: Mutex<Writes>,
}

#[derive(Default)]
struct Writes {
    pending: HashMap<RequestId, Pending>,
    answered: HashMap<RequestId, (Fingerprint, Vec<WriteOpResult>)>,
    /// The ids of `answered`, oldest first.
    answered_order: VecDeque<RequestId>,
    /// The op results in `answered`.
    answered_ops: usize,
}

impl Writes {
    fn remember(&mut self, request_id: RequestId, fingerprint: Fingerprint, results: &[WriteOpResult]) {
        let mut results = results.to_vec();
        for result in &mut results {
            if let Some(current) = &mut result.current {
                current.value = None;
            }
        }
        self.answered_ops += results.len();
        match self.answered.insert(request_id, (fingerprint, results)) {
            Some((_, replaced)) => self.answered_ops -= replaced.len(),
            None => self.answered_order.push_back(request_id),
        }
        while self.answered_order.len() > MAX_ANSWERED || self.answered_ops > MAX_ANSWERED_OPS {
            let Some(oldest) = self.answered_order.pop_front() else {
                break;
            };
            if let Some((_, forgotten)) = self.answered.remove(&oldest) {
                self.answered_ops -= forgotten.len();
            }
        }
    }
}

/// How a write was admitted to the table.
pub enum Admission {
    /// A write with the same request id and content is pending: the caller's receiver gets
    /// its outcome, and nothing is queued.
    Joined,
    /// A write with the same request id and content was applied: its outcome.
    Answered(Vec<WriteOpResult>),
    /// The write is pending now: queue it with this reply, which answers every waiter.
    Leads(Reply),
    /// Not tracked (another write's content under the id, or a bound reached): queue it
    /// with this reply, which answers the caller alone.
    Alone(Reply),
}

impl PendingWrites {
    /// Admits the write `request_id` with `fingerprint`, whose caller waits on the receiver
    /// of `waiter`.
    pub fn admit(
        self: &Arc<Self>,
        request_id: RequestId,
        fingerprint: Fingerprint,
        waiter: oneshot::Sender<Outcome>,
    ) -> Admission {
        let mut writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((applied, results)) = writes.answered.get(&request_id) {
            if *applied == fingerprint {
                return Admission::Answered(results.clone());
            }
        }
        if let Some(pending) = writes.pending.get_mut(&request_id) {
            pending.waiters.retain(|waiting| !waiting.is_closed());
            if pending.fingerprint == fingerprint && pending.waiters.len() < MAX_WAITERS {
                pending.waiters.push(waiter);
                return Admission::Joined;
            }
            return Admission::Alone(Reply::direct(waiter));
        }
        if writes.pending.len() >= MAX_PENDING_WRITES {
            return Admission::Alone(Reply::direct(waiter));
        }
        writes.pending.insert(
            request_id,
            Pending {
                fingerprint,
                waiters: vec![waiter],
            },
        );
        Admission::Leads(Reply {
            to: Some(To::Pending(self.clone(), request_id)),
        })
    }

    /// Ends the pending write `request_id`: every waiter gets `outcome`.
    fn answer(&self, request_id: &RequestId, outcome: Outcome) {
        let removed = {
            let mut writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
            let removed = writes.pending.remove(request_id);
            if let (Some(pending), Ok(results)) = (&removed, &outcome) {
                writes.remember(*request_id, pending.fingerprint, results);
            }
            removed
        };
        debug_assert!(removed.is_some(), "a pending write is answered once");
        let Some(pending) = removed else { return };
        let mut waiters = pending.waiters;
        let last = waiters.pop();
        for waiter in waiters {
            let _ = waiter.send(duplicate(&outcome));
        }
        if let Some(last) = last {
            let _ = last.send(outcome);
        }
    }

    /// How many writes are pending.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pending
            .len()
    }
}

fn duplicate(outcome: &Outcome) -> Outcome {
    match outcome {
        Ok(results) => Ok(results.clone()),
        Err(err) => Err(err.duplicate()),
    }
}

/// Where a queued write's outcome goes. Dropped unanswered (the batcher stopped), it
/// answers that the outcome is unknown.
pub struct Reply {
    to: Option<To>,
}

enum To {
    Caller(oneshot::Sender<Outcome>),
    Pending(Arc<PendingWrites>, RequestId),
}

impl Reply {
    /// A reply to one caller.
    pub fn direct(caller: oneshot::Sender<Outcome>) -> Reply {
        Reply {
            to: Some(To::Caller(caller)),
        }
    }

    /// Answers the write.
    pub fn send(mut self, outcome: Outcome) {
        match self.to.take() {
            Some(To::Caller(caller)) => {
                let _ = caller.send(outcome);
            }
            Some(To::Pending(pending, request_id)) => pending.answer(&request_id, outcome),
            None => {}
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        // A caller's dropped sender tells it by itself; the waiters of a pending write are
        // told here, and the write is no longer pending.
        if let Some(To::Pending(pending, request_id)) = self.to.take() {
            pending.answer(
                &request_id,
                Err(NodeError::OutcomeUnknown(
                    "the write was dropped while the shard shut down".to_string(),
                )),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(version: u64) -> Outcome {
        Ok(vec![WriteOpResult {
            succeeded: true,
            version,
            ..WriteOpResult::default()
        }])
    }

    /// A retry with the same id and content joins; both callers get the outcome, and the
    /// write is no longer pending once answered.
    #[tokio::test]
    async fn a_retry_joins_and_shares_the_outcome() {
        let table = Arc::new(PendingWrites::default());
        let (first, first_outcome) = oneshot::channel();
        let Admission::Leads(reply) = table.admit([1; 16], [7; 16], first) else {
            panic!("the first write leads");
        };
        let (retry, retry_outcome) = oneshot::channel();
        assert!(matches!(table.admit([1; 16], [7; 16], retry), Admission::Joined));
        reply.send(applied(5));
        assert_eq!(
            first_outcome.await.expect("answered").expect("applied")[0].version,
            5
        );
        assert_eq!(
            retry_outcome.await.expect("answered").expect("applied")[0].version,
            5
        );
        assert_eq!(table.len(), 0);
    }

    /// A retry of a write applied a moment ago is answered at once with its outcome, without
    /// the values of failed comparisons (as de-duplication answers it); other content under
    /// the id, and a retry of a write that failed, are queued. Only the last `MAX_ANSWERED`
    /// are remembered.
    #[tokio::test]
    async fn a_retry_of_an_applied_write_is_answered_at_once() {
        let table = Arc::new(PendingWrites::default());
        let (first, _first_outcome) = oneshot::channel();
        let Admission::Leads(reply) = table.admit([1; 16], [7; 16], first) else {
            panic!("the first write leads");
        };
        let failed_comparison = WriteOpResult {
            succeeded: false,
            current: Some(crate::raft::types::Current {
                version: 4,
                value: Some(b"big".to_vec()),
            }),
            ..WriteOpResult::default()
        };
        reply.send(Ok(vec![failed_comparison]));
        let (retry, _) = oneshot::channel();
        let Admission::Answered(results) = table.admit([1; 16], [7; 16], retry) else {
            panic!("a retry of an applied write is answered");
        };
        let current = results[0].current.as_ref().expect("the comparison's version");
        assert_eq!((current.version, current.value.as_ref()), (4, None));
        let (other, _) = oneshot::channel();
        let other = table.admit([1; 16], [8; 16], other);
        assert!(matches!(other, Admission::Leads(_)), "other content is queued");
        drop(other);

        let (failing, _) = oneshot::channel();
        let Admission::Leads(reply) = table.admit([2; 16], [7; 16], failing) else {
            panic!("leads");
        };
        reply.send(Err(NodeError::NotInitialized));
        let (retry, _) = oneshot::channel();
        assert!(matches!(
            table.admit([2; 16], [7; 16], retry),
            Admission::Leads(_)
        ));

        for n in 0..MAX_ANSWERED as u32 {
            let mut id = [0; 16];
            id[..4].copy_from_slice(&n.to_be_bytes());
            id[15] = 9;
            let (write, _) = oneshot::channel();
            if let Admission::Leads(reply) = table.admit(id, [7; 16], write) {
                reply.send(applied(1));
            }
        }
        let (late, _) = oneshot::channel();
        assert!(
            matches!(table.admit([1; 16], [7; 16], late), Admission::Leads(_)),
            "forgotten"
        );
    }

    /// The same id with other content is not joined (de-duplication refuses it later).
    #[test]
    fn other_content_under_the_id_goes_alone() {
        let table = Arc::new(PendingWrites::default());
        let (first, _first_outcome) = oneshot::channel();
        let _reply = table.admit([1; 16], [7; 16], first);
        let (other, _other_outcome) = oneshot::channel();
        assert!(matches!(
            table.admit([1; 16], [8; 16], other),
            Admission::Alone(_)
        ));
    }

    /// Waiters are bounded: callers that gave up are pruned, and beyond the bound a retry
    /// goes alone.
    #[test]
    fn waiters_are_bounded() {
        let table = Arc::new(PendingWrites::default());
        let (first, _first_outcome) = oneshot::channel();
        let _reply = table.admit([1; 16], [7; 16], first);
        for _ in 0..2 * MAX_WAITERS {
            let (gave_up, outcome) = oneshot::channel();
            drop(outcome);
            assert!(matches!(
                table.admit([1; 16], [7; 16], gave_up),
                Admission::Joined
            ));
        }
        let mut kept = Vec::new();
        for _ in 1..MAX_WAITERS {
            let (waiting, outcome) = oneshot::channel();
            kept.push(outcome);
            assert!(matches!(
                table.admit([1; 16], [7; 16], waiting),
                Admission::Joined
            ));
        }
        let (one_more, _outcome) = oneshot::channel();
        assert!(matches!(
            table.admit([1; 16], [7; 16], one_more),
            Admission::Alone(_)
        ));
    }

    /// A reply dropped unanswered (the batcher stopped) tells every waiter the outcome is
    /// unknown and ends the pending write.
    #[tokio::test]
    async fn a_dropped_reply_answers_outcome_unknown() {
        let table = Arc::new(PendingWrites::default());
        let (first, first_outcome) = oneshot::channel();
        let reply = table.admit([1; 16], [7; 16], first);
        let (retry, retry_outcome) = oneshot::channel();
        assert!(matches!(table.admit([1; 16], [7; 16], retry), Admission::Joined));
        drop(reply);
        for outcome in [first_outcome, retry_outcome] {
            let err = outcome.await.expect("answered").expect_err("not applied");
            assert!(matches!(err, NodeError::OutcomeUnknown(_)), "{err:?}");
        }
        assert_eq!(table.len(), 0);
    }
}
