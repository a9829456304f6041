//! The systems a benchmark talks to, behind one trait: [`Target`].
//!
//! A target is a pool of connections (the same count for every system); each worker of a
//! run takes [`Target::for_worker`], a cheap handle bound to one connection, round-robin.
//! - [`ringkv`] — through the router, with `ringkv-client` (one `Client` per connection).
//! - [`etcd`] — etcd's v3 gRPC API (`etcdserverpb.KV` Range and Put), one channel per
//!   connection, connections spread over the members.

pub mod etcd;
pub mod ringkv;

use std::future::Future;

use crate::workload::{Consistency, Op, TxnIsolation};

/// A failed operation during a run (counted, not fatal).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// An error of the ringkv client.
    #[error("ringkv: {0}")]
    Ringkv(#[from] ringkv_client::Error),
    /// A gRPC status from etcd.
    #[error("etcd: {0}")]
    Etcd(#[from] tonic::Status),
    /// A transaction that kept conflicting.
    #[error("transaction conflicted {0} times in a row")]
    Conflicts(u32),
}

/// A key-value system under test.
pub trait Target: Clone + Send + Sync + 'static {
    /// A handle for worker number `worker`, bound to one of the pool's connections.
    fn for_worker(&self, worker: usize) -> Self;

    /// Reads `key`; whether it was found.
    fn get(
        &self,
        key: Vec<u8>,
        consistency: Consistency,
    ) -> impl Future<Output = Result<bool, TargetError>> + Send;

    /// Writes `value` under `key`.
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> impl Future<Output = Result<(), TargetError>> + Send;

    /// Reads up to `records` records in key order from `start` (linearizable); how many came.
    fn scan(&self, start: Vec<u8>, records: u32) -> impl Future<Output = Result<usize, TargetError>> + Send;

    /// One transaction: reads every key, then writes `value` to every key, atomically, at
    /// `isolation` (or the nearest stronger level the system offers); run again after a
    /// conflict until it commits.
    fn transact(
        &self,
        keys: Vec<Vec<u8>>,
        value: Vec<u8>,
        isolation: TxnIsolation,
    ) -> impl Future<Output = Result<(), TargetError>> + Send;

    /// Writes many records (the load phase); a system may batch them.
    fn load(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> impl Future<Output = Result<(), TargetError>> + Send {
        async move {
            for (key, value) in entries {
                self.put(key, value).await?;
            }
            Ok(())
        }
    }
}

/// Runs one generated operation; `value` is what writes store.
pub async fn execute<T: Target>(target: &T, op: Op, value: &[u8]) -> Result<(), TargetError> {
    match op {
        Op::Read { key, consistency } => target.get(key, consistency).await.map(drop),
        Op::Update { key } | Op::Insert { key } => target.put(key, value.to_vec()).await,
        Op::Scan { start, records } => target.scan(start, records).await.map(drop),
        Op::ReadModifyWrite { key } => {
            target.get(key.clone(), Consistency::Linearizable).await?;
            target.put(key, value.to_vec()).await
        }
        Op::Transaction { keys, isolation } => target.transact(keys, value.to_vec(), isolation).await,
    }
}
