//! Linearizable reads share ReadIndex rounds.
//!
//! A linearizable read on a leader needs a ReadIndex round: openraft's
//! `ensure_linearizable` sends a heartbeat to every follower, waits for a quorum to confirm
//! the leadership, then waits until the state machine applied up to the commit index seen
//! when the round started. One round per read costs a heartbeat message to each follower
//! per read. [`ReadBatcher`] runs one round for every read that arrived before the round
//! started: reads queue while a round is in flight and the next round serves them all.
//!
//! Why sharing is safe: a round that *starts* after a read arrived confirms a commit index
//! at least as new as every write acknowledged before the read arrived, which is all that
//! linearizability asks of that read. A read never joins a round already in flight (that
//! round's commit index may predate a write the reader saw acknowledged).

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::NodeError;
use crate::proposal::forwarded_leader;
use crate::raft::types::{GroupId, Raft};

/// Most reads waiting for the next round (further readers wait for room: backpressure).
const QUEUE_CAPACITY: usize = 4096;

type Waiter = oneshot::Sender<Result<(), NodeError>>;

/// Handle to a group's read-round task; cheap to clone.
#[derive(Clone)]
pub struct ReadBatcher {
    tx: mpsc::Sender<Waiter>,
    group: GroupId,
}

impl ReadBatcher {
    /// Starts the task running `group`'s rounds (each bounded by `timeout_ms`); it stops
    /// when `cancel` fires. The caller owns the returned future (spawn it on the group's
    /// task tracker).
    pub fn spawn(
        raft: Raft,
        group: GroupId,
        timeout_ms: u64,
        cancel: CancellationToken,
    ) -> (
        ReadBatcher,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let task = run(raft, group, timeout_ms, rx, cancel);
        (ReadBatcher { tx, group }, task)
    }

    /// Waits until a read on the group at this moment would be linearizable.
    pub async fn confirm(&self) -> Result<(), NodeError> {
        let stopped = || NodeError::Fatal(format!("{} is shutting down", self.group));
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn run(
    raft: Raft,
    group: GroupId,
    timeout_ms: u64,
    mut rx: mpsc::Receiver<Waiter>,
    cancel: CancellationToken,
) {
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
            result = round(&raft, group, timeout_ms) => result,
            _ = cancel.cancelled() => Err(NodeError::Fatal(format!("{group} is shutting down"))),
        };
        for waiter in batch.drain(..) {
            let _ = waiter.send(result.as_ref().map(|_| ()).map_err(NodeError::duplicate));
        }
    }
}

/// One ReadIndex round: leadership confirmed by a quorum, then applied up to the read index.
async fn round(raft: &Raft, group: GroupId, timeout_ms: u64) -> Result<(), NodeError> {
    let check = tokio::time::timeout(Duration::from_millis(timeout_ms), raft.ensure_linearizable());
    match check.await {
        Err(_elapsed) => Err(NodeError::Timeout {
            what: format!("{group} to confirm leadership for a read"),
            timeout_ms,
            proposed: false,
        }),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
            Err(NodeError::NotLeader {
                group,
                leader: forwarded_leader(forward),
                proposed: false,
            })
        }
        Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(err)))) => Err(NodeError::NoQuorum {
            group,
            detail: err.to_string(),
        }),
        Ok(Err(RaftError::Fatal(fatal))) => Err(NodeError::Fatal(fatal.to_string())),
    }
}
