//! Reads of a shard's transaction state: provisional values (read uncommitted), the locks
//! and the records a garbage collection visits. Each holds the apply lock for reading, like
//! every read (`read.rs`); none checks consistency: callers do.

use super::{join_error, mvcc, txn, GroupState};
use crate::raft::txn::{LockedKey, TxnOp};
use crate::raft::types::Versioned;
use crate::storage::StorageError;

impl GroupState {
    /// Reads `keys` at one point between applied entries with provisional values: a key
    /// locked by a transaction reads as the transaction's commit would leave it — a put's
    /// value, absent after a delete, the committed value with the suffix of an append — at
    /// version 0 (it has none yet); other keys read their heads. What READ UNCOMMITTED
    /// transactions read: the transaction may still roll back (a dirty read).
    pub async fn get_many_uncommitted(
        &self,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Versioned>>, StorageError> {
        let _guard = self.apply_lock.read().await;
        let tree = self.tree();
        let may_have_locks = self.may_have_locks();
        keys.iter()
            .map(|key| {
                let head = mvcc::head(&tree, key)?.map(mvcc::Head::versioned);
                let lock = if may_have_locks {
                    txn::lock(&tree, key)?
                } else {
                    None
                };
                let provisional = |value: Vec<u8>| Versioned { version: 0, value };
                Ok(match lock.map(|lock| lock.op) {
                    None => head,
                    Some(TxnOp::Put(value)) => Some(provisional(value)),
                    Some(TxnOp::Delete) => None,
                    Some(TxnOp::Append(suffix)) => {
                        let mut value = head.map(|head| head.value).unwrap_or_default();
                        value.extend_from_slice(&suffix);
                        Some(provisional(value))
                    }
                })
            })
            .collect()
    }

    /// Up to `limit` locks of transactions that started below `below`, in key order, and
    /// whether more exist (what garbage collection resolves before it purges records).
    pub async fn locks_below(
        &self,
        below: u64,
        limit: usize,
    ) -> Result<(Vec<LockedKey>, bool), StorageError> {
        if !self.may_have_locks() {
            return Ok((Vec::new(), false));
        }
        let guard = self.apply_lock.clone().read_owned().await;
        let tree = self.tree();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let mut found = Vec::new();
            let mut next = Vec::new();
            while let Some(locked) = txn::first_lock_in(&tree, &next, None, below.saturating_sub(1))? {
                if found.len() >= limit {
                    return Ok((found, true));
                }
                next = locked.key.clone();
                next.push(0);
                found.push(locked);
            }
            Ok((found, false))
        })
        .await
        .map_err(join_error)?
    }

    /// Whether a garbage collection at `safe_point` would delete a record here.
    pub async fn has_collectable_records(&self, safe_point: u64) -> Result<bool, StorageError> {
        let _guard = self.apply_lock.read().await;
        let (keys, more) = txn::collectable_below(&self.tree(), safe_point, 1)?;
        Ok(!keys.is_empty() || more)
    }
}
