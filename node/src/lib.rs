//! The ringkv storage node: hosts replicas of shards, each an openraft group, and the
//! system group that holds the cluster configuration and the ring.
//!
//! - [`config`]: the typed node configuration.
//! - [`convert`]: the node's enums as protobuf enums (replica roles, member states).
//! - [`storage`]: the storage seam (ordered trees, batches, flush) and its sled engine.
//! - [`raft`]: multi-raft plumbing — log store, state machine, snapshots, group commit,
//!   network.
//! - [`node`]: the node itself: group registry, bootstrap, reconciliation with the ring.
//! - [`ring_change`]: ring membership changes as a pure function of the committed config.
//! - [`rebalance`]: moving shard replicas toward placement (learner → catch up → joint
//!   consensus → removal) and deleting replicas this node no longer holds.
//! - [`membership`]: the system leader's duties: system-group membership, joining nodes
//!   becoming active, decommissions finishing, dead nodes declared.
//! - [`gossip_agent`]: gossip (chitchat): what this node publishes, and members' liveness.
//! - [`proposal`]: proposing to a group (leader check, timeout) and per-shard write batching.
//! - [`service`]: the gRPC services (`ShardKv`, `Raft`, `Admin`) and error → status mapping.
//! - [`server`]: binds the listener, serves, shuts down.

pub mod config;
pub mod convert;
pub mod error;
pub mod gossip_agent;
pub mod membership;
pub mod node;
pub mod proposal;
pub mod raft;
pub mod rebalance;
pub mod ring_change;
pub mod server;
pub mod service;
pub mod storage;
pub mod transfer;

pub use config::NodeConfig;
pub use server::{NodeHandle, NodeServer};
