//! Secondary commits after the answer: once a transaction's primary committed (its commit
//! point), the router answers the client and commits the other shards' locks in the
//! background — one consensus round less on every cross-shard commit's latency (Percolator
//! and TiKV do the same). Nothing depends on those commits for correctness: a reader meeting
//! a secondary lock asks the primary's record, finds it committed and commits the lock
//! itself.
//!
//! Bounded: at most [`MAX_IN_BACKGROUND`] transactions' secondaries at once; past that a
//! commit runs them before answering, as it used to (backpressure instead of a queue).
//! Owned: the router's handle shuts the tasks down, giving them a moment to finish; the
//! locks of any cut short are left to readers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

/// Most transactions whose secondaries commit in the background at once.
pub const MAX_IN_BACKGROUND: usize = 1024;

/// The background secondary commits of one router (cheap to clone: shared handles).
#[derive(Debug, Clone)]
pub struct SecondaryCommits {
    tasks: TaskTracker,
    stop: CancellationToken,
    slots: Arc<Semaphore>,
}

impl Default for SecondaryCommits {
    fn default() -> Self {
        SecondaryCommits::new(MAX_IN_BACKGROUND)
    }
}

impl SecondaryCommits {
    /// Room for `max` transactions' secondaries at once.
    pub fn new(max: usize) -> Self {
        SecondaryCommits {
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            slots: Arc::new(Semaphore::new(max)),
        }
    }

    /// A slot for one transaction's secondaries, or `None` when every slot is taken or the
    /// router is shutting down (the caller commits them itself before answering).
    pub fn slot(&self) -> Option<OwnedSemaphorePermit> {
        if self.stop.is_cancelled() {
            return None;
        }
        Arc::clone(&self.slots).try_acquire_owned().ok()
    }

    /// Runs `commits` in the background, holding `slot` until they end or shutdown cuts
    /// them short.
    pub fn spawn(&self, slot: OwnedSemaphorePermit, commits: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            let _slot = slot;
            tokio::select! {
                () = commits => {}
                () = stop.cancelled() => debug!("secondary commits cut short by shutdown; left to readers"),
            }
        });
    }

    /// Background commits running now.
    pub fn running(&self) -> usize {
        self.tasks.len()
    }

    /// Waits up to `grace` for the running commits, then cuts the rest short and joins them.
    pub async fn shutdown(&self, grace: Duration) {
        self.tasks.close();
        if self.running() > 0 {
            debug!(running = self.running(), "waiting for secondary commits");
        }
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            self.stop.cancel();
            self.tasks.wait().await;
        }
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_bound_the_background_and_shutdown_joins_it() {
        let commits = SecondaryCommits::new(2);
        let (release, released) = tokio::sync::watch::channel(false);
        for _ in 0..2 {
            let slot = commits.slot().expect("a free slot");
            let mut released = released.clone();
            commits.spawn(slot, async move {
                let _ = released.wait_for(|done| *done).await;
            });
        }
        assert!(commits.slot().is_none(), "both slots taken: commit inline");
        assert_eq!(commits.running(), 2);
        release.send_replace(true);
        commits.shutdown(Duration::from_secs(5)).await;
        assert_eq!(commits.running(), 0);
        assert!(commits.slot().is_none(), "no background after shutdown");
    }

    #[tokio::test]
    async fn shutdown_cuts_short_what_does_not_finish() {
        let commits = SecondaryCommits::new(1);
        let slot = commits.slot().expect("a free slot");
        commits.spawn(slot, std::future::pending());
        commits.shutdown(Duration::from_millis(10)).await;
        assert_eq!(commits.running(), 0);
    }
}
