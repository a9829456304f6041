//! Prometheus metrics of ringkv nodes and routers, with nothing internal underneath, and
//! the rate limit on their repeated log lines.
//!
//! - `histogram`: [`Histogram`], fixed latency buckets counted with atomics (no lock, no
//!   allocation per observation), and [`Snapshot`], the counts a scrape reads;
//! - `text`: [`Exposition`], the Prometheus text format (version 0.0.4) written family by
//!   family, label values escaped;
//! - `check`: [`check_exposition`], a strict reader of that format (tests use it on what a
//!   process serves);
//! - `rpc`: [`RpcMetrics`] and [`MeasureLayer`], requests, response codes and latency per
//!   method of a tonic server's services, counted before any service sees the request;
//! - `http`: [`MetricsServer`], the `/metrics` endpoint (HTTP/1.1 on hyper, a bounded number
//!   of connections, stopped with its handle);
//! - `reflection`: [`reflection`], gRPC server reflection over a process's descriptors;
//! - [`log_limit`]: repeated WARN and ERROR log lines written at most once per call site
//!   and interval, with a count of those left out.
//!
//! Nothing here is global: each process builds its metrics, renders them on every scrape
//! from its own state (so a series of a group a node no longer hosts is simply not written)
//! and hands the renderer to the endpoint.

mod check;
mod histogram;
mod http;
pub mod log_limit;
mod reflection;
mod rpc;
mod text;

pub use check::{check_exposition, ExpositionError};
pub use histogram::{Histogram, Snapshot, LATENCY_BOUNDS_SECONDS};
pub use http::{MetricsServer, Render};
pub use reflection::reflection;
pub use rpc::{CallCounter, MeasureLayer, Measured, MeasuredCall, MethodCounts, RpcMetrics};
pub use text::{Exposition, Family, Kind};
