//! ringkv's Jepsen-style fault-injection harness: it starts real `ringkv-node` and
//! `ringkv-router` processes, runs concurrent client workloads through the router while a
//! nemesis injects faults on a seeded schedule, records every operation, and checks the
//! history.
//!
//! - [`history`]: operations (invoke + ok/fail/info), the recorder, JSON export.
//! - [`edn`]: Jepsen EDN export and a parser for reading histories back.
//! - [`checker`]: linearizability (Wing–Gong–Lowe, per key), set (lost/duplicated adds),
//!   timestamps (unique, real-time order), snapshot (consistent prefixes of chains),
//!   Elle-style list-append and rw-register transactions against an isolation level, and
//!   the batch, scan, delete-range, stale-read, watch and TTL promises.
//! - [`net`]: network namespaces per node and silent packet-drop partitions (root only).
//! - [`netem`]: the userspace network emulator (latency, jitter, loss, reordering per link).
//! - [`cluster`]: the cluster under test (real processes, loopback or namespaces).
//! - [`nemesis`]: faults (partitions, kills, pauses) on a seeded schedule, healed at the end.
//! - [`workload`]: register, set, timestamp and snapshot clients that record every operation;
//!   [`append`], [`rw_register`] and [`bank`]: the transactional workloads; [`batch`],
//!   [`scan`] and [`delete_range`]: batch atomicity per shard, scan paging, delete-range;
//!   [`watch`] and [`ttl`]: watches resumed across faults, keys that expire; [`lock`]: locks
//!   on leases guarding a resource with fencing tokens.
//! - [`runner`]: one run end to end, writing the results directory.
//! - [`plot`]: the latency-over-time SVG with fault windows shaded.
//! - [`testing`]: what the integration tests share (binaries, FUSE check, a small cluster).

pub mod append;
pub mod bank;
pub mod batch;
pub mod checker;
pub mod cluster;
pub mod delete_range;
pub mod edn;
pub mod history;
pub mod lock;
pub mod nemesis;
pub mod net;
pub mod netem;
pub mod plot;
pub mod runner;
pub mod rw_register;
pub mod scan;
pub mod testing;
pub mod ttl;
pub mod watch;
pub mod workload;
