//! ringkv through its router(s), with the client library.

use std::sync::Arc;

use ringkv_client::{Client, ClientConfig, ClientTls, Isolation, KeyRange, ReadConsistency, ScanOptions};

use crate::target::{Target, TargetError};
use crate::workload::{Consistency, TxnIsolation};
use crate::BenchError;

/// Records per `batch_put` of the load phase.
pub const LOAD_BATCH_RECORDS: usize = 100;

/// A pool of ringkv clients (one HTTP/2 connection each).
#[derive(Clone, Debug)]
pub struct RingkvTarget {
    clients: Arc<Vec<Client>>,
    connection: usize,
}

impl RingkvTarget {
    /// `connections` clients of the routers at `endpoints`, over TLS with `tls`.
    pub async fn connect(
        endpoints: &[String],
        tls: Option<ClientTls>,
        connections: usize,
    ) -> Result<RingkvTarget, BenchError> {
        let config = match tls {
            Some(tls) => ClientConfig::builder().tls(tls).build()?,
            None => ClientConfig::default(),
        };
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            clients.push(Client::connect_with(endpoints.to_vec(), config.clone()).await?);
        }
        Ok(RingkvTarget {
            clients: Arc::new(clients),
            connection: 0,
        })
    }

    fn client(&self) -> &Client {
        &self.clients[self.connection % self.clients.len()]
    }
}

impl Target for RingkvTarget {
    fn for_worker(&self, worker: usize) -> Self {
        RingkvTarget {
            clients: Arc::clone(&self.clients),
            connection: worker % self.clients.len(),
        }
    }

    async fn get(&self, key: Vec<u8>, consistency: Consistency) -> Result<bool, TargetError> {
        let consistency = match consistency {
            Consistency::Linearizable => ReadConsistency::Linearizable,
            Consistency::Stale => ReadConsistency::Stale,
        };
        Ok(self.client().get_with(key, consistency).await?.is_some())
    }

    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), TargetError> {
        self.client().put(key, value).await?;
        Ok(())
    }

    async fn scan(&self, start: Vec<u8>, records: u32) -> Result<usize, TargetError> {
        let page = self
            .client()
            .scan(
                &KeyRange::starting_at(start),
                &ScanOptions::new().limit(records),
                None,
            )
            .await?;
        Ok(page.entries.len())
    }

    async fn transact(
        &self,
        keys: Vec<Vec<u8>>,
        value: Vec<u8>,
        isolation: TxnIsolation,
    ) -> Result<(), TargetError> {
        let isolation = match isolation {
            TxnIsolation::ReadUncommitted => Isolation::ReadUncommitted,
            TxnIsolation::ReadCommitted => Isolation::ReadCommitted,
            TxnIsolation::RepeatableRead => Isolation::RepeatableRead,
            TxnIsolation::Serializable => Isolation::Serializable,
        };
        self.client()
            .transact(isolation, |txn| {
                let (keys, value) = (keys.clone(), value.clone());
                Box::pin(async move {
                    txn.batch_get(&keys).await?;
                    for key in keys {
                        txn.put(key, value.clone());
                    }
                    Ok(())
                })
            })
            .await?;
        Ok(())
    }

    async fn load(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), TargetError> {
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            let batch: Vec<_> = entries.by_ref().take(LOAD_BATCH_RECORDS).collect();
            self.client().batch_put(batch).await?;
        }
        Ok(())
    }
}
