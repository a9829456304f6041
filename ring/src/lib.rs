//! Pure placement logic (and key ranges) shared by nodes and routers. No IO, no async.
//!
//! - [`hash`]: the key hash, `siphash-2-4` with fixed keys. Part of the on-disk and wire
//!   contract: it must never change.
//! - [`shard`]: [`ShardId`] and the cut of the 64-bit hash ring into `S` equal shards.
//! - [`ring`]: [`Ring`], the consistent-hash ring of virtual-node tokens and the placement
//!   of each shard's replicas on it.
//! - [`keys`]: byte-string key ranges ([`keys::prefix_end`]), cut the same way by the
//!   node's storage and the router.
//!
//! Placement is a pure, deterministic function of (ring members, S, RF, V): every node and
//! router that holds the same ring computes the same replica sets.

pub mod hash;
pub mod keys;
pub mod ring;
pub mod shard;

pub use hash::key_hash;
pub use ring::{MemberState, Ring, RingConfig, RingError, RingMember, DEFAULT_VNODES_PER_NODE};
pub use shard::ShardId;

/// A node's identity in the cluster (never 0).
pub type NodeId = u64;
