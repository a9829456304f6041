//! `ringkv-client`: the async Rust client of a ringkv cluster.
//!
//! A [`Client`] talks to the cluster's stateless routers over gRPC (`ringkv.v1.Kv` and
//! `Admin.ClusterStatus`). It connects lazily, sends every request with a gRPC deadline,
//! and fails over to the next router on transport errors and UNAVAILABLE answers,
//! within a bounded number of attempts. Every write carries a random 16-byte request id
//! that is reused by its retries, so the cluster applies it at most once. A write whose
//! outcome cannot be known is reported as [`Error::OutcomeUnknown`], never as a failure.
//!
//! # Modules
//! - [`client`](Client) — the key-value API: get, put, delete, compare-and-swap, batches,
//!   ordered range scans (paged or streamed), counts, range deletes, cluster status.
//! - [`ttl`](Ttl) — keys that expire: puts and compare-and-sets with a TTL, `expire`,
//!   `persist`, the time a key has left.
//! - [`lease`](Lease) — leases on keys with an absolute expiry (`expiry_at`): grant,
//!   keep-alive (once, or in the background with [`LeaseKeeper`]), revoke, time-to-live,
//!   list, `put_with_lease`.
//! - [`lock`](Held) — locks and leader elections on leases, with fencing tokens.
//! - [`config`](ClientConfig) — timeouts and retry bounds with a validating builder.
//! - [`admin`] — talking to storage nodes directly: `NodeStatus` and cluster bootstrap.
//! - [`error`](Error) — the error type; the single `tonic::Status` → [`Error`] mapping.
//! - `retry` — the failover and stream-resume decisions, pure and unit-tested.
//! - `routers` — the routers' channels and the IO loop of failover (`call`), which
//!   times, rotates and backs off as `retry` decides.
//! - `pipeline` — gets, puts, deletes and compare-and-swaps as frames on one
//!   `Kv.Pipeline` stream per router, answered as their unary calls (unary for large
//!   calls, for routers without the stream, and with [`ClientConfig::pipeline`] off).
//! - [`scan`](ScanStream) — checking scan results; streamed scans that resume after a
//!   break.
//! - [`watch`](WatchStream) — watches of a key, prefix or range, resumed from each shard's
//!   progress after a break without losing or repeating an event.
//!
//! Module dependencies run one way: `client` → `scan` → `routers` → `pipeline`, `retry`,
//! `endpoint`, `error`; `scan` does not know [`Client`].
//! - `endpoint` — parsing `host:port` / `http://host:port` / `https://host:port`; https
//!   channels with the config's [`ClientTls`] (mutual TLS).
//!
//! # Example
//!
//! ```no_run
//! use ringkv_client::{CasOutcome, Client, ClientConfig, Error};
//! use std::time::Duration;
//!
//! # async fn example() -> Result<(), Error> {
//! let config = ClientConfig::builder()
//!     .request_timeout(Duration::from_secs(2))
//!     .build()?;
//! let client = Client::connect_with(vec!["127.0.0.1:7000".into()], config).await?;
//!
//! let version = client.put("greeting", "hello").await?;
//! let current = client.get("greeting").await?;
//! assert_eq!(current.map(|v| v.value), Some(b"hello".to_vec()));
//!
//! // Replace the value only if nobody changed it since.
//! match client.compare_and_swap("greeting", version, Some(b"hi".to_vec())).await? {
//!     CasOutcome::Swapped { new_version } => println!("now at version {new_version}"),
//!     CasOutcome::Mismatch { current } => println!("lost the race: {current:?}"),
//! }
//!
//! match client.delete("greeting").await {
//!     Ok(existed) => println!("deleted (existed: {existed})"),
//!     // The delete may or may not have happened: read the key to find out.
//!     Err(Error::OutcomeUnknown(why)) => println!("outcome unknown: {why}"),
//!     Err(err) => return Err(err),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Ranges are read page by page, or streamed; a stream that breaks on a transient error
//! resumes where it stopped, so every key is seen once:
//!
//! ```no_run
//! use futures::TryStreamExt;
//! use ringkv_client::{Client, KeyRange, Mutation, ScanOptions};
//!
//! # async fn example(client: Client) -> Result<(), ringkv_client::Error> {
//! client
//!     .batch_write(vec![Mutation::put("user/1", "ada"), Mutation::put("user/2", "bob")])
//!     .await?;
//!
//! let users = KeyRange::prefix("user/");
//! let mut entries = client.scan_stream(&users, &ScanOptions::new()).entries();
//! while let Some(entry) = entries.try_next().await? {
//!     println!("{:?} = {:?}", entry.key, entry.value);
//! }
//! let deleted = client.delete_range(&users).await?;
//! println!("deleted {deleted} keys");
//! # Ok(())
//! # }
//! ```
//!
//! Bootstrapping a cluster talks to the nodes, not the routers:
//!
//! ```no_run
//! # async fn example() -> Result<(), ringkv_client::Error> {
//! let nodes = vec!["127.0.0.1:7001".to_string(), "127.0.0.1:7002".into(), "127.0.0.1:7003".into()];
//! let response = ringkv_client::admin::init_cluster(&nodes, 16, 3).await?;
//! println!("cluster {} (existed: {})", response.cluster_id, response.already_initialized);
//! # Ok(())
//! # }
//! ```

pub mod admin;
mod client;
mod config;
mod credentials;
mod endpoint;
mod error;
mod expiry_at;
mod lease;
mod lease_keeper;
mod lock;
mod pipeline;
mod retry;
mod routers;
mod scan;
pub mod timestamp;
mod ttl;
mod txn;
mod types;
mod watch;

pub use admin::init_cluster;
pub use client::{new_request_id, Client, REQUEST_ID_LEN};
pub use config::{
    ClientConfig, ClientConfigBuilder, ClientTls, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_RETRY_BACKOFF, DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_BACKOFF,
    DEFAULT_STREAM_IDLE_TIMEOUT,
};
pub use credentials::{ClientAuth, RENEW_BEFORE_EXPIRY};
pub use endpoint::normalize_endpoint;
pub use error::Error;
pub use expiry_at::ExpiringValue;
pub use lease::{
    every_range_with_reserved, Lease, LeaseId, LeaseStatus, LEASE_KEY_PREFIX, MAX_KEYS_PER_LEASE,
    MAX_LEASE_TTL_MS, MAX_RECORD_RACES, MIN_LEASE_TTL_MS, RESERVED_KEY_PREFIX,
};
pub use lease_keeper::{KeeperState, LeaseKeeper, KEEP_ALIVE_RETRY_PAUSE};
pub use lock::{Held, Leader, MAX_WAIT_SLICE, TOKEN_LOOKUP_TIMEOUT};
pub use ringkv_proto::v1 as proto;
pub use scan::ScanStream;
pub use ttl::Ttl;
pub use txn::{Committed, Isolation, Transaction, TxnGcProgress, TxnState, MAX_TRANSACT_RUNS};
pub use types::{
    CasOutcome, ContinuationToken, CountOptions, CountProgress, CountResult, KeyRange, Mutation,
    MutationResult, ReadConsistency, ScanEntry, ScanOptions, ScanPage, Versioned, DEFAULT_SCAN_PAGE_LIMIT,
    MAX_SCAN_PAGE_LIMIT,
};
pub use watch::{WatchEvent, WatchEventKind, WatchOptions, WatchPosition, WatchStream, WatchTarget};
