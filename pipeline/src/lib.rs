//! Many unary calls on one gRPC stream per peer.
//!
//! A unary gRPC call costs an HTTP/2 stream, its headers and trailers, a task on the
//! receiver and a round through tonic's layers — per call. Where one process sends many
//! small calls to the same peer (a node's Raft messages to a follower, a router's reads and
//! writes to a node), this crate carries them as *frames* on one bidirectional stream
//! instead: the sender batches whatever queued while its previous send ran into one stream
//! message (never waiting to fill a batch), and the receiver answers each frame as it
//! completes, sending the answers ready at that moment together.
//!
//! - [`sender`]: [`Pipeline`], the sending side: a bounded queue and a driver task per
//!   peer; callers see the unary contract (a reply or a gRPC status).
//! - [`receiver`]: [`serve`], the receiving side: one task per stream answers its frames
//!   concurrently, bounded.
//! - [`status`]: a gRPC [`Status`](tonic::Status) as a frame carries it (code, message,
//!   details and metadata), so a frame fails exactly as its unary call would.
//!
//! What a frame and a stream message are is the [`Protocol`]'s (the caller's protobuf
//! messages): `Raft.Pipeline` in `ringkv-node`, `ShardKv.Pipeline` between router and node.

pub mod receiver;
pub mod sender;
pub mod status;

pub use receiver::{serve, Limits, Replies};
pub use sender::{Pipeline, Protocol};
