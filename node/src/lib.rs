//! The ringkv storage node: hosts replicas of shards, each an openraft group, and the
//! system group that holds the cluster configuration and the ring.
//!
//! - [`config`]: the typed node configuration.
//! - [`convert`]: the node's enums as protobuf enums (replica roles, member states), and a
//!   write's op results as its reply.
//! - [`storage`]: the storage seam (ordered trees, batches, flush) and its sled engine.
//! - [`raft`]: multi-raft plumbing — log store, state machine, snapshots, group commit,
//!   network.
//! - [`group`]: one hosted Raft group and its life cycle on disk (open, initialise, destroy).
//! - [`node`]: the node itself: group registry, bootstrap, data path, status.
//! - [`peers`]: every node-to-node call besides Raft replication, behind one seam.
//! - [`reconcile`]: the reconciler — a pure planner over the ring and the local groups, and
//!   the executor that opens, initialises, moves and deletes replicas.
//! - [`rebalance`]: moving shard replicas toward placement (learner → catch up → joint
//!   consensus → removal) and deleting replicas this node no longer holds.
//! - [`membership`]: the system leader's duties: system-group membership, joining nodes
//!   becoming active, decommissions finishing, dead nodes declared.
//! - [`gossip_agent`]: gossip (chitchat): what this node publishes, and members' liveness.
//! - [`hibernation`]: quiet shard groups stop their Raft timers (one group's state, pure).
//! - [`keepalive`]: the node's hibernation driver: puts quiet groups to sleep, and one
//!   keep-alive per peer and interval stands in for the heartbeats of sleeping groups.
//! - [`expiry_purger`]: removes expired keys (TTL) from the shards led here, through Raft.
//! - [`pacing`]: spacing out periodic passes over every group while nothing is pending.
//! - [`proposal`]: proposing to a group (leader check, timeout) and per-shard write batching.
//! - [`dedup_clock`]: the clock a shard leader stamps on write entries, which ages
//!   de-duplication records (its monotonic clock, never its wall clock).
//! - [`service`]: the gRPC services (`ShardKv`, `Raft`, `Admin`) and error → status mapping.
//! - [`metrics`]: the Prometheus metrics a scrape renders from the node's state;
//!   [`health`]: the gRPC health service.
//! - [`server`]: the composition root: opens the node, starts the reconciler, the system
//!   duties and gossip, binds the listener, serves, shuts down in order.

pub mod concurrency;
pub mod config;
pub mod convert;
pub mod dedup_clock;
pub mod error;
pub mod expiry_purger;
pub mod gossip_agent;
pub mod group;
pub mod health;
pub mod hibernation;
pub mod keepalive;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod pacing;
pub mod peers;
pub mod proposal;
pub mod raft;
pub mod read_index;
pub mod rebalance;
pub mod reconcile;
pub mod server;
pub mod service;
pub mod storage;
pub mod transfer;
pub mod tso;

pub use config::NodeConfig;
pub use server::{NodeHandle, NodeServer};
