//! Group commit, node side: appends of every group queue their entries in the WAL, then hand
//! their `LogFlushed` callback here, and the WAL's writer thread calls it back after the
//! `fdatasync` that covers them (one sync acknowledges the appends of every group queued
//! meanwhile; see `ringkv_wal`'s `writer` module).
//!
//! Correctness rests on one ordering: a caller queues its entries in the WAL *before*
//! handing over the callback, and the WAL waits for everything queued before the callback
//! was registered. A failed write or fdatasync stops the node (the WAL's `on_failure` is
//! `storage::fail_stop`): no waiter of that batch or any later one is acknowledged. (Under
//! the negative control `fail_stop::ignore_storage_errors` the WAL logs the failure and the
//! waiters are acknowledged.)

use tokio::sync::oneshot;

use ringkv_wal::{Wal, WalError};

use super::types::TypeConfig;
use crate::storage::StorageError;

/// Acknowledges appends once the WAL made them durable; cheap to clone. Owns no task: the
/// WAL's writer thread does the work and is stopped by `Wal::close` at node shutdown.
#[derive(Clone)]
pub struct Flusher {
    wal: Wal,
    /// The unsafe negative control `--unsafe-skip-fsync`: waiters are acknowledged once
    /// their entries are written, without a sync.
    skip_fsync: bool,
}

impl Flusher {
    pub fn new(wal: Wal, skip_fsync: bool) -> Flusher {
        Flusher { wal, skip_fsync }
    }

    /// Acknowledges `callback` once everything queued in the WAL so far is durable. Returns
    /// at once; the WAL's writer thread calls back.
    pub fn flush_log(&self, callback: openraft::storage::LogFlushed<TypeConfig>) {
        let done: ringkv_wal::Done = Box::new(move |result: Result<(), WalError>| {
            callback.log_io_completed(result.map_err(std::io::Error::other));
        });
        self.register(done);
    }

    /// Waits until everything queued in the WAL so far is durable (without blocking a
    /// worker thread).
    pub async fn flush(&self) -> Result<(), StorageError> {
        wait_for(|done| self.register(done)).await
    }

    fn register(&self, done: ringkv_wal::Done) {
        if self.skip_fsync {
            self.wal.on_written(done);
        } else {
            self.wal.on_durable(done);
        }
    }
}

/// Waits until everything queued in `wal` so far is durable, whatever
/// `--unsafe-skip-fsync` says: what [`Wal::sync`] does, without blocking a worker thread.
pub async fn synced(wal: &Wal) -> Result<(), StorageError> {
    wait_for(|done| wal.on_durable(done)).await
}

/// Hands `register` the WAL callback and waits for it.
async fn wait_for(register: impl FnOnce(ringkv_wal::Done)) -> Result<(), StorageError> {
    let (tx, rx) = oneshot::channel();
    register(Box::new(move |result| {
        let _ = tx.send(result);
    }));
    rx.await
        .map_err(|_| StorageError::Engine("the write-ahead log's writer stopped".to_string()))?
        .map_err(StorageError::from)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn open_wal(dir: &std::path::Path) -> Wal {
        Wal::open(&dir.join("wal"), ringkv_wal::WalOptions::default())
            .expect("wal")
            .0
    }

    /// `flush` waits for the sync covering what was queued before it, and the entries are
    /// on disk afterwards (a reopen reads them back).
    #[tokio::test]
    async fn a_flush_covers_what_was_queued_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = open_wal(dir.path());
        let flusher = Flusher::new(wal.clone(), false);
        wal.append(1, 1, &[b"one".to_vec()]).expect("append");
        let syncs = wal.stats().syncs;
        tokio::time::timeout(Duration::from_secs(10), flusher.flush())
            .await
            .expect("in time")
            .expect("flush");
        assert!(wal.stats().syncs > syncs, "the flush ran a sync");
        wal.close().expect("close");
        drop(wal);
        drop(flusher);
        let reopened = open_wal(dir.path());
        assert_eq!(reopened.bounds(1), Some((1, 1)));
    }

    /// After the log closed, a flush answers at once instead of waiting for a writer that is gone.
    #[tokio::test]
    async fn a_flush_after_close_does_not_hang() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = open_wal(dir.path());
        let flusher = Flusher::new(wal.clone(), false);
        wal.close().expect("close");
        assert!(wal.append(1, 1, &[b"late".to_vec()]).is_err());
        let flushed = tokio::time::timeout(Duration::from_secs(10), flusher.flush())
            .await
            .expect("in time");
        // Nothing was queued: already durable.
        assert!(flushed.is_ok(), "{flushed:?}");
    }
}
