//! Commit timestamps of a shard's writes, and the fence between them and snapshot reads.
//!
//! Every write entry of a shard carries a commit timestamp from the timestamp oracle
//! (`Command::WriteAt`), fetched by the shard's leader just before it proposes the entry.
//! A snapshot read at `R` must see every write with a commit timestamp at or below `R` and
//! none above, however the two race. [`ConcurrencyManager`] (one per shard group, used while
//! the replica leads) makes that so:
//!
//! - a read at `R` raises `max_read_ts` to `R`, then waits until no write registered with a
//!   timestamp at or below `R` is still being committed, then reads;
//! - a write registers its timestamp `T` only if `T > max_read_ts` (else it fetches a newer
//!   one), and unregisters once its entry is applied or failed.
//!
//! So a write a read missed commits above the read's timestamp, and a write below it was
//! waited for. Because every `T` comes from the oracle, a transaction that starts after a
//! write was acknowledged gets a larger start timestamp and sees it.
//!
//! A leader fetches each entry's timestamp and hands the entry to openraft under one lock
//! ([`ConcurrencyManager::proposing`]), so a shard's log holds its entries in timestamp
//! order: entries of an earlier term were fetched before this leader was elected, hence
//! below its timestamps. The state machine therefore commits every entry at the timestamp
//! it carries (it would lift one that came out of order just above the shard's highest).
//! A commit timestamp that did not come from the oracle could be missed by a read whose
//! timestamp was taken after the write was acknowledged.
//!
//! The oracle lives above the node's groups (`tso/`), so it is reached through the
//! [`TimestampSource`] trait, set once at start-up ([`TimestampSlot`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::Notify;

use crate::error::NodeError;

/// A source of oracle timestamps (the node's `tso::Oracle`).
pub trait TimestampSource: Send + Sync + 'static {
    /// One timestamp above every one handed out before the call began.
    fn timestamp(&self) -> Pin<Box<dyn Future<Output = Result<u64, NodeError>> + Send + '_>>;
}

/// Where the node's timestamp source is set once it runs (it needs the node to exist).
pub type TimestampSlot = Arc<OnceLock<Arc<dyn TimestampSource>>>;

/// Most times a write fetches a timestamp that a concurrent read already passed.
const MAX_FETCHES: usize = 8;

#[derive(Default)]
struct State {
    /// The highest timestamp a snapshot read was served at (or is being served at).
    max_read_ts: u64,
    /// The last local timestamp (`--unsafe-local-commit-ts` only).
    last_local: u64,
    /// Timestamps of writes being committed, with how many writes hold each.
    inflight: BTreeMap<u64, usize>,
}

/// The write/read fence of one shard (see the module docs).
#[derive(Default)]
pub struct ConcurrencyManager {
    state: Mutex<State>,
    /// Woken whenever a write unregisters.
    released: Notify,
    /// Held from fetching a write's timestamp until its entry is handed to openraft.
    proposing: tokio::sync::Mutex<()>,
    /// NEGATIVE CONTROL ONLY: timestamps of its own instead of the oracle's.
    unsafe_local: bool,
}

/// A registered write timestamp; unregisters on drop.
pub struct WriteTimestamp {
    manager: Arc<ConcurrencyManager>,
    commit_ts: u64,
}

impl WriteTimestamp {
    pub fn commit_ts(&self) -> u64 {
        self.commit_ts
    }
}

impl Drop for WriteTimestamp {
    fn drop(&mut self) {
        {
            let mut state = self.manager.lock();
            if let Some(holders) = state.inflight.get_mut(&self.commit_ts) {
                *holders -= 1;
                if *holders == 0 {
                    state.inflight.remove(&self.commit_ts);
                }
            }
        }
        self.manager.released.notify_waiters();
    }
}

