//! `ringkv-bench`: measures ringkv side by side with etcd, following the measuring
//! protocol of `BENCHMARKS.md` — one load generator with pluggable targets, the same
//! connection and concurrency counts for both, closed and open loops, fresh data
//! directories, one system at a time, medians over repetitions.
//!
//! # Modules
//! - [`config`] — [`BenchConfig`]: workloads, client counts, rates, durations; `validate()`.
//! - [`workload`] — workloads as data (YCSB A–F, W, put/get/stale-get), the zipfian
//!   generator and the pure operation generator.
//! - [`target`] — the [`target::Target`] trait and its two implementations: ringkv through
//!   the router (`ringkv-client`) and etcd's v3 gRPC API (a wire-compatible subset of
//!   `etcdserverpb`, compiled by protox in `build.rs`).
//! - [`system`] — starting the systems as processes (ringkv through `ringkv-launcher`, etcd
//!   as 3 members on loopback) and stopping them; or using running ones.
//! - [`procstat`] — CPU, bytes written and peak memory of server processes from `/proc`.
//! - [`driver`] — the closed and open loops (latency from the intended start: no
//!   coordinated omission), HdrHistogram; the load phase.
//! - [`suite`] — a whole benchmark: repetitions × systems × workloads × loops; progress.
//! - [`report`] — results, medians, the markdown table, the ringkv/etcd ratios, the JSON
//!   document.
//! - [`plot`] — a small SVG line chart; [`charts`] — the throughput and latency-CDF plots.
//! - [`output`] — writing `results.json`, the plots and a results README.
//! - `error` — [`BenchError`].
//!
//! Dependencies run one way: `suite` → `system`, `driver`, `report` → `target`,
//! `workload`, `procstat`; `output` → `charts` → `plot`, `report`.

pub mod charts;
pub mod config;
pub mod driver;
mod error;
pub mod output;
pub mod plot;
pub mod procstat;
pub mod report;
pub mod suite;
pub mod system;
pub mod target;
pub mod workload;

pub use config::BenchConfig;
pub use error::BenchError;
