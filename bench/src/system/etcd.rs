//! Starting etcd: 3 members on loopback ports chosen free, fresh data directories, ready
//! when every member answers a linearizable read.

use std::path::{Path, PathBuf};

use ringkv_launcher::Launch;

use super::{fresh_dir, wait_until_serving, RunningSystem, Started, SystemInfo, SystemKind, MEMBERS};
use crate::target::etcd::probe;
use crate::BenchError;

/// Where Debian's `etcd-server` package puts the server.
const DEBIAN_ETCD: &str = "/usr/bin/etcd";

/// The `etcd` binary: `--etcd-bin`, else the first `etcd` on `$PATH`, else Debian's.
pub fn locate_etcd(etcd_bin: Option<&Path>) -> Result<PathBuf, BenchError> {
    if let Some(path) = etcd_bin {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(BenchError::EtcdMissing {
                searched: path.display().to_string(),
            })
        };
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("etcd")).collect())
        .unwrap_or_default();
    candidates.push(PathBuf::from(DEBIAN_ETCD));
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| BenchError::EtcdMissing {
            searched: "$PATH and /usr/bin/etcd".into(),
        })
}

/// The first line of `etcd --version`.
async fn version(etcd: &Path) -> Result<String, BenchError> {
    let output = tokio::process::Command::new(etcd)
        .arg("--version")
        .output()
        .await
        .map_err(BenchError::io(format!("running {} --version", etcd.display())))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .next()
        .unwrap_or("etcd (unknown version)")
        .trim()
        .to_string())
}

/// `count` distinct loopback ports that were free a moment ago.
fn free_ports(count: usize) -> Result<Vec<u16>, BenchError> {
    // Hold every listener until all are chosen, so no port is handed out twice.
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(BenchError::io("choosing free loopback ports"))?;
    listeners
        .iter()
        .map(|listener| listener.local_addr().map(|addr| addr.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(BenchError::io("choosing free loopback ports"))
}

/// Starts 3 members in a fresh directory under `parent`.
pub async fn start(etcd: &Path, parent: &Path) -> Result<RunningSystem, BenchError> {
    let version = version(etcd).await?;
    let mut started = Started::new(fresh_dir(parent, SystemKind::Etcd)?);
    let dir = started.data_dir.path().to_path_buf();
    let members = MEMBERS as usize;
    let ports = free_ports(2 * members)?;
    let (client_ports, peer_ports) = ports.split_at(members);
    let peer_url = |index: usize| format!("http://127.0.0.1:{}", peer_ports[index]);
    let initial_cluster = (0..members)
        .map(|index| format!("m{}={}", index + 1, peer_url(index)))
        .collect::<Vec<_>>()
        .join(",");
    let token = format!("ringkv-bench-{}", std::process::id());
    let mut endpoints = Vec::new();
    for (index, client_port) in client_ports.iter().enumerate() {
        let name = format!("m{}", index + 1);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let launch = Launch::new(format!("etcd {name}"), etcd)
            .args(["--name", name.as_str(), "--data-dir"])
            .arg(dir.join(&name))
            .args(["--listen-client-urls", client_url.as_str()])
            .args(["--advertise-client-urls", client_url.as_str()])
            .args(["--listen-peer-urls", peer_url(index).as_str()])
            .args(["--initial-advertise-peer-urls", peer_url(index).as_str()])
            .args(["--initial-cluster", initial_cluster.as_str()])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                token.as_str(),
            ])
            .args(["--logger", "zap", "--log-level", "warn"])
            .log(dir.join(format!("{name}.log")));
        started.spawn(launch)?;
        endpoints.push(format!("127.0.0.1:{client_port}"));
    }
    for endpoint in &endpoints {
        let what = format!("etcd at {endpoint} to answer a linearizable read");
        wait_until_serving(&mut started, &what, || probe(endpoint)).await?;
    }
    let info = SystemInfo {
        system: SystemKind::Etcd,
        version,
        setup: format!(
            "{MEMBERS} members on loopback, default settings, {}",
            etcd.display()
        ),
    };
    Ok(started.into_system(info, endpoints, None))
}
