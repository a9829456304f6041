//! The history budget a node's shards share (`mvcc.rs`'s `History` draws on it), and the
//! holds that keep a timestamp's history past the window for a backup (`Admin.HoldHistory`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How much history a node's shards keep in memory, together, and the timestamps whose
/// history must outlast the window: **holds** (`Admin.HoldHistory`, a backup reading at one
/// timestamp for longer than the window). A hold keeps every version superseded at or after
/// its timestamp until it expires or is released; the budget still bounds the bytes (past
/// it the oldest versions go all the same, and reads at the held timestamp are refused).
#[derive(Debug)]
pub struct HistoryBudget {
    used: AtomicUsize,
    max_bytes: usize,
    /// By hold id: the held timestamp and when the hold lapses.
    holds: Mutex<HashMap<u64, (u64, Instant)>>,
    /// The lowest held timestamp as last computed (`u64::MAX`: no hold), read without the
    /// lock on every applied entry.
    oldest_hold: AtomicU64,
}

/// Why a hold was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    #[error("too many history holds on this node (at most {})", HistoryBudget::MAX_HOLDS)]
    TooMany,
    #[error("a history hold lasts at most {max} ms, not {0}", max = HistoryBudget::MAX_HOLD.as_millis())]
    TooLong(u64),
    #[error("a history hold needs a non-zero id")]
    NoId,
}

impl HistoryBudget {
    /// Holds per node.
    pub const MAX_HOLDS: usize = 64;
    /// Longest hold between renewals.
    pub const MAX_HOLD: Duration = Duration::from_secs(600);

    pub fn new(max_bytes: usize) -> Arc<HistoryBudget> {
        Arc::new(HistoryBudget {
            used: AtomicUsize::new(0),
            max_bytes,
            holds: Mutex::default(),
            oldest_hold: AtomicU64::new(u64::MAX),
        })
    }

    /// Takes, renews (same id) or, with a zero `ttl`, releases a hold of `read_ts`.
    pub fn hold(&self, hold_id: u64, read_ts: u64, ttl: Duration) -> Result<(), HoldError> {
        if hold_id == 0 {
            return Err(HoldError::NoId);
        }
        if ttl > Self::MAX_HOLD {
            return Err(HoldError::TooLong(
                u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            ));
        }
        let mut holds = self.holds.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        holds.retain(|_, (_, until)| *until > now);
        if ttl.is_zero() {
            holds.remove(&hold_id);
        } else if holds.len() >= Self::MAX_HOLDS && !holds.contains_key(&hold_id) {
            return Err(HoldError::TooMany);
        } else {
            holds.insert(hold_id, (read_ts, now + ttl));
        }
        let oldest = holds.values().map(|(ts, _)| *ts).min().unwrap_or(u64::MAX);
        self.oldest_hold.store(oldest, Ordering::Relaxed);
        Ok(())
    }

    /// The lowest timestamp a live hold keeps (`u64::MAX`: none). Lock-free while no hold
    /// was ever taken or all were released.
    pub(super) fn oldest_hold(&self) -> u64 {
        if self.oldest_hold.load(Ordering::Relaxed) == u64::MAX {
            return u64::MAX;
        }
        let mut holds = self.holds.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        holds.retain(|_, (_, until)| *until > now);
        let oldest = holds.values().map(|(ts, _)| *ts).min().unwrap_or(u64::MAX);
        self.oldest_hold.store(oldest, Ordering::Relaxed);
        oldest
    }

    /// Bytes of history the node's shards hold.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether the shards hold more than the budget.
    pub(super) fn over(&self) -> bool {
        self.used() > self.max_bytes
    }

    /// Counts `bytes` more held.
    pub(super) fn charge(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `bytes` fewer held.
    pub(super) fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}
