//! etcd through its v3 gRPC API: `etcdserverpb.KV` Range and Put, from the wire-compatible
//! subset of etcd's protos in `bench/proto/` (see ARCHITECTURE.md "Decisions" for why not
//! the `etcd-client` crate).

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::target::{Target, TargetError};
use crate::workload::{Consistency, TxnIsolation};
use crate::BenchError;

/// The generated `etcdserverpb` and `mvccpb` code.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    /// etcd's multi-version key-value records.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// etcd's server API (KV.Range and KV.Put only).
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

use pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::etcdserverpb::request_op::Request;
use pb::etcdserverpb::response_op::Response;
use pb::etcdserverpb::{kv_client::KvClient, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// Runs of one transaction before it counts as failed (ringkv's client allows as many).
const MAX_TXN_RUNS: u32 = 32;

/// Bound on connecting to one member.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of one request (ringkv's client default is the same).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// `range_end` meaning "every key from `key` on".
const TO_THE_END: &[u8] = &[0];

/// A pool of channels to etcd members (one HTTP/2 connection each, round-robin over the
/// members, as etcd's own client balances).
#[derive(Clone, Debug)]
pub struct EtcdTarget {
    clients: Arc<Vec<KvClient<Channel>>>,
    connection: usize,
}

impl EtcdTarget {
    /// `connections` channels over the members at `endpoints` (`host:port`).
    pub async fn connect(endpoints: &[String], connections: usize) -> Result<EtcdTarget, BenchError> {
        if endpoints.is_empty() {
            return Err(BenchError::Usage("no etcd endpoint".into()));
        }
        let mut clients = Vec::with_capacity(connections);
        for index in 0..connections.max(1) {
            let endpoint = &endpoints[index % endpoints.len()];
            clients.push(KvClient::new(channel(endpoint).await?));
        }
        Ok(EtcdTarget {
            clients: Arc::new(clients),
            connection: 0,
        })
    }

    fn client(&self) -> KvClient<Channel> {
        self.clients[self.connection % self.clients.len()].clone()
    }
}

/// A connected channel to one member.
pub async fn channel(endpoint: &str) -> Result<Channel, BenchError> {
    let connect_error = |source| BenchError::EtcdConnect {
        endpoint: endpoint.to_string(),
        source,
    };
    Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(connect_error)?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(connect_error)
}

/// A linearizable read of `key` on one member: succeeds once the member is up and the
/// cluster has a leader.
pub async fn probe(endpoint: &str) -> Result<(), String> {
    let mut client = KvClient::new(channel(endpoint).await.map_err(|err| err.to_string())?);
    client
        .range(RangeRequest {
            key: b"ringkv-bench-probe".to_vec(),
            ..RangeRequest::default()
        })
        .await
        .map_err(|status| status.to_string())?;
    Ok(())
}

impl Target for EtcdTarget {
    fn for_worker(&self, worker: usize) -> Self {
        EtcdTarget {
            clients: Arc::clone(&self.clients),
            connection: worker % self.clients.len(),
        }
    }

    async fn get(&self, key: Vec<u8>, consistency: Consistency) -> Result<bool, TargetError> {
        let request = RangeRequest {
            key,
            serializable: consistency == Consistency::Stale,
            ..RangeRequest::default()
        };
        let response = self.client().range(request).await?.into_inner();
        Ok(!response.kvs.is_empty())
    }

    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), TargetError> {
        self.client()
            .put(PutRequest {
                key,
                value,
                ..PutRequest::default()
            })
            .await?;
        Ok(())
    }

    /// etcd's transactions are compare-and-swap: read the keys at one revision (a Txn of
    /// ranges), then a Txn that puts them only if none was modified since (`mod_revision`
    /// compares), else again. That is serializable, which etcd offers for any transaction, so
    /// every level runs the same.
    async fn transact(
        &self,
        keys: Vec<Vec<u8>>,
        value: Vec<u8>,
        _isolation: TxnIsolation,
    ) -> Result<(), TargetError> {
        let mut client = self.client();
        for _ in 0..MAX_TXN_RUNS {
            let reads = TxnRequest {
                success: keys
                    .iter()
                    .map(|key| RequestOp {
                        request: Some(Request::RequestRange(RangeRequest {
                            key: key.clone(),
                            ..RangeRequest::default()
                        })),
                    })
                    .collect(),
                ..TxnRequest::default()
            };
            let read = client.txn(reads).await?.into_inner();
            let compare = keys
                .iter()
                .zip(&read.responses)
                .map(|(key, response)| {
                    let mod_revision = match &response.response {
                        Some(Response::ResponseRange(range)) => {
                            range.kvs.first().map_or(0, |kv| kv.mod_revision)
                        }
                        _ => 0,
                    };
                    Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Mod as i32,
                        key: key.clone(),
                        target_union: Some(TargetUnion::ModRevision(mod_revision)),
                        range_end: Vec::new(),
                    }
                })
                .collect();
            let writes = TxnRequest {
                compare,
                success: keys
                    .iter()
                    .map(|key| RequestOp {
                        request: Some(Request::RequestPut(PutRequest {
                            key: key.clone(),
                            value: value.clone(),
                            ..PutRequest::default()
                        })),
                    })
                    .collect(),
                failure: Vec::new(),
            };
            if client.txn(writes).await?.into_inner().succeeded {
                return Ok(());
            }
        }
        Err(TargetError::Conflicts(MAX_TXN_RUNS))
    }

    async fn scan(&self, start: Vec<u8>, records: u32) -> Result<usize, TargetError> {
        let request = RangeRequest {
            key: start,
            range_end: TO_THE_END.to_vec(),
            limit: i64::from(records),
            ..RangeRequest::default()
        };
        let response = self.client().range(request).await?.into_inner();
        Ok(response.kvs.len())
    }
}
