//! `ringkv-launcher`: runs `ringkv-node` and `ringkv-router` as processes and brings a
//! cluster of them up. It knows them only as programs and through the protobuf contract
//! (it depends on `proto`, `client` and `tls`, never on `node` or `router`).
//!
//! Three harnesses build on it: the end-to-end tests (`tests/`), the fault-injection
//! harness (`jepsen/`, which runs nodes inside network namespaces and under libfaketime)
//! and `kvctl playground`. Each keeps its own policy (fates and nemeses, progress display);
//! the mechanics live here, once.
//!
//! # Modules
//! - [`binaries`] — where `ringkv-node` and `ringkv-router` are: next to the running
//!   executable (tests: above `deps/`) or in `$RINGKV_BIN_DIR`.
//! - [`process`] — [`Launch`] a process (args, env, an optional command prefix such as
//!   `ip netns exec <ns>`, a log file) and own it as a [`Process`]: signals, exit checks
//!   with the end of its log, kill and reap on drop; waiting for its address file.
//! - [`wait`] — [`wait_for`]: poll a condition until it holds, bounded by a timeout.
//! - [`cluster`] — `cluster init` through the client library, node statuses, and waiting
//!   until every shard has a leader.
//! - [`security`] — [`Security`]: `--insecure`, or mutual TLS with a [`ClusterCerts`]
//!   (a CA and node, router and client certificates made for the cluster).
//! - `error` — [`LaunchError`].
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use ringkv_launcher::{binaries::Binaries, cluster, Launch};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let binaries = Binaries::in_dir(&ringkv_launcher::binaries::executable_dir()?)?;
//! let dir = std::path::Path::new("/tmp/ringkv-example");
//! let mut node = Launch::new("node 1", &binaries.node)
//!     .args(["--node-id", "1", "--listen", "127.0.0.1:0", "--insecure", "--data-dir"])
//!     .arg(dir.join("node-1"))
//!     .arg("--addr-file")
//!     .arg(dir.join("node-1.addr"))
//!     .log(dir.join("node-1.log"))
//!     .spawn()?;
//! let addr = node.wait_for_addr_file(&dir.join("node-1.addr"), Duration::from_secs(30)).await?;
//! cluster::init_cluster(&[addr.clone()], 8, 1, None).await?;
//! cluster::wait_for_leaders(&[(1, addr)], 8, Duration::from_secs(30), Duration::from_secs(2), None).await?;
//! # Ok(())
//! # }
//! ```

pub mod binaries;
pub mod cluster;
mod error;
pub mod process;
pub mod security;
pub mod wait;

pub use error::LaunchError;
pub use process::{Launch, Process};
pub use security::{ClusterCerts, Security};
pub use wait::wait_for;
