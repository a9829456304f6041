//! [`Client`]: the typed key-value API over a set of routers, with failover.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1 as proto;
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::kv_client::KvClient;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Response, Status};
use tracing::debug;

use crate::endpoint::{authority_of, lazy_channel, normalize_endpoint};
use crate::error::Failure;
use crate::retry::{backoff_for_round, Decision, OpKind, RetryState};
use crate::types::versioned;
use crate::{CasOutcome, ClientConfig, Error, ReadConsistency, Versioned};

/// Length of the request id every write carries.
pub const REQUEST_ID_LEN: usize = 16;

/// Extra time granted to tonic's own deadline handling before the attempt is abandoned
/// locally, so the transport reports the timeout itself when it can.
const DEADLINE_SLACK: Duration = Duration::from_millis(50);

/// An async client of a ringkv cluster, talking to its routers.
///
/// Cheap to clone: clones share the connections. Connections are opened lazily on first
/// use. Each operation tries the routers in rotation on transport errors and
/// UNAVAILABLE answers, within [`ClientConfig::request_timeout`] and
/// [`ClientConfig::max_attempts`]; a router that answered stays the preferred one.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoints: Vec<RouterEndpoint>,
    /// Index (modulo the endpoint count) of the router tried first.
    current: AtomicUsize,
    config: ClientConfig,
}

#[derive(Debug)]
struct RouterEndpoint {
    /// `host:port` for messages.
    address: String,
    channel: Channel,
}

impl Client {
    /// Creates a client of the routers at `endpoints` (`host:port` or `http://host:port`)
    /// with the default [`ClientConfig`]. Nothing is connected until the first call.
    pub async fn connect(endpoints: Vec<String>) -> Result<Client, Error> {
        Client::connect_with(endpoints, ClientConfig::default()).await
    }

