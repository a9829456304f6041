//! Starting ringkv: 3 nodes on port 0 with fresh data directories, `cluster init`, a leader
//! for every shard, then the router, ready when a put through it succeeds. Without TLS
//! (`--insecure`), or with mutual TLS: certificates made for the cluster in its directory
//! (`ringkv_launcher::ClusterCerts`), the tool's client presenting the client certificate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ringkv_client::{Client, ClientConfig};
use ringkv_launcher::binaries::{env_bin_dir, executable_dir, is_release_build, Binaries, BIN_DIR_ENV};
use ringkv_launcher::{cluster, ClusterCerts, Launch, Security};

use super::{
    fresh_dir, wait_until_serving, RunningSystem, Started, SystemInfo, SystemKind, MEMBERS, STARTUP_TIMEOUT,
};
use crate::BenchError;

/// Deadline of one node status call while waiting for leaders.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// The node and router binaries: `--bin-dir`, else `$RINGKV_BIN_DIR`, else next to this
/// tool (so a `cargo build --release` puts them where `target/release/ringkv-bench` finds
/// them).
pub fn locate_binaries(bin_dir: Option<&Path>) -> Result<Binaries, BenchError> {
    let dirs: Vec<PathBuf> = match bin_dir {
        Some(dir) => vec![dir.to_path_buf()],
        None => env_bin_dir().into_iter().chain(executable_dir().ok()).collect(),
    };
    Ok(Binaries::find(
        &dirs,
        &format!("build them with `cargo build --release --bins` (or pass --bin-dir, or set {BIN_DIR_ENV})"),
    )?)
}

/// Starts 3 nodes with `shards` shards (replication factor 3) and a router in a fresh
/// directory under `parent`, speaking mutual TLS when `tls` is set.
pub async fn start(
    binaries: &Binaries,
    shards: u32,
    tls: bool,
    parent: &Path,
) -> Result<RunningSystem, BenchError> {
    let mut started = Started::new(fresh_dir(parent, SystemKind::Ringkv)?);
    let dir = started.data_dir.path().to_path_buf();
    let security = if tls {
        Security::Tls(ClusterCerts::create(&dir.join("certs"), "ringkv-bench")?)
    } else {
        Security::Insecure
    };
    let client_tls = security.client_tls()?;
    let mut nodes = Vec::new();
    for node_id in 1..=u64::from(MEMBERS) {
        let data_dir = dir.join(format!("node-{node_id}"));
        let addr_file = dir.join(format!("node-{node_id}.addr"));
        let launch = Launch::new(format!("ringkv node {node_id}"), &binaries.node)
            .arg("--node-id")
            .arg(node_id.to_string())
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .arg("--addr-file")
            .arg(&addr_file)
            .args(security.node_args())
            .log(dir.join(format!("node-{node_id}.log")));
        let process = started.spawn(launch)?;
        let addr = process.wait_for_addr_file(&addr_file, STARTUP_TIMEOUT).await?;
        nodes.push((node_id, addr));
    }
    let addrs: Vec<String> = nodes.iter().map(|(_, addr)| addr.clone()).collect();
    cluster::init_cluster(&addrs, shards, MEMBERS, client_tls.as_ref()).await?;
    cluster::wait_for_leaders(
        &nodes,
        shards,
        STARTUP_TIMEOUT,
        STATUS_TIMEOUT,
        client_tls.as_ref(),
    )
    .await?;

    let router_addr_file = dir.join("router.addr");
    let router = started.spawn(
        Launch::new("ringkv router", &binaries.router)
            .args(["--listen", "127.0.0.1:0", "--nodes"])
            .arg(addrs.join(","))
            .arg("--addr-file")
            .arg(&router_addr_file)
            .args(security.router_args())
            .log(dir.join("router.log")),
    )?;
    let router_addr = router
        .wait_for_addr_file(&router_addr_file, STARTUP_TIMEOUT)
        .await?;
    let mut probe_config = ClientConfig::builder()
        .request_timeout(STATUS_TIMEOUT)
        .max_attempts(1);
    if let Some(tls) = &client_tls {
        probe_config = probe_config.tls(tls.clone());
    }
    let probe_config = probe_config.build()?;
    let client = Client::connect_with(vec![router_addr.clone()], probe_config).await?;
    wait_until_serving(&mut started, "the ringkv router to serve a put", || {
        let client = client.clone();
        async move {
            client
                .put("ringkv-bench-probe", b"ok".to_vec())
                .await
                .map(drop)
                .map_err(|err| err.to_string())
        }
    })
    .await?;

    let profile = if built_for_release(&binaries.node).await {
        "release"
    } else {
        "debug (numbers not meaningful)"
    };
    let info = SystemInfo {
        system: SystemKind::Ringkv,
        version: format!("ringkv {} ({profile} build)", env!("CARGO_PKG_VERSION")),
        setup: format!(
            "{MEMBERS} nodes + 1 router on loopback, {shards} shards, replication factor {MEMBERS}, {}, binaries {}",
            if tls { "mutual TLS" } else { "without TLS" },
            binaries.node.parent().unwrap_or(Path::new("")).display()
        ),
    };
    Ok(started.into_system(info, vec![router_addr], client_tls))
}

/// Whether `node` is a release build: what its `--version` says (copied binaries too), or,
/// from a node too old to say, whether its path runs through a `release` directory.
async fn built_for_release(node: &Path) -> bool {
    match tokio::process::Command::new(node).arg("--version").output().await {
        Ok(output) if output.status.success() => {
            let version = String::from_utf8_lossy(&output.stdout);
            if version.contains("build)") {
                return version.contains("(release build)");
            }
            is_release_build(node)
        }
        _ => is_release_build(node),
    }
}
