//! The systems under test as processes: started fresh by the tool (ringkv: 3 nodes and a
//! router through `ringkv-launcher`; etcd: 3 members on loopback), or already running at
//! given endpoints. A [`RunningSystem`] owns its processes and data directory: dropping it
//! kills the processes and deletes the data, so an error or Ctrl-C never leaves servers
//! behind; [`RunningSystem::shutdown`] stops them gracefully first.
//!
//! - [`ringkv`] — `ringkv-node` × 3 + `ringkv-router`, from the binaries next to this tool
//!   (or `--bin-dir` / `$RINGKV_BIN_DIR`).
//! - [`etcd`] — `etcd` × 3 (Debian's `etcd-server`, see `bench/scripts/install-etcd.sh`).

pub mod etcd;
pub mod ringkv;

use std::time::Duration;

use ringkv_client::ClientTls;
use ringkv_launcher::{Launch, Process};
use serde::{Deserialize, Serialize};

use crate::procstat::ServerProcess;
use crate::BenchError;

/// Members (ringkv nodes, etcd members) of a started system.
pub const MEMBERS: u32 = 3;
/// How long a started system may take to serve.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a process gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Which system.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum SystemKind {
    /// ringkv, through its router.
    Ringkv,
    /// etcd v3.
    Etcd,
}

impl SystemKind {
    /// `ringkv`, `etcd`.
    pub fn name(self) -> &'static str {
        match self {
            SystemKind::Ringkv => "ringkv",
            SystemKind::Etcd => "etcd",
        }
    }
}

/// What the results record about a system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// `ringkv`, `etcd`.
    pub system: SystemKind,
    /// Version or build of the servers.
    pub version: String,
    /// How it was set up (members, shards, binaries).
    pub setup: String,
}

/// A system ready for load; owns what it started.
#[derive(Debug)]
pub struct RunningSystem {
    /// Which system.
    pub info: SystemInfo,
    /// The endpoints clients use (`host:port`).
    pub endpoints: Vec<String>,
    /// The server processes whose usage is measured.
    pub servers: Vec<ServerProcess>,
    /// The client certificate to connect with (a ringkv started with TLS), `None` for plain
    /// http.
    pub client_tls: Option<ClientTls>,
    /// What the tool started (`None` for an external system).
    started: Option<Started>,
}

impl RunningSystem {
    /// A system someone else runs at `endpoints`; `pids` (optional) are its server
    /// processes on this machine, for the CPU, IO and memory figures.
    pub fn external(kind: SystemKind, endpoints: Vec<String>, pids: &[u32]) -> RunningSystem {
        RunningSystem {
            info: SystemInfo {
                system: kind,
                version: "external".into(),
                setup: format!("already running at {}", endpoints.join(",")),
            },
            endpoints,
            servers: pids
                .iter()
                .map(|pid| ServerProcess {
                    name: format!("pid {pid}"),
                    pid: *pid,
                })
                .collect(),
            client_tls: None,
            started: None,
        }
    }

    /// Fails, with the end of its log, when a started process has exited.
    pub fn check_running(&mut self) -> Result<(), BenchError> {
        match &mut self.started {
            Some(started) => started.check_running(),
            None => Ok(()),
        }
    }

    /// Stops the processes (SIGTERM, then SIGKILL after a grace period) and deletes the
    /// data directory.
    pub async fn shutdown(mut self) {
        if let Some(started) = self.started.take() {
            started.shutdown().await;
        }
    }
}

/// Processes started in a data directory; dropping it kills them and deletes the data.
#[derive(Debug)]
struct Started {
    // Fields drop in order: the processes are killed before their data is deleted.
    processes: Vec<Process>,
    servers: Vec<ServerProcess>,
    data_dir: tempfile::TempDir,
}

impl Started {
    fn new(data_dir: tempfile::TempDir) -> Started {
        Started {
            data_dir,
            processes: Vec::new(),
            servers: Vec::new(),
        }
    }

    /// Spawns `launch` in its own process group (Ctrl-C reaches only this tool, which
    /// stops the servers itself), to die with this tool.
    fn spawn(&mut self, launch: Launch) -> Result<&mut Process, BenchError> {
        let process = launch.own_process_group().die_with_parent().spawn()?;
        self.servers.push(ServerProcess {
            name: process.name().to_string(),
            pid: process.pid(),
        });
        self.processes.push(process);
        let last = self.processes.len() - 1;
        Ok(&mut self.processes[last])
    }

    fn check_running(&mut self) -> Result<(), BenchError> {
        for process in &mut self.processes {
            process.check_running()?;
        }
        Ok(())
    }

    /// SIGTERM to every process (the last started first), SIGKILL to those still running
    /// after [`STOP_GRACE`]; then the data directory is deleted.
    async fn shutdown(mut self) {
        for process in self.processes.iter_mut().rev() {
            let _ = process.signal(libc::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        for process in self.processes.iter_mut().rev() {
            if tokio::time::timeout_at(deadline, process.wait()).await.is_err() {
                let _ = process.kill();
            }
        }
        self.processes.clear();
        let path = self.data_dir.path().display().to_string();
        if let Err(err) = self.data_dir.close() {
            eprintln!("warning: cannot delete {path}: {err}");
        }
    }

    fn into_system(
        mut self,
        info: SystemInfo,
        endpoints: Vec<String>,
        client_tls: Option<ClientTls>,
    ) -> RunningSystem {
        RunningSystem {
            info,
            endpoints,
            client_tls,
            servers: std::mem::take(&mut self.servers),
            started: Some(self),
        }
    }
}

/// A fresh directory for one system's data and logs under `parent`.
fn fresh_dir(parent: &std::path::Path, kind: SystemKind) -> Result<tempfile::TempDir, BenchError> {
    std::fs::create_dir_all(parent).map_err(BenchError::io(format!("creating {}", parent.display())))?;
    tempfile::Builder::new()
        .prefix(&format!("ringkv-bench-{}-", kind.name()))
        .tempdir_in(parent)
        .map_err(BenchError::io(format!(
            "creating a data directory in {}",
            parent.display()
        )))
}

/// Waits until `probe` succeeds, failing early when a process exits; the last probe
/// error is part of the timeout message.
async fn wait_until_serving<F, Fut>(started: &mut Started, what: &str, mut probe: F) -> Result<(), BenchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let last_error = std::sync::Mutex::new(String::new());
    let outcome = ringkv_launcher::wait::wait_for(what, STARTUP_TIMEOUT, || {
        let running = started.check_running();
        let probing = probe();
        let last_error = &last_error;
        async move {
            if let Err(exited) = running {
                return Some(Err(exited));
            }
            match probing.await {
                Ok(()) => Some(Ok(())),
                Err(err) => {
                    *last_error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = err;
                    None
                }
            }
        }
    })
    .await;
    match outcome {
        Ok(result) => result,
        Err(ringkv_launcher::LaunchError::Timeout { .. }) => {
            let last_error = last_error
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Err(BenchError::Timeout {
                what: format!("{what} (last error: {last_error})"),
                timeout: STARTUP_TIMEOUT,
            })
        }
        Err(other) => Err(other.into()),
    }
}