    /// Like [`Client::connect`] with an explicit configuration.
    pub async fn connect_with(endpoints: Vec<String>, config: ClientConfig) -> Result<Client, Error> {
        config.validate()?;
        let mut routers: Vec<RouterEndpoint> = Vec::with_capacity(endpoints.len());
        for endpoint in &endpoints {
            let uri = normalize_endpoint(endpoint)?;
            let address = authority_of(&uri).to_string();
            if routers.iter().any(|router| router.address == address) {
                continue;
            }
            let channel = lazy_channel(&uri, &config)?;
            routers.push(RouterEndpoint { address, channel });
        }
        if routers.is_empty() {
            return Err(Error::InvalidArgument("no router endpoints given".into()));
        }
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints: routers,
                current: AtomicUsize::new(0),
                config,
            }),
        })
    }

    /// The router addresses (`host:port`), in rotation order.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .endpoints
            .iter()
            .map(|router| router.address.clone())
            .collect()
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Reads `key` linearizably; `None` when it is absent.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Versioned>, Error> {
        self.get_with(key, ReadConsistency::Linearizable).await
    }

    /// Reads `key` with the given consistency; `None` when it is absent.
    pub async fn get_with(
        &self,
        key: impl AsRef<[u8]>,
        consistency: ReadConsistency,
    ) -> Result<Option<Versioned>, Error> {
        let message = proto::GetRequest {
            key: checked_key(key.as_ref())?,
            consistency: proto::Consistency::from(consistency) as i32,
        };
        let max_bytes = self.inner.config.max_message_bytes;
        let response = self
            .call(OpKind::Read, "get", |channel, timeout| {
                let request = with_deadline(message.clone(), timeout);
                async move { kv_client(channel, max_bytes).get(request).await }
            })
            .await?;
        Ok(versioned(response.found, response.value, response.version))
    }

    /// Stores `value` under `key`; returns the new version.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) -> Result<u64, Error> {
        let message = proto::PutRequest {
            key: checked_key(key.as_ref())?,
            value: value.into(),
            request_id: new_request_id(),
        };
        let max_bytes = self.inner.config.max_message_bytes;
        let response = self
            .call(OpKind::Write, "put", |channel, timeout| {
                let request = with_deadline(message.clone(), timeout);
                async move { kv_client(channel, max_bytes).put(request).await }
            })
            .await?;
        Ok(response.version)
    }

    /// Deletes `key`; returns whether a value existed.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool, Error> {
        let message = proto::DeleteRequest {
            key: checked_key(key.as_ref())?,
            request_id: new_request_id(),
        };
        let max_bytes = self.inner.config.max_message_bytes;
        let response = self
            .call(OpKind::Write, "delete", |channel, timeout| {
                let request = with_deadline(message.clone(), timeout);
                async move { kv_client(channel, max_bytes).delete(request).await }
            })
            .await?;
        Ok(response.existed)
    }

    /// Atomically replaces `key` if its version is `expected_version` (0 = the key must
    /// be absent). `new_value: None` deletes the key instead of storing a value.
    pub async fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        expected_version: u64,
        new_value: Option<Vec<u8>>,
    ) -> Result<CasOutcome, Error> {
        let delete = new_value.is_none();
        let message = proto::CompareAndSwapRequest {
            key: checked_key(key.as_ref())?,
            expected_version,
            new_value: new_value.unwrap_or_default(),
            delete,
            request_id: new_request_id(),
        };
        let max_bytes = self.inner.config.max_message_bytes;
        let response = self
            .call(OpKind::Write, "compare-and-swap", |channel, timeout| {
                let request = with_deadline(message.clone(), timeout);
                async move { kv_client(channel, max_bytes).compare_and_swap(request).await }
            })
            .await?;
        Ok(CasOutcome::from(response))
    }

    /// Reads many keys linearizably; one result per key, in order.
    pub async fn batch_get<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Versioned>>, Error> {
        self.batch_get_with(keys, ReadConsistency::Linearizable).await
    }

    /// Reads many keys with the given consistency; one result per key, in order.
    pub async fn batch_get_with<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
        consistency: ReadConsistency,
    ) -> Result<Vec<Option<Versioned>>, Error> {
        let keys = keys
            .into_iter()
            .map(|key| checked_key(key.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let expected = keys.len();
        let message = proto::BatchGetRequest {
            keys,
            consistency: proto::Consistency::from(consistency) as i32,
        };
        let max_bytes = self.inner.config.max_message_bytes;
        let response = self
            .call(OpKind::Read, "batch-get", |channel, timeout| {
                let request = with_deadline(message.clone(), timeout);
                async move { kv_client(channel, max_bytes).batch_get(request).await }
            })
            .await?;
        if response.results.len() != expected {
            return Err(Error::InvalidResponse(format!(
                "batch get of {expected} keys returned {} results",
                response.results.len()
            )));
        }
        Ok(response
            .results
            .into_iter()
            .map(|result| versioned(result.found, result.value, result.version))
            .collect())
    }

    /// Stores many entries (atomic per shard, not across shards); returns the version of
    /// each entry, in order.
    pub async fn batch_put<K: AsRef<[u8]>, V: Into<Vec<u8>>>(
        &self,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Vec<u64>, Error> {
        let entries = entries
            .into_iter()
            .map(|(key, value)| {
                Ok(proto::KeyValue {
                    key: checked_key(key.as_ref())?,
                    value: value.into(),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let expected = entries.len();
        let message = proto::BatchPutRequest {
            entries,
            request_id: new_request_id(),
        };
        let max_bytes = self.inner.config.max_message_bytes;
        let response = self
            .call(OpKind::Write, "batch-put", |channel, timeout| {
                let request = with_deadline(message.clone(), timeout);
                async move { kv_client(channel, max_bytes).batch_put(request).await }
            })
            .await?;
        if response.versions.len() != expected {
            // The batch was applied: report the mismatch without calling it a failure.
            return Err(Error::OutcomeUnknown(format!(
                "batch put of {expected} entries returned {} versions",
                response.versions.len()
            )));
        }
        Ok(response.versions)
    }

    /// The whole cluster as a router sees it: ring, nodes, shards and leaders.
    pub async fn cluster_status(&self) -> Result<proto::ClusterStatusResponse, Error> {
        let max_bytes = self.inner.config.max_message_bytes;
        self.call(OpKind::Read, "cluster status", |channel, timeout| {
            let request = with_deadline(proto::ClusterStatusRequest {}, timeout);
            async move {
                AdminClient::new(channel)
                    .max_decoding_message_size(max_bytes)
                    .cluster_status(request)
                    .await
            }
        })
        .await
    }

    /// Runs one operation with failover across routers.
    async fn call<T, F, Fut>(&self, kind: OpKind, operation: &str, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let config = &self.inner.config;
        let endpoint_count = u32::try_from(self.inner.endpoints.len()).unwrap_or(u32::MAX);
        let deadline = Instant::now() + config.request_timeout;
        let mut state = RetryState::new(kind);
        let mut attempts = 0u32;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(state.final_error(Error::DeadlineExceeded(format!(
                    "{operation} did not complete within {:?} ({attempts} attempts)",
                    config.request_timeout
                ))));
            }
            attempts += 1;
            let raw_index = self.inner.current.load(Ordering::Relaxed);
            let router = &self.inner.endpoints[raw_index % self.inner.endpoints.len()];
            let outcome = tokio::time::timeout(
                remaining + DEADLINE_SLACK,
                attempt(router.channel.clone(), remaining),
            )
            .await;
            let mut failure = match outcome {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => Failure::from_status(&status),
                Err(_elapsed) => Failure::deadline(format!(
                    "{operation} did not complete within {:?}",
                    config.request_timeout
                )),
            };
            if let Error::Transport(message) = &failure.error {
                failure.error = Error::Transport(format!("{}: {message}", router.address));
            }
            debug!(router = %router.address, attempts, error = %failure.error, "{operation} attempt failed");
            // A retry with almost no time left would only time out locally and turn a definite
            // failure into "outcome unknown"; give up with what we know instead.
            let budget_left = deadline.saturating_duration_since(Instant::now());
            let can_retry = attempts < config.max_attempts && budget_left > MIN_RETRY_BUDGET;
            match state.on_failure(failure, can_retry) {
                Decision::Fail(error) => return Err(error),
                Decision::Retry => {
                    // Prefer the next router from now on, unless another call moved on already.
                    let _ = self.inner.current.compare_exchange(
                        raw_index,
                        raw_index.wrapping_add(1),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    if attempts.is_multiple_of(endpoint_count) {
                        let round = attempts / endpoint_count;
                        let backoff =
                            backoff_for_round(round, config.retry_backoff, config.max_retry_backoff)
                                .mul_f64(rand::random_range(0.5..=1.0));
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        tokio::time::sleep(backoff.min(remaining)).await;
                    }
                }
            }
        }
    }
}

/// Least time left on the deadline for another attempt to be worth making.
const MIN_RETRY_BUDGET: Duration = Duration::from_millis(100);

/// A fresh random request id for one logical write (reused by its retries).
pub fn new_request_id() -> Vec<u8> {
    rand::random::<[u8; REQUEST_ID_LEN]>().to_vec()
}

/// Rejects the empty key locally (the contract requires at least one byte).
fn checked_key(key: &[u8]) -> Result<Vec<u8>, Error> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("key must not be empty".into()));
    }
    Ok(key.to_vec())
}

/// Wraps a message in a request carrying `timeout` as its gRPC deadline.
fn with_deadline<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

fn kv_client(channel: Channel, max_message_bytes: usize) -> KvClient<Channel> {
    KvClient::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Request ids are 16 random bytes, different each time.
    #[test]
    fn request_ids_are_random_16_bytes() {
        let first = new_request_id();
        let second = new_request_id();
        assert_eq!(first.len(), REQUEST_ID_LEN);
        assert_ne!(first, second);
    }

    /// The empty key is rejected before any network call.
    #[test]
    fn empty_key_is_invalid() {
        assert!(matches!(checked_key(b""), Err(Error::InvalidArgument(_))));
        assert_eq!(checked_key(b"k").expect("valid"), b"k".to_vec());
    }

    /// An empty endpoint list is rejected, duplicates are collapsed.
    #[tokio::test]
    async fn connect_validates_endpoints() {
        assert!(matches!(
            Client::connect(Vec::new()).await,
            Err(Error::InvalidArgument(_))
        ));
        let client = Client::connect(vec![
            "127.0.0.1:1".into(),
            "http://127.0.0.1:1".into(),
            "127.0.0.1:2".into(),
        ])
        .await
        .expect("valid endpoints");
        assert_eq!(client.endpoints(), vec!["127.0.0.1:1", "127.0.0.1:2"]);
    }
}