impl ConcurrencyManager {
    /// A manager; `unsafe_local` is the `--unsafe-local-commit-ts` negative control.
    pub fn new(unsafe_local: bool) -> ConcurrencyManager {
        ConcurrencyManager {
            unsafe_local,
            ..ConcurrencyManager::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Held by a proposer from fetching its timestamp until openraft has its entry, so the
    /// shard's entries enter the log in timestamp order and the state machine commits each
    /// at the timestamp it carries (`state_machine/mvcc.rs`). A later entry still fetches
    /// while earlier ones are being replicated.
    pub async fn proposing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.proposing.lock().await
    }

    /// A commit timestamp for a write entry, registered until the returned guard drops.
    pub async fn write_timestamp(
        self: &Arc<Self>,
        source: &dyn TimestampSource,
    ) -> Result<WriteTimestamp, NodeError> {
        if self.unsafe_local {
            let mut state = self.lock();
            let commit_ts = state.max_read_ts.max(state.last_local) + 1;
            state.last_local = commit_ts;
            drop(state);
            if let Some(registered) = self.register(commit_ts) {
                return Ok(registered);
            }
        }
        for _ in 0..MAX_FETCHES {
            let commit_ts = source.timestamp().await?;
            if let Some(registered) = self.register(commit_ts) {
                return Ok(registered);
            }
        }
        Err(NodeError::Overloaded(format!(
            "snapshot reads kept passing this write's commit timestamp ({MAX_FETCHES} tries)"
        )))
    }

    /// Registers `commit_ts` unless a snapshot read already passed it.
    fn register(self: &Arc<Self>, commit_ts: u64) -> Option<WriteTimestamp> {
        let mut state = self.lock();
        if commit_ts <= state.max_read_ts {
            return None;
        }
        *state.inflight.entry(commit_ts).or_default() += 1;
        Some(WriteTimestamp {
            manager: Arc::clone(self),
            commit_ts,
        })
    }

    /// Fences writes at or below `read_ts`, then waits until none registered at or below it
    /// is still being committed. The read may then run: it sees every write at or below
    /// `read_ts` that will ever commit (once applied) and none above.
    /// Answers whether it waited for any write.
    pub async fn prepare_read(&self, read_ts: u64) -> bool {
        {
            let mut state = self.lock();
            state.max_read_ts = state.max_read_ts.max(read_ts);
        }
        let mut waited = false;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Register for the wake-up before looking, so a release in between is not lost.
            released.as_mut().enable();
            let pending = self.lock().inflight.range(..=read_ts).next().is_some();
            if !pending {
                return waited;
            }
            waited = true;
            released.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// Hands out 10, 11, 12, ...
    struct Counter(AtomicU64);

    impl TimestampSource for Counter {
        fn timestamp(&self) -> Pin<Box<dyn Future<Output = Result<u64, NodeError>> + Send + '_>> {
            Box::pin(async move { Ok(self.0.fetch_add(1, Ordering::SeqCst)) })
        }
    }

    /// A write whose timestamp a read already passed fetches a newer one.
    #[tokio::test]
    async fn writes_commit_above_every_read_served() {
        let manager = Arc::new(ConcurrencyManager::default());
        let source = Counter(AtomicU64::new(10));
        manager.prepare_read(12).await;
        let write = manager.write_timestamp(&source).await.expect("timestamp");
        assert_eq!(
            write.commit_ts(),
            13,
            "10, 11 and 12 were passed by the read at 12"
        );
    }

    /// A read waits for the writes registered at or below its timestamp, not above.
    #[tokio::test]
    async fn reads_wait_for_writes_at_or_below_them() {
        let manager = Arc::new(ConcurrencyManager::default());
        let source = Counter(AtomicU64::new(20));
        let below = manager.write_timestamp(&source).await.expect("timestamp");
        let above = manager.register(30).expect("registered");
        assert_eq!(below.commit_ts(), 20);
        let reader = {
            let manager = Arc::clone(&manager);
            tokio::spawn(async move { manager.prepare_read(25).await })
        };
        tokio::task::yield_now().await;
        assert!(!reader.is_finished(), "the write at 20 is still being committed");
        drop(below);
        let waited = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the read goes on once the write at 20 is done")
            .expect("reader task");
        assert!(
            waited,
            "the read says it waited (its caller confirms leadership again)"
        );
        assert!(!manager.prepare_read(25).await, "nothing left to wait for");
        drop(above);
        assert!(manager.register(25).is_none(), "25 is fenced by the read at 25");
        assert!(manager.register(26).is_some());
    }
}
