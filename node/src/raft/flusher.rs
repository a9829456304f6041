//! Group commit: one task owns [`Wal::sync`]; appends from every group hand it their
//! completion callback and are acknowledged after the next fdatasync that covers them.
//!
//! Correctness rests on one ordering: a caller writes its entries to the WAL *before*
//! handing over the callback, and the flusher starts a flush only after receiving it, so
//! that flush covers the entries. A failed fdatasync stops the node (`storage::fail_stop`):
//! no waiter of that flush or any later one is ever acknowledged. (Under the negative control
//! `fail_stop::ignore_storage_errors` the failure is logged and the waiters are acknowledged.)

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::trace;

use ringkv_wal::Wal;

use super::types::TypeConfig;
use crate::storage::StorageError;

/// Largest number of waiters acknowledged by one fsync; bounds the batch.
const MAX_BATCH: usize = 4096;
/// Bound of the request queue (callers wait when it is full: backpressure).
const QUEUE_CAPACITY: usize = 8192;

enum Waiter {
    Log(openraft::storage::LogFlushed<TypeConfig>),
    Notify(oneshot::Sender<Result<(), String>>),
}

/// Handle to the flusher task; cheap to clone.
#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::Sender<Waiter>,
}

impl Flusher {
    /// Starts the flusher task; it stops when `cancel` fires (after flushing once more).
    /// `skip_fsync` is the unsafe negative control: waiters are acknowledged without a flush.
    pub fn spawn(
        wal: Wal,
        cancel: CancellationToken,
        skip_fsync: bool,
    ) -> (Flusher, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let handle = tokio::spawn(run(wal, rx, cancel, skip_fsync));
        (Flusher { tx }, handle)
    }

    /// Acknowledges `callback` once everything written so far is durable.
    pub async fn flush_log(&self, callback: openraft::storage::LogFlushed<TypeConfig>) {
        if let Err(mpsc::error::SendError(Waiter::Log(callback))) = self.tx.send(Waiter::Log(callback)).await
        {
            callback.log_io_completed(Err(std::io::Error::other("flusher stopped")));
        }
    }

    /// Waits until everything written so far is durable.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Waiter::Notify(tx))
            .await
            .map_err(|_| StorageError::Engine("flusher stopped".to_string()))?;
        rx.await
            .map_err(|_| StorageError::Engine("flusher stopped".to_string()))?
            .map_err(StorageError::Engine)
    }
}

async fn run(wal: Wal, mut rx: mpsc::Receiver<Waiter>, cancel: CancellationToken, skip_fsync: bool) {
    let mut batch = Vec::with_capacity(64);
    loop {
        let first = tokio::select! {
            waiter = rx.recv() => waiter,
            _ = cancel.cancelled() => None,
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(waiter) => batch.push(waiter),
                Err(_) => break,
            }
        }
        let sync_wal = wal.clone();
        let result = if skip_fsync {
            Ok(())
        } else {
            match tokio::task::spawn_blocking(move || sync_wal.sync()).await {
                Ok(result) => result.map_err(|err| err.to_string()),
                Err(join_err) => Err(format!("flush task failed: {join_err}")),
            }
        };
        // Nothing in this batch or after it may be acknowledged: fail-stop (which returns only
        // under the negative control, which acknowledges the batch all the same).
        let result: Result<(), String> = result.or_else(|err| {
            crate::storage::fail_stop::storage_failed("an fdatasync of the write-ahead log", &err);
            Ok(())
        });
        trace!(waiters = batch.len(), "group commit");
        for waiter in batch.drain(..) {
            match waiter {
                Waiter::Log(callback) => {
                    callback.log_io_completed(result.clone().map_err(std::io::Error::other))
                }
                Waiter::Notify(tx) => {
                    let _ = tx.send(result.clone());
                }
            }
        }
    }
    // Fail whoever is still queued rather than leaving them waiting forever.
    rx.close();
    let final_flush = wal.sync().map_err(|err| err.to_string());
    while let Ok(waiter) = rx.try_recv() {
        match waiter {
            Waiter::Log(callback) => {
                callback.log_io_completed(final_flush.clone().map_err(std::io::Error::other))
            }
            Waiter::Notify(tx) => {
                let _ = tx.send(final_flush.clone());
            }
        }
    }
}
