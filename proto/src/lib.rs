//! The `ringkv.v1` wire contract: protobuf messages and tonic services.
//!
//! - `Kv` — the client API served by routers (`kv.proto`).
//! - `Admin` — cluster bootstrap and status (`admin.proto`).
//! - `ShardKv`, `Raft` — internal router→node and node→node services (`node.proto`).
//!
//! This crate depends on nothing internal; every other ringkv crate depends on it.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

/// Generated code for the `ringkv.v1` package.
pub mod v1 {
    tonic::include_proto!("ringkv.v1");
}

/// gRPC metadata key carrying the leader's node id on a not-leader error.
pub const LEADER_ID_METADATA: &str = "x-ringkv-leader-id";
/// gRPC metadata key carrying the leader's address on a not-leader error.
pub const LEADER_ADDR_METADATA: &str = "x-ringkv-leader-addr";
/// gRPC metadata key set on errors whose write outcome is unknown.
pub const OUTCOME_UNKNOWN_METADATA: &str = "x-ringkv-outcome-unknown";
/// gRPC metadata key set on write errors where the write was definitely not applied
/// (rejected before it was proposed), so a router may retry it anywhere.
pub const REJECTED_METADATA: &str = "x-ringkv-rejected";
