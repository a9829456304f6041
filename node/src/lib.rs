//! The ringkv storage node: hosts replicas of shards, each an openraft group, and the
//! system group that holds the cluster configuration and the ring.
//!
//! - [`config`]: the typed node configuration.
//! - [`storage`]: the storage seam (ordered trees, batches, flush) and its sled engine.
//! - [`raft`]: multi-raft plumbing — log store, state machine, snapshots, group commit,
//!   network.
//! - [`node`]: the node itself: group registry, bootstrap, reconciliation with the ring.
//! - [`proposal`]: proposing to a group (leader check, timeout) and per-shard write batching.
//! - [`service`]: the gRPC services (`ShardKv`, `Raft`, `Admin`) and error → status mapping.
//! - [`server`]: binds the listener, serves, shuts down.

pub mod config;
pub mod error;
pub mod node;
pub mod proposal;
pub mod raft;
pub mod server;
pub mod service;
pub mod storage;

pub use config::NodeConfig;
pub use server::{NodeHandle, NodeServer};
