//! The `ringkv.v1` wire contract: protobuf messages and tonic services.
//!
//! - `Kv` — the client API served by routers (`kv.proto`).
//! - `Lease` — leases (etcd's model) served by routers (`lease.proto`).
//! - `Admin` — cluster bootstrap and status (`admin.proto`).
//! - `ShardKv`, `Raft` — internal router→node and node→node services (`node.proto`).
//! - [`metadata`] — the `x-ringkv-*` metadata on error statuses (leader hints, rejected,
//!   outcome unknown), with the one setter and getter of each key.
//! - [`labels`] — the names shown for the enums (`ReplicaRole::label`, `MemberState::label`).
//! - [`budget`] — the byte budget of one reply (entries under 3.5 MiB, the whole reply under
//!   gRPC's default 4 MiB receive limit), and how a reply's entries are counted against it.
//! - [`descriptor`] — the compiled descriptors (server reflection) and each service's methods.
//! - [`watch`] — where a `Kv.Watch` got to per shard, and the re-sent events a resumed
//!   watch drops.
//!
//! This crate depends on nothing internal; every other ringkv crate depends on it.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod budget;
pub mod descriptor;
pub mod labels;
pub mod metadata;
pub mod watch;

/// Generated code for the `ringkv.v1` package.
pub mod v1 {
    tonic::include_proto!("ringkv.v1");
}
