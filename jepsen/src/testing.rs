//! What the crate's integration tests share: where the binaries are, whether FUSE tests run,
//! and a small cluster on `ringkv-faultfs` disks in network namespaces.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cluster::{Cluster, ClusterSpec, Placement};
use crate::net::Network;

/// `$RINGKV_BIN_DIR`, else the profile directory above the test executable's `deps/`.
pub fn bin_dir() -> Result<PathBuf> {
    ringkv_launcher::binaries::env_bin_dir()
        .map_or_else(ringkv_launcher::binaries::executable_dir, Ok)
        .context("locating the binaries")
}

/// Whether a test that needs FUSE runs (`ringkv_faultfs::fuse_or_skip`): skipped, with the
/// reason, only where FUSE is missing and `RINGKV_SKIP_FUSE_TESTS=1`; a missing FUSE otherwise
/// fails the test with the reason.
pub use ringkv_faultfs::fuse_or_skip;

/// Starts three nodes (replication factor 3) with `shards` shards and one router, each node
/// on a faultfs disk in a network namespace of the network `name` (short: it names the
/// namespaces), its state under `dir`. The nodes run fast Raft timers (heartbeats every
/// 100 ms, elections after 500 ms) unless `node_args` set them, and `node_args`.
pub async fn three_nodes_on_faultfs(
    name: &str,
    shards: u32,
    node_args: &[&str],
    dir: &Path,
) -> Result<Cluster> {
    let network = Network::create(name, 3)?;
    let mut args = Vec::new();
    for (flag, value) in [
        ("--heartbeat-interval-ms", "100"),
        ("--election-timeout-min-ms", "500"),
    ] {
        if !node_args.contains(&flag) {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    args.extend(node_args.iter().map(|arg| arg.to_string()));
    let spec = ClusterSpec {
        nodes: 3,
        slots: 3,
        shards,
        replication_factor: 3,
        node_args: args,
        routers: 1,
        router_args: Vec::new(),
        bin_dir: bin_dir()?,
        fake_clock: false,
        disk_faults: true,
        tls: false,
    };
    Cluster::start(spec, dir, Placement::Namespaces(Box::new(network))).await
}
