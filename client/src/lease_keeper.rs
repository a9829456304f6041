//! [`LeaseKeeper`]: a background task that keeps one lease alive, every third of its TTL,
//! until it is shut down or the lease is lost.
//!
//! The task is owned by the handle: [`LeaseKeeper::shutdown`] cancels and joins it (and
//! dropping the handle cancels it). A failed keep-alive is tried again after
//! [`KEEP_ALIVE_RETRY_PAUSE`] while the lease's deadline, as last extended, has not
//! passed by the local clock; once it has, or the cluster answers NOT_FOUND, the lease is
//! *lost*: [`LeaseKeeper::lost`] resolves with why, and the task ends. A holder of a lock
//! must stop using it then — and, since a paused process learns this late, guard the
//! resource with the lock's fencing token as well.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::lease::{Lease, LeaseId};
use crate::{Client, Error};

/// Pause between attempts of a keep-alive that failed with a transient error (a bounded
/// pacing: the attempts stop at the lease's deadline).
pub const KEEP_ALIVE_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The keeper's view of its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeeperState {
    /// Kept alive; the latest deadline granted, an oracle timestamp.
    Alive { expires_at_ts: u64 },
    /// The lease expired or was revoked, or could not be kept alive before its deadline.
    Lost(String),
}

/// Keeps a lease alive in the background (see the module docs).
pub struct LeaseKeeper {
    id: LeaseId,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    state: watch::Receiver<KeeperState>,
}

impl Client {
    /// Starts keeping `lease` alive every third of its TTL (see [`LeaseKeeper`]).
    pub fn keep_lease_alive(&self, lease: Lease) -> LeaseKeeper {
        let cancel = CancellationToken::new();
        let (sender, state) = watch::channel(KeeperState::Alive {
            expires_at_ts: lease.expires_at_ts,
        });
        let task = tokio::spawn(keep_alive_loop(
            self.clone(),
            lease,
            cancel.clone(),
            Arc::new(sender),
        ));
        LeaseKeeper {
            id: lease.id,
            cancel,
            task: Some(task),
            state,
        }
    }
}

impl LeaseKeeper {
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// The keeper's latest view of the lease.
    pub fn state(&self) -> KeeperState {
        self.state.borrow().clone()
    }

    /// Resolves when the lease is lost, with why.
    pub async fn lost(&self) -> String {
        let mut state = self.state.clone();
        loop {
            if let KeeperState::Lost(why) = &*state.borrow_and_update() {
                return why.clone();
            }
            if state.changed().await.is_err() {
                return "the keep-alive task ended".to_string();
            }
        }
    }

    /// Stops keeping the lease alive (it then expires after its TTL, or revoke it) and
    /// waits for the task to end.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            if let Err(err) = task.await {
                debug!(lease = %self.id, %err, "lease keep-alive task ended abnormally");
            }
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn keep_alive_loop(
    client: Client,
    lease: Lease,
    cancel: CancellationToken,
    state: Arc<watch::Sender<KeeperState>>,
) {
    let period = lease.ttl / 3;
    // The local instant by which the lease's latest deadline passes (oracle and local
    // clocks both count milliseconds; the oracle's is the system leader's).
    let mut lapses_at = Instant::now() + lease.ttl;
    let mut next_at = Instant::now() + period;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(next_at) => {}
        }
        // The keep-alive's oracle timestamp is taken after this instant, so its deadline
        // is at least a TTL after it.
        let attempt_started = Instant::now();
        let attempt = tokio::select! {
            () = cancel.cancelled() => return,
            attempt = client.lease_keep_alive_once(lease.id) => attempt,
        };
        match attempt {
            Ok(kept) => {
                lapses_at = attempt_started + kept.ttl;
                next_at = Instant::now() + period;
                state.send_replace(KeeperState::Alive {
                    expires_at_ts: kept.expires_at_ts,
                });
            }
            Err(Error::NotFound(why)) => {
                state.send_replace(KeeperState::Lost(why));
                return;
            }
            Err(err) if Instant::now() + KEEP_ALIVE_RETRY_PAUSE >= lapses_at => {
                state.send_replace(KeeperState::Lost(format!(
                    "lease {} could not be kept alive before its deadline: {err}",
                    lease.id
                )));
                return;
            }
            Err(err) => {
                debug!(lease = %lease.id, %err, "lease keep-alive failed; trying again");
                next_at = Instant::now() + KEEP_ALIVE_RETRY_PAUSE;
            }
        }
    }
}
