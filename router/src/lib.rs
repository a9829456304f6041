//! ringkv router: a stateless gRPC proxy that serves the client API (`ringkv.v1.Kv`) and
//! `Admin.ClusterStatus`, and forwards every key to its shard's leader through the nodes'
//! `ShardKv` service.
//!
//! Start one with [`Router::start`]; stop it with [`RouterHandle::shutdown`].
//!
//! # Map
//! - Process: [`config`] (typed config, `validate()`), [`server`] ([`Router`],
//!   [`RouterHandle`]: bind, serve, graceful shutdown; each client connection's writes
//!   gathered by `coalesce`), [`log_format`] (JSON log lines
//!   for the binary).
//! - Services, one per file: `kv_service` (`Kv`: validation, shard lookup, batches; its
//!   `pipeline` serves `Kv.Pipeline`, a client's calls as frames on one stream, each
//!   answered as its unary call) and
//!   `admin_service` (`Admin`: cluster status; `NodeStatus` answers for the router itself,
//!   `InitCluster` UNIMPLEMENTED), `lease_service` (`Lease`: etcd's leases with a bounded
//!   keep-alive stream, on `lease_store`, the router's steps of the shared lease algorithm
//!   of `ringkv-lease`; the state stays in the lease records); `observe` (Prometheus metrics at `--metrics-addr`, the
//!   gRPC health service, server reflection).
//! - Request path: `context` (what handlers share), `validate` (limits),
//!   `deadline` (`grpc-timeout` → deadline), `inflight` (backpressure),
//!   `forward` (the retry loop), `one_key` (one key's write and answer, shared by `Kv` and
//!   `Lease`), `attempt_timeout` (a write attempt's timeout, adapted
//!   to the node's write latency), `backoff`, `classify` (node error → retry /
//!   ambiguity), `batch` (group by shard, sub-request ids, reassembly), `batch_get`
//!   (BatchGet in rounds within the reply budget, paged or refused when it does not fit),
//!   `range` (key ranges, continuation tokens), `scan` (the k-way merge of shard
//!   pages), `range_ops` (Scan, ScanStream, Count, DeleteRange), `streams` (server
//!   streams: their own slots, idle and total deadlines, one message at a time), `watch`
//!   (`Kv.Watch`: a task per shard following its leader's `ShardKv.Watch`, fanned in),
//!   [`error`] (`RouterError` and its one mapping to gRPC statuses), [`failpoint`]
//!   (test-only exits inside a commit, `--unsafe-failpoint`).
//! - Transactions: `txn_service` (`Txn`), `txn` (the two-phase commit coordinator),
//!   `secondaries` (secondary commits after the answer, bounded and owned), `txn_gc`
//!   (transaction-record collection), `tso` (the oracle client).
//! - Cluster view: `topology` (ring, node addresses, leader cache), `refresher`
//!   (the background `NodeStatus` poller), `cluster_status` (the status merge),
//!   `rebalance` (ring-change plans and rebalance progress), `gossip` (chitchat: liveness,
//!   and a topology refresh whenever the cluster changes),
//!   `convert` (protobuf ring → placement ring).
//! - Nodes: `node_api` (the calls the router makes, a trait so tests use fakes),
//!   `connections` (one lazily connected channel per node, the gRPC implementation), and
//!   `lane` with `read_merge` and `write_merge` (concurrent reads, and writes, of one shard
//!   on one node merged into one call while the previous one is in flight), and
//!   `node_pipeline` (the lanes' calls to one node as frames on one `ShardKv.Pipeline`
//!   stream).
//!
//! # Invariants
//! - Nothing is sent to a node before the request passed validation.
//! - A write keeps one request id across all its retries — the client's, or one the router
//!   chose once for a request without (`validate::request_id_or_random`); an ambiguous
//!   write that did not finally succeed, or a batch partly applied, is reported as "write
//!   outcome unknown" (with `x-ringkv-outcome-unknown: 1`), never as a plain failure.
//! - Every wait is bounded: per attempt by `rpc_timeout_ms` (a write's by up to 5 times it
//!   at a node whose writes take longer: `attempt_timeout`), per request by its deadline,
//!   fan-out by `max_fanout`, concurrency by `max_inflight_requests`; streams by
//!   `max_open_streams` (slots of their own), `stream_idle_timeout_ms`,
//!   `stream_total_timeout_ms` and `stream_buffer_bytes`.
//! - The router keeps no durable state: everything it knows is learnt from nodes.
//!
//! # Dependencies
//! Depends on `ringkv-proto` (wire contract), `ringkv-ring` (placement) and `ringkv-lease`
//! (the lease algorithm it shares with the client library), never on the node crate: nodes
//! are known only through the protobuf contract.

mod admin_service;
mod attempt_timeout;
mod auth;
mod auth_service;
mod backoff;
mod batch;
mod batch_get;
mod classify;
mod cluster_status;
mod coalesce;
pub mod config;
mod connections;
mod context;
mod convert;
mod deadline;
pub mod error;
pub mod failpoint;
mod forward;
mod gossip;
mod history_hold;
mod inflight;
mod kv_service;
mod lane;
mod lease_service;
mod lease_store;
pub mod log_format;
mod node_api;
mod node_pipeline;
mod observe;
mod one_key;
mod range;
mod range_ops;
mod read_merge;
mod rebalance;
mod refresher;
mod scan;
mod secondaries;
pub mod server;
mod streams;
mod topology;
mod tso;
mod tso_service;
mod txn;
mod txn_gc;
mod txn_service;
mod validate;
mod watch;
mod write_merge;

pub use config::{ConfigError, RouterConfig};
pub use error::{RouterError, ServeError, StartError};
pub use server::{Router, RouterHandle};
