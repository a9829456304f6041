//! The routers one [`Client`](crate::Client) talks to, and the IO half of failover.
//!
//! [`Routers`] holds one lazily connected channel per router and the index of the router
//! tried first. [`Routers::call`] runs one RPC with retries, driven by the pure decisions of
//! `retry` ([`RetryState`]): it only times, rotates and backs off. Both the key-value API
//! (`client`) and streamed scans (`scan`) build on this module; it knows neither of them.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_proto::v1::tso_client::TsoClient;
use ringkv_proto::v1::txn_client::TxnClient;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Response, Status};
use tracing::debug;

use crate::credentials::{AuthChannel, Bearer, Credentials};
use crate::endpoint::{authority_of, lazy_channel, normalize_endpoint};
use crate::error::Failure;
use crate::pipeline::KvPipeline;
use crate::retry::{backoff_for_round, Decision, OpKind, RetryState};
use crate::{ClientConfig, Error};

/// Extra time granted to tonic's own deadline handling before the attempt is abandoned
/// locally, so the transport reports the timeout itself when it can.
const DEADLINE_SLACK: Duration = Duration::from_millis(50);

/// Least time left on the deadline for another attempt to be worth making.
const MIN_RETRY_BUDGET: Duration = Duration::from_millis(100);

/// The routers of a client, in rotation order, with the shared configuration.
pub(crate) struct Routers {
    endpoints: Vec<RouterEndpoint>,
    /// Index (modulo the endpoint count) of the router tried first.
    current: AtomicUsize,
    config: ClientConfig,
    /// A token or password login (none: the certificate's user).
    credentials: Option<Arc<Credentials>>,
}

impl std::fmt::Debug for Routers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routers")
            .field("endpoints", &self.endpoints)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(crate) struct RouterEndpoint {
    /// `host:port` for messages.
    address: String,
    channel: Channel,
    /// `channel` sending the client's token with each call.
    authenticated: AuthChannel,
    /// Gets, puts, deletes and compare-and-swaps as frames on one stream (`pipeline.rs`).
    pipeline: Arc<KvPipeline>,
}

impl RouterEndpoint {
    /// The channel to the router, sending the client's token with each call.
    pub(crate) fn channel(&self) -> AuthChannel {
        self.authenticated.clone()
    }

    /// The router's `Kv.Pipeline`.
    pub(crate) fn pipeline(&self) -> Arc<KvPipeline> {
        Arc::clone(&self.pipeline)
    }
}

impl std::fmt::Debug for RouterEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.address)
    }
}

impl Routers {
    /// Validates `config` and prepares a lazy channel per distinct endpoint
    /// (`host:port` or `http://host:port`); nothing is connected yet.
    pub(crate) fn new(endpoints: &[String], config: ClientConfig) -> Result<Routers, Error> {
        config.validate()?;
        let credentials = match &config.auth {
            Some(auth) => Some(Arc::new(Credentials::new(auth.clone())?)),
            None => None,
        };
        let mut routers: Vec<RouterEndpoint> = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let uri = normalize_endpoint(endpoint)?;
            let address = authority_of(&uri).to_string();
            if routers.iter().any(|router| router.address == address) {
                continue;
            }
            let channel = lazy_channel(&uri, &config)?;
            let authenticated = InterceptedService::new(channel.clone(), Bearer(credentials.clone()));
            let pipeline = Arc::new(KvPipeline::new(
                address.clone(),
                authenticated.clone(),
                credentials.clone(),
                config.max_message_bytes,
                config.connect_timeout,
                config.pipeline,
            ));
            routers.push(RouterEndpoint {
                address,
                channel,
                authenticated,
                pipeline,
            });
        }
        if routers.is_empty() {
            return Err(Error::InvalidArgument("no router endpoints given".into()));
        }
        Ok(Routers {
            endpoints: routers,
            current: AtomicUsize::new(0),
            config,
            credentials,
        })
    }

    /// The token in use and its expiry (unix ms, when known), after logging in if the
    /// client has a password and no fresh token; `None`: the client has no credentials.
    pub(crate) async fn token(&self) -> Result<Option<(String, Option<u64>)>, Error> {
        let Some(credentials) = &self.credentials else {
            return Ok(None);
        };
        let router = &self.endpoints[self.current.load(Ordering::Relaxed) % self.endpoints.len()];
        credentials
            .ensure(&router.channel, self.config.request_timeout)
            .await
            .map_err(|status| Failure::from_status(&status).error)?;
        Ok(credentials.token())
    }

    /// The router addresses (`host:port`), in rotation order.
    pub(crate) fn addresses(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|router| router.address.clone())
            .collect()
    }

    /// The configuration in use.
    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Waits before reopening a broken stream for the `round`-th time in a row.
    pub(crate) async fn resume_backoff(&self, round: u32) {
        let config = &self.config;
        let backoff = backoff_for_round(round, config.retry_backoff, config.max_retry_backoff)
            .mul_f64(rand::random_range(0.5..=1.0));
        tokio::time::sleep(backoff).await;
    }

    /// Runs one operation with failover across the routers: `attempt` gets a router's
    /// channel and the time left, and is called again (on the next router) as long as
    /// [`RetryState`] decides the failure is worth a retry.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        kind: OpKind,
        operation: &str,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(AuthChannel, Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.call_on(kind, operation, |router, remaining| {
            attempt(router.channel(), remaining)
        })
        .await
    }

    /// [`Routers::call`] whose `attempt` gets the router itself (its channel and its
    /// pipeline).
    pub(crate) async fn call_on<T, F, Fut>(
        &self,
        kind: OpKind,
        operation: &str,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(&RouterEndpoint, Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let config = &self.config;
        let endpoint_count = u32::try_from(self.endpoints.len()).unwrap_or(u32::MAX);
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
            let raw_index = self.current.load(Ordering::Relaxed);
            let router = &self.endpoints[raw_index % self.endpoints.len()];
            let credentials = self.credentials.as_deref();
            let call = async {
                if let Some(credentials) = credentials {
                    credentials.ensure(&router.channel, remaining).await?;
                }
                attempt(router, remaining).await
            };
            let outcome = tokio::time::timeout(remaining + DEADLINE_SLACK, call).await;
            let mut failure = match outcome {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => {
                    if status.code() == tonic::Code::Unauthenticated {
                        // Log in again next time (a rotated key, a token expired early).
                        if let Some(credentials) = credentials {
                            credentials.forget();
                        }
                    }
                    Failure::from_status(&status)
                }
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
                    let _ = self.current.compare_exchange(
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

/// Wraps a message in a request carrying `timeout` as its gRPC deadline.
pub(crate) fn with_deadline<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// An `Admin` client on `channel` (router-served calls) with the configured limit on
/// response size.
pub(crate) fn admin_client(channel: AuthChannel, max_message_bytes: usize) -> AdminClient<AuthChannel> {
    AdminClient::new(channel).max_decoding_message_size(max_message_bytes)
}

/// A `Tso` client on `channel`.
pub(crate) fn tso_client(channel: AuthChannel) -> TsoClient<AuthChannel> {
    TsoClient::new(channel)
}

/// A `Txn` client on `channel` with the configured message size limits.
pub(crate) fn txn_client(channel: AuthChannel, max_message_bytes: usize) -> TxnClient<AuthChannel> {
    TxnClient::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

/// A `Kv` client on `channel` with the configured message size limits.
pub(crate) fn kv_client(channel: AuthChannel, max_message_bytes: usize) -> KvClient<AuthChannel> {
    KvClient::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}
