//! Multi-raft: one openraft group per shard plus the system group, all sharing one sled
//! `Db`, one group-commit flusher and one gRPC connection per peer node.
//!
//! - [`types`]: the openraft type config, commands and results.
//! - [`expiry`]: what writes say about their keys' expiry (TTL), and its entries.
//! - [`flusher`]: group commit — one fsync acknowledges appends of every group.
//! - [`log_store`]: the durable Raft log and vote (`RaftLogStorage`).
//! - [`state_machine`]: key → versioned value, CAS, request de-duplication, the cluster
//!   config (`RaftStateMachine`), split by concern (record layout, dedup, apply, reads).
//! - [`snapshot`]: the snapshot file format, its files on disk, and building and installing
//!   a state machine's snapshots.
//! - [`ring_change`]: ring membership changes as a pure function of the committed config,
//!   applied by the system group's state machine.
//! - [`network`]: the openraft network over the `Raft` gRPC service.
//! - [`pipeline`]: one stream per peer carrying the small Raft messages of every group.
//! - [`catch_up`]: one byte rate per node for snapshot chunks and the log entries read for
//!   followers that lag.

pub mod catch_up;
pub mod expiry;
pub mod flusher;
pub mod log_store;
pub mod network;
pub mod pipeline;
pub mod ring_change;
pub mod snapshot;
pub mod state_machine;
pub mod txn;
pub mod types;

use crate::storage::StorageError;
use types::RaftStorageError;

/// Wraps an engine error as an openraft storage error for `subject`.
pub(crate) fn storage_err(
    subject: openraft::ErrorSubject<types::NodeId>,
    verb: openraft::ErrorVerb,
    err: impl Into<StorageError>,
) -> RaftStorageError {
    let err: StorageError = err.into();
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&err)).into()
}

/// Encodes a value for storage or the wire.
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    postcard::to_allocvec(value).map_err(|err| StorageError::Corrupt {
        tree: "encode".to_string(),
        detail: err.to_string(),
    })
}

/// Decodes a value read from `tree`; a failure means the record is corrupt.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(tree: &str, bytes: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(bytes).map_err(|err| StorageError::Corrupt {
        tree: tree.to_string(),
        detail: err.to_string(),
    })
}
